//! Starting and stopping one control-plane process: open the store and key material, wire the
//! in-memory state and its event subscribers, bind, serve, and drain on shutdown.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::Context;
use tether_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::background::{self, FlushRequest};
use crate::config::ServerConfig;
use crate::services::bootstrap::Bootstrapped;
use crate::state::{AppState, Inner};
use crate::{dispatch, events, http, jwt, keys, memory, runner_link, seal, services};

/// A control plane serving in the background.
#[derive(Debug)]
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub public_url: String,
    /// Set on the first start of a fresh database: what was created, for printing once.
    pub bootstrapped: Option<Bootstrapped>,
    /// Which database this process runs on, for the banner: the backend and where (a URL without
    /// its password, or the SQLite file).
    pub database: String,
    /// This process among the replicas of its database (new on every start).
    pub replica_id: String,
    state: AppState,
    /// Receives the other replicas' events (PostgreSQL only).
    events_listener: Option<JoinHandle<()>>,
    /// Keeps this replica's liveness and expires replicas that stopped.
    liveness: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<()>,
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
    let keys = keys::KeyMaterial::load(&config.data_dir, &config.key_files)?;
    let replica_id = replica_id(&config.data_dir)?;
    let pool = tether_store::PoolSettings {
        application_name: format!(
            "{}{replica_id}",
            crate::replication::APPLICATION_NAME_PREFIX
        ),
        ..config.database_pool.clone()
    };
    let (store, database): (Arc<dyn Store>, String) = match &config.database_url {
        Some(url) => (
            tether_store::open(url, &pool)
                .await
                .with_context(|| format!("opening the database {}", url.redacted()))?,
            format!("{} ({})", url.backend_name(), url.redacted()),
        ),
        None => {
            let path = config.data_dir.join("tether.db");
            let store = tether_store::open_file(&path)
                .await
                .with_context(|| format!("opening the database {}", path.display()))?;
            (store, format!("sqlite ({})", path.display()))
        }
    };
    check_keys(store.as_ref(), &keys).await?;
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
    // The only process on its database: no session survived the restart. With replicas the
    // others still hold theirs, so nothing is reset here.
    if !store.shared() {
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
    }
    let (persist_tx, persist_rx) = tokio::sync::mpsc::unbounded_channel();
    let (dispatch, dispatch_rx) = dispatch::Dispatcher::new();
    let (shutdown, stop) = watch::channel(false);
    let clients = Arc::new(memory::clients::ClientCache::default());
    let revoked = Arc::new(memory::revoked::RevokedTokens::default());
    let health = Arc::new(memory::health::AuthHealthTracker::default());
    let link = Arc::new(runner_link::RunnerLink::new(
        persist_tx,
        config.max_sessions_per_runner,
    ));
    // The client cache first: a revoked secret stops working before its sessions are cut.
    let local = Arc::new(events::InProcess::new(vec![
        clients.clone(),
        revoked.clone(),
        health.clone(),
        link.clone(),
        Arc::new(dispatch),
    ]));
    let channel = store.event_channel();
    let listener_health = channel.as_ref().map(|_| {
        Arc::new(events::replicated::ListenerHealth::new(
            config.events_max_lag,
        ))
    });
    let events: Arc<dyn events::EventBus> = match (&channel, &listener_health) {
        (Some(channel), Some(h)) => Arc::new(events::replicated::Replicated::new(
            local.clone(),
            channel.clone(),
            replica_id.clone(),
            h.clone(),
        )),
        _ => local.clone(),
    };
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
        draining: Default::default(),
        passwords: crate::services::passwords::Passwords::per_core(),
        replica_id: replica_id.clone(),
        listener: listener_health.clone(),
    });
    let events_listener = match (channel, listener_health) {
        (Some(channel), Some(h)) => Some(tokio::spawn(crate::replication::listen(
            state.clone(),
            local,
            channel,
            replica_id.clone(),
            h,
            shutdown.subscribe(),
        ))),
        _ => None,
    };
    let (flush_persister, flush_rx) = tokio::sync::mpsc::unbounded_channel();
    let registrar = background::Registrar {
        replica: replica_id.clone(),
        lapse: state.config.heartbeat * 3,
    };
    // This replica's previous life (same data directory) holds no session any more; then it is
    // seen alive before it serves, so the others never expire the sessions it opens.
    state
        .store
        .replica_gone(
            &replica_id,
            now,
            now - registrar.lapse,
            now,
            "the control plane restarted; waiting for the runner to reconnect",
        )
        .await
        .context("ending this replica's previous sessions")?;
    state
        .store
        .replica_alive(&replica_id, now, now)
        .await
        .context("recording this replica")?;
    let persister = tokio::spawn(background::persist_statuses(
        state.store.clone(),
        registrar.clone(),
        persist_rx,
        flush_rx,
    ));
    let liveness = tokio::spawn(background::replica_liveness(
        state.clone(),
        registrar,
        shutdown.subscribe(),
    ));
    let dispatcher = tokio::spawn(dispatch::run(state.clone(), dispatch_rx));
    let revoked = state.store.revoked_access_tokens(now).await?;
    state.revoked.load(
        revoked
            .into_iter()
            .map(|(jti, exp)| (jti, exp.unix_timestamp()))
            .collect(),
    );
    let bootstrapped = services::bootstrap::ensure_admin(&state).await?;

    let app = http::router(state.clone());
    let serve = tokio::spawn(http::serve::serve(
        listener,
        app,
        state.config.connections,
        state.clone(),
        stop,
    ));
    let background = tokio::spawn(background::housekeeping(
        state.clone(),
        shutdown.subscribe(),
    ));
    let sweeper = tokio::spawn(background::sweep_sessions(
        state.clone(),
        shutdown.subscribe(),
    ));
    tracing::info!(listen = %local_addr, public_url = %public_url, replica = %replica_id, "tether control plane started");
    Ok(RunningServer {
        local_addr,
        public_url,
        bootstrapped,
        database,
        replica_id,
        state,
        shutdown,
        serve,
        events_listener,
        liveness,
        background,
        sweeper,
        persister,
        flush_persister,
        dispatcher,
    })
}

/// This process's replica id: kept in `<data-dir>/replica-id`, made on first start from the host
/// name and a random suffix. A process restarted on the same data directory is the same replica,
/// so it ends its previous life's sessions at once; a replica on a fresh directory (a new pod) is
/// a new one, and the others expire the old one's sessions when its liveness lapses. Every replica
/// needs a data directory of its own.
fn replica_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("replica-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tether".to_owned());
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let id = format!("{host}-{}", &suffix[suffix.len() - 8..]);
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// Refuses to start with keys other than those the database was first started with: tokens
/// signed by one replica must verify on every other, and secrets verified or sealed by one must
/// work on all of them. The first start records the fingerprints.
async fn check_keys(store: &dyn Store, keys: &keys::KeyMaterial) -> anyhow::Result<()> {
    let given: Vec<(String, String)> = keys
        .fingerprints
        .iter()
        .map(|f| (f.name.to_owned(), f.value.clone()))
        .collect();
    let recorded = store
        .key_fingerprints(&given, time::OffsetDateTime::now_utc())
        .await
        .context("checking the server keys against the database")?;
    for (f, (_, have)) in keys.fingerprints.iter().zip(&recorded) {
        if *have != f.value {
            anyhow::bail!(
                "the {} key ({}) is not the one this database was first started with \
                 (fingerprint {}, this process has {}); start every replica with the same key files",
                f.name,
                f.source,
                have,
                f.value
            );
        }
    }
    Ok(())
}

impl RunningServer {
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Drains runner sessions (`--shutdown-drain-seconds`, see [`crate::drain`]), stops accepting
    /// connections, lets in-flight requests finish and writes pending usage data.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let window = self.state.config.shutdown_drain;
        if !window.is_zero() {
            crate::drain::run(&self.state, window).await;
        }
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
        self.serve.await.context("server task panicked")?;
        let _ = self.background.await;
        let _ = self.sweeper.await;
        let _ = self.liveness.await;
        self.persister.abort();
        self.dispatcher.abort();
        // Its sessions are gone: runners that have not reconnected to another replica yet show
        // it at once instead of after the liveness lapse.
        let now = time::OffsetDateTime::now_utc();
        if let Err(e) = self
            .state
            .store
            .replica_gone(
                &self.replica_id,
                now,
                now - self.state.config.heartbeat * 3,
                now,
                "the control plane stopped; waiting for the runner to reconnect",
            )
            .await
        {
            tracing::warn!(error = %e, "could not record this replica's end");
        }
        if let Some(l) = &self.events_listener {
            l.abort();
        }
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
