//! `redlight calendar import NOTICE`: a year's calendar file (`config/calendars/YYYY.toml`)
//! from the text of the State Council General Office's notice (国务院办公厅关于YYYY年部分
//! 节假日安排的通知), as it is published, pasted into a file. Writing the file by hand is
//! the one upkeep the calendar needs each year, and a date typed wrong there is a deadline
//! computed wrong for a year; the notice's own checks are used instead:
//!
//! - each date the notice gives with its day of the week (`1月1日（周五）`,
//!   `9月27日（星期日）`) must fall on that day of the notice's year: a date misread, or a
//!   notice pasted for the wrong year, is refused, naming the date;
//! - each span it counts (`共8天`) must have that many days.
//!
//! What it reads, in each numbered item (`一、元旦：` … `七、国庆节：`): a span off
//! (`10月1日至8日放假调休`, `2月28日（农历除夕、周六）至3月6日（…）放假`), a single day off
//! (`1月1日放假`), and make-up workdays (`2月7日（星期日）、2月20日（星期六）上班`). Dates
//! without a year are in the notice's year; a month left out is the one before it in the
//! item (`至8日`). Anything else is left alone: the preamble, `与周末连休`, and what the
//! notice only encourages (2024: `安排职工在除夕（2月9日）休息`, not a holiday). Days of
//! another year (2023's New Year from 2022-12-31) are named on standard error: they go into
//! that year's file. Full-width and ASCII punctuation are both read (copies on the web mix
//! them), and whitespace and line breaks anywhere.
//!
//! The output is the file, in the layout of the shipped ones, to check (`redlight check`,
//! and the cross-check of config/calendars/README.md) before it is used.

use chrono::{Datelike, NaiveDate, Weekday};
use std::fmt::Write;

/// One numbered item of the notice.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// `元旦`, `国庆节、中秋节`.
    pub name: String,
    /// Inclusive spans of days off in the notice's year.
    pub off: Vec<(NaiveDate, NaiveDate)>,
    /// Make-up workdays in the notice's year.
    pub workdays: Vec<NaiveDate>,
}

/// What a notice gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub year: i32,
    /// The title, with the document number when the text has it:
    /// `国务院办公厅关于2026年部分节假日安排的通知（国办发明电〔2025〕7号）`.
    pub title: String,
    /// `2025年11月4日`, the date under the signature, when the text has it.
    pub published: Option<String>,
    pub items: Vec<Item>,
    /// Days the notice gives that lie in another year, with their item's name: they belong
    /// in that year's file.
    pub elsewhere: Vec<(NaiveDate, String, &'static str)>,
}

const NUMERALS: &str = "一二三四五六七八九十";

/// The text with full-width punctuation for ASCII (`:`, `(`, `)`, `,`) and no whitespace.
fn normalise(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            ':' => '：',
            '(' => '（',
            ')' => '）',
            ',' => '，',
            c => c,
        })
        .collect()
}

fn find(hay: &[char], needle: &str, from: usize) -> Option<usize> {
    let n: Vec<char> = needle.chars().collect();
    (from..hay.len().saturating_sub(n.len() - 1)).find(|&i| hay[i..].starts_with(&n))
}

fn starts(hay: &[char], at: usize, word: &str) -> bool {
    let w: Vec<char> = word.chars().collect();
    hay.get(at..).is_some_and(|rest| rest.starts_with(&w))
}

/// Digits at `at`: their value and the position after them.
fn number(s: &[char], at: usize) -> Option<(u32, usize)> {
    let mut end = at;
    let mut v: u32 = 0;
    while let Some(d) = s.get(end).and_then(|c| c.to_digit(10)) {
        v = v.checked_mul(10)?.checked_add(d)?;
        end += 1;
        if end - at > 4 {
            return None;
        }
    }
    (end > at).then_some((v, end))
}

/// A date at `at` (`2022年12月31日`, `10月1日`, `8日`) with `year` and `month` for what it
/// leaves out; its year, month, day and the position after it.
fn date_at(s: &[char], at: usize, year: i32, month: u32) -> Option<(i32, u32, u32, usize)> {
    let (mut y, mut m) = (year, month);
    let (mut v, mut i) = number(s, at)?;
    if s.get(i) == Some(&'年') {
        y = i32::try_from(v).ok()?;
        (v, i) = number(s, i + 1)?;
    }
    if s.get(i) == Some(&'月') {
        m = v;
        (v, i) = number(s, i + 1)?;
    }
    (s.get(i) == Some(&'日')).then_some((y, m, v, i + 1))
}

/// The day of the week an annotation names (`周三`, `星期日`, `农历除夕、周二`).
fn weekday_named(note: &str) -> Option<Weekday> {
    let at = note
        .find("星期")
        .map(|i| i + "星期".len())
        .or_else(|| note.find('周').map(|i| i + '周'.len_utf8()))?;
    Some(match note[at..].chars().next()? {
        '一' => Weekday::Mon,
        '二' => Weekday::Tue,
        '三' => Weekday::Wed,
        '四' => Weekday::Thu,
        '五' => Weekday::Fri,
        '六' => Weekday::Sat,
        '日' | '天' => Weekday::Sun,
        _ => return None,
    })
}

fn weekday_zh(d: Weekday) -> &'static str {
    ["周一", "周二", "周三", "周四", "周五", "周六", "周日"][d.num_days_from_monday() as usize]
}

/// A date with its annotation, read at `at`: the date, the position after both.
struct Dated {
    date: NaiveDate,
    end: usize,
}

/// Reads the notice. Every problem is named with the item and the date it is about.
pub fn parse(text: &str) -> Result<Notice, Vec<String>> {
    let s = normalise(text);
    let mut problems = Vec::new();
    let title_at = find(&s, "国务院办公厅关于", 0);
    let year = title_at.and_then(|t| {
        let (y, end) = number(&s, t + "国务院办公厅关于".chars().count())?;
        starts(&s, end, "年部分节假日安排的通知").then_some(y)
    });
    let Some((title_at, year)) = title_at.zip(year) else {
        return Err(vec![
            "the notice's title (国务院办公厅关于YYYY年部分节假日安排的通知) is not in the text"
                .to_string(),
        ]);
    };
    let Ok(year) = i32::try_from(year) else {
        return Err(vec![format!("the notice's year {year} is out of range")]);
    };
    let title_end = find(&s, "通知", title_at).map_or(s.len(), |i| i + 2);
    let mut title: String = s[title_at..title_end].iter().collect();
    if let Some(doc) = find(&s, "国办发明电〔", title_end)
        && let Some(end) = find(&s, "号", doc)
    {
        let number: String = s[doc..=end].iter().collect();
        let _ = write!(title, "（{number}）");
    }
    let published = find_last(&s, "国务院办公厅").and_then(|at| {
        let at = at + "国务院办公厅".chars().count();
        let (y, m, d, _) = date_at(&s, at, 0, 0)?;
        (y > 0 && m > 0).then(|| format!("{y}年{m}月{d}日"))
    });

    // The numbered items: `一、元旦：` up to the next one or the end.
    let mut heads = Vec::new();
    let mut i = title_end;
    while i < s.len() {
        if NUMERALS.contains(s[i]) {
            let mut j = i;
            while j < s.len() && NUMERALS.contains(s[j]) {
                j += 1;
            }
            if s.get(j) == Some(&'、') {
                let name_start = j + 1;
                let colon = (name_start..s.len().min(name_start + 16)).find(|&k| s[k] == '：');
                if let Some(colon) = colon {
                    let name: String = s[name_start..colon].iter().collect();
                    if !name.is_empty() && name.chars().all(|c| c == '、' || !c.is_ascii()) {
                        heads.push((i, name, colon + 1));
                        i = colon + 1;
                        continue;
                    }
                }
            }
            i = j;
        } else {
            i += 1;
        }
    }
    if heads.is_empty() {
        problems.push("no numbered item (一、元旦：…) found after the notice's title".to_string());
    }
    let mut items = Vec::new();
    let mut elsewhere = Vec::new();
    for (k, (_, name, body_start)) in heads.iter().enumerate() {
        let body_end = heads.get(k + 1).map_or(s.len(), |h| h.0);
        let body = &s[..body_end];
        let mut item = Item {
            name: name.clone(),
            off: Vec::new(),
            workdays: Vec::new(),
        };
        let mut month = 0;
        let mut at = *body_start;
        // A date with its annotation, checked against the day of the week it names.
        let read = |at: usize, year: i32, month: &mut u32, problems: &mut Vec<String>| {
            let (y, m, d, mut end) = date_at(body, at, year, *month)?;
            let written: String = body[at..end].iter().collect();
            let Some(date) = NaiveDate::from_ymd_opt(y, m, d) else {
                // A day without a month before it in the item is not a date the notice
                // gives (`8日` in running text); one with a month is misread.
                if m != 0 {
                    problems.push(format!("{name}: {written} is not a date"));
                }
                return None;
            };
            *month = m;
            if body.get(end) == Some(&'（')
                && let Some(close) = (end..body.len()).find(|&c| body[c] == '）')
            {
                let note: String = body[end + 1..close].iter().collect();
                if let Some(named) = weekday_named(&note)
                    && named != date.weekday()
                {
                    problems.push(format!(
                        "{name}: {written}（{note}）: {date} is a {} ({}), not {}; is the notice for {year}?",
                        weekday_zh(date.weekday()),
                        date.weekday(),
                        weekday_zh(named),
                    ));
                }
                end = close + 1;
            }
            Some(Dated { date, end })
        };
        while at < body.len() {
            if !body[at].is_ascii_digit()
                || body
                    .get(at.wrapping_sub(1))
                    .is_some_and(char::is_ascii_digit)
            {
                at += 1;
                continue;
            }
            let Some(first) = read(at, year, &mut month, &mut problems) else {
                at += 1;
                continue;
            };
            let mut next = first.end;
            if body.get(next) == Some(&'至') {
                let Some(last) = read(next + 1, first.date.year(), &mut month, &mut problems)
                else {
                    at = next + 1;
                    continue;
                };
                next = last.end;
                if starts(body, next, "放假") {
                    let days = (last.date - first.date).num_days() + 1;
                    if days < 1 {
                        problems.push(format!(
                            "{name}: {} to {} runs backwards",
                            first.date, last.date
                        ));
                    }
                    if let Some(count) = count_after(body, next)
                        && i64::from(count) != days
                    {
                        problems.push(format!(
                            "{name}: {} to {} is {days} days, the notice says 共{count}天",
                            first.date, last.date
                        ));
                    }
                    item.off.push((first.date, last.date));
                }
            } else if starts(body, next, "放假") {
                item.off.push((first.date, first.date));
            } else if body.get(next) == Some(&'、') || starts(body, next, "上班") {
                let mut list = vec![first.date];
                while body.get(next) == Some(&'、') {
                    match read(next + 1, year, &mut month, &mut problems) {
                        Some(more) => {
                            list.push(more.date);
                            next = more.end;
                        }
                        None => break,
                    }
                }
                if starts(body, next, "上班") {
                    item.workdays.extend(list);
                }
            }
            at = next.max(at + 1);
        }
        // Days of another year go to that year's file.
        let mut kept = Vec::new();
        for (a, b) in item.off.drain(..) {
            let mut run: Option<(NaiveDate, NaiveDate)> = None;
            for d in a.iter_days().take_while(|d| *d <= b) {
                if d.year() == year {
                    run = Some(run.map_or((d, d), |(s, _)| (s, d)));
                } else {
                    elsewhere.push((d, name.clone(), "off"));
                }
            }
            if let Some(r) = run {
                kept.push(r);
            }
        }
        item.off = kept;
        item.workdays.retain(|d| {
            let here = d.year() == year;
            if !here {
                elsewhere.push((*d, name.clone(), "workday"));
            }
            here
        });
        if item.off.is_empty() && item.workdays.is_empty() {
            problems.push(format!(
                "{name}: no day off and no make-up workday read from the item"
            ));
        }
        items.push(item);
    }
    if problems.is_empty() {
        Ok(Notice {
            year,
            title,
            published,
            items,
            elsewhere,
        })
    } else {
        Err(problems)
    }
}

fn find_last(hay: &[char], needle: &str) -> Option<usize> {
    let n: Vec<char> = needle.chars().collect();
    (0..hay.len().saturating_sub(n.len() - 1))
        .rev()
        .find(|&i| hay[i..].starts_with(&n))
}

/// `共8天` after a span, before the next date: its count.
fn count_after(s: &[char], from: usize) -> Option<u32> {
    let mut i = from;
    while i < s.len() && !s[i].is_ascii_digit() {
        if starts(s, i, "共") {
            let (n, end) = number(s, i + 1)?;
            return (s.get(end) == Some(&'天')).then_some(n);
        }
        if s[i] == '。' {
            return None;
        }
        i += 1;
    }
    None
}

/// The calendar file of a notice, in the layout of the shipped ones.
pub fn to_toml(n: &Notice) -> String {
    let mut out = format!("# {}\n", n.title);
    if let Some(p) = &n.published {
        let _ = writeln!(out, "# 发布日期：{p}");
    }
    out.push_str(
        "# Imported with `redlight calendar import`: check it (config/calendars/README.md).\n",
    );
    let _ = writeln!(out, "year = {}", n.year);
    let _ = writeln!(out, "notice = {:?}", n.title);
    for item in &n.items {
        let off: Vec<String> = item
            .off
            .iter()
            .map(|(a, b)| {
                if a == b {
                    format!("\"{a}\"")
                } else {
                    format!("\"{a}..{b}\"")
                }
            })
            .collect();
        let workdays: Vec<String> = item.workdays.iter().map(|d| format!("\"{d}\"")).collect();
        let _ = write!(
            out,
            "\n[[holiday]]\nname = {:?}\noff = [{}]\nworkdays = [{}]\n",
            item.name,
            off.join(", "),
            workdays.join(", ")
        );
    }
    out
}
