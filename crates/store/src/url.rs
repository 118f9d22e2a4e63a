//! The database URL and pool settings. A URL may carry a password, so [`DatabaseUrl`] never shows
//! it: `Debug` and [`DatabaseUrl::redacted`] replace it with `***`, and only the backend that
//! connects reads it whole.

use std::time::Duration;

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    text: String,
    backend: Backend,
}

impl DatabaseUrl {
    /// Checks that the URL names a backend this build has, without connecting. The error is one
    /// line for the operator and does not repeat the URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        let scheme = text.split_once(':').map(|(s, _)| s).unwrap_or_default();
        let backend = match scheme {
            "sqlite" => Backend::Sqlite,
            "postgres" | "postgresql" => Backend::Postgres,
            _ => {
                return Err(format!(
                    "'{}' is not a database URL this build supports; use postgres://user@host/db \
                     or sqlite://path (or none, for SQLite in the data directory)",
                    scheme_or_start(text)
                ))
            }
        };
        Ok(Self {
            text: text.to_owned(),
            backend,
        })
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// `"sqlite"` or `"postgres"`, for the banner and metrics.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The URL whole, password included: only for connecting.
    pub(crate) fn expose(&self) -> &str {
        &self.text
    }

    /// The URL with any password (in the authority or a `password=` parameter) replaced by `***`.
    pub fn redacted(&self) -> String {
        let text = &self.text;
        let mut out = match text.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, tail) = rest
                    .find(['/', '?'])
                    .map_or((rest, ""), |i| rest.split_at(i));
                let authority = match authority.rsplit_once('@') {
                    Some((userinfo, host)) => match userinfo.split_once(':') {
                        Some((user, _)) => format!("{user}:***@{host}"),
                        None => format!("{userinfo}@{host}"),
                    },
                    None => authority.to_owned(),
                };
                format!("{scheme}://{authority}{tail}")
            }
            None => text.clone(),
        };
        if let Some(q) = out.find('?') {
            let (base, query) = out.split_at(q + 1);
            let query = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("&");
            out = format!("{base}{query}");
        }
        out
    }
}

/// The part of a rejected URL worth showing: its scheme, or (without one) a few characters.
fn scheme_or_start(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, _)) => format!("{scheme}:"),
        None => text.chars().take(12).collect(),
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&self.redacted())
            .finish()
    }
}

/// How a server-database backend (PostgreSQL) sizes and bounds its connections. SQLite ignores
/// these: it has one writer and a small read pool of its own.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections this process may hold open.
    pub max_connections: u32,
    /// Longest any one statement may run before the database cancels it.
    pub statement_timeout: Duration,
    /// Longest a call waits for a free connection before it fails as unavailable.
    pub acquire_timeout: Duration,
    /// How this process's connections are named in `pg_stat_activity` (the replica id).
    pub application_name: String,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            statement_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(5),
            application_name: "tether".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows() {
        let url =
            DatabaseUrl::parse("postgres://tether:s3cret@db.example:5432/tether?sslmode=require")
                .expect("valid");
        assert_eq!(
            url.redacted(),
            "postgres://tether:***@db.example:5432/tether?sslmode=require"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        let url =
            DatabaseUrl::parse("postgresql://db/tether?user=t&password=s3cret").expect("valid");
        assert_eq!(url.redacted(), "postgresql://db/tether?user=t&password=***");
        let url = DatabaseUrl::parse("postgres://a:b@c@host/db").expect("valid");
        assert!(!url.redacted().contains("b@c"), "{}", url.redacted());
    }

    #[test]
    fn only_known_schemes_are_accepted_and_the_error_does_not_repeat_the_url() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db")
                .expect("valid")
                .backend(),
            Backend::Sqlite
        );
        assert_eq!(
            DatabaseUrl::parse("postgresql://h/d")
                .expect("valid")
                .backend(),
            Backend::Postgres
        );
        let err = DatabaseUrl::parse("mysql://root:pw@h/d").expect_err("refused");
        assert!(err.contains("'mysql:'") && !err.contains("pw"), "{err}");
    }
}
