//! The session registry in SQLite. One process uses an SQLite database, so the registry only ever
//! holds this process's sessions; it is kept all the same, so that both backends behave alike.

use async_trait::async_trait;
use tether_domain::{Generation, RunnerId};
use time::OffsetDateTime;

use super::{backend, SqliteStore};
use crate::rows;
use crate::{to_ms, NewSession, ReplicaStore, SharedPresence, SharedSession, StoreResult};

/// Statuses of a runner that some replica holds a session of.
pub(crate) const LIVE_STATUSES: &str = "('running', 'pausing', 'paused', 'stopping')";

/// Closes `replica`'s open sessions at `ended_ms` and marks each runner it held a session of
/// `unknown` unless a replica seen at or after `live_after` holds a session of it; returns the
/// runners marked.
async fn end_sessions(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    replica: &str,
    ended_ms: i64,
    live_after: OffsetDateTime,
    now: OffsetDateTime,
    reason: &str,
) -> StoreResult<Vec<RunnerId>> {
    sqlx::query(
        "UPDATE runner_sessions SET closed_at = ?2 WHERE replica_id = ?1 AND closed_at IS NULL",
    )
    .bind(replica)
    .bind(ended_ms)
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    // Every runner it held a session of, closed ones too (see the PostgreSQL backend).
    let runners: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT runner_id FROM runner_sessions WHERE replica_id = ?1 ORDER BY runner_id",
    )
    .bind(replica)
    .fetch_all(&mut **tx)
    .await
    .map_err(backend)?;
    let mut changed = Vec::new();
    for runner in runners {
        let n = sqlx::query(&format!(
            "UPDATE runners SET status = 'unknown', status_reason = ?2, status_since = ?3
             WHERE id = ?1 AND status IN {LIVE_STATUSES}
               AND NOT EXISTS (SELECT 1 FROM runner_sessions s JOIN replicas p ON p.id = s.replica_id
                               WHERE s.runner_id = ?1 AND s.closed_at IS NULL AND p.last_seen_at >= ?4)"
        ))
        .bind(&runner)
        .bind(reason)
        .bind(to_ms(now))
        .bind(to_ms(live_after))
        .execute(&mut **tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if n == 1 {
            changed.push(rows::parse("runners.id", &runner)?);
        }
    }
    Ok(changed)
}

#[async_trait]
impl ReplicaStore for SqliteStore {
    async fn replica_alive(
        &self,
        replica: &str,
        started_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO replicas (id, started_at, last_seen_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
        )
        .bind(replica)
        .bind(to_ms(started_at))
        .bind(to_ms(now))
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn session_opened(&self, replica: &str, s: &NewSession) -> StoreResult<()> {
        sqlx::query(rows::SESSION_OPENED_INSERT)
            .bind(replica)
            .bind(s.session_id as i64)
            .bind(s.runner_id.to_string())
            .bind(&s.instance_id)
            .bind(i64::from(s.generation.0))
            .bind(to_ms(s.connected_at))
            .bind(&s.hostname)
            .bind(&s.secret_source)
            .bind(s.hot_reload)
            .bind(&s.secret_file)
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn session_reauthenticated(
        &self,
        replica: &str,
        session_id: u64,
        generation: Generation,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        sqlx::query(rows::SESSION_REAUTH_UPDATE)
            .bind(replica)
            .bind(session_id as i64)
            .bind(i64::from(generation.0))
            .bind(to_ms(at))
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn sessions_elsewhere(
        &self,
        runners: &[RunnerId],
        except: &str,
        live_after: OffsetDateTime,
    ) -> StoreResult<Vec<SharedSession>> {
        let ids =
            serde_json::Value::from(runners.iter().map(ToString::to_string).collect::<Vec<_>>())
                .to_string();
        let found: Vec<rows::SharedSessionRow> = sqlx::query_as(&rows::sessions_elsewhere_sql(
            "SELECT value FROM json_each($1)",
        ))
        .bind(ids)
        .bind(except)
        .bind(to_ms(live_after))
        .bind(crate::SESSIONS_LISTED as i64)
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        found.into_iter().map(SharedSession::try_from).collect()
    }

    async fn session_closed(
        &self,
        replica: &str,
        session_id: u64,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE runner_sessions SET closed_at = ?3
             WHERE replica_id = ?1 AND session_id = ?2 AND closed_at IS NULL",
        )
        .bind(replica)
        .bind(session_id as i64)
        .bind(to_ms(at))
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn expire_replicas(
        &self,
        dead_before: OffsetDateTime,
        now: OffsetDateTime,
        reason: &str,
    ) -> StoreResult<Vec<RunnerId>> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let dead: Vec<(String, i64)> = sqlx::query_as(
            "DELETE FROM replicas WHERE last_seen_at < ?1 RETURNING id, last_seen_at",
        )
        .bind(to_ms(dead_before))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let mut changed = Vec::new();
        for (replica, last_seen) in dead {
            changed.extend(
                end_sessions(&mut tx, &replica, last_seen, dead_before, now, reason).await?,
            );
        }
        tx.commit().await.map_err(backend)?;
        Ok(changed)
    }

    async fn replica_gone(
        &self,
        replica: &str,
        ended_at: OffsetDateTime,
        live_after: OffsetDateTime,
        now: OffsetDateTime,
        reason: &str,
    ) -> StoreResult<Vec<RunnerId>> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        sqlx::query("DELETE FROM replicas WHERE id = ?1")
            .bind(replica)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let changed =
            end_sessions(&mut tx, replica, to_ms(ended_at), live_after, now, reason).await?;
        tx.commit().await.map_err(backend)?;
        Ok(changed)
    }

    async fn instance_presence(
        &self,
        runner: RunnerId,
        instance_id: &str,
        except: &str,
        live_after: OffsetDateTime,
    ) -> StoreResult<SharedPresence> {
        let rows: Vec<rows::PresenceRow> = sqlx::query_as(rows::PRESENCE_SELECT)
            .bind(runner.to_string())
            .bind(instance_id)
            .bind(except)
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        Ok(rows::presence(rows, live_after))
    }

    async fn purge_closed_sessions(&self, before: OffsetDateTime) -> StoreResult<u64> {
        Ok(
            sqlx::query(
                "DELETE FROM runner_sessions WHERE closed_at IS NOT NULL AND closed_at < ?",
            )
            .bind(to_ms(before))
            .execute(&self.writer)
            .await
            .map_err(backend)?
            .rows_affected(),
        )
    }
}
