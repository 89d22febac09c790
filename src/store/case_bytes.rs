//! A case's stored bytes (and an alert's, [`write_alert`]), written by hand: exactly what
//! `rmp_serde::to_vec(case)` writes (MessagePack, each struct an array of its fields in declaration order, enum variants by
//! name), so that every reader — [`super::decode_case`], the views' partial decoding in
//! `src/api.rs`, stores written before — reads them as before.
//!
//! Why by hand: the daemon's consumer loop encodes every case an event or a timer changed,
//! about two per event in the 1M-event benchmark, and serde's generic path took about 520 ns
//! for a case of 379 bytes. The rare parts (violations, duties, data values that are JSON
//! arrays or objects) still go through `rmp_serde`. The tests compare the bytes with
//! `rmp_serde`'s for every state of the sample cases, for hand-made ones at the edges of
//! each MessagePack size class, and (tests/properties.rs) for random event streams. A field
//! added to `Case`, `Clock`, `Mode` or `Stages` must be added here too, in its place: the
//! tests then fail until it is.

use crate::alert::Alert;
use crate::engine::{Case, Clock, Datum, Mode};
use crate::rules::Unit;

/// Appends the case's bytes to `out`.
pub(super) fn write_case(out: &mut Vec<u8>, case: &Case) -> Result<(), rmp_serde::encode::Error> {
    // Room for a case of a few hundred bytes at once, rather than growing on the way.
    out.reserve(1024);
    array_len(out, 11);
    str(out, &case.id);
    array_len(out, case.data.len());
    for (key, value) in &case.data {
        array_len(out, 2);
        str(out, key);
        match value {
            Datum::Null => out.push(0xc0),
            Datum::Bool(b) => bool(out, *b),
            // serde_json's own order: a non-negative integer as u64, a negative one as
            // i64, anything else as f64.
            Datum::UInt(u) => uint(out, *u),
            Datum::Int(i) => sint(out, *i),
            Datum::Float(f) => f64(out, *f),
            Datum::Short(s) => str(out, s.as_str()),
            Datum::Str(s) => str(out, s),
            Datum::Other(v) => rmp_serde::encode::write(out, v)?,
        }
    }
    array_len(out, case.seen.len());
    for h in &case.seen {
        uint(out, *h);
    }
    // A u128 is written as its 16 big-endian bytes, a `bin 8`.
    out.extend_from_slice(&[0xc4, 16]);
    out.extend_from_slice(&case.types.to_be_bytes());
    sint(out, case.first_event);
    sint(out, case.last_event);
    bool(out, case.withdrawn);
    array_len(out, case.clocks.len());
    for c in &case.clocks {
        clock(out, c);
    }
    array_len(out, case.stages.len());
    for s in &case.stages {
        array_len(out, 2);
        uint(out, u64::from(s.rule));
        sint(out, i64::from(s.last));
    }
    if case.violations.is_empty() {
        array_len(out, 0);
    } else {
        rmp_serde::encode::write(out, &case.violations)?;
    }
    if case.duties.is_empty() {
        array_len(out, 0);
    } else {
        rmp_serde::encode::write(out, &case.duties)?;
    }
    Ok(())
}

fn clock(out: &mut Vec<u8>, c: &Clock) {
    array_len(out, 17);
    uint(out, u64::from(c.rule));
    uint(out, u64::from(c.cycle));
    sint(out, c.started);
    match c.mode {
        // A newtype variant: a map of one entry, its name to its value.
        Mode::Span(s) => {
            out.push(0x81);
            str(out, "Span");
            array_len(out, 5);
            unit(out, s.unit);
            sint(out, s.origin);
            sint(out, s.limit);
            match s.warn_share {
                Some(share) => f64(out, share),
                None => out.push(0xc0),
            }
            match s.warn_before {
                Some((u, n)) => {
                    array_len(out, 2);
                    unit(out, u);
                    uint(out, u64::from(n));
                }
                None => out.push(0xc0),
            }
        }
        // A struct variant: its name to its fields as an array.
        Mode::Fixed { deadline, warn_at } => {
            out.push(0x81);
            str(out, "Fixed");
            array_len(out, 2);
            sint(out, deadline);
            sint(out, warn_at);
        }
    }
    uint(out, u64::from(c.extended));
    sint(out, c.counted);
    for t in [
        c.since,
        c.paused_at,
        c.deadline,
        c.yellow_at,
        c.last_deadline,
    ] {
        match t.get() {
            Some(t) => sint(out, t),
            None => out.push(0xc0),
        }
    }
    bool(out, c.yellow_fired);
    bool(out, c.red_fired);
    match c.stopped.get() {
        Some(t) => sint(out, t),
        None => out.push(0xc0),
    }
    bool(out, c.late);
    uint(out, u64::from(c.yellow_retractions));
    uint(out, u64::from(c.red_retractions));
}

/// Appends an alert's stored bytes: exactly what `rmp_serde` writes for the stored tuple
/// (`StoredAlert` in `src/store.rs`: an array of its fields, enum variants by their serde
/// names, an absent field as nil). By hand for the same reason as a case: the store writer
/// encodes every alert (about 1.2 per event in the 1M-event benchmark), and serde's path
/// was about 1,200 instructions each. A test compares the bytes with `rmp_serde`'s for
/// every level, status and reason, and absent and long fields.
pub(super) fn write_alert(out: &mut Vec<u8>, a: &Alert) {
    array_len(out, 14);
    for s in [&*a.id, &*a.rule, &*a.title, &*a.basis, &*a.case] {
        str(out, s);
    }
    for s in [a.level.as_str(), a.status.as_str(), a.reason.as_str()] {
        str(out, s);
    }
    str(out, &a.at);
    for field in [
        a.deadline.as_deref(),
        a.detail.as_deref(),
        a.department.as_deref(),
        a.item.as_deref(),
        a.handler.as_deref(),
    ] {
        match field {
            Some(s) => str(out, s),
            None => out.push(0xc0),
        }
    }
}

/// A unit variant: its (serde) name.
fn unit(out: &mut Vec<u8>, u: Unit) {
    str(
        out,
        match u {
            Unit::Minutes => "minutes",
            Unit::Hours => "hours",
            Unit::Days => "days",
            Unit::Workdays => "workdays",
        },
    );
}

fn bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { 0xc3 } else { 0xc2 });
}

fn f64(out: &mut Vec<u8>, f: f64) {
    tagged(out, 0xcb, &f.to_be_bytes());
}

/// A marker byte and what follows it, in one copy: pushing the marker on its own checked
/// the vector's room twice per value (with the rest of the encoding, a few percent of the
/// daemon loop's samples).
#[inline]
fn tagged(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    let mut buf = [0u8; 9];
    buf[0] = tag;
    buf[1..=bytes.len()].copy_from_slice(bytes);
    out.extend_from_slice(&buf[..=bytes.len()]);
}

/// The smallest form of an unsigned integer, as `rmp::encode::write_uint`.
fn uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if let Ok(v) = u8::try_from(v) {
        out.extend_from_slice(&[0xcc, v]);
    } else if let Ok(v) = u16::try_from(v) {
        tagged(out, 0xcd, &v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(v) {
        tagged(out, 0xce, &v.to_be_bytes());
    } else {
        tagged(out, 0xcf, &v.to_be_bytes());
    }
}

/// The smallest form of a signed integer, as `rmp::encode::write_sint`: a non-negative one
/// as an unsigned integer.
fn sint(out: &mut Vec<u8>, v: i64) {
    if let Ok(u) = u64::try_from(v) {
        uint(out, u);
    } else if v >= -32 {
        out.push(v as u8); // negative fixint: 0xe0..=0xff
    } else if let Ok(v) = i8::try_from(v) {
        tagged(out, 0xd0, &v.to_be_bytes());
    } else if let Ok(v) = i16::try_from(v) {
        tagged(out, 0xd1, &v.to_be_bytes());
    } else if let Ok(v) = i32::try_from(v) {
        tagged(out, 0xd2, &v.to_be_bytes());
    } else {
        tagged(out, 0xd3, &v.to_be_bytes());
    }
}

fn str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    // The marker, the length and the bytes: room checked once.
    out.reserve(5 + n);
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[0xd9, n]);
    } else if let Ok(n) = u16::try_from(n) {
        tagged(out, 0xda, &n.to_be_bytes());
    } else {
        tagged(out, 0xdb, &(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn array_len(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        tagged(out, 0xdc, &n.to_be_bytes());
    } else {
        tagged(out, 0xdd, &(n as u32).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Level, Reason, Status};

    fn same_bytes(case: &Case) {
        let mut mine = Vec::new();
        write_case(&mut mine, case).expect("writes");
        let theirs = rmp_serde::to_vec(case).expect("rmp_serde");
        assert_eq!(mine, theirs, "case {}: {case:?}", case.id);
        // And reads back as it was, its event ids' index (past 64) rebuilt.
        let back: Case = rmp_serde::from_slice(&mine).expect("reads back");
        assert_eq!(&back, case);
        assert!(case.seen.iter().all(|&h| back.seen.contains(h)));
        let absent = (0x5a5a_0000u64..)
            .find(|h| !case.seen.iter().any(|x| x == h))
            .expect("a hash not there");
        assert!(!back.seen.contains(absent));
    }

    #[test]
    fn alerts_are_written_as_rmp_serde_writes_them() {
        let base: Alert = serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef0123456789abcdef", "rule": "xk.statutory",
            "title": "行政许可法定期限", "basis": "《行政许可法》第四十二条",
            "case": "XK-2026-0001", "level": "red", "status": "firing", "reason": "overdue",
            "at": "2026-11-02T00:00:00+08:00"
        }))
        .expect("alert");
        let levels = [Level::Yellow, Level::Red];
        let statuses = [Status::Firing, Status::Resolved];
        let reasons = [
            Reason::Approaching,
            Reason::Overdue,
            Reason::Violation,
            Reason::Missing,
            Reason::Completed,
            Reason::CompletedLate,
            Reason::Retracted,
            Reason::Withdrawn,
        ];
        let texts = [
            None,
            Some(String::new()),
            Some("市市场监管局".to_string()),
            Some("x".repeat(31)),
            Some("x".repeat(32)),
            Some("办".repeat(100)),
            Some("x".repeat(70_000)),
        ];
        let mut n = 0;
        for (i, text) in texts.iter().enumerate() {
            for (j, reason) in reasons.iter().enumerate() {
                let mut a = base.clone();
                a.level = levels[(i + j) % 2];
                a.status = statuses[(i + j / 2) % 2];
                a.reason = *reason;
                a.deadline = text.clone();
                a.detail = texts[(i + 1) % texts.len()].clone();
                a.department = texts[(i + 2) % texts.len()].clone();
                a.item = texts[(i + j) % texts.len()].clone();
                a.handler = text.clone();
                let mut mine = Vec::new();
                write_alert(&mut mine, &a);
                let mut theirs = Vec::new();
                super::super::encode_alert_with_serde(&a, &mut theirs).expect("rmp_serde");
                assert_eq!(mine, theirs, "{a:?}");
                assert_eq!(super::super::decode_alert(&mine).as_ref(), Ok(&a));
                n += 1;
            }
        }
        assert_eq!(n, 56);
    }

    /// Every state of every case of the sample events, after each event and after the
    /// deadlines fired.
    #[test]
    fn the_sample_cases_are_written_as_rmp_serde_writes_them() {
        let states = crate::engine::sample_case_states();
        for case in &states {
            same_bytes(case);
        }
        assert!(states.len() > 40, "{} states", states.len());
    }

    /// Values at the edges of each MessagePack size class, every kind of data value, both
    /// modes, long lists, long strings.
    #[test]
    fn the_edges_of_every_size_class_are_written_as_rmp_serde_writes_them() {
        let ints: [i64; 22] = [
            0,
            1,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            4_294_967_295,
            4_294_967_296,
            i64::MAX,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32_768,
            -32_769,
            -2_147_483_648,
            -2_147_483_649,
            i64::MIN,
            1_793_376_000_000,
        ];
        let base: Case = serde_json::from_str(
            r#"{"id":"A","data":[],"seen":[],"types":0,"first_event":0,"last_event":0,"withdrawn":false,"clocks":[],"stages":[],"violations":[],"duties":[]}"#,
        )
        .expect("parse");
        let clock = |mode: serde_json::Value, n: i64, t: Option<i64>| -> serde_json::Value {
            serde_json::json!({
                "rule": (n.unsigned_abs() % 65_536) as u16, "cycle": (n.unsigned_abs() % (1 << 32)) as u32,
                "started": n, "mode": mode, "extended": (n.unsigned_abs() % 1000) as u32,
                "counted": n, "since": t, "paused_at": t, "deadline": t, "yellow_at": t,
                "last_deadline": t, "yellow_fired": n % 2 == 0, "red_fired": n % 3 == 0,
                "stopped": t, "late": n < 0, "yellow_retractions": (n.unsigned_abs() % 300) as u32,
                "red_retractions": ([0, 1, 300, u32::MAX])[(n.unsigned_abs() % 4) as usize],
            })
        };
        for (i, &n) in ints.iter().enumerate() {
            let mut case = base.clone();
            case.id = "x"
                .repeat([0, 31, 32, 255, 256, 65_535, 65_536][i % 7])
                .into();
            case.first_event = n;
            case.last_event = n.wrapping_neg();
            case.types = (n as u128) << (i * 3);
            case.withdrawn = i % 2 == 1;
            case.seen = (0..[0, 2, 6, 7, 16, 64, 65, 100][i % 8])
                .map(|k| (n as u64).wrapping_add(k))
                .collect();
            let modes = [
                serde_json::json!({"Span": ["workdays", n, n, 0.9, null]}),
                serde_json::json!({"Span": ["minutes", n, n.wrapping_neg(), null, ["hours", 4]]}),
                serde_json::json!({"Span": ["days", 0, 1, 0.75, ["days", 300]]}),
                serde_json::json!({"Fixed": {"deadline": n, "warn_at": n.wrapping_sub(1)}}),
            ];
            // i64::MIN is `OptMs`'s "none".
            let t = if i % 3 == 0 || n == i64::MIN {
                None
            } else {
                Some(n)
            };
            let clocks: Vec<serde_json::Value> = (0..[1, 2, 16][i % 3])
                .map(|k| clock(modes[(i + k) % 4].clone(), n.wrapping_add(k as i64), t))
                .collect();
            case.clocks = serde_json::from_value(serde_json::Value::Array(clocks)).expect("clocks");
            let data = serde_json::json!([
                ["a", null], ["b", true], ["c", false], ["d", n], ["e", (n as u64)],
                ["f", 2.5], ["g", -0.0], ["h", "短"], ["i", "長".repeat(100)],
                ["j", [1, "two", {"three": 3}]], ["k", {"x": [n]}], ["l", 1e300],
            ]);
            case.data = serde_json::from_value(data).expect("data");
            if i % 4 == 0 {
                // More than fifteen entries: a longer array header.
                case.data = (0..17)
                    .map(|k| {
                        (
                            format!("k{k:02}").into(),
                            Datum::string("v", |s: &str| arcstr::ArcStr::from(s)),
                        )
                    })
                    .collect();
            }
            case.stages = serde_json::from_value(serde_json::json!([
                {"rule": 1, "last": -1}, {"rule": 300, "last": 200}, {"rule": 65535, "last": -200}
            ]))
            .expect("stages");
            if i % 2 == 0 {
                case.violations = serde_json::from_value(serde_json::json!([
                    {"rule": 3, "key": "e1", "at": n, "detail": "先于受理", "resolved": false}
                ]))
                .expect("violations");
                case.duties = serde_json::from_value(serde_json::json!([
                    {"rule": 4, "period": 24_309, "due": n, "met": [1, 2], "missing": [[3, n]], "pending": true}
                ]))
                .expect("duties");
            }
            same_bytes(&case);
        }
    }
    /// A duty stored before its start period was kept (six fields) reads back without one,
    /// and one stored now keeps it.
    #[test]
    fn a_duty_stored_before_its_start_was_kept_reads_back() {
        let old =
            rmp_serde::to_vec(&[(4u16, 24_309i32, 7i64, vec![1i32], vec![(3i32, 7i64)], true)])
                .expect("encode");
        let duties: Vec<crate::engine::Duty> = rmp_serde::from_slice(&old).expect("decode");
        assert_eq!(
            (duties[0].rule, duties[0].period, duties[0].start),
            (4, 24_309, None)
        );
        assert_eq!(duties[0].missing, [(3, 7)]);
        let mut now = duties.clone();
        now[0].start = Some(24_300);
        let bytes = rmp_serde::to_vec(&now).expect("encode");
        let back: Vec<crate::engine::Duty> = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, now);
    }

    /// A clock stored before format 9 had one count of retractions for both its lights
    /// (sixteen fields): it reads back with the red's count "as the yellow's", so that both
    /// lights keep the alert ids they had, and is written back as it reads.
    #[test]
    fn a_clock_stored_with_one_count_of_retractions_keeps_its_ids() {
        use crate::engine::{Clock, SAME_AS_YELLOW};
        let started = 1_790_560_800_000i64;
        let mode = Mode::Fixed {
            deadline: started + 86_400_000,
            warn_at: started + 43_200_000,
        };
        let old = rmp_serde::to_vec(&[(
            6u16,
            1u32,
            started,
            mode,
            0u32,
            0i64,
            Some(started),
            None::<i64>,
            Some(started + 86_400_000),
            Some(started + 43_200_000),
            Some(started + 86_400_000),
            true,
            true,
            None::<i64>,
            false,
            2u32,
        )])
        .expect("encode");
        let clocks: Vec<Clock> = rmp_serde::from_slice(&old).expect("decode");
        assert_eq!(clocks[0].red_retractions, SAME_AS_YELLOW);
        let before = format!("1@{started}#2");
        assert_eq!(clocks[0].occurrence(Level::Yellow), before);
        assert_eq!(clocks[0].occurrence(Level::Red), before);
        let mut case: Case = serde_json::from_str(
            r#"{"id":"A","data":[],"seen":[],"types":0,"first_event":0,"last_event":0,"withdrawn":false,"clocks":[],"stages":[],"violations":[],"duties":[]}"#,
        )
        .expect("parse");
        case.clocks = clocks.into_iter().collect();
        same_bytes(&case);
    }
}
