//! Humans: users with roles and their personal API tokens.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use serde_json::json;
use tether_domain::{random_bytes, ApiToken, Password, Role, TokenName, UserId, Username};
use tether_store::{NewApiToken, NewUser, StoreError, UserRecord};
use time::OffsetDateTime;

use super::audit::{self, AuditEventExt};
use super::ServiceError;
use crate::auth::Caller;
use crate::state::AppState;

/// argon2id with the crate's defaults (19 MiB, 2 passes), off the async runtime.
pub async fn hash_password(password: Password) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&random_bytes::<16>())
            .map_err(|e| anyhow::anyhow!("encoding salt: {e}"))?;
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
    })
    .await?
}

pub async fn create_user(
    state: &AppState,
    caller: &Caller,
    username: Username,
    password: Password,
    role: Role,
) -> Result<UserRecord, ServiceError> {
    caller.require(Role::Admin)?;
    let new = NewUser {
        id: UserId::new(),
        username: username.clone(),
        password_hash: hash_password(password).await?,
        role,
        created_at: OffsetDateTime::now_utc(),
    };
    let ev = audit::event(caller.actor(), "user.created")
        .target(format!("user:{username}"))
        .source_ip(caller.source_ip.clone())
        .detail(json!({"role": role.as_str()}));
    match state.store.create_user(new, ev).await {
        Ok(user) => Ok(user),
        Err(StoreError::Conflict { .. }) => Err(ServiceError::Conflict {
            code: "user_exists",
            detail: format!("a user named '{username}' already exists"),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Creates a personal API token for `username`: admins for anyone, others only for themselves.
pub async fn create_token(
    state: &AppState,
    caller: &Caller,
    username: &str,
    name: TokenName,
) -> Result<(ApiToken, UserRecord, OffsetDateTime), ServiceError> {
    let not_found = || ServiceError::NotFound {
        what: "user",
        code: "user_not_found",
        detail: format!("no user named '{username}'"),
    };
    let is_self = caller.username.as_str() == username;
    if !is_self {
        caller.require(Role::Admin)?;
    }
    let parsed = Username::parse(username).map_err(|_| not_found())?;
    let user = state
        .store
        .user_by_name(&parsed)
        .await?
        .ok_or_else(not_found)?;
    let token = ApiToken::generate();
    let created_at = OffsetDateTime::now_utc();
    let ev = audit::event(caller.actor(), "token.created")
        .target(format!("user:{}", user.username))
        .source_ip(caller.source_ip.clone())
        .detail(json!({"name": name.as_str()}));
    state
        .store
        .create_api_token(
            NewApiToken {
                user_id: user.id,
                name: name.as_str().to_owned(),
                verifier: state.pepper.verifier(token.expose()),
                created_at,
            },
            ev,
        )
        .await?;
    Ok((token, user, created_at))
}
