//! Credential rotation in SQLite. The isolation each method needs (see the trait) comes from
//! SQLite's one write transaction at a time: two concurrent refreshes of one runner run one after
//! the other, and the second sees the first's generation as the previous one. The partial unique
//! index on active generations is the last line of defence: a runner never has two.

use async_trait::async_trait;
use sqlx::Row;
use tether_domain::{ClientId, CredentialsVersion, Generation, RunnerId, RunnerName};

use super::{backend, corrupt, insert_audit, SqliteStore};
use time::OffsetDateTime;

use crate::{
    AuditOf, ExpiredGeneration, NewGeneration, Refreshed, RetiringRevoked, RotationMode,
    RotationStore, SealedSecret, StoreError, StoreResult,
};

#[async_trait]
impl RotationStore for SqliteStore {
    async fn refresh_credentials(
        &self,
        new: NewGeneration,
        audit: AuditOf<'_, Refreshed>,
    ) -> StoreResult<Refreshed> {
        let runner = new.runner_id.to_string();
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let previous: Option<u32> = sqlx::query_scalar(
            "SELECT generation FROM credentials WHERE runner_id = ? AND state = 'active'",
        )
        .bind(&runner)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(previous) = previous else {
            return Err(StoreError::NotFound);
        };
        let newest: u32 =
            sqlx::query_scalar("SELECT MAX(generation) FROM credentials WHERE runner_id = ?")
                .bind(&runner)
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
        let generation = newest + 1;
        // Older retiring generations end now, whatever the mode: at most two secrets work at once.
        let mut revoked: Vec<u32> = sqlx::query_scalar(
            "UPDATE credentials SET state = 'revoked', revoked_at = ?, revoked_by = ?
             WHERE runner_id = ? AND state = 'retiring' RETURNING generation",
        )
        .bind(crate::to_ms(new.at))
        .bind(&new.created_by)
        .bind(&runner)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        match new.mode {
            RotationMode::Revoke => {
                sqlx::query(
                    "UPDATE credentials SET state = 'revoked', revoked_at = ?, revoked_by = ?
                     WHERE runner_id = ? AND generation = ?",
                )
                .bind(crate::to_ms(new.at))
                .bind(&new.created_by)
                .bind(&runner)
                .bind(previous)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                revoked.push(previous);
            }
            RotationMode::Overlap { expires_at } => {
                sqlx::query(
                    "UPDATE credentials SET state = 'retiring', expires_at = ?
                     WHERE runner_id = ? AND generation = ?",
                )
                .bind(crate::to_ms(expires_at))
                .bind(&runner)
                .bind(previous)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
        }
        sqlx::query(
            "UPDATE credentials SET sealed_secret = NULL, reveal_until = NULL
             WHERE runner_id = ? AND sealed_secret IS NOT NULL",
        )
        .bind(&runner)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query(
            "INSERT INTO credentials (runner_id, generation, state, verifier, created_at, created_by,
                                      sealed_secret, reveal_until)
             VALUES (?, ?, 'active', ?, ?, ?, ?, ?)",
        )
        .bind(&runner)
        .bind(generation)
        .bind(new.verifier.as_bytes().as_slice())
        .bind(crate::to_ms(new.at))
        .bind(&new.created_by)
        .bind(&new.sealed_secret)
        .bind(crate::to_ms(new.reveal_until))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let version = bump_version(&mut tx, &runner).await?;
        revoked.sort_unstable();
        let refreshed = Refreshed {
            generation: Generation(generation),
            previous: Generation(previous),
            revoked: revoked.into_iter().map(Generation).collect(),
            version,
        };
        insert_audit(&mut *tx, &audit(&refreshed)).await?;
        tx.commit().await.map_err(backend)?;
        Ok(refreshed)
    }

    async fn sealed_secret(
        &self,
        runner: RunnerId,
        now: OffsetDateTime,
    ) -> StoreResult<Option<SealedSecret>> {
        let now_ms = crate::to_ms(now);
        let row = sqlx::query(
            "SELECT generation, sealed_secret, reveal_until FROM credentials
             WHERE runner_id = ? AND sealed_secret IS NOT NULL
             ORDER BY generation DESC LIMIT 1",
        )
        .bind(runner.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let reveal_until: i64 = row.try_get("reveal_until").map_err(backend)?;
        if reveal_until <= now_ms {
            return Ok(None);
        }
        Ok(Some(SealedSecret {
            generation: Generation(row.try_get("generation").map_err(backend)?),
            sealed: row.try_get("sealed_secret").map_err(backend)?,
            reveal_until: crate::from_ms(reveal_until),
        }))
    }

    async fn purge_sealed_secrets(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let now_ms = crate::to_ms(now);
        Ok(sqlx::query(
            "UPDATE credentials SET sealed_secret = NULL, reveal_until = NULL
             WHERE sealed_secret IS NOT NULL AND reveal_until <= ?",
        )
        .bind(now_ms)
        .execute(&self.writer)
        .await
        .map_err(backend)?
        .rows_affected())
    }

    async fn revoke_retiring(
        &self,
        runner: RunnerId,
        at: OffsetDateTime,
        by: &str,
        audit: AuditOf<'_, RetiringRevoked>,
    ) -> StoreResult<RetiringRevoked> {
        let runner = runner.to_string();
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let mut revoked: Vec<u32> = sqlx::query_scalar(
            "UPDATE credentials SET state = 'revoked', revoked_at = ?, revoked_by = ?
             WHERE runner_id = ? AND state = 'retiring' RETURNING generation",
        )
        .bind(crate::to_ms(at))
        .bind(by)
        .bind(&runner)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        revoked.sort_unstable();
        let version = if revoked.is_empty() {
            current_version(&mut tx, &runner).await?
        } else {
            bump_version(&mut tx, &runner).await?
        };
        let outcome = RetiringRevoked {
            revoked: revoked.into_iter().map(Generation).collect(),
            version,
        };
        insert_audit(&mut *tx, &audit(&outcome)).await?;
        tx.commit().await.map_err(backend)?;
        Ok(outcome)
    }

    async fn expire_retiring(
        &self,
        now: OffsetDateTime,
        audit: AuditOf<'_, ExpiredGeneration>,
    ) -> StoreResult<Vec<ExpiredGeneration>> {
        let now_ms = crate::to_ms(now);
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let rows = sqlx::query(
            "UPDATE credentials SET state = 'revoked', revoked_at = ?, revoked_by = 'system'
             WHERE state = 'retiring' AND expires_at <= ?
             RETURNING runner_id, generation",
        )
        .bind(now_ms)
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let mut expired = Vec::with_capacity(rows.len());
        for row in rows {
            let runner_id: String = row.try_get("runner_id").map_err(backend)?;
            let generation: u32 = row.try_get("generation").map_err(backend)?;
            let r = sqlx::query("SELECT name, client_id FROM runners WHERE id = ?")
                .bind(&runner_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
            let name: String = r.try_get("name").map_err(backend)?;
            let client_id: String = r.try_get("client_id").map_err(backend)?;
            let version = bump_version(&mut tx, &runner_id).await?;
            let e = ExpiredGeneration {
                runner_id: runner_id.parse().map_err(|e| corrupt("runners.id", e))?,
                runner_name: RunnerName::parse(&name).map_err(|e| corrupt("runners.name", e))?,
                client_id: ClientId::parse(&client_id)
                    .map_err(|e| corrupt("runners.client_id", e))?,
                generation: Generation(generation),
                version,
            };
            let ev = audit(&e);
            insert_audit(&mut *tx, &ev).await?;
            expired.push(e);
        }
        tx.commit().await.map_err(backend)?;
        Ok(expired)
    }
}

/// Bumps a runner's credentials version inside the transaction that changes its credentials.
async fn bump_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    runner: &str,
) -> StoreResult<CredentialsVersion> {
    let v: i64 = sqlx::query_scalar(
        "UPDATE runners SET credentials_version = credentials_version + 1 WHERE id = ?
         RETURNING credentials_version",
    )
    .bind(runner)
    .fetch_one(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(CredentialsVersion(v))
}

async fn current_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    runner: &str,
) -> StoreResult<CredentialsVersion> {
    let v: Option<i64> = sqlx::query_scalar("SELECT credentials_version FROM runners WHERE id = ?")
        .bind(runner)
        .fetch_optional(&mut **tx)
        .await
        .map_err(backend)?;
    v.map(CredentialsVersion).ok_or(StoreError::NotFound)
}
