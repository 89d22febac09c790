//! The daemon's HTTP side: `/metrics`, `/healthz`, `/readyz` and the read-only API.

use crate::daemon::Shared;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/alerts", get(alerts))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "http server failed");
    }
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "alive"}))
}

/// Ready when the store is restored, partitions are assigned and the calendar covers today.
async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let mut reasons = Vec::new();
    if !s.started.load(Ordering::SeqCst) {
        reasons.push("store not restored yet".to_string());
    }
    let assigned = s.assigned.lock().map(|a| a.len()).unwrap_or(0);
    if assigned == 0 {
        reasons.push("no Kafka partitions assigned".to_string());
    }
    let today = chrono::Utc::now().with_timezone(&s.tz).date_naive();
    if today > s.calendar_last_day {
        reasons.push(format!(
            "calendar data ended on {}; add the next year's holiday notice",
            s.calendar_last_day
        ));
    }
    let body = json!({
        "ready": reasons.is_empty(),
        "reasons": reasons,
        "partitions": assigned,
        "calendar_last_day": s.calendar_last_day.to_string(),
    });
    let code = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct AlertsQuery {
    /// Only alerts with a sequence number above this.
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    1000
}

/// `/api/v1/alerts?after=SEQ&limit=N`: alerts in the order they happened, with their
/// sequence numbers, for paging.
async fn alerts(State(s): State<Arc<Shared>>, Query(q): Query<AlertsQuery>) -> Response {
    let store = s.store.clone();
    let limit = q.limit.clamp(1, 10_000);
    let result = tokio::task::spawn_blocking(move || store.alerts(q.after, limit)).await;
    match result {
        Ok(Ok(rows)) => {
            let next = rows.last().map_or(q.after, |(seq, _)| *seq);
            let items: Vec<serde_json::Value> = rows
                .into_iter()
                .map(|(seq, a)| json!({"seq": seq, "alert": a}))
                .collect();
            axum::Json(json!({"alerts": items, "next": next})).into_response()
        }
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}
