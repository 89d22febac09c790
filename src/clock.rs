//! How time is counted (SPEC §3): a legal clock's counted time, its deadline and its yellow.
//!
//! Instants are milliseconds since the Unix epoch (UTC). Day boundaries are in the
//! configured zone: day arithmetic runs on *local* milliseconds (the wall-clock reading
//! taken as if it were UTC), so that day `d` is `[d·DAY, (d+1)·DAY)` in local time.
//!
//! Counted time is a monotone measure `M` of local time, chosen by the unit:
//! - minutes and hours: every millisecond from the start instant `S` itself;
//! - days (民法典 Art. 201, the first day is not counted): every millisecond from 00:00 of
//!   the day after `S`;
//! - workdays: as days, but only milliseconds inside workdays count.
//!
//! A clock that ran over segments `[a₁,b₁) … [aₙ, now)` (pauses between) has counted
//! `Σ M(bᵢ) − M(aᵢ)`. Its deadline is the earliest instant at which the counted time reaches
//! the limit; for day units it then moves to 24:00 of the day on which that happens
//! (Art. 203), and for calendar days, when that day is not a workday, to 24:00 of the next
//! workday (Art. 203: a period ending on a holiday ends the day after the holiday).

use crate::calendar::{Calendar, CalendarError, date_from_index, day_index};
use crate::rules::{Unit, Warn};
use chrono::{NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;

/// One day in milliseconds.
pub const DAY: i64 = 86_400_000;

/// The wall clock: milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Local-time conversions for the calendar's zone, with a fast path for zones whose offset
/// is the same over the whole calendar range (Asia/Shanghai has had no DST since 1991).
#[derive(Debug, Clone, Copy)]
pub struct Zone {
    tz: Tz,
    fixed_offset_ms: Option<i64>,
    /// The UTC instants from the calendar's first day to the end of its last, where the
    /// fixed offset was checked, as `[start, end)`: [`Zone::format`] uses it only there. A
    /// pair rather than a `Range` so that a `Zone` is `Copy`.
    fixed_span: (i64, i64),
}

impl Zone {
    pub fn new(cal: &Calendar) -> Zone {
        let tz = cal.tz();
        let offset_at = |d: NaiveDate| -> Option<i64> {
            let naive = d.and_hms_opt(12, 0, 0)?;
            let dt = tz.from_local_datetime(&naive).earliest()?;
            Some(i64::from(dt.offset().fix().local_minus_utc()) * 1000)
        };
        let first = offset_at(cal.first_day());
        let fixed = cal
            .first_day()
            .iter_days()
            .take_while(|d| *d <= cal.last_day())
            .all(|d| offset_at(d) == first)
            .then_some(first)
            .flatten();
        let off = fixed.unwrap_or(0);
        Zone {
            tz,
            fixed_offset_ms: fixed,
            fixed_span: (
                cal.first_day_idx() * DAY - off,
                (cal.last_day_idx() + 1) * DAY - off,
            ),
        }
    }

    /// [`crate::alert::format_instant`] in this zone. Within the calendar's range of a zone
    /// with a fixed offset there, without asking the time-zone database for the offset:
    /// every alert carries one or two instants, and that lookup and chrono's conversions
    /// were most of the formatting's work.
    pub fn format(&self, ms: i64) -> String {
        if let Some(off) = self.fixed_offset_ms
            && (self.fixed_span.0..self.fixed_span.1).contains(&ms)
            && let Some(s) = crate::alert::format_at_offset(ms, off)
        {
            return s;
        }
        crate::alert::format_instant(ms, self.tz)
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// UTC instant → local milliseconds.
    pub fn to_local(&self, t: i64) -> i64 {
        if let Some(off) = self.fixed_offset_ms {
            return t + off;
        }
        match chrono::DateTime::from_timestamp_millis(t) {
            Some(utc) => {
                t + i64::from(
                    self.tz
                        .offset_from_utc_datetime(&utc.naive_utc())
                        .fix()
                        .local_minus_utc(),
                ) * 1000
            }
            None => t,
        }
    }

    /// Local milliseconds → the UTC instant (the earlier one when a DST fold repeats it, the
    /// first valid one after a DST gap).
    pub fn to_utc(&self, local: i64) -> i64 {
        if let Some(off) = self.fixed_offset_ms {
            return local - off;
        }
        let Some(naive) = chrono::DateTime::from_timestamp_millis(local).map(|d| d.naive_utc())
        else {
            return local;
        };
        let mut probe = naive;
        for _ in 0..4 {
            if let Some(dt) = self.tz.from_local_datetime(&probe).earliest() {
                return dt.timestamp_millis() - (probe - naive).num_milliseconds();
            }
            probe += chrono::Duration::minutes(30);
        }
        local
    }

    /// The local calendar date of an instant.
    pub fn date_of(&self, t: i64) -> NaiveDate {
        date_from_index(self.to_local(t).div_euclid(DAY)).unwrap_or(NaiveDate::MIN)
    }
}

/// Counting context: the calendar and its zone.
#[derive(Debug, Clone)]
pub struct Counting<'a> {
    pub cal: &'a Calendar,
    pub zone: &'a Zone,
}

impl Counting<'_> {
    /// Where counting starts for a clock started at `s` (UTC): `s` itself for minutes and
    /// hours, 00:00 (local) of the next day for day units.
    pub fn origin(&self, unit: Unit, s: i64) -> i64 {
        if unit.is_day_unit() {
            let local = self.zone.to_local(s);
            self.zone.to_utc((local.div_euclid(DAY) + 1) * DAY)
        } else {
            s
        }
    }

    /// The measure `M(t)` of SPEC §3 for the unit; only differences are meaningful.
    pub fn measure(&self, unit: Unit, t: i64) -> Result<i64, CalendarError> {
        match unit {
            Unit::Minutes | Unit::Hours => Ok(t),
            Unit::Days => Ok(self.zone.to_local(t)),
            Unit::Workdays => {
                let local = self.zone.to_local(t);
                let day = local.div_euclid(DAY);
                let before = self.cal.workdays_before_idx(day)? as i64 * DAY;
                Ok(if self.cal.is_workday_idx(day)? {
                    before + (local - day * DAY)
                } else {
                    before
                })
            }
        }
    }

    /// The earliest instant `t` with `M(t) = m` (the inverse of [`Counting::measure`]).
    pub fn instant_at(&self, unit: Unit, m: i64) -> Result<i64, CalendarError> {
        match unit {
            Unit::Minutes | Unit::Hours => Ok(m),
            Unit::Days => Ok(self.zone.to_utc(m)),
            Unit::Workdays => {
                let k = m.div_euclid(DAY);
                let r = m.rem_euclid(DAY);
                let local = if r == 0 {
                    if k == 0 {
                        self.cal.nth_workday_idx(0)? * DAY
                    } else {
                        // The end of the k-th workday: 24:00 of that day.
                        (self.cal.nth_workday_idx((k - 1) as u64)? + 1) * DAY
                    }
                } else {
                    self.cal.nth_workday_idx(k as u64)? * DAY + r
                };
                Ok(self.zone.to_utc(local))
            }
        }
    }

    /// Time counted over `[from, to)` for a clock whose counting starts at `origin`.
    pub fn counted(
        &self,
        unit: Unit,
        origin: i64,
        from: i64,
        to: i64,
    ) -> Result<i64, CalendarError> {
        let a = from.max(origin);
        if to <= a {
            return Ok(0);
        }
        Ok(self.measure(unit, to)? - self.measure(unit, a)?)
    }

    /// The instant a clock running since `since` (with `counted` already accrued before it)
    /// has counted `target` in total; `None` when it already has.
    pub fn reach(
        &self,
        unit: Unit,
        origin: i64,
        since: i64,
        counted: i64,
        target: i64,
    ) -> Result<i64, CalendarError> {
        let a = since.max(origin);
        let need = target - counted;
        if need <= 0 {
            return Ok(a);
        }
        self.instant_at(unit, self.measure(unit, a)? + need)
    }

    /// Moves the instant at which a day-unit limit was reached to 24:00 of that day
    /// (Art. 203), and for calendar days to 24:00 of the next workday when that day is not a
    /// workday. Hours and minutes are left as they are.
    pub fn day_end(&self, unit: Unit, reached: i64) -> Result<i64, CalendarError> {
        if !unit.is_day_unit() {
            return Ok(reached);
        }
        let local = self.zone.to_local(reached);
        // The day on which the limit is reached: an instant exactly at 00:00 closes the
        // previous day (24:00 of it), it does not open the next one.
        let mut day = (local - 1).div_euclid(DAY);
        if unit == Unit::Days && !self.cal.is_workday_idx(day)? {
            let date = date_from_index(day).unwrap_or(NaiveDate::MIN);
            day = day_index(self.cal.workday_on_or_after(date)?);
        }
        Ok(self.zone.to_utc((day + 1) * DAY))
    }

    /// 24:00 of the day of `s` when it is a workday, else of the next workday (即办件).
    pub fn same_workday_end(&self, s: i64) -> Result<i64, CalendarError> {
        let date = self.zone.date_of(s);
        let d = self.cal.workday_on_or_after(date)?;
        Ok(self.zone.to_utc((day_index(d) + 1) * DAY))
    }

    /// The deadline and yellow instant of a running span clock.
    pub fn schedule_span(
        &self,
        span: &Span,
        since: i64,
        counted: i64,
    ) -> Result<(i64, i64), CalendarError> {
        let reached = self.reach(span.unit, span.origin, since, counted, span.limit)?;
        let deadline = self.day_end(span.unit, reached)?;
        let warn_at = match span.warn {
            Warn::Share(_) => span.warn_threshold(),
            // SPEC §3: a fixed span before the deadline. Art. 203 may have moved the deadline
            // past the instant the count was reached (to 24:00 of that day; for calendar days
            // past the holiday the period ended in): the span is counted back from the
            // deadline itself, in the clock's counted time. Counted from where the count ran
            // out, a 30-day period ending in the National Day holiday turned yellow a week
            // before its deadline, not two days.
            Warn::Before { unit, amount } => {
                let moved = if span.unit.is_day_unit() && deadline > reached {
                    self.measure(span.unit, deadline - 1)? + 1 - self.measure(span.unit, reached)?
                } else {
                    0
                };
                (span.limit + moved - i64::from(amount) * unit.ms()).max(0)
            }
        };
        let yellow = self.reach(span.unit, span.origin, since, counted, warn_at)?;
        Ok((deadline, yellow.min(deadline)))
    }
}

/// The counted-time parameters of a span clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub unit: Unit,
    /// Where counting starts (UTC): see [`Counting::origin`].
    pub origin: i64,
    /// The limit plus granted extensions, in counted milliseconds.
    pub limit: i64,
    pub warn: Warn,
}

impl Span {
    /// Counted milliseconds at which the clock turns yellow.
    pub fn warn_threshold(&self) -> i64 {
        match self.warn {
            Warn::Share(share) => (self.limit as f64 * share).round() as i64,
            Warn::Before { unit, amount } => (self.limit - i64::from(amount) * unit.ms()).max(0),
        }
    }
}

/// The yellow instant of a fixed-instant clock (same workday, absolute due): the warning
/// share of the span from start to deadline, or a fixed span of wall time before it.
pub fn fixed_yellow(start: i64, deadline: i64, warn: Warn) -> i64 {
    match warn {
        Warn::Share(share) => {
            let span = (deadline - start).max(0);
            start + (span as f64 * share).round() as i64
        }
        Warn::Before { unit, amount } => (deadline - i64::from(amount) * unit.ms()).max(start),
    }
    .min(deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::Calendar;
    use chrono::DateTime;
    use std::path::Path;

    fn cal() -> Calendar {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendars");
        Calendar::load_dir(&dir, chrono_tz::Asia::Shanghai).expect("calendar data")
    }

    /// An alert's instants are written by `Zone::format`: exactly what `format_instant`
    /// writes, in a zone with a fixed offset over the calendar's years (Shanghai: the fast
    /// path inside them, the general one outside) and in one with summer time (the general
    /// one everywhere), on both sides of the calendar's edges.
    #[test]
    fn a_zone_formats_instants_as_format_instant_does() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendars");
        for tz in [chrono_tz::Asia::Shanghai, chrono_tz::America::Los_Angeles] {
            let cal = Calendar::load_dir(&dir, tz).expect("calendar data");
            let zone = Zone::new(&cal);
            assert_eq!(
                zone.fixed_offset_ms.is_some(),
                tz == chrono_tz::Asia::Shanghai
            );
            let first = zone.to_utc(cal.first_day_idx() * DAY);
            let end = zone.to_utc((cal.last_day_idx() + 1) * DAY);
            // Every 7 h 43 min 21.123 s from a year before the data to a year after it:
            // every hour of the day and many millisecond values, and the edges themselves.
            let mut instants: Vec<i64> = (0..)
                .map(|i| first - 366 * DAY + i * 27_801_123)
                .take_while(|&ms| ms < end + 366 * DAY)
                .collect();
            for edge in [first, end] {
                instants.extend([edge - 1000, edge - 1, edge, edge + 1, edge + 1000]);
            }
            instants.extend([0, -1, i64::MIN, i64::MAX]);
            for ms in instants {
                assert_eq!(
                    zone.format(ms),
                    crate::alert::format_instant(ms, tz),
                    "{ms} in {tz}"
                );
            }
        }
        let zone = Zone::new(&cal());
        assert_eq!(
            zone.format(t("2026-10-31T00:00:00+08:00")),
            "2026-10-31T00:00:00+08:00"
        );
        assert_eq!(
            zone.format(t("2026-10-30T16:00:00.123Z")),
            "2026-10-31T00:00:00.123+08:00"
        );
    }

    fn t(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .timestamp_millis()
    }

    fn show(ms: i64, zone: &Zone) -> String {
        zone.format(ms)
    }

    #[test]
    fn spec_worked_example_twenty_workdays() {
        let cal = cal();
        let zone = Zone::new(&cal);
        let c = Counting {
            cal: &cal,
            zone: &zone,
        };
        let s = t("2026-09-28T10:00:00+08:00");
        let span = Span {
            unit: Unit::Workdays,
            origin: c.origin(Unit::Workdays, s),
            limit: 20 * DAY,
            warn: Warn::Share(0.9),
        };
        assert_eq!(show(span.origin, &zone), "2026-09-29T00:00:00+08:00");
        let (deadline, yellow) = c.schedule_span(&span, s, 0).expect("in data");
        assert_eq!(show(deadline, &zone), "2026-10-31T00:00:00+08:00");
        assert_eq!(show(yellow, &zone), "2026-10-29T00:00:00+08:00");
    }

    #[test]
    fn calendar_days_ending_on_a_holiday_run_to_the_next_workday() {
        let cal = cal();
        let zone = Zone::new(&cal);
        let c = Counting {
            cal: &cal,
            zone: &zone,
        };
        // Started 2026-09-03: 30 days counted from 09-04 end on 10-03, inside the National
        // Day holiday (10-01..10-07); the next workday is 10-08, so 24:00 of 10-08.
        let s = t("2026-09-03T15:00:00+08:00");
        let span = Span {
            unit: Unit::Days,
            origin: c.origin(Unit::Days, s),
            limit: 30 * DAY,
            warn: Warn::Share(0.9),
        };
        let (deadline, yellow) = c.schedule_span(&span, s, 0).expect("in data");
        assert_eq!(show(deadline, &zone), "2026-10-09T00:00:00+08:00");
        // 27 days after 09-04 00:00 is 10-01 00:00: yellow is not moved.
        assert_eq!(show(yellow, &zone), "2026-10-01T00:00:00+08:00");
    }

    /// SPEC §3: a yellow "a fixed span before the deadline" is before the deadline as
    /// Art. 203 moved it, not before the day the count ran out.
    #[test]
    fn a_span_before_the_deadline_counts_back_from_the_moved_deadline() {
        let cal = cal();
        let zone = Zone::new(&cal);
        let c = Counting {
            cal: &cal,
            zone: &zone,
        };
        // As above: 30 days from 09-04 run out on 10-03, in the holiday; deadline 10-09.
        let s = t("2026-09-03T15:00:00+08:00");
        let before = |unit, amount| Span {
            unit: Unit::Days,
            origin: c.origin(Unit::Days, s),
            limit: 30 * DAY,
            warn: Warn::Before { unit, amount },
        };
        let (deadline, yellow) = c
            .schedule_span(&before(Unit::Days, 2), s, 0)
            .expect("in data");
        assert_eq!(show(deadline, &zone), "2026-10-09T00:00:00+08:00");
        assert_eq!(show(yellow, &zone), "2026-10-07T00:00:00+08:00");
        let (_, yellow) = c
            .schedule_span(&before(Unit::Hours, 8), s, 0)
            .expect("in data");
        assert_eq!(show(yellow, &zone), "2026-10-08T16:00:00+08:00");
        // A workday count ends at 24:00 of a workday: nothing moves. The worked example's
        // deadline 10-31 00:00; two workdays before it is 10-29 00:00 (10-29 and 10-30 are
        // workdays).
        let s = t("2026-09-28T10:00:00+08:00");
        let span = Span {
            unit: Unit::Workdays,
            origin: c.origin(Unit::Workdays, s),
            limit: 20 * DAY,
            warn: Warn::Before {
                unit: Unit::Workdays,
                amount: 2,
            },
        };
        let (deadline, yellow) = c.schedule_span(&span, s, 0).expect("in data");
        assert_eq!(show(deadline, &zone), "2026-10-31T00:00:00+08:00");
        assert_eq!(show(yellow, &zone), "2026-10-29T00:00:00+08:00");
    }

    #[test]
    fn hours_count_from_the_start_instant() {
        let cal = cal();
        let zone = Zone::new(&cal);
        let c = Counting {
            cal: &cal,
            zone: &zone,
        };
        let s = t("2026-10-01T23:30:00+08:00");
        let span = Span {
            unit: Unit::Hours,
            origin: c.origin(Unit::Hours, s),
            limit: Unit::Hours.ms(),
            warn: Warn::Share(0.9),
        };
        let (deadline, yellow) = c.schedule_span(&span, s, 0).expect("hours");
        assert_eq!(show(deadline, &zone), "2026-10-02T00:30:00+08:00");
        assert_eq!(show(yellow, &zone), "2026-10-02T00:24:00+08:00");
    }

    #[test]
    fn workday_measure_skips_holidays_and_counts_makeup_days() {
        let cal = cal();
        let zone = Zone::new(&cal);
        let c = Counting {
            cal: &cal,
            zone: &zone,
        };
        let u = Unit::Workdays;
        // 2026-10-01 .. 10-07 holiday: no workday time passes.
        let gap = c
            .counted(
                u,
                0,
                t("2026-10-01T00:00:00+08:00"),
                t("2026-10-08T00:00:00+08:00"),
            )
            .expect("data");
        assert_eq!(gap, 0);
        // 2026-10-10 is a Saturday make-up workday: a whole day counts.
        let sat = c
            .counted(
                u,
                0,
                t("2026-10-10T00:00:00+08:00"),
                t("2026-10-11T00:00:00+08:00"),
            )
            .expect("data");
        assert_eq!(sat, DAY);
    }

    #[test]
    fn same_workday_on_a_holiday_moves_to_the_next_workday() {
        let cal = cal();
        let zone = Zone::new(&cal);
        let c = Counting {
            cal: &cal,
            zone: &zone,
        };
        let d = c
            .same_workday_end(t("2026-10-03T09:00:00+08:00"))
            .expect("data");
        assert_eq!(show(d, &zone), "2026-10-09T00:00:00+08:00");
        let d = c
            .same_workday_end(t("2026-09-28T09:00:00+08:00"))
            .expect("data");
        assert_eq!(show(d, &zone), "2026-09-29T00:00:00+08:00");
    }

    #[test]
    fn a_year_without_data_is_an_error_not_a_guess() {
        let cal = cal();
        let zone = Zone::new(&cal);
        let c = Counting {
            cal: &cal,
            zone: &zone,
        };
        let s = t("2026-12-20T10:00:00+08:00");
        let span = Span {
            unit: Unit::Workdays,
            origin: c.origin(Unit::Workdays, s),
            limit: 20 * DAY,
            warn: Warn::Share(0.9),
        };
        assert!(c.schedule_span(&span, s, 0).is_err());
    }
}
