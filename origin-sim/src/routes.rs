//! HTTP handlers.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{Config, MAX_LATENCY_MS, check_error_rate};
use crate::db::{self, Database, Item};
use crate::stats::{QueryFilter, QueryLog, QueryRecord};
use crate::telemetry::{
    INFLIGHT_QUERIES, POOL_WAIT_SECONDS, QUERIES_TOTAL, QUERY_DURATION_SECONDS, WRITES_TOTAL,
};

/// The knobs `PUT /admin/config` can turn while running.
#[derive(Debug, Clone, Copy, Serialize)]
struct Runtime {
    latency_ms: u64,
    error_rate: f64,
}

/// Shared state of one origin.
pub(crate) struct AppState {
    db: Database,
    items: u32,
    db_connections: u32,
    stats_capacity: usize,
    cache_control: Option<HeaderValue>,
    validators: bool,
    runtime: RwLock<Runtime>,
    stats: QueryLog,
    metrics: PrometheusHandle,
}

impl AppState {
    pub(crate) fn new(
        config: &Config,
        db: Database,
        metrics: PrometheusHandle,
    ) -> anyhow::Result<Self> {
        let cache_control = config
            .cache_control
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()?;
        Ok(Self {
            db,
            items: config.items,
            db_connections: config.db_connections,
            stats_capacity: config.stats_capacity,
            cache_control,
            validators: config.validators,
            runtime: RwLock::new(Runtime {
                latency_ms: config.latency_ms,
                error_rate: config.error_rate,
            }),
            stats: QueryLog::new(config.stats_capacity),
            metrics,
        })
    }

    fn runtime(&self) -> Runtime {
        *self.runtime.read().unwrap_or_else(|p| p.into_inner())
    }

    fn config_json(&self) -> serde_json::Value {
        let rt = self.runtime();
        json!({
            "latency_ms": rt.latency_ms,
            "error_rate": rt.error_rate,
            "items": self.items,
            "db_connections": self.db_connections,
            "cache_control": self.cache_control.as_ref().and_then(|v| v.to_str().ok()),
            "validators": self.validators,
            "stats_capacity": self.stats_capacity,
        })
    }
}

/// The router over a ready state.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/items/{id}", get(get_item).put(put_item))
        .route("/stats/queries", get(get_stats).delete(reset_stats))
        .route("/admin/config", get(get_config).put(put_config))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn error_json(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Holds `origin_inflight_queries` up while alive (also when the task is
/// cancelled, e.g. at shutdown).
struct Inflight;

impl Inflight {
    fn enter() -> Self {
        gauge!(INFLIGHT_QUERIES).increment(1.0);
        Self
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        gauge!(INFLIGHT_QUERIES).decrement(1.0);
    }
}

/// A JSON answer and the bytes of its body.
fn json_answer(status: StatusCode, body: &serde_json::Value) -> (Response, u64) {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let bytes = body.len() as u64;
    let resp = (status, [(header::CONTENT_TYPE, "application/json")], body);
    (resp.into_response(), bytes)
}

/// An item answer (200, 304, 404): `Cache-Control` when configured.
fn item_answer(state: &AppState, (mut resp, bytes): (Response, u64)) -> (Response, u64) {
    if let Some(cc) = &state.cache_control {
        resp.headers_mut().insert(header::CACHE_CONTROL, cc.clone());
    }
    (resp, bytes)
}

fn not_found(state: &AppState, id: Option<i64>) -> (Response, u64) {
    let body = json!({ "error": "not found", "id": id });
    item_answer(state, json_answer(StatusCode::NOT_FOUND, &body))
}

/// What an answer was: its status and the bytes of body sent.
struct Sent(StatusCode, u64);

/// Metrics and the stats log for one finished item query.
fn finish(
    state: &AppState,
    t_ms: u64,
    start: Instant,
    id: Option<i64>,
    sent: Sent,
    pool_wait: Duration,
) {
    let elapsed = start.elapsed();
    let Sent(status, bytes) = sent;
    let label = match status.as_u16() {
        200 => "200",
        304 => "304",
        404 => "404",
        _ => "500",
    };
    counter!(QUERIES_TOTAL, "status" => label).increment(1);
    histogram!(QUERY_DURATION_SECONDS, "status" => label).record(elapsed.as_secs_f64());
    state.stats.push(QueryRecord {
        t_ms,
        id,
        status: status.as_u16(),
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        pool_wait_ms: u64::try_from(pool_wait.as_millis()).unwrap_or(u64::MAX),
        bytes,
    });
}

/// The conditional headers of a GET (`If-None-Match`, `If-Modified-Since`),
/// and whether it was a HEAD (no body is sent).
struct Conditions {
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    head: bool,
}

impl Conditions {
    fn of(method: &Method, headers: &HeaderMap) -> Self {
        let get = |h| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        Self {
            if_none_match: get(header::IF_NONE_MATCH),
            if_modified_since: get(header::IF_MODIFIED_SINCE),
            head: method == Method::HEAD,
        }
    }
}

/// The validators of one item version (`--validators`): a strong `ETag` from
/// id and version, and `Last-Modified` from when the version was written.
struct Validators {
    etag: String,
    /// Seconds since the Unix epoch (HTTP dates have a resolution of one second).
    last_modified: Option<u64>,
}

impl Validators {
    fn of(item: &Item) -> Self {
        let secs = u64::try_from(item.modified_ms / 1000)
            .ok()
            .filter(|s| *s > 0);
        Self {
            etag: format!("\"{}-{}\"", item.id, item.version),
            last_modified: secs,
        }
    }

    /// Whether the client already has this version (RFC 9110 §13.2.2):
    /// `If-None-Match` (weak comparison, `*` matches any) decides when
    /// present; otherwise `If-Modified-Since`, when it is a valid date.
    fn not_modified(&self, c: &Conditions) -> bool {
        if let Some(tags) = &c.if_none_match {
            let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
            return tags
                .split(',')
                .any(|t| t.trim() == "*" || opaque(t) == self.etag);
        }
        let since = c
            .if_modified_since
            .as_deref()
            .and_then(|d| httpdate::parse_http_date(d).ok());
        let since = since
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        matches!((self.last_modified, since), (Some(m), Some(s)) if m <= s)
    }

    fn insert(&self, resp: &mut Response) {
        let h = resp.headers_mut();
        h.insert(
            header::ETAG,
            HeaderValue::from_str(&self.etag).expect("digits and quotes"),
        );
        if let Some(secs) = self.last_modified {
            let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            h.insert(
                header::LAST_MODIFIED,
                HeaderValue::from_str(&date).expect("an HTTP date"),
            );
        }
    }
}

/// `GET /items/{id}` (and `HEAD`).
async fn get_item(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let t_ms = now_ms();
    let start = Instant::now();
    let conditions = Conditions::of(&method, &headers);
    let Ok(id) = raw.parse::<i64>() else {
        // Not an integer: refused before touching the database (as a real
        // origin's routing would), yet counted and logged with `id: null`.
        let (resp, bytes) = not_found(&state, None);
        let sent = Sent(
            StatusCode::NOT_FOUND,
            if conditions.head { 0 } else { bytes },
        );
        finish(&state, t_ms, start, None, sent, Duration::ZERO);
        return resp;
    };
    // The query runs detached from the client's future: a client that gives
    // up (timeout, retry) does not cancel work a real database would finish
    // anyway. That is what keeps a saturated origin pinned under retry storms.
    let task_state = Arc::clone(&state);
    match tokio::spawn(query_item(task_state, id, conditions, t_ms, start)).await {
        Ok(resp) => resp,
        Err(e) => error_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("query task: {e}"),
        ),
    }
}

async fn query_item(
    state: Arc<AppState>,
    id: i64,
    conditions: Conditions,
    t_ms: u64,
    start: Instant,
) -> Response {
    let inflight = Inflight::enter();
    let acquired = state.db.pool.acquire().await;
    let pool_wait = start.elapsed();
    histogram!(POOL_WAIT_SECONDS).record(pool_wait.as_secs_f64());

    let outcome: Result<Option<Item>, String> = match acquired {
        Err(e) => Err(format!("database pool: {e}")),
        Ok(mut conn) => {
            let result = db::select_item(&mut conn, id, state.items).await;
            let rt = state.runtime();
            // Hold the connection for the configured latency: with the pool
            // full, later requests queue in `acquire` and latency grows.
            tokio::time::sleep(Duration::from_millis(rt.latency_ms)).await;
            drop(conn);
            match result {
                Err(e) => Err(format!("database query: {e}")),
                Ok(_) if rt.error_rate > 0.0 && rand::random::<f64>() < rt.error_rate => {
                    Err("injected error".to_owned())
                }
                Ok(item) => Ok(item),
            }
        }
    };
    drop(inflight);

    let (resp, bytes) = match outcome {
        Ok(Some(item)) => {
            let validators = state.validators.then(|| Validators::of(&item));
            let (mut resp, bytes) = match &validators {
                Some(v) if v.not_modified(&conditions) => {
                    item_answer(&state, (StatusCode::NOT_MODIFIED.into_response(), 0))
                }
                _ => item_answer(&state, json_answer(StatusCode::OK, &json!(item))),
            };
            if let Some(v) = &validators {
                v.insert(&mut resp);
            }
            (resp, bytes)
        }
        Ok(None) => not_found(&state, Some(id)),
        Err(message) => {
            if message != "injected error" {
                tracing::warn!(id, "{message}");
            }
            let body = json!({ "error": message, "id": id });
            json_answer(StatusCode::INTERNAL_SERVER_ERROR, &body)
        }
    };
    let sent = Sent(resp.status(), if conditions.head { 0 } else { bytes });
    finish(&state, t_ms, start, Some(id), sent, pool_wait);
    resp
}

/// `PUT /items/{id}`: bump the version.
async fn put_item(State(state): State<Arc<AppState>>, Path(raw): Path<String>) -> Response {
    let Ok(id) = raw.parse::<i64>() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "not found", "id": null })),
        )
            .into_response();
    };
    // Detached like reads: a started write completes.
    let task = tokio::spawn(async move {
        let mut conn = state.db.pool.acquire().await?;
        db::bump_item(&mut conn, id, state.items).await
    });
    match task.await {
        Ok(Ok(Some(item))) => {
            counter!(WRITES_TOTAL).increment(1);
            (StatusCode::OK, Json(json!(item))).into_response()
        }
        Ok(Ok(None)) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "not found", "id": id })),
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::warn!(id, "write failed: {e}");
            error_json(StatusCode::INTERNAL_SERVER_ERROR, format!("database: {e}"))
        }
        Err(e) => error_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("write task: {e}"),
        ),
    }
}

/// `GET /stats/queries[?since_ms=…&id=…]`.
async fn get_stats(
    State(state): State<Arc<AppState>>,
    filter: Result<Query<QueryFilter>, QueryRejection>,
) -> Response {
    let filter = match filter {
        Ok(Query(f)) => f,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let queries = state.stats.snapshot(filter);
    Json(json!({ "queries": queries })).into_response()
}

/// `DELETE /stats/queries`.
async fn reset_stats(State(state): State<Arc<AppState>>) -> StatusCode {
    state.stats.clear();
    StatusCode::NO_CONTENT
}

/// Body of `PUT /admin/config`: any subset of the run-time knobs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigPatch {
    latency_ms: Option<u64>,
    error_rate: Option<f64>,
}

/// `GET /admin/config`.
async fn get_config(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(state.config_json())
}

/// `PUT /admin/config`.
async fn put_config(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let patch: ConfigPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    if let Some(ms) = patch.latency_ms
        && ms > MAX_LATENCY_MS
    {
        return error_json(
            StatusCode::BAD_REQUEST,
            format!("latency_ms must be at most {MAX_LATENCY_MS}"),
        );
    }
    if let Some(rate) = patch.error_rate
        && let Err(e) = check_error_rate(rate)
    {
        return error_json(StatusCode::BAD_REQUEST, e.to_string());
    }
    {
        let mut rt = state.runtime.write().unwrap_or_else(|p| p.into_inner());
        if let Some(ms) = patch.latency_ms {
            rt.latency_ms = ms;
        }
        if let Some(rate) = patch.error_rate {
            rt.error_rate = rate;
        }
        tracing::info!(
            latency_ms = rt.latency_ms,
            error_rate = rt.error_rate,
            "run-time config changed"
        );
    }
    Json(state.config_json()).into_response()
}

/// `GET /metrics`.
async fn render_metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /healthz`.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}
