#!/usr/bin/env bash
# The quick start: a local Kafka, redlight with the shipped config, sample events of all
# three domains (approvals, market registration, work safety), and the red-light board.
#
#   scripts/quickstart.sh            build, start Kafka and redlight, feed the samples, print the board's address
#   scripts/quickstart.sh events     print the relative samples (config/samples/relative.jsonl) timed for now
#   scripts/quickstart.sh stop       stop the redlight the quick start started (Kafka: scripts/kafka.sh stop)
#
# The samples are config/samples/events.jsonl (fixed dates, mostly red by now) and
# config/samples/relative.jsonl, a template whose times are written relative to now
# (@{now-22h}, @{now+12h}, @{workdays-19 10:00} = 10:00 on the day 19 workdays before today,
# @{stamp} = a per-run tag), expanded at start so that yellow and green show too.
#
# Needs: cargo (Rust >= 1.90), java 17+ and mvn (for the local Kafka), curl.
# Environment: REDLIGHT_PORT (9464, must match http.listen), QUICKSTART_STAMP (the run tag),
# QUICKSTART_TZ (Asia/Shanghai), REDLIGHT_BIN (a redlight binary to use instead of building),
# QUICKSTART_CONFIG (the config whose calendar places the samples timed in workdays; the
# tests pass their daemon's), QUICKSTART_NOW (the samples' now, in epoch seconds).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
CONFIG="config/redlight.toml"
DATA="data"                      # the shipped config's store.data_dir (../data from config/)
PORT="${REDLIGHT_PORT:-9464}"
TZ_NAME="${QUICKSTART_TZ:-Asia/Shanghai}"
TOPIC="redlight.events"
DEAD_LETTER="redlight.dead-letter"
GROUP="redlight"                 # the shipped config's kafka.group_id
PID_FILE="$DATA/redlight.pid"
LOG_FILE="$DATA/redlight.log"

say() { printf '\033[1mquickstart:\033[0m [%3d s] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'quickstart: error: %s\n' "$*" >&2; exit 1; }

# What `start` leaves behind if it stops half-way (an error, Ctrl-C): its temporary files
# and the background feeding of samples. The broker (also one still starting: stopping
# its start half-way could leave it running without a pid file) and redlight stay, as on
# success.
TEMP_FILES=()
BACKGROUND=()
cleanup() {
  local p
  for p in "${BACKGROUND[@]}"; do kill "$p" 2>/dev/null || true; done
  if ((${#TEMP_FILES[@]})); then rm -f -- "${TEMP_FILES[@]}"; fi
}
trap cleanup EXIT

redlight_bin() {
  if [[ -n "${REDLIGHT_BIN:-}" ]]; then printf '%s' "$REDLIGHT_BIN"; return; fi
  local b
  for b in target/debug/redlight target/release/redlight; do
    if [[ -x "$b" ]]; then printf '%s' "$b"; return; fi
  done
  die "no redlight binary: run cargo build (or set REDLIGHT_BIN)"
}

# ---------------------------------------------------------------------------------------
# events: expand the relative template

NOW_EPOCH="${QUICKSTART_NOW:-$(date +%s)}"
STAMP="${QUICKSTART_STAMP:-$(TZ="$TZ_NAME" date -d "@$NOW_EPOCH" +%m%d-%H%M)}"
EVENTS_CONFIG="${QUICKSTART_CONFIG:-$CONFIG}"

rfc3339() { TZ="$TZ_NAME" date -d "@$1" +%Y-%m-%dT%H:%M:%S%:z; }

# The date D (YYYY-MM-DD) with exactly N workdays in (D, today]: today is then the N-th
# workday after D, or past it on a rest day.
WORKDAYS_CACHE=""
workdays_back() {
  local n="$1" today from line date kind count=0 prev=""
  today="$(TZ="$TZ_NAME" date -d "@$NOW_EPOCH" +%Y-%m-%d)"
  from="$(TZ="$TZ_NAME" date -d "$today - $((n * 2 + 40)) days" +%Y-%m-%d)"
  if [[ -z "$WORKDAYS_CACHE" ]]; then
    WORKDAYS_CACHE="$("$(redlight_bin)" calendar --config "$EVENTS_CONFIG" list --from "$from" --to "$today" | tac)" \
      || die "redlight calendar list failed (does the calendar cover $from..$today?)"
  fi
  while IFS=$'\t' read -r date kind; do
    if (( count == n )); then printf '%s' "$date"; return; fi
    case "$kind" in workday|makeup) count=$((count + 1)) ;; esac
    prev="$date"
  done <<<"$WORKDAYS_CACHE"
  die "not enough calendar data before $today for @{workdays-$n}"
}

expand_token() {
  local tok="$1" n unit secs
  case "$tok" in
    stamp) printf '%s' "$STAMP" ;;
    now) rfc3339 "$NOW_EPOCH" ;;
    now[-+]*)
      [[ "$tok" =~ ^now([-+])([0-9]+)([smhd])$ ]] || die "bad template token @{$tok}"
      n="${BASH_REMATCH[2]}"; unit="${BASH_REMATCH[3]}"
      case "$unit" in s) secs=$n ;; m) secs=$((n * 60)) ;; h) secs=$((n * 3600)) ;; d) secs=$((n * 86400)) ;; esac
      if [[ "${BASH_REMATCH[1]}" == "-" ]]; then secs=$((-secs)); fi
      rfc3339 $((NOW_EPOCH + secs)) ;;
    workdays-*)
      [[ "$tok" =~ ^workdays-([0-9]+)\ ([0-9]{2}:[0-9]{2})$ ]] || die "bad template token @{$tok}"
      local d; d="$(workdays_back "${BASH_REMATCH[1]}")"
      TZ="$TZ_NAME" date -d "$d ${BASH_REMATCH[2]}" +%Y-%m-%dT%H:%M:%S%:z ;;
    *) die "unknown template token @{$tok}" ;;
  esac
}

# Whether the calendar data covers today. Past its end (a year whose State Council notice
# is not in config/calendars/ yet) the samples timed in workdays cannot be placed, and are
# left out with a warning; the others still go, and the daemon stays ready (its /readyz
# warns), so the demo still runs.
calendar_covers_today() {
  local today
  today="$(TZ="$TZ_NAME" date -d "@$NOW_EPOCH" +%Y-%m-%d)"
  "$(redlight_bin)" calendar --config "$EVENTS_CONFIG" list --from "$today" --to "$today" >/dev/null 2>&1
}

cmd_events() {
  local line tok rep covered=1 skipped=0
  calendar_covers_today || covered=0
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ -z "$line" ]] && continue
    if (( ! covered )) && [[ "$line" == *'@{workdays-'* ]]; then
      skipped=$((skipped + 1))
      continue
    fi
    while [[ "$line" =~ @\{([^}]*)\} ]]; do
      tok="${BASH_REMATCH[1]}"
      rep="$(expand_token "$tok")"
      line="${line//"@{$tok}"/$rep}"
    done
    printf '%s\n' "$line"
  done <config/samples/relative.jsonl
  if (( skipped )); then
    say "warning: the calendar data in config/calendars/ ends before today: $skipped sample event(s) timed in workdays left out;"
    say "         add the next year's State Council holiday notice (config/calendars/README.md)"
  fi
}

# ---------------------------------------------------------------------------------------
# the quick start

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$PORT$1" 2>/dev/null || true; }

stop_redlight() {
  local pid
  [[ -f "$PID_FILE" ]] || return 0
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && grep -q redlight "/proc/$pid/cmdline" 2>/dev/null; then
    say "stopping the redlight started earlier (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f -- "$PID_FILE"
}

# Kafka console producer lines "key<TAB>event": the key is the case id (the subject).
keyed() {
  local line subject
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ -z "$line" ]] && continue
    [[ "$line" =~ \"subject\":\ ?\"([^\"]*)\" ]] || die "sample without a subject: $line"
    subject="${BASH_REMATCH[1]}"
    printf '%s\t%s\n' "$subject" "$line"
  done
}

cmd_start() {
  local t0=$SECONDS
  command -v curl >/dev/null || die "curl not found"
  if [[ -z "${REDLIGHT_BIN:-}" ]]; then
    command -v cargo >/dev/null || die "cargo not found (install Rust >= 1.90)"
  fi
  # Kafka starts, and its topics are created, in the background while redlight builds, at
  # a lower CPU priority (nice) so that the build, the longer of the two, is not slowed.
  # The demo's broker keeps that priority; `scripts/kafka.sh stop` and `start` reset it.
  say "starting a local Kafka (scripts/kafka.sh start) and its topics while redlight builds"
  local kafka_log; kafka_log="$(mktemp)"
  TEMP_FILES+=("$kafka_log")
  # Our own earlier run: its store is removed below, so its topics and its consumer group's
  # offsets go too (after it has stopped). redlight refuses partitions its group has read
  # when its store holds nothing of them (a lost store), and a demo started afresh should
  # show only this run's samples anyway.
  local again=""
  if [[ -f "$DATA/.quickstart" ]]; then
    again=1
    stop_redlight
  fi
  nice -n 10 bash -c '
    if [[ -n "$3" ]]; then
      scripts/kafka.sh start && scripts/kafka.sh delete-group "$4" &&
        scripts/kafka.sh delete-topic "$1" && scripts/kafka.sh delete-topic "$2" || exit 1
    fi
    scripts/kafka.sh start && scripts/kafka.sh topic "$1" 4 && scripts/kafka.sh topic "$2" 1
  ' _ "$TOPIC" "$DEAD_LETTER" "$again" "$GROUP" >"$kafka_log" 2>&1 &
  local kafka_pid=$!
  if [[ -z "${REDLIGHT_BIN:-}" ]]; then
    # The dev profile: it compiles in about half the time of a release build, and the demo
    # needs no speed. Most of a first build is librdkafka's C sources (rdkafka-sys runs
    # their configure and make): at -O0 and without debug info (-g0) they compile in under
    # half the CPU time of the default -O2 -g. CFLAGS reaches only this first dev build
    # (cargo does not rebuild it when CFLAGS changes); `cargo build --release` compiles
    # librdkafka again, optimised, in target/release. Set CFLAGS yourself to override.
    #
    # Without the `https` feature: TLS (rustls and ring) is a sixth of a first build, and
    # the demo delivers to no receiver. A config with an https:// receiver is refused by
    # this binary with a message saying so; `cargo build` (default features) has TLS.
    # Nor the `mimalloc` allocator (a C build of its own): the demo's few cases do not
    # need it.
    #
    # Our own crate is compiled without incremental state and without line tables: a third
    # less time for the last, single-threaded, step of the build.
    say "building redlight (cargo build; a first build takes one to two minutes)"
    CFLAGS="${CFLAGS:--O0 -g0}" CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=0 \
      cargo build --quiet --bin redlight --no-default-features
  fi
  if kill -0 "$kafka_pid" 2>/dev/null; then say "waiting for the local Kafka and its topics"; fi
  if ! wait "$kafka_pid"; then
    cat "$kafka_log" >&2
    die "the local Kafka or its topics did not start (see above)"
  fi
  rm -f -- "$kafka_log"
  local bin; bin="$(redlight_bin)"
  "$bin" check --config "$CONFIG" >/dev/null || die "redlight check --config $CONFIG failed"

  stop_redlight
  if [[ "$(http_code /healthz)" == 200 ]]; then
    die "something already answers on 127.0.0.1:$PORT; stop it (or set http.listen and REDLIGHT_PORT)"
  fi
  if [[ -f "$DATA/.quickstart" ]]; then
    rm -rf -- "$DATA"               # our own earlier run: start from a clean store
  elif [[ -e "$DATA/redlight.redb" ]]; then
    say "keeping the existing store in $DATA/ (not made by the quick start)"
  fi
  mkdir -p "$DATA"
  touch "$DATA/.quickstart"

  # The samples are fed while redlight starts (it reads its topic from the beginning).
  # The demo recounts its board every second (board.cache_seconds, 5 in the shipped config).
  say "starting redlight run --config $CONFIG (log: $LOG_FILE)"
  REDLIGHT_BOARD__CACHE_SECONDS="${REDLIGHT_BOARD__CACHE_SECONDS:-1}" \
    nohup "$bin" run --config "$CONFIG" </dev/null >>"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  say "feeding config/samples/events.jsonl and config/samples/relative.jsonl (timed for now)"
  local events; events="$(mktemp)"
  TEMP_FILES+=("$events")
  { keyed <config/samples/events.jsonl; cmd_events | keyed; } >"$events"
  scripts/kafka.sh produce "$TOPIC" --property parse.key=true --property key.separator=$'\t' \
    <"$events" 2>/dev/null &
  local produce_pid=$!
  BACKGROUND+=("$produce_pid")
  local i
  for i in $(seq 1 240); do
    [[ "$(http_code /readyz)" == 200 ]] && break
    kill -0 "$(cat "$PID_FILE")" 2>/dev/null || { tail -20 "$LOG_FILE" >&2; die "redlight exited"; }
    sleep 0.25
  done
  [[ "$(http_code /readyz)" == 200 ]] || { curl -s "http://127.0.0.1:$PORT/readyz" >&2; die "redlight is not ready"; }
  wait "$produce_pid" || die "feeding the samples to $TOPIC failed (scripts/kafka.sh produce)"
  BACKGROUND=()
  rm -f -- "$events"

  # Wait until everything fed is applied (no lag, durable offsets steady), then until the
  # board shows it: the wall clock fires what fell due (kafka.idle_ms) and the counts are
  # recounted (board.cache_seconds); done when they stay the same for a recount.
  local metrics="" lag cur prev="" lights prev_lights=""
  for i in $(seq 1 240); do
    metrics="$(curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics" || true)"
    lag="$(awk '/^redlight_consumer_lag[{]/ {s += $NF; n++} END {print (n ? s : -1)}' <<<"$metrics")"
    cur="$(awk '/^redlight_durable_offset[{]/ {s += $NF} END {print s + 0}' <<<"$metrics")"
    if [[ "$lag" == 0 && "$cur" != 0 && "$cur" == "$prev" ]]; then break; fi
    prev="$cur"
    sleep 0.25
  done
  local sum
  sum() { awk -v l="$1" '$0 ~ "^redlight_case_lights\\{.*light=\"" l "\"" {s += $NF} END {print s + 0}' <<<"$metrics"; }
  local same=0
  for i in $(seq 1 60); do
    sleep 0.5
    metrics="$(curl -s --max-time 30 "http://127.0.0.1:$PORT/metrics" || true)"
    lights="$(sum red)/$(sum yellow)/$(sum green)"
    if [[ "$lights" == "$prev_lights" ]]; then same=$((same + 1)); else same=0; fi
    prev_lights="$lights"
    # the same for over a second (a recount) and every colour showing
    if (( same >= 3 )) && [[ "$(sum red)" != 0 && "$(sum yellow)" != 0 && "$(sum green)" != 0 ]]; then
      break
    fi
  done
  local light
  for light in red yellow green; do
    (( $(sum "$light") > 0 )) || say "warning: no $light case on the board yet (see $LOG_FILE)"
  done
  # Samples whose deadlines fall past the calendar data (a year whose State Council notice
  # is not in config/calendars/ yet) wait with their deadlines pending, and any that needs
  # a day without data to count time is refused to the dead-letter topic, as in
  # production; say so rather than leave the board looking short.
  local errors refused
  errors="$(awk '/^redlight_calendar_errors_total / {print $NF + 0}' <<<"$metrics")"
  refused="$(awk '/^redlight_events_rejected_total\{.*reason="no_calendar_data"/ {n += $NF} END {print n + 0}' <<<"$metrics")"
  if [[ -n "$errors" && "$errors" != 0 ]]; then
    say "warning: $((errors - refused)) sample deadline(s) wait for calendar data beyond config/calendars/ (no red until it is added), $refused sample event(s) went to $DEAD_LETTER;"
    say "         add the next year's State Council holiday notice (config/calendars/README.md)"
  fi
  # The yellow approval to look at, unless it was left out (the calendar data has ended).
  local shown="XZ-$STAMP-02"
  calendar_covers_today || shown="XZ-$STAMP-01"
  cat <<EOF

  红绿灯看板 (the red-light board):  http://127.0.0.1:$PORT/
      红灯 $(sum red) · 黄灯 $(sum yellow) · 绿灯 $(sum green)      (ready in $((SECONDS - t0)) s)
  案件详情 (a case's own page; every case id on the board links its own):
      http://127.0.0.1:$PORT/case/XZ-2026-0001
  考核 (the departments' scorecard; the board's footer links it):
      http://127.0.0.1:$PORT/scorecard?period=$(TZ="$TZ_NAME" date +%Y)

  JSON API:   curl -s 'http://127.0.0.1:$PORT/api/v1/cases?light=red'
              curl -s 'http://127.0.0.1:$PORT/api/v1/cases/$shown'
              curl -s 'http://127.0.0.1:$PORT/api/v1/alerts?level=red'
              curl -s 'http://127.0.0.1:$PORT/api/v1/scorecard?period=$(TZ="$TZ_NAME" date +%Y)'
  Metrics:    curl -s http://127.0.0.1:$PORT/metrics | grep ^redlight_
  Log:        $LOG_FILE
  Stop:       scripts/quickstart.sh stop && scripts/kafka.sh stop
EOF
}

case "${1:-start}" in
  start) cmd_start ;;
  events) cmd_events ;;
  stop) stop_redlight; say "redlight stopped (Kafka keeps running: scripts/kafka.sh stop)" ;;
  -h|--help|help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command ${1}; try: start, events, stop" ;;
esac
