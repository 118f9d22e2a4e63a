//! The credential flow tells the truth in every mode: an overlap refresh is never refused for
//! running pipelines and cuts nothing; each instance's secret source and hot reload; the
//! `credential_rollout` of a runner moving `waiting` → `applied` and `overlap` → `applied`; "last
//! used" counting re-authentication; who revoked a generation and when; `revoke-previous` with no
//! body saying what it did; a bootstrap token chosen by automation.

use std::time::Duration;

use serde_json::{json, Value};
use tether_domain::ApiToken;
use tether_testkit::{spawn_app_with, TestApp};

use crate::ws::{assign_slow_run, next, open, runner, send, Ws};

async fn app() -> TestApp {
    spawn_app_with(|c| {
        c.heartbeat = Duration::from_secs(1);
        c.flush_interval = Duration::from_millis(100);
    })
    .await
}

/// A raw session saying where its secret comes from, as a real runner's hello does.
async fn connect_with(
    app: &TestApp,
    id: &str,
    secret: &str,
    instance: &str,
    source: &str,
    hot_reload: bool,
) -> Ws {
    let token = app.access_token(id, secret).await;
    let mut ws = open(app, &token).await.expect("upgrade");
    let mut hello = json!({"type": "hello", "protocol": 1, "runner_version": "9.9.9",
        "instance_id": instance, "hostname": "h", "platform": "local", "capacity": 4,
        "secret_source": source, "hot_reload": hot_reload});
    if source == "file" {
        hello["secret_file"] = json!("/run/secrets/tether/client_secret");
    }
    send(&mut ws, hello).await;
    assert_eq!(next(&mut ws).await.expect("welcome")["type"], "welcome");
    ws
}

async fn view(app: &TestApp, runner: &str) -> Value {
    app.get(&format!("/api/v1/runners/{runner}"), Some(&app.admin_token))
        .await
        .json()
}

async fn credentials(app: &TestApp, runner: &str) -> Value {
    app.get(
        &format!("/api/v1/runners/{runner}/credentials"),
        Some(&app.admin_token),
    )
    .await
    .json()
}

async fn refresh(app: &TestApp, runner: &str, body: Value) -> Value {
    let r = app
        .post(
            &format!("/api/v1/runners/{runner}/credentials/refresh"),
            Some(&app.admin_token),
            &body,
        )
        .await;
    assert_eq!(r.status, 200, "refresh: {}", r.body);
    r.json()
}

async fn revoke_previous_without_a_body(app: &TestApp, runner: &str) -> Value {
    let r = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/runners/{runner}/credentials/revoke-previous"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "revoke-previous with no body: {}", r.body);
    r.json()
}

#[tokio::test]
async fn an_overlap_refresh_with_a_run_in_progress_proceeds_and_cuts_nothing() {
    let app = app().await;
    let (id, secret) = runner(&app, "busy").await;
    let mut ws = connect_with(&app, &id, &secret, "i1", "file", true).await;
    assign_slow_run(&app, "slow", "busy", &mut ws).await;
    // Revoke mode is still refused...
    app.post(
        "/api/v1/runners/busy/credentials/refresh",
        Some(&app.admin_token),
        &json!({"confirm": "refresh"}),
    )
    .await
    .assert_problem(409, "runs_in_progress");
    // ...overlap is not: nothing is disconnected.
    let r = refresh(
        &app,
        "busy",
        json!({"confirm": "refresh", "mode": "overlap", "grace_seconds": 600}),
    )
    .await;
    assert_eq!(
        (r["mode"].as_str(), r["sessions_closed"].as_u64()),
        (Some("overlap"), Some(0))
    );
    assert_eq!(
        next(&mut ws).await.expect("still connected"),
        json!({"type": "credentials_rotated", "generation": 2})
    );
    let v = view(&app, "busy").await;
    assert_eq!(v["instances"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["credential_rollout"]["state"], "overlap");
    assert_eq!(v["credential_rollout"]["instances_on_older"], 1);
    let summary = v["credential_rollout"]["summary"]
        .as_str()
        .expect("summary");
    assert!(
        summary.starts_with("overlap: 1 instance on the old secret, expires in "),
        "{summary}"
    );
}

#[tokio::test]
async fn each_instance_says_where_its_secret_comes_from_and_whether_it_reloads() {
    let app = app().await;
    let (id, secret) = runner(&app, "mixed").await;
    let _a = connect_with(&app, &id, &secret, "a-file", "file", true).await;
    let _b = connect_with(&app, &id, &secret, "b-env", "env", false).await;
    let _c = connect_with(&app, &id, &secret, "c-arn", "aws_secrets_manager", true).await;
    let v = view(&app, "mixed").await;
    let mut seen: Vec<(String, String, bool)> = v["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["instance_id"].as_str().expect("id").to_owned(),
                i["secret_source"].as_str().expect("source").to_owned(),
                i["hot_reload"].as_bool().expect("hot_reload"),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("a-file".into(), "file".into(), true),
            ("b-env".into(), "env".into(), false),
            ("c-arn".into(), "aws_secrets_manager".into(), true),
        ]
    );
    let file = v["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .find(|i| i["instance_id"] == "a-file")
        .expect("a-file");
    assert_eq!(file["secret_file"], "/run/secrets/tether/client_secret");
}

#[tokio::test]
async fn the_rollout_moves_from_waiting_to_applied_and_from_overlap_to_applied() {
    let app = app().await;
    let (id, secret) = runner(&app, "r1").await;
    // Revoke mode: the instance is cut; nothing is on the new generation: waiting.
    let mut ws = connect_with(&app, &id, &secret, "i1", "file", true).await;
    let fresh = refresh(&app, "r1", json!({"confirm": "refresh"})).await;
    while next(&mut ws).await.is_ok() {}
    let ro = view(&app, "r1").await["credential_rollout"].clone();
    assert_eq!(
        (
            ro["state"].as_str(),
            ro["generation"].as_u64(),
            ro["instances_on_newest"].as_u64()
        ),
        (Some("waiting"), Some(2), Some(0)),
        "{ro}"
    );
    let second = fresh["client_secret"].as_str().expect("secret").to_owned();
    let mut ws = connect_with(&app, &id, &second, "i1", "file", true).await;
    let ro = view(&app, "r1").await["credential_rollout"].clone();
    assert_eq!(ro["state"], "applied", "{ro}");
    assert!(ro["applied_since"].is_string(), "{ro}");
    assert!(
        ro["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("applied: 1 instance on generation 2 since ")),
        "{ro}"
    );

    // Overlap: still accepted, then every instance moves, then revoke-previous: applied.
    let fresh = refresh(
        &app,
        "r1",
        json!({"confirm": "refresh", "mode": "overlap", "grace_seconds": 600}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await.expect("rotated")["type"],
        "credentials_rotated"
    );
    let third = fresh["client_secret"].as_str().expect("secret").to_owned();
    let token = app.access_token(&id, &third).await;
    send(&mut ws, json!({"type": "reauth", "access_token": token})).await;
    assert_eq!(
        next(&mut ws).await.expect("reauth")["type"],
        "reauthenticated"
    );
    let ro = view(&app, "r1").await["credential_rollout"].clone();
    assert_eq!(
        (ro["state"].as_str(), ro["instances_on_newest"].as_u64()),
        (Some("overlap"), Some(1)),
        "the old secret is still accepted: {ro}"
    );
    assert!(ro["retiring_until"].is_string());
    let done = revoke_previous_without_a_body(&app, "r1").await;
    assert_eq!(done["revoked_generations"], json!([2]));
    assert_eq!(done["sessions_closed"], 0);
    assert_eq!(
        done["summary"],
        "revoked generation 2; no session was using it"
    );
    assert_eq!(done["credential_rollout"]["state"], "applied");
    assert_eq!(
        view(&app, "r1").await["credential_rollout"]["state"],
        "applied"
    );
}

#[tokio::test]
async fn revoke_previous_says_what_it_did_and_when_there_is_nothing_to_revoke() {
    let app = app().await;
    let (id, secret) = runner(&app, "r2").await;
    let mut ws = connect_with(&app, &id, &secret, "i1", "env", false).await;
    refresh(
        &app,
        "r2",
        json!({"confirm": "refresh", "mode": "overlap", "grace_seconds": 600}),
    )
    .await;
    let done = revoke_previous_without_a_body(&app, "r2").await;
    assert_eq!(done["revoked_generations"], json!([1]));
    assert_eq!(done["sessions_closed"], 1);
    assert_eq!(
        done["summary"],
        "revoked generation 1; 1 session on it was closed"
    );
    while next(&mut ws).await.is_ok() {}
    let again = revoke_previous_without_a_body(&app, "r2").await;
    assert_eq!(again["revoked_generations"], json!([]));
    assert_eq!(
        again["summary"],
        "nothing to revoke: no generation older than 2 of runner 'r2' is still accepted"
    );
    // A body stays allowed, and is checked.
    let r = app
        .post(
            "/api/v1/runners/r2/credentials/revoke-previous",
            Some(&app.admin_token),
            &json!({"rotation_id": "nope"}),
        )
        .await;
    r.assert_problem(422, "invalid_field");
}

#[tokio::test]
async fn a_revoked_generation_shows_when_and_by_whom_and_never_a_future_expiry() {
    let app = app().await;
    let (_, _) = runner(&app, "r3").await;
    refresh(
        &app,
        "r3",
        json!({"confirm": "refresh", "mode": "overlap", "grace_seconds": 600}),
    )
    .await;
    let before = credentials(&app, "r3").await;
    assert!(
        before["generations"][1]["expires_at"].is_string(),
        "retiring: {before}"
    );
    assert!(before["generations"][1]["revoked_at"].is_null());
    revoke_previous_without_a_body(&app, "r3").await;
    refresh(&app, "r3", json!({"confirm": "refresh"})).await;
    let creds = credentials(&app, "r3").await;
    for g in &creds["generations"].as_array().expect("generations")[1..] {
        assert_eq!(g["state"], "revoked", "{g}");
        assert!(
            g["expires_at"].is_null(),
            "a revoked generation works until nothing: {g}"
        );
        assert!(g["revoked_at"].is_string(), "{g}");
        assert_eq!(g["revoked_by"], "user:admin", "{g}");
    }
    assert!(creds["generations"][0]["revoked_at"].is_null());
}

#[tokio::test]
async fn last_used_counts_re_authentication_over_an_open_session() {
    let app = app().await;
    let (id, secret) = runner(&app, "r4").await;
    let mut ws = connect_with(&app, &id, &secret, "i1", "file", true).await;
    let fresh = refresh(
        &app,
        "r4",
        json!({"confirm": "refresh", "mode": "overlap", "grace_seconds": 600}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await.expect("rotated")["type"],
        "credentials_rotated"
    );
    let new = fresh["client_secret"].as_str().expect("secret").to_owned();
    let token = app.access_token(&id, &new).await;
    let last_used = |creds: &Value| {
        creds["generations"][0]["last_used_at"]
            .as_str()
            .map(str::to_owned)
    };
    let minted = loop {
        if let Some(t) = last_used(&credentials(&app, "r4").await) {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Later, the instance re-authenticates with that token: no new token was issued, but the
    // generation was used.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send(&mut ws, json!({"type": "reauth", "access_token": token})).await;
    assert_eq!(
        next(&mut ws).await.expect("reauth")["type"],
        "reauthenticated"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = last_used(&credentials(&app, "r4").await).expect("used");
        if now > minted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last used stayed at the token's issue time ({minted})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_bootstrap_token_chosen_by_automation_works_as_documented() {
    let chosen = "tpat_automation0123456789abcdefghijklmnop";
    let app = spawn_app_with(|c| {
        c.bootstrap_token = Some(ApiToken::parse_supplied(chosen).expect("32+ characters"));
    })
    .await;
    let me = app.get("/api/v1/me", Some(chosen)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["role"], "admin");
    // Other values are still refused.
    app.get(
        "/api/v1/me",
        Some("tpat_automation0123456789abcdefghijklmnoq"),
    )
    .await
    .assert_problem(401, "invalid_token");
}
