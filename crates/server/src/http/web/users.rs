//! Users (admins only): create a user, change a role, reset a password, see and revoke API tokens.
//! Each calls the same user service as the API, which enforces the admin role again.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tether_domain::{Password, Role, Username};

use super::session::{PostForm, Visitor};
use super::{page, see_other, when, Chrome, WebError};
use crate::http::extract::QueryParams;
use crate::services::users;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", get(list_users).post(create_user))
        .route("/users/{username}/role", post(set_user_role))
        .route("/users/{username}/password", post(reset_user_password))
        .route("/users/{username}/tokens/{id}/revoke", post(revoke_token))
}

#[derive(Debug)]
struct TokenRow {
    username: String,
    id: String,
    name: String,
    created: String,
    expires: String,
    last_used: String,
}

#[derive(Debug)]
struct UserRow {
    username: String,
    role: &'static str,
    created: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    tokens: Vec<TokenRow>,
    roles: [&'static str; 3],
    notice: Option<&'static str>,
    error: Option<String>,
}

async fn users_page(
    state: &AppState,
    visitor: &Visitor,
    status: StatusCode,
    notice: Option<&'static str>,
    error: Option<String>,
) -> Result<Response, WebError> {
    let records = users::list(state, &visitor.caller).await?;
    let mut tokens = Vec::new();
    for u in &records {
        for t in users::list_tokens(state, &visitor.caller, u.username.as_str()).await? {
            tokens.push(TokenRow {
                username: u.username.as_str().to_owned(),
                id: t.id.to_string(),
                name: t.name,
                created: when(t.created_at),
                expires: t.expires_at.map_or_else(|| "never".to_owned(), when),
                last_used: t.last_used_at.map_or_else(|| "never".to_owned(), when),
            });
        }
    }
    let users = records
        .into_iter()
        .map(|u| UserRow {
            username: u.username.as_str().to_owned(),
            role: u.role.as_str(),
            created: when(u.created_at),
        })
        .collect();
    let body = UsersPage {
        chrome: Chrome::new(visitor, "users"),
        users,
        tokens,
        roles: ["viewer", "operator", "admin"],
        notice,
        error,
    };
    page(status, &body)
}

async fn list_users(
    State(state): State<AppState>,
    visitor: Visitor,
    query: QueryParams,
) -> Result<Response, WebError> {
    let notice = match query.get("done") {
        Some("created") => Some("User created."),
        Some("role") => Some("Role changed."),
        Some("password") => {
            Some("Password reset; the user's browser sessions and API tokens were ended.")
        }
        Some("revoked") => Some("API token revoked; it stopped working at once."),
        _ => None,
    };
    users_page(&state, &visitor, StatusCode::OK, notice, None).await
}

/// Shows the page again with `error` for a mistake the admin can fix (bad input, a conflict).
async fn or_again(
    state: &AppState,
    post: &PostForm,
    result: Result<(), WebError>,
    done: &str,
) -> Result<Response, WebError> {
    let (status, error) = match result {
        Ok(()) => return Ok(see_other(&format!("/users?done={done}"))),
        Err(WebError::Invalid(e)) => (StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(WebError::Conflict(e)) => (StatusCode::CONFLICT, e),
        Err(e) => return Err(e),
    };
    users_page(state, &post.visitor, status, None, Some(error)).await
}

fn field<T>(what: &str, parsed: Result<T, tether_domain::ParseError>) -> Result<T, WebError> {
    parsed.map_err(|e| WebError::Invalid(format!("{what} {e}.")))
}

async fn create_user(State(state): State<AppState>, post: PostForm) -> Result<Response, WebError> {
    post.visitor.caller.require(Role::Admin)?;
    let result = async {
        let f = &post.form;
        let username = field("Username", Username::parse(f.get("username").trim()))?;
        let password = field("Password", Password::parse(f.get("password")))?;
        let role = field("Role", Role::parse(f.get("role")))?;
        users::create_user(&state, &post.visitor.caller, username, password, role)
            .await
            .map(|_| ())
            .map_err(WebError::from)
    }
    .await;
    or_again(&state, &post, result, "created").await
}

async fn set_user_role(
    State(state): State<AppState>,
    Path(username): Path<String>,
    post: PostForm,
) -> Result<Response, WebError> {
    post.visitor.caller.require(Role::Admin)?;
    let result = async {
        let role = field("Role", Role::parse(post.form.get("role")))?;
        users::set_role(&state, &post.visitor.caller, &username, role)
            .await
            .map_err(WebError::from)
    }
    .await;
    or_again(&state, &post, result, "role").await
}

async fn reset_user_password(
    State(state): State<AppState>,
    Path(username): Path<String>,
    post: PostForm,
) -> Result<Response, WebError> {
    post.visitor.caller.require(Role::Admin)?;
    let result = async {
        let password = field("Password", Password::parse(post.form.get("password")))?;
        users::reset_password(&state, &post.visitor.caller, &username, password)
            .await
            .map_err(WebError::from)
    }
    .await;
    or_again(&state, &post, result, "password").await
}

async fn revoke_token(
    State(state): State<AppState>,
    Path((username, id)): Path<(String, String)>,
    post: PostForm,
) -> Result<Response, WebError> {
    post.visitor.caller.require(Role::Admin)?;
    let result = users::revoke_token(&state, &post.visitor.caller, &username, &id)
        .await
        .map_err(WebError::from);
    or_again(&state, &post, result, "revoked").await
}
