#!/bin/sh
# Load one large JSON array into jq and group it: a native tool whose memory
# is a whole parsed document plus the copies that group_by makes.
#
#     jq_group.sh gen FILE ROWS     write FILE (run once, before recording)
#     jq_group.sh run FILE          the workload that is recorded
#
# `gen` writes a JSON array of ROWS generated records with mawk (no random
# numbers: the same bytes every time), one object per line:
#     {"id":N,"user":"u<N*7919 mod 50021>","cat":"c<N*31 mod 97>",
#      "v":<(N*48271 mod 65521)/65521>,"tags":["t<N mod 13>","t<N mod 29>"],
#      "note":"<a 40-character hex string from multiplicative hashes of N>"}
# `run` is one `jq -c` (Debian's jq 1.6) over FILE: it parses the whole
# array into memory (a steady climb while the file is read), then
# `group_by(.user)`, builds one summary object per user and prints the ten
# users with the largest totals.  In round 4's `tool-jq-group` traces
# (bench/traces/NOTES-round4-builds.md; 1,500,000 rows) the parse is the
# whole climb (~1.7 GiB in ~4.5 s); the grouping that follows for ~20 s
# adds almost nothing, and it is all freed at exit.  No code is fetched.
set -eu
mode=$1 file=$2
case $mode in
gen)
    rows=$3
    mawk -v rows="$rows" 'BEGIN {
        print "[";
        for (n = 1; n <= rows; n++) {
            h1 = (n * 2654435761) % 4294967296; h2 = (n * 40503) % 4294967296;
            h3 = (n * 2246822519) % 4294967296; h4 = (n * 3266489917) % 4294967296;
            h5 = (n * 668265263) % 4294967296;
            printf "{\"id\":%d,\"user\":\"u%d\",\"cat\":\"c%d\",\"v\":%.6f,\"tags\":[\"t%d\",\"t%d\"],\"note\":\"%08x%08x%08x%08x%08x\"}%s\n",
                n, (n * 7919) % 50021, (n * 31) % 97, ((n * 48271) % 65521) / 65521.0,
                n % 13, n % 29, h1, h2, h3, h4, h5, (n < rows ? "," : "");
        }
        print "]";
    }' > "$file.tmp"
    mv "$file.tmp" "$file"
    ls -l "$file"
    ;;
run)
    exec jq -c 'group_by(.user)
        | map({user: .[0].user, n: length, total: (map(.v) | add),
               cats: (map(.cat) | unique | length)})
        | sort_by(-.total) | .[:10] | .[]' "$file"
    ;;
*)
    echo "usage: jq_group.sh gen FILE ROWS | run FILE" >&2; exit 2 ;;
esac
