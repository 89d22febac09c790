//! The embedded store: two redb files in the data directory.
//!
//! Everything is kept per Kafka partition — open cases and the next offset to consume, keyed
//! by `(topic, partition, …)` — so that one partition's state can later move between
//! instances. An event's effects (its case), the alerts it produced and its partition's
//! offset are written in one transaction ([`Store::commit`]), so after a crash the store
//! holds either all of a batch or none of it, and the consumer resumes exactly after the
//! last durable event. Timers are not stored: they are derived from the cases on restore.
//! The daemon commits most batches lazily ([`Store::commit_lazy`], no fsync) and makes them
//! durable together every `store.sync_ms` (group commit, `src/writer.rs`): a crash then
//! rolls the store back to the last durable commit, offsets and state alike.
//!
//! Tables of `redlight.redb` (the batches' file):
//! - `meta`: `schema` → the store's format version;
//! - `case_journal`: batch number → the cases that batch changed, since the last checkpoint
//!   (`CaseChanges`, packed: [`runs::pack`]). See below;
//! - `offsets`: `(topic, partition)` → the next offset to consume;
//! - `alerts`: sequence number → a group of alerts numbered on from it ([`ALERT_GROUP`],
//!   from format 6; a batch's alerts in rows of up to 60 KiB, packed from format 7), or
//!   one alert as formats 4 and 5 stored it ([`encode_alert`]; JSON up to format 4): every
//!   alert in the order it happened (the source for delivery and the API), read one by
//!   one ([`RowAlerts`]); all kept unless `store.alerts_keep_days` is set
//!   ([`Store::set_alerts_keep_days`]);
//! - `alert_days`: a day of the wall clock (UTC, days since 1970) → the first alert
//!   committed that day, for `store.alerts_keep_days`;
//! - `ledger`: `(instant, case id, record key)` → JSON: what the scorecard counts (a case
//!   closed on time or late, a violation), kept after the case itself is forgotten; written
//!   with the case in the same transaction (see `src/scorecard.rs`).
//! - `input_dead_letters`: number → a message the batch refused, encoded by the daemon, until
//!   the dead-letter topic has it ([`Store::dead_letters`]);
//! - the alert-delivery outbox, dead letters and escalation steps: written by
//!   [`CommitHook`] in the same transaction as the alerts (see `src/delivery.rs`).
//!
//! Tables of `cases.redb` (the checkpoints' file):
//! - `meta`: `schema`; `journal_next`: the first journal batch number the checkpoint does
//!   not hold; `case_alerts_through`: the last alert the alert index covers; `case_runs`:
//!   the runs below, oldest first; `case_alert_runs`: the alert index's runs, oldest first;
//! - `case_run_{n}`: the cases as of the last checkpoint, as sorted runs: rows of at most
//!   60 KiB before packing (packed from format 4), each a partition's cases in key order
//!   (in MessagePack, [`encode_case`]) under its last `(topic, partition, case id)`; a
//!   newer run's case (or its forgetting) overrides an older run's. See
//!   `src/store/runs.rs`;
//! - `case_alert_run_{n}`: an index of `alerts` by case for `/api/v1/cases/{id}`, as of the
//!   last checkpoint: sorted runs of `(case id, sequence number)` pairs, in chunks. See
//!   `src/store/alert_runs.rs`;
//! - `case_alerts`: `(case id, sequence number)` → `()`, the index as format
//!   `redlight-cases-2` kept it, a row per alert: read with the runs, no longer written.
//!
//! Journal and checkpoints. A batch does not update the cases and the alert index in place:
//! with a million open cases, each changed case and each alert landed on a page of its own
//! in B-trees of them, and rewriting (copy on write) two random pages per event was most of
//! what the daemon spent. A batch appends its changed cases to `case_journal` instead, as
//! rows at the end of that table (one, or pieces of at most 60 KiB), and leaves its alerts
//! out of the index. The store keeps what the journal and the unindexed alerts say in
//! memory (the overlay, one generation per batch, each sorted by key: its journal rows are
//! cut from the batch's cases in key order and kept packed as stored, its keys unpacked
//! beside them), and every reader sees the cases and the index with the overlay laid over
//! them, from the same committed state.
//!
//! Once the overlay holds `store.checkpoint_cases` entries, a checkpoint starts on a thread
//! of its own, while batches go on being committed: it makes the batches so far durable,
//! writes their overlay as a new run of the second file (merged with the newest runs when
//! they are no bigger, as a log-structured merge tree does: a checkpoint writes what
//! changed, not the whole table of cases) and their alerts as a run of the index (merged
//! the same way), with the journal number and alert it got to, in one durable
//! transaction (the new run's chunks go before it in steps committed without durability,
//! each within redb's write buffer, which a crash undoes and no reader looks at: no `meta`
//! lists the run until that last commit); then drops those generations from the overlay,
//! and the next batches delete their journal rows, a few hundred rows each. In a second
//! file because redb has one writer per file: in the same file the batches waited for the
//! checkpoint, a second or two with a million cases. A
//! crash at any point leaves either the old checkpoint with the journal rows after it, or
//! the new one with journal rows it already holds, which opening skips. If the overlay
//! reaches twice the threshold while a checkpoint runs, the next batch waits for it: memory
//! stays bounded when checkpoints cannot keep up. Opening the store rebuilds the overlay
//! from the journal rows after `journal_next` and the alerts after `case_alerts_through`.

use crate::alert::{Alert, Level, Reason, Status};
use crate::engine::Case;
use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

mod alert_runs;
pub mod backup;
mod case_bytes;
mod runs;

use runs::{RunCursor, RunWriter, Source, SteppedSink};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const CASES: TableDefinition<(&str, u32, &str), &[u8]> = TableDefinition::new("cases");
const OFFSETS: TableDefinition<(&str, u32), u64> = TableDefinition::new("offsets");
/// Each partition's engine clock, written with its offset, so that a restart resumes the
/// clock where it was (an event delivered late right after a restart gets the same `at` as
/// it would have without the restart).
const CLOCKS: TableDefinition<(&str, u32), i64> = TableDefinition::new("engine_clocks");
const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");
const CASE_ALERTS: TableDefinition<(&str, u64), ()> = TableDefinition::new("case_alerts");
const LEDGER: TableDefinition<(i64, &str, &str), &[u8]> = TableDefinition::new("ledger");
/// Messages refused as input, kept until the dead-letter topic has them: written with the
/// batch that refused them, deleted once the broker has acknowledged them (the daemon's
/// encoding, `src/daemon.rs`). Numbered in the order they were refused.
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("input_dead_letters");
/// The first alert committed on each day of the wall clock (UTC days since 1970 → sequence
/// number), written by the batch that commits it: what [`Store::set_alerts_keep_days`]
/// reads the alerts' age from. Only a day later than the last one marked is marked, so
/// that a clock set back never makes newer alerts look older.
const ALERT_DAYS: TableDefinition<i64, u64> = TableDefinition::new("alert_days");
/// Alert rows (each a batch's alerts, or up to 60 KiB of them) a batch deletes at most
/// once they are older than `store.alerts_keep_days`: redb reads every row it deletes, and
/// a year's alerts deleted at once would hold a batch up.
const PRUNE_ALERT_ROWS: usize = 64;
/// Cases changed since the last checkpoint: one row per batch, numbered in commit order,
/// holding the batch's changed cases in one value (see [`CaseChanges`]). One insert of a
/// few MiB instead of thousands of small ones.
const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("case_journal");
/// A batch's journal row bigger than this is stored as several rows (pieces of at most this
/// size unless one case is bigger, each a journal row of its own). redb writes a value from
/// a buffer it allocates and zeroes for it: for a row of a few MiB (5,000 changed cases)
/// that was fresh memory every time, page faults and the kernel zeroing it, most of the
/// store writer's system time. Below 64 KiB, so that a piece with its key fits a 64 KiB
/// page of redb's (pages go by powers of two: a piece just over 64 KiB took 128 KiB).
const JOURNAL_PIECE: usize = 60 << 10;

/// Journal rows (pieces of at most [`JOURNAL_PIECE`]) a batch deletes at most once a
/// checkpoint holds them: about 15 MiB, read back by redb to delete them. A batch of
/// `kafka.batch_max` = 5,000 new cases adds about 32, so the deletes keep up.
const TRUNCATE_ROWS: usize = 256;

/// `meta` key: the last alert sequence number the alert index covers (big-endian u64); in
/// the checkpoints' file (in the batches' file up to format 3).
const META_INDEXED: &str = "case_alerts_through";
/// Checkpoints' file `meta` key: the first journal batch number not in the checkpoint
/// (big-endian u64).
const META_JOURNAL_NEXT: &str = "journal_next";
/// Batches' file `meta` key: the rule ids in the order the stored cases number them (JSON;
/// a retired rule's place as `retired <id>`), which a start keeps whatever order the packs
/// list them in (`RuleSet::with_rule_order`).
const META_RULE_ORDER: &str = "rule_order";
/// Batches' file `meta` key: the event types in the order the stored cases' seen-types sets
/// number them (JSON), which a start keeps (`RuleSet::with_type_order`).
const META_TYPE_ORDER: &str = "type_order";

/// The format version of the store. A store written by another version is refused with a
/// clear error rather than misread.
/// Format 1 kept cases as JSON and is converted when opened; format 2 had no journal and
/// is taken as it is (its `cases` and `case_alerts` are complete: a checkpoint).
/// Format 3 kept `cases` and `case_alerts` in the same file; they are moved to the
/// checkpoints' file when it is opened (its cases written as a run).
/// Format 4 stored alerts as JSON; those rows are read as they are (see [`decode_alert`]),
/// new ones are written in MessagePack.
/// Format 5 stored each alert in a row of its own; those rows are read as they are, new
/// alerts are written in groups ([`ALERT_GROUP`]).
/// Format 6 stored the journal's rows and the alerts' groups as they are; format 7 packs
/// them (see [`runs::pack`]). Rows of formats 4 to 6 are read as they are, and such a store
/// is marked format 7 when opened.
/// Format 8 adds `input_dead_letters` (messages refused as input, until the dead-letter
/// topic has them): a store of formats 4 to 7 is marked format 8 when opened, so that an
/// older redlight, which would leave such dead letters unsent, refuses it.
/// Format 9 adds a field to each stored clock: its red's count of retractions, which format
/// 8 kept in one count with its yellow's (`Clock::red_retractions`). A clock without it is
/// read as it is, both lights keeping the ids they had; a store of formats 4 to 8 is marked
/// format 9 when opened (and its checkpoints' file [`BASE_SCHEMA_VERSION`]), so that an older
/// redlight, which cannot read the new field, refuses it rather than take it for damage.
pub const SCHEMA_VERSION: &str = "redlight-store-9";

/// Format 8: one count of retractions for both lights of a clock.
const SCHEMA_ONE_COUNT: &str = "redlight-store-8";

/// Format 7: no `input_dead_letters` (dead letters were sent before their batch committed).
const SCHEMA_NO_DEAD_LETTERS: &str = "redlight-store-7";

/// Format 6: journal rows and alert groups not packed.
const SCHEMA_UNPACKED: &str = "redlight-store-6";

/// Format 5: an alert per row of `alerts`.
const SCHEMA_ALERT_ROWS: &str = "redlight-store-5";

/// The first byte of an `alerts` row holding a group of alerts (format 6): a byte that
/// starts no MessagePack value (0xc1 is "never used") and no JSON text, so a row of one
/// alert as formats 4 and 5 wrote it is told apart. Then the count (u32, little-endian),
/// each alert's length (u32 each), and the alerts' bytes one after another. The row's key
/// is its first alert's sequence number; the others follow it one by one.
///
/// Why: redb's insert of a row of its own took about 8,000 instructions per alert, 65% of
/// the store writer's (callgrind, the daemon benchmark's new cases: about 1.2 alerts per
/// event); a group of up to [`ALERT_GROUP_BYTES`] is one insert.
const ALERT_GROUP: u8 = 0xc1;

/// A group's size at most, unless one alert is bigger: as [`JOURNAL_PIECE`], so that a
/// group with its key fits a 64 KiB page of redb's.
const ALERT_GROUP_BYTES: usize = 60 << 10;

/// Format 4: alerts as JSON.
const SCHEMA_JSON_ALERTS: &str = "redlight-store-4";

/// The format of the checkpoints' file (`cases.redb`). Format 4 packs the runs' chunks
/// (see [`runs::pack`]); format 5 stores a clock's red's count of retractions (see
/// [`SCHEMA_VERSION`], format 9).
pub const BASE_SCHEMA_VERSION: &str = "redlight-cases-5";

/// Format 4: one count of retractions for both lights of a clock. Read as it is and marked
/// format 5 when opened.
const BASE_SCHEMA_ONE_COUNT: &str = "redlight-cases-4";

/// Format 3: the runs' chunks as they are. Read as they are (a packed chunk is told apart by
/// its first bytes) and marked format 4 when opened.
const BASE_SCHEMA_UNPACKED: &str = "redlight-cases-3";

/// The checkpoints' file with the alert index in one table (`case_alerts`), a row per
/// alert. Taken as it is, that table read as the index's oldest part (see
/// `src/store/alert_runs.rs`), and marked format 3 when opened.
const BASE_SCHEMA_ONE_INDEX: &str = "redlight-cases-2";

/// The checkpoints' file's first format: its cases in one table (`cases`), a row each.
/// Converted to a run when opened.
const BASE_SCHEMA_ONE_TABLE: &str = "redlight-cases-1";

/// Format 3: journal and checkpoint in one file.
const SCHEMA_ONE_FILE: &str = "redlight-store-3";

/// Format 1: cases as JSON, no journal.
const SCHEMA_JSON_CASES: &str = "redlight-store-1";

/// Format 2: cases in MessagePack, no journal.
const SCHEMA_NO_JOURNAL: &str = "redlight-store-2";

/// How many overlay entries (changed cases plus alerts not yet in the alert index) a store
/// keeps before a checkpoint, unless configured (`store.checkpoint_cases`). About 50–100 MB
/// of memory, the journal's rows being kept packed (100–200 bytes per entry; about 500 when
/// they were kept unpacked, when this was chosen). The 1M-event benchmark ran at about
/// 27,000 events/s with 200,000 and 35,000–43,000 with 500,000; 1,000,000 was no faster and
/// costs twice the memory.
pub const DEFAULT_CHECKPOINT_CASES: usize = 500_000;

/// A case as stored: MessagePack with each struct as an array of its fields in declaration
/// order (what `rmp_serde::to_vec` writes, written by hand: see `src/store/case_bytes.rs`).
/// A third of the size of its JSON, and decoded in less than half the time, which is most
/// of what a restart of a million cases costs. Fields added later at the end of a struct,
/// with `#[serde(default)]`, still read older rows.
pub fn encode_case(case: &Case) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut out = Vec::with_capacity(512);
    case_bytes::write_case(&mut out, case)?;
    Ok(out)
}

/// Reads a case written by [`encode_case`].
pub fn decode_case(bytes: &[u8]) -> Result<Case, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

/// An alert as stored from format 5 on: a MessagePack array of its fields in wire order,
/// absent ones as nil. Alerts were stored as their JSON up to format 4, and still read
/// ([`decode_alert`] tells them apart by their first byte). Encoding JSON was a tenth of the daemon's consumer loop, most of it
/// escaping the Chinese text of titles, legal bases and departments byte by byte; here a
/// string is its length and a copy.
type StoredAlert<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Level,
    Status,
    Reason,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

/// Appends `alert` as stored (a MessagePack array of its fields, see `StoredAlert`) to `out`.
pub fn encode_alert(alert: &Alert, out: &mut Vec<u8>) {
    case_bytes::write_alert(out, alert);
}

/// [`encode_alert`] through serde: what `case_bytes::write_alert` must write.
#[cfg(test)]
fn encode_alert_with_serde(
    alert: &Alert,
    out: &mut Vec<u8>,
) -> Result<(), rmp_serde::encode::Error> {
    let stored: StoredAlert<'_> = (
        &alert.id,
        &alert.rule,
        &alert.title,
        &alert.basis,
        &alert.case,
        alert.level,
        alert.status,
        alert.reason,
        &alert.at,
        alert.deadline.as_deref(),
        alert.detail.as_deref(),
        alert.department.as_deref(),
        alert.item.as_deref(),
        alert.handler.as_deref(),
    );
    rmp_serde::encode::write(out, &stored)
}

/// Whether a stored alert is JSON (written up to format 4): a JSON object's `{` never
/// starts a MessagePack array.
fn alert_is_json(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'{')
}

/// A row of `alerts` as read: its key and its bytes.
type AlertRow<'t> = (
    redb::AccessGuard<'t, u64>,
    redb::AccessGuard<'t, &'static [u8]>,
);

/// The alerts of one row of `alerts`, each with its sequence number: a group's
/// ([`ALERT_GROUP`]), or the row itself as one alert (formats 4 and 5).
pub(crate) struct RowAlerts<'a> {
    seq: u64,
    /// The lengths not yet visited, four bytes each.
    lens: &'a [u8],
    /// Their bytes.
    bytes: &'a [u8],
}

impl<'a> RowAlerts<'a> {
    /// Reads the row stored under `key`; a group whose lengths do not add up to its size
    /// is an error naming what is wrong.
    pub(crate) fn of(key: u64, row: &'a [u8]) -> Result<RowAlerts<'a>, String> {
        let Some((&ALERT_GROUP, rest)) = row.split_first() else {
            // One alert: its length as the only one.
            return Ok(RowAlerts {
                seq: key,
                lens: &[],
                bytes: row,
            });
        };
        let count = u32_at(rest, &mut 0)
            .map_err(|e| format!("alert group without its count: {e}"))?
            as usize;
        let lens = rest
            .get(4..4 + 4 * count)
            .ok_or_else(|| format!("alert group of {count} shorter than its lengths"))?;
        let bytes = &rest[4 + 4 * count..];
        let total: usize = lens
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .sum();
        if count == 0 || total != bytes.len() {
            return Err(format!(
                "alert group of {count}: its lengths add up to {total} bytes, it holds {}",
                bytes.len()
            ));
        }
        Ok(RowAlerts {
            seq: key,
            lens,
            bytes,
        })
    }

    /// How many alerts are left to visit.
    pub(crate) fn remaining(&self) -> u64 {
        if self.lens.is_empty() {
            u64::from(!self.bytes.is_empty())
        } else {
            (self.lens.len() / 4) as u64
        }
    }
}

impl<'a> Iterator for RowAlerts<'a> {
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<(u64, &'a [u8])> {
        if self.bytes.is_empty() {
            return None;
        }
        let n = match self.lens.split_first_chunk::<4>() {
            Some((len, rest)) => {
                self.lens = rest;
                (u32::from_le_bytes(*len) as usize).min(self.bytes.len())
            }
            None => self.bytes.len(),
        };
        let (alert, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        let seq = self.seq;
        self.seq += 1;
        Some((seq, alert))
    }
}

/// The store writer's buffers, kept from one batch to the next. Each batch allocated its
/// own (a row of alerts, the packed copy of each row, 60–120 KiB each), and the allocator
/// handed such blocks out in fresh pages: the kernel zeroing them was about 2% of the
/// daemon's samples in the 1M-event benchmark (perf, 2026-12-04), on a machine where fresh
/// memory costs about 3 s per GiB (see `docs/performance.md`).
#[derive(Default)]
struct WriterScratch {
    /// Each alert's bytes, then the lengths and the bytes of a group, then the group's row.
    one: Vec<u8>,
    lens: Vec<u8>,
    body: Vec<u8>,
    row: Vec<u8>,
    /// A row as [`runs::pack`] packed it.
    packed: Vec<u8>,
    /// A batch's journal pieces as they are cut and packed.
    pieces: PieceScratch,
}

/// Writes a batch's alerts as groups of at most [`ALERT_GROUP_BYTES`] (a bigger alert in a
/// group of its own), each as `(first sequence number, row)` to `put`.
fn write_alert_groups(
    alerts: &[Alert],
    first: u64,
    scratch: &mut WriterScratch,
    mut put: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let WriterScratch {
        one,
        lens,
        body,
        row,
        packed,
        ..
    } = scratch;
    lens.clear();
    body.clear();
    let mut group_first = first;
    let mut flush = |group_first: u64, lens: &mut Vec<u8>, body: &mut Vec<u8>| {
        if body.is_empty() {
            return Ok(());
        }
        row.clear();
        row.push(ALERT_GROUP);
        row.extend_from_slice(&((lens.len() / 4) as u32).to_le_bytes());
        row.extend_from_slice(lens);
        row.extend_from_slice(body);
        lens.clear();
        body.clear();
        put(group_first, runs::pack(row, packed))
    };
    for (seq, a) in (first..).zip(alerts) {
        one.clear();
        encode_alert(a, one);
        if !body.is_empty() && 5 + lens.len() + 4 + body.len() + one.len() > ALERT_GROUP_BYTES {
            // This alert starts the next group.
            flush(group_first, lens, body)?;
            group_first = seq;
        }
        lens.extend_from_slice(&(one.len() as u32).to_le_bytes());
        body.extend_from_slice(one);
    }
    flush(group_first, lens, body)
}

/// Reads a stored alert: MessagePack ([`encode_alert`]), or JSON (up to format 4).
pub fn decode_alert(bytes: &[u8]) -> Result<Alert, String> {
    if alert_is_json(bytes) {
        return serde_json::from_slice(bytes).map_err(|e| e.to_string());
    }
    let (
        id,
        rule,
        title,
        basis,
        case,
        level,
        status,
        reason,
        at,
        deadline,
        detail,
        department,
        item,
        handler,
    ): StoredAlert<'_> = rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(Alert {
        id: id.to_string(),
        rule: rule.into(),
        title: title.into(),
        basis: basis.into(),
        case: case.into(),
        level,
        status,
        reason,
        at: at.to_string(),
        deadline: deadline.map(str::to_string),
        detail: detail.map(str::to_string),
        department: department.map(str::to_string),
        item: item.map(str::to_string),
        handler: handler.map(str::to_string),
    })
}

/// The file name inside the data directory.
pub const FILE_NAME: &str = "redlight.redb";

/// The checkpoints' file name inside the data directory.
pub const BASE_FILE_NAME: &str = "cases.redb";

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
#[cfg(any(target_os = "linux", test))]
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// The store's page cache unless configured (`store.cache_mib`). redb's default is 1 GiB,
/// which made restoring a million cases take twice as long: a full scan fills the cache with
/// every page it reads, each in freshly zeroed memory, and none is read again.
pub const DEFAULT_CACHE_MIB: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: cannot create the data directory: {source}", .dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: another redlight process has this store open", .file.display())]
    Locked { file: PathBuf },
    #[error("{}: the store is corrupt or not a redlight store: {message}", .file.display())]
    Corrupt { file: PathBuf, message: String },
    #[error("{}: store format {found:?}, this redlight reads {expected:?}; move the file away or use a matching version", .file.display())]
    Incompatible {
        file: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("{}: {message}", .file.display())]
    Io { file: PathBuf, message: String },
}

/// One transaction's worth of changes.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// The cases the batch changed (or forgot).
    pub cases: CaseChanges,
    /// Alerts in the order they happened.
    pub alerts: Vec<Alert>,
    /// `(topic, partition, next offset to consume)`.
    pub offsets: Vec<(String, u32, u64)>,
    /// `(topic, partition, the engine's clock in ms)`.
    pub clocks: Vec<(String, u32, i64)>,
    /// Scorecard records `(instant, case id, record key, JSON)`, written idempotently.
    pub ledger: Vec<LedgerRow>,
    /// Scorecard records `(instant, case id, record key)` taken back (a missed period whose
    /// report was made in time and delivered late, [`crate::scorecard::take_period_rows`]),
    /// deleted after `ledger` is written: such a record is never written again.
    pub ledger_taken_back: Vec<(i64, String, String)>,
    /// Messages the batch refused, encoded, for the dead-letter topic ([`Store::dead_letters`]).
    pub dead_letters: Vec<Vec<u8>>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
            && self.alerts.is_empty()
            && self.offsets.is_empty()
            && self.ledger.is_empty()
            && self.ledger_taken_back.is_empty()
            && self.dead_letters.is_empty()
    }
}

/// Extra rows written in a batch's transaction: [`Store::commit`] calls `write` with the
/// alerts just written (and their sequence numbers) before committing, and `committed` once
/// the transaction is committed. An error from `write` aborts the whole batch.
///
/// `write` returns whether the rows it wrote act on the outside world (deliveries to send):
/// such a transaction is made durable before it commits even when [`Store::commit_lazy`]
/// was asked for, so that nothing is ever sent from a transaction a crash could undo.
pub trait CommitHook: Send + Sync {
    fn write(
        &self,
        tx: &redb::WriteTransaction,
        alerts: &[(u64, &Alert)],
    ) -> Result<bool, Box<dyn std::error::Error + Send + Sync>>;
    fn committed(&self);
}

/// The store. Cheap to share: redb allows concurrent readers alongside the one writer.
pub struct Store {
    db: Arc<Database>,
    file: PathBuf,
    /// The checkpoints' file: the runs of cases and of the alert index.
    base: Arc<Database>,
    base_file: PathBuf,
    /// Writes more rows in each batch's transaction (the delivery outbox, `src/delivery.rs`).
    hook: RwLock<Option<Arc<dyn CommitHook>>>,
    /// What the journal and the unindexed alerts hold, newest generation last. Locked for
    /// writing while a transaction commits and the overlay follows it, and for reading
    /// while a reader opens its transactions and takes the generations: a reader always
    /// gets the overlay of the state its transactions see.
    overlay: Arc<RwLock<Overlay>>,
    /// Overlay entries that trigger a checkpoint.
    checkpoint_every: AtomicUsize,
    /// What the checkpoint thread reports.
    checkpoints: Arc<Checkpoints>,
    /// The checkpoint running, if any.
    running: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Journal rows below this number are deleted (by the batches' writer).
    truncated_below: AtomicU64,
    /// Journal rows a batch deletes at most, of those a checkpoint holds.
    truncate_rows: AtomicUsize,
    /// The size at which the chunks of a checkpoint's runs are cut.
    chunk_bytes: AtomicUsize,
    /// A checkpoint's run is committed in steps of this many bytes, a quarter of redb's
    /// page cache: its write buffer holds up to half (see [`SteppedSink`]).
    step_bytes: AtomicUsize,
    /// The batches' writer's buffers (one writer at a time: redb's write transaction).
    scratch: Mutex<WriterScratch>,
    /// Woken when a commit has written dead letters ([`Store::dead_letters_written`]).
    dead_letters_written: tokio::sync::Notify,
    /// Alerts committed more than this many days ago are deleted (0: all kept).
    alerts_keep_days: AtomicU32,
    /// The last day whose first alert the batches have seen marked in `alert_days`.
    alert_day_seen: AtomicI64,
    /// Alert rows deleted by the deletion under way (logged when it is done).
    alerts_pruned: AtomicU64,
    /// The wall clock in ms since 1970 as the batches read it; 0: the system's (tests fix it).
    clock_ms: AtomicI64,
}

/// What a checkpoint thread hands back to the store.
struct Checkpoints {
    /// The duration of the last checkpoint not yet taken by
    /// [`Store::take_checkpoint_seconds`] (`f64` bits; `u64::MAX`: none).
    seconds: AtomicU64,
    /// Journal rows below this number are in the checkpoint: the next batches delete them.
    journal_next: AtomicU64,
    /// A checkpoint that failed: the next commit returns it.
    error: Mutex<Option<StoreError>>,
}

/// A big-endian u64 in a `meta` table of `file` (0 when absent).
fn meta_u64(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    file: &Path,
) -> Result<u64, StoreError> {
    let v = meta.get(key).map_err(|e| file_err(file, e))?;
    match v.map(|v| <[u8; 8]>::try_from(v.value())) {
        Some(Ok(b)) => Ok(u64::from_be_bytes(b)),
        Some(Err(_)) => Err(StoreError::Corrupt {
            file: file.to_path_buf(),
            message: format!("meta {key:?} is not 8 bytes"),
        }),
        None => Ok(0),
    }
}

/// A store error for `file`: corrupt when redb says so, else I/O.
fn file_err(file: &Path, e: impl std::fmt::Display) -> StoreError {
    let message = e.to_string();
    if message.to_lowercase().contains("corrupt") {
        StoreError::Corrupt {
            file: file.to_path_buf(),
            message,
        }
    } else {
        StoreError::Io {
            file: file.to_path_buf(),
            message,
        }
    }
}

/// What a reader reads: both files, from one moment, and the overlay of that moment.
struct Snapshot {
    /// The batches' file.
    tx: redb::ReadTransaction,
    /// The checkpoints' file.
    base: redb::ReadTransaction,
    generations: Vec<Arc<Generation>>,
}

/// `(topic, partition, case id)`.
type CaseKey = (String, u32, String);

/// The changes of one committed batch that are not yet checkpointed.
#[derive(Default)]
struct Generation {
    /// Its last journal row's number (none for the alerts read back on open).
    row: Option<u64>,
    /// The last alert sequence number in `alerts` (0: none).
    last_alert: u64,
    /// The batch's journal rows as stored: [`CaseChanges`] rows of at most
    /// [`JOURNAL_PIECE`] bytes, cut from the batch's cases in key order, each packed
    /// ([`runs::pack`]; as it is where packing would not make it smaller). Kept packed: a
    /// stream of new cases' overlay took 424 MB unpacked at its peak, fresh memory that
    /// cost this machine's kernel about a second of a 1M-event run to back (see
    /// `docs/performance-log.md`); packed it is about a fifth. Readers unpack a piece to read
    /// its cases ([`OverlaySource`]); in key order, each piece once.
    journal: Vec<Vec<u8>>,
    /// The pieces' bytes unpacked: what a checkpoint writes of them.
    unpacked: usize,
    /// The entries' topics and case ids, unpacked: sorting, binary searches and a merge's
    /// comparisons read only keys. A topic is kept once for a run of entries that share it.
    keys: Vec<u8>,
    /// The changed cases in key order (so are the pieces). Sorted, so that readers merge
    /// the generations in key order without sorting them again (a page of
    /// `/api/v1/cases` costs a few binary searches).
    cases: Vec<Entry>,
    /// Case id → the sequence numbers of its alerts, in order. FxHash, not SipHash: the
    /// store writer adds every alert here (SipHash was 3% of its time in the 1M-event
    /// benchmark); the engine's map of open cases hashes the same ids with FxHash.
    alerts: rustc_hash::FxHashMap<Arc<str>, Vec<u64>>,
    alert_count: usize,
    /// [`Generation::measure`] once it is complete, before it joins the overlay.
    memory: usize,
}

impl Generation {
    /// About the bytes it holds in memory: its pieces, keys and entries, and its alerts'
    /// index (each case's key and vector in the map, and their sequence numbers).
    fn measure(&self) -> usize {
        let pieces: usize = self.journal.iter().map(Vec::capacity).sum();
        let alerts: usize = self.alerts.values().map(|v| v.capacity() * 8).sum();
        let slot = std::mem::size_of::<(Arc<str>, Vec<u64>)>() + 1;
        pieces
            + self.keys.capacity()
            + self.cases.capacity() * std::mem::size_of::<Entry>()
            + alerts
            + self.alerts.capacity() * slot
    }
}

/// Where a changed case is: its key's topic and id as byte ranges of its generation's
/// `keys`, and its piece with the byte range of the case in that piece unpacked (`None`:
/// forgotten). Ranges rather than strings of its own: a batch's cases cost no allocation
/// each.
#[derive(Clone, Copy)]
struct Entry {
    piece: u32,
    partition: u32,
    topic: (u32, u32),
    id: (u32, u32),
    value: Option<(u32, u32)>,
}

/// The buffers [`Generation::of_row`] cuts and packs pieces in, kept by their owner from
/// one batch to the next.
#[derive(Default)]
struct PieceScratch {
    piece: CaseChanges,
    packed: Vec<u8>,
}

/// A byte range `(start, end)` as `u32` offsets.
type Span = (u32, u32);

/// A `(start, end)` pair of `u32` offsets, or an error naming what is too long.
fn span32(start: usize, end: usize, what: &str) -> Result<Span, String> {
    match (u32::try_from(start), u32::try_from(end)) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(format!("{what} longer than 4 GiB at byte {start}")),
    }
}

impl Generation {
    /// The generation of a batch's journal row ([`CaseChanges`]): its cases in key order
    /// (of a case written twice in the row, the later entry only; the daemon writes each
    /// once), cut into [`CaseChanges`] rows of at most [`JOURNAL_PIECE`] bytes (unless one
    /// case is bigger) that are packed, which the store writes as the batch's journal rows
    /// and the generation keeps (one copy of the batch's cases).
    fn of_row(row: &[u8], scratch: &mut PieceScratch) -> Result<Generation, String> {
        let entries = decode_journal(row)?;
        Generation::of_entries(row, &entries, scratch)
    }

    /// [`Generation::of_row`] of the row's entries, decoded.
    fn of_entries(
        row: &[u8],
        entries: &[JournalEntry<'_>],
        scratch: &mut PieceScratch,
    ) -> Result<Generation, String> {
        let order = key_order(entries.len(), |i| {
            entries.get(i).map_or((&[][..], 0, &[][..]), |e| {
                (e.0.as_bytes(), e.1, e.2.as_bytes())
            })
        });
        let key_bytes: usize = entries.iter().map(|e| e.2.len()).sum();
        let mut g = Generation {
            journal: Vec::with_capacity(row.len() / JOURNAL_PIECE + 1),
            cases: Vec::with_capacity(order.len()),
            keys: Vec::with_capacity(key_bytes + 64),
            ..Generation::default()
        };
        let PieceScratch { piece, packed } = scratch;
        piece.clear();
        // The last topic put in `keys`: the next entry of the same topic shares it.
        let mut topic_at: Option<Span> = None;
        for (topic, partition, id, value) in order.iter().filter_map(|&i| entries.get(i)) {
            let value = value.clone().map(|r| &row[r]);
            if !piece.is_empty()
                && piece.row().len() + CaseChanges::entry_len(topic, id, value) > JOURNAL_PIECE
            {
                g.push_piece(piece, packed);
            }
            let (topic_span, id_span) =
                g.push_key(&mut topic_at, topic.as_bytes(), id.as_bytes())?;
            let value = match value {
                Some(v) => {
                    piece.put_encoded(topic, *partition, id, v);
                    let end = piece.row().len();
                    Some(span32(end - v.len(), end, "journal piece")?)
                }
                None => {
                    piece.forget(topic, *partition, id);
                    None
                }
            };
            g.cases.push(Entry {
                piece: u32::try_from(g.journal.len())
                    .map_err(|_| "too many journal rows".to_string())?,
                partition: *partition,
                topic: topic_span,
                id: id_span,
                value,
            });
        }
        if !piece.is_empty() {
            g.push_piece(piece, packed);
        }
        Ok(g)
    }

    /// Puts an entry's topic and id in `keys`: the topic only if it is not the last one put
    /// (`topic_at`, updated).
    fn push_key(
        &mut self,
        topic_at: &mut Option<Span>,
        topic: &[u8],
        id: &[u8],
    ) -> Result<(Span, Span), String> {
        let topic_span = match *topic_at {
            Some(t) if self.key_part(t) == topic => t,
            _ => {
                let start = self.keys.len();
                self.keys.extend_from_slice(topic);
                let t = span32(start, self.keys.len(), "journal keys")?;
                *topic_at = Some(t);
                t
            }
        };
        let start = self.keys.len();
        self.keys.extend_from_slice(id);
        Ok((topic_span, span32(start, self.keys.len(), "journal keys")?))
    }

    /// Packs the piece cut so far into the journal, and empties it for the next.
    fn push_piece(&mut self, piece: &mut CaseChanges, packed: &mut Vec<u8>) {
        self.journal.push(runs::pack(piece.row(), packed).to_vec());
        self.unpacked += piece.row().len();
        piece.clear();
    }

    /// The generation of a journal row as stored (`stored`; `unpacked`: room to unpack it
    /// in). A row in key order, as this store writes them, is kept as it is, its keys read
    /// out; a row of an older store (a batch's cases in the order they came) is sorted and
    /// cut again as [`Generation::of_row`] does.
    fn of_stored(
        stored: &[u8],
        unpacked: &mut Vec<u8>,
        scratch: &mut PieceScratch,
    ) -> Result<Generation, String> {
        runs::unpack_into(stored, unpacked)?;
        let row = &unpacked[..];
        let entries = decode_journal(row)?;
        // Strings order as their bytes do.
        let in_order = entries
            .windows(2)
            .all(|w| (w[0].0, w[0].1, w[0].2) < (w[1].0, w[1].1, w[1].2));
        if !in_order {
            return Generation::of_entries(row, &entries, scratch);
        }
        let mut g = Generation {
            cases: Vec::with_capacity(entries.len()),
            ..Generation::default()
        };
        let mut topic_at: Option<Span> = None;
        for (topic, partition, id, value) in &entries {
            let (topic, id) = g.push_key(&mut topic_at, topic.as_bytes(), id.as_bytes())?;
            g.cases.push(Entry {
                piece: 0,
                partition: *partition,
                topic,
                id,
                value: value
                    .clone()
                    .map(|v| span32(v.start, v.end, "journal row"))
                    .transpose()?,
            });
        }
        g.unpacked = row.len();
        g.journal.push(stored.to_vec());
        Ok(g)
    }

    /// Takes `next` (journal rows read on open, no alerts) into this generation when all its
    /// keys come after this one's, and gives it back otherwise. A store reopened with a
    /// long journal had a generation per row, thousands; a reader unpacks rows in a buffer
    /// per generation, and a stream's ids mostly rise from batch to batch, so most rows
    /// join the generation before them (the rows of one batch always do).
    fn append(&mut self, mut next: Generation) -> Option<Generation> {
        let after = match (self.cases.last(), next.cases.first()) {
            (Some(a), Some(b)) => self.key_bytes(a) < next.key_bytes(b),
            _ => false,
        };
        let (Ok(pieces), Ok(_), Ok(keys)) = (
            u32::try_from(self.journal.len()),
            u32::try_from(self.journal.len() + next.journal.len()),
            u32::try_from(self.keys.len() + next.keys.len()),
        ) else {
            return Some(next);
        };
        if !after || self.alert_count > 0 || next.alert_count > 0 {
            return Some(next);
        }
        let shift = keys - next.keys.len() as u32;
        self.keys.extend_from_slice(&next.keys);
        self.cases.extend(next.cases.iter().map(|e| Entry {
            piece: e.piece + pieces,
            topic: (e.topic.0 + shift, e.topic.1 + shift),
            id: (e.id.0 + shift, e.id.1 + shift),
            ..*e
        }));
        self.journal.append(&mut next.journal);
        self.unpacked += next.unpacked;
        self.row = next.row.or(self.row);
        None
    }

    fn size(&self) -> usize {
        self.cases.len() + self.alert_count
    }

    /// Its journal rows' bytes, unpacked.
    fn bytes(&self) -> usize {
        self.unpacked
    }

    fn key_part(&self, r: (u32, u32)) -> &[u8] {
        self.keys
            .get(r.0 as usize..r.1 as usize)
            .unwrap_or_default()
    }

    /// An entry's key as bytes, which order as the strings do (UTF-8 keeps the order of
    /// code points).
    fn key_bytes(&self, e: &Entry) -> (&[u8], u32, &[u8]) {
        (self.key_part(e.topic), e.partition, self.key_part(e.id))
    }

    /// An entry's key. Its strings were checked to be UTF-8 when the row was read, and are
    /// not checked again: a checkpoint reads every key of its generations at least once, and
    /// checking them each time was a tenth of its time in the daemon benchmark (perf).
    fn key_of(&self, e: &Entry) -> KeyRef<'_> {
        let text = |r| {
            let bytes = self.key_part(r);
            debug_assert!(std::str::from_utf8(bytes).is_ok());
            // SAFETY: entries are made only by `of_entries` and `of_stored`, whose entries
            // `decode_journal` checked to be UTF-8 (`str_of`), and which copied those bytes
            // into `keys` where its range points (`key_part` gives the empty string for a
            // range it does not have), and by `append`, which copies another generation's
            // `keys` to the end of this one's and shifts that one's ranges by as much;
            // bytes in `keys` are never changed once there.
            unsafe { std::str::from_utf8_unchecked(bytes) }
        };
        (text(e.topic), e.partition, text(e.id))
    }

    /// A buffer to unpack piece `p` in: a spare one of a full piece's size for a piece of
    /// more than half that size, an empty one otherwise, which unpacking gives the piece's
    /// size. A quiet daemon's journal is many small batches, each a generation with a small
    /// piece, and a full scan holds a buffer for each generation it is in the middle of:
    /// thousands of 64 KiB buffers would be far more than the pieces.
    fn buffer_for(&self, p: u32) -> Vec<u8> {
        let len = self
            .journal
            .get(p as usize)
            .map_or(0, |stored| runs::unpacked_len(stored));
        if len > FULL_PIECE / 2 {
            spare_piece()
        } else {
            Vec::new()
        }
    }

    /// The piece of entry `e` unpacked into `out`, checked to hold the entry's case.
    fn unpack_piece(&self, e: &Entry, out: &mut Vec<u8>) -> Result<(), String> {
        let p = e.piece;
        let stored = self
            .journal
            .get(p as usize)
            .ok_or_else(|| format!("no journal piece {p}"))?;
        runs::unpack_into(stored, out).map_err(|m| format!("journal piece {p}: {m}"))?;
        match e.value {
            Some(r) if r.1 as usize > out.len() => Err(format!(
                "journal piece {p} of the overlay is shorter than its case {:?}",
                self.key_of(e).2
            )),
            _ => Ok(()),
        }
    }

    /// This generation's change of a case: `Some(None)` when it forgot the case, `None`
    /// when it did not change it.
    fn get(
        &self,
        topic: &str,
        partition: u32,
        id: &str,
    ) -> Result<Option<Option<Vec<u8>>>, String> {
        let key = (topic.as_bytes(), partition, id.as_bytes());
        let Ok(i) = self.cases.binary_search_by(|e| self.key_bytes(e).cmp(&key)) else {
            return Ok(None);
        };
        let Some(e) = self.cases.get(i) else {
            return Ok(None);
        };
        let Some(r) = e.value else {
            return Ok(Some(None));
        };
        let mut piece = self.buffer_for(e.piece);
        let case = self.unpack_piece(e, &mut piece).and_then(|()| {
            piece
                .get(r.0 as usize..r.1 as usize)
                .map(|v| Some(Some(v.to_vec())))
                .ok_or_else(|| format!("journal piece {} has no case at {r:?}", e.piece))
        });
        give_back_piece(piece);
        case
    }

    /// The index of the first entry at or after (`Included`), or after (`Excluded`), a
    /// key; 0 for `Unbounded`.
    fn position(&self, bound: Bound<KeyRef<'_>>) -> usize {
        match bound {
            Bound::Included(k) => {
                let k = (k.0.as_bytes(), k.1, k.2.as_bytes());
                self.cases.partition_point(|e| self.key_bytes(e) < k)
            }
            Bound::Excluded(k) => {
                let k = (k.0.as_bytes(), k.1, k.2.as_bytes());
                self.cases.partition_point(|e| self.key_bytes(e) <= k)
            }
            Bound::Unbounded => 0,
        }
    }
}

/// The order of `n` entries by their keys (`key(i)`: topic, partition, case id, as bytes),
/// as indices; of equal keys the later entry only.
///
/// Sorted by integers wherever they decide, so that most comparisons touch neither the
/// row nor `memcmp`: the topic's rank among the batch's topics and the partition in one,
/// then eight bytes of the id from where the batch's ids first differ (zero-padded, which
/// keeps the order of the strings: a shorter id sorts before its extensions); only ids
/// equal in those eight bytes are compared whole, and the entry's place in the batch
/// breaks ties. This sort was 13% of the store writer's time in the 1M-event daemon
/// benchmark, comparing ids that share a long prefix.
fn key_order<'r>(n: usize, key: impl Fn(usize) -> (&'r [u8], u32, &'r [u8])) -> Vec<usize> {
    // Every entry's topic, sorted and deduplicated (a batch mostly has one: input in
    // order costs the sort one pass), for its rank by binary search.
    let mut topics: Vec<&[u8]> = (0..n).map(|i| key(i).0).collect();
    topics.sort_unstable();
    topics.dedup();
    let shared = shared_prefix((0..n).map(|i| key(i).2));
    let mut keys: Vec<(u64, u64, u32)> = (0..n)
        .zip(0u32..)
        .map(|(i, at)| {
            let (topic, partition, id) = key(i);
            let rank = topics.binary_search(&topic).unwrap_or(0) as u64;
            (
                rank << 32 | u64::from(partition),
                eight_after(id, shared),
                at,
            )
        })
        .collect();
    let id_of = |at: u32| key(at as usize).2;
    keys.sort_unstable_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| id_of(a.2).cmp(id_of(b.2)))
            .then(a.2.cmp(&b.2))
    });
    // Of equal keys, now in batch order, the last.
    let mut out = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let same_as_next = keys
            .get(i + 1)
            .is_some_and(|n| (n.0, n.1) == (k.0, k.1) && id_of(n.2) == id_of(k.2));
        if !same_as_next {
            out.push(k.2 as usize);
        }
    }
    out
}

/// A scorecard record: `(instant, case id, record key, JSON)`.
pub type LedgerRow = (i64, String, String, Vec<u8>);

/// A batch's scorecard rows in key order, of a key written more than once the last row
/// (what inserting them all in their order leaves). The loop records a case's rows after
/// each event and again with its batch (`src/daemon.rs`), so most rows of a batch come
/// twice: inserting each once, in the table's order, halves the B-tree inserts.
fn ledger_once(rows: &[LedgerRow]) -> impl Iterator<Item = &LedgerRow> {
    fn key(r: &LedgerRow) -> (i64, &str, &str) {
        (r.0, r.1.as_str(), r.2.as_str())
    }
    let mut order: Vec<&LedgerRow> = rows.iter().collect();
    // Stable: rows of one key stay in their order, and the last of them is kept.
    order.sort_by(|a, b| key(a).cmp(&key(b)));
    let mut once: Vec<&LedgerRow> = Vec::with_capacity(order.len());
    for row in order {
        match once.last_mut() {
            Some(last) if key(last) == key(row) => *last = row,
            _ => once.push(row),
        }
    }
    once.into_iter()
}

/// Opening's reading of the journal, a row's generation (`row`) at a time: it joins the
/// generation being read (`current`) when it can ([`Generation::append`]); otherwise, or
/// at the end (`None`), the generation being read is complete and goes to `generations`.
fn read_back(
    generations: &mut Vec<Arc<Generation>>,
    current: &mut Option<Generation>,
    row: Option<Generation>,
) {
    let complete = match row {
        Some(g) => match current.as_mut() {
            None => {
                *current = Some(g);
                None
            }
            Some(c) => match c.append(g) {
                None => None,
                Some(g) => current.replace(g),
            },
        },
        None => current.take(),
    };
    if let Some(mut c) = complete {
        c.memory = c.measure();
        generations.push(Arc::new(c));
    }
}

/// How many bytes all of `ids` start with (0 for none).
fn shared_prefix<'a>(mut ids: impl Iterator<Item = &'a [u8]>) -> usize {
    let Some(first) = ids.next() else {
        return 0;
    };
    ids.fold(first.len(), |shared, id| {
        first[..shared]
            .iter()
            .zip(id)
            .take_while(|(a, b)| a == b)
            .count()
    })
}

/// Eight bytes of `id` from `at`, zero-padded, as a big-endian integer: integers of ids
/// that all share their first `at` bytes order as the ids do where they differ (a shorter
/// id before its extensions); ids whose integers are equal need comparing whole.
fn eight_after(id: &[u8], at: usize) -> u64 {
    let mut eight = [0u8; 8];
    let rest = id.get(at..).unwrap_or_default();
    let n = rest.len().min(8);
    eight[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(eight)
}

/// The alert index's `(case id, alert seq)` pairs in order, by [`eight_after`] first (the
/// checkpoints sorted them with `memcmp` on ids that share most of their bytes: 5% of
/// their time in the daemon benchmark).
fn sort_index(index: &mut Vec<(&str, u64)>) {
    let shared = shared_prefix(index.iter().map(|(case, _)| case.as_bytes()));
    let mut keyed: Vec<(u64, &str, u64)> = index
        .iter()
        .map(|&(case, seq)| (eight_after(case.as_bytes(), shared), case, seq))
        .collect();
    keyed.sort_unstable();
    index.clear();
    index.extend(keyed.into_iter().map(|(_, case, seq)| (case, seq)));
}

/// Buffers of a full piece's size that readers unpack journal pieces into, given back when
/// a reader is done: a checkpoint's merge unpacks in one per generation (a few hundred),
/// and fresh ones for each checkpoint were fresh pages for the kernel to zero, which costs
/// this machine about 3 s per GiB (see `docs/performance.md`). At most
/// [`SPARE_PIECES_MAX`] are kept.
static SPARE_PIECES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// 1,024 pieces of 64 KiB: 64 MiB.
const SPARE_PIECES_MAX: usize = 1024;

/// The capacity of a full piece unpacked, the only size kept spare: its count and its
/// entries.
const FULL_PIECE: usize = JOURNAL_PIECE + 4;

/// An empty buffer with room for a full piece, a spare one where there is one.
fn spare_piece() -> Vec<u8> {
    SPARE_PIECES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .unwrap_or_else(|| Vec::with_capacity(FULL_PIECE))
}

/// Keeps `buffer` for the next reader, if it is of a full piece's size and there is room.
fn give_back_piece(mut buffer: Vec<u8>) {
    if buffer.capacity() != FULL_PIECE {
        return;
    }
    let mut spare = SPARE_PIECES.lock().unwrap_or_else(|p| p.into_inner());
    if spare.len() < SPARE_PIECES_MAX {
        buffer.clear();
        spare.push(buffer);
    }
}

type KeyRef<'a> = (&'a str, u32, &'a str);

/// The overlay's changes within a key range in key order, of each key the newest: a k-way
/// merge of the generations (a heap of each one's next key, ties to the newest). Yields
/// each key with its generation and entry.
///
/// The heap orders its heads by integers where they decide (as [`key_order`] sorts a
/// batch): the topic's rank among the topics seen and the partition in one, then eight
/// bytes of the id from where all ids seen so far first differ; only ids equal in those
/// are compared whole. Comparing the keys as strings (the topic, then the id, both with
/// `memcmp`) at every step of a heap of a few hundred generations was most of a
/// checkpoint's merge of the overlay. A topic not seen before, or an id that shares less
/// of its start with the others, changes the integers: the heads are then worked out again
/// (at most once per topic and once per byte of the first id seen; in a merge of one
/// topic's case ids, a few times).
struct OverlayCursor<'a> {
    generations: &'a [Arc<Generation>],
    /// Per generation: the next entry and the end of the range.
    at: Vec<(usize, usize)>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Head<'a>>>,
    /// The topics seen, sorted: a topic's rank is its place here.
    topics: Vec<&'a str>,
    /// Per generation: the span of the topic it gave last and that topic's rank (a
    /// generation keeps a topic once for a run of entries that share it).
    topic_of: Vec<Option<(Span, u64)>>,
    /// The id every id seen so far starts with (its first `shared` bytes), and `shared`.
    prefix: &'a [u8],
    shared: usize,
    last: Option<Head<'a>>,
}

/// A generation's next key in [`OverlayCursor`]'s heap, with the integers that order it.
#[derive(Clone, Copy)]
struct Head<'a> {
    /// The topic's rank and the partition.
    topic_partition: u64,
    /// [`eight_after`] the shared prefix of the ids.
    eight: u64,
    key: KeyRef<'a>,
    generation: usize,
}

impl Head<'_> {
    /// Whether the two are the same key (of any generations).
    fn same_key(&self, other: &Head<'_>) -> bool {
        self.topic_partition == other.topic_partition
            && self.eight == other.eight
            && self.key.2 == other.key.2
    }
}

impl Ord for Head<'_> {
    /// Key order; of equal keys the newest generation first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.topic_partition, self.eight)
            .cmp(&(other.topic_partition, other.eight))
            .then_with(|| self.key.2.cmp(other.key.2))
            .then_with(|| other.generation.cmp(&self.generation))
    }
}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Head<'_> {}

impl<'a> OverlayCursor<'a> {
    fn new(
        generations: &'a [Arc<Generation>],
        from: Bound<KeyRef<'_>>,
        to: Bound<KeyRef<'_>>,
    ) -> OverlayCursor<'a> {
        let mut cursor = OverlayCursor {
            generations,
            at: Vec::with_capacity(generations.len()),
            heap: std::collections::BinaryHeap::with_capacity(generations.len()),
            topics: Vec::new(),
            topic_of: vec![None; generations.len()],
            prefix: &[],
            shared: usize::MAX,
            last: None,
        };
        for (g, gen_) in generations.iter().enumerate() {
            let start = gen_.position(from);
            let end = match to {
                // The first entry past the range.
                Bound::Included(k) => gen_.position(Bound::Excluded(k)),
                Bound::Excluded(k) => gen_.position(Bound::Included(k)),
                Bound::Unbounded => gen_.cases.len(),
            };
            cursor.at.push((start, end));
            if start < end {
                cursor.push(g, start);
            }
        }
        cursor
    }

    /// Puts entry `i` of generation `g` in the heap.
    fn push(&mut self, g: usize, i: usize) {
        let Some(gen_) = self.generations.get(g) else {
            return;
        };
        let Some(e) = gen_.cases.get(i) else {
            return;
        };
        let key = gen_.key_of(e);
        let mut again = false;
        let rank = match self.topic_of.get(g).copied().flatten() {
            Some((span, rank)) if span == e.topic => rank,
            _ => {
                let rank = match self.topics.binary_search(&key.0) {
                    Ok(r) => r,
                    Err(r) => {
                        // A new topic moves the ranks after it.
                        self.topics.insert(r, key.0);
                        self.topic_of.iter_mut().for_each(|t| *t = None);
                        again = true;
                        r
                    }
                };
                if let Some(t) = self.topic_of.get_mut(g) {
                    *t = Some((e.topic, rank as u64));
                }
                rank as u64
            }
        };
        let id = key.2.as_bytes();
        if self.shared == usize::MAX {
            self.prefix = id;
            self.shared = id.len();
        } else if id.get(..self.shared) != self.prefix.get(..self.shared) {
            self.shared = self
                .prefix
                .iter()
                .zip(id)
                .take_while(|(a, b)| a == b)
                .count();
            again = true;
        }
        let head = Head {
            topic_partition: rank << 32 | u64::from(key.1),
            eight: eight_after(id, self.shared),
            key,
            generation: g,
        };
        if again {
            self.work_out_again();
        }
        self.heap.push(std::cmp::Reverse(head));
    }

    /// The integers of every head (and of the last key given) from the topics and the
    /// shared prefix as they are now.
    fn work_out_again(&mut self) {
        let topics = &self.topics;
        let shared = self.shared;
        let redo = |h: &mut Head<'a>| {
            let rank = topics.binary_search(&h.key.0).unwrap_or(0) as u64;
            h.topic_partition = rank << 32 | u64::from(h.key.1);
            h.eight = eight_after(h.key.2.as_bytes(), shared);
        };
        let mut heads = std::mem::take(&mut self.heap).into_vec();
        heads.iter_mut().for_each(|h| redo(&mut h.0));
        self.heap = heads.into();
        if let Some(last) = self.last.as_mut() {
            redo(last);
        }
    }
}

impl<'a> Iterator for OverlayCursor<'a> {
    /// The key, its generation's index and the entry's index in it.
    type Item = (KeyRef<'a>, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let std::cmp::Reverse(head) = self.heap.pop()?;
            let g = head.generation;
            let (i, end) = self.at.get_mut(g).map(|a| {
                a.0 += 1;
                (a.0 - 1, a.1)
            })?;
            // Equal keys pop newest first (the larger generation index sorts first).
            let repeated = self.last.as_ref().is_some_and(|l| l.same_key(&head));
            if !repeated {
                self.last = Some(head);
            }
            if i + 1 < end {
                self.push(g, i + 1);
            }
            if repeated {
                continue;
            }
            return Some((head.key, g, i));
        }
    }
}

/// The overlay as the newest [`Source`] of a merge: the cursor's cases, each read from its
/// piece unpacked in a buffer of its generation's (the pieces are in key order, so each is
/// unpacked once).
struct OverlaySource<'a> {
    cursor: OverlayCursor<'a>,
    /// The batches' file, which errors name.
    file: &'a Path,
    /// The current key, its generation, and where its case is in that generation's buffer
    /// (`None`: forgotten).
    current: Option<(KeyRef<'a>, usize, Option<Span>)>,
    /// Per generation: which piece its buffer holds, unpacked.
    pieces: Vec<Option<(u32, Vec<u8>)>>,
}

impl<'a> OverlaySource<'a> {
    fn new(cursor: OverlayCursor<'a>, file: &'a Path) -> Result<OverlaySource<'a>, StoreError> {
        let pieces = std::iter::repeat_with(|| None)
            .take(cursor.generations.len())
            .collect();
        let mut source = OverlaySource {
            cursor,
            file,
            current: None,
            pieces,
        };
        source.advance()?;
        Ok(source)
    }
}

impl Source for OverlaySource<'_> {
    fn key(&self) -> Option<KeyRef<'_>> {
        self.current.map(|c| c.0)
    }

    fn value(&self) -> Option<&[u8]> {
        let (_, g, r) = self.current?;
        let r = r?;
        let (_, piece) = self.pieces.get(g)?.as_ref()?;
        // `advance` checked the range against the piece.
        Some(piece.get(r.0 as usize..r.1 as usize).unwrap_or_default())
    }

    fn advance(&mut self) -> Result<(), StoreError> {
        // The current case's generation done with: its buffer goes back for the next.
        if let Some((_, g, _)) = self.current.take()
            && self.cursor.at.get(g).is_none_or(|a| a.0 >= a.1)
            && let Some((_, buffer)) = self.pieces.get_mut(g).and_then(Option::take)
        {
            give_back_piece(buffer);
        }
        let Some((key, g, i)) = self.cursor.next() else {
            return Ok(());
        };
        let gen_ = self.cursor.generations.get(g);
        let (Some(gen_), Some(slot)) = (gen_, self.pieces.get_mut(g)) else {
            return Ok(());
        };
        let Some(e) = gen_.cases.get(i) else {
            return Ok(());
        };
        if e.value.is_some() && slot.as_ref().map(|s| s.0) != Some(e.piece) {
            let mut buffer = slot
                .take()
                .map_or_else(|| gen_.buffer_for(e.piece), |s| s.1);
            let unpacked = gen_.unpack_piece(e, &mut buffer);
            *slot = Some((e.piece, buffer));
            unpacked.map_err(|message| StoreError::Corrupt {
                file: self.file.to_path_buf(),
                message,
            })?;
        }
        self.current = Some((key, g, e.value));
        Ok(())
    }
}

#[cfg(test)]
impl OverlaySource<'_> {
    /// The bytes of the buffers it holds.
    fn held(&self) -> usize {
        self.pieces
            .iter()
            .flatten()
            .map(|(_, b)| b.capacity())
            .sum()
    }
}

impl Drop for OverlaySource<'_> {
    fn drop(&mut self) {
        for (_, buffer) in self.pieces.drain(..).flatten() {
            give_back_piece(buffer);
        }
    }
}

/// Queues the read of one file into the page cache (see [`Store::prefetch`]).
#[cfg(target_os = "linux")]
fn prefetch_file(file: &Path) {
    use std::os::fd::AsRawFd;
    let started = std::time::Instant::now();
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(file = %file.display(), error = %e, "store prefetch skipped");
            return;
        }
    };
    let len = f.metadata().map_or(0, |m| m.len());
    // A file that would not fit in half the memory available is left alone:
    // reading it all in would only evict its own first pages again.
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| mem_available(&m));
    if available.is_some_and(|a| len > a / 2) {
        tracing::info!(file = %file.display(), bytes = len, available,
        "store larger than half the available memory: not read ahead");
        return;
    }
    // In chunks: the kernel reads ahead at most a few MiB per call (one call
    // for the whole file brought in 8 MiB). The calls return once the reads
    // are queued, so the loop is paced by the disk, not by copying.
    const CHUNK: u64 = 4 << 20;
    let mut offset = 0u64;
    while offset < len {
        let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(CHUNK)) else {
            break;
        };
        // SAFETY: a plain syscall on a descriptor this thread owns.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), off, n, libc::POSIX_FADV_WILLNEED) };
        if rc != 0 {
            tracing::debug!(file = %file.display(), rc, "store prefetch stopped");
            break;
        }
        offset += CHUNK;
    }
    tracing::debug!(file = %file.display(), bytes = len,
    elapsed_ms = started.elapsed().as_millis() as u64, "store prefetch queued");
}

/// A checkpoint, on its own thread (see the module doc).
struct CheckpointJob {
    db: Arc<Database>,
    file: PathBuf,
    base: Arc<Database>,
    base_file: PathBuf,
    overlay: Arc<RwLock<Overlay>>,
    checkpoints: Arc<Checkpoints>,
    chunk_bytes: usize,
    /// A run's chunks committed (not durably) after every this many bytes.
    step_bytes: usize,
}

impl CheckpointJob {
    fn run(self) {
        if let Err(e) = self.checkpoint() {
            tracing::error!(file = %self.base_file.display(), error = %e, "store checkpoint failed");
            *self
                .checkpoints
                .error
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        file_err(&self.base_file, e)
    }

    /// The first alert the log still holds (0: none): those before it were deleted
    /// (`store.alerts_keep_days` deletes the oldest rows first), so the runs of the alert
    /// index leave their pairs out as they are merged. Read after the lazily committed
    /// batches were made durable; a later batch's deletion a crash undid would leave alerts
    /// that are already older than the days kept, deleted again by the next batches.
    fn first_alert_kept(&self) -> Result<u64, StoreError> {
        let rtx = self.db.begin_read().map_err(|e| file_err(&self.file, e))?;
        let alerts = match rtx.open_table(ALERTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(file_err(&self.file, e)),
        };
        let first = alerts.first().map_err(|e| file_err(&self.file, e))?;
        Ok(first.map_or(0, |(k, _)| k.value()))
    }

    /// Writes the overlay as it is now into the checkpoints' file, a run of cases and a run
    /// of the alert index, each in key order, with the journal row and the alert it got to; then drops those
    /// generations from the overlay and lets the next batch delete their journal rows.
    fn checkpoint(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let generations = self
            .overlay
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .generations
            .clone();
        if generations.is_empty() {
            return Ok(());
        }
        // Lazily committed batches made durable first: the checkpoint must never hold what
        // a crash could still undo in the other file.
        let tx = self.db.begin_write().map_err(|e| file_err(&self.file, e))?;
        tx.commit().map_err(|e| file_err(&self.file, e))?;
        // The runs as committed: the newest of them are merged into the run written here
        // (read from this transaction while the write below deletes them).
        let rtx = self.base.begin_read().map_err(|e| self.err(e))?;
        let old = {
            let meta = rtx.open_table(META).map_err(|e| self.err(e))?;
            runs::runs(&meta, &self.base_file)?
        };
        let bytes: u64 = generations.iter().map(|g| g.bytes() as u64).sum();
        let (keep, merged, n) = runs::plan(&old, bytes);
        // Into the oldest run, forgotten cases need no tombstone.
        let bottom = keep.is_empty();
        let name = runs::table_name(n);
        let tx = self.base.begin_write().map_err(|e| self.err(e))?;
        let (tx, run_bytes, entries) = {
            let sink = SteppedSink::new(&self.base, tx, &name, &self.base_file, self.step_bytes)?;
            let mut w = RunWriter::new(sink, self.chunk_bytes);
            let mut cursors = Vec::with_capacity(merged.len());
            for r in merged {
                let table = runs::table_name(r.n);
                let t = rtx
                    .open_table(runs::ChunkTable::new(&table))
                    .map_err(|e| self.err(e))?;
                cursors.push(RunCursor::new(
                    &t,
                    r.n,
                    &self.base_file,
                    Bound::Unbounded,
                    Bound::Unbounded,
                )?);
            }
            let mut over = OverlaySource::new(
                OverlayCursor::new(&generations, Bound::Unbounded, Bound::Unbounded),
                &self.file,
            )?;
            let mut sources: Vec<&mut dyn Source> =
                cursors.iter_mut().map(|c| c as &mut dyn Source).collect();
            sources.push(&mut over);
            runs::merge(&mut sources, |key, value| {
                if value.is_some() || !bottom {
                    w.push(key, value)?;
                }
                Ok(true)
            })?;
            let (sink, run_bytes, entries) = w.finish()?;
            (sink.into_tx()?, run_bytes, entries)
        };
        for r in merged {
            let table = runs::table_name(r.n);
            tx.delete_table(runs::ChunkTable::new(&table))
                .map_err(|e| self.err(e))?;
        }
        let mut list = keep.to_vec();
        if entries > 0 {
            list.push(runs::RunInfo {
                n,
                bytes: run_bytes,
                entries,
            });
        } else {
            tx.delete_table(runs::ChunkTable::new(&name))
                .map_err(|e| self.err(e))?;
        }
        runs::set_runs(&tx, &list, &self.base_file)?;
        let cases_ms = started.elapsed().as_millis() as u64;
        // The alerts' index: a run of its own, merged with the newest runs as the cases'
        // are (see `src/store/alert_runs.rs`).
        let index_started = std::time::Instant::now();
        let (indexed, commit_ms, alert_runs);
        let next = {
            let mut index: Vec<(&str, u64)> = generations
                .iter()
                .flat_map(|g| {
                    g.alerts
                        .iter()
                        .flat_map(|(case, seqs)| seqs.iter().map(move |s| (&**case, *s)))
                })
                .collect();
            sort_index(&mut index);
            indexed = index.len();
            let old = {
                let meta = rtx.open_table(META).map_err(|e| self.err(e))?;
                runs::list(&meta, alert_runs::META_ALERT_RUNS, &self.base_file)?
            };
            let bytes: u64 = index
                .iter()
                .map(|(case, _)| alert_runs::pair_len(case) as u64)
                .sum();
            let (keep, merged, n) = runs::plan(&old, bytes);
            let mut list = keep.to_vec();
            if let Some(run) = alert_runs::write(
                &tx,
                &rtx,
                n,
                merged,
                &index,
                self.first_alert_kept()?,
                &self.base_file,
                self.chunk_bytes,
            )? {
                list.push(run);
            }
            for r in merged {
                let name = alert_runs::table_name(r.n);
                tx.delete_table(alert_runs::ChunkTable::new(&name))
                    .map_err(|e| self.err(e))?;
            }
            runs::set_list(&tx, alert_runs::META_ALERT_RUNS, &list, &self.base_file)?;
            alert_runs = list.len();
            drop(rtx);
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            let next = generations
                .iter()
                .filter_map(|g| g.row)
                .max()
                .map_or(0, |r| r + 1)
                .max(meta_u64(&meta, META_JOURNAL_NEXT, &self.base_file)?);
            let through = generations
                .iter()
                .map(|g| g.last_alert)
                .max()
                .unwrap_or(0)
                .max(meta_u64(&meta, META_INDEXED, &self.base_file)?);
            meta.insert(META_JOURNAL_NEXT, next.to_be_bytes().as_slice())
                .map_err(|e| self.err(e))?;
            meta.insert(META_INDEXED, through.to_be_bytes().as_slice())
                .map_err(|e| self.err(e))?;
            next
        };
        let index_ms = index_started.elapsed().as_millis() as u64;
        let commit_started = std::time::Instant::now();
        tx.commit().map_err(|e| self.err(e))?;
        commit_ms = commit_started.elapsed().as_millis() as u64;
        {
            // Only now that the checkpoint is durable: the generations leave the overlay
            // (readers from here on read them in the checkpoint) and their journal rows go.
            let mut o = self.overlay.write().unwrap_or_else(|p| p.into_inner());
            let done = o
                .generations
                .iter()
                .zip(&generations)
                .take_while(|(a, b)| Arc::ptr_eq(a, b))
                .count();
            let (freed, memory) = o
                .generations
                .drain(..done)
                .fold((0, 0), |(n, b), g| (n + g.size(), b + g.memory));
            o.size = o.size.saturating_sub(freed);
            o.bytes = o.bytes.saturating_sub(memory);
            drop(o);
            self.checkpoints
                .journal_next
                .fetch_max(next, Ordering::AcqRel);
        }
        let seconds = started.elapsed().as_secs_f64();
        self.checkpoints
            .seconds
            .store(seconds.to_bits(), Ordering::Relaxed);
        tracing::debug!(file = %self.base_file.display(), run = n, entries, bytes = run_bytes,
            merged = merged.len(), runs = list.len(), alerts = indexed, alert_runs, cases_ms, index_ms, commit_ms,
            elapsed_ms = started.elapsed().as_millis() as u64, "store checkpoint");
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.finish_checkpoint() {
            tracing::error!(error = %e, "store checkpoint failed");
        }
    }
}

/// A batch's changed cases, encoded as its journal row is stored: their number, then for
/// each the topic, partition, case id and the case ([`encode_case`]), each length-prefixed
/// (all u32, little-endian; `u32::MAX` as the case's length: forgotten). The daemon's loop
/// encodes each case straight into the row, so a batch's cases cost no allocation each.
#[derive(Debug, Clone)]
pub struct CaseChanges {
    row: Vec<u8>,
    count: u32,
}

impl Default for CaseChanges {
    fn default() -> Self {
        CaseChanges {
            row: vec![0; 4],
            count: 0,
        }
    }
}

impl CaseChanges {
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The case as it is now, under its id.
    pub fn put(
        &mut self,
        topic: &str,
        partition: u32,
        case: &Case,
    ) -> Result<(), rmp_serde::encode::Error> {
        let entry = self.row.len();
        self.head(topic, partition, &case.id);
        let at = self.row.len();
        self.row.extend_from_slice(&[0; 4]);
        if let Err(e) = case_bytes::write_case(&mut self.row, case) {
            self.row.truncate(entry);
            return Err(e);
        }
        let len = (self.row.len() - at - 4) as u32;
        self.row[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.counted();
        Ok(())
    }

    /// How many bytes an entry adds to a row.
    fn entry_len(topic: &str, id: &str, value: Option<&[u8]>) -> usize {
        16 + topic.len() + id.len() + value.map_or(0, <[u8]>::len)
    }

    /// A case already encoded ([`encode_case`]).
    pub fn put_encoded(&mut self, topic: &str, partition: u32, id: &str, bytes: &[u8]) {
        self.head(topic, partition, id);
        self.field(bytes);
        self.counted();
    }

    /// A case the engine forgot.
    pub fn forget(&mut self, topic: &str, partition: u32, id: &str) {
        self.head(topic, partition, id);
        self.row.extend_from_slice(&u32::MAX.to_le_bytes());
        self.counted();
    }

    /// Empties it, keeping its room.
    pub fn clear(&mut self) {
        self.row.clear();
        self.row.extend_from_slice(&[0; 4]);
        self.count = 0;
    }

    /// The journal row.
    fn row(&self) -> &[u8] {
        &self.row
    }

    fn head(&mut self, topic: &str, partition: u32, id: &str) {
        self.field(topic.as_bytes());
        self.row.extend_from_slice(&partition.to_le_bytes());
        self.field(id.as_bytes());
    }

    /// A length-prefixed field. A topic, case id or case of 4 GiB cannot come through Kafka.
    fn field(&mut self, bytes: &[u8]) {
        self.row
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.row.extend_from_slice(bytes);
    }

    fn counted(&mut self) {
        self.count += 1;
        self.row[..4].copy_from_slice(&self.count.to_le_bytes());
    }
}

/// The entries of a journal row: topic, partition, case id, and where the case is in the row
/// (`None`: forgotten).
type JournalEntry<'a> = (&'a str, u32, &'a str, Option<std::ops::Range<usize>>);

/// A journal row's entries, their topics and ids checked to be UTF-8, in the row's order;
/// an error names what is wrong with the row.
fn decode_journal(row: &[u8]) -> Result<Vec<JournalEntry<'_>>, String> {
    let mut at = 0usize;
    let count = u32_at(row, &mut at)?;
    let mut out = Vec::with_capacity((count as usize).min(row.len() / 16));
    for _ in 0..count {
        let e = raw_entry(row, &mut at)?;
        out.push((
            str_of(row, e.topic)?,
            e.partition,
            str_of(row, e.id)?,
            e.value,
        ));
    }
    if at != row.len() {
        return Err(format!(
            "journal row has {} bytes after its {count} cases",
            row.len() - at
        ));
    }
    Ok(out)
}

/// One entry of a [`CaseChanges`] row (a journal row or a chunk of a checkpoint's run): where
/// its parts are in the row.
struct RawEntry {
    topic: std::ops::Range<usize>,
    partition: u32,
    id: std::ops::Range<usize>,
    /// `None`: forgotten.
    value: Option<std::ops::Range<usize>>,
}

/// Reads the entry at `*at` of `row` and moves `*at` past it.
fn raw_entry(row: &[u8], at: &mut usize) -> Result<RawEntry, String> {
    let len = u32_at(row, at)?;
    let topic = bytes_at(row, at, len)?;
    let partition = u32_at(row, at)?;
    let len = u32_at(row, at)?;
    let id = bytes_at(row, at, len)?;
    let value = match u32_at(row, at)? {
        u32::MAX => None,
        len => Some(bytes_at(row, at, len)?),
    };
    Ok(RawEntry {
        topic,
        partition,
        id,
        value,
    })
}

fn u32_at(row: &[u8], at: &mut usize) -> Result<u32, String> {
    let b = row
        .get(*at..*at + 4)
        .ok_or_else(|| format!("row cut short at byte {at}"))?;
    *at += 4;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn bytes_at(row: &[u8], at: &mut usize, len: u32) -> Result<std::ops::Range<usize>, String> {
    let r = *at..*at + len as usize;
    if r.end > row.len() {
        return Err(format!("row cut short at byte {at}"));
    }
    *at = r.end;
    Ok(r)
}

fn str_of(row: &[u8], r: std::ops::Range<usize>) -> Result<&str, String> {
    let start = r.start;
    std::str::from_utf8(&row[r]).map_err(|e| format!("row byte {start}: {e}"))
}

#[derive(Default)]
struct Overlay {
    generations: Vec<Arc<Generation>>,
    size: usize,
    /// About the bytes its generations hold ([`Generation::measure`]).
    bytes: usize,
    /// The next journal row's number: numbers are never reused, since the checkpoint
    /// records up to which one it holds.
    next_row: u64,
}

/// An alert's case, read from its JSON (up to format 4) without the rest.
#[derive(serde::Deserialize)]
struct AlertCase<'a> {
    #[serde(borrow)]
    case: std::borrow::Cow<'a, str>,
}

/// A stored alert's case ([`StoredAlert`]'s fifth field), read without the rest.
#[derive(serde::Deserialize)]
struct StoredAlertCase<'a>(
    serde::de::IgnoredAny,
    serde::de::IgnoredAny,
    serde::de::IgnoredAny,
    serde::de::IgnoredAny,
    &'a str,
    serde::de::IgnoredAny,
    serde::de::IgnoredAny,
    serde::de::IgnoredAny,
    serde::de::IgnoredAny,
    serde::de::IgnoredAny,
    serde::de::IgnoredAny,
    serde::de::IgnoredAny,
    serde::de::IgnoredAny,
    serde::de::IgnoredAny,
);

/// The suffix of a store file being created, before the process's id.
const CREATING: &str = ".creating-";

/// Creates the store file `file` whole, if it does not exist: in a file of its own
/// (`<name>.creating-<pid>`), synced, then linked to its name, so the name never stands for
/// a file half created. redb writes a new file's header, with its magic number, last; a
/// process killed before that (`kill -9`, a power cut in the first milliseconds of a first
/// start) left a file redb refuses, "not a redb database", and every later start refused
/// the store as corrupt. A hard link cannot replace a file another process created in the
/// meantime (then that one is used, and redb's lock decides); where the file system has
/// no hard links, the file is renamed.
fn create_whole(file: &Path) -> Result<(), StoreError> {
    if file.exists() {
        return Ok(());
    }
    let io = |message: String| StoreError::Io {
        file: file.to_path_buf(),
        message,
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fresh = file.with_file_name(format!("{name}{CREATING}{}", std::process::id()));
    let _ = std::fs::remove_file(&fresh);
    let db = redb::Builder::new()
        .create(&fresh)
        .map_err(|e| io(format!("creating {}: {e}", fresh.display())))?;
    drop(db);
    sync_path(&fresh).map_err(|e| io(format!("syncing {}: {e}", fresh.display())))?;
    match std::fs::hard_link(&fresh, file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => std::fs::rename(&fresh, file)
            .map_err(|e| io(format!("renaming {} to it: {e}", fresh.display())))?,
    }
    let _ = std::fs::remove_file(&fresh);
    if let Some(dir) = file.parent() {
        sync_path(dir).map_err(|e| io(format!("syncing the directory {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Removes the files of creations killed half-way ([`create_whole`]) from `dir`.
fn remove_unfinished(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if [FILE_NAME, BASE_FILE_NAME]
            .iter()
            .any(|f| name.starts_with(&format!("{f}{CREATING}")))
        {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %entry.path().display(),
                    "removed a store file whose creation was cut short"),
                Err(e) => tracing::warn!(file = %entry.path().display(), error = %e,
                    "could not remove a store file whose creation was cut short"),
            }
        }
    }
}

/// `(topic, partition, next offset)` of every partition in a read transaction of the
/// batches' file `file`.
fn offsets_in(
    tx: &redb::ReadTransaction,
    file: &Path,
) -> Result<Vec<(String, u32, u64)>, StoreError> {
    let t = tx.open_table(OFFSETS).map_err(|e| file_err(file, e))?;
    let mut out = Vec::new();
    for row in t.iter().map_err(|e| file_err(file, e))? {
        let (k, v) = row.map_err(|e| file_err(file, e))?;
        let (topic, partition) = k.value();
        out.push((topic.to_string(), partition, v.value()));
    }
    Ok(out)
}

/// Waits until what was written to `path` (a file, or a directory's entries) is on disk.
pub(crate) fn sync_path(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// The bytes an unprivileged process may still write on the file system holding `path`
/// (`statvfs`: available blocks times the fragment size).
pub fn disk_free(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `statvfs` is plain data; the call only writes into it, and `c` is a valid
    // NUL-terminated path for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

impl Store {
    /// The store's two files: the batches' (alerts, journal, offsets, outbox) and the
    /// checkpoints'.
    pub fn files(&self) -> [&Path; 2] {
        [&self.file, &self.base_file]
    }

    /// Opens (or creates) the store in `dir`, with the default page cache.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(dir, DEFAULT_CACHE_MIB)
    }

    /// Opens (or creates) the store in `dir` with a page cache of `cache_mib` MiB (each of
    /// its two files).
    pub fn open_with_cache(dir: &Path, cache_mib: usize) -> Result<Store, StoreError> {
        // Past the files' opening (below), redb may still panic on a damaged page while the
        // store's tables are read and checked: the same error, naming the directory.
        std::panic::catch_unwind(|| Store::open_unguarded(dir, cache_mib)).unwrap_or_else(|panic| {
            Err(StoreError::Corrupt {
                file: dir.to_path_buf(),
                message: format!(
                    "{FILE_NAME} or {BASE_FILE_NAME} has a damaged page: the store library \
                     stopped reading it ({})",
                    panic_text(panic.as_ref())
                ),
            })
        })
    }

    fn open_unguarded(dir: &Path, cache_mib: usize) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let open = |file: &Path| {
            create_whole(file)?;
            // redb panics on some damaged pages (an `unreachable!` in its b-tree while it
            // reads the allocator state of a file not closed cleanly) instead of returning
            // an error: taken as the error it is, naming the file, never a crash.
            let created = std::panic::catch_unwind(|| {
                redb::Builder::new()
                    .set_cache_size(cache_mib.saturating_mul(1 << 20))
                    .create(file)
            })
            .map_err(|panic| StoreError::Corrupt {
                file: file.to_path_buf(),
                message: format!(
                    "a damaged page: the store library stopped reading it ({})",
                    panic_text(panic.as_ref())
                ),
            })?;
            match created {
                Ok(db) => Ok(Arc::new(db)),
                Err(DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::Locked {
                    file: file.to_path_buf(),
                }),
                Err(e) => Err(StoreError::Corrupt {
                    file: file.to_path_buf(),
                    message: e.to_string(),
                }),
            }
        };
        let file = dir.join(FILE_NAME);
        let base_file = dir.join(BASE_FILE_NAME);
        let db = open(&file)?;
        let base = open(&base_file)?;
        // Both files are ours now (redb locks them): what a creation killed half-way left
        // is no one's.
        remove_unfinished(dir);
        let store = Store {
            db,
            file,
            base,
            base_file,
            hook: RwLock::new(None),
            overlay: Arc::new(RwLock::new(Overlay::default())),
            checkpoint_every: AtomicUsize::new(DEFAULT_CHECKPOINT_CASES),
            checkpoints: Arc::new(Checkpoints {
                seconds: AtomicU64::new(u64::MAX),
                journal_next: AtomicU64::new(0),
                error: Mutex::new(None),
            }),
            running: Mutex::new(None),
            truncated_below: AtomicU64::new(0),
            truncate_rows: AtomicUsize::new(TRUNCATE_ROWS),
            chunk_bytes: AtomicUsize::new(runs::CHUNK_BYTES),
            step_bytes: AtomicUsize::new((cache_mib.saturating_mul(1 << 20) / 4).max(1 << 20)),
            scratch: Mutex::new(WriterScratch::default()),
            dead_letters_written: tokio::sync::Notify::new(),
            alerts_keep_days: AtomicU32::new(0),
            alert_day_seen: AtomicI64::new(i64::MIN),
            alerts_pruned: AtomicU64::new(0),
            clock_ms: AtomicI64::new(0),
        };
        store.check_schema()?;
        store.load_overlay()?;
        Ok(store)
    }

    /// Sets how many overlay entries trigger a checkpoint (at least 1).
    pub fn set_checkpoint_cases(&self, n: usize) {
        self.checkpoint_every.store(n.max(1), Ordering::Relaxed);
    }

    /// Deletes the alerts committed more than `days` days ago from the alert log (`alerts`;
    /// 0, the default, keeps every alert). Counted in whole days of the wall clock (UTC) by
    /// the day each batch was committed (`alert_days`); the batches that follow delete them,
    /// [`PRUNE_ALERT_ROWS`] rows at a time, oldest first. The newest row always stays (the
    /// next sequence number follows it), and alerts stored before the store kept days count
    /// as of the first day it marked. The API, a case's page and `/api/v1/alerts` then
    /// show what is left; deliveries (the outbox holds its own copy), the scorecard's
    /// records (`ledger`) and the cases' state are untouched. The alert index by case leaves
    /// the deleted alerts out as its runs merge; readers skip those it still holds.
    pub fn set_alerts_keep_days(&self, days: u32) {
        self.alerts_keep_days.store(days, Ordering::Relaxed);
    }

    /// The days alerts are kept ([`Store::set_alerts_keep_days`]; 0: all).
    pub fn alerts_keep_days(&self) -> u32 {
        self.alerts_keep_days.load(Ordering::Relaxed)
    }

    /// Fixes the wall clock the batches read (ms since 1970; tests).
    #[cfg(test)]
    fn set_clock_ms(&self, ms: i64) {
        self.clock_ms.store(ms, Ordering::Relaxed);
    }

    fn now_ms(&self) -> i64 {
        match self.clock_ms.load(Ordering::Relaxed) {
            0 => crate::clock::wall_ms(),
            ms => ms,
        }
    }

    /// Marks `today`'s first alert (`first`) unless a day as late is marked, and deletes
    /// up to [`PRUNE_ALERT_ROWS`] of the oldest alert rows committed before `keep_from`
    /// (a day; `None`: all alerts kept). Returns the rows deleted and whether the
    /// deletion is done (no older row is left).
    fn mark_and_prune_alerts(
        &self,
        alerts: &mut redb::Table<'_, u64, &'static [u8]>,
        days: &mut redb::Table<'_, i64, u64>,
        mark: Option<(i64, u64)>,
        keep_from: Option<i64>,
    ) -> Result<(usize, bool), StoreError> {
        if let Some((today, first)) = mark {
            let last_day = days
                .last()
                .map_err(|e| self.err(e))?
                .map(|(d, _)| d.value());
            if last_day.is_none_or(|d| d < today) {
                days.insert(today, first).map_err(|e| self.err(e))?;
            }
        }
        let Some(keep_from) = keep_from else {
            return Ok((0, true));
        };
        // Alerts below the first mark were stored before marks were kept, or their day's
        // mark went with the rows before them: they count as of the first mark's day.
        match days.first().map_err(|e| self.err(e))? {
            Some((d, _)) if d.value() < keep_from => {}
            _ => return Ok((0, true)),
        }
        // The first alert committed on or after `keep_from`; none: every alert is older.
        let young = match days.range(keep_from..).map_err(|e| self.err(e))?.next() {
            Some(row) => row.map_err(|e| self.err(e))?.1.value(),
            None => u64::MAX,
        };
        // The row holding it stays (a row's key is its first alert's: a mark is a batch's
        // first alert, so that row holds none older), and so does the newest row.
        let keep_key = match self.row_holding(alerts, young)? {
            Some((k, _)) => k.value(),
            None => 0,
        };
        let mut keys = Vec::with_capacity(PRUNE_ALERT_ROWS);
        for row in alerts
            .range(..keep_key)
            .map_err(|e| self.err(e))?
            .take(PRUNE_ALERT_ROWS)
        {
            keys.push(row.map_err(|e| self.err(e))?.0.value());
        }
        if let (Some(&first), Some(&last)) = (keys.first(), keys.last()) {
            alerts
                .retain_in(first..=last, |_, _| false)
                .map_err(|e| self.err(e))?;
        }
        let done = keys.len() < PRUNE_ALERT_ROWS;
        if done {
            // Their rows gone, the marks before `keep_from` have served.
            days.retain_in(..keep_from, |_, _| false)
                .map_err(|e| self.err(e))?;
        }
        Ok((keys.len(), done))
    }

    /// Sets the size at which the chunks of the checkpoint's runs are cut (tests cut them
    /// small, to meet chunk boundaries with a few cases).
    #[cfg(test)]
    fn set_chunk_bytes(&self, n: usize) {
        self.chunk_bytes.store(n.max(1), Ordering::Relaxed);
    }

    /// Sets the journal rows a batch deletes at most (tests: a few).
    #[cfg(test)]
    fn set_truncate_rows(&self, n: usize) {
        self.truncate_rows.store(n.max(1), Ordering::Relaxed);
    }

    /// Sets the bytes of a checkpoint's run committed in one step (tests: many steps).
    #[cfg(test)]
    fn set_step_bytes(&self, n: usize) {
        self.step_bytes.store(n.max(1), Ordering::Relaxed);
    }

    /// The checkpoint's runs, oldest first.
    #[cfg(test)]
    fn runs(&self) -> Vec<runs::RunInfo> {
        let tx = self.base.begin_read().expect("read");
        let meta = tx.open_table(META).expect("meta");
        runs::runs(&meta, &self.base_file).expect("runs")
    }

    /// The alert index's runs, oldest first.
    #[cfg(test)]
    fn alert_runs(&self) -> Vec<runs::RunInfo> {
        let tx = self.base.begin_read().expect("read");
        let meta = tx.open_table(META).expect("meta");
        runs::list(&meta, alert_runs::META_ALERT_RUNS, &self.base_file).expect("alert runs")
    }

    /// How many overlay entries there are now (changed cases and unindexed alerts).
    pub fn overlay_size(&self) -> usize {
        self.overlay_read().size
    }

    /// About the bytes of memory the journal's entries take ([`Store::overlay_size`]).
    pub fn overlay_bytes(&self) -> usize {
        self.overlay_read().bytes
    }

    /// How long the checkpoint since the last call took, if there was one (for the metrics).
    pub fn take_checkpoint_seconds(&self) -> Option<f64> {
        let bits = self.checkpoints.seconds.swap(u64::MAX, Ordering::Relaxed);
        (bits != u64::MAX).then(|| f64::from_bits(bits))
    }

    fn overlay_read(&self) -> std::sync::RwLockReadGuard<'_, Overlay> {
        self.overlay.read().unwrap_or_else(|p| p.into_inner())
    }

    fn overlay_write(&self) -> std::sync::RwLockWriteGuard<'_, Overlay> {
        self.overlay.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Read transactions on both files and the overlay of the state they see. Under the
    /// overlay's lock, the generations first: a checkpoint commits before it drops the
    /// generations it wrote, so a reader gets them, or the checkpoint that holds them, or
    /// both (the same cases twice, the overlay's copy read), never neither.
    fn read(&self) -> Result<Snapshot, StoreError> {
        let overlay = self.overlay_read();
        let generations = overlay.generations.clone();
        let base = self.base.begin_read().map_err(|e| self.base_err(e))?;
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        Ok(Snapshot {
            tx,
            base,
            generations,
        })
    }

    /// Rebuilds the overlay from the journal rows the checkpoint does not hold and the
    /// alerts the alert index does not cover.
    fn load_overlay(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let base = self.base.begin_read().map_err(|e| self.base_err(e))?;
        let base_meta = base.open_table(META).map_err(|e| self.base_err(e))?;
        let journal_next = meta_u64(&base_meta, META_JOURNAL_NEXT, &self.base_file)?;
        let through = meta_u64(&base_meta, META_INDEXED, &self.base_file)?;
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut generations = Vec::new();
        let journal = tx.open_table(JOURNAL).map_err(|e| self.err(e))?;
        let mut next_row = journal_next;
        let mut unpacked = Vec::new();
        let mut scratch = PieceScratch::default();
        // The generation being read: the rows after it join it while their keys follow.
        let mut current: Option<Generation> = None;
        for row in journal.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let n = k.value();
            next_row = next_row.max(n + 1);
            if n < journal_next {
                // In the checkpoint already: a crash came before the batch that deletes it.
                continue;
            }
            let corrupt = |message: String| StoreError::Corrupt {
                file: self.file.clone(),
                message: format!("case journal row {n}: {message}"),
            };
            let mut g =
                Generation::of_stored(v.value(), &mut unpacked, &mut scratch).map_err(corrupt)?;
            g.row = Some(n);
            read_back(&mut generations, &mut current, Some(g));
        }
        read_back(&mut generations, &mut current, None);
        // The alerts since the checkpoint, in a generation of their own.
        let mut g = Generation::default();
        let alerts = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
        self.visit_alerts(&alerts, through.saturating_add(1), |seq, bytes| {
            let of = self.alert_case(seq, bytes)?;
            g.alerts
                .entry(Arc::from(of.case.as_ref()))
                .or_default()
                .push(seq);
            g.alert_count += 1;
            g.last_alert = seq;
            Ok(true)
        })?;
        g.memory = g.measure();
        generations.push(Arc::new(g));
        generations.retain(|g| g.size() > 0);
        let size = generations.iter().map(|g| g.size()).sum();
        let bytes = generations.iter().map(|g| g.memory).sum();
        if size > 0 {
            tracing::info!(file = %self.file.display(), batches = generations.len(), entries = size,
                elapsed_ms = started.elapsed().as_millis() as u64, "store journal read");
        }
        // Rows a crash left below it are deleted with the next batch.
        self.checkpoints
            .journal_next
            .store(journal_next, Ordering::Relaxed);
        let mut o = self.overlay_write();
        o.size = size;
        o.bytes = bytes;
        o.generations = generations;
        o.next_row = next_row;
        Ok(())
    }

    /// Stored alert `seq` ([`decode_alert`]); what does not read is named with the file.
    fn read_alert(&self, seq: u64, bytes: &[u8]) -> Result<Alert, StoreError> {
        decode_alert(bytes).map_err(|e| self.corrupt_alert(seq, e))
    }

    fn corrupt_alert(&self, seq: u64, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            file: self.file.clone(),
            message: format!("alert {seq}: {e}"),
        }
    }

    /// The alerts of the row stored under `key`.
    fn row_alerts<'a>(
        &self,
        key: u64,
        row: &'a [u8],
        unpacked: &'a mut Vec<u8>,
    ) -> Result<RowAlerts<'a>, StoreError> {
        let row = if runs::is_packed(row) {
            runs::unpack_into(row, unpacked).map_err(|e| self.corrupt_alert(key, e))?;
            unpacked.as_slice()
        } else {
            row
        };
        RowAlerts::of(key, row).map_err(|e| self.corrupt_alert(key, e))
    }

    /// The last alert's sequence number (0: none).
    fn last_alert(&self, t: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64, StoreError> {
        match t.last().map_err(|e| self.err(e))? {
            Some((k, v)) => {
                let mut unpacked = Vec::new();
                let row = self.row_alerts(k.value(), v.value(), &mut unpacked)?;
                // Saturating: a damaged row (an empty one under key 0) must not panic.
                Ok(k.value().saturating_add(row.remaining()).saturating_sub(1))
            }
            None => Ok(0),
        }
    }

    /// The row holding alert `seq` if the store has it: the last row keyed at or before it
    /// (a group's key is its first alert's).
    fn row_holding<'t>(
        &self,
        t: &'t impl ReadableTable<u64, &'static [u8]>,
        seq: u64,
    ) -> Result<Option<AlertRow<'t>>, StoreError> {
        t.range(..=seq)
            .map_err(|e| self.err(e))?
            .next_back()
            .transpose()
            .map_err(|e| self.err(e))
    }

    /// Visits the alerts with a sequence number of at least `from`, in order, as stored,
    /// until `visit` returns false: from the row holding `from` (a group's key is its first
    /// alert's).
    fn visit_alerts(
        &self,
        t: &impl ReadableTable<u64, &'static [u8]>,
        from: u64,
        mut visit: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let start = self.row_holding(t, from)?.map_or(from, |(k, _)| k.value());
        let mut unpacked = Vec::new();
        for row in t.range(start..).map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            for (seq, bytes) in self.row_alerts(k.value(), v.value(), &mut unpacked)? {
                if seq >= from && !visit(seq, bytes)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The stored bytes of alert `seq`, decoded by `read`, if the store has it.
    fn get_alert<T>(
        &self,
        t: &impl ReadableTable<u64, &'static [u8]>,
        seq: u64,
        read: impl FnOnce(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let Some((k, v)) = self.row_holding(t, seq)? else {
            return Ok(None);
        };
        match self
            .row_alerts(k.value(), v.value(), &mut Vec::new())?
            .find(|(s, _)| *s == seq)
        {
            Some((_, bytes)) => read(bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The case of stored alert `seq`.
    fn alert_case<'a>(&self, seq: u64, bytes: &'a [u8]) -> Result<AlertCase<'a>, StoreError> {
        if alert_is_json(bytes) {
            return serde_json::from_slice(bytes).map_err(|e| self.corrupt_alert(seq, e));
        }
        let stored: StoredAlertCase<'a> =
            rmp_serde::from_slice(bytes).map_err(|e| self.corrupt_alert(seq, e))?;
        Ok(AlertCase {
            case: std::borrow::Cow::Borrowed(stored.4),
        })
    }

    /// Asks the operating system to read the store file in `dir` (if there is one) into its
    /// page cache, front to back, in the background: Linux `posix_fadvise(WILLNEED)` over the
    /// whole file; elsewhere nothing. Called before [`Store::open`], since both the open
    /// after a crash (redb's repair) and the start-up restore read the whole file, and read
    /// it in key order, which copy-on-write updates have scattered over the file: on a cold
    /// page cache (after a reboot, or once the kernel has reclaimed the file) those random
    /// reads took 50 s for a million cases on a disk that reads the same file in 3 s.
    pub fn prefetch(dir: &Path) {
        #[cfg(target_os = "linux")]
        {
            // The checkpoint first: the restore reads all of it, and of the other file
            // only the journal.
            let files = [dir.join(BASE_FILE_NAME), dir.join(FILE_NAME)];
            let spawned = std::thread::Builder::new()
                .name("store-prefetch".into())
                .spawn(move || {
                    for file in files {
                        prefetch_file(&file);
                    }
                });
            if let Err(e) = spawned {
                tracing::debug!(error = %e, "store prefetch thread not started");
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = dir;
    }

    /// Attaches a hook that writes more rows in the transaction of every batch with alerts
    /// (the delivery outbox: an alert is never durable without its deliveries).
    pub fn set_commit_hook(&self, hook: std::sync::Arc<dyn CommitHook>) {
        if let Ok(mut h) = self.hook.write() {
            *h = Some(hook);
        }
    }

    pub fn clear_commit_hook(&self) {
        if let Ok(mut h) = self.hook.write() {
            *h = None;
        }
    }

    /// The database, for modules that keep tables of their own in it (`src/delivery.rs`).
    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        file_err(&self.file, e)
    }

    fn base_err(&self, e: impl std::fmt::Display) -> StoreError {
        file_err(&self.base_file, e)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let base_schema = self.base_schema()?;
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let found = {
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            let mut found = meta
                .get("schema")
                .map_err(|e| self.err(e))?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            if let Some(from) = found.clone().filter(|f| {
                f == SCHEMA_JSON_ALERTS
                    || f == SCHEMA_ALERT_ROWS
                    || f == SCHEMA_UNPACKED
                    || f == SCHEMA_NO_DEAD_LETTERS
                    || f == SCHEMA_ONE_COUNT
            }) {
                // Formats 4 to 8 are format 9 with one count of retractions per clock,
                // formats 4 to 7 without dead letters kept, formats 4 to 6 with rows not
                // packed, and formats 4 and 5 with an alert per row (in JSON in format 4):
                // all stay readable.
                meta.insert("schema", SCHEMA_VERSION.as_bytes())
                    .map_err(|e| self.err(e))?;
                tracing::info!(file = %self.file.display(), from = %from, to = SCHEMA_VERSION,
                    "store format upgraded: its rows stay as they are; new ones are packed, \
                     new alerts stored in groups, refused messages kept until the \
                     dead-letter topic has them, each light's retractions counted apart");
                found = Some(SCHEMA_VERSION.to_string());
            }
            let upgrade = match found.as_deref() {
                Some(SCHEMA_VERSION) | Some(SCHEMA_ONE_FILE) => false,
                Some(SCHEMA_JSON_CASES) => {
                    self.convert_json_cases(&tx)?;
                    true
                }
                Some(SCHEMA_NO_JOURNAL) => true,
                Some(v) => {
                    return Err(StoreError::Incompatible {
                        file: self.file.clone(),
                        found: v.to_string(),
                        expected: SCHEMA_VERSION,
                    });
                }
                None => {
                    meta.insert("schema", SCHEMA_VERSION.as_bytes())
                        .map_err(|e| self.err(e))?;
                    false
                }
            };
            if upgrade {
                // Formats 1 and 2 indexed every alert in `case_alerts` (or none, in a store
                // written before the index existed): a checkpoint through the last alert,
                // in format 3's layout, moved to the checkpoints' file below.
                let through = self.index_case_alerts(&tx)?;
                meta.insert(META_INDEXED, through.to_be_bytes().as_slice())
                    .map_err(|e| self.err(e))?;
                meta.insert("schema", SCHEMA_ONE_FILE.as_bytes())
                    .map_err(|e| self.err(e))?;
            }
            tx.open_table(JOURNAL).map_err(|e| self.err(e))?;
            tx.open_table(OFFSETS).map_err(|e| self.err(e))?;
            tx.open_table(CLOCKS).map_err(|e| self.err(e))?;
            tx.open_table(ALERTS).map_err(|e| self.err(e))?;
            tx.open_table(LEDGER).map_err(|e| self.err(e))?;
            tx.open_table(DEAD_LETTERS).map_err(|e| self.err(e))?;
            if upgrade {
                Some(SCHEMA_ONE_FILE.to_string())
            } else {
                found
            }
        };
        match found.as_deref() {
            Some(SCHEMA_VERSION) => {
                tx.commit().map_err(|e| self.err(e))?;
                if base_schema.is_none() {
                    return Err(StoreError::Corrupt {
                        file: self.base_file.clone(),
                        message: format!(
                            "missing or empty, but {} is format {SCHEMA_VERSION}, which keeps \
                             its checkpoint of the cases in this file",
                            self.file.display()
                        ),
                    });
                }
                match base_schema.as_deref() {
                    Some(BASE_SCHEMA_ONE_TABLE) => self.convert_base_one_table()?,
                    Some(
                        from @ (BASE_SCHEMA_ONE_INDEX
                        | BASE_SCHEMA_UNPACKED
                        | BASE_SCHEMA_ONE_COUNT),
                    ) => self.mark_base(from)?,
                    _ => {}
                }
                Ok(())
            }
            None => {
                // A new store: the checkpoints' file first, so that a crash in between
                // leaves a new store again.
                if base_schema.is_some() && !self.base_is_empty()? {
                    return Err(StoreError::Corrupt {
                        file: self.file.clone(),
                        message: format!(
                            "missing or empty, but {} beside it holds a checkpoint of cases: \
                             restore both files or remove both",
                            self.base_file.display()
                        ),
                    });
                }
                self.init_base()?;
                tx.commit().map_err(|e| self.err(e))
            }
            _ => {
                // Format 3 (or an older one just brought to it).
                tx.commit().map_err(|e| self.err(e))?;
                self.move_to_base()
            }
        }
    }

    /// The checkpoints' file's format, if it has one; another format is refused.
    fn base_schema(&self) -> Result<Option<String>, StoreError> {
        let tx = self.base.begin_read().map_err(|e| self.base_err(e))?;
        let meta = match tx.open_table(META) {
            Ok(m) => m,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.base_err(e)),
        };
        let found = meta
            .get("schema")
            .map_err(|e| self.base_err(e))?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned());
        match found {
            Some(v)
                if v != BASE_SCHEMA_VERSION
                    && v != BASE_SCHEMA_UNPACKED
                    && v != BASE_SCHEMA_ONE_COUNT
                    && v != BASE_SCHEMA_ONE_INDEX
                    && v != BASE_SCHEMA_ONE_TABLE =>
            {
                Err(StoreError::Incompatible {
                    file: self.base_file.clone(),
                    found: v,
                    expected: BASE_SCHEMA_VERSION,
                })
            }
            found => Ok(found),
        }
    }

    fn base_is_empty(&self) -> Result<bool, StoreError> {
        let tx = self.base.begin_read().map_err(|e| self.base_err(e))?;
        let meta = tx.open_table(META).map_err(|e| self.base_err(e))?;
        let next = meta_u64(&meta, META_JOURNAL_NEXT, &self.base_file)?;
        let empty = match tx.open_table(CASES) {
            Ok(t) => t.is_empty().map_err(|e| self.base_err(e))?,
            Err(redb::TableError::TableDoesNotExist(_)) => true,
            Err(e) => return Err(self.base_err(e)),
        };
        Ok(empty && next == 0 && runs::runs(&meta, &self.base_file)?.is_empty())
    }

    /// Makes the checkpoints' file an empty checkpoint.
    fn init_base(&self) -> Result<(), StoreError> {
        let tx = self.base.begin_write().map_err(|e| self.base_err(e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| self.base_err(e))?;
            meta.insert("schema", BASE_SCHEMA_VERSION.as_bytes())
                .map_err(|e| self.base_err(e))?;
            meta.insert(META_JOURNAL_NEXT, 0u64.to_be_bytes().as_slice())
                .map_err(|e| self.base_err(e))?;
            meta.insert(META_INDEXED, 0u64.to_be_bytes().as_slice())
                .map_err(|e| self.base_err(e))?;
            tx.open_table(CASE_ALERTS).map_err(|e| self.base_err(e))?;
        }
        runs::set_runs(&tx, &[], &self.base_file)?;
        tx.commit().map_err(|e| self.base_err(e))
    }

    /// Writes `rows` (a table of cases, a row each, in key order) as the checkpoints'
    /// only run, in place of the runs it had (a move or conversion done again after a
    /// crash); `tx` then holds no `cases` table.
    fn write_only_run(
        &self,
        tx: &redb::WriteTransaction,
        rows: &impl ReadableTable<(&'static str, u32, &'static str), &'static [u8]>,
        file: &Path,
    ) -> Result<u64, StoreError> {
        let old = {
            let meta = tx.open_table(META).map_err(|e| self.base_err(e))?;
            runs::runs(&meta, &self.base_file)?
        };
        for r in &old {
            let name = runs::table_name(r.n);
            tx.delete_table(runs::ChunkTable::new(&name))
                .map_err(|e| self.base_err(e))?;
        }
        tx.delete_table(CASES).map_err(|e| self.base_err(e))?;
        let name = runs::table_name(1);
        let table = tx
            .open_table(runs::ChunkTable::new(&name))
            .map_err(|e| self.base_err(e))?;
        let sink = runs::TableSink {
            table,
            file: &self.base_file,
        };
        let mut w = RunWriter::new(sink, self.chunk_bytes.load(Ordering::Relaxed));
        for row in rows.iter().map_err(|e| file_err(file, e))? {
            let (k, v) = row.map_err(|e| file_err(file, e))?;
            w.push(k.value(), Some(v.value()))?;
        }
        let (sink, bytes, entries) = w.finish()?;
        drop(sink);
        let list = if entries > 0 {
            vec![runs::RunInfo {
                n: 1,
                bytes,
                entries,
            }]
        } else {
            tx.delete_table(runs::ChunkTable::new(&name))
                .map_err(|e| self.base_err(e))?;
            Vec::new()
        };
        runs::set_runs(tx, &list, &self.base_file)?;
        Ok(entries)
    }

    /// Marks a checkpoints' file of format 2 or 3 as the current format: what it holds is
    /// read as it is (format 2's `case_alerts` as the oldest part of the alert index,
    /// format 3's chunks not packed); checkpoints from now on add packed runs.
    fn mark_base(&self, from: &str) -> Result<(), StoreError> {
        let tx = self.base.begin_write().map_err(|e| self.base_err(e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| self.base_err(e))?;
            meta.insert("schema", BASE_SCHEMA_VERSION.as_bytes())
                .map_err(|e| self.base_err(e))?;
        }
        tx.commit().map_err(|e| self.base_err(e))?;
        tracing::info!(file = %self.base_file.display(), from = %from,
            to = BASE_SCHEMA_VERSION, "store checkpoint format upgraded: what it holds is read as it is");
        Ok(())
    }

    /// Converts the checkpoints' file from its first format (a row per case in `cases`) to
    /// runs, in one transaction: a crash leaves it as it was.
    fn convert_base_one_table(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let rtx = self.base.begin_read().map_err(|e| self.base_err(e))?;
        let tx = self.base.begin_write().map_err(|e| self.base_err(e))?;
        let n = match rtx.open_table(CASES) {
            Ok(cases) => self.write_only_run(&tx, &cases, &self.base_file)?,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                runs::set_runs(&tx, &[], &self.base_file)?;
                0
            }
            Err(e) => return Err(self.base_err(e)),
        };
        {
            let mut meta = tx.open_table(META).map_err(|e| self.base_err(e))?;
            meta.insert("schema", BASE_SCHEMA_VERSION.as_bytes())
                .map_err(|e| self.base_err(e))?;
        }
        tx.commit().map_err(|e| self.base_err(e))?;
        tracing::info!(file = %self.base_file.display(), cases = n,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store checkpoint converted from format {BASE_SCHEMA_ONE_TABLE} to {BASE_SCHEMA_VERSION}");
        Ok(())
    }

    /// Moves a format-3 store's checkpoint (`cases`, `case_alerts` and the alert it covers)
    /// to the checkpoints' file, then marks the store with the current format. A crash in
    /// between leaves format 3, and the move is done again.
    fn move_to_base(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let rtx = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = rtx.open_table(META).map_err(|e| self.err(e))?;
        let through = meta_u64(&meta, META_INDEXED, &self.file)?;
        let cases = rtx.open_table(CASES).map_err(|e| self.err(e))?;
        let index = rtx.open_table(CASE_ALERTS).map_err(|e| self.err(e))?;
        let tx = self.base.begin_write().map_err(|e| self.base_err(e))?;
        let n;
        {
            tx.delete_table(CASE_ALERTS).map_err(|e| self.base_err(e))?;
            n = self.write_only_run(&tx, &cases, &self.file)?;
            let mut to = tx.open_table(CASE_ALERTS).map_err(|e| self.base_err(e))?;
            for row in index.iter().map_err(|e| self.err(e))? {
                let (k, _) = row.map_err(|e| self.err(e))?;
                to.insert(k.value(), ()).map_err(|e| self.base_err(e))?;
            }
            let mut meta = tx.open_table(META).map_err(|e| self.base_err(e))?;
            meta.insert("schema", BASE_SCHEMA_VERSION.as_bytes())
                .map_err(|e| self.base_err(e))?;
            // Format 3 numbered the journal from 0 after each checkpoint: every row is
            // after this one.
            meta.insert(META_JOURNAL_NEXT, 0u64.to_be_bytes().as_slice())
                .map_err(|e| self.base_err(e))?;
            meta.insert(META_INDEXED, through.to_be_bytes().as_slice())
                .map_err(|e| self.base_err(e))?;
        }
        tx.commit().map_err(|e| self.base_err(e))?;
        drop((cases, index, meta, rtx));
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            tx.delete_table(CASES).map_err(|e| self.err(e))?;
            tx.delete_table(CASE_ALERTS).map_err(|e| self.err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            meta.remove(META_INDEXED).map_err(|e| self.err(e))?;
            meta.insert("schema", SCHEMA_VERSION.as_bytes())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        tracing::info!(file = %self.file.display(), to = %self.base_file.display(), cases = n,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store converted from format 3: the checkpoint moved to a file of its own");
        Ok(())
    }

    /// Rewrites every case of a format-1 store (JSON) as [`encode_case`] does, in the
    /// transaction that records the new format: a crash leaves the store as it was.
    fn convert_json_cases(&self, tx: &redb::WriteTransaction) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let mut cases = tx.open_table(CASES).map_err(|e| self.err(e))?;
        let mut n = 0usize;
        let mut rows: Vec<((String, u32, String), Vec<u8>)> = Vec::new();
        let mut after: Option<(String, u32, String)> = None;
        // In chunks: a million cases are never all held twice in memory.
        loop {
            rows.clear();
            {
                let range = match &after {
                    Some((t, p, i)) => cases.range((t.as_str(), *p, i.as_str())..),
                    None => cases.range::<(&str, u32, &str)>(..),
                }
                .map_err(|e| self.err(e))?;
                for row in range {
                    let (k, v) = row.map_err(|e| self.err(e))?;
                    let (topic, partition, id) = k.value();
                    if after.as_ref().is_some_and(|(t, p, i)| {
                        (t.as_str(), *p, i.as_str()) == (topic, partition, id)
                    }) {
                        continue;
                    }
                    let case: Case =
                        serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                            file: self.file.clone(),
                            message: format!("case {id:?} (format 1, JSON): {e}"),
                        })?;
                    let bytes = encode_case(&case).map_err(|e| self.err(e))?;
                    rows.push(((topic.to_string(), partition, id.to_string()), bytes));
                    if rows.len() >= 10_000 {
                        break;
                    }
                }
            }
            let Some((last, _)) = rows.last() else { break };
            after = Some(last.clone());
            for ((topic, partition, id), bytes) in &rows {
                cases
                    .insert((topic.as_str(), *partition, id.as_str()), bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            n += rows.len();
        }
        tracing::info!(file = %self.file.display(), cases = n,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store converted from format 1 (cases as JSON) to format 2");
        Ok(())
    }

    /// Builds the `case_alerts` index from `alerts` when a store written before the index
    /// existed has alerts and no index yet; returns the last alert's sequence number (0:
    /// none), which the index then covers.
    fn index_case_alerts(&self, tx: &redb::WriteTransaction) -> Result<u64, StoreError> {
        let alerts = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
        let mut index = tx.open_table(CASE_ALERTS).map_err(|e| self.err(e))?;
        let last = self.last_alert(&alerts)?;
        if index.len().map_err(|e| self.err(e))? > 0 || last == 0 {
            return Ok(last);
        }
        self.visit_alerts(&alerts, 0, |seq, bytes| {
            let of = self.alert_case(seq, bytes)?;
            index
                .insert((&*of.case, seq), ())
                .map_err(|e| self.err(e))?;
            Ok(true)
        })?;
        Ok(last)
    }

    /// Writes a batch in one durable transaction; returns the alerts' sequence numbers.
    pub fn commit(&self, batch: &WriteBatch) -> Result<Vec<u64>, StoreError> {
        self.commit_with(batch, true).map(|(seqs, _)| seqs)
    }

    /// Writes a batch in one atomic transaction that is not yet durable (no fsync): a crash
    /// before the next durable commit ([`Store::commit`], [`Store::sync`], or any other
    /// write transaction on this file) undoes it, together with every lazy commit since the
    /// last durable one, and the store reopens exactly as that durable commit left it.
    /// Unless the commit hook wrote deliveries: then the transaction is made durable at once.
    /// Returns the alerts' sequence numbers and whether the transaction is durable.
    pub fn commit_lazy(&self, batch: &WriteBatch) -> Result<(Vec<u64>, bool), StoreError> {
        self.commit_with(batch, false)
    }

    /// Makes every lazy commit so far durable (an empty durable transaction).
    pub fn sync(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn commit_with(
        &self,
        batch: &WriteBatch,
        mut durable: bool,
    ) -> Result<(Vec<u64>, bool), StoreError> {
        if let Some(e) = self.take_checkpoint_error() {
            return Err(e);
        }
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        // Read with the write transaction held: redb has one writer at a time, and the
        // previous one updated the overlay before letting go of its lock.
        let row_no = self.overlay_read().next_row;
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let truncate_below = self.checkpoints.journal_next.load(Ordering::Acquire);
        // Journal rows below this are deleted once this batch commits.
        let mut truncated = 0;
        let mut pruned = (0, true);
        let mut marked = None;
        let mut seqs = Vec::with_capacity(batch.alerts.len());
        let mut generation = Generation::default();
        {
            let mut alerts = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
            let first = self.last_alert(&alerts)? + 1;
            write_alert_groups(&batch.alerts, first, &mut scratch, |seq, row| {
                alerts.insert(seq, row).map_err(|e| self.err(e))?;
                Ok(())
            })?;
            seqs.extend((first..).take(batch.alerts.len()));
            let today = self.now_ms().div_euclid(crate::clock::DAY);
            let mark = (!batch.alerts.is_empty()
                && self.alert_day_seen.load(Ordering::Relaxed) != today)
                .then_some((today, first));
            let keep_days = self.alerts_keep_days.load(Ordering::Relaxed);
            let keep_from = (keep_days > 0).then(|| today - i64::from(keep_days));
            if mark.is_some() || keep_from.is_some() {
                let mut days = tx.open_table(ALERT_DAYS).map_err(|e| self.err(e))?;
                pruned = self.mark_and_prune_alerts(&mut alerts, &mut days, mark, keep_from)?;
                marked = mark.map(|(d, _)| d);
            }
            drop(alerts);
            let mut journal = tx.open_table(JOURNAL).map_err(|e| self.err(e))?;
            if truncate_below > self.truncated_below.load(Ordering::Relaxed) {
                // Rows the checkpoint holds (durably), a few hundred a batch from the
                // oldest: redb reads every row it deletes, and the half-million changes of
                // a checkpoint at once held a batch up for 0.5–0.8 s (the loop waited for
                // it with a full queue). Rows below `journal_next` are skipped on open, so
                // those not yet deleted cost only their room in the file.
                let from = match journal.first().map_err(|e| self.err(e))? {
                    Some((k, _)) => k.value(),
                    None => truncate_below,
                };
                let step = self.truncate_rows.load(Ordering::Relaxed) as u64;
                let upto = truncate_below.min(from.saturating_add(step));
                if from < upto {
                    journal
                        .retain_in(from..upto, |_, _| false)
                        .map_err(|e| self.err(e))?;
                }
                truncated = upto;
            }
            if !batch.cases.is_empty() {
                // Its pieces of at most JOURNAL_PIECE bytes, as the generation keeps them.
                generation = Generation::of_row(batch.cases.row(), &mut scratch.pieces)
                    .map_err(|e| self.err(e))?;
                let mut last = row_no;
                for (k, piece) in (row_no..).zip(&generation.journal) {
                    journal
                        .insert(k, piece.as_slice())
                        .map_err(|e| self.err(e))?;
                    last = k;
                }
                generation.row = Some(last);
            }
            drop(journal);
            for (seq, a) in seqs.iter().zip(&batch.alerts) {
                generation
                    .alerts
                    .entry(a.case.clone())
                    .or_default()
                    .push(*seq);
            }
            generation.alert_count = seqs.len();
            generation.last_alert = seqs.last().copied().unwrap_or(0);
            if !batch.ledger.is_empty() || !batch.ledger_taken_back.is_empty() {
                let mut ledger = tx.open_table(LEDGER).map_err(|e| self.err(e))?;
                for (at, case, key, value) in ledger_once(&batch.ledger) {
                    ledger
                        .insert((*at, case.as_str(), key.as_str()), value.as_slice())
                        .map_err(|e| self.err(e))?;
                }
                for (at, case, key) in &batch.ledger_taken_back {
                    ledger
                        .remove((*at, case.as_str(), key.as_str()))
                        .map_err(|e| self.err(e))?;
                }
            }
            let mut offsets = tx.open_table(OFFSETS).map_err(|e| self.err(e))?;
            for (topic, partition, offset) in &batch.offsets {
                offsets
                    .insert((topic.as_str(), *partition), *offset)
                    .map_err(|e| self.err(e))?;
            }
            let mut clocks = tx.open_table(CLOCKS).map_err(|e| self.err(e))?;
            for (topic, partition, now) in &batch.clocks {
                clocks
                    .insert((topic.as_str(), *partition), *now)
                    .map_err(|e| self.err(e))?;
            }
            if !batch.dead_letters.is_empty() {
                let mut dead = tx.open_table(DEAD_LETTERS).map_err(|e| self.err(e))?;
                let first = match dead.last().map_err(|e| self.err(e))? {
                    Some((k, _)) => k.value() + 1,
                    None => 0,
                };
                for (seq, d) in (first..).zip(&batch.dead_letters) {
                    dead.insert(seq, d.as_slice()).map_err(|e| self.err(e))?;
                }
            }
        }
        let hook = self.hook.read().ok().and_then(|h| h.clone());
        if let Some(hook) = &hook
            && !batch.alerts.is_empty()
        {
            let written: Vec<(u64, &Alert)> = seqs.iter().copied().zip(&batch.alerts).collect();
            durable |= hook.write(&tx, &written).map_err(|e| self.err(e))?;
        }
        // Committed without waiting for the disk, and made durable (when it must be) by an
        // empty durable transaction afterwards: readers wait on the overlay lock during the
        // commit.
        tx.set_durability(redb::Durability::None)
            .map_err(|e| self.err(e))?;
        // Measured before the overlay's lock: readers wait while it is held.
        generation.memory = generation.measure();
        {
            // Readers open their transactions under the read lock: none sees this commit
            // without its overlay, or the overlay without the commit.
            let mut overlay = self.overlay_write();
            tx.commit().map_err(|e| self.err(e))?;
            if let Some(last) = generation.row {
                overlay.next_row = last + 1;
            }
            if generation.size() > 0 {
                overlay.size += generation.size();
                overlay.bytes += generation.memory;
                overlay.generations.push(Arc::new(generation));
            }
        }
        self.truncated_below.fetch_max(truncated, Ordering::Relaxed);
        if let Some(day) = marked {
            self.alert_day_seen.store(day, Ordering::Relaxed);
        }
        if pruned.0 > 0 {
            self.alerts_pruned
                .fetch_add(pruned.0 as u64, Ordering::Relaxed);
        }
        if pruned.1 {
            let rows = self.alerts_pruned.swap(0, Ordering::Relaxed);
            if rows > 0 {
                tracing::info!(file = %self.file.display(), rows,
                    keep_days = self.alerts_keep_days.load(Ordering::Relaxed),
                    "alerts older than store.alerts_keep_days deleted");
            }
        }
        if durable {
            self.sync()?;
        }
        if let Some(hook) = &hook
            && !batch.alerts.is_empty()
        {
            hook.committed();
        }
        if !batch.dead_letters.is_empty() {
            self.dead_letters_written.notify_one();
        }
        self.start_checkpoint();
        Ok((seqs, durable))
    }

    fn take_checkpoint_error(&self) -> Option<StoreError> {
        self.checkpoints
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Starts a checkpoint on a thread of its own when the overlay has reached the
    /// threshold and none is running. When one is running and the overlay has reached
    /// twice the threshold, waits for it first (and the writer with it): memory stays
    /// bounded when checkpoints cannot keep up.
    fn start_checkpoint(&self) {
        let every = self.checkpoint_every.load(Ordering::Relaxed);
        let size = self.overlay_size();
        if size < every {
            return;
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = running.take() {
            if !h.is_finished() && size < every.saturating_mul(2) {
                *running = Some(h);
                return;
            }
            if h.join().is_err() {
                tracing::error!(file = %self.base_file.display(), "store checkpoint thread panicked");
            }
            if self.overlay_size() < every {
                return;
            }
        }
        let job = CheckpointJob {
            db: self.db.clone(),
            file: self.file.clone(),
            base: self.base.clone(),
            base_file: self.base_file.clone(),
            overlay: self.overlay.clone(),
            checkpoints: self.checkpoints.clone(),
            chunk_bytes: self.chunk_bytes.load(Ordering::Relaxed),
            step_bytes: self.step_bytes.load(Ordering::Relaxed),
        };
        match std::thread::Builder::new()
            .name("redlight-checkpoint".into())
            .spawn(move || job.run())
        {
            Ok(h) => *running = Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "store checkpoint thread not started; the next batch tries again");
            }
        }
    }

    /// Waits for the checkpoint running, if any; returns its error, if it failed.
    pub fn finish_checkpoint(&self) -> Result<(), StoreError> {
        let h = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = h
            && h.join().is_err()
        {
            tracing::error!(file = %self.base_file.display(), "store checkpoint thread panicked");
        }
        match self.take_checkpoint_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The next offset to consume for a partition, if any event of it was ever applied.
    pub fn offset(&self, topic: &str, partition: u32) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(OFFSETS).map_err(|e| self.err(e))?;
        Ok(t.get((topic, partition))
            .map_err(|e| self.err(e))?
            .map(|v| v.value()))
    }

    /// A partition's engine clock as last made durable.
    pub fn engine_clock(&self, topic: &str, partition: u32) -> Result<Option<i64>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(CLOCKS).map_err(|e| self.err(e))?;
        Ok(t.get((topic, partition))
            .map_err(|e| self.err(e))?
            .map(|v| v.value()))
    }

    /// Every stored offset.
    pub fn offsets(&self) -> Result<Vec<(String, u32, u64)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        offsets_in(&tx, &self.file)
    }

    /// Dead letters not yet acknowledged by the broker, from number `from` on, with their
    /// numbers: what [`WriteBatch::dead_letters`] held. At most `limit` of them, and no more
    /// once they reach `max_bytes` together (at least one: a dead letter is up to the size
    /// of a message). Lazily committed ones included: a crash may undo one already sent, and
    /// its batch, redone, refuses the message again (the dead-letter topic is at least once).
    pub fn dead_letters(
        &self,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = match tx.open_table(DEAD_LETTERS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let (mut out, mut bytes) = (Vec::new(), 0);
        for row in t.range(from..).map_err(|e| self.err(e))?.take(limit) {
            if bytes >= max_bytes {
                break;
            }
            let (k, v) = row.map_err(|e| self.err(e))?;
            bytes += v.value().len();
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The rule ids in the order the store's cases number them (a clock, a stage or a duty
    /// names its rule by position), as [`Store::record_order`] last wrote them; `None` for
    /// a store written before they were recorded.
    pub fn rule_order(&self) -> Result<Option<Vec<String>>, StoreError> {
        self.meta_list(META_RULE_ORDER)
    }

    /// The event types in the order the store's cases' seen-types sets number them; `None`
    /// for a store written before they were recorded.
    pub fn type_order(&self) -> Result<Option<Vec<String>>, StoreError> {
        self.meta_list(META_TYPE_ORDER)
    }

    /// Records the rule ids and the event types in the order the cases written from now on
    /// number them, durably.
    pub fn record_order(&self, rules: &[String], types: &[String]) -> Result<(), StoreError> {
        let rules = serde_json::to_vec(rules).map_err(|e| self.err(e))?;
        let types = serde_json::to_vec(types).map_err(|e| self.err(e))?;
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(META_RULE_ORDER, rules.as_slice())
                .map_err(|e| self.err(e))?;
            meta.insert(META_TYPE_ORDER, types.as_slice())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// A JSON list of strings in the batches' file's `meta`.
    fn meta_list(&self, key: &str) -> Result<Option<Vec<String>>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let Some(v) = meta.get(key).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                file: self.file.clone(),
                message: format!("meta {key:?} is not a JSON list of names: {e}"),
            })
    }

    /// How many dead letters wait for the broker.
    pub fn dead_letter_count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        match tx.open_table(DEAD_LETTERS) {
            Ok(t) => t.len().map_err(|e| self.err(e)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Deletes dead letters the broker has acknowledged, durably (with every lazy commit
    /// before it): one lost in a crash would be sent again.
    pub fn remove_dead_letters(&self, seqs: &[u64]) -> Result<(), StoreError> {
        self.delete_dead_letters(seqs, |_, _| {})
    }

    /// Deletes the dead letters numbered `seqs` by an operator's hand, durably, and gives back
    /// the rows it deleted (with their numbers, in the order asked; a number not in the store
    /// is left out): the caller shows them, so that what is dropped is not lost unseen.
    pub fn take_dead_letters(&self, seqs: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut taken = Vec::new();
        self.delete_dead_letters(seqs, |seq, row| taken.push((seq, row.to_vec())))?;
        Ok(taken)
    }

    /// Deletes the dead letters numbered `seqs` in one durable transaction, showing each row
    /// deleted to `deleted`.
    fn delete_dead_letters(
        &self,
        seqs: &[u64],
        mut deleted: impl FnMut(u64, &[u8]),
    ) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(DEAD_LETTERS).map_err(|e| self.err(e))?;
            for seq in seqs {
                if let Some(row) = t.remove(*seq).map_err(|e| self.err(e))? {
                    deleted(*seq, row.value());
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Resolves once a commit has written dead letters since the last call returned (or
    /// at once if one has and nobody waited).
    pub async fn dead_letters_written(&self) {
        self.dead_letters_written.notified().await;
    }

    /// Visits the cases of one partition in case-id order, each parsed as it is read (a
    /// partition of a million cases is never held twice in memory); returns how many.
    pub fn load_partition(
        &self,
        topic: &str,
        partition: u32,
        mut visit: impl FnMut(Case),
    ) -> Result<usize, StoreError> {
        let Snapshot {
            base, generations, ..
        } = self.read()?;
        let mut n = 0;
        let from = Bound::Included((topic, partition, ""));
        let to = Bound::Excluded((topic, partition + 1, ""));
        self.visit_cases(&base, &generations, from, to, |_, _, id, bytes| {
            let case = decode_case(bytes).map_err(|e| StoreError::Corrupt {
                file: self.file.clone(),
                message: format!("case {id:?}: {e}"),
            })?;
            visit(case);
            n += 1;
            Ok(true)
        })?;
        Ok(n)
    }

    /// Every stored case with its partition, ordered by topic, partition and case id.
    pub fn all_cases(&self) -> Result<Vec<(String, u32, Case)>, StoreError> {
        let mut out = Vec::new();
        self.try_scan_cases(None, |topic, partition, id, bytes| {
            let case = decode_case(bytes).map_err(|e| StoreError::Corrupt {
                file: self.file.clone(),
                message: format!("case {id:?}: {e}"),
            })?;
            out.push((topic.to_string(), partition, case));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Alerts with a sequence number above `after`, at most `limit`.
    pub fn alerts(&self, after: u64, limit: usize) -> Result<Vec<(u64, Alert)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.visit_alerts(&t, after.saturating_add(1), |seq, bytes| {
            out.push((seq, self.read_alert(seq, bytes)?));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Visits the stored cases as stored ([`decode_case`] reads them) in key order (topic,
    /// partition, case id), starting after `after` when given, until `visit` returns false.
    /// One read transaction: the daemon keeps writing meanwhile, and the visit sees one
    /// consistent state.
    pub fn scan_cases(
        &self,
        after: Option<(&str, u32, &str)>,
        mut visit: impl FnMut(&str, u32, &str, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.try_scan_cases(after, |topic, partition, id, bytes| {
            Ok(visit(topic, partition, id, bytes))
        })
    }

    fn try_scan_cases(
        &self,
        after: Option<(&str, u32, &str)>,
        visit: impl FnMut(&str, u32, &str, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let Snapshot {
            base, generations, ..
        } = self.read()?;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.visit_cases(&base, &generations, from, Bound::Unbounded, visit)
    }

    /// Visits the checkpoint's cases in a key range (its runs, merged) with the overlay's
    /// changes laid over them, in key order; forgotten cases are skipped.
    fn visit_cases(
        &self,
        base: &redb::ReadTransaction,
        generations: &[Arc<Generation>],
        from: Bound<KeyRef<'_>>,
        to: Bound<KeyRef<'_>>,
        mut visit: impl FnMut(&str, u32, &str, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let meta = base.open_table(META).map_err(|e| self.base_err(e))?;
        let mut cursors = Vec::new();
        for r in runs::runs(&meta, &self.base_file)? {
            let name = runs::table_name(r.n);
            let t = base
                .open_table(runs::ChunkTable::new(&name))
                .map_err(|e| self.base_err(e))?;
            cursors.push(RunCursor::new(&t, r.n, &self.base_file, from, to)?);
        }
        let mut over = OverlaySource::new(OverlayCursor::new(generations, from, to), &self.file)?;
        let mut sources: Vec<&mut dyn Source> =
            cursors.iter_mut().map(|c| c as &mut dyn Source).collect();
        sources.push(&mut over);
        runs::merge(&mut sources, |key, value| match value {
            Some(bytes) => visit(key.0, key.1, key.2, bytes),
            None => Ok(true),
        })
    }

    /// One case by id, with its partition: a point lookup in every partition the store has
    /// offsets for (the message key is the case id, so a case lives in one partition).
    pub fn find_case(&self, id: &str) -> Result<Option<(String, u32, Case)>, StoreError> {
        let Snapshot {
            tx,
            base,
            generations,
        } = self.read()?;
        let offsets = tx.open_table(OFFSETS).map_err(|e| self.err(e))?;
        let meta = base.open_table(META).map_err(|e| self.base_err(e))?;
        // The runs newest first: the first that has the case has its latest state.
        let mut tables = Vec::new();
        for r in runs::runs(&meta, &self.base_file)?.iter().rev() {
            let name = runs::table_name(r.n);
            let t = base
                .open_table(runs::ChunkTable::new(&name))
                .map_err(|e| self.base_err(e))?;
            tables.push((r.n, t));
        }
        let decode = |bytes: &[u8]| {
            decode_case(bytes).map_err(|e| StoreError::Corrupt {
                file: self.file.clone(),
                message: format!("case {id:?}: {e}"),
            })
        };
        'partitions: for row in offsets.iter().map_err(|e| self.err(e))? {
            let (k, _) = row.map_err(|e| self.err(e))?;
            let (topic, partition) = k.value();
            let mut change = None;
            for g in generations.iter().rev() {
                change = g
                    .get(topic, partition, id)
                    .map_err(|message| StoreError::Corrupt {
                        file: self.file.clone(),
                        message,
                    })?;
                if change.is_some() {
                    break;
                }
            }
            match change {
                Some(Some(bytes)) => {
                    return Ok(Some((topic.to_string(), partition, decode(&bytes)?)));
                }
                Some(None) => continue, // forgotten since the checkpoint
                None => {}
            }
            for (n, t) in &tables {
                match runs::get(t, *n, &self.base_file, (topic, partition, id))? {
                    Some(Some(bytes)) => {
                        return Ok(Some((topic.to_string(), partition, decode(&bytes)?)));
                    }
                    Some(None) => continue 'partitions,
                    None => {}
                }
            }
        }
        Ok(None)
    }

    /// Every alert of one case, in the order they happened, with their sequence numbers.
    pub fn case_alerts(&self, case: &str) -> Result<Vec<(u64, Alert)>, StoreError> {
        let Snapshot {
            tx,
            base,
            generations,
        } = self.read()?;
        let index = base.open_table(CASE_ALERTS).map_err(|e| self.base_err(e))?;
        let meta = base.open_table(META).map_err(|e| self.base_err(e))?;
        let through = meta_u64(&meta, META_INDEXED, &self.base_file)?;
        let alerts = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
        let mut seqs = Vec::new();
        // The index as checkpointed: the table of format 2, then the runs.
        for row in index
            .range((case, 0)..=(case, u64::MAX))
            .map_err(|e| self.base_err(e))?
        {
            let (k, _) = row.map_err(|e| self.base_err(e))?;
            seqs.push(k.value().1);
        }
        for r in runs::list(&meta, alert_runs::META_ALERT_RUNS, &self.base_file)? {
            let name = alert_runs::table_name(r.n);
            let t = base
                .open_table(alert_runs::ChunkTable::new(&name))
                .map_err(|e| self.base_err(e))?;
            alert_runs::seqs(&t, r.n, &self.base_file, case, &mut seqs)?;
        }
        // In order and each once, whatever the parts hold.
        seqs.sort_unstable();
        seqs.dedup();
        // Alerts since the checkpoint come after every indexed one. A checkpoint that
        // committed while this reader took the overlay holds some of them already.
        for g in &generations {
            if let Some(s) = g.alerts.get(case) {
                seqs.extend(s.iter().filter(|&&seq| seq > through));
            }
        }
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(a) = self.get_alert(&alerts, seq, |bytes| self.read_alert(seq, bytes))? {
                out.push((seq, a));
            }
        }
        Ok(out)
    }

    /// Visits alerts with a sequence number above `after` as stored ([`decode_alert`] reads
    /// them), in order, until `visit` returns false.
    pub fn scan_alerts(
        &self,
        after: u64,
        mut visit: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
        self.visit_alerts(&t, after.saturating_add(1), |seq, bytes| {
            Ok(visit(seq, bytes))
        })
    }

    /// Visits the scorecard records with an instant in `[from, to)`.
    pub fn scan_ledger(
        &self,
        from: i64,
        to: i64,
        mut visit: impl FnMut(i64, &str, &str, &[u8]),
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(LEDGER).map_err(|e| self.err(e))?;
        for row in t
            .range((from, "", "")..(to, "", ""))
            .map_err(|e| self.err(e))?
        {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (at, case, key) = k.value();
            visit(at, case, key, v.value());
        }
        Ok(())
    }

    /// How many alerts the store holds.
    pub fn alert_count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
        let mut n = 0;
        let mut unpacked = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            n += self
                .row_alerts(k.value(), v.value(), &mut unpacked)?
                .remaining();
        }
        Ok(n)
    }
}

/// What a caught panic said (its message, when it is text).
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tmp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("redlight-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_space_left_is_what_df_says() {
        let dir = tmp("disk-free");
        let store = Store::open(&dir).expect("open");
        let free = disk_free(&dir).expect("statvfs");
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&dir)
            .output()
            .expect("df");
        let df: u64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df's figure");
        // Other tests write beside it meanwhile: within 64 MiB.
        assert!(
            free.abs_diff(df) < 64 << 20,
            "statvfs {free} bytes free, df {df}"
        );
        assert!(
            store
                .files()
                .iter()
                .all(|f| f.starts_with(&dir) && f.exists())
        );
        let missing = disk_free(&dir.join("no-such-dir")).expect_err("a missing path");
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_batch_round_trips_and_offsets_are_per_partition() {
        let dir = tmp("roundtrip");
        let store = Store::open(&dir).expect("open");
        let mut b = WriteBatch::default();
        b.offsets.push(("events".into(), 0, 42));
        b.offsets.push(("events".into(), 1, 7));
        b.cases.put_encoded("events", 0, "A", b"{}");
        store.commit(&b).expect("commit");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_eq!(store.offset("events", 0).expect("read"), Some(42));
        assert_eq!(store.offset("events", 1).expect("read"), Some(7));
        assert_eq!(store.offset("events", 2).expect("read"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A batch's scorecard rows, most of them written twice by the loop, are stored once
    /// each with the last value written under their key, and a key taken back goes.
    #[test]
    fn a_batch_stores_the_last_of_each_scorecard_row() {
        let dir = tmp("ledger-once");
        let store = Store::open(&dir).expect("open");
        let row = |at: i64, case: &str, key: &str, value: &str| -> LedgerRow {
            (at, case.into(), key.into(), value.as_bytes().to_vec())
        };
        let mut b = WriteBatch::default();
        b.offsets.push(("events".into(), 0, 9));
        b.ledger = vec![
            row(20, "B", "closed", "first"),
            row(10, "A", "violation:r:1", "v"),
            row(20, "B", "closed", "second"),
            row(20, "A", "closed", "a"),
            row(30, "C", "missing:r:2026-11", "m"),
            row(20, "B", "closed", "third"),
        ];
        b.ledger_taken_back = vec![(30, "C".into(), "missing:r:2026-11".into())];
        store.commit(&b).expect("commit");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        let mut rows = Vec::new();
        store
            .scan_ledger(0, 100, |at, case, key, value| {
                rows.push(row(at, case, key, &String::from_utf8_lossy(value)));
            })
            .expect("scan");
        assert_eq!(
            rows,
            [
                row(10, "A", "violation:r:1", "v"),
                row(20, "A", "closed", "a"),
                row(20, "B", "closed", "third"),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A batch's dead letters are kept with its offsets, in order, across a reopen, until
    /// deleted; numbers go on after the last kept, and the table's name is its own (the
    /// delivery outbox's dead letters are `dead_letters` in the same file).
    #[test]
    fn dead_letters_are_kept_with_their_batch_until_deleted() {
        let dir = tmp("dead-letters");
        let store = Store::open(&dir).expect("open");
        assert_eq!(store.dead_letter_count().expect("count"), 0);
        let mut b = WriteBatch::default();
        b.offsets.push(("events".into(), 0, 3));
        b.dead_letters = vec![b"first".to_vec(), b"second".to_vec()];
        assert!(!b.is_empty(), "dead letters alone are a batch to write");
        store.commit_lazy(&b).expect("commit");
        let mut b = WriteBatch::default();
        b.offsets.push(("events".into(), 0, 5));
        b.dead_letters = vec![b"third".to_vec()];
        store.commit(&b).expect("commit");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_eq!(store.offset("events", 0).expect("read"), Some(5));
        let kept = |store: &Store, from| -> Vec<(u64, String)> {
            store
                .dead_letters(from, 10, usize::MAX)
                .expect("read")
                .into_iter()
                .map(|(seq, v)| (seq, String::from_utf8_lossy(&v).into_owned()))
                .collect()
        };
        let all = kept(&store, 0);
        assert_eq!(
            all,
            [
                (0, "first".into()),
                (1, "second".into()),
                (2, "third".into())
            ]
        );
        assert_eq!(kept(&store, 2), [(2, "third".to_string())]);
        assert_eq!(
            store.dead_letters(0, 1, usize::MAX).expect("read").len(),
            1,
            "the limit"
        );
        // "first" is 5 bytes, "second" 6: the bytes' limit reached after the first two.
        assert_eq!(store.dead_letters(0, 10, 11).expect("read").len(), 2);
        assert_eq!(
            store.dead_letters(0, 10, 1).expect("read").len(),
            1,
            "at least one"
        );
        store.remove_dead_letters(&[0, 2]).expect("remove");
        let b = WriteBatch {
            dead_letters: vec![b"fourth".to_vec()],
            ..WriteBatch::default()
        };
        store.commit_lazy(&b).expect("commit");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_eq!(
            kept(&store, 0),
            [(1, "second".into()), (2, "fourth".into())]
        );
        assert_eq!(store.dead_letter_count().expect("count"), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store of format 7 (before dead letters were kept) opens with none, and is marked
    /// format 8, which a redlight of format 7 refuses rather than leave them unsent.
    #[test]
    fn a_store_before_dead_letters_were_kept_opens_and_is_marked() {
        let dir = tmp("format-7");
        drop(Store::open(&dir).expect("open"));
        {
            let db = Database::open(dir.join(FILE_NAME)).expect("batches' file");
            let tx = db.begin_write().expect("tx");
            tx.delete_table(DEAD_LETTERS).expect("delete");
            tx.open_table(META)
                .expect("meta")
                .insert("schema", SCHEMA_NO_DEAD_LETTERS.as_bytes())
                .expect("schema");
            tx.commit().expect("commit");
        }
        let store = Store::open(&dir).expect("open format 7");
        assert_eq!(store.dead_letter_count().expect("count"), 0);
        assert!(
            store
                .dead_letters(0, 10, usize::MAX)
                .expect("read")
                .is_empty()
        );
        let tx = store.db.begin_read().expect("tx");
        let meta = tx.open_table(META).expect("meta");
        let v = meta.get("schema").expect("get").expect("schema");
        assert_eq!(v.value(), SCHEMA_VERSION.as_bytes());
        assert_eq!(SCHEMA_VERSION, "redlight-store-9");
        drop((meta, tx, store));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store of format 8 (one count of retractions for both lights of a clock) opens with
    /// its cases as they were, and both files are marked with the new formats, which a
    /// redlight of format 8 refuses rather than take the new clocks for damage.
    #[test]
    fn a_store_with_one_count_of_retractions_opens_and_is_marked() {
        let dir = tmp("format-8");
        let (mut model, mut alerts) = (Model::new(), BTreeMap::new());
        {
            let store = Store::open(&dir).expect("open");
            commit_cases(&store, (0..20).map(|i| (i, 1)), &mut model, &mut alerts);
        }
        for (file, old) in [
            (FILE_NAME, SCHEMA_ONE_COUNT),
            (BASE_FILE_NAME, BASE_SCHEMA_ONE_COUNT),
        ] {
            let db = Database::open(dir.join(file)).expect("file");
            let tx = db.begin_write().expect("tx");
            tx.open_table(META)
                .expect("meta")
                .insert("schema", old.as_bytes())
                .expect("schema");
            tx.commit().expect("commit");
        }
        let store = Store::open(&dir).expect("open format 8");
        assert_reads(&store, &model, &alerts, "format 8 opened");
        for (db, want) in [
            (&store.db, "redlight-store-9"),
            (&store.base, "redlight-cases-5"),
        ] {
            let tx = db.begin_read().expect("tx");
            let meta = tx.open_table(META).expect("meta");
            let v = meta.get("schema").expect("get").expect("schema");
            assert_eq!(v.value(), want.as_bytes(), "marked {want}");
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Run as a child process by `a_crash_undoes_lazy_commits_since_the_last_sync`: commits
    /// as told by `REDLIGHT_CRASH_CHILD` and dies without closing the store, like `kill -9`.
    #[test]
    fn crash_child() {
        let Some(spec) = std::env::var_os("REDLIGHT_CRASH_CHILD") else {
            return;
        };
        let spec = spec.to_string_lossy().into_owned();
        let (dir, steps) = spec.split_once('|').expect("dir|steps");
        let store = Store::open(Path::new(dir)).expect("open");
        for (i, step) in steps.split(',').enumerate() {
            let mut b = WriteBatch::default();
            let next = i as u64 + 1;
            b.offsets.push(("events".into(), 0, next));
            b.cases.put_encoded("events", 0, &format!("C{next}"), b"{}");
            if step == "alert" || step == "deliver" {
                b.alerts.push(
                    serde_json::from_value(serde_json::json!({
                        "id": format!("A{next}"), "rule": "xk.statutory", "title": "t",
                        "basis": "b", "case": format!("C{next}"), "level": "red",
                        "status": "firing", "reason": "overdue",
                        "at": "2026-11-02T00:00:00+08:00"
                    }))
                    .expect("alert"),
                );
            }
            match step {
                "durable" => {
                    store.commit(&b).expect("commit");
                }
                "lazy" | "alert" => {
                    let (_, durable) = store.commit_lazy(&b).expect("commit");
                    assert!(!durable);
                }
                "deliver" => {
                    // A hook that enqueues deliveries: the lazy commit is made durable.
                    store.set_commit_hook(std::sync::Arc::new(Deliveries));
                    let (_, durable) = store.commit_lazy(&b).expect("commit");
                    store.clear_commit_hook();
                    assert!(durable);
                }
                "sync" => store.sync().expect("sync"),
                other => panic!("unknown step {other}"),
            }
        }
        std::process::abort();
    }

    struct Deliveries;
    impl CommitHook for Deliveries {
        fn write(
            &self,
            _tx: &redb::WriteTransaction,
            _alerts: &[(u64, &Alert)],
        ) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
            Ok(true)
        }
        fn committed(&self) {}
    }

    fn crash_after(name: &str, steps: &str) -> Store {
        let dir = tmp(name);
        let status = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args(["--exact", "store::tests::crash_child", "--nocapture"])
            .env("REDLIGHT_CRASH_CHILD", format!("{}|{steps}", dir.display()))
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run the child");
        assert!(!status.success(), "the child must die, not exit");
        Store::open(&dir).expect("reopen after the crash")
    }

    #[test]
    fn a_crash_undoes_lazy_commits_since_the_last_sync() {
        // Two durable batches, then two lazy ones: the store reopens at the second, its
        // offset and its cases together (the lazy batches are consumed again from Kafka).
        let store = crash_after("crash-lazy", "durable,durable,lazy,lazy");
        assert_eq!(store.offset("events", 0).expect("read"), Some(2));
        let mut keys = Vec::new();
        store
            .scan_cases(None, |_, _, id, _| {
                keys.push(id.to_string());
                true
            })
            .expect("scan");
        assert_eq!(keys, ["C1", "C2"]);

        // A sync makes the lazy batches before it durable; a durable commit does too.
        let store = crash_after("crash-sync", "durable,lazy,lazy,sync,lazy");
        assert_eq!(store.offset("events", 0).expect("read"), Some(3));
        let store = crash_after("crash-durable", "lazy,lazy,durable,lazy");
        assert_eq!(store.offset("events", 0).expect("read"), Some(3));
        let mut n = 0;
        store
            .scan_cases(None, |_, _, _, _| {
                n += 1;
                true
            })
            .expect("scan");
        assert_eq!(n, 3);

        // Alerts alone do not make a lazy commit durable (they are raised again when the
        // batch is consumed again); deliveries do, since they are sent once seen.
        let store = crash_after("crash-alert", "durable,alert,lazy");
        assert_eq!(store.offset("events", 0).expect("read"), Some(1));
        assert_eq!(store.alert_count().expect("alerts"), 0);
        let store = crash_after("crash-deliver", "durable,deliver,lazy");
        assert_eq!(store.offset("events", 0).expect("read"), Some(2));
        assert_eq!(store.alert_count().expect("alerts"), 1);
        for name in [
            "crash-lazy",
            "crash-sync",
            "crash-durable",
            "crash-alert",
            "crash-deliver",
        ] {
            let _ = std::fs::remove_dir_all(tmp(name));
        }
    }

    #[test]
    fn a_garbage_file_is_a_clear_error_naming_the_file() {
        let dir = tmp("garbage");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(FILE_NAME), vec![0x5a; 64 * 1024]).expect("write");
        let err = Store::open(&dir).err().expect("must fail");
        let msg = err.to_string();
        assert!(msg.contains(FILE_NAME), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A page damaged inside the file (the header intact): redb panics reading some such
    /// pages rather than answering an error; the store says which file is damaged, and
    /// nothing crashes. Each 4 KiB page of a fresh store's file is tried in turn.
    #[test]
    fn a_damaged_page_is_a_clear_error_naming_the_file_not_a_crash() {
        let dir = tmp("damaged-page");
        drop(Store::open(&dir).expect("a fresh store"));
        let pristine = std::fs::read(dir.join(FILE_NAME)).expect("read");
        assert!(pristine.len() > 8192, "{} bytes", pristine.len());
        let mut refused = 0;
        for at in (4096..pristine.len()).step_by(4096) {
            let mut bytes = pristine.clone();
            let end = (at + 4096).min(bytes.len());
            bytes[at..end].fill(0xff);
            std::fs::write(dir.join(FILE_NAME), &bytes).expect("write");
            if let Err(e) = Store::open(&dir) {
                let msg = e.to_string();
                assert!(msg.contains(FILE_NAME), "{msg}");
                refused += 1;
            }
        }
        assert!(refused > 0, "no damaged page was noticed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn json_case(i: usize) -> Case {
        let json = format!(
            r#"{{"id":"C{i:05}","data":[["department","市住建局"],["n",{i}],["x",{{"y":[1,2.5,null]}}]],"seen":[{i}],"types":5,"first_event":{i},"last_event":{i},"withdrawn":false,"clocks":[],"stages":[],"violations":[],"duties":[]}}"#
        );
        serde_json::from_str(&json).expect("a case")
    }

    /// Writes `cases` as a format-1 store kept them: JSON, under the format-1 schema.
    fn write_format_1(dir: &Path, cases: &[(u32, Vec<u8>)]) {
        let store = Store::open(dir).expect("open");
        let tx = store.db.begin_write().expect("tx");
        {
            let mut meta = tx.open_table(META).expect("meta");
            meta.insert("schema", SCHEMA_JSON_CASES.as_bytes())
                .expect("insert");
            let mut offsets = tx.open_table(OFFSETS).expect("offsets");
            for (partition, _) in cases {
                offsets.insert(("events", *partition), 1).expect("insert");
            }
            let mut t = tx.open_table(CASES).expect("cases");
            for (i, (partition, json)) in cases.iter().enumerate() {
                t.insert(
                    ("events", *partition, format!("C{i:05}").as_str()),
                    json.as_slice(),
                )
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }

    #[test]
    fn a_format_1_store_is_converted_on_open_and_every_case_kept() {
        let dir = tmp("format1");
        // More than one conversion chunk (10,000), over two partitions.
        let cases: Vec<Case> = (0..12_345).map(json_case).collect();
        let rows: Vec<(u32, Vec<u8>)> = cases
            .iter()
            .enumerate()
            .map(|(i, c)| ((i % 2) as u32, serde_json::to_vec(c).expect("json")))
            .collect();
        write_format_1(&dir, &rows);
        let store = Store::open(&dir).expect("converted");
        let mut back: Vec<(u32, Case)> = Vec::new();
        for p in 0..2 {
            store
                .load_partition("events", p, |c| back.push((p, c)))
                .expect("load");
        }
        back.sort_by(|a, b| a.1.id.cmp(&b.1.id));
        assert_eq!(back.len(), cases.len());
        for (i, ((p, got), want)) in back.iter().zip(&cases).enumerate() {
            assert_eq!(got, want, "case {i}");
            assert_eq!(*p, (i % 2) as u32);
        }
        drop(store);
        // Recorded as format 2: the next open reads the new encoding as it is.
        let store = Store::open(&dir).expect("reopen");
        let (_, _, c) = store.find_case("C00007").expect("read").expect("found");
        assert_eq!(c, cases[7]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_format_1_case_that_does_not_parse_is_named_and_nothing_converted() {
        let dir = tmp("format1-bad");
        let good = serde_json::to_vec(&json_case(0)).expect("json");
        write_format_1(&dir, &[(0, good.clone()), (0, b"{\"id\":".to_vec())]);
        let err = Store::open(&dir).err().expect("must fail");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("C00001"), "{err}");
        // The store is left in format 1, untouched.
        let db = Database::create(dir.join(FILE_NAME)).expect("raw open");
        let tx = db.begin_read().expect("tx");
        let meta = tx.open_table(META).expect("meta");
        let schema = meta.get("schema").expect("get").expect("set");
        assert_eq!(schema.value(), SCHEMA_JSON_CASES.as_bytes());
        let t = tx.open_table(CASES).expect("cases");
        let first = t.get(("events", 0, "C00000")).expect("get").expect("kept");
        assert_eq!(first.value(), good.as_slice());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn available_memory_is_read_from_meminfo() {
        let text = "MemTotal:       24684132 kB\nMemFree:        11546000 kB\nMemAvailable:   23583000 kB\n";
        assert_eq!(mem_available(text), Some(23_583_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots\n"), None);
    }

    /// A reproducible random number (xorshift).
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    fn alert_of(case: &str, n: u64) -> Alert {
        serde_json::from_value(serde_json::json!({
            "id": format!("A{n}"), "rule": "xk.statutory", "title": "t", "basis": "b",
            "case": case, "level": "red", "status": "firing", "reason": "overdue",
            "at": "2026-11-02T00:00:00+08:00"
        }))
        .expect("alert")
    }

    type Model = BTreeMap<(String, u32, String), i64>;

    /// What every reader must show: the cases of `model` (id → `last_event`, our version
    /// mark) and the alerts of `alerts` (case → sequence numbers).
    fn assert_reads(store: &Store, model: &Model, alerts: &BTreeMap<String, Vec<u64>>, at: &str) {
        let mut all = Vec::new();
        store
            .scan_cases(None, |t, p, id, bytes| {
                let case = decode_case(bytes).expect("decodes");
                assert_eq!(&*case.id, id);
                all.push(((t.to_string(), p, id.to_string()), case.last_event));
                true
            })
            .expect("scan");
        let expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(all, expected, "full scan {at}");
        // Paging: everything after the middle key, and a stop after three.
        if let Some((mid, _)) = expected.get(expected.len() / 2) {
            let mut after = Vec::new();
            store
                .scan_cases(Some((&mid.0, mid.1, &mid.2)), |t, p, id, _| {
                    after.push((t.to_string(), p, id.to_string()));
                    after.len() < 3
                })
                .expect("scan after");
            let want: Vec<_> = model
                .range((
                    std::ops::Bound::Excluded(mid.clone()),
                    std::ops::Bound::Unbounded,
                ))
                .map(|(k, _)| k.clone())
                .take(3)
                .collect();
            assert_eq!(after, want, "scan after {mid:?} {at}");
        }
        for p in 0..3 {
            let mut ids = Vec::new();
            store
                .load_partition("t", p, |c| ids.push((c.id.to_string(), c.last_event)))
                .expect("load");
            let want: Vec<_> = model
                .iter()
                .filter(|(k, _)| k.1 == p)
                .map(|(k, v)| (k.2.clone(), *v))
                .collect();
            assert_eq!(ids, want, "partition {p} {at}");
        }
        for i in 0..60u32 {
            let id = format!("C{i:05}");
            let found = store.find_case(&id).expect("find");
            let want = model.get(&("t".to_string(), i % 3, id.clone()));
            assert_eq!(
                found.map(|(_, p, c)| (p, c.last_event)),
                want.map(|v| (i % 3, *v)),
                "find {id} {at}"
            );
            let seqs: Vec<u64> = store
                .case_alerts(&id)
                .expect("case alerts")
                .into_iter()
                .map(|(s, a)| {
                    assert_eq!(&*a.case, id);
                    s
                })
                .collect();
            assert_eq!(
                seqs,
                alerts.get(&id).cloned().unwrap_or_default(),
                "alerts of {id} {at}"
            );
        }
    }

    #[test]
    fn readers_see_the_journal_over_the_checkpoints_and_so_does_a_reopened_store() {
        let dir = tmp("journal");
        let mut store = Store::open(&dir).expect("open");
        store.set_checkpoint_cases(37);
        // Chunks of a few cases each: the reads below cross chunk boundaries.
        store.set_chunk_bytes(700);
        // A run committed in steps of a few chunks: readers must never see a part of one.
        store.set_step_bytes(2000);
        let mut model = Model::new();
        let (mut most_runs, mut most_alert_runs) = (0, 0);
        let mut alerts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let (mut checkpoints, mut reopened_with_journal, mut alert_n) = (0, 0, 0u64);
        for round in 0..150i64 {
            let mut b = WriteBatch::default();
            let mut in_batch = std::collections::HashSet::new();
            for k in 0..next(&mut seed) % 12 {
                let i = (next(&mut seed) % 60) as u32;
                // A batch holds each changed case once, as the daemon builds it.
                if !in_batch.insert(i) {
                    continue;
                }
                let key = ("t".to_string(), i % 3, format!("C{i:05}"));
                if next(&mut seed).is_multiple_of(5) {
                    b.cases.forget(&key.0, key.1, &key.2);
                    model.remove(&key);
                } else {
                    let mut case = json_case(i as usize);
                    case.last_event = round * 100 + k as i64;
                    b.cases.put(&key.0, key.1, &case).expect("encode");
                    model.insert(key.clone(), case.last_event);
                }
                if next(&mut seed).is_multiple_of(3) {
                    alert_n += 1;
                    b.alerts.push(alert_of(&key.2, alert_n));
                }
            }
            for p in 0..3 {
                b.offsets.push(("t".into(), p, round as u64 + 1));
            }
            let seqs = if round % 2 == 0 {
                store.commit(&b).expect("commit")
            } else {
                store.commit_lazy(&b).expect("commit").0
            };
            for (seq, a) in seqs.iter().zip(&b.alerts) {
                alerts.entry(a.case.to_string()).or_default().push(*seq);
            }
            // Checkpoints run beside the batches: the reads below meet them running,
            // finished, or about to drop their generations. Memory stays bounded: a batch
            // that finds twice the threshold waits for the checkpoint running.
            assert!(
                store.overlay_size() < 2 * 37 + 24,
                "overlay of {} entries in round {round}",
                store.overlay_size()
            );
            assert_reads(&store, &model, &alerts, &format!("after round {round}"));
            if round % 5 == 4 {
                store.finish_checkpoint().expect("checkpoint");
                assert!(
                    store.overlay_size() < 37 + 24,
                    "after a finished checkpoint"
                );
                assert_reads(&store, &model, &alerts, &format!("checkpointed in {round}"));
            }
            if let Some(took) = store.take_checkpoint_seconds() {
                assert!(took >= 0.0, "a checkpoint is timed");
                checkpoints += 1;
            }
            let runs = store.runs();
            most_runs = most_runs.max(runs.len());
            assert!(runs.len() <= 6, "{} runs in round {round}", runs.len());
            for w in runs.windows(2) {
                assert!(w[0].n < w[1].n, "runs oldest first: {runs:?}");
            }
            // The alerts a checkpoint indexes vary from none to most of it, and a run
            // smaller than the one before is not merged: more runs than the cases have,
            // but never more than the cap.
            let alert_runs = store.alert_runs();
            most_alert_runs = most_alert_runs.max(alert_runs.len());
            assert!(
                alert_runs.len() <= runs::MAX_RUNS,
                "{} alert runs in round {round}",
                alert_runs.len()
            );
            if round % 13 == 12 {
                if store.overlay_size() > 0 {
                    reopened_with_journal += 1;
                }
                store.sync().expect("sync");
                drop(store);
                store = Store::open(&dir).expect("reopen");
                store.set_checkpoint_cases(37);
                store.set_chunk_bytes(700);
                store.set_step_bytes(2000);
                assert_reads(&store, &model, &alerts, &format!("reopened after {round}"));
            }
        }
        assert!(checkpoints >= 10, "only {checkpoints} checkpoints");
        assert!(
            most_runs >= 2,
            "the checkpoint never had more than {most_runs} run"
        );
        assert!(
            most_alert_runs >= 2,
            "the alert index never had more than {most_alert_runs} run"
        );
        assert!(
            reopened_with_journal >= 3,
            "only {reopened_with_journal} reopens with a journal"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Readers beside a writer that checkpoints often: each read must be one committed
    /// state, so a reader never sees the store go back in time. A reader that opened its
    /// transaction before a checkpoint and took the overlay after it (emptied) would see
    /// the state of the checkpoint before; one that took the overlay before a commit and the
    /// transaction after it would miss a batch.
    #[test]
    fn readers_beside_a_checkpointing_writer_never_see_the_store_go_back() {
        let dir = tmp("concurrent");
        let store = Arc::new(Store::open(&dir).expect("open"));
        store.set_checkpoint_cases(40);
        const ROUNDS: i64 = 3000;
        const LIVE: i64 = 20;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Each state: cases C{r-19}..=C{r}, each with `last_event` its own number.
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (store, done) = (store.clone(), done.clone());
                std::thread::spawn(move || {
                    let (mut seen, mut reads) = (0i64, 0usize);
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        let mut ids = Vec::new();
                        store
                            .scan_cases(None, |_, _, _, bytes| {
                                ids.push(decode_case(bytes).expect("decodes").last_event);
                                true
                            })
                            .expect("scan");
                        ids.sort_unstable();
                        let Some(&r) = ids.last() else { continue };
                        let want: Vec<i64> = ((r - LIVE + 1).max(1)..=r).collect();
                        assert_eq!(ids, want, "one committed state");
                        assert!(r >= seen, "went back from state {seen} to {r}");
                        seen = r;
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        for r in 1..=ROUNDS {
            let mut b = WriteBatch::default();
            if r > LIVE {
                b.cases.forget("t", 0, &format!("C{:05}", r - LIVE));
            }
            let mut case = json_case(r as usize);
            case.last_event = r;
            b.cases.put("t", 0, &case).expect("encode");
            b.offsets.push(("t".into(), 0, r as u64));
            if r % 7 == 0 {
                store.commit(&b).expect("commit");
            } else {
                store.commit_lazy(&b).expect("commit");
            }
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        for r in readers {
            let reads = r.join().expect("a reader failed");
            assert!(reads > 10, "only {reads} reads beside the writer");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A checkpoint merging into the oldest run leaves the forgotten cases out; one
    /// merging into newer runs keeps them forgotten over the older ones.
    #[test]
    fn forgotten_cases_stay_forgotten_and_leave_the_oldest_run() {
        let dir = tmp("tombstones");
        let store = Store::open(&dir).expect("open");
        store.set_checkpoint_cases(1);
        store.set_chunk_bytes(500);
        let put = |ids: std::ops::Range<usize>, forget: std::ops::Range<usize>, mark: i64| {
            let mut b = WriteBatch::default();
            for i in forget {
                b.cases.forget("t", (i % 3) as u32, &format!("C{i:05}"));
            }
            for i in ids {
                let mut case = json_case(i);
                case.last_event = mark;
                b.cases.put("t", (i % 3) as u32, &case).expect("encode");
            }
            for p in 0..3 {
                b.offsets.push(("t".into(), p, mark as u64));
            }
            store.commit(&b).expect("commit");
            store.finish_checkpoint().expect("checkpoint");
        };
        let live = |store: &Store| {
            let mut ids = Vec::new();
            store
                .scan_cases(None, |_, _, id, _| {
                    ids.push(id.to_string());
                    true
                })
                .expect("scan");
            ids.len()
        };
        put(0..60, 0..0, 1);
        assert_eq!(store.runs().len(), 1);
        assert_eq!(store.runs()[0].entries, 60);
        // A small checkpoint (forgetting 10) is a run of its own over the first.
        put(0..0, 0..10, 2);
        assert_eq!(store.runs().len(), 2, "{:?}", store.runs());
        assert_eq!(
            store.runs()[1].entries,
            10,
            "tombstones kept over an older run"
        );
        assert_eq!(live(&store), 50);
        assert_eq!(store.find_case("C00003").expect("find"), None);
        // A big one (40 forgotten, 100 new) merges into the oldest: nothing forgotten is
        // kept.
        put(60..160, 10..50, 3);
        assert_eq!(store.runs().len(), 1, "{:?}", store.runs());
        assert_eq!(store.runs()[0].entries, 110, "only the live cases");
        assert_eq!(live(&store), 110);
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_eq!(live(&store), 110);
        let found = store.find_case("C00055").expect("find");
        assert_eq!(found.map(|(_, p, c)| (p, c.last_event)), Some((1, 1)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The checkpoints' file of the first format 4 (a row per case in `cases`) is
    /// converted to a run when opened, every case kept.
    #[test]
    fn a_checkpoint_of_one_table_is_converted_to_a_run() {
        let dir = tmp("base1");
        let mut model = Model::new();
        let mut alerts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        {
            let store = Store::open(&dir).expect("open");
            let mut b = WriteBatch::default();
            for i in 0..60u32 {
                let mut case = json_case(i as usize);
                case.last_event = 7;
                b.cases.put("t", i % 3, &case).expect("encode");
                model.insert(("t".into(), i % 3, format!("C{i:05}")), 7);
            }
            b.alerts.push(alert_of("C00004", 1));
            alerts.insert("C00004".into(), vec![1]);
            for p in 0..3 {
                b.offsets.push(("t".into(), p, 1));
            }
            store.commit(&b).expect("commit");
            // Checkpointed, then rewritten as the first format 4 kept it.
            store.set_checkpoint_cases(1);
            store.commit(&WriteBatch::default()).expect("commit");
            store.finish_checkpoint().expect("checkpoint");
            assert_eq!(store.overlay_size(), 0);
        }
        {
            let db = Database::create(dir.join(BASE_FILE_NAME)).expect("base");
            let rtx = db.begin_read().expect("read");
            let meta = rtx.open_table(META).expect("meta");
            let list = runs::runs(&meta, &dir.join(BASE_FILE_NAME)).expect("runs");
            assert_eq!(list.len(), 1);
            let mut rows = Vec::new();
            let name = runs::table_name(list[0].n);
            let t = rtx.open_table(runs::ChunkTable::new(&name)).expect("run");
            let mut c = RunCursor::new(&t, list[0].n, &dir, Bound::Unbounded, Bound::Unbounded)
                .expect("cursor");
            while let Some((tp, p, id)) = c.key() {
                let v = c.value().expect("live").to_vec();
                rows.push(((tp.to_string(), p, id.to_string()), v));
                c.advance().expect("next");
            }
            assert_eq!(rows.len(), 60);
            drop((t, meta, rtx));
            let tx = db.begin_write().expect("write");
            {
                tx.delete_table(runs::ChunkTable::new(&name)).expect("drop");
                let mut cases = tx.open_table(CASES).expect("cases");
                for ((tp, p, id), v) in &rows {
                    cases
                        .insert((tp.as_str(), *p, id.as_str()), v.as_slice())
                        .expect("row");
                }
                let mut meta = tx.open_table(META).expect("meta");
                meta.remove(runs::META_RUNS).expect("runs");
            }
            tx.commit().expect("commit");
            legacy_alert_index(&db, BASE_SCHEMA_ONE_TABLE);
        }
        let store = Store::open(&dir).expect("open the first format");
        assert_eq!(store.runs().len(), 1);
        assert_eq!(store.runs()[0].entries, 60);
        assert_reads(&store, &model, &alerts, "converted");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_reads(&store, &model, &alerts, "reopened");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Rewrites a checkpoints' file's alert index as formats 1 and 2 of that file kept it:
    /// its runs into the one table `case_alerts`; the file marked `schema`.
    fn legacy_alert_index(db: &Database, schema: &str) {
        let file = Path::new("cases.redb");
        let rtx = db.begin_read().expect("read");
        let meta = rtx.open_table(META).expect("meta");
        let list = runs::list(&meta, alert_runs::META_ALERT_RUNS, file).expect("alert runs");
        let mut pairs = Vec::new();
        for r in &list {
            let name = alert_runs::table_name(r.n);
            let t = rtx
                .open_table(alert_runs::ChunkTable::new(&name))
                .expect("alert run");
            let mut c = alert_runs::Cursor::new(&t, r.n, file).expect("cursor");
            while let Some((case, seq)) = c.key() {
                pairs.push((case.to_string(), seq));
                c.advance().expect("next");
            }
        }
        drop((meta, rtx));
        let tx = db.begin_write().expect("write");
        {
            let mut index = tx.open_table(CASE_ALERTS).expect("index");
            for (case, seq) in &pairs {
                index.insert((case.as_str(), *seq), ()).expect("pair");
            }
            for r in &list {
                let name = alert_runs::table_name(r.n);
                tx.delete_table(alert_runs::ChunkTable::new(&name))
                    .expect("drop");
            }
            let mut meta = tx.open_table(META).expect("meta");
            meta.remove(alert_runs::META_ALERT_RUNS).expect("list");
            meta.insert("schema", schema.as_bytes()).expect("schema");
        }
        tx.commit().expect("commit");
    }

    /// A checkpoints' file of format 2 keeps its alert index in one table: read as it is,
    /// with the runs that checkpoints add from then on.
    #[test]
    fn a_format_2_checkpoint_keeps_its_alert_table_and_adds_runs() {
        let dir = tmp("base2");
        let mut model = Model::new();
        let mut alerts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        // Ten cases, each batch writing them again, and alerts on some.
        for i in 0..10u32 {
            model.insert(("t".into(), i % 3, format!("C{i:05}")), i64::from(i));
        }
        let commit =
            |store: &Store, alerts: &mut BTreeMap<String, Vec<u64>>, with: &[&str], offset: u64| {
                let mut b = WriteBatch::default();
                for i in 0..10u32 {
                    b.cases
                        .put("t", i % 3, &json_case(i as usize))
                        .expect("encode");
                }
                for (k, case) in with.iter().enumerate() {
                    b.alerts.push(alert_of(case, offset * 10 + k as u64));
                }
                for p in 0..3 {
                    b.offsets.push(("t".into(), p, offset));
                }
                for (seq, a) in store.commit(&b).expect("commit").iter().zip(&b.alerts) {
                    alerts.entry(a.case.to_string()).or_default().push(*seq);
                }
            };
        {
            let store = Store::open(&dir).expect("open");
            store.set_checkpoint_cases(1);
            commit(&store, &mut alerts, &["C00001", "C00002", "C00001"], 1);
            store.commit(&WriteBatch::default()).expect("commit");
            store.finish_checkpoint().expect("checkpoint");
            assert_eq!(store.overlay_size(), 0);
            assert_eq!(store.alert_runs().len(), 1);
        }
        {
            let db = Database::create(dir.join(BASE_FILE_NAME)).expect("base");
            legacy_alert_index(&db, BASE_SCHEMA_ONE_INDEX);
        }
        let schema = |dir: &Path| {
            let db = Database::create(dir.join(BASE_FILE_NAME)).expect("base");
            let rtx = db.begin_read().expect("read");
            let meta = rtx.open_table(META).expect("meta");
            let v = meta.get("schema").expect("get").expect("schema");
            String::from_utf8_lossy(v.value()).into_owned()
        };
        assert_eq!(schema(&dir), BASE_SCHEMA_ONE_INDEX);
        {
            let store = Store::open(&dir).expect("open format 2");
            assert!(store.alert_runs().is_empty(), "nothing converted");
            assert_reads(&store, &model, &alerts, "format 2 opened");
            store.set_checkpoint_cases(1);
            commit(&store, &mut alerts, &["C00001", "C00007"], 2);
            assert_reads(&store, &model, &alerts, "a batch over format 2");
            store.commit(&WriteBatch::default()).expect("commit");
            store.finish_checkpoint().expect("checkpoint");
            assert_eq!(store.alert_runs().len(), 1, "the new alerts are a run");
            assert_reads(&store, &model, &alerts, "checkpointed over format 2");
        }
        assert_eq!(schema(&dir), BASE_SCHEMA_VERSION);
        let store = Store::open(&dir).expect("reopen");
        assert_reads(&store, &model, &alerts, "reopened");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Rows of `table`: how many, how many of them packed, their bytes as stored and as
    /// they unpack.
    fn stored<K: redb::Key + 'static>(
        db: &Database,
        table: TableDefinition<K, &'static [u8]>,
    ) -> (usize, usize, usize, usize) {
        let tx = db.begin_read().expect("tx");
        let t = tx.open_table(table).expect("table");
        let mut row = Vec::new();
        let mut s = (0, 0, 0, 0);
        for r in t.iter().expect("iter") {
            let (_, v) = r.expect("row");
            runs::unpack_into(v.value(), &mut row).expect("unpacks");
            s.0 += 1;
            s.1 += usize::from(runs::is_packed(v.value()));
            s.2 += v.value().len();
            s.3 += row.len();
        }
        s
    }

    /// [`stored`] over every case run of the checkpoints' file.
    fn stored_runs(store: &Store) -> (usize, usize, usize, usize) {
        let mut s = (0, 0, 0, 0);
        for r in store.runs() {
            let name = runs::table_name(r.n);
            let t = stored(&store.base, runs::ChunkTable::new(&name));
            s = (s.0 + t.0, s.1 + t.1, s.2 + t.2, s.3 + t.3);
        }
        s
    }

    /// A batch of `cases` (id → its version mark, `last_event`) over three partitions of
    /// topic `t` (as [`assert_reads`] expects them), with an alert for every third case: into `model` and `alerts` too.
    fn commit_cases(
        store: &Store,
        cases: impl IntoIterator<Item = (usize, i64)>,
        model: &mut Model,
        alerts: &mut BTreeMap<String, Vec<u64>>,
    ) {
        let mut b = WriteBatch::default();
        for (i, version) in cases {
            let mut case = json_case(i);
            case.last_event = version;
            let partition = (i % 3) as u32;
            b.cases.put("t", partition, &case).expect("encode");
            model.insert(("t".into(), partition, format!("C{i:05}")), version);
            if i % 3 == 0 {
                b.alerts
                    .push(sized_alert(&format!("C{i:05}"), version as u64, 200));
            }
        }
        // The partitions' offsets: readers look for a case in the partitions they list.
        for p in 0..3 {
            b.offsets.push(("t".into(), p, b.cases.len() as u64));
        }
        for (seq, a) in store.commit(&b).expect("commit").iter().zip(&b.alerts) {
            alerts.entry(a.case.to_string()).or_default().push(*seq);
        }
    }

    /// Everything a store keeps in bulk is stored packed, in a fraction of its size, and
    /// read back as it was written, also after reopening.
    #[test]
    fn journal_rows_alert_groups_and_runs_are_stored_packed() {
        let dir = tmp("packed");
        let (mut model, mut alerts) = (Model::new(), BTreeMap::new());
        {
            let store = Store::open(&dir).expect("open");
            // 3,000 cases in one batch: a journal row of several pieces.
            commit_cases(&store, (0..3000).map(|i| (i, 1)), &mut model, &mut alerts);
            for (what, s) in [
                ("journal", stored(&store.db, JOURNAL)),
                ("alerts", stored(&store.db, ALERTS)),
            ] {
                assert!(s.0 >= 2 && s.1 == s.0, "{what}: every row packed: {s:?}");
                assert!(s.2 * 3 < s.3, "{what}: under a third of its size: {s:?}");
            }
            assert_reads(&store, &model, &alerts, "in the journal");
            store.set_checkpoint_cases(1);
            store.commit(&WriteBatch::default()).expect("commit");
            store.finish_checkpoint().expect("checkpoint");
            assert_eq!(store.overlay_size(), 0);
            let s = stored_runs(&store);
            assert!(s.0 >= 2 && s.1 == s.0, "runs: every chunk packed: {s:?}");
            assert!(s.2 * 3 < s.3, "runs: under a third of their size: {s:?}");
            assert_reads(&store, &model, &alerts, "checkpointed");
        }
        let store = Store::open(&dir).expect("reopen");
        assert_reads(&store, &model, &alerts, "reopened");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The keys of a stored journal row, in the row's order.
    fn row_keys(stored: &[u8]) -> Vec<(String, u32, String)> {
        let mut row = Vec::new();
        runs::unpack_into(stored, &mut row).expect("unpacks");
        decode_journal(&row)
            .expect("a journal row")
            .into_iter()
            .map(|(t, p, id, _)| (t.to_string(), p, id.to_string()))
            .collect()
    }

    /// A batch's cases are cut into journal rows in key order, whatever order they came in,
    /// and the overlay keeps those rows packed; journal rows in the order a batch came (as
    /// builds before 2026-12-04 evening wrote them) are read in key order all the same.
    #[test]
    fn journal_rows_are_in_key_order_and_rows_in_batch_order_are_read_too() {
        let dir = tmp("key-order");
        let (mut model, mut alerts) = (Model::new(), BTreeMap::new());
        {
            let store = Store::open(&dir).expect("open");
            // Backwards and then interleaved: each batch several pieces.
            commit_cases(
                &store,
                (0..3000).rev().map(|i| (i, 1)),
                &mut model,
                &mut alerts,
            );
            commit_cases(
                &store,
                (0..3000).map(|i| ((i * 7) % 3000, 2)),
                &mut model,
                &mut alerts,
            );
            let tx = store.db.begin_read().expect("tx");
            let journal = tx.open_table(JOURNAL).expect("journal");
            let mut rows = 0;
            for row in journal.iter().expect("iter") {
                let (_, v) = row.expect("row");
                let keys = row_keys(v.value());
                assert!(
                    keys.windows(2).all(|w| w[0] < w[1]),
                    "a row's cases in key order"
                );
                rows += 1;
            }
            assert!(rows >= 4, "several rows a batch: {rows}");
            let o = store.overlay_read();
            let packed: usize = o
                .generations
                .iter()
                .flat_map(|g| &g.journal)
                .map(Vec::len)
                .sum();
            let unpacked: usize = o.generations.iter().map(|g| g.bytes()).sum();
            assert!(
                packed * 3 < unpacked,
                "the overlay keeps its pieces packed: {packed} of {unpacked} bytes"
            );
            drop(o);
            let held = store.overlay_bytes();
            assert!(
                held > packed && held < unpacked,
                "the journal's memory counted: {held} bytes, {packed} of them packed cases"
            );
            assert_reads(&store, &model, &alerts, "in the journal");
        }
        {
            // Each row's cases in reverse, as a batch in reverse order came to older stores.
            let db = Database::open(dir.join(FILE_NAME)).expect("batches' file");
            let tx = db.begin_write().expect("tx");
            rewrite_rows(&tx, JOURNAL, |k, row| {
                let mut back = CaseChanges::default();
                for (topic, p, id, value) in decode_journal(&row).expect("a row").into_iter().rev()
                {
                    match value {
                        Some(r) => back.put_encoded(topic, p, id, &row[r]),
                        None => back.forget(topic, p, id),
                    }
                }
                let mut packed = Vec::new();
                let back = runs::pack(back.row(), &mut packed).to_vec();
                assert!(
                    !row_keys(&back).windows(2).all(|w| w[0] < w[1]),
                    "row {k} out of key order"
                );
                back
            });
            tx.commit().expect("commit");
        }
        {
            let store = Store::open(&dir).expect("open rows in batch order");
            assert!(
                store.overlay_bytes() > 0,
                "the journal read back is counted"
            );
            // Each batch's rows read back as one generation, as they were written.
            let batches = store
                .overlay_read()
                .generations
                .iter()
                .filter(|g| !g.cases.is_empty())
                .count();
            assert_eq!(batches, 2, "the rows of a batch join one generation");
            assert_reads(&store, &model, &alerts, "rows in batch order opened");
            commit_cases(
                &store,
                (1000..1500).map(|i| (i, 3)),
                &mut model,
                &mut alerts,
            );
            store.set_checkpoint_cases(1);
            store.commit(&WriteBatch::default()).expect("commit");
            store.finish_checkpoint().expect("checkpoint");
            assert_eq!(store.overlay_size(), 0);
            assert_eq!(store.overlay_bytes(), 0, "nothing held once checkpointed");
            assert_reads(&store, &model, &alerts, "checkpointed");
        }
        let store = Store::open(&dir).expect("reopen");
        assert_reads(&store, &model, &alerts, "reopened");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Rewrites every row of `table` as it unpacks, as the formats before packing wrote it.
    fn unpack_rows(tx: &redb::WriteTransaction, table: TableDefinition<u64, &'static [u8]>) {
        rewrite_rows(tx, table, |_, row| row);
    }

    /// Rewrites every row of `table` as `rewrite` makes it of the row unpacked.
    fn rewrite_rows(
        tx: &redb::WriteTransaction,
        table: TableDefinition<u64, &'static [u8]>,
        rewrite: impl Fn(u64, Vec<u8>) -> Vec<u8>,
    ) {
        let mut t = tx.open_table(table).expect("table");
        let rows: Vec<(u64, Vec<u8>)> = t
            .iter()
            .expect("iter")
            .map(|r| {
                let (k, v) = r.expect("row");
                let mut row = Vec::new();
                runs::unpack_into(v.value(), &mut row).expect("unpacks");
                (k.value(), rewrite(k.value(), row))
            })
            .collect();
        for (k, row) in rows {
            t.insert(k, row.as_slice()).expect("insert");
        }
    }

    /// [`unpack_rows`] for a run's chunks.
    fn unpack_chunks(tx: &redb::WriteTransaction, name: &str) {
        let mut t = tx.open_table(runs::ChunkTable::new(name)).expect("run");
        let rows: Vec<((String, u32, String), Vec<u8>)> = t
            .iter()
            .expect("iter")
            .map(|r| {
                let (k, v) = r.expect("row");
                let (topic, partition, id) = k.value();
                let mut row = Vec::new();
                runs::unpack_into(v.value(), &mut row).expect("unpacks");
                ((topic.to_string(), partition, id.to_string()), row)
            })
            .collect();
        for ((topic, partition, id), row) in rows {
            t.insert((topic.as_str(), partition, id.as_str()), row.as_slice())
                .expect("insert");
        }
    }

    /// A store of the formats before packing (the batches' file of format 6, the
    /// checkpoints' file of format 3) is read as it is, marked with the current formats,
    /// and its checkpoints merge its unpacked runs into packed ones.
    #[test]
    fn a_store_of_unpacked_rows_is_read_and_packs_from_then_on() {
        let dir = tmp("unpacked");
        let (mut model, mut alerts) = (Model::new(), BTreeMap::new());
        {
            let store = Store::open(&dir).expect("open");
            store.set_checkpoint_cases(1);
            commit_cases(&store, (0..1500).map(|i| (i, 1)), &mut model, &mut alerts);
            store.commit(&WriteBatch::default()).expect("commit");
            store.finish_checkpoint().expect("checkpoint");
            store.set_checkpoint_cases(1 << 30);
            // Half of them again, and more: journal rows beside the run.
            commit_cases(&store, (750..2500).map(|i| (i, 2)), &mut model, &mut alerts);
        }
        {
            let db = Database::open(dir.join(FILE_NAME)).expect("batches' file");
            let tx = db.begin_write().expect("tx");
            unpack_rows(&tx, JOURNAL);
            unpack_rows(&tx, ALERTS);
            tx.open_table(META)
                .expect("meta")
                .insert("schema", SCHEMA_UNPACKED.as_bytes())
                .expect("schema");
            tx.commit().expect("commit");
            let base = Database::open(dir.join(BASE_FILE_NAME)).expect("checkpoints' file");
            let tx = base.begin_write().expect("tx");
            let list = {
                let meta = tx.open_table(META).expect("meta");
                runs::runs(&meta, Path::new("cases.redb")).expect("runs")
            };
            assert_eq!(list.len(), 1, "one run");
            for r in &list {
                unpack_chunks(&tx, &runs::table_name(r.n));
            }
            tx.open_table(META)
                .expect("meta")
                .insert("schema", BASE_SCHEMA_UNPACKED.as_bytes())
                .expect("schema");
            tx.commit().expect("commit");
        }
        {
            let store = Store::open(&dir).expect("open the old formats");
            for s in [
                stored(&store.db, JOURNAL),
                stored(&store.db, ALERTS),
                stored_runs(&store),
            ] {
                assert!(s.0 > 0 && s.1 == 0, "nothing packed yet: {s:?}");
            }
            assert_reads(&store, &model, &alerts, "old formats opened");
            for (db, want) in [
                (&store.db, SCHEMA_VERSION),
                (&store.base, BASE_SCHEMA_VERSION),
            ] {
                let tx = db.begin_read().expect("tx");
                let meta = tx.open_table(META).expect("meta");
                let v = meta.get("schema").expect("get").expect("schema");
                assert_eq!(v.value(), want.as_bytes(), "marked {want}");
            }
            commit_cases(&store, (0..400).map(|i| (i, 3)), &mut model, &mut alerts);
            assert_reads(&store, &model, &alerts, "a batch over the old formats");
            store.set_checkpoint_cases(1);
            store.commit(&WriteBatch::default()).expect("commit");
            store.finish_checkpoint().expect("checkpoint");
            let s = stored_runs(&store);
            assert!(
                s.0 > 0 && s.1 == s.0,
                "the old run merged into a packed one: {s:?}"
            );
            assert_reads(&store, &model, &alerts, "checkpointed over the old formats");
        }
        let store = Store::open(&dir).expect("reopen");
        assert_reads(&store, &model, &alerts, "reopened");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A batch's changed cases come in any order, of several topics and partitions: its
    /// generation holds them in key order, a case written twice as its later version.
    #[test]
    fn a_generation_sorts_its_cases_by_topic_partition_and_id() {
        let mut row = CaseChanges::default();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut want = BTreeMap::new();
        for n in 0..400i64 {
            let topic = ["zeta", "alpha", "mid", "alpha.dl"][(next(&mut seed) % 4) as usize];
            let partition = (next(&mut seed) % 3) as u32;
            let i = (next(&mut seed) % 150) as usize;
            let mut case = json_case(i);
            case.last_event = n;
            row.put(topic, partition, &case).expect("encode");
            want.insert((topic.to_string(), partition, format!("C{i:05}")), n);
        }
        let want: Vec<_> = want.into_iter().collect();
        assert_eq!(generation_cases(row.row()), want);
    }

    /// The alert index's pairs come out as a plain sort orders them, whatever the ids
    /// share: the sort compares eight bytes from where they first differ before whole ids.
    #[test]
    fn the_alert_index_is_sorted_by_case_then_seq() {
        let mut seed = 0x0123_4567_89AB_CDEFu64;
        let ids: Vec<String> = (0..60)
            .map(|i| match i % 5 {
                0 => format!("SZ-440300-2026-{:09}", next(&mut seed) % 20),
                1 => format!("SZ-440300-2026-{:09}-补正", next(&mut seed) % 20),
                2 => format!("SZ-440300-2026-{}", next(&mut seed) % 20),
                3 => format!("SZ-440300-2026-{:09}\0{}", next(&mut seed) % 20, i),
                _ => "SZ-440300-2026-".to_string(),
            })
            .collect();
        for shared_by_all in [true, false] {
            let mut index: Vec<(&str, u64)> = (0..400)
                .map(|_| {
                    let id = &ids[(next(&mut seed) % ids.len() as u64) as usize];
                    (id.as_str(), next(&mut seed) % 50)
                })
                .collect();
            if !shared_by_all {
                index.push(("A", 7));
            }
            let mut want = index.clone();
            want.sort_unstable();
            sort_index(&mut index);
            assert_eq!(index, want);
        }
    }

    /// Ids drawn from a few characters that make long shared prefixes, prefixes of one
    /// another, zero bytes and multi-byte characters likely, behind an optional common
    /// prefix; the topic and partition from small ranges, so that cases repeat.
    fn batch() -> impl proptest::strategy::Strategy<Value = Vec<(u8, u32, String)>> {
        use proptest::prelude::*;
        let id = (
            any::<bool>(),
            proptest::collection::vec(
                proptest::sample::select(vec!['0', '1', '\0', 'a', '案']),
                0..12,
            ),
        )
            .prop_map(|(prefixed, chars)| {
                let tail: String = chars.into_iter().collect();
                if prefixed {
                    format!("XK-330100-2026-{tail}")
                } else {
                    tail
                }
            });
        proptest::collection::vec((0u8..3, 0u32..3, id), 1..120)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

        /// Any batch comes out of its generation in key order, of a case written twice the
        /// later write; and the alert index of its ids sorts as a plain sort does.
        #[test]
        fn any_batch_and_alert_index_sort_as_the_strings_do(cases in batch()) {
            let mut row = CaseChanges::default();
            let mut want = BTreeMap::new();
            for (n, (topic, partition, id)) in cases.iter().enumerate() {
                let topic = ["t", "t.a", "s"][usize::from(*topic)];
                let mut case = json_case(0);
                case.id = Arc::from(id.as_str());
                case.last_event = n as i64;
                row.put(topic, *partition, &case).expect("encode");
                want.insert((topic.to_string(), *partition, id.clone()), n as i64);
            }
            let want: Vec<_> = want.into_iter().collect();
            proptest::prop_assert_eq!(generation_cases(row.row()), want);
            let mut index: Vec<(&str, u64)> = cases
                .iter()
                .map(|(_, p, id)| (id.as_str(), u64::from(*p)))
                .collect();
            let mut plain = index.clone();
            plain.sort_unstable();
            sort_index(&mut index);
            proptest::prop_assert_eq!(index, plain);
        }
    }

    /// One case of [`padded_batches`]: topic, partition, id number, and the bytes of data it
    /// carries (`None`: forgotten).
    type Padded = (u8, u32, u16, Option<u16>);

    /// Batches of cases with data of any size (so that a batch is cut into several rows)
    /// and some forgotten.
    fn padded_batches() -> impl proptest::strategy::Strategy<Value = Vec<Vec<Padded>>> {
        let entry = (
            0u8..2,
            0u32..2,
            0u16..400,
            proptest::option::weighted(0.9, 0u16..3000),
        );
        proptest::collection::vec(proptest::collection::vec(entry, 1..150), 1..4)
    }

    /// The cases an overlay of `generations` gives in key order: each key and its case's
    /// `last_event` (`None`: forgotten).
    fn overlay_cases(generations: &[Arc<Generation>]) -> Vec<(CaseKey, Option<i64>)> {
        let cursor = OverlayCursor::new(generations, Bound::Unbounded, Bound::Unbounded);
        let mut over = OverlaySource::new(cursor, Path::new("test")).expect("reads");
        let mut out = Vec::new();
        while let Some((t, p, id)) = over.key() {
            let value = over
                .value()
                .map(|v| decode_case(v).expect("decodes").last_event);
            out.push(((t.to_string(), p, id.to_string()), value));
            over.advance().expect("reads");
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]

        /// Generations of any keys merge in key order, of each key the newest write: topics
        /// that first appear in a later generation, ids that share less and less of their
        /// start (the cursor's integers are then worked out again), ids that are prefixes
        /// of others, zero bytes and multi-byte characters.
        #[test]
        fn generations_of_any_keys_merge_in_key_order(
            batches in proptest::collection::vec(batch(), 1..6)
        ) {
            let mut want = BTreeMap::new();
            let mut scratch = PieceScratch::default();
            let mut generations = Vec::new();
            let mut n = 0i64;
            for batch in &batches {
                let mut row = CaseChanges::default();
                for (topic, partition, id) in batch {
                    let topic = ["t", "t.a", "s"][usize::from(*topic)];
                    n += 1;
                    let mut case = json_case(0);
                    case.id = Arc::from(id.as_str());
                    case.last_event = n;
                    row.put(topic, *partition, &case).expect("encode");
                    want.insert((topic.to_string(), *partition, id.clone()), Some(n));
                }
                let g = Generation::of_row(row.row(), &mut scratch).expect("a row");
                generations.push(Arc::new(g));
            }
            let want: Vec<_> = want.into_iter().collect();
            proptest::prop_assert_eq!(overlay_cases(&generations), want);
        }
    }

    /// A quiet daemon's journal: thousands of small batches, each a generation whose cases
    /// lie all over the key range. A full scan through them holds a buffer for each
    /// generation it is in the middle of, each of its piece's size, not a full piece's.
    #[test]
    fn a_scan_through_many_small_generations_holds_little() {
        let n = 2000;
        let mut scratch = PieceScratch::default();
        let generations: Vec<Arc<Generation>> = (0..n)
            .map(|i| {
                let mut row = CaseChanges::default();
                for id in [i, i + n, i + 2 * n] {
                    row.put("t", 0, &json_case(id)).expect("encode");
                }
                Arc::new(Generation::of_row(row.row(), &mut scratch).expect("a row"))
            })
            .collect();
        let cursor = OverlayCursor::new(&generations, Bound::Unbounded, Bound::Unbounded);
        let mut over = OverlaySource::new(cursor, Path::new("test")).expect("reads");
        let (mut read, mut most) = (0, 0);
        while let Some((_, _, id)) = over.key() {
            assert_eq!(id, format!("C{read:05}"), "in key order");
            assert!(over.value().is_some(), "a case");
            most = most.max(over.held());
            read += 1;
            over.advance().expect("reads");
        }
        assert_eq!(read, 3 * n);
        assert!(
            most < n * 1024,
            "{most} bytes of buffers for {n} generations of about 400 bytes"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Any batches, each cut into packed rows in key order, read through the overlay
        /// give each case's latest write (or its forgetting); read back from their stored
        /// rows as opening does (rows joined into generations), the same.
        #[test]
        fn packed_generations_read_back_the_latest_writes(batches in padded_batches()) {
            let mut want = BTreeMap::new();
            let mut live = Vec::new();
            let mut rows = Vec::new();
            let mut scratch = PieceScratch::default();
            let mut n = 0i64;
            for batch in &batches {
                let mut row = CaseChanges::default();
                for &(topic, partition, id, pad) in batch {
                    let topic = ["t", "t.b"][usize::from(topic)];
                    let id = format!("XK-{id:05}");
                    n += 1;
                    let value = pad.map(|pad| {
                        let mut case = json_case(0);
                        case.id = Arc::from(id.as_str());
                        case.last_event = n;
                        case.data.push((
                            arcstr::ArcStr::from("pad"),
                            crate::engine::Datum::Str(arcstr::ArcStr::from(
                                "x".repeat(usize::from(pad)),
                            )),
                        ));
                        case.data.sort_by(|a, b| a.0.cmp(&b.0));
                        row.put(topic, partition, &case).expect("encode");
                        n
                    });
                    if value.is_none() {
                        row.forget(topic, partition, &id);
                    }
                    want.insert((topic.to_string(), partition, id), value);
                }
                let g = Generation::of_row(row.row(), &mut scratch).expect("a row");
                rows.extend(g.journal.iter().cloned());
                live.push(Arc::new(g));
            }
            let want: Vec<_> = want.into_iter().collect();
            proptest::prop_assert_eq!(overlay_cases(&live), want.clone());
            let (mut reopened, mut current) = (Vec::new(), None);
            let mut unpacked = Vec::new();
            for stored in &rows {
                let g = Generation::of_stored(stored, &mut unpacked, &mut scratch).expect("a row");
                read_back(&mut reopened, &mut current, Some(g));
            }
            read_back(&mut reopened, &mut current, None);
            proptest::prop_assert!(reopened.len() <= live.len());
            proptest::prop_assert_eq!(overlay_cases(&reopened), want);
        }
    }

    /// A journal row's cases as its generation orders them: each key, and the case's
    /// `last_event` (which the tests set to its place in the batch).
    fn generation_cases(row: &[u8]) -> Vec<((String, u32, String), i64)> {
        let g = Generation::of_row(row, &mut PieceScratch::default()).expect("a row");
        g.cases
            .iter()
            .map(|e| {
                let (t, p, id) = g.key_of(e);
                let bytes = g
                    .get(t, p, id)
                    .expect("unpacks")
                    .expect("in it")
                    .expect("a case");
                let case = decode_case(&bytes).expect("decodes");
                assert_eq!(&*case.id, id);
                ((t.to_string(), p, id.to_string()), case.last_event)
            })
            .collect()
    }

    /// The sort compares eight bytes from where the batch's ids first differ before it
    /// compares whole ids: ids that agree in those eight bytes, ids that are prefixes of
    /// others, a zero byte (which the padding also is) and multi-byte characters must
    /// still come out in the strings' order, the later of a case written twice kept.
    #[test]
    fn a_generation_orders_ids_that_share_long_prefixes() {
        let ids = [
            "XK-330100-2026-000000001-a",
            "XK-330100-2026-000000001-b",
            "XK-330100-2026-000000001",
            "XK-330100-2026-00000000",
            "XK-330100-2026-000000001\0",
            "XK-330100-2026-000000001\0\0x",
            "XK-330100-2026-0000000010",
            "XK-330100-2026-1",
            "XK-330100-2026-",
            "XK-330100-2026-案件-1",
            "XK-330100-2026-案件-01",
            "XK-330100",
        ];
        let mut row = CaseChanges::default();
        let mut want = BTreeMap::new();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for n in 0..200i64 {
            let id = ids[(next(&mut seed) % ids.len() as u64) as usize];
            let topic = ["b", "a"][(next(&mut seed) % 2) as usize];
            let partition = (next(&mut seed) % 2) as u32;
            let mut case = json_case(0);
            case.id = Arc::from(id);
            case.last_event = n;
            row.put(topic, partition, &case).expect("encode");
            want.insert((topic.to_string(), partition, id.to_string()), n);
        }
        let want: Vec<_> = want.into_iter().collect();
        assert_eq!(generation_cases(row.row()), want);
        // One topic, one partition, ids all sharing their first 20 bytes.
        let mut row = CaseChanges::default();
        let mut want = BTreeMap::new();
        for n in 0..300i64 {
            let id = format!("APPROVAL-2026-000000-{:07}", next(&mut seed) % 500);
            let mut case = json_case(0);
            case.id = Arc::from(id.as_str());
            case.last_event = n;
            row.put("t", 0, &case).expect("encode");
            want.insert(("t".to_string(), 0, id), n);
        }
        let want: Vec<_> = want.into_iter().collect();
        assert_eq!(generation_cases(row.row()), want);
    }

    #[test]
    fn alerts_are_stored_compactly_and_read_back_whole() {
        let full = Alert {
            deadline: Some("2026-11-20T00:00:00+08:00".into()),
            detail: Some("no `market.report_submitted` for 2026Q3".into()),
            department: Some("银川市市场监管局".into()),
            item: Some("建筑工程施工许可".into()),
            handler: Some("张\"三\"".into()),
            title: "定期召开安全生产工作会议".into(),
            basis: "《杭州市安全生产责任制规定》第十三条第（二）项".into(),
            ..alert_of("XZ-1", 7)
        };
        for a in [alert_of("C00001", 1), full] {
            let mut bytes = Vec::new();
            encode_alert(&a, &mut bytes);
            assert_ne!(bytes.first(), Some(&b'{'));
            let json = serde_json::to_vec(&a).expect("json");
            assert!(
                bytes.len() < json.len(),
                "{} against {}",
                bytes.len(),
                json.len()
            );
            // Both the stored form and the JSON of format 4 read back as the same alert.
            assert_eq!(decode_alert(&bytes), Ok(a.clone()));
            assert_eq!(decode_alert(&json), Ok(a.clone()));
        }
        let err = decode_alert(&[0x93, 0x01]).expect_err("a short array");
        assert!(!err.is_empty());
    }

    /// An alert of `case` numbered `n`, `extra` bytes of detail making it bigger.
    fn sized_alert(case: &str, n: u64, extra: usize) -> Alert {
        let mut a = alert_of(case, n);
        a.detail = Some("办".repeat(extra / 3));
        a
    }

    /// Marks the store in `dir` (closed) as of format `schema` and replaces its `alerts`
    /// rows with `rows`, as that format wrote them.
    fn rewrite_alert_rows(dir: &Path, schema: &str, rows: &[(u64, Vec<u8>)]) {
        let db = Database::open(dir.join(FILE_NAME)).expect("reopen the file");
        let tx = db.begin_write().expect("tx");
        {
            let mut meta = tx.open_table(META).expect("meta");
            meta.insert("schema", schema.as_bytes()).expect("schema");
            let mut t = tx.open_table(ALERTS).expect("alerts");
            t.retain(|_, _| false).expect("cleared");
            for (k, v) in rows {
                t.insert(*k, v.as_slice()).expect("alert");
            }
        }
        tx.commit().expect("commit");
    }

    /// The store's `schema` says this version's format.
    fn assert_marked_current(store: &Store) {
        let tx = store.db.begin_read().expect("tx");
        let meta = tx.open_table(META).expect("meta");
        let schema = meta.get("schema").expect("get").expect("schema");
        assert_eq!(
            schema.value(),
            SCHEMA_VERSION.as_bytes(),
            "marked {SCHEMA_VERSION}"
        );
    }

    /// Rows of the `alerts` table: `(key, whether a group)`, packed or not.
    fn alert_rows(store: &Store) -> Vec<(u64, bool)> {
        let tx = store.db.begin_read().expect("tx");
        let t = tx.open_table(ALERTS).expect("alerts");
        let mut row = Vec::new();
        t.iter()
            .expect("iter")
            .map(|r| {
                let (k, v) = r.expect("row");
                runs::unpack_into(v.value(), &mut row).expect("unpack");
                (k.value(), row.first() == Some(&ALERT_GROUP))
            })
            .collect()
    }

    #[test]
    fn alerts_are_stored_in_groups_and_read_one_by_one_from_any_point() {
        let dir = tmp("alert-groups");
        let store = Store::open(&dir).expect("open");
        // 700 alerts of 10 cases, 150 to 450 bytes of detail each: several groups; then
        // batches of 3 and 1; then one alert bigger than a group beside two small ones.
        let mut all: Vec<(u64, Alert)> = Vec::new();
        let mut next = 1;
        for (n, extra) in [(700u64, None), (3, None), (1, None), (3, Some(70_000))] {
            let mut b = WriteBatch::default();
            for i in 0..n {
                let big = extra
                    .filter(|_| i == 1)
                    .unwrap_or(150 + (next as usize * 37) % 300);
                b.alerts
                    .push(sized_alert(&format!("C{:05}", next % 10), next + i, big));
            }
            let seqs = store.commit(&b).expect("commit");
            assert_eq!(seqs, (next..next + n).collect::<Vec<_>>(), "numbered on");
            all.extend(seqs.into_iter().zip(b.alerts));
            next += n;
        }
        let rows = alert_rows(&store);
        assert!(rows.iter().all(|r| r.1), "every new row a group: {rows:?}");
        assert!(
            rows.len() > 4 && rows.len() < 20,
            "700 alerts of about 500 bytes in several 60 KiB groups: {rows:?}"
        );
        assert!(
            rows.contains(&(701, true)) && rows.contains(&(704, true)),
            "{rows:?}"
        );
        let check = |store: &Store, all: &[(u64, Alert)], at: &str| {
            assert_eq!(
                store.alert_count().expect("count"),
                all.len() as u64,
                "{at}"
            );
            for after in [
                0, 1, 2, 150, 333, 699, 700, 701, 703, 704, 705, 706, 707, 9999,
            ] {
                for limit in [0, 1, 5, 1000] {
                    let want: Vec<_> = all
                        .iter()
                        .filter(|(s, _)| *s > after)
                        .take(limit)
                        .cloned()
                        .collect();
                    assert_eq!(
                        store.alerts(after, limit).expect("alerts"),
                        want,
                        "after {after}, limit {limit}, {at}"
                    );
                }
                let mut seen = Vec::new();
                store
                    .scan_alerts(after, |seq, bytes| {
                        assert_eq!(decode_alert(bytes).as_ref(), Ok(&all[seq as usize - 1].1));
                        seen.push(seq);
                        seen.len() < 7
                    })
                    .expect("scan");
                let want: Vec<u64> = all
                    .iter()
                    .map(|(s, _)| *s)
                    .filter(|s| *s > after)
                    .take(7)
                    .collect();
                assert_eq!(seen, want, "scan after {after}, {at}");
            }
            for c in 0..10 {
                let case = format!("C{c:05}");
                let want: Vec<_> = all
                    .iter()
                    .filter(|(_, a)| *a.case == *case)
                    .cloned()
                    .collect();
                assert_eq!(store.case_alerts(&case).expect("case"), want, "{case} {at}");
            }
        };
        check(&store, &all, "written");
        // Reopened: the overlay's alerts are read back from the groups.
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        check(&store, &all, "reopened");
        let mut b = WriteBatch::default();
        b.alerts.push(sized_alert("C00003", 708, 10));
        assert_eq!(
            store.commit(&b).expect("commit"),
            [708],
            "numbered after the last group"
        );
        all.push((708, b.alerts.remove(0)));
        // And checkpointed: the index by case, built from the groups.
        store.set_checkpoint_cases(1);
        store.commit(&WriteBatch::default()).expect("commit");
        store.finish_checkpoint().expect("checkpoint");
        check(&store, &all, "checkpointed");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_alert_group_is_an_error_naming_it() {
        let a = alert_of("C1", 1);
        let mut one = Vec::new();
        encode_alert(&a, &mut one);
        let mut row = vec![ALERT_GROUP];
        row.extend_from_slice(&2u32.to_le_bytes());
        row.extend_from_slice(&(one.len() as u32).to_le_bytes());
        row.extend_from_slice(&(one.len() as u32).to_le_bytes());
        row.extend_from_slice(&one);
        row.extend_from_slice(&one);
        let read: Vec<_> = RowAlerts::of(7, &row).expect("whole").collect();
        assert_eq!(read, [(7, one.as_slice()), (8, one.as_slice())]);
        for cut in [1, 3, 8, row.len() - 1] {
            let err = RowAlerts::of(7, &row[..cut]).err().expect("damaged");
            assert!(err.contains("alert group"), "{cut}: {err}");
        }
        let mut longer = row.clone();
        longer.push(0);
        assert!(RowAlerts::of(7, &longer).is_err(), "a byte too many");
        // A row of one alert, as formats 4 and 5 stored it.
        let read: Vec<_> = RowAlerts::of(9, &one).expect("one").collect();
        assert_eq!(read, [(9, one.as_slice())]);
    }

    /// The alerts' sequence numbers `alerts(0, …)` gives.
    fn alert_seqs(store: &Store) -> Vec<u64> {
        let all = store.alerts(0, usize::MAX).expect("alerts");
        all.into_iter().map(|(seq, _)| seq).collect()
    }

    /// Commits a batch of alerts for `cases` on `day` (days since 1970, at noon UTC);
    /// returns their sequence numbers.
    fn alerts_on(store: &Store, day: i64, cases: &[&str]) -> Vec<u64> {
        store.set_clock_ms(day * crate::clock::DAY + crate::clock::DAY / 2);
        let mut b = WriteBatch::default();
        for (i, c) in cases.iter().enumerate() {
            b.alerts.push(alert_of(c, i as u64));
        }
        store.commit(&b).expect("commit")
    }

    /// `store.alerts_keep_days`: alerts committed more than that many days ago leave the
    /// log (`alerts`, a case's alerts through the index and the overlay, the count); newer
    /// ones stay, and the numbering goes on after them, also after a reopen. With 0 (the
    /// default) nothing is ever deleted.
    #[test]
    fn alerts_older_than_the_days_kept_are_deleted() {
        let dir = tmp("alerts-keep");
        let day = 20_000; // 2024-10-04
        let store = Store::open(&dir).expect("open");
        // Day 0: three batches (rows 1, 3 and 4); day 3: one (row 5), indexed by case by a
        // checkpoint; day 100: one more, with every alert still kept.
        assert_eq!(alerts_on(&store, day, &["C1", "C2"]), [1, 2]);
        assert_eq!(alerts_on(&store, day, &["C1"]), [3]);
        assert_eq!(alerts_on(&store, day, &["C3"]), [4]);
        store.set_checkpoint_cases(1);
        assert_eq!(alerts_on(&store, day + 3, &["C1", "C3"]), [5, 6]);
        store.finish_checkpoint().expect("checkpoint");
        store.set_checkpoint_cases(1_000_000);
        assert_eq!(alerts_on(&store, day + 100, &["C3"]), [7]);
        assert_eq!(alert_seqs(&store), [1, 2, 3, 4, 5, 6, 7]);
        drop(store);

        // Kept for 7 days, on day 104: what came before day 97 goes with the next batch.
        let store = Store::open(&dir).expect("reopen");
        store.set_alerts_keep_days(7);
        assert_eq!(
            alerts_on(&store, day + 104, &["C2"]),
            [8],
            "numbering goes on"
        );
        assert_eq!(alert_seqs(&store), [7, 8]);
        assert_eq!(store.alert_count().expect("count"), 2);
        assert!(store.case_alerts("C1").expect("C1").is_empty());
        let c3: Vec<u64> = store
            .case_alerts("C3")
            .expect("C3")
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(c3, [7]);
        assert_eq!(store.alerts(0, 1).expect("first")[0].0, 7);
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_eq!(alert_seqs(&store), [7, 8]);
        assert_eq!(alerts_on(&store, day + 105, &["C1"]), [9]);
        // The next checkpoint big enough to merge the index's run of days 0 and 3 leaves
        // the deleted alerts' pairs out: the index holds the alerts kept, no more.
        assert_eq!(store.alert_runs().iter().map(|r| r.entries).sum::<u64>(), 6);
        store.set_checkpoint_cases(1);
        let many: Vec<String> = (10..30).map(|i| format!("C{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            alerts_on(&store, day + 105, &many),
            (10..30).collect::<Vec<u64>>()
        );
        store.finish_checkpoint().expect("checkpoint");
        let runs = store.alert_runs();
        assert_eq!(runs.len(), 1, "merged: {runs:?}");
        assert_eq!(runs[0].entries, alert_seqs(&store).len() as u64);
        assert_eq!(alert_seqs(&store), (7..30).collect::<Vec<u64>>());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);

        // Never deleted with 0.
        let dir = tmp("alerts-keep-all");
        let store = Store::open(&dir).expect("open");
        alerts_on(&store, day, &["C1"]);
        alerts_on(&store, day + 3650, &["C1"]);
        alerts_on(&store, day + 3651, &["C1"]);
        assert_eq!(alert_seqs(&store), [1, 2, 3]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The deletion takes at most [`PRUNE_ALERT_ROWS`] rows a batch, oldest first; alerts
    /// stored before the store marked days (or with the clock set back) count as of the
    /// next day marked, never as older; and the newest row stays, however old.
    #[test]
    fn alerts_are_deleted_in_steps_and_never_early() {
        let dir = tmp("alerts-keep-steps");
        let day = 20_000;
        let store = Store::open(&dir).expect("open");
        for _ in 0..70 {
            alerts_on(&store, day, &["C1"]);
        }
        // As a store from before the days were marked.
        {
            let tx = store.db.begin_write().expect("write");
            tx.delete_table(ALERT_DAYS).expect("delete");
            tx.commit().expect("commit");
        }
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        store.set_alerts_keep_days(7);
        // Day 10 is the first marked: the 70 count as of it, so nothing goes yet; nor
        // with the clock set back to day 2 (not marked: those count as of day 10 too).
        assert_eq!(alerts_on(&store, day + 10, &["C2"]), [71]);
        assert_eq!(alerts_on(&store, day + 2, &["C2"]), [72]);
        assert_eq!(alert_seqs(&store).len(), 72);
        assert_eq!(alerts_on(&store, day + 17, &["C3"]), [73]);
        assert_eq!(alert_seqs(&store).len(), 73);
        // Day 18: everything before day 11 is older. 64 rows with this batch, the rest with
        // the next.
        assert_eq!(alerts_on(&store, day + 18, &["C3"]), [74]);
        let left = alert_seqs(&store);
        assert_eq!(left.first(), Some(&65), "{left:?}");
        assert_eq!(alerts_on(&store, day + 18, &["C3"]), [75]);
        assert_eq!(alert_seqs(&store), [73, 74, 75]);
        // A year later, a batch without alerts: only the newest row stays, and counts as
        // of the next day marked.
        assert!(alerts_on(&store, day + 400, &[]).is_empty());
        assert_eq!(alert_seqs(&store), [75]);
        assert_eq!(alerts_on(&store, day + 401, &["C4", "C4"]), [76, 77]);
        assert_eq!(alert_seqs(&store), [75, 76, 77]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_format_5_store_keeps_its_alert_rows_and_groups_new_ones() {
        let dir = tmp("format5");
        {
            let store = Store::open(&dir).expect("open");
            let mut b = WriteBatch::default();
            b.alerts.push(alert_of("C00001", 1));
            b.alerts.push(alert_of("C00002", 2));
            store.commit(&b).expect("commit");
            drop(store);
            // Made format 5: each alert a row of its own, as format 5 wrote them.
            let rows: Vec<(u64, Vec<u8>)> = [1, 2]
                .into_iter()
                .map(|n| {
                    let mut bytes = Vec::new();
                    encode_alert(&alert_of(&format!("C0000{n}"), n), &mut bytes);
                    (n, bytes)
                })
                .collect();
            rewrite_alert_rows(&dir, SCHEMA_ALERT_ROWS, &rows);
        }
        let store = Store::open(&dir).expect("open a format-5 store");
        assert_eq!(alert_rows(&store), [(1, false), (2, false)]);
        let mut b = WriteBatch::default();
        b.alerts.push(alert_of("C00001", 3));
        b.alerts.push(alert_of("C00003", 4));
        assert_eq!(store.commit(&b).expect("commit"), [3, 4]);
        assert_eq!(alert_rows(&store), [(1, false), (2, false), (3, true)]);
        let want: Vec<_> = [("C00001", 1), ("C00002", 2), ("C00001", 3), ("C00003", 4)]
            .into_iter()
            .map(|(c, n)| (n, alert_of(c, n)))
            .collect();
        assert_eq!(store.alerts(0, 10).expect("alerts"), want);
        assert_eq!(store.alerts(1, 2).expect("alerts"), want[1..3]);
        assert_eq!(
            store.case_alerts("C00001").expect("case"),
            [want[0].clone(), want[2].clone()]
        );
        assert_eq!(store.alert_count().expect("count"), 4);
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_marked_current(&store);
        assert_eq!(store.alerts(2, 10).expect("alerts"), want[2..]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_format_4_store_keeps_its_json_alerts_and_stores_new_ones_compactly() {
        let dir = tmp("format4");
        let mut model = Model::new();
        let mut alerts = BTreeMap::new();
        {
            let store = Store::open(&dir).expect("open");
            let mut b = WriteBatch::default();
            b.cases.put("t", 1, &json_case(1)).expect("encode");
            b.offsets.push(("t".into(), 1, 1));
            b.alerts.push(alert_of("C00001", 1));
            store.commit(&b).expect("commit");
            model.insert(("t".into(), 1, "C00001".into()), json_case(1).last_event);
            alerts.insert("C00001".to_string(), vec![1]);
            drop(store);
            // Made format 4: its alert rewritten as JSON, as format 4 wrote it.
            let json = serde_json::to_vec(&alert_of("C00001", 1)).expect("json");
            rewrite_alert_rows(&dir, SCHEMA_JSON_ALERTS, &[(1, json)]);
        }
        let store = Store::open(&dir).expect("open a format-4 store");
        assert_eq!(
            store.overlay_size(),
            2,
            "its case and its unindexed JSON alert"
        );
        assert_reads(&store, &model, &alerts, "opened");
        let mut b = WriteBatch::default();
        b.alerts.push(alert_of("C00001", 2));
        assert_eq!(store.commit(&b).expect("commit"), [2]);
        alerts.insert("C00001".into(), vec![1, 2]);
        assert_reads(&store, &model, &alerts, "written on");
        let mut raw = Vec::new();
        store
            .scan_alerts(0, |seq, bytes| {
                raw.push((seq, bytes.first() == Some(&b'{')));
                true
            })
            .expect("scan");
        assert_eq!(
            raw,
            [(1, true), (2, false)],
            "the old alert as JSON, the new one not"
        );
        assert_eq!(
            store.alerts(0, 10).expect("alerts"),
            [(1, alert_of("C00001", 1)), (2, alert_of("C00001", 2))]
        );
        // A checkpoint indexes both kinds by case.
        store.set_checkpoint_cases(1);
        store.commit(&WriteBatch::default()).expect("commit");
        store.finish_checkpoint().expect("checkpoint");
        assert_eq!(store.overlay_size(), 0, "all in the checkpoint");
        assert_reads(&store, &model, &alerts, "checkpointed");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_marked_current(&store);
        assert_reads(&store, &model, &alerts, "reopened");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_format_2_store_is_read_as_a_checkpoint_and_written_on() {
        let dir = tmp("format2");
        std::fs::create_dir_all(&dir).expect("dir");
        let case = json_case(1);
        {
            // Format 2: cases and their alert index written in place, no journal.
            let db = Database::create(dir.join(FILE_NAME)).expect("create");
            let tx = db.begin_write().expect("tx");
            {
                let mut meta = tx.open_table(META).expect("meta");
                meta.insert("schema", SCHEMA_NO_JOURNAL.as_bytes())
                    .expect("schema");
                let mut cases = tx.open_table(CASES).expect("cases");
                let bytes = encode_case(&case).expect("encode");
                cases
                    .insert(("t", 1, "C00001"), bytes.as_slice())
                    .expect("case");
                let mut offsets = tx.open_table(OFFSETS).expect("offsets");
                offsets.insert(("t", 1), 5).expect("offset");
                let json = serde_json::to_vec(&alert_of("C00001", 1)).expect("json");
                let mut a = tx.open_table(ALERTS).expect("alerts");
                a.insert(1, json.as_slice()).expect("alert");
                let mut index = tx.open_table(CASE_ALERTS).expect("index");
                index.insert(("C00001", 1), ()).expect("index");
            }
            tx.commit().expect("commit");
        }
        let store = Store::open(&dir).expect("open a format-2 store");
        assert_eq!(store.overlay_size(), 0, "its alert is indexed already");
        let mut model = Model::new();
        // Partition 1, as `assert_reads` expects of case 1.
        model.insert(("t".into(), 1, "C00001".into()), case.last_event);
        let mut alerts = BTreeMap::from([("C00001".to_string(), vec![1])]);
        assert_reads(&store, &model, &alerts, "opened");
        // Written on: a new alert of the same case comes after the indexed one.
        let mut b = WriteBatch::default();
        b.alerts.push(alert_of("C00001", 2));
        let seqs = store.commit(&b).expect("commit");
        assert_eq!(seqs, [2]);
        alerts.insert("C00001".into(), vec![1, 2]);
        assert_reads(&store, &model, &alerts, "written on");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_reads(&store, &model, &alerts, "reopened");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_format_3_store_moves_its_checkpoint_to_the_second_file_and_keeps_its_journal() {
        let dir = tmp("format3");
        std::fs::create_dir_all(&dir).expect("dir");
        let (one, two) = (json_case(1), json_case(2));
        {
            // Format 3: the checkpoint (case 1, alert 1 indexed) and the journal (case 2,
            // alert 2) in one file.
            let db = Database::create(dir.join(FILE_NAME)).expect("create");
            let tx = db.begin_write().expect("tx");
            {
                let mut meta = tx.open_table(META).expect("meta");
                meta.insert("schema", SCHEMA_ONE_FILE.as_bytes())
                    .expect("schema");
                meta.insert(META_INDEXED, 1u64.to_be_bytes().as_slice())
                    .expect("indexed");
                let mut cases = tx.open_table(CASES).expect("cases");
                let bytes = encode_case(&one).expect("encode");
                cases
                    .insert(("t", 1, "C00001"), bytes.as_slice())
                    .expect("case");
                let mut changes = CaseChanges::default();
                changes.put("t", 2, &two).expect("encode");
                let mut journal = tx.open_table(JOURNAL).expect("journal");
                journal.insert(0, changes.row()).expect("row");
                let mut offsets = tx.open_table(OFFSETS).expect("offsets");
                offsets.insert(("t", 1), 5).expect("offset");
                offsets.insert(("t", 2), 3).expect("offset");
                let mut a = tx.open_table(ALERTS).expect("alerts");
                for (seq, case) in [(1, "C00001"), (2, "C00002")] {
                    let json = serde_json::to_vec(&alert_of(case, seq)).expect("json");
                    a.insert(seq, json.as_slice()).expect("alert");
                }
                let mut index = tx.open_table(CASE_ALERTS).expect("index");
                index.insert(("C00001", 1), ()).expect("index");
            }
            tx.commit().expect("commit");
        }
        let store = Store::open(&dir).expect("open a format-3 store");
        assert_eq!(
            store.overlay_size(),
            2,
            "case 2 and alert 2 are not checkpointed"
        );
        let mut model = Model::new();
        model.insert(("t".into(), 1, "C00001".into()), one.last_event);
        model.insert(("t".into(), 2, "C00002".into()), two.last_event);
        let mut alerts = BTreeMap::from([
            ("C00001".to_string(), vec![1]),
            ("C00002".to_string(), vec![2]),
        ]);
        assert_reads(&store, &model, &alerts, "opened");
        {
            let tx = store.db.begin_read().expect("tx");
            assert!(
                matches!(
                    tx.open_table(CASES),
                    Err(redb::TableError::TableDoesNotExist(_))
                ),
                "the checkpoint left the batches' file"
            );
        }
        store.set_checkpoint_cases(1);
        let mut b = WriteBatch::default();
        b.alerts.push(alert_of("C00002", 3));
        assert_eq!(store.commit(&b).expect("commit"), [3]);
        store.finish_checkpoint().expect("checkpoint");
        assert_eq!(store.overlay_size(), 0, "all checkpointed");
        alerts.insert("C00002".into(), vec![2, 3]);
        assert_reads(&store, &model, &alerts, "written on");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_reads(&store, &model, &alerts, "reopened");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_big_batch_is_journaled_in_pieces_and_read_back_whole() {
        let dir = tmp("pieces");
        let store = Store::open(&dir).expect("open");
        let mut model = Model::new();
        let mut b = WriteBatch::default();
        // About 120 bytes each: 2,000 cases are several pieces.
        for i in 0..2000usize {
            let key = ("t".to_string(), (i % 3) as u32, format!("C{i:05}"));
            if i % 7 == 3 {
                b.cases.forget(&key.0, key.1, &key.2);
            } else {
                b.cases.put(&key.0, key.1, &json_case(i)).expect("encode");
                model.insert(key.clone(), i as i64);
            }
        }
        for p in 0..3 {
            b.offsets.push(("t".into(), p, 1));
        }
        assert!(b.cases.row().len() > 2 * JOURNAL_PIECE);
        store.commit(&b).expect("commit");
        let rows = {
            let tx = store.db.begin_read().expect("tx");
            let journal = tx.open_table(JOURNAL).expect("journal");
            for row in journal.iter().expect("rows") {
                let (k, v) = row.expect("row");
                let len = v.value().len();
                assert!(len <= JOURNAL_PIECE, "piece {} of {len} bytes", k.value());
            }
            journal.len().expect("len")
        };
        assert!(rows >= 3, "{rows} journal rows");
        fn check(store: &Store, model: &Model, at: &str) {
            let mut all = Vec::new();
            store
                .scan_cases(None, |t, p, id, bytes| {
                    let case = decode_case(bytes).expect("decodes");
                    all.push(((t.to_string(), p, id.to_string()), case.last_event));
                    true
                })
                .expect("scan");
            let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
            assert_eq!(all, want, "{at}");
        }
        check(&store, &model, "committed");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        check(&store, &model, "reopened");
        // The next batch is numbered after the pieces.
        let mut b = WriteBatch::default();
        let key = ("t".to_string(), 1, "C00001".to_string());
        let mut case = json_case(1);
        case.last_event = 99;
        b.cases.put(&key.0, key.1, &case).expect("encode");
        store.commit(&b).expect("commit");
        model.insert(key, 99);
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        check(&store, &model, "reopened after one more batch");
        let find = |id: &str| {
            store
                .find_case(id)
                .expect("find")
                .map(|(_, p, c)| (p, c.last_event))
        };
        assert_eq!(find("C00001"), Some((1, 99)), "the later batch's version");
        assert_eq!(find("C00003"), None, "forgotten in the big batch");
        assert_eq!(find("C01999"), Some((1, 1999)), "in the last piece");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The rows a checkpoint holds are deleted a few per batch, oldest first: every read
    /// meanwhile (and after a reopen half-way) shows the same cases, and the journal ends
    /// up holding only the rows after the checkpoint.
    #[test]
    fn a_checkpoints_journal_rows_go_a_few_per_batch() {
        let dir = tmp("truncate");
        let mut store = Store::open(&dir).expect("open");
        store.set_checkpoint_cases(1_000_000);
        store.set_truncate_rows(3);
        let mut model = Model::new();
        let alerts = BTreeMap::new();
        let put = |store: &Store, model: &mut Model, i: usize| {
            let key = ("t".to_string(), (i % 3) as u32, format!("C{i:05}"));
            let mut b = WriteBatch::default();
            b.cases.put(&key.0, key.1, &json_case(i)).expect("encode");
            b.offsets.push((key.0.clone(), key.1, i as u64 + 1));
            store.commit(&b).expect("commit");
            model.insert(key, i as i64);
        };
        let rows = |store: &Store| -> Vec<u64> {
            let tx = store.db.begin_read().expect("tx");
            let journal = tx.open_table(JOURNAL).expect("journal");
            journal
                .iter()
                .expect("iter")
                .map(|r| r.expect("row").0.value())
                .collect()
        };
        for i in 0..20 {
            put(&store, &mut model, i);
        }
        assert_eq!(rows(&store).len(), 20, "a row a batch");
        store.set_checkpoint_cases(1);
        put(&store, &mut model, 20);
        store.finish_checkpoint().expect("checkpoint");
        store.set_checkpoint_cases(1_000_000);
        // The checkpoint holds rows 0..=20; each batch now deletes three of them and
        // adds its own.
        let mut left = rows(&store).len();
        assert_eq!(left, 21);
        for i in 21..29 {
            if i == 25 {
                store.sync().expect("sync");
                drop(store);
                store = Store::open(&dir).expect("reopen");
                store.set_checkpoint_cases(1_000_000);
                store.set_truncate_rows(3);
                assert_reads(&store, &model, &alerts, "reopened half-way");
            }
            put(&store, &mut model, i);
            let now = rows(&store);
            let held = now.iter().filter(|&&r| r <= 20).count();
            assert_eq!(held, left.saturating_sub(3), "batch {i}: {now:?}");
            left = held;
            assert!(
                now.windows(2).all(|w| w[0] < w[1])
                    && now.iter().filter(|&&r| r > 20).count() == i - 20,
                "the newest rows stay: {now:?}"
            );
            assert_reads(&store, &model, &alerts, &format!("after batch {i}"));
        }
        assert_eq!(left, 0, "every row the checkpoint holds deleted");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Journal numbers go on after a checkpoint and the deletion of its rows: a row
    /// numbered again from 0 would be taken for one the checkpoint holds, and skipped.
    #[test]
    fn journal_rows_after_a_checkpoint_are_kept_across_reopens() {
        let dir = tmp("numbering");
        let store = Store::open(&dir).expect("open");
        store.set_checkpoint_cases(1);
        let mut model = Model::new();
        let alerts = BTreeMap::new();
        let mut put = |store: &Store, i: usize| {
            // The partition `assert_reads` expects.
            let key = ("t".to_string(), (i % 3) as u32, format!("C{i:05}"));
            let mut b = WriteBatch::default();
            b.cases.put(&key.0, key.1, &json_case(i)).expect("encode");
            // `find_case` looks in the partitions with offsets.
            b.offsets.push((key.0.clone(), key.1, i as u64));
            store.commit(&b).expect("commit");
            model.insert(key, i as i64);
        };
        put(&store, 1);
        put(&store, 2);
        store.finish_checkpoint().expect("checkpoint");
        // A batch with no cases: it deletes the checkpointed rows.
        let mut b = WriteBatch::default();
        b.offsets.push(("t".into(), 2, 9));
        store.commit(&b).expect("commit");
        store.finish_checkpoint().expect("checkpoint");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        {
            let tx = store.db.begin_read().expect("tx");
            let journal = tx.open_table(JOURNAL).expect("journal");
            assert!(
                journal.is_empty().expect("len"),
                "checkpointed rows deleted"
            );
        }
        store.set_checkpoint_cases(1000);
        put(&store, 3);
        assert_eq!(store.overlay_size(), 1);
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_eq!(store.overlay_size(), 1, "case 3 read back from the journal");
        assert_reads(&store, &model, &alerts, "reopened twice");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A checkpoint writes its run in steps committed without durability; one that fails
    /// part-way leaves a table `meta` does not list, under the number the next checkpoint
    /// takes. That one must start its run afresh, not write on beside what was left.
    #[test]
    fn a_checkpoint_cut_short_leaves_nothing_the_next_one_keeps() {
        let dir = tmp("cut-short");
        let store = Store::open(&dir).expect("open");
        store.set_checkpoint_cases(1);
        store.set_chunk_bytes(700);
        store.set_step_bytes(1500);
        let mut model = Model::new();
        let alerts = BTreeMap::new();
        let put = |store: &Store, model: &mut Model, from: usize| {
            let mut b = WriteBatch::default();
            for i in from..from + 12 {
                let key = ("t".to_string(), (i % 3) as u32, format!("C{i:05}"));
                b.cases.put(&key.0, key.1, &json_case(i)).expect("encode");
                model.insert(key, i as i64);
            }
            for p in 0..3 {
                b.offsets.push(("t".into(), p, from as u64 + 1));
            }
            store.commit(&b).expect("commit");
            store.finish_checkpoint().expect("checkpoint");
        };
        put(&store, &mut model, 0);
        let listed = store.runs();
        assert_eq!(listed.len(), 1, "one run: {listed:?}");
        // What a cut-short checkpoint of the next number would have left: chunks of cases
        // nobody wrote, committed (as a step is) but listed nowhere.
        let next = runs::table_name(listed[0].n + 1);
        {
            let tx = store.base.begin_write().expect("tx");
            {
                let mut t = tx.open_table(runs::ChunkTable::new(&next)).expect("table");
                for (p, id) in [(0, "C00001"), (1, "C99999"), (2, "C99998")] {
                    let mut chunk = CaseChanges::default();
                    chunk.put("t", p, &json_case(90_000)).expect("encode");
                    t.insert(("t", p, id), chunk.row()).expect("insert");
                }
            }
            tx.commit().expect("commit");
        }
        assert_reads(&store, &model, &alerts, "beside a table no run lists");
        put(&store, &mut model, 100);
        let runs = store.runs();
        assert!(
            runs.iter().any(|r| runs::table_name(r.n) == next),
            "the next checkpoint took the number: {runs:?}"
        );
        assert_reads(&store, &model, &alerts, "after the next checkpoint");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_reads(&store, &model, &alerts, "reopened");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_journal_row_reads_back_and_a_cut_one_is_an_error_not_a_guess() {
        let cases = vec![
            (
                "事件".to_string(),
                3,
                "案-1".to_string(),
                Some(vec![0x93, 1, 2, 3]),
            ),
            ("t".to_string(), 0, "C2".to_string(), None),
            (
                "t".to_string(),
                u32::MAX - 1,
                String::new(),
                Some(Vec::new()),
            ),
        ];
        let mut changes = CaseChanges::default();
        for (t, p, i, v) in &cases {
            match v {
                Some(v) => changes.put_encoded(t, *p, i, v),
                None => changes.forget(t, *p, i),
            }
        }
        assert_eq!(changes.len(), 3);
        // An emptied buffer (the daemon reuses one per batch) writes the same row again.
        let mut reused = changes.clone();
        reused.clear();
        assert!(reused.is_empty());
        for (t, p, i, v) in &cases {
            match v {
                Some(v) => reused.put_encoded(t, *p, i, v),
                None => reused.forget(t, *p, i),
            }
        }
        assert_eq!(reused.row(), changes.row());
        let row = changes.row();
        let back: Vec<(String, u32, String, Option<Vec<u8>>)> = decode_journal(row)
            .expect("decodes")
            .into_iter()
            .map(|(t, p, i, v)| (t.into(), p, i.into(), v.map(|r| row[r].to_vec())))
            .collect();
        assert_eq!(back, cases);
        for cut in 1..row.len() {
            let err = decode_journal(&row[..cut]).err();
            assert!(
                err.as_deref().is_some_and(|e| e.contains("cut short")),
                "a row cut at {cut} of {} bytes: {err:?}",
                row.len()
            );
        }
        // A journal row that does not read is named when the store opens.
        let dir = tmp("journal-corrupt");
        {
            let store = Store::open(&dir).expect("open");
            let tx = store.db.begin_write().expect("tx");
            {
                let mut journal = tx.open_table(JOURNAL).expect("journal");
                journal.insert(7, &row[..row.len() - 1]).expect("insert");
            }
            tx.commit().expect("commit");
        }
        let err = Store::open(&dir).err().expect("must fail");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("case journal row 7"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn another_format_version_is_refused() {
        let dir = tmp("version");
        {
            let store = Store::open(&dir).expect("open");
            let tx = store.db.begin_write().expect("tx");
            {
                let mut meta = tx.open_table(META).expect("meta");
                meta.insert("schema", b"redlight-store-0".as_slice())
                    .expect("insert");
            }
            tx.commit().expect("commit");
        }
        let err = Store::open(&dir).err().expect("must fail");
        assert!(matches!(err, StoreError::Incompatible { .. }), "{err}");
        assert!(err.to_string().contains("redlight-store-0"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
