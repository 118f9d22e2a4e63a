//! `tether runners apply-credentials` and `tether runners rotate` end to end: a real server
//! process, real runner processes reading their secret from AWS Secrets Manager
//! (`OAUTH_CLIENT_SECRET_ARN`), the moto emulator for Secrets Manager and ECS (started by
//! scripts/test, reached through `AWS_ENDPOINT_URL`), and fake `helm` / `az` / `snowsql` programs
//! on PATH for the other platforms' `--execute`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{ContainerDefinition, KeyValuePair, Secret};
use serde_json::Value;

use crate::procs::{stderr, stdout, RunnerProc, ADMIN_TOKEN, BIN};
use crate::runner::{admin, aws_secret, setup_on, status, Setup};

fn moto() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: run the suite with scripts/test, which starts the moto AWS emulator",
    )
}

/// Runs `tether` against the setup's server with the AWS settings of this process, extra
/// environment (may override PATH) and optional standard input.
fn cli(s: &Setup, args: &[&str], env: &[(&str, &str)], input: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TETHER_URL", &s.server.url)
        .env("TETHER_TOKEN", ADMIN_TOKEN)
        .env("TETHER_CONFIG_DIR", s.dir.path().join("cfg"));
    for k in [
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    ] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    cmd.envs(env.iter().copied())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("tether runs");
    if let Some(text) = input {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("output")
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// Exit code 1 and one line on stderr, which is returned.
fn one_line_error(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "stdout: {}", stdout(o));
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert_eq!(err.trim_end().lines().last(), Some(lines[0]), "{err}");
    lines[0].to_owned()
}

fn refresh(s: &Setup, runner: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "runners",
        "refresh-credentials",
        runner,
        "--yes",
        "--output",
        "json",
    ];
    args.extend(extra);
    json(&admin(&s.server, &args))
}

fn refused(s: &Setup, secret: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        tether_client::Client::new(&s.server.url, None)
            .expect("client")
            .client_credentials_token(&s.client_id, secret)
            .await
            .is_err()
    })
}

/// A runner process reading its secret from Secrets Manager, re-read every second.
fn arn_runner(s: &Setup, arn: &str, label: &str) -> RunnerProc {
    let mut env = s.runner_env();
    env.retain(|(k, _)| *k != "OAUTH_CLIENT_SECRET");
    env.push(("OAUTH_CLIENT_SECRET_ARN", arn.to_owned()));
    env.push(("TETHER_SECRET_REFRESH_SECONDS", "1".to_owned()));
    env.push((
        "TETHER_WORKDIR",
        s.dir
            .path()
            .join(format!("work-{label}"))
            .display()
            .to_string(),
    ));
    RunnerProc::start(&env, s.dir.path().join(format!("{label}.log")))
}

fn secret_value(
    rt: &tokio::runtime::Runtime,
    sdk: &aws_sdk_secretsmanager::Client,
    id: &str,
) -> String {
    rt.block_on(sdk.get_secret_value().secret_id(id).send())
        .expect("get secret value")
        .secret_string()
        .expect("string")
        .to_owned()
}

/// An ECS cluster, task definition and service in moto, like the CloudFormation template makes.
struct Ecs {
    client: aws_sdk_ecs::Client,
    cluster: String,
    service: String,
}

impl Ecs {
    /// `hot_reload`: the container gets OAUTH_CLIENT_SECRET_ARN (the runner reads the secret);
    /// otherwise ECS injects OAUTH_CLIENT_SECRET from `<arn>:client_secret::` at task start.
    fn create(rt: &tokio::runtime::Runtime, s: &Setup, arn: &str, hot_reload: bool) -> Self {
        let client = rt.block_on(async {
            aws_sdk_ecs::Client::new(&tether_runner::secret::aws_sdk_config().await)
        });
        let suffix = s.client_id.to_lowercase();
        let cluster = format!("tether-{suffix}");
        let service = "tether-runner".to_owned();
        let mut container = ContainerDefinition::builder()
            .name("runner")
            .image("tether:0.1.0")
            .memory(512)
            .command("runner")
            .environment(
                KeyValuePair::builder()
                    .name("OAUTH_CLIENT_ID")
                    .value(&s.client_id)
                    .build(),
            );
        container = if hot_reload {
            container.environment(
                KeyValuePair::builder()
                    .name("OAUTH_CLIENT_SECRET_ARN")
                    .value(arn)
                    .build(),
            )
        } else {
            container.secrets(
                Secret::builder()
                    .name("OAUTH_CLIENT_SECRET")
                    .value_from(format!("{arn}:client_secret::"))
                    .build()
                    .expect("secret"),
            )
        };
        rt.block_on(async {
            client
                .create_cluster()
                .cluster_name(&cluster)
                .send()
                .await
                .expect("create cluster");
            let td = client
                .register_task_definition()
                .family(format!("tether-runner-{suffix}"))
                .container_definitions(container.build())
                .send()
                .await
                .expect("register task definition");
            let td_arn = td
                .task_definition()
                .and_then(|t| t.task_definition_arn())
                .expect("task definition arn")
                .to_owned();
            client
                .create_service()
                .cluster(&cluster)
                .service_name(&service)
                .task_definition(td_arn)
                .desired_count(2)
                .send()
                .await
                .expect("create service");
        });
        Self {
            client,
            cluster,
            service,
        }
    }

    /// The PRIMARY deployment's id and creation time.
    fn primary(&self, rt: &tokio::runtime::Runtime) -> (String, String) {
        let out = rt
            .block_on(
                self.client
                    .describe_services()
                    .cluster(&self.cluster)
                    .services(&self.service)
                    .send(),
            )
            .expect("describe services");
        let svc = &out.services()[0];
        let d = svc
            .deployments()
            .iter()
            .find(|d| d.status() == Some("PRIMARY"))
            .expect("primary deployment");
        (
            d.id().expect("id").to_owned(),
            format!("{:?}", d.created_at()),
        )
    }
}

/// Refreshes `runner` in overlap mode (nothing is cut) and returns the new client_secret.
fn overlap_secret(s: &Setup, runner: &str) -> String {
    refresh(s, runner, &["--mode", "overlap", "--grace", "1h"])["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned()
}

#[test]
fn apply_credentials_on_aws_writes_the_secret_redeploys_ecs_and_the_runner_is_back_without_a_restart(
) {
    moto();
    let s = setup_on("apply-aws", "aws_fargate");
    let (rt, sdk, arn) = aws_secret(&s, "apply");
    let ecs = Ecs::create(&rt, &s, &arn, false);
    let deployment_before = ecs.primary(&rt);
    let mut runner = arn_runner(&s, &arn, "runner");
    let (before, _) = s.wait_for(
        "apply-aws",
        "running",
        Duration::from_secs(15),
        status("running"),
    );
    // The guide: refresh (revoke) cuts the runner off.
    let refreshed = refresh(&s, "apply-aws", &[]);
    let new_secret = refreshed["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    s.wait_for(
        "apply-aws",
        "unknown after the refresh",
        Duration::from_secs(5),
        status("unknown"),
    );

    let o = cli(
        &s,
        &[
            "runners",
            "apply-credentials",
            "apply-aws",
            "--platform",
            "aws",
            "--secret-id",
            &arn,
            "--cluster",
            &ecs.cluster,
            "--service",
            &ecs.service,
        ],
        &[],
        None,
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    for step in [
        "1. Read AWS secret arn:aws:secretsmanager:",
        "it holds JSON with this runner's client_id",
        "2. Took generation 2's client_secret from the reveal endpoint",
        "3. Wrote generation 2's client_secret into AWS secret",
        &format!("client_secret replaced, client_id {} kept", s.client_id),
        "4. Read it back: the current version",
        &format!(
            "5. Forced a new deployment of ECS service {} in cluster {}",
            ecs.service, ecs.cluster
        ),
        "`tether runners show apply-aws`",
    ] {
        assert!(out.contains(step), "{step:?} in {out}");
    }
    assert!(
        !out.contains(&new_secret) && !stderr(&o).contains(&new_secret),
        "the secret is never printed"
    );

    // The secret holds the new client_secret and still the client_id.
    let stored: Value = serde_json::from_str(&secret_value(&rt, &sdk, &arn)).expect("json");
    assert_eq!(stored["client_id"], s.client_id.as_str());
    assert_eq!(stored["client_secret"], new_secret.as_str());
    // ECS made a new deployment.
    let deployment_after = ecs.primary(&rt);
    assert_ne!(deployment_after, deployment_before, "a new deployment");
    assert!(out.contains(&deployment_after.0), "{out}");

    // The same runner process re-read the secret and is back on generation 2.
    let (r, _) = s.wait_for(
        "apply-aws",
        "running again on generation 2",
        Duration::from_secs(20),
        |r| r["status"] == "running" && r["instances"][0]["credential_generation"] == 2,
    );
    assert_eq!(
        r["instances"][0]["instance_id"], before["instances"][0]["instance_id"],
        "the same process, not a restart"
    );
    assert_eq!(runner.wait_exit(Duration::ZERO), None, "still running");
    assert!(!runner.log().contains(&new_secret));
}

#[test]
fn apply_credentials_detects_hot_reload_keeps_a_plain_string_and_refuses_another_runners_secret() {
    moto();
    let s = setup_on("apply-hot", "aws_fargate");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let sdk = rt.block_on(async {
        aws_sdk_secretsmanager::Client::new(&tether_runner::secret::aws_sdk_config().await)
    });
    let create = |name: String, value: String| -> String {
        rt.block_on(sdk.create_secret().name(name).secret_string(value).send())
            .expect("create secret")
            .arn()
            .expect("arn")
            .to_owned()
    };
    let plain = create(format!("tether/plain/{}", s.client_id), s.secret.clone());
    let ecs = Ecs::create(&rt, &s, &plain, true);
    let deployment_before = ecs.primary(&rt);
    let refreshed = refresh(&s, "apply-hot", &["--mode", "overlap", "--grace", "1h"]);
    let new_secret = refreshed["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();

    // The secret from standard input; the task definition says the runner reloads it itself.
    let o = cli(
        &s,
        &[
            "runners",
            "apply-credentials",
            "apply-hot",
            "--secret-id",
            &plain,
            "--cluster",
            &ecs.cluster,
            "--service",
            &ecs.service,
            "--secret-stdin",
        ],
        &[],
        Some(&format!("{new_secret}\n")),
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("it holds a plain string"), "{out}");
    assert!(out.contains("from standard input"), "{out}");
    assert!(out.contains("as a plain string, as it was"), "{out}");
    assert!(
        out.contains("5. No restart needed: ECS service tether-runner runs task definition")
            && out.contains("container 'runner' reads the secret itself (OAUTH_CLIENT_SECRET_ARN)"),
        "{out}"
    );
    assert!(!out.contains(&new_secret));
    assert_eq!(
        secret_value(&rt, &sdk, &plain),
        new_secret,
        "still a plain string"
    );
    assert_eq!(ecs.primary(&rt), deployment_before, "no new deployment");

    // --hot-reload: nothing is asked of ECS, nothing is restarted.
    let o = cli(
        &s,
        &[
            "runners",
            "apply-credentials",
            "apply-hot",
            "--platform",
            "aws",
            "--secret-id",
            &plain,
            "--hot-reload",
            "--output",
            "json",
        ],
        &[],
        None,
    );
    let summary = json(&o);
    assert_eq!(summary["restart"]["restart"], "hot_reload_declared");
    assert_eq!(summary["generation"], 2);
    assert_eq!(summary["format"], "a plain string");
    assert!(
        stderr(&o).contains("No restart needed (--hot-reload)"),
        "{}",
        stderr(&o)
    );

    // Another runner's secret, and a secret that is not a runner's at all: refused, untouched.
    let foreign = r#"{"client_id":"tcid_0123456789abcdefghijkl","client_secret":"tcs_x"}"#;
    let other = create(format!("tether/other/{}", s.client_id), foreign.to_owned());
    let password = create(format!("db/password/{}", s.client_id), "hunter2".to_owned());
    for (id, says) in [
        (
            &other,
            "holds the credentials of client_id tcid_0123456789abcdefghijkl",
        ),
        (&password, "holds neither JSON"),
    ] {
        let o = cli(
            &s,
            &[
                "runners",
                "apply-credentials",
                "apply-hot",
                "--secret-id",
                id,
            ],
            &[],
            None,
        );
        let err = one_line_error(&o);
        assert!(
            err.contains(says) && err.contains("nothing was written"),
            "{err}"
        );
        assert!(
            !err.contains("hunter2") && !err.contains(&new_secret),
            "{err}"
        );
    }
    assert_eq!(secret_value(&rt, &sdk, &other), foreign);
    assert_eq!(secret_value(&rt, &sdk, &password), "hunter2");

    // Wrong secret id: one line, says what to check.
    let o = cli(
        &s,
        &[
            "runners",
            "apply-credentials",
            "apply-hot",
            "--secret-id",
            "tether/no-such-secret",
        ],
        &[],
        None,
    );
    let err = one_line_error(&o);
    assert!(
        err.contains("ResourceNotFoundException") && err.contains("check --secret-id"),
        "{err}"
    );
}

#[test]
fn rotate_moves_two_instances_to_the_new_secret_with_no_disconnect_while_a_pipeline_runs() {
    moto();
    let s = setup_on("rotate", "aws_fargate");
    let (rt, sdk, arn) = aws_secret(&s, "rotate");
    let a = arn_runner(&s, &arn, "a");
    let b = arn_runner(&s, &arn, "b");
    s.wait_for("rotate", "two instances", Duration::from_secs(15), |r| {
        r["status"] == "running" && r["instances"].as_array().is_some_and(|i| i.len() == 2)
    });
    let file = s.dir.path().join("slow.yaml");
    std::fs::write(
        &file,
        "name: slow\ntasks:\n- name: slow\n  run: sleep 4; echo done\n",
    )
    .expect("yaml");
    assert!(admin(
        &s.server,
        &["pipelines", "apply", "-f", file.to_str().expect("path")]
    )
    .status
    .success());
    let run = json(&admin(
        &s.server,
        &[
            "pipelines",
            "run",
            "slow",
            "--runner",
            "rotate",
            "--output",
            "json",
        ],
    ));
    let run_id = run["id"].as_str().expect("id").to_owned();
    let run_state = || {
        json(&admin(
            &s.server,
            &["runs", "show", &run_id, "--output", "json"],
        ))["state"]
            .as_str()
            .expect("state")
            .to_owned()
    };
    let started = Instant::now();
    while run_state() != "running" {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = s.show("rotate");
    let sessions = |r: &Value| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = r["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|i| {
                (
                    i["instance_id"].as_str().expect("id").to_owned(),
                    i["connected_at"].as_str().expect("connected_at").to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };

    let o = cli(
        &s,
        &[
            "runners",
            "rotate",
            "rotate",
            "--platform",
            "aws",
            "--secret-id",
            &arn,
            "--timeout",
            "60s",
            "--yes",
        ],
        &[],
        None,
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    for step in [
        "1. Checked AWS secret",
        "2. Refreshed in overlap mode: generation 2 is active; generation 1 keeps working until",
        "nothing was disconnected and the 1 running pipeline run(s) go on",
        "3. Wrote generation 2's client_secret into AWS secret",
        "4. Read it back",
        "5. All 2 live instance(s) use generation 2",
        "on their open sessions",
        "6. Revoked generation 1",
        "Rotated runner 'rotate' to generation 2 with no disconnect.",
    ] {
        assert!(out.contains(step), "{step:?} in {out}");
    }
    assert!(stderr(&o).contains("About to rotate"), "{}", stderr(&o));

    // The old secret is refused now; the new one is in the store and works.
    let stored: Value = serde_json::from_str(&secret_value(&rt, &sdk, &arn)).expect("json");
    let new_secret = stored["client_secret"].as_str().expect("secret");
    assert_ne!(new_secret, s.secret);
    assert_eq!(stored["client_id"], s.client_id.as_str());
    assert!(refused(&s, &s.secret), "the old secret is refused");
    assert!(!refused(&s, new_secret), "the new secret works");
    assert!(!out.contains(new_secret) && !stderr(&o).contains(new_secret));

    // Never disconnected: the same sessions, both on generation 2.
    let after = s.show("rotate");
    assert_eq!(after["status"], "running");
    assert_eq!(
        sessions(&after),
        sessions(&before),
        "same sessions: {after}"
    );
    for i in after["instances"].as_array().expect("instances") {
        assert_eq!(i["credential_generation"], 2, "{after}");
    }
    let creds = json(&admin(
        &s.server,
        &["runners", "credentials", "rotate", "--output", "json"],
    ));
    assert_eq!(creds["generations"][0]["state"], "active");
    assert_eq!(creds["generations"][1]["state"], "revoked");

    // The pipeline that ran through the rotation succeeded.
    let started = Instant::now();
    loop {
        let state = run_state();
        if state == "succeeded" {
            break;
        }
        assert!(
            state == "running" && started.elapsed() < Duration::from_secs(20),
            "run {run_id} is {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        sessions(&s.show("rotate")),
        sessions(&before),
        "still the same sessions"
    );
    assert!(!a.log().contains(new_secret) && !b.log().contains(new_secret));

    // The audit log tells the rotation as one story: every step carries the same rotation id.
    let audit = json(&admin(
        &s.server,
        &[
            "audit", "list", "--runner", "rotate", "--limit", "100", "--output", "json",
        ],
    ));
    let events = audit["events"].as_array().expect("events");
    let started = events
        .iter()
        .find(|e| e["action"] == "rotation.started")
        .expect("rotation.started");
    let rotation = started["detail"]["rotation_id"]
        .as_str()
        .expect("rotation id");
    let mut steps: Vec<&str> = events
        .iter()
        .filter(|e| e["detail"]["rotation_id"] == rotation)
        .filter_map(|e| e["action"].as_str())
        .collect();
    steps.reverse();
    assert_eq!(
        steps,
        [
            "rotation.started",
            "credentials.refreshed",
            "rotation.secret_written",
            "rotation.instances_moved",
            "credentials.previous_revoked",
            "rotation.completed"
        ],
        "{audit}"
    );
}

#[test]
fn rotate_with_a_wrong_secret_id_changes_nothing_and_says_what_to_do() {
    moto();
    let s = setup_on("rotate-wrong", "aws_fargate");
    let o = cli(
        &s,
        &[
            "runners",
            "rotate",
            "rotate-wrong",
            "--platform",
            "aws",
            "--secret-id",
            "tether/rotate-wrong/does-not-exist",
            "--yes",
        ],
        &[],
        None,
    );
    let err = one_line_error(&o);
    for part in [
        "cannot read AWS secret tether/rotate-wrong/does-not-exist",
        "ResourceNotFoundException",
        "nothing was changed and the runner keeps its current secret",
        "check --secret-id",
        "run the rotation again",
    ] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    assert!(!refused(&s, &s.secret), "the old secret still works");
    let creds = json(&admin(
        &s.server,
        &["runners", "credentials", "rotate-wrong", "--output", "json"],
    ));
    let generations = creds["generations"].as_array().expect("generations");
    assert_eq!(generations.len(), 1, "no new generation: {creds}");
    assert_eq!(generations[0]["state"], "active");
}

#[test]
fn rotate_that_times_out_keeps_the_old_secret_working_and_says_what_to_do() {
    moto();
    let s = setup_on("rotate-slow", "aws_fargate");
    let (rt, sdk, arn) = aws_secret(&s, "rotate-slow");
    // This runner got its secret as a value (OAUTH_CLIENT_SECRET): it never reloads.
    let _runner = s.start_runner("value");
    let (before, _) = s.wait_for(
        "rotate-slow",
        "running",
        Duration::from_secs(15),
        status("running"),
    );
    let o = cli(
        &s,
        &[
            "runners",
            "rotate",
            "rotate-slow",
            "--platform",
            "aws",
            "--secret-id",
            &arn,
            "--timeout",
            "2s",
            "--yes",
        ],
        &[],
        None,
    );
    let err = one_line_error(&o);
    let out = stdout(&o);
    assert!(
        out.contains("4. Read it back") && !out.contains("Revoked"),
        "{out}"
    );
    assert!(
        out.contains("waiting: 0 of 1 instance(s) on generation 2"),
        "{out}"
    );
    for part in [
        "timed out after 2s: 1 instance(s) still on generation 1",
        "nothing revoked",
        "the new secret (generation 2) is in AWS secret",
        "generation 1 keeps working until",
        "tether runners revoke-previous rotate-slow",
        "or the old secret stops working at",
    ] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    // The old secret still works and the runner was left alone.
    assert!(!refused(&s, &s.secret));
    let creds = json(&admin(
        &s.server,
        &["runners", "credentials", "rotate-slow", "--output", "json"],
    ));
    assert_eq!(creds["generations"][0]["state"], "active");
    assert_eq!(creds["generations"][1]["state"], "retiring", "{creds}");
    let r = s.show("rotate-slow");
    assert_eq!(r["status"], "running");
    assert_eq!(
        r["instances"][0]["connected_at"],
        before["instances"][0]["connected_at"]
    );
    // What it says is true: the new secret is in the store.
    let revealed = json(&admin(
        &s.server,
        &["runners", "reveal", "rotate-slow", "--output", "json"],
    ));
    let stored: Value = serde_json::from_str(&secret_value(&rt, &sdk, &arn)).expect("json");
    assert_eq!(stored["client_secret"], revealed["client_secret"]);
    assert!(!err.contains(revealed["client_secret"].as_str().expect("secret")));
}

/// A directory with fake programs that log their arguments (one per line) to `<name>.args`.
fn fake_tools(dir: &Path, scripts: &[(&str, &str)]) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    for (name, body) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    format!("{}:/usr/bin:/bin", bin.display())
}

#[test]
fn apply_credentials_for_gcp_prints_the_helm_steps_and_runs_them_with_execute() {
    let s = setup_on("apply-gke", "gke");
    let secret = overlap_secret(&s, "apply-gke");

    // The platform comes from the runner's registration; the release and namespace are the chart's.
    let o = cli(
        &s,
        &["runners", "apply-credentials", "apply-gke"],
        &[],
        None,
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    for part in [
        "Apply generation 2 of runner 'apply-gke' on Google Kubernetes Engine (Helm):",
        "In values-gcp.yaml, set `config.oauthClientSecret` to the new client_secret",
        &format!("(`config.oauthClientId` stays {})", s.client_id),
        "       helm upgrade tether-runner . --namespace tether-runner -f values-gcp.yaml\n",
        "--set-string config.oauthClientSecret=<client_secret>",
        "`tether runners reveal apply-gke` shows it until",
        "add --execute",
    ] {
        assert!(out.contains(part), "{part:?} in {out}");
    }
    assert!(!out.contains(&secret));
    let o = cli(
        &s,
        &[
            "runners",
            "apply-credentials",
            "apply-gke",
            "--platform",
            "gcp",
            "--release",
            "prod-runner",
            "--namespace",
            "runners",
        ],
        &[],
        None,
    );
    assert!(
        stdout(&o).contains("helm upgrade prod-runner . --namespace runners -f values-gcp.yaml"),
        "{}",
        stdout(&o)
    );
    // Flags of another platform are refused rather than ignored.
    let err = one_line_error(&cli(
        &s,
        &[
            "runners",
            "apply-credentials",
            "apply-gke",
            "--cluster",
            "c",
            "--service",
            "s",
        ],
        &[],
        None,
    ));
    assert!(
        err.contains("--cluster does not apply to --platform gcp"),
        "{err}"
    );

    // --execute without helm on PATH: says so, exit 1.
    let empty = s.dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    let err = one_line_error(&cli(
        &s,
        &["runners", "apply-credentials", "apply-gke", "--execute"],
        &[("PATH", empty.to_str().expect("path"))],
        None,
    ));
    assert!(
        err.contains("--execute needs `helm`, which is not on PATH"),
        "{err}"
    );

    // --execute with helm: the values file gets the secret, then helm upgrade runs with it.
    let values = s.dir.path().join("values-gcp.yaml");
    let original = format!(
        "# GKE values\nconfig:\n  url: https://tether.example.com\n  oauthClientId: {}\n  oauthClientSecret: \"{}\"\nreplicaCount: 2\n",
        s.client_id, s.secret
    );
    std::fs::write(&values, &original).expect("values");
    let log = s.dir.path().join("helm.log");
    let path = fake_tools(
        s.dir.path(),
        &[(
            "helm",
            &format!(
                "printf '%s\\n' \"$@\" > {log}; grep oauthClientSecret \"$7\" >> {log}",
                log = log.display()
            ),
        )],
    );
    let values_arg = values.display().to_string();
    let o = cli(
        &s,
        &[
            "runners",
            "apply-credentials",
            "apply-gke",
            "--values",
            &values_arg,
            "--execute",
        ],
        &[("PATH", &path)],
        None,
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(
        out.contains("1. Took generation 2's client_secret from the reveal endpoint"),
        "{out}"
    );
    assert!(
        out.contains(&format!("2. Set config.oauthClientSecret in {values_arg}.")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "3. Upgraded the release, which rolls the pods: helm upgrade tether-runner . --namespace tether-runner -f {values_arg}"
        )),
        "{out}"
    );
    assert!(!out.contains(&secret) && !stderr(&o).contains(&secret));
    assert_eq!(
        std::fs::read_to_string(&values).expect("values"),
        original.replace(&s.secret, &secret),
        "only the secret line changed"
    );
    let called = std::fs::read_to_string(&log).expect("helm ran");
    assert_eq!(
        called,
        format!(
            "upgrade\ntether-runner\n.\n--namespace\ntether-runner\n-f\n{values_arg}\n  oauthClientSecret: \"{secret}\"\n"
        ),
        "helm ran after the file was edited"
    );

    // helm fails: one line with its last error line, exit 1.
    let path = fake_tools(
        s.dir.path(),
        &[(
            "helm",
            "echo 'Error: UPGRADE FAILED: cluster unreachable' >&2; exit 3",
        )],
    );
    let err = one_line_error(&cli(
        &s,
        &[
            "runners",
            "apply-credentials",
            "apply-gke",
            "--values",
            &values_arg,
            "--execute",
        ],
        &[("PATH", &path)],
        None,
    ));
    assert!(
        err.contains("helm upgrade tether-runner")
            && err.contains("failed (exit code 3): Error: UPGRADE FAILED: cluster unreachable"),
        "{err}"
    );
}

#[test]
fn apply_credentials_for_azure_and_snowflake_prints_and_executes_their_steps() {
    let s = setup_on("apply-az", "azure_container_app");
    let secret = overlap_secret(&s, "apply-az");
    let o = cli(
        &s,
        &[
            "runners",
            "apply-credentials",
            "apply-az",
            "--resource-group",
            "rg-tether",
        ],
        &[],
        None,
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    for part in [
        "az containerapp secret set --name apply-az --resource-group rg-tether \\\n",
        "--secrets tether-client-secret=<client_secret>",
        "az containerapp revision restart --name apply-az --resource-group rg-tether",
    ] {
        assert!(out.contains(part), "{part:?} in {out}");
    }
    let err = one_line_error(&cli(
        &s,
        &["runners", "apply-credentials", "apply-az", "--execute"],
        &[("PATH", &fake_tools(s.dir.path(), &[("az", "exit 0")]))],
        None,
    ));
    assert!(err.contains("needs --resource-group"), "{err}");

    let log = s.dir.path().join("az.log");
    let path = fake_tools(
        s.dir.path(),
        &[(
            "az",
            &format!(
                "echo \"$*\" >> {}; if [ \"$2\" = show ]; then echo apply-az--rev7; fi",
                log.display()
            ),
        )],
    );
    let o = cli(
        &s,
        &[
            "runners",
            "apply-credentials",
            "apply-az",
            "--platform",
            "azure",
            "--resource-group",
            "rg-tether",
            "--execute",
        ],
        &[("PATH", &path)],
        None,
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(!out.contains(&secret) && !stderr(&o).contains(&secret));
    assert!(
        out.contains("3. Restarted revision apply-az--rev7"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).expect("az ran"),
        format!(
            "containerapp secret set --name apply-az --resource-group rg-tether --secrets tether-client-secret={secret}\n\
             containerapp show --name apply-az --resource-group rg-tether --query properties.latestRevisionName --output tsv\n\
             containerapp revision restart --name apply-az --resource-group rg-tether --revision apply-az--rev7\n"
        )
    );
    // az fails and echoes its arguments: the error names the command without the secret.
    let path = fake_tools(
        s.dir.path(),
        &[("az", "echo \"ERROR: bad request for $*\" >&2; exit 2")],
    );
    let err = one_line_error(&cli(
        &s,
        &[
            "runners",
            "apply-credentials",
            "apply-az",
            "--resource-group",
            "rg-tether",
            "--execute",
        ],
        &[("PATH", &path)],
        None,
    ));
    assert!(
        err.contains("--secrets tether-client-secret=<client_secret>` failed (exit code 2)"),
        "{err}"
    );
    assert!(!err.contains(&secret), "{err}");

    // Snowflake: the SQL with the deploy/snowflake names, run through snowsql from a private file.
    let sf = setup_on("apply-sf", "snowflake");
    let secret = overlap_secret(&sf, "apply-sf");
    let o = cli(
        &sf,
        &["runners", "apply-credentials", "apply-sf"],
        &[],
        None,
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    for part in [
        "ALTER SECRET tether_db.runner.tether_client_secret SET SECRET_STRING = '<client_secret>';",
        "ALTER SERVICE tether_db.runner.tether_runner SUSPEND;",
        "ALTER SERVICE tether_db.runner.tether_runner RESUME;",
    ] {
        assert!(out.contains(part), "{part:?} in {out}");
    }
    let log = sf.dir.path().join("snowsql.log");
    let path = fake_tools(
        sf.dir.path(),
        &[(
            "snowsql",
            &format!(
                "echo \"$*\" > {log}; for last; do :; done; stat -c %a \"$last\" >> {log}; cat \"$last\" >> {log}",
                log = log.display()
            ),
        )],
    );
    let o = cli(
        &sf,
        &[
            "runners",
            "apply-credentials",
            "apply-sf",
            "--connection",
            "prod",
            "--execute",
        ],
        &[("PATH", &path)],
        None,
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(!out.contains(&secret) && !stderr(&o).contains(&secret));
    let called = std::fs::read_to_string(&log).expect("snowsql ran");
    let mut lines = called.lines();
    let args = lines.next().expect("args");
    assert!(
        args.starts_with("-c prod -o exit_on_error=true -o friendly=false -f "),
        "{args}"
    );
    let file = args.rsplit(' ').next().expect("file");
    assert_eq!(lines.next(), Some("600"), "a private file");
    assert_eq!(
        lines.collect::<Vec<_>>().join("\n"),
        format!(
            "ALTER SECRET tether_db.runner.tether_client_secret SET SECRET_STRING = '{secret}';\n\
             ALTER SERVICE tether_db.runner.tether_runner SUSPEND;\n\
             ALTER SERVICE tether_db.runner.tether_runner RESUME;"
        )
    );
    assert!(
        !Path::new(file).exists(),
        "the SQL file with the secret is removed"
    );
}
