//! Users, API tokens and web UI sessions in PostgreSQL. The first admin is created under a table
//! lock (two replicas starting on an empty database create one admin); a role change or a user
//! deletion locks every admin row first (two of them cannot each count the other as the
//! remaining admin).

use async_trait::async_trait;
use tether_domain::{ApiTokenId, Role, UserId, Username, Verifier};
use time::OffsetDateTime;

use super::{backend, insert_audit, PostgresStore};
use crate::rows::{
    ApiTokenRow, TokenUserRow, UserRow, WebSessionRow, API_TOKENS_SELECT, API_TOKEN_USED,
    TOKEN_USER_SELECT, USER_COLUMNS, WEB_SESSION_SELECT,
};
use crate::{
    to_ms, ApiTokenRecord, NewApiToken, NewAuditEvent, NewUser, NewWebSession, RoleChange,
    StoreResult, UserDeletion, UserRecord, UserStore, WebSessionRecord, WebSessionStore,
};

async fn insert_user<'c, E>(exec: E, new: &NewUser) -> StoreResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    sqlx::query(
        "INSERT INTO users (id, username, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(new.id.to_string())
    .bind(new.username.as_str())
    .bind(&new.password_hash)
    .bind(new.role.as_str())
    .bind(to_ms(new.created_at))
    .execute(exec)
    .await
    .map_err(backend)?;
    Ok(())
}

async fn insert_token<'c, E>(exec: E, new: &NewApiToken) -> StoreResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    sqlx::query(
        "INSERT INTO api_tokens (id, user_id, name, verifier, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new.id.to_string())
    .bind(new.user_id.to_string())
    .bind(&new.name)
    .bind(new.verifier.as_bytes().as_slice())
    .bind(to_ms(new.created_at))
    .bind(new.expires_at.map(to_ms))
    .execute(exec)
    .await
    .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn bootstrap_admin(
        &self,
        admin: NewUser,
        token: NewApiToken,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Conflicts with itself: a second bootstrap waits, then counts the first one's admin.
        sqlx::query("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if exists {
            return Ok(false);
        }
        insert_user(&mut *tx, &admin).await?;
        insert_token(&mut *tx, &token).await?;
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn create_user(&self, new: NewUser, audit: NewAuditEvent) -> StoreResult<UserRecord> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_user(&mut *tx, &new).await?;
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(UserRecord {
            id: new.id,
            username: new.username,
            password_hash: new.password_hash,
            role: new.role,
            created_at: new.created_at,
        })
    }

    async fn user_by_name(&self, username: &Username) -> StoreResult<Option<UserRecord>> {
        let row: Option<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.username = $1"
        ))
        .bind(username.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(UserRecord::try_from).transpose()
    }

    async fn create_api_token(&self, new: NewApiToken, audit: NewAuditEvent) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_token(&mut *tx, &new).await?;
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn user_by_token(
        &self,
        verifier: &Verifier,
        now: OffsetDateTime,
    ) -> StoreResult<Option<(UserRecord, ApiTokenId)>> {
        let row: Option<TokenUserRow> = sqlx::query_as(TOKEN_USER_SELECT)
            .bind(verifier.as_bytes().as_slice())
            .bind(to_ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn list_api_tokens(&self, user: UserId) -> StoreResult<Vec<ApiTokenRecord>> {
        let rows: Vec<ApiTokenRow> = sqlx::query_as(API_TOKENS_SELECT)
            .bind(user.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn revoke_api_token(
        &self,
        user: UserId,
        token: ApiTokenId,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let gone = sqlx::query("DELETE FROM api_tokens WHERE id = $1 AND user_id = $2")
            .bind(token.to_string())
            .bind(user.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        if gone == 0 {
            tx.rollback().await.map_err(backend)?;
            return Ok(false);
        }
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn record_api_token_use(&self, uses: &[(ApiTokenId, OffsetDateTime)]) -> StoreResult<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        for (token, at) in uses {
            sqlx::query(API_TOKEN_USED)
                .bind(to_ms(*at))
                .bind(token.to_string())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn delete_user(
        &self,
        username: &Username,
        audit: NewAuditEvent,
    ) -> StoreResult<UserDeletion> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Every admin row first, in one order: two deletions (or a deletion and a demotion) at
        // once cannot each count the other as the remaining admin.
        let admins: Vec<String> = sqlx::query_scalar(
            "SELECT username FROM users WHERE role = 'admin' ORDER BY id FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let found: Option<(String, String)> =
            sqlx::query_as("SELECT id, role FROM users WHERE username = $1 FOR UPDATE")
                .bind(username.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        let Some((id, role)) = found else {
            tx.rollback().await.map_err(backend)?;
            return Ok(UserDeletion::NoSuchUser);
        };
        if role == Role::Admin.as_str() && admins.len() <= 1 {
            tx.rollback().await.map_err(backend)?;
            return Ok(UserDeletion::LastAdmin);
        }
        for sql in [
            "DELETE FROM api_tokens WHERE user_id = $1",
            "DELETE FROM web_sessions WHERE user_id = $1",
            "DELETE FROM users WHERE id = $1",
        ] {
            sqlx::query(sql)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(UserDeletion::Deleted)
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        let rows: Vec<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users u ORDER BY u.username"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter().map(UserRecord::try_from).collect()
    }

    async fn set_user_role(
        &self,
        username: &Username,
        role: Role,
        audit: NewAuditEvent,
    ) -> StoreResult<RoleChange> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let admins: Vec<String> = sqlx::query_scalar(
            "SELECT username FROM users WHERE role = 'admin' ORDER BY id FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT role FROM users WHERE username = $1 FOR UPDATE")
                .bind(username.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        let Some(current) = current else {
            return Ok(RoleChange::NoSuchUser);
        };
        if current == Role::Admin.as_str() && role != Role::Admin && admins.len() <= 1 {
            return Ok(RoleChange::LastAdmin);
        }
        sqlx::query("UPDATE users SET role = $1 WHERE username = $2")
            .bind(role.as_str())
            .bind(username.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(RoleChange::Changed)
    }

    async fn set_user_password(
        &self,
        username: &Username,
        password_hash: &str,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let user: Option<String> = sqlx::query_scalar(
            "UPDATE users SET password_hash = $1 WHERE username = $2 RETURNING id",
        )
        .bind(password_hash)
        .bind(username.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(user) = user else {
            return Ok(false);
        };
        for sql in [
            "DELETE FROM web_sessions WHERE user_id = $1",
            "DELETE FROM api_tokens WHERE user_id = $1",
        ] {
            sqlx::query(sql)
                .bind(&user)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }
}

#[async_trait]
impl WebSessionStore for PostgresStore {
    async fn create_web_session(
        &self,
        new: NewWebSession,
        audit: NewAuditEvent,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
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
        let row: Option<WebSessionRow> = sqlx::query_as(WEB_SESSION_SELECT)
            .bind(verifier.as_bytes().as_slice())
            .bind(to_ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.map(WebSessionRecord::try_from).transpose()
    }

    async fn delete_web_session(
        &self,
        verifier: &Verifier,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let deleted = sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
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
        Ok(
            sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
                .bind(to_ms(now))
                .execute(&self.pool)
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
            .fetch_optional(&self.pool)
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
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn clear_login_failures(&self, username: &str, source_ip: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_failures WHERE username = $1 AND source_ip = $2")
            .bind(username)
            .bind(source_ip)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn purge_login_failures(&self, before: OffsetDateTime) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM login_failures WHERE first_at < $1")
                .bind(to_ms(before))
                .execute(&self.pool)
                .await
                .map_err(backend)?
                .rows_affected(),
        )
    }
}
