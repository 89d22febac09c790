//! The daemon's HTTP side: `/metrics`, `/healthz`, `/readyz`, the read-only API and the
//! board (the API and the board live in `src/api.rs` and `src/board.rs`). Every route but
//! `/metrics`, `/healthz` and `/readyz` needs the bearer token when one is configured
//! ([`crate::api::guard`]).

use crate::daemon::Shared;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// How long a client may take to send a request's head (its line and headers). Without
/// it a connection that sent half a request held its task, its file descriptor and the
/// daemon's shutdown for ever (axum's `serve` sets no timer, so hyper's own 30 s default
/// never ran): a shutdown waited on it until systemd's `TimeoutStopSec` killed the process.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long shutdown waits for requests in flight once it stops accepting connections;
/// then their connections are dropped (a client reading a response slowly, say).
pub const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connections served at once; more wait in the kernel's listen queue until one closes.
/// Each holds a file descriptor, and the daemon needs others (the brokers' sockets, the
/// webhooks', the store's files): with a limit of 1,024 descriptors (a shell's default),
/// a thousand clients would have left it none.
pub const MAX_CONNECTIONS: usize = 512;

/// Serves until `shutdown` resolves, then lets requests in flight finish for at most
/// [`DRAIN_WAIT`]. Connections are HTTP/1.1 with keep-alive, each on a task of its own, at
/// most [`MAX_CONNECTIONS`] at once; a request's head must arrive within
/// [`HEADER_READ_TIMEOUT`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = router(shared);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    let mut accept_errors = 0u64;
    let mut full = 0u64;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        if slots.available_permits() == 0 {
            full += 1;
            if full.is_power_of_two() {
                tracing::warn!(
                    connections = MAX_CONNECTIONS,
                    times = full,
                    "http: as many connections open as served at once; new ones wait until \
                     one closes (logged the 1st, 2nd, 4th, ... time)"
                );
            }
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, mostly: said, and tried again shortly, as
                    // a listener must not give up.
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(error = %e, errors = accept_errors,
                            "http: cannot accept a connection (logged at the 1st, 2nd, 4th, ... error)");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection =
            graceful.watch(builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_WAIT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            waited_ms = DRAIN_WAIT.as_millis() as u64,
            "http: requests still in flight at shutdown were cut off"
        );
    }
}

/// Every route, behind the token guard.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(crate::api::board))
        .route("/api/v1/cases", get(crate::api::cases))
        .route("/api/v1/cases.csv", get(crate::api::cases_csv))
        .route("/api/v1/cases/{id}", get(crate::api::case))
        .route("/case", get(crate::api::find_case))
        .route("/case/", get(crate::api::case_index))
        .route("/case/{id}", get(crate::api::case_page))
        .route("/api/v1/alerts", get(crate::api::alerts))
        .route("/api/v1/scorecard", get(crate::api::scorecard))
        .route("/scorecard", get(crate::api::scorecard_page))
        .route("/api/v1/scorecard.csv", get(crate::api::scorecard_csv))
        .route("/api/v1/deliveries", get(deliveries))
        .route("/api/v1/deliveries/waiting", get(waiting))
        .route("/api/v1/deliveries/dead", get(dead_letters))
        .route("/api/v1/deliveries/dead/resend", post(resend_dead))
        .route("/api/v1/deliveries/dead/drop", post(drop_dead))
        .route("/api/v1/input/dead-letters", get(input_dead_letters))
        .route(
            "/api/v1/input/dead-letters/drop",
            post(drop_input_dead_letters),
        )
        .route("/api/v1/backup", post(backup))
        .fallback(no_such_path)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            crate::api::guard,
        ))
        .with_state(shared)
}

/// A page's `limit`: `default` when not given, a 400 naming it outside 1 to `max` (as the
/// cases and alerts endpoints answer), never quietly another number.
fn page_limit(
    given: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, crate::api::ApiError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(crate::api::ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("query parameter `limit` is \"{n}\"; expected a number from 1 to {max}"),
        )),
    }
}

/// A path nothing answers: the API's 404, in its JSON like its other errors.
async fn no_such_path(uri: axum::http::Uri) -> crate::api::ApiError {
    crate::api::ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such path `{}`; the API is under /api/v1/ (docs/operations.md)",
            uri.path()
        ),
    )
}

/// A path that exists with another method (`POST /api/v1/cases`): 405, in the API's JSON.
async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> crate::api::ApiError {
    crate::api::ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("`{method}` is not allowed on `{}`", uri.path()),
    )
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "alive"}))
}

/// Ready when the store is restored and partitions are assigned. The calendar data having
/// ended is a warning here, not a reason to be unready: readiness decides whether a pod gets
/// traffic (a Kubernetes Service drops one that is not ready), and the board and the API
/// are what the supervisors need then too. Every clock in hours, and every deadline before
/// the data ends, is still counted; the deadlines beyond wait, counted in `calendar_errors`,
/// and the board's header, `redlight check` and the alert `RedlightCalendarEnded` say so.
async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let (reasons, assigned) = readiness(&s);
    let today = chrono::Utc::now().with_timezone(&s.tz).date_naive();
    let mut warnings = Vec::new();
    if today > s.calendar_last_day {
        warnings.push(format!(
            "calendar data ended on {}; deadlines after it wait (calendar_errors): add the \
             next year's holiday notice (config/calendars/README.md) and restart",
            s.calendar_last_day
        ));
    }
    match s.input_notice() {
        Some(crate::daemon::InputNotice::BrokersDown(d)) => warnings.push(format!(
            "no connection to any Kafka broker for {} s: events sent since are not read, so \
             the lights show the cases as of then (deadlines still fire)",
            d.as_secs()
        )),
        Some(crate::daemon::InputNotice::Behind(n)) => warnings.push(format!(
            "{n} messages behind the brokers (consumer lag): the lights catch up as they are read"
        )),
        None => {}
    }
    let body = json!({
        "ready": reasons.is_empty(),
        "reasons": reasons,
        "warnings": warnings,
        "partitions": assigned,
        "calendar_last_day": s.calendar_last_day.to_string(),
        // Deadlines waiting for next year's data (and events rejected for it).
        "calendar_errors": s.metrics.calendar_errors.get(),
    });
    let code = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// How long the Kafka client's last error is shown on /readyz while no partition is
/// assigned: longer than librdkafka's reconnection backoff (10 s at most), so a broker
/// that stays out of reach stays named, and short enough not to blame an old error.
const KAFKA_ERROR_SHOWN: std::time::Duration = std::time::Duration::from_secs(120);

/// Why the daemon is not ready (empty when it is), and the partitions assigned.
fn readiness(s: &Shared) -> (Vec<String>, usize) {
    let mut reasons = Vec::new();
    if !s.started.load(Ordering::SeqCst) {
        reasons.push("store not restored yet".to_string());
    }
    let assigned = s.assigned.lock().map(|a| a.len()).unwrap_or(0);
    if assigned == 0 {
        // With the client's last error, if it is recent: why there are none, often.
        let last = s
            .kafka_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .filter(|(at, _)| at.elapsed() < KAFKA_ERROR_SHOWN);
        reasons.push(match last {
            Some((at, what)) => format!(
                "no Kafka partitions assigned (the Kafka client's last error, {} s ago: {what})",
                at.elapsed().as_secs()
            ),
            None => "no Kafka partitions assigned".to_string(),
        });
    }
    (reasons, assigned)
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    s.metrics.ready.set(i64::from(readiness(&s).0.is_empty()));
    crate::api::refresh_gauges(&s);
    store_sizes(&s);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// The store's files' sizes and the space left beside them, read at each scrape (a few
/// `stat` calls). A file that cannot be read keeps its last figure.
fn store_sizes(s: &Shared) {
    let files = s.store.files();
    for file in files {
        if let (Ok(meta), Some(name)) = (std::fs::metadata(file), file.file_name()) {
            s.metrics
                .store_file_bytes
                .with_label_values(&[&*name.to_string_lossy()])
                .set(i64::try_from(meta.len()).unwrap_or(i64::MAX));
        }
    }
    if let Some(dir) = files[0].parent()
        && let Ok(free) = crate::store::disk_free(dir)
    {
        s.metrics
            .store_disk_free_bytes
            .set(i64::try_from(free).unwrap_or(i64::MAX));
    }
}

/// `/api/v1/deliveries`: per receiver, deliveries waiting in the outbox and dead letters;
/// escalation steps waiting.
async fn deliveries(
    State(s): State<Arc<Shared>>,
    crate::api::ApiQuery(crate::api::NoQuery {}): crate::api::ApiQuery<crate::api::NoQuery>,
) -> Response {
    let store = s.store.clone();
    let result = store_call("deliveries", move || {
        Ok((
            crate::delivery::stats(&store)?,
            crate::delivery::pending_escalations(&store)?,
        ))
    })
    .await;
    match result {
        Ok((receivers, escalations)) => axum::Json(json!({
            "receivers": receivers,
            "escalations_pending": escalations,
        }))
        .into_response(),
        Err(answer) => answer,
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    receiver: Option<String>,
}

/// `/api/v1/deliveries/dead?after=SEQ&limit=N&receiver=NAME`: deliveries refused or out of
/// retries, with the reason (secrets removed), oldest first.
async fn dead_letters(
    State(s): State<Arc<Shared>>,
    crate::api::ApiQuery(q): crate::api::ApiQuery<DeadQuery>,
) -> Response {
    delivery_page(&s, q, "dead_letters", crate::delivery::dead_letters).await
}

/// `/api/v1/deliveries/waiting?after=SEQ&limit=N&receiver=NAME`: deliveries in the outbox
/// (not yet delivered, or retrying), with the next attempt and the last error.
async fn waiting(
    State(s): State<Arc<Shared>>,
    crate::api::ApiQuery(q): crate::api::ApiQuery<DeadQuery>,
) -> Response {
    delivery_page(&s, q, "waiting", crate::delivery::waiting).await
}

/// `delivery::dead_letters` or `delivery::waiting`: `(store, after, limit, receiver)`.
type ListDeliveries = fn(
    &crate::store::Store,
    u64,
    usize,
    Option<&str>,
) -> Result<Vec<crate::delivery::DeliveryView>, crate::store::StoreError>;

/// A page of deliveries read by `list` off the async threads, as `{key: rows, "next": seq}`.
async fn delivery_page(
    s: &Arc<Shared>,
    q: DeadQuery,
    key: &'static str,
    list: ListDeliveries,
) -> Response {
    let store = s.store.clone();
    let limit = match page_limit(q.limit, 1000, 10_000) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let result = store_call("deliveries", move || {
        list(&store, q.after, limit, q.receiver.as_deref())
    })
    .await;
    match result {
        Ok(rows) => {
            let next = rows.last().map_or(q.after, |r| r.seq);
            axum::Json(json!({key: rows, "next": next})).into_response()
        }
        Err(answer) => answer,
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InputDeadQuery {
    /// Dead letters are numbered from 0: without `after`, the listing starts there.
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `/api/v1/input/dead-letters?after=SEQ&limit=N`: input messages refused (not JSON, a bad
/// attribute, …) that the dead-letter topic has not taken yet, oldest first, with why each
/// was refused and what the brokers last said; `pending` counts them all, `more` says
/// whether `after=NEXT` has more. Those the topic has are in the topic, not here.
async fn input_dead_letters(
    State(s): State<Arc<Shared>>,
    crate::api::ApiQuery(q): crate::api::ApiQuery<InputDeadQuery>,
) -> Response {
    let limit = match page_limit(q.limit, 100, 1000) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let shared = s.clone();
    let result = store_call("input dead letters", move || {
        Ok((
            shared.store.dead_letter_count()?,
            crate::daemon::list_dead_letters(
                &shared.store,
                q.after,
                limit,
                Some(&shared.dead_letter_tries),
                shared.tz,
            )?,
        ))
    })
    .await;
    match result {
        Ok((pending, (rows, more))) => {
            let next = rows.last().map(|r| r.seq).or(q.after);
            axum::Json(json!({
                "dead_letter_topic": s.dead_letter_topic,
                "pending": pending,
                "dead_letters": rows,
                "more": more,
                "next": next,
            }))
            .into_response()
        }
        Err(answer) => answer,
    }
}

/// `POST /api/v1/backup`: writes a consistent copy of the store into a new directory under
/// `store.backup_dir` while the daemon goes on (`src/store/backup.rs`), and answers with
/// what it wrote. One at a time: a request while one runs gets 409.
async fn backup(State(s): State<Arc<Shared>>) -> Response {
    match s.backup_now().await {
        Ok(report) => axum::Json(report).into_response(),
        Err(crate::daemon::BackupRefused::Busy) => (
            StatusCode::CONFLICT,
            axum::Json(json!({"error": "a backup is being written; ask again when it is done"})),
        )
            .into_response(),
        Err(crate::daemon::BackupRefused::Failed(message)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": message})),
        )
            .into_response(),
    }
}

/// `POST /api/v1/input/dead-letters/drop` with `{"seqs": [3, 4]}`: drops those input dead
/// letters (no longer offered to the dead-letter topic) and answers with each in full
/// (`dropped`) and the numbers the store did not hold (`not_found`). Never all at once:
/// the numbers are required, from `GET /api/v1/input/dead-letters`.
async fn drop_input_dead_letters(
    State(s): State<Arc<Shared>>,
    body: axum::body::Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Named {
        seqs: Vec<u64>,
    }
    let seqs = match serde_json::from_slice::<Named>(&body) {
        Ok(Named { seqs }) if !seqs.is_empty() => seqs,
        Ok(_) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "`seqs` is empty: name the dead letters to drop"})),
            )
                .into_response();
        }
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": format!(
                    "the body must be {{\"seqs\": [1, 2]}}, the numbers `seq` of \
                     GET /api/v1/input/dead-letters: {e}"
                )})),
            )
                .into_response();
        }
    };
    let shared = s.clone();
    let result = store_call("input dead letters", move || {
        let dropped = crate::daemon::drop_dead_letters(
            &shared.store,
            &seqs,
            Some(&shared.dead_letter_tries),
        )?;
        let pending = crate::daemon::publish_pending(&shared.store, &shared.metrics)?;
        Ok((dropped, pending))
    })
    .await;
    match result {
        Ok(((dropped, not_found), pending)) => axum::Json(json!({
            "dropped": dropped,
            "not_found": not_found,
            "pending": pending,
        }))
        .into_response(),
        Err(answer) => answer,
    }
}

/// A 400 for a body that is not a selection of delivery dead letters.
fn bad_selection(e: &serde_json::Error) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": format!(
            "the body must be {{\"receiver\": \"name\"}} or {{\"seqs\": [1, 2]}}: {e}"
        )})),
    )
        .into_response()
}

/// `POST /api/v1/deliveries/dead/resend` with `{"receiver": "…"}`, `{"seqs": [3, 4]}` or an
/// empty body (all): moves dead letters back into the outbox with a fresh retry schedule.
async fn resend_dead(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let selection: crate::delivery::Selection = if body.iter().all(u8::is_ascii_whitespace) {
        crate::delivery::Selection::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(sel) => sel,
            Err(e) => return bad_selection(&e),
        }
    };
    let store = s.store.clone();
    let metrics = s.metrics.clone();
    let result = store_call("deliveries", move || {
        let now = chrono::Utc::now().timestamp_millis();
        crate::delivery::resend_dead(&store, Some(&metrics), &selection, now)
    })
    .await;
    match result {
        Ok(n) => axum::Json(json!({"resent": n})).into_response(),
        Err(answer) => answer,
    }
}

/// `POST /api/v1/deliveries/dead/drop` with `{"receiver": "…"}` and/or `{"seqs": [3, 4]}`:
/// deletes those dead letters for good (the alerts stay in the alert log). Never all at
/// once: an empty selection is refused.
async fn drop_dead(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let selection = match serde_json::from_slice::<crate::delivery::Selection>(&body) {
        Ok(sel) if !sel.names_none() => sel,
        Ok(_) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "name the dead letters to drop: \
                    {\"receiver\": \"name\"} or {\"seqs\": [1, 2]}"})),
            )
                .into_response();
        }
        Err(e) => return bad_selection(&e),
    };
    let store = s.store.clone();
    let metrics = s.metrics.clone();
    let result = store_call("deliveries", move || {
        crate::delivery::drop_dead(&store, Some(&metrics), &selection)
    })
    .await;
    match result {
        Ok(by) => axum::Json(json!({"dropped": by})).into_response(),
        Err(answer) => answer,
    }
}

/// Runs a store call for API `what` off the async threads; its failure (or the blocking
/// task's) is the answer to give: [`store_error`].
async fn store_call<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(store_error(what, e.to_string())),
        Err(e) => Err(store_error(what, e.to_string())),
    }
}

/// A store call for the API failed: said in the log and answered 500.
fn store_error(what: &'static str, message: String) -> Response {
    tracing::error!(error = %message, api = what, "a store call for the API failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(json!({"error": message})),
    )
        .into_response()
}
