//! Several `tether server` replicas on one PostgreSQL database behind HAProxy, with real runner
//! processes that connect through the balancer. HAProxy's `backup` servers take traffic only when
//! the others are down, which decides where a runner's session lands; the API calls of a test go
//! to the replicas' own ports, so "through A" and "held by B" are what the test says.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::procs::{
    access_token, connect_status, free_port, http, stderr, tether, token_status, Haproxy,
    RunnerProc, ServerProc, ADMIN_TOKEN,
};

const MAX_LAG: Duration = Duration::from_millis(500);

struct Cluster {
    replicas: Vec<ServerProc>,
    names: Vec<&'static str>,
    balancer: Haproxy,
    /// The database URL every replica uses.
    url: String,
    _db: Option<Arc<tether_pgtest::TestDatabase>>,
    keys: PathBuf,
    dir: tempfile::TempDir,
}

fn key_files(dir: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    for k in ["signing", "pepper", "master"] {
        let path = keys.join(format!("{k}.key"));
        std::fs::write(&path, tether_domain::random_bytes::<32>()).expect("key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("mode");
    }
    keys
}

impl Cluster {
    /// `n` replicas named a, b, c…; the balancer sends new sessions to `primary` (the others are
    /// backups).
    fn start(n: usize, primary: &str) -> Self {
        Self::start_with(n, primary, &[])
    }

    /// Like [`Self::start`], with more environment for every replica.
    fn start_with(n: usize, primary: &str, env: &[(&str, &str)]) -> Self {
        let db = Arc::new(tether_pgtest::TestDatabase::create_blocking());
        Self::start_on(n, primary, db.url().to_owned(), Some(db), env)
    }

    /// Like [`Self::start_with`], on the database at `url`.
    fn start_on(
        n: usize,
        primary: &str,
        url: String,
        db: Option<Arc<tether_pgtest::TestDatabase>>,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let keys = key_files(dir.path());
        let names: Vec<&'static str> = ["a", "b", "c"][..n].to_vec();
        let addrs: Vec<String> = names
            .iter()
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let balancer_port = free_port();
        let mut replicas = Vec::new();
        for (name, addr) in names.iter().zip(&addrs) {
            replicas.push(Self::replica(
                dir.path(),
                &keys,
                &url,
                name,
                addr,
                balancer_port,
                env,
            ));
        }
        let servers: Vec<(&str, &str, bool)> = names
            .iter()
            .zip(&addrs)
            .map(|(n, a)| (*n, a.as_str(), *n != primary))
            .collect();
        let balancer = Haproxy::start_on(balancer_port, &servers);
        Self {
            replicas,
            names,
            balancer,
            url,
            _db: db,
            keys,
            dir,
        }
    }

    fn replica(
        dir: &std::path::Path,
        keys: &std::path::Path,
        url: &str,
        name: &str,
        addr: &str,
        balancer_port: u16,
        env: &[(&str, &str)],
    ) -> ServerProc {
        let data = dir.join(format!("replica-{name}"));
        let public = format!("http://127.0.0.1:{balancer_port}");
        let signing = keys.join("signing.key").display().to_string();
        let pepper = keys.join("pepper.key").display().to_string();
        let master = keys.join("master.key").display().to_string();
        let lag = format!("{}", MAX_LAG.as_secs_f64());
        let mut all = vec![
            ("TETHER_DATABASE_URL", url),
            ("TETHER_PUBLIC_URL", public.as_str()),
            ("TETHER_SIGNING_KEY_FILE", signing.as_str()),
            ("TETHER_PEPPER_FILE", pepper.as_str()),
            ("TETHER_MASTER_KEY_FILE", master.as_str()),
            ("TETHER_EVENTS_MAX_LAG_SECONDS", lag.as_str()),
            // Requests fail fast while PostgreSQL restarts, so replicas see it back sooner.
            ("TETHER_DATABASE_ACQUIRE_TIMEOUT_SECONDS", "1"),
        ];
        all.extend_from_slice(env);
        ServerProc::start_replica(&data, addr, &all)
    }

    fn at(&self, name: &str) -> &ServerProc {
        let i = self.names.iter().position(|n| *n == name).expect("replica");
        &self.replicas[i]
    }

    /// An admin command against replica `name`.
    fn admin(&self, name: &str, args: &[&str]) -> std::process::Output {
        let url = self.at(name).url.clone();
        tether(args, &[("TETHER_URL", &url), ("TETHER_TOKEN", ADMIN_TOKEN)])
    }

    fn show(&self, name: &str, runner: &str) -> Value {
        let o = self.admin(name, &["runners", "show", runner, "--output", "json"]);
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }

    /// Waits until `check` holds for the runner as every replica shows it.
    fn wait_everywhere(
        &self,
        runner: &str,
        what: &str,
        within: Duration,
        check: impl Fn(&Value) -> bool,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<Value> = self.names.iter().map(|n| self.show(n, runner)).collect();
            if views.iter().all(&check) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} on every replica within {within:?}: {views:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates a runner through replica `through`; returns (client id, secret).
    fn create_runner(&self, through: &str, runner: &str) -> (String, String) {
        let o = self.admin(
            through,
            &[
                "runners",
                "create",
                runner,
                "--platform",
                "local",
                "--output",
                "json",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let created: Value = serde_json::from_slice(&o.stdout).expect("json");
        (
            created["credentials"]["client_id"]
                .as_str()
                .expect("id")
                .to_owned(),
            created["credentials"]["client_secret"]
                .as_str()
                .expect("secret")
                .to_owned(),
        )
    }

    /// A runner process connecting through the balancer.
    fn start_runner(&self, label: &str, client_id: &str, secret: &str) -> RunnerProc {
        RunnerProc::start(
            &[
                ("TETHER_URL", self.balancer.url.clone()),
                ("OAUTH_CLIENT_ID", client_id.to_owned()),
                ("OAUTH_CLIENT_SECRET", secret.to_owned()),
                (
                    "TETHER_WORKDIR",
                    self.dir
                        .path()
                        .join(format!("work-{label}"))
                        .display()
                        .to_string(),
                ),
            ],
            self.dir.path().join(format!("{label}.log")),
        )
    }
}

fn running(r: &Value) -> bool {
    r["status"] == "running"
}

/// (1) Created through A, held by B, refreshed through A: B cuts the session, and B and C refuse
/// the old secret for every request that starts after the bound.
#[test]
fn a_refresh_through_one_replica_cuts_the_runner_held_by_another_and_every_replica_refuses_it() {
    let c = Cluster::start(3, "b");
    let (client_id, old) = c.create_runner("a", "r1");
    let runner = c.start_runner("r1", &client_id, &old);
    c.wait_everywhere("r1", "running", Duration::from_secs(20), running);
    // The session is B's.
    let b_metrics = http(&c.at("b").url, reqwest::Method::GET, "/metrics", None, None).1;
    assert!(
        b_metrics.lines().any(|l| l == "tether_sessions 1"),
        "B holds the session: {b_metrics}"
    );
    for name in ["b", "c"] {
        assert_eq!(token_status(&c.at(name).url, &client_id, &old), 200);
    }

    let (status, body) = http(
        &c.at("a").url,
        reqwest::Method::POST,
        "/api/v1/runners/r1/credentials/refresh",
        Some(ADMIN_TOKEN),
        Some(&json!({"confirm": "refresh"})),
    );
    let returned = Instant::now();
    assert_eq!(status, 200, "{body}");
    // Every request that starts after the bound is refused, on every replica.
    let mut late = Vec::new();
    while returned.elapsed() < MAX_LAG * 4 {
        for name in ["a", "b", "c"] {
            let started = Instant::now();
            let s = token_status(&c.at(name).url, &client_id, &old);
            if s == 200 && started >= returned + MAX_LAG {
                late.push(format!(
                    "{name} accepted {} ms after",
                    (started - returned).as_millis()
                ));
            }
        }
    }
    assert!(late.is_empty(), "the revoked secret was accepted: {late:?}");
    c.wait_everywhere(
        "r1",
        "unknown: credentials revoked",
        Duration::from_secs(10),
        |r| {
            r["status"] == "unknown"
                && r["status_reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("refresh"))
        },
    );
    let log = runner.log();
    assert!(
        log.contains("revoked") || log.contains("4401"),
        "the runner was told its credentials were revoked: {log}"
    );
}

/// (3) A run queued through A runs on the instance held by B; its log and result read back
/// through C.
#[test]
fn a_run_queued_through_one_replica_runs_on_the_instance_another_holds_and_reads_back_through_a_third(
) {
    let c = Cluster::start(3, "b");
    let (client_id, secret) = c.create_runner("a", "r1");
    let _runner = c.start_runner("r1", &client_id, &secret);
    c.wait_everywhere("r1", "running", Duration::from_secs(20), running);
    let (status, body) = http(
        &c.at("a").url,
        reqwest::Method::PUT,
        "/api/v1/pipelines/hello",
        Some(ADMIN_TOKEN),
        Some(&json!({"tasks": [{"name": "greet", "run": "echo hello from replica b"}]})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        &c.at("a").url,
        reqwest::Method::POST,
        "/api/v1/pipelines/hello/runs",
        Some(ADMIN_TOKEN),
        Some(&json!({"runner": "r1"})),
    );
    assert!([200, 201, 202].contains(&status), "{body}");
    let run: Value = serde_json::from_str(&body).expect("run");
    let id = run["id"].as_str().expect("run id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let finished = loop {
        let (_, body) = http(
            &c.at("c").url,
            reqwest::Method::GET,
            &format!("/api/v1/runs/{id}"),
            Some(ADMIN_TOKEN),
            None,
        );
        let r: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if r["state"] == "succeeded" || r["state"] == "failed" {
            break r;
        }
        assert!(Instant::now() < deadline, "the run never finished: {r}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(finished["state"], "succeeded", "{finished}");
    let (_, log) = http(
        &c.at("c").url,
        reqwest::Method::GET,
        &format!("/api/v1/runs/{id}/logs"),
        Some(ADMIN_TOKEN),
        None,
    );
    assert!(log.contains("hello from replica b"), "{log}");
}

/// (6) A replica started with other key files than the database's refuses to start, naming the
/// key (the lockout across replicas, (7), is in the API suite's `replicas`).
#[test]
fn a_replica_with_other_keys_than_the_database_refuses_to_start() {
    let c = Cluster::start(2, "a");
    let other_keys = key_files(&c.dir.path().join("other"));
    let addr = format!("127.0.0.1:{}", free_port());
    let o = std::process::Command::new(crate::procs::BIN)
        .args(["server", "--listen", &addr, "--data-dir"])
        .arg(c.dir.path().join("replica-x"))
        .env("TETHER_DATABASE_URL", &c.url)
        .env("TETHER_SIGNING_KEY_FILE", other_keys.join("signing.key"))
        .env("TETHER_PEPPER_FILE", c.keys.join("pepper.key"))
        .env("TETHER_MASTER_KEY_FILE", c.keys.join("master.key"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("signing key"), "{err}");
}

fn get_json(base: &str, path: &str) -> Value {
    let (_, body) = http(base, reqwest::Method::GET, path, Some(ADMIN_TOKEN), None);
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Defines `pipeline` with one task running `command` and queues a run of it on `runner` through
/// replica `through`; returns the run id.
fn queue_run(c: &Cluster, through: &str, pipeline: &str, command: &str, runner: &str) -> String {
    let base = c.at(through).url.clone();
    let (status, body) = http(
        &base,
        reqwest::Method::PUT,
        &format!("/api/v1/pipelines/{pipeline}"),
        Some(ADMIN_TOKEN),
        Some(&json!({"tasks": [{"name": "work", "run": command}]})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        &base,
        reqwest::Method::POST,
        &format!("/api/v1/pipelines/{pipeline}/runs"),
        Some(ADMIN_TOKEN),
        Some(&json!({"runner": runner})),
    );
    assert!([200, 201, 202].contains(&status), "{body}");
    serde_json::from_str::<Value>(&body).expect("run")["id"]
        .as_str()
        .expect("run id")
        .to_owned()
}

/// (4) kill -9 of the replica holding the session while its task runs: the runner reconnects
/// through the balancer to the other replica within seconds, keeps running the task, and its
/// result arrives exactly once.
/// Queues a run on r1 through A whose task appends to a marker file, sleeps `seconds` and prints
/// `finished-once`, and waits until it runs; returns the run id and the marker file.
fn start_slow_run(c: &Cluster, seconds: u64) -> (String, PathBuf) {
    let marker = c.dir.path().join("ran");
    let command = format!(
        "echo started >> {m}; sleep {seconds}; echo finished-once",
        m = marker.display()
    );
    let id = queue_run(c, "a", "slow", &command, "r1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_json(&c.at("a").url, &format!("/api/v1/runs/{id}"))["state"] != "running" {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    (id, marker)
}

/// The run of [`start_slow_run`] succeeded as `base` reads it, its result arrived once and its
/// task ran once.
fn assert_ran_and_reported_once(base: &str, id: &str, marker: &std::path::Path, runner_log: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let finished = loop {
        let r = get_json(base, &format!("/api/v1/runs/{id}"));
        if r["state"] != "running" && r["state"] != "queued" {
            break r;
        }
        assert!(Instant::now() < deadline, "the run never finished: {r}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(finished["state"], "succeeded", "{finished}\n{runner_log}");
    let (_, log) = http(
        base,
        reqwest::Method::GET,
        &format!("/api/v1/runs/{id}/logs"),
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(
        log.matches("finished-once").count(),
        1,
        "the result arrived once: {log}"
    );
    let ran = std::fs::read_to_string(marker).expect("marker");
    assert_eq!(ran.lines().count(), 1, "the task ran once: {ran}");
}

#[test]
fn kill_9_of_the_replica_holding_the_session_mid_task_loses_no_result_and_runs_nothing_twice() {
    let mut c = Cluster::start(2, "b");
    let (client_id, secret) = c.create_runner("a", "r1");
    let runner = c.start_runner("r1", &client_id, &secret);
    c.wait_everywhere("r1", "running", Duration::from_secs(20), running);
    let (id, marker) = start_slow_run(&c, 3);
    let b = c.names.iter().position(|n| *n == "b").expect("b");
    c.replicas[b].signal("KILL");
    let killed = Instant::now();
    assert!(c.replicas[b].wait_exit(Duration::from_secs(5)).is_some());

    // Through A alone from now on.
    let a = c.at("a").url.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let reconnected = loop {
        let r = get_json(&a, "/api/v1/runners/r1");
        if r["status"] == "running" && r["instances"].as_array().is_some_and(|i| i.len() == 1) {
            break killed.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the runner never reconnected to A: {r}\n{}",
            runner.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ran_and_reported_once(&a, &id, &marker, &runner.log());
    eprintln!(
        "reconnected to the other replica {} ms after kill -9",
        reconnected.as_millis()
    );
    // B's sessions expire once its liveness lapses (3 heartbeats of 1 s); r1 stays running on A.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(get_json(&a, "/api/v1/runners/r1")["status"], "running");
}

/// The replica's own count of the sessions it holds (`tether_sessions` in `/metrics`).
fn sessions_held(base: &str) -> Option<u64> {
    let (status, body) = http(base, reqwest::Method::GET, "/metrics", None, None);
    if status != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix("tether_sessions "))
        .and_then(|v| v.trim().parse().ok())
}

/// A rolling update's SIGTERM to the replica holding the sessions, with a 4 s drain window: the
/// replica fails `/readyz` before it lets go of anything and refuses new sessions; after the
/// balancer's notice (the first quarter) it closes its runners' sessions one by one over the rest
/// of the window; they reconnect through the balancer to the other replica; the task that ran
/// meanwhile reports once and ran once, and the drained replica exits cleanly.
#[test]
fn sigterm_with_a_drain_window_moves_the_runners_to_the_other_replica_gradually() {
    const RUNNERS: usize = 4;
    let mut c = Cluster::start_with(2, "b", &[("TETHER_SHUTDOWN_DRAIN_SECONDS", "4")]);
    let mut procs = Vec::new();
    for i in 1..=RUNNERS {
        let name = format!("r{i}");
        let (client_id, secret) = c.create_runner("a", &name);
        procs.push(c.start_runner(&name, &client_id, &secret));
    }
    for i in 1..=RUNNERS {
        c.wait_everywhere(
            &format!("r{i}"),
            "running",
            Duration::from_secs(20),
            running,
        );
    }
    let (b_url, a_url) = (c.at("b").url.clone(), c.at("a").url.clone());
    assert_eq!(
        sessions_held(&b_url),
        Some(RUNNERS as u64),
        "B holds them all"
    );
    let (id, marker) = start_slow_run(&c, 4);

    let b = c.names.iter().position(|n| *n == "b").expect("b");
    let signalled = Instant::now();
    c.replicas[b].signal("TERM");
    // Not ready at once, while it still holds every session (new sessions are refused: see
    // `sessions::a_draining_shutdown_…` in the API suite).
    loop {
        let (status, body) = http(&b_url, reqwest::Method::GET, "/readyz", None, None);
        if status == 503 {
            assert!(body.contains("draining"), "{body}");
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(800),
            "B still ready after SIGTERM: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sessions_held(&b_url), Some(RUNNERS as u64));
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "the check above came too late to prove anything"
    );

    // The sessions arrive on A one by one as B lets them go.
    let mut arrived = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while arrived.len() < RUNNERS {
        let held = sessions_held(&a_url).unwrap_or(0) as usize;
        while arrived.len() < held.min(RUNNERS) {
            arrived.push(signalled.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "only {} runners reached A: {arrived:?}",
            arrived.len()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    // Closes start after the notice (1 s) and the last is due 3.25 s in: all at once would have
    // put every runner on A well before that.
    assert!(arrived[0] >= Duration::from_secs(1), "{arrived:?}");
    assert!(
        arrived[RUNNERS - 1] >= Duration::from_millis(3250),
        "the sessions were not spread over the window: {arrived:?}"
    );
    assert_eq!(c.replicas[b].wait_exit(Duration::from_secs(15)), Some(0));

    assert_ran_and_reported_once(&a_url, &id, &marker, &procs[0].log());
    for i in 1..=RUNNERS {
        let r = get_json(&a_url, &format!("/api/v1/runners/r{i}"));
        assert_eq!(r["status"], "running", "{r}");
        assert_eq!(r["instances"].as_array().map(Vec::len), Some(1), "{r}");
    }
    eprintln!("sessions reached A at {arrived:?} after SIGTERM");
}

/// (5) PostgreSQL restarts under token traffic right after a revocation: while it is down, both
/// replicas report not ready and never accept the revoked secret (they answer 401 or 503); once it
/// is back they reconnect, resync and are ready again, and only the new secret works.
#[test]
fn a_postgresql_restart_mid_traffic_turns_readiness_red_then_green_and_never_accepts_a_revoked_secret(
) {
    let pg = tether_pgtest::OwnCluster::start();
    let c = Cluster::start_on(2, "b", pg.url(), None, &[]);
    let (client_id, old) = c.create_runner("a", "r1");
    for name in ["a", "b"] {
        assert_eq!(token_status(&c.at(name).url, &client_id, &old), 200);
    }
    let (status, body) = http(
        &c.at("a").url,
        reqwest::Method::POST,
        "/api/v1/runners/r1/credentials/refresh",
        Some(ADMIN_TOKEN),
        Some(&json!({"confirm": "refresh"})),
    );
    assert_eq!(status, 200, "{body}");
    let new = serde_json::from_str::<Value>(&body).expect("json")["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    std::thread::sleep(MAX_LAG);
    let valid = access_token(&c.at("a").url, &client_id, &new);
    assert_eq!(connect_status(&c.at("b").url, &valid), 101);

    pg.stop();
    let down = Instant::now();
    let mut red = [false, false];
    // Once a replica stops trusting its caches, a valid token cannot be checked: 503 (retry),
    // never 401 (which would send the runner for a new token it cannot get either).
    let mut uncheckable = [false, false];
    while down.elapsed() < MAX_LAG * 6 {
        for (i, name) in ["a", "b"].iter().enumerate() {
            let s = token_status(&c.at(name).url, &client_id, &old);
            assert!(
                s == 401 || s == 503,
                "{name} answered {s} for the revoked secret while the database was down"
            );
            let (ready, _) = http(&c.at(name).url, reqwest::Method::GET, "/readyz", None, None);
            red[i] |= ready == 503;
            let s = connect_status(&c.at(name).url, &valid);
            assert!(s == 101 || s == 503, "{name} answered {s} to a connect");
            uncheckable[i] |= s == 503;
        }
    }
    assert_eq!(red, [true, true], "both replicas reported not ready");
    assert_eq!(uncheckable, [true, true], "both answered 503 to a connect");
    pg.start_again();
    for name in ["a", "b"] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(&c.at(name).url, reqwest::Method::GET, "/readyz", None, None).0 != 200 {
            assert!(Instant::now() < deadline, "{name} never became ready again");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            token_status(&c.at(name).url, &client_id, &old),
            401,
            "{name}"
        );
        assert_eq!(
            token_status(&c.at(name).url, &client_id, &new),
            200,
            "{name}"
        );
    }
    c.balancer.wait_ready(Duration::from_secs(5));
}

/// (2) Overlap refresh through A, hot reload of the secret file by the runner held by B, then
/// revoke-previous through C: the session on B moves to the new generation without a reconnect,
/// survives the revocation of the old one, and the old secret is refused everywhere.
#[test]
fn overlap_on_one_replica_hot_reload_on_another_and_revoke_previous_on_a_third_keep_the_session() {
    let c = Cluster::start(3, "b");
    let (client_id, old) = c.create_runner("a", "r1");
    let file = c.dir.path().join("client_secret");
    std::fs::write(&file, format!("{old}\n")).expect("secret file");
    let runner = RunnerProc::start(
        &[
            ("TETHER_URL", c.balancer.url.clone()),
            ("OAUTH_CLIENT_ID", client_id.clone()),
            ("OAUTH_CLIENT_SECRET_FILE", file.display().to_string()),
            (
                "TETHER_WORKDIR",
                c.dir.path().join("work").display().to_string(),
            ),
        ],
        c.dir.path().join("r1.log"),
    );
    c.wait_everywhere("r1", "running", Duration::from_secs(20), running);
    let before = c.show("b", "r1");
    assert_eq!(
        before["instances"][0]["credential_generation"], 1,
        "{before}"
    );

    let o = c.admin(
        "a",
        &[
            "runners",
            "refresh-credentials",
            "r1",
            "--mode",
            "overlap",
            "--grace",
            "1h",
            "--yes",
            "--output",
            "json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let refreshed: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(refreshed["sessions_closed"], 0);
    let new = refreshed["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{new}\n")).expect("write");
    std::fs::rename(&tmp, &file).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let r = c.show("b", "r1");
        if r["instances"][0]["credential_generation"] == 2 {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "B's session never moved to generation 2: {r}\n{}",
            runner.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        after["instances"][0]["connected_at"], before["instances"][0]["connected_at"],
        "no reconnect"
    );

    let o = c.admin(
        "c",
        &[
            "runners",
            "revoke-previous",
            "r1",
            "--yes",
            "--output",
            "json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let returned = Instant::now();
    while returned.elapsed() < MAX_LAG * 3 {
        for name in ["a", "b", "c"] {
            let started = Instant::now();
            let s = token_status(&c.at(name).url, &client_id, &old);
            assert!(
                s != 200 || started < returned + MAX_LAG,
                "{name} accepted the revoked generation {} ms after revoke-previous returned",
                (started - returned).as_millis()
            );
        }
    }
    let r = c.show("b", "r1");
    assert_eq!(r["status"], "running", "{r}");
    assert_eq!(
        r["instances"][0]["connected_at"], before["instances"][0]["connected_at"],
        "the session on the new generation survives"
    );
    for name in ["a", "b", "c"] {
        assert_eq!(
            token_status(&c.at(name).url, &client_id, &new),
            200,
            "{name}"
        );
    }
}

/// The fenced code blocks of `doc` that follow the first line containing `marker`, up to the next
/// numbered step.
fn guide_blocks(doc: &str, marker: &str) -> Vec<String> {
    let start = doc
        .find(marker)
        .unwrap_or_else(|| panic!("the guide says {marker:?}"));
    let rest = &doc[start..];
    let end = rest[1..]
        .find("\n6. ")
        .or_else(|| rest.find("\n## "))
        .unwrap_or(rest.len());
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in rest[..end].lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(String::new()),
            }
        } else if let Some(block) = current.as_mut() {
            block.push_str(trimmed);
            block.push('\n');
        }
    }
    blocks
}

/// The value after `key:` in `tether` text output.
fn field_of(output: &str, key: &str) -> Option<String> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_owned())
}

fn field(output: &str, key: &str) -> String {
    field_of(output, key).unwrap_or_else(|| panic!("no {key} in {output}"))
}

/// docs/operations/replicas.md as written, steps 2 to 5: its key files, its two `tether server`
/// commands and environment, its HAProxy configuration, and step 5's commands — with free ports
/// for 8080–8082 and a throwaway PostgreSQL for step 1's. The refresh through the replica that
/// does not hold the runner's session cuts it, and `tether runners show` through either port says
/// what the guide says.
#[test]
fn the_replica_guide_works_as_written() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations/replicas.md"
    ))
    .expect("the guide");
    let db = Arc::new(tether_pgtest::TestDatabase::create_blocking());
    let dir = tempfile::tempdir().expect("dir");
    let ports = [free_port(), free_port(), free_port()];
    let localize = |text: &str| {
        text.replace("127.0.0.1:8080", &format!("127.0.0.1:{}", ports[0]))
            .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", ports[1]))
            .replace("127.0.0.1:8082", &format!("127.0.0.1:{}", ports[2]))
            .replace("/var/lib/", &format!("{}/", dir.path().display()))
            .replace(
                "/etc/tether",
                &dir.path().join("keys").display().to_string(),
            )
            .replace(
                "/tmp/build-1",
                &dir.path().join("build-1").display().to_string(),
            )
    };

    // Step 2: the keys, generated as the guide says, and the environment it exports.
    let keys = &guide_blocks(&doc, "2. Keys")[0];
    assert!(keys.contains("head -c 32 /dev/urandom") && keys.contains("chmod 600"));
    let mut env: Vec<(String, String)> = Vec::new();
    for line in keys.lines().map(localize) {
        let line = line.split('#').next().unwrap_or_default().trim().to_owned();
        let line = line.strip_prefix("export ").unwrap_or(&line);
        if !line.starts_with("TETHER_") {
            continue; // install, for, chmod: done below as they say
        }
        for pair in line.split_whitespace().filter(|p| *p != "\\") {
            let (k, v) = pair.split_once('=').expect("NAME=value");
            env.push((k.to_owned(), v.to_owned()));
        }
    }
    // 32 random bytes each, mode 0600, where the guide's paths point.
    key_files(dir.path());
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "TETHER_SIGNING_KEY_FILE",
            "TETHER_PEPPER_FILE",
            "TETHER_MASTER_KEY_FILE",
            "TETHER_DATABASE_URL",
            "TETHER_PUBLIC_URL"
        ],
        "the environment step 2 exports"
    );
    for (k, v) in env.iter_mut() {
        if k == "TETHER_DATABASE_URL" {
            *v = db.url().to_owned();
        }
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    // Step 3: the two replicas, as the guide starts them.
    let servers = &guide_blocks(&doc, "3. Two replicas")[0];
    let mut replicas = Vec::new();
    for line in servers.lines().filter(|l| l.starts_with("tether server")) {
        let line = localize(line);
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[2], "--listen", "{line}");
        assert_eq!(words[4], "--data-dir", "{line}");
        replicas.push(ServerProc::start_replica(
            std::path::Path::new(words[5]),
            words[3],
            &env_refs,
        ));
    }
    assert_eq!(replicas.len(), 2, "step 3 starts two replicas");

    // Step 4: HAProxy with the guide's configuration.
    let cfg = guide_blocks(&doc, "4. HAProxy")
        .into_iter()
        .find(|b| b.contains("frontend tether"))
        .expect("the HAProxy configuration");
    // As the comment there says: under half of the file-descriptor limit (this machine's is
    // 20,000; a smaller one gets a smaller maxconn rather than a balancer that will not start).
    let fds: u64 = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        })
        .and_then(|hard| hard.parse().ok())
        .unwrap_or(20_000);
    assert!(cfg.contains("maxconn 9000"), "{cfg}");
    let cfg = cfg.replace(
        "maxconn 9000",
        &format!("maxconn {}", 9000.min(fds.saturating_sub(200) / 2)),
    );
    let balancer = Haproxy::start_with(ports[0], &localize(&cfg));

    // Step 5, command by command.
    let steps = guide_blocks(&doc, "5. Follow the guide");
    let step = |n: usize, starts: &str| {
        let line = steps[n]
            .lines()
            .find(|l| l.starts_with(starts))
            .unwrap_or_else(|| panic!("step 5 runs {starts:?}"));
        localize(line.split('#').next().unwrap_or_default().trim())
    };
    let admin = [
        ("TETHER_URL", balancer.url.as_str()),
        ("TETHER_TOKEN", ADMIN_TOKEN),
    ];
    let create = step(0, "tether runners create");
    let words: Vec<&str> = create.split_whitespace().collect();
    let o = tether(&words[1..], &admin);
    assert!(o.status.success(), "{create}: {}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout).into_owned();
    let (client_id, secret) = (
        field(&printed, "client_id"),
        field(&printed, "client_secret"),
    );
    let start = step(0, "OAUTH_CLIENT_ID=");
    assert!(start.contains("tether runner --workdir"), "{start}");
    let runner = RunnerProc::start(
        &[
            ("TETHER_URL", balancer.url.clone()),
            ("OAUTH_CLIENT_ID", client_id.clone()),
            ("OAUTH_CLIENT_SECRET", secret.clone()),
            (
                "TETHER_WORKDIR",
                dir.path().join("build-1").display().to_string(),
            ),
        ],
        dir.path().join("runner.log"),
    );
    let show = |port: u16| {
        let url = format!("http://127.0.0.1:{port}");
        let o = tether(
            &["runners", "show", "build-1"],
            &[("TETHER_URL", url.as_str()), ("TETHER_TOKEN", ADMIN_TOKEN)],
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Both replicas show it running, with its instance.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let views = [show(ports[1]), show(ports[2])];
        if views.iter().all(|v| {
            field_of(v, "status").is_some_and(|s| s.starts_with("running"))
                && field_of(v, "instances").as_deref() == Some("1")
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "running everywhere: {views:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Which replica holds the session, as the guide finds out.
    assert!(steps[0].contains("/metrics | grep '^tether_sessions'"));
    let holds = |port: u16| {
        http(
            &format!("http://127.0.0.1:{port}"),
            reqwest::Method::GET,
            "/metrics",
            None,
            None,
        )
        .1
        .lines()
        .any(|l| l == "tether_sessions 1")
    };
    let holder = if holds(ports[1]) { ports[1] } else { ports[2] };
    assert!(holds(holder), "one of the two replicas holds the session");
    let other = if holder == ports[1] {
        ports[2]
    } else {
        ports[1]
    };

    // Through the other replica: refresh, then show through both ports.
    let refresh = step(1, "TETHER_URL=");
    let words: Vec<&str> = refresh.split_whitespace().collect();
    assert_eq!(
        &words[1..],
        [
            "tether",
            "runners",
            "refresh-credentials",
            "build-1",
            "--yes"
        ]
    );
    let other_url = format!("http://127.0.0.1:{other}");
    let o = tether(
        &words[2..],
        &[
            ("TETHER_URL", other_url.as_str()),
            ("TETHER_TOKEN", ADMIN_TOKEN),
        ],
    );
    assert!(o.status.success(), "{refresh}: {}", stderr(&o));
    // The guide's replicas keep the default bound (2 s): the old secret is refused everywhere by then.
    let deadline = Instant::now() + Duration::from_secs(5);
    while [holder, other]
        .iter()
        .any(|p| token_status(&format!("http://127.0.0.1:{p}"), &client_id, &secret) != 401)
    {
        assert!(
            Instant::now() < deadline,
            "the old secret is still accepted somewhere"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let views = [show(holder), show(other)];
        if views.iter().all(|v| {
            field_of(v, "status").is_some_and(|s| s.starts_with("unknown"))
                && v.contains("credentials refreshed at")
                && v.contains("apply the new client_secret and restart the runner")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "what the guide says, on both: {views:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!holds(holder), "the replica holding the session closed it");
    let log = runner.log();
    assert!(
        log.contains("revoked") || log.contains("4401"),
        "the runner was told its credentials were revoked: {log}"
    );
    drop(balancer);
    drop(replicas);
}
