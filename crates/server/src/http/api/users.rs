//! `/api/v1/me`, `/api/v1/users` and their API tokens: who the caller is, creating users (admins
//! only) and minting tokens; the rules are `services::users`'.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use tether_domain::{Password, Role, TokenName, Username};
use tether_protocol::api::{CreateTokenRequest, CreateUserRequest, CreatedToken, Me, User};

use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::services::auth::Caller;
use crate::services::users;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/me", get(get_me))
        .route("/api/v1/users", post(create_user))
        .route("/api/v1/users/{username}/tokens", post(create_token))
}

async fn get_me(caller: Caller) -> Json<Me> {
    Json(Me {
        username: caller.username.as_str().to_owned(),
        role: caller.role.as_str().to_owned(),
    })
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
    Ok((
        StatusCode::CREATED,
        Json(User {
            username: user.username.as_str().to_owned(),
            role: user.role.as_str().to_owned(),
            created_at: user.created_at,
        }),
    ))
}

async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = TokenName::parse(&req.name).map_err(|e| ApiError::invalid_field("name", e))?;
    let (token, user, created_at) =
        users::create_token(&state, &caller, &username, name.clone()).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: token.expose().to_owned(),
            name: name.as_str().to_owned(),
            username: user.username.as_str().to_owned(),
            created_at,
        }),
    ))
}
