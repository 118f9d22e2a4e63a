//! `/login` and `/logout`. The login form has no session yet, so its CSRF protection is a
//! double-submit token: a random value in a short-lived cookie scoped to /login and in the form.

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::session::{self, cookie, random_token, same, set_cookie, Form, PostForm, Visitor};
use super::{page, see_other, WebError};
use crate::http::extract::{ClientIp, QueryParams};
use crate::services::{users, web_sessions};
use crate::state::AppState;
use tether_domain::Username;

const LOGIN_COOKIE: &str = "tether_login";

/// The login routes. Refused logins are counted in the database (`services::web_sessions`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(show_login).post(log_in))
        .route("/logout", post(log_out))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    username: String,
    failed: bool,
    /// Set when this username is locked out from this address (too many failures).
    locked_minutes: Option<u64>,
}

/// Only paths of this site: never `//host` or `/\host`, which browsers treat as other sites.
fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
        && !next.starts_with("/login");
    if ok {
        next.to_owned()
    } else {
        "/runners".to_owned()
    }
}

fn login_page(
    state: &AppState,
    status: StatusCode,
    token: String,
    next: String,
    username: String,
    failed: bool,
    locked_minutes: Option<u64>,
) -> Result<Response, WebError> {
    let cookie = set_cookie(state, LOGIN_COOKIE, &token, "/login", 3600);
    let body = LoginPage {
        csrf: token,
        next,
        username,
        failed,
        locked_minutes,
    };
    let mut response = page(status, &body)?;
    if let Ok(v) = cookie.parse() {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(response)
}

async fn show_login(
    State(state): State<AppState>,
    visitor: Result<Visitor, WebError>,
    headers: HeaderMap,
    query: QueryParams,
) -> Result<Response, WebError> {
    let next = safe_next(query.get("next").unwrap_or("/runners"));
    if visitor.is_ok() {
        return Ok(see_other(&next));
    }
    // Keep a token the browser already has, so two open login tabs both work.
    let token = cookie(&headers, LOGIN_COOKIE)
        .filter(|t| t.len() == 43)
        .map_or_else(random_token, str::to_owned);
    login_page(
        &state,
        StatusCode::OK,
        token,
        next,
        String::new(),
        false,
        None,
    )
}

async fn log_in(
    State(state): State<AppState>,
    ClientIp(source_ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = Form::parse(&body);
    let token = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !same(form.get("csrf"), token) {
        return Err(WebError::Csrf);
    }
    let next = safe_next(form.get("next"));
    let typed = form.get("username").trim();
    let ip = source_ip.as_deref();
    // No account can have a name that is not a valid username: refused at once, neither counted
    // against a lockout nor echoed back nor logged (it may be 60 KB of anything).
    let Ok(username) = Username::parse(typed) else {
        tracing::warn!(source_ip = ?source_ip, username_chars = typed.chars().count(),
            "web login refused: not a valid username");
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            token.to_owned(),
            next,
            String::new(),
            true,
            None,
        );
    };
    if let Some(left) = web_sessions::login_locked_for(&state, &username, ip).await? {
        tracing::warn!(user = %username, source_ip = ?source_ip, retry_after_s = left.as_secs(),
            "web login refused: too many failed logins; locked out for a while");
        let mut response = login_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            token.to_owned(),
            next,
            username.as_str().to_owned(),
            true,
            Some(left.as_secs().div_ceil(60).max(1)),
        )?;
        if let Ok(v) = left.as_secs().max(1).to_string().parse() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        return Ok(response);
    }
    let Some(user) = users::authenticate(&state, username.as_str(), form.get("password")).await?
    else {
        web_sessions::login_failed(&state, &username, ip).await?;
        tracing::warn!(user = %username, source_ip = ?source_ip, "web login refused: wrong username or password");
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            token.to_owned(),
            next,
            username.as_str().to_owned(),
            true,
            None,
        );
    };
    web_sessions::login_succeeded(&state, &username, ip).await?;
    let session_cookie = session::start(&state, &user, source_ip).await?;
    let mut response = see_other(&next);
    let headers = response.headers_mut();
    for c in [
        session_cookie,
        set_cookie(&state, LOGIN_COOKIE, "", "/login", 0),
    ] {
        if let Ok(v) = c.parse() {
            headers.append(SET_COOKIE, v);
        }
    }
    Ok(response)
}

async fn log_out(State(state): State<AppState>, post: PostForm) -> Result<Response, WebError> {
    let clear = session::end(&state, &post.visitor).await?;
    Ok(([(SET_COOKIE, clear)], see_other("/login")).into_response())
}
