//! The Chinese text of a notice for people: which rule and article, which case, department
//! and handler, the deadline, and how late (or how much time is left) in the rule's own unit
//! — "超期 2 个工作日" for a workday rule, "超时 35 分钟" for an hour rule.
//!
//! Lateness is `at − deadline` of the notice (the time it was raised on the engine's clock,
//! not the time it is sent), so the text of a notice never changes between retries:
//! - minutes: whole minutes; hours: hours and minutes ("1 小时 5 分钟", "35 分钟");
//! - days: calendar days, a started day counts as one;
//! - workdays: time inside workdays only (the working calendar), a started workday counts;
//! - a due time given by the event (`hz.rectification`) and rules without a unit: hours and
//!   minutes under a day, else days and hours.
//!
//! Time left (yellow) is rounded down, so a warning never promises more time than there is.

use super::{Context, Notice};
use crate::alert::{Level, Reason, Status};
use crate::clock::{Counting, DAY};
use crate::rules::{Limit, RuleKind, Unit};
use chrono::{DateTime, Duration, FixedOffset, Timelike};

/// The colour of a message (cards, font colours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Red,
    Yellow,
    Green,
}

/// A notice as text, independent of any platform's markup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub color: Color,
    /// Short: the notification line ("🔴 红灯告警 · 行政许可决定期限").
    pub title: String,
    /// What happened to which case ("XZ-2026-0001 已超期 2 个工作日").
    pub headline: String,
    /// Label and value, in reading order.
    pub fields: Vec<(&'static str, String)>,
    /// The notice id (receivers drop duplicates by it).
    pub id: String,
    /// The case in the daemon's API, when an external URL is configured.
    pub link: Option<String>,
}

/// How a rule counts time, for saying how late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Minutes,
    Hours,
    Days,
    Workdays,
    /// No unit of its own (a due time from the event, a check): hours under a day, else days.
    Auto,
}

/// The unit a rule counts in.
pub fn measure_of(ctx: &Context, rule: &str) -> Measure {
    let Some(idx) = ctx.rules.index_of(rule) else {
        return Measure::Auto;
    };
    let from_limit = |l: &Limit| match l {
        Limit::Span { unit, .. } | Limit::SpanFrom { unit, .. } => match unit {
            Unit::Minutes => Measure::Minutes,
            Unit::Hours => Measure::Hours,
            Unit::Days => Measure::Days,
            Unit::Workdays => Measure::Workdays,
        },
        Limit::SameWorkday => Measure::Workdays,
        Limit::DueFrom { .. } => Measure::Auto,
    };
    match &ctx.rules.rule(idx).kind {
        RuleKind::Deadline(d) => from_limit(&d.limit),
        RuleKind::Periodic(p) => p.grace.as_ref().map_or(Measure::Days, from_limit),
        RuleKind::Sequence(_) | RuleKind::Check(_) | RuleKind::Retired => Measure::Auto,
    }
}

fn parse(t: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(t).ok()
}

/// `from` → `to` (ms, `to > from`) in the measure; `round_up` counts a started day as one.
/// Returns the amount and whether it is a day amount (超期) or a clock amount (超时).
pub fn amount(ctx: &Context, m: Measure, from: i64, to: i64, round_up: bool) -> (String, bool) {
    let ms = (to - from).max(0);
    let days = |span: i64, word: &str| {
        let n = if round_up {
            (span + DAY - 1) / DAY
        } else {
            span / DAY
        };
        if n == 0 {
            format!("不足 1 {word}")
        } else {
            format!("{n} {word}")
        }
    };
    let clock = |ms: i64| {
        let minutes = ms / 60_000;
        if minutes == 0 {
            return "不足 1 分钟".to_string();
        }
        let (h, m) = (minutes / 60, minutes % 60);
        match (h, m) {
            (0, m) => format!("{m} 分钟"),
            (h, 0) => format!("{h} 小时"),
            (h, m) => format!("{h} 小时 {m} 分钟"),
        }
    };
    match m {
        Measure::Minutes => {
            let minutes = ms / 60_000;
            if minutes == 0 {
                ("不足 1 分钟".to_string(), false)
            } else {
                (format!("{minutes} 分钟"), false)
            }
        }
        Measure::Hours => (clock(ms), false),
        Measure::Days => (days(ms, "天"), true),
        Measure::Workdays => {
            let counting = Counting {
                cal: &ctx.calendar,
                zone: &ctx.zone,
            };
            match (
                counting.measure(Unit::Workdays, from),
                counting.measure(Unit::Workdays, to),
            ) {
                (Ok(a), Ok(b)) => (days((b - a).max(0), "个工作日"), true),
                // Beyond the calendar data: say it in calendar days rather than guess.
                _ => (days(ms, "天"), true),
            }
        }
        Measure::Auto => {
            if ms < DAY {
                (clock(ms), false)
            } else {
                let (d, h) = (ms / DAY, (ms % DAY) / 3_600_000);
                if h == 0 {
                    (format!("{d} 天"), true)
                } else {
                    (format!("{d} 天 {h} 小时"), true)
                }
            }
        }
    }
}

/// An instant as people write it: `2026-10-30 24:00` for the midnight that ends 10-30
/// (民法典 Art. 203), `2026-10-30 16:05` otherwise, in the offset the alert carries.
pub fn display_time(t: &str) -> String {
    let Some(dt) = parse(t) else {
        return t.to_string();
    };
    if dt.hour() == 0 && dt.minute() == 0 && dt.second() == 0 && dt.nanosecond() == 0 {
        let prev = dt.date_naive() - Duration::days(1);
        return format!("{} 24:00", prev.format("%Y-%m-%d"));
    }
    if dt.second() == 0 {
        dt.format("%Y-%m-%d %H:%M").to_string()
    } else {
        dt.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

fn reason_text(r: Reason) -> &'static str {
    match r {
        Reason::Approaching => "即将到期（黄灯预警）",
        Reason::Overdue => "逾期未办结（红灯）",
        Reason::Violation => "违规（红灯）",
        Reason::Missing => "未按期履行（红灯）",
        Reason::Completed => "按期办结",
        Reason::CompletedLate => "超期办结",
        Reason::Retracted => "撤回：事件在时限内已发生、消息迟到，此前的灯为误报",
        Reason::Withdrawn => "申请人撤回申请，计时终止",
    }
}

/// The text of a notice.
pub fn message(ctx: &Context, n: &Notice) -> Message {
    let a = &n.alert;
    let m = measure_of(ctx, &a.rule);
    let at = parse(&a.at).map(|t| t.timestamp_millis());
    let deadline = a
        .deadline
        .as_deref()
        .and_then(parse)
        .map(|t| t.timestamp_millis());
    // How late at `at`, when there is a deadline and it has passed.
    let late = match (at, deadline) {
        (Some(at), Some(d)) if at > d => Some(amount(ctx, m, d, at, true)),
        _ => None,
    };
    let late_text = |(amount, days): &(String, bool)| {
        if *days {
            format!("超期 {amount}")
        } else {
            format!("超时 {amount}")
        }
    };
    let level_word = match a.level {
        Level::Yellow => "黄灯",
        Level::Red => "红灯",
    };
    let case = &a.case;
    let (color, title, headline) = match (a.status, &n.escalation) {
        (Status::Firing, Some(e)) => (
            Color::Red,
            format!("🔴 红灯升级（第 {} 级）· {}", e.index, a.title),
            match &late {
                Some(l) => format!(
                    "{case} 红灯持续 {}未解除，已{}",
                    after_text(&e.after),
                    late_text(l)
                ),
                None => format!("{case} 红灯持续 {}未解除", after_text(&e.after)),
            },
        ),
        (Status::Firing, None) => match a.reason {
            Reason::Approaching => (
                Color::Yellow,
                format!("🟡 黄灯预警 · {}", a.title),
                match (at, deadline) {
                    (Some(at), Some(d)) if d > at => {
                        let (left, _) = amount(ctx, m, at, d, false);
                        format!("{case} 距办理期限还剩 {left}")
                    }
                    // The deadline waits for next year's holiday notice (see
                    // config/calendars/README.md): say so rather than leave it out.
                    (_, None) => {
                        format!("{case} 即将到期（办理期限待下一年度节假日安排公布后计算）")
                    }
                    _ => format!("{case} 即将到期"),
                },
            ),
            Reason::Violation => (
                Color::Red,
                format!("🔴 红灯告警（违规）· {}", a.title),
                format!("{case} 违规，请立即核查"),
            ),
            Reason::Missing => (
                Color::Red,
                format!("🔴 红灯告警（未履行）· {}", a.title),
                format!("{case} 未按期履行"),
            ),
            _ => (
                Color::Red,
                format!("🔴 红灯告警 · {}", a.title),
                match &late {
                    Some(l) => format!("{case} 已{}，仍未办结", late_text(l)),
                    None => format!("{case} 办理期限已届满，仍未办结"),
                },
            ),
        },
        (Status::Resolved, esc) => {
            let step = esc
                .as_ref()
                .map(|e| format!("（升级第 {} 级）", e.index))
                .unwrap_or_default();
            (
                Color::Green,
                format!("🟢 {level_word}解除{step} · {}", a.title),
                match a.reason {
                    Reason::CompletedLate => match &late {
                        Some(l) => format!("{case} 已办结，{}", late_text(l)),
                        None => format!("{case} 已办结（超期）"),
                    },
                    Reason::Completed => format!("{case} 已按期办结"),
                    Reason::Retracted => format!("{case} {level_word}撤回（误报）"),
                    Reason::Withdrawn => format!("{case} 申请已撤回，计时终止"),
                    other => format!("{case} {}", reason_text(other)),
                },
            )
        }
    };
    let mut fields: Vec<(&'static str, String)> = Vec::with_capacity(12);
    fields.push(("规则", format!("{}（{}）", a.title, a.rule)));
    fields.push(("依据", a.basis.to_string()));
    fields.push(("案件", case.to_string()));
    if let Some(v) = &a.item {
        fields.push(("事项", v.clone()));
    }
    if let Some(v) = &a.department {
        fields.push(("部门", v.clone()));
    }
    if let Some(v) = &a.handler {
        fields.push(("承办人", v.clone()));
    }
    if let Some(d) = &a.deadline {
        fields.push(("办理期限", display_time(d)));
    }
    if let Some((amount, days)) = &late {
        fields.push((
            if *days {
                "超期时长"
            } else {
                "超时时长"
            },
            amount.clone(),
        ));
    }
    fields.push(("状态", reason_text(a.reason).to_string()));
    if let Some(d) = &a.detail {
        fields.push(("情形", detail_text(d)));
    }
    if let Some(e) = &n.escalation {
        fields.push((
            "升级",
            format!(
                "第 {} 级（{}）：红灯持续 {}未解除",
                e.index,
                e.step,
                after_text(&e.after)
            ),
        ));
    }
    fields.push(("时间", display_time(&a.at)));
    Message {
        color,
        title,
        headline,
        fields,
        id: a.id.clone(),
        link: ctx.case_url(case),
    }
}

/// An escalation's configured time in Chinese: `2 workdays` → `2 个工作日`, `4h` → `4 小时`.
pub fn after_text(after: &str) -> String {
    let s = after.trim();
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    match unit_word(s[digits.len()..].trim()) {
        Some(word) => format!("{digits} {word}"),
        None => s.to_string(),
    }
}

/// A unit after a number, in Chinese: an escalation's `after` (`4h`, `2 workdays`) or a
/// rule's unit as the engine names it in a detail (`rules::Unit::name`).
pub(crate) fn unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "m" | "min" | "mins" | "minute" | "minutes" => "分钟",
        "h" | "hour" | "hours" => "小时",
        "d" | "day" | "days" => "天",
        "workday" | "workdays" => "个工作日",
        _ => return None,
    })
}

/// An event type's name in Chinese (SPEC §1's catalogue), as a notice names a stage that
/// was skipped or a periodic duty not met; `None` for a type a pack declared of its own.
pub(crate) fn type_name(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "approval.submitted" => "申办",
        "approval.material_incomplete" => "补正告知",
        "approval.accepted" => "受理",
        "approval.reviewed" => "审核",
        "approval.suspended" => "特别程序",
        "approval.resumed" => "恢复办理",
        "approval.extended" => "延长期限",
        "approval.decided" => "审批决定",
        "approval.certificate_issued" => "送达证件",
        "approval.completed" => "办结",
        "approval.withdrawn" => "撤回申请",
        "approval.fee_charged" => "收费",
        "market.registration_accepted" => "登记受理",
        "market.registration_decided" => "登记决定",
        "market.change_decided" => "作出变更决定",
        "market.change_registered" => "变更登记",
        "market.report_submitted" => "报送统计报表",
        "market.reconsideration_requested" => "申请复议",
        "market.reconsideration_decided" => "复议决定",
        "safety.hazard_reported" => "报告重大隐患",
        "safety.hazard_investigation_started" => "组织查处",
        "safety.rectification_ordered" => "责令整改",
        "safety.hazard_rectified" => "隐患整改完毕",
        "safety.accident_occurred" => "发生事故",
        "safety.accident_reported" => "单位报告事故",
        "safety.accident_relayed" => "逐级上报",
        "safety.accident_discovered" => "其他途径发现事故",
        "safety.meeting_held" => "召开安全生产工作会议",
        _ => return None,
    })
}

/// A data field of SPEC §1's catalogue in Chinese, as a case's page labels the data its
/// events carried; `None` for a field of a producer's own.
pub(crate) fn field_name(field: &str) -> Option<&'static str> {
    Some(match field {
        "department" => "部门",
        "item" => "事项",
        "handler" => "经办人",
        "kind" => "办件类型",
        "promised_workdays" => "承诺时限（工作日）",
        "joint" => "并联审批",
        "missing" => "缺少的材料",
        "procedure" => "特别程序",
        "extra_workdays" => "延长时限（工作日）",
        "approved_by" => "延长批准人",
        "outcome" => "决定结果",
        "reason" => "理由",
        "amount_yuan" => "收费金额（元）",
        "fee_code" => "收费项目代码",
        "market" => "市场",
        "change" => "变更事项",
        "period" => "报告期",
        "location" => "地点",
        "major" => "重大隐患",
        "reporter" => "报告人",
        "due" => "整改期限",
        "unit" => "事故单位",
        "grade" => "事故等级",
        "deaths" => "死亡人数",
        "injuries" => "受伤人数",
        "to" => "报告对象",
        "by" => "发现途径",
        _ => return None,
    })
}

/// A coded value of a catalogue field in Chinese (`kind` = `promised` → 承诺件); `None`
/// where the value is not one of the codes.
pub(crate) fn value_name(field: &str, value: &str) -> Option<&'static str> {
    Some(match (field, value) {
        ("kind", "promised") => "承诺件",
        ("kind", "immediate") => "即办件",
        ("outcome", "approved") => "准予许可",
        ("outcome", "denied") => "不予许可",
        ("procedure", "hearing") => "听证",
        ("procedure", "expert_review") => "专家评审",
        ("procedure", "inspection") => "现场核查",
        ("procedure", "testing") => "检验检测",
        ("procedure", "supplement") => "补正材料",
        _ => return None,
    })
}

/// A type in a notice: its Chinese name, or the type itself where it has none.
fn type_text(kind: &str) -> String {
    type_name(kind).map_or_else(|| format!("`{kind}`"), str::to_string)
}

/// A data field the rules read, in a notice.
fn field_text(field: &str) -> String {
    match field {
        "promised_workdays" => "承诺时限".to_string(),
        "extra_workdays" => "延长时限".to_string(),
        _ => format!("`{field}`"),
    }
}

/// A rule's unit after a number in a detail ([`unit_word`]; as given if unknown).
fn unit_text(unit: &str) -> &str {
    unit_word(unit).unwrap_or(unit)
}

/// What broke, for people: the `detail` of a violation or of a missed, late or retracted
/// period (in the alert JSON it stays the engine's English, part of its contract) in
/// Chinese, with event types by their names (`stage `approval.decided` without
/// `approval.reviewed`` → `未经「审核」即「审批决定」（跳过环节）`). A check rule's own
/// `message` (the shipped packs' are Chinese) and any form not known here stay as they are.
pub fn detail_text(detail: &str) -> String {
    fn ticked(s: &str) -> Option<&str> {
        s.strip_prefix('`')?.strip_suffix('`')
    }
    if let Some(rest) = detail.strip_prefix("stage `") {
        if let Some((stage, before)) = rest.split_once("` came after `")
            && let Some(before) = before.strip_suffix('`')
        {
            return format!(
                "「{}」在「{}」之后才办理（环节顺序颠倒）",
                type_text(stage),
                type_text(before)
            );
        }
        if let Some((stage, skipped)) = rest.split_once("` without ") {
            let skipped: Option<Vec<String>> = skipped
                .split(", ")
                .map(|s| ticked(s).map(|s| format!("「{}」", type_text(s))))
                .collect();
            if let Some(skipped) = skipped {
                return format!(
                    "未经{}即「{}」（跳过环节）",
                    skipped.concat(),
                    type_text(stage)
                );
            }
        }
    }
    if let Some(rest) = detail.strip_prefix("no `")
        && let Some((kind, label)) = rest.split_once("` for ")
    {
        return format!("{label} 未{}", type_text(kind));
    }
    if let Some(rest) = detail.strip_prefix('`')
        && let Some((kind, rest)) = rest.split_once("` for ")
    {
        if let Some(label) = rest.strip_suffix(" was made in time and delivered late") {
            return format!("{label} 已按期{}，数据迟到送达", type_text(kind));
        }
        if let Some(label) = rest.strip_suffix(" came late") {
            return format!("{label} {}晚于期限", type_text(kind));
        }
    }
    if let Some(rest) = detail.strip_prefix('`')
        && let Some((field, rest)) = rest.split_once("` is ")
    {
        if rest == "missing: no promised time limit" {
            return format!("缺少{}，未承诺办理时限", field_text(field));
        }
        if let Some((amount, max)) = rest.split_once(", more than the statutory ")
            && let Some((n, unit)) = amount.split_once(' ')
        {
            let unit = unit_text(unit);
            return format!(
                "{}为 {n} {unit}，超过法定上限 {max} {unit}",
                field_text(field)
            );
        }
        if let Some((value, range)) = rest.split_once(", not a whole number of ")
            && let Some((unit, bounds)) = range.split_once(" from ")
            && let Some((low, high)) = bounds.split_once(" to ")
        {
            return format!(
                "{}「{value}」不是 {low} 至 {high} 的整数（{}）",
                field_text(field),
                unit_text(unit)
            );
        }
    }
    if let Some(rest) = detail.strip_prefix("extensions total ")
        && let Some((total, cap)) = rest.split_once(", more than the ")
        && let Some((n, unit)) = total.split_once(' ')
        && let Some(cap) = cap.strip_suffix(" allowed")
    {
        let unit = unit_text(unit);
        return format!("延长期限累计 {n} {unit}，超过允许的 {cap} {unit}");
    }
    if let Some(condition) = detail.strip_prefix("condition holds: ") {
        return format!("条件成立：{condition}");
    }
    detail.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midnight_is_the_end_of_the_previous_day() {
        assert_eq!(
            display_time("2026-10-31T00:00:00+08:00"),
            "2026-10-30 24:00"
        );
        assert_eq!(
            display_time("2026-10-30T16:05:00+08:00"),
            "2026-10-30 16:05"
        );
        assert_eq!(display_time("nonsense"), "nonsense");
    }

    #[test]
    fn details_of_types_and_forms_no_table_names_stay_readable() {
        // A pack's own event type keeps its name; a stage list of several.
        assert_eq!(
            detail_text("stage `permit.issued` without `approval.reviewed`, `permit.checked`"),
            "未经「审核」「`permit.checked`」即「`permit.issued`」（跳过环节）"
        );
        // A check rule's own message, and a form not known here, as they are.
        assert_eq!(detail_text("材料不全"), "材料不全");
        assert_eq!(detail_text("something else"), "something else");
        assert_eq!(detail_text("stage `a` without b"), "stage `a` without b");
        assert_eq!(
            detail_text("condition holds: data.fee > 100"),
            "条件成立：data.fee > 100"
        );
    }

    #[test]
    fn escalation_times_read_in_chinese() {
        assert_eq!(after_text("2 workdays"), "2 个工作日");
        assert_eq!(after_text("4h"), "4 小时");
        assert_eq!(after_text("30 minutes"), "30 分钟");
        assert_eq!(after_text("1 workday"), "1 个工作日");
    }
}
