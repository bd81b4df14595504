//! The admin listener: `/metrics`, `/healthz`, `/readyz` (the pre-warm
//! gate), and the admin API behind a bearer token: purge, warm, hot keys
//! (shown without their query strings unless `?with_query=1`).
//!
//! The token is checked by a route layer, before any handler's extractor
//! reads the body: without the token a caller gets 401 (403 with the API
//! off) whatever its body, and never makes the gateway buffer it.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{Method, Request, Uri};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use stampede_layer::store::tags;
use stampede_layer::store::{CacheKey, PurgeMode};
use stampede_layer::{HotKeys, SharedStore};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tower::ServiceExt;

/// Shared state of the admin listener.
#[derive(Clone)]
pub struct AdminState {
    /// Prometheus exporter handle.
    pub metrics: PrometheusHandle,
    /// The store (purge).
    pub store: SharedStore,
    /// The stack (warm goes through it, so warming is coordinated too).
    pub stack: crate::Stack,
    /// Hot-key report.
    pub hot_keys: HotKeys,
    /// Admin bearer token; `None` disables the admin API.
    pub token: Option<Arc<str>>,
    /// Set once the warm list is loaded.
    pub ready: Arc<AtomicBool>,
    /// Set when shutdown begins: `/readyz` answers 503 `draining` from then on.
    pub draining: Arc<AtomicBool>,
    /// Whether a degraded store (Redis unreachable) makes `/readyz` 503.
    pub readyz_requires_store: bool,
    /// How long a soft purge keeps entries answerable stale (the gateway's
    /// `--stale-ttl`, at least 1 s).
    pub soft_purge_grace: Duration,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/admin/purge", post(purge))
        .route("/admin/warm", post(warm))
        .route("/admin/hot-keys", get(hot_keys))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(api)
        .with_state(state)
}

/// Route layer of the admin API: the token first, the handler (and its body
/// extractor) only after.
async fn require_token(State(s): State<AdminState>, req: Request<Body>, next: Next) -> Response {
    match authorize(&s, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => *refusal,
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

/// 503 `warming` until the warm list is loaded; then `ready`, or, while the
/// shared store cannot be reached, `ready (degraded …)` (503 `degraded …`
/// with `--readyz-requires-redis`); 503 `draining` once shutdown began.
async fn readyz(State(s): State<AdminState>) -> Response {
    const DEGRADED: &str = "degraded: the shared store (Redis) cannot be reached; serving from the in-process fallback, coordination is per instance\n";
    if s.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !s.ready.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "warming\n").into_response()
    } else if !s.store.is_degraded() {
        (StatusCode::OK, "ready\n").into_response()
    } else if s.readyz_requires_store {
        (StatusCode::SERVICE_UNAVAILABLE, DEGRADED).into_response()
    } else {
        (
            StatusCode::OK,
            format!("ready ({})", DEGRADED.trim_end()) + "\n",
        )
            .into_response()
    }
}

/// A refusal, already rendered (boxed: a `Response` is large).
type Refusal = Box<Response>;

fn authorize(s: &AdminState, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(token) = &s.token else {
        return Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                "admin API disabled: start the gateway with --admin-token or STAMPEDE_ADMIN_TOKEN\n",
            )
                .into_response(),
        ));
    };
    if bearer(headers).is_some_and(|given| token_matches(given, token)) {
        Ok(())
    } else {
        Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token\n",
            )
                .into_response(),
        ))
    }
}

/// The credentials of an `Authorization: Bearer …` header (the scheme is
/// case-insensitive, RFC 9110 §11.1).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

/// Constant-time in the token's content (`subtle`); only its length can show.
fn token_matches(given: &[u8], token: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.ct_eq(token.as_bytes()).into()
}

/// Body of purge and warm: the paths (with query) to act on.
#[derive(Debug, Deserialize)]
pub struct Paths {
    /// e.g. `["/items/1", "/items/2?x=1"]`.
    pub paths: Vec<String>,
}

fn parse_paths(paths: &[String]) -> Result<Vec<Uri>, Refusal> {
    paths
        .iter()
        .map(|p| {
            p.parse::<Uri>()
                .ok()
                .filter(|u| u.scheme().is_none() && p.starts_with('/'))
                .ok_or_else(|| {
                    Box::new(
                        (StatusCode::BAD_REQUEST, format!("not a path: {p:?}\n")).into_response(),
                    )
                })
        })
        .collect()
}

/// Body of a purge: exact paths (with query), origin tags (`Surrogate-Key`,
/// `Cache-Tag`), path prefixes (ending at a `/`), hard (default) or soft.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// e.g. `["/items/1", "/items/2?x=1"]`.
    #[serde(default)]
    pub paths: Vec<String>,
    /// e.g. `["product-42"]`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// e.g. `["/items/"]`: every entry whose path starts with it.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Mark the entries stale (served stale while one refresh runs) instead
    /// of removing them.
    #[serde(default)]
    pub soft: bool,
}

fn bad_request(text: String) -> Refusal {
    Box::new((StatusCode::BAD_REQUEST, text + "\n").into_response())
}

/// Purge `paths`, `tags` and `prefixes`, hard or `soft`: answers how many
/// entries it hit (`purged`: held, and removed or marked stale; per tag and
/// prefix under `tags` and `prefixes`), how many keys were fenced (`fenced`:
/// every path, held or not, and every key a tag's index listed, so a fill in
/// flight cannot undo the purge), and — 503 — what the shared store did not
/// take (`failed`: Redis unreachable; the purge reached this gateway only).
/// 400 names the path, tag or prefix it cannot purge, and why.
async fn purge(State(s): State<AdminState>, Json(body): Json<PurgeRequest>) -> Response {
    let uris = match parse_paths(&body.paths) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    if let Some(bad) = body.tags.iter().find(|t| !tags::is_valid_tag(t)) {
        return *bad_request(format!(
            "not a tag: {bad:?} (1 to {} bytes of visible ASCII, no space or comma)",
            tags::MAX_TAG_BYTES
        ));
    }
    let mut prefixes = Vec::new();
    for p in &body.prefixes {
        match tags::normalise_prefix(p) {
            Ok(normal) => prefixes.push((p, normal)),
            Err(why) => return *bad_request(format!("not a prefix: {p:?}: {why}")),
        }
    }
    let mode = if body.soft {
        PurgeMode::Soft {
            grace: s.soft_purge_grace,
        }
    } else {
        PurgeMode::Hard
    };
    let (mut purged, mut fenced, mut failed) = (0u64, 0usize, Vec::new());
    for (uri, path) in uris.iter().zip(&body.paths) {
        match s.store.purge(&CacheKey::new(&Method::GET, uri), mode).await {
            Ok(held) => {
                fenced += 1;
                purged += u64::from(held);
            }
            Err(err) => {
                tracing::warn!(path, error = %err, "purge failed");
                failed.push(path.clone());
            }
        }
    }
    let by_tag = body.tags.iter().map(|t| (t, t.clone()));
    let by_prefix = prefixes.iter().map(|(p, n)| (*p, tags::prefix_tag(n)));
    let (mut tag_hits, mut prefix_hits) = (BTreeMap::new(), BTreeMap::new());
    for (is_tag, (name, tag)) in by_tag
        .map(|t| (true, t))
        .chain(by_prefix.map(|p| (false, p)))
    {
        match s.store.purge_tag(&tag, mode).await {
            Ok(done) => {
                fenced += done.keys.len();
                purged += done.hit;
                let hits = if is_tag {
                    &mut tag_hits
                } else {
                    &mut prefix_hits
                };
                hits.insert(name.clone(), done.hit);
            }
            Err(err) => {
                tracing::warn!(tag = name, error = %err, "purge failed");
                failed.push(name.clone());
            }
        }
    }
    tracing::info!(
        purged,
        fenced,
        soft = body.soft,
        failed = failed.len(),
        "purge"
    );
    let body = serde_json::json!({
        "purged": purged,
        "fenced": fenced,
        "failed": failed,
        "soft": body.soft,
        "tags": tag_hits,
        "prefixes": prefix_hits,
    });
    if failed.is_empty() {
        Json(body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn warm(State(s): State<AdminState>, Json(body): Json<Paths>) -> Response {
    let uris = match parse_paths(&body.paths) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let report = warm_paths(&s.stack, uris).await;
    Json(report).into_response()
}

/// `GET /admin/hot-keys[?with_query=1]`.
#[derive(Debug, Default, Deserialize)]
pub struct HotKeysParams {
    /// `1` or `true`: show each key's query string too (off by default:
    /// queries carry tokens, and this list ends up in tickets and chats).
    pub with_query: Option<String>,
}

async fn hot_keys(
    State(s): State<AdminState>,
    axum::extract::Query(params): axum::extract::Query<HotKeysParams>,
) -> Response {
    let with_query = matches!(params.with_query.as_deref(), Some("1" | "true"));
    Json(serde_json::json!({ "hot_keys": hot_key_report(s.hot_keys.top(), with_query) }))
        .into_response()
}

/// The hot keys as the admin API shows them: `key` (`GET /path`) without
/// its query string unless `with_query`, and `query_redacted: true` on the
/// keys that had one.
pub fn hot_key_report(
    top: Vec<stampede_layer::telemetry::HotKey>,
    with_query: bool,
) -> Vec<serde_json::Value> {
    top.into_iter()
        .map(|k| {
            let cut = if with_query { None } else { k.key.find('?') };
            match cut {
                None => serde_json::json!({
                    "key": k.key,
                    "requests_per_second": k.requests_per_second,
                }),
                Some(at) => serde_json::json!({
                    "key": &k.key[..at],
                    "requests_per_second": k.requests_per_second,
                    "query_redacted": true,
                }),
            }
        })
        .collect()
}

/// What a warm run did.
#[derive(Debug, Default, serde::Serialize)]
pub struct WarmReport {
    /// Paths answered 2xx (now cached, or already were).
    pub warmed: usize,
    /// Paths that failed, with the status or error.
    pub failed: Vec<(String, String)>,
}

/// Send a GET for each path through the stack (8 at a time), filling the cache.
pub async fn warm_paths(stack: &crate::Stack, uris: Vec<Uri>) -> WarmReport {
    use futures_util::StreamExt;
    let results: Vec<(String, Result<StatusCode, String>)> =
        futures_util::stream::iter(uris.into_iter().map(|uri| {
            let svc = stack.clone();
            async move {
                let req = Request::get(uri.clone())
                    .body(Body::empty())
                    .expect("valid request");
                let res = svc
                    .oneshot(req)
                    .await
                    .map(|r| r.status())
                    .map_err(|e| e.to_string());
                (uri.to_string(), res)
            }
        }))
        .buffer_unordered(8)
        .collect()
        .await;
    let mut report = WarmReport::default();
    for (path, res) in results {
        match res {
            Ok(s) if s.is_success() => report.warmed += 1,
            Ok(s) => report.failed.push((path, s.to_string())),
            Err(e) => report.failed.push((path, e)),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_keys_hide_their_query_unless_asked() {
        use stampede_layer::telemetry::HotKey;
        let top = || {
            vec![
                HotKey {
                    key: "GET /items/1?token=s3cret&x=1".into(),
                    requests_per_second: 9.5,
                },
                HotKey {
                    key: "GET /items/2".into(),
                    requests_per_second: 1.0,
                },
            ]
        };
        let shown = serde_json::to_string(&hot_key_report(top(), false)).unwrap();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            hot_key_report(top(), false),
            [
                serde_json::json!({"key": "GET /items/1", "requests_per_second": 9.5, "query_redacted": true}),
                serde_json::json!({"key": "GET /items/2", "requests_per_second": 1.0}),
            ]
        );
        let all = serde_json::to_string(&hot_key_report(top(), true)).unwrap();
        assert!(all.contains("token=s3cret"), "{all}");
        assert!(!all.contains("query_redacted"), "{all}");
    }

    #[test]
    fn purge_bodies() {
        let parse = |s: &str| serde_json::from_str::<PurgeRequest>(s);
        let p = parse(r#"{"paths":["/a"]}"#).unwrap();
        assert_eq!((p.paths.len(), p.tags.len(), p.soft), (1, 0, false));
        let p = parse(r#"{"tags":["t"],"prefixes":["/x/"],"soft":true}"#).unwrap();
        assert!(p.paths.is_empty() && p.soft);
        assert!(parse(r#"{"tag":["t"]}"#).is_err(), "a typo is refused");
    }

    #[test]
    fn bearer_tokens() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, v.parse().unwrap());
            m
        };
        assert_eq!(bearer(&h("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&h("bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&h("Basic abc")), None);
        assert_eq!(bearer(&h("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
        assert!(token_matches(b"abc", "abc"));
        assert!(!token_matches(b"abd", "abc"));
        assert!(!token_matches(b"abcd", "abc"));
        assert!(!token_matches(b"", "abc"));
    }
}
