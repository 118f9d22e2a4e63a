//! The tether control plane as a library: [`start`] binds and serves (tests and `--dev` use it
//! in-process); [`run`] is what `tether server` calls: telemetry, start, wait for a signal, drain.

/// Prints a line to stdout, ignoring errors: a closed stdout must not bring the server down.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod clock;
pub mod config;
pub mod dispatch;
pub mod events;
pub mod http;
pub mod jwt;
pub mod keys;
pub mod memory;
pub mod metrics;
pub mod runner_link;
pub mod seal;
pub mod services;
pub mod state;
pub mod telemetry;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::Context;
use tether_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{LogFormat, ServerArgs, ServerConfig};
pub use services::bootstrap::Bootstrapped;
use state::{AppState, Inner};

/// A control plane serving in the background.
#[derive(Debug)]
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub public_url: String,
    /// Set on the first start of a fresh database: what was created, for printing once.
    pub bootstrapped: Option<Bootstrapped>,
    state: AppState,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<std::io::Result<()>>,
    background: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    persister: JoinHandle<()>,
    flush_persister: tokio::sync::mpsc::UnboundedSender<FlushRequest>,
    dispatcher: JoinHandle<()>,
}

/// Opens the database, loads or creates key material, binds the listener and starts serving.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting permissions of {}", config.data_dir.display()))?;
    let keys = keys::KeyMaterial::load_or_generate(&config.data_dir)?;
    let store: Arc<dyn Store> = match &config.database_url {
        Some(url) => tether_store::open(url)
            .await
            .context("opening the database")?,
        None => {
            let path = config.data_dir.join("tether.db");
            tether_store::open_file(&path)
                .await
                .with_context(|| format!("opening the database {}", path.display()))?
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let local_addr = listener.local_addr()?;
    let public_url = config.public_url.as_ref().map_or_else(
        || format!("http://{local_addr}"),
        |u| u.as_str().trim_end_matches('/').to_owned(),
    );
    let signer = jwt::TokenSigner::new(keys.signing, public_url.clone(), public_url.clone());
    let now = time::OffsetDateTime::now_utc();
    let reset = store
        .reset_live_statuses(
            "the control plane restarted; waiting for the runner to reconnect",
            now,
        )
        .await?;
    if reset > 0 {
        tracing::info!(
            runners = reset,
            "marked runners unknown until they reconnect"
        );
    }
    let (persist_tx, persist_rx) = tokio::sync::mpsc::unbounded_channel();
    let (dispatch, dispatch_rx) = dispatch::Dispatcher::new();
    let (shutdown, mut stop) = watch::channel(false);
    let clients = Arc::new(memory::clients::ClientCache::default());
    let revoked = Arc::new(memory::revoked::RevokedTokens::default());
    let health = Arc::new(memory::health::AuthHealthTracker::default());
    let link = Arc::new(runner_link::RunnerLink::new(persist_tx));
    // The client cache first: a revoked secret stops working before its sessions are cut.
    let events = Arc::new(events::InProcess::new(vec![
        clients.clone(),
        revoked.clone(),
        health.clone(),
        link.clone(),
        Arc::new(dispatch),
    ]));
    let state = AppState::new(Inner {
        config,
        store,
        signer,
        pepper: keys.pepper,
        clients,
        usage: Default::default(),
        revoked,
        metrics: Default::default(),
        link,
        events,
        public_url: public_url.clone(),
        sealer: seal::Sealer::new(&keys.master),
        health,
        started_at: now,
        stopping: shutdown.subscribe(),
    });
    let (flush_persister, flush_rx) = tokio::sync::mpsc::unbounded_channel();
    let persister = tokio::spawn(persist_statuses(state.store.clone(), persist_rx, flush_rx));
    let dispatcher = tokio::spawn(services::runs::dispatch_loop(state.clone(), dispatch_rx));
    let revoked = state.store.revoked_access_tokens(now).await?;
    state.revoked.load(
        revoked
            .into_iter()
            .map(|(jti, exp)| (jti, exp.unix_timestamp()))
            .collect(),
    );
    let bootstrapped = services::bootstrap::ensure_admin(&state).await?;

    let app = http::router(state.clone());
    // Runner sessions exchange small latency-bound frames (assign, update, ack): without
    // TCP_NODELAY each one can wait up to 40 ms behind the peer's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
    });
    let serve = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
    });
    let background = tokio::spawn(background_loop(state.clone(), shutdown.subscribe()));
    let sweeper = tokio::spawn(sweep_loop(state.clone(), shutdown.subscribe()));
    tracing::info!(listen = %local_addr, public_url = %public_url, "tether control plane started");
    Ok(RunningServer {
        local_addr,
        public_url,
        bootstrapped,
        state,
        shutdown,
        serve,
        background,
        sweeper,
        persister,
        flush_persister,
        dispatcher,
    })
}

/// Periodic housekeeping: flush usage aggregates, forget expired token revocations, resume timed
/// pauses, mark tasks of vanished instances lost.
async fn background_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if let Err(e) =
            services::usage::flush(&state.usage, state.store.as_ref(), &state.clients).await
        {
            tracing::error!(error = %e, "flushing usage data failed");
        }
        let now = time::OffsetDateTime::now_utc();
        state.revoked.purge(now.unix_timestamp());
        state
            .clients
            .purge_tombstones(memory::clients::TOMBSTONE_TTL);
        if let Err(e) = services::runners::resume_due(&state).await {
            tracing::error!(
                error = format!("{e:#}"),
                "resuming runners whose pause ended failed"
            );
        }
        if let Err(e) = services::credentials::sweep(&state).await {
            tracing::error!(
                error = format!("{e:#}"),
                "expiring retiring credentials failed"
            );
        }
        if let Err(e) = services::runs::sweep_lost(&state).await {
            tracing::error!(error = format!("{e:#}"), "checking for lost tasks failed");
        }
        if let Err(e) = state.store.purge_web_sessions(now).await {
            tracing::error!(error = %e, "deleting expired web sessions failed");
        }
        if let Err(e) = state.store.purge_revoked_access_tokens(now).await {
            tracing::error!(error = %e, "forgetting expired access-token revocations failed");
        }
    }
}

/// Closes sessions whose heartbeats stopped, once per heartbeat interval.
async fn sweep_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let closed = state.link.sweep(state.config.heartbeat);
        if closed > 0 {
            tracing::warn!(
                sessions = closed,
                "closed runner sessions that stopped sending heartbeats"
            );
        }
    }
}

/// Writes runner status changes to the store in the order they happened.
/// A flush asks the persister to write everything queued so far, then answers.
type FlushRequest = tokio::sync::oneshot::Sender<()>;

async fn persist_statuses(
    store: Arc<dyn Store>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<runner_link::StatusChange>,
    mut flush: tokio::sync::mpsc::UnboundedReceiver<FlushRequest>,
) {
    let save = |store: Arc<dyn Store>, (id, status): runner_link::StatusChange| async move {
        if let Err(e) = store.save_runner_status(id, &status).await {
            tracing::error!(error = %e, runner.id = %id, "saving runner status failed");
        }
    };
    loop {
        tokio::select! {
            biased;
            change = rx.recv() => match change {
                Some(change) => save(store.clone(), change).await,
                None => return,
            },
            Some(done) = flush.recv() => {
                while let Ok(change) = rx.try_recv() {
                    save(store.clone(), change).await;
                }
                let _ = done.send(());
            }
        }
    }
}

impl RunningServer {
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting connections, lets in-flight requests finish and writes pending usage data.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        // Statuses reached before the shutdown are written; the ones the shutdown itself causes
        // are not, so after a restart the runners read "the control plane restarted".
        let (done, flushed) = tokio::sync::oneshot::channel();
        if self.flush_persister.send(done).is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), flushed).await;
        }
        // Runner sessions are upgraded connections the HTTP server no longer tracks: close them so
        // instances reconnect (to this server after a restart, or to another replica).
        self.state
            .link
            .close_everything(1001, "the control plane is shutting down");
        self.serve
            .await
            .context("server task panicked")?
            .context("serving HTTP")?;
        let _ = self.background.await;
        let _ = self.sweeper.await;
        self.persister.abort();
        self.dispatcher.abort();
        services::usage::flush(
            &self.state.usage,
            self.state.store.as_ref(),
            &self.state.clients,
        )
        .await
        .context("flushing usage data at shutdown")?;
        tracing::info!("tether control plane stopped");
        Ok(())
    }
}

/// Credentials of the local runner `tether server --dev` registers, handed to whoever runs it.
/// The secret is in a file (mode 0600) in the dev data directory, which the runner watches: the
/// refresh guide can be tried on it, applying the new secret by writing that file.
#[derive(Debug)]
pub struct DevRunner {
    pub url: String,
    pub client_id: tether_domain::ClientId,
    pub secret_file: std::path::PathBuf,
    /// Turns true when the server is shutting down: the runner should say goodbye and stop.
    pub shutdown: watch::Receiver<bool>,
}

/// Starts the `--dev` local runner (the CLI supplies it, so this crate need not depend on the agent).
pub type DevRunnerLauncher = Box<dyn FnOnce(DevRunner) -> JoinHandle<()> + Send>;

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

/// Writes the dev runner's secret to `<data dir>/local-runner/client_secret`, readable only by us.
fn write_dev_secret(
    data_dir: &std::path::Path,
    secret: &tether_domain::ClientSecret,
) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = data_dir.join("local-runner");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("client_secret");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(secret.expose().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
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
