#!/bin/sh
# GNU sort with a big in-memory buffer: a native tool whose memory is the
# whole input plus one line descriptor per line, then sorted in place.
#
#     sort_buffer.sh gen FILE ROWS               write FILE (once, before recording)
#     sort_buffer.sh run FILE BUFFER THREADS     the workload that is recorded
#
# `gen` writes ROWS comma-separated lines with mawk, no random numbers (the
# same bytes every time): a 40-character hex key from multiplicative hashes
# of the row number N, a user name u<N*7919 mod 50021>, a number
# <N*48271 mod 65521> and a 24-character filler.  `run` is one
# `LC_ALL=C sort -S BUFFER --parallel=THREADS -t, -k2,2 -k3,3n -k1,1`
# (coreutils 9.1) over FILE, its output piped to `cksum`.  sort reads the
# file into its buffer (anonymous memory climbs as the buffer's pages are
# first touched, with the line descriptors growing down from its end), sorts
# it with THREADS threads (flat), and writes it out.  When BUFFER is smaller
# than the input sort spills sorted runs to temporary files under TMPDIR
# (default /tmp) and merges them.  Written for round 5's `tool-sort-buffer`
# traces (bench/traces/NOTES-round5-builds.md).  No code is fetched.
set -eu
mode=$1 file=$2
case $mode in
gen)
    rows=$3
    mawk -v rows="$rows" 'BEGIN {
        for (n = 1; n <= rows; n++) {
            h1 = (n * 2654435761) % 4294967296; h2 = (n * 40503) % 4294967296;
            h3 = (n * 2246822519) % 4294967296; h4 = (n * 3266489917) % 4294967296;
            h5 = (n * 668265263) % 4294967296;
            printf "%08x%08x%08x%08x%08x,u%d,%d,%08x%08x%08x\n", h1, h2, h3, h4, h5,
                (n * 7919) % 50021, (n * 48271) % 65521, h3, h5, h1;
        }
    }' > "$file.tmp"
    mv "$file.tmp" "$file"
    ls -l "$file"
    ;;
run)
    buf=$3 threads=$4
    LC_ALL=C sort -S "$buf" --parallel="$threads" -t, -k2,2 -k3,3n -k1,1 "$file" | cksum
    ;;
*)
    echo "usage: sort_buffer.sh gen FILE ROWS | run FILE BUFFER THREADS" >&2; exit 2 ;;
esac
