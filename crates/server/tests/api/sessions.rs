//! Runner sessions against the real server with a raw WebSocket client: status transitions,
//! instances, heartbeats, drain, pause, deletion and protocol errors.

use std::time::Duration;

use futures::SinkExt;
use serde_json::{json, Value};
use tether_testkit::TestApp;
use tokio_tungstenite::tungstenite::Message;

use crate::ws::{app, connect, next, open, runner, send};

async fn get(app: &TestApp, name: &str) -> Value {
    app.get(&format!("/api/v1/runners/{name}"), Some(&app.admin_token))
        .await
        .json()
}

/// Polls the runner until `check` holds (status changes are applied asynchronously).
async fn wait_for(app: &TestApp, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let r = get(app, name).await;
        if check(&r) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: runner is {}", get(app, name).await);
}

fn status_is(s: &'static str) -> impl Fn(&Value) -> bool {
    move |r| r["status"] == s
}

#[tokio::test]
async fn pending_running_instances_and_graceful_goodbye() {
    let app = app().await;
    let (id, secret) = runner(&app, "r1").await;
    assert_eq!(get(&app, "r1").await["status"], "pending");
    let mut a = connect(&app, &id, &secret, "inst-a").await;
    let r = wait_for(&app, "r1", "running", status_is("running")).await;
    assert_eq!(r["instances"][0]["instance_id"], "inst-a");
    assert_eq!(r["instances"][0]["hostname"], "inst-a.local");
    assert_eq!(r["instances"][0]["credential_generation"], 1);
    assert_eq!(r["runner_version"], "9.9.9");
    assert_eq!(r["status_reason"], "1 instance connected");

    let mut b = connect(&app, &id, &secret, "inst-b").await;
    let r = wait_for(&app, "r1", "two instances", |r| {
        r["instances"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await;
    assert_eq!(r["status_reason"], "2 instances connected");
    let list = app
        .get("/api/v1/runners", Some(&app.admin_token))
        .await
        .json();
    assert_eq!(list["runners"][0]["status"], "running");

    send(&mut a, json!({"type": "heartbeat", "running_tasks": 3})).await;
    wait_for(&app, "r1", "heartbeat counted", |r| {
        r["instances"]
            .as_array()
            .is_some_and(|i| i.iter().any(|x| x["running_tasks"] == 3))
    })
    .await;

    send(&mut a, json!({"type": "goodbye", "reason": "SIGTERM"})).await;
    assert_eq!(next(&mut a).await, Err(Some(1000)));
    wait_for(&app, "r1", "one left", |r| {
        r["instances"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;
    send(&mut b, json!({"type": "goodbye", "reason": "SIGTERM"})).await;
    let r = wait_for(&app, "r1", "stopped", status_is("stopped")).await;
    assert!(
        r["status_reason"]
            .as_str()
            .expect("reason")
            .contains("SIGTERM"),
        "{r}"
    );
    assert_eq!(r["instances"], json!([]));
    assert!(r["last_seen_at"].is_string());
}

#[tokio::test]
async fn dropped_connection_and_silent_instance_become_unknown() {
    let app = app().await;
    let (id, secret) = runner(&app, "r2").await;
    let ws = connect(&app, &id, &secret, "dropper").await;
    wait_for(&app, "r2", "running", status_is("running")).await;
    drop(ws);
    let r = wait_for(&app, "r2", "unknown after drop", status_is("unknown")).await;
    assert!(
        r["status_reason"]
            .as_str()
            .expect("reason")
            .contains("without goodbye"),
        "{r}"
    );

    // Connected but silent: closed after 3 missed heartbeats (3 s here).
    let mut silent = connect(&app, &id, &secret, "silent").await;
    wait_for(&app, "r2", "running again", status_is("running")).await;
    let started = std::time::Instant::now();
    assert_eq!(next(&mut silent).await, Err(Some(4408)));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    let r = wait_for(&app, "r2", "unknown after silence", status_is("unknown")).await;
    assert!(
        r["status_reason"]
            .as_str()
            .expect("reason")
            .contains("no heartbeat"),
        "{r}"
    );
}

#[tokio::test]
async fn restart_drains_every_instance() {
    let app = app().await;
    let (id, secret) = runner(&app, "r3").await;
    let none = app
        .post(
            "/api/v1/runners/r3/restart",
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    none.assert_problem(409, "no_live_instances");
    let mut a = connect(&app, &id, &secret, "a").await;
    let mut b = connect(&app, &id, &secret, "b").await;
    let r = app
        .post(
            "/api/v1/runners/r3/restart",
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    for ws in [&mut a, &mut b] {
        let drain = next(ws).await.expect("drain");
        assert_eq!(drain["type"], "drain");
        assert!(drain["reason"]
            .as_str()
            .expect("reason")
            .contains("restart requested by user:admin"));
    }
    wait_for(&app, "r3", "stopping", status_is("stopping")).await;
    send(&mut a, json!({"type": "goodbye", "reason": "drained"})).await;
    send(&mut b, json!({"type": "goodbye", "reason": "drained"})).await;
    wait_for(&app, "r3", "stopped", status_is("stopped")).await;
    let audit = app
        .get("/api/v1/audit?runner=r3", Some(&app.admin_token))
        .await
        .json();
    assert!(audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| e["action"] == "runner.restart_requested"));
}

#[tokio::test]
async fn pause_requires_confirmation_and_resume_restores() {
    let app = app().await;
    let (id, secret) = runner(&app, "r4").await;
    let mut ws = connect(&app, &id, &secret, "p").await;
    wait_for(&app, "r4", "running", status_is("running")).await;

    for body in [
        json!({}),
        json!({"confirm": "pause"}),
        json!({"confirm": "PAUSE RUNNER"}),
    ] {
        let r = app
            .post("/api/v1/runners/r4/pause", Some(&app.admin_token), &body)
            .await;
        let p = r.assert_problem(422, "confirmation_required");
        assert_eq!(p["field"], "confirm");
    }
    assert_eq!(
        get(&app, "r4").await["status"],
        "running",
        "nothing changed"
    );
    let past = app
        .post(
            "/api/v1/runners/r4/pause",
            Some(&app.admin_token),
            &json!({"confirm": "pause runner", "until": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(past.assert_problem(422, "invalid_field")["field"], "until");

    send(&mut ws, json!({"type": "heartbeat", "running_tasks": 1})).await;
    let r = app
        .post(
            "/api/v1/runners/r4/pause",
            Some(&app.admin_token),
            &json!({"confirm": "pause runner"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    wait_for(
        &app,
        "r4",
        "pausing while a task runs",
        status_is("pausing"),
    )
    .await;
    send(&mut ws, json!({"type": "heartbeat", "running_tasks": 0})).await;
    let r = wait_for(&app, "r4", "paused", status_is("paused")).await;
    assert_eq!(r["paused_by"], "user:admin");

    let r = app
        .post(
            "/api/v1/runners/r4/resume",
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 202);
    wait_for(&app, "r4", "running after resume", status_is("running")).await;
}

#[tokio::test]
async fn timed_pause_resumes_by_itself() {
    let app = app().await;
    let (id, secret) = runner(&app, "r5").await;
    let _ws = connect(&app, &id, &secret, "t").await;
    let until = time::OffsetDateTime::now_utc() + Duration::from_secs(1);
    let until = until
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let r = app
        .post(
            "/api/v1/runners/r5/pause",
            Some(&app.admin_token),
            &json!({"confirm": "pause runner", "until": until}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.json()["paused_until"].is_string());
    wait_for(&app, "r5", "paused", status_is("paused")).await;
    wait_for(&app, "r5", "auto-resumed", |r| {
        r["status"] == "running" && r["paused_until"].is_null()
    })
    .await;
}

#[tokio::test]
async fn deleting_a_runner_closes_its_sessions_with_4403() {
    let app = app().await;
    let (id, secret) = runner(&app, "r6").await;
    let mut ws = connect(&app, &id, &secret, "d").await;
    let r = app
        .delete("/api/v1/runners/r6", Some(&app.admin_token))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(next(&mut ws).await, Err(Some(4403)));
}

#[tokio::test]
async fn bad_tokens_and_protocol_errors() {
    let app = app().await;
    let (id, secret) = runner(&app, "r7").await;
    assert_eq!(open(&app, "not-a-token").await.err(), Some(401));
    assert_eq!(
        open(&app, &app.admin_token).await.err(),
        Some(401),
        "an API token is not an access token"
    );

    let token = app.access_token(&id, &secret).await;
    let mut ws = open(&app, &token).await.expect("upgrade");
    send(&mut ws, json!({"type": "heartbeat", "running_tasks": 0})).await;
    let error = next(&mut ws).await.expect("error message");
    assert_eq!(error["type"], "error");
    assert_eq!(next(&mut ws).await, Err(Some(4400)));

    let mut ws = open(&app, &token).await.expect("upgrade");
    send(
        &mut ws,
        json!({"type": "hello", "protocol": 99, "runner_version": "x", "instance_id": "i",
        "hostname": "h", "platform": "local", "capacity": 1}),
    )
    .await;
    let error = next(&mut ws).await.expect("error message");
    assert!(error["message"]
        .as_str()
        .expect("message")
        .contains("protocol version 99"));
    assert_eq!(next(&mut ws).await, Err(Some(4400)));

    let mut ws = connect(&app, &id, &secret, "x").await;
    ws.send(Message::Text("{garbage".into()))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, Err(Some(4400)));
    assert_eq!(get(&app, "r7").await["status"], "unknown");
}

#[tokio::test]
async fn reauth_moves_the_session_to_a_new_token() {
    let app = app().await;
    let (id, secret) = runner(&app, "r8").await;
    let (other_id, other_secret) = runner(&app, "r8-other").await;
    let mut ws = connect(&app, &id, &secret, "re").await;
    let fresh = app.access_token(&id, &secret).await;
    send(&mut ws, json!({"type": "reauth", "access_token": fresh})).await;
    let ok = next(&mut ws).await.expect("reauthenticated");
    assert_eq!(ok["type"], "reauthenticated");
    assert_eq!(ok["generation"], 1);
    let foreign = app.access_token(&other_id, &other_secret).await;
    send(&mut ws, json!({"type": "reauth", "access_token": foreign})).await;
    assert_eq!(
        next(&mut ws).await,
        Err(Some(4401)),
        "another runner's token is refused"
    );
}

#[tokio::test]
async fn a_second_connection_of_the_same_instance_supersedes_the_first() {
    let app = app().await;
    let (id, secret) = runner(&app, "r9").await;
    let mut first = connect(&app, &id, &secret, "same").await;
    let _second = connect(&app, &id, &secret, "same").await;
    assert_eq!(next(&mut first).await, Err(Some(4409)));
    let r = wait_for(&app, "r9", "one instance", |r| {
        r["instances"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;
    assert_eq!(
        r["status"], "running",
        "the replacement keeps the runner running: {r}"
    );
}

#[tokio::test]
async fn server_restart_marks_connected_runners_unknown() {
    let mut app = app().await;
    let (id, secret) = runner(&app, "r10").await;
    let _ws = connect(&app, &id, &secret, "x").await;
    wait_for(&app, "r10", "running", status_is("running")).await;
    app.restart().await;
    let r = get(&app, "r10").await;
    assert_eq!(r["status"], "unknown", "{r}");
    assert!(
        r["status_reason"]
            .as_str()
            .expect("reason")
            .contains("control plane"),
        "{r}"
    );
}

/// A shutdown with a drain window (`--shutdown-drain-seconds 4`): `/readyz` fails and new
/// sessions are refused with 503 `draining` at once; the sessions held are closed with 1012 only
/// after the notice quarter (1 s) and spread over the rest; a session whose upgrade passed before
/// the drain but whose `hello` registered it during the drain is closed too.
#[tokio::test]
async fn a_draining_shutdown_refuses_new_sessions_and_closes_every_held_one_after_the_notice() {
    let mut app = tether_testkit::spawn_app_with(|c| {
        // Longer than the window: no heartbeat timeout can close a session before the drain does.
        c.heartbeat = Duration::from_secs(5);
        c.shutdown_drain = Duration::from_secs(4);
    })
    .await;
    let (id, secret) = runner(&app, "drain-1").await;
    let token = app.access_token(&id, &secret).await;
    let hello = |instance: &str| {
        json!({"type": "hello", "protocol": 1, "runner_version": "9.9.9", "instance_id": instance,
               "hostname": "h.local", "platform": "local", "capacity": 1})
    };
    let mut held = open(&app, &token).await.expect("upgrade");
    send(&mut held, hello("i-held")).await;
    assert_eq!(next(&mut held).await.expect("welcome")["type"], "welcome");
    // Upgraded before the drain; registers only during it.
    let mut late = open(&app, &token).await.expect("upgrade");

    let began = std::time::Instant::now();
    let stopped = app.begin_shutdown();
    loop {
        let r = app.get("/readyz", None).await;
        if r.status == 503 {
            assert_eq!(r.json()["reason"], "draining");
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(1), "still ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open(&app, &token).await.err(), Some(503), "a new session");
    send(&mut late, hello("i-late")).await;
    assert_eq!(next(&mut late).await.expect("welcome")["type"], "welcome");

    let mut closed = Vec::new();
    for ws in [&mut held, &mut late] {
        assert_eq!(next(ws).await.err(), Some(Some(1012)));
        closed.push(began.elapsed());
    }
    closed.sort();
    // Two sessions over the 3 s after the notice: one right after it, the other half-way.
    assert!(closed[0] >= Duration::from_secs(1), "{closed:?}");
    assert!(closed[1] >= Duration::from_millis(2500), "{closed:?}");
    stopped.await.expect("shutdown");
    assert!(began.elapsed() >= Duration::from_secs(4));
}

/// Stress for the drain's invariant: 40 sessions upgraded before the drain register at staggered
/// moments during it, racing the drain's ticks; every one of them is closed by the drain (1012),
/// none is left for the final close of the shutdown.
#[tokio::test]
async fn sessions_registering_all_through_a_drain_are_all_closed_by_it() {
    let mut app = tether_testkit::spawn_app_with(|c| {
        c.heartbeat = Duration::from_secs(5);
        c.shutdown_drain = Duration::from_secs(2);
    })
    .await;
    let (id, secret) = runner(&app, "drain-stress").await;
    let token = app.access_token(&id, &secret).await;
    let mut sockets = Vec::new();
    for _ in 0..40 {
        sockets.push(open(&app, &token).await.expect("upgrade"));
    }
    let stopped = app.begin_shutdown();
    let sessions: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(12 * i as u64)).await;
                send(
                    &mut ws,
                    json!({"type": "hello", "protocol": 1, "runner_version": "9.9.9",
                           "instance_id": format!("i{i}"), "hostname": "h.local",
                           "platform": "local", "capacity": 1}),
                )
                .await;
                assert_eq!(next(&mut ws).await.expect("welcome")["type"], "welcome");
                next(&mut ws).await.err()
            })
        })
        .collect();
    for (i, s) in sessions.into_iter().enumerate() {
        assert_eq!(s.await.expect("session"), Some(Some(1012)), "session {i}");
    }
    stopped.await.expect("shutdown");
}

/// `--max-sessions-per-runner 3`: a fourth instance of one runner is refused with 4429 and a
/// reason that says what to do; an instance reconnecting still replaces its own session, and a
/// place freed by a closed session can be taken.
#[tokio::test]
async fn a_runner_cannot_hold_more_live_sessions_than_the_limit() {
    let app = tether_testkit::spawn_app_with(|c| {
        c.heartbeat = Duration::from_secs(1);
        c.max_sessions_per_runner = 3;
    })
    .await;
    let (id, secret) = runner(&app, "capped").await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(connect(&app, &id, &secret, &format!("i{i}")).await);
    }
    let token = app.access_token(&id, &secret).await;
    let hello = |instance: &str| {
        json!({"type": "hello", "protocol": 1, "runner_version": "9.9.9", "instance_id": instance,
               "hostname": "h.local", "platform": "local", "capacity": 1})
    };
    let mut extra = open(&app, &token).await.expect("upgrade");
    send(&mut extra, hello("i3")).await;
    let refused = loop {
        match tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut extra),
        )
        .await
        .expect("an answer")
        {
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            Some(Ok(Message::Close(None))) | None => panic!("closed without a reason"),
            _ => continue,
        }
    };
    assert_eq!(u16::from(refused.code), 4429);
    assert!(
        refused.reason.contains("3 live sessions")
            && refused.reason.contains("--max-sessions-per-runner"),
        "{}",
        refused.reason
    );
    // A reconnect of i0 is not a new instance.
    let again = connect(&app, &id, &secret, "i0").await;
    assert_eq!(
        next(&mut held[0]).await.err(),
        Some(Some(4409)),
        "superseded"
    );
    held[0] = again;
    // Once i2 leaves, i3 gets its place.
    let mut leaving = held.pop().expect("i2");
    send(
        &mut leaving,
        json!({"type": "goodbye", "reason": "scaled down"}),
    )
    .await;
    let _ = next(&mut leaving).await;
    let runner_view = wait_for(&app, "capped", "two instances", |r| {
        r["instances"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await;
    assert_eq!(runner_view["instances"].as_array().map(Vec::len), Some(2));
    held.push(connect(&app, &id, &secret, "i3").await);
}

/// Stress for the limit's check: 20 new instances of one runner connect at once with a limit of
/// 5; exactly 5 are welcomed, the others refused with 4429 (the check and the insert share one
/// lock, so no two connects can take the last place).
#[tokio::test]
async fn concurrent_connects_never_exceed_the_session_limit() {
    let app = tether_testkit::spawn_app_with(|c| {
        c.heartbeat = Duration::from_secs(5);
        c.max_sessions_per_runner = 5;
    })
    .await;
    let (id, secret) = runner(&app, "rush").await;
    let token = app.access_token(&id, &secret).await;
    let mut sockets = Vec::new();
    for _ in 0..20 {
        sockets.push(open(&app, &token).await.expect("upgrade"));
    }
    let outcomes =
        futures::future::join_all(sockets.iter_mut().enumerate().map(|(i, ws)| async move {
            send(
                ws,
                json!({"type": "hello", "protocol": 1, "runner_version": "9.9.9",
                   "instance_id": format!("i{i}"), "hostname": "h.local",
                   "platform": "local", "capacity": 1}),
            )
            .await;
            // A refused one is told why in an `error` message, then closed.
            loop {
                match next(ws).await {
                    Ok(m) if m["type"] == "error" => continue,
                    other => return other.map(|m| m["type"] == "welcome"),
                }
            }
        }))
        .await;
    let welcomed = outcomes.iter().filter(|o| matches!(o, Ok(true))).count();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Err(Some(4429))))
        .count();
    assert_eq!((welcomed, refused), (5, 15), "{outcomes:?}");
}
