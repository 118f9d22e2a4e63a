//! The listener's defences: header-read and idle timeouts and the connection limit, seen from raw
//! TCP clients that misbehave on purpose.

use std::time::{Duration, Instant};

use serde_json::json;
use tether_testkit::{spawn_app_with, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ws;

/// Longer than any timeout configured here: a connection still open after it was not cut.
const GUARD: Duration = Duration::from_secs(10);

async fn tcp(app: &TestApp) -> TcpStream {
    let addr = app.base_url.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection; panics if it stays open past [`GUARD`].
async fn read_to_close(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(GUARD, async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
    got
}

/// One request with `Connection: close`, answered in full.
async fn get_closing(app: &TestApp, path: &str) -> String {
    let mut conn = tcp(app).await;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    String::from_utf8_lossy(&read_to_close(&mut conn).await).into_owned()
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = get_closing(app, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics: {text}"))
}

/// Opens a connection and sends half a request's headers.
async fn partial_request(app: &TestApp) -> TcpStream {
    let mut conn = tcp(app).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    conn
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_after_the_header_read_timeout() {
    let app = spawn_app_with(|c| {
        c.connections.header_read_timeout = Duration::from_millis(400);
    })
    .await;
    let mut conn = partial_request(&app).await;
    let started = Instant::now();
    // A header line every 100 ms: the connection is never idle, the headers just never end.
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if conn
                .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(GUARD, trickle).await;
    assert!(
        started.elapsed() < GUARD,
        "headers trickled in for {GUARD:?} and the server kept reading them"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    let _ = read_to_close(&mut conn).await;
    assert_eq!(
        metric(&app, "tether_http_connections_timed_out_total").await,
        1.0
    );
}

#[tokio::test]
async fn a_kept_alive_connection_left_unused_is_closed_after_the_header_read_timeout() {
    let app = spawn_app_with(|c| {
        c.connections.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut conn = tcp(&app).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let answer = String::from_utf8_lossy(&read_to_close(&mut conn).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_is_cut_after_the_idle_timeout() {
    let app = spawn_app_with(|c| {
        c.connections.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut conn = tcp(&app).await;
    conn.write_all(
        b"POST /oauth/token HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type",
    )
    .await
    .expect("write");
    let started = Instant::now();
    let _ = read_to_close(&mut conn).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        metric(&app, "tether_http_connections_timed_out_total").await,
        1.0
    );
    // The server is fine: the next client is served.
    assert!(get_closing(&app, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn at_the_connection_limit_new_connections_wait_until_one_closes() {
    let app = spawn_app_with(|c| {
        c.connections.max_connections = 3;
        c.connections.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let first = partial_request(&app).await;
    let _second = partial_request(&app).await;
    // The third permit answers this and is given back when it closes.
    assert_eq!(metric(&app, "tether_http_connections").await, 3.0);
    let _third = partial_request(&app).await;

    let mut waiting = tcp(&app).await;
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a fourth connection was served while three held every permit: {early:?}"
    );
    drop(first);
    let answer = String::from_utf8_lossy(&read_to_close(&mut waiting).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(metric(&app, "tether_http_connection_limit_reached_total").await >= 1.0);
}

#[tokio::test]
async fn a_runner_session_is_not_cut_by_the_idle_timeout() {
    let app = spawn_app_with(|c| {
        c.heartbeat = Duration::from_secs(1);
        c.connections.idle_timeout = Duration::from_millis(200);
        c.connections.header_read_timeout = Duration::from_millis(200);
    })
    .await;
    let (id, secret) = ws::runner(&app, "quiet").await;
    let mut session = ws::connect(&app, &id, &secret, "i-1").await;
    // Heartbeats 600 ms apart: three times the idle timeout of quiet between them.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        ws::send(
            &mut session,
            json!({"type": "heartbeat", "running_tasks": 0}),
        )
        .await;
    }
    let runner = app
        .get("/api/v1/runners/quiet", Some(&app.admin_token))
        .await;
    assert_eq!(runner.json()["status"], "running", "{}", runner.body);
    assert_eq!(runner.json()["instances"][0]["instance_id"], "i-1");
}

#[tokio::test]
async fn many_clients_through_a_small_limit_are_all_served_and_every_permit_comes_back() {
    let app = spawn_app_with(|c| c.connections.max_connections = 4).await;
    let answers = futures::future::join_all((0..40).map(|_| get_closing(&app, "/healthz"))).await;
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // Once the last of them is dropped, only the request reading the gauge is open.
    let mut open = 0.0;
    for _ in 0..100 {
        open = metric(&app, "tether_http_connections").await;
        if open == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        open, 1.0,
        "connections still counted open after all were answered"
    );
}
