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

/// Reads the session until it is closed (within 5 s) and checks it was closed for a revoked
/// credential generation (4401).
async fn assert_closed_as_revoked(ws: &mut crate::ws::Ws) {
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(code) = next(ws).await {
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
    assert_closed_as_revoked(&mut ws).await;
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

/// A replica that commits a revocation and dies before it sends its event (or whose send fails):
/// forced by making the change through a bare store handle, which sends no event at all. The
/// database's own notification, sent in the committing transaction, still makes B refuse the old
/// secret within the bound and close the session on it.
#[tokio::test]
async fn a_revocation_whose_replica_never_sent_its_event_still_reaches_the_other() {
    let p = pair().await;
    let (client_id, old) = runner(&p, "r1").await;
    assert_eq!(p.b.token_basic(&client_id, &old).await.status, 200);
    let mut ws = connect(&p.b, &client_id, &old, "i-1").await;

    let bare = tether_store::open(
        &tether_store::DatabaseUrl::parse(p.db.url()).expect("url"),
        &Default::default(),
    )
    .await
    .expect("a store handle of its own");
    let record = bare
        .runner_by_name(&tether_domain::RunnerName::parse("r1").expect("name"))
        .await
        .expect("read")
        .expect("exists");
    let now = time::OffsetDateTime::now_utc();
    let new = tether_store::NewGeneration {
        runner_id: record.id,
        verifier: tether_domain::Pepper::from_bytes([7; 32]).verifier("not handed out"),
        sealed_secret: Vec::new(),
        reveal_until: now,
        mode: tether_store::RotationMode::Revoke,
        at: now,
        created_by: "user:gone".into(),
    };
    bare.refresh_credentials(new, &|_| tether_store::NewAuditEvent {
        at: now,
        actor: "user:gone".into(),
        action: "runner.credentials_refreshed".into(),
        runner_id: Some(record.id),
        runner_name: Some("r1".into()),
        target: None,
        source_ip: None,
        detail: json!({}),
    })
    .await
    .expect("refresh committed");
    let returned = Instant::now();

    let late = accepted_after_bound(&p.b, &client_id, &old, returned, MAX_LAG * 3).await;
    assert!(late.is_empty(), "B accepted the revoked secret: {late:?}");
    assert_closed_as_revoked(&mut ws).await;
}

/// The interleaving that let a stalled replica trust its cache too early, forced: the listener
/// wakes up after the bound has passed and receives the revocation, but applying it is held up
/// (its read of the runner waits on a table lock the test holds). Receiving an event must not
/// make the replica trusted again — only its own ping, processed after the revocation was
/// applied, may — so B stays not ready for as long as the lock is held, and once released
/// refuses the old secret.
#[tokio::test]
async fn a_replica_that_received_a_revocation_but_has_not_applied_it_does_not_trust_its_cache() {
    let p = pair().await;
    let (client_id, old) = runner(&p, "r1").await;
    assert_eq!(p.b.token_basic(&client_id, &old).await.status, 200);
    let pid = listener_pid(&p, &p.b).await;
    signal(pid, "STOP");
    let until = Instant::now() + Duration::from_secs(5);
    while p.b.get("/readyz", None).await.status != 503 {
        assert!(
            Instant::now() < until,
            "B never noticed its listener stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (new, returned) = refresh_on_a(&p, "r1").await;
    let mut lock = <sqlx::PgConnection as sqlx::Connection>::connect(p.db.url())
        .await
        .expect("connect");
    sqlx::raw_sql("BEGIN; LOCK TABLE runners IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .expect("lock runners");
    // B may trust what it knew until `returned + MAX_LAG` (the bound); wake its listener once
    // that has passed, so every answer below must be 503 however fast it receives.
    tokio::time::sleep((returned + MAX_LAG).saturating_duration_since(Instant::now())).await;
    signal(pid, "CONT");
    // Meanwhile B receives the revocation (and pings sent after it) but cannot apply it.
    let until = returned + MAX_LAG * 4;
    let mut readiness = Vec::new();
    while Instant::now() < until {
        readiness.push(p.b.get("/readyz", None).await.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut lock)
        .await
        .expect("unlock");
    assert!(
        readiness.iter().all(|s| *s == 503),
        "B said it was ready with a revocation not yet applied: {readiness:?}"
    );
    wait_ready(&p.b, Duration::from_secs(10)).await;
    assert_eq!(p.b.token_basic(&client_id, &old).await.status, 401);
    assert_eq!(p.b.token_basic(&client_id, &new).await.status, 200);
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

/// The pages and the API of a replica that holds no session of a runner still show what the
/// replica holding it sees: its instances (from the session registry) and its status changes on
/// `/ui/events` (the database announces every status write).
#[tokio::test]
async fn a_replica_shows_the_instances_and_status_changes_another_holds() {
    use crate::web::browser::{user, Browser, PASSWORD};
    use crate::web::events::wait_for;
    let p = pair().await;
    let (client_id, secret) = runner(&p, "r1").await;
    user(&p.a, "vic", "viewer").await;
    let viewer = Browser::login(&p.a, "vic", PASSWORD).await;
    let mut events = viewer.stream("/ui/events").await;
    let mut buf = String::new();
    wait_for(&mut events, &mut buf, "r1", "pending").await;

    let ws = connect(&p.b, &client_id, &secret, "i-1").await;
    wait_for(&mut events, &mut buf, "r1", "running").await;
    let shown = p.a.get("/api/v1/runners/r1", Some(&p.a.admin_token)).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let body = shown.json();
    assert_eq!(body["status"], "running", "{body}");
    let instances = body["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1, "{body}");
    assert_eq!(instances[0]["instance_id"], "i-1");
    assert_eq!(instances[0]["hostname"], "i-1.local");
    assert_eq!(instances[0]["credential_generation"], 1);
    let page = viewer.get("/runners/r1/instances").await;
    assert!(page.body.contains("i-1.local"), "{}", page.body);

    drop(ws);
    wait_for(&mut events, &mut buf, "r1", "unknown").await;
    let shown = p.a.get("/api/v1/runners/r1", Some(&p.a.admin_token)).await;
    assert_eq!(shown.json()["instances"], json!([]), "{}", shown.body);
}
