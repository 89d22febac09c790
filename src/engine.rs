//! The engine: open cases, their clocks and lights, and the timer index (SPEC §4).
//!
//! A functional core: events and the time come in, alerts come out. [`Engine::apply`] takes
//! one event, [`Engine::advance`] moves the engine's clock and fires the timers that came
//! due. `replay` and the daemon drive the same engine, so whatever a test proves offline
//! holds live.
//!
//! Timers are not kept by hand: they are a function of each case's state (see
//! [`Case::timers`]). After every change to a case the engine pushes the timers the case
//! needs now that it did not need before, so a case loaded from the store brings its timers
//! back. The index maps each due instant to the timers due then (most deadlines fall at
//! midnight, so there are few distinct instants and many timers share one); a bucket is
//! sorted by case id hash, case id, rule and kind when it comes due, so advancing costs
//! the alerts it fires plus a logarithm, never a scan, and ties break the same way in every
//! run. Timers that a change made obsolete are not searched for and removed: when one comes
//! due it is checked against its case's current timers and dropped.

use crate::alert::{Alert, Level, Reason, Status, alert_id};
use crate::calendar::day_index;
use crate::calendar::{Calendar, CalendarError};
use crate::clock::{Counting, DAY, Span, Zone, fixed_yellow};
use crate::event::Event;
use crate::rules::{
    Condition, DeadlineRule, Handler, Limit, Matcher, Period, PeriodicRule, RuleKind, RuleSet,
    TypeInfo, Unit,
};
use arcstr::ArcStr;
use chrono::{Datelike, NaiveDate};
use compact_str::CompactString;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::hash_map::Entry;
use std::hash::Hasher;
use std::sync::Arc;

/// How long an inactive case (no running clock, no periodic duty) is kept for duplicate
/// detection and late events, by default.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

/// The most events a case takes, by default (`engine.max_events_per_case`). A real case has
/// a handful (an approval five or six, a market four reports a year); one that reaches this
/// many is fed by a producer in a loop, and every further event would grow what is stored
/// for the case at each batch (8 bytes an event id, kept for duplicate detection) and slow
/// its whole partition. Further events of the case are refused (dead letters in the daemon,
/// reported lines in `replay`): nothing is lost, and the case's lights stay as they were.
pub const DEFAULT_MAX_EVENTS_PER_CASE: u32 = 100_000;

/// An engine's settings beyond its rules and calendar (`[engine]` in the configuration),
/// for the owners that build one engine per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub retention_days: u32,
    pub max_events_per_case: u32,
}

/// The light of a clock or a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Light {
    Green,
    Yellow,
    Red,
}

/// How a clock's deadline is set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Mode {
    /// Counted time against a limit: pauses and extensions apply.
    Span(SpanState),
    /// A fixed instant (same workday, an absolute due time): pauses do not move it.
    Fixed { deadline: i64, warn_at: i64 },
}

/// [`Span`] in a serialisable form.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpanState {
    pub unit: Unit,
    pub origin: i64,
    pub limit: i64,
    pub warn_share: Option<f64>,
    pub warn_before: Option<(Unit, u32)>,
}

impl SpanState {
    fn span(&self) -> Span {
        Span {
            unit: self.unit,
            origin: self.origin,
            limit: self.limit,
            warn: match (self.warn_share, self.warn_before) {
                (_, Some((unit, amount))) => crate::rules::Warn::Before { unit, amount },
                (Some(s), None) => crate::rules::Warn::Share(s),
                (None, None) => crate::rules::Warn::Share(crate::rules::DEFAULT_WARN_SHARE),
            },
        }
    }
}

/// An optional instant (ms since the epoch) in 8 bytes, where `Option<i64>` takes 16: a
/// clock has six of them and a million cases have two million clocks. Serialised as the
/// `Option<i64>` it stands for (`null` or a number), so stored cases read the same.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OptMs(i64);

impl OptMs {
    /// No instant. `i64::MIN` ms is before any time an event can carry (RFC 3339 years
    /// start at 0000), so it cannot stand for a real instant.
    pub const NONE: OptMs = OptMs(i64::MIN);

    pub fn some(t: i64) -> OptMs {
        debug_assert!(t != i64::MIN);
        OptMs(t)
    }
    pub fn get(self) -> Option<i64> {
        (self.0 != i64::MIN).then_some(self.0)
    }
    pub fn is_some(self) -> bool {
        self.0 != i64::MIN
    }
    pub fn is_none(self) -> bool {
        self.0 == i64::MIN
    }
}

impl Default for OptMs {
    fn default() -> OptMs {
        OptMs::NONE
    }
}

impl From<Option<i64>> for OptMs {
    fn from(t: Option<i64>) -> OptMs {
        t.map_or(OptMs::NONE, OptMs::some)
    }
}

impl std::fmt::Debug for OptMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl Serialize for OptMs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for OptMs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OptMs, D::Error> {
        Option::<i64>::deserialize(d).map(OptMs::from)
    }
}

/// One legal clock of a case: one cycle of a deadline rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clock {
    pub rule: u16,
    /// 1 for the first time the rule's clock started in this case, 2 for the next …
    pub cycle: u32,
    /// The start event's time `S`.
    pub started: i64,
    pub mode: Mode,
    /// Units granted by extensions so far.
    pub extended: u32,
    /// Counted milliseconds accrued before `since` (span clocks).
    pub counted: i64,
    /// Running since this instant; `None` while paused or stopped.
    #[serde(default)]
    pub since: OptMs,
    /// When the current pause began.
    #[serde(default)]
    pub paused_at: OptMs,
    /// The current deadline and yellow instant; `None` while paused.
    #[serde(default)]
    pub deadline: OptMs,
    #[serde(default)]
    pub yellow_at: OptMs,
    /// The deadline as last known (kept while paused and after the stop, for the record).
    #[serde(default)]
    pub last_deadline: OptMs,
    pub yellow_fired: bool,
    pub red_fired: bool,
    /// When the stop event happened.
    #[serde(default)]
    pub stopped: OptMs,
    /// Stopped after its deadline: the breach stays on record for scorecards.
    pub late: bool,
    /// How many times a late-arriving event retracted this clock's yellow (the red's count
    /// is [`Clock::red_retractions`]). Stores before format 9 kept one count for both lights
    /// here, which is why the yellow's has the old field's name and place.
    #[serde(default, alias = "retractions")]
    pub yellow_retractions: u32,
    /// How many times a late-arriving event retracted this clock's red, or
    /// [`SAME_AS_YELLOW`] for a clock stored before format 9, whose one count was both
    /// lights' (read it with [`Clock::retractions`]).
    #[serde(default = "same_as_yellow")]
    pub red_retractions: u32,
}

/// [`Clock::red_retractions`] of a clock stored before format 9: the red's count is the
/// yellow's, as the one count then was both lights'. Read, that clock's lights keep the ids
/// they had.
pub const SAME_AS_YELLOW: u32 = u32::MAX;

fn same_as_yellow() -> u32 {
    SAME_AS_YELLOW
}

impl Clock {
    /// A light's occurrence as it enters its alert ids: the cycle number and the start
    /// instant, so that a case forgotten after its retention time and started again by a
    /// later event cannot reuse the ids of its first life.
    /// After a late event retracted the light it may fire again; the light's own count of
    /// retractions then gives those new alerts ids of their own, so receivers that drop
    /// duplicates do not drop them. The other light, not retracted, keeps its ids: they do not
    /// depend on the order the events were delivered in (SPEC §4).
    ///
    /// `{cycle}@{started}`, or `{cycle}@{started}#{retractions}`: written digit by digit into
    /// a string that holds it inline (every alert a clock raises computes one, and `format!`
    /// was 2% of the daemon's consumer loop).
    pub fn occurrence(&self, level: Level) -> CompactString {
        let mut digits = itoa::Buffer::new();
        let mut s = CompactString::const_new("");
        s.push_str(digits.format(self.cycle));
        s.push('@');
        s.push_str(digits.format(self.started));
        let retractions = self.retractions(level);
        if retractions != 0 {
            s.push('#');
            s.push_str(digits.format(retractions));
        }
        s
    }

    /// How many times a late event retracted the light.
    pub fn retractions(&self, level: Level) -> u32 {
        match level {
            Level::Red if self.red_retractions != SAME_AS_YELLOW => self.red_retractions,
            _ => self.yellow_retractions,
        }
    }

    /// Counts a retraction of the light.
    fn retracted(&mut self, level: Level) {
        // A clock stored before format 9 first gets a count of its own for its red.
        self.red_retractions = self.retractions(Level::Red);
        let count = match level {
            Level::Yellow => &mut self.yellow_retractions,
            Level::Red => &mut self.red_retractions,
        };
        *count = count.saturating_add(1).min(SAME_AS_YELLOW - 1);
    }

    pub fn active(&self) -> bool {
        self.stopped.is_none()
    }
    /// Running, but its deadline lies beyond the calendar data (next year's holiday notice
    /// is not out yet): it has no deadline until a restart with the data computes it (see
    /// [`Engine::restore`]). Its yellow instant is kept when the data reaches that far.
    pub fn deadline_pending(&self) -> bool {
        self.stopped.is_none() && self.since.is_some() && self.deadline.is_none()
    }
    /// Ran out before `t`: running with a deadline before `t`, or paused after its
    /// deadline had passed (the deadline it had is then `last_deadline`). Its breach is on
    /// record: a pause, resume or extension after that leaves the deadline where it was
    /// (docs/rules.md, "A clock that has run out stays run out"). At exactly the deadline it
    /// has not run out.
    pub fn ran_out_before(&self, t: i64) -> bool {
        match (self.since.get(), self.paused_at.get()) {
            (Some(_), _) => self.deadline.get().is_some_and(|d| d < t),
            (None, Some(p)) => self.last_deadline.get().is_some_and(|d| d < p && d < t),
            (None, None) => false,
        }
    }
    /// Whether an event at `t` came at or before the instant of this clock's yellow, and of
    /// its red (a running clock's deadline): timers fire strictly before an event's time, so
    /// a light that fired had then fired only because the event was delivered late. Asked
    /// before the event changes the clock.
    fn came_before_lights(&self, t: i64) -> (bool, bool) {
        (
            self.yellow_at.get().is_some_and(|y| t <= y),
            self.since.is_some() && self.deadline.get().is_some_and(|d| t <= d),
        )
    }
    pub fn light(&self) -> Light {
        if !self.active() {
            Light::Green
        } else if self.red_fired {
            Light::Red
        } else if self.yellow_fired {
            Light::Yellow
        } else {
            Light::Green
        }
    }
}

/// A case's clocks in the order they started: the first two inline in the case, the rest
/// in an allocation of exactly their number. Every event and every timer reads them, and a
/// separate allocation would be one more cache miss after the one for the case (a typical
/// approval case has two: the promised and the statutory limit). The third, when one
/// starts (the certificate after an approval), takes 136 bytes of its own where a vector
/// spilled as a whole took 448 (three clocks, in the allocator's next size class) and left
/// the 272 inline bytes unused: 288 bytes less for every approved case while it is held.
/// Serialised as the sequence of all of them, as before.
#[derive(Clone, PartialEq, Default)]
pub struct Clocks {
    /// At most two; the later ones go to `rest`.
    first: SmallVec<[Clock; 2]>,
    rest: Box<[Clock]>,
}

impl Clocks {
    pub fn len(&self) -> usize {
        self.first.len() + self.rest.len()
    }
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }
    pub fn iter(
        &self,
    ) -> std::iter::Chain<std::slice::Iter<'_, Clock>, std::slice::Iter<'_, Clock>> {
        self.first.iter().chain(self.rest.iter())
    }
    pub fn iter_mut(
        &mut self,
    ) -> std::iter::Chain<std::slice::IterMut<'_, Clock>, std::slice::IterMut<'_, Clock>> {
        self.first.iter_mut().chain(self.rest.iter_mut())
    }
    /// Adds a clock: inline while there are fewer than two, else one more in the
    /// allocation of the rest, grown by exactly one.
    pub fn push(&mut self, clock: Clock) {
        if self.first.len() < 2 {
            self.first.push(clock);
        } else {
            let mut rest = std::mem::take(&mut self.rest).into_vec();
            rest.reserve_exact(1);
            rest.push(clock);
            self.rest = rest.into_boxed_slice();
        }
    }
    /// The clocks past the first two (their own allocation; empty: none).
    pub fn spilled(&self) -> &[Clock] {
        &self.rest
    }
}

impl<'a> IntoIterator for &'a Clocks {
    type Item = &'a Clock;
    type IntoIter = std::iter::Chain<std::slice::Iter<'a, Clock>, std::slice::Iter<'a, Clock>>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// [`Clocks`] being built from a sequence: the rest gathered in a vector and boxed once at
/// the end, rather than grown by one allocation per clock as [`Clocks::push`] does.
#[derive(Default)]
struct ClocksBuilder {
    first: SmallVec<[Clock; 2]>,
    rest: Vec<Clock>,
}

impl ClocksBuilder {
    fn push(&mut self, clock: Clock) {
        if self.first.len() < 2 {
            self.first.push(clock);
        } else {
            self.rest.push(clock);
        }
    }

    fn finish(self) -> Clocks {
        Clocks {
            first: self.first,
            rest: self.rest.into_boxed_slice(),
        }
    }
}

impl FromIterator<Clock> for Clocks {
    fn from_iter<I: IntoIterator<Item = Clock>>(iter: I) -> Clocks {
        let mut b = ClocksBuilder::default();
        for c in iter {
            b.push(c);
        }
        b.finish()
    }
}

impl std::fmt::Debug for Clocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Clocks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Clocks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Clocks, D::Error> {
        struct Seq;
        impl<'de> serde::de::Visitor<'de> for Seq {
            type Value = Clocks;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of clocks")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Clocks, A::Error> {
                let mut b = ClocksBuilder::default();
                while let Some(c) = seq.next_element::<Clock>()? {
                    b.push(c);
                }
                Ok(b.finish())
            }
        }
        d.deserialize_seq(Seq)
    }
}

/// A red raised at once by a check, a sequence, or a deadline rule's own condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub rule: u16,
    /// The event (or period) it is about: the alert's occurrence key.
    pub key: String,
    /// When it happened: the time of the event that broke the rule (until 2026-12-05 the
    /// engine's clock then, later than that for an event delivered late).
    pub at: i64,
    pub detail: String,
    pub resolved: bool,
}

/// The progress of a sequence rule: the index of the furthest stage reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stages {
    pub rule: u16,
    pub last: i16,
}

/// A recurring duty (a quarterly report, a quarterly meeting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Duty {
    pub rule: u16,
    /// The period now being watched (see [`period_index`]).
    pub period: i32,
    /// When that period's duty falls due.
    pub due: i64,
    /// Periods met (at or after `period`).
    pub met: Vec<i32>,
    /// Periods that went red and are still missing, with the due time each missed.
    pub missing: Vec<(i32, i64)>,
    /// `due` is only a retry time: the calendar lacked the data to compute the real one.
    #[serde(default)]
    pub pending: bool,
    /// The period the duty started with; `None` in a duty stored before it was kept.
    #[serde(default)]
    pub start: Option<i32>,
}

/// A periodic duty's period that went red as missing, or whose red was retracted
/// ([`Engine::take_period_marks`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodMark {
    /// The period's due time.
    pub due: i64,
    pub case: Arc<str>,
    pub rule: u16,
    /// See [`period_index`].
    pub period: i32,
    /// The case's `department` then.
    pub department: Option<String>,
    /// Went red; else its red was retracted.
    pub missed: bool,
}

/// A value of a case's merged data: what the JSON value was, with strings shared (a million
/// cases name fifty departments) and in 16 bytes where a `serde_json::Value` takes 32 and
/// owns its string. Serialised as the JSON value it stands for.
///
/// A number is held as serde_json holds it (a non-negative integer as `u64`, a negative
/// one as `i64`, any other as a finite `f64`), in its own variant rather than as a
/// `serde_json::Number`, whose own tag would make the datum 24 bytes; and a string in place
/// when short, else as an [`ArcStr`], one pointer where an `Arc<str>` is two. With the key
/// an `ArcStr` too, an entry of [`Case::data`] is 24 bytes where it was 40 (see
/// [`DATA_SLACK`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    Bool(bool),
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer.
    Int(i64),
    /// Any other number: finite, as JSON has no other.
    Float(f64),
    /// A string of at most [`ShortStr::MAX`] bytes, held in place: no allocation, no
    /// pointer to follow, nothing to share (most values are short: a department, a
    /// handler's name, a certificate number).
    Short(ShortStr),
    /// A longer string, shared between the cases that hold it (see [`Values`]).
    Str(ArcStr),
    /// Arrays and objects, kept as they came.
    Other(Box<Value>),
}

const _: () = assert!(std::mem::size_of::<Datum>() == 16);
const _: () = assert!(std::mem::size_of::<(ArcStr, Datum)>() == 24);

/// A string of at most 14 bytes in 15, for [`Datum::Short`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortStr {
    len: u8,
    bytes: [u8; ShortStr::MAX],
}

impl ShortStr {
    pub const MAX: usize = 14;

    /// `s` held in place, if it is short enough.
    pub fn new(s: &str) -> Option<ShortStr> {
        let mut bytes = [0; ShortStr::MAX];
        bytes.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
        Some(ShortStr {
            len: s.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        debug_assert!(std::str::from_utf8(self.as_bytes()).is_ok());
        // SAFETY: `new`, the only place a `ShortStr` is made (its fields are private), copies
        // a whole `str` and its length, so the bytes up to `len` are UTF-8. Not checked
        // again here: every alert reads three of these and every stored case all of them,
        // and the check was about 110 instructions each (a call, and the non-ASCII path
        // for Chinese text).
        unsafe { std::str::from_utf8_unchecked(self.as_bytes()) }
    }

    /// Its bytes, for comparisons that need no `str` (checking UTF-8 costs more than
    /// comparing 14 bytes).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Datum {
    /// The datum of a JSON value, its string (if any) a copy of its own: for a value read
    /// outside an engine (a stored case, the API), with no interner to share it through.
    pub fn from_value_unshared(v: &Value) -> Datum {
        Datum::from_value(v, |s: &str| ArcStr::from(s))
    }

    /// The datum of a JSON value, its string (if any) made by `share`.
    pub fn from_value(v: &Value, share: impl FnOnce(&str) -> ArcStr) -> Datum {
        match v {
            Value::Null => Datum::Null,
            Value::Bool(b) => Datum::Bool(*b),
            Value::Number(n) => Datum::from_number(n),
            Value::String(s) => Datum::string(s, share),
            other => Datum::Other(Box::new(other.clone())),
        }
    }

    /// A string datum: in place when short, else made by `share`. Every string datum is
    /// made here, so that equal strings are the same variant (derived equality relies on
    /// it).
    pub fn string(s: &str, share: impl FnOnce(&str) -> ArcStr) -> Datum {
        match ShortStr::new(s) {
            Some(short) => Datum::Short(short),
            None => Datum::Str(share(s)),
        }
    }

    /// serde_json's own order: a non-negative integer as `u64`, a negative one as `i64`,
    /// anything else as `f64`. (Were serde_json built with `arbitrary_precision`, a number
    /// that fits none of them would be kept as it came, as an `Other`.)
    fn from_number(n: &serde_json::Number) -> Datum {
        if let Some(u) = n.as_u64() {
            Datum::UInt(u)
        } else if let Some(i) = n.as_i64() {
            Datum::Int(i)
        } else if let Some(f) = n.as_f64()
            && serde_json::Number::from_f64(f).as_ref() == Some(n)
        {
            Datum::Float(f)
        } else {
            Datum::Other(Box::new(Value::Number(n.clone())))
        }
    }

    /// The number it holds, as serde_json would.
    pub fn as_number(&self) -> Option<serde_json::Number> {
        match self {
            Datum::UInt(u) => Some((*u).into()),
            Datum::Int(i) => Some((*i).into()),
            Datum::Float(f) => serde_json::Number::from_f64(*f),
            Datum::Other(v) => v.as_number().cloned(),
            _ => None,
        }
    }

    /// The JSON value it stands for.
    pub fn to_value(&self) -> Value {
        match self {
            Datum::Null => Value::Null,
            Datum::Bool(b) => Value::Bool(*b),
            Datum::UInt(_) | Datum::Int(_) | Datum::Float(_) => {
                self.as_number().map_or(Value::Null, Value::Number)
            }
            Datum::Short(s) => Value::String(s.as_str().to_string()),
            Datum::Str(s) => Value::String(s.to_string()),
            Datum::Other(v) => (**v).clone(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Datum::Short(s) => Some(s.as_str()),
            Datum::Str(s) => Some(s),
            _ => None,
        }
    }

    /// How the views show it: a string as it is; another value as its JSON text; null as
    /// absent.
    pub fn text(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Datum::Null => None,
            Datum::Short(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
            Datum::Str(s) => Some(std::borrow::Cow::Borrowed(s)),
            other => Some(std::borrow::Cow::Owned(other.to_value().to_string())),
        }
    }

    /// Whether it equals the JSON value: exactly as `v == self.to_value()`, without
    /// building the value.
    pub fn eq_value(&self, v: &Value) -> bool {
        match (self, v) {
            (Datum::Null, Value::Null) => true,
            (Datum::Bool(a), Value::Bool(b)) => a == b,
            (Datum::UInt(_) | Datum::Int(_) | Datum::Float(_), Value::Number(b)) => {
                self.as_number().as_ref() == Some(b)
            }
            (Datum::Short(a), Value::String(b)) => a.as_bytes() == b.as_bytes(),
            (Datum::Str(a), Value::String(b)) => a.as_str() == b,
            (Datum::Other(a), b) => **a == *b,
            _ => false,
        }
    }

    /// A rule's `when` test on the datum (numbers compare by value: `15` equals `15.0`).
    pub fn matches_json(&self, want: &Value) -> bool {
        match (self, want) {
            (Datum::UInt(_) | Datum::Int(_) | Datum::Float(_), Value::Number(b)) => {
                self.as_number().and_then(|a| a.as_f64()) == b.as_f64()
            }
            (Datum::Other(a), b) => crate::rules::json_eq(a, b),
            (a, b) => a.eq_value(b),
        }
    }
}

impl Serialize for Datum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Datum::Null => s.serialize_unit(),
            Datum::Bool(b) => s.serialize_bool(*b),
            Datum::UInt(u) => s.serialize_u64(*u),
            Datum::Int(i) => s.serialize_i64(*i),
            Datum::Float(f) => s.serialize_f64(*f),
            Datum::Short(x) => s.serialize_str(x.as_str()),
            Datum::Str(x) => s.serialize_str(x),
            Datum::Other(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Datum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Datum, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(Datum::from_value_unshared(&v))
    }
}

/// One case: everything the engine knows about a subject. Serialisable on its own, so the
/// daemon can persist and move cases one by one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub id: Arc<str>,
    /// The data of its events merged, later fields overwriting earlier ones; sorted by key.
    pub data: Vec<(ArcStr, Datum)>,
    /// Hashes of the event ids applied, for duplicate detection (see [`EventIds`]).
    pub seen: EventIds,
    /// The known event types seen, as bits (see [`RuleSet::type_bit`]).
    pub types: u128,
    pub first_event: i64,
    pub last_event: i64,
    pub withdrawn: bool,
    /// Its clocks, the first two inline (see [`Clocks`]).
    pub clocks: Clocks,
    /// Sequence progress, inline (a `Stages` is 4 bytes): no allocation, no cache miss.
    pub stages: SmallVec<[Stages; 4]>,
    pub violations: Vec<Violation>,
    pub duties: Vec<Duty>,
    /// What the host counted the case as (the daemon: its open-case gauge class, see
    /// `src/open_counts.rs`). Not part of its state: never stored, never compared.
    #[serde(skip)]
    pub tag: HostTag,
}

/// Hashes of the event ids a case has applied, in the order applied, for duplicate
/// detection. The first six are inline: a typical approval case has five or six events
/// (accepted, reviewed, decided, issued, completed), and its case then needs no allocation
/// for them, nor a cache miss to check one. Past six they are a vector, scanned; past
/// [`EventIds::INDEX_FROM`] a hash index comes with it, so that a case a runaway producer
/// sends hundreds of thousands of events for costs a lookup per event rather than a scan
/// of all its earlier ones (measured 2026-12-05: 200,000 events on one case took `replay`
/// 6.3 s scanning). The index is not state: never stored, never compared, rebuilt from the
/// list when a case is read back. 56 bytes, as the `SmallVec<[u64; 6]>` it replaced, so
/// the boxed case stays in the allocator's 512-byte size class.
#[derive(Clone)]
pub struct EventIds(Ids);

#[derive(Clone)]
enum Ids {
    Inline { len: u8, ids: [u64; 6] },
    Listed(Vec<u64>),
    Indexed(Box<(Vec<u64>, hashbrown::HashTable<u64>)>),
}

impl Default for EventIds {
    fn default() -> EventIds {
        EventIds(Ids::Inline {
            len: 0,
            ids: [0; 6],
        })
    }
}

impl EventIds {
    /// From this many ids on, they have a hash index.
    pub const INDEX_FROM: usize = 64;

    #[inline]
    pub fn as_slice(&self) -> &[u64] {
        match &self.0 {
            Ids::Inline { len, ids } => &ids[..*len as usize],
            Ids::Listed(list) => list,
            Ids::Indexed(both) => &both.0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    #[inline]
    pub fn iter(&self) -> std::slice::Iter<'_, u64> {
        self.as_slice().iter()
    }

    #[inline]
    pub fn contains(&self, hash: u64) -> bool {
        match &self.0 {
            Ids::Inline { len, ids } => ids[..*len as usize].contains(&hash),
            Ids::Listed(list) => list.contains(&hash),
            Ids::Indexed(both) => both.1.find(hash, |&h| h == hash).is_some(),
        }
    }

    /// Adds a hash (the caller has checked it is not there); returns how many there are.
    #[inline]
    pub fn push(&mut self, hash: u64) -> usize {
        match &mut self.0 {
            Ids::Inline { len, ids } if (*len as usize) < ids.len() => {
                ids[*len as usize] = hash;
                *len += 1;
                *len as usize
            }
            Ids::Listed(list) if list.len() + 1 < Self::INDEX_FROM => {
                list.push(hash);
                list.len()
            }
            _ => self.push_growing(hash),
        }
    }

    /// [`EventIds::push`] where the ids move on: out of the case, or into an index.
    #[cold]
    fn push_growing(&mut self, hash: u64) -> usize {
        match &mut self.0 {
            Ids::Inline { ids, .. } => {
                let mut list = Vec::with_capacity(ids.len() * 2);
                list.extend_from_slice(ids);
                list.push(hash);
                self.0 = Ids::Listed(list);
            }
            Ids::Listed(list) => {
                let mut list = std::mem::take(list);
                list.push(hash);
                self.0 = Ids::Indexed(Box::new(indexed(list)));
            }
            Ids::Indexed(both) => {
                both.0.push(hash);
                both.1.insert_unique(hash, hash, |&h| h);
            }
        }
        self.len()
    }

    /// The list, where it is an allocation of its own (for prefetching).
    #[inline]
    pub fn spilled(&self) -> &[u64] {
        match &self.0 {
            Ids::Inline { .. } => &[],
            Ids::Listed(list) => list,
            // Where there is an index, a lookup reads the index, not the list.
            Ids::Indexed(_) => &[],
        }
    }

    /// Bytes allocated beyond the 56 in the case (for the engine bench's breakdown).
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Ids::Inline { .. } => 0,
            Ids::Listed(list) => list.capacity() * 8,
            Ids::Indexed(both) => {
                std::mem::size_of_val(&**both) + both.0.capacity() * 8 + both.1.allocation_size()
            }
        }
    }
}

/// A list and its index. Hashes that repeat in the list (a case stored by a build that let
/// them) are indexed once.
fn indexed(list: Vec<u64>) -> (Vec<u64>, hashbrown::HashTable<u64>) {
    let mut index = hashbrown::HashTable::with_capacity(list.len() * 2);
    for &hash in &list {
        if index.find(hash, |&h| h == hash).is_none() {
            index.insert_unique(hash, hash, |&h| h);
        }
    }
    (list, index)
}

impl FromIterator<u64> for EventIds {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> EventIds {
        let mut ids = EventIds::default();
        for hash in iter {
            ids.push(hash);
        }
        ids
    }
}

impl<'a> IntoIterator for &'a EventIds {
    type Item = &'a u64;
    type IntoIter = std::slice::Iter<'a, u64>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Equal when the same hashes were applied in the same order; the index is not compared.
impl PartialEq for EventIds {
    fn eq(&self, other: &EventIds) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl std::fmt::Debug for EventIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// As a sequence of the hashes, as the `SmallVec` before it was: stored cases read back.
impl Serialize for EventIds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

/// Read element by element into place: a restart reads a million cases, most with their
/// ids inline, and a vector for each would be a million allocations for nothing.
impl<'de> Deserialize<'de> for EventIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventIds, D::Error> {
        struct Hashes;
        impl<'de> serde::de::Visitor<'de> for Hashes {
            type Value = EventIds;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of event id hashes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<EventIds, A::Error> {
                let mut ids = EventIds::default();
                while let Some(hash) = seq.next_element::<u64>()? {
                    ids.push(hash);
                }
                Ok(ids)
            }
        }
        d.deserialize_seq(Hashes)
    }
}

/// A number a host keeps in a case, settable through a shared reference (the daemon sets
/// it while it persists the cases the engine reports changed), and handed back by
/// [`Engine::take_released`] when the engine forgets the case. Zero: none. Equal to every
/// other tag, so that it never makes two cases' states differ.
#[derive(Default)]
pub struct HostTag(std::sync::atomic::AtomicU64);

impl HostTag {
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clone for HostTag {
    fn clone(&self) -> HostTag {
        HostTag(std::sync::atomic::AtomicU64::new(self.get()))
    }
}

impl PartialEq for HostTag {
    fn eq(&self, _: &HostTag) -> bool {
        true
    }
}

impl std::fmt::Debug for HostTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

impl Case {
    /// Drops what the case holds of retired rules (see [`RuleSet::with_rule_order`]): a
    /// store's case restored, or read for a view, under packs that retire some of its rules.
    /// Returns whether it dropped anything.
    pub fn drop_retired(&mut self, rules: &RuleSet) -> bool {
        if !rules.any_retired() {
            return false;
        }
        let held = (
            self.clocks.len(),
            self.stages.len(),
            self.violations.len(),
            self.duties.len(),
        );
        if self.clocks.iter().any(|c| rules.is_retired(c.rule)) {
            self.clocks = std::mem::take(&mut self.clocks)
                .iter()
                .filter(|c| !rules.is_retired(c.rule))
                .cloned()
                .collect();
        }
        self.stages.retain(|s| !rules.is_retired(s.rule));
        self.violations.retain(|v| !rules.is_retired(v.rule));
        self.duties.retain(|d| !rules.is_retired(d.rule));
        held != (
            self.clocks.len(),
            self.stages.len(),
            self.violations.len(),
            self.duties.len(),
        )
    }

    fn new(id: Arc<str>, t: i64) -> Case {
        Case {
            id,
            data: Vec::new(),
            seen: EventIds::default(),
            types: 0,
            first_event: t,
            last_event: t,
            withdrawn: false,
            clocks: Clocks::default(),
            stages: SmallVec::new(),
            violations: Vec::new(),
            duties: Vec::new(),
            tag: HostTag::default(),
        }
    }

    /// Records an applied event's id hash. Returns the case's count of events where it
    /// is to be logged: at 10,000, 100,000, … No real case has that many; its producer is
    /// likely sending in a loop, and every batch that changes the case stores it whole.
    fn record_event(&mut self, hash: u64) -> Option<u64> {
        let n = self.seen.push(hash) as u64;
        (n >= 10_000 && is_power_of_ten(n)).then_some(n)
    }

    pub fn get(&self, key: &str) -> Option<&Datum> {
        // A case holds a handful of fields (five in a typical approval case): a scan that
        // compares lengths first passes over most of them without reading their bytes,
        // where a binary search compared bytes at every step (a call to memcmp each). The
        // alerts, the rules' conditions and the gauges look fields up several times an
        // event.
        if self.data.len() <= 16 {
            return self
                .data
                .iter()
                .find(|(k, _)| k.as_str() == key)
                .map(|(_, v)| v);
        }
        self.data
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.data[i].1)
    }

    fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(Datum::as_str).map(str::to_string)
    }

    /// A case is active while a clock runs (or is paused) or a periodic duty is watched.
    pub fn active(&self) -> bool {
        !self.withdrawn && (self.clocks.iter().any(Clock::active) || !self.duties.is_empty())
    }

    /// The case's light: the worst of its clocks and unresolved violations.
    pub fn light(&self) -> Light {
        let clocks = self.clocks.iter().map(Clock::light).max();
        let violated = self.violations.iter().any(|v| !v.resolved)
            || self.duties.iter().any(|d| !d.missing.is_empty());
        let v = if violated { Light::Red } else { Light::Green };
        clocks.map_or(v, |c| c.max(v))
    }

    fn active_clock(&mut self, rule: u16) -> Option<&mut Clock> {
        self.clocks
            .iter_mut()
            .rev()
            .find(|c| c.rule == rule && c.active())
    }

    /// The timers this case needs now: a pure function of its state.
    pub fn timers(&self, retention_ms: i64, out: &mut Vec<(i64, u16, TimerKind)>) {
        out.clear();
        self.each_timer(retention_ms, |due, rule, kind| out.push((due, rule, kind)));
    }

    /// The instant of its earliest timer: [`Case::timers`]' least, without gathering them
    /// (the engine asks before and after every event).
    pub fn earliest_timer(&self, retention_ms: i64) -> Option<i64> {
        let mut first = None;
        self.each_timer(retention_ms, |due, _, _| {
            first = Some(first.map_or(due, |f: i64| f.min(due)));
        });
        first
    }

    /// Calls `f` with each timer of [`Case::timers`], in its order.
    #[inline(always)]
    fn each_timer(&self, retention_ms: i64, mut f: impl FnMut(i64, u16, TimerKind)) {
        if self.withdrawn {
            f(self.last_event + retention_ms, u16::MAX, TimerKind::Purge);
            return;
        }
        let mut active = !self.duties.is_empty();
        for c in self.clocks.iter().filter(|c| c.active()) {
            active = true;
            if let (Some(y), false) = (c.yellow_at.get(), c.yellow_fired) {
                f(y, c.rule, TimerKind::Yellow);
            }
            if let (Some(d), false) = (c.deadline.get(), c.red_fired) {
                f(d, c.rule, TimerKind::Red);
            }
        }
        for d in &self.duties {
            f(d.due, d.rule, TimerKind::Period);
        }
        // `!self.active()`, from what the loops above saw.
        if !active {
            f(self.last_event + retention_ms, u16::MAX, TimerKind::Purge);
        }
    }
}

/// What a timer does when it comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TimerKind {
    Yellow,
    Red,
    Period,
    /// Forget an inactive case after the retention time.
    Purge,
}

/// `(the case map's hash of the case id, case id)`, kept under the case's earliest due
/// instant: one entry per case, not one per timer. The hash orders a bucket without
/// comparing strings, and finds the case without hashing its id again; the id after it
/// keeps the order total. [`key_hash`] has no random seed, so the order is the same in
/// every run and on every machine (of one build: it is rustc-hash's FxHash, which
/// `Cargo.lock` pins). Nothing stored depends on it: timers are set anew on restore. The
/// id is an inline copy, like the case map's key: finding the case reads no other memory.
type Timer = (u64, CompactString);

/// The timers due at one instant, in chunks of at most [`CHUNK`]: a million 20-workday
/// deadlines set on the same day share one midnight, and one growing `Vec` would copy
/// itself over and over.
type Bucket = Vec<Vec<Timer>>;
const CHUNK: usize = 4096;

/// The timer index: each due instant's [`Bucket`] in a hash map, and the instants in a
/// min-heap. Filing a timer costs a hash lookup (98–99% of timers share their instant with
/// others, so a new instant, pushed on the heap, is rare) where an ordered map of the
/// buckets searched through thousands of instants for each: 3.7% fewer instructions per
/// event in the engine bench's mix at 200,000 cases (2026-12-07).
#[derive(Default)]
struct TimerIndex {
    buckets: rustc_hash::FxHashMap<i64, Bucket>,
    /// The instants of `buckets`, each once.
    instants: BinaryHeap<Reverse<i64>>,
}

impl TimerIndex {
    /// The earliest instant with a bucket.
    fn first(&self) -> Option<i64> {
        self.instants.peek().map(|r| r.0)
    }

    /// Takes the earliest instant's bucket out (empty when there is none).
    fn take_first(&mut self) -> Bucket {
        match self.instants.pop() {
            Some(Reverse(due)) => self.buckets.remove(&due).unwrap_or_default(),
            None => Bucket::new(),
        }
    }

    /// The bucket of `due`, new and empty if there was none.
    fn bucket(&mut self, due: i64) -> &mut Bucket {
        match self.buckets.entry(due) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                self.instants.push(Reverse(due));
                v.insert(Bucket::new())
            }
        }
    }

    /// Files `bucket` under `due`, which has none.
    fn insert(&mut self, due: i64, bucket: Bucket) {
        *self.bucket(due) = bucket;
    }
}

/// What [`Engine::apply`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied to its case.
    Applied,
    /// The event id was already applied to this case: nothing changed.
    Duplicate,
    /// A type neither the catalogue nor a pack knows: counted, otherwise ignored.
    UnknownType,
    /// A known type with nothing to do and no case to record it in.
    NoEffect,
    /// The case was withdrawn: it has gone quiet.
    CaseWithdrawn,
}

/// An event that could not be applied; the engine is left as it was before it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("event {event} (case {case}): rule {rule}: {source}")]
    Calendar {
        event: String,
        case: String,
        rule: String,
        #[source]
        source: Box<CalendarError>,
    },
    /// An event dated before the first day of the calendar data: years without data are
    /// not guessed, and such a time is nearly always a default (`1970-01-01T00:00:00Z`
    /// from a zero timestamp) rather than when something happened.
    #[error(
        "event {event} (case {case}): its time {time} is before the calendar data, which \
         begins on {first_day}: a default or zero timestamp? (add older calendar files to \
         take older events)"
    )]
    BeforeCalendar {
        event: String,
        case: String,
        time: String,
        first_day: NaiveDate,
    },
    /// An event of a case that already has `engine.max_events_per_case` events (see
    /// [`DEFAULT_MAX_EVENTS_PER_CASE`]).
    #[error(
        "event {event} (case {case}): the case already has {events} events, the most \
         `engine.max_events_per_case` allows: is its producer sending in a loop? (raise the \
         limit, and send the case's dead letters again, to apply it)"
    )]
    CaseFull {
        event: String,
        case: String,
        events: usize,
    },
}

impl EngineError {
    /// A short, stable label for metrics and dead-letter headers.
    pub fn reason_code(&self) -> &'static str {
        match self {
            EngineError::Calendar { .. } => "no_calendar_data",
            EngineError::BeforeCalendar { .. } => "before_calendar_data",
            EngineError::CaseFull { .. } => "case_event_limit",
        }
    }
}

/// Counters the daemon exports as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub applied: u64,
    pub duplicates: u64,
    pub unknown_types: u64,
    pub calendar_errors: u64,
    /// Fields the rules expected and did not find or could not use (a `due` that is not a
    /// time, …), logged and counted.
    pub data_problems: u64,
    /// Timer index entries taken when they came due, and of those the ones that did
    /// nothing: left by an earlier state of their case (its earliest timer had moved) or
    /// by a case since forgotten. For the engine bench, which prints them; not exported.
    pub timer_entries_due: u64,
    pub timer_entries_obsolete: u64,
}

/// The engine. Not `Sync`: one owner drives it (a daemon partition worker, `replay`).
///
/// Split in two so that a handler can work on a case in place (`get_mut` on the map) while
/// it borrows everything else mutably: the cases, and the `Core` (rules, calendar, timers,
/// counters).
pub struct Engine {
    core: Core,
    cases: CaseMap,
}

/// Keyed by a copy of the case id kept inline (up to 24 bytes): comparing keys while probing
/// reads no other memory, where an `Arc<str>` key costs a cache miss on every lookup. A
/// `HashTable` rather than a `HashMap` so that [`Engine::prefetch`] can find the slot an id
/// hashes to without reading it.
type CaseMap = hashbrown::HashTable<Slot>;

/// An entry of the case map.
type Slot = (CompactString, Box<Case>);

/// The case map's hash of a case id.
#[inline]
fn key_hash(id: &str) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(id)
}

/// Whether two case ids are the same, compared inline for ids of 8 to 32 bytes (a case
/// map lookup compares one id, and the library's compare costs more to call than to run).
#[inline(always)]
fn same_id(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    match a.len() {
        8..=16 => ends_equal::<8>(a, b),
        17..=32 => ends_equal::<16>(a, b),
        _ => a == b,
    }
}

/// Whether the first `N` and the last `N` bytes of `a` and `b` are equal: all their bytes,
/// for slices of one length from `N` to `2N`. Arrays of a constant size compare inline.
#[inline(always)]
fn ends_equal<const N: usize>(a: &[u8], b: &[u8]) -> bool {
    a.first_chunk::<N>() == b.first_chunk::<N>() && a.last_chunk::<N>() == b.last_chunk::<N>()
}

/// The case map's hasher, for when it grows.
fn slot_hash(slot: &Slot) -> u64 {
    key_hash(slot.0.as_str())
}

/// Entries of room a new case's data gets beyond those of its first event: the later events
/// of a case add a field or two (an approval's `outcome`, then its `certificate_no`), and
/// each addition reallocated the data into the allocator's next size class. A million cases
/// moving up in step fill fresh pages of each class while the old ones lie freed: in the
/// engine bench's mix, growing the data was 11% of the time, most of it this machine's
/// first touch of fresh memory. Two entries of 24 bytes: an approval's five fields and two
/// to come take 168 bytes (the 192-byte class), less than its five took at 40 bytes an
/// entry (200, the 224-byte class).
pub const DATA_SLACK: usize = 2;

/// How far ahead [`Engine::prefetch`] fetches each thing an event reads: the map's slot
/// first, the case once the slot is in cache, the case's own allocations once the case is.
/// Two events apart rather than one: `redlight replay` of the engine bench's file (998,765
/// events of 203,000 cases) took 1.84–2.05 s with distances 2, 4, 6 and 2.03–3.16 s with
/// 1, 2, 3 (six alternating runs each, 2026-12-02); 4, 8, 12 was no better (1.78–2.36 s).
/// In the engine bench, whose events are built in memory, 1, 2, 3 and 2, 4, 6 were level.
pub const PREFETCH_DATA: usize = 2;
/// See [`PREFETCH_DATA`].
pub const PREFETCH_CASE: usize = 4;
/// See [`PREFETCH_DATA`].
pub const PREFETCH_SLOT: usize = 6;

/// Asks the processor to fetch the cache line holding `addr` (a hint: nothing is read, an
/// address that is not mapped is ignored, and on other processors it does nothing).
#[inline(always)]
fn prefetch_line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch reads no memory the program can observe and cannot fault, on
        // any address (the SSE instruction every x86-64 processor has).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(addr as *const i8) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Hints for every cache line of `len` bytes from `addr`.
#[inline(always)]
fn prefetch_bytes(addr: usize, len: usize) {
    let mut line = addr & !63;
    while line < addr + len {
        prefetch_line(line);
        line += 64;
    }
}

/// Hints for every cache line of the slice's elements.
#[inline(always)]
fn prefetch_slice<T>(items: &[T]) {
    prefetch_bytes(items.as_ptr() as usize, std::mem::size_of_val(items));
}

/// Everything of the engine but its cases.
struct Core {
    rules: Arc<RuleSet>,
    cal: Arc<Calendar>,
    zone: Zone,
    /// The timers by due instant; may hold obsolete entries, dropped when they come due.
    timers: TimerIndex,
    /// Entries in `timers`, obsolete ones included.
    timer_entries: usize,
    /// The engine's clock: the latest of the event times applied and the times advanced to.
    now: i64,
    retention_ms: i64,
    /// The most events a case takes (`engine.max_events_per_case`).
    max_events: usize,
    /// Interned data keys: a million cases share one copy of `"department"`.
    keys: Interner,
    /// Interned string values of case data: departments, items, handlers.
    strings: Values,
    stats: Stats,
    /// Cases changed since the last [`Engine::take_changed`], when the owner persists them.
    changed: Option<FxHashSet<Arc<str>>>,
    /// The non-zero [`Case::tag`]s of the cases forgotten since the last
    /// [`Engine::take_released`].
    released: Vec<u64>,
    /// The periods that went red as missing, or whose red was retracted, since the last
    /// [`Engine::take_period_marks`], while changes are tracked.
    period_marks: Vec<PeriodMark>,
    /// How many days past an event a clock computation can reach (see [`horizon_days`]):
    /// events further than this from the calendar's edges cannot fail, so `apply` needs no
    /// copy of the case to roll back.
    horizon_days: i64,
    /// Scratch buffers reused across calls, so the hot path does not allocate.
    scratch: Vec<(i64, u16, TimerKind)>,
    /// How many data problems each rule met (by rule index), for [`Core::data_problem`].
    data_problems: Vec<u64>,
    /// Whether the one error-level line about deadlines or duties left pending for want of
    /// calendar data has been logged; the others go at debug level.
    pending_logged: bool,
    /// While an event's handlers run: the line that would be that one, logged only once the
    /// event is applied. A rejected event keeps none of its pending deadlines, and a line
    /// naming one would mislead (see [`Core::first_pending`]).
    held_pending: Option<PendingLine>,
    applying: bool,
}

/// The first line about a deadline or a periodic duty left pending for want of calendar
/// data, as [`Core::first_pending`] logs it.
enum PendingLine {
    Clock {
        case: String,
        rule: Arc<str>,
        event: String,
        error: String,
    },
    Duty {
        case: String,
        rule: Arc<str>,
        period: String,
        error: String,
    },
}

impl PendingLine {
    fn log(&self) {
        match self {
            PendingLine::Clock {
                case,
                rule,
                event,
                error,
            } => tracing::error!(case = %case, rule = %rule, event = %event, error = %error,
                "deadlines pending: no calendar data for them yet (further cases at debug level)"),
            PendingLine::Duty {
                case,
                rule,
                period,
                error,
            } => tracing::error!(case = %case, rule = %rule, period = %period, error = %error,
                "periodic duties pending: no calendar data for their due time (further cases at debug level)"),
        }
    }
}

/// One shared copy of each string: a set of `ArcStr`. Strings no case holds any more are
/// dropped whenever the set has doubled since the last sweep, so a stream of unique values
/// (certificate numbers) does not grow it without bound.
#[derive(Default)]
struct Interner {
    set: FxHashSet<ArcStr>,
    sweep_at: usize,
}

impl Interner {
    fn share(&mut self, s: &str) -> ArcStr {
        self.share_found(s).0
    }

    /// The shared copy of `s`, and whether there was one already.
    fn share_found(&mut self, s: &str) -> (ArcStr, bool) {
        if let Some(a) = self.set.get(s) {
            return (a.clone(), true);
        }
        if self.set.len() >= self.sweep_at {
            self.set.retain(|a| ArcStr::strong_count(a) != Some(1));
            self.sweep_at = (self.set.len() * 2).max(4096);
        }
        let a = ArcStr::from(s);
        self.set.insert(a.clone());
        (a, false)
    }
}

/// The string values of case data, shared through an [`Interner`] for the keys whose
/// values repeat (departments, items, handlers) and not for those whose values are all
/// different (certificate numbers, market names): sharing those saves nothing, and costs a
/// lookup and an insert in a set that grows with the cases, two cache misses per value
/// once it is large. Each key is judged on its own, over windows of [`SHARE_WINDOW`] values.
#[derive(Default)]
struct Values {
    strings: Interner,
    by_key: hashbrown::HashMap<Arc<str>, Sharing, rustc_hash::FxBuildHasher>,
}

/// How sharing a key's values has gone in the current window.
#[derive(Default)]
struct Sharing {
    tried: u32,
    found: u32,
    /// Values still to be taken as they are, without trying the interner.
    skip: u32,
}

/// Values of a key tried before judging whether sharing them pays.
const SHARE_WINDOW: u32 = 1024;
/// A key whose values were found already shared for fewer than one in eight of a window's
/// values is not shared for this many values; then it is tried again (values change: a key
/// may start repeating).
const SHARE_SKIP: u32 = 63 * SHARE_WINDOW;
/// Data keys judged at a time (see [`Values::share`]).
const SHARE_KEYS: usize = 4096;

impl Values {
    fn share(&mut self, key: &str, s: &str) -> ArcStr {
        if self.by_key.len() >= SHARE_KEYS && !self.by_key.contains_key(key) {
            // Events with ever new keys must not grow this without bound: start afresh
            // (each key is judged again, from its next window).
            self.by_key.clear();
        }
        let w = match self.by_key.get_mut(key) {
            Some(w) => w,
            None => self.by_key.entry(Arc::from(key)).or_default(),
        };
        if w.skip > 0 {
            w.skip -= 1;
            return ArcStr::from(s);
        }
        let (a, found) = self.strings.share_found(s);
        w.tried += 1;
        w.found += u32::from(found);
        if w.tried == SHARE_WINDOW {
            if w.found * 8 < w.tried {
                w.skip = SHARE_SKIP;
            }
            w.tried = 0;
            w.found = 0;
        }
        a
    }
}

/// An instant's timers in one vector: its only chunk as it is, or the chunks moved into one
/// vector of the exact size (collecting the flattened chunks grew a vector by doubling,
/// copying a large instant's timers again and again into fresh memory).
fn flatten_bucket(bucket: Bucket) -> Vec<Timer> {
    if bucket.len() == 1 {
        return bucket.into_iter().next().unwrap_or_default();
    }
    let mut all = Vec::with_capacity(bucket.iter().map(Vec::len).sum());
    for mut chunk in bucket {
        all.append(&mut chunk);
    }
    all
}

/// A JSON value as a condition sees it. An integer is CEL's `int`, as its integer literals
/// are (`data.n + 1`; a JSON integer read as `uint`, as serde would give it, made that an
/// error between `uint` and `int`), a `uint` only past `int`'s range; other numbers are
/// `double`.
fn cel_value(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            (None, None) => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel_string(s),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(cel_value).collect())),
        Value::Object(map) => cel_map(map.iter().map(|(k, v)| (k.as_str(), cel_value(v)))),
    }
}

fn cel_string(s: &str) -> cel::Value {
    cel::Value::String(Arc::new(s.to_string()))
}

/// A CEL map with string keys.
fn cel_map<'a>(entries: impl IntoIterator<Item = (&'a str, cel::Value)>) -> cel::Value {
    let map: std::collections::HashMap<cel::objects::Key, cel::Value> = entries
        .into_iter()
        .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.to_string())), v))
        .collect();
    cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
}

/// Whether `n` is 1, 10, 100, …: the counts at which a repeated problem is logged, so that
/// a stream of them is seen without flooding the log.
pub(crate) fn is_power_of_ten(n: u64) -> bool {
    n > 0 && n == 10u64.pow(n.ilog10())
}

/// Logs a case that has reached `n` events (see [`Case::record_event`]).
#[cold]
fn warn_many_events(ev: &Event, n: u64) {
    tracing::warn!(case = %ev.subject, event = %ev.id, events = n,
        "the case has this many events; its producer may be sending in a loop (logged at \
         10,000, 100,000, ... events of a case)");
}

/// Hash of an event id for duplicate detection (SipHash-2-4 with keys 0 and 0: the same in
/// every run and on every machine, as persisted state requires: a case's `seen` holds these
/// values, and a restored case recognises an event delivered again by them).
///
/// The bytes fed are spelt out (the id's bytes, then `0xff`) rather than left to `str`'s
/// `Hash`, whose feeding the standard library does not promise to keep: those are the bytes
/// it feeds today, so stored values stay valid, and a toolchain that fed others would not
/// silently stop recognising the events stored before it (the test
/// `event_id_hashes_are_pinned` holds the values).
fn id_hash(id: &str) -> u64 {
    #[allow(deprecated)] // SipHash-2-4, which is what is stored; never removed from std
    let mut h = std::hash::SipHasher::new();
    h.write(id.as_bytes());
    h.write_u8(0xff);
    h.finish()
}

impl Engine {
    pub fn new(rules: Arc<RuleSet>, cal: Arc<Calendar>) -> Engine {
        let zone = Zone::new(&cal);
        let horizon_days = horizon_days(&rules);
        Engine {
            core: Core {
                rules,
                cal,
                zone,
                timers: TimerIndex::default(),
                timer_entries: 0,
                now: i64::MIN,
                retention_ms: i64::from(DEFAULT_RETENTION_DAYS) * DAY,
                max_events: DEFAULT_MAX_EVENTS_PER_CASE as usize,
                keys: Interner::default(),
                strings: Values::default(),
                stats: Stats::default(),
                changed: None,
                released: Vec::new(),
                period_marks: Vec::new(),
                horizon_days,
                scratch: Vec::new(),
                data_problems: Vec::new(),
                pending_logged: false,
                held_pending: None,
                applying: false,
            },
            cases: CaseMap::default(),
        }
    }

    /// How long inactive cases are kept (for duplicate detection and late events).
    pub fn set_retention_days(&mut self, days: u32) {
        self.core.retention_ms = i64::from(days) * DAY;
    }

    /// The most events a case takes (see [`DEFAULT_MAX_EVENTS_PER_CASE`]).
    pub fn set_max_events_per_case(&mut self, n: u32) {
        self.core.max_events = n as usize;
    }

    pub fn configure(&mut self, settings: Settings) {
        self.set_retention_days(settings.retention_days);
        self.set_max_events_per_case(settings.max_events_per_case);
    }

    /// Starts recording which cases change, for an owner that persists them.
    pub fn track_changes(&mut self) {
        self.core.changed.get_or_insert_with(FxHashSet::default);
    }

    /// The ids of the cases changed (or forgotten) since the last call, in no particular
    /// order (the same on every run): the daemon's store sorts a batch's cases itself, and
    /// sorting them here cost its loop about 3% (comparing ids cold in memory).
    pub fn take_changed(&mut self) -> Vec<Arc<str>> {
        self.core
            .changed
            .as_mut()
            .map(|c| c.drain().collect())
            .unwrap_or_default()
    }

    /// The non-zero [`Case::tag`]s of the cases forgotten (or replaced by
    /// [`Engine::restore`]) since the last call.
    pub fn take_released(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.core.released)
    }

    /// The periods of periodic duties that went red as missing, and those whose red was
    /// then retracted (met by a report made by the due time but delivered after it, or a
    /// withdrawal made by then), since the last call, in the order they happened, while
    /// changes are tracked ([`Engine::track_changes`]). What the scorecard counts: a period
    /// missed stays missed when its report comes late, though it leaves the duty's
    /// `missing` list (see [`crate::scorecard::take_period_rows`]).
    pub fn take_period_marks(&mut self) -> Vec<PeriodMark> {
        std::mem::take(&mut self.core.period_marks)
    }

    pub fn rules(&self) -> &RuleSet {
        &self.core.rules
    }
    pub fn calendar(&self) -> &Calendar {
        &self.core.cal
    }
    pub fn zone(&self) -> &Zone {
        &self.core.zone
    }
    pub fn now(&self) -> i64 {
        self.core.now
    }
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }
    pub fn case(&self, id: &str) -> Option<&Case> {
        self.cases
            .find(key_hash(id), |(k, _)| same_id(k, id))
            .map(|(_, b)| &**b)
    }
    pub fn cases(&self) -> impl Iterator<Item = &Case> {
        self.cases.iter().map(|(_, b)| &**b)
    }
    pub fn case_count(&self) -> usize {
        self.cases.len()
    }
    pub fn timer_count(&self) -> usize {
        self.core.timer_entries
    }
    /// When the next timer falls due, for a daemon's sleeping timer task (it may turn out
    /// to be obsolete: waking for it is harmless).
    pub fn next_due(&self) -> Option<i64> {
        self.core.timers.first()
    }

    /// Sets the engine's clock back to where a persisted engine had it (never backwards).
    pub fn restore_clock(&mut self, now: i64) {
        self.core.now = self.core.now.max(now);
    }

    /// Puts a persisted case back (its timers with it).
    ///
    /// A clock whose deadline was pending for want of calendar data gets it now if the
    /// calendar has grown since (the next year's file added, the daemon restarted); a
    /// deadline or yellow instant that has passed meanwhile fires at the next advance.
    ///
    /// What the case holds of a retired rule (see [`RuleSet::with_rule_order`]) is dropped:
    /// its clocks, stages, duties and violations, and the case is marked changed. The alerts
    /// the rule raised stay in the daemon's alert log, and its scorecard rows in the ledger.
    pub fn restore(&mut self, case: Case) {
        self.restore_seen(case, |_| ());
    }

    /// [`Engine::restore`], showing `seen` the case as the engine holds it, before it is
    /// filed (the daemon judges its open-case gauge class).
    pub fn restore_seen(&mut self, mut case: Case, seen: impl FnOnce(&Case)) {
        let core = &mut self.core;
        let dropped = case.drop_retired(&core.rules);
        seen(&case);
        core.share_data(&mut case);
        let id = case.id.clone();
        // Changed: the next batch writes the case as it is now (and its scorecard rows).
        if core.settle_pending(&mut case) || dropped {
            core.mark_changed(&id);
        }
        if let Some(first) = core.earliest(&case) {
            core.set_timer(first, (key_hash(&id), CompactString::from(&*id)));
        }
        let slot = (CompactString::from(&*id), Box::new(case));
        match self
            .cases
            .entry(key_hash(&id), |(k, _)| *k == *id, slot_hash)
        {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                core.release(&o.get().1);
                *o.get_mut() = slot;
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(slot);
            }
        }
    }

    /// Takes a case out, for another engine that its events now reach (the daemon's
    /// partitions: a case follows its events when partitions are added to a topic, a
    /// producer keys them otherwise, or they come on another input topic). Its timer
    /// entries here turn obsolete, it is marked changed (its owner forgets it in this
    /// engine's store), and its open-case tag is released and cleared: the engine that
    /// adopts it counts it afresh.
    pub fn take_case(&mut self, id: &str) -> Option<Case> {
        let found = self.cases.find_entry(key_hash(id), |(k, _)| k == id).ok()?;
        let ((_, case), _) = found.remove();
        self.core.release(&case);
        case.tag.set(0);
        self.core.mark_changed(&case.id);
        Some(*case)
    }

    /// Puts in a case another engine gave up ([`Engine::take_case`]): as
    /// [`Engine::restore`], and marked changed, so that its owner writes it to this
    /// engine's store. Its timers due before this engine's next event or advance fire then.
    pub fn adopt(&mut self, case: Case) {
        let id = case.id.clone();
        self.restore(case);
        self.core.mark_changed(&id);
    }

    /// Moves the engine's clock to `now` (never back) and fires every timer due at or
    /// before it, in due order.
    pub fn advance(&mut self, now: i64, out: &mut Vec<Alert>) {
        self.advance_bounded(now, usize::MAX, out);
    }

    /// What `replay` and the daemon do before applying an event: fire the timers due before
    /// its time, at most `max` ([`Engine::advance_before_bounded`]); true when none is left.
    /// An event of a type the engine does not know is counted and otherwise ignored (SPEC
    /// §1), its time too: nothing fires for it, so a misspelt type's time raises no red.
    pub fn advance_before_event(&mut self, ev: &Event, max: usize, out: &mut Vec<Alert>) -> bool {
        if self.core.rules.type_info(&ev.kind).is_none() {
            return true;
        }
        self.advance_before_bounded(ev.time_ms(), max, out)
    }

    /// Fires timers due strictly before `t`: what replay does before applying an event at
    /// `t`, so that an event exactly at a deadline counts as in time.
    pub fn advance_before(&mut self, t: i64, out: &mut Vec<Alert>) {
        self.advance_before_bounded(t, usize::MAX, out);
    }

    /// [`Engine::advance`] in slices: fires at most `max` timers and returns `true` once
    /// nothing due at or before `now` is left. The clock moves to `now` at once, as in an
    /// unbounded advance; the caller finishes the slices before it applies another event,
    /// so the alerts and states are exactly those of one advance. (A daemon catching up
    /// after days down writes one store transaction per slice instead of millions of
    /// alerts in one; a restart between two slices fires the rest, since timers are
    /// derived from the stored cases.)
    pub fn advance_bounded(&mut self, now: i64, max: usize, out: &mut Vec<Alert>) -> bool {
        self.core.now = self.core.now.max(now);
        self.fire(|due| due <= now, max, out)
    }

    /// [`Engine::advance_before`] in slices, as [`Engine::advance_bounded`].
    pub fn advance_before_bounded(&mut self, t: i64, max: usize, out: &mut Vec<Alert>) -> bool {
        // Saturating: `replay` settles to the engine's clock at its end, which is still
        // `i64::MIN` when no line was applied.
        self.core.now = self.core.now.max(t.saturating_sub(1));
        self.fire(|due| due < t, max, out)
    }

    /// Fires due timers in due order, at most `max`; returns `true` when no due timer is
    /// left.
    fn fire(&mut self, due_now: impl Fn(i64) -> bool, max: usize, out: &mut Vec<Alert>) -> bool {
        let mut left = max;
        while let Some(due) = self.core.timers.first() {
            if !due_now(due) {
                break;
            }
            if left == 0 {
                return false;
            }
            let mut bucket = flatten_bucket(self.core.timers.take_first());
            self.core.timer_entries -= bucket.len();
            bucket.sort_unstable();
            bucket.dedup();
            if bucket.len() > left {
                // The rest of this instant's timers wait for the next slice, in order.
                let rest = bucket.split_off(left);
                self.core.timer_entries += rest.len();
                self.core
                    .timers
                    .insert(due, rest.chunks(CHUNK).map(<[Timer]>::to_vec).collect());
            }
            left -= bucket.len();
            for j in 0..bucket.len() {
                self.prefetch(|k| bucket.get(j + k).map(|t| t.1.as_str()));
                let timer = std::mem::take(&mut bucket[j]);
                let found = self
                    .cases
                    .find_entry(timer.0, |(k, _)| same_id(k, &timer.1));
                self.core.stats.timer_entries_due += 1;
                let Ok(mut slot) = found else {
                    self.core.stats.timer_entries_obsolete += 1;
                    continue; // the case was forgotten
                };
                if self
                    .core
                    .fire_due(&mut slot.get_mut().1, timer, due, out)
                    .is_some()
                {
                    let ((_, case), _) = slot.remove();
                    self.core.release(&case);
                }
            }
        }
        true
    }

    /// Asks the processor to fetch what the next events will read, so that their cases'
    /// cache misses overlap the work on the event in hand instead of following one another:
    /// call it before applying each event, with `ahead(k)` giving the subject of the `k`-th
    /// event after that one (`None` past the end or for a message that is not an event).
    /// Each call fetches, for the event [`PREFETCH_SLOT`] places ahead, the map's slot
    /// (control bytes and key); for the one [`PREFETCH_CASE`] ahead, the case itself (its
    /// slot is in cache by then); for the one [`PREFETCH_DATA`] ahead, the case's data, event
    /// ids and clocks where they are allocations of their own. Only hints: no result
    /// depends on it, and a driver that never calls it gets the same alerts, later.
    pub fn prefetch<'a>(&self, ahead: impl Fn(usize) -> Option<&'a str>) {
        if let Some(case) = ahead(PREFETCH_DATA).and_then(|id| self.case(id)) {
            prefetch_slice(&case.data);
            if let ids @ [_, ..] = case.seen.spilled() {
                prefetch_slice(ids);
            }
            prefetch_slice(case.clocks.spilled());
        }
        let mut ctrl = None;
        if let Some(id) = ahead(PREFETCH_CASE)
            && let Some(index) = self
                .cases
                .find_bucket_index(key_hash(id), |(k, _)| same_id(k, id))
            && let Some((_, case)) = self.cases.get_bucket(index)
        {
            prefetch_bytes(&**case as *const Case as usize, std::mem::size_of::<Case>());
            ctrl = self.ctrl_addr(index);
        }
        if let Some(id) = ahead(PREFETCH_SLOT) {
            // Else from the first full slot, when the table is dense enough for it to be
            // near the start: a table emptied by forgetting keeps its size, and scanning it
            // for a full slot would cost more than the hint saves.
            if ctrl.is_none() && self.cases.len() * 8 >= self.cases.num_buckets() {
                ctrl = self
                    .cases
                    .iter_buckets()
                    .next()
                    .and_then(|i| self.ctrl_addr(i));
            }
            if let Some(ctrl) = ctrl {
                let (group, slot) = self.probe_start(ctrl, key_hash(id));
                prefetch_bytes(group, 16);
                prefetch_bytes(slot, std::mem::size_of::<Slot>());
            }
        }
    }

    /// Where the case map's control bytes start, from the index of a full slot.
    /// hashbrown's layout: the control bytes start where slot 0 ends, and slot `i` lies
    /// `i + 1` slot sizes below them. Should that change, the hints miss and nothing else
    /// happens (the test `the_case_map_is_laid_out_as_prefetch_expects` says so).
    fn ctrl_addr(&self, index: usize) -> Option<usize> {
        let slot = self.cases.get_bucket(index)?;
        let size = std::mem::size_of::<Slot>();
        Some(slot as *const _ as usize + (index + 1) * size)
    }

    /// The addresses of the control bytes and of the slot where hashbrown's probe for
    /// `hash` starts: position `hash mod buckets`.
    fn probe_start(&self, ctrl: usize, hash: u64) -> (usize, usize) {
        let size = std::mem::size_of::<Slot>();
        let pos = hash as usize & (self.cases.num_buckets() - 1);
        (ctrl + pos, ctrl - (pos + 1) * size)
    }

    /// Applies one event to its case. Timers due before the event's time should have been
    /// fired first (`advance_before`). A late event (dated before the engine's clock) may set
    /// deadlines that have already passed: they fire when the clock is next driven (the next
    /// event's `advance_before`, or `advance`), not here. So history delivered after the
    /// clock moved on is judged at its own times, as a replay of it in order would: a case
    /// whose start and in-time stop both arrive late raises nothing (firing here raised a red
    /// and its retraction at once, until 2026-12-06). On error nothing changed.
    pub fn apply(&mut self, ev: &Event, out: &mut Vec<Alert>) -> Result<Applied, EngineError> {
        let rules = self.core.rules.clone();
        let Some(info) = rules.type_info(&ev.kind) else {
            self.core.stats.unknown_types += 1;
            return Ok(Applied::UnknownType);
        };
        let t = ev.time_ms();
        if self.core.zone.to_local(t).div_euclid(DAY) < self.core.cal.first_day_idx() {
            return Err(EngineError::BeforeCalendar {
                event: ev.id.to_string(),
                case: ev.subject.to_string(),
                time: ev.time.to_rfc3339(),
                first_day: self.core.cal.first_day(),
            });
        }
        self.core.now = self.core.now.max(t);
        let hash = id_hash(&ev.id);
        let subject = ev.subject.as_str();
        let key = key_hash(subject);
        let (is_new, case) = match self
            .cases
            .entry(key, |(k, _)| same_id(k, subject), slot_hash)
        {
            hashbrown::hash_table::Entry::Occupied(o) => (false, &mut o.into_mut().1),
            hashbrown::hash_table::Entry::Vacant(v) => {
                if info.handlers.is_empty() {
                    return Ok(Applied::NoEffect);
                }
                let id: Arc<str> = Arc::from(subject);
                let case = Box::new(Case::new(id, t));
                (
                    true,
                    &mut v.insert((CompactString::from(subject), case)).into_mut().1,
                )
            }
        };
        self.core
            .apply(case, is_new, info, hash, ev, out)
            .map_err(|(e, drop_case)| {
                if drop_case && let Ok(slot) = self.cases.find_entry(key, |(k, _)| k == subject) {
                    let ((_, case), _) = slot.remove();
                    self.core.release(&case);
                }
                e
            })
    }
}

impl Core {
    /// Keeps the tag of a case being forgotten for [`Engine::take_released`].
    fn release(&mut self, case: &Case) {
        let tag = case.tag.get();
        if tag != 0 {
            self.released.push(tag);
        }
    }

    /// Keeps a period that went red as missing (`missed`) or whose red was retracted, for
    /// [`Engine::take_period_marks`], while changes are tracked.
    fn mark_period(&mut self, case: &Case, rule: u16, period: i32, due: i64, missed: bool) {
        if self.changed.is_some() {
            self.period_marks.push(PeriodMark {
                due,
                case: case.id.clone(),
                rule,
                period,
                department: case
                    .get("department")
                    .and_then(Datum::as_str)
                    .map(str::to_string),
                missed,
            });
        }
    }

    fn mark_changed(&mut self, id: &Arc<str>) {
        if let Some(c) = &mut self.changed {
            c.insert(id.clone());
        }
    }

    /// The instant of the case's earliest timer, the one the index keeps it under.
    fn earliest(&self, case: &Case) -> Option<i64> {
        let first = case.earliest_timer(self.retention_ms);
        // Every test run (a debug build) checks it against the timers themselves.
        #[cfg(debug_assertions)]
        {
            let mut all = Vec::new();
            case.timers(self.retention_ms, &mut all);
            debug_assert_eq!(first, all.iter().map(|t| t.0).min());
        }
        first
    }

    /// Fires the case's timers due at `due`, in rule and kind order (as a bucket of one
    /// entry per timer, sorted, would), then files the case under its next due instant.
    /// An entry left by an earlier state of the case (its earliest timer is not at `due`
    /// any more) is obsolete and does nothing. Returns false when the case is to be
    /// forgotten: the entry is then handed back.
    fn fire_due(
        &mut self,
        case: &mut Case,
        timer: Timer,
        due: i64,
        out: &mut Vec<Alert>,
    ) -> Option<Timer> {
        case.timers(self.retention_ms, &mut self.scratch);
        if self.scratch.iter().map(|t| t.0).min() != Some(due) {
            self.stats.timer_entries_obsolete += 1;
            return None; // obsolete
        }
        let mut group: SmallVec<[(u16, TimerKind); 4]> = self
            .scratch
            .iter()
            .filter(|t| t.0 == due)
            .map(|t| (t.1, t.2))
            .collect();
        // In the rules' pack order (their numbers, unless a store numbers them otherwise).
        let rules = &self.rules;
        group.sort_unstable_by_key(|&(rule, kind)| (rules.rank(rule), kind));
        group.dedup();
        for (i, &(rule, kind)) in group.iter().enumerate() {
            if i > 0 {
                // Firing one timer may have made another one obsolete.
                case.timers(self.retention_ms, &mut self.scratch);
                if !self.scratch.contains(&(due, rule, kind)) {
                    continue;
                }
            }
            let keep = self.on_timer(case, due, rule, kind, out);
            self.mark_changed(&case.id);
            if !keep {
                return Some(timer);
            }
        }
        if let Some(next) = self.earliest(case) {
            // The entry moves on: no need to read the case's id again.
            self.set_timer(next, timer);
        }
        None
    }

    /// [`Engine::apply`] on the case found or created for the event. On error, the case is
    /// as it was, and the flag says whether it is new and to be removed.
    fn apply(
        &mut self,
        case: &mut Box<Case>,
        is_new: bool,
        info: &TypeInfo,
        hash: u64,
        ev: &Event,
        out: &mut Vec<Alert>,
    ) -> Result<Applied, (EngineError, bool)> {
        let t = ev.time_ms();
        if case.seen.contains(hash) {
            self.stats.duplicates += 1;
            return Ok(Applied::Duplicate);
        }
        if case.seen.len() >= self.max_events {
            return Err((
                EngineError::CaseFull {
                    event: ev.id.to_string(),
                    case: ev.subject.to_string(),
                    events: case.seen.len(),
                },
                false,
            ));
        }
        if case.withdrawn {
            if let Some(n) = case.record_event(hash) {
                warn_many_events(ev, n);
            }
            self.mark_changed(&case.id);
            return Ok(Applied::CaseWithdrawn);
        }
        let old_first = if is_new { None } else { self.earliest(case) };
        // Only handlers that compute calendar deadlines can fail, and only near the edges
        // of the calendar data; there, keep a copy to roll back.
        let day = self.zone.to_local(t).div_euclid(DAY);
        let near_edge = day < self.cal.first_day_idx() + 2
            || day.saturating_add(self.horizon_days) > self.cal.last_day_idx();
        let backup = if !is_new && near_edge && info.handlers.iter().any(can_fail) {
            Some(case.clone())
        } else {
            None
        };
        let mark = (out.len(), self.period_marks.len());
        // A rejected event keeps nothing, not even the deadlines its earlier handlers left
        // pending for want of calendar data, nor their data problems: it counts once.
        let counted = (self.stats.calendar_errors, self.stats.data_problems);
        if let Some(n) = case.record_event(hash) {
            warn_many_events(ev, n);
        }
        case.types |= 1u128 << info.bit;
        case.last_event = case.last_event.max(t);
        self.merge_data(case, ev);
        let types_before = case.types & !(1u128 << info.bit);
        let mut result = Ok(());
        self.applying = true;
        for h in &info.handlers {
            if let Err(e) = self.handle(case, *h, ev, types_before, out) {
                result = Err((e, *h));
                break;
            }
        }
        self.applying = false;
        if let Some(line) = self.held_pending.take()
            && result.is_ok()
        {
            line.log();
            self.pending_logged = true;
        }
        if let Err((source, h)) = result {
            out.truncate(mark.0);
            self.period_marks.truncate(mark.1);
            (self.stats.calendar_errors, self.stats.data_problems) = counted;
            self.stats.calendar_errors += 1;
            let rule = handler_rule(h)
                .map(|r| self.rules.rule(r).id.to_string())
                .unwrap_or_default();
            if let Some(b) = backup {
                *case = b;
            }
            // Without a backup an existing case is kept as it is: unreachable, since
            // can_fail() covers every failing handler.
            return Err((
                EngineError::Calendar {
                    event: ev.id.to_string(),
                    case: ev.subject.to_string(),
                    rule,
                    source: Box::new(source),
                },
                is_new,
            ));
        }
        self.stats.applied += 1;
        self.mark_changed(&case.id);
        // The index has an entry for the case's earliest timer (see `fire_due`): file it
        // anew when that changed. An entry for the old one is left, and found obsolete.
        let first = self.earliest(case);
        if first != old_first
            && let Some(first) = first
        {
            // From the event's subject (the case id, in cache) rather than the case's own
            // copy of it, one more cache line away.
            self.set_timer(
                first,
                (
                    key_hash(ev.subject.as_str()),
                    CompactString::from(ev.subject.as_str()),
                ),
            );
        }
        Ok(Applied::Applied)
    }

    /// Merges the event's data into the case's, later fields overwriting earlier ones.
    fn merge_data(&mut self, case: &mut Case, ev: &Event) {
        let find =
            |data: &[(ArcStr, Datum)], k: &str| data.binary_search_by(|(x, _)| x.as_str().cmp(k));
        let mut grown = false;
        for (n, (k, v)) in ev.data.iter().enumerate() {
            match find(&case.data, k) {
                Ok(i) => {
                    if !case.data[i].1.eq_value(v) {
                        case.data[i].1 = Datum::from_value(v, |s| self.strings.share(k, s));
                    }
                }
                Err(i) => {
                    if !grown {
                        // Grown once, by the new keys (this one and the later ones not
                        // found), one reallocation, not a reserve and a shrink; a new case
                        // with room for `DATA_SLACK` more.
                        let later = ev.data.keys().skip(n + 1);
                        let more = later.filter(|k| find(&case.data, k).is_err()).count();
                        let slack = if case.data.is_empty() { DATA_SLACK } else { 0 };
                        case.data.reserve_exact(1 + more + slack);
                        grown = true;
                    }
                    let key = self.keys.share(k);
                    let value = Datum::from_value(v, |s| self.strings.share(k, s));
                    case.data.insert(i, (key, value));
                }
            }
        }
    }

    /// Shares the strings of a restored case's data with the other cases.
    fn share_data(&mut self, case: &mut Case) {
        for (k, v) in &mut case.data {
            *k = self.keys.share(k);
            if let Datum::Str(s) = v {
                *s = self.strings.share(k, s);
            }
        }
    }

    fn set_timer(&mut self, due: i64, timer: Timer) {
        let bucket = self.timers.bucket(due);
        match bucket.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(timer),
            _ => {
                let mut chunk = Vec::with_capacity(if bucket.is_empty() { 1 } else { CHUNK });
                chunk.push(timer);
                bucket.push(chunk);
            }
        }
        self.timer_entries += 1;
    }

    /// Handles one due timer; returns false when the case is to be forgotten.
    fn on_timer(
        &mut self,
        case: &mut Case,
        due: i64,
        rule: u16,
        kind: TimerKind,
        out: &mut Vec<Alert>,
    ) -> bool {
        match kind {
            TimerKind::Purge => case.active() && !case.withdrawn,
            TimerKind::Yellow | TimerKind::Red => {
                let rules = self.rules.clone();
                let zone = self.zone;
                let Some(clock) = case.active_clock(rule) else {
                    return true;
                };
                let (level, reason) = if kind == TimerKind::Yellow {
                    if clock.yellow_fired || clock.yellow_at.get() != Some(due) {
                        return true;
                    }
                    clock.yellow_fired = true;
                    (Level::Yellow, Reason::Approaching)
                } else {
                    if clock.red_fired || clock.deadline.get() != Some(due) {
                        return true;
                    }
                    clock.red_fired = true;
                    (Level::Red, Reason::Overdue)
                };
                let (occ, deadline) = (clock.occurrence(level), clock.deadline.get());
                out.push(make_alert(
                    &rules,
                    &zone,
                    case,
                    rule,
                    &occ,
                    level,
                    Status::Firing,
                    reason,
                    due,
                    deadline,
                    None,
                ));
                true
            }
            TimerKind::Period => {
                self.on_period(case, due, rule, out);
                true
            }
        }
    }

    fn on_period(&mut self, case: &mut Case, due: i64, rule: u16, out: &mut Vec<Alert>) {
        let rules = self.rules.clone();
        let RuleKind::Periodic(p) = &rules.rule(rule).kind else {
            return;
        };
        let Some(pos) = case.duties.iter().position(|d| d.rule == rule) else {
            return;
        };
        if case.duties[pos].due != due {
            return;
        }
        let period = case.duties[pos].period;
        if case.duties[pos].pending {
            // The due time of `period` could not be computed before: try again.
            self.schedule_duty(case, pos, p, period);
            return;
        }
        if !case.duties[pos].met.contains(&period) {
            case.duties[pos].missing.push((period, due));
            self.mark_period(case, rule, period, due, true);
            let label = period_label(p.period, period);
            out.push(make_alert(
                &rules,
                &self.zone,
                case,
                rule,
                &label,
                Level::Red,
                Status::Firing,
                Reason::Missing,
                due,
                Some(due),
                Some(format!("no `{}` for {label}", p.fulfil)),
            ));
        }
        self.schedule_duty(case, pos, p, period + 1);
    }

    /// The period a fulfilling event's label names (a string, or a number for a year), if
    /// it is of the duty's kind. A label of another kind of period (an annual report `2026`
    /// for a quarterly duty) is not this duty's report; one that names no period at all
    /// (`2026-Q3`, `第三季度`) is a data problem: it meets none, and the period it was meant
    /// for may go red.
    fn labelled_period(
        &mut self,
        r: u16,
        p: &PeriodicRule,
        field: &str,
        value: &Value,
        ev: &Event,
    ) -> Option<i32> {
        let label = match value {
            Value::String(s) => Some(std::borrow::Cow::from(s.as_str())),
            Value::Number(n) if n.is_u64() => Some(n.to_string().into()),
            _ => None,
        };
        if let Some(x) = label.as_deref().and_then(|l| parse_period(p.period, l)) {
            return Some(x);
        }
        let is_period = label.as_deref().is_some_and(|l| {
            [Period::Month, Period::Quarter, Period::Year]
                .into_iter()
                .any(|k| parse_period(k, l).is_some())
        });
        if is_period {
            tracing::debug!(event = %ev.id, case = %ev.subject, field = %field, value = %value,
                "report for another kind of period");
        } else if let Some(problems) = self.data_problem(r) {
            tracing::warn!(rule = %self.rules.rule(r).id, event = %ev.id, case = %ev.subject,
                field = %field, value = %value, problems,
                "the period label is none of `2026Q3`, `2026-07`, `2026`; the report meets \
                 no period (logged at the 1st, 10th, 100th, ... data problem of the rule)");
        }
        None
    }

    /// The period a fulfilling event without a label at `t` is for: the oldest period
    /// missing at `t` (due before it), else the one watched at `t` (the first whose due time
    /// is at or after it). The same however late the event is delivered: a period that
    /// went red only because the event came late, or that was met while it was held back,
    /// is still the one watched at `t`. Without the duty's start (a duty stored before it
    /// was kept) or a due time the calendar cannot give: the oldest missing period, else
    /// the one watched now.
    fn unlabelled_period(&self, d: &Duty, p: &PeriodicRule, t: i64) -> i32 {
        let oldest_missing = d.missing.iter().min_by_key(|m| m.0).copied();
        if let Some((m, due)) = oldest_missing
            && due < t
        {
            return m;
        }
        let now = oldest_missing.map_or(d.period, |m| m.0);
        let Some(start) = d.start else {
            return now;
        };
        let counting = Counting {
            cal: &self.cal,
            zone: &self.zone,
        };
        let due_of = |x: i32| -> Option<i64> {
            if let Some(&(_, due)) = d.missing.iter().find(|m| m.0 == x) {
                Some(due)
            } else if x == d.period && !d.pending {
                Some(d.due)
            } else {
                period_due(&counting, p, x).ok()
            }
        };
        let mut w = period_index(p.period, self.zone.date_of(t)).max(start);
        while w > start {
            match due_of(w - 1) {
                Some(due) if due >= t => w -= 1,
                Some(_) => break,
                None => return now,
            }
        }
        w
    }

    /// Computes the deadlines of the case's pending clocks that the calendar now covers;
    /// true when one was.
    fn settle_pending(&mut self, case: &mut Case) -> bool {
        let counting = Counting {
            cal: &self.cal,
            zone: &self.zone,
        };
        let mut settled = false;
        for clock in case.clocks.iter_mut().filter(|c| c.deadline_pending()) {
            let (Mode::Span(st), Some(since)) = (clock.mode, clock.since.get()) else {
                continue;
            };
            if let Ok((deadline, yellow)) = counting.schedule_span(&st.span(), since, clock.counted)
            {
                clock.deadline = Some(deadline).into();
                clock.last_deadline = Some(deadline).into();
                if !clock.yellow_fired {
                    clock.yellow_at = Some(yellow).into();
                }
                settled = true;
            }
        }
        settled
    }

    /// Counts and logs a clock left without a deadline for want of calendar data.
    fn clock_pending(&mut self, case: &str, rule: u16, ev: &Event, e: &CalendarError) {
        self.stats.calendar_errors += 1;
        let rule = self.rules.rule(rule).id.clone();
        // Every case accepted in December may need next year: say it once loudly, then per
        // case only at debug level (the metric counts all).
        if self.first_pending() {
            self.log_first_pending(PendingLine::Clock {
                case: case.to_string(),
                rule,
                event: ev.id.to_string(),
                error: e.to_string(),
            });
        } else {
            tracing::debug!(case = %case, rule = %rule, event = %ev.id, error = %e,
                "deadline pending: no calendar data for it yet");
        }
    }

    /// Whether a deadline or duty left pending now would be the one logged at error level.
    fn first_pending(&self) -> bool {
        !self.pending_logged && self.held_pending.is_none()
    }

    /// Logs the first pending line at error level, or, while an event's handlers run,
    /// holds it until the event is applied (dropped when it is rejected).
    fn log_first_pending(&mut self, line: PendingLine) {
        if self.applying {
            self.held_pending = Some(line);
        } else {
            line.log();
            self.pending_logged = true;
        }
    }

    /// Sets a duty to watch `period`. When the calendar has no data for its due time yet
    /// (next year's holiday notice is not out), the duty stays, marked pending, and tries
    /// again when the data runs out or a day later: counted and logged meanwhile, never
    /// guessed, and never a reason to reject the event that started the duty.
    fn schedule_duty(&mut self, case: &mut Case, pos: usize, p: &PeriodicRule, period: i32) {
        let counting = Counting {
            cal: &self.cal,
            zone: &self.zone,
        };
        let result = period_due(&counting, p, period);
        let data_end = self.zone.to_utc((self.cal.last_day_idx() + 1) * DAY);
        let rule_id = self.rules.rule(case.duties[pos].rule).id.clone();
        let d = &mut case.duties[pos];
        d.period = period;
        d.met.retain(|m| *m >= period);
        match result {
            Ok(due) => {
                d.due = due;
                d.pending = false;
            }
            Err(e) => {
                self.stats.calendar_errors += 1;
                // Every market registered this quarter hits the same missing year: say it
                // once loudly, then per case only at debug level (the metric counts all).
                if self.first_pending() {
                    self.log_first_pending(PendingLine::Duty {
                        case: case.id.to_string(),
                        rule: rule_id,
                        period: period_label(p.period, period),
                        error: e.to_string(),
                    });
                } else {
                    tracing::debug!(case = %case.id, rule = %rule_id, period = %period_label(p.period, period),
                        error = %e, "periodic duty pending: no calendar data for its due time");
                }
                d.due = data_end.max(self.now.saturating_add(DAY));
                d.pending = true;
            }
        }
    }

    fn handle(
        &mut self,
        case: &mut Case,
        h: Handler,
        ev: &Event,
        types_before: u128,
        out: &mut Vec<Alert>,
    ) -> Result<(), CalendarError> {
        let rules = self.rules.clone();
        let t = ev.time_ms();
        let zone = self.zone;
        match h {
            Handler::Withdraw => {
                self.withdraw(case, t, out);
            }
            Handler::Stop(r) => {
                let Some(clock) = case.active_clock(r) else {
                    return Ok(());
                };
                if t < clock.started {
                    // A stop of an earlier cycle, delivered late, leaves this cycle running.
                    // With no earlier cycle it stops nothing either: a decision cannot come
                    // before the acceptance it decides, so one dated so is a wrong time (or
                    // a case's events in the wrong order), and the clock runs on. Counted
                    // and logged for the producer.
                    self.before_start(r, ev, clock, "stop");
                    return Ok(());
                }
                if clock.deadline_pending() {
                    // The deadline lies beyond the data, so a stop on a day the data covers
                    // is in time; on a day it does not cover, that is not known: an error.
                    self.cal
                        .is_workday_idx(self.zone.to_local(t).div_euclid(DAY))?;
                }
                let late = match (clock.deadline.get(), clock.since.get()) {
                    (Some(d), Some(_)) => t > d,
                    _ => clock.red_fired,
                };
                let (before_yellow, _) = clock.came_before_lights(t);
                clock.stopped = Some(t).into();
                clock.late = late;
                clock.since = None.into();
                if clock.deadline.get().is_some() {
                    clock.last_deadline = clock.deadline.get().into();
                }
                let (yf, rf) = (clock.yellow_fired, clock.red_fired);
                // Written out only for the alerts they go into: most clocks stop without
                // having fired.
                let occurrence = |fired: bool, level| {
                    if fired {
                        clock.occurrence(level)
                    } else {
                        CompactString::const_new("")
                    }
                };
                let (yellow_occ, red_occ) =
                    (occurrence(yf, Level::Yellow), occurrence(rf, Level::Red));
                let deadline = clock.last_deadline.get();
                let at = self.now;
                let yellow_reason = if late {
                    Reason::CompletedLate
                } else if before_yellow {
                    Reason::Retracted
                } else {
                    Reason::Completed
                };
                let red_reason = if late {
                    Reason::CompletedLate
                } else {
                    Reason::Retracted
                };
                // A light retracted is on record as not having fired, as a retraction by a
                // pause or an extension leaves it: the clock's facts are those of its events'
                // times, however late they were delivered.
                if yf && yellow_reason == Reason::Retracted {
                    clock.yellow_fired = false;
                }
                if rf && red_reason == Reason::Retracted {
                    clock.red_fired = false;
                }
                if yf {
                    out.push(make_alert(
                        &rules,
                        &zone,
                        case,
                        r,
                        &yellow_occ,
                        Level::Yellow,
                        Status::Resolved,
                        yellow_reason,
                        at,
                        deadline,
                        None,
                    ));
                }
                if rf {
                    out.push(make_alert(
                        &rules,
                        &zone,
                        case,
                        r,
                        &red_occ,
                        Level::Red,
                        Status::Resolved,
                        red_reason,
                        at,
                        deadline,
                        None,
                    ));
                }
            }
            Handler::Pause(r) => {
                let counting = Counting {
                    cal: &self.cal,
                    zone: &self.zone,
                };
                let Some(clock) = case.active_clock(r) else {
                    return Ok(());
                };
                if t < clock.started {
                    // As a stop (above): a pause of an earlier cycle, delivered late, leaves
                    // this one running; with no earlier cycle it is a wrong time. Taken as a
                    // pause at the start, it held the clock at its start for good unless a
                    // resume came, and the case never went yellow or red.
                    self.before_start(r, ev, clock, "pause");
                    return Ok(());
                }
                let (Mode::Span(s), Some(since)) = (clock.mode, clock.since.get()) else {
                    return Ok(());
                };
                let t = t.max(since);
                let counted = counting.counted(s.unit, s.origin, since, t)?;
                let (old_deadline, old_yellow) = (clock.deadline.get(), clock.yellow_at.get());
                clock.counted += counted;
                clock.since = None.into();
                clock.paused_at = Some(t).into();
                clock.last_deadline = clock.deadline.get().into();
                clock.deadline = None.into();
                clock.yellow_at = None.into();
                self.reconcile(case, r, t, old_deadline, old_yellow, out);
                keep_fired_yellow(case, r, t, old_yellow);
            }
            Handler::Resume(r) => {
                let counting = Counting {
                    cal: &self.cal,
                    zone: &self.zone,
                };
                let Some(clock) = case.active_clock(r) else {
                    return Ok(());
                };
                let (Mode::Span(s), None, Some(paused)) =
                    (clock.mode, clock.since.get(), clock.paused_at.get())
                else {
                    return Ok(());
                };
                let since = t.max(paused);
                // Paused after its deadline had passed, its counted time past the limit: the
                // breach happened before the pause, and the deadline stays where it was
                // (counting on from the resume would give the rest of the resume day, and
                // a stop on that day would retract the red of a case that was late).
                let ran_out = clock
                    .last_deadline
                    .get()
                    .filter(|&d| d < paused && clock.counted >= s.limit);
                let Schedule {
                    deadline,
                    yellow,
                    pending,
                } = match ran_out {
                    Some(d) => Schedule {
                        deadline: Some(d),
                        yellow: Some(d),
                        pending: None,
                    },
                    None => schedule_or_pending(&counting, &s.span(), since, clock.counted)?,
                };
                clock.since = Some(since).into();
                clock.paused_at = None.into();
                clock.deadline = deadline.into();
                // A yellow that fired keeps the instant it fired at (the pause kept it).
                if !clock.yellow_fired {
                    clock.yellow_at = yellow.into();
                }
                if let Some(e) = pending {
                    self.clock_pending(&case.id, r, ev, &e);
                }
            }
            Handler::Extend(r) => {
                let RuleKind::Deadline(d) = &rules.rule(r).kind else {
                    return Ok(());
                };
                let Some(ext) = &d.extend else {
                    return Ok(());
                };
                let counting = Counting {
                    cal: &self.cal,
                    zone: &self.zone,
                };
                let cap = variant_for(d, case)
                    .and_then(|v| v.extend_max)
                    .or(ext.max)
                    .unwrap_or(u32::MAX);
                let raw = ev.data.get(&ext.field);
                let requested = raw.and_then(as_count).and_then(|n| u32::try_from(n).ok());
                let Some(clock) = case.active_clock(r) else {
                    return Ok(());
                };
                if t < clock.started {
                    // As a stop (above): an extension of an earlier cycle, delivered late,
                    // gives this one no time, nor counts against its cap.
                    self.before_start(r, ev, clock, "extension");
                    return Ok(());
                }
                let Mode::Span(mut s) = clock.mode else {
                    return Ok(());
                };
                let Some(requested) = requested else {
                    if let Some(problems) = self.data_problem(r) {
                        // The value as sent: "missing", or what it was (a word, a
                        // negative or fractional number, one past 4,294,967,295).
                        let value = raw.map_or_else(|| "missing".to_string(), Value::to_string);
                        tracing::warn!(rule = %rules.rule(r).id, event = %ev.id,
                            case = %ev.subject, field = %ext.field, value, problems,
                            "extension is not a whole number of units from 0 to 4294967295; \
                             ignored (logged at the 1st, 10th, 100th, ... data problem of the \
                             rule)");
                    }
                    return Ok(());
                };
                // An extension granted after the clock ran out does not move its deadline:
                // the case was already late (Art. 42 of the licensing law has the extension
                // approved within the period). The request still counts against the cap.
                let granted = if clock.ran_out_before(t) {
                    0
                } else {
                    requested.min(cap.saturating_sub(clock.extended))
                };
                let new_total = clock.extended.saturating_add(requested);
                // Nothing granted, nothing moves (and a clock that ran out keeps its
                // deadline, which counting again from `since` would not give).
                let schedule = match clock.since.get() {
                    Some(since) if granted > 0 => {
                        let mut s2 = s;
                        s2.limit += i64::from(granted) * s.unit.ms();
                        Some(schedule_or_pending(
                            &counting,
                            &s2.span(),
                            since,
                            clock.counted,
                        )?)
                    }
                    _ => None,
                };
                s.limit += i64::from(granted) * s.unit.ms();
                clock.mode = Mode::Span(s);
                clock.extended += granted;
                let (old_deadline, old_yellow) = (clock.deadline.get(), clock.yellow_at.get());
                let mut pending = None;
                if let Some(schedule) = schedule {
                    clock.deadline = schedule.deadline.into();
                    clock.yellow_at = schedule.yellow.into();
                    pending = schedule.pending;
                }
                let unit = s.unit;
                if new_total > cap {
                    self.violation(
                        case,
                        r,
                        &ev.id,
                        t,
                        format!(
                            "extensions total {new_total} {}, more than the {cap} allowed",
                            unit.name()
                        ),
                        out,
                    );
                }
                self.reconcile(case, r, t, old_deadline, old_yellow, out);
                keep_fired_yellow(case, r, t, old_yellow);
                if let Some(e) = pending {
                    self.clock_pending(&case.id, r, ev, &e);
                }
            }
            Handler::Start(r) => {
                let RuleKind::Deadline(d) = &rules.rule(r).kind else {
                    return Ok(());
                };
                if case.active_clock(r).is_some()
                    || !self.applies(r, &d.when, &d.condition, case, ev)
                {
                    return Ok(());
                }
                // A stop of this rule already seen, with no clock of it ever started: the
                // case's events arrived out of order (two source systems, say), and the
                // clock runs until another stop comes (docs/rules.md). Counted and logged,
                // so that the producer can be put right.
                if types_before != 0
                    && !case.clocks.iter().any(|c| c.rule == r)
                    && let Some(stop) = d.stop.iter().find(|s| {
                        rules
                            .type_bit(s)
                            .is_some_and(|b| types_before & (1u128 << b) != 0)
                    })
                    && let Some(problems) = self.data_problem(r)
                {
                    tracing::warn!(rule = %rules.rule(r).id, event = %ev.id, case = %ev.subject,
                        stop = %stop, problems,
                        "the case had this clock's stop before its start: events out of order; \
                         the clock runs until another stop (logged at the 1st, 10th, 100th, \
                         ... data problem of the rule)");
                }
                self.start_clock(case, r, d, ev, out)?;
            }
            Handler::Stage(r, n) => {
                let RuleKind::Sequence(s) = &rules.rule(r).kind else {
                    return Ok(());
                };
                if !self.applies(r, &s.when, &None, case, ev) {
                    return Ok(());
                }
                let pos = match case.stages.iter().position(|x| x.rule == r) {
                    Some(p) => p,
                    None => {
                        case.stages.push(Stages { rule: r, last: -1 });
                        case.stages.len() - 1
                    }
                };
                let last = case.stages[pos].last;
                let n = i16::from(n);
                let detail = if n <= last {
                    (n < last).then(|| {
                        format!(
                            "stage `{}` came after `{}`",
                            s.stages[n as usize], s.stages[last as usize]
                        )
                    })
                } else if n > last + 1 {
                    let skipped: Vec<&str> = s.stages[(last + 1) as usize..n as usize]
                        .iter()
                        .map(String::as_str)
                        .collect();
                    Some(format!(
                        "stage `{}` without {}",
                        s.stages[n as usize],
                        skipped
                            .iter()
                            .map(|x| format!("`{x}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                } else {
                    None
                };
                case.stages[pos].last = last.max(n);
                if let Some(detail) = detail {
                    self.violation(case, r, &ev.id, t, detail, out);
                }
            }
            Handler::Check(r) => {
                let RuleKind::Check(c) = &rules.rule(r).kind else {
                    return Ok(());
                };
                if !self.applies(r, &c.when, &None, case, ev) {
                    return Ok(());
                }
                match self.eval(&c.condition, case, ev, types_before) {
                    Ok(true) => {
                        let detail = c
                            .message
                            .clone()
                            .unwrap_or_else(|| format!("condition holds: {}", c.condition.source));
                        self.violation(case, r, &ev.id, t, detail, out);
                    }
                    Ok(false) => {}
                    Err(msg) => {
                        if let Some(problems) = self.data_problem(r) {
                            tracing::warn!(rule = %rules.rule(r).id, event = %ev.id,
                                case = %ev.subject, condition = %c.condition.source,
                                error = %msg, problems,
                                "check condition failed to evaluate (logged at the 1st, \
                                 10th, 100th, ... data problem of the rule)");
                        }
                    }
                }
            }
            Handler::PeriodicStart(r) => {
                let RuleKind::Periodic(p) = &rules.rule(r).kind else {
                    return Ok(());
                };
                if case.duties.iter().any(|d| d.rule == r)
                    || !self.applies(r, &p.when, &None, case, ev)
                {
                    return Ok(());
                }
                let period = period_index(p.period, self.zone.date_of(t));
                case.duties.push(Duty {
                    rule: r,
                    period,
                    due: i64::MAX,
                    met: Vec::new(),
                    missing: Vec::new(),
                    pending: false,
                    start: Some(period),
                });
                let pos = case.duties.len() - 1;
                self.schedule_duty(case, pos, p, period);
            }
            Handler::PeriodicFulfil(r) => {
                let RuleKind::Periodic(p) = &rules.rule(r).kind else {
                    return Ok(());
                };
                let Some(pos) = case.duties.iter().position(|d| d.rule == r) else {
                    return Ok(());
                };
                let period = match &p.period_field {
                    Some(f) => match ev.data.get(f) {
                        // Without a label the report is for the oldest period still open
                        // when it was made: a missing one if any, else the one watched then.
                        None | Some(Value::Null) => self.unlabelled_period(&case.duties[pos], p, t),
                        Some(value) => match self.labelled_period(r, p, f, value, ev) {
                            Some(x) => x,
                            None => return Ok(()),
                        },
                    },
                    None => period_index(p.period, self.zone.date_of(t)),
                };
                let duty = &mut case.duties[pos];
                if let Some(i) = duty.missing.iter().position(|m| m.0 == period) {
                    let (_, missed_due) = duty.missing.remove(i);
                    let label = period_label(p.period, period);
                    // Made by its due time but delivered after the red fired: the red was
                    // a false alarm of late delivery (SPEC §4), as for a clock's stop, and
                    // the period was met. The daemon takes its `missing` row off the
                    // scorecard's ledger ([`Engine::take_period_marks`]).
                    let (reason, detail) = if t <= missed_due {
                        self.mark_period(case, r, period, missed_due, false);
                        (
                            Reason::Retracted,
                            format!(
                                "`{}` for {label} was made in time and delivered late",
                                p.fulfil
                            ),
                        )
                    } else {
                        (
                            Reason::CompletedLate,
                            format!("`{}` for {label} came late", p.fulfil),
                        )
                    };
                    out.push(make_alert(
                        &rules,
                        &zone,
                        case,
                        r,
                        &label,
                        Level::Red,
                        Status::Resolved,
                        reason,
                        self.now,
                        Some(missed_due),
                        Some(detail),
                    ));
                } else if period >= duty.period && !duty.met.contains(&period) {
                    duty.met.push(period);
                }
            }
        }
        Ok(())
    }

    /// Whether rule `r` applies to the case now: its `when` on the case's data and its CEL
    /// condition, if any. A condition that fails to evaluate does not apply (and is counted,
    /// and logged now and then: [`Core::data_problem`]).
    fn applies(
        &mut self,
        r: u16,
        when: &Matcher,
        condition: &Option<Condition>,
        case: &Case,
        ev: &Event,
    ) -> bool {
        self.judge_values(r, case, ev);
        if !when.matches(|k, want| case.get(k).is_some_and(|have| have.matches_json(want))) {
            return false;
        }
        match condition {
            None => true,
            Some(c) => match self.eval(c, case, ev, case.types) {
                Ok(b) => b,
                Err(msg) => {
                    if let Some(problems) = self.data_problem(r) {
                        tracing::warn!(rule = %self.rules.rule(r).id, event = %ev.id,
                            case = %ev.subject, condition = %c.source, error = %msg, problems,
                            "condition failed to evaluate; rule not applied (logged at the \
                             1st, 10th, 100th, ... data problem of the rule)");
                    }
                    false
                }
            },
        }
    }

    /// A field of the case's data that rule `r` declares `values` for (see
    /// [`crate::rules::Rule::values`]), holding none of them, is a data problem of the
    /// rule: a `kind` of `"Promised"` matches neither `when = { kind = "promised" }` nor
    /// `"immediate"`, and would start no clock without a word.
    fn judge_values(&mut self, r: u16, case: &Case, ev: &Event) {
        let values = &self.rules.rule(r).values;
        if values.is_empty() {
            return;
        }
        let Some((field, have, allowed)) = values.iter().find_map(|(field, allowed)| {
            let have = case.get(field)?;
            (!allowed.iter().any(|v| have.matches_json(v))).then(|| {
                (
                    field.clone(),
                    have.to_value(),
                    crate::rules::listed(allowed),
                )
            })
        }) else {
            return;
        };
        if let Some(problems) = self.data_problem(r) {
            tracing::warn!(rule = %self.rules.rule(r).id, event = %ev.id, case = %ev.subject,
                field = %field, value = %have, allowed = %allowed, problems,
                "the field holds none of the values the rule declares for it; a `when` on it \
                 matches nothing (logged at the 1st, 10th, 100th, ... data problem of the \
                 rule)");
        }
    }

    /// For a stop, pause or extension dated before `clock`'s start, which does nothing: with
    /// no earlier cycle of the rule it is a wrong time, counted and logged (at the 1st, 10th,
    /// 100th, …); a late one of an earlier cycle is no problem.
    fn before_start(&mut self, r: u16, ev: &Event, clock: &Clock, what: &str) {
        if clock.cycle != 1 {
            return;
        }
        if let Some(problems) = self.data_problem(r) {
            let started = self.zone.format(clock.started);
            tracing::warn!(rule = %self.rules.rule(r).id, event = %ev.id,
                case = %ev.subject, time = %ev.time.to_rfc3339(), started, problems,
                "a {what} dated before its clock's start does nothing; the clock runs on \
                 (logged at the 1st, 10th, 100th, ... data problem of the rule)");
        }
    }

    /// Counts a data problem of rule `r` (a condition that failed to evaluate, an extension
    /// that is not a whole number, a due time that is not one), and gives the rule's count
    /// of them when it is one to log: the 1st, the 10th, the 100th, and so on. A condition
    /// on a field most events lack (`data.fee > 0` rather than `has(data.fee) && data.fee >
    /// 0`), or a producer that sends every extension in words, makes one on every event of
    /// its type, and a line each would bury the log; every one is counted in
    /// [`Stats::data_problems`] (`redlight_data_problems_total`).
    fn data_problem(&mut self, r: u16) -> Option<u64> {
        self.stats.data_problems += 1;
        let i = usize::from(r);
        if self.data_problems.len() <= i {
            self.data_problems.resize(i + 1, 0);
        }
        let n = self.data_problems[i] + 1;
        self.data_problems[i] = n;
        is_power_of_ten(n).then_some(n)
    }

    /// Evaluates a CEL condition with `event`, `data` and `case` (its id, merged data and
    /// the event types seen before this event), building only the variables the program
    /// reads, as CEL values made directly from the event and the case ([`cel_value`]), in a
    /// context over one shared standard environment ([`crate::rules::cel_env`]).
    fn eval(&self, c: &Condition, case: &Case, ev: &Event, types: u128) -> Result<bool, String> {
        let mut cx = cel::Context::with_env(crate::rules::cel_env());
        if c.reads.event || c.reads.data {
            let data = cel_map(ev.data.iter().map(|(k, v)| (k, cel_value(v))));
            if c.reads.event {
                let time = ev.time.to_rfc3339();
                let event = cel_map([
                    ("id", cel_string(&ev.id)),
                    ("type", cel_string(&ev.kind)),
                    ("source", cel_string(&ev.source)),
                    ("subject", cel_string(&ev.subject)),
                    ("time", cel_string(&time)),
                    ("data", data.clone()),
                ]);
                cx.add_variable_from_value("event", event);
            }
            if c.reads.data {
                cx.add_variable_from_value("data", data);
            }
        }
        if c.reads.case {
            let data = cel_map(
                case.data
                    .iter()
                    .map(|(k, v)| (&**k, cel_value(&v.to_value()))),
            );
            let types = self.rules.types_of(types).into_iter().map(cel_string);
            let case = cel_map([
                ("id", cel_string(&case.id)),
                ("data", data),
                ("types", cel::Value::List(Arc::new(types.collect()))),
            ]);
            cx.add_variable_from_value("case", case);
        }
        match c.program.execute(&cx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("evaluated to {other:?}, not a boolean")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn start_clock(
        &mut self,
        case: &mut Case,
        r: u16,
        d: &DeadlineRule,
        ev: &Event,
        out: &mut Vec<Alert>,
    ) -> Result<(), CalendarError> {
        let counting = Counting {
            cal: &self.cal,
            zone: &self.zone,
        };
        let s = ev.time_ms();
        let limit = variant_for(d, case)
            .and_then(|v| v.limit.as_ref())
            .unwrap_or(&d.limit);
        let (warn_share, warn_before) = match d.warn {
            crate::rules::Warn::Share(x) => (Some(x), None),
            crate::rules::Warn::Before { unit, amount } => (None, Some((unit, amount))),
        };
        let mut violation = None;
        let mode = match limit {
            Limit::Span { unit, amount } => Mode::Span(SpanState {
                unit: *unit,
                origin: counting.origin(*unit, s),
                limit: i64::from(*amount) * unit.ms(),
                warn_share,
                warn_before,
            }),
            Limit::SpanFrom { unit, field, max } => {
                let given: Option<std::borrow::Cow<'_, Value>> = match ev.data.get(field) {
                    Some(v) => Some(std::borrow::Cow::Borrowed(v)),
                    None => case
                        .get(field)
                        .map(|d| std::borrow::Cow::Owned(d.to_value())),
                };
                let amount = match given.as_deref().map(|v| (v, as_count(v))) {
                    Some((_, Some(n))) if n >= 1 && n <= u64::from(*max) => n as u32,
                    Some((_, Some(n))) if n > u64::from(*max) => {
                        violation = Some(format!(
                            "`{field}` is {n} {}, more than the statutory {max}",
                            unit.name()
                        ));
                        *max
                    }
                    Some((v, _)) => {
                        violation = Some(format!(
                            "`{field}` is {v}, not a whole number of {} from 1 to {max}",
                            unit.name()
                        ));
                        *max
                    }
                    None => {
                        violation = Some(format!("`{field}` is missing: no promised time limit"));
                        *max
                    }
                };
                Mode::Span(SpanState {
                    unit: *unit,
                    origin: counting.origin(*unit, s),
                    limit: i64::from(amount) * unit.ms(),
                    warn_share,
                    warn_before,
                })
            }
            Limit::SameWorkday => {
                let deadline = counting.same_workday_end(s)?;
                Mode::Fixed {
                    deadline,
                    warn_at: fixed_yellow(s, deadline, d.warn),
                }
            }
            Limit::DueFrom { field } => {
                let due = ev
                    .data
                    .get(field)
                    .and_then(Value::as_str)
                    .and_then(|x| chrono::DateTime::parse_from_rfc3339(x).ok());
                let Some(due) = due else {
                    if let Some(problems) = self.data_problem(r) {
                        tracing::warn!(rule = %self.rules.rule(r).id, event = %ev.id,
                            case = %ev.subject, field = %field, problems,
                            "no RFC 3339 due time in the event; the clock cannot start \
                             (logged at the 1st, 10th, 100th, ... data problem of the rule)");
                    }
                    return Ok(());
                };
                let deadline = due.timestamp_millis();
                Mode::Fixed {
                    deadline,
                    warn_at: fixed_yellow(s, deadline, d.warn),
                }
            }
        };
        let Schedule {
            deadline,
            yellow,
            pending,
        } = match &mode {
            Mode::Span(st) => schedule_or_pending(&counting, &st.span(), s, 0)?,
            Mode::Fixed { deadline, warn_at } => Schedule {
                deadline: Some(*deadline),
                yellow: Some(*warn_at),
                pending: None,
            },
        };
        if let (Limit::DueFrom { field }, Mode::Fixed { deadline, .. }) = (limit, &mode)
            && *deadline < s
            && let Some(problems) = self.data_problem(r)
        {
            // Kept as given (the order says so, and the clock is overdue at once), but a
            // due time before the order itself is a mistyped date, usually.
            tracing::warn!(rule = %self.rules.rule(r).id, event = %ev.id, case = %ev.subject,
                field = %field, due = %self.zone.format(*deadline),
                time = %ev.time.to_rfc3339(), problems,
                "the due time is before the event's own time; the clock is overdue at once \
                 (logged at the 1st, 10th, 100th, ... data problem of the rule)");
        }
        let cycle = case
            .clocks
            .iter()
            .filter(|c| c.rule == r)
            .map(|c| c.cycle)
            .max()
            .unwrap_or(0)
            + 1;
        case.clocks.push(Clock {
            rule: r,
            cycle,
            started: s,
            mode,
            extended: 0,
            counted: 0,
            since: OptMs::some(s),
            paused_at: OptMs::NONE,
            deadline: deadline.into(),
            yellow_at: yellow.into(),
            last_deadline: deadline.into(),
            yellow_fired: false,
            red_fired: false,
            stopped: OptMs::NONE,
            late: false,
            yellow_retractions: 0,
            red_retractions: 0,
        });
        if let Some(e) = pending {
            self.clock_pending(&case.id, r, ev, &e);
        }
        if let Some(detail) = violation {
            self.violation(case, r, &ev.id, s, detail, out);
        }
        Ok(())
    }

    /// After a pause or an extension whose own time `t` is before the old deadline (or
    /// yellow): a red or yellow that fired in the meantime was a false alarm caused by late
    /// delivery, and is retracted (SPEC §4).
    fn reconcile(
        &mut self,
        case: &mut Case,
        r: u16,
        t: i64,
        old_deadline: Option<i64>,
        old_yellow: Option<i64>,
        out: &mut Vec<Alert>,
    ) {
        let now = self.now;
        let zone = self.zone;
        let rules = self.rules.clone();
        let Some(clock) = case.active_clock(r) else {
            return;
        };
        let mut retract = Vec::new();
        if clock.red_fired
            && old_deadline.is_some_and(|d| t <= d)
            && clock.deadline.get().is_none_or(|d| d > now)
        {
            clock.red_fired = false;
            retract.push(Level::Red);
        }
        if clock.yellow_fired
            && old_yellow.is_some_and(|y| t <= y)
            && clock.yellow_at.get().is_none_or(|y| y > now)
        {
            clock.yellow_fired = false;
            retract.push(Level::Yellow);
        }
        if retract.is_empty() {
            return;
        }
        let deadline = clock.deadline.get().or(clock.last_deadline.get());
        let retract: Vec<(Level, CompactString)> = retract
            .into_iter()
            .map(|level| {
                let occ = clock.occurrence(level);
                clock.retracted(level);
                (level, occ)
            })
            .collect();
        for (level, occ) in retract {
            out.push(make_alert(
                &rules,
                &zone,
                case,
                r,
                &occ,
                level,
                Status::Resolved,
                Reason::Retracted,
                now,
                deadline,
                None,
            ));
        }
    }

    fn violation(
        &mut self,
        case: &mut Case,
        r: u16,
        key: &str,
        t: i64,
        detail: String,
        out: &mut Vec<Alert>,
    ) {
        out.push(make_alert(
            &self.rules,
            &self.zone,
            case,
            r,
            key,
            Level::Red,
            Status::Firing,
            Reason::Violation,
            self.now.max(t),
            None,
            Some(detail.clone()),
        ));
        // On record at the event's own time, when the rule was broken: the same however late
        // the event was delivered (the scorecard counts it in the period it happened in);
        // the alert's `at` is the engine's clock, when the light changed (SPEC §4).
        case.violations.push(Violation {
            rule: r,
            key: key.to_string(),
            at: t,
            detail,
            resolved: false,
        });
    }

    /// The applicant withdrew: every clock stops, lights that fired are resolved with
    /// reason `withdrawn` (`retracted` when the withdrawal came at or before their instant,
    /// delivered late), and the case goes quiet.
    fn withdraw(&mut self, case: &mut Case, t: i64, out: &mut Vec<Alert>) {
        let at = self.now;
        let zone = self.zone;
        let rules = self.rules.clone();
        let mut resolved = Vec::new();
        for c in case.clocks.iter_mut().filter(|c| c.active()) {
            let (before_yellow, before_red) = c.came_before_lights(t);
            c.stopped = Some(t).into();
            c.since = None.into();
            if c.deadline.get().is_some() {
                c.last_deadline = c.deadline.get().into();
            }
            // A light whose instant the withdrawal came at or before fired only because the
            // withdrawal was delivered late: a false alarm, `retracted` and on record as not
            // having fired, as with a stop (see `Handler::Stop`); the others `withdrawn`.
            for (fired, before, level) in [
                (c.yellow_fired, before_yellow, Level::Yellow),
                (c.red_fired, before_red, Level::Red),
            ] {
                if fired {
                    let reason = if before {
                        Reason::Retracted
                    } else {
                        Reason::Withdrawn
                    };
                    resolved.push((
                        c.rule,
                        c.occurrence(level).to_string(),
                        level,
                        c.last_deadline.get(),
                        reason,
                    ));
                }
            }
            if before_yellow {
                c.yellow_fired = false;
            }
            if before_red {
                c.red_fired = false;
            }
        }
        for v in case.violations.iter_mut().filter(|v| !v.resolved) {
            v.resolved = true;
            resolved.push((v.rule, v.key.clone(), Level::Red, None, Reason::Withdrawn));
        }
        for d in &case.duties {
            if let RuleKind::Periodic(p) = &rules.rule(d.rule).kind {
                for &(m, due) in &d.missing {
                    // Withdrawn by the period's due time: the duty had ended before it was
                    // due, and its red was a false alarm of late delivery.
                    let reason = if t <= due {
                        self.mark_period(case, d.rule, m, due, false);
                        Reason::Retracted
                    } else {
                        Reason::Withdrawn
                    };
                    resolved.push((
                        d.rule,
                        period_label(p.period, m),
                        Level::Red,
                        Some(due),
                        reason,
                    ));
                }
            }
        }
        case.duties.clear();
        case.withdrawn = true;
        for (rule, occ, level, deadline, reason) in resolved {
            out.push(make_alert(
                &rules,
                &zone,
                case,
                rule,
                &occ,
                level,
                Status::Resolved,
                reason,
                at,
                deadline,
                None,
            ));
        }
    }
}

/// A bound on how many days past an event any clock computation of these rules can reach:
/// `n` workdays span at most `2n + 30` days (weekends and the longest holidays), `n` days at
/// most `n + 30` (Art. 203 moves), plus extensions. Unbounded extensions give `i64::MAX`.
fn horizon_days(rules: &RuleSet) -> i64 {
    fn days(unit: Unit, n: u32) -> i64 {
        let n = i64::from(n);
        match unit {
            Unit::Workdays => 2 * n + 30,
            Unit::Days => n + 30,
            Unit::Hours => n / 24 + 2,
            Unit::Minutes => n / 1440 + 2,
        }
    }
    fn limit_days(l: &Limit) -> i64 {
        match l {
            Limit::Span { unit, amount } => days(*unit, *amount),
            Limit::SpanFrom { unit, max, .. } => days(*unit, *max),
            Limit::SameWorkday => 30,
            Limit::DueFrom { .. } => 0,
        }
    }
    let mut horizon = 31;
    for rule in &rules.rules {
        if let RuleKind::Deadline(d) = &rule.kind {
            let unit = d.limit.unit().unwrap_or(Unit::Days);
            // Without a cap on the rule itself, an unmatched case could be extended without
            // bound: no horizon.
            let ext = match &d.extend {
                None => 0,
                Some(e) => match e.max {
                    None => return i64::MAX,
                    Some(m) => {
                        let most = d
                            .variants
                            .iter()
                            .filter_map(|v| v.extend_max)
                            .fold(m, u32::max);
                        days(unit, most)
                    }
                },
            };
            let base = std::iter::once(&d.limit)
                .chain(d.variants.iter().filter_map(|v| v.limit.as_ref()))
                .map(limit_days)
                .max()
                .unwrap_or(0);
            horizon = horizon.max(base.saturating_add(ext));
        }
    }
    horizon
}

/// A running span clock's schedule: its deadline and yellow instant, or, when the
/// deadline lies beyond the calendar data (next year's holiday notice is not out yet),
/// with the yellow instant if the data reaches that far. The event is applied and the
/// deadline waits for the data, never guessed: rejecting the event instead would lose the
/// case's later events too (a completion would find no clock to stop).
struct Schedule {
    deadline: Option<i64>,
    yellow: Option<i64>,
    /// Why the deadline is pending, when it is.
    pending: Option<CalendarError>,
}

/// A yellow that fired before an event at `t` and was not retracted keeps the instant it
/// fired at, whatever a pause or an extension at `t` did to the clock's yellow instant: it
/// stays firing until the clock stops (docs/rules.md), and the stop judges against that
/// instant whether it came before the light (`retracted`, a late delivery) or after it
/// (`completed`). Without this, an extension after the yellow moved its instant later, and
/// a pause or stop before the new instant called a yellow that was true when it fired a
/// false alarm. A yellow at or after `t` fired only because the event was delivered late;
/// if it still fires, it is at the new instant, as in time order.
fn keep_fired_yellow(case: &mut Case, r: u16, t: i64, fired_at: Option<i64>) {
    if let Some(clock) = case.active_clock(r)
        && clock.yellow_fired
        && fired_at.is_some_and(|y| y < t)
    {
        clock.yellow_at = fired_at.into();
    }
}

/// See [`Schedule`]. A day missing before the data begins is an error: that data will
/// never come.
fn schedule_or_pending(
    counting: &Counting<'_>,
    span: &Span,
    since: i64,
    counted: i64,
) -> Result<Schedule, CalendarError> {
    match counting.schedule_span(span, since, counted) {
        Ok((deadline, yellow)) => Ok(Schedule {
            deadline: Some(deadline),
            yellow: Some(yellow),
            pending: None,
        }),
        Err(e @ CalendarError::NoData { date, last, .. }) if date > last => {
            let yellow = counting
                .reach(
                    span.unit,
                    span.origin,
                    since,
                    counted,
                    span.warn_threshold(),
                )
                .ok();
            Ok(Schedule {
                deadline: None,
                yellow,
                pending: Some(e),
            })
        }
        Err(e) => Err(e),
    }
}

fn can_fail(h: &Handler) -> bool {
    matches!(
        h,
        Handler::Start(_)
            | Handler::Resume(_)
            | Handler::Extend(_)
            | Handler::Pause(_)
            | Handler::Stop(_)
    )
}

fn handler_rule(h: Handler) -> Option<u16> {
    match h {
        Handler::Withdraw => None,
        Handler::Stop(r)
        | Handler::Pause(r)
        | Handler::Resume(r)
        | Handler::Extend(r)
        | Handler::Start(r)
        | Handler::Stage(r, _)
        | Handler::Check(r)
        | Handler::PeriodicStart(r)
        | Handler::PeriodicFulfil(r) => Some(r),
    }
}

fn variant_for<'r>(d: &'r DeadlineRule, case: &Case) -> Option<&'r crate::rules::Variant> {
    d.variants.iter().find(|v| {
        v.when
            .matches(|k, want| case.get(k).is_some_and(|have| have.matches_json(want)))
    })
}

/// A whole, non-negative number of units from JSON (`15`, `15.0` or `"15"`).
/// A whole number of units given in data: an integer, a float without a fraction, or a
/// string of digits. Any size a `u64` holds, so that a promise of 5,000,000,000 workdays is
/// said to exceed the limit rather than not to be a whole number (floats from 2^64 on,
/// which no longer hold every whole number, are not counts).
fn as_count(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 18_446_744_073_709_551_616.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn make_alert(
    rules: &RuleSet,
    zone: &Zone,
    case: &Case,
    rule: u16,
    occurrence: &str,
    level: Level,
    status: Status,
    reason: Reason,
    at: i64,
    deadline: Option<i64>,
    detail: Option<String>,
) -> Alert {
    let r = rules.rule(rule);
    Alert {
        id: alert_id(&case.id, &r.id, occurrence, level, status),
        rule: r.id.clone(),
        title: r.title.clone(),
        basis: r.basis.clone(),
        case: case.id.clone(),
        level,
        status,
        reason,
        at: zone.format(at),
        deadline: deadline.map(|d| zone.format(d)),
        detail,
        department: case.get_str("department"),
        item: case.get_str("item"),
        handler: case.get_str("handler"),
    }
}

/// Periods are numbered consecutively: months since year 0, quarters since year 0, years.
pub fn period_index(p: Period, d: NaiveDate) -> i32 {
    match p {
        Period::Month => d.year() * 12 + d.month0() as i32,
        Period::Quarter => d.year() * 4 + (d.month0() / 3) as i32,
        Period::Year => d.year(),
    }
}

/// The first and last day of a period.
pub fn period_bounds(p: Period, idx: i32) -> (NaiveDate, NaiveDate) {
    let (year, m0, months) = match p {
        Period::Month => (idx.div_euclid(12), idx.rem_euclid(12) as u32, 1),
        Period::Quarter => (idx.div_euclid(4), idx.rem_euclid(4) as u32 * 3, 3),
        Period::Year => (idx, 0, 12),
    };
    let first = NaiveDate::from_ymd_opt(year, m0 + 1, 1).unwrap_or(NaiveDate::MIN);
    let next = first
        .checked_add_months(chrono::Months::new(months))
        .unwrap_or(NaiveDate::MAX);
    (first, next.pred_opt().unwrap_or(next))
}

/// `2026Q3`, `2026-07`, `2026`.
pub fn period_label(p: Period, idx: i32) -> String {
    match p {
        Period::Month => format!("{}-{:02}", idx.div_euclid(12), idx.rem_euclid(12) + 1),
        Period::Quarter => format!("{}Q{}", idx.div_euclid(4), idx.rem_euclid(4) + 1),
        Period::Year => idx.to_string(),
    }
}

/// Parses a label written by [`period_label`] (also `2026q3`).
pub fn parse_period(p: Period, label: &str) -> Option<i32> {
    let label = label.trim();
    match p {
        Period::Year => label.parse().ok(),
        Period::Quarter => {
            let (y, q) = label.split_once(['Q', 'q'])?;
            let (y, q): (i32, i32) = (y.parse().ok()?, q.parse().ok()?);
            (1..=4).contains(&q).then_some(y * 4 + q - 1)
        }
        Period::Month => {
            let (y, m) = label.split_once('-')?;
            let (y, m): (i32, i32) = (y.parse().ok()?, m.parse().ok()?);
            (1..=12).contains(&m).then_some(y * 12 + m - 1)
        }
    }
}

/// When a period's duty falls due: its end (24:00 of its last day), or the grace counted
/// like a deadline started on its last day.
fn period_due(c: &Counting<'_>, p: &PeriodicRule, idx: i32) -> Result<i64, CalendarError> {
    let (_, last) = period_bounds(p.period, idx);
    let last_day = day_index(last);
    let end = c.zone.to_utc((last_day + 1) * DAY);
    match &p.grace {
        Some(Limit::Span { unit, amount }) => {
            // Counting starts at 00:00 of the day after the last day, as for a deadline
            // started on the last day (Art. 201).
            let s = c.zone.to_utc(last_day * DAY + DAY / 2);
            let span = Span {
                unit: *unit,
                origin: c.origin(*unit, s),
                limit: i64::from(*amount) * unit.ms(),
                warn: crate::rules::Warn::Share(1.0),
            };
            let since = if unit.is_day_unit() { span.origin } else { end };
            let reached = c.reach(*unit, span.origin, since, 0, span.limit)?;
            c.day_end(*unit, reached)
        }
        _ => Ok(end),
    }
}

/// Every state of every case of the sample events (`config/samples/events.jsonl`) through
/// the shipped configuration: after each event, after the timers before each, and after
/// the deadlines fired by the end of 2026. For tests of what is done with cases.
#[cfg(test)]
pub(crate) fn sample_case_states() -> Vec<Case> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = crate::config::Config::load(&root.join("config/redlight.toml")).expect("config");
    let mut engine = config.build_engine().expect("engine");
    engine.track_changes();
    let text = std::fs::read_to_string(root.join("config/samples/events.jsonl")).expect("samples");
    let mut states: Vec<Case> = Vec::new();
    let mut alerts = Vec::new();
    let mut keep = |engine: &mut Engine| {
        for id in engine.take_changed() {
            if let Some(c) = engine.case(&id) {
                states.push(c.clone());
            }
        }
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let ev = crate::event::Event::parse(line.as_bytes()).expect("a sample event");
        engine.advance_before(ev.time_ms(), &mut alerts);
        keep(&mut engine);
        engine.apply(&ev, &mut alerts).expect("applied");
        keep(&mut engine);
    }
    engine.advance(
        chrono::DateTime::parse_from_rfc3339("2026-12-31T00:00:00+08:00")
            .expect("instant")
            .timestamp_millis(),
        &mut alerts,
    );
    keep(&mut engine);
    states
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A case's `seen` stores these values: they must never change. Worked out with an
    /// independent SipHash-2-4 (Python, from the reference algorithm, checked against the
    /// reference test vectors) over each id's UTF-8 bytes followed by `0xff`.
    #[test]
    fn event_id_hashes_are_pinned() {
        for (id, want) in [
            ("", 2_368_135_510_806_073_586u64),
            ("ev-1", 6_596_102_194_811_603_248),
            ("BENCH-00131454-e3", 9_351_001_734_382_667_079),
            ("受理-2026-0001", 10_752_882_833_233_065_058),
        ] {
            assert_eq!(id_hash(id), want, "{id:?}");
        }
    }

    /// An engine on the shipped configuration.
    fn shipped_engine() -> Engine {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config =
            crate::config::Config::load(&root.join("config/redlight.toml")).expect("config");
        config.build_engine().expect("engine")
    }

    /// A case keeps the meaning of the event types it has seen when a pack declaring a new
    /// type is added (which renumbers the types in name order): the daemon numbers them as
    /// the store did ([`crate::rules::RuleSet::with_type_order`]). Here the accident was
    /// reported before the restart, so its discovery after it is no 瞒报; numbered afresh,
    /// the report would have read as another type and the discovery raised a false red.
    #[test]
    fn a_restored_case_keeps_its_seen_types_when_a_pack_adds_one() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config =
            crate::config::Config::load(&root.join("config/redlight.toml")).expect("config");
        let mut before = config.build_engine().expect("engine");
        let mut out = Vec::new();
        for (id, kind, time, data) in [
            (
                "k2",
                "safety.accident_occurred",
                "2026-06-10T10:00:00+08:00",
                r#"{"department":"d","severity":"general","deaths":1}"#,
            ),
            (
                "k2r",
                "safety.accident_reported",
                "2026-06-10T10:40:00+08:00",
                r#"{"to":"区应急管理局"}"#,
            ),
        ] {
            let ev = event(id, "AQ-K2", kind, time, data);
            before.advance_before(ev.time_ms(), &mut out);
            before.apply(&ev, &mut out).expect("apply");
        }
        let case = before.case("AQ-K2").expect("case").clone();
        let stored_types = before.rules().type_order().to_vec();

        let dir = std::env::temp_dir().join(format!("redlight-type-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let extra = dir.join("new.toml");
        std::fs::write(
            &extra,
            "[pack]\nname = \"new\"\ntitle = \"new\"\ntypes = [\"aaa.new\"]\n",
        )
        .expect("pack");
        let mut paths = config.rule_pack_paths();
        paths.push(extra);
        let renumbered = crate::rules::RuleSet::load(&paths).expect("rules");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            renumbered.type_order()[0],
            "aaa.new",
            "the new type sorts first"
        );
        let calendar = Arc::new(config.load_calendar().expect("calendar"));
        let discovered = event(
            "k2d",
            "AQ-K2",
            "safety.accident_discovered",
            "2026-06-10T14:00:00+08:00",
            r#"{"by":"inspection"}"#,
        );
        let concealed = |rules: crate::rules::RuleSet| {
            let mut after = Engine::new(Arc::new(rules), calendar.clone());
            after.restore(case.clone());
            let mut out = Vec::new();
            after.advance_before(discovered.time_ms(), &mut out);
            after.apply(&discovered, &mut out).expect("apply");
            out.iter().filter(|a| &*a.rule == "aq.concealed").count()
        };
        let kept = renumbered
            .with_type_order(&stored_types)
            .expect("numbered as stored");
        assert_eq!(&kept.type_order()[..stored_types.len()], &stored_types[..]);
        assert_eq!(
            kept.type_order().last().map(String::as_str),
            Some("aaa.new")
        );
        assert_eq!(concealed(kept), 0, "the report before the restart counts");
        assert_eq!(
            concealed(renumbered),
            1,
            "numbered afresh the seen types shift (what the daemon no longer does)"
        );
    }

    /// A case written under one numbering of the rules and restored under packs listed in
    /// another order, numbered as the store numbers them (`RuleSet::with_rule_order`), goes
    /// on exactly as a replay of all its events under the packs as they are now: the same
    /// alerts, in the same order (within an instant, in the packs' order). Restored under
    /// the packs' own numbering, its clocks would run under other rules. And a rule retired
    /// with `enabled = false` goes quiet: its clock leaves the case, the others run on.
    #[test]
    fn a_restored_case_keeps_its_rules_when_the_packs_are_reordered_or_one_is_retired() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config =
            crate::config::Config::load(&root.join("config/redlight.toml")).expect("config");
        let calendar = Arc::new(config.load_calendar().expect("calendar"));
        // Twenty promised workdays: the promise's clock and the statutory one (xk.decision)
        // turn yellow and red at the same instants.
        let data = r#"{"department":"d","kind":"promised","promised_workdays":20}"#;
        let events = [
            event(
                "e1",
                "XZ-9",
                "approval.accepted",
                "2026-06-01T09:00:00+08:00",
                data,
            ),
            event(
                "e2",
                "XZ-9",
                "approval.reviewed",
                "2026-06-02T09:00:00+08:00",
                "{}",
            ),
            event(
                "e3",
                "XZ-9",
                "approval.decided",
                "2026-07-03T09:00:00+08:00",
                "{}",
            ),
            event(
                "e4",
                "XZ-9",
                "approval.completed",
                "2026-07-06T09:00:00+08:00",
                "{}",
            ),
        ];
        let end = event(
            "x",
            "X",
            "approval.accepted",
            "2026-12-01T00:00:00+08:00",
            "{}",
        );
        let run = |engine: &mut Engine, events: &[Event]| {
            let mut out = Vec::new();
            for ev in events {
                engine.advance_before(ev.time_ms(), &mut out);
                engine.apply(ev, &mut out).expect("apply");
            }
            out
        };
        let finish = |engine: &mut Engine, events: &[Event]| {
            let mut out = run(engine, events);
            engine.advance(end.time_ms(), &mut out);
            out
        };
        let mut before = config.build_engine().expect("engine");
        let stored: Vec<String> = before
            .rules()
            .rules
            .iter()
            .map(|r| r.id.to_string())
            .collect();
        run(&mut before, &events[..2]);
        let case = before.case("XZ-9").expect("case").clone();
        let restored = |rules: crate::rules::RuleSet| {
            let mut e = Engine::new(Arc::new(rules), calendar.clone());
            e.track_changes(); // as the daemon does, so that restoring marks what it changed
            e.restore(case.clone());
            e
        };
        let fresh = |rules: &crate::rules::RuleSet| {
            let mut e = Engine::new(Arc::new(rules.clone()), calendar.clone());
            finish(&mut e, &events)
        };
        let expected = finish(&mut before, &events[2..]);
        let levels = |alerts: &[Alert]| -> Vec<(String, Level, Status)> {
            alerts
                .iter()
                .map(|a| (a.rule.to_string(), a.level, a.status))
                .collect()
        };
        assert_eq!(
            levels(&expected[..4]),
            [
                ("xk.decision".into(), Level::Yellow, Status::Firing),
                ("xz.promised".into(), Level::Yellow, Status::Firing),
                ("xk.decision".into(), Level::Red, Status::Firing),
                ("xz.promised".into(), Level::Red, Status::Firing),
            ],
            "{expected:#?}"
        );

        let texts: Vec<(std::path::PathBuf, String)> = config
            .rule_pack_paths()
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("pack");
                (p, text)
            })
            .collect();
        let reversed: Vec<_> = texts.iter().rev().cloned().collect();
        let reversed = crate::rules::RuleSet::from_sources(&reversed).expect("rules");
        assert_ne!(
            reversed.index_of("xk.decision"),
            before.rules().index_of("xk.decision")
        );
        let replayed = fresh(&reversed);
        assert_eq!(
            levels(&replayed[..2]),
            [
                ("xz.promised".into(), Level::Yellow, Status::Firing),
                ("xk.decision".into(), Level::Yellow, Status::Firing),
            ],
            "in the packs' order now"
        );
        let (kept, _) = reversed
            .with_rule_order(&stored)
            .expect("numbered as stored");
        assert_eq!(finish(&mut restored(kept), &events[2..]), replayed);
        assert_ne!(
            finish(&mut restored(reversed), &events[2..]),
            replayed,
            "numbered as the packs now are, the clocks change rules"
        );

        let disabled: Vec<_> = texts
            .iter()
            .map(|(p, t)| {
                let t = t.replace(
                    "id = \"xk.decision\"\n",
                    "id = \"xk.decision\"\nenabled = false\n",
                );
                (p.clone(), t)
            })
            .collect();
        let disabled = crate::rules::RuleSet::from_sources(&disabled).expect("rules");
        assert_eq!(disabled.index_of("xk.decision"), None);
        let (retired, order) = disabled.with_rule_order(&stored).expect("retired");
        let at = stored
            .iter()
            .position(|r| r == "xk.decision")
            .expect("stored");
        assert_eq!(order[at], "retired xk.decision");
        let mut engine = restored(retired);
        let held = engine.case("XZ-9").expect("case");
        assert_eq!(
            held.clocks.len(),
            case.clocks.len() - 1,
            "its clock dropped"
        );
        assert_eq!(
            engine.take_changed(),
            [Arc::<str>::from("XZ-9")],
            "marked changed: the next batch writes it without the clock"
        );
        let (kept, _) = crate::rules::RuleSet::from_sources(&texts)
            .expect("rules")
            .with_rule_order(&stored)
            .expect("as stored");
        assert!(
            restored(kept).take_changed().is_empty(),
            "nothing to write when nothing is dropped"
        );
        let quiet: Vec<Alert> = expected
            .iter()
            .filter(|a| &*a.rule != "xk.decision")
            .cloned()
            .collect();
        assert_eq!(
            finish(&mut engine, &events[2..]),
            quiet,
            "the retired rule raises nothing"
        );
    }

    /// A case taken from one engine and adopted by another (the daemon's partitions when a
    /// case's events move) goes on there as in one engine: the same alerts, none from the
    /// engine it left, whose store forgets it while the adopter's writes it.
    #[test]
    fn a_case_moved_to_another_engine_goes_on_there_as_in_one() {
        let accepted = event(
            "m1",
            "XZ-1",
            "approval.accepted",
            "2026-09-28T10:00:00+08:00",
            r#"{"department":"d","item":"i","handler":"h","kind":"promised","promised_workdays":15}"#,
        );
        let suspended = event(
            "m2",
            "XZ-1",
            "approval.suspended",
            "2026-10-12T09:00:00+08:00",
            r#"{"procedure":"hearing"}"#,
        );
        let resumed = event(
            "m3",
            "XZ-1",
            "approval.resumed",
            "2026-10-20T09:00:00+08:00",
            "{}",
        );
        let end = event(
            "m9",
            "OTHER",
            "approval.resumed",
            "2026-12-01T00:00:00+08:00",
            "{}",
        );
        let run = |engine: &mut Engine, ev: &Event, out: &mut Vec<Alert>| {
            engine.advance_before(ev.time_ms(), out);
            engine.apply(ev, out).expect("apply");
        };
        let mut one = shipped_engine();
        let mut want = Vec::new();
        for ev in [&accepted, &suspended, &resumed] {
            run(&mut one, ev, &mut want);
        }
        one.advance(end.time_ms(), &mut want);
        assert!(
            want.iter().any(|a| a.level == Level::Red),
            "the case runs late: {want:?}"
        );

        let (mut a, mut b) = (shipped_engine(), shipped_engine());
        a.track_changes();
        b.track_changes();
        let mut got = Vec::new();
        run(&mut a, &accepted, &mut got);
        run(&mut a, &suspended, &mut got);
        a.case("XZ-1").expect("in a").tag.set(7);
        a.take_changed();
        let case = a.take_case("XZ-1").expect("taken");
        assert!(a.take_case("XZ-1").is_none(), "taken once");
        assert_eq!(a.take_released(), vec![7], "a's open-case count goes down");
        assert_eq!(case.tag.get(), 0, "b counts it afresh");
        b.adopt(case);
        assert_eq!(
            a.take_changed(),
            vec![Arc::from("XZ-1")],
            "a's store forgets it"
        );
        assert_eq!(
            b.take_changed(),
            vec![Arc::from("XZ-1")],
            "b's store writes it"
        );
        run(&mut b, &resumed, &mut got);
        let mut from_a = Vec::new();
        a.advance(end.time_ms(), &mut from_a);
        assert_eq!(from_a, vec![], "the engine it left raises nothing for it");
        b.advance(end.time_ms(), &mut got);
        assert_eq!(got, want);
    }

    /// A CloudEvent of `kind` for case `subject`, with `data` (a JSON object) as given.
    fn event(id: &str, subject: &str, kind: &str, time: &str, data: &str) -> Event {
        let line = format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/t","type":"{kind}","time":"{time}","subject":"{subject}","data":{data}}}"#
        );
        Event::parse(line.as_bytes()).expect("event")
    }

    /// The deadline of case XZ-1's `xk.decision` clock.
    fn decision_deadline(engine: &Engine) -> i64 {
        let case = engine.case("XZ-1").expect("case");
        let clock = case
            .clocks
            .iter()
            .find(|c| &*engine.rules().rule(c.rule).id == "xk.decision")
            .expect("the decision clock");
        clock.deadline.get().expect("a deadline")
    }

    /// A clock numbered `n`, for tests of the clock list.
    fn numbered_clock(n: u32) -> Clock {
        Clock {
            rule: n as u16,
            cycle: n,
            started: i64::from(n) * 1000,
            mode: Mode::Fixed {
                deadline: 0,
                warn_at: 0,
            },
            extended: 0,
            counted: 0,
            since: OptMs::NONE,
            paused_at: OptMs::NONE,
            deadline: OptMs::some(i64::from(n)),
            yellow_at: OptMs::NONE,
            last_deadline: OptMs::NONE,
            yellow_fired: false,
            red_fired: n % 2 == 1,
            stopped: OptMs::NONE,
            late: false,
            yellow_retractions: 0,
            red_retractions: 0,
        }
    }

    /// A case's clocks keep their order however many there are, and are stored as the one
    /// sequence a `Vec` of them was: in MessagePack and in JSON, written and read back.
    #[test]
    fn clocks_past_two_keep_their_order_and_stored_form() {
        for n in 0..6u32 {
            let all: Vec<Clock> = (0..n).map(numbered_clock).collect();
            let mut clocks = Clocks::default();
            for c in &all {
                clocks.push(c.clone());
            }
            assert_eq!(clocks.len(), all.len());
            assert_eq!(clocks.is_empty(), all.is_empty());
            assert_eq!(clocks.spilled().len(), all.len().saturating_sub(2));
            assert!(clocks.iter().eq(all.iter()), "{n} clocks");
            assert!(
                clocks.iter().rev().eq(all.iter().rev()),
                "{n} clocks, reversed"
            );
            assert_eq!(all.iter().cloned().collect::<Clocks>(), clocks);

            let packed = rmp_serde::to_vec(&clocks).expect("encoded");
            assert_eq!(
                packed,
                rmp_serde::to_vec(&all).expect("encoded"),
                "{n} clocks"
            );
            let back: Clocks = rmp_serde::from_slice(&packed).expect("decoded");
            assert_eq!(back, clocks);
            assert_eq!(back.spilled().len(), all.len().saturating_sub(2));
            let json = serde_json::to_string(&clocks).expect("json");
            assert_eq!(json, serde_json::to_string(&all).expect("json"));
            assert_eq!(serde_json::from_str::<Clocks>(&json).expect("read"), clocks);

            for c in clocks.iter_mut() {
                c.late = true;
            }
            assert_eq!(clocks.iter().filter(|c| c.late).count(), all.len());
        }
    }

    /// A case stays in the allocator's 512-byte size class: a field more that pushed it
    /// past would cost a million open cases 128 MB (the next class is 640 bytes).
    #[test]
    fn a_case_fits_in_512_bytes() {
        assert!(
            std::mem::size_of::<Case>() <= 512,
            "Case is {} bytes",
            std::mem::size_of::<Case>()
        );
    }

    /// A datum holds a number in its own variants rather than as a `serde_json::Number`:
    /// every JSON value still comes back as it was, compares as it did, and is written in
    /// JSON and in MessagePack (the stored cases) exactly as the value itself.
    #[test]
    fn a_datum_is_the_json_value_it_came_from() {
        let values = [
            "null",
            "true",
            "false",
            "0",
            "1",
            "18446744073709551615",
            "-1",
            "-9223372036854775808",
            "1.5",
            "-0.25",
            "1e300",
            "-0.0",
            "0.1",
            "\"\"",
            "\"市住建局\"",
            "\"14 bytes long.\"",
            "\"15 bytes long..\"",
            "\"市住建局审批处\"",
            "[1,\"a\"]",
            "{\"b\":{\"c\":2}}",
        ];
        for text in values {
            let v: Value = serde_json::from_str(text).expect(text);
            let d = Datum::from_value_unshared(&v);
            assert_eq!(d.to_value(), v, "{text}");
            assert!(d.eq_value(&v), "{text}");
            assert!(d.matches_json(&v), "{text}");
            assert_eq!(
                serde_json::to_string(&d).expect("json"),
                serde_json::to_string(&v).expect("json"),
                "{text}"
            );
            let packed = rmp_serde::to_vec(&d).expect("packed");
            assert_eq!(packed, rmp_serde::to_vec(&v).expect("packed"), "{text}");
            let back: Datum = rmp_serde::from_slice(&packed).expect("read");
            assert_eq!(back, d, "{text}");
            assert_eq!(d.as_number(), v.as_number().cloned(), "{text}");
            for other in values.iter().filter(|o| **o != text) {
                let o: Value = serde_json::from_str(other).expect(other);
                assert_eq!(d.eq_value(&o), v == o, "{text} against {other}");
            }
        }
        // Up to 14 bytes a string is held in place, longer ones shared.
        let string = |s: &str| Datum::from_value_unshared(&Value::from(s));
        assert!(matches!(string("14 bytes long."), Datum::Short(_)));
        assert!(matches!(string("15 bytes long.."), Datum::Str(_)));
        // A rule's `when` compares numbers by value, integer or not.
        let fifteen = Datum::from_value_unshared(&serde_json::json!(15));
        assert!(fifteen.matches_json(&serde_json::json!(15.0)));
        assert!(!fifteen.eq_value(&serde_json::json!(15.0)));
        assert!(!fifteen.matches_json(&serde_json::json!(16)));
    }

    /// A clock's occurrence is part of every alert id it raises: written by hand, it must
    /// stay what `format!` wrote, or receivers would see new ids for old alerts.
    #[test]
    fn an_occurrence_is_written_as_before() {
        for (cycle, started, retractions) in [
            (1u32, 1_767_225_600_000i64, 0u32),
            (3, 0, 0),
            (12, -86_400_000, 2),
            (u32::MAX, i64::MIN, u32::MAX - 1),
            (7, i64::MAX, 1),
        ] {
            let c = Clock {
                cycle,
                started,
                yellow_retractions: retractions,
                red_retractions: retractions,
                ..numbered_clock(0)
            };
            let before = if retractions == 0 {
                format!("{cycle}@{started}")
            } else {
                format!("{cycle}@{started}#{retractions}")
            };
            assert_eq!(c.occurrence(Level::Yellow), before);
            assert_eq!(c.occurrence(Level::Red), before);
        }
    }

    /// Each light counts its own retractions, so one retracted leaves the other's ids as
    /// they were. A clock stored before format 9 had one count for both lights: read, it
    /// gives both lights the ids they had, and its first retraction after that counts on
    /// from there for the light retracted only.
    #[test]
    fn each_light_counts_its_own_retractions() {
        let mut c = numbered_clock(1);
        c.retracted(Level::Red);
        assert_eq!(c.occurrence(Level::Yellow), "1@1000");
        assert_eq!(c.occurrence(Level::Red), "1@1000#1");
        c.retracted(Level::Yellow);
        c.retracted(Level::Yellow);
        assert_eq!(c.occurrence(Level::Yellow), "1@1000#2");
        assert_eq!(c.occurrence(Level::Red), "1@1000#1");

        let mut stored: Value = serde_json::to_value(numbered_clock(1)).expect("json");
        let fields = stored.as_object_mut().expect("an object");
        fields.remove("yellow_retractions");
        fields.remove("red_retractions");
        fields.insert("retractions".into(), 3.into());
        let mut old: Clock = serde_json::from_value(stored).expect("a clock of format 8");
        assert_eq!(old.red_retractions, SAME_AS_YELLOW);
        assert_eq!(old.occurrence(Level::Yellow), "1@1000#3");
        assert_eq!(old.occurrence(Level::Red), "1@1000#3");
        old.retracted(Level::Yellow);
        assert_eq!(old.occurrence(Level::Yellow), "1@1000#4");
        assert_eq!(old.occurrence(Level::Red), "1@1000#3");
    }

    /// A condition that fails to evaluate (a field the event lacks) skips its rule for that
    /// event; data problems are counted every time, and logged only at their rule's 1st,
    /// 10th, 100th, … one.
    #[test]
    fn data_problems_are_counted_every_time_and_logged_at_powers_of_ten() {
        let cal = shipped_engine().core.cal.clone();
        let pack = "[pack]\nname = \"t\"\ntitle = \"t\"\n[[rule]]\nid = \"t.c\"\nkind = \"check\"\n\
                    title = \"c\"\nbasis = \"b\"\non = \"safety.accident_discovered\"\n\
                    condition = 'data.deaths > 0'\n";
        let rules =
            RuleSet::from_sources(&[(std::path::PathBuf::from("rules/t.toml"), pack.to_string())])
                .expect("pack");
        let mut engine = Engine::new(Arc::new(rules), cal);
        let mut alerts = Vec::new();
        for (i, data) in [r#"{"by":"inspection"}"#, r#"{"deaths":1}"#, r#"{}"#]
            .into_iter()
            .enumerate()
        {
            let ev = event(
                &format!("e{i}"),
                &format!("AQ-{i}"),
                "safety.accident_discovered",
                "2026-06-01T10:30:00+08:00",
                data,
            );
            engine.apply(&ev, &mut alerts).expect("applied");
        }
        // The one event with `deaths` raised the violation; the two without it are problems.
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(&*alerts[0].case, "AQ-1");
        assert_eq!(engine.stats().data_problems, 2);
        let logged: Vec<u64> = (0..998)
            .filter_map(|_| engine.core.data_problem(0))
            .collect();
        assert_eq!(logged, [10, 100, 1000], "the rule's 3rd to 1,000th problem");
        assert_eq!(
            engine.core.data_problem(5),
            Some(1),
            "each rule counts its own"
        );
        assert_eq!(engine.stats().data_problems, 1001);
    }

    /// An extension that is not a whole number of units (negative, fractional, a word,
    /// past `u32`, or missing) changes no deadline and is counted as a data problem; a
    /// whole number then extends as usual. A negative one must never bring a deadline
    /// earlier.
    #[test]
    fn extensions_that_are_not_whole_numbers_change_nothing() {
        let mut engine = shipped_engine();
        let mut alerts = Vec::new();
        let mut apply = |engine: &mut Engine, id: &str, kind: &str, time: &str, data: &str| {
            alerts.clear();
            let ev = event(id, "XZ-1", kind, time, data);
            engine.apply(&ev, &mut alerts).expect("applied");
            alerts.len()
        };
        let ms = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .expect("time")
                .timestamp_millis()
        };
        // SPEC §3's worked example: 20 workdays from 2026-09-28 10:00 end at 10-31 00:00.
        apply(
            &mut engine,
            "a",
            "approval.accepted",
            "2026-09-28T10:00:00+08:00",
            r#"{"kind":"promised","promised_workdays":20}"#,
        );
        assert_eq!(decision_deadline(&engine), ms("2026-10-31T00:00:00+08:00"));
        let bad = [
            r#"{"extra_workdays":-3}"#,
            r#"{"extra_workdays":1.5}"#,
            r#"{"extra_workdays":"many"}"#,
            r#"{"extra_workdays":4294967296}"#,
            r#"{"approved_by":"局长"}"#,
        ];
        for (i, data) in bad.iter().enumerate() {
            let fired = apply(
                &mut engine,
                &format!("x{i}"),
                "approval.extended",
                "2026-10-09T10:00:00+08:00",
                data,
            );
            assert_eq!(fired, 0, "{data}");
            assert_eq!(
                decision_deadline(&engine),
                ms("2026-10-31T00:00:00+08:00"),
                "{data}"
            );
            assert_eq!(engine.stats().data_problems, i as u64 + 1, "{data}");
        }
        // Five workdays more: the 25th workday is 11-06, so 11-07 00:00.
        apply(
            &mut engine,
            "ok",
            "approval.extended",
            "2026-10-09T11:00:00+08:00",
            r#"{"extra_workdays":5}"#,
        );
        assert_eq!(decision_deadline(&engine), ms("2026-11-07T00:00:00+08:00"));
        assert_eq!(engine.stats().data_problems, bad.len() as u64);
    }

    /// Case ids compared inline are equal exactly when they are equal strings: every
    /// length up to past the inline compares, a difference at every position.
    #[test]
    fn case_ids_compare_as_strings() {
        for len in 0..=40usize {
            let id: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            assert!(same_id(&id, &id.clone()), "{len} bytes, equal");
            for at in 0..len {
                let mut other = id.clone().into_bytes();
                other[at] = b'-';
                let other = String::from_utf8(other).expect("ascii");
                assert!(!same_id(&id, &other), "{len} bytes, differing at {at}");
                assert!(!same_id(&other, &id), "{len} bytes, differing at {at}");
            }
            let longer = format!("{id}x");
            assert!(!same_id(&id, &longer), "{len} and {} bytes", len + 1);
            assert!(!same_id(&longer, &id), "{} and {len} bytes", len + 1);
        }
        assert!(same_id("受理-2026-0001", "受理-2026-0001"));
        assert!(!same_id("受理-2026-0001", "受理-2026-0002"));
    }

    /// Event ids are found at every size: inline, listed, and indexed past 64; a case read
    /// back from its stored form finds them too.
    #[test]
    fn event_ids_are_found_however_many_there_are() {
        let hash = |n: u64| n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (n >> 7);
        let mut ids = EventIds::default();
        for n in 0..200u64 {
            assert!(!ids.contains(hash(n)), "{n} before it was added");
            ids.push(hash(n));
            assert_eq!(ids.len(), n as usize + 1);
            assert!((0..=n).all(|k| ids.contains(hash(k))), "all up to {n}");
            assert!(!ids.contains(hash(n + 1)), "{n}: the next one");
            assert_eq!(
                ids.iter().copied().collect::<Vec<_>>(),
                (0..=n).map(hash).collect::<Vec<_>>()
            );
            let back: EventIds =
                rmp_serde::from_slice(&rmp_serde::to_vec(&ids).expect("encode")).expect("decode");
            assert_eq!(back, ids);
            assert!(
                back.contains(hash(n / 2)) && !back.contains(hash(n + 1)),
                "{n} read back"
            );
        }
    }

    /// A case is logged when its events reach 10,000, 100,000, …: a producer in a loop.
    #[test]
    fn a_case_with_very_many_events_is_logged_at_powers_of_ten() {
        let mut case = Case::new("XZ-LOOP".into(), 0);
        let logged: Vec<u64> = (0..200_000u64)
            .filter_map(|n| case.record_event(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect();
        assert_eq!(logged, [10_000, 100_000]);
        assert_eq!(case.seen.len(), 200_000);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]

        /// Event ids behave as the set of ids applied, in their order, at any size and
        /// with repeats anywhere, also after being stored and read back half-way.
        #[test]
        fn event_ids_are_the_set_of_ids_applied(
            ids in proptest::collection::vec(0u64..150, 0..400),
            cut in 0usize..400,
        ) {
            let mut got = EventIds::default();
            let mut model: Vec<u64> = Vec::new();
            for (i, &n) in ids.iter().enumerate() {
                if i == cut {
                    got = rmp_serde::from_slice(&rmp_serde::to_vec(&got).expect("encode"))
                        .expect("decode");
                }
                let hash = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                proptest::prop_assert_eq!(got.contains(hash), model.contains(&hash), "id {} at {}", n, i);
                if !model.contains(&hash) {
                    proptest::prop_assert_eq!(got.push(hash), model.len() + 1);
                    model.push(hash);
                }
            }
            proptest::prop_assert_eq!(got.as_slice(), model.as_slice());
        }
    }

    /// SPEC §1 for a case with many events: a repeated id changes nothing, whether it was
    /// the case's first event or its two-hundredth.
    #[test]
    fn a_repeat_is_a_duplicate_however_many_events_the_case_has() {
        let mut engine = shipped_engine();
        let mut alerts = Vec::new();
        let mut apply = |engine: &mut Engine, id: &str, kind: &str, data: &str| {
            let ev = event(id, "XZ-1", kind, "2026-10-09T10:00:00+08:00", data);
            engine.apply(&ev, &mut alerts).expect("applied");
        };
        let accepted = r#"{"kind":"promised","promised_workdays":20}"#;
        apply(&mut engine, "a", "approval.accepted", accepted);
        apply(
            &mut engine,
            "x",
            "approval.extended",
            r#"{"extra_workdays":2}"#,
        );
        for n in 0..200 {
            apply(&mut engine, &format!("r{n}"), "approval.reviewed", "{}");
        }
        let before = (
            decision_deadline(&engine),
            engine.case("XZ-1").expect("case").clone(),
        );
        let again = ["a", "x", "r0", "r4", "r5", "r61", "r62", "r63", "r199"];
        for (i, id) in again.iter().enumerate() {
            let kind = if *id == "a" {
                "approval.accepted"
            } else {
                "approval.extended"
            };
            apply(
                &mut engine,
                id,
                kind,
                r#"{"extra_workdays":5,"promised_workdays":3}"#,
            );
            assert_eq!(engine.stats().duplicates, i as u64 + 1, "{id}");
        }
        let case = engine.case("XZ-1").expect("case");
        assert_eq!(case.seen.len(), 202);
        assert_eq!((decision_deadline(&engine), case.clone()), before);
    }

    /// A case takes at most `engine.max_events_per_case` events: a further one is refused
    /// with the reason, and the case (its lights, its deadline, its event ids) stays as it
    /// was; a repeat of one it has is still a duplicate, and other cases are not limited.
    #[test]
    fn a_case_takes_at_most_max_events_and_refuses_more() {
        let mut engine = shipped_engine();
        engine.set_max_events_per_case(5);
        let mut alerts = Vec::new();
        let mut apply = |engine: &mut Engine, id: &str, case: &str, kind: &str, data: &str| {
            let ev = event(id, case, kind, "2026-10-09T10:00:00+08:00", data);
            engine.apply(&ev, &mut alerts)
        };
        let accepted = r#"{"kind":"promised","promised_workdays":20}"#;
        apply(&mut engine, "a", "XZ-1", "approval.accepted", accepted).expect("applied");
        for n in 0..4 {
            apply(
                &mut engine,
                &format!("r{n}"),
                "XZ-1",
                "approval.reviewed",
                "{}",
            )
            .expect("applied");
        }
        let before = (
            decision_deadline(&engine),
            engine.case("XZ-1").expect("case").clone(),
        );
        let refused = apply(
            &mut engine,
            "x",
            "XZ-1",
            "approval.extended",
            r#"{"extra_workdays":2}"#,
        )
        .expect_err("the sixth event");
        assert_eq!(refused.reason_code(), "case_event_limit");
        assert!(
            refused.to_string().starts_with(
                "event x (case XZ-1): the case already has 5 events, the most \
                 `engine.max_events_per_case` allows"
            ),
            "{refused}"
        );
        assert_eq!(
            (
                decision_deadline(&engine),
                engine.case("XZ-1").expect("case").clone()
            ),
            before
        );
        assert_eq!(
            apply(&mut engine, "r1", "XZ-1", "approval.reviewed", "{}").ok(),
            Some(Applied::Duplicate)
        );
        assert_eq!(
            apply(&mut engine, "b", "XZ-2", "approval.accepted", accepted).ok(),
            Some(Applied::Applied)
        );
        // Raised (as after a restart with a larger setting), the case takes it.
        engine.set_max_events_per_case(6);
        apply(
            &mut engine,
            "x",
            "XZ-1",
            "approval.extended",
            r#"{"extra_workdays":2}"#,
        )
        .expect("applied");
        assert!(decision_deadline(&engine) > before.0);
    }

    /// A start that arrives after a stop of the same rule, with no clock of the rule ever
    /// started in the case, is counted as a data problem (the case's events are out of
    /// order); a start in order, or a second cycle after a stop, is not.
    #[test]
    fn a_start_after_its_stop_is_a_data_problem() {
        let mut engine = shipped_engine();
        let mut alerts = Vec::new();
        let mut apply = |engine: &mut Engine, id: &str, case: &str, kind: &str, data: &str| {
            let ev = event(id, case, kind, "2026-10-12T10:00:00+08:00", data);
            engine.apply(&ev, &mut alerts).expect("applied");
        };
        let accepted = r#"{"kind":"promised","promised_workdays":20}"#;
        let decided = r#"{"outcome":"denied"}"#;
        // In order, then a second cycle: no problem.
        apply(&mut engine, "a1", "IN-ORDER", "approval.accepted", accepted);
        apply(&mut engine, "a2", "IN-ORDER", "approval.decided", decided);
        apply(&mut engine, "a3", "IN-ORDER", "approval.accepted", accepted);
        assert_eq!(engine.stats().data_problems, 0);
        // The decision first: `xk.decision`'s stop before its start.
        apply(&mut engine, "b1", "REVERSED", "approval.decided", decided);
        apply(&mut engine, "b2", "REVERSED", "approval.accepted", accepted);
        assert_eq!(engine.stats().data_problems, 1);
    }

    /// A stop dated before its clock's start stops nothing: with no earlier cycle of the
    /// rule it is counted as a data problem (a wrong time: a decision dated years before
    /// its acceptance must not close the case in time), and the clock runs on to its red.
    /// A late stop of an earlier cycle is no problem, and leaves the new cycle running.
    #[test]
    fn a_stop_dated_before_its_start_stops_nothing() {
        let mut engine = shipped_engine();
        let mut alerts = Vec::new();
        let apply = |engine: &mut Engine,
                     alerts: &mut Vec<Alert>,
                     id: &str,
                     kind: &str,
                     time: &str,
                     data: &str| {
            let ev = event(id, "BACKDATED", kind, time, data);
            engine.apply(&ev, alerts).expect("applied");
        };
        let accepted = r#"{"kind":"promised","promised_workdays":20}"#;
        let decided = r#"{"outcome":"denied"}"#;
        apply(
            &mut engine,
            &mut alerts,
            "a1",
            "approval.accepted",
            "2026-09-28T10:00:00+08:00",
            accepted,
        );
        apply(
            &mut engine,
            &mut alerts,
            "a2",
            "approval.decided",
            "2020-01-02T10:00:00+08:00",
            decided,
        );
        assert_eq!(engine.stats().data_problems, 1);
        let decision = |engine: &Engine| {
            let case = engine.case("BACKDATED").expect("case");
            let rule = engine.rules().index_of("xk.decision").expect("rule");
            let clock = case.clocks.iter().rev().find(|c| c.rule == rule);
            clock.map(|c| (c.cycle, c.stopped.get()))
        };
        let ms = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .expect("time")
                .timestamp_millis()
        };
        assert_eq!(decision(&engine), Some((1, None)), "still running");
        engine.advance(ms("2026-10-31T00:00:00+08:00"), &mut alerts);
        assert!(
            alerts
                .iter()
                .any(|a| a.rule.as_ref() == "xk.decision" && a.reason == Reason::Overdue),
            "{alerts:?}"
        );
        // Decided in time, then accepted again: the second cycle runs, and the first
        // cycle's decision delivered again under another id is no problem.
        apply(
            &mut engine,
            &mut alerts,
            "a3",
            "approval.decided",
            "2026-10-31T10:00:00+08:00",
            decided,
        );
        apply(
            &mut engine,
            &mut alerts,
            "a4",
            "approval.accepted",
            "2026-11-02T10:00:00+08:00",
            accepted,
        );
        apply(
            &mut engine,
            &mut alerts,
            "a5",
            "approval.decided",
            "2026-10-31T10:00:00+08:00",
            decided,
        );
        assert_eq!(engine.stats().data_problems, 1);
        assert_eq!(decision(&engine), Some((2, None)));
    }

    /// A pause or an extension dated before its clock's start does nothing, as a stop (above):
    /// with no earlier cycle it is a data problem, and a late one of an earlier cycle is no
    /// problem. Taken as a pause at the start, it held the new cycle at its start for good
    /// (no resume came), and the case never went yellow or red; an earlier cycle's extension
    /// gave the new cycle time it was never granted.
    #[test]
    fn a_pause_or_extension_dated_before_its_start_does_nothing() {
        let mut engine = shipped_engine();
        let mut alerts = Vec::new();
        let mut apply = |engine: &mut Engine, id: &str, kind: &str, time: &str, data: &str| {
            let ev = event(id, "BACKPAUSED", kind, time, data);
            engine.apply(&ev, &mut alerts).expect("applied");
        };
        let accepted = r#"{"kind":"promised","promised_workdays":20}"#;
        let decided = r#"{"outcome":"denied"}"#;
        // First cycle: accepted 09-01, decided 09-10. Second: accepted 09-28.
        apply(
            &mut engine,
            "c1",
            "approval.accepted",
            "2026-09-01T10:00:00+08:00",
            accepted,
        );
        apply(
            &mut engine,
            "c2",
            "approval.decided",
            "2026-09-10T10:00:00+08:00",
            decided,
        );
        apply(
            &mut engine,
            "c3",
            "approval.accepted",
            "2026-09-28T10:00:00+08:00",
            accepted,
        );
        // The first cycle's pause and extension, delivered late.
        let extended = r#"{"extra_workdays":10}"#;
        apply(
            &mut engine,
            "c4",
            "approval.suspended",
            "2026-09-05T10:00:00+08:00",
            "{}",
        );
        apply(
            &mut engine,
            "c5",
            "approval.extended",
            "2026-09-05T11:00:00+08:00",
            extended,
        );
        let rule = engine.rules().index_of("xk.decision").expect("rule");
        let clock = |engine: &Engine| {
            let case = engine.case("BACKPAUSED").expect("case");
            let c = case.clocks.iter().rev().find(|c| c.rule == rule).cloned();
            c.expect("clock")
        };
        let c = clock(&engine);
        assert_eq!(c.cycle, 2);
        assert!(c.paused_at.is_none(), "{c:?}");
        assert_eq!(c.extended, 0, "{c:?}");
        // The SPEC §3 worked example's deadline, untouched.
        let ms = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .expect("time")
                .timestamp_millis()
        };
        assert_eq!(c.deadline.get(), Some(ms("2026-10-31T00:00:00+08:00")));
        assert_eq!(engine.stats().data_problems, 0);
        // With no earlier cycle: a data problem each, and the clock runs on.
        let mut fresh = shipped_engine();
        let mut alerts = Vec::new();
        for (id, kind, time, data) in [
            (
                "d1",
                "approval.accepted",
                "2026-09-28T10:00:00+08:00",
                accepted,
            ),
            (
                "d2",
                "approval.suspended",
                "2026-09-05T10:00:00+08:00",
                "{}",
            ),
            (
                "d3",
                "approval.extended",
                "2026-09-05T11:00:00+08:00",
                extended,
            ),
        ] {
            let ev = event(id, "BACKPAUSED", kind, time, data);
            fresh.apply(&ev, &mut alerts).expect("applied");
        }
        // The pause for each of the two rules it pauses (`xk.decision`, `xz.promised`), the
        // extension for `xk.decision`.
        assert_eq!(fresh.stats().data_problems, 3);
        let c = clock(&fresh);
        assert!(c.paused_at.is_none() && c.extended == 0, "{c:?}");
        fresh.advance(ms("2026-10-31T00:00:00+08:00"), &mut alerts);
        assert!(
            alerts
                .iter()
                .any(|a| a.rule.as_ref() == "xk.decision" && a.reason == Reason::Overdue),
            "{alerts:?}"
        );
    }

    /// An event rejected for want of calendar data counts once among the calendar errors
    /// (`redlight_calendar_errors_total`), however many of its rules had left a deadline
    /// pending before the one that failed: nothing of a rejected event is kept, its pending
    /// deadlines included, nor is one of them the error-level line about pending deadlines.
    /// An event that is applied with a deadline pending counts that, and logs the line.
    #[test]
    fn a_rejected_event_counts_one_calendar_error() {
        let mut engine = shipped_engine();
        let mut alerts = Vec::new();
        let accepted = |id: &str, subject: &str, time: &str, kind: &str| {
            let data = format!(r#"{{"kind":"{kind}","promised_workdays":5}}"#);
            event(id, subject, "approval.accepted", time, &data)
        };
        // After the data ends (2026-12-31): `xk.decision`'s 20 workdays would be left
        // pending, but `xz.immediate`'s same workday cannot start, and the event is
        // rejected as a whole.
        let r = engine.apply(
            &accepted("a", "XZ-1", "2027-01-04T10:00:00+08:00", "immediate"),
            &mut alerts,
        );
        assert!(matches!(r, Err(EngineError::Calendar { .. })), "{r:?}");
        assert!(engine.case("XZ-1").is_none());
        assert_eq!(engine.stats().calendar_errors, 1);
        // Nor is its pending deadline the one error-level line: that waits for a deadline
        // that stays pending.
        assert!(!engine.core.pending_logged);
        assert!(engine.core.held_pending.is_none());
        // Accepted in December with a promise: both deadlines (20 and 5 workdays) lie in
        // 2027 and are left pending; the event is applied, and each counts.
        let r = engine.apply(
            &accepted("b", "XZ-2", "2026-12-28T10:00:00+08:00", "promised"),
            &mut alerts,
        );
        assert_eq!(r.ok(), Some(Applied::Applied));
        assert_eq!(engine.stats().calendar_errors, 3);
        assert!(engine.core.pending_logged);
    }

    /// A check's CEL condition sees `event`, `data` and `case` as the rule language says,
    /// whichever of them it reads (the engine builds only those), macros included, and
    /// JSON integers as `int`.
    #[test]
    fn conditions_see_the_event_its_data_and_the_case() {
        let cal = shipped_engine().core.cal.clone();
        // The deadline rule opens the case at the report (an event no rule handles opens
        // none); the check is the condition's.
        let fires = |condition: &str| -> bool {
            let pack = format!(
                "[pack]\nname = \"t\"\ntitle = \"t\"\n\
                 fields = [\"items\", \"count\", \"ratio\", \"delta\"]\n\
                 [[rule]]\nid = \"t.d\"\nkind = \"deadline\"\n\
                 title = \"d\"\nbasis = \"b\"\nstart = \"safety.accident_reported\"\n\
                 stop = [\"safety.accident_relayed\"]\nlimit = {{ hours = 2 }}\n\
                 [[rule]]\nid = \"t.c\"\nkind = \"check\"\n\
                 title = \"c\"\nbasis = \"b\"\non = \"safety.accident_discovered\"\n\
                 condition = '{condition}'\n"
            );
            let rules = RuleSet::from_sources(&[(std::path::PathBuf::from("rules/t.toml"), pack)])
                .unwrap_or_else(|e| panic!("{condition}: {e:?}"));
            let mut engine = Engine::new(Arc::new(rules), cal.clone());
            let mut alerts = Vec::new();
            for line in [
                r#"{"specversion":"1.0","id":"e1","source":"/t","type":"safety.accident_reported","time":"2026-06-01T10:00:00+08:00","subject":"AQ-1","data":{"department":"市应急管理局","deaths":2}}"#,
                r#"{"specversion":"1.0","id":"e2","source":"/hall","type":"safety.accident_discovered","time":"2026-06-01T10:30:00+08:00","subject":"AQ-1","data":{"by":"inspection","items":["a","b"],"count":3,"ratio":0.75,"delta":-2}}"#,
            ] {
                let ev = crate::event::Event::parse(line.as_bytes()).expect("event");
                engine.apply(&ev, &mut alerts).expect("applied");
            }
            assert!(alerts.len() <= 1, "{condition}: {alerts:?}");
            alerts.iter().any(|a| a.rule.as_ref() == "t.c")
        };
        for (condition, expected) in [
            (r#"event.type == "safety.accident_discovered""#, true),
            (
                r#"event.source == "/hall" && event.subject == "AQ-1""#,
                true,
            ),
            (r#"event.time.startsWith("2026-06-01T10:30:00")"#, true),
            (r#"event.data.by == "inspection""#, true),
            (r#"data.by == "inspection" && !has(data.department)"#, true),
            (r#"data.items.exists(i, i == "b")"#, true),
            (r#"data.items.all(i, i == "b")"#, false),
            (r#"case.id == "AQ-1" && case.data.deaths == 2"#, true),
            (
                r#"case.data.department == "市应急管理局" && case.data.by == "inspection""#,
                true,
            ),
            (r#""safety.accident_reported" in case.types"#, true),
            (
                r#"case.types.exists(t, t == "safety.accident_discovered")"#,
                false,
            ),
            (r#"data.by == case.data.by && event.id == "e2""#, true),
            // JSON integers are CEL's `int`, like its literals: arithmetic with them works.
            ("data.count + 1 == 4 && data.count * 2 > 5", true),
            (
                "case.data.deaths - 2 == 0 && event.data.delta + 2 == 0",
                true,
            ),
            (
                "data.count == 3u && data.count == 3.0 && data.ratio > 0.5",
                true,
            ),
            ("double(data.count) * data.ratio == 2.25", true),
            ("size(data.items) == 2 && data.items[1] == \"b\"", true),
            // Timestamps, durations and type names.
            (
                r#"timestamp(event.time) - timestamp("2026-06-01T10:00:00+08:00") == duration("30m")"#,
                true,
            ),
            (
                r#"timestamp(event.time).getHours("Asia/Shanghai") == 10"#,
                true,
            ),
            (
                "type(data.count) == int && type(data.ratio) == double",
                true,
            ),
            ("true", true),
            ("false", false),
        ] {
            assert_eq!(fires(condition), expected, "{condition}");
        }
    }

    /// Values that repeat are shared between cases; values that are all different stop
    /// going through the interner after a window, so its set does not grow with the cases.
    /// (Strings longer than a `ShortStr`: the short ones are held in place.)
    #[test]
    fn only_repeating_values_are_shared() {
        let mut engine = shipped_engine();
        let mut alerts = Vec::new();
        let n = 5_000;
        for i in 0..n {
            let data = format!(
                r#"{{"kind":"promised","promised_workdays":5,"department":"Department of Housing {}","certificate_no":"XK-2026-ZJ-{i:07}","handler":"张三","reference":"XK-{i:07}"}}"#,
                i % 3
            );
            let ev = event(
                &format!("e{i}"),
                &format!("C{i}"),
                "approval.accepted",
                "2026-11-02T09:00:00+08:00",
                &data,
            );
            engine.apply(&ev, &mut alerts).expect("applied");
        }
        let value = |case: &str, key: &str| match engine.case(case).and_then(|c| c.get(key)) {
            Some(Datum::Str(s)) => s.clone(),
            other => panic!("{case} {key}: {other:?}"),
        };
        // Every value is kept as given.
        assert_eq!(&*value("C4321", "certificate_no"), "XK-2026-ZJ-0004321");
        assert_eq!(&*value("C4321", "department"), "Department of Housing 1");
        let case = engine.case("C4321").expect("case");
        assert!(matches!(case.get("handler"), Some(Datum::Short(s)) if s.as_str() == "张三"));
        assert_eq!(
            case.get("reference").and_then(Datum::as_str),
            Some("XK-0004321")
        );
        // The departments are one copy each, early and late.
        assert!(ArcStr::ptr_eq(
            &value("C3", "department"),
            &value("C4998", "department")
        ));
        // The certificate numbers of the first window only were interned.
        let interned = engine.core.strings.strings.set.len();
        assert!(
            interned < SHARE_WINDOW as usize + 10,
            "{interned} strings interned for {n} cases"
        );
    }

    #[test]
    fn a_case_finds_each_of_its_fields_however_many_it_has() {
        // Up to 16 fields a case scans them, beyond it searches: both must find each one.
        let mut engine = shipped_engine();
        let mut alerts = Vec::new();
        for n in [0usize, 1, 5, 16, 17, 40] {
            let fields: Vec<String> = (0..n)
                .map(|j| format!(r#""f{:02}_{}":{j}"#, (j * 7) % n.max(1), "x".repeat(j % 4)))
                .collect();
            let ev = event(
                &format!("e{n}"),
                &format!("C{n}"),
                "approval.accepted",
                "2026-11-02T09:00:00+08:00",
                &format!("{{{}}}", fields.join(",")),
            );
            engine.apply(&ev, &mut alerts).expect("applied");
            let case = engine.case(&format!("C{n}")).expect("case");
            assert_eq!(case.data.len(), n);
            for (key, value) in ev.data.iter() {
                let found = case.get(key).map(|d| d.to_value());
                assert_eq!(found.as_ref(), Some(value), "{n} fields: {key}");
            }
            for missing in ["", "f", "f00", "f99_", "zz"] {
                if ev.data.get(missing).is_none() {
                    assert!(case.get(missing).is_none(), "{n} fields: {missing:?}");
                }
            }
        }
    }

    /// Events whose data keys are ever new do not grow the record of how sharing each
    /// key's values goes without bound.
    #[test]
    fn ever_new_data_keys_are_judged_in_a_bounded_record() {
        let mut engine = shipped_engine();
        let mut alerts = Vec::new();
        for i in 0..SHARE_KEYS + 100 {
            let ev = event(
                &format!("e{i}"),
                &format!("C{i}"),
                "approval.accepted",
                "2026-11-02T09:00:00+08:00",
                &format!(r#"{{"kind":"promised","promised_workdays":5,"note_{i}":"x"}}"#),
            );
            engine.apply(&ev, &mut alerts).expect("applied");
        }
        let judged = engine.core.strings.by_key.len();
        assert!(judged <= SHARE_KEYS, "{judged} keys judged");
        let last = format!("note_{}", SHARE_KEYS + 99);
        let kept = engine
            .case(&format!("C{}", SHARE_KEYS + 99))
            .and_then(|c| c.get(&last));
        assert!(matches!(kept, Some(Datum::Short(s)) if s.as_str() == "x"));
    }

    /// `Engine::prefetch` computes where the case map keeps a slot without reading it,
    /// from hashbrown's layout. If an upgrade changes that layout the hints go astray
    /// (nothing else: they are hints) and the engine is slower; this says so.
    #[test]
    fn the_case_map_is_laid_out_as_prefetch_expects() {
        let mut engine = shipped_engine();
        for n in 0..2_000 {
            engine.restore(Case::new(Arc::from(format!("CASE-{n}")), 0));
        }
        // Every full slot gives the same start of the control bytes.
        let ctrls: Vec<usize> = engine
            .cases
            .iter_buckets()
            .map(|i| engine.ctrl_addr(i).expect("full"))
            .collect();
        assert!(
            ctrls.windows(2).all(|w| w[0] == w[1]),
            "slots are not evenly laid out"
        );
        // A probe starts at `hash mod buckets`; in a table half full (2,000 keys, 4,096
        // slots) most keys sit in the first slot their probe reads, and nearly all within
        // its first group of 16 slots.
        let ctrl = ctrls[0];
        let size = std::mem::size_of::<Slot>();
        let (mut home, mut near) = (0, 0);
        for n in 0..2_000 {
            let id = format!("CASE-{n}");
            let index = engine
                .cases
                .find_bucket_index(key_hash(&id), |(k, _)| *k == id)
                .expect("restored");
            let slot = engine.cases.get_bucket(index).expect("full") as *const _ as usize;
            let (group, start) = engine.probe_start(ctrl, key_hash(&id));
            assert_eq!(ctrl - (index + 1) * size, slot);
            if start == slot {
                home += 1;
            }
            let pos = (slot_start_index(ctrl, start, size)) as usize;
            assert_eq!(group, ctrl + pos);
            if index.wrapping_sub(pos) % engine.cases.num_buckets() < 16 {
                near += 1;
            }
        }
        assert!(
            home > 1_000,
            "{home} of 2,000 keys in the slot their probe starts at"
        );
        assert!(
            near > 1_960,
            "{near} of 2,000 keys within their probe's first group"
        );
    }

    /// The index of the slot at `addr` (see `Engine::ctrl_addr`).
    fn slot_start_index(ctrl: usize, addr: usize, size: usize) -> usize {
        (ctrl - addr) / size - 1
    }

    #[test]
    fn period_labels_round_trip() {
        let d = NaiveDate::from_ymd_opt(2026, 9, 30).expect("date");
        let q = period_index(Period::Quarter, d);
        assert_eq!(period_label(Period::Quarter, q), "2026Q3");
        assert_eq!(parse_period(Period::Quarter, "2026Q3"), Some(q));
        assert_eq!(parse_period(Period::Quarter, "2026Q5"), None);
        let (first, last) = period_bounds(Period::Quarter, q);
        assert_eq!(first.to_string(), "2026-07-01");
        assert_eq!(last.to_string(), "2026-09-30");
        let m = period_index(Period::Month, d);
        assert_eq!(period_label(Period::Month, m), "2026-09");
        assert_eq!(parse_period(Period::Month, "2026-09"), Some(m));
        assert_eq!(
            period_bounds(Period::Year, 2026).1.to_string(),
            "2026-12-31"
        );
    }

    #[test]
    fn counts_accept_numbers_and_numeric_strings() {
        assert_eq!(as_count(&Value::from(15)), Some(15));
        assert_eq!(as_count(&Value::from(15.0)), Some(15));
        assert_eq!(as_count(&Value::from("15")), Some(15));
        assert_eq!(as_count(&Value::from(1.5)), None);
        assert_eq!(as_count(&Value::from(-1)), None);
        assert_eq!(as_count(&Value::Null), None);
        // Too many is still a count (it exceeds the limit), whatever its size.
        assert_eq!(as_count(&Value::from(u64::MAX)), Some(u64::MAX));
        assert_eq!(as_count(&Value::from("5000000000")), Some(5_000_000_000));
        assert_eq!(
            as_count(&Value::from(1e18)),
            Some(1_000_000_000_000_000_000)
        );
        assert_eq!(as_count(&Value::from(1e20)), None);
    }
}
