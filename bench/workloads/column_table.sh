#!/bin/sh
# util-linux `column -t` over a generated comma-separated stream: a native
# tool that keeps every row (as wide characters and table cells) until the
# input ends, because the column widths depend on all of them.
#
#     column_table.sh ROWS
#
# mawk writes ROWS lines (no random numbers, the same bytes every time:
# a 16-character hex key from multiplicative hashes of the row number N, a
# user u<N*7919 mod 50021>, a number <N*48271 mod 65521> and a
# 12-character filler; ~45 bytes a line) into a pipe; `column -t -s,`
# (util-linux) reads them all into its table (anonymous memory climbs at
# the rate column parses the rows), then prints the aligned table to
# `cksum`, and frees nothing before it exits.  The exit status is cksum's.
# Written for round 6's `tool-column` traces
# (bench/traces/NOTES-round6-builds.md).  No code is fetched.
set -eu
rows=$1
mawk -v rows="$rows" 'BEGIN {
    for (n = 1; n <= rows; n++) {
        h1 = (n * 2654435761) % 4294967296; h2 = (n * 40503) % 4294967296;
        h4 = (n * 3266489917) % 4294967296;
        printf "%08x%08x,u%d,%d,%08x%04x\n", h1, h2,
            (n * 7919) % 50021, (n * 48271) % 65521, h4, n % 65536;
    }
}' | column -t -s, | cksum
