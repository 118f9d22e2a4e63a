//! The tether runner agent: connects outbound to the control plane with OAuth client credentials,
//! keeps a WebSocket session with heartbeats, moves it to a new client secret without
//! reconnecting when the secret source changes, reconnects by itself, runs the tasks it is
//! assigned and spools their updates until acknowledged. `tether runner` calls [`run`].

pub mod agent;
pub mod auth;
pub mod config;
pub mod executor;
pub mod instance;
pub mod metrics;
pub mod outbox;
pub mod reload;
pub mod secret;
pub mod session;
pub mod spool;
pub mod transport;

#[cfg(test)]
mod flow_tests;

use std::sync::Arc;

pub use agent::{Agent, Exit};
pub use config::{RunnerArgs, RunnerConfig};
use tokio::sync::watch;

/// `tether runner`: validates the environment (exit 2 on a misconfiguration, before any network
/// call), runs until SIGTERM/SIGINT or a drain has let running tasks finish (exit 0), or until
/// the runner is deleted (exit 1).
pub async fn run(args: RunnerArgs) -> i32 {
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; finishing running tasks before exiting");
        let _ = stop_tx.send(true);
    });
    match run_until(config, stop_rx).await {
        Ok(Exit::Clean) => 0,
        Ok(Exit::Fatal(message)) => {
            tracing::error!("{message}");
            eprintln!("error: {message}");
            1
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Runs an agent until `shutdown` turns true (also used in-process by `tether server --dev`).
pub async fn run_until(
    config: RunnerConfig,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Exit> {
    let metrics = Arc::new(metrics::RunnerMetrics::default());
    if let Some(addr) = config.metrics_listen {
        let m = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, m).await {
                tracing::error!(error = %e, "the metrics endpoint stopped");
            }
        });
    }
    let agent = Agent::new(config, metrics).await?;
    Ok(agent.run(shutdown).await)
}

/// Resolves once `shutdown` turns true (or its sender is gone). Holds no borrow across awaits, so
/// the futures that select on it stay `Send`.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
