//! Liveness, readiness and Prometheus metrics, plus the per-request metrics middleware.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tracing::Instrument;

use crate::metrics::{RequestLabels, RouteLabels};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(get_health))
        .route("/readyz", get(get_ready))
        .route("/metrics", get(get_metrics))
}

async fn get_health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers and, with replicas, the events listener is in sync (a replica
/// that is not would serve every token request from the database: take it out of the balancer).
/// Not ready either while a shutdown drains this replica.
async fn get_ready(State(state): State<AppState>) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": "draining"})),
        )
            .into_response();
    }
    match state.store.ping().await {
        Ok(()) if state.listener.as_ref().is_some_and(|l| !l.trusted()) => {
            tracing::warn!("readiness check failed: events listener not in sync");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "reason": "events_listener"})),
            )
                .into_response()
        }
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "reason": "database"})),
            )
                .into_response()
        }
    }
}

async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.metrics;
    m.sessions
        .set(i64::try_from(state.link.session_count()).unwrap_or(i64::MAX));
    if let Some(l) = &state.listener {
        m.events_lag_ms
            .set(i64::try_from(l.lag().as_millis()).unwrap_or(i64::MAX));
        m.events_reconnects
            .set(i64::try_from(l.reconnects()).unwrap_or(i64::MAX));
    }
    m.replica
        .get_or_create(&crate::metrics::ReplicaLabels {
            replica: state.replica_id.clone(),
            backend: if state.store.shared() {
                "postgres"
            } else {
                "sqlite"
            }
            .to_owned(),
        })
        .set(1);
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// A request id unique within this process: a random prefix chosen at start and a counter, so
/// making one costs no system call on the token endpoint's hot path.
fn request_id() -> String {
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| u32::from_be_bytes(tether_domain::random_bytes::<4>()));
    format!("{prefix:08x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

const OTHER: &str = "other";

/// The method as a metrics label and log field: one of the standard ones, else `other` (a client
/// may send any token as a method).
fn metric_method(method: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|k| *k == method.as_str())
        .unwrap_or(OTHER)
}

/// Counts and times every request by its route template (never the raw path, which could carry
/// a runner name per request and blow up label cardinality), runs it in a `request` span
/// (method, route, request id) so every log line it causes — an internal error's too — names the
/// route, and answers the id in `x-request-id`.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    // No label value comes from the client: an unknown method or an unmatched path is `other`.
    let method = metric_method(req.method()).to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| OTHER.to_owned(), |p| p.as_str().to_owned());
    let id = request_id();
    let span = tracing::info_span!("request", http.method = %method, http.route = %route, request.id = %id);
    let mut response = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(
            http.status = status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request handled"
        );
    });
    response
}
