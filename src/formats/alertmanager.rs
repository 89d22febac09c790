//! The Alertmanager webhook payload (`"version": "4"`), one alert per message, so receivers
//! written for Alertmanager (`webhook_config`) work unchanged.
//!
//! Labels identify the alert and are the same for its firing and its resolution, so the
//! `fingerprint` (a hash of the labels) pairs them: `alertname` (the rule id), `rule`, `case`,
//! `level`, `severity` (`critical` for red, `warning` for yellow), `department` and `item`
//! where known, and `escalation` (the step's name) on escalation steps. Everything else is in
//! the annotations: `summary` and `description` in Chinese, `title`, `basis`, `reason`,
//! `deadline`, `detail`, `alert_id`, and `handler`. The handler is not a label: an alert names
//! the case's handler when it is raised, and a case changes hands between stages (accepted by
//! one, reviewed by another), so a red raised under the first and resolved under the second
//! would have had two label sets, and its resolution would not have closed it (until
//! 2026-12-07). A case's department and item are set when it is submitted or accepted.

use super::text::{display_time, message};
use super::{Context, Notice};
use crate::alert::{Level, Status};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The labels of a notice (sorted).
pub fn labels(n: &Notice) -> BTreeMap<&'static str, String> {
    let a = &n.alert;
    let mut l = BTreeMap::new();
    l.insert("alertname", a.rule.to_string());
    l.insert("rule", a.rule.to_string());
    l.insert("case", a.case.to_string());
    l.insert("level", a.level.as_str().to_string());
    l.insert(
        "severity",
        match a.level {
            Level::Yellow => "warning",
            Level::Red => "critical",
        }
        .to_string(),
    );
    for (k, v) in [("department", &a.department), ("item", &a.item)] {
        if let Some(v) = v {
            l.insert(k, v.clone());
        }
    }
    if let Some(e) = &n.escalation {
        l.insert("escalation", e.step.clone());
    }
    l
}

/// 16 hex digits identifying the label set (the same for firing and resolved).
pub fn fingerprint(labels: &BTreeMap<&'static str, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xff]);
    }
    let d = h.finalize();
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Alertmanager's "zero time" for an alert that has not ended.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub fn payload(ctx: &Context, n: &Notice, receiver: &str) -> Value {
    let a = &n.alert;
    let msg = message(ctx, n);
    let labels = labels(n);
    let fingerprint = fingerprint(&labels);
    let mut annotations = Map::new();
    annotations.insert("summary".into(), Value::String(msg.title.clone()));
    annotations.insert(
        "description".into(),
        Value::String(
            std::iter::once(msg.headline.clone())
                .chain(msg.fields.iter().map(|(k, v)| format!("{k}：{v}")))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    );
    annotations.insert("title".into(), Value::String(a.title.to_string()));
    annotations.insert("basis".into(), Value::String(a.basis.to_string()));
    annotations.insert(
        "reason".into(),
        serde_json::to_value(a.reason).unwrap_or(Value::Null),
    );
    annotations.insert("alert_id".into(), Value::String(a.id.clone()));
    if let Some(h) = &a.handler {
        annotations.insert("handler".into(), Value::String(h.clone()));
    }
    if let Some(d) = &a.deadline {
        annotations.insert("deadline".into(), Value::String(d.clone()));
        annotations.insert("deadline_text".into(), Value::String(display_time(d)));
    }
    if let Some(d) = &a.detail {
        annotations.insert("detail".into(), Value::String(d.clone()));
    }
    if let Some(e) = &n.escalation {
        annotations.insert("escalation_of".into(), Value::String(e.of.clone()));
        annotations.insert("escalation_after".into(), Value::String(e.after.clone()));
    }
    let (status, starts, ends) = match a.status {
        Status::Firing => ("firing", a.at.clone(), ZERO_TIME.to_string()),
        // The red of an overdue clock began at its deadline; otherwise the start is not
        // known here and the resolution instant stands for it.
        Status::Resolved => {
            let ms = |t: &str| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .ok()
                    .map(|t| t.timestamp_millis())
            };
            let start = match (&a.deadline, a.level) {
                (Some(d), Level::Red)
                    if ms(d).is_some_and(|d| ms(&a.at).is_some_and(|at| d <= at)) =>
                {
                    d.clone()
                }
                _ => a.at.clone(),
            };
            ("resolved", start, a.at.clone())
        }
    };
    let generator = ctx.case_url(&a.case).unwrap_or_default();
    let label_obj: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect();
    let group_key = format!(
        "{{}}:{{{}}}",
        ["alertname", "case", "level"]
            .iter()
            .filter_map(|k| labels.get(k).map(|v| format!("{k}={v:?}")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let group_labels: Map<String, Value> = ["alertname", "case", "level"]
        .iter()
        .filter_map(|k| {
            labels
                .get(k)
                .map(|v| (k.to_string(), Value::String(v.clone())))
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": label_obj,
        "commonAnnotations": annotations,
        "externalURL": ctx.external_url.clone().unwrap_or_default(),
        "alerts": [{
            "status": status,
            "labels": label_obj,
            "annotations": annotations,
            "startsAt": starts,
            "endsAt": ends,
            "generatorURL": generator,
            "fingerprint": fingerprint,
        }],
    })
}
