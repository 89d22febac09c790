#!/usr/bin/env bash
# A profile-guided (PGO) release build of redlight: 5-10% less CPU than
# `cargo build --release` on the benchmarks (docs/performance-log.md, "What the late morning
# of 2026-12-07 adds"), for the cost of building twice.
#
#   scripts/pgo-build.sh                 build, train on the benchmarks' workloads, rebuild
#   scripts/pgo-build.sh --engine-only   train without Kafka (the engine, `replay`, parsing)
#
# 1. Builds redlight and the engine and daemon benchmarks instrumented
#    (`-Cprofile-generate`) in target/pgo/gen.
# 2. Trains them: the engine benchmark (200,000 open cases, their mixed events, `replay`
#    of 100,000 cases' JSON Lines), then, unless --engine-only, the daemon benchmark's two
#    streams (300,000 events each: new cases, whole cases) against a local Kafka
#    (`REDLIGHT_TEST_KAFKA` if set, else scripts/kafka.sh, which this script then stops
#    again if it started it). What is trained is what runs hot in production: applying
#    events, the clocks and the calendar, parsing CloudEvents, encoding and storing cases
#    and alerts, the consumer loop.
# 3. Merges the profiles (target/pgo/redlight.profdata) with `llvm-profdata` of the LLVM
#    that rustc uses, and builds again with `-Cprofile-use` in target/pgo/use.
#
# The result: target/pgo/use/release/redlight, the binary to deploy (it behaves exactly as
# the plain build: the profile only guides the optimiser's layout and inlining), and the
# engine benchmark built the same way (its path is printed) for measuring it.
#
# Needs, besides what `cargo build --release` needs: `llvm-profdata` of rustc's LLVM major
# version (`rustc -vV` says which): Debian's `llvm-<major>` package (llvm-profdata-<major>),
# or `rustup component add llvm-tools`. Takes about twice a release build, plus a minute
# or two of training (9 min 41 s on the 2-core development machine). Cargo's own
# settings pass on: CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
# add link-time optimisation (a further 2-3% here, 15 min 26 s of building).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

engine_only=0
for arg in "$@"; do
  case "$arg" in
    --engine-only) engine_only=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "pgo-build.sh: unknown argument $arg (see --help)" >&2
      exit 2
      ;;
  esac
done

say() { echo "pgo-build.sh: $*" >&2; }

# llvm-profdata must read what rustc's LLVM writes: the same major version.
rustc_version="$(rustc -vV)"
major="$(sed -n 's/^LLVM version: \([0-9]*\).*/\1/p' <<<"$rustc_version")"
if [[ -z "$major" ]]; then
  say "cannot tell rustc's LLVM version from \`rustc -vV\`"
  exit 2
fi
profdata=""
sysroot_tool="$(rustc --print sysroot)/lib/rustlib/$(sed -n 's/^host: //p' <<<"$rustc_version")/bin/llvm-profdata"
for candidate in "llvm-profdata-$major" "$sysroot_tool" llvm-profdata; do
  path="$(command -v "$candidate" 2>/dev/null || true)"
  [[ -n "$path" && -x "$path" ]] || continue
  if "$path" --version 2>/dev/null | grep -Eq "LLVM version $major\."; then
    profdata="$path"
    break
  fi
done
if [[ -z "$profdata" ]]; then
  say "no llvm-profdata of LLVM $major (rustc's): install Debian's llvm-$major package, or run \`rustup component add llvm-tools\`"
  exit 2
fi

pgo="$root/target/pgo"
profiles="$pgo/profiles"
rm -rf "$profiles" "$pgo/redlight.profdata" "$pgo/train-engine.txt" "$pgo/train-daemon.txt"
mkdir -p "$profiles"
base_flags="${RUSTFLAGS:-}"

# The executable cargo built for a target, from its JSON messages.
executable() {
  python3 -c 'import json, sys
name = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == name and m.get("executable"):
        print(m["executable"])' "$1"
}

build() { # build STAGE FLAGS [TARGET ...]: redlight and the engine bench (and the targets
  # given); prints cargo's JSON messages
  local stage="$1" flags="$2"
  shift 2
  RUSTFLAGS="$base_flags $flags" cargo build --release --locked --bins --bench engine "$@" \
    --target-dir "$pgo/$stage" --message-format=json-render-diagnostics
}

start=$SECONDS
say "1/3 building instrumented (target/pgo/gen)"
# The daemon bench only to train the daemon with.
daemon_bench=()
[[ "$engine_only" == 1 ]] || daemon_bench=(--bench daemon)
# Build scripts run instrumented too and write profiles of their own: they go elsewhere.
messages="$(LLVM_PROFILE_FILE="$pgo/build-scripts-%p.profraw" build gen "-Cprofile-generate=$profiles" "${daemon_bench[@]}")"
gen_redlight="$pgo/gen/release/redlight"
gen_engine="$(executable engine <<<"$messages" | tail -1)"
gen_daemon="$(executable daemon <<<"$messages" | tail -1)"
rm -f "$pgo"/build-scripts-*.profraw
gen_built=("$gen_redlight" "$gen_engine")
[[ "$engine_only" == 1 ]] || gen_built+=("$gen_daemon")
for f in "${gen_built[@]}"; do
  [[ -x "$f" ]] || { say "the instrumented build made no ${f:-executable}"; exit 1; }
done

say "2/3 training: the engine benchmark"
export LLVM_PROFILE_FILE="$profiles/train-%p-%m.profraw"
"$gen_engine" --bench --cases 200000 --replay-cases 100000 --no-binary >"$pgo/train-engine.txt"
if [[ "$engine_only" == 0 ]]; then
  if [[ -z "${REDLIGHT_TEST_KAFKA:-}" ]] && ! scripts/kafka.sh status >/dev/null 2>&1; then
    # Stopped again however the script ends; a broker already running stays up.
    trap 'scripts/kafka.sh stop >&2 || true' EXIT
    scripts/kafka.sh start >&2
    started_kafka=1
  fi
  for stream in "" --lifecycle; do
    say "2/3 training: the daemon benchmark ${stream:-(new cases)}"
    # shellcheck disable=SC2086 # $stream is one flag or none
    REDLIGHT_BENCH_BIN="$gen_redlight" "$gen_daemon" --bench --events 300000 --no-restart $stream \
      >>"$pgo/train-daemon.txt"
  done
  if [[ -n "${started_kafka:-}" ]]; then
    scripts/kafka.sh stop >&2
    trap - EXIT
  fi
fi
unset LLVM_PROFILE_FILE
shopt -s nullglob
raw=("$profiles"/train-*.profraw)
if ((${#raw[@]} == 0)); then
  say "the training wrote no profiles into $profiles"
  exit 1
fi
"$profdata" merge -o "$pgo/redlight.profdata" "${raw[@]}"

say "3/3 building with the profile (target/pgo/use)"
messages="$(build use "-Cprofile-use=$pgo/redlight.profdata")"
use_engine="$(executable engine <<<"$messages" | tail -1)"
say "done in $((SECONDS - start)) s"
echo "redlight:         $pgo/use/release/redlight"
echo "engine benchmark: $use_engine   (--bench [--only engine])"
echo "daemon benchmark: REDLIGHT_BENCH_BIN=$pgo/use/release/redlight cargo bench --bench daemon"
