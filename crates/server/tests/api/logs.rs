//! No secret ever reaches a log line: every log event of this process, at TRACE level, is captured
//! while runners are created and tokens fetched, then searched for the secrets.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tether_testkit::spawn_app;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        capture
    })
}

#[tokio::test]
async fn secrets_and_tokens_never_appear_in_logs() {
    let logs = capture();
    let app = spawn_app().await;
    let created = app.create_runner("logged", "local").await;
    let id = created["credentials"]["client_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let secret = created["credentials"]["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let access = app.access_token(&id, &secret).await;
    let form = app.token_form(&id, &secret).await;
    assert_eq!(form.status, 200);
    // A secret pasted into the client_id field must not be logged either.
    assert_eq!(app.token_basic(&secret, &secret).await.status, 401);
    assert_eq!(app.token_basic(&id, &secret[..20]).await.status, 401);
    app.post_form(
        "/oauth/introspect",
        Some((&id, &secret)),
        None,
        &[("token", &access)],
    )
    .await;
    let user_token = app.user_token("logan", "operator").await;
    app.get("/api/v1/runners", Some(&user_token)).await;
    app.get("/api/v1/runners", Some("tpat_not_a_real_token_at_all"))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await; // let a usage flush run
    let admin_token = app.admin_token.clone();
    app.shutdown().await;

    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf8");
    assert!(
        text.contains("runner created"),
        "logging was captured at all:\n{text}"
    );
    for (what, value) in [
        ("client secret", secret.as_str()),
        ("secret prefix", &secret[..20]),
        ("access token", access.as_str()),
        ("user API token", user_token.as_str()),
        ("admin API token", admin_token.as_str()),
        ("password", "a long enough password"),
    ] {
        assert!(!text.contains(value), "the {what} appears in the logs");
    }
}
