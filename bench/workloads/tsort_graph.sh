#!/bin/sh
# coreutils tsort on a large generated dependency graph: a native tool that
# keeps every node and edge it has read in memory, then prints a
# topological order.
#
#     tsort_graph.sh gen FILE NODES      write FILE (once, before recording)
#     tsort_graph.sh run FILE            the workload that is recorded
#
# `gen` writes, with mawk and no random numbers, a DAG on NODES nodes named
# by a 16-character hex hash of their number n (its first half,
# n * 48271 mod 2^31-1, is distinct for distinct n below 2^31-1):
# for each n > 1, an edge from node (n * 7919) mod (n-1) + 1 and one from
# node floor(n/2) to n (so every edge goes from a smaller number to a
# larger one: no cycle), two pairs per line.  `run` is `tsort FILE`
# (coreutils 9.1), its output piped to `cksum`.  tsort reads the pairs and
# inserts every new name into a balanced search tree (a node record and a
# copy of the name) and every edge into its predecessor's successor list,
# so its memory climbs while it reads; then it repeatedly takes the nodes
# with no remaining predecessors and prints them (flat), and exits.
# Written for round 5's `tool-tsort` traces
# (bench/traces/NOTES-round5-builds.md).  No code is fetched.
set -eu
mode=$1 file=$2
case $mode in
gen)
    nodes=$3
    mawk -v nodes="$nodes" 'function name(n) { return sprintf("%08x%08x", (n * 48271) % 2147483647, (n * 40503) % 4294967296) }
    BEGIN {
        for (n = 2; n <= nodes; n++) {
            a = (n * 7919) % (n - 1) + 1; b = int(n / 2);
            nm = name(n);
            printf "%s %s %s %s\n", name(a), nm, name(b), nm;
        }
    }' > "$file.tmp"
    mv "$file.tmp" "$file"
    ls -l "$file"
    ;;
run)
    tsort "$file" | cksum
    ;;
*)
    echo "usage: tsort_graph.sh gen FILE NODES | run FILE" >&2; exit 2 ;;
esac
