//! Pipelines and runs against the real server, with a hand-driven runner session: definitions and
//! their validation, queueing, dispatch in order, idempotent updates, logs, cancel, refusal,
//! re-assignment after a reconnect, and `lost` tasks.

use std::time::Duration;

use serde_json::{json, Value};
use tether_testkit::{spawn_app_with, TestApp};

use crate::ws::{app, connect, next, runner, send, Ws};

async fn put(app: &TestApp, name: &str, tasks: Value) -> tether_testkit::TestResponse {
    app.request(
        reqwest::Method::PUT,
        &format!("/api/v1/pipelines/{name}"),
        Some(&app.admin_token),
        Some(&json!({ "tasks": tasks })),
    )
    .await
}

async fn start_run(app: &TestApp, pipeline: &str, runner: &str) -> Value {
    let r = app
        .post(
            &format!("/api/v1/pipelines/{pipeline}/runs"),
            Some(&app.admin_token),
            &json!({ "runner": runner }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

async fn run(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/runs/{id}"), Some(&app.admin_token))
        .await
        .json()
}

async fn logs(app: &TestApp, id: &str, offset: u64) -> String {
    let r = app
        .get(
            &format!("/api/v1/runs/{id}/logs?offset={offset}"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    r.body
}

async fn wait_run(app: &TestApp, id: &str, state: &str) -> Value {
    for _ in 0..100 {
        let r = run(app, id).await;
        if r["state"] == state {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run never became {state}: {}", run(app, id).await);
}

/// The next message of `kind`, skipping others (acks while waiting for an assign, ...).
async fn expect(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let m = next(ws)
            .await
            .unwrap_or_else(|c| panic!("closed ({c:?}) waiting for {kind}"));
        if m["type"] == kind {
            return m;
        }
    }
}

async fn update(ws: &mut Ws, task: &str, seq: u64, state: &str, extra: Value) -> Value {
    let mut msg = json!({"type": "task_update", "task_id": task, "seq": seq, "state": state});
    for (k, v) in extra.as_object().into_iter().flatten() {
        msg[k] = v.clone();
    }
    send(ws, msg).await;
    let ack = expect(ws, "ack").await;
    assert_eq!(ack["task_id"], task);
    assert_eq!(ack["seq"], seq);
    ack
}

/// Runs an assigned task to its end over the session: started, one log chunk, final state.
async fn finish(ws: &mut Ws, name: &str, state: &str, extra: Value) -> String {
    let assign = expect(ws, "assign").await;
    assert_eq!(assign["task"]["name"], name, "{assign}");
    let task = assign["task"]["task_id"].as_str().expect("id").to_owned();
    update(ws, &task, 1, "running", json!({})).await;
    update(
        ws,
        &task,
        2,
        "running",
        json!({"log_chunk": format!("{name}\n")}),
    )
    .await;
    update(ws, &task, 3, state, extra).await;
    task
}

/// The three-task pipeline `p` on a new runner `name` with one connected instance `i1`, a run
/// of it queued, and its first task assigned and reported started.
struct Started {
    ws: Ws,
    run_id: String,
    task: String,
    /// The runner's client id and secret, to connect again.
    client: (String, String),
}

async fn started_task(app: &TestApp, name: &str) -> Started {
    put(app, "p", three_tasks()).await;
    let (id, secret) = runner(app, name).await;
    let mut ws = connect(app, &id, &secret, "i1").await;
    let run_id = start_run(app, "p", name).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let task = expect(&mut ws, "assign").await["task"]["task_id"]
        .as_str()
        .expect("id")
        .to_owned();
    update(&mut ws, &task, 1, "running", json!({})).await;
    Started {
        ws,
        run_id,
        task,
        client: (id, secret),
    }
}

fn three_tasks() -> Value {
    json!([
        {"name": "build", "run": "echo build", "env": {"MODE": "release"}, "timeout_seconds": 60},
        {"name": "test", "run": "echo test"},
        {"name": "ship", "run": "echo ship"}
    ])
}

#[tokio::test]
async fn pipelines_are_validated_stored_listed_and_deleted() {
    let app = app().await;
    let r = put(&app, "deploy", three_tasks()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let p = r.json();
    assert_eq!(p["name"], "deploy");
    assert_eq!(p["tasks"][0]["env"]["MODE"], "release");
    assert_eq!(p["tasks"][0]["timeout_seconds"], 60);
    assert_eq!(p["updated_by"], "user:admin");
    // Replacing keeps the creation time.
    let again = put(&app, "deploy", json!([{"name": "only", "run": "true"}]))
        .await
        .json();
    assert_eq!(again["created_at"], p["created_at"]);
    assert_eq!(again["tasks"].as_array().map(Vec::len), Some(1));

    let p = put(&app, "empty", json!([]))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(p["field"], "tasks");
    let p = put(
        &app,
        "dup",
        json!([{"name": "a", "run": "true"}, {"name": "a", "run": "true"}]),
    )
    .await
    .assert_problem(422, "invalid_field");
    assert_eq!(p["field"], "tasks[1].name");
    let p = put(&app, "Bad_Name", three_tasks())
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(p["field"], "name");
    let p = put(
        &app,
        "x",
        json!([{"name": "a", "run": "true", "timeout_seconds": 0}]),
    )
    .await
    .assert_problem(422, "invalid_field");
    assert_eq!(p["field"], "tasks[0].timeout_seconds");
    let p = put(&app, "x", json!([{"name": "a"}]))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(p["field"], "tasks[0].run");

    let list = app
        .get("/api/v1/pipelines", Some(&app.admin_token))
        .await
        .json();
    assert_eq!(list["pipelines"].as_array().map(Vec::len), Some(1));
    let viewer = app.user_token("vera", "viewer").await;
    assert_eq!(
        app.get("/api/v1/pipelines/deploy", Some(&viewer))
            .await
            .status,
        200
    );
    put_as(&app, &viewer).await.assert_problem(403, "forbidden");
    app.get("/api/v1/pipelines/nope", Some(&app.admin_token))
        .await
        .assert_problem(404, "pipeline_not_found");
    assert_eq!(
        app.delete("/api/v1/pipelines/deploy", Some(&app.admin_token))
            .await
            .status,
        204
    );
    app.delete("/api/v1/pipelines/deploy", Some(&app.admin_token))
        .await
        .assert_problem(404, "pipeline_not_found");
}

async fn put_as(app: &TestApp, token: &str) -> tether_testkit::TestResponse {
    app.request(
        reqwest::Method::PUT,
        "/api/v1/pipelines/deploy",
        Some(token),
        Some(&json!({"tasks": three_tasks()})),
    )
    .await
}

#[tokio::test]
async fn runs_queue_until_the_runner_connects_and_bad_references_are_404() {
    let app = app().await;
    put(&app, "p", three_tasks()).await;
    runner(&app, "r1").await;
    app.post(
        "/api/v1/pipelines/p/runs",
        Some(&app.admin_token),
        &json!({"runner": "ghost"}),
    )
    .await
    .assert_problem(404, "runner_not_found");
    app.post(
        "/api/v1/pipelines/nope/runs",
        Some(&app.admin_token),
        &json!({"runner": "r1"}),
    )
    .await
    .assert_problem(404, "pipeline_not_found");
    app.post(
        "/api/v1/pipelines/p/runs",
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .assert_problem(422, "invalid_field");
    let r = start_run(&app, "p", "r1").await;
    assert_eq!(r["state"], "queued");
    assert_eq!(r["runner"], "r1");
    assert_eq!(r["tasks"].as_array().map(Vec::len), Some(3));
    assert!(
        r["reason"]
            .as_str()
            .expect("reason")
            .contains("waiting for runner 'r1'"),
        "{r}"
    );
    let id = r["id"].as_str().expect("id");
    let listed = app
        .get(
            "/api/v1/runners/r1/runs?state=queued",
            Some(&app.admin_token),
        )
        .await
        .json();
    assert_eq!(listed["runs"][0]["id"], id);
    let none = app
        .get(
            "/api/v1/runners/r1/runs?state=running",
            Some(&app.admin_token),
        )
        .await
        .json();
    assert_eq!(none["runs"].as_array().map(Vec::len), Some(0));
    app.get("/api/v1/runners/r1/runs?state=done", Some(&app.admin_token))
        .await
        .assert_problem(422, "invalid_field");
    app.get("/api/v1/runs/not-a-run", Some(&app.admin_token))
        .await
        .assert_problem(404, "run_not_found");
    assert_eq!(logs(&app, id, 0).await, "");
    // Cancelling a queued run ends it at once; a second cancel is a conflict.
    let c = app
        .post(
            &format!("/api/v1/runs/{id}/cancel"),
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    assert_eq!(c.status, 202, "{}", c.body);
    assert_eq!(c.json()["state"], "cancelled");
    assert_eq!(c.json()["tasks"][2]["state"], "cancelled");
    app.post(
        &format!("/api/v1/runs/{id}/cancel"),
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .assert_problem(409, "run_finished");
}

#[tokio::test]
async fn tasks_run_in_order_with_idempotent_updates_and_ordered_logs() {
    let app = app().await;
    put(&app, "p", three_tasks()).await;
    let (id, secret) = runner(&app, "r2").await;
    let mut ws = connect(&app, &id, &secret, "i1").await;
    let r = start_run(&app, "p", "r2").await;
    let run_id = r["id"].as_str().expect("id");

    let assign = expect(&mut ws, "assign").await;
    assert_eq!(assign["task"]["name"], "build");
    assert_eq!(assign["task"]["env"]["MODE"], "release");
    assert_eq!(assign["task"]["timeout_seconds"], 60);
    assert_eq!(assign["task"]["run_id"], run_id);
    let build = assign["task"]["task_id"].as_str().expect("id").to_owned();
    update(&mut ws, &build, 1, "running", json!({})).await;
    let state = run(&app, run_id).await;
    assert_eq!(state["state"], "running");
    assert_eq!(state["tasks"][0]["instance_id"], "i1");
    update(
        &mut ws,
        &build,
        2,
        "running",
        json!({"log_chunk": "compiling ✓\n"}),
    )
    .await;
    // A replay of an applied update is acknowledged and changes nothing.
    update(
        &mut ws,
        &build,
        2,
        "running",
        json!({"log_chunk": "compiling ✓\n"}),
    )
    .await;
    update(&mut ws, &build, 3, "succeeded", json!({"exit_code": 0})).await;
    finish(&mut ws, "test", "succeeded", json!({"exit_code": 0})).await;
    finish(&mut ws, "ship", "succeeded", json!({"exit_code": 0})).await;

    let done = wait_run(&app, run_id, "succeeded").await;
    assert!(done["finished_at"].is_string());
    assert!(done["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .all(|t| t["state"] == "succeeded"));
    let log = logs(&app, run_id, 0).await;
    assert_eq!(log, "compiling ✓\ntest\nship\n");
    let skip = "compiling ✓\n".len() as u64;
    assert_eq!(logs(&app, run_id, skip).await, "test\nship\n");
    assert_eq!(logs(&app, run_id, 1000).await, "");
    // A late duplicate of a finished task is acknowledged and ignored.
    update(&mut ws, &build, 3, "succeeded", json!({"exit_code": 0})).await;
    assert_eq!(logs(&app, run_id, 0).await, log);
}

#[tokio::test]
async fn a_failing_task_fails_the_run_and_skips_the_rest() {
    let app = app().await;
    put(&app, "p", three_tasks()).await;
    let (id, secret) = runner(&app, "r3").await;
    let mut ws = connect(&app, &id, &secret, "i1").await;
    let run_id = start_run(&app, "p", "r3").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    finish(&mut ws, "build", "failed", json!({"exit_code": 3})).await;
    let r = wait_run(&app, &run_id, "failed").await;
    assert_eq!(r["tasks"][0]["exit_code"], 3);
    assert_eq!(r["reason"], "task 'build' failed with exit code 3");
    assert_eq!(r["tasks"][1]["state"], "cancelled");
    assert!(
        r["tasks"][1]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("not run"),
        "{r}"
    );

    let timed = start_run(&app, "p", "r3").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    finish(
        &mut ws,
        "build",
        "failed",
        json!({"reason": "timed out after 60 s"}),
    )
    .await;
    let r = wait_run(&app, &timed, "failed").await;
    assert_eq!(r["reason"], "task 'build' failed: timed out after 60 s");
}

#[tokio::test]
async fn cancelling_a_running_run_asks_the_instance_to_kill_the_task() {
    let app = app().await;
    let Started {
        mut ws,
        run_id,
        task,
        ..
    } = started_task(&app, "r4").await;
    let c = app
        .post(
            &format!("/api/v1/runs/{run_id}/cancel"),
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    assert_eq!(c.status, 202, "{}", c.body);
    assert_eq!(c.json()["state"], "running", "waits for the instance");
    let cancel = expect(&mut ws, "cancel").await;
    assert_eq!(cancel["task_id"], task);
    update(
        &mut ws,
        &task,
        2,
        "cancelled",
        json!({"reason": "cancelled by the control plane"}),
    )
    .await;
    let r = wait_run(&app, &run_id, "cancelled").await;
    assert_eq!(r["reason"], "cancelled by user:admin");
    assert_eq!(r["tasks"][2]["state"], "cancelled");
    let audit = app
        .get("/api/v1/audit?runner=r4", Some(&app.admin_token))
        .await
        .json();
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"run.created") && actions.contains(&"run.cancel_requested"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn paused_runners_get_no_work_until_resumed() {
    let app = app().await;
    put(&app, "p", json!([{"name": "a", "run": "true"}])).await;
    let (id, secret) = runner(&app, "r5").await;
    let mut ws = connect(&app, &id, &secret, "i1").await;
    let r = app
        .post(
            "/api/v1/runners/r5/pause",
            Some(&app.admin_token),
            &json!({"confirm": "pause runner"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let run_id = start_run(&app, "p", "r5").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    send(&mut ws, json!({"type": "heartbeat", "running_tasks": 0})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let queued = run(&app, &run_id).await;
    assert_eq!(queued["state"], "queued");
    assert!(
        queued["reason"]
            .as_str()
            .expect("reason")
            .contains("paused"),
        "{queued}"
    );
    let r = app
        .post(
            "/api/v1/runners/r5/resume",
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 202);
    finish(&mut ws, "a", "succeeded", json!({"exit_code": 0})).await;
    wait_run(&app, &run_id, "succeeded").await;
}

#[tokio::test]
async fn capacity_refusals_and_reconnects_hand_tasks_out_again() {
    let app = app().await;
    put(&app, "p", json!([{"name": "a", "run": "sleep 1"}])).await;
    let (id, secret) = runner(&app, "r6").await;
    let mut a = connect(&app, &id, &secret, "ia").await;
    // Capacity is 4 per instance (see ws::connect): the fifth run waits.
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(
            start_run(&app, "p", "r6").await["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(
            expect(&mut a, "assign").await["task"]["task_id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(run(&app, &runs[4]).await["state"], "queued");
    // Draining and refusing one hands it to another instance.
    send(&mut a, json!({"type": "draining", "reason": "SIGTERM"})).await;
    send(
        &mut a,
        json!({"type": "reject", "task_id": tasks[0], "reason": "draining"}),
    )
    .await;
    let mut b = connect(&app, &id, &secret, "ib").await;
    let first = expect(&mut b, "assign").await;
    let second = expect(&mut b, "assign").await;
    let got = [
        first["task"]["task_id"].clone(),
        second["task"]["task_id"].clone(),
    ];
    assert!(got.contains(&json!(tasks[0])), "{got:?}");
    // An instance that reconnects before confirming a task gets the assignment again.
    drop(a);
    let mut a = connect(&app, &id, &secret, "ia").await;
    let again = expect(&mut a, "assign").await;
    assert!(tasks[1..].contains(&again["task"]["task_id"].as_str().expect("id").to_owned()));
}

#[tokio::test]
async fn a_task_whose_instance_vanishes_becomes_lost() {
    let app = spawn_app_with(|c| {
        c.heartbeat = Duration::from_secs(1);
        c.lost_after = Duration::from_secs(1);
        c.flush_interval = Duration::from_millis(200);
    })
    .await;
    let Started {
        ws,
        run_id,
        task,
        client: (id, secret),
    } = started_task(&app, "r7").await;
    drop(ws);
    let r = wait_run(&app, &run_id, "lost").await;
    assert_eq!(r["tasks"][0]["state"], "lost");
    assert!(r["reason"].as_str().expect("reason").contains("i1"), "{r}");
    assert_eq!(r["tasks"][1]["state"], "cancelled");
    // The instance comes back still running it: it is told to stop.
    let mut ws = connect(&app, &id, &secret, "i1").await;
    send(
        &mut ws,
        json!({"type": "task_update", "task_id": task, "seq": 2, "state": "running"}),
    )
    .await;
    expect(&mut ws, "ack").await;
    assert_eq!(expect(&mut ws, "cancel").await["task_id"], task);
}

#[tokio::test]
async fn deleting_a_runner_cancels_its_active_runs() {
    let app = app().await;
    put(&app, "p", three_tasks()).await;
    runner(&app, "r8").await;
    let run_id = start_run(&app, "p", "r8").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        app.delete("/api/v1/runners/r8", Some(&app.admin_token))
            .await
            .status,
        204
    );
    let r = run(&app, &run_id).await;
    assert_eq!(r["state"], "cancelled");
    assert_eq!(r["reason"], "the runner was deleted");
}

/// Connects instance `instance` of a runner with capacity 0: it is given nothing.
async fn connect_idle(app: &TestApp, id: &str, secret: &str, instance: &str) -> Ws {
    let token = app.access_token(id, secret).await;
    let mut ws = crate::ws::open(app, &token).await.expect("upgrade");
    send(
        &mut ws,
        json!({"type": "hello", "protocol": 1, "runner_version": "9.9.9", "instance_id": instance,
               "hostname": "h", "platform": "local", "capacity": 0}),
    )
    .await;
    assert_eq!(next(&mut ws).await.expect("welcome")["type"], "welcome");
    ws
}

/// The close code the server ends the session with, skipping its `error` message.
async fn closed_with(ws: &mut Ws) -> (Option<u16>, Vec<Value>) {
    let mut said = Vec::new();
    loop {
        match next(ws).await {
            Ok(m) => said.push(m),
            Err(code) => return (code, said),
        }
    }
}

#[tokio::test]
async fn a_runner_cannot_report_tasks_it_was_never_given() {
    let app = app().await;
    put(&app, "p", three_tasks()).await;
    let (id, secret) = runner(&app, "sly").await;
    let run_id = start_run(&app, "p", "sly").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // The API does not show task ids; the attacker of the issue had them (a guess, a leak).
    let stored = app
        .server()
        .state()
        .store
        .run_by_id(run_id.parse().expect("run id"))
        .await
        .expect("read")
        .expect("run");
    let task = stored.tasks[0].id.to_string();
    // Capacity 0: nothing is dispatched, yet it claims the queued task succeeded.
    let mut ws = connect_idle(&app, &id, &secret, "i-sly").await;
    send(
        &mut ws,
        json!({"type": "task_update", "task_id": task, "seq": 1, "state": "succeeded", "exit_code": 0}),
    )
    .await;
    let (code, said) = closed_with(&mut ws).await;
    assert_eq!(code, Some(4400), "{said:?}");
    assert!(
        said.iter().any(|m| m["type"] == "error"
            && m["message"]
                .as_str()
                .is_some_and(|t| t.contains("is not running on instance i-sly"))),
        "{said:?}"
    );
    assert!(!said.iter().any(|m| m["type"] == "ack"), "{said:?}");
    let r = run(&app, &run_id).await;
    assert_eq!(r["state"], "queued", "{r}");
    assert!(r["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .all(|t| t["state"] == "queued"));
}

#[tokio::test]
async fn an_update_out_of_order_or_with_a_huge_seq_is_refused() {
    let app = app().await;
    for (name, seq) in [("gap", 3u64), ("huge", u64::MAX)] {
        let mut s = started_task(&app, name).await;
        send(
            &mut s.ws,
            json!({"type": "task_update", "task_id": s.task, "seq": seq, "state": "succeeded", "exit_code": 0}),
        )
        .await;
        let (code, said) = closed_with(&mut s.ws).await;
        assert_eq!(code, Some(4400), "seq {seq}: {said:?}");
        assert!(
            said.iter().any(|m| m["message"]
                .as_str()
                .is_some_and(|t| t.contains("expected update seq 2"))),
            "{said:?}"
        );
        // Still running, and the next update in order from a new session applies.
        assert_eq!(run(&app, &s.run_id).await["tasks"][0]["state"], "running");
        let mut ws = connect(&app, &s.client.0, &s.client.1, "i1").await;
        update(&mut ws, &s.task, 2, "succeeded", json!({"exit_code": 0})).await;
        assert_eq!(run(&app, &s.run_id).await["tasks"][0]["state"], "succeeded");
        // A new pipeline run per iteration: the next one is on a new runner.
    }
}

#[tokio::test]
async fn a_message_over_the_frame_limit_gets_a_close_frame_not_a_dropped_connection() {
    let app = app().await;
    let (id, secret) = runner(&app, "big").await;
    let mut ws = connect(&app, &id, &secret, "i-big").await;
    let chunk = "x".repeat(2 * 1024 * 1024);
    let msg = json!({"type": "task_update", "task_id": "t", "seq": 1, "state": "running", "log_chunk": chunk});
    // The server may close while the frame is still being written.
    let _ = futures::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::Text(msg.to_string().into()),
    )
    .await;
    let (code, _) = closed_with(&mut ws).await;
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn a_run_log_stops_at_its_limit_says_so_and_the_run_goes_on() {
    let app = spawn_app_with(|c| {
        c.heartbeat = Duration::from_secs(1);
        c.max_log_bytes_per_run = 1024;
    })
    .await;
    put(&app, "p", json!([{"name": "loud", "run": "yes"}])).await;
    let (id, secret) = runner(&app, "loud").await;
    let mut ws = connect(&app, &id, &secret, "i1").await;
    let run_id = start_run(&app, "p", "loud").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let task = expect(&mut ws, "assign").await["task"]["task_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let line = "y\n".repeat(200); // 400 bytes
    for seq in 1..=5 {
        update(&mut ws, &task, seq, "running", json!({"log_chunk": line})).await;
    }
    update(
        &mut ws,
        &task,
        6,
        "succeeded",
        json!({"exit_code": 0, "log_chunk": "end\n"}),
    )
    .await;
    wait_run(&app, &run_id, "succeeded").await;
    let log = logs(&app, &run_id, 0).await;
    assert!(log.starts_with(&"y\n".repeat(512)), "{log}");
    assert!(
        log.ends_with(
            "[tether: this run's log reached its limit of 1024 bytes; later output is not kept]\n"
        ),
        "{log}"
    );
    assert!(!log.contains("end"));
}

#[tokio::test]
async fn the_log_endpoint_pages_by_offset_and_limit() {
    let app = app().await;
    let mut s = started_task(&app, "pages").await;
    update(
        &mut s.ws,
        &s.task,
        2,
        "running",
        json!({"log_chunk": "0123456789"}),
    )
    .await;
    let page = |offset: u64, limit: &str| {
        let (app, run_id) = (&app, s.run_id.clone());
        let limit = limit.to_owned();
        async move {
            app.get(
                &format!("/api/v1/runs/{run_id}/logs?offset={offset}&limit={limit}"),
                Some(&app.admin_token),
            )
            .await
        }
    };
    let first = page(0, "4").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body, "0123");
    assert_eq!(first.header("x-log-next-offset"), Some("4"));
    assert_eq!(first.header("x-log-total-bytes"), Some("10"));
    let rest = page(4, "100").await;
    assert_eq!(rest.body, "456789");
    assert_eq!(rest.header("x-log-next-offset"), Some("10"));
    // Without a limit: the default page (1 MiB) holds it all.
    assert_eq!(logs(&app, &s.run_id, 0).await, "0123456789");
    for bad in ["0", "-1", "x", "99999999999"] {
        let p = page(0, bad).await.assert_problem(422, "invalid_field");
        assert_eq!(p["field"], "limit", "{bad}");
    }
}

#[tokio::test]
async fn a_secret_env_entry_is_never_shown_and_reaches_only_the_task() {
    let app = app().await;
    let r = put(
        &app,
        "deploy",
        json!([{"name": "ship", "run": "./ship.sh",
                "env": {"MODE": "prod", "API_KEY": {"secret": "hunter2-value"}}}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("hunter2"), "{}", r.body);
    assert_eq!(
        r.json()["tasks"][0]["env"]["API_KEY"],
        json!({"secret": true})
    );
    assert_eq!(r.json()["tasks"][0]["env"]["MODE"], "prod");
    let viewer = app.user_token("vera", "viewer").await;
    let seen = app.get("/api/v1/pipelines/deploy", Some(&viewer)).await;
    assert_eq!(seen.status, 200);
    assert!(!seen.body.contains("hunter2"), "{}", seen.body);
    // At rest it is sealed, not the value.
    let stored = app
        .server()
        .state()
        .store
        .pipeline_by_name(&tether_domain::PipelineName::parse("deploy").expect("name"))
        .await
        .expect("read")
        .expect("stored");
    assert!(!format!("{:?}", stored.tasks).contains("hunter2"));
    match &stored.tasks[0].env["API_KEY"] {
        tether_domain::EnvValue::Sealed(s) => assert!(!s.contains("hunter2")),
        other => panic!("stored in the clear: {other:?}"),
    }
    // Putting back what GET shows cannot keep a secret it does not carry.
    let p = put(
        &app,
        "deploy",
        json!([{"name": "ship", "run": "./ship.sh", "env": {"API_KEY": {"secret": true}}}]),
    )
    .await
    .assert_problem(422, "invalid_field");
    assert_eq!(p["field"], "tasks[0].env.API_KEY");

    // The task gets the value, and which entries to mask.
    let (id, secret) = runner(&app, "shipper").await;
    let mut ws = connect(&app, &id, &secret, "i1").await;
    start_run(&app, "deploy", "shipper").await;
    let assign = expect(&mut ws, "assign").await;
    assert_eq!(assign["task"]["env"]["API_KEY"], "hunter2-value");
    assert_eq!(assign["task"]["secret_env"], json!(["API_KEY"]));
}
