//! One WebSocket session with the control plane: `hello`, heartbeats, access-token renewal via
//! `reauth`, moving to a new client secret via `reauth` (hot reload, `credentials_rotated`), task
//! assignments, cancels and acks, delivery of task updates (spooled backlog first, then live), and
//! draining. Returns how the session ended; the agent decides what next.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tether_domain::ClientSecret;
use tether_protocol::session::{
    close_code, RunnerMessage, ServerMessage, TaskUpdate, CONNECT_PATH, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::Connector;

use crate::auth::{AccessToken, AuthError};
use crate::executor::Admission;
use crate::instance::{self, Instance};
use crate::reload::SecretWatch;

#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// Draining finished (shutdown signal or the server's `drain`): every task ended, every
    /// update was acked, goodbye was sent.
    Drained(String),
    /// The control plane closed the session with a code.
    Closed { code: u16, reason: String },
    /// The upgrade was refused with 401: the access token is no longer accepted.
    Unauthorized,
    /// Network trouble before or during the session.
    Lost(String),
}

/// Holds one session. `secret` is the one `token` was minted from; if the session moves to a new
/// secret, `secret` is that one when this returns.
pub async fn run(
    agent: &Instance,
    token: AccessToken,
    secret: &mut ClientSecret,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let mut ws = match connect(agent, &token.token).await {
        Ok(ws) => ws,
        Err(end) => return end,
    };
    let hello = RunnerMessage::Hello {
        protocol: PROTOCOL_VERSION,
        runner_version: env!("CARGO_PKG_VERSION").to_owned(),
        instance_id: agent.instance_id().to_owned(),
        hostname: agent.hostname().to_owned(),
        platform: agent.config().platform.clone(),
        capacity: agent.config().max_tasks,
        secret_source: Some(agent.secrets().kind().to_owned()),
        hot_reload: Some(agent.secrets().can_change()),
        secret_file: agent.secrets().file().map(|p| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
                .to_string()
        }),
    };
    if let Err(e) = send(&mut ws, &hello).await {
        return SessionEnd::Lost(format!("sending hello: {e}"));
    }
    let heartbeat = match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<ServerMessage>(&text) {
            Ok(ServerMessage::Welcome {
                heartbeat_seconds,
                session_id,
            }) => {
                tracing::info!(session.id = %session_id, instance.id = %agent.instance_id(), "connected to the control plane");
                Duration::from_secs(heartbeat_seconds.max(1))
            }
            Ok(ServerMessage::Error { message, .. }) => {
                return closed_after_error(&mut ws, message).await
            }
            _ => {
                return SessionEnd::Lost(
                    "the control plane did not answer hello with welcome".into(),
                )
            }
        },
        Ok(Some(Ok(Message::Close(frame)))) => return closed(frame),
        Ok(Some(Err(e))) => return SessionEnd::Lost(format!("reading welcome: {e}")),
        Ok(_) => return SessionEnd::Lost("connection closed before welcome".into()),
        Err(_) => return SessionEnd::Lost("no welcome within 10 s".into()),
    };
    agent.metrics().set_connected(true);
    let (backlog, live) = agent.outbox().attach();
    let mut secrets = SecretWatch::new(secret.clone(), agent);
    let end = serve(
        agent,
        &mut ws,
        token,
        &mut secrets,
        heartbeat,
        shutdown,
        backlog,
        live,
    )
    .await;
    *secret = secrets.into_secret();
    agent.outbox().detach();
    agent.metrics().set_connected(false);
    end
}

/// The session after `welcome`.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the session's whole state"
)]
async fn serve(
    agent: &Instance,
    ws: &mut Ws,
    mut token: AccessToken,
    secrets: &mut SecretWatch,
    heartbeat: Duration,
    shutdown: &mut watch::Receiver<bool>,
    backlog: Vec<TaskUpdate>,
    mut live: mpsc::UnboundedReceiver<TaskUpdate>,
) -> SessionEnd {
    if instance::shutdown_requested(shutdown) {
        agent.begin_drain(instance::SHUTDOWN_REASON);
    }
    let mut draining = agent.drain_reason();
    if let Some(reason) = &draining {
        // A new session must hear it too: the control plane forgets it with the old one.
        let msg = RunnerMessage::Draining {
            reason: reason.clone(),
        };
        if let Err(e) = send(ws, &msg).await {
            return SessionEnd::Lost(format!("sending draining: {e}"));
        }
    }
    if !backlog.is_empty() {
        tracing::info!(
            updates = backlog.len(),
            "sending task updates the control plane has not acknowledged yet"
        );
    }
    for update in backlog {
        if let Err(e) = send(ws, &RunnerMessage::TaskUpdate(update)).await {
            return SessionEnd::Lost(format!("sending a task update: {e}"));
        }
    }
    let mut running = agent.executor().watch_running();
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.tick().await;
    loop {
        if let Some(reason) = &draining {
            if agent.executor().running() == 0 && agent.outbox().is_empty() {
                tracing::info!(reason = %reason, "every task finished and every update was acknowledged; saying goodbye");
                let _ = goodbye(ws, reason).await;
                return SessionEnd::Drained(reason.clone());
            }
        }
        let renew_in = token.renew_at.saturating_duration_since(Instant::now());
        let check_at = secrets.next_check();
        let check_in = check_at.map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(Instant::now())
        });
        let sent = tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(msg) => on_message(agent, ws, msg, secrets, &mut draining).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring a message this runner does not understand");
                        Ok(())
                    }
                },
                Some(Ok(Message::Close(frame))) => return closed(frame),
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => return SessionEnd::Lost(format!("connection lost: {e}")),
                None => return SessionEnd::Lost("connection closed".into()),
            },
            Some(update) = live.recv() => send(ws, &RunnerMessage::TaskUpdate(update)).await,
            // A task ended: the drain check at the top of the loop may pass now.
            Ok(()) = running.changed() => Ok(()),
            _ = ticker.tick() => {
                let beat = RunnerMessage::Heartbeat { running_tasks: agent.metrics().active_tasks() };
                let sent = send(ws, &beat).await;
                if sent.is_ok() {
                    agent.metrics().heartbeat_sent();
                }
                sent
            }
            _ = tokio::time::sleep(renew_in) => {
                match renew(agent, secrets.in_use()).await {
                    Ok(fresh) => {
                        let reauth = RunnerMessage::Reauth { access_token: fresh.token.clone() };
                        token = fresh;
                        send(ws, &reauth).await
                    }
                    Err(e) => {
                        // Keep the session; try again shortly. The server closes it if the token expires.
                        tracing::warn!(error = %e, "renewing the access token failed; retrying in 30 s");
                        if matches!(e, AuthError::InvalidClient(_)) {
                            // The secret in use is refused: the source may hold its successor.
                            secrets.check_soon();
                        }
                        token.renew_at = Instant::now() + Duration::from_secs(30);
                        Ok(())
                    }
                }
            }
            _ = tokio::time::sleep(check_in), if check_at.is_some() => {
                match secrets.check(agent).await {
                    Some(fresh) => {
                        let reauth = RunnerMessage::Reauth { access_token: fresh.token.clone() };
                        token = fresh;
                        send(ws, &reauth).await
                    }
                    None => Ok(()),
                }
            }
            () = crate::stopped(shutdown), if draining.is_none() => {
                start_draining(agent, ws, instance::SHUTDOWN_REASON, &mut draining).await
            }
        };
        if let Err(e) = sent {
            return SessionEnd::Lost(format!("connection lost while sending: {e}"));
        }
    }
}

/// Acts on one message from the control plane; an error means the session is gone.
async fn on_message(
    agent: &Instance,
    ws: &mut Ws,
    msg: ServerMessage,
    secrets: &mut SecretWatch,
    draining: &mut Option<String>,
) -> Result<(), WsError> {
    match msg {
        ServerMessage::Assign { task } => {
            let task_id = task.task_id.clone();
            // A re-sent assignment for a task this instance has is ignored even while draining:
            // a reject would make the control plane queue it a second time.
            let refusal = match draining {
                Some(reason) if !agent.executor().knows(&task_id) => {
                    Some(format!("this instance is draining: {reason}"))
                }
                Some(_) => None,
                None => match agent.executor().start(task) {
                    Admission::Started | Admission::AlreadyKnown => None,
                    Admission::Rejected(reason) => Some(reason),
                },
            };
            if let Some(reason) = refusal {
                tracing::info!(task.id = %task_id, "refusing an assignment: {reason}");
                send(ws, &RunnerMessage::Reject { task_id, reason }).await?;
            }
        }
        ServerMessage::Cancel { task_id } => {
            if !agent.executor().cancel(&task_id) {
                tracing::debug!(task.id = %task_id, "ignoring a cancel for a task this instance does not run");
            }
        }
        ServerMessage::Ack { task_id, seq } => agent.outbox().ack(&task_id, seq),
        ServerMessage::Drain { reason } => {
            if draining.is_none() {
                tracing::info!(reason = %reason, "the control plane asked this instance to drain");
                start_draining(agent, ws, &reason, draining).await?;
            }
        }
        ServerMessage::Reauthenticated { generation, .. } => secrets.reauthenticated(generation),
        ServerMessage::CredentialsRotated { generation } => secrets.rotated(agent, generation),
        ServerMessage::Error { code, message } => {
            tracing::warn!(code = %code, "control plane reported an error: {message}");
        }
        ServerMessage::Welcome { .. } => {}
    }
    Ok(())
}

/// Stops taking work and tells the control plane so.
async fn start_draining(
    agent: &Instance,
    ws: &mut Ws,
    reason: &str,
    draining: &mut Option<String>,
) -> Result<(), WsError> {
    agent.begin_drain(reason);
    // The first reason wins: a drain that started earlier keeps its own.
    let reason = agent.drain_reason().unwrap_or_else(|| reason.to_owned());
    *draining = Some(reason.clone());
    send(ws, &RunnerMessage::Draining { reason }).await
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(agent: &Instance, token: &str) -> Result<Ws, SessionEnd> {
    let base = &agent.config().url;
    let mut url = base
        .join(CONNECT_PATH.trim_start_matches('/'))
        .map_err(|e| SessionEnd::Lost(e.to_string()))?;
    let ws_scheme = if base.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    url.set_scheme(ws_scheme)
        .map_err(|()| SessionEnd::Lost("cannot build the WebSocket URL".into()))?;
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| SessionEnd::Lost(e.to_string()))?;
    let auth = format!("Bearer {token}")
        .parse()
        .map_err(|_| SessionEnd::Lost("invalid token header".into()))?;
    request.headers_mut().insert("authorization", auth);
    let stream = agent
        .transport()
        .connect_tcp(&host, port)
        .await
        .map_err(|e| SessionEnd::Lost(format!("{e:#}")))?;
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(4 << 20));
    let connector = Connector::Rustls(agent.transport().tls.clone());
    match tokio_tungstenite::client_async_tls_with_config(
        request,
        stream,
        Some(config),
        Some(connector),
    )
    .await
    {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) if response.status() == 401 => Err(SessionEnd::Unauthorized),
        Err(WsError::Http(response)) => Err(SessionEnd::Lost(format!(
            "the control plane refused the session with HTTP {}",
            response.status()
        ))),
        Err(e) => Err(SessionEnd::Lost(format!(
            "opening the session at {url}: {e}"
        ))),
    }
}

/// A fresh token from the secret the session uses: a new secret in the source is the watcher's
/// business, and one the control plane refused must not break renewals.
async fn renew(agent: &Instance, secret: &ClientSecret) -> Result<AccessToken, AuthError> {
    agent.token(secret).await
}

async fn send(ws: &mut Ws, msg: &RunnerMessage) -> Result<(), WsError> {
    let text = serde_json::to_string(msg).map_err(|e| WsError::Io(std::io::Error::other(e)))?;
    ws.send(Message::Text(text.into())).await
}

async fn goodbye(ws: &mut Ws, reason: &str) -> Result<(), WsError> {
    send(
        ws,
        &RunnerMessage::Goodbye {
            reason: reason.to_owned(),
        },
    )
    .await?;
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "goodbye".into(),
    };
    ws.close(Some(frame)).await?;
    // Wait (briefly) for the server's close so the goodbye is not lost in a reset.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while ws.next().await.is_some() {}
    })
    .await;
    Ok(())
}

async fn closed_after_error(ws: &mut Ws, message: String) -> SessionEnd {
    match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
        Ok(Some(Ok(Message::Close(frame)))) => closed(frame),
        _ => SessionEnd::Closed {
            code: close_code::PROTOCOL_ERROR,
            reason: message,
        },
    }
}

fn closed(frame: Option<CloseFrame>) -> SessionEnd {
    match frame {
        Some(f) => SessionEnd::Closed {
            code: u16::from(f.code),
            reason: f.reason.to_string(),
        },
        None => SessionEnd::Lost("the control plane closed the connection".into()),
    }
}
