#!/bin/sh
# A link step that is the whole memory story: GCC's LTO link of RapidJSON's
# unit tests (with GoogleTest) into one test binary, with debug info.
#
#     link_rapidjson_lto.sh prepare OBJ_DIR RAPIDJSON_SRC GTEST_SRC JOBS
#     link_rapidjson_lto.sh link OBJ_DIR PARTITION
#
# `prepare` (run once, before recording; not recorded) compiles
# RAPIDJSON_SRC/test/unittest/*.cpp and GTEST_SRC/googletest/src/gtest-all.cc
# with `g++ -O2 -g -flto -fno-fat-lto-objects -std=c++17` (GIMPLE and early
# debug info only, no machine code), JOBS at a time, into OBJ_DIR.
# RAPIDJSON_SRC is a checkout of github.com/Tencent/rapidjson and GTEST_SRC
# one of github.com/google/googletest (commits in
# bench/traces/NOTES-round4-builds.md; neither is part of this repository).
#
# `link` is the workload that is recorded: `g++ -O2 -g -flto=1
# -flto-partition=PARTITION -fuse-ld=bfd` of every object in OBJ_DIR into
# OBJ_DIR/tests (removed first, and again at the end).  With PARTITION
# `one` (the only one used in the traces of
# bench/traces/NOTES-round4-builds.md), lto1 (WPA) reads every unit's GIMPLE
# (~4 s, ~330 MiB), then a single LTRANS process (`lto1-ltrans`) generates
# code and debug info for the whole program, a staircase climb of ~140 s to
# ~2.1 GiB; it writes one big assembly file, and the assembler (`as`) on it
# climbs to ~3.2 GiB in ~20 s; then ld.bfd links (small).  With `balanced`
# the work would be split into partitions compiled one after another
# (-flto=1); not recorded.
set -eu
mode=$1 obj=$2
case $mode in
prepare)
    rj=$3 gt=$4 jobs=$5
    mkdir -p "$obj"
    flags="-O2 -g -flto -fno-fat-lto-objects -std=c++17 -I$rj/include -I$gt/googletest/include -I$gt/googletest -Wno-deprecated-declarations"
    {
        printf 'all:'
        for f in "$rj"/test/unittest/*.cpp; do printf ' %s.o' "$(basename "$f" .cpp)"; done
        printf ' gtest-all.o\n'
        for f in "$rj"/test/unittest/*.cpp; do
            printf '%s.o: %s\n\tg++ %s -c $< -o $@\n' "$(basename "$f" .cpp)" "$f" "$flags"
        done
        printf 'gtest-all.o: %s/googletest/src/gtest-all.cc\n\tg++ %s -c $< -o $@\n' "$gt" "$flags"
    } > "$obj/Makefile"
    make -C "$obj" -j"$jobs" all
    ;;
link)
    part=$3
    rm -f "$obj/tests"
    trap 'rm -f "$obj/tests"' EXIT INT TERM
    cd "$obj"
    g++ -O2 -g -flto=1 -flto-partition="$part" -fuse-ld=bfd ./*.o -o tests -lpthread
    ls -l tests
    ;;
*)
    echo "usage: link_rapidjson_lto.sh prepare OBJ_DIR RJ_SRC GTEST_SRC JOBS | link OBJ_DIR PARTITION" >&2; exit 2 ;;
esac
