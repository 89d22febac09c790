//! Daemon benchmark against the real local Kafka broker (SPEC issue: the daemon).
//!
//! `cargo bench --bench daemon` (add `-- --quick` for a small run, `-- --events N` for N,
//! `-- --no-restart` to skip step 4, `-- --lifecycle` for the second stream below,
//! `-- --rejected 0.1` to make that share of the messages bad, not JSON). Needs
//! a broker: it uses `REDLIGHT_TEST_KAFKA` if set, else starts one with
//! `scripts/kafka.sh start`.
//!
//! 1. Produces N CloudEvents timed over the last 30 days to a fresh 4-partition topic:
//!    - by default `approval.accepted` only, one new case each, so N open cases: the
//!      heaviest stream per event (every event makes a case and its memory, and most
//!      of them a light on the way);
//!    - with `--lifecycle`, whole approval cases as a service centre sends them:
//!      accepted, reviewed, decided, certificate issued, completed, in time order (about
//!      N/3.6 cases: those whose steps fall after now stay open, a share of them decided
//!      late). See [`lifecycle_plan`].
//!
//!    The calendar is the shipped one plus the tests' weekends-only placeholder for a year
//!    not yet published (tests/common/calendar.rs), so that the bench runs in any month.
//! 2. Reads the topic with a bare rdkafka consumer (the daemon's fetch settings): the raw
//!    read rate.
//! 3. Runs `redlight run` (release) on it and measures the rate from the first durable
//!    offset to all N offsets durable, polling `/metrics`.
//!    Also its CPU time (user and system, per event, and the loop's and the writer's
//!    threads): on a shared machine it varies less than the rate. And the alerts fired by
//!    then: how many of the cases' deadlines fall inside the run depends on the hour it runs.
//! 4. Stops it (SIGTERM), starts it again and measures the time until `/readyz` says ready
//!    with every case restored (the open ones, and the closed ones kept for
//!    `retention_days`).
//!
//! Prints figures; asserts nothing about speed. `REDLIGHT_BENCH_KEEP=1` keeps the data
//! directory, the daemon's logs and the topic (otherwise deleted at the end, and when the
//! bench panics half-way; a daemon still running then is killed);
//! `REDLIGHT_BENCH_LOG` sets the daemon's `RUST_LOG` (for example
//! `warn,redlight::daemon=info,redlight::store=debug` to log checkpoints);
//! `--librdkafka KEY=VALUE` (repeatable) sets one of the daemon's consumer settings;
//! `REDLIGHT_BENCH_BIN` runs another `redlight` binary than this build's (a copy of an
//! earlier build's, to compare two builds in alternating runs).

#[path = "../tests/common/calendar.rs"]
mod calendar;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let lifecycle = args.iter().any(|a| a == "--lifecycle");
    // `--rejected SHARE`: that share of the messages (0 to 1) is not JSON, each refused
    // and copied to the dead-letter topic (a producer gone wrong).
    let rejected: f64 = args
        .iter()
        .position(|a| a == "--rejected")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0_f64)
        .clamp(0.0, 1.0);
    // `--events N` for a run of another size.
    let n: u64 = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 20_000 } else { 1_000_000 });
    // `--librdkafka KEY=VALUE` (repeatable): a setting of the daemon's consumer, in its
    // `[kafka.librdkafka]` (the bare consumer keeps the daemon's fetch settings).
    let librdkafka: Vec<(String, String)> = args
        .windows(2)
        .filter(|w| w[0] == "--librdkafka")
        .filter_map(|w| w[1].split_once('=').map(|(k, v)| (k.into(), v.into())))
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let brokers = broker(&root);
    let stamp = std::process::id();
    let topic = format!("bench-{stamp}-{n}");
    let dir = std::env::temp_dir().join(format!("redlight-bench-{stamp}"));
    create_topic(&root, &topic);
    // Deleted at the end, and also when the bench stops half-way (a panic): a million
    // events are about 300 MiB on the broker, run after run.
    let leftovers = Leftovers {
        root: root.clone(),
        topic: topic.clone(),
        dir: dir.clone(),
        keep: std::env::var_os("REDLIGHT_BENCH_KEEP").is_some(),
    };

    // 1. Produce.
    let t = Instant::now();
    let (cases, bad) = produce(&brokers, &topic, n, lifecycle, rejected);
    let produce_s = t.elapsed().as_secs_f64();

    // 2. Raw read.
    let t = Instant::now();
    let bytes = raw_read(&brokers, &topic, n);
    let raw_s = t.elapsed().as_secs_f64();

    // 3. The daemon.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let config = write_config(&root, &dir, &brokers, &topic, port, &librdkafka);
    let mut daemon = start(&config, &dir.join("daemon-1.log"));
    let (first, done, journal) = wait_durable(port, n, &mut daemon.0);
    let daemon_s = (done - first).as_secs_f64();
    // How much firing the run held: the events' 30 days and the calendar decide how many
    // deadlines fall inside them, so it moves with the hour the bench runs at (the store
    // got 962,000 alerts in one run and 1,184,000 two hours later). Compare runs with it.
    let metrics = http_get(port, "/metrics")
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body);
    let alerts = metrics
        .as_deref()
        .map(|body| metric_sum(body, "redlight_alerts_total"));
    let dead = metrics.as_deref().map(|body| {
        (
            metric_sum(body, "redlight_dead_letters_total"),
            metric_sum(body, "redlight_dead_letters_pending"),
        )
    });
    let rss = rss_bytes(daemon.0.id());
    let cpu = cpu_seconds(daemon.0.id());
    // The cases held once every event is applied: open, or closed less than
    // `retention_days` (30) ago, so all of the stream's cases (assumed so when the figure
    // cannot be read).
    let held = http_get(port, "/metrics")
        .filter(|(status, _)| *status == 200)
        .map_or(cases, |(_, body)| {
            metric_sum(&body, "redlight_cases ") as u64
        });
    stop(&mut daemon);

    // 4. Restart with the cases held (unless `--no-restart`).
    let restart_s = (!args.iter().any(|a| a == "--no-restart")).then(|| {
        let t = Instant::now();
        let mut daemon = start(&config, &dir.join("daemon-2.log"));
        wait_ready(port, held, &mut daemon.0);
        let restart_s = t.elapsed().as_secs_f64();
        stop(&mut daemon);
        restart_s
    });

    let raw_rate = n as f64 / raw_s;
    let daemon_rate = n as f64 / daemon_s;
    println!();
    let stream = if lifecycle {
        "whole approval cases"
    } else {
        "approval.accepted"
    };
    println!(
        "daemon benchmark ({n} events of {stream}: {cases} cases, {held} held at the end; \
         topic of {PARTITIONS} partitions)"
    );
    println!(
        "produce:  {:>10.0} events/s ({produce_s:.2} s)",
        n as f64 / produce_s
    );
    println!(
        "raw read: {raw_rate:>10.0} events/s ({raw_s:.2} s, {:.1} MiB)",
        bytes as f64 / 1048576.0
    );
    if daemon_s < poll_interval(n).as_secs_f64() {
        // The first durable offsets covered them all (one group commit): nothing to time.
        println!(
            "daemon:   too few events to time: all {n} offsets became durable between two polls"
        );
    } else {
        println!(
            "daemon:   {daemon_rate:>10.0} events/s, first fetch to all offsets durable ({daemon_s:.2} s)"
        );
        println!(
            "ratio:    {:.2} of the raw read rate",
            daemon_rate / raw_rate
        );
    }
    if let Some(alerts) = alerts {
        println!(
            "work:     {alerts:.0} alerts fired by then (deadlines inside the events' 30 days: \
             the number moves with the hour of the run)"
        );
    }
    if let (true, Some((sent, pending))) = (bad > 0, dead) {
        println!(
            "rejected: {bad} messages not JSON; by then {sent:.0} in the dead-letter topic, \
             {pending:.0} waiting in the store"
        );
    }
    if let Some(cpu) = &cpu {
        // CPU per event varies less than the rate on a shared machine: compare these.
        let (lp, wr) = (cpu.thread("redlight"), cpu.thread("redlight-store-"));
        println!(
            "cpu:      {:.1} s user + {:.1} s system = {:.1} µs per event (consumer loop {lp:.1} s, \
             store writer {wr:.1} s, the rest {:.1} s: checkpoints, librdkafka, HTTP)",
            cpu.user,
            cpu.system,
            (cpu.user + cpu.system) * 1e6 / n as f64,
            cpu.user + cpu.system - lp - wr,
        );
        // The rest by thread name (threads of one name summed), largest first.
        let mut rest: Vec<(String, f64, f64)> = Vec::new();
        for (name, user, system, _) in &cpu.threads {
            if name == "redlight" || name == "redlight-store-" {
                continue;
            }
            match rest.iter_mut().find(|(n, _, _)| n == name) {
                Some(r) => {
                    r.1 += user;
                    r.2 += system;
                }
                None => rest.push((name.clone(), *user, *system)),
            }
        }
        rest.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)));
        let rest: Vec<String> = rest
            .iter()
            .filter(|(_, u, s)| u + s >= 0.05)
            .map(|(n, u, s)| format!("{n} {u:.1}+{s:.1}"))
            .collect();
        println!(
            "the rest: {} (user+system s; threads already gone not listed)",
            rest.join(", ")
        );
        // The loop is the daemon's critical path: time it spent ready to run while the
        // other threads held both cores is time the rate lost to them.
        println!(
            "waiting:  consumer loop {:.1} s and store writer {:.1} s ready to run but waiting \
             for a core",
            cpu.waited("redlight"),
            cpu.waited("redlight-store-"),
        );
    }
    println!(
        "memory:   {:.0} bytes of daemon RSS per case held ({:.0} MiB)",
        rss as f64 / held.max(1) as f64,
        rss as f64 / 1048576.0
    );
    println!(
        "journal:  at most {:.0} MiB in memory, at {:.0} entries ({:.0} bytes each; \
         sampled as the bench polls)",
        journal.0 / 1048576.0,
        journal.1,
        journal.0 / journal.1.max(1.0)
    );
    if let Some(restart_s) = restart_s {
        println!(
            "restart:  ready with {held} cases in {restart_s:.2} s (process start to /readyz 200)"
        );
    }
    if leftovers.keep {
        println!(
            "kept:     {} (logs daemon-1.log, daemon-2.log)",
            dir.display()
        );
    }
}

/// What a run leaves: its topic (and dead-letter topic) on the broker and its data
/// directory, removed when dropped unless `REDLIGHT_BENCH_KEEP` is set.
struct Leftovers {
    root: PathBuf,
    topic: String,
    dir: PathBuf,
    keep: bool,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        for t in [self.topic.clone(), format!("{}.dead-letter", self.topic)] {
            let _ = Command::new(self.root.join("scripts/kafka.sh"))
                .args(["delete-topic", &t])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A running daemon, killed if the bench stops before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn broker(root: &Path) -> String {
    if let Ok(b) = std::env::var("REDLIGHT_TEST_KAFKA") {
        return b;
    }
    let script = root.join("scripts/kafka.sh");
    let status = Command::new(&script)
        .arg("start")
        .status()
        .expect("kafka.sh");
    assert!(status.success(), "scripts/kafka.sh start failed");
    let out = Command::new(&script)
        .arg("bootstrap")
        .output()
        .expect("kafka.sh");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn create_topic(root: &Path, topic: &str) {
    let status = Command::new(root.join("scripts/kafka.sh"))
        .args(["topic", topic, &PARTITIONS.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("kafka.sh topic");
    assert!(status.success(), "creating topic {topic}");
}

/// Produces the stream (see the module's comment); returns how many cases it holds.
/// Produces the stream; returns how many cases it opens and how many messages are bad
/// (`rejected`: the share of messages sent without their first byte, so not JSON).
fn produce(brokers: &str, topic: &str, n: u64, lifecycle: bool, rejected: f64) -> (u64, u64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .expect("producer");
    let span_s: i64 = 30 * 86_400;
    let now = chrono::Utc::now().fixed_offset();
    let start = now - chrono::Duration::seconds(span_s);
    let plan = if lifecycle {
        lifecycle_plan(n, span_s - 60)
    } else {
        // Times spread over the 30 days before now, one new case per event, with promised
        // limits of 5 to 19 workdays: most cases are open and green at the end, a share
        // has turned yellow or red on the way (as in a service centre's live backlog), and
        // the restart holds N open cases without a catch-up storm.
        (0..n)
            .map(|i| Step {
                t: (i as i64 * span_s) / n as i64,
                case: i,
                kind: Kind::Accepted,
            })
            .collect()
    };
    let cases = plan.iter().filter(|s| s.kind == Kind::Accepted).count() as u64;
    let mut bad = 0;
    for (i, step) in plan.iter().enumerate() {
        let time = start + chrono::Duration::seconds(step.t);
        let subject = format!("BENCH-{:08}", step.case);
        let mut payload = step.payload(&subject, &time.to_rfc3339());
        // Spread evenly: message i is bad when the share's running count steps up at it.
        if ((i + 1) as f64 * rejected).floor() > (i as f64 * rejected).floor() {
            payload.remove(0);
            bad += 1;
        }
        let mut record = BaseRecord::to(topic).key(&subject).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    record = r;
                    if !matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        panic!("produce: {e}");
                    }
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        if step.case % 10_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    (cases, bad)
}

/// One event of the stream: when (seconds into its 30 days), of which case, of what type.
struct Step {
    t: i64,
    case: u64,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Accepted,
    Reviewed,
    Decided,
    Certificate,
    Completed,
}

const DEPARTMENTS: [&str; 5] = [
    "市住建局",
    "市市场监管局",
    "市自然资源局",
    "市交通局",
    "市卫健委",
];

/// A case's promised limit: 5 to 19 workdays.
fn promised(case: u64) -> u64 {
    5 + case % 15
}

impl Step {
    /// The CloudEvent, as a producer would send it.
    fn payload(&self, subject: &str, time: &str) -> String {
        let i = self.case;
        let (kind, data) = match self.kind {
            Kind::Accepted => (
                "accepted",
                format!(
                    r#"{{"department":"{}","item":"建筑工程施工许可","handler":"张{}","kind":"promised","promised_workdays":{}}}"#,
                    DEPARTMENTS[(i % 5) as usize],
                    i % 97,
                    promised(i)
                ),
            ),
            Kind::Reviewed => ("reviewed", format!(r#"{{"handler":"李{}"}}"#, i % 89)),
            Kind::Decided => ("decided", r#"{"outcome":"approved"}"#.to_string()),
            Kind::Certificate => (
                "certificate_issued",
                format!(r#"{{"certificate_no":"XK-{i:08}"}}"#),
            ),
            Kind::Completed => ("completed", "{}".to_string()),
        };
        // The accepted events keep the ids of the default stream.
        let id = match self.kind {
            Kind::Accepted => format!("b-{i}"),
            _ => format!("b-{i}-{kind}"),
        };
        format!(
            concat!(
                r#"{{"specversion":"1.0","id":"{}","source":"/bench","type":"approval.{}","#,
                r#""time":"{}","subject":"{}","datacontenttype":"application/json","data":{}}}"#
            ),
            id, kind, time, subject, data
        )
    }
}

/// `n` events of whole approval cases, in time order: each case accepted at a time spread
/// over the first `end` seconds of the stream's 30 days, reviewed after 10–35% of its
/// promised time (1.45 calendar days per workday), decided after 40–90% of it (one in
/// eight late: after 105–160%), its certificate issued and the case completed within the
/// next tenth. Steps after `end` are
/// not sent: those cases stay open, as a live backlog's do. Cases are added until there
/// are `n` events; the surplus of the last ones goes from the end, the latest in time.
fn lifecycle_plan(n: u64, end: i64) -> Vec<Step> {
    // splitmix64: the same stream on every run.
    let mut state = 0x5EED_u64;
    let mut rand = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    };
    let mut plan = Vec::with_capacity(n as usize + 5);
    let mut case = 0u64;
    while (plan.len() as u64) < n {
        let a = (end as f64 * rand()) as i64;
        let span = promised(case) as f64 * 1.45 * 86_400.0;
        let at = |share: f64| a + (share * span) as i64;
        let decided = if rand() < 0.125 {
            at(1.05 + 0.55 * rand())
        } else {
            at(0.4 + 0.5 * rand())
        };
        let certificate = decided + (0.05 * span * rand()) as i64 + 60;
        let steps = [
            (a, Kind::Accepted),
            (at(0.1 + 0.25 * rand()), Kind::Reviewed),
            (decided, Kind::Decided),
            (certificate, Kind::Certificate),
            (
                certificate + (0.05 * span * rand()) as i64 + 60,
                Kind::Completed,
            ),
        ];
        plan.extend(
            steps
                .into_iter()
                .filter(|&(t, _)| t < end)
                .map(|(t, kind)| Step { t, case, kind }),
        );
        case += 1;
    }
    // Time order; a case's steps in their order where two fall in the same second.
    plan.sort_by_key(|s| (s.t, s.case, s.kind));
    plan.truncate(n as usize);
    plan
}

fn raw_read(brokers: &str, topic: &str, n: u64) -> u64 {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("raw-{topic}"))
        .set("enable.auto.commit", "false");
    // The daemon's fetch settings: with librdkafka's own (1 MiB a fetch, a full queue
    // looked at again after 1 s) this loop read 404,290–946,937 events/s from run to run,
    // as it happened to meet the 1 s pause or not, and the ratio below went up to 0.55 on
    // a slow read.
    for (key, value) in redlight::daemon::FETCH_SETTINGS {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let (mut count, mut bytes) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(600);
    while count < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            count += 1;
            bytes += rdkafka::Message::payload(&m).map_or(0, |p| p.len() as u64);
        }
    }
    assert_eq!(count, n, "raw consumer read everything");
    bytes
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn write_config(
    root: &Path,
    dir: &Path,
    brokers: &str,
    topic: &str,
    port: u16,
    librdkafka: &[(String, String)],
) -> PathBuf {
    let cfg = root.join("config");
    let text = format!(
        r#"[engine]
timezone = "Asia/Shanghai"
calendars = "{cal}"
rule_packs = [{packs}]

[kafka]
brokers = "{brokers}"
group_id = "bench-{topic}"
topics = ["{topic}"]
dead_letter_topic = "{topic}.dead-letter"

[store]
data_dir = "{data}"

[http]
listen = "127.0.0.1:{port}"
"#,
        cal = calendar::calendars_for_now(dir).display(),
        packs = ["xk", "xz", "nx", "aq", "hz"]
            .iter()
            .map(|p| format!("\"{}\"", cfg.join(format!("rules/{p}.toml")).display()))
            .collect::<Vec<_>>()
            .join(", "),
        data = dir.join("data").display(),
    );
    let mut text = text;
    if !librdkafka.is_empty() {
        text.push_str("\n[kafka.librdkafka]\n");
        for (key, value) in librdkafka {
            text.push_str(&format!("{key:?} = {value:?}\n"));
        }
    }
    let path = dir.join("redlight.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn start(config: &Path, log: &Path) -> Running {
    let log = std::fs::File::create(log).expect("log");
    let bin = std::env::var_os("REDLIGHT_BENCH_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_redlight").into());
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("REDLIGHT_BENCH_LOG")
                .unwrap_or_else(|_| "warn,redlight::daemon=info".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start redlight");
    Running(child)
}

fn stop(daemon: &mut Running) {
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status();
    let _ = daemon.0.wait();
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How often the bench asks the daemon for its figures while it works: every 100 ms for a
/// run of 200,000 events or more (within 1% of a run of 10 s, and a fifth of the scrapes
/// that polling every 20 ms cost the daemon, each rendering `/metrics` in 0.5–0.9 ms of its
/// CPU, on the cores it is measured on); every 20 ms for a smaller run, over in a second.
fn poll_interval(n: u64) -> Duration {
    Duration::from_millis(if n >= 200_000 { 100 } else { 20 })
}

/// Waits until `n` offsets are durable; returns when the first and the last became so, and
/// the largest memory the store's journal was seen to hold (`redlight_store_journal_bytes`)
/// with its entries at that moment.
fn wait_durable(port: u16, n: u64, child: &mut Child) -> (Instant, Instant, (f64, f64)) {
    let mut first = None;
    let mut peak = (0.0, 0.0);
    let deadline = Instant::now() + Duration::from_secs(1800);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("redlight exited early: {status}");
        }
        if let Some((200, body)) = http_get(port, "/metrics") {
            let durable = metric_sum(&body, "redlight_durable_offset");
            if durable > 0.0 && first.is_none() {
                first = Some(Instant::now());
            }
            let journal = metric_sum(&body, "redlight_store_journal_bytes");
            if journal > peak.0 {
                peak = (journal, metric_sum(&body, "redlight_store_journal_entries"));
            }
            if durable as u64 >= n {
                return (first.unwrap_or_else(Instant::now), Instant::now(), peak);
            }
        }
        std::thread::sleep(poll_interval(n));
    }
    panic!("the daemon did not make {n} offsets durable in time");
}

fn wait_ready(port: u16, n: u64, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("redlight exited early: {status}");
        }
        if let Some((200, _)) = http_get(port, "/readyz")
            && let Some((200, body)) = http_get(port, "/metrics")
            && metric_sum(&body, "redlight_cases ") as u64 >= n
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the daemon was not ready in time");
}

/// A process's CPU time so far (its finished threads included) and its live threads' by name.
struct Cpu {
    user: f64,
    system: f64,
    /// Each live thread: its name, user and system CPU seconds, and seconds it was ready to
    /// run but waited for a core (`/proc/…/schedstat`; 0 where the kernel does not keep it).
    threads: Vec<(String, f64, f64, f64)>,
}

impl Cpu {
    /// User and system seconds of the live threads named `name` (Linux cuts names to 15 bytes).
    fn thread(&self, name: &str) -> f64 {
        self.threads
            .iter()
            .filter(|(n, _, _, _)| n == name)
            .map(|(_, u, s, _)| u + s)
            .sum()
    }

    /// Seconds the live threads named `name` waited for a core while ready to run.
    fn waited(&self, name: &str) -> f64 {
        self.threads
            .iter()
            .filter(|(n, _, _, _)| n == name)
            .map(|(_, _, _, w)| w)
            .sum()
    }
}

/// Utime and stime of `/proc/<pid>/stat` (or a task's), in seconds.
fn stat_seconds(stat: &str) -> Option<(f64, f64)> {
    // The fields after the parenthesised name; utime and stime are the 14th and 15th.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf only reads a system constant.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((
        f.get(11)?.parse::<f64>().ok()? / tick,
        f.get(12)?.parse::<f64>().ok()? / tick,
    ))
}

fn cpu_seconds(pid: u32) -> Option<Cpu> {
    let (user, system) = stat_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if let Some((u, s)) = std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|s| stat_seconds(&s))
        {
            // schedstat: nanoseconds on a core, nanoseconds waiting on a run queue, slices.
            let waited = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
                .map_or(0.0, |ns| ns / 1e9);
            threads.push((name.trim().to_string(), u, s, waited));
        }
    }
    Some(Cpu {
        user,
        system,
        threads,
    })
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
