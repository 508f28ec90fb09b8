#!/bin/sh
# GNU diff of two large text files that differ all through: a native tool
# that reads both files whole into memory, hashes every line into an
# equivalence table, and then runs its shortest-edit-script search with
# per-line index vectors.
#
#     diff_lines.sh gen FILE_A FILE_B ROWS   write both files (once, before recording)
#     diff_lines.sh run FILE_A FILE_B        the workload that is recorded
#
# `gen` writes with mawk, no random numbers (the same bytes every time):
# FILE_A has ROWS lines (a 32-character hex key from multiplicative hashes
# of the row number N, a user u<N*7919 mod 50021>, a number
# <N*48271 mod 65521>); FILE_B has the same lines except that every 5th is
# changed (its number plus one), every 11th is dropped and after every 13th
# a new line is inserted, so the edit script is long and spread over the
# whole file.  `run` is `diff FILE_A FILE_B | cksum` (diffutils 3.8): the
# exit status is cksum's.  Written for round 6's `tool-diff` traces
# (bench/traces/NOTES-round6-builds.md).  No code is fetched.
set -eu
mode=$1 a=$2 b=$3
case $mode in
gen)
    rows=$4
    mawk -v rows="$rows" -v fb="$b.tmp" 'BEGIN {
        for (n = 1; n <= rows; n++) {
            h1 = (n * 2654435761) % 4294967296; h2 = (n * 40503) % 4294967296;
            h3 = (n * 2246822519) % 4294967296; h4 = (n * 3266489917) % 4294967296;
            k = sprintf("%08x%08x%08x%08x,u%d", h1, h2, h3, h4, (n * 7919) % 50021);
            v = (n * 48271) % 65521;
            printf "%s,%d\n", k, v;
            if (n % 11 == 0) continue;
            if (n % 5 == 0) v = v + 1;
            printf "%s,%d\n", k, v > fb;
            if (n % 13 == 0) printf "%08x%08x,new,%d\n", h4, h1, n > fb;
        }
    }' > "$a.tmp"
    mv "$a.tmp" "$a"; mv "$b.tmp" "$b"
    ls -l "$a" "$b"
    ;;
run)
    diff "$a" "$b" | cksum
    ;;
*)
    echo "usage: diff_lines.sh gen FILE_A FILE_B ROWS | run FILE_A FILE_B" >&2; exit 2 ;;
esac
