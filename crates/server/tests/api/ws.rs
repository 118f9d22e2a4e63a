//! A raw runner-session client for tests: speaks the WebSocket protocol by hand, so the server's
//! side of it is tested without the runner agent.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tether_testkit::{spawn_app_with, TestApp};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn app() -> TestApp {
    spawn_app_with(|c| c.heartbeat = Duration::from_secs(1)).await
}

pub async fn runner(app: &TestApp, name: &str) -> (String, String) {
    let c = app.create_runner(name, "local").await;
    (
        c["credentials"]["client_id"]
            .as_str()
            .expect("id")
            .to_owned(),
        c["credentials"]["client_secret"]
            .as_str()
            .expect("secret")
            .to_owned(),
    )
}

pub async fn open(app: &TestApp, token: &str) -> Result<Ws, u16> {
    let url = format!(
        "{}/runner/v1/connect",
        app.base_url.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// Next JSON text message, or the close code if the server closed.
pub async fn next(ws: &mut Ws) -> Result<Value, Option<u16>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no message within 10 s")
        {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("json")),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            _ => return Err(None),
        }
    }
}

pub async fn connect(app: &TestApp, id: &str, secret: &str, instance: &str) -> Ws {
    let token = app.access_token(id, secret).await;
    let mut ws = open(app, &token).await.expect("upgrade");
    send(
        &mut ws,
        json!({"type": "hello", "protocol": 1, "runner_version": "9.9.9", "instance_id": instance,
               "hostname": format!("{instance}.local"), "platform": "local", "capacity": 4}),
    )
    .await;
    let welcome = next(&mut ws).await.expect("welcome");
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["heartbeat_seconds"], 1);
    ws
}

/// Defines `pipeline` (one `sleep 5` task), queues a run of it on `runner` and waits until `ws`,
/// the runner's only session, is assigned its task: the run is in progress. Returns the run.
pub async fn assign_slow_run(app: &TestApp, pipeline: &str, runner: &str, ws: &mut Ws) -> Value {
    let r = app
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/pipelines/{pipeline}"),
            Some(&app.admin_token),
            Some(&json!({"tasks": [{"name": "a", "run": "sleep 5"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let run = app
        .post(
            &format!("/api/v1/pipelines/{pipeline}/runs"),
            Some(&app.admin_token),
            &json!({"runner": runner}),
        )
        .await
        .json();
    while next(ws).await.expect("assign")["type"] != "assign" {}
    run
}
