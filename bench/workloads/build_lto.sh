#!/bin/sh
# A build whose link step is the memory peak: compile some nlohmann/json unit
# tests with -flto -g, then link them all into one test binary (with debug
# info) with GCC's LTO in a single partition, so one lto1 process optimises
# the whole program and generates its code and debug info.
#
#     build_lto.sh JSON_SRC JOBS UNIT...      e.g. build_lto.sh /var/tmp/mgbuild-json/src 2 cbor ubjson bson
#
# JSON_SRC is a checkout of nlohmann/json (199dea1 in the traces; not part of
# this repository).  Stage 1 compiles tests/src/unit.cpp (doctest's main)
# and tests/src/unit-UNIT.cpp for each UNIT with `g++ -O2 -g -flto
# -fno-fat-lto-objects` (GIMPLE and early debug info only, no code
# generation), JOBS at a time (make).  Stage 2 links them with `g++ -O2 -g
# -flto=1 -flto-partition=one -fuse-ld=bfd`: lto1 reads every unit's
# GIMPLE, then one LTRANS process generates code and debug info (variable
# tracking over doctest's huge test functions) for all of it, climbing for
# tens of seconds, and that process is the build's peak.  The scratch folder (under /var/tmp)
# is removed on exit.
set -eu
src=$1 jobs=$2
shift 2
dir=$(mktemp -d /var/tmp/mgbuild-lto.XXXXXX)
trap 'rm -rf "$dir"' EXIT INT TERM
# the tests include test_data.hpp (made by the project's cmake): only the path matters
printf '#define TEST_DATA_DIRECTORY "%s/json_test_data"\n' "$dir" > "$dir/test_data.hpp"
flags="-I$dir -O2 -g -flto -fno-fat-lto-objects -std=gnu++11 -DDOCTEST_CONFIG_SUPER_FAST_ASSERTS -DJSON_TEST_KEEP_MACROS
 -I$src/tests/thirdparty/doctest -I$src/tests/thirdparty/fifo_map -I$src/include
 -Wno-deprecated -Wno-float-equal -Wno-deprecated-declarations"
objs="unit.o"
{
    printf 'unit.o: %s/tests/src/unit.cpp\n\tg++ %s -c $< -o $@\n' "$src" "$(echo $flags)"
    for u in "$@"; do
        printf 'unit-%s.o: %s/tests/src/unit-%s.cpp\n\tg++ %s -c $< -o $@\n' "$u" "$src" "$u" "$(echo $flags)"
        objs="$objs unit-$u.o"
    done
    printf 'tests: %s\n\tg++ -O2 -g -flto=1 -flto-partition=one -fuse-ld=bfd $^ -o $@\n' "$objs"
} > "$dir/Makefile"
echo "stage 1: compile ($objs), -j$jobs"
make -C "$dir" -j"$jobs" $objs
echo "stage 2: LTO link"
/usr/bin/time -f "link: %e s, max RSS %M KiB" make -C "$dir" tests
ls -l "$dir/tests"
