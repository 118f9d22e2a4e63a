//! The guide's "Refresh runner credentials" flow with real processes: a real server, real runner
//! processes reading their secret from a file or from AWS Secrets Manager (the moto emulator), and
//! the CLI. Refresh (revoke) cuts the session at once and shows Unknown with the reason; the
//! revealed secret, written to the runner's secret store, brings the same process back without a
//! restart. Overlap rotates with no disconnect. A crash in the middle of many refreshes leaves
//! every runner with exactly one active generation that authenticates.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::procs::{stderr, stdout, RunnerProc, ServerProc};
use crate::runner::{admin, aws_secret, setup, status, Setup};

fn json(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// A runner process reading its secret from a file in the test directory.
fn file_runner(s: &Setup) -> (RunnerProc, std::path::PathBuf) {
    let file = s.dir.path().join("client_secret");
    std::fs::write(&file, format!("{}\n", s.secret)).expect("secret file");
    let mut env = s.runner_env();
    env.retain(|(k, _)| *k != "OAUTH_CLIENT_SECRET");
    env.push(("OAUTH_CLIENT_SECRET_FILE", file.display().to_string()));
    let runner = RunnerProc::start(&env, s.dir.path().join("file-runner.log"));
    (runner, file)
}

/// Replaces a file the way editors and secret syncers do: write aside, rename over.
fn replace_atomically(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn refused(server: &ServerProc, client_id: &str, secret: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let client = tether_client::Client::new(&server.url, None).expect("client");
        client
            .client_credentials_token(client_id, secret)
            .await
            .is_err()
    })
}

#[test]
fn the_guides_flow_with_a_secret_file_reconnects_the_same_process_without_a_restart() {
    let s = setup("guide-file");
    let (runner, file) = file_runner(&s);
    let (before, _) = s.wait_for(
        "guide-file",
        "running",
        Duration::from_secs(15),
        status("running"),
    );
    let pid = runner.child.id();
    let o = admin(
        &s.server,
        &[
            "runners",
            "refresh-credentials",
            "guide-file",
            "--yes",
            "--output",
            "json",
        ],
    );
    let refreshed = json(&o);
    assert_eq!(refreshed["generation"], 2);
    // The session is cut at once, and the status says why.
    let (r, took) = s.wait_for(
        "guide-file",
        "unknown after refresh",
        Duration::from_secs(5),
        status("unknown"),
    );
    assert!(took <= Duration::from_secs(1), "cut took {took:?}");
    let reason = r["status_reason"].as_str().expect("reason");
    assert!(
        reason.contains("credentials refreshed at")
            && reason.contains("apply the new client_secret"),
        "{reason}"
    );
    assert!(
        refused(&s.server, &s.client_id, &s.secret),
        "old secret refused"
    );
    // Reveal, apply in the runner's secret store (the file), and the same process reconnects.
    let revealed = json(&admin(
        &s.server,
        &["runners", "reveal", "guide-file", "--output", "json"],
    ));
    let secret = revealed["client_secret"].as_str().expect("secret");
    assert_eq!(secret, refreshed["client_secret"].as_str().expect("secret"));
    let applied = Instant::now();
    replace_atomically(&file, &format!("{secret}\n"));
    let (r, _) = s.wait_for(
        "guide-file",
        "running again",
        Duration::from_secs(10),
        status("running"),
    );
    assert!(
        applied.elapsed() <= Duration::from_secs(5),
        "took {:?}",
        applied.elapsed()
    );
    assert_eq!(r["instances"][0]["credential_generation"], 2);
    assert_eq!(
        r["instances"][0]["instance_id"], before["instances"][0]["instance_id"],
        "the same process, not a restart"
    );
    assert_eq!(runner.child.id(), pid);
    assert!(!runner.log().contains(&s.secret) && !runner.log().contains(secret));
}

#[test]
fn the_guides_flow_with_aws_secrets_manager_reconnects_without_a_restart() {
    std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: run the suite with scripts/test, which starts the moto AWS emulator");
    let s = setup("guide-arn");
    let (rt, sdk, arn) = aws_secret(&s, "rotation-test");
    let mut env = s.runner_env();
    env.retain(|(k, _)| *k != "OAUTH_CLIENT_SECRET");
    env.push(("OAUTH_CLIENT_SECRET_ARN", arn.clone()));
    let runner = RunnerProc::start(&env, s.dir.path().join("arn.log"));
    s.wait_for(
        "guide-arn",
        "running",
        Duration::from_secs(15),
        status("running"),
    );
    let refreshed = json(&admin(
        &s.server,
        &[
            "runners",
            "refresh-credentials",
            "guide-arn",
            "--yes",
            "--output",
            "json",
        ],
    ));
    s.wait_for(
        "guide-arn",
        "unknown",
        Duration::from_secs(5),
        status("unknown"),
    );
    let secret = refreshed["client_secret"].as_str().expect("secret");
    // The guide's AWS step: put the new value into the same secret (the ARN does not change).
    rt.block_on(async {
        sdk.put_secret_value()
            .secret_id(&arn)
            .secret_string(
                serde_json::json!({"client_id": s.client_id, "client_secret": secret}).to_string(),
            )
            .send()
            .await
            .expect("put secret value")
    });
    let (r, _) = s.wait_for(
        "guide-arn",
        "running again after the secret was updated",
        Duration::from_secs(20),
        status("running"),
    );
    assert_eq!(r["instances"][0]["credential_generation"], 2);
    assert!(runner.child.id() > 0 && runner.log().contains("OAUTH_CLIENT_SECRET_ARN"));
}

#[test]
fn overlap_rotation_hot_reloads_with_no_disconnect() {
    let s = setup("overlap");
    let (_runner, file) = file_runner(&s);
    let (before, _) = s.wait_for(
        "overlap",
        "running",
        Duration::from_secs(15),
        status("running"),
    );
    let refreshed = json(&admin(
        &s.server,
        &[
            "runners",
            "refresh-credentials",
            "overlap",
            "--mode",
            "overlap",
            "--grace",
            "1h",
            "--yes",
            "--output",
            "json",
        ],
    ));
    assert_eq!(refreshed["sessions_closed"], 0);
    let secret = refreshed["client_secret"].as_str().expect("secret");
    assert!(
        !refused(&s.server, &s.client_id, &s.secret),
        "old secret still works"
    );
    assert!(
        !refused(&s.server, &s.client_id, secret),
        "new secret works"
    );
    replace_atomically(&file, &format!("{secret}\n"));
    let (after, _) = s.wait_for(
        "overlap",
        "the instance moved to generation 2 on its open session",
        Duration::from_secs(10),
        |r| r["instances"][0]["credential_generation"] == 2,
    );
    assert_eq!(after["status"], "running");
    assert_eq!(
        after["instances"][0]["connected_at"], before["instances"][0]["connected_at"],
        "no reconnect"
    );
    let creds = json(&admin(
        &s.server,
        &[
            "runners",
            "revoke-previous",
            "overlap",
            "--yes",
            "--output",
            "json",
        ],
    ));
    assert_eq!(creds["generations"][1]["state"], "revoked");
    std::thread::sleep(Duration::from_millis(1500));
    let r = s.show("overlap");
    assert_eq!(r["status"], "running");
    assert_eq!(
        r["instances"][0]["connected_at"],
        before["instances"][0]["connected_at"]
    );
}

#[test]
fn a_run_in_progress_blocks_a_refresh_until_forced() {
    let s = setup("busy");
    let _runner = s.start_runner("runner");
    s.wait_for(
        "busy",
        "running",
        Duration::from_secs(15),
        status("running"),
    );
    let file = s.dir.path().join("long.yaml");
    std::fs::write(
        &file,
        "name: long\ntasks:\n- name: long\n  run: echo go; sleep 30\n",
    )
    .expect("yaml");
    json_ok(&admin(
        &s.server,
        &["pipelines", "apply", "-f", file.to_str().expect("path")],
    ));
    let run = json(&admin(
        &s.server,
        &[
            "pipelines",
            "run",
            "long",
            "--runner",
            "busy",
            "--output",
            "json",
        ],
    ));
    let id = run["id"].as_str().expect("id");
    let started = Instant::now();
    while json(&admin(&s.server, &["runs", "show", id, "--output", "json"]))["state"] != "running" {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "run never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = admin(
        &s.server,
        &["runners", "refresh-credentials", "busy", "--yes"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains(id) && all.contains("--force"), "{all}");
    let o = admin(
        &s.server,
        &[
            "runners",
            "refresh-credentials",
            "busy",
            "--yes",
            "--force",
            "--output",
            "json",
        ],
    );
    assert_eq!(json(&o)["generation"], 2);
}

fn json_ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", stderr(o));
}

#[test]
fn a_crash_amid_many_refreshes_leaves_every_runner_one_working_active_generation() {
    let mut server = ServerProc::start();
    let env = server.env();
    let token = env[1].1.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let client = tether_client::Client::new(&server.url, Some(token.clone())).expect("client");
    let mut runners = Vec::new();
    for i in 0..10 {
        let created = rt
            .block_on(
                client.create_runner(&tether_protocol::api::CreateRunnerRequest {
                    name: format!("crash-{i}"),
                    platform: "local".into(),
                    description: None,
                }),
            )
            .expect("create");
        runners.push((
            created.runner.name.clone(),
            created.credentials.client_id.clone(),
            created.credentials.client_secret.clone(),
        ));
    }
    // 200 refreshes from 8 concurrent callers; the server is killed part-way through.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls = rt.spawn({
        let (client, done) = (client.clone(), done.clone());
        let names: Vec<String> = runners.iter().map(|r| r.0.clone()).collect();
        async move {
            let mut tasks = Vec::new();
            for worker in 0..8 {
                let (client, names, done) = (client.clone(), names.clone(), done.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..25 {
                        let name = &names[(worker * 25 + i) % names.len()];
                        let req = tether_protocol::api::RefreshRequest {
                            confirm: Some("refresh".into()),
                            ..Default::default()
                        };
                        if client.refresh_credentials(name, &req).await.is_ok() {
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    });
    let started = Instant::now();
    while done.load(std::sync::atomic::Ordering::Relaxed) < 40 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "refreshes are not completing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill_and_restart();
    rt.block_on(calls).expect("calls");
    let completed = done.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        completed < 200,
        "the crash interrupted the refreshes ({completed} done)"
    );
    let client = tether_client::Client::new(&server.url, Some(token)).expect("client");
    let mut refreshed_any = false;
    for (name, client_id, original) in &runners {
        let creds = rt.block_on(client.credentials(name)).expect("credentials");
        let active: Vec<_> = creds
            .generations
            .iter()
            .filter(|g| g.state == "active")
            .collect();
        assert_eq!(active.len(), 1, "{name}: {creds:?}");
        assert_eq!(
            active[0].generation, creds.generations[0].generation,
            "newest is active"
        );
        let secret = if active[0].generation == 1 {
            original.clone()
        } else {
            refreshed_any = true;
            rt.block_on(client.reveal_credentials(name))
                .expect("reveal")
                .client_secret
        };
        assert!(
            !refused(&server, client_id, &secret),
            "{name}: the active generation authenticates"
        );
    }
    assert!(refreshed_any, "some refreshes completed before the crash");
    let audit = rt
        .block_on(client.list_audit(None, Some(200), None))
        .expect("audit");
    let audited = audit
        .events
        .iter()
        .filter(|e| e.action == "credentials.refreshed")
        .count();
    let generations: u64 = runners
        .iter()
        .map(|(name, _, _)| {
            rt.block_on(client.credentials(name))
                .expect("creds")
                .generations
                .len() as u64
                - 1
        })
        .sum();
    assert_eq!(
        audited as u64, generations,
        "one audit event per committed refresh"
    );
}
