//! The guide's refresh flow in the UI: the Credentials tab, the typed confirmation, the notice,
//! Reveal, "Apply the new credentials" per platform, runs in progress, and what viewers get.

use serde_json::json;
use tether_testkit::{spawn_app, TestApp};

use super::browser::{by_id, generations, has_id, unescape, user, Browser, PASSWORD};
use crate::ws::{connect, next, runner};

async fn operator(app: &TestApp) -> Browser<'_> {
    user(app, "olga", "operator").await;
    Browser::login(app, "olga", PASSWORD).await
}

#[tokio::test]
async fn refresh_needs_the_word_then_reveal_shows_a_secret_that_authenticates() {
    let app = spawn_app().await;
    let created = app.create_runner("aws1", "aws_fargate").await;
    let client_id = created["credentials"]["client_id"].as_str().expect("id");
    let old = created["credentials"]["client_secret"]
        .as_str()
        .expect("secret");
    let b = operator(&app).await;

    let tab = b.get("/runners/aws1/credentials").await;
    assert_eq!(tab.status, 200, "{}", tab.body);
    assert_eq!(by_id(&tab.body, "client-id").as_deref(), Some(client_id));
    assert!(tab.body.contains("••••••••"));
    assert_eq!(by_id(&tab.body, "last-refreshed").as_deref(), Some("never"));
    assert!(tab.body.contains(">Refresh</button>"));
    assert!(has_id(&tab.body, "refresh-dialog"));
    assert!(tab.body.contains("This will revoke the existing credentials and disconnect the running runner. Its status will show as Unknown until you apply the new client_secret and restart it."));
    assert!(tab
        .body
        .contains("No pipelines are running on this runner."));
    assert!(
        !tab.body.contains("Apply the new credentials"),
        "nothing to apply yet"
    );
    assert!(!has_id(&tab.body, "reveal"), "nothing to reveal yet");
    assert!(!tab.body.contains(old), "never the secret");
    let page = b.get("/runners/aws1/credentials/refresh").await;
    assert_eq!(page.status, 200);
    for id in ["confirm-refresh", "overlap", "grace", "refresh-submit"] {
        assert!(has_id(&page.body, id), "{id} on the no-JS page");
    }

    // Without the exact word nothing changes.
    for word in ["", "Refresh", "refresh ", "yes"] {
        let r = b
            .post("/runners/aws1/credentials/refresh", &[("confirm", word)])
            .await;
        assert_eq!(r.status, 422, "{word:?}: {}", r.body);
        assert!(has_id(&r.body, "refresh-error"), "{}", r.body);
    }
    assert_eq!(generations(&app, "aws1").await, [(1, "active".to_owned())]);
    assert_eq!(app.token_basic(client_id, old).await.status, 200);

    let r = b
        .post(
            "/runners/aws1/credentials/refresh",
            &[("confirm", "refresh")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some("/runners/aws1/credentials?refreshed=1")
    );
    assert_eq!(
        generations(&app, "aws1").await,
        [(2, "active".to_owned()), (1, "revoked".to_owned())]
    );
    let tab = b.get("/runners/aws1/credentials?refreshed=1").await;
    assert_eq!(
        by_id(&tab.body, "notice").as_deref(),
        Some("Credentials refreshed.")
    );
    assert!(tab.body.contains("role=\"status\" id=\"notice\""));
    assert!(by_id(&tab.body, "last-refreshed").is_some_and(|t| t.ends_with("by user:olga")));
    assert!(tab.body.contains(">Reveal</button>"), "{}", tab.body);
    assert!(tab.body.contains("Apply the new credentials"));
    assert_eq!(
        by_id(&tab.body, "runner-status").as_deref(),
        Some("unknown")
    );

    let revealed = b.post("/runners/aws1/credentials/reveal", &[]).await;
    assert_eq!(revealed.status, 200, "{}", revealed.body);
    assert_eq!(revealed.header("cache-control"), Some("no-store"));
    let csp = revealed.header("content-security-policy").expect("CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let secret = by_id(&revealed.body, "revealed-secret").expect("secret shown");
    assert!(secret.starts_with("tcs_"), "{secret}");
    assert!(revealed.body.contains("<code id=\"revealed-secret\">"));
    assert!(revealed.body.contains(">Copy</button>"));
    assert!(revealed.body.contains("You can reveal it again until "));
    assert!(revealed.body.contains("Apply the new credentials"));
    // The revealed secret is the one that works now; the old one does not.
    assert_eq!(app.token_basic(client_id, &secret).await.status, 200);
    assert_eq!(app.token_basic(client_id, old).await.status, 401);
    // Nowhere else: not on the tab, the details or the activity.
    for path in [
        "/runners/aws1/credentials?refreshed=1",
        "/runners/aws1",
        "/runners/aws1/activity",
    ] {
        let page = b.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(!page.body.contains(&secret), "{path} shows the secret");
    }
    let activity = b.get("/runners/aws1/activity").await;
    assert!(activity.body.contains("credentials.revealed"));
    assert!(activity.body.contains("credentials.refreshed"));
}

#[tokio::test]
async fn apply_shows_each_platforms_own_commands() {
    let app = spawn_app().await;
    let b = operator(&app).await;
    let cases: [(&str, &[&str]); 5] = [
        ("aws_fargate", &[
            "aws secretsmanager put-secret-value --secret-id <SECRET_ARN>",
            "aws ecs update-service --cluster <CLUSTER> --service <SERVICE> --force-new-deployment",
        ]),
        ("azure_container_app", &[
            "OAUTH_CLIENT_SECRET",
            "--secrets tether-client-secret=<client_secret>",
            "az containerapp revision restart --name <APP>",
        ]),
        ("gke", &[
            "values-gcp.yaml",
            "config.oauthClientSecret",
            "helm upgrade tether-runner . --namespace tether-runner -f values-gcp.yaml",
        ]),
        ("snowflake", &[
            "ALTER SECRET <DATABASE>.<SCHEMA>.tether_client_secret SET SECRET_STRING = '<client_secret>';",
            "ALTER SERVICE <DATABASE>.<SCHEMA>.<SERVICE> SUSPEND;",
            "ALTER SERVICE <DATABASE>.<SCHEMA>.<SERVICE> RESUME;",
        ]),
        ("local", &["OAUTH_CLIENT_SECRET_FILE", "tether runner"]),
    ];
    for (i, (platform, needles)) in cases.iter().enumerate() {
        let name = format!("p{i}");
        let created = app.create_runner(&name, platform).await;
        let client_id = created["credentials"]["client_id"].as_str().expect("id");
        let path = format!("/runners/{name}/credentials?refreshed=1");
        assert!(
            !b.get(&path)
                .await
                .body
                .contains("Apply the new credentials"),
            "{platform}: before"
        );
        let r = app
            .post(
                &format!("/api/v1/runners/{name}/credentials/refresh"),
                Some(&app.admin_token),
                &json!({"confirm": "refresh"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let secret = r.json()["client_secret"]
            .as_str()
            .expect("secret")
            .to_owned();
        let page = unescape(&b.get(&path).await.body);
        let apply = &page[page.find("id=\"apply\"").expect("apply section")..];
        assert!(
            apply.contains(">Apply the new credentials</h2>"),
            "{platform}"
        );
        assert!(
            apply.contains("<pre><code>"),
            "{platform}: commands to copy"
        );
        for needle in *needles {
            assert!(apply.contains(needle), "{platform}: {needle} in {apply}");
        }
        if *platform != "azure_container_app" && *platform != "snowflake" {
            assert!(apply.contains(client_id), "{platform}: client id filled in");
        }
        assert!(apply.contains(&name), "{platform}: runner name filled in");
        assert!(!page.contains(&secret), "{platform}: never the secret");
    }
}

#[tokio::test]
async fn running_pipelines_are_listed_and_refresh_needs_force() {
    let app = crate::ws::app().await;
    let (id, secret) = runner(&app, "busy").await;
    let mut ws = connect(&app, &id, &secret, "i1").await;
    let run = crate::ws::assign_slow_run(&app, "nightly", "busy", &mut ws).await;
    let run_id = run["id"].as_str().expect("run id");
    let b = operator(&app).await;

    let tab = b.get("/runners/busy/credentials").await;
    assert!(
        tab.body.contains("Pipelines running on this runner now ("),
        "{}",
        tab.body
    );
    assert!(tab.body.contains(run_id) && tab.body.contains("nightly"));
    assert!(has_id(&tab.body, "force"));

    let r = b
        .post(
            "/runners/busy/credentials/refresh",
            &[("confirm", "refresh")],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(by_id(&r.body, "refresh-error").is_some_and(|e| e.contains("Nothing was changed")));
    assert!(r.body.contains(run_id) && has_id(&r.body, "force"));
    assert_eq!(generations(&app, "busy").await.len(), 1);

    let r = b
        .post(
            "/runners/busy/credentials/refresh",
            &[
                ("confirm", "refresh"),
                ("mode", "overlap"),
                ("grace_seconds", "3600"),
            ],
        )
        .await;
    assert_eq!(
        r.status, 303,
        "an overlap refresh cuts nothing, so running pipelines do not stop it: {}",
        r.body
    );
    assert_eq!(
        generations(&app, "busy").await,
        [(2, "active".to_owned()), (1, "retiring".to_owned())],
        "overlap keeps the old secret working"
    );
    assert_eq!(
        next(&mut ws).await.expect("the session stays open")["type"],
        "credentials_rotated"
    );
    let tab = b.get("/runners/busy/credentials?refreshed=1").await;
    assert!(tab.body.contains(">Revoke the previous secret now</a>"));
    // Revoking the previous secret asks first, saying what it disconnects.
    let ask = b.get("/runners/busy/credentials/revoke-previous").await;
    assert_eq!(ask.status, 200);
    assert!(has_id(&ask.body, "revoke-what"));
    assert!(
        ask.body.contains("Generation 1 (accepted until")
            && ask
                .body
                .contains("the 1 instance(s) still using it are disconnected"),
        "{}",
        ask.body
    );
    let r = b
        .post("/runners/busy/credentials/revoke-previous", &[])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let back = r.header("location").expect("location").to_owned();
    assert_eq!(
        back,
        "/runners/busy/credentials?done=revoked-previous&gens=1&closed=1"
    );
    assert_eq!(
        generations(&app, "busy").await[1],
        (1, "revoked".to_owned())
    );
    let tab = b.get(&back).await;
    assert_eq!(
        by_id(&tab.body, "notice").as_deref(),
        Some("Revoked generation 1; 1 session on it was closed.")
    );
    // Nothing left to revoke: the page says so instead of offering a button.
    let ask = b.get("/runners/busy/credentials/revoke-previous").await;
    assert!(has_id(&ask.body, "revoke-nothing") && !has_id(&ask.body, "revoke-previous-submit"));
}

#[tokio::test]
async fn viewers_see_no_controls_and_their_forged_posts_are_403() {
    let app = spawn_app().await;
    app.create_runner("r1", "gke").await;
    app.post(
        "/api/v1/runners/r1/credentials/refresh",
        Some(&app.admin_token),
        &json!({"confirm": "refresh"}),
    )
    .await;
    user(&app, "vic", "viewer").await;
    let v = Browser::login(&app, "vic", PASSWORD).await;

    let tab = v.get("/runners/r1/credentials?refreshed=1").await;
    assert_eq!(tab.status, 200, "{}", tab.body);
    assert!(has_id(&tab.body, "client-id"));
    for control in [
        ">Refresh</button>",
        ">Reveal</button>",
        "refresh-dialog",
        "Refresh credentials",
    ] {
        assert!(!tab.body.contains(control), "a viewer sees {control}");
    }
    let list = v.get("/runners").await.body;
    let details = v.get("/runners/r1").await.body;
    for page in [&list, &details] {
        for control in [
            "Restart runner",
            "Pause runner",
            "Resume runner",
            "Create runner",
            "Delete",
        ] {
            assert!(!page.contains(control), "a viewer sees {control}");
        }
    }
    assert!(list.contains("Runner details"));

    // Forged posts with the viewer's own valid token: refused, and nothing changes.
    for (path, fields) in [
        (
            "/runners/r1/credentials/refresh",
            vec![("confirm", "refresh")],
        ),
        ("/runners/r1/credentials/reveal", vec![]),
        ("/runners/r1/credentials/revoke-previous", vec![]),
        ("/runners/r1/pause", vec![("confirm", "pause runner")]),
        ("/runners/r1/resume", vec![]),
        ("/runners/r1/restart", vec![]),
        ("/runners/r1/delete", vec![("confirm", "r1")]),
        (
            "/runners/new",
            vec![("name", "sneaky"), ("platform", "local")],
        ),
        (
            "/users",
            vec![
                ("username", "eve"),
                ("password", PASSWORD),
                ("role", "admin"),
            ],
        ),
    ] {
        let r = v.post(path, &fields).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(!r.body.contains("tcs_"), "{path}");
    }
    for path in [
        "/runners/r1/credentials/refresh",
        "/runners/r1/pause",
        "/runners/r1/delete",
        "/runners/new",
        "/users",
    ] {
        assert_eq!(v.get(path).await.status, 403, "{path}");
    }
    assert_eq!(
        generations(&app, "r1").await.len(),
        2,
        "still two generations"
    );
    let runner = app
        .get("/api/v1/runners/r1", Some(&app.admin_token))
        .await
        .json();
    assert!(runner["paused_by"].is_null());
    assert_eq!(
        app.get("/api/v1/runners/sneaky", Some(&app.admin_token))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn after_the_reveal_window_reveal_says_it_closed() {
    let app = tether_testkit::spawn_app_with(|c| {
        c.reveal_window = std::time::Duration::from_secs(1);
    })
    .await;
    app.create_runner("r1", "local").await;
    let b = operator(&app).await;
    let r = b
        .post("/runners/r1/credentials/refresh", &[("confirm", "refresh")])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(has_id(
        &b.get("/runners/r1/credentials").await.body,
        "reveal"
    ));
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let tab = b.get("/runners/r1/credentials").await;
    assert!(
        !has_id(&tab.body, "reveal"),
        "no Reveal once the window closed"
    );
    let r = b.post("/runners/r1/credentials/reveal", &[]).await;
    assert_eq!(r.status, 410, "{}", r.body);
    assert!(r.body.contains("reveal window closed"), "{}", r.body);
    assert!(!r.body.contains("tcs_"));
}
