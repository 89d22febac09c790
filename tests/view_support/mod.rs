//! Shared by tests/api.rs, tests/board.rs, tests/metrics_names.rs and tests/backup.rs: a
//! real broker, a real `redlight run` with its own topic, group, data directory and port,
//! the sample events, and a small HTTP client.
#![allow(dead_code)]

#[path = "../common/calendar.rs"]
mod calendar;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The broker: `REDLIGHT_TEST_KAFKA`, else the local one `scripts/kafka.sh` starts.
pub fn broker() -> String {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER
        .get_or_init(|| {
            if let Ok(b) = std::env::var("REDLIGHT_TEST_KAFKA")
                && !b.trim().is_empty()
            {
                return b;
            }
            let script = root().join("scripts/kafka.sh");
            let status = Command::new(&script)
                .arg("start")
                .stdout(Stdio::null())
                .status()
                .expect("running scripts/kafka.sh start");
            assert!(status.success(), "scripts/kafka.sh start failed");
            let out = Command::new(&script)
                .arg("bootstrap")
                .output()
                .expect("running scripts/kafka.sh bootstrap");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .clone()
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A fresh folder holding the shipped calendar files of `years` (config/calendars), for a
/// daemon whose calendar data ends with them (`REDLIGHT_ENGINE__CALENDARS`).
pub fn shipped_calendars(name: &str, years: std::ops::RangeInclusive<i32>) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("calendar dir");
    for year in years {
        let file = format!("{year}.toml");
        std::fs::copy(root().join("config/calendars").join(&file), dir.join(&file))
            .expect("copying a calendar file");
    }
    dir
}

pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let res = admin
        .create_topics(
            [&t],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .expect("create topic");
    for r in res {
        if let Err((name, code)) = r {
            assert!(
                code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "creating topic {name}: {code:?}"
            );
        }
    }
}

/// Produces the lines as CloudEvents keyed by their subject (the case id).
pub async fn produce(brokers: &str, topic: &str, lines: &[String]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    for line in lines {
        let key = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("subject").and_then(|s| s.as_str()).map(String::from))
            .unwrap_or_else(|| "no-subject".to_string());
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(line),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

/// The fixed-date samples of every domain.
pub fn fixed_samples() -> Vec<String> {
    std::fs::read_to_string(root().join("config/samples/events.jsonl"))
        .expect("config/samples/events.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// The relative samples, timed for now by `scripts/quickstart.sh events`, with `stamp` in
/// their case ids. The workdays are counted by `config`'s calendar: the test daemon's,
/// which covers next year too (`calendar::calendars_for_now`), so that the samples are
/// placed as the daemon counts also after the shipped data ends.
pub fn relative_samples(config: &Path, stamp: &str) -> Vec<String> {
    let out = quickstart_events(config, stamp, None);
    assert!(
        out.status.success(),
        "scripts/quickstart.sh events: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// `scripts/quickstart.sh events` with `config`'s calendar, `stamp` in the case ids and,
/// if given, `now` (epoch seconds) instead of the clock's.
pub fn quickstart_events(config: &Path, stamp: &str, now: Option<i64>) -> std::process::Output {
    let mut cmd = Command::new(root().join("scripts/quickstart.sh"));
    cmd.arg("events")
        .env("REDLIGHT_BIN", env!("CARGO_BIN_EXE_redlight"))
        .env("QUICKSTART_CONFIG", config)
        .env("QUICKSTART_STAMP", stamp);
    if let Some(now) = now {
        cmd.env("QUICKSTART_NOW", now.to_string());
    }
    cmd.output().expect("scripts/quickstart.sh events")
}

#[path = "../common/ports.rs"]
mod ports;
pub use ports::free_port;

/// A running `redlight run` with its own topic, group, data dir and port.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub topic: String,
    pub log: PathBuf,
}

/// Writes a config for a test daemon; `extra` is appended (e.g. `[http]` keys go in
/// `http_extra`, other sections in `extra`).
pub fn write_config(
    dir: &Path,
    brokers: &str,
    topic: &str,
    listen: &str,
    http_extra: &str,
    extra: &str,
) -> PathBuf {
    let cfg = root().join("config");
    let text = format!(
        r#"[engine]
timezone = "Asia/Shanghai"
calendars = "{cal}"
rule_packs = [{packs}]

[kafka]
brokers = "{brokers}"
group_id = "{topic}-group"
topics = ["{topic}"]
dead_letter_topic = "{topic}.dead-letter"
batch_wait_ms = 10
idle_ms = 300

[store]
data_dir = "{data}"

[http]
listen = "{listen}"
{http_extra}

[board]
cache_seconds = 1

{extra}
"#,
        cal = calendar::calendars_for_now(dir).display(),
        packs = ["xk", "xz", "nx", "aq", "hz"]
            .iter()
            .map(|p| format!("\"{}\"", cfg.join(format!("rules/{p}.toml")).display()))
            .collect::<Vec<_>>()
            .join(", "),
        data = dir.join("data").display(),
    );
    let path = dir.join("redlight.toml");
    std::fs::write(&path, text).expect("config");
    path
}

impl Daemon {
    /// Starts a daemon on a fresh topic (created with `partitions`), waits until ready.
    pub async fn start(name: &str, partitions: i32, http_extra: &str) -> Daemon {
        Daemon::start_with(name, partitions, http_extra, "", &[]).await
    }

    pub async fn start_with(
        name: &str,
        partitions: i32,
        http_extra: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let brokers = broker();
        let topic = unique(name);
        create_topic(&brokers, &topic, partitions).await;
        create_topic(&brokers, &format!("{topic}.dead-letter"), 1).await;
        let dir = std::env::temp_dir().join(&topic);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let port = free_port();
        let config = write_config(
            &dir,
            &brokers,
            &topic,
            &format!("127.0.0.1:{port}"),
            http_extra,
            extra,
        );
        let log = dir.join("redlight.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_redlight"));
        cmd.args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start redlight");
        let mut d = Daemon {
            child,
            port,
            dir,
            topic,
            log,
        };
        d.wait_ready();
        d
    }

    /// The relative samples placed by this daemon's calendar ([`relative_samples`]).
    pub fn relative_samples(&self, stamp: &str) -> Vec<String> {
        relative_samples(&self.dir.join("redlight.toml"), stamp)
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("redlight exited early ({status}): {}", self.log_text());
            }
            if let Some(r) = get(self.port, "/readyz", &[])
                && r.status == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redlight was not ready in time: {}", self.log_text());
    }

    /// Waits until `n` offsets of its topic are durable and the partitions have gone
    /// quiet long enough to follow the wall clock.
    pub fn wait_consumed(&mut self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(r) = get(self.port, "/metrics", &[]) {
                let durable: f64 = r
                    .body
                    .lines()
                    .filter(|l| l.starts_with("redlight_durable_offset{"))
                    .filter(|l| l.contains(&format!("topic=\"{}\"", self.topic)))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                if durable as u64 >= n {
                    self.wait_wall_clock_turns();
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{n} events were not consumed in time: {}", self.log_text());
    }

    /// Waits until the wall clock has driven every partition twice since now (each turn
    /// observes `redlight_engine_advance_seconds` once per caught-up partition; the loop
    /// turns at least every `idle_ms`, 300 here), then a second for the writer to commit
    /// what those turns fired. On a loaded machine a fixed sleep alone could read the
    /// lights before the wall clock had fired them.
    fn wait_wall_clock_turns(&self) {
        let read = |name: &str| -> Option<f64> {
            let r = get(self.port, "/metrics", &[])?;
            r.body
                .lines()
                .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        };
        let count = || read("redlight_engine_advance_seconds_count");
        let partitions = read("redlight_partitions_assigned").unwrap_or(1.0).max(1.0);
        let start = count().unwrap_or(0.0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while count().unwrap_or(0.0) < start + 2.0 * partitions {
            if Instant::now() >= deadline {
                panic!(
                    "the wall clock did not drive the partitions: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(1000));
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Resp {
        get(self.port, path, &[]).unwrap_or_else(|| panic!("GET {path} failed"))
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {} {}", r.status, r.body);
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", r.body))
    }

    /// Stops it (SIGTERM) and starts it again on the same config and store, logging to
    /// `log` in its directory; waits until ready.
    pub fn restart(&mut self, log: &str) {
        self.stop();
        let config = self.dir.join("redlight.toml");
        self.log = self.dir.join(log);
        self.child = Command::new(env!("CARGO_BIN_EXE_redlight"))
            .args(["run", "--config"])
            .arg(&config)
            .stderr(std::fs::File::create(&self.log).expect("log"))
            .spawn()
            .expect("restart");
        self.wait_ready();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 GET (one request per connection; chunked bodies decoded).
pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Option<Resp> {
    request(port, "GET", path, None, headers)
}

/// `POST` of a JSON body.
#[allow(dead_code)] // not every test binary that includes this module posts
pub fn post(port: u16, path: &str, body: &str, headers: &[(&str, &str)]) -> Option<Resp> {
    request(port, "POST", path, Some(body), headers)
}

fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Option<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut body = buf[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).ok()?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = out;
    }
    Some(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Percent-encodes a query value.
pub fn q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A daemon fed with the fixed and the relative samples, all consumed.
pub async fn fed_daemon(name: &str, stamp: &str) -> Daemon {
    // The fixed samples are dated in 2026: a quiet one (the withdrawn XZ-2026-0004) would
    // be forgotten `retention_days` after its last event by the wall clock, and the tests
    // look for it; keep every case.
    let retention = [("REDLIGHT_ENGINE__RETENTION_DAYS", "36500")];
    let mut d = Daemon::start_with(name, 2, "", "", &retention).await;
    let mut lines = fixed_samples();
    lines.extend(d.relative_samples(stamp));
    let n = lines.len() as u64;
    produce(&broker(), &d.topic, &lines).await;
    d.wait_consumed(n);
    d
}

/// The expected overall light of each relative sample case (see
/// config/samples/relative.jsonl), by case id without the stamp.
pub const RELATIVE_LIGHTS: &[(&str, &str, &str)] = &[
    ("XZ-{}-01", "green", "市住建局"),
    ("XZ-{}-02", "yellow", "市住建局"),
    ("XZ-{}-03", "red", "市自然资源局"),
    ("NX-M-{}-1", "green", "银川市市场监管局"),
    ("NX-M-{}-2", "yellow", "银川市市场监管局"),
    ("NX-M-{}-3", "red", "吴忠市市场监管局"),
    ("HZ-H-{}-1", "green", "杭州市应急管理局"),
    ("HZ-H-{}-2", "yellow", "杭州市应急管理局"),
    ("HZ-H-{}-3", "yellow", "杭州市建委"),
    ("HZ-A-{}-1", "red", "杭州市应急管理局"),
    ("HZ-A-{}-2", "green", "杭州市应急管理局"),
    ("dept:杭州市应急管理局-{}", "green", "杭州市应急管理局"),
];

// ---------------------------------------------------------------------------------------
// Reading the board's HTML

/// The text of the first element of `dom` that carries `marker`, up to the next `<`.
#[allow(dead_code)] // the board's tests and the API's read its HTML
pub fn text_after<'a>(dom: &'a str, marker: &str) -> Option<&'a str> {
    let i = dom.find(marker)?;
    let rest = &dom[i + marker.len()..];
    let rest = &rest[rest.find('>')? + 1..];
    Some(rest[..rest.find('<')?].trim())
}

/// The department rows of the board: department → (red, yellow, green).
#[allow(dead_code)]
pub fn department_rows(dom: &str) -> std::collections::BTreeMap<String, (u64, u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for row in dom.split("<tr data-department=\"").skip(1) {
        let Some((dept, rest)) = row.split_once('"') else {
            continue;
        };
        let row_end = rest.find("</tr>").unwrap_or(rest.len());
        let row = &rest[..row_end];
        let cell = |light: &str| -> u64 {
            text_after(row, &format!("data-light=\"{light}\""))
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("{dept}: no {light} cell in {row}"))
        };
        out.insert(
            dept.to_string(),
            (cell("red"), cell("yellow"), cell("green")),
        );
    }
    out
}

/// What the export and a case's page call a case of the API's JSON: 已撤回, 在办 or 已办结.
#[allow(dead_code)]
pub fn case_state(c: &serde_json::Value) -> &'static str {
    if c["withdrawn"] == true {
        "已撤回"
    } else if c["open"] == true {
        "在办"
    } else {
        "已办结"
    }
}

/// The case ids listed in `<ol id="list-{light}">`.
#[allow(dead_code)]
pub fn listed(dom: &str, light: &str) -> Vec<String> {
    let Some(i) = dom.find(&format!("id=\"list-{light}\"")) else {
        return Vec::new();
    };
    let list = &dom[i..];
    let list = &list[..list.find("</ol>").unwrap_or(list.len())];
    list.split("data-case=\"")
        .skip(1)
        .filter_map(|s| s.split_once('"').map(|(id, _)| id.to_string()))
        .collect()
}
