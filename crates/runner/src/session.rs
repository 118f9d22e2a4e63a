//! One WebSocket session with the control plane: `hello`, heartbeats, access-token renewal via
//! `reauth`, and the server's `drain`. Returns how the session ended; the agent decides what next.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tether_protocol::session::{
    close_code, RunnerMessage, ServerMessage, CONNECT_PATH, PROTOCOL_VERSION,
};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::Connector;

use crate::agent::Agent;
use crate::auth::{self, AccessToken};

#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// We were asked to stop (signal); goodbye was sent.
    Shutdown,
    /// The control plane asked this instance to drain (restart); goodbye was sent.
    Drained(String),
    /// The control plane closed the session with a code.
    Closed { code: u16, reason: String },
    /// The upgrade was refused with 401: the access token is no longer accepted.
    Unauthorized,
    /// Network trouble before or during the session.
    Lost(String),
}

pub async fn run(
    agent: &Agent,
    mut token: AccessToken,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let mut ws = match connect(agent, &token.token).await {
        Ok(ws) => ws,
        Err(end) => return end,
    };
    let hello = RunnerMessage::Hello {
        protocol: PROTOCOL_VERSION,
        runner_version: env!("CARGO_PKG_VERSION").to_owned(),
        instance_id: agent.instance_id.clone(),
        hostname: agent.hostname.clone(),
        platform: agent.config.platform.clone(),
        capacity: agent.config.max_tasks,
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
                tracing::info!(session.id = %session_id, instance.id = %agent.instance_id, "connected to the control plane");
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
    agent.metrics.set_connected(true);
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.tick().await;
    let end = loop {
        let renew_in = token.renew_at.saturating_duration_since(Instant::now());
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(ServerMessage::Drain { reason }) => {
                        tracing::info!(reason = %reason, "the control plane asked this instance to drain; finishing and exiting");
                        let _ = goodbye(&mut ws, &reason).await;
                        break SessionEnd::Drained(reason);
                    }
                    Ok(ServerMessage::Reauthenticated { generation, .. }) => {
                        tracing::debug!(generation, "session re-authenticated");
                    }
                    Ok(ServerMessage::Error { code, message }) => {
                        tracing::warn!(code = %code, "control plane reported an error: {message}");
                    }
                    Ok(ServerMessage::Welcome { .. }) => {}
                    Err(e) => tracing::warn!(error = %e, "ignoring a message this runner does not understand"),
                },
                Some(Ok(Message::Close(frame))) => break closed(frame),
                Some(Ok(_)) => {}
                Some(Err(e)) => break SessionEnd::Lost(format!("connection lost: {e}")),
                None => break SessionEnd::Lost("connection closed".into()),
            },
            _ = ticker.tick() => {
                let beat = RunnerMessage::Heartbeat { running_tasks: agent.metrics.active_tasks() };
                if let Err(e) = send(&mut ws, &beat).await {
                    break SessionEnd::Lost(format!("sending heartbeat: {e}"));
                }
                agent.metrics.heartbeat_sent();
            }
            _ = tokio::time::sleep(renew_in) => {
                match renew(agent).await {
                    Ok(fresh) => {
                        let reauth = RunnerMessage::Reauth { access_token: fresh.token.clone() };
                        token = fresh;
                        if let Err(e) = send(&mut ws, &reauth).await {
                            break SessionEnd::Lost(format!("sending reauth: {e}"));
                        }
                    }
                    Err(e) => {
                        // Keep the session; try again shortly. The server closes it if the token expires.
                        tracing::warn!(error = %e, "renewing the access token failed; retrying in 30 s");
                        token.renew_at = Instant::now() + Duration::from_secs(30);
                    }
                }
            }
            () = crate::stopped(shutdown) => {
                let _ = goodbye(&mut ws, "the runner process is shutting down").await;
                break SessionEnd::Shutdown;
            }
        }
    };
    agent.metrics.set_connected(false);
    end
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(agent: &Agent, token: &str) -> Result<Ws, SessionEnd> {
    let base = &agent.config.url;
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
        .transport
        .connect_tcp(&host, port)
        .await
        .map_err(|e| SessionEnd::Lost(format!("{e:#}")))?;
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(4 << 20));
    let connector = Connector::Rustls(agent.transport.tls.clone());
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

async fn renew(agent: &Agent) -> Result<AccessToken, String> {
    let secret = agent.secrets.read().await.map_err(|e| e.to_string())?;
    auth::fetch_token(
        &agent.transport,
        &agent.config.url,
        &agent.config.client_id,
        &secret,
    )
    .await
    .map_err(|e| e.to_string())
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
