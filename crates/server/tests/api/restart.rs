//! Key material and data survive a restart: the same runner secret works and tokens issued before
//! the restart still verify.

use std::os::unix::fs::PermissionsExt;

use tether_domain::ApiToken;
use tether_server::ServerConfig;

#[tokio::test]
async fn restart_keeps_keys_runners_and_admin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bootstrap = "restart-bootstrap-token-0123456789abcdef";
    let config = || {
        let mut c = ServerConfig::new(dir.path().to_path_buf());
        c.bootstrap_token = Some(ApiToken::parse_supplied(bootstrap).expect("token"));
        c
    };
    let http = reqwest::Client::new();

    let first = tether_server::start(config()).await.expect("first start");
    assert!(first.bootstrapped.is_some());
    let base = first.public_url.clone();
    let first_addr = first.local_addr;
    let created: serde_json::Value = http
        .post(format!("{base}/api/v1/runners"))
        .bearer_auth(bootstrap)
        .json(&serde_json::json!({"name": "survivor", "platform": "gke"}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let id = created["credentials"]["client_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let secret = created["credentials"]["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let token: serde_json::Value = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let access = token["access_token"].as_str().expect("token").to_owned();
    first.shutdown().await.expect("shutdown");

    for name in ["signing.key", "pepper.key", "master.key"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }

    let mut c = config();
    c.listen = first_addr;
    let second = tether_server::start(c).await.expect("second start");
    assert!(
        second.bootstrapped.is_none(),
        "the admin is created only once"
    );
    let base2 = second.public_url.clone();
    let r = http
        .post(format!("{base2}/oauth/introspect"))
        .bearer_auth(bootstrap)
        .form(&[("token", access.as_str())])
        .send()
        .await
        .expect("sent");
    let intro: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        intro["active"], true,
        "a token from before the restart still verifies"
    );
    let again = http
        .post(format!("{base2}/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 200);
    second.shutdown().await.expect("shutdown");
}
