//! The read-only JSON API (`/api/v1/…`), the counts behind the board and the open-case
//! metrics, and the bearer-token check in front of both.
//!
//! Everything here reads the store (one redb read transaction per request, alongside the
//! daemon's writes); nothing touches the consumer loop. Stored cases are decoded straight
//! into a slim [`CaseLite`] of what the views need (department, item and handler of the
//! merged data; clocks, violations and duties; the rest of the stored case skipped unread),
//! filtered while iterating, and paged with an
//! opaque cursor, so the cost of a page is the rows scanned to fill it. The board's counts
//! are one [`Snapshot`] of the whole store, recomputed at most every `board.cache_seconds`
//! (and, for a large store, at most every ten times the last recomputation took), one
//! recomputation at a time. The `redlight_open_cases` gauges are set from the counts the
//! consumer loop keeps ([`crate::open_counts`]), judged as the board judges a case.

use crate::alert::Alert;
use crate::calendar::Calendar;
use crate::clock::{Counting, Zone};
use crate::config::{BoardConfig, Config, ScorecardConfig, Secret};
use crate::daemon::Shared;
use crate::engine::{Case, Clock, Datum, Duty, Light, Mode, Violation, period_label};
use crate::log_throttle::{LogThrottle, unsaid_note};
use crate::rules::{Limit, RuleKind, RuleSet, Unit};
use crate::scorecard::{NO_DEPARTMENT, ScorePeriod};
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the API and the board need besides the store: the rules (cases name them by
/// index), the calendar (to count time), the token and the view settings.
pub struct View {
    pub rules: Arc<RuleSet>,
    pub calendar: Arc<Calendar>,
    pub zone: Zone,
    /// The bearer token; `None` only when listening on loopback without one.
    token: Option<Secret>,
    pub board: BoardConfig,
    pub scorecard: ScorecardConfig,
    /// The latest snapshot of the whole store.
    snapshot: std::sync::Mutex<Option<Arc<Snapshot>>>,
    /// Held while a snapshot is recomputed: one at a time, the others wait for its result.
    refresh: tokio::sync::Mutex<()>,
    /// Requests refused for want of the token, as the log says them: the first, then once
    /// a minute with how many were not said (a wall screen or a scraper with the wrong
    /// token asks again and again; `redlight_http_requests_total{code="401"}` counts each).
    refused_said: std::sync::Mutex<LogThrottle<()>>,
}

impl View {
    pub fn new(config: &Config, rules: Arc<RuleSet>, calendar: Arc<Calendar>) -> View {
        let zone = Zone::new(&calendar);
        View {
            rules,
            calendar,
            zone,
            token: config.http.token.clone(),
            board: config.board.clone(),
            scorecard: config.scorecard.clone(),
            snapshot: std::sync::Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            refused_said: std::sync::Mutex::default(),
        }
    }

    fn counting(&self) -> Counting<'_> {
        Counting {
            cal: &self.calendar,
            zone: &self.zone,
        }
    }

    fn fmt(&self, ms: i64) -> String {
        self.zone.format(ms)
    }

    /// An instant as a spreadsheet reads a date and time: `2026-10-31 00:00:00`, in the
    /// configured zone (RFC 3339's `T` and offset make Excel keep it as text).
    pub(crate) fn sheet_time(&self, ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(self.zone.to_local(ms)).map_or_else(
            || self.fmt(ms),
            |t| t.naive_utc().format("%Y-%m-%d %H:%M:%S").to_string(),
        )
    }

    /// A case's lights per rule, in the packs' order (rules are numbered as the store
    /// numbers them, which after a reorder is not that order).
    fn rule_lights(&self, lights: &[(u16, Light)]) -> Vec<Value> {
        let mut lights = lights.to_vec();
        lights.sort_by_key(|&(r, _)| self.rules.rank(r));
        lights
            .iter()
            .map(|&(r, l)| json!({"rule": self.rule_id(r), "light": light_str(l)}))
            .collect()
    }

    fn rule_id(&self, idx: u16) -> String {
        self.rules
            .rules
            .get(idx as usize)
            .map_or_else(|| format!("#{idx}"), |r| r.id.to_string())
    }

    /// A rule's title by index (empty for an index no pack defines).
    pub(crate) fn rule_title(&self, idx: u16) -> &str {
        self.rules
            .rules
            .get(usize::from(idx))
            .map_or("", |r| &*r.title)
    }

    /// Whether a request may see the API and the board.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        if bearer.is_some_and(|b| constant_time_eq(b.as_bytes(), token.expose().as_bytes())) {
            return true;
        }
        let expected = cookie_value(token);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE_NAME))
            .filter_map(|c| c.strip_prefix('='))
            .any(|c| constant_time_eq(c.as_bytes(), expected.as_bytes()))
    }
}

const COOKIE_NAME: &str = "redlight_board";

/// The board's cookie: derived from the token, so the token itself never travels back.
fn cookie_value(token: &Secret) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"redlight-board-cookie\0");
    h.update(token.expose().as_bytes());
    hex(&h.finalize())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The middleware in front of every route: the bearer token for everything but
/// `/metrics`, `/healthz` and `/readyz` (Prometheus and probes), and the request counter.
pub async fn guard(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let open = matches!(req.uri().path(), "/metrics" | "/healthz" | "/readyz");
    // The pages for people: the board, a case's own page, the scorecard.
    let page_path = matches!(req.uri().path(), "/" | "/case" | "/scorecard")
        || req.uri().path().starts_with("/case/");
    let response = if open || s.view.authorized(req.headers()) {
        next.run(req).await
    } else if page_path && board_login(&s.view, req.uri().query()) {
        // `?token=…` from a wall screen's browser (or a supervisor's, opening a case's
        // page): remember it in a cookie and drop it from the address bar.
        let cookie = s.view.token.as_ref().map(cookie_value).unwrap_or_default();
        // The rest of the query stays (`department`: a department's own board).
        let rest: Vec<&str> = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("token="))
            .collect();
        // Relative to the page itself (`./` for the board, the id's segment for a case's
        // page), so that the redirect stays under a reverse proxy's path prefix.
        let path = req.uri().path();
        let here = match path.rsplit_once('/') {
            Some((_, "")) | None => ".",
            Some((_, segment)) => segment,
        };
        let location = match (here, rest.is_empty()) {
            (".", true) => "./".to_string(),
            (".", false) => format!("./?{}", rest.join("&")),
            (segment, true) => segment.to_string(),
            (segment, false) => format!("{segment}?{}", rest.join("&")),
        };
        (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, location),
                (
                    header::SET_COOKIE,
                    format!("{COOKIE_NAME}={cookie}; Path=/; HttpOnly; SameSite=Strict"),
                ),
            ],
        )
            .into_response()
    } else {
        let said = s
            .view
            .refused_said
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .say((), std::time::Instant::now());
        if let Some(unsaid) = said {
            tracing::warn!(route = %route, unsaid,
                "request without a valid bearer token refused{}", unsaid_note(unsaid));
        }
        let mut r = if page_path {
            // A person's browser (a case's link opened from a chat message): say in
            // words how to log in, not in the API's JSON.
            page(
                StatusCode::UNAUTHORIZED,
                crate::case_page::login_needed(&s.view),
            )
        } else {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs `Authorization: Bearer <http.token>`",
            )
            .into_response()
        };
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"redlight\""),
        );
        r
    };
    s.metrics
        .http_requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    response
}

fn board_login(view: &View, query: Option<&str>) -> bool {
    let Some(token) = &view.token else {
        return false;
    };
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("token="))
        .any(|t| {
            let t = percent_encoding::percent_decode_str(t).decode_utf8_lossy();
            constant_time_eq(t.as_bytes(), token.expose().as_bytes())
        })
}

/// An error answer: `{"error": "…"}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "api request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({"error": self.message}))).into_response()
    }
}

/// The query string of an API request read into `T`, as axum's `Query` reads it, but every
/// mistake answered as the API answers one (`{"error": …}`, 400) naming the parameter. The
/// query types deny unknown fields: a misspelt or unsupported parameter (`?levle=red`,
/// `?since=…`) is refused, never ignored, so that a filtered list is never taken for one
/// that was not filtered.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        read_query(query).map(ApiQuery).map_err(ApiError::bad)
    }
}

/// The query of an endpoint that takes no parameters: any is refused, naming it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// A path that cannot be read (an id that is not UTF-8 once percent-decoded): a 400 in
/// JSON like every other refusal, not axum's plain-text one.
fn path_error(e: PathRejection) -> ApiError {
    ApiError::bad(e.body_text())
}

/// `query` read into `T`, or what was wrong with it.
fn read_query<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, String> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        // serde's words for a struct's fields are the parameters here; its messages for an
        // unknown or repeated field name the parameter themselves.
        let inner = e.inner().to_string();
        if let Some(rest) = inner.strip_prefix("unknown field") {
            format!("unknown query parameter{rest}")
        } else if let Some(name) = inner.strip_prefix("duplicate field ") {
            format!("query parameter {name} is given twice")
        } else {
            format!("query parameter `{}`: {inner}", e.path())
        }
    })
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

// ---------------------------------------------------------------------------------------
// The slim case

/// A stored case as the views read it: what lights, lists and filters need.
#[derive(Debug)]
pub struct CaseLite {
    pub id: String,
    pub data: LiteData,
    pub withdrawn: bool,
    pub first_event: i64,
    pub last_event: i64,
    pub clocks: Vec<LiteClock>,
    pub violations: Vec<LiteViolation>,
    pub duties: Vec<LiteDuty>,
}

/// The fields of a [`Clock`] the views use; the rest is skipped unread.
#[derive(Debug, Clone)]
pub struct LiteClock {
    pub rule: u16,
    pub started: i64,
    pub mode: Option<LiteMode>,
    pub since: Option<i64>,
    pub deadline: Option<i64>,
    pub last_deadline: Option<i64>,
    pub yellow_fired: bool,
    pub red_fired: bool,
    pub stopped: Option<i64>,
}

/// The unit of a span clock (the rest of [`Mode`] skipped).
#[derive(Debug, Clone, Copy)]
pub enum LiteMode {
    Span { unit: Unit },
    Fixed {},
}

impl LiteClock {
    fn active(&self) -> bool {
        self.stopped.is_none()
    }
    /// As [`crate::engine::Clock::deadline_pending`].
    fn deadline_pending(&self) -> bool {
        self.active() && self.since.is_some() && self.deadline.is_none()
    }
    fn light(&self) -> Light {
        if !self.active() {
            Light::Green
        } else if self.red_fired {
            Light::Red
        } else if self.yellow_fired {
            Light::Yellow
        } else {
            Light::Green
        }
    }
}

impl From<&Clock> for LiteClock {
    fn from(c: &Clock) -> LiteClock {
        LiteClock {
            rule: c.rule,
            started: c.started,
            mode: Some(match c.mode {
                Mode::Span(s) => LiteMode::Span { unit: s.unit },
                Mode::Fixed { .. } => LiteMode::Fixed {},
            }),
            since: c.since.get(),
            deadline: c.deadline.get(),
            last_deadline: c.last_deadline.get(),
            yellow_fired: c.yellow_fired,
            red_fired: c.red_fired,
            stopped: c.stopped.get(),
        }
    }
}

/// The fields of a [`Violation`] the views use.
#[derive(Debug, Clone)]
pub struct LiteViolation {
    pub rule: u16,
    pub at: i64,
    pub detail: String,
    pub resolved: bool,
}

impl From<&Violation> for LiteViolation {
    fn from(v: &Violation) -> LiteViolation {
        LiteViolation {
            rule: v.rule,
            at: v.at,
            detail: v.detail.clone(),
            resolved: v.resolved,
        }
    }
}

/// The fields of a [`Duty`] the views use: the periods missed and their due times.
#[derive(Debug, Clone)]
pub struct LiteDuty {
    pub rule: u16,
    pub missing: Vec<(i32, i64)>,
}

impl From<&Duty> for LiteDuty {
    fn from(d: &Duty) -> LiteDuty {
        LiteDuty {
            rule: d.rule,
            missing: d.missing.clone(),
        }
    }
}

/// The three data fields the views show, as text.
#[derive(Debug, Default)]
pub struct LiteData {
    pub department: Option<String>,
    pub item: Option<String>,
    pub handler: Option<String>,
}

/// How the views show a data value ([`Datum::text`]), owned.
fn datum_text(d: &Datum) -> Option<String> {
    d.text().map(std::borrow::Cow::into_owned)
}

impl From<&Case> for CaseLite {
    fn from(c: &Case) -> CaseLite {
        let text = |key: &str| c.get(key).and_then(datum_text);
        CaseLite {
            id: c.id.to_string(),
            data: LiteData {
                department: text("department"),
                item: text("item"),
                handler: text("handler"),
            },
            withdrawn: c.withdrawn,
            first_event: c.first_event,
            last_event: c.last_event,
            clocks: c.clocks.iter().map(LiteClock::from).collect(),
            violations: c.violations.iter().map(LiteViolation::from).collect(),
            duties: c.duties.iter().map(LiteDuty::from).collect(),
        }
    }
}

/// The bytes every stored case of department `d` contains: the data pair
/// `["department", d]` as [`crate::store::encode_case`] writes it. A byte search for them
/// skips most cases of a department query without decoding them (a full decode is most of
/// a scan's cost). `None` where the search could miss a match: the label of cases without a
/// department, and a text that a number, boolean or other non-string value is shown as.
fn department_bytes(d: &str) -> Option<memchr::memmem::Finder<'static>> {
    if d == NO_DEPARTMENT || serde_json::from_str::<Value>(d).is_ok() {
        return None;
    }
    let pattern = rmp_serde::to_vec(&("department", d)).ok()?;
    Some(memchr::memmem::Finder::new(&pattern).into_owned())
}

/// Reads a stored case for the views; `None` (after a warning naming it) when unreadable.
/// What it holds of retired rules is left out, as the engine drops it when it restores the
/// case ([`Case::drop_retired`]).
fn read_lite(
    rules: &RuleSet,
    topic: &str,
    partition: u32,
    id: &str,
    bytes: &[u8],
) -> Option<CaseLite> {
    match stored::decode(bytes) {
        Ok(mut c) => {
            if rules.any_retired() {
                c.clocks.retain(|x| !rules.is_retired(x.rule));
                c.violations.retain(|x| !rules.is_retired(x.rule));
                c.duties.retain(|x| !rules.is_retired(x.rule));
            }
            Some(c)
        }
        Err(e) => {
            tracing::warn!(topic, partition, case = id, error = %e, "unreadable case skipped");
            None
        }
    }
}

/// A stored case decoded straight into a [`CaseLite`]: the fields of [`Case`] in their
/// order (it is stored as a MessagePack array, [`crate::store::encode_case`]), those the
/// views do not use skipped unread (`IgnoredAny`), and of the merged data only the three
/// fields shown. Building the whole `Case` first (its data, event hashes, every clock
/// field) was most of a recount's cost. A test checks it against `CaseLite::from(&Case)`
/// on the cases of the sample events: a field added to `Case`, `Clock`, `Violation` or
/// `Duty` must be added here too, in its place.
mod stored {
    use super::{CaseLite, LiteClock, LiteData, LiteDuty, LiteMode, LiteViolation, datum_text};
    use crate::engine::{Datum, OptMs};
    use crate::rules::Unit;
    use serde::Deserialize;
    use serde::de::{IgnoredAny, SeqAccess, Visitor};
    use serde_json::Value;
    use std::fmt;

    pub fn decode(bytes: &[u8]) -> Result<CaseLite, rmp_serde::decode::Error> {
        let c: StoredCase = rmp_serde::from_slice(bytes)?;
        Ok(CaseLite {
            id: c.id,
            data: c.data,
            withdrawn: c.withdrawn,
            first_event: c.first_event,
            last_event: c.last_event,
            clocks: c.clocks.into_iter().map(LiteClock::from).collect(),
            violations: c
                .violations
                .into_iter()
                .map(|v| LiteViolation {
                    rule: v.rule,
                    at: v.at,
                    detail: v.detail,
                    resolved: v.resolved,
                })
                .collect(),
            duties: c
                .duties
                .into_iter()
                .map(|d| LiteDuty {
                    rule: d.rule,
                    missing: d.missing,
                })
                .collect(),
        })
    }

    /// [`crate::engine::Case`].
    #[derive(Deserialize)]
    struct StoredCase {
        id: String,
        data: LiteData,
        _seen: IgnoredAny,
        _types: IgnoredAny,
        first_event: i64,
        last_event: i64,
        withdrawn: bool,
        clocks: Vec<StoredClock>,
        _stages: IgnoredAny,
        violations: Vec<StoredViolation>,
        duties: Vec<StoredDuty>,
    }

    /// [`crate::engine::Clock`], with its defaults.
    #[derive(Deserialize)]
    struct StoredClock {
        rule: u16,
        _cycle: IgnoredAny,
        started: i64,
        mode: StoredMode,
        _extended: IgnoredAny,
        _counted: IgnoredAny,
        #[serde(default)]
        since: OptMs,
        #[serde(default)]
        _paused_at: IgnoredAny,
        #[serde(default)]
        deadline: OptMs,
        #[serde(default)]
        _yellow_at: IgnoredAny,
        #[serde(default)]
        last_deadline: OptMs,
        yellow_fired: bool,
        red_fired: bool,
        #[serde(default)]
        stopped: OptMs,
        _late: IgnoredAny,
        #[serde(default)]
        _yellow_retractions: IgnoredAny,
        #[serde(default)]
        _red_retractions: IgnoredAny,
    }

    impl From<StoredClock> for LiteClock {
        fn from(c: StoredClock) -> LiteClock {
            LiteClock {
                rule: c.rule,
                started: c.started,
                mode: Some(match c.mode {
                    StoredMode::Span(s) => LiteMode::Span { unit: s.unit },
                    StoredMode::Fixed { .. } => LiteMode::Fixed {},
                }),
                since: c.since.get(),
                deadline: c.deadline.get(),
                last_deadline: c.last_deadline.get(),
                yellow_fired: c.yellow_fired,
                red_fired: c.red_fired,
                stopped: c.stopped.get(),
            }
        }
    }

    /// [`crate::engine::Mode`].
    #[derive(Deserialize)]
    enum StoredMode {
        Span(StoredSpan),
        Fixed {
            #[serde(rename = "deadline")]
            _deadline: IgnoredAny,
            #[serde(rename = "warn_at")]
            _warn_at: IgnoredAny,
        },
    }

    /// [`crate::engine::SpanState`].
    #[derive(Deserialize)]
    struct StoredSpan {
        unit: Unit,
        _origin: IgnoredAny,
        _limit: IgnoredAny,
        _warn_share: IgnoredAny,
        _warn_before: IgnoredAny,
    }

    /// [`crate::engine::Violation`].
    #[derive(Deserialize)]
    struct StoredViolation {
        rule: u16,
        _key: IgnoredAny,
        at: i64,
        detail: String,
        resolved: bool,
    }

    /// [`crate::engine::Duty`].
    #[derive(Deserialize)]
    struct StoredDuty {
        rule: u16,
        _period: IgnoredAny,
        _due: IgnoredAny,
        _met: IgnoredAny,
        missing: Vec<(i32, i64)>,
        #[serde(default)]
        _pending: IgnoredAny,
        #[serde(default)]
        _start: IgnoredAny,
    }

    /// The merged data, `[[key, value], …]`: the three fields the views show, the other
    /// values skipped unread.
    impl<'de> Deserialize<'de> for LiteData {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LiteData, D::Error> {
            let mut data = LiteData::default();
            for pair in Vec::<Pair>::deserialize(d)? {
                match pair {
                    Pair::Department(v) => data.department = v,
                    Pair::Item(v) => data.item = v,
                    Pair::Handler(v) => data.handler = v,
                    Pair::Other => {}
                }
            }
            Ok(data)
        }
    }

    /// A data key, borrowed from the stored bytes where it can be.
    enum Key<'de> {
        Borrowed(&'de str),
        Owned(String),
    }

    impl Key<'_> {
        fn as_str(&self) -> &str {
            match self {
                Key::Borrowed(s) => s,
                Key::Owned(s) => s,
            }
        }
    }

    impl<'de> Deserialize<'de> for Key<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
            struct KeyVisitor;
            impl<'de> Visitor<'de> for KeyVisitor {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a data key")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key::Borrowed(v))
                }
                fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                    Ok(Key::Owned(v.to_string()))
                }
            }
            d.deserialize_str(KeyVisitor)
        }
    }

    /// One `[key, value]` pair of the data, its value read only for the three fields.
    enum Pair {
        Department(Option<String>),
        Item(Option<String>),
        Handler(Option<String>),
        Other,
    }

    impl<'de> Deserialize<'de> for Pair {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Pair, D::Error> {
            d.deserialize_seq(PairVisitor)
        }
    }

    struct PairVisitor;

    impl<'de> Visitor<'de> for PairVisitor {
        type Value = Pair;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a [key, value] pair")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Pair, A::Error> {
            use serde::de::Error;
            let key: Key<'de> = seq
                .next_element()?
                .ok_or_else(|| A::Error::invalid_length(0, &self))?;
            let mut text = || -> Result<Option<String>, A::Error> {
                // As `datum_text` shows the `Datum` this value becomes, without it.
                let v: Value = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                Ok(match v {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    other => datum_text(&Datum::from_value_unshared(&other)),
                })
            };
            let pair = match key.as_str() {
                "department" => Pair::Department(text()?),
                "item" => Pair::Item(text()?),
                "handler" => Pair::Handler(text()?),
                _ => {
                    seq.next_element::<IgnoredAny>()?
                        .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                    Pair::Other
                }
            };
            Ok(pair)
        }
    }
}

/// Why a case is red or yellow: its most urgent open item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A clock ran out (red) or reached its warning share (yellow); the instant is its
    /// deadline.
    Clock,
    /// A violation; the instant is when it fired.
    Violation,
    /// A periodic duty not met; the instant is its due time.
    Missing,
}

/// A case's open items, judged.
#[derive(Debug, Clone)]
pub struct Judged {
    /// Not withdrawn, and a clock running or paused, a duty watched, or a violation open.
    pub open: bool,
    pub light: Light,
    /// Per rule index, the light of that rule's open items, sorted by rule.
    pub rules: Vec<(u16, Light)>,
    /// The most urgent item of the case's colour: `(cause, rule, instant, detail index)`;
    /// for a green case its running clock with the nearest deadline (a duty alone gives
    /// none).
    pub urgent: Option<(Cause, u16, i64)>,
    /// The earliest deadline of a running clock.
    pub next_deadline: Option<i64>,
}

impl CaseLite {
    pub fn department(&self) -> &str {
        self.data.department.as_deref().unwrap_or(NO_DEPARTMENT)
    }

    pub fn judge(&self) -> Judged {
        judge(self.withdrawn, &self.clocks, &self.violations, &self.duties)
    }
}

/// The instant listed for a clock whose deadline is pending (see
/// [`crate::engine::Clock::deadline_pending`]): after every real one.
pub const DEADLINE_PENDING: i64 = i64::MAX;

fn judge(
    withdrawn: bool,
    clocks: &[LiteClock],
    violations: &[LiteViolation],
    duties: &[LiteDuty],
) -> Judged {
    // The rules' lights as the open-case gauges count them (src/open_counts.rs).
    let rules = crate::open_counts::rule_lights(
        withdrawn,
        clocks
            .iter()
            .filter(|c| c.active())
            .map(|c| (c.rule, c.light())),
        violations.iter().filter(|v| !v.resolved).map(|v| v.rule),
        duties.iter().map(|d| (d.rule, !d.missing.is_empty())),
    )
    .into_vec();
    let mut red: Option<(Cause, u16, i64)> = None;
    let mut yellow: Option<(Cause, u16, i64)> = None;
    let mut green: Option<(Cause, u16, i64)> = None;
    let earlier = |slot: &mut Option<(Cause, u16, i64)>, c: (Cause, u16, i64)| {
        if slot.is_none_or(|s| c.2 < s.2) {
            *slot = Some(c);
        }
    };
    let mut next_deadline: Option<i64> = None;
    if !withdrawn {
        for c in clocks.iter().filter(|c| c.active()) {
            let light = c.light();
            // A running clock without a deadline waits for next year's calendar data: no
            // instant to sort by or show, so it goes after the ones with a deadline.
            let pending = c.deadline_pending();
            let deadline = if pending {
                DEADLINE_PENDING
            } else {
                c.deadline.or(c.last_deadline).unwrap_or(c.started)
            };
            if c.since.is_some() && !pending {
                next_deadline = Some(next_deadline.map_or(deadline, |d| d.min(deadline)));
            }
            match light {
                Light::Red => earlier(&mut red, (Cause::Clock, c.rule, deadline)),
                Light::Yellow => earlier(&mut yellow, (Cause::Clock, c.rule, deadline)),
                Light::Green => earlier(&mut green, (Cause::Clock, c.rule, deadline)),
            }
        }
        for v in violations.iter().filter(|v| !v.resolved) {
            earlier(&mut red, (Cause::Violation, v.rule, v.at));
        }
        for d in duties {
            for (_, due) in &d.missing {
                earlier(&mut red, (Cause::Missing, d.rule, *due));
            }
        }
    }
    let light = rules.iter().map(|r| r.1).max().unwrap_or(Light::Green);
    let urgent = match light {
        Light::Red => red,
        Light::Yellow => yellow,
        Light::Green => green,
    };
    Judged {
        open: !rules.is_empty(),
        light,
        rules,
        urgent,
        next_deadline,
    }
}

fn light_str(l: Light) -> &'static str {
    match l {
        Light::Green => "green",
        Light::Yellow => "yellow",
        Light::Red => "red",
    }
}

pub(crate) fn parse_light(s: &str) -> Result<Light, ApiError> {
    match s {
        "red" => Ok(Light::Red),
        "yellow" => Ok(Light::Yellow),
        "green" => Ok(Light::Green),
        other => Err(ApiError::bad(format!(
            "query parameter `light` is {other:?}; expected red, yellow or green"
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// The snapshot behind the board and the gauges

/// A red or yellow case on the board.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub department: String,
    pub item: Option<String>,
    pub handler: Option<String>,
    pub light: Light,
    pub cause: Cause,
    /// Rule index of the most urgent item.
    pub rule: u16,
    /// Its deadline, firing time or due time.
    pub at: i64,
    /// For violations and missing periods: what broke.
    pub detail: Option<String>,
    /// The clock's unit, when a span clock.
    pub unit: Option<Unit>,
}

/// Counts of one department.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub red: u64,
    pub yellow: u64,
    pub green: u64,
}

impl Counts {
    fn add(&mut self, l: Light) {
        match l {
            Light::Red => self.red += 1,
            Light::Yellow => self.yellow += 1,
            Light::Green => self.green += 1,
        }
    }
    pub fn total(&self) -> u64 {
        self.red + self.yellow + self.green
    }
}

/// The whole store, counted.
#[derive(Debug)]
pub struct Snapshot {
    pub taken: Instant,
    /// Wall-clock time of the scan (ms since the epoch).
    pub taken_ms: i64,
    pub took: Duration,
    /// Cases in the store (open or not).
    pub scanned: u64,
    /// Rows that could not be read (logged).
    pub unreadable: u64,
    pub totals: Counts,
    /// Open cases per department by overall light.
    pub departments: BTreeMap<String, Counts>,
    /// The most overdue red cases (earliest instant first), at most `board.list_max`.
    pub red: Vec<Listed>,
    /// The yellow cases with the least time left, at most `board.list_max`.
    pub yellow: Vec<Listed>,
    /// Per department, what its own board shows besides its counts (`/?department=…`).
    pub lists: BTreeMap<String, DepartmentLists>,
}

/// A department's own lists, as [`Snapshot`]'s: its most urgent red and yellow cases and
/// how many of its cases the store holds.
#[derive(Debug, Default)]
pub struct DepartmentLists {
    pub scanned: u64,
    pub red: Vec<Listed>,
    pub yellow: Vec<Listed>,
}

impl Snapshot {
    /// For a department name no case in the store has (a mistyped `?department=`), the
    /// known names it may have meant: those that contain it or that it contains
    /// (`住建局` → `市住建局`), at most ten. `None` when some case has it.
    pub fn unknown_department(&self, department: &str) -> Option<Vec<String>> {
        if self.lists.contains_key(department) || self.departments.contains_key(department) {
            return None;
        }
        Some(
            self.lists
                .keys()
                .filter(|k| k.contains(department) || department.contains(k.as_str()))
                .take(10)
                .cloned()
                .collect(),
        )
    }

    /// What `department`'s own board shows: its counts and lists only (nothing, for a
    /// department without cases), taken with the whole board's.
    pub fn of_department(&self, department: &str) -> Snapshot {
        let counts = self.departments.get(department).copied();
        let lists = self.lists.get(department);
        Snapshot {
            taken: self.taken,
            taken_ms: self.taken_ms,
            took: self.took,
            scanned: lists.map_or(0, |l| l.scanned),
            unreadable: 0,
            totals: counts.unwrap_or_default(),
            departments: counts
                .map(|c| (department.to_string(), c))
                .into_iter()
                .collect(),
            red: lists.map_or_else(Vec::new, |l| l.red.clone()),
            yellow: lists.map_or_else(Vec::new, |l| l.yellow.clone()),
            lists: BTreeMap::new(),
        }
    }
}

/// Keeps the `n` entries with the smallest key, cheaply: sorts and cuts when twice full.
struct Smallest {
    n: usize,
    items: Vec<Listed>,
    /// Once `n` are kept, an entry with a key above this cannot make the list.
    bar: Option<i64>,
}

impl Smallest {
    fn new(n: usize) -> Smallest {
        Smallest {
            n,
            items: Vec::new(),
            bar: None,
        }
    }
    /// Offers an entry with key `at`, built only when it may make the list.
    fn offer(&mut self, at: i64, build: impl FnOnce() -> Listed) {
        if self.n == 0 || self.bar.is_some_and(|b| at > b) {
            return;
        }
        self.items.push(build());
        if self.items.len() >= self.n * 2 {
            self.cut();
        }
    }
    fn cut(&mut self) {
        self.items
            .sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
        self.items.truncate(self.n);
        if self.items.len() == self.n {
            self.bar = self.items.last().map(|l| l.at);
        }
    }
    fn done(mut self) -> Vec<Listed> {
        self.cut();
        self.items
    }
}

/// Counts the store's open cases: per department, and the most urgent red and yellow ones
/// of each department (its own board's lists) and of all (the whole board's, the most
/// urgent of the departments' lists).
fn scan_snapshot(store: &crate::store::Store, view: &View) -> Result<Snapshot, ApiError> {
    let started = Instant::now();
    let mut totals = Counts::default();
    let mut departments: BTreeMap<String, Counts> = BTreeMap::new();
    let (mut scanned, mut unreadable) = (0u64, 0u64);
    let max = view.board.list_max;
    let mut lists: BTreeMap<String, (u64, Smallest, Smallest)> = BTreeMap::new();
    store
        .scan_cases(None, |topic, partition, id, bytes| {
            scanned += 1;
            let Some(case) = read_lite(&view.rules, topic, partition, id, bytes) else {
                unreadable += 1;
                return true;
            };
            let dept = case.department();
            let kept = match lists.get_mut(dept) {
                Some(l) => l,
                None => lists
                    .entry(dept.to_string())
                    .or_insert_with(|| (0, Smallest::new(max), Smallest::new(max))),
            };
            kept.0 += 1;
            let j = case.judge();
            if !j.open {
                return true;
            }
            totals.add(j.light);
            match departments.get_mut(dept) {
                Some(c) => c.add(j.light),
                None => {
                    let mut c = Counts::default();
                    c.add(j.light);
                    departments.insert(dept.to_string(), c);
                }
            }
            if let Some((cause, rule, at)) = j.urgent {
                let build = || listed(view, &case, j.light, cause, rule, at);
                match j.light {
                    Light::Red => kept.1.offer(at, build),
                    Light::Yellow => kept.2.offer(at, build),
                    Light::Green => {}
                }
            }
            true
        })
        .map_err(ApiError::internal)?;
    let lists: BTreeMap<String, DepartmentLists> = lists
        .into_iter()
        .map(|(d, (scanned, red, yellow))| {
            let l = DepartmentLists {
                scanned,
                red: red.done(),
                yellow: yellow.done(),
            };
            (d, l)
        })
        .collect();
    // The whole board's: the most urgent of all are among each department's most urgent.
    let most_urgent = |pick: fn(&DepartmentLists) -> &Vec<Listed>| {
        let mut all = Smallest::new(max);
        for l in lists.values().flat_map(pick) {
            all.offer(l.at, || l.clone());
        }
        all.done()
    };
    Ok(Snapshot {
        taken: Instant::now(),
        taken_ms: chrono::Utc::now().timestamp_millis(),
        took: started.elapsed(),
        scanned,
        unreadable,
        totals,
        departments,
        red: most_urgent(|l| &l.red),
        yellow: most_urgent(|l| &l.yellow),
        lists,
    })
}

fn listed(view: &View, case: &CaseLite, light: Light, cause: Cause, rule: u16, at: i64) -> Listed {
    let detail = match cause {
        Cause::Clock => None,
        Cause::Violation => case
            .violations
            .iter()
            .find(|v| v.rule == rule && v.at == at && !v.resolved)
            .map(|v| v.detail.clone()),
        Cause::Missing => case
            .duties
            .iter()
            .find(|d| d.rule == rule)
            .and_then(|d| d.missing.iter().find(|m| m.1 == at))
            .and_then(
                |(period, _)| match view.rules.rules.get(rule as usize).map(|r| &r.kind) {
                    Some(RuleKind::Periodic(p)) => Some(period_label(p.period, *period)),
                    _ => None,
                },
            ),
    };
    let unit = match cause {
        Cause::Clock => case
            .clocks
            .iter()
            .find(|c| c.rule == rule && c.active())
            .and_then(|c| match c.mode {
                Some(LiteMode::Span { unit }) => Some(unit),
                _ => None,
            }),
        _ => None,
    };
    Listed {
        id: case.id.clone(),
        department: case.department().to_string(),
        item: case.data.item.clone(),
        handler: case.data.handler.clone(),
        light,
        cause,
        rule,
        at,
        detail,
        unit,
    }
}

/// The current snapshot, recomputed when older than its allowed age.
pub async fn snapshot(shared: &Arc<Shared>) -> Result<Arc<Snapshot>, ApiError> {
    let view = &shared.view;
    let fresh = |s: &Snapshot| {
        let age = Duration::from_secs(u64::from(view.board.cache_seconds)).max(s.took * 10);
        s.taken.elapsed() < age
    };
    let current = || view.snapshot.lock().ok().and_then(|s| s.clone());
    if let Some(s) = current() {
        if fresh(&s) {
            return Ok(s);
        }
        // A large store takes seconds to recount: answer with the previous counts (the board
        // shows their time) while one refresh runs in the background.
        if s.took >= SLOW_RECOUNT {
            recount_in_background(shared);
            return Ok(s);
        }
    }
    let _one_at_a_time = view.refresh.lock().await;
    if let Some(s) = current()
        && fresh(&s)
    {
        return Ok(s);
    }
    recount(shared).await
}

/// A recount slower than this is done in the background, the previous one served meanwhile.
const SLOW_RECOUNT: Duration = Duration::from_secs(1);

/// Recounts the store, publishes the gauges and keeps the snapshot.
async fn recount(shared: &Arc<Shared>) -> Result<Arc<Snapshot>, ApiError> {
    let view = &shared.view;
    let s2 = shared.clone();
    let snap = Arc::new(blocking(move || scan_snapshot(&s2.store, &s2.view)).await?);
    shared
        .metrics
        .view_refresh_seconds
        .observe(snap.took.as_secs_f64());
    tracing::debug!(
        cases = snap.scanned,
        open = snap.totals.total(),
        took_ms = snap.took.as_millis() as u64,
        "board snapshot recomputed"
    );
    if let Ok(mut slot) = view.snapshot.lock() {
        *slot = Some(snap.clone());
    }
    Ok(snap)
}

// ---------------------------------------------------------------------------------------
// /api/v1/cases

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesQuery {
    light: Option<String>,
    department: Option<String>,
    rule: Option<String>,
    /// `true`: only open cases; `false`: only cases with nothing open.
    open: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// One case in a list.
fn summary(view: &View, topic: &str, partition: u32, c: &CaseLite, j: &Judged) -> Value {
    json!({
        "id": c.id,
        "light": light_str(j.light),
        "open": j.open,
        "withdrawn": c.withdrawn,
        "department": c.data.department,
        "item": c.data.item,
        "handler": c.data.handler,
        "rules": view.rule_lights(&j.rules),
        "next_deadline": j.next_deadline.map(|d| view.fmt(d)),
        "first_event": view.fmt(c.first_event),
        "last_event": view.fmt(c.last_event),
        "topic": topic,
        "partition": partition,
    })
}

fn encode_cursor(topic: &str, partition: u32, id: &str) -> String {
    hex(json!([topic, partition, id]).to_string().as_bytes())
}

fn decode_cursor(s: &str) -> Result<(String, u32, String), ApiError> {
    unhex(s)
        .and_then(|b| serde_json::from_slice::<(String, u32, String)>(&b).ok())
        .ok_or_else(|| ApiError::bad("query parameter `cursor` is not a cursor this API gave"))
}

fn parse_limit(s: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match s {
        None => Ok(default),
        Some(x) => match x.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(format!(
                "query parameter `limit` is {x:?}; expected a number from 1 to {max}"
            ))),
        },
    }
}

/// The filters of `/api/v1/cases` and `/api/v1/cases.csv`, checked.
struct CaseFilter {
    light: Option<Light>,
    rule: Option<u16>,
    open: Option<bool>,
    department: Option<String>,
    /// The department's bytes as stored, to skip other cases undecoded.
    in_bytes: Option<memchr::memmem::Finder<'static>>,
}

impl CaseFilter {
    fn new(view: &View, q: &CasesQuery) -> Result<CaseFilter, ApiError> {
        let light = q.light.as_deref().map(parse_light).transpose()?;
        let department = q.department.as_deref();
        let rule = match q.rule.as_deref() {
            None => None,
            Some(r) => Some(view.rules.index_of(r).ok_or_else(|| {
                ApiError::bad(format!(
                    "query parameter `rule`: no loaded rule has the id {r:?}"
                ))
            })?),
        };
        let open = match q.open.as_deref() {
            None => None,
            Some("true") | Some("1") => Some(true),
            Some("false") | Some("0") => Some(false),
            Some(x) => {
                return Err(ApiError::bad(format!(
                    "query parameter `open` is {x:?}; expected true or false"
                )));
            }
        };
        Ok(CaseFilter {
            light,
            rule,
            open,
            department: department.map(str::to_string),
            in_bytes: department.and_then(department_bytes),
        })
    }

    /// Scans the stored cases after `after` in the store's order, giving `take` each case
    /// the filters keep, judged, until it returns `false`. Returns how many were scanned.
    fn scan(
        &self,
        store: &crate::store::Store,
        rules: &RuleSet,
        after: Option<(&str, u32, &str)>,
        mut take: impl FnMut(&str, u32, &str, &CaseLite, &Judged) -> bool,
    ) -> Result<u64, ApiError> {
        let mut scanned = 0u64;
        store
            .scan_cases(after, |topic, partition, id, bytes| {
                scanned += 1;
                if self
                    .in_bytes
                    .as_ref()
                    .is_some_and(|f| f.find(bytes).is_none())
                {
                    return true; // not of this department: skipped undecoded
                }
                let Some(c) = read_lite(rules, topic, partition, id, bytes) else {
                    return true;
                };
                if self
                    .department
                    .as_deref()
                    .is_some_and(|d| c.department() != d)
                {
                    return true;
                }
                let j = c.judge();
                if self.open.is_some_and(|o| o != j.open) {
                    return true;
                }
                if let Some(r) = self.rule {
                    let in_case = c.clocks.iter().any(|x| x.rule == r)
                        || c.violations.iter().any(|x| x.rule == r)
                        || c.duties.iter().any(|x| x.rule == r);
                    if !in_case {
                        return true;
                    }
                    if let Some(l) = self.light {
                        let rule_light = j
                            .rules
                            .iter()
                            .find(|x| x.0 == r)
                            .map_or(Light::Green, |x| x.1);
                        if rule_light != l {
                            return true;
                        }
                    }
                } else if self.light.is_some_and(|l| l != j.light) {
                    return true;
                }
                take(topic, partition, id, &c, &j)
            })
            .map_err(ApiError::internal)?;
        Ok(scanned)
    }
}

/// `/api/v1/cases?light=red&department=…&rule=…&open=true&limit=100&cursor=…`
pub async fn cases(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<CasesQuery>,
) -> Result<Response, ApiError> {
    let filter = CaseFilter::new(&s.view, &q)?;
    let limit = parse_limit(q.limit.as_deref(), 100, 1000)?;
    let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let s2 = s.clone();
    let (items, next, scanned) = blocking(move || {
        let view = &s2.view;
        let mut items = Vec::new();
        let mut next = None;
        let mut last_key: Option<(String, u32, String)> = None;
        let after = cursor
            .as_ref()
            .map(|(t, p, i)| (t.as_str(), *p, i.as_str()));
        let scanned = filter.scan(
            &s2.store,
            &view.rules,
            after,
            |topic, partition, id, c, j| {
                if items.len() == limit {
                    next = last_key
                        .as_ref()
                        .map(|(t, p, i): &(String, u32, String)| encode_cursor(t, *p, i));
                    return false;
                }
                items.push(summary(view, topic, partition, c, j));
                last_key = Some((topic.to_string(), partition, id.to_string()));
                true
            },
        )?;
        Ok((items, next, scanned))
    })
    .await?;
    Ok(axum::Json(json!({"cases": items, "next": next, "scanned": scanned})).into_response())
}

/// The most rows `/api/v1/cases.csv` answers: about 25 MB of text, built in memory.
pub const CSV_MAX_ROWS: usize = 100_000;

/// `/api/v1/cases.csv?light=red&department=…&rule=…&open=true`: every case the filters
/// keep (as `/api/v1/cases`, without pages), as a spreadsheet for a supervisor's report
/// (通报): UTF-8 with a byte order mark, which Excel and WPS need to read Chinese, and
/// Chinese column names. More than [`CSV_MAX_ROWS`] cases is refused, naming the filters
/// that narrow it.
pub async fn cases_csv(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<CasesQuery>,
) -> Result<Response, ApiError> {
    for (name, given) in [("limit", &q.limit), ("cursor", &q.cursor)] {
        if given.is_some() {
            return Err(ApiError::bad(format!(
                "query parameter `{name}` is not taken here: the export gives every case the \
                 filters keep"
            )));
        }
    }
    let filter = CaseFilter::new(&s.view, &q)?;
    let name = csv_file_name(&s.view, &filter, q.rule.as_deref());
    let s2 = s.clone();
    let body = blocking(move || {
        let view = &s2.view;
        let now = chrono::Utc::now().timestamp_millis();
        let mut out = Csv::new(&[
            "案件编号",
            "灯色",
            "状态",
            "部门",
            "事项",
            "经办人",
            "最紧迫规则",
            "情况",
            "最近期限",
            "各规则灯色",
            "首次事件",
            "最近事件",
        ]);
        let mut rows = 0usize;
        let mut too_many = false;
        filter.scan(&s2.store, &view.rules, None, |_, _, _, c, j| {
            if rows == CSV_MAX_ROWS {
                too_many = true;
                return false;
            }
            rows += 1;
            let rules: Vec<String> = j
                .rules
                .iter()
                .map(|(r, l)| {
                    let (title, id) = (view.rule_title(*r), view.rule_id(*r));
                    format!("{title}（{id}）：{}", light_zh(*l))
                })
                .collect();
            // What the board would say of it: its most urgent item's rule and time.
            let (urgent_rule, situation) = match j.urgent {
                Some((cause, rule, at)) => {
                    let l = listed(view, c, j.light, cause, rule, at);
                    (
                        view.rule_title(rule),
                        crate::board::situation(view, &l, now),
                    )
                }
                None => ("", String::new()),
            };
            out.row(&[
                &c.id,
                light_zh(j.light),
                state_zh(c.withdrawn, j.open),
                c.department(),
                c.data.item.as_deref().unwrap_or(""),
                c.data.handler.as_deref().unwrap_or(""),
                urgent_rule,
                &situation,
                &j.next_deadline
                    .map_or(String::new(), |d| view.sheet_time(d)),
                &rules.join("；"),
                &view.sheet_time(c.first_event),
                &view.sheet_time(c.last_event),
            ]);
            true
        })?;
        if too_many {
            return Err(ApiError::bad(format!(
                "more than {CSV_MAX_ROWS} cases match; narrow the export with `light`, \
                 `department`, `rule` or `open`, or page through /api/v1/cases"
            )));
        }
        Ok(out.finish())
    })
    .await?;
    Ok(csv_response(&name, body))
}

/// A download's file name: what was exported, the filters, the day (ASCII only, so that
/// every browser keeps it; a department is not in it). `rule` is a checked rule id.
fn csv_file_name(view: &View, filter: &CaseFilter, rule: Option<&str>) -> String {
    let mut name = String::from("redlight-cases");
    for part in [filter.light.map(light_str), rule].into_iter().flatten() {
        name.push('-');
        name.extend(part.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        }));
    }
    match filter.open {
        Some(true) => name.push_str("-open"),
        Some(false) => name.push_str("-closed"),
        None => {}
    }
    let today = chrono::Utc::now().with_timezone(&view.zone.tz());
    format!("{name}-{}.csv", today.format("%Y%m%d"))
}

fn csv_response(name: &str, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// A case's state in words (the export's 状态, a case's page): withdrawn, open or closed.
pub(crate) fn state_zh(withdrawn: bool, open: bool) -> &'static str {
    if withdrawn {
        "已撤回"
    } else if open {
        "在办"
    } else {
        "已办结"
    }
}

/// A light in the words of the board.
pub(crate) fn light_zh(l: Light) -> &'static str {
    match l {
        Light::Red => "红灯",
        Light::Yellow => "黄灯",
        Light::Green => "绿灯",
    }
}

/// A spreadsheet of text cells: RFC 4180 quoting (the `csv` crate), after a UTF-8 byte
/// order mark. A cell that a spreadsheet would take for a formula (starting with `=`, `+`,
/// `-`, `@`, a tab or a carriage return) is written with a `'` before it: case ids,
/// departments and handlers come from events, and a producer's `=HYPERLINK(…)` must stay
/// text when a supervisor opens the file.
struct Csv {
    w: csv::Writer<Vec<u8>>,
}

impl Csv {
    fn new(header: &[&str]) -> Csv {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(b"\xEF\xBB\xBF".to_vec());
        // Writing into memory cannot fail.
        let _ = w.write_record(header);
        Csv { w }
    }

    fn row(&mut self, cells: &[&str]) {
        let _ = self
            .w
            .write_record(cells.iter().map(|c| inert(c).into_owned().into_bytes()));
    }

    fn finish(self) -> Vec<u8> {
        // Into memory: flushing cannot fail.
        self.w.into_inner().unwrap_or_default()
    }
}

/// `cell`, or `'` and `cell` when a spreadsheet would read it as a formula.
fn inert(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

// ---------------------------------------------------------------------------------------
// /api/v1/cases/{id}

fn limit_json(view: &View, c: &Clock) -> Value {
    match c.mode {
        Mode::Span(s) => json!({
            "amount": s.limit as f64 / s.unit.ms() as f64,
            "unit": s.unit.name(),
            "extended": c.extended,
        }),
        Mode::Fixed { deadline, .. } => {
            let rule = view.rules.rules.get(c.rule as usize);
            let what = match rule.map(|r| &r.kind) {
                Some(RuleKind::Deadline(d)) => match d.limit {
                    Limit::SameWorkday => "same_workday",
                    Limit::DueFrom { .. } => "due",
                    _ => "fixed",
                },
                _ => "fixed",
            };
            json!({"fixed": what, "deadline": view.fmt(deadline)})
        }
    }
}

/// A clock with its deadline and the time it has counted, as of `now`.
fn clock_json(view: &View, c: &Clock, now: i64) -> Value {
    let rule = view.rules.rules.get(c.rule as usize);
    let state = if c.stopped.get().is_some() {
        "stopped"
    } else if c.since.get().is_some() {
        "running"
    } else {
        "paused"
    };
    let deadline = c.deadline.get().or(c.last_deadline.get());
    let counted = match c.mode {
        Mode::Span(s) => {
            let counting = view.counting();
            let total = match (c.since.get(), c.stopped.get()) {
                (Some(since), None) => counting
                    .counted(s.unit, s.origin, since, now)
                    .map(|x| c.counted + x),
                (None, None) => Ok(c.counted),
                // Never paused: counted from the start to the stop.
                (_, Some(stop)) if c.counted == 0 => {
                    counting.counted(s.unit, s.origin, c.started, stop)
                }
                // Paused on the way (the last resume is not kept): the limit less what was
                // left between the stop and the deadline.
                (_, Some(stop)) => match deadline {
                    Some(d) if d > stop => counting
                        .counted(s.unit, s.origin, stop, d)
                        .map(|left| (s.limit - left).max(c.counted)),
                    Some(d) => counting
                        .counted(s.unit, s.origin, d, stop)
                        .map(|over| s.limit + over),
                    None => Ok(c.counted),
                },
            };
            match total {
                Ok(ms) => {
                    json!({"value": round2(ms as f64 / s.unit.ms() as f64), "unit": s.unit.name(), "ms": ms})
                }
                Err(e) => json!({"error": e.to_string()}),
            }
        }
        Mode::Fixed { .. } => {
            let until = c.stopped.get().unwrap_or(now);
            let ms = (until - c.started).max(0);
            json!({"value": round2(ms as f64 / 3_600_000.0), "unit": "hours", "ms": ms})
        }
    };
    let (overdue, remaining) = match (state, deadline) {
        ("stopped", _) | (_, None) => (None, None),
        (_, Some(d)) if now > d => (Some((now - d) / 1000), None),
        (_, Some(d)) => (None, Some((d - now) / 1000)),
    };
    json!({
        "rule": rule.map(|r| r.id.to_string()),
        "title": rule.map(|r| r.title.to_string()),
        "basis": rule.map(|r| r.basis.to_string()),
        "cycle": c.cycle,
        "light": light_str(c.light()),
        "state": state,
        "started": view.fmt(c.started),
        "limit": limit_json(view, c),
        "deadline": deadline.map(|d| view.fmt(d)),
        "yellow_at": c.yellow_at.get().map(|d| view.fmt(d)),
        "deadline_pending": c.deadline_pending(),
        "paused_at": c.paused_at.get().map(|d| view.fmt(d)),
        "stopped": c.stopped.get().map(|d| view.fmt(d)),
        "late": c.late,
        "counted": counted,
        "overdue_seconds": overdue,
        "remaining_seconds": remaining,
        "yellow_fired": c.yellow_fired,
        "red_fired": c.red_fired,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn case_json(
    view: &View,
    topic: &str,
    partition: u32,
    c: &Case,
    alerts: Vec<(u64, Alert)>,
) -> Value {
    let now = chrono::Utc::now().timestamp_millis();
    let j = CaseLite::from(c).judge();
    let rule_of = |idx: u16| view.rules.rules.get(idx as usize);
    let data: serde_json::Map<String, Value> = c
        .data
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_value()))
        .collect();
    let str_of = |k: &str| c.get(k).and_then(crate::engine::Datum::as_str);
    json!({
        "id": &*c.id,
        "light": light_str(j.light),
        "open": j.open,
        "withdrawn": c.withdrawn,
        "department": str_of("department"),
        "item": str_of("item"),
        "handler": str_of("handler"),
        "topic": topic,
        "partition": partition,
        "first_event": view.fmt(c.first_event),
        "last_event": view.fmt(c.last_event),
        // The engine keeps each event only as a hash of its id (for duplicates) and the set
        // of types seen: the events themselves are in Kafka.
        "events": {"count": c.seen.len(), "types": view.rules.types_of(c.types)},
        "data": data,
        "rules": view.rule_lights(&j.rules),
        "clocks": c.clocks.iter().map(|x| clock_json(view, x, now)).collect::<Vec<_>>(),
        "stages": c.stages.iter().map(|st| {
            let r = rule_of(st.rule);
            let reached = match r.map(|r| &r.kind) {
                Some(RuleKind::Sequence(s)) if st.last >= 0 => s.stages.get(st.last as usize).cloned(),
                _ => None,
            };
            json!({"rule": view.rule_id(st.rule), "reached": reached})
        }).collect::<Vec<_>>(),
        "violations": c.violations.iter().map(|v| {
            let r = rule_of(v.rule);
            json!({
                "rule": view.rule_id(v.rule),
                "title": r.map(|r| r.title.to_string()),
                "basis": r.map(|r| r.basis.to_string()),
                "at": view.fmt(v.at),
                "detail": v.detail,
                "event": v.key,
                "resolved": v.resolved,
            })
        }).collect::<Vec<_>>(),
        "duties": c.duties.iter().map(|d| {
            let r = rule_of(d.rule);
            let period = match r.map(|r| &r.kind) {
                Some(RuleKind::Periodic(p)) => Some(p.period),
                _ => None,
            };
            let label = |i: i32| period.map_or_else(|| i.to_string(), |p| period_label(p, i));
            json!({
                "rule": view.rule_id(d.rule),
                "title": r.map(|r| r.title.to_string()),
                "period": label(d.period),
                // While pending, `d.due` is only when the engine tries again (the calendar
                // data does not reach the period's due time): not a due time to show.
                "due": (!d.pending).then(|| view.fmt(d.due)),
                "pending": d.pending,
                "met": d.met.iter().map(|m| label(*m)).collect::<Vec<_>>(),
                "missing": d.missing.iter().map(|(m, due)| json!({"period": label(*m), "due": view.fmt(*due)})).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
        "alerts": alerts.into_iter().map(|(seq, a)| json!({"seq": seq, "alert": a})).collect::<Vec<_>>(),
    })
}

/// A case's facts as `/api/v1/cases/{id}` gives them, read from the store: the case with
/// its clocks, stages, violations, duties and alerts; for a case forgotten after its
/// retention time, its kept alerts; `None` for an id never seen.
fn case_facts(s: &Shared, id: &str) -> Result<Option<Value>, ApiError> {
    let found = s.store.find_case(id).map_err(ApiError::internal)?;
    let alerts = s.store.case_alerts(id).map_err(ApiError::internal)?;
    Ok(match found {
        Some((topic, partition, mut case)) => {
            let _ = case.drop_retired(&s.view.rules);
            Some(case_json(&s.view, &topic, partition, &case, alerts))
        }
        None if !alerts.is_empty() => {
            // Forgotten after its retention time, but its alerts are kept.
            Some(
                json!({"id": id, "forgotten": true, "alerts": alerts.into_iter().map(|(seq, a)| json!({"seq": seq, "alert": a})).collect::<Vec<_>>()}),
            )
        }
        None => None,
    })
}

/// `/api/v1/cases/{id}`: the case with its clocks (deadline, time counted), stages,
/// violations, duties and every alert it raised.
pub async fn case(
    State(s): State<Arc<Shared>>,
    id: Result<Path<String>, PathRejection>,
    ApiQuery(NoQuery {}): ApiQuery<NoQuery>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let s2 = s.clone();
    match blocking(move || case_facts(&s2, &id)).await? {
        Some(v) => Ok(axum::Json(v).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "no case with this id")),
    }
}

/// `/case/{id}`: the case's own page for people (案件详情), linked from the board's lists:
/// the same facts as `/api/v1/cases/{id}`, in Chinese. An id never seen gives a page that
/// says so, with status 404.
pub async fn case_page(
    State(s): State<Arc<Shared>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(path_error)?;
    let s2 = s.clone();
    let id2 = id.clone();
    let found = blocking(move || case_facts(&s2, &id2)).await?;
    let now = chrono::Utc::now().timestamp_millis();
    Ok(match found {
        Some(facts) => page(
            StatusCode::OK,
            crate::case_page::render(&s.view, &facts, now),
        ),
        None => page(
            StatusCode::NOT_FOUND,
            crate::case_page::not_found(&s.view, &id),
        ),
    })
}

// ---------------------------------------------------------------------------------------
// /api/v1/alerts

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    after: Option<String>,
    limit: Option<String>,
    case: Option<String>,
    rule: Option<String>,
    level: Option<String>,
    status: Option<String>,
    reason: Option<String>,
    department: Option<String>,
}

/// At most this many alerts are looked at per request; `next` continues from there.
const ALERT_SCAN_MAX: u64 = 200_000;

/// `/api/v1/alerts?after=SEQ&limit=N&case=&rule=&level=&status=&reason=&department=`:
/// alerts in the order they happened with their sequence numbers; `next` is the sequence
/// number to pass as `after` for the next page (it moves on even when a page of a filtered
/// query comes back short, after scanning its share of the table).
pub async fn alerts(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<AlertsQuery>,
) -> Result<Response, ApiError> {
    let after = match q.after.as_deref() {
        None => 0,
        Some(x) => x.parse::<u64>().map_err(|_| {
            ApiError::bad(format!(
                "query parameter `after` is {x:?}; expected a sequence number"
            ))
        })?,
    };
    let limit = parse_limit(q.limit.as_deref(), 1000, 10_000)?;
    let check = |name: &str, v: &Option<String>, allowed: &[&str]| -> Result<(), ApiError> {
        match v {
            Some(x) if !allowed.contains(&x.as_str()) => Err(ApiError::bad(format!(
                "query parameter `{name}` is {x:?}; expected one of {}",
                allowed.join(", ")
            ))),
            _ => Ok(()),
        }
    };
    check("level", &q.level, &["yellow", "red"])?;
    check("status", &q.status, &["firing", "resolved"])?;
    check(
        "reason",
        &q.reason,
        &[
            "approaching",
            "overdue",
            "violation",
            "missing",
            "completed",
            "completed_late",
            "retracted",
            "withdrawn",
        ],
    )?;
    let s2 = s.clone();
    let (items, next) = blocking(move || {
        // Enum fields compare by their wire names (`red`, `completed_late`, …).
        fn named<T: serde::Serialize>(x: &T, want: &Option<String>) -> bool {
            want.as_deref()
                .is_none_or(|w| matches!(serde_json::to_value(x), Ok(Value::String(s)) if s == w))
        }
        let keep = |a: &Alert| -> bool {
            q.rule.as_deref().is_none_or(|w| &*a.rule == w)
                && q.department
                    .as_deref()
                    .is_none_or(|w| a.department.as_deref() == Some(w))
                && named(&a.level, &q.level)
                && named(&a.status, &q.status)
                && named(&a.reason, &q.reason)
        };
        let mut items = Vec::new();
        let mut next = after;
        if let Some(case) = &q.case {
            for (seq, a) in s2.store.case_alerts(case).map_err(ApiError::internal)? {
                if seq <= after {
                    continue;
                }
                if items.len() >= limit {
                    break;
                }
                next = seq;
                if keep(&a) {
                    items.push(json!({"seq": seq, "alert": a}));
                }
            }
            return Ok((items, next));
        }
        let mut scanned = 0u64;
        let mut bad = None;
        s2.store
            .scan_alerts(after, |seq, bytes| {
                scanned += 1;
                next = seq;
                match crate::store::decode_alert(bytes) {
                    Ok(a) => {
                        if keep(&a) {
                            items.push(json!({"seq": seq, "alert": a}));
                        }
                    }
                    Err(e) => {
                        bad = Some(format!("alert {seq}: {e}"));
                        return false;
                    }
                }
                items.len() < limit && scanned < ALERT_SCAN_MAX
            })
            .map_err(ApiError::internal)?;
        if let Some(b) = bad {
            return Err(ApiError::internal(b));
        }
        Ok((items, next))
    })
    .await?;
    Ok(axum::Json(json!({"alerts": items, "next": next})).into_response())
}

// ---------------------------------------------------------------------------------------
// /api/v1/scorecard

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScorecardQuery {
    period: Option<String>,
}

/// The scorecard's `period` parameter: a year (`2026`), a quarter (`2026Q3`) or a month
/// (`2026-07`); the current quarter without it.
fn score_period(s: &Shared, period: Option<&str>) -> Result<ScorePeriod, ApiError> {
    Ok(match period {
        None => ScorePeriod::containing(
            crate::rules::Period::Quarter,
            chrono::Utc::now().with_timezone(&s.view.zone.tz()).date_naive(),
        ),
        Some(p) => ScorePeriod::parse(p).ok_or_else(|| {
            ApiError::bad(format!(
                "query parameter `period` is {p:?}; expected a year (2026), a quarter (2026Q3) or a month (2026-07)"
            ))
        })?,
    })
}

/// `/api/v1/scorecard?period=2026Q3` (also `2026`, `2026-07`; default: the current quarter).
pub async fn scorecard(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<ScorecardQuery>,
) -> Result<Response, ApiError> {
    let (_, card) = card_of(&s, q.period.as_deref()).await?;
    Ok(axum::Json(card).into_response())
}

/// The scorecard of the `period` parameter, computed off the async threads, with the
/// period.
async fn card_of(
    s: &Arc<Shared>,
    period: Option<&str>,
) -> Result<(ScorePeriod, crate::scorecard::Scorecard), ApiError> {
    let period = score_period(s, period)?;
    Ok((period, card_for(s, period).await?))
}

/// The scorecard of a period, computed off the async threads.
async fn card_for(
    s: &Arc<Shared>,
    period: ScorePeriod,
) -> Result<crate::scorecard::Scorecard, ApiError> {
    let s2 = s.clone();
    let card = blocking(move || {
        crate::scorecard::scorecard(&s2.store, &s2.view.zone, &s2.view.scorecard, period)
            .map_err(ApiError::internal)
    })
    .await?;
    Ok(card)
}

/// `/scorecard?period=2026Q3`: the scorecard as a page (see `src/scorecard_page.rs`); a
/// period it cannot read gets a page saying how to write one (status 400).
pub async fn scorecard_page(
    State(s): State<Arc<Shared>>,
    req: Request,
) -> Result<Response, ApiError> {
    let given = page_param(req.uri().query(), "period");
    let ignored = ignored_params(req.uri().query(), &["period"]);
    let this_quarter = score_period(&s, None)?;
    let period = match given.as_deref() {
        None => this_quarter,
        Some(p) => match ScorePeriod::parse(p) {
            Some(period) => period,
            None => {
                return Ok(page(
                    StatusCode::BAD_REQUEST,
                    crate::scorecard_page::bad_period(&s.view, p),
                ));
            }
        },
    };
    let card = card_for(&s, period).await?;
    let now = chrono::Utc::now().timestamp_millis();
    Ok(page(
        StatusCode::OK,
        crate::scorecard_page::render(
            &s.view,
            &period,
            &card,
            &this_quarter,
            now,
            ignored.as_deref(),
        ),
    ))
}

/// `/api/v1/scorecard.csv?period=2026Q3`: the scorecard as a spreadsheet, a department a
/// row, in Chinese (as `/api/v1/cases.csv`). The on-time rate is a percentage with two
/// decimals, which spreadsheets read as a number; empty when nothing was closed.
pub async fn scorecard_csv(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<ScorecardQuery>,
) -> Result<Response, ApiError> {
    let (period, card) = card_of(&s, q.period.as_deref()).await?;
    let year = period.year();
    let (last_year, this_year) = ((year - 1).to_string(), year.to_string());
    let mut out = Csv::new(&[
        "部门",
        "考核期",
        "办结",
        "按时办结",
        "逾期办结",
        "违规",
        "按时办结率",
        "等次",
        &format!("{this_year}年等次"),
        &format!("{last_year}年等次"),
        "连续两年不合格",
    ]);
    let grade = |g: Option<&Option<crate::scorecard::Grade>>| {
        g.copied()
            .flatten()
            .map_or("", crate::scorecard::Grade::as_str)
    };
    for l in &card.departments {
        let t = &l.tally;
        out.row(&[
            &l.department,
            &card.period,
            &t.closed.to_string(),
            &t.on_time.to_string(),
            &t.late.to_string(),
            &t.violations.to_string(),
            &l.on_time_percent().unwrap_or_default(),
            l.grade.as_str(),
            grade(l.year_grades.get(&this_year)),
            grade(l.year_grades.get(&last_year)),
            if l.unqualified_two_years {
                "是"
            } else {
                "否"
            },
        ]);
    }
    Ok(csv_response(
        &format!("redlight-scorecard-{}.csv", card.period),
        out.finish(),
    ))
}

// ---------------------------------------------------------------------------------------
// The board

/// `/`: the red-light board (see `src/board.rs`).
pub async fn board(State(s): State<Arc<Shared>>, req: Request) -> Result<Response, ApiError> {
    let department = page_param(req.uri().query(), "department");
    let ignored = ignored_params(req.uri().query(), &["department"]);
    let whole = snapshot(&s).await?;
    let own;
    let snap = match &department {
        Some(d) => {
            own = whole.of_department(d);
            &own
        }
        None => &*whole,
    };
    let now = chrono::Utc::now().timestamp_millis();
    let unknown = department
        .as_deref()
        .and_then(|d| whole.unknown_department(d));
    let html = crate::board::render(
        &s.view,
        snap,
        now,
        s.input_notice().as_ref(),
        department.as_deref(),
        unknown.as_deref(),
        ignored.as_deref(),
    );
    Ok(page(StatusCode::OK, html))
}

/// `/case?id=…`: the board's and the case pages' form to open a case by its number (a
/// supervisor on the phone with an applicant): to the case's page, the number trimmed of
/// the spaces a copy brings along. Relative, so it stays under a proxy's path prefix.
pub async fn find_case(req: Request) -> Response {
    // Nothing to look up (the form requires a number): back to the board.
    let location = match page_param(req.uri().query(), "id") {
        Some(id) => format!("case/{}", crate::case_page::path_segment(&id)),
        None => "./".to_string(),
    };
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// `/case/` without an id (an address cut short, or typed): the board, or with `?id=…` the
/// case, as `/case?id=…` does. Relative, from `/case/`.
pub async fn case_index(req: Request) -> Response {
    let location = match page_param(req.uri().query(), "id") {
        Some(id) => crate::case_page::path_segment(&id),
        None => "../".to_string(),
    };
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// A page for people (the board, a case's page) with the headers every such page has.
fn page(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // The page is its own inline style and text, without any script, image or
            // font to fetch: a browser is told to load nothing else, so that a case id or
            // a department name that got past the escaping still could not run or fetch
            // anything. Framing is left allowed (wall screens show it in a portal's frame).
            (header::CONTENT_SECURITY_POLICY, BOARD_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

/// A page's note on the parameters of its query that it does not take (`/?departmnt=…`,
/// mistyped): a page for people does not refuse them as the API does, but says they were
/// ignored and names the ones it takes, so that a mistyped bookmark is not taken for a
/// filtered page. `token` is the guard's.
fn ignored_params(query: Option<&str>, takes: &[&str]) -> Option<String> {
    let mut ignored: Vec<String> = Vec::new();
    for (k, _) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if k != "token" && !takes.contains(&k.as_ref()) && !ignored.iter().any(|i| *i == k) {
            ignored.push(k.into_owned());
        }
    }
    if ignored.is_empty() {
        return None;
    }
    let quoted = |names: &mut dyn Iterator<Item = &str>| {
        names
            .map(|n| format!("“{n}”"))
            .collect::<Vec<_>>()
            .join("、")
    };
    Some(format!(
        "已忽略本页不认识的参数 {}；本页的参数：{}",
        quoted(&mut ignored.iter().map(String::as_str)),
        quoted(&mut takes.iter().copied()),
    ))
}

/// The value of `key` in a page's query: `/?department=…` (a department's own board),
/// `/case?id=…` (a case by its number). The last one given, trimmed; none when empty.
/// Other parameters are left alone: `token` is the guard's, and a page for people names
/// what it was given rather than refusing (see [`ignored_params`]).
fn page_param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.trim().to_string())
        .last()
        .filter(|d| !d.is_empty())
}

/// The board's `Content-Security-Policy`: its inline `<style>` and nothing else; its one
/// form (a case's number, to open its page) may only go to this daemon.
pub const BOARD_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
                             form-action 'self'";

/// The `department` label of the open-case metrics for departments beyond
/// `board.metric_departments`.
pub const OTHER_DEPARTMENT: &str = "其他";

/// Starts a recount unless one is running.
fn recount_in_background(shared: &Arc<Shared>) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let Ok(_one_at_a_time) = shared.view.refresh.try_lock() else {
            return; // one is running
        };
        if let Err(e) = recount(&shared).await {
            tracing::warn!(error = %e.message, "board recount failed");
        }
    });
}

/// Before `/metrics` renders: sets the open-case gauges from the counts the consumer loop
/// keeps as cases change ([`crate::open_counts`]); nothing is read from the store. The
/// departments with the most open cases keep their own label; the rest are summed under
/// [`OTHER_DEPARTMENT`] (`board.metric_departments`).
pub fn refresh_gauges(s: &Shared) {
    let view = &s.view;
    let m = &s.metrics;
    let Ok(totals) = s.open.lock() else {
        return;
    };
    let mut per_department: HashMap<&str, i64> = HashMap::new();
    for (class, n) in totals.classes() {
        *per_department.entry(class.department.as_str()).or_insert(0) += n;
    }
    let mut ranked: Vec<(&str, i64)> = per_department.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let labelled: std::collections::HashSet<&str> = ranked
        .iter()
        .take(view.board.metric_departments)
        .map(|(d, _)| *d)
        .collect();
    let label = |dept: &str| -> String {
        if labelled.contains(dept) {
            dept.to_string()
        } else {
            OTHER_DEPARTMENT.to_string()
        }
    };
    let mut by_rule: BTreeMap<(&'static str, String, String), i64> = BTreeMap::new();
    let mut lights: BTreeMap<(&'static str, String), i64> = BTreeMap::new();
    for (dept, _) in &ranked {
        for light in ["red", "yellow", "green"] {
            lights.entry((light, label(dept))).or_insert(0);
        }
    }
    for (class, n) in totals.classes() {
        let dept = label(&class.department);
        for (rule, light) in &class.rules {
            *by_rule
                .entry((light_str(*light), dept.clone(), view.rule_id(*rule)))
                .or_insert(0) += n;
        }
        *lights.entry((light_str(class.light()), dept)).or_insert(0) += n;
    }
    drop(totals);
    m.open_cases.reset();
    for ((light, dept, rule), n) in &by_rule {
        m.open_cases
            .with_label_values(&[light, dept.as_str(), rule.as_str()])
            .set(*n);
    }
    m.case_lights.reset();
    for ((light, dept), n) in &lights {
        m.case_lights
            .with_label_values(&[light, dept.as_str()])
            .set(*n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Query strings are read as axum reads them (percent-decoding, `+` as a space), and
    /// each mistake names the parameter: unknown, repeated, or not of its type.
    #[test]
    fn a_query_string_mistake_names_the_parameter() {
        let q: CasesQuery =
            read_query("light=red&department=%E5%B8%82+%E4%BD%8F%E5%BB%BA").expect("read");
        assert_eq!(q.light.as_deref(), Some("red"));
        assert_eq!(q.department.as_deref(), Some("市 住建"));
        let q: CasesQuery = read_query("").expect("no parameters");
        assert!(q.light.is_none() && q.cursor.is_none());
        let e = read_query::<CasesQuery>("light=red&since=2026").expect_err("unknown");
        assert!(
            e.starts_with("unknown query parameter `since`, expected one of `light`"),
            "{e}"
        );
        let e = read_query::<CasesQuery>("rule=a&rule=b").expect_err("twice");
        assert_eq!(e, "query parameter `rule` is given twice");
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Numbered {
            #[allow(dead_code)]
            after: Option<u64>,
        }
        let e = read_query::<Numbered>("after=-1").expect_err("not a number");
        assert!(e.starts_with("query parameter `after`: "), "{e}");
    }

    /// A case's per-rule lights are listed in the packs' order, whatever numbers the store
    /// gives the rules (here the packs listed the other way round from when it was started).
    #[test]
    fn a_cases_rule_lights_follow_the_packs_order_not_the_stored_numbers() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = Config::load(&root.join("config/redlight.toml")).expect("config");
        let shipped = config.load_rules().expect("rules");
        let stored: Vec<String> = shipped.rules.iter().map(|r| r.id.to_string()).collect();
        let mut paths = config.rule_pack_paths();
        paths.reverse();
        let (rules, _) = RuleSet::load(&paths)
            .expect("reversed")
            .with_rule_order(&stored)
            .expect("numbered as stored");
        let (decision, promised) = (
            rules.index_of("xk.decision").expect("rule"),
            rules.index_of("xz.promised").expect("rule"),
        );
        assert!(decision < promised, "numbered as the store was");
        let calendar = Arc::new(config.load_calendar().expect("calendar"));
        let view = View::new(&config, Arc::new(rules), calendar);
        let listed = view.rule_lights(&[(decision, Light::Red), (promised, Light::Green)]);
        assert_eq!(
            listed,
            [
                json!({"rule": "xz.promised", "light": "green"}),
                json!({"rule": "xk.decision", "light": "red"}),
            ],
            "xz.toml is listed before xk.toml now"
        );
    }

    #[test]
    fn the_department_byte_search_finds_exactly_the_stored_pair() {
        let case = |dept: &str| -> Vec<u8> {
            let json = format!(
                r#"{{"id":"A","data":[["department",{dept}],["item","市住建局窗口"]],"seen":[],"types":0,"first_event":0,"last_event":0,"withdrawn":false,"clocks":[],"stages":[],"violations":[],"duties":[]}}"#
            );
            let c: Case = serde_json::from_str(&json).expect("parse");
            crate::store::encode_case(&c).expect("encode")
        };
        let f = department_bytes("市住建局").expect("a plain name is searched");
        assert!(f.find(&case("\"市住建局\"")).is_some());
        // Another department, or the name only inside another field: ruled out.
        assert!(f.find(&case("\"市交通局\"")).is_none());
        assert!(f.find(&case("\"市住建局（分局）\"")).is_none());
        // A long name (another string header in MessagePack) is found too.
        let long = "某某市某某区行政审批服务管理局第一分局综合窗口";
        let f = department_bytes(long).expect("searched");
        assert!(f.find(&case(&format!("\"{long}\""))).is_some());
        // Texts a non-string value shows as, and the no-department label: never searched.
        assert!(department_bytes("7").is_none());
        assert!(department_bytes("true").is_none());
        assert!(department_bytes(NO_DEPARTMENT).is_none());
    }

    /// The views' own decoding of a stored case gives what reducing the whole decoded
    /// `Case` gives: for every state of every case of the sample events (after each event,
    /// and after the deadlines fired), and for data values of every kind.
    #[test]
    fn a_stored_case_decodes_straight_to_what_the_whole_case_gives() {
        let mut states = crate::engine::sample_case_states();
        let json = r#"{"id":"A","data":[["big",{"x":[1,2,3]}],["department","市住建局"],["handler",true],["item",7.5],["note",null]],"seen":[1,2,3],"types":5,"first_event":0,"last_event":0,"withdrawn":true,"clocks":[],"stages":[],"violations":[],"duties":[]}"#;
        states.push(serde_json::from_str(json).expect("parse"));
        let kinds = |pred: fn(&Case) -> bool| states.iter().filter(|c| pred(c)).count();
        // The samples reach the states the views tell apart.
        assert!(kinds(|c| c.clocks.iter().any(|k| k.since.is_none() && k.active())) > 0);
        assert!(kinds(|c| c.clocks.iter().any(|k| k.red_fired)) > 0);
        assert!(
            kinds(|c| c
                .clocks
                .iter()
                .any(|k| matches!(k.mode, Mode::Fixed { .. })))
                > 0
        );
        assert!(kinds(|c| !c.violations.is_empty()) > 0);
        assert!(kinds(|c| c.duties.iter().any(|d| !d.missing.is_empty())) > 0);
        for case in &states {
            let bytes = crate::store::encode_case(case).expect("encode");
            let lite = stored::decode(&bytes).expect("decodes");
            assert_eq!(
                format!("{lite:?}"),
                format!("{:?}", CaseLite::from(case)),
                "case {}",
                case.id
            );
        }
        assert!(states.len() > 40, "{} states", states.len());
    }

    #[test]
    fn lite_data_keeps_three_fields_as_text() {
        let json = r#"{"id":"A","data":[["big",{"x":[1,2,3]}],["department","市住建局"],["handler","张三"],["item",7],["note",null]],"seen":[1,2,3],"types":5,"first_event":0,"last_event":0,"withdrawn":false,"clocks":[],"stages":[],"violations":[],"duties":[]}"#;
        let case: Case = serde_json::from_str(json).expect("parse");
        // Through the store's encoding, as the views read it.
        let bytes = crate::store::encode_case(&case).expect("encode");
        let c = read_lite(&RuleSet::default(), "t", 0, "A", &bytes).expect("readable");
        assert_eq!(c.data.department.as_deref(), Some("市住建局"));
        assert_eq!(c.data.handler.as_deref(), Some("张三"));
        assert_eq!(c.data.item.as_deref(), Some("7"));
        assert!(!c.judge().open);
        assert!(read_lite(&RuleSet::default(), "t", 0, "A", &bytes[..bytes.len() / 2]).is_none());
    }

    /// A yellow clock whose deadline waits for next year's calendar data is listed after
    /// every clock with a deadline (the board says why), and is no case's next deadline.
    #[test]
    fn a_pending_deadline_is_listed_last_and_is_no_next_deadline() {
        let yellow = |rule: u16, deadline: Option<i64>| LiteClock {
            rule,
            started: 1_000,
            mode: None,
            since: Some(1_000),
            deadline,
            last_deadline: None,
            yellow_fired: true,
            red_fired: false,
            stopped: None,
        };
        let j = judge(false, &[yellow(0, None)], &[], &[]);
        assert_eq!(j.light, Light::Yellow);
        assert_eq!(j.urgent, Some((Cause::Clock, 0, DEADLINE_PENDING)));
        assert_eq!(j.next_deadline, None);
        let j = judge(false, &[yellow(0, None), yellow(1, Some(5_000))], &[], &[]);
        assert_eq!(j.urgent, Some((Cause::Clock, 1, 5_000)));
        assert_eq!(j.next_deadline, Some(5_000));
    }

    #[test]
    fn the_most_urgent_are_kept_and_only_they_are_built() {
        let mut s = Smallest::new(5);
        let mut built = 0;
        for i in 0..1000i64 {
            let at = (i * 7919) % 1000;
            s.offer(at, || {
                built += 1;
                Listed {
                    id: format!("C{at}"),
                    department: String::new(),
                    item: None,
                    handler: None,
                    light: Light::Red,
                    cause: Cause::Clock,
                    rule: 0,
                    at,
                    detail: None,
                    unit: None,
                }
            });
        }
        let kept: Vec<i64> = s.done().iter().map(|l| l.at).collect();
        assert_eq!(kept, vec![0, 1, 2, 3, 4]);
        assert!(built < 200, "built {built}");
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = encode_cursor("t", 3, "案件-1");
        assert_eq!(
            decode_cursor(&c).expect("cursor"),
            ("t".to_string(), 3, "案件-1".to_string())
        );
        assert!(decode_cursor("zz").is_err());
        assert!(decode_cursor("abc").is_err());
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
