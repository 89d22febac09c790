//! Department scorecards (杭州市安全生产责任制规定 Arts. 20–26): per department and period,
//! cases closed, on time, late, violations, the on-time rate and the grade 优秀 / 合格 /
//! 不合格 (Art. 24), and whether the department was 不合格 two years running (Art. 26).
//!
//! Cases are forgotten some time after they go quiet, so the scorecard does not count the
//! `cases` table: the daemon writes a *ledger* of what the scorecard counts into the store,
//! in the same transaction as the case (see [`ledger_rows`]): after each event applied
//! (cases close and violations fire only then; a case may be forgotten before its batch is
//! written, in a backlog) and for each case a timer changed. Rows are keyed by instant,
//! case and record, so writing them again each time a case changes is idempotent:
//! - `closed` — the case was left with no running clock: the instant is its last stop; it
//!   was late when any clock of that stretch of work stopped after its deadline. A case that
//!   is started again (a change registration after the registration) closes again.
//!   Withdrawn cases are not counted as closed.
//! - `violation:<rule>:<key>` — a red violation (a check, a stage out of order, a promise or
//!   extension over the statutory limit), at the time of the event that broke the rule
//!   (however late it was delivered);
//! - `missing:<rule>:<period>` — a periodic duty not met in its period, at its due time:
//!   written when the period goes red (from [`crate::engine::Engine::take_period_marks`]:
//!   the case's own state lets the period go when a late report comes), and taken back
//!   when the red is retracted (the report was made in time and delivered late).

use crate::clock::Zone;
use crate::config::ScorecardConfig;
use crate::engine::{Case, Engine, period_bounds, period_index, period_label};
use crate::rules::{Period, RuleKind, RuleSet};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The department of cases whose events name none.
pub const NO_DEPARTMENT: &str = "（未注明部门）";

/// One ledger row's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub department: String,
    /// `closed`, `violation` or `missing`.
    pub kind: String,
    /// For `closed`: at least one clock stopped after its deadline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
    /// The rule of a violation or missing duty; for `closed`, the rules whose clocks ran late.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
}

/// The ledger rows a case's current state implies: `(instant, case id, key, JSON)`.
pub fn ledger_rows(case: &Case, rules: &RuleSet, out: &mut Vec<(i64, String, String, Vec<u8>)>) {
    let closed = !case.withdrawn
        && !case.clocks.is_empty()
        && case.clocks.iter().all(|c| c.stopped.is_some());
    let missing = case.duties.iter().any(|d| !d.missing.is_empty());
    if !closed && case.violations.is_empty() && !missing {
        return; // the common case, on the hot path: nothing to record
    }
    let department = case
        .get("department")
        .and_then(crate::engine::Datum::as_str)
        .unwrap_or(NO_DEPARTMENT)
        .to_string();
    let mut push = |at: i64, key: String, record: Record| {
        if let Ok(json) = serde_json::to_vec(&record) {
            out.push((at, case.id.to_string(), key, json));
        }
    };
    if closed {
        // The last stretch of work: the clocks whose running overlapped, ending with the
        // last stop.
        let mut spans: Vec<(i64, i64, bool, u16)> = case
            .clocks
            .iter()
            .map(|c| {
                (
                    c.started,
                    c.stopped.get().unwrap_or(c.started),
                    c.late,
                    c.rule,
                )
            })
            .collect();
        spans.sort_by_key(|s| std::cmp::Reverse(s.1));
        let closed_at = spans[0].1;
        let mut from = spans[0].0;
        let mut late_rules = Vec::new();
        for (start, stop, late, rule) in spans {
            if stop < from {
                break;
            }
            from = from.min(start);
            if late {
                let id = rules
                    .rules
                    .get(rule as usize)
                    .map_or_else(|| format!("#{rule}"), |r| r.id.to_string());
                if !late_rules.contains(&id) {
                    late_rules.push(id);
                }
            }
        }
        push(
            closed_at,
            "closed".to_string(),
            Record {
                department: department.clone(),
                kind: "closed".into(),
                late: !late_rules.is_empty(),
                rules: late_rules,
            },
        );
    }
    for v in &case.violations {
        let Some(rule) = rules.rules.get(v.rule as usize).map(|r| r.id.to_string()) else {
            continue;
        };
        push(
            v.at,
            format!("violation:{rule}:{}", v.key),
            Record {
                department: department.clone(),
                kind: "violation".into(),
                late: false,
                rules: vec![rule],
            },
        );
    }
    for d in &case.duties {
        for &(period, due) in &d.missing {
            if let Some((key, record)) = missing_row(rules, d.rule, period, &department) {
                push(due, key, record);
            }
        }
    }
}

/// Moves the periods the engine marked since the last call
/// ([`crate::engine::Engine::take_period_marks`]) into a batch's ledger rows: a period that
/// went red as missing writes its `missing` row into `rows`, to stay there when its report
/// comes late (the duty's `missing` list, which [`ledger_rows`] reads, lets the period go
/// then); a red retracted (the report was made in time and delivered late) puts the row's
/// key into `taken_back`, to be deleted after `rows` are written.
pub fn take_period_rows(
    engine: &mut Engine,
    rows: &mut Vec<(i64, String, String, Vec<u8>)>,
    taken_back: &mut Vec<(i64, String, String)>,
) {
    for m in engine.take_period_marks() {
        let department = m.department.as_deref().unwrap_or(NO_DEPARTMENT);
        let Some((key, record)) = missing_row(engine.rules(), m.rule, m.period, department) else {
            continue;
        };
        if !m.missed {
            taken_back.push((m.due, m.case.to_string(), key));
        } else if let Ok(json) = serde_json::to_vec(&record) {
            rows.push((m.due, m.case.to_string(), key, json));
        }
    }
}

/// The `missing:<rule>:<period>` row's key and record; `None` for a rule that is not
/// periodic.
fn missing_row(
    rules: &RuleSet,
    rule: u16,
    period: i32,
    department: &str,
) -> Option<(String, Record)> {
    let rule = rules.rules.get(usize::from(rule))?;
    let RuleKind::Periodic(p) = &rule.kind else {
        return None;
    };
    Some((
        format!("missing:{}:{}", rule.id, period_label(p.period, period)),
        Record {
            department: department.to_string(),
            kind: "missing".into(),
            late: false,
            rules: vec![rule.id.to_string()],
        },
    ))
}

/// A scorecard period: a year (`2026`), a quarter (`2026Q3`) or a month (`2026-07`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScorePeriod {
    pub kind: Period,
    pub index: i32,
}

impl ScorePeriod {
    pub fn parse(label: &str) -> Option<ScorePeriod> {
        let label = label.trim();
        let kind = if label.contains(['Q', 'q']) {
            Period::Quarter
        } else if label.contains('-') {
            Period::Month
        } else {
            Period::Year
        };
        let index = crate::engine::parse_period(kind, label)?;
        let p = ScorePeriod { kind, index };
        (1900..=9999).contains(&p.year()).then_some(p)
    }

    /// The period the date falls in, of the given kind.
    pub fn containing(kind: Period, date: NaiveDate) -> ScorePeriod {
        ScorePeriod {
            kind,
            index: period_index(kind, date),
        }
    }

    pub fn label(&self) -> String {
        period_label(self.kind, self.index)
    }

    /// First and last day.
    pub fn days(&self) -> (NaiveDate, NaiveDate) {
        period_bounds(self.kind, self.index)
    }

    /// `[start, end)` in engine instants (00:00 of the first day to 24:00 of the last, local).
    pub fn instants(&self, zone: &Zone) -> (i64, i64) {
        let (first, last) = self.days();
        let day = |d: NaiveDate| crate::calendar::day_index(d) * crate::clock::DAY;
        (
            zone.to_utc(day(first)),
            zone.to_utc(day(last) + crate::clock::DAY),
        )
    }

    /// The calendar year the period lies in.
    pub fn year(&self) -> i32 {
        match self.kind {
            Period::Year => self.index,
            Period::Quarter => self.index.div_euclid(4),
            Period::Month => self.index.div_euclid(12),
        }
    }
}

/// Counts of one department in one period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tally {
    pub closed: u64,
    pub on_time: u64,
    pub late: u64,
    pub violations: u64,
}

impl Tally {
    fn add(&mut self, r: &Record) {
        match r.kind.as_str() {
            "closed" => {
                self.closed += 1;
                if r.late {
                    self.late += 1;
                } else {
                    self.on_time += 1;
                }
            }
            _ => self.violations += 1,
        }
    }

    /// On-time closed cases over closed cases; `None` when nothing was closed.
    pub fn on_time_rate(&self) -> Option<f64> {
        (self.closed > 0).then(|| self.on_time as f64 / self.closed as f64)
    }
}

/// 杭州 Art. 24: 优秀, 合格, 不合格.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Grade {
    #[serde(rename = "优秀")]
    Excellent,
    #[serde(rename = "合格")]
    Qualified,
    #[serde(rename = "不合格")]
    Unqualified,
}

impl Grade {
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::Excellent => "优秀",
            Grade::Qualified => "合格",
            Grade::Unqualified => "不合格",
        }
    }
}

/// The grade of a tally. With nothing closed the on-time rate does not count against the
/// department: it is graded on its violations alone.
pub fn grade(t: &Tally, c: &ScorecardConfig) -> Grade {
    let rate = t.on_time_rate().unwrap_or(1.0);
    if rate >= c.excellent_on_time_rate && t.violations <= c.excellent_max_violations {
        Grade::Excellent
    } else if rate >= c.qualified_on_time_rate && t.violations <= c.qualified_max_violations {
        Grade::Qualified
    } else {
        Grade::Unqualified
    }
}

/// Tallies per department of the ledger rows in `[from, to)`.
pub fn tally(
    store: &crate::store::Store,
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, Tally>, crate::store::StoreError> {
    let mut out: BTreeMap<String, Tally> = BTreeMap::new();
    store.scan_ledger(
        from,
        to,
        |at, case, key, value| match serde_json::from_slice::<Record>(value) {
            Ok(r) => out.entry(r.department.clone()).or_default().add(&r),
            Err(e) => {
                tracing::warn!(at, case, key, error = %e, "unreadable scorecard record; skipped")
            }
        },
    )?;
    Ok(out)
}

/// One department's line of the scorecard.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub department: String,
    #[serde(flatten)]
    pub tally: Tally,
    /// `null` when nothing was closed in the period.
    pub on_time_rate: Option<f64>,
    pub grade: Grade,
    /// The grade of the period's year (so far) and of the year before; `null` for a year
    /// with no record of the department.
    pub year_grades: BTreeMap<String, Option<Grade>>,
    /// 杭州 Art. 26: graded 不合格 in the period's year and the year before.
    pub unqualified_two_years: bool,
}

impl Line {
    /// The on-time rate as the spreadsheet and the page write it, `95.00%`; `None` when
    /// nothing was closed.
    pub fn on_time_percent(&self) -> Option<String> {
        self.on_time_rate.map(|r| format!("{:.2}%", r * 100.0))
    }
}

/// The whole scorecard of a period.
#[derive(Debug, Clone, Serialize)]
pub struct Scorecard {
    pub period: String,
    pub from: String,
    pub to: String,
    pub thresholds: Thresholds,
    pub departments: Vec<Line>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Thresholds {
    pub excellent_on_time_rate: f64,
    pub excellent_max_violations: u64,
    pub qualified_on_time_rate: f64,
    pub qualified_max_violations: u64,
}

/// Computes the scorecard of `period` from the ledger.
pub fn scorecard(
    store: &crate::store::Store,
    zone: &Zone,
    config: &ScorecardConfig,
    period: ScorePeriod,
) -> Result<Scorecard, crate::store::StoreError> {
    let (from, to) = period.instants(zone);
    let lines = tally(store, from, to)?;
    let year = period.year();
    let mut years = Vec::new();
    for y in [year - 1, year] {
        let p = ScorePeriod {
            kind: Period::Year,
            index: y,
        };
        let (a, b) = p.instants(zone);
        years.push((y, tally(store, a, b)?));
    }
    let mut departments: Vec<String> = lines.keys().cloned().collect();
    for (_, t) in &years {
        departments.extend(t.keys().cloned());
    }
    departments.sort();
    departments.dedup();
    let out = departments
        .into_iter()
        .map(|d| {
            let t = lines.get(&d).cloned().unwrap_or_default();
            let year_grades: BTreeMap<String, Option<Grade>> = years
                .iter()
                .map(|(y, ts)| (y.to_string(), ts.get(&d).map(|t| grade(t, config))))
                .collect();
            let unqualified_two_years = year_grades.len() == 2
                && year_grades.values().all(|g| *g == Some(Grade::Unqualified));
            Line {
                department: d,
                on_time_rate: t.on_time_rate(),
                grade: grade(&t, config),
                tally: t,
                year_grades,
                unqualified_two_years,
            }
        })
        .collect();
    Ok(Scorecard {
        period: period.label(),
        from: zone.format(from),
        to: zone.format(to),
        thresholds: Thresholds {
            excellent_on_time_rate: config.excellent_on_time_rate,
            excellent_max_violations: config.excellent_max_violations,
            qualified_on_time_rate: config.qualified_on_time_rate,
            qualified_max_violations: config.qualified_max_violations,
        },
        departments: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ScorecardConfig {
        ScorecardConfig::default()
    }

    #[test]
    fn periods_parse_in_three_kinds() {
        let q = ScorePeriod::parse("2026Q3").expect("quarter");
        assert_eq!(q.label(), "2026Q3");
        assert_eq!(q.days().0.to_string(), "2026-07-01");
        assert_eq!(q.year(), 2026);
        let y = ScorePeriod::parse("2025").expect("year");
        assert_eq!(y.days().1.to_string(), "2025-12-31");
        let m = ScorePeriod::parse("2026-02").expect("month");
        assert_eq!(m.days().1.to_string(), "2026-02-28");
        for bad in ["", "2026Q5", "26Q1x", "2026-13", "abc"] {
            assert!(ScorePeriod::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn grades_follow_the_thresholds() {
        let t = |closed, late, violations| Tally {
            closed,
            on_time: closed - late,
            late,
            violations,
        };
        assert_eq!(grade(&t(100, 2, 0), &cfg()), Grade::Excellent);
        assert_eq!(grade(&t(100, 2, 1), &cfg()), Grade::Qualified);
        assert_eq!(grade(&t(100, 10, 0), &cfg()), Grade::Qualified);
        assert_eq!(grade(&t(100, 30, 0), &cfg()), Grade::Unqualified);
        assert_eq!(grade(&t(100, 0, 4), &cfg()), Grade::Unqualified);
        // Nothing closed: judged on violations alone.
        assert_eq!(grade(&t(0, 0, 0), &cfg()), Grade::Excellent);
        assert_eq!(grade(&t(0, 0, 9), &cfg()), Grade::Unqualified);
    }
}
