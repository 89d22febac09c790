//! A deterministic workload of CloudEvents for the end-to-end tests: approvals (submitted,
//! incomplete material, promised / immediate / joint, suspensions, extensions over the cap,
//! stages out of order, withdrawals, late completions, decisions delivered late), markets
//! (registrations, changes, quarterly reports on time / late / missing, reconsiderations),
//! hazards and rectifications, accidents reported late or discovered without a report, and
//! departments' safety meetings — plus duplicated event ids and a few unknown types.
//!
//! Every event time lies between 2026-01-05 and 2026-06-30 (+08:00), so every deadline (at
//! most 60 workdays later) and every purge (30 days after a case's last event) lies long
//! before the tests run, and nothing falls due near "now".
//!
//! The messages come out in global time order, with three deliberate exceptions that keep
//! the daemon and `redlight replay` comparable:
//! - a duplicate is an exact copy of an earlier message, delivered up to two days later
//!   (it changes nothing, in either);
//! - a "late stop" (a decision whose own time is before its deadline, delivered after the
//!   red fired) is delivered right after another event of the same case that is the latest
//!   event so far, so that the engine's clock is the same in one partition as globally.

use serde_json::{Value, json};

/// The first instant of the window: 2026-01-05T00:00:00+08:00, as minutes = 0.
const BASE: &str = "2026-01-05T00:00:00+08:00";
/// The last minute of the window: 2026-06-30T23:59 (+08:00), in minutes from [`BASE`].
const END: i64 = 177 * 24 * 60 - 1;
const HOUR: i64 = 60;
const DAY: i64 = 24 * HOUR;

/// splitmix64: small, fast, and the same sequence everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        lo + (self.next_u64() % ((hi - lo + 1) as u64)) as i64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.range(0, xs.len() as i64 - 1) as usize]
    }
}

/// Minutes from [`BASE`] → RFC 3339 with the +08:00 offset.
pub fn fmt_time(minutes: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339(BASE).expect("base time");
    (base + chrono::Duration::minutes(minutes))
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

const DEPARTMENTS: &[&str] = &[
    "市住建局",
    "市市场监管局",
    "市自然资源局",
    "市交通运输局",
    "市卫健委",
    "市生态环境局",
];
const ITEMS: &[&str] = &[
    "建筑工程施工许可",
    "食品经营许可",
    "建设用地规划许可",
    "道路运输经营许可",
    "医疗机构执业登记",
    "排污许可",
];
const HANDLERS: &[&str] = &["张三", "李四", "王五", "赵六", "钱七", "孙八", "周九"];
const MARKETS: &[&str] = &[
    "新华东街农贸市场",
    "大武口综合批发市场",
    "西夏区果蔬市场",
    "金凤区建材市场",
];
const LOCATIONS: &[&str] = &[
    "滨江区某工地",
    "萧山区某化工厂",
    "余杭区某仓库",
    "西湖区某商场",
];

/// One message, with the key it goes under (the case id) and its sort position.
struct Item {
    deliver: i64,
    seq: u64,
    sub: u8,
    key: String,
    line: String,
}

/// A message of the workload: the Kafka key (the subject) and the CloudEvent line.
#[derive(Clone, Debug)]
pub struct Line {
    pub key: String,
    pub line: String,
}

pub struct Gen {
    rng: Rng,
    prefix: String,
    next_event: u64,
    next_seq: u64,
    next_case: u64,
    items: Vec<Item>,
    /// Probability that an event is delivered twice.
    pub duplicate_share: f64,
}

/// The events of one case as they are built; times only ever grow, and the first event
/// past the end of the window closes the case (the rest is dropped).
struct CaseBuilder {
    subject: String,
    t: i64,
    closed: bool,
    /// (time, kind, data, late-stop marker)
    events: Vec<(i64, String, Value, Option<usize>)>,
}

impl CaseBuilder {
    fn new(subject: String, t: i64) -> CaseBuilder {
        CaseBuilder {
            subject,
            t,
            closed: false,
            events: Vec::new(),
        }
    }

    /// Adds an event `gap` minutes after the previous one; returns its index, or `None`
    /// once past the window.
    fn after(&mut self, gap: i64, kind: &str, data: Value) -> Option<usize> {
        if self.closed {
            return None;
        }
        let t = self.t + gap.max(1);
        if t > END {
            self.closed = true;
            return None;
        }
        self.t = t;
        self.events.push((t, kind.to_string(), data, None));
        Some(self.events.len() - 1)
    }

    /// An event at an absolute time that does not move the chain of [`Self::after`]; dropped
    /// when past the window.
    fn at(&mut self, time: i64, kind: &str, data: Value) {
        if time <= END {
            self.events.push((time, kind.to_string(), data, None));
        }
    }

    /// An event whose own time is `time` (earlier than the latest event) delivered right
    /// after event `after`.
    fn late(&mut self, after: usize, time: i64, kind: &str, data: Value) {
        if self.closed {
            return;
        }
        self.events
            .push((time, kind.to_string(), data, Some(after)));
    }
}

impl Gen {
    pub fn new(seed: u64, prefix: &str) -> Gen {
        Gen {
            rng: Rng::new(seed),
            prefix: prefix.to_string(),
            next_event: 0,
            next_seq: 0,
            next_case: 0,
            items: Vec::new(),
            duplicate_share: 0.03,
        }
    }

    fn case_id(&mut self, kind: &str) -> String {
        self.next_case += 1;
        format!("{}-{kind}-{:05}", self.prefix, self.next_case)
    }

    /// A start time for a case: any minute of the first 150 days, biased to office hours.
    fn start_time(&mut self, last_day: i64) -> i64 {
        let day = self.rng.range(0, last_day);
        day * DAY + self.rng.range(8 * HOUR, 17 * HOUR + 30)
    }

    /// The CloudEvent line of an event.
    pub fn event_line(&mut self, subject: &str, time: i64, kind: &str, data: &Value) -> String {
        self.next_event += 1;
        let source = match kind.split('.').next() {
            Some("approval") => "/xinzhou/approval-hall",
            Some("market") => "/ningxia/market-registration",
            _ => "/hangzhou/work-safety",
        };
        json!({
            "specversion": "1.0",
            "id": format!("{}-evt-{:07}", self.prefix, self.next_event),
            "source": source,
            "type": kind,
            "time": fmt_time(time),
            "subject": subject,
            "datacontenttype": "application/json",
            "data": data,
        })
        .to_string()
    }

    fn emit(&mut self, case: CaseBuilder) {
        // In time order within the case (stable: equal times keep the order they were
        // built in); late events go right after the event they follow.
        let mut order: Vec<usize> = (0..case.events.len())
            .filter(|i| case.events[*i].3.is_none())
            .collect();
        order.sort_by_key(|i| case.events[*i].0);
        order.extend((0..case.events.len()).filter(|i| case.events[*i].3.is_some()));
        let mut placed: Vec<(i64, u64)> = vec![(0, 0); case.events.len()];
        for i in order {
            let (time, kind, data, late_after) = &case.events[i];
            let line = self.event_line(&case.subject, *time, kind, data);
            let (deliver, seq, sub) = match late_after {
                Some(e) => {
                    let (d, s) = placed[*e];
                    (d, s, 1)
                }
                None => {
                    self.next_seq += 1;
                    (*time, self.next_seq, 0)
                }
            };
            placed[i] = (deliver, seq);
            if self.rng.chance(self.duplicate_share) {
                let later = deliver + self.rng.range(0, 2 * DAY);
                self.next_seq += 1;
                self.items.push(Item {
                    deliver: later,
                    seq: self.next_seq,
                    sub: 0,
                    key: case.subject.clone(),
                    line: line.clone(),
                });
            }
            self.items.push(Item {
                deliver,
                seq,
                sub,
                key: case.subject.clone(),
                line,
            });
        }
    }

    /// `n` cases of every domain and scenario.
    pub fn full_cases(&mut self, n: usize) {
        for _ in 0..n {
            let roll = self.rng.range(0, 99);
            match roll {
                0..=44 => self.approval(),
                45..=64 => self.market(),
                65..=77 => self.hazard(),
                78..=91 => self.accident(),
                92..=95 => self.meetings(),
                _ => self.odd(),
            }
        }
    }

    /// `n` new cases of one event each that only start clocks or duties: no stop, no
    /// violation, so their alerts (timers, `at` = the due time) do not depend on where the
    /// engine's clock stands when they arrive.
    pub fn start_only_cases(&mut self, n: usize) {
        for _ in 0..n {
            let t = self.start_time(170);
            let dept = *self.rng.pick(DEPARTMENTS);
            let (kind, subject, data) = match self.rng.range(0, 9) {
                0 | 1 => {
                    let joint = self.rng.chance(0.3);
                    let max = if joint { 45 } else { 20 };
                    let promised = self.rng.range(1, max);
                    (
                        "approval.accepted",
                        self.case_id("XZ"),
                        json!({"department": dept, "item": *self.rng.pick(ITEMS),
                            "handler": *self.rng.pick(HANDLERS), "kind": "promised",
                            "promised_workdays": promised, "joint": joint}),
                    )
                }
                2 => (
                    "approval.accepted",
                    self.case_id("XZ"),
                    json!({"department": dept, "item": *self.rng.pick(ITEMS),
                        "handler": *self.rng.pick(HANDLERS), "kind": "immediate"}),
                ),
                3 => (
                    "approval.submitted",
                    self.case_id("XZ"),
                    json!({"department": dept, "item": *self.rng.pick(ITEMS),
                        "handler": *self.rng.pick(HANDLERS)}),
                ),
                4 => (
                    "market.registration_accepted",
                    self.case_id("NX"),
                    json!({"department": "银川市市场监管局", "market": *self.rng.pick(MARKETS)}),
                ),
                5 => (
                    "market.registration_decided",
                    self.case_id("NX"),
                    json!({"outcome": "approved", "department": "银川市市场监管局"}),
                ),
                6 => (
                    "market.reconsideration_requested",
                    self.case_id("NX"),
                    json!({"department": "石嘴山市市场监管局"}),
                ),
                7 => (
                    "safety.hazard_reported",
                    self.case_id("HZH"),
                    json!({"department": dept, "location": *self.rng.pick(LOCATIONS),
                        "major": true, "reporter": "群众"}),
                ),
                8 => (
                    "safety.accident_occurred",
                    self.case_id("HZA"),
                    json!({"department": dept, "unit": "某建设公司", "grade": "一般",
                        "deaths": self.rng.range(0, 2), "injuries": self.rng.range(0, 5)}),
                ),
                _ => (
                    "safety.meeting_held",
                    self.case_id("DEPT"),
                    json!({"department": dept}),
                ),
            };
            let mut c = CaseBuilder::new(subject, t - 1);
            c.after(1, kind, data);
            self.emit(c);
        }
    }

    fn approval(&mut self) {
        let subject = self.case_id("XZ");
        let t0 = self.start_time(150);
        let dept = *self.rng.pick(DEPARTMENTS);
        let item = *self.rng.pick(ITEMS);
        let handler = *self.rng.pick(HANDLERS);
        let mut c = CaseBuilder::new(subject, t0 - 1);
        let who = json!({"department": dept, "item": item, "handler": handler});
        if self.rng.chance(0.85) {
            c.after(1, "approval.submitted", who.clone());
            if self.rng.chance(0.25) {
                let gap = self.rng.range(2 * HOUR, 12 * DAY);
                c.after(
                    gap,
                    "approval.material_incomplete",
                    json!({"missing": "营业执照副本"}),
                );
                let gap = self.rng.range(DAY, 6 * DAY);
                c.after(gap, "approval.submitted", who.clone());
            }
            let gap = self.rng.range(HOUR, 10 * DAY);
            self.accept_and_process(c, gap, who);
        } else {
            self.accept_and_process(c, 1, who);
        }
    }

    fn accept_and_process(&mut self, mut c: CaseBuilder, gap: i64, who: Value) {
        let r = &mut self.rng;
        let immediate = r.chance(0.15);
        let joint = !immediate && r.chance(0.15);
        let mut accepted = who.clone();
        let obj = accepted.as_object_mut().expect("object");
        if immediate {
            obj.insert("kind".into(), json!("immediate"));
        } else {
            obj.insert("kind".into(), json!("promised"));
            let max = if joint { 45 } else { 20 };
            match r.range(0, 99) {
                0..=79 => {
                    obj.insert("promised_workdays".into(), json!(r.range(1, max)));
                }
                80..=87 => {
                    obj.insert("promised_workdays".into(), json!(max + r.range(1, 10)));
                }
                88..=93 => {}
                _ => {
                    obj.insert("promised_workdays".into(), json!("about ten"));
                }
            }
            if joint {
                obj.insert("joint".into(), json!(true));
            }
        }
        if c.after(gap, "approval.accepted", accepted).is_none() {
            return self.emit(c);
        }
        let withdraw_at = if self.rng.chance(0.06) {
            self.rng.range(0, 5)
        } else {
            99
        };
        let mut step = 0;
        macro_rules! maybe_withdraw {
            () => {
                step += 1;
                if step == withdraw_at {
                    let gap = self.rng.range(HOUR, 5 * DAY);
                    c.after(gap, "approval.withdrawn", json!({}));
                    return self.emit(c);
                }
            };
        }
        if immediate {
            // Done while the applicant waits — or not (late: the next day).
            let late = self.rng.chance(0.15);
            let g = self.rng.range(10, 90);
            c.after(g, "approval.reviewed", json!({"handler": "李四"}));
            let g = self.rng.range(10, 120);
            c.after(g, "approval.decided", json!({"outcome": "approved"}));
            let g = if late {
                self.rng.range(DAY, 3 * DAY)
            } else {
                self.rng.range(10, 3 * HOUR)
            };
            c.after(g, "approval.certificate_issued", json!({}));
            c.after(5, "approval.completed", json!({}));
            return self.emit(c);
        }
        maybe_withdraw!();
        // Stages: usually in order; sometimes skipped or reversed.
        let disorder = self.rng.range(0, 99);
        if disorder >= 6 {
            let g = self.rng.range(HOUR, 8 * DAY);
            c.after(g, "approval.reviewed", json!({"handler": "李四"}));
        }
        if self.rng.chance(0.1) {
            let g = self.rng.range(HOUR, 3 * DAY);
            c.after(
                g,
                "approval.fee_charged",
                json!({"amount_yuan": self.rng.range(10, 500), "fee_code": "XZ-F-01"}),
            );
        }
        maybe_withdraw!();
        // A decision whose own time is early, delivered after its red has fired.
        if disorder >= 6 && self.rng.chance(0.06) {
            let decided_time = c.t + self.rng.range(HOUR, 3 * DAY);
            let g = 70 * DAY + self.rng.range(0, 5 * DAY);
            if let Some(e) = c.after(
                g,
                "approval.fee_charged",
                json!({"amount_yuan": 50, "fee_code": "XZ-F-02"}),
            ) {
                c.late(
                    e,
                    decided_time,
                    "approval.decided",
                    json!({"outcome": "approved"}),
                );
                let g = self.rng.range(HOUR, 4 * DAY);
                c.after(g, "approval.certificate_issued", json!({}));
                c.after(30, "approval.completed", json!({}));
            }
            return self.emit(c);
        }
        if self.rng.chance(0.25) {
            let g = self.rng.range(HOUR, 6 * DAY);
            let procedure = *self
                .rng
                .pick(&["hearing", "expert_review", "inspection", "testing"]);
            c.after(g, "approval.suspended", json!({"procedure": procedure}));
            if self.rng.chance(0.85) {
                let g = self.rng.range(DAY, 20 * DAY);
                c.after(g, "approval.resumed", json!({}));
            } else {
                // Never resumed: the clock stays paused.
                return self.emit(c);
            }
        }
        maybe_withdraw!();
        if self.rng.chance(0.2) {
            let cap = if joint { 15 } else { 10 };
            let first = self.rng.range(3, cap);
            let g = self.rng.range(5 * DAY, 20 * DAY);
            c.after(
                g,
                "approval.extended",
                json!({"extra_workdays": first, "approved_by": "局长"}),
            );
            if self.rng.chance(0.35) {
                let g = self.rng.range(DAY, 10 * DAY);
                let second = self.rng.range(2, 8);
                c.after(
                    g,
                    "approval.extended",
                    json!({"extra_workdays": second, "approved_by": "局长"}),
                );
            }
        }
        maybe_withdraw!();
        if disorder < 3 {
            // Completed before the decision: a stage out of order.
            let g = self.rng.range(DAY, 20 * DAY);
            c.after(g, "approval.completed", json!({}));
        }
        let g = self.rng.range(2 * DAY, 40 * DAY);
        let approved = self.rng.chance(0.8);
        let outcome = if approved { "approved" } else { "denied" };
        c.after(
            g,
            "approval.decided",
            json!({"outcome": outcome, "reason": "材料齐全"}),
        );
        maybe_withdraw!();
        if approved && self.rng.chance(0.85) {
            let g = self.rng.range(HOUR, 20 * DAY);
            c.after(g, "approval.certificate_issued", json!({}));
        }
        if disorder >= 3 && self.rng.chance(0.9) {
            let g = self.rng.range(10, 5 * DAY);
            c.after(g, "approval.completed", json!({}));
        }
        self.emit(c)
    }

    fn market(&mut self) {
        let subject = self.case_id("NX");
        let t0 = self.start_time(140);
        let dept = *self
            .rng
            .pick(&["银川市市场监管局", "石嘴山市市场监管局", "吴忠市市场监管局"]);
        let market = *self.rng.pick(MARKETS);
        let mut c = CaseBuilder::new(subject, t0 - 1);
        c.after(
            1,
            "market.registration_accepted",
            json!({"department": dept, "market": market}),
        );
        if self.rng.chance(0.1) {
            return self.emit(c); // never decided: overdue
        }
        let approved = self.rng.chance(0.85);
        let outcome = if approved { "approved" } else { "denied" };
        if self.rng.chance(0.05) {
            // Decided early, delivered after its red.
            let decided_time = c.t + self.rng.range(DAY, 10 * DAY);
            let g = 45 * DAY + self.rng.range(0, 5 * DAY);
            if let Some(e) = c.after(
                g,
                "approval.fee_charged",
                json!({"amount_yuan": 100, "fee_code": "NX-F-01"}),
            ) {
                c.late(
                    e,
                    decided_time,
                    "market.registration_decided",
                    json!({"outcome": outcome}),
                );
            }
            return self.emit(c);
        }
        let g = self.rng.range(5 * DAY, 45 * DAY);
        c.after(
            g,
            "market.registration_decided",
            json!({"outcome": outcome}),
        );
        if approved {
            // Quarterly reports: on time, late, or never; sometimes an annual one.
            let decided = c.t;
            let q_of = |minutes: i64| -> i64 {
                // 2026Q1 ends at 2026-03-31 24:00 = day 86, Q2 at day 177.
                if minutes < 86 * DAY { 1 } else { 2 }
            };
            let mut q = q_of(decided);
            while q <= 2 {
                let quarter_end = if q == 1 { 86 * DAY } else { 177 * DAY };
                let roll = self.rng.range(0, 99);
                let when = match roll {
                    0..=64 => quarter_end + self.rng.range(HOUR, 13 * DAY),
                    65..=79 => quarter_end - self.rng.range(HOUR, 5 * DAY),
                    80..=91 => quarter_end + self.rng.range(17 * DAY, 40 * DAY),
                    _ => i64::MAX,
                };
                if when != i64::MAX && when > decided {
                    let period = if self.rng.chance(0.1) {
                        Value::Null
                    } else {
                        json!(format!("2026Q{q}"))
                    };
                    let data = if period.is_null() {
                        json!({})
                    } else {
                        json!({"period": period})
                    };
                    c.at(when, "market.report_submitted", data);
                }
                q += 1;
            }
            if self.rng.chance(0.1) {
                let when = decided + self.rng.range(HOUR, 30 * DAY);
                c.at(when, "market.report_submitted", json!({"period": "2025"}));
            }
        }
        let mut changes = if self.rng.chance(0.3) { 1 } else { 0 };
        if changes == 1 && self.rng.chance(0.3) {
            changes = 2;
        }
        for _ in 0..changes {
            let g = self.rng.range(DAY, 20 * DAY);
            let change = *self.rng.pick(&["迁移", "合并", "分立", "变更名称"]);
            c.after(g, "market.change_decided", json!({"change": change}));
            if self.rng.chance(0.9) {
                let g = self.rng.range(5 * DAY, 45 * DAY);
                c.after(g, "market.change_registered", json!({}));
            }
        }
        if self.rng.chance(0.15) {
            let g = self.rng.range(DAY, 20 * DAY);
            c.after(g, "market.reconsideration_requested", json!({}));
            if self.rng.chance(0.85) {
                let g = self.rng.range(5 * DAY, 45 * DAY);
                c.after(g, "market.reconsideration_decided", json!({}));
            }
        }
        self.emit(c)
    }

    fn hazard(&mut self) {
        let subject = self.case_id("HZH");
        let t0 = self.start_time(160);
        let dept = *self.rng.pick(DEPARTMENTS);
        let mut c = CaseBuilder::new(subject, t0 - 1);
        let major = self.rng.chance(0.6);
        c.after(
            1,
            "safety.hazard_reported",
            json!({"department": dept, "location": *self.rng.pick(LOCATIONS),
                "major": major, "reporter": "群众举报"}),
        );
        if self.rng.chance(0.9) {
            let g = self.rng.range(HOUR, 40 * HOUR);
            c.after(g, "safety.hazard_investigation_started", json!({}));
        }
        if self.rng.chance(0.7) {
            let g = self.rng.range(HOUR, 5 * DAY);
            let due_in = self.rng.range(3 * DAY, 30 * DAY);
            let due = if self.rng.chance(0.03) {
                json!("soon")
            } else {
                json!(fmt_time((c.t + g + due_in).min(END)))
            };
            c.after(g, "safety.rectification_ordered", json!({"due": due}));
            if self.rng.chance(0.85) {
                let g = self.rng.range(DAY, 40 * DAY);
                c.after(g, "safety.hazard_rectified", json!({}));
            }
        }
        self.emit(c)
    }

    fn accident(&mut self) {
        let subject = self.case_id("HZA");
        let t0 = self.start_time(170);
        let dept = *self.rng.pick(DEPARTMENTS);
        let mut c = CaseBuilder::new(subject, t0 - 1);
        c.after(
            1,
            "safety.accident_occurred",
            json!({"department": dept, "unit": "某建设公司",
                "grade": *self.rng.pick(&["一般", "较大"]),
                "deaths": self.rng.range(0, 3), "injuries": self.rng.range(0, 10)}),
        );
        match self.rng.range(0, 99) {
            0..=74 => {
                // Reported, in time or late (over one hour).
                let g = self.rng.range(5, 150);
                c.after(g, "safety.accident_reported", json!({"to": "区应急管理局"}));
                if self.rng.chance(0.8) {
                    let g = self.rng.range(20, 200);
                    c.after(g, "safety.accident_relayed", json!({"to": "市应急管理局"}));
                }
            }
            75..=94 => {
                // Discovered by other means before any report: concealment.
                let g = self.rng.range(2 * HOUR, 5 * DAY);
                c.after(g, "safety.accident_discovered", json!({"by": "媒体报道"}));
                if self.rng.chance(0.5) {
                    let g = self.rng.range(HOUR, 2 * DAY);
                    c.after(g, "safety.accident_reported", json!({"to": "区应急管理局"}));
                }
            }
            _ => {}
        }
        self.emit(c)
    }

    fn meetings(&mut self) {
        let subject = self.case_id("DEPT");
        let dept = *self.rng.pick(DEPARTMENTS);
        let mut c = CaseBuilder::new(subject, 0);
        // Q1 (days 0..86) and Q2 (days 86..177): one or two meetings, or none.
        for (lo, hi) in [(1, 85), (86, 176)] {
            if self.rng.chance(0.3) {
                continue;
            }
            for _ in 0..self.rng.range(1, 2) {
                let day = self.rng.range(lo, hi);
                let when = day * DAY + self.rng.range(8 * HOUR, 17 * HOUR);
                c.at(when, "safety.meeting_held", json!({"department": dept}));
            }
        }
        self.emit(c)
    }

    /// Odd inputs that are still valid events: unknown types, a type with nothing to do
    /// for a new case, extensions without a number.
    fn odd(&mut self) {
        let subject = self.case_id("ODD");
        let t0 = self.start_time(160);
        let mut c = CaseBuilder::new(subject, t0 - 1);
        match self.rng.range(0, 2) {
            0 => {
                c.after(1, "approval.note_added", json!({"note": "未知类型"}));
            }
            1 => {
                c.after(1, "approval.reviewed", json!({"handler": "李四"}));
            }
            _ => {
                c.after(
                    1,
                    "approval.accepted",
                    json!({"department": "市住建局", "item": "排污许可", "handler": "王五",
                        "kind": "promised", "promised_workdays": "12"}),
                );
                c.after(DAY, "approval.extended", json!({"extra_workdays": "many"}));
                c.after(2 * DAY, "approval.decided", json!({"outcome": "denied"}));
            }
        }
        self.emit(c)
    }

    /// Every message so far, in delivery order.
    pub fn finish(mut self) -> Vec<Line> {
        self.items.sort_by_key(|i| (i.deliver, i.seq, i.sub));
        self.items
            .into_iter()
            .map(|i| Line {
                key: i.key,
                line: i.line,
            })
            .collect()
    }
}
