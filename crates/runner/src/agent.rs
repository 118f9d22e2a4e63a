//! The runner's main loop: read the secret, get a token, hold a session, and when anything fails,
//! back off (capped, with jitter) and try again. A refused secret is re-read before every attempt,
//! so a new secret written to the file or to AWS Secrets Manager is picked up without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_domain::{random_bytes, ClientSecret};
use tether_protocol::session::close_code;
use tokio::sync::watch;

use crate::auth::{self, AuthError};
use crate::config::RunnerConfig;
use crate::metrics::RunnerMetrics;
use crate::secret::SecretSource;
use crate::session::{self, SessionEnd};
use crate::transport::Transport;

#[derive(Debug)]
pub struct Agent {
    pub config: RunnerConfig,
    pub transport: Transport,
    pub secrets: SecretSource,
    pub metrics: Arc<RunnerMetrics>,
    pub instance_id: String,
    pub hostname: String,
}

/// How the agent stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown signal or drain: exit 0.
    Clean,
    /// Cannot continue (the runner was deleted): exit non-zero with this message.
    Fatal(String),
}

/// Capped exponential backoff with jitter (half fixed, half random).
#[derive(Debug)]
struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    fn next(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt += 1;
        let r = u32::from_le_bytes(random_bytes::<4>()) as f64 / u32::MAX as f64;
        exp / 2 + exp.mul_f64(r / 2.0)
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Agent {
    pub async fn new(config: RunnerConfig, metrics: Arc<RunnerMetrics>) -> anyhow::Result<Self> {
        let transport = Transport::new(&config)?;
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
        Ok(Self {
            config,
            transport,
            secrets,
            metrics,
            instance_id,
            hostname,
        })
    }

    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Exit {
        let mut network = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut refused = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let mut refused_since: Option<(Instant, u32)> = None;
        let mut last_secret: Option<ClientSecret> = None;
        let source = self.config.secret.describe();
        tracing::info!(url = %self.config.url, client_id = %self.config.client_id, instance.id = %self.instance_id,
            secret_source = %source, "tether runner starting");
        loop {
            if *shutdown.borrow() {
                return Exit::Clean;
            }
            let secret = match self.secrets.read().await {
                Ok(s) => s,
                Err(e) => {
                    let delay = network.next();
                    tracing::warn!("{e}; retrying in {:.1} s", delay.as_secs_f64());
                    if wait(delay, &mut shutdown).await {
                        return Exit::Clean;
                    }
                    continue;
                }
            };
            if last_secret.as_ref().is_some_and(|old| *old != secret) {
                tracing::info!(secret_source = %source, "the client secret changed; using the new one now");
                refused.reset();
            }
            last_secret = Some(secret.clone());
            match auth::fetch_token(
                &self.transport,
                &self.config.url,
                &self.config.client_id,
                &secret,
            )
            .await
            {
                Ok(token) => {
                    if let Some((since, attempts)) = refused_since.take() {
                        tracing::info!(
                            attempts,
                            refused_for_s = since.elapsed().as_secs(),
                            "the control plane accepts the client credentials again"
                        );
                    }
                    refused.reset();
                    let started = Instant::now();
                    let end = session::run(self, token, &mut shutdown).await;
                    if started.elapsed() > Duration::from_secs(60) {
                        network.reset();
                    }
                    match end {
                        SessionEnd::Shutdown => {
                            tracing::info!("said goodbye to the control plane; exiting");
                            return Exit::Clean;
                        }
                        SessionEnd::Drained(reason) => {
                            tracing::info!(reason = %reason, "drained; exiting so the orchestrator starts a replacement");
                            return Exit::Clean;
                        }
                        SessionEnd::Closed {
                            code: close_code::RUNNER_DELETED,
                            reason,
                        } => {
                            return Exit::Fatal(format!(
                                "the control plane closed the session: {reason}. This runner no longer exists; \
                                 register it again and deploy the new client credentials"
                            ));
                        }
                        SessionEnd::Closed { code, reason }
                            if code == close_code::CREDENTIALS_REVOKED
                                || code == close_code::TOKEN_EXPIRED =>
                        {
                            tracing::warn!(code, "the control plane ended the session: {reason}; re-reading {source}");
                            if wait(network.next().min(Duration::from_secs(1)), &mut shutdown).await
                            {
                                return Exit::Clean;
                            }
                        }
                        SessionEnd::Unauthorized => {
                            tracing::warn!(
                                "the control plane refused the access token; getting a new one"
                            );
                            if wait(network.next(), &mut shutdown).await {
                                return Exit::Clean;
                            }
                        }
                        SessionEnd::Closed { code, reason } => {
                            let delay = network.next();
                            tracing::warn!(code, "the control plane closed the session: {reason}; reconnecting in {:.1} s", delay.as_secs_f64());
                            if wait(delay, &mut shutdown).await {
                                return Exit::Clean;
                            }
                        }
                        SessionEnd::Lost(why) => {
                            let delay = network.next();
                            tracing::warn!("{why}; reconnecting in {:.1} s", delay.as_secs_f64());
                            if wait(delay, &mut shutdown).await {
                                return Exit::Clean;
                            }
                        }
                    }
                }
                Err(AuthError::InvalidClient(description)) => {
                    let delay = refused.next();
                    let (since, attempts) = refused_since.get_or_insert((Instant::now(), 0));
                    *attempts += 1;
                    let advice = if self.secrets.can_change() {
                        format!("write the new client_secret to {source}; it is re-read before every attempt, no restart needed")
                    } else {
                        "the secret was probably refreshed: set OAUTH_CLIENT_SECRET to the new client_secret and restart the runner".to_owned()
                    };
                    // One line per burst, then a reminder at most every 5 minutes.
                    if *attempts == 1 || since.elapsed() >= Duration::from_secs(300) {
                        tracing::error!(client_id = %self.config.client_id, attempts = *attempts,
                            "the control plane refused this runner's client credentials ({description}): {advice}; retrying in {:.0} s",
                            delay.as_secs_f64());
                        if *attempts > 1 {
                            *since = Instant::now();
                        }
                    } else {
                        tracing::debug!(attempts = *attempts, "client credentials still refused");
                    }
                    if self
                        .wait_for_new_secret(delay, &secret, &mut shutdown)
                        .await
                    {
                        return Exit::Clean;
                    }
                }
                Err(AuthError::Transient(e)) => {
                    let delay = network.next();
                    tracing::warn!(
                        "cannot get an access token: {e}; retrying in {:.1} s",
                        delay.as_secs_f64()
                    );
                    if wait(delay, &mut shutdown).await {
                        return Exit::Clean;
                    }
                }
            }
        }
    }

    /// Waits `delay`, returning early when a file-based secret changes. True if shutting down.
    async fn wait_for_new_secret(
        &self,
        delay: Duration,
        current: &ClientSecret,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        if !matches!(self.secrets, SecretSource::File(_)) {
            return wait(delay, shutdown).await;
        }
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline {
            let step = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500));
            if wait(step, shutdown).await {
                return true;
            }
            if self.secrets.read().await.is_ok_and(|s| s != *current) {
                return false;
            }
        }
        false
    }
}

/// Sleeps `delay` unless shutdown is requested first (then returns true).
async fn wait(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = crate::stopped(shutdown) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| b.next()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] <= Duration::from_millis(800));
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(2)),
            "capped: {delays:?}"
        );
        assert!(
            delays[9] >= Duration::from_secs(1),
            "half of the cap at least"
        );
        b.reset();
        assert!(b.next() <= Duration::from_millis(100));
    }
}
