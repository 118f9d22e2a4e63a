//! `/api/v1/me`, `/api/v1/users` and their API tokens: who the caller is, listing, creating and
//! deleting users (admins only), and creating, listing and revoking tokens (admins for anyone,
//! others their own); the rules are `services::users`'.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use tether_domain::{Password, Role, TokenName, Username};
use tether_protocol::api::{
    ApiTokenInfo, CreateTokenRequest, CreateUserRequest, CreatedToken, Me, TokenList, User,
    UserList,
};
use tether_store::{ApiTokenRecord, UserRecord};

use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::http::extract::ApiPath as Path;
use crate::services::auth::Caller;
use crate::services::users;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/me", get(get_me))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{username}", delete(delete_user))
        .route(
            "/api/v1/users/{username}/tokens",
            get(list_tokens).post(create_token),
        )
        .route("/api/v1/users/{username}/tokens/{id}", delete(revoke_token))
}

async fn get_me(caller: Caller) -> Json<Me> {
    Json(Me {
        username: caller.username.as_str().to_owned(),
        role: caller.role.as_str().to_owned(),
        token_id: caller.token_id.map(|id| id.to_string()),
    })
}

fn user_view(user: UserRecord) -> User {
    User {
        username: user.username.as_str().to_owned(),
        role: user.role.as_str().to_owned(),
        created_at: user.created_at,
    }
}

fn token_view(t: ApiTokenRecord) -> ApiTokenInfo {
    ApiTokenInfo {
        id: t.id.to_string(),
        name: t.name,
        created_at: t.created_at,
        expires_at: t.expires_at,
        last_used_at: t.last_used_at,
    }
}

async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<UserList>, ApiError> {
    let users = users::list(&state, &caller).await?;
    Ok(Json(UserList {
        users: users.into_iter().map(user_view).collect(),
    }))
}

async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    users::delete_user(&state, &caller, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Json<TokenList>, ApiError> {
    let tokens = users::list_tokens(&state, &caller, &username).await?;
    Ok(Json(TokenList {
        tokens: tokens.into_iter().map(token_view).collect(),
    }))
}

async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path((username, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    users::revoke_token(&state, &caller, &username, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    caller.require(Role::Admin)?;
    let username =
        Username::parse(&req.username).map_err(|e| ApiError::invalid_field("username", e))?;
    let password =
        Password::parse(&req.password).map_err(|e| ApiError::invalid_field("password", e))?;
    let role = Role::parse(&req.role).map_err(|e| ApiError::invalid_field("role", e))?;
    let user = users::create_user(&state, &caller, username, password, role).await?;
    Ok((StatusCode::CREATED, Json(user_view(user))))
}

async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = TokenName::parse(&req.name).map_err(|e| ApiError::invalid_field("name", e))?;
    let lifetime = req
        .expires_in
        .map(|secs| {
            i64::try_from(secs)
                .ok()
                .map(time::Duration::seconds)
                .filter(|d| *d >= time::Duration::seconds(60) && *d <= users::MAX_TOKEN_LIFETIME)
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "expires_in",
                        format!(
                            "must be 60 to {} seconds",
                            users::MAX_TOKEN_LIFETIME.whole_seconds()
                        ),
                    )
                })
        })
        .transpose()?;
    let created = users::create_token(&state, &caller, &username, name, lifetime).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: created.token.expose().to_owned(),
            id: created.record.id.to_string(),
            name: created.record.name,
            username: created.owner.username.as_str().to_owned(),
            created_at: created.record.created_at,
            expires_at: created.record.expires_at,
        }),
    ))
}
