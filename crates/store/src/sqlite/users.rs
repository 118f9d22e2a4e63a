//! Users and API tokens in SQLite: the bootstrap admin, roles (never demoting the last admin),
//! password resets that end the user's web sessions.

use async_trait::async_trait;
use tether_domain::{Role, UserId, Username, Verifier};

use super::{backend, insert_audit, SqliteStore};
use crate::rows::{UserRow, USER_COLUMNS};
use crate::{
    to_ms, NewApiToken, NewAuditEvent, NewUser, RoleChange, StoreResult, UserRecord, UserStore,
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
        "INSERT INTO api_tokens (id, user_id, name, verifier, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(UserId::new().to_string())
    .bind(new.user_id.to_string())
    .bind(&new.name)
    .bind(new.verifier.as_bytes().as_slice())
    .bind(to_ms(new.created_at))
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

    async fn user_by_token(&self, verifier: &Verifier) -> StoreResult<Option<UserRecord>> {
        let row: Option<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.verifier = ?"
        ))
        .bind(verifier.as_bytes().as_slice())
        .fetch_optional(&self.reader)
        .await
        .map_err(backend)?;
        row.map(UserRecord::try_from).transpose()
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
        sqlx::query(
            "DELETE FROM web_sessions WHERE user_id = (SELECT id FROM users WHERE username = ?)",
        )
        .bind(username.as_str())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        insert_audit(&mut *tx, &audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }
}
