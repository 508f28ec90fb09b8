#!/bin/sh
# Rebuild some targets of a real, already configured CMake/Ninja build tree.
#
#     build_ninja.sh [-k] BUILD_DIR JOBS TARGET...
#
# Removes the given targets' outputs (`ninja -t clean TARGET...`), then
# builds them with `ninja -jJOBS`, so each run compiles the same units from
# scratch.  The traces in NOTES-builds.md use it on trees under
# /var/tmp/mgbuild-* (nlohmann/json unit tests, fmt tests, Catch2, ...)
# configured outside the recorder (see NOTES-builds.md for the exact cmake
# lines); the trees are not part of this repository.  Under a tight memory
# limit the kernel OOM-kills a cc1plus: g++ prints "Killed signal terminated
# program cc1plus", ninja stops starting new jobs, waits for the running ones
# and exits 1.  With -k (ninja -k 0, like `make -k`) ninja keeps starting
# the remaining jobs after a failure, so a tight limit brings kill after kill
# until every target has been tried.
set -eu
keep=""
if [ "$1" = "-k" ]; then keep="-k 0"; shift; fi
dir=$1 jobs=$2
shift 2
ninja -C "$dir" -t clean "$@" >/dev/null
exec ninja -C "$dir" -j"$jobs" $keep "$@"
