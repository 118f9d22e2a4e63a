//! Login, logout, sessions, redirects to /login and CSRF.

use tether_testkit::spawn_app;

use super::browser::{cookie_value, field_value, generations, set_cookie, user, Browser, PASSWORD};

#[tokio::test]
async fn login_works_with_the_right_password_only() {
    let app = spawn_app().await;
    user(&app, "olga", "operator").await;
    let mut b = Browser::new(&app);

    let form = b.get("/login").await;
    assert_eq!(form.status, 200);
    for needle in [
        "id=\"username\"",
        "name=\"username\"",
        "id=\"password\"",
        "name=\"password\"",
        ">Username</label>",
        ">Password</label>",
        ">Log in</button>",
    ] {
        assert!(form.body.contains(needle), "{needle} in {}", form.body);
    }

    for (name, password) in [("olga", "wrong password!!"), ("nobody", PASSWORD), ("", "")] {
        let r = b.try_login(name, password, None).await;
        assert_eq!(r.status, 401, "{name}: {}", r.body);
        assert!(r.body.contains("role=\"alert\""), "{}", r.body);
        assert!(r.body.contains("Wrong username or password."), "{}", r.body);
        assert!(set_cookie(&r, "tether_session").is_none());
    }
    assert!(b.cookie.is_none());

    let r = b.try_login("olga", PASSWORD, None).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/runners"));
    let cookie = set_cookie(&r, "tether_session").expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/;"] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    let page = b.get("/runners").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<nav aria-label=\"Main\""));
    assert!(page.body.contains("Runners &amp; Instances"));
    assert!(page.body.contains("olga"));
    assert!(page.body.contains(">Log out</button>"));
}

#[tokio::test]
async fn pages_without_a_session_redirect_to_login_and_back() {
    let app = spawn_app().await;
    user(&app, "vic", "viewer").await;
    let anonymous = Browser::new(&app);
    for (path, next) in [
        ("/runners", "/runners"),
        ("/runners/r1/credentials", "/runners/r1/credentials"),
        ("/users", "/users"),
        ("/ui/events", "/ui/events"),
        (
            "/runners/r1/credentials?refreshed=1",
            "/runners/r1/credentials%3Frefreshed%3D1",
        ),
    ] {
        let r = anonymous.get(path).await;
        assert_eq!(r.status, 303, "{path}: {}", r.body);
        assert_eq!(
            r.header("location"),
            Some(format!("/login?next={next}").as_str()),
            "{path}"
        );
    }
    let root = anonymous.get("/").await;
    assert_eq!(
        (root.status, root.header("location")),
        (303, Some("/runners"))
    );

    let mut forged = Browser::new(&app);
    forged.cookie = Some("A".repeat(43));
    assert_eq!(
        forged.get("/runners").await.status,
        303,
        "unknown session id"
    );

    // After login the browser goes where it was sent; never to another site.
    let mut b = Browser::new(&app);
    let r = b
        .try_login("vic", PASSWORD, Some("/runners/r1/activity"))
        .await;
    assert_eq!(r.header("location"), Some("/runners/r1/activity"));
    for evil in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let mut b = Browser::new(&app);
        let r = b.try_login("vic", PASSWORD, Some(evil)).await;
        assert_eq!(r.header("location"), Some("/runners"), "{evil}");
    }
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let app = spawn_app().await;
    user(&app, "vic", "viewer").await;
    let b = Browser::login(&app, "vic", PASSWORD).await;
    let r = b.post("/logout", &[]).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    let cleared = set_cookie(&r, "tether_session").expect("cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The old cookie no longer works, even if the browser kept it.
    assert_eq!(b.get("/runners").await.status, 303);
    let audit = app
        .get("/api/v1/audit", Some(&app.admin_token))
        .await
        .json();
    let actions: Vec<_> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["actor"] == "user:vic")
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(actions, ["user.logged_out", "user.logged_in"]);
}

#[tokio::test]
async fn posts_without_a_valid_csrf_token_are_403_and_change_nothing() {
    let app = spawn_app().await;
    app.create_runner("r1", "local").await;
    user(&app, "olga", "operator").await;
    let a = Browser::login(&app, "olga", PASSWORD).await;
    let b = Browser::login(&app, "olga", PASSWORD).await;
    assert_ne!(a.csrf, b.csrf, "a token per session");
    let refresh = "/runners/r1/credentials/refresh";
    let confirm = ("confirm", "refresh");
    let attempts = [
        a.post_raw(refresh, &[confirm]).await,
        a.post_raw(refresh, &[("csrf", ""), confirm]).await,
        a.post_raw(refresh, &[("csrf", "x".repeat(43).as_str()), confirm])
            .await,
        a.post_raw(refresh, &[("csrf", b.csrf.as_str()), confirm])
            .await,
        Browser::new(&app)
            .post_raw(refresh, &[("csrf", a.csrf.as_str()), confirm])
            .await,
        a.post_raw("/logout", &[]).await,
    ];
    for r in attempts {
        assert_eq!(r.status, 403, "{}", r.body);
    }
    assert_eq!(generations(&app, "r1").await, [(1, "active".to_owned())]);
    // The session survived the refused logout.
    assert_eq!(a.get("/runners").await.status, 200);

    // The login form is protected too: its token must match its cookie.
    let mut c = Browser::new(&app);
    let form = c.get("/login").await;
    let token = field_value(&form.body, "csrf").expect("token");
    assert!(cookie_value(&form, "tether_login").is_some());
    let r = c
        .post_raw(
            "/login",
            &[
                ("csrf", token.as_str()),
                ("username", "olga"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "no login cookie: {}", r.body);
    assert!(c.try_login("olga", PASSWORD, None).await.status == 303);
}

#[tokio::test]
async fn the_session_cookie_is_secure_behind_https() {
    let app = tether_testkit::spawn_app_with(|c| {
        c.public_url = Some(url::Url::parse("https://tether.example.com").expect("url"));
    })
    .await;
    // The server still listens on loopback; reach it there.
    let direct = format!("http://{}", app.server().local_addr);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let created = http
        .post(format!("{direct}/api/v1/users"))
        .bearer_auth(&app.admin_token)
        .json(&serde_json::json!({"username": "vic", "password": PASSWORD, "role": "viewer"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 201);
    let form = tether_testkit::TestApp::read(
        http.get(format!("{direct}/login"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let token = field_value(&form.body, "csrf").expect("token");
    let login = cookie_value(&form, "tether_login").expect("cookie");
    assert!(set_cookie(&form, "tether_login").is_some_and(|c| c.contains("; Secure")));
    let r = tether_testkit::TestApp::read(
        http.post(format!("{direct}/login"))
            .header("cookie", format!("tether_login={login}"))
            .form(&[
                ("csrf", token.as_str()),
                ("username", "vic"),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = set_cookie(&r, "tether_session").expect("session cookie");
    assert!(cookie.ends_with("; Secure"), "{cookie}");
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_user_out_from_that_address_for_a_while() {
    let app = spawn_app().await;
    user(&app, "pat", "operator").await;
    let mut b = Browser::new(&app);
    b.get("/login").await;
    for attempt in 1..=5 {
        let r = b.try_login("pat", "not the password!", None).await;
        assert_eq!(r.status, 401, "attempt {attempt}: {}", r.body);
    }
    // Now even the right password is refused without being checked, and the page says why.
    let r = b.try_login("pat", PASSWORD, None).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(
        r.body.contains("Too many failed logins") && r.body.contains("Try again in 15 minutes"),
        "{}",
        r.body
    );
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((840..=900).contains(&retry), "{retry}");
    assert!(set_cookie(&r, "tether_session").is_none());
    // Another user from the same address is not affected.
    user(&app, "quinn", "viewer").await;
    let mut other = Browser::new(&app);
    other.get("/login").await;
    assert_eq!(other.try_login("quinn", PASSWORD, None).await.status, 303);
}

/// 64 logins with wrong passwords at once (64 usernames, so no lockout is involved) go through
/// the bounded password slots: a correct login made during them still succeeds, each bad one is
/// refused (401) or told to retry (503), and the server keeps at most one argon2 buffer per slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_bad_logins_neither_keeps_a_correct_one_out_nor_grows_memory_with_it() {
    let app = spawn_app().await;
    user(&app, "olga", "operator").await;
    let mut browsers = Vec::new();
    for _ in 0..64 {
        let b = Browser::new(&app);
        b.get("/login").await;
        browsers.push(b);
    }
    let mut good = Browser::new(&app);
    good.get("/login").await;
    let bad = futures::future::join_all(browsers.iter_mut().enumerate().map(|(i, b)| async move {
        b.try_login(&format!("guess-{i}"), "not the password!", None)
            .await
            .status
    }));
    let (statuses, ok) = tokio::join!(bad, good.try_login("olga", PASSWORD, None));
    assert_eq!(ok.status, 303, "{}", ok.body);
    for (i, s) in statuses.into_iter().enumerate() {
        assert!(s == 401 || s == 503, "bad login {i}: {s}");
    }
    let passwords = &app.server().state().passwords;
    assert!(
        passwords.buffers() <= passwords.slots(),
        "{} buffers for {} slots",
        passwords.buffers(),
        passwords.slots()
    );
}

/// The lock of a targeted account holds however many other usernames fail meanwhile: counts live
/// in the database until their window passes, and nothing evicts them to make room.
#[tokio::test]
async fn failures_with_thousands_of_other_usernames_do_not_lift_a_lock() {
    let app = spawn_app().await;
    user(&app, "rita", "operator").await;
    let mut b = Browser::new(&app);
    b.get("/login").await;
    for _ in 1..=5 {
        assert_eq!(
            b.try_login("rita", "not the password!", None).await.status,
            401
        );
    }
    // The churn that used to evict the oldest of 10,000 tracked pairs, counted straight into the
    // store (the same call a refused login makes; 10,050 argon2 checks would take minutes).
    let store = &app.server().state().store;
    let now = time::OffsetDateTime::now_utc();
    for i in 0..10_050 {
        store
            .record_login_failure(
                &format!("churn-{i}"),
                "127.0.0.1",
                now,
                now - time::Duration::minutes(15),
            )
            .await
            .expect("recorded");
    }
    let r = b.try_login("rita", PASSWORD, None).await;
    assert_eq!(r.status, 429, "the lock was lifted: {}", r.body);
}

/// A 60 KB "username" is refused at once: it is not counted (so it cannot grow the lockout's
/// table), not echoed into the page and not checked against a password.
#[tokio::test]
async fn an_overlong_username_is_refused_without_being_counted_or_echoed() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.get("/login").await;
    let long = "a".repeat(60_000);
    for _ in 0..3 {
        let r = b.try_login(&long, "not the password!", None).await;
        assert_eq!(r.status, 401, "{}", &r.body[..r.body.len().min(300)]);
        assert!(
            r.body.len() < 20_000,
            "the page echoed it: {} bytes",
            r.body.len()
        );
    }
    let store = &app.server().state().store;
    let since = time::OffsetDateTime::now_utc() - time::Duration::minutes(15);
    assert_eq!(
        store
            .login_failures(&long, "127.0.0.1", since)
            .await
            .expect("read"),
        None
    );
}
