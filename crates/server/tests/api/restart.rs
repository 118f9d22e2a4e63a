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

/// Replicas share one database and must share their keys: two processes with different keys on
/// one database is refused at start, naming the key, before anything is served; given key files
/// (as every replica would have them) are accepted, and a key file that does not exist is refused.
#[tokio::test]
async fn a_process_with_other_keys_than_the_database_refuses_to_start() {
    let db_dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", db_dir.path().join("shared.db").display());
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let config = |dir: &std::path::Path| {
        let mut c = ServerConfig::new(dir.to_path_buf());
        c.database_url = Some(tether_server::DatabaseUrl::parse(&url).expect("url"));
        c
    };

    let a = tether_server::start(config(a_dir.path()))
        .await
        .expect("first start records the keys");
    a.shutdown().await.expect("stop");
    // B generates keys of its own in its own data directory.
    let err = tether_server::start(config(b_dir.path()))
        .await
        .expect_err("other keys are refused");
    let shown = format!("{err:#}");
    assert!(
        shown.contains("the signing key") && shown.contains("same key files"),
        "{shown}"
    );

    // B given A's key files, as a replica would be: it starts.
    let mut c = config(b_dir.path());
    c.key_files = tether_server::keys::KeyFiles {
        signing: Some(a_dir.path().join("signing.key")),
        pepper: Some(a_dir.path().join("pepper.key")),
        master: Some(a_dir.path().join("master.key")),
    };
    let b = tether_server::start(c).await.expect("same keys start");
    b.shutdown().await.expect("stop");

    // Only the pepper differs: the message names it.
    let mut c = config(b_dir.path());
    c.key_files.signing = Some(a_dir.path().join("signing.key"));
    c.key_files.master = Some(a_dir.path().join("master.key"));
    let err = tether_server::start(c).await.expect_err("other pepper");
    assert!(format!("{err:#}").contains("the pepper key"), "{err:#}");

    // A named key file that does not exist is never created.
    let mut c = config(b_dir.path());
    let missing = b_dir.path().join("no-such.key");
    c.key_files.signing = Some(missing.clone());
    let err = tether_server::start(c).await.expect_err("missing file");
    assert!(
        format!("{err:#}").contains("TETHER_SIGNING_KEY_FILE") && !missing.exists(),
        "{err:#}"
    );
}
