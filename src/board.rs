//! The red-light board at `/` (红绿灯看板): one server-rendered page for a wall screen, in
//! Chinese, with no script. Per department its red, yellow and green open cases; the red
//! cases, most overdue first, with how long overdue; the yellow cases, least time left
//! first, with how much is left. The page reloads itself every `board.refresh_seconds`.
//! `/?department=…` is one department's own board (the screen in its hall), cut from the
//! same snapshot; the lists and the footer link their spreadsheet exports, and each listed
//! case id its own page, `/case/{id}` ([`crate::case_page`]).
//!
//! The counts come from the shared [`Snapshot`] (at most a few seconds old); the times
//! overdue and left are computed at render time against the wall clock. Every text that
//! comes from events is escaped.

use crate::api::{Cause, Counts, Listed, Snapshot, View};
use crate::clock::DAY;
use crate::daemon::InputNotice;
use crate::engine::Light;
use crate::rules::Unit;
use std::fmt::Write;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A span of wall time in Chinese: `3天4小时`, `5小时20分`, `12分钟`.
pub fn human(ms: i64) -> String {
    let m = ms.max(0) / 60_000;
    let (d, h, mi) = (m / 1440, (m % 1440) / 60, m % 60);
    match (d, h, mi) {
        (0, 0, 0) => "不到1分钟".to_string(),
        (0, 0, mi) => format!("{mi}分钟"),
        (0, h, 0) => format!("{h}小时"),
        (0, h, mi) => format!("{h}小时{mi}分"),
        (d, 0, _) => format!("{d}天"),
        (d, h, _) => format!("{d}天{h}小时"),
    }
}

pub(crate) const STYLE: &str = r#"
:root { --red:#ff4d4f; --yellow:#fadb14; --green:#52c41a; --bg:#0b1220; --panel:#131c2e; --line:#24324d; --text:#e8eef8; --muted:#93a4c3; }
* { box-sizing: border-box; }
html, body { margin:0; background:var(--bg); color:var(--text);
  font-family:"Noto Sans CJK SC","Source Han Sans SC","PingFang SC","Microsoft YaHei","WenQuanYi Zen Hei",sans-serif;
  font-size:20px; line-height:1.35; }
header { display:flex; flex-wrap:wrap; align-items:center; gap:32px; padding:16px 28px; background:var(--panel); border-bottom:2px solid var(--line); }
h1 { font-size:34px; margin:0; letter-spacing:2px; white-space:nowrap; }
.totals { display:flex; gap:28px; flex:1; justify-content:center; }
.total { display:flex; align-items:center; gap:12px; padding:6px 20px; border-radius:12px; background:#0e1626; }
.total .label { font-size:24px; color:var(--muted); }
.total .n { font-size:52px; font-weight:700; font-variant-numeric:tabular-nums; }
.dot { width:30px; height:30px; border-radius:50%; display:inline-block; box-shadow:0 0 12px currentColor; background:currentColor; }
.red { color:var(--red); } .yellow { color:var(--yellow); } .green { color:var(--green); }
.meta { color:var(--muted); font-size:17px; text-align:right; white-space:nowrap; margin-left:auto; }
.stale { color:var(--yellow); }
main { display:grid; grid-template-columns:minmax(0,1fr) minmax(0,1.15fr) minmax(0,1.15fr); gap:18px; padding:18px 28px; }
section { background:var(--panel); border:1px solid var(--line); border-radius:12px; padding:12px 16px; min-width:0; }
h2 { margin:0 0 10px; font-size:26px; display:flex; flex-wrap:wrap; align-items:baseline; column-gap:12px; }
h2 small { font-size:17px; color:var(--muted); font-weight:normal; }
h2 a.export { font-size:17px; font-weight:normal; color:var(--muted); text-decoration:none; border:1px solid var(--line); border-radius:6px; padding:0 8px; }
table { width:100%; border-collapse:collapse; }
th { text-align:right; color:var(--muted); font-weight:normal; font-size:18px; padding:4px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
/* The counts' headers in one character each, in their light's colour, and never broken
   (at 1,280 px "红灯" stood as 红 over 灯): the departments' names get the room. */
th.red { color:var(--red); } th.yellow { color:var(--yellow); } th.green { color:var(--green); }
th:first-child, td:first-child { text-align:left; }
td { padding:7px 8px; border-bottom:1px solid var(--line); font-size:22px; }
td.n { text-align:right; font-weight:700; font-size:28px; font-variant-numeric:tabular-nums; padding-left:5px; padding-right:5px; }
th + th { padding-left:5px; padding-right:5px; }
td.n.zero { color:#3d4b66; }
td.all { color:var(--muted); }
td a { color:inherit; text-decoration:none; }
ol { list-style:none; margin:0; padding:0; }
li { padding:8px 4px 8px 14px; border-bottom:1px solid var(--line); border-left:6px solid; margin-bottom:2px; }
li.red { border-left-color:var(--red); } li.yellow { border-left-color:var(--yellow); }
/* A case's id is what a supervisor looks for: it shows whole, and when the id and its time
   do not fit on one line, the time goes under it; an id longer than its column (a
   registration number of thirty characters on a projector) wraps inside it, never cut.
   Likewise the header wraps on a narrow screen rather than run off its right edge
   (tests/board.rs measures both in Chromium). */
.l1 { display:flex; flex-wrap:wrap; justify-content:space-between; column-gap:12px; align-items:baseline; }
.case-id { flex:0 1 auto; min-width:0; font-weight:700; color:var(--text); font-size:22px; overflow-wrap:anywhere; text-decoration:none; }
.time { flex:0 0 auto; margin-left:auto; font-weight:700; font-size:22px; white-space:nowrap; }
.time .wd { font-size:16px; font-weight:normal; }
.note { color:var(--text); }
li.red .time { color:var(--red); } li.yellow .time { color:var(--yellow); }
.l2 { color:var(--muted); font-size:18px; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
.more, .none { color:var(--muted); padding:10px 4px; font-size:18px; }
.more a.export { color:inherit; }
footer { color:#5d6d8c; font-size:15px; padding:0 28px 14px; }
footer a { color:inherit; }
form.find { display:inline-flex; gap:6px; margin-left:12px; vertical-align:middle; }
form.find input { font:inherit; font-size:15px; width:12em; padding:1px 6px; background:#0e1626; color:var(--text); border:1px solid var(--line); border-radius:6px; }
form.find button { font:inherit; font-size:15px; padding:1px 10px; background:var(--panel); color:var(--muted); border:1px solid var(--line); border-radius:6px; cursor:pointer; }
/* Narrower than a 1080p screen (a 1,280 px projector): a city's departments have names of
   eight to ten characters and four-digit counts, which squeezed the names to three or four
   characters a line. The departments get a larger share and the counts a smaller type, so
   such a name takes one or two lines; the case lists move a case's time under its id. */
@media (max-width: 1600px) {
  main { grid-template-columns:minmax(0,1.3fr) minmax(0,1fr) minmax(0,1fr); }
  td { font-size:19px; }
  td.n { font-size:23px; }
}
/* A phone: a supervisor opening the board, or a case's link from a DingTalk, WeCom or
   Feishu message, at 360-430 px. Three columns there left two or three characters a line
   (红灯 as 红 over 灯, a case id one character a line). One column instead, the red cases
   first, then the yellow, then the departments (on a wall screen the departments come
   first, at the left); the header's counts in a row under the title, its notes under them;
   smaller type; the form to open a case as wide as the screen (16 px: phones zoom in on
   smaller inputs). A case's page lays its tables out as cards (case_page.rs). */
@media screen and (max-width: 760px) {
  html, body { font-size:16px; }
  header { gap:10px 16px; padding:12px 14px; }
  h1 { font-size:24px; letter-spacing:1px; white-space:normal; }
  .totals { flex:1 1 100%; justify-content:flex-start; flex-wrap:wrap; gap:8px; }
  .total { gap:6px; padding:4px 10px; }
  .total .label { font-size:16px; white-space:nowrap; }
  .total .n { font-size:30px; }
  .dot { width:18px; height:18px; }
  .meta { flex:1 1 100%; margin-left:0; text-align:left; white-space:normal; font-size:14px; }
  main { grid-template-columns:minmax(0,1fr); gap:12px; padding:12px 10px; }
  section { padding:10px 12px; }
  section.cases-red { order:1; } section.cases-yellow { order:2; } section.departments { order:3; }
  h2 { font-size:21px; }
  h2 small, h2 a.export { font-size:14px; }
  th { font-size:15px; }
  td { font-size:17px; padding:6px; }
  td.n { font-size:20px; }
  .case-id, .time { font-size:18px; }
  .time .wd { font-size:14px; }
  .l2, .more, .none { font-size:15px; }
  footer { font-size:13px; padding:0 12px 12px; }
  form.find { display:flex; margin:8px 0 0; }
  form.find input { flex:1; width:auto; font-size:16px; }
  form.find button { font-size:16px; }
}
/* On paper (a case's page kept with its file, the scorecard taken to the assessment
   meeting, the board for a report): black on white, whatever the browser does with
   backgrounds (the dark theme printed either as a sheet of ink or, without backgrounds,
   as near-white text on white paper); the lights' dots still in colour; the lists one
   under another; the forms, the periods' links and the back link left out; type in
   points. */
@media print {
  :root { --bg:#fff; --panel:#fff; --line:#999; --text:#000; --muted:#444; --red:#c00000; --yellow:#9a6700; --green:#1a7f37; }
  html, body { background:#fff; color:#000; font-size:10pt; }
  header { background:#fff; padding:0 0 8px; gap:8px 24px; }
  h1 { font-size:18pt; }
  h2 { font-size:13pt; }
  h2 small, h2 a.export, .meta, footer { font-size:9pt; }
  .total { background:#fff; border:1px solid var(--line); padding:2px 10px; }
  .total .label { font-size:11pt; }
  .total .n { font-size:18pt; }
  .dot { width:12px; height:12px; box-shadow:none; -webkit-print-color-adjust:exact; print-color-adjust:exact; }
  main { display:block; padding:8px 0; }
  section { margin-bottom:10px; padding:6px 8px; }
  th, td, .case-id, .time { font-size:10pt; }
  td.n { font-size:11pt; }
  .l2, .more, .none, .time .wd { font-size:9pt; }
  tr, li { break-inside:avoid; }
  a { color:inherit; text-decoration:none; }
  form.find, nav.periods, header .back { display:none; }
  footer { padding:0; }
}
"#;

/// `&department=…` for a link of a department's own board (nothing on the whole board),
/// escaped for an HTML attribute.
fn department_param(department: Option<&str>) -> String {
    department.map_or(String::new(), |d| {
        let d: String = form_urlencoded::byte_serialize(d.as_bytes()).collect();
        format!("&amp;department={d}")
    })
}

/// Renders the board: the whole board, or with `department` that department's own (its
/// counts and lists only, its name in the title). `unknown`: the department is no case's,
/// with the known names it may have meant. `ignored`: a note on the query's parameters the
/// board does not take.
pub fn render(
    view: &View,
    snap: &Snapshot,
    now: i64,
    input: Option<&InputNotice>,
    department: Option<&str>,
    unknown: Option<&[String]>,
    ignored: Option<&str>,
) -> String {
    let title = match department {
        Some(d) => esc(&format!("{} · {d}", view.board.title)),
        None => esc(&view.board.title),
    };
    let mut h = String::with_capacity(32 * 1024);
    let t = &snap.totals;
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{STYLE}</style></head>
<body>
<header>
<h1>{title}</h1>
<div class="totals">
<div class="total red" id="total-red"><span class="dot"></span><span class="label">红灯</span><span class="n">{r}</span></div>
<div class="total yellow" id="total-yellow"><span class="dot"></span><span class="label">黄灯</span><span class="n">{y}</span></div>
<div class="total green" id="total-green"><span class="dot"></span><span class="label">绿灯</span><span class="n">{g}</span></div>
</div>
<div class="meta">在办 <b id="total-open">{open}</b> 件<br>更新于 {updated}{stale}<br>每 {refresh} 秒自动刷新{input}{calendar}{ignored}</div>
</header>
<main>
"#,
        refresh = view.board.refresh_seconds,
        r = t.red,
        y = t.yellow,
        g = t.green,
        open = t.total(),
        updated = view.sheet_time(snap.taken_ms),
        stale = if now - snap.taken_ms > 120_000 {
            r#"<span class="stale">（数据较旧）</span>"#
        } else {
            ""
        },
        input = input
            .map(|n| format!(
                r#"<br><span class="stale" id="input-notice">{}</span>"#,
                input_notice(n)
            ))
            .unwrap_or_default(),
        calendar = calendar_notice(view.calendar.last_day(), view.zone.date_of(now))
            .map(|n| format!(r#"<br><span class="stale" id="calendar-notice">{n}</span>"#))
            .unwrap_or_default(),
        ignored = ignored
            .map(|n| format!(
                r#"<br><span class="stale" id="ignored-params">{}</span>"#,
                esc(n)
            ))
            .unwrap_or_default(),
    );
    departments(&mut h, snap, department, unknown);
    let list = |h: &mut String, light, items: &[Listed], total| {
        cases(h, view, light, items, total, now, department)
    };
    list(&mut h, Light::Red, &snap.red, t.red);
    list(&mut h, Light::Yellow, &snap.yellow, t.yellow);
    let _ = write!(
        h,
        r#"</main>
<footer>红灯：已超期或违规；黄灯：临近期限；绿灯：在期限内。时限按法定工作日历计算（民法典第二百零一条、第二百零三条）。redlight {version} · 共 {scanned} 件案件记录 · <a class="scorecard" href="scorecard" title="各部门本季度按时办结率、违规与等次">本季度考核</a>{find}</footer>
</body></html>
"#,
        version = env!("CARGO_PKG_VERSION"),
        scanned = snap.scanned,
        find = crate::case_page::find_form("case"),
    );
    h
}

/// The departments' table. On the whole board each name links its department's own
/// board; on a department's own board the title links back to the whole one.
fn departments(
    h: &mut String,
    snap: &Snapshot,
    department: Option<&str>,
    unknown: Option<&[String]>,
) {
    let mut rows: Vec<(&String, &Counts)> = snap.departments.iter().collect();
    rows.sort_by(|a, b| {
        (b.1.red, b.1.yellow, b.1.total())
            .cmp(&(a.1.red, a.1.yellow, a.1.total()))
            .then_with(|| a.0.cmp(b.0))
    });
    let _ = write!(
        h,
        r#"<section class="departments"><h2>各部门 <small>{n} 个部门</small>{back}<a class="export" href="api/v1/cases.csv?open=true{param}" title="在办案件导出为表格（CSV）">导出在办案件</a></h2>
<table><thead><tr><th>部门</th><th class="red" title="红灯">红</th><th class="yellow" title="黄灯">黄</th><th class="green" title="绿灯">绿</th><th title="在办">在办</th></tr></thead><tbody>
"#,
        n = rows.len(),
        back = if department.is_some() {
            r#"<a class="export" href="./" title="回到全部部门的看板">全部部门</a>"#
        } else {
            ""
        },
        param = department_param(department),
    );
    let cell = |light: &str, n: u64| {
        let zero = if n == 0 { " zero" } else { "" };
        format!(r#"<td class="n {light}{zero}" data-light="{light}">{n}</td>"#)
    };
    for (dept, c) in rows {
        let d = esc(dept);
        let name = if department.is_some() {
            d.clone()
        } else {
            let q: String = form_urlencoded::byte_serialize(dept.as_bytes()).collect();
            format!(r#"<a href="?department={q}" title="只看本部门的看板">{d}</a>"#)
        };
        let _ = writeln!(
            h,
            r#"<tr data-department="{d}"><td class="dept">{name}</td>{}{}{}<td class="n all">{}</td></tr>"#,
            cell("red", c.red),
            cell("yellow", c.yellow),
            cell("green", c.green),
            c.total()
        );
    }
    match (department, unknown) {
        // A name no case has: most likely mistyped; say so, with the names it may mean.
        (Some(d), Some(similar)) => {
            let mut note = format!("没有部门名为“{}”的案件", esc(d));
            if similar.is_empty() {
                note.push_str("；请从全部部门的看板点选部门");
            } else {
                let links: Vec<String> = similar
                    .iter()
                    .map(|s| {
                        let q: String = form_urlencoded::byte_serialize(s.as_bytes()).collect();
                        format!(r#"<a href="?department={q}">{}</a>"#, esc(s))
                    })
                    .collect();
                let _ = write!(note, "。是否要找：{}", links.join("、"));
            }
            let _ = write!(
                h,
                r#"<tr><td class="none" colspan="5" id="unknown-department">{note}</td></tr>"#
            );
        }
        _ if snap.departments.is_empty() => {
            h.push_str(r#"<tr><td class="none" colspan="5">暂无在办案件</td></tr>"#);
        }
        _ => {}
    }
    h.push_str("</tbody></table></section>\n");
}

fn cases(
    h: &mut String,
    view: &View,
    light: Light,
    list: &[Listed],
    total: u64,
    now: i64,
    department: Option<&str>,
) {
    let (class, name, order) = match light {
        Light::Red => ("red", "红灯案件", "超期最久的在前"),
        _ => ("yellow", "黄灯案件", "剩余时间最少的在前"),
    };
    let _ = writeln!(
        h,
        r#"<section class="cases-{class}"><h2 class="{class}">{name} <small>共 {total} 件 · {order}</small><a class="export" href="api/v1/cases.csv?light={class}&amp;open=true{param}" title="{name}全部导出为表格（CSV）">导出</a></h2><ol class="cases {class}" id="list-{class}">"#,
        param = department_param(department),
    );
    for l in list {
        let rule = view.rules.rules.get(l.rule as usize);
        let rule_title = rule.map_or_else(String::new, |r| r.title.to_string());
        let basis = rule.map_or_else(String::new, |r| r.basis.to_string());
        let (time, workdays, note) = time_text(view, l, now);
        let note = note.map_or(String::new(), |n| {
            format!(r#"<span class="note">{}</span> · "#, esc(&n))
        });
        let workdays = workdays.map_or(String::new(), |n| {
            format!(r#"<span class="wd">（{n}个工作日）</span>"#)
        });
        let who: Vec<&str> = [
            Some(l.department.as_str()),
            l.item.as_deref(),
            l.handler.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let tip = match &l.detail {
            Some(d) => format!("{basis} · {d}"),
            None => basis,
        };
        let _ = writeln!(
            h,
            r#"<li class="{class}" data-case="{id}" data-light="{class}" title="{tip}"><div class="l1"><a class="case-id" href="case/{href}" title="案件详情">{id}</a><span class="time">{time}{workdays}</span></div><div class="l2">{note}{rule_title} · {who}</div></li>"#,
            id = esc(&l.id),
            href = crate::case_page::path_segment(&l.id),
            tip = esc(&tip),
            time = esc(&time),
            rule_title = esc(&rule_title),
            who = esc(&who.join(" · ")),
        );
    }
    h.push_str("</ol>");
    if list.is_empty() {
        let _ = write!(h, r#"<div class="none">暂无{name}</div>"#);
    } else if total > list.len() as u64 {
        let _ = write!(
            h,
            r#"<div class="more">另有 {} 件未列出（<a class="export" href="api/v1/cases.csv?light={class}&amp;open=true{param}">导出</a>可得全部）</div>"#,
            total - list.len() as u64,
            param = department_param(department),
        );
    }
    h.push_str("</section>\n");
}

/// What the supervisors should know about the calendar data, in the board's header: from
/// [`crate::cli::CALENDAR_WARN_DAYS`] before it ends (the same warning `redlight check`
/// gives), deadlines after it wait; once it has ended, deadlines from then on cannot be
/// computed.
fn calendar_notice(last: chrono::NaiveDate, today: chrono::NaiveDate) -> Option<String> {
    let left = (last - today).num_days();
    let next = chrono::Datelike::year(&last) + 1;
    if left < 0 {
        Some(format!("节假日数据已于{last}截止，{next}年期限无法计算"))
    } else if left <= crate::cli::CALENDAR_WARN_DAYS {
        Some(format!(
            "节假日数据截至{last}（剩{left}天），待补充{next}年安排"
        ))
    } else {
        None
    }
}

/// How far overdue, or how much time is left, in Chinese; for workday clocks also the
/// whole workdays; and a note on what broke (a period not met).
/// What the board says of a listed case's time, on one line: `超期 37天4小时（25个工作日）`,
/// `2026Q3 未履行 · 逾期 67天4小时`, `违规 · 47天前`, `剩余 19小时11分` (the spreadsheet's
/// column 情况).
pub fn situation(view: &View, l: &Listed, now: i64) -> String {
    let (time, workdays, note) = time_text(view, l, now);
    let mut out = note.map_or(String::new(), |n| format!("{n} · "));
    out.push_str(&time);
    if let Some(n) = workdays {
        let _ = write!(out, "（{n}个工作日）");
    }
    out
}

fn time_text(view: &View, l: &Listed, now: i64) -> (String, Option<i64>, Option<String>) {
    let workdays = |from: i64, to: i64| -> Option<i64> {
        if l.unit != Some(Unit::Workdays) {
            return None;
        }
        workdays_between(view, from, to)
    };
    match (l.cause, l.light) {
        (Cause::Clock, _) if l.at == crate::api::DEADLINE_PENDING => {
            ("期限待定：缺少下一年度节假日数据".to_string(), None, None)
        }
        (Cause::Clock, Light::Red) => (
            format!("超期 {}", human(now - l.at)),
            workdays(l.at, now),
            None,
        ),
        (Cause::Clock, _) if l.at <= now => ("已到期".to_string(), None, None),
        (Cause::Clock, _) => (
            format!("剩余 {}", human(l.at - now)),
            workdays(now, l.at),
            None,
        ),
        (Cause::Violation, _) => (format!("违规 · {}前", coarse(now - l.at)), None, None),
        (Cause::Missing, _) => (
            format!("逾期 {}", human(now - l.at)),
            None,
            Some(match &l.detail {
                Some(period) => format!("{period} 未履行"),
                None => "未履行".to_string(),
            }),
        ),
    }
}

/// The whole workdays from `from` to `to` (the calendar's count, as a workday clock counts
/// them); none under one.
pub(crate) fn workdays_between(view: &View, from: i64, to: i64) -> Option<i64> {
    if to <= from {
        return None;
    }
    let c = crate::clock::Counting {
        cal: &view.calendar,
        zone: &view.zone,
    };
    let m = |t| c.measure(Unit::Workdays, t).ok();
    let n = (m(to)? - m(from)?) / DAY;
    (n >= 1).then_some(n)
}

/// A span in its largest unit: `37天`, `5小时`, `12分钟`.
fn coarse(ms: i64) -> String {
    let m = ms.max(0) / 60_000;
    if m >= 1440 {
        format!("{}天", m / 1440)
    } else if m >= 60 {
        format!("{}小时", m / 60)
    } else {
        format!("{}分钟", m.max(1))
    }
}

/// The header's line when the lights may be behind the cases' real state: a supervisor
/// must not read a quiet board as all being well while no event arrives.
fn input_notice(n: &InputNotice) -> String {
    match n {
        InputNotice::BrokersDown(d) => format!(
            "消息接入已中断{}：灯色为中断前收到的办理情况，到期照常亮灯",
            human(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        ),
        InputNotice::Behind(n) => format!("正在处理积压消息{n}条，灯色随之更新"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_says_when_the_lights_may_be_behind() {
        use std::time::Duration;
        assert_eq!(
            input_notice(&InputNotice::BrokersDown(Duration::from_secs(25))),
            "消息接入已中断不到1分钟：灯色为中断前收到的办理情况，到期照常亮灯"
        );
        assert_eq!(
            input_notice(&InputNotice::BrokersDown(Duration::from_secs(
                2 * 3600 + 300
            ))),
            "消息接入已中断2小时5分：灯色为中断前收到的办理情况，到期照常亮灯"
        );
        assert_eq!(
            input_notice(&InputNotice::Behind(12_345)),
            "正在处理积压消息12345条，灯色随之更新"
        );
    }

    #[test]
    fn the_header_warns_when_the_calendar_data_ends_soon_or_has_ended() {
        let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        assert_eq!(calendar_notice(d("2026-12-31"), d("2026-10-31")), None);
        assert_eq!(
            calendar_notice(d("2026-12-31"), d("2026-12-02")).as_deref(),
            Some("节假日数据截至2026-12-31（剩29天），待补充2027年安排")
        );
        assert_eq!(
            calendar_notice(d("2026-12-31"), d("2027-01-01")).as_deref(),
            Some("节假日数据已于2026-12-31截止，2027年期限无法计算")
        );
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn spans_read_in_chinese() {
        let m = 60_000;
        assert_eq!(human(0), "不到1分钟");
        assert_eq!(human(35 * m), "35分钟");
        assert_eq!(human(120 * m), "2小时");
        assert_eq!(human(125 * m), "2小时5分");
        assert_eq!(human(3 * 1440 * m), "3天");
        assert_eq!(human((3 * 1440 + 4 * 60 + 9) * m), "3天4小时");
        assert_eq!(human(-5), "不到1分钟");
    }
}
