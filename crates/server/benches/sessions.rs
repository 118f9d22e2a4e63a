//! Idle runner sessions benchmark (not a timed test): how many concurrent sessions the control
//! plane holds with heartbeats flowing, each server's RSS per idle session, the CPU heartbeats
//! cost, and, on PostgreSQL, what the database spends on them.
//!
//! Every server is a child process (this binary re-executed with `--serve`), so its memory and
//! CPU are measured alone. The sessions are opened by load-generator children (`--generate`), one
//! per server, each from source addresses of its own (127.0.0.2.., 20,000 per address), so no
//! process holds more sockets than this machine's per-process file-descriptor limit (20,000).
//!
//!   SESSIONS=19500 HEARTBEAT_SECONDS=10 MEASURE_SECONDS=30 cargo bench -p tether-server --bench sessions
//!
//! Several replicas on one PostgreSQL database (the sessions split evenly between them; the
//! database's CPU is that of every process named `postgres` on this machine, so use a cluster of
//! its own):
//!
//!   BENCH_DATABASE_URL=postgres://…/empty_db REPLICAS=3 SESSIONS=51000 \
//!     cargo bench -p tether-server --bench sessions

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use support::{env_or, proc_stat, sessions_of, start_replica, Replica, ADMIN, TICKS_PER_SECOND};

const SESSIONS_PER_SOURCE_IP: usize = 20_000;
/// Source addresses each generator may use: 127.0.0.(2 + 4g) .. 127.0.0.(5 + 4g).
const SOURCES_PER_GENERATOR: usize = 4;
const RUNNERS: usize = 100;
/// Handshakes each generator keeps in flight while it opens its sessions.
const HANDSHAKES_IN_FLIGHT: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        runtime.block_on(support::serve(&args[i + 1..]));
    } else if let Some(i) = args.iter().position(|a| a == "--generate") {
        runtime.block_on(generate(&args[i + 1..]));
    } else if args.iter().any(|a| a == "--bench") || !args.iter().any(|a| a.starts_with("--")) {
        runtime.block_on(drive());
    }
}

/// Child: opens `COUNT` sessions to `ADDR` from its own source addresses, with the access tokens
/// read from stdin (one per line, then an empty line), spread over them. Prints
/// `opened <n> failed <n> ramp_ms <n>` when every attempt has ended, then keeps the sessions
/// alive with heartbeats until stdin closes.
async fn generate(args: &[String]) {
    let [addr, count, generator] = args else {
        panic!("--generate ADDR COUNT GENERATOR_INDEX");
    };
    let addr: SocketAddr = addr.parse().expect("addr");
    let count: usize = count.parse().expect("count");
    let generator: usize = generator.parse().expect("index");
    let heartbeat = env_or("HEARTBEAT_SECONDS", 10);
    let tokens: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(!tokens.is_empty(), "no access tokens on stdin");
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // At most this many handshakes in flight: the ramp goes as fast as the server takes them.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_IN_FLIGHT));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let token = tokens[i % tokens.len()].clone();
        let (opened, failed) = (opened.clone(), failed.clone());
        let source_index = i / SESSIONS_PER_SOURCE_IP;
        assert!(source_index < SOURCES_PER_GENERATOR, "too many sessions");
        let source = Ipv4Addr::new(
            127,
            0,
            0,
            (2 + generator * SOURCES_PER_GENERATOR + source_index) as u8,
        );
        let instance = format!("g{generator}-i{i}");
        let permit = handshakes.clone().acquire_owned().await.expect("semaphore");
        handles.push(tokio::spawn(async move {
            let opening = session(addr, source, &token, &instance, i, heartbeat).await;
            drop(permit);
            match opening {
                Ok(ws) => {
                    opened.fetch_add(1, Ordering::Relaxed);
                    ws.await;
                }
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("session {instance} failed: {e}");
                    }
                }
            }
        }));
    }
    while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < count as u64 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "opened {} failed {} ramp_ms {}",
        opened.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        started.elapsed().as_millis()
    );
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await;
    for h in handles {
        h.abort();
    }
}

/// Opens one session, sends hello, waits for welcome; the returned future keeps it alive with heartbeats.
async fn session(
    server: SocketAddr,
    source: Ipv4Addr,
    token: &str,
    instance: &str,
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
        "instance_id": instance, "hostname": "bench", "platform": "local", "capacity": 1});
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

struct Generator {
    child: Child,
    summary: String,
}

fn start_generator(addr: SocketAddr, count: usize, index: usize, tokens: &[String]) -> Child {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg("--generate")
        .arg(addr.to_string())
        .arg(count.to_string())
        .arg(index.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn generator");
    let stdin = child.stdin.as_mut().expect("stdin");
    for t in tokens {
        writeln!(stdin, "{t}").expect("token");
    }
    writeln!(stdin).expect("end of tokens");
    child
}

fn wait_generator(mut child: Child) -> Generator {
    let mut summary = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut summary)
        .expect("generator summary");
    Generator {
        child,
        summary: summary.trim().to_owned(),
    }
}

fn field(summary: &str, name: &str) -> u64 {
    let mut words = summary.split_whitespace();
    while let Some(w) = words.next() {
        if w == name {
            return words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    0
}

/// CPU ticks of every process named `postgres` (the cluster's backends and workers).
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|pid| proc_stat(pid).1)
        .sum()
}

/// Transactions committed and rows written in the bench's database so far (`pg_stat_database`).
fn database_writes(url: &str) -> Option<(u64, u64)> {
    let out = Command::new("psql")
        .arg(url)
        .args([
            "-Atc",
            "select xact_commit, tup_inserted + tup_updated + tup_deleted \
             from pg_stat_database where datname = current_database()",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (commits, rows) = text.trim().split_once('|')?;
    Some((commits.parse().ok()?, rows.parse().ok()?))
}

async fn drive() {
    let sessions = env_or("SESSIONS", 5_000) as usize;
    let heartbeat = env_or("HEARTBEAT_SECONDS", 10);
    let measure = env_or("MEASURE_SECONDS", 30);
    let replicas = env_or("REPLICAS", 1).max(1) as usize;
    let database = std::env::var("BENCH_DATABASE_URL").ok();
    assert!(
        replicas == 1 || database.is_some(),
        "REPLICAS > 1 needs BENCH_DATABASE_URL (an empty PostgreSQL database)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let first_data = dir.path().join("r0");
    // One issuer for every replica, as behind a load balancer (the generators connect directly).
    let public = "http://tether.bench.local";
    let mut servers: Vec<Replica> = vec![start_replica(&first_data, "-", 0, public)];
    let keys = first_data.display().to_string();
    for r in 1..replicas {
        servers.push(start_replica(
            &dir.path().join(format!("r{r}")),
            &keys,
            0,
            public,
        ));
    }
    let http = reqwest::Client::new();
    let base = format!("http://{}", servers[0].addr);

    // Runners made through the first server; their tokens verify on every replica (shared keys).
    let mut tokens = Vec::new();
    for i in 0..RUNNERS.min(sessions.max(1)) {
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
    let rss_before: Vec<u64> = servers.iter().map(|s| proc_stat(s.child.id()).0).collect();

    let started = Instant::now();
    let children: Vec<Child> = servers
        .iter()
        .enumerate()
        .map(|(g, s)| {
            let share = sessions / replicas + usize::from(g < sessions % replicas);
            start_generator(s.addr, share, g, &tokens)
        })
        .collect();
    let generators: Vec<Generator> = children.into_iter().map(wait_generator).collect();
    let ramp = started.elapsed();
    let opened: u64 = generators.iter().map(|g| field(&g.summary, "opened")).sum();
    let failed: u64 = generators.iter().map(|g| field(&g.summary, "failed")).sum();

    // Let every session send at least one heartbeat, then measure over a steady window.
    tokio::time::sleep(Duration::from_secs(heartbeat + 2)).await;
    // The servers record the sessions they opened in the session registry behind the ramp; wait
    // until that is done (each server under 25% of a core, and on PostgreSQL under 20 commits/s,
    // over 2 s) so the window sees heartbeats only.
    let settling = Instant::now();
    let mut last_ticks: Vec<u64> = servers.iter().map(|s| proc_stat(s.child.id()).1).collect();
    let mut last_writes = database.as_deref().and_then(database_writes);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ticks: Vec<u64> = servers.iter().map(|s| proc_stat(s.child.id()).1).collect();
        let busiest = ticks
            .iter()
            .zip(&last_ticks)
            .map(|(now, then)| (now - then) as f64 / TICKS_PER_SECOND / 2.0)
            .fold(0.0, f64::max);
        let writes = database.as_deref().and_then(database_writes);
        let commits = match (last_writes, writes) {
            (Some((c0, _)), Some((c1, _))) => (c1 - c0) as f64 / 2.0,
            _ => 0.0,
        };
        (last_ticks, last_writes) = (ticks, writes);
        if (busiest < 0.25 && commits < 20.0) || settling.elapsed() > Duration::from_secs(300) {
            break;
        }
    }
    println!(
        "settled {:.0} s after the heartbeats started (the servers recording their sessions)",
        settling.elapsed().as_secs_f64()
    );
    let ticks_before: Vec<u64> = servers.iter().map(|s| proc_stat(s.child.id()).1).collect();
    let pg_before = database.as_ref().map(|_| postgres_ticks());
    let writes_before = database.as_deref().and_then(database_writes);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(measure)).await;
    let seconds = window.elapsed().as_secs_f64();
    let after: Vec<(u64, u64)> = servers.iter().map(|s| proc_stat(s.child.id())).collect();
    let pg_after = database.as_ref().map(|_| postgres_ticks());
    let writes_after = database.as_deref().and_then(database_writes);

    println!(
        "sessions: {opened} open, {failed} failed over {replicas} server(s) (ramp {:.1} s, \
         {:.0} sessions/s); heartbeat every {heartbeat} s",
        ramp.as_secs_f64(),
        opened as f64 / ramp.as_secs_f64()
    );
    for (i, s) in servers.iter().enumerate() {
        let held = sessions_of(&http, s.addr).await;
        let (rss, ticks) = after[i];
        let per_session = rss.saturating_sub(rss_before[i]) as f64 / held.max(1) as f64;
        let cpu = (ticks - ticks_before[i]) as f64 / TICKS_PER_SECOND / seconds * 100.0;
        println!(
            "server {i}: {held} sessions; RSS {:.1} → {:.1} MiB = {per_session:.1} KiB per idle \
             session; CPU {cpu:.1}% of one core with heartbeats flowing (over {seconds:.0} s)",
            rss_before[i] as f64 / 1024.0,
            rss as f64 / 1024.0,
        );
    }
    if let (Some(b), Some(a)) = (pg_before, pg_after) {
        let cpu = (a - b) as f64 / TICKS_PER_SECOND / seconds * 100.0;
        println!("postgres (every process of the cluster): {cpu:.1}% of one core");
    }
    if let (Some((c0, w0)), Some((c1, w1))) = (writes_before, writes_after) {
        println!(
            "database: {:.1} commits/s, {:.1} rows written/s ({:.0} heartbeats/s arrived)",
            (c1 - c0) as f64 / seconds,
            (w1 - w0) as f64 / seconds,
            opened as f64 / heartbeat as f64
        );
    }
    for mut g in generators {
        drop(g.child.stdin.take());
        let _ = g.child.wait();
    }
    for mut s in servers {
        drop(s.child.stdin.take());
        let _ = s.child.wait();
    }
}
