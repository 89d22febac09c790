//! The alerts' index by case (`/api/v1/cases/{id}`) as sorted runs, as the cases are kept
//! (`super::runs`).
//!
//! A run is a table of the checkpoints' file, `case_alert_run_{n}`, holding `(case id,
//! alert sequence number)` pairs in key order, in chunks of at most [`CHUNK_BYTES`], each
//! stored under its last pair, so that the chunk that may hold a case's first alert is the
//! first row at or after `(case, 0)`. A chunk: the number of its pairs (u32), then each
//! pair as the case id's length (u32), its bytes and the sequence number (u64), all
//! little-endian. Chunks are cut as the cases' are (`super::runs::CHUNK_BYTES`). The checkpoints' `meta` lists the runs, oldest first
//! (`case_alert_runs`). Alerts are kept after their case is forgotten, and so are their
//! pairs; a pair goes only when a merge finds its alert deleted from the log
//! (`store.alerts_keep_days`). Up to format `redlight-cases-2` the index was one table, `case_alerts`, a row
//! per pair; what it holds is still read, and nothing is added to it.
//!
//! Why runs: a checkpoint inserted its alerts pair by pair into that table, its cases
//! spread over the whole key range: in the 1M-event daemon benchmark 200,000 pairs took
//! 0.3–0.7 s of each checkpoint, 2.5 s of a run, rewriting most of the table's pages every
//! time. A run is written in order, a few hundred rows, and runs of similar size are merged
//! now and then (by doubling, `super::runs::to_merge`).

use super::runs::{RunInfo, next_chunk};
use super::{StoreError, file_err, u32_at};
use redb::TableDefinition;
use std::path::Path;

/// A run's rows: its chunks under their last pair.
pub(super) type ChunkTable<'a> = TableDefinition<'a, (&'static str, u64), &'static [u8]>;

/// `meta` key of the checkpoints' file: the alert index's runs, oldest first, as
/// `super::runs::list` reads them.
pub(super) const META_ALERT_RUNS: &str = "case_alert_runs";

/// The name of run `n`'s table.
pub(super) fn table_name(n: u64) -> String {
    format!("case_alert_run_{n}")
}

/// The bytes a pair takes in a chunk.
pub(super) fn pair_len(case: &str) -> usize {
    4 + case.len() + 8
}

fn corrupt(file: &Path, run: u64, message: String) -> StoreError {
    StoreError::Corrupt {
        file: file.to_path_buf(),
        message: format!("alert index run {run}: {message}"),
    }
}

/// Reads the pair at `at` of a chunk.
fn pair_at<'c>(chunk: &'c [u8], at: &mut usize) -> Result<(&'c str, u64), String> {
    let len = u32_at(chunk, at)? as usize;
    let case = chunk
        .get(*at..*at + len)
        .ok_or_else(|| format!("chunk cut short in a case id at byte {at}"))?;
    let case =
        std::str::from_utf8(case).map_err(|e| format!("case id at byte {at} is not UTF-8: {e}"))?;
    *at += len;
    let seq = chunk
        .get(*at..*at + 8)
        .ok_or_else(|| format!("chunk cut short in a sequence number at byte {at}"))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(seq);
    *at += 8;
    Ok((case, u64::from_le_bytes(b)))
}

/// The sequence numbers of `case`'s alerts in one run, in order, appended to `out`.
pub(super) fn seqs(
    table: &redb::ReadOnlyTable<(&'static str, u64), &'static [u8]>,
    run: u64,
    file: &Path,
    case: &str,
    out: &mut Vec<u64>,
) -> Result<(), StoreError> {
    let rows = table
        .range::<(&str, u64)>((case, 0)..)
        .map_err(|e| file_err(file, e))?;
    for row in rows {
        let (last, chunk) = row.map_err(|e| file_err(file, e))?;
        let chunk = chunk.value();
        let mut at = 0;
        let count = u32_at(chunk, &mut at).map_err(|m| corrupt(file, run, m))?;
        for _ in 0..count {
            let (c, seq) = pair_at(chunk, &mut at).map_err(|m| corrupt(file, run, m))?;
            match c.cmp(case) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => out.push(seq),
                std::cmp::Ordering::Greater => return Ok(()),
            }
        }
        // The next chunk holds more of the case only if this one ended with it.
        if last.value().0 != case {
            return Ok(());
        }
    }
    Ok(())
}

/// A run's pairs in order, for a merge.
pub(super) struct Cursor<'f> {
    run: u64,
    file: &'f Path,
    rows: redb::Range<'static, (&'static str, u64), &'static [u8]>,
    chunk: Vec<u8>,
    at: usize,
    left: u32,
    case: String,
    seq: u64,
    live: bool,
}

impl<'f> Cursor<'f> {
    pub fn new(
        table: &redb::ReadOnlyTable<(&'static str, u64), &'static [u8]>,
        run: u64,
        file: &'f Path,
    ) -> Result<Cursor<'f>, StoreError> {
        let rows = table
            .range::<(&str, u64)>(..)
            .map_err(|e| file_err(file, e))?;
        let mut c = Cursor {
            run,
            file,
            rows,
            chunk: Vec::new(),
            at: 0,
            left: 0,
            case: String::new(),
            seq: 0,
            live: true,
        };
        c.advance()?;
        Ok(c)
    }

    pub fn key(&self) -> Option<(&str, u64)> {
        self.live.then_some((self.case.as_str(), self.seq))
    }

    pub fn advance(&mut self) -> Result<(), StoreError> {
        while self.left == 0 {
            let (file, run) = (self.file, self.run);
            let next = next_chunk(&mut self.rows, &mut self.chunk, &mut self.at, file, |m| {
                corrupt(file, run, m)
            })?;
            let Some(left) = next else {
                self.live = false;
                return Ok(());
            };
            self.left = left;
        }
        let (case, seq) =
            pair_at(&self.chunk, &mut self.at).map_err(|m| corrupt(self.file, self.run, m))?;
        self.case.clear();
        self.case.push_str(case);
        self.seq = seq;
        self.left -= 1;
        Ok(())
    }
}

/// Writes run `n` into `tx`: the pairs of `merged` (older runs, read from `rtx`) and of
/// `new` (in key order), each pair once and none of an alert numbered below `kept_from`
/// (deleted from the log, `store.alerts_keep_days`), in chunks cut before they pass
/// `chunk_bytes` (unless one pair is bigger). Returns the run as `meta` lists it, or `None`
/// when it holds no pair (its table is not created).
#[allow(clippy::too_many_arguments)]
pub(super) fn write(
    tx: &redb::WriteTransaction,
    rtx: &redb::ReadTransaction,
    n: u64,
    merged: &[RunInfo],
    new: &[(&str, u64)],
    kept_from: u64,
    file: &Path,
    chunk_bytes: usize,
) -> Result<Option<RunInfo>, StoreError> {
    if merged.is_empty() && new.is_empty() {
        // A checkpoint without alerts: no table created only to be deleted.
        return Ok(None);
    }
    let mut cursors = Vec::with_capacity(merged.len());
    for r in merged {
        let name = table_name(r.n);
        let t = rtx
            .open_table(ChunkTable::new(&name))
            .map_err(|e| file_err(file, e))?;
        cursors.push(Cursor::new(&t, r.n, file)?);
    }
    let name = table_name(n);
    let mut w = Writer {
        table: tx
            .open_table(ChunkTable::new(&name))
            .map_err(|e| file_err(file, e))?,
        file,
        chunk: vec![0; 4],
        chunk_bytes,
        count: 0,
        last: (String::new(), 0),
        bytes: 0,
        entries: 0,
    };
    let mut next = 0;
    // The last pair left out (an alert deleted from the log).
    let mut dropped = (String::new(), 0);
    loop {
        // The smallest pair of the cursors and the new ones.
        let mut best: Option<(&str, u64)> = new.get(next).copied();
        for c in &cursors {
            if let Some(k) = c.key()
                && best.is_none_or(|b| k < b)
            {
                best = Some(k);
            }
        }
        let Some((case, seq)) = best else { break };
        let key = if seq >= kept_from {
            w.push(case, seq)?;
            (w.last.0.as_str(), w.last.1)
        } else {
            dropped.0.clear();
            dropped.0.push_str(case);
            dropped.1 = seq;
            (dropped.0.as_str(), dropped.1)
        };
        // Every source past it: a pair in two sources is written once.
        while new.get(next) == Some(&key) {
            next += 1;
        }
        for c in &mut cursors {
            while c.key() == Some(key) {
                c.advance()?;
            }
        }
    }
    w.flush()?;
    let (bytes, entries) = (w.bytes, w.entries);
    drop(w);
    if entries == 0 {
        tx.delete_table(ChunkTable::new(&name))
            .map_err(|e| file_err(file, e))?;
        return Ok(None);
    }
    Ok(Some(RunInfo { n, bytes, entries }))
}

struct Writer<'t> {
    table: redb::Table<'t, (&'static str, u64), &'static [u8]>,
    file: &'t Path,
    chunk: Vec<u8>,
    chunk_bytes: usize,
    count: u32,
    last: (String, u64),
    bytes: u64,
    entries: u64,
}

impl Writer<'_> {
    fn push(&mut self, case: &str, seq: u64) -> Result<(), StoreError> {
        if self.count > 0 && self.chunk.len() + pair_len(case) > self.chunk_bytes {
            self.flush()?;
        }
        let len = u32::try_from(case.len()).map_err(|_| {
            file_err(
                self.file,
                format!("case id of {} bytes in the alert index", case.len()),
            )
        })?;
        self.chunk.extend_from_slice(&len.to_le_bytes());
        self.chunk.extend_from_slice(case.as_bytes());
        self.chunk.extend_from_slice(&seq.to_le_bytes());
        self.count += 1;
        self.last.0.clear();
        self.last.0.push_str(case);
        self.last.1 = seq;
        self.entries += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if self.count == 0 {
            return Ok(());
        }
        self.chunk[..4].copy_from_slice(&self.count.to_le_bytes());
        self.table
            .insert((self.last.0.as_str(), self.last.1), self.chunk.as_slice())
            .map_err(|e| file_err(self.file, e))?;
        self.bytes += self.chunk.len() as u64;
        self.chunk.truncate(4);
        self.count = 0;
        Ok(())
    }
}
