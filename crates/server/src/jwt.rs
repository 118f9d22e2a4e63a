//! Access tokens: RFC 9068 JWTs (`typ: at+jwt`) signed with Ed25519 (`alg: EdDSA`), and the JWKS
//! that lets any standard library verify them. Hand-rolled because the format is tiny and the token
//! endpoint's throughput depends on it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub gen: u32,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("not a JWT")]
    Malformed,
    #[error("unsupported header")]
    Header,
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("issued for another issuer or audience")]
    WrongIssuer,
}

pub struct TokenSigner {
    key: SigningKey,
    verifying: VerifyingKey,
    kid: String,
    header_b64: String,
    pub issuer: String,
    pub audience: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish()
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl TokenSigner {
    pub fn new(key: SigningKey, issuer: String, audience: String) -> Self {
        let verifying = key.verifying_key();
        let kid = thumbprint(&verifying);
        let header = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
        let header_b64 = B64.encode(header.to_string());
        Self {
            key,
            verifying,
            kid,
            header_b64,
            issuer,
            audience,
        }
    }

    pub fn sign(&self, claims: &Claims) -> String {
        #[expect(clippy::expect_used, reason = "serialising a plain struct cannot fail")]
        let payload = serde_json::to_vec(claims).expect("claims serialise");
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 90);
        token.push_str(&self.header_b64);
        token.push('.');
        B64.encode_string(&payload, &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        B64.encode_string(signature.to_bytes(), &mut token);
        token
    }

    /// Checks signature, issuer, audience and expiry. Revocation is the caller's business.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        let mut parts = token.splitn(3, '.');
        let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(JwtError::Malformed);
        };
        let header: Header = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(JwtError::Malformed)?;
        if header.alg != "EdDSA" || header.kid.as_deref().is_some_and(|k| k != self.kid) {
            return Err(JwtError::Header);
        }
        let sig_bytes = B64.decode(s).map_err(|_| JwtError::Malformed)?;
        let signature = Signature::from_slice(&sig_bytes).map_err(|_| JwtError::Malformed)?;
        let signed_len = h.len() + 1 + p.len();
        self.verifying
            .verify_strict(&token.as_bytes()[..signed_len], &signature)
            .map_err(|_| JwtError::Signature)?;
        let claims: Claims = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(JwtError::Malformed)?;
        if claims.iss != self.issuer || claims.aud != self.audience {
            return Err(JwtError::WrongIssuer);
        }
        if claims.exp <= now {
            return Err(JwtError::Expired);
        }
        Ok(claims)
    }

    /// RFC 7517 key set with the one signing key (RFC 8037 OKP/Ed25519).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": B64.encode(self.verifying.as_bytes()),
                "kid": self.kid,
                "use": "sig",
                "alg": "EdDSA",
            }]
        })
    }
}

/// RFC 7638 JWK thumbprint: a stable key id derived from the public key.
fn thumbprint(key: &VerifyingKey) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        B64.encode(key.as_bytes())
    );
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        TokenSigner::new(
            SigningKey::from_bytes(&[3; 32]),
            "http://iss".into(),
            "aud".into(),
        )
    }

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "http://iss".into(),
            sub: "r".into(),
            aud: "aud".into(),
            client_id: "tcid_x".into(),
            gen: 2,
            jti: "j".into(),
            iat: 0,
            exp,
        }
    }

    #[test]
    fn round_trip_and_expiry() {
        let s = signer();
        let token = s.sign(&claims(100));
        assert_eq!(s.verify(&token, 99), Ok(claims(100)));
        assert_eq!(s.verify(&token, 100), Err(JwtError::Expired));
    }

    #[test]
    fn tampering_and_foreign_keys_are_refused() {
        let s = signer();
        let token = s.sign(&claims(100));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(
            serde_json::to_vec(&Claims {
                gen: 9,
                ..claims(100)
            })
            .expect("json"),
        );
        parts[1] = &forged;
        assert_eq!(s.verify(&parts.join("."), 0), Err(JwtError::Signature));
        let other = TokenSigner::new(
            SigningKey::from_bytes(&[4; 32]),
            "http://iss".into(),
            "aud".into(),
        );
        assert_eq!(
            other.verify(&token, 0),
            Err(JwtError::Header),
            "kid differs"
        );
        assert_eq!(s.verify("a.b", 0), Err(JwtError::Malformed));
        let wrong_iss = TokenSigner::new(
            SigningKey::from_bytes(&[3; 32]),
            "http://x".into(),
            "aud".into(),
        );
        assert_eq!(wrong_iss.verify(&token, 0), Err(JwtError::WrongIssuer));
    }

    #[test]
    fn jwks_names_the_key() {
        let s = signer();
        let jwks = s.jwks();
        assert_eq!(jwks["keys"][0]["kid"], s.kid.as_str());
        assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
        let token = s.sign(&claims(1));
        let header: serde_json::Value = serde_json::from_slice(
            &B64.decode(token.split('.').next().expect("header"))
                .expect("b64"),
        )
        .expect("json");
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(header["alg"], "EdDSA");
    }
}
