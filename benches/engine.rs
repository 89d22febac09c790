//! Engine benchmark: prints figures, never asserts timing.
//!
//! ```text
//! cargo bench --bench engine                 # 1,000,000 open cases, ~1,000,000 replay lines
//! cargo bench --bench engine -- --quick      # 20,000 cases: the CI smoke run
//! ```
//!
//! Further options (after `--`): `--cases N`, `--replay-cases N`, `--only load|engine|replay`
//! (`load` stops after the load phase and the memory figures),
//! `--breakdown` (time per event type in the mix phase; adds two clock reads per event),
//! `--no-binary` (skip timing `target/release/redlight replay`), `--keep` (keep the JSON
//! Lines file in `target/redlight-bench/`), `--warm` (see below).
//!
//! `--warm` first does the whole engine run once untimed and drops that engine, so the
//! timed run reuses memory the process has touched before (the bench keeps freed memory,
//! `tune_allocator`): the engine's own speed, without the cost of memory fresh from the
//! system. On this development machine that cost is the host's (a virtual machine whose
//! host backs guest memory on first touch, `scripts/first-touch.c`); on 2026-12-05 it
//! made the cold load of a million cases 6-7 times slower than the warm one. A long-running
//! daemon pays it once, as its memory grows; the cold figures are the default. A warm run
//! prints no memory per case (its RSS does not grow).
//!
//! What it measures, single-threaded, with the real engine built from
//! `config/redlight.toml`:
//! 1. `engine`: `Engine::advance_before` + `Engine::apply` on events already built in memory,
//!    for the load of N open cases (one opening event each) and then for a mix of the
//!    further events of those cases through 2026 (times moving forward, so timers fire as
//!    in a real run). Events are built in chunks outside the timed sections.
//! 2. `replay`: `redlight::cli::replay` over a JSON Lines file of CloudEvents generated with
//!    the same workload, alerts serialised to a sink; plus, once, the release binary.
//! 3. `memory`: VmRSS growth from before the engine is built to after the load, per case,
//!    and what each case owns (walking `Engine::cases`, allocations rounded as glibc does;
//!    the timer index is the remainder), and how many timers share a due instant; and what
//!    the daemon's open-case gauges cost per case (every case encoded with and without
//!    judging it, `src/open_counts.rs`). After the mix, VmRSS again (about the process's
//!    peak: the cases' later events have added to them, and freed memory is kept).
//!
//! The workload (all times +08:00, all inside 2026):
//! - N cases opened on Monday 2026-03-02 between 08:30 and 12:00 (the load phase):
//!   88% `approval.accepted` promised (承诺件; promised_workdays 3..20, 4% joint with up to
//!   45, 0.3% over the statutory maximum), 6% `approval.accepted` immediate (即办件), 3%
//!   `market.registration_accepted`, 2.5% `safety.hazard_reported` (70% major), and a few
//!   `safety.accident_occurred` in the last 50 minutes; data drawn from 50 departments,
//!   200 items and 500 handlers.
//! - The mix, from 12:00 that day to the end of 2026, ordered by time: for approvals
//!   reviewed (2% skip it: a sequence violation), suspended/resumed (10%, 5% of them never
//!   resumed), extended (4%, a few over the cap), decided (88% in time, 8% late, 4% never),
//!   certificate_issued (approved ones), completed, withdrawn (1%), duplicates (0.5% of
//!   decisions sent twice); immediate cases decided and completed the same day (7% after
//!   the 16:00 yellow, 3% the next day); market registrations decided, quarterly reports
//!   (some late or missing), changes and reconsiderations; hazard investigations,
//!   rectification orders with a due time and rectifications; accident reports, relays and
//!   discoveries; quarterly safety meetings of 50 departments.

use anyhow::{Context, Result, bail};
use chrono::{DateTime, FixedOffset, SecondsFormat, TimeZone};
use redlight::alert::{Alert, Level, Status};
use redlight::cli;
use redlight::config::Config;
use redlight::engine::{Applied, Engine};
use redlight::event::{Data, Event};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// Events are built this many at a time, outside the timed sections.
const CHUNK: usize = 4096;

fn main() -> Result<()> {
    redlight::tune_allocator();
    let opts = Options::parse()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config_path = root.join("config/redlight.toml");
    println!(
        "redlight engine bench ({}): {} cases, {} replay cases, config {}",
        if opts.quick { "quick" } else { "full" },
        opts.cases,
        opts.replay_cases,
        config_path.display()
    );
    // (order, line): engine, replay, replay (binary), memory.
    let mut summary: Vec<(u8, String)> = Vec::new();
    if opts.engine {
        engine_bench(&opts, &config_path, &mut summary)?;
    }
    if opts.replay {
        replay_bench(&opts, root, &config_path, &mut summary)?;
    }
    println!();
    println!("== summary ==");
    summary.sort_by_key(|(order, _)| *order);
    for (_, line) in &summary {
        println!("{line}");
    }
    println!(
        "targets (not asserted): engine >= 2,000,000 events/s, replay >= 500,000 events/s, \
         <= 1024 bytes per open case"
    );
    Ok(())
}

struct Options {
    quick: bool,
    cases: usize,
    replay_cases: usize,
    engine: bool,
    mix: bool,
    replay: bool,
    binary: bool,
    keep: bool,
    breakdown: bool,
    warm: bool,
}

impl Options {
    fn parse() -> Result<Options> {
        let mut o = Options {
            quick: false,
            cases: 1_000_000,
            // About 4.9 lines per case: ~1,000,000 lines.
            replay_cases: 203_000,
            engine: true,
            mix: true,
            replay: true,
            binary: true,
            keep: false,
            breakdown: false,
            warm: false,
        };
        let mut cases = None;
        let mut replay_cases = None;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut number = |name: &str| -> Result<usize> {
                let v = args
                    .next()
                    .with_context(|| format!("{name} needs a value"))?;
                v.replace('_', "")
                    .parse()
                    .with_context(|| format!("{name} {v:?} is not a number"))
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--cases" => cases = Some(number("--cases")?),
                "--replay-cases" => replay_cases = Some(number("--replay-cases")?),
                "--only" => match args.next().as_deref() {
                    Some("engine") => o.replay = false,
                    Some("load") => (o.replay, o.mix) = (false, false),
                    Some("replay") => o.engine = false,
                    other => bail!("--only takes load, engine or replay, not {other:?}"),
                },
                "--no-binary" => o.binary = false,
                "--keep" => o.keep = true,
                "--breakdown" => o.breakdown = true,
                "--warm" => o.warm = true,
                // cargo bench passes `--bench`; ignore it and any filter.
                _ => {}
            }
        }
        if o.quick {
            o.cases = 20_000;
            o.replay_cases = 20_000;
        }
        o.cases = cases.unwrap_or(o.cases).max(1);
        o.replay_cases = replay_cases.unwrap_or(o.replay_cases).max(1);
        Ok(o)
    }
}

// ---------------------------------------------------------------------------------------
// Measurement helpers

/// VmRSS of this process in bytes (0 where /proc is missing).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// `1234567.8` → `1,234,568`.
fn grouped(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Default)]
struct Tally {
    events: u64,
    elapsed: Duration,
    alerts: u64,
    yellow_firing: u64,
    red_firing: u64,
    resolved: u64,
    applied: u64,
    duplicate: u64,
    no_effect: u64,
    withdrawn: u64,
    unknown: u64,
    rejected: u64,
}

impl Tally {
    fn count_alerts(&mut self, alerts: &[Alert]) {
        self.alerts += alerts.len() as u64;
        for a in alerts {
            match (a.status, a.level) {
                (Status::Firing, Level::Yellow) => self.yellow_firing += 1,
                (Status::Firing, Level::Red) => self.red_firing += 1,
                (Status::Resolved, _) => self.resolved += 1,
            }
        }
    }

    fn count_result(&mut self, r: &Result<Applied, redlight::engine::EngineError>) {
        match r {
            Ok(Applied::Applied) => self.applied += 1,
            Ok(Applied::Duplicate) => self.duplicate += 1,
            Ok(Applied::NoEffect) => self.no_effect += 1,
            Ok(Applied::CaseWithdrawn) => self.withdrawn += 1,
            Ok(Applied::UnknownType) => self.unknown += 1,
            Err(_) => self.rejected += 1,
        }
    }

    fn report(&self, name: &str) {
        println!(
            "  {name}: {} events in {:.3} s = {} events/s ({:.0} ns/event)",
            self.events,
            self.elapsed.as_secs_f64(),
            grouped(per_sec(self.events, self.elapsed)),
            self.elapsed.as_nanos() as f64 / self.events.max(1) as f64
        );
        println!(
            "    outcomes: applied {}, duplicate {}, no effect {}, to withdrawn case {}, \
             unknown type {}, rejected {}",
            self.applied,
            self.duplicate,
            self.no_effect,
            self.withdrawn,
            self.unknown,
            self.rejected
        );
        println!(
            "    alerts: {} (yellow firing {}, red firing {}, resolved {})",
            self.alerts, self.yellow_firing, self.red_firing, self.resolved
        );
    }
}

/// What a real driver does per event: fire the timers due before it, then apply it.
fn drive(engine: &mut Engine, events: &[Event], alerts: &mut Vec<Alert>, tally: &mut Tally) {
    let start = Instant::now();
    for (i, ev) in events.iter().enumerate() {
        engine.prefetch(|k| events.get(i + k).map(|e| e.subject.as_str()));
        alerts.clear();
        engine.advance_before(ev.time_ms(), alerts);
        let r = engine.apply(ev, alerts);
        tally.count_result(&r);
        tally.count_alerts(alerts);
    }
    tally.elapsed += start.elapsed();
    tally.events += events.len() as u64;
}

/// The load phase's [`drive`], a symbol of its own for profilers.
#[inline(never)]
fn drive_load(engine: &mut Engine, events: &[Event], alerts: &mut Vec<Alert>, tally: &mut Tally) {
    drive(engine, events, alerts, tally);
    // Not a tail call, so the frame stays on the stack.
    std::hint::black_box(0u8);
}

/// The mix phase's [`drive`], a symbol of its own for profilers.
#[inline(never)]
fn drive_mix(engine: &mut Engine, events: &[Event], alerts: &mut Vec<Alert>, tally: &mut Tally) {
    drive(engine, events, alerts, tally);
    // Not a tail call, so the frame stays on the stack.
    std::hint::black_box(1u8);
}

/// As [`drive`], timing each event and charging it to its type.
fn drive_breakdown(
    engine: &mut Engine,
    events: &[Event],
    alerts: &mut Vec<Alert>,
    tally: &mut Tally,
    by_type: &mut BTreeMap<String, (u64, Duration, u64)>,
) {
    for ev in events {
        let start = Instant::now();
        alerts.clear();
        engine.advance_before(ev.time_ms(), alerts);
        let r = engine.apply(ev, alerts);
        let d = start.elapsed();
        tally.elapsed += d;
        tally.count_result(&r);
        tally.count_alerts(alerts);
        let e = by_type.entry(ev.kind.to_string()).or_default();
        e.0 += 1;
        e.1 += d;
        e.2 += alerts.len() as u64;
    }
    tally.events += events.len() as u64;
}

// ---------------------------------------------------------------------------------------
// 1 and 3: the engine on events in memory, and memory per open case

fn engine_bench(opts: &Options, config_path: &Path, summary: &mut Vec<(u8, String)>) -> Result<()> {
    let n = opts.cases;
    println!();
    println!("== engine: {n} open cases, events built in memory, one thread ==");
    let w = Workload::new(n);
    let config = Config::load(config_path)?;
    if opts.warm {
        let start = Instant::now();
        let mut engine = config.build_engine()?;
        let mut alerts: Vec<Alert> = Vec::with_capacity(64);
        let mut tally = Tally::default();
        w.load_in_chunks(|chunk| drive(&mut engine, chunk, &mut alerts, &mut tally));
        if opts.mix {
            w.in_chunks(w.mix_plan(), |chunk| {
                drive(&mut engine, chunk, &mut alerts, &mut tally)
            });
        }
        drop(engine);
        println!(
            "  warm-up: the same run untimed, engine dropped, in {:.2} s; VmRSS {:.1} MiB",
            start.elapsed().as_secs_f64(),
            rss_bytes() as f64 / 1048576.0
        );
    }
    let rss_before = rss_bytes();
    let mut engine = config.build_engine()?;
    let rss_built = rss_bytes();
    let mut alerts: Vec<Alert> = Vec::with_capacity(64);

    // Load: one opening event per case, built CHUNK at a time outside the timed section.
    let mut load = Tally::default();
    w.load_in_chunks(|chunk| drive_load(&mut engine, chunk, &mut alerts, &mut load));
    alerts.clear();
    alerts.shrink_to(64);
    let open = engine.cases().filter(|c| c.active()).count();
    let rss_loaded = rss_bytes();
    let cases_after_load = engine.case_count();
    let timers_after_load = engine.timer_count();
    load.report("load");
    println!("    engine: {cases_after_load} cases ({open} active), {timers_after_load} timers");

    if opts.warm {
        // The warm-up's memory is reused, so the RSS does not grow: no memory figures.
        println!(
            "  memory: VmRSS {:.1} MiB after the load (a warm run measures no memory per case)",
            rss_loaded as f64 / 1048576.0
        );
    } else {
        let grown = rss_loaded.saturating_sub(rss_before);
        let per_case = grown as f64 / cases_after_load.max(1) as f64;
        println!(
            "  memory: VmRSS {:.1} MiB before the engine, {:.1} MiB built (calendar, rules), \
             {:.1} MiB after the load",
            rss_before as f64 / 1048576.0,
            rss_built as f64 / 1048576.0,
            rss_loaded as f64 / 1048576.0
        );
        println!(
            "    {:.0} bytes per case including the engine's fixed cost, {:.0} bytes per case \
             without it",
            per_case,
            rss_loaded.saturating_sub(rss_built) as f64 / cases_after_load.max(1) as f64
        );

        memory_breakdown(&engine, rss_loaded.saturating_sub(rss_built));
        timer_ties(&engine);
        gauge_classes(&engine);
        summary.push((
            3,
            format!(
                "memory: {:.0} bytes per open case ({} cases, RSS +{:.1} MiB)",
                per_case,
                cases_after_load,
                grown as f64 / 1048576.0
            ),
        ));
    }
    let load_line = format!(
        "engine{}: load {} cases: {} events/s",
        if opts.warm { " (warm)" } else { "" },
        load.events,
        grouped(per_sec(load.events, load.elapsed))
    );
    if !opts.mix {
        summary.push((0, load_line));
        return Ok(());
    }

    // The mix: every further event of those cases, in time order.
    let gen_start = Instant::now();
    let plan = w.mix_plan();
    println!(
        "  mix plan: {} events generated in {:.2} s",
        plan.len(),
        gen_start.elapsed().as_secs_f64()
    );
    let mut mix = Tally::default();
    let mut by_type = BTreeMap::new();
    w.in_chunks(plan.iter().copied(), |chunk| {
        if opts.breakdown {
            drive_breakdown(&mut engine, chunk, &mut alerts, &mut mix, &mut by_type);
        } else {
            drive_mix(&mut engine, chunk, &mut alerts, &mut mix);
        }
    });
    let rss_mixed = rss_bytes();
    mix.report("mix");
    // The cases' later events add to them (a third clock, more data) before closed ones
    // are forgotten, 30 days after their last event; the bench keeps freed memory for
    // reuse (see `tune_allocator`), so this is about the process's peak.
    println!(
        "  memory after the mix: VmRSS {:.1} MiB, {} cases still held",
        rss_mixed as f64 / 1048576.0,
        engine.case_count()
    );
    if opts.breakdown {
        println!("    per type (count, ns/event, share of time, alerts):");
        let total = mix.elapsed.as_secs_f64().max(1e-9);
        for (kind, (count, d, a)) in &by_type {
            println!(
                "      {kind:<34} {count:>9} {:>8.0} ns {:>5.1}% {a:>8}",
                d.as_nanos() as f64 / (*count).max(1) as f64,
                100.0 * d.as_secs_f64() / total
            );
        }
    }
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for p in &plan {
        *counts.entry(p.step.kind()).or_default() += 1;
    }
    println!("    event mix:");
    for (kind, c) in &counts {
        println!(
            "      {kind:<34} {c:>9} ({:.1}%)",
            100.0 * *c as f64 / plan.len().max(1) as f64
        );
    }
    drop(plan);

    // Then the clock runs to the end of the year: every timer still due in 2026 fires.
    alerts.clear();
    let drain_start = Instant::now();
    let timers_before = engine.timer_count();
    engine.advance(w.year_end, &mut alerts);
    let drain = drain_start.elapsed();
    let mut drained = Tally::default();
    drained.count_alerts(&alerts);
    println!(
        "  advance to 2026-12-31T23:59:59+08:00: {} timers handled in {:.3} s, {} alerts \
         (yellow {}, red {}), {} cases and {} timers left",
        timers_before - engine.timer_count(),
        drain.as_secs_f64(),
        drained.alerts,
        drained.yellow_firing,
        drained.red_firing,
        engine.case_count(),
        engine.timer_count()
    );
    let s = engine.stats();
    println!(
        "  engine stats: applied {}, duplicates {}, unknown types {}, calendar errors {}, \
         data problems {}; timer entries due {}, obsolete {}",
        s.applied,
        s.duplicates,
        s.unknown_types,
        s.calendar_errors,
        s.data_problems,
        s.timer_entries_due,
        s.timer_entries_obsolete
    );
    let drop_start = Instant::now();
    drop(engine);
    println!(
        "  (dropping the engine took {:.2} s)",
        drop_start.elapsed().as_secs_f64()
    );

    summary.push((
        0,
        format!(
            "{load_line}; mix {} events: {} events/s ({} alerts)",
            mix.events,
            grouped(per_sec(mix.events, mix.elapsed)),
            mix.alerts
        ),
    ));
    Ok(())
}

/// How many timers share a due time. The timer index orders by due time, then case id:
/// every tie costs a comparison of two case-id strings in another cache line.
fn timer_ties(engine: &Engine) {
    let mut dues = Vec::with_capacity(engine.timer_count());
    let mut scratch = Vec::new();
    for c in engine.cases() {
        c.timers(30 * DAY, &mut scratch);
        dues.extend(scratch.iter().map(|t| t.0));
    }
    dues.sort_unstable();
    let (mut distinct, mut largest, mut run, mut tied) = (0usize, 0usize, 0usize, 0usize);
    for (i, d) in dues.iter().enumerate() {
        if i == 0 || dues[i - 1] != *d {
            distinct += 1;
            run = 0;
        }
        run += 1;
        if run == 2 {
            tied += 2;
        } else if run > 2 {
            tied += 1;
        }
        largest = largest.max(run);
    }
    println!(
        "  timer due times: {} timers, {distinct} distinct due instants, {:.1}% of timers \
         share theirs, the largest group has {largest}",
        dues.len(),
        100.0 * tied as f64 / dues.len().max(1) as f64
    );
}

/// Bytes glibc's malloc takes for a request of `n` bytes (16-byte chunks, 8-byte header,
/// 32 bytes at least); 0 for no allocation.
fn chunk(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).div_ceil(16).max(2) * 16
    }
}

fn value_heap(v: &Value) -> usize {
    match v {
        Value::String(s) => chunk(s.capacity()),
        Value::Array(a) => {
            chunk(a.capacity() * std::mem::size_of::<Value>())
                + a.iter().map(value_heap).sum::<usize>()
        }
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| chunk(k.capacity()) + 64 + value_heap(v))
            .sum(),
        _ => 0,
    }
}

/// Heap bytes a case datum owns; a shared string counts for its share.
fn datum_heap(d: &redlight::engine::Datum) -> usize {
    use redlight::engine::Datum;
    match d {
        Datum::Str(s) => chunk(16 + s.len()) / arcstr::ArcStr::strong_count(s).unwrap_or(1).max(1),
        Datum::Other(v) => chunk(std::mem::size_of::<Value>()) + value_heap(v),
        _ => 0,
    }
}

/// Where the resident bytes of the loaded engine go, by walking the open cases: what each
/// case owns on the heap (rounded as glibc rounds), the case map, and the timer index as
/// the remainder of the RSS growth.
/// What the daemon's open-case gauges cost per case (`src/open_counts.rs`): the daemon
/// judges each case it persists right after encoding it, so this encodes every case (in the
/// map's order, each cold in memory) with and without judging it; the difference is the
/// judging.
fn gauge_classes(engine: &Engine) {
    let mut classifier = redlight::open_counts::Classifier::default();
    let mut counts = redlight::open_counts::Counts::default();
    let mut encode = |judge: bool| {
        let start = Instant::now();
        let mut bytes = 0usize;
        for case in engine.cases() {
            bytes += redlight::store::encode_case(case).map_or(0, |b| b.len());
            if judge {
                counts.add(classifier.judge(case), 1);
            }
        }
        (start.elapsed(), bytes)
    };
    let (plain, _) = encode(false);
    let (judged, _) = encode(true);
    let n = engine.case_count().max(1) as f64;
    println!(
        "  open-case gauges: encoding every case {:.0} ns per case, encoding and judging it \
         {:.0} ns ({} classes)",
        plain.as_nanos() as f64 / n,
        judged.as_nanos() as f64 / n,
        counts.iter().count()
    );
}

fn memory_breakdown(engine: &Engine, grown: u64) {
    use redlight::engine::{Case, Clock, Datum};
    use std::mem::size_of;
    let n = engine.case_count().max(1);
    let (mut boxes, mut ids, mut data_vec, mut data_values, mut seen, mut clocks) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    let (mut data_len, mut data_cap, mut clock_len, mut clock_spilled, mut other) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    for c in engine.cases() {
        boxes += chunk(size_of::<Case>());
        ids += chunk(16 + c.id.len());
        data_len += c.data.len();
        data_cap += c.data.capacity();
        data_vec += chunk(c.data.capacity() * size_of::<(arcstr::ArcStr, Datum)>());
        data_values += c.data.iter().map(|(_, v)| datum_heap(v)).sum::<usize>();
        seen += chunk(c.seen.heap_bytes());
        clock_len += c.clocks.len();
        // The first two clocks live inside the Box<Case>; only the rest are an allocation.
        clock_spilled += c.clocks.spilled().len();
        clocks += chunk(std::mem::size_of_val(c.clocks.spilled()));
        let stages_heap = if c.stages.spilled() {
            c.stages.capacity() * size_of::<redlight::engine::Stages>()
        } else {
            0
        };
        other += chunk(stages_heap)
            + chunk(c.violations.capacity() * size_of::<redlight::engine::Violation>())
            + c.violations
                .iter()
                .map(|v| chunk(v.key.capacity()) + chunk(v.detail.capacity()))
                .sum::<usize>()
            + chunk(c.duties.capacity() * size_of::<redlight::engine::Duty>());
    }
    // hashbrown: buckets are a power of two at most 7/8 full; one control byte per bucket.
    let buckets = (engine.case_count() * 8 / 7 + 1).next_power_of_two();
    // The key is the case id inline (a 24-byte CompactString).
    let map = buckets * (size_of::<([u8; 24], Box<Case>)>() + 1);
    let accounted = boxes + ids + data_vec + data_values + seen + clocks + other + map;
    let timers = (grown as usize).saturating_sub(accounted);
    let per = |x: usize| x as f64 / n as f64;
    println!(
        "  memory per case, by owner (sizes: Case {} B, Clock {} B, data entry {} B, timer {} B):",
        size_of::<Case>(),
        size_of::<Clock>(),
        size_of::<(arcstr::ArcStr, Datum)>(),
        size_of::<(u64, [u8; 24])>()
    );
    for (name, bytes) in [
        ("Box<Case>", boxes),
        ("case id Arc<str>", ids),
        (
            &*format!(
                "data Vec ({:.1} entries, capacity {:.1})",
                per(data_len),
                per(data_cap)
            ),
            data_vec,
        ),
        (
            "data values (strings, each shared one's share of it)",
            data_values,
        ),
        ("seen Vec<u64>", seen),
        (
            &*format!(
                "clocks past the first two ({:.2} clocks, {:.2} of them past two)",
                per(clock_len),
                per(clock_spilled)
            ),
            clocks,
        ),
        ("stages, violations, duties", other),
        (&*format!("cases HashMap ({buckets} buckets)"), map),
        (
            &*format!(
                "timer index ({:.2} timers/case) and the rest: RSS growth minus the above",
                engine.timer_count() as f64 / n as f64
            ),
            timers,
        ),
    ] {
        println!("    {:>7.0} B  {name}", per(bytes));
    }
}

// ---------------------------------------------------------------------------------------
// 2: replay end to end from JSON Lines

#[derive(Serialize)]
struct WireEvent<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    time: String,
    subject: &'a str,
    datacontenttype: &'static str,
    data: &'a Data,
}

fn write_event(out: &mut impl Write, ev: &Event) -> io::Result<()> {
    let wire = WireEvent {
        specversion: "1.0",
        id: &ev.id,
        source: &ev.source,
        kind: &ev.kind,
        time: ev.time.to_rfc3339_opts(SecondsFormat::AutoSi, false),
        subject: &ev.subject,
        datacontenttype: "application/json",
        data: &ev.data,
    };
    serde_json::to_writer(&mut *out, &wire)?;
    out.write_all(b"\n")
}

fn replay_bench(
    opts: &Options,
    root: &Path,
    config_path: &Path,
    summary: &mut Vec<(u8, String)>,
) -> Result<()> {
    let n = opts.replay_cases;
    println!();
    println!(
        "== replay: JSON Lines of {n} cases, end to end (the engine on one thread, parsing on a second) =="
    );
    let dir = root.join("target/redlight-bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path: PathBuf = dir.join(format!("events-{n}.jsonl"));

    let gen_start = Instant::now();
    let w = Workload::new(n);
    let plan = w.full_plan();
    let mut checked = 0;
    {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        let mut line = Vec::with_capacity(512);
        for p in &plan {
            let ev = w.event(p);
            line.clear();
            write_event(&mut line, &ev)?;
            // The generator must write what the parser reads back.
            if checked < 2000 && p.case % 97 == 0 {
                let back = Event::parse(line.trim_ascii_end())
                    .map_err(|e| anyhow::anyhow!("generated line does not parse: {e}"))?;
                if back != ev {
                    bail!("generated line does not round-trip: {}", ev.id);
                }
                checked += 1;
            }
            out.write_all(&line)?;
        }
        out.flush()?;
    }
    let lines = plan.len() as u64;
    drop(plan);
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "  generated {} ({lines} lines, {:.1} MiB) in {:.2} s",
        path.display(),
        bytes as f64 / 1048576.0,
        gen_start.elapsed().as_secs_f64()
    );

    // Read and parse only: the share of replay spent before the engine.
    let parse_start = Instant::now();
    let mut reader = BufReader::with_capacity(1 << 16, File::open(&path)?);
    let mut line = Vec::with_capacity(1024);
    let mut parsed = 0u64;
    while reader.read_until(b'\n', &mut line)? > 0 {
        if Event::parse(line.trim_ascii()).is_ok() {
            parsed += 1;
        }
        line.clear();
    }
    let parse = parse_start.elapsed();
    println!(
        "  read + Event::parse only: {parsed} events in {:.3} s = {} events/s",
        parse.as_secs_f64(),
        grouped(per_sec(parsed, parse))
    );

    let config = Config::load(config_path)?;
    let mut engine = config.build_engine()?;
    let start = Instant::now();
    let s = cli::replay(
        &mut engine,
        BufReader::with_capacity(1 << 16, File::open(&path)?),
        None,
        BufWriter::with_capacity(1 << 16, io::sink()),
        io::sink(),
    )?;
    let elapsed = start.elapsed();
    println!(
        "  cli::replay: {} lines, {} events, {} rejected, {} alerts written (to a sink) in \
         {:.3} s = {} events/s ({:.0} ns/line)",
        s.lines,
        s.events,
        s.rejected,
        s.alerts,
        elapsed.as_secs_f64(),
        grouped(per_sec(s.lines, elapsed)),
        elapsed.as_nanos() as f64 / s.lines.max(1) as f64
    );
    println!(
        "    engine at the end: {} cases, {} timers",
        engine.case_count(),
        engine.timer_count()
    );
    drop(engine);
    summary.push((
        1,
        format!(
            "replay: {} lines: {} events/s end to end ({} alerts)",
            s.lines,
            grouped(per_sec(s.lines, elapsed)),
            s.alerts
        ),
    ));

    if opts.binary {
        let exe = env!("CARGO_BIN_EXE_redlight");
        let start = Instant::now();
        let status = Command::new(exe)
            .arg("replay")
            .arg("--config")
            .arg(config_path)
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let elapsed = start.elapsed();
        match status {
            Ok(st) if st.success() => {
                println!(
                    "  {exe} replay --config {} {} > /dev/null: {:.3} s = {} events/s",
                    config_path.display(),
                    path.display(),
                    elapsed.as_secs_f64(),
                    grouped(per_sec(lines, elapsed))
                );
                summary.push((
                    2,
                    format!(
                        "replay (binary): {lines} lines: {} events/s end to end, process start \
                     and stdout to /dev/null included",
                        grouped(per_sec(lines, elapsed))
                    ),
                ));
            }
            Ok(st) => println!("  the binary exited with {st}; not timed"),
            Err(e) => println!("  cannot run {exe}: {e}; not timed"),
        }
    }
    if !opts.keep {
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The workload generator

/// SplitMix64: small, fast, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream);
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + self.unit() * (hi - lo)
    }
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.unit() * (hi - lo) as f64) as i64
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

struct Names {
    departments: Vec<String>,
    items: Vec<String>,
    handlers: Vec<String>,
}

impl Names {
    fn new() -> Names {
        let places = ["市", "忻府区", "原平市", "定襄县", "五台县"];
        let bureaus = [
            "住建局",
            "市场监管局",
            "自然资源局",
            "生态环境局",
            "交通运输局",
            "卫健委",
            "教育局",
            "农业农村局",
            "商务局",
            "文旅局",
        ];
        let bases = [
            "建筑工程施工许可",
            "食品经营许可",
            "药品零售许可",
            "排污许可",
            "道路运输经营许可",
            "建设用地规划许可",
            "取水许可",
            "林木采伐许可",
            "医疗机构执业登记",
            "民办学校办学许可",
            "烟草专卖零售许可",
            "娱乐场所经营许可",
            "危险化学品经营许可",
            "燃气经营许可",
            "户外广告设置许可",
            "城市道路占用许可",
            "人防工程审批",
            "消防设计审查",
            "施工图审查备案",
            "特种设备使用登记",
        ];
        let variants = [
            "（新办）",
            "（变更）",
            "（延续）",
            "（注销）",
            "（补办）",
            "（迁移）",
            "（增项）",
            "（减项）",
            "（临时）",
            "（年检）",
        ];
        let surnames = [
            "张", "王", "李", "赵", "刘", "陈", "杨", "黄", "周", "吴", "徐", "孙", "马", "朱",
            "胡", "郭", "何", "高", "林", "罗", "郑", "梁", "谢", "宋", "唐",
        ];
        let given = [
            "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟",
            "涛", "明", "超", "秀英", "霞", "平",
        ];
        Names {
            departments: places
                .iter()
                .flat_map(|p| bureaus.iter().map(move |b| format!("{p}{b}")))
                .collect(),
            items: bases
                .iter()
                .flat_map(|b| variants.iter().map(move |v| format!("{b}{v}")))
                .collect(),
            handlers: surnames
                .iter()
                .flat_map(|s| given.iter().map(move |g| format!("{s}{g}")))
                .collect(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Promised,
    Immediate,
    Market,
    Hazard,
    Accident,
    /// A department's periodic safety meetings (mix only).
    Department,
}

#[derive(Clone, Copy)]
struct CaseSpec {
    class: Class,
    dept: u8,
    item: u8,
    handler: u16,
    promised: u8,
    joint: bool,
    major: bool,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Accepted,
    Reviewed(u16),
    Suspended,
    Resumed,
    Extended(u8),
    Decided(bool),
    Certificate,
    Completed,
    Withdrawn,
    MarketAccepted,
    MarketDecided(bool),
    Report(u8),
    ChangeDecided,
    ChangeRegistered,
    ReconsiderationRequested,
    ReconsiderationDecided,
    HazardReported,
    Investigation(u16),
    Rectification(i64),
    Rectified,
    AccidentOccurred,
    AccidentReported,
    AccidentRelayed,
    AccidentDiscovered,
    Meeting,
}

impl Step {
    fn kind(self) -> &'static str {
        match self {
            Step::Accepted => "approval.accepted",
            Step::Reviewed(_) => "approval.reviewed",
            Step::Suspended => "approval.suspended",
            Step::Resumed => "approval.resumed",
            Step::Extended(_) => "approval.extended",
            Step::Decided(_) => "approval.decided",
            Step::Certificate => "approval.certificate_issued",
            Step::Completed => "approval.completed",
            Step::Withdrawn => "approval.withdrawn",
            Step::MarketAccepted => "market.registration_accepted",
            Step::MarketDecided(_) => "market.registration_decided",
            Step::Report(_) => "market.report_submitted",
            Step::ChangeDecided => "market.change_decided",
            Step::ChangeRegistered => "market.change_registered",
            Step::ReconsiderationRequested => "market.reconsideration_requested",
            Step::ReconsiderationDecided => "market.reconsideration_decided",
            Step::HazardReported => "safety.hazard_reported",
            Step::Investigation(_) => "safety.hazard_investigation_started",
            Step::Rectification(_) => "safety.rectification_ordered",
            Step::Rectified => "safety.hazard_rectified",
            Step::AccidentOccurred => "safety.accident_occurred",
            Step::AccidentReported => "safety.accident_reported",
            Step::AccidentRelayed => "safety.accident_relayed",
            Step::AccidentDiscovered => "safety.accident_discovered",
            Step::Meeting => "safety.meeting_held",
        }
    }
}

/// One event of the workload, compact until it is built.
#[derive(Clone, Copy)]
struct Planned {
    t: i64,
    case: u32,
    seq: u8,
    step: Step,
}

const SEED: u64 = 2026;
const DEPARTMENT_CASES: usize = 50;

struct Workload {
    names: Names,
    /// `n` cases, then one per department for the safety meetings.
    specs: Vec<CaseSpec>,
    n: usize,
    load_start: i64,
    load_end: i64,
    year_end: i64,
    offset: FixedOffset,
}

fn local(offset: &FixedOffset, y: i32, m: u32, d: u32, h: u32, mi: u32) -> i64 {
    offset
        .with_ymd_and_hms(y, m, d, h, mi, 0)
        .single()
        .map_or(0, |t| t.timestamp_millis())
}

impl Workload {
    fn new(n: usize) -> Workload {
        let offset = FixedOffset::east_opt(8 * 3600).unwrap_or(FixedOffset::east_opt(0).unwrap());
        let load_start = local(&offset, 2026, 3, 2, 8, 30);
        let load_end = local(&offset, 2026, 3, 2, 12, 0);
        let mut w = Workload {
            names: Names::new(),
            specs: Vec::with_capacity(n + DEPARTMENT_CASES),
            n,
            load_start,
            load_end,
            year_end: local(&offset, 2026, 12, 31, 23, 59) + 59_000,
            offset,
        };
        for i in 0..n {
            let spec = w.case_spec(i);
            w.specs.push(spec);
        }
        for d in 0..DEPARTMENT_CASES {
            w.specs.push(CaseSpec {
                class: Class::Department,
                dept: d as u8,
                item: 0,
                handler: 0,
                promised: 0,
                joint: false,
                major: false,
            });
        }
        w
    }

    fn case_spec(&self, i: usize) -> CaseSpec {
        let mut r = Rng::new(SEED, i as u64);
        let u = r.unit();
        let a = self.load_time(i);
        let class = if u < 0.005 && a >= self.load_end - 50 * MIN {
            Class::Accident
        } else if (0.005..0.03).contains(&u) {
            Class::Hazard
        } else if (0.03..0.06).contains(&u) {
            Class::Market
        } else if (0.06..0.12).contains(&u) {
            Class::Immediate
        } else {
            Class::Promised
        };
        let joint = class == Class::Promised && r.chance(0.04);
        let promised = if joint {
            *r.pick(&[10, 15, 20, 30, 45])
        } else {
            *r.pick(&[3, 5, 5, 7, 10, 10, 12, 15, 15, 20])
        };
        // A few promises over the statutory maximum: a violation at acceptance.
        let promised = if r.chance(0.003) {
            promised + 5
        } else {
            promised
        };
        CaseSpec {
            class,
            dept: r.below(self.names.departments.len()) as u8,
            item: r.below(self.names.items.len()) as u8,
            handler: r.below(self.names.handlers.len()) as u16,
            promised,
            joint,
            major: r.chance(0.7),
        }
    }

    /// The opening events are spread evenly over the load window, in case order.
    fn load_time(&self, i: usize) -> i64 {
        let span = self.load_end - self.load_start;
        let t = self.load_start + (i as i64 * span) / self.n.max(1) as i64;
        t - t.rem_euclid(1000)
    }

    fn load_step(&self, i: usize) -> Planned {
        let step = match self.specs[i].class {
            Class::Promised | Class::Immediate => Step::Accepted,
            Class::Market => Step::MarketAccepted,
            Class::Hazard => Step::HazardReported,
            Class::Accident => Step::AccidentOccurred,
            Class::Department => Step::Meeting,
        };
        Planned {
            t: self.load_time(i),
            case: i as u32,
            seq: 0,
            step,
        }
    }

    /// Every event after the opening one, for every case, in time order.
    /// Builds the load's events (one opening event per case) `CHUNK` at a time, outside
    /// the timed sections, and hands each chunk to `drive`.
    fn load_in_chunks(&self, drive: impl FnMut(&[Event])) {
        self.in_chunks((0..self.n).map(|i| self.load_step(i)), drive);
    }

    /// Builds the planned events `CHUNK` at a time and hands each chunk to `drive`.
    fn in_chunks(&self, plan: impl IntoIterator<Item = Planned>, mut drive: impl FnMut(&[Event])) {
        let mut chunk: Vec<Event> = Vec::with_capacity(CHUNK);
        for p in plan {
            chunk.push(self.event(&p));
            if chunk.len() == CHUNK {
                drive(&chunk);
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            drive(&chunk);
        }
    }

    fn mix_plan(&self) -> Vec<Planned> {
        let mut out = Vec::with_capacity(self.specs.len() * 5);
        for i in 0..self.specs.len() {
            self.plan_case(i, &mut out);
        }
        out.sort_unstable_by_key(|p| (p.t, p.case, p.seq));
        out
    }

    /// Opening events and the mix together, in time order: the replay file.
    fn full_plan(&self) -> Vec<Planned> {
        let mut out = Vec::with_capacity(self.specs.len() * 6);
        for i in 0..self.specs.len() {
            if i < self.n {
                out.push(self.load_step(i));
            }
            self.plan_case(i, &mut out);
        }
        out.sort_unstable_by_key(|p| (p.t, p.case, p.seq));
        out
    }

    fn plan_case(&self, i: usize, out: &mut Vec<Planned>) {
        let spec = self.specs[i];
        let mut r = Rng::new(SEED ^ 0x5EED, i as u64);
        let a = if i < self.n {
            self.load_time(i)
        } else {
            self.load_end
        };
        let mut seq = 0u8;
        let mut last = self.load_end;
        let year_end = self.year_end - HOUR;
        let mut push = |t: i64, step: Step, same_seq: bool| -> i64 {
            let t = t.max(last + MIN);
            let t = t - t.rem_euclid(1000);
            if !same_seq {
                seq += 1;
            }
            last = t;
            if t <= year_end {
                out.push(Planned {
                    t,
                    case: i as u32,
                    seq,
                    step,
                });
            }
            t
        };
        match spec.class {
            Class::Promised => {
                // The promise in calendar time: about 1.45 days per workday.
                let span = f64::from(spec.promised) * 1.45 * DAY as f64;
                let at = |f: f64| a + (f * span) as i64;
                if r.chance(0.01) {
                    push(at(r.uniform(0.2, 0.9)), Step::Withdrawn, false);
                    return;
                }
                if !r.chance(0.02) {
                    let h = r.below(self.names.handlers.len()) as u16;
                    push(at(r.uniform(0.1, 0.35)), Step::Reviewed(h), false);
                }
                let mut pause = 0;
                if r.chance(0.10) {
                    let s = push(at(r.uniform(0.4, 0.6)), Step::Suspended, false);
                    if r.chance(0.05) {
                        return; // never resumed: stays open all year
                    }
                    pause = r.between(3 * DAY, 60 * DAY);
                    push(s + pause, Step::Resumed, false);
                }
                if r.chance(0.04) {
                    let extra = if r.chance(0.05) {
                        15
                    } else {
                        1 + r.below(10) as u8
                    };
                    push(
                        at(r.uniform(0.6, 0.75)) + pause,
                        Step::Extended(extra),
                        false,
                    );
                }
                let u = r.unit();
                if u < 0.04 {
                    return; // never decided: its lights go yellow, then red
                }
                let end_share = if u < 0.12 {
                    r.uniform(1.05, 1.6)
                } else {
                    r.uniform(0.4, 0.9)
                };
                let approved = r.chance(0.9);
                let decided = push(
                    at(end_share * r.uniform(0.75, 0.9)) + pause,
                    Step::Decided(approved),
                    false,
                );
                if r.chance(0.005) {
                    // The same decision delivered twice.
                    push(decided + HOUR, Step::Decided(approved), true);
                }
                let end = at(end_share) + pause;
                if approved {
                    push(
                        r.between(decided, end.max(decided + HOUR)),
                        Step::Certificate,
                        false,
                    );
                }
                push(end, Step::Completed, false);
            }
            Class::Immediate => {
                let day = self.load_end - 12 * HOUR; // 00:00 of the load day
                let h = r.below(self.names.handlers.len()) as u16;
                push(
                    self.load_end + r.between(5 * MIN, HOUR),
                    Step::Reviewed(h),
                    false,
                );
                push(
                    self.load_end + r.between(HOUR, 2 * HOUR),
                    Step::Decided(true),
                    false,
                );
                push(
                    self.load_end + r.between(2 * HOUR, 2 * HOUR + 30 * MIN),
                    Step::Certificate,
                    false,
                );
                let u = r.unit();
                let done = if u < 0.90 {
                    r.between(day + 14 * HOUR + 30 * MIN, day + 15 * HOUR + 50 * MIN)
                } else if u < 0.97 {
                    r.between(day + 16 * HOUR + 5 * MIN, day + 23 * HOUR + 50 * MIN)
                } else {
                    r.between(day + DAY + 9 * HOUR, day + DAY + 11 * HOUR)
                };
                push(done, Step::Completed, false);
            }
            Class::Market => {
                let approved = r.chance(0.9);
                let decided = push(
                    a + r.between(5 * DAY, 36 * DAY),
                    Step::MarketDecided(approved),
                    false,
                );
                if !approved {
                    if r.chance(0.3) {
                        let q = push(
                            decided + r.between(DAY, 20 * DAY),
                            Step::ReconsiderationRequested,
                            false,
                        );
                        push(
                            q + r.between(10 * DAY, 40 * DAY),
                            Step::ReconsiderationDecided,
                            false,
                        );
                    }
                    return;
                }
                let o = &self.offset;
                // Quarterly reports, due fifteen days after each quarter; some late, some
                // never sent. (The fourth quarter's report is due in 2027.)
                let mut reports = Vec::new();
                for (q, (m, d0)) in [(4u32, 1u32), (7, 1), (10, 9)].into_iter().enumerate() {
                    if r.chance(0.05) {
                        continue;
                    }
                    let from = local(o, 2026, m, d0, 9, 0);
                    let late = r.chance(0.08);
                    let t = if late {
                        from + r.between(16 * DAY, 25 * DAY)
                    } else {
                        from + r.between(0, 13 * DAY)
                    };
                    reports.push((t, q as u8 + 1));
                }
                let change = r.chance(0.05).then(|| {
                    let c = local(o, 2026, 5, 1, 9, 0) + r.between(0, 150 * DAY);
                    (c, c + r.between(3 * DAY, 40 * DAY))
                });
                let mut steps: Vec<(i64, Step)> = reports
                    .into_iter()
                    .map(|(t, q)| (t, Step::Report(q)))
                    .collect();
                if let Some((c, d)) = change {
                    steps.push((c, Step::ChangeDecided));
                    steps.push((d, Step::ChangeRegistered));
                }
                steps.sort_by_key(|s| s.0);
                for (t, step) in steps {
                    push(t, step, false);
                }
            }
            Class::Hazard => {
                let mut t = a;
                if spec.major {
                    t = push(
                        a + r.between(2 * HOUR, 30 * HOUR),
                        Step::Investigation(r.below(self.names.handlers.len()) as u16),
                        false,
                    );
                }
                let ordered = t + r.between(DAY, 5 * DAY);
                let due = ordered + r.between(7 * DAY, 60 * DAY);
                let ordered = push(ordered, Step::Rectification(due), false);
                push(
                    ordered + r.between(5 * DAY, 70 * DAY),
                    Step::Rectified,
                    false,
                );
            }
            Class::Accident => {
                let reported = a + r.between(20 * MIN, 75 * MIN);
                let discovered = r.chance(0.1).then(|| a + r.between(10 * MIN, 90 * MIN));
                let mut steps = vec![
                    (reported, Step::AccidentReported),
                    (
                        reported + r.between(30 * MIN, 150 * MIN),
                        Step::AccidentRelayed,
                    ),
                ];
                if let Some(d) = discovered {
                    steps.push((d, Step::AccidentDiscovered));
                }
                steps.sort_by_key(|s| s.0);
                for (t, step) in steps {
                    push(t, step, false);
                }
            }
            Class::Department => {
                let o = &self.offset;
                let quarters = [
                    (local(o, 2026, 3, 3, 9, 0), 28),
                    (local(o, 2026, 4, 1, 9, 0), 90),
                    (local(o, 2026, 7, 1, 9, 0), 91),
                    (local(o, 2026, 10, 9, 9, 0), 80),
                ];
                for (from, days) in quarters {
                    if r.chance(0.1) {
                        continue; // a quarter without a meeting
                    }
                    push(from + r.between(0, days * DAY), Step::Meeting, false);
                }
            }
        }
    }

    fn subject(&self, case: u32) -> String {
        let spec = &self.specs[case as usize];
        match spec.class {
            Class::Promised | Class::Immediate => format!("XZ-2026-{case:07}"),
            Class::Market => format!("NX-M-{case:07}"),
            Class::Hazard => format!("HZ-H-{case:07}"),
            Class::Accident => format!("HZ-A-{case:07}"),
            Class::Department => {
                format!("dept:{}", self.names.departments[spec.dept as usize])
            }
        }
    }

    /// Builds the event: what a producer would send.
    fn event(&self, p: &Planned) -> Event {
        let spec = &self.specs[p.case as usize];
        let n = &self.names;
        let subject = self.subject(p.case);
        let dept = || Value::from(n.departments[spec.dept as usize].as_str());
        let mut data = Data::new();
        let mut put = |k: &str, v: Value| {
            data.insert(k, v);
        };
        let source = match spec.class {
            Class::Promised | Class::Immediate => "/xinzhou/approval-hall",
            Class::Market => "/ningxia/market-registry",
            Class::Hazard | Class::Accident | Class::Department => "/hangzhou/safety",
        };
        match p.step {
            Step::Accepted => {
                put("department", dept());
                put("item", Value::from(n.items[spec.item as usize].as_str()));
                put(
                    "handler",
                    Value::from(n.handlers[spec.handler as usize].as_str()),
                );
                if spec.class == Class::Immediate {
                    put("kind", Value::from("immediate"));
                } else {
                    put("kind", Value::from("promised"));
                    put("promised_workdays", Value::from(spec.promised));
                    if spec.joint {
                        put("joint", Value::from(true));
                    }
                }
            }
            Step::Reviewed(h) | Step::Investigation(h) => {
                put("handler", Value::from(n.handlers[h as usize].as_str()));
            }
            Step::Suspended => put(
                "procedure",
                Value::from(["expert_review", "hearing", "inspection"][p.case as usize % 3]),
            ),
            Step::Resumed
            | Step::Completed
            | Step::ChangeRegistered
            | Step::Rectified
            | Step::AccidentReported
            | Step::Meeting => {
                if matches!(p.step, Step::Meeting | Step::AccidentReported) {
                    put("department", dept());
                }
            }
            Step::Extended(x) => put("extra_workdays", Value::from(x)),
            Step::Decided(ok) | Step::MarketDecided(ok) => {
                put(
                    "outcome",
                    Value::from(if ok { "approved" } else { "denied" }),
                );
            }
            Step::Certificate => put("certificate_no", Value::from(format!("XK-{:07}", p.case))),
            Step::Withdrawn => put("reason", Value::from("applicant_request")),
            Step::MarketAccepted => {
                put("department", dept());
                put("market", Value::from(format!("第{}号农贸市场", p.case)));
            }
            Step::Report(q) => put("period", Value::from(format!("2026Q{q}"))),
            Step::ChangeDecided => put("change", Value::from("经营范围")),
            Step::ReconsiderationRequested | Step::ReconsiderationDecided => {
                put("department", dept());
            }
            Step::HazardReported => {
                put("department", dept());
                put("major", Value::from(spec.major));
                put("location", Value::from(format!("{}号厂区", p.case % 1000)));
            }
            Step::Rectification(due) => {
                let due = self
                    .offset
                    .timestamp_millis_opt(due)
                    .single()
                    .map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, false));
                put("due", due.map_or(Value::Null, Value::from));
            }
            Step::AccidentOccurred => {
                put("department", dept());
                put("location", Value::from(format!("{}号工地", p.case % 1000)));
            }
            Step::AccidentRelayed => put("level", Value::from("市")),
            Step::AccidentDiscovered => put("via", Value::from("media")),
        }
        let time: DateTime<FixedOffset> = self
            .offset
            .timestamp_millis_opt(p.t)
            .single()
            .unwrap_or_default();
        Event {
            id: compact_str::format_compact!("{subject}#{}", p.seq),
            source: source.into(),
            kind: p.step.kind().into(),
            time,
            subject: subject.into(),
            data,
        }
    }
}
