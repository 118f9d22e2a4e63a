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

/// Writes runner status changes to the store in the order they happened.
/// A flush asks the persister to write everything queued so far, then answers.
pub(crate) type FlushRequest = tokio::sync::oneshot::Sender<()>;

pub(crate) async fn persist_statuses(
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
