//! Getting access tokens at `/oauth/token` with the client credentials grant.

use std::time::{Duration, Instant};

use tether_domain::{ClientId, ClientSecret};
use tether_protocol::oauth::{OAuthError, TokenResponse};
use url::Url;

use crate::transport::Transport;

pub struct AccessToken {
    pub token: String,
    /// When to renew: 80% into the token's lifetime.
    pub renew_at: Instant,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The control plane refused the client credentials.
    #[error("the control plane refused the client credentials ({0})")]
    InvalidClient(String),
    /// Anything else: network, server errors. Worth retrying as is.
    #[error("{0}")]
    Transient(String),
}

pub async fn fetch_token(
    transport: &Transport,
    base: &Url,
    client_id: &ClientId,
    secret: &ClientSecret,
) -> Result<AccessToken, AuthError> {
    let url = base
        .join("oauth/token")
        .map_err(|e| AuthError::Transient(e.to_string()))?;
    let started = Instant::now();
    let response = transport
        .http
        .post(url.clone())
        .basic_auth(client_id.as_str(), Some(secret.expose()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .map_err(|e| AuthError::Transient(format!("cannot reach {url}: {}", error_chain(&e))))?;
    let status = response.status();
    if status.is_success() {
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|e| AuthError::Transient(format!("unreadable token response: {e}")))?;
        let lifetime = Duration::from_secs(body.expires_in.max(10));
        return Ok(AccessToken {
            token: body.access_token,
            renew_at: started + lifetime.mul_f64(0.8),
        });
    }
    let error: Option<OAuthError> = response.json().await.ok();
    match error {
        Some(e) if e.error == "invalid_client" => Err(AuthError::InvalidClient(
            e.error_description.unwrap_or(e.error),
        )),
        Some(e) => Err(AuthError::Transient(format!(
            "token request failed with HTTP {status}: {} {}",
            e.error,
            e.error_description.unwrap_or_default()
        ))),
        None => Err(AuthError::Transient(format!(
            "token request failed with HTTP {status}"
        ))),
    }
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
