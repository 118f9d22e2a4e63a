//! Idle runner sessions benchmark (not a timed test): how many concurrent sessions one server holds
//! with heartbeats flowing, the server's RSS per idle session, and the CPU heartbeats cost.
//!
//! The server runs in a child process (this binary re-executed with `--serve`), so its memory and
//! CPU are measured alone; the load generator spreads connections over 127.0.0.2.. source addresses
//! to stay clear of ephemeral-port limits. Raise the file-descriptor limit first:
//!
//!   ulimit -n 250000
//!   SESSIONS=50000 HEARTBEAT_SECONDS=10 MEASURE_SECONDS=30 cargo bench -p tether-server --bench sessions

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tether_domain::ApiToken;
use tether_server::ServerConfig;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "bench-admin-token-0123456789abcdefghijkl";
const SESSIONS_PER_SOURCE_IP: usize = 20_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if args.iter().any(|a| a == "--serve") {
        runtime.block_on(serve());
    } else if args.iter().any(|a| a == "--bench") || !args.iter().any(|a| a.starts_with("--")) {
        runtime.block_on(drive());
    }
}

/// Child: a real server; prints its address, then serves until stdin closes.
async fn serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new(dir.path().to_path_buf());
    config.bootstrap_token = Some(ApiToken::parse_supplied(ADMIN).expect("token"));
    config.heartbeat = Duration::from_secs(env_or("HEARTBEAT_SECONDS", 10));
    config.access_token_ttl = Duration::from_secs(86_400);
    let server = tether_server::start(config).await.expect("server");
    println!("{}", server.local_addr);
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await;
    server.shutdown().await.expect("shutdown");
}

fn proc_stat(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    (rss_kb, ticks)
}

async fn drive() {
    let sessions = env_or("SESSIONS", 5_000) as usize;
    let heartbeat = env_or("HEARTBEAT_SECONDS", 10);
    let measure = env_or("MEASURE_SECONDS", 30);
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("server address");
    let addr: SocketAddr = line.trim().parse().expect("address");
    let base = format!("http://{addr}");

    // 100 runners; sessions are spread over them, one instance id each.
    let http = reqwest::Client::new();
    let runners = 100.min(sessions.max(1));
    let mut tokens = Vec::new();
    for i in 0..runners {
        let created: serde_json::Value = http
            .post(format!("{base}/api/v1/runners"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({"name": format!("r{i}"), "platform": "local"}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let token: serde_json::Value = http
            .post(format!("{base}/oauth/token"))
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
        tokens.push(token["access_token"].as_str().expect("token").to_owned());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_before, _) = proc_stat(pid);

    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let token = tokens[i % tokens.len()].clone();
        let (opened, failed) = (opened.clone(), failed.clone());
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i / SESSIONS_PER_SOURCE_IP) as u8);
        handles.push(tokio::spawn(async move {
            match session(addr, source, &token, i, heartbeat).await {
                Ok(ws) => {
                    opened.fetch_add(1, Ordering::Relaxed);
                    ws.await;
                }
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("session {i} failed: {e}");
                    }
                }
            }
        }));
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < sessions as u64 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ramp = started.elapsed();
    // Let every session send at least one heartbeat, then measure over a steady window.
    tokio::time::sleep(Duration::from_secs(heartbeat + 2)).await;
    let (_, ticks_before) = proc_stat(pid);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(measure)).await;
    let (rss_after, ticks_after) = proc_stat(pid);
    let seconds = window.elapsed().as_secs_f64();
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (ticks_after - ticks_before) as f64 / hz / seconds * 100.0;
    let ok = opened.load(Ordering::Relaxed);
    let per_session = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / ok.max(1) as f64;
    println!(
        "sessions: {ok} open, {} failed (ramp {:.1} s); heartbeat every {heartbeat} s",
        failed.load(Ordering::Relaxed),
        ramp.as_secs_f64()
    );
    println!(
        "server RSS: {:.1} MiB before, {:.1} MiB with sessions = {:.1} KiB per idle session",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        per_session / 1024.0
    );
    println!("server CPU with heartbeats flowing: {cpu:.1}% of one core (over {seconds:.0} s)");
    drop(child.stdin.take());
    let _ = child.wait();
    for h in handles {
        h.abort();
    }
}

/// Opens one session, sends hello, waits for welcome; the returned future keeps it alive with heartbeats.
async fn session(
    server: SocketAddr,
    source: Ipv4Addr,
    token: &str,
    i: usize,
    heartbeat: u64,
) -> Result<impl std::future::Future<Output = ()>, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut req = format!("ws://{server}/runner/v1/connect")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().map_err(|_| "header")?,
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let hello = serde_json::json!({"type": "hello", "protocol": 1, "runner_version": "bench",
        "instance_id": format!("i{i}"), "hostname": "bench", "platform": "local", "capacity": 1});
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    match ws.next().await {
        Some(Ok(Message::Text(_))) => {}
        other => return Err(format!("no welcome: {other:?}")),
    }
    Ok(async move {
        // Spread heartbeats evenly over the interval.
        let offset = Duration::from_millis((i as u64 * 7919) % (heartbeat * 1000));
        tokio::time::sleep(offset).await;
        let mut tick = tokio::time::interval(Duration::from_secs(heartbeat));
        let beat = Message::Text(r#"{"type":"heartbeat","running_tasks":0}"#.into());
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if ws.send(beat.clone()).await.is_err() {
                        return;
                    }
                }
                msg = ws.next() => {
                    if !matches!(msg, Some(Ok(_))) {
                        return;
                    }
                }
            }
        }
    })
}
