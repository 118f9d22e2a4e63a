//! Load benchmark (not a timed test): drives `POST /oauth/token` and `GET /api/v1/runners` on a
//! real server over loopback keep-alive connections and prints throughput and latency percentiles.
//! The load generator runs in the same process, on the same cores, as the server.
//!
//!   cargo bench -p tether-server --bench load
//!   BENCH_SECONDS=10 BENCH_CONNECTIONS=64 cargo bench -p tether-server --bench load
//!   BENCH_DATABASE_URL=postgres://… cargo bench -p tether-server --bench load   # on PostgreSQL
//!   BENCH_DATABASE_URL=postgres://… BENCH_REPLICAS=2 cargo bench -p tether-server --bench load
//!     # two replicas (in this process, sharing keys) behind HAProxy (/usr/sbin/haproxy)

use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tether_domain::ApiToken;
use tether_server::ServerConfig;

const ADMIN: &str = "bench-admin-token-0123456789abcdefghijkl";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config_is_postgres() -> bool {
    std::env::var("BENCH_DATABASE_URL").is_ok_and(|u| u.starts_with("postgres"))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let seconds = env_or("BENCH_SECONDS", 10);
    let connections = env_or("BENCH_CONNECTIONS", 64) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new(dir.path().to_path_buf());
    config.bootstrap_token = Some(ApiToken::parse_supplied(ADMIN).expect("token"));
    config.database_url = std::env::var("BENCH_DATABASE_URL")
        .ok()
        .map(|u| tether_server::DatabaseUrl::parse(&u).expect("BENCH_DATABASE_URL"));
    let server = tether_server::start(config).await.expect("server");
    if config_is_postgres() {
        // The events listener must be in sync, or every token request reads the database.
        while reqwest::get(format!("{}/readyz", server.public_url))
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut addr = server.local_addr;
    // A second replica on the same database and keys, and HAProxy in front of both.
    let mut second = None;
    let mut haproxy = None;
    if env_or("BENCH_REPLICAS", 1) == 2 {
        assert!(
            config_is_postgres(),
            "BENCH_REPLICAS=2 needs BENCH_DATABASE_URL=postgres://…"
        );
        let dir_b = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig::new(dir_b.path().to_path_buf());
        config.database_url = std::env::var("BENCH_DATABASE_URL")
            .ok()
            .map(|u| tether_server::DatabaseUrl::parse(&u).expect("BENCH_DATABASE_URL"));
        config.key_files = tether_server::keys::KeyFiles {
            signing: Some(dir.path().join("signing.key")),
            pepper: Some(dir.path().join("pepper.key")),
            master: Some(dir.path().join("master.key")),
        };
        let b = tether_server::start(config).await.expect("second replica");
        while reqwest::get(format!("{}/readyz", b.public_url))
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let cfg = format!(
            "global\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  \
             timeout server 60s\nfrontend tether\n  bind 127.0.0.1:{port}\n  default_backend replicas\n\
             backend replicas\n  balance roundrobin\n  server a {} check\n  server b {} check\n",
            server.local_addr, b.local_addr
        );
        std::fs::write(dir_b.path().join("haproxy.cfg"), cfg).expect("config");
        haproxy = Some(
            std::process::Command::new("/usr/sbin/haproxy")
                .arg("-f")
                .arg(dir_b.path().join("haproxy.cfg"))
                .arg("-db")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("haproxy (apt-get install haproxy)"),
        );
        addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        while reqwest::get(format!("http://{addr}/readyz"))
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        second = Some((b, dir_b));
    }

    let http = reqwest::Client::new();
    let base = server.public_url.clone();
    let mut creds = None;
    for i in 0..20 {
        let body: serde_json::Value = http
            .post(format!("{base}/api/v1/runners"))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({"name": format!("bench-{i}"), "platform": "local"}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        creds.get_or_insert((
            body["credentials"]["client_id"]
                .as_str()
                .expect("id")
                .to_owned(),
            body["credentials"]["client_secret"]
                .as_str()
                .expect("secret")
                .to_owned(),
        ));
    }
    let (client_id, secret) = creds.expect("a runner");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"));

    println!(
        "machine: {} cores; server(s) and load generator in one process; {connections} keep-alive connections (to {addr}); {seconds} s per scenario",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let token_request = move || {
        Request::post("/oauth/token")
            .header("host", "bench")
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(
                b"grant_type=client_credentials",
            )))
            .expect("request")
    };
    scenario(
        "POST /oauth/token",
        addr,
        connections,
        seconds,
        token_request,
    )
    .await;
    let list_request = || {
        Request::get("/api/v1/runners?limit=20")
            .header("host", "bench")
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    scenario(
        "GET /api/v1/runners (20 runners)",
        addr,
        connections,
        seconds,
        list_request,
    )
    .await;
    if let Some(mut h) = haproxy {
        let _ = h.kill();
        let _ = h.wait();
    }
    if let Some((b, _dir)) = second {
        b.shutdown().await.expect("shutdown");
    }
    server.shutdown().await.expect("shutdown");
}

async fn scenario<F>(
    name: &str,
    addr: std::net::SocketAddr,
    connections: usize,
    seconds: u64,
    make: F,
) where
    F: Fn() -> Request<Full<Bytes>> + Clone + Send + 'static,
{
    // Warm-up: one second, not counted.
    drive(addr, connections, Duration::from_secs(1), make.clone()).await;
    let started = Instant::now();
    let (mut latencies, errors) =
        drive(addr, connections, Duration::from_secs(seconds), make).await;
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "{name}: {} requests in {elapsed:.1} s = {:.0} req/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {errors} non-2xx",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
}

/// `connections` workers, each with one HTTP/1.1 keep-alive connection, sending back to back.
async fn drive<F>(
    addr: std::net::SocketAddr,
    connections: usize,
    duration: Duration,
    make: F,
) -> (Vec<Duration>, u64)
where
    F: Fn() -> Request<Full<Bytes>> + Clone + Send + 'static,
{
    let deadline = Instant::now() + duration;
    let mut workers = Vec::new();
    for _ in 0..connections {
        let make = make.clone();
        workers.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let mut latencies = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let start = Instant::now();
                let response = sender.send_request(make()).await.expect("response");
                let ok = response.status().is_success();
                let _ = response.into_body().collect().await.expect("body");
                latencies.push(start.elapsed());
                if !ok {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.expect("worker");
        all.extend(l);
        errors += e;
    }
    (all, errors)
}
