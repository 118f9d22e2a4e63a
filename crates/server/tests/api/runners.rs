use reqwest::Method;
use serde_json::json;
use tether_testkit::spawn_app;

#[tokio::test]
async fn create_returns_credentials_once_and_get_never_does() {
    let app = spawn_app().await;
    let created = app.create_runner("prod-eu-1", "aws_fargate").await;
    let client_id = created["credentials"]["client_id"]
        .as_str()
        .expect("client_id");
    let secret = created["credentials"]["client_secret"]
        .as_str()
        .expect("client_secret");
    assert!(client_id.starts_with("tcid_"));
    assert!(secret.starts_with("tcs_"));
    assert_eq!(created["name"], "prod-eu-1");
    assert_eq!(created["platform"], "aws_fargate");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["credential_generation"], 1);
    assert_eq!(created["client_id"], client_id);
    assert_eq!(created["instances"], json!([]));

    let id = created["id"].as_str().expect("id");
    for key in [id, "prod-eu-1"] {
        let r = app
            .get(&format!("/api/v1/runners/{key}"), Some(&app.admin_token))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["id"], id);
        assert!(!r.body.contains(secret), "GET must never return the secret");
        assert!(!r.body.contains("client_secret"));
    }
    let list = app.get("/api/v1/runners", Some(&app.admin_token)).await;
    assert!(!list.body.contains(secret));
}

#[tokio::test]
async fn list_pages_with_a_cursor_in_creation_order() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.create_runner(&format!("r{i}"), "local").await;
    }
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/runners?limit=2&cursor={c}"),
            None => "/api/v1/runners?limit=2".to_owned(),
        };
        let page = app.get(&path, Some(&app.admin_token)).await.json();
        pages += 1;
        for r in page["runners"].as_array().expect("runners") {
            names.push(r["name"].as_str().expect("name").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["r0", "r1", "r2", "r3", "r4"]);

    let all = app
        .get("/api/v1/runners", Some(&app.admin_token))
        .await
        .json();
    assert_eq!(all["runners"].as_array().expect("runners").len(), 5);
    assert!(all["next_cursor"].is_null());
}

#[tokio::test]
async fn bad_paging_parameters_are_422_naming_the_field() {
    let app = spawn_app().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=100000", "limit"),
        ("cursor=!!!", "cursor"),
        ("cursor=bm90LWEtdXVpZA", "cursor"),
        ("limit=1&limit=2", "limit"),
    ] {
        let r = app
            .get(&format!("/api/v1/runners?{query}"), Some(&app.admin_token))
            .await;
        let p = r.assert_problem(422, "invalid_field");
        assert_eq!(p["field"], field, "{query}");
    }
}

#[tokio::test]
async fn duplicate_names_conflict() {
    let app = spawn_app().await;
    app.create_runner("dup", "gke").await;
    let r = app
        .post(
            "/api/v1/runners",
            Some(&app.admin_token),
            &json!({"name": "dup", "platform": "local"}),
        )
        .await;
    let p = r.assert_problem(409, "runner_name_taken");
    assert!(p["detail"].as_str().expect("detail").contains("dup"));
}

#[tokio::test]
async fn invalid_fields_are_422_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"name": "Bad_Name", "platform": "local"}), "name"),
        (json!({"name": "", "platform": "local"}), "name"),
        (json!({"name": "x".repeat(64), "platform": "local"}), "name"),
        (json!({"name": "ok", "platform": "aws"}), "platform"),
        (
            json!({"name": "ok", "platform": "local", "description": "x".repeat(2000)}),
            "description",
        ),
        (json!({"platform": "local"}), "name"),
        (json!({"name": "ok"}), "platform"),
        (json!({"name": 7, "platform": "local"}), "name"),
        (json!({"name": "ok", "platform": ["local"]}), "platform"),
        (json!(["not", "an", "object"]), "body"),
    ];
    for (body, field) in cases {
        let r = app
            .post("/api/v1/runners", Some(&app.admin_token), &body)
            .await;
        let p = r.assert_problem(422, "invalid_field");
        assert_eq!(p["field"], field, "body {body}: {p}");
    }
    let err = app
        .post(
            "/api/v1/runners",
            Some(&app.admin_token),
            &json!({"name": "ok", "platform": "aws"}),
        )
        .await
        .json();
    assert!(
        err["detail"]
            .as_str()
            .expect("detail")
            .contains("aws_fargate"),
        "lists the valid platforms: {err}"
    );
    let list = app
        .get("/api/v1/runners", Some(&app.admin_token))
        .await
        .json();
    assert_eq!(
        list["runners"],
        json!([]),
        "nothing was created by bad input"
    );
}

#[tokio::test]
async fn malformed_json_wrong_type_and_oversized_bodies() {
    let app = spawn_app().await;
    let send = |body: Vec<u8>, content_type: Option<&'static str>| {
        let mut req = app
            .http
            .post(app.url("/api/v1/runners"))
            .bearer_auth(&app.admin_token)
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        async move { tether_testkit::TestApp::read(req.send().await.expect("sent")).await }
    };
    send(b"{\"name\": ".to_vec(), Some("application/json"))
        .await
        .assert_problem(400, "malformed_json");
    send(b"not json".to_vec(), Some("application/json"))
        .await
        .assert_problem(400, "malformed_json");
    send(b"{\"name\":\"a\",\"platform\":\"local\"}".to_vec(), None)
        .await
        .assert_problem(415, "unsupported_media_type");
    send(
        b"name=a".to_vec(),
        Some("application/x-www-form-urlencoded"),
    )
    .await
    .assert_problem(415, "unsupported_media_type");
    let big = format!(
        "{{\"name\":\"a\",\"platform\":\"local\",\"description\":\"{}\"}}",
        "x".repeat(100_000)
    );
    send(big.into_bytes(), Some("application/json"))
        .await
        .assert_problem(413, "payload_too_large");
}

#[tokio::test]
async fn unknown_runners_are_404() {
    let app = spawn_app().await;
    for key in [
        "nope",
        "0190a5f0-0000-7000-8000-000000000000",
        "NOT%20A%20NAME",
        "%E2%9C%93",
    ] {
        app.get(&format!("/api/v1/runners/{key}"), Some(&app.admin_token))
            .await
            .assert_problem(404, "runner_not_found");
        app.delete(&format!("/api/v1/runners/{key}"), Some(&app.admin_token))
            .await
            .assert_problem(404, "runner_not_found");
    }
}

#[tokio::test]
async fn delete_revokes_the_credentials_and_frees_the_name() {
    let app = spawn_app().await;
    let created = app.create_runner("doomed", "snowflake").await;
    let client_id = created["credentials"]["client_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let secret = created["credentials"]["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let access = app.access_token(&client_id, &secret).await;

    let r = app
        .delete("/api/v1/runners/doomed", Some(&app.admin_token))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(r.body.is_empty());
    app.get("/api/v1/runners/doomed", Some(&app.admin_token))
        .await
        .assert_problem(404, "runner_not_found");

    let token = app.token_basic(&client_id, &secret).await;
    assert_eq!(token.status, 401);
    assert_eq!(token.json()["error"], "invalid_client");
    let intro = app
        .post_form(
            "/oauth/introspect",
            None,
            Some(&app.admin_token),
            &[("token", &access)],
        )
        .await;
    assert_eq!(
        intro.json()["active"],
        false,
        "tokens of a deleted runner are dead"
    );

    let again = app.create_runner("doomed", "local").await;
    assert_ne!(
        again["credentials"]["client_id"],
        client_id.as_str(),
        "a new runner gets a new client id"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    app.get("/api/v1/nothing-here", Some(&app.admin_token))
        .await
        .assert_problem(404, "route_not_found");
    app.request(
        Method::PUT,
        "/api/v1/runners",
        Some(&app.admin_token),
        Some(&json!({})),
    )
    .await
    .assert_problem(405, "method_not_allowed");
}
