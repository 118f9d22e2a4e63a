//! The runner credential lifecycle against the real server with hand-driven runner sessions:
//! confirmation, revoke (sessions cut with 4401, old secret and old tokens refused at once, status
//! Unknown with the reason), overlap (no cut, `credentials_rotated`, reauth, revoke-previous, grace
//! expiry), runs in progress, concurrent refreshes, reveal and its window, auth health.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tether_testkit::{spawn_app_with, TestApp};

use crate::ws::{assign_slow_run, connect, next, runner, send, Ws};

async fn app() -> TestApp {
    spawn_app_with(|c| {
        c.heartbeat = Duration::from_secs(1);
        c.flush_interval = Duration::from_millis(200);
    })
    .await
}

async fn refresh(app: &TestApp, runner: &str, body: Value) -> tether_testkit::TestResponse {
    app.post(
        &format!("/api/v1/runners/{runner}/credentials/refresh"),
        Some(&app.admin_token),
        &body,
    )
    .await
}

async fn credentials(app: &TestApp, runner: &str) -> Value {
    app.get(
        &format!("/api/v1/runners/{runner}/credentials"),
        Some(&app.admin_token),
    )
    .await
    .json()
}

async fn runner_view(app: &TestApp, runner: &str) -> Value {
    app.get(&format!("/api/v1/runners/{runner}"), Some(&app.admin_token))
        .await
        .json()
}

fn states(creds: &Value) -> Vec<(u64, String)> {
    creds["generations"]
        .as_array()
        .expect("generations")
        .iter()
        .map(|g| {
            (
                g["generation"].as_u64().expect("gen"),
                g["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect()
}

/// The close code the server sends next, skipping other messages.
async fn closed_with(ws: &mut Ws) -> Option<u16> {
    loop {
        match next(ws).await {
            Ok(_) => continue,
            Err(code) => return code,
        }
    }
}

#[tokio::test]
async fn refresh_requires_the_word_and_changes_nothing_without_it() {
    let app = app().await;
    let (id, secret) = runner(&app, "c1").await;
    for body in [
        json!({}),
        json!({"confirm": "yes"}),
        json!({"confirm": "Refresh"}),
    ] {
        let p = refresh(&app, "c1", body)
            .await
            .assert_problem(422, "confirmation_required");
        assert_eq!(p["field"], "confirm");
    }
    refresh(&app, "c1", json!({"confirm": "refresh", "mode": "rotate"}))
        .await
        .assert_problem(422, "invalid_field");
    refresh(
        &app,
        "c1",
        json!({"confirm": "refresh", "grace_seconds": 60}),
    )
    .await
    .assert_problem(422, "invalid_field");
    refresh(&app, "ghost", json!({"confirm": "refresh"}))
        .await
        .assert_problem(404, "runner_not_found");
    let viewer = app.user_token("v", "viewer").await;
    app.post(
        "/api/v1/runners/c1/credentials/refresh",
        Some(&viewer),
        &json!({"confirm": "refresh"}),
    )
    .await
    .assert_problem(403, "forbidden");
    assert_eq!(
        states(&credentials(&app, "c1").await),
        vec![(1, "active".to_owned())]
    );
    assert_eq!(app.token_basic(&id, &secret).await.status, 200);
}

#[tokio::test]
async fn revoke_cuts_sessions_and_refuses_the_old_secret_and_tokens_at_once() {
    let app = app().await;
    let (id, old_secret) = runner(&app, "c2").await;
    let old_token = app.access_token(&id, &old_secret).await;
    let mut ws = connect(&app, &id, &old_secret, "i1").await;
    let started = Instant::now();
    let r = refresh(&app, "c2", json!({"confirm": "refresh"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let fresh = r.json();
    assert_eq!(fresh["client_id"], id.as_str());
    assert_eq!(fresh["generation"], 2);
    assert_eq!(fresh["previous_generation"], 1);
    assert_eq!(fresh["mode"], "revoke");
    assert_eq!(fresh["sessions_closed"], 1);
    let new_secret = fresh["client_secret"].as_str().expect("secret").to_owned();
    assert!(new_secret.starts_with("tcs_") && new_secret != old_secret);

    assert_eq!(closed_with(&mut ws).await, Some(4401));
    assert!(started.elapsed() < Duration::from_secs(1), "cut within 1 s");
    let r = app.token_basic(&id, &old_secret).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    let intro = app
        .post_form(
            "/oauth/introspect",
            None,
            Some(&app.admin_token),
            &[("token", &old_token)],
        )
        .await;
    assert_eq!(
        intro.json()["active"],
        false,
        "old tokens are dead before exp"
    );
    assert_eq!(
        crate::ws::open(&app, &old_token).await.err(),
        Some(401),
        "an old token cannot open a session"
    );
    let view = runner_view(&app, "c2").await;
    assert_eq!(view["status"], "unknown");
    let reason = view["status_reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("credentials refreshed at ")
            && reason.contains("by user:admin")
            && reason.ends_with("apply the new client_secret and restart the runner"),
        "{reason}"
    );
    assert_eq!(view["credential_generation"], 2);
    let health = &view["auth_health"];
    assert_eq!(health["failed_token_requests"], 1, "{health}");
    assert_eq!(health["last_failure_reason"], "wrong_secret");
    assert!(
        health["summary"]
            .as_str()
            .expect("summary")
            .contains("refreshed at"),
        "{health}"
    );
    assert_eq!(
        states(&credentials(&app, "c2").await),
        vec![(2, "active".to_owned()), (1, "revoked".to_owned())]
    );

    // The runner comes back with the new secret: running again, health clear.
    let _ws = connect(&app, &id, &new_secret, "i1").await;
    let view = runner_view(&app, "c2").await;
    assert_eq!(view["status"], "running");
    assert_eq!(view["instances"][0]["credential_generation"], 2);
    assert_eq!(view["auth_health"]["failed_token_requests"], 0);
    let audit = app
        .get("/api/v1/audit?runner=c2", Some(&app.admin_token))
        .await
        .json();
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"credentials.refreshed"), "{actions:?}");
    assert!(actions.contains(&"session.cut"), "{actions:?}");
    let refreshed = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["action"] == "credentials.refreshed")
        .expect("refresh event");
    assert_eq!(refreshed["detail"]["mode"], "revoke");
    assert_eq!(refreshed["detail"]["generation"], 2);
    assert_eq!(refreshed["actor"], "user:admin");
}

#[tokio::test]
async fn overlap_keeps_sessions_both_secrets_work_and_revoke_previous_cuts_only_old_ones() {
    let app = app().await;
    let (id, old_secret) = runner(&app, "c3").await;
    let mut moving = connect(&app, &id, &old_secret, "moving").await;
    let mut staying = connect(&app, &id, &old_secret, "staying").await;
    let r = refresh(
        &app,
        "c3",
        json!({"confirm": "refresh", "mode": "overlap", "grace_seconds": 3600}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let fresh = r.json();
    assert_eq!(fresh["sessions_closed"], 0);
    assert!(fresh["previous_expires_at"].is_string());
    let new_secret = fresh["client_secret"].as_str().expect("secret").to_owned();
    for ws in [&mut moving, &mut staying] {
        let m = next(ws).await.expect("rotated");
        assert_eq!(m, json!({"type": "credentials_rotated", "generation": 2}));
    }
    assert_eq!(app.token_basic(&id, &old_secret).await.status, 200);
    assert_eq!(app.token_basic(&id, &new_secret).await.status, 200);
    let creds = credentials(&app, "c3").await;
    assert_eq!(
        states(&creds),
        vec![(2, "active".to_owned()), (1, "retiring".to_owned())]
    );
    assert!(creds["generations"][1]["expires_at"].is_string());
    // One instance moves to the new generation on its open session.
    let token = app.access_token(&id, &new_secret).await;
    send(
        &mut moving,
        json!({"type": "reauth", "access_token": token}),
    )
    .await;
    let ok = next(&mut moving).await.expect("reauthenticated");
    assert_eq!(ok["type"], "reauthenticated");
    assert_eq!(ok["generation"], 2);
    let creds = credentials(&app, "c3").await;
    assert_eq!(creds["generations"][0]["sessions"], 1);
    assert_eq!(creds["generations"][1]["sessions"], 1);
    assert_eq!(runner_view(&app, "c3").await["status"], "running");

    let r = app
        .post(
            "/api/v1/runners/c3/credentials/revoke-previous",
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(closed_with(&mut staying).await, Some(4401));
    assert_eq!(
        states(&r.json()),
        vec![(2, "active".to_owned()), (1, "revoked".to_owned())]
    );
    send(
        &mut moving,
        json!({"type": "heartbeat", "running_tasks": 0}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let view = runner_view(&app, "c3").await;
    assert_eq!(view["status"], "running", "{view}");
    assert_eq!(view["instances"].as_array().map(Vec::len), Some(1));
    assert_eq!(app.token_basic(&id, &old_secret).await.status, 401);
}

#[tokio::test]
async fn a_retiring_generation_stops_working_when_its_grace_ends() {
    let app = app().await;
    let (id, old_secret) = runner(&app, "c4").await;
    let mut ws = connect(&app, &id, &old_secret, "i1").await;
    let r = refresh(
        &app,
        "c4",
        json!({"confirm": "refresh", "mode": "overlap", "grace_seconds": 1}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        closed_with(&mut ws).await,
        Some(4401),
        "cut when the grace ended"
    );
    assert_eq!(app.token_basic(&id, &old_secret).await.status, 401);
    assert_eq!(
        states(&credentials(&app, "c4").await)[1],
        (1, "revoked".to_owned())
    );
    let audit = app
        .get("/api/v1/audit?runner=c4", Some(&app.admin_token))
        .await
        .json();
    assert!(audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| e["action"] == "credential.grace_expired"));
}

#[tokio::test]
async fn runs_in_progress_refuse_a_refresh_unless_forced() {
    let app = app().await;
    let (id, secret) = runner(&app, "c5").await;
    let mut ws = connect(&app, &id, &secret, "i1").await;
    let run = assign_slow_run(&app, "p", "c5", &mut ws).await;
    let p = refresh(&app, "c5", json!({"confirm": "refresh"}))
        .await
        .assert_problem(409, "runs_in_progress");
    assert_eq!(p["runs"][0]["id"], run["id"]);
    assert_eq!(p["runs"][0]["pipeline"], "p");
    assert_eq!(
        states(&credentials(&app, "c5").await).len(),
        1,
        "nothing changed"
    );
    let r = refresh(&app, "c5", json!({"confirm": "refresh", "force": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["generation"], 2);
}

#[tokio::test]
async fn concurrent_refreshes_leave_exactly_one_active_generation() {
    let app = app().await;
    let (id, _) = runner(&app, "c6").await;
    let body = json!({"confirm": "refresh"});
    let (a, b) = tokio::join!(refresh(&app, "c6", body.clone()), refresh(&app, "c6", body));
    assert_eq!((a.status, b.status), (200, 200), "{} {}", a.body, b.body);
    let (a, b) = (a.json(), b.json());
    let mut gens = [a["generation"].as_u64(), b["generation"].as_u64()];
    gens.sort();
    assert_eq!(gens, [Some(2), Some(3)]);
    // The later one names the earlier one as its previous generation.
    let (first, second) = if a["generation"] == 2 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(first["previous_generation"], 1);
    assert_eq!(second["previous_generation"], 2);
    let s = states(&credentials(&app, "c6").await);
    assert_eq!(s.iter().filter(|(_, st)| st == "active").count(), 1);
    assert_eq!(s[0], (3, "active".to_owned()));
    let second_secret = second["client_secret"].as_str().expect("secret");
    let first_secret = first["client_secret"].as_str().expect("secret");
    assert_eq!(app.token_basic(&id, second_secret).await.status, 200);
    assert_eq!(app.token_basic(&id, first_secret).await.status, 401);
}

#[tokio::test]
async fn reveal_returns_the_new_secret_until_the_window_closes_and_leaves_no_plaintext() {
    let app = spawn_app_with(|c| {
        c.reveal_window = Duration::from_secs(2);
        c.flush_interval = Duration::from_millis(200);
    })
    .await;
    let (id, _) = runner(&app, "c7").await;
    app.post(
        "/api/v1/runners/c7/credentials/reveal",
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .assert_problem(410, "reveal_window_closed");
    let fresh = refresh(&app, "c7", json!({"confirm": "refresh"}))
        .await
        .json();
    let secret = fresh["client_secret"].as_str().expect("secret").to_owned();
    let r = app
        .post(
            "/api/v1/runners/c7/credentials/reveal",
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["client_secret"], secret.as_str());
    assert_eq!(r.json()["client_id"], id.as_str());
    assert_eq!(r.json()["generation"], 2);
    assert!(credentials(&app, "c7").await["reveal_until"].is_string());
    let viewer = app.user_token("v", "viewer").await;
    app.post(
        "/api/v1/runners/c7/credentials/reveal",
        Some(&viewer),
        &json!({}),
    )
    .await
    .assert_problem(403, "forbidden");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    app.post(
        "/api/v1/runners/c7/credentials/reveal",
        Some(&app.admin_token),
        &json!({}),
    )
    .await
    .assert_problem(410, "reveal_window_closed");
    assert!(credentials(&app, "c7").await["reveal_until"].is_null());
    let audit = app
        .get("/api/v1/audit?runner=c7", Some(&app.admin_token))
        .await
        .json();
    assert!(audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| e["action"] == "credentials.revealed"));
    // Neither the plaintext nor the sealed copy is left in the database files.
    app.server().state().store.ping().await.expect("ping");
    for entry in std::fs::read_dir(app.data_dir.path()).expect("data dir") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the plaintext secret",
            path.display()
        );
    }
    let sealed = app
        .server()
        .state()
        .store
        .sealed_secret(
            runner_view(&app, "c7").await["id"]
                .as_str()
                .expect("id")
                .parse::<tether_domain::RunnerId>()
                .expect("runner id"),
            time::OffsetDateTime::UNIX_EPOCH,
        )
        .await
        .expect("query");
    assert!(sealed.is_none(), "the sweeper deleted the ciphertext");
}

#[tokio::test]
async fn a_rotations_steps_share_one_id_in_the_audit_log() {
    let app = app().await;
    runner(&app, "c8").await;
    let step = |body: Value| {
        let app = &app;
        async move {
            app.post(
                "/api/v1/runners/c8/rotations",
                Some(&app.admin_token),
                &body,
            )
            .await
        }
    };
    let started = step(json!({"step": "started", "detail": {"secret": "arn:x"}})).await;
    assert_eq!(started.status, 201, "{}", started.body);
    let id = started.json()["rotation_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(id.starts_with("rot_") && id.len() == 20, "{id}");
    step(json!({"step": "secret_written"}))
        .await
        .assert_problem(422, "invalid_field");
    step(json!({"step": "started", "rotation_id": id}))
        .await
        .assert_problem(422, "invalid_field");
    step(json!({"step": "exploded", "rotation_id": id}))
        .await
        .assert_problem(422, "invalid_field");
    step(json!({"step": "completed", "rotation_id": "rot_nothex!"}))
        .await
        .assert_problem(422, "invalid_field");
    step(json!({"step": "completed", "rotation_id": id, "detail": [1]}))
        .await
        .assert_problem(422, "invalid_field");
    let viewer = app.user_token("v", "viewer").await;
    app.post(
        "/api/v1/runners/c8/rotations",
        Some(&viewer),
        &json!({"step": "started"}),
    )
    .await
    .assert_problem(403, "forbidden");
    let r = refresh(
        &app,
        "c8",
        json!({"confirm": "refresh", "mode": "overlap", "rotation_id": id}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .post(
            "/api/v1/runners/c8/credentials/revoke-previous",
            Some(&app.admin_token),
            &json!({"rotation_id": id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        step(json!({"step": "completed", "rotation_id": id}))
            .await
            .status,
        201
    );
    let audit = app
        .get("/api/v1/audit?runner=c8", Some(&app.admin_token))
        .await
        .json();
    let mut steps: Vec<&str> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["detail"]["rotation_id"] == id.as_str())
        .filter_map(|e| e["action"].as_str())
        .collect();
    steps.reverse();
    assert_eq!(
        steps,
        [
            "rotation.started",
            "credentials.refreshed",
            "credentials.previous_revoked",
            "rotation.completed"
        ]
    );
}
