#!/bin/sh
# Compile a list of real C/C++ source files from scratch with `make -jJOBS`.
#
#     build_make.sh [-k] OUT_DIR JOBS COMPILER "FLAGS" SOURCE...
#
# Writes OUT_DIR/Makefile with one object rule per SOURCE (objects named
# after the sources, in OUT_DIR), removes the objects of a previous run, then
# runs `make -jJOBS` (with -k: `make -k`, keep starting the remaining units
# after a failure).  No link step: the memory of a build is its compilers.
# FLAGS is one shell word holding the compiler options (include paths,
# -O level, -g, -std=...).  The round-2 traces in
# bench/traces/NOTES-fresh-builds.md use it on source trees under
# /var/tmp/mgbuild2-* (simdjson, abseil-cpp), which are not part of this
# repository.  Under a tight memory limit the kernel OOM-kills a compiler:
# g++ prints "Killed signal terminated program cc1plus", make stops starting
# new units (unless -k), waits for the running ones and exits 2.
set -eu
keep=""
if [ "$1" = "-k" ]; then keep="-k"; shift; fi
out=$1 jobs=$2 cc=$3 flags=$4
shift 4
mkdir -p "$out"
mk="$out/Makefile"
objs=""
: > "$mk.rules"
for src in "$@"; do
    o="$out/$(basename "$src" | sed 's/\.[^.]*$//').o"
    objs="$objs $o"
    printf '%s: %s\n\t%s %s -c %s -o %s\n' "$o" "$src" "$cc" "$flags" "$src" "$o" >> "$mk.rules"
done
{ printf 'all:%s\n' "$objs"; cat "$mk.rules"; } > "$mk"
rm -f "$mk.rules" $objs
exec make -f "$mk" -j"$jobs" $keep all
