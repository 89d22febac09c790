//! Micro-benchmarks with criterion: the cost of the small operations the engine and the
//! webhooks repeat for every event and every alert, with criterion's statistics.
//!
//! ```text
//! cargo bench --bench micro                          # every benchmark (about 2 minutes)
//! cargo bench --bench micro -- calendar              # those whose name contains "calendar"
//! cargo bench --bench micro -- --save-baseline before   # then, on another build:
//! cargo bench --bench micro -- --baseline before        # the change against it, with its p-value
//! cargo bench --bench micro -- --test                # each once, as a check (CI)
//! ```
//!
//! The throughput figures of the engine's targets (events per second with a million open
//! cases, replay end to end, bytes per case) are `benches/engine.rs`'s, a bench binary that
//! prints them: its phases run once over millions of events, which criterion's repeated
//! sampling does not fit. This one complements it where repetition helps: on this shared
//! virtual machine a single timing moves by 10–40% with the hour, and criterion tells a
//! real change between two builds from that noise (`--baseline`).
//!
//! What it measures, all with the shipped `config/` (calendar 2020–2026, the five rule
//! packs):
//! - `calendar`: the 20th workday after 2026-09-28 across the National Day holiday (SPEC §3's
//!   worked example), and whether one day is a workday.
//! - `event`: parsing one `approval.accepted` CloudEvent, the usual shape (the scanner of
//!   `src/event/fast.rs`) and with `\u` escapes in its strings (serde's path).
//! - `alert`: an alert's deterministic id (SHA-256 of case, rule, cycle, level, status) and
//!   its JSON, the generic webhook body.
//! - `webhook_request`: the request for one red alert in each receiver format (signed
//!   Standard Webhooks JSON, Alertmanager, DingTalk, WeCom, Feishu).
//! - `engine`: `Engine::advance_before` + `Engine::apply` per event of whole approval
//!   cases (accepted, reviewed, decided, certificate issued, completed; their lights), in a
//!   fresh engine whose cases fit the processor's caches; and opening the worked example's
//!   case and computing its lights.

use chrono::DateTime;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use redlight::alert::{Alert, Level, Status, alert_id};
use redlight::config::Config;
use redlight::engine::Engine;
use redlight::event::Event;
use redlight::formats::{self, Context, Format, Keys, Notice};
use serde_json::json;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn config() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/redlight.toml");
    Config::load(&path).expect("the shipped config/redlight.toml loads")
}

fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("an RFC 3339 instant")
        .timestamp_millis()
}

/// One CloudEvent of an approval case, as producers send it.
fn event_json(id: &str, kind: &str, case: &str, time_ms: i64, data: serde_json::Value) -> String {
    let time = DateTime::from_timestamp_millis(time_ms)
        .expect("an instant in range")
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00"))
        .to_rfc3339();
    json!({
        "specversion": "1.0", "id": id, "source": "/xinzhou/approval-hall", "type": kind,
        "time": time, "subject": case, "datacontenttype": "application/json", "data": data,
    })
    .to_string()
}

fn parse(text: &str) -> Event {
    Event::parse(text.as_bytes()).expect("a well-formed event")
}

fn accepted_data(i: usize) -> serde_json::Value {
    let department = ["市住建局", "市市场监管局", "市自然资源局"][i % 3];
    json!({
        "department": department,
        "item": "建筑工程施工许可", "handler": "张三",
        "kind": "promised", "promised_workdays": 15,
    })
}

/// The events of `cases` whole approval cases, in time order: accepted one second apart
/// from 2026-03-02 09:00, then reviewed, decided (approved), certificate issued and
/// completed a few days apart each, so that some yellows fire between them.
fn whole_cases(cases: usize) -> Vec<Event> {
    let start = ms("2026-03-02T09:00:00+08:00");
    let steps: [(&str, i64); 5] = [
        ("approval.accepted", 0),
        ("approval.reviewed", 3 * DAY_MS),
        ("approval.decided", 14 * DAY_MS),
        ("approval.certificate_issued", 18 * DAY_MS),
        ("approval.completed", 19 * DAY_MS),
    ];
    let mut events: Vec<(i64, usize, usize)> = (0..cases)
        .flat_map(|c| (0..steps.len()).map(move |s| (start + c as i64 * 1000 + steps[s].1, s, c)))
        .collect();
    events.sort_unstable();
    events
        .into_iter()
        .map(|(t, s, c)| {
            let data = match s {
                0 => accepted_data(c),
                1 => json!({"handler": "李四"}),
                2 => json!({"outcome": "approved"}),
                3 => json!({"certificate_no": format!("JZ-{c:08}")}),
                _ => json!({}),
            };
            parse(&event_json(
                &format!("e-{c}-{s}"),
                steps[s].0,
                &format!("XZ-2026-{c:07}"),
                t,
                data,
            ))
        })
        .collect()
}

/// SPEC §3's worked example: the case accepted at 2026-09-28 10:00.
fn worked_example() -> Event {
    parse(&event_json(
        "worked-1",
        "approval.accepted",
        "XZ-2026-0001",
        ms("2026-09-28T10:00:00+08:00"),
        accepted_data(0),
    ))
}

/// The worked example's red alert (red at 2026-10-31 00:00), with the case's department,
/// item and handler: `accepted` applied, then the clock advanced past the deadline.
fn worked_example_red(engine: &mut Engine, accepted: &Event) -> Alert {
    let mut alerts = Vec::new();
    engine.apply(accepted, &mut alerts).expect("applied");
    engine.advance(ms("2026-11-01T00:00:00+08:00"), &mut alerts);
    alerts
        .into_iter()
        .find(|a| a.level == Level::Red && &*a.rule == "xk.decision")
        .expect("the worked example goes red")
}

fn calendar(c: &mut Criterion) {
    let cal = config()
        .load_calendar()
        .expect("the shipped calendar loads");
    let accepted = chrono::NaiveDate::from_ymd_opt(2026, 9, 28).expect("a date");
    assert_eq!(
        cal.add_workdays(accepted, 20).expect("in the data"),
        chrono::NaiveDate::from_ymd_opt(2026, 10, 30).expect("a date"),
        "SPEC §3: the 20th workday is 2026-10-30"
    );
    let mut g = c.benchmark_group("calendar");
    g.bench_function("add_workdays 20 after 2026-09-28", |b| {
        b.iter(|| cal.add_workdays(black_box(accepted), black_box(20)))
    });
    let makeup = chrono::NaiveDate::from_ymd_opt(2026, 10, 10).expect("a date");
    g.bench_function("is_workday 2026-10-10", |b| {
        b.iter(|| cal.is_workday(black_box(makeup)))
    });
    g.finish();
}

fn event(c: &mut Criterion) {
    let typical = event_json(
        "evt-000123",
        "approval.accepted",
        "XZ-2026-0001",
        ms("2026-09-28T10:00:00+08:00"),
        accepted_data(0),
    );
    // The same event with its Chinese written as `\u` escapes, as some JSON writers do
    // (`ensure_ascii`): the scanner leaves escapes to serde.
    let escaped: String = typical
        .chars()
        .map(|ch| {
            if ch.is_ascii() {
                ch.to_string()
            } else {
                format!("\\u{:04x}", u32::from(ch))
            }
        })
        .collect();
    assert_eq!(
        parse(&typical).data_str("department"),
        parse(&escaped).data_str("department"),
        "both spellings read the same"
    );
    let mut g = c.benchmark_group("event");
    g.throughput(Throughput::Bytes(typical.len() as u64));
    g.bench_function("parse approval.accepted", |b| {
        b.iter(|| Event::parse(black_box(typical.as_bytes())))
    });
    g.throughput(Throughput::Bytes(escaped.len() as u64));
    g.bench_function("parse approval.accepted, \\u escapes", |b| {
        b.iter(|| Event::parse(black_box(escaped.as_bytes())))
    });
    g.finish();
}

fn alert(c: &mut Criterion) {
    let config = config();
    let mut engine = config.build_engine().expect("the shipped engine builds");
    let red = worked_example_red(&mut engine, &worked_example());
    assert_eq!(red.at, "2026-10-31T00:00:00+08:00", "SPEC §3's red");
    let mut g = c.benchmark_group("alert");
    g.bench_function("id", |b| {
        b.iter(|| {
            alert_id(
                black_box("XZ-2026-0001"),
                black_box("xk.decision"),
                black_box("0"),
                Level::Red,
                Status::Firing,
            )
        })
    });
    g.bench_function("json", |b| b.iter(|| serde_json::to_vec(black_box(&red))));
    g.finish();
}

fn webhook_request(c: &mut Criterion) {
    let config = config();
    let rules = Arc::new(config.load_rules().expect("the shipped rules load"));
    let calendar = Arc::new(config.load_calendar().expect("the shipped calendar loads"));
    let mut engine = config.build_engine().expect("the shipped engine builds");
    let notice = Notice::of(worked_example_red(&mut engine, &worked_example()));
    let ctx = Context::new(
        rules,
        calendar,
        Some("https://redlight.example.gov.cn".to_string()),
    );
    let keys = Keys {
        webhook_keys: vec![b"a webhook signing key of 32 bytes".to_vec()],
        secret: Some("SEC0123456789abcdef".to_string()),
    };
    let now = ms("2026-10-31T00:00:01+08:00");
    let mention = ["13800000000".to_string()];
    let mut g = c.benchmark_group("webhook_request");
    for format in [
        Format::Json,
        Format::Alertmanager,
        Format::Dingtalk,
        Format::Wecom,
        Format::Feishu,
    ] {
        g.bench_function(format.as_str(), |b| {
            b.iter(|| {
                formats::build(
                    format,
                    &ctx,
                    black_box(&notice),
                    "supervisors",
                    "https://receiver.example/hook",
                    &keys,
                    &mention,
                    now,
                )
            })
        });
    }
    g.finish();
}

fn engine(c: &mut Criterion) {
    let config = config();
    let mut g = c.benchmark_group("engine");
    // A fresh engine per iteration (built outside the timing): this includes the first
    // allocations of its case map and timer index.
    g.bench_function(
        "worked example: open the case, fire its yellow and red",
        |b| {
            b.iter_batched(
                || {
                    let engine = config.build_engine().expect("the shipped engine builds");
                    (engine, worked_example())
                },
                |(mut engine, accepted)| {
                    let red = worked_example_red(&mut engine, &accepted);
                    (engine, red)
                },
                BatchSize::LargeInput,
            )
        },
    );
    g.throughput(Throughput::Elements(1));
    // Each sample applies its events to a fresh engine (built, then dropped, outside the
    // timing): a case's events in the order a real stream has them, each case new.
    g.bench_function("whole approval cases, per event", |b| {
        b.iter_custom(|iters| {
            let events = whole_cases((iters as usize).div_ceil(5));
            let mut engine = config.build_engine().expect("the shipped engine builds");
            let mut alerts = Vec::with_capacity(16);
            let start = Instant::now();
            for ev in events.iter().take(iters as usize) {
                alerts.clear();
                engine.advance_before(ev.time_ms(), &mut alerts);
                let _ = black_box(engine.apply(ev, &mut alerts));
            }
            let took = start.elapsed();
            drop(black_box(engine));
            took
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = calendar, event, alert, webhook_request, engine
}
criterion_main!(benches);
