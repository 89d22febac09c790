//! The embedded store: one redb file in the data directory.
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
//! Tables:
//! - `meta`: `schema` → the store's format version;
//! - `cases`: `(topic, partition, case id)` → the case in MessagePack ([`encode_case`]);
//! - `offsets`: `(topic, partition)` → the next offset to consume;
//! - `alerts`: sequence number → alert JSON, every alert in the order it happened (the
//!   source for delivery and the API).
//! - `case_alerts`: `(case id, sequence number)` → `()`, an index of `alerts` by case for
//!   `/api/v1/cases/{id}` (built once from `alerts` when missing).
//! - `ledger`: `(instant, case id, record key)` → JSON: what the scorecard counts (a case
//!   closed on time or late, a violation), kept after the case itself is forgotten; written
//!   with the case in the same transaction (see `src/scorecard.rs`).
//! - the alert-delivery outbox, dead letters and escalation steps: written by
//!   [`CommitHook`] in the same transaction as the alerts (see `src/delivery.rs`).

use crate::alert::Alert;
use crate::engine::Case;
use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use std::path::{Path, PathBuf};

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

/// The format version of the store. A store written by another version is refused with a
/// clear error rather than misread.
/// Format 1 kept cases as JSON; a store in format 1 is converted when opened.
pub const SCHEMA_VERSION: &str = "redlight-store-2";

/// Format 1: the same tables, cases as JSON.
const SCHEMA_JSON_CASES: &str = "redlight-store-1";

/// A case as stored: MessagePack with each struct as an array of its fields in declaration
/// order (`rmp_serde::to_vec`). A third of the size of its JSON, and decoded in less than
/// half the time, which is most of what a restart of a million cases costs. Fields added
/// later at the end of a struct, with `#[serde(default)]`, still read older rows.
pub fn encode_case(case: &Case) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec(case)
}

/// Reads a case written by [`encode_case`].
pub fn decode_case(bytes: &[u8]) -> Result<Case, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

/// The file name inside the data directory.
pub const FILE_NAME: &str = "redlight.redb";

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
    /// `(topic, partition, case id, the case or None when the engine forgot it)`.
    pub cases: Vec<(String, u32, String, Option<Vec<u8>>)>,
    /// Alerts in the order they happened.
    pub alerts: Vec<Alert>,
    /// The alerts as JSON, in the same order, when the caller serialised them already (the
    /// daemon does, on its loop thread, to keep the store writer's turn short); when empty
    /// they are serialised here.
    pub alert_json: Vec<Vec<u8>>,
    /// `(topic, partition, next offset to consume)`.
    pub offsets: Vec<(String, u32, u64)>,
    /// `(topic, partition, the engine's clock in ms)`.
    pub clocks: Vec<(String, u32, i64)>,
    /// Scorecard records `(instant, case id, record key, JSON)`, written idempotently.
    pub ledger: Vec<(i64, String, String, Vec<u8>)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
            && self.alerts.is_empty()
            && self.offsets.is_empty()
            && self.ledger.is_empty()
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
    db: Database,
    file: PathBuf,
    /// Writes more rows in each batch's transaction (the delivery outbox, `src/delivery.rs`).
    hook: std::sync::RwLock<Option<std::sync::Arc<dyn CommitHook>>>,
}

impl Store {
    /// Opens (or creates) the store in `dir`, with the default page cache.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(dir, DEFAULT_CACHE_MIB)
    }

    /// Opens (or creates) the store in `dir` with a page cache of `cache_mib` MiB.
    pub fn open_with_cache(dir: &Path, cache_mib: usize) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let file = dir.join(FILE_NAME);
        let db = match redb::Builder::new()
            .set_cache_size(cache_mib.saturating_mul(1 << 20))
            .create(&file)
        {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked { file }),
            Err(e) => {
                return Err(StoreError::Corrupt {
                    file,
                    message: e.to_string(),
                });
            }
        };
        let store = Store {
            db,
            file,
            hook: std::sync::RwLock::new(None),
        };
        store.check_schema()?;
        store.index_case_alerts()?;
        Ok(store)
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
            let file = dir.join(FILE_NAME);
            let spawned = std::thread::Builder::new()
                .name("store-prefetch".into())
                .spawn(move || {
                    use std::os::fd::AsRawFd;
                    let started = std::time::Instant::now();
                    let f = match std::fs::File::open(&file) {
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
                        let (Ok(off), Ok(n)) = (
                            libc::off_t::try_from(offset),
                            libc::off_t::try_from(CHUNK),
                        ) else {
                            break;
                        };
                        // SAFETY: a plain syscall on a descriptor this thread owns.
                        let rc = unsafe {
                            libc::posix_fadvise(f.as_raw_fd(), off, n, libc::POSIX_FADV_WILLNEED)
                        };
                        if rc != 0 {
                            tracing::debug!(file = %file.display(), rc, "store prefetch stopped");
                            break;
                        }
                        offset += CHUNK;
                    }
                    tracing::debug!(file = %file.display(), bytes = len,
                        elapsed_ms = started.elapsed().as_millis() as u64, "store prefetch queued");
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
        let message = e.to_string();
        if message.to_lowercase().contains("corrupt") {
            StoreError::Corrupt {
                file: self.file.clone(),
                message,
            }
        } else {
            StoreError::Io {
                file: self.file.clone(),
                message,
            }
        }
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            let found = meta
                .get("schema")
                .map_err(|e| self.err(e))?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            match found {
                Some(v) if v == SCHEMA_VERSION => {}
                Some(v) if v == SCHEMA_JSON_CASES => {
                    self.convert_json_cases(&tx)?;
                    meta.insert("schema", SCHEMA_VERSION.as_bytes())
                        .map_err(|e| self.err(e))?;
                }
                Some(v) => {
                    return Err(StoreError::Incompatible {
                        file: self.file.clone(),
                        found: v,
                        expected: SCHEMA_VERSION,
                    });
                }
                None => {
                    meta.insert("schema", SCHEMA_VERSION.as_bytes())
                        .map_err(|e| self.err(e))?;
                }
            }
            tx.open_table(CASES).map_err(|e| self.err(e))?;
            tx.open_table(OFFSETS).map_err(|e| self.err(e))?;
            tx.open_table(CLOCKS).map_err(|e| self.err(e))?;
            tx.open_table(ALERTS).map_err(|e| self.err(e))?;
            tx.open_table(CASE_ALERTS).map_err(|e| self.err(e))?;
            tx.open_table(LEDGER).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
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
    /// existed has alerts and no index yet (once).
    fn index_case_alerts(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let alerts = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
            let mut index = tx.open_table(CASE_ALERTS).map_err(|e| self.err(e))?;
            if index.len().map_err(|e| self.err(e))? > 0
                || alerts.len().map_err(|e| self.err(e))? == 0
            {
                return Ok(());
            }
            for row in alerts.iter().map_err(|e| self.err(e))? {
                let (k, v) = row.map_err(|e| self.err(e))?;
                let alert: Alert =
                    serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                        file: self.file.clone(),
                        message: format!("alert {}: {e}", k.value()),
                    })?;
                index
                    .insert((&*alert.case, k.value()), ())
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
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
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut seqs = Vec::with_capacity(batch.alerts.len());
        {
            let mut cases = tx.open_table(CASES).map_err(|e| self.err(e))?;
            for (topic, partition, id, value) in &batch.cases {
                let key = (topic.as_str(), *partition, id.as_str());
                match value {
                    Some(v) => {
                        cases.insert(key, v.as_slice()).map_err(|e| self.err(e))?;
                    }
                    None => {
                        cases.remove(key).map_err(|e| self.err(e))?;
                    }
                }
            }
            let mut alerts = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
            let first = alerts
                .last()
                .map_err(|e| self.err(e))?
                .map_or(1, |(k, _)| k.value() + 1);
            let mut by_case = tx.open_table(CASE_ALERTS).map_err(|e| self.err(e))?;
            for (i, (seq, a)) in (first..).zip(&batch.alerts).enumerate() {
                let owned;
                let json = match batch.alert_json.get(i) {
                    Some(json) => json.as_slice(),
                    None => {
                        owned = serde_json::to_vec(a).map_err(|e| self.err(e))?;
                        owned.as_slice()
                    }
                };
                alerts.insert(seq, json).map_err(|e| self.err(e))?;
                by_case
                    .insert((&*a.case, seq), ())
                    .map_err(|e| self.err(e))?;
                seqs.push(seq);
            }
            if !batch.ledger.is_empty() {
                let mut ledger = tx.open_table(LEDGER).map_err(|e| self.err(e))?;
                for (at, case, key, value) in &batch.ledger {
                    ledger
                        .insert((*at, case.as_str(), key.as_str()), value.as_slice())
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
        }
        let hook = self.hook.read().ok().and_then(|h| h.clone());
        if let Some(hook) = &hook
            && !batch.alerts.is_empty()
        {
            let written: Vec<(u64, &Alert)> = seqs.iter().copied().zip(&batch.alerts).collect();
            durable |= hook.write(&tx, &written).map_err(|e| self.err(e))?;
        }
        if !durable {
            tx.set_durability(redb::Durability::None)
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        if let Some(hook) = &hook
            && !batch.alerts.is_empty()
        {
            hook.committed();
        }
        Ok((seqs, durable))
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
        let t = tx.open_table(OFFSETS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (topic, partition) = k.value();
            out.push((topic.to_string(), partition, v.value()));
        }
        Ok(out)
    }

    /// Visits the cases of one partition in case-id order, each parsed as it is read (a
    /// partition of a million cases is never held twice in memory); returns how many.
    pub fn load_partition(
        &self,
        topic: &str,
        partition: u32,
        mut visit: impl FnMut(Case),
    ) -> Result<usize, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(CASES).map_err(|e| self.err(e))?;
        let range = t
            .range((topic, partition, "")..(topic, partition + 1, ""))
            .map_err(|e| self.err(e))?;
        let mut n = 0;
        for row in range {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let case = decode_case(v.value()).map_err(|e| StoreError::Corrupt {
                file: self.file.clone(),
                message: format!("case {:?}: {e}", k.value().2),
            })?;
            visit(case);
            n += 1;
        }
        Ok(n)
    }

    /// Every stored case with its partition, ordered by topic, partition and case id.
    pub fn all_cases(&self) -> Result<Vec<(String, u32, Case)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(CASES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (topic, partition, id) = k.value();
            let case = decode_case(v.value()).map_err(|e| StoreError::Corrupt {
                file: self.file.clone(),
                message: format!("case {id:?}: {e}"),
            })?;
            out.push((topic.to_string(), partition, case));
        }
        Ok(out)
    }

    /// Alerts with a sequence number above `after`, at most `limit`.
    pub fn alerts(&self, after: u64, limit: usize) -> Result<Vec<(u64, Alert)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t
            .range(after.saturating_add(1)..)
            .map_err(|e| self.err(e))?
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row.map_err(|e| self.err(e))?;
            let alert: Alert =
                serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                    file: self.file.clone(),
                    message: format!("alert {}: {e}", k.value()),
                })?;
            out.push((k.value(), alert));
        }
        Ok(out)
    }

    /// Visits the stored cases as stored ([`decode_case`] reads them) in key order (topic, partition, case id), starting
    /// after `after` when given, until `visit` returns false. One read transaction: the
    /// daemon keeps writing meanwhile, and the visit sees one consistent state.
    pub fn scan_cases(
        &self,
        after: Option<(&str, u32, &str)>,
        mut visit: impl FnMut(&str, u32, &str, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(CASES).map_err(|e| self.err(e))?;
        let range = match after {
            Some(k) => t.range(k..),
            None => t.range::<(&str, u32, &str)>(..),
        }
        .map_err(|e| self.err(e))?;
        for row in range {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (topic, partition, id) = k.value();
            if after == Some((topic, partition, id)) {
                continue;
            }
            if !visit(topic, partition, id, v.value()) {
                break;
            }
        }
        Ok(())
    }

    /// One case by id, with its partition: a point lookup in every partition the store has
    /// offsets for (the message key is the case id, so a case lives in one partition).
    pub fn find_case(&self, id: &str) -> Result<Option<(String, u32, Case)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let offsets = tx.open_table(OFFSETS).map_err(|e| self.err(e))?;
        let cases = tx.open_table(CASES).map_err(|e| self.err(e))?;
        for row in offsets.iter().map_err(|e| self.err(e))? {
            let (k, _) = row.map_err(|e| self.err(e))?;
            let (topic, partition) = k.value();
            if let Some(v) = cases.get((topic, partition, id)).map_err(|e| self.err(e))? {
                let case = decode_case(v.value()).map_err(|e| StoreError::Corrupt {
                    file: self.file.clone(),
                    message: format!("case {id:?}: {e}"),
                })?;
                return Ok(Some((topic.to_string(), partition, case)));
            }
        }
        Ok(None)
    }

    /// Every alert of one case, in the order they happened, with their sequence numbers.
    pub fn case_alerts(&self, case: &str) -> Result<Vec<(u64, Alert)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let index = tx.open_table(CASE_ALERTS).map_err(|e| self.err(e))?;
        let alerts = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in index
            .range((case, 0)..=(case, u64::MAX))
            .map_err(|e| self.err(e))?
        {
            let (k, _) = row.map_err(|e| self.err(e))?;
            let seq = k.value().1;
            if let Some(v) = alerts.get(seq).map_err(|e| self.err(e))? {
                let alert: Alert =
                    serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                        file: self.file.clone(),
                        message: format!("alert {seq}: {e}"),
                    })?;
                out.push((seq, alert));
            }
        }
        Ok(out)
    }

    /// Visits alerts with a sequence number above `after` as raw JSON, in order, until
    /// `visit` returns false.
    pub fn scan_alerts(
        &self,
        after: u64,
        mut visit: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(ALERTS).map_err(|e| self.err(e))?;
        for row in t
            .range(after.saturating_add(1)..)
            .map_err(|e| self.err(e))?
        {
            let (k, v) = row.map_err(|e| self.err(e))?;
            if !visit(k.value(), v.value()) {
                break;
            }
        }
        Ok(())
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
        t.len().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("redlight-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_batch_round_trips_and_offsets_are_per_partition() {
        let dir = tmp("roundtrip");
        let store = Store::open(&dir).expect("open");
        let mut b = WriteBatch::default();
        b.offsets.push(("events".into(), 0, 42));
        b.offsets.push(("events".into(), 1, 7));
        b.cases
            .push(("events".into(), 0, "A".into(), Some(b"{}".to_vec())));
        store.commit(&b).expect("commit");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_eq!(store.offset("events", 0).expect("read"), Some(42));
        assert_eq!(store.offset("events", 1).expect("read"), Some(7));
        assert_eq!(store.offset("events", 2).expect("read"), None);
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
            b.cases
                .push(("events".into(), 0, format!("C{next}"), Some(b"{}".to_vec())));
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
