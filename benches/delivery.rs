//! Alert delivery benchmark: prints figures, asserts nothing about speed.
//!
//! 1. Throughput: alerts committed in batches (as the daemon does, outbox rows in the same
//!    transaction) and delivered as signed `json` webhooks to a local keep-alive receiver;
//!    deliveries per second from the first commit to the last acknowledged delivery, and
//!    to every outcome recorded in the store. Goal: at least 5,000/s.
//! 2. Latency from a deadline passing to the request arriving: open `aq.accident_report`
//!    clocks (one hour) whose deadlines fall over the next seconds, run by the daemon's own
//!    timer logic (sleep until the engine's next due time, advance to the wall clock, commit);
//!    the receiver notes when each red arrives. Goal: p99 at most 1 second.
//!
//! `cargo bench --bench delivery` (add `-- --quick` for a small run).

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use redlight::alert::Alert;
use redlight::config::Config;
use redlight::delivery::{self, Delivery, Options};
use redlight::event::Event;
use redlight::metrics::Metrics;
use redlight::store::{Store, WriteBatch};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The receiver: counts requests and notes when each notice arrived (wall ms).
#[derive(Clone, Default)]
struct Receiver {
    count: Arc<AtomicU64>,
    arrived: Arc<Mutex<HashMap<String, i64>>>,
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Receiver>,
    headers: HeaderMap,
    _body: Bytes,
) -> &'static str {
    let now = chrono::Utc::now().timestamp_millis();
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok())
        && let Ok(mut m) = r.arrived.lock()
    {
        m.entry(id.to_string()).or_insert(now);
    }
    r.count.fetch_add(1, Ordering::Relaxed);
    ""
}

/// Starts the receiver on its own thread and runtime (one worker), like a separate service.
fn start_receiver() -> (std::net::SocketAddr, Receiver) {
    let r = Receiver::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let state = r.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("receiver runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("addr");
            let app = Router::new().fallback(receive).with_state(state);
            let _ = axum::serve(listener, app).await;
        });
    });
    (rx.recv().expect("receiver address"), r)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "redlight-bench-delivery-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tmp");
    dir
}

fn config(dir: &Path, addr: std::net::SocketAddr, concurrency: usize) -> Config {
    let repo = env!("CARGO_MANIFEST_DIR");
    let text = format!(
        r#"
[engine]
timezone = "Asia/Shanghai"
calendars = "{repo}/config/calendars"
rule_packs = ["{repo}/config/rules/xk.toml", "{repo}/config/rules/xz.toml", "{repo}/config/rules/nx.toml", "{repo}/config/rules/aq.toml", "{repo}/config/rules/hz.toml"]

[store]
data_dir = "{data}"

[delivery]
concurrency = {concurrency}

[[receiver]]
name = "bench"
format = "json"
url = "http://{addr}/hook"
secret = "whsec_YmVuY2htYXJrLXNlY3JldC0wMTIzNDU2Nzg5YWJj"

[[route]]
receivers = "bench"
"#,
        data = dir.join("data").display()
    );
    let path = dir.join("redlight.toml");
    std::fs::write(&path, text).expect("config");
    Config::load(&path).expect("config loads")
}

fn alert(rules: &redlight::rules::RuleSet, i: usize) -> Alert {
    let r = rules.rule(rules.index_of("xk.decision").expect("rule"));
    let case = format!("XZ-B-{i:07}");
    Alert {
        id: redlight::alert::alert_id(
            &case,
            "xk.decision",
            "1@0",
            redlight::alert::Level::Red,
            redlight::alert::Status::Firing,
        ),
        rule: r.id.clone(),
        title: r.title.clone(),
        basis: r.basis.clone(),
        case: case.into(),
        level: redlight::alert::Level::Red,
        status: redlight::alert::Status::Firing,
        reason: redlight::alert::Reason::Overdue,
        at: "2026-10-31T00:00:00+08:00".into(),
        deadline: Some("2026-10-31T00:00:00+08:00".into()),
        detail: None,
        department: Some("市住建局".into()),
        item: Some("建筑工程施工许可".into()),
        handler: Some("张三".into()),
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn throughput(n: usize, batch: usize, concurrency: usize) {
    let (addr, recv) = start_receiver();
    let dir = tmp("throughput");
    let config = config(&dir, addr, concurrency);
    let rules = config.load_rules().expect("rules");
    let store = Arc::new(Store::open(&config.data_dir()).expect("store"));
    let metrics = Metrics::new();
    let d = Delivery::start(&config, store.clone(), metrics.clone(), Options::default())
        .expect("delivery");
    let alerts: Vec<Alert> = (0..n).map(|i| alert(&rules, i)).collect();
    let started = Instant::now();
    let mut commit_time = Duration::ZERO;
    for chunk in alerts.chunks(batch) {
        let t = Instant::now();
        store
            .commit(&WriteBatch {
                alerts: chunk.to_vec(),
                ..Default::default()
            })
            .expect("commit");
        commit_time += t.elapsed();
        // Let the worker breathe between batches, as the daemon's batches would.
        tokio::task::yield_now().await;
    }
    let committed = started.elapsed();
    while recv.count.load(Ordering::Relaxed) < n as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let delivered = started.elapsed();
    while metrics.outbox_depth.with_label_values(&["bench"]).get() > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let recorded = started.elapsed();
    let requests = recv.count.load(Ordering::Relaxed);
    println!(
        "throughput: {n} alerts in batches of {batch}, concurrency {concurrency}: committed in {:.2}s \
         (commit {:.2}s), received in {:.2}s = {:.0} deliveries/s, all outcomes durable in {:.2}s = \
         {:.0}/s; {requests} requests (goal >= 5000/s)",
        committed.as_secs_f64(),
        commit_time.as_secs_f64(),
        delivered.as_secs_f64(),
        n as f64 / delivered.as_secs_f64(),
        recorded.as_secs_f64(),
        n as f64 / recorded.as_secs_f64(),
    );
    d.shutdown().await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The daemon's timer logic over `n` clocks whose deadlines are spread over `spread`.
async fn latency(n: usize, spread: Duration) {
    let (addr, recv) = start_receiver();
    let dir = tmp("latency");
    let config = config(&dir, addr, 16);
    let store = Arc::new(Store::open(&config.data_dir()).expect("store"));
    let metrics = Metrics::new();
    let d = Delivery::start(&config, store.clone(), metrics.clone(), Options::default())
        .expect("delivery");
    let mut engine = config.build_engine().expect("engine");
    // Accidents that happened an hour ago, less a little: their one-hour report deadlines
    // pass over the next `spread`, starting two seconds from now.
    let now = chrono::Utc::now().timestamp_millis();
    let first = now + 2000;
    let mut alerts = Vec::new();
    for i in 0..n {
        let deadline = first + (spread.as_millis() as i64 * i as i64) / n.max(1) as i64;
        let occurred = deadline - 3_600_000;
        let t = chrono::DateTime::from_timestamp_millis(occurred)
            .expect("time")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let line = format!(
            r#"{{"specversion":"1.0","id":"b-{i}","source":"/bench","type":"safety.accident_occurred","time":"{t}","subject":"AQ-L-{i:06}","data":{{"department":"市应急管理局","unit":"某厂","grade":"一般","deaths":0,"injuries":1}}}}"#
        );
        let ev = Event::parse(line.as_bytes()).expect("event");
        engine.advance_before(ev.time_ms(), &mut alerts);
        engine.apply(&ev, &mut alerts).expect("apply");
    }
    store
        .commit(&WriteBatch {
            alerts: std::mem::take(&mut alerts),
            ..Default::default()
        })
        .expect("commit");
    let reds_expected = n;
    let mut deadlines: HashMap<String, i64> = HashMap::new();
    let end = Instant::now() + spread + Duration::from_secs(12);
    // The daemon's loop for a quiet, caught-up partition: sleep until the next due time
    // (at most `idle_ms`), advance to the wall clock, commit what fired.
    while Instant::now() < end && deadlines.len() < reds_expected {
        let wall = chrono::Utc::now().timestamp_millis();
        let sleep = engine
            .next_due()
            .map_or(1000, |due| (due - wall).clamp(0, 1000));
        tokio::time::sleep(Duration::from_millis(sleep as u64)).await;
        engine.advance(chrono::Utc::now().timestamp_millis(), &mut alerts);
        if alerts.is_empty() {
            continue;
        }
        for a in &alerts {
            if a.rule.as_ref() == "aq.accident_report"
                && a.level == redlight::alert::Level::Red
                && let Some(dl) = a
                    .deadline
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            {
                deadlines.insert(a.id.clone(), dl.timestamp_millis());
            }
        }
        store
            .commit(&WriteBatch {
                alerts: std::mem::take(&mut alerts),
                ..Default::default()
            })
            .expect("commit");
    }
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until
        && recv
            .arrived
            .lock()
            .map(|m| deadlines.keys().filter(|k| m.contains_key(*k)).count())
            .unwrap_or(0)
            < deadlines.len()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let arrived = recv.arrived.lock().map(|m| m.clone()).unwrap_or_default();
    let mut lat: Vec<i64> = deadlines
        .iter()
        .filter_map(|(id, dl)| arrived.get(id).map(|a| a - dl))
        .collect();
    lat.sort_unstable();
    println!(
        "latency deadline -> request: {} reds over {:.0}s: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms \
         ({} of {} arrived; goal p99 <= 1000 ms)",
        deadlines.len(),
        spread.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0),
        lat.len(),
        deadlines.len()
    );
    d.shutdown().await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = delivery::default_retry();
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if quick {
            throughput(5_000, 500, 32).await;
            latency(500, Duration::from_secs(3)).await;
        } else {
            throughput(50_000, 1000, 32).await;
            throughput(50_000, 1000, 64).await;
            latency(5_000, Duration::from_secs(10)).await;
        }
    });
}
