//! Browser sessions: the `tether_session` cookie carries a random 256-bit id; the store keeps only
//! its HMAC under the server pepper. Every form carries a CSRF token derived from the id the same
//! way, so it needs no storage and dies with the session. [`Visitor`] is the logged-in human of a
//! request (a [`Caller`], as the API builds one from a token); [`PostForm`] is a form POST whose
//! token has been checked, so no handler can forget to check it.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::COOKIE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use subtle::ConstantTimeEq;
use tether_domain::{random_bytes, Verifier};
use tether_store::UserRecord;
use time::{Duration, OffsetDateTime};

use super::WebError;
use crate::http::extract::ClientIp;
use crate::services::auth::Caller;
use crate::services::web_sessions;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "tether_session";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::hours(12);

/// The logged-in human behind a request.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub caller: Caller,
    /// The token every form of this session must send back as `csrf`.
    pub csrf: String,
    pub expires_at: OffsetDateTime,
    verifier: Verifier,
}

impl Visitor {
    /// Whether the session this visitor came with still stands as it was: not ended (logout, a
    /// password reset, the user deleted, expiry) and its user's role unchanged. When the store
    /// cannot be read it counts as standing; the next check decides.
    pub async fn still_current(&self, state: &AppState) -> bool {
        match web_sessions::find(state, &self.verifier).await {
            Ok(Some(record)) => record.user.role == self.caller.role,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "could not re-check a web session; keeping its stream");
                true
            }
        }
    }
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let found = match cookie(&parts.headers, SESSION_COOKIE).filter(|id| is_session_id(id)) {
            Some(id) => {
                let verifier = state.pepper.verifier(id);
                let record = web_sessions::find(state, &verifier).await?;
                record.map(|r| (csrf_token(state, id), verifier, r))
            }
            None => None,
        };
        let Some((csrf, verifier, record)) = found else {
            return Err(
                if parts.method == Method::GET || parts.method == Method::HEAD {
                    let next = parts
                        .uri
                        .path_and_query()
                        .map_or("/runners", |p| p.as_str());
                    WebError::Login {
                        next: next.to_owned(),
                    }
                } else {
                    WebError::SessionEnded
                },
            );
        };
        let ClientIp(source_ip) = ClientIp::from_request_parts(parts, state)
            .await
            .unwrap_or(ClientIp(None));
        Ok(Visitor {
            caller: Caller {
                user_id: record.user.id,
                username: record.user.username,
                role: record.user.role,
                source_ip,
                token_id: None,
            },
            csrf,
            expires_at: record.expires_at,
            verifier,
        })
    }
}

/// An `application/x-www-form-urlencoded` body. A repeated field keeps its last value.
#[derive(Debug, Default)]
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn parse(body: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The field's value, or "" when it is missing.
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }

    /// Whether a checkbox was ticked.
    pub fn checked(&self, name: &str) -> bool {
        !self.get(name).is_empty()
    }
}

/// A form POST from a logged-in visitor whose CSRF token matched (403 otherwise).
#[derive(Debug)]
pub struct PostForm {
    pub visitor: Visitor,
    pub form: Form,
}

impl FromRequest<AppState> for PostForm {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let visitor = Visitor::from_request_parts(&mut parts, state).await?;
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|_| WebError::Invalid("The form could not be read.".to_owned()))?;
        let form = Form::parse(&bytes);
        if !same(form.get("csrf"), &visitor.csrf) {
            tracing::warn!(user = %visitor.caller.username, "form POST refused: CSRF token missing or wrong");
            return Err(WebError::Csrf);
        }
        Ok(PostForm { visitor, form })
    }
}

/// Constant-time string equality; an empty `presented` never matches.
pub fn same(presented: &str, expected: &str) -> bool {
    !presented.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

/// A fresh random token (session ids, the login form's token): 256 bits, URL-safe base64.
pub fn random_token() -> String {
    B64.encode(random_bytes::<32>())
}

fn is_session_id(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn csrf_token(state: &AppState, session_id: &str) -> String {
    B64.encode(
        state
            .pepper
            .verifier(&format!("csrf:{session_id}"))
            .as_bytes(),
    )
}

/// The value of a cookie in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure when the server is reached over https.
/// `max_age` 0 deletes the cookie.
pub fn set_cookie(state: &AppState, name: &str, value: &str, path: &str, max_age: i64) -> String {
    let secure = if state.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

/// Starts a session for `user`; returns the `Set-Cookie` value that carries it.
pub async fn start(
    state: &AppState,
    user: &UserRecord,
    source_ip: Option<String>,
) -> Result<String, WebError> {
    let id = random_token();
    web_sessions::open(
        state,
        user,
        state.pepper.verifier(&id),
        SESSION_TTL,
        source_ip,
    )
    .await?;
    Ok(set_cookie(
        state,
        SESSION_COOKIE,
        &id,
        "/",
        SESSION_TTL.whole_seconds(),
    ))
}

/// Ends the visitor's session; returns the `Set-Cookie` value that deletes the cookie.
pub async fn end(state: &AppState, visitor: &Visitor) -> Result<String, WebError> {
    web_sessions::close(state, &visitor.caller, &visitor.verifier).await?;
    Ok(set_cookie(state, SESSION_COOKIE, "", "/", 0))
}
