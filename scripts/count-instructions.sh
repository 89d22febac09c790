#!/usr/bin/env bash
# Counts the instructions the engine bench's mix executes, per event, under valgrind's
# callgrind: a figure that does not move with the hour the way timings on a shared virtual
# machine do (runs here vary by 10-20%; the count of one binary by under 0.05%), so a change
# of a few percent in the engine's own work can be measured in one run of each build instead
# of ten alternating pairs.
#
#   scripts/count-instructions.sh [CASES] [BENCH_BINARY]
#
# CASES: open cases of the bench (default 20000: about 78,000 mixed events, a minute or two
# under callgrind). BENCH_BINARY: an engine bench executable to measure (default: the one
# `cargo bench --bench engine --no-run` builds from this tree), so that two builds can be
# compared. Needs valgrind (the Debian package `valgrind`).
#
# What it does not show: memory stalls (with a million cases the mix waits on cache misses
# more than it computes; instructions only count the work), and SHA-256 as it runs here:
# valgrind does not offer the processor's SHA instructions, so `sha2` falls back to its
# portable code and an alert's id counts several times what it costs natively.
set -euo pipefail
cd "$(dirname "$0")/.."

cases="${1:-20000}"
bench="${2:-}"
if ! command -v valgrind >/dev/null 2>&1; then
  echo "count-instructions.sh: valgrind is not installed (Debian: apt-get install valgrind)" >&2
  exit 2
fi
if [[ -z "$bench" ]]; then
  bench="$(cargo bench --bench engine --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "engine" and m.get("executable"):
        print(m["executable"])')"
fi
if [[ ! -x "$bench" ]]; then
  echo "count-instructions.sh: no engine bench executable (${bench:-none found})" >&2
  exit 2
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
  --toggle-collect='*drive_mix*' "$bench" --bench --only engine --cases "$cases" \
  >"$out/bench.txt" 2>"$out/valgrind.txt"

events="$(sed -n 's/^  mix: \([0-9]*\) events in.*/\1/p' "$out/bench.txt")"
instructions="$(sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$out/valgrind.txt")"
if [[ -z "$events" || -z "$instructions" ]]; then
  echo "count-instructions.sh: the run printed no mix or no count; its output:" >&2
  cat "$out/bench.txt" "$out/valgrind.txt" >&2
  exit 1
fi
echo "bench:        $bench"
echo "cases:        $cases"
echo "mix events:   $events"
echo "instructions: $instructions ($((instructions / events)) per event)"
echo
# Shorter source paths: a crate's directory in cargo's registry, the standard library's,
# glibc's.
short() { sed -e 's#[^ ]*/registry/src/[^/]*/##' -e 's#/rustc/[0-9a-f]*/library/#std:#' \
  -e 's#\./string/\.\./sysdeps/[^ ]*/##' -e 's# \[[^]]*\]$##' | cut -c1-150; }
echo "the functions with the most instructions of their own:"
callgrind_annotate "$out/callgrind.out" 2>/dev/null |
  sed -n '/file:function/,$p' | sed -n '3,22p' | short
echo
echo "and with what they call:"
callgrind_annotate --inclusive=yes "$out/callgrind.out" 2>/dev/null |
  sed -n '/file:function/,$p' |
  grep -v 'library/std\|library/core/src/ops\|below main\|libc_start\|lang_start\|ld-linux\|???:main\|engine::main\|engine::drive' |
  sed -n '3,22p' | short
