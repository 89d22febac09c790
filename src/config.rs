//! The configuration file (`config/redlight.toml`), with environment overrides.
//!
//! Every key can be overridden by an environment variable `REDLIGHT_<SECTION>__<KEY>`, e.g.
//! `REDLIGHT_KAFKA__BROKERS=10.0.0.5:9092` or `REDLIGHT_STORE__DATA_DIR=/var/lib/redlight`.
//! Relative paths are resolved against the folder of the file itself, so the daemon can be
//! started from any working directory. Errors name the key and the problem.

use crate::calendar::Calendar;
use crate::engine::{DEFAULT_RETENTION_DAYS, Engine};
use crate::rules::{Problem, RuleSet};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub engine: EngineConfig,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub http: HttpConfig,
    /// The folder of the configuration file, for resolving relative paths.
    #[serde(skip)]
    pub base: PathBuf,
}

/// `[engine]`: time zone, calendar data, rule packs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// IANA zone in which days begin and end.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Folder of the working-calendar files.
    #[serde(default = "default_calendars")]
    pub calendars: PathBuf,
    /// Rule-pack files, loaded in order.
    pub rule_packs: Vec<PathBuf>,
    /// Days an inactive case is remembered for duplicate and late events.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

/// `[kafka]`: where events come from (the daemon only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// The consumer group; instances in one group share the partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Topics of CloudEvents; the message key is the case id.
    #[serde(default = "default_topics")]
    pub topics: Vec<String>,
    /// Where messages that cannot be applied are copied, with the reason in a header.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// At most this many messages per batch (one store transaction).
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// How long to wait for more messages before closing a batch.
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// A caught-up partition follows the wall clock (fires its timers) once no message
    /// came for this long; until then its clock is its events' time, like `replay`.
    #[serde(default = "default_idle_ms")]
    pub idle_ms: u64,
    /// Raw librdkafka settings, applied last (the escape hatch: security, timeouts, …).
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: default_brokers(),
            group_id: default_group_id(),
            topics: default_topics(),
            dead_letter_topic: default_dead_letter_topic(),
            batch_max: default_batch_max(),
            batch_wait_ms: default_batch_wait_ms(),
            idle_ms: default_idle_ms(),
            librdkafka: BTreeMap::new(),
        }
    }
}

fn default_brokers() -> String {
    "127.0.0.1:19092".to_string()
}
fn default_group_id() -> String {
    "redlight".to_string()
}
fn default_topics() -> Vec<String> {
    vec!["redlight.events".to_string()]
}
fn default_dead_letter_topic() -> String {
    "redlight.dead-letter".to_string()
}
const fn default_batch_max() -> usize {
    5000
}
const fn default_batch_wait_ms() -> u64 {
    20
}
const fn default_idle_ms() -> u64 {
    1000
}

/// `[store]`: the embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The data directory (relative to the configuration file's folder).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: default_data_dir(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

/// `[http]`: metrics, health and the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on; loopback by default.
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9464".to_string()
}

fn default_timezone() -> String {
    "Asia/Shanghai".to_string()
}
fn default_calendars() -> PathBuf {
    PathBuf::from("calendars")
}
const fn default_retention_days() -> u32 {
    DEFAULT_RETENTION_DAYS
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
    #[error("{file}: `engine.timezone` is {value:?}, not an IANA time zone name")]
    TimeZone { file: PathBuf, value: String },
    #[error("{0}")]
    Calendar(#[from] crate::calendar::CalendarError),
    #[error("{} problem(s) in the rule packs:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Rules(Vec<Problem>),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        // figment treats a missing file as empty: read it first for a clear error.
        std::fs::metadata(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            file: path.to_path_buf(),
            message,
        };
        let mut config: Config = Figment::from(Toml::file(path))
            .merge(
                Env::prefixed("REDLIGHT_")
                    .filter(|k| k.as_str().contains("__"))
                    .split("__"),
            )
            .extract()
            .map_err(|e| {
                invalid(
                    e.into_iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
        config.base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        if config.engine.rule_packs.is_empty() {
            return Err(invalid("`engine.rule_packs` lists no pack".into()));
        }
        config.timezone().map_err(|_| ConfigError::TimeZone {
            file: path.to_path_buf(),
            value: config.engine.timezone.clone(),
        })?;
        let k = &config.kafka;
        if k.brokers.trim().is_empty() {
            return Err(invalid("`kafka.brokers` is empty".into()));
        }
        if k.topics.is_empty() || k.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(
                "`kafka.topics` must list at least one topic name".into(),
            ));
        }
        if k.topics.contains(&k.dead_letter_topic) {
            return Err(invalid(format!(
                "`kafka.dead_letter_topic` {:?} is also an input topic",
                k.dead_letter_topic
            )));
        }
        if k.batch_max == 0 {
            return Err(invalid("`kafka.batch_max` must be at least 1".into()));
        }
        if config.http.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(format!(
                "`http.listen` is {:?}, not an address like 127.0.0.1:9464",
                config.http.listen
            )));
        }
        Ok(config)
    }

    /// The data directory, resolved.
    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.store.data_dir)
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    pub fn timezone(&self) -> Result<chrono_tz::Tz, chrono_tz::ParseError> {
        self.engine.timezone.parse()
    }

    pub fn calendar_dir(&self) -> PathBuf {
        self.resolve(&self.engine.calendars)
    }

    pub fn rule_pack_paths(&self) -> Vec<PathBuf> {
        self.engine
            .rule_packs
            .iter()
            .map(|p| self.resolve(p))
            .collect()
    }

    pub fn load_calendar(&self) -> Result<Calendar, ConfigError> {
        let tz = self.timezone().map_err(|_| ConfigError::TimeZone {
            file: self.base.clone(),
            value: self.engine.timezone.clone(),
        })?;
        Ok(Calendar::load_dir(&self.calendar_dir(), tz)?)
    }

    pub fn load_rules(&self) -> Result<RuleSet, ConfigError> {
        RuleSet::load(&self.rule_pack_paths()).map_err(ConfigError::Rules)
    }

    /// Everything the engine needs, loaded and checked.
    pub fn build_engine(&self) -> Result<Engine, ConfigError> {
        let cal = self.load_calendar()?;
        let rules = self.load_rules()?;
        let mut engine = Engine::new(Arc::new(rules), Arc::new(cal));
        engine.set_retention_days(self.engine.retention_days);
        Ok(engine)
    }
}
