//! `/oauth/token` (RFC 6749 §4.4 client credentials), `/oauth/introspect` (RFC 7662) and
//! `/oauth/revoke` (RFC 7009). Errors follow RFC 6749 §5.2: JSON `{error, error_description}`.

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tether_domain::Role;
use tether_protocol::oauth::{Introspection, OAuthError, TokenResponse};

use super::error::ApiError;
use super::extract::{read_body, ClientIp};
use crate::services::auth::resolve_api_token;
use crate::services::oauth::{self, ClientAuthFailure};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth/token", post(issue_token))
        .route("/oauth/introspect", post(introspect_token))
        .route("/oauth/revoke", post(revoke_token))
}

/// An RFC 6749 error response.
#[derive(Debug)]
struct OAuthReply {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthReply {
    fn invalid_request(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            description: description.into(),
        }
    }

    /// The token could not be checked right now (RFC 6749 §4.1.2.1 `temporarily_unavailable`).
    fn unavailable(e: crate::services::ServiceError) -> Self {
        tracing::warn!(error = format!("{e:#}"), "could not check an access token");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "temporarily_unavailable",
            description: "the token cannot be checked right now; try again shortly".to_owned(),
        }
    }

    fn invalid_client(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: description.into(),
        }
    }
}

impl From<ClientAuthFailure> for OAuthReply {
    fn from(f: ClientAuthFailure) -> Self {
        match f {
            // RFC 6749 §5.2 has no code for this; `temporarily_unavailable` (§4.1.2.1) says retry.
            ClientAuthFailure::Unavailable => OAuthReply {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "temporarily_unavailable",
                description: f.description().to_owned(),
            },
            _ => OAuthReply::invalid_client(f.description()),
        }
    }
}

impl IntoResponse for OAuthReply {
    fn into_response(self) -> Response {
        let body = OAuthError {
            error: self.error.to_owned(),
            error_description: Some(self.description),
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tether\""),
            );
        }
        response
    }
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Reads an `application/x-www-form-urlencoded` body. Parameters may appear once (RFC 6749 §3.2).
async fn read_form(
    state: &AppState,
    req: Request,
) -> Result<(HeaderMap, HashMap<String, String>), OAuthReply> {
    let is_form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(OAuthReply::invalid_request(
            "send parameters as application/x-www-form-urlencoded",
        ));
    }
    let headers = req.headers().clone();
    let body = read_body(req, state).await.map_err(|e| match e {
        ApiError::PayloadTooLarge => OAuthReply {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: "invalid_request",
            description: "request body too large".to_owned(),
        },
        _ => OAuthReply::invalid_request("could not read the request body"),
    })?;
    let mut form = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        if form.insert(k.to_string(), v.to_string()).is_some() {
            return Err(OAuthReply::invalid_request(format!(
                "parameter `{k}` is repeated"
            )));
        }
    }
    Ok((headers, form))
}

/// Client credentials from HTTP Basic (RFC 6749 §2.3.1, form-urlencoded id and secret) or from the
/// body. Using both is an error; neither gives `None`.
fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Option<(String, String)>, OAuthReply> {
    let basic = match headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(v) if v.len() > 6 && v[..6].eq_ignore_ascii_case("basic ") => {
            let decoded = STANDARD
                .decode(v[6..].trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| OAuthReply::invalid_client("malformed HTTP Basic credentials"))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| OAuthReply::invalid_client("malformed HTTP Basic credentials"))?;
            Some((form_decode(id), form_decode(secret)))
        }
        _ => None,
    };
    let in_body = form
        .get("client_id")
        .map(|id| (id.clone(), form.get("client_secret").cloned()));
    match (basic, in_body) {
        (Some(_), Some(_)) => Err(OAuthReply::invalid_request(
            "use one client authentication method: HTTP Basic or client_id/client_secret in the body, not both",
        )),
        (Some(creds), None) => Ok(Some(creds)),
        (None, Some((id, Some(secret)))) => Ok(Some((id, secret))),
        (None, Some((_, None))) => Err(OAuthReply::invalid_client("client_secret is missing")),
        (None, None) => Ok(None),
    }
}

/// `application/x-www-form-urlencoded` decoding of one value ('+' is a space).
fn form_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

async fn issue_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    req: Request,
) -> Response {
    match issue(&state, ip, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn issue(state: &AppState, ip: Option<String>, req: Request) -> Result<Response, OAuthReply> {
    let (headers, form) = read_form(state, req).await?;
    match form.get("grant_type").map(String::as_str) {
        None => return Err(OAuthReply::invalid_request("grant_type is missing")),
        Some("client_credentials") => {}
        Some(_) => {
            return Err(OAuthReply {
                status: StatusCode::BAD_REQUEST,
                error: "unsupported_grant_type",
                description: "only grant_type=client_credentials is supported".to_owned(),
            })
        }
    }
    let Some((client_id, secret)) = client_credentials(&headers, &form)? else {
        state.metrics.refused("no_client_auth");
        return Err(OAuthReply::invalid_client(
            "client authentication required: HTTP Basic or client_id and client_secret in the body",
        ));
    };
    let (client, generation) = oauth::authenticate_client(state, &client_id, &secret, ip).await?;
    let (access_token, _) = oauth::issue_token(state, &client, generation);
    let body = TokenResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: state.config.access_token_ttl.as_secs(),
    };
    Ok(no_store(Json(body).into_response()))
}

/// Who may introspect: an admin's API token, or a client asking about its own tokens.
enum Introspector {
    Admin,
    Client(String),
}

async fn introspect_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    req: Request,
) -> Response {
    match introspect(&state, ip, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn introspect(
    state: &AppState,
    ip: Option<String>,
    req: Request,
) -> Result<Response, OAuthReply> {
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(super::extract::bearer)
        .map(str::to_owned);
    let (headers, form) = read_form(state, req).await?;
    let who = if let Some(api_token) = bearer {
        match resolve_api_token(state, &api_token).await {
            Ok(Some(owner)) if owner.role.allows(Role::Admin) => Introspector::Admin,
            Ok(Some(_)) => {
                return Err(OAuthReply {
                    status: StatusCode::FORBIDDEN,
                    error: "access_denied",
                    description: "introspection with an API token needs the admin role".to_owned(),
                })
            }
            Ok(None) => return Err(OAuthReply::invalid_client("unknown or revoked API token")),
            Err(e) => {
                tracing::error!(error = %e, "resolving API token failed");
                return Err(OAuthReply::invalid_client("could not verify the API token"));
            }
        }
    } else {
        let Some((client_id, secret)) = client_credentials(&headers, &form)? else {
            return Err(OAuthReply::invalid_client(
                "authenticate with the client's credentials or an admin API token",
            ));
        };
        let (client, _) = oauth::authenticate_client(state, &client_id, &secret, ip).await?;
        Introspector::Client(client.client_id.as_str().to_owned())
    };
    let token = form
        .get("token")
        .ok_or_else(|| OAuthReply::invalid_request("token is missing"))?;
    let inactive = || no_store(Json(Introspection::default()).into_response());
    let Some((claims, _)) = oauth::validate_access_token(state, token)
        .await
        .map_err(OAuthReply::unavailable)?
    else {
        return Ok(inactive());
    };
    if let Introspector::Client(caller) = &who {
        if *caller != claims.client_id {
            return Ok(inactive());
        }
    }
    let body = Introspection {
        active: true,
        client_id: Some(claims.client_id),
        sub: Some(claims.sub),
        token_type: Some("Bearer".to_owned()),
        exp: Some(claims.exp),
        iat: Some(claims.iat),
        iss: Some(claims.iss),
        aud: Some(claims.aud),
        jti: Some(claims.jti),
        gen: Some(claims.gen),
    };
    Ok(no_store(Json(body).into_response()))
}

async fn revoke_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    req: Request,
) -> Response {
    match revoke(&state, ip, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn revoke(
    state: &AppState,
    ip: Option<String>,
    req: Request,
) -> Result<Response, OAuthReply> {
    let (headers, form) = read_form(state, req).await?;
    let Some((client_id, secret)) = client_credentials(&headers, &form)? else {
        return Err(OAuthReply::invalid_client("client authentication required"));
    };
    let (client, _) = oauth::authenticate_client(state, &client_id, &secret, ip).await?;
    let token = form
        .get("token")
        .ok_or_else(|| OAuthReply::invalid_request("token is missing"))?;
    // RFC 7009 §2.2: invalid, expired or already revoked tokens are answered with 200 too.
    if let Some((claims, owner)) = oauth::validate_access_token(state, token)
        .await
        .map_err(OAuthReply::unavailable)?
    {
        if owner.client_id != client.client_id {
            return Err(OAuthReply::invalid_request(
                "the token was not issued to this client",
            ));
        }
        if let Err(e) = oauth::revoke_access_token(state, &claims, &owner).await {
            tracing::error!(
                error = format!("{e:#}"),
                "recording token revocation failed"
            );
            return Err(OAuthReply {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "temporarily_unavailable",
                description: "could not record the revocation; try again".to_owned(),
            });
        }
    }
    Ok(no_store(StatusCode::OK.into_response()))
}

#[cfg(test)]
mod tests {
    use super::form_decode;

    #[test]
    fn decodes_form_values() {
        assert_eq!(form_decode("a+b%3Ac"), "a b:c");
        assert_eq!(form_decode("tcs_abc"), "tcs_abc");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz"), "%zz");
        assert_eq!(form_decode("%é1"), "%é1");
        assert_eq!(form_decode("ab%4"), "ab%4");
    }
}
