//! Typed HTTP client for tether's `/api/v1` and `/oauth` endpoints, used by the CLI and tests.
//! Errors read as one line and never contain a token or secret. Pipelines and runs are in
//! `pipelines.rs`, a runner's credential lifecycle in `credentials.rs`.

mod credentials;
mod pipelines;

pub use credentials::{REVEAL_WINDOW_CLOSED, RUNS_IN_PROGRESS};

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tether_protocol::api::{
    AuditList, CreateRunnerRequest, CreateTokenRequest, CreateUserRequest, CreatedRunner,
    CreatedToken, Me, Runner, RunnerList, TokenList, User, UserList,
};
use tether_protocol::oauth::{OAuthError, TokenResponse};
use tether_protocol::Problem;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with a problem document. `document` is the whole document as sent,
    /// including members beyond [`Problem`]'s (a `runs_in_progress` problem lists the `runs`).
    #[error("{} ({}, HTTP {status})", problem.detail, problem.code)]
    Api {
        status: u16,
        problem: Box<Problem>,
        document: Box<serde_json::Value>,
    },
    /// An OAuth endpoint answered with an RFC 6749 error.
    #[error("{}: {} (HTTP {status})", error.error, error.error_description.as_deref().unwrap_or("no description"))]
    OAuth { status: u16, error: OAuthError },
    /// An error status without a readable body (a proxy, a load balancer).
    #[error("HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("cannot reach {url}: {cause}")]
    Transport { url: String, cause: String },
    #[error("{0}")]
    InvalidUrl(String),
    #[error("unexpected response: {0}")]
    Decode(String),
}

impl ClientError {
    /// The problem `code` of an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { problem, .. } => Some(&problem.code),
            _ => None,
        }
    }

    /// An extension member of an API problem document (RFC 9457 §3.2), e.g. `runs`.
    pub fn problem_member<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        match self {
            ClientError::Api { document, .. } => {
                document.get(name).and_then(|v| T::deserialize(v).ok())
            }
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &"[redacted]")
            .finish()
    }
}

impl Client {
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("tether-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport {
                url: base_url.to_owned(),
                cause: e.to_string(),
            })?;
        Self::with_http(base_url, token, http)
    }

    /// A client on an HTTP client configured elsewhere (the runner's: its CA file and proxy).
    pub fn with_http(
        base_url: &str,
        token: Option<String>,
        http: reqwest::Client,
    ) -> Result<Self, ClientError> {
        let trimmed = base_url.trim().trim_end_matches('/');
        let base = Url::parse(&format!("{trimmed}/"))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ClientError::InvalidUrl(format!("'{base_url}' is not an http(s) URL"))
            })?;
        Ok(Self { base, token, http })
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}{}",
            self.base.path(),
            path.trim_start_matches('/')
        ));
        url
    }

    /// A path with one percent-encoded segment (a runner id or name typed by a user).
    fn segment_path(prefix: &str, segment: &str, suffix: &str) -> String {
        let encoded: String = url::form_urlencoded::byte_serialize(segment.as_bytes()).collect();
        format!("{prefix}/{}{suffix}", encoded.replace('+', "%20"))
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        let resp = self.execute(req).await?;
        let text = resp
            .text()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn execute(&self, req: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|e| ClientError::Transport {
            url: self.base_url().to_owned(),
            cause: chain(&e),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Err(error_from_body(status, &body))
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn me(&self) -> Result<Me, ClientError> {
        self.send(self.request(Method::GET, "api/v1/me")).await
    }

    pub async fn create_runner(
        &self,
        req: &CreateRunnerRequest,
    ) -> Result<CreatedRunner, ClientError> {
        self.post("api/v1/runners", req).await
    }

    pub async fn list_runners(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<RunnerList, ClientError> {
        let mut req = self.request(Method::GET, "api/v1/runners");
        if let Some(l) = limit {
            req = req.query(&[("limit", l.to_string())]);
        }
        if let Some(c) = cursor {
            req = req.query(&[("cursor", c)]);
        }
        self.send(req).await
    }

    pub async fn get_runner(&self, runner: &str) -> Result<Runner, ClientError> {
        self.send(self.request(
            Method::GET,
            &Self::segment_path("api/v1/runners", runner, ""),
        ))
        .await
    }

    pub async fn delete_runner(&self, runner: &str) -> Result<(), ClientError> {
        self.execute(self.request(
            Method::DELETE,
            &Self::segment_path("api/v1/runners", runner, ""),
        ))
        .await
        .map(|_| ())
    }

    /// Pauses a runner; `until` is RFC 3339.
    pub async fn pause_runner(
        &self,
        runner: &str,
        until: Option<&str>,
    ) -> Result<Runner, ClientError> {
        let mut body = serde_json::json!({"confirm": "pause runner"});
        if let Some(u) = until {
            body["until"] = serde_json::Value::from(u);
        }
        self.post(
            &Self::segment_path("api/v1/runners", runner, "/pause"),
            &body,
        )
        .await
    }

    pub async fn resume_runner(&self, runner: &str) -> Result<Runner, ClientError> {
        self.post(
            &Self::segment_path("api/v1/runners", runner, "/resume"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn restart_runner(&self, runner: &str) -> Result<Runner, ClientError> {
        self.post(
            &Self::segment_path("api/v1/runners", runner, "/restart"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn create_user(&self, req: &CreateUserRequest) -> Result<User, ClientError> {
        self.post("api/v1/users", req).await
    }

    /// A new API token for `username`; `expires_in` seconds from now, or until revoked.
    pub async fn create_token(
        &self,
        username: &str,
        name: &str,
        expires_in: Option<u64>,
    ) -> Result<CreatedToken, ClientError> {
        let path = Self::segment_path("api/v1/users", username, "/tokens");
        self.post(
            &path,
            &CreateTokenRequest {
                name: name.to_owned(),
                expires_in,
            },
        )
        .await
    }

    pub async fn list_tokens(&self, username: &str) -> Result<TokenList, ClientError> {
        let path = Self::segment_path("api/v1/users", username, "/tokens");
        self.send(self.request(Method::GET, &path)).await
    }

    /// Revokes `username`'s token `id`: it stops working at once.
    pub async fn revoke_token(&self, username: &str, id: &str) -> Result<(), ClientError> {
        let base = Self::segment_path("api/v1/users", username, "/tokens");
        let path = Self::segment_path(&base, id, "");
        self.execute(self.request(Method::DELETE, &path))
            .await
            .map(|_| ())
    }

    pub async fn list_users(&self) -> Result<UserList, ClientError> {
        self.send(self.request(Method::GET, "api/v1/users")).await
    }

    /// Deletes a user with their tokens and web sessions (never the last admin).
    pub async fn delete_user(&self, username: &str) -> Result<(), ClientError> {
        let path = Self::segment_path("api/v1/users", username, "");
        self.execute(self.request(Method::DELETE, &path))
            .await
            .map(|_| ())
    }

    pub async fn list_audit(
        &self,
        runner: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<AuditList, ClientError> {
        let mut req = self.request(Method::GET, "api/v1/audit");
        if let Some(r) = runner {
            req = req.query(&[("runner", r)]);
        }
        if let Some(l) = limit {
            req = req.query(&[("limit", l.to_string())]);
        }
        if let Some(c) = cursor {
            req = req.query(&[("cursor", c)]);
        }
        self.send(req).await
    }

    /// `POST /oauth/token` with the client credentials grant (HTTP Basic client authentication).
    pub async fn client_credentials_token(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<TokenResponse, ClientError> {
        let req = self
            .http
            .post(self.url("oauth/token"))
            .basic_auth(client_id, Some(client_secret))
            .form(&[("grant_type", "client_credentials")]);
        self.send(req).await
    }
}

/// The error for a non-success answer: a problem document, an OAuth error, or the raw text.
fn error_from_body(status: u16, body: &str) -> ClientError {
    if let Ok(document) = serde_json::from_str::<serde_json::Value>(body) {
        if let Ok(problem) = Problem::deserialize(&document) {
            return ClientError::Api {
                status,
                problem: Box::new(problem),
                document: Box::new(document),
            };
        }
        if let Ok(error) = OAuthError::deserialize(&document) {
            return ClientError::OAuth { status, error };
        }
    }
    let body: String = body.chars().take(200).collect();
    ClientError::Http {
        status,
        body: if body.is_empty() {
            status_text(status)
        } else {
            body
        },
    }
}

fn status_text(status: u16) -> String {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
        .to_owned()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_segments() {
        let c = Client::new("http://h:8080/base/", None).expect("client");
        assert_eq!(c.base_url(), "http://h:8080/base");
        assert_eq!(
            c.url("api/v1/runners").as_str(),
            "http://h:8080/base/api/v1/runners"
        );
        assert_eq!(
            Client::segment_path("api/v1/runners", "a b/c", "/pause"),
            "api/v1/runners/a%20b%2Fc/pause"
        );
        assert!(Client::new("ftp://x", None).is_err());
        assert!(Client::new("nope", None).is_err());
        assert!(!format!(
            "{:?}",
            Client::new("http://h", Some("tpat_secret".into())).expect("c")
        )
        .contains("tpat_secret"));
    }
}
