//! The runner and the server as real processes: statuses follow what the runner does.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::procs::{stderr, tether, RunnerProc, ServerProc};

pub(crate) struct Setup {
    pub server: ServerProc,
    pub client_id: String,
    pub secret: String,
    pub dir: tempfile::TempDir,
}

pub(crate) fn admin(server: &ServerProc, args: &[&str]) -> std::process::Output {
    let env = server.env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    tether(args, &pairs)
}

pub(crate) fn setup(name: &str) -> Setup {
    setup_on(name, "local")
}

/// A server process with one runner registered on `platform`.
pub(crate) fn setup_on(name: &str, platform: &str) -> Setup {
    let server = ServerProc::start();
    let o = admin(
        &server,
        &[
            "runners",
            "create",
            name,
            "--platform",
            platform,
            "--output",
            "json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let created: Value = serde_json::from_slice(&o.stdout).expect("json");
    Setup {
        client_id: created["credentials"]["client_id"]
            .as_str()
            .expect("id")
            .to_owned(),
        secret: created["credentials"]["client_secret"]
            .as_str()
            .expect("secret")
            .to_owned(),
        server,
        dir: tempfile::tempdir().expect("dir"),
    }
}

impl Setup {
    pub fn runner_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TETHER_URL", self.server.url.clone()),
            ("OAUTH_CLIENT_ID", self.client_id.clone()),
            ("OAUTH_CLIENT_SECRET", self.secret.clone()),
            (
                "TETHER_WORKDIR",
                self.dir.path().join("work").display().to_string(),
            ),
        ]
    }

    pub fn start_runner(&self, label: &str) -> RunnerProc {
        RunnerProc::start(
            &self.runner_env(),
            self.dir.path().join(format!("{label}.log")),
        )
    }

    pub fn show(&self, name: &str) -> Value {
        let o = admin(&self.server, &["runners", "show", name, "--output", "json"]);
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }

    pub fn wait_for(
        &self,
        name: &str,
        what: &str,
        within: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        let started = Instant::now();
        while started.elapsed() < within {
            let r = self.show(name);
            if check(&r) {
                return (r, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{what} within {within:?}: {}", self.show(name));
    }
}

pub(crate) fn status(s: &'static str) -> impl Fn(&Value) -> bool {
    move |r| r["status"] == s
}

fn instances(n: usize) -> impl Fn(&Value) -> bool {
    move |r| r["status"] == "running" && r["instances"].as_array().is_some_and(|i| i.len() == n)
}

#[test]
fn pending_running_then_kill_9_is_unknown_within_three_heartbeats() {
    let s = setup("kill9");
    assert_eq!(s.show("kill9")["status"], "pending");
    let runner = s.start_runner("r");
    let (r, _) = s.wait_for(
        "kill9",
        "running",
        Duration::from_secs(15),
        status("running"),
    );
    assert_eq!(r["instances"][0]["credential_generation"], 1);
    runner.signal("KILL");
    let (r, took) = s.wait_for(
        "kill9",
        "unknown after kill -9",
        Duration::from_secs(10),
        status("unknown"),
    );
    assert!(
        took <= Duration::from_secs(3),
        "heartbeat interval is 1 s; took {took:?}"
    );
    assert!(
        r["status_reason"]
            .as_str()
            .expect("reason")
            .contains("without goodbye"),
        "{r}"
    );
}

#[test]
fn sigterm_says_goodbye_exits_0_and_shows_stopped() {
    let s = setup("term");
    let mut runner = s.start_runner("r");
    s.wait_for(
        "term",
        "running",
        Duration::from_secs(15),
        status("running"),
    );
    runner.signal("TERM");
    assert_eq!(
        runner.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        runner.log()
    );
    s.wait_for("term", "stopped", Duration::from_secs(5), status("stopped"));
    assert!(runner.log().contains("said goodbye"), "{}", runner.log());
}

#[test]
fn two_instances_are_both_listed() {
    let s = setup("pair");
    let _a = s.start_runner("a");
    let _b = s.start_runner("b");
    let (r, _) = s.wait_for(
        "pair",
        "two instances",
        Duration::from_secs(15),
        instances(2),
    );
    let ids: Vec<&str> = r["instances"]
        .as_array()
        .expect("i")
        .iter()
        .map(|i| i["instance_id"].as_str().expect("id"))
        .collect();
    assert_ne!(ids[0], ids[1]);
    let list = String::from_utf8_lossy(&admin(&s.server, &["runners", "list"]).stdout).into_owned();
    assert!(
        list.lines()
            .any(|l| l.starts_with("pair") && l.contains("running")),
        "{list}"
    );
}

#[test]
fn pause_resume_and_restart_from_the_cli() {
    let s = setup("ctl");
    let mut runner = s.start_runner("r");
    s.wait_for("ctl", "running", Duration::from_secs(15), status("running"));
    let p = admin(&s.server, &["runners", "pause", "ctl", "--yes"]);
    assert!(p.status.success(), "{}", stderr(&p));
    s.wait_for("ctl", "paused", Duration::from_secs(5), status("paused"));
    let r = admin(&s.server, &["runners", "resume", "ctl"]);
    assert!(r.status.success(), "{}", stderr(&r));
    s.wait_for(
        "ctl",
        "running again",
        Duration::from_secs(5),
        status("running"),
    );
    let refused = admin(&s.server, &["runners", "pause", "ctl"]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "pause asks for confirmation"
    );

    let restart = admin(&s.server, &["runners", "restart", "ctl"]);
    assert!(restart.status.success(), "{}", stderr(&restart));
    assert_eq!(
        runner.wait_exit(Duration::from_secs(10)),
        Some(0),
        "a drained runner exits 0: {}",
        runner.log()
    );
    let (r, _) = s.wait_for("ctl", "stopped", Duration::from_secs(5), status("stopped"));
    assert!(
        r["status_reason"]
            .as_str()
            .expect("reason")
            .contains("restart requested"),
        "{r}"
    );
}

#[test]
fn deleting_the_runner_disconnects_it_and_it_exits_non_zero() {
    let s = setup("gone");
    let mut runner = s.start_runner("r");
    s.wait_for(
        "gone",
        "running",
        Duration::from_secs(15),
        status("running"),
    );
    assert!(admin(&s.server, &["runners", "delete", "gone", "--yes"])
        .status
        .success());
    let code = runner.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{}", runner.log());
    assert!(
        runner.log().contains("no longer exists"),
        "{}",
        runner.log()
    );
}

#[test]
fn runner_reconnects_by_itself_after_a_server_restart() {
    let mut s = setup("phoenix");
    let _runner = s.start_runner("r");
    s.wait_for(
        "phoenix",
        "running",
        Duration::from_secs(15),
        status("running"),
    );
    s.server.kill_and_restart();
    let (r, _) = s.wait_for(
        "phoenix",
        "running after the restart",
        Duration::from_secs(30),
        status("running"),
    );
    assert_eq!(r["instances"].as_array().expect("instances").len(), 1);
}

#[test]
fn server_sigterm_is_graceful() {
    let mut s = setup("srv");
    let mut runner = s.start_runner("r");
    s.wait_for("srv", "running", Duration::from_secs(15), status("running"));
    s.server.signal("TERM");
    assert_eq!(s.server.wait_exit(Duration::from_secs(10)), Some(0));
    // The runner notices and keeps trying; it does not exit.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        runner.wait_exit(Duration::from_millis(100)),
        None,
        "{}",
        runner.log()
    );
}

#[test]
fn misconfiguration_exits_2_with_one_line_before_any_network_call() {
    let s = setup("conf");
    let file = s.dir.path().join("secret");
    std::fs::write(&file, "tcs_not-a-real-secret").expect("write");
    let url = "http://127.0.0.1:1"; // nothing listens: a network call would hang or fail differently
    let id = s.client_id.as_str();
    let truncated = &s.secret[..s.secret.len() - 2];
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("TETHER_URL", url), ("OAUTH_CLIENT_ID", id)],
            "no client secret",
        ),
        (
            vec![
                ("TETHER_URL", url),
                ("OAUTH_CLIENT_ID", id),
                ("OAUTH_CLIENT_SECRET", &s.secret),
                ("OAUTH_CLIENT_SECRET_ARN", "arn:x"),
            ],
            "more than one",
        ),
        (
            vec![
                ("TETHER_URL", url),
                ("OAUTH_CLIENT_ID", id),
                ("OAUTH_CLIENT_SECRET", truncated),
            ],
            "cut off",
        ),
        (
            vec![
                ("TETHER_URL", url),
                ("OAUTH_CLIENT_ID", id),
                ("OAUTH_CLIENT_SECRET_FILE", "/nonexistent/secret"),
            ],
            "cannot be read",
        ),
        (
            vec![
                ("TETHER_URL", url),
                ("OAUTH_CLIENT_ID", id),
                ("OAUTH_CLIENT_SECRET_FILE", file.to_str().expect("path")),
            ],
            "OAUTH_CLIENT_SECRET_FILE",
        ),
        (
            vec![
                ("TETHER_URL", "not a url"),
                ("OAUTH_CLIENT_ID", id),
                ("OAUTH_CLIENT_SECRET", &s.secret),
            ],
            "TETHER_URL",
        ),
        (
            vec![("OAUTH_CLIENT_ID", id), ("OAUTH_CLIENT_SECRET", &s.secret)],
            "TETHER_URL is not set",
        ),
    ];
    for (env, expected) in cases {
        let started = Instant::now();
        let o = tether(&["runner"], &env);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{env:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(expected),
            "{env:?}: expected '{expected}' in {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

#[test]
fn refused_secret_is_one_actionable_line_not_a_storm() {
    let s = setup("refused");
    let mut env = s.runner_env();
    let wrong = tether_domain::ClientSecret::generate();
    env.retain(|(k, _)| *k != "OAUTH_CLIENT_SECRET");
    env.push(("OAUTH_CLIENT_SECRET", wrong.expose().to_owned()));
    let runner = RunnerProc::start(&env, s.dir.path().join("refused.log"));
    std::thread::sleep(Duration::from_secs(4));
    let log = runner.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused this runner's client credentials"))
        .collect();
    assert_eq!(lines.len(), 1, "one line per burst: {log}");
    assert!(
        lines[0].contains("restart the runner"),
        "actionable: {}",
        lines[0]
    );
    assert!(!log.contains(wrong.expose()), "the secret is never logged");
    // Backoff: a handful of attempts in 4 s, not hundreds.
    let metrics = reqwest_blocking_metrics(&s.server.url);
    let refused: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tether_oauth_tokens_refused_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!((1.0..=6.0).contains(&refused), "{refused} attempts in 4 s");
}

fn reqwest_blocking_metrics(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        reqwest::get(format!("{url}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    })
}

#[test]
fn runner_metrics_endpoint() {
    let s = setup("metrics");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let mut env = s.runner_env();
    env.push(("TETHER_METRICS_LISTEN", format!("127.0.0.1:{port}")));
    let _runner = RunnerProc::start(&env, s.dir.path().join("m.log"));
    s.wait_for(
        "metrics",
        "running",
        Duration::from_secs(15),
        status("running"),
    );
    let started = Instant::now();
    loop {
        let text = reqwest_blocking_metrics(&format!("http://127.0.0.1:{port}"));
        if text.contains("tether_runner_connected 1")
            && !text.contains("tether_runner_last_heartbeat_timestamp_seconds 0\n")
        {
            assert!(text.contains("tether_runner_active_tasks 0"), "{text}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// AWS Secrets Manager source as a real process against the moto emulator started by scripts/test.
#[test]
fn aws_secret_arn_source() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: run the suite with scripts/test, which starts the moto AWS emulator");
    let s = setup("arn");
    let (_rt, _sdk, arn) = aws_secret(&s, "cli-test");
    let mut env = s.runner_env();
    env.retain(|(k, _)| *k != "OAUTH_CLIENT_SECRET");
    env.push(("OAUTH_CLIENT_SECRET_ARN", arn));
    let runner = RunnerProc::start(&env, s.dir.path().join("arn.log"));
    let (shown, _) = s.wait_for(
        "arn",
        "running with the ARN source",
        Duration::from_secs(15),
        status("running"),
    );
    let instance = &shown["instances"][0];
    assert_eq!(instance["secret_source"], "aws_secrets_manager", "{shown}");
    assert_eq!(instance["hot_reload"], true, "{shown}");
    assert!(
        runner.log().contains(&endpoint) || runner.log().contains("OAUTH_CLIENT_SECRET_ARN"),
        "{}",
        runner.log()
    );
}

/// A Secrets Manager secret (in the moto emulator) holding the runner's credentials as JSON, the
/// way the AWS template stores them. Returns a runtime and a client to update it, and its ARN.
pub(crate) fn aws_secret(
    s: &Setup,
    prefix: &str,
) -> (
    tokio::runtime::Runtime,
    aws_sdk_secretsmanager::Client,
    String,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let sdk = rt.block_on(async {
        aws_sdk_secretsmanager::Client::new(&tether_runner::secret::aws_sdk_config().await)
    });
    let arn = rt.block_on(async {
        sdk.create_secret()
            .name(format!("tether/{prefix}/{}", s.client_id))
            .secret_string(
                serde_json::json!({"client_id": s.client_id, "client_secret": s.secret})
                    .to_string(),
            )
            .send()
            .await
            .expect("create secret")
            .arn()
            .expect("arn")
            .to_owned()
    });
    (rt, sdk, arn)
}
