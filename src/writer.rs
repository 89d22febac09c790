//! The daemon's store writer: one thread that makes batches durable while the consumer loop
//! applies the next batch.
//!
//! The loop builds a [`WriteBatch`] (cases serialised, alerts, offsets, clocks) and hands it
//! over with [`Writer::submit`]; the thread commits it in one redb transaction and only then
//! commits the batch's offsets to Kafka and tells alert delivery how far the engines' clocks
//! have got. The hand-over is a rendezvous: at most one batch is being committed while the
//! loop works on the next, and batches are committed in the order they were built. So the
//! promise of the single-threaded loop holds: offsets in Kafka, and the engine time that
//! escalation steps wait for, never run ahead of what the store holds.
//!
//! Whoever reads the store for state the loop is about to rely on (partition assignment, the
//! rebalance callback's seek, shutdown) first waits with [`Writer::drain`] until nothing is
//! pending. A failed commit is kept and returned by the next `submit` or `drain`: the daemon
//! stops, as it did when the loop committed itself, and restarts from what is durable.

use crate::metrics::Metrics;
use crate::store::{Store, WriteBatch};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

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

    fn done(&self, error: Option<String>) {
        if let Ok(mut s) = self.state.lock() {
            s.count = s.count.saturating_sub(1);
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
    pending: Arc<Pending>,
    thread: Option<std::thread::JoinHandle<()>>,
}

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
    pub fn start<C: ConsumerContext + 'static>(
        sinks: Sinks<C>,
        pending: Arc<Pending>,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = sync_channel::<Job>(0);
        let p = pending.clone();
        let thread = std::thread::Builder::new()
            .name("redlight-store-writer".into())
            .spawn(move || {
                for job in rx {
                    // A panic must not leave `pending` counting a batch forever (the loop
                    // would wait on it at the next rebalance or at shutdown).
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        write(&sinks, &job)
                    }))
                    .unwrap_or_else(|_| Err("the store writer panicked".to_string()));
                    let failed = result.err();
                    if let Some(e) = &failed {
                        tracing::error!(error = %e, "store commit failed; the daemon stops");
                    }
                    let stop = failed.is_some();
                    p.done(failed);
                    if stop {
                        break;
                    }
                }
            })?;
        Ok(Writer {
            tx: Some(tx),
            pending,
            thread: Some(thread),
        })
    }

    /// Hands a batch over; waits while the previous one is still being committed. Returns
    /// an earlier commit's failure instead.
    pub fn submit(&self, batch: WriteBatch, engine_time: Option<i64>) -> anyhow::Result<()> {
        if let Some(e) = self.pending.error() {
            anyhow::bail!("{e}");
        }
        let Some(tx) = &self.tx else {
            anyhow::bail!("the store writer has stopped");
        };
        self.pending.add();
        let job = Job { batch, engine_time };
        let sent = tokio::task::block_in_place(|| tx.send(job).is_ok());
        if !sent {
            self.pending.done(None);
            return Err(match self.pending.error() {
                Some(e) => anyhow::anyhow!("{e}"),
                None => anyhow::anyhow!("the store writer has stopped"),
            });
        }
        Ok(())
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

fn write<C: ConsumerContext + 'static>(sinks: &Sinks<C>, job: &Job) -> Result<(), String> {
    let batch = &job.batch;
    if !batch.is_empty() {
        let started = Instant::now();
        sinks.store.commit(batch).map_err(|e| e.to_string())?;
        sinks
            .metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    if let Some(t) = job.engine_time {
        sinks.delivery.set_engine_time(t);
    }
    if batch.offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, next) in &batch.offsets {
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
    Ok(())
}
