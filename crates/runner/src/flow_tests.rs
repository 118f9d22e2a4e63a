//! The whole agent against a scripted fake control plane (token endpoint plus session socket):
//! assignments, updates, acks, replay after a reconnect, drain and shutdown. The real control
//! plane does not dispatch tasks yet; this pins down the runner's half of the protocol.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use tether_domain::{ClientId, ClientSecret};
use tether_protocol::oauth::TokenResponse;
use tether_protocol::session::{
    RunnerMessage, ServerMessage, TaskAssignment, TaskUpdate, TaskUpdateState, CONNECT_PATH,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::SecretSourceConfig;
use crate::spool::Spool;
use crate::{Exit, RunnerConfig};

enum ToRunner {
    Send(ServerMessage),
    Close,
}

#[derive(Clone)]
struct Links {
    received: mpsc::UnboundedSender<RunnerMessage>,
    connections: mpsc::UnboundedSender<mpsc::UnboundedSender<ToRunner>>,
}

struct Plane {
    url: url::Url,
    received: mpsc::UnboundedReceiver<RunnerMessage>,
    connections: mpsc::UnboundedReceiver<mpsc::UnboundedSender<ToRunner>>,
    server: JoinHandle<()>,
}

/// One runner connection, as the test drives it.
struct Conn(mpsc::UnboundedSender<ToRunner>);

impl Conn {
    fn send(&self, msg: ServerMessage) {
        self.0.send(ToRunner::Send(msg)).expect("connection open");
    }

    fn close(&self) {
        let _ = self.0.send(ToRunner::Close);
    }
}

impl Plane {
    async fn start() -> Self {
        let (received_tx, received) = mpsc::unbounded_channel();
        let (connections_tx, connections) = mpsc::unbounded_channel();
        let links = Arc::new(Links {
            received: received_tx,
            connections: connections_tx,
        });
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route(CONNECT_PATH, get(connect))
            .with_state(links);
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
            received,
            connections,
            server,
        }
    }

    async fn connection(&mut self) -> Conn {
        let conn = tokio::time::timeout(Duration::from_secs(10), self.connections.recv())
            .await
            .expect("the runner connects within 10 s")
            .expect("connection");
        assert!(
            matches!(self.next().await, RunnerMessage::Hello { .. }),
            "hello first"
        );
        Conn(conn)
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

async fn token() -> Json<TokenResponse> {
    Json(TokenResponse {
        access_token: "fake-access-token".into(),
        token_type: "Bearer".into(),
        expires_in: 600,
    })
}

async fn connect(State(links): State<Arc<Links>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| bridge(socket, links))
}

/// Relays one session between the runner and the test.
async fn bridge(mut socket: WebSocket, links: Arc<Links>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _ = links.connections.send(tx);
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(Message::Text(text))) = incoming else { return };
                let msg: RunnerMessage = serde_json::from_str(&text).expect("a runner message");
                let reply = match &msg {
                    RunnerMessage::Hello { .. } => Some(ServerMessage::Welcome {
                        session_id: "s-1".into(),
                        heartbeat_seconds: 1,
                    }),
                    _ => None,
                };
                let goodbye = matches!(msg, RunnerMessage::Goodbye { .. });
                let _ = links.received.send(msg);
                if let Some(reply) = reply {
                    let text = serde_json::to_string(&reply).expect("json");
                    let _ = socket.send(Message::Text(text.into())).await;
                }
                if goodbye {
                    let frame = CloseFrame { code: 1000, reason: "goodbye".into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
            }
            command = rx.recv() => match command {
                Some(ToRunner::Send(msg)) => {
                    let text = serde_json::to_string(&msg).expect("json");
                    let _ = socket.send(Message::Text(text.into())).await;
                }
                Some(ToRunner::Close) | None => {
                    let frame = CloseFrame { code: 1001, reason: "going away".into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
            },
        }
    }
}

fn config(plane: &Plane, workdir: &std::path::Path) -> RunnerConfig {
    RunnerConfig {
        url: plane.url.clone(),
        client_id: ClientId::generate(),
        secret: SecretSourceConfig::Value(ClientSecret::generate()),
        ca_file: None,
        max_tasks: 2,
        workdir: workdir.to_owned(),
        platform: "local".into(),
        metrics_listen: None,
    }
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

#[tokio::test]
async fn updates_survive_a_reconnect_and_a_drain_waits_for_tasks_and_acks() {
    let mut plane = Plane::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (_stop, stop_rx) = watch::channel(false);
    let agent = tokio::spawn(crate::run_until(config(&plane, dir.path()), stop_rx));

    let conn = plane.connection().await;
    conn.send(assign("t1", "echo hi"));
    let sent = plane.until_final("t1").await;
    let last = sent.last().expect("final").clone();
    assert_eq!(last.state, TaskUpdateState::Succeeded);
    assert_eq!(sent[1].log_chunk.as_deref(), Some("hi\n"));

    // Nothing was acked: a new session gets all of it again, in order.
    conn.close();
    let conn = plane.connection().await;
    assert_eq!(
        plane.until_final("t1").await,
        sent,
        "replayed from the spool"
    );
    conn.send(ack(&last));
    let spooled = dir.path().join("spool").join("t1.jsonl");
    for _ in 0..100 {
        if !spooled.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!spooled.exists(), "the acked task left the spool");

    conn.send(assign("t1", "echo again"));
    conn.send(assign("t2", "sleep 0.3; echo two"));
    conn.send(ServerMessage::Drain {
        reason: "restart".into(),
    });
    conn.send(assign("t3", "echo never"));
    let mut t2 = Vec::new();
    let (mut drained, mut rejected) = (false, false);
    while !(drained && rejected && t2.last().is_some_and(|u: &TaskUpdate| u.state.is_final())) {
        match plane.next().await {
            RunnerMessage::Draining { reason } => {
                assert_eq!(reason, "restart");
                drained = true;
            }
            RunnerMessage::Reject { task_id, reason } => {
                assert_eq!(task_id, "t3");
                assert!(reason.contains("draining"), "{reason}");
                rejected = true;
            }
            RunnerMessage::TaskUpdate(u) => {
                assert_eq!(u.task_id, "t2", "t1 was not run twice");
                t2.push(u);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let t2_final = t2.last().expect("final");
    assert_eq!(t2_final.state, TaskUpdateState::Succeeded);
    // Goodbye only once the final update is acked.
    conn.send(ack(t2_final));
    assert_eq!(
        plane.next().await,
        RunnerMessage::Goodbye {
            reason: "restart".into()
        }
    );
    assert_eq!(exit_of(agent).await, Exit::Clean);
}

#[tokio::test]
async fn shutdown_without_a_control_plane_waits_for_tasks_and_keeps_the_spool() {
    let mut plane = Plane::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (stop, stop_rx) = watch::channel(false);
    let agent = tokio::spawn(crate::run_until(config(&plane, dir.path()), stop_rx));
    let conn = plane.connection().await;
    conn.send(assign("t1", "sleep 1; echo finished"));
    assert_eq!(plane.update().await.seq, 1);

    // The control plane goes away for good, then the process is told to stop.
    plane.server.abort();
    conn.close();
    stop.send(true).expect("stop");
    assert_eq!(exit_of(agent).await, Exit::Clean);

    let spool = Spool::open(dir.path().join("spool")).expect("spool");
    let left = spool.unacked().expect("unacked");
    let last = left.last().expect("updates stay on disk");
    assert_eq!(
        last.state,
        TaskUpdateState::Succeeded,
        "the task ran to its end before the exit"
    );
    assert!(left
        .iter()
        .any(|u| u.log_chunk.as_deref() == Some("finished\n")));
}

#[tokio::test]
async fn a_shutdown_signal_drains_across_reconnects_before_saying_goodbye() {
    let mut plane = Plane::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (stop, stop_rx) = watch::channel(false);
    let agent = tokio::spawn(crate::run_until(config(&plane, dir.path()), stop_rx));
    let conn = plane.connection().await;
    conn.send(assign("t1", "sleep 1; echo done"));
    assert_eq!(plane.update().await.seq, 1);
    stop.send(true).expect("stop");
    let draining = RunnerMessage::Draining {
        reason: crate::agent::SHUTDOWN_REASON.into(),
    };
    assert_eq!(plane.next().await, draining);

    // While the task still runs: a new session hears that the instance drains before anything
    // else, and a re-sent assignment of the running task is neither run again nor rejected.
    conn.close();
    let conn = plane.connection().await;
    assert_eq!(plane.next().await, draining);
    conn.send(assign("t1", "echo twice"));
    let done = plane.until_final("t1").await;
    assert_eq!(done[0].seq, 1, "seq 1 was never acked, so it comes again");
    assert!(done
        .iter()
        .all(|u| u.log_chunk.as_deref() != Some("twice\n")));

    // The task has ended, its final update is not acked: the runner comes back to deliver it.
    conn.close();
    let conn = plane.connection().await;
    assert_eq!(plane.next().await, draining);
    let again = plane.until_final("t1").await;
    assert_eq!(again, done, "replayed from the spool");
    let last = again.last().expect("final");
    assert_eq!(last.state, TaskUpdateState::Succeeded);
    conn.send(ack(last));
    assert!(matches!(plane.next().await, RunnerMessage::Goodbye { .. }));
    assert_eq!(exit_of(agent).await, Exit::Clean);
}
