//! Every metric the Grafana dashboard (deploy/grafana/redlight-dashboard.json) and the
//! Prometheus alerting rules (deploy/prometheus/alerts.yml) query exists on a running
//! daemon's `/metrics` — fed with sample events, one malformed message and a webhook
//! receiver (one that accepts and one that refuses), so every labelled series is present.

mod view_support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use view_support::*;

/// The `redlight_…` metric names in a text (PromQL or a whole rules file).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("redlight_") {
        let before = rest[..i].chars().last();
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if end > "redlight_".len() && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "expr"
                    && let Some(s) = x.as_str()
                {
                    out.push(s.to_string());
                }
                exprs(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

/// A webhook receiver on a free port: `/ok` answers 200, anything else 400.
fn receiver() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read the head, then the body by Content-Length.
                loop {
                    let Ok(n) = s.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..h]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < h + 4 + len {
                        continue;
                    }
                    let ok = head.starts_with("post /ok");
                    let status = if ok { "200 OK" } else { "400 Bad Request" };
                    let _ = s.write_all(
                        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                    );
                    buf.drain(..h + 4 + len);
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alert_rules_query_exists() {
    let root = root();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/redlight-dashboard.json"))
            .expect("deploy/grafana/redlight-dashboard.json"),
    )
    .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 15, "the dashboard has its queries");
    let mut wanted: BTreeSet<(String, &str)> = BTreeSet::new();
    for q in &queries {
        for m in metric_names(q) {
            wanted.insert((m, "dashboard"));
        }
    }
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml"))
        .expect("deploy/prometheus/alerts.yml");
    for m in metric_names(&rules) {
        wanted.insert((m, "alert rules"));
    }
    assert!(wanted.len() >= 15, "{wanted:?}");

    let rport = receiver();
    let extra = format!(
        r#"
[[receiver]]
name = "accepts"
format = "json"
url = "http://127.0.0.1:{rport}/ok"
retry = ["1s"]

[[receiver]]
name = "refuses"
format = "json"
url = "http://127.0.0.1:{rport}/refuse"
retry = ["1s"]

[[route]]
receivers = ["accepts", "refuses"]
"#
    );
    let mut d = Daemon::start_with("metrics-names", 2, "", &extra, &[]).await;
    let mut lines = fixed_samples();
    lines.extend(d.relative_samples("M1"));
    lines.push("this is not a CloudEvent".to_string());
    let n = lines.len() as u64;
    produce(&broker(), &d.topic, &lines).await;
    d.wait_consumed(n);
    // A request of each kind, so the request counter has series.
    let _ = d.get("/api/v1/cases?limit=1");
    let _ = d.get("/");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut missing: Vec<String>;
    let mut text;
    loop {
        text = d.get("/metrics").body;
        let present: BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        missing = wanted
            .iter()
            .filter(|(m, _)| !present.contains(m.as_str()))
            .map(|(m, from)| format!("{m} (queried by the {from})"))
            .collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(
        missing.is_empty(),
        "metrics queried but not exported: {missing:#?}\n--- /metrics:\n{text}"
    );
    // Exposition hygiene: names follow the conventions the dashboards rely on.
    for line in text.lines().filter(|l| l.starts_with("# TYPE redlight_")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        match kind {
            "counter" => assert!(name.ends_with("_total"), "{name}: counters end in _total"),
            "histogram" => assert!(name.ends_with("_seconds"), "{name}: histograms in seconds"),
            _ => {}
        }
    }
}

/// The `department` label of the open-case metrics is capped (`board.metric_departments`):
/// the departments with the most open cases keep their names, the rest are summed under
/// "其他", and no open case is lost from the totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn department_labels_are_capped_and_nothing_is_lost() {
    let mut d = Daemon::start_with(
        "metrics-departments",
        2,
        "",
        "",
        &[("REDLIGHT_BOARD__METRIC_DEPARTMENTS", "2")],
    )
    .await;
    let mut lines = fixed_samples();
    lines.extend(d.relative_samples("D1"));
    let n = lines.len() as u64;
    produce(&broker(), &d.topic, &lines).await;
    d.wait_consumed(n);

    // Open cases per department, as the API lists them (uncapped).
    let mut open: std::collections::BTreeMap<String, u64> = Default::default();
    let page = d.json("/api/v1/cases?open=true&limit=1000");
    let cases = page["cases"].as_array().expect("cases");
    assert!(page["next"].is_null(), "the samples fit in one page");
    for c in cases {
        let dept = c["department"].as_str().unwrap_or("").to_string();
        *open.entry(dept).or_insert(0) += 1;
    }
    assert!(
        open.len() > 3,
        "the samples span more than three departments: {open:?}"
    );
    let mut ranked: Vec<(&String, &u64)> = open.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let top: BTreeSet<String> = ranked.iter().take(2).map(|(d, _)| (*d).clone()).collect();

    // The gauge, once counted: per department label, summed over lights.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let per_label = loop {
        let text = d.get("/metrics").body;
        let mut per: std::collections::BTreeMap<String, u64> = Default::default();
        for line in text
            .lines()
            .filter(|l| l.starts_with("redlight_case_lights{"))
        {
            let dept = line
                .split("department=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .expect("a department label")
                .to_string();
            let v: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("a value");
            *per.entry(dept).or_insert(0) += v as u64;
        }
        if per.values().sum::<u64>() == cases.len() as u64 || std::time::Instant::now() > deadline {
            break per;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    let labels: BTreeSet<String> = per_label.keys().cloned().collect();
    let mut expected = top.clone();
    expected.insert("其他".to_string());
    assert_eq!(
        labels, expected,
        "two departments by name, the rest as 其他"
    );
    assert_eq!(
        per_label.values().sum::<u64>(),
        cases.len() as u64,
        "every open case counted once"
    );
    for dept in &top {
        assert_eq!(per_label[dept], open[dept], "{dept} keeps its own count");
    }
}

type ByRule = std::collections::BTreeMap<(String, String, String), u64>;
type ByLight = std::collections::BTreeMap<(String, String), u64>;

/// The non-zero open-case gauges: `(light, department, rule)` and `(light, department)`.
fn open_gauges(d: &Daemon) -> (ByRule, ByLight) {
    let text = d.get("/metrics").body;
    let (mut by_rule, mut by_light) = (ByRule::new(), ByLight::new());
    for line in text.lines() {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let value: f64 = value.parse().expect("a gauge value");
        let label = |key: &str| -> String {
            labels
                .split(&format!("{key}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_else(|| panic!("label {key} in {line}"))
                .to_string()
        };
        if value == 0.0 {
            continue;
        }
        match name {
            "redlight_open_cases" => {
                by_rule.insert(
                    (label("light"), label("department"), label("rule")),
                    value as u64,
                );
            }
            "redlight_case_lights" => {
                by_light.insert((label("light"), label("department")), value as u64);
            }
            _ => {}
        }
    }
    (by_rule, by_light)
}

/// The same, counted from the open cases the API lists (read from the store).
fn listed_counts(d: &Daemon) -> (ByRule, ByLight) {
    let page = d.json("/api/v1/cases?open=true&limit=1000");
    assert!(page["next"].is_null(), "the cases fit in one page");
    let (mut by_rule, mut by_light) = (ByRule::new(), ByLight::new());
    for c in page["cases"].as_array().expect("cases") {
        let dept = c["department"]
            .as_str()
            .unwrap_or("（未注明部门）")
            .to_string();
        let light = c["light"].as_str().expect("light").to_string();
        *by_light.entry((light, dept.clone())).or_insert(0) += 1;
        for r in c["rules"].as_array().expect("rules") {
            let key = (
                r["light"].as_str().expect("rule light").to_string(),
                dept.clone(),
                r["rule"].as_str().expect("rule id").to_string(),
            );
            *by_rule.entry(key).or_insert(0) += 1;
        }
    }
    (by_rule, by_light)
}

/// Waits (up to 30 s) for the gauges to equal the API's counts; returns them.
fn gauges_equal_the_listed_cases(d: &Daemon, when: &str) -> (ByRule, ByLight) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (gauges, listed) = (open_gauges(d), listed_counts(d));
        if gauges == listed || std::time::Instant::now() > deadline {
            assert_eq!(gauges, listed, "{when}: the gauges against the API's cases");
            return listed;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// The open-case gauges, counted by the consumer loop as cases change (not recounted from
/// the store), equal the open cases the API lists, per light, department and rule and per
/// department and overall light: once the samples are consumed (their deadlines firing
/// meanwhile), after further events withdraw two cases and open one, and after a restart
/// restores the cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_case_gauges_equal_the_open_cases_the_api_lists() {
    let mut d = fed_daemon("metrics-open", "G1").await;
    let (_, before) = gauges_equal_the_listed_cases(&d, "after the samples");
    for light in ["red", "yellow", "green"] {
        assert!(
            before.keys().any(|(l, _)| l == light),
            "the samples have {light} cases: {before:?}"
        );
    }
    let count = |lights: &ByLight, light: &str, dept: &str| {
        lights
            .get(&(light.to_string(), dept.to_string()))
            .copied()
            .unwrap_or(0)
    };

    let now = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("offset"))
        .to_rfc3339();
    let event = |id: &str, kind: &str, subject: &str, data: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/test","type":"{kind}","time":"{now}","subject":"{subject}","data":{data}}}"#
        )
    };
    let more = [
        event("g1-w2", "approval.withdrawn", "XZ-G1-02", "{}"),
        event("g1-w3", "approval.withdrawn", "XZ-G1-03", "{}"),
        event(
            "g1-new",
            "approval.accepted",
            "XZ-G1-09",
            r#"{"department":"市新设局","item":"新设许可","handler":"郑十","kind":"promised","promised_workdays":5}"#,
        ),
    ];
    produce(&broker(), &d.topic, &more).await;
    let consumed = (fixed_samples().len() + d.relative_samples("G1").len() + more.len()) as u64;
    d.wait_consumed(consumed);
    let (rules, lights) = gauges_equal_the_listed_cases(&d, "after two withdrawals");
    assert!(
        lights.keys().any(|(_, dept)| dept == "市新设局"),
        "the new case is counted: {lights:?}"
    );
    // XZ-G1-02 was yellow, XZ-G1-03 red (RELATIVE_LIGHTS): neither counts any more.
    for (light, dept) in [("yellow", "市住建局"), ("red", "市自然资源局")] {
        assert_eq!(
            count(&lights, light, dept),
            count(&before, light, dept) - 1,
            "{light} cases of {dept}: {lights:?}"
        );
    }

    d.restart("redlight-2.log");
    let after = gauges_equal_the_listed_cases(&d, "after a restart");
    assert_eq!(
        after,
        (rules, lights),
        "the restart restored the same counts"
    );
}
