//! Behaviour every storage backend must have, written against `dyn Store` so the same checks run
//! for each backend (SQLite today).

use std::sync::Arc;

use serde_json::json;
use tether_domain::{
    ApiToken, ClientId, CredentialState, Description, Generation, Pepper, Platform, Role, RunnerId,
    RunnerName, UserId, Username,
};
use tether_store::sqlite::SqliteStore;
use tether_store::{
    AuditFilter, AuditStore, CredentialUse, NewApiToken, NewAuditEvent, NewRunner, NewUser,
    RunnerStore, Store, StoreError,
};
use time::OffsetDateTime;

fn ev(action: &str, runner: Option<(RunnerId, &str)>) -> NewAuditEvent {
    NewAuditEvent {
        at: OffsetDateTime::now_utc(),
        actor: "user:test".into(),
        action: action.into(),
        runner_id: runner.map(|r| r.0),
        runner_name: runner.map(|r| r.1.to_owned()),
        target: None,
        source_ip: Some("127.0.0.1".into()),
        detail: json!({"k": 1}),
    }
}

fn new_runner(name: &str) -> NewRunner {
    NewRunner {
        id: RunnerId::new(),
        name: RunnerName::parse(name).expect("name"),
        description: Description::parse("d").expect("description"),
        platform: Platform::Gke,
        client_id: ClientId::generate(),
        verifier: Pepper::from_bytes([1; 32]).verifier(name),
        created_at: OffsetDateTime::now_utc(),
        created_by: "user:test".into(),
    }
}

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("t.db"))
        .await
        .expect("open");
    (Arc::new(store), dir)
}

#[tokio::test]
async fn runners_round_trip_page_and_delete() {
    let (store, _dir) = sqlite().await;
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

#[tokio::test]
async fn duplicate_names_are_conflicts_and_write_nothing() {
    let (store, _dir) = sqlite().await;
    store
        .create_runner(new_runner("dup"), ev("runner.created", None))
        .await
        .expect("create");
    let err = store
        .create_runner(new_runner("dup"), ev("runner.created", None))
        .await
        .expect_err("duplicate");
    assert!(
        matches!(&err, StoreError::Conflict { constraint } if constraint == "runners.name"),
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

#[tokio::test]
async fn credentials_usage_and_first_token() {
    let (store, _dir) = sqlite().await;
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
        1000,
        ev("credential.first_token", Some((id, "cred"))),
    );
    assert!(first.await.expect("first"));
    let second = store.record_first_token(
        id,
        Generation::FIRST,
        2000,
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
            at_ms: 5000,
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

#[tokio::test]
async fn revoked_tokens_expire() {
    let (store, _dir) = sqlite().await;
    store
        .revoke_access_token("j1", 10_000, ev("oauth.token_revoked", None))
        .await
        .expect("revoke");
    store
        .revoke_access_token("j1", 10_000, ev("oauth.token_revoked", None))
        .await
        .expect("idempotent");
    store
        .revoke_access_token("j2", 50_000, ev("oauth.token_revoked", None))
        .await
        .expect("revoke");
    let mut live = store.revoked_access_tokens(5_000).await.expect("list");
    live.sort();
    assert_eq!(live, [("j1".to_owned(), 10), ("j2".to_owned(), 50)]);
    assert_eq!(
        store.revoked_access_tokens(20_000).await.expect("list"),
        [("j2".to_owned(), 50)]
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

#[tokio::test]
async fn users_tokens_and_bootstrap_once() {
    let (store, _dir) = sqlite().await;
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
        user_id: uid,
        name: "t".into(),
        verifier: pepper.verifier(t.expose()),
        created_at: OffsetDateTime::now_utc(),
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
        .user_by_token(&pepper.verifier(token.expose()))
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(
        (found.username.as_str(), found.role),
        ("admin", Role::Admin)
    );
    assert!(store
        .user_by_token(&pepper.verifier(other.expose()))
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
    assert!(matches!(dup, Err(StoreError::Conflict { .. })));
    let bobs = ApiToken::generate();
    store
        .create_api_token(api(bob, &bobs), ev("token.created", None))
        .await
        .expect("token");
    let found = store
        .user_by_token(&pepper.verifier(bobs.expose()))
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.role, Role::Viewer);
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
