//! Hot reload of the client secret on an open session. While a session is up the secret source is
//! watched: a file is checked about every second (a stat of the path, then its content if the stat
//! changed), an AWS Secrets Manager secret is re-read every `TETHER_SECRET_REFRESH_SECONDS`, and
//! both are re-read at once when the control plane says `credentials_rotated`. A new, well-formed
//! secret buys an access token that the session sends as `reauth`: no reconnect. Reconnecting after
//! a revocation stays the agent's job.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tether_domain::ClientSecret;

use crate::auth::{AccessToken, AuthError};
use crate::config::ReloadTiming;
use crate::instance::Instance;
use crate::secret::{FileStamp, SecretError, SecretSource};

/// A slow secret store must not stall the session's heartbeats for long.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a token request for a new secret failed for a reason other than the secret.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// How a source is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// `OAUTH_CLIENT_SECRET`: it cannot change.
    Never,
    /// A file, checked this often.
    File(Duration),
    /// AWS Secrets Manager, re-read this often (more often for a while after a rotation).
    Refresh(Duration),
}

impl Pace {
    fn of(source: &SecretSource, timing: &ReloadTiming) -> Self {
        match source {
            SecretSource::Value(_) => Pace::Never,
            SecretSource::File(_) => Pace::File(timing.file_poll),
            SecretSource::Aws { refresh, .. } => Pace::Refresh(*refresh),
        }
    }

    /// When to look next, from `now`.
    fn next(
        self,
        now: Instant,
        hurry_until: Option<Instant>,
        timing: &ReloadTiming,
    ) -> Option<Instant> {
        match self {
            Pace::Never => None,
            Pace::File(every) => Some(now + every),
            Pace::Refresh(every) => match hurry_until {
                Some(until) if now < until => Some(now + every.min(timing.rotated_poll)),
                _ => Some(now + every),
            },
        }
    }
}

/// One session's view of its client secret and of the source it may change in.
#[derive(Debug)]
pub struct SecretWatch {
    /// The secret this session's access tokens are minted from.
    in_use: ClientSecret,
    /// The file as last read: while its stamp stays the same it is not read again.
    seen: Option<FileStamp>,
    /// A new secret the control plane refused. Not tried again until the source changes again or
    /// the control plane rotates, so a typo does not turn into a token request every second.
    refused: Option<ClientSecret>,
    /// The last problem with the source that was logged, so it is logged once, not every second.
    reported: Option<String>,
    /// When to look at the source next; `None` when it cannot change.
    next_check: Option<Instant>,
    /// After `credentials_rotated`: an AWS secret is re-read often until this instant.
    hurry_until: Option<Instant>,
    /// The credential generation the control plane last confirmed for this session.
    generation: Option<u32>,
    /// A `reauth` with a new secret was sent and not confirmed yet.
    switching: bool,
}

impl SecretWatch {
    pub fn new(in_use: ClientSecret, agent: &Instance) -> Self {
        let pace = Pace::of(agent.secrets(), agent.reload());
        Self {
            in_use,
            seen: None,
            refused: None,
            reported: None,
            next_check: pace.next(Instant::now(), None, agent.reload()),
            hurry_until: None,
            generation: None,
            switching: false,
        }
    }

    /// The secret this session uses (renewals mint tokens from it).
    pub fn in_use(&self) -> &ClientSecret {
        &self.in_use
    }

    pub fn into_secret(self) -> ClientSecret {
        self.in_use
    }

    /// When [`SecretWatch::check`] wants to run next; `None` when the source cannot change.
    pub fn next_check(&self) -> Option<Instant> {
        self.next_check
    }

    /// Look at the source on the next turn of the session loop (e.g. the secret in use was refused).
    pub fn check_soon(&mut self) {
        if self.next_check.is_some() {
            self.seen = None;
            self.next_check = Some(Instant::now());
        }
    }

    /// Looks at the source; when it holds a new secret the control plane accepts, switches to it
    /// and returns an access token minted from it, for the session to send as `reauth`.
    pub async fn check(&mut self, agent: &Instance) -> Option<AccessToken> {
        let now = Instant::now();
        let source = agent.config().secret.describe();
        if let (Some(until), SecretSource::Aws { refresh, .. }) =
            (self.hurry_until, &agent.secrets())
        {
            if now >= until {
                self.hurry_until = None;
                tracing::warn!(
                    "{source} still holds the previous client secret {} s after the control plane \
                     rotated it; write the new client_secret there before the previous one expires \
                     (re-reading it every {} s from now on)",
                    agent.reload().rotated_window.as_secs(),
                    refresh.as_secs()
                );
            }
        }
        self.next_check =
            Pace::of(agent.secrets(), agent.reload()).next(now, self.hurry_until, agent.reload());
        let candidate = self.look(agent.secrets(), &source).await?;
        match agent.token(&candidate).await {
            Ok(token) => {
                tracing::info!(secret_source = %source,
                    "the client secret changed; moving this session to it with reauth, no reconnect");
                self.in_use = candidate;
                self.refused = None;
                self.hurry_until = None;
                self.switching = true;
                self.next_check = Pace::of(agent.secrets(), agent.reload()).next(
                    Instant::now(),
                    None,
                    agent.reload(),
                );
                Some(token)
            }
            Err(AuthError::InvalidClient(description)) => {
                tracing::error!(client_id = %agent.config().client_id,
                    "the control plane refused the new client secret in {source} ({description}); \
                     this session keeps using the previous one. Write the client_secret from this \
                     runner's latest credential refresh (`tether runners reveal`, or Reveal on its \
                     Credentials tab) to {source}");
                self.refused = Some(candidate);
                None
            }
            Err(AuthError::Transient(e)) => {
                tracing::warn!(
                    "cannot get an access token with the new client secret in {source}: {e}; \
                     trying again in {} s",
                    RETRY_AFTER_ERROR.as_secs()
                );
                self.seen = None;
                self.next_check = self.next_check.map(|_| Instant::now() + RETRY_AFTER_ERROR);
                None
            }
        }
    }

    /// Reads the source; `Some` only for a well-formed secret that is neither in use nor refused.
    async fn look(&mut self, secrets: &SecretSource, source: &str) -> Option<ClientSecret> {
        // Stat before reading: a change between the two is then seen again on the next look.
        let stamp = match secrets {
            SecretSource::File(path) => FileStamp::of(path).await.ok(),
            _ => None,
        };
        if stamp.is_some() && stamp == self.seen {
            return None;
        }
        let read = tokio::time::timeout(READ_TIMEOUT, secrets.read())
            .await
            .unwrap_or_else(|_| {
                Err(SecretError::Unreadable(format!(
                    "reading {source} took longer than {} s",
                    READ_TIMEOUT.as_secs()
                )))
            });
        self.seen = stamp;
        match read {
            Ok(secret) => {
                if self.reported.take().is_some() {
                    tracing::info!(secret_source = %source, "the client secret source is readable again");
                }
                (secret != self.in_use && self.refused.as_ref() != Some(&secret)).then_some(secret)
            }
            Err(e) => {
                let message = match e {
                    SecretError::Malformed(m) => {
                        format!("{m}; ignoring it, this session keeps the client secret it has")
                    }
                    SecretError::Unreadable(m) => {
                        format!("{m}; this session keeps the client secret it has")
                    }
                };
                if self.reported.as_deref() != Some(message.as_str()) {
                    tracing::warn!("{message}");
                    self.reported = Some(message);
                }
                None
            }
        }
    }

    /// `credentials_rotated`: a newer generation exists. Re-read the source at once (the session
    /// loop runs [`SecretWatch::check`] next); a plain `OAUTH_CLIENT_SECRET` gets one line of advice.
    pub fn rotated(&mut self, agent: &Instance, generation: u32) {
        if let Some(current) = self.generation.filter(|g| *g >= generation) {
            tracing::debug!(
                generation,
                current,
                "this session already uses that credential generation or a newer one"
            );
            return;
        }
        let source = agent.config().secret.describe();
        match &agent.secrets() {
            SecretSource::Value(_) => {
                // Once per generation and process: sessions come and go, the advice does not change.
                if agent
                    .advised_generation()
                    .fetch_max(generation, Ordering::Relaxed)
                    < generation
                {
                    tracing::warn!(generation,
                        "the control plane has a new client secret (generation {generation}); set \
                         OAUTH_CLIENT_SECRET to it and restart the runner before the old one expires");
                }
            }
            SecretSource::File(_) | SecretSource::Aws { .. } => {
                tracing::info!(
                    generation,
                    "a new credential generation {generation} exists; re-reading {source}"
                );
                let now = Instant::now();
                if matches!(agent.secrets(), SecretSource::Aws { .. }) {
                    self.hurry_until = Some(now + agent.reload().rotated_window);
                }
                // A secret refused earlier may be exactly this generation's.
                self.refused = None;
                self.seen = None;
                self.next_check = Some(now);
            }
        }
    }

    /// `reauthenticated`: the control plane accepted a `reauth`.
    pub fn reauthenticated(&mut self, generation: u32) {
        if std::mem::take(&mut self.switching) {
            tracing::info!(
                generation,
                "this session now uses credential generation {generation}"
            );
        } else {
            tracing::debug!(generation, "session re-authenticated");
        }
        self.generation = Some(generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_secrets_are_re_read_often_for_a_while_after_a_rotation() {
        let timing = ReloadTiming::default();
        let now = Instant::now();
        let refresh = Pace::Refresh(Duration::from_secs(300));
        assert_eq!(
            refresh.next(now, None, &timing),
            Some(now + Duration::from_secs(300))
        );
        let until = now + timing.rotated_window;
        assert_eq!(
            refresh.next(now, Some(until), &timing),
            Some(now + Duration::from_secs(5)),
            "every 5 s while the rotation is fresh"
        );
        let later = until + Duration::from_secs(1);
        assert_eq!(
            refresh.next(later, Some(until), &timing),
            Some(later + Duration::from_secs(300)),
            "back to the normal interval after 10 minutes"
        );
        let quick = Pace::Refresh(Duration::from_secs(2));
        assert_eq!(
            quick.next(now, Some(until), &timing),
            Some(now + Duration::from_secs(2)),
            "a shorter TETHER_SECRET_REFRESH_SECONDS still wins"
        );
        assert_eq!(Pace::Never.next(now, Some(until), &timing), None);
        assert_eq!(
            Pace::File(Duration::from_secs(1)).next(now, Some(until), &timing),
            Some(now + Duration::from_secs(1))
        );
    }
}
