//! What a receiver is sent: the notice (an alert, or an escalation step of one) turned into
//! the body, URL and headers of each format.
//!
//! - [`Format::Json`]: the alert of SPEC §4 (plus `escalation` on escalation steps), signed per
//!   the Standard Webhooks spec ([`standard`]);
//! - [`Format::Alertmanager`]: the Alertmanager webhook payload, version 4 ([`alertmanager`]);
//! - [`Format::Dingtalk`], [`Format::Wecom`], [`Format::Feishu`]: chat-robot markdown with the
//!   Chinese text of [`text`] ([`chat`]).
//!
//! Every builder is a pure function of the notice, the receiver's keys and the send time, so
//! the worker builds the request at each attempt (signature timestamps stay fresh) and the
//! tests check bodies without a network.

pub mod alertmanager;
pub mod chat;
pub mod standard;
pub mod text;

use crate::alert::{Alert, Level, Status};
use crate::calendar::Calendar;
use crate::clock::Zone;
use crate::rules::RuleSet;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The wire format of a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Alertmanager,
    Dingtalk,
    Wecom,
    Feishu,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Json,
        Format::Alertmanager,
        Format::Dingtalk,
        Format::Wecom,
        Format::Feishu,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Alertmanager => "alertmanager",
            Format::Dingtalk => "dingtalk",
            Format::Wecom => "wecom",
            Format::Feishu => "feishu",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// A chat robot: answers HTTP 200 with an error code in the body.
    pub fn is_chat(self) -> bool {
        matches!(self, Format::Dingtalk | Format::Wecom | Format::Feishu)
    }

    /// The platform's documented send limit per robot, messages a minute (None: no limit).
    /// DingTalk and WeCom robots accept 20 a minute; a Feishu custom bot 100 a minute.
    pub fn default_rate_per_minute(self) -> Option<u32> {
        match self {
            Format::Dingtalk | Format::Wecom => Some(20),
            Format::Feishu => Some(100),
            Format::Json | Format::Alertmanager => None,
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of an escalation chain: a red still open after the step's time, sent to the
/// step's receivers as an alert of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// The step's name in the configuration (`[[escalation]] name`).
    pub step: String,
    /// 1 for the first step of the chain, 2 for the next, …
    pub index: u32,
    /// The id of the red alert that was escalated.
    pub of: String,
    /// How long the red had been open, as configured (`2 workdays`, `4h`).
    pub after: String,
}

/// What one delivery carries: an alert, or an escalation step of one (its own id, `at` the
/// instant it escalated). Serialised as the alert's fields plus `escalation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    #[serde(flatten)]
    pub alert: Alert,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub escalation: Option<Escalation>,
}

impl Notice {
    pub fn of(alert: Alert) -> Notice {
        Notice {
            alert,
            escalation: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.alert.id
    }

    pub fn is_red(&self) -> bool {
        self.alert.level == Level::Red
    }

    pub fn is_resolved(&self) -> bool {
        self.alert.status == Status::Resolved
    }
}

/// Characters escaped in a URL path segment: all but RFC 3986's unreserved ones.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What the builders need besides the notice: the rules (for each rule's unit of time), the
/// working calendar (for lateness in workdays) and where the daemon can be reached.
#[derive(Clone)]
pub struct Context {
    pub rules: Arc<RuleSet>,
    pub calendar: Arc<Calendar>,
    pub zone: Zone,
    /// Base URL of this redlight for links (`http://redlight.example:9464`); none: no links.
    pub external_url: Option<String>,
}

impl Context {
    pub fn new(rules: Arc<RuleSet>, calendar: Arc<Calendar>, external_url: Option<String>) -> Self {
        let zone = Zone::new(&calendar);
        Context {
            rules,
            calendar,
            zone,
            external_url: external_url.map(|u| u.trim_end_matches('/').to_string()),
        }
    }

    /// A link to the case's own page (`/case/{id}`, 案件详情: its clocks, deadlines and
    /// alerts, for people), when an external URL is configured.
    pub fn case_url(&self, case: &str) -> Option<String> {
        self.external_url.as_ref().map(|base| {
            format!(
                "{base}/case/{}",
                percent_encoding::utf8_percent_encode(case, PATH_SEGMENT)
            )
        })
    }
}

/// The keys a receiver signs with.
#[derive(Clone, Default)]
pub struct Keys {
    /// `json`: every Standard Webhooks key (decoded), the current one first.
    pub webhook_keys: Vec<Vec<u8>>,
    /// `dingtalk` / `feishu`: the robot's signing secret (`SEC…`), when signing is enabled.
    pub secret: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("webhook_keys", &self.webhook_keys.len())
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A request ready to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Builds the request for one notice. `now_ms` is the send time (signature timestamps);
/// `receiver` the receiver's name (Alertmanager's `receiver` field).
/// `mention`: whom a chat robot's message @-mentions (`ReceiverSpec::mentions`).
#[allow(clippy::too_many_arguments)]
pub fn build(
    format: Format,
    ctx: &Context,
    notice: &Notice,
    receiver: &str,
    url: &str,
    keys: &Keys,
    mention: &[String],
    now_ms: i64,
) -> Result<Request, serde_json::Error> {
    let mut headers = vec![("content-type", "application/json".to_string())];
    let (url, body) = match format {
        Format::Json => {
            let body = serde_json::to_vec(notice)?;
            let ts = now_ms.div_euclid(1000);
            headers.push(("webhook-id", notice.id().to_string()));
            headers.push(("webhook-timestamp", ts.to_string()));
            if !keys.webhook_keys.is_empty() {
                headers.push((
                    "webhook-signature",
                    standard::sign(&keys.webhook_keys, notice.id(), ts, &body),
                ));
            }
            (url.to_string(), body)
        }
        Format::Alertmanager => {
            let body = serde_json::to_vec(&alertmanager::payload(ctx, notice, receiver))?;
            (url.to_string(), body)
        }
        Format::Dingtalk => {
            let msg = text::message(ctx, notice);
            let body = serde_json::to_vec(&chat::dingtalk_body(&msg, mention))?;
            let url = match &keys.secret {
                Some(secret) => chat::dingtalk_signed_url(url, secret, now_ms),
                None => url.to_string(),
            };
            (url, body)
        }
        Format::Wecom => {
            let msg = text::message(ctx, notice);
            (
                url.to_string(),
                serde_json::to_vec(&chat::wecom_body(&msg, mention))?,
            )
        }
        Format::Feishu => {
            let msg = text::message(ctx, notice);
            let sign = keys.secret.as_ref().map(|secret| {
                let ts = now_ms.div_euclid(1000);
                (ts, chat::feishu_sign(secret, ts))
            });
            (
                url.to_string(),
                serde_json::to_vec(&chat::feishu_body(&msg, mention, sign))?,
            )
        }
    };
    Ok(Request { url, headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Reason, alert_id};
    use std::path::Path;

    fn ctx() -> Context {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let rules = RuleSet::load(
            &["xk", "xz", "nx", "aq", "hz"].map(|p| root.join(format!("rules/{p}.toml"))),
        )
        .expect("rules");
        let cal = Calendar::load_dir(&root.join("calendars"), chrono_tz::Asia::Shanghai)
            .expect("calendar");
        Context::new(
            Arc::new(rules),
            Arc::new(cal),
            Some("http://redlight.example:9464/".into()),
        )
    }

    fn alert(
        rule: &str,
        level: Level,
        status: Status,
        reason: Reason,
        at: &str,
        deadline: Option<&str>,
    ) -> Alert {
        let c = ctx();
        let r = c.rules.rule(c.rules.index_of(rule).expect("rule"));
        Alert {
            id: alert_id("XZ-2026-0001", rule, "1@0", level, status),
            rule: r.id.clone(),
            title: r.title.clone(),
            basis: r.basis.clone(),
            case: "XZ-2026-0001".into(),
            level,
            status,
            reason,
            at: at.into(),
            deadline: deadline.map(Into::into),
            detail: None,
            department: Some("市住建局".into()),
            item: Some("建筑工程施工许可".into()),
            handler: Some("张三".into()),
        }
    }

    /// Every kind of notice reads right; `cargo test examples -- --nocapture` prints them.
    #[test]
    fn examples_read_in_chinese() {
        let c = ctx();
        let d = Some("2026-10-31T00:00:00+08:00");
        let cases = [
            (
                alert(
                    "xk.decision",
                    Level::Yellow,
                    Status::Firing,
                    Reason::Approaching,
                    "2026-10-29T00:00:00+08:00",
                    d,
                ),
                None,
                "距办理期限还剩 2 个工作日",
            ),
            (
                // A yellow whose deadline waits for next year's calendar data.
                alert(
                    "xk.decision",
                    Level::Yellow,
                    Status::Firing,
                    Reason::Approaching,
                    "2026-12-29T00:00:00+08:00",
                    None,
                ),
                None,
                "办理期限待下一年度节假日安排公布后计算",
            ),
            (
                alert(
                    "xk.decision",
                    Level::Red,
                    Status::Firing,
                    Reason::Overdue,
                    "2026-10-31T00:00:00+08:00",
                    d,
                ),
                None,
                "办理期限已届满，仍未办结",
            ),
            (
                alert(
                    "xk.decision",
                    Level::Red,
                    Status::Firing,
                    Reason::Overdue,
                    "2026-11-04T00:00:00+08:00",
                    d,
                ),
                Some(Escalation {
                    step: "效能办".into(),
                    index: 2,
                    of: "x".into(),
                    after: "2 workdays".into(),
                }),
                "红灯持续 2 个工作日未解除，已超期 2 个工作日",
            ),
            (
                alert(
                    "xk.decision",
                    Level::Red,
                    Status::Resolved,
                    Reason::CompletedLate,
                    "2026-11-03T10:00:00+08:00",
                    d,
                ),
                None,
                "已办结，超期 2 个工作日",
            ),
            (
                alert(
                    "aq.accident_report",
                    Level::Red,
                    Status::Resolved,
                    Reason::CompletedLate,
                    "2026-11-02T11:35:00+08:00",
                    Some("2026-11-02T11:00:00+08:00"),
                ),
                None,
                "已办结，超时 35 分钟",
            ),
            (
                alert(
                    "aq.accident_report",
                    Level::Red,
                    Status::Resolved,
                    Reason::CompletedLate,
                    "2026-11-02T13:05:00+08:00",
                    Some("2026-11-02T11:00:00+08:00"),
                ),
                None,
                "超时 2 小时 5 分钟",
            ),
            (
                alert(
                    "nx.registration_decision",
                    Level::Red,
                    Status::Resolved,
                    Reason::CompletedLate,
                    "2026-11-05T08:00:00+08:00",
                    Some("2026-11-03T00:00:00+08:00"),
                ),
                None,
                "超期 3 天",
            ),
            (
                alert(
                    "xk.decision",
                    Level::Red,
                    Status::Resolved,
                    Reason::Retracted,
                    "2026-10-31T09:00:00+08:00",
                    d,
                ),
                None,
                "红灯撤回（误报）",
            ),
        ];
        for (a, escalation, want) in cases {
            let n = Notice {
                alert: a,
                escalation,
            };
            let m = text::message(&c, &n);
            let body = chat::dingtalk_body(&m, &[]);
            let text = body["markdown"]["text"].as_str().expect("text");
            println!("{}\n{text}\n", m.title);
            assert!(m.headline.contains(want), "{want} in {:?}", m.headline);
            assert!(text.contains("依据"));
            // The word a robot's 自定义关键词 security can ask for (docs/webhooks.md).
            assert!(text.contains("告警编号"), "{text}");
        }
    }

    /// The red of the SPEC §3 example, firing.
    fn red_overdue() -> Notice {
        Notice::of(alert(
            "xk.decision",
            Level::Red,
            Status::Firing,
            Reason::Overdue,
            "2026-10-31T00:00:00+08:00",
            Some("2026-10-31T00:00:00+08:00"),
        ))
    }

    /// DingTalk's everyone: `at.isAtAll`, written 「@所有人」; no mention, no `at`.
    #[test]
    fn dingtalk_mentions_everyone_with_is_at_all() {
        let c = ctx();
        let n = red_overdue();
        let m = text::message(&c, &n);
        let all = chat::dingtalk_body(&m, &["all".to_string()]);
        assert_eq!(all["at"]["isAtAll"], true);
        assert_eq!(all["at"]["atMobiles"], serde_json::json!([]));
        assert!(
            all["markdown"]["text"]
                .as_str()
                .unwrap_or("")
                .contains("提醒：@所有人")
        );
        assert!(chat::dingtalk_body(&m, &[]).get("at").is_none());
    }

    /// Every format builds for one notice; `cargo test every_format -- --nocapture` prints them.
    #[test]
    fn every_format_builds() {
        let c = ctx();
        let n = red_overdue();
        let keys = Keys {
            webhook_keys: vec![b"k".to_vec()],
            secret: Some("SECxxxx".into()),
        };
        for f in Format::ALL {
            let req = build(
                f,
                &c,
                &n,
                "office",
                "http://x/hook?a=1",
                &keys,
                &["13800000000".to_string()],
                1_793_376_060_000,
            )
            .expect("builds");
            let v: serde_json::Value = serde_json::from_slice(&req.body).expect("json");
            println!(
                "== {f} {}\n{:?}\n{}\n",
                req.url,
                req.headers,
                serde_json::to_string_pretty(&v).unwrap_or_default()
            );
        }
    }
}
