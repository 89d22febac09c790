//! The chat robots: DingTalk custom robot, WeCom group robot, Feishu custom bot.
//!
//! - DingTalk: `{"msgtype":"markdown","markdown":{"title":…,"text":…}}`; signed robots get
//!   `&timestamp=<ms>&sign=<urlencode(base64(HMAC-SHA256(key = secret,
//!   message = "<timestamp>\n<secret>")))>` on the URL. Answers `{"errcode":0,"errmsg":"ok"}`.
//! - WeCom: `{"msgtype":"markdown","markdown":{"content":…}}` (at most 4096 bytes), the key
//!   is in the URL. Answers `{"errcode":0,"errmsg":"ok"}`.
//! - Feishu: `{"msg_type":"interactive","card":{…}}` with a header in the light's colour and
//!   a markdown element; signed bots get `"timestamp":"<s>","sign":<base64(HMAC-SHA256(key =
//!   "<timestamp>\n<secret>", message = empty))>` in the body. Answers `{"code":0,…}`.
//!
//! All three answer HTTP 200 even when they refuse a message; [`check_reply`] reads the code.

use super::Format;
use super::text::{Color, Message};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn hmac_b64(key: &[u8], message: &[u8]) -> String {
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            B64.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// DingTalk's `sign` (before URL encoding).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    hmac_b64(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    )
}

/// The robot's URL with `timestamp` and `sign` appended.
pub fn dingtalk_signed_url(url: &str, secret: &str, timestamp_ms: i64) -> String {
    let sign = dingtalk_sign(secret, timestamp_ms);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{sep}timestamp={timestamp_ms}&sign={}",
        percent_encoding::utf8_percent_encode(&sign, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// Feishu's `sign`: the key is "timestamp\nsecret", the message empty.
pub fn feishu_sign(secret: &str, timestamp_s: i64) -> String {
    hmac_b64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

fn markdown_lines(msg: &Message, bullet: &str) -> String {
    let mut out = String::with_capacity(512);
    for (label, value) in &msg.fields {
        out.push_str(bullet);
        out.push_str("**");
        out.push_str(label);
        out.push_str("**：");
        out.push_str(&escape_md(value));
        out.push('\n');
    }
    out
}

/// Keeps values from turning into markup: case ids and details are data, not markdown. The
/// robots' markdown is a small dialect where a backslash escape may show as a backslash, so
/// the characters that could open markup become their full-width forms.
fn escape_md(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '*' => '＊',
            '[' => '［',
            ']' => '］',
            '<' => '＜',
            '>' => '＞',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

/// The line of @-mentions under a message's headline, as the platform writes each one,
/// ended by `end`; nothing without mentions.
fn mention_line(mention: &[String], end: &str, each: impl Fn(&str) -> String) -> String {
    if mention.is_empty() {
        return String::new();
    }
    let names: Vec<String> = mention.iter().map(|m| each(m)).collect();
    format!("提醒：{}{end}", names.join(" "))
}

/// The DingTalk custom robot markdown message. A mention is both in `at` and, as DingTalk
/// asks for markdown, written `@mobile` in the text (`at.isAtAll` for `"all"`).
pub fn dingtalk_body(msg: &Message, mention: &[String]) -> Value {
    let mut text = format!(
        "#### {}\n\n**{}**\n\n{}{}",
        msg.title,
        escape_md(&msg.headline),
        mention_line(mention, "\n\n", |m| if m == "all" {
            "@所有人".to_string()
        } else {
            format!("@{m}")
        }),
        markdown_lines(msg, "- ")
    );
    if let Some(link) = &msg.link {
        text.push_str(&format!("\n[查看案件]({link})\n"));
    }
    text.push_str(&format!("\n> 告警编号 {}\n", msg.id));
    let mut body = json!({
        "msgtype": "markdown",
        "markdown": { "title": msg.title, "text": text },
    });
    if !mention.is_empty() {
        let mobiles: Vec<&String> = mention.iter().filter(|m| *m != "all").collect();
        body["at"] = json!({
            "atMobiles": mobiles,
            "isAtAll": mention.iter().any(|m| m == "all"),
        });
    }
    body
}

/// WeCom's markdown is at most 4096 bytes (UTF-8).
pub const WECOM_MAX_BYTES: usize = 4096;

/// The WeCom group robot markdown message. Colours are WeCom's three: `warning` (red-orange),
/// `info` (green), `comment` (grey).
/// A mention is `<@userid>` in the markdown, right under the headline, so that a cut to
/// 4096 bytes never takes it.
pub fn wecom_body(msg: &Message, mention: &[String]) -> Value {
    let color = match msg.color {
        Color::Red | Color::Yellow => "warning",
        Color::Green => "info",
    };
    let mut content = format!(
        "## {}\n<font color=\"{color}\">{}</font>\n{}",
        msg.title,
        escape_md(&msg.headline),
        mention_line(mention, "\n", |m| format!("<@{m}>")),
    );
    for (label, value) in &msg.fields {
        content.push_str(&format!(
            "> {label}：<font color=\"comment\">{}</font>\n",
            escape_md(value)
        ));
    }
    // The link and the id close the message whatever its length: a message over WeCom's
    // limit is cut in its fields (a very long handler or item), never in the id the group
    // tells a repeated delivery by, or the link to the case.
    let mut tail = String::new();
    if let Some(link) = &msg.link {
        tail.push_str(&format!("[查看案件]({link})\n"));
    }
    tail.push_str(&format!("告警编号 {}", msg.id));
    let mut content = truncate_utf8(&content, WECOM_MAX_BYTES.saturating_sub(tail.len() + 1));
    if !content.ends_with('\n') {
        content.push('\n');
    }
    content.push_str(&tail);
    json!({
        "msgtype": "markdown",
        "markdown": { "content": truncate_utf8(&content, WECOM_MAX_BYTES) },
    })
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate_utf8(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mark = "…";
    let mut end = max.saturating_sub(mark.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &s[..end])
}

/// The Feishu custom bot card; `sign` is `(timestamp in seconds, sign)` for signed bots. A
/// mention is `<at id=…></at>` in the card's markdown (`<at email=…>` for an address).
pub fn feishu_body(msg: &Message, mention: &[String], sign: Option<(i64, String)>) -> Value {
    let template = match msg.color {
        Color::Red => "red",
        Color::Yellow => "yellow",
        Color::Green => "green",
    };
    let mut md = format!("**{}**\n", escape_md(&msg.headline));
    md.push_str(&mention_line(mention, "\n", |m| {
        if m.contains('@') {
            format!("<at email={m}></at>")
        } else {
            format!("<at id={m}></at>")
        }
    }));
    md.push_str(&markdown_lines(msg, ""));
    if let Some(link) = &msg.link {
        md.push_str(&format!("[查看案件]({link})\n"));
    }
    let mut body = json!({
        "msg_type": "interactive",
        "card": {
            "config": { "wide_screen_mode": true },
            "header": {
                "title": { "tag": "plain_text", "content": msg.title },
                "template": template,
            },
            "elements": [
                { "tag": "markdown", "content": md },
                { "tag": "hr" },
                { "tag": "note", "elements": [
                    { "tag": "plain_text", "content": format!("告警编号 {}", msg.id) }
                ] },
            ],
        },
    });
    if let (Some((ts, sign)), Some(obj)) = (sign, body.as_object_mut()) {
        obj.insert("timestamp".into(), Value::String(ts.to_string()));
        obj.insert("sign".into(), Value::String(sign));
    }
    body
}

/// What a chat platform's answer to an HTTP 2xx says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    /// Over the robot's send limit: try again later, not an error of the message.
    Throttled(String),
    /// A passing fault on the platform's side: retry on the schedule.
    Transient(String),
    /// The platform refused the message (bad signature, keyword, token…): a dead letter
    /// until the configuration is fixed and it is re-sent.
    Refused(String),
}

/// Reads the error code in a chat platform's answer. A body that is not JSON (a proxy) is
/// taken as success: the HTTP status said so.
pub fn check_reply(format: Format, body: &[u8]) -> Reply {
    if !format.is_chat() {
        return Reply::Ok;
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Reply::Ok;
    };
    let (code, msg) = match format {
        Format::Feishu => (
            v.get("code").or_else(|| v.get("StatusCode")),
            v.get("msg").or_else(|| v.get("StatusMessage")),
        ),
        _ => (v.get("errcode"), v.get("errmsg")),
    };
    let Some(code) = code.and_then(Value::as_i64) else {
        return Reply::Ok;
    };
    if code == 0 {
        return Reply::Ok;
    }
    let msg = msg.and_then(Value::as_str).unwrap_or("");
    let what = format!("{} error {code}: {msg}", format.as_str());
    let lower = msg.to_ascii_lowercase();
    let throttled = match format {
        // 130101: "send too fast, exceed 20 times per minute".
        Format::Dingtalk => code == 130101 || code == 130102,
        // 45009: "api freq out of limit".
        Format::Wecom => code == 45009 || code == 45033,
        // 11232: message rate limit (100 a minute, 5 a second); 230020: per-chat limit.
        Format::Feishu => code == 11232 || code == 230020,
        _ => false,
    } || lower.contains("too fast")
        || lower.contains("freq")
        || lower.contains("rate limit");
    if throttled {
        Reply::Throttled(what)
    } else if code == -1 || lower.contains("busy") {
        Reply::Transient(what)
    } else {
        Reply::Refused(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dingtalk_signs_timestamp_newline_secret_with_the_secret() {
        // Recomputed independently: HMAC-SHA256(key = "SECabc", "1700000000000\nSECabc").
        let sign = dingtalk_sign("SECabc", 1_700_000_000_000);
        let mut mac = HmacSha256::new_from_slice(b"SECabc").expect("key");
        mac.update(b"1700000000000\nSECabc");
        assert_eq!(sign, B64.encode(mac.finalize().into_bytes()));
        let url = dingtalk_signed_url("http://x/robot/send?access_token=t", "SECabc", 1);
        let (head, sign) = url.split_once("&sign=").expect("sign");
        assert_eq!(head, "http://x/robot/send?access_token=t&timestamp=1");
        let decoded = percent_encoding::percent_decode_str(sign)
            .decode_utf8()
            .expect("utf8");
        assert_eq!(decoded, dingtalk_sign("SECabc", 1));
        assert!(!sign.contains(['+', '/', '=']), "{sign}");
    }

    #[test]
    fn feishu_signs_with_the_string_as_key_and_an_empty_message() {
        let sign = feishu_sign("s3cret", 1_700_000_000);
        let mut mac = HmacSha256::new_from_slice(b"1700000000\ns3cret").expect("key");
        mac.update(b"");
        assert_eq!(sign, B64.encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn replies_are_classified() {
        assert_eq!(
            check_reply(Format::Dingtalk, br#"{"errcode":0,"errmsg":"ok"}"#),
            Reply::Ok
        );
        assert!(matches!(
            check_reply(
                Format::Dingtalk,
                br#"{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}"#
            ),
            Reply::Throttled(_)
        ));
        assert!(matches!(
            check_reply(
                Format::Dingtalk,
                br#"{"errcode":310000,"errmsg":"sign not match"}"#
            ),
            Reply::Refused(_)
        ));
        assert!(matches!(
            check_reply(
                Format::Wecom,
                br#"{"errcode":45009,"errmsg":"api freq out of limit"}"#
            ),
            Reply::Throttled(_)
        ));
        assert!(matches!(
            check_reply(Format::Wecom, br#"{"errcode":-1,"errmsg":"system busy"}"#),
            Reply::Transient(_)
        ));
        assert_eq!(
            check_reply(Format::Feishu, br#"{"code":0,"msg":"success","data":{}}"#),
            Reply::Ok
        );
        assert!(matches!(
            check_reply(
                Format::Feishu,
                br#"{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}"#
            ),
            Reply::Refused(_)
        ));
        assert_eq!(check_reply(Format::Feishu, b"not json"), Reply::Ok);
        assert_eq!(check_reply(Format::Json, b"{\"errcode\":5}"), Reply::Ok);
    }

    /// A message over WeCom's limit (a handler's name a thousand times long) is cut in its
    /// fields and still ends with the link to the case and the id.
    #[test]
    fn a_long_wecom_message_keeps_its_link_and_id() {
        let msg = Message {
            color: Color::Red,
            title: "🔴 红灯告警 · 行政许可决定期限".into(),
            headline: "XZ-2026-0001 已超期 2 个工作日".into(),
            fields: vec![
                ("承办人", "承办人".repeat(1000)),
                ("事项", "建筑工程施工许可".into()),
            ],
            id: "0123456789abcdef0123456789abcdef".into(),
            link: Some("https://redlight.example.gov.cn/case/XZ-2026-0001".into()),
        };
        let body = wecom_body(&msg, &["zhangsan".to_string()]);
        let content = body["markdown"]["content"].as_str().expect("content");
        assert!(content.len() <= WECOM_MAX_BYTES, "{} bytes", content.len());
        assert!(
            content.ends_with(
                "…\n[查看案件](https://redlight.example.gov.cn/case/XZ-2026-0001)\n告警编号 0123456789abcdef0123456789abcdef"
            ),
            "{}",
            &content[content.len() - 200..]
        );
        assert!(content.contains("<@zhangsan>"), "the mention is kept");
        // A short one is whole.
        let short = Message {
            fields: vec![("承办人", "张三".into())],
            ..msg
        };
        let content = wecom_body(&short, &[])["markdown"]["content"]
            .as_str()
            .expect("content")
            .to_string();
        assert!(!content.contains('…'), "{content}");
        assert!(
            content.contains("> 承办人：<font color=\"comment\">张三</font>\n[查看案件]"),
            "{content}"
        );
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        let s = "红".repeat(2000); // 6000 bytes
        let t = truncate_utf8(&s, WECOM_MAX_BYTES);
        assert!(t.len() <= WECOM_MAX_BYTES);
        assert!(t.ends_with('…'));
    }
}
