//! Runners and their OAuth clients in SQLite: the runner rows (status, pause), the credential
//! generations the token endpoint reads (`CredentialStore`), their use, and revoked access tokens.

use async_trait::async_trait;
use tether_domain::{ClientId, Generation, RunnerId, RunnerName};
use time::OffsetDateTime;

use super::{backend, insert_audit, SqliteStore};
use crate::rows::{self, ClientRow, RunnerRow, CLIENT_SELECT, RUNNER_COLUMNS};
use crate::{
    from_ms, to_ms, ClientRecord, CredentialStore, CredentialUse, LiveElsewhere, NewAuditEvent,
    NewRunner, PersistedStatus, RunnerRecord, RunnerStore, StoreResult,
};

impl SqliteStore {
    async fn fetch_runner(&self, clause: &str, key: &str) -> StoreResult<Option<RunnerRecord>> {
        let sql = format!("SELECT {RUNNER_COLUMNS} FROM runners r WHERE {clause}");
        let row: Option<RunnerRow> = sqlx::query_as(&sql)
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.map(RunnerRecord::try_from).transpose()
    }
}

#[async_trait]
impl RunnerStore for SqliteStore {
    async fn create_runner(
        &self,
        new: NewRunner,
        audit: NewAuditEvent,
    ) -> StoreResult<RunnerRecord> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        sqlx::query(
            "INSERT INTO runners (id, name, description, platform, client_id, created_at, created_by)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
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
             VALUES (?, ?, 'active', ?, ?, ?)",
        )
        .bind(new.id.to_string())
        .bind(Generation::FIRST.0)
        .bind(new.verifier.as_bytes().as_slice())
        .bind(to_ms(new.created_at))
        .bind(&new.created_by)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(self
            .runner_by_id(new.id)
            .await?
            .ok_or(crate::StoreError::NotFound)?)
    }

    async fn list_runners(
        &self,
        after: Option<RunnerId>,
        limit: u32,
    ) -> StoreResult<Vec<RunnerRecord>> {
        // UUIDv7 text sorts in creation order.
        let sql =
            format!("SELECT {RUNNER_COLUMNS} FROM runners r WHERE r.id > ? ORDER BY r.id LIMIT ?");
        let rows: Vec<RunnerRow> = sqlx::query_as(&sql)
            .bind(after.map(|a| a.to_string()).unwrap_or_default())
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.into_iter().map(RunnerRecord::try_from).collect()
    }

    async fn runner_by_id(&self, id: RunnerId) -> StoreResult<Option<RunnerRecord>> {
        self.fetch_runner("r.id = ?", &id.to_string()).await
    }

    async fn runner_by_name(&self, name: &RunnerName) -> StoreResult<Option<RunnerRecord>> {
        self.fetch_runner("r.name = ?", name.as_str()).await
    }

    async fn delete_runner(&self, id: RunnerId, audit: NewAuditEvent) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let deleted = sqlx::query("DELETE FROM runners WHERE id = ?")
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
        // One writer: the check and the update cannot interleave with a session being recorded.
        sqlx::query(
            "UPDATE runners SET status = ?1, status_reason = ?2, status_since = ?3,
                 last_seen_at = COALESCE(?4, last_seen_at), runner_version = COALESCE(?5, runner_version)
             WHERE id = ?6
               AND (?7 IS NULL OR NOT EXISTS (
                   SELECT 1 FROM runner_sessions x JOIN replicas p ON p.id = x.replica_id
                   WHERE x.runner_id = ?6 AND x.closed_at IS NULL AND x.replica_id <> ?7
                     AND p.last_seen_at >= ?8))",
        )
        .bind(s.status.as_str())
        .bind(&s.reason)
        .bind(to_ms(s.since))
        .bind(s.last_seen_at.map(to_ms))
        .bind(&s.runner_version)
        .bind(id.to_string())
        .bind(unless_live_elsewhere.map(|l| l.replica.as_str()))
        .bind(unless_live_elsewhere.map(|l| to_ms(l.live_after)))
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn reset_live_statuses(&self, reason: &str, at: OffsetDateTime) -> StoreResult<u64> {
        let at_ms = to_ms(at);
        let changed = sqlx::query(
            "UPDATE runners SET status = 'unknown', status_reason = ?, status_since = ?
             WHERE status IN ('running', 'pausing', 'paused', 'stopping')",
        )
        .bind(reason)
        .bind(at_ms)
        .execute(&self.writer)
        .await
        .map_err(backend)?
        .rows_affected();
        Ok(changed)
    }

    async fn set_paused(
        &self,
        id: RunnerId,
        pause: Option<(String, Option<OffsetDateTime>)>,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let (by, until) = match pause {
            Some((by, until)) => (Some(by), until.map(to_ms)),
            None => (None, None),
        };
        let changed =
            sqlx::query("UPDATE runners SET paused_by = ?, paused_until = ? WHERE id = ?")
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
        let now_ms = to_ms(now);
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, name FROM runners WHERE paused_by IS NOT NULL AND paused_until IS NOT NULL AND paused_until <= ?",
        )
        .bind(now_ms)
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows::runner_refs(rows)
    }
}

#[async_trait]
impl CredentialStore for SqliteStore {
    async fn client_by_id(&self, client_id: &ClientId) -> StoreResult<Option<ClientRecord>> {
        let rows: Vec<ClientRow> = sqlx::query_as(CLIENT_SELECT)
            .bind(client_id.as_str())
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows::client_from_rows(client_id, rows)
    }

    async fn record_credential_use(&self, uses: &[CredentialUse]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await.map_err(backend)?;
        for u in uses {
            sqlx::query(
                "UPDATE credentials SET last_used_at = MAX(COALESCE(last_used_at, 0), ?)
                 WHERE runner_id = ? AND generation = ?",
            )
            .bind(to_ms(u.at))
            .bind(u.runner_id.to_string())
            .bind(u.generation.0)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn record_first_token(
        &self,
        runner_id: RunnerId,
        generation: Generation,
        at: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let at_ms = to_ms(at);
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let first = sqlx::query(
            "UPDATE credentials SET first_token_at = ?
             WHERE runner_id = ? AND generation = ? AND first_token_at IS NULL",
        )
        .bind(at_ms)
        .bind(runner_id.to_string())
        .bind(generation.0)
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
        let expires_at_ms = to_ms(expires_at);
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let inserted =
            sqlx::query("INSERT OR IGNORE INTO revoked_tokens (jti, expires_at) VALUES (?, ?)")
                .bind(jti)
                .bind(expires_at_ms)
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
            "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = ? AND expires_at > ?)",
        )
        .bind(jti)
        .bind(to_ms(now))
        .fetch_one(&self.reader)
        .await
        .map_err(backend)
    }

    async fn revoked_access_tokens(
        &self,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(String, OffsetDateTime)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > ?")
                .bind(to_ms(now))
                .fetch_all(&self.reader)
                .await
                .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(jti, ms)| (jti, from_ms(ms)))
            .collect())
    }

    async fn purge_revoked_access_tokens(&self, now: OffsetDateTime) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= ?")
                .bind(to_ms(now))
                .execute(&self.writer)
                .await
                .map_err(backend)?
                .rows_affected(),
        )
    }
}
