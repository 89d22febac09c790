//! Online backups: a consistent copy of both store files while the daemon runs.
//!
//! Copying the files themselves while the daemon writes them gives a torn copy: redb writes
//! pages and its header at different times, and a checkpoint writes the other file on a
//! thread of its own. A backup instead reads the two files through the pair of snapshots
//! every reader of the store gets ([`Store::read`]: the checkpoints' file first, then the
//! batches' file, under the overlay's lock, so that no batch commits and no journal row is
//! deleted between the two: the batches' snapshot holds every journal row the checkpoint
//! does not). It writes every table of each into a new redb file of the same name in a
//! directory of its own, reads each file back (every table there with its rows), and only
//! then gives the directory its name: a directory named `redlight-backup-*` is a
//! whole store, never a half-written one. The batches and checkpoints go on meanwhile; the
//! snapshot keeps the pages it reads from being reused until the copy is done, so the live
//! files may grow by what is written in the meantime.
//!
//! The copy holds the state as of the snapshot: the cases, the alerts, the offsets the
//! consumer resumes from, the scorecard's ledger, the delivery outbox and dead letters.
//! Restored, the daemon reads the input on from those offsets: the events since are
//! applied again and their alerts raised again under the same ids (receivers drop
//! duplicates by id), and deliveries sent since the backup may be sent again.

use super::{BASE_FILE_NAME, FILE_NAME, SCHEMA_VERSION, Store, StoreError};
use redb::{
    Key, MultimapTableHandle, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableError, TableHandle, Value,
};
use std::path::{Path, PathBuf};

/// The name of every backup directory starts with this.
pub const PREFIX: &str = "redlight-backup-";

/// The manifest written into every backup directory.
pub const MANIFEST: &str = "backup.json";

/// What a backup wrote.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BackupReport {
    /// The backup's directory.
    pub directory: PathBuf,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub created: String,
    /// The redlight version that wrote it.
    pub version: String,
    /// The store format of its files.
    pub format: String,
    /// The offsets the consumer resumes from when the backup is restored.
    pub offsets: Vec<BackupOffset>,
    /// The files written, with their sizes.
    pub files: Vec<BackupFile>,
    /// Rows copied, all tables of both files.
    pub rows: u64,
    /// How long the copy took, in seconds.
    pub seconds: f64,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupFile {
    pub name: String,
    pub bytes: u64,
}

/// One partition's offset in a backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupOffset {
    pub topic: String,
    pub partition: u32,
    pub next_offset: u64,
}

/// A write transaction is committed (without waiting for the disk) once it holds this
/// many bytes of rows, within the copy's write buffer (half its page cache), so that a
/// large store's copy does not build one transaction of its whole size in memory. The
/// last commit is durable.
const STEP_BYTES: usize = 8 << 20;

/// The copy's page cache, as the store's own default: redb's default (1 GiB) grew the
/// daemon by 257 MiB while a store of a million cases was copied.
const CACHE_BYTES: usize = super::DEFAULT_CACHE_MIB << 20;

impl Store {
    /// Writes a consistent copy of the store into a new directory `dir/redlight-backup-
    /// <UTC time>` (see the module's documentation), then removes the oldest backups in
    /// `dir` beyond the newest `keep` (0 keeps all) and what backups cut short left. Batches
    /// go on being committed while it copies.
    pub fn backup(&self, dir: &Path, keep: usize) -> Result<BackupReport, StoreError> {
        let started = std::time::Instant::now();
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        // Said as an absolute path: the report goes to whoever asked, wherever they are.
        let dir = &std::fs::canonicalize(dir).map_err(|e| io_err(dir, e))?;
        // The pair of snapshots `Store::read` takes, without the overlay's generations: the
        // journal rows are in the batches' file, and holding the generations would keep
        // those a checkpoint drops meanwhile in memory until the copy is done.
        let snapshot = {
            let _overlay = self.overlay_read();
            let base = self.base.begin_read().map_err(|e| self.base_err(e))?;
            let tx = self.db.begin_read().map_err(|e| self.err(e))?;
            super::Snapshot {
                tx,
                base,
                generations: Vec::new(),
            }
        };
        let now = chrono::Utc::now();
        let name = format!("{PREFIX}{}", now.format("%Y%m%dT%H%M%S%.3fZ"));
        let target = dir.join(&name);
        if target.exists() {
            return Err(io_err(&target, "a backup of this name exists already"));
        }
        let partial = dir.join(format!(".{name}.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir(&partial).map_err(|e| io_err(&partial, e))?;
        let result = (|| {
            let mut rows = copy_file(&snapshot.tx, &partial.join(FILE_NAME), &self.file)?;
            rows += copy_file(
                &snapshot.base,
                &partial.join(BASE_FILE_NAME),
                &self.base_file,
            )?;
            let offsets = super::offsets_in(&snapshot.tx, &self.file)?
                .into_iter()
                .map(|(topic, partition, next_offset)| BackupOffset {
                    topic,
                    partition,
                    next_offset,
                })
                .collect();
            drop(snapshot);
            let mut files = Vec::new();
            for f in [FILE_NAME, BASE_FILE_NAME] {
                let path = partial.join(f);
                let len = std::fs::metadata(&path)
                    .map_err(|e| io_err(&path, e))?
                    .len();
                files.push(BackupFile {
                    name: f.to_string(),
                    bytes: len,
                });
            }
            let report = BackupReport {
                directory: target.clone(),
                created: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                version: env!("CARGO_PKG_VERSION").to_string(),
                format: SCHEMA_VERSION.to_string(),
                offsets,
                files,
                rows,
                seconds: started.elapsed().as_secs_f64(),
            };
            let manifest = partial.join(MANIFEST);
            let json = serde_json::to_vec_pretty(&report).map_err(|e| io_err(&manifest, e))?;
            write_synced(&manifest, &json)?;
            std::fs::rename(&partial, &target).map_err(|e| io_err(&target, e))?;
            sync_dir(dir)?;
            Ok(report)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
        let report = result?;
        prune(dir, keep);
        Ok(report)
    }
}

/// The backups in `dir`, oldest first (their names sort by time).
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found
}

/// When the newest backup in `dir` was taken (Unix seconds, from its manifest), so that
/// the daemon's gauge of its last backup survives a restart.
pub fn newest_created(dir: &Path) -> Option<i64> {
    let newest = list(dir).pop()?;
    let bytes = std::fs::read(newest.join(MANIFEST)).ok()?;
    let report: BackupReport = serde_json::from_slice(&bytes).ok()?;
    chrono::DateTime::parse_from_rfc3339(&report.created)
        .ok()
        .map(|t| t.timestamp())
}

/// Removes the oldest backups in `dir` beyond the newest `keep` (0 keeps all), and what
/// backups cut short left (a process killed while copying).
fn prune(dir: &Path, keep: usize) {
    let all = list(dir);
    let old = if keep == 0 {
        0
    } else {
        all.len().saturating_sub(keep)
    };
    for path in &all[..old] {
        match std::fs::remove_dir_all(path) {
            Ok(()) => tracing::info!(backup = %path.display(), keep, "removed an old backup"),
            Err(e) => tracing::warn!(backup = %path.display(), error = %e,
                "could not remove an old backup"),
        }
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!(".{PREFIX}"))
            && let Some(pid) = name.rsplit("partial-").next()
            && pid != std::process::id().to_string()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn io_err(file: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        file: file.to_path_buf(),
        message: format!("backup: {e}"),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    f.write_all(bytes).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    super::sync_path(dir).map_err(|e| io_err(dir, e))
}

/// Copies every table of the snapshot `src` (of the store file `from`) into a new redb
/// file `to`; returns the rows copied.
fn copy_file(src: &redb::ReadTransaction, to: &Path, from: &Path) -> Result<u64, StoreError> {
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(to)
        .map_err(|e| io_err(to, e))?;
    let mut copier = Copier {
        db: &db,
        tx: None,
        bytes: 0,
        to,
    };
    let names: Vec<String> = src
        .list_tables()
        .map_err(|e| super::file_err(from, e))?
        .map(|t| t.name().to_string())
        .collect();
    if let Some(t) = src
        .list_multimap_tables()
        .map_err(|e| super::file_err(from, e))?
        .next()
    {
        return Err(StoreError::Corrupt {
            file: from.to_path_buf(),
            message: format!(
                "backup: a multimap table `{}`, which no redlight writes",
                t.name()
            ),
        });
    }
    let mut copied = Vec::new();
    for name in &names {
        copied.push((name.clone(), copier.table(src, name, from)?));
    }
    // The last commit waits for the disk: the file is whole once it returns.
    let mut tx = match copier.tx.take() {
        Some(tx) => tx,
        None => db.begin_write().map_err(|e| io_err(to, e))?,
    };
    tx.set_durability(redb::Durability::Immediate)
        .map_err(|e| io_err(to, e))?;
    tx.commit().map_err(|e| io_err(to, e))?;
    drop(db);
    verify(to, &copied)?;
    Ok(copied.iter().map(|(_, n)| n).sum())
}

/// Reads the copy back as redb opens it: a file redb takes, holding exactly the tables
/// copied, each with its rows. (Not opened as a store, which reads the journal into memory:
/// `redlight restore` does that, before it moves anything.)
fn verify(file: &Path, copied: &[(String, u64)]) -> Result<(), StoreError> {
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .open(file)
        .map_err(|e| io_err(file, e))?;
    let tx = db.begin_read().map_err(|e| io_err(file, e))?;
    let mut names: Vec<String> = tx
        .list_tables()
        .map_err(|e| io_err(file, e))?
        .map(|t| t.name().to_string())
        .collect();
    names.sort();
    let mut want: Vec<String> = copied.iter().map(|(n, _)| n.clone()).collect();
    want.sort();
    if names != want {
        return Err(io_err(
            file,
            format!("the copy holds the tables {names:?}, not {want:?}"),
        ));
    }
    for (name, rows) in copied {
        let t = tx
            .open_untyped_table(redb::TableDefinition::<(), ()>::new(name))
            .map_err(|e| io_err(file, e))?;
        let len = t.len().map_err(|e| io_err(file, e))?;
        if len != *rows {
            return Err(io_err(
                file,
                format!("table `{name}` of the copy has {len} rows, not the {rows} copied"),
            ));
        }
    }
    Ok(())
}

/// Writes tables into the backup's file in transactions of about [`STEP_BYTES`].
struct Copier<'a> {
    db: &'a redb::Database,
    tx: Option<redb::WriteTransaction>,
    bytes: usize,
    to: &'a Path,
}

impl Copier<'_> {
    /// Copies the table `name` with whichever of the store's key and value types it has.
    /// A table of types no redlight table has is an error naming it: a backup never
    /// leaves a table out.
    fn table(
        &mut self,
        src: &redb::ReadTransaction,
        name: &str,
        from: &Path,
    ) -> Result<u64, StoreError> {
        macro_rules! try_types {
            ($(($k:ty, $v:ty)),* $(,)?) => {
                $(
                    if let Some(n) = self.copy_as::<$k, $v>(src, name, from)? {
                        return Ok(n);
                    }
                )*
            };
        }
        // Every key and value type of the store's and the delivery outbox's tables
        // (`src/store.rs`, `src/store/runs.rs`, `src/store/alert_runs.rs`,
        // `src/delivery.rs`).
        try_types!(
            (&str, &[u8]),
            (&str, u64),
            ((&str, u32, &str), &[u8]),
            ((&str, u32), u64),
            ((&str, u32), i64),
            (u64, &[u8]),
            ((&str, u64), ()),
            ((&str, u64), &[u8]),
            ((i64, &str, &str), &[u8]),
            ((&str, i64, u64), ()),
            ((&str, &str), &[u8]),
            ((i64, &str), &str),
            (i64, u64),
        );
        Err(StoreError::Corrupt {
            file: from.to_path_buf(),
            message: format!(
                "backup: table `{name}` has key and value types no redlight table has; \
                 nothing was backed up"
            ),
        })
    }

    /// Copies the table when it has these types; `None` when it has others.
    fn copy_as<K: Key + 'static, V: Value + 'static>(
        &mut self,
        src: &redb::ReadTransaction,
        name: &str,
        from: &Path,
    ) -> Result<Option<u64>, StoreError> {
        let def: TableDefinition<K, V> = TableDefinition::new(name);
        let table = match src.open_table(def) {
            Ok(t) => t,
            Err(TableError::TableTypeMismatch { .. }) => return Ok(None),
            Err(e) => return Err(super::file_err(from, e)),
        };
        let to = self.to;
        let mut rows = 0u64;
        let mut iter = table
            .iter()
            .map_err(|e| super::file_err(from, e))?
            .peekable();
        loop {
            let tx = match self.tx.take() {
                Some(tx) => tx,
                None => {
                    let mut tx = self.db.begin_write().map_err(|e| io_err(to, e))?;
                    tx.set_durability(redb::Durability::None)
                        .map_err(|e| io_err(to, e))?;
                    tx
                }
            };
            {
                // Opening it creates it: an empty table is copied too.
                let mut out = tx.open_table(def).map_err(|e| io_err(to, e))?;
                while self.bytes < STEP_BYTES {
                    let Some(row) = iter.next() else { break };
                    let (k, v) = row.map_err(|e| super::file_err(from, e))?;
                    let (k, v) = (k.value(), v.value());
                    self.bytes += K::as_bytes(&k).as_ref().len() + V::as_bytes(&v).as_ref().len();
                    out.insert(k, v).map_err(|e| io_err(to, e))?;
                    rows += 1;
                }
            }
            if self.bytes >= STEP_BYTES {
                tx.commit().map_err(|e| io_err(to, e))?;
                self.bytes = 0;
            } else {
                self.tx = Some(tx);
            }
            if iter.peek().is_none() {
                return Ok(Some(rows));
            }
        }
    }
}

/// Whether `dir` holds a backup's files (both store files).
pub fn is_store_dir(dir: &Path) -> bool {
    dir.join(FILE_NAME).is_file() && dir.join(BASE_FILE_NAME).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Alert;
    use crate::engine::Case;
    use crate::store::WriteBatch;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn tmp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("redlight-backup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Case `C<c>` as batch `i` leaves it: `last_event` is the batch's number.
    fn case(c: u64, i: u64) -> Case {
        let json = format!(
            r#"{{"id":"C{c:03}","data":[["department","市住建局"],["n",{i}]],"seen":[{i}],"types":5,"first_event":0,"last_event":{i},"withdrawn":false,"clocks":[],"stages":[],"violations":[],"duties":[]}}"#
        );
        serde_json::from_str(&json).expect("a case")
    }

    fn alert(c: u64, i: u64) -> Alert {
        serde_json::from_value(serde_json::json!({
            "id": format!("A{i}"), "rule": "xk.statutory", "title": "t", "basis": "b",
            "case": format!("C{c:03}"), "level": "red", "status": "firing",
            "reason": "overdue", "at": "2026-11-02T00:00:00+08:00"
        }))
        .expect("alert")
    }

    const CASES: u64 = 150;

    /// Batch `i`: case `i % CASES` changed, one alert, one scorecard row, the offset after
    /// it; every 7th also forgets the case after it.
    fn batch(i: u64) -> WriteBatch {
        let mut b = WriteBatch::default();
        let c = i % CASES;
        b.cases.put("events", 0, &case(c, i)).expect("encode");
        if i.is_multiple_of(7) {
            b.cases
                .forget("events", 0, &format!("C{:03}", (c + 1) % CASES));
        }
        b.alerts.push(alert(c, i));
        b.offsets.push(("events".into(), 0, i + 1));
        b.ledger.push((
            i as i64,
            format!("C{c:03}"),
            "closed".into(),
            i.to_string().into_bytes(),
        ));
        b
    }

    /// What a store that committed batches `0..n` holds: case → `last_event`.
    fn model(n: u64) -> std::collections::BTreeMap<String, i64> {
        let mut m = std::collections::BTreeMap::new();
        for i in 0..n {
            let c = i % CASES;
            m.insert(format!("C{c:03}"), i as i64);
            if i.is_multiple_of(7) {
                m.remove(&format!("C{:03}", (c + 1) % CASES));
            }
        }
        m
    }

    /// The store in `dir` holds exactly batches `0..n`, where `n` is its offset.
    fn assert_holds_a_prefix(dir: &Path) -> u64 {
        let store = Store::open(dir).expect("the backup opens as a store");
        let n = store.offset("events", 0).expect("offset").unwrap_or(0);
        let cases: std::collections::BTreeMap<String, i64> = store
            .all_cases()
            .expect("cases")
            .into_iter()
            .map(|(_, _, c)| (c.id.to_string(), c.last_event))
            .collect();
        assert_eq!(
            cases,
            model(n),
            "{}: cases of batches 0..{n}",
            dir.display()
        );
        let alerts = store.alerts(0, usize::MAX).expect("alerts");
        let ids: Vec<String> = alerts.iter().map(|(_, a)| a.id.clone()).collect();
        let want: Vec<String> = (0..n).map(|i| format!("A{i}")).collect();
        assert_eq!(ids, want, "{}: the alerts of batches 0..{n}", dir.display());
        let mut ledger = 0;
        store
            .scan_ledger(i64::MIN, i64::MAX, |_, _, _, _| ledger += 1)
            .expect("ledger");
        assert_eq!(ledger, n, "{}: a scorecard row per batch", dir.display());
        n
    }

    /// Backups taken while a writer commits batches (lazily, synced now and then) and
    /// checkpoints run and truncate the journal on their thread: each is the store as of
    /// one batch, its cases, alerts, scorecard rows and offset in step, across both files.
    #[test]
    fn backups_taken_while_batches_and_checkpoints_run_are_whole_stores() {
        let dir = tmp("live");
        let backups = dir.join("backups");
        let store = Arc::new(Store::open(&dir.join("data")).expect("open"));
        // A checkpoint every few dozen batches: many while the backups are taken.
        store.set_checkpoint_cases(40);
        let done = Arc::new(AtomicBool::new(false));
        const BATCHES: u64 = 4000;
        let writer = {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 0..BATCHES {
                    if i % 10 == 9 {
                        store.commit(&batch(i)).expect("commit");
                    } else {
                        store.commit_lazy(&batch(i)).expect("commit");
                    }
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut taken = Vec::new();
        while !done.load(Ordering::SeqCst) || taken.is_empty() {
            let r = store.backup(&backups, 0).expect("backup");
            assert!(r.directory.is_absolute(), "{}", r.directory.display());
            taken.push(r);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        writer.join().expect("writer");
        store.finish_checkpoint().expect("checkpoint");
        taken.push(store.backup(&backups, 0).expect("backup"));
        let mut seen = Vec::new();
        for r in &taken {
            let n = assert_holds_a_prefix(&r.directory);
            // Taken before the first batch: no offset yet.
            let offsets: Vec<BackupOffset> = (n > 0)
                .then(|| BackupOffset {
                    topic: "events".into(),
                    partition: 0,
                    next_offset: n,
                })
                .into_iter()
                .collect();
            assert_eq!(r.offsets, offsets);
            let manifest: BackupReport = serde_json::from_slice(
                &std::fs::read(r.directory.join(MANIFEST)).expect("manifest"),
            )
            .expect("manifest parses");
            assert_eq!(manifest.offsets, r.offsets);
            seen.push(n);
        }
        assert_eq!(
            seen.last(),
            Some(&BATCHES),
            "the last backup holds every batch"
        );
        assert!(
            seen.iter().any(|&n| n > 0 && n < BATCHES),
            "some backups were taken mid-stream: {seen:?}"
        );
        assert_eq!(list(&backups).len(), taken.len());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `keep` leaves the newest backups; a backup cut short (another process's partial
    /// directory) is cleared away.
    #[test]
    fn old_backups_beyond_keep_are_removed() {
        let dir = tmp("keep");
        let backups = dir.join("backups");
        let store = Store::open(&dir.join("data")).expect("open");
        let stale = backups.join(format!(".{PREFIX}20260101T000000.000Z.partial-1"));
        std::fs::create_dir_all(&stale).expect("mkdir");
        let mut made = Vec::new();
        for i in 0..4 {
            store.commit(&batch(i)).expect("commit");
            made.push(store.backup(&backups, 2).expect("backup").directory);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(list(&backups), made[2..].to_vec());
        assert!(!stale.exists(), "a partial backup of a dead process stays");
        let newest = newest_created(&backups).expect("the newest backup's time");
        assert!(
            (newest - chrono::Utc::now().timestamp()).abs() < 60,
            "{newest}"
        );
        assert_eq!(newest_created(&dir.join("none")), None);
        assert_eq!(assert_holds_a_prefix(&made[3]), 4);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A table the backup cannot copy fails it, naming the table, and leaves nothing
    /// behind: never a backup with a table left out.
    #[test]
    fn a_table_of_unknown_types_fails_the_backup_by_name() {
        let dir = tmp("unknown");
        let backups = dir.join("backups");
        let store = Store::open(&dir.join("data")).expect("open");
        store.commit(&batch(0)).expect("commit");
        let tx = store.db.begin_write().expect("tx");
        {
            let odd: TableDefinition<u8, u16> = TableDefinition::new("an_odd_table");
            tx.open_table(odd)
                .expect("table")
                .insert(1, 2)
                .expect("insert");
        }
        tx.commit().expect("commit");
        let err = store.backup(&backups, 0).expect_err("must fail");
        assert!(err.to_string().contains("an_odd_table"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&backups)
            .expect("backups dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
