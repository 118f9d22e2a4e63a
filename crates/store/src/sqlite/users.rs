//! Users and API tokens in SQLite: the bootstrap admin, roles (never demoting or deleting the
//! last admin), password resets that end the user's web sessions and API tokens, token expiry
//! and revocation.

use async_trait::async_trait;
use tether_domain::{ApiTokenId, Role, UserId, Username, Verifier};
use time::OffsetDateTime;

use super::{backend, insert_audit, SqliteStore};
use crate::rows::{
    ApiTokenRow, TokenUserRow, UserRow, API_TOKENS_SELECT, API_TOKEN_USED, TOKEN_USER_SELECT,
    USER_COLUMNS,
};
use crate::{
    to_ms, ApiTokenRecord, NewApiToken, NewAuditEvent, NewUser, RoleChange, StoreResult,
    UserDeletion, UserRecord, UserStore,
};

async fn insert_user<'c, E>(exec: E, new: &NewUser) -> StoreResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    sqlx::query(
        "INSERT INTO users (id, username, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?)",
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
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    sqlx::query(
        "INSERT INTO api_tokens (id, user_id, name, verifier, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
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
impl UserStore for SqliteStore {
    async fn bootstrap_admin(
        &self,
        admin: NewUser,
        token: NewApiToken,
        audit: NewAuditEvent,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if users > 0 {
            return Ok(false);
        }
        insert_user(&mut *tx, &admin).await?;
        insert_token(&mut *tx, &token).await?;
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn create_user(&self, new: NewUser, audit: NewAuditEvent) -> StoreResult<UserRecord> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
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
            "SELECT {USER_COLUMNS} FROM users u WHERE u.username = ?"
        ))
        .bind(username.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        row.map(UserRecord::try_from).transpose()
    }

    async fn create_api_token(&self, new: NewApiToken, audit: NewAuditEvent) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(backend)?;
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
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn list_api_tokens(&self, user: UserId) -> StoreResult<Vec<ApiTokenRecord>> {
        let rows: Vec<ApiTokenRow> = sqlx::query_as(API_TOKENS_SELECT)
            .bind(user.to_string())
            .fetch_all(&self.reader)
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
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let gone = sqlx::query("DELETE FROM api_tokens WHERE id = ? AND user_id = ?")
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
        let mut tx = self.writer.begin().await.map_err(backend)?;
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
        // One writer connection: the count and the delete cannot interleave with another change.
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let found: Option<(String, String)> =
            sqlx::query_as("SELECT id, role FROM users WHERE username = ?")
                .bind(username.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        let Some((id, role)) = found else {
            tx.rollback().await.map_err(backend)?;
            return Ok(UserDeletion::NoSuchUser);
        };
        if role == Role::Admin.as_str() {
            let admins: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
            if admins <= 1 {
                tx.rollback().await.map_err(backend)?;
                return Ok(UserDeletion::LastAdmin);
            }
        }
        for sql in [
            "DELETE FROM api_tokens WHERE user_id = ?",
            "DELETE FROM web_sessions WHERE user_id = ?",
            "DELETE FROM users WHERE id = ?",
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
        .fetch_all(&self.reader)
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
        // One writer connection: the count and the update cannot interleave with another change.
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT role FROM users WHERE username = ?")
                .bind(username.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        let Some(current) = current else {
            return Ok(RoleChange::NoSuchUser);
        };
        if current == Role::Admin.as_str() && role != Role::Admin {
            let admins: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
            if admins <= 1 {
                return Ok(RoleChange::LastAdmin);
            }
        }
        sqlx::query("UPDATE users SET role = ? WHERE username = ?")
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
        let mut tx = self.writer.begin().await.map_err(backend)?;
        let changed = sqlx::query("UPDATE users SET password_hash = ? WHERE username = ?")
            .bind(password_hash)
            .bind(username.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        for sql in [
            "DELETE FROM web_sessions WHERE user_id = (SELECT id FROM users WHERE username = ?)",
            "DELETE FROM api_tokens WHERE user_id = (SELECT id FROM users WHERE username = ?)",
        ] {
            sqlx::query(sql)
                .bind(username.as_str())
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }
}
