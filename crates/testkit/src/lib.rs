//! Test helpers: a real tether control plane on a loopback port with its own database, and a
//! [`TestApp`] with one helper per endpoint.
//!
//! The database is SQLite in the app's temporary directory, or, when `TETHER_TEST_BACKEND` is
//! `postgres`, a fresh PostgreSQL database on the cluster `scripts/test` starts (see
//! `tether_pgtest`): `scripts/test` runs the credential, session and pipeline suites a second time
//! that way. Any other value of the variable fails the test.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use tether_domain::ApiToken;
use tether_server::{RunningServer, ServerConfig};

/// A server started for one test. Dropping it stops the server with its runtime.
#[derive(Debug)]
pub struct TestApp {
    pub base_url: String,
    /// The admin's API token (`TETHER_BOOTSTRAP_TOKEN` of this server).
    pub admin_token: String,
    pub http: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    config: ServerConfig,
    server: Option<RunningServer>,
    /// The PostgreSQL database of this app, dropped after the server (field order).
    _database: Option<tether_pgtest::TestDatabase>,
}

/// A database for a test's server: `None` (SQLite in its data directory) or a fresh PostgreSQL
/// database, as `TETHER_TEST_BACKEND` says. Keep the returned value alive as long as the server.
pub async fn test_database() -> Option<tether_pgtest::TestDatabase> {
    if tether_pgtest::TestDatabase::wanted() {
        Some(tether_pgtest::TestDatabase::create().await)
    } else {
        None
    }
}

/// The `--database-url` of a test database.
pub fn database_url(db: &tether_pgtest::TestDatabase) -> tether_server::DatabaseUrl {
    tether_server::DatabaseUrl::parse(db.url()).expect("test database URL")
}

/// A response with its body read.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json error with the given status and code; returns the problem.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "body: {}",
            self.body
        );
        let p = self.json();
        assert_eq!(p["code"], code, "problem: {p}");
        assert_eq!(p["status"], status, "problem: {p}");
        assert!(
            p["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "problem: {p}"
        );
        p
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server after letting the test adjust its configuration.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let admin_token = format!("test-bootstrap-{}", uuid_like());
    let mut config = ServerConfig::new(data_dir.path().to_path_buf());
    config.bootstrap_token =
        Some(ApiToken::parse_supplied(&admin_token).expect("valid bootstrap token"));
    config.flush_interval = Duration::from_millis(200);
    let database = test_database().await;
    config.database_url = database.as_ref().map(database_url);
    adjust(&mut config);
    let server = tether_server::start(config.clone())
        .await
        .expect("server starts");
    TestApp {
        base_url: server.public_url.clone(),
        admin_token,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        data_dir,
        config,
        server: Some(server),
        _database: database,
    }
}

fn uuid_like() -> String {
    let mut buf = [0u8; 16];
    getrandom_fill(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("random bytes");
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Any request; `token` goes in `Authorization: Bearer`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> TestResponse {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        Self::read(req.send().await.expect("request sent")).await
    }

    pub async fn read(resp: reqwest::Response) -> TestResponse {
        TestResponse {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.expect("body read"),
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> TestResponse {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> TestResponse {
        self.request(Method::DELETE, path, token, None).await
    }

    /// `POST /api/v1/runners` as admin; panics unless 201. Returns the body.
    pub async fn create_runner(&self, name: &str, platform: &str) -> Value {
        let r = self
            .post(
                "/api/v1/runners",
                Some(&self.admin_token),
                &json!({"name": name, "platform": platform}),
            )
            .await;
        assert_eq!(r.status, 201, "create runner: {}", r.body);
        r.json()
    }

    /// Creates a user with `role` and returns an API token for them.
    pub async fn user_token(&self, username: &str, role: &str) -> String {
        let r = self
            .post(
                "/api/v1/users",
                Some(&self.admin_token),
                &json!({"username": username, "password": "a long enough password", "role": role}),
            )
            .await;
        assert_eq!(r.status, 201, "create user: {}", r.body);
        let r = self
            .post(
                &format!("/api/v1/users/{username}/tokens"),
                Some(&self.admin_token),
                &json!({"name": "test"}),
            )
            .await;
        assert_eq!(r.status, 201, "create token: {}", r.body);
        r.json()["token"].as_str().expect("token").to_owned()
    }

    /// `POST /oauth/token` with HTTP Basic client authentication.
    pub async fn token_basic(&self, client_id: &str, secret: &str) -> TestResponse {
        let req = self
            .http
            .post(self.url("/oauth/token"))
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials")]);
        Self::read(req.send().await.expect("request sent")).await
    }

    /// `POST /oauth/token` with the credentials in the form body.
    pub async fn token_form(&self, client_id: &str, secret: &str) -> TestResponse {
        let req = self.http.post(self.url("/oauth/token")).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ]);
        Self::read(req.send().await.expect("request sent")).await
    }

    /// Any form POST (for the OAuth endpoints), optionally with HTTP Basic credentials.
    pub async fn post_form(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        bearer: Option<&str>,
        form: &[(&str, &str)],
    ) -> TestResponse {
        let mut req = self.http.post(self.url(path)).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        Self::read(req.send().await.expect("request sent")).await
    }

    /// A fresh access token for a runner's credentials; panics unless issued.
    pub async fn access_token(&self, client_id: &str, secret: &str) -> String {
        let r = self.token_basic(client_id, secret).await;
        assert_eq!(r.status, 200, "token: {}", r.body);
        r.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Stops the server gracefully (flushing usage data).
    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
    }

    /// Starts a graceful shutdown (with its drain, if configured) that goes on in the background
    /// while the test keeps talking to the server; await the handle for its end.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        let server = self.server.take().expect("server running");
        tokio::spawn(async move { server.shutdown().await.expect("clean shutdown") })
    }

    /// Stops the server gracefully and starts it again on the same address and data directory.
    pub async fn restart(&mut self) {
        let server = self.server.take().expect("server running");
        let addr = server.local_addr;
        server.shutdown().await.expect("clean shutdown");
        let mut config = self.config.clone();
        config.listen = addr;
        self.server = Some(tether_server::start(config).await.expect("server restarts"));
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }
}
