//! The daemon's store writer: one thread that makes batches durable while the consumer loop
//! applies the next batch.
//!
//! The loop builds a [`WriteBatch`] (cases serialised, alerts, offsets, clocks) and hands it
//! over with [`Writer::submit`]; the thread commits it in one redb transaction and only then
//! commits the batch's offsets to Kafka and tells alert delivery how far the engines' clocks
//! have got. The hand-over is a short queue ([`QUEUE`] batches): the loop goes on applying
//! while the writer commits (store checkpoints run on a thread of their own, into a second
//! file: `src/store.rs`; the writer waits for one only when the journal has reached twice
//! `store.checkpoint_cases`); batches are committed in the order they were built. So the
//! promise of the single-threaded loop holds: offsets in Kafka, and the engine time that
//! escalation steps wait for, never run ahead of what the store holds.
//!
//! Whoever reads the store for state the loop is about to rely on (partition assignment, the
//! rebalance callback's seek, shutdown) first waits with [`Writer::drain`] until nothing is
//! pending. A failed commit is kept and returned by the next `submit` or `drain`: the daemon
//! stops, as it did when the loop committed itself, and restarts from what is durable.
//!
//! Group commit (`store.sync_ms`): a batch's transaction is atomic at once but made durable
//! (fsync) at most every `sync_ms`; the batches in between are committed lazily
//! ([`Store::commit_lazy`]). What a lazy batch lets out of the process waits for the sync:
//! its offsets go to Kafka, its engine time to escalation and its count leaves [`Pending`]
//! only once it is durable. A crash undoes the lazy batches since the last sync, together
//! with their offsets, so they are consumed and applied again: the same exactly-once effects
//! as before, at the price of redoing up to `sync_ms` of work after a crash. A batch whose
//! alerts enqueue deliveries is made durable at once (nothing is sent from a commit a crash
//! could undo), and `sync_ms = 0` makes every batch durable.

use crate::alert::Alert;
use crate::metrics::Metrics;
use crate::store::{CaseChanges, Store, WriteBatch};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, channel, sync_channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How many batches may wait for the writer before [`Writer::submit`] blocks. Without a
/// queue (a rendezvous) the loop stood still through every checkpoint; with one, the
/// 1M-event benchmark went from 34,800 to 36,200–38,400 events/s. 16 was no faster (39,976
/// and 41,447 against 37,214–41,000 with 4): the writer itself was the limit (checkpoints
/// then ran on its thread). Each waiting batch holds its cases and alerts in memory, a few
/// MiB at `kafka.batch_max` = 5000.
pub const QUEUE: usize = 4;

/// One hand-over: a batch and the engine time to publish once it is durable.
struct Job {
    batch: WriteBatch,
    engine_time: Option<i64>,
}

/// What the loop and the rebalance callback wait on.
#[derive(Default)]
pub struct Pending {
    state: Mutex<PendingState>,
    idle: Condvar,
}

#[derive(Default)]
struct PendingState {
    /// Batches handed over and not yet committed (or failed).
    count: usize,
    /// The first failure, kept until the loop sees it.
    error: Option<String>,
}

impl Pending {
    /// Blocks until every batch handed over is committed; returns the failure, if any.
    pub fn wait_idle(&self) -> Result<(), String> {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        while s.count > 0 {
            s = match self.idle.wait(s) {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
        }
        match &s.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn error(&self) -> Option<String> {
        match self.state.lock() {
            Ok(s) => s.error.clone(),
            Err(p) => p.into_inner().error.clone(),
        }
    }

    fn add(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.count += 1;
        }
    }

    /// `batches` handed over are durable; or, with an error, nothing handed over will be
    /// (the writer stops): every waiter returns with the error.
    fn done(&self, batches: usize, error: Option<String>) {
        if let Ok(mut s) = self.state.lock() {
            s.count = s.count.saturating_sub(batches);
            if error.is_some() {
                s.count = 0;
            }
            if s.error.is_none() {
                s.error = error;
            }
        }
        self.idle.notify_all();
    }
}

/// The writer thread's handle.
pub struct Writer {
    tx: Option<SyncSender<Job>>,
    /// Committed batches coming back, to be freed on the loop's thread rather than the
    /// writer's (a batch is thousands of small allocations).
    recycle: Mutex<Receiver<WriteBatch>>,
    /// The buffers of committed batches, emptied, for the next batches: a journal row is a
    /// few MiB, and a batch's alerts as much again, which the allocator would otherwise
    /// take from the system, zeroed, and give back for every batch.
    spare: Mutex<Spare>,
    pending: Arc<Pending>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Emptied buffers of committed batches, at most [`SPARE`] of each kind (one per batch the
/// queue holds, and the ones being filled and written).
#[derive(Default)]
struct Spare {
    cases: Vec<CaseChanges>,
    alerts: Vec<Vec<Alert>>,
    /// Scorecard rows' vectors: grown from nothing for every batch (a row per case closed),
    /// their growth was 1.5% of the loop's samples in the whole-case bench.
    ledgers: Vec<Ledger>,
}

/// A batch's scorecard rows (`WriteBatch::ledger`).
type Ledger = Vec<(i64, String, String, Vec<u8>)>;

const SPARE: usize = QUEUE + 2;

/// Where the writer sends offsets and engine time after a commit.
pub struct Sinks<C: ConsumerContext + 'static> {
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub delivery: Arc<crate::delivery::Delivery>,
    /// Set once the consumer exists (it is created after the writer's `Pending`, which
    /// its rebalance callback needs).
    pub consumer: Arc<OnceLock<Arc<StreamConsumer<C>>>>,
}

impl Writer {
    /// Starts the thread. `sync_every`: how long a batch may stay committed but not yet
    /// durable (zero: every batch is durable before the next is taken).
    pub fn start<C: ConsumerContext + 'static>(
        sinks: Sinks<C>,
        pending: Arc<Pending>,
        sync_every: Duration,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let (recycle_tx, recycle) = channel::<WriteBatch>();
        let p = pending.clone();
        let thread = std::thread::Builder::new()
            .name("redlight-store-writer".into())
            .spawn(move || {
                let mut lazy = Lazy::default();
                loop {
                    // With lazy batches waiting, wait for the next job at most until they are
                    // due to be made durable.
                    let job = match lazy.since {
                        None => match rx.recv() {
                            Ok(job) => Some(job),
                            Err(_) => break,
                        },
                        Some(since) => {
                            match rx.recv_timeout(sync_every.saturating_sub(since.elapsed())) {
                                Ok(job) => Some(job),
                                Err(RecvTimeoutError::Timeout) => None,
                                Err(RecvTimeoutError::Disconnected) => break,
                            }
                        }
                    };
                    // A panic must not leave `pending` counting a batch forever (the loop
                    // would wait on it at the next rebalance or at shutdown).
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &job {
                            Some(job) => write(&sinks, job, &mut lazy, sync_every),
                            None => sync(&sinks, &mut lazy),
                        }))
                        .unwrap_or_else(|_| Err("the store writer panicked".to_string()));
                    if let Some(job) = job {
                        let _ = recycle_tx.send(job.batch);
                    }
                    if !settle(&p, result, "store commit failed; the daemon stops") {
                        return;
                    }
                }
                // The loop has gone (shutdown): what is still lazy is made durable.
                settle(
                    &p,
                    sync(&sinks, &mut lazy),
                    "the last batches are not durable; they will be consumed again",
                );
            })?;
        Ok(Writer {
            tx: Some(tx),
            recycle: Mutex::new(recycle),
            spare: Mutex::new(Spare::default()),
            pending,
            thread: Some(thread),
        })
    }

    /// Hands a batch over; waits while [`QUEUE`] batches are already waiting. Returns an
    /// earlier commit's failure instead.
    pub fn submit(&self, batch: WriteBatch, engine_time: Option<i64>) -> anyhow::Result<()> {
        if let Some(e) = self.pending.error() {
            anyhow::bail!("{e}");
        }
        let Some(tx) = &self.tx else {
            anyhow::bail!("the store writer has stopped");
        };
        if let Ok(recycle) = self.recycle.lock() {
            while let Ok(mut done) = recycle.try_recv() {
                let mut cases = std::mem::take(&mut done.cases);
                let mut alerts = std::mem::take(&mut done.alerts);
                let mut ledger = std::mem::take(&mut done.ledger);
                drop(done);
                cases.clear();
                alerts.clear();
                ledger.clear();
                if let Ok(mut spare) = self.spare.lock() {
                    if spare.cases.len() < SPARE {
                        spare.cases.push(cases);
                    }
                    if spare.alerts.len() < SPARE {
                        spare.alerts.push(alerts);
                    }
                    if spare.ledgers.len() < SPARE {
                        spare.ledgers.push(ledger);
                    }
                }
            }
        }
        self.pending.add();
        let job = Job { batch, engine_time };
        let sent = tokio::task::block_in_place(|| tx.send(job).is_ok());
        if !sent {
            self.pending.done(1, None);
            return Err(match self.pending.error() {
                Some(e) => anyhow::anyhow!("{e}"),
                None => anyhow::anyhow!("the store writer has stopped"),
            });
        }
        Ok(())
    }

    /// An empty case buffer for the next batch, with the room a committed one had.
    pub fn case_buffer(&self) -> CaseChanges {
        self.spare
            .lock()
            .ok()
            .and_then(|mut s| s.cases.pop())
            .unwrap_or_default()
    }

    /// An empty vector for the next batch's alerts, with the room a committed one had.
    pub fn alert_vec(&self) -> Vec<Alert> {
        self.spare
            .lock()
            .ok()
            .and_then(|mut s| s.alerts.pop())
            .unwrap_or_default()
    }

    /// An empty vector for the next batch's scorecard rows, with the room a committed one
    /// had.
    pub fn ledger_vec(&self) -> Ledger {
        self.spare
            .lock()
            .ok()
            .and_then(|mut s| s.ledgers.pop())
            .unwrap_or_default()
    }

    /// Waits until every batch handed over is durable.
    pub fn drain(&self) -> anyhow::Result<()> {
        tokio::task::block_in_place(|| self.pending.wait_idle()).map_err(|e| anyhow::anyhow!(e))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx = None; // ends the thread's loop once the last batch is written
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Tells `pending` how a commit or sync went: the batches it made durable, or the failure
/// that stops the writer (logged with `failure`). Returns whether the writer goes on.
fn settle(pending: &Pending, result: Result<Option<usize>, String>, failure: &str) -> bool {
    match result {
        Ok(durable) => {
            if let Some(batches) = durable {
                pending.done(batches, None);
            }
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "{failure}");
            pending.done(0, Some(e));
            false
        }
    }
}

/// Batches committed lazily and not yet durable, and what they hold back.
#[derive(Default)]
struct Lazy {
    /// How many (counted in [`Pending`]).
    batches: usize,
    /// When the first of them was committed; `None` when there are none.
    since: Option<Instant>,
    /// Their offsets, the latest per partition.
    offsets: BTreeMap<(String, u32), u64>,
    /// The latest engine time among them.
    engine_time: Option<i64>,
}

impl Lazy {
    fn hold(&mut self, job: &Job) {
        self.batches += 1;
        self.since.get_or_insert_with(Instant::now);
        for (topic, partition, next) in &job.batch.offsets {
            self.offsets.insert((topic.clone(), *partition), *next);
        }
        if job.engine_time.is_some() {
            self.engine_time = job.engine_time;
        }
    }
}

/// Commits one job's batch: durably when lazy batches have waited `sync_every` (or lazy
/// commits are off), else lazily. Returns how many batches became durable (`None`: this one
/// is held back with the lazy ones).
fn write<C: ConsumerContext + 'static>(
    sinks: &Sinks<C>,
    job: &Job,
    lazy: &mut Lazy,
    sync_every: Duration,
) -> Result<Option<usize>, String> {
    let batch = &job.batch;
    let durable = if batch.is_empty() {
        // Nothing to write: its engine time waits for the lazy batches before it, if any.
        lazy.since.is_none()
    } else if sync_every.is_zero() || lazy.since.is_some_and(|t| t.elapsed() >= sync_every) {
        timed(sinks, || sinks.store.commit(batch).map(|_| true))?
    } else {
        timed(sinks, || {
            sinks.store.commit_lazy(batch).map(|(_, durable)| durable)
        })?
    };
    lazy.hold(job);
    if durable {
        publish(sinks, lazy).map(Some)
    } else {
        Ok(None)
    }
}

/// Makes the lazy batches durable and publishes what they held back.
fn sync<C: ConsumerContext + 'static>(
    sinks: &Sinks<C>,
    lazy: &mut Lazy,
) -> Result<Option<usize>, String> {
    if lazy.since.is_none() {
        return Ok(None);
    }
    timed(sinks, || sinks.store.sync())?;
    publish(sinks, lazy).map(Some)
}

/// Runs a store transaction, observed in `redlight_commit_seconds`.
fn timed<C: ConsumerContext + 'static, T>(
    sinks: &Sinks<C>,
    commit: impl FnOnce() -> Result<T, crate::store::StoreError>,
) -> Result<T, String> {
    let started = Instant::now();
    let result = commit().map_err(|e| e.to_string());
    sinks
        .metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    sinks
        .metrics
        .journal_entries
        .set(i64::try_from(sinks.store.overlay_size()).unwrap_or(i64::MAX));
    sinks
        .metrics
        .journal_bytes
        .set(i64::try_from(sinks.store.overlay_bytes()).unwrap_or(i64::MAX));
    if let Some(s) = sinks.store.take_checkpoint_seconds() {
        sinks.metrics.checkpoint_seconds.observe(s);
    }
    result
}

/// Everything in `lazy` is durable: its engine time goes to escalation, its offsets to
/// Kafka and the metrics. Returns how many batches that was, and empties `lazy`.
fn publish<C: ConsumerContext + 'static>(
    sinks: &Sinks<C>,
    lazy: &mut Lazy,
) -> Result<usize, String> {
    let done = std::mem::take(lazy);
    if let Some(t) = done.engine_time {
        sinks.delivery.set_engine_time(t);
    }
    if done.offsets.is_empty() {
        return Ok(done.batches);
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in &done.offsets {
        let p = partition.to_string();
        sinks
            .metrics
            .durable_offset
            .with_label_values(&[topic.as_str(), p.as_str()])
            .set(*next as i64);
        if let Err(e) =
            tpl.add_partition_offset(topic, *partition as i32, Offset::Offset(*next as i64))
        {
            tracing::debug!(error = %e, "offset not added to the Kafka commit");
        }
    }
    if let Some(consumer) = sinks.consumer.get()
        && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
    {
        tracing::debug!(error = %e, "offset commit to Kafka failed; the store has them");
    }
    Ok(done.batches)
}
