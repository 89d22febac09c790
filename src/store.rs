//! The embedded store: one redb file in the data directory.
//!
//! Everything is kept per Kafka partition — open cases and the next offset to consume, keyed
//! by `(topic, partition, …)` — so that one partition's state can later move between
//! instances. An event's effects (its case), the alerts it produced and its partition's
//! offset are written in one transaction ([`Store::commit`]), so after a crash the store
//! holds either all of a batch or none of it, and the consumer resumes exactly after the
//! last durable event. Timers are not stored: they are derived from the cases on restore.
//!
//! Tables:
//! - `meta`: `schema` → the store's format version;
//! - `cases`: `(topic, partition, case id)` → the case as JSON;
//! - `offsets`: `(topic, partition)` → the next offset to consume;
//! - `alerts`: sequence number → alert JSON, every alert in the order it happened (the
//!   source for delivery and the API).

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
const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");

/// The format version of the store. A store written by another version is refused with a
/// clear error rather than misread.
pub const SCHEMA_VERSION: &str = "redlight-store-1";

/// The file name inside the data directory.
pub const FILE_NAME: &str = "redlight.redb";

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
    /// `(topic, partition, next offset to consume)`.
    pub offsets: Vec<(String, u32, u64)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty() && self.alerts.is_empty() && self.offsets.is_empty()
    }
}

/// The store. Cheap to share: redb allows concurrent readers alongside the one writer.
pub struct Store {
    db: Database,
    file: PathBuf,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let file = dir.join(FILE_NAME);
        let db = match Database::create(&file) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked { file }),
            Err(e) => {
                return Err(StoreError::Corrupt {
                    file,
                    message: e.to_string(),
                });
            }
        };
        let store = Store { db, file };
        store.check_schema()?;
        Ok(store)
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
            tx.open_table(ALERTS).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Writes a batch in one durable transaction; returns the alerts' sequence numbers.
    pub fn commit(&self, batch: &WriteBatch) -> Result<Vec<u64>, StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
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
            for (seq, a) in (first..).zip(&batch.alerts) {
                let json = serde_json::to_vec(a).map_err(|e| self.err(e))?;
                alerts
                    .insert(seq, json.as_slice())
                    .map_err(|e| self.err(e))?;
                seqs.push(seq);
            }
            let mut offsets = tx.open_table(OFFSETS).map_err(|e| self.err(e))?;
            for (topic, partition, offset) in &batch.offsets {
                offsets
                    .insert((topic.as_str(), *partition), *offset)
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(seqs)
    }

    /// The next offset to consume for a partition, if any event of it was ever applied.
    pub fn offset(&self, topic: &str, partition: u32) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(OFFSETS).map_err(|e| self.err(e))?;
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

    /// The cases of one partition.
    pub fn load_partition(&self, topic: &str, partition: u32) -> Result<Vec<Case>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(CASES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let range = t
            .range((topic, partition, "")..(topic, partition + 1, ""))
            .map_err(|e| self.err(e))?;
        for row in range {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let case: Case =
                serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                    file: self.file.clone(),
                    message: format!("case {:?}: {e}", k.value().2),
                })?;
            out.push(case);
        }
        Ok(out)
    }

    /// Every stored case with its partition, ordered by topic, partition and case id.
    pub fn all_cases(&self) -> Result<Vec<(String, u32, Case)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(CASES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let (topic, partition, id) = k.value();
            let case: Case =
                serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
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
