use serde_json::json;
use tether_testkit::spawn_app;

#[tokio::test]
async fn admins_create_users_and_tokens_that_work() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/users",
            Some(&app.admin_token),
            &json!({"username": "alice", "password": "a long enough password", "role": "operator"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let user = r.json();
    assert_eq!(user["username"], "alice");
    assert_eq!(user["role"], "operator");
    assert!(
        !r.body.contains("password"),
        "no password or hash in the answer"
    );

    let t = app
        .post(
            "/api/v1/users/alice/tokens",
            Some(&app.admin_token),
            &json!({"name": "laptop"}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.body);
    let token = t.json()["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("tpat_"));
    let me = app.get("/api/v1/me", Some(&token)).await.json();
    assert_eq!(
        me,
        json!({"username": "alice", "role": "operator", "token_id": t.json()["id"]})
    );

    // Users create their own further tokens.
    let own = app
        .post(
            "/api/v1/users/alice/tokens",
            Some(&token),
            &json!({"name": "ci"}),
        )
        .await;
    assert_eq!(own.status, 201, "{}", own.body);
}

#[tokio::test]
async fn user_input_errors() {
    let app = spawn_app().await;
    let post = |body: serde_json::Value| {
        let app = &app;
        async move {
            app.post("/api/v1/users", Some(&app.admin_token), &body)
                .await
        }
    };
    let p = post(json!({"username": "bob", "password": "short", "role": "viewer"}))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(p["field"], "password");
    let p = post(json!({"username": "bob", "password": "a long enough password", "role": "root"}))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(p["field"], "role");
    let p =
        post(json!({"username": "Bob!", "password": "a long enough password", "role": "viewer"}))
            .await
            .assert_problem(422, "invalid_field");
    assert_eq!(p["field"], "username");
    let p = post(json!({"username": "bob", "role": "viewer"}))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(p["field"], "password");
    post(json!({"username": "admin", "password": "a long enough password", "role": "viewer"}))
        .await
        .assert_problem(409, "user_exists");

    app.post(
        "/api/v1/users/ghost/tokens",
        Some(&app.admin_token),
        &json!({"name": "x"}),
    )
    .await
    .assert_problem(404, "user_not_found");
    let p = app
        .post(
            "/api/v1/users/admin/tokens",
            Some(&app.admin_token),
            &json!({"name": ""}),
        )
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(p["field"], "name");
}

#[tokio::test]
async fn non_admins_cannot_mint_tokens_for_others() {
    let app = spawn_app().await;
    let viewer = app.user_token("vic", "viewer").await;
    let operator = app.user_token("olga", "operator").await;
    for t in [&viewer, &operator] {
        app.post(
            "/api/v1/users/admin/tokens",
            Some(t),
            &json!({"name": "steal"}),
        )
        .await
        .assert_problem(403, "forbidden");
    }
    let own = app
        .post(
            "/api/v1/users/vic/tokens",
            Some(&viewer),
            &json!({"name": "mine"}),
        )
        .await;
    assert_eq!(own.status, 201, "{}", own.body);
}

#[tokio::test]
async fn bad_and_missing_api_tokens_are_401() {
    let app = spawn_app().await;
    app.get("/api/v1/runners", None)
        .await
        .assert_problem(401, "unauthenticated");
    let r = app.get("/api/v1/runners", Some("tpat_garbage")).await;
    r.assert_problem(401, "invalid_token");
    assert!(r
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Bearer")));
    app.get("/api/v1/runners", Some(&"x".repeat(40)))
        .await
        .assert_problem(401, "invalid_token");
    let basic = app
        .http
        .get(app.url("/api/v1/runners"))
        .basic_auth("admin", Some("pw"))
        .send()
        .await
        .expect("sent");
    tether_testkit::TestApp::read(basic)
        .await
        .assert_problem(401, "invalid_token");
}

async fn user_with_token(
    app: &tether_testkit::TestApp,
    name: &str,
    role: &str,
) -> (String, String) {
    let token = app.user_token(name, role).await;
    let me = app.get("/api/v1/me", Some(&token)).await.json();
    (token, me["token_id"].as_str().expect("token id").to_owned())
}

#[tokio::test]
async fn tokens_are_listed_without_their_values_and_revoked_at_once() {
    let app = spawn_app().await;
    let (token, id) = user_with_token(&app, "tess", "operator").await;
    let second = app
        .post(
            "/api/v1/users/tess/tokens",
            Some(&token),
            &json!({"name": "ci", "expires_in": 3600}),
        )
        .await;
    assert_eq!(second.status, 201, "{}", second.body);
    let created = second.json();
    let expires = time::OffsetDateTime::parse(
        created["expires_at"].as_str().expect("expires_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::minutes(59) && left <= time::Duration::hours(1),
        "{left}"
    );

    // Used once above; the use is written with the next flush (200 ms in tests).
    app.get("/api/v1/runners", Some(&token)).await;
    let mut listed = serde_json::Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        listed = app
            .get("/api/v1/users/tess/tokens", Some(&token))
            .await
            .json();
        if listed["tokens"][0]["last_used_at"].is_string() {
            break;
        }
    }
    let tokens = listed["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 2, "{listed}");
    assert_eq!(tokens[0]["id"], id.as_str());
    assert!(tokens[0]["last_used_at"].is_string(), "{listed}");
    assert!(tokens[0]["expires_at"].is_null());
    assert_eq!(tokens[1]["name"], "ci");
    assert_eq!(tokens[1]["last_used_at"], serde_json::Value::Null);
    assert!(
        !listed.to_string().contains("tpat_"),
        "no token value is listed"
    );

    // Others cannot see or revoke them; the admin can.
    let (other, _) = user_with_token(&app, "otto", "operator").await;
    app.get("/api/v1/users/tess/tokens", Some(&other))
        .await
        .assert_problem(403, "forbidden");
    app.delete(&format!("/api/v1/users/tess/tokens/{id}"), Some(&other))
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(
        app.get("/api/v1/users/tess/tokens", Some(&app.admin_token))
            .await
            .status,
        200
    );

    let r = app
        .delete(&format!("/api/v1/users/tess/tokens/{id}"), Some(&token))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    app.get("/api/v1/me", Some(&token))
        .await
        .assert_problem(401, "invalid_token");
    app.delete(
        &format!("/api/v1/users/tess/tokens/{id}"),
        Some(&app.admin_token),
    )
    .await
    .assert_problem(404, "token_not_found");
    app.delete(
        "/api/v1/users/tess/tokens/not-an-id",
        Some(&app.admin_token),
    )
    .await
    .assert_problem(404, "token_not_found");
    let audit = app
        .get("/api/v1/audit?limit=50", Some(&app.admin_token))
        .await
        .body;
    assert!(audit.contains("token.revoked"), "{audit}");
}

#[tokio::test]
async fn a_token_lifetime_is_checked() {
    let app = spawn_app().await;
    for bad in [json!(59), json!(31_622_401u64), json!(-5), json!("1h")] {
        let r = app
            .post(
                "/api/v1/users/admin/tokens",
                Some(&app.admin_token),
                &json!({"name": "x", "expires_in": bad}),
            )
            .await;
        let p = r.assert_problem(422, "invalid_field");
        assert_eq!(p["field"], "expires_in", "{bad}: {p}");
    }
}

#[tokio::test]
async fn users_are_listed_and_deleted_with_their_tokens_but_never_the_last_admin() {
    let app = spawn_app().await;
    let (bob, _) = user_with_token(&app, "bob", "viewer").await;
    let list = app.get("/api/v1/users", Some(&app.admin_token)).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let names: Vec<_> = list.json()["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["username"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names, ["admin", "bob"]);
    app.get("/api/v1/users", Some(&bob))
        .await
        .assert_problem(403, "forbidden");
    app.delete("/api/v1/users/admin", Some(&bob))
        .await
        .assert_problem(403, "forbidden");
    app.delete("/api/v1/users/admin", Some(&app.admin_token))
        .await
        .assert_problem(409, "last_admin");
    app.delete("/api/v1/users/nobody", Some(&app.admin_token))
        .await
        .assert_problem(404, "user_not_found");

    let r = app
        .delete("/api/v1/users/bob", Some(&app.admin_token))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    app.get("/api/v1/me", Some(&bob))
        .await
        .assert_problem(401, "invalid_token");
    let audit = app
        .get("/api/v1/audit?limit=50", Some(&app.admin_token))
        .await
        .body;
    assert!(audit.contains("user.deleted"), "{audit}");
}
