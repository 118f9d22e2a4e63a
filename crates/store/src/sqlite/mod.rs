//! SQLite backend (WAL). Writes go through a single connection so transactions never fight over
//! the write lock; reads use a small pool and see a consistent snapshot.

mod audit;
mod credentials;
mod pipelines;
mod runners;
mod users;
mod web_sessions;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, SqlitePool};

use crate::{Conflict, NewAuditEvent, Store, StoreError, StoreResult};

/// Embedded migrations, applied in order, each once. Never edit one that has landed: add a new one.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "pipelines",
        include_str!("../../migrations/sqlite/0002_pipelines.sql"),
    ),
    (
        3,
        "reveal",
        include_str!("../../migrations/sqlite/0003_reveal.sql"),
    ),
    (
        4,
        "web_sessions",
        include_str!("../../migrations/sqlite/0004_web_sessions.sql"),
    ),
    (
        5,
        "credential_versions",
        include_str!("../../migrations/sqlite/0005_credential_versions.sql"),
    ),
];

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::open_with(options).await
    }

    /// Opens a `sqlite:` URL (as given by `--database-url`).
    pub async fn open_url(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(backend)?
            .create_if_missing(true);
        Self::open_with(options).await
    }

    async fn open_with(options: SqliteConnectOptions) -> StoreResult<Self> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(backend)?;
        Ok(Self { writer, reader })
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

async fn migrate(pool: &SqlitePool) -> StoreResult<()> {
    pool.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .await
    .map_err(backend)?;
    for (version, name, sql) in MIGRATIONS {
        let mut tx = pool.begin().await.map_err(backend)?;
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        if done.is_some() {
            continue;
        }
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
            .bind(version)
            .bind(name)
            .bind(crate::to_ms(time::OffsetDateTime::now_utc()))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        tracing::info!(
            migration.version = version,
            migration.name = name,
            "applied database migration"
        );
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    if let Some(db) = e.as_database_error() {
        if db.is_unique_violation() {
            // SQLite names the columns, not the constraint: "UNIQUE constraint failed: runners.name".
            // This is the one place that reads it.
            let columns = db.message().rsplit(": ").next().unwrap_or_default();
            return StoreError::Conflict(match columns {
                "runners.name" => Conflict::RunnerName,
                "runners.client_id" => Conflict::ClientId,
                "users.username" => Conflict::Username,
                "api_tokens.verifier" => Conflict::ApiToken,
                "credentials.runner_id" => Conflict::ActiveGeneration,
                other => Conflict::Other(other.to_owned()),
            });
        }
        if db.is_foreign_key_violation() {
            return StoreError::NotFound;
        }
    }
    StoreError::Backend(Box::new(e))
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

pub(crate) async fn insert_audit<'c, E>(exec: E, ev: &NewAuditEvent) -> StoreResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, runner_id, runner_name, target, source_ip, detail)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(crate::to_ms(ev.at))
    .bind(&ev.actor)
    .bind(&ev.action)
    .bind(ev.runner_id.map(|id| id.to_string()))
    .bind(&ev.runner_name)
    .bind(&ev.target)
    .bind(&ev.source_ip)
    .bind(ev.detail.to_string())
    .execute(exec)
    .await
    .map_err(backend)?;
    Ok(())
}
