//! A standard OAuth client from another ecosystem (Python: requests-oauthlib + PyJWT) gets a token
//! and verifies it against the JWKS without any tether-specific code. `scripts/test` creates the
//! virtualenv and sets `TETHER_TEST_PYTHON`.

use tether_testkit::spawn_app;

#[tokio::test]
async fn python_oauth_client_gets_and_verifies_tokens() {
    let python = std::env::var("TETHER_TEST_PYTHON").expect(
        "TETHER_TEST_PYTHON is not set: run the suite with scripts/test, which installs the Python OAuth libraries",
    );
    let app = spawn_app().await;
    let c = app.create_runner("interop", "gke").await;
    let id = c["credentials"]["client_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let secret = c["credentials"]["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/oauth_client.py");
    let output = tokio::process::Command::new(python)
        .args([script, &app.base_url, &id, &secret])
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "python client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    for method in ["client_secret_basic", "client_secret_post"] {
        let r = &results[method];
        assert_eq!(r["typ"], "at+jwt", "{method}: {r}");
        assert_eq!(r["token_type"], "Bearer", "{method}");
        assert_eq!(r["claims"]["client_id"], id.as_str(), "{method}");
        assert_eq!(r["claims"]["sub"], c["id"], "{method}");
        assert_eq!(r["claims"]["gen"], 1, "{method}");
    }
}
