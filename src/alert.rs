//! The alert of SPEC §4: the generic JSON body of a webhook and a line of `redlight replay`.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
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
    for part in [
        case,
        rule,
        occurrence,
        match level {
            Level::Yellow => "yellow",
            Level::Red => "red",
        },
        match status {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        },
    ] {
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
pub fn format_instant(ms: i64, tz: Tz) -> String {
    let utc: DateTime<Utc> = match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t,
        None => return ms.to_string(),
    };
    utc.with_timezone(&tz)
        .fixed_offset()
        .to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

#[cfg(test)]
mod tests {
    use super::*;

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
