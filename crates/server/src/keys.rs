//! Server key material: the Ed25519 key that signs access tokens, the HMAC pepper that turns secrets
//! into verifiers, and the master key that encrypts secrets awaiting reveal. Each comes from a file
//! named by its flag (`TETHER_SIGNING_KEY_FILE`, `TETHER_PEPPER_FILE`, `TETHER_MASTER_KEY_FILE`:
//! never created, it must exist) or from the data directory (generated on first start, mode
//! 0600). Never logged. Replicas must share all three: the database records a fingerprint of each
//! on first start ([`KeyMaterial::fingerprints`]) and a process whose keys differ refuses to start.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use tether_domain::{random_bytes, Pepper};

pub struct KeyMaterial {
    pub signing: SigningKey,
    pub pepper: Pepper,
    pub master: [u8; 32],
    /// Signing, pepper, master, in that order.
    pub fingerprints: [Fingerprint; 3],
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial([redacted])")
    }
}

/// Key files given explicitly (`None`: the one in the data directory).
#[derive(Debug, Clone, Default)]
pub struct KeyFiles {
    pub signing: Option<PathBuf>,
    pub pepper: Option<PathBuf>,
    pub master: Option<PathBuf>,
}

/// One key's name, where it came from (for the operator), and its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub name: &'static str,
    pub source: String,
    pub value: String,
}

impl KeyMaterial {
    /// Keys from the data directory only (generated if missing).
    pub fn load_or_generate(dir: &Path) -> anyhow::Result<Self> {
        Self::load(dir, &KeyFiles::default())
    }

    /// Each key from its given file, or from the data directory.
    pub fn load(dir: &Path, files: &KeyFiles) -> anyhow::Result<Self> {
        let one = |name: &'static str, given: &Option<PathBuf>, flag: &str, default: &str| {
            let (key, source) = match given {
                Some(path) => (
                    given_key_file(path, flag)?,
                    format!("{flag}={}", path.display()),
                ),
                None => {
                    let path = dir.join(default);
                    (key_file(&path)?, path.display().to_string())
                }
            };
            let fingerprint = Fingerprint {
                name,
                source,
                value: fingerprint(name, &key),
            };
            anyhow::Ok((key, fingerprint))
        };
        let (signing, s) = one(
            "signing",
            &files.signing,
            "TETHER_SIGNING_KEY_FILE",
            "signing.key",
        )?;
        let (pepper, p) = one("pepper", &files.pepper, "TETHER_PEPPER_FILE", "pepper.key")?;
        let (master, m) = one(
            "master",
            &files.master,
            "TETHER_MASTER_KEY_FILE",
            "master.key",
        )?;
        Ok(Self {
            signing: SigningKey::from_bytes(&signing),
            pepper: Pepper::from_bytes(pepper),
            master,
            fingerprints: [s, p, m],
        })
    }
}

/// The first 16 bytes of SHA-256 over a label, the key's name and the key, in hex: tells keys
/// apart and reveals nothing about them.
fn fingerprint(name: &str, key: &[u8; 32]) -> String {
    let digest = Sha256::new()
        .chain_update(b"tether key fingerprint\0")
        .chain_update(name.as_bytes())
        .chain_update([0])
        .chain_update(key)
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A key file the operator named: it must exist (a typo must not silently make a new key), so it
/// is read without ever being created.
fn given_key_file(path: &Path, flag: &str) -> anyhow::Result<[u8; 32]> {
    read_key_file(path, false)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{flag} names {}, which does not exist; give every replica the same existing key file \
             (32 random bytes, mode 0600: `head -c 32 /dev/urandom > {}`)",
            path.display(),
            path.display()
        )
    })
}

/// Reads a 32-byte key file of the data directory, creating it with fresh random bytes (mode
/// 0600) if it does not exist.
fn key_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    read_key_file(path, true)?.ok_or_else(|| anyhow::anyhow!("{} was not created", path.display()))
}

/// Reads a 32-byte key file (refusing one others can read); a missing one is created when
/// `create`, else `None`.
fn read_key_file(path: &Path, create: bool) -> anyhow::Result<Option<[u8; 32]>> {
    match fs::read(path) {
        Ok(bytes) => {
            let mode = fs::metadata(path)
                .with_context(|| format!("reading permissions of {}", path.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{} is readable by other users (mode {:o}); run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                );
            }
            <[u8; 32]>::try_from(bytes.as_slice())
                .map(Some)
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{} must hold exactly 32 bytes, found {}",
                        path.display(),
                        bytes.len()
                    )
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_bytes::<32>();
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating key file {}", path.display()))?;
            file.write_all(&key)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing key file {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated new key file");
            Ok(Some(key))
        }
        Err(e) => Err(e).with_context(|| format!("reading key file {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_private_mode_and_reloads_the_same_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = KeyMaterial::load_or_generate(dir.path()).expect("generate");
        let b = KeyMaterial::load_or_generate(dir.path()).expect("reload");
        assert_eq!(a.signing.to_bytes(), b.signing.to_bytes());
        assert_eq!(a.master, b.master);
        for name in ["signing.key", "pepper.key", "master.key"] {
            let mode = fs::metadata(dir.path().join(name))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        assert_ne!(a.master, a.signing.to_bytes(), "keys are independent");
    }

    #[test]
    fn refuses_world_readable_or_wrong_sized_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        KeyMaterial::load_or_generate(dir.path()).expect("generate");
        let path = dir.path().join("pepper.key");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = KeyMaterial::load_or_generate(dir.path()).expect_err("world readable");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::write(&path, b"short").expect("write");
        assert!(KeyMaterial::load_or_generate(dir.path()).is_err());
    }

    #[test]
    fn fingerprints_tell_keys_apart_and_do_not_show_them() {
        let key = [7u8; 32];
        let shown = fingerprint("signing", &key);
        assert_eq!(shown.len(), 32);
        assert_eq!(shown, fingerprint("signing", &key), "stable");
        assert_ne!(shown, fingerprint("signing", &[8u8; 32]));
        assert_ne!(shown, fingerprint("pepper", &key), "each key's own label");
        assert!(!shown.contains("0707"), "{shown}");
    }
}
