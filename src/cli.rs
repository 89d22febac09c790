//! The offline subcommands of SPEC §5: `check`, `replay` and `calendar`.
//!
//! Each is a function over readers and writers, so tests run them without a process.

use crate::alert::Alert;
use crate::calendar::Calendar;
use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::event::Event;
use chrono::NaiveDate;
use std::io::{self, BufRead, Write};
use std::path::Path;

/// How many days before the calendar data ends `check` starts to warn.
pub const CALENDAR_WARN_DAYS: i64 = 60;

/// The outcome of `redlight check`: every problem, and warnings that do not fail it.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    pub summary: String,
}

/// Validates the configuration, every rule pack and the calendar data.
pub fn check(config_path: &Path, today: NaiveDate) -> CheckReport {
    let mut report = CheckReport::default();
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    let calendar = match config.load_calendar() {
        Ok(cal) => Some(cal),
        Err(e) => {
            report.problems.push(e.to_string());
            None
        }
    };
    let rules = match config.load_rules() {
        Ok(r) => Some(r),
        Err(ConfigError::Rules(problems)) => {
            report
                .problems
                .extend(problems.iter().map(ToString::to_string));
            None
        }
        Err(e) => {
            report.problems.push(e.to_string());
            None
        }
    };
    if let Some(cal) = &calendar {
        let last = cal.last_day();
        let left = (last - today).num_days();
        if left < 0 {
            report.problems.push(format!(
                "{}: calendar data ended on {last}; clocks that reach {} cannot be computed — add \
                 the State Council's notice for {}",
                config.calendar_dir().display(),
                today,
                last.succ_opt().map_or(0, |d| chrono::Datelike::year(&d))
            ));
        } else if left <= CALENDAR_WARN_DAYS {
            report.warnings.push(format!(
                "{}: calendar data ends on {last}, in {left} days; add the State Council's \
                 holiday notice for {} when it is published (see config/calendars/README.md)",
                config.calendar_dir().display(),
                chrono::Datelike::year(&last) + 1
            ));
        }
    }
    if let (Some(cal), Some(rules)) = (&calendar, &rules) {
        report.summary = format!(
            "ok: {} packs, {} rules, calendar {}..={} ({})",
            rules.packs.len(),
            rules.rules.len(),
            cal.first_day(),
            cal.last_day(),
            cal.tz()
        );
    }
    report
}

/// Counts from one `replay` run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub lines: u64,
    pub events: u64,
    pub rejected: u64,
    pub alerts: u64,
}

/// Runs the engine over JSON Lines of CloudEvents. The clock is the event time: timers due
/// before an event fire before it is applied; then the clock advances to `until` if given.
/// Alerts go to `out` as JSON lines in the order they happen; bad lines are reported on
/// `err` with their line number and skipped.
pub fn replay(
    engine: &mut Engine,
    input: impl BufRead,
    until: Option<i64>,
    mut out: impl Write,
    mut err: impl Write,
) -> io::Result<ReplaySummary> {
    let mut summary = ReplaySummary::default();
    let mut alerts: Vec<Alert> = Vec::new();
    let mut input = input;
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        summary.lines += 1;
        let text = trim_ascii(&line);
        if text.is_empty() {
            continue;
        }
        let n = summary.lines;
        let ev = match Event::parse(text) {
            Ok(ev) => ev,
            Err(e) => {
                summary.rejected += 1;
                writeln!(err, "line {n}: rejected: {e}")?;
                continue;
            }
        };
        alerts.clear();
        engine.advance_before(ev.time_ms(), &mut alerts);
        let applied = engine.apply(&ev, &mut alerts);
        write_alerts(&mut out, &alerts)?;
        summary.alerts += alerts.len() as u64;
        match applied {
            Ok(_) => summary.events += 1,
            Err(e) => {
                summary.rejected += 1;
                writeln!(err, "line {n}: rejected: {e}")?;
            }
        }
    }
    if let Some(until) = until {
        alerts.clear();
        engine.advance(until, &mut alerts);
        write_alerts(&mut out, &alerts)?;
        summary.alerts += alerts.len() as u64;
    }
    out.flush()?;
    Ok(summary)
}

fn write_alerts(out: &mut impl Write, alerts: &[Alert]) -> io::Result<()> {
    for a in alerts {
        serde_json::to_writer(&mut *out, a)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// `redlight calendar list`: one line per date, `YYYY-MM-DD<TAB>kind`.
pub fn calendar_list(
    cal: &Calendar,
    from: NaiveDate,
    to: NaiveDate,
    mut out: impl Write,
) -> anyhow::Result<()> {
    let mut d = from;
    while d <= to {
        writeln!(out, "{d}\t{}", cal.day_kind(d)?)?;
        d = match d.succ_opt() {
            Some(n) => n,
            None => break,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_whitespace_and_crlf() {
        assert_eq!(trim_ascii(b"  {}\r\n"), b"{}");
        assert_eq!(trim_ascii(b"\n"), b"");
        assert_eq!(trim_ascii(b""), b"");
    }
}
