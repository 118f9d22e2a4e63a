//! `tether server`; with `--dev` it also runs a local runner in this process.

use tether_runner::config::SecretSourceConfig;
use tether_server::{DevRunner, ServerArgs};

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let launcher: tether_server::DevRunnerLauncher = Box::new(|dev: DevRunner| {
        tokio::spawn(async move {
            let config = tether_runner::RunnerConfig {
                url: match dev.url.parse() {
                    Ok(u) => u,
                    Err(e) => {
                        eprintln!("error: local runner URL: {e}");
                        return;
                    }
                },
                client_id: dev.client_id,
                secret: SecretSourceConfig::File(dev.secret_file),
                ca_file: None,
                max_tasks: 4,
                workdir: std::env::temp_dir()
                    .join(format!("tether-dev-runner-{}", std::process::id())),
                platform: "local".to_owned(),
                metrics_listen: None,
            };
            match tether_runner::run_until(config, dev.shutdown).await {
                Ok(tether_runner::Exit::Clean) => {}
                Ok(tether_runner::Exit::Fatal(m)) => eprintln!("error: local runner: {m}"),
                Err(e) => eprintln!("error: local runner: {e:#}"),
            }
        })
    });
    tether_server::run_with(args, Some(launcher)).await
}
