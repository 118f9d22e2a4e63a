//! Behaviour every storage backend must have, written against `dyn Store`: each check is a
//! function of a fresh, empty store, and [`conformance!`] runs each of them against SQLite (a new
//! file) and against PostgreSQL (a new database on the cluster `scripts/test` starts). Checks of
//! one backend's own mechanics (SQLite's triggers, reopening a file) are plain tests, marked as
//! such.

use std::sync::Arc;

use serde_json::json;
use tether_domain::{
    ApiToken, ApiTokenId, CredentialState, Generation, Pepper, PipelineName, Platform, Role, RunId,
    RunState, RunnerId, RunnerName, TaskId, UserId, Username,
};
use tether_store::sqlite::SqliteStore;
use tether_store::{
    to_ms, AuditFilter, AuditStore, CancelOutcome, Conflict, CredentialUse, NewApiToken,
    NewAuditEvent, NewRun, NewRunner, NewUser, NewWebSession, PipelineRecord, RoleChange,
    RunFilter, RunnerStore, Store, StoreError, UpdateOutcome, UserDeletion,
};
use time::OffsetDateTime;

mod common;
use common::*;

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("t.db"))
        .await
        .expect("open");
    (Arc::new(store), dir)
}

async fn postgres() -> (Arc<dyn Store>, tether_pgtest::TestDatabase) {
    let db = tether_pgtest::TestDatabase::create().await;
    let url = tether_store::DatabaseUrl::parse(db.url()).expect("url");
    let store = tether_store::postgres::PostgresStore::open(&url, &Default::default())
        .await
        .expect("open");
    (Arc::new(store), db)
}

async fn runners_round_trip_page_and_delete(store: Arc<dyn Store>) {
    let a = new_runner("a");
    let a_id = a.id;
    let created = store
        .create_runner(a, ev("runner.created", None))
        .await
        .expect("create");
    assert_eq!(created.generation, Generation::FIRST);
    let b = store
        .create_runner(new_runner("b"), ev("runner.created", None))
        .await
        .expect("create");
    let c = store
        .create_runner(new_runner("c"), ev("runner.created", None))
        .await
        .expect("create");

    let by_id = store
        .runner_by_id(a_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(by_id.name.as_str(), "a");
    assert_eq!(by_id.platform, Platform::Gke);
    assert_eq!(by_id.generation, Generation::FIRST);
    let by_name = store
        .runner_by_name(&RunnerName::parse("b").expect("n"))
        .await
        .expect("get");
    assert_eq!(by_name.map(|r| r.id), Some(b.id));

    let page1 = store.list_runners(None, 2).await.expect("list");
    assert_eq!(
        page1.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let page2 = store
        .list_runners(Some(page1[1].id), 2)
        .await
        .expect("list");
    assert_eq!(page2.iter().map(|r| r.id).collect::<Vec<_>>(), [c.id]);

    assert!(store
        .delete_runner(b.id, ev("runner.deleted", None))
        .await
        .expect("delete"));
    assert!(!store
        .delete_runner(b.id, ev("runner.deleted", None))
        .await
        .expect("delete"));
    assert!(store.runner_by_id(b.id).await.expect("get").is_none());
    assert!(
        store
            .client_by_id(&b.client_id)
            .await
            .expect("client")
            .is_none(),
        "credentials go with the runner"
    );
}

async fn duplicate_names_are_conflicts_and_write_nothing(store: Arc<dyn Store>) {
    store
        .create_runner(new_runner("dup"), ev("runner.created", None))
        .await
        .expect("create");
    let err = store
        .create_runner(new_runner("dup"), ev("runner.created", None))
        .await
        .expect_err("duplicate");
    assert!(
        matches!(&err, StoreError::Conflict(Conflict::RunnerName)),
        "{err:?}"
    );
    let events = store
        .list_audit(AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(events.len(), 1, "the failed create wrote no audit event");
    assert_eq!(store.list_runners(None, 10).await.expect("list").len(), 1);
}

async fn credentials_usage_and_first_token(store: Arc<dyn Store>) {
    let r = new_runner("cred");
    let (id, client_id) = (r.id, r.client_id.clone());
    store
        .create_runner(r, ev("runner.created", None))
        .await
        .expect("create");
    let client = store
        .client_by_id(&client_id)
        .await
        .expect("client")
        .expect("exists");
    assert_eq!(client.runner_id, id);
    assert_eq!(client.generations.len(), 1);
    let g = &client.generations[0];
    assert_eq!(
        (g.generation, g.state),
        (Generation::FIRST, CredentialState::Active)
    );
    assert!(g
        .verifier
        .matches(&Pepper::from_bytes([1; 32]).verifier("cred")));
    assert!(g.first_token_at.is_none());

    let first = store.record_first_token(
        id,
        Generation::FIRST,
        ms(1000),
        ev("credential.first_token", Some((id, "cred"))),
    );
    assert!(first.await.expect("first"));
    let second = store.record_first_token(
        id,
        Generation::FIRST,
        ms(2000),
        ev("credential.first_token", Some((id, "cred"))),
    );
    assert!(!second.await.expect("second"));
    let filter = AuditFilter {
        runner: Some("cred".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        store.list_audit(filter).await.expect("audit").len(),
        1,
        "first token audited once"
    );

    store
        .record_credential_use(&[CredentialUse {
            runner_id: id,
            generation: Generation::FIRST,
            at: ms(5000),
        }])
        .await
        .expect("use");
    let client = store
        .client_by_id(&client_id)
        .await
        .expect("client")
        .expect("exists");
    assert!(client.generations[0].first_token_at.is_some());
}

async fn revoked_tokens_expire(store: Arc<dyn Store>) {
    store
        .revoke_access_token("j1", ms(10_000), ev("oauth.token_revoked", None))
        .await
        .expect("revoke");
    store
        .revoke_access_token("j1", ms(10_000), ev("oauth.token_revoked", None))
        .await
        .expect("idempotent");
    store
        .revoke_access_token("j2", ms(50_000), ev("oauth.token_revoked", None))
        .await
        .expect("revoke");
    let mut live = store.revoked_access_tokens(ms(5_000)).await.expect("list");
    live.sort();
    assert_eq!(
        live,
        [("j1".to_owned(), ms(10_000)), ("j2".to_owned(), ms(50_000))]
    );
    assert_eq!(
        store.revoked_access_tokens(ms(20_000)).await.expect("list"),
        [("j2".to_owned(), ms(50_000))],
        "an expired revocation is not returned"
    );
    assert_eq!(
        store
            .purge_revoked_access_tokens(ms(20_000))
            .await
            .expect("purge"),
        1
    );
    assert_eq!(
        store
            .purge_revoked_access_tokens(ms(20_000))
            .await
            .expect("purge"),
        0
    );
    let events = store
        .list_audit(AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(
        events.len(),
        2,
        "a repeated revocation is not audited twice"
    );
}

async fn users_tokens_and_bootstrap_once(store: Arc<dyn Store>) {
    let pepper = Pepper::from_bytes([2; 32]);
    let admin_id = UserId::new();
    let user = |id, name: &str, role| NewUser {
        id,
        username: Username::parse(name).expect("name"),
        password_hash: "$argon2id$fake".into(),
        role,
        created_at: OffsetDateTime::now_utc(),
    };
    let token = ApiToken::generate();
    let api = |uid, t: &ApiToken| NewApiToken {
        id: ApiTokenId::new(),
        user_id: uid,
        name: "t".into(),
        verifier: pepper.verifier(t.expose()),
        created_at: OffsetDateTime::now_utc(),
        expires_at: None,
    };
    assert!(store
        .bootstrap_admin(
            user(admin_id, "admin", Role::Admin),
            api(admin_id, &token),
            ev("admin.bootstrapped", None)
        )
        .await
        .expect("bootstrap"));
    let other = ApiToken::generate();
    assert!(!store
        .bootstrap_admin(
            user(UserId::new(), "admin2", Role::Admin),
            api(UserId::new(), &other),
            ev("admin.bootstrapped", None)
        )
        .await
        .expect("bootstrap"));
    let found = store
        .user_by_token(&pepper.verifier(token.expose()), OffsetDateTime::now_utc())
        .await
        .expect("lookup")
        .expect("found")
        .0;
    assert_eq!(
        (found.username.as_str(), found.role),
        ("admin", Role::Admin)
    );
    assert!(store
        .user_by_token(&pepper.verifier(other.expose()), OffsetDateTime::now_utc())
        .await
        .expect("lookup")
        .is_none());

    let bob = UserId::new();
    store
        .create_user(user(bob, "bob", Role::Viewer), ev("user.created", None))
        .await
        .expect("create");
    let dup = store
        .create_user(
            user(UserId::new(), "bob", Role::Viewer),
            ev("user.created", None),
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(Conflict::Username))));
    let bobs = ApiToken::generate();
    store
        .create_api_token(api(bob, &bobs), ev("token.created", None))
        .await
        .expect("token");
    let found = store
        .user_by_token(&pepper.verifier(bobs.expose()), OffsetDateTime::now_utc())
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.0.role, Role::Viewer);
    let ghost = store
        .create_api_token(
            api(UserId::new(), &ApiToken::generate()),
            ev("token.created", None),
        )
        .await;
    assert!(
        matches!(ghost, Err(StoreError::NotFound)),
        "a token needs an existing user"
    );
}

async fn audit_count(store: &Arc<dyn Store>) -> usize {
    store
        .list_audit(AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("audit")
        .len()
}

async fn roles_change_passwords_reset_and_the_last_admin_stays(store: Arc<dyn Store>) {
    let name = |n: &str| Username::parse(n).expect("name");
    store
        .create_user(person("root", Role::Admin), ev("user.created", None))
        .await
        .expect("create");
    store
        .create_user(person("bob", Role::Viewer), ev("user.created", None))
        .await
        .expect("create");
    let listed: Vec<_> = store
        .list_users()
        .await
        .expect("list")
        .into_iter()
        .map(|u| (u.username.as_str().to_owned(), u.role))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("bob".to_owned(), Role::Viewer),
            ("root".to_owned(), Role::Admin)
        ]
    );

    let before = audit_count(&store).await;
    assert_eq!(
        store
            .set_user_role(&name("root"), Role::Operator, ev("user.role_changed", None))
            .await
            .expect("role"),
        RoleChange::LastAdmin
    );
    assert_eq!(
        store
            .set_user_role(
                &name("ghost"),
                Role::Operator,
                ev("user.role_changed", None)
            )
            .await
            .expect("role"),
        RoleChange::NoSuchUser
    );
    assert_eq!(audit_count(&store).await, before, "refusals write nothing");
    let role_of = |n: &'static str| {
        let store = store.clone();
        async move {
            store
                .user_by_name(&Username::parse(n).expect("name"))
                .await
                .expect("get")
                .expect("exists")
                .role
        }
    };
    assert_eq!(role_of("root").await, Role::Admin);

    assert_eq!(
        store
            .set_user_role(&name("bob"), Role::Admin, ev("user.role_changed", None))
            .await
            .expect("role"),
        RoleChange::Changed
    );
    assert_eq!(
        store
            .set_user_role(&name("root"), Role::Viewer, ev("user.role_changed", None))
            .await
            .expect("role"),
        RoleChange::Changed,
        "another admin exists now"
    );
    assert_eq!(role_of("root").await, Role::Viewer);
    assert_eq!(role_of("bob").await, Role::Admin);
    assert_eq!(audit_count(&store).await, before + 2);

    assert!(store
        .set_user_password(
            &name("bob"),
            "$argon2id$new",
            ev("user.password_reset", None)
        )
        .await
        .expect("reset"));
    let bob = store
        .user_by_name(&name("bob"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(bob.password_hash, "$argon2id$new");
    assert!(!store
        .set_user_password(
            &name("ghost"),
            "$argon2id$x",
            ev("user.password_reset", None)
        )
        .await
        .expect("reset"));
    assert_eq!(audit_count(&store).await, before + 3);
}

async fn web_sessions_resolve_to_the_current_user_expire_and_end(store: Arc<dyn Store>) {
    let pepper = Pepper::from_bytes([3; 32]);
    let alice = store
        .create_user(person("alice", Role::Operator), ev("user.created", None))
        .await
        .expect("create");
    let now = OffsetDateTime::now_utc();
    let session = |id: &str, user_id, ttl: time::Duration| NewWebSession {
        verifier: pepper.verifier(id),
        user_id,
        created_at: now,
        expires_at: now + ttl,
    };
    let before = audit_count(&store).await;
    store
        .create_web_session(
            session("s1", alice.id, time::Duration::hours(1)),
            ev("user.logged_in", None),
        )
        .await
        .expect("create");
    store
        .create_web_session(
            session("s2", alice.id, time::Duration::minutes(1)),
            ev("user.logged_in", None),
        )
        .await
        .expect("create");
    assert_eq!(audit_count(&store).await, before + 2);
    let ghost = store
        .create_web_session(
            session("s3", UserId::new(), time::Duration::hours(1)),
            ev("user.logged_in", None),
        )
        .await;
    assert!(matches!(ghost, Err(StoreError::NotFound)), "needs a user");

    let found = store
        .web_session(&pepper.verifier("s1"), now)
        .await
        .expect("get")
        .expect("live");
    assert_eq!(found.user.username.as_str(), "alice");
    assert_eq!(found.user.role, Role::Operator);
    assert_eq!(
        to_ms(found.expires_at),
        to_ms(now + time::Duration::hours(1))
    );
    assert!(store
        .web_session(&pepper.verifier("nope"), now)
        .await
        .expect("get")
        .is_none());

    // A second admin lets the role change go through; the session sees it at once.
    store
        .create_user(person("root", Role::Admin), ev("user.created", None))
        .await
        .expect("create");
    store
        .set_user_role(&alice.username, Role::Viewer, ev("user.role_changed", None))
        .await
        .expect("role");
    let found = store
        .web_session(&pepper.verifier("s1"), now)
        .await
        .expect("get")
        .expect("live");
    assert_eq!(found.user.role, Role::Viewer);

    // Expiry: not returned at or after expires_at, and purged then.
    let later = now + time::Duration::minutes(2);
    assert!(store
        .web_session(&pepper.verifier("s2"), later)
        .await
        .expect("get")
        .is_none());
    assert_eq!(store.purge_web_sessions(later).await.expect("purge"), 1);
    assert!(store
        .web_session(&pepper.verifier("s1"), later)
        .await
        .expect("get")
        .is_some());

    // Logout ends exactly that session, audited once.
    let before = audit_count(&store).await;
    assert!(store
        .delete_web_session(&pepper.verifier("s1"), ev("user.logged_out", None))
        .await
        .expect("delete"));
    assert!(!store
        .delete_web_session(&pepper.verifier("s1"), ev("user.logged_out", None))
        .await
        .expect("delete"));
    assert_eq!(audit_count(&store).await, before + 1);
    assert!(store
        .web_session(&pepper.verifier("s1"), now)
        .await
        .expect("get")
        .is_none());

    // A password reset ends every session of that user.
    store
        .create_web_session(
            session("s4", alice.id, time::Duration::hours(1)),
            ev("user.logged_in", None),
        )
        .await
        .expect("create");
    store
        .set_user_password(
            &alice.username,
            "$argon2id$new",
            ev("user.password_reset", None),
        )
        .await
        .expect("reset");
    assert!(store
        .web_session(&pepper.verifier("s4"), now)
        .await
        .expect("get")
        .is_none());
}

/// SQLite only: the triggers that make the audit log append-only.
#[tokio::test]
async fn audit_log_is_append_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    let store = SqliteStore::open(&path).await.expect("open");
    store.append_audit(ev("x", None)).await.expect("append");
    store.close().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("raw");
    let update = sqlx::query("UPDATE audit_events SET actor = 'mallory'")
        .execute(&pool)
        .await;
    assert!(update.is_err(), "UPDATE must be refused");
    let delete = sqlx::query("DELETE FROM audit_events").execute(&pool).await;
    assert!(delete.is_err(), "DELETE must be refused");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(count, 1);
}

/// SQLite only: reopening the same file.
#[tokio::test]
async fn reopening_applies_no_migration_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    let store = SqliteStore::open(&path).await.expect("open");
    store
        .create_runner(new_runner("keep"), ev("runner.created", None))
        .await
        .expect("create");
    store.close().await;
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(store.list_runners(None, 10).await.expect("list").len(), 1);
    store.ping().await.expect("ping");
}

async fn pipelines_are_replaced_in_place_and_deleted(store: Arc<dyn Store>) {
    let name = PipelineName::parse("build").expect("name");
    let first = PipelineRecord {
        name: name.clone(),
        tasks: tasks(&["a", "b"]),
        created_at: OffsetDateTime::now_utc(),
        updated_at: OffsetDateTime::now_utc(),
        updated_by: "user:one".into(),
    };
    let stored = store
        .put_pipeline(first.clone(), ev("pipeline.updated", None))
        .await
        .expect("put");
    assert_eq!(stored.tasks, first.tasks);
    let mut second = first.clone();
    second.tasks = tasks(&["c"]);
    second.created_at = OffsetDateTime::now_utc() + time::Duration::hours(1);
    second.updated_by = "user:two".into();
    let replaced = store
        .put_pipeline(second, ev("pipeline.updated", None))
        .await
        .expect("put");
    assert_eq!(replaced.tasks.len(), 1);
    assert_eq!(replaced.updated_by, "user:two");
    assert_eq!(
        to_ms(replaced.created_at),
        to_ms(stored.created_at),
        "creation time is kept"
    );
    assert_eq!(store.list_pipelines().await.expect("list").len(), 1);
    assert!(store
        .delete_pipeline(&name, ev("pipeline.deleted", None))
        .await
        .expect("delete"));
    assert!(!store
        .delete_pipeline(&name, ev("pipeline.deleted", None))
        .await
        .expect("delete"));
    assert!(store.pipeline_by_name(&name).await.expect("get").is_none());
}

async fn tasks_are_claimed_once_updates_apply_once_and_logs_keep_their_order(
    store: Arc<dyn Store>,
) {
    let runner = new_runner("r");
    store
        .create_runner(runner.clone(), ev("runner.created", None))
        .await
        .expect("runner");
    assert!(store
        .runners_with_active_runs()
        .await
        .expect("active")
        .is_empty());
    let run = queued_run(&store, &runner, &["one", "two"]).await;
    let (one, two) = (run.tasks[0].id, run.tasks[1].id);
    assert_eq!(
        store.runners_with_active_runs().await.expect("active"),
        vec![runner.id]
    );

    // Only the first task is ready; it can be claimed by exactly one instance.
    let ready = store.ready_tasks(runner.id, 10).await.expect("ready");
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].task_id, one);
    assert!(store.claim_task(one, "i1", ms(1)).await.expect("claim"));
    assert!(!store.claim_task(one, "i2", ms(2)).await.expect("claim"));
    assert!(store
        .ready_tasks(runner.id, 10)
        .await
        .expect("ready")
        .is_empty());
    let assigned = store
        .assigned_tasks(Some(runner.id))
        .await
        .expect("assigned");
    assert_eq!(assigned.len(), 1);
    assert_eq!(assigned[0].instance_id, "i1");

    let applied = UpdateOutcome::Applied {
        task_final: false,
        run_final: None,
        log_truncated: false,
    };
    let up = |seq, state, log| progress(one, "i1", seq, state, log);
    assert_eq!(
        store
            .apply_task_update(runner.id, up(1, RunState::Running, None), LOG_LIMIT)
            .await
            .expect("u1"),
        applied
    );
    // A started task can no longer be handed back.
    assert!(!store.requeue_task(one, "i1").await.expect("requeue"));
    store
        .apply_task_update(
            runner.id,
            up(2, RunState::Running, Some("héllo ")),
            LOG_LIMIT,
        )
        .await
        .expect("u2");
    assert_eq!(
        store
            .apply_task_update(
                runner.id,
                up(2, RunState::Running, Some("héllo ")),
                LOG_LIMIT
            )
            .await
            .expect("dup"),
        UpdateOutcome::Duplicate
    );
    assert_eq!(
        store
            .apply_task_update(RunnerId::new(), up(3, RunState::Running, None), LOG_LIMIT)
            .await
            .expect("other runner"),
        UpdateOutcome::UnknownTask
    );
    let done = store
        .apply_task_update(
            runner.id,
            up(3, RunState::Succeeded, Some("world\n")),
            LOG_LIMIT,
        )
        .await
        .expect("final");
    assert_eq!(
        done,
        UpdateOutcome::Applied {
            task_final: true,
            run_final: None,
            log_truncated: false,
        }
    );
    let ready = store.ready_tasks(runner.id, 10).await.expect("ready");
    assert_eq!(ready[0].task_id, two);
    assert!(store.claim_task(two, "i2", ms(3)).await.expect("claim"));
    let last = store
        .apply_task_update(
            runner.id,
            progress(two, "i2", 1, RunState::Succeeded, Some("two\n")),
            LOG_LIMIT,
        )
        .await
        .expect("final");
    assert_eq!(
        last,
        UpdateOutcome::Applied {
            task_final: true,
            run_final: Some(RunState::Succeeded),
            log_truncated: false,
        }
    );
    assert_eq!(
        store.run_log(run.id, 0, LOG_LIMIT).await.expect("log").text,
        "héllo world\ntwo\n"
    );
    // Offsets count bytes; one inside a character resumes at the next character.
    assert_eq!(
        store.run_log(run.id, 7, LOG_LIMIT).await.expect("log").text,
        "world\ntwo\n"
    );
    assert_eq!(
        store.run_log(run.id, 2, LOG_LIMIT).await.expect("log").text,
        "llo world\ntwo\n"
    );
    assert_eq!(
        store
            .run_log(run.id, 99, LOG_LIMIT)
            .await
            .expect("log")
            .text,
        ""
    );
    let finished = store.run_by_id(run.id).await.expect("get").expect("run");
    assert_eq!(finished.state, RunState::Succeeded);
    assert!(
        store
            .runners_with_active_runs()
            .await
            .expect("active")
            .is_empty(),
        "a finished run is no work"
    );
    assert!(finished.finished_at.is_some());
    assert_eq!(
        store
            .apply_task_update(
                runner.id,
                progress(two, "i2", 2, RunState::Running, None),
                LOG_LIMIT
            )
            .await
            .expect("late"),
        UpdateOutcome::AlreadyFinished(RunState::Succeeded)
    );
}

async fn cancel_lost_and_runner_deletion_end_runs(store: Arc<dyn Store>) {
    let runner = new_runner("r");
    store
        .create_runner(runner.clone(), ev("runner.created", None))
        .await
        .expect("runner");
    // Queued: cancelled at once, the rest not run.
    let queued = queued_run(&store, &runner, &["a", "b"]).await;
    match store
        .cancel_run(queued.id, ev("run.cancel_requested", None))
        .await
        .expect("cancel")
    {
        CancelOutcome::Requested { running } => assert!(running.is_empty()),
        other => panic!("{other:?}"),
    }
    let r = store.run_by_id(queued.id).await.expect("get").expect("run");
    assert_eq!(r.state, RunState::Cancelled);
    assert!(r.tasks.iter().all(|t| t.state == RunState::Cancelled));
    assert!(matches!(
        store
            .cancel_run(queued.id, ev("run.cancel_requested", None))
            .await
            .expect("again"),
        CancelOutcome::AlreadyFinished(RunState::Cancelled)
    ));

    // Running: the running task is handed back to be killed; the run ends when it reports.
    let running = queued_run(&store, &runner, &["a", "b"]).await;
    let a = running.tasks[0].id;
    assert!(store.claim_task(a, "i1", ms(1)).await.expect("claim"));
    match store
        .cancel_run(running.id, ev("run.cancel_requested", None))
        .await
        .expect("cancel")
    {
        CancelOutcome::Requested { running } => assert_eq!(running[0].task_id, a),
        other => panic!("{other:?}"),
    }
    assert!(
        store
            .ready_tasks(runner.id, 10)
            .await
            .expect("ready")
            .is_empty(),
        "a cancelled run starts nothing new"
    );
    store
        .apply_task_update(
            runner.id,
            progress(a, "i1", 1, RunState::Succeeded, None),
            LOG_LIMIT,
        )
        .await
        .expect("final");
    let r = store
        .run_by_id(running.id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(r.state, RunState::Cancelled);
    assert_eq!(r.reason.as_deref(), Some("cancelled by user:test"));

    // Lost.
    let lost = queued_run(&store, &runner, &["a"]).await;
    let t = lost.tasks[0].id;
    assert!(store.claim_task(t, "i1", ms(1)).await.expect("claim"));
    let ended = store
        .end_task(t, RunState::Lost, "gone", ms(5))
        .await
        .expect("end")
        .expect("was running");
    assert_eq!(ended.state, RunState::Lost);
    assert!(store
        .end_task(t, RunState::Lost, "gone", ms(6))
        .await
        .expect("again")
        .is_none());

    // Deleting the runner cancels what is still active and keeps the history.
    let active = queued_run(&store, &runner, &["a"]).await;
    store
        .delete_runner(runner.id, ev("runner.deleted", None))
        .await
        .expect("delete");
    let r = store.run_by_id(active.id).await.expect("get").expect("run");
    assert_eq!(r.state, RunState::Cancelled);
    let all = store
        .list_runs(RunFilter {
            runner_id: Some(runner.id),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].id, active.id, "newest first");
    // A run for the deleted runner is refused and leaves nothing behind.
    let late = NewRun {
        id: RunId::new(),
        pipeline: PipelineName::parse("p").expect("name"),
        runner_id: runner.id,
        runner_name: runner.name.clone(),
        tasks: tasks(&["a"])
            .into_iter()
            .map(|t| (TaskId::new(), t))
            .collect(),
        created_at: OffsetDateTime::now_utc(),
        created_by: "user:test".into(),
    };
    let late_id = late.id;
    assert!(matches!(
        store.create_run(late, ev("run.created", None)).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.run_by_id(late_id).await.expect("get").is_none());
}

// ---------------------------------------------------------------------------------------------
// RotationStore: the headline feature's storage
// ---------------------------------------------------------------------------------------------

fn grace_ended(e: &tether_store::ExpiredGeneration) -> NewAuditEvent {
    ev(
        "credential.grace_expired",
        Some((e.runner_id, e.runner_name.as_str())),
    )
}

/// An overlap refresh with the secret `secret`, the previous generation retiring until `until`.
async fn refresh_overlap(
    store: &Arc<dyn Store>,
    secret: &str,
    runner: RunnerId,
    until: OffsetDateTime,
    audit: NewAuditEvent,
) -> tether_store::Refreshed {
    let mode = tether_store::RotationMode::Overlap { expires_at: until };
    store
        .refresh_credentials(generation_of(secret, runner, mode), &|_| audit.clone())
        .await
        .expect("refresh")
}

async fn client_of(store: &Arc<dyn Store>, r: &NewRunner) -> tether_store::ClientRecord {
    store
        .client_by_id(&r.client_id)
        .await
        .expect("client")
        .expect("exists")
}

fn states(c: &tether_store::ClientRecord) -> Vec<(u32, CredentialState)> {
    c.generations
        .iter()
        .map(|g| (g.generation.0, g.state))
        .collect()
}

async fn refresh_revokes_or_retires_bumps_the_version_and_records_who_revoked(
    store: Arc<dyn Store>,
) {
    use tether_store::RotationMode;
    let r = new_runner("rot");
    store
        .create_runner(r.clone(), ev("runner.created", None))
        .await
        .expect("create");
    let v1 = client_of(&store, &r).await.version;

    // Overlap: the previous generation retires until the given time.
    let until = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let out = refresh_overlap(
        &store,
        "s2",
        r.id,
        until,
        ev("credentials.refreshed", Some((r.id, "rot"))),
    )
    .await;
    assert_eq!(
        (out.generation, out.previous),
        (Generation(2), Generation(1))
    );
    assert!(out.revoked.is_empty());
    assert!(out.version > v1, "every change bumps the version");
    let c = client_of(&store, &r).await;
    assert_eq!(
        c.version, out.version,
        "the record is read at the committed version"
    );
    assert_eq!(
        states(&c),
        [(2, CredentialState::Active), (1, CredentialState::Retiring)]
    );
    let runner = store
        .runner_by_id(r.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(runner.generation, Generation(2));
    assert_eq!(
        runner.retiring_until.map(to_ms),
        Some(to_ms(until)),
        "the runner record says until when the old secret works"
    );

    // Revoke mode: the active one and every retiring one are revoked, by the refresher.
    let out = store
        .refresh_credentials(generation_of("s3", r.id, RotationMode::Revoke), &|out| {
            // The event is made from what the transaction did.
            let mut e = ev("credentials.refreshed", Some((r.id, "rot")));
            e.detail = json!({
                "generation": out.generation.0,
                "previous_generation": out.previous.0,
                "revoked": out.revoked.len(),
            });
            e
        })
        .await
        .expect("refresh");
    assert_eq!(out.revoked, [Generation(1), Generation(2)]);
    let c = client_of(&store, &r).await;
    assert_eq!(c.version, out.version);
    assert_eq!(
        states(&c),
        [
            (3, CredentialState::Active),
            (2, CredentialState::Revoked),
            (1, CredentialState::Revoked)
        ]
    );
    for g in &c.generations[1..] {
        assert!(
            g.revoked_at.is_some(),
            "generation {} has revoked_at",
            g.generation
        );
        assert_eq!(g.revoked_by.as_deref(), Some("user:alice"));
    }
    assert!(c.generations[0].revoked_at.is_none());
    let runner = store
        .runner_by_id(r.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(runner.retiring_until, None);
    // The audit event of the refresh carries the generations.
    let events = store
        .list_audit(AuditFilter {
            runner: Some(r.id.to_string()),
            before_id: None,
            limit: 10,
        })
        .await
        .expect("audit");
    let refreshed = events
        .iter()
        .find(|e| e.action == "credentials.refreshed")
        .expect("refresh audited");
    assert_eq!(refreshed.detail["generation"], 3);
    assert_eq!(refreshed.detail["previous_generation"], 2);
    assert_eq!(refreshed.detail["revoked"], 2);
}

async fn a_refresh_of_a_missing_runner_is_not_found_and_writes_nothing(store: Arc<dyn Store>) {
    use tether_store::RotationMode;
    let before = audit_count(&store).await;
    let err = store
        .refresh_credentials(
            generation_of("s", RunnerId::new(), RotationMode::Revoke),
            &|_| ev("credentials.refreshed", None),
        )
        .await
        .expect_err("no runner");
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(audit_count(&store).await, before);
    let err = store
        .revoke_retiring(
            RunnerId::new(),
            OffsetDateTime::now_utc(),
            "user:test",
            &|_| ev("credentials.previous_revoked", None),
        )
        .await
        .expect_err("no runner");
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

async fn revoke_retiring_ends_an_overlap_once_and_keeps_the_version_when_there_is_none(
    store: Arc<dyn Store>,
) {
    let r = new_runner("overlap");
    store
        .create_runner(r.clone(), ev("runner.created", None))
        .await
        .expect("create");
    let until = OffsetDateTime::now_utc() + time::Duration::hours(1);
    refresh_overlap(
        &store,
        "s2",
        r.id,
        until,
        ev("credentials.refreshed", Some((r.id, "overlap"))),
    )
    .await;
    let by_bob = |out: &tether_store::RetiringRevoked| {
        let mut e = ev("credentials.previous_revoked", Some((r.id, "overlap")));
        e.actor = "user:bob".into();
        e.detail = json!({"revoked": out.revoked.iter().map(|g| g.0).collect::<Vec<_>>()});
        e
    };
    let done = store
        .revoke_retiring(r.id, OffsetDateTime::now_utc(), "user:bob", &by_bob)
        .await
        .expect("revoke");
    assert_eq!(done.revoked, [Generation(1)]);
    let c = client_of(&store, &r).await;
    assert_eq!(c.version, done.version);
    assert_eq!(c.generations[1].state, CredentialState::Revoked);
    assert_eq!(c.generations[1].revoked_by.as_deref(), Some("user:bob"));
    // Nothing left: no generation revoked, the version unchanged.
    let again = store
        .revoke_retiring(r.id, OffsetDateTime::now_utc(), "user:bob", &by_bob)
        .await
        .expect("revoke");
    assert!(again.revoked.is_empty());
    assert_eq!(again.version, done.version);
}

async fn grace_expiry_revokes_only_what_ended_as_system_and_bumps_each_runner(
    store: Arc<dyn Store>,
) {
    use tether_store::RotationMode;
    let now = OffsetDateTime::now_utc();
    let ended = new_runner("ended");
    let later = new_runner("later");
    for (r, until) in [
        (&ended, now - time::Duration::seconds(1)),
        (&later, now + time::Duration::hours(1)),
    ] {
        store
            .create_runner(r.clone(), ev("runner.created", None))
            .await
            .expect("create");
        store
            .refresh_credentials(
                generation_of("s2", r.id, RotationMode::Overlap { expires_at: until }),
                &|_| ev("credentials.refreshed", None),
            )
            .await
            .expect("refresh");
    }
    let before = client_of(&store, &ended).await.version;
    let expired = store
        .expire_retiring(now, &grace_ended)
        .await
        .expect("expire");
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].runner_id, ended.id);
    assert_eq!(expired[0].generation, Generation(1));
    assert!(expired[0].version > before);
    let c = client_of(&store, &ended).await;
    assert_eq!(c.version, expired[0].version);
    assert_eq!(c.generations[1].state, CredentialState::Revoked);
    assert_eq!(c.generations[1].revoked_by.as_deref(), Some("system"));
    assert_eq!(
        client_of(&store, &later).await.generations[1].state,
        CredentialState::Retiring
    );
    assert!(store
        .expire_retiring(now, &grace_ended)
        .await
        .expect("again")
        .is_empty());
}

async fn sealed_secrets_are_kept_only_for_the_newest_generation_and_their_window(
    store: Arc<dyn Store>,
) {
    use tether_store::RotationMode;
    let r = new_runner("sealed");
    store
        .create_runner(r.clone(), ev("runner.created", None))
        .await
        .expect("create");
    let now = OffsetDateTime::now_utc();
    assert!(store
        .sealed_secret(r.id, now)
        .await
        .expect("read")
        .is_none());
    for s in ["s2", "s3"] {
        store
            .refresh_credentials(generation_of(s, r.id, RotationMode::Revoke), &|_| {
                ev("credentials.refreshed", None)
            })
            .await
            .expect("refresh");
    }
    let sealed = store
        .sealed_secret(r.id, now)
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(sealed.generation, Generation(3));
    assert_eq!(sealed.sealed, b"s3", "only the newest one is kept");
    // After its window it cannot be read; reading deletes nothing, the purge deletes it.
    let after = now + time::Duration::minutes(16);
    assert!(store
        .sealed_secret(r.id, after)
        .await
        .expect("read")
        .is_none());
    assert_eq!(store.purge_sealed_secrets(after).await.expect("purge"), 1);
    assert_eq!(store.purge_sealed_secrets(after).await.expect("purge"), 0);
    assert!(
        store
            .sealed_secret(r.id, now)
            .await
            .expect("read")
            .is_none(),
        "the ciphertext is gone"
    );
}

async fn key_fingerprints_are_recorded_on_first_start_and_kept(store: Arc<dyn Store>) {
    let at = OffsetDateTime::now_utc();
    let first = [("signing".to_owned(), "aa".to_owned())];
    assert_eq!(
        store.key_fingerprints(&first, at).await.expect("record"),
        first
    );
    // Another process with another key reads the first one back.
    let other = [
        ("signing".to_owned(), "bb".to_owned()),
        ("pepper".to_owned(), "cc".to_owned()),
    ];
    assert_eq!(
        store.key_fingerprints(&other, at).await.expect("read"),
        [
            ("signing".to_owned(), "aa".to_owned()),
            ("pepper".to_owned(), "cc".to_owned())
        ],
        "a known key keeps its first fingerprint, a new one is recorded"
    );
}

// ---------------------------------------------------------------------------------------------
// ReplicaStore: the session registry
// ---------------------------------------------------------------------------------------------

fn status(
    s: tether_domain::RunnerStatus,
    reason: &str,
    at: OffsetDateTime,
) -> tether_store::PersistedStatus {
    tether_store::PersistedStatus {
        status: s,
        reason: reason.into(),
        since: at,
        last_seen_at: Some(at),
        runner_version: None,
    }
}

/// A session of generation 1 as a runner's hello describes it.
fn session(
    session_id: u64,
    runner: RunnerId,
    instance: &str,
    at: OffsetDateTime,
) -> tether_store::NewSession {
    tether_store::NewSession {
        session_id,
        runner_id: runner,
        instance_id: instance.into(),
        hostname: format!("host-of-{instance}"),
        generation: Generation(1),
        connected_at: at,
        secret_source: Some("file".into()),
        hot_reload: Some(true),
        secret_file: Some("/run/secrets/tether".into()),
    }
}

async fn sessions_held_elsewhere_are_listed_with_what_their_instances_said(store: Arc<dyn Store>) {
    let one = new_runner("one");
    let two = new_runner("two");
    let other = new_runner("other");
    for r in [&one, &two, &other] {
        store
            .create_runner(r.clone(), ev("runner.created", None))
            .await
            .expect("runner");
    }
    let t0 = ms(1_000_000);
    for replica in ["a", "b", "dead"] {
        store.replica_alive(replica, t0, t0).await.expect("alive");
    }
    let open = |replica: &'static str, s: tether_store::NewSession| {
        let store = store.clone();
        async move { store.session_opened(replica, &s).await.expect("opened") }
    };
    open("a", session(1, one.id, "i-a", t0)).await;
    open("b", session(1, one.id, "i-b", ms(1_000_100))).await;
    open("b", session(2, two.id, "i-c", t0)).await;
    open("b", session(3, other.id, "i-d", t0)).await;
    open("dead", session(1, two.id, "i-e", t0)).await;
    open("b", session(4, two.id, "i-f", t0)).await;
    store
        .session_closed("b", 4, ms(1_000_200))
        .await
        .expect("closed");
    store
        .session_reauthenticated("b", 2, Generation(2), ms(1_000_300))
        .await
        .expect("reauth");
    let run = queued_run(&store, &two, &["build"]).await;
    let task = run.tasks[0].id;
    assert!(store
        .claim_task(task, "i-c", ms(1_000_400))
        .await
        .expect("claim"));
    store
        .apply_task_update(
            two.id,
            progress(task, "i-c", 1, RunState::Running, None),
            LOG_LIMIT,
        )
        .await
        .expect("running");

    // The dead replica stops refreshing; A and B (and the sessions they hold) are seen later.
    store
        .replica_alive("a", t0, ms(1_010_000))
        .await
        .expect("alive");
    store
        .replica_alive("b", t0, ms(1_010_000))
        .await
        .expect("alive");
    let live_after = ms(1_005_000);
    let seen = store
        .sessions_elsewhere(&[one.id, two.id], "a", live_after)
        .await
        .expect("sessions");
    let listed: Vec<(&str, &str, &str, u32, u32)> = seen
        .iter()
        .map(|s| {
            (
                s.replica_id.as_str(),
                s.instance_id.as_str(),
                s.hostname.as_str(),
                s.generation.0,
                s.running_tasks,
            )
        })
        .collect();
    // Not A's own, not the dead replica's, not a closed one, not a runner not asked for.
    let mut expected = vec![
        ("b", "i-b", "host-of-i-b", 1, 0),
        ("b", "i-c", "host-of-i-c", 2, 1),
    ];
    if one.id.to_string() > two.id.to_string() {
        expected.reverse();
    }
    assert_eq!(listed, expected);
    let c = seen.iter().find(|s| s.instance_id == "i-c").expect("i-c");
    assert_eq!(c.generation_since, ms(1_000_300));
    assert_eq!(c.connected_at, t0);
    assert_eq!(c.last_heartbeat_at, ms(1_010_000));
    assert_eq!(
        (
            c.secret_source.as_deref(),
            c.hot_reload,
            c.secret_file.as_deref()
        ),
        (Some("file"), Some(true), Some("/run/secrets/tether"))
    );
    let b = seen.iter().find(|s| s.instance_id == "i-b").expect("i-b");
    assert_eq!(b.generation_since, b.connected_at, "never re-authenticated");
    assert!(store
        .sessions_elsewhere(&[], "a", live_after)
        .await
        .expect("none asked")
        .is_empty());
}

async fn the_session_registry_keeps_the_holding_replicas_status_and_expires_dead_replicas(
    store: Arc<dyn Store>,
) {
    use tether_domain::RunnerStatus;
    use tether_store::{LiveElsewhere, SharedPresence};
    let runner = new_runner("r");
    store
        .create_runner(runner.clone(), ev("runner.created", None))
        .await
        .expect("runner");
    let t0 = ms(1_000_000);
    for replica in ["a", "b"] {
        store.replica_alive(replica, t0, t0).await.expect("alive");
    }
    store
        .session_opened("a", &session(1, runner.id, "i-1", t0))
        .await
        .expect("opened");
    store
        .save_runner_status(
            runner.id,
            &status(RunnerStatus::Running, "connected", t0),
            None,
        )
        .await
        .expect("status");
    let live_after = ms(999_000);
    assert_eq!(
        store
            .instance_presence(runner.id, "i-1", "b", live_after)
            .await
            .expect("presence"),
        SharedPresence::Live
    );
    assert_eq!(
        store
            .instance_presence(runner.id, "i-1", "a", live_after)
            .await
            .expect("presence"),
        SharedPresence::Unknown,
        "a replica's own sessions are its own business"
    );
    // B, which lost its own session of the runner, does not overwrite A's view.
    let b = LiveElsewhere {
        replica: "b".into(),
        live_after,
    };
    store
        .save_runner_status(
            runner.id,
            &status(RunnerStatus::Unknown, "gone from b", ms(1_000_500)),
            Some(&b),
        )
        .await
        .expect("status");
    let r = store
        .runner_by_id(runner.id)
        .await
        .expect("get")
        .expect("runner");
    assert_eq!(r.status.status, RunnerStatus::Running);

    // A stops; B stays alive; once A's liveness lapsed, B expires it.
    let t1 = ms(1_100_000);
    store.replica_alive("b", t0, t1).await.expect("alive");
    let expired = store
        .expire_replicas(ms(1_050_000), t1, "replica a stopped")
        .await
        .expect("expire");
    assert_eq!(expired, vec![runner.id]);
    let r = store
        .runner_by_id(runner.id)
        .await
        .expect("get")
        .expect("runner");
    assert_eq!(
        (r.status.status, r.status.reason.as_str()),
        (RunnerStatus::Unknown, "replica a stopped")
    );
    assert_eq!(
        store
            .instance_presence(runner.id, "i-1", "b", ms(1_050_000))
            .await
            .expect("presence"),
        SharedPresence::GoneSince(t0),
        "a dead replica's session ended when it was last seen"
    );
    assert!(store
        .expire_replicas(ms(1_050_000), t1, "again")
        .await
        .expect("expire")
        .is_empty());
    // Nothing holds it now: B's view is written.
    store
        .save_runner_status(
            runner.id,
            &status(RunnerStatus::Unknown, "waiting", t1),
            Some(&LiveElsewhere {
                replica: "b".into(),
                live_after: ms(1_050_000),
            }),
        )
        .await
        .expect("status");
    let r = store
        .runner_by_id(runner.id)
        .await
        .expect("get")
        .expect("runner");
    assert_eq!(r.status.reason, "waiting");
    // Closed sessions are forgotten after a while; a session of a deleted runner is not recorded.
    assert_eq!(store.purge_closed_sessions(t1).await.expect("purge"), 1);
    store
        .delete_runner(runner.id, ev("runner.deleted", None))
        .await
        .expect("delete");
    store
        .session_opened("b", &session(2, runner.id, "i-1", t1))
        .await
        .expect("a late session of a deleted runner is ignored");
    assert_eq!(
        store
            .instance_presence(runner.id, "i-1", "a", ms(1_050_000))
            .await
            .expect("presence"),
        SharedPresence::Unknown
    );
}

async fn login_failures_count_per_pair_restart_after_their_window_and_clear(store: Arc<dyn Store>) {
    let t0 = ms(10_000_000);
    let window = time::Duration::minutes(15);
    for i in 0..5 {
        let n = store
            .record_login_failure(
                "alice",
                "10.0.0.1",
                t0 + time::Duration::seconds(i),
                t0 - window,
            )
            .await
            .expect("record");
        assert_eq!(n, u32::try_from(i + 1).expect("small"));
    }
    assert_eq!(
        store
            .login_failures("alice", "10.0.0.1", t0 - window)
            .await
            .expect("read"),
        Some((5, t0))
    );
    assert_eq!(
        store
            .login_failures("alice", "10.0.0.2", t0 - window)
            .await
            .expect("read"),
        None,
        "another address"
    );
    assert_eq!(
        store
            .login_failures("bob", "10.0.0.1", t0 - window)
            .await
            .expect("read"),
        None,
        "another user"
    );
    // After the window, the old count no longer shows, and the next failure starts again at 1.
    let later = t0 + window + time::Duration::seconds(1);
    assert_eq!(
        store
            .login_failures("alice", "10.0.0.1", later - window)
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        store
            .record_login_failure("alice", "10.0.0.1", later, later - window)
            .await
            .expect("record"),
        1
    );
    store
        .clear_login_failures("alice", "10.0.0.1")
        .await
        .expect("clear");
    assert_eq!(
        store
            .login_failures("alice", "10.0.0.1", later - window)
            .await
            .expect("read"),
        None
    );
    store
        .record_login_failure("carol", "", t0, t0 - window)
        .await
        .expect("record");
    assert_eq!(
        store
            .purge_login_failures(t0 + time::Duration::seconds(1))
            .await
            .expect("purge"),
        1
    );
}

async fn a_replica_gone_leaves_no_runner_it_held_showing_running(store: Arc<dyn Store>) {
    use tether_domain::RunnerStatus;
    let t0 = ms(2_000_000);
    store.replica_alive("a", t0, t0).await.expect("alive");
    let mut runners = Vec::new();
    for (i, name) in ["open", "closed"].iter().enumerate() {
        let runner = new_runner(name);
        store
            .create_runner(runner.clone(), ev("runner.created", None))
            .await
            .expect("runner");
        store
            .session_opened("a", &session(i as u64 + 1, runner.id, "i", t0))
            .await
            .expect("opened");
        store
            .save_runner_status(
                runner.id,
                &status(RunnerStatus::Running, "connected", t0),
                None,
            )
            .await
            .expect("status");
        runners.push(runner);
    }
    // The second session's close was recorded, the status it caused was not (the process stopped
    // in between): the replica's end must still leave that runner unknown.
    store
        .session_closed("a", 2, ms(2_000_100))
        .await
        .expect("closed");
    let mut gone = store
        .replica_gone(
            "a",
            ms(2_000_200),
            ms(1_990_000),
            ms(2_000_200),
            "the control plane stopped",
        )
        .await
        .expect("gone");
    gone.sort();
    let mut expected: Vec<_> = runners.iter().map(|r| r.id).collect();
    expected.sort();
    assert_eq!(gone, expected);
    for r in &runners {
        let got = store
            .runner_by_id(r.id)
            .await
            .expect("get")
            .expect("runner");
        assert_eq!(
            (got.status.status, got.status.reason.as_str()),
            (RunnerStatus::Unknown, "the control plane stopped")
        );
    }
}

/// Runs every check against each backend: `sqlite::<check>` and `postgres::<check>`; `$open`
/// makes a fresh, empty store and whatever must live as long as it (a temporary directory, a
/// throwaway database).
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        conformance!(@backend sqlite, crate::sqlite; $($check),*);
        conformance!(@backend postgres, crate::postgres; $($check),*);
    };
    (@backend $backend:ident, $open:path; $($check:ident),*) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $check() {
                    let (store, _keep) = $open().await;
                    super::$check(store).await;
                }
            )*
        }
    };
}

async fn only_the_assigned_instance_updates_a_task_in_order_and_a_log_stops_at_its_limit(
    store: Arc<dyn Store>,
) {
    let runner = new_runner("r");
    store
        .create_runner(runner.clone(), ev("runner.created", None))
        .await
        .expect("runner");
    let run = queued_run(&store, &runner, &["one", "two"]).await;
    let (one, two) = (run.tasks[0].id, run.tasks[1].id);
    // Nothing is assigned yet: no instance may report the queued tasks, started or finished.
    for task in [one, two] {
        assert_eq!(
            store
                .apply_task_update(
                    runner.id,
                    progress(task, "i1", 1, RunState::Succeeded, None),
                    LOG_LIMIT
                )
                .await
                .expect("refused"),
            UpdateOutcome::NotAssigned
        );
    }
    assert!(store.claim_task(one, "i1", ms(1)).await.expect("claim"));
    // Another instance of the same runner may not write to i1's task.
    assert_eq!(
        store
            .apply_task_update(
                runner.id,
                progress(one, "i2", 1, RunState::Succeeded, None),
                LOG_LIMIT
            )
            .await
            .expect("refused"),
        UpdateOutcome::NotAssigned
    );
    // seq must be the next one: not 0, not a gap, not u64::MAX.
    for seq in [0, 2, u64::MAX] {
        assert_eq!(
            store
                .apply_task_update(
                    runner.id,
                    progress(one, "i1", seq, RunState::Running, None),
                    LOG_LIMIT
                )
                .await
                .expect("refused"),
            UpdateOutcome::OutOfOrder { expected: 1 },
            "seq {seq}"
        );
    }
    let r = store.run_by_id(run.id).await.expect("get").expect("run");
    assert!(
        r.tasks[0].started_at.is_none() && r.tasks[1].state == RunState::Queued,
        "a refused update changed the run: {r:?}"
    );
    // A 10-byte limit: the chunk that crosses it is cut and says so; later chunks are dropped,
    // while their updates still apply.
    let chunk = |seq, text| progress(one, "i1", seq, RunState::Running, Some(text));
    assert_eq!(
        store
            .apply_task_update(runner.id, chunk(1, "12345678"), 10)
            .await
            .expect("u1"),
        UpdateOutcome::Applied {
            task_final: false,
            run_final: None,
            log_truncated: false
        }
    );
    assert_eq!(
        store
            .apply_task_update(runner.id, chunk(2, "abcdef"), 10)
            .await
            .expect("u2"),
        UpdateOutcome::Applied {
            task_final: false,
            run_final: None,
            log_truncated: true
        }
    );
    store
        .apply_task_update(runner.id, chunk(3, "dropped"), 10)
        .await
        .expect("u3");
    let page = store.run_log(run.id, 0, LOG_LIMIT).await.expect("log");
    assert_eq!(
        page.text,
        format!("12345678ab{}", tether_store::truncation_note(10))
    );
    assert_eq!(page.total_bytes, page.text.len() as u64);
    // Pages: a limit, and the length of the whole log.
    let first = store.run_log(run.id, 0, 4).await.expect("page");
    assert_eq!(first.text, "1234");
    assert_eq!(first.total_bytes, page.total_bytes);
    assert_eq!(
        store.run_log(run.id, 4, 6).await.expect("page").text,
        "5678ab"
    );
    let seq3 = store
        .apply_task_update(
            runner.id,
            progress(one, "i1", 3, RunState::Running, None),
            10,
        )
        .await
        .expect("replay");
    assert_eq!(seq3, UpdateOutcome::Duplicate);
}

async fn tokens_expire_are_listed_revoked_and_die_with_a_password_reset_or_their_user(
    store: Arc<dyn Store>,
) {
    let pepper = Pepper::from_bytes([3; 32]);
    let user = |name: &str, role| NewUser {
        id: UserId::new(),
        username: Username::parse(name).expect("name"),
        password_hash: "$argon2id$fake".into(),
        role,
        created_at: OffsetDateTime::now_utc(),
    };
    let admin = user("root", Role::Admin);
    let first = ApiToken::generate();
    let token = |owner: UserId, t: &ApiToken, name: &str, expires_at| NewApiToken {
        id: ApiTokenId::new(),
        user_id: owner,
        name: name.into(),
        verifier: pepper.verifier(t.expose()),
        created_at: OffsetDateTime::now_utc(),
        expires_at,
    };
    store
        .bootstrap_admin(
            admin.clone(),
            token(admin.id, &first, "bootstrap", None),
            ev("admin.bootstrapped", None),
        )
        .await
        .expect("bootstrap");
    let eve = user("eve", Role::Operator);
    store
        .create_user(eve.clone(), ev("user.created", None))
        .await
        .expect("eve");
    let now = OffsetDateTime::now_utc();
    let (laptop, ci) = (ApiToken::generate(), ApiToken::generate());
    let laptop_token = token(eve.id, &laptop, "laptop", None);
    let laptop_id = laptop_token.id;
    store
        .create_api_token(laptop_token, ev("token.created", None))
        .await
        .expect("laptop");
    store
        .create_api_token(
            token(eve.id, &ci, "ci", Some(now + time::Duration::hours(1))),
            ev("token.created", None),
        )
        .await
        .expect("ci");
    let lookup = |t: &ApiToken, at| {
        let store = store.clone();
        let verifier = pepper.verifier(t.expose());
        async move { store.user_by_token(&verifier, at).await.expect("lookup") }
    };
    // An expiring token works until its time, not after.
    assert!(lookup(&ci, now).await.is_some());
    assert!(lookup(&ci, now + time::Duration::hours(2)).await.is_none());
    let (owner, id) = lookup(&laptop, now).await.expect("laptop works");
    assert_eq!((owner.username.as_str(), id), ("eve", laptop_id));

    let listed = store.list_api_tokens(eve.id).await.expect("list");
    assert_eq!(
        listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["laptop", "ci"]
    );
    assert_eq!(listed[0].last_used_at, None);
    assert!(listed[1].expires_at.is_some());
    // Uses are recorded in batches; an older time never overwrites a newer one.
    let used = ms(5_000_000);
    store
        .record_api_token_use(&[(laptop_id, used), (laptop_id, ms(4_000_000))])
        .await
        .expect("use");
    store
        .record_api_token_use(&[(ApiTokenId::new(), used)])
        .await
        .expect("a revoked token's use is skipped");
    assert_eq!(
        store.list_api_tokens(eve.id).await.expect("list")[0].last_used_at,
        Some(used)
    );

    // Revoking: only the owner's own token, once.
    assert!(!store
        .revoke_api_token(admin.id, laptop_id, ev("token.revoked", None))
        .await
        .expect("not admin's"));
    assert!(store
        .revoke_api_token(eve.id, laptop_id, ev("token.revoked", None))
        .await
        .expect("revoke"));
    assert!(!store
        .revoke_api_token(eve.id, laptop_id, ev("token.revoked", None))
        .await
        .expect("twice"));
    assert!(lookup(&laptop, now).await.is_none());
    assert_eq!(store.list_api_tokens(eve.id).await.expect("list").len(), 1);

    // A password reset ends every token of the user.
    assert!(store
        .set_user_password(
            &eve.username,
            "$argon2id$new",
            ev("user.password_reset", None)
        )
        .await
        .expect("reset"));
    assert!(lookup(&ci, now).await.is_none());
    assert!(store
        .list_api_tokens(eve.id)
        .await
        .expect("list")
        .is_empty());

    // Deleting: never the last admin; a deleted user's tokens are gone with them.
    assert_eq!(
        store
            .delete_user(&admin.username, ev("user.deleted", None))
            .await
            .expect("refused"),
        UserDeletion::LastAdmin
    );
    let again = ApiToken::generate();
    store
        .create_api_token(
            token(eve.id, &again, "again", None),
            ev("token.created", None),
        )
        .await
        .expect("again");
    assert_eq!(
        store
            .delete_user(&eve.username, ev("user.deleted", None))
            .await
            .expect("delete"),
        UserDeletion::Deleted
    );
    assert!(lookup(&again, now).await.is_none());
    assert!(store
        .user_by_name(&eve.username)
        .await
        .expect("get")
        .is_none());
    assert_eq!(
        store
            .delete_user(&eve.username, ev("user.deleted", None))
            .await
            .expect("gone"),
        UserDeletion::NoSuchUser
    );
    assert!(
        lookup(&first, now).await.is_some(),
        "the admin's token is untouched"
    );
}

conformance!(
    key_fingerprints_are_recorded_on_first_start_and_kept,
    refresh_revokes_or_retires_bumps_the_version_and_records_who_revoked,
    a_refresh_of_a_missing_runner_is_not_found_and_writes_nothing,
    grace_expiry_revokes_only_what_ended_as_system_and_bumps_each_runner,
    sealed_secrets_are_kept_only_for_the_newest_generation_and_their_window,
    runners_round_trip_page_and_delete,
    duplicate_names_are_conflicts_and_write_nothing,
    credentials_usage_and_first_token,
    revoked_tokens_expire,
    users_tokens_and_bootstrap_once,
    tokens_expire_are_listed_revoked_and_die_with_a_password_reset_or_their_user,
    roles_change_passwords_reset_and_the_last_admin_stays,
    web_sessions_resolve_to_the_current_user_expire_and_end,
    pipelines_are_replaced_in_place_and_deleted,
    tasks_are_claimed_once_updates_apply_once_and_logs_keep_their_order,
    only_the_assigned_instance_updates_a_task_in_order_and_a_log_stops_at_its_limit,
    cancel_lost_and_runner_deletion_end_runs,
    revoke_retiring_ends_an_overlap_once_and_keeps_the_version_when_there_is_none,
    the_session_registry_keeps_the_holding_replicas_status_and_expires_dead_replicas,
    sessions_held_elsewhere_are_listed_with_what_their_instances_said,
    login_failures_count_per_pair_restart_after_their_window_and_clear,
    a_replica_gone_leaves_no_runner_it_held_showing_running,
);
