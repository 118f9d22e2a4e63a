//! Failover benchmark (not a timed test): two replicas (child processes: this binary re-executed
//! with `--serve`) on one PostgreSQL database behind HAProxy, and `BENCH_RUNNERS` real runner
//! agents (in this process) connected through the balancer. Once every runner is connected, the
//! replica holding more sessions is killed with SIGKILL; the bench records, per runner it held,
//! how long until the runner's session is up again (its agent was welcomed by the survivor), and
//! how long until the survivor holds every session (its `tether_sessions`) and its API shows
//! every runner `running`.
//!
//!   BENCH_DATABASE_URL=postgres://…/empty_db BENCH_RUNNERS=1000 \
//!     cargo bench -p tether-server --bench failover
//!
//! Needs HAProxy (`/usr/sbin/haproxy`, Debian's package) and an empty database.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tether_runner::metrics::RunnerMetrics;
use tokio::sync::watch;

use support::{env_or, free_port, sessions_of, start_replica, ADMIN};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        runtime.block_on(support::serve(&args[i + 1..]));
    } else if args.iter().any(|a| a == "--bench") || !args.iter().any(|a| a.starts_with("--")) {
        runtime.block_on(drive());
    }
}

fn start_haproxy(dir: &Path, port: u16, servers: &[SocketAddr]) -> Child {
    // The load-balancer section of docs/operations/replicas.md, health checks every 200 ms.
    let mut cfg = format!(
        "global\n  maxconn 9000\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  \
         timeout server 60s\n  timeout tunnel 1h\n  retries 2\n  option redispatch\n\
         frontend tether\n  bind 127.0.0.1:{port}\n  default_backend replicas\n\
         backend replicas\n  balance leastconn\n  option httpchk GET /readyz\n  http-check expect status 200\n"
    );
    for (i, addr) in servers.iter().enumerate() {
        cfg.push_str(&format!(
            "  server r{i} {addr} check inter 200ms fall 2 rise 2\n"
        ));
    }
    let file = dir.join("haproxy.cfg");
    std::fs::write(&file, cfg).expect("config");
    Command::new("/usr/sbin/haproxy")
        .arg("-f")
        .arg(&file)
        .arg("-db")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (apt-get install haproxy)")
}

async fn get(http: &reqwest::Client, url: String) -> Option<Value> {
    let resp = http.get(url).bearer_auth(ADMIN).send().await.ok()?;
    resp.status().is_success().then_some(())?;
    resp.json().await.ok()
}

/// How many runners `base` shows `running`, paging through them all.
async fn running_on(http: &reqwest::Client, base: &str) -> usize {
    let mut running = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/runners?limit=200");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let Some(page) = get(http, url).await else {
            return running;
        };
        running += page["runners"].as_array().map_or(0, |rs| {
            rs.iter().filter(|r| r["status"] == "running").count()
        });
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return running,
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn drive() {
    let runners = env_or("BENCH_RUNNERS", 1000) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let lb_port = free_port();
    let public = format!("http://127.0.0.1:{lb_port}");
    let a_data = dir.path().join("a");
    let a = start_replica(&a_data, "-", free_port(), &public);
    let b = start_replica(
        &dir.path().join("b"),
        a_data.to_str().expect("path"),
        free_port(),
        &public,
    );
    let mut replicas = [a, b];
    let mut haproxy = start_haproxy(dir.path(), lb_port, &[replicas[0].addr, replicas[1].addr]);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&http, format!("{public}/readyz")).await.is_none() {
        if let Ok(Some(status)) = haproxy.try_wait() {
            panic!("HAProxy exited ({status}); run it by hand with the bench's config to see why");
        }
        assert!(
            Instant::now() < deadline,
            "the balancer never passed /readyz through"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "machine: {} cores; 2 replicas (child processes), HAProxy, PostgreSQL and {runners} runner agents (this process) share them",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let (stop, stop_rx) = watch::channel(false);
    let mut agents = Vec::new();
    for i in 0..runners {
        let created: Value = http
            .post(format!("{public}/api/v1/runners"))
            .bearer_auth(ADMIN)
            .json(&json!({"name": format!("fo-{i}"), "platform": "local"}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let args = tether_runner::RunnerArgs {
            url: Some(public.clone()),
            client_id: created["credentials"]["client_id"]
                .as_str()
                .map(str::to_owned),
            client_secret: created["credentials"]["client_secret"]
                .as_str()
                .map(str::to_owned),
            client_secret_file: None,
            client_secret_arn: None,
            ca_file: None,
            max_tasks: 1,
            workdir: dir.path().join(format!("work-{i}")),
            platform: "local".into(),
            metrics_listen: None,
            secret_refresh_seconds: None,
        };
        let config = args.validate().expect("runner config");
        let metrics = Arc::new(RunnerMetrics::default());
        let agent = tether_runner::Agent::new(config, metrics.clone())
            .await
            .expect("agent");
        let rx = stop_rx.clone();
        tokio::spawn(async move { agent.run(rx).await });
        agents.push(metrics);
    }
    let started = Instant::now();
    while agents.iter().any(|m| !m.connected()) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "runners never all connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{runners} runners connected in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Let the registry and statuses settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = [
        sessions_of(&http, replicas[0].addr).await,
        sessions_of(&http, replicas[1].addr).await,
    ];
    let victim = usize::from(held[1] > held[0]);
    let survivor = 1 - victim;
    println!(
        "sessions: replica 0 holds {}, replica 1 holds {}; killing replica {victim} (SIGKILL)",
        held[0], held[1]
    );
    let survivor_url = format!("http://{}", replicas[survivor].addr);

    let killed = Instant::now();
    replicas[victim].child.kill().expect("kill -9");
    let _ = replicas[victim].child.wait();
    // Which runners lost their session, and when each had one again.
    let mut lost: Vec<Option<Instant>> = vec![None; runners];
    let mut was_down = vec![false; runners];
    let mut all_running_api = None;
    let mut next_api_poll = Instant::now();
    loop {
        let now = Instant::now();
        for (i, m) in agents.iter().enumerate() {
            if !m.connected() {
                was_down[i] = true;
            } else if was_down[i] && lost[i].is_none() {
                lost[i] = Some(now);
            }
        }
        let back = was_down.iter().zip(&lost).all(|(d, l)| !d || l.is_some());
        if all_running_api.is_none() && now >= next_api_poll {
            if sessions_of(&http, replicas[survivor].addr).await == runners as u64
                && running_on(&http, &survivor_url).await == runners
            {
                all_running_api = Some(Instant::now());
            }
            next_api_poll = Instant::now() + Duration::from_millis(250);
        }
        if back && all_running_api.is_some() && killed.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(180),
            "not every runner came back within 180 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut times: Vec<Duration> = lost
        .iter()
        .flatten()
        .map(|t| t.duration_since(killed))
        .collect();
    times.sort();
    let moved = times.len();
    println!(
        "runners that lost their session: {moved}; kill -9 → session up again on the survivor: \
         p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(&times, 0.5),
        pct(&times, 0.99),
        pct(&times, 1.0)
    );
    println!(
        "kill -9 → the survivor holds all {runners} sessions and its API shows every runner running: {:.0} ms (polled every 250 ms)",
        all_running_api.map_or(f64::NAN, |t| t.duration_since(killed).as_secs_f64() * 1000.0)
    );
    let _ = stop.send(true);
    if let Some(stdin) = replicas[survivor].child.stdin.as_mut() {
        let _ = stdin.write_all(b"\n");
    }
    let _ = replicas[survivor].child.wait();
    let _ = haproxy.kill();
    let _ = haproxy.wait();
}
