//! The scorecard's page at `/scorecard` (考核): the departments' assessment of a period as
//! the supervisors' office reads it at its meeting, from the board's footer. Per
//! department its closed cases, on time and late, its violations, its on-time rate and
//! grade (优秀 / 合格 / 不合格, 杭州市安全生产责任制规定 第二十四条), the grades of the
//! period's year and the year before, and whether it was 不合格 both years (第二十六条:
//! 连续两年考核不合格的 … 依法予以处理). The departments that need attention come first:
//! 不合格, then 合格, then 优秀; within a grade the most violations, then the lowest on-time
//! rate, then by name.
//!
//! It renders the `Scorecard` that `/api/v1/scorecard` gives, so the page, the JSON and the
//! spreadsheet it links cannot disagree; like the board it is server-rendered, in Chinese,
//! without script, every text from events escaped, its links relative (`./` is the board).
//! `?period=` takes what the API takes (a quarter `2026Q3`, a year `2026`, a month
//! `2026-07`; the current quarter without it), and the page links the periods before and
//! after, the year and its quarters.

use crate::api::View;
use crate::board::esc;
use crate::rules::Period;
use crate::scorecard::{Grade, Line, ScorePeriod, Scorecard};
use std::cmp::Reverse;
use std::fmt::Write;

/// The quarters' numbers in words: 第一季度 … 第四季度.
const QUARTERS: [&str; 4] = ["一", "二", "三", "四"];

/// A period as people say it: `2026年第三季度`, `2026年`, `2026年7月`.
pub fn period_name(p: &ScorePeriod) -> String {
    let year = p.year();
    match p.kind {
        Period::Year => format!("{year}年"),
        Period::Quarter => {
            let q = QUARTERS[p.index.rem_euclid(4) as usize];
            format!("{year}年第{q}季度")
        }
        Period::Month => format!("{year}年{}月", p.index.rem_euclid(12) + 1),
    }
}

/// A kind of period in a word: 季度, 年, 月.
fn kind_word(kind: Period) -> &'static str {
    match kind {
        Period::Year => "年",
        Period::Quarter => "季度",
        Period::Month => "月",
    }
}

/// The CSS class of a grade's cell: green for 优秀, red for 不合格.
fn grade_class(g: Grade) -> &'static str {
    match g {
        Grade::Excellent => "green",
        Grade::Qualified => "",
        Grade::Unqualified => "red",
    }
}

/// How urgently a department needs looking at, most first.
fn attention(l: &Line) -> impl Ord + '_ {
    let rank = match l.grade {
        Grade::Unqualified => 0,
        Grade::Qualified => 1,
        Grade::Excellent => 2,
    };
    // Rates in basis points (a department with nothing closed after every rate).
    let rate = l
        .on_time_rate
        .map_or(10_001, |r| (r * 10_000.0).round() as i64);
    (
        rank,
        Reverse(l.tally.violations),
        rate,
        l.department.as_str(),
    )
}

/// A period's link: `scorecard?period=2026Q3`.
fn period_link(p: &ScorePeriod, text: &str, current: &ScorePeriod) -> String {
    if p == current {
        format!(r#"<b aria-current="page">{text}</b>"#)
    } else {
        format!(
            r#"<a href="scorecard?period={label}">{text}</a>"#,
            label = p.label()
        )
    }
}

/// The links to the period before and after, the year and its quarters.
fn periods_nav(period: &ScorePeriod, this_quarter: &ScorePeriod) -> String {
    let word = kind_word(period.kind);
    let before = ScorePeriod {
        kind: period.kind,
        index: period.index - 1,
    };
    let after = ScorePeriod {
        kind: period.kind,
        index: period.index + 1,
    };
    let year = period.year();
    let whole_year = ScorePeriod {
        kind: Period::Year,
        index: year,
    };
    let mut nav = format!(
        r#"<nav class="periods" id="periods"><a href="scorecard?period={b}" rel="prev">‹ 上一{word}</a> · <a href="scorecard?period={a}" rel="next">下一{word} ›</a> · {y}"#,
        b = before.label(),
        a = after.label(),
        y = period_link(&whole_year, &format!("{year}年全年"), period),
    );
    for q in 0..4 {
        let quarter = ScorePeriod {
            kind: Period::Quarter,
            index: year * 4 + q,
        };
        let _ = write!(
            nav,
            " · {}",
            period_link(&quarter, &format!("第{}季度", QUARTERS[q as usize]), period)
        );
    }
    if period != this_quarter {
        nav.push_str(r#" · <a href="scorecard">本季度</a>"#);
    }
    nav.push_str("</nav>");
    nav
}

/// The page of a period's scorecard. `this_quarter`: the quarter of today, which the page
/// without `?period=` shows.
pub fn render(
    view: &View,
    period: &ScorePeriod,
    card: &Scorecard,
    this_quarter: &ScorePeriod,
    now: i64,
    ignored: Option<&str>,
) -> String {
    let name = period_name(period);
    let mut h = String::with_capacity(16 * 1024);
    crate::case_page::head(&mut h, view, &format!("考核 {name}"));
    let (first, last) = period.days();
    let year = period.year();
    let _ = write!(
        h,
        r#"<header>
<a class="back" href="./" title="回到看板">← 看板</a>
<h1>考核 · <span id="period">{name}</span></h1>
<div class="facts">考核期 <b>{first}</b> 至 <b>{last}</b> · {n} 个部门<br><a class="export" id="export" href="api/v1/scorecard.csv?period={label}" title="本考核表导出为表格（CSV）">导出表格</a> · <a href="api/v1/scorecard?period={label}">JSON</a> · 查看于 {now}{ignored}</div>
</header>
<main class="detail">
{nav}
"#,
        n = card.departments.len(),
        label = period.label(),
        now = view.sheet_time(now),
        nav = periods_nav(period, this_quarter),
        ignored = ignored
            .map(|n| format!(
                r#"<br><span class="stale" id="ignored-params">{}</span>"#,
                esc(n)
            ))
            .unwrap_or_default(),
    );
    let mut lines: Vec<&Line> = card.departments.iter().collect();
    lines.sort_by_cached_key(|l| attention(l));
    let _ = write!(
        h,
        r#"<section id="scorecard"><h2>各部门 <small>不合格在前 · 同等次中违规多、按时办结率低的在前</small></h2>"#
    );
    if lines.is_empty() {
        h.push_str(r#"<div class="none">本考核期没有办结案件，也没有违规记录</div>"#);
    } else {
        let _ = write!(
            h,
            r#"<table class="detail"><thead><tr><th>部门</th><th class="num">办结</th><th class="num">按时办结</th><th class="num">逾期办结</th><th class="num">违规</th><th class="num">按时办结率</th><th>等次</th><th>{year}年等次</th><th>{last_year}年等次</th></tr></thead><tbody>"#,
            last_year = year - 1,
        );
        for l in &lines {
            let t = &l.tally;
            let d: String = form_urlencoded::byte_serialize(l.department.as_bytes()).collect();
            let year_grade = |y: i32| match l.year_grades.get(&y.to_string()).copied().flatten() {
                Some(g) => format!(
                    r#"<td class="{}" data-label="{y}年等次">{}</td>"#,
                    grade_class(g),
                    g.as_str()
                ),
                None => format!(r#"<td class="muted" data-label="{y}年等次">—</td>"#),
            };
            let _ = write!(
                h,
                r#"<tr data-department="{dept}"><td><a href="./?department={d}" title="本部门的看板">{dept}</a>{two}</td><td class="num" data-label="办结">{closed}</td><td class="num" data-label="按时办结">{on_time}</td><td class="num" data-label="逾期办结">{late}</td><td class="num {vclass}" data-label="违规">{violations}</td><td class="num" data-label="按时办结率">{rate}</td><td class="{gclass}" data-label="等次">{grade}</td>{this_year}{last_year}</tr>"#,
                dept = esc(&l.department),
                two = if l.unqualified_two_years {
                    r#"<div class="basis red two-years">连续两年不合格</div>"#
                } else {
                    ""
                },
                closed = t.closed,
                on_time = t.on_time,
                late = t.late,
                vclass = if t.violations > 0 { "red" } else { "" },
                violations = t.violations,
                rate = l.on_time_percent().unwrap_or_else(|| "—".to_string()),
                gclass = grade_class(l.grade),
                grade = l.grade.as_str(),
                this_year = year_grade(year),
                last_year = year_grade(year - 1),
            );
        }
        h.push_str("</tbody></table>");
    }
    let th = &card.thresholds;
    let _ = write!(
        h,
        r#"<p class="rules" id="thresholds">等次：按时办结率不低于 {e_rate} 且违规不超过 {e_max} 项为优秀；不低于 {q_rate} 且违规不超过 {q_max} 项为合格；其余为不合格（《杭州市安全生产责任制规定》第二十四条）。本期没有办结案件的部门只按违规评定。办结：案件的全部时限都已停止计时；逾期办结：至少一个时限在期限之后才停止；违规：违规亮红灯及周期性义务未履行的次数。</p></section>"#,
        e_rate = percent(th.excellent_on_time_rate),
        e_max = th.excellent_max_violations,
        q_rate = percent(th.qualified_on_time_rate),
        q_max = th.qualified_max_violations,
    );
    let twice: Vec<String> = lines
        .iter()
        .filter(|l| l.unqualified_two_years)
        .map(|l| esc(&l.department))
        .collect();
    if !twice.is_empty() {
        let _ = write!(
            h,
            r#"<section id="two-years"><h2 class="red">连续两年考核不合格 <small>{n} 个部门</small></h2><p>{list}：{last_year}年、{year}年两年等次均为不合格。《杭州市安全生产责任制规定》第二十六条：连续两年考核不合格的，按照干部管理权限由有关部门依法予以处理。</p></section>"#,
            n = twice.len(),
            list = twice.join("、"),
            last_year = year - 1,
        );
    }
    let _ = write!(
        h,
        "</main>\n<footer>考核按法定工作日历计时的办结与违规记录统计；{year}年等次为该年至今的记录。</footer>\n</body></html>\n"
    );
    h
}

/// `0.95` as `95%`, `0.925` as `92.5%`.
fn percent(share: f64) -> String {
    let p = (share * 1000.0).round() / 10.0;
    if p.fract() == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p}%")
    }
}

/// The page for a `?period=` the scorecard cannot read (status 400).
pub fn bad_period(view: &View, given: &str) -> String {
    let mut h = String::with_capacity(4 * 1024);
    crate::case_page::head(&mut h, view, "考核期无法识别");
    let _ = write!(
        h,
        r#"<header><a class="back" href="./" title="回到看板">← 看板</a><h1>考核期无法识别</h1></header>
<main class="detail"><section><p id="bad-period">考核期“{given}”无法识别。请写年份（<a href="scorecard?period=2026">2026</a>）、季度（<a href="scorecard?period=2026Q3">2026Q3</a>）或月份（<a href="scorecard?period=2026-07">2026-07</a>），或打开<a href="scorecard">本季度</a>的考核表。</p></section></main>
</body></html>
"#,
        given = esc(given),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_named_as_people_say_them() {
        let name = |s: &str| period_name(&ScorePeriod::parse(s).expect(s));
        assert_eq!(name("2026Q3"), "2026年第三季度");
        assert_eq!(name("2026Q1"), "2026年第一季度");
        assert_eq!(name("2026"), "2026年");
        assert_eq!(name("2026-07"), "2026年7月");
        assert_eq!(name("2026-12"), "2026年12月");
    }

    #[test]
    fn shares_are_written_as_percentages() {
        assert_eq!(percent(0.95), "95%");
        assert_eq!(percent(0.8), "80%");
        assert_eq!(percent(0.925), "92.5%");
    }
}
