//! Validated names and free-text fields. Each `parse` states the rule in its error message.

use std::fmt;

use crate::ParseError;

/// A runner's unique name: a DNS label (1-63 of `a-z`, `0-9`, `-`, starting and ending alphanumeric),
/// so it can name a Kubernetes release, an ECS service or a Snowflake service without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunnerName(String);

impl RunnerName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() || s.len() > 63 {
            return Err(ParseError::new("must be 1 to 63 characters long"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ParseError::new(
                "may contain only lowercase letters a-z, digits 0-9 and '-'",
            ));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(ParseError::new("must start and end with a letter or digit"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunnerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's login name: 1-64 of `a-z`, `0-9`, `.`, `_`, `-`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() || s.len() > 64 {
            return Err(ParseError::new("must be 1 to 64 characters long"));
        }
        let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b);
        if !s.bytes().all(ok) {
            return Err(ParseError::new(
                "may contain only lowercase letters, digits, '.', '_' and '-'",
            ));
        }
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(ParseError::new("must start with a letter or digit"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A human's password. Never printed: `Debug` shows `[redacted]`.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN_LEN: usize = 12;

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let chars = s.chars().count();
        if chars < Self::MIN_LEN {
            return Err(ParseError::new(format!(
                "must be at least {} characters long",
                Self::MIN_LEN
            )));
        }
        if s.len() > 1024 {
            return Err(ParseError::new("must be at most 1024 bytes long"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A label for an API token, so its owner can tell tokens apart ("laptop", "ci").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName(String);

impl TokenName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let t = s.trim();
        if t.is_empty() || t.chars().count() > 64 {
            return Err(ParseError::new("must be 1 to 64 characters long"));
        }
        if t.chars().any(char::is_control) {
            return Err(ParseError::new("must not contain control characters"));
        }
        Ok(Self(t.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text an operator attaches to a runner.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 1024;

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.chars().count() > Self::MAX_CHARS {
            return Err(ParseError::new(format!(
                "must be at most {} characters long",
                Self::MAX_CHARS
            )));
        }
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(ParseError::new("must not contain control characters"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_names() {
        for ok in ["a", "prod-eu-1", "0", &"x".repeat(63)] {
            assert!(RunnerName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Prod", "a_b", "-a", "a-", "a b", "é", &"x".repeat(64)] {
            assert!(RunnerName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usernames() {
        assert!(Username::parse("alice.smith_2").is_ok());
        assert!(Username::parse(".alice").is_err());
        assert!(Username::parse("Alice").is_err());
        assert!(Username::parse("").is_err());
    }

    #[test]
    fn password_rules_and_redaction() {
        assert!(Password::parse("short").is_err());
        let p = Password::parse("correct horse battery").expect("valid");
        assert_eq!(format!("{p:?}"), "Password([redacted])");
    }

    #[test]
    fn token_names_and_descriptions() {
        assert_eq!(TokenName::parse("  ci ").expect("valid").as_str(), "ci");
        assert!(TokenName::parse("").is_err());
        assert!(Description::parse("line\nnext").is_ok());
        assert!(Description::parse("bell\u{7}").is_err());
    }
}
