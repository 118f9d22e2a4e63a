//! `tether pipelines ...`, `tether runs ...` and `tether runners runs` against a real server process
//! (and, for following a log, a real runner process).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::procs::{
    admin_command, assert_help, stderr, stdout, tether, RunnerProc, ServerProc, BIN,
};

const NIGHTLY: &str = "\
name: nightly
tasks:
  - name: extract
    run: ./export.sh --since yesterday
    env:
      TARGET: s3://bucket/exports
      PORT: 8080
    timeout_seconds: 900
  - name: notify
    run: echo done
";

/// A syntactically valid UUID that no run has.
const NO_SUCH_RUN: &str = "01900000-0000-7000-8000-000000000000";

fn run(s: &ServerProc, args: &[&str]) -> Output {
    let env = s.env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    tether(args, &pairs)
}

fn json(s: &ServerProc, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let o = run(s, &all);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&o)))
}

/// Runs `tether` with `input` on standard input.
fn run_stdin(s: &ServerProc, args: &[&str], input: &str) -> Output {
    let mut child = admin_command(s)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    child.wait_with_output().expect("output")
}

fn apply_file(s: &ServerProc, yaml: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, yaml).expect("write");
    let path = path.to_str().expect("utf-8 path");
    let mut args = vec!["pipelines", "apply", "-f", path];
    args.extend(extra);
    run(s, &args)
}

fn one_line_error(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "stdout: {}", stdout(o));
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn names(list: &Value, key: &str, field: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key}: {list}"))
        .iter()
        .map(|p| p[field].as_str().expect("string").to_owned())
        .collect()
}

#[test]
fn apply_a_file_then_show_it() {
    let s = ServerProc::start();
    let o = apply_file(&s, NIGHTLY, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("nightly") && out.contains("extract") && out.contains("notify"),
        "{out}"
    );

    let shown = run(&s, &["pipelines", "show", "nightly"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let table = stdout(&shown);
    let extract = table
        .lines()
        .find(|l| l.starts_with("extract"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        extract.contains("900s") && extract.contains("TARGET") && extract.contains("./export.sh"),
        "{table}"
    );
    assert!(
        !table.contains("s3://bucket/exports"),
        "environment values stay out of the table: {table}"
    );

    let p = json(&s, &["pipelines", "show", "nightly"]);
    assert_eq!(p["name"], "nightly");
    assert_eq!(p["tasks"][0]["name"], "extract");
    assert_eq!(p["tasks"][0]["run"], "./export.sh --since yesterday");
    assert_eq!(p["tasks"][0]["env"]["TARGET"], "s3://bucket/exports");
    assert_eq!(p["tasks"][0]["env"]["PORT"], "8080");
    assert_eq!(p["tasks"][0]["timeout_seconds"], 900);
    assert_eq!(p["tasks"][1]["run"], "echo done");
    assert_eq!(p["updated_by"].as_str().map(str::is_empty), Some(false));

    // Applying again replaces the tasks; --name stores it under another name.
    let o = apply_file(
        &s,
        "name: nightly\ntasks:\n  - {name: only, run: 'true'}\n",
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let p = json(&s, &["pipelines", "show", "nightly"]);
    assert_eq!(names(&p, "tasks", "name"), ["only"]);
    let o = apply_file(&s, NIGHTLY, &["--name", "nightly-staging"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        json(&s, &["pipelines", "show", "nightly-staging"])["tasks"][0]["name"],
        "extract"
    );
}

#[test]
fn apply_from_stdin() {
    let s = ServerProc::start();
    let o = run_stdin(
        &s,
        &["pipelines", "apply", "-f", "-", "--name", "from-stdin"],
        "tasks:\n  - name: hello\n    run: echo hello\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let p = json(&s, &["pipelines", "show", "from-stdin"]);
    assert_eq!(p["tasks"][0]["run"], "echo hello");

    // JSON is YAML too, and --output json prints the stored pipeline.
    let o = run_stdin(
        &s,
        &["pipelines", "apply", "-f", "-", "--output", "json"],
        r#"{"name": "as-json", "tasks": [{"name": "a", "run": "true", "timeout_seconds": 5}]}"#,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let p: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(p["name"], "as-json");
    assert_eq!(p["tasks"][0]["timeout_seconds"], 5);

    // No name in the file and no --name.
    let o = run_stdin(
        &s,
        &["pipelines", "apply", "-f", "-"],
        "tasks:\n  - {name: a, run: 'true'}\n",
    );
    let err = one_line_error(&o);
    assert!(err.contains("--name"), "{err}");
}

#[test]
fn unknown_keys_are_an_error_naming_the_key() {
    let s = ServerProc::start();
    let o = apply_file(
        &s,
        "name: typo\ntasks:\n  - name: a\n    run: 'true'\n    retries: 3\n",
        &[],
    );
    let err = one_line_error(&o);
    assert!(err.contains("`retries`") && err.contains("line 5"), "{err}");
    let gone = run(&s, &["pipelines", "show", "typo"]);
    assert!(
        one_line_error(&gone).contains("pipeline_not_found"),
        "nothing was stored"
    );

    let o = apply_file(&s, "name: typo\ntimeout: 5\ntasks: []\n", &[]);
    let err = one_line_error(&o);
    assert!(err.contains("`timeout`") && err.contains("line 2"), "{err}");
}

#[test]
fn invalid_yaml_says_which_line() {
    let s = ServerProc::start();
    let o = apply_file(
        &s,
        "name: x\ntasks:\n  - name: a\n    run: make\n  env: {}\n",
        &[],
    );
    let err = one_line_error(&o);
    assert!(
        err.contains("pipeline.yaml") && err.contains("line 5"),
        "{err}"
    );

    let missing = run(&s, &["pipelines", "apply", "-f", "/nonexistent/p.yaml"]);
    assert!(
        one_line_error(&missing).contains("/nonexistent/p.yaml"),
        "names the file"
    );

    // What the server refuses comes back as one line too.
    let o = apply_file(&s, "name: empty\ntasks: []\n", &[]);
    assert!(one_line_error(&o).contains("invalid_field"));
}

#[test]
fn list_and_delete() {
    let s = ServerProc::start();
    let empty = json(&s, &["pipelines", "list"]);
    assert_eq!(empty["pipelines"].as_array().map(Vec::len), Some(0));
    for name in ["alpha", "beta"] {
        let o = apply_file(&s, NIGHTLY, &["--name", name]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let mut listed = names(&json(&s, &["pipelines", "list"]), "pipelines", "name");
    listed.sort();
    assert_eq!(listed, ["alpha", "beta"]);
    let table = stdout(&run(&s, &["pipelines", "list"]));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("alpha") && l.contains(" 2 ")),
        "{table}"
    );

    let refused = run(&s, &["pipelines", "delete", "alpha"]);
    assert!(one_line_error(&refused).contains("--yes"));
    let del = run(&s, &["pipelines", "delete", "alpha", "--yes"]);
    assert!(del.status.success(), "{}", stderr(&del));
    let gone = run(&s, &["pipelines", "show", "alpha"]);
    assert!(one_line_error(&gone).contains("pipeline_not_found"));
    assert_eq!(
        names(&json(&s, &["pipelines", "list"]), "pipelines", "name"),
        ["beta"]
    );
}

#[test]
fn an_unknown_run_is_run_not_found() {
    let s = ServerProc::start();
    let o = run(&s, &["runs", "show", NO_SUCH_RUN]);
    assert!(!o.status.success());
    assert!(one_line_error(&o).contains("run_not_found"));
}

#[test]
fn a_run_on_a_runner_without_instances_stays_queued() {
    let s = ServerProc::start();
    let o = run(&s, &["runners", "create", "idle", "--platform", "local"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = apply_file(&s, NIGHTLY, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    let started = run(&s, &["pipelines", "run", "nightly", "--runner", "idle"]);
    assert!(started.status.success(), "{}", stderr(&started));
    let id = stdout(&started).trim().to_owned();
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "only the id on stdout: {id:?}"
    );

    let shown = run(&s, &["runs", "show", &id]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let table = stdout(&shown);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("state:") && l.contains("queued")),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("extract")) && table.contains("EXIT CODE"),
        "{table}"
    );
    let r = json(&s, &["runs", "show", &id]);
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["state"], "queued");
    assert_eq!(r["pipeline"], "nightly");
    assert_eq!(r["runner"], "idle");
    assert_eq!(names(&r, "tasks", "name"), ["extract", "notify"]);

    let queued = json(&s, &["runners", "runs", "idle", "--state", "queued"]);
    assert_eq!(names(&queued, "runs", "id"), [id.as_str()]);
    let running = json(&s, &["runners", "runs", "idle", "--state", "running"]);
    assert!(names(&running, "runs", "id").is_empty(), "{running}");
    let table = stdout(&run(&s, &["runners", "runs", "idle"]));
    assert!(
        table.starts_with("ID")
            && table
                .lines()
                .any(|l| l.starts_with(&id) && l.contains("nightly") && l.contains("queued")),
        "{table}"
    );

    let o = run(&s, &["pipelines", "run", "nightly", "--runner", "nope"]);
    assert!(one_line_error(&o).contains("runner_not_found"));
    let o = run(&s, &["pipelines", "run", "nope", "--runner", "idle"]);
    assert!(one_line_error(&o).contains("pipeline_not_found"));
}

#[test]
fn cancelling_ends_a_wait_with_exit_code_1() {
    let s = ServerProc::start();
    let o = run(&s, &["runners", "create", "idle", "--platform", "local"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = apply_file(&s, NIGHTLY, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    let mut waiting = Command::new(BIN)
        .args(["pipelines", "run", "nightly", "--runner", "idle", "--wait"])
        .env_clear()
        .env("TETHER_URL", &s.url)
        .env("TETHER_TOKEN", crate::procs::ADMIN_TOKEN)
        .env("TETHER_CONFIG_DIR", s.data_dir.join("cfg"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(waiting.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("run id");
    let id = first.trim().to_owned();
    assert!(!id.is_empty(), "prints the run id first");

    let cancel = run(&s, &["runs", "cancel", &id]);
    assert!(cancel.status.success(), "{}", stderr(&cancel));
    let code = wait_for_exit(&mut waiting, Duration::from_secs(15));
    let mut err = String::new();
    waiting
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.contains(&format!("run {id} cancelled"))),
        "{err}"
    );
    assert_eq!(json(&s, &["runs", "show", &id])["state"], "cancelled");
}

#[test]
fn follow_streams_a_real_runners_log_and_the_exit_code_says_how_it_ended() {
    let s = ServerProc::start();
    let created = json(&s, &["runners", "create", "local-1", "--platform", "local"]);
    let dir = tempfile::tempdir().expect("dir");
    let _runner = RunnerProc::start(
        &[
            ("TETHER_URL", s.url.clone()),
            (
                "OAUTH_CLIENT_ID",
                created["credentials"]["client_id"]
                    .as_str()
                    .expect("id")
                    .to_owned(),
            ),
            (
                "OAUTH_CLIENT_SECRET",
                created["credentials"]["client_secret"]
                    .as_str()
                    .expect("secret")
                    .to_owned(),
            ),
            (
                "TETHER_WORKDIR",
                dir.path().join("work").display().to_string(),
            ),
        ],
        dir.path().join("runner.log"),
    );
    let ok = apply_file(
        &s,
        "name: greet\ntasks:\n  - {name: one, run: 'echo hello-from-one'}\n  - {name: two, run: 'echo hello-from-two'}\n",
        &[],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let bad = apply_file(
        &s,
        "name: breaks\ntasks:\n  - {name: fails, run: 'echo about-to-fail; exit 3'}\n",
        &[],
    );
    assert!(bad.status.success(), "{}", stderr(&bad));

    let o = run_within(
        &s,
        &[
            "pipelines",
            "run",
            "greet",
            "--runner",
            "local-1",
            "--follow",
        ],
        Duration::from_secs(60),
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    let id = out.lines().next().expect("run id").trim().to_owned();
    assert!(
        out.contains("hello-from-one") && out.contains("hello-from-two"),
        "{out}"
    );
    assert!(
        stderr(&o).contains(&format!("run {id} succeeded")),
        "{}",
        stderr(&o)
    );
    let logs = stdout(&run(&s, &["runs", "logs", &id]));
    assert!(
        logs.contains("hello-from-one") && logs.contains("hello-from-two"),
        "{logs}"
    );
    let r = json(&s, &["runs", "show", &id]);
    assert_eq!(r["state"], "succeeded");
    assert_eq!(r["tasks"][1]["exit_code"], 0);

    let o = run_within(
        &s,
        &[
            "pipelines",
            "run",
            "breaks",
            "--runner",
            "local-1",
            "--follow",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let id = stdout(&o).lines().next().expect("run id").trim().to_owned();
    assert!(stdout(&o).contains("about-to-fail"), "{}", stdout(&o));
    let last = stderr(&o).lines().last().unwrap_or_default().to_owned();
    assert!(last.contains(&format!("run {id} failed: ")), "{last}");
    let r = json(&s, &["runs", "show", &id]);
    assert_eq!(r["tasks"][0]["exit_code"], 3);

    // `runs logs --follow` of a finished run prints the whole log and stops.
    let o = run_within(
        &s,
        &["runs", "logs", &id, "--follow"],
        Duration::from_secs(20),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("about-to-fail"), "{}", stdout(&o));
}

#[test]
fn every_new_command_has_help() {
    for args in [
        vec!["pipelines", "--help"],
        vec!["pipelines", "apply", "--help"],
        vec!["pipelines", "list", "--help"],
        vec!["pipelines", "show", "--help"],
        vec!["pipelines", "delete", "--help"],
        vec!["pipelines", "run", "--help"],
        vec!["runs", "--help"],
        vec!["runs", "show", "--help"],
        vec!["runs", "logs", "--help"],
        vec!["runs", "cancel", "--help"],
        vec!["runners", "runs", "--help"],
    ] {
        assert_help(&args);
    }
    let apply = stdout(&tether(&["pipelines", "apply", "--help"], &[]));
    assert!(
        apply.contains("tasks:") && apply.contains("timeout_seconds:") && apply.contains("Example"),
        "{apply}"
    );
    let run = stdout(&tether(&["pipelines", "run", "--help"], &[]));
    assert!(
        run.contains("--follow") && run.contains("exit code"),
        "{run}"
    );
    let runs = stdout(&tether(&["runners", "runs", "--help"], &[]));
    assert!(runs.contains("cancelled"), "{runs}");
}

/// Runs an admin command, killing it if it has not finished within `within`.
fn run_within(s: &ServerProc, args: &[&str], within: Duration) -> Output {
    let mut child = admin_command(s)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let finished = wait_for_exit(&mut child, within);
    if finished.is_none() {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    let output = Output {
        status,
        stdout: out.join().expect("stdout thread"),
        stderr: err.join().expect("stderr thread"),
    };
    assert!(
        finished.is_some(),
        "{args:?} still running after {within:?}: {}{}",
        stdout(&output),
        stderr(&output)
    );
    output
}

fn wait_for_exit(child: &mut std::process::Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}
