//! Server settings: command-line flags with `TETHER_*` environment twins, validated once at start-up
//! into a [`ServerConfig`]. Secrets supplied here are wrapped so `Debug` never prints them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use tether_domain::{ApiToken, Password};
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Run the tether control plane: the REST API, the OAuth token endpoint and runner sessions.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    tether server --dev                      # throwaway SQLite, an admin and its token printed\n  \
    tether server --data-dir /var/lib/tether --listen 0.0.0.0:8080 \\\n         --public-url https://tether.example.com")]
pub struct ServerArgs {
    /// Address and port to listen on.
    #[arg(long, env = "TETHER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the SQLite database and the generated key material (created if missing).
    #[arg(long, env = "TETHER_DATA_DIR", default_value = "./tether-data")]
    pub data_dir: PathBuf,

    /// The Ed25519 key that signs access tokens (32 bytes, mode 0600). Every replica of one control
    /// plane must use the same file; defaults to `<data-dir>/signing.key`, generated on first start.
    #[arg(long, env = "TETHER_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,

    /// The HMAC pepper that turns client secrets into verifiers (32 bytes, mode 0600); the same on
    /// every replica. Defaults to `<data-dir>/pepper.key`, generated on first start.
    #[arg(long, env = "TETHER_PEPPER_FILE")]
    pub pepper_file: Option<PathBuf>,

    /// The key that encrypts new secrets while they may be revealed (32 bytes, mode 0600); the same
    /// on every replica. Defaults to `<data-dir>/master.key`, generated on first start.
    #[arg(long, env = "TETHER_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,

    /// Database URL: `postgres://user:password@host:5432/db` for several replicas on one
    /// PostgreSQL (15+), or `sqlite://path`; defaults to SQLite in the data directory
    /// (`<data-dir>/tether.db`). The password is never printed or logged.
    #[arg(long, env = "TETHER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Hidden>,

    /// PostgreSQL: connections this process may hold open.
    #[arg(long, env = "TETHER_DATABASE_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    /// PostgreSQL: longest one statement may run before the database cancels it.
    #[arg(long, env = "TETHER_DATABASE_STATEMENT_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub database_statement_timeout_seconds: u64,

    /// PostgreSQL: longest a request waits for a free connection (or for the database to accept
    /// one) before it fails as unavailable (`503`); also how fast a replica notices that the
    /// database is back after a restart.
    #[arg(long, env = "TETHER_DATABASE_ACQUIRE_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub database_acquire_timeout_seconds: u64,

    /// The URL runners and clients use to reach this server; the OAuth issuer. Defaults to http://<listen>.
    #[arg(long, env = "TETHER_PUBLIC_URL")]
    pub public_url: Option<Url>,

    /// Development mode: a fresh SQLite database in a temporary directory (deleted on exit) and an
    /// admin whose password and API token are printed.
    #[arg(long)]
    pub dev: bool,

    /// On first start, create the admin's API token with exactly this value (32+ characters).
    #[arg(
        long,
        env = "TETHER_BOOTSTRAP_TOKEN",
        hide_env_values = true,
        hide = true
    )]
    pub bootstrap_token: Option<Hidden>,

    /// On first start, set the admin's password to this value instead of generating one.
    #[arg(
        long,
        env = "TETHER_ADMIN_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    pub admin_password: Option<Hidden>,

    /// Interval at which runner instances send heartbeats.
    #[arg(long, env = "TETHER_HEARTBEAT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_seconds: u64,

    /// Lifetime of access tokens issued at /oauth/token.
    #[arg(long, env = "TETHER_ACCESS_TOKEN_TTL_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=86400))]
    pub access_token_ttl_seconds: u64,

    /// How long a refreshed client secret can be revealed again.
    #[arg(long, env = "TETHER_REVEAL_WINDOW_SECONDS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub reveal_window_seconds: u64,

    /// How often in-memory usage data (last use, refused-token bursts) is written to the database.
    #[arg(long, env = "TETHER_FLUSH_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub flush_seconds: u64,

    /// How long a task may stay assigned to an instance that has disconnected before it is marked
    /// `lost` (its run fails as lost).
    #[arg(long, env = "TETHER_LOST_AFTER_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=604800))]
    pub lost_after_seconds: u64,

    /// With several replicas (PostgreSQL): how long this replica may go without hearing from its
    /// events listener before it stops trusting its caches (token requests, introspection and
    /// connects then read the database). A revoked secret is refused by every replica at most this
    /// long after the revoking call returned. Fractions allowed (`0.5`).
    #[arg(long, env = "TETHER_EVENTS_MAX_LAG_SECONDS", default_value_t = 2.0, value_parser = parse_lag)]
    pub events_max_lag_seconds: f64,

    /// Live sessions one runner may hold on this replica (one per instance); a new instance beyond
    /// it is refused with close code 4429, a reconnecting instance replaces its own session.
    #[arg(long, env = "TETHER_MAX_SESSIONS_PER_RUNNER", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100000))]
    pub max_sessions_per_runner: u64,

    /// On SIGTERM or Ctrl-C, how long to drain before stopping: `/readyz` fails at once and new
    /// runner sessions are refused (`503`), so the load balancer takes this replica out; after a
    /// quarter of this time the runner sessions are closed a few at a time, evenly spread over the
    /// rest, so their runners reconnect to the other replicas gradually instead of all at once.
    /// `0` closes every session at once. Keep it below the orchestrator's grace period
    /// (Kubernetes `terminationGracePeriodSeconds`).
    #[arg(long, env = "TETHER_SHUTDOWN_DRAIN_SECONDS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_drain_seconds: u64,

    /// Bytes of output one run's log keeps; the chunk that crosses it is cut, the log ends with a
    /// line saying so, and the run goes on (its later output is not kept).
    #[arg(long, env = "TETHER_MAX_LOG_BYTES_PER_RUN", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024 * 1024))]
    pub max_log_bytes_per_run: u64,

    /// Connections this replica holds open at most, runner sessions included; at the limit it
    /// stops accepting (new connections wait in the listen backlog) and logs a warning. `0`: the
    /// process's open-file limit less 256 kept for the database, logs and files.
    #[arg(long, env = "TETHER_MAX_CONNECTIONS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub max_connections: u64,

    /// How long a client may take to send a request's headers, counted from when the connection
    /// is ready for it: a kept-alive connection left unused is closed after this too.
    #[arg(long, env = "TETHER_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_read_timeout_seconds: u64,

    /// How long a request's connection may move no byte either way (a body that stops arriving,
    /// a response nobody reads) before it is closed. Runner sessions are exempt: their heartbeat
    /// decides their lifetime.
    #[arg(long, env = "TETHER_IDLE_TIMEOUT_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout_seconds: u64,

    /// Log format on stderr.
    #[arg(long, env = "TETHER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A command-line value that may hold a secret (a database password, a token): kept as given for
/// `into_config` to validate, never shown by `Debug`. Parsing cannot fail, so clap has nothing of
/// it to echo in an error either.
#[derive(Clone)]
pub struct Hidden(String);

impl Hidden {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Hidden {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: SQLite in the data directory.
    pub database_url: Option<tether_store::DatabaseUrl>,
    pub database_pool: tether_store::PoolSettings,
    /// Key files given explicitly; the ones not given live in the data directory.
    pub key_files: crate::keys::KeyFiles,
    pub public_url: Option<Url>,
    pub bootstrap_token: Option<ApiToken>,
    pub admin_password: Option<Password>,
    pub heartbeat: Duration,
    pub access_token_ttl: Duration,
    pub reveal_window: Duration,
    pub flush_interval: Duration,
    pub lost_after: Duration,
    pub events_max_lag: Duration,
    /// How long a shutdown drains runner sessions (`--shutdown-drain-seconds`); zero: no drain.
    pub shutdown_drain: Duration,
    /// Live sessions one runner may hold on this replica (`--max-sessions-per-runner`).
    pub max_sessions_per_runner: usize,
    /// The listener's connection limit and timeouts.
    pub connections: crate::http::serve::ConnectionSettings,
    /// Bytes of output one run's log keeps (`--max-log-bytes-per-run`).
    pub max_log_bytes_per_run: u64,
    /// How often a web UI event stream checks that its session still stands (not logged out,
    /// reset, deleted or given another role); it ends at most this long after.
    pub web_session_recheck: Duration,
}

/// 0.1 to 60 seconds.
fn parse_lag(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if (0.1..=60.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is out of range: use 0.1 to 60 seconds"))
    }
}

impl ServerConfig {
    /// Defaults suitable for tests and embedding: loopback, port 0, everything else as documented.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            database_url: None,
            database_pool: Default::default(),
            key_files: Default::default(),
            public_url: None,
            bootstrap_token: None,
            admin_password: None,
            heartbeat: Duration::from_secs(10),
            access_token_ttl: Duration::from_secs(600),
            reveal_window: Duration::from_secs(900),
            flush_interval: Duration::from_secs(10),
            lost_after: Duration::from_secs(600),
            events_max_lag: Duration::from_secs(2),
            shutdown_drain: Duration::ZERO,
            max_sessions_per_runner: 100,
            connections: Default::default(),
            max_log_bytes_per_run: 64 * 1024 * 1024,
            web_session_recheck: Duration::from_secs(5),
        }
    }
}

impl ServerArgs {
    pub fn into_config(self, data_dir: PathBuf) -> anyhow::Result<ServerConfig> {
        let bootstrap_token = self
            .bootstrap_token
            .map(|t| ApiToken::parse_supplied(t.expose()))
            .transpose()
            .context("TETHER_BOOTSTRAP_TOKEN is not usable")?;
        let admin_password = self
            .admin_password
            .map(|p| Password::parse(p.expose()))
            .transpose()
            .context("TETHER_ADMIN_PASSWORD is not usable")?;
        if let Some(url) = &self.public_url {
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                bail!("TETHER_PUBLIC_URL must be an http(s) URL with a host, got {url}");
            }
        }
        let database_url = self
            .database_url
            .as_ref()
            .map(|u| tether_store::DatabaseUrl::parse(u.expose()))
            .transpose()
            .map_err(|why| anyhow::anyhow!("TETHER_DATABASE_URL: {why}"))?;
        Ok(ServerConfig {
            listen: self.listen,
            data_dir,
            database_url,
            database_pool: tether_store::PoolSettings {
                max_connections: self.database_max_connections,
                statement_timeout: Duration::from_secs(self.database_statement_timeout_seconds),
                acquire_timeout: Duration::from_secs(self.database_acquire_timeout_seconds),
                ..Default::default()
            },
            key_files: crate::keys::KeyFiles {
                signing: self.signing_key_file,
                pepper: self.pepper_file,
                master: self.master_key_file,
            },
            public_url: self.public_url,
            bootstrap_token,
            admin_password,
            heartbeat: Duration::from_secs(self.heartbeat_seconds),
            access_token_ttl: Duration::from_secs(self.access_token_ttl_seconds),
            reveal_window: Duration::from_secs(self.reveal_window_seconds),
            flush_interval: Duration::from_secs(self.flush_seconds),
            lost_after: Duration::from_secs(self.lost_after_seconds),
            events_max_lag: Duration::from_secs_f64(self.events_max_lag_seconds),
            shutdown_drain: Duration::from_secs(self.shutdown_drain_seconds),
            max_sessions_per_runner: usize::try_from(self.max_sessions_per_runner)
                .unwrap_or(usize::MAX),
            connections: crate::http::serve::ConnectionSettings {
                max_connections: match self.max_connections {
                    0 => connections_within_file_limit(),
                    n => usize::try_from(n).unwrap_or(usize::MAX),
                },
                header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
                idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            },
            max_log_bytes_per_run: self.max_log_bytes_per_run,
            web_session_recheck: Duration::from_secs(5),
        })
    }
}

/// File descriptors kept back from connections when the limit comes from the open-file limit.
const RESERVED_FILES: u64 = 256;

/// `--max-connections 0`: the soft open-file limit less [`RESERVED_FILES`] (at least 64).
fn connections_within_file_limit() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let n = soft.saturating_sub(RESERVED_FILES).max(64);
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    #[test]
    fn debug_of_the_arguments_shows_no_secret() {
        let cli = Cli::try_parse_from([
            "tether",
            "--database-url",
            "postgres://tether:pw-in-the-url@db.example/tether",
            "--bootstrap-token",
            "bootstrap-token-value-0123456789abcdef",
            "--admin-password",
            "admin-password-value",
        ])
        .expect("parses");
        let shown = format!("{cli:?}");
        for secret in [
            "pw-in-the-url",
            "bootstrap-token-value",
            "admin-password-value",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        let config = cli.server.into_config("data".into()).expect("valid");
        assert_eq!(
            config.database_url.expect("a database").redacted(),
            "postgres://tether:***@db.example/tether"
        );
        assert!(config.bootstrap_token.is_some() && config.admin_password.is_some());
    }
}
