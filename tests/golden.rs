//! Golden replay tests: small JSON Lines inputs of CloudEvents run through the real engine the
//! way `redlight replay` does (`config/redlight.toml`, its shipped rule packs and calendars),
//! asserting the alerts each rule of SPEC §2 raises.
//!
//! Every expected instant below is worked out by hand from SPEC §3 and the 2026 calendar
//! (`config/calendars/2026.toml`, 国办发明电〔2025〕7号), never copied from the engine's output.
//! The working is in the comments. The 2026 facts used:
//!
//! | holiday | days off | make-up workdays |
//! |---|---|---|
//! | 元旦 | 01-01 (Thu) .. 01-03 (Sat) | 01-04 (Sun) |
//! | 春节 | 02-15 (Sun) .. 02-23 (Mon) | 02-14 (Sat), 02-28 (Sat) |
//! | 清明节 | 04-04 (Sat) .. 04-06 (Mon) | — |
//! | 劳动节 | 05-01 (Fri) .. 05-05 (Tue) | 05-09 (Sat) |
//! | 端午节 | 06-19 (Fri) .. 06-21 (Sun) | — |
//! | 中秋节 | 09-25 (Fri) .. 09-27 (Sun) | — |
//! | 国庆节 | 10-01 (Thu) .. 10-07 (Wed) | 09-20 (Sun), 10-10 (Sat) |
//!
//! Rules of counting (SPEC §3) used throughout:
//! - hours: from the start instant S itself;
//! - days and workdays: from 00:00 of the day after S (民法典 Art. 201), so "day 1" is the day
//!   after S; the deadline is 24:00 of the day the count is reached (Art. 203), written as
//!   00:00 of the next day; for calendar days, when that last day is not a workday, 24:00 of
//!   the next workday;
//! - yellow: 90% of the (extended) limit in counted time, not moved to 24:00;
//! - same workday: 24:00 of S's day if a workday, else of the next workday;
//! - absolute due: the event's `due`.
//!
//! Each alert is shown as `level status reason at=… deadline=…` (`deadline=-` when the alert
//! has none) so that a failing assertion prints a readable diff.

use redlight::cli::{self, ReplaySummary};
use redlight::config::Config;
use serde_json::{Value, json};
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// One CloudEvent as a JSON Lines line.
fn ev(id: &str, kind: &str, time: &str, subject: &str, data: Value) -> String {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/golden",
        "type": kind,
        "time": time,
        "subject": subject,
        "datacontenttype": "application/json",
        "data": data,
    })
    .to_string()
}

/// RFC 3339 → epoch milliseconds (the `until` argument of `cli::replay`).
fn ms(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .expect("RFC 3339 time")
        .timestamp_millis()
}

/// What one replay printed.
struct Replay {
    stdout: String,
    stderr: String,
    alerts: Vec<Value>,
    summary: ReplaySummary,
}

/// Runs `lines` through a fresh engine built from the shipped configuration, exactly as
/// `redlight replay --config config/redlight.toml [--until UNTIL] -` does.
fn replay(lines: &[String], until: Option<&str>) -> Replay {
    replay_on(&mut shipped_engine(), lines, until)
}

/// A fresh engine built from the shipped configuration.
fn shipped_engine() -> redlight::engine::Engine {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/redlight.toml");
    let config = Config::load(&path).expect("config/redlight.toml loads");
    config.build_engine().expect("engine builds")
}

/// [`replay`] on a given engine.
fn replay_on(
    engine: &mut redlight::engine::Engine,
    lines: &[String],
    until: Option<&str>,
) -> Replay {
    let mut input = lines.join("\n");
    input.push('\n');
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let summary = cli::replay(engine, input.as_bytes(), until.map(ms), &mut out, &mut err)
        .expect("replay reads its input");
    let stdout = String::from_utf8(out).expect("stdout is UTF-8");
    let alerts = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every output line is a JSON alert"))
        .collect();
    Replay {
        stdout,
        stderr: String::from_utf8(err).expect("stderr is UTF-8"),
        alerts,
        summary,
    }
}

fn field<'a>(a: &'a Value, k: &str) -> &'a str {
    a[k].as_str().unwrap_or("-")
}

/// `level status reason at=… deadline=…`
fn show(a: &Value) -> String {
    format!(
        "{} {} {} at={} deadline={}",
        field(a, "level"),
        field(a, "status"),
        field(a, "reason"),
        field(a, "at"),
        field(a, "deadline"),
    )
}

impl Replay {
    /// The alerts of one rule for one case, in output order.
    fn lights(&self, case: &str, rule: &str) -> Vec<String> {
        self.of(case, rule).into_iter().map(show).collect()
    }

    fn of(&self, case: &str, rule: &str) -> Vec<&Value> {
        self.alerts
            .iter()
            .filter(|a| a["case"] == case && a["rule"] == rule)
            .collect()
    }

    /// Every alert of a case, shown with its rule.
    fn case(&self, case: &str) -> Vec<String> {
        self.alerts
            .iter()
            .filter(|a| a["case"] == case)
            .map(|a| format!("{} {}", field(a, "rule"), show(a)))
            .collect()
    }

    fn assert_clean(&self) {
        assert_eq!(self.stderr, "", "no input line is rejected");
        assert_eq!(self.summary.rejected, 0);
    }
}

/// `approval.accepted` data without `kind`, so only `xk.decision` (and `xz.stages`) start.
fn plain() -> Value {
    json!({"department": "市住建局", "item": "建筑工程施工许可", "handler": "张三"})
}

// The xk.decision clock of a case accepted at 2026-09-28T10:00 (SPEC §3 worked example), used
// by several tests:
//   day 1 is 09-29 (Art. 201). Workdays: 09-29 #1, 09-30 #2; 10-01..10-07 National Day off;
//   10-08 #3, 10-09 #4, 10-10 (Sat, make-up) #5; 10-11 Sun off; 10-12..16 #6-#10;
//   10-19..23 #11-#15; 10-26 #16, 10-27 #17, 10-28 #18, 10-29 #19, 10-30 #20.
//   Red: 24:00 of 10-30. Yellow: 90% × 20 = 18 workdays, reached at 24:00 of 10-28.
const ACCEPTED: &str = "2026-09-28T10:00:00+08:00";
const XK_YELLOW: &str = "2026-10-29T00:00:00+08:00";
const XK_RED: &str = "2026-10-31T00:00:00+08:00";

// ---------------------------------------------------------------------------------------------
// SPEC §3 worked example
// ---------------------------------------------------------------------------------------------

/// The README's example alert ("Alerts out") is the red that `replay` prints for the
/// README's worked example (its `echo '…' | … replay … --until 2026-11-01…` command), id
/// and all: a newcomer who runs the one and reads the other sees the same.
#[test]
fn the_readmes_example_alert_is_what_replay_prints() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let event = readme
        .split("echo '")
        .nth(1)
        .and_then(|t| t.split('\'').next())
        .expect("the README's worked example event");
    let section = &readme[readme.find("## Alerts out").expect("an Alerts out section")..];
    let block = section
        .split("```json\n")
        .nth(1)
        .and_then(|t| t.split("```").next())
        .expect("its JSON block");
    let shown: Value = serde_json::from_str(block).expect("the example alert is JSON");
    let r = replay(&[event.to_string()], Some("2026-11-01T00:00:00+08:00"));
    r.assert_clean();
    let red = r
        .alerts
        .iter()
        .find(|a| a["level"] == "red")
        .expect("a red");
    assert_eq!(red, &shown);
}

/// SPEC §3, verbatim: accepted 2026-09-28 10:00 (+08:00), 20 workdays. Counting starts
/// 2026-09-29; 10-01..10-07 are the National Day holiday; 2026-10-10 (Saturday) is a make-up
/// workday. The 20th workday is 2026-10-30, so the deadline is 2026-10-31T00:00:00+08:00, and
/// yellow (90% = 18 workdays) comes at 2026-10-29T00:00:00+08:00.
#[test]
fn spec_worked_example() {
    let r = replay(
        &[ev(
            "e1",
            "approval.accepted",
            ACCEPTED,
            "XZ-2026-0001",
            plain(),
        )],
        Some("2026-11-01T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("XZ-2026-0001", "xk.decision"),
        [
            "yellow firing approaching at=2026-10-29T00:00:00+08:00 deadline=2026-10-31T00:00:00+08:00",
            "red firing overdue at=2026-10-31T00:00:00+08:00 deadline=2026-10-31T00:00:00+08:00",
        ]
    );
    // The alert body of SPEC §4: title, basis and the case's people travel with it.
    let red = r.of("XZ-2026-0001", "xk.decision")[1];
    assert_eq!(red["title"], "行政许可决定期限");
    assert_eq!(
        red["basis"],
        "《中华人民共和国行政许可法》第四十二条、第四十五条、第八十二条"
    );
    assert_eq!(red["department"], "市住建局");
    assert_eq!(red["item"], "建筑工程施工许可");
    assert_eq!(red["handler"], "张三");
    let id = red["id"].as_str().expect("id");
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    // Nothing but the decision clock: no kind → neither 即办件 nor 承诺件; one stage, in order.
    assert_eq!(r.alerts.len(), 2, "{}", r.stdout);
}

// ---------------------------------------------------------------------------------------------
// xk — 行政许可法
// ---------------------------------------------------------------------------------------------

/// xk.notify_incomplete, plain path, with the 2026-09-20 make-up Sunday.
/// Submitted Fri 2026-09-18 10:00; day 1 is Sat 09-19 (weekend, not counted);
/// 09-20 (Sun, make-up for National Day) #1, 09-21 #2, 09-22 #3, 09-23 #4, 09-24 #5.
/// Red: 24:00 of 09-24 = 09-25T00:00. Yellow: 4.5 workdays = 12:00 of the 5th (09-24).
#[test]
fn xk_notify_incomplete_counts_the_makeup_sunday() {
    let r = replay(
        &[ev(
            "n1",
            "approval.submitted",
            "2026-09-18T10:00:00+08:00",
            "XK-N1",
            plain(),
        )],
        Some("2026-09-26T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("XK-N1", "xk.notify_incomplete"),
        [
            "yellow firing approaching at=2026-09-24T12:00:00+08:00 deadline=2026-09-25T00:00:00+08:00",
            "red firing overdue at=2026-09-25T00:00:00+08:00 deadline=2026-09-25T00:00:00+08:00",
        ]
    );
}

/// Submitted Wed 2026-09-23 10:00; day 1 is 09-24 #1; 09-25..27 中秋 off; 09-28 #2, 09-29 #3,
/// 09-30 #4; 10-01..07 国庆 off; 10-08 #5. Red 10-09T00:00; yellow 4.5 → 10-08T12:00.
/// N2: the one-time notice at 10-08 15:00 comes after yellow, before red → yellow `completed`.
/// N3: accepted (the other stop) at 10-09 09:30, after red → both `completed_late`.
#[test]
fn xk_notify_incomplete_stops_in_time_and_late() {
    let r = replay(
        &[
            ev(
                "n2-1",
                "approval.submitted",
                "2026-09-23T10:00:00+08:00",
                "XK-N2",
                plain(),
            ),
            ev(
                "n3-1",
                "approval.submitted",
                "2026-09-23T10:00:00+08:00",
                "XK-N3",
                plain(),
            ),
            ev(
                "n2-2",
                "approval.material_incomplete",
                "2026-10-08T15:00:00+08:00",
                "XK-N2",
                json!({"missing": ["施工图审查合格书"]}),
            ),
            ev(
                "n3-2",
                "approval.accepted",
                "2026-10-09T09:30:00+08:00",
                "XK-N3",
                json!({}),
            ),
        ],
        Some("2026-10-12T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("XK-N2", "xk.notify_incomplete"),
        [
            "yellow firing approaching at=2026-10-08T12:00:00+08:00 deadline=2026-10-09T00:00:00+08:00",
            "yellow resolved completed at=2026-10-08T15:00:00+08:00 deadline=2026-10-09T00:00:00+08:00",
        ]
    );
    assert_eq!(
        r.lights("XK-N3", "xk.notify_incomplete"),
        [
            "yellow firing approaching at=2026-10-08T12:00:00+08:00 deadline=2026-10-09T00:00:00+08:00",
            "red firing overdue at=2026-10-09T00:00:00+08:00 deadline=2026-10-09T00:00:00+08:00",
            "yellow resolved completed_late at=2026-10-09T09:30:00+08:00 deadline=2026-10-09T00:00:00+08:00",
            "red resolved completed_late at=2026-10-09T09:30:00+08:00 deadline=2026-10-09T00:00:00+08:00",
        ]
    );
}

/// Decided 2026-10-29 15:00: after yellow (10-29T00:00), before red (10-31T00:00) → the
/// yellow is resolved `completed` at the decision and no red follows.
#[test]
fn xk_decision_in_time_clears_yellow() {
    let r = replay(
        &[
            ev("a", "approval.accepted", ACCEPTED, "XK-D1", plain()),
            ev(
                "b",
                "approval.decided",
                "2026-10-29T15:00:00+08:00",
                "XK-D1",
                json!({"outcome": "denied", "reason": "不符合规划"}),
            ),
        ],
        Some("2026-11-15T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("XK-D1", "xk.decision"),
        [
            format!("yellow firing approaching at={XK_YELLOW} deadline={XK_RED}"),
            format!("yellow resolved completed at=2026-10-29T15:00:00+08:00 deadline={XK_RED}"),
        ]
    );
}

/// Decided Mon 2026-11-02 10:00, after red (10-31T00:00): the red is resolved
/// `completed_late` (the breach stays on record), and the yellow with it.
#[test]
fn xk_decision_late_is_completed_late() {
    let r = replay(
        &[
            ev("a", "approval.accepted", ACCEPTED, "XK-D2", plain()),
            ev(
                "b",
                "approval.decided",
                "2026-11-02T10:00:00+08:00",
                "XK-D2",
                json!({"outcome": "denied"}),
            ),
        ],
        Some("2026-11-15T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("XK-D2", "xk.decision"),
        [
            format!("yellow firing approaching at={XK_YELLOW} deadline={XK_RED}"),
            format!("red firing overdue at={XK_RED} deadline={XK_RED}"),
            format!(
                "yellow resolved completed_late at=2026-11-02T10:00:00+08:00 deadline={XK_RED}"
            ),
            format!("red resolved completed_late at=2026-11-02T10:00:00+08:00 deadline={XK_RED}"),
        ]
    );
}

/// Art. 45: a hearing from Mon 2026-10-12 16:30 to Mon 2026-10-19 16:30.
/// Counted before the pause: 09-29, 09-30, 10-08, 10-09, 10-10 (make-up Sat) = 5 workdays,
/// plus 10-12 00:00–16:30 = 16.5 h.
/// Paused workday time: 10-12 16:30–24:00 (7.5 h) + 10-13..10-16 (4 workdays; 10-17/18 are a
/// weekend) + 10-19 00:00–16:30 (16.5 h) = exactly 5 workdays.
/// So the deadline moves from 24:00 of 10-30 by 5 workdays: 11-02, 03, 04, 05, 06 → 24:00 of
/// 11-06 = 11-07T00:00. Check by counting on: after the resume 20 d − 5 d 16.5 h = 14 d 7.5 h
/// remain: 7.5 h of 10-19, then 10-20..23 (4), 10-26..30 (9), 11-02..06 (14) → end of 11-06.
/// Yellow (18 workdays): 12 d 7.5 h remain after the resume: 7.5 h of 10-19, 10-20..23 (4),
/// 10-26..30 (9), 11-02..04 (12) → 24:00 of 11-04 = 11-05T00:00. The old 10-29 yellow never
/// fires.
#[test]
fn xk_decision_pause_moves_the_deadline_by_the_paused_workdays() {
    let r = replay(
        &[
            ev("a", "approval.accepted", ACCEPTED, "XK-P", plain()),
            ev(
                "s",
                "approval.suspended",
                "2026-10-12T16:30:00+08:00",
                "XK-P",
                json!({"procedure": "hearing"}),
            ),
            ev(
                "r",
                "approval.resumed",
                "2026-10-19T16:30:00+08:00",
                "XK-P",
                json!({}),
            ),
        ],
        Some("2026-11-10T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("XK-P", "xk.decision"),
        [
            "yellow firing approaching at=2026-11-05T00:00:00+08:00 deadline=2026-11-07T00:00:00+08:00",
            "red firing overdue at=2026-11-07T00:00:00+08:00 deadline=2026-11-07T00:00:00+08:00",
        ]
    );
}

/// Art. 42: extended by 10 workdays on 2026-10-20 (the cap; no violation). Limit 30 workdays:
/// #20 is 10-30, then 11-02..06 (#21-#25), 11-09..13 (#26-#30) → red 24:00 of 11-13 =
/// 11-14T00:00. Yellow at 90% of the extended limit, 27 workdays: #27 is 11-10 → 11-11T00:00.
#[test]
fn xk_decision_extension_moves_the_deadline() {
    let r = replay(
        &[
            ev("a", "approval.accepted", ACCEPTED, "XK-E", plain()),
            ev(
                "x",
                "approval.extended",
                "2026-10-20T10:00:00+08:00",
                "XK-E",
                json!({"extra_workdays": 10, "approved_by": "局长"}),
            ),
        ],
        Some("2026-11-20T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("XK-E", "xk.decision"),
        [
            "yellow firing approaching at=2026-11-11T00:00:00+08:00 deadline=2026-11-14T00:00:00+08:00",
            "red firing overdue at=2026-11-14T00:00:00+08:00 deadline=2026-11-14T00:00:00+08:00",
        ]
    );
}

/// Extensions of 6 (10-20) and 5 (10-27) workdays total 11 > 10: a red `violation` at the
/// second extension, no deadline on it. docs/rules.md: the excess is not granted, so the
/// limit is 20 + 10 = 30 workdays, as in the test above: yellow 11-11T00:00, red 11-14T00:00.
/// (Between the two: 26 workdays, red 11-10T00:00, yellow at 23.4 workdays = 09:36 of #24,
/// 11-05 — neither reached before the second extension replaces them.)
#[test]
fn xk_decision_extension_over_the_cap_is_a_violation() {
    let r = replay(
        &[
            ev("a", "approval.accepted", ACCEPTED, "XK-EC", plain()),
            ev(
                "x1",
                "approval.extended",
                "2026-10-20T10:00:00+08:00",
                "XK-EC",
                json!({"extra_workdays": 6, "approved_by": "局长"}),
            ),
            ev(
                "x2",
                "approval.extended",
                "2026-10-27T10:00:00+08:00",
                "XK-EC",
                json!({"extra_workdays": 5, "approved_by": "局长"}),
            ),
        ],
        Some("2026-11-20T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("XK-EC", "xk.decision"),
        [
            "red firing violation at=2026-10-27T10:00:00+08:00 deadline=-",
            "yellow firing approaching at=2026-11-11T00:00:00+08:00 deadline=2026-11-14T00:00:00+08:00",
            "red firing overdue at=2026-11-14T00:00:00+08:00 deadline=2026-11-14T00:00:00+08:00",
        ]
    );
    let v = r.of("XK-EC", "xk.decision")[0];
    assert!(
        field(v, "detail").contains("11"),
        "the detail names the total: {v}"
    );
}

/// Art. 42 ¶2, joint handling: 45 workdays, extensions up to 15. Counting from 09-29 as in
/// the worked example: #20 10-30; 11-02..06 #21-25; 11-09..13 #26-30; 11-16..20 #31-35;
/// 11-23..27 #36-40; 11-30 #41; 12-01 #42; 12-02 #43; 12-03 #44; 12-04 #45;
/// 12-07..11 #46-50; 12-14..18 #51-55; 12-21..25 #56-60.
/// J1 (45): red 24:00 of 12-04 = 12-05T00:00; yellow 90% × 45 = 40.5 workdays = 12:00 of #41,
///   11-30T12:00.
/// J2 (45 + 15 = 60, at the cap): red 24:00 of 12-25 = 12-26T00:00; yellow 54 workdays =
///   24:00 of 12-17 = 12-18T00:00; no violation.
/// J3 (10 then 6 = 16 > 15): violation at the second extension; 15 granted → as J2.
#[test]
fn xk_decision_joint_45_workdays_and_cap_15() {
    let joint = || json!({"department": "市发改委", "item": "固定资产投资项目核准", "joint": true});
    let r = replay(
        &[
            ev("j1", "approval.accepted", ACCEPTED, "XK-J1", joint()),
            ev("j2", "approval.accepted", ACCEPTED, "XK-J2", joint()),
            ev("j3", "approval.accepted", ACCEPTED, "XK-J3", joint()),
            ev(
                "j2x",
                "approval.extended",
                "2026-10-20T10:00:00+08:00",
                "XK-J2",
                json!({"extra_workdays": 15}),
            ),
            ev(
                "j3x1",
                "approval.extended",
                "2026-10-20T10:00:00+08:00",
                "XK-J3",
                json!({"extra_workdays": 10}),
            ),
            ev(
                "j3x2",
                "approval.extended",
                "2026-11-02T10:00:00+08:00",
                "XK-J3",
                json!({"extra_workdays": 6}),
            ),
        ],
        Some("2026-12-27T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("XK-J1", "xk.decision"),
        [
            "yellow firing approaching at=2026-11-30T12:00:00+08:00 deadline=2026-12-05T00:00:00+08:00",
            "red firing overdue at=2026-12-05T00:00:00+08:00 deadline=2026-12-05T00:00:00+08:00",
        ]
    );
    assert_eq!(
        r.lights("XK-J2", "xk.decision"),
        [
            "yellow firing approaching at=2026-12-18T00:00:00+08:00 deadline=2026-12-26T00:00:00+08:00",
            "red firing overdue at=2026-12-26T00:00:00+08:00 deadline=2026-12-26T00:00:00+08:00",
        ]
    );
    assert_eq!(
        r.lights("XK-J3", "xk.decision"),
        [
            "red firing violation at=2026-11-02T10:00:00+08:00 deadline=-",
            "yellow firing approaching at=2026-12-18T00:00:00+08:00 deadline=2026-12-26T00:00:00+08:00",
            "red firing overdue at=2026-12-26T00:00:00+08:00 deadline=2026-12-26T00:00:00+08:00",
        ]
    );
}

/// Late delivery (SPEC §4): case A's decision happened on 10-30 16:00, before its deadline
/// (10-31T00:00), but reaches the engine after an event of another case at 11-02 09:00 that
/// moved the engine's clock past A's yellow (10-29T00:00) and red (10-31T00:00). Both fire
/// before B is applied; then A's decision resolves them at the engine's clock (11-02 09:00):
/// the yellow was reached before the decision (`completed`), the red was a false alarm
/// (`retracted`).
#[test]
fn xk_decision_stop_delivered_late_retracts_the_red() {
    let r = replay(
        &[
            ev("a1", "approval.accepted", ACCEPTED, "XK-LA", plain()),
            ev(
                "b1",
                "approval.accepted",
                "2026-11-02T09:00:00+08:00",
                "XK-LB",
                plain(),
            ),
            ev(
                "a2",
                "approval.decided",
                "2026-10-30T16:00:00+08:00",
                "XK-LA",
                json!({"outcome": "denied"}),
            ),
        ],
        Some("2026-11-05T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("XK-LA", "xk.decision"),
        [
            format!("yellow firing approaching at={XK_YELLOW} deadline={XK_RED}"),
            format!("red firing overdue at={XK_RED} deadline={XK_RED}"),
            format!("yellow resolved completed at=2026-11-02T09:00:00+08:00 deadline={XK_RED}"),
            format!("red resolved retracted at=2026-11-02T09:00:00+08:00 deadline={XK_RED}"),
        ]
    );
}

/// docs/rules.md, "Late events": history delivered after the engine's clock has moved on
/// (a producer feeding its past cases to a daemon that already follows the wall clock, or its
/// backlog after an outage). XK-HN accepted (11-05 09:00) moves the clock first. Then, late:
/// - XK-HA accepted at the worked example's instant (yellow 10-29T00:00, red 10-31T00:00,
///   both passed by the clock), reviewed 10-15 and decided (denied) 10-20, in time: no
///   light at all. Its passed deadlines fire only when the clock is next driven (the next
///   event's time, or `--until`), and its next events are dated before them.
/// - XK-HB accepted at the same instant and never decided: its yellow and red fire at the
///   next event dated after them, with their own instants as `at`: XK-HN's decision at
///   11-05 10:00 (without a review: an `xz.stages` violation, raised as it is applied).
///
/// Until 2026-12-06 a late event's passed deadlines fired while it was applied: XK-HA's
/// yellow and red fired, and its decision retracted them at once.
#[test]
fn history_delivered_after_the_clock_moved_on_raises_only_what_was_late() {
    let hn = ev(
        "n1",
        "approval.accepted",
        "2026-11-05T09:00:00+08:00",
        "XK-HN",
        plain(),
    );
    let hb = ev("b1", "approval.accepted", ACCEPTED, "XK-HB", plain());
    let hb_lights = [
        format!("xk.decision yellow firing approaching at={XK_YELLOW} deadline={XK_RED}"),
        format!("xk.decision red firing overdue at={XK_RED} deadline={XK_RED}"),
    ];
    let r = replay(
        &[
            hn.clone(),
            ev("a1", "approval.accepted", ACCEPTED, "XK-HA", plain()),
            ev(
                "a2",
                "approval.reviewed",
                "2026-10-15T10:00:00+08:00",
                "XK-HA",
                json!({}),
            ),
            ev(
                "a3",
                "approval.decided",
                "2026-10-20T10:00:00+08:00",
                "XK-HA",
                json!({"outcome": "denied"}),
            ),
            hb.clone(),
            ev(
                "n2",
                "approval.decided",
                "2026-11-05T10:00:00+08:00",
                "XK-HN",
                json!({"outcome": "denied"}),
            ),
        ],
        Some("2026-11-06T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(r.case("XK-HA"), Vec::<String>::new(), "decided in time");
    assert_eq!(r.case("XK-HB"), hb_lights);
    // In the order they happen: XK-HB's lights before the violation of the event that
    // drove the clock past them.
    let cases: Vec<&str> = r.alerts.iter().map(|a| field(a, "case")).collect();
    assert_eq!(cases, ["XK-HB", "XK-HB", "XK-HN"], "{:?}", r.alerts);
    assert_eq!(
        r.case("XK-HN"),
        ["xz.stages red firing violation at=2026-11-05T10:00:00+08:00 deadline=-"]
    );
    // Late at the very end, and no `--until`: what the clock (11-05 09:00) has passed fires
    // at the end of the input all the same.
    let r = replay(&[hn, hb], None);
    r.assert_clean();
    assert_eq!(r.case("XK-HB"), hb_lights);
}

/// An input with no event applied (empty, or every line refused) replays to nothing, with
/// and without `--until`: the settling at its end starts from a clock no event has set.
#[test]
fn an_input_with_no_event_applied_replays_to_nothing() {
    for until in [None, Some("2026-11-06T00:00:00+08:00")] {
        let r = replay(&[], until);
        assert!(r.alerts.is_empty() && r.summary.events == 0, "{until:?}");
        let r = replay(&["not json".to_string()], until);
        assert!(r.alerts.is_empty() && r.summary.rejected == 1, "{until:?}");
    }
}

/// docs/rules.md, "Late events": a pause or an extension that happened after the deadline
/// leaves the breach on record. Every case is accepted as in the worked example (yellow
/// 10-29T00:00, red 24:00 of 10-30 = 10-31T00:00); both fire before the later events.
/// - XK-PL is suspended on Mon 11-02 10:00, after its deadline, resumed 11-03 10:00 and
///   decided 11-03 15:00. Its counted time had passed the 20 workdays before the pause, so
///   the deadline stays 10-31T00:00 and the decision is late: both lights resolve
///   `completed_late` with that deadline. (Counting on from the resume would give 24:00 of
///   11-03 and call the red a false alarm, `retracted`.)
/// - XK-XL is extended by 5 workdays on 11-02 10:00, after its deadline, and decided 11-04
///   10:00: the extension does not move the deadline (granted, 25 workdays would end on
///   11-06), and the decision is late.
/// - XK-XPL is suspended after its deadline (11-02 10:00), extended by 5 while paused
///   (11-03 09:00), resumed (11-03 10:00) and decided (11-04 10:00): late, as XK-XL.
/// - XK-PXL is suspended after its deadline (11-02 10:00), resumed (11-03 10:00), extended by
///   5 (11-03 11:00) and decided (11-03 15:00): late, as XK-PL.
/// - XK-PD, the control, is suspended on the last day, before its deadline: 10-30 16:00, with
///   19 workdays and 16 hours counted. Resumed Mon 11-02 10:00, its last 8 hours run to 18:00,
///   so the deadline is 24:00 of 11-02 = 11-03T00:00; decided 11-02 17:00, in time: the
///   yellow resolves `completed`, and no red ever fires.
#[test]
fn xk_decision_pause_or_extension_after_the_deadline_keeps_the_breach() {
    let suspended = || json!({"procedure": "expert_review"});
    let extended = || json!({"extra_workdays": 5, "approved_by": "局长"});
    let denied = || json!({"outcome": "denied"});
    // In time order (a stable sort keeps the order of events at one instant), as replay
    // takes them from a producer.
    let mut events = vec![
        (ACCEPTED, "pl-a", "approval.accepted", "XK-PL", plain()),
        (ACCEPTED, "xl-a", "approval.accepted", "XK-XL", plain()),
        (ACCEPTED, "xpl-a", "approval.accepted", "XK-XPL", plain()),
        (ACCEPTED, "pxl-a", "approval.accepted", "XK-PXL", plain()),
        (ACCEPTED, "pd-a", "approval.accepted", "XK-PD", plain()),
        (
            "2026-10-30T16:00:00+08:00",
            "pd-s",
            "approval.suspended",
            "XK-PD",
            suspended(),
        ),
        (
            "2026-11-02T10:00:00+08:00",
            "pl-s",
            "approval.suspended",
            "XK-PL",
            suspended(),
        ),
        (
            "2026-11-02T10:00:00+08:00",
            "xl-x",
            "approval.extended",
            "XK-XL",
            extended(),
        ),
        (
            "2026-11-02T10:00:00+08:00",
            "xpl-s",
            "approval.suspended",
            "XK-XPL",
            suspended(),
        ),
        (
            "2026-11-02T10:00:00+08:00",
            "pd-r",
            "approval.resumed",
            "XK-PD",
            json!({}),
        ),
        (
            "2026-11-02T17:00:00+08:00",
            "pd-d",
            "approval.decided",
            "XK-PD",
            denied(),
        ),
        (
            "2026-11-03T09:00:00+08:00",
            "xpl-x",
            "approval.extended",
            "XK-XPL",
            extended(),
        ),
        (
            "2026-11-02T10:00:00+08:00",
            "pxl-s",
            "approval.suspended",
            "XK-PXL",
            suspended(),
        ),
        (
            "2026-11-03T10:00:00+08:00",
            "pxl-r",
            "approval.resumed",
            "XK-PXL",
            json!({}),
        ),
        (
            "2026-11-03T11:00:00+08:00",
            "pxl-x",
            "approval.extended",
            "XK-PXL",
            extended(),
        ),
        (
            "2026-11-03T15:00:00+08:00",
            "pxl-d",
            "approval.decided",
            "XK-PXL",
            denied(),
        ),
        (
            "2026-11-03T10:00:00+08:00",
            "pl-r",
            "approval.resumed",
            "XK-PL",
            json!({}),
        ),
        (
            "2026-11-03T10:00:00+08:00",
            "xpl-r",
            "approval.resumed",
            "XK-XPL",
            json!({}),
        ),
        (
            "2026-11-03T15:00:00+08:00",
            "pl-d",
            "approval.decided",
            "XK-PL",
            denied(),
        ),
        (
            "2026-11-04T10:00:00+08:00",
            "xl-d",
            "approval.decided",
            "XK-XL",
            denied(),
        ),
        (
            "2026-11-04T10:00:00+08:00",
            "xpl-d",
            "approval.decided",
            "XK-XPL",
            denied(),
        ),
    ];
    events.sort_by_key(|e| e.0);
    let lines: Vec<String> = events
        .into_iter()
        .map(|(time, id, kind, case, data)| ev(id, kind, time, case, data))
        .collect();
    let r = replay(&lines, Some("2026-11-20T00:00:00+08:00"));
    r.assert_clean();
    for (case, decided) in [
        ("XK-PL", "2026-11-03T15:00:00+08:00"),
        ("XK-PXL", "2026-11-03T15:00:00+08:00"),
        ("XK-XL", "2026-11-04T10:00:00+08:00"),
        ("XK-XPL", "2026-11-04T10:00:00+08:00"),
    ] {
        assert_eq!(
            r.lights(case, "xk.decision"),
            [
                format!("yellow firing approaching at={XK_YELLOW} deadline={XK_RED}"),
                format!("red firing overdue at={XK_RED} deadline={XK_RED}"),
                format!("yellow resolved completed_late at={decided} deadline={XK_RED}"),
                format!("red resolved completed_late at={decided} deadline={XK_RED}"),
            ],
            "{case}"
        );
    }
    assert_eq!(
        r.lights("XK-PD", "xk.decision"),
        [
            format!("yellow firing approaching at={XK_YELLOW} deadline={XK_RED}"),
            "yellow resolved completed at=2026-11-02T17:00:00+08:00 deadline=2026-11-03T00:00:00+08:00"
                .to_string(),
        ]
    );
}

/// A yellow that fired stays a true warning when an extension later moves the yellow
/// instant (docs/rules.md: both lights stay firing until the clock stops). Both cases are
/// accepted as in the worked example; their yellow fires at 10-29T00:00 (18 workdays), and on
/// 10-29 10:00, before the deadline, each is extended by 5 workdays: 25 workdays, #21–#25 are
/// 11-02..06, red 24:00 of 11-06 = 11-07T00:00; the new yellow, 22.5 workdays, would be 12:00
/// of #23, 11-04.
/// - XK-Y1 is decided on 11-03 10:00: in time, after its yellow fired: `completed` (not
///   `retracted`, which is for a stop that happened before the light).
/// - XK-Y2 is suspended on 10-29 11:00 (no alert: the pause came after the yellow) with
///   18 workdays and 11 hours counted (10-29 is #19), resumed Mon 11-02 10:00 with 6 d 13 h
///   left: 14 h of 11-02, then 11-03, 04, 05, 06, 09 (5 d), then 23 h of 11-10: red 24:00 of
///   11-10 = 11-11T00:00. Decided 11-02 15:00: `completed`.
#[test]
fn a_yellow_stays_true_when_an_extension_moves_its_instant() {
    let extended = || json!({"extra_workdays": 5, "approved_by": "局长"});
    let denied = || json!({"outcome": "denied"});
    let r = replay(
        &[
            ev("y1-a", "approval.accepted", ACCEPTED, "XK-Y1", plain()),
            ev("y2-a", "approval.accepted", ACCEPTED, "XK-Y2", plain()),
            ev(
                "y1-x",
                "approval.extended",
                "2026-10-29T10:00:00+08:00",
                "XK-Y1",
                extended(),
            ),
            ev(
                "y2-x",
                "approval.extended",
                "2026-10-29T10:00:00+08:00",
                "XK-Y2",
                extended(),
            ),
            ev(
                "y2-s",
                "approval.suspended",
                "2026-10-29T11:00:00+08:00",
                "XK-Y2",
                json!({"procedure": "expert_review"}),
            ),
            ev(
                "y2-r",
                "approval.resumed",
                "2026-11-02T10:00:00+08:00",
                "XK-Y2",
                json!({}),
            ),
            ev(
                "y2-d",
                "approval.decided",
                "2026-11-02T15:00:00+08:00",
                "XK-Y2",
                denied(),
            ),
            ev(
                "y1-d",
                "approval.decided",
                "2026-11-03T10:00:00+08:00",
                "XK-Y1",
                denied(),
            ),
        ],
        Some("2026-11-20T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("XK-Y1", "xk.decision"),
        [
            format!("yellow firing approaching at={XK_YELLOW} deadline={XK_RED}"),
            "yellow resolved completed at=2026-11-03T10:00:00+08:00 deadline=2026-11-07T00:00:00+08:00"
                .to_string(),
        ]
    );
    assert_eq!(
        r.lights("XK-Y2", "xk.decision"),
        [
            format!("yellow firing approaching at={XK_YELLOW} deadline={XK_RED}"),
            "yellow resolved completed at=2026-11-02T15:00:00+08:00 deadline=2026-11-11T00:00:00+08:00"
                .to_string(),
        ]
    );
}

/// An event at exactly a light's instant came before the light (timers fire strictly
/// before an event's time, docs/rules.md), also when it is delivered late. XK-YE and XK-YP
/// are accepted as in the worked example (yellow 10-29T00:00, red 10-31T00:00). An event of
/// another case at 10-29 10:00 moves the engine's clock past their yellow, which fires. Then
/// XK-YE's decision and XK-YP's suspension arrive, both at exactly 10-29T00:00: each yellow
/// was a false alarm, `retracted` at the engine's clock, 10-29 10:00. In time order neither
/// would have fired. XK-YP stays paused: no red.
#[test]
fn an_event_at_the_yellow_instant_delivered_late_retracts_it() {
    let r = replay(
        &[
            ev("ye-a", "approval.accepted", ACCEPTED, "XK-YE", plain()),
            ev("yp-a", "approval.accepted", ACCEPTED, "XK-YP", plain()),
            ev(
                "yo-a",
                "approval.accepted",
                "2026-10-29T10:00:00+08:00",
                "XK-YO",
                plain(),
            ),
            ev(
                "ye-d",
                "approval.decided",
                XK_YELLOW,
                "XK-YE",
                json!({"outcome": "denied"}),
            ),
            ev(
                "yp-s",
                "approval.suspended",
                XK_YELLOW,
                "XK-YP",
                json!({"procedure": "expert_review"}),
            ),
        ],
        Some("2026-11-20T00:00:00+08:00"),
    );
    r.assert_clean();
    for case in ["XK-YE", "XK-YP"] {
        assert_eq!(
            r.lights(case, "xk.decision"),
            [
                format!("yellow firing approaching at={XK_YELLOW} deadline={XK_RED}"),
                format!("yellow resolved retracted at=2026-10-29T10:00:00+08:00 deadline={XK_RED}"),
            ],
            "{case}"
        );
    }
}

/// An extension that happened before the yellow, delivered after it fired, moves the
/// yellow's instant as it would have in time order, even when the new instant has passed
/// too. XK-YL is accepted as in the worked example (yellow 10-29T00:00, red 10-31T00:00).
/// An event of another case at 10-30 12:00 fires the yellow. Then XK-YL's extension by
/// 1 workday, made on 10-28 19:30, arrives: 21 workdays, red 24:00 of #21 (11-02) =
/// 11-03T00:00; yellow at 18.9 workdays = 21:36 of #19, 10-29. That has passed as well, so
/// the yellow stays firing, now with that instant. The decision, made on 10-29 20:00, arrives
/// last: before the yellow instant, so the yellow was a false alarm, `retracted` at the
/// engine's clock (in time order it never fires).
#[test]
fn an_extension_delivered_late_moves_the_yellow_that_fired_early() {
    let r = replay(
        &[
            ev("yl-a", "approval.accepted", ACCEPTED, "XK-YL", plain()),
            ev(
                "yo-a",
                "approval.accepted",
                "2026-10-30T12:00:00+08:00",
                "XK-YO",
                plain(),
            ),
            ev(
                "yl-x",
                "approval.extended",
                "2026-10-28T19:30:00+08:00",
                "XK-YL",
                json!({"extra_workdays": 1, "approved_by": "局长"}),
            ),
            ev(
                "yl-d",
                "approval.decided",
                "2026-10-29T20:00:00+08:00",
                "XK-YL",
                json!({"outcome": "denied"}),
            ),
        ],
        Some("2026-11-20T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("XK-YL", "xk.decision"),
        [
            format!("yellow firing approaching at={XK_YELLOW} deadline={XK_RED}"),
            "yellow resolved retracted at=2026-10-30T12:00:00+08:00 deadline=2026-11-03T00:00:00+08:00"
                .to_string(),
        ]
    );
}

/// Withdrawal: a 承诺件 promised in 15 workdays (from 09-29: 09-29 #1, 09-30 #2, 10-08 #3,
/// 10-09 #4, 10-10 #5, 10-12..16 #6-10, 10-19..23 #11-15 → red 10-24T00:00; yellow 13.5
/// workdays = 12:00 of #14, 10-22T12:00). Both fire; the applicant withdraws on 10-26 10:00:
/// they are resolved `withdrawn`. The xk.decision clock (yellow 10-29, red 10-31) stops
/// silently, and a later decision changes nothing.
#[test]
fn approval_withdrawn_resolves_lights_and_silences_the_case() {
    let r = replay(
        &[
            ev(
                "a",
                "approval.accepted",
                ACCEPTED,
                "XK-W",
                json!({"department": "市住建局", "item": "建筑工程施工许可", "handler": "张三",
                       "kind": "promised", "promised_workdays": 15}),
            ),
            ev(
                "w",
                "approval.withdrawn",
                "2026-10-26T10:00:00+08:00",
                "XK-W",
                json!({}),
            ),
            ev(
                "d",
                "approval.decided",
                "2026-10-28T10:00:00+08:00",
                "XK-W",
                json!({"outcome": "approved"}),
            ),
        ],
        Some("2026-12-01T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.case("XK-W"),
        [
            "xz.promised yellow firing approaching at=2026-10-22T12:00:00+08:00 deadline=2026-10-24T00:00:00+08:00",
            "xz.promised red firing overdue at=2026-10-24T00:00:00+08:00 deadline=2026-10-24T00:00:00+08:00",
            "xz.promised yellow resolved withdrawn at=2026-10-26T10:00:00+08:00 deadline=2026-10-24T00:00:00+08:00",
            "xz.promised red resolved withdrawn at=2026-10-26T10:00:00+08:00 deadline=2026-10-24T00:00:00+08:00",
        ]
    );
}

/// A withdrawal delivered late: lights whose instant it came at or before were false
/// alarms, `retracted` as a stop would retract them; those that came before it stay
/// `withdrawn`. XK-WE and XK-WL are accepted as in the worked example (xk.decision yellow
/// 10-29T00:00, red 10-31T00:00); an event of another case at 10-31 10:00 moves the
/// engine's clock past both lights, which fire. Then the withdrawals arrive: XK-WE's made on
/// 10-28 15:00, before both lights (both `retracted`); XK-WL's on 10-30 09:00, after the
/// yellow and before the red (yellow `withdrawn`, red `retracted`). All at the engine's
/// clock, 10-31 10:00.
#[test]
fn a_withdrawal_delivered_late_retracts_the_lights_it_came_before() {
    let r = replay(
        &[
            ev("we-a", "approval.accepted", ACCEPTED, "XK-WE", plain()),
            ev("wl-a", "approval.accepted", ACCEPTED, "XK-WL", plain()),
            ev(
                "wo-a",
                "approval.accepted",
                "2026-10-31T10:00:00+08:00",
                "XK-WO",
                plain(),
            ),
            ev(
                "we-w",
                "approval.withdrawn",
                "2026-10-28T15:00:00+08:00",
                "XK-WE",
                json!({}),
            ),
            ev(
                "wl-w",
                "approval.withdrawn",
                "2026-10-30T09:00:00+08:00",
                "XK-WL",
                json!({}),
            ),
        ],
        Some("2026-11-20T00:00:00+08:00"),
    );
    r.assert_clean();
    let at = "at=2026-10-31T10:00:00+08:00";
    for (case, yellow, red) in [
        ("XK-WE", "retracted", "retracted"),
        ("XK-WL", "withdrawn", "retracted"),
    ] {
        assert_eq!(
            r.lights(case, "xk.decision"),
            [
                format!("yellow firing approaching at={XK_YELLOW} deadline={XK_RED}"),
                format!("red firing overdue at={XK_RED} deadline={XK_RED}"),
                format!("yellow resolved {yellow} {at} deadline={XK_RED}"),
                format!("red resolved {red} {at} deadline={XK_RED}"),
            ],
            "{case}"
        );
    }
}

/// SPEC §4: "the same case, rule, clock cycle, level and status always give the same id".
/// A light that a late event retracted gets ids of its own when it fires again (so that a
/// receiver dropping duplicates does not drop the new firing); the other light of the
/// clock, which was not retracted, keeps its ids whatever order the events came in.
/// Each case is replayed twice, its events in time order and with one delivered late:
/// - XK-OR, accepted as in the worked example (yellow 10-29T00:00, red 10-31T00:00), is
///   suspended on 10-30 10:00, after the yellow and before the red, and decided on 11-02
///   10:00 while suspended. Delivered after an event of another case at 10-31 10:00, the
///   suspension retracts the red that fired at 10-31T00:00 and leaves the yellow: the
///   yellow's firing and its resolution (`completed`) have the same ids in both orders.
/// - XK-OY, accepted the same way, is extended by 5 workdays on 10-28 19:30: 25 workdays,
///   #21–#25 are 11-02..06, red 11-07T00:00; yellow 22.5 workdays = 12:00 of #23, 11-04.
///   Delivered after an event of another case at 10-29 10:00, the extension retracts the
///   yellow that fired at 10-29T00:00. The red at 11-07T00:00 has the same id in both
///   orders; the yellow at 11-04 12:00 has a new one in the late order.
#[test]
fn a_light_not_retracted_keeps_its_ids_whatever_the_delivery_order() {
    // A case's alerts of xk.decision in each order, as `(shown, id)`.
    let both_orders = |case: &str, in_time: &[String], late: &[String], until| {
        let ids = |r: Replay| -> Vec<(String, String)> {
            r.assert_clean();
            r.of(case, "xk.decision")
                .into_iter()
                .map(|a| (show(a), field(a, "id").to_string()))
                .collect()
        };
        (ids(replay(in_time, until)), ids(replay(late, until)))
    };
    let shown = |v: &[(String, String)]| v.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>();
    let other = |time: &str| ev("o-a", "approval.accepted", time, "XK-OO", plain());
    let first_yellow = format!("yellow firing approaching at={XK_YELLOW} deadline={XK_RED}");

    let accepted = ev("or-a", "approval.accepted", ACCEPTED, "XK-OR", plain());
    let suspended = ev(
        "or-s",
        "approval.suspended",
        "2026-10-30T10:00:00+08:00",
        "XK-OR",
        json!({"procedure": "expert_review"}),
    );
    let decided = ev(
        "or-d",
        "approval.decided",
        "2026-11-02T10:00:00+08:00",
        "XK-OR",
        json!({"outcome": "denied"}),
    );
    let moved_on = other("2026-10-31T10:00:00+08:00");
    let (in_time, late) = both_orders(
        "XK-OR",
        &[
            accepted.clone(),
            suspended.clone(),
            moved_on.clone(),
            decided.clone(),
        ],
        &[accepted, moved_on, suspended, decided],
        None,
    );
    let completed =
        "yellow resolved completed at=2026-11-02T10:00:00+08:00 deadline=2026-10-31T00:00:00+08:00";
    assert_eq!(shown(&in_time), [first_yellow.as_str(), completed]);
    assert_eq!(
        shown(&late),
        [
            first_yellow.as_str(),
            &format!("red firing overdue at={XK_RED} deadline={XK_RED}"),
            "red resolved retracted at=2026-10-31T10:00:00+08:00 deadline=2026-10-31T00:00:00+08:00",
            completed,
        ]
    );
    assert_eq!(late[0].1, in_time[0].1, "the yellow's firing");
    assert_eq!(late[3].1, in_time[1].1, "the yellow's resolution");

    let accepted = ev("oy-a", "approval.accepted", ACCEPTED, "XK-OY", plain());
    let extended = ev(
        "oy-x",
        "approval.extended",
        "2026-10-28T19:30:00+08:00",
        "XK-OY",
        json!({"extra_workdays": 5, "approved_by": "局长"}),
    );
    let moved_on = other("2026-10-29T10:00:00+08:00");
    let (in_time, late) = both_orders(
        "XK-OY",
        &[accepted.clone(), extended.clone(), moved_on.clone()],
        &[accepted, moved_on, extended],
        Some("2026-11-20T00:00:00+08:00"),
    );
    let new_yellow =
        "yellow firing approaching at=2026-11-04T12:00:00+08:00 deadline=2026-11-07T00:00:00+08:00";
    let red = "red firing overdue at=2026-11-07T00:00:00+08:00 deadline=2026-11-07T00:00:00+08:00";
    assert_eq!(shown(&in_time), [new_yellow, red]);
    assert_eq!(
        shown(&late),
        [
            first_yellow.as_str(),
            "yellow resolved retracted at=2026-10-29T10:00:00+08:00 deadline=2026-11-07T00:00:00+08:00",
            new_yellow,
            red,
        ]
    );
    assert_eq!(late[3].1, in_time[1].1, "the red's firing");
    assert_ne!(
        late[2].1, late[0].1,
        "the yellow firing again after its retraction has an id of its own"
    );
}

/// SPEC §1: a repeated id is a duplicate and changes nothing — not even when the repeated
/// message carries different data. Without the guard the repeated extension would total 20
/// workdays (a violation) and move the deadline.
#[test]
fn duplicate_event_ids_change_nothing() {
    let accepted = ev("a", "approval.accepted", ACCEPTED, "XK-DUP", plain());
    let suspended = ev(
        "s",
        "approval.suspended",
        "2026-10-12T16:30:00+08:00",
        "XK-DUP",
        json!({"procedure": "expert_review"}),
    );
    let resumed = ev(
        "r",
        "approval.resumed",
        "2026-10-19T16:30:00+08:00",
        "XK-DUP",
        json!({}),
    );
    let extended = ev(
        "x",
        "approval.extended",
        "2026-10-20T10:00:00+08:00",
        "XK-DUP",
        json!({"extra_workdays": 10}),
    );
    let extended_again_other_data = ev(
        "x",
        "approval.extended",
        "2026-10-20T10:00:00+08:00",
        "XK-DUP",
        json!({"extra_workdays": 7}),
    );
    let until = Some("2026-12-01T00:00:00+08:00");
    let once = replay(
        &[
            accepted.clone(),
            suspended.clone(),
            resumed.clone(),
            extended.clone(),
        ],
        until,
    );
    let twice = replay(
        &[
            accepted.clone(),
            accepted.clone(),
            suspended.clone(),
            suspended,
            resumed.clone(),
            extended.clone(),
            resumed,
            extended.clone(),
            extended_again_other_data,
            accepted,
        ],
        until,
    );
    once.assert_clean();
    twice.assert_clean();
    // Limit 20 + 10 = 30 counted workdays, paused exactly 5 workdays (as in the pause test).
    // Counted before the pause 5 d 16.5 h; after the resume (10-19 16:30) 24 d 7.5 h remain:
    // 7.5 h of 10-19, then 10-20..23 (4), 10-26..30 (9), 11-02..06 (14), 11-09..13 (19),
    // 11-16..20 (24) → red 24:00 of 11-20 = 11-21T00:00.
    // Yellow 90% × 30 = 27 workdays: 21 d 7.5 h remain after the resume: 7.5 h of 10-19, then
    // 19 whole workdays to 11-13, 11-16 (20), 11-17 (21) → 24:00 of 11-17 = 11-18T00:00.
    assert_eq!(
        once.lights("XK-DUP", "xk.decision"),
        [
            "yellow firing approaching at=2026-11-18T00:00:00+08:00 deadline=2026-11-21T00:00:00+08:00",
            "red firing overdue at=2026-11-21T00:00:00+08:00 deadline=2026-11-21T00:00:00+08:00",
        ]
    );
    assert_eq!(once.stdout, twice.stdout);
    assert_eq!(
        twice.summary.events, 10,
        "duplicates are read, not rejected"
    );
}

/// xk.certificate: decided (approved) Tue 2026-04-28 16:00, 10 workdays. Day 1 is 04-29 #1,
/// 04-30 #2; 05-01..05 劳动节 off; 05-06 #3, 05-07 #4, 05-08 #5, 05-09 (Sat, make-up) #6;
/// 05-10 Sun off; 05-11 #7, 05-12 #8, 05-13 #9, 05-14 #10 → red 05-15T00:00; yellow 9
/// workdays = 24:00 of 05-13 = 05-14T00:00.
/// C2 issues the certificate 05-14 10:00 → yellow `completed`. C3 was denied → no clock.
#[test]
fn xk_certificate_ten_workdays_over_labour_day() {
    let mut lines = Vec::new();
    for case in ["XK-C1", "XK-C2", "XK-C3"] {
        lines.push(ev(
            &format!("{case}-a"),
            "approval.accepted",
            "2026-04-20T09:00:00+08:00",
            case,
            plain(),
        ));
    }
    for (case, outcome) in [
        ("XK-C1", "approved"),
        ("XK-C2", "approved"),
        ("XK-C3", "denied"),
    ] {
        lines.push(ev(
            &format!("{case}-d"),
            "approval.decided",
            "2026-04-28T16:00:00+08:00",
            case,
            json!({"outcome": outcome}),
        ));
    }
    lines.push(ev(
        "XK-C2-c",
        "approval.certificate_issued",
        "2026-05-14T10:00:00+08:00",
        "XK-C2",
        json!({}),
    ));
    let r = replay(&lines, Some("2026-05-20T00:00:00+08:00"));
    r.assert_clean();
    assert_eq!(
        r.lights("XK-C1", "xk.certificate"),
        [
            "yellow firing approaching at=2026-05-14T00:00:00+08:00 deadline=2026-05-15T00:00:00+08:00",
            "red firing overdue at=2026-05-15T00:00:00+08:00 deadline=2026-05-15T00:00:00+08:00",
        ]
    );
    assert_eq!(
        r.lights("XK-C2", "xk.certificate"),
        [
            "yellow firing approaching at=2026-05-14T00:00:00+08:00 deadline=2026-05-15T00:00:00+08:00",
            "yellow resolved completed at=2026-05-14T10:00:00+08:00 deadline=2026-05-15T00:00:00+08:00",
        ]
    );
    assert_eq!(r.lights("XK-C3", "xk.certificate"), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// xz — 忻州 实施意见
// ---------------------------------------------------------------------------------------------

fn immediate() -> Value {
    json!({"department": "市民政局", "item": "婚姻登记", "handler": "李四", "kind": "immediate"})
}

/// 即办件: 24:00 of the day of acceptance if a workday, else of the next workday; yellow
/// eight hours before, at 16:00.
/// I1 Mon 09-28 10:00 (workday): red 09-29T00:00, yellow 09-28T16:00.
/// I2 Sat 10-03 09:00 (National Day): next workday 10-08 (10-04..07 still off) → red
///    10-09T00:00, yellow 10-08T16:00.
/// I3 Sun 10-11 11:00 (weekend): next workday Mon 10-12 → red 10-13T00:00, yellow 10-12T16:00.
/// I4 Sat 10-10 09:00 (make-up workday): the same day → red 10-11T00:00, yellow 10-10T16:00.
#[test]
fn xz_immediate_same_workday_and_next_workday_on_days_off() {
    let cases = [
        ("XZ-I1", "2026-09-28T10:00:00+08:00"),
        ("XZ-I2", "2026-10-03T09:00:00+08:00"),
        ("XZ-I3", "2026-10-11T11:00:00+08:00"),
        ("XZ-I4", "2026-10-10T09:00:00+08:00"),
    ];
    let mut lines: Vec<String> = cases
        .iter()
        .map(|(case, t)| {
            ev(
                &format!("{case}-a"),
                "approval.accepted",
                t,
                case,
                immediate(),
            )
        })
        .collect();
    lines.sort_by_key(|l| {
        let v: Value = serde_json::from_str(l).expect("json");
        ms(v["time"].as_str().expect("time"))
    });
    let r = replay(&lines, Some("2026-10-14T00:00:00+08:00"));
    r.assert_clean();
    assert_eq!(
        r.lights("XZ-I1", "xz.immediate"),
        [
            "yellow firing approaching at=2026-09-28T16:00:00+08:00 deadline=2026-09-29T00:00:00+08:00",
            "red firing overdue at=2026-09-29T00:00:00+08:00 deadline=2026-09-29T00:00:00+08:00",
        ]
    );
    assert_eq!(
        r.lights("XZ-I2", "xz.immediate"),
        [
            "yellow firing approaching at=2026-10-08T16:00:00+08:00 deadline=2026-10-09T00:00:00+08:00",
            "red firing overdue at=2026-10-09T00:00:00+08:00 deadline=2026-10-09T00:00:00+08:00",
        ]
    );
    assert_eq!(
        r.lights("XZ-I3", "xz.immediate"),
        [
            "yellow firing approaching at=2026-10-12T16:00:00+08:00 deadline=2026-10-13T00:00:00+08:00",
            "red firing overdue at=2026-10-13T00:00:00+08:00 deadline=2026-10-13T00:00:00+08:00",
        ]
    );
    assert_eq!(
        r.lights("XZ-I4", "xz.immediate"),
        [
            "yellow firing approaching at=2026-10-10T16:00:00+08:00 deadline=2026-10-11T00:00:00+08:00",
            "red firing overdue at=2026-10-11T00:00:00+08:00 deadline=2026-10-11T00:00:00+08:00",
        ]
    );
}

/// Accepted Mon 09-28 10:00 (red 09-29T00:00, yellow 16:00).
/// I5 completed 11:30: before yellow → nothing at all.
/// I6 completed 17:00: after yellow → yellow `completed`.
/// I7 completed Tue 09-29 09:00: after red → both `completed_late`.
#[test]
fn xz_immediate_completed_in_time_and_late() {
    let t = "2026-09-28T10:00:00+08:00";
    let r = replay(
        &[
            ev("i5a", "approval.accepted", t, "XZ-I5", immediate()),
            ev("i6a", "approval.accepted", t, "XZ-I6", immediate()),
            ev("i7a", "approval.accepted", t, "XZ-I7", immediate()),
            ev(
                "i5c",
                "approval.completed",
                "2026-09-28T11:30:00+08:00",
                "XZ-I5",
                json!({}),
            ),
            ev(
                "i6c",
                "approval.completed",
                "2026-09-28T17:00:00+08:00",
                "XZ-I6",
                json!({}),
            ),
            ev(
                "i7c",
                "approval.completed",
                "2026-09-29T09:00:00+08:00",
                "XZ-I7",
                json!({}),
            ),
        ],
        Some("2026-10-01T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(r.lights("XZ-I5", "xz.immediate"), Vec::<String>::new());
    assert_eq!(
        r.lights("XZ-I6", "xz.immediate"),
        [
            "yellow firing approaching at=2026-09-28T16:00:00+08:00 deadline=2026-09-29T00:00:00+08:00",
            "yellow resolved completed at=2026-09-28T17:00:00+08:00 deadline=2026-09-29T00:00:00+08:00",
        ]
    );
    assert_eq!(
        r.lights("XZ-I7", "xz.immediate"),
        [
            "yellow firing approaching at=2026-09-28T16:00:00+08:00 deadline=2026-09-29T00:00:00+08:00",
            "red firing overdue at=2026-09-29T00:00:00+08:00 deadline=2026-09-29T00:00:00+08:00",
            "yellow resolved completed_late at=2026-09-29T09:00:00+08:00 deadline=2026-09-29T00:00:00+08:00",
            "red resolved completed_late at=2026-09-29T09:00:00+08:00 deadline=2026-09-29T00:00:00+08:00",
        ]
    );
}

fn promised(extra: Value) -> Value {
    let mut d = json!({"department": "市住建局", "item": "建筑工程施工许可", "handler": "张三",
                       "kind": "promised"});
    for (k, v) in extra.as_object().expect("object") {
        d[k] = v.clone();
    }
    d
}

/// 承诺件, promised 15 workdays from 09-28 10:00: 09-29 #1, 09-30 #2, 10-08 #3, 10-09 #4,
/// 10-10 (make-up Sat) #5, 10-12..16 #6-10, 10-19..23 #11-15 → red 24:00 of 10-23 =
/// 10-24T00:00; yellow 13.5 workdays = 12:00 of #14 (10-22).
/// P1: never completed. P2: completed Mon 10-26 09:00 → `completed_late`.
#[test]
fn xz_promised_runs_on_the_promise() {
    let r = replay(
        &[
            ev(
                "p1",
                "approval.accepted",
                ACCEPTED,
                "XZ-P1",
                promised(json!({"promised_workdays": 15})),
            ),
            ev(
                "p2",
                "approval.accepted",
                ACCEPTED,
                "XZ-P2",
                promised(json!({"promised_workdays": 15})),
            ),
            ev(
                "p2c",
                "approval.completed",
                "2026-10-26T09:00:00+08:00",
                "XZ-P2",
                json!({}),
            ),
        ],
        Some("2026-10-28T00:00:00+08:00"),
    );
    r.assert_clean();
    let y = "deadline=2026-10-24T00:00:00+08:00";
    assert_eq!(
        r.lights("XZ-P1", "xz.promised"),
        [
            format!("yellow firing approaching at=2026-10-22T12:00:00+08:00 {y}"),
            format!("red firing overdue at=2026-10-24T00:00:00+08:00 {y}"),
        ]
    );
    assert_eq!(
        r.lights("XZ-P2", "xz.promised"),
        [
            format!("yellow firing approaching at=2026-10-22T12:00:00+08:00 {y}"),
            format!("red firing overdue at=2026-10-24T00:00:00+08:00 {y}"),
            format!("yellow resolved completed_late at=2026-10-26T09:00:00+08:00 {y}"),
            format!("red resolved completed_late at=2026-10-26T09:00:00+08:00 {y}"),
        ]
    );
}

/// A promise that is missing (P3) or above the statutory 20 workdays (P4, 25) is a red
/// `violation` at acceptance; the clock then runs with the maximum, 20 workdays — the worked
/// example's yellow 10-29T00:00 and red 10-31T00:00 (config/rules/xz.toml). P5 is joint: the
/// ceiling is 45, so a promise of 30 is fine: 30 workdays → #30 is 11-13 → red 11-14T00:00,
/// yellow 27 workdays → 24:00 of 11-10 = 11-11T00:00.
#[test]
fn xz_promised_missing_or_over_the_statutory_limit_is_a_violation() {
    let r = replay(
        &[
            ev(
                "p3",
                "approval.accepted",
                ACCEPTED,
                "XZ-P3",
                promised(json!({})),
            ),
            ev(
                "p4",
                "approval.accepted",
                ACCEPTED,
                "XZ-P4",
                promised(json!({"promised_workdays": 25})),
            ),
            ev(
                "p5",
                "approval.accepted",
                ACCEPTED,
                "XZ-P5",
                promised(json!({"promised_workdays": 30, "joint": true})),
            ),
        ],
        Some("2026-11-15T00:00:00+08:00"),
    );
    r.assert_clean();
    for case in ["XZ-P3", "XZ-P4"] {
        assert_eq!(
            r.lights(case, "xz.promised"),
            [
                format!("red firing violation at={ACCEPTED} deadline=-"),
                format!("yellow firing approaching at={XK_YELLOW} deadline={XK_RED}"),
                format!("red firing overdue at={XK_RED} deadline={XK_RED}"),
            ],
            "{case}"
        );
    }
    assert!(field(r.of("XZ-P3", "xz.promised")[0], "detail").contains("promised_workdays"));
    assert!(field(r.of("XZ-P4", "xz.promised")[0], "detail").contains("25"));
    assert_eq!(
        r.lights("XZ-P5", "xz.promised"),
        [
            "yellow firing approaching at=2026-11-11T00:00:00+08:00 deadline=2026-11-14T00:00:00+08:00",
            "red firing overdue at=2026-11-14T00:00:00+08:00 deadline=2026-11-14T00:00:00+08:00",
        ]
    );
}

/// `kind` is `immediate` or `promised` (SPEC §1; `values` in config/rules/xz.toml). A case
/// sent with another value — capitalised, or in Chinese — matches neither rule's `when`,
/// so neither clock starts: the same as before, but now a data problem of each of the two
/// rules (`redlight_data_problems_total`), so that the producer learns why its 承诺件 has
/// no light. A case without `kind` is not judged (not every approval is managed under the
/// 实施意见), and the statutory clock `xk.decision` runs for all of them.
#[test]
fn xz_a_kind_that_is_neither_immediate_nor_promised_is_a_data_problem() {
    let mut engine = shipped_engine();
    let accepted = |id: &str, case: &str, kind: Value| {
        let mut data = promised(json!({"promised_workdays": 15}));
        data["kind"] = kind;
        ev(id, "approval.accepted", ACCEPTED, case, data)
    };
    let mut no_kind = promised(json!({"promised_workdays": 15}));
    no_kind.as_object_mut().expect("object").remove("kind");
    let r = replay_on(
        &mut engine,
        &[
            accepted("k1", "XZ-K1", json!("Promised")),
            accepted("k2", "XZ-K2", json!("承诺件")),
            accepted("k3", "XZ-K3", json!("promised")),
            ev("k4", "approval.accepted", ACCEPTED, "XZ-K4", no_kind),
        ],
        Some("2026-11-15T00:00:00+08:00"),
    );
    r.assert_clean();
    for case in ["XZ-K1", "XZ-K2", "XZ-K4"] {
        assert!(r.lights(case, "xz.promised").is_empty(), "{case}");
        assert!(r.lights(case, "xz.immediate").is_empty(), "{case}");
        assert!(!r.lights(case, "xk.decision").is_empty(), "{case}");
    }
    assert_eq!(r.lights("XZ-K3", "xz.promised").len(), 2);
    // Two cases, each judged by the two rules of the kind.
    assert_eq!(engine.stats().data_problems, 4);
}

/// 受理 → 审核 → 审批 → 办结. S1 in order: nothing. S2 skips 审核 (decided right after
/// accepted): a violation at the decision. S3 reviews again after the decision (reversed): a
/// violation at that review. Violations carry no deadline and name the stages.
#[test]
fn xz_stages_in_order_skipped_and_reversed() {
    let day = |h: u32| format!("2026-06-0{h}T10:00:00+08:00");
    let mut lines = Vec::new();
    for (case, kinds) in [
        (
            "XZ-S1",
            &[
                "approval.accepted",
                "approval.reviewed",
                "approval.decided",
                "approval.completed",
            ][..],
        ),
        (
            "XZ-S2",
            &[
                "approval.accepted",
                "approval.decided",
                "approval.completed",
            ][..],
        ),
        (
            "XZ-S3",
            &[
                "approval.accepted",
                "approval.reviewed",
                "approval.decided",
                "approval.reviewed",
                "approval.completed",
            ][..],
        ),
    ] {
        for (i, k) in kinds.iter().enumerate() {
            lines.push(ev(
                &format!("{case}-{i}"),
                k,
                &day(i as u32 + 1),
                case,
                json!({"outcome": "denied"}),
            ));
        }
    }
    lines.sort_by_key(|l| {
        let v: Value = serde_json::from_str(l).expect("json");
        ms(v["time"].as_str().expect("time"))
    });
    let r = replay(&lines, Some("2026-06-10T00:00:00+08:00"));
    r.assert_clean();
    assert_eq!(r.lights("XZ-S1", "xz.stages"), Vec::<String>::new());
    assert_eq!(
        r.lights("XZ-S2", "xz.stages"),
        ["red firing violation at=2026-06-02T10:00:00+08:00 deadline=-"]
    );
    assert!(field(r.of("XZ-S2", "xz.stages")[0], "detail").contains("approval.reviewed"));
    assert_eq!(
        r.lights("XZ-S3", "xz.stages"),
        ["red firing violation at=2026-06-04T10:00:00+08:00 deadline=-"]
    );
    let d = field(r.of("XZ-S3", "xz.stages")[0], "detail");
    assert!(
        d.contains("approval.reviewed") && d.contains("approval.decided"),
        "{d}"
    );
}

// ---------------------------------------------------------------------------------------------
// nx — 宁夏 市场登记管理办法 (calendar days)
// ---------------------------------------------------------------------------------------------

fn market() -> Value {
    json!({"department": "银川市市场监管局", "market": "新华农贸市场"})
}

/// Art. 7, 30 days.
/// R1 accepted Tue 03-10 10:00: day 1 = 03-11; 03-11..31 are days 1-21, 04-01..09 days 22-30.
///    04-09 is a Thursday (清明 is 04-04..06) → red 24:00 of 04-09 = 04-10T00:00. Yellow 27
///    days = 24:00 of 04-06 = 04-07T00:00 (a holiday, but yellow is never moved).
/// R2 same, decided 04-08 10:00: yellow `completed`.
/// R3 accepted Thu 09-03 15:00: day 1 = 09-04; 09-04..30 days 1-27, 10-01 28, 10-02 29, 10-03
///    day 30 — National Day. Art. 203: the next workday is 10-08 → red 10-09T00:00. Yellow 27
///    days = 24:00 of 09-30 = 10-01T00:00.
/// R4 accepted Thu 09-10 10:00: day 1 = 09-11; 09-11..30 days 1-20, 10-01..10 days 21-30;
///    10-10 is the make-up Saturday, a workday → red stays 24:00 of 10-10 = 10-11T00:00. Yellow
///    27 days = 24:00 of 10-07 = 10-08T00:00.
#[test]
fn nx_registration_decision_thirty_days() {
    let r = replay(
        &[
            ev(
                "r1",
                "market.registration_accepted",
                "2026-03-10T10:00:00+08:00",
                "NX-R1",
                market(),
            ),
            ev(
                "r2",
                "market.registration_accepted",
                "2026-03-10T10:00:00+08:00",
                "NX-R2",
                market(),
            ),
            ev(
                "r2d",
                "market.registration_decided",
                "2026-04-08T10:00:00+08:00",
                "NX-R2",
                json!({"outcome": "approved"}),
            ),
            ev(
                "r3",
                "market.registration_accepted",
                "2026-09-03T15:00:00+08:00",
                "NX-R3",
                market(),
            ),
            ev(
                "r4",
                "market.registration_accepted",
                "2026-09-10T10:00:00+08:00",
                "NX-R4",
                market(),
            ),
        ],
        Some("2026-10-15T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("NX-R1", "nx.registration_decision"),
        [
            "yellow firing approaching at=2026-04-07T00:00:00+08:00 deadline=2026-04-10T00:00:00+08:00",
            "red firing overdue at=2026-04-10T00:00:00+08:00 deadline=2026-04-10T00:00:00+08:00",
        ]
    );
    assert_eq!(
        r.lights("NX-R2", "nx.registration_decision"),
        [
            "yellow firing approaching at=2026-04-07T00:00:00+08:00 deadline=2026-04-10T00:00:00+08:00",
            "yellow resolved completed at=2026-04-08T10:00:00+08:00 deadline=2026-04-10T00:00:00+08:00",
        ]
    );
    assert_eq!(
        r.lights("NX-R3", "nx.registration_decision"),
        [
            "yellow firing approaching at=2026-10-01T00:00:00+08:00 deadline=2026-10-09T00:00:00+08:00",
            "red firing overdue at=2026-10-09T00:00:00+08:00 deadline=2026-10-09T00:00:00+08:00",
        ]
    );
    assert_eq!(
        r.lights("NX-R4", "nx.registration_decision"),
        [
            "yellow firing approaching at=2026-10-08T00:00:00+08:00 deadline=2026-10-11T00:00:00+08:00",
            "red firing overdue at=2026-10-11T00:00:00+08:00 deadline=2026-10-11T00:00:00+08:00",
        ]
    );
}

/// Art. 10, 30 days from the operator's change decision, Fri 05-01 10:00 (itself a holiday;
/// the start day does not count anyway). Day 1 = 05-02; 05-02..31 are days 1-30; 05-31 is a
/// Sunday → Art. 203: the next workday, Mon 06-01 → red 06-02T00:00. Yellow 27 days = 24:00
/// of 05-28 = 05-29T00:00.
/// C1 never registers. C2 registers on 06-01 15:00: in time only thanks to Art. 203.
#[test]
fn nx_change_registration_period_ending_on_a_sunday() {
    let r = replay(
        &[
            ev(
                "c1",
                "market.change_decided",
                "2026-05-01T10:00:00+08:00",
                "NX-C1",
                json!({"change": "迁移"}),
            ),
            ev(
                "c2",
                "market.change_decided",
                "2026-05-01T10:00:00+08:00",
                "NX-C2",
                json!({"change": "合并"}),
            ),
            ev(
                "c2r",
                "market.change_registered",
                "2026-06-01T15:00:00+08:00",
                "NX-C2",
                json!({}),
            ),
        ],
        Some("2026-06-05T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("NX-C1", "nx.change_registration"),
        [
            "yellow firing approaching at=2026-05-29T00:00:00+08:00 deadline=2026-06-02T00:00:00+08:00",
            "red firing overdue at=2026-06-02T00:00:00+08:00 deadline=2026-06-02T00:00:00+08:00",
        ]
    );
    assert_eq!(
        r.lights("NX-C2", "nx.change_registration"),
        [
            "yellow firing approaching at=2026-05-29T00:00:00+08:00 deadline=2026-06-02T00:00:00+08:00",
            "yellow resolved completed at=2026-06-01T15:00:00+08:00 deadline=2026-06-02T00:00:00+08:00",
        ]
    );
}

/// Art. 21, 30 days over the Spring Festival. Requested Sat 01-17 10:00: day 1 = 01-18;
/// 01-18..31 days 1-14, 02-01..16 days 15-30; 02-16 is in 春节 (02-15..23) → Art. 203: next
/// workday Tue 02-24 → red 02-25T00:00. Yellow 27 days = 24:00 of 02-13 = 02-14T00:00.
/// Q2 is decided Thu 02-26 10:00, after the deadline → `completed_late`.
#[test]
fn nx_reconsideration_period_ending_in_spring_festival() {
    let r = replay(
        &[
            ev(
                "q1",
                "market.reconsideration_requested",
                "2026-01-17T10:00:00+08:00",
                "NX-Q1",
                market(),
            ),
            ev(
                "q2",
                "market.reconsideration_requested",
                "2026-01-17T10:00:00+08:00",
                "NX-Q2",
                market(),
            ),
            ev(
                "q2d",
                "market.reconsideration_decided",
                "2026-02-26T10:00:00+08:00",
                "NX-Q2",
                json!({}),
            ),
        ],
        Some("2026-03-01T00:00:00+08:00"),
    );
    r.assert_clean();
    let d = "deadline=2026-02-25T00:00:00+08:00";
    assert_eq!(
        r.lights("NX-Q1", "nx.reconsideration"),
        [
            format!("yellow firing approaching at=2026-02-14T00:00:00+08:00 {d}"),
            format!("red firing overdue at=2026-02-25T00:00:00+08:00 {d}"),
        ]
    );
    assert_eq!(
        r.lights("NX-Q2", "nx.reconsideration"),
        [
            format!("yellow firing approaching at=2026-02-14T00:00:00+08:00 {d}"),
            format!("red firing overdue at=2026-02-25T00:00:00+08:00 {d}"),
            format!("yellow resolved completed_late at=2026-02-26T10:00:00+08:00 {d}"),
            format!("red resolved completed_late at=2026-02-26T10:00:00+08:00 {d}"),
        ]
    );
}

/// Art. 15: markets registered (approved) on 2026-08-10, in 2026Q3, owe a 2026Q3 report
/// within 15 days after the quarter ends. Q3 ends 24:00 of 09-30; the 15 days count like a
/// deadline started on 09-30: day 1 = 10-01, … day 15 = 10-15 (the National Day holiday
/// counts: calendar days). 10-15 is a Thursday, a workday, so no Art. 203 move → due
/// 24:00 of 10-15 = 10-16T00:00.
/// M1 never reports → red `missing` at the due instant, with it as the deadline.
/// M2 reports 2026Q3 on 10-20 10:00 → the red is resolved `completed_late`.
/// M3 reports 2026Q3 on 10-12 10:00 → nothing.
/// (The 2026Q4 due falls in January 2027, beyond the calendar data; it is not reached here.)
#[test]
fn nx_quarterly_report_missing_late_and_in_time() {
    let mut lines = Vec::new();
    for case in ["NX-M1", "NX-M2", "NX-M3"] {
        lines.push(ev(
            &format!("{case}-d"),
            "market.registration_decided",
            "2026-08-10T10:00:00+08:00",
            case,
            json!({"outcome": "approved", "market": "新华农贸市场"}),
        ));
    }
    lines.push(ev(
        "NX-M3-r",
        "market.report_submitted",
        "2026-10-12T10:00:00+08:00",
        "NX-M3",
        json!({"period": "2026Q3"}),
    ));
    lines.push(ev(
        "NX-M2-r",
        "market.report_submitted",
        "2026-10-20T10:00:00+08:00",
        "NX-M2",
        json!({"period": "2026Q3"}),
    ));
    let r = replay(&lines, Some("2026-11-01T00:00:00+08:00"));
    r.assert_clean();
    assert_eq!(
        r.lights("NX-M1", "nx.quarterly_report"),
        ["red firing missing at=2026-10-16T00:00:00+08:00 deadline=2026-10-16T00:00:00+08:00"]
    );
    assert!(field(r.of("NX-M1", "nx.quarterly_report")[0], "detail").contains("2026Q3"));
    let m2 = r.of("NX-M2", "nx.quarterly_report");
    assert_eq!(
        show(m2[0]),
        "red firing missing at=2026-10-16T00:00:00+08:00 deadline=2026-10-16T00:00:00+08:00"
    );
    assert_eq!(m2.len(), 2, "{}", r.stdout);
    // The resolution: level, status, reason and `at` (the report's arrival). Its `deadline`
    // is asserted separately (see the next test).
    assert_eq!(
        (
            field(m2[1], "level"),
            field(m2[1], "status"),
            field(m2[1], "reason"),
            field(m2[1], "at")
        ),
        (
            "red",
            "resolved",
            "completed_late",
            "2026-10-20T10:00:00+08:00"
        )
    );
    assert_eq!(
        r.lights("NX-M3", "nx.quarterly_report"),
        Vec::<String>::new()
    );
}

/// The resolution of a missing period should carry the deadline its firing carried, as every
/// resolution of a deadline clock does (SPEC §4: `deadline` where a clock has one), so that a
/// receiver sees the same due instant on both halves of the alert.
#[test]
fn nx_quarterly_report_resolution_keeps_the_due_as_deadline() {
    let r = replay(
        &[
            ev(
                "d",
                "market.registration_decided",
                "2026-08-10T10:00:00+08:00",
                "NX-M4",
                json!({"outcome": "approved"}),
            ),
            ev(
                "r",
                "market.report_submitted",
                "2026-10-20T10:00:00+08:00",
                "NX-M4",
                json!({"period": "2026Q3"}),
            ),
        ],
        None,
    );
    assert_eq!(
        r.lights("NX-M4", "nx.quarterly_report"),
        [
            "red firing missing at=2026-10-16T00:00:00+08:00 deadline=2026-10-16T00:00:00+08:00",
            "red resolved completed_late at=2026-10-20T10:00:00+08:00 deadline=2026-10-16T00:00:00+08:00",
        ]
    );
}

/// A report made by its due time but delivered after the red fired retracts the red, as a
/// clock's stop does (SPEC §4): the red was a false alarm of late delivery. Both markets are
/// registered on 08-10, so 2026Q3 (ends 09-30) is due 15 days after it: 10-15 is a
/// Thursday, a workday, so 24:00 of it, 10-16T00:00. Another case's event at 10-16 09:00
/// moves the engine's clock past it: both reds fire. Then the reports arrive: NX-MT's made
/// on 10-15 at 20:00 (in time: `retracted`), NX-ML's on 10-16 at 08:00 (late:
/// `completed_late`), each resolved at the engine's clock, 10-16 09:00.
#[test]
fn nx_quarterly_report_made_in_time_and_delivered_late_retracts_the_red() {
    let decided = "2026-08-10T10:00:00+08:00";
    let due = "2026-10-16T00:00:00+08:00";
    let r = replay(
        &[
            ev(
                "t-d",
                "market.registration_decided",
                decided,
                "NX-MT",
                json!({"outcome": "approved"}),
            ),
            ev(
                "l-d",
                "market.registration_decided",
                decided,
                "NX-ML",
                json!({"outcome": "approved"}),
            ),
            ev(
                "o-a",
                "market.registration_accepted",
                "2026-10-16T09:00:00+08:00",
                "NX-MO",
                json!({}),
            ),
            ev(
                "t-r",
                "market.report_submitted",
                "2026-10-15T20:00:00+08:00",
                "NX-MT",
                json!({"period": "2026Q3"}),
            ),
            ev(
                "l-r",
                "market.report_submitted",
                "2026-10-16T08:00:00+08:00",
                "NX-ML",
                json!({"period": "2026Q3"}),
            ),
        ],
        None,
    );
    r.assert_clean();
    for (case, reason) in [("NX-MT", "retracted"), ("NX-ML", "completed_late")] {
        assert_eq!(
            r.lights(case, "nx.quarterly_report"),
            [
                format!("red firing missing at={due} deadline={due}"),
                format!("red resolved {reason} at=2026-10-16T09:00:00+08:00 deadline={due}"),
            ],
            "{case}"
        );
    }
    assert!(
        field(r.of("NX-MT", "nx.quarterly_report")[1], "detail").contains("made in time"),
        "{}",
        r.stdout
    );
}

/// A report without a label is for the period it was made in time for, however late it is
/// delivered. NX-MU is registered on 05-11 (2026Q2: due 15 days after 06-30, 07-15, a
/// Wednesday: 07-16T00:00); its Q2 report, labelled, comes on 07-10. A second report without
/// a label, made on 07-15 at 20:00, is delivered after another case's event at 07-16 09:00
/// has moved the engine's clock past Q2's due time: it was made while Q2 was watched, so it
/// is for Q2, already met, and changes nothing. Q3 (due 10-16T00:00) has no report and goes
/// red.
#[test]
fn nx_quarterly_report_without_a_label_is_for_the_period_it_was_made_in() {
    let r = replay(
        &[
            ev(
                "u-d",
                "market.registration_decided",
                "2026-05-11T10:00:00+08:00",
                "NX-MU",
                json!({"outcome": "approved"}),
            ),
            ev(
                "u-r2",
                "market.report_submitted",
                "2026-07-10T10:00:00+08:00",
                "NX-MU",
                json!({"period": "2026Q2"}),
            ),
            ev(
                "o-a",
                "market.registration_accepted",
                "2026-07-16T09:00:00+08:00",
                "NX-MO",
                json!({}),
            ),
            ev(
                "u-r",
                "market.report_submitted",
                "2026-07-15T20:00:00+08:00",
                "NX-MU",
                json!({}),
            ),
        ],
        Some("2026-10-20T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("NX-MU", "nx.quarterly_report"),
        ["red firing missing at=2026-10-16T00:00:00+08:00 deadline=2026-10-16T00:00:00+08:00"]
    );
    assert!(field(r.of("NX-MU", "nx.quarterly_report")[0], "detail").contains("2026Q3"));
}

/// A report's period label must name a period: `2026Q2` meets the second quarter; `2026` (a
/// string or a number) is an annual report, another kind of period, and meets no quarter;
/// `2026-Q2` names no period at all: it meets nothing either, and is counted as a data
/// problem (`redlight_data_problems_total`) so that the producer learns why its market went
/// red. Q2 is due 15 days after June 30: 07-15 24:00 = 07-16T00:00.
#[test]
fn nx_quarterly_report_labels_that_name_no_quarter_meet_nothing() {
    let mut engine = shipped_engine();
    let mut lines = Vec::new();
    for (case, label) in [
        ("NX-L-GOOD", json!("2026Q2")),
        ("NX-L-YEAR", json!(2026)),
        ("NX-L-YEAR-TEXT", json!("2026")),
        ("NX-L-BAD", json!("2026-Q2")),
    ] {
        lines.push(ev(
            &format!("{case}-d"),
            "market.registration_decided",
            "2026-05-11T10:00:00+08:00",
            case,
            json!({"outcome": "approved"}),
        ));
        lines.push(ev(
            &format!("{case}-r"),
            "market.report_submitted",
            "2026-07-10T10:00:00+08:00",
            case,
            json!({ "period": label }),
        ));
    }
    lines.sort_by_key(|l| l.contains("report_submitted"));
    let r = replay_on(&mut engine, &lines, Some("2026-07-20T00:00:00+08:00"));
    r.assert_clean();
    let missing =
        ["red firing missing at=2026-07-16T00:00:00+08:00 deadline=2026-07-16T00:00:00+08:00"];
    assert_eq!(r.lights("NX-L-GOOD", "nx.quarterly_report"), [""; 0]);
    for case in ["NX-L-YEAR", "NX-L-YEAR-TEXT", "NX-L-BAD"] {
        assert_eq!(r.lights(case, "nx.quarterly_report"), missing, "{case}");
    }
    assert_eq!(
        engine.stats().data_problems,
        1,
        "only `2026-Q2` names no period"
    );
}

// ---------------------------------------------------------------------------------------------
// aq — 生产安全事故报告
// ---------------------------------------------------------------------------------------------

fn accident() -> Value {
    json!({"department": "市应急管理局", "unit": "某建筑公司", "grade": "一般", "deaths": 1, "injuries": 2})
}

/// An event dated before the calendar data (which begins 2020-01-01) is refused, even for a
/// rule of hours that needs no calendar: such a time is nearly always a zero timestamp
/// (1970-01-01T00:00:00Z), and applied it would fire an accident's red for 1970. Its line
/// is reported with the time and where the data begins; the first instant of the data is
/// taken (in Asia/Shanghai: 2019-12-31T16:00Z is 2020-01-01 00:00 there).
#[test]
fn an_event_before_the_calendar_data_is_refused() {
    let r = replay(
        &[
            ev(
                "z1",
                "safety.accident_occurred",
                "1970-01-01T00:00:00Z",
                "AQ-ZERO",
                accident(),
            ),
            ev(
                "z2",
                "safety.accident_occurred",
                "2019-12-31T16:00:00Z",
                "AQ-FIRST",
                accident(),
            ),
            ev(
                "z3",
                "safety.accident_occurred",
                "2019-12-31T15:59:59Z",
                "AQ-BEFORE",
                accident(),
            ),
        ],
        Some("2020-01-02T00:00:00+08:00"),
    );
    assert_eq!(r.summary.rejected, 2, "stderr: {}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(lines[0].starts_with("line 1: ") && lines[0].contains("1970-01-01T00:00:00+00:00"));
    assert!(lines[0].contains("before the calendar data, which begins on 2020-01-01"));
    assert!(lines[1].starts_with("line 3: "), "{}", r.stderr);
    assert!(r.case("AQ-ZERO").is_empty());
    assert_eq!(
        r.lights("AQ-FIRST", "aq.accident_report"),
        [
            "yellow firing approaching at=2020-01-01T00:54:00+08:00 deadline=2020-01-01T01:00:00+08:00",
            "red firing overdue at=2020-01-01T01:00:00+08:00 deadline=2020-01-01T01:00:00+08:00",
        ]
    );
}

/// Hours count from the occurrence itself; holidays do not matter. Occurred 2026-10-02 23:30
/// (National Day): report within 1 hour → red 10-03T00:30; yellow 90% × 60 min = 54 min →
/// 10-03T00:24.
/// A1 never reports. A2 reports at 00:27 (after yellow) → `completed`; its relay clock starts
///    at 00:27: 2 hours → red 02:27, yellow 90% × 120 min = 108 min → 02:15; never relayed.
/// A3 reports at 01:10 (late) → `completed_late`; relay clock from 01:10: yellow 02:58, red
///    03:10; relayed at 02:00 → nothing.
#[test]
fn aq_accident_report_and_relay() {
    let occurred = "2026-10-02T23:30:00+08:00";
    let r = replay(
        &[
            ev(
                "a1",
                "safety.accident_occurred",
                occurred,
                "AQ-A1",
                accident(),
            ),
            ev(
                "a2",
                "safety.accident_occurred",
                occurred,
                "AQ-A2",
                accident(),
            ),
            ev(
                "a3",
                "safety.accident_occurred",
                occurred,
                "AQ-A3",
                accident(),
            ),
            ev(
                "a2r",
                "safety.accident_reported",
                "2026-10-03T00:27:00+08:00",
                "AQ-A2",
                json!({"to": "区应急管理局"}),
            ),
            ev(
                "a3r",
                "safety.accident_reported",
                "2026-10-03T01:10:00+08:00",
                "AQ-A3",
                json!({"to": "区应急管理局"}),
            ),
            ev(
                "a3u",
                "safety.accident_relayed",
                "2026-10-03T02:00:00+08:00",
                "AQ-A3",
                json!({"to": "市应急管理局"}),
            ),
        ],
        Some("2026-10-03T06:00:00+08:00"),
    );
    r.assert_clean();
    let d = "deadline=2026-10-03T00:30:00+08:00";
    assert_eq!(
        r.lights("AQ-A1", "aq.accident_report"),
        [
            format!("yellow firing approaching at=2026-10-03T00:24:00+08:00 {d}"),
            format!("red firing overdue at=2026-10-03T00:30:00+08:00 {d}"),
        ]
    );
    assert_eq!(
        r.lights("AQ-A2", "aq.accident_report"),
        [
            format!("yellow firing approaching at=2026-10-03T00:24:00+08:00 {d}"),
            format!("yellow resolved completed at=2026-10-03T00:27:00+08:00 {d}"),
        ]
    );
    assert_eq!(
        r.lights("AQ-A3", "aq.accident_report"),
        [
            format!("yellow firing approaching at=2026-10-03T00:24:00+08:00 {d}"),
            format!("red firing overdue at=2026-10-03T00:30:00+08:00 {d}"),
            format!("yellow resolved completed_late at=2026-10-03T01:10:00+08:00 {d}"),
            format!("red resolved completed_late at=2026-10-03T01:10:00+08:00 {d}"),
        ]
    );
    assert_eq!(r.lights("AQ-A1", "aq.accident_relay"), Vec::<String>::new());
    assert_eq!(
        r.lights("AQ-A2", "aq.accident_relay"),
        [
            "yellow firing approaching at=2026-10-03T02:15:00+08:00 deadline=2026-10-03T02:27:00+08:00",
            "red firing overdue at=2026-10-03T02:27:00+08:00 deadline=2026-10-03T02:27:00+08:00",
        ]
    );
    assert_eq!(r.lights("AQ-A3", "aq.accident_relay"), Vec::<String>::new());
}

/// 瞒报: the authority learns of the accident by other means before any report.
/// K1: occurred 06-10 10:00, discovered by the media 14:00, never reported → red `violation`
///     at 14:00. K2: reported 10:40, discovered 14:00 → no aq.concealed alert.
#[test]
fn aq_concealed_fires_on_discovery_without_a_prior_report() {
    let r = replay(
        &[
            ev(
                "k1",
                "safety.accident_occurred",
                "2026-06-10T10:00:00+08:00",
                "AQ-K1",
                accident(),
            ),
            ev(
                "k2",
                "safety.accident_occurred",
                "2026-06-10T10:00:00+08:00",
                "AQ-K2",
                accident(),
            ),
            ev(
                "k2r",
                "safety.accident_reported",
                "2026-06-10T10:40:00+08:00",
                "AQ-K2",
                json!({"to": "区应急管理局"}),
            ),
            ev(
                "k1d",
                "safety.accident_discovered",
                "2026-06-10T14:00:00+08:00",
                "AQ-K1",
                json!({"by": "media"}),
            ),
            ev(
                "k2d",
                "safety.accident_discovered",
                "2026-06-10T14:00:00+08:00",
                "AQ-K2",
                json!({"by": "inspection"}),
            ),
        ],
        Some("2026-06-11T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("AQ-K1", "aq.concealed"),
        ["red firing violation at=2026-06-10T14:00:00+08:00 deadline=-"]
    );
    assert_eq!(
        r.of("AQ-K1", "aq.concealed")[0]["basis"],
        "《杭州市安全生产责任制规定》第二十九条"
    );
    assert_eq!(r.lights("AQ-K2", "aq.concealed"), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// hz — 杭州市安全生产责任制规定
// ---------------------------------------------------------------------------------------------

/// Art. 8, a major hazard: 24 hours from the report, holidays irrelevant. Reported 10-01 08:00
/// → red 10-02T08:00; yellow 90% × 24 h = 21 h 36 min → 10-02T05:36.
/// H1 no investigation. H2 investigation at 10-02 07:00 → `completed`. H3 is not major → no
/// clock.
#[test]
fn hz_hazard_investigation_within_24_hours() {
    let t = "2026-10-01T08:00:00+08:00";
    let hazard = |major: bool| json!({"department": "西湖区应急管理局", "location": "某化工厂储罐区", "major": major, "reporter": "王五"});
    let r = replay(
        &[
            ev("h1", "safety.hazard_reported", t, "HZ-H1", hazard(true)),
            ev("h2", "safety.hazard_reported", t, "HZ-H2", hazard(true)),
            ev("h3", "safety.hazard_reported", t, "HZ-H3", hazard(false)),
            ev(
                "h2i",
                "safety.hazard_investigation_started",
                "2026-10-02T07:00:00+08:00",
                "HZ-H2",
                json!({}),
            ),
        ],
        Some("2026-10-03T00:00:00+08:00"),
    );
    r.assert_clean();
    let d = "deadline=2026-10-02T08:00:00+08:00";
    assert_eq!(
        r.lights("HZ-H1", "hz.hazard_investigation"),
        [
            format!("yellow firing approaching at=2026-10-02T05:36:00+08:00 {d}"),
            format!("red firing overdue at=2026-10-02T08:00:00+08:00 {d}"),
        ]
    );
    assert_eq!(
        r.lights("HZ-H2", "hz.hazard_investigation"),
        [
            format!("yellow firing approaching at=2026-10-02T05:36:00+08:00 {d}"),
            format!("yellow resolved completed at=2026-10-02T07:00:00+08:00 {d}"),
        ]
    );
    assert_eq!(r.case("HZ-H3"), Vec::<String>::new());
}

/// `major` is a boolean (SPEC §1; `values` in config/rules/hz.toml). A major hazard reported
/// with `"major": "true"` or `"是"` matches `when = { major = true }` no more than before, so
/// no 24-hour clock starts; but each is now a data problem of the rule, so the producer
/// learns why. `false` is a value like `true`: no problem.
#[test]
fn hz_major_given_as_text_is_a_data_problem() {
    let mut engine = shipped_engine();
    let t = "2026-10-01T08:00:00+08:00";
    let hazard = |major: Value| json!({"department": "西湖区应急管理局", "location": "某化工厂储罐区", "major": major, "reporter": "王五"});
    let r = replay_on(
        &mut engine,
        &[
            ev(
                "m1",
                "safety.hazard_reported",
                t,
                "HZ-M1",
                hazard(json!("true")),
            ),
            ev(
                "m2",
                "safety.hazard_reported",
                t,
                "HZ-M2",
                hazard(json!("是")),
            ),
            ev(
                "m3",
                "safety.hazard_reported",
                t,
                "HZ-M3",
                hazard(json!(false)),
            ),
            ev(
                "m4",
                "safety.hazard_reported",
                t,
                "HZ-M4",
                hazard(json!(true)),
            ),
        ],
        Some("2026-10-03T00:00:00+08:00"),
    );
    r.assert_clean();
    for case in ["HZ-M1", "HZ-M2", "HZ-M3"] {
        assert_eq!(r.case(case), Vec::<String>::new(), "{case}");
    }
    assert_eq!(r.lights("HZ-M4", "hz.hazard_investigation").len(), 2);
    assert_eq!(engine.stats().data_problems, 2);
}

/// Art. 10(3): the order names its due time, here given in UTC: 2026-11-12T02:00:00Z =
/// 2026-11-12T10:00+08:00 (printed in the configured zone). Ordered 11-02 10:00: the span is
/// 10 days = 240 h; yellow at 90% = 216 h = 9 days → 11-11T10:00.
/// R1 never rectified. R2 rectified 11-11 15:00 → `completed`. R3 rectified 11-13 09:00 →
/// `completed_late`.
#[test]
fn hz_rectification_uses_the_due_of_the_order() {
    let ordered = "2026-11-02T10:00:00+08:00";
    let order = || json!({"department": "西湖区应急管理局", "due": "2026-11-12T02:00:00Z"});
    let r = replay(
        &[
            ev(
                "r1",
                "safety.rectification_ordered",
                ordered,
                "HZ-R1",
                order(),
            ),
            ev(
                "r2",
                "safety.rectification_ordered",
                ordered,
                "HZ-R2",
                order(),
            ),
            ev(
                "r3",
                "safety.rectification_ordered",
                ordered,
                "HZ-R3",
                order(),
            ),
            ev(
                "r2x",
                "safety.hazard_rectified",
                "2026-11-11T15:00:00+08:00",
                "HZ-R2",
                json!({}),
            ),
            ev(
                "r3x",
                "safety.hazard_rectified",
                "2026-11-13T09:00:00+08:00",
                "HZ-R3",
                json!({}),
            ),
        ],
        Some("2026-11-15T00:00:00+08:00"),
    );
    r.assert_clean();
    let d = "deadline=2026-11-12T10:00:00+08:00";
    assert_eq!(
        r.lights("HZ-R1", "hz.rectification"),
        [
            format!("yellow firing approaching at=2026-11-11T10:00:00+08:00 {d}"),
            format!("red firing overdue at=2026-11-12T10:00:00+08:00 {d}"),
        ]
    );
    assert_eq!(
        r.lights("HZ-R2", "hz.rectification"),
        [
            format!("yellow firing approaching at=2026-11-11T10:00:00+08:00 {d}"),
            format!("yellow resolved completed at=2026-11-11T15:00:00+08:00 {d}"),
        ]
    );
    assert_eq!(
        r.lights("HZ-R3", "hz.rectification"),
        [
            format!("yellow firing approaching at=2026-11-11T10:00:00+08:00 {d}"),
            format!("red firing overdue at=2026-11-12T10:00:00+08:00 {d}"),
            format!("yellow resolved completed_late at=2026-11-13T09:00:00+08:00 {d}"),
            format!("red resolved completed_late at=2026-11-13T09:00:00+08:00 {d}"),
        ]
    );
}

/// An order whose `due` lies before the order itself (2025 typed for 2026): the clock is
/// taken as given and is overdue at once, its lights at the due time as for any deadline
/// that had passed when its event came; and it is counted as a data problem, logged for
/// the producer. An order due after it is no problem.
#[test]
fn hz_rectification_due_before_the_order_is_overdue_at_once_and_a_data_problem() {
    let mut engine = shipped_engine();
    let r = replay_on(
        &mut engine,
        &[
            ev(
                "b1",
                "safety.rectification_ordered",
                "2026-11-02T10:00:00+08:00",
                "HZ-BACK",
                json!({"department": "西湖区应急管理局", "due": "2025-11-12T10:00:00+08:00"}),
            ),
            ev(
                "b2",
                "safety.rectification_ordered",
                "2026-11-02T10:00:00+08:00",
                "HZ-FINE",
                json!({"department": "西湖区应急管理局", "due": "2026-11-12T10:00:00+08:00"}),
            ),
        ],
        Some("2026-11-03T00:00:00+08:00"),
    );
    r.assert_clean();
    let d = "deadline=2025-11-12T10:00:00+08:00";
    assert_eq!(
        r.lights("HZ-BACK", "hz.rectification"),
        [
            format!("yellow firing approaching at=2025-11-12T10:00:00+08:00 {d}"),
            format!("red firing overdue at=2025-11-12T10:00:00+08:00 {d}"),
        ]
    );
    assert!(r.lights("HZ-FINE", "hz.rectification").is_empty());
    assert_eq!(engine.stats().data_problems, 1);
}

/// Art. 13(2), one meeting each quarter, watched from the first meeting on (which meets its
/// own quarter). D1 meets on 05-20 (Q2) and not in Q3 → Q2 met at its end (07-01T00:00),
/// red `missing` when Q3 closes, 24:00 of 09-30 = 10-01T00:00 (no grace: the period's own
/// end). D2 meets on 05-20 and 08-18 → nothing.
#[test]
fn hz_safety_meeting_missing_in_a_quarter() {
    let meeting = || json!({"department": "市安委办"});
    let r = replay(
        &[
            ev(
                "d1q2",
                "safety.meeting_held",
                "2026-05-20T10:00:00+08:00",
                "HZ-D1",
                meeting(),
            ),
            ev(
                "d2q2",
                "safety.meeting_held",
                "2026-05-20T10:00:00+08:00",
                "HZ-D2",
                meeting(),
            ),
            ev(
                "d2q3",
                "safety.meeting_held",
                "2026-08-18T10:00:00+08:00",
                "HZ-D2",
                meeting(),
            ),
        ],
        Some("2026-10-15T00:00:00+08:00"),
    );
    r.assert_clean();
    assert_eq!(
        r.lights("HZ-D1", "hz.safety_meeting"),
        ["red firing missing at=2026-10-01T00:00:00+08:00 deadline=2026-10-01T00:00:00+08:00"]
    );
    assert!(field(r.of("HZ-D1", "hz.safety_meeting")[0], "detail").contains("2026Q3"));
    assert_eq!(r.lights("HZ-D2", "hz.safety_meeting"), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// replay itself (SPEC §5)
// ---------------------------------------------------------------------------------------------

/// A mixed input touching every pack.
fn mixed_input() -> Vec<String> {
    vec![
        ev(
            "m1",
            "safety.meeting_held",
            "2026-05-20T10:00:00+08:00",
            "HZ-D",
            json!({"department": "市安委办"}),
        ),
        ev(
            "m2",
            "market.registration_decided",
            "2026-08-10T10:00:00+08:00",
            "NX-M",
            json!({"outcome": "approved"}),
        ),
        ev(
            "m3",
            "market.registration_accepted",
            "2026-09-03T15:00:00+08:00",
            "NX-R",
            market(),
        ),
        ev(
            "m4",
            "approval.submitted",
            "2026-09-23T10:00:00+08:00",
            "XZ-M",
            plain(),
        ),
        ev(
            "m5",
            "approval.accepted",
            ACCEPTED,
            "XZ-M",
            promised(json!({"promised_workdays": 15})),
        ),
        ev(
            "m6",
            "approval.accepted",
            ACCEPTED,
            "XZ-N",
            json!({"kind": "immediate"}),
        ),
        ev(
            "m7",
            "safety.accident_occurred",
            "2026-10-02T23:30:00+08:00",
            "AQ-M",
            accident(),
        ),
        ev(
            "m8",
            "safety.accident_discovered",
            "2026-10-03T09:00:00+08:00",
            "AQ-M",
            json!({"by": "media"}),
        ),
        ev(
            "m9",
            "approval.decided",
            "2026-10-20T10:00:00+08:00",
            "XZ-M",
            json!({"outcome": "approved"}),
        ),
        ev(
            "m10",
            "safety.rectification_ordered",
            "2026-11-02T10:00:00+08:00",
            "HZ-R",
            json!({"due": "2026-11-12T10:00:00+08:00"}),
        ),
    ]
}

/// SPEC §5: deterministic — two runs over the same input print the same bytes (alert ids
/// included).
#[test]
fn replay_is_deterministic() {
    let input = mixed_input();
    let until = Some("2026-12-01T00:00:00+08:00");
    let a = replay(&input, until);
    let b = replay(&input, until);
    a.assert_clean();
    assert!(a.alerts.len() > 10, "{}", a.stdout);
    assert_eq!(a.stdout.as_bytes(), b.stdout.as_bytes());
    assert_eq!(a.summary, b.summary);
}

/// SPEC §1 and §5: a line that is not JSON, lacks `subject`, or has a malformed time is
/// reported on stderr with its line number and skipped; the lines after it still count. An
/// unknown type is not an error, but is named once at the end.
#[test]
fn bad_lines_are_reported_and_skipped() {
    let mut no_subject: Value =
        serde_json::from_str(&ev("b3", "approval.accepted", ACCEPTED, "X", plain())).expect("json");
    no_subject
        .as_object_mut()
        .expect("object")
        .remove("subject");
    let lines = vec![
        ev("b1", "approval.accepted", ACCEPTED, "BAD-1", plain()),
        "{\"specversion\":\"1.0\",\"id\":".to_string(),
        no_subject.to_string(),
        ev(
            "b4",
            "approval.accepted",
            "2026-09-28 10:00",
            "BAD-4",
            plain(),
        ),
        ev("b5", "approval.teleported", ACCEPTED, "BAD-5", json!({})),
        ev("b6", "approval.accepted", ACCEPTED, "BAD-6", plain()),
    ];
    let r = replay(&lines, Some("2026-11-01T00:00:00+08:00"));
    let err: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(err.len(), 4, "{}", r.stderr);
    assert!(err[0].starts_with("line 2: "), "{}", err[0]);
    assert!(err[0].contains("JSON"), "{}", err[0]);
    assert!(err[1].starts_with("line 3: "), "{}", err[1]);
    assert!(err[1].contains("subject"), "{}", err[1]);
    assert!(err[2].starts_with("line 4: "), "{}", err[2]);
    assert!(
        err[2].contains("time") && err[2].contains("2026-09-28 10:00"),
        "{}",
        err[2]
    );
    assert_eq!(
        r.summary,
        ReplaySummary {
            lines: 6,
            events: 3,
            rejected: 3,
            alerts: 4,
            unknown: 1,
        }
    );
    // The unknown type is no error, but named once at the end: a misspelt type starts and
    // stops nothing.
    assert_eq!(
        err[3],
        "ignored 1 event(s) of types no rule pack names: `approval.teleported` (1)"
    );
    for case in ["BAD-1", "BAD-6"] {
        assert_eq!(
            r.lights(case, "xk.decision"),
            [
                format!("yellow firing approaching at={XK_YELLOW} deadline={XK_RED}"),
                format!("red firing overdue at={XK_RED} deadline={XK_RED}"),
            ]
        );
    }
}

/// SPEC §1: an event of an unknown type is counted and otherwise ignored, its time too. A
/// misspelt type dated the day after an accident, delivered between the accident and its
/// report in time, fires nothing: the report's yellow (00:24) and red (00:30) are not raised
/// on the misspelt event's word, and then retracted by the report.
#[test]
fn an_unknown_type_does_not_move_the_clock() {
    let lines = vec![
        ev(
            "u1",
            "safety.accident_occurred",
            "2026-10-02T23:30:00+08:00",
            "AQ-U1",
            accident(),
        ),
        ev(
            "u2",
            "approval.acepted",
            "2026-10-04T09:00:00+08:00",
            "XZ-U2",
            plain(),
        ),
        ev(
            "u3",
            "safety.accident_reported",
            "2026-10-03T00:10:00+08:00",
            "AQ-U1",
            json!({"to": "区应急管理局"}),
        ),
        ev(
            "u4",
            "safety.accident_relayed",
            "2026-10-03T00:50:00+08:00",
            "AQ-U1",
            json!({"to": "市应急管理局"}),
        ),
    ];
    let r = replay(&lines, None);
    assert!(r.alerts.is_empty(), "{}", r.stdout);
    assert_eq!(r.summary.unknown, 1);
    assert_eq!(r.summary.rejected, 0);
}

/// A report without a `period` label counts for the oldest period still open: the quarter
/// that already went red, not the quarter being watched now.
#[test]
fn nx_quarterly_report_without_a_label_settles_the_missing_quarter() {
    let r = replay(
        &[
            ev(
                "d",
                "market.registration_decided",
                "2026-08-10T10:00:00+08:00",
                "NX-M5",
                json!({"outcome": "approved"}),
            ),
            // Q3 (07-01..09-30) is due 15 days after it ends: 10-15 24:00 = 10-16T00:00.
            ev(
                "r",
                "market.report_submitted",
                "2026-10-20T10:00:00+08:00",
                "NX-M5",
                json!({}),
            ),
        ],
        None,
    );
    assert_eq!(
        r.lights("NX-M5", "nx.quarterly_report"),
        [
            "red firing missing at=2026-10-16T00:00:00+08:00 deadline=2026-10-16T00:00:00+08:00",
            "red resolved completed_late at=2026-10-20T10:00:00+08:00 deadline=2026-10-16T00:00:00+08:00",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Deadlines beyond the calendar data (SPEC §3: years without data are never guessed)
// ---------------------------------------------------------------------------------------------

/// The shipped calendar files up to 2026 only (so that these tests keep their meaning once
/// 2027 is added to `config/calendars/`), plus `extra` files given as `(year, text)`.
fn calendar_to_2026(extra: &[(i32, &str)]) -> redlight::calendar::Calendar {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendars");
    let mut sources = Vec::new();
    for year in 2020..=2026 {
        let path = dir.join(format!("{year}.toml"));
        let text = std::fs::read_to_string(&path).expect("a shipped calendar file");
        sources.push((path, text));
    }
    for (year, text) in extra {
        sources.push((format!("test/{year}.toml").into(), text.to_string()));
    }
    redlight::calendar::Calendar::from_sources(&sources, chrono_tz::Asia::Shanghai)
        .expect("calendar data")
}

/// The shipped rules on the given calendar.
fn engine_on(cal: redlight::calendar::Calendar) -> redlight::engine::Engine {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/redlight.toml");
    let config = Config::load(&path).expect("config/redlight.toml loads");
    let rules = config.load_rules().expect("rules load");
    redlight::engine::Engine::new(std::sync::Arc::new(rules), std::sync::Arc::new(cal))
}

/// Calendar data to 2026-12-31; December 2026 has no holiday, so its workdays are
/// Mon–Fri: 12-01..04, 07..11, 14..18, 21..25, 28..31.
///
/// PD-1, accepted 12-08 10:00, promised 18 workdays (xz.promised): day 1 = 12-09; workdays
/// 12-09 #1, 10 #2, 11 #3, 14..18 #4-#8, 21..25 #9-#13, 28 #14, 29 #15, 30 #16, 31 #17: the
/// 18th is in 2027, which has no data, so the deadline waits. Yellow at 90% × 18 = 16.2
/// workdays: 16 end at 24:00 of 12-30, plus 0.2 × 24 h = 4 h 48 min → 12-31T04:48, with no
/// deadline in the alert. Its xk.decision (20 workdays, yellow at 18) has neither. Completed
/// 12-31 10:00, a day the data covers and before any 2027 deadline: in time, the yellow is
/// resolved `completed`, no red.
///
/// PD-2, accepted 12-10 10:00, promised 15: day 1 = 12-11 #1, 14..18 #2-#6, 21..25 #7-#11,
/// 28 #12, 29 #13, 30 #14, 31 #15 → red at 24:00 of 12-31 = 2027-01-01T00:00, the last
/// instant the data reaches: computed, not pending. Yellow at 13.5 workdays: 13 end at 24:00
/// of 12-29, plus 12 h → 12-30T12:00. (The red fires: PD-3's completion, rejected or not,
/// moved the replay's clock to 2027-01-05, as any event's time does.)
///
/// PD-3, accepted 12-15, completed 2027-01-05: whether that stop was in time depends on
/// 2027's holidays: the completion is rejected with the missing date, and the case stays
/// open, waiting (nothing else of the input is lost).
#[test]
fn deadlines_beyond_the_calendar_data_wait_and_the_case_goes_on() {
    let mut engine = engine_on(calendar_to_2026(&[]));
    let promised = |n: u32| {
        json!({"department": "市住建局", "item": "建筑工程施工许可", "handler": "张三",
            "kind": "promised", "promised_workdays": n})
    };
    let lines = [
        ev(
            "pd1-a",
            "approval.accepted",
            "2026-12-08T10:00:00+08:00",
            "PD-1",
            promised(18),
        ),
        ev(
            "pd2-a",
            "approval.accepted",
            "2026-12-10T10:00:00+08:00",
            "PD-2",
            promised(15),
        ),
        ev(
            "pd3-a",
            "approval.accepted",
            "2026-12-15T10:00:00+08:00",
            "PD-3",
            promised(15),
        ),
        ev(
            "pd1-r",
            "approval.reviewed",
            "2026-12-21T10:00:00+08:00",
            "PD-1",
            json!({}),
        ),
        ev(
            "pd1-d",
            "approval.decided",
            "2026-12-28T10:00:00+08:00",
            "PD-1",
            json!({}),
        ),
        ev(
            "pd1-c",
            "approval.completed",
            "2026-12-31T10:00:00+08:00",
            "PD-1",
            json!({}),
        ),
        ev(
            "pd3-c",
            "approval.completed",
            "2027-01-05T10:00:00+08:00",
            "PD-3",
            json!({}),
        ),
    ];
    let r = replay_on(&mut engine, &lines, Some("2026-12-31T23:00:00+08:00"));
    assert_eq!(
        r.lights("PD-1", "xz.promised"),
        [
            "yellow firing approaching at=2026-12-31T04:48:00+08:00 deadline=-",
            "yellow resolved completed at=2026-12-31T10:00:00+08:00 deadline=-",
        ]
    );
    assert_eq!(r.lights("PD-1", "xk.decision"), Vec::<String>::new());
    assert_eq!(
        r.lights("PD-2", "xz.promised"),
        [
            "yellow firing approaching at=2026-12-30T12:00:00+08:00 deadline=2027-01-01T00:00:00+08:00",
            "red firing overdue at=2027-01-01T00:00:00+08:00 deadline=2027-01-01T00:00:00+08:00",
        ]
    );
    // PD-1 went through every stage in order: no violation.
    assert_eq!(r.lights("PD-1", "xz.stages"), Vec::<String>::new());
    assert_eq!(r.summary.rejected, 1, "stderr: {}", r.stderr);
    assert!(
        r.stderr.starts_with("line 7: ") && r.stderr.contains("2027-01-05"),
        "the completion that needs 2027 is rejected with its line and date: {}",
        r.stderr
    );
    let pending = |case: &str| {
        engine
            .case(case)
            .expect("case is open")
            .clocks
            .iter()
            .filter(|c| c.deadline_pending())
            .count()
    };
    assert_eq!(pending("PD-1"), 0, "PD-1's clocks stopped");
    assert_eq!(pending("PD-2"), 1, "PD-2's xk.decision waits for 2027");
    assert_eq!(
        pending("PD-3"),
        2,
        "PD-3 is still open, both clocks waiting"
    );
    assert_eq!(
        engine.stats().calendar_errors,
        6,
        "every pending clock and the rejection counted"
    );
}

/// A pending deadline is computed once next year's data is there: the daemon restarts with
/// the new file and restores its cases. Here 2027 is a test placeholder (weekends only; not
/// the State Council's notice), with 2027-01-01 a Friday workday.
///
/// PD-4, accepted 2026-12-08 10:00, promised 18 workdays: 17 in December (see above), the
/// 18th is 2027-01-01 → red at 2027-01-02T00:00. Its xk.decision (20): 2027-01-01 #18,
/// 01-04 #19, 01-05 #20 → red at 2027-01-06T00:00, yellow at 18 workdays = 24:00 of
/// 2027-01-01 = 01-02T00:00.
#[test]
fn a_pending_deadline_is_computed_when_the_data_arrives() {
    let mut before = engine_on(calendar_to_2026(&[]));
    let accepted = ev(
        "pd4-a",
        "approval.accepted",
        "2026-12-08T10:00:00+08:00",
        "PD-4",
        json!({"department": "市住建局", "item": "建筑工程施工许可", "handler": "张三",
            "kind": "promised", "promised_workdays": 18}),
    );
    let r = replay_on(&mut before, &[accepted], Some("2026-12-31T23:00:00+08:00"));
    assert_eq!(
        r.lights("PD-4", "xz.promised"),
        ["yellow firing approaching at=2026-12-31T04:48:00+08:00 deadline=-"]
    );
    let case = before.case("PD-4").expect("case").clone();
    assert_eq!(
        case.clocks.iter().filter(|c| c.deadline_pending()).count(),
        2
    );

    let placeholder = "year = 2027\nnotice = \"test placeholder, weekends only; not law\"\n";
    let mut after = engine_on(calendar_to_2026(&[(2027, placeholder)]));
    after.track_changes();
    after.restore_clock(before.now());
    after.restore(case);
    assert_eq!(
        after
            .take_changed()
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>(),
        ["PD-4"],
        "the case with its new deadlines is persisted again"
    );
    let restored = after.case("PD-4").expect("case");
    assert!(restored.clocks.iter().all(|c| !c.deadline_pending()));
    let mut out = Vec::new();
    after.advance(ms("2027-01-10T00:00:00+08:00"), &mut out);
    let shown: Vec<String> = out
        .iter()
        .map(|a| {
            let v = serde_json::to_value(a).expect("alert JSON");
            format!("{} {}", field(&v, "rule"), show(&v))
        })
        .collect();
    assert_eq!(
        shown,
        [
            "xk.decision yellow firing approaching at=2027-01-02T00:00:00+08:00 deadline=2027-01-06T00:00:00+08:00",
            "xz.promised red firing overdue at=2027-01-02T00:00:00+08:00 deadline=2027-01-02T00:00:00+08:00",
            "xk.decision red firing overdue at=2027-01-06T00:00:00+08:00 deadline=2027-01-06T00:00:00+08:00",
        ]
    );
}

/// What broke, as the chat robots' notices say it (`情形`): every `detail` the shipped packs'
/// rules raise — a stage out of order and one skipped, a promise missing, above the
/// statutory limit and not a whole number, extensions past their cap, a quarterly report
/// missing, late and made in time but delivered late, a safety meeting missed, a check
/// rule's own message — reads in Chinese, event types by their names; none is left in the
/// engine's English (the alert JSON keeps that, SPEC §4).
#[test]
fn every_detail_reads_in_chinese_in_the_notices() {
    let market = || json!({"outcome": "approved", "market": "新华农贸市场"});
    let q3 = || json!({"period": "2026Q3"});
    let r = replay(
        &[
            ev("s1", "approval.accepted", ACCEPTED, "XZ-DS", plain()),
            ev(
                "s2",
                "approval.decided",
                "2026-10-09T10:00:00+08:00",
                "XZ-DS",
                json!({"outcome": "denied"}),
            ),
            ev(
                "s3",
                "approval.reviewed",
                "2026-10-12T10:00:00+08:00",
                "XZ-DS",
                json!({}),
            ),
            ev(
                "p1",
                "approval.accepted",
                ACCEPTED,
                "XZ-DP1",
                promised(json!({})),
            ),
            ev(
                "p2",
                "approval.accepted",
                ACCEPTED,
                "XZ-DP2",
                promised(json!({"promised_workdays": 25})),
            ),
            ev(
                "p3",
                "approval.accepted",
                ACCEPTED,
                "XZ-DP3",
                promised(json!({"promised_workdays": 2.5})),
            ),
            ev("e0", "approval.accepted", ACCEPTED, "XK-DE", plain()),
            ev(
                "e1",
                "approval.extended",
                "2026-10-20T10:00:00+08:00",
                "XK-DE",
                json!({"extra_workdays": 6, "approved_by": "局长"}),
            ),
            ev(
                "e2",
                "approval.extended",
                "2026-10-27T10:00:00+08:00",
                "XK-DE",
                json!({"extra_workdays": 5, "approved_by": "局长"}),
            ),
            ev(
                "m1",
                "market.registration_decided",
                "2026-08-10T10:00:00+08:00",
                "NX-DM",
                market(),
            ),
            ev(
                "l1",
                "market.registration_decided",
                "2026-08-10T10:00:00+08:00",
                "NX-DL",
                market(),
            ),
            ev(
                "t1",
                "market.registration_decided",
                "2026-08-10T10:00:00+08:00",
                "NX-DT",
                market(),
            ),
            ev(
                "h1",
                "safety.meeting_held",
                "2026-05-20T10:00:00+08:00",
                "HZ-DD",
                json!({"department": "市安委办"}),
            ),
            ev(
                "a1",
                "safety.accident_discovered",
                "2026-10-10T10:00:00+08:00",
                "HZ-DA",
                json!({"department": "市应急管理局", "unit": "某厂", "grade": "一般", "by": "inspection"}),
            ),
            // 2026Q3 reports are due 10-16T00:00: NX-DL's comes after it, NX-DT's was made
            // before it and arrives after the clock passed it.
            ev(
                "l2",
                "market.report_submitted",
                "2026-10-16T08:00:00+08:00",
                "NX-DL",
                q3(),
            ),
            ev(
                "t2",
                "market.report_submitted",
                "2026-10-15T20:00:00+08:00",
                "NX-DT",
                q3(),
            ),
        ],
        Some("2026-11-20T00:00:00+08:00"),
    );
    r.assert_clean();
    let details: Vec<(String, String)> = r
        .alerts
        .iter()
        .filter(|a| a["detail"].is_string())
        .map(|a| {
            let d = field(a, "detail");
            (d.to_string(), redlight::formats::text::detail_text(d))
        })
        .collect();
    let shown: Vec<&str> = details.iter().map(|(_, zh)| zh.as_str()).collect();
    // Period labels (2026Q3), numbers and a value as given (2.5) are not English.
    let english = |s: &str| {
        s.split(|c: char| !c.is_ascii_alphabetic())
            .any(|w| w.len() > 1 && w != "Q")
    };
    for (en, zh) in &details {
        assert!(!english(zh), "left in English: {en} -> {zh}");
    }
    for expected in [
        "「审核」在「审批决定」之后才办理（环节顺序颠倒）",
        "未经「审核」即「审批决定」（跳过环节）",
        "缺少承诺时限，未承诺办理时限",
        "承诺时限为 25 个工作日，超过法定上限 20 个工作日",
        "承诺时限「2.5」不是 1 至 20 的整数（个工作日）",
        "延长期限累计 11 个工作日，超过允许的 10 个工作日",
        "2026Q3 未报送统计报表",
        "2026Q3 报送统计报表晚于期限",
        "2026Q3 已按期报送统计报表，数据迟到送达",
        "2026Q3 未召开安全生产工作会议",
        "事故未经单位报告，由其他途径发现（瞒报）",
    ] {
        assert!(shown.contains(&expected), "{expected} in {shown:#?}");
    }
}
