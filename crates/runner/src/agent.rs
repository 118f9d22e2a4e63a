//! The runner's main loop: read the secret, get a token, hold a session, and when anything fails,
//! back off (capped, with jitter) and try again. A refused secret is re-read before every attempt,
//! so a new secret written to the file or to AWS Secrets Manager is picked up without a restart
//! (while a session is up, `reload` moves it to a new secret without reconnecting).
//! The agent owns the executor and the outbox, so tasks outlive sessions; it exits once a drain
//! (signal or the server's `drain`) has no task left running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_domain::{random_bytes, ClientSecret};
use tether_protocol::session::close_code;
use tokio::sync::watch;

use crate::auth::AuthError;
use crate::config::ReloadTiming;
use crate::config::RunnerConfig;
use crate::instance::Instance;
use crate::metrics::RunnerMetrics;
use crate::secret::SecretSource;
use crate::session::{self, SessionEnd};

/// One runner instance (what it holds is in [`Instance`]) and its main loop.
#[derive(Debug)]
pub struct Agent(Instance);

impl std::ops::Deref for Agent {
    type Target = Instance;

    fn deref(&self) -> &Instance {
        &self.0
    }
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

    /// While the control plane refuses the client credentials: the first attempts are at most
    /// 2 s apart, so a secret written right after a refresh is picked up at once (a file source
    /// is also polled during the wait), then exponential up to 5 minutes: never a retry storm.
    fn refused_credentials() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(300))
    }
}

impl Agent {
    pub async fn new(config: RunnerConfig, metrics: Arc<RunnerMetrics>) -> anyhow::Result<Self> {
        Instance::new(config, metrics).await.map(Self)
    }

    /// Watches the secret source with other timing (tests use short intervals).
    pub fn with_reload(self, reload: ReloadTiming) -> Self {
        Self(self.0.with_reload(reload))
    }

    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Exit {
        let mut network = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut refused = Backoff::refused_credentials();
        let mut refused_since: Option<(Instant, u32)> = None;
        let mut last_secret: Option<ClientSecret> = None;
        let mut last_delivery_attempt = false;
        let source = self.config().secret.describe();
        tracing::info!(url = %self.config().url, client_id = %self.config().client_id, instance.id = %self.instance_id(),
            secret_source = %source, "tether runner starting");
        loop {
            if crate::instance::shutdown_requested(&shutdown) {
                self.begin_drain(crate::instance::SHUTDOWN_REASON);
            }
            if self.drain_reason().is_some() && self.executor().running() == 0 {
                if self.outbox().is_empty() {
                    return Exit::Clean;
                }
                // Every task ended but not every update was acknowledged: one more connection
                // to deliver them, then give up and leave them to the next process.
                if last_delivery_attempt {
                    tracing::warn!(
                        "exiting before the control plane acknowledged every task update; \
                        the next runner process with this workdir sends them"
                    );
                    return Exit::Clean;
                }
                last_delivery_attempt = true;
            }
            let mut secret = match self.secrets().read().await {
                Ok(s) => s,
                Err(e) => {
                    let delay = network.next();
                    tracing::warn!("{e}; retrying in {:.1} s", delay.as_secs_f64());
                    self.wait(delay, &mut shutdown).await;
                    continue;
                }
            };
            if last_secret.as_ref().is_some_and(|old| *old != secret) {
                tracing::info!(secret_source = %source, "the client secret changed; using the new one now");
                refused.reset();
            }
            last_secret = Some(secret.clone());
            match self.token(&secret).await {
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
                    // The session may move to a newer secret (hot reload): remember the one it ended with.
                    let end = session::run(self, token, &mut secret, &mut shutdown).await;
                    last_secret = Some(secret.clone());
                    if started.elapsed() > Duration::from_secs(60) {
                        network.reset();
                    }
                    match end {
                        SessionEnd::Drained(reason) => {
                            tracing::info!(reason = %reason, "drained and said goodbye to the control plane; exiting");
                            return Exit::Clean;
                        }
                        SessionEnd::Closed {
                            code: close_code::RUNNER_DELETED,
                            reason,
                        } => {
                            // Its runs were cancelled with it: stop their process groups too.
                            if self.executor().cancel_all() > 0 {
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(15),
                                    self.executor().wait_idle(),
                                )
                                .await;
                            }
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
                            self.wait(network.next().min(Duration::from_secs(1)), &mut shutdown)
                                .await;
                        }
                        SessionEnd::Unauthorized => {
                            tracing::warn!(
                                "the control plane refused the access token; getting a new one"
                            );
                            self.wait(network.next(), &mut shutdown).await;
                        }
                        SessionEnd::Closed { code, reason } => {
                            let delay = network.next();
                            tracing::warn!(code, "the control plane closed the session: {reason}; reconnecting in {:.1} s", delay.as_secs_f64());
                            self.wait(delay, &mut shutdown).await;
                        }
                        SessionEnd::Lost(why) => {
                            let delay = network.next();
                            tracing::warn!("{why}; reconnecting in {:.1} s", delay.as_secs_f64());
                            self.wait(delay, &mut shutdown).await;
                        }
                    }
                }
                Err(AuthError::InvalidClient(description)) => {
                    let delay = refused.next();
                    let (since, attempts) = refused_since.get_or_insert((Instant::now(), 0));
                    *attempts += 1;
                    let advice = if self.secrets().can_change() {
                        format!("write the new client_secret to {source}; it is re-read before every attempt, no restart needed")
                    } else {
                        "the secret was probably refreshed: set OAUTH_CLIENT_SECRET to the new client_secret and restart the runner".to_owned()
                    };
                    // One line per burst, then a reminder at most every 5 minutes.
                    if *attempts == 1 || since.elapsed() >= Duration::from_secs(300) {
                        tracing::error!(client_id = %self.config().client_id, attempts = *attempts,
                            "the control plane refused this runner's client credentials ({description}): {advice}; retrying in {:.0} s",
                            delay.as_secs_f64());
                        if *attempts > 1 {
                            *since = Instant::now();
                        }
                    } else {
                        tracing::debug!(attempts = *attempts, "client credentials still refused");
                    }
                    self.wait_for_new_secret(delay, &secret, &mut shutdown)
                        .await;
                }
                Err(AuthError::Transient(e)) => {
                    let delay = network.next();
                    tracing::warn!(
                        "cannot get an access token: {e}; retrying in {:.1} s",
                        delay.as_secs_f64()
                    );
                    self.wait(delay, &mut shutdown).await;
                }
            }
        }
    }

    /// Waits `delay`, returning early when a file-based secret changes. True if ready to exit.
    async fn wait_for_new_secret(
        &self,
        delay: Duration,
        current: &ClientSecret,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        if !matches!(self.secrets(), SecretSource::File(_)) {
            return self.wait(delay, shutdown).await;
        }
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline {
            let step = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500));
            if self.wait(step, shutdown).await {
                return true;
            }
            if self.secrets().read().await.is_ok_and(|s| s != *current) {
                return false;
            }
        }
        false
    }
}

impl Agent {
    /// Sleeps `delay`, or less if the agent is draining and no task runs any more (then true).
    async fn wait(&self, delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => false,
            () = self.ready_to_exit(shutdown) => true,
        }
    }

    async fn ready_to_exit(&self, shutdown: &mut watch::Receiver<bool>) {
        let mut draining = self.subscribe_draining();
        tokio::select! {
            () = crate::stopped(shutdown) => {}
            _ = draining.wait_for(Option::is_some) => {}
        }
        self.executor().wait_idle().await;
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

    #[test]
    fn refused_credentials_are_retried_quickly_at_first_then_rarely() {
        let mut b = Backoff::refused_credentials();
        let delays: Vec<Duration> = (0..20).map(|_| b.next()).collect();
        assert!(
            delays[..4].iter().all(|d| *d <= Duration::from_secs(2)),
            "{delays:?}"
        );
        assert!(
            delays[6] >= Duration::from_secs(8),
            "exponential: {delays:?}"
        );
        assert!(delays[19] >= Duration::from_secs(150) && delays[19] <= Duration::from_secs(300));
    }
}
