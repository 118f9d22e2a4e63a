//! The runner agent in-process against a real control plane: connects, reports running, says
//! goodbye on shutdown, exits on deletion, and reads its secret from each source, AWS Secrets
//! Manager included (the moto emulator that scripts/test starts, through the real AWS SDK).

use std::time::Duration;

use serde_json::Value;
use tether_domain::{ClientId, ClientSecret};
use tether_runner::config::SecretSourceConfig;
use tether_runner::{Exit, RunnerConfig};
use tether_testkit::{spawn_app_with, TestApp};
use tokio::sync::watch;

async fn app() -> TestApp {
    spawn_app_with(|c| c.heartbeat = Duration::from_secs(1)).await
}

fn config(app: &TestApp, client_id: &str, secret: SecretSourceConfig) -> RunnerConfig {
    RunnerConfig {
        url: app.base_url.parse().expect("url"),
        client_id: ClientId::parse(client_id).expect("client id"),
        secret,
        ca_file: None,
        max_tasks: 3,
        workdir: app.data_dir.path().join("work"),
        platform: "local".into(),
        metrics_listen: None,
    }
}

async fn status(app: &TestApp, name: &str) -> Value {
    app.get(&format!("/api/v1/runners/{name}"), Some(&app.admin_token))
        .await
        .json()
}

async fn wait_status(app: &TestApp, name: &str, want: &str) -> Value {
    for _ in 0..200 {
        let r = status(app, name).await;
        if r["status"] == want {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "runner {name} never became {want}: {}",
        status(app, name).await
    );
}

fn creds(created: &Value) -> (String, String) {
    (
        created["credentials"]["client_id"]
            .as_str()
            .expect("id")
            .to_owned(),
        created["credentials"]["client_secret"]
            .as_str()
            .expect("secret")
            .to_owned(),
    )
}

#[tokio::test]
async fn connects_and_says_goodbye_on_shutdown() {
    let app = app().await;
    let (id, secret) = creds(&app.create_runner("agent", "local").await);
    let (stop, stop_rx) = watch::channel(false);
    let cfg = config(
        &app,
        &id,
        SecretSourceConfig::Value(ClientSecret::parse(&secret).expect("secret")),
    );
    let agent = tokio::spawn(tether_runner::run_until(cfg, stop_rx));
    let r = wait_status(&app, "agent", "running").await;
    assert_eq!(r["instances"][0]["credential_generation"], 1);
    assert_eq!(r["runner_version"], env!("CARGO_PKG_VERSION"));
    stop.send(true).expect("stop");
    let exit = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("exits")
        .expect("joined");
    assert_eq!(exit.expect("no error"), Exit::Clean);
    wait_status(&app, "agent", "stopped").await;
}

#[tokio::test]
async fn exits_with_a_clear_message_when_the_runner_is_deleted() {
    let app = app().await;
    let (id, secret) = creds(&app.create_runner("deleted", "local").await);
    let (_stop, stop_rx) = watch::channel(false);
    let cfg = config(
        &app,
        &id,
        SecretSourceConfig::Value(ClientSecret::parse(&secret).expect("secret")),
    );
    let agent = tokio::spawn(tether_runner::run_until(cfg, stop_rx));
    wait_status(&app, "deleted", "running").await;
    assert_eq!(
        app.delete("/api/v1/runners/deleted", Some(&app.admin_token))
            .await
            .status,
        204
    );
    let exit = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("exits")
        .expect("joined");
    match exit.expect("no error") {
        Exit::Fatal(message) => assert!(message.contains("deleted"), "{message}"),
        other => panic!("expected a fatal exit, got {other:?}"),
    }
}

#[tokio::test]
async fn reconnects_after_the_server_restarts() {
    let mut app = app().await;
    let (id, secret) = creds(&app.create_runner("phoenix", "local").await);
    let (stop, stop_rx) = watch::channel(false);
    let cfg = config(
        &app,
        &id,
        SecretSourceConfig::Value(ClientSecret::parse(&secret).expect("secret")),
    );
    let agent = tokio::spawn(tether_runner::run_until(cfg, stop_rx));
    wait_status(&app, "phoenix", "running").await;
    app.restart().await;
    let r = wait_status(&app, "phoenix", "running").await;
    assert_eq!(r["instances"].as_array().expect("instances").len(), 1);
    stop.send(true).expect("stop");
    let _ = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("exits");
}

#[tokio::test]
async fn file_source_is_read_at_connect() {
    let app = app().await;
    let (id, secret) = creds(&app.create_runner("filed", "local").await);
    let path = app.data_dir.path().join("client_secret");
    std::fs::write(&path, format!("{secret}\n")).expect("write");
    let (stop, stop_rx) = watch::channel(false);
    let agent = tokio::spawn(tether_runner::run_until(
        config(&app, &id, SecretSourceConfig::File(path)),
        stop_rx,
    ));
    wait_status(&app, "filed", "running").await;
    stop.send(true).expect("stop");
    let _ = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("exits");
}

/// Needs the moto server that scripts/test starts and the AWS_* variables it exports.
#[tokio::test]
async fn aws_secrets_manager_source_through_the_real_sdk() {
    std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: run the suite with scripts/test, which starts the moto AWS emulator");
    let app = app().await;
    let (id, secret) = creds(&app.create_runner("aws-runner", "aws_fargate").await);
    let sdk = aws_sdk_secretsmanager::Client::new(&tether_runner::secret::aws_sdk_config().await);
    let name = format!("tether/test/{}", id);
    let created = sdk
        .create_secret()
        .name(&name)
        .secret_string(serde_json::json!({"client_id": id, "client_secret": secret}).to_string())
        .send()
        .await
        .expect("create secret in moto");
    let arn = created.arn().expect("arn").to_owned();
    let (stop, stop_rx) = watch::channel(false);
    let agent = tokio::spawn(tether_runner::run_until(
        config(
            &app,
            &id,
            SecretSourceConfig::AwsSecretsManager {
                secret_id: arn,
                refresh: tether_runner::config::DEFAULT_SECRET_REFRESH,
            },
        ),
        stop_rx,
    ));
    wait_status(&app, "aws-runner", "running").await;
    stop.send(true).expect("stop");
    let exit = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("exits")
        .expect("joined");
    assert_eq!(exit.expect("no error"), Exit::Clean);
}
