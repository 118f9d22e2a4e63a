//! The revocation invariant under concurrent traffic: once a revoking call has returned, no
//! request that starts afterwards is accepted with an older credential generation — token
//! requests with the old secret, introspection of a token of it, and WebSocket connects with such
//! a token — for a revoke-mode refresh, `revoke-previous`, grace expiry and runner deletion.
//!
//! Each trial starts requesters and the revoking call together on a runner whose client cache was
//! just emptied (by an overlap refresh), which is when a load can race the change. Trials per
//! operation: `TETHER_REVOCATION_TRIALS` (default 200; the benchmark runs more).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tether_testkit::{spawn_app_with, TestApp};

use crate::ws::{next, open, send};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    RevokeRefresh,
    RevokePrevious,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Token,
    Introspect,
    Connect,
}

/// One request of a requester: when it started, and whether the old generation was accepted.
#[derive(Debug, Clone, Copy)]
struct Sample {
    kind: Kind,
    started: Instant,
    accepted: bool,
}

fn trials() -> usize {
    std::env::var("TETHER_REVOCATION_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// A runner whose first secret (`old`) is still accepted as the retiring generation, with an
/// access token of it, and an empty client cache (the overlap refresh invalidated it).
struct Setup {
    name: String,
    client_id: String,
    old: String,
    old_token: String,
    /// Until when the old generation works, as the refresh answered (read from the answer, not
    /// from a later GET: on a loaded machine the grace may have ended and been swept by then).
    previous_expires_at: Option<String>,
}

async fn setup(app: &TestApp, name: &str, grace_seconds: u64) -> Setup {
    let c = app.create_runner(name, "local").await;
    let client_id = c["credentials"]["client_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let old = c["credentials"]["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let old_token = app.access_token(&client_id, &old).await;
    let r = app
        .post(
            &format!("/api/v1/runners/{name}/credentials/refresh"),
            Some(&app.admin_token),
            &json!({"confirm": "refresh", "mode": "overlap", "grace_seconds": grace_seconds}),
        )
        .await;
    assert_eq!(r.status, 200, "overlap refresh: {}", r.body);
    Setup {
        name: name.to_owned(),
        client_id,
        old,
        old_token,
        previous_expires_at: r.json()["previous_expires_at"].as_str().map(str::to_owned),
    }
}

/// Sends one request of `kind` with the old generation; true if it was accepted.
async fn attempt(app: &TestApp, s: &Setup, kind: Kind) -> bool {
    match kind {
        Kind::Token => app.token_basic(&s.client_id, &s.old).await.status == 200,
        Kind::Introspect => {
            let r = app
                .post_form(
                    "/oauth/introspect",
                    None,
                    Some(&app.admin_token),
                    &[("token", &s.old_token)],
                )
                .await;
            r.status == 200 && r.json()["active"] == true
        }
        Kind::Connect => {
            let Ok(mut ws) = open(app, &s.old_token).await else {
                return false;
            };
            send(
                &mut ws,
                json!({"type": "hello", "protocol": 1, "runner_version": "9.9.9",
                       "instance_id": format!("i-{}", rand_suffix()), "hostname": "h",
                       "platform": "local", "capacity": 1}),
            )
            .await;
            matches!(next(&mut ws).await, Ok(Value::Object(m)) if m.get("type") == Some(&json!("welcome")))
        }
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// "Token accepted 812 µs after the call returned".
fn late(s: &Sample, cut: Instant) -> String {
    format!(
        "{:?} accepted {} µs after the call returned",
        s.kind,
        (s.started - cut).as_micros()
    )
}

async fn revoke(app: &TestApp, s: &Setup, op: Op) {
    let r = match op {
        Op::RevokeRefresh => {
            app.post(
                &format!("/api/v1/runners/{}/credentials/refresh", s.name),
                Some(&app.admin_token),
                &json!({"confirm": "refresh"}),
            )
            .await
        }
        Op::RevokePrevious => {
            app.request(
                reqwest::Method::POST,
                &format!("/api/v1/runners/{}/credentials/revoke-previous", s.name),
                Some(&app.admin_token),
                None,
            )
            .await
        }
        Op::Delete => {
            app.delete(
                &format!("/api/v1/runners/{}", s.name),
                Some(&app.admin_token),
            )
            .await
        }
    };
    assert!(
        [200, 204].contains(&r.status),
        "{op:?} failed: {} {}",
        r.status,
        r.body
    );
}

/// One trial: requesters of every kind and the revoking call start together. Returns the
/// requests that started after the call returned and were still accepted.
async fn trial(app: &Arc<TestApp>, op: Op, n: usize) -> Vec<String> {
    let s = Arc::new(setup(app, &format!("{op:?}-{n}").to_lowercase(), 3600).await);
    let returned: Arc<Mutex<Option<Instant>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let mut requesters = Vec::new();
    for kind in [
        Kind::Token,
        Kind::Token,
        Kind::Token,
        Kind::Introspect,
        Kind::Connect,
    ] {
        let (app, s, done) = (app.clone(), s.clone(), done.clone());
        requesters.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut after = 0;
            let deadline = Instant::now() + Duration::from_secs(10);
            // Keep going until a few requests have started after the call returned.
            while after < 3 && Instant::now() < deadline {
                let started = Instant::now();
                let accepted = attempt(&app, &s, kind).await;
                samples.push(Sample {
                    kind,
                    started,
                    accepted,
                });
                if done.load(Ordering::SeqCst) {
                    after += 1;
                }
            }
            samples
        }));
    }
    // Let the first requests reach the server and miss the cache, then revoke.
    tokio::time::sleep(Duration::from_micros(200 * (n as u64 % 8))).await;
    revoke(app, &s, op).await;
    *returned.lock().expect("lock") = Some(Instant::now());
    done.store(true, Ordering::SeqCst);
    let cut = returned.lock().expect("lock").expect("set");
    let mut violations = Vec::new();
    let mut after = 0;
    for r in requesters {
        for sample in r.await.expect("requester") {
            if sample.started > cut {
                after += 1;
                if sample.accepted {
                    violations.push(late(&sample, cut));
                }
            }
        }
    }
    assert!(
        after >= 5,
        "{op:?}: requests after the call returned were sent ({after})"
    );
    violations
}

async fn stress(op: Op) {
    let app = Arc::new(spawn_app_with(|c| c.heartbeat = Duration::from_secs(5)).await);
    let trials = trials();
    let mut bad = Vec::new();
    for n in 0..trials {
        let v = trial(&app, op, n).await;
        if !v.is_empty() {
            bad.push((n, v));
        }
    }
    assert!(
        bad.is_empty(),
        "{op:?}: {} of {trials} trials accepted the old generation after the revoking call \
         returned: {bad:?}",
        bad.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoke_mode_refresh_holds_under_concurrent_traffic() {
    stress(Op::RevokeRefresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_previous_holds_under_concurrent_traffic() {
    stress(Op::RevokePrevious).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runner_deletion_holds_under_concurrent_traffic() {
    stress(Op::Delete).await;
}

/// Grace expiry: the old secret is accepted until the grace period ends and never after, also
/// while requests are in flight across the moment it ends. Runners expire in parallel batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grace_expiry_holds_under_concurrent_traffic() {
    let app = Arc::new(
        spawn_app_with(|c| {
            c.heartbeat = Duration::from_secs(5);
            c.flush_interval = Duration::from_millis(100);
        })
        .await,
    );
    let trials = trials();
    let batch = 25;
    let mut bad = Vec::new();
    for b in 0..trials.div_ceil(batch) {
        let mut runs = Vec::new();
        for n in 0..batch.min(trials - b * batch) {
            let app = app.clone();
            runs.push(tokio::spawn(async move {
                let s = setup(&app, &format!("grace-{b}-{n}"), 1).await;
                let expires = time::OffsetDateTime::parse(
                    s.previous_expires_at.as_deref().expect("expiry"),
                    &time::format_description::well_known::Rfc3339,
                )
                .expect("rfc3339");
                // The same moment on this process's monotonic clock.
                let left = expires - time::OffsetDateTime::now_utc();
                let cut = Instant::now() + Duration::try_from(left).unwrap_or_default();
                let mut accepted_late = Vec::new();
                let mut after = 0;
                while after < 5 {
                    for kind in [Kind::Token, Kind::Introspect, Kind::Connect] {
                        let started = Instant::now();
                        let accepted = attempt(&app, &s, kind).await;
                        if started > cut {
                            after += 1;
                            if accepted {
                                accepted_late.push(late(
                                    &Sample {
                                        kind,
                                        started,
                                        accepted,
                                    },
                                    cut,
                                ));
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                accepted_late
            }));
        }
        for (n, r) in runs.into_iter().enumerate() {
            let late = r.await.expect("trial");
            if !late.is_empty() {
                bad.push((b * batch + n, late));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {trials} grace periods let the old generation in after they ended: {bad:?}",
        bad.len()
    );
}
