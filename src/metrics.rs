//! Prometheus metrics: prefix `redlight_`, `_total` counters, `_seconds` histograms.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the daemon exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Events consumed, by topic and type.
    pub events_consumed: IntCounterVec,
    /// Messages rejected (and copied to the dead-letter topic), by reason.
    pub events_rejected: IntCounterVec,
    /// Events whose id was already applied to their case.
    pub events_duplicate: IntCounter,
    pub events_key_mismatch: IntCounter,
    pub cases_moved: IntCounter,
    pub events_unknown_type: IntCounter,
    /// Events the broker deleted before redlight read them (see `Loop::load`).
    pub events_lost: IntCounter,
    pub logs_replaced: IntCounter,
    /// Alerts raised, by level, status and rule.
    pub alerts: IntCounterVec,
    /// Clocks that needed a calendar year without data.
    pub calendar_errors: IntCounter,
    pub data_problems: IntCounter,
    /// Messages copied to the dead-letter topic.
    pub dead_letters: IntCounter,
    pub dead_letters_pending: IntGauge,
    /// Partitions stopped at a batch the broker holds that cannot be decompressed.
    pub partitions_unreadable: IntGauge,
    /// Kafka client errors (broker down, …): the consumer recovers by itself.
    pub kafka_errors: IntCounter,
    /// Time to make one batch durable (store transaction).
    pub commit_seconds: Histogram,
    /// Changed cases and alerts in the store's journal (held in memory too) until the next
    /// checkpoint (`src/store.rs`).
    pub journal_entries: IntGauge,
    pub journal_bytes: IntGauge,
    /// Time of one store checkpoint (on a thread of its own, beside the batches' commits).
    pub checkpoint_seconds: Histogram,
    /// The store's files' sizes, by file name, and the space left on their file system
    /// (set at each scrape): the store grows with the alerts it keeps, and a full disk
    /// stops the daemon.
    pub store_file_bytes: IntGaugeVec,
    pub store_disk_free_bytes: IntGauge,
    /// The last backup written (`POST /api/v1/backup`, `redlight backup`), as a Unix time,
    /// and the backups by result.
    pub backup_last_success: IntGauge,
    pub backups: IntCounterVec,
    /// Open cases held in memory.
    pub cases: IntGauge,
    /// Partitions assigned to this instance.
    pub partitions: IntGauge,
    /// Consumer lag by partition (high watermark minus next offset).
    pub lag: IntGaugeVec,
    /// The next offset to consume, per partition, as durable in the store.
    pub durable_offset: IntGaugeVec,
    /// The last day the calendar data covers, as a Unix timestamp.
    pub calendar_last_day: IntGauge,
    /// Constant 1 with the version as a label.
    pub build_info: IntGaugeVec,
    /// Time of one `Engine::apply` (one event).
    pub engine_apply_seconds: Histogram,
    /// Time of one `Engine::advance` or `advance_before` (firing the timers that fell due).
    pub engine_advance_seconds: Histogram,
    /// Open cases by light, department and rule: a case counts once for every rule with a
    /// running clock, a watched duty or an unresolved violation in it, under that rule's
    /// light. Recomputed from the store with the board (see `src/api.rs`).
    pub open_cases: IntGaugeVec,
    /// Open cases by department and their overall light (each case once).
    pub case_lights: IntGaugeVec,
    /// 1 when `/readyz` would answer 200, else 0 (updated on every scrape).
    pub ready: IntGauge,
    /// Time to recompute the board's counts from the store.
    pub view_refresh_seconds: Histogram,
    /// HTTP requests by route and status code (401s show token problems).
    pub http_requests: IntCounterVec,
    /// Delivery attempts by receiver and outcome (`delivered`, `retry`, `throttled`,
    /// `refused`) and deliveries that became dead letters (`dead`).
    pub deliveries: IntCounterVec,
    /// From an alert being stored to its delivery being acknowledged, by receiver.
    pub delivery_latency: HistogramVec,
    /// Deliveries waiting in the outbox, by receiver.
    pub outbox_depth: IntGaugeVec,
    /// Deliveries in the dead letters (refused or out of retries), by receiver.
    pub delivery_dead_letters: IntGaugeVec,
    /// Escalation steps waiting for their time (cancelled if the red is resolved first).
    pub escalations_pending: IntGauge,
    /// Reds escalated, by escalation step.
    pub escalations: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            events_consumed: IntCounterVec::new(
                Opts::new(
                    "redlight_events_consumed_total",
                    "Events consumed, by topic and type.",
                ),
                &["topic", "type"],
            )
            .expect("valid metric"),
            events_rejected: IntCounterVec::new(
                Opts::new(
                    "redlight_events_rejected_total",
                    "Messages rejected and copied to the dead-letter topic, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            events_duplicate: IntCounter::new(
                "redlight_events_duplicate_total",
                "Events whose id was already applied to their case.",
            )
            .expect("valid metric"),
            events_key_mismatch: IntCounter::new(
                "redlight_events_key_mismatch_total",
                "Events whose Kafka message key is missing or is not their subject (the case \
                 id): a case's events may then be split across partitions, each seeing part \
                 of the case.",
            )
            .expect("valid metric"),
            cases_moved: IntCounter::new(
                "redlight_cases_moved_total",
                "Cases moved to the partition their event arrived on from another partition \
                 that held them: partitions were added to the topic, a producer keys \
                 messages otherwise than by case id, or a case's events come on more than \
                 one input topic.",
            )
            .expect("valid metric"),
            events_unknown_type: IntCounter::new(
                "redlight_events_unknown_type_total",
                "Events of a type no rule pack names, ignored. Not labelled by type: a \
                 producer could send any number of them; the log names the type.",
            )
            .expect("valid metric"),
            events_lost: IntCounter::new(
                "redlight_events_lost_total",
                "Events the broker deleted (its retention) before redlight read them: a \
                 partition assigned whose log begins after the offset the store holds.",
            )
            .expect("valid metric"),
            logs_replaced: IntCounter::new(
                "redlight_partition_logs_replaced_total",
                "Partitions assigned whose log ends before the offset the store holds: not \
                 the log redlight read (the topic deleted and created again, moved to \
                 another cluster, or cut short by an unclean leader election). Read again \
                 from the log's start.",
            )
            .expect("valid metric"),
            alerts: IntCounterVec::new(
                Opts::new(
                    "redlight_alerts_total",
                    "Alerts raised, by level, status and rule.",
                ),
                &["level", "status", "rule"],
            )
            .expect("valid metric"),
            calendar_errors: IntCounter::new(
                "redlight_calendar_errors_total",
                "Deadlines left pending, and events rejected, for want of a calendar year's data.",
            )
            .expect("valid metric"),
            data_problems: IntCounter::new(
                "redlight_data_problems_total",
                "Events applied with a problem in what the rules read of them (a condition that \
                 failed to evaluate, an extension or a due time that is not one: the rule \
                 skipped for that event; a clock's start after its stop: events out of order).",
            )
            .expect("valid metric"),
            dead_letters: IntCounter::new(
                "redlight_dead_letters_total",
                "Messages copied to the dead-letter topic.",
            )
            .expect("valid metric"),
            dead_letters_pending: IntGauge::new(
                "redlight_dead_letters_pending",
                "Refused messages kept in the store that the dead-letter topic does not have \
                 yet (the broker away, the topic missing, or a dead letter it refuses).",
            )
            .expect("valid metric"),
            partitions_unreadable: IntGauge::new(
                "redlight_partitions_unreadable",
                "Partitions stopped at a batch the broker holds that cannot be decompressed \
                 (damaged on its disk): nothing from it on is read until it is repaired or \
                 its records deleted; the log names the partition and the offset.",
            )
            .expect("valid metric"),
            kafka_errors: IntCounter::new(
                "redlight_kafka_errors_total",
                "Kafka client errors, each once (the log says each kind at most once a minute); the consumer recovers by itself.",
            )
            .expect("valid metric"),
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "redlight_store_commit_seconds",
                    "Time to make one batch durable in the store.",
                )
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 14).expect("buckets")),
            )
            .expect("valid metric"),
            journal_entries: IntGauge::new(
                "redlight_store_journal_entries",
                "Changed cases and alerts in the store's journal, held in memory until the next checkpoint.",
            )
            .expect("valid metric"),
            journal_bytes: IntGauge::new(
                "redlight_store_journal_bytes",
                "About the bytes of memory the store's journal holds until the next checkpoint (its cases packed, their keys, the alerts' index).",
            )
            .expect("valid metric"),
            store_file_bytes: IntGaugeVec::new(
                Opts::new(
                    "redlight_store_file_bytes",
                    "Size of each of the store's files (redlight.redb: alerts, journal, outbox; cases.redb: checkpoints). It grows with the alerts the store keeps.",
                ),
                &["file"],
            )
            .expect("valid metric"),
            store_disk_free_bytes: IntGauge::new(
                "redlight_store_disk_free_bytes",
                "Space left for the store on the file system of store.data_dir; a full disk stops the daemon (exit 2) until there is room.",
            )
            .expect("valid metric"),
            backup_last_success: IntGauge::new(
                "redlight_store_backup_last_success_timestamp_seconds",
                "When this daemon last wrote a backup of its store (Unix time); 0 until it has written one.",
            )
            .expect("valid metric"),
            backups: IntCounterVec::new(
                Opts::new(
                    "redlight_store_backups_total",
                    "Backups of the store this daemon was asked for, by result (ok, failed).",
                ),
                &["result"],
            )
            .expect("valid metric"),
            checkpoint_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "redlight_store_checkpoint_seconds",
                    "Time of one store checkpoint (the journal written as a sorted run of cases.redb, beside the batches' commits).",
                )
                .buckets(prometheus::exponential_buckets(0.01, 2.0, 12).expect("buckets")),
            )
            .expect("valid metric"),
            cases: IntGauge::new("redlight_cases", "Cases held in memory.").expect("valid metric"),
            partitions: IntGauge::new(
                "redlight_partitions_assigned",
                "Kafka partitions assigned to this instance.",
            )
            .expect("valid metric"),
            lag: IntGaugeVec::new(
                Opts::new(
                    "redlight_consumer_lag",
                    "Consumer lag in messages, by partition.",
                ),
                &["topic", "partition"],
            )
            .expect("valid metric"),
            durable_offset: IntGaugeVec::new(
                Opts::new(
                    "redlight_durable_offset",
                    "Next offset to consume per partition, durable in the store.",
                ),
                &["topic", "partition"],
            )
            .expect("valid metric"),
            calendar_last_day: IntGauge::new(
                "redlight_calendar_last_day_timestamp_seconds",
                "The last day the working-calendar data covers (Unix time of its 00:00 UTC).",
            )
            .expect("valid metric"),
            build_info: IntGaugeVec::new(
                Opts::new("redlight_build_info", "Build information; always 1."),
                &["version"],
            )
            .expect("valid metric"),
            engine_apply_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "redlight_engine_apply_seconds",
                    "Time the engine took to apply one event (the events at offsets that are multiples of 8).",
                )
                .buckets(prometheus::exponential_buckets(1e-6, 4.0, 11).expect("buckets")),
            )
            .expect("valid metric"),
            engine_advance_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "redlight_engine_advance_seconds",
                    "Time the engine took to advance its clock and fire the timers due.",
                )
                .buckets(prometheus::exponential_buckets(1e-6, 4.0, 11).expect("buckets")),
            )
            .expect("valid metric"),
            open_cases: IntGaugeVec::new(
                Opts::new(
                    "redlight_open_cases",
                    "Open cases by light, department and rule (a case counts once per rule open in it).",
                ),
                &["light", "department", "rule"],
            )
            .expect("valid metric"),
            case_lights: IntGaugeVec::new(
                Opts::new(
                    "redlight_case_lights",
                    "Open cases by department and overall light (each case once).",
                ),
                &["light", "department"],
            )
            .expect("valid metric"),
            ready: IntGauge::new(
                "redlight_ready",
                "1 when /readyz answers 200 (store restored, partitions assigned, calendar covers today).",
            )
            .expect("valid metric"),
            view_refresh_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "redlight_view_refresh_seconds",
                    "Time to recompute the board's counts from the store.",
                )
                .buckets(prometheus::exponential_buckets(0.001, 4.0, 9).expect("buckets")),
            )
            .expect("valid metric"),
            http_requests: IntCounterVec::new(
                Opts::new(
                    "redlight_http_requests_total",
                    "HTTP requests by route and status code.",
                ),
                &["route", "code"],
            )
            .expect("valid metric"),
            deliveries: IntCounterVec::new(
                Opts::new(
                    "redlight_deliveries_total",
                    "Alert delivery attempts by receiver and outcome (delivered, retry, throttled, refused), and dead letters (dead).",
                ),
                &["receiver", "outcome"],
            )
            .expect("valid metric"),
            delivery_latency: HistogramVec::new(
                HistogramOpts::new(
                    "redlight_delivery_latency_seconds",
                    "From an alert being stored to its delivery being acknowledged by the receiver.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 900.0, 3600.0, 14400.0,
                ]),
                &["receiver"],
            )
            .expect("valid metric"),
            outbox_depth: IntGaugeVec::new(
                Opts::new(
                    "redlight_outbox_depth",
                    "Alert deliveries waiting in the outbox, by receiver.",
                ),
                &["receiver"],
            )
            .expect("valid metric"),
            delivery_dead_letters: IntGaugeVec::new(
                Opts::new(
                    "redlight_delivery_dead_letters",
                    "Alert deliveries in the dead letters (refused or out of retries), by receiver.",
                ),
                &["receiver"],
            )
            .expect("valid metric"),
            escalations_pending: IntGauge::new(
                "redlight_escalations_pending",
                "Escalation steps waiting for their time.",
            )
            .expect("valid metric"),
            escalations: IntCounterVec::new(
                Opts::new(
                    "redlight_escalations_total",
                    "Red alerts escalated, by escalation step.",
                ),
                &["step"],
            )
            .expect("valid metric"),
            registry,
        };
        for c in [
            Box::new(m.events_consumed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.events_rejected.clone()),
            Box::new(m.events_duplicate.clone()),
            Box::new(m.events_key_mismatch.clone()),
            Box::new(m.cases_moved.clone()),
            Box::new(m.events_unknown_type.clone()),
            Box::new(m.events_lost.clone()),
            Box::new(m.logs_replaced.clone()),
            Box::new(m.alerts.clone()),
            Box::new(m.calendar_errors.clone()),
            Box::new(m.data_problems.clone()),
            Box::new(m.dead_letters.clone()),
            Box::new(m.dead_letters_pending.clone()),
            Box::new(m.partitions_unreadable.clone()),
            Box::new(m.kafka_errors.clone()),
            Box::new(m.commit_seconds.clone()),
            Box::new(m.journal_entries.clone()),
            Box::new(m.journal_bytes.clone()),
            Box::new(m.checkpoint_seconds.clone()),
            Box::new(m.store_file_bytes.clone()),
            Box::new(m.store_disk_free_bytes.clone()),
            Box::new(m.backups.clone()),
            Box::new(m.backup_last_success.clone()),
            Box::new(m.cases.clone()),
            Box::new(m.partitions.clone()),
            Box::new(m.lag.clone()),
            Box::new(m.durable_offset.clone()),
            Box::new(m.calendar_last_day.clone()),
            Box::new(m.build_info.clone()),
            Box::new(m.engine_apply_seconds.clone()),
            Box::new(m.engine_advance_seconds.clone()),
            Box::new(m.open_cases.clone()),
            Box::new(m.case_lights.clone()),
            Box::new(m.ready.clone()),
            Box::new(m.view_refresh_seconds.clone()),
            Box::new(m.http_requests.clone()),
            Box::new(m.deliveries.clone()),
            Box::new(m.delivery_latency.clone()),
            Box::new(m.outbox_depth.clone()),
            Box::new(m.delivery_dead_letters.clone()),
            Box::new(m.escalations_pending.clone()),
            Box::new(m.escalations.clone()),
        ] {
            m.registry.register(c).expect("unique metric names");
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
