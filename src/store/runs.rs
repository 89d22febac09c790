//! The checkpoint's cases as sorted runs (see the module doc of `store`).
//!
//! A run is a table of the checkpoints' file, `case_run_{n}`, holding cases in chunks: each
//! row is a [`CaseChanges`] row of at most [`CHUNK_BYTES`] of one partition's cases in key
//! order, stored under its last key, so that the chunk that may hold a key is the first row
//! at or after it. A forgotten case is kept as such (a tombstone) until a merge reaches the
//! oldest run. The checkpoints' `meta` lists the runs, oldest first (`case_runs`).
//!
//! Why chunks and runs rather than one table of cases: a checkpoint that inserted its cases
//! one by one into a table of a million rewrote nearly every page of it (its cases are
//! spread over the whole key range), reading each page back first. Writing a run costs
//! what the checkpoint holds, a few thousand large rows appended in order; merging runs of
//! similar size now and then (as a log-structured merge tree does) keeps their number to
//! about the logarithm of the cases over the checkpoint's size.

use super::{CaseChanges, CaseKey, KeyRef, META, StoreError, file_err, raw_entry, str_of, u32_at};
use redb::{ReadableTable, TableDefinition};
use std::ops::Bound;
use std::path::Path;

/// A run's rows: its chunks under their last key.
pub(super) type ChunkTable<'a> =
    TableDefinition<'a, (&'static str, u32, &'static str), &'static [u8]>;

/// `meta` key of the checkpoints' file: the runs, oldest first, each three big-endian u64s
/// (its number, its bytes, its entries).
pub(super) const META_RUNS: &str = "case_runs";

/// A run's chunks are cut before they pass this size, unless one case is bigger (below
/// 64 KiB, so that a chunk with its key fits a 64 KiB page of redb's).
pub(super) const CHUNK_BYTES: usize = 60 << 10;

/// A checkpoint merges the newest runs into the one it writes while the next older run is
/// no bigger than what it writes so far: runs grow by doubling, and there are about
/// log2(cases / checkpoint) of them. At most this many are kept in any case.
pub(super) const MAX_RUNS: usize = 12;

/// One run, as `meta` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RunInfo {
    pub n: u64,
    pub bytes: u64,
    pub entries: u64,
}

/// The name of run `n`'s table.
pub(super) fn table_name(n: u64) -> String {
    format!("case_run_{n}")
}

/// The runs `meta` lists, oldest first.
pub(super) fn runs(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    file: &Path,
) -> Result<Vec<RunInfo>, StoreError> {
    list(meta, META_RUNS, file)
}

/// Records `runs` (oldest first) in the checkpoints' `meta`.
pub(super) fn set_runs(
    tx: &redb::WriteTransaction,
    runs: &[RunInfo],
    file: &Path,
) -> Result<(), StoreError> {
    set_list(tx, META_RUNS, runs, file)
}

/// A list of runs under `meta` key `key`, oldest first: the cases' ([`META_RUNS`]) or the
/// alert index's (`super::alert_runs`).
pub(super) fn list(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    file: &Path,
) -> Result<Vec<RunInfo>, StoreError> {
    let Some(v) = meta.get(key).map_err(|e| file_err(file, e))? else {
        return Ok(Vec::new());
    };
    let bytes = v.value();
    if !bytes.len().is_multiple_of(24) {
        return Err(StoreError::Corrupt {
            file: file.to_path_buf(),
            message: format!(
                "meta {key:?} is {} bytes, not a multiple of 24",
                bytes.len()
            ),
        });
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_be_bytes(b)
    };
    Ok((0..bytes.len() / 24)
        .map(|i| RunInfo {
            n: u64_at(i * 24),
            bytes: u64_at(i * 24 + 8),
            entries: u64_at(i * 24 + 16),
        })
        .collect())
}

/// Records a list of runs (oldest first) under `meta` key `key`.
pub(super) fn set_list(
    tx: &redb::WriteTransaction,
    key: &str,
    runs: &[RunInfo],
    file: &Path,
) -> Result<(), StoreError> {
    let mut meta = tx.open_table(META).map_err(|e| file_err(file, e))?;
    let mut v = Vec::with_capacity(runs.len() * 24);
    for r in runs {
        v.extend_from_slice(&r.n.to_be_bytes());
        v.extend_from_slice(&r.bytes.to_be_bytes());
        v.extend_from_slice(&r.entries.to_be_bytes());
    }
    meta.insert(key, v.as_slice())
        .map_err(|e| file_err(file, e))?;
    Ok(())
}

/// How many of the newest runs a checkpoint writing about `bytes` merges into its run.
pub(super) fn to_merge(runs: &[RunInfo], bytes: u64) -> usize {
    let mut acc = bytes;
    let mut take = 0;
    for r in runs.iter().rev() {
        if r.bytes > acc && runs.len() - take < MAX_RUNS {
            break;
        }
        acc = acc.saturating_add(r.bytes);
        take += 1;
    }
    take
}

/// The next run of a checkpoint writing about `bytes` over `runs` (oldest first): the runs
/// it keeps, the newest ones it merges into its run ([`to_merge`]), and its run's number.
/// The cases' runs and the alert index's (`super::alert_runs`) are planned alike.
pub(super) fn plan(runs: &[RunInfo], bytes: u64) -> (&[RunInfo], &[RunInfo], u64) {
    let (keep, merged) = runs.split_at(runs.len() - to_merge(runs, bytes));
    let n = runs.iter().map(|r| r.n).max().map_or(1, |m| m + 1);
    (keep, merged, n)
}

/// The cases in key order, of a key the newest: a run, or the overlay.
pub(super) trait Source {
    /// The current key; `None` when done.
    fn key(&self) -> Option<KeyRef<'_>>;
    /// The current case (`None`: forgotten).
    fn value(&self) -> Option<&[u8]>;
    fn advance(&mut self) -> Result<(), StoreError>;
}

/// Visits the union of `sources` (oldest first) in key order, until `visit` returns false:
/// of a key in several, the newest source's value (`None`: forgotten).
pub(super) fn merge(
    sources: &mut [&mut dyn Source],
    mut visit: impl FnMut(KeyRef<'_>, Option<&[u8]>) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    // Which sources are at the smallest key, found in the one pass over their keys that
    // finds it, rather than by copying the key out and comparing every source with it
    // again: half the key comparisons, no copies (`memcmp` was an eighth of the checkpoint
    // thread's samples in the 1M-event daemon bench, in perf).
    let mut at_best = vec![false; sources.len()];
    loop {
        let mut best: Option<(usize, KeyRef<'_>)> = None;
        at_best.fill(false);
        for (i, s) in sources.iter().enumerate() {
            let Some(k) = s.key() else { continue };
            match best.map(|(_, b)| k.cmp(&b)) {
                None | Some(std::cmp::Ordering::Less) => {
                    at_best.fill(false);
                    at_best[i] = true;
                    best = Some((i, k));
                }
                // The newest source holding the key gives its value.
                Some(std::cmp::Ordering::Equal) => {
                    at_best[i] = true;
                    best = Some((i, k));
                }
                Some(std::cmp::Ordering::Greater) => {}
            }
        }
        let Some((b, key)) = best else {
            return Ok(());
        };
        if !visit(key, sources[b].value())? {
            return Ok(());
        }
        for (s, at) in sources.iter_mut().zip(&at_best) {
            if *at {
                s.advance()?;
            }
        }
    }
}

/// The first four bytes of a packed row ([`pack`]): as a row's entry count (or an alert's
/// first bytes) no row of any format can start with them, so packed rows and rows written
/// as they are (by older formats, or where packing would not save) are told apart.
pub(super) const PACKED: [u8; 4] = [0xff; 4];

/// A row packed: [`PACKED`], the row's length (u32, little-endian), then the row
/// compressed with LZ4 (its block format); the row itself where that would not be
/// smaller. Case journal rows, alert groups and the runs' chunks are packed.
///
/// Why: a case's MessagePack repeats its keys, rule ids, clock kinds and instants, and a
/// chunk of cases, or a group of alerts, each other's; packed they take about a fifth of
/// the room (the daemon benchmark's 1,000,000 new cases: `cases.redb` 285 MB instead of
/// 822 MB, `redlight.redb` 488 MB instead of 738 MB). Every byte written costs redb's
/// copy and checksum, the kernel's page cache, fsync and, for a checkpoint, reading it
/// back to merge; packing at LZ4's speed costs less than that.
///
/// `buf` is scratch room kept between calls: it only grows (zeroing 60 KiB for every row
/// was a percent of the daemon's samples), so the packed row is the slice returned.
pub(super) fn pack<'a>(row: &'a [u8], buf: &'a mut Vec<u8>) -> &'a [u8] {
    let Ok(len) = u32::try_from(row.len()) else {
        return row;
    };
    let max = 8 + lz4_flex::block::get_maximum_output_size(row.len());
    if buf.len() < max {
        buf.resize(max, 0);
    }
    buf[..4].copy_from_slice(&PACKED);
    buf[4..8].copy_from_slice(&len.to_le_bytes());
    match lz4_flex::block::compress_into(row, &mut buf[8..max]) {
        Ok(n) if 8 + n < row.len() => &buf[..8 + n],
        _ => row,
    }
}

/// The length of a row as it unpacks ([`pack`]; that of the row itself if not packed).
pub(super) fn unpacked_len(row: &[u8]) -> usize {
    if is_packed(row) {
        u32::from_le_bytes([row[4], row[5], row[6], row[7]]) as usize
    } else {
        row.len()
    }
}

/// Whether a row is packed ([`pack`]).
pub(super) fn is_packed(row: &[u8]) -> bool {
    row.len() >= 8 && row[..4] == PACKED
}

/// A row as it was given to [`pack`], into `out`; a packed row that does not unpack to
/// its length is an error saying so.
pub(super) fn unpack_into(row: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    if !is_packed(row) {
        out.clear();
        out.extend_from_slice(row);
        return Ok(());
    }
    let len = unpacked_len(row);
    // LZ4 makes at most 255 bytes of one: a damaged length must not allocate gigabytes.
    if len > (row.len() - 8).saturating_mul(255) {
        return Err(format!(
            "packed row of {} bytes says it unpacks to {len}, more than LZ4 can",
            row.len()
        ));
    }
    // Only what `out` grows by is zeroed: the block overwrites all `len` bytes.
    out.resize(len, 0);
    match lz4_flex::block::decompress_into(&row[8..], out) {
        Ok(n) if n == len => Ok(()),
        Ok(n) => Err(format!("packed row of {len} bytes unpacks to {n}")),
        Err(e) => Err(format!("packed row does not unpack: {e}")),
    }
}

/// A run's cases from a key on, up to an end.
pub(super) struct RunCursor<'f> {
    run: u64,
    file: &'f Path,
    rows: redb::Range<'static, (&'static str, u32, &'static str), &'static [u8]>,
    to: Bound<CaseKey>,
    chunk: Vec<u8>,
    at: usize,
    left: u32,
    live: bool,
    topic: String,
    partition: u32,
    id: String,
    value: Option<std::ops::Range<usize>>,
}

impl<'f> RunCursor<'f> {
    pub fn new(
        table: &redb::ReadOnlyTable<(&'static str, u32, &'static str), &'static [u8]>,
        run: u64,
        file: &'f Path,
        from: Bound<KeyRef<'_>>,
        to: Bound<KeyRef<'_>>,
    ) -> Result<RunCursor<'f>, StoreError> {
        // The first chunk that can hold `from` is the first whose last key is not below it.
        let rows = match from {
            Bound::Included(k) | Bound::Excluded(k) => table.range::<KeyRef<'_>>(k..),
            Bound::Unbounded => table.range::<KeyRef<'_>>(..),
        }
        .map_err(|e| file_err(file, e))?;
        let mut c = RunCursor {
            run,
            file,
            rows,
            to: match to {
                Bound::Included((t, p, i)) => Bound::Included((t.to_string(), p, i.to_string())),
                Bound::Excluded((t, p, i)) => Bound::Excluded((t.to_string(), p, i.to_string())),
                Bound::Unbounded => Bound::Unbounded,
            },
            chunk: Vec::new(),
            at: 0,
            left: 0,
            live: true,
            topic: String::new(),
            partition: 0,
            id: String::new(),
            value: None,
        };
        c.advance()?;
        while let Some(k) = c.key() {
            let before = match from {
                Bound::Included(f) => k < f,
                Bound::Excluded(f) => k <= f,
                Bound::Unbounded => false,
            };
            if !before {
                break;
            }
            c.advance()?;
        }
        Ok(c)
    }

    fn corrupt(&self, message: String) -> StoreError {
        StoreError::Corrupt {
            file: self.file.to_path_buf(),
            message: format!("case run {}: {message}", self.run),
        }
    }
}

impl Source for RunCursor<'_> {
    fn key(&self) -> Option<KeyRef<'_>> {
        self.live
            .then_some((self.topic.as_str(), self.partition, self.id.as_str()))
    }

    fn value(&self) -> Option<&[u8]> {
        self.value.clone().and_then(|r| self.chunk.get(r))
    }

    fn advance(&mut self) -> Result<(), StoreError> {
        if !self.live {
            return Ok(());
        }
        while self.left == 0 {
            let (file, run) = (self.file, self.run);
            let next = next_chunk(&mut self.rows, &mut self.chunk, &mut self.at, file, |m| {
                StoreError::Corrupt {
                    file: file.to_path_buf(),
                    message: format!("case run {run}: {m}"),
                }
            })?;
            let Some(left) = next else {
                self.live = false;
                return Ok(());
            };
            self.left = left;
        }
        let e = raw_entry(&self.chunk, &mut self.at).map_err(|m| self.corrupt(m))?;
        self.left -= 1;
        let topic = str_of(&self.chunk, e.topic).map_err(|m| self.corrupt(m))?;
        self.topic.clear();
        self.topic.push_str(topic);
        let id = str_of(&self.chunk, e.id).map_err(|m| self.corrupt(m))?;
        self.id.clear();
        self.id.push_str(id);
        self.partition = e.partition;
        self.value = e.value;
        let key = (self.topic.as_str(), self.partition, self.id.as_str());
        let past = match &self.to {
            Bound::Included((t, p, i)) => key > (t.as_str(), *p, i.as_str()),
            Bound::Excluded((t, p, i)) => key >= (t.as_str(), *p, i.as_str()),
            Bound::Unbounded => false,
        };
        if past {
            self.live = false;
        }
        Ok(())
    }
}

/// Reads a run's next row into `chunk`, with `at` after its entry count, which it returns;
/// `None` after the last row. `corrupt` names a count that cannot be read.
pub(super) fn next_chunk<K: redb::Key + 'static>(
    rows: &mut redb::Range<'static, K, &'static [u8]>,
    chunk: &mut Vec<u8>,
    at: &mut usize,
    file: &Path,
    corrupt: impl FnOnce(String) -> StoreError,
) -> Result<Option<u32>, StoreError> {
    let Some(row) = rows.next() else {
        return Ok(None);
    };
    let (_, v) = row.map_err(|e| file_err(file, e))?;
    *at = 0;
    unpack_into(v.value(), chunk)
        .and_then(|()| u32_at(chunk, at))
        .map(Some)
        .map_err(corrupt)
}

/// A run's entry for one key: `Some(None)` when the run has it forgotten, `None` when the
/// run does not have it.
pub(super) fn get(
    table: &redb::ReadOnlyTable<(&'static str, u32, &'static str), &'static [u8]>,
    run: u64,
    file: &Path,
    key: KeyRef<'_>,
) -> Result<Option<Option<Vec<u8>>>, StoreError> {
    let mut rows = table
        .range::<KeyRef<'_>>(key..)
        .map_err(|e| file_err(file, e))?;
    let Some(row) = rows.next() else {
        return Ok(None);
    };
    let (k, v) = row.map_err(|e| file_err(file, e))?;
    let (t, p, _) = k.value();
    if (t, p) != (key.0, key.1) {
        return Ok(None);
    }
    let corrupt = |message: String| StoreError::Corrupt {
        file: file.to_path_buf(),
        message: format!("case run {run}: {message}"),
    };
    let mut unpacked = Vec::new();
    unpack_into(v.value(), &mut unpacked).map_err(corrupt)?;
    let chunk = unpacked.as_slice();
    let mut at = 0;
    let count = u32_at(chunk, &mut at).map_err(corrupt)?;
    for _ in 0..count {
        let e = raw_entry(chunk, &mut at).map_err(corrupt)?;
        // Bytes compare as the strings do (UTF-8 keeps the order of code points).
        match chunk[e.id].cmp(key.2.as_bytes()) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => {
                return Ok(Some(e.value.and_then(|r| chunk.get(r)).map(<[u8]>::to_vec)));
            }
            std::cmp::Ordering::Greater => break,
        }
    }
    Ok(None)
}

/// Where a [`RunWriter`] puts its chunks, each under its last key.
pub(super) trait ChunkSink {
    fn put(&mut self, key: KeyRef<'_>, row: &[u8]) -> Result<(), StoreError>;
}

/// A run written into an open table, all in the caller's transaction (a conversion at
/// start-up, which reads what it converts in that same transaction).
pub(super) struct TableSink<'a, 't> {
    pub table: redb::Table<'t, (&'static str, u32, &'static str), &'static [u8]>,
    pub file: &'a Path,
}

impl ChunkSink for TableSink<'_, '_> {
    fn put(&mut self, key: KeyRef<'_>, row: &[u8]) -> Result<(), StoreError> {
        self.table
            .insert(key, row)
            .map(drop)
            .map_err(|e| file_err(self.file, e))
    }
}

/// A checkpoint's run, written in steps: after every `step` bytes of chunks the
/// transaction is committed without durability and the next one goes on, so that the
/// pages of each step are still in redb's write buffer when their commit checksums them.
/// (With the whole run in one transaction, a run bigger than half of redb's page cache was
/// written out page by page as the buffer filled, read back at the commit to checksum it,
/// and written again: in the 1M-event daemon bench that was a third of the checkpoint
/// thread's samples.) The caller's last commit is durable and carries the run's place in
/// `meta`; a crash before it undoes every step, and a checkpoint cut short by an error
/// leaves a table no `meta` lists, which the next checkpoint of that number deletes first.
pub(super) struct SteppedSink<'d> {
    db: &'d redb::Database,
    tx: Option<redb::WriteTransaction>,
    name: String,
    file: &'d Path,
    step: usize,
    pending: usize,
}

impl<'d> SteppedSink<'d> {
    /// Writes into table `name` through `tx`, deleting what a checkpoint cut short left
    /// there.
    pub fn new(
        db: &'d redb::Database,
        tx: redb::WriteTransaction,
        name: &str,
        file: &'d Path,
        step: usize,
    ) -> Result<SteppedSink<'d>, StoreError> {
        tx.delete_table(ChunkTable::new(name))
            .map_err(|e| file_err(file, e))?;
        Ok(SteppedSink {
            db,
            tx: Some(tx),
            name: name.to_string(),
            file,
            step: step.max(1),
            pending: 0,
        })
    }

    fn tx(&self) -> Result<&redb::WriteTransaction, StoreError> {
        self.tx.as_ref().ok_or_else(|| no_tx(self.file))
    }

    /// The transaction the rest of the checkpoint goes on in.
    pub fn into_tx(self) -> Result<redb::WriteTransaction, StoreError> {
        let file = self.file;
        self.tx.ok_or_else(|| no_tx(file))
    }
}

/// A step whose next transaction failed to begin (that error was returned then).
fn no_tx(file: &Path) -> StoreError {
    StoreError::Corrupt {
        file: file.to_path_buf(),
        message: "a checkpoint's step failed to begin its transaction".into(),
    }
}

impl ChunkSink for SteppedSink<'_> {
    fn put(&mut self, key: KeyRef<'_>, row: &[u8]) -> Result<(), StoreError> {
        {
            let def: ChunkTable<'_> = TableDefinition::new(&self.name);
            let mut table = self
                .tx()?
                .open_table(def)
                .map_err(|e| file_err(self.file, e))?;
            table.insert(key, row).map_err(|e| file_err(self.file, e))?;
        }
        self.pending += row.len();
        if self.pending >= self.step {
            if let Some(mut tx) = self.tx.take() {
                tx.set_durability(redb::Durability::None)
                    .map_err(|e| file_err(self.file, e))?;
                tx.commit().map_err(|e| file_err(self.file, e))?;
            }
            self.tx = Some(self.db.begin_write().map_err(|e| file_err(self.file, e))?);
            self.pending = 0;
        }
        Ok(())
    }
}

/// Writes a run: entries pushed in key order, cut into chunks.
pub(super) struct RunWriter<S> {
    sink: S,
    chunk: CaseChanges,
    chunk_bytes: usize,
    packed: Vec<u8>,
    last: CaseKey,
    bytes: u64,
    entries: u64,
}

impl<S: ChunkSink> RunWriter<S> {
    pub fn new(sink: S, chunk_bytes: usize) -> RunWriter<S> {
        RunWriter {
            sink,
            chunk: CaseChanges::default(),
            chunk_bytes,
            packed: Vec::new(),
            last: (String::new(), 0, String::new()),
            bytes: 0,
            entries: 0,
        }
    }

    /// The next entry (`None`: forgotten); keys come in order.
    pub fn push(&mut self, key: KeyRef<'_>, value: Option<&[u8]>) -> Result<(), StoreError> {
        let len = CaseChanges::entry_len(key.0, key.2, value);
        if !self.chunk.is_empty()
            && ((key.0, key.1) != (self.last.0.as_str(), self.last.1)
                || self.chunk.row().len() + len > self.chunk_bytes)
        {
            self.flush()?;
        }
        match value {
            Some(v) => self.chunk.put_encoded(key.0, key.1, key.2, v),
            None => self.chunk.forget(key.0, key.1, key.2),
        }
        self.last.0.clear();
        self.last.0.push_str(key.0);
        self.last.1 = key.1;
        self.last.2.clear();
        self.last.2.push_str(key.2);
        self.entries += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let key = (self.last.0.as_str(), self.last.1, self.last.2.as_str());
        self.sink
            .put(key, pack(self.chunk.row(), &mut self.packed))?;
        self.bytes += self.chunk.row().len() as u64;
        self.chunk.clear();
        Ok(())
    }

    /// The sink, the run's bytes and its entries.
    pub fn finish(mut self) -> Result<(S, u64, u64), StoreError> {
        self.flush()?;
        Ok((self.sink, self.bytes, self.entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: u64, bytes: u64) -> RunInfo {
        RunInfo {
            n,
            bytes,
            entries: 1,
        }
    }

    /// Bytes like a chunk of cases: the same keys and words again and again.
    fn repetitive(n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        let mut i = 0u32;
        while v.len() < n {
            v.extend_from_slice(&i.to_le_bytes());
            v.extend_from_slice("department 市住建局 item 建筑工程施工许可 workdays".as_bytes());
            i += 1;
        }
        v.truncate(n);
        v
    }

    /// Bytes no compressor shrinks (xorshift).
    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn packed_rows_unpack_to_what_was_packed() {
        let (mut buf, mut back) = (Vec::new(), Vec::new());
        // Each row, and whether it must come out packed to under a quarter of its size.
        for (row, shrinks) in [
            (Vec::new(), false),
            (b"tiny".to_vec(), false),
            (repetitive(100), false),
            (repetitive(60 << 10), true),
            (repetitive(300 << 10), true),
            // The scratch room is bigger than this row now.
            (repetitive(50 << 10), true),
            (noise(64 << 10), false),
        ] {
            let packed = pack(&row, &mut buf);
            unpack_into(packed, &mut back).expect("unpacks");
            assert_eq!(back, row, "{} bytes", row.len());
            if shrinks {
                assert!(is_packed(packed), "{} bytes", row.len());
                assert!(
                    packed.len() * 4 < row.len(),
                    "{} of {}",
                    packed.len(),
                    row.len()
                );
            } else if !is_packed(packed) {
                // Where packing would not save, the row as it is, told apart.
                assert_eq!(packed, row.as_slice(), "{} bytes", row.len());
            }
        }
        // Noise does not shrink: kept as it is.
        let noise = noise(64 << 10);
        assert!(!is_packed(pack(&noise, &mut buf)));
    }

    #[test]
    fn a_damaged_packed_row_is_an_error_not_a_panic() {
        let row = repetitive(60 << 10);
        let mut buf = Vec::new();
        let packed = pack(&row, &mut buf).to_vec();
        let mut out = Vec::new();
        // Cut short anywhere after its header.
        for cut in (8..packed.len()).step_by(97) {
            let err = unpack_into(&packed[..cut], &mut out).expect_err("cut short");
            assert!(err.contains("packed row"), "{cut}: {err}");
        }
        // A length that does not match, or that no LZ4 block of its size can reach.
        for len in [row.len() as u32 - 1, row.len() as u32 + 1, u32::MAX] {
            let mut bad = packed.clone();
            bad[4..8].copy_from_slice(&len.to_le_bytes());
            let err = unpack_into(&bad, &mut out).expect_err("wrong length");
            assert!(err.contains("packed row"), "{len}: {err}");
        }
        assert!(
            out.len() < 1 << 20,
            "no gigabytes allocated for a damaged length"
        );
        // Bytes flipped in the block: an error or other bytes, never a panic.
        for at in (8..packed.len()).step_by(131) {
            let mut bad = packed.clone();
            bad[at] ^= 0x5a;
            let _ = unpack_into(&bad, &mut out);
        }
    }

    #[test]
    fn runs_merge_by_doubling_and_stay_few() {
        // Checkpoints of 100 bytes each, the first into no runs at all.
        let mut runs: Vec<RunInfo> = Vec::new();
        let mut sizes = Vec::new();
        for n in 1..=64u64 {
            let take = to_merge(&runs, 100);
            let merged: u64 = runs[runs.len() - take..].iter().map(|r| r.bytes).sum();
            runs.truncate(runs.len() - take);
            runs.push(run(n, 100 + merged));
            sizes.push(runs.iter().map(|r| r.bytes / 100).collect::<Vec<_>>());
            // Oldest first, each older run bigger than the newer ones together.
            for w in runs.windows(2) {
                assert!(w[0].bytes > w[1].bytes, "after {n}: {:?}", sizes.last());
            }
            assert!(runs.len() <= 7, "after {n}: {:?}", sizes.last());
        }
        // A binary counter: 64 checkpoints of 100 bytes make one run of 6,400.
        assert_eq!(sizes[0], vec![1]);
        assert_eq!(sizes[1], vec![2]);
        assert_eq!(sizes[2], vec![2, 1]);
        assert_eq!(sizes[3], vec![4]);
        assert_eq!(sizes[63], vec![64]);
    }

    #[test]
    fn runs_are_capped_even_when_each_is_bigger_than_the_next() {
        let runs: Vec<RunInfo> = (0..MAX_RUNS as u64)
            .map(|n| run(n, 1 << (40 - n)))
            .collect();
        // Nothing as small as 1 byte to merge with, but the cap makes room for the new run.
        assert_eq!(to_merge(&runs, 1), 1);
        assert_eq!(to_merge(&runs[..3], 1), 0);
    }
}
