//! Getting access tokens at `/oauth/token` with the client credentials grant, through
//! `tether_client` (the one HTTP client of the workspace), on the runner's own transport.

use std::time::{Duration, Instant};

use tether_client::{Client, ClientError};
use tether_domain::{ClientId, ClientSecret};

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

/// Gets an access token with the client credentials grant through the shared API client.
pub async fn fetch_token(
    api: &Client,
    client_id: &ClientId,
    secret: &ClientSecret,
) -> Result<AccessToken, AuthError> {
    let started = Instant::now();
    match api
        .client_credentials_token(client_id.as_str(), secret.expose())
        .await
    {
        Ok(body) => {
            let lifetime = Duration::from_secs(body.expires_in.max(10));
            Ok(AccessToken {
                token: body.access_token,
                renew_at: started + lifetime.mul_f64(0.8),
            })
        }
        Err(ClientError::OAuth { error, .. }) if error.error == "invalid_client" => Err(
            AuthError::InvalidClient(error.error_description.unwrap_or(error.error)),
        ),
        Err(ClientError::OAuth { status, error }) => Err(AuthError::Transient(format!(
            "token request failed with HTTP {status}: {} {}",
            error.error,
            error.error_description.unwrap_or_default()
        ))),
        Err(ClientError::Decode(e)) => Err(AuthError::Transient(format!(
            "unreadable token response: {e}"
        ))),
        Err(ClientError::Api { status, .. } | ClientError::Http { status, .. }) => Err(
            AuthError::Transient(format!("token request failed with HTTP {status}")),
        ),
        Err(e) => Err(AuthError::Transient(e.to_string())),
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
