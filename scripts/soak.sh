#!/usr/bin/env bash
# A soak run: the daemon under a steady stream of whole approval cases that open, close and
# are forgotten, with a webhook receiver taking every alert, for MINUTES (default 40). Event
# time runs SOAK_SPEED (5000) times faster than the wall clock, so a run of 40 minutes is
# about 140 days of a service centre's cases (scripts/soak-events.py): what a daemon left
# running for months must show is that its memory, the cases it holds and its store stop
# growing once cases are forgotten as fast as they come (`engine.retention_days` after
# their last event), and that nothing waits in the outbox.
#
#   scripts/soak.sh [MINUTES]
#
# Prints a line a minute (also in target/soak/soak.log): resident memory, events consumed,
# cases held and open, alerts raised and delivered, deliveries waiting, consumer lag, the
# store's journal and file sizes. Then stops the stream, waits for the daemon to catch up,
# stops it with SIGTERM, starts it again on the same store and prints how long it took to
# be ready. Environment: SOAK_SPEED (5000), SOAK_RATE (new cases a second, 300),
# REDLIGHT_BIN (default target/release/redlight, built when missing), SOAK_PORT (the
# daemon's HTTP port, 19464), SOAK_RECEIVER_PORT (18099). Uses the local Kafka of
# scripts/kafka.sh (started when not running, and stopped again at the end if it was not),
# its topics soak.events (4 partitions) and soak.dead-letter, and the consumer group soak,
# all deleted first; the store is target/soak/data, deleted first.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
MINUTES="${1:-40}"
[[ "$MINUTES" =~ ^[0-9]+$ ]] && ((MINUTES > 0)) || { echo "soak.sh: MINUTES must be a whole number above 0, not '$MINUTES'" >&2; exit 1; }
SPEED="${SOAK_SPEED:-5000}"
RATE="${SOAK_RATE:-300}"
PORT="${SOAK_PORT:-19464}"
RECEIVER_PORT="${SOAK_RECEIVER_PORT:-18099}"
BIN="${REDLIGHT_BIN:-target/release/redlight}"
WORK="$ROOT/target/soak"
KAFKA="$ROOT/scripts/kafka.sh"
# Event time must never pass the wall clock (the daemon refuses events from the future).
BASE_DAYS=$(( MINUTES * 60 * SPEED / 86400 + 2 ))

say() { printf 'soak: %s\n' "$*" >&2; }
PIDS=()
STARTED_KAFKA=0
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  if ((STARTED_KAFKA)); then "$KAFKA" stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

if [[ ! -x "$BIN" ]]; then
  say "building $BIN"
  cargo build --release --quiet
fi
if ! "$KAFKA" status >/dev/null 2>&1; then
  "$KAFKA" start
  STARTED_KAFKA=1
fi
"$KAFKA" delete-topic soak.events >/dev/null 2>&1 || true
"$KAFKA" delete-topic soak.dead-letter >/dev/null 2>&1 || true
"$KAFKA" delete-group soak >/dev/null 2>&1 || true
"$KAFKA" topic soak.events 4
"$KAFKA" topic soak.dead-letter 1

rm -rf "$WORK"
mkdir -p "$WORK"
cp -r config "$WORK/config"
CONFIG="$WORK/config/redlight.toml"
sed -i \
  -e "s|^data_dir = .*|data_dir = \"$WORK/data\"|" \
  -e 's|^group_id = .*|group_id = "soak"|' \
  -e 's|^topics = .*|topics = ["soak.events"]|' \
  -e 's|^dead_letter_topic = .*|dead_letter_topic = "soak.dead-letter"|' \
  -e "s|^listen = .*|listen = \"127.0.0.1:$PORT\"|" \
  -e "s|^brokers = .*|brokers = \"$("$KAFKA" bootstrap)\"|" \
  "$CONFIG"
cat >> "$CONFIG" <<EOF

[[receiver]]
name = "soak"
format = "json"
url = "http://127.0.0.1:$RECEIVER_PORT/hook"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
send_resolved = true

[[route]]
receivers = "soak"
EOF
"$BIN" check --config "$CONFIG" >/dev/null

# A receiver answering 200 to everything, on a thread per connection.
setsid python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' "$RECEIVER_PORT" >"$WORK/receiver.log" 2>&1 &
PIDS+=($!)

start_daemon() {
  setsid "$BIN" run --config "$CONFIG" >>"$WORK/daemon.log" 2>&1 &
  DAEMON=$!
  local t0
  t0=$(date +%s%N)
  until curl -sf "127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
    kill -0 "$DAEMON" 2>/dev/null || { say "the daemon ended; see $WORK/daemon.log"; exit 1; }
    sleep 0.1
  done
  READY_S=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
}
start_daemon
PIDS+=("$DAEMON")

setsid bash -c "python3 '$ROOT/scripts/soak-events.py' $BASE_DAYS $SPEED $RATE | '$KAFKA' produce soak.events --property parse.key=true --property 'key.separator=	'" \
  >"$WORK/feed.log" 2>&1 &
FEED=$!
PIDS+=("$FEED")
say "running $MINUTES min: event time from $BASE_DAYS days ago at $SPEED times the wall clock, $RATE new cases a second; the store is $WORK/data"

metric_sum() { # NAME [LABEL FILTER]
  awk -v n="$1" -v f="${2:-}" '$1 ~ "^"n"([{]|$)" && (f == "" || index($1, f)) { s += $NF } END { printf "%.0f", s }' "$WORK/metrics.txt"
}
sample() {
  curl -s -m 10 "127.0.0.1:$PORT/metrics" >"$WORK/metrics.txt" || : >"$WORK/metrics.txt"
  local rss
  rss=$(awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$DAEMON/status" 2>/dev/null || echo "?")
  printf '%5s %8s %10s %8s %7s %8s %9s %6s %6s %8s %9s %11s\n' "$1" "$rss" \
    "$(metric_sum redlight_events_consumed_total)" "$(metric_sum redlight_cases)" \
    "$(metric_sum redlight_case_lights)" "$(metric_sum redlight_alerts_total)" \
    "$(metric_sum redlight_deliveries_total 'outcome="delivered"')" \
    "$(metric_sum redlight_outbox_depth)" "$(metric_sum redlight_consumer_lag)" \
    "$(metric_sum redlight_store_journal_entries)" \
    "$(( $(metric_sum redlight_store_file_bytes 'cases.redb') / 1048576 ))" \
    "$(( $(metric_sum redlight_store_file_bytes 'redlight.redb') / 1048576 ))" | tee -a "$WORK/soak.log"
}
printf '%5s %8s %10s %8s %7s %8s %9s %6s %6s %8s %9s %11s\n' min "RSS MiB" events cases open alerts delivered outbox lag journal "cases MiB" "redlight MiB" | tee "$WORK/soak.log"
for ((m = 0; m <= MINUTES; m++)); do
  ((m == 0)) || sleep 60
  sample "$m"
done

kill -- "-$FEED" 2>/dev/null || true
say "stream stopped; waiting for the daemon to catch up and deliver"
for _ in $(seq 1 120); do
  curl -s -m 10 "127.0.0.1:$PORT/metrics" >"$WORK/metrics.txt" || true
  if [[ "$(metric_sum redlight_consumer_lag)" == 0 && "$(metric_sum redlight_outbox_depth)" == 0 ]]; then break; fi
  sleep 1
done
sample end
kill -TERM "$DAEMON"
rc=0
wait "$DAEMON" || rc=$?
say "SIGTERM: the daemon exited with status $rc"
start_daemon
PIDS+=("$DAEMON")
say "restarted on the same store: ready in ${READY_S} s with $(curl -s "127.0.0.1:$PORT/metrics" | awk '$1 == "redlight_cases" { print $2 }') cases"
sample again
kill -TERM "$DAEMON"
wait "$DAEMON" || true
say "done; the daemon's log is $WORK/daemon.log"
