#!/usr/bin/env bash
# The project's test command (README "Run the tests"): formatting, lints, every Rust test
# (the end-to-end ones against a real Kafka broker this script starts), the calendar
# cross-check against an independent source, and a quick benchmark smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says how far into the run it starts (bash's SECONDS), so a slow step shows.
step() { printf '\n==> [%ss] %s\n' "$SECONDS" "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "scripts/*.sh parse (bash -n); scripts/pgo-build.sh --help"
for f in scripts/*.sh deploy/validate.sh; do bash -n "$f"; done
scripts/pgo-build.sh --help >/dev/null

step "Markdown: every relative link names a file, and every anchor a heading (scripts/check-links.py)"
python3 scripts/check-links.py

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

step "Debian packages: Cyrus SASL (the kafka-gssapi feature), MIT Kerberos (the test broker's KDC)"
# libsasl2-dev to build librdkafka with GSSAPI, its GSSAPI plugin and kinit to log in, and
# the KDC that scripts/kafka.sh runs beside the broker for the Kerberos end-to-end test.
missing=()
for p in libsasl2-dev libsasl2-modules-gssapi-mit krb5-user krb5-kdc krb5-admin-server; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "start a local Kafka broker for the end-to-end tests (scripts/kafka.sh)"
export KAFKA_PORT="${KAFKA_PORT:-19092}"
# Stop the broker on exit only if this run started it (a developer's broker stays up).
if scripts/kafka.sh status >/dev/null 2>&1; then
  scripts/kafka.sh start
else
  scripts/kafka.sh start
  trap 'scripts/kafka.sh stop || true' EXIT
fi
REDLIGHT_TEST_KAFKA="$(scripts/kafka.sh bootstrap)"
export REDLIGHT_TEST_KAFKA

step "headless Chromium, a CJK font and pdftoppm for the board test (Debian's chromium, poppler-utils)"
if ! command -v chromium >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root apt-get install -y -qq chromium >/dev/null
fi
if ! fc-list :lang=zh 2>/dev/null | grep -q .; then
  as_root apt-get install -y -qq fonts-wqy-zenhei >/dev/null \
    || { as_root apt-get update -qq && as_root apt-get install -y -qq fonts-wqy-zenhei >/dev/null; }
fi
# pdftoppm renders the board's pages printed to PDF, to check they print black on white.
if ! command -v pdftoppm >/dev/null 2>&1; then
  as_root apt-get install -y -qq poppler-utils >/dev/null \
    || { as_root apt-get update -qq && as_root apt-get install -y -qq poppler-utils >/dev/null; }
fi
chromium --version

step "cargo test"
cargo test --quiet 2>&1 | tee target/test-output.txt

# One release build for the binary and the benchmarks: `cargo bench` builds target/release/
# redlight beside them, with the dependencies' features as the benchmarks' own dependencies
# ask for them. `cargo build --release` before it built the crate and 35 dependencies again
# with fewer (2026-12-07, from nothing: 274 s, then 165 s for the benchmarks; this, 323 s).
step "cargo bench --no-run: target/release/redlight and the benchmarks, one release build"
cargo bench --quiet --no-run --bench engine --bench micro

step "redlight check"
target/release/redlight check --config config/redlight.toml

step "deploy/: JSON and YAML parse, the systemd unit, the Docker and Kubernetes configs"
deploy/validate.sh target/release/redlight

step "calendar cross-check against the chinesecalendar package"
python3 -c 'import chinese_calendar' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check 'chinesecalendar==1.11.0'
target/release/redlight calendar --config config/redlight.toml list --from 2020-01-01 --to 2026-12-31 \
  | python3 tests/calendar_crosscheck.py -

step "benchmark smoke run (figures only; the full run is: cargo bench --bench engine)"
cargo bench --quiet --bench engine -- --quick
step "criterion micro-benchmarks, each run once as a check (the full run: cargo bench --bench micro)"
cargo bench --quiet --bench micro -- --test

# The closing line CI reads: the totals of every `cargo test` binary above.
passed=$(grep -Eo '[0-9]+ passed' target/test-output.txt | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test-output.txt | awk '{s+=$1} END {print s+0}')
step "done"
printf '\ntests: %s passed, %s failed\n' "$passed" "$failed"
