//! Revocation latency benchmark (not a timed test): 100 runners each hold a live session on a
//! real server; each is refreshed once (mode revoke) and the bench records when the refresh
//! response arrives and when the runner's session receives its close frame (4401).
//!
//!   cargo bench -p tether-server --bench revocation
//!   BENCH_RUNNERS=100 cargo bench -p tether-server --bench revocation
//!
//! With `BENCH_DATABASE_URL=postgres://…` (an empty database), two replicas run on it: the runners'
//! sessions are held by replica B and every refresh goes through replica A, so what is measured is
//! the cross-replica path (commit on A, `NOTIFY`, B's listener, B closes the session).

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tether_domain::ApiToken;
use tether_server::ServerConfig;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "bench-admin-token-0123456789abcdefghijkl";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let runners: usize = std::env::var("BENCH_RUNNERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let database = std::env::var("BENCH_DATABASE_URL")
        .ok()
        .map(|u| tether_server::DatabaseUrl::parse(&u).expect("BENCH_DATABASE_URL"));
    let mut config = ServerConfig::new(dir.path().join("a"));
    config.bootstrap_token = Some(ApiToken::parse_supplied(ADMIN).expect("token"));
    config.database_url = database.clone();
    let server = tether_server::start(config).await.expect("server");
    let base = server.public_url.clone();
    // The replica holding the sessions: B on the same database with A's keys, or A itself.
    let holder = match &database {
        Some(url) => {
            let a = dir.path().join("a");
            let mut c = ServerConfig::new(dir.path().join("b"));
            c.database_url = Some(url.clone());
            c.key_files = tether_server::keys::KeyFiles {
                signing: Some(a.join("signing.key")),
                pepper: Some(a.join("pepper.key")),
                master: Some(a.join("master.key")),
            };
            Some(tether_server::start(c).await.expect("replica b"))
        }
        None => None,
    };
    let session_base = holder
        .as_ref()
        .map_or_else(|| base.clone(), |b| b.public_url.clone());
    if holder.is_some() {
        // Both replicas' listeners in sync before sessions and refreshes start.
        for b in [&base, &session_base] {
            while reqwest::get(format!("{b}/readyz"))
                .await
                .map_or(true, |r| !r.status().is_success())
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let http = reqwest::Client::new();
    let mut closes = Vec::new();
    for i in 0..runners {
        let created: serde_json::Value = http
            .post(format!("{base}/api/v1/runners"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": format!("rev-{i}"), "platform": "local"}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let token: serde_json::Value = http
            .post(format!("{session_base}/oauth/token"))
            .basic_auth(
                created["credentials"]["client_id"].as_str().expect("id"),
                created["credentials"]["client_secret"].as_str(),
            )
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        let mut req = format!(
            "{}/runner/v1/connect",
            session_base.replace("http://", "ws://")
        )
        .into_client_request()
        .expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", token["access_token"].as_str().expect("token"))
                .parse()
                .expect("header"),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        let hello = json!({"type": "hello", "protocol": 1, "runner_version": "bench",
            "instance_id": format!("i-{i}"), "hostname": "bench", "platform": "local", "capacity": 1});
        ws.send(Message::Text(hello.to_string().into()))
            .await
            .expect("hello");
        ws.next().await.expect("welcome").expect("welcome");
        let (tx, rx) = tokio::sync::oneshot::channel::<(Instant, Option<u16>)>();
        tokio::spawn(async move {
            while let Some(msg) = ws.next().await {
                if let Ok(Message::Close(frame)) = msg {
                    let _ = tx.send((Instant::now(), frame.map(|f| u16::from(f.code))));
                    return;
                }
            }
        });
        closes.push(rx);
    }
    println!(
        "machine: {} cores; {} and {runners} runner sessions in one process; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if holder.is_some() {
            "replicas A (refreshes) and B (sessions)"
        } else {
            "the server"
        },
        if holder.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let mut after_response = Vec::new();
    let mut after_request = Vec::new();
    for (i, close) in closes.into_iter().enumerate() {
        let sent = Instant::now();
        let r = http
            .post(format!("{base}/api/v1/runners/rev-{i}/credentials/refresh"))
            .bearer_auth(ADMIN)
            .json(&json!({"confirm": "refresh"}))
            .send()
            .await
            .expect("refresh");
        assert!(r.status().is_success());
        let responded = Instant::now();
        let (closed_at, code) = tokio::time::timeout(Duration::from_secs(5), close)
            .await
            .expect("closed within 5 s")
            .expect("close observed");
        assert_eq!(code, Some(4401));
        after_request.push(closed_at.duration_since(sent).as_secs_f64() * 1000.0);
        // Negative when the close frame arrived before the HTTP response: counted as 0.
        after_response.push(closed_at.saturating_duration_since(responded).as_secs_f64() * 1000.0);
    }
    for v in [&mut after_response, &mut after_request] {
        v.sort_by(f64::total_cmp);
    }
    let pct = |v: &[f64], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    let before = after_response.iter().filter(|ms| **ms == 0.0).count();
    println!("\n| measured | refreshes | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| refresh response → close frame at the runner | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
        after_response.len(),
        pct(&after_response, 0.5),
        pct(&after_response, 0.99),
        after_response.last().copied().unwrap_or(0.0)
    );
    println!(
        "| refresh request sent → close frame at the runner | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
        after_request.len(),
        pct(&after_request, 0.5),
        pct(&after_request, 0.99),
        after_request.last().copied().unwrap_or(0.0)
    );
    println!(
        "\n{before} of {} close frames arrived before the refresh response itself",
        after_response.len()
    );
    if let Some(b) = holder {
        b.shutdown().await.expect("shutdown b");
    }
    server.shutdown().await.expect("shutdown");
}
