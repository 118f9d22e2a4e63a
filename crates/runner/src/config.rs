//! Runner settings from the environment (names follow the hybrid-runner convention), validated
//! before any network call: a misconfigured runner says what is wrong in one line and exits 2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tether_domain::{ClientId, ClientSecret};
use url::Url;

/// Run a tether runner: connect outbound to the control plane and execute the tasks it assigns.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Exactly one secret source must be set: OAUTH_CLIENT_SECRET (the value), \
OAUTH_CLIENT_SECRET_FILE (a mounted file, re-read when it changes) or OAUTH_CLIENT_SECRET_ARN \
(AWS Secrets Manager; JSON {\"client_id\",\"client_secret\"} or a plain string; re-read every \
TETHER_SECRET_REFRESH_SECONDS, default 300, and at once when the control plane rotates the secret).\n\n\
Example:\n  TETHER_URL=https://tether.example.com OAUTH_CLIENT_ID=tcid_... \\\n  \
OAUTH_CLIENT_SECRET_FILE=/var/run/secrets/tether/client_secret tether runner"
)]
pub struct RunnerArgs {
    /// Base URL of the control plane.
    #[arg(long, env = "TETHER_URL")]
    pub url: Option<String>,

    /// The runner's OAuth client id (`tcid_...`).
    #[arg(long, env = "OAUTH_CLIENT_ID")]
    pub client_id: Option<String>,

    /// The client secret itself (as injected by ECS, Container Apps, SPCS or a Kubernetes env var).
    #[arg(long, env = "OAUTH_CLIENT_SECRET", hide_env_values = true, hide = true)]
    pub client_secret: Option<String>,

    /// A file holding the client secret (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "OAUTH_CLIENT_SECRET_FILE")]
    pub client_secret_file: Option<PathBuf>,

    /// The ARN (or name) of an AWS Secrets Manager secret holding the client secret.
    #[arg(long, env = "OAUTH_CLIENT_SECRET_ARN")]
    pub client_secret_arn: Option<String>,

    /// PEM file of extra CA certificates to trust for the control plane (private CAs, TLS proxies).
    #[arg(long, env = "TETHER_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Tasks this instance runs at once.
    #[arg(long, env = "TETHER_MAX_TASKS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub max_tasks: u32,

    /// Working directory for tasks and the update spool.
    #[arg(long, env = "TETHER_WORKDIR", default_value = "./tether-work")]
    pub workdir: PathBuf,

    /// Platform reported to the control plane.
    #[arg(long, env = "TETHER_PLATFORM", default_value = "local")]
    pub platform: String,

    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, env = "TETHER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// With OAUTH_CLIENT_SECRET_ARN: how often (seconds, 1-86400) the secret is re-read while
    /// connected, so a new secret is picked up without a restart. Default 300.
    #[arg(long, env = "TETHER_SECRET_REFRESH_SECONDS")]
    pub secret_refresh_seconds: Option<String>,
}

/// How often an AWS Secrets Manager secret is re-read while a session is up, by default.
pub const DEFAULT_SECRET_REFRESH: Duration = Duration::from_secs(300);

/// Environment variable for the AWS Secrets Manager re-read interval (flag `--secret-refresh-seconds`).
pub const SECRET_REFRESH_ENV: &str = "TETHER_SECRET_REFRESH_SECONDS";

/// Where the client secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSourceConfig {
    Value(ClientSecret),
    File(PathBuf),
    AwsSecretsManager {
        /// The secret's ARN or name.
        secret_id: String,
        /// How often it is re-read while a session is up (`TETHER_SECRET_REFRESH_SECONDS`).
        refresh: Duration,
    },
}

impl SecretSourceConfig {
    /// How the operator configured it, for messages (never the value).
    pub fn describe(&self) -> String {
        match self {
            SecretSourceConfig::Value(_) => "OAUTH_CLIENT_SECRET".into(),
            SecretSourceConfig::File(p) => format!("OAUTH_CLIENT_SECRET_FILE ({})", p.display()),
            SecretSourceConfig::AwsSecretsManager { secret_id, .. } => {
                format!("OAUTH_CLIENT_SECRET_ARN ({secret_id})")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub url: Url,
    pub client_id: ClientId,
    pub secret: SecretSourceConfig,
    pub ca_file: Option<PathBuf>,
    pub max_tasks: u32,
    pub workdir: PathBuf,
    pub platform: String,
    pub metrics_listen: Option<SocketAddr>,
}

/// A configuration problem: printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl RunnerArgs {
    pub fn validate(self) -> Result<RunnerConfig, ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        let Some(raw_url) = self.url.filter(|u| !u.trim().is_empty()) else {
            return err("TETHER_URL is not set: set it to the control plane's base URL, e.g. https://tether.example.com".into());
        };
        let url = match Url::parse(raw_url.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            _ => {
                return err(format!(
                    "TETHER_URL is not an http(s) URL with a host: '{raw_url}'"
                ))
            }
        };
        let Some(raw_id) = self.client_id.filter(|c| !c.trim().is_empty()) else {
            return err("OAUTH_CLIENT_ID is not set: use the client_id shown when the runner was created (tcid_...)".into());
        };
        let client_id = match ClientId::parse(raw_id.trim()) {
            Ok(c) => c,
            Err(e) => return err(format!("OAUTH_CLIENT_ID {e}")),
        };
        let mut sources = Vec::new();
        if let Some(v) = self.client_secret.filter(|v| !v.is_empty()) {
            match ClientSecret::parse(v.trim()) {
                Ok(s) => sources.push(SecretSourceConfig::Value(s)),
                Err(e) => return err(format!("OAUTH_CLIENT_SECRET {e}")),
            }
        }
        if let Some(p) = self.client_secret_file {
            let contents = match std::fs::read_to_string(&p) {
                Ok(c) => c,
                Err(e) => {
                    return err(format!(
                        "OAUTH_CLIENT_SECRET_FILE {} cannot be read: {e}",
                        p.display()
                    ))
                }
            };
            if let Err(e) = ClientSecret::parse(contents.trim()) {
                return err(format!(
                    "the secret in OAUTH_CLIENT_SECRET_FILE {} {e}",
                    p.display()
                ));
            }
            sources.push(SecretSourceConfig::File(p));
        }
        let refresh = secret_refresh(self.secret_refresh_seconds.as_deref())?;
        if let Some(arn) = self.client_secret_arn.filter(|a| !a.trim().is_empty()) {
            sources.push(SecretSourceConfig::AwsSecretsManager {
                secret_id: arn.trim().to_owned(),
                refresh,
            });
        }
        let secret = match sources.len() {
            1 => sources.remove(0),
            0 => return err("no client secret: set exactly one of OAUTH_CLIENT_SECRET, OAUTH_CLIENT_SECRET_FILE or OAUTH_CLIENT_SECRET_ARN".into()),
            _ => {
                let names: Vec<String> = sources.iter().map(|s| s.describe()).collect();
                return err(format!("more than one client secret source is set ({}); set exactly one", names.join(", ")));
            }
        };
        if let Some(ca) = &self.ca_file {
            if let Err(e) = std::fs::metadata(ca) {
                return err(format!(
                    "TETHER_CA_FILE {} cannot be read: {e}",
                    ca.display()
                ));
            }
        }
        Ok(RunnerConfig {
            url,
            client_id,
            secret,
            ca_file: self.ca_file,
            max_tasks: self.max_tasks,
            workdir: self.workdir,
            platform: self.platform,
            metrics_listen: self.metrics_listen,
        })
    }
}

/// `TETHER_SECRET_REFRESH_SECONDS`: whole seconds, 1 to 86400; unset means the default.
fn secret_refresh(raw: Option<&str>) -> Result<Duration, ConfigError> {
    let Some(value) = raw.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_SECRET_REFRESH);
    };
    match value.parse::<u64>() {
        Ok(seconds @ 1..=86_400) => Ok(Duration::from_secs(seconds)),
        _ => Err(ConfigError(format!(
            "{SECRET_REFRESH_ENV} must be a whole number of seconds from 1 to 86400, not '{value}'"
        ))),
    }
}

/// How often the secret source is looked at while a session is up. Tests shorten these.
#[derive(Debug, Clone)]
pub struct ReloadTiming {
    /// `OAUTH_CLIENT_SECRET_FILE`: how often the file is checked.
    pub file_poll: Duration,
    /// `OAUTH_CLIENT_SECRET_ARN` after `credentials_rotated`, while it still holds the old secret:
    /// re-read this often ...
    pub rotated_poll: Duration,
    /// ... for this long, then every `TETHER_SECRET_REFRESH_SECONDS` again.
    pub rotated_window: Duration,
}

impl Default for ReloadTiming {
    fn default() -> Self {
        Self {
            file_poll: Duration::from_secs(1),
            rotated_poll: Duration::from_secs(5),
            rotated_window: Duration::from_secs(600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunnerArgs {
        RunnerArgs {
            url: Some("http://127.0.0.1:8080".into()),
            client_id: Some(ClientId::generate().as_str().to_owned()),
            client_secret: Some(ClientSecret::generate().expose().to_owned()),
            client_secret_file: None,
            client_secret_arn: None,
            ca_file: None,
            max_tasks: 20,
            workdir: "w".into(),
            platform: "local".into(),
            metrics_listen: None,
            secret_refresh_seconds: None,
        }
    }

    fn message(a: RunnerArgs) -> String {
        a.validate().expect_err("invalid").0
    }

    #[test]
    fn the_secret_refresh_interval_comes_from_its_flag() {
        let mut a = args();
        a.client_secret = None;
        a.client_secret_arn = Some("arn:aws:secretsmanager:us-east-1:1:secret:x".into());
        a.secret_refresh_seconds = Some("7".into());
        match a.validate().expect("valid").secret {
            SecretSourceConfig::AwsSecretsManager { refresh, .. } => {
                assert_eq!(refresh, std::time::Duration::from_secs(7));
            }
            other => panic!("{other:?}"),
        }
        let mut bad = args();
        bad.secret_refresh_seconds = Some("0".into());
        assert!(message(bad).contains(SECRET_REFRESH_ENV));
    }

    #[test]
    fn valid_value_source() {
        assert!(matches!(
            args().validate().expect("valid").secret,
            SecretSourceConfig::Value(_)
        ));
    }

    #[test]
    fn misconfigurations_say_what_to_fix() {
        assert!(message(RunnerArgs {
            client_secret: None,
            ..args()
        })
        .contains("exactly one of"));
        let two = RunnerArgs {
            client_secret_arn: Some("arn:aws:secretsmanager:x".into()),
            ..args()
        };
        assert!(message(two).contains("more than one"));
        let bad = RunnerArgs {
            client_secret: Some("tcs_truncated".into()),
            ..args()
        };
        assert!(message(bad).contains("cut off"));
        assert!(message(RunnerArgs {
            url: Some("ftp://x".into()),
            ..args()
        })
        .contains("TETHER_URL"));
        assert!(message(RunnerArgs {
            url: Some("not a url".into()),
            ..args()
        })
        .contains("TETHER_URL"));
        assert!(message(RunnerArgs {
            url: None,
            ..args()
        })
        .contains("TETHER_URL is not set"));
        assert!(message(RunnerArgs {
            client_id: Some("abc".into()),
            ..args()
        })
        .contains("OAUTH_CLIENT_ID"));
        let missing = RunnerArgs {
            client_secret: None,
            client_secret_file: Some("/nonexistent/s".into()),
            ..args()
        };
        assert!(message(missing).contains("cannot be read"));
    }

    #[test]
    fn file_source_is_checked_up_front() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{}\n", ClientSecret::generate().expose())).expect("write");
        let ok = RunnerArgs {
            client_secret: None,
            client_secret_file: Some(path.clone()),
            ..args()
        };
        assert_eq!(
            ok.validate().expect("valid").secret,
            SecretSourceConfig::File(path.clone())
        );
        std::fs::write(&path, "tcs_garbage").expect("write");
        let bad = RunnerArgs {
            client_secret: None,
            client_secret_file: Some(path),
            ..args()
        };
        assert!(message(bad).contains("OAUTH_CLIENT_SECRET_FILE"));
    }

    #[test]
    fn secret_refresh_interval() {
        assert_eq!(
            secret_refresh(None).expect("default"),
            DEFAULT_SECRET_REFRESH
        );
        assert_eq!(
            secret_refresh(Some("")).expect("empty"),
            DEFAULT_SECRET_REFRESH
        );
        assert_eq!(
            secret_refresh(Some(" 60 ")).expect("60"),
            Duration::from_secs(60)
        );
        assert_eq!(
            secret_refresh(Some("1")).expect("1"),
            Duration::from_secs(1)
        );
        for bad in ["0", "-5", "1.5", "5m", "86401"] {
            let e = secret_refresh(Some(bad)).expect_err(bad).0;
            assert!(e.contains(SECRET_REFRESH_ENV) && e.contains(bad), "{e}");
        }
    }
}
