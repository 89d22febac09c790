//! The configuration file (`config/redlight.toml`), with environment overrides.
//!
//! Every key can be overridden by an environment variable `REDLIGHT_<SECTION>__<KEY>`, e.g.
//! `REDLIGHT_KAFKA__BROKERS=10.0.0.5:9092` or `REDLIGHT_STORE__DATA_DIR=/var/lib/redlight`.
//! Relative paths are resolved against the folder of the file itself, so the daemon can be
//! started from any working directory. Errors name the key and the problem.

use crate::calendar::Calendar;
use crate::engine::{DEFAULT_MAX_EVENTS_PER_CASE, DEFAULT_RETENTION_DAYS, Engine};
use crate::rules::{Problem, RuleSet};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The environment variables that look meant for the configuration but are not read:
/// `REDLIGHT_` and a section's name with one underscore before the key
/// (`REDLIGHT_KAFKA_BROKERS`), where the configuration takes two
/// (`REDLIGHT_KAFKA__BROKERS`). Without a word, the daemon would run on the file's value.
/// Said by `redlight check` and at the daemon's start.
pub fn unread_env_vars() -> Vec<String> {
    unread_env_keys(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))
}

fn unread_env_keys(keys: impl Iterator<Item = String>) -> Vec<String> {
    const SECTIONS: [&str; 7] = [
        "engine",
        "kafka",
        "store",
        "http",
        "board",
        "scorecard",
        "delivery",
    ];
    let mut said: Vec<String> = keys
        .filter_map(|key| {
            let rest = key.strip_prefix("REDLIGHT_")?;
            if rest.contains("__") {
                return None;
            }
            let lower = rest.to_ascii_lowercase();
            let section = SECTIONS.iter().find(|s| {
                lower
                    .strip_prefix(**s)
                    .is_some_and(|r| r.len() > 1 && r.starts_with('_'))
            })?;
            let (head, tail) = rest.split_at(section.len());
            Some(format!(
                "environment variable {key} is not read: a section and its key are separated \
                 by two underscores (REDLIGHT_{head}_{tail})"
            ))
        })
        .collect();
    said.sort();
    said
}

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
    #[serde(default)]
    pub board: BoardConfig,
    #[serde(default)]
    pub scorecard: ScorecardConfig,
    /// `[delivery]`: retries, timeouts and links of alert delivery (see docs/webhooks.md).
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// `[[receiver]]`: where alerts are delivered. None by default.
    #[serde(default, rename = "receiver")]
    pub receivers: Vec<ReceiverConfig>,
    /// `[[route]]`: which alerts go to which receivers (every matching route applies).
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// `[[escalation]]`: a red still open after a time goes to further receivers.
    #[serde(default, rename = "escalation")]
    pub escalations: Vec<EscalationConfig>,
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
    /// The most events a case takes; further ones are refused (see
    /// `engine::DEFAULT_MAX_EVENTS_PER_CASE`).
    #[serde(default = "default_max_events_per_case")]
    pub max_events_per_case: u32,
}

impl EngineConfig {
    /// The engine's settings beyond its rules and calendar.
    pub fn settings(&self) -> crate::engine::Settings {
        crate::engine::Settings {
            retention_days: self.retention_days,
            max_events_per_case: self.max_events_per_case,
        }
    }
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
    /// An event whose `time` is more than this far ahead of the daemon's wall clock is
    /// refused (dead-lettered, reason code `time_in_future`): applied, it would move its
    /// partition's engine clock ahead, firing every deadline up to then at once and
    /// forgetting quiet cases early. Five minutes covers producers' clock drift; a time
    /// zone written wrong (local time labelled `Z`: eight hours ahead) is refused.
    #[serde(default = "default_future_tolerance_ms")]
    pub future_tolerance_ms: u64,
    /// Raw librdkafka settings, applied last (the escape hatch: security, timeouts, …).
    /// Each value a `Secret`: `sasl.password` and `ssl.key.password` are set here, and a
    /// `{:?}` of the configuration prints none of them.
    #[serde(default)]
    pub librdkafka: BTreeMap<String, Secret>,
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
            future_tolerance_ms: default_future_tolerance_ms(),
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
/// The longest `kafka.batch_wait_ms` taken: a SIGTERM waits for the batch being gathered.
const MAX_BATCH_WAIT_MS: u64 = 5_000;

const fn default_batch_wait_ms() -> u64 {
    20
}
const fn default_idle_ms() -> u64 {
    1000
}
const fn default_future_tolerance_ms() -> u64 {
    300_000
}

/// `[store]`: the embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The data directory (relative to the configuration file's folder).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// At most this many timers fire between two store transactions. A daemon back after
    /// days down can have millions of deadlines due at once; they are written slice by
    /// slice, each slice a consistent state (see `Engine::advance_bounded`).
    #[serde(default = "default_timers_per_commit")]
    pub timers_per_commit: usize,
    /// Group commit: batches are made durable (fsync) at most this often, and the batches in
    /// between are committed without waiting for the disk. A crash then redoes up to this
    /// much work from Kafka; nothing is lost, sent or acknowledged before it is durable (see
    /// `src/writer.rs`). 0: every batch is durable before the next.
    #[serde(default = "default_sync_ms")]
    pub sync_ms: u64,
    /// The store's own page cache in MiB (redb's read cache and write buffer). Small by
    /// default: the engine holds every open case in memory, so the store is read in full
    /// only at start-up, where a large cache costs more (every page read is kept, in memory
    /// that must first be zeroed) than it saves; the operating system's page cache serves
    /// the API's reads.
    #[serde(default = "default_cache_mib")]
    pub cache_mib: usize,
    /// Changed cases and alerts kept in the store's journal (and, for readers, in memory)
    /// before a checkpoint writes them as a sorted run (see `src/store.rs`); up to twice as
    /// many while a checkpoint runs. Larger: fewer, bigger runs and fewer merges, and more
    /// memory (about 500 bytes each).
    #[serde(default = "default_checkpoint_cases")]
    pub checkpoint_cases: usize,
    /// Where `redlight backup` (and `POST /api/v1/backup`) writes backups, each a directory
    /// `redlight-backup-<UTC time>` (relative to the configuration file's folder). Default:
    /// `backups` in the data directory; put it on another disk to survive the data disk.
    #[serde(default)]
    pub backup_dir: Option<PathBuf>,
    /// Backups kept in `backup_dir`: a new one removes the oldest beyond this many. 0 keeps
    /// them all.
    #[serde(default = "default_backups_keep")]
    pub backups_keep: usize,
    /// The daemon writes a backup this often (`24h`, `6h`, `30m`): the first a minute after
    /// the start when `backup_dir` holds none, then this long after the newest. Not set: only when asked
    /// (`redlight backup`, `POST /api/v1/backup`).
    #[serde(default)]
    pub backup_every: Option<String>,
    /// Alerts committed more than this many days ago are deleted from the alert log (the
    /// store's `alerts` table, which `/api/v1/alerts` and a case's page read), so that the
    /// store stops growing with them; 0, the default, keeps every alert (a supervision
    /// record). At least 7 when set. The scorecard's records, the cases and deliveries are
    /// not touched (see `Store::set_alerts_keep_days`).
    #[serde(default)]
    pub alerts_keep_days: u32,
}

impl StoreConfig {
    /// `backup_every` read; `None` when not set or not a duration of a second or more.
    pub fn backup_interval(&self) -> Option<std::time::Duration> {
        self.backup_every
            .as_deref()
            .and_then(crate::delivery::parse_duration)
            .filter(|d| d.as_secs() >= 1)
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: default_data_dir(),
            timers_per_commit: default_timers_per_commit(),
            sync_ms: default_sync_ms(),
            cache_mib: default_cache_mib(),
            checkpoint_cases: default_checkpoint_cases(),
            backup_dir: None,
            backups_keep: default_backups_keep(),
            backup_every: None,
            alerts_keep_days: 0,
        }
    }
}

const fn default_timers_per_commit() -> usize {
    20_000
}

const fn default_sync_ms() -> u64 {
    200
}

const fn default_cache_mib() -> usize {
    crate::store::DEFAULT_CACHE_MIB
}

const fn default_checkpoint_cases() -> usize {
    crate::store::DEFAULT_CHECKPOINT_CASES
}

const fn default_backups_keep() -> usize {
    7
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
    /// Bearer token the API and the board require (`Authorization: Bearer …`). Required when
    /// `listen` is not a loopback address; usually given as `REDLIGHT_HTTP__TOKEN`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file whose first line is the token (a mounted Kubernetes or systemd secret); read
    /// at start-up, relative to the configuration file's folder.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            token: None,
            token_file: None,
        }
    }
}

impl HttpConfig {
    /// Whether `listen` is a loopback address (only this machine can connect).
    pub fn is_loopback(&self) -> bool {
        self.listen
            .parse::<SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback())
    }
}

/// A secret from the configuration: never printed, not even by `{:?}`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for comparing or signing; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `[board]`: the red-light board at `/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardConfig {
    /// The page reloads itself this often (seconds).
    #[serde(default = "default_board_refresh")]
    pub refresh_seconds: u32,
    /// The counts behind the board are recomputed from the store at most this often
    /// (seconds; with a large store, at most every ten times the last recomputation took).
    /// The `redlight_open_cases` gauges are not: the consumer loop counts them as cases
    /// change (`src/open_counts.rs`).
    #[serde(default = "default_board_cache")]
    pub cache_seconds: u32,
    /// At most this many red and this many yellow cases are listed (most urgent first).
    #[serde(default = "default_board_list_max")]
    pub list_max: usize,
    /// The page's heading.
    #[serde(default = "default_board_title")]
    pub title: String,
    /// At most this many departments get a `department` label of their own on the
    /// open-case metrics (those with the most open cases); the others are summed under
    /// `department="其他"`. Departments come from event data, and every new label value is
    /// a new time series in Prometheus: the cap keeps a typo-ridden feed from flooding it.
    /// The board and the API are not capped.
    #[serde(default = "default_metric_departments")]
    pub metric_departments: usize,
}

impl Default for BoardConfig {
    fn default() -> Self {
        BoardConfig {
            refresh_seconds: default_board_refresh(),
            cache_seconds: default_board_cache(),
            list_max: default_board_list_max(),
            title: default_board_title(),
            metric_departments: default_metric_departments(),
        }
    }
}

const fn default_metric_departments() -> usize {
    100
}

const fn default_board_refresh() -> u32 {
    30
}
const fn default_board_cache() -> u32 {
    5
}
const fn default_board_list_max() -> usize {
    40
}
fn default_board_title() -> String {
    "电子监察 · 红绿灯".to_string()
}

/// `[scorecard]`: the grades of `/api/v1/scorecard` (杭州 Art. 24: 优秀 / 合格 / 不合格).
/// A department is 优秀 when its on-time rate and violations meet the `excellent_` limits,
/// 合格 when they meet the `qualified_` ones, else 不合格.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScorecardConfig {
    #[serde(default = "default_excellent_rate")]
    pub excellent_on_time_rate: f64,
    #[serde(default)]
    pub excellent_max_violations: u64,
    #[serde(default = "default_qualified_rate")]
    pub qualified_on_time_rate: f64,
    #[serde(default = "default_qualified_violations")]
    pub qualified_max_violations: u64,
}

impl Default for ScorecardConfig {
    fn default() -> Self {
        ScorecardConfig {
            excellent_on_time_rate: default_excellent_rate(),
            excellent_max_violations: 0,
            qualified_on_time_rate: default_qualified_rate(),
            qualified_max_violations: default_qualified_violations(),
        }
    }
}

const fn default_excellent_rate() -> f64 {
    0.95
}
const fn default_qualified_rate() -> f64 {
    0.8
}
const fn default_qualified_violations() -> u64 {
    3
}

/// A string or a list of strings (`levels = "red"` or `levels = ["yellow", "red"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => StringList(vec![s]),
            OneOrMany::Many(v) => StringList(v),
        })
    }
}

/// `[delivery]`: how alerts reach receivers (validated by `delivery::Settings`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// The wait before each retry (`["1s", "5s", "1m"]`); after the last, a dead letter.
    /// Default: 1s doubling to 10m, then every 10m until 24h have passed.
    #[serde(default)]
    pub retry: Option<Vec<String>>,
    /// Each wait is varied by up to this share either way (default 0.2).
    #[serde(default)]
    pub jitter: Option<f64>,
    /// One attempt's time limit, connect to answer (default `10s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Parallel requests per `json`/`alertmanager` receiver (default 16; chat robots: 1).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// This daemon's address as receivers should link to it (`http://redlight.example:9464`).
    #[serde(default)]
    pub external_url: Option<String>,
    /// A PEM file of CA certificates that `https://` receivers' certificates may also be
    /// issued by, besides the bundled Mozilla roots: a data centre's own CA (relative to
    /// the configuration file).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// An HTTP proxy `https://` receivers are reached through (HTTP CONNECT):
    /// `http://proxy.example:3128`, with `user:password@` for Basic authentication;
    /// `env:VAR` or `file:/path`.
    #[serde(default)]
    pub proxy: Option<Secret>,
    /// Hosts reached without the proxy: names (each with its subdomains), IP addresses
    /// and CIDR ranges, as NO_PROXY lists them.
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

/// `[[receiver]]`: one webhook endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Unique; routes name it.
    pub name: String,
    /// `json`, `alertmanager`, `dingtalk`, `wecom` or `feishu`.
    pub format: String,
    /// The endpoint; `env:VAR` or `file:/path` keep tokens out of this file.
    pub url: Secret,
    /// `dingtalk`/`feishu`: the robot's signing secret; `json`: one Standard Webhooks
    /// secret (`whsec_…`). `env:VAR` or `file:/path`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// `json`: several Standard Webhooks secrets at once (rotation); each one signs.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Also send resolved notices (a light cleared).
    #[serde(default)]
    pub send_resolved: bool,
    /// At most this many messages a minute, the rest queue (dingtalk/wecom default 20,
    /// feishu 100, others unlimited; 0 = unlimited).
    #[serde(default)]
    pub rate_limit_per_minute: Option<u32>,
    /// Overrides `delivery.timeout`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Overrides `delivery.retry`.
    #[serde(default)]
    pub retry: Option<Vec<String>>,
    /// Overrides `delivery.concurrency`.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Extra request headers (`Authorization = "env:TOKEN"`).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Chat robots: the people its notices @-mention, so that their phones ring: DingTalk
    /// mobile numbers, WeCom user ids, Feishu open ids (`ou_…`) or e-mail addresses;
    /// `"all"` for everyone (DingTalk, Feishu).
    #[serde(default)]
    pub mention: StringList,
    /// The levels whose firing notices mention them (default `["red"]`).
    #[serde(default)]
    pub mention_levels: Option<StringList>,
}

/// `[[route]]`: alerts matching every field given (an empty field matches all) go to the
/// receivers listed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// `yellow`, `red`.
    #[serde(default)]
    pub levels: StringList,
    /// Rule id prefixes: `xk.` or `aq.accident_report`.
    #[serde(default)]
    pub rule_prefix: StringList,
    /// Departments, exactly.
    #[serde(default)]
    pub departments: StringList,
    /// Alert labels (`rule`, `case`, `level`, `severity`, `department`, `item`, `handler`,
    /// `pack`) and the values accepted.
    #[serde(default)]
    pub labels: BTreeMap<String, StringList>,
    pub receivers: StringList,
}

/// `[[escalation]]`: a red alert matching and still open after `after` is sent, as an
/// alert of its own, to the receivers listed. The steps form the chain in their order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    pub name: String,
    /// `30m`, `4h`, `2 workdays` (counted on the working calendar).
    pub after: String,
    #[serde(default)]
    pub rule_prefix: StringList,
    #[serde(default)]
    pub departments: StringList,
    #[serde(default)]
    pub labels: BTreeMap<String, StringList>,
    pub receivers: StringList,
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
const fn default_max_events_per_case() -> u32 {
    DEFAULT_MAX_EVENTS_PER_CASE
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

/// A value the file or the environment gives wrongly, as the operator reads it: the key as
/// the rest of `check` names keys, what was wrong, and the variable when it came from the
/// environment. (figment's own text names the key with its profile, as
/// `default.engine.retention_days`, and an environment variable as `ENGINE.RETENTION_DAYS`.)
fn describe(e: &figment::Error) -> String {
    if e.path.is_empty() {
        return e.kind.to_string();
    }
    let from_file = e
        .metadata
        .as_ref()
        .is_some_and(|m| matches!(m.source, Some(figment::Source::File(_))));
    let origin = if from_file || e.metadata.is_none() {
        String::new()
    } else {
        let var: Vec<String> = e.path.iter().map(|k| k.to_ascii_uppercase()).collect();
        format!(" (from REDLIGHT_{})", var.join("__"))
    };
    format!("`{}`: {}{origin}", e.path.join("."), e.kind)
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
                        .map(|e| describe(&e))
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
        if config.engine.max_events_per_case == 0 {
            return Err(invalid(
                "`engine.max_events_per_case` must be at least 1".into(),
            ));
        }
        config.timezone().map_err(|_| ConfigError::TimeZone {
            file: path.to_path_buf(),
            value: config.engine.timezone.clone(),
        })?;
        let k = &config.kafka;
        if k.brokers.trim().is_empty() {
            return Err(invalid("`kafka.brokers` is empty".into()));
        }
        if k.group_id.trim().is_empty() {
            return Err(invalid(
                "`kafka.group_id` is empty; name the consumer group (e.g. \"redlight\")".into(),
            ));
        }
        if config.store.data_dir.as_os_str().is_empty() {
            // An empty path resolves to the configuration's own folder: the store would
            // land beside the config by accident.
            return Err(invalid(
                "`store.data_dir` is empty; name the directory for the store".into(),
            ));
        }
        if k.topics.is_empty() || k.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(
                "`kafka.topics` must list at least one topic name".into(),
            ));
        }
        // Kafka's rule for a topic's name; one an input names with a leading `^` is a
        // pattern librdkafka subscribes to. A dead-letter topic the brokers refuse by its
        // name would keep every dead letter waiting in the store.
        let named = |key: &str, name: &str| -> Result<(), ConfigError> {
            let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if name.is_empty()
                || name.len() > 249
                || name == "."
                || name == ".."
                || !name.chars().all(legal)
            {
                return Err(invalid(format!(
                    "`{key}` {name:?} is not a Kafka topic name: 1 to 249 of the letters a-z \
                     and A-Z, digits, `.`, `_` and `-` (and not `.` or `..`)"
                )));
            }
            Ok(())
        };
        for t in k.topics.iter().filter(|t| !t.starts_with('^')) {
            named("kafka.topics", t)?;
        }
        named("kafka.dead_letter_topic", &k.dead_letter_topic)?;
        if k.topics.contains(&k.dead_letter_topic) {
            return Err(invalid(format!(
                "`kafka.dead_letter_topic` {:?} is also an input topic",
                k.dead_letter_topic
            )));
        }
        if k.batch_max == 0 {
            return Err(invalid("`kafka.batch_max` must be at least 1".into()));
        }
        // The raw settings may change anything but what the promise of no lost effect rests
        // on: offsets stored and committed by redlight alone, once the work is durable, for
        // the group and brokers the rest of the configuration (and its logs) names.
        for (key, value) in &k.librdkafka {
            let refused = match key.as_str() {
                "group.id" => Some("set `kafka.group_id` instead"),
                "bootstrap.servers" | "metadata.broker.list" => Some("set `kafka.brokers` instead"),
                "enable.auto.commit" | "enable.auto.offset.store"
                    if value.expose().trim() != "false" =>
                {
                    Some(
                        "redlight stores and commits offsets itself, only once the work they \
                         cover is durable; librdkafka's own would commit work a crash loses",
                    )
                }
                _ => None,
            };
            if let Some(why) = refused {
                return Err(invalid(format!("`kafka.librdkafka.\"{key}\"`: {why}")));
            }
        }
        // A batch gathering its messages hears no SIGTERM until it closes: the wait is
        // bounded so that a shutdown takes seconds, as it must.
        if k.batch_wait_ms > MAX_BATCH_WAIT_MS {
            return Err(invalid(format!(
                "`kafka.batch_wait_ms` is {}; at most {MAX_BATCH_WAIT_MS} (a shutdown waits \
                 for the batch being gathered)",
                k.batch_wait_ms
            )));
        }
        if config.store.timers_per_commit == 0 {
            return Err(invalid(
                "`store.timers_per_commit` must be at least 1".into(),
            ));
        }
        if config.store.sync_ms > 10_000 {
            return Err(invalid(format!(
                "`store.sync_ms` is {}; at most 10000 (a crash redoes up to this much work)",
                config.store.sync_ms
            )));
        }
        if !(1..=1 << 20).contains(&config.store.cache_mib) {
            return Err(invalid(format!(
                "`store.cache_mib` is {}; between 1 and 1048576 (MiB)",
                config.store.cache_mib
            )));
        }
        if let Some(every) = &config.store.backup_every
            && config.store.backup_interval().is_none()
        {
            return Err(invalid(format!(
                "`store.backup_every` is {every:?}; expected a duration of at least a second, \
                 such as \"24h\", \"6h\" or \"30m\""
            )));
        }
        if config.store.alerts_keep_days != 0
            && !(7..=36_500).contains(&config.store.alerts_keep_days)
        {
            return Err(invalid(format!(
                "`store.alerts_keep_days` is {}; 0 keeps every alert, otherwise between 7 and \
                 36500 (days)",
                config.store.alerts_keep_days
            )));
        }
        if config.store.checkpoint_cases == 0 {
            return Err(invalid(
                "`store.checkpoint_cases` must be at least 1".into(),
            ));
        }
        if config.http.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(format!(
                "`http.listen` is {:?}, not an address like 127.0.0.1:9464",
                config.http.listen
            )));
        }
        if let Some(file) = config.http.token_file.clone() {
            let file = config.resolve(&file);
            let text = std::fs::read_to_string(&file).map_err(|e| {
                invalid(format!(
                    "`http.token_file`: cannot read {}: {e}",
                    file.display()
                ))
            })?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.is_empty() {
                return Err(invalid(format!(
                    "`http.token_file`: {} is empty",
                    file.display()
                )));
            }
            config.http.token = Some(Secret::new(token));
        }
        if config
            .http
            .token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            return Err(invalid(
                "`http.token` is empty; set a long random token or leave it out".into(),
            ));
        }
        if config.http.token.is_none() && !config.http.is_loopback() {
            return Err(invalid(format!(
                "`http.listen` {:?} is reachable from other machines, so the API and the board \
                 need a bearer token: set `http.token` (or REDLIGHT_HTTP__TOKEN, or \
                 `http.token_file`)",
                config.http.listen
            )));
        }
        let sc = &config.scorecard;
        for (key, rate) in [
            ("excellent_on_time_rate", sc.excellent_on_time_rate),
            ("qualified_on_time_rate", sc.qualified_on_time_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(invalid(format!(
                    "`scorecard.{key}` is {rate}, not a share from 0 to 1"
                )));
            }
        }
        if sc.excellent_on_time_rate < sc.qualified_on_time_rate
            || sc.excellent_max_violations > sc.qualified_max_violations
        {
            return Err(invalid(
                "`scorecard`: the `excellent_` limits must be at least as strict as the \
                 `qualified_` ones"
                    .into(),
            ));
        }
        if config.board.cache_seconds == 0 || config.board.refresh_seconds == 0 {
            return Err(invalid(
                "`board.cache_seconds` and `board.refresh_seconds` must be at least 1".into(),
            ));
        }
        crate::delivery::Settings::from_config(&config).map_err(invalid)?;
        Ok(config)
    }

    /// The data directory, resolved.
    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.store.data_dir)
    }

    /// Where backups go (`store.backup_dir`, resolved; `backups` in the data directory
    /// when not set).
    pub fn backup_dir(&self) -> PathBuf {
        match &self.store.backup_dir {
            Some(d) => self.resolve(d),
            None => self.data_dir().join("backups"),
        }
    }

    /// Opens the store in the data directory with the `[store]` settings (page cache,
    /// checkpoint size): the one way the daemon and the commands open it.
    pub fn open_store(&self) -> Result<crate::store::Store, crate::store::StoreError> {
        let store = crate::store::Store::open_with_cache(&self.data_dir(), self.store.cache_mib)?;
        store.set_checkpoint_cases(self.store.checkpoint_cases);
        store.set_alerts_keep_days(self.store.alerts_keep_days);
        Ok(store)
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
        engine.configure(self.engine.settings());
        Ok(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped config with `lines` added to its `[store]` section and the store in
    /// `dir/data`, written into `dir` and loaded.
    fn shipped_store_with(dir: &Path, lines: &str) -> Result<Config, ConfigError> {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/redlight.toml");
        let text = std::fs::read_to_string(&shipped).expect("the shipped config");
        std::fs::create_dir_all(dir).expect("temp dir");
        let path = dir.join("redlight.toml");
        let t = text
            .replace("[store]\n", &format!("[store]\n{lines}"))
            .replace("data_dir = \"../data\"", "data_dir = \"data\"");
        std::fs::write(&path, t).expect("config written");
        Config::load(&path)
    }

    /// Values that would leave the daemon wrong or deaf are refused at start, naming the
    /// key: an empty consumer group (librdkafka's error named none), an empty data
    /// directory (the store landed beside the config), a batch wait so long that a
    /// SIGTERM went unheard (the gathering batch hears none until it closes), and raw
    /// librdkafka settings that would commit offsets of work not yet durable or read
    /// another group than the one configured.
    #[test]
    fn empty_names_and_an_endless_batch_wait_are_refused() {
        let dir = std::env::temp_dir().join(format!("redlight-cfg-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/redlight.toml");
        let text = std::fs::read_to_string(&shipped).expect("the shipped config");
        for (from, to, key) in [
            (
                "group_id = \"redlight\"",
                "group_id = \" \"",
                "`kafka.group_id` is empty",
            ),
            (
                "data_dir = \"../data\"",
                "data_dir = \"\"",
                "`store.data_dir` is empty",
            ),
            (
                "batch_wait_ms = 20",
                "batch_wait_ms = 99999999",
                "`kafka.batch_wait_ms` is 99999999; at most 5000",
            ),
            (
                "[kafka.librdkafka]",
                "[kafka.librdkafka]\n\"enable.auto.commit\" = \"true\"",
                "`kafka.librdkafka.\"enable.auto.commit\"`: redlight stores and commits",
            ),
            (
                "[kafka.librdkafka]",
                "[kafka.librdkafka]\n\"group.id\" = \"other\"",
                "`kafka.librdkafka.\"group.id\"`: set `kafka.group_id` instead",
            ),
        ] {
            assert!(text.contains(from), "{from}");
            let path = dir.join("redlight.toml");
            std::fs::write(&path, text.replace(from, to)).expect("config written");
            let e = Config::load(&path)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(key), "{to}: {e}");
        }
        std::fs::write(
            dir.join("redlight.toml"),
            text.replace("batch_wait_ms = 20", "batch_wait_ms = 5000"),
        )
        .expect("config written");
        assert!(Config::load(&dir.join("redlight.toml")).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `store.backup_every` is read as a duration of a second or more; anything else is
    /// refused at start, naming the key and what it was.
    #[test]
    fn the_backup_interval_is_a_duration() {
        let dir = std::env::temp_dir().join(format!("redlight-cfg-backup-{}", std::process::id()));
        let with = |every: &str| shipped_store_with(&dir, &format!("backup_every = \"{every}\"\n"));
        let c = with("6h").expect("6h is read");
        assert_eq!(
            c.store.backup_interval(),
            Some(std::time::Duration::from_secs(6 * 3600))
        );
        for bad in ["soon", "0s", "500ms", ""] {
            let e = with(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                e.contains("store.backup_every") && e.contains(&format!("{bad:?}")),
                "{bad:?}: {e}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `store.alerts_keep_days`: 0 (every alert kept) by default; a week to a century when
    /// set, anything else refused at start naming the key and the value; and the store
    /// opened from the config carries it.
    #[test]
    fn alerts_are_kept_unless_a_number_of_days_is_set() {
        let dir = std::env::temp_dir().join(format!("redlight-cfg-keep-{}", std::process::id()));
        let with = |lines: &str| shipped_store_with(&dir, lines);
        assert_eq!(with("").expect("shipped").store.alerts_keep_days, 0);
        let year = with("alerts_keep_days = 365\n").expect("a year");
        assert_eq!(year.store.alerts_keep_days, 365);
        assert_eq!(year.open_store().expect("store").alerts_keep_days(), 365);
        for bad in [1, 6, 36_501] {
            let e = with(&format!("alerts_keep_days = {bad}\n"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("store.alerts_keep_days") && e.contains(&format!("is {bad};")),
                "{bad}: {e}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A variable with one underscore between section and key is named with the spelling
    /// that is read; others of the prefix (the tests' and benches' own, those read) are not.
    #[test]
    fn a_variable_with_one_underscore_after_its_section_is_named() {
        let keys = [
            "REDLIGHT_KAFKA_BROKERS",
            "REDLIGHT_KAFKA__BROKERS",
            "REDLIGHT_Store_Data_Dir",
            "REDLIGHT_TEST_KAFKA",
            "REDLIGHT_BENCH_BIN",
            "REDLIGHT_HTTP_",
            "PATH",
        ];
        assert_eq!(
            unread_env_keys(keys.iter().map(|k| k.to_string())),
            vec![
                "environment variable REDLIGHT_KAFKA_BROKERS is not read: a section and its key \
                 are separated by two underscores (REDLIGHT_KAFKA__BROKERS)"
                    .to_string(),
                "environment variable REDLIGHT_Store_Data_Dir is not read: a section and its \
                 key are separated by two underscores (REDLIGHT_Store__Data_Dir)"
                    .to_string(),
            ]
        );
    }
}
