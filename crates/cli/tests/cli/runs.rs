//! Pipelines on real runner processes: a real server, a real `tether runner` executing shell
//! commands, and the CLI to define pipelines, start runs and read them back. Covers ordering and
//! logs, failures, timeouts, cancel, queueing behind a pause, and nothing lost when the server or
//! the runner goes away mid-task.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::procs::{stderr, stdout, RunnerProc, ServerProc};
use crate::runner::{admin, setup, status, Setup};

fn apply(s: &Setup, name: &str, yaml: &str) {
    let file = s.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, format!("name: {name}\n{yaml}")).expect("write pipeline");
    let o = admin(
        &s.server,
        &["pipelines", "apply", "-f", file.to_str().expect("path")],
    );
    assert!(o.status.success(), "apply: {}", stderr(&o));
}

fn start(s: &Setup, pipeline: &str, runner: &str) -> String {
    let o = admin(
        &s.server,
        &[
            "pipelines",
            "run",
            pipeline,
            "--runner",
            runner,
            "--output",
            "json",
        ],
    );
    assert!(o.status.success(), "run: {}", stderr(&o));
    let run: Value = serde_json::from_slice(&o.stdout).expect("run json");
    run["id"].as_str().expect("id").to_owned()
}

fn show_run(server: &ServerProc, id: &str) -> Value {
    let o = admin(server, &["runs", "show", id, "--output", "json"]);
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

fn logs(server: &ServerProc, id: &str) -> String {
    let o = admin(server, &["runs", "logs", id]);
    assert!(o.status.success(), "logs: {}", stderr(&o));
    stdout(&o)
}

fn wait_run(server: &ServerProc, id: &str, state: &str, within: Duration) -> Value {
    let started = Instant::now();
    while started.elapsed() < within {
        let r = show_run(server, id);
        if r["state"] == state {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "run did not become {state} within {within:?}: {}",
        show_run(server, id)
    );
}

fn wait_log(server: &ServerProc, id: &str, needle: &str, within: Duration) {
    let started = Instant::now();
    while started.elapsed() < within {
        if logs(server, id).contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("log never showed {needle:?}: {:?}", logs(server, id));
}

/// A server with a registered runner `name` whose process is connected.
fn connected(name: &str) -> (Setup, RunnerProc) {
    let s = setup(name);
    let runner = s.start_runner("runner");
    s.wait_for(name, "running", Duration::from_secs(15), status("running"));
    (s, runner)
}

#[test]
fn a_three_task_pipeline_succeeds_with_its_logs_in_order() {
    let (s, _runner) = connected("e2e-ok");
    apply(
        &s,
        "three",
        "tasks:\n\
         - name: one\n  run: echo one; echo err-one >&2\n\
         - name: two\n  run: printf 'two\\n'\n\
         - name: three\n  run: echo \"three $GREETING\"; pwd\n  env:\n    GREETING: hi\n",
    );
    let id = start(&s, "three", "e2e-ok");
    let run = wait_run(&s.server, &id, "succeeded", Duration::from_secs(20));
    let tasks = run["tasks"].as_array().expect("tasks");
    assert!(
        tasks
            .iter()
            .all(|t| t["state"] == "succeeded" && t["exit_code"] == 0),
        "{run}"
    );
    let workdir = s.dir.path().join("work");
    assert_eq!(
        logs(&s.server, &id),
        format!("one\nerr-one\ntwo\nthree hi\n{}\n", workdir.display())
    );
}

#[test]
fn a_failing_task_fails_the_run_with_its_exit_code() {
    let (s, _runner) = connected("e2e-fail");
    apply(
        &s,
        "fails",
        "tasks:\n- name: bad\n  run: echo oops; exit 3\n- name: never\n  run: echo never\n",
    );
    let o = admin(
        &s.server,
        &[
            "pipelines",
            "run",
            "fails",
            "--runner",
            "e2e-fail",
            "--wait",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("failed"), "{}", stderr(&o));
    let runs = admin(
        &s.server,
        &["runners", "runs", "e2e-fail", "--output", "json"],
    );
    let runs: Value = serde_json::from_slice(&runs.stdout).expect("json");
    let run = &runs["runs"][0];
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["tasks"][0]["exit_code"], 3);
    assert_eq!(run["tasks"][1]["state"], "cancelled");
    assert_eq!(run["reason"], "task 'bad' failed with exit code 3");
}

#[test]
fn a_task_past_its_timeout_is_killed_and_fails() {
    let (s, _runner) = connected("e2e-timeout");
    apply(
        &s,
        "slow",
        "tasks:\n- name: slow\n  run: sleep 30\n  timeout_seconds: 1\n",
    );
    let id = start(&s, "slow", "e2e-timeout");
    let run = wait_run(&s.server, &id, "failed", Duration::from_secs(10));
    let reason = run["reason"].as_str().expect("reason");
    assert!(reason.contains("timed out after 1 s"), "{run}");
}

#[test]
fn cancel_kills_the_running_task() {
    let (s, _runner) = connected("e2e-cancel");
    apply(
        &s,
        "long",
        "tasks:\n- name: long\n  run: echo started; sleep 30\n- name: after\n  run: echo after\n",
    );
    let id = start(&s, "long", "e2e-cancel");
    wait_log(&s.server, &id, "started", Duration::from_secs(15));
    let o = admin(&s.server, &["runs", "cancel", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let started = Instant::now();
    let run = wait_run(&s.server, &id, "cancelled", Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cancel took {:?}",
        started.elapsed()
    );
    assert_eq!(run["tasks"][0]["state"], "cancelled");
    assert_eq!(run["tasks"][1]["state"], "cancelled");
    assert_eq!(run["reason"], "cancelled by user:admin");
}

#[test]
fn a_run_queued_on_a_paused_runner_starts_after_resume() {
    let (s, _runner) = connected("e2e-pause");
    apply(&s, "quick", "tasks:\n- name: hi\n  run: echo hi\n");
    let o = admin(&s.server, &["runners", "pause", "e2e-pause", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = start(&s, "quick", "e2e-pause");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(show_run(&s.server, &id)["state"], "queued");
    let o = admin(&s.server, &["runners", "resume", "e2e-pause"]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_run(&s.server, &id, "succeeded", Duration::from_secs(15));
    assert_eq!(logs(&s.server, &id), "hi\n");
}

#[test]
fn a_result_produced_while_the_server_was_down_arrives_after_it_restarts() {
    let (mut s, _runner) = connected("e2e-srv");
    apply(
        &s,
        "spans",
        "tasks:\n- name: spans\n  run: echo begin; sleep 2; echo end\n",
    );
    let id = start(&s, "spans", "e2e-srv");
    wait_log(&s.server, &id, "begin", Duration::from_secs(15));
    // The task finishes while nobody listens; the runner spools its updates.
    s.server.kill_and_restart_after(Duration::from_secs(3));
    let run = wait_run(&s.server, &id, "succeeded", Duration::from_secs(20));
    assert_eq!(run["tasks"][0]["exit_code"], 0);
    assert_eq!(logs(&s.server, &id), "begin\nend\n");
}

#[test]
fn spooled_results_survive_a_runner_restart() {
    let (mut s, mut runner) = connected("e2e-spool");
    apply(
        &s,
        "spans",
        "tasks:\n- name: spans\n  run: echo x; sleep 2; echo y\n",
    );
    let id = start(&s, "spans", "e2e-spool");
    wait_log(&s.server, &id, "x", Duration::from_secs(15));
    s.server.signal("KILL");
    s.server.wait_exit(Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    // The task has finished; the runner cannot deliver it and stops with it on disk.
    runner.signal("TERM");
    assert_eq!(
        runner.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        runner.log()
    );
    s.server.start_again();
    let _next = s.start_runner("runner-2");
    let run = wait_run(&s.server, &id, "succeeded", Duration::from_secs(20));
    assert_eq!(run["tasks"][0]["exit_code"], 0);
    assert_eq!(logs(&s.server, &id), "x\ny\n");
}

#[test]
fn sigterm_mid_task_lets_the_task_finish_before_the_runner_exits() {
    let (s, mut runner) = connected("e2e-term");
    apply(
        &s,
        "spans",
        "tasks:\n- name: spans\n  run: echo a; sleep 2; echo b\n",
    );
    let id = start(&s, "spans", "e2e-term");
    wait_log(&s.server, &id, "a", Duration::from_secs(15));
    runner.signal("TERM");
    assert_eq!(
        runner.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        runner.log()
    );
    let run = show_run(&s.server, &id);
    assert_eq!(run["state"], "succeeded", "finished before exit: {run}");
    assert_eq!(logs(&s.server, &id), "a\nb\n");
    s.wait_for(
        "e2e-term",
        "stopped",
        Duration::from_secs(5),
        status("stopped"),
    );
}

#[test]
fn a_task_whose_runner_was_killed_becomes_lost() {
    let (s, runner) = connected("e2e-lost");
    apply(
        &s,
        "long",
        "tasks:\n- name: long\n  run: echo started; sleep 20\n",
    );
    let id = start(&s, "long", "e2e-lost");
    wait_log(&s.server, &id, "started", Duration::from_secs(15));
    runner.signal("KILL");
    // lost_after is 8 s in these tests (procs.rs).
    let run = wait_run(&s.server, &id, "lost", Duration::from_secs(25));
    assert!(
        run["reason"]
            .as_str()
            .expect("reason")
            .contains("disconnected for more than 8 s"),
        "{run}"
    );
}

#[test]
fn deleting_a_runner_stops_the_tasks_it_was_running() {
    let (s, mut runner) = connected("e2e-deleted");
    let pid_file = s.dir.path().join("task.pid");
    apply(
        &s,
        "long",
        &format!(
            "tasks:\n- name: long\n  run: echo $$ > {}; echo started; sleep 30\n",
            pid_file.display()
        ),
    );
    let id = start(&s, "long", "e2e-deleted");
    wait_log(&s.server, &id, "started", Duration::from_secs(15));
    let pid = std::fs::read_to_string(&pid_file).expect("pid file");
    let proc_dir = format!("/proc/{}", pid.trim());
    assert!(std::path::Path::new(&proc_dir).exists());
    let o = admin(&s.server, &["runners", "delete", "e2e-deleted", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        runner.wait_exit(Duration::from_secs(20)),
        Some(1),
        "{}",
        runner.log()
    );
    // The task's shell is gone (a zombie has no cmdline) and the run was cancelled with the runner.
    let cmdline = std::fs::read(format!("{proc_dir}/cmdline")).unwrap_or_default();
    assert!(cmdline.is_empty(), "the task still runs: {proc_dir}");
    assert_eq!(show_run(&s.server, &id)["state"], "cancelled");
}
