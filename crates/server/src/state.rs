//! Shared application state handed to every handler.

use std::sync::Arc;

use tether_domain::Pepper;
use tether_store::Store;

use crate::config::ServerConfig;
use crate::events::EventBus;
use crate::jwt::TokenSigner;
use crate::memory::clients::ClientCache;
use crate::memory::revoked::RevokedTokens;
use crate::memory::usage::UsageTracker;
use crate::metrics::Metrics;
use crate::runner_link::RunnerLink;

#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub config: ServerConfig,
    pub store: Arc<dyn Store>,
    pub signer: TokenSigner,
    pub pepper: Pepper,
    /// Read by the token endpoint; changed only through `events`.
    pub clients: Arc<ClientCache>,
    pub usage: UsageTracker,
    pub revoked: Arc<RevokedTokens>,
    pub link: Arc<RunnerLink>,
    /// Where services publish what a committed change means for the state in memory.
    pub events: Arc<dyn EventBus>,
    pub metrics: Metrics,
    pub public_url: String,
    pub sealer: crate::seal::Sealer,
    pub health: Arc<crate::memory::health::AuthHealthTracker>,
    /// When this process started: tasks of instances it never saw count as gone since then.
    pub started_at: time::OffsetDateTime,
    /// Turns true when the server shuts down: long-lived responses (the UI's event stream) end
    /// then, so graceful shutdown does not wait for them forever.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Turns true when a shutdown starts draining (`--shutdown-drain-seconds`): `/readyz` fails and
    /// new runner sessions are refused while the ones held are closed a few at a time.
    pub draining: std::sync::atomic::AtomicBool,
    /// The bound on concurrent password computations (logins, new passwords).
    pub passwords: crate::services::passwords::Passwords,
    /// This process among the replicas of its database.
    pub replica_id: String,
    /// The events listener's health, when there are replicas (PostgreSQL); `None` on SQLite.
    pub listener: Option<Arc<crate::events::replicated::ListenerHealth>>,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
