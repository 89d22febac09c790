#!/usr/bin/env bash
# Runs `redlight` under `perf record`, every thread of it, for the daemon benchmark:
#
#   REDLIGHT_BENCH_BIN=scripts/profile-daemon.sh cargo bench --bench daemon -- --no-restart
#   perf report -i target/perf-daemon.data --sort comm,symbol
#
# The bench starts this script in the daemon's place and stops it with SIGTERM; the script
# passes the signal on to redlight and waits for perf to write its file. perf starts
# redlight itself, so it records the threads redlight starts later (the parser, the store
# writer, the checkpoints): `perf record -p` attached to a running daemon records only the
# threads that exist when it attaches. The bench's restart run writes the file again (perf
# keeps the first as `.old`): add `--no-restart` to profile the stream alone.
#
# Environment: PROFILE_OUT (default target/perf-daemon.data), PROFILE_BIN (default
# target/release/redlight, the build `cargo bench` makes), PROFILE_FREQ (samples a second,
# default 999). Needs perf (Debian: linux-perf).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${PROFILE_OUT:-$root/target/perf-daemon.data}"
bin="${PROFILE_BIN:-$root/target/release/redlight}"
if ! command -v perf >/dev/null 2>&1; then
  echo "profile-daemon.sh: perf is not installed (Debian: apt-get install linux-perf)" >&2
  exit 2
fi
perf record -F "${PROFILE_FREQ:-999}" -g -o "$out" -- "$bin" "$@" &
perf_pid=$!
# redlight is perf's child once perf has started it.
child=""
for _ in $(seq 100); do
  child="$(pgrep -P "$perf_pid" | head -n1)"
  [[ -n "$child" ]] && break
  sleep 0.05
done
forward() { [[ -n "$child" ]] && kill -"$1" "$child" 2>/dev/null; }
trap 'forward TERM' TERM
trap 'forward INT' INT
# `wait` returns early when a trapped signal comes: wait again until perf is done.
while :; do
  wait "$perf_pid"
  rc=$?
  kill -0 "$perf_pid" 2>/dev/null || break
done
# Had perf ended just after a signal cut the wait short, this gives its own status.
wait "$perf_pid" 2>/dev/null
last=$?
[[ $last != 127 ]] && rc=$last
exit "$rc"
