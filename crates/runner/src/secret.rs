//! Reading the client secret from its source. File and AWS Secrets Manager sources are read again
//! whenever the control plane refuses the secret, and watched while a session is up (see
//! `reload`), so a new secret is picked up without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_secretsmanager::Client as SecretsManager;
use tether_domain::ClientSecret;

use crate::config::SecretSourceConfig;

#[derive(Debug)]
pub enum SecretSource {
    Value(ClientSecret),
    File(PathBuf),
    Aws {
        secret_id: String,
        client: SecretsManager,
        /// How often it is re-read while a session is up.
        refresh: Duration,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{0}")]
    Unreadable(String),
    #[error("{0}")]
    Malformed(String),
}

impl SecretSource {
    pub async fn new(config: &SecretSourceConfig) -> Self {
        match config {
            SecretSourceConfig::Value(s) => SecretSource::Value(s.clone()),
            SecretSourceConfig::File(p) => SecretSource::File(p.clone()),
            SecretSourceConfig::AwsSecretsManager { secret_id, refresh } => SecretSource::Aws {
                secret_id: secret_id.clone(),
                client: SecretsManager::new(&aws_sdk_config().await),
                refresh: *refresh,
            },
        }
    }

    /// Whether re-reading can ever yield a different secret.
    pub fn can_change(&self) -> bool {
        !matches!(self, SecretSource::Value(_))
    }

    /// The source's name as `hello` reports it: `env`, `file` or `aws_secrets_manager`.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretSource::Value(_) => "env",
            SecretSource::File(_) => "file",
            SecretSource::Aws { .. } => "aws_secrets_manager",
        }
    }

    /// The secret file's path, for a file source.
    pub fn file(&self) -> Option<&Path> {
        match self {
            SecretSource::File(p) => Some(p),
            _ => None,
        }
    }

    pub async fn read(&self) -> Result<ClientSecret, SecretError> {
        match self {
            SecretSource::Value(s) => Ok(s.clone()),
            SecretSource::File(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    SecretError::Unreadable(format!(
                        "cannot read OAUTH_CLIENT_SECRET_FILE {}: {e}",
                        path.display()
                    ))
                })?;
                ClientSecret::parse(text.trim()).map_err(|e| {
                    SecretError::Malformed(format!("the secret in {} {e}", path.display()))
                })
            }
            SecretSource::Aws {
                secret_id, client, ..
            } => {
                let out = client
                    .get_secret_value()
                    .secret_id(secret_id)
                    .send()
                    .await
                    .map_err(|e| {
                        let e = aws_sdk_secretsmanager::error::DisplayErrorContext(e);
                        SecretError::Unreadable(format!("cannot read AWS secret {secret_id}: {e}"))
                    })?;
                let text = out.secret_string().ok_or_else(|| {
                    SecretError::Malformed(format!(
                        "AWS secret {secret_id} holds binary data, not a string"
                    ))
                })?;
                parse_secret_string(text).map_err(|e| {
                    SecretError::Malformed(format!(
                        "the client_secret in AWS secret {secret_id} {e}"
                    ))
                })
            }
        }
    }
}

/// What a secret file is recognised by without reading it: the file its path resolves to right
/// now (symlinks followed, so an atomic rename over it and a Kubernetes `..data` symlink swap both
/// give another inode) and that file's size and change times. Taken fresh each time from the path:
/// no descriptor is held, no inode watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    pub async fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = tokio::fs::metadata(path).await?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }
}

/// A Secrets Manager value is either JSON `{"client_id": ..., "client_secret": ...}` or the plain secret.
fn parse_secret_string(text: &str) -> Result<ClientSecret, tether_domain::ParseError> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(trimmed)
            .map_err(|_| tether_domain::ParseError::new("is not valid JSON"))?;
        let secret = value
            .get("client_secret")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                tether_domain::ParseError::new(
                    "is missing: the JSON has no \"client_secret\" string",
                )
            })?;
        ClientSecret::parse(secret.trim())
    } else {
        ClientSecret::parse(trimmed)
    }
}

/// The standard AWS configuration chain (environment, profile, web identity, ECS task role, IMDS),
/// with rustls on ring. `AWS_ENDPOINT_URL` is honoured, which is how tests reach an emulator.
pub async fn aws_sdk_config() -> aws_config::SdkConfig {
    use aws_smithy_http_client::{tls, Builder};
    let http = Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_strings() {
        let s = ClientSecret::generate();
        let json = format!(
            r#"{{"client_id":"tcid_x","client_secret":"{}"}}"#,
            s.expose()
        );
        assert_eq!(parse_secret_string(&json).expect("json"), s);
        assert_eq!(
            parse_secret_string(&format!("{}\n", s.expose())).expect("plain"),
            s
        );
        assert!(parse_secret_string(r#"{"client_id":"x"}"#)
            .expect_err("missing")
            .0
            .contains("client_secret"));
        assert!(parse_secret_string("{not json").is_err());
    }

    #[tokio::test]
    async fn file_stamps_follow_renames_and_symlink_swaps() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("client_secret");
        std::fs::write(&file, "a").expect("write");
        let first = FileStamp::of(&file).await.expect("stamp");
        assert_eq!(FileStamp::of(&file).await.expect("stamp"), first, "stable");

        // Same size, atomically renamed over the path: another inode.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, "b").expect("write");
        std::fs::rename(&tmp, &file).expect("rename");
        let renamed = FileStamp::of(&file).await.expect("stamp");
        assert_ne!(renamed, first);

        // Kubernetes: path -> ..data/client_secret, ..data -> a timestamped dir, swapped atomically.
        let k8s = dir.path().join("mount");
        for (version, content) in [("..v1", "a"), ("..v2", "b")] {
            std::fs::create_dir_all(k8s.join(version)).expect("dir");
            std::fs::write(k8s.join(version).join("client_secret"), content).expect("write");
        }
        std::os::unix::fs::symlink("..v1", k8s.join("..data")).expect("symlink");
        let mounted = k8s.join("client_secret");
        std::os::unix::fs::symlink("..data/client_secret", &mounted).expect("symlink");
        let before = FileStamp::of(&mounted).await.expect("stamp");
        std::os::unix::fs::symlink("..v2", k8s.join("..data_tmp")).expect("symlink");
        std::fs::rename(k8s.join("..data_tmp"), k8s.join("..data")).expect("swap");
        assert_ne!(FileStamp::of(&mounted).await.expect("stamp"), before);
    }
}
