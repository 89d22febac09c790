//! The PRC working calendar (SPEC §3, "How time is counted").
//!
//! Monday–Friday are workdays unless a State Council notice
//! (国务院办公厅关于…部分节假日安排的通知) lists them as days off; Saturday and Sunday are off
//! unless the notice lists them as make-up workdays (调休上班). The arrangement of each year ships
//! as one TOML file in `config/calendars/`:
//!
//! ```toml
//! # 国务院办公厅关于2026年部分节假日安排的通知（国办发明电〔2025〕7号）
//! year = 2026
//! notice = "国务院办公厅关于2026年部分节假日安排的通知（国办发明电〔2025〕7号）"
//!
//! [[holiday]]
//! name = "国庆节"
//! off = ["2026-10-01..2026-10-07"]        # single dates or inclusive ranges "A..B"
//! workdays = ["2026-09-20", "2026-10-10"]  # make-up workdays, each on a Saturday or Sunday
//! ```
//!
//! Every date in a file must fall in that file's year (a holiday that straddles New Year is split
//! between the two files), and the years loaded must be contiguous. Dates outside the loaded
//! years are never guessed: every query about them returns [`CalendarError::NoData`].
//!
//! Once built, a [`Calendar`] answers every query in O(1) without allocating: it keeps one
//! [`DayKind`] per day, the prefix count of workdays, and the list of workday indexes. A *day
//! index* is the number of days since 1970-01-01 (see [`day_index`]).

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

/// Errors from loading calendar data or from querying a day outside it.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    /// A calendar file or directory could not be read.
    #[error("cannot read calendar data {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The calendar directory holds no `*.toml` file.
    #[error("no calendar files (*.toml) in {dir}")]
    NoFiles { dir: PathBuf },
    /// [`Calendar::from_sources`] was given no source at all.
    #[error("no calendar sources given")]
    NoSources,
    /// A file is not valid TOML or does not have the calendar file's shape.
    #[error("{path}: invalid calendar file: {message}")]
    Toml { path: PathBuf, message: String },
    /// A required top-level key (`year`, `notice`) is missing or empty.
    #[error("{path}: missing `{field}`")]
    MissingField { path: PathBuf, field: &'static str },
    /// `year` is not a usable year.
    #[error("{path}: year {year} is out of range (expected 1900..=9999)")]
    BadYear { path: PathBuf, year: i64 },
    /// A date string is not `YYYY-MM-DD` (or `A..B` for `off`), names no real day, or a range
    /// ends before it starts.
    #[error("{path}: holiday `{holiday}`: bad date {value:?}: {reason}")]
    BadDate {
        path: PathBuf,
        holiday: String,
        value: String,
        reason: String,
    },
    /// A date lies outside the year the file is for.
    #[error("{path}: holiday `{holiday}`: {what} {date} is outside the file's year {year}")]
    DateOutsideYear {
        path: PathBuf,
        holiday: String,
        what: &'static str,
        date: NaiveDate,
        year: i32,
    },
    /// A make-up workday falls on Monday–Friday.
    #[error(
        "{path}: holiday `{holiday}`: make-up workday {date} is a {weekday}, not a Saturday or Sunday"
    )]
    MakeupNotWeekend {
        path: PathBuf,
        holiday: String,
        date: NaiveDate,
        weekday: Weekday,
    },
    /// The same date is listed both as a day off and as a make-up workday.
    #[error("{path}: {date} is listed both as a day off and as a make-up workday")]
    OffAndMakeup { path: PathBuf, date: NaiveDate },
    /// Two files are for the same year.
    #[error("duplicate calendar year {year}: {first} and {second}")]
    DuplicateYear {
        year: i32,
        first: PathBuf,
        second: PathBuf,
    },
    /// The years loaded are not contiguous.
    #[error(
        "gap between calendar years: {before} ({before_file}) is followed by {after} ({after_file}); no data for {missing_from}..={missing_to}"
    )]
    YearGap {
        before: i32,
        before_file: PathBuf,
        after: i32,
        after_file: PathBuf,
        missing_from: i32,
        missing_to: i32,
    },
    /// A query needs a day that the data does not cover.
    #[error("no calendar data for {date} (year {year}); data covers {first}..={last}")]
    NoData {
        date: NaiveDate,
        year: i32,
        first: NaiveDate,
        last: NaiveDate,
    },
}

/// What kind of day a date is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DayKind {
    /// Monday–Friday, not a holiday.
    Workday,
    /// Saturday or Sunday, neither a holiday nor a make-up workday.
    Weekend,
    /// A day off listed by the notice (it may fall on a weekend).
    Holiday,
    /// A Saturday or Sunday that the notice makes a workday (调休上班).
    MakeupWorkday,
}

impl DayKind {
    /// Whether work is done on this kind of day (`Workday` or `MakeupWorkday`).
    pub fn is_workday(self) -> bool {
        matches!(self, DayKind::Workday | DayKind::MakeupWorkday)
    }

    /// The word used by `redlight calendar list`: `workday`, `weekend`, `holiday` or `makeup`.
    pub fn as_str(self) -> &'static str {
        match self {
            DayKind::Workday => "workday",
            DayKind::Weekend => "weekend",
            DayKind::Holiday => "holiday",
            DayKind::MakeupWorkday => "makeup",
        }
    }
}

impl fmt::Display for DayKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One loaded year: its notice and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YearInfo {
    pub year: i32,
    pub notice: String,
    pub file: PathBuf,
}

/// The working calendar over a contiguous range of years. Immutable once built.
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: Tz,
    years: Vec<YearInfo>,
    first: NaiveDate,
    last: NaiveDate,
    /// Day index of `first`.
    first_idx: i64,
    /// `kinds[i]` is the kind of day `first_idx + i`.
    kinds: Vec<DayKind>,
    /// `prefix[i]` is the number of workdays among days `first_idx .. first_idx + i`;
    /// `kinds.len() + 1` entries.
    prefix: Vec<u32>,
    /// Day indexes of all workdays, ascending.
    workdays: Vec<i64>,
}

/// 1970-01-01 as days from the common era (`NaiveDate::num_days_from_ce`).
const EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// The day index of `d`: days since 1970-01-01.
pub fn day_index(d: NaiveDate) -> i64 {
    i64::from(d.num_days_from_ce()) - EPOCH_DAYS_FROM_CE
}

/// The date of a day index, or `None` when it is outside chrono's range.
pub fn date_from_index(day: i64) -> Option<NaiveDate> {
    let ce = day.checked_add(EPOCH_DAYS_FROM_CE)?;
    NaiveDate::from_num_days_from_ce_opt(i32::try_from(ce).ok()?)
}

/// The date of a day index, clamped to chrono's range (for error messages only).
fn date_from_index_saturating(day: i64) -> NaiveDate {
    date_from_index(day).unwrap_or(if day < 0 {
        NaiveDate::MIN
    } else {
        NaiveDate::MAX
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    year: Option<i64>,
    notice: Option<String>,
    #[serde(default)]
    holiday: Vec<RawHoliday>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHoliday {
    name: String,
    #[serde(default)]
    off: Vec<String>,
    #[serde(default)]
    workdays: Vec<String>,
}

/// One parsed and checked file.
struct YearData {
    info: YearInfo,
    off: Vec<NaiveDate>,
    makeup: Vec<NaiveDate>,
}

/// Parses a strict `YYYY-MM-DD`.
fn parse_date(s: &str) -> Result<NaiveDate, String> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return Err("expected YYYY-MM-DD".to_string());
    }
    let num = |r: std::ops::Range<usize>| -> u32 {
        b[r].iter().fold(0, |acc, c| acc * 10 + u32::from(c - b'0'))
    };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    // y < 10000, so it always fits an i32.
    let y = i32::try_from(y).map_err(|_| "year out of range".to_string())?;
    NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| "no such day".to_string())
}

fn parse_file(path: &Path, text: &str) -> Result<YearData, CalendarError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| CalendarError::Toml {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let year = raw.year.ok_or_else(|| CalendarError::MissingField {
        path: path.to_path_buf(),
        field: "year",
    })?;
    let year = match i32::try_from(year) {
        Ok(y) if (1900..=9999).contains(&y) => y,
        _ => {
            return Err(CalendarError::BadYear {
                path: path.to_path_buf(),
                year,
            });
        }
    };
    let notice = match raw.notice {
        Some(n) if !n.trim().is_empty() => n,
        _ => {
            return Err(CalendarError::MissingField {
                path: path.to_path_buf(),
                field: "notice",
            });
        }
    };

    let mut off = Vec::new();
    let mut makeup = Vec::new();
    for h in &raw.holiday {
        let bad = |value: &str, reason: String| CalendarError::BadDate {
            path: path.to_path_buf(),
            holiday: h.name.clone(),
            value: value.to_string(),
            reason,
        };
        let in_year = |date: NaiveDate, what: &'static str| {
            if date.year() == year {
                Ok(date)
            } else {
                Err(CalendarError::DateOutsideYear {
                    path: path.to_path_buf(),
                    holiday: h.name.clone(),
                    what,
                    date,
                    year,
                })
            }
        };
        for entry in &h.off {
            if let Some((a, b)) = entry.split_once("..") {
                let start = parse_date(a).map_err(|r| bad(entry, r))?;
                let end = parse_date(b).map_err(|r| bad(entry, r))?;
                if end < start {
                    return Err(bad(entry, "range ends before it starts".to_string()));
                }
                let start = in_year(start, "day off")?;
                let end = in_year(end, "day off")?;
                off.extend(start.iter_days().take_while(|d| *d <= end));
            } else {
                let d = parse_date(entry).map_err(|r| bad(entry, r))?;
                off.push(in_year(d, "day off")?);
            }
        }
        for entry in &h.workdays {
            let d = parse_date(entry).map_err(|r| {
                if entry.contains("..") {
                    bad(entry, "make-up workdays must be single dates".to_string())
                } else {
                    bad(entry, r)
                }
            })?;
            let d = in_year(d, "make-up workday")?;
            let weekday = d.weekday();
            if !matches!(weekday, Weekday::Sat | Weekday::Sun) {
                return Err(CalendarError::MakeupNotWeekend {
                    path: path.to_path_buf(),
                    holiday: h.name.clone(),
                    date: d,
                    weekday,
                });
            }
            makeup.push(d);
        }
    }
    Ok(YearData {
        info: YearInfo {
            year,
            notice,
            file: path.to_path_buf(),
        },
        off,
        makeup,
    })
}

impl Calendar {
    /// Loads every `*.toml` in `dir` (in file-name order); years must be contiguous.
    pub fn load_dir(dir: &Path, tz: Tz) -> Result<Calendar, CalendarError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CalendarError::Io { path, source }
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(CalendarError::NoFiles {
                dir: dir.to_path_buf(),
            });
        }
        files.sort();
        let mut sources = Vec::with_capacity(files.len());
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            sources.push((path, text));
        }
        Calendar::from_sources(&sources, tz)
    }

    /// Builds a calendar from file texts, one `(path, text)` per year; the path is used only in
    /// messages. Used by [`Calendar::load_dir`] and by tests.
    pub fn from_sources(sources: &[(PathBuf, String)], tz: Tz) -> Result<Calendar, CalendarError> {
        let mut data = Vec::with_capacity(sources.len());
        for (path, text) in sources {
            data.push(parse_file(path, text)?);
        }
        data.sort_by_key(|y| y.info.year);
        for pair in data.windows(2) {
            let (a, b) = (&pair[0].info, &pair[1].info);
            if a.year == b.year {
                return Err(CalendarError::DuplicateYear {
                    year: a.year,
                    first: a.file.clone(),
                    second: b.file.clone(),
                });
            }
            if b.year != a.year + 1 {
                return Err(CalendarError::YearGap {
                    before: a.year,
                    before_file: a.file.clone(),
                    after: b.year,
                    after_file: b.file.clone(),
                    missing_from: a.year + 1,
                    missing_to: b.year - 1,
                });
            }
        }
        let (Some(first_year), Some(last_year)) = (data.first(), data.last()) else {
            return Err(CalendarError::NoSources);
        };
        // Years are in 1900..=9999, so these dates exist.
        let first = NaiveDate::from_ymd_opt(first_year.info.year, 1, 1).unwrap_or(NaiveDate::MIN);
        let last = NaiveDate::from_ymd_opt(last_year.info.year, 12, 31).unwrap_or(NaiveDate::MAX);
        let first_idx = day_index(first);
        let n_days = usize::try_from(day_index(last) - first_idx + 1).unwrap_or(0);

        let mut kinds: Vec<DayKind> = first
            .iter_days()
            .take(n_days)
            .map(|d| match d.weekday() {
                Weekday::Sat | Weekday::Sun => DayKind::Weekend,
                _ => DayKind::Workday,
            })
            .collect();
        let slot = |d: NaiveDate| usize::try_from(day_index(d) - first_idx).unwrap_or(usize::MAX);
        for y in &data {
            // Every date was checked to lie in its file's year, and each year has one file, so
            // the slots of one file are touched by that file only.
            for &d in &y.off {
                if let Some(k) = kinds.get_mut(slot(d)) {
                    *k = DayKind::Holiday;
                }
            }
            for &d in &y.makeup {
                if let Some(k) = kinds.get_mut(slot(d)) {
                    if *k == DayKind::Holiday {
                        return Err(CalendarError::OffAndMakeup {
                            path: y.info.file.clone(),
                            date: d,
                        });
                    }
                    *k = DayKind::MakeupWorkday;
                }
            }
        }

        let mut prefix = Vec::with_capacity(n_days + 1);
        let mut workdays = Vec::new();
        let mut count: u32 = 0;
        prefix.push(0);
        for (i, k) in kinds.iter().enumerate() {
            if k.is_workday() {
                // i < n_days, which is at most about 3.7 million.
                workdays.push(first_idx + i as i64);
                count += 1;
            }
            prefix.push(count);
        }

        Ok(Calendar {
            tz,
            years: data.into_iter().map(|y| y.info).collect(),
            first,
            last,
            first_idx,
            kinds,
            prefix,
            workdays,
        })
    }

    /// The time zone in which day boundaries fall.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// January 1 of the first year loaded.
    pub fn first_day(&self) -> NaiveDate {
        self.first
    }

    /// December 31 of the last year loaded.
    pub fn last_day(&self) -> NaiveDate {
        self.last
    }

    /// Day index of [`Calendar::first_day`].
    pub fn first_day_idx(&self) -> i64 {
        self.first_idx
    }

    /// Day index of [`Calendar::last_day`].
    pub fn last_day_idx(&self) -> i64 {
        self.first_idx + self.kinds.len() as i64 - 1
    }

    /// The years loaded, ascending.
    pub fn years(&self) -> &[YearInfo] {
        &self.years
    }

    fn no_data_idx(&self, day: i64) -> CalendarError {
        let date = date_from_index_saturating(day);
        CalendarError::NoData {
            date,
            year: date.year(),
            first: self.first,
            last: self.last,
        }
    }

    /// Offset of `day` into `kinds`, or `NoData`.
    #[inline]
    fn slot(&self, day: i64) -> Result<usize, CalendarError> {
        match day.checked_sub(self.first_idx) {
            Some(off) if off >= 0 && (off as u64) < self.kinds.len() as u64 => Ok(off as usize),
            _ => Err(self.no_data_idx(day)),
        }
    }

    /// The kind of day `d` is.
    pub fn day_kind(&self, d: NaiveDate) -> Result<DayKind, CalendarError> {
        Ok(self.kinds[self.slot(day_index(d))?])
    }

    /// Whether `d` is a workday (including make-up workdays).
    pub fn is_workday(&self, d: NaiveDate) -> Result<bool, CalendarError> {
        self.is_workday_idx(day_index(d))
    }

    /// `d` itself when it is a workday, else the next workday.
    pub fn workday_on_or_after(&self, d: NaiveDate) -> Result<NaiveDate, CalendarError> {
        let i = self.slot(day_index(d))?;
        // The first workday at or after `d` is the one whose prefix count is the count before `d`;
        // when there is none within the data this is NoData.
        let day = self.nth_workday_idx(u64::from(self.prefix[i]))?;
        Ok(date_from_index_saturating(day))
    }

    /// The `n`-th workday strictly after `d` (`n >= 1`); `n == 0` returns `d` (which must still
    /// be covered by the data).
    pub fn add_workdays(&self, d: NaiveDate, n: u32) -> Result<NaiveDate, CalendarError> {
        let i = self.slot(day_index(d))?;
        if n == 0 {
            return Ok(d);
        }
        let k = u64::from(self.prefix[i + 1]) + u64::from(n) - 1;
        let day = self.nth_workday_idx(k)?;
        Ok(date_from_index_saturating(day))
    }

    /// Whether day index `day` is a workday. O(1).
    #[inline]
    pub fn is_workday_idx(&self, day: i64) -> Result<bool, CalendarError> {
        Ok(self.kinds[self.slot(day)?].is_workday())
    }

    /// Number of workdays among day indexes `[first_day_idx, day)`: a prefix count, valid for
    /// `day` in `first..=last + 1`. O(1).
    #[inline]
    pub fn workdays_before_idx(&self, day: i64) -> Result<u64, CalendarError> {
        match day.checked_sub(self.first_idx) {
            Some(off) if off >= 0 && (off as u64) < self.prefix.len() as u64 => {
                Ok(u64::from(self.prefix[off as usize]))
            }
            _ => Err(self.no_data_idx(day)),
        }
    }

    /// The day index of the workday whose prefix count is `k`, i.e. the (k+1)-th workday of the
    /// data (0-based `k`). `NoData` (for the day after the data) when there is no such workday.
    /// O(1).
    #[inline]
    pub fn nth_workday_idx(&self, k: u64) -> Result<i64, CalendarError> {
        usize::try_from(k)
            .ok()
            .and_then(|k| self.workdays.get(k))
            .copied()
            .ok_or_else(|| self.no_data_idx(self.last_day_idx() + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn real() -> Calendar {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendars");
        Calendar::load_dir(&dir, chrono_tz::Asia::Shanghai).unwrap()
    }

    fn one(name: &str, text: &str) -> Result<Calendar, CalendarError> {
        Calendar::from_sources(
            &[(PathBuf::from(name), text.to_string())],
            chrono_tz::Asia::Shanghai,
        )
    }

    /// Asserts that building fails and that the message names `file`; returns the error.
    fn fails(sources: &[(&str, &str)], file: &str) -> CalendarError {
        let sources: Vec<(PathBuf, String)> = sources
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        let err = Calendar::from_sources(&sources, chrono_tz::Asia::Shanghai).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(file), "message {msg:?} does not name {file}");
        err
    }

    const MINIMAL: &str = "year = 2030\nnotice = \"test\"\n";

    #[test]
    fn real_data_loads_2020_through_2026() {
        let cal = real();
        assert_eq!(cal.first_day(), d("2020-01-01"));
        assert_eq!(cal.last_day(), d("2026-12-31"));
        let years: Vec<i32> = cal.years().iter().map(|y| y.year).collect();
        assert_eq!(years, (2020..=2026).collect::<Vec<_>>());
        for y in cal.years() {
            assert!(
                y.notice
                    .contains(&format!("关于{}年部分节假日安排的通知", y.year))
            );
            assert!(y.notice.contains("国办发明电〔"), "{}", y.notice);
            assert!(y.file.ends_with(format!("{}.toml", y.year)));
        }
        assert_eq!(cal.tz(), chrono_tz::Asia::Shanghai);
        assert_eq!(cal.first_day_idx(), day_index(d("2020-01-01")));
        assert_eq!(cal.last_day_idx(), day_index(d("2026-12-31")));
    }

    #[test]
    fn national_day_2026() {
        let cal = real();
        assert_eq!(
            cal.day_kind(d("2026-10-10")).unwrap(),
            DayKind::MakeupWorkday
        );
        assert_eq!(
            cal.day_kind(d("2026-09-20")).unwrap(),
            DayKind::MakeupWorkday
        );
        assert_eq!(cal.day_kind(d("2026-10-05")).unwrap(), DayKind::Holiday);
        assert_eq!(cal.day_kind(d("2026-10-03")).unwrap(), DayKind::Holiday); // a Saturday
        assert_eq!(cal.day_kind(d("2026-10-08")).unwrap(), DayKind::Workday);
        assert_eq!(cal.day_kind(d("2026-10-11")).unwrap(), DayKind::Weekend);
        assert!(cal.is_workday(d("2026-10-10")).unwrap());
        assert!(!cal.is_workday(d("2026-10-05")).unwrap());
        assert!(!cal.is_workday(d("2026-10-11")).unwrap());
    }

    #[test]
    fn spec_worked_example() {
        // Accepted 2026-09-28, 20 workdays: the 20th workday is 2026-10-30; yellow at 90% = 18.
        let cal = real();
        assert_eq!(
            cal.add_workdays(d("2026-09-28"), 20).unwrap(),
            d("2026-10-30")
        );
        assert_eq!(
            cal.add_workdays(d("2026-09-28"), 18).unwrap(),
            d("2026-10-28")
        );
        assert_eq!(
            cal.add_workdays(d("2026-09-28"), 1).unwrap(),
            d("2026-09-29")
        );
        assert_eq!(
            cal.add_workdays(d("2026-09-28"), 3).unwrap(),
            d("2026-10-08")
        );
        assert_eq!(
            cal.add_workdays(d("2026-09-28"), 0).unwrap(),
            d("2026-09-28")
        );
        // From a holiday, the first workday after is the next workday.
        assert_eq!(
            cal.add_workdays(d("2026-10-03"), 1).unwrap(),
            d("2026-10-08")
        );
    }

    #[test]
    fn workday_on_or_after_skips_holidays() {
        let cal = real();
        assert_eq!(
            cal.workday_on_or_after(d("2026-10-01")).unwrap(),
            d("2026-10-08")
        );
        assert_eq!(
            cal.workday_on_or_after(d("2026-10-07")).unwrap(),
            d("2026-10-08")
        );
        assert_eq!(
            cal.workday_on_or_after(d("2026-10-08")).unwrap(),
            d("2026-10-08")
        );
        assert_eq!(
            cal.workday_on_or_after(d("2026-10-10")).unwrap(),
            d("2026-10-10")
        );
        assert_eq!(
            cal.workday_on_or_after(d("2026-10-11")).unwrap(),
            d("2026-10-12")
        );
        // 2020: Spring Festival extended to 2020-02-02; 2020-02-01 is no longer a make-up day.
        assert_eq!(cal.day_kind(d("2020-02-01")).unwrap(), DayKind::Holiday);
        assert_eq!(
            cal.workday_on_or_after(d("2020-01-24")).unwrap(),
            d("2020-02-03")
        );
        // Across New Year: 2022-12-31 is part of the 2023 元旦 holiday.
        assert_eq!(cal.day_kind(d("2022-12-31")).unwrap(), DayKind::Holiday);
        assert_eq!(
            cal.workday_on_or_after(d("2022-12-31")).unwrap(),
            d("2023-01-03")
        );
    }

    #[test]
    fn no_data_outside_2020_2026() {
        let cal = real();
        for date in ["2019-12-31", "2027-01-01", "2019-06-01", "2027-06-01"] {
            let err = cal.day_kind(d(date)).unwrap_err();
            assert!(
                matches!(err, CalendarError::NoData { date: x, .. } if x == d(date)),
                "{err}"
            );
            let msg = err.to_string();
            assert!(msg.contains(date), "{msg}");
            assert!(msg.contains("2020-01-01..=2026-12-31"), "{msg}");
            assert!(cal.is_workday(d(date)).is_err());
            assert!(cal.workday_on_or_after(d(date)).is_err());
            assert!(cal.add_workdays(d(date), 0).is_err());
            assert!(cal.add_workdays(d(date), 1).is_err());
        }
        assert!(matches!(
            cal.day_kind(d("2019-01-01")).unwrap_err(),
            CalendarError::NoData { year: 2019, .. }
        ));
        // Results past the data are NoData too.
        assert!(matches!(
            cal.add_workdays(d("2026-12-30"), 5).unwrap_err(),
            CalendarError::NoData { year: 2027, .. }
        ));
        assert_eq!(
            cal.add_workdays(d("2026-12-30"), 1).unwrap(),
            d("2026-12-31")
        );
        assert!(cal.workday_on_or_after(d("2026-12-31")).is_ok());
        // Extreme indexes do not panic.
        assert!(cal.is_workday_idx(i64::MIN).is_err());
        assert!(cal.is_workday_idx(i64::MAX).is_err());
        assert!(cal.workdays_before_idx(i64::MAX).is_err());
        assert!(cal.nth_workday_idx(u64::MAX).is_err());
    }

    #[test]
    fn workdays_per_year_match_chinesecalendar() {
        // Counts computed with chinesecalendar 1.11.0.
        let cal = real();
        let expected = [
            (2020, 249),
            (2021, 250),
            (2022, 249),
            (2023, 249),
            (2024, 251),
            (2025, 248),
            (2026, 248),
        ];
        for (year, n) in expected {
            let a = day_index(d(&format!("{year}-01-01")));
            let b = day_index(d(&format!("{}-01-01", year + 1)));
            let got = cal.workdays_before_idx(b).unwrap() - cal.workdays_before_idx(a).unwrap();
            assert_eq!(got, n, "workdays in {year}");
        }
    }

    #[test]
    fn index_primitives_are_consistent() {
        let cal = real();
        let (a, b) = (cal.first_day_idx(), cal.last_day_idx());
        assert_eq!(cal.workdays_before_idx(a).unwrap(), 0);
        assert!(cal.workdays_before_idx(a - 1).is_err());
        assert!(cal.workdays_before_idx(b + 2).is_err());
        assert!(cal.is_workday_idx(b + 1).is_err());
        let mut count = 0u64;
        for day in a..=b {
            let date = date_from_index(day).unwrap();
            assert_eq!(day_index(date), day);
            assert_eq!(cal.workdays_before_idx(day).unwrap(), count);
            let kind = cal.day_kind(date).unwrap();
            let weekend = matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
            match kind {
                DayKind::Workday => assert!(!weekend, "{date}"),
                DayKind::Weekend | DayKind::MakeupWorkday => assert!(weekend, "{date}"),
                DayKind::Holiday => {}
            }
            assert_eq!(cal.is_workday_idx(day).unwrap(), kind.is_workday());
            if kind.is_workday() {
                assert_eq!(cal.nth_workday_idx(count).unwrap(), day);
                assert_eq!(cal.workday_on_or_after(date).unwrap(), date);
                count += 1;
            }
        }
        assert_eq!(cal.workdays_before_idx(b + 1).unwrap(), count);
        assert!(cal.nth_workday_idx(count).is_err());
        assert_eq!(cal.nth_workday_idx(count - 1).unwrap(), b); // 2026-12-31 is a Thursday
    }

    #[test]
    fn day_index_epoch() {
        assert_eq!(day_index(d("1970-01-01")), 0);
        let epoch = d("1970-01-01");
        let x = d("2026-09-28");
        assert_eq!(day_index(x), x.signed_duration_since(epoch).num_days());
        assert_eq!(date_from_index(-1), Some(d("1969-12-31")));
        assert_eq!(date_from_index(i64::MAX), None);
        assert_eq!(DayKind::MakeupWorkday.to_string(), "makeup");
    }

    #[test]
    fn minimal_sources() {
        let cal = one("2030.toml", MINIMAL).unwrap();
        assert_eq!(cal.day_kind(d("2030-01-01")).unwrap(), DayKind::Workday);
        assert_eq!(cal.day_kind(d("2030-01-05")).unwrap(), DayKind::Weekend);
        let two = Calendar::from_sources(
            &[
                (PathBuf::from("b.toml"), MINIMAL.replace("2030", "2031")),
                (PathBuf::from("a.toml"), MINIMAL.to_string()),
            ],
            chrono_tz::UTC,
        )
        .unwrap();
        assert_eq!(two.first_day(), d("2030-01-01"));
        assert_eq!(two.last_day(), d("2031-12-31"));
        assert_eq!(two.years()[0].file, PathBuf::from("a.toml"));
        assert_eq!(two.tz(), chrono_tz::UTC);
    }

    #[test]
    fn error_io() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-calendar-dir");
        let err = Calendar::load_dir(&dir, chrono_tz::Asia::Shanghai).unwrap_err();
        assert!(matches!(err, CalendarError::Io { .. }), "{err}");
        assert!(err.to_string().contains("no-such-calendar-dir"), "{err}");
    }

    #[test]
    fn error_no_files() {
        let dir = std::env::temp_dir().join(format!("redlight-cal-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("README.md"), "not a calendar").unwrap();
        let err = Calendar::load_dir(&dir, chrono_tz::Asia::Shanghai).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(err, CalendarError::NoFiles { .. }), "{err}");
        assert!(err.to_string().contains("redlight-cal-empty-"), "{err}");
        let err = Calendar::from_sources(&[], chrono_tz::UTC).unwrap_err();
        assert!(matches!(err, CalendarError::NoSources), "{err}");
    }

    #[test]
    fn error_toml() {
        let err = fails(&[("broken.toml", "year = = 2030")], "broken.toml");
        assert!(matches!(err, CalendarError::Toml { .. }), "{err}");
        let err = fails(
            &[(
                "typo.toml",
                "year = 2030\nnotice = \"x\"\n[[holiday]]\nname = \"a\"\nworkday = []\n",
            )],
            "typo.toml",
        );
        assert!(matches!(err, CalendarError::Toml { .. }), "{err}");
        assert!(err.to_string().contains("workday"), "{err}");
    }

    #[test]
    fn error_missing_year_and_notice() {
        let err = fails(&[("noyear.toml", "notice = \"x\"\n")], "noyear.toml");
        assert!(
            matches!(err, CalendarError::MissingField { field: "year", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("`year`"), "{err}");
        let err = fails(&[("nonotice.toml", "year = 2030\n")], "nonotice.toml");
        assert!(
            matches!(
                err,
                CalendarError::MissingField {
                    field: "notice",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn error_bad_year() {
        let err = fails(&[("y.toml", "year = 123456\nnotice = \"x\"\n")], "y.toml");
        assert!(
            matches!(err, CalendarError::BadYear { year: 123456, .. }),
            "{err}"
        );
    }

    #[test]
    fn error_bad_dates() {
        for value in [
            "2030-1-01",
            "2030/01/01",
            "2030-02-30",
            "2030-01-0x",
            "",
            "2030-01-05..2030-01-03",
            "2030-01-01..",
        ] {
            let text = format!(
                "{MINIMAL}[[holiday]]\nname = \"节\"\noff = [\"{value}\"]\nworkdays = []\n"
            );
            let err = fails(&[("bad.toml", &text)], "bad.toml");
            assert!(
                matches!(err, CalendarError::BadDate { .. }),
                "{value}: {err}"
            );
            assert!(err.to_string().contains("节"), "{err}");
        }
        let text = format!(
            "{MINIMAL}[[holiday]]\nname = \"节\"\nworkdays = [\"2030-01-05..2030-01-06\"]\n"
        );
        let err = fails(&[("range.toml", &text)], "range.toml");
        assert!(err.to_string().contains("single dates"), "{err}");
    }

    #[test]
    fn error_date_outside_year() {
        let text =
            format!("{MINIMAL}[[holiday]]\nname = \"元旦\"\noff = [\"2029-12-31..2030-01-01\"]\n");
        let err = fails(&[("2030.toml", &text)], "2030.toml");
        assert!(
            matches!(err, CalendarError::DateOutsideYear { year: 2030, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("2029-12-31"), "{err}");
        let text = format!("{MINIMAL}[[holiday]]\nname = \"春节\"\nworkdays = [\"2031-01-04\"]\n");
        let err = fails(&[("2030.toml", &text)], "2030.toml");
        assert!(
            matches!(err, CalendarError::DateOutsideYear { .. }),
            "{err}"
        );
    }

    #[test]
    fn error_makeup_not_weekend() {
        // 2030-01-07 is a Monday.
        let text = format!("{MINIMAL}[[holiday]]\nname = \"春节\"\nworkdays = [\"2030-01-07\"]\n");
        let err = fails(&[("mk.toml", &text)], "mk.toml");
        assert!(
            matches!(
                err,
                CalendarError::MakeupNotWeekend {
                    weekday: Weekday::Mon,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn error_off_and_makeup() {
        let text = format!(
            "{MINIMAL}[[holiday]]\nname = \"a\"\noff = [\"2030-01-05\"]\n[[holiday]]\nname = \"b\"\nworkdays = [\"2030-01-05\"]\n"
        );
        let err = fails(&[("both.toml", &text)], "both.toml");
        assert!(matches!(err, CalendarError::OffAndMakeup { .. }), "{err}");
    }

    #[test]
    fn error_duplicate_year() {
        let err = fails(&[("one.toml", MINIMAL), ("two.toml", MINIMAL)], "two.toml");
        assert!(
            matches!(err, CalendarError::DuplicateYear { year: 2030, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("one.toml"), "{err}");
    }

    #[test]
    fn error_year_gap() {
        let later = MINIMAL.replace("2030", "2033");
        let err = fails(
            &[("2030.toml", MINIMAL), ("2033.toml", &later)],
            "2033.toml",
        );
        assert!(
            matches!(
                err,
                CalendarError::YearGap {
                    missing_from: 2031,
                    missing_to: 2032,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("2030.toml"), "{err}");
    }

    #[test]
    fn error_no_data_message() {
        let cal = one("2030.toml", MINIMAL).unwrap();
        let err = cal.day_kind(d("2031-02-03")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no calendar data for 2031-02-03 (year 2031); data covers 2030-01-01..=2030-12-31"
        );
    }
}
