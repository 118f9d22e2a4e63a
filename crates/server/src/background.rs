//! The control plane's background tasks: periodic housekeeping (usage flush, expiries, timed
//! pauses, lost tasks), the heartbeat sweep of runner sessions, and the writer of runner status
//! changes.

use std::sync::Arc;

use tether_store::Store;
use tokio::sync::watch;

use crate::state::AppState;
use crate::{memory, runner_link, services};

/// Periodic housekeeping: flush usage aggregates, forget expired token revocations, resume timed
/// pauses, mark tasks of vanished instances lost.
pub(crate) async fn housekeeping(state: AppState, mut stop: watch::Receiver<bool>) {
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
        if let Err(e) = state
            .store
            .purge_login_failures(now - services::web_sessions::LOGIN_WINDOW)
            .await
        {
            tracing::error!(error = %e, "forgetting old refused logins failed");
        }
        if let Err(e) = state
            .store
            .purge_closed_sessions(now - state.config.lost_after * 2)
            .await
        {
            tracing::error!(error = %e, "forgetting closed runner sessions failed");
        }
    }
}

/// Closes sessions whose heartbeats stopped, once per heartbeat interval.
pub(crate) async fn sweep_sessions(state: AppState, mut stop: watch::Receiver<bool>) {
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

/// Writes the session registry and runner status changes to the store, in the order they
/// happened here (see `runner_link`). A flush asks the writer to write everything queued so far,
/// then answers.
pub(crate) type FlushRequest = tokio::sync::oneshot::Sender<()>;

/// Who this writer writes as, and how old a replica's liveness may be and still count.
#[derive(Debug, Clone)]
pub(crate) struct Registrar {
    pub replica: String,
    /// Three heartbeat intervals: a replica not seen for that long is dead.
    pub lapse: std::time::Duration,
}

impl Registrar {
    fn live_after(&self, now: time::OffsetDateTime) -> time::OffsetDateTime {
        now - self.lapse
    }
}

pub(crate) async fn persist_statuses(
    store: Arc<dyn Store>,
    registrar: Registrar,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<runner_link::Persist>,
    mut flush: tokio::sync::mpsc::UnboundedReceiver<FlushRequest>,
) {
    let write = |store: Arc<dyn Store>, registrar: Registrar, change: runner_link::Persist| async move {
        use runner_link::Persist;
        let result = match &change {
            Persist::Opened(session) => store.session_opened(&registrar.replica, session).await,
            Persist::Reauthenticated {
                session_id,
                generation,
                at,
            } => {
                store
                    .session_reauthenticated(&registrar.replica, *session_id, *generation, *at)
                    .await
            }
            Persist::Closed { session_id, at } => {
                store
                    .session_closed(&registrar.replica, *session_id, *at)
                    .await
            }
            Persist::Status {
                runner,
                status,
                live_here,
            } => {
                let elsewhere = (!live_here).then(|| tether_store::LiveElsewhere {
                    replica: registrar.replica.clone(),
                    live_after: registrar.live_after(time::OffsetDateTime::now_utc()),
                });
                store
                    .save_runner_status(*runner, status, elsewhere.as_ref())
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, ?change, "writing the session registry failed");
        }
    };
    loop {
        tokio::select! {
            biased;
            change = rx.recv() => match change {
                Some(change) => write(store.clone(), registrar.clone(), change).await,
                None => return,
            },
            Some(done) = flush.recv() => {
                while let Ok(change) = rx.try_recv() {
                    write(store.clone(), registrar.clone(), change).await;
                }
                let _ = done.send(());
            }
        }
    }
}

/// Every heartbeat interval: records this replica (and its open sessions) as alive, and expires
/// replicas that stopped doing so — their runners become `unknown` until they reconnect elsewhere.
pub(crate) async fn replica_liveness(
    state: AppState,
    registrar: Registrar,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(state.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let now = time::OffsetDateTime::now_utc();
        if let Err(e) = state
            .store
            .replica_alive(&registrar.replica, state.started_at, now)
            .await
        {
            tracing::error!(error = %e, "recording this replica as alive failed");
            continue;
        }
        match state
            .store
            .expire_replicas(
                registrar.live_after(now),
                now,
                "the control-plane replica holding its session stopped; waiting for the runner to reconnect",
            )
            .await
        {
            Ok(runners) if !runners.is_empty() => tracing::warn!(
                runners = runners.len(),
                "expired the sessions of a replica that stopped; its runners are unknown until they reconnect"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "expiring stopped replicas failed"),
        }
    }
}
