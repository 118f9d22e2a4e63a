//! Credential rotation in PostgreSQL. Every change locks the runner row first, so two refreshes of
//! one runner on two replicas run one after the other (the second sees the first's generation as
//! the previous one), and the version each returns is the one its own change produced.

use async_trait::async_trait;
use sqlx::{Postgres, Transaction};
use tether_domain::{ClientId, CredentialsVersion, RunnerId, RunnerName};
use time::OffsetDateTime;

use super::{backend, insert_audit, PostgresStore};
use crate::rows::{self, corrupt};
use crate::{
    to_ms, AuditOf, ExpiredGeneration, NewGeneration, Refreshed, RetiringRevoked, RotationMode,
    RotationStore, SealedSecret, StoreError, StoreResult,
};

/// Locks the runner row; `NotFound` if there is no such runner.
async fn lock_runner(tx: &mut Transaction<'_, Postgres>, runner: &str) -> StoreResult<()> {
    sqlx::query_scalar::<_, String>("SELECT id FROM runners WHERE id = $1 FOR UPDATE")
        .bind(runner)
        .fetch_optional(&mut **tx)
        .await
        .map_err(backend)?
        .map(drop)
        .ok_or(StoreError::NotFound)
}

/// Bumps a runner's credentials version inside the transaction that changes its credentials.
async fn bump_version(
    tx: &mut Transaction<'_, Postgres>,
    runner: &str,
) -> StoreResult<CredentialsVersion> {
    let v: i64 = sqlx::query_scalar(
        "UPDATE runners SET credentials_version = credentials_version + 1 WHERE id = $1
         RETURNING credentials_version",
    )
    .bind(runner)
    .fetch_one(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(CredentialsVersion(v))
}

/// Revokes the runner's retiring generations; returns them.
async fn revoke_retiring_of(
    tx: &mut Transaction<'_, Postgres>,
    runner: &str,
    at: OffsetDateTime,
    by: &str,
) -> StoreResult<Vec<i64>> {
    sqlx::query_scalar(
        "UPDATE credentials SET state = 'revoked', revoked_at = $1, revoked_by = $2
         WHERE runner_id = $3 AND state = 'retiring' RETURNING generation",
    )
    .bind(to_ms(at))
    .bind(by)
    .bind(runner)
    .fetch_all(&mut **tx)
    .await
    .map_err(backend)
}

#[async_trait]
impl RotationStore for PostgresStore {
    async fn refresh_credentials(
        &self,
        new: NewGeneration,
        audit: AuditOf<'_, Refreshed>,
    ) -> StoreResult<Refreshed> {
        let runner = new.runner_id.to_string();
        let at = to_ms(new.at);
        let mut tx = self.pool.begin().await.map_err(backend)?;
        lock_runner(&mut tx, &runner).await?;
        let previous: i64 = sqlx::query_scalar(
            "SELECT generation FROM credentials WHERE runner_id = $1 AND state = 'active'",
        )
        .bind(&runner)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
        let newest: i64 =
            sqlx::query_scalar("SELECT MAX(generation) FROM credentials WHERE runner_id = $1")
                .bind(&runner)
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
        let generation = newest + 1;
        // Older retiring generations end now, whatever the mode: at most two secrets work at once.
        let mut revoked = revoke_retiring_of(&mut tx, &runner, new.at, &new.created_by).await?;
        match new.mode {
            RotationMode::Revoke => {
                sqlx::query(
                    "UPDATE credentials SET state = 'revoked', revoked_at = $1, revoked_by = $2
                     WHERE runner_id = $3 AND generation = $4",
                )
                .bind(at)
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
                    "UPDATE credentials SET state = 'retiring', expires_at = $1
                     WHERE runner_id = $2 AND generation = $3",
                )
                .bind(to_ms(expires_at))
                .bind(&runner)
                .bind(previous)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
        }
        sqlx::query(
            "UPDATE credentials SET sealed_secret = NULL, reveal_until = NULL
             WHERE runner_id = $1 AND sealed_secret IS NOT NULL",
        )
        .bind(&runner)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query(
            "INSERT INTO credentials (runner_id, generation, state, verifier, created_at, created_by,
                                      sealed_secret, reveal_until)
             VALUES ($1, $2, 'active', $3, $4, $5, $6, $7)",
        )
        .bind(&runner)
        .bind(generation)
        .bind(new.verifier.as_bytes().as_slice())
        .bind(at)
        .bind(&new.created_by)
        .bind(&new.sealed_secret)
        .bind(to_ms(new.reveal_until))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let version = bump_version(&mut tx, &runner).await?;
        let refreshed = Refreshed {
            generation: rows::one_generation("credentials.generation", generation)?,
            previous: rows::one_generation("credentials.generation", previous)?,
            revoked: rows::generations("credentials.generation", revoked)?,
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
        let row: Option<(i64, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT generation, sealed_secret, reveal_until FROM credentials
             WHERE runner_id = $1 AND sealed_secret IS NOT NULL
             ORDER BY generation DESC LIMIT 1",
        )
        .bind(runner.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some((generation, sealed, reveal_until)) = row else {
            return Ok(None);
        };
        if reveal_until <= to_ms(now) {
            return Ok(None);
        }
        Ok(Some(SealedSecret {
            generation: rows::one_generation("credentials.generation", generation)?,
            sealed,
            reveal_until: crate::from_ms(reveal_until),
        }))
    }

    async fn purge_sealed_secrets(&self, now: OffsetDateTime) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE credentials SET sealed_secret = NULL, reveal_until = NULL
             WHERE sealed_secret IS NOT NULL AND reveal_until <= $1",
        )
        .bind(to_ms(now))
        .execute(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(backend)?;
        lock_runner(&mut tx, &runner).await?;
        let revoked = revoke_retiring_of(&mut tx, &runner, at, by).await?;
        let version = if revoked.is_empty() {
            let v: i64 =
                sqlx::query_scalar("SELECT credentials_version FROM runners WHERE id = $1")
                    .bind(&runner)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(backend)?;
            CredentialsVersion(v)
        } else {
            bump_version(&mut tx, &runner).await?
        };
        let outcome = RetiringRevoked {
            revoked: rows::generations("credentials.generation", revoked)?,
            version,
        };
        insert_audit(&mut *tx, &audit(&outcome)).await?;
        tx.commit().await.map_err(backend)?;
        Ok(outcome)
    }

    /// One transaction per runner, runners in id order (the lock order of every sweeper), each
    /// locking the runner row before its conditional update picks the generations: a refresh or a
    /// second sweeper that got there first leaves nothing for this one.
    async fn expire_retiring(
        &self,
        now: OffsetDateTime,
        audit: AuditOf<'_, ExpiredGeneration>,
    ) -> StoreResult<Vec<ExpiredGeneration>> {
        let now_ms = to_ms(now);
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT runner_id FROM credentials
             WHERE state = 'retiring' AND expires_at <= $1 ORDER BY runner_id",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut expired = Vec::new();
        for runner in due {
            let mut tx = self.pool.begin().await.map_err(backend)?;
            let row: Option<(String, String)> =
                sqlx::query_as("SELECT name, client_id FROM runners WHERE id = $1 FOR UPDATE")
                    .bind(&runner)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
            let Some((name, client_id)) = row else {
                continue; // deleted meanwhile, with its credentials
            };
            let generations: Vec<i64> = sqlx::query_scalar(
                "UPDATE credentials SET state = 'revoked', revoked_at = $1, revoked_by = 'system'
                 WHERE runner_id = $2 AND state = 'retiring' AND expires_at <= $1
                 RETURNING generation",
            )
            .bind(now_ms)
            .bind(&runner)
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
            for generation in rows::generations("credentials.generation", generations)? {
                let version = bump_version(&mut tx, &runner).await?;
                let e = ExpiredGeneration {
                    runner_id: rows::parse("runners.id", &runner)?,
                    runner_name: RunnerName::parse(&name)
                        .map_err(|e| corrupt("runners.name", e))?,
                    client_id: ClientId::parse(&client_id)
                        .map_err(|e| corrupt("runners.client_id", e))?,
                    generation,
                    version,
                };
                insert_audit(&mut *tx, &audit(&e)).await?;
                expired.push(e);
            }
            tx.commit().await.map_err(backend)?;
        }
        Ok(expired)
    }
}
