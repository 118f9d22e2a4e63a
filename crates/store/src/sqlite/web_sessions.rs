//! Web UI sessions in SQLite, keyed by the verifier of the cookie's id (never the id itself).

use async_trait::async_trait;
use sqlx::Row;
use tether_domain::Verifier;
use time::OffsetDateTime;

use super::users::user_from_row;
use super::{backend, insert_audit, SqliteStore};
use crate::{
    from_ms, to_ms, NewAuditEvent, NewWebSession, StoreResult, WebSessionRecord, WebSessionStore,
};

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
        let row = sqlx::query(
            "SELECT u.id, u.username, u.password_hash, u.role, u.created_at,
                    s.created_at AS session_created_at, s.expires_at
             FROM web_sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id_hash = ? AND s.expires_at > ?",
        )
        .bind(verifier.as_bytes().as_slice())
        .bind(now_ms)
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(WebSessionRecord {
            user: user_from_row(&row)?,
            created_at: from_ms(row.try_get("session_created_at").map_err(backend)?),
            expires_at: from_ms(row.try_get("expires_at").map_err(backend)?),
        }))
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
}
