//! The alert of SPEC §4: the generic JSON body of a webhook and a line of `redlight replay`.

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// A light's colour. Green is the absence of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Yellow,
    Red,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

/// Why a light changed (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Yellow: the counted time reached the warning share.
    Approaching,
    /// Red: the clock ran out.
    Overdue,
    /// Red: a check or sequence broke, or a deadline rule's own condition (an extension over
    /// its cap, a promise over the statutory limit).
    Violation,
    /// Red: a periodic duty was not met in its period.
    Missing,
    /// Resolved: the clock stopped in time.
    Completed,
    /// Resolved: the clock stopped after its deadline; the breach stays on record.
    CompletedLate,
    /// Resolved: a stop that happened in time arrived late; the red was a false alarm.
    Retracted,
    /// Resolved: the applicant withdrew, every clock of the case stopped.
    Withdrawn,
}

impl Level {
    /// Its name, as serde writes it (alert JSON, stored alerts, labels, alert ids).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Yellow => "yellow",
            Level::Red => "red",
        }
    }
}

impl Status {
    /// Its name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

impl Reason {
    /// Its name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Approaching => "approaching",
            Reason::Overdue => "overdue",
            Reason::Violation => "violation",
            Reason::Missing => "missing",
            Reason::Completed => "completed",
            Reason::CompletedLate => "completed_late",
            Reason::Retracted => "retracted",
            Reason::Withdrawn => "withdrawn",
        }
    }
}

/// One light change. Field order is the wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Deterministic: see [`alert_id`].
    pub id: String,
    pub rule: Arc<str>,
    pub title: Arc<str>,
    pub basis: Arc<str>,
    pub case: Arc<str>,
    pub level: Level,
    pub status: Status,
    pub reason: Reason,
    /// When the light changed, on the engine's clock, in the configured time zone.
    pub at: String,
    /// The clock's deadline, where the rule has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deadline: Option<String>,
    /// What a violation or a missing period is about (the skipped stage, the period, …).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub department: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub item: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub handler: Option<String>,
}

/// The deterministic alert id: the same case, rule, occurrence (clock cycle, or the event or
/// period a violation is about), level and status always give the same id, so receivers can
/// drop duplicates and a replay reproduces a live run's ids. 128 bits of SHA-256, in hex.
pub fn alert_id(case: &str, rule: &str, occurrence: &str, level: Level, status: Status) -> String {
    let mut h = Sha256::new();
    for part in [case, rule, occurrence, level.as_str(), status.as_str()] {
        // Length-prefixed so that ("a|b","c") and ("a","b|c") cannot collide.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// Formats an engine instant (ms since the epoch) as RFC 3339 in the configured zone, with
/// seconds precision unless the instant has a fractional second.
///
/// Written out digit by digit: every alert carries one or two instants, and chrono's
/// general formatter took about 190 ns each. The output is chrono's
/// `to_rfc3339_opts(SecondsFormat::AutoSi, false)`, to which it falls back for what the
/// fast path does not cover (years outside 0–9999, offsets with seconds); a test compares
/// the two over many instants and zones.
///
/// RFC 3339 writes four-digit years: an instant whose date in the zone lies past 9999 (or
/// before year 0) is written in UTC when its date there has four digits. That is a "never"
/// a producer gave as `due`, `9999-12-31T23:59:59Z`, which is already 10000 in Beijing:
/// chrono writes `+10000-01-01T07:59:59+08:00`, which no RFC 3339 reader takes.
pub fn format_instant(ms: i64, tz: Tz) -> String {
    let utc: DateTime<Utc> = match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t,
        None => return ms.to_string(),
    };
    let local = utc.with_timezone(&tz).fixed_offset();
    let offset = local.offset().local_minus_utc();
    format_at_offset(ms, i64::from(offset) * 1000)
        .or_else(|| {
            (!(0..=9999).contains(&local.year()))
                .then(|| format_at_offset(ms, 0))
                .flatten()
        })
        .unwrap_or_else(|| local.to_rfc3339_opts(SecondsFormat::AutoSi, false))
}

/// [`format_instant`] at a UTC offset known already (in milliseconds); `None` where the fast
/// path does not reach (years outside 0–9999, an offset with seconds).
pub fn format_at_offset(ms: i64, offset_ms: i64) -> Option<String> {
    const DAY: i64 = 86_400_000;
    if offset_ms % 60_000 != 0 {
        return None;
    }
    let local = ms.checked_add(offset_ms)?;
    // Days from 0001-01-01 (day 1) to 1970-01-01: 719,163.
    let days = i32::try_from(local.div_euclid(DAY).checked_add(719_163)?).ok()?;
    let date = chrono::NaiveDate::from_num_days_from_ce_opt(days)?;
    if !(0..=9999).contains(&date.year()) {
        return None;
    }
    let of_day = local.rem_euclid(DAY);
    let (secs, millis) = ((of_day / 1000) as u32, (of_day % 1000) as u32);
    // "YYYY-MM-DDTHH:MM:SS.mmm+HH:MM": 29 bytes at most.
    let mut b = [0u8; 29];
    let mut at = 0;
    let mut put = |digits: usize, v: u32, sep: u8| {
        let mut v = v;
        for i in (0..digits).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        at += digits;
        if sep != 0 {
            b[at] = sep;
            at += 1;
        }
    };
    let sign = if offset_ms < 0 { b'-' } else { b'+' };
    let minutes = (offset_ms.unsigned_abs() / 60_000) as u32;
    put(4, date.year() as u32, b'-');
    put(2, date.month(), b'-');
    put(2, date.day(), b'T');
    put(2, secs / 3600, b':');
    put(2, secs / 60 % 60, b':');
    if millis != 0 {
        put(2, secs % 60, b'.');
        put(3, millis, sign);
    } else {
        put(2, secs % 60, sign);
    }
    put(2, minutes / 60, b':');
    put(2, minutes % 60, 0);
    // Digits and separators only: ASCII, valid UTF-8.
    String::from_utf8(b[..at].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_formatted_as_chrono_formats_them() {
        let zones = [
            "Asia/Shanghai",
            "UTC",
            "America/St_Johns",
            "Asia/Kathmandu",
            "Pacific/Chatham",
            "America/Los_Angeles",
            "Europe/Dublin",
        ];
        // From 1890 (Shanghai's local mean time, +08:05:43, is the fallback's) to 2100, in
        // uneven steps that land on every millisecond, second and minute value over time;
        // and the edges chrono still formats.
        let mut instants: Vec<i64> = (0..200_000i64)
            .map(|i| -2_524_608_000_000 + i * 33_134_567_891)
            .collect();
        instants.extend([
            0,
            -1,
            1,
            999,
            1000,
            -1000,
            1_793_376_000_000,
            1_793_375_999_999,
        ]);
        instants.extend([
            -62_167_219_200_000,
            -62_167_219_200_001,
            253_402_300_799_999,
        ]);
        instants.extend([253_402_300_800_000, i64::MIN, i64::MAX]);
        for zone in zones {
            let tz: Tz = zone.parse().expect("zone");
            for &ms in &instants {
                let want = match Utc.timestamp_millis_opt(ms).single() {
                    // Past 9999 in the zone and not in UTC: in UTC (see format_instant).
                    Some(t)
                        if !(0..=9999).contains(&t.with_timezone(&tz).year())
                            && (0..=9999).contains(&t.year()) =>
                    {
                        t.fixed_offset()
                            .to_rfc3339_opts(SecondsFormat::AutoSi, false)
                    }
                    Some(t) => t
                        .with_timezone(&tz)
                        .fixed_offset()
                        .to_rfc3339_opts(SecondsFormat::AutoSi, false),
                    None => ms.to_string(),
                };
                assert_eq!(format_instant(ms, tz), want, "{ms} in {zone}");
            }
        }
        let shanghai: Tz = "Asia/Shanghai".parse().expect("zone");
        assert_eq!(
            format_instant(1_793_376_000_000, shanghai),
            "2026-10-31T00:00:00+08:00"
        );
        assert_eq!(
            format_instant(1_793_376_000_123, shanghai),
            "2026-10-31T00:00:00.123+08:00"
        );
        // "Never" as producers write it: 10000-01-01 in Beijing, so written in UTC.
        assert_eq!(
            format_instant(253_402_300_799_000, shanghai),
            "9999-12-31T23:59:59+00:00"
        );
        assert_eq!(
            format_instant(253_402_271_999_000, shanghai),
            "9999-12-31T23:59:59+08:00"
        );
    }

    #[test]
    fn ids_are_deterministic_and_distinguish_every_part() {
        let a = alert_id("XZ-1", "xk.decision", "c1", Level::Red, Status::Firing);
        assert_eq!(
            a,
            alert_id("XZ-1", "xk.decision", "c1", Level::Red, Status::Firing)
        );
        assert_eq!(a.len(), 32);
        for other in [
            alert_id("XZ-2", "xk.decision", "c1", Level::Red, Status::Firing),
            alert_id("XZ-1", "xk.certificate", "c1", Level::Red, Status::Firing),
            alert_id("XZ-1", "xk.decision", "c2", Level::Red, Status::Firing),
            alert_id("XZ-1", "xk.decision", "c1", Level::Yellow, Status::Firing),
            alert_id("XZ-1", "xk.decision", "c1", Level::Red, Status::Resolved),
        ] {
            assert_ne!(a, other);
        }
    }

    /// Receivers drop duplicates by id and a replay must reproduce a live run's ids, so
    /// they may never change between versions: these are the first 128 bits of SHA-256
    /// over the length-prefixed parts, computed independently (Python's `hashlib`).
    #[test]
    fn ids_stay_what_they_were() {
        assert_eq!(
            alert_id("XZ-1", "xk.decision", "c1", Level::Red, Status::Firing),
            "3deb9ee57bdedfffe6e96cb1bcfa7476"
        );
        assert_eq!(
            alert_id(
                "XK-2026-10-0001",
                "xk.promised",
                "1@1793376000000",
                Level::Yellow,
                Status::Firing
            ),
            "bb9693cba193afca0e0baa753ba756bb"
        );
        assert_eq!(
            alert_id(
                "市场-第12号",
                "sc.report",
                "2026Q3#2",
                Level::Red,
                Status::Resolved
            ),
            "791fe25d514bd4076e6f0601230323b3"
        );
        // Parts longer than a SHA-256 block.
        assert_eq!(
            alert_id(
                &"C".repeat(300),
                "xk.decision",
                "c1",
                Level::Red,
                Status::Firing
            ),
            "61bd9d5057195ab5168b9a1fcd9a7721"
        );
    }

    #[test]
    fn instants_print_in_the_configured_zone() {
        // 2026-10-30T16:00:00Z is 24:00 of 2026-10-30 in Beijing.
        let ms = 1_793_376_000_000;
        assert_eq!(
            format_instant(ms, chrono_tz::Asia::Shanghai),
            "2026-10-31T00:00:00+08:00"
        );
    }
}
