//! `redlight run`: the engine as a service — Kafka in, durable state, alerts out.
//!
//! One loop owns everything mutable: it receives a batch of messages, applies each to the
//! engine of its partition, then writes the changed cases, the alerts and the partitions'
//! next offsets in one store transaction, and only then commits the offsets to Kafka. Input
//! is at-least-once; effects are exactly-once, because on (re)assignment the consumer starts
//! from the offsets in the store and skips anything below them.
//!
//! Each partition has its own [`Engine`]. Its clock is its own events' time (timers due
//! before an event fire before it, as in `redlight replay`), and it follows the wall clock
//! only once the partition is caught up (its next offset has reached the high watermark)
//! and no message came for `kafka.idle_ms`. So a backlog — after a restart, or from a
//! producer feeding history — gives exactly the alerts `redlight replay` gives, with no
//! false red for a case whose stop event is still in the backlog, while a quiet live stream
//! fires its timers on time.
//! A case follows its events from one partition to another, of its topic or of another
//! input topic (partitions added to a topic, a producer keying otherwise, a case's events
//! published to two topics): see `Loop::follow_case`.
//! Messages that cannot be applied are copied to the dead-letter topic (reason in headers)
//! before their offset is committed; nothing on the input can stop the loop.

use crate::alert::Alert;
use crate::clock::wall_ms;
use crate::config::Config;
use crate::engine::{Applied, Case, Engine, EngineError};
use crate::event::Event;
use crate::log_throttle::{LogThrottle, unsaid_note};
use crate::metrics::Metrics;
use crate::store::{Store, WriteBatch};
use anyhow::Context as _;
use futures_core::Stream as _;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers as _, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A partition of an input topic.
type Slot = (String, u32);

/// What the HTTP side can see of the daemon.
pub struct Shared {
    pub store: Arc<Store>,
    pub metrics: Metrics,
    /// Store restored and the consumer running.
    pub started: AtomicBool,
    /// Partitions assigned to this instance.
    pub assigned: Mutex<Vec<Slot>>,
    /// The last day of calendar data and today's date, for /readyz.
    pub calendar_last_day: chrono::NaiveDate,
    pub tz: chrono_tz::Tz,
    /// The rules, calendar and settings the API and the board read the store with.
    pub view: crate::api::View,
    /// The open cases of the partitions held, per class, as the consumer loop counts them
    /// (the open-case gauges: `src/open_counts.rs`).
    pub open: Mutex<crate::open_counts::Totals>,
    /// What sending each dead letter still in the store met ([`send_dead_letters`]), for
    /// `/api/v1/input/dead-letters`.
    pub dead_letter_tries: Arc<DeadLetterTries>,
    /// `kafka.dead_letter_topic`.
    pub dead_letter_topic: String,
    /// The Kafka client's last error and its reason (when, and what), for /readyz: when no
    /// partition is assigned it says why (a broker out of reach, a refused login, "No
    /// Kerberos credentials available"), which otherwise only the log had.
    pub kafka_error: Mutex<Option<(std::time::Instant, String)>>,
    /// Whether the input is flowing, from librdkafka's statistics (each second): since when
    /// no connection to any broker has been up, and how many messages the partitions held
    /// are behind the brokers. The board and /readyz say when the lights may be behind
    /// ([`Shared::input_notice`]).
    pub input: Mutex<InputState>,
    /// `store.backup_dir` resolved and `store.backups_keep`, for `POST /api/v1/backup`.
    pub backup_dir: std::path::PathBuf,
    pub backups_keep: usize,
    /// Held while a backup is written: one at a time.
    pub backup_running: tokio::sync::Mutex<()>,
}

/// Why [`Shared::backup_now`] wrote no backup.
#[derive(Debug)]
pub enum BackupRefused {
    /// Another backup is being written.
    Busy,
    /// It failed: the reason (logged and counted).
    Failed(String),
}

impl Shared {
    /// Writes a backup of the store into `store.backup_dir` now (`src/store/backup.rs`),
    /// unless one is being written: counted, logged, and the last success's gauge set.
    pub async fn backup_now(
        self: &Arc<Self>,
    ) -> Result<crate::store::backup::BackupReport, BackupRefused> {
        let Ok(running) = self.backup_running.try_lock() else {
            return Err(BackupRefused::Busy);
        };
        let shared = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            shared.store.backup(&shared.backup_dir, shared.backups_keep)
        })
        .await;
        drop(running);
        let result = match result {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(report) => {
                self.metrics.backups.with_label_values(&["ok"]).inc();
                self.metrics
                    .backup_last_success
                    .set(chrono::Utc::now().timestamp());
                tracing::info!(backup = %report.directory.display(), rows = report.rows,
                    seconds = report.seconds, "store backed up");
                Ok(report)
            }
            Err(message) => {
                self.metrics.backups.with_label_values(&["failed"]).inc();
                tracing::error!(error = %message, dir = %self.backup_dir.display(),
                    "a backup of the store failed; the store itself is unaffected");
                Err(BackupRefused::Failed(message))
            }
        }
    }
}

/// How long a scheduled backup that failed waits before it is tried again (or the
/// interval, when shorter).
const BACKUP_RETRY: Duration = Duration::from_secs(600);

/// The first scheduled backup waits at least this long after the start (or the interval,
/// when shorter), so that it does not take a core from restoring the partitions.
const FIRST_BACKUP_AFTER: Duration = Duration::from_secs(60);

/// `store.backup_every`: the first backup this long after the newest in
/// `store.backup_dir` (a minute after the start when there is none, or it is overdue), then
/// one every interval, for as long as the daemon runs; one that failed is tried again after
/// [`BACKUP_RETRY`].
async fn scheduled_backups(shared: Arc<Shared>, every: Duration) {
    let newest = crate::store::backup::newest_created(&shared.backup_dir);
    let mut wait = newest
        .map_or(Duration::ZERO, |t| {
            let due = t.saturating_add(i64::try_from(every.as_secs()).unwrap_or(i64::MAX));
            let left = due.saturating_sub(chrono::Utc::now().timestamp());
            // A newest backup dated ahead (the clock set back) waits one interval at most.
            Duration::from_secs(u64::try_from(left).unwrap_or(0)).min(every)
        })
        .max(FIRST_BACKUP_AFTER.min(every));
    loop {
        tokio::time::sleep(wait).await;
        wait = match shared.backup_now().await {
            // One asked for by hand is being written: it counts as this one.
            Ok(_) | Err(BackupRefused::Busy) => every,
            Err(BackupRefused::Failed(_)) => BACKUP_RETRY.min(every),
        };
    }
}

/// See [`Shared::input`].
#[derive(Debug, Default)]
pub struct InputState {
    pub brokers_down_since: Option<std::time::Instant>,
    pub lag: i64,
}

/// Why the lights may be behind the cases' real state, for the board and /readyz.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputNotice {
    /// No connection to any broker for this long: events sent since are not read (the
    /// deadlines still fire by the wall clock).
    BrokersDown(std::time::Duration),
    /// This many messages behind the brokers (a backlog after downtime or a burst).
    Behind(i64),
}

/// No broker for this long before the board and /readyz say so: a broker's restart, or a
/// reconnection, takes seconds.
pub const BROKERS_DOWN_NOTICE_AFTER: std::time::Duration = std::time::Duration::from_secs(20);
/// Messages behind the brokers from which the board and /readyz say so: two batches of
/// the default `kafka.batch_max`, well above what a steady stream leaves unread between
/// statistics.
pub const BEHIND_NOTICE_FROM: i64 = 10_000;

impl InputState {
    /// Why the lights may be behind, if they may: no broker reachable for
    /// [`BROKERS_DOWN_NOTICE_AFTER`], or [`BEHIND_NOTICE_FROM`] messages or more unread.
    pub fn notice(&self) -> Option<InputNotice> {
        match self.brokers_down_since.map(|t| t.elapsed()) {
            Some(d) if d >= BROKERS_DOWN_NOTICE_AFTER => Some(InputNotice::BrokersDown(d)),
            _ if self.lag >= BEHIND_NOTICE_FROM => Some(InputNotice::Behind(self.lag)),
            _ => None,
        }
    }
}

impl Shared {
    /// [`InputState::notice`] of the latest statistics.
    pub fn input_notice(&self) -> Option<InputNotice> {
        self.input
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .notice()
    }
}

/// The consumer's context: applies stored offsets on assignment and tells the loop.
struct Ctx {
    store: Arc<Store>,
    /// High watermarks from the latest statistics.
    highs: Mutex<BTreeMap<Slot, u64>>,
    changes: Mutex<Vec<Change>>,
    notify: Arc<Notify>,
    metrics: Metrics,
    /// Batches handed to the store writer and not yet durable: the rebalance waits for
    /// them, so that a seek reads the offsets of everything applied.
    pending: Arc<crate::writer::Pending>,
    /// The offset of the last batch librdkafka could not decompress, from its error's text
    /// (the consumer's error says only the code): [`Loop::unreadable_batch`].
    unreadable_at: Mutex<Option<u64>>,
    /// For /readyz: `Shared::kafka_error`.
    shared: Arc<Shared>,
    /// `kafka.group_id` and the store's folder, for [`Ctx::missing_state`]'s message.
    group_id: String,
    data_dir: std::path::PathBuf,
    /// Set when a partition was assigned whose events the group has read but this store
    /// holds nothing of ([`Ctx::missing_state`]): the loop stops with it.
    missing: Mutex<Option<String>>,
    /// What the log has said of the client's errors ([`KafkaErrorLog`]).
    errors: Mutex<KafkaErrorLog>,
    /// Partitions assigned whose log ends before the offset the store holds, with that
    /// offset and where the log begins and ends: read from the log's start
    /// ([`Ctx::replaced_logs`]); the loop takes them as it restores the partitions.
    replaced: Mutex<BTreeMap<Slot, (u64, u64, u64)>>,
}

/// What the log has said of the Kafka client's errors: each kind (its error code) when it
/// first comes, then at most once a minute with how many of it were not said in between
/// ([`LogThrottle`]). With the brokers out of reach librdkafka reports an error about five
/// times a second for as long as it lasts (measured: ten warning lines a second, 864,000 a
/// day, with every error said twice). The metric `redlight_kafka_errors_total` still counts
/// every error, once.
#[derive(Default)]
struct KafkaErrorLog {
    said: LogThrottle<String>,
    /// The code of the error the context was last given, and when. rust-rdkafka hands
    /// each of librdkafka's error events to the context and then returns it from the
    /// consumer's poll, on the same thread at once: that second sight is not a second error.
    echo: Option<(Option<RDKafkaErrorCode>, Instant)>,
}

impl KafkaErrorLog {
    /// Whether to say `error` now: `Some(n)` with the `n` errors of its kind left unsaid
    /// since it was last said, or `None` to leave it unsaid.
    fn say(&mut self, error: &KafkaError, now: Instant) -> Option<u64> {
        // By code, else by variant (its text may vary, the set of kinds must not grow).
        let kind = match error.rdkafka_error_code() {
            Some(code) => format!("{code:?}"),
            None => format!("{error:?}")
                .split(['(', ' ', '{'])
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        self.said.say(kind, now)
    }

    /// Whether the consumer's `error` is the one the context was given just before (taken:
    /// the next one is not).
    fn is_echo(&mut self, error: &KafkaError, now: Instant) -> bool {
        match self.echo.take() {
            Some((code, at)) => {
                code == error.rdkafka_error_code()
                    && now.duration_since(at) < Duration::from_secs(1)
            }
            None => false,
        }
    }
}

enum Change {
    Assigned(Vec<Slot>),
    Revoked(Vec<Slot>),
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.kafka_errors.inc();
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        errors.echo = Some((error.rdkafka_error_code(), now));
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::BadCompression) {
            // Said by the loop, with the partition, once a minute: librdkafka meets the
            // batch again at every fetch.
            *self.unreadable_at.lock().unwrap_or_else(|p| p.into_inner()) =
                unreadable_offset(reason);
            tracing::debug!(%error, reason, "kafka client error");
            return;
        }
        // Most errors pass (librdkafka retries by itself); a fatal one leaves the consumer
        // unusable, and the callback gets the underlying code, not "fatal": the loop is
        // woken to ask the client (`check_fatal`) and stops if so.
        if let Some(unsaid) = errors.say(&error, now) {
            tracing::warn!(%error, reason, unsaid, "kafka client error{}", unsaid_note(unsaid));
        }
        drop(errors);
        *self
            .shared
            .kafka_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), format!("{error}: {reason}")));
        self.notify.notify_one();
    }

    /// librdkafka's periodic statistics: consumer lag per partition for the metric, and the
    /// high watermarks for the catch-up rule.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut highs = Vec::new();
        let mut lag = 0;
        // The brokers it knows (not librdkafka's internal and logical ones): is any up?
        let up = statistics
            .brokers
            .values()
            .filter(|b| b.source == "learned" || b.source == "configured")
            .any(|b| b.state == "UP");
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                let Ok(partition) = u32::try_from(*partition) else {
                    continue; // the internal "-1" partition
                };
                if p.hi_offset >= 0 {
                    highs.push(((topic.clone(), partition), p.hi_offset as u64));
                }
                if p.consumer_lag >= 0 {
                    lag += p.consumer_lag;
                    self.metrics
                        .lag
                        .with_label_values(&[topic.as_str(), partition.to_string().as_str()])
                        .set(p.consumer_lag);
                }
            }
        }
        if let Ok(mut h) = self.highs.lock() {
            h.extend(highs);
        }
        let mut input = self.shared.input.lock().unwrap_or_else(|p| p.into_inner());
        if up {
            input.brokers_down_since = None;
        } else {
            input
                .brokers_down_since
                .get_or_insert_with(std::time::Instant::now);
        }
        input.lag = lag;
    }
}

impl ConsumerContext for Ctx {
    /// The default rebalance, except that assigned partitions start at the offsets in our
    /// store: the store, not Kafka, knows what is durable.
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let slots: Vec<Slot> = tpl
            .elements()
            .iter()
            .filter_map(|e| Some((e.topic().to_string(), u32::try_from(e.partition()).ok()?)))
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Err(e) = self.pending.wait_idle() {
                    tracing::error!(error = %e, "the store writer failed; seeking to what is durable");
                }
                let mut unknown = Vec::new();
                let mut stored = Vec::new();
                for (topic, partition) in &slots {
                    match self.store.offset(topic, *partition) {
                        Ok(Some(next)) => {
                            stored.push(((topic.clone(), *partition), next));
                            let offset = Offset::Offset(i64::try_from(next).unwrap_or(i64::MAX));
                            if let Err(e) =
                                tpl.set_partition_offset(topic, *partition as i32, offset)
                            {
                                tracing::error!(%topic, partition, error = %e, "cannot seek to the stored offset");
                            }
                        }
                        Ok(None) => unknown.push((topic.clone(), *partition)),
                        Err(e) => {
                            tracing::error!(%topic, partition, error = %e, "reading the stored offset")
                        }
                    }
                }
                for (slot, low) in self.replaced_logs(base, &stored) {
                    let offset = Offset::Offset(i64::try_from(low).unwrap_or(0));
                    if let Err(e) = tpl.set_partition_offset(&slot.0, slot.1 as i32, offset) {
                        tracing::error!(topic = %slot.0, partition = slot.1, error = %e,
                            "cannot seek to the start of a replaced log");
                    }
                }
                let refused = self.missing_state(base, &unknown);
                let slots: Vec<Slot> = if refused.is_empty() {
                    if let Err(e) = base.assign(tpl) {
                        tracing::error!(error = %e, "assigning partitions");
                    }
                    slots
                } else {
                    // Not read at all: the loop stops (`Loop::check_fatal`).
                    let mut kept = TopicPartitionList::new();
                    for e in tpl.elements() {
                        let slot = (e.topic().to_string(), e.partition() as u32);
                        if !refused.contains(&slot) {
                            let _ = kept.add_partition_offset(e.topic(), e.partition(), e.offset());
                        }
                    }
                    if let Err(e) = base.assign(&kept) {
                        tracing::error!(error = %e, "assigning partitions");
                    }
                    slots.into_iter().filter(|s| !refused.contains(s)).collect()
                };
                tracing::info!(partitions = ?slots, "partitions assigned");
                self.push(Change::Assigned(slots));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Every batch handed over becomes durable before the partitions go.
                if let Err(e) = self.pending.wait_idle() {
                    tracing::error!(error = %e, "the store writer failed before a revocation");
                }
                if let Err(e) = base.unassign() {
                    tracing::error!(error = %e, "unassigning partitions");
                }
                tracing::info!(partitions = ?slots, "partitions revoked");
                self.push(Change::Revoked(slots));
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                if let Err(e) = base.unassign() {
                    tracing::error!(error = %e, "unassigning partitions");
                }
                self.push(Change::Revoked(slots));
            }
        }
    }
}

impl Ctx {
    /// The partitions among `stored` (each with the next offset the store holds) whose log
    /// now ends before that offset, with where the log begins: this is not the log the
    /// store read. The topic was deleted and created again, or moved to another cluster
    /// (offsets begin again at 0), or an unclean leader election cut it short. Read from the
    /// stored offset, librdkafka would find it out of range and start at the log's
    /// beginning, and the loop would take every message below the stored offset for one
    /// it has applied: the new log's events, dropped without a word until their offsets
    /// passed the old ones. Such a partition is read from the log's start instead (events
    /// already applied are recognised by their ids: duplicates change nothing), kept in
    /// `replaced` for the loop to say so and to store the offset.
    ///
    /// A log replaced that has since grown past the stored offset cannot be told from the
    /// one read by its offsets: the README says to start redlight on a new topic before
    /// producing to it. A broker that does not answer leaves the partition as it was.
    fn replaced_logs(&self, base: &BaseConsumer<Self>, stored: &[(Slot, u64)]) -> Vec<(Slot, u64)> {
        let marks = watermarks(base, stored.iter().map(|(slot, _)| slot));
        let mut found = Vec::new();
        let mut replaced = self.replaced.lock().unwrap_or_else(|p| p.into_inner());
        for ((slot, next), marks) in stored.iter().zip(marks) {
            let Some((low, high)) = marks else { continue };
            let (low, high) = (
                u64::try_from(low).unwrap_or(0),
                u64::try_from(high).unwrap_or(0),
            );
            if high < *next {
                replaced.insert(slot.clone(), (*next, low, high));
                found.push((slot.clone(), low));
            }
        }
        found
    }

    /// The partitions among `unknown` (assigned, with nothing of them in the store) whose
    /// events the consumer group has read past the start of the log. redlight commits an
    /// offset to the group only once the work up to it is durable in its store, so such a
    /// partition's state was in another store: this one was lost or replaced, or another
    /// instance of the group holds the partition. Reading on from the group's offset would
    /// leave every case opened before it unwatched, without a word; reading from the start
    /// would raise their alerts again. Neither is decided here: the partitions are refused
    /// and the daemon stops, saying what to do (`missing`). A question the brokers do not
    /// answer lets the partition through, as before this check, with a warning.
    fn missing_state(&self, base: &BaseConsumer<Self>, unknown: &[Slot]) -> Vec<Slot> {
        if unknown.is_empty() {
            return Vec::new();
        }
        let mut asked = TopicPartitionList::new();
        for (topic, partition) in unknown {
            asked.add_partition(topic, *partition as i32);
        }
        let committed = match base.committed_offsets(asked, Duration::from_secs(10)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, partitions = ?unknown,
                    "could not ask the group's offsets of partitions new to the store; \
                     reading them from the group's offsets");
                return Vec::new();
            }
        };
        let mut refused = Vec::new();
        let mut said = Vec::new();
        for e in committed.elements() {
            let Offset::Offset(read) = e.offset() else {
                continue; // nothing committed: a partition new to the group
            };
            let (topic, partition) = (e.topic().to_string(), e.partition());
            let low = match base.fetch_watermarks(&topic, partition, Duration::from_secs(10)) {
                Ok((low, _)) => low,
                Err(err) => {
                    tracing::warn!(%topic, partition, error = %err,
                        "could not ask where the log of a partition new to the store begins");
                    continue;
                }
            };
            if read <= low {
                continue; // nothing the log still holds was read: from the start
            }
            tracing::error!(%topic, partition, group = %self.group_id, group_offset = read,
                log_start = low, data_dir = %self.data_dir.display(),
                "the group has read this partition, and the store holds nothing of it");
            said.push(format!(
                "{topic} partition {partition} (read to offset {read}, the log begins at {low})"
            ));
            refused.push((topic, partition as u32));
        }
        if !said.is_empty() {
            let topic = refused.first().map(|s| s.0.as_str()).unwrap_or_default();
            *self.missing.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                "the store in {} holds nothing of {}, which consumer group `{}` has read: \
                 this store is not the one that read them (it was lost or replaced), or \
                 another instance of the group holds them (run one instance per group). \
                 Reading on would leave every case opened before unwatched. Restore the \
                 data directory; or, to rebuild the state from the events still in the \
                 topic (their alerts are raised and delivered again), stop every instance \
                 and reset the group's offsets to the start: kafka-consumer-groups.sh \
                 --bootstrap-server … --group {} --topic {topic} --reset-offsets \
                 --to-earliest --execute",
                self.data_dir.display(),
                said.join(", "),
                self.group_id,
                self.group_id,
            ));
            self.notify.notify_one();
        }
        refused
    }

    fn push(&self, c: Change) {
        if let Ok(mut v) = self.changes.lock() {
            v.push(c);
        }
        self.notify.notify_one();
    }
}

/// One partition's engine and where it stands in the log.
struct PartitionState {
    engine: Engine,
    /// Its open cases per class (what the cases' tags say), taken off the totals when the
    /// partition is revoked.
    open: crate::open_counts::Counts,
    /// The next offset to consume (all below are durable).
    next_offset: Option<u64>,
    /// The partition's high watermark as last seen; `None` when unknown.
    high_watermark: Option<u64>,
    /// When the last message of this partition arrived.
    last_message: Instant,
    /// When the high watermark was last asked of the broker.
    watermark_checked: Instant,
    /// Offsets below this were looked at for events the broker deleted unread (at the
    /// assignment, or a gap in the offsets: [`Loop::check_gap`]).
    lost_checked_to: u64,
}

impl PartitionState {
    /// Caught up: every message the broker had when we last looked has been applied.
    fn caught_up(&self) -> bool {
        match (self.high_watermark, self.next_offset) {
            (None, _) => true,
            (Some(high), Some(next)) => next >= high,
            (Some(high), None) => high == 0,
        }
    }
}

/// The daemon. `shutdown` resolves when it should stop (SIGTERM/SIGINT in `main`).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    for said in crate::config::unread_env_vars() {
        tracing::warn!("{said}");
    }
    let data_dir = config.data_dir();
    // Opening after a crash and the restore below read the whole file: have the kernel
    // read it ahead, front to back.
    Store::prefetch(&data_dir);
    let store = Arc::new(config.open_store()?);
    // Build one engine up front: a broken pack or calendar fails here, before consuming.
    let template = config.build_engine()?;
    let rules = stored_order(&store, template.rules())
        .with_context(|| format!("the store in {}", data_dir.display()))?;
    let metrics = Metrics::new();
    // The journal read back on open (the writer updates it after every commit).
    metrics
        .journal_entries
        .set(i64::try_from(store.overlay_size()).unwrap_or(i64::MAX));
    metrics
        .journal_bytes
        .set(i64::try_from(store.overlay_bytes()).unwrap_or(i64::MAX));
    let cal_last = template.calendar().last_day();
    metrics.calendar_last_day.set(
        cal_last
            .and_hms_opt(0, 0, 0)
            .map_or(0, |d| d.and_utc().timestamp()),
    );
    let shared = Arc::new(Shared {
        store: store.clone(),
        metrics: metrics.clone(),
        started: AtomicBool::new(false),
        assigned: Mutex::new(Vec::new()),
        calendar_last_day: cal_last,
        tz: template.zone().tz(),
        view: crate::api::View::new(
            &config,
            rules.clone(),
            Arc::new(template.calendar().clone()),
        ),
        open: Mutex::new(crate::open_counts::Totals::default()),
        dead_letter_tries: Arc::default(),
        dead_letter_topic: config.kafka.dead_letter_topic.clone(),
        kafka_error: Mutex::new(None),
        input: Mutex::new(InputState::default()),
        backup_dir: config.backup_dir(),
        backups_keep: config.store.backups_keep,
        backup_running: tokio::sync::Mutex::new(()),
    });
    for result in ["ok", "failed"] {
        metrics.backups.with_label_values(&[result]);
    }
    // The last backup as its manifest says, so that a restart does not reset the gauge
    // (and silence `RedlightBackupsStopped`).
    if let Some(t) = crate::store::backup::newest_created(&shared.backup_dir) {
        metrics.backup_last_success.set(t);
    }
    let calendar = Arc::new(template.calendar().clone());
    drop(template);
    // The port before anything starts: one in use stops the start with nothing begun.
    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("http.listen {}: cannot bind", config.http.listen))?;
    // Alert delivery: the outbox is written with each batch (the store's commit hook), the
    // worker sends it; secrets are read here, and a missing one stops the start.
    let delivery = crate::delivery::Delivery::start(
        &config,
        store.clone(),
        metrics.clone(),
        crate::delivery::Options {
            gate_on_engine_time: true,
            ..Default::default()
        },
    )?;

    let backups = config.store.backup_interval().map(|every| {
        tracing::info!(every_s = every.as_secs(), dir = %shared.backup_dir.display(),
            keep = shared.backups_keep, "scheduled backups of the store");
        tokio::spawn(scheduled_backups(shared.clone(), every))
    });
    tracing::info!(address = %config.http.listen, "http listening");
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(crate::http::serve(listener, shared.clone(), async {
        let _ = http_stop_rx.await;
    }));

    // Restore the partitions this store holds while the consumer joins its group (a
    // second or two): a restart with a million open cases is then ready about as soon as
    // the assignment arrives. Partitions assigned that the store did not hold, or held
    // under another topic list, are restored at assignment.
    let preload = {
        let (store, rules, calendar) = (store.clone(), rules.clone(), calendar.clone());
        let topics = config.kafka.topics.clone();
        let settings = config.engine.settings();
        std::thread::Builder::new()
            .name("redlight-preload".into())
            .spawn(move || {
                let slots: Vec<Slot> = store
                    .offsets()?
                    .into_iter()
                    .filter(|(topic, _, _)| topics.contains(topic))
                    .map(|(topic, partition, _)| (topic, partition))
                    .collect();
                restore_partitions(&store, &rules, &calendar, settings, &slots)
            })
            .context("starting the partition preload")?
    };
    let notify = Arc::new(Notify::new());
    let pending = Arc::new(crate::writer::Pending::default());
    let consumer_cell = Arc::new(std::sync::OnceLock::new());
    let writer = crate::writer::Writer::start(
        crate::writer::Sinks {
            store: store.clone(),
            metrics: metrics.clone(),
            delivery: delivery.clone(),
            consumer: consumer_cell.clone(),
        },
        pending.clone(),
        Duration::from_millis(config.store.sync_ms),
    )
    .context("starting the store writer thread")?;
    let ctx = Ctx {
        store: store.clone(),
        highs: Mutex::new(BTreeMap::new()),
        changes: Mutex::new(Vec::new()),
        notify: notify.clone(),
        metrics: metrics.clone(),
        pending,
        unreadable_at: Mutex::new(None),
        shared: shared.clone(),
        group_id: config.kafka.group_id.clone(),
        data_dir: config.data_dir(),
        missing: Mutex::new(None),
        replaced: Mutex::new(BTreeMap::new()),
        errors: Mutex::new(KafkaErrorLog::default()),
    };
    let k = &config.kafka;
    let cc = consumer_config(k);
    let consumer: Arc<StreamConsumer<Ctx>> = Arc::new(
        cc.create_with_context(ctx)
            .map_err(|e| anyhow::anyhow!("creating the Kafka consumer: {}", setting_refused(e)))?,
    );
    let _ = consumer_cell.set(consumer.clone());
    let topics: Vec<&str> = k.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .with_context(|| format!("subscribing to {topics:?}"))?;
    let producer: FutureProducer = producer_config(k)
        .create()
        .map_err(|e| anyhow::anyhow!("creating the Kafka producer: {}", setting_refused(e)))?;
    shared.started.store(true, Ordering::SeqCst);
    tracing::info!(topics = ?k.topics, group = %k.group_id, data = %data_dir.display(), "redlight running");
    check_dead_letter_topic(consumer.clone(), k.dead_letter_topic.clone());
    let (dead_letters_stop, stop) = tokio::sync::watch::channel(false);
    let dead_letters = tokio::spawn(send_dead_letters(
        store.clone(),
        producer,
        k.dead_letter_topic.clone(),
        metrics.clone(),
        shared.dead_letter_tries.clone(),
        stop,
    ));

    let mut lp = Loop {
        config: &config,
        store,
        consumer,
        shared: shared.clone(),
        metrics,
        partitions: BTreeMap::new(),
        ledger: Vec::new(),
        dead_letters: Vec::new(),
        unreadable: BTreeMap::new(),
        rules,
        calendar,
        writer,
        preload: Some(preload),
        preloaded: BTreeMap::new(),
        classifier: crate::open_counts::Classifier::default(),
        parser: Parser::start()
            .inspect_err(|e| {
                tracing::warn!(error = %e, "could not start the thread that parses beside the loop; the loop parses alone");
            })
            .ok(),
        spare_messages: Vec::new(),
        topics_checked: HashSet::new(),
        refusals_said: LogThrottle::default(),
    };
    let result = lp.run(shutdown, notify).await;
    // A scheduled backup being written is cut off with the process: its directory keeps its
    // hidden partial name and the next backup clears it away.
    if let Some(b) = backups {
        b.abort();
    }
    lp.finish();
    lp.release_partitions().await;
    // Dead letters the broker has not acknowledged yet stay in the store for the next start.
    let _ = dead_letters_stop.send(true);
    if tokio::time::timeout(DEAD_LETTERS_STOP_WAIT, dead_letters)
        .await
        .is_err()
    {
        tracing::warn!(
            "the dead-letter sender did not stop in time; the store keeps what was not acknowledged"
        );
    }
    // The process is about to exit and everything is durable: the engines' cases are left
    // for the system to take back at once rather than freed one by one (0.4 s of the exit
    // with a million open cases, in perf). `run` is the process's only run of the loop.
    for (_, p) in std::mem::take(&mut lp.partitions) {
        std::mem::forget(p.engine);
    }
    drop(lp);
    // Requests in flight finish (or time out) and their outcomes are recorded.
    if tokio::time::timeout(Duration::from_secs(20), delivery.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "alert delivery did not stop within 20s; the outbox keeps what was not confirmed"
        );
    }
    let _ = http_stop_tx.send(());
    let _ = http.await;
    // The consumer closes as its last reference goes, below. librdkafka can hang in that
    // close for good when it revokes an assignment there (its issue 4884: `rd_kafka_assign`
    // from the rebalance callback of a closing consumer never returns); it was seen once,
    // in a test that stopped the daemon a moment after its start, while the group was
    // joining. Everything is durable by now: the process does not wait for it longer.
    exit_if_stuck(CONSUMER_CLOSE_WAIT, &result);
    result
}

/// How long the consumer's close may take at the end of [`run`] before the process exits
/// without it.
const CONSUMER_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Exits the process after `wait` unless it has exited by then, with the status and the
/// message `main` would give for `result`.
fn exit_if_stuck(wait: Duration, result: &anyhow::Result<()>) {
    let said = result.as_ref().err().map(crate::cli::error_text);
    let spawned = std::thread::Builder::new()
        .name("exit-watchdog".into())
        .spawn(move || {
            std::thread::sleep(wait);
            tracing::error!(
                waited_ms = wait.as_millis() as u64,
                "the Kafka consumer did not close in time (a librdkafka hang); exiting without \
                 it: everything is durable, and the group hands the partitions on once the \
                 session times out"
            );
            if let Some(said) = said {
                eprintln!("redlight: {said}");
                std::process::exit(2);
            }
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the exit watchdog");
    }
}

/// One message in this many (by offset) is timed for `redlight_engine_apply_seconds` and
/// `redlight_engine_advance_seconds` (docs/operations.md).
const TIMED_EVERY: u64 = 8;

/// How long shutdown waits for the final offset commit to Kafka.
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(3);

/// How long shutdown serves the revocation of the partitions before the consumer closes.
const REVOCATION_WAIT: Duration = Duration::from_secs(2);

struct Loop<'c> {
    config: &'c Config,
    store: Arc<Store>,
    consumer: Arc<StreamConsumer<Ctx>>,
    shared: Arc<Shared>,
    metrics: Metrics,
    partitions: BTreeMap<Slot, PartitionState>,
    /// Scorecard rows of the events applied since the last persist (see `src/scorecard.rs`).
    ledger: Vec<(i64, String, String, Vec<u8>)>,
    /// Messages refused since the last persist, encoded ([`Loop::keep_dead_letters`]).
    dead_letters: Vec<Vec<u8>>,
    /// Partitions stopped at a batch that cannot be decompressed, with the next offset they
    /// stopped at and when that was last said ([`Loop::unreadable_batch`]).
    unreadable: BTreeMap<Slot, (u64, Instant)>,
    /// The rules and calendar, loaded once at start: a pack edited on disk while the daemon
    /// runs must not reach some partitions and not others (or stop it at a rebalance).
    rules: Arc<crate::rules::RuleSet>,
    calendar: Arc<crate::calendar::Calendar>,
    /// Makes batches durable on its own thread (`src/writer.rs`).
    writer: crate::writer::Writer,
    /// The partitions this store held, being restored while the consumer joins its group;
    /// taken at the first assignment.
    preload: Option<std::thread::JoinHandle<anyhow::Result<Vec<Restored>>>>,
    /// The preload's partitions, until the first assignment takes what it needs.
    preloaded: BTreeMap<Slot, Restored>,
    /// Judges the cases persisted for the open-case gauges (`src/open_counts.rs`).
    classifier: crate::open_counts::Classifier,
    /// Parses ahead of the loop ([`ParsedEvents`]); `None` when it could not be started.
    parser: Option<Parser>,
    /// The last batch's vector of messages, emptied, for the next batch, when there is no
    /// parser's thread to keep it ([`Parser::spare_messages`]): allocated anew for each
    /// batch, its hundreds of KiB came as fresh pages to zero (with the events' vector,
    /// then one too, 3% of the loop's samples in the whole-case bench; the events now come
    /// in a vector per chunk, [`ParsedEvents`]).
    spare_messages: Vec<Msg>,
    /// Input topics whose configuration was asked for ([`check_input_topics`]).
    topics_checked: HashSet<String>,
    /// Refused messages as the log says them, by reason code: the first of each reason,
    /// then once a minute with how many were not said (a producer gone wrong refuses every
    /// message it sends; each is in the dead-letter topic and counted).
    refusals_said: LogThrottle<&'static str>,
}

/// A message that cannot be applied, on its way to the dead-letter topic: written to the
/// store with the batch that refused it (MessagePack, in `input_dead_letters`) and sent from there
/// by [`send_dead_letters`].
#[derive(serde::Serialize, serde::Deserialize)]
struct DeadLetter {
    #[serde(with = "serde_bytes")]
    key: Option<Vec<u8>>,
    #[serde(with = "serde_bytes")]
    payload: Option<Vec<u8>>,
    /// The message's own headers, copied before redlight's.
    headers: Vec<(String, Option<serde_bytes::ByteBuf>)>,
    reason: String,
    code: String,
    topic: String,
    partition: u32,
    offset: i64,
}

/// Per dead letter still in the store (by its number), what the sender met the last time
/// it offered it to the brokers; in memory only, so a restart starts the count again.
#[derive(Default)]
pub struct DeadLetterTries(Mutex<HashMap<u64, Tried>>);

/// One dead letter's refusals since the start.
#[derive(Clone)]
struct Tried {
    attempts: u32,
    error: Arc<str>,
    at_ms: i64,
}

impl DeadLetterTries {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tried>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A refusal of dead letter `seq`.
    fn refused(&self, seq: u64, error: &Arc<str>, at_ms: i64) {
        let mut tries = self.lock();
        let t = tries.entry(seq).or_insert_with(|| Tried {
            attempts: 0,
            error: error.clone(),
            at_ms,
        });
        t.attempts += 1;
        t.error = error.clone();
        t.at_ms = at_ms;
    }

    /// Dead letters the topic has (or that were deleted): forgotten.
    fn gone(&self, seqs: &[u64]) {
        let mut tries = self.lock();
        for seq in seqs {
            tries.remove(seq);
        }
    }
}

/// A dead letter waiting in the store, as `/api/v1/input/dead-letters` and `redlight
/// dead-letters` list it: where the message came from, why it was refused, and what the
/// brokers said when it was offered to the dead-letter topic.
#[derive(Debug, serde::Serialize)]
pub struct DeadLetterView {
    /// Its number in the store (the listing's order; `after` pages on it).
    pub seq: u64,
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    /// The reason code, as in the `redlight-reason-code` header.
    pub code: String,
    pub reason: String,
    /// The message's key, as text (invalid UTF-8 replaced).
    pub key: Option<String>,
    /// The payload's size.
    pub bytes: usize,
    /// The payload's first 300 characters, as text, on one line.
    pub payload_excerpt: Option<String>,
    /// Refusals by the brokers since the daemon started (0: not offered yet, or offered
    /// and still in flight, or no daemon running).
    pub attempts: u32,
    pub last_error: Option<String>,
    pub last_attempt: Option<String>,
}

/// The dead letters waiting in the store after number `after` (from the first without it:
/// they are numbered from 0), oldest first: at most
/// `limit`, and fewer once their payloads reach 16 MiB together; and whether more follow.
pub fn list_dead_letters(
    store: &Store,
    after: Option<u64>,
    limit: usize,
    tries: Option<&DeadLetterTries>,
    tz: chrono_tz::Tz,
) -> Result<(Vec<DeadLetterView>, bool), crate::store::StoreError> {
    let from = match after {
        None => 0,
        Some(after) => match after.checked_add(1) {
            Some(from) => from,
            None => return Ok((Vec::new(), false)),
        },
    };
    let rows = store.dead_letters(from, limit, DEAD_LETTER_CHUNK.1)?;
    let more = match rows.last() {
        Some(&(last, _)) => !store.dead_letters(last + 1, 1, 1)?.is_empty(),
        None => false,
    };
    // Only the listed ones' (the sender's map holds every dead letter it was refused).
    let tried: Vec<Option<Tried>> = match tries {
        Some(t) => {
            let t = t.lock();
            rows.iter().map(|(seq, _)| t.get(seq).cloned()).collect()
        }
        None => vec![None; rows.len()],
    };
    let rows = rows
        .into_iter()
        .zip(tried)
        .map(|((seq, row), tried)| {
            let (attempts, last_error, last_attempt) = tried.map_or((0, None, None), |t| {
                (
                    t.attempts,
                    Some(t.error.to_string()),
                    Some(crate::alert::format_instant(t.at_ms, tz)),
                )
            });
            match rmp_serde::from_slice::<DeadLetter>(&row) {
                Ok(d) => DeadLetterView {
                    seq,
                    topic: d.topic,
                    partition: d.partition,
                    offset: d.offset,
                    code: d.code,
                    reason: d.reason,
                    key: d.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
                    bytes: d.payload.as_ref().map_or(0, Vec::len),
                    payload_excerpt: d.payload.as_deref().map(crate::delivery::excerpt),
                    attempts,
                    last_error,
                    last_attempt,
                },
                // The sender deletes such a row when it meets it.
                Err(e) => DeadLetterView {
                    seq,
                    topic: String::new(),
                    partition: 0,
                    offset: -1,
                    code: "unreadable".into(),
                    reason: format!("the stored dead letter cannot be read: {e}"),
                    key: None,
                    bytes: row.len(),
                    payload_excerpt: None,
                    attempts,
                    last_error,
                    last_attempt,
                },
            }
        })
        .collect();
    Ok((rows, more))
}

/// A dead letter dropped by hand (`redlight dead-letters --drop`, `POST
/// /api/v1/input/dead-letters/drop`): all of the message, so that the operator who drops it
/// keeps it (the listing shows only an excerpt). Key, payload and header values in base64:
/// they are bytes, not always text.
#[derive(Debug, serde::Serialize)]
pub struct DroppedDeadLetter {
    pub seq: u64,
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub code: String,
    pub reason: String,
    /// The key as text (invalid UTF-8 replaced), for reading; `key_base64` is exact.
    pub key: Option<String>,
    pub key_base64: Option<String>,
    pub payload_base64: Option<String>,
    /// The message's own headers: name and value (`None`: a header without a value).
    pub headers: Vec<(String, Option<String>)>,
}

/// Drops the dead letters numbered `seqs` from the store by an operator's hand: they are
/// no longer offered to the dead-letter topic. For one the topic will never take (larger
/// than the brokers allow) when the topic cannot be changed. Returns what was dropped, in
/// full, and the numbers the store did not hold (sent meanwhile, dropped before, or never
/// there). A dropped row that cannot be read is dropped all the same and shown by its
/// number and size.
pub fn drop_dead_letters(
    store: &Store,
    seqs: &[u64],
    tries: Option<&DeadLetterTries>,
) -> Result<(Vec<DroppedDeadLetter>, Vec<u64>), crate::store::StoreError> {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let taken = store.take_dead_letters(seqs)?;
    if let Some(tries) = tries {
        let numbers: Vec<u64> = taken.iter().map(|(seq, _)| *seq).collect();
        tries.gone(&numbers);
    }
    let missing = seqs
        .iter()
        .copied()
        .filter(|s| !taken.iter().any(|(t, _)| t == s))
        .collect();
    let dropped = taken
        .into_iter()
        .map(|(seq, row)| {
            let d = match rmp_serde::from_slice::<DeadLetter>(&row) {
                Ok(d) => DroppedDeadLetter {
                    seq,
                    topic: d.topic,
                    partition: d.partition,
                    offset: d.offset,
                    code: d.code,
                    reason: d.reason,
                    key: d
                        .key
                        .as_deref()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    key_base64: d.key.as_deref().map(b64),
                    payload_base64: d.payload.as_deref().map(b64),
                    headers: d
                        .headers
                        .iter()
                        .map(|(name, value)| (name.clone(), value.as_deref().map(|v| b64(v))))
                        .collect(),
                },
                Err(e) => DroppedDeadLetter {
                    seq,
                    topic: String::new(),
                    partition: 0,
                    offset: -1,
                    code: "unreadable".into(),
                    reason: format!(
                        "the stored dead letter ({} bytes) cannot be read: {e}",
                        row.len()
                    ),
                    key: None,
                    key_base64: None,
                    payload_base64: None,
                    headers: Vec::new(),
                },
            };
            tracing::warn!(seq = d.seq, topic = %d.topic, partition = d.partition,
                offset = d.offset, code = %d.code,
                "a dead letter dropped by hand: it will not reach the dead-letter topic");
            d
        })
        .collect();
    Ok((dropped, missing))
}

/// `redlight dead-letters --drop SEQ …`: drops those dead letters, through the running
/// daemon's API or, with no daemon running, from the store itself; writes each dropped one
/// in full on `out` as a JSON line. Numbers the store did not hold are an error, after the
/// others are dropped and written.
pub async fn drop_dead_letters_command(
    config: &Config,
    seqs: &[u64],
    out: &mut (dyn std::io::Write + Send),
    err: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "seqs": seqs });
    let answer = crate::delivery::call_daemon(
        config,
        http::Method::POST,
        "/api/v1/input/dead-letters/drop",
        Some(body),
    )
    .await?;
    let (dropped, missing): (Vec<serde_json::Value>, Vec<u64>) = match answer {
        Some(answer) => {
            let dropped = match answer.get("dropped") {
                Some(serde_json::Value::Array(rows)) => rows.clone(),
                _ => anyhow::bail!("the daemon's answer has no `dropped`: {answer}"),
            };
            let missing = answer
                .get("not_found")
                .and_then(serde_json::Value::as_array)
                .map(|v| v.iter().filter_map(serde_json::Value::as_u64).collect())
                .unwrap_or_default();
            (dropped, missing)
        }
        None => {
            let store = crate::delivery::open_store_without_daemon(config)?;
            let (dropped, missing) = drop_dead_letters(&store, seqs, None)?;
            let dropped = dropped
                .into_iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?;
            (dropped, missing)
        }
    };
    for r in &dropped {
        writeln!(out, "{r}")?;
    }
    writeln!(err, "{} dropped", dropped.len())?;
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(u64::to_string).collect();
        anyhow::bail!(
            "no dead letter numbered {} in the store (sent to `{}` meanwhile, dropped before, \
             or never there: `redlight dead-letters` lists those waiting)",
            list.join(", "),
            config.kafka.dead_letter_topic
        );
    }
    Ok(())
}

/// `redlight dead-letters`: the input's dead letters waiting in the store, as JSON lines,
/// from the running daemon's API (it holds the store's lock) or, with no daemon running,
/// from the store itself. Says on `err` how many wait in all when more follow.
pub async fn dead_letters_command(
    config: &Config,
    after: Option<u64>,
    limit: usize,
    out: &mut (dyn std::io::Write + Send),
    err: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<()> {
    let mut path = format!("/api/v1/input/dead-letters?limit={limit}");
    if let Some(after) = after {
        path.push_str(&format!("&after={after}"));
    }
    let answer = crate::delivery::call_daemon(config, http::Method::GET, &path, None).await?;
    let (pending, rows, more) = match answer {
        Some(answer) => {
            let pending = answer
                .get("pending")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            let rows = match answer.get("dead_letters") {
                Some(serde_json::Value::Array(rows)) => rows.clone(),
                _ => anyhow::bail!("the daemon's answer has no `dead_letters`: {answer}"),
            };
            let more = answer.get("more").and_then(serde_json::Value::as_bool) == Some(true);
            (pending, rows, more)
        }
        None => {
            let store = crate::delivery::open_store_without_daemon(config)?;
            let tz = config.timezone().map_err(|e| {
                anyhow::anyhow!("`engine.timezone` {:?}: {e}", config.engine.timezone)
            })?;
            let (rows, more) = list_dead_letters(&store, after, limit, None, tz)?;
            let rows = rows
                .into_iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()?;
            (store.dead_letter_count()?, rows, more)
        }
    };
    for r in &rows {
        writeln!(out, "{r}")?;
    }
    if more {
        let next = rows
            .last()
            .and_then(|r| r.get("seq"))
            .and_then(serde_json::Value::as_u64)
            .or(after)
            .unwrap_or(0);
        writeln!(
            err,
            "{} listed, {pending} waiting for `{}` in all; `--after {next}` lists the next",
            rows.len(),
            config.kafka.dead_letter_topic
        )?;
    }
    Ok(())
}

/// The rules and event types as the store's cases number them, recorded (durably, before
/// anything is restored or written). A case names its rules by number and its seen event
/// types by bit: the stored rules keep their numbers wherever the packs list them now, and
/// those retired with `enabled = false` keep theirs as places that do nothing
/// ([`crate::rules::RuleSet::with_rule_order`]); a stored rule no pack has is an error. The
/// types keep their stored bits ([`crate::rules::RuleSet::with_type_order`]). Rules and
/// types added since are numbered after them. A store from before records the packs as
/// they are, and so does a store that has applied no event yet, whatever it recorded.
fn stored_order(
    store: &Store,
    rules: &crate::rules::RuleSet,
) -> anyhow::Result<Arc<crate::rules::RuleSet>> {
    let ids: Vec<String> = rules.rules.iter().map(|r| r.id.to_string()).collect();
    let mut stored_rules = store.rule_order()?;
    let mut stored_types = store.type_order()?;
    // No offset stored: no event was ever applied, so no case names a rule (a case is
    // written with its batch's offsets). The packs may be reordered freely then.
    if stored_rules.is_some() && store.offsets()?.is_empty() {
        if stored_rules.as_deref() != Some(ids.as_slice()) {
            tracing::info!(
                "the rule packs number their rules otherwise than when the store was \
                 started, but it holds no case yet: numbered as the packs are now"
            );
        }
        stored_rules = None;
        stored_types = None;
    }
    let (rules, order) = match &stored_rules {
        Some(stored) => rules
            .with_rule_order(stored)
            .map_err(|m| anyhow::anyhow!("{m} (`engine.rule_packs` in the configuration)"))?,
        None => (rules.clone(), ids),
    };
    let rules = match &stored_types {
        Some(stored) => rules.with_type_order(stored).map_err(anyhow::Error::msg)?,
        None => rules,
    };
    let types = rules.type_order();
    if stored_rules.as_deref() != Some(order.as_slice()) || stored_types.as_deref() != Some(types) {
        store.record_order(&order, types)?;
        tracing::info!(
            rules = order.len(),
            types = types.len(),
            rules_before = stored_rules.as_ref().map(Vec::len),
            types_before = stored_types.as_ref().map(Vec::len),
            "recorded the order of the packs' rules and event types in the store"
        );
    }
    let retired: Vec<&str> = order
        .iter()
        .filter_map(|id| id.strip_prefix(crate::rules::RETIRED))
        .collect();
    if !retired.is_empty() {
        tracing::info!(
            rules = %retired.join(", "),
            "retired rules (`enabled = false`, or retired before): what cases hold of them \
             is dropped as they are restored"
        );
    }
    Ok(Arc::new(rules))
}

/// One partition as restored from the store.
struct Restored {
    slot: Slot,
    engine: Engine,
    /// Its open cases per class, judged as they were restored, and those classes.
    open: crate::open_counts::Counts,
    classifier: crate::open_counts::Classifier,
    cases: usize,
    next_offset: Option<u64>,
    elapsed: Duration,
}

/// Restores partitions from the store on up to as many threads as there are cores.
fn restore_partitions(
    store: &Store,
    rules: &Arc<crate::rules::RuleSet>,
    calendar: &Arc<crate::calendar::Calendar>,
    settings: crate::engine::Settings,
    slots: &[Slot],
) -> anyhow::Result<Vec<Restored>> {
    if slots.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(slots.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(slot) = slots.get(i) else {
                            return Ok::<_, anyhow::Error>(done);
                        };
                        done.push(restore_partition(store, rules, calendar, settings, slot)?);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            match w.join() {
                Ok(r) => all.extend(r?),
                Err(_) => anyhow::bail!("a thread restoring partitions panicked"),
            }
        }
        Ok(all)
    })
}

/// Restores one partition: its cases (their timers with them), its engine clock and its
/// next offset.
fn restore_partition(
    store: &Store,
    rules: &Arc<crate::rules::RuleSet>,
    calendar: &Arc<crate::calendar::Calendar>,
    settings: crate::engine::Settings,
    slot: &Slot,
) -> anyhow::Result<Restored> {
    let started = Instant::now();
    let mut engine = Engine::new(rules.clone(), calendar.clone());
    engine.configure(settings);
    engine.track_changes();
    let mut classifier = crate::open_counts::Classifier::default();
    let mut open = crate::open_counts::Counts::default();
    // Reading and decoding on a thread of their own, the engine filled here: a partition
    // restores on two cores instead of one (a topic of one partition holds all the cases).
    const CHUNK: usize = 1024;
    let n = std::thread::scope(|scope| -> anyhow::Result<usize> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Case>>(8);
        let reader = std::thread::Builder::new()
            .name("redlight-read".into())
            .spawn_scoped(scope, move || {
                // A send fails only when the receiving loop below has stopped, which it
                // does only by unwinding: the chunk is dropped with it.
                let mut chunk = Vec::with_capacity(CHUNK);
                let n = store.load_partition(&slot.0, slot.1, |case| {
                    chunk.push(case);
                    if chunk.len() == CHUNK {
                        let _ = tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
                    }
                })?;
                let _ = tx.send(chunk);
                Ok::<usize, crate::store::StoreError>(n)
            })
            .context("starting a restore reader thread")?;
        for case in rx.into_iter().flatten() {
            // Judged as the engine holds it: without what it held of retired rules.
            engine.restore_seen(case, |case| {
                let (was, is) = classifier.rejudge(case);
                open.moved(was, is);
            });
        }
        match reader.join() {
            Ok(r) => Ok(r?),
            Err(_) => anyhow::bail!("the thread reading partition {slot:?} panicked"),
        }
    })?;
    // The cases restore() reports changed (deadlines that were pending for want of
    // calendar data and are computed now) stay marked: the first batch writes them, so the
    // board and the API show their deadlines.
    if let Some(now) = store.engine_clock(&slot.0, slot.1)? {
        engine.restore_clock(now);
    }
    let next_offset = store.offset(&slot.0, slot.1)?;
    // A case restore() replaced (none is stored twice) is counted down.
    for class in engine.take_released() {
        open.add(class, -1);
    }
    Ok(Restored {
        slot: slot.clone(),
        engine,
        open,
        classifier,
        cases: n,
        next_offset,
        elapsed: started.elapsed(),
    })
}

/// How many dead letters [`send_dead_letters`] hands librdkafka at once, and their bytes
/// at most (a dead letter is as large as its message, up to the broker's limit).
const DEAD_LETTER_CHUNK: (usize, usize) = (500, 16 << 20);
/// The wait before dead letters the brokers did not take are tried again, doubled after
/// every failed round up to the second.
const DEAD_LETTER_RETRY: (Duration, Duration) =
    (Duration::from_millis(500), Duration::from_secs(60));
/// How long shutdown waits for the dead-letter sender (a send in flight ends within
/// librdkafka's `message.timeout.ms`; its dead letter stays in the store until acknowledged).
const DEAD_LETTERS_STOP_WAIT: Duration = Duration::from_secs(5);

/// Sends the dead letters the store holds to the dead-letter topic and deletes each once
/// the broker has acknowledged it, until `stop`. Apart from the consumer loop: a batch's
/// refused messages are durable with it (in the store's `input_dead_letters`, in the same
/// transaction as its offsets), so the input flows on while the broker is away, the topic
/// is missing or it refuses a dead letter (too large for the topic, not authorised). Those
/// are tried again, every [`DEAD_LETTER_RETRY`] at most, and counted in
/// `redlight_dead_letters_pending` until the topic has them. Before, the loop sent each and
/// waited for it in turn: 178 bad messages a second (20,000 in 112 s), and a dead letter
/// the topic refused for good stopped its partitions for good.
async fn send_dead_letters(
    store: Arc<Store>,
    producer: FutureProducer,
    topic: String,
    metrics: Metrics,
    tries: Arc<DeadLetterTries>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wait = DEAD_LETTER_RETRY.0;
    let mut alone = HashSet::new();
    match store.dead_letter_count() {
        Ok(0) => {}
        Ok(n) => tracing::info!(dead_letters = n, dead_letter_topic = %topic,
            "dead letters kept in the store from before the start; sending them"),
        Err(e) => tracing::error!(error = %e, "cannot count the dead letters in the store"),
    }
    loop {
        let _ = publish_pending(&store, &metrics);
        let failed =
            send_dead_letter_round(&store, &producer, &topic, &metrics, &tries, &mut alone).await;
        let _ = publish_pending(&store, &metrics);
        if failed == 0 {
            wait = DEAD_LETTER_RETRY.0;
            tokio::select! {
                _ = store.dead_letters_written() => {}
                _ = stop.changed() => return,
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            wait = (wait * 2).min(DEAD_LETTER_RETRY.1);
        }
    }
}

/// Sets `redlight_dead_letters_pending` to what the store holds now, and returns it.
pub(crate) fn publish_pending(
    store: &Store,
    metrics: &Metrics,
) -> Result<u64, crate::store::StoreError> {
    let n = store.dead_letter_count()?;
    metrics
        .dead_letters_pending
        .set(i64::try_from(n).unwrap_or(i64::MAX));
    Ok(n)
}

/// Runs a store call on a blocking thread rather than a runtime worker (the loop and the
/// HTTP API share those); a panic there comes back as an error too.
async fn off_workers<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A dead letter's record: the message's key, payload and own headers, then redlight's
/// (`partition` and `offset` are the source's, as text).
fn dead_letter_record<'a>(
    d: &'a DeadLetter,
    topic: &'a str,
    partition: &'a str,
    offset: &'a str,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut headers = OwnedHeaders::new();
    // A dead letter sent back to the input and refused again carries the first refusal's
    // `redlight-` headers: only this one's are kept.
    for (key, value) in d
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with("redlight-"))
    {
        headers = headers.insert(Header {
            key: key.as_str(),
            value: value.as_deref().map(|v| &v[..]),
        });
    }
    let headers = headers
        .insert(Header {
            key: "redlight-reason",
            value: Some(d.reason.as_str()),
        })
        .insert(Header {
            key: "redlight-reason-code",
            value: Some(d.code.as_str()),
        })
        .insert(Header {
            key: "redlight-source-topic",
            value: Some(d.topic.as_str()),
        })
        .insert(Header {
            key: "redlight-source-partition",
            value: Some(partition),
        })
        .insert(Header {
            key: "redlight-source-offset",
            value: Some(offset),
        });
    let mut record = FutureRecord::to(topic).headers(headers);
    if let Some(k) = &d.key {
        record = record.key(k.as_slice());
    }
    if let Some(p) = &d.payload {
        record = record.payload(p.as_slice());
    }
    record
}

/// Whether the brokers refused a dead letter for its size: librdkafka sends the records
/// queued together in one batch, which the broker refuses whole when it is too large, so
/// such a dead letter is sent alone from then on, and the others go.
fn refused_for_size(e: &KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge)
    )
}

/// Offers every dead letter in the store to the broker once, a [`DEAD_LETTER_CHUNK`] at a
/// time, and deletes those acknowledged. Those in `alone` (refused for their size before)
/// are sent one at a time after the rest. Returns how many were not sent (or could not be
/// read).
async fn send_dead_letter_round(
    store: &Arc<Store>,
    producer: &FutureProducer,
    topic: &str,
    metrics: &Metrics,
    tries: &DeadLetterTries,
    alone: &mut HashSet<u64>,
) -> usize {
    let mut from = 0;
    let mut failed = 0;
    // The first refusal of the round, for the log, with the message it refused.
    let mut refusal: Option<(KafkaError, String)> = None;
    loop {
        let reading = store.clone();
        let (limit, max_bytes) = DEAD_LETTER_CHUNK;
        let rows = match off_workers(move || reading.dead_letters(from, limit, max_bytes)).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the dead letters from the store");
                return failed + 1;
            }
        };
        let Some(&(last, _)) = rows.last() else {
            break;
        };
        from = last + 1;
        let mut done = Vec::with_capacity(rows.len());
        let mut letters = Vec::with_capacity(rows.len());
        for (seq, row) in &rows {
            match rmp_serde::from_slice::<DeadLetter>(row) {
                Ok(d) => {
                    let source = (d.partition.to_string(), d.offset.to_string());
                    letters.push((*seq, d, source));
                }
                Err(e) => {
                    // Written by this daemon: only a bug or a damaged file gets here, and
                    // kept it would be tried for ever.
                    tracing::error!(seq, error = %e, "a dead letter in the store cannot be read; deleted");
                    done.push(*seq);
                }
            }
        }
        // Outcomes by index into `letters`.
        let mut outcomes = Vec::with_capacity(letters.len());
        let (single, together): (Vec<_>, Vec<_>) =
            (0..letters.len()).partition(|&i| alone.contains(&letters[i].0));
        let mut sending = Vec::with_capacity(together.len());
        for i in together {
            let (_, d, (partition, offset)) = &letters[i];
            match producer.send_result(dead_letter_record(d, topic, partition, offset)) {
                Ok(delivery) => sending.push((i, delivery)),
                Err((e, _)) => outcomes.push((i, Err(e))),
            }
        }
        for (i, delivery) in sending {
            outcomes.push((i, delivery.await.map_err(|_| KafkaError::Canceled)));
        }
        for i in single {
            let (_, d, (partition, offset)) = &letters[i];
            let outcome =
                match producer.send_result(dead_letter_record(d, topic, partition, offset)) {
                    Ok(delivery) => delivery.await.map_err(|_| KafkaError::Canceled),
                    Err((e, _)) => Err(e),
                };
            outcomes.push((i, outcome));
        }
        for (i, outcome) in outcomes {
            let (seq, d, _) = &letters[i];
            match outcome.and_then(|sent| sent.map_err(|(e, _)| e)) {
                Ok(_) => {
                    alone.remove(seq);
                    done.push(*seq);
                }
                Err(e) => {
                    failed += 1;
                    if refused_for_size(&e) {
                        alone.insert(*seq);
                    }
                    tries.refused(*seq, &Arc::from(e.to_string()), wall_ms());
                    if refusal.is_none() {
                        let bytes = d.payload.as_ref().map_or(0, Vec::len);
                        let message = format!(
                            "{}/{}@{} ({} bytes, {})",
                            d.topic, d.partition, d.offset, bytes, d.code
                        );
                        refusal = Some((e, message));
                    }
                }
            }
        }
        let acknowledged = done.len();
        let removing = store.clone();
        match off_workers(move || removing.remove_dead_letters(&done).map(|()| done)).await {
            Ok(done) => {
                tries.gone(&done);
                metrics.dead_letters.inc_by(acknowledged as u64);
                let _ = publish_pending(store, metrics);
            }
            Err(e) => {
                // Sent, and sent again next round: the topic is at least once.
                tracing::error!(error = %e, "cannot delete dead letters the broker acknowledged");
                return failed + 1;
            }
        }
    }
    if let Some((e, message)) = refusal {
        metrics.kafka_errors.inc_by(failed as u64);
        use rdkafka::error::RDKafkaErrorCode as C;
        let lasting = refused_for_size(&e)
            || matches!(
                e.rdkafka_error_code(),
                Some(
                    C::InvalidRecord
                        | C::TopicAuthorizationFailed
                        | C::ClusterAuthorizationFailed
                        | C::InvalidTopic
                )
            );
        if lasting {
            tracing::error!(dead_letter_topic = %topic, failed, first = %message, error = %e,
                "the brokers refuse dead letters; they stay in the store and are tried \
                 again (redlight_dead_letters_pending): fix the topic (its max.message.bytes, \
                 its ACLs) and they go out by themselves");
        } else {
            tracing::warn!(dead_letter_topic = %topic, failed, first = %message, error = %e,
                "dead letters not sent; they stay in the store and are tried again");
        }
    }
    failed
}

/// Asks the brokers, on a thread of its own, whether the dead-letter topic exists, and
/// says so at start when it does not. It is written only when a bad message comes; until
/// then the store keeps the dead letters ([`send_dead_letters`]), and without the topic
/// they would wait there with nothing in the log but retries.
fn check_dead_letter_topic(consumer: Arc<StreamConsumer<Ctx>>, topic: String) {
    let spawned = std::thread::Builder::new()
        .name("redlight-dlq-check".into())
        .spawn(
            move || match consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)) {
                Ok(md) => {
                    let error = md.topics().iter().find(|t| t.name() == topic).map_or(
                        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART),
                        |t| t.error(),
                    );
                    if let Some(error) = error {
                        tracing::error!(dead_letter_topic = %topic, error = ?error,
                        "the dead-letter topic does not exist or cannot be read: bad messages \
                         would wait in the store (redlight_dead_letters_pending) until it can \
                         be written; create it (`kafka.dead_letter_topic`) unless the brokers \
                         create topics on first write");
                    }
                }
                Err(e) => {
                    tracing::warn!(dead_letter_topic = %topic, error = %e,
                    "could not ask the brokers whether the dead-letter topic exists");
                }
            },
        );
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the dead-letter topic check");
    }
}

/// The shortest input retention (`retention.ms`) not warned about: Kafka's own default, 7 days.
const SHORT_RETENTION_MS: i64 = 7 * 24 * 3_600_000;

/// What an input topic's configuration risks, in the words of a log line; empty when
/// nothing. A compacted topic (`cleanup.policy` naming `compact`) lets the broker delete a
/// case's earlier events, the case id being the key, once a later one is written: a daemon
/// behind then never sees them (an acceptance gone leaves its decision a violation, a
/// pause gone lets the clock run through it), and a rebuild from the topic sees each case's
/// last event only. A retention shorter than Kafka's default deletes events redlight has
/// not read if it is down that long (counted in `redlight_events_lost_total` then).
fn input_topic_risks(cleanup_policy: Option<&str>, retention_ms: Option<&str>) -> Vec<String> {
    let mut risks = Vec::new();
    if let Some(policy) = cleanup_policy
        && policy.split(',').any(|p| p.trim() == "compact")
    {
        risks.push(format!(
            "cleanup.policy={policy}: the broker may delete a case's earlier events once a later \
             one is written, so a daemon that falls behind misses them and a rebuild from the \
             topic sees each case's last event only; use cleanup.policy=delete"
        ));
    }
    if let Some(ms) = retention_ms.and_then(|v| v.trim().parse::<i64>().ok())
        && (0..SHORT_RETENTION_MS).contains(&ms)
    {
        risks.push(format!(
            "retention.ms={ms} ({:.1} hours): events are deleted unread if redlight is down \
             longer than that; Kafka's default is 7 days",
            ms as f64 / 3_600_000.0
        ));
    }
    risks
}

/// Asks the brokers for the configuration of input topics seen for the first time and
/// logs, at warning level, what [`input_topic_risks`] finds; on a task of its own, so a
/// slow or refusing broker (an ACL without `DescribeConfigs`) delays nothing.
fn check_input_topics(k: &crate::config::KafkaConfig, topics: Vec<String>) {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        match admin_config(k).create() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "could not create a client to read the input topics' configuration");
                return;
            }
        };
    tokio::spawn(async move {
        use rdkafka::admin::{AdminOptions, ResourceSpecifier};
        let specs: Vec<ResourceSpecifier> = topics
            .iter()
            .map(|t| ResourceSpecifier::Topic(t.as_str()))
            .collect();
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        let results = match admin.describe_configs(specs.iter(), &opts).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(topics = ?topics, error = %e, "could not read the input topics' configuration");
                return;
            }
        };
        for (topic, result) in topics.iter().zip(results) {
            match result {
                Ok(resource) => {
                    let value = |name: &str| resource.get(name).and_then(|e| e.value.as_deref());
                    for risk in input_topic_risks(value("cleanup.policy"), value("retention.ms")) {
                        tracing::warn!(topic = %topic, "the input topic's configuration can lose events: {risk}");
                    }
                }
                Err(code) => {
                    tracing::warn!(topic = %topic, error = ?code, "could not read the input topic's configuration");
                }
            }
        }
    });
}

/// The low and high watermarks of each partition (`None` where the broker did not answer
/// within 5 s), asked on a thread each.
fn watermarks<'a, C: Consumer<Ctx> + Sync>(
    consumer: &C,
    slots: impl Iterator<Item = &'a Slot>,
) -> Vec<Option<(i64, i64)>> {
    std::thread::scope(|scope| {
        let asks: Vec<_> = slots
            .map(|(topic, partition)| {
                scope.spawn(move || {
                    consumer
                        .fetch_watermarks(topic, *partition as i32, Duration::from_secs(5))
                        .ok()
                })
            })
            .collect();
        asks.into_iter().map(|a| a.join().ok().flatten()).collect()
    })
}

/// The consumer's settings: redlight's, then `[kafka.librdkafka]`.
fn consumer_config(k: &crate::config::KafkaConfig) -> ClientConfig {
    let own = [
        ("group.id", k.group_id.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("enable.partition.eof", "false"),
        ("session.timeout.ms", "10000"),
        ("statistics.interval.ms", "1000"),
        // Partitions added to an input topic (and topics matching a `^…` pattern) are seen
        // at the next refresh of the metadata: librdkafka's 5 minutes would leave the
        // events sent to them unread that long, the cases they stop running to red.
        ("topic.metadata.refresh.interval.ms", "30000"),
        ("client.id", "redlight"),
    ];
    client_config(k, own.into_iter().chain(FETCH_SETTINGS))
}

/// The settings of the client that reads topic configurations: redlight's, then
/// `[kafka.librdkafka]` (the brokers' security settings).
fn admin_config(k: &crate::config::KafkaConfig) -> ClientConfig {
    client_config(k, [("client.id", "redlight-admin")])
}

/// The dead-letter producer's settings: redlight's, then `[kafka.librdkafka]`.
fn producer_config(k: &crate::config::KafkaConfig) -> ClientConfig {
    client_config(
        k,
        [
            ("message.timeout.ms", "30000"),
            ("acks", "all"),
            ("client.id", "redlight-dead-letter"),
        ],
    )
}

/// A Kafka client's settings: the brokers, then the client's own `settings`, then
/// `[kafka.librdkafka]`, which overrides both (the brokers' security settings, and any of
/// redlight's an operator needs otherwise).
fn client_config<'a>(
    k: &crate::config::KafkaConfig,
    settings: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &k.brokers);
    for (key, value) in settings {
        cc.set(key, value);
    }
    for (key, value) in &k.librdkafka {
        cc.set(key, value.expose());
    }
    cc
}

/// Whether librdkafka takes the Kafka settings, as the daemon would at start, without
/// reaching a broker: for `redlight check`. A misspelt or unknown `[kafka.librdkafka]` key,
/// a value it refuses, a protocol this build lacks (`SASL_SSL` without the `kafka-tls`
/// feature, `GSSAPI` without `kafka-gssapi`) are found before the deployment rather than
/// at its start. So is a Kerberos keytab that cannot be read: librdkafka only has `kinit`
/// print that on stderr and starts anyway, and the daemon would then never log in.
pub fn check_kafka_settings(k: &crate::config::KafkaConfig) -> Result<(), String> {
    let setting = |key: &str| k.librdkafka.get(key).map(crate::config::Secret::expose);
    let mechanism = setting("sasl.mechanism").or_else(|| setting("sasl.mechanisms"));
    if mechanism.is_some_and(|m| m.trim().eq_ignore_ascii_case("GSSAPI"))
        && let Some(keytab) = setting("sasl.kerberos.keytab")
    {
        std::fs::File::open(keytab)
            .map_err(|e| format!("sasl.kerberos.keytab: cannot read {keytab}: {e}"))?;
    }
    consumer_config(k)
        .create::<BaseConsumer>()
        .map(drop)
        .map_err(|e| format!("the Kafka consumer: {}", setting_refused(e)))?;
    producer_config(k)
        .create::<rdkafka::producer::BaseProducer>()
        .map(drop)
        .map_err(|e| format!("the dead-letter producer: {}", setting_refused(e)))
}

/// A Kafka client's creation error without the value of the setting it refused:
/// librdkafka's description names the property, and the error's own text adds the value,
/// which may be a password.
fn setting_refused(e: KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, _, _) => desc,
        other => other.to_string(),
    }
}

/// How the consumer fetches, where redlight differs from librdkafka's defaults; set
/// before `[kafka.librdkafka]`, which can change either. The daemon bench's bare consumer
/// fetches the same way, so that its raw read rate is what the broker can deliver.
///
/// - Up to 8 MiB of a partition in each fetch, not librdkafka's 1 MiB: at 1 MiB the loop
///   ran out of fetched messages and waited for the broker (0.1–0.5 s at a time, about a
///   tenth of a run, with the broker's JVM on the same cores), and the 1M-event bench ran
///   at 88,666–95,874 events/s against 103,449–103,861 with 8 MiB (three alternating
///   pairs). What librdkafka holds fetched stays bounded by `queued.max.messages.kbytes`.
/// - Once its queue of fetched messages passes `queued.min.messages` or
///   `queued.max.messages.kbytes`, librdkafka postpones a partition's next fetch by
///   `fetch.queue.backoff.ms` (its default: 1,000 ms). With 8 MiB fetches the queue passed
///   them often, and the loop then ran dry for 0.2–0.6 s about once a second (a trace of
///   its switches: 2.8 s of a 7 s run parked waiting for messages, a stream of whole
///   cases). At 20 ms the queue refills in time: that stream ran at 188,506 and 218,722
///   events/s against 109,993 and 110,569 (two alternating pairs); the CPU-bound stream of
///   new cases was level. The cost is a timer's wake-up per partition every 20 ms while
///   the queue is full.
pub const FETCH_SETTINGS: [(&str, &str); 2] = [
    ("max.partition.fetch.bytes", "8388608"),
    ("fetch.queue.backoff.ms", "20"),
];

/// The offset in librdkafka's "Decompression (codec 0x1) of message at 10 of 647 bytes
/// failed: …".
fn unreadable_offset(reason: &str) -> Option<u64> {
    let rest = &reason[reason.find(" of message at ")? + " of message at ".len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl Loop<'_> {
    async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
        notify: Arc<Notify>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        loop {
            self.check_fatal()?;
            self.apply_changes()?;
            let sleep = self.time_to_next_due();
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    tracing::info!("shutting down");
                    return Ok(());
                }
                _ = notify.notified() => {}
                first = self.consumer.recv() => {
                    // SAFETY: `batch` puts it in a `Batch` holding the consumer, or drops it.
                    let first = first.map(|m| unsafe { Msg::held(m, None) });
                    self.batch(first).await?;
                }
                _ = tokio::time::sleep(sleep) => {
                    self.fire_timers()?;
                }
            }
        }
    }

    /// Commits the final offsets to Kafka synchronously on the way out, once every batch
    /// handed to the writer is durable (after a failed commit, only the store's offsets
    /// count: nothing more is committed to Kafka).
    fn finish(&mut self) {
        if let Err(e) = self.writer.drain() {
            tracing::error!(error = %e, "the last batches are not durable; they will be consumed again");
            self.consumer.unsubscribe();
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), p) in &self.partitions {
            if let Some(next) = p.next_offset {
                let _ =
                    tpl.add_partition_offset(topic, *partition as i32, Offset::Offset(next as i64));
            }
        }
        if tpl.count() > 0 {
            // On a thread of its own, waited for a few seconds at most: with the broker
            // down, librdkafka waits for the group coordinator (10.8 s to exit, measured)
            // and shutdown must not. The store has the offsets; Kafka's are only where a
            // consumer without this store would start.
            let consumer = self.consumer.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("final-commit".into())
                .spawn(move || {
                    let _ = tx.send(consumer.commit(&tpl, CommitMode::Sync));
                });
            match spawned.map(|_| rx.recv_timeout(FINAL_COMMIT_WAIT)) {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    tracing::warn!(error = %e, "final offset commit to Kafka failed; the store has them");
                }
                Ok(Err(_)) => {
                    tracing::warn!(
                        waited_ms = FINAL_COMMIT_WAIT.as_millis() as u64,
                        "final offset commit to Kafka not answered (broker down?); the store has them"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "final offset commit to Kafka not started; the store has them");
                }
            }
        }
        self.consumer.unsubscribe();
    }

    /// After [`Loop::finish`] unsubscribed: serves the revocation that follows (the
    /// rebalance callback unassigns the partitions), so that the consumer has nothing
    /// assigned when it closes. A revocation served during the close can hang librdkafka
    /// (see the end of [`run`]). Messages fetched meanwhile are dropped, not applied: the
    /// store's offsets are where the next start reads. Waits at most
    /// [`REVOCATION_WAIT`].
    async fn release_partitions(&self) {
        let deadline = tokio::time::Instant::now() + REVOCATION_WAIT;
        loop {
            let assigned = self.consumer.assignment().map_or(0, |a| a.count());
            if assigned == 0 {
                return;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    partitions = assigned,
                    "partitions still assigned at shutdown; the consumer's close revokes them"
                );
                return;
            }
            let step = left.min(Duration::from_millis(100));
            let _ = tokio::time::timeout(step, self.consumer.recv()).await;
        }
    }

    /// How long the main loop may sleep: until the earliest timer of a partition the wall
    /// clock drives (caught up and quiet), or until a busy partition turns quiet, and at
    /// least every `idle_ms`. A partition that is not eligible never makes the loop spin on
    /// a timer it would not fire.
    fn time_to_next_due(&self) -> Duration {
        let idle = Duration::from_millis(self.config.kafka.idle_ms.max(10));
        let now = wall_ms();
        let mut wait = idle;
        for p in self.partitions.values() {
            let quiet_in = idle.saturating_sub(p.last_message.elapsed());
            if !quiet_in.is_zero() {
                wait = wait.min(quiet_in);
            } else if !p.caught_up() {
                wait = wait.min(idle.saturating_sub(p.watermark_checked.elapsed()));
            } else if let Some(due) = p.engine.next_due() {
                let ms = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
                wait = wait.min(Duration::from_millis(ms));
            }
        }
        // Never a zero sleep for a partition that is waiting on the broker: at least 1 ms.
        wait.max(Duration::from_millis(1))
    }

    /// Loads the state of newly assigned partitions (firing what fell due while we were
    /// down) and drops revoked ones (already durable).
    fn apply_changes(&mut self) -> anyhow::Result<()> {
        let changes: Vec<Change> = match self.consumer.context().changes.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => Vec::new(),
        };
        if changes.is_empty() {
            return Ok(());
        }
        // Partitions are loaded from the store: everything handed over must be in it.
        self.writer.drain()?;
        for change in changes {
            match change {
                Change::Assigned(slots) => self.load(slots)?,
                Change::Revoked(slots) => {
                    for slot in slots {
                        if let Some(p) = self.partitions.remove(&slot)
                            && let Ok(mut totals) = self.shared.open.lock()
                        {
                            totals.apply(&p.open, -1, &self.classifier);
                        }
                        // Its new owner reports it now (drained above: nothing of ours
                        // for it is pending).
                        let _ = self
                            .metrics
                            .durable_offset
                            .remove_label_values(&[slot.0.as_str(), &slot.1.to_string()]);
                    }
                }
            }
        }
        if let Ok(mut a) = self.shared.assigned.lock() {
            *a = self.partitions.keys().cloned().collect();
        }
        self.metrics.partitions.set(self.partitions.len() as i64);
        self.metrics.cases.set(
            self.partitions
                .values()
                .map(|p| p.engine.case_count() as i64)
                .sum(),
        );
        self.fire_timers()
    }

    /// Restores newly assigned partitions: from the preload (the partitions this store
    /// held, restored while the consumer was joining its group) when there, else from the
    /// store, several at once; then asks the broker how far each partition's log goes (so
    /// that a backlog is consumed before the wall clock fires anything), also at once.
    fn load(&mut self, slots: Vec<Slot>) -> anyhow::Result<()> {
        let slots: Vec<Slot> = slots
            .into_iter()
            .filter(|s| !self.partitions.contains_key(s))
            .collect();
        if slots.is_empty() {
            return Ok(());
        }
        let new_topics: Vec<String> = slots
            .iter()
            .map(|(topic, _)| topic)
            .filter(|t| self.topics_checked.insert((*t).clone()))
            .cloned()
            .collect();
        if !new_topics.is_empty() {
            check_input_topics(&self.config.kafka, new_topics);
        }
        if let Some(preload) = self.preload.take() {
            match tokio::task::block_in_place(|| preload.join()) {
                Ok(Ok(restored)) => {
                    self.preloaded = restored.into_iter().map(|r| (r.slot.clone(), r)).collect();
                }
                Ok(Err(e)) => return Err(e.context("restoring the stored partitions")),
                Err(_) => anyhow::bail!("the thread restoring the stored partitions panicked"),
            }
        }
        let mut restored = Vec::new();
        let mut missing = Vec::new();
        for slot in slots {
            match self.preloaded.remove(&slot) {
                Some(r) => restored.push(r),
                None => missing.push(slot),
            }
        }
        // Only the first assignment uses the preload: later ones read the store as it is.
        self.preloaded.clear();
        let (store, rules, calendar) = (
            self.store.clone(),
            self.rules.clone(),
            self.calendar.clone(),
        );
        let settings = self.config.engine.settings();
        restored.extend(tokio::task::block_in_place(|| {
            restore_partitions(&store, &rules, &calendar, settings, &missing)
        })?);
        let consumer = &self.consumer;
        let marks = tokio::task::block_in_place(|| {
            watermarks(&**consumer, restored.iter().map(|r| &r.slot))
        });
        for (mut r, marks) in restored.into_iter().zip(marks) {
            let high_watermark = marks.and_then(|(_, high)| u64::try_from(high).ok());
            let replaced = self
                .consumer
                .context()
                .replaced
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&r.slot);
            if let Some((stored, low, high)) = replaced {
                self.metrics.logs_replaced.inc();
                tracing::error!(topic = %r.slot.0, partition = r.slot.1, stored_offset = stored,
                    log_start_offset = low, log_end_offset = high,
                    "the partition's log ends before the offset the store holds: it is not \
                     the log redlight read (the topic deleted and created again, moved to \
                     another cluster, or cut short by an unclean leader election); reading it \
                     from its start: events already applied are recognised by their ids");
                r.next_offset = Some(low);
                // Stored at once: a restart before the partition's first batch would
                // otherwise find the old offset, and a log grown past it by then could not
                // be told apart.
                let batch = WriteBatch {
                    offsets: vec![(r.slot.0.clone(), r.slot.1, low)],
                    ..WriteBatch::default()
                };
                self.writer.submit(batch, self.engine_time())?;
            }
            // The log now begins after the offset the store holds: the broker deleted the
            // events between (its retention is shorter than this daemon was away, or
            // records were deleted), and the cases they belonged to may show wrong lights.
            let log_start = marks.and_then(|(low, _)| u64::try_from(low).ok());
            if let (Some(next), Some(start)) = (r.next_offset, log_start)
                && start > next
            {
                self.metrics.events_lost.inc_by(start - next);
                tracing::error!(topic = %r.slot.0, partition = r.slot.1, stored_offset = next,
                    log_start_offset = start, lost = start - next,
                    "events deleted by the broker before redlight read them (the topic's \
                     retention is shorter than this daemon was away); the cases they belong \
                     to may show wrong lights: produce them again from their source if it \
                     keeps them");
            }
            let lost_checked_to = log_start.unwrap_or(0).max(r.next_offset.unwrap_or(0));
            tracing::info!(topic = %r.slot.0, partition = r.slot.1, cases = r.cases,
                next_offset = r.next_offset, high_watermark,
                restore_ms = r.elapsed.as_millis() as u64, "partition restored");
            // Durable already: a partition restored caught up reports its offset before any
            // new message arrives (the gauge was absent until then).
            if let Some(next) = r.next_offset {
                self.metrics
                    .durable_offset
                    .with_label_values(&[r.slot.0.as_str(), &r.slot.1.to_string()])
                    .set(i64::try_from(next).unwrap_or(i64::MAX));
            }
            self.classifier.absorb(r.classifier);
            if let Ok(mut totals) = self.shared.open.lock() {
                totals.apply(&r.open, 1, &self.classifier);
            }
            self.partitions.insert(
                r.slot,
                PartitionState {
                    engine: r.engine,
                    open: r.open,
                    next_offset: r.next_offset,
                    high_watermark,
                    last_message: Instant::now(),
                    watermark_checked: Instant::now(),
                    lost_checked_to,
                },
            );
        }
        Ok(())
    }

    /// A message came at `offset` where `next` was expected: if the log now begins after
    /// `next`, the broker deleted the events between before they were read (this daemon
    /// fell behind by more than the topic's retention, or records were deleted), and
    /// librdkafka went on from the log's start. Asked of the broker on a blocking thread,
    /// counted and logged from there as at the assignment. A gap of one offset is not
    /// asked about: that is a transaction's commit marker, one per transaction. Other gaps
    /// without loss (aborted transactions, a compacted topic) cost a question each.
    fn check_gap(&mut self, slot: &Slot, offset: u64) {
        let Some(p) = self.partitions.get_mut(slot) else {
            return;
        };
        let Some(next) = p.next_offset else {
            return;
        };
        let from = next.max(p.lost_checked_to);
        if offset <= from + 1 {
            return;
        }
        p.lost_checked_to = offset;
        let consumer = self.consumer.clone();
        let metrics = self.metrics.clone();
        let (topic, partition) = slot.clone();
        tokio::task::spawn_blocking(move || {
            match consumer.fetch_watermarks(&topic, partition as i32, Duration::from_secs(10)) {
                Ok((low, _)) => {
                    let start = u64::try_from(low).unwrap_or(0).min(offset);
                    if start > from {
                        metrics.events_lost.inc_by(start - from);
                        tracing::error!(topic = %topic, partition, expected_offset = from,
                            next_message_offset = offset, log_start_offset = low,
                            lost = start - from,
                            "events deleted by the broker before redlight read them (it \
                             fell behind by more than the topic's retention, or they were \
                             deleted by hand); the cases they \
                             belong to may show wrong lights: produce them again from their \
                             source if it keeps them");
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %topic, partition, expected_offset = from,
                        next_message_offset = offset, error = %e,
                        "a gap in the offsets, and the broker did not say where its log begins: \
                         events it deleted unread, if any, are not counted");
                }
            }
        });
    }

    /// An error the consumer's poll gave instead of a message: counted and, with `say`,
    /// said (as [`KafkaErrorLog`] allows), unless it is the echo of one the context was
    /// just given.
    fn consume_error(&self, e: &KafkaError, say: bool) {
        let mut errors = self
            .consumer
            .context()
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if errors.is_echo(e, now) {
            return;
        }
        self.metrics.kafka_errors.inc();
        if !say {
            return;
        }
        if let Some(unsaid) = errors.say(e, now) {
            tracing::warn!(error = %e, unsaid, "kafka error while consuming; retrying{}", unsaid_note(unsaid));
        }
    }

    /// Stops the daemon when a partition was assigned whose state this store does not
    /// have ([`Ctx::missing_state`]), or when librdkafka reports a fatal error: the
    /// consumer can do nothing more, and retrying would only log forever. The known cause
    /// is static group membership (`group.instance.id` in `[kafka.librdkafka]`) with a
    /// second instance under the same id: the broker fences the older one.
    fn check_fatal(&self) -> anyhow::Result<()> {
        if let Some(why) = self
            .consumer
            .context()
            .missing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            anyhow::bail!(why);
        }
        if let Some((code, reason)) = self.consumer.client().fatal_error() {
            anyhow::bail!(
                "Kafka consumer stopped by a fatal error ({code:?}): {reason}. With \
                 `group.instance.id` set in [kafka.librdkafka], another instance may be running \
                 under the same id: each instance needs its own"
            );
        }
        Ok(())
    }

    /// librdkafka could not decompress a batch the broker sent (damaged on the broker's
    /// disk: the broker checks what producers send). It cannot read past it, so the
    /// partition stops there, and nothing after it is applied or skipped unsaid. Says which
    /// partition (the one behind whose next offset is nearest the batch's base offset,
    /// which librdkafka's error names) at error level once a minute, and counts it
    /// in `redlight_partitions_unreadable` until the partition moves on (the broker's copy
    /// repaired, or the records deleted: then the daemon counts them as lost).
    fn unreadable_batch(&mut self) {
        let base = *self
            .consumer
            .context()
            .unreadable_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Those behind first (the high watermark may not be known yet after a start); the
        // next offset may lie inside the batch (a store restored past its start) or before
        // it (a transaction's marker), so the nearest either way.
        let stopped = self
            .partitions
            .iter()
            .filter_map(|(slot, p)| {
                let next = p.next_offset.unwrap_or(0);
                let distance = match base {
                    Some(base) => next.abs_diff(base),
                    None if p.caught_up() => return None,
                    None => 0,
                };
                Some(((p.caught_up(), distance), slot, next))
            })
            .min_by_key(|(key, ..)| *key);
        let Some((_, slot, next)) = stopped else {
            tracing::debug!(offset = ?base, "a batch the broker sent cannot be decompressed, \
                 and no partition is held; retrying");
            return;
        };
        let slot = slot.clone();
        let now = Instant::now();
        let say = match self.unreadable.get(&slot) {
            Some(&(at, said)) => at != next || now.duration_since(said) >= Duration::from_secs(60),
            None => true,
        };
        if say {
            tracing::error!(topic = %slot.0, partition = slot.1, offset = next,
                batch_offset = base,
                "a batch the broker holds for this partition cannot be decompressed (damaged on \
                 its disk?): nothing from this offset on can be read, so the partition stops \
                 here, and nothing is skipped. Repair the broker's copy (from a replica), or \
                 delete the records up to the batch's end (kafka-delete-records.sh); redlight \
                 then goes on and counts them in redlight_events_lost_total. Said once a minute");
            self.unreadable.insert(slot, (next, now));
        }
        self.metrics
            .partitions_unreadable
            .set(self.unreadable.len() as i64);
    }

    /// Forgets the partitions stopped at an unreadable batch that have moved on (or are no
    /// longer held).
    fn unreadable_moved_on(&mut self) {
        let before = self.unreadable.len();
        let partitions = &self.partitions;
        self.unreadable.retain(|slot, (at, _)| {
            partitions
                .get(slot)
                .is_some_and(|p| p.next_offset.unwrap_or(0) <= *at)
        });
        if self.unreadable.len() != before {
            tracing::info!("a partition stopped at an unreadable batch reads again");
            self.metrics
                .partitions_unreadable
                .set(self.unreadable.len() as i64);
        }
    }

    /// Receives up to `batch_max` messages (waiting at most `batch_wait_ms` for more), applies
    /// them, and makes the batch durable.
    async fn batch(&mut self, first: Result<Msg, KafkaError>) -> anyhow::Result<()> {
        let max = self.config.kafka.batch_max;
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.kafka.batch_wait_ms);
        let mut messages = match self.parser.as_ref().and_then(Parser::spare_messages) {
            Some(spare) => spare,
            None => std::mem::take(&mut self.spare_messages),
        };
        messages.reserve(max.min(1 << 14));
        match first {
            Ok(m) => messages.push(m),
            Err(e) => {
                self.check_fatal()?;
                let unreadable = e.rdkafka_error_code() == Some(RDKafkaErrorCode::BadCompression);
                self.consume_error(&e, !unreadable);
                if unreadable {
                    self.unreadable_batch();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(());
            }
        }
        let mut unreadable = false;
        // One stream for the batch: `StreamConsumer::recv` makes a stream per message,
        // registering and unregistering a waker slot under a lock each time.
        let consumer = Arc::clone(&self.consumer);
        let mut stream = consumer.stream();
        while messages.len() < max {
            let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx));
            match tokio::time::timeout_at(deadline, next).await {
                Ok(Some(Ok(m))) => {
                    // SAFETY: kept in `messages`, which go into a `Batch` holding the
                    // consumer, or are dropped here while it lives.
                    let m = unsafe { Msg::held(m, messages.last()) };
                    messages.push(m);
                }
                Ok(Some(Err(e))) => {
                    // A batch that cannot be decompressed is said once the messages before
                    // it are applied: the partition's next offset is then the batch's.
                    unreadable = e.rdkafka_error_code() == Some(RDKafkaErrorCode::BadCompression);
                    self.consume_error(&e, !unreadable);
                    break;
                }
                // rdkafka's streams never end; the deadline ends the batch.
                Ok(None) | Err(_) => break,
            }
        }
        drop(stream);
        // Assignments that arrived while receiving: load them before applying.
        self.apply_changes()?;
        let mut alerts = self.writer.alert_vec();
        let mut dead = Vec::new();
        let mut touched = Touched::default();
        let messages: Messages = Arc::new(Batch {
            messages,
            _consumer: Some(self.consumer.clone()),
        });
        let events = ParsedEvents::start(&messages, self.parser.as_ref());
        // The messages of a batch mostly come from one partition after another: the slot
        // is built anew only when it changes.
        let mut slot: Slot = (String::new(), u32::MAX);
        // The shared name of the topic in `slot` (see `shared_topic`): while messages share
        // it, the slot's topic is theirs without comparing the names.
        let mut slot_topic: Option<Arc<str>> = None;
        // `redlight_events_consumed_total`, by topic and type, counted here and added to
        // the counters once a batch.
        let mut consumed = Tally::default();
        // Events more than `kafka.future_tolerance_ms` ahead of this are refused.
        let wall = wall_ms();
        'messages: for (i, m) in messages.iter().enumerate() {
            // Its chunk parsed (by the parser's thread ahead of the loop, or here).
            let Some((parsed, keyed)) = events.get(i) else {
                continue;
            };
            let Ok(partition) = u32::try_from(m.partition()) else {
                continue;
            };
            if slot.1 != partition
                || !slot_topic
                    .as_ref()
                    .is_some_and(|t| Arc::ptr_eq(t, &m.topic))
            {
                if slot.0 != m.topic() {
                    slot.0 = m.topic().to_string();
                }
                slot.1 = partition;
                slot_topic = Some(m.topic.clone());
            }
            // Not (or no longer) ours: revoked while this batch was being received. Its
            // new owner starts from the offsets in the store; nothing is applied here.
            let Some(p) = self.partitions.get(&slot) else {
                continue;
            };
            let offset = m.offset();
            let Ok(offset_u) = u64::try_from(offset) else {
                continue;
            };
            if p.next_offset.is_some_and(|next| offset_u < next) {
                continue; // already durable: a redelivery
            }
            if p.next_offset.is_some_and(|next| offset_u > next + 1) {
                self.check_gap(&slot, offset_u);
            }
            if slot.0 == self.config.kafka.dead_letter_topic {
                // A pattern in `kafka.topics` matches the dead-letter topic: its messages are
                // redlight's own refusals. Applied, they would bypass the operator who sends
                // them back on purpose; refused, they would be copied to it again for ever.
                let counter = self
                    .metrics
                    .events_rejected
                    .with_label_values(&["dead_letter_topic"]);
                if let Some(n) = count_and_log(&counter) {
                    tracing::error!(topic = %slot.0, partition = slot.1, offset, skipped = n,
                        "a message of the dead-letter topic, which a pattern in kafka.topics \
                         matches: skipped, neither applied nor copied to it again; make the \
                         pattern leave it out (logged at the 1st, 10th, 100th, ... such \
                         message)");
                }
                self.handled(&slot, offset_u, &mut touched);
                continue;
            }
            let dead_letter = |reason: String, code: &str| DeadLetter {
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .into_iter()
                    .map(|(k, v)| (k, v.map(serde_bytes::ByteBuf::from)))
                    .collect(),
                reason,
                code: code.to_string(),
                topic: slot.0.clone(),
                partition: slot.1,
                offset,
            };
            let ev = match parsed.as_ref().map_err(Clone::clone).and_then(|ev| {
                ev.not_ahead_of(wall, self.config.kafka.future_tolerance_ms)
                    .map(|()| ev)
            }) {
                Ok(ev) => ev,
                Err(e) => {
                    // A CloudEvent in binary content mode (attributes in `ce_` headers):
                    // its body is the data alone, so it fails as an event; say why.
                    let e = if parsed.is_err() && m.binary_mode() {
                        crate::event::EventError::BinaryMode
                    } else {
                        e
                    };
                    self.metrics
                        .events_rejected
                        .with_label_values(&[e.reason_code()])
                        .inc();
                    if let Some(unsaid) = self.refusals_said.say(e.reason_code(), Instant::now()) {
                        tracing::warn!(topic = %slot.0, partition = slot.1, offset, reason = %e,
                            unsaid, "rejected message; copied to the dead-letter topic{}",
                            unsaid_note(unsaid));
                    }
                    dead.push(dead_letter(e.to_string(), e.reason_code()));
                    self.handled(&slot, offset_u, &mut touched);
                    continue;
                }
            };
            if !keyed {
                // The subject is the case id either way; but a producer that keys messages
                // otherwise (or not at all) may spread a case over partitions, whose
                // engines then each see part of it: false reds, missed stops.
                if let Some(n) = count_and_log(&self.metrics.events_key_mismatch) {
                    let key = m.key().map(String::from_utf8_lossy);
                    tracing::warn!(topic = %slot.0, partition = slot.1, offset, event = %ev.id,
                        subject = %ev.subject, key = ?key, mismatches = n,
                        "message key is not the event's subject (the case id); key each \
                         message by its case id so that a case stays on one partition \
                         (logged at the 1st, 10th, 100th, ... such message)");
                }
            }
            self.follow_case(&slot, offset, ev);
            // The partition's state, looked up once for what follows (the map's key is
            // the topic's name: every lookup compares names).
            let Some(mut p) = self.partitions.get_mut(&slot) else {
                continue;
            };
            // The cases of the partition's next events are fetched while this one is
            // applied (see `Engine::prefetch`).
            p.engine.prefetch(|k| {
                let next = messages.get(i + k)?;
                if next.partition() != m.partition() || !next.same_topic(m) {
                    return None;
                }
                let ev = events.get(i + k)?.0.as_ref().ok()?;
                Some(ev.subject.as_str())
            });
            // The timers due before the event fire first (as in replay). After days without
            // events that can be millions: each slice is made durable on its own, with the
            // offsets of the messages handled before this one.
            // One message in `TIMED_EVERY` is timed for the engine's histograms: reading
            // the clock three times and observing twice for each was 3–4% of the loop's
            // samples (the clock costs 39 ns a read here).
            let timed = offset_u.is_multiple_of(TIMED_EVERY);
            let t0 = timed.then(Instant::now);
            let slice = self.config.store.timers_per_commit;
            // Deadlines and duties left pending for want of calendar data, by the timers
            // and the event, and a rejection (below), and the event's data problems:
            // counted from the engine's own counts.
            let (calendar_errors, data_problems) = {
                let s = p.engine.stats();
                (s.calendar_errors, s.data_problems)
            };
            while !p.engine.advance_before_event(ev, slice, &mut alerts) {
                self.keep_dead_letters(std::mem::take(&mut dead))?;
                let written = std::mem::replace(&mut alerts, self.writer.alert_vec());
                self.persist(written, &touched)?;
                // Revoked while the slices were persisted: nothing more of it here.
                let Some(again) = self.partitions.get_mut(&slot) else {
                    continue 'messages;
                };
                p = again;
            }
            let t1 = timed.then(Instant::now);
            let applied = p.engine.apply(ev, &mut alerts);
            let stats = p.engine.stats();
            let new_errors = stats.calendar_errors.saturating_sub(calendar_errors);
            if new_errors > 0 {
                self.metrics.calendar_errors.inc_by(new_errors);
            }
            let new_problems = stats.data_problems.saturating_sub(data_problems);
            if new_problems > 0 {
                self.metrics.data_problems.inc_by(new_problems);
            }
            if let (Some(t0), Some(t1)) = (t0, t1) {
                self.metrics
                    .engine_advance_seconds
                    .observe((t1 - t0).as_secs_f64());
                self.metrics
                    .engine_apply_seconds
                    .observe(t1.elapsed().as_secs_f64());
            }
            match applied {
                Ok(applied) => {
                    // Recorded now: a backlog may forget the case before the batch is written.
                    if let Some(case) = p.engine.case(&ev.subject) {
                        crate::scorecard::ledger_rows(case, p.engine.rules(), &mut self.ledger);
                    }
                    if applied == Applied::UnknownType {
                        // Not a label of `events_consumed`: every misspelt or made-up type
                        // would be a series of its own, for ever.
                        if let Some(n) = count_and_log(&self.metrics.events_unknown_type) {
                            tracing::warn!(topic = %slot.0, partition = slot.1, offset,
                                event = %ev.id, case = %ev.subject, r#type = %ev.kind_shown(),
                                unknown = n,
                                "event of a type no rule pack names; ignored (logged at the \
                                 1st, 10th, 100th, ... such event)");
                        }
                    } else {
                        consumed.count((m.topic(), ev.kind.as_str()));
                    }
                    if applied == Applied::Duplicate {
                        self.metrics.events_duplicate.inc();
                    }
                }
                Err(e) => {
                    // apply() rolled its own alerts back; the timers fired before it stay.
                    let counter = self
                        .metrics
                        .events_rejected
                        .with_label_values(&[e.reason_code()]);
                    if let EngineError::CaseFull { .. } = e {
                        // A producer in a loop sends many: logged at the 1st, 10th, ….
                        if let Some(n) = count_and_log(&counter) {
                            tracing::error!(topic = %slot.0, partition = slot.1, offset,
                                error = %e, refused = n,
                                "event refused: its case has too many events; copied to the \
                                 dead-letter topic (logged at the 1st, 10th, 100th, ... such \
                                 event)");
                        }
                    } else {
                        counter.inc();
                        if let Some(unsaid) =
                            self.refusals_said.say(e.reason_code(), Instant::now())
                        {
                            tracing::error!(topic = %slot.0, partition = slot.1, offset,
                                error = %e, unsaid,
                                "event refused; copied to the dead-letter topic{}",
                                unsaid_note(unsaid));
                        }
                    }
                    dead.push(dead_letter(e.to_string(), e.reason_code()));
                }
            }
            // As `handled` does, with the partition at hand.
            p.next_offset = Some(offset_u + 1);
            touched.add(&slot);
        }
        for ((topic, kind), n) in consumed.0 {
            self.metrics
                .events_consumed
                .with_label_values(&[topic, kind])
                .inc_by(n);
        }
        // The events and the messages are freed on the parser's thread, which keeps the
        // messages' vector, emptied, for a batch to come; without it, here.
        match &self.parser {
            Some(parser) => parser.free(events, messages),
            None => {
                drop(events);
                if let Some(emptied) = emptied(messages) {
                    self.spare_messages = emptied;
                }
            }
        }
        let now = Instant::now();
        for slot in &touched.0 {
            if let Some(p) = self.partitions.get_mut(slot) {
                p.last_message = now;
            }
        }
        let done = self.advance_idle(&mut alerts);
        self.keep_dead_letters(dead)?;
        self.persist(alerts, &touched)?;
        if !self.unreadable.is_empty() {
            self.unreadable_moved_on();
        }
        if unreadable {
            self.unreadable_batch();
        }
        if !done {
            // More fell due than one slice: the main loop's timer wakes at once for the rest.
            tracing::debug!("catch-up continues in the next slice");
        }
        Ok(())
    }

    /// Brings the event's case to the event's partition when another partition holds it,
    /// of the same topic or of another input topic: the subject is the case id for every
    /// topic (as for the alerts' ids and the API), so a case is one case wherever its
    /// events come from. A case's events stay on one partition while the topic keeps its
    /// partitions and producers key them by case id; when partitions are added to the
    /// topic, the producers' partitioners send many keys elsewhere (and a producer that
    /// keys otherwise spreads a case over partitions); and two systems may publish a case's
    /// events to topics of their own (the hall its acceptance, the department its
    /// decision). Without the move, the partition the case was on would run its clocks to
    /// red for want of the stop that went to the other, and the other would open a case of
    /// its own, the stop a violation without its start.
    ///
    /// The case moves with its state and timers (its timers due before the event then fire
    /// in the new partition, before the event); the batch that persists the event forgets
    /// it in the old partition's rows and writes it in the new one's, in one transaction.
    /// Only partitions this instance holds are looked in (one instance per consumer group:
    /// all of them). Events of a case still unread in the old partition (a backlog across
    /// the change, or one topic read ahead of another) bring it back there when they come,
    /// applied as late events.
    ///
    /// What it costs: a look-up in the partition (the one `apply` makes next, so the case
    /// is in cache for it), and for a case new to its partition one in each other
    /// partition.
    fn follow_case(&mut self, slot: &Slot, offset: i64, ev: &Event) {
        let id = ev.subject.as_str();
        match self.partitions.get(slot) {
            Some(p) if p.engine.case(id).is_none() => {}
            _ => return,
        }
        let holder = self
            .partitions
            .iter()
            .find_map(|(s, p)| (s != slot && p.engine.case(id).is_some()).then(|| s.clone()));
        let Some(from) = holder else {
            return;
        };
        let Some(case) = self
            .partitions
            .get_mut(&from)
            .and_then(|p| p.engine.take_case(id))
        else {
            return;
        };
        // The event's partition was found above, and the map has not changed since.
        if let Some(p) = self.partitions.get_mut(slot) {
            p.engine.adopt(case);
        }
        if let Some(n) = count_and_log(&self.metrics.cases_moved) {
            tracing::warn!(topic = %slot.0, partition = slot.1, offset, event = %ev.id,
                case = %id, from_topic = %from.0, from_partition = from.1, moved = n,
                "case moved to the partition its event arrived on from the one that held \
                 it: partitions were added to the topic, its producer keys messages \
                 otherwise than by case id, or its events come on more than one topic \
                 (logged at the 1st, 10th, 100th, ... case moved)");
        }
    }

    /// Marks a message as handled: the partition's next offset moves past it. Its
    /// `last_message` is set once the batch is applied (`touched`), not per message.
    fn handled(&mut self, slot: &Slot, offset: u64, touched: &mut Touched) {
        if let Some(p) = self.partitions.get_mut(slot) {
            p.next_offset = Some(offset + 1);
            touched.add(slot);
        }
    }

    /// Encodes rejected messages for the next batch written: the store keeps them, with
    /// the batch and its offsets, until the dead-letter topic has them ([`send_dead_letters`]).
    fn keep_dead_letters(&mut self, dead: Vec<DeadLetter>) -> anyhow::Result<()> {
        for d in dead {
            let row = rmp_serde::to_vec_named(&d).context("encoding a dead letter")?;
            self.dead_letters.push(row);
        }
        Ok(())
    }

    /// Lets the wall clock drive the partitions that are caught up and quiet, one slice of
    /// at most `store.timers_per_commit` timers each (one transaction for millions of
    /// catch-up alerts took minutes and held everything else up); returns `false` when
    /// timers that are due remain (the main loop's timer then wakes at once, so a long
    /// catch-up is written slice by slice and a shutdown is heard between slices). A quiet
    /// partition that looked behind asks the broker again (at most once per `idle_ms`,
    /// without waiting for the answer).
    fn advance_idle(&mut self, alerts: &mut Vec<Alert>) -> bool {
        let now = wall_ms();
        let slice = self.config.store.timers_per_commit;
        let idle = Duration::from_millis(self.config.kafka.idle_ms);
        let highs: BTreeMap<Slot, u64> = match self.consumer.context().highs.lock() {
            Ok(mut h) => std::mem::take(&mut *h),
            Err(_) => BTreeMap::new(),
        };
        let mut done = true;
        for ((topic, partition), p) in self.partitions.iter_mut() {
            if let Some(high) = highs.get(&(topic.clone(), *partition)) {
                p.high_watermark = Some(p.high_watermark.map_or(*high, |h| h.max(*high)));
            }
            if p.last_message.elapsed() < idle {
                continue;
            }
            if !p.caught_up() && p.watermark_checked.elapsed() >= idle {
                p.watermark_checked = Instant::now();
                // Asked on a blocking thread, the answer taken from `highs` on a later turn:
                // the request waits behind the fetches on the broker's connection, and the
                // loop waiting for it stood still. A partition that had not come for a second
                // while others filled the batches made the daemon 20 times slower with
                // `kafka.batch_max` = 200 (2,145 events/s against 45,032).
                let consumer = self.consumer.clone();
                let (topic, partition) = (topic.clone(), *partition);
                tokio::task::spawn_blocking(move || {
                    let fetched =
                        consumer.fetch_watermarks(&topic, partition as i32, Duration::from_secs(2));
                    let ctx = consumer.context();
                    if let Ok((_, high)) = fetched
                        && let Ok(high) = u64::try_from(high)
                        && let Ok(mut h) = ctx.highs.lock()
                    {
                        let e = h.entry((topic, partition)).or_insert(high);
                        *e = (*e).max(high);
                    }
                    ctx.notify.notify_one();
                });
            }
            if p.caught_up() {
                let t0 = Instant::now();
                let calendar_errors = p.engine.stats().calendar_errors;
                // Late events' deadlines wait for the clock to be driven again
                // (`Engine::apply`): here, up to the wall clock, or up to the partition's own
                // clock where an event dated ahead (within `future_tolerance_ms`) moved it
                // past the wall clock, as replay fires them at the end of its input.
                let engine_now = p.engine.now();
                done &= if engine_now > now {
                    p.engine.advance_before_bounded(engine_now, slice, alerts)
                } else {
                    p.engine.advance_bounded(now, slice, alerts)
                };
                // Periodic duties left pending for want of calendar data.
                self.metrics
                    .calendar_errors
                    .inc_by(p.engine.stats().calendar_errors - calendar_errors);
                self.metrics
                    .engine_advance_seconds
                    .observe(t0.elapsed().as_secs_f64());
            }
        }
        done
    }

    /// Fires (one slice of) the timers due by the wall clock in the caught-up partitions
    /// and persists.
    fn fire_timers(&mut self) -> anyhow::Result<()> {
        let mut alerts = self.writer.alert_vec();
        self.advance_idle(&mut alerts);
        self.persist(alerts, &Touched::default())
    }

    /// How far every partition's engine clock has got, for alert delivery (published by
    /// the writer once the batch is durable, so that all alerts up to there are): an
    /// escalation step fires only once the red it escalates is known to have stayed open
    /// that long.
    fn engine_time(&self) -> Option<i64> {
        self.partitions.values().map(|p| p.engine.now()).min()
    }

    /// One store transaction, handed to the writer: changed cases, alerts, and the offsets
    /// of `touched` partitions; the offsets go to Kafka once it is durable.
    fn persist(&mut self, alerts: Vec<Alert>, touched: &Touched) -> anyhow::Result<()> {
        let mut batch = WriteBatch {
            ledger: std::mem::replace(&mut self.ledger, self.writer.ledger_vec()),
            cases: self.writer.case_buffer(),
            dead_letters: std::mem::take(&mut self.dead_letters),
            ..WriteBatch::default()
        };
        let mut cases = 0usize;
        // The open-case gauges' changes (`src/open_counts.rs`).
        let mut open = crate::open_counts::Counts::default();
        for ((topic, partition), p) in self.partitions.iter_mut() {
            for class in p.engine.take_released() {
                open.add(class, -1);
                p.open.add(class, -1);
            }
            // Missed periods stay on the scorecard when their report comes late (the
            // case's own rows no longer show them then); retracted ones are taken back.
            crate::scorecard::take_period_rows(
                &mut p.engine,
                &mut batch.ledger,
                &mut batch.ledger_taken_back,
            );
            let changed = p.engine.take_changed();
            for (i, id) in changed.iter().enumerate() {
                // The next cases' cache misses overlap this one's encoding (a batch's
                // changed cases are ten thousand or so, spread over the engine's memory).
                p.engine.prefetch(|k| changed.get(i + k).map(|id| &**id));
                match p.engine.case(id) {
                    Some(case) => {
                        // What the scorecard counts, kept after the case is forgotten.
                        crate::scorecard::ledger_rows(case, p.engine.rules(), &mut batch.ledger);
                        batch.cases.put(topic, *partition, case)?;
                        let (was, is) = self.classifier.rejudge(case);
                        open.moved(was, is);
                        p.open.moved(was, is);
                    }
                    None => batch.cases.forget(topic, *partition, id),
                }
            }
            cases += p.engine.case_count();
            if touched.contains(topic, *partition)
                && let Some(next) = p.next_offset
            {
                batch.offsets.push((topic.clone(), *partition, next));
            }
        }
        self.metrics.cases.set(cases as i64);
        if !open.is_empty()
            && let Ok(mut totals) = self.shared.open.lock()
        {
            totals.apply(&open, 1, &self.classifier);
            self.classifier.forget_uncounted(&totals);
        }
        let engine_time = self.engine_time();
        if batch.is_empty() && alerts.is_empty() {
            // Nothing to write (no scorecard record either); the engine time is published
            // after what is pending, and the empty batch brings its case buffer back.
            return self.writer.submit(batch, engine_time);
        }
        let mut fired = Tally::default();
        for a in &alerts {
            fired.count((a.level.as_str(), a.status.as_str(), &*a.rule));
            // Alerts are in the store, the API and the webhooks; a catch-up can raise
            // millions, so the log carries them only at debug level.
            tracing::debug!(id = %a.id, rule = %a.rule, case = %a.case, level = a.level.as_str(),
                status = a.status.as_str(), reason = ?a.reason, at = %a.at, "alert");
        }
        for ((level, status, rule), n) in fired.0 {
            self.metrics
                .alerts
                .with_label_values(&[level, status, rule])
                .inc_by(n);
        }
        // Encoded on the writer's thread: this loop is the daemon's bottleneck, and the
        // writer waits for batches about half of the time.
        batch.alerts = alerts;
        for ((topic, partition), p) in &self.partitions {
            let now = p.engine.now();
            if now != i64::MIN {
                batch.clocks.push((topic.clone(), *partition, now));
            }
        }
        // Durable on the writer thread while the next batch is applied; the offsets go to
        // Kafka from there, after the commit.
        self.writer.submit(batch, engine_time)
    }
}

/// Counts by label values, for a batch: a counter's `with_label_values` hashes its labels
/// with SipHash and takes a lock, about 500 instructions, too many to pay for every event
/// and alert when a batch has a few kinds of each.
struct Tally<K>(rustc_hash::FxHashMap<K, u64>);

impl<K> Default for Tally<K> {
    fn default() -> Tally<K> {
        Tally(rustc_hash::FxHashMap::default())
    }
}

impl<K: std::hash::Hash + Eq> Tally<K> {
    fn count(&mut self, key: K) {
        *self.0.entry(key).or_insert(0) += 1;
    }
}

/// Counts one more of a repeated input problem; its count when it is one to log: the 1st,
/// 10th, 100th, … (so that a stream of them is seen without flooding the log).
fn count_and_log(counter: &prometheus::IntCounter) -> Option<u64> {
    counter.inc();
    let n = counter.get();
    crate::engine::is_power_of_ten(n).then_some(n)
}

/// The partitions a batch handled messages of, in the order first seen: a batch has a few,
/// and its messages come a partition at a time, so the last one is checked first (a set
/// hashed the slot's topic name for every message).
#[derive(Default)]
struct Touched(Vec<Slot>);

impl Touched {
    fn add(&mut self, slot: &Slot) {
        // The partition first: it tells most slots apart without comparing topic names.
        let same = |s: &Slot| s.1 == slot.1 && s.0 == slot.0;
        if !self.0.last().is_some_and(same) && !self.0.iter().any(same) {
            self.0.push(slot.clone());
        }
    }

    fn contains(&self, topic: &str, partition: u32) -> bool {
        self.0.iter().any(|(t, p)| *p == partition && t == topic)
    }
}

/// A batch's messages, shared with the [`Parser`]'s thread.
type Messages = Arc<Batch>;

/// A batch's messages, with the consumer they came from: librdkafka's messages are read
/// where they are ([`Msg::held`]), and must go before the client that received them. The
/// batch keeps the client alive until its last message is dropped (the fields drop in
/// order: the messages first), wherever that happens (the loop, the parser's thread).
struct Batch {
    messages: Vec<Msg>,
    _consumer: Option<Arc<StreamConsumer<Ctx>>>,
}

impl std::ops::Deref for Batch {
    type Target = Vec<Msg>;
    fn deref(&self) -> &Vec<Msg> {
        &self.messages
    }
}

/// A consumed message as the loop keeps it until its batch is applied.
pub(crate) struct Msg {
    /// The previous message's topic when it is the same (a batch mostly has one or two).
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    body: Body,
}

enum Body {
    /// librdkafka's message itself, its key, payload and headers read in place. Copying
    /// them out cost a copy and an allocation per message; and the headers, which only a
    /// refused message needs (its dead letter keeps them), librdkafka parses anew on every
    /// look, even when there are none (a buffer allocated, zeroed and freed to read a
    /// count of zero): 2.3% of the daemon's samples in the whole-case bench.
    Held(BorrowedMessage<'static>),
    /// A copy: the key's bytes, then the payload's (`key_len`: the key's length, `None`:
    /// no key), and the headers when there are any.
    #[cfg(test)]
    Copied {
        bytes: Box<[u8]>,
        key_len: Option<usize>,
        has_payload: bool,
        headers: Vec<(String, Option<Vec<u8>>)>,
    },
}

/// The topic of `m`: the previous message's when it is the same (compared without
/// building a string), so that the loop tells topics apart by pointer.
fn shared_topic(m: &impl Message, previous: Option<&Msg>) -> Arc<str> {
    match previous {
        Some(p) if &*p.topic == m.topic() => p.topic.clone(),
        _ => Arc::from(m.topic()),
    }
}

/// A message's headers, names and values copied out as sent (none: empty).
fn headers_of(m: &impl Message) -> Vec<(String, Option<Vec<u8>>)> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

impl Msg {
    /// Keeps librdkafka's message as it is.
    ///
    /// # Safety
    /// The message must be dropped before the client that received it: put it in a
    /// [`Batch`] holding that client, or drop it while the client is alive.
    unsafe fn held(m: BorrowedMessage<'_>, previous: Option<&Msg>) -> Msg {
        let topic = shared_topic(&m, previous);
        let (partition, offset) = (m.partition(), m.offset());
        // SAFETY: only the lifetime changes; the caller keeps the client alive for as long
        // (see the contract above).
        let m = unsafe { std::mem::transmute::<BorrowedMessage<'_>, BorrowedMessage<'static>>(m) };
        Msg {
            topic,
            partition,
            offset,
            body: Body::Held(m),
        }
    }

    /// A copy of a message.
    #[cfg(test)]
    fn copy(m: &impl Message, previous: Option<&Msg>) -> Msg {
        let key = m.key();
        let payload = m.payload();
        let mut bytes = key.unwrap_or_default().to_vec();
        bytes.extend_from_slice(payload.unwrap_or_default());
        Msg {
            topic: shared_topic(m, previous),
            partition: m.partition(),
            offset: m.offset(),
            body: Body::Copied {
                bytes: bytes.into_boxed_slice(),
                key_len: key.map(<[u8]>::len),
                has_payload: payload.is_some(),
                headers: headers_of(m),
            },
        }
    }

    /// The message's headers, names and values as sent (read when asked: see [`Body`]).
    fn headers(&self) -> Vec<(String, Option<Vec<u8>>)> {
        match &self.body {
            Body::Held(m) => headers_of(m),
            #[cfg(test)]
            Body::Copied { headers, .. } => headers.clone(),
        }
    }

    /// Whether it carries a CloudEvent in binary content mode: its attributes in `ce_`
    /// headers (the Kafka protocol binding), where redlight reads structured mode.
    fn binary_mode(&self) -> bool {
        self.headers().iter().any(|(k, _)| k == "ce_specversion")
    }

    fn topic(&self) -> &str {
        &self.topic
    }

    /// Whether both are of one topic: mostly they share its name (see `shared_topic`),
    /// which spares comparing the names, several times per message in the loop.
    fn same_topic(&self, other: &Msg) -> bool {
        Arc::ptr_eq(&self.topic, &other.topic) || self.topic == other.topic
    }

    fn partition(&self) -> i32 {
        self.partition
    }

    fn offset(&self) -> i64 {
        self.offset
    }

    fn key(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Held(m) => m.key(),
            #[cfg(test)]
            Body::Copied { bytes, key_len, .. } => key_len.map(|n| &bytes[..n]),
        }
    }

    fn payload(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Held(m) => m.payload(),
            #[cfg(test)]
            Body::Copied {
                bytes,
                key_len,
                has_payload,
                ..
            } => has_payload.then(|| &bytes[key_len.unwrap_or(0)..]),
        }
    }
}

/// What parsing gives for each message: its event, or why it is none.
type Parsed = Result<Event, crate::event::EventError>;

/// A message parsed ([`parse`]): its event, and whether the message's key is the event's
/// subject (true when there is no event). Compared where the message is parsed, its key
/// beside its payload in the cache, rather than in the loop (2% of its samples).
type ParsedMsg = (Parsed, bool);

/// How many messages the loop or the [`Parser`]'s thread takes at a time from a batch being
/// parsed: about 50 µs of parsing, the longest the loop may wait for the other thread.
const PARSE_CHUNK: usize = 64;

/// The smallest batch whose parsing [`ParsedEvents`] hands to the [`Parser`]'s thread:
/// handing work over costs about as much as parsing a few dozen events.
const PARSE_SPLIT: usize = 256;

/// A chunk's events, or `Err` when its parsing panicked.
type ChunkParsed = Result<Vec<ParsedMsg>, ()>;

/// A batch being parsed by the [`Parser`]'s thread, and by the loop for the chunks it
/// needs before that thread has taken them: each takes the next chunk of [`PARSE_CHUNK`]
/// messages.
struct ParseJob {
    messages: Messages,
    /// The next chunk to take.
    next: std::sync::atomic::AtomicUsize,
    /// How many chunks the batch has.
    count: usize,
    /// Each chunk's events once parsed; `Err` when its parsing panicked on the other
    /// thread (the loop then parses it again, as it would have had it taken the chunk).
    /// One lock for all: a [`std::sync::Condvar`] waits with one mutex only.
    chunks: Mutex<Vec<Option<ChunkParsed>>>,
    /// Told whenever a chunk is done.
    done: std::sync::Condvar,
}

impl ParseJob {
    fn new(messages: &Messages) -> Arc<ParseJob> {
        let count = messages.len().div_ceil(PARSE_CHUNK);
        Arc::new(ParseJob {
            messages: messages.clone(),
            next: std::sync::atomic::AtomicUsize::new(0),
            count,
            chunks: Mutex::new((0..count).map(|_| None).collect()),
            done: std::sync::Condvar::new(),
        })
    }

    /// Chunk `c`'s events: taking and parsing chunks here until `c` is
    /// taken (by either thread), then waiting for it if the other thread has it. The loop
    /// asks for the chunks in order, so it parses only those the other thread has not
    /// reached yet: a chunk at the start of a batch, before that thread wakes, and all of
    /// them should it have gone.
    fn take(&self, c: usize) -> Vec<ParsedMsg> {
        while self.next.load(Ordering::Relaxed) <= c {
            if !self.work_one() {
                break;
            }
        }
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        while chunks.get(c).is_some_and(Option::is_none) {
            chunks = self.done.wait(chunks).unwrap_or_else(|p| p.into_inner());
        }
        let parsed = chunks.get_mut(c).and_then(Option::take);
        drop(chunks);
        match parsed {
            Some(Ok(parsed)) => parsed,
            _ => self.chunk(c).iter().map(parse).collect(),
        }
    }

    /// Chunk `c`'s messages.
    fn chunk(&self, c: usize) -> &[Msg] {
        let from = (c * PARSE_CHUNK).min(self.messages.len());
        let to = (from + PARSE_CHUNK).min(self.messages.len());
        &self.messages[from..to]
    }

    /// Parses chunks until none is left to take.
    fn work(&self) {
        while self.work_one() {}
    }

    /// Takes the next chunk and parses it; `false` when none was left.
    fn work_one(&self) -> bool {
        let c = self.next.fetch_add(1, Ordering::Relaxed);
        if c >= self.count {
            return false;
        }
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.chunk(c).iter().map(parse).collect::<Vec<_>>()
        }))
        .map_err(|_| ());
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = chunks.get_mut(c) {
            *slot = Some(parsed);
        }
        drop(chunks);
        self.done.notify_all();
        true
    }
}

/// The thread that parses ahead of the loop ([`ParsedEvents`]): parsing is about a fifth
/// of the loop's work, and the loop is the daemon's bottleneck. The loop never waits for
/// it to start: a chunk the loop needs that this thread has not taken yet, the loop parses
/// itself. One thread for the daemon's life: a thread per batch (as before) started its
/// allocator heap afresh each time, and the loop waited for it (in a stream of whole
/// cases, a fifth of the loop's time went on joining it).
///
/// It also frees each batch's events and messages once the loop is done with them
/// ([`ParserWork::Free`]): most events were allocated on this thread, where freeing them is
/// cheaper, and the loop has better to do (dropping the events and librdkafka's messages
/// was about 2.5% of the samples of a whole-case run, on the loop's thread). It frees them
/// when no batch waits to be parsed, so that freeing never holds up the next batch's
/// parsing, and keeps the messages' emptied vectors for the loop's next batches (allocated
/// anew for each batch, their hundreds of KiB came as fresh pages to zero).
struct Parser {
    tx: Option<std::sync::mpsc::Sender<ParserWork>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Emptied vectors of messages, for the loop's next batches (at most [`SPARE_VECTORS`]).
    spare: Arc<Mutex<Vec<Vec<Msg>>>>,
}

/// How many emptied vectors of messages the [`Parser`] keeps: the loop takes one for a batch
/// while the batch before is still being freed.
const SPARE_VECTORS: usize = 2;

/// How many applied batches the [`Parser`]'s thread holds at most before freeing them,
/// idle or not (it is idle between batches but for the rarest scheduling).
const GARBAGE_MAX: usize = 4;

/// What the loop hands to the [`Parser`]'s thread.
enum ParserWork {
    Parse(Arc<ParseJob>),
    /// A batch, applied: its events and messages to be freed.
    Free(EventChunks, Messages),
}

/// Frees the batches handed over ([`ParserWork::Free`]), their events and messages; the
/// messages' vectors are kept, emptied, in `spare`.
fn free_batches(garbage: &mut Vec<(EventChunks, Messages)>, spare: &Mutex<Vec<Vec<Msg>>>) {
    for (events, messages) in garbage.drain(..) {
        drop(events);
        // Not held elsewhere once its parse job is done (this thread's own copy went as it
        // finished the job, before this).
        if let Some(messages) = emptied(messages)
            && let Ok(mut spare) = spare.lock()
            && spare.len() < SPARE_VECTORS
        {
            spare.push(messages);
        }
    }
}

/// A batch's vector of messages, emptied, when no one else holds the batch (else `None`:
/// it is freed by whoever holds it last). The messages go before the consumer they came
/// from (the batch's `_consumer`, dropped after them).
fn emptied(messages: Messages) -> Option<Vec<Msg>> {
    let Batch {
        mut messages,
        _consumer,
    } = Arc::try_unwrap(messages).ok()?;
    messages.clear();
    Some(messages)
}

impl Parser {
    fn start() -> std::io::Result<Parser> {
        let (tx, work) = std::sync::mpsc::channel::<ParserWork>();
        let spare = Arc::new(Mutex::new(Vec::new()));
        let kept = spare.clone();
        let thread = std::thread::Builder::new()
            .name("redlight-parse".into())
            .spawn(move || {
                let mut garbage: Vec<(EventChunks, Messages)> = Vec::new();
                loop {
                    let next = if garbage.is_empty() {
                        work.recv().ok()
                    } else if garbage.len() >= GARBAGE_MAX {
                        // Never idle between batches for a while: freed now all the same.
                        free_batches(&mut garbage, &kept);
                        continue;
                    } else {
                        match work.try_recv() {
                            Ok(w) => Some(w),
                            Err(std::sync::mpsc::TryRecvError::Empty) => {
                                free_batches(&mut garbage, &kept);
                                continue;
                            }
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
                        }
                    };
                    match next {
                        Some(ParserWork::Parse(job)) => job.work(),
                        Some(ParserWork::Free(events, messages)) => {
                            garbage.push((events, messages));
                        }
                        None => return,
                    }
                }
            })?;
        Ok(Parser {
            tx: Some(tx),
            thread: Some(thread),
            spare,
        })
    }

    /// Hands a batch's events and messages to the thread to free (freed here should it
    /// have gone).
    fn free(&self, events: ParsedEvents, messages: Messages) {
        let ParsedEvents { job, chunks } = events;
        // The job's hold on the messages goes now, so that the thread finds them held by
        // no one else.
        drop(job);
        if let Some(tx) = &self.tx {
            let _ = tx.send(ParserWork::Free(chunks, messages));
        }
    }

    /// An emptied vector of messages kept from an earlier batch, if there is one.
    fn spare_messages(&self) -> Option<Vec<Msg>> {
        self.spare.lock().ok()?.pop()
    }
}

impl Drop for Parser {
    fn drop(&mut self) {
        self.tx = None; // ends the thread's loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn parse(m: &Msg) -> ParsedMsg {
    let parsed = Event::parse(m.payload().unwrap_or(&[]));
    let keyed = match &parsed {
        Ok(ev) => m.key() == Some(ev.subject.as_bytes()),
        Err(_) => true,
    };
    (parsed, keyed)
}

/// A batch's events as the loop applies them, in the messages' order. A batch of at least
/// [`PARSE_SPLIT`] is parsed a chunk at a time by the [`Parser`]'s thread, which runs
/// ahead, and the loop applies each chunk as soon as it is done: parsing is about a fifth
/// of the loop's work, and when the loop parsed half of each batch itself before applying
/// it, the other thread's core was idle while the loop applied. Smaller batches are
/// parsed here at once.
struct ParsedEvents {
    /// `None`: the batch was parsed at once, its events the one chunk.
    job: Option<Arc<ParseJob>>,
    /// Each chunk's events once taken.
    chunks: EventChunks,
}

/// A batch's events by chunk ([`ParsedEvents`]). Cells, not a growing vector: the loop keeps
/// references to earlier events (its counts by type) while it takes later chunks.
type EventChunks = Vec<std::cell::OnceCell<Vec<ParsedMsg>>>;

impl ParsedEvents {
    /// Starts parsing `messages`.
    fn start(messages: &Messages, parser: Option<&Parser>) -> Self {
        match parser {
            Some(Parser { tx: Some(tx), .. }) if messages.len() >= PARSE_SPLIT => {
                let job = ParseJob::new(messages);
                // Should the thread have gone, the loop takes every chunk itself.
                let _ = tx.send(ParserWork::Parse(job.clone()));
                ParsedEvents {
                    chunks: (0..job.count).map(|_| std::cell::OnceCell::new()).collect(),
                    job: Some(job),
                }
            }
            _ => ParsedEvents {
                job: None,
                chunks: vec![std::cell::OnceCell::from(
                    messages.iter().map(parse).collect::<Vec<_>>(),
                )],
            },
        }
    }

    /// The `i`th message's event, its chunk taken first if it has not been (waiting for
    /// the parser's thread, or parsing it here).
    fn get(&self, i: usize) -> Option<&ParsedMsg> {
        match &self.job {
            None => self.chunks.first()?.get()?.get(i),
            Some(job) => {
                let c = i / PARSE_CHUNK;
                self.chunks
                    .get(c)?
                    .get_or_init(|| job.take(c))
                    .get(i % PARSE_CHUNK)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    #[test]
    fn the_lights_are_said_to_be_behind_after_20_s_without_brokers_or_from_10000_unread() {
        let ago = |s: u64| std::time::Instant::now().checked_sub(Duration::from_secs(s));
        let state = |down: Option<std::time::Instant>, lag: i64| InputState {
            brokers_down_since: down,
            lag,
        };
        assert_eq!(state(None, 0).notice(), None);
        assert_eq!(state(None, 9_999).notice(), None);
        assert_eq!(
            state(None, 10_000).notice(),
            Some(InputNotice::Behind(10_000))
        );
        // A broker's restart or a reconnection: not yet.
        assert_eq!(state(ago(5), 0).notice(), None);
        assert_eq!(
            state(ago(5), 50_000).notice(),
            Some(InputNotice::Behind(50_000))
        );
        match state(ago(25), 50_000).notice() {
            Some(InputNotice::BrokersDown(d)) => assert!(d >= Duration::from_secs(25), "{d:?}"),
            other => panic!("the brokers down 25 s come first: {other:?}"),
        }
    }

    fn message(offset: i64, payload: &str) -> Msg {
        Msg::copy(
            &OwnedMessage::new(
                Some(payload.as_bytes().to_vec()),
                None,
                "events".into(),
                Timestamp::NotAvailable,
                0,
                offset,
                None,
            ),
            None,
        )
    }

    #[test]
    fn the_consumers_copy_of_the_contexts_error_is_not_a_second_error() {
        let mut log = KafkaErrorLog::default();
        let t0 = Instant::now();
        let down = KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown);
        let other = KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition);
        // The context was given AllBrokersDown: the poll's copy of it is the echo, once.
        log.echo = Some((Some(RDKafkaErrorCode::AllBrokersDown), t0));
        assert!(log.is_echo(&down, t0));
        assert!(
            !log.is_echo(&down, t0),
            "taken: a second one is an error of its own"
        );
        // An error of another code after it is not an echo, nor one long after.
        log.echo = Some((Some(RDKafkaErrorCode::AllBrokersDown), t0));
        assert!(!log.is_echo(&other, t0));
        log.echo = Some((Some(RDKafkaErrorCode::AllBrokersDown), t0));
        assert!(!log.is_echo(&down, t0 + Duration::from_secs(5)));
        // The context's error and the poll's are one kind for the log: said once a minute.
        let global = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        assert_eq!(log.say(&global, t0), Some(0));
        assert_eq!(log.say(&down, t0 + Duration::from_secs(1)), None);
        assert_eq!(log.say(&other, t0 + Duration::from_secs(1)), Some(0));
        // An error without a code is one kind per variant, whatever its text.
        let refused = |why: &str| KafkaError::Subscription(why.to_string());
        assert_eq!(log.say(&refused("topic a"), t0), Some(0));
        assert_eq!(log.say(&refused("topic b"), t0), None);
    }

    #[test]
    fn the_offset_of_a_batch_that_cannot_be_decompressed_is_read_from_the_reason() {
        let reason = "Decompression (codec 0x1) of message at 10 of 647 bytes failed: \
                      Local: Invalid compressed data";
        assert_eq!(unreadable_offset(reason), Some(10));
        assert_eq!(
            unreadable_offset("Decompression of message at 9876543210"),
            Some(9_876_543_210)
        );
        assert_eq!(unreadable_offset("Decompression failed"), None);
        assert_eq!(unreadable_offset("Decompression of message at x"), None);
    }

    /// A fresh store in a directory of its own (removed first).
    fn dead_letter_store(name: &str) -> (std::path::PathBuf, Store) {
        let dir =
            std::env::temp_dir().join(format!("redlight-daemon-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).expect("open");
        (dir, store)
    }

    /// A refused message of `events`, as the store keeps it.
    fn dead_letter_row(
        partition: u32,
        offset: i64,
        key: &[u8],
        payload: &[u8],
        headers: Vec<(String, Option<serde_bytes::ByteBuf>)>,
    ) -> Vec<u8> {
        rmp_serde::to_vec_named(&DeadLetter {
            key: Some(key.to_vec()),
            payload: Some(payload.to_vec()),
            headers,
            reason: "not valid JSON".into(),
            code: "not_json".into(),
            topic: "events".into(),
            partition,
            offset,
        })
        .expect("encode")
    }

    #[test]
    fn kept_dead_letters_are_listed_from_the_first_with_what_the_brokers_said() {
        let (dir, store) = dead_letter_store("dead-letters");
        let letter = |offset: i64, key: &str, payload: &[u8]| {
            dead_letter_row(2, offset, key.as_bytes(), payload, Vec::new())
        };
        let mut b = WriteBatch::default();
        b.offsets.push(("events".into(), 2, 12));
        b.dead_letters = vec![
            letter(7, "A-1", b"{oops\nsecond line"),
            b"not MessagePack".to_vec(),
            letter(11, "A-2", &[0xff, b'x']),
        ];
        store.commit(&b).expect("commit");
        let tz = chrono_tz::Asia::Shanghai;
        let tries = DeadLetterTries::default();
        let refusal: Arc<str> = Arc::from("Broker: Message size too large");
        tries.refused(0, &refusal, 1_764_900_000_000);
        tries.refused(0, &refusal, 1_764_900_060_000);

        let (rows, more) = list_dead_letters(&store, None, 10, Some(&tries), tz).expect("list");
        assert!(!more);
        let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [0, 1, 2], "from the first, numbered from 0");
        let first = &rows[0];
        assert_eq!(
            (first.topic.as_str(), first.partition, first.offset),
            ("events", 2, 7)
        );
        assert_eq!(
            (first.code.as_str(), first.key.as_deref()),
            ("not_json", Some("A-1"))
        );
        assert_eq!(first.bytes, 17);
        assert_eq!(first.payload_excerpt.as_deref(), Some("{oops second line"));
        assert_eq!(first.attempts, 2);
        assert_eq!(first.last_error.as_deref(), Some(&*refusal));
        assert_eq!(
            first.last_attempt.as_deref(),
            Some("2025-12-05T10:01:00+08:00")
        );
        assert_eq!(
            rows[1].code, "unreadable",
            "a damaged row is listed, not hidden"
        );
        assert_eq!((rows[2].offset, rows[2].attempts), (11, 0));
        assert_eq!(rows[2].payload_excerpt.as_deref(), Some("\u{fffd}x"));

        let (page, more) = list_dead_letters(&store, None, 2, None, tz).expect("list");
        assert_eq!((page.len(), more), (2, true));
        let (page, more) = list_dead_letters(&store, Some(1), 2, None, tz).expect("list");
        assert_eq!((page.len(), page[0].seq, more), (1, 2, false));
        let (page, more) = list_dead_letters(&store, Some(u64::MAX), 2, None, tz).expect("list");
        assert!(page.is_empty() && !more);

        tries.gone(&[0]);
        let (rows, _) = list_dead_letters(&store, None, 1, Some(&tries), tz).expect("list");
        assert_eq!((rows[0].attempts, rows[0].last_error.as_deref()), (0, None));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn compacted_or_short_lived_input_topics_are_named_as_risks() {
        // Kafka's defaults: nothing to say.
        assert!(input_topic_risks(Some("delete"), Some("604800000")).is_empty());
        assert!(input_topic_risks(Some("delete"), Some("-1")).is_empty());
        assert!(input_topic_risks(None, None).is_empty());
        let compact = input_topic_risks(Some("compact"), Some("604800000"));
        assert_eq!(compact.len(), 1, "{compact:?}");
        assert!(
            compact[0].starts_with("cleanup.policy=compact:"),
            "{compact:?}"
        );
        let both = input_topic_risks(Some("compact,delete"), Some("3600000"));
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(
            both[0].starts_with("cleanup.policy=compact,delete:"),
            "{both:?}"
        );
        assert!(
            both[1].starts_with("retention.ms=3600000 (1.0 hours)"),
            "{both:?}"
        );
        // A day short of the default is short; the default itself is not.
        assert_eq!(input_topic_risks(None, Some("518400000")).len(), 1);
        assert!(input_topic_risks(None, Some("not a number")).is_empty());
    }

    #[test]
    fn the_rule_order_is_kept_in_the_store() {
        let (dir, store) = dead_letter_store("rule-order");
        assert_eq!(store.rule_order().expect("read"), None, "a new store");
        assert_eq!(store.type_order().expect("read"), None, "a new store");
        let ids = vec!["xk.decision".to_string(), "aq.report".to_string()];
        let types = vec!["b.two".to_string(), "a.one".to_string()];
        store.record_order(&ids, &types).expect("record");
        drop(store);
        let store = Store::open(&dir).expect("reopen");
        assert_eq!(store.rule_order().expect("read"), Some(ids));
        assert_eq!(store.type_order().expect("read"), Some(types));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_dead_letter_dropped_by_hand_is_given_back_whole_and_gone_for_good() {
        use base64::Engine as _;
        let (dir, store) = dead_letter_store("drop-dead-letters");
        let payload: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let letter = |offset: i64, key: &[u8], payload: &[u8]| {
            let origin = serde_bytes::ByteBuf::from(b"B-1".to_vec());
            let headers = vec![("origin".into(), Some(origin)), ("flag".into(), None)];
            dead_letter_row(1, offset, key, payload, headers)
        };
        let mut b = WriteBatch::default();
        b.offsets.push(("events".into(), 1, 30));
        b.dead_letters = vec![
            letter(20, b"B-1", &payload),
            b"not MessagePack".to_vec(),
            letter(29, b"B-2", b"{"),
        ];
        store.commit(&b).expect("commit");
        let tries = DeadLetterTries::default();
        let refusal: Arc<str> = Arc::from("Broker: Message size too large");
        tries.refused(0, &refusal, 1_764_900_000_000);

        let (dropped, missing) = drop_dead_letters(&store, &[0, 1, 7], Some(&tries)).expect("drop");
        assert_eq!(missing, [7], "a number the store does not hold is said");
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let first = &dropped[0];
        assert_eq!(
            (
                first.seq,
                first.topic.as_str(),
                first.partition,
                first.offset
            ),
            (0, "events", 1, 20)
        );
        assert_eq!(
            first.payload_base64.as_deref(),
            Some(b64(&payload).as_str()),
            "the payload whole, not an excerpt"
        );
        assert_eq!(first.key.as_deref(), Some("B-1"));
        assert_eq!(first.key_base64.as_deref(), Some(b64(b"B-1").as_str()));
        assert_eq!(
            first.headers,
            [
                ("origin".to_string(), Some(b64(b"B-1"))),
                ("flag".to_string(), None)
            ]
        );
        assert_eq!(
            (dropped[1].seq, dropped[1].code.as_str()),
            (1, "unreadable"),
            "a damaged row is dropped too, and said"
        );
        assert!(tries.lock().is_empty(), "the sender's count forgets it");

        let tz = chrono_tz::Asia::Shanghai;
        let (rows, _) = list_dead_letters(&store, None, 10, None, tz).expect("list");
        let left: Vec<(u64, i64)> = rows.iter().map(|r| (r.seq, r.offset)).collect();
        assert_eq!(left, [(2, 29)], "only the one not dropped waits");
        assert_eq!(store.dead_letter_count().expect("count"), 1);
        drop(store);
        // Durable: the store opened again holds no more of them.
        let store = Store::open(&dir).expect("reopen");
        assert_eq!(store.dead_letter_count().expect("count"), 1);
        let (again, missing) = drop_dead_letters(&store, &[0], None).expect("drop");
        assert!(again.is_empty() && missing == [0]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_copied_message_keeps_its_key_payload_and_place() {
        let owned = |key: Option<&str>, payload: Option<&str>, topic: &str| {
            OwnedMessage::new(
                payload.map(|p| p.as_bytes().to_vec()),
                key.map(|k| k.as_bytes().to_vec()),
                topic.into(),
                Timestamp::NotAvailable,
                3,
                42,
                None,
            )
        };
        let cases = [
            (Some("C-1"), Some("{}")),
            (None, Some("{}")),
            (Some("C-1"), None),
            (None, None),
            (Some(""), Some("")),
        ];
        let mut previous: Option<Msg> = None;
        for (key, payload) in cases {
            let m = Msg::copy(&owned(key, payload, "events"), previous.as_ref());
            assert_eq!(m.key(), key.map(str::as_bytes), "{key:?} {payload:?}");
            assert_eq!(
                m.payload(),
                payload.map(str::as_bytes),
                "{key:?} {payload:?}"
            );
            assert_eq!((m.topic(), m.partition(), m.offset()), ("events", 3, 42));
            if let Some(p) = &previous {
                assert!(Arc::ptr_eq(&p.topic, &m.topic), "one topic, one name");
            }
            previous = Some(m);
        }
        let other = Msg::copy(&owned(None, None, "other"), previous.as_ref());
        assert_eq!(other.topic(), "other");

        // Whether the key is the event's subject (the case id) is said with its parsing.
        let event = r#"{"specversion":"1.0","id":"e","source":"/s","type":"approval.accepted","time":"2026-11-02T09:00:00+08:00","subject":"C-1"}"#;
        for (key, keyed) in [(Some("C-1"), true), (Some("C-2"), false), (None, false)] {
            let (parsed, said) = parse(&Msg::copy(&owned(key, Some(event), "events"), None));
            assert!(parsed.is_ok(), "{parsed:?}");
            assert_eq!(said, keyed, "key {key:?}");
        }
        let (parsed, said) = parse(&Msg::copy(&owned(Some("C-2"), Some("{}"), "events"), None));
        assert!(
            parsed.is_err() && said,
            "no event: nothing to say of its key"
        );
    }

    /// A batch's events as the loop sees them, every chunk ready.
    fn parse_all(messages: &Messages, parser: Option<&Parser>) -> Vec<ParsedMsg> {
        let events = ParsedEvents::start(messages, parser);
        let all: Vec<ParsedMsg> = (0..messages.len())
            .map(|i| events.get(i).cloned().expect("every message has its event"))
            .collect();
        assert!(
            events.get(messages.len()).is_none(),
            "no event past the last"
        );
        all
    }

    /// The parser's thread frees a batch handed over, and keeps its vector of messages for
    /// the loop's next batch: nothing else may hold the messages then (their parse job).
    #[test]
    fn a_batch_handed_over_is_freed_and_its_vector_kept() {
        let parser = Parser::start().expect("parser thread");
        let messages: Vec<_> = (0..1000i64)
            .map(|i| {
                message(
                    i,
                    &format!(
                        r#"{{"specversion":"1.0","id":"e{i}","source":"/s","type":"approval.accepted","time":"2026-11-02T09:00:00+08:00","subject":"C{i}"}}"#
                    ),
                )
            })
            .collect();
        let messages = Arc::new(Batch {
            messages,
            _consumer: None,
        });
        let events = ParsedEvents::start(&messages, Some(&parser));
        let last = events.get(999).expect("the last event");
        assert_eq!(last.0.as_ref().map(|ev| ev.subject.as_str()), Ok("C999"));
        let held = Arc::downgrade(&messages);
        parser.free(events, messages);
        // The parser's thread frees the messages once it is idle, and keeps their vector.
        let deadline = Instant::now() + Duration::from_secs(10);
        while held.strong_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(held.strong_count(), 0, "the messages are held still");
        let spare = parser.spare_messages().expect("their vector kept");
        assert!(
            spare.is_empty() && spare.capacity() >= 1000,
            "{}",
            spare.capacity()
        );
        assert!(
            parser.spare_messages().is_none(),
            "one vector for one batch"
        );
    }

    #[test]
    fn a_big_batch_is_parsed_in_order_with_each_rejection_in_its_place() {
        let parser = Parser::start().expect("parser thread");
        for n in [3, PARSE_SPLIT, 1001] {
            let messages: Vec<_> = (0..n as i64)
                .map(|i| match i % 7 {
                    3 => message(i, "not json"),
                    5 => message(i, r#"{"specversion":"1.0","id":"x","source":"/s","type":"approval.accepted","time":"yesterday","subject":"C"}"#),
                    _ => message(
                        i,
                        &format!(
                            r#"{{"specversion":"1.0","id":"e{i}","source":"/s","type":"approval.accepted","time":"2026-11-02T09:00:00+08:00","subject":"C{i}","data":{{}}}}"#
                        ),
                    ),
                })
                .collect();
            let messages = Arc::new(Batch {
                messages,
                _consumer: None,
            });
            let parsed = parse_all(&messages, Some(&parser));
            assert_eq!(parsed.len(), n, "batch of {n}");
            assert_eq!(
                parse_all(&messages, None),
                parsed,
                "batch of {n}, parsed by the loop alone"
            );
            // The parser's thread alone (the loop takes no chunk): every chunk, in order.
            let job = ParseJob::new(&messages);
            if let Some(tx) = &parser.tx {
                tx.send(ParserWork::Parse(job.clone()))
                    .expect("parser thread running");
            }
            while job.next.load(Ordering::Relaxed) < job.count {
                std::thread::yield_now();
            }
            let alone: Vec<ParsedMsg> = (0..job.count).flat_map(|c| job.take(c)).collect();
            assert_eq!(alone, parsed, "batch of {n}, parsed by the parser's thread");
            // The loop alone, taking each chunk as it needs it (no thread to hand it to).
            let job = ParseJob::new(&messages);
            let taken: Vec<ParsedMsg> = (0..job.count).flat_map(|c| job.take(c)).collect();
            assert_eq!(taken, parsed, "batch of {n}, each chunk taken by the loop");
            for (i, (p, keyed)) in parsed.iter().enumerate() {
                // These messages have no key: only a message without an event passes.
                assert_eq!(*keyed, p.is_err(), "{i} of {n}: keyed");
                match (i % 7, p) {
                    (3, Err(e)) => assert_eq!(e.reason_code(), "not_json", "{i}: {e}"),
                    (5, Err(e)) => assert_eq!(e.reason_code(), "bad_time", "{i}: {e}"),
                    (3 | 5, Ok(ev)) => panic!("{i} of {n}: parsed {ev:?}"),
                    (_, Ok(ev)) => assert_eq!(ev.subject, format!("C{i}"), "{i} of {n}"),
                    (_, Err(e)) => panic!("{i} of {n}: {e}"),
                }
            }
        }
    }
}
