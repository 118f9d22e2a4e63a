//! Encrypts a refreshed client secret for its reveal window: AES-256-GCM under a key derived from
//! the server's master key, with a random 96-bit nonce and the runner id as associated data, so a
//! sealed secret copied to another runner's row does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tether_domain::random_bytes;

const NONCE_LEN: usize = 12;

pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// The master key is uniformly random, so one HMAC with a purpose label is a sound derivation.
    pub fn new(master: &[u8; 32]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(b"tether/reveal/v1");
        let key = mac.finalize().into_bytes();
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        }
    }

    /// `nonce || ciphertext+tag`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce = random_bytes::<NONCE_LEN>();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_else(|_| unreachable!("AES-GCM encryption of a short message cannot fail"));
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// None if the data was altered, sealed under another key, or for other associated data.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_tampering_other_keys_and_other_rows() {
        let s = Sealer::new(&[7; 32]);
        let sealed = s.seal(b"tcs_secret", b"runner-1/2");
        assert!(!sealed.windows(10).any(|w| w == b"tcs_secret"));
        assert_eq!(
            s.open(&sealed, b"runner-1/2").as_deref(),
            Some(&b"tcs_secret"[..])
        );
        assert_eq!(s.open(&sealed, b"runner-1/3"), None);
        assert_eq!(Sealer::new(&[8; 32]).open(&sealed, b"runner-1/2"), None);
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(s.open(&bad, b"runner-1/2"), None);
        assert_ne!(
            s.seal(b"x", b""),
            s.seal(b"x", b""),
            "fresh nonce each time"
        );
    }
}

/// Associated data of a sealed task environment value: the variable's name, so a sealed value
/// cannot be moved to another variable.
fn env_aad(name: &str) -> Vec<u8> {
    format!("tether:task-env:{name}").into_bytes()
}

impl Sealer {
    /// A secret task environment value, sealed for storage (base64).
    pub fn seal_env(&self, name: &str, value: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .encode(self.seal(value.as_bytes(), &env_aad(name)))
    }

    /// The value [`Sealer::seal_env`] sealed; `None` if it does not open (altered, or sealed under
    /// another master key).
    pub fn open_env(&self, name: &str, sealed: &str) -> Option<String> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        String::from_utf8(self.open(&bytes, &env_aad(name))?).ok()
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    #[test]
    fn a_sealed_env_value_opens_only_for_its_own_name_and_key() {
        let sealer = Sealer::new(&[7; 32]);
        let sealed = sealer.seal_env("API_KEY", "hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            sealer.open_env("API_KEY", &sealed).as_deref(),
            Some("hunter2")
        );
        assert_eq!(sealer.open_env("OTHER", &sealed), None);
        assert_eq!(Sealer::new(&[8; 32]).open_env("API_KEY", &sealed), None);
    }
}
