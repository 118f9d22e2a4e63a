//! The session registry in PostgreSQL: which replica holds which runner session. A runner's status
//! is written under its row lock (`FOR NO KEY UPDATE`, which leaves inserts of sessions that
//! reference it free to proceed), after its sessions on other live replicas were looked at.

use async_trait::async_trait;
use sqlx::{Postgres, Transaction};
use tether_domain::{Generation, RunnerId};
use time::OffsetDateTime;

use super::{backend, PostgresStore};
use crate::rows;
use crate::{to_ms, NewSession, ReplicaStore, SharedPresence, SharedSession, StoreResult};

/// Statuses of a runner that some replica holds a session of.
const LIVE_STATUSES: &str = "('running', 'pausing', 'paused', 'stopping')";

/// Whether a live replica other than `except` holds an open session of `runner`.
pub(super) async fn live_elsewhere(
    tx: &mut Transaction<'_, Postgres>,
    runner: &str,
    except: &str,
    live_after: OffsetDateTime,
) -> StoreResult<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM runner_sessions s JOIN replicas p ON p.id = s.replica_id
                        WHERE s.runner_id = $1 AND s.closed_at IS NULL AND s.replica_id <> $2
                          AND p.last_seen_at >= $3)",
    )
    .bind(runner)
    .bind(except)
    .bind(to_ms(live_after))
    .fetch_one(&mut **tx)
    .await
    .map_err(backend)
}

impl PostgresStore {
    /// Ends `replica` in one transaction: deletes its row (only if not seen since `dead_before`,
    /// when given: that conditional delete decides which of several sweeping replicas does it),
    /// closes its open sessions at `ended_ms`, and marks each runner it held a session of, in id
    /// order and under its row lock, `unknown` unless a replica seen at or after `live_after` holds
    /// it.
    async fn end_replica(
        &self,
        replica: &str,
        dead_before: Option<OffsetDateTime>,
        ended_ms: i64,
        live_after: OffsetDateTime,
        now: OffsetDateTime,
        reason: &str,
    ) -> StoreResult<Vec<RunnerId>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let deleted = sqlx::query(
            "DELETE FROM replicas WHERE id = $1 AND ($2::bigint IS NULL OR last_seen_at < $2)",
        )
        .bind(replica)
        .bind(dead_before.map(to_ms))
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if deleted == 0 && dead_before.is_some() {
            return Ok(Vec::new()); // another replica expired it, or it came back
        }
        sqlx::query(
            "UPDATE runner_sessions SET closed_at = $2 WHERE replica_id = $1 AND closed_at IS NULL",
        )
        .bind(replica)
        .bind(ended_ms)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        // Every runner it held a session of, closed ones too: a status this replica wrote while it
        // held one may still say `running` if the status of the close was never written.
        let runners: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT runner_id FROM runner_sessions WHERE replica_id = $1 ORDER BY runner_id",
        )
        .bind(replica)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let mut changed = Vec::new();
        for runner in runners {
            sqlx::query("SELECT id FROM runners WHERE id = $1 FOR NO KEY UPDATE")
                .bind(&runner)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            if live_elsewhere(&mut tx, &runner, replica, live_after).await? {
                continue;
            }
            let n = sqlx::query(&format!(
                "UPDATE runners SET status = 'unknown', status_reason = $2, status_since = $3
                 WHERE id = $1 AND status IN {LIVE_STATUSES}"
            ))
            .bind(&runner)
            .bind(reason)
            .bind(to_ms(now))
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
            if n == 1 {
                changed.push(rows::parse("runners.id", &runner)?);
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(changed)
    }
}

#[async_trait]
impl ReplicaStore for PostgresStore {
    async fn replica_alive(
        &self,
        replica: &str,
        started_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO replicas (id, started_at, last_seen_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
        )
        .bind(replica)
        .bind(to_ms(started_at))
        .bind(to_ms(now))
        .execute(&self.pool)
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
            .execute(&self.pool)
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
            .execute(&self.pool)
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
        let ids: Vec<String> = runners.iter().map(ToString::to_string).collect();
        let found: Vec<rows::SharedSessionRow> =
            sqlx::query_as(&rows::sessions_elsewhere_sql("SELECT unnest($1::text[])"))
                .bind(ids)
                .bind(except)
                .bind(to_ms(live_after))
                .bind(crate::SESSIONS_LISTED as i64)
                .fetch_all(&self.pool)
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
            "UPDATE runner_sessions SET closed_at = $3
             WHERE replica_id = $1 AND session_id = $2 AND closed_at IS NULL",
        )
        .bind(replica)
        .bind(session_id as i64)
        .bind(to_ms(at))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    /// One transaction per dead replica: the conditional delete of its row decides which live
    /// replica expires it; then its runners, in id order, each under its row lock.
    async fn expire_replicas(
        &self,
        dead_before: OffsetDateTime,
        now: OffsetDateTime,
        reason: &str,
    ) -> StoreResult<Vec<RunnerId>> {
        let dead: Vec<(String, i64)> = sqlx::query_as(
            "SELECT id, last_seen_at FROM replicas WHERE last_seen_at < $1 ORDER BY id",
        )
        .bind(to_ms(dead_before))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut changed = Vec::new();
        for (replica, last_seen) in dead {
            changed.extend(
                self.end_replica(
                    &replica,
                    Some(dead_before),
                    last_seen,
                    dead_before,
                    now,
                    reason,
                )
                .await?,
            );
        }
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
        self.end_replica(replica, None, to_ms(ended_at), live_after, now, reason)
            .await
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
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        Ok(rows::presence(rows, live_after))
    }

    async fn purge_closed_sessions(&self, before: OffsetDateTime) -> StoreResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM runner_sessions WHERE closed_at IS NOT NULL AND closed_at < $1",
        )
        .bind(to_ms(before))
        .execute(&self.pool)
        .await
        .map_err(backend)?
        .rows_affected())
    }
}
