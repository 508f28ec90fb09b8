#!/bin/sh
# GNU shuf over a generated stream: a native tool that must hold its whole
# input before it can write the first line of its output.
#
#     shuf_stream.sh ROWS SEEDFILE
#
# mawk writes ROWS lines (no random numbers, the same bytes every time: a
# 32-character hex key from multiplicative hashes of the row number N, a
# user u<N*7919 mod 50021>, a number <N*48271 mod 65521> and a 20-character
# filler; ~80 bytes a line) into a pipe; `shuf --random-source=SEEDFILE`
# (coreutils 9.1) reads the pipe into one buffer that it grows with
# realloc as the input arrives (anonymous memory climbs at the generator's
# speed), then builds one pointer per line, permutes them (the permutation
# is fixed by SEEDFILE's bytes, so every run is the same) and writes the
# lines out to `cksum`.  SEEDFILE is any file of a few KiB (the notes say
# which).  Written for round 6's `tool-shuf` traces
# (bench/traces/NOTES-round6-builds.md).  No code is fetched.
set -eu
rows=$1 seed=$2
mawk -v rows="$rows" 'BEGIN {
    for (n = 1; n <= rows; n++) {
        h1 = (n * 2654435761) % 4294967296; h2 = (n * 40503) % 4294967296;
        h3 = (n * 2246822519) % 4294967296; h4 = (n * 3266489917) % 4294967296;
        printf "%08x%08x%08x%08x,u%d,%d,%08x%08x%04x\n", h1, h2, h3, h4,
            (n * 7919) % 50021, (n * 48271) % 65521, h4, h2, n % 65536;
    }
}' | shuf --random-source="$seed" | cksum
