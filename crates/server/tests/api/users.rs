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
    assert_eq!(me, json!({"username": "alice", "role": "operator"}));

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
