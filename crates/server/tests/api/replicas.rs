//! Two control-plane replicas (two servers in this process, each with its own pools) on one
//! PostgreSQL database, sharing key files. What one replica changes, the other applies: the bound
//! written in `events::replicated` is checked here — a secret revoked by a call that returned at
//! *t* is refused by the other replica for every request that starts after *t* + `max_lag` — with
//! the listener healthy, stalled (its PostgreSQL backend stopped with SIGSTOP, so notifications
//! queue and nothing arrives) and cut (its backend terminated, so notifications are lost and the
//! replica must resync).

use std::time::{Duration, Instant};

use serde_json::json;
use tether_pgtest::TestDatabase;
use tether_testkit::{spawn_app_with, TestApp};

use crate::ws::{connect, next};

const MAX_LAG: Duration = Duration::from_millis(400);

struct Pair {
    a: TestApp,
    b: TestApp,
    db: TestDatabase,
}

/// Replica A, then replica B on A's database and A's key files.
async fn pair() -> Pair {
    let db = TestDatabase::create().await;
    let url = tether_testkit::database_url(&db);
    let a = spawn_app_with(|c| {
        c.database_url = Some(url.clone());
        c.events_max_lag = MAX_LAG;
        c.heartbeat = Duration::from_secs(1);
    })
    .await;
    let keys = a.data_dir.path().to_path_buf();
    let b = spawn_app_with(|c| {
        c.database_url = Some(url.clone());
        c.events_max_lag = MAX_LAG;
        c.heartbeat = Duration::from_secs(1);
        c.key_files = tether_server::keys::KeyFiles {
            signing: Some(keys.join("signing.key")),
            pepper: Some(keys.join("pepper.key")),
            master: Some(keys.join("master.key")),
        };
    })
    .await;
    for app in [&a, &b] {
        wait_ready(app, Duration::from_secs(10)).await;
    }
    Pair { a, b, db }
}

async fn wait_ready(app: &TestApp, within: Duration) {
    let until = Instant::now() + within;
    while app.get("/readyz", None).await.status != 200 {
        assert!(Instant::now() < until, "replica never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A runner created on A, with its first secret.
async fn runner(p: &Pair, name: &str) -> (String, String) {
    let c = p.a.create_runner(name, "local").await;
    (
        c["credentials"]["client_id"]
            .as_str()
            .expect("id")
            .to_owned(),
        c["credentials"]["client_secret"]
            .as_str()
            .expect("secret")
            .to_owned(),
    )
}

/// Revoke-mode refresh on A; returns the new secret and when the call returned.
async fn refresh_on_a(p: &Pair, name: &str) -> (String, Instant) {
    let r =
        p.a.post(
            &format!("/api/v1/runners/{name}/credentials/refresh"),
            Some(&p.a.admin_token),
            &json!({"confirm": "refresh"}),
        )
        .await;
    let returned = Instant::now();
    assert_eq!(r.status, 200, "{}", r.body);
    let secret = r.json()["client_secret"]
        .as_str()
        .expect("new secret")
        .to_owned();
    (secret, returned)
}

/// Sends token requests with `secret` to `app` for `window` after `from`; returns the ones
/// accepted after `from + MAX_LAG` (each as "accepted N ms after the call returned").
async fn accepted_after_bound(
    app: &TestApp,
    client_id: &str,
    secret: &str,
    from: Instant,
    window: Duration,
) -> Vec<String> {
    let mut late = Vec::new();
    while from.elapsed() < window {
        let started = Instant::now();
        let status = app.token_basic(client_id, secret).await.status;
        assert!(
            [200, 401, 503].contains(&status),
            "unexpected status {status}"
        );
        if status == 200 && started >= from + MAX_LAG {
            late.push(format!(
                "accepted {} ms after the call returned",
                (started - from).as_millis()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    late
}

/// The PostgreSQL backend (pid) of `app`'s events listener.
async fn listener_pid(p: &Pair, app: &TestApp) -> i32 {
    let replica = app.server().replica_id.clone();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(p.db.url())
        .await
        .expect("connect");
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = $1 AND query ILIKE 'LISTEN%'",
    )
    .bind(format!("tether {replica}"))
    .fetch_one(&mut conn)
    .await
    .expect("the replica has a listening connection")
}

fn signal(pid: i32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -{sig} {pid} (the tests run as root)");
}

#[tokio::test]
async fn a_refresh_through_one_replica_cuts_the_session_and_refuses_the_secret_on_the_other() {
    let p = pair().await;
    let (client_id, old) = runner(&p, "r1").await;
    // B has the old secret cached and holds the runner's session.
    assert_eq!(p.b.token_basic(&client_id, &old).await.status, 200);
    let mut ws = connect(&p.b, &client_id, &old, "i-1").await;

    let (new, returned) = refresh_on_a(&p, "r1").await;
    let late = accepted_after_bound(&p.b, &client_id, &old, returned, MAX_LAG * 3).await;
    assert!(late.is_empty(), "B accepted the revoked secret: {late:?}");
    // The session B holds was closed for the revoked generation.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(code) = next(&mut ws).await {
                return code;
            }
        }
    })
    .await
    .expect("B closes the session of the revoked generation");
    assert_eq!(
        closed,
        Some(tether_protocol::session::close_code::CREDENTIALS_REVOKED)
    );
    assert_eq!(p.b.token_basic(&client_id, &new).await.status, 200);
    assert_eq!(p.a.token_basic(&client_id, &new).await.status, 200);
}

#[tokio::test]
async fn a_replica_whose_listener_is_stalled_stops_trusting_its_cache_within_the_bound() {
    let p = pair().await;
    let (client_id, old) = runner(&p, "r1").await;
    assert_eq!(p.b.token_basic(&client_id, &old).await.status, 200);
    let pid = listener_pid(&p, &p.b).await;
    signal(pid, "STOP");
    let (new, returned) = refresh_on_a(&p, "r1").await;
    let late = accepted_after_bound(&p.b, &client_id, &old, returned, MAX_LAG * 3).await;
    // While stalled, B reads the database: the new secret works there too, and B is not ready.
    let new_status = p.b.token_basic(&client_id, &new).await.status;
    let ready = p.b.get("/readyz", None).await;
    signal(pid, "CONT");
    assert!(late.is_empty(), "B accepted the revoked secret: {late:?}");
    assert_eq!(new_status, 200);
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("events_listener"), "{}", ready.body);
    wait_ready(&p.b, Duration::from_secs(10)).await;
    assert_eq!(p.b.token_basic(&client_id, &old).await.status, 401);
}

#[tokio::test]
async fn a_replica_whose_listener_connection_dies_resyncs_and_never_accepts_what_it_missed() {
    let p = pair().await;
    let (client_id, old) = runner(&p, "r1").await;
    assert_eq!(p.b.token_basic(&client_id, &old).await.status, 200);
    let pid = listener_pid(&p, &p.b).await;
    // Stop the listener's backend, revoke while it cannot hear, then kill it: the notification is
    // lost with the connection, and B only learns of the revocation by resyncing.
    signal(pid, "STOP");
    let (_new, returned) = refresh_on_a(&p, "r1").await;
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(p.db.url())
        .await
        .expect("connect");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut admin)
        .await
        .expect("terminate");
    signal(pid, "CONT");
    let late = accepted_after_bound(&p.b, &client_id, &old, returned, MAX_LAG * 4).await;
    assert!(late.is_empty(), "B accepted the revoked secret: {late:?}");
    wait_ready(&p.b, Duration::from_secs(10)).await;
    assert_ne!(
        listener_pid(&p, &p.b).await,
        pid,
        "B listens on a new connection"
    );
    let metrics = p.b.get("/metrics", None).await.body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tether_events_listener_reconnects ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert_eq!(p.b.token_basic(&client_id, &old).await.status, 401);
}

#[tokio::test]
async fn work_queued_and_deletions_through_one_replica_reach_the_other() {
    let p = pair().await;
    let (client_id, secret) = runner(&p, "r1").await;
    let mut ws = connect(&p.b, &client_id, &secret, "i-1").await;
    // A run queued through A is assigned by B, which holds the session.
    let r =
        p.a.request(
            reqwest::Method::PUT,
            "/api/v1/pipelines/build",
            Some(&p.a.admin_token),
            Some(&json!({"tasks": [{"name": "t", "run": "true"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r =
        p.a.post(
            "/api/v1/pipelines/build/runs",
            Some(&p.a.admin_token),
            &json!({"runner": "r1"}),
        )
        .await;
    assert!([200, 201, 202].contains(&r.status), "{}", r.body);
    let assigned = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = next(&mut ws).await.expect("session open");
            if m["type"] == "assign" {
                return m;
            }
        }
    })
    .await
    .expect("B assigns the run queued through A");
    assert!(assigned.to_string().contains("\"t\""), "{assigned}");
    // Deleting the runner through A closes its session on B.
    let r =
        p.a.delete("/api/v1/runners/r1", Some(&p.a.admin_token))
            .await;
    assert!([200, 204].contains(&r.status), "{}", r.body);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(code) = next(&mut ws).await {
                return code;
            }
        }
    })
    .await
    .expect("B closes the deleted runner's session");
    assert_eq!(
        closed,
        Some(tether_protocol::session::close_code::RUNNER_DELETED)
    );
}

/// (7) Refused logins through A lock the account out on B too: the count is the database's.
#[tokio::test]
async fn a_login_lockout_through_one_replica_holds_on_the_other() {
    let p = pair().await;
    let mut on_a = crate::web::browser::Browser::new(&p.a);
    let mut locked = false;
    for _ in 0..tether_server::services::web_sessions::MAX_LOGIN_FAILURES + 1 {
        let r = on_a.try_login("admin", "not-the-password", None).await;
        if r.status == 429 {
            locked = true;
            break;
        }
        assert_eq!(r.status, 401, "{}", r.body);
    }
    assert!(locked, "A locks the account out after repeated failures");
    let mut on_b = crate::web::browser::Browser::new(&p.b);
    let r = on_b.try_login("admin", "not-the-password", None).await;
    assert_eq!(r.status, 429, "the lockout holds on B: {}", r.body);
    assert!(r.header("retry-after").is_some());
}
