#!/bin/sh
# Repack real git repositories from scratch, one after the other, the way a
# maintenance job (`git gc --aggressive`) does.
#
#     git_repack.sh WINDOW THREADS REPO.git...
#
# For each bare repository in turn: `git -c pack.threads=THREADS repack -adf
# -q --window=WINDOW --depth=50`, i.e. every object is written again into one
# new pack and every delta is searched again (-f) over a window of WINDOW
# objects.  pack-objects' memory grows while it counts objects and then while
# its threads fill their delta windows and delta caches; it is freed when the
# repository is done.  The round-2 traces in
# bench/traces/NOTES-fresh-builds.md use bare clones under /var/tmp/mgbuild2-git
# (not part of this repository).  Under a tight memory limit the kernel
# OOM-kills `git` (pack-objects); repack fails and this script stops there
# (set -e), leaving the repository's old pack in place.
set -eu
window=$1 threads=$2
shift 2
for repo in "$@"; do
    git -C "$repo" -c pack.threads="$threads" repack -adf -q --window="$window" --depth=50
done
