//! SQLite backend (WAL). Writes go through a single connection so transactions never fight over
//! the write lock; reads use a small pool and see a consistent snapshot.

mod audit;
mod credentials;
mod pipelines;
mod replicas;
mod runners;
mod runs;
mod task_queue;
mod users;
mod web_sessions;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub(crate) use crate::rows::corrupt;
use crate::{Conflict, NewAuditEvent, Store, StoreError, StoreResult};

/// Embedded migrations (`migrations/sqlite/NNNN_name.sql`), applied in order, each once, with a
/// checksum: a database whose applied migration differs from the embedded one is refused. Never
/// edit one that has landed: add a new one.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

/// The database holds verifiers, sealed secrets and the audit trail: only its owner may read it.
/// A missing file is created with mode 0600 before SQLite opens it (SQLite gives its `-wal` and
/// `-shm` files the database file's mode); an existing one that others could read is narrowed to
/// 0600, with its `-wal` and `-shm` files.
fn private_files(path: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.as_os_str().is_empty() || path == Path::new(":memory:") {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        // Let SQLite report a missing directory or a read-only place in its own words.
        Err(_) => return Ok(()),
    }
    let mut names = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        names.push(name.into());
    }
    for name in names {
        let Ok(meta) = std::fs::metadata(&name) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&name, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(|e| {
                    StoreError::Backend(
                        format!(
                            "{} can be read by others (mode {:o}) and could not be narrowed to 0600: {e}",
                            name.display(),
                            mode & 0o777
                        )
                        .into(),
                    )
                })?;
            tracing::info!(file = %name.display(), "narrowed the database file to mode 0600 (others could read it)");
        }
    }
    Ok(())
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
        private_files(options.get_filename())?;
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
    bridge_hand_rolled_migrations(pool).await?;
    MIGRATOR.run(pool).await.map_err(crate::migrate_error)
}

/// Databases made before migrations had checksums record them in `schema_migrations` (version,
/// name). Moves that record to sqlx's table, with the embedded migrations' checksums (those files
/// are the ones that were applied: they have never been edited), in one transaction.
async fn bridge_hand_rolled_migrations(pool: &SqlitePool) -> StoreResult<()> {
    use sqlx::migrate::Migrate as _;
    let mut tx = pool.begin().await.map_err(backend)?;
    let old: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(backend)?;
    if !old {
        return Ok(());
    }
    tx.ensure_migrations_table()
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
    for version in applied {
        let Some(m) = MIGRATOR.iter().find(|m| m.version == version) else {
            return Err(StoreError::Corrupt(format!(
                "the database has migration {version}, which this build does not know: it was \
                 written by a newer tether; run that version (or newer) instead"
            )));
        };
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?, ?, TRUE, ?, 0)",
        )
        .bind(m.version)
        .bind(&*m.description)
        .bind(&*m.checksum)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    }
    sqlx::query("DROP TABLE schema_migrations")
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    tx.commit().await.map_err(backend)?;
    tracing::info!("moved the record of applied migrations to _sqlx_migrations");
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

    async fn key_fingerprints(
        &self,
        given: &[(String, String)],
        at: time::OffsetDateTime,
    ) -> StoreResult<Vec<(String, String)>> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let mut recorded = Vec::with_capacity(given.len());
        for (name, fingerprint) in given {
            sqlx::query(
                "INSERT INTO key_fingerprints (name, fingerprint, recorded_at) VALUES (?, ?, ?)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(fingerprint)
            .bind(crate::to_ms(at))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            let have: String =
                sqlx::query_scalar("SELECT fingerprint FROM key_fingerprints WHERE name = ?")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(backend)?;
            recorded.push((name.clone(), have));
        }
        tx.commit().await.map_err(backend)?;
        Ok(recorded)
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
