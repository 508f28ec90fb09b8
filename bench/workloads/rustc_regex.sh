#!/bin/sh
# Compile two real Rust crates with rustc directly (no cargo, no network):
# regex-syntax, then regex-automata against it, from a checkout of
# github.com/rust-lang/regex (commit in bench/traces/NOTES-round5-builds.md;
# not part of this repository).
#
#     rustc_regex.sh REGEX_SRC OUT_DIR OPT_LEVEL CODEGEN_UNITS
#
# Removes OUT_DIR's previous artefacts, then runs two rustc processes one
# after the other, each `rustc --edition 2021 --crate-type rlib -g
# -C opt-level=OPT_LEVEL -C codegen-units=CODEGEN_UNITS` with the features
# the crates' Cargo.toml enable by default, except regex-automata's `perf`
# features (they need the memchr and aho-corasick crates, which are not
# here): regex-syntax with std and all unicode-* tables; regex-automata with
# std, alloc, syntax, meta, nfa-*, dfa-*, hybrid and unicode-*, linked to the
# first crate's rlib with --extern.  Each rustc parses, type-checks and
# lowers the crate (one thread, a climb), then LLVM optimises and generates
# code for CODEGEN_UNITS units on worker threads (a second, noisier climb),
# and frees it all at exit.  Written for round 5's `compile-rust-regex`
# traces.
set -eu
src=$1 out=$2 opt=$3 cgu=$4
mkdir -p "$out"
rm -f "$out"/libregex_syntax.rlib "$out"/libregex_automata.rlib
# the feature flags are built as positional parameters (no eval: the
# quotes of feature="..." must reach rustc)
rc() { rustc --edition 2021 --crate-type rlib -g -C opt-level="$opt" -C codegen-units="$cgu" --cap-lints allow "$@"; }
set --
for f in std unicode unicode-age unicode-bool unicode-case unicode-gencat unicode-perl unicode-script unicode-segment; do
    set -- "$@" --cfg "feature=\"$f\""
done
echo "rustc regex-syntax"
rc --crate-name regex_syntax "$@" --out-dir "$out" "$src/regex-syntax/src/lib.rs"
set --
for f in std alloc syntax meta nfa nfa-thompson nfa-pikevm nfa-backtrack dfa dfa-build dfa-search dfa-onepass hybrid \
         unicode unicode-age unicode-bool unicode-case unicode-gencat unicode-perl unicode-script unicode-segment unicode-word-boundary; do
    set -- "$@" --cfg "feature=\"$f\""
done
echo "rustc regex-automata"
rc --crate-name regex_automata "$@" --extern regex_syntax="$out/libregex_syntax.rlib" --out-dir "$out" "$src/regex-automata/src/lib.rs"
ls -l "$out"
