//! What `tether server` does as a command: logging, start, the local runner in `--dev` mode, the
//! banner on stdout, and a graceful stop on SIGINT or SIGTERM.

use anyhow::Context;
use tokio::sync::watch;

use crate::config::ServerArgs;
use crate::dev::{write_dev_secret, DevRunner, DevRunnerLauncher};
use crate::startup::{start, RunningServer};
use crate::{services, telemetry};

/// `tether server`: runs until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    run_with(args, None).await
}

/// Like [`run`]; in `--dev` mode `dev_runner` is given a freshly registered local runner to run.
pub async fn run_with(
    args: ServerArgs,
    dev_runner: Option<DevRunnerLauncher>,
) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let dev = args.dev;
    let (data_dir, _dev_dir) = if dev {
        let dir = tempfile::Builder::new()
            .prefix("tether-dev-")
            .tempdir()
            .context("creating a temporary data directory")?;
        (dir.path().to_path_buf(), Some(dir))
    } else {
        (args.data_dir.clone(), None)
    };
    let config = args.into_config(data_dir.clone())?;
    let server = start(config).await?;
    let (runner_stop, runner_stop_rx) = watch::channel(false);
    let mut local_runner = None;
    if let (true, Some(launch)) = (dev, dev_runner) {
        let input = services::runners::NewRunnerInput {
            name: tether_domain::RunnerName::parse("local")?,
            platform: tether_domain::Platform::Local,
            description: tether_domain::Description::parse("started by `tether server --dev`")?,
        };
        let (record, secret) = services::runners::register(server.state(), "system", None, input)
            .await
            .map_err(|e| anyhow::anyhow!("registering the local runner: {e}"))?;
        let secret_file = write_dev_secret(&data_dir, &secret)?;
        say!(
            "A local runner named 'local' is connecting; it reads its client_secret from {} \
             (try the refresh guide on it: `tether runners apply-credentials local` writes a new one there).",
            secret_file.display()
        );
        local_runner = Some(launch(DevRunner {
            url: server.public_url.clone(),
            client_id: record.client_id,
            secret_file,
            shutdown: runner_stop_rx,
        }));
    }
    print_banner(&server, &data_dir, dev);
    shutdown_signal().await;
    tracing::info!("shutdown requested; finishing in-flight requests");
    if let Some(runner) = local_runner {
        let _ = runner_stop.send(true);
        let _ = runner.await;
    }
    server.shutdown().await
}

/// Tells the operator where tether is and, on first start, the admin login. Printed to stdout,
/// deliberately not through the logger: these values must never end up in log storage.
fn print_banner(server: &RunningServer, data_dir: &std::path::Path, dev: bool) {
    let url = &server.public_url;
    say!("tether control plane listening on {}", server.local_addr);
    say!("  UI:        {url}/   (log in with a username and password)");
    say!("  API:       {url}/api/v1   (OpenAPI: {url}/api/v1/openapi.json)");
    say!(
        "  OAuth:     {url}/oauth/token   (metadata: {url}/.well-known/oauth-authorization-server)"
    );
    say!("  database:  {}", server.database);
    say!("  replica:   {}", server.replica_id);
    if dev {
        say!(
            "  data dir:  {} (development mode: deleted on exit)",
            data_dir.display()
        );
    } else {
        say!("  data dir:  {}", data_dir.display());
    }
    if let Some(b) = &server.bootstrapped {
        say!();
        say!(
            "First start: created the admin user '{}'. These are shown only once:",
            b.username
        );
        if let Some(p) = &b.generated_password {
            say!("  admin password:  {}", p.expose());
        }
        match &b.generated_token {
            Some(t) => {
                say!("  admin API token: {}", t.expose());
                say!();
                say!("Use it from the CLI:");
                say!("  export TETHER_URL={url} TETHER_TOKEN={}", t.expose());
            }
            None => {
                say!("  admin API token: the value of TETHER_BOOTSTRAP_TOKEN");
                say!();
                say!("Use it from the CLI:");
                say!("  export TETHER_URL={url} TETHER_TOKEN=\"$TETHER_BOOTSTRAP_TOKEN\"");
            }
        }
        say!("  tether runners create my-runner --platform local");
    }
    say!();
    say!("Press Ctrl-C to stop.");
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
