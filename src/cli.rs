//! The offline subcommands of SPEC §5: `check`, `replay` and `calendar`.
//!
//! Each is a function over readers and writers, so tests run them without a process.

use crate::alert::Alert;
use crate::calendar::Calendar;
use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::event::Event;
use chrono::{Datelike, NaiveDate};
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

/// Validates the configuration, every rule pack and the calendar data. `today` judges the
/// calendar's coverage; without it, today in the configured time zone (as the daemon
/// counts), not the host's: a host on UTC would otherwise say the data ends "in 0 days"
/// for the first eight hours of January 1st in Beijing.
pub fn check(config_path: &Path, today: Option<NaiveDate>) -> CheckReport {
    let mut report = CheckReport::default();
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    if let Err(e) = crate::daemon::check_kafka_settings(&config.kafka) {
        report.problems.push(format!(
            "{}: [kafka] or [kafka.librdkafka]: {e}",
            config_path.display()
        ));
    }
    report.problems.extend(
        crate::delivery::secret_problems(&config)
            .into_iter()
            .map(|e| format!("{}: {e}", config_path.display())),
    );
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
    report.warnings.extend(crate::config::unread_env_vars());
    if let Some(cal) = &calendar {
        let today =
            today.unwrap_or_else(|| chrono::Utc::now().with_timezone(&cal.tz()).date_naive());
        let last = cal.last_day();
        let left = (last - today).num_days();
        // Data that has ended is a warning, not a problem: the configuration is valid and
        // the daemon counts every clock it can (deadlines past the data wait, pending; an
        // event that needs a day without data goes to the dead-letter topic). As a problem
        // it failed `check`, and with it the systemd unit's ExecStartPre: no restart, and
        // the board and every clock in hours gone dark, until the next notice was added.
        if left < 0 {
            report.warnings.push(format!(
                "{}: calendar data ended on {last}; deadlines after it wait, and events that \
                 need a day after it go to the dead-letter topic, until the State Council's \
                 notice for {} is added (`redlight calendar import NOTICE.txt` writes \
                 the file from its text; see config/calendars/README.md)",
                config.calendar_dir().display(),
                last.succ_opt().map_or(0, |d| chrono::Datelike::year(&d))
            ));
        } else if left <= CALENDAR_WARN_DAYS {
            report.warnings.push(format!(
                "{}: calendar data ends on {last}, in {left} days; add the State Council's \
                 holiday notice for {} when it is published (`redlight calendar import \
                 NOTICE.txt` writes the file from its text; see config/calendars/README.md)",
                config.calendar_dir().display(),
                chrono::Datelike::year(&last) + 1
            ));
        }
    }
    if let Some(rules) = &rules {
        // Retiring is for good in a daemon that holds cases: worth a word before a restart.
        for id in rules.disabled() {
            report.warnings.push(format!(
                "rule `{id}` has `enabled = false`: a daemon holding cases drops what they \
                 hold of it (running clocks, stages, duties, violations) at its next start, \
                 for good; enabled again later, the rule starts afresh (see \
                 \"Changing packs while the daemon holds cases\" in docs/rules.md)"
            ));
        }
    }
    if let (Some(cal), Some(rules)) = (&calendar, &rules) {
        let disabled = match rules.disabled().len() {
            0 => String::new(),
            n => format!(" ({n} more disabled)"),
        };
        report.summary = format!(
            "ok: {} packs, {} rules{disabled}, calendar {}..={} ({}); {}",
            rules.packs.len(),
            rules.rules.len(),
            cal.first_day(),
            cal.last_day(),
            cal.tz(),
            delivery_summary(&config)
        );
    }
    report
}

/// Where alerts go, in `check`'s summary: a configuration without receivers is valid, and
/// an operator whose `[[receiver]]` sections went missing should see it before starting.
fn delivery_summary(config: &Config) -> String {
    let d = &config.delivery;
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if config.receivers.is_empty() {
        return "no receiver: alerts are kept and shown, sent nowhere".to_string();
    }
    let mut out = format!(
        "alerts to {}, {}, {}",
        plural(config.receivers.len(), "receiver", "receivers"),
        plural(config.routes.len(), "route", "routes"),
        plural(
            config.escalations.len(),
            "escalation step",
            "escalation steps"
        ),
    );
    if d.proxy.is_some() {
        out.push_str(", https through a proxy");
    }
    if d.ca_file.is_some() {
        out.push_str(", a CA of our own");
    }
    out
}

/// Counts from one `replay` run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub lines: u64,
    pub events: u64,
    pub rejected: u64,
    pub alerts: u64,
    /// Of `events`, those of a type no rule pack names (ignored).
    pub unknown: u64,
}

/// The unknown event types `replay` names at its end, most frequent first, and how many
/// distinct ones it keeps counts of (a file of made-up types must not grow it unbounded).
const UNKNOWN_TYPES_NAMED: usize = 10;
const UNKNOWN_TYPES_KEPT: usize = 1000;

/// Runs the engine over JSON Lines of CloudEvents. The clock is the event time: timers due
/// before an event fire before it is applied (and what a late event set that the clock had
/// passed, at the next event it passes or at the end); then the clock advances to `until` if
/// given.
/// Alerts go to `out` as JSON lines in the order they happen; bad lines are reported on
/// `err` with their line number and skipped, and events of types no rule pack names are
/// named there once, at the end.
///
/// The lines are read and parsed on a second thread, a chunk of [`REPLAY_CHUNK`] lines
/// ahead of the engine (parsing was about a quarter of the time), and each chunk goes back
/// to that thread to be freed once applied (freeing a chunk's events, a dozen allocations
/// each, made by another thread, was the engine thread's); the engine, the output and the
/// order of everything are as on one thread. (Serialising the alerts on a third thread as
/// well was no faster.)
pub fn replay(
    engine: &mut Engine,
    input: impl BufRead + Send,
    until: Option<i64>,
    mut out: impl Write,
    mut err: impl Write,
) -> io::Result<ReplaySummary> {
    let mut summary = ReplaySummary::default();
    let mut unknown: std::collections::HashMap<String, u64> = Default::default();
    let mut alerts: Vec<Alert> = Vec::new();
    let mut input = input;
    let stopped = || io::Error::other("the replay's parser thread stopped");
    std::thread::scope(|scope| -> io::Result<()> {
        // The channels' engine-side ends are this closure's: when it returns early, they
        // close and the parser stops.
        let (parsed_tx, parsed_rx) = std::sync::mpsc::sync_channel::<io::Result<Parsed>>(2);
        let (spent_tx, spent_rx) = std::sync::mpsc::channel::<Parsed>();
        std::thread::Builder::new()
            .name("redlight-replay-parse".into())
            .spawn_scoped(scope, move || {
                let mut lines = 0u64;
                loop {
                    // Chunks the engine is done with are freed here.
                    while spent_rx.try_recv().is_ok() {}
                    let chunk = match read_chunk(&mut input, &mut lines) {
                        Ok(chunk) => chunk,
                        Err(e) => {
                            let _ = parsed_tx.send(Err(e));
                            break;
                        }
                    };
                    let end = chunk.lines.is_empty();
                    let events = chunk
                        .lines
                        .iter()
                        .map(|(n, r)| (*n, Event::parse(&chunk.text[r.clone()])))
                        .collect();
                    if parsed_tx.send(Ok(Parsed { events, lines })).is_err() || end {
                        break;
                    }
                }
            })?;
        loop {
            let parsed = parsed_rx.recv().map_err(|_| stopped())??;
            summary.lines = parsed.lines;
            if parsed.events.is_empty() {
                break;
            }
            let events = &parsed.events;
            for (i, (n, ev)) in events.iter().enumerate() {
                // The next events' cases are fetched while this one is applied.
                engine.prefetch(|k| {
                    events
                        .get(i + k)
                        .and_then(|(_, ev)| ev.as_ref().ok())
                        .map(|ev| ev.subject.as_str())
                });
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        summary.rejected += 1;
                        writeln!(err, "line {n}: rejected: {e}")?;
                        continue;
                    }
                };
                alerts.clear();
                engine.advance_before_event(ev, usize::MAX, &mut alerts);
                let applied = engine.apply(ev, &mut alerts);
                write_alerts(&mut out, &alerts)?;
                summary.alerts += alerts.len() as u64;
                match applied {
                    Ok(applied) => {
                        summary.events += 1;
                        if applied == crate::engine::Applied::UnknownType {
                            summary.unknown += 1;
                            let kind = ev.kind_shown();
                            if let Some(n) = unknown.get_mut(kind) {
                                *n += 1;
                            } else if unknown.len() < UNKNOWN_TYPES_KEPT {
                                unknown.insert(kind.to_string(), 1);
                            }
                        }
                    }
                    Err(e) => {
                        summary.rejected += 1;
                        writeln!(err, "line {n}: rejected: {e}")?;
                    }
                }
            }
            // Freed on the parser's thread; if it has stopped, here.
            let _ = spent_tx.send(parsed);
        }
        Ok(())
    })?;
    // What the clock has passed fires: a late event's deadlines wait for the clock to be
    // driven again (`Engine::apply`), and the last lines may have been late.
    alerts.clear();
    engine.advance_before(engine.now(), &mut alerts);
    if let Some(until) = until {
        engine.advance(until, &mut alerts);
    }
    write_alerts(&mut out, &alerts)?;
    summary.alerts += alerts.len() as u64;
    out.flush()?;
    if summary.unknown > 0 {
        // Not an error (a producer may send types no rule watches), but a misspelt type
        // starts and stops nothing: say which, once, at the end.
        let mut types: Vec<(&String, &u64)> = unknown.iter().collect();
        types.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let named: Vec<String> = types
            .iter()
            .take(UNKNOWN_TYPES_NAMED)
            .map(|(t, n)| format!("`{t}` ({n})"))
            .collect();
        let more = if types.len() > UNKNOWN_TYPES_NAMED {
            ", and others"
        } else {
            ""
        };
        writeln!(
            err,
            "ignored {} event(s) of types no rule pack names: {}{more}",
            summary.unknown,
            named.join(", ")
        )?;
    }
    Ok(summary)
}

/// How many lines `replay` hands its parser at a time.
const REPLAY_CHUNK: usize = 1024;

/// Lines read for the parser: the non-empty ones, trimmed, with their line numbers.
struct LineChunk {
    text: Vec<u8>,
    lines: Vec<(u64, std::ops::Range<usize>)>,
}

/// A chunk's events (or why each line is not one) with their line numbers, and how many
/// lines had been read by its end. No events: the input has ended.
struct Parsed {
    events: Vec<(u64, Result<Event, crate::event::EventError>)>,
    lines: u64,
}

/// Reads up to [`REPLAY_CHUNK`] non-empty lines, counting every line read in `lines`; no
/// lines: the input has ended.
fn read_chunk(input: &mut impl BufRead, lines: &mut u64) -> io::Result<LineChunk> {
    let mut chunk = LineChunk {
        text: Vec::with_capacity(REPLAY_CHUNK * 256),
        lines: Vec::with_capacity(REPLAY_CHUNK),
    };
    while chunk.lines.len() < REPLAY_CHUNK {
        let start = chunk.text.len();
        if input.read_until(b'\n', &mut chunk.text)? == 0 {
            break;
        }
        *lines += 1;
        let line = &chunk.text[start..];
        let from = start + line.len() - line.trim_ascii_start().len();
        let to = from + line.trim_ascii().len();
        if from == to {
            chunk.text.truncate(start);
            continue;
        }
        chunk.lines.push((*lines, from..to));
    }
    Ok(chunk)
}

fn write_alerts(out: &mut impl Write, alerts: &[Alert]) -> io::Result<()> {
    for a in alerts {
        serde_json::to_writer(&mut *out, a)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// An error as the command line prints it: the message, then each cause the message does
/// not already say. Most of our errors name their cause in their own text (`cannot read
/// calendar data …: No such file or directory`) and keep it as their source too, so
/// anyhow's `{:#}`, which prints every cause after its error, said it twice or three times.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// `redlight calendar list`: one line per date, `YYYY-MM-DD<TAB>kind`. A range that ends
/// before it starts is an error saying so, not an empty list (a script would take that for
/// "no days").
pub fn calendar_list(
    cal: &Calendar,
    from: NaiveDate,
    to: NaiveDate,
    mut out: impl Write,
) -> anyhow::Result<()> {
    if to < from {
        anyhow::bail!("--to {to} is before --from {from}");
    }
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

/// `redlight calendar import FILE`: the year's calendar file from its notice's text on
/// standard output (see `src/calendar_notice.rs`); days of another year named on standard
/// error. Exit 2 with every problem, each naming the file, when it does not read.
pub fn calendar_import(file: &Path) -> anyhow::Result<std::process::ExitCode> {
    let text = if file == Path::new("-") {
        io::read_to_string(io::stdin())
            .map_err(|e| anyhow::anyhow!("reading standard input: {e}"))?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?
    };
    match crate::calendar_notice::parse(&text) {
        Ok(notice) => {
            for (day, item, what) in &notice.elsewhere {
                eprintln!(
                    "{}: {day} ({item}, {what}) is in {}: put it in {}.toml",
                    file.display(),
                    day.year(),
                    day.year()
                );
            }
            print!("{}", crate::calendar_notice::to_toml(&notice));
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(problems) => {
            for p in problems {
                eprintln!("{}: {p}", file.display());
            }
            Ok(std::process::ExitCode::from(2))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_says_each_cause_once() {
        let missing = || io::Error::new(io::ErrorKind::NotFound, "No such file or directory");
        let calendar = crate::calendar::CalendarError::Io {
            path: "/srv/nocal".into(),
            source: missing(),
        };
        // The calendar error names the I/O error and keeps it as its source; the
        // configuration error wraps it, saying only it.
        let e = anyhow::Error::new(ConfigError::Calendar(calendar));
        assert_eq!(
            error_text(&e),
            "cannot read calendar data /srv/nocal: No such file or directory"
        );
        // A context that does not say its cause is followed by it.
        let e = anyhow::Error::new(missing()).context("reading the alert log");
        assert_eq!(
            error_text(&e),
            "reading the alert log: No such file or directory"
        );
    }

    /// `check` passes the shipped configuration on any day: it warns from 60 days before
    /// the calendar data ends, and after the end says what waits, without failing (exit 0).
    #[test]
    fn the_calendar_data_ending_is_a_warning_of_check_never_a_problem() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = root.join("config/redlight.toml");
        let config = crate::config::Config::load(&path).expect("config");
        let last = config.load_calendar().expect("calendar").last_day();
        let day = |n: i64| last + chrono::Duration::days(n);

        let early = check(&path, Some(day(-CALENDAR_WARN_DAYS - 1)));
        assert!(early.problems.is_empty(), "{:?}", early.problems);
        assert!(early.warnings.is_empty(), "{:?}", early.warnings);

        let ending = check(&path, Some(day(-3)));
        assert!(ending.problems.is_empty(), "{:?}", ending.problems);
        assert!(
            ending.warnings.len() == 1
                && ending.warnings[0].contains(&format!("calendar data ends on {last}, in 3 days")),
            "{:?}",
            ending.warnings
        );

        for after in [1, 400] {
            let ended = check(&path, Some(day(after)));
            assert!(ended.problems.is_empty(), "{:?}", ended.problems);
            assert!(ended.summary.starts_with("ok: "), "{}", ended.summary);
            assert!(
                ended
                    .summary
                    .ends_with("; no receiver: alerts are kept and shown, sent nowhere"),
                "{}",
                ended.summary
            );
            let next = chrono::Datelike::year(&day(1));
            assert!(
                ended.warnings.len() == 1
                    && ended.warnings[0].contains(&format!("calendar data ended on {last}"))
                    && ended.warnings[0].contains(&format!("notice for {next} is added")),
                "{:?}",
                ended.warnings
            );
        }
    }

    /// A rule with `enabled = false` passes `check` with a warning saying what a daemon
    /// holding cases does with it, and the summary counts it apart.
    #[test]
    fn a_disabled_rule_is_a_warning_of_check() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let dir =
            std::env::temp_dir().join(format!("redlight-check-disabled-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rules")).expect("dir");
        std::fs::create_dir_all(dir.join("calendars")).expect("dir");
        for sub in ["rules", "calendars"] {
            for entry in std::fs::read_dir(root.join(sub)).expect("read") {
                let path = entry.expect("entry").path();
                let text = std::fs::read_to_string(&path).expect("file");
                let text = text.replace(
                    "id = \"xk.decision\"\n",
                    "id = \"xk.decision\"\nenabled = false\n",
                );
                let name = path.file_name().expect("name");
                std::fs::write(dir.join(sub).join(name), text).expect("copy");
            }
        }
        let config = std::fs::read_to_string(root.join("redlight.toml")).expect("config");
        std::fs::write(dir.join("redlight.toml"), config).expect("config");
        let last = crate::config::Config::load(&root.join("redlight.toml"))
            .expect("config")
            .load_calendar()
            .expect("calendar")
            .last_day();
        let early = Some(last - chrono::Duration::days(CALENDAR_WARN_DAYS + 1));
        let shipped = check(&root.join("redlight.toml"), early);
        let report = check(&dir.join("redlight.toml"), early);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(
            report.warnings.len() == 1
                && report.warnings[0].contains("rule `xk.decision` has `enabled = false`")
                && report.warnings[0].contains("for good"),
            "{:?}",
            report.warnings
        );
        assert!(shipped.warnings.is_empty(), "{:?}", shipped.warnings);
        let rules = |summary: &str| -> usize {
            let words: Vec<&str> = summary.split(' ').collect();
            let at = words
                .iter()
                .position(|w| w.starts_with("rules"))
                .expect("rules");
            words[at - 1].parse().expect("a count")
        };
        assert_eq!(
            rules(&report.summary),
            rules(&shipped.summary) - 1,
            "{}",
            report.summary
        );
        assert!(
            report.summary.contains("(1 more disabled)"),
            "{}",
            report.summary
        );
    }

    /// A range lists every day in it with its kind; a range the wrong way round is an
    /// error naming both ends, not an empty list.
    #[test]
    fn calendar_list_lists_a_range_and_refuses_one_backwards() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config =
            crate::config::Config::load(&root.join("config/redlight.toml")).expect("config");
        let cal = config.load_calendar().expect("calendar");
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        let mut out = Vec::new();
        calendar_list(&cal, day("2026-10-09"), day("2026-10-10"), &mut out).expect("listed");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "2026-10-09\tworkday\n2026-10-10\tmakeup\n"
        );
        let mut out = Vec::new();
        let err = calendar_list(&cal, day("2026-12-30"), day("2026-12-28"), &mut out)
            .expect_err("backwards");
        assert_eq!(
            err.to_string(),
            "--to 2026-12-28 is before --from 2026-12-30"
        );
        assert!(out.is_empty());
    }

    /// The unknown types are named once, at the end, the most frequent first (ties by
    /// name), ten at most; a known type is not among them.
    #[test]
    fn unknown_types_are_named_once_at_the_end() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config =
            crate::config::Config::load(&root.join("config/redlight.toml")).expect("config");
        let mut engine = config.build_engine().expect("engine");
        let mut input = String::new();
        let mut n = 0;
        for (k, count) in (0..12).map(|k| (k, if k < 2 { 3 } else { 1 })) {
            for _ in 0..count {
                n += 1;
                input.push_str(&format!(
                    r#"{{"specversion":"1.0","id":"e{n}","source":"/t","type":"x.t{k:02}","time":"2026-11-02T10:00:00+08:00","subject":"C{n}","data":{{}}}}"#
                ));
                input.push('\n');
            }
        }
        input.push_str(r#"{"specversion":"1.0","id":"ok","source":"/t","type":"approval.accepted","time":"2026-11-02T10:00:00+08:00","subject":"K","data":{}}"#);
        input.push('\n');
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let summary =
            replay(&mut engine, input.as_bytes(), None, &mut out, &mut err).expect("replayed");
        assert_eq!((summary.events, summary.unknown), (17, 16));
        assert_eq!(
            String::from_utf8(err).expect("utf-8"),
            "ignored 16 event(s) of types no rule pack names: `x.t00` (3), `x.t01` (3), \
             `x.t02` (1), `x.t03` (1), `x.t04` (1), `x.t05` (1), `x.t06` (1), `x.t07` (1), \
             `x.t08` (1), `x.t09` (1), and others\n"
        );
    }

    #[test]
    fn trims_whitespace_and_crlf() {
        let mut lines = 0;
        let chunk = read_chunk(&mut b"  {}\r\n\n \t\r\n[1]".as_slice(), &mut lines).expect("read");
        let texts: Vec<(u64, &[u8])> = chunk
            .lines
            .iter()
            .map(|(n, r)| (*n, &chunk.text[r.clone()]))
            .collect();
        assert_eq!(texts, [(1, b"{}".as_slice()), (4, b"[1]".as_slice())]);
        assert_eq!(lines, 4, "blank lines are counted");
        let end = read_chunk(&mut b"".as_slice(), &mut lines).expect("read");
        assert!(end.lines.is_empty());
        assert_eq!(lines, 4);
    }

    #[test]
    fn a_long_replay_reports_bad_lines_by_number_in_order() {
        // Several chunks of the parser thread: bad, blank and CRLF lines among them.
        let mut input = String::new();
        let (mut bad, mut good) = (Vec::new(), 0u64);
        for n in 1..=2_600u64 {
            if n % 300 == 0 {
                input.push_str("   \n");
            } else if n % 500 == 7 {
                input.push_str("{not json\n");
                bad.push(n);
            } else {
                input.push_str(&format!(
                    r#"{{"specversion":"1.0","id":"e{n}","source":"/t","type":"approval.accepted","time":"2026-11-02T09:00:00+08:00","subject":"C{n}","data":{{"kind":"promised","promised_workdays":5}}}}"#
                ));
                input.push_str(if n % 2 == 0 { "\r\n" } else { "\n" });
                good += 1;
            }
        }
        let config = Config::load(Path::new("config/redlight.toml")).expect("config");
        let mut engine = config.build_engine().expect("engine");
        let mut err = Vec::new();
        let s = replay(&mut engine, input.as_bytes(), None, io::sink(), &mut err).expect("replay");
        assert_eq!(
            (s.lines, s.events, s.rejected),
            (2_600, good, bad.len() as u64)
        );
        let reported: Vec<u64> = String::from_utf8(err)
            .expect("utf-8")
            .lines()
            .map(|l| {
                l.strip_prefix("line ")
                    .and_then(|r| r.split(':').next())
                    .and_then(|n| n.parse().ok())
                    .expect("a line number")
            })
            .collect();
        assert_eq!(reported, bad);
        assert_eq!(engine.case_count() as u64, good);
    }

    #[test]
    fn a_read_error_ends_the_replay_with_that_error_after_the_lines_before_it() {
        // Lines are read on the parser's thread: its error must reach the caller.
        let mut good = String::new();
        for n in 1..=1_500u64 {
            good.push_str(&format!(
                r#"{{"specversion":"1.0","id":"e{n}","source":"/t","type":"approval.accepted","time":"2026-11-02T09:00:00+08:00","subject":"C{n}","data":{{"kind":"promised","promised_workdays":5}}}}"#
            ));
            good.push('\n');
        }
        struct Failing;
        impl io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk read failed at byte 42"))
            }
        }
        let input = io::BufReader::new(io::Read::chain(good.as_bytes(), Failing));
        let config = Config::load(Path::new("config/redlight.toml")).expect("config");
        let mut engine = config.build_engine().expect("engine");
        let e = replay(&mut engine, input, None, io::sink(), io::sink()).expect_err("error");
        assert_eq!(e.to_string(), "disk read failed at byte 42");
        // The first chunk (1,024 lines) was applied before the failing read.
        assert_eq!(engine.case_count(), REPLAY_CHUNK);
    }
}
