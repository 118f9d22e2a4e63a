//! Web UI sessions in SQLite, keyed by the verifier of the cookie's id (never the id itself).

use async_trait::async_trait;
use tether_domain::Verifier;
use time::OffsetDateTime;

use super::{backend, insert_audit, SqliteStore};
use crate::rows::{WebSessionRow, WEB_SESSION_SELECT};
use crate::{to_ms, NewAuditEvent, NewWebSession, StoreResult, WebSessionRecord, WebSessionStore};

#[async_trait]
impl WebSessionStore for SqliteStore {
    async fn create_web_session(
        &self,
        new: NewWebSession,
        audit: NewAuditEvent,
    ) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(new.verifier.as_bytes().as_slice())
        .bind(new.user_id.to_string())
        .bind(to_ms(new.created_at))
        .bind(to_ms(new.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn web_session(
        &self,
        verifier: &Verifier,
        now: OffsetDateTime,
    ) -> StoreResult<Option<WebSessionRecord>> {
        let now_ms = crate::to_ms(now);
        let row: Option<WebSessionRow> = sqlx::query_as(WEB_SESSION_SELECT)
            .bind(verifier.as_bytes().as_slice())
            .bind(now_ms)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.map(WebSessionRecord::try_from).transpose()
    }

    async fn delete_web_session(
        &self,
        verifier: &Verifier,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let deleted = sqlx::query("DELETE FROM web_sessions WHERE id_hash = ?")
            .bind(verifier.as_bytes().as_slice())
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn purge_web_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let now_ms = crate::to_ms(now);
        Ok(
            sqlx::query("DELETE FROM web_sessions WHERE expires_at <= ?")
                .bind(now_ms)
                .execute(&self.writer)
                .await
                .map_err(backend)?
                .rows_affected(),
        )
    }

    async fn login_failures(
        &self,
        username: &str,
        source_ip: &str,
        window_start: OffsetDateTime,
    ) -> StoreResult<Option<(u32, OffsetDateTime)>> {
        let row: Option<(i64, i64)> = sqlx::query_as(crate::rows::LOGIN_FAILURES_SELECT)
            .bind(username)
            .bind(source_ip)
            .bind(to_ms(window_start))
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        Ok(crate::rows::login_failures(row))
    }

    async fn record_login_failure(
        &self,
        username: &str,
        source_ip: &str,
        at: OffsetDateTime,
        window_start: OffsetDateTime,
    ) -> StoreResult<u32> {
        let n: i64 = sqlx::query_scalar(crate::rows::LOGIN_FAILURE_UPSERT)
            .bind(username)
            .bind(source_ip)
            .bind(to_ms(at))
            .bind(to_ms(window_start))
            .fetch_one(&self.writer)
            .await
            .map_err(backend)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn clear_login_failures(&self, username: &str, source_ip: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_failures WHERE username = $1 AND source_ip = $2")
            .bind(username)
            .bind(source_ip)
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn purge_login_failures(&self, before: OffsetDateTime) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM login_failures WHERE first_at < $1")
                .bind(to_ms(before))
                .execute(&self.writer)
                .await
                .map_err(backend)?
                .rows_affected(),
        )
    }
}
