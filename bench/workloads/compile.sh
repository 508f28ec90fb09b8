#!/bin/sh
# A parallel C++ build: generates four template-heavy units (heavy_cpp.py)
# in a scratch folder under /var/tmp and builds them with `make -j2`, so two
# cc1plus run side by side (each peaks at ~330-410 MiB with g++ 12.2).
#
#     compile.sh [JOBS] [TYPES]     defaults: 2 and 16,12
#
# Under 704 MiB the first pair (16 and 12 types, ~690 MiB together) just
# fits; the second pair (both 16 types) passes the limit ~19 s in and the
# kernel OOM-kills one cc1plus: g++ reports "Killed signal terminated program
# cc1plus", make lets the other job finish and exits 2.  Under 1 GiB
# everything fits (peak ~800 MiB).  The scratch folder is removed on exit.
set -eu
here=$(dirname "$0")
dir=$(mktemp -d /var/tmp/mgtrace-cpp.XXXXXX)
trap 'rm -rf "$dir"' EXIT INT TERM
python3 "$here/heavy_cpp.py" "$dir" --units 4 --types "${2:-16,12}" --funcs 2
make -C "$dir" -j"${1:-2}"
