//! The edge of a runner instance's WebSocket session: authenticate the upgrade with the access
//! token, wait for `hello`, register in the session registry (`runner_link`), then map protocol
//! messages to the services and back until either side ends it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use tether_domain::{Disconnect, RunState, RunnerId, TaskId};
use tether_protocol::session::{
    close_code, RunnerMessage, ServerMessage, TaskUpdate, TaskUpdateState, PROTOCOL_VERSION,
};
use tether_store::TaskProgress;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::serve::IdleExemption;
use crate::jwt::Claims;
use crate::memory::clients::CachedClient;
use crate::runner_link::{Hello, Outbound, Refused};
use crate::services::{oauth, runs};
use crate::state::AppState;

/// Largest message a runner may send (the runner sends log chunks of 16–32 KiB); a larger one is
/// answered with close code 1009 (message too big).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// WebSocket close code 1009 (message too big).
const MESSAGE_TOO_BIG: u16 = 1009;
/// WebSocket close code 1013 (try again later).
const TRY_AGAIN_LATER: u16 = 1013;
/// Time allowed between the upgrade and `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /runner/v1/connect`: the runner's outbound session.
pub async fn connect_runner(
    State(state): State<AppState>,
    headers: HeaderMap,
    idle: Option<Extension<IdleExemption>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::Acquire) {
        return ApiError::Draining.into_response();
    }
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(super::extract::bearer);
    let Some(token) = token else {
        return ApiError::AccessTokenMissing.into_response();
    };
    let (claims, client) = match oauth::validate_access_token(&state, token).await {
        Ok(Some(valid)) => valid,
        Ok(None) => return ApiError::AccessTokenInvalid.into_response(),
        // Cannot tell right now: 503, and the runner tries again.
        Err(e) => return ApiError::from(e).into_response(),
    };
    // Checked after the token: a request without one is 401 whatever else it lacks.
    let ws = match ws {
        Ok(ws) => ws,
        Err(not) => return ApiError::NotAnUpgrade(not.status(), not.body_text()).into_response(),
    };
    // From here on the heartbeat decides how long the connection may stay quiet.
    if let Some(Extension(idle)) = idle {
        idle.exempt();
    }
    // Small buffers: an idle session should cost kilobytes, not tungstenite's 128 KiB default.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| run_session(state, socket, claims, client))
}

async fn run_session(
    state: AppState,
    mut socket: WebSocket,
    claims: Claims,
    client: Arc<CachedClient>,
) {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut socket)).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(why)) => return refuse(socket, close_code::PROTOCOL_ERROR, &why).await,
        Err(_) => return refuse(socket, close_code::PROTOCOL_ERROR, "no hello within 10 s").await,
    };
    let runner = match crate::services::runners::find(
        &state,
        &tether_domain::RunnerRef::from(client.runner_id),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => {
            return refuse(
                socket,
                close_code::RUNNER_DELETED,
                "this runner was deleted",
            )
            .await
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let instance_id = hello.instance_id.clone();
    let session_id = match state
        .link
        .register(&runner, hello, claims.gen, claims.exp, tx)
    {
        Ok(id) => id,
        Err(refused) => return refuse_registration(socket, refused).await,
    };
    oauth::note_use(&client, claims.gen);
    tracing::info!(runner.id = %runner.id, runner.name = %runner.name, instance.id = %instance_id,
        session.id = session_id, generation = claims.gen, "runner session opened");

    let welcome = ServerMessage::Welcome {
        session_id: session_id.to_string(),
        heartbeat_seconds: state.config.heartbeat.as_secs(),
    };
    let mut ended = if send(&mut socket, &welcome).await {
        if let Err(e) = crate::dispatch::instance_connected(&state, runner.id, &instance_id).await {
            tracing::error!(error = format!("{e:#}"), runner.id = %runner.id, "re-sending assignments failed");
        }
        None
    } else {
        Some(Disconnect::Lost {
            reason: "connection lost".into(),
        })
    };
    while ended.is_none() {
        tokio::select! {
            incoming = socket.recv() => {
                ended = match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let me = Me { runner_id: runner.id, session_id, instance_id: &instance_id, client: &client };
                        handle(&state, &me, &mut socket, &text).await
                    }
                    Some(Ok(Message::Close(_))) | None => Some(Disconnect::Lost { reason: "connection closed without goodbye".into() }),
                    Some(Ok(_)) => None, // pings are answered by the library; binary frames are ignored
                    Some(Err(e)) if too_big(&e) => {
                        tracing::warn!(runner.id = %runner.id, instance.id = %instance_id,
                            "protocol error: a message over {MAX_MESSAGE_BYTES} bytes; closing the session");
                        close(&mut socket, MESSAGE_TOO_BIG, "message larger than 256 KiB").await;
                        Some(Disconnect::Lost { reason: "protocol error: message too big".into() })
                    }
                    Some(Err(e)) => Some(Disconnect::Lost { reason: format!("connection lost without goodbye ({e})") }),
                };
            }
            out = rx.recv() => match out {
                Some(Outbound::Send(msg)) => {
                    if !send(&mut socket, &msg).await {
                        ended = Some(Disconnect::Lost { reason: "connection lost".into() });
                    }
                }
                Some(Outbound::Close { code, reason }) => {
                    close(&mut socket, code, &reason).await;
                    ended = Some(Disconnect::Lost { reason });
                }
                None => ended = Some(Disconnect::Lost { reason: "session dropped".into() }),
            },
        }
    }
    let how = ended.unwrap_or(Disconnect::Lost {
        reason: "connection lost".into(),
    });
    tracing::info!(runner.id = %runner.id, instance.id = %instance_id, session.id = session_id, ended = ?how, "runner session closed");
    state.link.unregister(runner.id, session_id, how);
}

/// Whether a read failed because the message or frame exceeded [`MAX_MESSAGE_BYTES`].
fn too_big(e: &axum::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|inner| inner.downcast_ref::<tungstenite::Error>())
        .is_some_and(|inner| matches!(inner, tungstenite::Error::Capacity(_)))
}

/// Who is on the other end of a session.
struct Me<'a> {
    runner_id: tether_domain::RunnerId,
    session_id: u64,
    instance_id: &'a str,
    client: &'a CachedClient,
}

/// Handles one message; `Some` ends the session.
async fn handle(
    state: &AppState,
    me: &Me<'_>,
    socket: &mut WebSocket,
    text: &str,
) -> Option<Disconnect> {
    let (runner_id, session_id, client) = (&me.runner_id, me.session_id, me.client);
    let msg: RunnerMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(_) => {
            close(socket, close_code::PROTOCOL_ERROR, "unparsable message").await;
            return Some(Disconnect::Lost {
                reason: "protocol error: unparsable message".into(),
            });
        }
    };
    match msg {
        RunnerMessage::Heartbeat { running_tasks } => {
            state.link.heartbeat(*runner_id, session_id, running_tasks);
            None
        }
        RunnerMessage::Goodbye { reason } => {
            close(socket, 1000, "goodbye").await;
            Some(Disconnect::Graceful { reason })
        }
        RunnerMessage::Reauth { access_token } => {
            match oauth::validate_access_token(state, &access_token).await {
                Err(e) => {
                    // Neither accepted nor refused: the session ends, the runner reconnects
                    // with a fresh token once this replica can check it.
                    tracing::warn!(error = format!("{e:#}"), runner.id = %runner_id,
                        "could not check a re-authentication; closing the session");
                    close(
                        socket,
                        TRY_AGAIN_LATER,
                        "cannot check the access token right now; reconnect",
                    )
                    .await;
                    Some(Disconnect::Lost {
                        reason: "re-authentication could not be checked".into(),
                    })
                }
                Ok(Some((claims, owner))) if owner.client_id == client.client_id => {
                    if let Err(refused) = state
                        .link
                        .reauthenticated(*runner_id, session_id, claims.gen, claims.exp)
                    {
                        let (code, why) = refusal(refused);
                        close(socket, code, &why).await;
                        return Some(Disconnect::Lost {
                            reason: format!("re-authentication refused: {why}"),
                        });
                    }
                    oauth::note_use(&owner, claims.gen);
                    let ok = ServerMessage::Reauthenticated {
                        generation: claims.gen,
                        expires_at: claims.exp,
                    };
                    if send(socket, &ok).await {
                        None
                    } else {
                        Some(Disconnect::Lost {
                            reason: "connection lost".into(),
                        })
                    }
                }
                _ => {
                    close(
                        socket,
                        close_code::CREDENTIALS_REVOKED,
                        "re-authentication refused",
                    )
                    .await;
                    Some(Disconnect::Lost {
                        reason: "re-authentication refused: credentials revoked or invalid".into(),
                    })
                }
            }
        }
        RunnerMessage::TaskUpdate(update) => {
            let replies = match task_update(state, *runner_id, me.instance_id, update).await {
                Ok(UpdateReply::Send(replies)) => replies,
                Ok(UpdateReply::ProtocolError(why)) => {
                    tracing::warn!(runner.id = %runner_id, instance.id = %me.instance_id,
                        why = %why, "protocol error: refused a task update; closing the session");
                    return Some(protocol_error(socket, &why).await);
                }
                // Not acknowledged: the runner keeps the update spooled and sends it again after
                // reconnecting. Ending the session now makes that happen at once, in order.
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), runner.id = %runner_id, "storing a task update failed; closing the session so the runner sends it again");
                    close(
                        socket,
                        TRY_AGAIN_LATER,
                        "could not store a task update; reconnect and send it again",
                    )
                    .await;
                    return Some(Disconnect::Lost {
                        reason: "a task update could not be stored".into(),
                    });
                }
            };
            for reply in replies {
                if !send(socket, &reply).await {
                    return Some(Disconnect::Lost {
                        reason: "connection lost".into(),
                    });
                }
            }
            None
        }
        RunnerMessage::Draining { reason } => {
            tracing::info!(runner.id = %runner_id, instance.id = %me.instance_id, reason = %reason, "instance is draining");
            state.link.draining(*runner_id, session_id);
            None
        }
        RunnerMessage::Reject { task_id, reason } => {
            tracing::info!(runner.id = %runner_id, instance.id = %me.instance_id, task.id = %task_id, reason = %reason, "instance refused a task");
            let requeued = match task_id.parse::<TaskId>() {
                Ok(task) => {
                    crate::dispatch::rejected(state, *runner_id, me.instance_id, task).await
                }
                Err(_) => Ok(()),
            };
            if let Err(e) = requeued {
                tracing::error!(error = format!("{e:#}"), runner.id = %runner_id, "re-queueing a refused task failed");
            }
            None
        }
        RunnerMessage::Hello { .. } => {
            close(socket, close_code::PROTOCOL_ERROR, "hello sent twice").await;
            Some(Disconnect::Lost {
                reason: "protocol error: hello sent twice".into(),
            })
        }
    }
}

/// The close code and reason for a session the registry refused.
fn refusal(refused: Refused) -> (u16, String) {
    match refused {
        Refused::CredentialsRevoked => (close_code::CREDENTIALS_REVOKED, "credentials_revoked".into()),
        Refused::RunnerDeleted => (close_code::RUNNER_DELETED, "this runner was deleted".into()),
        Refused::TooManySessions(max) => (
            close_code::TOO_MANY_SESSIONS,
            // A close reason is at most 123 bytes.
            format!("this runner already has {max} live sessions here, the limit (--max-sessions-per-runner)"),
        ),
    }
}

async fn refuse_registration(socket: WebSocket, refused: Refused) {
    let too_many = matches!(refused, Refused::TooManySessions(_));
    let (code, why) = refusal(refused);
    if too_many {
        tracing::warn!(reason = %why, "refused a runner session: too many sessions for one runner");
    } else {
        tracing::info!(
            reason = %why,
            "refused a runner session whose credentials changed during its handshake"
        );
    }
    refuse(socket, code, &why).await
}

async fn read_hello(socket: &mut WebSocket) -> Result<Hello, String> {
    loop {
        match socket.recv().await {
            Some(Ok(Message::Text(text))) => {
                return match serde_json::from_str::<RunnerMessage>(&text) {
                    Ok(RunnerMessage::Hello {
                        protocol,
                        runner_version,
                        instance_id,
                        hostname,
                        capacity,
                        secret_source,
                        hot_reload,
                        secret_file,
                        ..
                    }) => {
                        if protocol != PROTOCOL_VERSION {
                            return Err(format!(
                                "protocol version {protocol} is not supported; this control plane speaks {PROTOCOL_VERSION}"
                            ));
                        }
                        if instance_id.is_empty() || instance_id.len() > 128 {
                            return Err("instance_id must be 1 to 128 characters".into());
                        }
                        let secret_source = secret_source.filter(|s| {
                            ["env", "file", "aws_secrets_manager"].contains(&s.as_str())
                        });
                        Ok(Hello {
                            instance_id,
                            hostname: truncate(hostname, 255),
                            runner_version: truncate(runner_version, 64),
                            capacity,
                            secret_source,
                            hot_reload,
                            secret_file: secret_file.map(|f| truncate(f, 1024)),
                        })
                    }
                    _ => Err("the first message must be hello".into()),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => return Err("connection closed before hello".into()),
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

async fn send(socket: &mut WebSocket, msg: &ServerMessage) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn refuse(mut socket: WebSocket, code: u16, reason: &str) {
    let error = ServerMessage::Error {
        code: "session_refused".into(),
        message: reason.to_owned(),
    };
    let _ = send(&mut socket, &error).await;
    close(&mut socket, code, reason).await;
}

/// What to answer a task update.
enum UpdateReply {
    Send(Vec<ServerMessage>),
    /// Refused: the session ends with a protocol error saying this.
    ProtocolError(String),
}

/// Sends an `error` message and closes with 4400 (protocol error).
async fn protocol_error(socket: &mut WebSocket, why: &str) -> Disconnect {
    let error = ServerMessage::Error {
        code: "protocol_error".into(),
        message: why.to_owned(),
    };
    let _ = send(socket, &error).await;
    // A close reason is at most 123 bytes.
    let mut reason = why;
    while reason.len() > 120 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason = &reason[..end];
    }
    close(socket, close_code::PROTOCOL_ERROR, reason).await;
    Disconnect::Lost {
        reason: format!("protocol error: {why}"),
    }
}

/// Hands a task update from `instance` to the services and says what to answer: `ack` once it
/// is stored (or known, or cannot be stored: a malformed task id), plus `cancel` when the task
/// was given up on; a protocol error when it is not this instance's to update or out of order.
async fn task_update(
    state: &AppState,
    runner: RunnerId,
    instance: &str,
    update: TaskUpdate,
) -> anyhow::Result<UpdateReply> {
    let ack = ServerMessage::Ack {
        task_id: update.task_id.clone(),
        seq: update.seq,
    };
    let Ok(task_id) = update.task_id.parse::<TaskId>() else {
        tracing::warn!(runner.id = %runner, "dropping an update for a malformed task id");
        return Ok(UpdateReply::Send(vec![ack]));
    };
    let progress = TaskProgress {
        task_id,
        // A replay from an earlier process's spool names the instance the task is assigned to.
        instance_id: update
            .instance_id
            .clone()
            .unwrap_or_else(|| instance.to_owned()),
        seq: update.seq,
        state: match update.state {
            TaskUpdateState::Running => RunState::Running,
            TaskUpdateState::Succeeded => RunState::Succeeded,
            TaskUpdateState::Failed => RunState::Failed,
            TaskUpdateState::Cancelled => RunState::Cancelled,
        },
        log_chunk: update.log_chunk,
        exit_code: update.exit_code,
        reason: update.reason,
        at: OffsetDateTime::now_utc(),
    };
    Ok(match runs::apply_update(state, runner, progress).await? {
        runs::AfterUpdate::Continue => UpdateReply::Send(vec![ack]),
        runs::AfterUpdate::Stop => UpdateReply::Send(vec![
            ack,
            ServerMessage::Cancel {
                task_id: update.task_id,
            },
        ]),
        runs::AfterUpdate::Refuse(why) => UpdateReply::ProtocolError(why),
    })
}
