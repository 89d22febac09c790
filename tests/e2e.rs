//! End-to-end tests of `redlight run` against a real Kafka broker (no mocks).
//!
//! One broker serves the whole binary: `REDLIGHT_TEST_KAFKA` (a bootstrap address) when
//! set, else the one `scripts/kafka.sh start` runs (idempotent; `KAFKA_PORT`, default
//! 19092). The tests run one at a time (a global mutex: `broker_outage_recovers` stops the
//! broker). Each has its own topics, consumer group, dead-letter topic, data directory and
//! HTTP port, in a configuration file written from `config/redlight.toml`.
//!
//! The reference is `redlight replay` (`redlight::cli::replay`, in-process) over the same
//! messages, with `until` = now: the daemon must raise the same alerts, field for field.
//! The workload (`e2e/workload.rs`) keeps every event time between 2026-01-05 and
//! 2026-06-30, so every deadline and purge lies months before now and nothing falls due
//! while a test runs; see there for how out-of-order deliveries are kept comparable.
//!
//! Run: `cargo test --test e2e -- --nocapture --test-threads=1`.

#[path = "common/calendar.rs"]
mod calendar;
#[path = "e2e/harness.rs"]
mod harness;
#[path = "common/ports.rs"]
mod ports;
#[path = "e2e/workload.rs"]
mod workload;

use harness::{
    Broker, Daemon, Landed, Msg, Names, Producer, TestDir, Topics, add_partitions, alert_census,
    broker, create_topics, damage_gzip_batch, delete_records_before, end_offsets, free_port,
    kafka_sh, kafka_sh_says, multiset_diff, now_ms, poll_until, read_topic, replay, serial,
    set_config, set_librdkafka, set_topic_config, set_topic_configs, write_config,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use workload::{Gen, Line};

/// Once the daemon holds as many alerts as replay gives, how long no further alert may
/// come before its alerts are compared (so that extra or repeated ones show): well over
/// `kafka.idle_ms` (1 s), after which caught-up partitions follow the wall clock.
const QUIET: Duration = Duration::from_secs(3);

/// What a test starts from: the shared broker, a data directory, and the input topic of
/// `partitions` partitions with the dead-letter topic of one, all named after the test
/// (removed and deleted when the last two are dropped).
fn bed(test: &str, partitions: i32) -> (&'static Broker, TestDir, Names, Topics) {
    bed_with(test, partitions, true)
}

/// [`bed`] with no dead-letter topic.
fn bed_without_dead_letters(
    test: &str,
    partitions: i32,
) -> (&'static Broker, TestDir, Names, Topics) {
    bed_with(test, partitions, false)
}

fn bed_with(
    test: &str,
    partitions: i32,
    dead_letters: bool,
) -> (&'static Broker, TestDir, Names, Topics) {
    let b = broker();
    let names = Names::new(test);
    let mut topics = vec![(names.topic.as_str(), partitions)];
    if dead_letters {
        topics.push((names.dead_letter.as_str(), 1));
    }
    let topics = Topics::create(&b.bootstrap, &topics);
    (b, TestDir::new(test), names, topics)
}

fn lines_of(lines: &[Line]) -> Vec<&str> {
    lines.iter().map(|l| l.line.as_str()).collect()
}

fn msgs_of(lines: &[Line]) -> Vec<Msg> {
    lines.iter().map(|l| Msg::event(&l.key, &l.line)).collect()
}

fn secs(t: Instant) -> String {
    format!("{:.1}s", t.elapsed().as_secs_f64())
}

/// The alerts' JSON objects, with a check that the store's sequence numbers are unique.
fn values(alerts: &[(u64, Value)]) -> Vec<Value> {
    let seqs: HashSet<u64> = alerts.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs.len(),
        alerts.len(),
        "alert sequence numbers are unique"
    );
    alerts.iter().map(|(_, a)| a.clone()).collect()
}

/// The same multiset of alerts, every field compared (order may differ between partitions).
/// Waits until the daemon has applied every message up to `ends` of `topic` and its alerts
/// are quiet, and checks that they are replay's of `lines`, field for field (a workload
/// that raises over a hundred); returns how many.
fn assert_gives_replays_alerts(
    d: &mut Daemon,
    config: &std::path::Path,
    lines: &[Line],
    ends: &BTreeMap<i32, i64>,
    topic: &str,
    what: &str,
) -> usize {
    let r = replay(config, &lines_of(lines), now_ms());
    assert!(r.alerts.len() > 100, "the workload raises alerts");
    let alerts = d.wait_idle(ends, topic, r.alerts.len(), QUIET, Duration::from_secs(300));
    assert_same_alerts(d, &values(&alerts), &r.alerts, what);
    alerts.len()
}

fn assert_same_alerts(d: &Daemon, daemon: &[Value], reference: &[Value], what: &str) {
    assert_same_alerts_or(d, daemon, reference, what, "");
}

fn assert_same_alerts_or(
    d: &Daemon,
    daemon: &[Value],
    reference: &[Value],
    what: &str,
    hint: &str,
) {
    if let Some(diff) = multiset_diff(daemon, reference) {
        d.fail(&format!(
            "{what}: the daemon's alerts differ from replay's\n{diff}{hint}"
        ));
    }
}

/// The alerts without their `at`: where a partition's clock (its own events' time) and
/// replay's (every event's) differ, an alert raised by an event delivered late carries
/// the clock's time.
fn without_at(alerts: &[Value]) -> Vec<Value> {
    alerts
        .iter()
        .map(|a| {
            let mut a = a.clone();
            if let Some(o) = a.as_object_mut() {
                o.remove("at");
            }
            a
        })
        .collect()
}

/// Replay of `lines` as the reference (none rejected), then the daemon's alerts once it
/// holds as many, every offset up to `ends` is durable and no further alert comes.
fn replay_then_wait(
    d: &mut Daemon,
    config: &std::path::Path,
    lines: &[&str],
    ends: &BTreeMap<i32, i64>,
    topic: &str,
) -> (harness::Replay, Vec<(u64, Value)>) {
    let r = replay(config, lines, now_ms());
    assert_eq!(
        r.summary.rejected, 0,
        "replay rejected lines:\n{}",
        r.stderr
    );
    let alerts = d.wait_idle(ends, topic, r.alerts.len(), QUIET, Duration::from_secs(300));
    (r, alerts)
}

/// Where the daemon resumed a partition after a restart: `(partition, next offset)` from
/// every "partition restored" line of its log that has a stored offset.
fn restore_points(d: &Daemon) -> Vec<(i32, i64)> {
    let text = std::fs::read_to_string(&d.log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("partition restored"))
        .filter_map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.parse::<i64>().ok())
            };
            Some((field("partition=")? as i32, field("next_offset=")?))
        })
        .collect()
}

/// A hint for a failure of `kill_minus_nine_loses_nothing`: restarts that resumed a
/// partition at a message whose event time is earlier than the message before it (a
/// decision delivered after its red fired). The engine's clock is not part of the stored
/// state, so alerts raised by such a message right after a restart carry a different `at`
/// (and a stored violation a different time) than without the restart.
fn out_of_order_resumes(d: &Daemon, lines: &[Line], landed: &[Landed]) -> String {
    let time_of = |i: usize| -> String {
        serde_json::from_str::<Value>(&lines[i].line).map_or(String::new(), |v| {
            v["time"].as_str().unwrap_or("").to_string()
        })
    };
    let at: HashMap<(i32, i64), usize> = landed
        .iter()
        .enumerate()
        .map(|(i, l)| ((l.partition, l.offset), i))
        .collect();
    let mut found = Vec::new();
    for (p, next) in restore_points(d) {
        if let (Some(&cur), Some(&prev)) = (at.get(&(p, next)), at.get(&(p, next - 1)))
            && time_of(cur) < time_of(prev)
        {
            found.push(format!(
                "  partition {p} resumed at offset {next}: {} (after {})",
                lines[cur].line,
                time_of(prev)
            ));
        }
    }
    if found.is_empty() {
        String::new()
    } else {
        format!(
            "\nNOTE: a restart resumed a partition at a late-delivered event; the daemon does \
             not restore its engine clock, so that event's alerts (`at`) and violations differ \
             from an uninterrupted run (a known daemon issue):\n{}",
            found.join("\n")
        )
    }
}

/// a. A few thousand cases of every domain as a backlog, produced with every compression
/// codec Kafka has: the daemon gives exactly the alerts `redlight replay --until now` gives.
#[test]
fn daemon_matches_replay() {
    let _serial = serial();
    let t0 = Instant::now();
    let (b, dir, names, _topics) = bed("a", 4);

    let mut workload = Gen::new(0x5EED_A11C, "A");
    workload.full_cases(3000);
    let lines = workload.finish();
    let t = Instant::now();
    // In five runs, each compressed otherwise: a producer, a topic or a broker may choose
    // any codec Kafka has, and a consumer built without one stalls at its first batch
    // (zstd did until 2026-12-05). Each run lands before the next starts: the order holds.
    let msgs = msgs_of(&lines);
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    let mut landed = Vec::new();
    for (codec, run) in codecs
        .iter()
        .zip(msgs.chunks(msgs.len().div_ceil(codecs.len())))
    {
        landed.extend(Producer::compressing(&b.bootstrap, codec).send_all(&names.topic, run));
    }
    let ends = end_offsets(&landed);
    eprintln!(
        "[a] produced {} messages of 3000 cases in {} to {ends:?}",
        lines.len(),
        secs(t)
    );

    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    let t = Instant::now();
    d.start();

    // The reference, while the daemon works. Nothing falls due between now and the end
    // of the test, so `until` = now is the same instant for both.
    let tr = Instant::now();
    let r = replay(&config, &lines_of(&lines), now_ms());
    eprintln!(
        "[a] replay: {:?} in {}; alerts by rule/level/status/reason:\n{}",
        r.summary,
        secs(tr),
        alert_census(&r.alerts)
    );
    assert_eq!(
        r.summary.rejected, 0,
        "replay rejected lines:\n{}",
        r.stderr
    );

    let alerts = d.wait_idle(
        &ends,
        &names.topic,
        r.alerts.len(),
        QUIET,
        Duration::from_secs(300),
    );
    eprintln!(
        "[a] daemon consumed the backlog and went idle in {}",
        secs(t)
    );
    let m = d.metrics().expect("/metrics");
    let consumed = m.sum("redlight_events_consumed_total") as usize;
    let unknown = m.sum("redlight_events_unknown_type_total") as usize;
    let rejected = m.sum("redlight_events_rejected_total") as usize;
    // Events of types no pack names (the workload's odd cases send some): ignored by
    // both, and counted apart from those consumed.
    let expected_unknown = r.summary.unknown as usize;
    assert!(expected_unknown > 0, "the workload sends unknown types");
    if consumed + unknown != lines.len() || unknown != expected_unknown || rejected != 0 {
        d.fail(&format!(
            "consumed {consumed} and of unknown types {unknown} (expected {} and \
             {expected_unknown}), rejected {rejected} (expected 0)",
            lines.len() - expected_unknown
        ));
    }
    // The workload's odd cases carry data the rules cannot use (an extension of "many"
    // workdays): applied, the rule skipped for them, and counted as replay counts them.
    let problems = m.sum("redlight_data_problems_total");
    if r.data_problems == 0 || problems != r.data_problems as f64 {
        d.fail(&format!(
            "redlight_data_problems_total {problems}, replay counted {} (expected the same, \
             and some)",
            r.data_problems
        ));
    }
    assert!(r.alerts.len() > 1000, "the workload raises many alerts");
    // The alerts below went through the store's journal and its checkpoints (the tests'
    // `store.checkpoint_cases` is 2,500 entries). Checkpoints run beside the batches, and a
    // batch that finds 5,000 entries waits for the one running: the journal stays under
    // that plus one batch (at most `kafka.batch_max`, 5,000 events, each a case and an
    // alert or two).
    let checkpoints = m.sum("redlight_store_checkpoint_seconds_count");
    let journal = m.sum("redlight_store_journal_entries");
    let journal_bytes = m.sum("redlight_store_journal_bytes");
    eprintln!(
        "[a] {checkpoints} store checkpoints; {journal} journal entries left, \
         {journal_bytes} bytes"
    );
    if (journal > 0.0) != (journal_bytes > 0.0) {
        d.fail(&format!(
            "redlight_store_journal_bytes {journal_bytes} for {journal} journal entries"
        ));
    }
    if checkpoints < 1.0 || journal >= 5000.0 + 3.0 * 5000.0 {
        d.fail(&format!(
            "{checkpoints} store checkpoints and {journal} journal entries after {} events \
             (a checkpoint is due at 2,500 entries)",
            lines.len()
        ));
    }
    let daemon = values(&alerts);
    assert_same_alerts(&d, &daemon, &r.alerts, "daemon_matches_replay");
    eprintln!("[a] {} alerts equal, field for field", daemon.len());

    d.stop_gracefully();
    eprintln!("[a] passed in {}", secs(t0));
}

/// a2. The same kind of history, fed to a daemon that started first and already follows the
/// wall clock (its partitions caught up on an empty topic and quiet for `kafka.idle_ms`): a
/// producer sending its past cases after redlight started, or its backlog after an outage.
/// Every event is months behind the daemon's clock, and is judged at its own time all the
/// same: the alerts are replay's (`at` aside: a resolution or violation is stamped with the
/// engine's clock, here the wall clock). Until 2026-12-06 a late event's passed deadlines
/// fired while it was applied: every case of the history that ended in time raised a red and
/// had it retracted at once (a third of the quick start's alerts were such pairs).
#[test]
fn history_fed_to_a_daemon_on_the_wall_clock_gives_replays_alerts() {
    let _serial = serial();
    let t0 = Instant::now();
    let (b, dir, names, _topics) = bed("h", 4);
    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    d.start();
    // Caught up on the empty topic; quiet for `idle_ms` (1 s), the wall clock drives every
    // partition.
    std::thread::sleep(Duration::from_secs(3));

    let mut workload = Gen::new(0x5EED_4157, "H");
    workload.full_cases(1000);
    let lines = workload.finish();
    let landed = Producer::new(&b.bootstrap).send_all(&names.topic, &msgs_of(&lines));
    let ends = end_offsets(&landed);
    eprintln!("[h] produced {} messages of 1000 cases", lines.len());
    let (r, alerts) = replay_then_wait(&mut d, &config, &lines_of(&lines), &ends, &names.topic);
    assert!(r.alerts.len() > 300, "the workload raises alerts");
    let daemon = without_at(&values(&alerts));
    assert_same_alerts(
        &d,
        &daemon,
        &without_at(&r.alerts),
        "history fed to a daemon on the wall clock",
    );
    let retracted = daemon.iter().filter(|a| a["reason"] == "retracted").count();
    eprintln!(
        "[h] {} alerts equal to replay's but for `at` ({retracted} retracted, as in replay)",
        daemon.len()
    );
    d.stop_gracefully();
    eprintln!("[h] passed in {}", secs(t0));
}

/// A broker as data centres run them: the daemon reads over TLS with a SASL (SCRAM)
/// login, its password from the environment, from the SASL_SSL listener
/// `scripts/kafka.sh` starts beside the plaintext one, and gives exactly the alerts replay
/// gives. (Until 2026-12-05 the build had no OpenSSL
/// and refused `security.protocol = "SASL_SSL"` at start.)
#[test]
fn the_daemon_reads_a_broker_over_tls_with_a_sasl_login() {
    let _serial = serial();
    let t0 = Instant::now();
    let b = broker();
    let (tls_bootstrap, ca) = (
        kafka_sh_says(b.port, "tls-bootstrap"),
        kafka_sh_says(b.port, "tls-ca"),
    );
    let env_or = |key: &str, default: &str| std::env::var(key).unwrap_or(default.to_string());
    let user = env_or("KAFKA_SASL_USER", "redlight");
    let password = env_or("KAFKA_SASL_PASSWORD", "redlight-secret");
    let (_, dir, names, _topics) = bed("g", 2);
    let mut workload = Gen::new(0x5EED_7150, "G");
    workload.full_cases(300);
    let lines = workload.finish();
    let landed = Producer::new(&b.bootstrap).send_all(&names.topic, &msgs_of(&lines));
    let ends = end_offsets(&landed);

    let port = free_port();
    let config = write_config(&dir.path, &tls_bootstrap, &names, port);
    for (key, value) in [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanism", "SCRAM-SHA-256"),
        ("sasl.username", user.as_str()),
        ("ssl.ca.location", ca.as_str()),
    ] {
        set_librdkafka(&config, key, value);
    }
    // The password from the environment, as a deployment takes it from a secret: a table
    // merged into the file's `[kafka.librdkafka]`.
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    d.env.push((
        "REDLIGHT_KAFKA__LIBRDKAFKA".into(),
        format!("{{\"sasl.password\"=\"{password}\"}}"),
    ));
    d.start();
    let n = assert_gives_replays_alerts(
        &mut d,
        &config,
        &lines,
        &ends,
        &names.topic,
        "over SASL_SSL",
    );
    d.stop_gracefully();
    eprintln!(
        "[g] {n} alerts over SASL_SSL ({tls_bootstrap}) in {}",
        secs(t0)
    );
}

/// A broker that asks for Kerberos, as the Hadoop distributions' Kafka does: the daemon
/// logs in with a keytab (librdkafka runs `kinit` with it) to the SASL_PLAINTEXT/GSSAPI
/// listener `scripts/kafka.sh` starts with a KDC of its own, gives exactly the alerts replay
/// gives, and sends a bad message to the dead-letter topic through the same login. It
/// starts while the KDC is down: unready, saying why, until it logs in by itself once the
/// KDC is back (librdkafka runs `kinit` again every `sasl.kerberos.min.time.before.relogin`:
/// 60 s by default, 5 s here). (Until 2026-12-05 the build had no Cyrus SASL and refused
/// `sasl.mechanism = "GSSAPI"`.)
#[test]
fn the_daemon_reads_a_kerberos_broker_with_a_keytab() {
    let _serial = serial();
    let t0 = Instant::now();
    let b = broker();
    // It fails, saying so, when the broker has no GSSAPI listener (no MIT Kerberos KDC).
    let said = kafka_sh_says(b.port, "kerberos");
    let field = |name: &str| {
        said.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name}= in scripts/kafka.sh kerberos: {said}"))
            .to_string()
    };
    let (krb5_conf, keytab, principal) =
        (field("KRB5_CONFIG"), field("keytab"), field("principal"));
    let bootstrap = kafka_sh_says(b.port, "gssapi-bootstrap");
    let (_, dir, names, _topics) = bed("m", 2);
    let mut workload = Gen::new(0x5EED_6551, "M");
    workload.full_cases(300);
    let lines = workload.finish();
    let mut msgs = msgs_of(&lines);
    msgs.push(Msg::event("M-bad-1", "not an event"));
    let landed = Producer::new(&b.bootstrap).send_all(&names.topic, &msgs);
    let ends = end_offsets(&landed);

    let port = free_port();
    let config = write_config(&dir.path, &bootstrap, &names, port);
    for (key, value) in [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "GSSAPI"),
        ("sasl.kerberos.service.name", "kafka"),
        ("sasl.kerberos.keytab", keytab.as_str()),
        ("sasl.kerberos.principal", principal.as_str()),
        ("sasl.kerberos.min.time.before.relogin", "5000"),
    ] {
        set_librdkafka(&config, key, value);
    }
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    // The realm's KDC, and a ticket cache of the test's own (kinit writes it).
    d.env.push(("KRB5_CONFIG".into(), krb5_conf.clone()));
    d.env.push((
        "KRB5CCNAME".into(),
        format!("FILE:{}", dir.path.join("krb5cc").display()),
    ));
    // The KDC down (`scripts/kafka.sh start` starts it again): no ticket, no login.
    let kdc_pid = std::path::Path::new(&krb5_conf).with_file_name("kdc.pid");
    let pid = std::fs::read_to_string(&kdc_pid).expect("the KDC's pid file");
    let killed = std::process::Command::new("kill")
        .arg(pid.trim())
        .status()
        .expect("kill");
    assert!(killed.success(), "stopping the KDC (pid {})", pid.trim());
    d.start();
    let why = poll_until(
        Duration::from_secs(60),
        "the reason it cannot log in",
        || {
            d.log_lines("No Kerberos credentials available")
                .into_iter()
                .next()
        },
    );
    assert!(why.contains("GSSAPI"), "{why}");
    // /readyz says why too: the Kafka client's last error (kept just after it is logged).
    let names_it = |status: u16, body: &str| {
        status == 503
            && body.contains("no Kafka partitions assigned (the Kafka client's last error")
            && body.contains("No Kerberos credentials available")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut status, mut body) = (0, String::new());
    while Instant::now() < deadline {
        (status, body) = d.get("/readyz").unwrap_or_default();
        if names_it(status, &body) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        names_it(status, &body),
        "/readyz names the login's failure: {status} {body}"
    );
    let down = Instant::now();
    let out = kafka_sh(Some(b.port), &["start"]);
    assert!(out.status.success(), "scripts/kafka.sh start: {out:?}");
    poll_until(
        Duration::from_secs(60),
        "ready once the KDC is back",
        || d.get("/readyz").filter(|(s, _)| *s == 200),
    );
    eprintln!("[m] logged in {} after the KDC came back", secs(down));
    let n =
        assert_gives_replays_alerts(&mut d, &config, &lines, &ends, &names.topic, "over GSSAPI");
    let dead = read_topic(&b.bootstrap, &names.dead_letter, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1, "the bad message's dead letter");
    assert_eq!(dead[0].key.as_deref(), Some(&b"M-bad-1"[..]));
    assert_eq!(dead[0].header("redlight-reason-code"), Some("not_json"));
    assert!(
        dir.path.join("krb5cc").exists(),
        "librdkafka logged in with the keytab (kinit wrote the test's ticket cache)"
    );
    d.stop_gracefully();
    eprintln!(
        "[m] {n} alerts over SASL_PLAINTEXT/GSSAPI ({bootstrap}) in {}",
        secs(t0)
    );
}

/// A store lost (a new data directory, or another instance's) while the consumer group
/// has read its partitions: the daemon does not read on from the group's offsets, which
/// would leave every case opened before unwatched without a word. It stops, naming the
/// partitions, the group and the remedy, having applied nothing. After the group's offsets
/// are reset to the start with the command it names, it rebuilds every case from the
/// topic, and its alerts are replay's.
#[test]
fn a_lost_store_is_refused_not_read_on_from_the_groups_offsets() {
    let _serial = serial();
    let (b, dir, names, _topics) = bed("lost", 2);
    let mut workload = Gen::new(0x5EED_10A7, "L");
    workload.full_cases(400);
    let lines = workload.finish();
    let ends = end_offsets(&Producer::new(&b.bootstrap).send_all(&names.topic, &msgs_of(&lines)));
    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    d.start();
    let first =
        assert_gives_replays_alerts(&mut d, &config, &lines, &ends, &names.topic, "first run");
    d.stop_gracefully();

    std::fs::remove_dir_all(dir.path.join("data")).expect("losing the store");
    d.start();
    let Some(status) = d.wait_exit(Duration::from_secs(120)) else {
        d.fail("the daemon read on without its store");
    };
    assert!(!status.success(), "{status}");
    let said = d.log_tail();
    for want in [
        format!(
            "holds nothing of {} partition 0 (read to offset {}",
            names.topic, ends[&0]
        ),
        format!("{} partition 1 (read to offset {}", names.topic, ends[&1]),
        format!("consumer group `{}`", names.group),
        format!(
            "--group {} --topic {} --reset-offsets --to-earliest",
            names.group, names.topic
        ),
    ] {
        assert!(said.contains(&want), "{want:?} in:\n{said}");
    }
    // Nothing was applied: the new store holds no alert.
    let store = redlight::store::Store::open(&dir.path.join("data")).expect("the new store");
    assert_eq!(store.alert_count().expect("alerts"), 0, "nothing applied");
    drop(store);

    let out = kafka_sh(
        Some(b.port),
        &[
            "run",
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            "--bootstrap-server",
            &b.bootstrap,
            "--group",
            &names.group,
            "--topic",
            &names.topic,
            "--reset-offsets",
            "--to-earliest",
            "--execute",
        ],
    );
    assert!(
        out.status.success(),
        "resetting the group's offsets: {out:?}"
    );
    d.start();
    let rebuilt =
        assert_gives_replays_alerts(&mut d, &config, &lines, &ends, &names.topic, "rebuilt");
    assert_eq!(rebuilt, first);
    d.stop_gracefully();
}

/// Partitions added to the input topic while the daemon runs (`kafka-topics.sh --alter
/// --partitions`): the producers' partitioner then sends many case ids to a new partition.
/// Each such case follows its first event there, with its clocks, and the daemon gives
/// exactly replay's alerts. Before the cases followed, the old partition ran a moved
/// case's clocks to red for want of the stop that went to the new one, and the new
/// partition opened a case of its own whose stop was a violation without its start.
///
/// The daemon does not follow the wall clock between the two halves (`kafka.idle_ms` of an
/// hour): the first half's cases stay at their events' time, as replay has them when the
/// second half comes, which comes as a live stream (see below). It is restarted with the
/// usual second before the comparison (the moved cases restored from their new
/// partitions).
#[test]
fn cases_follow_their_events_to_partitions_added_to_the_topic() {
    let _serial = serial();
    let t0 = Instant::now();
    let (b, dir, names, _topics) = bed("grow", 2);
    let mut workload = Gen::new(0x5EED_6A0E, "G");
    workload.full_cases(400);
    let lines = workload.finish();
    let (before, after) = lines.split_at(lines.len() / 2);
    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    set_config(&config, &["kafka"], "idle_ms", 3_600_000.into());
    // New partitions are seen at the next metadata refresh (30 s by default).
    set_librdkafka(&config, "topic.metadata.refresh.interval.ms", "1000");
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    d.start();
    let first = end_offsets(&Producer::new(&b.bootstrap).send_all(&names.topic, &msgs_of(before)));
    let (wait, every) = (Duration::from_secs(120), Duration::from_millis(100));
    d.wait_durable(&first, &names.topic, wait, every);

    add_partitions(&b.bootstrap, &names.topic, 4);
    poll_until(
        Duration::from_secs(60),
        "the daemon holds the new partitions",
        || {
            let restored = d.log_lines("partition restored");
            [2, 3]
                .iter()
                .all(|p| {
                    restored
                        .iter()
                        .any(|l| l.contains(&format!(" partition={p} ")))
                })
                .then_some(())
        },
    );
    // A new producer: the first one's metadata has two partitions until it refreshes.
    let (landed, moved) = send_as_live(&mut d, &names.topic, before, after, |at| at.partition >= 2);
    let mut ends = first.clone();
    for (p, end) in end_offsets(&landed) {
        ends.insert(p, end);
    }
    assert!(
        moved.len() > 20,
        "the new partitions take cases of the first half: {}",
        moved.len()
    );
    d.wait_durable(&ends, &names.topic, wait, every);
    let n = assert_moved_then_replays(&mut d, &config, &lines, &ends, &names.topic, moved.len());
    eprintln!(
        "[grow] {} cases moved to new partitions; {n} alerts equal to replay's; passed in {}",
        moved.len(),
        secs(t0)
    );
}

/// The end of a test of cases following their events: `moved` cases counted as moved;
/// then, restarted with the wall clock driving the partitions (`idle_ms` 1 s), the alerts
/// are replay's of `lines`. Returns how many.
fn assert_moved_then_replays(
    d: &mut Daemon,
    config: &std::path::Path,
    lines: &[Line],
    ends: &BTreeMap<i32, i64>,
    topic: &str,
    moved: usize,
) -> usize {
    let counted = d
        .metrics()
        .map_or(0.0, |m| m.sum("redlight_cases_moved_total"));
    if counted as usize != moved {
        d.fail(&format!(
            "{counted} cases moved, where {moved} cases have events where they were not"
        ));
    }
    d.stop_gracefully();
    set_config(config, &["kafka"], "idle_ms", 1000.into());
    d.start();
    let n = assert_gives_replays_alerts(d, config, lines, ends, topic, "cases that moved");
    d.stop_gracefully();
    n
}

/// Sends `after` to `topic` one message at a time, as a live stream comes, from a new
/// producer: each case of `before` whose event lands where `elsewhere` says its case is
/// not is applied there (and moved) before the messages after it are sent. Sent as a
/// burst, the partitions holding the cases would run on through the weeks of events after
/// it while the others catch up, and fire that case's clocks before its stop is read (red,
/// then retracted: Kafka orders a partition, not a topic). Returns where the messages
/// landed and the cases that moved.
fn send_as_live<'a>(
    d: &mut Daemon,
    topic: &str,
    before: &'a [Line],
    after: &'a [Line],
    elsewhere: impl Fn(&Landed) -> bool,
) -> (Vec<Landed>, HashSet<&'a str>) {
    let producer = Producer::new(&broker().bootstrap);
    let (wait, every) = (Duration::from_secs(120), Duration::from_millis(100));
    let opened: HashSet<&str> = before.iter().map(|l| l.key.as_str()).collect();
    let mut moved: HashSet<&str> = HashSet::new();
    let mut landed = Vec::with_capacity(after.len());
    for l in after {
        let at = producer.send_all(topic, &msgs_of(std::slice::from_ref(l)));
        landed.extend(at);
        let away = landed.last().is_some_and(&elsewhere);
        if away && opened.contains(l.key.as_str()) && moved.insert(l.key.as_str()) {
            d.wait_durable(&end_offsets(&landed), topic, wait, every);
        }
    }
    (landed, moved)
}

/// Two systems publish a case's events to topics of their own (here the first half of
/// every case's life to one, the rest to the other): the subject is the case id whatever
/// the topic, so each case follows its events to the second topic and the alerts are
/// replay's of all the events together. Before, each topic's partition kept a case of its
/// own: the first ran its clocks to red, the second's stops were violations.
#[test]
fn a_case_whose_events_come_on_two_topics_is_one_case() {
    let _serial = serial();
    let t0 = Instant::now();
    let b = broker();
    let dir = TestDir::new("two-topics");
    let names = Names::new("two-topics");
    let second = format!("{}.decisions", names.topic);
    let _topics = Topics::create(
        &b.bootstrap,
        &[(&names.topic, 2), (&second, 2), (&names.dead_letter, 1)],
    );
    let mut workload = Gen::new(0x7A0_70B1C, "T");
    workload.full_cases(300);
    let lines = workload.finish();
    let (before, after) = lines.split_at(lines.len() / 2);
    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let topics = toml::Value::Array(vec![names.topic.clone().into(), second.clone().into()]);
    set_config(&config, &["kafka"], "topics", topics);
    set_config(&config, &["kafka"], "idle_ms", 3_600_000.into());
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    d.start();
    let first = end_offsets(&Producer::new(&b.bootstrap).send_all(&names.topic, &msgs_of(before)));
    let (wait, every) = (Duration::from_secs(120), Duration::from_millis(100));
    d.wait_durable(&first, &names.topic, wait, every);
    let (landed, moved) = send_as_live(&mut d, &second, before, after, |_| true);
    assert!(
        moved.len() > 50,
        "cases of the first half go on: {}",
        moved.len()
    );
    let ends = end_offsets(&landed);
    d.wait_durable(&ends, &second, wait, every);
    let said = d.log_lines("case moved to the partition");
    if !said
        .first()
        .is_some_and(|l| l.contains(&format!("from_topic={}", names.topic)))
    {
        d.fail(&format!(
            "the first move's line names the topic it came from: {said:?}"
        ));
    }
    let n = assert_moved_then_replays(&mut d, &config, &lines, &ends, &second, moved.len());
    eprintln!(
        "[two-topics] {} cases moved to the second topic; {n} alerts equal to replay's; passed in {}",
        moved.len(),
        secs(t0)
    );
}

/// The input topic deleted and created again while the daemon was stopped (as when a
/// topic is rebuilt, or moved to another cluster): its offsets begin again at 0, below the
/// ones the store holds. The new log's events are applied (before, librdkafka found the
/// stored offset out of range and started at the log's beginning, and the daemon took
/// every message below the stored offset for one it had applied: all of them dropped
/// without a word). The daemon says so, counts it, and gives replay's alerts for the old
/// events and the new.
#[test]
fn a_topic_created_again_is_read_from_its_start() {
    let _serial = serial();
    let t0 = Instant::now();
    let (b, dir, names, _topics) = bed("again", 2);
    let mut old = Gen::new(0x5EED_A6A1, "A1");
    old.full_cases(300);
    let old = old.finish();
    let first = end_offsets(&Producer::new(&b.bootstrap).send_all(&names.topic, &msgs_of(&old)));
    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    // The first run does not follow the wall clock (`kafka.idle_ms` of an hour): its
    // partitions' clocks stay at their events' time, where replay has its clock when the
    // new log's events come; the second run follows it as usual.
    set_config(&config, &["kafka"], "idle_ms", 3_600_000.into());
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    d.start();
    d.wait_durable(
        &first,
        &names.topic,
        Duration::from_secs(120),
        Duration::from_millis(100),
    );
    d.stop_gracefully();
    set_config(&config, &["kafka"], "idle_ms", 1000.into());

    let out = kafka_sh(Some(b.port), &["delete-topic", &names.topic]);
    assert!(out.status.success(), "deleting the topic: {out:?}");
    create_topics(&b.bootstrap, &[(&names.topic, 2)]);
    // Fewer events than before: every offset of the new log is below the stored ones.
    let mut new = Gen::new(0x5EED_A6A2, "A2");
    new.full_cases(40);
    let new = new.finish();
    let ends = end_offsets(&Producer::new(&b.bootstrap).send_all(&names.topic, &msgs_of(&new)));
    assert!(
        ends.iter()
            .all(|(p, end)| first.get(p).is_some_and(|f| end < f)),
        "the new log is shorter: {ends:?} against {first:?}"
    );
    d.start();
    let all: Vec<Line> = old.iter().chain(&new).cloned().collect();
    let (r, alerts) = replay_then_wait(&mut d, &config, &lines_of(&all), &ends, &names.topic);
    // The new log's events are dated among the old ones: a resolution they bring is
    // stamped with the clock, the partition's here and every event's in replay.
    assert_same_alerts(
        &d,
        &without_at(&values(&alerts)),
        &without_at(&r.alerts),
        "log created again",
    );
    let new_cases = alerts
        .iter()
        .filter(|(_, a)| a["case"].as_str().is_some_and(|c| c.starts_with("A2-")))
        .count();
    assert!(
        new_cases > 50,
        "the new log's cases raise alerts: {new_cases}"
    );
    let said = d.log_lines("not the log redlight read");
    assert_eq!(said.len(), 2, "said for both partitions: {said:?}");
    let counted = d
        .metrics()
        .map_or(0.0, |m| m.sum("redlight_partition_logs_replaced_total"));
    assert_eq!(counted, 2.0);
    d.stop_gracefully();
    eprintln!("[again] passed in {}", secs(t0));
}

/// Events the broker deleted while the daemon was away (a retention shorter than the
/// outage; here deleted records): counted and logged with the partition when it comes
/// back, and the daemon goes on from where the log now begins. And the same while it runs
/// but has fallen behind (here stopped with SIGSTOP): the gap in the offsets is counted.
#[test]
fn events_the_broker_deleted_unread_are_counted() {
    let _serial = serial();
    let (b, dir, names, _topics) = bed("h", 1);
    let mut workload = Gen::new(0x5EED_1057, "H");
    workload.full_cases(60);
    let lines = workload.finish();
    let (first, rest) = lines.split_at(lines.len() / 2);
    let (later, last) = rest.split_at(rest.len() / 2);
    let producer = Producer::new(&b.bootstrap);
    let read = end_offsets(&producer.send_all(&names.topic, &msgs_of(first)));
    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let mut d = Daemon::new(config, dir.path.join("daemon.log"), port);
    d.start();
    d.wait_idle(&read, &names.topic, 0, QUIET, Duration::from_secs(120));
    d.stop_gracefully();

    // Away: more events come, and the broker deletes the first few of them.
    let ends = end_offsets(&producer.send_all(&names.topic, &msgs_of(later)));
    let lost = 7;
    let delete_before = |offset: i64| delete_records_before(&b.bootstrap, &names.topic, 0, offset);
    delete_before(read[&0] + lost);

    d.start();
    d.wait_idle(&ends, &names.topic, 0, QUIET, Duration::from_secs(120));
    let m = d.metrics().expect("/metrics");
    if m.sum("redlight_events_lost_total") != lost as f64 {
        d.fail(&format!(
            "redlight_events_lost_total {}, expected {lost}",
            m.sum("redlight_events_lost_total")
        ));
    }
    let logged = d.log_lines("events deleted by the broker before redlight read them");
    if logged.len() != 1 || !logged[0].contains(&format!("lost={lost}")) {
        d.fail(&format!("the log line for the lost events: {logged:?}"));
    }
    // Its dead-letter topic exists: nothing said of it (see the next test).
    if !d.log_lines("dead-letter topic does not exist").is_empty() {
        d.fail("a dead-letter topic that exists was said not to");
    }

    // Running but behind: stopped (after its fetch waiting at the broker has been answered,
    // empty), more events come and the first few are deleted; it goes on from the log's
    // new start, a gap in the offsets, and counts what the broker deleted.
    let behind = 5;
    let pid = d.pid().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, pid.as_str()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");
    std::thread::sleep(Duration::from_secs(2));
    let last_ends = end_offsets(&producer.send_all(&names.topic, &msgs_of(last)));
    delete_before(ends[&0] + behind);
    signal("-CONT");
    d.wait_idle(&last_ends, &names.topic, 0, QUIET, Duration::from_secs(120));
    let counted = poll_until(Duration::from_secs(30), "the gap counted", || {
        let n = d.metrics()?.sum("redlight_events_lost_total");
        (n > lost as f64).then_some(n)
    });
    if counted != (lost + behind) as f64 {
        d.fail(&format!(
            "redlight_events_lost_total {counted}, expected {}",
            lost + behind
        ));
    }
    // The line is written just after the count: wait for it too.
    let mut logged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        logged = d.log_lines("events deleted by the broker before redlight read them");
        if logged.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if logged.len() != 2 || !logged[1].contains(&format!("lost={behind}")) {
        d.fail(&format!("the log lines for the lost events: {logged:?}"));
    }
    d.stop_gracefully();
}

/// A dead-letter topic that does not exist is said at start: the first bad message would
/// otherwise hold its batch (a dead letter is never dropped) with only retries in the log.
#[test]
fn a_missing_dead_letter_topic_is_said_at_start() {
    let _serial = serial();
    let (b, dir, names, _topics) = bed_without_dead_letters("i", 1);
    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let mut d = Daemon::new(config, dir.path.join("daemon.log"), port);
    d.start();
    let line = poll_until(
        Duration::from_secs(60),
        "the dead-letter topic's line",
        || d.log_lines("dead-letter topic does not exist").pop(),
    );
    assert!(line.contains(&names.dead_letter), "{line}");
    d.assert_alive("after saying so");
    d.stop_gracefully();
}

/// An input topic that can lose events is named at start: compacted (the broker keeps only
/// each case's last event) or keeping events less than Kafka's default week. Either looks
/// fine until the daemon falls behind.
#[test]
fn an_input_topic_that_can_lose_events_is_named_at_start() {
    let _serial = serial();
    let (b, dir, names, _topics) = bed_without_dead_letters("compacted", 2);
    set_topic_configs(
        &b.bootstrap,
        &names.topic,
        &[("cleanup.policy", "compact"), ("retention.ms", "3600000")],
    );
    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let mut d = Daemon::new(config, dir.path.join("daemon.log"), port);
    d.start();
    let said = |needle: &str| {
        poll_until(Duration::from_secs(60), needle, || {
            d.log_lines(needle).pop()
        })
    };
    let compacted = said("cleanup.policy=compact:");
    let short = said("retention.ms=3600000 (1.0 hours)");
    for line in [&compacted, &short] {
        assert!(line.contains(&names.topic), "{line}");
        assert!(line.contains("WARN"), "{line}");
    }
    // Said once for the topic, not once per partition.
    assert_eq!(d.log_lines("cleanup.policy=compact:").len(), 1);
    d.assert_alive("after saying so");
    d.stop_gracefully();
}

/// A daemon started and ready on topics of its own (one partition and the dead-letter
/// topic), for tests of the process rather than of a stream. Dropped in this order: the
/// daemon, then its topics and directory; so hold it whole (a pattern with `..` drops the
/// rest at once: the topics deleted, the log gone).
struct Ready {
    d: Daemon,
    names: Names,
    port: u16,
    _topics: Topics,
    _dir: TestDir,
}

impl Ready {
    fn start(test: &str) -> Ready {
        let (b, dir, names, topics) = bed(test, 1);
        let port = free_port();
        let config = write_config(&dir.path, &b.bootstrap, &names, port);
        let mut d = Daemon::new(config, dir.path.join("daemon.log"), port);
        d.start();
        d.wait_ready(Duration::from_secs(60));
        Ready {
            d,
            names,
            port,
            _topics: topics,
            _dir: dir,
        }
    }
}

/// A SIGHUP (sent from habit, as to daemons that reload on it) does not stop the daemon:
/// its default action would end the process, and systemd does not restart a service ended
/// by SIGHUP. The daemon says it ignored it and goes on consuming.
#[test]
fn a_hangup_signal_is_said_and_the_daemon_goes_on() {
    let _serial = serial();
    let b = broker();
    let mut r = Ready::start("hangup");
    let (d, names) = (&mut r.d, &r.names);
    for _ in 0..2 {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &d.pid().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(sent.success(), "kill -HUP failed");
    }
    poll_until(Duration::from_secs(10), "the SIGHUP line", || {
        (d.log_lines("SIGHUP received and ignored").len() == 2).then_some(())
    });
    d.assert_alive("after two SIGHUPs");
    // Still consuming: a case sent after the hangups is applied.
    let mut workload = Gen::new(0x4A_46_55_50, "H");
    workload.full_cases(5);
    let lines = workload.finish();
    let ends = end_offsets(&Producer::new(&b.bootstrap).send_all(&names.topic, &msgs_of(&lines)));
    d.wait_durable(
        &ends,
        &names.topic,
        Duration::from_secs(60),
        Duration::from_millis(100),
    );
    d.stop_gracefully();
}

/// A client that sends half a request (a stalled proxy, a port scanner, a slowloris) holds
/// neither a connection for ever nor the daemon's shutdown. Before, axum's server set no
/// header timeout: such a connection stayed open for good, and SIGTERM waited on it until
/// systemd killed the process (`TimeoutStopSec`).
#[test]
fn half_a_request_holds_neither_a_connection_nor_the_shutdown() {
    use std::io::{Read, Write};
    let _serial = serial();
    let mut r = Ready::start("half-request");
    let (d, port) = (&mut r.d, r.port);
    let half = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: redlight\r\n")
            .expect("half a request");
        s
    };
    let mut stalled = half();
    stalled
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    // Meanwhile the daemon answers others.
    let answer = d.get("/healthz");
    assert_eq!(answer.map(|(status, _)| status), Some(200));
    // The daemon ends the stalled connection by itself (its header timeout, 10 s).
    let mut buf = [0u8; 1024];
    match stalled.read(&mut buf) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => d.fail(&format!(
            "the connection that sent half a request is still open after 60 s: {e}"
        )),
    }
    // And one that stalls during shutdown does not keep the process (stop_gracefully
    // fails unless it exits 0 within 10 s).
    let _stalled = half();
    d.stop_gracefully();
}

/// Hundreds of clients that connect and send nothing (a scan, a flood, a leak in a wall
/// screen's browser) do not take every file descriptor the daemon has: it serves 512
/// connections at once and leaves the rest in the kernel's listen queue, so its brokers',
/// webhooks' and store's descriptors stay available. Once the idle ones time out, a request
/// is answered.
#[test]
fn idle_connections_are_served_512_at_a_time() {
    let _serial = serial();
    let mut r = Ready::start("idle-connections");
    let (d, port) = (&mut r.d, r.port);
    let fds = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |e| e.count());
    let before = fds(d.pid());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut idle = Vec::new();
    while idle.len() < 700 {
        // 3 s: a connection refused for a moment (the queue full while the daemon accepts)
        // is tried again by the kernel after 1 s.
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            Ok(s) => idle.push(s),
            Err(_) => break, // the listen queue is full too
        }
    }
    assert!(idle.len() > 512, "only {} connections opened", idle.len());
    let held = fds(d.pid());
    if held > before + 512 {
        d.fail(&format!(
            "{} idle connections took {} file descriptors ({before} before)",
            idle.len(),
            held
        ));
    }
    assert!(
        !d.log_lines("as many connections open as served at once")
            .is_empty()
    );
    // The idle ones time out (10 s) and a request gets through.
    poll_until(Duration::from_secs(60), "/healthz answered", || {
        d.get("/healthz").filter(|(status, _)| *status == 200)
    });
    drop(idle);
    d.stop_gracefully();
}

/// j. Dead letters the topic refuses for good (larger than its `max.message.bytes`) do not
/// hold the input up: the events after them are applied, the other dead letters go out, and
/// the refused ones wait in the store, through a `kill -9`, until the topic takes them.
#[test]
fn dead_letters_the_topic_refuses_wait_in_the_store() {
    let _serial = serial();
    let t0 = Instant::now();
    let (b, dir, names, _topics) = bed("j", 1);
    set_topic_config(
        &b.bootstrap,
        &names.dead_letter,
        "max.message.bytes",
        "4000",
    );

    let mut workload = Gen::new(0x5EED_D1E7, "J");
    workload.full_cases(60);
    let lines = workload.finish();
    let good = msgs_of(&lines);
    // Not JSON, so each is refused: two small, two of 6,000 bytes the topic refuses, each
    // sent right after a small one (librdkafka may put them in one request).
    let bad = |key: &str, len: usize| Msg {
        key: Some(key.to_string()),
        payload: Some(vec![b'#'; len]),
        headers: vec![("origin".to_string(), key.to_string())],
    };
    let mut stream = good.clone();
    let bads = [
        (good.len() / 4, bad("J-small-1", 40)),
        (good.len() / 4 + 1, bad("J-big-1", 6000)),
        (good.len() / 2, bad("J-small-2", 40)),
        (good.len() / 2 + 1, bad("J-big-2", 6000)),
    ];
    // In order, so that each lands at its index in `stream`.
    for (at, m) in &bads {
        stream.insert(*at, m.clone());
    }
    let landed = Producer::new(&b.bootstrap).send_all(&names.topic, &stream);
    let ends = end_offsets(&landed);

    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let r = replay(&config, &lines_of(&lines), now_ms());
    let mut d = Daemon::new(config, dir.path.join("daemon.log"), port);
    d.start();
    // Every event applied, the ones after the refused dead letters too.
    let alerts = d.wait_idle(
        &ends,
        &names.topic,
        r.alerts.len(),
        QUIET,
        Duration::from_secs(120),
    );
    assert_same_alerts(
        &d,
        &values(&alerts),
        &r.alerts,
        "dead_letters_the_topic_refuses",
    );
    let pending = |d: &Daemon| {
        d.metrics()
            .map(|m| m.sum("redlight_dead_letters_pending") as usize)
    };
    poll_until(Duration::from_secs(60), "two dead letters pending", || {
        (pending(&d) == Some(2)).then_some(())
    });
    // Once the small ones are out, each round's line names the first big one refused:
    // where it came from, its size and reason.
    let big_1 = landed[bads[1].0].offset;
    let first = format!("first={}/0@{big_1} (6000 bytes, not_json)", names.topic);
    let line = poll_until(Duration::from_secs(30), "the refusal's log line", || {
        d.log_lines("the brokers refuse dead letters")
            .into_iter()
            .find(|l| l.contains(&first))
    });
    assert!(line.contains(&names.dead_letter), "{line}");
    let sent = read_topic(&b.bootstrap, &names.dead_letter, 2, Duration::from_secs(30));
    let keys = |records: &[harness::Record]| -> Vec<String> {
        let mut k: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned())
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&sent),
        ["J-small-1", "J-small-2"],
        "the small dead letters went out"
    );
    // The API lists the two waiting: where each came from, why, and the brokers' refusal.
    let big = [landed[bads[1].0].offset, landed[bads[3].0].offset];
    let waiting = |rows: &[Value], tried: bool| {
        let got: Vec<(i64, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r["offset"].as_i64().unwrap_or(-1),
                    r["key"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(got, [(big[0], "J-big-1"), (big[1], "J-big-2")], "{rows:?}");
        for r in rows {
            assert_eq!(r["topic"], names.topic.as_str(), "{r}");
            assert_eq!(r["code"], "not_json", "{r}");
            assert_eq!(r["bytes"], 6000, "{r}");
            assert!(
                r["payload_excerpt"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("####")),
                "{r}"
            );
            if tried {
                assert!(r["attempts"].as_u64().is_some_and(|n| n >= 1), "{r}");
                assert!(
                    r["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("too large")),
                    "{r}"
                );
            }
        }
    };
    let (code, body) = d
        .get("/api/v1/input/dead-letters")
        .unwrap_or_else(|| d.fail("GET /api/v1/input/dead-letters"));
    let listing: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| d.fail(&format!("{e}: {body}")));
    assert_eq!(code, 200, "{body}");
    assert_eq!(listing["pending"], 2, "{body}");
    assert_eq!(listing["more"], false, "{body}");
    assert_eq!(
        listing["dead_letter_topic"],
        names.dead_letter.as_str(),
        "{body}"
    );
    waiting(
        listing["dead_letters"].as_array().map_or(&[][..], |v| v),
        true,
    );

    // Killed, the store is read directly: a page of one, then the next.
    d.kill9();
    let dead_letters = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
            .args(["dead-letters", "--config"])
            .arg(&d.config)
            .args(args)
            .output()
            .expect("redlight dead-letters");
        assert!(
            out.status.success(),
            "redlight dead-letters {args:?}: {out:?}"
        );
        let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        (rows, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (first, said) = dead_letters(&["--limit", "1"]);
    let seq = first.first().and_then(|r| r["seq"].as_u64()).unwrap_or(0);
    assert!(
        first.len() == 1
            && said.contains("1 listed, 2 waiting")
            && said.contains(&format!("--after {seq}")),
        "{first:?} {said}"
    );
    let (second, said) = dead_letters(&["--after", &seq.to_string()]);
    assert!(second.len() == 1 && said.is_empty(), "{second:?} {said}");
    waiting(&[first[0].clone(), second[0].clone()], false);

    // Dropped by hand, from the store: given back whole, and no longer offered. A number
    // the store does not hold is an error naming it.
    let config = d.config.clone();
    let drop_letters = |seqs: &[u64]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_redlight"));
        cmd.args(["dead-letters", "--config"]).arg(&config);
        for s in seqs {
            cmd.args(["--drop", &s.to_string()]);
        }
        let out = cmd.output().expect("redlight dead-letters --drop");
        let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        (
            out.status.success(),
            rows,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let whole = |row: &Value, key: &str| {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        assert_eq!(row["key"], key, "{row}");
        assert_eq!(row["code"], "not_json", "{row}");
        assert_eq!(
            row["payload_base64"].as_str(),
            Some(b64(&[b'#'; 6000]).as_str()),
            "the payload whole: {row}"
        );
        assert_eq!(
            row["headers"],
            serde_json::json!([["origin", b64(key.as_bytes())]]),
            "{row}"
        );
    };
    let (ok, rows, said) = drop_letters(&[seq]);
    assert!(
        ok && rows.len() == 1 && said.contains("1 dropped"),
        "{rows:?} {said}"
    );
    whole(&rows[0], "J-big-1");
    let (ok, rows, said) = drop_letters(&[seq]);
    assert!(
        !ok && rows.is_empty() && said.contains(&format!("no dead letter numbered {seq}")),
        "dropped twice: {rows:?} {said}"
    );
    let (rest, _) = dead_letters(&[]);
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["key"], "J-big-2", "{rest:?}");

    // Started again, the refused one left is still there; one more refused joins it, and
    // is dropped through the running daemon's API.
    d.start();
    d.wait_ready(Duration::from_secs(60));
    poll_until(
        Duration::from_secs(60),
        "one dead letter pending after kill -9",
        || (pending(&d) == Some(1)).then_some(()),
    );
    let said = d.log_lines("dead letters kept in the store from before the start");
    assert!(
        said.len() == 1 && said[0].contains("dead_letters=1"),
        "said at start: {said:?}"
    );
    Producer::new(&b.bootstrap).send_all(&names.topic, &[bad("J-big-3", 6000)]);
    poll_until(
        Duration::from_secs(60),
        "the third refused one pending",
        || (pending(&d) == Some(2)).then_some(()),
    );
    let (_, body) = d
        .get("/api/v1/input/dead-letters")
        .unwrap_or_else(|| d.fail("GET /api/v1/input/dead-letters"));
    let listing: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| d.fail(&format!("{e}: {body}")));
    let third = listing["dead_letters"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["key"] == "J-big-3"))
        .and_then(|r| r["seq"].as_u64())
        .unwrap_or_else(|| d.fail(&format!("J-big-3 not listed: {body}")));
    let (ok, rows, said) = drop_letters(&[third]);
    assert!(
        ok && rows.len() == 1 && said.contains("1 dropped"),
        "{rows:?} {said}"
    );
    whole(&rows[0], "J-big-3");
    poll_until(
        Duration::from_secs(30),
        "one dead letter pending after the drop",
        || (pending(&d) == Some(1)).then_some(()),
    );
    let said = d.log_lines("a dead letter dropped by hand");
    assert!(
        said.len() == 1 && said[0].contains(&format!("seq={third}")),
        "the daemon logs the drop: {said:?}"
    );
    d.assert_alive("after a drop");
    set_topic_config(
        &b.bootstrap,
        &names.dead_letter,
        "max.message.bytes",
        "1048588",
    );
    poll_until(Duration::from_secs(120), "no dead letter pending", || {
        (pending(&d) == Some(0)).then_some(())
    });
    let empty: Value = d
        .get("/api/v1/input/dead-letters")
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or_default();
    assert_eq!(empty["pending"], 0, "{empty}");
    assert_eq!(empty["dead_letters"], Value::Array(Vec::new()), "{empty}");
    let all = read_topic(&b.bootstrap, &names.dead_letter, 3, Duration::from_secs(30));
    assert_eq!(
        keys(&all),
        ["J-big-2", "J-small-1", "J-small-2"],
        "each dead letter once, the dropped ones never"
    );
    for (at, m) in &bads {
        let key = m.key.as_deref().unwrap_or_default();
        if key == "J-big-1" {
            continue; // dropped by hand
        }
        let r = all
            .iter()
            .find(|r| r.key.as_deref() == Some(key.as_bytes()))
            .unwrap_or_else(|| d.fail(&format!("{key} missing")));
        let source = landed[*at];
        assert_eq!(r.payload, m.payload, "{key}: the payload whole");
        assert_eq!(r.header("origin"), Some(key), "{key}: its own header");
        assert_eq!(r.header("redlight-reason-code"), Some("not_json"), "{key}");
        assert_eq!(
            r.header("redlight-source-offset"),
            Some(source.offset.to_string().as_str()),
            "{key}: where it came from"
        );
    }
    d.assert_alive("at the end");
    d.stop_gracefully();
    eprintln!("[j] passed in {}", secs(t0));
}

/// l. A batch the broker holds that cannot be decompressed (damaged on its disk): librdkafka
/// cannot read past it, so its partition stops there, said once a minute (not at every
/// fetch) and counted in `redlight_partitions_unreadable`, while the other partition flows.
/// Once the damaged records are deleted, the daemon goes on, counts them as lost, and its
/// alerts are replay's of every event but those.
#[test]
fn a_damaged_batch_on_the_broker_stops_its_partition_until_deleted() {
    let _serial = serial();
    let t0 = Instant::now();
    let (b, dir, names, _topics) = bed("l", 2);
    // One stream in time order (each partition's clock is then replay's), its middle third
    // sent in gzip batches.
    let mut workload = Gen::new(0x5EED_0BAD, "L");
    workload.full_cases(120);
    let lines = workload.finish();
    let third = lines.len() / 3;
    let parts = [
        &lines[..third],
        &lines[third..2 * third],
        &lines[2 * third..],
    ];
    let mut landed = Producer::new(&b.bootstrap).send_all(&names.topic, &msgs_of(parts[0]));
    landed.extend(
        Producer::compressing(&b.bootstrap, "gzip").send_all(&names.topic, &msgs_of(parts[1])),
    );
    landed.extend(Producer::new(&b.bootstrap).send_all(&names.topic, &msgs_of(parts[2])));
    let ends = end_offsets(&landed);
    let Some((base, last)) = damage_gzip_batch(b.port, &names.topic, 0) else {
        eprintln!("[l] skipped: the broker's files are not on this machine");
        return;
    };
    let kept: Vec<&str> = lines
        .iter()
        .zip(&landed)
        .filter(|(_, l)| !(l.partition == 0 && (base..=last).contains(&l.offset)))
        .map(|(line, _)| line.line.as_str())
        .collect();
    let lost = lines.len() - kept.len();
    assert_eq!(
        lost as i64,
        last - base + 1,
        "the damaged batch holds events"
    );

    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let r = replay(&config, &kept, now_ms());
    let mut d = Daemon::new(config, dir.path.join("daemon.log"), port);
    d.start();
    // Partition 1 reads to its end, partition 0 stops at the damaged batch.
    poll_until(
        Duration::from_secs(120),
        "partition 0 stopped, 1 read",
        || {
            let m = d.metrics()?;
            let durable = m.durable_offsets(&names.topic);
            (m.sum("redlight_partitions_unreadable") == 1.0
                && durable.get(&0) == Some(&base)
                && durable.get(&1) == ends.get(&1))
            .then_some(())
        },
    );
    // librdkafka meets the batch again at every fetch (twice a second); it is said once.
    std::thread::sleep(Duration::from_secs(4));
    let said = d.log_lines("cannot be decompressed");
    assert!(
        said.len() == 1
            && said[0].contains("ERROR")
            && said[0].contains(&format!("topic={} partition=0 offset={base}", names.topic)),
        "said once, with the partition and offset: {said:?}"
    );
    d.assert_alive("while a partition is stopped");

    delete_records_before(&b.bootstrap, &names.topic, 0, last + 1);
    let alerts = d.wait_idle(
        &ends,
        &names.topic,
        r.alerts.len(),
        QUIET,
        Duration::from_secs(120),
    );
    assert_same_alerts(&d, &values(&alerts), &r.alerts, "a_damaged_batch");
    let m = d.metrics().unwrap_or_else(|| d.fail("/metrics"));
    assert_eq!(m.sum("redlight_partitions_unreadable"), 0.0, "moved on");
    assert_eq!(
        m.sum("redlight_events_lost_total"),
        lost as f64,
        "the deleted counted"
    );
    d.stop_gracefully();
    eprintln!(
        "[l] passed in {} ({lost} events in the damaged batch)",
        secs(t0)
    );
}

/// k. Inputs given as a pattern that also matches the dead-letter topic: the events are
/// applied as with a name, and the dead letters read back from that topic are skipped,
/// counted and said once, not copied to it again (a loop for ever).
#[test]
fn a_pattern_that_matches_the_dead_letter_topic_does_not_loop() {
    let _serial = serial();
    let (b, dir, names, _topics) = bed("k", 1);
    let base = names.topic.trim_end_matches(".events");
    let mut workload = Gen::new(0x5EED_600D, "K");
    workload.full_cases(30);
    let lines = workload.finish();
    let mut stream = msgs_of(&lines);
    let n = stream.len();
    for (at, key) in [(n / 3, "K-bad-1"), (2 * n / 3, "K-bad-2")] {
        stream.insert(
            at,
            Msg {
                key: Some(key.to_string()),
                payload: Some(b"not an event".to_vec()),
                headers: Vec::new(),
            },
        );
    }
    let ends = end_offsets(&Producer::new(&b.bootstrap).send_all(&names.topic, &stream));
    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let pattern = format!("^{base}\\..*");
    set_config(
        &config,
        &["kafka"],
        "topics",
        toml::Value::Array(vec![pattern.as_str().into()]),
    );
    let r = replay(&config, &lines_of(&lines), now_ms());
    let mut d = Daemon::new(config, dir.path.join("daemon.log"), port);
    d.start();
    let alerts = d.wait_idle(
        &ends,
        &names.topic,
        r.alerts.len(),
        QUIET,
        Duration::from_secs(120),
    );
    assert_same_alerts(&d, &values(&alerts), &r.alerts, "a pattern for the inputs");
    poll_until(
        Duration::from_secs(60),
        "the dead letters read back and skipped",
        || {
            let m = d.metrics()?;
            (m.sum_where(
                "redlight_events_rejected_total",
                "reason",
                "dead_letter_topic",
            ) == 2.0)
                .then_some(())
        },
    );
    // Nothing copied back: the topic holds the two, and still two a while later.
    std::thread::sleep(Duration::from_secs(3));
    let held = read_topic(&b.bootstrap, &names.dead_letter, 2, Duration::from_secs(30));
    let keys: Vec<_> = held.iter().map(|r| r.key.clone()).collect();
    assert_eq!(
        keys,
        [Some(b"K-bad-1".to_vec()), Some(b"K-bad-2".to_vec())],
        "each dead letter once"
    );
    let said = d.log_lines("a message of the dead-letter topic");
    assert_eq!(said.len(), 1, "said at the first: {said:?}");
    d.assert_alive("at the end");
    d.stop_gracefully();
}

/// b. A stream produced at a steady pace while the daemon is killed with SIGKILL four
/// times and restarted on the same data directory: every alert exactly once, none extra,
/// and the stored cases equal replay's.
#[test]
fn kill_minus_nine_loses_nothing() {
    let _serial = serial();
    let t0 = Instant::now();
    let (b, dir, names, _topics) = bed("b", 4);

    let mut workload = Gen::new(0x5EED_B0B0, "B");
    workload.full_cases(2000);
    let lines = workload.finish();
    let msgs = msgs_of(&lines);
    let n = msgs.len();

    // The producer: a batch every 50 ms, never a longer pause (so no partition of the
    // daemon goes idle and follows the wall clock mid-stream); slow while the daemon is
    // being killed, four times faster once that is over.
    let produced = Arc::new(AtomicUsize::new(0));
    let kills_done = Arc::new(AtomicBool::new(false));
    let producer = produce_steadily(
        &b.bootstrap,
        &names.topic,
        msgs,
        produced.clone(),
        kills_done.clone(),
    );

    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    let at = |p: &AtomicUsize| format!("{}/{n}", p.load(Ordering::SeqCst));
    // What each start restored from the store, for the record.
    let restored = |d: &Daemon| {
        for l in d.log_lines("partition restored") {
            let l = l
                .split_once("partition restored")
                .map_or(l.as_str(), |x| x.1);
            eprintln!("[b]   restored:{l}");
        }
    };

    // Start once a first second of the stream is on the broker.
    poll_until(Duration::from_secs(60), "the first messages", || {
        (produced.load(Ordering::SeqCst) >= n / 80).then_some(())
    });
    d.start();
    d.wait_ready(Duration::from_secs(60));
    let mut kills = Vec::new();
    // 1: in steady state.
    std::thread::sleep(Duration::from_secs(4));
    kills.push(("steady state", produced.load(Ordering::SeqCst)));
    d.kill9();
    restored(&d);
    eprintln!(
        "[b] kill -9 #1 (steady state) at {} produced",
        at(&produced)
    );
    // 2: one second after a restart, while it starts up and joins the group.
    d.start();
    std::thread::sleep(Duration::from_secs(1));
    kills.push(("starting up", produced.load(Ordering::SeqCst)));
    d.kill9();
    restored(&d);
    eprintln!("[b] kill -9 #2 (starting up) at {} produced", at(&produced));
    // 3: right after the partitions are assigned, in the middle of the backlog.
    d.start();
    d.wait_ready(Duration::from_secs(90));
    let durable = poll_until(Duration::from_secs(60), "a first durable batch", || {
        let o = d.metrics()?.durable_offsets(&names.topic);
        (!o.is_empty()).then_some(o)
    });
    kills.push(("catching up", produced.load(Ordering::SeqCst)));
    eprintln!("[b] first durable batch after the restart: {durable:?}");
    d.kill9();
    restored(&d);
    eprintln!("[b] kill -9 #3 (catching up) at {} produced", at(&produced));
    // 4: a few seconds after catching up.
    d.start();
    d.wait_ready(Duration::from_secs(90));
    std::thread::sleep(Duration::from_secs(3));
    kills.push(("live again", produced.load(Ordering::SeqCst)));
    d.kill9();
    restored(&d);
    eprintln!("[b] kill -9 #4 (live again) at {} produced", at(&produced));
    d.start();
    kills_done.store(true, Ordering::SeqCst);

    let (landed, max_gap, took) = producer.join().expect("the producer thread");
    eprintln!(
        "[b] produced {n} messages in {:.1}s, longest pause between batches {max_gap:?}",
        took.as_secs_f64()
    );
    for (what, p) in &kills {
        assert!(
            *p > 0 && *p < n,
            "kill -9 ({what}) happened mid-stream: {p}/{n} produced (kills: {kills:?})"
        );
    }
    assert_steady(max_gap, "b");
    assert_stored_as_replay(
        &mut d,
        &config,
        &lines,
        &landed,
        &names.topic,
        "b",
        "kill_minus_nine_loses_nothing",
    );
    restored(&d);
    eprintln!(
        "[b] restarts resumed partitions at {:?}{}",
        restore_points(&d),
        out_of_order_resumes(&d, &lines, &landed)
    );
    eprintln!("[b] passed in {}", secs(t0));
}

/// Runs `redlight backup` against the running daemon of `config`; its report.
fn backup_of(d: &Daemon, config: &std::path::Path) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
        .args(["backup", "--config"])
        .arg(config)
        .output()
        .expect("redlight backup");
    if !out.status.success() {
        d.fail(&format!(
            "redlight backup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).expect("redlight backup prints its report as JSON")
}

/// The offsets of a backup's report, summed over partitions.
fn backup_offsets(report: &Value) -> i64 {
    report["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| o["next_offset"].as_i64().expect("next_offset"))
        .sum()
}

/// Backups taken while the daemon reads a stream: `redlight restore` refuses while the
/// daemon runs; with it stopped, restoring the first backup (older than the state the
/// daemon stopped with) and starting again, the daemon reads on from the backup's offsets
/// and ends with exactly replay's alerts, each once by id, and replay's cases.
#[test]
fn a_backup_taken_while_running_restores_and_loses_nothing() {
    let _serial = serial();
    let t0 = Instant::now();
    let (b, dir, names, _topics) = bed("backup", 4);
    let mut workload = Gen::new(0x5EED_BAC0, "K");
    workload.full_cases(1200);
    let lines = workload.finish();
    let n = lines.len();
    let produced = Arc::new(AtomicUsize::new(0));
    let faster = Arc::new(AtomicBool::new(false));
    let producer = produce_steadily(
        &b.bootstrap,
        &names.topic,
        msgs_of(&lines),
        produced.clone(),
        faster.clone(),
    );
    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    poll_until(Duration::from_secs(60), "the first messages", || {
        (produced.load(Ordering::SeqCst) >= n / 80).then_some(())
    });
    d.start();
    d.wait_ready(Duration::from_secs(60));
    poll_until(Duration::from_secs(60), "a first durable batch", || {
        let o = d.metrics()?.durable_offsets(&names.topic);
        (!o.is_empty()).then_some(())
    });
    let first = backup_of(&d, &config);
    std::thread::sleep(Duration::from_secs(3));
    let second = backup_of(&d, &config);
    let at = produced.load(Ordering::SeqCst);
    eprintln!(
        "[backup] backups at offsets {} and {} (of {n} messages, {at} produced): {} and {}",
        backup_offsets(&first),
        backup_offsets(&second),
        first["directory"],
        second["directory"]
    );
    assert!(
        0 < backup_offsets(&first) && backup_offsets(&first) < backup_offsets(&second),
        "the backups hold the stream as it grew: {first}\n{second}"
    );
    assert!(
        at < n,
        "the backups were taken mid-stream ({at}/{n} produced)"
    );
    let metrics = d.metrics().expect("metrics");
    assert_eq!(
        metrics.sum_where("redlight_store_backups_total", "result", "ok"),
        2.0
    );
    assert!(metrics.sum("redlight_store_backup_last_success_timestamp_seconds") > 0.0);
    let first_dir = first["directory"].as_str().expect("directory").to_string();
    let restore = |d: &Daemon| {
        std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
            .args(["restore", "--config"])
            .arg(&config)
            .arg(&first_dir)
            .output()
            .unwrap_or_else(|e| d.fail(&format!("running redlight restore: {e}")))
    };
    let refused = restore(&d);
    let said = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        !refused.status.success() && said.contains("stop the daemon"),
        "restore while the daemon runs must be refused: {said}"
    );
    d.stop_gracefully();
    let restored = restore(&d);
    let said = String::from_utf8_lossy(&restored.stdout).to_string();
    if !restored.status.success() {
        d.fail(&format!(
            "redlight restore failed: {}",
            String::from_utf8_lossy(&restored.stderr)
        ));
    }
    eprintln!("[backup] {}", said.trim_end().replace('\n', "\n[backup] "));
    assert!(
        said.contains("replaced-"),
        "where the replaced files went: {said}"
    );
    d.start();
    faster.store(true, Ordering::SeqCst);
    let (landed, max_gap, _) = producer.join().expect("the producer thread");
    assert_steady(max_gap, "backup");
    let resumed = restore_points(&d);
    eprintln!("[backup] the restored daemon resumed partitions at {resumed:?}");
    assert_stored_as_replay(
        &mut d,
        &config,
        &lines,
        &landed,
        &names.topic,
        "backup",
        "a_backup_taken_while_running_restores_and_loses_nothing",
    );
    eprintln!("[backup] passed in {}", secs(t0));
}

/// Produces `msgs` to `topic` in a thread, a batch every 50 ms and never a longer pause
/// (so no partition of a daemon reading them goes idle and follows the wall clock
/// mid-stream): slowly (the stream takes about 80 s) until `faster` is set, then four times
/// as fast. `produced` counts the messages handed to the producer. The thread gives where
/// each landed, the longest pause between two batches and how long it took.
fn produce_steadily(
    bootstrap: &str,
    topic: &str,
    msgs: Vec<Msg>,
    produced: Arc<AtomicUsize>,
    faster: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<Landed>, Duration, Duration)> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    std::thread::spawn(move || {
        let n = msgs.len();
        let p = Producer::new(&bootstrap);
        let slow = n.div_ceil(1600).max(1);
        let start = Instant::now();
        let tick = Duration::from_millis(50);
        let mut futures = Vec::with_capacity(n);
        let (mut sent, mut ticks, mut max_gap) = (0usize, 0u32, Duration::ZERO);
        let mut last = Instant::now();
        while sent < n {
            let k = if faster.load(Ordering::SeqCst) {
                4 * slow
            } else {
                slow
            };
            let end = (sent + k).min(n);
            futures.extend(p.enqueue(&topic, &msgs[sent..end]));
            sent = end;
            produced.store(sent, Ordering::SeqCst);
            max_gap = max_gap.max(last.elapsed());
            last = Instant::now();
            ticks += 1;
            let next = start + tick * ticks;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let landed = p.delivered(futures);
        (landed, max_gap, start.elapsed())
    })
}

/// The comparison with replay needs every partition to see a message at least every
/// `kafka.idle_ms` (1 s) until the stream ends; otherwise the daemon rightly lets an idle
/// partition follow the wall clock mid-stream. [`produce_steadily`] aims at a batch every
/// 50 ms; a loaded machine can stall it now and then.
fn assert_steady(max_gap: Duration, tag: &str) {
    if max_gap > Duration::from_millis(300) {
        eprintln!("[{tag}] warning: the producer paused {max_gap:?} once (machine load)");
    }
    assert!(
        max_gap < Duration::from_millis(700),
        "the producer thread stalled {max_gap:?} (machine load), close to kafka.idle_ms: this \
         run cannot tell the daemon's replay equivalence apart from a legitimate wall-clock \
         advance mid-stream; run it again on a less loaded machine"
    );
}

/// After a stream of `lines` (landed at `landed`) that a test interrupted (kill -9,
/// restarts, a restore), the daemon's stored alerts are replay's, each exactly once by id
/// and field for field, and once it is stopped its stored cases are replay's engine's.
fn assert_stored_as_replay(
    d: &mut Daemon,
    config: &std::path::Path,
    lines: &[Line],
    landed: &[Landed],
    topic: &str,
    tag: &str,
    what: &str,
) {
    let ends = end_offsets(landed);
    let (r, alerts) = replay_then_wait(d, config, &lines_of(lines), &ends, topic);
    let daemon = values(&alerts);
    // Every alert of replay exactly once by id, no id twice, nothing extra.
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for a in &daemon {
        *by_id.entry(a["id"].as_str().expect("id")).or_default() += 1;
    }
    let twice: Vec<(&&str, &usize)> = by_id.iter().filter(|(_, c)| **c > 1).collect();
    if !twice.is_empty() {
        d.fail(&format!(
            "{} alert id(s) stored more than once, e.g. {:?}",
            twice.len(),
            &twice[..twice.len().min(5)]
        ));
    }
    let expected: HashSet<&str> = r
        .alerts
        .iter()
        .map(|a| a["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        expected.len(),
        r.alerts.len(),
        "replay's alert ids are unique"
    );
    let missing: Vec<&&str> = expected
        .iter()
        .filter(|i| !by_id.contains_key(**i))
        .collect();
    let extra: Vec<&&str> = by_id.keys().filter(|i| !expected.contains(**i)).collect();
    if !missing.is_empty() || !extra.is_empty() {
        let show = |ids: &[&&str], from: &[Value]| {
            ids.iter()
                .take(5)
                .filter_map(|i| from.iter().find(|a| a["id"] == ***i))
                .map(|a| format!("  {a}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        d.fail(&format!(
            "{} alert(s) of replay missing, {} extra\nmissing, e.g.:\n{}\nextra, e.g.:\n{}",
            missing.len(),
            extra.len(),
            show(&missing, &r.alerts),
            show(&extra, &daemon)
        ));
    }
    eprintln!(
        "[{tag}] all {} alerts of replay present exactly once by id, none extra",
        r.alerts.len()
    );
    assert_same_alerts_or(
        d,
        &daemon,
        &r.alerts,
        what,
        &out_of_order_resumes(d, lines, landed),
    );
    eprintln!("[{tag}] and equal field for field");

    d.stop_gracefully();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
        .args(["dump", "--config"])
        .arg(config)
        .output()
        .expect("redlight dump");
    assert!(
        out.status.success(),
        "redlight dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumped: Vec<Value> = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("dump prints JSON lines"))
        .collect();
    let ids = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|c| c["id"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    let (dumped_ids, replay_ids) = (ids(&dumped), ids(&r.cases));
    if dumped_ids != replay_ids {
        let a: HashSet<&String> = dumped_ids.iter().collect();
        let b: HashSet<&String> = replay_ids.iter().collect();
        d.fail(&format!(
            "stored cases ({}) differ from replay's ({}): only stored {:?}, only replay {:?}",
            dumped_ids.len(),
            replay_ids.len(),
            a.difference(&b).take(10).collect::<Vec<_>>(),
            b.difference(&a).take(10).collect::<Vec<_>>()
        ));
    }
    let differing: Vec<(&Value, &Value)> = dumped
        .iter()
        .zip(&r.cases)
        .filter(|(x, y)| x != y)
        .collect();
    if let Some((x, y)) = differing.first() {
        d.fail(&format!(
            "{} stored case(s) differ from replay's; the first:\nstored: {x}\nreplay: {y}{}",
            differing.len(),
            out_of_order_resumes(d, lines, landed)
        ));
    }
    eprintln!(
        "[{tag}] {} stored cases equal replay's engine",
        dumped.len()
    );
}

/// Starts the broker again if a test stopped it and failed before starting it.
struct BrokerBack {
    port: u16,
    down: bool,
}

impl Drop for BrokerBack {
    fn drop(&mut self) {
        if self.down {
            let out = kafka_sh(Some(self.port), &["start"]);
            eprintln!("[c] restarted the broker after a failure: {}", out.status);
        }
    }
}

/// Runs `scripts/kafka.sh CMD` on the test broker and insists that it succeeds.
fn broker_sh(port: u16, cmd: &str) {
    let out = kafka_sh(Some(port), &[cmd]);
    assert!(
        out.status.success(),
        "scripts/kafka.sh {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// c. The broker goes away for 30 s under a consuming daemon and comes back: the daemon
/// keeps running, recovers by itself, and loses nothing. Then it goes away again, and
/// SIGTERM still stops the daemon cleanly within seconds.
#[test]
fn broker_outage_recovers() {
    let _serial = serial();
    let t0 = Instant::now();
    let b = broker();
    let status = kafka_sh(Some(b.port), &["status"]);
    assert!(
        status.status.success(),
        "broker_outage_recovers stops and starts the broker with scripts/kafka.sh \
         (KAFKA_PORT={}), but it does not manage {}: {}",
        b.port,
        b.bootstrap,
        String::from_utf8_lossy(&status.stdout)
    );
    let (_, dir, names, _topics) = bed("c", 4);

    // Before the outage: a full workload, as a backlog.
    let mut workload = Gen::new(0x5EED_C0FE, "C");
    workload.full_cases(1500);
    let before = workload.finish();
    let mut landed = Producer::new(&b.bootstrap).send_all(&names.topic, &msgs_of(&before));
    eprintln!("[c] produced {} messages before the outage", before.len());

    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    d.start();
    // Stop the broker as soon as the daemon is consuming.
    let deadline = Instant::now() + Duration::from_secs(60);
    let durable = loop {
        d.assert_alive("waiting for the first durable offsets");
        if let Some(m) = d.metrics() {
            let o = m.durable_offsets(&names.topic);
            if !o.is_empty() {
                break o;
            }
        }
        if Instant::now() >= deadline {
            d.fail("no offset became durable within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut back = BrokerBack {
        port: b.port,
        down: true,
    };
    let t = Instant::now();
    broker_sh(b.port, "stop");
    let at_stop = d
        .metrics()
        .map(|m| m.durable_offsets(&names.topic))
        .unwrap_or_default();
    eprintln!(
        "[c] broker stopped in {} while consuming (durable offsets when asked to stop: \
         {durable:?}; when stopped: {at_stop:?}; ends {:?})",
        secs(t),
        end_offsets(&landed)
    );

    // 30 s without a broker: the daemon stays up and keeps serving HTTP.
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(30) {
        d.assert_alive("with the broker down");
        match d.get("/healthz") {
            Some((200, _)) => {}
            other => d.fail(&format!("/healthz with the broker down: {other:?}")),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // The board and /readyz say the input is cut: a quiet board must not read as all well.
    let board = match d.get("/") {
        Some((200, body)) => body,
        other => d.fail(&format!("the board with the broker down: {other:?}")),
    };
    assert!(
        board.contains(r#"id="input-notice""#) && board.contains("消息接入已中断"),
        "the board says the input is cut after 30 s without a broker: {}",
        board.chars().take(1500).collect::<String>()
    );
    match d.get("/readyz") {
        Some((_, body)) if body.contains("no connection to any Kafka broker") => {}
        other => d.fail(&format!("/readyz warns of the broker down: {other:?}")),
    }
    let errors = d
        .metrics()
        .map_or(0.0, |m| m.sum("redlight_kafka_errors_total"));
    eprintln!("[c] 30 s with the broker down: daemon alive, {errors} Kafka errors counted");
    // The log says each kind of error once, not every one: librdkafka reports the brokers
    // down about five times a second, each error reached the log twice, and a night's
    // outage buried everything else in it.
    let said: Vec<String> = ["kafka client error", "kafka error while consuming"]
        .iter()
        .flat_map(|needle| d.log_lines(needle))
        .collect();
    eprintln!("[c] {} lines of Kafka errors in the log", said.len());
    // Each kind (the error code: `…error=Global error: AllBrokersDown (Local: …`) once.
    let kind = |line: &str| {
        let e = &line[line.find("error=").map_or(0, |i| i + 6)..];
        let e = &e[e.find(": ").map_or(0, |i| i + 2)..];
        e[..e.find(" (").unwrap_or(e.len())].to_string()
    };
    let kinds: HashSet<String> = said.iter().map(|l| kind(l)).collect();
    assert!(
        errors >= 1.0 && kinds.len() == said.len(),
        "with the broker down 30 s, {errors} Kafka errors are counted and {} lines say them, \
         of {} kinds (each kind once a minute expected):\n{}",
        said.len(),
        kinds.len(),
        said.join("\n")
    );

    let t = Instant::now();
    broker_sh(b.port, "start");
    back.down = false;
    eprintln!("[c] broker started again in {}", secs(t));
    d.assert_alive("after the broker came back");

    // After the outage: new cases whose events only start clocks and duties (no stop,
    // no violation). The daemon's partitions may have followed the wall clock while the
    // broker was down (caught up and idle); an event of an old case arriving now would be
    // a late delivery, which by design differs from replay. These do not.
    let mut workload = Gen::new(0x5EED_C0DE, "C2");
    workload.start_only_cases(500);
    let after = workload.finish();
    landed.extend(Producer::new(&b.bootstrap).send_all(&names.topic, &msgs_of(&after)));
    let ends = end_offsets(&landed);
    eprintln!("[c] produced {} messages after the outage", after.len());
    let t = Instant::now();
    let all: Vec<&str> = lines_of(&before)
        .into_iter()
        .chain(lines_of(&after))
        .collect();
    let (r, alerts) = replay_then_wait(&mut d, &config, &all, &ends, &names.topic);
    eprintln!("[c] recovered and idle {} after producing", secs(t));
    let daemon = values(&alerts);
    assert_same_alerts(&d, &daemon, &r.alerts, "broker_outage_recovers");
    let after_cases: HashSet<String> = after.iter().map(|l| l.key.clone()).collect();
    let of_after = daemon
        .iter()
        .filter(|a| after_cases.contains(a["case"].as_str().unwrap_or("")))
        .count();
    eprintln!(
        "[c] {} alerts equal to replay ({of_after} of them for cases produced after the outage)",
        daemon.len()
    );
    assert!(of_after > 0, "the events after the outage raised alerts");
    // Caught up with the broker back: the board no longer says the input is cut.
    match d.get("/") {
        Some((200, body)) if !body.contains(r#"id="input-notice""#) => {}
        other => d.fail(&format!(
            "the board still says the input is cut once caught up: {:?}",
            other.map(|(c, b)| (c, b.chars().take(1500).collect::<String>()))
        )),
    }

    // SIGTERM with the broker down again: the daemon still exits 0 within seconds (the
    // final offset commit to Kafka is not waited for; the store has the offsets).
    broker_sh(b.port, "stop");
    back.down = true;
    let t = Instant::now();
    let status = d.terminate(Duration::from_secs(8));
    assert!(
        status.success(),
        "SIGTERM with the broker down: exit {status}"
    );
    eprintln!("[c] SIGTERM with the broker down: exit 0 in {}", secs(t));
    broker_sh(b.port, "start");
    back.down = false;
    eprintln!("[c] passed in {}", secs(t0));
}

/// One malformed message and what the dead-letter topic must say about it.
struct Bad {
    msg: Msg,
    code: &'static str,
    /// The reason header names the problem.
    names: String,
}

/// Static group membership (`group.instance.id`, set through `[kafka.librdkafka]`): an
/// instance restarted after `kill -9` takes its partitions back under the same id, and a
/// second instance started under an id already in use fences the first, which must stop
/// with a message saying why instead of retrying forever on a consumer that can do nothing.
#[test]
fn a_second_instance_under_the_same_static_id_stops_the_first_with_the_reason() {
    let _serial = serial();
    let b = broker();
    let names = Names::new("f");
    let _topics = Topics::create(&b.bootstrap, &[(&names.topic, 2), (&names.dead_letter, 1)]);
    let instance = format!("{}-instance", names.group);
    let start = |tag: &str| {
        let dir = TestDir::new(tag);
        let port = free_port();
        let config = write_config(&dir.path, &b.bootstrap, &names, port);
        set_librdkafka(&config, "group.instance.id", &instance);
        let mut d = Daemon::new(config, dir.path.join("daemon.log"), port);
        d.start();
        d.wait_ready(Duration::from_secs(60));
        (dir, d)
    };
    let (_dir_a, mut first) = start("fa");
    // Restarted after kill -9 under the same id: it gets its partitions back.
    first.kill9();
    first.start();
    first.wait_ready(Duration::from_secs(60));
    first.assert_alive("after its restart under the same id");
    // A second instance under the same id (another data directory) joins the group...
    let (_dir_b, mut second) = start("fb");
    // ... and the first stops by itself, non-zero, naming the cause.
    let Some(status) = first.wait_exit(Duration::from_secs(60)) else {
        first.fail("the fenced instance did not stop within 60 s");
    };
    assert!(
        !status.success(),
        "the fenced instance exited with {status}"
    );
    let log = std::fs::read_to_string(&first.log).unwrap_or_default();
    assert!(
        log.contains("fatal error") && log.contains("group.instance.id"),
        "the fenced instance must say why it stopped:\n{}",
        first.log_tail()
    );
    // The newer instance goes on.
    second.assert_alive("after fencing the first");
    assert!(
        matches!(second.get("/readyz"), Some((200, _))),
        "the second instance is ready"
    );
    second.stop_gracefully();
}

fn event_json(id: &str, kind: &str, time: &str, subject: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/e2e/bad", "type": kind, "time": time,
        "subject": subject, "datacontenttype": "application/json", "data": data})
}

/// d. Malformed messages among good ones: each goes to the dead-letter topic with its
/// reason in headers, every good one is processed, the daemon keeps running.
#[test]
fn bad_messages_go_to_dead_letters() {
    let _serial = serial();
    let t0 = Instant::now();
    let (b, dir, names, _topics) = bed("d", 4);

    let mut workload = Gen::new(0x5EED_D00D, "D");
    workload.full_cases(600);
    let good = workload.finish();

    // A case whose clock is paused in June and resumed on December 24 of the last year the
    // test calendar covers (next year: the shipped data, then placeholders): the resumed
    // clock's deadline lies in the year after, which has no calendar data: it waits.
    let last_year = chrono::Datelike::year(&chrono::Utc::now()) + 1;
    let beyond = (last_year + 1).to_string();
    let accepted = event_json(
        "D-cal-1",
        "approval.accepted",
        "2026-06-01T10:00:00+08:00",
        "D-CAL-RESUMED",
        json!({"department": "市住建局", "item": "排污许可", "handler": "王五",
            "kind": "promised", "promised_workdays": 10}),
    );
    let suspended = event_json(
        "D-cal-2",
        "approval.suspended",
        "2026-06-03T10:00:00+08:00",
        "D-CAL-RESUMED",
        json!({"procedure": "expert_review"}),
    );
    let mut stream: Vec<(Msg, Option<usize>)> = Vec::new(); // (message, index into `bads`)
    let mut spliced = false;
    for l in &good {
        let time = serde_json::from_str::<Value>(&l.line).expect("json")["time"]
            .as_str()
            .expect("time")
            .to_string();
        if !spliced && time.as_str() > "2026-06-03T10:00:00+08:00" {
            for e in [&accepted, &suspended] {
                stream.push((Msg::event("D-CAL-RESUMED", &e.to_string()), None));
            }
            spliced = true;
        }
        stream.push((Msg::event(&l.key, &l.line), None));
    }
    assert!(spliced, "the workload reaches June");

    // The malformed ones, each kind three times at seeded random places.
    let valid = |subject: &str| {
        event_json(
            &format!("bad-{subject}"),
            "approval.accepted",
            "2026-03-02T10:00:00+08:00",
            subject,
            json!({"department": "市住建局", "kind": "immediate"}),
        )
    };
    let mut bads: Vec<Bad> = Vec::new();
    for i in 0..3 {
        let mut no_subject = valid(&format!("BAD-NS-{i}"));
        no_subject.as_object_mut().expect("obj").remove("subject");
        let mut bad_time = valid(&format!("BAD-T-{i}"));
        bad_time["time"] = json!("2026-02-30 25:61");
        let mut bad_data = valid(&format!("BAD-D-{i}"));
        bad_data["data"] = json!(["department", "市住建局"]);
        // Dated in 2099: the daemon refuses an event that claims to have happened after
        // its own clock (beyond `kafka.future_tolerance_ms`), which would otherwise move the
        // partition's engine clock with it and fire every deadline up to then.
        let mut future = valid(&format!("BAD-F-{i}"));
        future["time"] = json!(format!("2099-0{}-01T10:00:00+08:00", i + 1));
        // A zero timestamp: before the calendar data, refused (by replay too).
        let zero = event_json(
            &format!("bad-z-{i}"),
            "safety.accident_occurred",
            "1970-01-01T00:00:00Z",
            &format!("BAD-Z-{i}"),
            json!({"department": "市应急管理局", "unit": "某厂", "grade": "一般"}),
        );
        let truncated = format!(
            r#"{{"specversion":"1.0","id":"bad-j-{i}","type":"approval.accepted","subject":"BAD-J-{i}","time":"#
        );
        for (key, payload, code, names) in [
            (
                format!("BAD-J-{i}"),
                truncated.to_string(),
                "not_json",
                "JSON",
            ),
            (
                format!("BAD-NS-{i}"),
                no_subject.to_string(),
                "missing_attribute",
                "subject",
            ),
            (
                format!("BAD-T-{i}"),
                bad_time.to_string(),
                "bad_time",
                "time",
            ),
            (
                format!("BAD-D-{i}"),
                bad_data.to_string(),
                "data_not_object",
                "data",
            ),
            (
                format!("BAD-F-{i}"),
                future.to_string(),
                "time_in_future",
                "kafka.future_tolerance_ms",
            ),
            (
                format!("BAD-Z-{i}"),
                zero.to_string(),
                "before_calendar_data",
                "before the calendar data",
            ),
        ] {
            bads.push(Bad {
                msg: Msg {
                    key: Some(key),
                    payload: Some(payload.into_bytes()),
                    ..Msg::default()
                },
                code,
                names: names.to_string(),
            });
        }
    }
    bads.push(Bad {
        msg: Msg {
            key: Some("BAD-ARRAY".into()),
            payload: Some(b"[1,2,3]".to_vec()),
            ..Msg::default()
        },
        code: "not_object",
        names: "object".to_string(),
    });
    bads.push(Bad {
        msg: Msg {
            key: Some("BAD-TWICE".into()),
            payload: Some(
                br#"{"specversion":"1.0","id":"bad-twice","source":"/t","type":"approval.accepted","time":"2026-06-01T10:00:00+08:00","subject":"BAD-TWICE","subject":"BAD-THRICE"}"#
                    .to_vec(),
            ),
            ..Msg::default()
        },
        code: "repeated_attribute",
        names: "duplicate field `subject`".to_string(),
    });
    bads.push(Bad {
        msg: Msg {
            key: Some("BAD-EMPTY".into()),
            payload: None,
            ..Msg::default()
        },
        code: "not_json",
        names: "JSON".to_string(),
    });
    // A CloudEvent in binary content mode: its attributes in `ce_` headers, its data the
    // body. Refused with that said, and its headers kept on the dead letter.
    let ce = |k: &str, v: &str| (format!("ce_{k}"), v.to_string());
    bads.push(Bad {
        msg: Msg {
            key: Some("BAD-BINARY".into()),
            payload: Some(r#"{"department":"市住建局","kind":"immediate"}"#.as_bytes().to_vec()),
            headers: vec![
                ce("specversion", "1.0"),
                ce("id", "bad-binary"),
                ce("source", "/t"),
                ce("type", "approval.accepted"),
                ce("time", "2026-06-01T10:00:00+08:00"),
                ce("subject", "BAD-BINARY"),
                ("content-type".into(), "application/json".into()),
                // As if sent back from the dead letters once: a refusal's own header.
                ("redlight-reason-code".into(), "stale".into()),
            ],
        },
        code: "binary_content_mode",
        names: "binary content mode".to_string(),
    });
    let mut rng = workload::Rng::new(0xBAD);
    for (i, bad) in bads.iter().enumerate() {
        let pos = rng.range(1, stream.len() as i64 - 1) as usize;
        stream.insert(pos, (bad.msg.clone(), Some(i)));
    }
    // After every good event: events whose clocks need calendar data for the year after the
    // last one covered — the resumption above, and new cases accepted on December 24 at the
    // same instant (15 workdays run into the next year) under 40 keys, so that every
    // partition gets one. They are good events: applied, their deadlines pending until the
    // data arrives. Then the completion of each of those 40 cases on January 5 of the year
    // without data: whether a stop was in time is not known without that year, so each is
    // rejected to the dead-letter topic. Then more good events, new cases that only start
    // clocks (their alerts do not depend on how far the rejected events moved the engine's
    // clock).
    //
    // Every partition's clock thus moves to the same instant as replay's one clock does
    // (a rejected event still lets the timers before it fire): when the tests run early in
    // a year, that instant is months ahead, and the market duties due meanwhile fire in
    // every partition as they do in replay.
    let at = format!("{last_year}-12-24T09:00:00+08:00");
    let stop_at = format!("{beyond}-01-05T09:00:00+08:00");
    let mut pending = vec![event_json(
        "D-cal-4",
        "approval.resumed",
        &at,
        "D-CAL-RESUMED",
        json!({}),
    )];
    let mut calendar = Vec::new();
    for i in 0..40 {
        pending.push(event_json(
            &format!("D-cal-new-{i:02}"),
            "approval.accepted",
            &at,
            &format!("D-CAL-NEW-{i:02}"),
            json!({"department": "市住建局", "item": "排污许可", "handler": "王五",
                "kind": "promised", "promised_workdays": 15}),
        ));
        calendar.push(event_json(
            &format!("D-cal-done-{i:02}"),
            "approval.completed",
            &stop_at,
            &format!("D-CAL-NEW-{i:02}"),
            json!({}),
        ));
    }
    for e in &pending {
        stream.push((
            Msg::event(e["subject"].as_str().expect("subject"), &e.to_string()),
            None,
        ));
    }
    for e in &calendar {
        bads.push(Bad {
            msg: Msg::event(e["subject"].as_str().expect("subject"), &e.to_string()),
            code: "no_calendar_data",
            names: beyond.clone(),
        });
        stream.push((bads[bads.len() - 1].msg.clone(), Some(bads.len() - 1)));
    }
    let mut tail = Gen::new(0x5EED_D7A1, "D2");
    tail.start_only_cases(60);
    for (i, l) in tail.finish().into_iter().enumerate() {
        // Two of them keyed wrongly, without a key and by department: applied as the
        // others (the subject is the case id), and counted for the operator, since such a
        // producer can split a case over partitions.
        let mut msg = Msg::event(&l.key, &l.line);
        msg.key = match i {
            0 => None,
            1 => Some("市住建局".to_string()),
            _ => msg.key,
        };
        stream.push((msg, None));
        // Two more of a type no pack names (capitalised): well formed, so not dead
        // letters; ignored, and counted apart from the events consumed.
        if i == 2 || i == 3 {
            let mut v: serde_json::Value = serde_json::from_str(&l.line).expect("json");
            let kind = v["type"].as_str().expect("type").replacen('.', ".X", 1);
            v["type"] = serde_json::Value::from(kind);
            v["id"] = serde_json::Value::from(format!("unknown-type-{i}"));
            stream.push((Msg::event(&l.key, &v.to_string()), None));
        }
    }

    // Last, a case fed in a loop: it takes `engine.max_events_per_case` events (set just
    // above the most any other case here has) and refuses the three after them. An
    // accident at the instant every partition's clock has reached (its 1-hour deadline
    // fires in neither run), then fees, which no rule watches.
    let mut per_case: HashMap<&str, usize> = HashMap::new();
    for (m, b) in &stream {
        if let (Some(key), None) = (&m.key, b) {
            *per_case.entry(key.as_str()).or_default() += 1;
        }
    }
    let limit = per_case.values().max().copied().unwrap_or(0) + 5;
    let looping = |n: usize| {
        let (kind, data) = if n == 0 {
            (
                "safety.accident_occurred",
                json!({"department": "市应急管理局", "unit": "某厂", "grade": "一般"}),
            )
        } else {
            (
                "approval.fee_charged",
                json!({"amount_yuan": n, "fee_code": "F1"}),
            )
        };
        Msg::event(
            "D-LOOP",
            &event_json(&format!("D-loop-{n}"), kind, &stop_at, "D-LOOP", data).to_string(),
        )
    };
    for n in 0..limit + 3 {
        if n < limit {
            stream.push((looping(n), None));
        } else {
            bads.push(Bad {
                msg: looping(n),
                code: "case_event_limit",
                names: format!("already has {limit} events"),
            });
            stream.push((bads[bads.len() - 1].msg.clone(), Some(bads.len() - 1)));
        }
    }

    let msgs: Vec<Msg> = stream.iter().map(|(m, _)| m.clone()).collect();
    let landed = Producer::new(&b.bootstrap).send_all(&names.topic, &msgs);
    let ends = end_offsets(&landed);
    let good_count = stream.iter().filter(|(_, b)| b.is_none()).count();
    eprintln!(
        "[d] produced {} messages: {good_count} good, {} malformed",
        msgs.len(),
        bads.len()
    );

    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    // The calendar events above lie in next year's December, up to two years ahead of the
    // daemon's clock: allowed here, three years; 2099 is still refused.
    set_config(
        &config,
        &["kafka"],
        "future_tolerance_ms",
        toml::Value::Integer(3 * 366 * 86_400_000),
    );
    set_config(
        &config,
        &["engine"],
        "max_events_per_case",
        toml::Value::Integer(limit as i64),
    );
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    d.start();
    // Every good one processed: replay over every line (it rejects the same lines; the
    // empty message is no line at all) but those from the future: replay has no clock
    // but its events' and takes them.
    let future = |b: &Option<usize>| b.is_some_and(|i| bads[i].code == "time_in_future");
    let lines: Vec<String> = stream
        .iter()
        .filter(|(_, b)| !future(b))
        .filter_map(|(m, _)| m.payload.as_ref())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
    let r = replay(&config, &texts, now_ms());
    assert_eq!(
        r.summary.rejected as usize,
        bads.iter()
            .filter(|b| b.msg.payload.is_some() && b.code != "time_in_future")
            .count(),
        "replay rejects the same lines:\n{}",
        r.stderr
    );
    // Of the good ones, those of a type no pack names: the workload's own odd cases, and
    // the two above.
    let unknown_types = r.summary.unknown as usize;
    assert!(unknown_types > 2, "{unknown_types} events of unknown types");
    let alerts = d.wait_idle(
        &ends,
        &names.topic,
        r.alerts.len(),
        QUIET,
        Duration::from_secs(300),
    );
    d.assert_alive("after the malformed messages");
    match d.get("/healthz") {
        Some((200, _)) => {}
        other => d.fail(&format!("/healthz after the malformed messages: {other:?}")),
    }

    // The dead-letter topic holds each malformed message once, with its reason.
    let where_bad: HashMap<(i32, i64), usize> = stream
        .iter()
        .zip(&landed)
        .filter_map(|((_, b), l)| b.map(|i| ((l.partition, l.offset), i)))
        .collect();
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut problems = Vec::new();
    for m in read_topic(
        &b.bootstrap,
        &names.dead_letter,
        bads.len(),
        Duration::from_secs(60),
    ) {
        let mut h: BTreeMap<String, String> = BTreeMap::new();
        let mut twice = Vec::new();
        for (key, value) in &m.headers {
            if h.insert(key.clone(), value.clone()).is_some() {
                twice.push(key.clone());
            }
        }
        let source = (
            h.get("redlight-source-partition")
                .and_then(|p| p.parse::<i32>().ok())
                .unwrap_or(-1),
            h.get("redlight-source-offset")
                .and_then(|o| o.parse::<i64>().ok())
                .unwrap_or(-1),
        );
        let Some(&i) = where_bad.get(&source) else {
            problems.push(format!("a dead letter for no malformed message: {h:?}"));
            continue;
        };
        *seen.entry(i).or_default() += 1;
        let bad = &bads[i];
        let reason = h.get("redlight-reason").cloned().unwrap_or_default();
        if !reason.contains(bad.names.as_str()) {
            problems.push(format!(
                "{:?}: reason {reason:?} does not name {:?}",
                bad.msg.key, bad.names
            ));
        }
        if h.get("redlight-reason-code").map(String::as_str) != Some(bad.code) {
            problems.push(format!(
                "{:?}: reason code {:?}, expected {:?}",
                bad.msg.key,
                h.get("redlight-reason-code"),
                bad.code
            ));
        }
        if h.get("redlight-source-topic") != Some(&names.topic) {
            problems.push(format!("{:?}: source topic {h:?}", bad.msg.key));
        }
        if !twice.is_empty() {
            problems.push(format!("{:?}: headers twice: {twice:?}", bad.msg.key));
        }
        for (k, v) in &bad.msg.headers {
            if !k.starts_with("redlight-") && h.get(k) != Some(v) {
                problems.push(format!("{:?}: header {k} lost: {h:?}", bad.msg.key));
            }
        }
        if m.payload != bad.msg.payload
            || m.key != bad.msg.key.as_ref().map(|k| k.as_bytes().to_vec())
        {
            problems.push(format!(
                "{:?}: the dead letter's key or payload is not the original's",
                bad.msg.key
            ));
        }
        eprintln!(
            "[d] dead letter p{}@{}: {} — {reason}",
            source.0,
            source.1,
            h.get("redlight-reason-code").map_or("?", String::as_str)
        );
    }
    for (i, bad) in bads.iter().enumerate() {
        match seen.get(&i) {
            Some(1) => {}
            Some(n) => problems.push(format!("{:?}: {n} dead letters", bad.msg.key)),
            None => problems.push(format!(
                "{:?} ({}) never reached the dead-letter topic",
                bad.msg.key, bad.code
            )),
        }
    }
    if !problems.is_empty() {
        d.fail(&format!(
            "dead-letter problems:\n  {}",
            problems.join("\n  ")
        ));
    }
    eprintln!(
        "[d] all {} malformed messages dead-lettered with their reasons",
        bads.len()
    );

    let m = d.metrics().expect("/metrics");
    let (consumed, dead) = (
        m.sum("redlight_events_consumed_total") as usize,
        m.sum("redlight_dead_letters_total") as usize,
    );
    let calendar_rejected = m.sum_where(
        "redlight_events_rejected_total",
        "reason",
        "no_calendar_data",
    );
    let calendar_bads = bads.iter().filter(|b| b.code == "no_calendar_data").count();
    let mismatched = m.sum("redlight_events_key_mismatch_total");
    let unknown = m.sum("redlight_events_unknown_type_total") as usize;
    if consumed != good_count - unknown_types
        || unknown != unknown_types
        || dead != bads.len()
        || calendar_rejected as usize != calendar_bads
        || mismatched != 2.0
    {
        d.fail(&format!(
            "metrics: consumed {consumed} (expected {}), of unknown types {unknown} \
             (expected {unknown_types}), dead letters {dead} (expected {}), calendar \
             rejections {calendar_rejected} (expected {calendar_bads}), keys not the case id \
             {mismatched} (expected 2)",
            good_count - unknown_types,
            bads.len()
        ));
    }

    // The log says each reason when it first comes (all within the minute here), not every
    // message: a producer gone wrong refuses all it sends.
    let said: Vec<String> = ["rejected message", "event refused"]
        .iter()
        .flat_map(|needle| d.log_lines(needle))
        .collect();
    let reasons: HashSet<&str> = bads.iter().map(|b| b.code).collect();
    if said.len() > reasons.len() || said.is_empty() {
        d.fail(&format!(
            "{} refusals of {} reasons took {} log lines (one per reason expected):\n{}",
            bads.len(),
            reasons.len(),
            said.len(),
            said.join("\n")
        ));
    }

    let daemon = values(&alerts);
    assert_same_alerts(&d, &daemon, &r.alerts, "bad_messages_go_to_dead_letters");
    eprintln!("[d] {} alerts equal to replay", daemon.len());
    d.assert_alive("at the end");
    d.stop_gracefully();
    eprintln!("[d] passed in {}", secs(t0));
}

/// A tmpfs of a given size mounted on a directory, unmounted when dropped (before the
/// test's directory is removed: declare it after the [`TestDir`]).
struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    /// `None` when this process may not mount (it needs root, as CI on the build machine
    /// has); the caller then skips, saying so.
    fn mount(path: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).expect("mount point");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs {
            path: path.to_path_buf(),
        })
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("mount -o remount");
        assert!(
            status.success(),
            "remounting {} failed",
            self.path.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// A process killed in the first milliseconds of a first start, while the store's files
/// are being created (`kill -9`, a power cut, a pod evicted), leaves a store that the next
/// start opens. redb writes a new file's header, its magic number, last: a file cut short
/// before that was refused as "not a redb database" by every later start (1 kill in 80
/// landed there, measured), until someone deleted it by hand. `redlight dump` opens the
/// store as the daemon does, without a broker: killed after 0, 0.1, 0.2, … ms on a fresh
/// data directory, then run again, which must succeed; until some kills have landed in a
/// creation (a half-created file left beside the store), or the test fails for want of
/// having checked anything.
#[test]
fn a_store_whose_creation_was_killed_opens() {
    let dir = TestDir::new("creation-killed");
    let config = write_config(&dir.path, "127.0.0.1:9", &Names::new("creation-killed"), 0);
    let data = dir.path.join("data");
    let dump = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_redlight"));
        cmd.args(["dump", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let (mut landed, mut tries) = (0, 0);
    while landed < 5 {
        assert!(
            tries < 3000,
            "no kill in {tries} landed while the store's files were created: nothing checked"
        );
        let _ = std::fs::remove_dir_all(&data);
        let mut child = dump().spawn().expect("running redlight dump");
        std::thread::sleep(Duration::from_micros(100 * (tries % 300)));
        let _ = child.kill();
        let _ = child.wait();
        tries += 1;
        let cut_short = std::fs::read_dir(&data).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".creating-"))
        });
        let out = dump().output().expect("running redlight dump again");
        assert!(
            out.status.success(),
            "after a kill {} ms into the first start ({}), the store does not open: {}",
            (tries - 1) % 300 / 10,
            if cut_short {
                "in the creation of its files"
            } else {
                "elsewhere"
            },
            String::from_utf8_lossy(&out.stderr)
        );
        if cut_short {
            landed += 1;
            let left: Vec<String> = std::fs::read_dir(&data)
                .expect("the data directory")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                !left.iter().any(|f| f.contains(".creating-")),
                "the half-created file is removed once the store is open: {left:?}"
            );
        }
    }
    eprintln!("[creation-killed] {landed} of {tries} kills landed in the store's creation");
}

/// The store's disk fills up while the daemon consumes a backlog: it stops by itself with
/// an error naming the file and the cause (a non-zero exit, nothing half-written), and
/// once there is room again a restart on the same data directory consumes the rest, every
/// alert exactly once and equal to replay's. The data directory is a tmpfs too small for
/// the backlog's store (the test needs root to mount it, and says it skipped otherwise).
#[test]
fn a_full_disk_stops_the_daemon_and_a_restart_loses_nothing() {
    let _serial = serial();
    let t0 = Instant::now();
    let b = broker();
    let dir = TestDir::new("e");
    let names = Names::new("e");
    let Some(disk) = Tmpfs::mount(&dir.path.join("data"), FULL_DISK) else {
        eprintln!("[e] SKIPPED: mounting a tmpfs needs root");
        return;
    };
    let _topics = Topics::create(&b.bootstrap, &[(&names.topic, 4), (&names.dead_letter, 1)]);

    let mut workload = Gen::new(0x5EED_E0F0, "E");
    workload.full_cases(3000);
    let lines = workload.finish();
    let landed = Producer::new(&b.bootstrap).send_all(&names.topic, &msgs_of(&lines));
    let ends = end_offsets(&landed);
    eprintln!("[e] produced {} messages to {ends:?}", lines.len());

    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    d.start();
    let Some(status) = d.wait_exit(Duration::from_secs(120)) else {
        d.fail(&format!(
            "the daemon was still running 120 s into a backlog whose store does not fit \
             in {FULL_DISK}"
        ))
    };
    if status.success() {
        d.fail(&format!(
            "with its disk full the daemon exited with {status}, not an error"
        ));
    }
    // The error names the file and the cause, in the log and as the exit message.
    let named = d.log_lines("No space left on device");
    if !named.iter().any(|l| l.contains(".redb")) {
        d.fail("no log line names the store file and 'No space left on device'");
    }
    eprintln!(
        "[e] disk full: the daemon exited with {status}: {}",
        named[0]
    );

    disk.resize("512m");
    d.start();
    let (r, alerts) = replay_then_wait(&mut d, &config, &lines_of(&lines), &ends, &names.topic);
    // The first start made durable progress before the disk filled, which the second
    // restored rather than starting over.
    let restored: u64 = d
        .log_lines("partition restored")
        .iter()
        .filter_map(|l| {
            l.split(" cases=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    if restored == 0 {
        d.fail("the restart restored no cases: the disk filled before anything was durable");
    }
    let m = d.metrics().expect("/metrics");
    let rejected = m.sum("redlight_events_rejected_total") as usize;
    if rejected != 0 {
        d.fail(&format!("{rejected} events rejected after the restart"));
    }
    let daemon = values(&alerts);
    assert_same_alerts(&d, &daemon, &r.alerts, "a_full_disk_stops_the_daemon");
    eprintln!(
        "[e] restart restored {restored} cases and consumed the rest; {} alerts equal to replay",
        daemon.len()
    );
    d.stop_gracefully();
    eprintln!("[e] passed in {}", secs(t0));
}

/// The first start's data directory: too small for the store of test e's backlog, large
/// enough for the first batches.
const FULL_DISK: &str = "3m";

/// A deadline in a year without calendar data waits, and is computed when the daemon
/// restarts with that year's file: the case is kept meanwhile (its accept is not
/// dead-lettered), `/readyz` and `/metrics` count the pending deadlines, and after the
/// restart the API shows the deadlines the new data gives.
#[test]
fn a_pending_deadline_is_computed_after_a_restart_with_next_years_calendar() {
    let _serial = serial();
    let (b, dir, names, _topics) = bed("p", 1);
    // The test calendar covers up to next year (shipped data, then placeholders); a case
    // accepted on December 24 of that year with 15 workdays needs the year after.
    let last_year = chrono::Datelike::year(&chrono::Utc::now()) + 1;
    let beyond = last_year + 1;
    let accepted = event_json(
        "p-1",
        "approval.accepted",
        &format!("{last_year}-12-24T09:00:00+08:00"),
        "P-PENDING",
        json!({"department": "市住建局", "item": "排污许可", "handler": "王五",
            "kind": "promised", "promised_workdays": 15}),
    );
    let landed = Producer::new(&b.bootstrap).send_all(
        &names.topic,
        &[Msg::event("P-PENDING", &accepted.to_string())],
    );
    let ends = end_offsets(&landed);

    let port = free_port();
    let config = write_config(&dir.path, &b.bootstrap, &names, port);
    // The accept lies in next year's December, up to two years ahead of the daemon's clock.
    set_config(
        &config,
        &["kafka"],
        "future_tolerance_ms",
        toml::Value::Integer(3 * 366 * 86_400_000),
    );
    let mut d = Daemon::new(config.clone(), dir.path.join("daemon.log"), port);
    d.start();
    d.wait_idle(&ends, &names.topic, 0, QUIET, Duration::from_secs(120));
    let clocks = |d: &Daemon| -> Vec<Value> {
        match d.get("/api/v1/cases/P-PENDING") {
            Some((200, body)) => serde_json::from_str::<Value>(&body).expect("case JSON")["clocks"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            other => d.fail(&format!("GET /api/v1/cases/P-PENDING: {other:?}")),
        }
    };
    let before = clocks(&d);
    assert_eq!(before.len(), 2, "xz.promised and xk.decision: {before:?}");
    for c in &before {
        assert_eq!(c["deadline_pending"], true, "{c}");
        assert_eq!(c["deadline"], Value::Null, "{c}");
        assert_eq!(c["state"], "running", "{c}");
    }
    let m = d.metrics().expect("/metrics");
    assert_eq!(m.sum("redlight_calendar_errors_total"), 2.0);
    assert_eq!(
        m.sum_where(
            "redlight_events_rejected_total",
            "reason",
            "no_calendar_data"
        ),
        0.0,
        "the accept is applied, not dead-lettered"
    );
    match d.get("/readyz") {
        Some((200, body)) => {
            let v: Value = serde_json::from_str(&body).expect("readyz JSON");
            assert_eq!(v["calendar_errors"], 2, "{body}");
        }
        other => d.fail(&format!("/readyz with pending deadlines: {other:?}")),
    }
    d.stop_gracefully();

    // Next year's file arrives (a weekends-only placeholder here), and the daemon restarts.
    let calendars = dir.path.join("config/calendars");
    std::fs::write(
        calendars.join(format!("{beyond}.toml")),
        format!(
            "# Written by the tests: weekends only. NOT the State Council notice.\n\
             year = {beyond}\nnotice = \"test placeholder, weekends only; not law\"\n"
        ),
    )
    .expect("writing the next year's placeholder");
    d.start();
    d.wait_ready(Duration::from_secs(60));
    let after = poll_until(
        Duration::from_secs(30),
        "the restored case's deadlines in the API",
        || {
            let c = clocks(&d);
            c.iter()
                .all(|c| c["deadline_pending"] == false)
                .then_some(c)
        },
    );
    for c in &after {
        let deadline = c["deadline"].as_str().unwrap_or_default();
        // At most five workdays are left in December: both deadlines fall in January.
        assert!(
            deadline.starts_with(&format!("{beyond}-01-")),
            "deadline computed with the new year's data: {c}"
        );
    }
    d.assert_alive("after the restart");
    d.stop_gracefully();
}
