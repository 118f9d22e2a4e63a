//! The runner's own Prometheus metrics (`--metrics-listen`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

#[derive(Debug, Default)]
pub struct RunnerMetrics {
    connected: AtomicBool,
    active_tasks: AtomicU32,
    last_heartbeat_unix: AtomicI64,
}

impl RunnerMetrics {
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    /// Whether a session is up (welcomed) now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn set_active_tasks(&self, n: u32) {
        self.active_tasks.store(n, Ordering::Relaxed);
    }

    pub fn active_tasks(&self) -> u32 {
        self.active_tasks.load(Ordering::Relaxed)
    }

    pub fn heartbeat_sent(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.last_heartbeat_unix.store(now, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        format!(
            "# HELP tether_runner_connected Whether this instance has a live session with the control plane.\n\
             # TYPE tether_runner_connected gauge\n\
             tether_runner_connected {}\n\
             # HELP tether_runner_active_tasks Tasks running on this instance.\n\
             # TYPE tether_runner_active_tasks gauge\n\
             tether_runner_active_tasks {}\n\
             # HELP tether_runner_last_heartbeat_timestamp_seconds When the last heartbeat was sent (unix time).\n\
             # TYPE tether_runner_last_heartbeat_timestamp_seconds gauge\n\
             tether_runner_last_heartbeat_timestamp_seconds {}\n",
            u8::from(self.connected.load(Ordering::Relaxed)),
            self.active_tasks(),
            self.last_heartbeat_unix.load(Ordering::Relaxed),
        )
    }
}

/// Serves `/metrics` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<RunnerMetrics>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(listen = %listener.local_addr()?, "serving runner metrics at /metrics");
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
        }),
    );
    axum::serve(listener, app).await?;
    Ok(())
}
