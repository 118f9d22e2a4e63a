//! The whole agent against a scripted fake control plane (token endpoint plus session socket).
//! The fake accepts a set of client secrets, each of a credential generation; its tokens say
//! their generation, `reauth` is answered `reauthenticated` (or 4401 once the generation is
//! revoked), and the test pushes any server message (`credentials_rotated`, `assign`, ...) or
//! closes a session with any code. `tasks` covers the task protocol, `credentials` rotation.

mod credentials;
mod tasks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use tether_domain::{ClientId, ClientSecret};
use tether_protocol::oauth::{OAuthError, TokenResponse};
use tether_protocol::session::{
    RunnerMessage, ServerMessage, TaskAssignment, TaskUpdate, CONNECT_PATH,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::ReloadTiming;
use crate::config::SecretSourceConfig;
use crate::metrics::RunnerMetrics;
use crate::{Agent, Exit, RunnerConfig};

/// Fake access tokens are `fake-token-gen<generation>-<n>`.
const TOKEN_PREFIX: &str = "fake-token-gen";

enum ToRunner {
    Send(ServerMessage),
    Close { code: u16, reason: String },
}

struct Links {
    received: mpsc::UnboundedSender<RunnerMessage>,
    /// Each new session: how the test drives it, and the generation of its token.
    connections: mpsc::UnboundedSender<(mpsc::UnboundedSender<ToRunner>, u32)>,
    /// Client secret -> credential generation, for the secrets the token endpoint accepts.
    accepted: Mutex<HashMap<String, u32>>,
    issued: AtomicU32,
    refused: AtomicU32,
}

impl Links {
    fn accepted(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.accepted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether tokens of this generation are still honoured.
    fn live(&self, generation: u32) -> bool {
        self.accepted().values().any(|g| *g == generation)
    }
}

struct Plane {
    url: url::Url,
    links: Arc<Links>,
    received: mpsc::UnboundedReceiver<RunnerMessage>,
    connections: mpsc::UnboundedReceiver<(mpsc::UnboundedSender<ToRunner>, u32)>,
    server: JoinHandle<()>,
}

/// One runner connection, as the test drives it.
struct Conn {
    tx: mpsc::UnboundedSender<ToRunner>,
    /// The credential generation of the token the session was opened with.
    generation: u32,
}

impl Conn {
    fn send(&self, msg: ServerMessage) {
        self.tx.send(ToRunner::Send(msg)).expect("connection open");
    }

    fn close(&self) {
        self.close_with(1001, "going away");
    }

    fn close_with(&self, code: u16, reason: &str) {
        let _ = self.tx.send(ToRunner::Close {
            code,
            reason: reason.into(),
        });
    }
}

impl Plane {
    async fn start() -> Self {
        let (received_tx, received) = mpsc::unbounded_channel();
        let (connections_tx, connections) = mpsc::unbounded_channel();
        let links = Arc::new(Links {
            received: received_tx,
            connections: connections_tx,
            accepted: Mutex::default(),
            issued: AtomicU32::new(0),
            refused: AtomicU32::new(0),
        });
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route(CONNECT_PATH, get(connect))
            .with_state(links.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"))
            .parse()
            .expect("url");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Plane {
            url,
            links,
            received,
            connections,
            server,
        }
    }

    /// The token endpoint accepts `secret` from now on, as credential generation `generation`.
    fn accept(&self, secret: &ClientSecret, generation: u32) {
        self.links
            .accepted()
            .insert(secret.expose().to_owned(), generation);
    }

    /// Secrets of `generation` get `invalid_client`, its tokens no session, its `reauth` a 4401.
    fn revoke(&self, generation: u32) {
        self.links.accepted().retain(|_, g| *g != generation);
    }

    /// Token requests refused with `invalid_client` so far.
    fn refusals(&self) -> u32 {
        self.links.refused.load(Ordering::SeqCst)
    }

    async fn connection(&mut self) -> Conn {
        let (tx, generation) =
            tokio::time::timeout(Duration::from_secs(10), self.connections.recv())
                .await
                .expect("the runner connects within 10 s")
                .expect("connection");
        assert!(
            matches!(self.next().await, RunnerMessage::Hello { .. }),
            "hello first"
        );
        Conn { tx, generation }
    }

    /// Fails if the runner opened another session.
    fn assert_no_new_connection(&mut self) {
        assert!(
            self.connections.try_recv().is_err(),
            "the runner opened another session"
        );
    }

    /// The next message from the runner, heartbeats skipped.
    async fn next(&mut self) -> RunnerMessage {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.received.recv())
                .await
                .expect("a message within 10 s")
                .expect("message");
            if !matches!(msg, RunnerMessage::Heartbeat { .. }) {
                return msg;
            }
        }
    }

    /// Fails if the runner sends anything but heartbeats for `period`.
    async fn assert_quiet(&mut self, period: Duration) {
        let deadline = tokio::time::Instant::now() + period;
        while let Ok(msg) = tokio::time::timeout_at(deadline, self.received.recv()).await {
            match msg {
                Some(RunnerMessage::Heartbeat { .. }) => {}
                Some(other) => panic!("expected only heartbeats, got {other:?}"),
                None => return,
            }
        }
    }

    /// The next message must be a `reauth`: the generation of its token.
    async fn reauth(&mut self) -> u32 {
        match self.next().await {
            RunnerMessage::Reauth { access_token } => {
                generation_of(&access_token).expect("a token of the fake token endpoint")
            }
            other => panic!("expected reauth, got {other:?}"),
        }
    }

    async fn update(&mut self) -> TaskUpdate {
        match self.next().await {
            RunnerMessage::TaskUpdate(u) => u,
            other => panic!("expected a task update, got {other:?}"),
        }
    }

    /// `task_id`'s updates until its final one; every update in between must be this task's.
    async fn until_final(&mut self, task_id: &str) -> Vec<TaskUpdate> {
        let mut got = Vec::new();
        loop {
            let u = self.update().await;
            assert_eq!(u.task_id, task_id, "only {task_id} reports now: {u:?}");
            let last = u.state.is_final();
            got.push(u);
            if last {
                return got;
            }
        }
    }
}

fn generation_of(token: &str) -> Option<u32> {
    token
        .strip_prefix(TOKEN_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// The client secret of an HTTP Basic `Authorization` header.
fn basic_secret(headers: &HeaderMap) -> Option<String> {
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, secret) = text.split_once(':')?;
    Some(secret.to_owned())
}

async fn token(State(links): State<Arc<Links>>, headers: HeaderMap) -> Response {
    let generation = basic_secret(&headers).and_then(|s| links.accepted().get(&s).copied());
    match generation {
        Some(generation) => {
            let n = links.issued.fetch_add(1, Ordering::SeqCst);
            Json(TokenResponse {
                access_token: format!("{TOKEN_PREFIX}{generation}-{n}"),
                token_type: "Bearer".into(),
                expires_in: 600,
            })
            .into_response()
        }
        None => {
            links.refused.fetch_add(1, Ordering::SeqCst);
            let body = OAuthError {
                error: "invalid_client".into(),
                error_description: Some("client authentication failed".into()),
            };
            (StatusCode::UNAUTHORIZED, Json(body)).into_response()
        }
    }
}

async fn connect(
    State(links): State<Arc<Links>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let generation = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(generation_of)
        .filter(|g| links.live(*g));
    match generation {
        Some(generation) => upgrade.on_upgrade(move |socket| bridge(socket, links, generation)),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// Relays one session between the runner and the test.
async fn bridge(mut socket: WebSocket, links: Arc<Links>, generation: u32) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _ = links.connections.send((tx, generation));
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(Message::Text(text))) = incoming else { return };
                let msg: RunnerMessage = serde_json::from_str(&text).expect("a runner message");
                let (reply, close) = match &msg {
                    RunnerMessage::Hello { .. } => (Some(ServerMessage::Welcome {
                        session_id: "s-1".into(),
                        heartbeat_seconds: 1,
                    }), None),
                    RunnerMessage::Reauth { access_token } => match generation_of(access_token) {
                        Some(generation) if links.live(generation) => {
                            (Some(ServerMessage::Reauthenticated { generation, expires_at: 0 }), None)
                        }
                        _ => (None, Some((4401, "credentials_revoked"))),
                    },
                    RunnerMessage::Goodbye { .. } => (None, Some((1000, "goodbye"))),
                    _ => (None, None),
                };
                let _ = links.received.send(msg);
                if let Some(reply) = reply {
                    let text = serde_json::to_string(&reply).expect("json");
                    let _ = socket.send(Message::Text(text.into())).await;
                }
                if let Some((code, reason)) = close {
                    let frame = CloseFrame { code, reason: reason.into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
            }
            command = rx.recv() => match command {
                Some(ToRunner::Send(msg)) => {
                    let text = serde_json::to_string(&msg).expect("json");
                    let _ = socket.send(Message::Text(text.into())).await;
                }
                Some(ToRunner::Close { code, reason }) => {
                    let frame = CloseFrame { code, reason: reason.into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
                None => return,
            },
        }
    }
}

/// A runner configuration with a plain secret the plane accepts as generation 1.
fn config(plane: &Plane, workdir: &std::path::Path) -> RunnerConfig {
    let secret = ClientSecret::generate();
    plane.accept(&secret, 1);
    RunnerConfig {
        url: plane.url.clone(),
        client_id: ClientId::generate(),
        secret: SecretSourceConfig::Value(secret),
        ca_file: None,
        max_tasks: 2,
        workdir: workdir.to_owned(),
        platform: "local".into(),
        metrics_listen: None,
    }
}

/// Runs an agent with its own secret-watch timing.
fn spawn_agent(
    config: RunnerConfig,
    reload: ReloadTiming,
    stop: watch::Receiver<bool>,
) -> JoinHandle<anyhow::Result<Exit>> {
    tokio::spawn(async move {
        let agent = Agent::new(config, Arc::new(RunnerMetrics::default()))
            .await?
            .with_reload(reload);
        Ok(agent.run(stop).await)
    })
}

fn assign(task_id: &str, run: &str) -> ServerMessage {
    ServerMessage::Assign {
        task: TaskAssignment {
            task_id: task_id.into(),
            run_id: "run-1".into(),
            pipeline: "p".into(),
            name: "step".into(),
            run: run.into(),
            env: Default::default(),
            secret_env: Vec::new(),
            timeout_seconds: Some(10),
        },
    }
}

fn ack(u: &TaskUpdate) -> ServerMessage {
    ServerMessage::Ack {
        task_id: u.task_id.clone(),
        seq: u.seq,
    }
}

async fn exit_of(agent: JoinHandle<anyhow::Result<Exit>>) -> Exit {
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("the agent exits within 10 s")
        .expect("joined")
        .expect("no error")
}
