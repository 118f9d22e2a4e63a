use reqwest::Method;
use serde_json::Value;
use tether_testkit::spawn_app;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let h = app.get("/healthz", None).await;
    assert_eq!(h.status, 200);
    let r = app.get("/readyz", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ready");
}

#[tokio::test]
async fn metrics_count_requests_and_tokens() {
    let app = spawn_app().await;
    let c = app.create_runner("m", "local").await;
    let (id, secret) = (
        c["credentials"]["client_id"].as_str().expect("id"),
        c["credentials"]["client_secret"].as_str().expect("secret"),
    );
    app.access_token(id, secret).await;
    app.access_token(id, secret).await;
    assert_eq!(app.token_basic(id, "tcs_bad").await.status, 401);
    let m = app.get("/metrics", None).await;
    assert_eq!(m.status, 200);
    let text = m.body;
    assert!(
        text.contains("tether_oauth_tokens_issued_total 2"),
        "{text}"
    );
    assert!(
        text.contains(r#"tether_oauth_tokens_refused_total{reason="malformed_secret"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"tether_http_requests_total{method="POST",route="/oauth/token",status="200"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("tether_http_request_duration_seconds_bucket{")
                && l.contains(r#"route="/api/v1/runners""#)
        ),
        "{text}"
    );
    assert!(!text.contains(secret));
}

/// The OpenAPI document and the router agree: every documented operation is routed, with the
/// documented auth, and nothing undocumented under /api/v1 answers.
#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let app = spawn_app().await;
    let doc = app.get("/api/v1/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    let doc: Value = doc.json();
    assert_eq!(
        doc["openapi"].as_str().map(|v| v.starts_with("3.1")),
        Some(true)
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{runner}", "some-runner")
            .replace("{username}", "someone")
            .replace("{name}", "some-pipeline")
            .replace("{id}", "0190b5a0-0000-7000-8000-000000000000");
        for (method, op) in item.as_object().expect("path item") {
            let Ok(m) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            let r = app.request(m, &concrete, None, None).await;
            let label = format!("{method} {path}");
            assert_ne!(r.status, 405, "{label} is documented but not routed");
            if r.status == 404 {
                assert_ne!(
                    r.json()["code"],
                    "route_not_found",
                    "{label} is documented but not routed"
                );
            }
            let secured = op
                .get("security")
                .is_none_or(|s| s.as_array().is_none_or(|a| !a.is_empty()));
            let uses_api_auth = path.starts_with("/api/v1/") && path != "/api/v1/openapi.json";
            if uses_api_auth && secured {
                assert_eq!(r.status, 401, "{label} must require authentication");
            }
            assert!(
                op["responses"].is_object(),
                "{label} documents its responses"
            );
        }
    }
    assert!(operations >= 15, "only {operations} operations documented");
    for (method, path) in [
        ("get", "/api/v1/runners"),
        ("post", "/oauth/token"),
        ("delete", "/api/v1/runners/{runner}"),
        ("put", "/api/v1/pipelines/{name}"),
        ("post", "/api/v1/runs/{id}/cancel"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} must be documented"
        );
    }
}

#[tokio::test]
async fn every_response_carries_its_own_request_id() {
    let app = spawn_app().await;
    let a = app.get("/healthz", None).await;
    let b = app.get("/api/v1/runners", None).await;
    let (a, b) = (
        a.header("x-request-id")
            .expect("id on a success")
            .to_owned(),
        b.header("x-request-id").expect("id on an error").to_owned(),
    );
    assert_ne!(a, b);
    assert!(a.len() >= 10 && a.contains('-'), "{a}");
}

/// No metrics label comes from the client: requests with made-up methods and to paths no route
/// matches add no series of their own, so `/metrics` stays the same size however many arrive.
#[tokio::test]
async fn made_up_methods_and_unmatched_paths_share_one_label() {
    let app = spawn_app().await;
    for i in 0..40 {
        let method = Method::from_bytes(format!("X{}{i}", "Y".repeat(200)).as_bytes())
            .expect("a method token");
        app.http
            .request(method, format!("{}/api/v1/runners", app.base_url))
            .send()
            .await
            .expect("request");
        app.get(&format!("/no/such/path/{i}"), None).await;
    }
    let text = app.get("/metrics", None).await.body;
    assert!(!text.contains("YYYY"), "a client's method became a label");
    assert!(!text.contains("/no/such"), "a client's path became a label");
    assert!(
        text.contains(
            r#"tether_http_requests_total{method="other",route="/api/v1/runners",status="405"} 40"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"tether_http_requests_total{method="GET",route="other",status="404"} 40"#),
        "{text}"
    );
}

/// Found by schemathesis against the document: these answered plain text or refused what the
/// document allows.
#[tokio::test]
async fn odd_requests_get_problem_documents_and_what_the_document_allows_works() {
    let app = spawn_app().await;
    // Not a WebSocket upgrade on the session endpoint: without a token 401, with one 400.
    app.get("/runner/v1/connect", None)
        .await
        .assert_problem(401, "unauthenticated");
    let c = app.create_runner("ws", "local").await;
    let token = app
        .access_token(
            c["credentials"]["client_id"].as_str().expect("id"),
            c["credentials"]["client_secret"].as_str().expect("secret"),
        )
        .await;
    let r = app.get("/runner/v1/connect", Some(&token)).await;
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.body
    );
    r.assert_problem(400, "websocket_upgrade_required");
    // A path segment that is not UTF-8 once decoded.
    let r = app
        .get("/api/v1/runners/%FF%FE", Some(&app.admin_token))
        .await;
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.body
    );
    r.assert_problem(400, "invalid_path");
    // An empty cursor is the first page.
    let r = app
        .get("/api/v1/runners?cursor=", Some(&app.admin_token))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["runners"][0]["name"], "ws");
    let r = app
        .get("/api/v1/audit?cursor=", Some(&app.admin_token))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}
