//! Credential generations: refresh makes generation n+1; older ones retire or are revoked.

use std::fmt;

use crate::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u32);

impl Generation {
    pub const FIRST: Generation = Generation(1);

    pub fn next(self) -> Generation {
        Generation(self.0 + 1)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialState {
    /// The current secret.
    Active,
    /// An older secret still accepted until its expiry (zero-downtime overlap).
    Retiring,
    /// No longer accepted for anything.
    Revoked,
}

impl CredentialState {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialState::Active => "active",
            CredentialState::Retiring => "retiring",
            CredentialState::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "active" => Ok(Self::Active),
            "retiring" => Ok(Self::Retiring),
            "revoked" => Ok(Self::Revoked),
            _ => Err(ParseError::new("must be one of active, retiring, revoked")),
        }
    }

    /// Whether a secret (or a token minted from it) in this state is accepted at `now` (unix seconds),
    /// given the generation's expiry.
    pub fn accepts(self, expires_at: Option<i64>, now: i64) -> bool {
        match self {
            CredentialState::Active => true,
            CredentialState::Retiring => expires_at.is_some_and(|e| now < e),
            CredentialState::Revoked => false,
        }
    }
}

/// The word an operator types to confirm a refresh (the guide: "type the word `refresh`"), in the
/// API (`"confirm": "refresh"`), the web dialog and the CLI prompt.
pub const REFRESH_CONFIRMATION: &str = "refresh";

/// How a refresh treats the previous generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshMode {
    /// Revoked at once: the guide's behaviour (the running runner is disconnected).
    Revoke,
    /// Still accepted for `grace` (zero-downtime rotation): nothing is disconnected.
    Overlap { grace: std::time::Duration },
}

impl RefreshMode {
    /// The overlap when none is given: one day.
    pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(86_400);
    /// The longest overlap: 30 days.
    pub const MAX_GRACE: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

    /// From the API's `mode` (default `revoke`) and `grace_seconds` (overlap only, 1 s to 30 d,
    /// default one day). The error names the field and what is wrong with it.
    pub fn parse(
        mode: Option<&str>,
        grace_seconds: Option<u64>,
    ) -> Result<Self, (&'static str, String)> {
        match mode.unwrap_or("revoke") {
            "revoke" if grace_seconds.is_some() => Err((
                "grace_seconds",
                "applies only to mode \"overlap\"".to_owned(),
            )),
            "revoke" => Ok(Self::Revoke),
            "overlap" => {
                let grace =
                    grace_seconds.map_or(Self::DEFAULT_GRACE, std::time::Duration::from_secs);
                if grace.is_zero() || grace > Self::MAX_GRACE {
                    return Err((
                        "grace_seconds",
                        format!("must be from 1 to {} seconds", Self::MAX_GRACE.as_secs()),
                    ));
                }
                Ok(Self::Overlap { grace })
            }
            _ => Err(("mode", "must be \"revoke\" or \"overlap\"".to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoke => "revoke",
            Self::Overlap { .. } => "overlap",
        }
    }
}

/// The version of a runner's credential set: bumped in the same transaction as every change to it
/// (refresh, end of an overlap, grace expiry), so a cache can tell a load read before a change
/// from one read after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CredentialsVersion(pub i64);

impl CredentialsVersion {
    /// Newer than every real version: what a deleted runner's credentials are at.
    pub const DELETED: CredentialsVersion = CredentialsVersion(i64::MAX);
}

/// How far the newest credential generation has reached a runner's live instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    /// Every live instance uses the newest generation (and at least one is live).
    Applied,
    /// No live instance uses the newest generation yet, and no older one is accepted.
    Waiting,
    /// An older generation is still accepted (zero-downtime overlap).
    Overlap,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Applied => "applied",
            RolloutState::Waiting => "waiting",
            RolloutState::Overlap => "overlap",
        }
    }
}

/// Where a runner's newest credential generation stands among its live instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    pub generation: Generation,
    pub instances_on_newest: usize,
    pub instances_on_older: usize,
    /// Until when an older generation is still accepted, if one is.
    pub retiring_until: Option<time::OffsetDateTime>,
    pub state: RolloutState,
}

impl Rollout {
    /// `retiring_until` is the expiry of the runner's retiring generation, if any; one already past
    /// at `now` no longer counts (the sweep revokes it shortly).
    pub fn of(
        newest: Generation,
        retiring_until: Option<time::OffsetDateTime>,
        now: time::OffsetDateTime,
        instances: impl IntoIterator<Item = Generation>,
    ) -> Self {
        let (mut on_newest, mut on_older) = (0, 0);
        for g in instances {
            if g >= newest {
                on_newest += 1;
            } else {
                on_older += 1;
            }
        }
        let retiring_until = retiring_until.filter(|t| *t > now);
        let state = if retiring_until.is_some() {
            RolloutState::Overlap
        } else if on_newest == 0 || on_older > 0 {
            RolloutState::Waiting
        } else {
            RolloutState::Applied
        };
        Self {
            generation: newest,
            instances_on_newest: on_newest,
            instances_on_older: on_older,
            retiring_until,
            state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_modes_parse_with_their_grace_bounds() {
        use std::time::Duration;
        assert_eq!(RefreshMode::parse(None, None), Ok(RefreshMode::Revoke));
        assert_eq!(
            RefreshMode::parse(Some("overlap"), None),
            Ok(RefreshMode::Overlap {
                grace: RefreshMode::DEFAULT_GRACE
            })
        );
        assert_eq!(
            RefreshMode::parse(Some("overlap"), Some(60)),
            Ok(RefreshMode::Overlap {
                grace: Duration::from_secs(60)
            })
        );
        assert_eq!(
            RefreshMode::parse(Some("overlap"), Some(0)).map_err(|e| e.0),
            Err("grace_seconds")
        );
        assert_eq!(
            RefreshMode::parse(Some("overlap"), Some(30 * 86_400 + 1)).map_err(|e| e.0),
            Err("grace_seconds")
        );
        assert_eq!(
            RefreshMode::parse(Some("revoke"), Some(60)).map_err(|e| e.0),
            Err("grace_seconds")
        );
        assert_eq!(
            RefreshMode::parse(Some("later"), None).map_err(|e| e.0),
            Err("mode")
        );
    }

    #[test]
    fn rollout_states() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_000_000).expect("t");
        let later = now + time::Duration::minutes(59);
        let g = Generation;
        let r = Rollout::of(g(2), None, now, []);
        assert_eq!((r.state, r.instances_on_newest), (RolloutState::Waiting, 0));
        let r = Rollout::of(g(2), None, now, [g(2), g(2)]);
        assert_eq!((r.state, r.instances_on_newest), (RolloutState::Applied, 2));
        let r = Rollout::of(g(2), Some(later), now, [g(1), g(1), g(2)]);
        assert_eq!(r.state, RolloutState::Overlap);
        assert_eq!((r.instances_on_newest, r.instances_on_older), (1, 2));
        assert_eq!(r.retiring_until, Some(later));
        // A grace period that ended no longer counts as an overlap.
        let r = Rollout::of(g(2), Some(now), now, [g(2)]);
        assert_eq!((r.state, r.retiring_until), (RolloutState::Applied, None));
        // Every live instance moved but the old secret is still accepted: still an overlap.
        let r = Rollout::of(g(2), Some(later), now, [g(2)]);
        assert_eq!(r.state, RolloutState::Overlap);
    }

    #[test]
    fn acceptance() {
        assert!(CredentialState::Active.accepts(None, 10));
        assert!(CredentialState::Retiring.accepts(Some(11), 10));
        assert!(!CredentialState::Retiring.accepts(Some(10), 10));
        assert!(!CredentialState::Retiring.accepts(None, 10));
        assert!(!CredentialState::Revoked.accepts(None, 10));
        assert_eq!(Generation::FIRST.next(), Generation(2));
    }
}
