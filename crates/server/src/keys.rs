//! Server key material: the Ed25519 key that signs access tokens, the HMAC pepper that turns secrets
//! into verifiers, and the master key that encrypts secrets awaiting reveal. Generated on first start
//! into the data directory (mode 0600); never logged.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use tether_domain::{random_bytes, Pepper};

pub struct KeyMaterial {
    pub signing: SigningKey,
    pub pepper: Pepper,
    pub master: [u8; 32],
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial([redacted])")
    }
}

impl KeyMaterial {
    pub fn load_or_generate(dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            signing: SigningKey::from_bytes(&key_file(&dir.join("signing.key"))?),
            pepper: Pepper::from_bytes(key_file(&dir.join("pepper.key"))?),
            master: key_file(&dir.join("master.key"))?,
        })
    }
}

/// Reads a 32-byte key file, creating it with fresh random bytes (mode 0600) if it does not exist.
fn key_file(path: &Path) -> anyhow::Result<[u8; 32]> {
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
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                anyhow::anyhow!(
                    "{} must hold exactly 32 bytes, found {}",
                    path.display(),
                    bytes.len()
                )
            })
        }
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
            Ok(key)
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
}
