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

#[cfg(test)]
mod tests {
    use super::*;

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
