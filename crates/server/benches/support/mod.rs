//! What the benchmarks that run servers in child processes share: the replica child (`--serve`),
//! starting one, and reading a process's memory and CPU or a replica's session count. Each bench
//! uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tether_domain::ApiToken;
use tether_server::ServerConfig;

pub const ADMIN: &str = "bench-admin-token-0123456789abcdefghijkl";

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// Child: one control-plane replica. Arguments: listen address, data directory, key directory
/// (`-`: generated in the data directory), public URL (`-`: the listen address). On PostgreSQL
/// when `BENCH_DATABASE_URL` is set, else SQLite in the data directory; heartbeat interval from
/// `HEARTBEAT_SECONDS` (default 10). Prints its address, then serves until stdin closes.
pub async fn serve(args: &[String]) {
    let [listen, data, keys, public] = args else {
        panic!("--serve LISTEN DATA KEYS PUBLIC_URL");
    };
    let mut config = ServerConfig::new(PathBuf::from(data));
    config.listen = listen.parse().expect("listen");
    if public != "-" {
        config.public_url = Some(public.parse().expect("public url"));
    }
    config.bootstrap_token = Some(ApiToken::parse_supplied(ADMIN).expect("token"));
    config.heartbeat = Duration::from_secs(env_or("HEARTBEAT_SECONDS", 10));
    // The sessions bench spreads up to ~20,000 sessions per replica over 100 runners.
    config.max_sessions_per_runner = 100_000;
    // Sessions that live through a long bench never need to re-authenticate.
    config.access_token_ttl = Duration::from_secs(86_400);
    if let Ok(url) = std::env::var("BENCH_DATABASE_URL") {
        config.database_url =
            Some(tether_server::DatabaseUrl::parse(&url).expect("BENCH_DATABASE_URL"));
        config.database_pool.max_connections = 32;
    }
    if keys != "-" {
        let keys = Path::new(keys);
        config.key_files = tether_server::keys::KeyFiles {
            signing: Some(keys.join("signing.key")),
            pepper: Some(keys.join("pepper.key")),
            master: Some(keys.join("master.key")),
        };
    }
    let server = tether_server::start(config).await.expect("server");
    println!("{}", server.local_addr);
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await;
    server.shutdown().await.expect("shutdown");
}

/// A replica child of this bench binary.
pub struct Replica {
    pub child: Child,
    pub addr: SocketAddr,
}

/// Starts `--serve` (see [`serve`]) on 127.0.0.1:`port` (0: any) and waits for its address.
pub fn start_replica(data: &Path, keys: &str, port: u16, public: &str) -> Replica {
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .arg("--serve")
        .arg(format!("127.0.0.1:{port}"))
        .arg(data)
        .arg(keys)
        .arg(public)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn replica");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("replica address");
    Replica {
        child,
        addr: line.trim().parse().expect("address"),
    }
}

/// A process's resident memory (KiB) and CPU time so far (clock ticks, user + system).
pub fn proc_stat(pid: u32) -> (u64, u64) {
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
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (rss_kb, field(11) + field(12))
}

/// Linux's USER_HZ: clock ticks per second in `/proc/<pid>/stat`.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// Sessions a replica holds, from its `/metrics`.
pub async fn sessions_of(http: &reqwest::Client, addr: SocketAddr) -> u64 {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix("tether_sessions "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
