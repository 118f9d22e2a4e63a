//! Dispatch benchmark (not a timed test): real runner agents (in-process, running real `sh`
//! processes) connected to a real server. Measures, from the server's own timestamps, the time from
//! `POST /api/v1/pipelines/{name}/runs` to the task's start on an instance, the task throughput
//! across 1 and 10 runners with a trivial command (`true`), and the log throughput of a chatty task.
//!
//!   cargo bench -p tether-server --bench dispatch
//!   BENCH_RUNS=2000 BENCH_LOG_MB=100 cargo bench -p tether-server --bench dispatch
//!   BENCH_DATABASE_URL=postgres://… cargo bench -p tether-server --bench dispatch   # on PostgreSQL

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tether_domain::ApiToken;
use tether_server::ServerConfig;
use time::OffsetDateTime;
use tokio::sync::watch;

const ADMIN: &str = "bench-admin-token-0123456789abcdefghijkl";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

struct Bench {
    http: reqwest::Client,
    base: String,
}

impl Bench {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

async fn run() {
    let runs = env_or("BENCH_RUNS", 1000);
    let log_mb = env_or("BENCH_LOG_MB", 50);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new(dir.path().to_path_buf());
    config.bootstrap_token = Some(ApiToken::parse_supplied(ADMIN).expect("token"));
    config.database_url = std::env::var("BENCH_DATABASE_URL")
        .ok()
        .map(|u| tether_server::DatabaseUrl::parse(&u).expect("BENCH_DATABASE_URL"));
    let backend = config
        .database_url
        .as_ref()
        .map_or("sqlite", |u| u.backend_name());
    let server = tether_server::start(config).await.expect("server");
    let b = Bench {
        http: reqwest::Client::new(),
        base: server.public_url.clone(),
    };
    println!(
        "machine: {} cores; server, runner agents and load generator in one process; {backend}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (stop, stop_rx) = watch::channel(false);
    let mut names = Vec::new();
    for i in 0..10 {
        let name = format!("bench-{i}");
        let created = b
            .call(
                reqwest::Method::POST,
                "/api/v1/runners",
                Some(json!({"name": name, "platform": "local"})),
            )
            .await;
        let args = tether_runner::RunnerArgs {
            url: Some(b.base.clone()),
            client_id: created["credentials"]["client_id"]
                .as_str()
                .map(str::to_owned),
            client_secret: created["credentials"]["client_secret"]
                .as_str()
                .map(str::to_owned),
            client_secret_file: None,
            client_secret_arn: None,
            ca_file: None,
            max_tasks: 20,
            workdir: dir.path().join(format!("work-{i}")),
            platform: "local".into(),
            metrics_listen: None,
            secret_refresh_seconds: None,
        };
        let config = args.validate().expect("runner config");
        let rx = stop_rx.clone();
        tokio::spawn(async move { tether_runner::run_until(config, rx).await });
        names.push(name);
    }
    for name in &names {
        while b
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/runners/{name}"),
                None,
            )
            .await["status"]
            != "running"
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    b.call(
        reqwest::Method::PUT,
        "/api/v1/pipelines/noop",
        Some(json!({"tasks": [{"name": "noop", "run": "true"}]})),
    )
    .await;
    println!("\n| runners | runs | tasks/s (POST to final) | start latency p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    for spread in [1usize, 10] {
        dispatch_scenario(&b, &names[..spread], runs).await;
    }
    idle_latency(&b, &names[0], 100).await;
    chatty_scenario(&b, &names[0], log_mb).await;
    let _ = stop.send(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.shutdown().await.expect("shutdown");
}

/// Queues `runs` one-task runs round-robin over `runners` from 16 concurrent clients, waits for
/// all to finish, and reports throughput and POST-to-start latency.
async fn dispatch_scenario(b: &Bench, runners: &[String], runs: u64) {
    let started = Instant::now();
    let mut ids = Vec::with_capacity(runs as usize);
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for i in 0..runs {
        let runner = runners[i as usize % runners.len()].clone();
        pending.push(async move {
            b.call(
                reqwest::Method::POST,
                "/api/v1/pipelines/noop/runs",
                Some(json!({"runner": runner})),
            )
            .await["id"]
                .as_str()
                .expect("id")
                .to_owned()
        });
        if pending.len() >= 16 {
            ids.push(pending.next().await.expect("id"));
        }
    }
    while let Some(id) = pending.next().await {
        ids.push(id);
    }
    let mut latencies = Vec::with_capacity(ids.len());
    for id in &ids {
        let run = loop {
            let run = b
                .call(reqwest::Method::GET, &format!("/api/v1/runs/{id}"), None)
                .await;
            if run["state"] != "queued" && run["state"] != "running" {
                break run;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(run["state"], "succeeded", "{run}");
        let created = time_of(&run["created_at"]);
        let task_started = time_of(&run["tasks"][0]["started_at"]);
        latencies.push((task_started - created).as_seconds_f64() * 1000.0);
    }
    let elapsed = started.elapsed();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "| {} | {} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms |",
        runners.len(),
        ids.len(),
        ids.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
}

/// One run at a time on an idle runner: POST-to-start latency without any queue.
async fn idle_latency(b: &Bench, runner: &str, runs: usize) {
    let mut latencies = Vec::with_capacity(runs);
    for _ in 0..runs {
        let run = b
            .call(
                reqwest::Method::POST,
                "/api/v1/pipelines/noop/runs",
                Some(json!({"runner": runner})),
            )
            .await;
        let id = run["id"].as_str().expect("id").to_owned();
        let run = loop {
            let run = b
                .call(reqwest::Method::GET, &format!("/api/v1/runs/{id}"), None)
                .await;
            if run["state"] == "succeeded" {
                break run;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let started = time_of(&run["tasks"][0]["started_at"]) - time_of(&run["created_at"]);
        latencies.push(started.as_seconds_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "\nidle runner, one run at a time ({runs} runs): POST to task start p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
}

/// One task printing `mb` MiB of 100-byte lines; reports stored log bytes per second of task time.
async fn chatty_scenario(b: &Bench, runner: &str, mb: u64) {
    let bytes = mb * 1024 * 1024;
    b.call(
        reqwest::Method::PUT,
        "/api/v1/pipelines/chatty",
        Some(json!({"tasks": [{"name": "chatty",
            "run": format!("head -c {bytes} /dev/zero | tr '\\0' 'x' | fold -w 99")}]})),
    )
    .await;
    let run = b
        .call(
            reqwest::Method::POST,
            "/api/v1/pipelines/chatty/runs",
            Some(json!({"runner": runner})),
        )
        .await;
    let id = run["id"].as_str().expect("id").to_owned();
    let run = loop {
        let run = b
            .call(reqwest::Method::GET, &format!("/api/v1/runs/{id}"), None)
            .await;
        if run["state"] != "queued" && run["state"] != "running" {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["state"], "succeeded", "{run}");
    let seconds = (time_of(&run["tasks"][0]["finished_at"])
        - time_of(&run["tasks"][0]["started_at"]))
    .as_seconds_f64();
    let stored = b
        .http
        .get(format!("{}/api/v1/runs/{id}/logs", b.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("logs")
        .bytes()
        .await
        .expect("log body")
        .len();
    println!(
        "\nchatty task: {:.1} MiB of log stored in {seconds:.2} s = {:.1} MiB/s (task start to final update)",
        stored as f64 / 1048576.0,
        stored as f64 / 1048576.0 / seconds
    );
}

fn time_of(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        v.as_str().expect("time"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339")
}
