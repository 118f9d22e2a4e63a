//! PostgreSQL under several replicas: two store handles (two pools, as two `tether server`
//! processes would have) on one database. Each "forced" test holds the lock a method must take in a
//! separate transaction, starts the competing calls so that they are all waiting on it, and then
//! releases it: the interleaving the method's "Isolation:" note guards against happens every run,
//! not by chance. The stress tests run many calls at once from both handles and check the
//! invariants afterwards.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tether_domain::{CredentialState, Role, RunState, TaskId};
use tether_pgtest::TestDatabase;
use tether_store::postgres::PostgresStore;
use tether_store::{AuditFilter, DatabaseUrl, RoleChange, RotationMode, Store, UpdateOutcome};
use time::OffsetDateTime;

mod common;
use common::*;

/// Two handles ("replicas") on one fresh database, and a raw connection for holding locks.
async fn replicas() -> (Arc<dyn Store>, Arc<dyn Store>, PgConnection, TestDatabase) {
    let db = TestDatabase::create().await;
    let url = DatabaseUrl::parse(db.url()).expect("url");
    let a = PostgresStore::open(&url, &Default::default())
        .await
        .expect("a");
    let b = PostgresStore::open(&url, &Default::default())
        .await
        .expect("b");
    let raw = PgConnection::connect(db.url()).await.expect("raw");
    (Arc::new(a), Arc::new(b), raw, db)
}

/// Waits until `n` backends wait on a lock (so the calls under test are all blocked behind it).
async fn until_waiting(raw: &mut PgConnection, n: i64) {
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *raw)
        .await
        .expect("pg_stat_activity");
        if waiting >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the calls never waited on the held lock: they do not take it");
}

fn revoke_refresh(secret: &str, runner: tether_domain::RunnerId) -> tether_store::NewGeneration {
    generation_of(secret, runner, RotationMode::Revoke)
}

#[tokio::test]
async fn refreshes_on_two_replicas_wait_for_the_runner_lock_and_run_one_after_the_other() {
    let (a, b, mut raw, _db) = replicas().await;
    let runner = new_runner("r1");
    a.create_runner(runner.clone(), ev("runner.created", None))
        .await
        .expect("create");
    let mut lock = raw.begin().await.expect("begin");
    sqlx::query("SELECT id FROM runners WHERE id = $1 FOR UPDATE")
        .bind(runner.id.to_string())
        .execute(&mut *lock)
        .await
        .expect("lock");
    let on_a = tokio::spawn({
        let a = a.clone();
        async move {
            a.refresh_credentials(revoke_refresh("s-a", runner.id), &|_| ev("x", None))
                .await
        }
    });
    let on_b = tokio::spawn({
        let b = b.clone();
        async move {
            b.refresh_credentials(revoke_refresh("s-b", runner.id), &|_| ev("x", None))
                .await
        }
    });
    let mut watcher = PgConnection::connect(_db.url()).await.expect("watcher");
    until_waiting(&mut watcher, 2).await;
    lock.rollback().await.expect("release");
    let mut done = [
        on_a.await.expect("join").expect("refresh a"),
        on_b.await.expect("join").expect("refresh b"),
    ];
    done.sort_by_key(|r| r.generation);
    // The second saw the first's generation as the previous one; nothing was lost or doubled.
    assert_eq!((done[0].previous.0, done[0].generation.0), (1, 2));
    assert_eq!((done[1].previous.0, done[1].generation.0), (2, 3));
    assert_ne!(done[0].version, done[1].version);
    let client = a
        .client_by_id(&runner.client_id)
        .await
        .expect("client")
        .expect("exists");
    let active: Vec<u32> = client
        .generations
        .iter()
        .filter(|g| g.state == CredentialState::Active)
        .map(|g| g.generation.0)
        .collect();
    assert_eq!(active, vec![3]);
    assert_eq!(client.version, done[1].version);
}

#[tokio::test]
async fn a_claim_of_a_run_another_replica_is_changing_gives_up_at_once() {
    let (a, b, mut raw, _db) = replicas().await;
    let runner = new_runner("r1");
    a.create_runner(runner.clone(), ev("runner.created", None))
        .await
        .expect("create");
    let run = queued_run(&a, &runner, &["t1"]).await;
    let task = run.tasks[0].id;
    let mut lock = raw.begin().await.expect("begin");
    sqlx::query("SELECT id FROM runs WHERE id = $1 FOR UPDATE")
        .bind(run.id.to_string())
        .execute(&mut *lock)
        .await
        .expect("lock");
    let claimed = tokio::time::timeout(
        Duration::from_secs(5),
        b.claim_task(task, "i-b", OffsetDateTime::now_utc()),
    )
    .await
    .expect("a claim must not wait behind a busy run (SKIP LOCKED)")
    .expect("claim");
    assert!(!claimed, "the run was locked by another change");
    lock.rollback().await.expect("release");
    assert!(a
        .claim_task(task, "i-a", OffsetDateTime::now_utc())
        .await
        .expect("claim"));
    assert!(!b
        .claim_task(task, "i-b", OffsetDateTime::now_utc())
        .await
        .expect("claim"));
    let assigned = a.assigned_tasks(None).await.expect("assigned");
    assert_eq!(assigned.len(), 1);
    assert_eq!(assigned[0].instance_id, "i-a");
}

#[tokio::test]
async fn two_replicas_starting_on_an_empty_database_create_one_admin() {
    let (a, b, mut raw, db) = replicas().await;
    let mut lock = raw.begin().await.expect("begin");
    sqlx::query("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let start = |store: Arc<dyn Store>, name: &'static str| {
        tokio::spawn(async move {
            let admin = person(name, Role::Admin);
            let token = tether_store::NewApiToken {
                id: tether_domain::ApiTokenId::new(),
                user_id: admin.id,
                name: "bootstrap".into(),
                verifier: tether_domain::Pepper::from_bytes([2; 32]).verifier(name),
                created_at: OffsetDateTime::now_utc(),
                expires_at: None,
            };
            store
                .bootstrap_admin(admin, token, ev("user.bootstrapped", None))
                .await
                .expect("bootstrap")
        })
    };
    let (on_a, on_b) = (start(a.clone(), "admin-a"), start(b.clone(), "admin-b"));
    let mut watcher = PgConnection::connect(db.url()).await.expect("watcher");
    until_waiting(&mut watcher, 2).await;
    lock.rollback().await.expect("release");
    let created = [on_a.await.expect("join"), on_b.await.expect("join")];
    assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");
    assert_eq!(a.list_users().await.expect("users").len(), 1);
}

#[tokio::test]
async fn two_demotions_at_once_on_two_replicas_keep_one_admin() {
    let (a, b, mut raw, db) = replicas().await;
    for name in ["ann", "bob"] {
        a.create_user(person(name, Role::Admin), ev("user.created", None))
            .await
            .expect("user");
    }
    let mut lock = raw.begin().await.expect("begin");
    sqlx::query("SELECT id FROM users WHERE role = 'admin' FOR UPDATE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let demote = |store: Arc<dyn Store>, name: &'static str| {
        tokio::spawn(async move {
            store
                .set_user_role(
                    &tether_domain::Username::parse(name).expect("name"),
                    Role::Viewer,
                    ev("user.role_changed", None),
                )
                .await
                .expect("set role")
        })
    };
    let (on_a, on_b) = (demote(a.clone(), "ann"), demote(b.clone(), "bob"));
    let mut watcher = PgConnection::connect(db.url()).await.expect("watcher");
    until_waiting(&mut watcher, 2).await;
    lock.rollback().await.expect("release");
    let mut outcomes = [on_a.await.expect("join"), on_b.await.expect("join")];
    outcomes.sort_by_key(|o| *o != RoleChange::Changed);
    assert_eq!(outcomes, [RoleChange::Changed, RoleChange::LastAdmin]);
    let admins = a
        .list_users()
        .await
        .expect("users")
        .into_iter()
        .filter(|u| u.role == Role::Admin)
        .count();
    assert_eq!(admins, 1);
}

/// The interleaving forced: both wait on the admin rows, then run at once; one must see the
/// other's change and refuse.
#[tokio::test]
async fn a_deletion_racing_a_demotion_on_another_replica_keeps_one_admin() {
    let (a, b, mut raw, db) = replicas().await;
    for name in ["ann", "bob"] {
        a.create_user(person(name, Role::Admin), ev("user.created", None))
            .await
            .expect("user");
    }
    let mut lock = raw.begin().await.expect("begin");
    sqlx::query("SELECT id FROM users WHERE role = 'admin' FOR UPDATE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let delete = {
        let a = a.clone();
        tokio::spawn(async move {
            a.delete_user(
                &tether_domain::Username::parse("ann").expect("name"),
                ev("user.deleted", None),
            )
            .await
            .expect("delete")
        })
    };
    let demote = {
        let b = b.clone();
        tokio::spawn(async move {
            b.set_user_role(
                &tether_domain::Username::parse("bob").expect("name"),
                Role::Viewer,
                ev("user.role_changed", None),
            )
            .await
            .expect("set role")
        })
    };
    let mut watcher = PgConnection::connect(db.url()).await.expect("watcher");
    until_waiting(&mut watcher, 2).await;
    lock.rollback().await.expect("release");
    let deleted = delete.await.expect("join");
    let demoted = demote.await.expect("join");
    assert!(
        (deleted == tether_store::UserDeletion::Deleted) != (demoted == RoleChange::Changed),
        "exactly one may go through: {deleted:?}, {demoted:?}"
    );
    let admins = a
        .list_users()
        .await
        .expect("users")
        .into_iter()
        .filter(|u| u.role == Role::Admin)
        .count();
    assert_eq!(admins, 1);
}

#[tokio::test]
async fn a_resent_update_racing_its_original_on_another_replica_applies_once() {
    let (a, b, mut raw, db) = replicas().await;
    let runner = new_runner("r1");
    a.create_runner(runner.clone(), ev("runner.created", None))
        .await
        .expect("create");
    let run = queued_run(&a, &runner, &["t1"]).await;
    let task = run.tasks[0].id;
    assert!(a
        .claim_task(task, "i-1", OffsetDateTime::now_utc())
        .await
        .expect("claim"));
    let mut lock = raw.begin().await.expect("begin");
    sqlx::query("SELECT id FROM runs WHERE id = $1 FOR UPDATE")
        .bind(run.id.to_string())
        .execute(&mut *lock)
        .await
        .expect("lock");
    let send = |store: Arc<dyn Store>| {
        tokio::spawn(async move {
            store
                .apply_task_update(
                    runner.id,
                    progress(task, "i-1", 1, RunState::Running, Some("hello\n")),
                    LOG_LIMIT,
                )
                .await
                .expect("update")
        })
    };
    let (on_a, on_b) = (send(a.clone()), send(b.clone()));
    let mut watcher = PgConnection::connect(db.url()).await.expect("watcher");
    until_waiting(&mut watcher, 2).await;
    lock.rollback().await.expect("release");
    let outcomes = [on_a.await.expect("join"), on_b.await.expect("join")];
    let applied = outcomes
        .iter()
        .filter(|o| matches!(o, UpdateOutcome::Applied { .. }))
        .count();
    assert_eq!(applied, 1, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, UpdateOutcome::Duplicate)));
    assert_eq!(
        a.run_log(run.id, 0, LOG_LIMIT).await.expect("log").text,
        "hello\n"
    );
}

#[tokio::test]
async fn stress_many_refreshes_from_two_replicas_lose_and_double_nothing() {
    let (a, b, _raw, _db) = replicas().await;
    let runner = new_runner("r1");
    a.create_runner(runner.clone(), ev("runner.created", None))
        .await
        .expect("create");
    let calls = (0..40).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move {
            let mode = if i % 3 == 0 {
                RotationMode::Revoke
            } else {
                RotationMode::Overlap {
                    expires_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
                }
            };
            store
                .refresh_credentials(generation_of(&format!("s{i}"), runner.id, mode), &|_| {
                    ev("credential.refreshed", None)
                })
                .await
                .expect("refresh")
        })
    });
    let mut done = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        done.push(call.await.expect("join"));
    }
    let mut generations: Vec<u32> = done.iter().map(|r| r.generation.0).collect();
    generations.sort_unstable();
    assert_eq!(generations, (2..=41).collect::<Vec<_>>());
    let mut versions: Vec<i64> = done.iter().map(|r| r.version.0).collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 40, "every refresh produced its own version");
    for r in &done {
        assert_eq!(r.previous.0 + 1, r.generation.0, "{r:?}");
    }
    let client = a
        .client_by_id(&runner.client_id)
        .await
        .expect("client")
        .expect("exists");
    let usable: Vec<_> = client
        .generations
        .iter()
        .filter(|g| g.state != CredentialState::Revoked)
        .map(|g| (g.generation.0, g.state))
        .collect();
    assert_eq!(usable.first(), Some(&(41, CredentialState::Active)));
    assert!(
        usable.len() <= 2,
        "at most two secrets work at once: {usable:?}"
    );
    let audited = a
        .list_audit(AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("audit")
        .iter()
        .filter(|e| e.action == "credential.refreshed")
        .count();
    assert_eq!(audited, 40);
}

#[tokio::test]
async fn stress_claims_from_two_replicas_hand_each_task_to_one_instance() {
    let (a, b, _raw, _db) = replicas().await;
    let runner = new_runner("r1");
    a.create_runner(runner.clone(), ev("runner.created", None))
        .await
        .expect("create");
    let mut tasks: Vec<TaskId> = Vec::new();
    for _ in 0..20 {
        tasks.push(queued_run(&a, &runner, &["only"]).await.tasks[0].id);
    }
    // Every task is claimed by four instances at once, two on each replica, until someone has it.
    let mut calls = Vec::new();
    for (n, task) in tasks.iter().copied().enumerate() {
        for i in 0..4 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            calls.push(tokio::spawn(async move {
                let instance = format!("i-{n}-{i}");
                for _ in 0..50 {
                    if store
                        .claim_task(task, &instance, OffsetDateTime::now_utc())
                        .await
                        .expect("claim")
                    {
                        return Some(instance);
                    }
                    if !store
                        .assigned_tasks(None)
                        .await
                        .expect("assigned")
                        .iter()
                        .all(|t| t.task_id != task)
                    {
                        return None; // someone else has it
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                None
            }));
        }
    }
    let mut winners = 0;
    for call in calls {
        winners += usize::from(call.await.expect("join").is_some());
    }
    assert_eq!(winners, tasks.len(), "each task claimed exactly once");
    let assigned = a.assigned_tasks(None).await.expect("assigned");
    assert_eq!(assigned.len(), tasks.len());
}

#[tokio::test]
async fn stress_two_replicas_sweeping_grace_expiry_at_once_expire_each_generation_once() {
    let (a, b, _raw, _db) = replicas().await;
    let past = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    for i in 0..15 {
        let runner = new_runner(&format!("r{i}"));
        a.create_runner(runner.clone(), ev("runner.created", None))
            .await
            .expect("create");
        a.refresh_credentials(
            generation_of(
                &format!("s{i}"),
                runner.id,
                RotationMode::Overlap { expires_at: past },
            ),
            &|_| ev("credential.refreshed", None),
        )
        .await
        .expect("refresh");
    }
    let sweep = |store: Arc<dyn Store>| {
        tokio::spawn(async move {
            store
                .expire_retiring(OffsetDateTime::now_utc(), &|_| {
                    ev("credential.grace_expired", None)
                })
                .await
                .expect("sweep")
        })
    };
    let (on_a, on_b) = (sweep(a.clone()), sweep(b.clone()));
    let expired = on_a.await.expect("join").len() + on_b.await.expect("join").len();
    assert_eq!(expired, 15);
    let audited = a
        .list_audit(AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("audit")
        .iter()
        .filter(|e| e.action == "credential.grace_expired")
        .count();
    assert_eq!(audited, 15);
}

/// The next notification on the events channel, as JSON.
async fn notification(listener: &mut Box<dyn tether_store::EventListener>) -> serde_json::Value {
    let payload = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification within 5 s")
        .expect("recv")
        .expect("connected");
    serde_json::from_str(&payload).expect("JSON")
}

/// A replica that commits a change and dies before it can send its own event (or whose send
/// fails) must still not leave the others trusting what they cached: the database notifies in
/// the committing transaction. Forced here by making changes through the store alone, which
/// never sends anything itself, and by a change that rolls back.
#[tokio::test]
async fn changes_the_others_must_not_miss_notify_in_their_own_transaction() {
    let (a, b, mut raw, _db) = replicas().await;
    let mut listener = b
        .event_channel()
        .expect("postgres has a channel")
        .listen()
        .await
        .expect("listen");
    let runner = new_runner("r1");
    a.create_runner(runner.clone(), ev("runner.created", None))
        .await
        .expect("create");

    // A version bump that rolls back sends nothing.
    let mut tx = raw.begin().await.expect("begin");
    sqlx::query("UPDATE runners SET credentials_version = credentials_version + 1 WHERE id = $1")
        .bind(runner.id.to_string())
        .execute(&mut *tx)
        .await
        .expect("bump");
    tx.rollback().await.expect("rollback");

    let refreshed = a
        .refresh_credentials(revoke_refresh("s-2", runner.id), &|_| ev("x", None))
        .await
        .expect("refresh");
    let got = notification(&mut listener).await;
    assert_eq!(got["kind"], "credentials_committed", "{got}");
    assert_eq!(got["runner"], runner.id.to_string());
    assert_eq!(got["version"], refreshed.version.0);
    assert!(
        got["origin"]
            .as_str()
            .is_some_and(|o| o.starts_with("tether")),
        "{got}"
    );

    // Usage bookkeeping changes no credentials: nothing is sent for it.
    a.record_credential_use(&[tether_store::CredentialUse {
        runner_id: runner.id,
        generation: refreshed.generation,
        at: OffsetDateTime::now_utc(),
    }])
    .await
    .expect("usage");

    a.revoke_access_token(
        "jti-1",
        OffsetDateTime::from_unix_timestamp(2_000_000_000).expect("time"),
        ev("oauth.token_revoked", None),
    )
    .await
    .expect("revoke token");
    let got = notification(&mut listener).await;
    assert_eq!(got["kind"], "access_token_revoked", "{got}");
    assert_eq!(
        (got["jti"].as_str(), got["expires_at"].as_i64()),
        (Some("jti-1"), Some(2_000_000_000))
    );

    assert!(a
        .delete_runner(runner.id, ev("runner.deleted", None))
        .await
        .expect("delete"));
    let got = notification(&mut listener).await;
    assert_eq!(got["kind"], "runner_deleted", "{got}");
    assert_eq!(got["runner"], runner.id.to_string());
    assert_eq!(got["client_id"], runner.client_id.as_str());
}

/// Heartbeats are not per-session writes: a replica's liveness record leaves every one of its
/// session rows untouched (a row's `xmin` changes with every update of it), however many it holds.
#[tokio::test]
async fn a_replica_staying_alive_writes_no_session_row() {
    let (a, _, mut raw, _db) = replicas().await;
    let runner = new_runner("busy");
    a.create_runner(runner.clone(), ev("runner.created", None))
        .await
        .expect("runner");
    let t0 = ms(1_000_000);
    a.replica_alive("a", t0, t0).await.expect("alive");
    for i in 0..200u64 {
        a.session_opened(
            "a",
            &tether_store::NewSession {
                session_id: i,
                runner_id: runner.id,
                instance_id: format!("i{i}"),
                hostname: "h".into(),
                generation: tether_domain::Generation(1),
                connected_at: t0,
                secret_source: None,
                hot_reload: None,
                secret_file: None,
            },
        )
        .await
        .expect("opened");
    }
    let versions = "SELECT string_agg(xmin::text, ',' ORDER BY session_id) FROM runner_sessions";
    let before: String = sqlx::query_scalar(versions)
        .fetch_one(&mut raw)
        .await
        .expect("rows");
    for beat in 1..=3 {
        a.replica_alive("a", t0, ms(1_000_000 + beat * 10_000))
            .await
            .expect("alive");
    }
    let after: String = sqlx::query_scalar(versions)
        .fetch_one(&mut raw)
        .await
        .expect("rows");
    assert_eq!(before, after, "session rows were rewritten by heartbeats");
    // What other replicas show as the sessions' last heartbeat moved with the replica's record.
    let seen = a
        .sessions_elsewhere(&[runner.id], "b", ms(1_000_000))
        .await
        .expect("sessions");
    assert_eq!(seen.len(), 200);
    assert!(seen.iter().all(|s| s.last_heartbeat_at == ms(1_030_000)));
}
