//! Runners and their OAuth clients in PostgreSQL (see the module doc of `postgres` for the locks).

use async_trait::async_trait;
use tether_domain::{ClientId, Generation, RunnerId, RunnerName};
use time::OffsetDateTime;

use super::{backend, insert_audit, limit, PostgresStore};
use crate::rows::{self, ClientRow, RunnerRow, CLIENT_SELECT, RUNNER_COLUMNS};
use crate::{
    to_ms, ClientRecord, CredentialStore, CredentialUse, LiveElsewhere, NewAuditEvent, NewRunner,
    PersistedStatus, RunnerRecord, RunnerStore, StoreError, StoreResult,
};

impl PostgresStore {
    async fn fetch_runner(&self, clause: &str, key: &str) -> StoreResult<Option<RunnerRecord>> {
        let sql = format!("SELECT {RUNNER_COLUMNS} FROM runners r WHERE {clause}");
        let row: Option<RunnerRow> = sqlx::query_as(&sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(RunnerRecord::try_from).transpose()
    }
}

#[async_trait]
impl RunnerStore for PostgresStore {
    async fn create_runner(
        &self,
        new: NewRunner,
        audit: NewAuditEvent,
    ) -> StoreResult<RunnerRecord> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(
            "INSERT INTO runners (id, name, description, platform, client_id, created_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new.id.to_string())
        .bind(new.name.as_str())
        .bind(new.description.as_str())
        .bind(new.platform.as_str())
        .bind(new.client_id.as_str())
        .bind(to_ms(new.created_at))
        .bind(&new.created_by)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query(
            "INSERT INTO credentials (runner_id, generation, state, verifier, created_at, created_by)
             VALUES ($1, $2, 'active', $3, $4, $5)",
        )
        .bind(new.id.to_string())
        .bind(i64::from(Generation::FIRST.0))
        .bind(new.verifier.as_bytes().as_slice())
        .bind(to_ms(new.created_at))
        .bind(&new.created_by)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        self.runner_by_id(new.id).await?.ok_or(StoreError::NotFound)
    }

    async fn list_runners(
        &self,
        after: Option<RunnerId>,
        n: u32,
    ) -> StoreResult<Vec<RunnerRecord>> {
        let sql = format!(
            "SELECT {RUNNER_COLUMNS} FROM runners r WHERE r.id > $1 ORDER BY r.id LIMIT $2"
        );
        let rows: Vec<RunnerRow> = sqlx::query_as(&sql)
            .bind(after.map(|a| a.to_string()).unwrap_or_default())
            .bind(limit(n))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.into_iter().map(RunnerRecord::try_from).collect()
    }

    async fn runner_by_id(&self, id: RunnerId) -> StoreResult<Option<RunnerRecord>> {
        self.fetch_runner("r.id = $1", &id.to_string()).await
    }

    async fn runner_by_name(&self, name: &RunnerName) -> StoreResult<Option<RunnerRecord>> {
        self.fetch_runner("r.name = $1", name.as_str()).await
    }

    async fn delete_runner(&self, id: RunnerId, audit: NewAuditEvent) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let deleted = sqlx::query("DELETE FROM runners WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        super::runs::end_active_runs(
            &mut tx,
            id,
            &tether_domain::RunEnd::runner_deleted(),
            to_ms(audit.at),
        )
        .await?;
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn save_runner_status(
        &self,
        id: RunnerId,
        s: &PersistedStatus,
        unless_live_elsewhere: Option<&LiveElsewhere>,
    ) -> StoreResult<()> {
        let runner = id.to_string();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SELECT id FROM runners WHERE id = $1 FOR NO KEY UPDATE")
            .bind(&runner)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        if let Some(l) = unless_live_elsewhere {
            if super::replicas::live_elsewhere(&mut tx, &runner, &l.replica, l.live_after).await? {
                return Ok(()); // the replica holding its session writes its status
            }
        }
        sqlx::query(
            "UPDATE runners SET status = $1, status_reason = $2, status_since = $3,
                 last_seen_at = COALESCE($4, last_seen_at), runner_version = COALESCE($5, runner_version)
             WHERE id = $6",
        )
        .bind(s.status.as_str())
        .bind(&s.reason)
        .bind(to_ms(s.since))
        .bind(s.last_seen_at.map(to_ms))
        .bind(&s.runner_version)
        .bind(&runner)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn reset_live_statuses(&self, reason: &str, at: OffsetDateTime) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE runners SET status = 'unknown', status_reason = $1, status_since = $2
             WHERE status IN ('running', 'pausing', 'paused', 'stopping')",
        )
        .bind(reason)
        .bind(to_ms(at))
        .execute(&self.pool)
        .await
        .map_err(backend)?
        .rows_affected())
    }

    async fn set_paused(
        &self,
        id: RunnerId,
        pause: Option<(String, Option<OffsetDateTime>)>,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let (by, until) = match pause {
            Some((by, until)) => (Some(by), until.map(to_ms)),
            None => (None, None),
        };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let changed =
            sqlx::query("UPDATE runners SET paused_by = $1, paused_until = $2 WHERE id = $3")
                .bind(by)
                .bind(until)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn pauses_due(&self, now: OffsetDateTime) -> StoreResult<Vec<(RunnerId, RunnerName)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, name FROM runners
             WHERE paused_by IS NOT NULL AND paused_until IS NOT NULL AND paused_until <= $1",
        )
        .bind(to_ms(now))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows::runner_refs(rows)
    }
}

#[async_trait]
impl CredentialStore for PostgresStore {
    async fn client_by_id(&self, client_id: &ClientId) -> StoreResult<Option<ClientRecord>> {
        let rows: Vec<ClientRow> = sqlx::query_as(CLIENT_SELECT)
            .bind(client_id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows::client_from_rows(client_id, rows)
    }

    /// One statement per use, each its own transaction: usage data holds at most one row lock at a
    /// time, so it can never deadlock with a refresh or a delete that locks several generations.
    async fn record_credential_use(&self, uses: &[CredentialUse]) -> StoreResult<()> {
        for u in uses {
            sqlx::query(
                "UPDATE credentials SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $1)
                 WHERE runner_id = $2 AND generation = $3",
            )
            .bind(to_ms(u.at))
            .bind(u.runner_id.to_string())
            .bind(i64::from(u.generation.0))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        }
        Ok(())
    }

    async fn record_first_token(
        &self,
        runner_id: RunnerId,
        generation: Generation,
        at: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let first = sqlx::query(
            "UPDATE credentials SET first_token_at = $1
             WHERE runner_id = $2 AND generation = $3 AND first_token_at IS NULL",
        )
        .bind(to_ms(at))
        .bind(runner_id.to_string())
        .bind(i64::from(generation.0))
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected()
            == 1;
        if first {
            insert_audit(&mut *tx, &audit).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(first)
    }

    async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let inserted = sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(to_ms(expires_at))
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        if inserted == 1 {
            insert_audit(&mut *tx, &audit).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn access_token_revoked(&self, jti: &str, now: OffsetDateTime) -> StoreResult<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $1 AND expires_at > $2)",
        )
        .bind(jti)
        .bind(to_ms(now))
        .fetch_one(&self.pool)
        .await
        .map_err(backend)
    }

    async fn revoked_access_tokens(
        &self,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(String, OffsetDateTime)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1")
                .bind(to_ms(now))
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(jti, ms)| (jti, crate::from_ms(ms)))
            .collect())
    }

    async fn purge_revoked_access_tokens(&self, now: OffsetDateTime) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= $1")
                .bind(to_ms(now))
                .execute(&self.pool)
                .await
                .map_err(backend)?
                .rows_affected(),
        )
    }
}
