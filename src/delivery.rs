//! Alert delivery: receivers, routing, escalation, and a durable outbox with retries.
//!
//! # The outbox
//! Every alert's deliveries — one row per matching receiver — are written by
//! [`Store::commit`] in the same redb transaction as the alert itself (the store calls this
//! module's [`CommitHook`]), so an alert is never durable without its deliveries and
//! `kill -9` at any moment loses none. The worker reads due rows, sends them, and records the
//! outcome in transactions of its own (batched): delivered rows leave the outbox, failed ones
//! are rescheduled on the retry schedule, refused ones (a 4xx other than 408/429, a chat
//! robot's error code, an exhausted schedule) move to the dead letters, where they stay
//! until re-sent (`POST /api/v1/deliveries/dead/resend`, `redlight deliveries resend`) or
//! dropped by hand for a receiver that will never take them (`POST
//! /api/v1/deliveries/dead/drop`, `redlight deliveries drop`).
//!
//! Delivery is at least once: a request whose success was not yet recorded when the process
//! died is sent again after the restart (receivers drop duplicates by `webhook-id` / the
//! alert id). Once a success is recorded, the row is gone: it is never sent again.
//!
//! # Tables
//! - `delivery_meta`: `seq` → the last delivery sequence number;
//! - `outbox`: seq → [`Row`] JSON; `outbox_due`: `(receiver, next attempt ms, seq)` → ();
//! - `dead_letters`: seq → [`Row`] JSON (with the reason);
//! - `escalation_pending`: `(link, escalation id)` → [`Pending`] JSON, and
//!   `escalation_due`: `(due ms, escalation id)` → link; `escalation_fired`: `(link, id)` →
//!   [`Fired`] JSON (to send the resolution to the step's receivers that ask for it).
//!
//! The link of a red is `case ␟ rule ␟ deadline`: its resolution carries the same three, so
//! it cancels the pending steps and resolves the fired ones.
//!
//! # Escalation time
//! A step is due `after` the red's `at` (hours and minutes on the clock, workdays on the
//! working calendar). In the daemon a step also waits for every partition's engine clock
//! to pass its due time ([`Delivery::set_engine_time`]): while a backlog is consumed, the
//! red's resolution may still be in it, and a step fires only when the red is known to have
//! stayed open.

use crate::alert::{Alert, Level, Status, alert_id, format_instant};
use crate::clock::{Counting, DAY, wall_ms};
use crate::config::{Config, ReceiverConfig, Secret, StringList};
use crate::formats::chat::{Reply, check_reply};
use crate::formats::{self, Context, Escalation, Format, Keys, Notice};
use crate::log_throttle::{LogThrottle, unsaid_note};
use crate::metrics::Metrics;
use crate::rules::Unit;
use crate::store::{CommitHook, Store, StoreError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};

const META: TableDefinition<&str, u64> = TableDefinition::new("delivery_meta");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const OUTBOX_DUE: TableDefinition<(&str, i64, u64), ()> = TableDefinition::new("outbox_due");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
const ESC_PENDING: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("escalation_pending");
const ESC_DUE: TableDefinition<(i64, &str), &str> = TableDefinition::new("escalation_due");
const ESC_FIRED: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("escalation_fired");

/// A `Retry-After` longer than this is cut to it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How long a chat robot that says "too fast" is left alone.
const CHAT_THROTTLE: Duration = Duration::from_secs(60);
/// The rate limit's window, with a second of margin for network jitter.
const RATE_WINDOW: Duration = Duration::from_secs(61);
/// How often due escalation steps are looked for.
const ESCALATION_CHECK: Duration = Duration::from_millis(200);
/// The most of a receiver's answer that is read (and kept, cut, as the reason).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------
// Settings: the configuration, validated.

/// How a step's time is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Millis(i64),
    Workdays(u32),
}

/// Alert fields a route can match on.
pub const LABELS: [&str; 9] = [
    "rule",
    "alertname",
    "case",
    "level",
    "severity",
    "department",
    "item",
    "handler",
    "pack",
];

/// What an alert must be to match.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub levels: Vec<Level>,
    pub rule_prefix: Vec<String>,
    pub departments: Vec<String>,
    pub labels: Vec<(String, Vec<String>)>,
}

impl Matcher {
    pub fn matches(&self, a: &Alert) -> bool {
        (self.levels.is_empty() || self.levels.contains(&a.level))
            && (self.rule_prefix.is_empty()
                || self
                    .rule_prefix
                    .iter()
                    .any(|p| a.rule.starts_with(p.as_str())))
            && (self.departments.is_empty()
                || a.department
                    .as_ref()
                    .is_some_and(|d| self.departments.iter().any(|x| x == d)))
            && self
                .labels
                .iter()
                .all(|(k, want)| label(a, k).is_some_and(|have| want.iter().any(|w| w == have)))
    }
}

/// The value of a label of an alert.
pub fn label<'a>(a: &'a Alert, name: &str) -> Option<&'a str> {
    match name {
        "rule" | "alertname" => Some(&a.rule),
        "case" => Some(&a.case),
        "level" => Some(a.level.as_str()),
        "severity" => Some(match a.level {
            Level::Yellow => "warning",
            Level::Red => "critical",
        }),
        "department" => a.department.as_deref(),
        "item" => a.item.as_deref(),
        "handler" => a.handler.as_deref(),
        "pack" => Some(a.rule.split('.').next().unwrap_or(&a.rule)),
        _ => None,
    }
}

/// One receiver, as configured (secrets not yet read).
#[derive(Debug, Clone)]
pub struct ReceiverSpec {
    pub name: String,
    pub format: Format,
    pub url: Secret,
    /// With the configuration key each came from (for messages).
    pub secrets: Vec<(String, Secret)>,
    pub send_resolved: bool,
    /// Messages a minute; None: unlimited.
    pub rate_per_minute: Option<u32>,
    pub timeout: Duration,
    pub retry: Vec<Duration>,
    pub concurrency: usize,
    pub headers: Vec<(String, Secret)>,
    /// Chat robots: who the firing notices of `mention_levels` @-mention (checked for the
    /// platform).
    pub mention: Vec<String>,
    pub mention_levels: Vec<Level>,
}

impl ReceiverSpec {
    /// The wait before the next attempt of a delivery that has failed `failed` attempts of
    /// its schedule (this one included); `None`: the schedule is exhausted, a dead letter.
    fn retry_after(&self, failed: u32) -> Option<Duration> {
        (failed as usize)
            .checked_sub(1)
            .and_then(|i| self.retry.get(i))
            .copied()
    }

    /// Whom this notice @-mentions: firing notices of the mentioned levels only (a
    /// resolved notice is news, not a call to act).
    pub fn mentions(&self, notice: &Notice) -> &[String] {
        let a = &notice.alert;
        if a.status == Status::Firing && self.mention_levels.contains(&a.level) {
            &self.mention
        } else {
            &[]
        }
    }
}

/// `receiver[i].mention`: each entry a way the platform names a person.
fn check_mentions(key: &str, format: Format, list: &[String]) -> Result<(), String> {
    for (j, m) in list.iter().enumerate() {
        let ok = match format {
            Format::Json | Format::Alertmanager => {
                return Err(format!(
                    "`{key}.mention`: only chat robots (dingtalk, wecom, feishu) mention people"
                ));
            }
            // A mobile number (digits, a leading + and dashes allowed), or everyone.
            Format::Dingtalk => {
                m == "all"
                    || (m.len() >= 5
                        && m.len() <= 20
                        && m.trim_start_matches('+')
                            .chars()
                            .all(|c| c.is_ascii_digit() || c == '-'))
            }
            // A user id; WeCom's markdown has no mention of everyone.
            Format::Wecom => {
                m != "all"
                    && !m.is_empty()
                    && m.len() <= 64
                    && m.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-@".contains(c))
            }
            // An open id, an e-mail address, or everyone.
            Format::Feishu => {
                !m.is_empty()
                    && m.len() <= 128
                    && m.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-@+".contains(c))
            }
        };
        if !ok {
            let what = match format {
                Format::Dingtalk => "a mobile number or \"all\"",
                Format::Wecom => "a WeCom user id (its markdown cannot mention everyone)",
                _ => "an open id (ou_…), an e-mail address or \"all\"",
            };
            return Err(format!("`{key}.mention[{j}]` is {m:?}; write {what}"));
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub name: String,
    pub matcher: Matcher,
    /// Indexes into [`Settings::receivers`].
    pub receivers: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct StepSpec {
    pub name: String,
    /// 1-based position in the chain.
    pub index: u32,
    pub after: After,
    /// As written, for messages.
    pub after_text: String,
    pub matcher: Matcher,
    pub receivers: Vec<usize>,
}

/// The delivery configuration, validated; every error names the key.
#[derive(Debug, Clone)]
pub struct Settings {
    pub receivers: Vec<ReceiverSpec>,
    pub routes: Vec<RouteSpec>,
    pub steps: Vec<StepSpec>,
    pub jitter: f64,
    pub external_url: Option<String>,
    /// `delivery.ca_file`'s certificates (DER), trusted for `https://` receivers besides
    /// the bundled Mozilla roots.
    pub ca_certs: Vec<Vec<u8>>,
    /// `delivery.proxy` as written (read at start: it may be `env:` or `file:`) and
    /// `delivery.no_proxy`.
    pub proxy: Option<Secret>,
    pub no_proxy: Vec<String>,
}

/// `500ms`, `10s`, `2m`, `1h`, `1d` (a space before the unit is allowed).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let digits = s.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let ms = match s[digits..].trim() {
        "ms" => n,
        "s" | "sec" | "secs" | "seconds" => n.checked_mul(1000)?,
        "m" | "min" | "mins" | "minutes" => n.checked_mul(60_000)?,
        "h" | "hour" | "hours" => n.checked_mul(3_600_000)?,
        "d" | "day" | "days" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// An escalation's `after`: `30m`, `4h`, `1d`, `2 workdays`.
pub fn parse_after(s: &str) -> Option<After> {
    let t = s.trim();
    let digits = t.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits > 0 && matches!(t[digits..].trim(), "workday" | "workdays") {
        let n: u32 = t[..digits].parse().ok()?;
        return (n > 0).then_some(After::Workdays(n));
    }
    let d = parse_duration(t)?;
    (!d.is_zero()).then_some(After::Millis(d.as_millis() as i64))
}

/// The default schedule: 1s doubling to 10m, then every 10m until 24h have passed.
pub fn default_retry() -> Vec<Duration> {
    let mut out = Vec::new();
    let mut total = Duration::ZERO;
    let mut d = Duration::from_secs(1);
    let cap = Duration::from_secs(600);
    while total < Duration::from_secs(24 * 3600) {
        out.push(d);
        total += d;
        d = (d * 2).min(cap);
    }
    out
}

fn parse_retry(key: &str, list: &[String]) -> Result<Vec<Duration>, String> {
    if list.is_empty() {
        return Err(format!(
            "`{key}` is empty; list at least one wait, e.g. [\"1s\", \"1m\"]"
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            parse_duration(s).ok_or_else(|| {
                format!(
                    "`{key}[{i}]` is {s:?}, not a duration like \"500ms\", \"30s\", \"5m\", \"1h\""
                )
            })
        })
        .collect()
}

fn check_secret_ref(key: &str, s: &Secret) -> Result<(), String> {
    let v = s.expose();
    if v.trim().is_empty() {
        return Err(format!("`{key}` is empty"));
    }
    if let Some(var) = v.strip_prefix("env:")
        && (var.is_empty() || var.contains(char::is_whitespace))
    {
        return Err(format!(
            "`{key}`: `env:` must be followed by a variable name"
        ));
    }
    if let Some(path) = v.strip_prefix("file:")
        && path.trim().is_empty()
    {
        return Err(format!("`{key}`: `file:` must be followed by a path"));
    }
    Ok(())
}

/// Reads a secret: `env:VAR` from the environment, `file:/path` from the file's first line
/// (relative to the configuration's folder), anything else as written.
pub fn resolve_secret(key: &str, s: &Secret, base: &std::path::Path) -> Result<String, String> {
    let v = s.expose();
    if let Some(var) = v.strip_prefix("env:") {
        return match std::env::var(var) {
            Ok(val) if !val.trim().is_empty() => Ok(val.trim().to_string()),
            Ok(_) => Err(format!("`{key}`: environment variable {var} is empty")),
            Err(_) => Err(format!("`{key}`: environment variable {var} is not set")),
        };
    }
    if let Some(path) = v.strip_prefix("file:") {
        let p = PathBuf::from(path.trim());
        let p = if p.is_absolute() { p } else { base.join(p) };
        let text = std::fs::read_to_string(&p)
            .map_err(|e| format!("`{key}`: cannot read {}: {e}", p.display()))?;
        let line = text.lines().next().unwrap_or("").trim().to_string();
        if line.is_empty() {
            return Err(format!("`{key}`: {} is empty", p.display()));
        }
        return Ok(line);
    }
    Ok(v.trim().to_string())
}

fn parse_levels(key: &str, l: &StringList) -> Result<Vec<Level>, String> {
    l.0.iter()
        .enumerate()
        .map(|(i, s)| match s.as_str() {
            "yellow" => Ok(Level::Yellow),
            "red" => Ok(Level::Red),
            other => Err(format!(
                "`{key}[{i}]` is {other:?}; a level is \"yellow\" or \"red\""
            )),
        })
        .collect()
}

fn parse_labels(
    key: &str,
    labels: &BTreeMap<String, StringList>,
) -> Result<Vec<(String, Vec<String>)>, String> {
    labels
        .iter()
        .map(|(k, v)| {
            if !LABELS.contains(&k.as_str()) {
                return Err(format!(
                    "`{key}.{k}`: no such label; one of {}",
                    LABELS.join(", ")
                ));
            }
            if v.0.is_empty() {
                return Err(format!("`{key}.{k}` lists no value"));
            }
            Ok((k.clone(), v.0.clone()))
        })
        .collect()
}

impl Settings {
    /// Validates the `[delivery]`, `[[receiver]]`, `[[route]]` and `[[escalation]]` sections.
    /// Secrets are not read here (see [`Delivery::start`]), so `redlight check` works
    /// without them.
    pub fn from_config(config: &Config) -> Result<Settings, String> {
        let d = &config.delivery;
        let retry = match &d.retry {
            Some(list) => parse_retry("delivery.retry", list)?,
            None => default_retry(),
        };
        let jitter = d.jitter.unwrap_or(0.2);
        if !(0.0..=1.0).contains(&jitter) {
            return Err(format!(
                "`delivery.jitter` is {jitter}, not a share from 0 to 1"
            ));
        }
        let timeout = match &d.timeout {
            Some(t) => parse_duration(t).filter(|d| !d.is_zero()).ok_or_else(|| {
                format!("`delivery.timeout` is {t:?}, not a duration like \"10s\"")
            })?,
            None => Duration::from_secs(10),
        };
        let concurrency = d.concurrency.unwrap_or(16);
        if concurrency == 0 || concurrency > 1024 {
            return Err(format!(
                "`delivery.concurrency` is {concurrency}; use 1 to 1024"
            ));
        }
        if let Some(u) = &d.external_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(format!(
                "`delivery.external_url` is {u:?}; it must start with http:// or https://"
            ));
        }
        let ca_certs = match &d.ca_file {
            Some(file) => read_ca_file(&config.resolve(std::path::Path::new(file.trim())))?,
            None => Vec::new(),
        };
        if let Some(p) = &d.proxy {
            check_secret_ref("delivery.proxy", p)?;
            let v = p.expose();
            if !(v.starts_with("env:") || v.starts_with("file:")) {
                check_proxy(v)?;
            }
        }
        for (i, host) in d.no_proxy.iter().enumerate() {
            let bad = host.trim().is_empty()
                || host.contains([',', ' '])
                || (host.contains('/') && host.parse::<CidrLike>().is_err());
            if bad {
                return Err(format!(
                    "`delivery.no_proxy[{i}]` is {host:?}; write a host name, an IP address or a CIDR range"
                ));
            }
        }
        let mut receivers = Vec::with_capacity(config.receivers.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, r) in config.receivers.iter().enumerate() {
            receivers.push(receiver_spec(i, r, &retry, timeout, concurrency)?);
            if names.insert(r.name.clone(), i).is_some() {
                return Err(format!(
                    "`receiver[{i}].name` {:?} is used by another receiver",
                    r.name
                ));
            }
        }
        let lookup = |key: &str, list: &StringList| -> Result<Vec<usize>, String> {
            if list.0.is_empty() {
                return Err(format!("`{key}` lists no receiver"));
            }
            let mut out = Vec::new();
            for (j, n) in list.0.iter().enumerate() {
                let idx = *names.get(n).ok_or_else(|| {
                    format!(
                        "`{key}[{j}]` is {n:?}, not the name of a `[[receiver]]`{}",
                        if names.is_empty() {
                            " (none is configured)".to_string()
                        } else {
                            format!(
                                " (there are: {})",
                                config
                                    .receivers
                                    .iter()
                                    .map(|r| r.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }
                    )
                })?;
                if !out.contains(&idx) {
                    out.push(idx);
                }
            }
            Ok(out)
        };
        let mut routes = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let key = format!("route[{i}]");
            routes.push(RouteSpec {
                name: r.name.clone().unwrap_or_else(|| key.clone()),
                matcher: Matcher {
                    levels: parse_levels(&format!("{key}.levels"), &r.levels)?,
                    rule_prefix: r.rule_prefix.0.clone(),
                    departments: r.departments.0.clone(),
                    labels: parse_labels(&format!("{key}.labels"), &r.labels)?,
                },
                receivers: lookup(&format!("{key}.receivers"), &r.receivers)?,
            });
        }
        let mut steps: Vec<StepSpec> = Vec::new();
        for (i, e) in config.escalations.iter().enumerate() {
            let key = format!("escalation[{i}]");
            if e.name.trim().is_empty() {
                return Err(format!("`{key}.name` is empty"));
            }
            if steps.iter().any(|s| s.name == e.name) {
                return Err(format!("`{key}.name` {:?} is used by another step", e.name));
            }
            let after = parse_after(&e.after).ok_or_else(|| {
                format!(
                    "`{key}.after` is {:?}; write e.g. \"30m\", \"4h\" or \"2 workdays\"",
                    e.after
                )
            })?;
            steps.push(StepSpec {
                name: e.name.clone(),
                index: (i + 1) as u32,
                after,
                after_text: e.after.trim().to_string(),
                matcher: Matcher {
                    levels: vec![Level::Red],
                    rule_prefix: e.rule_prefix.0.clone(),
                    departments: e.departments.0.clone(),
                    labels: parse_labels(&format!("{key}.labels"), &e.labels)?,
                },
                receivers: lookup(&format!("{key}.receivers"), &e.receivers)?,
            });
        }
        Ok(Settings {
            receivers,
            routes,
            steps,
            jitter,
            external_url: d
                .external_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_string()),
            ca_certs,
            proxy: d.proxy.clone(),
            no_proxy: d.no_proxy.clone(),
        })
    }
}

/// A `no_proxy` entry with a slash must be a CIDR range (`10.0.0.0/8`).
struct CidrLike;

impl std::str::FromStr for CidrLike {
    type Err = ();
    fn from_str(s: &str) -> Result<CidrLike, ()> {
        let (ip, bits) = s.split_once('/').ok_or(())?;
        let ip: std::net::IpAddr = ip.parse().map_err(|_| ())?;
        let bits: u8 = bits.parse().map_err(|_| ())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (bits <= max).then_some(CidrLike).ok_or(())
    }
}

/// `delivery.proxy`'s value: `http://host:port`, credentials allowed (never shown).
fn check_proxy(v: &str) -> Result<(), String> {
    let uri = v.trim().parse::<http::Uri>().map_err(|_| {
        "`delivery.proxy` is not a URL like \"http://proxy.example:3128\"".to_string()
    })?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(
            "`delivery.proxy` must be an http:// proxy URL with a host, like \
             \"http://proxy.example:3128\" (the tunnel to an https receiver is TLS itself)"
                .to_string(),
        );
    }
    if !cfg!(feature = "https") {
        return Err(
            "`delivery.proxy` is set, and this redlight was built without TLS (a proxy \
             serves https receivers): build it with the default features"
                .to_string(),
        );
    }
    Ok(())
}

/// `delivery.ca_file`: every certificate of the PEM file, each checked to be usable as a
/// root (so that `redlight check` finds a wrong file, not the first delivery).
#[cfg(feature = "https")]
fn read_ca_file(p: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let text = std::fs::read(p)
        .map_err(|e| format!("`delivery.ca_file`: cannot read {}: {e}", p.display()))?;
    let mut certs = Vec::new();
    for (i, c) in CertificateDer::pem_slice_iter(&text).enumerate() {
        let c = c.map_err(|e| {
            format!(
                "`delivery.ca_file`: {}: certificate {} is not valid PEM: {e}",
                p.display(),
                i + 1
            )
        })?;
        rustls::RootCertStore::empty().add(c.clone()).map_err(|e| {
            format!(
                "`delivery.ca_file`: {}: certificate {} cannot be a trusted root: {e}",
                p.display(),
                i + 1
            )
        })?;
        certs.push(c.to_vec());
    }
    if certs.is_empty() {
        return Err(format!(
            "`delivery.ca_file`: {} holds no certificate (-----BEGIN CERTIFICATE-----)",
            p.display()
        ));
    }
    Ok(certs)
}

#[cfg(not(feature = "https"))]
fn read_ca_file(_: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    Err(
        "`delivery.ca_file` is set, and this redlight was built without TLS: build it with \
         the default features (`cargo build --release`)"
            .to_string(),
    )
}

fn receiver_spec(
    i: usize,
    r: &ReceiverConfig,
    retry: &[Duration],
    timeout: Duration,
    concurrency: usize,
) -> Result<ReceiverSpec, String> {
    let key = format!("receiver[{i}]");
    if r.name.trim().is_empty() || r.name.contains(char::is_control) {
        return Err(format!("`{key}.name` is empty"));
    }
    let format = Format::parse(&r.format).ok_or_else(|| {
        format!(
            "`{key}.format` is {:?}; one of {}",
            r.format,
            Format::ALL.map(Format::as_str).join(", ")
        )
    })?;
    check_secret_ref(&format!("{key}.url"), &r.url)?;
    let url = r.url.expose();
    let known = ["env:", "file:", "http://", "https://"];
    if !known.iter().any(|p| url.starts_with(p)) {
        return Err(format!(
            "`{key}.url` must start with http://, https://, env: or file:"
        ));
    }
    let mut secrets = Vec::new();
    if let Some(s) = &r.secret {
        let k = format!("{key}.secret");
        check_secret_ref(&k, s)?;
        secrets.push((k, s.clone()));
    }
    for (j, s) in r.secrets.iter().enumerate() {
        let k = format!("{key}.secrets[{j}]");
        check_secret_ref(&k, s)?;
        secrets.push((k, s.clone()));
    }
    match format {
        Format::Json => {}
        Format::Dingtalk | Format::Feishu if secrets.len() > 1 => {
            return Err(format!(
                "`{key}`: a {format} robot has one signing secret; use `secret`, not `secrets`"
            ));
        }
        Format::Dingtalk | Format::Feishu => {}
        Format::Alertmanager | Format::Wecom if !secrets.is_empty() => {
            return Err(format!(
                "`{key}`: the {format} format is not signed; remove `secret`/`secrets` (a \
                 WeCom robot's key is part of its URL)"
            ));
        }
        Format::Alertmanager | Format::Wecom => {}
    }
    let retry = match &r.retry {
        Some(list) => parse_retry(&format!("{key}.retry"), list)?,
        None => retry.to_vec(),
    };
    let timeout = match &r.timeout {
        Some(t) => parse_duration(t)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("`{key}.timeout` is {t:?}, not a duration like \"10s\""))?,
        None => timeout,
    };
    check_mentions(&key, format, &r.mention.0)?;
    let mention_levels = match &r.mention_levels {
        Some(l) => parse_levels(&format!("{key}.mention_levels"), l)?,
        None => vec![Level::Red],
    };
    let concurrency = match r.concurrency {
        Some(0) => return Err(format!("`{key}.concurrency` must be at least 1")),
        Some(c) => c.min(1024),
        None if format.is_chat() => 1,
        None => concurrency,
    };
    let rate_per_minute = match r.rate_limit_per_minute {
        Some(0) => None,
        Some(n) => Some(n),
        None => format.default_rate_per_minute(),
    };
    let mut headers = Vec::new();
    for (k, v) in &r.headers {
        if http::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(format!("`{key}.headers`: {k:?} is not a header name"));
        }
        check_secret_ref(&format!("{key}.headers.{k}"), v)?;
        headers.push((k.clone(), v.clone()));
    }
    Ok(ReceiverSpec {
        name: r.name.clone(),
        format,
        url: r.url.clone(),
        secrets,
        send_resolved: r.send_resolved,
        rate_per_minute,
        timeout,
        retry,
        concurrency,
        headers,
        mention: r.mention.0.clone(),
        mention_levels,
    })
}

// ---------------------------------------------------------------------------------------
// Receivers with their secrets read.

/// A receiver ready to send: URL and keys read, what must never be shown collected.
pub struct Receiver {
    pub spec: ReceiverSpec,
    url: String,
    keys: Keys,
    headers: Vec<(http::header::HeaderName, http::HeaderValue)>,
    /// Strings that must never appear in logs, metrics or the API.
    hidden: Vec<String>,
}

impl Receiver {
    fn new(i: usize, spec: ReceiverSpec, base: &std::path::Path) -> Result<Receiver, String> {
        let key = format!("receiver[{i}]");
        let url = resolve_secret(&format!("{key}.url"), &spec.url, base)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "`{key}.url` (receiver {:?}) does not start with http:// or https://",
                spec.name
            ));
        }
        if url.parse::<http::Uri>().is_err() {
            return Err(format!(
                "`{key}.url` (receiver {:?}) is not a valid URL",
                spec.name
            ));
        }
        if url.starts_with("https://") && !cfg!(feature = "https") {
            return Err(format!(
                "`{key}.url` (receiver {:?}) is https, and this redlight was built without TLS: \
                 build it with the default features (`cargo build --release`)",
                spec.name
            ));
        }
        let mut hidden = vec![url.clone()];
        // The parts of a URL that carry credentials: query values (DingTalk's access_token,
        // WeCom's key) and long path segments (Feishu's hook id).
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        for pair in query.split('&') {
            if let Some((_, v)) = pair.split_once('=') {
                hidden.push(v.to_string());
            }
        }
        hidden.extend(
            path.split('/')
                .skip(3)
                .filter(|seg| seg.len() >= 16)
                .map(str::to_string),
        );
        let mut keys = Keys::default();
        for (k, s) in &spec.secrets {
            let value = resolve_secret(k, s, base)?;
            hidden.push(value.clone());
            if spec.format == Format::Json {
                let decoded = formats::standard::decode_secret(&value)
                    .map_err(|e| format!("`{k}` (receiver {:?}): {e}", spec.name))?;
                keys.webhook_keys.push(decoded);
            } else {
                keys.secret = Some(value);
            }
        }
        let mut headers = Vec::new();
        for (k, v) in &spec.headers {
            let value = resolve_secret(&format!("{key}.headers.{k}"), v, base)?;
            hidden.push(value.clone());
            let name = http::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("`{key}.headers`: {k:?} is not a header name"))?;
            let value = http::HeaderValue::from_str(&value)
                .map_err(|_| format!("`{key}.headers.{k}` is not a valid header value"))?;
            headers.push((name, value));
        }
        hidden.retain(|h| h.len() >= 6);
        hidden.sort_by_key(|h| std::cmp::Reverse(h.len()));
        Ok(Receiver {
            spec,
            url,
            keys,
            headers,
            hidden,
        })
    }

    /// `text` with every secret of this receiver replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for h in &self.hidden {
            if out.contains(h.as_str()) {
                out = out.replace(h.as_str(), "***");
            }
        }
        out
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.spec.name)
            .field("format", &self.spec.format)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// Rows.

/// One delivery of one notice to one receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub receiver: String,
    pub notice: Notice,
    /// When the row was written (ms since the epoch).
    pub created_ms: i64,
    /// When it is due next.
    pub next_ms: i64,
    /// Failed attempts counted against the retry schedule.
    pub attempts: u32,
    /// Every attempt, throttled ones included.
    pub tries: u32,
    /// Why the last attempt failed (secrets removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it became a dead letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_ms: Option<i64>,
}

/// A red that will escalate unless resolved first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub step: String,
    pub due_ms: i64,
    /// The escalation's own notice, ready to send.
    pub notice: Notice,
}

/// An escalation that was sent; its resolution goes to the step's receivers that ask.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fired {
    pub step: String,
    pub notice: Notice,
}

/// The key that ties a red to its resolution.
pub fn link_key(a: &Alert) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}",
        a.case,
        a.rule,
        a.deadline.as_deref().unwrap_or("")
    )
}

/// The id of an escalation step of the red alert `of`.
pub fn escalation_id(of: &Alert, step: &str, status: Status) -> String {
    alert_id(
        &of.case,
        &of.rule,
        &format!("{}/escalation/{step}", of.id),
        Level::Red,
        status,
    )
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn store_err(store: &Store, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        file: store.file().to_path_buf(),
        message: format!("delivery tables: {e}"),
    }
}

fn decode<T: for<'de> Deserialize<'de>>(
    store: &Store,
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        file: store.file().to_path_buf(),
        message: format!("{what}: {e}"),
    })
}

/// Creates the delivery tables when missing.
pub fn init_tables(store: &Store) -> Result<(), StoreError> {
    let tx = store
        .database()
        .begin_write()
        .map_err(|e| store_err(store, e))?;
    {
        tx.open_table(META).map_err(|e| store_err(store, e))?;
        tx.open_table(OUTBOX).map_err(|e| store_err(store, e))?;
        tx.open_table(OUTBOX_DUE).map_err(|e| store_err(store, e))?;
        tx.open_table(DEAD).map_err(|e| store_err(store, e))?;
        tx.open_table(ESC_PENDING)
            .map_err(|e| store_err(store, e))?;
        tx.open_table(ESC_DUE).map_err(|e| store_err(store, e))?;
        tx.open_table(ESC_FIRED).map_err(|e| store_err(store, e))?;
    }
    tx.commit().map_err(|e| store_err(store, e))
}

// ---------------------------------------------------------------------------------------
// Queries for the API and the command line (they need no running worker).

/// A delivery as the API shows it (waiting or dead): no URL, no secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryView {
    pub seq: u64,
    pub receiver: String,
    pub alert_id: String,
    pub rule: String,
    pub case: String,
    pub level: Level,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<String>,
    pub attempts: u32,
    pub tries: u32,
    /// Why the last attempt failed (secrets removed); empty before the first attempt.
    pub error: String,
    pub created: String,
    /// Waiting deliveries: when the next attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
    /// Dead letters: when it became one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_at: Option<String>,
}

fn rfc3339_utc(ms: i64) -> String {
    format_instant(ms, chrono_tz::UTC)
}

fn view(seq: u64, r: Row) -> DeliveryView {
    DeliveryView {
        seq,
        alert_id: r.notice.alert.id.clone(),
        rule: r.notice.alert.rule.to_string(),
        case: r.notice.alert.case.to_string(),
        level: r.notice.alert.level,
        status: r.notice.alert.status,
        escalation: r.notice.escalation.as_ref().map(|e| e.step.clone()),
        attempts: r.attempts,
        tries: r.tries,
        error: r.last_error.clone().unwrap_or_default(),
        created: rfc3339_utc(r.created_ms),
        next_attempt: r.dead_ms.is_none().then(|| rfc3339_utc(r.next_ms)),
        dead_at: r.dead_ms.map(rfc3339_utc),
        receiver: r.receiver,
    }
}

/// Dead letters with a sequence number above `after` (optionally of one receiver).
pub fn dead_letters(
    store: &Store,
    after: u64,
    limit: usize,
    receiver: Option<&str>,
) -> Result<Vec<DeliveryView>, StoreError> {
    list(store, DEAD, after, limit, receiver)
}

/// Deliveries waiting in the outbox (not yet delivered, or retrying), by sequence number.
pub fn waiting(
    store: &Store,
    after: u64,
    limit: usize,
    receiver: Option<&str>,
) -> Result<Vec<DeliveryView>, StoreError> {
    list(store, OUTBOX, after, limit, receiver)
}

fn list(
    store: &Store,
    table: TableDefinition<u64, &[u8]>,
    after: u64,
    limit: usize,
    receiver: Option<&str>,
) -> Result<Vec<DeliveryView>, StoreError> {
    let tx = store
        .database()
        .begin_read()
        .map_err(|e| store_err(store, e))?;
    let t = match tx.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(store_err(store, e)),
    };
    let mut out = Vec::new();
    for row in t
        .range(after.saturating_add(1)..)
        .map_err(|e| store_err(store, e))?
    {
        if out.len() >= limit {
            break;
        }
        let (k, v) = row.map_err(|e| store_err(store, e))?;
        let r: Row = decode(store, &format!("delivery {}", k.value()), v.value())?;
        if receiver.is_some_and(|want| want != r.receiver) {
            continue;
        }
        out.push(view(k.value(), r));
    }
    Ok(out)
}

/// Which dead letters to re-send: all, or those of a receiver, or these sequence numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Selection {
    #[serde(default)]
    pub receiver: Option<String>,
    #[serde(default)]
    pub seqs: Vec<u64>,
}

impl Selection {
    /// Names neither a receiver nor numbers: every dead letter to re-send, none to drop.
    pub fn names_none(&self) -> bool {
        self.receiver.is_none() && self.seqs.is_empty()
    }
}

/// The dead letters `sel` picks (every one when it names neither numbers nor a receiver),
/// with their rows, in order.
fn selected(
    store: &Store,
    dead: &impl ReadableTable<u64, &'static [u8]>,
    sel: &Selection,
) -> Result<Vec<(u64, Row)>, StoreError> {
    let mut picked = Vec::new();
    for row in dead.iter().map_err(|e| store_err(store, e))? {
        let (k, v) = row.map_err(|e| store_err(store, e))?;
        let seq = k.value();
        if !sel.seqs.is_empty() && !sel.seqs.contains(&seq) {
            continue;
        }
        let r: Row = decode(store, &format!("dead letter {seq}"), v.value())?;
        if sel
            .receiver
            .as_ref()
            .is_some_and(|want| *want != r.receiver)
        {
            continue;
        }
        picked.push((seq, r));
    }
    Ok(picked)
}

/// Deletes the selected dead letters for good: those of a receiver that is gone or will
/// never take them (whose dead letters would otherwise stay, and keep the alert
/// `RedlightDeliveryDeadLetters` firing, for ever). The alerts themselves stay in the
/// store's alert log (`/api/v1/alerts`); only their delivery to that receiver is given up.
/// An empty selection drops nothing: the receiver or the numbers must be named. Returns how
/// many were dropped, per receiver.
pub fn drop_dead(
    store: &Store,
    metrics: Option<&Metrics>,
    sel: &Selection,
) -> Result<BTreeMap<String, u64>, StoreError> {
    let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
    if sel.names_none() {
        return Ok(dropped);
    }
    let tx = store
        .database()
        .begin_write()
        .map_err(|e| store_err(store, e))?;
    {
        let mut dead = tx.open_table(DEAD).map_err(|e| store_err(store, e))?;
        for (seq, r) in selected(store, &dead, sel)? {
            dead.remove(seq).map_err(|e| store_err(store, e))?;
            *dropped.entry(r.receiver).or_default() += 1;
        }
    }
    tx.commit().map_err(|e| store_err(store, e))?;
    for (receiver, n) in &dropped {
        if let Some(m) = metrics {
            m.delivery_dead_letters
                .with_label_values(&[receiver.as_str()])
                .sub(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        tracing::warn!(receiver = %receiver, count = n,
            "delivery dead letters dropped by hand: those alerts will not reach this receiver");
    }
    Ok(dropped)
}

/// Moves the selected dead letters back into the outbox, due now, with a fresh retry
/// schedule; returns how many. A running worker picks them up within a second.
pub fn resend_dead(
    store: &Store,
    metrics: Option<&Metrics>,
    sel: &Selection,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let tx = store
        .database()
        .begin_write()
        .map_err(|e| store_err(store, e))?;
    let mut moved: HashMap<String, i64> = HashMap::new();
    {
        let mut dead = tx.open_table(DEAD).map_err(|e| store_err(store, e))?;
        let mut outbox = tx.open_table(OUTBOX).map_err(|e| store_err(store, e))?;
        let mut due = tx.open_table(OUTBOX_DUE).map_err(|e| store_err(store, e))?;
        for (seq, mut r) in selected(store, &dead, sel)? {
            dead.remove(seq).map_err(|e| store_err(store, e))?;
            r.attempts = 0;
            r.next_ms = now_ms;
            r.dead_ms = None;
            let json = serde_json::to_vec(&r).map_err(|e| store_err(store, e))?;
            outbox
                .insert(seq, json.as_slice())
                .map_err(|e| store_err(store, e))?;
            due.insert((r.receiver.as_str(), now_ms, seq), ())
                .map_err(|e| store_err(store, e))?;
            *moved.entry(r.receiver).or_default() += 1;
        }
    }
    tx.commit().map_err(|e| store_err(store, e))?;
    if let Some(m) = metrics {
        for (r, n) in &moved {
            m.outbox_depth.with_label_values(&[r.as_str()]).add(*n);
            m.delivery_dead_letters
                .with_label_values(&[r.as_str()])
                .sub(*n);
        }
    }
    let n = moved.values().sum::<i64>() as usize;
    if n > 0 {
        tracing::info!(count = n, receiver = ?sel.receiver, "dead letters re-sent");
    }
    Ok(n)
}

/// Per receiver: deliveries waiting, dead letters, the oldest waiting delivery.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiverStats {
    pub receiver: String,
    pub pending: u64,
    pub dead: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending: Option<String>,
}

/// Counts the outbox and the dead letters by receiver (a full scan: for the API and start-up).
pub fn stats(store: &Store) -> Result<Vec<ReceiverStats>, StoreError> {
    let tx = store
        .database()
        .begin_read()
        .map_err(|e| store_err(store, e))?;
    let mut by: BTreeMap<String, (ReceiverStats, Option<i64>)> = BTreeMap::new();
    for (table, dead) in [(OUTBOX, false), (DEAD, true)] {
        let t = match tx.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(store_err(store, e)),
        };
        for row in t.iter().map_err(|e| store_err(store, e))? {
            let (k, v) = row.map_err(|e| store_err(store, e))?;
            let r: Row = decode(store, &format!("delivery {}", k.value()), v.value())?;
            let e = by.entry(r.receiver.clone()).or_insert_with(|| {
                (
                    ReceiverStats {
                        receiver: r.receiver.clone(),
                        ..Default::default()
                    },
                    None,
                )
            });
            if dead {
                e.0.dead += 1;
            } else {
                e.0.pending += 1;
                e.1 = Some(e.1.map_or(r.created_ms, |o| o.min(r.created_ms)));
            }
        }
    }
    Ok(by
        .into_values()
        .map(|(mut s, oldest)| {
            s.oldest_pending = oldest.map(rfc3339_utc);
            s
        })
        .collect())
}

/// How many escalation steps are waiting.
pub fn pending_escalations(store: &Store) -> Result<u64, StoreError> {
    let tx = store
        .database()
        .begin_read()
        .map_err(|e| store_err(store, e))?;
    match tx.open_table(ESC_DUE) {
        Ok(t) => t.len().map_err(|e| store_err(store, e)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(store_err(store, e)),
    }
}

// ---------------------------------------------------------------------------------------
// The core: routing, the commit hook, settling outcomes.

/// Milliseconds since the epoch; the worker's notion of now (tests may fake it).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Options of [`Delivery::start`].
#[derive(Clone, Default)]
pub struct Options {
    /// The clock (default: the wall clock).
    pub clock: Option<Clock>,
    /// Escalation steps wait for [`Delivery::set_engine_time`] to pass their due time
    /// (the daemon sets this; without it only the clock counts).
    pub gate_on_engine_time: bool,
    /// The rate limits' window (default a minute plus a second of margin); tests shorten it.
    pub rate_window: Option<Duration>,
    /// How often a failing receiver is probed (default [`PROBE_EVERY`]); tests shorten it.
    pub probe_every: Option<Duration>,
    /// How often a receiver's waiting retries may be sent early (default
    /// [`CATCH_UP_EVERY`]); tests shorten it.
    pub catch_up_every: Option<Duration>,
}

/// What one commit added, applied to the gauges once the commit is durable.
#[derive(Default)]
struct Stash {
    outbox: HashMap<String, i64>,
    escalations: i64,
}

struct Core {
    store: Arc<Store>,
    receivers: Vec<Arc<Receiver>>,
    by_name: HashMap<String, usize>,
    routes: Vec<RouteSpec>,
    steps: Vec<StepSpec>,
    ctx: Context,
    jitter: f64,
    metrics: Metrics,
    clock: Clock,
    /// The smallest engine clock of the daemon's partitions; `i64::MAX` when not gated.
    engine_time: AtomicI64,
    wake: Notify,
    stash: Mutex<Stash>,
    rng: AtomicU64,
    rate_window: Duration,
    probe_every: Duration,
    catch_up_every: Duration,
    /// Look for due escalation steps at the next turn (the clock or the engine moved).
    escalate_now: std::sync::atomic::AtomicBool,
    /// `delivery.ca_file`'s certificates, for the client.
    ca_certs: Vec<Vec<u8>>,
    /// `delivery.proxy` read, and `delivery.no_proxy` joined as NO_PROXY lists them.
    proxy: Option<(String, String)>,
    /// Deliveries made dead letters, by receiver, as the log says them: once a minute past
    /// the first (a receiver down through the retry schedule turns every alert of those
    /// hours into one).
    dead_said: Mutex<LogThrottle<usize>>,
}

/// What an attempt came to.
#[derive(Debug, Clone)]
enum Outcome {
    Delivered,
    /// Retry on the schedule (at least `min_wait` from now, for a 503's `Retry-After`).
    Retry {
        error: String,
        min_wait: Option<Duration>,
    },
    /// Not an error of the message: the receiver asked us to wait (429, a robot's limit).
    Throttled {
        error: String,
        wait: Duration,
    },
    /// A dead letter until re-sent.
    Refused(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Throttled { .. } => "throttled",
            Outcome::Refused(_) => "refused",
        }
    }
}

struct Completion {
    seq: u64,
    row: Row,
    outcome: Outcome,
    receiver: usize,
    /// Sent before its retry's time to learn whether a failing receiver is back
    /// ([`PROBE_EVERY`]): a failure of it leaves the delivery's schedule as it was.
    probe: bool,
}

impl Core {
    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// A number in [0, 1) (splitmix64): jitter needs no cryptographic randomness.
    fn random(&self) -> f64 {
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn jittered(&self, d: Duration) -> Duration {
        if self.jitter <= 0.0 {
            return d;
        }
        let f = 1.0 + self.jitter * (2.0 * self.random() - 1.0);
        d.mul_f64(f.max(0.0))
    }

    /// The receivers an alert goes to (each once), resolved notices only to those asking.
    fn targets(&self, a: &Alert) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for r in &self.routes {
            if r.matcher.matches(a) {
                for &i in &r.receivers {
                    if !out.contains(&i)
                        && (a.status == Status::Firing || self.receivers[i].spec.send_resolved)
                    {
                        out.push(i);
                    }
                }
            }
        }
        out
    }

    /// When a step of a red raised at `at_ms` is due.
    fn step_due(&self, step: &StepSpec, at_ms: i64) -> i64 {
        match step.after {
            After::Millis(ms) => at_ms.saturating_add(ms),
            After::Workdays(n) => {
                let counting = Counting {
                    cal: &self.ctx.calendar,
                    zone: &self.ctx.zone,
                };
                let target = counting
                    .measure(Unit::Workdays, at_ms)
                    .and_then(|m| counting.instant_at(Unit::Workdays, m + i64::from(n) * DAY));
                match target {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(step = %step.name, error = %e,
                            "escalation in workdays beyond the calendar data; counting calendar days");
                        at_ms.saturating_add(i64::from(n) * DAY)
                    }
                }
            }
        }
    }

    fn escalation_notice(&self, step: &StepSpec, a: &Alert, due_ms: i64) -> Notice {
        let mut alert = a.clone();
        alert.id = escalation_id(a, &step.name, Status::Firing);
        alert.at = self.ctx.zone.format(due_ms);
        Notice {
            alert,
            escalation: Some(Escalation {
                step: step.name.clone(),
                index: step.index,
                of: a.id.clone(),
                after: step.after_text.clone(),
            }),
        }
    }

    /// The commit hook's work: outbox rows and escalation bookkeeping for these alerts.
    fn write_alerts(
        &self,
        tx: &redb::WriteTransaction,
        alerts: &[(u64, &Alert)],
    ) -> Result<Stash, BoxError> {
        let mut stash = Stash::default();
        let relevant = |a: &Alert| {
            (a.level == Level::Red && !self.steps.is_empty()) || !self.targets(a).is_empty()
        };
        if !alerts.iter().any(|(_, a)| relevant(a)) {
            return Ok(stash);
        }
        let now = self.now();
        let mut meta = tx.open_table(META)?;
        let mut outbox = tx.open_table(OUTBOX)?;
        let mut due = tx.open_table(OUTBOX_DUE)?;
        let mut esc_pending = tx.open_table(ESC_PENDING)?;
        let mut esc_due = tx.open_table(ESC_DUE)?;
        let mut esc_fired = tx.open_table(ESC_FIRED)?;
        let mut seq = meta.get("seq")?.map_or(0, |v| v.value());
        let first_seq = seq;
        let mut enqueue =
            |receiver: &str, notice: Notice, stash: &mut Stash| -> Result<(), BoxError> {
                seq += 1;
                let row = Row {
                    receiver: receiver.to_string(),
                    notice,
                    created_ms: now,
                    next_ms: now,
                    attempts: 0,
                    tries: 0,
                    last_error: None,
                    dead_ms: None,
                };
                outbox.insert(seq, serde_json::to_vec(&row)?.as_slice())?;
                due.insert((receiver, now, seq), ())?;
                *stash.outbox.entry(receiver.to_string()).or_default() += 1;
                Ok(())
            };
        for (_, a) in alerts {
            for i in self.targets(a) {
                enqueue(
                    self.receivers[i].name(),
                    Notice::of((*a).clone()),
                    &mut stash,
                )?;
            }
            if a.level != Level::Red || self.steps.is_empty() {
                continue;
            }
            let link = link_key(a);
            match a.status {
                Status::Firing => {
                    let Some(at) = chrono::DateTime::parse_from_rfc3339(&a.at)
                        .ok()
                        .map(|t| t.timestamp_millis())
                    else {
                        tracing::warn!(alert = %a.id, at = %a.at, "alert time unreadable; no escalation");
                        continue;
                    };
                    for step in self.steps.iter().filter(|s| s.matcher.matches(a)) {
                        let due_ms = self.step_due(step, at);
                        let notice = self.escalation_notice(step, a, due_ms);
                        let id = notice.alert.id.clone();
                        let p = Pending {
                            step: step.name.clone(),
                            due_ms,
                            notice,
                        };
                        if esc_pending
                            .insert(
                                (link.as_str(), id.as_str()),
                                serde_json::to_vec(&p)?.as_slice(),
                            )?
                            .is_none()
                        {
                            stash.escalations += 1;
                        }
                        esc_due.insert((due_ms, id.as_str()), link.as_str())?;
                    }
                }
                Status::Resolved => {
                    // Steps not yet due are cancelled.
                    let mut cancel = Vec::new();
                    for row in esc_pending.range((link.as_str(), "")..)? {
                        let (k, v) = row?;
                        let (l, id) = k.value();
                        if l != link {
                            break;
                        }
                        let p: Pending = serde_json::from_slice(v.value())?;
                        cancel.push((id.to_string(), p.due_ms));
                    }
                    for (id, due_ms) in cancel {
                        esc_pending.remove((link.as_str(), id.as_str()))?;
                        esc_due.remove((due_ms, id.as_str()))?;
                        stash.escalations -= 1;
                        tracing::debug!(escalation = %id, "escalation cancelled: the red was resolved");
                    }
                    // Steps already sent: their receivers that ask hear of the resolution.
                    let mut fired = Vec::new();
                    for row in esc_fired.range((link.as_str(), "")..)? {
                        let (k, v) = row?;
                        let (l, id) = k.value();
                        if l != link {
                            break;
                        }
                        let f: Fired = serde_json::from_slice(v.value())?;
                        fired.push((id.to_string(), f));
                    }
                    for (id, f) in fired {
                        esc_fired.remove((link.as_str(), id.as_str()))?;
                        let Some(step) = self.steps.iter().find(|s| s.name == f.step) else {
                            continue;
                        };
                        let mut alert = (*a).clone();
                        alert.id = escalation_id(&f.notice_origin(), &step.name, Status::Resolved);
                        let notice = Notice {
                            alert,
                            escalation: f.notice.escalation.clone(),
                        };
                        for &i in &step.receivers {
                            if self.receivers[i].spec.send_resolved {
                                enqueue(self.receivers[i].name(), notice.clone(), &mut stash)?;
                            }
                        }
                    }
                }
            }
        }
        if seq != first_seq {
            meta.insert("seq", seq)?;
        }
        Ok(stash)
    }

    fn apply_stash(&self, stash: Stash) {
        let mut any = false;
        for (r, n) in stash.outbox {
            self.metrics
                .outbox_depth
                .with_label_values(&[r.as_str()])
                .add(n);
            any = true;
        }
        if stash.escalations != 0 {
            self.metrics.escalations_pending.add(stash.escalations);
            any = true;
        }
        if any {
            self.wake.notify_one();
        }
    }

    /// Sends the escalation steps that are due (by the clock and the engine's time):
    /// removes them from the pending tables and writes their deliveries, in one transaction.
    fn fire_escalations(&self) -> Result<usize, StoreError> {
        let gate = self.now().min(self.engine_time.load(Ordering::Acquire));
        let store = &*self.store;
        {
            let tx = store
                .database()
                .begin_read()
                .map_err(|e| store_err(store, e))?;
            let t = tx.open_table(ESC_DUE).map_err(|e| store_err(store, e))?;
            match t.first().map_err(|e| store_err(store, e))? {
                Some((k, _)) if k.value().0 <= gate => {}
                _ => return Ok(0),
            }
        }
        let now = self.now();
        let tx = store
            .database()
            .begin_write()
            .map_err(|e| store_err(store, e))?;
        let mut stash = Stash::default();
        let mut fired_count = 0usize;
        {
            let mut meta = tx.open_table(META).map_err(|e| store_err(store, e))?;
            let mut outbox = tx.open_table(OUTBOX).map_err(|e| store_err(store, e))?;
            let mut due = tx.open_table(OUTBOX_DUE).map_err(|e| store_err(store, e))?;
            let mut esc_pending = tx
                .open_table(ESC_PENDING)
                .map_err(|e| store_err(store, e))?;
            let mut esc_due = tx.open_table(ESC_DUE).map_err(|e| store_err(store, e))?;
            let mut esc_fired = tx.open_table(ESC_FIRED).map_err(|e| store_err(store, e))?;
            let mut batch = Vec::new();
            for row in esc_due
                .range((i64::MIN, "")..=(gate, "\u{10ffff}"))
                .map_err(|e| store_err(store, e))?
            {
                let (k, v) = row.map_err(|e| store_err(store, e))?;
                let (due_ms, id) = k.value();
                batch.push((due_ms, id.to_string(), v.value().to_string()));
                if batch.len() >= 1000 {
                    break;
                }
            }
            let mut seq = meta
                .get("seq")
                .map_err(|e| store_err(store, e))?
                .map_or(0, |v| v.value());
            for (due_ms, id, link) in batch {
                esc_due
                    .remove((due_ms, id.as_str()))
                    .map_err(|e| store_err(store, e))?;
                let Some(p) = esc_pending
                    .remove((link.as_str(), id.as_str()))
                    .map_err(|e| store_err(store, e))?
                else {
                    continue;
                };
                let p: Pending = decode(store, &format!("escalation {id}"), p.value())?;
                stash.escalations -= 1;
                let Some(step) = self.steps.iter().find(|s| s.name == p.step) else {
                    tracing::info!(escalation = %id, step = %p.step,
                        "escalation step no longer configured; dropped");
                    continue;
                };
                fired_count += 1;
                self.metrics
                    .escalations
                    .with_label_values(&[step.name.as_str()])
                    .inc();
                tracing::info!(escalation = %id, step = %step.name, of = ?p.notice.escalation.as_ref().map(|e| &e.of),
                    case = %p.notice.alert.case, rule = %p.notice.alert.rule, "red escalated");
                for &i in &step.receivers {
                    let r = &self.receivers[i];
                    seq += 1;
                    let row = Row {
                        receiver: r.name().to_string(),
                        notice: p.notice.clone(),
                        created_ms: now,
                        next_ms: now,
                        attempts: 0,
                        tries: 0,
                        last_error: None,
                        dead_ms: None,
                    };
                    let json = serde_json::to_vec(&row).map_err(|e| store_err(store, e))?;
                    outbox
                        .insert(seq, json.as_slice())
                        .map_err(|e| store_err(store, e))?;
                    due.insert((r.name(), now, seq), ())
                        .map_err(|e| store_err(store, e))?;
                    *stash.outbox.entry(r.name().to_string()).or_default() += 1;
                }
                if step
                    .receivers
                    .iter()
                    .any(|&i| self.receivers[i].spec.send_resolved)
                {
                    let f = Fired {
                        step: step.name.clone(),
                        notice: p.notice.clone(),
                    };
                    let json = serde_json::to_vec(&f).map_err(|e| store_err(store, e))?;
                    esc_fired
                        .insert((link.as_str(), id.as_str()), json.as_slice())
                        .map_err(|e| store_err(store, e))?;
                }
            }
            meta.insert("seq", seq).map_err(|e| store_err(store, e))?;
        }
        tx.commit().map_err(|e| store_err(store, e))?;
        self.apply_stash(stash);
        Ok(fired_count)
    }

    /// Due rows of one receiver, in due order, skipping those in flight and those `held`
    /// back (a resolution whose firing is not delivered yet, [`Lane::unsettled`]; counted in
    /// the third number with those in flight). `held` is asked about each row in order, and
    /// learns of those it lets through: a firing and its resolution due together are not
    /// sent together.
    fn due_rows(
        &self,
        receiver: &str,
        now: i64,
        limit: usize,
        busy: &HashSet<u64>,
        held: &mut dyn FnMut(u64, &Row) -> bool,
    ) -> Result<DueRows, StoreError> {
        let store = &*self.store;
        let tx = store
            .database()
            .begin_read()
            .map_err(|e| store_err(store, e))?;
        let due = tx.open_table(OUTBOX_DUE).map_err(|e| store_err(store, e))?;
        let outbox = tx.open_table(OUTBOX).map_err(|e| store_err(store, e))?;
        let mut out = Vec::new();
        let mut next = None;
        let mut passed = 0;
        for row in due
            .range((receiver, i64::MIN, 0)..=(receiver, i64::MAX, u64::MAX))
            .map_err(|e| store_err(store, e))?
        {
            let (k, _) = row.map_err(|e| store_err(store, e))?;
            let (_, next_ms, seq) = k.value();
            if next_ms > now {
                next = Some(next_ms);
                break;
            }
            if busy.contains(&seq) {
                passed += 1;
                continue;
            }
            if out.len() >= limit {
                next = Some(next_ms);
                break;
            }
            if let Some(v) = outbox.get(seq).map_err(|e| store_err(store, e))? {
                let r: Row = decode(store, &format!("delivery {seq}"), v.value())?;
                if held(seq, &r) {
                    passed += 1;
                    continue;
                }
                out.push((seq, r));
            }
        }
        Ok((out, next, passed))
    }

    /// The deliveries to `receiver` in the outbox, by the light they are of
    /// ([`Lane::unsettled`]: after a restart a resolution waits for its firing, whether that
    /// waits for a retry or is due), and whether one waits for a retry (its next attempt
    /// after now).
    fn outbox_of(&self, receiver: &str) -> Result<(Unsettled, bool), StoreError> {
        let store = &*self.store;
        let tx = store
            .database()
            .begin_read()
            .map_err(|e| store_err(store, e))?;
        let due = tx.open_table(OUTBOX_DUE).map_err(|e| store_err(store, e))?;
        let outbox = tx.open_table(OUTBOX).map_err(|e| store_err(store, e))?;
        let now = self.now();
        let mut pending = Unsettled::default();
        let mut retrying = false;
        for row in due
            .range((receiver, i64::MIN, 0)..=(receiver, i64::MAX, u64::MAX))
            .map_err(|e| store_err(store, e))?
        {
            let (k, _) = row.map_err(|e| store_err(store, e))?;
            let (_, next_ms, seq) = k.value();
            retrying |= next_ms > now;
            if let Some(v) = outbox.get(seq).map_err(|e| store_err(store, e))? {
                let r: Row = decode(store, &format!("delivery {seq}"), v.value())?;
                pending.add(seq, &r);
            }
        }
        Ok((pending, retrying))
    }

    /// Records outcomes in one transaction.
    fn settle(&self, done: &[Completion]) -> Result<(), StoreError> {
        let store = &*self.store;
        let now = self.now();
        let tx = store
            .database()
            .begin_write()
            .map_err(|e| store_err(store, e))?;
        let mut depth: HashMap<&str, i64> = HashMap::new();
        let mut dead_n: HashMap<&str, i64> = HashMap::new();
        {
            let mut outbox = tx.open_table(OUTBOX).map_err(|e| store_err(store, e))?;
            let mut due = tx.open_table(OUTBOX_DUE).map_err(|e| store_err(store, e))?;
            let mut dead = tx.open_table(DEAD).map_err(|e| store_err(store, e))?;
            for c in done {
                let r = &self.receivers[c.receiver];
                let name = r.name();
                let old_key = (name, c.row.next_ms, c.seq);
                let mut row = c.row.clone();
                row.tries += 1;
                let to_dead = |row: &mut Row, why: String| {
                    row.last_error = Some(why);
                    row.dead_ms = Some(now);
                };
                let mut kill = None;
                match &c.outcome {
                    Outcome::Delivered => {
                        outbox.remove(c.seq).map_err(|e| store_err(store, e))?;
                        due.remove(old_key).map_err(|e| store_err(store, e))?;
                        *depth.entry(name).or_default() -= 1;
                        self.metrics
                            .delivery_latency
                            .with_label_values(&[name])
                            .observe((now - row.created_ms).max(0) as f64 / 1000.0);
                        continue;
                    }
                    Outcome::Retry { error, .. } if c.probe => {
                        // A probe's failure: tried, but the schedule is as it was.
                        row.last_error = Some(error.clone());
                    }
                    Outcome::Retry { error, min_wait } => {
                        row.attempts += 1;
                        row.last_error = Some(error.clone());
                        match r.spec.retry_after(row.attempts) {
                            Some(wait) => {
                                let mut wait = self.jittered(wait);
                                if let Some(m) = min_wait {
                                    wait = wait.max(*m);
                                }
                                row.next_ms = now + wait.as_millis() as i64;
                            }
                            None => {
                                kill = Some(format!(
                                    "gave up after {} attempts (the retry schedule is exhausted); last error: {error}",
                                    row.attempts
                                ));
                            }
                        }
                    }
                    Outcome::Throttled { error, wait } => {
                        row.last_error = Some(error.clone());
                        let after = now + wait.as_millis() as i64;
                        // A probe's delivery keeps a later retry it had.
                        row.next_ms = if c.probe {
                            row.next_ms.max(after)
                        } else {
                            after
                        };
                    }
                    Outcome::Refused(why) => kill = Some(why.clone()),
                }
                if let Some(why) = kill {
                    to_dead(&mut row, why);
                    outbox.remove(c.seq).map_err(|e| store_err(store, e))?;
                    due.remove(old_key).map_err(|e| store_err(store, e))?;
                    let json = serde_json::to_vec(&row).map_err(|e| store_err(store, e))?;
                    dead.insert(c.seq, json.as_slice())
                        .map_err(|e| store_err(store, e))?;
                    *depth.entry(name).or_default() -= 1;
                    *dead_n.entry(name).or_default() += 1;
                    let said = self
                        .dead_said
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .say(c.receiver, Instant::now());
                    if let Some(unsaid) = said {
                        tracing::warn!(receiver = name, notice = %row.notice.alert.id, seq = c.seq,
                            attempts = row.attempts, reason = ?row.last_error, unsaid,
                            "delivery is a dead letter{}", unsaid_note(unsaid));
                    }
                } else {
                    due.remove(old_key).map_err(|e| store_err(store, e))?;
                    let json = serde_json::to_vec(&row).map_err(|e| store_err(store, e))?;
                    outbox
                        .insert(c.seq, json.as_slice())
                        .map_err(|e| store_err(store, e))?;
                    due.insert((name, row.next_ms, c.seq), ())
                        .map_err(|e| store_err(store, e))?;
                }
            }
        }
        tx.commit().map_err(|e| store_err(store, e))?;
        for (r, n) in depth {
            self.metrics.outbox_depth.with_label_values(&[r]).add(n);
        }
        for (r, n) in dead_n {
            self.metrics
                .delivery_dead_letters
                .with_label_values(&[r])
                .add(n);
            self.metrics
                .deliveries
                .with_label_values(&[r, "dead"])
                .inc_by(n as u64);
        }
        Ok(())
    }

    /// At start: rows of receivers no longer configured become dead letters (visible and
    /// re-sendable once the receiver is back); the gauges are set from the tables.
    fn startup(&self) -> Result<(), StoreError> {
        let store = &*self.store;
        let now = self.now();
        let tx = store
            .database()
            .begin_write()
            .map_err(|e| store_err(store, e))?;
        let mut orphans = 0usize;
        {
            let mut outbox = tx.open_table(OUTBOX).map_err(|e| store_err(store, e))?;
            let mut due = tx.open_table(OUTBOX_DUE).map_err(|e| store_err(store, e))?;
            let mut dead = tx.open_table(DEAD).map_err(|e| store_err(store, e))?;
            let mut moved = Vec::new();
            for row in outbox.iter().map_err(|e| store_err(store, e))? {
                let (k, v) = row.map_err(|e| store_err(store, e))?;
                let r: Row = decode(store, &format!("delivery {}", k.value()), v.value())?;
                if !self.by_name.contains_key(&r.receiver) {
                    moved.push((k.value(), r));
                }
            }
            for (seq, mut r) in moved {
                outbox.remove(seq).map_err(|e| store_err(store, e))?;
                due.remove((r.receiver.as_str(), r.next_ms, seq))
                    .map_err(|e| store_err(store, e))?;
                r.last_error = Some(format!(
                    "receiver {:?} is not in the configuration any more; add it back and re-send",
                    r.receiver
                ));
                r.dead_ms = Some(now);
                let json = serde_json::to_vec(&r).map_err(|e| store_err(store, e))?;
                dead.insert(seq, json.as_slice())
                    .map_err(|e| store_err(store, e))?;
                orphans += 1;
            }
        }
        tx.commit().map_err(|e| store_err(store, e))?;
        if orphans > 0 {
            tracing::warn!(
                count = orphans,
                "deliveries to receivers no longer configured were moved to the dead letters"
            );
        }
        self.metrics.outbox_depth.reset();
        self.metrics.delivery_dead_letters.reset();
        for r in &self.receivers {
            self.metrics
                .outbox_depth
                .with_label_values(&[r.name()])
                .set(0);
            self.metrics
                .delivery_dead_letters
                .with_label_values(&[r.name()])
                .set(0);
        }
        for s in stats(store)? {
            self.metrics
                .outbox_depth
                .with_label_values(&[s.receiver.as_str()])
                .set(s.pending as i64);
            self.metrics
                .delivery_dead_letters
                .with_label_values(&[s.receiver.as_str()])
                .set(s.dead as i64);
        }
        self.metrics
            .escalations_pending
            .set(pending_escalations(store)? as i64);
        Ok(())
    }
}

impl Fired {
    /// The escalated red as it was (its id is the `of` of the step).
    fn notice_origin(&self) -> Alert {
        let mut a = self.notice.alert.clone();
        if let Some(e) = &self.notice.escalation {
            a.id = e.of.clone();
        }
        a
    }
}

/// Due rows of a receiver, when the next one after them is due, and how many due rows
/// were passed over for being in flight or not yet settled.
type DueRows = (Vec<(u64, Row)>, Option<i64>, usize);

/// A light as a receiver sees it: case, rule and level.
type LightKey = (String, String, Level);

fn light_key(row: &Row) -> LightKey {
    let a = &row.notice.alert;
    (a.case.to_string(), a.rule.to_string(), a.level)
}

/// A receiver's deliveries on their way and not yet delivered or dead (in flight, or waiting
/// for a retry; after a restart every one the outbox holds), by light: a resolution waits
/// while a delivery of its light that came before it (its firing) is here, so that it never
/// overtakes it. Without this a firing that failed once
/// was retried after its resolution had gone, and a chat group read `红灯解除` before
/// `红灯告警`, and an Alertmanager receiver, taking the later firing as the news, showed
/// the red for good.
#[derive(Default)]
struct Unsettled {
    by_light: HashMap<LightKey, BTreeSet<u64>>,
}

impl Unsettled {
    fn add(&mut self, seq: u64, row: &Row) {
        self.by_light.entry(light_key(row)).or_default().insert(seq);
    }

    fn settled(&mut self, seq: u64, row: &Row) {
        let key = light_key(row);
        if let Some(seqs) = self.by_light.get_mut(&key) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.by_light.remove(&key);
            }
        }
    }

    /// Whether the delivery waits: a resolution with a delivery of its light before it
    /// still unsettled. One that does not wait is taken as on its way.
    fn hold_or_send(&mut self, seq: u64, row: &Row) -> bool {
        let seqs = self.by_light.entry(light_key(row)).or_default();
        if row.notice.alert.status == Status::Resolved
            && seqs.first().is_some_and(|&first| first < seq)
        {
            return true;
        }
        seqs.insert(seq);
        false
    }
}

/// The hook the store calls inside each batch's transaction.
struct Hook(Arc<Core>);

impl CommitHook for Hook {
    fn write(
        &self,
        tx: &redb::WriteTransaction,
        alerts: &[(u64, &Alert)],
    ) -> Result<bool, BoxError> {
        let stash = self.0.write_alerts(tx, alerts)?;
        // Deliveries are sent as soon as they are seen: their transaction must be durable.
        let deliveries = !stash.outbox.is_empty();
        if let Ok(mut s) = self.0.stash.lock() {
            *s = stash;
        }
        Ok(deliveries)
    }

    fn committed(&self) {
        let stash = match self.0.stash.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(_) => return,
        };
        self.0.apply_stash(stash);
    }
}

// ---------------------------------------------------------------------------------------
// The worker.

#[cfg(not(feature = "https"))]
type Connector = hyper_util::client::legacy::connect::HttpConnector;
#[cfg(feature = "https")]
type Connector = hyper_rustls::HttpsConnector<Proxied>;

/// The TCP connection of a request: direct, or for an `https://` receiver not in
/// `delivery.no_proxy`, a tunnel through `delivery.proxy` (HTTP CONNECT) that TLS then
/// runs in, end to end with the receiver.
#[cfg(feature = "https")]
#[derive(Clone)]
struct Proxied {
    http: hyper_util::client::legacy::connect::HttpConnector,
    matcher: Option<Arc<hyper_util::client::proxy::matcher::Matcher>>,
}

#[cfg(feature = "https")]
impl tower_service::Service<http::Uri> for Proxied {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        // Both connectors are always ready: each call below waits for its own.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let http = self.http.clone();
        let via = self.matcher.as_ref().and_then(|m| m.intercept(&dst));
        Box::pin(async move {
            let Some(via) = via else {
                let mut http = http;
                std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut http, cx))
                    .await?;
                return Ok(tower_service::Service::call(&mut http, dst).await?);
            };
            // The proxy's host and port only: its credentials are never shown.
            let proxy = via
                .uri()
                .authority()
                .map(|a| a.as_str().rsplit('@').next().unwrap_or("").to_string())
                .unwrap_or_default();
            let mut tunnel =
                hyper_util::client::legacy::connect::proxy::Tunnel::new(via.uri().clone(), http);
            if let Some(auth) = via.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut tunnel, cx))
                .await
                .map_err(|e| format!("proxy {proxy}: {e}"))?;
            tower_service::Service::call(&mut tunnel, dst)
                .await
                .map_err(|e| format!("proxy {proxy}: {e}").into())
        })
    }
}

type Client = hyper_util::client::legacy::Client<Connector, Full<Bytes>>;

/// The HTTP client of every receiver; `https://` certificates are checked against the
/// Mozilla roots and `ca_certs` (`delivery.ca_file`, already checked to be roots), and
/// `https://` receivers are reached through `proxy` (its URL and NO_PROXY list) if set.
fn client(ca_certs: &[Vec<u8>], proxy: Option<&(String, String)>) -> Client {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    #[cfg(feature = "https")]
    let connector = {
        http.enforce_http(false);
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for der in ca_certs {
            if let Err(e) = roots.add(rustls::pki_types::CertificateDer::from(der.clone())) {
                tracing::error!(error = %e, "a certificate of delivery.ca_file is not usable");
            }
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let matcher = proxy.map(|(url, no)| {
            Arc::new(
                hyper_util::client::proxy::matcher::Matcher::builder()
                    .https(url.clone())
                    .no(no.clone())
                    .build(),
            )
        });
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(Proxied { http, matcher })
    };
    #[cfg(not(feature = "https"))]
    let connector = {
        let _ = (ca_certs, proxy);
        http
    };
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(h: &http::HeaderMap, now_ms: i64) -> Option<Duration> {
    let v = h.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let d = match v.parse::<u64>() {
        Ok(s) => Duration::from_secs(s),
        Err(_) => {
            let t = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            Duration::from_millis((t.timestamp_millis() - now_ms).max(0) as u64)
        }
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// A body's first 300 characters as text, on one line (also dead letters' payloads).
pub(crate) fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    let mut end = s.len().min(300);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].replace(['\n', '\r'], " ")
}

/// One attempt.
async fn attempt(client: &Client, core: &Core, r: &Receiver, row: &Row) -> Outcome {
    let now = core.now();
    let req = match formats::build(
        r.spec.format,
        &core.ctx,
        &row.notice,
        r.name(),
        &r.url,
        &r.keys,
        r.spec.mentions(&row.notice),
        wall_ms(),
    ) {
        Ok(req) => req,
        Err(e) => return Outcome::Refused(format!("cannot build the request: {e}")),
    };
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri(req.url.as_str())
        .header(
            http::header::USER_AGENT,
            concat!("redlight/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in &req.headers {
        builder = builder.header(*k, v.as_str());
    }
    for (k, v) in &r.headers {
        builder = builder.header(k, v);
    }
    let request = match builder.body(Full::new(Bytes::from(req.body))) {
        Ok(x) => x,
        Err(e) => return Outcome::Refused(r.redact(&format!("invalid request: {e}"))),
    };
    let sent = async {
        let resp = client.request(request).await?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok::<_, hyper_util::client::legacy::Error>((parts, body))
    };
    let (parts, body) = match tokio::time::timeout(r.spec.timeout, sent).await {
        Err(_) => {
            return Outcome::Retry {
                error: format!("no answer within {:?}", r.spec.timeout),
                min_wait: None,
            };
        }
        Ok(Err(e)) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            return Outcome::Retry {
                error: r.redact(&msg),
                min_wait: None,
            };
        }
        Ok(Ok(x)) => x,
    };
    let status = parts.status;
    let after = retry_after(&parts.headers, now);
    let what = || {
        r.redact(&format!(
            "HTTP {}{}",
            status,
            match excerpt(&body) {
                b if b.is_empty() => String::new(),
                b => format!(": {b}"),
            }
        ))
    };
    if status.is_success() {
        return match check_reply(r.spec.format, &body) {
            Reply::Ok => Outcome::Delivered,
            Reply::Throttled(e) => Outcome::Throttled {
                error: r.redact(&e),
                wait: after.unwrap_or(CHAT_THROTTLE),
            },
            Reply::Transient(e) => Outcome::Retry {
                error: r.redact(&e),
                min_wait: after,
            },
            Reply::Refused(e) => Outcome::Refused(r.redact(&e)),
        };
    }
    match status.as_u16() {
        429 => match after {
            Some(wait) => Outcome::Throttled {
                error: what(),
                wait,
            },
            None => Outcome::Retry {
                error: what(),
                min_wait: None,
            },
        },
        408 | 500..=599 => Outcome::Retry {
            error: what(),
            min_wait: after,
        },
        _ => Outcome::Refused(what()),
    }
}

/// The dispatcher's view of one receiver.
#[derive(Default)]
struct Lane {
    inflight: usize,
    paused_until: Option<Instant>,
    /// Start times of the sends in the rate window.
    window: VecDeque<Instant>,
    next_due: Option<i64>,
    /// Failed attempts to be retried since the receiver last took one, and when the first
    /// of them came: the log says the failures (and refusals) once a minute
    /// ([`LogThrottle`], by outcome), and says when the receiver takes deliveries again.
    failed: u64,
    failing_since: Option<Instant>,
    said: LogThrottle<&'static str>,
    /// Set when the receiver takes a delivery after failures: the deliveries waiting for
    /// a retry are sent now, not at their retry's time (up to an hour away on the default
    /// schedule), until none is left or one fails. At most once a [`CATCH_UP_EVERY`].
    catch_up: bool,
    caught_up_at: Option<Instant>,
    /// A catch-up owed: the receiver came back within [`CATCH_UP_EVERY`] of the last one,
    /// so it starts at this time, if the receiver still takes deliveries then.
    catch_up_owed: Option<Instant>,
    /// When the last failed attempt ended (probes are [`PROBE_EVERY`] after it).
    failed_at: Option<Instant>,
    /// The deliveries in flight or waiting for a retry (after a restart, every one in the
    /// outbox), by light.
    unsettled: Unsettled,
}

/// How often a receiver's waiting retries may be sent early, on it taking deliveries again
/// (a receiver that fails now and then would otherwise use its retries up fast).
const CATCH_UP_EVERY: Duration = Duration::from_secs(60);

/// How often a failing receiver whose deliveries all wait for a retry is probed: the
/// delivery due soonest is sent before its time, so that a receiver back from an outage is
/// noticed within this (and its waiting deliveries sent, the catch-up), not at the next
/// retry of its schedule (10 minutes apart on the default schedule, an hour on one ending
/// in `1h`) or the next new alert. A failed probe counts as a try, not as an attempt of the
/// schedule: probing never brings a delivery nearer to a dead letter.
const PROBE_EVERY: Duration = Duration::from_secs(30);

impl Lane {
    fn room(&mut self, r: &Receiver, now: Instant, window: Duration) -> usize {
        if self.paused_until.is_some_and(|p| p > now) {
            return 0;
        }
        self.paused_until = None;
        let mut room = r.spec.concurrency.saturating_sub(self.inflight);
        if let Some(limit) = r.spec.rate_per_minute {
            while self
                .window
                .front()
                .is_some_and(|t| now.duration_since(*t) >= window)
            {
                self.window.pop_front();
            }
            room = room.min((limit as usize).saturating_sub(self.window.len()));
        }
        room
    }

    /// When this lane may send again, if it is held back.
    fn held_until(&self, r: &Receiver, window: Duration) -> Option<Instant> {
        if let Some(p) = self.paused_until {
            return Some(p);
        }
        match r.spec.rate_per_minute {
            Some(limit) if self.window.len() >= limit as usize => {
                self.window.front().map(|t| *t + window)
            }
            _ => None,
        }
    }
}

/// The running delivery: a handle to wake it, feed it the engine's time and stop it.
pub struct Delivery {
    core: Arc<Core>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The egress proxy's URL (read, and checked) and the hosts that bypass it.
fn proxy_of(config: &Config, settings: &Settings) -> Result<Option<(String, String)>, String> {
    match &settings.proxy {
        Some(p) => {
            let url = resolve_secret("delivery.proxy", p, &config.base)?;
            check_proxy(&url)?;
            Ok(Some((url, settings.no_proxy.join(","))))
        }
        None => Ok(None),
    }
}

/// What the start would refuse in the receivers' and the proxy's secrets (`env:VAR` not set,
/// `file:/path` unreadable, a `whsec_` key that does not decode), each naming its key: for
/// `redlight check`, which reads them as the start does, so that a check run with the
/// daemon's environment (the systemd unit's `ExecStartPre`) fails where the start would.
pub fn secret_problems(config: &Config) -> Vec<String> {
    let settings = match Settings::from_config(config) {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    if let Err(e) = proxy_of(config, &settings) {
        problems.push(e);
    }
    for (i, spec) in settings.receivers.iter().enumerate() {
        if let Err(e) = Receiver::new(i, spec.clone(), &config.base) {
            problems.push(e);
        }
    }
    problems
}

impl Delivery {
    /// Reads the receivers' secrets (an error names the key), attaches the outbox to the
    /// store's commits, and starts the worker on the current tokio runtime.
    pub fn start(
        config: &Config,
        store: Arc<Store>,
        metrics: Metrics,
        options: Options,
    ) -> anyhow::Result<Arc<Delivery>> {
        let settings = Settings::from_config(config).map_err(anyhow::Error::msg)?;
        let rules = Arc::new(config.load_rules()?);
        let calendar = Arc::new(config.load_calendar()?);
        let ctx = Context::new(rules, calendar, settings.external_url.clone());
        let proxy = proxy_of(config, &settings).map_err(anyhow::Error::msg)?;
        let mut receivers = Vec::new();
        let mut by_name = HashMap::new();
        for (i, spec) in settings.receivers.iter().enumerate() {
            let r = Receiver::new(i, spec.clone(), &config.base).map_err(anyhow::Error::msg)?;
            if r.spec.format == Format::Json && r.keys.webhook_keys.is_empty() {
                tracing::warn!(receiver = %r.spec.name,
                    "json receiver without `secret`/`secrets`: its requests are not signed");
            }
            by_name.insert(r.spec.name.clone(), i);
            receivers.push(Arc::new(r));
        }
        init_tables(&store)?;
        let seed = (wall_ms() as u64) ^ (u64::from(std::process::id()) << 32);
        let core = Arc::new(Core {
            store: store.clone(),
            receivers,
            by_name,
            routes: settings.routes,
            steps: settings.steps,
            ctx,
            jitter: settings.jitter,
            metrics,
            clock: options.clock.unwrap_or_else(|| Arc::new(wall_ms)),
            engine_time: AtomicI64::new(if options.gate_on_engine_time {
                i64::MIN
            } else {
                i64::MAX
            }),
            wake: Notify::new(),
            stash: Mutex::new(Stash::default()),
            rng: AtomicU64::new(seed),
            rate_window: options.rate_window.unwrap_or(RATE_WINDOW),
            probe_every: options.probe_every.unwrap_or(PROBE_EVERY),
            catch_up_every: options.catch_up_every.unwrap_or(CATCH_UP_EVERY),
            escalate_now: std::sync::atomic::AtomicBool::new(true),
            ca_certs: settings.ca_certs,
            proxy,
            dead_said: Mutex::default(),
        });
        core.startup()?;
        store.set_commit_hook(Arc::new(Hook(core.clone())));
        tracing::info!(
            receivers = core.receivers.len(),
            routes = core.routes.len(),
            escalation_steps = core.steps.len(),
            "alert delivery started"
        );
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(core.clone(), stop_rx));
        Ok(Arc::new(Delivery {
            core,
            stop,
            task: Mutex::new(Some(task)),
        }))
    }

    /// Look at the outbox now (after a resend, a clock change in tests).
    pub fn wake(&self) {
        self.core.escalate_now.store(true, Ordering::Release);
        self.core.wake.notify_one();
    }

    /// The smallest engine clock over the daemon's partitions: escalation steps due after it
    /// wait (the red's resolution may still be in a backlog).
    pub fn set_engine_time(&self, ms: i64) {
        // Looked at by the worker's periodic escalation check (every 200 ms).
        self.core.engine_time.store(ms, Ordering::Release);
    }

    /// The names of the configured receivers.
    pub fn receiver_names(&self) -> Vec<String> {
        self.core
            .receivers
            .iter()
            .map(|r| r.name().to_string())
            .collect()
    }

    /// Stops dispatching, waits for the requests in flight (at most their timeout) and for
    /// their outcomes to be recorded.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task
            && let Err(e) = task.await
            && !e.is_cancelled()
        {
            tracing::error!(error = %e, "delivery worker ended abnormally");
        }
        self.core.store.clear_commit_hook();
    }
}

/// The dispatcher: picks due rows per receiver within its concurrency and rate limit, sends
/// them, and hands the outcomes to the settler, which records them in batches.
async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let client = client(&core.ca_certs, core.proxy.as_ref());
    let mut lanes: Vec<Lane> = core
        .receivers
        .iter()
        .map(|r| {
            let (unsettled, retrying) = core.outbox_of(r.name()).unwrap_or_else(|e| {
                tracing::warn!(receiver = %r.name(), error = %e, "reading the outbox");
                (Unsettled::default(), false)
            });
            Lane {
                // Deliveries that failed before a restart and wait for their retry: the
                // receiver's first success now sends them too, as if it had failed in this run.
                failing_since: retrying.then(Instant::now),
                unsettled,
                ..Lane::default()
            }
        })
        .collect();
    // Rows sent or being settled: not to be picked again until their outcome is durable.
    let busy: Arc<Mutex<HashSet<u64>>> = Arc::new(Mutex::new(HashSet::new()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Completion>();
    let (settle_tx, settle_rx) = mpsc::unbounded_channel::<Completion>();
    let settler = tokio::spawn(settle_loop(core.clone(), settle_rx, busy.clone()));
    let mut stopping = false;
    let mut next_escalation_check = Instant::now();
    loop {
        if *stop.borrow() {
            stopping = true;
        }
        let inflight: usize = lanes.iter().map(|l| l.inflight).sum();
        if stopping && inflight == 0 {
            break;
        }
        let mut wake_at: Option<Instant> = None;
        let mut soonest = |t: Instant| {
            wake_at = Some(wake_at.map_or(t, |w: Instant| w.min(t)));
        };
        if !stopping {
            if !core.steps.is_empty()
                && (core.escalate_now.swap(false, Ordering::AcqRel)
                    || Instant::now() >= next_escalation_check)
            {
                next_escalation_check = Instant::now() + ESCALATION_CHECK;
                let c = core.clone();
                match tokio::task::spawn_blocking(move || c.fire_escalations()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "firing escalations"),
                    Err(e) => tracing::error!(error = %e, "firing escalations"),
                }
            }
            if !core.steps.is_empty() {
                soonest(next_escalation_check);
            }
            let now_ms = core.now();
            let now = Instant::now();
            for (i, r) in core.receivers.iter().enumerate() {
                let lane = &mut lanes[i];
                let room = lane.room(r, now, core.rate_window);
                if room == 0 {
                    if let Some(t) = lane.held_until(r, core.rate_window) {
                        soonest(t);
                    }
                    continue;
                }
                // A catch-up owed since the receiver came back within a minute of the last.
                if let Some(t) = lane.catch_up_owed {
                    if lane.failing_since.is_some() {
                        lane.catch_up_owed = None; // failing again: its next success decides
                    } else if now >= t {
                        lane.catch_up_owed = None;
                        lane.catch_up = true;
                        lane.caught_up_at = Some(now);
                    } else {
                        soonest(t);
                    }
                }
                let skip = busy.lock().map(|b| b.clone()).unwrap_or_default();
                // Catching up after the receiver came back: every waiting delivery is due.
                let horizon = if lane.catch_up { i64::MAX } else { now_ms };
                let rows = match core.due_rows(r.name(), horizon, room, &skip, &mut |seq, row| {
                    lane.unsettled.hold_or_send(seq, row)
                }) {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::error!(receiver = %r.name(), error = %e, "reading the outbox");
                        soonest(now + Duration::from_secs(1));
                        continue;
                    }
                };
                let (mut rows, next, passed) = rows;
                // All that waited is on its way. Not while some are still being settled (a
                // failure just before the receiver came back): they are due once settled.
                if lane.catch_up && rows.len() < room && passed == 0 {
                    lane.catch_up = false;
                }
                lane.next_due = next;
                if let Some(n) = next {
                    let wait = (n - now_ms).clamp(0, 1000) as u64;
                    soonest(now + Duration::from_millis(wait));
                }
                // A failing receiver with nothing due and nothing in flight: probe it with the
                // delivery due soonest, if that is not due within the probe's interval anyway.
                let mut probe = false;
                let probe_ms = i64::try_from(core.probe_every.as_millis()).unwrap_or(i64::MAX);
                if rows.is_empty()
                    && lane.inflight == 0
                    && lane.failing_since.is_some()
                    && next.is_some_and(|n| n.saturating_sub(now_ms) > probe_ms)
                {
                    match lane.failed_at.map(|t| t + core.probe_every) {
                        Some(t) if t > now => soonest(t),
                        _ => match core.due_rows(r.name(), i64::MAX, 1, &skip, &mut |seq, row| {
                            lane.unsettled.hold_or_send(seq, row)
                        }) {
                            Ok((first, _, _)) => {
                                probe = !first.is_empty();
                                rows = first;
                            }
                            Err(e) => {
                                tracing::error!(receiver = %r.name(), error = %e, "reading the outbox");
                            }
                        },
                    }
                }
                for (seq, row) in rows {
                    if let Ok(mut b) = busy.lock() {
                        b.insert(seq);
                    }
                    lane.inflight += 1;
                    if r.spec.rate_per_minute.is_some() {
                        lane.window.push_back(now);
                    }
                    let (client, core2, r2, tx) =
                        (client.clone(), core.clone(), r.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        let outcome = attempt(&client, &core2, &r2, &row).await;
                        let _ = tx.send(Completion {
                            seq,
                            row,
                            outcome,
                            receiver: i,
                            probe,
                        });
                    });
                }
            }
        }
        let sleep_for = wake_at
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            biased;
            c = done_rx.recv() => {
                let Some(c) = c else { break };
                on_done(&core, &mut lanes, &c);
                let _ = settle_tx.send(c);
                // Take every completion that is ready before dispatching again.
                while let Ok(c) = done_rx.try_recv() {
                    on_done(&core, &mut lanes, &c);
                    let _ = settle_tx.send(c);
                }
            }
            _ = stop.changed(), if !stopping => { stopping = true; }
            _ = core.wake.notified(), if !stopping => {}
            _ = tokio::time::sleep(sleep_for) => {}
        }
    }
    drop(settle_tx);
    // Cancelled: the runtime is ending (a start that failed after delivery began), not a
    // fault of the settler's.
    if let Err(e) = settler.await
        && !e.is_cancelled()
    {
        tracing::error!(error = %e, "delivery settler ended abnormally");
    }
    tracing::info!("alert delivery stopped");
}

fn on_done(core: &Core, lanes: &mut [Lane], c: &Completion) {
    let r = &core.receivers[c.receiver];
    let lane = &mut lanes[c.receiver];
    lane.inflight = lane.inflight.saturating_sub(1);
    let label = c.outcome.label();
    core.metrics
        .deliveries
        .with_label_values(&[r.name(), label])
        .inc();
    let now = Instant::now();
    // A receiver down fails every attempt (thousands a minute after midnight's deadlines):
    // each kind of failure is said when it first comes, then once a minute with how many
    // were not said; each attempt is at debug level.
    // A refusal is of one message (a 4xx), not the receiver being away: it neither starts
    // nor stops a catch-up.
    if matches!(c.outcome, Outcome::Retry { .. }) {
        lane.failed += 1;
        lane.failing_since.get_or_insert(now);
        lane.failed_at = Some(now);
    }
    if matches!(c.outcome, Outcome::Retry { .. } | Outcome::Throttled { .. }) {
        lane.catch_up = false;
    }
    // As the settler records it: tried again later, it stays unsettled; delivered or a dead
    // letter, what waited behind it may go.
    let again = match &c.outcome {
        Outcome::Delivered | Outcome::Refused(_) => false,
        Outcome::Throttled { .. } => true,
        Outcome::Retry { .. } => c.probe || r.spec.retry_after(c.row.attempts + 1).is_some(),
    };
    if !again {
        lane.unsettled.settled(c.seq, &c.row);
    }
    match &c.outcome {
        Outcome::Delivered => {
            tracing::debug!(receiver = %r.name(), notice = %c.row.notice.alert.id, seq = c.seq,
                tries = c.row.tries + 1, "delivered");
            if let Some(since) = lane.failing_since.take() {
                lane.said.forget(|k| *k == "retry");
                lane.catch_up = lane
                    .caught_up_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= core.catch_up_every);
                if lane.catch_up {
                    lane.caught_up_at = Some(now);
                } else {
                    // Back within a minute of the last catch-up: the next one is then.
                    lane.catch_up_owed = lane.caught_up_at.map(|t| t + core.catch_up_every);
                }
                tracing::info!(receiver = %r.name(), failed = std::mem::take(&mut lane.failed),
                    failing_s = now.saturating_duration_since(since).as_secs(),
                    retries_sent_now = lane.catch_up, probe = c.probe,
                    "the receiver takes deliveries again");
            }
        }
        Outcome::Retry { error, .. } => {
            tracing::debug!(receiver = %r.name(), notice = %c.row.notice.alert.id, seq = c.seq,
                attempt = c.row.attempts + 1, error = %error, "delivery failed; will retry");
            if let Some(unsaid) = lane.said.say(label, now) {
                tracing::warn!(receiver = %r.name(), notice = %c.row.notice.alert.id, seq = c.seq,
                    attempt = c.row.attempts + 1, error = %error, unsaid,
                    "delivery failed; will retry{}", unsaid_note(unsaid));
            }
        }
        Outcome::Throttled { error, wait } => {
            lane.paused_until = Some(now + *wait);
            tracing::warn!(receiver = %r.name(), notice = %c.row.notice.alert.id, seq = c.seq,
                wait_ms = wait.as_millis() as u64, error = %error, "receiver asks to wait; pausing it");
        }
        Outcome::Refused(why) => {
            tracing::debug!(receiver = %r.name(), notice = %c.row.notice.alert.id, seq = c.seq,
                reason = %why, "receiver refused the delivery");
            if let Some(unsaid) = lane.said.say(label, now) {
                tracing::warn!(receiver = %r.name(), notice = %c.row.notice.alert.id, seq = c.seq,
                    reason = %why, unsaid, "receiver refused the delivery{}", unsaid_note(unsaid));
            }
        }
    }
}

async fn settle_loop(
    core: Arc<Core>,
    mut rx: mpsc::UnboundedReceiver<Completion>,
    busy: Arc<Mutex<HashSet<u64>>>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let c2 = core.clone();
        let (batch, result) = match tokio::task::spawn_blocking(move || {
            let r = c2.settle(&batch);
            (batch, r)
        })
        .await
        {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "recording delivery outcomes");
                continue;
            }
        };
        if let Err(e) = result {
            // The rows are as they were before the attempt: they go out again.
            tracing::error!(error = %e, count = batch.len(),
                "recording delivery outcomes failed; those deliveries will be attempted again");
        }
        if let Ok(mut b) = busy.lock() {
            for c in &batch {
                b.remove(&c.seq);
            }
        }
        core.wake.notify_one();
    }
}

// ---------------------------------------------------------------------------------------
// The command line: `redlight deliveries …` talks to the running daemon's HTTP port (the
// daemon holds the store's lock); with no daemon running it opens the store itself.

/// Calls the daemon's API; `Ok(None)` when nothing listens on `http.listen`.
pub async fn call_daemon(
    config: &Config,
    method: http::Method,
    path_and_query: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<Option<serde_json::Value>> {
    call_daemon_waiting(
        config,
        method,
        path_and_query,
        body,
        Duration::from_secs(30),
    )
    .await
}

/// [`call_daemon`], waiting up to `wait` for the answer.
pub async fn call_daemon_waiting(
    config: &Config,
    method: http::Method,
    path_and_query: &str,
    body: Option<serde_json::Value>,
    wait: Duration,
) -> anyhow::Result<Option<serde_json::Value>> {
    let addr = config.http.listen.clone();
    let uri = format!("http://{addr}{path_and_query}");
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut b = http::Request::builder()
        .method(method)
        .uri(uri.as_str())
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(t) = &config.http.token {
        b = b.header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", t.expose()),
        );
    }
    let body = body.map(|v| v.to_string()).unwrap_or_default();
    let req = b.body(Full::new(Bytes::from(body)))?;
    let resp = match tokio::time::timeout(wait, client.request(req)).await {
        Err(_) => anyhow::bail!(
            "the daemon at {addr} did not answer within {}s",
            wait.as_secs()
        ),
        Ok(Err(e)) if e.is_connect() => return Ok(None),
        Ok(Err(e)) => anyhow::bail!("calling the daemon at {addr}: {e}"),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), 64 << 20)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the daemon's answer: {e}"))?
        .to_bytes();
    if status == http::StatusCode::UNAUTHORIZED {
        // The daemon has a token and this command was given none, or another: it reads the
        // token as the daemon does, from the configuration and its environment.
        anyhow::bail!(
            "the daemon at {addr} answered {status}: it wants its bearer token, {}; run this \
             command with the daemon's own `http.token` (REDLIGHT_HTTP__TOKEN in its \
             environment, as in the daemon's, or `http.token_file` in the configuration)",
            if config.http.token.is_some() {
                "and the one this command has is not it"
            } else {
                "and this command has none"
            }
        );
    }
    if !status.is_success() {
        anyhow::bail!(
            "the daemon at {addr} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
        anyhow::anyhow!("the daemon's answer is not JSON: {e}")
    })?))
}

/// Opens the store for a command when no daemon answers on `http.listen` ([`call_daemon`]
/// gave `None`): free then, unless something else holds it, which the error says.
pub fn open_store_without_daemon(config: &Config) -> anyhow::Result<Store> {
    config.open_store().map_err(|e| match e {
        StoreError::Locked { .. } => anyhow::anyhow!(
            "{e}, but nothing answers on http.listen {}; is the daemon's HTTP port \
             somewhere else?",
            config.http.listen
        ),
        e => e.into(),
    })
}

/// `redlight deliveries …`.
#[derive(Debug, Clone)]
pub enum Command {
    /// Per receiver: deliveries waiting, dead letters.
    Status,
    /// The dead letters, as JSON lines.
    Dead {
        receiver: Option<String>,
        limit: usize,
    },
    /// Re-send dead letters.
    Resend(Selection),
    /// Drop dead letters for good (a receiver or numbers named).
    Drop(Selection),
}

/// Runs a `redlight deliveries` command against the running daemon (its HTTP port, since
/// the daemon holds the store's lock), or against the store itself when no daemon runs.
pub async fn command(
    config: &Config,
    cmd: Command,
    out: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<()> {
    let (method, path, body) = match &cmd {
        Command::Status => (http::Method::GET, "/api/v1/deliveries".to_string(), None),
        Command::Dead { receiver, limit } => {
            let mut p = format!("/api/v1/deliveries/dead?limit={limit}");
            if let Some(r) = receiver {
                p.push_str(&format!(
                    "&receiver={}",
                    percent_encoding::utf8_percent_encode(r, percent_encoding::NON_ALPHANUMERIC)
                ));
            }
            (http::Method::GET, p, None)
        }
        Command::Resend(sel) => (
            http::Method::POST,
            "/api/v1/deliveries/dead/resend".to_string(),
            Some(serde_json::to_value(sel)?),
        ),
        Command::Drop(sel) => {
            if sel.names_none() {
                anyhow::bail!("name the dead letters to drop: `--receiver NAME` or `--seq N`");
            }
            (
                http::Method::POST,
                "/api/v1/deliveries/dead/drop".to_string(),
                Some(serde_json::to_value(sel)?),
            )
        }
    };
    let answer = match call_daemon(config, method, &path, body).await? {
        Some(v) => v,
        None => {
            let store = open_store_without_daemon(config)?;
            init_tables(&store)?;
            match &cmd {
                Command::Status => serde_json::json!({
                    "receivers": stats(&store)?,
                    "escalations_pending": pending_escalations(&store)?,
                }),
                Command::Dead { receiver, limit } => serde_json::json!({
                    "dead_letters": dead_letters(&store, 0, *limit, receiver.as_deref())?,
                }),
                Command::Resend(sel) => serde_json::json!({
                    "resent": resend_dead(&store, None, sel, wall_ms())?,
                    "note": "the daemon is not running: the deliveries go out when it starts",
                }),
                Command::Drop(sel) => serde_json::json!({
                    "dropped": drop_dead(&store, None, sel)?,
                }),
            }
        }
    };
    match cmd {
        Command::Status => {
            writeln!(
                out,
                "{:<24} {:>9} {:>9}  oldest waiting",
                "receiver", "pending", "dead"
            )?;
            let mut rows: Vec<ReceiverStats> =
                serde_json::from_value(answer.get("receivers").cloned().unwrap_or_default())
                    .unwrap_or_default();
            // Every configured receiver, also those with nothing waiting.
            for r in &config.receivers {
                if !rows.iter().any(|s| s.receiver == r.name) {
                    rows.push(ReceiverStats {
                        receiver: r.name.clone(),
                        ..Default::default()
                    });
                }
            }
            rows.sort_by(|a, b| a.receiver.cmp(&b.receiver));
            for r in rows {
                writeln!(
                    out,
                    "{:<24} {:>9} {:>9}  {}",
                    r.receiver,
                    r.pending,
                    r.dead,
                    r.oldest_pending.unwrap_or_else(|| "-".into())
                )?;
            }
            writeln!(
                out,
                "escalation steps waiting: {}",
                answer
                    .get("escalations_pending")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0)
            )?;
        }
        Command::Dead { .. } => {
            if let Some(rows) = answer.get("dead_letters").and_then(|v| v.as_array()) {
                for r in rows {
                    writeln!(out, "{r}")?;
                }
            }
        }
        Command::Resend(_) => {
            let n = answer
                .get("resent")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            writeln!(out, "re-sent {n} dead letter(s)")?;
            if let Some(note) = answer.get("note").and_then(|v| v.as_str()) {
                writeln!(out, "{note}")?;
            }
        }
        Command::Drop(_) => {
            let by: BTreeMap<String, u64> =
                serde_json::from_value(answer.get("dropped").cloned().unwrap_or_default())
                    .unwrap_or_default();
            writeln!(out, "dropped {} dead letter(s)", by.values().sum::<u64>())?;
            for (receiver, n) in by {
                writeln!(out, "{receiver:<24} {n:>9}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_escalation_times_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10 s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_after("2 workdays"), Some(After::Workdays(2)));
        assert_eq!(parse_after("1workday"), Some(After::Workdays(1)));
        assert_eq!(parse_after("4h"), Some(After::Millis(4 * 3_600_000)));
        assert_eq!(parse_after("0h"), None);
        assert_eq!(parse_after("0 workdays"), None);
    }

    #[test]
    fn the_default_schedule_doubles_to_ten_minutes_and_lasts_a_day() {
        let s = default_retry();
        assert_eq!(s[0], Duration::from_secs(1));
        assert_eq!(s[1], Duration::from_secs(2));
        assert!(s.iter().all(|d| *d <= Duration::from_secs(600)));
        let total: Duration = s.iter().sum();
        assert!(total >= Duration::from_secs(24 * 3600));
        assert!(total < Duration::from_secs(24 * 3600 + 600));
    }

    fn receiver(url: &str, secret: Option<&str>, format: Format) -> Receiver {
        let spec = ReceiverSpec {
            name: "r".into(),
            format,
            url: Secret::new(url),
            secrets: secret
                .map(|s| vec![("receiver[0].secret".to_string(), Secret::new(s))])
                .unwrap_or_default(),
            send_resolved: false,
            rate_per_minute: None,
            timeout: Duration::from_secs(1),
            retry: vec![Duration::from_secs(1)],
            concurrency: 1,
            headers: Vec::new(),
            mention: Vec::new(),
            mention_levels: vec![Level::Red],
        };
        Receiver::new(0, spec, std::path::Path::new("/")).expect("receiver")
    }

    #[test]
    fn redaction_removes_tokens_from_urls_and_secrets() {
        let r = receiver(
            "http://open.example/open-apis/bot/v2/hook/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            Some("feishu-secret-value"),
            Format::Feishu,
        );
        let text = r.redact(
            "POST http://open.example/open-apis/bot/v2/hook/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 \
             failed for hook 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 with feishu-secret-value",
        );
        assert!(!text.contains("0f1e2d3c-4b5a"), "{text}");
        assert!(!text.contains("feishu-secret-value"), "{text}");
        assert_eq!(
            r.redact("path /open-apis/bot/v2/hook/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
            "path /open-apis/bot/v2/hook/***",
            "short path segments stay"
        );
        let r = receiver(
            "http://x.example/robot/send?access_token=abcdef0123456789",
            None,
            Format::Dingtalk,
        );
        assert_eq!(
            r.redact("bad token abcdef0123456789 at /robot/send"),
            "bad token *** at /robot/send"
        );
        assert!(!format!("{r:?}").contains("abcdef"));
    }

    #[test]
    fn retry_after_is_seconds_or_a_date_and_capped() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "7".parse().expect("value"));
        assert_eq!(retry_after(&h, 0), Some(Duration::from_secs(7)));
        h.insert(http::header::RETRY_AFTER, "999999".parse().expect("value"));
        assert_eq!(retry_after(&h, 0), Some(MAX_RETRY_AFTER));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("value"),
        );
        let at = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:30Z")
            .expect("t")
            .timestamp_millis();
        assert_eq!(retry_after(&h, at), Some(Duration::from_secs(30)));
        h.insert(http::header::RETRY_AFTER, "soon".parse().expect("value"));
        assert_eq!(retry_after(&h, 0), None);
    }

    #[test]
    fn the_rate_window_holds_back_and_lets_go() {
        let mut r = receiver("http://x.example/h", None, Format::Wecom);
        r.spec.rate_per_minute = Some(2);
        r.spec.concurrency = 10;
        let mut lane = Lane::default();
        let w = Duration::from_secs(60);
        let t0 = Instant::now();
        assert_eq!(lane.room(&r, t0, w), 2);
        lane.window.push_back(t0);
        lane.window.push_back(t0);
        assert_eq!(lane.room(&r, t0, w), 0);
        assert_eq!(lane.held_until(&r, w), Some(t0 + w));
        assert_eq!(lane.room(&r, t0 + w, w), 2);
    }

    #[test]
    fn labels_and_matchers() {
        let a = Alert {
            id: "x".into(),
            rule: "aq.accident_report".into(),
            title: "t".into(),
            basis: "b".into(),
            case: "AQ-1".into(),
            level: Level::Red,
            status: Status::Firing,
            reason: crate::alert::Reason::Overdue,
            at: "2026-11-02T11:00:00+08:00".into(),
            deadline: None,
            detail: None,
            department: Some("市应急管理局".into()),
            item: None,
            handler: None,
        };
        assert_eq!(label(&a, "pack"), Some("aq"));
        assert_eq!(label(&a, "severity"), Some("critical"));
        assert_eq!(label(&a, "item"), None);
        let m = Matcher {
            levels: vec![Level::Red],
            rule_prefix: vec!["aq.".into()],
            departments: vec!["市应急管理局".into()],
            labels: vec![("pack".into(), vec!["aq".into(), "hz".into()])],
        };
        assert!(m.matches(&a));
        let m = Matcher {
            labels: vec![("item".into(), vec!["x".into()])],
            ..Default::default()
        };
        assert!(!m.matches(&a), "a missing label does not match");
        assert!(Matcher::default().matches(&a));
    }
}
