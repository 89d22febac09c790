//! The open-case gauges are counted as cases change (src/open_counts.rs): these tests drive
//! the engine through the sample events and far past their deadlines and retention, doing
//! what the daemon's consumer loop does after each batch, and check the running counts
//! against a count of every case from scratch, and each case's class against the board's
//! judgement of it.

use redlight::api::CaseLite;
use redlight::config::Config;
use redlight::engine::Engine;
use redlight::event::Event;
use redlight::open_counts::{Classifier, Counts};
use std::path::Path;

fn engine(retention_days: u32) -> Engine {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/redlight.toml");
    let mut e = Config::load(&path)
        .expect("config")
        .build_engine()
        .expect("engine");
    e.set_retention_days(retention_days);
    e.track_changes();
    e
}

fn samples() -> Vec<Event> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/events.jsonl");
    let mut events: Vec<Event> = std::fs::read_to_string(path)
        .expect("samples")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Event::parse(l.as_bytes()).expect("a valid sample"))
        .collect();
    events.sort_by_key(|e| e.time);
    events
}

/// What the consumer loop does when it persists a batch.
fn persist(engine: &mut Engine, classifier: &mut Classifier, counts: &mut Counts) {
    for class in engine.take_released() {
        counts.add(class, -1);
    }
    for id in engine.take_changed() {
        if let Some(case) = engine.case(&id) {
            let (was, is) = classifier.rejudge(case);
            counts.moved(was, is);
        }
    }
}

/// Every case counted from scratch, each class checked against the board's judgement.
fn recount(engine: &Engine, classifier: &mut Classifier) -> Counts {
    let mut counts = Counts::default();
    for case in engine.cases() {
        let class = classifier.judge(case);
        let lite = CaseLite::from(case);
        let judged = lite.judge();
        match classifier.class(class) {
            None => assert!(
                !judged.open && class == 0,
                "case {}: not counted, but the board has it open",
                case.id
            ),
            Some(c) => {
                assert!(judged.open, "case {}: counted, but not open", case.id);
                assert_eq!(
                    c.rules.as_slice(),
                    judged.rules.as_slice(),
                    "case {}",
                    case.id
                );
                assert_eq!(c.light(), judged.light, "case {}", case.id);
                assert_eq!(c.department, lite.department(), "case {}", case.id);
            }
        }
        counts.add(class, 1);
    }
    counts
}

#[test]
fn counts_kept_batch_by_batch_equal_a_recount_through_lights_closing_and_forgetting() {
    let mut e = engine(3);
    let mut classifier = Classifier::default();
    let mut counts = Counts::default();
    let events = samples();
    let mut alerts = Vec::new();
    let mut seen_open = 0usize;
    // Batches of three events, as a consumer's poll would bring them.
    for batch in events.chunks(3) {
        for ev in batch {
            let _ = e.apply(ev, &mut alerts);
        }
        persist(&mut e, &mut classifier, &mut counts);
        assert_eq!(counts, recount(&e, &mut classifier), "after a batch");
        seen_open = seen_open.max(counts.iter().map(|(_, n)| n as usize).sum());
    }
    assert!(seen_open > 5, "the samples open cases: {seen_open}");
    // The wall clock: a day at a time to the end of the calendar data, firing yellows and
    // reds (closed cases were forgotten three days after they closed, on the way).
    let last = e
        .calendar()
        .last_day()
        .and_hms_opt(23, 0, 0)
        .expect("a time");
    let mut t = e.now();
    let end = last.and_utc().timestamp_millis() - 8 * 3_600_000;
    while t < end {
        t = (t + 86_400_000).min(end);
        e.advance(t, &mut alerts);
        persist(&mut e, &mut classifier, &mut counts);
        assert_eq!(counts, recount(&e, &mut classifier), "at {t}");
    }
    let subjects: std::collections::HashSet<&str> =
        events.iter().map(|ev| ev.subject.as_str()).collect();
    assert!(
        e.case_count() < subjects.len(),
        "closed cases were forgotten: {} of {} left",
        e.case_count(),
        subjects.len()
    );
    let lights: Vec<_> = counts
        .iter()
        .filter_map(|(h, _)| classifier.class(h).map(|c| c.light()))
        .collect();
    assert!(
        lights.contains(&redlight::engine::Light::Red),
        "some cases went red: {lights:?}"
    );
}

/// A case moved to another engine (the daemon's partitions, when partitions are added to a
/// topic, a producer keys otherwise or a case's events come on two topics:
/// `Engine::take_case`, `Engine::adopt`) is
/// counted out of the partition it leaves and into the one that takes it: each partition's
/// counts equal a recount of its own cases, batch after batch.
#[test]
fn counts_follow_a_case_moved_to_another_partition() {
    let mut parts = [engine(3), engine(3)];
    let mut classifier = Classifier::default();
    let mut counts = [Counts::default(), Counts::default()];
    let events = samples();
    let mut alerts = Vec::new();
    let mut moved = 0usize;
    for (i, batch) in events.chunks(3).enumerate() {
        // A case's partition by its id, the other one from the second half on.
        let shift = usize::from(i >= events.len() / 6);
        for ev in batch {
            let to = (ev.subject.len() + shift) % 2;
            if parts[to].case(&ev.subject).is_none()
                && let Some(case) = parts[1 - to].take_case(&ev.subject)
            {
                parts[to].adopt(case);
                moved += 1;
            }
            let _ = parts[to].apply(ev, &mut alerts);
        }
        for (k, e) in parts.iter_mut().enumerate() {
            persist(e, &mut classifier, &mut counts[k]);
            assert_eq!(counts[k], recount(e, &mut classifier), "partition {k}");
        }
    }
    assert!(moved > 3, "cases moved: {moved}");
    let open: i64 = counts.iter().flat_map(|c| c.iter().map(|(_, n)| n)).sum();
    assert!(open > 3, "the samples' open cases are counted: {open}");
}

#[test]
fn a_forgotten_case_hands_its_tag_back() {
    let mut e = engine(1);
    let mut alerts = Vec::new();
    for ev in samples().iter().filter(|ev| ev.subject == "XZ-2026-0004") {
        let _ = e.apply(ev, &mut alerts);
    }
    e.case("XZ-2026-0004")
        .expect("the withdrawn sample")
        .tag
        .set(42);
    assert!(e.take_released().is_empty(), "nothing forgotten yet");
    e.advance(e.now() + 30 * 86_400_000, &mut alerts);
    assert!(e.case("XZ-2026-0004").is_none(), "forgotten after a day");
    assert_eq!(e.take_released(), vec![42]);
}
