//! The credential flow with real runner processes tells the truth about them: each instance's
//! secret source and hot reload, next steps that do not ask a file-source runner to restart,
//! `apply-credentials --platform local` writing the watched file, `revoke-previous` with nothing to
//! revoke, and an overlap refresh while a pipeline runs.

use std::time::Duration;

use serde_json::Value;

use crate::procs::{stderr, stdout, RunnerProc};
use crate::runner::{admin, setup, status, Setup};

/// A runner process reading its secret from a file in the test's directory.
fn start_file_runner(s: &Setup, label: &str) -> (RunnerProc, std::path::PathBuf) {
    let file = s.dir.path().join(format!("{label}.secret"));
    std::fs::write(&file, &s.secret).expect("secret file");
    let mut env = s.runner_env();
    env.retain(|(k, _)| *k != "OAUTH_CLIENT_SECRET");
    env.push(("OAUTH_CLIENT_SECRET_FILE", file.display().to_string()));
    let runner = RunnerProc::start(&env, s.dir.path().join(format!("{label}.log")));
    (runner, file)
}

/// Waits until `name` runs, checks its one instance reports `source` and `hot_reload`; returns it.
fn running_instance(s: &Setup, name: &str, source: &str, hot_reload: bool) -> Value {
    let (shown, _) = s.wait_for(name, "running", Duration::from_secs(15), status("running"));
    let i = shown["instances"][0].clone();
    assert_eq!(
        (i["secret_source"].as_str(), i["hot_reload"].as_bool()),
        (Some(source), Some(hot_reload)),
        "{shown}"
    );
    i
}

fn on_generation(g: u64) -> impl Fn(&Value) -> bool {
    move |r| {
        r["status"] == "running"
            && r["instances"]
                .as_array()
                .is_some_and(|i| !i.is_empty() && i.iter().all(|i| i["credential_generation"] == g))
    }
}

#[test]
fn a_file_runner_is_told_it_reloads_and_apply_credentials_local_moves_it() {
    let s = setup("filer");
    let (_runner, file) = start_file_runner(&s, "filer");
    let i = running_instance(&s, "filer", "file", true);
    let canonical = std::fs::canonicalize(&file).expect("path");
    assert_eq!(
        std::fs::canonicalize(i["secret_file"].as_str().expect("secret_file")).expect("path"),
        canonical
    );

    let o = admin(
        &s.server,
        &["runners", "refresh-credentials", "filer", "--yes"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("All 1 live instance(s) reload the secret by themselves"),
        "{out}"
    );
    assert!(
        !out.contains("Otherwise stop the runner"),
        "a file-source runner must not be told to restart: {out}"
    );
    assert!(
        out.contains(&format!("> {}", i["secret_file"].as_str().expect("file"))),
        "{out}"
    );
    s.wait_for(
        "filer",
        "unknown after the refresh",
        Duration::from_secs(10),
        status("unknown"),
    );

    let o = admin(&s.server, &["runners", "apply-credentials", "filer"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("Wrote it to"), "{out}");
    assert!(
        out.contains("All 1 live instance(s) of 'filer' use generation 2 now."),
        "{out}"
    );
    let (shown, _) = s.wait_for(
        "filer",
        "back on generation 2",
        Duration::from_secs(10),
        on_generation(2),
    );
    assert_eq!(shown["credential_rollout"]["state"], "applied", "{shown}");
    let o = admin(&s.server, &["runners", "show", "filer"]);
    let text = stdout(&o);
    assert!(
        text.contains("applied: 1 instance on generation 2"),
        "{text}"
    );
    assert!(text.contains("reloads by itself (file)"), "{text}");
}

#[test]
fn an_env_runner_is_told_it_needs_a_restart() {
    let s = setup("envy");
    let _runner = s.start_runner("envy");
    running_instance(&s, "envy", "env", false);
    let o = admin(
        &s.server,
        &["runners", "refresh-credentials", "envy", "--yes"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("they need a restart with the new value"),
        "{out}"
    );
    assert!(
        out.contains("Otherwise stop the runner and start it again"),
        "{out}"
    );
}

#[test]
fn revoke_previous_with_nothing_to_revoke_says_so_once_and_succeeds() {
    let s = setup("calm");
    let o = admin(&s.server, &["runners", "revoke-previous", "calm"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "Nothing to revoke: no generation older than 1 of runner 'calm' is still accepted."
    );
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn an_overlap_refresh_while_a_pipeline_runs_succeeds_and_cuts_nothing() {
    let s = setup("busy");
    let _runner = s.start_runner("busy");
    s.wait_for(
        "busy",
        "running",
        Duration::from_secs(15),
        status("running"),
    );
    let pipeline = s.dir.path().join("slow.yaml");
    std::fs::write(
        &pipeline,
        "name: slow\ntasks:\n  - name: wait\n    run: sleep 4\n",
    )
    .expect("yaml");
    let o = admin(
        &s.server,
        &["pipelines", "apply", "-f", pipeline.to_str().expect("path")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = admin(&s.server, &["pipelines", "run", "slow", "--runner", "busy"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Wait until it runs on the instance.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let o = admin(
            &s.server,
            &[
                "runners", "runs", "busy", "--state", "running", "--output", "json",
            ],
        );
        let runs: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        if runs["runs"].as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = admin(
        &s.server,
        &[
            "runners",
            "refresh-credentials",
            "busy",
            "--mode",
            "overlap",
            "--grace",
            "1h",
            "--yes",
        ],
    );
    assert!(
        o.status.success(),
        "an overlap refresh must not be refused: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("an overlap refresh does not interrupt them"),
        "{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).contains("nothing was disconnected"),
        "{}",
        stdout(&o)
    );
    let shown = s.show("busy");
    assert_eq!(shown["status"], "running", "{shown}");
    assert_eq!(shown["credential_rollout"]["state"], "overlap", "{shown}");
}
