#!/bin/sh
# A hash join in mawk: load every record of a file into an associative array
# (a climb), then stream a second pass over the file, looking each line up
# (a plateau), and print a small summary.  In the round-4 traces (6,000,000
# records, 758 MB) the table is ~875 MiB of anonymous memory after a
# straight ~35 MiB/s climb; on the join pass the file's page cache that the
# cgroup holds moves to the active list (working set up, RSS flat).
#
#     awk_join.sh FILE [PASSES]
#
# FILE is the JSON-lines-ish array written by `jq_group.sh gen` (one record
# per line; no code is fetched).  mawk splits each line on double quotes
# (field 22 is the 40-character `note`, field 6 the `user`, field 10 the
# `cat`), and on the first pass keeps `tab[note] = user SUBSEP cat SUBSEP NR`
# (NR: the line number) and counts per user, so the array only grows; then
# PASSES-1 more passes (PASSES defaults to 2: one join pass) read the file
# again and join each line's note back to its entry, adding up per category.
# mawk never frees the table before it exits.  Written for round 4's
# `tool-awk-join` traces (bench/traces/NOTES-round4-builds.md).
set -eu
file=$1 passes=${2:-2}
set -- "$file"
i=1
while [ "$i" -lt "$passes" ]; do set -- "$@" "$file"; i=$((i + 1)); done
exec mawk -F'"' '
FNR == 1 { pass++ }
NF < 22 { next }
pass == 1 { tab[$22] = $6 SUBSEP $10 SUBSEP NR; users[$6]++; n++; next }
{ split(tab[$22], a, SUBSEP); hits[a[2]]++; m++ }
END {
    for (u in users) nu++
    for (c in hits) nc++
    printf "records %d, distinct users %d, joined %d over %d categories\n", n, nu, m, nc
}' "$@"
