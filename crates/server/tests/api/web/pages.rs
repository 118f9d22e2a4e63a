//! The Runners list and its `...` menu, the runner tabs, pause/resume/restart, Create runner and
//! the admins' Users page.

use tether_testkit::spawn_app;

use super::browser::{by_id, has_id, unescape, user, Browser, PASSWORD};

#[tokio::test]
async fn the_runners_list_and_tabs_follow_the_contract() {
    let app = spawn_app().await;
    app.create_runner("r1", "snowflake").await;
    user(&app, "olga", "operator").await;
    let b = Browser::login(&app, "olga", PASSWORD).await;

    let list = b.get("/runners").await.body;
    for needle in [
        "href=\"/runners\"",
        ">Runners</a>",
        "<tr data-runner=\"r1\">",
        "<a href=\"/runners/r1\">r1</a>",
        "<span data-field=\"status\" data-status=\"pending\" title=\"registered; no instance has connected yet\">pending</span>",
        // The reason is text on the list, not only a tooltip.
        "<span class=\"muted reason\" data-field=\"reason\">registered; no instance has connected yet</span>",
        "<summary aria-label=\"Actions for r1\">...</summary>",
        ">Runner details</a>",
        ">Restart runner</button>",
        ">Pause runner</a>",
        ">Create runner</a>",
        ">Snowflake</td>",
        ">never</td>",
    ] {
        assert!(list.contains(needle), "{needle} in {list}");
    }
    for header in [
        "Runner",
        "Status",
        "Credentials",
        "Platform",
        "Version",
        "Last seen",
    ] {
        assert!(
            list.contains(&format!("<th scope=\"col\">{header}</th>")),
            "{header}"
        );
    }

    for (path, tab) in [
        ("/runners/r1", "Details"),
        ("/runners/r1/credentials", "Credentials"),
        ("/runners/r1/instances", "Instances"),
        ("/runners/r1/activity", "Activity"),
    ] {
        let page = b.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(
            page.body.contains(&format!(
                "<a role=\"tab\" href=\"{}\" aria-selected=\"true\">{tab}</a>",
                path
            )),
            "{path} selects {tab}"
        );
        assert_eq!(
            page.body.matches("aria-selected=\"false\"").count(),
            3,
            "{path}"
        );
        assert!(page.body.contains("id=\"runner-status\" class=\"badge\" data-name=\"r1\" data-status=\"pending\">pending<"));
        assert_eq!(
            by_id(&page.body, "runner-status-reason").as_deref(),
            Some("registered; no instance has connected yet")
        );
    }
    let details = b.get("/runners/r1").await.body;
    assert_eq!(
        by_id(&details, "runner-platform").as_deref(),
        Some("Snowflake")
    );
    assert!(details.contains("No instance is connected."));
    assert!(b
        .get("/runners/r1/activity")
        .await
        .body
        .contains("runner.created"));
    let missing = b.get("/runners/ghost").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("ghost"));
}

#[tokio::test]
async fn pause_needs_the_words_and_resume_and_restart_report_back() {
    let app = spawn_app().await;
    app.create_runner("r1", "local").await;
    user(&app, "olga", "operator").await;
    let b = Browser::login(&app, "olga", PASSWORD).await;
    let paused_by = || async {
        app.get("/api/v1/runners/r1", Some(&app.admin_token))
            .await
            .json()["paused_by"]
            .clone()
    };

    let page = b.get("/runners/r1/pause").await;
    assert_eq!(page.status, 200);
    assert!(has_id(&page.body, "confirm-pause") && page.body.contains("pause runner"));
    let r = b.post("/runners/r1/pause", &[("confirm", "pause")]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("role=\"alert\""));
    assert!(paused_by().await.is_null(), "nothing changed");

    let r = b
        .post(
            "/runners/r1/pause",
            &[("confirm", "pause runner"), ("back", "list")],
        )
        .await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/runners?done=paused"))
    );
    assert_eq!(paused_by().await, "user:olga");
    let list = b.get("/runners?done=paused").await.body;
    assert!(by_id(&list, "notice").is_some_and(|n| n.starts_with("Runner paused")));
    assert!(list.contains(">Resume runner</button>") && !list.contains(">Pause runner<"));

    let r = b.post("/runners/r1/resume", &[]).await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/runners/r1?done=resumed"))
    );
    assert!(paused_by().await.is_null());

    // Restart drains every instance, so the menu's button first asks; nothing happens yet.
    let r = b.post("/runners/r1/restart", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(has_id(&r.body, "restart-what") && has_id(&r.body, "restart-submit"));
    let ask = b.get("/runners/r1/restart").await;
    assert_eq!(ask.status, 200);
    assert!(ask.body.contains("name=\"confirm\" value=\"restart\""));
    // Nothing is connected, so there is nothing to restart; the page says so.
    let r = b
        .post("/runners/r1/restart", &[("confirm", "restart")])
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("no connected instance"), "{}", r.body);

    // Deleting wants the runner's name typed.
    assert!(b
        .get("/runners/r1")
        .await
        .body
        .contains(">Delete runner</a>"));
    assert!(has_id(
        &b.get("/runners/r1/delete").await.body,
        "confirm-delete"
    ));
    let r = b.post("/runners/r1/delete", &[("confirm", "r2")]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let api = |path: &'static str| async { app.get(path, Some(&app.admin_token)).await.status };
    assert_eq!(api("/api/v1/runners/r1").await, 200, "still there");
    let r = b.post("/runners/r1/delete", &[("confirm", "r1")]).await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/runners?done=deleted"))
    );
    assert_eq!(api("/api/v1/runners/r1").await, 404);
    assert!(by_id(&b.get("/runners?done=deleted").await.body, "notice")
        .is_some_and(|n| n.starts_with("Runner deleted")));
}

#[tokio::test]
async fn create_runner_shows_the_credentials_once_with_the_deployment_snippet() {
    let app = spawn_app().await;
    user(&app, "olga", "operator").await;
    let b = Browser::login(&app, "olga", PASSWORD).await;
    let form = b.get("/runners/new").await;
    assert_eq!(form.status, 200);
    assert!(has_id(&form.body, "name") && has_id(&form.body, "platform"));
    assert!(form.body.contains("<option value=\"gke\""));

    let r = b
        .post("/runners/new", &[("name", "gke-1"), ("platform", "gke")])
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let client_id = by_id(&r.body, "client-id").expect("client id");
    let secret = by_id(&r.body, "client-secret").expect("client secret");
    assert!(secret.starts_with("tcs_"));
    for needle in [
        "Deploy the runner",
        "values-gcp.yaml",
        "helm install tether-runner",
        ">Copy</button>",
    ] {
        assert!(r.body.contains(needle), "{needle}");
    }
    assert!(unescape(&r.body).contains(&format!("oauthClientSecret: \"{secret}\"")));
    assert_eq!(app.token_basic(&client_id, &secret).await.status, 200);
    for path in ["/runners", "/runners/gke-1", "/runners/gke-1/credentials"] {
        assert!(
            !b.get(path).await.body.contains(&secret),
            "{path} shows the secret"
        );
    }

    for (name, platform, status) in [
        ("Bad Name", "gke", 422),
        ("ok", "mainframe", 422),
        ("new", "local", 422),
        ("gke-1", "local", 409),
    ] {
        let r = b
            .post("/runners/new", &[("name", name), ("platform", platform)])
            .await;
        assert_eq!(r.status, status, "{name} {platform}: {}", r.body);
        assert!(r.body.contains("role=\"alert\""), "{}", r.body);
        assert!(!r.body.contains("tcs_"));
    }
}

#[tokio::test]
async fn the_users_page_is_for_admins_only() {
    let app = spawn_app().await;
    user(&app, "ada", "admin").await;
    user(&app, "olga", "operator").await;
    let o = Browser::login(&app, "olga", PASSWORD).await;
    assert_eq!(o.get("/users").await.status, 403);
    assert!(!o.get("/runners").await.body.contains("href=\"/users\""));
    let r = o.post("/users/olga/role", &[("role", "admin")]).await;
    assert_eq!(r.status, 403, "an operator cannot promote themself");

    let a = Browser::login(&app, "ada", PASSWORD).await;
    assert!(a.get("/runners").await.body.contains("href=\"/users\""));
    let page = a.get("/users").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<tr data-user=\"olga\">"));

    let r = a
        .post(
            "/users",
            &[
                ("username", "vic"),
                ("password", PASSWORD),
                ("role", "viewer"),
            ],
        )
        .await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/users?done=created"))
    );
    let vic = Browser::login(&app, "vic", PASSWORD).await;
    assert!(vic.get("/runners").await.body.contains("(viewer)"));
    let r = a
        .post(
            "/users",
            &[
                ("username", "vic"),
                ("password", PASSWORD),
                ("role", "viewer"),
            ],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = a
        .post(
            "/users",
            &[("username", "x"), ("password", "short"), ("role", "viewer")],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);

    // A role change applies to the open session at its next request.
    let r = a.post("/users/vic/role", &[("role", "operator")]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(vic.get("/runners").await.body.contains("(operator)"));

    // A reset password works at once; the old one, the user's sessions and API tokens end.
    let vics_token = app
        .post(
            "/api/v1/users/vic/tokens",
            Some(&app.admin_token),
            &serde_json::json!({"name": "laptop"}),
        )
        .await
        .json()["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(app.get("/api/v1/me", Some(&vics_token)).await.status, 200);
    let r = a
        .post(
            "/users/vic/password",
            &[("password", "another long password")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(vic.get("/runners").await.status, 303, "session ended");
    assert_eq!(
        app.get("/api/v1/me", Some(&vics_token)).await.status,
        401,
        "API token ended"
    );
    assert_eq!(
        Browser::new(&app)
            .try_login("vic", PASSWORD, None)
            .await
            .status,
        401
    );
    Browser::login(&app, "vic", "another long password").await;

    // The last admin cannot be demoted (the bootstrap admin and ada are two: demote one, then not the other).
    assert_eq!(
        a.post("/users/admin/role", &[("role", "viewer")])
            .await
            .status,
        303
    );
    let r = a.post("/users/ada/role", &[("role", "viewer")]).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("only admin"));
    assert_eq!(
        a.post("/users/ghost/role", &[("role", "viewer")])
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn an_admin_revokes_a_users_api_token_from_the_users_page() {
    let app = spawn_app().await;
    user(&app, "wes", "operator").await;
    user(&app, "ada", "admin").await;
    let created = app
        .post(
            "/api/v1/users/wes/tokens",
            Some(&app.admin_token),
            &serde_json::json!({"name": "leaked-laptop"}),
        )
        .await
        .json();
    let (token, id) = (
        created["token"].as_str().expect("token"),
        created["id"].as_str().expect("id"),
    );
    let a = Browser::login(&app, "ada", PASSWORD).await;
    let page = a.get("/users").await;
    assert!(
        page.body.contains(&format!("data-token=\"{id}\"")) && page.body.contains("leaked-laptop"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains(token),
        "the page never shows a token's value"
    );
    let r = a.post(&format!("/users/wes/tokens/{id}/revoke"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(app.get("/api/v1/me", Some(token)).await.status, 401);
    let after = a.get("/users?done=revoked").await;
    assert!(after.body.contains("API token revoked"), "{}", after.body);
    assert!(!after.body.contains(&format!("data-token=\"{id}\"")));
}
