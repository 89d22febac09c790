//! The harness of the end-to-end tests: the shared broker, the daemon as a child process,
//! a minimal HTTP client for its API, a Kafka producer, and `redlight replay` in-process.

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use redlight::cli;
use redlight::config::Config;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::{Read, Seek, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The four tests share one broker and one of them stops it: one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The broker of this test binary.
pub struct Broker {
    pub bootstrap: String,
    /// The `KAFKA_PORT` that `scripts/kafka.sh` manages it under.
    pub port: u16,
}

pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        let bootstrap = match std::env::var("REDLIGHT_TEST_KAFKA") {
            Ok(b) if !b.trim().is_empty() => b.trim().to_string(),
            _ => {
                let t = Instant::now();
                let out = kafka_sh(None, &["start"]);
                assert!(
                    out.status.success(),
                    "scripts/kafka.sh start failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                eprintln!("[e2e] broker started in {:.1}s", t.elapsed().as_secs_f64());
                let out = kafka_sh(None, &["bootstrap"]);
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
        };
        let port = bootstrap
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("cannot read a port from the bootstrap {bootstrap:?}"));
        eprintln!("[e2e] broker {bootstrap}");
        Broker { bootstrap, port }
    })
}

/// Runs `scripts/kafka.sh ARGS` (for the broker on `port`, else the environment's).
pub fn kafka_sh(port: Option<u16>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(root().join("scripts/kafka.sh"));
    cmd.args(args).stdin(Stdio::null());
    if let Some(p) = port {
        cmd.env("KAFKA_PORT", p.to_string());
    }
    // A loaded 2-core machine can take longer than the script's default minute to bring
    // the broker up (JVM start plus replaying the metadata log).
    if std::env::var_os("KAFKA_START_TIMEOUT").is_none() {
        cmd.env("KAFKA_START_TIMEOUT", "240");
    }
    cmd.output().expect("running scripts/kafka.sh")
}

/// What `scripts/kafka.sh WHAT` prints for the broker on `port` (trimmed), which must
/// succeed: `tls-bootstrap`, `tls-ca`, `gssapi-bootstrap`, `kerberos`.
pub fn kafka_sh_says(port: u16, what: &str) -> String {
    let out = kafka_sh(Some(port), &[what]);
    assert!(
        out.status.success(),
        "scripts/kafka.sh {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A tokio runtime for the rdkafka futures.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An admin client of the broker at `bootstrap`.
pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

/// Creates the topics (name, partitions) and waits until their metadata shows them.
pub fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) {
    let admin = admin(bootstrap);
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, parts)| NewTopic::new(name, *parts, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = runtime()
        .block_on(admin.create_topics(&new, &opts))
        .expect("create_topics");
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => panic!("creating topic {name}: {code:?}"),
        }
    }
    for (name, parts) in topics {
        wait_partitions(bootstrap, name, *parts as usize);
    }
}

/// Waits until the metadata of `topic` shows `parts` partitions, each with a leader.
fn wait_partitions(bootstrap: &str, topic: &str, parts: usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("metadata consumer");
    poll_until(
        Duration::from_secs(30),
        &format!("{parts} partitions of {topic}"),
        || {
            let md = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .ok()?;
            let t = md.topics().iter().find(|t| t.name() == topic)?;
            (t.error().is_none()
                && t.partitions().len() == parts
                && t.partitions().iter().all(|p| p.leader() >= 0))
            .then_some(())
        },
    );
}

/// Adds partitions to `topic` (`kafka-topics.sh --alter --partitions`) until it has
/// `total`, and waits until its metadata shows them led.
pub fn add_partitions(bootstrap: &str, topic: &str, total: usize) {
    let admin = admin(bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = runtime()
        .block_on(admin.create_partitions(&[NewPartitions::new(topic, total)], &opts))
        .expect("create_partitions");
    for r in results {
        if let Err((name, code)) = r {
            panic!("adding partitions to {name}: {code:?}");
        }
    }
    wait_partitions(bootstrap, topic, total);
}

/// The topics of one test, deleted when it ends (pass or fail) to keep the shared broker
/// small.
pub struct Topics {
    bootstrap: String,
    names: Vec<String>,
}

impl Topics {
    pub fn create(bootstrap: &str, topics: &[(&str, i32)]) -> Topics {
        create_topics(bootstrap, topics);
        Topics {
            bootstrap: bootstrap.to_string(),
            names: topics.iter().map(|(n, _)| n.to_string()).collect(),
        }
    }
}

impl Drop for Topics {
    fn drop(&mut self) {
        let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create();
        let Ok(admin) = admin else { return };
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let rt = runtime();
        let result = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), admin.delete_topics(&names, &opts)).await
        });
        if !matches!(result, Ok(Ok(_))) {
            eprintln!("[e2e] could not delete the topics {names:?}: {result:?}");
        }
    }
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn poll_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A message to produce: key and payload (either may be absent), and headers.
#[derive(Clone, Debug, Default)]
pub struct Msg {
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl Msg {
    pub fn event(key: &str, line: &str) -> Msg {
        Msg {
            key: Some(key.to_string()),
            payload: Some(line.as_bytes().to_vec()),
            headers: Vec::new(),
        }
    }
}

/// Where a message landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landed {
    pub partition: i32,
    pub offset: i64,
}

/// A producer that keeps each partition in order (idempotent) and reports where every
/// message landed.
pub struct Producer {
    inner: FutureProducer,
    rt: tokio::runtime::Runtime,
}

impl Producer {
    pub fn new(bootstrap: &str) -> Producer {
        Producer::compressing(bootstrap, "none")
    }

    /// A producer that compresses its batches with `codec` (librdkafka's
    /// `compression.codec`: none, gzip, snappy, lz4, zstd).
    pub fn compressing(bootstrap: &str, codec: &str) -> Producer {
        let inner: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("compression.codec", codec)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "180000")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .expect("producer");
        Producer {
            inner,
            rt: runtime(),
        }
    }

    /// Enqueues the messages in order; the returned futures resolve on delivery.
    pub fn enqueue(&self, topic: &str, msgs: &[Msg]) -> Vec<rdkafka::producer::DeliveryFuture> {
        let mut futures = Vec::with_capacity(msgs.len());
        for m in msgs {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
            if let Some(k) = &m.key {
                record = record.key(k.as_bytes());
            }
            if let Some(p) = &m.payload {
                record = record.payload(p.as_slice());
            }
            if !m.headers.is_empty() {
                let mut headers = rdkafka::message::OwnedHeaders::new();
                for (key, value) in &m.headers {
                    headers = headers.insert(rdkafka::message::Header {
                        key: key.as_str(),
                        value: Some(value.as_str()),
                    });
                }
                record = record.headers(headers);
            }
            loop {
                match self.inner.send_result(record) {
                    Ok(f) => {
                        futures.push(f);
                        break;
                    }
                    Err((e, r)) => {
                        assert_eq!(
                            e.rdkafka_error_code(),
                            Some(RDKafkaErrorCode::QueueFull),
                            "produce to {topic}: {e}"
                        );
                        record = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        futures
    }

    /// Waits for the deliveries, in order.
    pub fn delivered(&self, futures: Vec<rdkafka::producer::DeliveryFuture>) -> Vec<Landed> {
        self.rt.block_on(async {
            let mut out = Vec::with_capacity(futures.len());
            for f in futures {
                match f.await {
                    Ok(Ok(d)) => out.push(Landed {
                        partition: d.partition,
                        offset: d.offset,
                    }),
                    Ok(Err((e, _))) => panic!("delivery failed: {e}"),
                    Err(_) => panic!("delivery future cancelled"),
                }
            }
            out
        })
    }

    pub fn send_all(&self, topic: &str, msgs: &[Msg]) -> Vec<Landed> {
        let f = self.enqueue(topic, msgs);
        self.delivered(f)
    }
}

/// Sets one setting of a topic (`kafka-configs --alter`), as the broker then applies it.
pub fn set_topic_config(bootstrap: &str, topic: &str, key: &str, value: &str) {
    set_topic_configs(bootstrap, topic, &[(key, value)]);
}

/// Sets several of a topic's settings in one request (`alter_configs` sets the others back
/// to their defaults, so settings wanted together go together).
pub fn set_topic_configs(bootstrap: &str, topic: &str, settings: &[(&str, &str)]) {
    let admin = admin(bootstrap);
    let config = settings.iter().fold(
        AlterConfig::new(ResourceSpecifier::Topic(topic)),
        |c, (k, v)| c.set(k, v),
    );
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = runtime()
        .block_on(admin.alter_configs(&[config], &opts))
        .expect("alter_configs");
    for r in results {
        if let Err((resource, code)) = r {
            panic!("setting {settings:?} of {resource:?}: {code:?}");
        }
    }
}

/// Deletes a partition's records before `offset` (`kafka-delete-records`), as retention or
/// an operator would: the log then begins there.
pub fn delete_records_before(bootstrap: &str, topic: &str, partition: i32, offset: i64) {
    let admin = admin(bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .expect("tpl");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let deleted = runtime()
        .block_on(admin.delete_records(&tpl, &opts))
        .expect("delete_records");
    assert_eq!(
        deleted.find_partition(topic, partition).map(|p| p.offset()),
        Some(Offset::Offset(offset)),
        "the log begins after the deleted records"
    );
}

/// Damages, on the local broker's disk, the first batch of `topic`'s `partition` that is
/// compressed with gzip: 16 bytes in the middle of its compressed records are inverted,
/// as a failing disk might (the broker checks what producers send, not what it serves).
/// Returns the batch's first and last offsets, or `None` when the broker's files are not
/// here (a broker elsewhere, `REDLIGHT_TEST_KAFKA`).
pub fn damage_gzip_batch(port: u16, topic: &str, partition: i32) -> Option<(i64, i64)> {
    let env = String::from_utf8_lossy(&kafka_sh(Some(port), &["env"]).stdout).into_owned();
    let data = env.lines().find_map(|l| l.strip_prefix("KAFKA_DATA="))?;
    let dir = Path::new(data)
        .join("logs")
        .join(format!("{topic}-{partition}"));
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    for segment in segments {
        let mut bytes = std::fs::read(&segment).expect("reading a segment");
        let mut pos = 0;
        // Record batch v2: base offset (8), length (4), leader epoch (4), magic (1), CRC (4),
        // attributes (2), last offset delta (4), … 61 bytes before the records.
        while pos + 61 <= bytes.len() {
            let at = |i: usize, n: usize| -> i64 {
                bytes[pos + i..pos + i + n]
                    .iter()
                    .fold(0i64, |v, b| (v << 8) | i64::from(*b))
            };
            let (base, length) = (at(0, 8), at(8, 4) as usize);
            let (attributes, last_delta) = (at(21, 2), at(23, 4));
            let end = pos + 12 + length;
            if attributes & 7 == 1 {
                let middle = pos + 61 + (end - pos - 61) / 2;
                for b in &mut bytes[middle..(middle + 16).min(end)] {
                    *b ^= 0xff;
                }
                let mut f = OpenOptions::new()
                    .write(true)
                    .open(&segment)
                    .expect("opening the segment");
                f.seek(std::io::SeekFrom::Start(middle as u64))
                    .expect("seek");
                f.write_all(&bytes[middle..(middle + 16).min(end)])
                    .expect("damaging the segment");
                return Some((base, base + last_delta));
            }
            pos = end;
        }
    }
    panic!("no gzip batch in {}", dir.display());
}

/// A record read back from a topic: its headers in order, key and payload.
pub struct Record {
    pub headers: Vec<(String, String)>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

impl Record {
    /// The value of header `key` (the first, if repeated).
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads `topic` (partition 0) from the beginning until it has given at least `expected`
/// records and nothing more for two seconds, or `timeout` has passed.
pub fn read_topic(bootstrap: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
    use rdkafka::Message as _;
    use rdkafka::message::Headers as _;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}.reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("topic reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            if out.len() >= expected && quiet_since.elapsed() > Duration::from_secs(2) {
                break;
            }
            continue;
        };
        quiet_since = Instant::now();
        let m = m.unwrap_or_else(|e| panic!("reading {topic}: {e}"));
        let headers = m.headers().map_or_else(Vec::new, |hs| {
            hs.iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                    (h.key.to_string(), value.into_owned())
                })
                .collect()
        });
        out.push(Record {
            headers,
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
        });
    }
    out
}

/// The end offset of every partition the messages landed in (the next offset to consume).
pub fn end_offsets(landed: &[Landed]) -> BTreeMap<i32, i64> {
    let mut m = BTreeMap::new();
    for l in landed {
        let e = m.entry(l.partition).or_insert(0);
        *e = (*e).max(l.offset + 1);
    }
    m
}

/// A temporary directory for one test, removed when the test passes (kept when it fails,
/// or always with `REDLIGHT_E2E_KEEP=1`).
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let path = std::env::temp_dir().join(format!("redlight-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating the test's temp dir");
        TestDir { path }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("REDLIGHT_E2E_KEEP").is_some() {
            eprintln!("[e2e] kept {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

pub use crate::ports::free_port;

/// The names one test uses.
pub struct Names {
    pub topic: String,
    pub dead_letter: String,
    pub group: String,
}

impl Names {
    pub fn new(test: &str) -> Names {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let base = format!("e2e-{test}-{}-{stamp}", std::process::id());
        Names {
            topic: format!("{base}.events"),
            dead_letter: format!("{base}.dead-letter"),
            group: format!("{base}.group"),
        }
    }
}

/// Writes the daemon's configuration: `config/redlight.toml` as shipped (engine settings,
/// batch and idle settings) with this test's own Kafka names, data directory and HTTP port.
/// The calendars and rule packs are copied into the test's directory first and named by
/// absolute path (the calendars with placeholders for years not yet published): the daemon reads them again whenever partitions are assigned, and the
/// files in the repository may be edited while a test runs.
pub fn write_config(dir: &Path, bootstrap: &str, names: &Names, port: u16) -> PathBuf {
    let shipped = root().join("config/redlight.toml");
    let text = std::fs::read_to_string(&shipped).expect("reading config/redlight.toml");
    let mut doc: toml::Table = toml::from_str(&text).expect("config/redlight.toml is TOML");
    let base = shipped.parent().expect("config dir").to_path_buf();
    let snapshot = dir.join("config");
    let copy = |rel: &str| -> String {
        let (from, to) = (base.join(rel), snapshot.join(rel));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("snapshot dir");
        if from.is_dir() {
            std::fs::create_dir_all(&to).expect("snapshot dir");
            for e in std::fs::read_dir(&from).expect("reading a config folder") {
                let e = e.expect("dir entry");
                if e.path().is_file() {
                    std::fs::copy(e.path(), to.join(e.file_name())).expect("copying config");
                }
            }
        } else {
            std::fs::copy(&from, &to).expect("copying a rule pack");
        }
        to.display().to_string()
    };
    let engine = doc
        .get_mut("engine")
        .and_then(toml::Value::as_table_mut)
        .expect("[engine]");
    // The shipped calendar plus weekends-only placeholders up to next year (see
    // tests/common/calendar.rs): the daemon runs on the wall clock once caught up, and
    // `/readyz` needs today covered, whatever year the tests run in.
    engine.insert(
        "calendars".into(),
        crate::calendar::calendars_for_now(&snapshot)
            .display()
            .to_string()
            .into(),
    );
    let packs: Vec<toml::Value> = engine
        .get("rule_packs")
        .and_then(toml::Value::as_array)
        .expect("engine.rule_packs")
        .iter()
        .map(|p| copy(p.as_str().expect("a rule pack path")).into())
        .collect();
    engine.insert("rule_packs".into(), toml::Value::Array(packs));
    let kafka = doc
        .entry("kafka")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("[kafka]");
    kafka.insert("brokers".into(), bootstrap.into());
    kafka.insert("group_id".into(), names.group.as_str().into());
    kafka.insert(
        "topics".into(),
        toml::Value::Array(vec![names.topic.as_str().into()]),
    );
    kafka.insert(
        "dead_letter_topic".into(),
        names.dead_letter.as_str().into(),
    );
    let mut set = |table: &str, key: &str, value: toml::Value| {
        doc.entry(table)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("[{table}] is a table"))
            .insert(key.into(), value);
    };
    set(
        "store",
        "data_dir",
        dir.join("data").display().to_string().into(),
    );
    // Small catch-up slices, so that the tests go through many slice boundaries (and the
    // kill -9 test kills between them): the default of 20,000 would never split here.
    set("store", "timers_per_commit", toml::Value::Integer(100));
    // Group commit with a wide window (the default is 200 ms): a kill -9 undoes more lazily
    // committed batches, which must then be consumed and applied again with no effect lost
    // or doubled.
    set("store", "sync_ms", toml::Value::Integer(500));
    // Checkpoints every 2,500 journal entries (the default is 200,000): the tests' few
    // thousand cases then go through many checkpoints, and the kill -9 test kills both with
    // a journal to read back and right after checkpoints.
    set("store", "checkpoint_cases", toml::Value::Integer(2500));
    set("http", "listen", format!("127.0.0.1:{port}").into());
    let path = dir.join("redlight.toml");
    std::fs::write(&path, toml::to_string(&doc).expect("config TOML")).expect("writing config");
    path
}

/// Sets `[kafka.librdkafka]` `key = value` in a configuration written by [`write_config`].
pub fn set_librdkafka(config: &Path, key: &str, value: &str) {
    set_config(config, &["kafka", "librdkafka"], key, value.into());
}

/// Sets `key = value` in the table at `path` (created if missing) of a configuration
/// written by [`write_config`].
pub fn set_config(config: &Path, path: &[&str], key: &str, value: toml::Value) {
    let text = std::fs::read_to_string(config).expect("reading the test config");
    let mut doc: toml::Table = toml::from_str(&text).expect("the test config is TOML");
    let mut table = &mut doc;
    for name in path {
        table = table
            .entry(*name)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("[{name}] is a table"));
    }
    table.insert(key.into(), value);
    std::fs::write(config, toml::to_string(&doc).expect("config TOML")).expect("writing config");
}

/// `redlight run` as a child process; killed (SIGKILL) when dropped.
pub struct Daemon {
    pub config: PathBuf,
    pub log: PathBuf,
    pub port: u16,
    /// Environment variables the daemon starts with (overrides of the configuration).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    pub fn new(config: PathBuf, log: PathBuf, port: u16) -> Daemon {
        Daemon {
            config,
            log,
            port,
            env: Vec::new(),
            child: None,
            starts: 0,
        }
    }

    /// Starts the daemon; its stderr is appended to the log file.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the daemon is already running");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the daemon log");
        writeln!(log, "==== e2e: daemon start #{} ====", self.starts).expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_redlight"));
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Our configuration file is the whole truth: no overrides from the environment,
        // but those the test sets.
        for (k, _) in std::env::vars() {
            if k.starts_with("REDLIGHT_") && k.contains("__") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        self.child = Some(cmd.spawn().expect("starting redlight run"));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Panics (with the log) when the daemon has exited.
    pub fn assert_alive(&mut self, when: &str) {
        let status = match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait"),
            None => self.fail(&format!("{when}: the daemon is not running")),
        };
        if let Some(status) = status {
            self.child = None;
            self.fail(&format!("{when}: the daemon exited by itself: {status}"));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            let _ = c.wait();
        }
    }

    /// SIGTERM; the exit status, or a failure after `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.pid();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + timeout;
        loop {
            let done = self
                .child
                .as_mut()
                .expect("a running daemon")
                .try_wait()
                .expect("try_wait");
            if let Some(status) = done {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "the daemon did not exit within {timeout:?} of SIGTERM"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the daemon to exit by itself; its status, or `None` after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let child = self.child.as_mut().expect("a running daemon");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// SIGTERM and insist on a clean exit 0.
    pub fn stop_gracefully(&mut self) {
        let t = Instant::now();
        let status = self.terminate(Duration::from_secs(10));
        if !status.success() {
            self.fail(&format!("after SIGTERM the daemon exited with {status}"));
        }
        eprintln!(
            "[e2e] daemon stopped by SIGTERM in {:.2}s, exit 0",
            t.elapsed().as_secs_f64()
        );
    }

    /// The log lines of the current (latest) start that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let marker = format!("==== e2e: daemon start #{} ====", self.starts);
        let from = text.find(&marker).unwrap_or(0);
        text[from..]
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// The end of the log plus its last warnings and errors.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let problems: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("==== e2e"))
            .collect();
        let tail = |v: &[&str], n: usize| v[v.len().saturating_sub(n)..].join("\n");
        format!(
            "---- daemon log {} ----\n-- last warnings/errors/starts:\n{}\n-- last lines:\n{}\n----",
            self.log.display(),
            tail(&problems, 40),
            tail(&lines, 40)
        )
    }

    /// Fails the test with the daemon's log.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{}", self.log_tail());
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    pub fn metrics(&self) -> Option<Metrics> {
        match self.get("/metrics") {
            Some((200, body)) => Some(Metrics::parse(&body)),
            _ => None,
        }
    }

    /// Waits until `/readyz` says ready (partitions assigned).
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_alive("waiting for /readyz");
            if let Some((200, _)) = self.get("/readyz") {
                return;
            }
            if Instant::now() >= deadline {
                let last = self.get("/readyz");
                self.fail(&format!(
                    "/readyz not ready within {timeout:?}; last answer {last:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every alert in the store, in sequence order, paging with `after`.
    pub fn alerts(&self) -> Vec<(u64, Value)> {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let asked = after;
            let path = format!("/api/v1/alerts?after={after}&limit=5000");
            let body = match self.get(&path) {
                Some((200, body)) => body,
                other => self.fail(&format!("GET {path}: {other:?}")),
            };
            let v: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| self.fail(&format!("GET {path}: not JSON: {e}")));
            let items = v["alerts"].as_array().cloned().unwrap_or_default();
            let Some(next) = v["next"].as_u64() else {
                self.fail(&format!("GET {path}: no `next` in {body:.200}"));
            };
            for it in items {
                let seq = it["seq"].as_u64().expect("seq");
                assert!(
                    seq > after && seq <= next,
                    "alert sequence numbers grow: {seq} after {after}, next {next}"
                );
                out.push((seq, it["alert"].clone()));
                after = seq;
            }
            if next == asked {
                return out; // no progress: the end
            }
            after = next;
        }
    }

    /// Counts the alerts stored after `seq`: returns the new last sequence number and how
    /// many alerts came after `seq`.
    fn count_after(&self, seq: u64) -> Option<(u64, usize)> {
        let (mut after, mut n) = (seq, 0usize);
        loop {
            let (code, body) = self.get(&format!("/api/v1/alerts?after={after}&limit=10000"))?;
            if code != 200 {
                return None;
            }
            let v: Value = serde_json::from_str(&body).ok()?;
            n += v["alerts"].as_array().map_or(0, Vec::len);
            let next = v["next"].as_u64()?;
            if next == after {
                return Some((after, n));
            }
            after = next;
        }
    }

    /// Waits until every offset up to `ends` of `topic` is durable (`/metrics`, asked
    /// every `every`), failing with the daemon's log after `timeout`; returns the durable
    /// offsets.
    pub fn wait_durable(
        &mut self,
        ends: &BTreeMap<i32, i64>,
        topic: &str,
        timeout: Duration,
        every: Duration,
    ) -> BTreeMap<i32, i64> {
        let deadline = Instant::now() + timeout;
        let mut durable = BTreeMap::new();
        loop {
            self.assert_alive("waiting for the daemon to consume everything");
            if let Some(m) = self.metrics() {
                durable = m.durable_offsets(topic);
                if ends
                    .iter()
                    .all(|(p, end)| durable.get(p).is_some_and(|d| d >= end))
                {
                    return durable;
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "the daemon did not make every offset durable within {timeout:?}: \
                     durable {durable:?}, expected {ends:?}"
                ));
            }
            std::thread::sleep(every);
        }
    }

    /// Waits until every partition's durable offset has reached `ends`, then until the
    /// store holds at least `expected` alerts (what replay gives: the idle partitions follow
    /// the wall clock a little after catching up), then until no alert was added for
    /// `quiet` (so that extra or repeated alerts show); returns every alert. Only
    /// `/metrics` is asked while the daemon catches up, to leave it the CPU.
    pub fn wait_idle(
        &mut self,
        ends: &BTreeMap<i32, i64>,
        topic: &str,
        expected: usize,
        quiet: Duration,
        timeout: Duration,
    ) -> Vec<(u64, Value)> {
        let t = Instant::now();
        let deadline = t + timeout;
        let durable = self.wait_durable(ends, topic, timeout, Duration::from_millis(500));
        let consumed = t.elapsed();
        let (mut seq, mut count) = (0u64, 0usize);
        let mut since = Instant::now();
        loop {
            self.assert_alive("waiting for the daemon's alerts");
            if let Some((s, n)) = self.count_after(seq)
                && s != seq
            {
                (seq, count) = (s, count + n);
                since = Instant::now();
            }
            if count >= expected && since.elapsed() >= quiet {
                break;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{timeout:?} after the start of the wait the store holds {count} alerts, \
                     replay gives {expected}; every offset was durable after {consumed:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let m = self.metrics();
        let stat = |name: &str| m.as_ref().map_or(0.0, |m| m.sum(name));
        eprintln!(
            "[e2e] every offset durable after {:.1}s ({durable:?}); {count} alerts (replay: \
             {expected}) and quiet after {:.1}s (daemon: {} store commits, {:.2}s in them; {} \
             Kafka errors)",
            consumed.as_secs_f64(),
            t.elapsed().as_secs_f64(),
            stat("redlight_store_commit_seconds_count"),
            stat("redlight_store_commit_seconds_sum"),
            stat("redlight_kafka_errors_total"),
        );
        self.alerts()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A GET over a fresh connection (HTTP/1.0: no chunking, the server closes).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        s = rest.get(n + 2..)?;
    }
}

/// The samples of a Prometheus text exposition.
pub struct Metrics {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let mut labels = BTreeMap::new();
                    for pair in rest.trim_end_matches('}').split("\",") {
                        if let Some((k, v)) = pair.split_once("=\"") {
                            labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                        }
                    }
                    (name.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            samples.push((name, labels, value));
        }
        Metrics { samples }
    }

    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Sum of a metric's samples whose label `label` equals `value`.
    pub fn sum_where(&self, name: &str, label: &str, value: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && l.get(label).is_some_and(|v| v == value))
            .map(|(_, _, v)| v)
            .sum()
    }

    pub fn durable_offsets(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == "redlight_durable_offset" && l.get("topic").is_some_and(|t| t == topic)
            })
            .filter_map(|(_, l, v)| Some((l.get("partition")?.parse().ok()?, *v as i64)))
            .collect()
    }
}

/// What `redlight replay` gives for the same input.
pub struct Replay {
    pub alerts: Vec<Value>,
    pub cases: Vec<Value>,
    pub summary: cli::ReplaySummary,
    pub stderr: String,
    /// The engine's count of events with a data problem (`Stats::data_problems`).
    pub data_problems: u64,
}

/// Runs the engine offline over `lines` exactly as `redlight replay --until <until>` does,
/// with the daemon's own configuration file.
pub fn replay(config: &Path, lines: &[&str], until_ms: i64) -> Replay {
    let config = Config::load(config).expect("the test configuration loads");
    let mut engine = config.build_engine().expect("the engine builds");
    let mut input = Vec::new();
    for l in lines {
        assert!(!l.contains('\n'), "a replay line holds no newline");
        input.extend_from_slice(l.as_bytes());
        input.push(b'\n');
    }
    let mut out = Vec::new();
    let mut err = Vec::new();
    let summary = cli::replay(
        &mut engine,
        input.as_slice(),
        Some(until_ms),
        &mut out,
        &mut err,
    )
    .expect("replay");
    let alerts = String::from_utf8(out)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("replay prints JSON"))
        .collect();
    let mut cases: Vec<Value> = engine
        .cases()
        .map(|c| serde_json::to_value(c).expect("a case serializes"))
        .collect();
    cases.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Replay {
        alerts,
        cases,
        summary,
        stderr: String::from_utf8_lossy(&err).into_owned(),
        data_problems: engine.stats().data_problems,
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The difference of two multisets of JSON values, for a readable failure.
pub fn multiset_diff(daemon: &[Value], replay: &[Value]) -> Option<String> {
    let mut counts: HashMap<String, i64> = HashMap::new();
    for v in daemon {
        *counts.entry(v.to_string()).or_default() += 1;
    }
    for v in replay {
        *counts.entry(v.to_string()).or_default() -= 1;
    }
    let mut extra: Vec<(&String, i64)> = counts
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(k, c)| (k, *c))
        .collect();
    let mut missing: Vec<(&String, i64)> = counts
        .iter()
        .filter(|(_, c)| **c < 0)
        .map(|(k, c)| (k, -*c))
        .collect();
    if extra.is_empty() && missing.is_empty() {
        return None;
    }
    extra.sort();
    missing.sort();
    let show = |v: &[(&String, i64)]| {
        v.iter()
            .take(12)
            .map(|(k, c)| format!("  {c}× {k}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Some(format!(
        "daemon: {} values, replay: {} values\n{} value(s) only in the daemon (or more often):\n{}\n\
         {} value(s) only in replay (or more often):\n{}",
        daemon.len(),
        replay.len(),
        extra.len(),
        show(&extra),
        missing.len(),
        show(&missing)
    ))
}

/// Counts of alerts by rule, level, status and reason, for the test output.
pub fn alert_census(alerts: &[Value]) -> String {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    for a in alerts {
        let k = format!(
            "{} {} {} {}",
            a["rule"].as_str().unwrap_or("?"),
            a["level"].as_str().unwrap_or("?"),
            a["status"].as_str().unwrap_or("?"),
            a["reason"].as_str().unwrap_or("?")
        );
        *m.entry(k).or_default() += 1;
    }
    m.iter()
        .map(|(k, n)| format!("    {n:>6}  {k}"))
        .collect::<Vec<_>>()
        .join("\n")
}
