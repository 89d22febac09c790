//! Helpers for tests/delivery.rs: a real HTTP receiver that records every request and answers
//! as a test tells it, a configuration in a temporary folder, alerts as the engine makes them.
#![allow(dead_code)]

#[path = "../common/calendar.rs"]
mod calendar;
#[path = "../common/ports.rs"]
mod ports;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use redlight::alert::{Alert, Level, Reason, Status, alert_id};
use redlight::config::Config;
use redlight::rules::RuleSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
    /// What the receiver answered (when it answered).
    pub status: u16,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.to_string())
        })
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Answer {
    pub fn ok(body: &str) -> Answer {
        Answer {
            status: 200,
            headers: Vec::new(),
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, k: &'static str, v: &str) -> Answer {
        self.headers.push((k, v.to_string()));
        self
    }
    pub fn body(mut self, b: &str) -> Answer {
        self.body = b.to_string();
        self
    }
    pub fn after(mut self, d: Duration) -> Answer {
        self.delay = d;
        self
    }
}

/// Decides the answer from the request's number (0-based, over all requests) and the request.
pub type Plan = Arc<dyn Fn(usize, &Hit) -> Answer + Send + Sync>;

/// The answer chat robots give when all is well.
pub fn platform_ok(path: &str) -> Answer {
    if path.contains("feishu") {
        Answer::ok(r#"{"code":0,"msg":"success","data":{}}"#)
    } else {
        Answer::ok(r#"{"errcode":0,"errmsg":"ok"}"#)
    }
}

#[derive(Clone)]
struct State {
    hits: Arc<Mutex<Vec<Hit>>>,
    plan: Arc<Mutex<Plan>>,
}

/// A receiver on 127.0.0.1.
pub struct Sink {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    plan: Arc<Mutex<Plan>>,
    task: tokio::task::JoinHandle<()>,
}

async fn handle(
    axum::extract::State(s): axum::extract::State<State>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let hit = Hit {
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
        at: Instant::now(),
        status: 0,
    };
    let (n, answer) = {
        let plan = s.plan.lock().expect("plan").clone();
        let mut hits = s.hits.lock().expect("hits");
        let n = hits.len();
        let answer = plan(n, &hit);
        let mut hit = hit;
        hit.status = answer.status;
        hits.push(hit);
        (n, answer)
    };
    let _ = n;
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut resp = (
        StatusCode::from_u16(answer.status).expect("status"),
        answer.body,
    )
        .into_response();
    for (k, v) in answer.headers {
        resp.headers_mut()
            .insert(k, v.parse().expect("header value"));
    }
    resp
}

impl Sink {
    /// A receiver on a free port answering like the chat platforms do when all is well.
    pub async fn start() -> Sink {
        Sink::start_on("127.0.0.1:0".parse().expect("addr")).await
    }

    pub async fn start_on(addr: SocketAddr) -> Sink {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = State {
            hits: Arc::new(Mutex::new(Vec::new())),
            plan: Arc::new(Mutex::new(Arc::new(|_, h: &Hit| platform_ok(&h.path)))),
        };
        let app = Router::new().fallback(handle).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Sink {
            addr,
            hits: state.hits,
            plan: state.plan,
            task,
        }
    }

    pub fn set_plan(&self, plan: impl Fn(usize, &Hit) -> Answer + Send + Sync + 'static) {
        *self.plan.lock().expect("plan") = Arc::new(plan);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("hits").clone()
    }

    /// Requests answered with a 2xx.
    pub fn ok_hits(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| (200..300).contains(&h.status))
            .collect()
    }

    /// Waits until `n` requests were answered with a 2xx (false on timeout).
    pub async fn wait_ok(&self, n: usize, timeout: Duration) -> bool {
        eventually(timeout, || self.ok_hits().len() >= n).await
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An address on 127.0.0.1 nobody listens on (a connection to it is refused) until the
/// test starts something there: a daemon, or a [`Sink`] for a receiver meant to be down
/// for a while. Its port is one no other test of this binary is given and no socket bound
/// to port 0 can get (`common/ports.rs`): a port found by binding port 0 and releasing it
/// was once taken by another test's sink before the receiver meant to be down came up
/// there, and that receiver took deliveries it should have refused.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ports::free_port()))
}

/// A fresh temporary folder.
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "redlight-delivery-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir
}

/// The configuration file text: the shipped rule packs, the calendar (shipped data plus
/// test placeholders for years not yet published, see tests/common/calendar.rs), `data` in `dir`, and
/// `extra` (receivers, routes, …) appended.
pub fn config_text(dir: &Path, extra: &str) -> String {
    let repo = env!("CARGO_MANIFEST_DIR");
    format!(
        r#"
[engine]
timezone = "Asia/Shanghai"
calendars = "{cal}"
rule_packs = ["{repo}/config/rules/xk.toml", "{repo}/config/rules/xz.toml", "{repo}/config/rules/nx.toml", "{repo}/config/rules/aq.toml", "{repo}/config/rules/hz.toml"]

[store]
data_dir = "{data}"

{extra}
"#,
        data = dir.join("data").display(),
        cal = calendar::calendars_for_now(dir).display(),
    )
}

pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("redlight.toml");
    std::fs::write(&path, config_text(dir, extra)).expect("write config");
    path
}

pub fn load_config(dir: &Path, extra: &str) -> Config {
    Config::load(&write_config(dir, extra)).expect("config loads")
}

/// An alert as the engine makes it, for a shipped rule.
#[allow(clippy::too_many_arguments)]
pub fn alert(
    rules: &RuleSet,
    case: &str,
    rule: &str,
    occurrence: &str,
    level: Level,
    status: Status,
    reason: Reason,
    at: &str,
    deadline: Option<&str>,
) -> Alert {
    let r = rules.rule(rules.index_of(rule).expect("a shipped rule"));
    Alert {
        id: alert_id(case, rule, occurrence, level, status),
        rule: r.id.clone(),
        title: r.title.clone(),
        basis: r.basis.clone(),
        case: case.into(),
        level,
        status,
        reason,
        at: at.to_string(),
        deadline: deadline.map(str::to_string),
        detail: None,
        department: Some("市住建局".into()),
        item: Some("建筑工程施工许可".into()),
        handler: Some("张三".into()),
    }
}

/// A red `xk.decision` alert for case `XZ-{n}`.
pub fn red(rules: &RuleSet, n: usize) -> Alert {
    alert(
        rules,
        &format!("XZ-{n:05}"),
        "xk.decision",
        "1@0",
        Level::Red,
        Status::Firing,
        Reason::Overdue,
        "2026-10-31T00:00:00+08:00",
        Some("2026-10-31T00:00:00+08:00"),
    )
}
