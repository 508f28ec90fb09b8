#!/bin/sh
# GNU ptx (permuted index) over a generated text stream: a native tool that
# reads its whole input, then keeps one entry per word occurrence, sorts
# them and writes the keyword-in-context index.
#
#     ptx_index.sh LINES
#
# mawk writes LINES lines of 8 words each (no random numbers, the same
# bytes every time: word k of line N is w<(N*7919 + k*104729) mod 20011>,
# then a 6-character hex tag), into a pipe; `ptx -W '[a-z0-9]+'`
# (coreutils 9.1) reads it (its buffer grows with the input), builds the
# occurrence table (anonymous memory climbs with every word found), sorts
# it and writes the index to `cksum`.  The exit status is cksum's.
# Written for round 6's `tool-ptx` traces
# (bench/traces/NOTES-round6-builds.md).  No code is fetched.
set -eu
lines=$1
mawk -v lines="$lines" 'BEGIN {
    for (n = 1; n <= lines; n++) {
        s = "";
        for (k = 0; k < 8; k++) s = s sprintf("w%d ", (n * 7919 + k * 104729) % 20011);
        printf "%s%06x\n", s, (n * 2654435761) % 16777216;
    }
}' | ptx -W '[a-z0-9]+' | cksum
