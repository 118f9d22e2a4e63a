//! Prometheus metrics for `/metrics`: HTTP request counts and latency by route, and OAuth tokens
//! issued and refused.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub replica: String,
    pub backend: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~1.6 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub tokens_issued: Counter,
    pub tokens_refused: Family<ReasonLabels, Counter>,
    pub tasks_assigned: Counter,
    /// Live runner sessions held by this process (set when rendered).
    pub sessions: Gauge,
    /// With replicas: how long ago the point the events listener is known to be in sync up to
    /// was (the send time of its newest own ping processed), in ms (set when rendered; 0 on a
    /// single process).
    pub events_lag_ms: Gauge,
    /// With replicas: how often the events listener had to reconnect (and resync).
    pub events_reconnects: Gauge,
    /// Which replica this is (value 1).
    pub replica: Family<ReplicaLabels, Gauge>,
    /// Open HTTP connections, upgraded runner sessions included.
    pub http_connections: Gauge,
    /// Times the listener found every connection permit taken and stopped accepting.
    pub http_connection_limit_reached: Counter,
    /// Connections closed by the header-read timeout (kept-alive ones left unused included) or
    /// the idle timeout.
    pub http_connections_timed_out: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tether");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let tokens_issued = Counter::default();
        let tokens_refused = Family::<ReasonLabels, Counter>::default();
        let tasks_assigned = Counter::default();
        let sessions = Gauge::default();
        let events_lag_ms = Gauge::default();
        let events_reconnects = Gauge::default();
        let replica = Family::<ReplicaLabels, Gauge>::default();
        let http_connections = Gauge::default();
        let http_connection_limit_reached = Counter::default();
        let http_connections_timed_out = Counter::default();
        registry.register(
            "http_connections",
            "Open HTTP connections, upgraded runner sessions included",
            http_connections.clone(),
        );
        registry.register(
            "http_connection_limit_reached",
            "Times every connection permit was taken (--max-connections) and accepting paused",
            http_connection_limit_reached.clone(),
        );
        registry.register(
            "http_connections_timed_out",
            "Connections closed by the header-read timeout (kept-alive ones left unused included) or the idle timeout",
            http_connections_timed_out.clone(),
        );
        registry.register(
            "sessions",
            "Live runner sessions held by this replica",
            sessions.clone(),
        );
        registry.register(
            "events_lag_milliseconds",
            "How far behind this replica's events listener is known to be at most (age of the newest of its own pings it has processed)",
            events_lag_ms.clone(),
        );
        registry.register(
            "events_listener_reconnects",
            "Times this replica's events listener reconnected and resynced",
            events_reconnects.clone(),
        );
        registry.register(
            "replica",
            "This process among the replicas of its database (value 1)",
            replica.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            latency.clone(),
        );
        registry.register(
            "oauth_tokens_issued",
            "Access tokens issued at /oauth/token",
            tokens_issued.clone(),
        );
        registry.register(
            "oauth_tokens_refused",
            "Token requests refused at /oauth/token, by reason",
            tokens_refused.clone(),
        );
        registry.register(
            "tasks_assigned",
            "Pipeline tasks handed to runner instances",
            tasks_assigned.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            latency,
            tokens_issued,
            tokens_refused,
            tasks_assigned,
            sessions,
            events_lag_ms,
            events_reconnects,
            replica,
            http_connections,
            http_connection_limit_reached,
            http_connections_timed_out,
        }
    }
}

impl Metrics {
    pub fn refused(&self, reason: &str) {
        self.tokens_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            tracing::error!("failed to encode metrics");
        }
        out
    }
}
