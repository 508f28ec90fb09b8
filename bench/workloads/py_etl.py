"""A streaming JSON ETL in Python: events grouped by user in event-time windows.

    python3 py_etl.py [--seconds 240] [--rate 15000] [--window 10]
        [--lateness 5] [--users 20000] [--late-fraction 0.02]
        [--late-delay 30] [--keep-late] [--seed 0]

Two processes, both Debian's /usr/bin/python3: a producer (this script
with ``--produce``, started by the ETL as a child) writes JSON lines of
click-stream events to a pipe (~350 bytes each: timestamp, user, session,
kind, amount, three tags, a user-agent string, a geo object), about
``--rate`` lines a second on average, but bursty: the rate follows a slow
swell (+-35 % over ~47 s) with random bursts and lulls every couple of
seconds.  Event times run with the wall clock; ``--late-fraction`` of the
events are sent late, up to ``--late-delay`` seconds after their time.

The ETL reads the lines, ``json.loads`` each, and groups the records
(the parsed dicts themselves) by tumbling event-time window of
``--window`` seconds and then by user, in dicts of lists.  The watermark
is the largest event time seen less ``--lateness``; when it passes a
window's end the window is closed: per user it counts, sums, sorts the
amounts for a median and p95, collects the distinct kinds and tags, writes
one summary line per user to /dev/null, and the window's records are
dropped.  So the working set is a sawtooth: between about one and two
windows' worth of parsed records (~1.2 KiB of Python objects each; pymalloc
arenas go back to the kernel as whole windows are freed), noisy because
the input is bursty, and with a spike at each close (the aggregation's
sorted lists and summaries).

Events that arrive after their window is closed are "late".  By default
they are counted and dropped.  With ``--keep-late`` they are appended to a
"reprocess later" list that nothing ever drains (the bug): a slow leak of
``rate x late-fraction`` records a second under the sawtooth, killed by the
OOM killer when the climbing troughs and the next close's spike meet the
limit.

Seeded (``random.Random(seed)`` in the producer); logs open windows,
records held, late records and the cgroup's usage every second.
"""

import argparse
import collections
import json
import math
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mem import MIB, log, own_memory_cgroup, read_int, sleep_until  # noqa: E402

KINDS = ["view", "click", "scroll", "cart", "buy", "search", "share", "login"]
TAGS = ["promo", "mobile", "desktop", "eu", "us", "apac", "new", "returning", "beta",
        "ab-a", "ab-b", "ref-mail", "ref-ad", "ref-social", "organic", "vip"]
AGENTS = [f"Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0 build/{b}"
          for v in range(100, 130) for b in range(4)]
CITIES = ["Lyon", "Porto", "Oslo", "Kyoto", "Lima", "Accra", "Perth", "Quito", "Riga", "Pune"]


def produce(args) -> None:
    rnd = random.Random(args.seed)
    out = sys.stdout
    start = time.monotonic()
    wall0 = time.time()
    tick = start
    burst = 1.0
    burst_until = start
    late_q: list = []            # (send_at, line)
    while tick - start < args.seconds + args.lateness + args.window:
        t = tick - start
        if tick >= burst_until:
            burst = rnd.choice([0.5, 0.8, 1.0, 1.0, 1.0, 1.3, 1.8])
            burst_until = tick + rnd.uniform(0.5, 3.0)
        rate = args.rate * (1 + 0.35 * math.sin(2 * math.pi * t / 47.0)) * burst
        if t > args.seconds:
            rate = 0.0           # the tail: no new events, the watermark still advances below
        n = rnd.gauss(rate / 20, math.sqrt(rate / 20 + 1))
        lines = []
        for _ in range(max(0, int(n))):
            ets = wall0 + t - rnd.random() * 0.05
            ev = {"ts": round(ets, 3), "user": f"u{int(rnd.paretovariate(1.1)) % args.users:06d}",
                  "session": f"{rnd.getrandbits(64):016x}", "kind": rnd.choice(KINDS),
                  "amount": round(rnd.expovariate(1 / 30.0), 2),
                  "tags": rnd.sample(TAGS, 3), "ua": rnd.choice(AGENTS),
                  "geo": {"city": rnd.choice(CITIES), "lat": round(rnd.uniform(-60, 60), 4),
                          "lon": round(rnd.uniform(-180, 180), 4)}}
            line = json.dumps(ev)
            if rnd.random() < args.late_fraction:
                late_q.append((tick + rnd.uniform(args.window + args.lateness, args.late_delay), line))
            else:
                lines.append(line)
        if late_q:
            due = [x for x in late_q if x[0] <= tick]
            if due:
                late_q = [x for x in late_q if x[0] > tick]
                lines.extend(line for _, line in due)
        # a heartbeat with no user: carries the producer's clock, so the watermark moves in lulls
        lines.append(json.dumps({"ts": round(wall0 + t, 3), "heartbeat": True}))
        out.write("\n".join(lines) + "\n")
        out.flush()
        tick += 0.05
        sleep_until(tick)


def close_window(users: dict, sink) -> int:
    n = 0
    for user, recs in users.items():
        amounts = sorted(r["amount"] for r in recs)
        kinds = collections.Counter(r["kind"] for r in recs)
        tags = collections.Counter(t for r in recs for t in r["tags"])
        cities = {r["geo"]["city"] for r in recs}
        summary = {"user": user, "n": len(recs), "sum": round(sum(amounts), 2),
                   "p50": amounts[len(amounts) // 2], "p95": amounts[int(len(amounts) * 0.95)],
                   "kinds": dict(kinds), "tags": tags.most_common(3), "cities": sorted(cities),
                   "sessions": len({r["session"] for r in recs})}
        sink.write(json.dumps(summary) + "\n")
        n += len(recs)
    return n


def etl(args) -> None:
    cg = os.path.join(own_memory_cgroup(), "memory.usage_in_bytes")
    cmd = [sys.executable, os.path.abspath(__file__), "--produce", "--seconds", str(args.seconds),
           "--rate", str(args.rate), "--window", str(args.window), "--lateness", str(args.lateness),
           "--users", str(args.users), "--late-fraction", str(args.late_fraction),
           "--late-delay", str(args.late_delay), "--seed", str(args.seed)]
    prod = subprocess.Popen(cmd, stdout=subprocess.PIPE, bufsize=1 << 16)
    windows: dict = {}           # window start -> {user: [records]}
    late_kept: list = []
    late = closed = held = events = 0
    watermark = float("-inf")
    sink = open(os.devnull, "w")
    start = time.monotonic()
    next_log = start + 1.0
    for raw in prod.stdout:
        ev = json.loads(raw)
        ts = ev["ts"]
        if ts - args.lateness > watermark:
            watermark = ts - args.lateness
        if "heartbeat" not in ev:
            events += 1
            w = int(ts // args.window) * args.window
            if w + args.window <= watermark:
                late += 1
                if args.keep_late:
                    late_kept.append(ev)
            else:
                windows.setdefault(w, {}).setdefault(ev["user"], []).append(ev)
                held += 1
        for w in sorted(windows):
            if w + args.window > watermark:
                break
            held -= close_window(windows.pop(w), sink)
            closed += 1
        now = time.monotonic()
        if now >= next_log:
            log(f"t={now - start:.0f}s events {events} open {len(windows)} held {held} closed {closed} "
                f"late {late} kept {len(late_kept)} usage {read_int(cg) / MIB:.0f}MiB")
            next_log += 1.0
    for w in sorted(windows):
        close_window(windows.pop(w), sink)
        closed += 1
    prod.wait()
    log(f"done: events {events} windows {closed} late {late} kept {len(late_kept)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--rate", type=float, default=15000.0, help="events a second, on average")
    p.add_argument("--window", type=float, default=10.0, help="seconds of event time a window")
    p.add_argument("--lateness", type=float, default=5.0, help="watermark lag, seconds")
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--late-fraction", type=float, default=0.02)
    p.add_argument("--late-delay", type=float, default=30.0, help="at most this late, seconds")
    p.add_argument("--keep-late", action="store_true", help="the leak: late records kept forever")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--produce", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.produce:
        try:
            produce(args)
        except BrokenPipeError:
            pass
    else:
        etl(args)


if __name__ == "__main__":
    main()
