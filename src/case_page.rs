//! A case's own page at `/case/{id}` (案件详情), opened from the board's lists: what a
//! supervisor asks of a red case before picking up the phone. Its legal clocks (the rule
//! and its article, the limit, when it started, the deadline, the yellow instant, how long
//! overdue or left, pauses and extensions), its violations and periodic duties, every
//! alert it raised, and the data its events carried.
//!
//! It renders the facts `/api/v1/cases/{id}` gives (`api::case_facts`), so the page and
//! the API cannot disagree; like the board it is server-rendered, in Chinese, without
//! script, every text from events escaped. Its links are relative (`../` is the board), so
//! they work behind a proxy's path prefix. It does not reload itself: a person reads it.

use crate::api::{View, light_zh, parse_light, state_zh};
use crate::board::{STYLE, esc, human, workdays_between};
use crate::formats::text::{
    detail_text, display_time, field_name, type_name, unit_word, value_name,
};
use chrono::DateTime;
use serde_json::Value;
use std::fmt::Write;

const CASE_STYLE: &str = r#"
main.detail { display:block; max-width:1500px; }
main.detail section { margin-bottom:18px; }
header .back { font-size:18px; color:var(--muted); text-decoration:none; border:1px solid var(--line); border-radius:6px; padding:2px 10px; white-space:nowrap; }
header h1 { overflow-wrap:anywhere; white-space:normal; }
.badge { display:flex; align-items:center; gap:10px; font-size:28px; font-weight:700; }
.badge .dot { width:26px; height:26px; }
.badge.closed { color:var(--muted); }
.facts { color:var(--muted); font-size:18px; margin-left:auto; text-align:right; }
.facts b { color:var(--text); font-weight:normal; }
.facts a { color:var(--text); }
table.detail th, table.detail td { text-align:left; font-size:18px; vertical-align:top; }
table.detail td { padding:6px 8px; }
table.detail td.when { white-space:nowrap; font-variant-numeric:tabular-nums; }
table.detail .basis { color:var(--muted); font-size:15px; }
table.detail td.red { color:var(--red); font-weight:700; } table.detail td.yellow { color:var(--yellow); font-weight:700; } table.detail td.green { color:var(--green); font-weight:700; }
table.detail td.red, table.detail td.yellow, table.detail td.green, table.detail td.muted, table.detail td.limit, table.detail td.word { white-space:nowrap; }
td.muted, span.muted { color:var(--muted); }
p.note { color:var(--yellow); font-size:18px; margin:4px 0 12px; }
table.detail .basis.red { color:var(--red); }
nav.periods { color:var(--muted); font-size:18px; margin:0 0 14px; line-height:1.8; }
nav.periods a, nav.periods b { color:var(--text); }
table.detail th.num, table.detail td.num { text-align:right; font-variant-numeric:tabular-nums; }
p.rules { color:var(--muted); font-size:16px; margin:12px 0 0; }
/* A phone (a case's link from a chat message opens here): the header's facts under the
   title, and each row of the clocks, violations, duties and alerts a card of its own, one
   field a line after its column's name (`data-label`), the rule's title heading it; empty
   fields left out. As a table, seven columns overran the screen by half its width. The
   data's two columns stay a table. */
@media screen and (max-width: 760px) {
  header .back { font-size:15px; }
  .badge { font-size:22px; }
  .badge .dot { width:20px; height:20px; }
  .facts { flex:1 1 100%; margin-left:0; text-align:left; font-size:15px; }
  main.detail { padding:12px 10px; }
  table.detail:not(.kv) thead { display:none; }
  table.detail:not(.kv), table.detail:not(.kv) tbody, table.detail:not(.kv) tr, table.detail:not(.kv) td { display:block; }
  table.detail:not(.kv) tr { padding:8px 0; border-bottom:1px solid var(--line); }
  table.detail:not(.kv) td { border:0; padding:2px 0; font-size:16px; white-space:normal; }
  table.detail td { overflow-wrap:anywhere; }
  table.detail:not(.kv) td:empty { display:none; }
  table.detail:not(.kv) td:not([data-label]) { font-weight:700; }
  table.detail .basis { font-weight:normal; }
  table.detail td[data-label]::before { content:attr(data-label) "："; color:var(--muted); font-weight:normal; }
  table.detail.kv td { font-size:16px; }
  table.detail:not(.kv) td.num { display:inline-block; margin-right:14px; text-align:left; }
  table.detail.kv td:first-child { overflow-wrap:normal; white-space:nowrap; }
}
@media print {
  .badge { font-size:14pt; }
  .badge .dot { width:12px; height:12px; }
  .facts { font-size:9pt; }
  main.detail { max-width:none; }
  table.detail th, table.detail td { font-size:9pt; }
  table.detail .basis, p.rules { font-size:8pt; }
}
"#;

/// A deadline that falls in a year the calendar has no data for yet.
const PENDING: &str = "待定（缺节假日数据）";

/// A light's name in Chinese (`red` as the facts give it → 红灯).
fn light_text(light: &str) -> &'static str {
    parse_light(light).map_or("—", light_zh)
}

/// An alert's reason (SPEC §4) as the page says it.
fn reason_text(reason: &str) -> &str {
    match reason {
        "approaching" => "临近期限",
        "overdue" => "超期",
        "violation" => "违规",
        "missing" => "未履行",
        "completed" => "按时办结",
        "completed_late" => "超期办结",
        "retracted" => "撤销（办结消息迟到，实际按时）",
        "withdrawn" => "申请撤回",
        other => other,
    }
}

/// A unit of a limit, after its amount, as the chat messages write it: `20个工作日`,
/// `30天`, `4小时`.
fn unit_text(unit: &str) -> &str {
    unit_word(unit).unwrap_or(unit)
}

/// An instant of the facts (RFC 3339 in the configured zone) as people write it, as the
/// chat messages do: `2026-10-30 24:00` for the midnight that ends 10-30 (a deadline),
/// `2026-09-28 10:00` otherwise.
fn when(v: &Value) -> String {
    v.as_str().map(display_time).unwrap_or_default()
}

fn ms_of(v: &Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp_millis())
}

/// A number as the page writes it: `20`, `12.5`.
fn amount(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{}", (x * 100.0).round() / 100.0),
        None => String::new(),
    }
}

/// The start of a page for people (a case's, the scorecard's): the board's style and the
/// pages' own, the title after the board's.
pub(crate) fn head(h: &mut String, view: &View, title: &str) {
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{STYLE}{CASE_STYLE}</style></head>
<body>
"#,
        title = esc(&format!("{title} · {}", view.board.title)),
    );
}

/// The page of a case the store holds, or of one forgotten after its retention time whose
/// alerts are kept. `facts` is what `/api/v1/cases/{id}` gives.
pub fn render(view: &View, facts: &Value, now: i64) -> String {
    let id = facts["id"].as_str().unwrap_or_default();
    let mut h = String::with_capacity(16 * 1024);
    head(&mut h, view, &format!("案件 {id}"));
    let forgotten = facts["forgotten"].as_bool() == Some(true);
    let light = facts["light"].as_str().unwrap_or_default();
    let status = if forgotten {
        "已过保留期"
    } else {
        state_zh(
            facts["withdrawn"].as_bool() == Some(true),
            facts["open"].as_bool() == Some(true),
        )
    };
    let badge = if forgotten {
        r#"<div class="badge closed" id="case-light">—</div>"#.to_string()
    } else {
        format!(
            r#"<div class="badge {light}" id="case-light" data-light="{light}"><span class="dot"></span>{}</div>"#,
            light_text(light),
            light = esc(light),
        )
    };
    let mut facts_line = format!(r#"<b id="case-status">{status}</b>"#);
    if let Some(d) = facts["department"].as_str() {
        let q: String = form_urlencoded::byte_serialize(d.as_bytes()).collect();
        let _ = write!(
            facts_line,
            r#" · 部门 <a id="case-department" href="../?department={q}" title="本部门的看板">{}</a>"#,
            esc(d)
        );
    }
    for (key, label) in [("item", "事项"), ("handler", "经办人")] {
        if let Some(v) = facts[key].as_str() {
            let _ = write!(facts_line, " · {label} <b>{}</b>", esc(v));
        }
    }
    if !forgotten {
        let _ = write!(
            facts_line,
            "<br>首次事件 {} · 最近事件 {} · 共 {} 个事件",
            when(&facts["first_event"]),
            when(&facts["last_event"]),
            facts["events"]["count"].as_u64().unwrap_or(0),
        );
    }
    let json_href = format!("../api/v1/cases/{}", path_segment(id));
    let _ = write!(
        h,
        r#"<header>
<a class="back" href="../" title="回到看板">← 看板</a>
<h1>案件 <span id="case-id">{id}</span></h1>
{badge}
<div class="facts">{facts_line}<br><a href="{json_href}">JSON</a> · 查看于 {now}</div>
</header>
<main class="detail">
"#,
        id = esc(id),
        now = view.sheet_time(now),
    );
    if forgotten {
        h.push_str(r#"<p class="note" id="forgotten">此案件已办结并超过保留期，状态已清除；以下是它的告警记录。</p>"#);
    } else {
        clocks(&mut h, view, facts, now);
        violations(&mut h, facts);
        duties(&mut h, facts);
    }
    alerts(&mut h, facts);
    if !forgotten {
        data(&mut h, view, facts);
    }
    let _ = write!(
        h,
        "</main>\n<footer>时限按法定工作日历计算（民法典第二百零一条、第二百零三条）；24:00 即该日结束。{}</footer>\n</body></html>\n",
        find_form("../case"),
    );
    h
}

/// The form that opens a case's page by its number (`/case?id=…`); `action` is `case` from
/// the board, `../case` from a case's page.
pub(crate) fn find_form(action: &str) -> String {
    format!(
        r#"<form class="find" action="{action}" method="get" role="search"><input name="id" required placeholder="案件编号" aria-label="案件编号" autocomplete="off"><button type="submit">查看</button></form>"#
    )
}

/// The page for an id no case and no alert has.
pub fn not_found(view: &View, id: &str) -> String {
    let mut h = String::with_capacity(4 * 1024);
    head(&mut h, view, "未找到案件");
    let _ = write!(
        h,
        r#"<header><a class="back" href="../" title="回到看板">← 看板</a><h1>未找到案件 <span id="case-id">{id}</span></h1></header>
<main class="detail"><section><p id="not-found">没有编号为“{id}”的案件，也没有它的告警记录。案件编号即事件的 subject，须完全一致（区分大小写）；看板上的案件编号可直接点击打开。</p>{form}</section></main>
</body></html>
"#,
        id = esc(id),
        form = find_form("../case"),
    );
    h
}

/// The page for a browser without the board's login where `http.token` guards the daemon
/// (status 401): how to log in, in words.
pub fn login_needed(view: &View) -> String {
    let mut h = String::with_capacity(4 * 1024);
    head(&mut h, view, "需要登录");
    h.push_str(
        r#"<header><h1>需要登录</h1></header>
<main class="detail"><section><p id="login-needed">看板与案件详情需要访问令牌（<code>http.token</code>）。在本浏览器中用看板地址加 <code>?token=令牌</code> 打开一次（例如 <code>http://redlight.example:9464/?token=…</code>），浏览器即记住登录，之后看板和消息中的案件链接都可直接打开。令牌请向系统管理员索取。</p></section></main>
</body></html>
"#,
    );
    h
}

/// A case id as one segment of a path: everything but letters, digits and `-._~`
/// percent-encoded (an id may hold `/`, `?`, `#` or Chinese).
pub fn path_segment(id: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn clocks(h: &mut String, view: &View, facts: &Value, now: i64) {
    let list = rows(&facts["clocks"]);
    let _ = write!(
        h,
        r#"<section id="clocks"><h2>法定时限 <small>{} 个</small></h2>"#,
        list.len()
    );
    if list.is_empty() {
        h.push_str(r#"<div class="none">此案件没有计时的时限</div></section>"#);
        return;
    }
    h.push_str(r#"<table class="detail"><thead><tr><th>规则</th><th>灯色</th><th>时限</th><th>开始</th><th>期限</th><th>黄灯</th><th>情况</th></tr></thead><tbody>"#);
    for c in list {
        let light = c["light"].as_str().unwrap_or_default();
        let limit = &c["limit"];
        let unit = limit["unit"].as_str().unwrap_or_default();
        let limit_text = match limit["fixed"].as_str() {
            Some("same_workday") => "当日办结".to_string(),
            Some("due") => "限期（事件所定）".to_string(),
            Some(_) => "固定期限".to_string(),
            None => {
                let mut t = esc(&format!("{}{}", amount(&limit["amount"]), unit_text(unit)));
                match limit["extended"].as_u64() {
                    Some(n) if n > 0 => {
                        let _ = write!(
                            t,
                            r#"<div class="basis">含延长{n}{}</div>"#,
                            unit_text(unit)
                        );
                    }
                    _ => {}
                }
                t
            }
        };
        let situation = clock_situation(view, c, unit, now);
        let _ = write!(
            h,
            r#"<tr data-rule="{rule}"><td>{title}<div class="basis">{basis} · {rule}</div></td><td class="{light}" data-label="灯色">{light_name}</td><td class="limit" data-label="时限">{limit}</td><td class="when" data-label="开始">{started}</td><td class="when deadline" data-label="期限">{deadline}</td><td class="when" data-label="黄灯">{yellow}</td><td class="situation" data-label="情况">{situation}</td></tr>"#,
            rule = esc(c["rule"].as_str().unwrap_or_default()),
            title = esc(c["title"].as_str().unwrap_or_default()),
            basis = esc(c["basis"].as_str().unwrap_or_default()),
            light = esc(light),
            light_name = light_text(light),
            limit = limit_text,
            started = when(&c["started"]),
            deadline = if c["deadline_pending"].as_bool() == Some(true) {
                PENDING.to_string()
            } else {
                when(&c["deadline"])
            },
            yellow = when(&c["yellow_at"]),
            situation = esc(&situation),
        );
    }
    h.push_str("</tbody></table></section>\n");
}

/// A clock's state in a few words: how long overdue or left (with the workdays of a
/// workday clock), paused since when, or stopped in time or late; and the time counted.
fn clock_situation(view: &View, c: &Value, unit: &str, now: i64) -> String {
    let workday_clock = unit == "workdays";
    let workdays = |from: Option<i64>, to: Option<i64>| match (from, to) {
        (Some(f), Some(t)) if workday_clock => workdays_between(view, f, t)
            .map(|n| format!("（{n}个工作日）"))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let deadline = ms_of(&c["deadline"]);
    let mut out = match c["state"].as_str() {
        Some("stopped") => {
            let late = c["late"].as_bool() == Some(true);
            format!(
                "{} {}",
                if late { "超期办结" } else { "按时办结" },
                when(&c["stopped"])
            )
        }
        Some("paused") => format!("暂停计时（特别程序）自 {}", when(&c["paused_at"])),
        _ if c["deadline_pending"].as_bool() == Some(true) => {
            "期限待定：缺少下一年度节假日数据".to_string()
        }
        _ => match (
            c["overdue_seconds"].as_i64(),
            c["remaining_seconds"].as_i64(),
        ) {
            (Some(s), _) => format!("超期 {}{}", human(s * 1000), workdays(deadline, Some(now))),
            (_, Some(s)) => format!("剩余 {}{}", human(s * 1000), workdays(Some(now), deadline)),
            _ => String::new(),
        },
    };
    let counted = &c["counted"];
    if let Some(v) = counted.get("value") {
        let u = counted["unit"].as_str().unwrap_or_default();
        let _ = write!(out, " · 已计 {}{}", amount(v), unit_text(u));
    }
    out
}

fn violations(h: &mut String, facts: &Value) {
    let list = rows(&facts["violations"]);
    if list.is_empty() {
        return;
    }
    let _ = write!(
        h,
        r#"<section id="violations"><h2 class="red">违规 <small>{} 项</small></h2><table class="detail"><thead><tr><th>规则</th><th>时间</th><th>说明</th><th>状态</th></tr></thead><tbody>"#,
        list.len()
    );
    for v in list {
        let _ = write!(
            h,
            r#"<tr><td>{title}<div class="basis">{basis} · {rule}</div></td><td class="when" data-label="时间">{at}</td><td data-label="说明">{detail}</td><td data-label="状态">{state}</td></tr>"#,
            title = esc(v["title"].as_str().unwrap_or_default()),
            basis = esc(v["basis"].as_str().unwrap_or_default()),
            rule = esc(v["rule"].as_str().unwrap_or_default()),
            at = when(&v["at"]),
            detail = esc(&detail_text(v["detail"].as_str().unwrap_or_default())),
            state = if v["resolved"].as_bool() == Some(true) {
                r#"<span class="muted">已解除</span>"#
            } else {
                r#"<span class="red">有效</span>"#
            },
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn duties(h: &mut String, facts: &Value) {
    let list = rows(&facts["duties"]);
    if list.is_empty() {
        return;
    }
    let _ = write!(
        h,
        r#"<section id="duties"><h2>周期性义务</h2><table class="detail"><thead><tr><th>规则</th><th>本期</th><th>本期期限</th><th>已履行</th><th>未履行</th></tr></thead><tbody>"#
    );
    for d in list {
        let met: Vec<String> = rows(&d["met"])
            .iter()
            .filter_map(|m| m.as_str().map(esc))
            .collect();
        let missing: Vec<String> = rows(&d["missing"])
            .iter()
            .map(|m| {
                format!(
                    "{}（期限 {}）",
                    esc(m["period"].as_str().unwrap_or_default()),
                    when(&m["due"])
                )
            })
            .collect();
        let _ = write!(
            h,
            r#"<tr><td>{title}<div class="basis">{rule}</div></td><td data-label="本期">{period}</td><td class="when" data-label="本期期限">{due}</td><td data-label="已履行">{met}</td><td class="{miss_class}" data-label="未履行">{missing}</td></tr>"#,
            title = esc(d["title"].as_str().unwrap_or_default()),
            rule = esc(d["rule"].as_str().unwrap_or_default()),
            period = esc(d["period"].as_str().unwrap_or_default()),
            due = if d["pending"].as_bool() == Some(true) {
                PENDING.to_string()
            } else {
                when(&d["due"])
            },
            met = if met.is_empty() {
                "—".to_string()
            } else {
                met.join("、")
            },
            miss_class = if missing.is_empty() { "muted" } else { "red" },
            missing = if missing.is_empty() {
                "—".to_string()
            } else {
                missing.join("、")
            },
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn alerts(h: &mut String, facts: &Value) {
    let list = rows(&facts["alerts"]);
    let _ = write!(
        h,
        r#"<section id="alerts"><h2>告警记录 <small>共 {} 条 · 按发生先后</small></h2>"#,
        list.len()
    );
    if list.is_empty() {
        h.push_str(r#"<div class="none">此案件没有发出过告警</div></section>"#);
        return;
    }
    h.push_str(r#"<table class="detail"><thead><tr><th>时间</th><th>灯色</th><th>状态</th><th>原因</th><th>规则</th><th>期限</th><th>说明</th></tr></thead><tbody>"#);
    for entry in list {
        let a = &entry["alert"];
        let level = a["level"].as_str().unwrap_or_default();
        let resolved = a["status"].as_str() == Some("resolved");
        let _ = write!(
            h,
            r#"<tr data-alert="{id}"><td class="when" data-label="时间">{at}</td><td class="{class}" data-label="灯色">{level_name}</td><td class="word" data-label="状态">{status}</td><td class="word" data-label="原因">{reason}</td><td data-label="规则">{title}<div class="basis">{basis}</div></td><td class="when" data-label="期限">{deadline}</td><td data-label="说明">{detail}</td></tr>"#,
            id = esc(a["id"].as_str().unwrap_or_default()),
            at = when(&a["at"]),
            class = if resolved { "muted" } else { level },
            level_name = light_text(level),
            status = if resolved { "解除" } else { "亮灯" },
            reason = esc(reason_text(a["reason"].as_str().unwrap_or_default())),
            title = esc(a["title"].as_str().unwrap_or_default()),
            basis = esc(a["basis"].as_str().unwrap_or_default()),
            deadline = when(&a["deadline"]),
            detail = esc(&detail_text(a["detail"].as_str().unwrap_or_default())),
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn data(h: &mut String, view: &View, facts: &Value) {
    h.push_str(r#"<section id="data"><h2>案件数据 <small>事件所带</small></h2><table class="detail kv"><tbody>"#);
    if let Some(map) = facts["data"].as_object() {
        for (k, v) in map {
            // The catalogue's fields by their Chinese names, the field itself beside (a
            // rule's condition names it); coded values and yes-or-no likewise.
            let key = match field_name(k) {
                Some(name) => format!(r#"{name} <span class="muted">{}</span>"#, esc(k)),
                None => esc(k),
            };
            let value = match v {
                Value::Bool(b) => format!(
                    r#"{} <span class="muted">{b}</span>"#,
                    if *b { "是" } else { "否" }
                ),
                Value::String(s) => match value_name(k, s) {
                    Some(name) => format!(r#"{name} <span class="muted">{}</span>"#, esc(s)),
                    None => esc(s),
                },
                // Numbers, null, arrays and objects as JSON.
                other => esc(&other.to_string()),
            };
            let _ = write!(
                h,
                r#"<tr data-key="{}"><td>{key}</td><td>{value}</td></tr>"#,
                esc(k)
            );
        }
    }
    let stages: Vec<String> = rows(&facts["stages"])
        .iter()
        .filter_map(|s| {
            let rule = s["rule"].as_str()?;
            let title = view
                .rules
                .index_of(rule)
                .map_or(rule, |i| view.rule_title(i));
            let reached = match s["reached"].as_str() {
                Some(t) => match type_name(t) {
                    Some(name) => format!(r#"已到{name} <span class="muted">{}</span>"#, esc(t)),
                    None => format!("已到{}", esc(t)),
                },
                None => "未开始".to_string(),
            };
            Some(format!("{}：{reached}", esc(title)))
        })
        .collect();
    if !stages.is_empty() {
        let _ = write!(
            h,
            r#"<tr><td class="muted">办理环节</td><td>{}</td></tr>"#,
            stages.join("；")
        );
    }
    let types: Vec<String> = rows(&facts["events"]["types"])
        .iter()
        .filter_map(|t| t.as_str())
        .map(|t| match type_name(t) {
            Some(name) => format!(r#"{name} <span class="muted">{}</span>"#, esc(t)),
            None => esc(t),
        })
        .collect();
    let _ = write!(
        h,
        r#"<tr><td class="muted">事件类型</td><td>{}</td></tr>"#,
        types.join("、")
    );
    h.push_str("</tbody></table></section>\n");
}
