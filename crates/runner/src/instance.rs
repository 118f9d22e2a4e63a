//! What one runner instance holds while it runs — its configuration, transport, secret source,
//! executor, outbox and metrics, its identity and whether it is draining — and the rules about
//! draining. Below the agent loop (`agent`), the session (`session`) and the secret watch
//! (`reload`), which all read it through `&Instance` and none of which it knows.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use anyhow::Context;
use tether_domain::{random_bytes, ClientSecret};
use tokio::sync::watch;

use crate::auth::{AccessToken, AuthError};
use crate::config::ReloadTiming;
use crate::config::RunnerConfig;
use crate::executor::{Executor, Grace};
use crate::metrics::RunnerMetrics;
use crate::outbox::Outbox;
use crate::secret::SecretSource;
use crate::spool::Spool;
use crate::transport::Transport;

/// The drain reason when the process got SIGTERM/SIGINT.
pub const SHUTDOWN_REASON: &str = "the runner process is shutting down";

/// What one runner instance holds while it runs. Read through its methods: the session, the secret
/// watch and the agent loop share it, and none of them may replace a part of it.
#[derive(Debug)]
pub struct Instance {
    config: RunnerConfig,
    transport: Transport,
    /// The control plane's API and token endpoint, on `transport`'s HTTP client.
    api: tether_client::Client,
    secrets: SecretSource,
    metrics: Arc<RunnerMetrics>,
    instance_id: String,
    hostname: String,
    outbox: Arc<Outbox>,
    executor: Executor,
    /// How often the secret source is watched while a session is up.
    reload: ReloadTiming,
    /// The newest credential generation the operator was told to deploy by hand (plain
    /// `OAUTH_CLIENT_SECRET`), so the advice is logged once per generation, not once per session.
    advised_generation: AtomicU32,
    /// Why this instance is draining, once it is.
    draining: watch::Sender<Option<String>>,
}

impl Instance {
    pub async fn new(config: RunnerConfig, metrics: Arc<RunnerMetrics>) -> anyhow::Result<Self> {
        let transport = Transport::new(&config)?;
        let api =
            tether_client::Client::with_http(config.url.as_str(), None, transport.http.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        let secrets = SecretSource::new(&config.secret).await;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".to_owned());
        let suffix: String = random_bytes::<4>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let instance_id = format!("{hostname}-{suffix}");
        let spool_dir = config.workdir.join("spool");
        let spool = Spool::open(&spool_dir)
            .with_context(|| format!("opening the update spool in {}", spool_dir.display()))?;
        let outbox = Arc::new(Outbox::new(spool, instance_id.clone()));
        let undelivered = outbox.task_ids().len();
        if undelivered > 0 {
            tracing::info!(
                tasks = undelivered,
                "found task updates an earlier runner process did not deliver; sending them once connected"
            );
        }
        let executor = Executor::new(
            config.workdir.clone(),
            config.max_tasks,
            Grace::default(),
            outbox.clone(),
            metrics.clone(),
        );
        Ok(Self {
            config,
            transport,
            api,
            secrets,
            metrics,
            instance_id,
            hostname,
            outbox,
            executor,
            reload: ReloadTiming::default(),
            advised_generation: AtomicU32::new(0),
            draining: watch::Sender::new(None),
        })
    }

    /// Stops taking new tasks; running ones finish. The first reason sticks.
    pub fn begin_drain(&self, reason: &str) {
        let started = self.draining.send_if_modified(|d| {
            let first = d.is_none();
            if first {
                *d = Some(reason.to_owned());
            }
            first
        });
        if started {
            tracing::info!(reason = %reason, running_tasks = self.executor.running(),
                "draining: taking no new tasks, finishing the running ones, then exiting");
        }
    }

    /// Why this instance is draining, if it is.
    pub fn drain_reason(&self) -> Option<String> {
        self.draining.borrow().clone()
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// An access token minted from `secret` (the one token source of the runner).
    pub async fn token(&self, secret: &ClientSecret) -> Result<AccessToken, AuthError> {
        crate::auth::fetch_token(&self.api, &self.config.client_id, secret).await
    }

    pub fn secrets(&self) -> &SecretSource {
        &self.secrets
    }

    pub fn metrics(&self) -> &Arc<RunnerMetrics> {
        &self.metrics
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// How often the secret source is watched while a session is up.
    pub fn reload(&self) -> &ReloadTiming {
        &self.reload
    }

    /// The newest generation the operator was told to deploy by hand (logged once per generation).
    pub(crate) fn advised_generation(&self) -> &AtomicU32 {
        &self.advised_generation
    }

    pub(crate) fn with_reload(mut self, reload: ReloadTiming) -> Self {
        self.reload = reload;
        self
    }

    /// Turns `Some(reason)` once the instance drains.
    pub(crate) fn subscribe_draining(&self) -> watch::Receiver<Option<String>> {
        self.draining.subscribe()
    }
}

/// SIGTERM/SIGINT arrived, or whoever could send it is gone.
pub(crate) fn shutdown_requested(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}
