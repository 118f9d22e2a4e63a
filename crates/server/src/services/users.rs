//! Humans: users with roles and their personal API tokens.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use serde_json::json;
use tether_domain::{
    random_bytes, ApiToken, ApiTokenId, Password, Role, TokenName, UserId, Username,
};
use tether_store::{
    ApiTokenRecord, Conflict, NewApiToken, NewUser, RoleChange, StoreError, UserDeletion,
    UserRecord,
};
use time::OffsetDateTime;

use super::audit::{self, AuditEventExt};
use super::ServiceError;
use crate::services::auth::Caller;
use crate::services::StoreContext as _;
use crate::state::AppState;

/// argon2id with the crate's defaults (19 MiB, 2 passes), off the async runtime and within the
/// bound on concurrent password computations (`passwords`).
pub async fn hash_password(state: &AppState, password: Password) -> anyhow::Result<String> {
    state.passwords.hash(password.expose()).await
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
        password_hash: hash_password(state, password).await?,
        role,
        created_at: OffsetDateTime::now_utc(),
    };
    let ev = audit::event(caller.actor(), "user.created")
        .target(format!("user:{username}"))
        .source_ip(caller.source_ip.clone())
        .detail(json!({"role": role.as_str()}));
    match state.store.create_user(new, ev).await {
        Ok(user) => Ok(user),
        Err(StoreError::Conflict(Conflict::Username)) => Err(ServiceError::Conflict {
            code: "user_exists",
            detail: format!("a user named '{username}' already exists"),
        }),
        Err(e) => Err(e).op("create_user"),
    }
}

/// The longest lifetime an API token may be given at creation (`expires_in`): one year.
pub const MAX_TOKEN_LIFETIME: time::Duration = time::Duration::days(366);

/// A new token's value (shown once) and what was stored of it.
#[derive(Debug)]
pub struct CreatedToken {
    pub token: ApiToken,
    pub owner: UserRecord,
    pub record: ApiTokenRecord,
}

/// The user `username` names, for a call an admin may make for anyone and others only for
/// themselves.
async fn owner_for(
    state: &AppState,
    caller: &Caller,
    username: &str,
) -> Result<UserRecord, ServiceError> {
    if caller.username.as_str() != username {
        caller.require(Role::Admin)?;
    }
    let parsed = Username::parse(username).map_err(|_| user_not_found(username))?;
    state
        .store
        .user_by_name(&parsed)
        .await
        .op("user_by_name")?
        .ok_or_else(|| user_not_found(username))
}

/// Creates a personal API token for `username`: admins for anyone, others only for themselves.
/// `lifetime`: it stops working after this long (at most [`MAX_TOKEN_LIFETIME`]); `None`: until
/// revoked.
pub async fn create_token(
    state: &AppState,
    caller: &Caller,
    username: &str,
    name: TokenName,
    lifetime: Option<time::Duration>,
) -> Result<CreatedToken, ServiceError> {
    let user = owner_for(state, caller, username).await?;
    let token = ApiToken::generate();
    let created_at = OffsetDateTime::now_utc();
    let record = ApiTokenRecord {
        id: ApiTokenId::new(),
        name: name.as_str().to_owned(),
        created_at,
        expires_at: lifetime.map(|l| created_at + l),
        last_used_at: None,
    };
    let ev = audit::event(caller.actor(), "token.created")
        .target(format!("user:{}", user.username))
        .source_ip(caller.source_ip.clone())
        .detail(json!({
            "id": record.id.to_string(),
            "name": name.as_str(),
            "expires_at": record.expires_at.map(super::rfc3339),
        }));
    state
        .store
        .create_api_token(
            NewApiToken {
                id: record.id,
                user_id: user.id,
                name: record.name.clone(),
                verifier: state.pepper.verifier(token.expose()),
                created_at,
                expires_at: record.expires_at,
            },
            ev,
        )
        .await
        .op("create_api_token")?;
    Ok(CreatedToken {
        token,
        owner: user,
        record,
    })
}

/// A user's API tokens (never their values): admins for anyone, others only their own.
pub async fn list_tokens(
    state: &AppState,
    caller: &Caller,
    username: &str,
) -> Result<Vec<ApiTokenRecord>, ServiceError> {
    let user = owner_for(state, caller, username).await?;
    state
        .store
        .list_api_tokens(user.id)
        .await
        .op("list_api_tokens")
}

/// Revokes one of a user's API tokens: it stops working at once, on every replica (tokens are
/// looked up in the database on every call). Admins for anyone, others only their own.
pub async fn revoke_token(
    state: &AppState,
    caller: &Caller,
    username: &str,
    token: &str,
) -> Result<(), ServiceError> {
    let user = owner_for(state, caller, username).await?;
    let not_found = || ServiceError::NotFound {
        what: "API token",
        code: "token_not_found",
        detail: format!("{username} has no API token with id '{token}'"),
    };
    let id: ApiTokenId = token.parse().map_err(|_| not_found())?;
    let ev = audit::event(caller.actor(), "token.revoked")
        .target(format!("user:{}", user.username))
        .source_ip(caller.source_ip.clone())
        .detail(json!({"id": id.to_string()}));
    if state
        .store
        .revoke_api_token(user.id, id, ev)
        .await
        .op("revoke_api_token")?
    {
        Ok(())
    } else {
        Err(not_found())
    }
}

/// Deletes a user with their API tokens and web sessions (admins only; never the last admin).
pub async fn delete_user(
    state: &AppState,
    caller: &Caller,
    username: &str,
) -> Result<(), ServiceError> {
    caller.require(Role::Admin)?;
    let name = Username::parse(username).map_err(|_| user_not_found(username))?;
    let ev = audit::event(caller.actor(), "user.deleted")
        .target(format!("user:{name}"))
        .source_ip(caller.source_ip.clone());
    match state.store.delete_user(&name, ev).await.op("delete_user")? {
        UserDeletion::Deleted => Ok(()),
        UserDeletion::NoSuchUser => Err(user_not_found(username)),
        UserDeletion::LastAdmin => Err(ServiceError::Conflict {
            code: "last_admin",
            detail: format!("'{name}' is the only admin; make another user admin first"),
        }),
    }
}

/// The user whose password this is, or `None` (unknown user or wrong password: the caller cannot
/// tell which, and both take one argon2 verification, so timing does not tell either).
pub async fn authenticate(
    state: &AppState,
    username: &str,
    password: &str,
) -> Result<Option<UserRecord>, ServiceError> {
    let user = match Username::parse(username) {
        Ok(name) => state.store.user_by_name(&name).await.op("user_by_name")?,
        Err(_) => None,
    };
    let hash = user
        .as_ref()
        .map_or_else(|| dummy_hash().to_owned(), |u| u.password_hash.clone());
    let matches =
        state
            .passwords
            .verify(&hash, password)
            .await
            .map_err(|_| ServiceError::Busy {
                detail: "too many logins are being checked at once; try again in a moment".into(),
            })?;
    Ok(user.filter(|_| matches))
}

/// A real argon2id hash of a random password, verified against when the user does not exist.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::encode_b64(&random_bytes::<16>()).ok();
        salt.and_then(|salt| {
            Argon2::default()
                .hash_password(&random_bytes::<16>(), &salt)
                .ok()
                .map(|h| h.to_string())
        })
        .unwrap_or_default()
    })
}

pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<UserRecord>, ServiceError> {
    caller.require(Role::Admin)?;
    state.store.list_users().await.op("list_users")
}

fn user_not_found(username: &str) -> ServiceError {
    ServiceError::NotFound {
        what: "user",
        code: "user_not_found",
        detail: format!("no user named '{username}'"),
    }
}

/// Gives a user another role; the last admin cannot be demoted.
pub async fn set_role(
    state: &AppState,
    caller: &Caller,
    username: &str,
    role: Role,
) -> Result<(), ServiceError> {
    caller.require(Role::Admin)?;
    let name = Username::parse(username).map_err(|_| user_not_found(username))?;
    let ev = audit::event(caller.actor(), "user.role_changed")
        .target(format!("user:{name}"))
        .source_ip(caller.source_ip.clone())
        .detail(json!({"role": role.as_str()}));
    match state
        .store
        .set_user_role(&name, role, ev)
        .await
        .op("set_user_role")?
    {
        RoleChange::Changed => Ok(()),
        RoleChange::NoSuchUser => Err(user_not_found(username)),
        RoleChange::LastAdmin => Err(ServiceError::Conflict {
            code: "last_admin",
            detail: format!("'{name}' is the only admin; make another user admin first"),
        }),
    }
}

/// Sets a new password for a user and ends their web sessions and API tokens.
pub async fn reset_password(
    state: &AppState,
    caller: &Caller,
    username: &str,
    password: Password,
) -> Result<(), ServiceError> {
    caller.require(Role::Admin)?;
    let name = Username::parse(username).map_err(|_| user_not_found(username))?;
    let hash = hash_password(state, password).await?;
    let ev = audit::event(caller.actor(), "user.password_reset")
        .target(format!("user:{name}"))
        .source_ip(caller.source_ip.clone());
    if state
        .store
        .set_user_password(&name, &hash, ev)
        .await
        .op("set_user_password")?
    {
        Ok(())
    } else {
        Err(user_not_found(username))
    }
}
