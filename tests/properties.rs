//! Property tests for the legal clock (SPEC §3) and the engine's determinism.

use chrono::{DateTime, Duration, FixedOffset, Timelike};
use proptest::prelude::*;
use redlight::alert::Alert;
use redlight::config::Config;
use redlight::engine::Engine;
use redlight::event::Event;
use serde_json::json;
use std::path::Path;

fn engine() -> Engine {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/redlight.toml");
    Config::load(&path)
        .expect("config")
        .build_engine()
        .expect("engine")
}

fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("offset")
}

/// An instant between 2020-01-01 and 2026-09-30 (so that 60 workdays stay inside the data),
/// to the minute.
fn instant() -> impl Strategy<Value = DateTime<FixedOffset>> {
    let start = DateTime::parse_from_rfc3339("2020-01-01T00:00:00+08:00").expect("start");
    let minutes = (DateTime::parse_from_rfc3339("2026-09-30T00:00:00+08:00").expect("end") - start)
        .num_minutes();
    (0..minutes).prop_map(move |m| start + Duration::minutes(m))
}

fn event(
    id: &str,
    kind: &str,
    time: DateTime<FixedOffset>,
    case: &str,
    data: serde_json::Value,
) -> Event {
    let text = json!({
        "specversion": "1.0", "id": id, "source": "/test", "type": kind,
        "time": time.to_rfc3339(), "subject": case, "data": data,
    })
    .to_string();
    Event::parse(text.as_bytes()).expect("valid event")
}

/// The current deadline of the case's clock for `rule` (as an instant in Beijing time).
fn deadline(engine: &Engine, case: &str, rule: &str) -> Option<DateTime<FixedOffset>> {
    let r = engine.rules().index_of(rule)?;
    let c = engine.case(case)?;
    let clock = c.clocks.iter().rev().find(|c| c.rule == r)?;
    let ms = clock.deadline.get().or(clock.last_deadline.get())?;
    DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&beijing()))
}

/// Applies events in time order the way replay does, collecting alerts.
fn run(engine: &mut Engine, events: &[Event]) -> Vec<Alert> {
    let mut out = Vec::new();
    for e in events {
        engine.advance_before(e.time_ms(), &mut out);
        engine
            .apply(e, &mut out)
            .expect("calendar covers the test range");
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Workday limits end at 24:00 of a workday (民法典 Art. 203 with Art. 82 of the
    /// administrative licensing law): the deadline is local midnight and the day it closes
    /// is a workday.
    #[test]
    fn a_workday_deadline_is_always_midnight_ending_a_workday(s in instant()) {
        let mut e = engine();
        run(&mut e, &[event("a", "approval.accepted", s, "C", json!({"kind": "promised", "promised_workdays": 20}))]);
        let d = deadline(&e, "C", "xk.decision").expect("clock started");
        prop_assert_eq!((d.hour(), d.minute(), d.second()), (0, 0, 0));
        let last_day = (d - Duration::days(1)).date_naive();
        prop_assert!(e.calendar().is_workday(last_day).expect("in data"), "deadline {} closes {}", d, last_day);
        // Counting starts the day after S: at least 20 workdays lie strictly between.
        let first = s.date_naive().succ_opt().expect("date");
        let mut workdays = 0;
        let mut day = first;
        while day <= last_day {
            if e.calendar().is_workday(day).expect("in data") { workdays += 1; }
            day = day.succ_opt().expect("date");
        }
        prop_assert_eq!(workdays, 20);
    }

    /// Calendar-day limits end at 24:00, moved off weekends and holidays (Art. 203).
    #[test]
    fn a_calendar_day_deadline_is_midnight_ending_a_workday(s in instant()) {
        let mut e = engine();
        run(&mut e, &[event("a", "market.registration_accepted", s, "M", json!({"market": "x"}))]);
        let d = deadline(&e, "M", "nx.registration_decision").expect("clock started");
        prop_assert_eq!((d.hour(), d.minute(), d.second()), (0, 0, 0));
        let last_day = (d - Duration::days(1)).date_naive();
        prop_assert!(e.calendar().is_workday(last_day).expect("in data"));
        let thirtieth = s.date_naive() + Duration::days(30);
        prop_assert!(last_day >= thirtieth);
        // Moved only across days that are not workdays.
        let mut day = thirtieth;
        while day < last_day {
            prop_assert!(!e.calendar().is_workday(day).expect("in data"));
            day = day.succ_opt().expect("date");
        }
    }

    /// A pause never brings a deadline earlier.
    #[test]
    fn a_pause_never_brings_a_deadline_earlier(
        s in instant(),
        pause_after in 0i64..(20 * 24 * 60),
        pause_for in 0i64..(15 * 24 * 60),
    ) {
        let mut plain = engine();
        let accepted = event("a", "approval.accepted", s, "C", json!({"kind": "promised", "promised_workdays": 10}));
        run(&mut plain, std::slice::from_ref(&accepted));
        let before = deadline(&plain, "C", "xk.decision").expect("clock");

        let mut paused = engine();
        let p = s + Duration::minutes(pause_after);
        let r = p + Duration::minutes(pause_for);
        run(&mut paused, &[
            accepted,
            event("p", "approval.suspended", p, "C", json!({"procedure": "expert_review"})),
            event("r", "approval.resumed", r, "C", json!({})),
        ]);
        let after = deadline(&paused, "C", "xk.decision").expect("clock");
        prop_assert!(after >= before, "pause {}..{} moved {} to {}", p, r, before, after);
        let promised_before = deadline(&plain, "C", "xz.promised").expect("clock");
        let promised_after = deadline(&paused, "C", "xz.promised").expect("clock");
        prop_assert!(promised_after >= promised_before);
    }

    /// An extension never brings a deadline earlier, and within the cap moves it by at least
    /// the granted workdays' worth of days.
    #[test]
    fn an_extension_never_brings_a_deadline_earlier(
        s in instant(),
        at in 0i64..(10 * 24 * 60),
        extra in 0u32..20,
        joint in any::<bool>(),
    ) {
        let accepted = event("a", "approval.accepted", s, "C", json!({"joint": joint}));
        let mut plain = engine();
        run(&mut plain, std::slice::from_ref(&accepted));
        let before = deadline(&plain, "C", "xk.decision").expect("clock");
        let mut extended = engine();
        let alerts = run(&mut extended, &[
            accepted,
            event("x", "approval.extended", s + Duration::minutes(at), "C", json!({"extra_workdays": extra, "approved_by": "局长"})),
        ]);
        let after = deadline(&extended, "C", "xk.decision").expect("clock");
        prop_assert!(after >= before);
        let cap = if joint { 15 } else { 10 };
        prop_assert!(after >= before + Duration::days(i64::from(extra.min(cap))));
        let violations = alerts.iter().filter(|a| &*a.rule == "xk.decision" && a.reason == redlight::alert::Reason::Violation).count();
        prop_assert_eq!(violations, usize::from(extra > cap));
    }
}

/// A random stream of approval events over a few cases, in time order.
fn stream() -> impl Strategy<Value = Vec<Event>> {
    let kinds = prop::sample::select(vec![
        "approval.submitted",
        "approval.accepted",
        "approval.reviewed",
        "approval.suspended",
        "approval.resumed",
        "approval.extended",
        "approval.decided",
        "approval.certificate_issued",
        "approval.completed",
        "approval.withdrawn",
        "market.registration_accepted",
        "market.registration_decided",
        "market.report_submitted",
        "safety.accident_occurred",
        "safety.accident_discovered",
        "safety.accident_reported",
        "safety.accident_relayed",
        "safety.meeting_held",
        "safety.hazard_reported",
        "safety.hazard_investigation_started",
        "safety.rectification_ordered",
        "safety.hazard_rectified",
        "market.change_decided",
        "market.change_registered",
        "market.reconsideration_requested",
        "market.reconsideration_decided",
        "approval.material_incomplete",
    ]);
    let step = (
        kinds,
        0u8..4,
        0i64..(3 * 24 * 60),
        any::<bool>(),
        0u8..30,
        0u8..6,
    );
    prop::collection::vec(step, 1..80).prop_map(|steps| {
        let mut t = DateTime::parse_from_rfc3339("2026-01-05T09:00:00+08:00").expect("t");
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (kind, case, gap, flag, n, dup))| {
                t += Duration::minutes(gap);
                // Reuse an earlier id now and then: duplicates must change nothing.
                let id = if dup == 0 && i > 0 {
                    format!("e{}", i - 1)
                } else {
                    format!("e{i}")
                };
                let data = json!({
                    "department": "市市场监管局", "handler": "李四", "item": "登记",
                    "kind": if flag { "promised" } else { "immediate" },
                    "promised_workdays": n, "extra_workdays": n % 12, "joint": n % 5 == 0,
                    "outcome": if n % 3 == 0 { "denied" } else { "approved" },
                    "period": "2026Q1", "major": flag,
                    "due": (t + Duration::hours(i64::from(n) * 6)).to_rfc3339(),
                });
                event(&id, kind, t, &format!("CASE-{case}"), data)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// Replay is deterministic: two fresh engines fed the same events print the same bytes.
    #[test]
    fn replay_is_deterministic(events in stream()) {
        let mut lines = String::new();
        for e in &events {
            lines.push_str(&json!({
                "specversion": "1.0", "id": e.id.as_str(), "source": e.source.as_str(), "type": e.kind.as_str(),
                "time": e.time.to_rfc3339(), "subject": e.subject.as_str(), "data": e.data,
            }).to_string());
            lines.push('\n');
        }
        let until = Some(DateTime::parse_from_rfc3339("2026-12-31T00:00:00+08:00").expect("t").timestamp_millis());
        let mut outputs = Vec::new();
        for _ in 0..2 {
            let mut e = engine();
            let mut out = Vec::new();
            redlight::cli::replay(&mut e, lines.as_bytes(), until, &mut out, std::io::sink()).expect("replay");
            outputs.push(out);
        }
        prop_assert_eq!(&outputs[0], &outputs[1]);
        // Every alert id appears at most once: one light change is reported once.
        let text = String::from_utf8(outputs[0].clone()).expect("utf8");
        let mut ids: Vec<String> = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["id"].as_str().expect("id").to_string()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        prop_assert_eq!(ids.len(), n, "an alert id repeated");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// `Engine::prefetch` is a hint: an engine asked to fetch the next events' cases (or
    /// cases that do not exist, or the wrong ones) gives the same alerts and ends with the
    /// same cases as one that is never asked.
    #[test]
    fn cache_hints_change_nothing(events in stream(), wrong in prop::collection::vec(0u8..6, 3)) {
        let plain = {
            let mut e = engine();
            let alerts = run(&mut e, &events);
            (alerts, cases_json(&e))
        };
        let hinted = {
            let mut e = engine();
            let mut out = Vec::new();
            let strays: Vec<String> = wrong.iter().map(|n| format!("CASE-{n}")).collect();
            for (i, ev) in events.iter().enumerate() {
                e.prefetch(|k| events.get(i + k).map(|e| e.subject.as_str()));
                e.prefetch(|k| strays.get(k % strays.len()).map(String::as_str));
                e.advance_before(ev.time_ms(), &mut out);
                e.apply(ev, &mut out).expect("calendar covers the test range");
            }
            (out, cases_json(&e))
        };
        prop_assert_eq!(plain, hinted);
    }
}

/// Every case of the engine as JSON, in id order.
fn cases_json(engine: &Engine) -> Vec<String> {
    let mut cases: Vec<String> = engine
        .cases()
        .map(|c| serde_json::to_string(c).expect("case json"))
        .collect();
    cases.sort();
    cases
}

/// Applies events the way the daemon does with `store.timers_per_commit = slice`: the
/// timers before each event fire in slices, and after every other slice the engine is
/// rebuilt from its serialised cases and clock, as a restart from the store would do (the
/// slices in between go on in the same engine).
fn run_in_slices(events: &[Event], slice: usize, until: i64) -> (Vec<Alert>, Engine) {
    let mut eng = engine();
    let mut out = Vec::new();
    let mut slices = 0usize;
    let restart = |e: &Engine| {
        let mut fresh = engine();
        for c in e.cases() {
            // As the store keeps it.
            let bytes = redlight::store::encode_case(c).expect("a case serialises");
            // Written by hand, byte for byte what rmp_serde writes (every reader uses it).
            assert_eq!(
                bytes,
                rmp_serde::to_vec(c).expect("rmp_serde"),
                "case {}",
                c.id
            );
            fresh.restore(redlight::store::decode_case(&bytes).expect("and reads back"));
        }
        fresh.restore_clock(e.now());
        fresh
    };
    for ev in events {
        while !eng.advance_before_bounded(ev.time_ms(), slice, &mut out) {
            slices += 1;
            if slices.is_multiple_of(2) {
                eng = restart(&eng);
            }
        }
        eng.apply(ev, &mut out)
            .expect("calendar covers the test range");
    }
    while !eng.advance_bounded(until, slice, &mut out) {
        slices += 1;
        if slices.is_multiple_of(2) {
            eng = restart(&eng);
        }
    }
    (out, eng)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// A catch-up written in slices (the daemon's `store.timers_per_commit`), even with a
    /// restart after every slice, raises exactly the alerts of one unbounded advance, in
    /// the same order, and leaves the same cases.
    #[test]
    fn slices_and_restarts_change_no_alert(events in stream(), slice in 1usize..4) {
        slices_and_restarts_change_nothing(&events, slice)?;
    }

    /// The same over reports and meetings around their due times (periodic duties).
    #[test]
    fn slices_and_restarts_change_no_alert_of_periodic_duties(events in periodic_stream(), slice in 1usize..4) {
        slices_and_restarts_change_nothing(&events, slice)?;
    }
}

fn slices_and_restarts_change_nothing(events: &[Event], slice: usize) -> Result<(), TestCaseError> {
    let until = DateTime::parse_from_rfc3339("2026-12-31T00:00:00+08:00")
        .expect("t")
        .timestamp_millis();
    let mut whole = engine();
    let mut expected = run(&mut whole, events);
    whole.advance(until, &mut expected);
    let (got, sliced) = run_in_slices(events, slice, until);
    let ids = |v: &[Alert]| v.iter().map(|a| a.id.to_string()).collect::<Vec<_>>();
    prop_assert_eq!(ids(&got), ids(&expected));
    let cases = |e: &Engine| {
        let mut v: Vec<String> = e
            .cases()
            .map(|c| serde_json::to_string(c).expect("json"))
            .collect();
        v.sort();
        v
    };
    prop_assert_eq!(cases(&sliced), cases(&whole));
    Ok(())
}

/// The shipped rules on the shipped calendar files of 2020 up to `last_year`.
fn engine_with_data_to(last_year: i32) -> Engine {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = Config::load(&root.join("config/redlight.toml")).expect("config");
    let mut sources = Vec::new();
    for year in 2020..=last_year {
        let path = root.join(format!("config/calendars/{year}.toml"));
        let text = std::fs::read_to_string(&path).expect("a shipped calendar file");
        sources.push((path, text));
    }
    let cal = redlight::calendar::Calendar::from_sources(&sources, chrono_tz::Asia::Shanghai)
        .expect("calendar");
    Engine::new(
        std::sync::Arc::new(config.load_rules().expect("rules")),
        std::sync::Arc::new(cal),
    )
}

/// Every clock's (rule, deadline, yellow instant).
fn schedule(engine: &Engine, case: &str) -> Vec<(u16, Option<i64>, Option<i64>)> {
    engine
        .case(case)
        .map(|c| {
            c.clocks
                .iter()
                .map(|k| (k.rule, k.deadline.get(), k.yellow_at.get()))
                .collect()
        })
        .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// A deadline left pending for want of the next year's data is, once a restart brings
    /// the data, exactly the deadline the data would have given from the start; and a clock
    /// the data did cover is not touched. (Cases accepted in the last 40 days of a year
    /// whose next year is not yet in the data, with a pause and resume before it ends.)
    #[test]
    fn a_pending_deadline_is_the_one_the_data_gives(
        last_year in 2021i32..=2025,
        start_min in 0i64..(40 * 24 * 60),
        workdays in 1u32..=20,
        pause in proptest::option::of((0i64..(30 * 24 * 60), 0i64..(10 * 24 * 60))),
    ) {
        let end = DateTime::parse_from_rfc3339(&format!("{}-01-01T00:00:00+08:00", last_year + 1))
            .expect("end of the data");
        let s = end - Duration::days(40) + Duration::minutes(start_min);
        let mut events = vec![event("a", "approval.accepted", s, "C",
            json!({"kind": "promised", "promised_workdays": workdays}))];
        if let Some((after, length)) = pause {
            let p = s + Duration::minutes(after);
            let r = p + Duration::minutes(length);
            if r < end {
                events.push(event("p", "approval.suspended", p, "C", json!({"procedure": "expert_review"})));
                events.push(event("r", "approval.resumed", r, "C", json!({})));
            }
        }
        let mut full = engine_with_data_to(2026);
        run(&mut full, &events);
        let mut cut = engine_with_data_to(last_year);
        run(&mut cut, &events);
        let case = cut.case("C").expect("the case is kept").clone();
        let (want, had) = (schedule(&full, "C"), schedule(&cut, "C"));
        prop_assert_eq!(want.len(), had.len());
        for (w, h) in want.iter().zip(&had) {
            if h.1.is_some() {
                prop_assert_eq!(w, h, "a clock the data covered");
            } else {
                prop_assert!(w.1.is_some_and(|d| d >= end.timestamp_millis()), "pending {:?}, full {:?}", h, w);
            }
        }
        let mut restarted = engine_with_data_to(2026);
        restarted.restore_clock(cut.now());
        restarted.restore(case);
        prop_assert_eq!(schedule(&restarted, "C"), want);
    }
}

/// A JSON value of any shape, for a data field a rule reads: what a misbehaving producer
/// might put there.
fn hostile_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        (-40i64..400).prop_map(|n| json!(n)),
        prop::sample::select(vec![
            i64::MIN,
            i64::MAX,
            -1,
            0,
            1_000_000_000,
            u32::MAX as i64
        ])
        .prop_map(|n| json!(n)),
        prop::sample::select(vec![1e308, -1e308, 0.5, -0.0, 2.999_999, 1e-300])
            .prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "",
            "5",
            "-3",
            "1e9",
            "20.5",
            "abc",
            "immediate",
            "promised",
            "approved",
            "true",
            "2026Q5",
            "2026Q1",
            "2027-02-30T00:00:00+08:00",
            "2026-10-09T17:00:00+08:00",
            "1900-01-01T00:00:00Z",
            "9999-12-31T23:59:59+14:00",
            "２０",
            "\u{0}",
        ])
        .prop_map(|s| json!(s)),
        Just(json!([1, "2", null])),
        Just(json!({"nested": {"deep": [true]}})),
    ]
}

/// Events of every type of the catalogue (and an unknown one) on a few cases, at times from 2019 to
/// 2028 (beyond the calendar data on both sides) and out of order, whose data fields the
/// rules read hold values of any shape.
fn hostile_stream() -> impl Strategy<Value = Vec<Event>> {
    let kinds = prop::sample::select(
        redlight::event::CATALOGUE
            .iter()
            .copied()
            .chain(["x.unknown"])
            .collect::<Vec<_>>(),
    );
    let keys = prop::sample::subsequence(
        vec![
            "kind",
            "promised_workdays",
            "extra_workdays",
            "joint",
            "outcome",
            "period",
            "major",
            "due",
            "department",
            "item",
            "handler",
            "deaths",
            "grade",
        ],
        0..8,
    );
    let fields = keys.prop_flat_map(|keys| {
        let n = keys.len();
        (Just(keys), prop::collection::vec(hostile_value(), n))
    });
    // Minutes from 2019-06-01: about nine years.
    let step = (kinds, 0u8..5, 0i64..(9 * 365 * 24 * 60), fields);
    prop::collection::vec(step, 1..60).prop_map(|steps| {
        let start = DateTime::parse_from_rfc3339("2019-06-01T00:00:00+08:00").expect("t");
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (kind, case, minute, (keys, values)))| {
                let data: serde_json::Map<String, serde_json::Value> =
                    keys.into_iter().map(str::to_string).zip(values).collect();
                let t = start + Duration::minutes(minute);
                event(&format!("h{i}"), kind, t, &format!("H-{case}"), json!(data))
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Nothing in an event's data can crash the engine (the daemon would stop on the
    /// message, and again on every restart): each event is applied or refused with an
    /// error, the clock advances past every deadline, and every case left survives the
    /// store's encoding unchanged.
    #[test]
    fn no_data_value_crashes_the_engine_or_the_store(events in hostile_stream()) {
        let mut e = engine();
        let mut out = Vec::new();
        for ev in &events {
            e.advance_before(ev.time_ms(), &mut out);
            let _ = e.apply(ev, &mut out);
        }
        e.advance(DateTime::parse_from_rfc3339("2028-06-01T00:00:00+08:00").expect("t").timestamp_millis(), &mut out);
        for case in e.cases() {
            let bytes = redlight::store::encode_case(case).expect("encodes");
            let back = redlight::store::decode_case(&bytes).expect("decodes");
            prop_assert_eq!(&back, case);
        }
        for a in &out {
            serde_json::to_string(a).expect("an alert serialises");
        }
    }
}

// ---------------------------------------------------------------------------------------
// A plain model of SPEC §3 for the workday clocks that pause and extend (`xk.decision`,
// `xz.promised`), checked against the engine event by event.
//
// The model keeps time in local (UTC+8) milliseconds and counts by walking the calendar day
// by day, asking only whether each day is a workday: none of the engine's measures,
// workday indices or their inverse. What it shares with the engine is the state a clock
// keeps (running since, paused at, counted so far, extensions granted) and the choices of
// docs/rules.md: a second pause or a resume without a pause change nothing; an extension
// over the cap is granted up to it; a pause or extension after the deadline leaves it
// where it was; a yellow that fired keeps the instant it fired at.

const MODEL_DAY: i64 = 86_400_000;
const BEIJING_MS: i64 = 8 * 3_600_000;

struct Model<'a> {
    cal: &'a redlight::calendar::Calendar,
    /// Counting starts at 00:00 of the day after the start (民法典 Art. 201).
    origin: i64,
    /// The limit with the extensions granted, in workday milliseconds.
    limit: i64,
    cap: Option<u32>,
    extended: u32,
    since: Option<i64>,
    paused_at: Option<i64>,
    counted: i64,
    deadline: Option<i64>,
    last_deadline: Option<i64>,
    yellow: Option<i64>,
    /// A fired yellow keeps its instant until the clock stops.
    yellow_fired: bool,
}

impl Model<'_> {
    fn workday(&self, day: i64) -> bool {
        let date =
            chrono::NaiveDate::from_num_days_from_ce_opt(719_163 + day as i32).expect("a date");
        self.cal
            .is_workday(date)
            .expect("the test stays inside the data")
    }

    /// Workday time in `[a, b)`, day by day.
    fn workday_time(&self, a: i64, b: i64) -> i64 {
        let mut total = 0;
        let mut day = a.div_euclid(MODEL_DAY);
        while day * MODEL_DAY < b {
            let (from, to) = (a.max(day * MODEL_DAY), b.min((day + 1) * MODEL_DAY));
            if to > from && self.workday(day) {
                total += to - from;
            }
            day += 1;
        }
        total
    }

    /// The instant at which `need` more workday time has run from `from`, day by day.
    fn reach(&self, from: i64, mut need: i64) -> i64 {
        if need <= 0 {
            return from;
        }
        let mut day = from.div_euclid(MODEL_DAY);
        loop {
            let start = from.max(day * MODEL_DAY);
            if self.workday(day) {
                let left = (day + 1) * MODEL_DAY - start;
                if need <= left {
                    return start + need;
                }
                need -= left;
            }
            day += 1;
        }
    }

    /// 24:00 of the day on which `t` falls (Art. 203); 00:00 closes the day before it.
    fn day_end(t: i64) -> i64 {
        ((t - 1).div_euclid(MODEL_DAY) + 1) * MODEL_DAY
    }

    fn schedule(&mut self) {
        let since = self.since.expect("running").max(self.origin);
        let deadline = Self::day_end(self.reach(since, self.limit - self.counted));
        let warn = (self.limit as f64 * 0.9).round() as i64;
        self.deadline = Some(deadline);
        if !self.yellow_fired {
            self.yellow = Some(self.reach(since, warn - self.counted).min(deadline));
        }
    }

    /// The engine's clock has reached `t`: a yellow due before it has fired (timers fire
    /// strictly before an event's time).
    fn advance(&mut self, t: i64) {
        if self.since.is_some() && self.yellow.is_some_and(|y| y < t) {
            self.yellow_fired = true;
        }
    }

    fn start(
        cal: &redlight::calendar::Calendar,
        s: i64,
        workdays: u32,
        cap: Option<u32>,
    ) -> Model<'_> {
        let mut m = Model {
            cal,
            origin: (s.div_euclid(MODEL_DAY) + 1) * MODEL_DAY,
            limit: i64::from(workdays) * MODEL_DAY,
            cap,
            extended: 0,
            since: Some(s),
            paused_at: None,
            counted: 0,
            deadline: None,
            last_deadline: None,
            yellow: None,
            yellow_fired: false,
        };
        m.schedule();
        m
    }

    fn pause(&mut self, t: i64) {
        let Some(since) = self.since else { return };
        let t = t.max(since);
        self.counted += self.workday_time(since.max(self.origin), t.max(self.origin));
        self.since = None;
        self.paused_at = Some(t);
        self.last_deadline = self.deadline.take();
        if !self.yellow_fired {
            self.yellow = None;
        }
    }

    fn resume(&mut self, t: i64) {
        let (None, Some(paused)) = (self.since, self.paused_at) else {
            return;
        };
        self.since = Some(t.max(paused));
        self.paused_at = None;
        match self.last_deadline {
            Some(d) if d < paused && self.counted >= self.limit => {
                self.deadline = Some(d);
                if !self.yellow_fired {
                    self.yellow = Some(d);
                }
            }
            _ => self.schedule(),
        }
    }

    fn extend(&mut self, t: i64, requested: u32) {
        let Some(cap) = self.cap else { return };
        let ran_out = match (self.since, self.paused_at) {
            (Some(_), _) => self.deadline.is_some_and(|d| d < t),
            (None, Some(p)) => self.last_deadline.is_some_and(|d| d < p && d < t),
            (None, None) => false,
        };
        let granted = if ran_out {
            0
        } else {
            requested.min(cap - self.extended)
        };
        self.extended += granted;
        self.limit += i64::from(granted) * MODEL_DAY;
        if granted > 0 && self.since.is_some() {
            self.schedule();
        }
    }
}

/// The engine's clock of `rule` in the case as (deadline, yellow, the deadline it had when
/// it was paused, if it is, extended), its instants in local milliseconds.
fn clock_state(
    engine: &Engine,
    case: &str,
    rule: &str,
) -> (Option<i64>, Option<i64>, Option<i64>, u32) {
    let r = engine.rules().index_of(rule).expect("a shipped rule");
    let c = engine.case(case).expect("the case");
    let k = c.clocks.iter().find(|k| k.rule == r).expect("its clock");
    let local = |t: Option<i64>| t.map(|t| t + BEIJING_MS);
    (
        local(k.deadline.get()),
        local(k.yellow_at.get()),
        local(k.last_deadline.get().filter(|_| k.since.get().is_none())),
        k.extended,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The workday clocks of an approval (`xk.decision`: 20 or 45 workdays, extensions up
    /// to 10 or 15; `xz.promised`: the promised workdays) through suspensions, resumptions
    /// and extensions at random minutes, before and after their deadlines: after every event
    /// the engine's deadline, yellow instant and extensions are the model's.
    #[test]
    fn workday_clocks_agree_with_a_day_by_day_model(
        s in (0i64..((2276 - 1) * 24 * 60)).prop_map(|m| {
            // 2020-01-01 00:00 +08:00 plus up to 2026-03-26, so that 60 workdays and
            // 8 steps of up to 12 days stay inside the data.
            DateTime::parse_from_rfc3339("2020-01-01T00:00:00+08:00").expect("t") + Duration::minutes(m)
        }),
        joint in any::<bool>(),
        promised in 1u32..=20,
        steps in prop::collection::vec((0u8..3, 1i64..(12 * 24 * 60), 0u32..13), 0..9),
    ) {
        let mut engine = engine();
        let cal = engine.calendar().clone();
        let local = |t: DateTime<FixedOffset>| t.timestamp_millis() + BEIJING_MS;
        let data = json!({"kind": "promised", "promised_workdays": promised, "joint": joint});
        run(&mut engine, &[event("a", "approval.accepted", s, "C", data)]);
        let mut decision = Model::start(&cal, local(s), if joint { 45 } else { 20 }, Some(if joint { 15 } else { 10 }));
        let mut promise = Model::start(&cal, local(s), promised, None);
        let mut t = s;
        for (i, (kind, gap, n)) in steps.into_iter().enumerate() {
            t += Duration::minutes(gap);
            let (name, data) = match kind {
                0 => ("approval.suspended", json!({"procedure": "expert_review"})),
                1 => ("approval.resumed", json!({})),
                _ => ("approval.extended", json!({"extra_workdays": n, "approved_by": "局长"})),
            };
            run(&mut engine, &[event(&format!("e{i}"), name, t, "C", data)]);
            for m in [&mut decision, &mut promise] {
                m.advance(local(t));
                match kind {
                    0 => m.pause(local(t)),
                    1 => m.resume(local(t)),
                    _ => m.extend(local(t), n),
                }
            }
            for (rule, m) in [("xk.decision", &decision), ("xz.promised", &promise)] {
                prop_assert_eq!(
                    clock_state(&engine, "C", rule),
                    (m.deadline, m.yellow, m.last_deadline.filter(|_| m.since.is_none()), m.extended),
                    "{} after {} at {}", rule, name, t
                );
            }
        }
    }
}

/// One line per event: its time, case, type and the data the approval rules read.
fn brief(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| {
            let d = |k: &str| e.data.get(k).map_or("-".to_string(), |v| v.to_string());
            format!(
                "{} {} {} extra={} promised={} joint={} kind={} outcome={} period={}\n",
                e.time.to_rfc3339(),
                e.subject,
                e.kind,
                d("extra_workdays"),
                d("promised_workdays"),
                d("joint"),
                d("kind"),
                d("outcome"),
                d("period")
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Events that arrive in the order they happened never make a light a false alarm: a
    /// light fires only once an event after its instant arrives, so no later event can have
    /// happened before it (SPEC §4 `retracted` is for late delivery). And a clock's red
    /// fires at its deadline; a light is resolved only after it fired; `completed_late`
    /// comes after the deadline.
    #[test]
    fn in_time_order_no_light_is_retracted(events in stream()) {
        let mut e = engine();
        let mut alerts = run(&mut e, &events);
        let end = DateTime::parse_from_rfc3339("2026-12-31T00:00:00+08:00").expect("t");
        e.advance(end.timestamp_millis(), &mut alerts);
        use redlight::alert::{Level, Reason, Status};
        let instant = |s: &str| DateTime::parse_from_rfc3339(s).expect("an RFC 3339 instant");
        let mut firing: std::collections::HashMap<(&str, &str, Level), i32> = Default::default();
        for a in &alerts {
            prop_assert!(a.reason != Reason::Retracted, "{:?} after\n{}", a, brief(&events));
            let key = (&*a.case, &*a.rule, a.level);
            let (Some(deadline), Status::Resolved) = (a.deadline.as_deref().map(instant), a.status) else {
                if a.status == Status::Firing {
                    *firing.entry(key).or_default() += 1;
                }
                if a.reason == Reason::Overdue {
                    prop_assert_eq!(Some(&a.at), a.deadline.as_ref(), "{:?}", a);
                }
                continue;
            };
            // Resolved: it fired before, and the reason agrees with the deadline (in time
            // order the alert's `at` is the stop's own time).
            let n = firing.entry(key).or_default();
            *n -= 1;
            prop_assert!(*n >= 0, "resolved without firing: {:?} after\n{}", a, brief(&events));
            // (`completed` can come after the deadline the alert names: a clock stopped
            // while paused is in time, and its alert names the deadline as it stood at the
            // pause.)
            if a.reason == Reason::CompletedLate {
                prop_assert!(instant(&a.at) > deadline, "{:?} after\n{}", a, brief(&events));
            }
        }
    }
}

/// A case as JSON without what says how the engine saw things rather than how they
/// happened: its clocks' retractions.
fn case_facts(engine: &Engine) -> Vec<serde_json::Value> {
    let mut cases: Vec<serde_json::Value> = engine
        .cases()
        .map(|c| {
            let mut v = serde_json::to_value(c).expect("case json");
            if let Some(clocks) = v.get_mut("clocks").and_then(|c| c.as_array_mut()) {
                for k in clocks {
                    if let Some(k) = k.as_object_mut() {
                        k.remove("yellow_retractions");
                        k.remove("red_retractions");
                    }
                }
            }
            v
        })
        .collect();
    cases.sort_by_key(|v| v["id"].to_string());
    cases
}

/// Whether a shipped rule is a periodic duty (its alerts are keyed by period).
fn periodic_rule(rule: &str) -> bool {
    matches!(rule, "nx.quarterly_report" | "hz.safety_meeting")
}

/// The lights a receiver that follows the alerts holds firing: per case, rule and level,
/// the clock alerts that fired (`approaching`, `overdue`) less those resolved (a resolution
/// of a clock names its deadline), and per missed period (`red@` its due time) the
/// `missing` alerts less their resolutions; violations are left out.
fn lights_told(alerts: &[Alert]) -> std::collections::BTreeMap<(String, String, String), i64> {
    use redlight::alert::{Reason, Status};
    let mut lights: std::collections::BTreeMap<(String, String, String), i64> = Default::default();
    for a in alerts {
        let periodic = periodic_rule(&a.rule);
        let delta = match (a.status, a.reason) {
            (Status::Firing, Reason::Approaching | Reason::Overdue | Reason::Missing) => 1,
            (Status::Resolved, _) if a.deadline.is_some() => -1,
            _ => continue,
        };
        let level = if periodic {
            let at = DateTime::parse_from_rfc3339(a.deadline.as_deref().unwrap_or_default())
                .map_or(0, |t| t.timestamp_millis());
            format!("red@{at}")
        } else {
            a.level.as_str().to_string()
        };
        *lights
            .entry((a.case.to_string(), a.rule.to_string(), level))
            .or_default() += delta;
    }
    lights.retain(|_, n| *n != 0);
    lights
}

/// The lights the engine's cases show: running clocks whose yellow or red fired, and the
/// periods of duties still missing.
fn lights_on(engine: &Engine) -> std::collections::BTreeMap<(String, String, String), i64> {
    let mut lights: std::collections::BTreeMap<(String, String, String), i64> = Default::default();
    for c in engine.cases() {
        for k in c.clocks.iter().filter(|k| k.active()) {
            let rule = engine.rules().rule(k.rule).id.to_string();
            for (fired, level) in [(k.yellow_fired, "yellow"), (k.red_fired, "red")] {
                if fired {
                    *lights
                        .entry((c.id.to_string(), rule.clone(), level.to_string()))
                        .or_default() += 1;
                }
            }
        }
        for d in &c.duties {
            let rule = engine.rules().rule(d.rule).id.to_string();
            for (_, due) in &d.missing {
                *lights
                    .entry((c.id.to_string(), rule.clone(), format!("red@{due}")))
                    .or_default() += 1;
            }
        }
    }
    lights
}

/// How each light ended, as a receiver keeps it on record: per case, rule, level and (for a
/// missed period) its due time, the reasons of its resolutions in order, leaving out the
/// retractions (the false alarms of late delivery).
fn resolutions(
    alerts: &[Alert],
) -> std::collections::BTreeMap<(String, String, String, String), Vec<String>> {
    use redlight::alert::{Reason, Status};
    let mut out: std::collections::BTreeMap<_, Vec<String>> = Default::default();
    for a in alerts {
        if a.status != Status::Resolved || a.reason == Reason::Retracted {
            continue;
        }
        let periodic = periodic_rule(&a.rule);
        let due = if periodic {
            a.deadline.clone().unwrap_or_default()
        } else {
            String::new()
        };
        out.entry((
            a.case.to_string(),
            a.rule.to_string(),
            a.level.as_str().to_string(),
            due,
        ))
        .or_default()
        .push(a.reason.as_str().to_string());
    }
    out
}

/// The ids of every light's alerts, keyed as [`resolutions`] keys them, less the lights that
/// a late event retracted in `retracted_in` (their alerts after a retraction have ids of
/// their own, SPEC §4).
fn ids_of_lights_not_retracted(
    alerts: &[Alert],
    retracted_in: &[Alert],
) -> std::collections::BTreeMap<(String, String, String, String), std::collections::BTreeSet<String>>
{
    use redlight::alert::Reason;
    let key = |a: &Alert| {
        let due = if periodic_rule(&a.rule) {
            a.deadline.clone().unwrap_or_default()
        } else {
            String::new()
        };
        (
            a.case.to_string(),
            a.rule.to_string(),
            a.level.as_str().to_string(),
            due,
        )
    };
    let retracted: std::collections::BTreeSet<_> = retracted_in
        .iter()
        .filter(|a| a.reason == Reason::Retracted)
        .map(key)
        .collect();
    let mut out: std::collections::BTreeMap<_, std::collections::BTreeSet<String>> =
        Default::default();
    for a in alerts {
        let k = key(a);
        if !retracted.contains(&k) {
            out.entry(k).or_default().insert(a.id.to_string());
        }
    }
    out
}

/// Where two JSON values differ, as `path: left / right` lines.
fn json_diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let null = Value::Null;
                json_diff(
                    &format!("{path}.{k}"),
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                json_diff(&format!("{path}[{i}]"), p, q, out);
            }
        }
        (Value::Array(x), Value::Array(y)) => out.push(format!(
            "{path}: {} items / {} items: {:?} / {:?}",
            x.len(),
            y.len(),
            x.iter().map(|v| v["id"].to_string()).collect::<Vec<_>>(),
            y.iter().map(|v| v["id"].to_string()).collect::<Vec<_>>()
        )),
        _ if a != b => out.push(format!("{path}: {a} / {b}")),
        _ => {}
    }
}

/// The events delivered with some held back behind up to eleven later ones (`delays`), each
/// case's own events still in their order, as one partition keeps them.
fn delivered_late(events: &[Event], delays: &[usize]) -> Vec<Event> {
    let mut keyed: Vec<(usize, usize)> = Vec::new();
    let mut last_of_case: std::collections::HashMap<&str, usize> = Default::default();
    for (i, e) in events.iter().enumerate() {
        let mut key = i + delays[i % delays.len()];
        if let Some(prev) = last_of_case.get(e.subject.as_str()) {
            key = key.max(*prev);
        }
        last_of_case.insert(&e.subject, key);
        keyed.push((key, i));
    }
    keyed.sort();
    keyed.iter().map(|&(_, i)| events[i].clone()).collect()
}

/// Late delivery changes lights, not facts: the same events delivered with some held back
/// behind up to eleven later ones (`delays`; each case's own events still in their order, as
/// one partition keeps them) leave every case as delivery in time order does, once the
/// clock has passed every deadline: the same deadlines, stops, breaches (a clock stopped
/// late) and missed periods, whatever red fired early and was retracted meanwhile. And in
/// both, halfway and at the end, a receiver following the alerts holds exactly the lights
/// the cases show; every light but the retracted ones ends the same way.
fn late_delivery_leaves_the_same(events: &[Event], delays: &[usize]) -> Result<(), TestCaseError> {
    let delivered = delivered_late(events, delays);
    let end = DateTime::parse_from_rfc3339("2026-12-31T00:00:00+08:00")
        .expect("t")
        .timestamp_millis();
    let mut facts = Vec::new();
    let mut ended = Vec::new();
    let mut alerts = Vec::new();
    for (k, order) in [events, &delivered].into_iter().enumerate() {
        let mut e = engine();
        // Forgetting a quiet case goes by the engine's clock, so an event delivered after its
        // case was forgotten starts the case anew (docs/rules.md); here no case is forgotten.
        e.set_retention_days(3650);
        let half = order.len() / 2;
        let mut out = run(&mut e, &order[..half]);
        let told = lights_told(&out);
        prop_assert_eq!(
            &told,
            &lights_on(&e),
            "halfway, delivered as\n{}",
            brief(order)
        );
        out.extend(run(&mut e, &order[half..]));
        e.advance(end, &mut out);
        prop_assert_eq!(
            lights_told(&out),
            lights_on(&e),
            "at the end, delivered as\n{}",
            brief(order)
        );
        if k == 0 {
            // In time order nothing is a false alarm.
            let retracted = out
                .iter()
                .find(|a| a.reason == redlight::alert::Reason::Retracted);
            prop_assert!(
                retracted.is_none(),
                "{:?} in time order:\n{}",
                retracted,
                brief(order)
            );
        }
        facts.push(case_facts(&e));
        ended.push(resolutions(&out));
        alerts.push(out);
    }
    // A light that no late event retracted has the same alerts with the same ids in both
    // orders (SPEC §4: the same case, rule, cycle, level and status give the same id).
    prop_assert_eq!(
        ids_of_lights_not_retracted(&alerts[0], &alerts[1]),
        ids_of_lights_not_retracted(&alerts[1], &alerts[1]),
        "in time order / delivered late, delivered as\n{}",
        brief(&delivered)
    );
    // Every light that was not a false alarm ended the same way: completed in time, late,
    // or withdrawn.
    prop_assert_eq!(
        &ended[0],
        &ended[1],
        "in time order / delivered late, delivered as\n{}",
        brief(&delivered)
    );
    let mut diffs = Vec::new();
    json_diff(
        "",
        &serde_json::Value::from(facts[0].clone()),
        &serde_json::Value::from(facts[1].clone()),
        &mut diffs,
    );
    prop_assert!(
        diffs.is_empty(),
        "in time order / delivered late:\n{}\ndelivered as\n{}",
        diffs.join("\n"),
        brief(&delivered)
    );
    Ok(())
}

/// The scorecard's ledger as the daemon writes it: the rows of an event's case after each
/// event, then at the end of each batch (`batches` says after which events one ends) the
/// periods marked missed or retracted and the rows of every changed case, written in that
/// order, the rows taken back last.
type Ledger = std::collections::BTreeMap<(i64, String, String), String>;

fn ledger_as_written(order: &[Event], batches: &[bool]) -> Ledger {
    let end = DateTime::parse_from_rfc3339("2026-12-31T00:00:00+08:00")
        .expect("t")
        .timestamp_millis();
    let mut e = engine();
    e.set_retention_days(3650);
    e.track_changes();
    let mut ledger = Ledger::new();
    let mut rows = Vec::new();
    let mut out = Vec::new();
    let persist =
        |e: &mut Engine, rows: &mut Vec<(i64, String, String, Vec<u8>)>, ledger: &mut Ledger| {
            let mut back = Vec::new();
            redlight::scorecard::take_period_rows(e, rows, &mut back);
            for id in e.take_changed() {
                if let Some(c) = e.case(&id) {
                    redlight::scorecard::ledger_rows(c, e.rules(), rows);
                }
            }
            for (at, case, key, json) in rows.drain(..) {
                ledger.insert((at, case, key), String::from_utf8(json).expect("utf-8"));
            }
            for k in back {
                ledger.remove(&k);
            }
        };
    for (i, ev) in order.iter().enumerate() {
        e.advance_before(ev.time_ms(), &mut out);
        e.apply(ev, &mut out).expect("calendar covers the stream");
        if let Some(c) = e.case(&ev.subject) {
            redlight::scorecard::ledger_rows(c, e.rules(), &mut rows);
        }
        if batches[i % batches.len()] {
            persist(&mut e, &mut rows, &mut ledger);
        }
    }
    e.advance(end, &mut out);
    persist(&mut e, &mut rows, &mut ledger);
    ledger
}

/// The scorecard counts the same however late events arrive and however they are cut into
/// batches: its ledger (cases closed, on time or late; violations; missed periods) from the
/// events in time order, written in one batch each, equals the ledger from the same events
/// delivered with some held back (as in [`late_delivery_leaves_the_same`]) and written in
/// random batches.
fn scorecard_is_the_same(
    events: &[Event],
    delays: &[usize],
    batches: &[bool],
) -> Result<(), TestCaseError> {
    let delivered = delivered_late(events, delays);
    let in_time = ledger_as_written(events, &[true]);
    let late = ledger_as_written(&delivered, batches);
    prop_assert_eq!(
        &in_time,
        &late,
        "in time order / delivered late, delivered as\n{}",
        brief(&delivered)
    );
    Ok(())
}

/// Random reports and meetings around the due times of the first three quarters of 2026,
/// in time order: three markets registered (nx.quarterly_report: a quarter's report is due
/// 15 days after it ends) and three departments that held a first meeting
/// (hz.safety_meeting: one each quarter), each report for a quarter or without a label,
/// some withdrawals, and events of other cases that move the engine's clock.
fn periodic_stream() -> impl Strategy<Value = Vec<Event>> {
    let step = (0u8..6, 0u8..3, 0u8..3, -4320i64..4320, any::<bool>());
    prop::collection::vec(step, 1..40).prop_map(|steps| {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).expect("t");
        let dept = json!({"department": "市应急管理局"});
        let mut planned: Vec<(DateTime<FixedOffset>, &str, String, serde_json::Value)> = Vec::new();
        for c in 0..3 {
            let t = at("2026-01-05T09:00:00+08:00") + Duration::minutes(c);
            planned.push((
                t,
                "market.registration_decided",
                format!("MARKET-{c}"),
                json!({"outcome": "approved"}),
            ));
            planned.push((t, "safety.meeting_held", format!("DEPT-{c}"), dept.clone()));
        }
        let report_due = ["2026-04-16", "2026-07-16", "2026-10-16"];
        let quarter_end = ["2026-04-01", "2026-07-01", "2026-10-01"];
        for (n, (kind, case, q, minutes, label)) in steps.into_iter().enumerate() {
            let q = usize::from(q);
            let around =
                |day: &str| at(&format!("{day}T00:00:00+08:00")) + Duration::minutes(minutes);
            let period = json!({"period": format!("2026Q{}", q + 1)});
            planned.push(match kind {
                0 | 1 => (
                    around(report_due[q]),
                    "market.report_submitted",
                    format!("MARKET-{case}"),
                    if label { period } else { json!({}) },
                ),
                2 => (
                    around(quarter_end[q]),
                    "safety.meeting_held",
                    format!("DEPT-{case}"),
                    dept.clone(),
                ),
                3 => (
                    around(if label { report_due[q] } else { quarter_end[q] }),
                    "approval.withdrawn",
                    format!("{}-{case}", if label { "MARKET" } else { "DEPT" }),
                    json!({}),
                ),
                _ => (
                    around(if label { report_due[q] } else { quarter_end[q] }),
                    "market.registration_accepted",
                    format!("OTHER-{n}"),
                    json!({}),
                ),
            });
        }
        planned.sort_by_key(|p| p.0);
        planned
            .into_iter()
            .enumerate()
            .map(|(i, (t, kind, case, data))| event(&format!("e{i}"), kind, t, &case, data))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// [`late_delivery_leaves_the_same`] over random streams of every event type.
    #[test]
    fn late_delivery_leaves_the_same_cases(
        events in stream(),
        delays in prop::collection::vec(0usize..12, 80),
    ) {
        late_delivery_leaves_the_same(&events, &delays)?;
    }

    /// [`late_delivery_leaves_the_same`] over reports and meetings around their due times:
    /// a report or meeting made by its due time and delivered after its period went red
    /// retracts the red, as a clock's stop does.
    /// [`scorecard_is_the_same`] over random streams of every event type.
    #[test]
    fn late_delivery_and_batches_leave_the_same_scorecard(
        events in stream(),
        delays in prop::collection::vec(0usize..12, 80),
        batches in prop::collection::vec(prop::bool::weighted(0.2), 1..20),
    ) {
        scorecard_is_the_same(&events, &delays, &batches)?;
    }

    /// [`scorecard_is_the_same`] over reports and meetings around their due times.
    #[test]
    fn late_delivery_and_batches_leave_the_same_scorecard_of_periodic_duties(
        events in periodic_stream(),
        delays in prop::collection::vec(0usize..12, 80),
        batches in prop::collection::vec(prop::bool::weighted(0.2), 1..20),
    ) {
        scorecard_is_the_same(&events, &delays, &batches)?;
    }

    #[test]
    fn late_delivery_leaves_the_same_periodic_duties(
        events in periodic_stream(),
        delays in prop::collection::vec(0usize..12, 80),
    ) {
        late_delivery_leaves_the_same(&events, &delays)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// What goes quiet stays quiet: an event whose id the case has seen raises no alert and
    /// is reported a duplicate; after a case's withdrawal no light of it fires again, and its
    /// later events are reported as to a withdrawn case (SPEC §1, docs/rules.md).
    #[test]
    fn duplicates_and_withdrawn_cases_stay_quiet(events in stream()) {
        let mut e = engine();
        e.set_retention_days(3650);
        let mut seen: std::collections::HashSet<(String, String)> = Default::default();
        let mut withdrawn: std::collections::HashSet<String> = Default::default();
        let mut out = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            out.clear();
            e.advance_before(ev.time_ms(), &mut out);
            for a in &out {
                prop_assert!(
                    !(withdrawn.contains(&*a.case) && a.status == redlight::alert::Status::Firing),
                    "a timer of withdrawn {} fired: {:?}\n{}", a.case, a, brief(&events[..=i])
                );
            }
            out.clear();
            let applied = e.apply(ev, &mut out).expect("calendar covers the stream");
            let key = (ev.subject.to_string(), ev.id.to_string());
            if seen.contains(&key) {
                prop_assert_eq!(applied, redlight::engine::Applied::Duplicate);
                prop_assert!(out.is_empty(), "a duplicate raised {:?}", out);
            } else if withdrawn.contains(ev.subject.as_str()) {
                prop_assert_eq!(applied, redlight::engine::Applied::CaseWithdrawn);
                prop_assert!(out.is_empty(), "an event of a withdrawn case raised {:?}", out);
            } else if ev.kind == "approval.withdrawn" && applied == redlight::engine::Applied::Applied {
                prop_assert!(out.iter().all(|a| a.status == redlight::alert::Status::Resolved));
                withdrawn.insert(ev.subject.to_string());
            }
            seen.insert(key);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// 即办件 (`xz.immediate`): the deadline is 24:00 of the acceptance day when it is a
    /// workday, else of the next workday, found by walking the calendar day by day; the
    /// yellow comes 8 hours before it, or at once when less is left.
    #[test]
    fn same_workday_clocks_agree_with_a_day_by_day_walk(s in instant()) {
        let mut e = engine();
        run(&mut e, &[event("a", "approval.accepted", s, "I", json!({"kind": "immediate"}))]);
        let mut day = s.date_naive();
        while !e.calendar().is_workday(day).expect("in data") {
            day = day.succ_opt().expect("date");
        }
        let deadline = day
            .succ_opt()
            .expect("date")
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_local_timezone(beijing())
            .single()
            .expect("fixed offset")
            .timestamp_millis();
        let yellow = (deadline - 8 * 3_600_000).max(s.timestamp_millis());
        let (got_deadline, got_yellow, _, _) = clock_state(&e, "I", "xz.immediate");
        prop_assert_eq!(
            (got_deadline, got_yellow),
            (Some(deadline + BEIJING_MS), Some(yellow + BEIJING_MS))
        );
    }
}
