//! The web UI: server-rendered pages (askama templates checked at compile time, CSS and a small
//! script compiled into the binary) for the people who operate runners from a browser. Handlers
//! build a `Caller` from the browser session and call the same services as the API, so roles are
//! enforced exactly as there. The contract the browser tests rely on is docs/UI.md.

mod actions;
mod apply;
mod assets;
mod create;
mod credentials;
mod deploy;
mod events;
mod login;
mod runners;
mod session;
mod users;

use askama::Template;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{middleware, Router};
use time::OffsetDateTime;

use crate::services::ServiceError;
use crate::state::AppState;
pub use session::Visitor;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/runners") }))
        .merge(login::router())
        .merge(runners::router())
        .merge(actions::router())
        .merge(credentials::router())
        .merge(create::router())
        .merge(users::router())
        .merge(events::router())
        .layer(middleware::map_response(security_headers))
        .merge(assets::router())
}

/// Pages may show secrets (the reveal page, a new runner's credentials): never cache them, never
/// frame them, and run only our own script and style.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (CACHE_CONTROL, "no-store"),
        (
            HeaderName::from_static("content-security-policy"),
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (HeaderName::from_static("x-content-type-options"), "nosniff"),
        (HeaderName::from_static("referrer-policy"), "same-origin"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// What every page around the content needs: who is logged in, what they may do, the form token.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub username: String,
    pub role: &'static str,
    pub csrf: String,
    pub is_admin: bool,
    pub can_operate: bool,
    /// Which navigation item is current: `runners` or `users`.
    pub section: &'static str,
}

impl Chrome {
    pub fn new(visitor: &Visitor, section: &'static str) -> Self {
        use tether_domain::Role;
        let role = visitor.caller.role;
        Self {
            username: visitor.caller.username.as_str().to_owned(),
            role: role.as_str(),
            csrf: visitor.csrf.clone(),
            is_admin: role.allows(Role::Admin),
            can_operate: role.allows(Role::Operator),
            section,
        }
    }
}

/// Renders a template as an HTML response with `status`.
pub fn page(status: StatusCode, template: &impl Template) -> Result<Response, WebError> {
    let html = template
        .render()
        .map_err(|e| WebError::Internal(anyhow::anyhow!("rendering a page: {e}")))?;
    Ok((status, [(CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

/// 303 See Other: where a form POST sends the browser next.
pub fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            LOCATION,
            HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/runners")),
        )],
    )
        .into_response()
}

/// Errors of the web layer, each shown as a page.
#[derive(Debug)]
pub enum WebError {
    /// No session: log in first, then come back to `next`.
    Login {
        next: String,
    },
    /// A POST without a session (it ended, or never was).
    SessionEnded,
    /// A POST whose CSRF token is missing or wrong.
    Csrf,
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    Gone(String),
    Invalid(String),
    /// Too many logins checked at once: try again in a moment (503).
    Busy(String),
    Internal(anyhow::Error),
}

impl From<ServiceError> for WebError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound { detail, .. } => WebError::NotFound(detail),
            ServiceError::Conflict { detail, .. } | ServiceError::RunsInProgress { detail, .. } => {
                WebError::Conflict(detail)
            }
            ServiceError::Forbidden { detail } => WebError::Forbidden(detail),
            ServiceError::Gone { detail, .. } => WebError::Gone(detail),
            ServiceError::Busy { detail } => WebError::Busy(detail),
            ServiceError::Unavailable(e) | ServiceError::Internal(e) => WebError::Internal(e),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: &'static str,
    detail: String,
    login: bool,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, detail, login) = match self {
            WebError::Login { next } => {
                return see_other(&format!("/login?next={}", query_value(&next)));
            }
            WebError::SessionEnded => (
                StatusCode::FORBIDDEN,
                "Log in again",
                "Your session has ended, so nothing was changed. Log in and try again.".to_owned(),
                true,
            ),
            WebError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "The form was missing its security token or it did not match your session, so \
                 nothing was changed. Go back, reload the page and try again."
                    .to_owned(),
                false,
            ),
            WebError::Forbidden(d) => (StatusCode::FORBIDDEN, "Not allowed", d, false),
            WebError::NotFound(d) => (StatusCode::NOT_FOUND, "Not found", d, false),
            WebError::Conflict(d) => (StatusCode::CONFLICT, "Not possible right now", d, false),
            WebError::Gone(d) => (StatusCode::GONE, "No longer available", d, false),
            WebError::Invalid(d) => (StatusCode::UNPROCESSABLE_ENTITY, "Check the form", d, false),
            WebError::Busy(d) => {
                let body = ErrorPage {
                    title: "Busy",
                    detail: d,
                    login: false,
                };
                let mut response = page(StatusCode::SERVICE_UNAVAILABLE, &body)
                    .unwrap_or_else(|_| (StatusCode::SERVICE_UNAVAILABLE, "Busy").into_response());
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                return response;
            }
            WebError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "web request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The server failed to handle the request; the cause is in its log.".to_owned(),
                    false,
                )
            }
        };
        let body = ErrorPage {
            title,
            detail,
            login,
        };
        page(status, &body).unwrap_or_else(|_| (status, title).into_response())
    }
}

/// Percent-encodes a query value, keeping `/` (allowed in a query) so `next=/runners` reads
/// as the path it is.
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `2026-11-23 12:04:10 UTC`
pub fn when(t: OffsetDateTime) -> String {
    crate::clock::clock(t)
}

/// `HH:MM UTC`
pub fn hh_mm(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[hour]:[minute] UTC");
    t.format(&f).unwrap_or_default()
}

/// `just now`, `5 min ago`, `3 h ago`, `2 d ago`.
pub fn ago(t: OffsetDateTime) -> String {
    let secs = (OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    match secs {
        0..=9 => "just now".to_owned(),
        10..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// The platform as the guide names it.
pub fn platform_label(p: tether_domain::Platform) -> &'static str {
    use tether_domain::Platform;
    match p {
        Platform::AwsFargate => "AWS",
        Platform::AzureContainerApp => "Azure",
        Platform::Gke => "Google Cloud",
        Platform::Snowflake => "Snowflake",
        Platform::Local => "Local",
    }
}
