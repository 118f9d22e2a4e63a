//! PostgreSQL backend (15+), for several control-plane replicas on one database.
//!
//! Correctness under concurrency is the database's: every replica runs the same methods at once,
//! at READ COMMITTED, and each method meets its trait's "Isolation:" note with row locks. The locks,
//! always taken in this order so that no two methods wait on each other in a cycle:
//!
//! 1. **runner row** (`SELECT … FROM runners WHERE id = $1 FOR UPDATE`): every change to a
//!    runner's credentials (refresh, ending an overlap, grace expiry — the sweep locks runners in
//!    id order), deleting it (the `DELETE` locks it), and creating a run for it (`FOR SHARE`, so a
//!    concurrent delete either sees the run or makes the create fail with `NotFound`);
//! 2. **run row** (`SELECT … FROM runs WHERE id = $1 FOR UPDATE`): every change to a run *or any of
//!    its tasks* — claims, updates from runners, cancels, lost tasks — so a task row never changes
//!    without its run's lock, and a statement that reads a task after taking that lock sees its
//!    latest committed state. Claims take it `SKIP LOCKED`: a claim that finds the run busy
//!    (another replica claiming or cancelling it) gives up at once instead of queueing behind it;
//! 3. **admin rows** (all of them, in id order) before a role change, so two demotions cannot each
//!    count the other as the remaining admin.
//!
//! The partial unique index "one active generation per runner" is the last line of defence, as in
//! SQLite. Migrations are sqlx's, checksummed, and taken under sqlx's advisory lock, so replicas
//! starting at once apply each migration once.

mod credentials;
pub mod events;
mod pipelines;
mod replicas;
mod runners;
mod runs;
mod task_queue;
mod users;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::{Conflict, DatabaseUrl, NewAuditEvent, PoolSettings, Store, StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// For `Debug` and logs: the URL without its password.
    shown: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.shown)
            .field("pool", &self.pool)
            .finish()
    }
}

impl PostgresStore {
    /// Connects (at most `settings.max_connections` connections, each with the statement timeout)
    /// and applies pending migrations.
    pub async fn open(url: &DatabaseUrl, settings: &PoolSettings) -> StoreResult<Self> {
        let timeout_ms = settings.statement_timeout.as_millis().max(1).to_string();
        let options: PgConnectOptions = url
            .expose()
            .parse::<PgConnectOptions>()
            .map_err(|e| StoreError::InvalidUrl(format!("{}: {}", url.redacted(), redact(&e))))?
            .application_name(&settings.application_name)
            .options([("statement_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(backend)?;
        migrate(&pool).await?;
        Ok(Self {
            pool,
            shown: url.redacted(),
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A parse error of the URL says what is wrong without repeating the URL (it may hold a password).
fn redact(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(inner) => {
            let text = inner.to_string();
            if text.contains("://") {
                "not a valid PostgreSQL URL".to_owned()
            } else {
                text
            }
        }
        _ => "not a valid PostgreSQL URL".to_owned(),
    }
}

async fn migrate(pool: &PgPool) -> StoreResult<()> {
    MIGRATOR.run(pool).await.map_err(crate::migrate_error)
}

#[async_trait]
impl Store for PostgresStore {
    fn shared(&self) -> bool {
        true
    }

    fn event_channel(&self) -> Option<std::sync::Arc<dyn crate::EventChannel>> {
        Some(std::sync::Arc::new(events::PgEventChannel {
            pool: self.pool.clone(),
        }))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn key_fingerprints(
        &self,
        given: &[(String, String)],
        at: time::OffsetDateTime,
    ) -> StoreResult<Vec<(String, String)>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut recorded = Vec::with_capacity(given.len());
        for (name, fingerprint) in given {
            sqlx::query(
                "INSERT INTO key_fingerprints (name, fingerprint, recorded_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(fingerprint)
            .bind(crate::to_ms(at))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            let have: String =
                sqlx::query_scalar("SELECT fingerprint FROM key_fingerprints WHERE name = $1")
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

/// Maps a driver error: uniqueness rules by constraint name, foreign keys to `NotFound`.
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    if let Some(db) = e.as_database_error() {
        if db.is_unique_violation() {
            return StoreError::Conflict(match db.constraint().unwrap_or_default() {
                "runners_name_key" => Conflict::RunnerName,
                "runners_client_id_key" => Conflict::ClientId,
                "users_username_key" => Conflict::Username,
                "api_tokens_verifier_key" => Conflict::ApiToken,
                "credentials_one_active" => Conflict::ActiveGeneration,
                other => Conflict::Other(other.to_owned()),
            });
        }
        if db.is_foreign_key_violation() {
            return StoreError::NotFound;
        }
    }
    if matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) {
        return StoreError::Unavailable(Box::new(e));
    }
    StoreError::Backend(Box::new(e))
}

pub(crate) async fn insert_audit<'c, E>(exec: E, ev: &NewAuditEvent) -> StoreResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, runner_id, runner_name, target, source_ip, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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

/// `limit` as PostgreSQL binds it.
pub(crate) fn limit(n: u32) -> i64 {
    i64::from(n)
}
