//! Alert delivery against real HTTP receivers started here on port 0: every format's body
//! and signature checked the way the platform (or a receiver) checks it, the faults a
//! network has (500s, timeouts, 429 with Retry-After, a receiver down for a while), dead
//! letters and their re-sending, rate limits, routing, escalation, and `kill -9` of a
//! process with deliveries in its outbox.
//!
//! Most tests drive `redlight::delivery` directly with a store and alerts (no Kafka); the
//! last one runs the real daemon binary against the broker in `REDLIGHT_TEST_KAFKA`.

#[path = "delivery/support.rs"]
mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use redlight::alert::{Alert, Level, Reason, Status};
use redlight::delivery::{self, Delivery, Options, Selection};
use redlight::metrics::Metrics;
use redlight::rules::RuleSet;
use redlight::store::{Store, WriteBatch};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use support::*;

type HmacSha256 = Hmac<Sha256>;

/// A delivery set up in a temporary folder.
struct Setup {
    dir: PathBuf,
    store: Arc<Store>,
    delivery: Arc<Delivery>,
    metrics: Metrics,
    rules: RuleSet,
}

impl Setup {
    fn start(name: &str, extra: &str) -> Setup {
        Setup::start_with(name, extra, Options::default(), |_| {})
    }

    fn start_with(name: &str, extra: &str, options: Options, prepare: impl FnOnce(&Path)) -> Setup {
        let dir = tmp(name);
        prepare(&dir);
        Setup::on(dir, extra, options)
    }

    /// Delivery started on the store in `dir`, with the configuration `extra` gives.
    fn on(dir: PathBuf, extra: &str, options: Options) -> Setup {
        let config = load_config(&dir, extra);
        let rules = config.load_rules().expect("rules");
        let store = Arc::new(Store::open(&config.data_dir()).expect("store"));
        let metrics = Metrics::new();
        let delivery = Delivery::start(&config, store.clone(), metrics.clone(), options)
            .expect("delivery starts");
        Setup {
            dir,
            store,
            delivery,
            metrics,
            rules,
        }
    }

    /// Commits alerts the way the daemon does: one transaction, outbox rows included.
    fn commit(&self, alerts: Vec<Alert>) {
        self.store
            .commit(&WriteBatch {
                alerts,
                ..Default::default()
            })
            .expect("commit");
    }

    fn count(&self, receiver: &str, outcome: &str) -> u64 {
        self.metrics
            .deliveries
            .with_label_values(&[receiver, outcome])
            .get()
    }

    /// Waits until every delivery waiting in the outbox has had `attempts` attempts recorded:
    /// an outcome is counted in the metrics when it comes back, its row is written (and free
    /// to be sent again) only once the settler has recorded it, which in a debug build under
    /// load takes a while. Tests that make a receiver come back right after failures wait for
    /// this, so that what they see does not depend on the settler's pace.
    async fn settled(&self, attempts: u32) -> bool {
        eventually(WAIT, || {
            delivery::waiting(&self.store, 0, 10_000, None)
                .is_ok_and(|rows| rows.iter().all(|r| r.attempts >= attempts))
        })
        .await
    }

    fn pending(&self) -> u64 {
        delivery::stats(&self.store)
            .expect("stats")
            .iter()
            .map(|s| s.pending)
            .sum()
    }

    async fn stop(self) {
        self.delivery.shutdown().await;
        drop(self.store);
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Stopped and started again on the same store, with the configuration `extra` gives.
    async fn restart(self, extra: &str) -> Setup {
        let Setup {
            dir,
            store,
            delivery,
            ..
        } = self;
        delivery.shutdown().await;
        drop(delivery);
        drop(store);
        Setup::on(dir, extra, Options::default())
    }
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("key");
    mac.update(msg);
    B64.encode(mac.finalize().into_bytes())
}

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Formats and signatures.

/// `json`: the SPEC §4 alert, signed per Standard Webhooks with both secrets of a rotation;
/// the receiver recomputes each HMAC from its secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_the_alert_signed_with_every_secret() {
    let sink = Sink::start().await;
    sink.set_plan(|_, _| Answer::status(204));
    let old = "whsec_b2xkLXNlY3JldC1rZXktZm9yLXJvdGF0aW9uLTAx";
    let new = "whsec_bmV3LXNlY3JldC1rZXktZm9yLXJvdGF0aW9uLTAy";
    let s = Setup::start_with(
        "json",
        &format!(
            r#"
[[receiver]]
name = "office"
format = "json"
url = "{}"
secrets = ["file:new.secret", "{old}"]

[[route]]
receivers = "office"
"#,
            sink.url("/hooks/redlight")
        ),
        Options::default(),
        |dir| std::fs::write(dir.join("new.secret"), format!("{new}\n")).expect("secret file"),
    );
    let a = red(&s.rules, 1);
    s.commit(vec![a.clone()]);
    assert!(sink.wait_ok(1, WAIT).await, "delivered");
    let hit = &sink.hits()[0];
    assert_eq!(hit.path, "/hooks/redlight");
    assert_eq!(hit.header("content-type"), Some("application/json"));
    // The body is the alert of SPEC §4, field for field.
    let body: Alert = serde_json::from_slice(&hit.body).expect("an alert");
    assert_eq!(body, a);
    let v = hit.json();
    assert_eq!(v["rule"], "xk.decision");
    assert_eq!(v["level"], "red");
    assert_eq!(v["status"], "firing");
    assert!(v.get("escalation").is_none());
    // Standard Webhooks headers, verified as a receiver does.
    let id = hit.header("webhook-id").expect("webhook-id");
    assert_eq!(id, a.id);
    let ts = hit.header("webhook-timestamp").expect("webhook-timestamp");
    let ts_n: i64 = ts.parse().expect("seconds");
    assert!((chrono::Utc::now().timestamp() - ts_n).abs() < 60);
    let sigs: Vec<&str> = hit
        .header("webhook-signature")
        .expect("webhook-signature")
        .split(' ')
        .collect();
    assert_eq!(sigs.len(), 2, "one signature per secret");
    let signed = [id.as_bytes(), b".", ts.as_bytes(), b".", &hit.body].concat();
    for secret in [new, old] {
        let key = B64
            .decode(secret.strip_prefix("whsec_").expect("prefix"))
            .expect("base64");
        let expected = format!("v1,{}", hmac_b64(&key, &signed));
        assert!(
            sigs.contains(&expected.as_str()),
            "a receiver holding {secret} accepts it"
        );
        assert!(
            redlight::formats::standard::verify(
                secret,
                id,
                ts,
                hit.header("webhook-signature").unwrap_or(""),
                &hit.body,
                chrono::Utc::now().timestamp(),
                300
            )
            .is_ok()
        );
    }
    // A tampered body fails.
    let tampered = [id.as_bytes(), b".", ts.as_bytes(), b".", b"{}"].concat();
    let key = B64.decode(&new[6..]).expect("base64");
    assert!(!sigs.contains(&format!("v1,{}", hmac_b64(&key, &tampered)).as_str()));
    // The receiver has the request before redlight has its answer: the outbox row settles,
    // and the counter counts, once the answer is back.
    assert!(eventually(WAIT, || s.pending() == 0).await);
    assert_eq!(s.count("office", "delivered"), 1);
    s.stop().await;
}

/// `alertmanager`: the webhook payload of version 4; the firing and the resolved notice of
/// one alert share the fingerprint, as Alertmanager receivers expect, also when the case
/// changed hands in between (the handler is an annotation, not a label).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_payload_is_version_4() {
    let sink = Sink::start().await;
    let s = Setup::start(
        "am",
        &format!(
            r#"
[delivery]
external_url = "http://redlight.example:9464/"

[[receiver]]
name = "am"
format = "alertmanager"
url = "{}"
send_resolved = true

[[route]]
receivers = ["am"]
"#,
            sink.url("/alerts")
        ),
    );
    let firing = red(&s.rules, 7);
    let mut resolved = alert(
        &s.rules,
        "XZ-00007",
        "xk.decision",
        "1@0",
        Level::Red,
        Status::Resolved,
        Reason::CompletedLate,
        "2026-11-03T10:00:00+08:00",
        Some("2026-10-31T00:00:00+08:00"),
    );
    resolved.detail = None;
    // Reviewed by another handler after the red fired.
    resolved.handler = Some("李四".into());
    s.commit(vec![firing.clone()]);
    assert!(sink.wait_ok(1, WAIT).await);
    s.commit(vec![resolved.clone()]);
    assert!(sink.wait_ok(2, WAIT).await);
    let hits = sink.hits();
    let (f, r) = (hits[0].json(), hits[1].json());
    for (v, status) in [(&f, "firing"), (&r, "resolved")] {
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], status);
        assert_eq!(v["receiver"], "am");
        assert_eq!(v["truncatedAlerts"], 0);
        assert_eq!(v["externalURL"], "http://redlight.example:9464");
        assert!(
            v["groupKey"]
                .as_str()
                .expect("groupKey")
                .starts_with("{}:{")
        );
        assert!(v["groupLabels"].is_object() && v["commonAnnotations"].is_object());
        let alerts = v["alerts"].as_array().expect("alerts");
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a["status"], status);
        assert_eq!(a["labels"]["alertname"], "xk.decision");
        assert_eq!(a["labels"]["case"], "XZ-00007");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["labels"]["department"], "市住建局");
        assert!(a["labels"].get("handler").is_none(), "{a}");
        assert_eq!(
            a["generatorURL"],
            "http://redlight.example:9464/case/XZ-00007"
        );
        assert_eq!(a["fingerprint"].as_str().expect("fingerprint").len(), 16);
        for k in ["startsAt", "endsAt"] {
            let t = a[k].as_str().expect("time");
            assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{k}: {t}");
        }
        assert!(
            a["annotations"]["summary"]
                .as_str()
                .expect("summary")
                .contains("行政许可决定期限")
        );
    }
    assert_eq!(f["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(f["alerts"][0]["startsAt"], "2026-10-31T00:00:00+08:00");
    assert_eq!(r["alerts"][0]["endsAt"], "2026-11-03T10:00:00+08:00");
    assert_eq!(
        f["alerts"][0]["fingerprint"], r["alerts"][0]["fingerprint"],
        "firing and resolved pair up"
    );
    assert_eq!(r["alerts"][0]["annotations"]["alert_id"], resolved.id);
    assert_eq!(f["alerts"][0]["annotations"]["handler"], "张三");
    assert_eq!(r["alerts"][0]["annotations"]["handler"], "李四");
    s.stop().await;
}

/// A DingTalk custom robot: markdown message, signed with `timestamp` and `sign` on the URL;
/// the text says how late in the rule's own unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dingtalk_markdown_is_signed_on_the_url() {
    let sink = Sink::start().await;
    let secret = "SEC0123456789abcdefSIGNINGSECRET";
    let s = Setup::start_with(
        "dingtalk",
        &format!(
            r#"
[[receiver]]
name = "zhujian-dingtalk"
format = "dingtalk"
url = "{}"
secret = "file:dingtalk.secret"
send_resolved = true

[[route]]
receivers = "zhujian-dingtalk"
"#,
            sink.url("/dingtalk/robot/send?access_token=TOKEN0123456789")
        ),
        Options::default(),
        |dir| std::fs::write(dir.join("dingtalk.secret"), secret).expect("secret"),
    );
    // Accepted 20 workdays before 2026-10-31, completed on Tuesday 11-03 at 10:00: Monday and
    // part of Tuesday late, "超期 2 个工作日".
    let late = alert(
        &s.rules,
        "XZ-2026-0001",
        "xk.decision",
        "1@0",
        Level::Red,
        Status::Resolved,
        Reason::CompletedLate,
        "2026-11-03T10:00:00+08:00",
        Some("2026-10-31T00:00:00+08:00"),
    );
    s.commit(vec![late]);
    assert!(sink.wait_ok(1, WAIT).await);
    let hit = &sink.hits()[0];
    assert_eq!(hit.path, "/dingtalk/robot/send");
    assert_eq!(
        hit.query_param("access_token").as_deref(),
        Some("TOKEN0123456789")
    );
    let ts = hit.query_param("timestamp").expect("timestamp");
    let ts_ms: i64 = ts.parse().expect("milliseconds");
    assert!((chrono::Utc::now().timestamp_millis() - ts_ms).abs() < 3_600_000);
    let sign = hit.query_param("sign").expect("sign");
    let sign = percent_encoding::percent_decode_str(&sign)
        .decode_utf8()
        .expect("utf8")
        .to_string();
    assert_eq!(
        sign,
        hmac_b64(secret.as_bytes(), format!("{ts}\n{secret}").as_bytes()),
        "HmacSHA256(secret, timestamp + \"\\n\" + secret), base64"
    );
    let v = hit.json();
    assert_eq!(v["msgtype"], "markdown");
    let title = v["markdown"]["title"].as_str().expect("title");
    let text = v["markdown"]["text"].as_str().expect("text");
    assert!(title.contains("行政许可决定期限"), "{title}");
    for want in [
        "XZ-2026-0001",
        "超期 2 个工作日",
        "《中华人民共和国行政许可法》",
        "市住建局",
        "张三",
        "2026-10-30 24:00",
        "建筑工程施工许可",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
    s.stop().await;
}

/// A WeCom group robot: markdown content within 4096 bytes; an hour rule says "超时 35 分钟".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_markdown_says_minutes_late_for_an_hour_rule() {
    let sink = Sink::start().await;
    let s = Setup::start(
        "wecom",
        &format!(
            r#"
[[receiver]]
name = "anjian-wecom"
format = "wecom"
url = "{}"
send_resolved = true

[[route]]
rule_prefix = "aq."
receivers = "anjian-wecom"
"#,
            sink.url("/wecom/cgi-bin/webhook/send?key=KEY-0123-4567")
        ),
    );
    let mut a = alert(
        &s.rules,
        "AQ-2026-0042",
        "aq.accident_report",
        "1@0",
        Level::Red,
        Status::Resolved,
        Reason::CompletedLate,
        "2026-11-02T11:35:00+08:00",
        Some("2026-11-02T11:00:00+08:00"),
    );
    a.department = Some("市应急管理局".into());
    a.item = None;
    a.handler = None;
    s.commit(vec![a]);
    assert!(sink.wait_ok(1, WAIT).await);
    let hit = &sink.hits()[0];
    assert_eq!(hit.query_param("key").as_deref(), Some("KEY-0123-4567"));
    let v = hit.json();
    assert_eq!(v["msgtype"], "markdown");
    let content = v["markdown"]["content"].as_str().expect("content");
    assert!(content.len() <= 4096);
    for want in [
        "超时 35 分钟",
        "AQ-2026-0042",
        "事故报告时限",
        "市应急管理局",
        "<font color=",
    ] {
        assert!(content.contains(want), "{want} in:\n{content}");
    }
    s.stop().await;
}

/// A Feishu custom bot: an interactive card; signed with `timestamp` and `sign` in the body,
/// the sign being base64(HMAC-SHA256(key = "timestamp\nsecret", empty message)).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feishu_card_is_signed_in_the_body() {
    let sink = Sink::start().await;
    let secret = "feishu-signing-secret-0123";
    let s = Setup::start(
        "feishu",
        &format!(
            r#"
[[receiver]]
name = "xiaoneng-feishu"
format = "feishu"
url = "{}"
secret = "{secret}"

[[route]]
levels = ["yellow", "red"]
receivers = "xiaoneng-feishu"
"#,
            sink.url("/feishu/open-apis/bot/v2/hook/0f1e2d3c-hook")
        ),
    );
    // Yellow at 90% of 20 workdays: two workdays left.
    let y = alert(
        &s.rules,
        "XZ-2026-0001",
        "xk.decision",
        "1@0",
        Level::Yellow,
        Status::Firing,
        Reason::Approaching,
        "2026-10-29T00:00:00+08:00",
        Some("2026-10-31T00:00:00+08:00"),
    );
    s.commit(vec![y]);
    assert!(sink.wait_ok(1, WAIT).await);
    let v = sink.hits()[0].json();
    let ts = v["timestamp"].as_str().expect("timestamp is a string");
    let ts_s: i64 = ts.parse().expect("seconds");
    assert!((chrono::Utc::now().timestamp() - ts_s).abs() < 3600);
    let key = format!("{ts}\n{secret}");
    assert_eq!(
        v["sign"].as_str().expect("sign"),
        hmac_b64(key.as_bytes(), b"")
    );
    assert_eq!(v["msg_type"], "interactive");
    let card = &v["card"];
    assert_eq!(card["header"]["template"], "yellow");
    assert_eq!(card["header"]["title"]["tag"], "plain_text");
    assert!(
        card["header"]["title"]["content"]
            .as_str()
            .expect("title")
            .contains("黄灯")
    );
    let elements = card["elements"].as_array().expect("elements");
    let md = elements
        .iter()
        .find(|e| e["tag"] == "markdown")
        .and_then(|e| e["content"].as_str())
        .expect("a markdown element");
    assert!(md.contains("还剩 2 个工作日"), "{md}");
    assert!(md.contains("XZ-2026-0001"));
    s.stop().await;
}

/// A CA of a data centre's own and a certificate it issued for 127.0.0.1, made with the
/// `openssl` command: `ca.pem`, `server.pem` and `server.key` in `dir`.
fn private_pki(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl (Debian: openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &[
                "req", "-x509", "-days", "2", "-keyout", "ca.key", "-out", "ca.pem",
            ][..],
            &ec,
            &[
                "-subj",
                "/CN=redlight test intranet CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &[
                "req",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ][..],
            &ec,
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extensions");
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-extfile",
        "server.ext",
    ]);
}

/// A server of Python's in `dir`, `script` run with `args`: it prints its port first, then
/// a line per thing it saw. The port, and a channel of those lines.
fn python_server(
    dir: &Path,
    script: &str,
    args: &[&str],
) -> (std::process::Child, u16, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server's port")
        .trim()
        .parse()
        .expect("a port");
    (child, port, rx)
}

/// An HTTPS receiver (Python's http.server behind its ssl module) answering 204 to every
/// POST: its port, and the lines it prints (`POST <path>` per request).
fn https_receiver(dir: &Path) -> (std::process::Child, u16, std::sync::mpsc::Receiver<String>) {
    let script = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        print("POST", self.path, flush=True)
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), H)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = tls.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
    python_server(dir, script, &["server.pem", "server.key"])
}

/// An HTTP proxy that only tunnels (CONNECT), as a data centre's egress proxy: prints
/// `CONNECT <host:port> <Proxy-Authorization or ->` for each tunnel asked for.
fn connect_proxy(dir: &Path) -> (std::process::Child, u16, std::sync::mpsc::Receiver<String>) {
    let script = r#"
import socket, threading
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
def handle(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(4096)
        if not d:
            return
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    method, target = lines[0].split(" ")[:2]
    auth = [l.split(":", 1)[1].strip() for l in lines[1:] if l.lower().startswith("proxy-authorization:")]
    print(method, target, auth[0] if auth else "-", flush=True)
    if method != "CONNECT":
        c.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
        c.close()
        return
    host, port = target.rsplit(":", 1)
    u = socket.create_connection((host, int(port)))
    c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    if rest:
        u.sendall(rest)
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    pipe(u, c)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(16)
print(srv.getsockname()[1], flush=True)
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;
    python_server(dir, script, &[])
}

/// An `https://` receiver whose certificate a data centre's own CA issued: the bundled
/// Mozilla roots do not know that CA, so the delivery fails saying why, and is delivered
/// once `delivery.ca_file` names the CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_of_a_private_ca_is_trusted_through_ca_file() {
    let pki = tmp("pki");
    private_pki(&pki);
    let (mut server, port, said) = https_receiver(&pki);
    let config = |ca: &str| {
        format!(
            r#"
[delivery]
retry = ["50ms"]
jitter = 0.0
{ca}

[[receiver]]
name = "intranet"
format = "json"
url = "https://127.0.0.1:{port}/hook"

[[route]]
receivers = "intranet"
"#
        )
    };
    let dead = |s: &Setup| delivery::dead_letters(&s.store, 0, 10, None).unwrap_or_default();

    let s = Setup::start("tls-untrusted", &config(""));
    s.commit(vec![red(&s.rules, 1)]);
    assert!(eventually(WAIT, || dead(&s).len() == 1).await, "refused");
    let error = dead(&s)[0].error.clone();
    assert!(
        error.contains("certificate") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert!(said.try_recv().is_err(), "no request got through");
    s.stop().await;

    let ca = pki.join("ca.pem");
    let s = Setup::start_with(
        "tls-trusted",
        &config(r#"ca_file = "intranet-ca.pem""#),
        Options::default(),
        |dir| {
            std::fs::copy(&ca, dir.join("intranet-ca.pem")).expect("the CA file");
        },
    );
    s.commit(vec![red(&s.rules, 2)]);
    assert!(eventually(WAIT, || s.pending() == 0).await);
    assert_eq!(s.count("intranet", "delivered"), 1);
    assert!(dead(&s).is_empty());
    assert_eq!(
        said.recv_timeout(Duration::from_secs(5)).as_deref(),
        Ok("POST /hook")
    );
    s.stop().await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&pki);
}

/// `https://` receivers through a data centre's egress proxy (`delivery.proxy`): each
/// delivery is a CONNECT tunnel with the proxy's Basic credentials, TLS end to end inside
/// it; hosts in `delivery.no_proxy` are reached directly; a proxy that does not answer is
/// named in the error, its credentials never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receivers_are_reached_through_the_proxy() {
    let pki = tmp("proxy-pki");
    private_pki(&pki);
    let (mut server, port, received) = https_receiver(&pki);
    let (mut proxy, proxy_port, tunnels) = connect_proxy(&pki);
    let ca = pki.join("ca.pem");
    let config = |delivery: &str| {
        format!(
            r#"
[delivery]
retry = ["50ms"]
jitter = 0.0
ca_file = "intranet-ca.pem"
{delivery}

[[receiver]]
name = "robot"
format = "json"
url = "https://127.0.0.1:{port}/hook"

[[route]]
receivers = "robot"
"#
        )
    };
    let start = |name: &str, delivery: &str| {
        Setup::start_with(name, &config(delivery), Options::default(), |dir| {
            std::fs::copy(&ca, dir.join("intranet-ca.pem")).expect("the CA file");
        })
    };
    let dead = |s: &Setup| delivery::dead_letters(&s.store, 0, 10, None).unwrap_or_default();

    // Through the proxy, with its credentials.
    let s = start(
        "proxy",
        &format!(r#"proxy = "http://redlight:s3cret-pass@127.0.0.1:{proxy_port}""#),
    );
    s.commit(vec![red(&s.rules, 1)]);
    assert!(eventually(WAIT, || s.pending() == 0).await);
    assert_eq!(s.count("robot", "delivered"), 1, "{:?}", dead(&s));
    let basic = B64.encode("redlight:s3cret-pass");
    assert_eq!(
        tunnels.recv_timeout(Duration::from_secs(5)).as_deref(),
        Ok(format!("CONNECT 127.0.0.1:{port} Basic {basic}").as_str())
    );
    assert_eq!(
        received.recv_timeout(Duration::from_secs(5)).as_deref(),
        Ok("POST /hook")
    );
    s.stop().await;

    // The receiver's host in no_proxy: reached directly.
    let s = start(
        "no-proxy",
        &format!(
            r#"proxy = "http://127.0.0.1:{proxy_port}"
no_proxy = ["intranet.example", "127.0.0.0/8"]"#
        ),
    );
    s.commit(vec![red(&s.rules, 2)]);
    assert!(eventually(WAIT, || s.pending() == 0).await);
    assert_eq!(s.count("robot", "delivered"), 1, "{:?}", dead(&s));
    assert_eq!(
        received.recv_timeout(Duration::from_secs(5)).as_deref(),
        Ok("POST /hook")
    );
    assert!(tunnels.try_recv().is_err(), "no tunnel for a no_proxy host");
    s.stop().await;

    // A proxy nobody answers on: the error names it, not its password.
    let nobody = free_addr();
    let s = start(
        "proxy-down",
        &format!(r#"proxy = "http://redlight:s3cret-pass@{nobody}""#),
    );
    s.commit(vec![red(&s.rules, 3)]);
    assert!(eventually(WAIT, || dead(&s).len() == 1).await);
    let error = dead(&s)[0].error.clone();
    assert!(error.contains(&format!("proxy {nobody}")), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
    s.stop().await;

    for child in [&mut server, &mut proxy] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&pki);
}

/// A chat robot's firing red @-mentions the people its receiver names, each as its
/// platform writes a mention (DingTalk `at.atMobiles` and `@mobile` in the text, WeCom
/// `<@userid>`, Feishu `<at id=…>` / `<at email=…>`); a yellow and a resolved notice do
/// not, unless `mention_levels` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_robots_mention_the_people_named_on_a_red() {
    let sink = Sink::start().await;
    let s = Setup::start(
        "mention",
        &format!(
            r#"
[[receiver]]
name = "ding"
format = "dingtalk"
url = "{}"
send_resolved = true
mention = ["13800000001", "+86-139-0000-0002"]

[[receiver]]
name = "wecom"
format = "wecom"
url = "{}"
mention = "zhangsan"
mention_levels = ["yellow", "red"]

[[receiver]]
name = "feishu"
format = "feishu"
url = "{}"
mention = ["ou_7d8a6e6df7621556ce0d21922b676706", "chief@gov.example.cn", "all"]

[[route]]
receivers = ["ding", "wecom", "feishu"]
"#,
            sink.url("/ding"),
            sink.url("/wecom"),
            sink.url("/feishu"),
        ),
    );
    let red_firing = red(&s.rules, 1);
    s.commit(vec![red_firing.clone()]);
    assert!(sink.wait_ok(3, WAIT).await);
    let body = |path: &str, n: usize| -> serde_json::Value {
        sink.hits()
            .iter()
            .filter(|h| h.path == path)
            .nth(n)
            .map(|h| h.json())
            .unwrap_or_else(|| panic!("hit {n} of {path}"))
    };
    let ding = body("/ding", 0);
    assert_eq!(
        ding["at"]["atMobiles"],
        serde_json::json!(["13800000001", "+86-139-0000-0002"])
    );
    assert_eq!(ding["at"]["isAtAll"], false);
    let text = ding["markdown"]["text"].as_str().expect("text");
    assert!(
        text.contains("提醒：@13800000001 @+86-139-0000-0002"),
        "{text}"
    );
    let content = body("/wecom", 0)["markdown"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    assert!(content.contains("提醒：<@zhangsan>"), "{content}");
    let card = body("/feishu", 0);
    let md = card["card"]["elements"][0]["content"]
        .as_str()
        .expect("markdown");
    assert!(
        md.contains(
            "提醒：<at id=ou_7d8a6e6df7621556ce0d21922b676706></at> \
             <at email=chief@gov.example.cn></at> <at id=all></at>"
        ),
        "{md}"
    );

    // A yellow: only the receiver that asked for yellows mentions.
    let mut yellow = red(&s.rules, 2);
    yellow.level = Level::Yellow;
    yellow.reason = Reason::Approaching;
    yellow.id = redlight::alert::alert_id(
        &yellow.case,
        "xk.decision",
        "1@0",
        Level::Yellow,
        Status::Firing,
    );
    s.commit(vec![yellow]);
    assert!(sink.wait_ok(6, WAIT).await);
    assert!(body("/ding", 1).get("at").is_none());
    assert!(
        !body("/ding", 1)["markdown"]["text"]
            .as_str()
            .unwrap_or("")
            .contains("提醒")
    );
    assert!(
        body("/wecom", 1)["markdown"]["content"]
            .as_str()
            .unwrap_or("")
            .contains("<@zhangsan>")
    );
    assert!(
        !body("/feishu", 1)["card"]["elements"][0]["content"]
            .as_str()
            .unwrap_or("")
            .contains("<at ")
    );

    // The red resolved: news, not a call to act.
    let mut resolved = red_firing;
    resolved.status = Status::Resolved;
    resolved.reason = Reason::CompletedLate;
    resolved.id = redlight::alert::alert_id(
        &resolved.case,
        "xk.decision",
        "1@0",
        Level::Red,
        Status::Resolved,
    );
    s.commit(vec![resolved]);
    assert!(
        sink.wait_ok(7, WAIT).await,
        "to ding, the one sending resolved"
    );
    assert!(body("/ding", 2).get("at").is_none());
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// Faults.

fn json_receiver(url: &str, retry: &str, extra: &str) -> String {
    format!(
        r#"
[delivery]
retry = {retry}
jitter = 0.0

[[receiver]]
name = "hook"
format = "json"
url = "{url}"
secret = "whsec_dGVzdC1zZWNyZXQtMDEyMzQ1Njc4OWFiY2RlZg=="
{extra}

[[route]]
receivers = "hook"
"#
    )
}

/// Each id in the 2xx answers, counted.
fn ids(sink: &Sink) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for id in delivered(sink) {
        *m.entry(id).or_default() += 1;
    }
    m
}

/// The ids of the 2xx answers, in the order the receiver took them.
fn delivered(sink: &Sink) -> Vec<String> {
    sink.ok_hits()
        .iter()
        .map(|h| h.header("webhook-id").unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_delivered_once() {
    let sink = Sink::start().await;
    sink.set_plan(|n, _| {
        if n < 2 {
            Answer::status(500).body("boom")
        } else {
            Answer::ok("")
        }
    });
    let s = Setup::start(
        "500",
        &json_receiver(&sink.url("/h"), r#"["50ms", "50ms", "50ms"]"#, ""),
    );
    s.commit(vec![red(&s.rules, 1)]);
    assert!(sink.wait_ok(1, WAIT).await);
    assert!(eventually(WAIT, || s.pending() == 0).await);
    assert_eq!(sink.hits().len(), 3);
    assert_eq!(s.count("hook", "retry"), 2);
    assert_eq!(s.count("hook", "delivered"), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.hits().len(), 3, "nothing after the success");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried() {
    let sink = Sink::start().await;
    sink.set_plan(|n, _| {
        if n == 0 {
            Answer::ok("").after(Duration::from_secs(3))
        } else {
            Answer::ok("")
        }
    });
    let s = Setup::start(
        "timeout",
        &json_receiver(&sink.url("/h"), r#"["100ms"]"#, r#"timeout = "300ms""#),
    );
    let started = Instant::now();
    s.commit(vec![red(&s.rules, 1)]);
    assert!(eventually(WAIT, || s.count("hook", "delivered") == 1).await);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "did not wait for the slow answer"
    );
    assert_eq!(s.count("hook", "retry"), 1);
    assert_eq!(sink.hits().len(), 2);
    s.stop().await;
}

/// 429 with Retry-After: the receiver is left alone that long, and the wait is not counted
/// against the retry schedule (one retry here, which a 429 does not use up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_waits_for_retry_after() {
    let sink = Sink::start().await;
    sink.set_plan(|n, _| {
        if n == 0 {
            Answer::status(429).header("retry-after", "1")
        } else {
            Answer::ok("")
        }
    });
    let s = Setup::start(
        "429",
        &json_receiver(&sink.url("/h"), r#"["50ms"]"#, "concurrency = 1"),
    );
    s.commit(vec![red(&s.rules, 1), red(&s.rules, 2)]);
    assert!(sink.wait_ok(2, WAIT).await);
    let hits = sink.hits();
    assert_eq!(hits[0].status, 429);
    let waited = hits[1].at - hits[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "waited {waited:?} after Retry-After: 1"
    );
    assert_eq!(hits.len(), 3);
    assert_eq!(s.count("hook", "throttled"), 1);
    assert!(eventually(WAIT, || s.pending() == 0).await);
    assert!(
        delivery::dead_letters(&s.store, 0, 10, None)
            .expect("dead")
            .is_empty()
    );
    s.stop().await;
}

/// Dead letters of a receiver that will never take them are dropped by hand: only those
/// named (by number, or the receiver's), never all for want of a selection; gone from the
/// dead letters and the metric, never delivered when the receiver answers again, and the
/// alerts themselves still in the alert log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_dropped_by_hand_are_gone_and_their_alerts_kept() {
    let sink = Sink::start().await;
    sink.set_plan(|_, _| Answer::status(410).body("retired"));
    let s = Setup::start(
        "drop",
        &json_receiver(&sink.url("/old"), r#"["50ms", "50ms"]"#, ""),
    );
    s.commit((1..=3).map(|n| red(&s.rules, n)).collect());
    let dead_seqs = || -> Vec<u64> {
        delivery::dead_letters(&s.store, 0, 10, None)
            .map(|d| d.iter().map(|r| r.seq).collect())
            .unwrap_or_default()
    };
    assert!(eventually(WAIT, || dead_seqs().len() == 3).await);
    let gauge = || {
        s.metrics
            .delivery_dead_letters
            .with_label_values(&["hook"])
            .get()
    };
    // The gauge and the counter follow the commit that stores the dead letters.
    assert!(eventually(WAIT, || gauge() == 3 && s.count("hook", "dead") == 3).await);
    let alerts_before = s.store.alert_count().expect("alerts");

    let none = delivery::drop_dead(&s.store, Some(&s.metrics), &Selection::default())
        .expect("drop nothing");
    assert!(none.is_empty(), "an empty selection drops nothing");
    assert_eq!(dead_seqs().len(), 3);

    let first = dead_seqs()[0];
    let by = delivery::drop_dead(
        &s.store,
        Some(&s.metrics),
        &Selection {
            receiver: None,
            seqs: vec![first],
        },
    )
    .expect("drop one");
    assert_eq!(by.get("hook"), Some(&1));
    assert_eq!(dead_seqs().len(), 2);
    assert!(!dead_seqs().contains(&first));
    assert_eq!(gauge(), 2);

    let other = delivery::drop_dead(
        &s.store,
        Some(&s.metrics),
        &Selection {
            receiver: Some("elsewhere".into()),
            seqs: vec![],
        },
    )
    .expect("drop another receiver's");
    assert!(
        other.is_empty(),
        "another receiver's selection leaves these"
    );
    let by = delivery::drop_dead(
        &s.store,
        Some(&s.metrics),
        &Selection {
            receiver: Some("hook".into()),
            seqs: vec![],
        },
    )
    .expect("drop the receiver's");
    assert_eq!(by.get("hook"), Some(&2));
    assert!(dead_seqs().is_empty());
    assert_eq!(gauge(), 0);
    assert_eq!(
        s.count("hook", "dead"),
        3,
        "the counter of dead letters keeps history"
    );

    // The receiver answers again: nothing dropped comes back to it.
    sink.set_plan(|_, _| Answer::ok(""));
    let resent = delivery::resend_dead(
        &s.store,
        Some(&s.metrics),
        &Selection::default(),
        chrono::Utc::now().timestamp_millis(),
    )
    .expect("resend");
    assert_eq!(resent, 0);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sink.hits().len(), 3, "only the three refused attempts");
    assert_eq!(
        s.store.alert_count().expect("alerts"),
        alerts_before,
        "the alerts stay in the log"
    );
    s.stop().await;
}

/// A 4xx is a dead letter at once (visible in the API's data and the metrics); fixed and
/// re-sent, it is delivered. 408 is retried like a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_dead_letters_until_resent() {
    let sink = Sink::start().await;
    sink.set_plan(|_, h| {
        if h.path == "/gone" {
            Answer::status(404).body("no such hook")
        } else {
            Answer::ok("")
        }
    });
    let s = Setup::start(
        "4xx",
        &json_receiver(&sink.url("/gone"), r#"["50ms", "50ms"]"#, ""),
    );
    s.commit(vec![red(&s.rules, 1)]);
    assert!(
        eventually(WAIT, || {
            delivery::dead_letters(&s.store, 0, 10, None)
                .map(|d| d.len() == 1)
                .unwrap_or(false)
        })
        .await
    );
    let dead = delivery::dead_letters(&s.store, 0, 10, None).expect("dead");
    assert_eq!(dead[0].receiver, "hook");
    assert_eq!(dead[0].case, "XZ-00001");
    assert!(dead[0].error.contains("404"), "{}", dead[0].error);
    assert!(dead[0].error.contains("no such hook"), "{}", dead[0].error);
    assert_eq!(sink.hits().len(), 1, "a 404 is not retried");
    // The gauge and the counter follow the commit that stores the dead letter.
    assert!(
        eventually(WAIT, || {
            s.metrics
                .delivery_dead_letters
                .with_label_values(&["hook"])
                .get()
                == 1
                && s.count("hook", "dead") == 1
        })
        .await
    );
    assert!(
        s.metrics
            .render()
            .contains("redlight_delivery_dead_letters")
    );
    // The receiver is fixed: now every path answers 200.
    sink.set_plan(|_, _| Answer::ok(""));
    let n = delivery::resend_dead(
        &s.store,
        Some(&s.metrics),
        &Selection {
            receiver: Some("hook".into()),
            seqs: vec![],
        },
        chrono::Utc::now().timestamp_millis(),
    )
    .expect("resend");
    assert_eq!(n, 1);
    assert!(sink.wait_ok(1, WAIT).await);
    assert!(eventually(WAIT, || s.pending() == 0).await);
    assert!(
        delivery::dead_letters(&s.store, 0, 10, None)
            .expect("dead")
            .is_empty()
    );
    assert_eq!(
        s.metrics
            .delivery_dead_letters
            .with_label_values(&["hook"])
            .get(),
        0
    );
    s.stop().await;

    // 408 is a timeout on the receiver's side: retried.
    let sink = Sink::start().await;
    sink.set_plan(|n, _| {
        if n == 0 {
            Answer::status(408)
        } else {
            Answer::ok("")
        }
    });
    let s = Setup::start("408", &json_receiver(&sink.url("/h"), r#"["50ms"]"#, ""));
    s.commit(vec![red(&s.rules, 1)]);
    assert!(sink.wait_ok(1, WAIT).await);
    assert_eq!(s.count("hook", "retry"), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_schedule_is_a_dead_letter() {
    let sink = Sink::start().await;
    sink.set_plan(|_, _| Answer::status(503));
    let s = Setup::start(
        "exhausted",
        &json_receiver(&sink.url("/h"), r#"["20ms", "20ms"]"#, ""),
    );
    s.commit(vec![red(&s.rules, 1)]);
    assert!(
        eventually(WAIT, || {
            delivery::dead_letters(&s.store, 0, 10, None)
                .map(|d| d.len() == 1)
                .unwrap_or(false)
        })
        .await
    );
    let dead = delivery::dead_letters(&s.store, 0, 10, None).expect("dead");
    assert_eq!(sink.hits().len(), 3, "the first attempt and two retries");
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0].error.contains("gave up after 3 attempts"),
        "{}",
        dead[0].error
    );
    assert!(dead[0].error.contains("503"), "{}", dead[0].error);
    s.stop().await;
}

/// The receiver is down (nothing listens) for a while, then comes up: every alert arrives,
/// each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_gets_everything_when_back() {
    let addr = free_addr();
    let s = Setup::start(
        "down",
        &json_receiver(
            &format!("http://{addr}/h"),
            r#"["100ms", "200ms", "400ms", "400ms", "400ms", "400ms", "400ms", "400ms", "400ms", "400ms", "400ms", "400ms"]"#,
            "",
        ),
    );
    let alerts: Vec<Alert> = (0..20).map(|i| red(&s.rules, i)).collect();
    s.commit(alerts.clone());
    assert!(
        eventually(WAIT, || s.count("hook", "retry") >= 20).await,
        "attempts failed"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s.pending(), 20, "queued, none lost");
    let sink = Sink::start_on(addr).await;
    sink.set_plan(|_, _| Answer::ok(""));
    assert!(sink.wait_ok(20, WAIT).await, "all delivered once back");
    assert!(eventually(WAIT, || s.pending() == 0).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = ids(&sink);
    assert_eq!(got.len(), 20);
    assert!(got.values().all(|&n| n == 1), "each id once: {got:?}");
    for a in &alerts {
        assert!(got.contains_key(&a.id));
    }
    s.stop().await;
}

/// A resolution never overtakes its firing: the firing fails once and waits for its retry,
/// and the resolution, committed after it, waits behind it (before 2026-12-08 it went at
/// once, and a chat group read the red's resolution before the red; an Alertmanager
/// receiver then showed the red for good). Other alerts are not held back. The receiver has
/// the default concurrency, so without the hold both would be sent at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_waits_for_its_firing_that_failed() {
    let sink = Sink::start().await;
    let s = Setup::start(
        "in-order",
        &json_receiver(
            &sink.url("/h"),
            r#"["400ms", "400ms", "400ms"]"#,
            "send_resolved = true",
        ),
    );
    // The first request fails: it is the firing's.
    sink.set_plan(|n, _| {
        if n == 0 {
            Answer::status(500)
        } else {
            Answer::ok("")
        }
    });
    let firing = red(&s.rules, 1);
    let resolved = alert(
        &s.rules,
        &firing.case,
        "xk.decision",
        "1@0",
        Level::Red,
        Status::Resolved,
        Reason::CompletedLate,
        "2026-11-03T10:00:00+08:00",
        Some("2026-10-31T00:00:00+08:00"),
    );
    let other = red(&s.rules, 2);
    s.commit(vec![firing.clone()]);
    assert!(
        eventually(WAIT, || s.count("hook", "retry") >= 1).await,
        "the firing failed"
    );
    assert!(s.settled(1).await, "its failure recorded");
    s.commit(vec![resolved.clone(), other.clone()]);
    assert!(sink.wait_ok(3, WAIT).await, "all three delivered");
    let order = delivered(&sink);
    let at = |id: &str| order.iter().position(|x| x == id).expect("delivered");
    assert_eq!(order.len(), 3, "each once: {order:?}");
    assert!(
        at(&firing.id) < at(&resolved.id),
        "the firing before its resolution: {order:?}"
    );
    // Another case's alert did not wait for the retry.
    assert!(
        at(&other.id) < at(&firing.id),
        "the other case's red went before the retry: {order:?}"
    );
    s.stop().await;
}

/// After a restart too: a firing that failed and waits for its retry (a minute away) holds
/// back its resolution, committed while the receiver was down. The receiver is back at
/// the restart; the firing goes first (as the probe of a receiver that was failing), then
/// its resolution. Without the outbox read in at the start, the resolution, due, went first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_resolution_still_waits_for_its_firing() {
    let addr = free_addr();
    let extra = json_receiver(
        &format!("http://{addr}/h"),
        r#"["50ms", "60s", "60s", "60s"]"#,
        "send_resolved = true",
    );
    let s = Setup::start("restart-order", &extra);
    let firing = red(&s.rules, 1);
    let resolved = alert(
        &s.rules,
        &firing.case,
        "xk.decision",
        "1@0",
        Level::Red,
        Status::Resolved,
        Reason::Completed,
        "2026-10-30T10:00:00+08:00",
        Some("2026-10-31T00:00:00+08:00"),
    );
    s.commit(vec![firing.clone()]);
    assert!(eventually(WAIT, || s.count("hook", "retry") >= 2).await);
    assert!(s.settled(2).await, "the failures recorded");
    s.commit(vec![resolved.clone()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sink = Sink::start_on(addr).await;
    sink.set_plan(|_, _| Answer::ok(""));
    let s = s.restart(&extra).await;
    assert!(sink.wait_ok(2, WAIT).await, "both delivered");
    let order = delivered(&sink);
    assert_eq!(order, [firing.id.to_string(), resolved.id.to_string()]);
    s.stop().await;
}

/// The receiver is down long enough that the waiting deliveries' next retries are a
/// minute away; it comes back, and a new alert goes through at once. The receiver is
/// taking deliveries again, so the waiting ones go now too, not a minute later at their
/// retry's time (on the default schedule that is up to 10 minutes; one of `1h` an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_back_gets_the_deliveries_waiting_for_a_retry_at_once() {
    let addr = free_addr();
    let s = Setup::start(
        "back",
        &json_receiver(
            &format!("http://{addr}/h"),
            r#"["50ms", "60s", "60s", "60s"]"#,
            "",
        ),
    );
    let waiting: Vec<Alert> = (0..20).map(|i| red(&s.rules, i)).collect();
    s.commit(waiting.clone());
    // Two failed attempts each: the next is a minute away.
    assert!(
        eventually(WAIT, || s.count("hook", "retry") >= 40).await,
        "attempts failed: {}",
        s.count("hook", "retry")
    );
    assert!(s.settled(2).await, "the failures recorded");
    let sink = Sink::start_on(addr).await;
    sink.set_plan(|_, _| Answer::ok(""));
    let fresh = red(&s.rules, 20);
    s.commit(vec![fresh.clone()]);
    let t = Instant::now();
    assert!(
        sink.wait_ok(21, WAIT).await,
        "the waiting deliveries went with the new one ({} of 21 within {WAIT:?})",
        sink.ok_hits().len()
    );
    eprintln!(
        "21 delivered {:?} after the receiver took one again",
        t.elapsed()
    );
    let got = ids(&sink);
    assert!(got.values().all(|&n| n == 1), "each id once: {got:?}");
    for a in waiting.iter().chain([&fresh]) {
        assert!(got.contains_key(&a.id), "{} delivered", a.id);
    }
    assert!(eventually(WAIT, || s.pending() == 0).await);
    s.stop().await;
}

/// Deliveries that failed before a restart and wait for their retry (a minute away) go
/// with the receiver's first success after it, as within one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_receivers_first_success_sends_what_failed_before() {
    let addr = free_addr();
    let extra = json_receiver(
        &format!("http://{addr}/h"),
        r#"["50ms", "60s", "60s", "60s"]"#,
        "",
    );
    let s = Setup::start("restart-back", &extra);
    let waiting: Vec<Alert> = (0..10).map(|i| red(&s.rules, i)).collect();
    s.commit(waiting.clone());
    assert!(eventually(WAIT, || s.count("hook", "retry") >= 20).await);
    // Stopped and started again on the same store, the receiver still down.
    let s = s.restart(&extra).await;
    let sink = Sink::start_on(addr).await;
    sink.set_plan(|_, _| Answer::ok(""));
    let fresh = red(&s.rules, 10);
    s.commit(vec![fresh.clone()]);
    assert!(
        sink.wait_ok(11, WAIT).await,
        "the deliveries that failed before the restart went with the new one ({} of 11)",
        sink.ok_hits().len()
    );
    let got = ids(&sink);
    assert!(got.values().all(|&n| n == 1), "each id once: {got:?}");
    for a in waiting.iter().chain([&fresh]) {
        assert!(got.contains_key(&a.id), "{} delivered", a.id);
    }
    s.stop().await;
}

/// A receiver that fails now and then does not have its waiting retries sent early each
/// time it takes one: at most once a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_receiver_catches_up_at_most_once_a_minute() {
    let sink = Sink::start().await;
    // The alerts of cases XZ-00010 and XZ-00020 are taken, the others answered 503.
    sink.set_plan(|_, h| {
        if h.json()["case"].as_str().is_some_and(|c| c.ends_with('0')) {
            Answer::ok("")
        } else {
            Answer::status(503)
        }
    });
    let s = Setup::start(
        "flap",
        &json_receiver(&sink.url("/h"), r#"["50ms", "60s", "60s", "60s"]"#, ""),
    );
    let mut alerts: Vec<Alert> = (1..10).map(|i| red(&s.rules, i)).collect();
    s.commit(alerts.clone());
    assert!(eventually(WAIT, || s.count("hook", "retry") >= 18).await);
    assert!(s.settled(2).await, "the failures recorded");
    // One goes through: the nine waiting are tried again at once (and fail again).
    let first_ok = red(&s.rules, 10);
    alerts.push(first_ok.clone());
    s.commit(vec![first_ok]);
    assert!(
        eventually(WAIT, || s.count("hook", "retry") >= 27).await,
        "the catch-up tried the waiting ones: {} retries",
        s.count("hook", "retry")
    );
    // Another success within the minute: no second catch-up.
    let second_ok = red(&s.rules, 20);
    s.commit(vec![second_ok]);
    assert!(eventually(WAIT, || s.count("hook", "delivered") >= 2).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.count("hook", "retry"),
        27,
        "no second catch-up within the minute"
    );
    s.stop().await;
}

/// A receiver whose deliveries all wait for a retry an hour away is probed with the one due
/// soonest (every 30 s; 300 ms here): while it is still down a failed probe uses up nothing of
/// the schedule (a schedule of two attempts, each delivery failed twice already, would make
/// every further counted failure a dead letter), and once it answers, every waiting delivery
/// goes within a probe's interval, with no new alert to bring it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_probed_and_a_failed_probe_uses_nothing_up() {
    let sink = Sink::start().await;
    sink.set_plan(|_, _| Answer::status(503));
    let extra = json_receiver(&sink.url("/h"), r#"["50ms", "1h"]"#, "");
    let s = Setup::start_with(
        "probe",
        &extra,
        Options {
            probe_every: Some(Duration::from_millis(300)),
            ..Default::default()
        },
        |_| {},
    );
    let alerts: Vec<Alert> = (0..5).map(|i| red(&s.rules, i)).collect();
    s.commit(alerts.clone());
    // Two attempts each: the first, and the retry 50 ms later; the next is an hour away.
    assert!(eventually(WAIT, || s.count("hook", "retry") >= 10).await);
    // Still down: probes fail, one at a time, and make no dead letter.
    assert!(
        eventually(WAIT, || s.count("hook", "retry") >= 14).await,
        "probes sent while the receiver is down: {} failed attempts",
        s.count("hook", "retry")
    );
    assert_eq!(
        s.count("hook", "dead"),
        0,
        "a failed probe uses up no retry"
    );
    let dead = delivery::dead_letters(&s.store, 0, 10, None).expect("dead letters");
    assert!(dead.is_empty(), "no dead letter: {dead:?}");
    // Back: the next probe goes through, and the rest with it.
    sink.set_plan(|_, _| Answer::ok(""));
    assert!(
        sink.wait_ok(5, WAIT).await,
        "every waiting delivery sent once the receiver is back ({} of 5)",
        sink.ok_hits().len()
    );
    let got = ids(&sink);
    for a in &alerts {
        assert!(got.contains_key(&a.id), "{} delivered", a.id);
    }
    s.stop().await;
}

/// A receiver back within a minute of its last catch-up (1.5 s here) gets its waiting
/// retries when that minute is over, not at their retries' times an hour away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_back_again_within_the_minute_catches_up_when_it_is_over() {
    let sink = Sink::start().await;
    sink.set_plan(|_, _| Answer::status(503));
    let every = Duration::from_millis(1500);
    let s = Setup::start_with(
        "owed",
        &json_receiver(&sink.url("/h"), r#"["50ms", "1h", "1h"]"#, ""),
        Options {
            probe_every: Some(Duration::from_secs(3600)),
            catch_up_every: Some(every),
            ..Default::default()
        },
        |_| {},
    );
    let first: Vec<Alert> = (1..6).map(|i| red(&s.rules, i)).collect();
    s.commit(first.clone());
    assert!(eventually(WAIT, || s.count("hook", "retry") >= 10).await);
    assert!(s.settled(2).await, "the failures recorded");
    // Back: a new alert goes through, and the five waiting with it (the first catch-up).
    sink.set_plan(|_, _| Answer::ok(""));
    s.commit(vec![red(&s.rules, 100)]);
    assert!(sink.wait_ok(6, WAIT).await, "the first catch-up");
    let caught_up = Instant::now();
    // Down and back again at once: five more wait for a retry an hour away.
    sink.set_plan(|_, _| Answer::status(503));
    let second: Vec<Alert> = (11..16).map(|i| red(&s.rules, i)).collect();
    s.commit(second.clone());
    assert!(eventually(WAIT, || s.count("hook", "retry") >= 20).await);
    assert!(s.settled(2).await, "the failures recorded");
    sink.set_plan(|_, _| Answer::ok(""));
    s.commit(vec![red(&s.rules, 200)]);
    assert!(
        sink.wait_ok(12, WAIT).await,
        "the second five sent once the interval since the first catch-up is over ({} of 12)",
        sink.ok_hits().len()
    );
    let got = ids(&sink);
    for a in &second {
        assert!(got.contains_key(&a.id), "{} delivered", a.id);
        let hit = sink
            .ok_hits()
            .into_iter()
            .find(|h| h.json()["id"] == a.id.as_str())
            .expect("its hit");
        assert!(
            hit.at >= caught_up + every - Duration::from_millis(200),
            "not before the interval is over: {:?} after the first catch-up",
            hit.at.saturating_duration_since(caught_up)
        );
    }
    s.stop().await;
}

/// A robot's rate limit queues the rest, never drops them (the window is shortened here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_queues_and_never_drops() {
    let sink = Sink::start().await;
    let s = Setup::start_with(
        "rate",
        &format!(
            r#"
[[receiver]]
name = "robot"
format = "dingtalk"
url = "{}"
rate_limit_per_minute = 5

[[route]]
receivers = "robot"
"#,
            sink.url("/dingtalk/robot/send?access_token=abcdef123456")
        ),
        Options {
            rate_window: Some(Duration::from_secs(3)),
            ..Default::default()
        },
        |_| {},
    );
    let alerts: Vec<Alert> = (0..8).map(|i| red(&s.rules, i)).collect();
    s.commit(alerts.clone());
    assert!(sink.wait_ok(5, WAIT).await);
    assert!(
        eventually(WAIT, || s.pending() == 3).await,
        "the rest wait in the outbox"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.hits().len(), 5, "at most 5 in the window");
    assert!(sink.wait_ok(8, WAIT).await, "and go out in the next window");
    let hits = sink.hits();
    // The window is 3 s from the first send; the margin is for the requests' own latency.
    let waited = hits[5].at - hits[0].at;
    assert!(waited >= Duration::from_millis(2500), "{waited:?}");
    // In order: a chat robot gets one message at a time.
    let cases: Vec<String> = hits
        .iter()
        .map(|h| {
            let t = h.json()["markdown"]["text"]
                .as_str()
                .unwrap_or("")
                .to_string();
            t.split("XZ-")
                .nth(1)
                .unwrap_or("")
                .chars()
                .take(5)
                .collect()
        })
        .collect();
    let mut sorted = cases.clone();
    sorted.sort();
    assert_eq!(cases, sorted);
    s.stop().await;
}

/// What a receiver answers never brings its secrets into the dead letters or the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_show_in_dead_letters_or_metrics() {
    let sink = Sink::start().await;
    // A robot that refuses the signature and echoes the whole request line back.
    sink.set_plan(|_, h| {
        Answer::ok(&format!(
            r#"{{"errcode":310000,"errmsg":"sign not match, request {}?{}"}}"#,
            h.path, h.query
        ))
    });
    let s = Setup::start(
        "redact",
        &format!(
            r#"
[[receiver]]
name = "robot"
format = "dingtalk"
url = "{}"
secret = "SECverysecretsigningkey"

[[route]]
receivers = "robot"
"#,
            sink.url("/robot/send?access_token=ACCESS-TOKEN-42")
        ),
    );
    s.commit(vec![red(&s.rules, 1)]);
    assert!(
        eventually(WAIT, || {
            delivery::dead_letters(&s.store, 0, 10, None)
                .map(|d| d.len() == 1)
                .unwrap_or(false)
        })
        .await
    );
    let dead = delivery::dead_letters(&s.store, 0, 10, None).expect("dead");
    let shown = serde_json::to_string(&dead).expect("json");
    assert!(shown.contains("dingtalk error 310000"), "{shown}");
    assert!(!shown.contains("ACCESS-TOKEN-42"), "{shown}");
    assert!(!shown.contains("SECverysecretsigningkey"), "{shown}");
    let metrics = s.metrics.render();
    assert!(!metrics.contains("ACCESS-TOKEN-42"));
    assert!(metrics.contains(r#"redlight_deliveries_total{outcome="refused",receiver="robot"} 1"#));
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// Routing and escalation.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_level_rule_prefix_department_and_labels() {
    let sink = Sink::start().await;
    sink.set_plan(|_, _| Answer::ok(""));
    let r = |name: &str, resolved: bool| {
        format!(
            "[[receiver]]\nname = \"{name}\"\nformat = \"json\"\nurl = \"{}\"\nsend_resolved = {resolved}\n",
            sink.url(&format!("/{name}"))
        )
    };
    let s = Setup::start(
        "routes",
        &format!(
            r#"
{}{}{}{}
[[route]]
name = "handlers"
levels = "yellow"
receivers = "handlers"

[[route]]
name = "heads"
levels = "red"
rule_prefix = ["xk.", "xz."]
receivers = ["heads", "office"]

[[route]]
departments = "市应急管理局"
receivers = "office"

[[route]]
labels = {{ handler = ["李四"], pack = "nx" }}
receivers = ["lisi"]
"#,
            r("handlers", false),
            r("heads", false),
            r("office", true),
            r("lisi", false),
        ),
    );
    let yellow = alert(
        &s.rules,
        "XZ-1",
        "xk.decision",
        "1@0",
        Level::Yellow,
        Status::Firing,
        Reason::Approaching,
        "2026-10-29T00:00:00+08:00",
        Some("2026-10-31T00:00:00+08:00"),
    );
    let red_xk = red(&s.rules, 2);
    let mut red_aq = alert(
        &s.rules,
        "AQ-3",
        "aq.accident_report",
        "1@0",
        Level::Red,
        Status::Firing,
        Reason::Overdue,
        "2026-11-02T11:00:00+08:00",
        Some("2026-11-02T11:00:00+08:00"),
    );
    red_aq.department = Some("市应急管理局".into());
    let mut resolved_aq = red_aq.clone();
    resolved_aq.status = Status::Resolved;
    resolved_aq.reason = Reason::CompletedLate;
    resolved_aq.id = redlight::alert::alert_id(
        "AQ-3",
        "aq.accident_report",
        "1@0",
        Level::Red,
        Status::Resolved,
    );
    let mut nx = alert(
        &s.rules,
        "NX-4",
        "nx.registration_decision",
        "1@0",
        Level::Red,
        Status::Firing,
        Reason::Overdue,
        "2026-11-02T00:00:00+08:00",
        Some("2026-11-02T00:00:00+08:00"),
    );
    nx.handler = Some("李四".into());
    s.commit(vec![
        yellow.clone(),
        red_xk.clone(),
        red_aq.clone(),
        resolved_aq.clone(),
        nx.clone(),
    ]);
    assert!(eventually(WAIT, || s.pending() == 0 && !sink.hits().is_empty()).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in sink.hits() {
        got.entry(h.path.trim_start_matches('/').to_string())
            .or_default()
            .push(h.header("webhook-id").unwrap_or("").to_string());
    }
    for v in got.values_mut() {
        v.sort();
    }
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(got["handlers"], vec![yellow.id.clone()]);
    assert_eq!(got["heads"], vec![red_xk.id.clone()]);
    assert_eq!(
        got["office"],
        sorted(vec![
            red_xk.id.clone(),
            red_aq.id.clone(),
            resolved_aq.id.clone()
        ]),
        "the office asks for resolutions; the heads do not"
    );
    assert_eq!(got["lisi"], vec![nx.id.clone()]);
    s.stop().await;
}

/// The responsibility chain: a red still open an hour later goes to the supervision office,
/// after 2 workdays to the leaders, each step an alert of its own; the resolution reaches
/// the steps' receivers that ask; a red resolved in time never escalates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_steps_are_alerts_of_their_own() {
    let sink = Sink::start().await;
    sink.set_plan(|_, _| Answer::ok(""));
    // Saturday 2026-10-31 00:00 (+08:00): the red fires.
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-10-31T00:00:00+08:00")
        .expect("time")
        .timestamp_millis();
    let now = Arc::new(AtomicI64::new(t0));
    let clock = {
        let now = now.clone();
        Arc::new(move || now.load(Ordering::SeqCst)) as delivery::Clock
    };
    let r = |name: &str| {
        format!(
            "[[receiver]]\nname = \"{name}\"\nformat = \"json\"\nurl = \"{}\"\nsend_resolved = true\n",
            sink.url(&format!("/{name}"))
        )
    };
    let s = Setup::start_with(
        "escalation",
        &format!(
            r#"
{}{}{}
[[route]]
levels = "red"
receivers = "heads"

[[escalation]]
name = "office"
after = "1h"
rule_prefix = "xk."
receivers = "office"

[[escalation]]
name = "leaders"
after = "2 workdays"
receivers = "leaders"
"#,
            r("heads"),
            r("office"),
            r("leaders"),
        ),
        Options {
            clock: Some(clock),
            ..Default::default()
        },
        |_| {},
    );
    let a = red(&s.rules, 1);
    let early = red(&s.rules, 2);
    s.commit(vec![a.clone(), early.clone()]);
    assert!(sink.wait_ok(2, WAIT).await, "the reds reach the heads");
    assert_eq!(s.metrics.escalations_pending.get(), 4);
    // XZ-00002 is completed in time for the office: its steps are cancelled.
    let mut done = early.clone();
    done.status = Status::Resolved;
    done.reason = Reason::CompletedLate;
    done.at = "2026-10-31T00:30:00+08:00".into();
    done.id = redlight::alert::alert_id(
        &done.case,
        "xk.decision",
        "1@0",
        Level::Red,
        Status::Resolved,
    );
    s.commit(vec![done.clone()]);
    assert!(sink.wait_ok(3, WAIT).await);
    assert_eq!(s.metrics.escalations_pending.get(), 2);

    now.store(t0 + 59 * 60_000, Ordering::SeqCst);
    s.delivery.wake();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sink.hits().len(), 3, "not yet");

    now.store(t0 + 3_600_000, Ordering::SeqCst);
    s.delivery.wake();
    assert!(
        sink.wait_ok(4, WAIT).await,
        "the office hears after an hour"
    );
    let office = sink.hits()[3].clone();
    assert_eq!(office.path, "/office");
    let v = office.json();
    let step1 = delivery::escalation_id(&a, "office", Status::Firing);
    assert_eq!(v["id"], step1.as_str());
    assert_ne!(step1, a.id);
    assert_eq!(office.header("webhook-id"), Some(step1.as_str()));
    assert_eq!(v["case"], "XZ-00001");
    assert_eq!(v["at"], "2026-10-31T01:00:00+08:00");
    assert_eq!(v["escalation"]["step"], "office");
    assert_eq!(v["escalation"]["index"], 1);
    assert_eq!(v["escalation"]["of"], a.id.as_str());

    // Two workdays after Saturday 00:00: Monday and Tuesday, so Wednesday 00:00.
    now.store(t0 + 3 * 86_400_000 - 1, Ordering::SeqCst);
    s.delivery.wake();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sink.hits().len(), 4);
    now.store(t0 + 4 * 86_400_000, Ordering::SeqCst);
    s.delivery.wake();
    assert!(
        sink.wait_ok(5, WAIT).await,
        "the leaders hear after 2 workdays"
    );
    let leaders = sink.hits()[4].json();
    assert_eq!(leaders["escalation"]["step"], "leaders");
    assert_eq!(leaders["escalation"]["index"], 2);
    assert_eq!(leaders["at"], "2026-11-04T00:00:00+08:00");
    assert_eq!(
        leaders["id"],
        delivery::escalation_id(&a, "leaders", Status::Firing).as_str()
    );
    assert_eq!(s.metrics.escalations_pending.get(), 0);
    assert_eq!(
        s.metrics.escalations.with_label_values(&["office"]).get(),
        1,
        "XZ-00002 never escalated"
    );

    // Resolved: the heads, the office and the leaders hear it, each with its own id.
    let mut fixed = a.clone();
    fixed.status = Status::Resolved;
    fixed.reason = Reason::CompletedLate;
    fixed.at = "2026-11-04T09:00:00+08:00".into();
    fixed.id =
        redlight::alert::alert_id(&a.case, "xk.decision", "1@0", Level::Red, Status::Resolved);
    s.commit(vec![fixed.clone()]);
    assert!(sink.wait_ok(8, WAIT).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tail: HashMap<String, serde_json::Value> = sink.hits()[5..]
        .iter()
        .map(|h| (h.path.clone(), h.json()))
        .collect();
    assert_eq!(tail.len(), 3);
    assert_eq!(tail["/heads"]["id"], fixed.id.as_str());
    assert_eq!(
        tail["/office"]["id"],
        delivery::escalation_id(&a, "office", Status::Resolved).as_str()
    );
    assert_eq!(tail["/office"]["status"], "resolved");
    assert_eq!(
        tail["/leaders"]["id"],
        delivery::escalation_id(&a, "leaders", Status::Resolved).as_str()
    );
    assert_eq!(sink.hits().len(), 8);
    s.stop().await;
}

/// In the daemon, a step waits for the engine's clock: while a backlog is consumed the red's
/// resolution may still be in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_waits_for_the_engine_clock() {
    let sink = Sink::start().await;
    sink.set_plan(|_, _| Answer::ok(""));
    let s = Setup::start_with(
        "gate",
        &format!(
            r#"
[[receiver]]
name = "office"
format = "json"
url = "{}"

[[escalation]]
name = "office"
after = "1h"
receivers = "office"
"#,
            sink.url("/office")
        ),
        Options {
            gate_on_engine_time: true,
            ..Default::default()
        },
        |_| {},
    );
    let a = red(&s.rules, 1); // at 2026-10-31: long past by the wall clock
    s.commit(vec![a.clone()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.hits().is_empty(), "the engine has not got there yet");
    let t = chrono::DateTime::parse_from_rfc3339("2026-10-31T00:59:00+08:00")
        .expect("t")
        .timestamp_millis();
    s.delivery.set_engine_time(t);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.hits().is_empty());
    s.delivery.set_engine_time(t + 60_000);
    assert!(sink.wait_ok(1, WAIT).await);
    assert_eq!(
        sink.hits()[0].json()["id"],
        delivery::escalation_id(&a, "office", Status::Firing).as_str()
    );
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// Configuration.

#[test]
fn configuration_mistakes_name_the_key() {
    let dir = tmp("config");
    let cases: &[(&str, &str)] = &[
        (
            "[[receiver]]\nname = \"a\"\nformat = \"slack\"\nurl = \"http://x/\"\n",
            "`receiver[0].format`",
        ),
        (
            "[[receiver]]\nname = \"a\"\nformat = \"json\"\nurl = \"ftp://x/\"\n",
            "`receiver[0].url`",
        ),
        (
            "[[receiver]]\nname = \"a\"\nformat = \"json\"\nurl = \"http://x/\"\n[[route]]\nreceivers = \"b\"\n",
            "`route[0].receivers[0]`",
        ),
        (
            "[[receiver]]\nname = \"a\"\nformat = \"json\"\nurl = \"http://x/\"\n[[route]]\nlevels = \"orange\"\nreceivers = \"a\"\n",
            "`route[0].levels[0]`",
        ),
        (
            "[[receiver]]\nname = \"a\"\nformat = \"json\"\nurl = \"http://x/\"\n[[route]]\nlabels = { colour = \"x\" }\nreceivers = \"a\"\n",
            "`route[0].labels.colour`",
        ),
        (
            "[[receiver]]\nname = \"a\"\nformat = \"json\"\nurl = \"http://x/\"\n[[escalation]]\nname = \"s\"\nafter = \"soon\"\nreceivers = \"a\"\n",
            "`escalation[0].after`",
        ),
        (
            "[delivery]\nretry = [\"1s\", \"often\"]\n",
            "`delivery.retry[1]`",
        ),
        (
            "[[receiver]]\nname = \"a\"\nformat = \"wecom\"\nurl = \"http://x/\"\nsecret = \"s\"\n",
            "`receiver[0]`",
        ),
        (
            "[[receiver]]\nname = \"a\"\nformat = \"json\"\nurl = \"http://x/\"\n[[receiver]]\nname = \"a\"\nformat = \"json\"\nurl = \"http://y/\"\n",
            "`receiver[1].name`",
        ),
        // Appended after the test config's `[store]` header: a key of `[store]`.
        ("cache_mib = 0\n", "`store.cache_mib`"),
        ("checkpoint_cases = 0\n", "`store.checkpoint_cases`"),
        // Values of the wrong type and keys no section has: the key as above, not as
        // figment names it (`default.store.cache_mib`).
        (
            "cache_mib = \"lots\"\n",
            "`store.cache_mib`: invalid type: found string \"lots\"",
        ),
        ("cache_mb = 32\n", "`store.cache_mb`: unknown field"),
    ];
    std::fs::write(dir.join("not-a-ca.pem"), "a certificate\n").expect("a file");
    let cases = [
        cases,
        &[
            (
                "[delivery]\nca_file = \"missing-ca.pem\"\n",
                "`delivery.ca_file`: cannot read",
            ),
            (
                "[delivery]\nca_file = \"not-a-ca.pem\"\n",
                "not-a-ca.pem holds no certificate (-----BEGIN CERTIFICATE-----)",
            ),
            (
                "[delivery]\nproxy = \"socks5://127.0.0.1:1080\"\n",
                "`delivery.proxy` must be an http:// proxy URL",
            ),
            (
                "[delivery]\nno_proxy = [\"10.0.0.0/40\"]\n",
                "`delivery.no_proxy[0]`",
            ),
            (
                "[[receiver]]\nname = \"a\"\nformat = \"wecom\"\nurl = \"http://x/\"\nmention = \"all\"\n",
                "`receiver[0].mention[0]` is \"all\"; write a WeCom user id",
            ),
            (
                "[[receiver]]\nname = \"a\"\nformat = \"dingtalk\"\nurl = \"http://x/\"\nmention = \"张三\"\n",
                "`receiver[0].mention[0]` is \"张三\"; write a mobile number",
            ),
            (
                "[[receiver]]\nname = \"a\"\nformat = \"json\"\nurl = \"http://x/\"\nmention = \"13800000000\"\n",
                "`receiver[0].mention`: only chat robots",
            ),
        ][..],
    ]
    .concat();
    for (extra, key) in cases {
        let path = write_config(&dir, extra);
        let err = redlight::config::Config::load(&path)
            .err()
            .unwrap_or_else(|| panic!("must fail: {extra}"));
        assert!(err.to_string().contains(key), "{key} in {err}");
    }
    // The shipped configuration has no receiver and passes.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/redlight.toml");
    let c = redlight::config::Config::load(&shipped).expect("the shipped config loads");
    assert!(c.receivers.is_empty());
    // A wrong value from the environment names its variable (`redlight check`, a process of
    // its own: the environment is not this test's to change).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
        .args(["check", "--config"])
        .arg(&shipped)
        .env("REDLIGHT_ENGINE__RETENTION_DAYS", "soon")
        .output()
        .expect("running redlight check");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("`engine.retention_days`: invalid type: found string \"soon\"")
            && said.contains("(from REDLIGHT_ENGINE__RETENTION_DAYS)"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's "Webhooks" configuration (one receiver of each format) and the commented
/// examples in config/redlight.toml are valid.
#[test]
fn the_readme_and_the_shipped_examples_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let section = &readme[readme.find("## Webhooks").expect("a Webhooks section")..];
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").expect("closed")];
    let shipped = std::fs::read_to_string(root.join("config/redlight.toml")).expect("config");
    let examples: String = shipped[shipped.find("# [delivery]").expect("examples")..]
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .or_else(|| l.strip_prefix("#"))
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n");
    for (what, text) in [
        ("README", block),
        ("config/redlight.toml", examples.as_str()),
    ] {
        let dir = tmp("readme");
        let path = write_config(&dir, text);
        let config =
            redlight::config::Config::load(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        // `check` says where alerts go.
        let summary = redlight::cli::check(&path, None).summary;
        assert!(
            summary.contains("; alerts to 5 receivers, ")
                && summary.contains(", 1 escalation step"),
            "{what}: {summary}"
        );
        let settings = delivery::Settings::from_config(&config).expect("settings");
        let mut formats: Vec<&str> = settings
            .receivers
            .iter()
            .map(|r| r.format.as_str())
            .collect();
        formats.sort();
        assert_eq!(
            formats,
            ["alertmanager", "dingtalk", "feishu", "json", "wecom"],
            "{what}: one receiver of each format"
        );
        assert_eq!(settings.steps.len(), 1, "{what}");
        assert!(settings.routes.len() >= 3, "{what}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_stops_the_start_naming_the_key() {
    let dir = tmp("missing-secret");
    let config = load_config(
        &dir,
        "[[receiver]]\nname = \"a\"\nformat = \"dingtalk\"\nurl = \"http://127.0.0.1:9/x\"\nsecret = \"env:REDLIGHT_TEST_SURELY_UNSET_4242\"\n",
    );
    let store = Arc::new(Store::open(&config.data_dir()).expect("store"));
    let err = Delivery::start(&config, store, Metrics::new(), Options::default())
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(msg.contains("`receiver[0].secret`"), "{msg}");
    assert!(msg.contains("REDLIGHT_TEST_SURELY_UNSET_4242"), "{msg}");

    // `redlight check` reads the secrets as the start does, and names every one it cannot
    // read (before 2026-12-08 it passed a configuration the start then refused).
    let missing = dir.join("no-such-secret");
    let whsec = dir.join("whsec");
    std::fs::write(&whsec, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").expect("secret file");
    let receivers = |second: &std::path::Path| {
        format!(
            "[[receiver]]\nname = \"a\"\nformat = \"dingtalk\"\nurl = \"http://127.0.0.1:9/x\"\n\
             secret = \"env:REDLIGHT_TEST_SURELY_UNSET_4242\"\n\
             [[receiver]]\nname = \"b\"\nformat = \"json\"\nurl = \"http://127.0.0.1:9/y\"\n\
             secrets = [\"file:{}\"]\n",
            second.display()
        )
    };
    let path = write_config(&dir, &receivers(&missing));
    let report = redlight::cli::check(&path, None);
    let problems = report.problems.join("\n");
    assert_eq!(report.problems.len(), 2, "{problems}");
    assert!(
        problems.contains(
            "`receiver[0].secret`: environment variable REDLIGHT_TEST_SURELY_UNSET_4242 is not set"
        ),
        "{problems}"
    );
    assert!(
        problems.contains(&format!(
            "`receiver[1].secrets[0]`: cannot read {}",
            missing.display()
        )),
        "{problems}"
    );
    // The second read from a file that holds a key: only the first is named.
    let path = write_config(&dir, &receivers(&whsec));
    let report = redlight::cli::check(&path, None);
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("`receiver[0].secret`"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Topic names the brokers would refuse are refused at start, named with the key: a
/// dead-letter topic's would keep every dead letter waiting in the store. An input given
/// as a pattern (`^…`, librdkafka's regex subscription) is left to librdkafka.
#[test]
fn kafka_topic_names_are_checked_at_start() {
    let dir = tmp("topic-names");
    let load = |kafka: &str| {
        redlight::config::Config::load(&write_config(&dir, &format!("[kafka]\n{kafka}\n")))
    };
    let err = load("dead_letter_topic = \"redlight dead letters\"")
        .expect_err("a space in a topic name")
        .to_string();
    assert!(
        err.contains(
            "`kafka.dead_letter_topic` \"redlight dead letters\" is not a Kafka topic name"
        ),
        "{err}"
    );
    let err = load("topics = [\"redlight.events\", \"事件\"]")
        .expect_err("a topic name not in ASCII")
        .to_string();
    assert!(err.contains("`kafka.topics` \"事件\""), "{err}");
    let long = "t".repeat(250);
    assert!(
        load(&format!("dead_letter_topic = \"{long}\"")).is_err(),
        "250 characters"
    );
    assert!(load("dead_letter_topic = \"..\"").is_err());
    let config = load("topics = [\"^redlight\\\\..*\", \"zj_2026.events-a\"]\ndead_letter_topic = \"redlight.dead-letter\"")
        .expect("a pattern and legal names");
    assert_eq!(config.kafka.topics[0], "^redlight\\..*");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Kafka client's settings (`[kafka.librdkafka]`) hold its SASL password: a `{:?}` of
/// the configuration shows their keys and none of their values.
#[test]
fn kafka_client_settings_are_not_printed() {
    let dir = tmp("librdkafka-secret");
    let config = load_config(
        &dir,
        "[kafka.librdkafka]\n\"sasl.username\" = \"redlight\"\n\"sasl.password\" = \"hunter2-42\"\n",
    );
    let password = config
        .kafka
        .librdkafka
        .get("sasl.password")
        .map(|s| s.expose());
    assert_eq!(password, Some("hunter2-42"));
    let shown = format!("{config:?}");
    assert!(shown.contains("sasl.password"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    // `redlight check` asks librdkafka whether it takes the settings, as the daemon's start
    // would: TLS with a SCRAM login passes (the default build has OpenSSL); a misspelt key
    // fails, named, and its value (here the password) is not printed.
    let check = |extra: &str| {
        let path = write_config(&dir, extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("redlight check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let tls = "[kafka.librdkafka]\n\"security.protocol\" = \"SASL_SSL\"\n\
               \"sasl.mechanism\" = \"SCRAM-SHA-256\"\n\"sasl.username\" = \"redlight\"\n\
               \"sasl.password\" = \"hunter2-42\"\n";
    let (code, text) = check(tls);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = check(&tls.replace("sasl.password", "sasl.pasword"));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("No such configuration property: \"sasl.pasword\""),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    // Kerberos: the default build takes GSSAPI (here with a ticket cache kept by the host,
    // no keytab, no kinit); a keytab that cannot be read is named, since librdkafka would
    // start anyway and never log in.
    let kerberos = "[kafka.librdkafka]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
                    \"sasl.mechanism\" = \"GSSAPI\"\n\"sasl.kerberos.service.name\" = \"kafka\"\n\
                    \"sasl.kerberos.min.time.before.relogin\" = \"0\"\n";
    let (code, text) = check(kerberos);
    assert_eq!(code, Some(0), "{text}");
    let missing = dir.join("missing.keytab");
    let (code, text) = check(&format!(
        "{kerberos}\"sasl.kerberos.keytab\" = \"{}\"\n",
        missing.display()
    ));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!(
            "sasl.kerberos.keytab: cannot read {}",
            missing.display()
        )),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// kill -9: a child process (this test binary, re-run on one ignored test) commits alerts and
// delivers; the parent kills it with SIGKILL and starts another on the same store.

const CHILD_ENV: &str = "REDLIGHT_DELIVERY_CHILD";

/// The child: opens the store in `$REDLIGHT_DELIVERY_CHILD` (a config file), commits
/// `$REDLIGHT_DELIVERY_ALERTS` alerts (if set), says "committed" and delivers until killed.
#[test]
#[ignore = "run by the kill -9 tests as a child process"]
fn child_process_delivers_until_killed() {
    let Ok(config_path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let config = redlight::config::Config::load(Path::new(&config_path)).expect("config");
        let rules = config.load_rules().expect("rules");
        let store = Arc::new(Store::open(&config.data_dir()).expect("store"));
        let _d = Delivery::start(&config, store.clone(), Metrics::new(), Options::default())
            .expect("delivery");
        if let Some(n) = std::env::var("REDLIGHT_DELIVERY_ALERTS")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
        {
            let alerts: Vec<Alert> = (0..n).map(|i| red(&rules, i)).collect();
            store
                .commit(&WriteBatch {
                    alerts,
                    ..Default::default()
                })
                .expect("commit");
            std::fs::write(Path::new(&config_path).with_extension("committed"), b"")
                .expect("marker");
        }
        std::future::pending::<()>().await;
    });
}

fn spawn_child(config: &Path, alerts: Option<usize>) -> std::process::Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("exe"));
    cmd.args([
        "--exact",
        "child_process_delivers_until_killed",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, config)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    if let Some(n) = alerts {
        cmd.env("REDLIGHT_DELIVERY_ALERTS", n.to_string());
    }
    cmd.spawn().expect("spawn the child")
}

/// The receiver is down while the alerts are committed; the process is killed with every
/// delivery still in the outbox; the next process delivers all of them, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_full_outbox_loses_nothing() {
    let addr = free_addr();
    let dir = tmp("kill-full");
    let config = write_config(
        &dir,
        &json_receiver(
            &format!("http://{addr}/h"),
            r#"["100ms", "200ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms"]"#,
            "",
        ),
    );
    let mut child = spawn_child(&config, Some(50));
    let marker = config.with_extension("committed");
    assert!(
        eventually(Duration::from_secs(30), || marker.exists()).await,
        "the child committed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    let sink = Sink::start_on(addr).await;
    sink.set_plan(|_, _| Answer::ok(""));
    let mut child = spawn_child(&config, None);
    let all = sink.wait_ok(50, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = ids(&sink);
    child.kill().expect("kill");
    let _ = child.wait();
    assert!(all, "all 50 delivered after the restart, got {}", got.len());
    assert_eq!(got.len(), 50);
    assert!(got.values().all(|&n| n == 1), "each once: {got:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Killed in the middle of delivering: after the restart everything arrives, and nothing
/// whose success was recorded before the kill is sent again. Only deliveries still in the
/// outbox at the kill (in flight, or answered but not yet recorded) may arrive twice: at
/// least once, and receivers drop duplicates by `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_repeats_nothing_that_was_confirmed() {
    let sink = Sink::start().await;
    sink.set_plan(|_, _| Answer::ok("").after(Duration::from_millis(15)));
    let dir = tmp("kill-mid");
    let config_path = write_config(
        &dir,
        &json_receiver(&sink.url("/h"), r#"["100ms", "200ms"]"#, "concurrency = 4"),
    );
    let mut child = spawn_child(&config_path, Some(300));
    assert!(sink.wait_ok(60, Duration::from_secs(30)).await);
    child.kill().expect("kill -9");
    let _ = child.wait();
    let before = ids(&sink);
    // What the store says is still to deliver (the lock died with the process).
    let config = redlight::config::Config::load(&config_path).expect("config");
    let unconfirmed: std::collections::HashSet<String> = {
        let store = Store::open(&config.data_dir()).expect("store");
        delivery::waiting(&store, 0, 10_000, None)
            .expect("waiting")
            .into_iter()
            .map(|w| w.alert_id)
            .collect()
    };
    assert!(!unconfirmed.is_empty() && unconfirmed.len() < 300);
    let confirmed: Vec<&String> = before
        .keys()
        .filter(|id| !unconfirmed.contains(*id))
        .collect();
    assert!(!confirmed.is_empty(), "some were confirmed before the kill");
    let mut child = spawn_child(&config_path, None);
    let all = eventually(Duration::from_secs(30), || ids(&sink).len() >= 300).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().expect("kill");
    let _ = child.wait();
    assert!(all, "all 300 delivered");
    let got = ids(&sink);
    assert_eq!(got.len(), 300);
    for id in confirmed {
        assert_eq!(
            got[id], 1,
            "{id} was confirmed before the kill and sent again"
        );
    }
    let repeated = got.iter().filter(|(_, n)| **n > 1).count();
    for (id, n) in &got {
        assert!(*n == 1 || unconfirmed.contains(id), "{id} sent {n} times");
    }
    eprintln!(
        "kill -9 mid-delivery: {} confirmed before the kill, {} unconfirmed, {repeated} sent again",
        before.len() - repeated.min(before.len()),
        unconfirmed.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// The real daemon: Kafka in, webhooks out, `kill -9` in between, `redlight deliveries`.

/// The broker: `REDLIGHT_TEST_KAFKA`, else the local one `scripts/kafka.sh start` runs.
fn kafka() -> String {
    if let Ok(b) = std::env::var("REDLIGHT_TEST_KAFKA")
        && !b.trim().is_empty()
    {
        return b;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh");
    let status = std::process::Command::new(&script)
        .arg("start")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("scripts/kafka.sh start");
    assert!(status.success(), "scripts/kafka.sh start failed");
    let out = std::process::Command::new(&script)
        .arg("bootstrap")
        .output()
        .expect("scripts/kafka.sh bootstrap");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Daemon {
    child: std::process::Child,
}

impl Daemon {
    fn start(config: &Path, log: &Path) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,redlight::delivery=debug")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("redlight run");
        Daemon { child }
    }

    fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    fn terminate(mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

/// A daemon left running by a failed assertion would hold its port and data for good.
impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain HTTP/1.0 GET.
fn get_text(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("answer");
    out
}

async fn api(config: &redlight::config::Config, path: &str) -> Option<serde_json::Value> {
    delivery::call_daemon(config, http::Method::GET, path, None)
        .await
        .ok()
        .flatten()
}

async fn pending_by_api(config: &redlight::config::Config, receiver: &str) -> Option<u64> {
    let v = api(config, "/api/v1/deliveries").await?;
    Some(
        v["receivers"]
            .as_array()?
            .iter()
            .find(|r| r["receiver"] == receiver)
            .and_then(|r| r["pending"].as_u64())
            .unwrap_or(0),
    )
}

/// Events go in through Kafka while the receiver is down; the daemon stores the alerts with
/// their deliveries and is killed with `kill -9`; restarted with the receiver up, it delivers
/// every alert once, signed. A receiver that refuses is a dead letter, re-sent by
/// `redlight deliveries resend` through the running daemon once fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_delivers_everything_after_kill_9() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let bootstrap = tokio::task::spawn_blocking(kafka).await.expect("broker");
    let stamp = format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let topic = format!("redlight-delivery-{stamp}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin client");
    let created = admin
        .create_topics(
            [&NewTopic::new(&topic, 2, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topic");
    for r in created {
        r.map_err(|(t, e)| format!("{t}: {e}"))
            .expect("topic created");
    }

    let hook = free_addr();
    let http_addr = free_addr();
    let secret = "whsec_ZGFlbW9uLXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODk=";
    let dir = tmp("daemon");
    let extra = format!(
        r#"
[kafka]
brokers = "{bootstrap}"
group_id = "g-{stamp}"
topics = ["{topic}"]
dead_letter_topic = "{topic}.dead"
idle_ms = 500

[http]
listen = "{http_addr}"

[delivery]
retry = ["200ms", "500ms", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]

[[receiver]]
name = "office"
format = "json"
url = "http://{hook}/office"
secret = "{secret}"

[[receiver]]
name = "picky"
format = "wecom"
url = "http://{hook}/picky/cgi-bin/webhook/send?key=picky-key-123"

[[route]]
receivers = ["office"]

[[route]]
rule_prefix = "aq.concealed"
departments = "市应急管理局"
receivers = ["picky"]
"#
    );
    let config_path = write_config(&dir, &extra);
    let config = redlight::config::Config::load(&config_path).expect("config");
    let log = dir.join("daemon.log");

    // 1. The receiver is down; 20 accidents come to light without a report: 20 reds.
    let mut d = Daemon::start(&config_path, &log);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let when = (chrono::Utc::now() - chrono::Duration::minutes(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let n = 20;
    for i in 0..n {
        let case = format!("AQ-{stamp}-{i:02}");
        let ev = serde_json::json!({
            "specversion": "1.0", "id": format!("evt-{case}"), "source": "/test",
            "type": "safety.accident_discovered", "time": when, "subject": case,
            "data": {"department": if i == 0 { "市应急管理局" } else { "市住建局" }, "by": "inspection"},
        })
        .to_string();
        producer
            .send(
                FutureRecord::to(&topic).key(&case).payload(&ev),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
    let mut waited = false;
    for _ in 0..600 {
        if pending_by_api(&config, "office").await == Some(n) {
            waited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !waited {
        let _ = d.child.kill();
        panic!(
            "the outbox never held {n} deliveries; daemon log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    // The receiver being down fails every attempt; the log warns once, not each time (each
    // attempt is at debug level, which this daemon logs).
    let retries = || {
        let text = get_text(http_addr, "/metrics");
        text.lines()
            .find(|l| {
                l.starts_with("redlight_deliveries_total")
                    && l.contains(r#"outcome="retry""#)
                    && l.contains(r#"receiver="office""#)
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let many = eventually(Duration::from_secs(30), || retries() >= 60.0).await;
    let said = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("delivery failed"))
        .count();
    assert!(
        many && said <= 2,
        "{} failed attempts, {said} log lines saying them (at most 2: once a minute)",
        retries()
    );
    // 2. kill -9 with everything in the outbox.
    Daemon::kill_9(d);

    // 3. The receiver comes up (the robot refuses at first); the daemon restarts.
    let sink = Sink::start_on(hook).await;
    sink.set_plan(|_, h| {
        if h.path.starts_with("/picky") {
            Answer::ok(r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#)
        } else {
            Answer::ok("")
        }
    });
    d = Daemon::start(&config_path, &log);
    let office_ok = || {
        sink.ok_hits()
            .into_iter()
            .filter(|h| h.path == "/office")
            .collect::<Vec<_>>()
    };
    let all = eventually(Duration::from_secs(90), || office_ok().len() >= n as usize).await;
    if !all {
        let _ = d.child.kill();
        panic!(
            "delivered {} of {n} after the restart; daemon log:\n{}",
            office_ok().len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hits = office_ok();
    let mut seen = HashMap::new();
    for h in &hits {
        let id = h.header("webhook-id").expect("webhook-id").to_string();
        assert!(
            redlight::formats::standard::verify(
                secret,
                &id,
                h.header("webhook-timestamp").expect("timestamp"),
                h.header("webhook-signature").expect("signature"),
                &h.body,
                chrono::Utc::now().timestamp(),
                300
            )
            .is_ok(),
            "signature of {id}"
        );
        assert_eq!(h.json()["rule"], "aq.concealed");
        *seen.entry(id).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), n as usize, "every alert");
    assert!(seen.values().all(|&c| c == 1), "each once: {seen:?}");
    // The last answers settle the outbox a moment after the receiver has the requests.
    let mut pending = None;
    for _ in 0..100 {
        pending = pending_by_api(&config, "office").await;
        if pending == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pending, Some(0));

    // 4. The robot's refusal is a dead letter, visible in the API and the metrics.
    let mut dead = Vec::new();
    for _ in 0..100 {
        if let Some(v) = api(&config, "/api/v1/deliveries/dead?receiver=picky").await {
            dead = v["dead_letters"].as_array().cloned().unwrap_or_default();
            if !dead.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 1, "the department's one red went to the robot");
    assert!(dead[0]["error"].as_str().unwrap_or("").contains("93000"));
    assert!(
        !dead[0].to_string().contains("picky-key-123"),
        "no secret in the API"
    );
    // The gauges follow the commits that settle the deliveries.
    let want = [
        r#"redlight_deliveries_total{outcome="delivered",receiver="office"} 20"#,
        r#"redlight_delivery_dead_letters{receiver="picky"} 1"#,
        r#"redlight_outbox_depth{receiver="office"} 0"#,
    ];
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = get_text(http_addr, "/metrics");
        if want.iter().all(|w| metrics.contains(w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in want {
        assert!(metrics.contains(w), "{w} in:\n{metrics}");
    }
    assert!(!metrics.contains("picky-key-123"));
    // Dropping needs a selection; another receiver's drops none of picky's (through the
    // running daemon's API).
    let deliveries = |args: &'static [&'static str]| {
        let config_path = config_path.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
                .args(["deliveries", "--config"])
                .arg(&config_path)
                .args(args)
                .output()
                .expect("redlight deliveries")
        })
    };
    let out = deliveries(&["drop"]).await.expect("join");
    assert!(!out.status.success(), "drop without a selection");
    let out = deliveries(&["drop", "--receiver", "nobody"])
        .await
        .expect("join");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("dropped 0 dead letter"),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        get_text(http_addr, "/metrics")
            .contains(r#"redlight_delivery_dead_letters{receiver="picky"} 1"#)
    );
    // 5. Fixed, and re-sent with the subcommand, which talks to the running daemon.
    sink.set_plan(|_, h| platform_ok(&h.path));
    let out = tokio::task::spawn_blocking({
        let config_path = config_path.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
                .args(["deliveries", "--config"])
                .arg(&config_path)
                .args(["resend", "--receiver", "picky"])
                .output()
                .expect("redlight deliveries resend")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("re-sent 1 dead letter"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            sink.ok_hits()
                .iter()
                .filter(|h| h.path.starts_with("/picky"))
                .count()
                >= 2
        })
        .await
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_redlight"))
        .args(["deliveries", "--config"])
        .arg(&config_path)
        .arg("status")
        .output()
        .expect("redlight deliveries status");
    let status_text = String::from_utf8_lossy(&status.stdout);
    assert!(status_text.contains("office"), "{status_text}");
    assert_eq!(d.terminate(), Some(0), "SIGTERM: a clean stop");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("delivery is a dead letter"),
        "the refusal is logged"
    );
    for secret in [secret, &secret[6..], "picky-key-123"] {
        assert!(!logged.contains(secret), "a secret in the log");
    }
    if std::env::var_os("REDLIGHT_KEEP_TEST_LOG").is_some() {
        eprintln!("{logged}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
