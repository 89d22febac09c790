//! Prometheus metrics: prefix `redlight_`, `_total` counters, `_seconds` histograms.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
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
    /// Alerts raised, by level, status and rule.
    pub alerts: IntCounterVec,
    /// Clocks that needed a calendar year without data.
    pub calendar_errors: IntCounter,
    /// Messages copied to the dead-letter topic.
    pub dead_letters: IntCounter,
    /// Kafka client errors (broker down, …): the consumer recovers by itself.
    pub kafka_errors: IntCounter,
    /// Time to make one batch durable (store transaction).
    pub commit_seconds: Histogram,
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
                "Clocks that needed a calendar year without data.",
            )
            .expect("valid metric"),
            dead_letters: IntCounter::new(
                "redlight_dead_letters_total",
                "Messages copied to the dead-letter topic.",
            )
            .expect("valid metric"),
            kafka_errors: IntCounter::new(
                "redlight_kafka_errors_total",
                "Kafka client errors; the consumer recovers by itself.",
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
            registry,
        };
        for c in [
            Box::new(m.events_consumed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.events_rejected.clone()),
            Box::new(m.events_duplicate.clone()),
            Box::new(m.alerts.clone()),
            Box::new(m.calendar_errors.clone()),
            Box::new(m.dead_letters.clone()),
            Box::new(m.kafka_errors.clone()),
            Box::new(m.commit_seconds.clone()),
            Box::new(m.cases.clone()),
            Box::new(m.partitions.clone()),
            Box::new(m.lag.clone()),
            Box::new(m.durable_offset.clone()),
            Box::new(m.calendar_last_day.clone()),
            Box::new(m.build_info.clone()),
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
