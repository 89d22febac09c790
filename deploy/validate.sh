#!/usr/bin/env bash
# Validates what can be validated of deploy/ without Docker, Kubernetes or Prometheus:
# every JSON and YAML file parses, the systemd unit passes `systemd-analyze verify`, and
# the redlight configurations shipped for Docker and Kubernetes pass `redlight check`
# against the repository's rules and calendars. (That every metric the dashboard and the
# alert rules query exists is tests/metrics_names.rs.)
#   deploy/validate.sh [path/to/redlight]
set -euo pipefail
# A binary given is taken from where the command was run, absolute or relative.
BIN="${1:+$(realpath -- "$1")}"
cd "$(dirname "$0")/.."
if [[ -z "$BIN" ]]; then
  BIN="$PWD/target/release/redlight"
  [[ -x "$BIN" ]] || BIN="$PWD/target/debug/redlight"
fi
[[ -x "$BIN" ]] || { echo "validate: no redlight binary at $BIN (cargo build)" >&2; exit 1; }
fail() { echo "validate: $*" >&2; exit 1; }

python3 -c 'import yaml' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check 'PyYAML>=6,<7'
python3 - <<'PY'
import json, pathlib, sys, yaml
bad = 0
for p in sorted(pathlib.Path("deploy").rglob("*")):
    if p.suffix == ".json":
        try: json.loads(p.read_text(encoding="utf-8"))
        except Exception as e: print(f"{p}: {e}", file=sys.stderr); bad += 1
    elif p.suffix in (".yml", ".yaml"):
        try: list(yaml.safe_load_all(p.read_text(encoding="utf-8")))
        except Exception as e: print(f"{p}: {e}", file=sys.stderr); bad += 1
rules = yaml.safe_load(open("deploy/prometheus/alerts.yml", encoding="utf-8"))
for g in rules["groups"]:
    for r in g["rules"]:
        for key in ("alert", "expr", "labels", "annotations"):
            if key not in r: print(f"alerts.yml: rule {r.get('alert')}: no {key}", file=sys.stderr); bad += 1
sys.exit(1 if bad else 0)
PY
echo "validate: JSON and YAML parse" >&2

tmp="$(mktemp -d)"
trap 'rm -rf -- "$tmp"' EXIT
if command -v systemd-analyze >/dev/null 2>&1; then
  for unit in redlight.service redlight-backup.service redlight-backup.timer; do
    sed "s|/usr/local/bin/redlight|$BIN|g" "deploy/systemd/$unit" >"$tmp/$unit"
  done
  out="$(cd "$tmp" && systemd-analyze verify redlight.service redlight-backup.service redlight-backup.timer 2>&1 || true)"
  if grep -q "redlight" <<<"$out"; then fail "systemd units: $out"; fi
  echo "validate: systemd units verified" >&2
fi

# The Docker image's layout: /etc/redlight/{redlight.toml,calendars,rules}.
mkdir -p "$tmp/docker" "$tmp/etc/redlight/conf"
cp -r config/calendars config/rules "$tmp/docker/"
cp deploy/docker/redlight.toml "$tmp/docker/"
REDLIGHT_HTTP__TOKEN=validate "$BIN" check --config "$tmp/docker/redlight.toml" --today 2026-01-01 >/dev/null \
  || fail "deploy/docker/redlight.toml does not pass redlight check"
# Kubernetes: absolute /etc/redlight paths.
cp -r config/calendars config/rules "$tmp/etc/redlight/"
sed "s|/etc/redlight|$tmp/etc/redlight|g" deploy/k8s/redlight.toml >"$tmp/etc/redlight/conf/redlight.toml"
REDLIGHT_HTTP__TOKEN=validate "$BIN" check --config "$tmp/etc/redlight/conf/redlight.toml" --today 2026-01-01 >/dev/null \
  || fail "deploy/k8s/redlight.toml does not pass redlight check"
# Without a token they must refuse to run: they listen beyond loopback.
if "$BIN" check --config "$tmp/docker/redlight.toml" --today 2026-01-01 >/dev/null 2>&1; then
  fail "deploy/docker/redlight.toml listens beyond loopback but starts without a token"
fi
echo "validate: the Docker and Kubernetes configurations pass redlight check" >&2
