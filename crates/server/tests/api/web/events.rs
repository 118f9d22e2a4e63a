//! Live status: `/ui/events` sends the status of every runner on connect, then every change.

use std::time::Duration;

use serde_json::{json, Value};

use super::browser::{user, Browser, PASSWORD};
use crate::ws::{app, connect, runner};

/// Reads server-sent events until one for `name` has `status`; panics after 10 s.
pub(crate) async fn wait_for(
    resp: &mut reqwest::Response,
    buf: &mut String,
    name: &str,
    status: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = "";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e;
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if event != "runner" {
                continue;
            }
            let v: Value = serde_json::from_str(&data).expect("event data is JSON");
            if v["name"] == name && v["status"] == status {
                return v;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {status} event for {name} within 10 s; got {buf:?}"))
            .expect("stream read")
            .expect("stream still open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn status_changes_are_pushed_to_the_browser() {
    let app = app().await;
    let (id, secret) = runner(&app, "live").await;
    user(&app, "vic", "viewer").await;
    let v = Browser::login(&app, "vic", PASSWORD).await;
    let mut events = v.stream("/ui/events").await;
    assert_eq!(events.status(), 200);
    assert!(events.headers().get("content-type").is_some_and(|c| c
        .to_str()
        .unwrap_or_default()
        .starts_with("text/event-stream")));
    let mut buf = String::new();
    // The snapshot on connect.
    let first = wait_for(&mut events, &mut buf, "live", "pending").await;
    assert_eq!(
        first["status_reason"],
        "registered; no instance has connected yet"
    );

    // A runner connects: running.
    let _ws = connect(&app, &id, &secret, "i1").await;
    wait_for(&mut events, &mut buf, "live", "running").await;

    // Its credentials are refreshed: unknown, with why.
    let r = app
        .post(
            "/api/v1/runners/live/credentials/refresh",
            Some(&app.admin_token),
            &json!({"confirm": "refresh"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let unknown = wait_for(&mut events, &mut buf, "live", "unknown").await;
    assert!(
        unknown["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains("credentials refreshed")),
        "{unknown}"
    );
}

#[tokio::test]
async fn the_event_stream_needs_a_session_and_ends_at_shutdown() {
    let app = app().await;
    let anonymous = Browser::new(&app).get("/ui/events").await;
    assert_eq!(anonymous.status, 303);
    user(&app, "vic", "viewer").await;
    let v = Browser::login(&app, "vic", PASSWORD).await;
    let events = v.stream("/ui/events").await;
    assert_eq!(events.status(), 200);
    // Graceful shutdown must not wait for the open stream.
    tokio::time::timeout(Duration::from_secs(10), app.shutdown())
        .await
        .expect("shutdown with an open event stream");
    drop(events);
}

/// Reads the stream until the server ends it; panics if it is still open after 10 s.
async fn until_ended(resp: &mut reqwest::Response) {
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream outlived its session");
}

#[tokio::test]
async fn the_stream_ends_with_its_session_whatever_ends_it() {
    let app = tether_testkit::spawn_app_with(|c| {
        c.web_session_recheck = Duration::from_millis(200);
    })
    .await;
    user(&app, "ada", "admin").await;
    let admin = Browser::login(&app, "ada", PASSWORD).await;
    let causes: [(&str, &str); 4] = [
        ("logout", "lou"),
        ("password reset", "pam"),
        ("role change", "rob"),
        ("deletion", "dee"),
    ];
    for (cause, name) in causes {
        user(&app, name, "viewer").await;
        let v = Browser::login(&app, name, PASSWORD).await;
        let mut events = v.stream("/ui/events").await;
        assert_eq!(events.status(), 200, "{cause}");
        // Still open well past a re-check while nothing changed.
        let early = tokio::time::timeout(Duration::from_millis(600), async {
            while let Ok(Some(_)) = events.chunk().await {}
        })
        .await;
        assert!(early.is_err(), "{cause}: the stream ended on its own");
        let r = match cause {
            "logout" => v.post("/logout", &[]).await.status,
            "password reset" => {
                admin
                    .post(
                        &format!("/users/{name}/password"),
                        &[("password", "another long password")],
                    )
                    .await
                    .status
            }
            "role change" => {
                admin
                    .post(&format!("/users/{name}/role"), &[("role", "operator")])
                    .await
                    .status
            }
            _ => {
                app.delete(&format!("/api/v1/users/{name}"), Some(&app.admin_token))
                    .await
                    .status
            }
        };
        assert!(r == 303 || r == 204, "{cause}: {r}");
        until_ended(&mut events).await;
    }
}
