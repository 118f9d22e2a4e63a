use std::time::Duration;

use serde_json::Value;
use tether_testkit::{spawn_app, TestApp};

async fn events(app: &TestApp, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/api/v1/audit{query}"), Some(&app.admin_token))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["events"].as_array().expect("events").clone()
}

fn actions(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect()
}

#[tokio::test]
async fn runner_and_user_changes_are_audited_with_actor_and_source() {
    let app = spawn_app().await;
    app.create_runner("aud", "azure_container_app").await;
    app.user_token("ursula", "viewer").await;
    let r = app
        .delete("/api/v1/runners/aud", Some(&app.admin_token))
        .await;
    assert_eq!(r.status, 204);

    let all = events(&app, "").await;
    assert_eq!(
        actions(&all),
        [
            "runner.deleted",
            "token.created",
            "user.created",
            "runner.created",
            "admin.bootstrapped"
        ],
        "newest first"
    );
    let created = &all[3];
    assert_eq!(created["actor"], "user:admin");
    assert_eq!(created["runner"], "aud");
    assert_eq!(created["source_ip"], "127.0.0.1");
    assert_eq!(created["detail"]["platform"], "azure_container_app");
    assert!(
        created["at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "RFC 3339 UTC"
    );

    let by_runner = events(&app, "?runner=aud").await;
    assert_eq!(actions(&by_runner), ["runner.deleted", "runner.created"]);
    let body = app.get("/api/v1/audit", Some(&app.admin_token)).await.body;
    assert!(!body.contains("tcs_"), "no secret in the audit log");
}

#[tokio::test]
async fn audit_pages_newest_first() {
    let app = spawn_app().await;
    for i in 0..4 {
        app.create_runner(&format!("p{i}"), "local").await;
    }
    let first = app
        .get("/api/v1/audit?limit=3", Some(&app.admin_token))
        .await
        .json();
    assert_eq!(first["events"].as_array().expect("events").len(), 3);
    let cursor = first["next_cursor"].as_str().expect("more pages");
    let second = app
        .get(
            &format!("/api/v1/audit?limit=3&cursor={cursor}"),
            Some(&app.admin_token),
        )
        .await
        .json();
    let ids: Vec<i64> = first["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(second["events"].as_array().into_iter().flatten())
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids.len(), 5, "4 creations and the bootstrap");
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "strictly descending: {ids:?}"
    );
    assert!(second["next_cursor"].is_null());
}

#[tokio::test]
async fn token_traffic_is_audited_in_aggregate() {
    let app = spawn_app().await;
    let c = app.create_runner("busy", "local").await;
    let id = c["credentials"]["client_id"].as_str().expect("id");
    let secret = c["credentials"]["client_secret"].as_str().expect("secret");
    for _ in 0..5 {
        app.access_token(id, secret).await;
    }
    let wrong = tether_domain::ClientSecret::generate();
    for _ in 0..3 {
        assert_eq!(app.token_basic(id, wrong.expose()).await.status, 401);
    }
    // The flush interval is 200 ms in tests; poll rather than sleep a fixed time.
    let mut found = Vec::new();
    for _ in 0..50 {
        found = events(&app, "?runner=busy").await;
        if actions(&found).contains(&"oauth.token_refused")
            && actions(&found).contains(&"credential.first_token")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acts = actions(&found);
    assert_eq!(
        acts.iter()
            .filter(|a| **a == "credential.first_token")
            .count(),
        1,
        "{acts:?}"
    );
    let refused: Vec<&Value> = found
        .iter()
        .filter(|e| e["action"] == "oauth.token_refused")
        .collect();
    assert_eq!(refused.len(), 1, "one event for the burst: {acts:?}");
    assert_eq!(refused[0]["detail"]["count"], 3);
    assert_eq!(refused[0]["detail"]["last_reason"], "wrong_secret");
    assert_eq!(
        acts.len(),
        3,
        "created, first token, one refused burst — not one row per request: {acts:?}"
    );
}
