#!/bin/sh
# GNU sed gathering a paced log stream into its hold space.
#
#     sed_hold.sh SECONDS RATE
#
# A small generator (Debian's /usr/bin/python3, paced on the monotonic
# clock in 0.1 s ticks) writes RATE access-log lines a second (~100 bytes
# each, built from the line number alone: no random numbers, the same bytes
# every run) for SECONDS seconds into
#
#     sed -n 'H;${x;s/\n/ /g;p}' | cksum
#
# `H` appends every line to sed's hold space, so sed's heap grows at the
# stream's pace (~RATE x 100 bytes a second; GNU sed doubles the buffer's
# allocation, but the new pages are only touched as they are written).  At
# the last line `x` swaps the hold space in and `s/\n/ /g` builds the
# substituted copy beside it: a final spike to about twice the hold space
# before it is printed to cksum.  The exit status is cksum's (0) even when
# sed was killed.  Nothing is written to disk.
set -eu
seconds=$1 rate=$2
/usr/bin/python3 -c '
import sys, time
seconds, rate = float(sys.argv[1]), int(sys.argv[2])
out = sys.stdout
paths = ("/api/v1/items", "/api/v1/users", "/static/app.js", "/search", "/cart/checkout")
t0 = time.monotonic(); n = 0; tick = 0
while True:
    due = t0 + tick * 0.1
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    t = due - t0
    if t >= seconds:
        break
    want = int(rate * (t + 0.1))
    lines = []
    while n < want:
        lines.append("10.%d.%d.%d - - [07/Dec/2026:13:%02d:%02d +0000] \"GET %s/%d HTTP/1.1\" %d %d\n" % (
            n % 251, n // 251 % 253, n % 241, n // 60000 % 60, n // 1000 % 60,
            paths[n % 5], n * 7919 % 1000003, 200 + (n % 17 == 0) * 104, 512 + n * 31 % 65536))
        n += 1
    out.write("".join(lines)); out.flush()
    tick += 1
' "$seconds" "$rate" | sed -n 'H;${x;s/\n/ /g;p}' | cksum
