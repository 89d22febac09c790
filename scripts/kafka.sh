#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, broker+controller in one JVM) for
# tests, CI and a quick start -- no Docker, no tarball download: the broker's
# jars are resolved from Maven with deploy/kafka/pom.xml.
#
#   scripts/kafka.sh install            resolve the jars into the cache (idempotent)
#   scripts/kafka.sh start              install if needed, format if needed, start, wait until ready
#   scripts/kafka.sh stop               SIGTERM, wait, SIGKILL after KAFKA_STOP_TIMEOUT
#   scripts/kafka.sh restart            stop + start (keeps the data)
#   scripts/kafka.sh status             exit 0 when running, 3 when not
#   scripts/kafka.sh reset              stop and delete the data dir
#   scripts/kafka.sh topic NAME [PARTS] create a topic if it does not exist (replication factor 1)
#   scripts/kafka.sh delete-topic NAME  delete a topic if it exists
#   scripts/kafka.sh delete-group NAME  delete a consumer group and its offsets if it exists (no member may be running)
#   scripts/kafka.sh bootstrap          print 127.0.0.1:<port>
#   scripts/kafka.sh tls-bootstrap      print 127.0.0.1:<TLS port> (the SASL_SSL listener)
#   scripts/kafka.sh tls-ca             print the path of the certificate that listener's clients trust
#   scripts/kafka.sh gssapi-bootstrap   print 127.0.0.1:<GSSAPI port> (the Kerberos listener)
#   scripts/kafka.sh kerberos           print KRB5_CONFIG=, keytab= and principal= for a client of it
#   scripts/kafka.sh produce TOPIC      send stdin lines (console producer)
#   scripts/kafka.sh consume TOPIC [N]  print N (default 10) messages from the beginning
#   scripts/kafka.sh run CLASS [ARGS]   run any main class from the jars (tool logging)
#   scripts/kafka.sh env                print the effective settings
#
# Needs only bash, coreutils, java (17+) and mvn. See deploy/kafka/README.md. With openssl
# it adds a SASL_SSL listener; with MIT Kerberos' KDC (Debian: krb5-kdc, krb5-admin-server)
# a SASL_PLAINTEXT listener with GSSAPI and a KDC of its own (realm REDLIGHT.TEST).
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_DIR="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
POM="$REPO_DIR/deploy/kafka/pom.xml"

KAFKA_VERSION="${KAFKA_VERSION:-4.1.2}"
KAFKA_LOG4J_VERSION="${KAFKA_LOG4J_VERSION:-2.25.3}"
REDLIGHT_CACHE="${REDLIGHT_CACHE:-${HOME:-/tmp}/.cache/redlight}"
KAFKA_HOME="${KAFKA_HOME:-$REDLIGHT_CACHE/kafka-$KAFKA_VERSION}"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_PORT="${KAFKA_PORT:-19092}"
if ! [[ "$KAFKA_PORT" =~ ^[0-9]{1,5}$ ]] || (( KAFKA_PORT < 1 || KAFKA_PORT > 65534 )); then
  printf 'kafka.sh: error: invalid KAFKA_PORT: %s\n' "$KAFKA_PORT" >&2
  exit 1
fi
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_DATA="${KAFKA_DATA:-$REDLIGHT_CACHE/kafka-data-$KAFKA_PORT}"
# A second listener, SASL_SSL with SCRAM-SHA-256 and a self-signed certificate made with
# openssl on first start, for testing a client against a broker as data centres run them.
KAFKA_TLS_PORT="${KAFKA_TLS_PORT:-$((KAFKA_PORT + 2))}"
# A third, SASL_PLAINTEXT with GSSAPI (Kerberos), when MIT Kerberos' KDC is installed: a
# KDC of its own (krb5kdc) in the data dir, started and stopped with the broker, with the
# broker's principal kafka/127.0.0.1 and a client principal, each in a keytab.
KAFKA_GSSAPI_PORT="${KAFKA_GSSAPI_PORT:-$((KAFKA_PORT + 3))}"
KAFKA_KDC_PORT="${KAFKA_KDC_PORT:-$((KAFKA_PORT + 4))}"
KAFKA_KRB_REALM="REDLIGHT.TEST"
KAFKA_KRB_CLIENT="${KAFKA_KRB_CLIENT:-redlight}"
KAFKA_SASL_USER="${KAFKA_SASL_USER:-redlight}"
KAFKA_SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-redlight-secret}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_JVM_OPTS="${KAFKA_JVM_OPTS:-}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
KAFKA_LOG_LEVEL="${KAFKA_LOG_LEVEL:-INFO}"
KAFKA_MVN_ARGS="${KAFKA_MVN_ARGS:-}"

# Relative paths are taken from the caller's cwd, once, so that the pid check
# (which compares the broker's command line) works from any directory.
abspath() { if [[ "$1" == /* ]]; then printf '%s' "$1"; else printf '%s/%s' "$PWD" "$1"; fi; }
REDLIGHT_CACHE="$(abspath "$REDLIGHT_CACHE")"
KAFKA_HOME="$(abspath "$KAFKA_HOME")"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_DATA="$(abspath "$KAFKA_DATA")"
KAFKA_DATA="${KAFKA_DATA%/}"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA="java"
fi

# Files inside the data dir.
PROPS="$KAFKA_DATA/server.properties"
LOG4J_BROKER="$KAFKA_DATA/log4j2.properties"
LOG4J_TOOLS="$KAFKA_DATA/tools-log4j2.properties"
ADMIN_PROPS="$KAFKA_DATA/admin.properties"
PID_FILE="$KAFKA_DATA/kafka.pid"
LOG_FILE="$KAFKA_DATA/kafka.log"
LOG_DIRS="$KAFKA_DATA/logs"
CLUSTER_ID_FILE="$KAFKA_DATA/cluster.id"
TLS_DIR="$KAFKA_DATA/tls"
TLS_CA="$TLS_DIR/ca.pem"
TLS_KEYSTORE="$TLS_DIR/server.pem"
SCRAM_MARK="$KAFKA_DATA/scram-user"
KRB_DIR="$KAFKA_DATA/kerberos"
KRB_CONF="$KRB_DIR/krb5.conf"
KRB_KDC_CONF="$KRB_DIR/kdc.conf"
KRB_KDC_PID="$KRB_DIR/kdc.pid"
KRB_BROKER_KEYTAB="$KRB_DIR/kafka.keytab"
KRB_CLIENT_KEYTAB="$KRB_DIR/client.keytab"
KRB_JAAS="$KRB_DIR/kafka-jaas.conf"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  local line
  while IFS= read -r line; do
    [[ "$line" == "#!"* ]] && continue
    [[ "$line" == "#"* ]] || break
    line="${line#\#}"; printf '%s\n' "${line# }"
  done <"${BASH_SOURCE[0]}" >&2
}

# ---------------------------------------------------------------------------
# helpers

strip_ansi() {
  local line esc=$'\e'
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line//${esc}\[0m/}"
    [[ -n "$line" ]] && printf '%s\n' "$line"
  done
  return 0
}

have_cmd() { command -v "$1" >/dev/null 2>&1; }

check_java() {
  have_cmd "$JAVA" || [[ -x "$JAVA" ]] || die "java not found (need Java 17+; set JAVA_HOME or PATH)"
  local spec="" line
  while IFS= read -r line; do
    if [[ "$line" =~ ^[[:space:]]*java\.specification\.version[[:space:]]*=[[:space:]]*([0-9.]+) ]]; then
      spec="${BASH_REMATCH[1]}"
    fi
  done < <("$JAVA" -XshowSettings:properties -version 2>&1 || true)
  [[ -n "$spec" ]] || die "could not determine the Java version of $JAVA"
  if [[ "$spec" == 1.* ]] || (( ${spec%%.*} < 17 )); then
    die "Kafka $KAFKA_VERSION needs Java 17+, but $JAVA is Java $spec"
  fi
}

validate_port() {
  if ! [[ "$1" =~ ^[0-9]+$ ]] || (( $1 < 1 || $1 > 65535 )); then die "invalid port: $1"; fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Simple mkdir-based lock (works without flock). $1 = lock dir.
LOCKS_HELD=()
release_locks() {
  local l
  for l in "${LOCKS_HELD[@]+"${LOCKS_HELD[@]}"}"; do
    rm -rf -- "$l" 2>/dev/null || true
  done
  LOCKS_HELD=()
}
trap release_locks EXIT
acquire_lock() {
  local lock="$1" waited=0 holder
  mkdir -p -- "$(dirname -- "$lock")"
  while ! mkdir -- "$lock" 2>/dev/null; do
    holder="$(cat -- "$lock/pid" 2>/dev/null || true)"
    if [[ -n "$holder" ]] && ! kill -0 "$holder" 2>/dev/null; then
      log "removing stale lock $lock (pid $holder is gone)"
      rm -rf -- "$lock"
      continue
    fi
    if (( waited == 0 )); then log "waiting for lock $lock (held by pid ${holder:-?})"; fi
    if (( waited >= 600 )); then die "timed out waiting for lock $lock"; fi
    sleep 1
    waited=$((waited + 1))
  done
  echo $$ >"$lock/pid"
  LOCKS_HELD+=("$lock")
}

# A pid is alive if it exists and is not a zombie (containers without an init
# that reaps orphans keep zombies around; kill -0 succeeds on them).
pid_alive() {
  local pid="$1" stat="" state
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/stat" ]]; then
    stat="$(<"/proc/$pid/stat")" 2>/dev/null || true
    state="${stat##*) }"; state="${state%% *}"
    [[ "$state" != "Z" && "$state" != "X" ]] || return 1
  fi
  return 0
}

# Print the pid of the broker of this data dir if it is running.
broker_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] || return 1
  pid_alive "$pid" || return 1
  # Guard against pid reuse: it must be our java with our server.properties.
  if [[ -r "/proc/$pid/cmdline" ]]; then
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ "$cmdline" == *"$PROPS"* ]] || return 1
  fi
  printf '%s\n' "$pid"
}

libs_installed() { [[ -f "$KAFKA_LIBS/.installed" ]]; }

# Run a main class from the jars with the tools' logging (warnings to stderr).
run_class() {
  local cls="$1"; shift
  libs_installed || die "Kafka $KAFKA_VERSION is not installed (run: $0 install)"
  mkdir -p -- "$KAFKA_DATA"
  write_tools_log4j
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_TOOLS" \
    -cp "$KAFKA_LIBS/*" "$cls" "$@"
}

require_running() {
  broker_pid >/dev/null || die "the broker on port $KAFKA_PORT is not running (data dir $KAFKA_DATA; run: $0 start)"
}

# ---------------------------------------------------------------------------
# install

cmd_install() {
  local quiet="${1:-}"
  if libs_installed; then
    [[ -n "$quiet" ]] || log "Kafka $KAFKA_VERSION already installed in $KAFKA_LIBS"
    return 0
  fi
  have_cmd mvn || die "mvn not found (needed once to resolve the Kafka jars)"
  [[ -f "$POM" ]] || die "missing $POM"
  check_java
  acquire_lock "$KAFKA_HOME.lock"
  if libs_installed; then   # another process finished while we waited
    release_locks
    return 0
  fi
  mkdir -p -- "$KAFKA_HOME"
  local tmp="$KAFKA_HOME/libs.tmp.$$" start=$SECONDS
  rm -rf -- "$tmp"
  log "resolving Kafka $KAFKA_VERSION (kafka_2.13 + kafka-tools + log4j2 $KAFKA_LOG4J_VERSION) with Maven into $KAFKA_LIBS ..."
  # shellcheck disable=SC2086 # KAFKA_MVN_ARGS is intentionally word-split
  # (Debian's mvn prints stray colour resets even in batch mode: strip them.)
  if ! mvn -B -q -Dstyle.color=never -f "$POM" \
      -Dkafka.version="$KAFKA_VERSION" -Dlog4j.version="$KAFKA_LOG4J_VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
      $KAFKA_MVN_ARGS </dev/null 2>&1 | strip_ansi >&2; then
    rm -rf -- "$tmp"
    die "mvn failed to resolve Kafka $KAFKA_VERSION (is the version published? see output above)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || { rm -rf -- "$tmp"; die "kafka_2.13-$KAFKA_VERSION.jar missing after mvn"; }
  [[ -f "$tmp/kafka-tools-$KAFKA_VERSION.jar" ]] || { rm -rf -- "$tmp"; die "kafka-tools-$KAFKA_VERSION.jar missing after mvn"; }
  printf 'kafka %s\nlog4j %s\ninstalled %s\n' "$KAFKA_VERSION" "$KAFKA_LOG4J_VERSION" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$tmp/.installed"
  rm -rf -- "$KAFKA_LIBS"
  mv -T -- "$tmp" "$KAFKA_LIBS"
  local jars=("$KAFKA_LIBS"/*.jar)
  log "installed Kafka $KAFKA_VERSION (${#jars[@]} jars, $(du -sh "$KAFKA_LIBS" | cut -f1)) in $((SECONDS - start))s"
  release_locks
}

# ---------------------------------------------------------------------------
# config

write_tools_log4j() {
  [[ -f "$LOG4J_TOOLS" ]] && return 0
  cat >"$LOG4J_TOOLS.tmp.$$" <<'EOF'
# Generated by scripts/kafka.sh: logging for the command-line tools (stderr, WARN).
status = error
name = redlight-kafka-tools
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
  mv -f -- "$LOG4J_TOOLS.tmp.$$" "$LOG4J_TOOLS"
}

# The TLS listener's certificate (self-signed, for 127.0.0.1), made once per data dir.
# Without openssl the broker starts without that listener.
write_tls() {
  [[ -s "$TLS_KEYSTORE" && -s "$TLS_CA" ]] && return 0
  if ! command -v openssl >/dev/null 2>&1; then
    log "openssl not found: starting without the SASL_SSL listener"
    return 1
  fi
  mkdir -p -- "$TLS_DIR"
  if ! openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=127.0.0.1" \
      -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
      -keyout "$TLS_DIR/key.pem" -out "$TLS_CA.tmp" >>"$LOG_FILE" 2>&1; then
    log "openssl could not make a certificate: starting without the SASL_SSL listener"
    return 1
  fi
  cat -- "$TLS_DIR/key.pem" "$TLS_CA.tmp" >"$TLS_KEYSTORE"
  rm -f -- "$TLS_DIR/key.pem"
  mv -f -- "$TLS_CA.tmp" "$TLS_CA"
}

# MIT Kerberos' tools; krb5kdc and kadmin.local live in /usr/sbin on Debian.
krb_tool() {
  local t
  for t in "$(command -v "$1" 2>/dev/null)" "/usr/sbin/$1" "/usr/bin/$1"; do
    if [[ -n "$t" && -x "$t" ]]; then printf '%s' "$t"; return 0; fi
  done
  return 1
}

# The KDC's realm, database and keytabs, made once per data dir. Without MIT Kerberos'
# KDC the broker starts without the GSSAPI listener.
write_kerberos() {
  local kdb kadmin q
  if ! kdb="$(krb_tool kdb5_util)" || ! kadmin="$(krb_tool kadmin.local)" || ! krb_tool krb5kdc >/dev/null; then
    return 1
  fi
  mkdir -p -- "$KRB_DIR"
  # dns_canonicalize_hostname and rdns off: the broker's principal is kafka/127.0.0.1,
  # the address clients know it by, with no name lookup in between.
  cat >"$KRB_CONF" <<KRB
# Generated by scripts/kafka.sh: the realm of the local broker's GSSAPI listener.
[libdefaults]
  default_realm = $KAFKA_KRB_REALM
  dns_lookup_realm = false
  dns_lookup_kdc = false
  dns_canonicalize_hostname = false
  rdns = false
  udp_preference_limit = 1
[realms]
  $KAFKA_KRB_REALM = {
    kdc = 127.0.0.1:$KAFKA_KDC_PORT
  }
KRB
  cat >"$KRB_KDC_CONF" <<KRB
[kdcdefaults]
  kdc_ports = $KAFKA_KDC_PORT
  kdc_tcp_ports = $KAFKA_KDC_PORT
[realms]
  $KAFKA_KRB_REALM = {
    database_name = $KRB_DIR/principal
    key_stash_file = $KRB_DIR/stash
    acl_file = $KRB_DIR/kadm5.acl
    supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
  }
[logging]
  kdc = FILE:$KRB_DIR/kdc.log
KRB
  cat >"$KRB_JAAS" <<KRB
KafkaServer {
  com.sun.security.auth.module.Krb5LoginModule required
  useKeyTab=true storeKey=true doNotPrompt=true
  keyTab="$KRB_BROKER_KEYTAB"
  principal="kafka/127.0.0.1@$KAFKA_KRB_REALM";
};
KRB
  [[ -s "$KRB_BROKER_KEYTAB" && -s "$KRB_CLIENT_KEYTAB" ]] && return 0
  rm -f -- "$KRB_DIR"/principal* "$KRB_DIR/stash" "$KRB_BROKER_KEYTAB" "$KRB_CLIENT_KEYTAB"
  local pw ok=1
  pw="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export KRB5_CONFIG="$KRB_CONF" KRB5_KDC_PROFILE="$KRB_KDC_CONF"
  "$kdb" create -s -r "$KAFKA_KRB_REALM" -P "$pw" >>"$LOG_FILE" 2>&1 || ok=0
  for q in "addprinc -randkey kafka/127.0.0.1" "addprinc -randkey $KAFKA_KRB_CLIENT" \
           "ktadd -k $KRB_BROKER_KEYTAB kafka/127.0.0.1" "ktadd -k $KRB_CLIENT_KEYTAB $KAFKA_KRB_CLIENT"; do
    (( ok )) || break
    "$kadmin" -r "$KAFKA_KRB_REALM" -q "$q" >>"$LOG_FILE" 2>&1 || ok=0
  done
  unset KRB5_CONFIG KRB5_KDC_PROFILE
  if (( ! ok )) || [[ ! -s "$KRB_BROKER_KEYTAB" || ! -s "$KRB_CLIENT_KEYTAB" ]]; then
    log "could not make the Kerberos realm: starting without the GSSAPI listener (log: $LOG_FILE)"
    rm -f -- "$KRB_BROKER_KEYTAB" "$KRB_CLIENT_KEYTAB"
    return 1
  fi
}

kdc_pid() {
  local pid
  [[ -s "$KRB_KDC_PID" ]] || return 1
  pid="$(tr -dc '0-9' <"$KRB_KDC_PID")"
  [[ -n "$pid" ]] && pid_alive "$pid" && grep -q krb5kdc "/proc/$pid/cmdline" 2>/dev/null || return 1
  printf '%s' "$pid"
}

# Starts the KDC unless it runs; waits until its port answers.
start_kdc() {
  kdc_pid >/dev/null && return 0
  rm -f -- "$KRB_KDC_PID"
  if port_open "$KAFKA_KDC_PORT"; then
    die "port $KAFKA_KDC_PORT (the KDC's) on 127.0.0.1 is already in use (choose another KAFKA_PORT)"
  fi
  KRB5_CONFIG="$KRB_CONF" KRB5_KDC_PROFILE="$KRB_KDC_CONF" "$(krb_tool krb5kdc)" -P "$KRB_KDC_PID" \
    </dev/null >>"$LOG_FILE" 2>&1 || die "the KDC did not start (log: $KRB_DIR/kdc.log)"
  local i
  for ((i = 0; i < 50; i++)); do port_open "$KAFKA_KDC_PORT" && return 0; sleep 0.1; done
  die "the KDC does not answer on 127.0.0.1:$KAFKA_KDC_PORT (log: $KRB_DIR/kdc.log)"
}

stop_kdc() {
  local pid i
  pid="$(kdc_pid)" || { rm -f -- "$KRB_KDC_PID"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do pid_alive "$pid" || break; sleep 0.1; done
  rm -f -- "$KRB_KDC_PID"
}

cmd_kerberos() {
  [[ -s "$KRB_CLIENT_KEYTAB" ]] \
    || die "no GSSAPI listener here (start the broker with krb5-kdc and krb5-admin-server installed)"
  printf 'KRB5_CONFIG=%s\nkeytab=%s\nprincipal=%s@%s\n' \
    "$KRB_CONF" "$KRB_CLIENT_KEYTAB" "$KAFKA_KRB_CLIENT" "$KAFKA_KRB_REALM"
}

write_config() {
  mkdir -p -- "$KAFKA_DATA" "$LOG_DIRS"
  local listeners="PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT"
  local advertised="PLAINTEXT://127.0.0.1:$KAFKA_PORT"
  local map="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  local tls=""
  if write_tls; then
    listeners="$listeners,SASL_SSL://127.0.0.1:$KAFKA_TLS_PORT"
    advertised="$advertised,SASL_SSL://127.0.0.1:$KAFKA_TLS_PORT"
    map="$map,SASL_SSL:SASL_SSL"
    tls="
# The SASL_SSL listener: SCRAM-SHA-256 (user $KAFKA_SASL_USER, added after the first start)
# over TLS with the certificate in $TLS_DIR.
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$TLS_KEYSTORE"
  fi
  KRB_JVM_OPTS=""
  if write_kerberos; then
    listeners="$listeners,SASL_PLAINTEXT://127.0.0.1:$KAFKA_GSSAPI_PORT"
    advertised="$advertised,SASL_PLAINTEXT://127.0.0.1:$KAFKA_GSSAPI_PORT"
    map="$map,SASL_PLAINTEXT:SASL_PLAINTEXT"
    tls="$tls
# The SASL_PLAINTEXT listener: GSSAPI (Kerberos) in realm $KAFKA_KRB_REALM, whose KDC
# this script runs on 127.0.0.1:$KAFKA_KDC_PORT ($KRB_DIR).
listener.name.sasl_plaintext.sasl.enabled.mechanisms=GSSAPI
sasl.kerberos.service.name=kafka"
    KRB_JVM_OPTS="-Djava.security.krb5.conf=$KRB_CONF -Djava.security.auth.login.config=$KRB_JAAS"
  fi
  cat >"$PROPS" <<EOF
# Generated by scripts/kafka.sh on every start -- edits are overwritten.
# Single-node KRaft: one JVM is both the broker and the (only) controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT

listeners=$listeners
advertised.listeners=$advertised
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=$map
$tls

log.dirs=$LOG_DIRS

# Topics
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true

# Internal topics on a single node
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# Fast consumer-group joins in tests
group.initial.rebalance.delay.ms=0

# Modest resource use
num.network.threads=2
num.io.threads=4
log.retention.hours=168
log.segment.bytes=104857600
EOF

  cat >"$LOG4J_BROKER" <<EOF
# Generated by scripts/kafka.sh: broker logging to stdout (redirected to $LOG_FILE).
status = error
name = redlight-kafka
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = $KAFKA_LOG_LEVEL
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
EOF

  cat >"$ADMIN_PROPS" <<'EOF'
# Generated by scripts/kafka.sh: short timeouts for the readiness probe.
request.timeout.ms=5000
default.api.timeout.ms=8000
EOF
  write_tools_log4j
}

is_formatted() { [[ -f "$LOG_DIRS/meta.properties" ]]; }

new_cluster_id() {
  # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding; Kafka
  # avoids ids starting with '-' (they look like CLI flags).
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' | cut -c1-22)"
    [[ "$id" != -* && ${#id} -eq 22 ]] && break
  done
  printf '%s\n' "$id"
}

format_storage() {
  local cid
  if [[ -n "${KAFKA_CLUSTER_ID:-}" ]]; then
    cid="$KAFKA_CLUSTER_ID"
  elif [[ -s "$CLUSTER_ID_FILE" ]]; then
    cid="$(cat -- "$CLUSTER_ID_FILE")"
  else
    cid="$(new_cluster_id)"
  fi
  printf '%s\n' "$cid" >"$CLUSTER_ID_FILE"
  log "formatting $LOG_DIRS (cluster id $cid)"
  if ! run_class kafka.tools.StorageTool format --cluster-id "$cid" --config "$PROPS" --ignore-formatted >>"$LOG_FILE" 2>&1; then
    tail -n 30 -- "$LOG_FILE" >&2 || true
    die "formatting the storage failed (log: $LOG_FILE)"
  fi
}

# ---------------------------------------------------------------------------
# start / stop

probe_ready() {
  # Bounded even if the admin client misbehaves.
  timeout 20 "$JAVA" -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_TOOLS" -cp "$KAFKA_LIBS/*" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    --command-config "$ADMIN_PROPS" --list >/dev/null 2>&1
}

fail_start() {
  local pid="$1" why="$2"
  log "error: $why"
  log "---- last lines of $LOG_FILE ----"
  tail -n 40 -- "$LOG_FILE" >&2 || true
  log "----"
  if [[ -n "$pid" ]] && pid_alive "$pid"; then
    log "killing the half-started broker (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 10; i++)); do pid_alive "$pid" || break; sleep 1; done
    if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f -- "$PID_FILE"
  exit 1
}

cmd_start() {
  validate_port "$KAFKA_PORT"; validate_port "$KAFKA_CONTROLLER_PORT"; validate_port "$KAFKA_TLS_PORT"
  validate_port "$KAFKA_GSSAPI_PORT"; validate_port "$KAFKA_KDC_PORT"
  [[ "$KAFKA_START_TIMEOUT" =~ ^[0-9]+$ ]] || die "KAFKA_START_TIMEOUT must be a number of seconds"
  cmd_install quiet
  check_java
  acquire_lock "$KAFKA_DATA.lock"
  local pid
  if pid="$(broker_pid)"; then
    log "already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
    # Its KDC too, if it has a GSSAPI listener (the KDC may have been stopped alone).
    if [[ -s "$KRB_CLIENT_KEYTAB" ]] && grep -q "SASL_PLAINTEXT://127.0.0.1:$KAFKA_GSSAPI_PORT" "$PROPS" 2>/dev/null; then
      start_kdc
    fi
    release_locks
    return 0
  fi
  rm -f -- "$PID_FILE"
  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_TLS_PORT" "$KAFKA_GSSAPI_PORT"; do
    if port_open "$p"; then
      die "port $p on 127.0.0.1 is already in use by another process (choose another KAFKA_PORT)"
    fi
  done

  local t0=$SECONDS
  write_config
  is_formatted || format_storage
  if [[ -n "$KRB_JVM_OPTS" ]]; then start_kdc; fi

  # Keep the log from growing without bound across many restarts.
  if [[ -f "$LOG_FILE" ]] && (( $(stat -c %s -- "$LOG_FILE" 2>/dev/null || echo 0) > 50 * 1024 * 1024 )); then
    mv -f -- "$LOG_FILE" "$LOG_FILE.1"
  fi
  printf '\n==== kafka.sh start %s (Kafka %s, port %s) ====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$KAFKA_VERSION" "$KAFKA_PORT" >>"$LOG_FILE"

  log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT, data $KAFKA_DATA)"
  # stdin/stdout/stderr detached from the caller so that e.g. a test harness
  # capturing our output is not kept waiting by the broker.
  # shellcheck disable=SC2086 # heap/jvm opts are intentionally word-split
  nohup "$JAVA" $KAFKA_HEAP_OPTS \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_BROKER" -Dkafka.logs.dir="$KAFKA_DATA" \
    $KRB_JVM_OPTS $KAFKA_JVM_OPTS \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$PROPS" \
    </dev/null >>"$LOG_FILE" 2>&1 &
  pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"

  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while :; do
    pid_alive "$pid" || fail_start "" "the broker exited during startup"
    if port_open "$KAFKA_PORT" && probe_ready; then
      break
    fi
    (( SECONDS < deadline )) || fail_start "$pid" "the broker did not become ready within ${KAFKA_START_TIMEOUT}s"
    sleep 0.5
  done
  add_scram_user "$pid"
  log "ready: 127.0.0.1:$KAFKA_PORT (pid $pid, $((SECONDS - t0))s, log $LOG_FILE)"
  release_locks
}

# The SASL_SSL listener's user, added through the plaintext listener once per data dir
# and user and password (the broker keeps it in its metadata; the mark file holds the
# user and a hash of the password it was added with).
add_scram_user() {
  [[ -s "$TLS_CA" ]] || return 0
  local mark
  mark="$KAFKA_SASL_USER $(printf '%s' "$KAFKA_SASL_PASSWORD" | sha256sum | cut -c1-16)"
  [[ "$(cat -- "$SCRAM_MARK" 2>/dev/null)" == "$mark" ]] && return 0
  if run_class kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
      --command-config "$ADMIN_PROPS" --alter --entity-type users --entity-name "$KAFKA_SASL_USER" \
      --add-config "SCRAM-SHA-256=[iterations=4096,password=$KAFKA_SASL_PASSWORD]" >>"$LOG_FILE" 2>&1; then
    printf '%s\n' "$mark" >"$SCRAM_MARK"
  else
    fail_start "$1" "could not add the SASL user $KAFKA_SASL_USER (log: $LOG_FILE)"
  fi
}

cmd_tls_ca() {
  [[ -s "$TLS_CA" ]] || die "no TLS listener here (start the broker with openssl installed): $TLS_CA"
  printf '%s\n' "$TLS_CA"
}

stop_locked() {
  local pid
  if ! pid="$(broker_pid)"; then
    rm -f -- "$PID_FILE"
    stop_kdc
    log "not running (port $KAFKA_PORT, data dir $KAFKA_DATA)"
    return 0
  fi
  [[ "$KAFKA_STOP_TIMEOUT" =~ ^[0-9]+$ ]] || die "KAFKA_STOP_TIMEOUT must be a number of seconds"
  log "stopping the broker (pid $pid) ..."
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
  while pid_alive "$pid"; do
    if (( SECONDS >= deadline )); then
      log "still running after ${KAFKA_STOP_TIMEOUT}s: sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      local i
      for ((i = 0; i < 50; i++)); do pid_alive "$pid" || break; sleep 0.1; done
      break
    fi
    sleep 0.2
  done
  pid_alive "$pid" && die "could not stop pid $pid"
  rm -f -- "$PID_FILE"
  stop_kdc
  log "stopped"
}

cmd_stop() {
  acquire_lock "$KAFKA_DATA.lock"
  stop_locked
  release_locks
}

cmd_status() {
  local pid
  if pid="$(broker_pid)"; then
    echo "running: pid $pid, bootstrap 127.0.0.1:$KAFKA_PORT, data $KAFKA_DATA, Kafka $KAFKA_VERSION"
    return 0
  fi
  local note=""
  if is_formatted; then note=" (formatted)"; fi
  echo "stopped: port $KAFKA_PORT, data $KAFKA_DATA$note"
  return 3
}

cmd_reset() {
  acquire_lock "$KAFKA_DATA.lock"
  stop_locked
  if [[ -e "$KAFKA_DATA" ]]; then
    case "$KAFKA_DATA" in
      ""|/|"$HOME"|"$REDLIGHT_CACHE") die "refusing to delete $KAFKA_DATA" ;;
    esac
    rm -rf -- "$KAFKA_DATA"
    log "deleted $KAFKA_DATA"
  else
    log "nothing to delete ($KAFKA_DATA does not exist)"
  fi
  release_locks
}

cmd_topic() {
  local name="${1:-}" parts="${2:-4}"
  [[ -n "$name" ]] || die "usage: $0 topic NAME [PARTITIONS]"
  if ! [[ "$parts" =~ ^[0-9]+$ ]] || (( parts < 1 )); then die "PARTITIONS must be a positive number"; fi
  require_running
  run_class org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    --create --if-not-exists --topic "$name" --partitions "$parts" --replication-factor 1 >&2
  log "topic $name ready"
}

cmd_delete_topic() {
  local name="${1:-}"
  [[ -n "$name" ]] || die "usage: $0 delete-topic NAME"
  require_running
  run_class org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    --delete --if-exists --topic "$name" >&2
  # The deletion completes in the background: a topic created again before it is gone
  # would be taken by `topic`'s --if-not-exists for the old one and then vanish.
  local i
  for i in $(seq 1 60); do
    if ! run_class org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
      --list 2>/dev/null | grep -qxF -- "$name"; then
      log "topic $name deleted"
      return 0
    fi
    sleep 0.5
  done
  die "topic $name is still listed 30 s after its deletion"
}

cmd_delete_group() {
  local name="${1:-}" out
  [[ -n "$name" ]] || die "usage: $0 delete-group NAME"
  require_running
  # The tool exits 0 whether or not it deleted the group: its words say which. A member
  # killed without leaving stays in the group until its session times out (10 s for
  # redlight): wait for that rather than fail.
  local i
  for i in $(seq 1 20); do
    out="$(run_class org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
      --bootstrap-server "127.0.0.1:$KAFKA_PORT" --delete --group "$name" 2>&1)" || true
    grep -q "GroupNotEmpty" <<<"$out" || break
    (( i == 1 )) && log "group $name has a member still; waiting for its session to end"
    sleep 2
  done
  if grep -q "GroupIdNotFound" <<<"$out"; then
    log "group $name did not exist"
  elif grep -qi "error\|fail" <<<"$out"; then
    printf '%s\n' "$out" >&2
    die "could not delete group $name"
  else
    log "group $name deleted"
  fi
}

cmd_produce() {
  local topic="${1:-}"
  [[ -n "$topic" ]] || die "usage: $0 produce TOPIC < lines"
  shift
  require_running
  run_class org.apache.kafka.tools.ConsoleProducer --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    --topic "$topic" "$@"
}

cmd_consume() {
  local topic="${1:-}" max="${2:-10}"
  [[ -n "$topic" ]] || die "usage: $0 consume TOPIC [MAX_MESSAGES]"
  shift; (( $# )) && shift
  require_running
  run_class org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    --topic "$topic" --from-beginning --max-messages "$max" --timeout-ms "${KAFKA_CONSUME_TIMEOUT_MS:-15000}" "$@"
}

cmd_env() {
  cat <<EOF
KAFKA_VERSION=$KAFKA_VERSION
KAFKA_LOG4J_VERSION=$KAFKA_LOG4J_VERSION
REDLIGHT_CACHE=$REDLIGHT_CACHE
KAFKA_HOME=$KAFKA_HOME
KAFKA_PORT=$KAFKA_PORT
KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT
KAFKA_DATA=$KAFKA_DATA
KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
KAFKA_TLS_PORT=$KAFKA_TLS_PORT
KAFKA_TLS_BOOTSTRAP=127.0.0.1:$KAFKA_TLS_PORT
KAFKA_TLS_CA=$TLS_CA
KAFKA_SASL_USER=$KAFKA_SASL_USER
KAFKA_GSSAPI_PORT=$KAFKA_GSSAPI_PORT
KAFKA_GSSAPI_BOOTSTRAP=127.0.0.1:$KAFKA_GSSAPI_PORT
KAFKA_KDC_PORT=$KAFKA_KDC_PORT
KAFKA_KRB5_CONFIG=$KRB_CONF
KAFKA_HEAP_OPTS=$KAFKA_HEAP_OPTS
KAFKA_START_TIMEOUT=$KAFKA_START_TIMEOUT
KAFKA_STOP_TIMEOUT=$KAFKA_STOP_TIMEOUT
EOF
}

# ---------------------------------------------------------------------------

main() {
  local cmd="${1:-}"
  (( $# )) && shift
  case "$cmd" in
    install)   cmd_install ;;
    start)     cmd_start ;;
    stop)      cmd_stop ;;
    restart)   cmd_stop; cmd_start ;;
    status)    cmd_status ;;
    reset)     cmd_reset ;;
    topic)     cmd_topic "$@" ;;
    delete-topic) cmd_delete_topic "$@" ;;
    delete-group) cmd_delete_group "$@" ;;
    bootstrap) echo "127.0.0.1:$KAFKA_PORT" ;;
    tls-bootstrap) echo "127.0.0.1:$KAFKA_TLS_PORT" ;;
    tls-ca)    cmd_tls_ca ;;
    gssapi-bootstrap) echo "127.0.0.1:$KAFKA_GSSAPI_PORT" ;;
    kerberos)  cmd_kerberos ;;
    produce)   cmd_produce "$@" ;;
    consume)   cmd_consume "$@" ;;
    run)       (( $# )) || die "usage: $0 run CLASS [ARGS...]"; run_class "$@" ;;
    env)       cmd_env ;;
    -h|--help|help) usage ;;
    "") usage; exit 2 ;;
    *) log "unknown command: $cmd"; usage; exit 2 ;;
  esac
}

main "$@"
