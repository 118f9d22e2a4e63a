//! Credential formats and how they are stored.
//!
//! - `tcid_` client ids: 128 random bits, the stable pointer that never changes on refresh.
//! - `tcs_` client secrets and `tpat_` API tokens: 256 random bits in base62 plus a 6-character CRC32
//!   checksum, so a runner, a CLI or a secret scanner can tell a truncated or mistyped value offline.
//! - Only HMAC-SHA256 verifiers keyed by a server pepper are stored. The inputs carry 256 bits of
//!   entropy, so no slow password hash is needed and the token endpoint stays fast.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{base62, random_bytes, ParseError};

const BODY_LEN: usize = 43; // 256 bits in base62
const CHECKSUM_LEN: usize = 6; // 32 bits in base62

fn checksum(body: &str) -> String {
    base62::encode(
        &crc32fast::hash(body.as_bytes()).to_be_bytes(),
        CHECKSUM_LEN,
    )
}

fn generate_checked(prefix: &str) -> String {
    let body = base62::encode(&random_bytes::<32>(), BODY_LEN);
    let sum = checksum(&body);
    format!("{prefix}{body}{sum}")
}

/// Validates `<prefix><43 base62><6 base62 checksum>`; `what` names the value in error messages.
fn check_format(s: &str, prefix: &str, what: &str) -> Result<(), ParseError> {
    let Some(rest) = s.strip_prefix(prefix) else {
        return Err(ParseError::new(format!(
            "is not a {what}: it must start with `{prefix}`"
        )));
    };
    if rest.len() != BODY_LEN + CHECKSUM_LEN || !base62::is_base62(rest) {
        return Err(ParseError::new(format!(
            "is not a complete {what}: expected {} characters after `{prefix}`, got {} (was it cut off when copied?)",
            BODY_LEN + CHECKSUM_LEN,
            rest.chars().count()
        )));
    }
    let (body, sum) = rest.split_at(BODY_LEN);
    if checksum(body) != sum {
        return Err(ParseError::new(format!(
            "is not a valid {what}: its checksum does not match (was it mistyped or altered?)"
        )));
    }
    Ok(())
}

/// A runner's OAuth client id (`tcid_...`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(String);

impl ClientId {
    pub const PREFIX: &'static str = "tcid_";

    pub fn generate() -> Self {
        Self(format!(
            "{}{}",
            Self::PREFIX,
            base62::encode(&random_bytes::<16>(), 22)
        ))
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok = s
            .strip_prefix(Self::PREFIX)
            .is_some_and(|rest| rest.len() == 22 && base62::is_base62(rest));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(
                "is not a tether client id (`tcid_` followed by 22 letters and digits)",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A runner's OAuth client secret (`tcs_...`). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    pub const PREFIX: &'static str = "tcs_";

    pub fn generate() -> Self {
        Self(generate_checked(Self::PREFIX))
    }

    /// Accepts only a well-formed secret whose checksum matches.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        check_format(s, Self::PREFIX, "tether client secret")?;
        Ok(Self(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// A personal API token. Generated ones are `tpat_...` with a checksum; a bootstrap token supplied
/// by automation may be any 32 to 512 printable characters. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    pub const PREFIX: &'static str = "tpat_";
    pub const MIN_SUPPLIED_LEN: usize = 32;

    pub fn generate() -> Self {
        Self(generate_checked(Self::PREFIX))
    }

    /// A token presented by a caller: a generated `tpat_` token whose checksum matches, or any
    /// value a bootstrap token may have (automation may choose one that starts with `tpat_` too).
    /// Whether it exists is for the store to say.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.starts_with(Self::PREFIX) && check_format(s, Self::PREFIX, "tether API token").is_ok()
        {
            return Ok(Self(s.to_owned()));
        }
        Self::check_supplied(s)?;
        Ok(Self(s.to_owned()))
    }

    /// A token chosen by an operator (`TETHER_BOOTSTRAP_TOKEN`).
    pub fn parse_supplied(s: &str) -> Result<Self, ParseError> {
        Self::check_supplied(s)?;
        Ok(Self(s.to_owned()))
    }

    fn check_supplied(s: &str) -> Result<(), ParseError> {
        if s.len() < Self::MIN_SUPPLIED_LEN || s.len() > 512 {
            return Err(ParseError::new(format!(
                "must be {} to 512 characters long",
                Self::MIN_SUPPLIED_LEN
            )));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ParseError::new(
                "must contain only printable ASCII characters without spaces",
            ));
        }
        Ok(())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken([redacted])")
    }
}

/// The server-wide HMAC key that turns secrets into verifiers.
#[derive(Clone)]
pub struct Pepper([u8; 32]);

impl Pepper {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn verifier(&self, secret: &str) -> Verifier {
        #[expect(clippy::expect_used, reason = "HMAC accepts keys of any length")]
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(secret.as_bytes());
        Verifier(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper([redacted])")
    }
}

/// What is stored instead of a secret: HMAC-SHA256(pepper, secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier([u8; 32]);

impl Verifier {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time comparison, so response timing says nothing about how much of a guess matched.
    pub fn matches(&self, other: &Verifier) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_parse_and_are_unique() {
        let a = ClientSecret::generate();
        let b = ClientSecret::generate();
        assert_ne!(a, b);
        assert!(a.expose().starts_with("tcs_"));
        assert_eq!(a.expose().len(), 4 + 43 + 6);
        assert_eq!(ClientSecret::parse(a.expose()), Ok(a));
    }

    #[test]
    fn truncated_or_altered_secrets_are_refused() {
        let s = ClientSecret::generate().expose().to_owned();
        let truncated = ClientSecret::parse(&s[..s.len() - 1]).expect_err("truncated");
        assert!(truncated.0.contains("cut off"), "{truncated}");
        let mut altered = s.clone().into_bytes();
        altered[10] = if altered[10] == b'a' { b'b' } else { b'a' };
        let altered = String::from_utf8(altered).expect("ascii");
        assert!(ClientSecret::parse(&altered)
            .expect_err("altered")
            .0
            .contains("checksum"));
        assert!(ClientSecret::parse(&s.replacen("tcs_", "tcx_", 1)).is_err());
    }

    #[test]
    fn secrets_never_debug_print() {
        let s = ClientSecret::generate();
        assert!(!format!("{s:?}").contains(s.expose()));
        let t = ApiToken::generate();
        assert!(!format!("{t:?}").contains(t.expose()));
    }

    #[test]
    fn client_ids() {
        let id = ClientId::generate();
        assert_eq!(ClientId::parse(id.as_str()), Ok(id));
        assert!(ClientId::parse("tcid_short").is_err());
    }

    #[test]
    fn api_tokens() {
        let t = ApiToken::generate();
        assert!(ApiToken::parse(t.expose()).is_ok());
        assert!(ApiToken::parse(&t.expose()[..20]).is_err());
        assert!(ApiToken::parse_supplied(&"b".repeat(32)).is_ok());
        assert!(ApiToken::parse_supplied(&"b".repeat(31)).is_err());
        assert!(ApiToken::parse_supplied(&format!("{} x", "b".repeat(32))).is_err());
        // A value automation chose may start with `tpat_` without carrying a checksum.
        let chosen = "tpat_automation0123456789abcdefghijklmnop";
        assert_eq!(ApiToken::parse(chosen).expect("chosen").expose(), chosen);
        assert!(ApiToken::parse("tpat_short").is_err());
    }

    #[test]
    fn verifiers() {
        let pepper = Pepper::from_bytes([7; 32]);
        let other = Pepper::from_bytes([8; 32]);
        let v = pepper.verifier("tcs_x");
        assert!(v.matches(&pepper.verifier("tcs_x")));
        assert!(!v.matches(&pepper.verifier("tcs_y")));
        assert!(!v.matches(&other.verifier("tcs_x")));
    }
}
