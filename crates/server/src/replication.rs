//! The events listener of a replica: receives the other replicas' events from the database's
//! channel and delivers them here, resyncing after every (re)connect. The bound it keeps, and what
//! "trusted" means, are in `events::replicated`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_store::EventChannel;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::events::replicated::{ListenerHealth, Probes, SEND_TIMEOUT};
use crate::events::wire::{Envelope, Message, WireError};
use crate::events::InProcess;
use crate::state::AppState;

/// What a replica's database connections are named after (`pg_stat_activity.application_name`
/// is this followed by the replica id); the database's own notifications carry that name as their
/// origin.
pub const APPLICATION_NAME_PREFIX: &str = "tether ";

/// Receives the other replicas' events until `stop`, reconnecting (and resyncing) whenever the
/// listening connection is lost.
pub async fn listen(
    state: AppState,
    local: Arc<InProcess>,
    channel: Arc<dyn EventChannel>,
    origin: String,
    health: Arc<ListenerHealth>,
    mut stop: watch::Receiver<bool>,
) {
    let ping_every = health.ping_interval();
    let mut first = true;
    let mut probes = Probes::new();
    while !*stop.borrow() {
        health.set_in_sync(false);
        let mut listener = match channel.listen().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "events listener cannot connect; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        if !first {
            health.reconnected();
        }
        first = false;
        let resync_began = Instant::now();
        if let Err(e) = resync(&state, &local).await {
            tracing::warn!(error = %e, "events resync failed; reconnecting");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                _ = stop.changed() => break,
            }
        }
        health.synced_to(resync_began);
        health.set_in_sync(true);
        tracing::info!("events listener in sync");
        let mut ping = tokio::time::interval(ping_every);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ping.tick() => {
                    let seq = probes.send(Instant::now());
                    let probe = Envelope { origin: origin.clone(), message: Message::Ping { seq } };
                    // A failed probe needs no handling of its own: nothing comes back, the lag grows.
                    let _ = tokio::time::timeout(SEND_TIMEOUT, channel.send(&probe.encode())).await;
                }
                received = listener.recv() => match received {
                    Ok(Some(payload)) => match apply(&state, &local, &origin, &payload).await {
                        // Everything before our ping is applied: in sync up to when we sent it.
                        Ok(Applied::OwnPing(seq)) => {
                            if let Some(sent) = probes.received(seq) {
                                health.synced_to(sent);
                            }
                        }
                        Ok(Applied::Other) => {}
                        Err(e) => {
                            // Not applied, so not trusted: resync from the database.
                            tracing::warn!(error = %e, "could not apply an event from another replica; resyncing");
                            health.set_in_sync(false);
                            break;
                        }
                    },
                    Ok(None) | Err(_) => {
                        tracing::warn!("events listener lost its connection; caches are not trusted until it resyncs");
                        break;
                    }
                },
            }
        }
    }
}

/// What one received payload was.
enum Applied {
    /// This replica's own probe, with its sequence number.
    OwnPing(u64),
    /// Anything else: delivered here, or nothing to do.
    Other,
}

/// Delivers one received payload here, unless this replica sent it. A payload that does not
/// parse is logged and skipped (a replica of another version); one whose records cannot be read
/// is an error, so the caller resyncs rather than guess.
async fn apply(
    state: &AppState,
    local: &InProcess,
    origin: &str,
    payload: &str,
) -> Result<Applied, WireError> {
    let envelope = match Envelope::decode(payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an event this replica cannot read");
            return Ok(Applied::Other);
        }
    };
    // The database's own notifications carry the sender's connection name.
    let own = envelope.origin == origin
        || envelope.origin.strip_prefix(APPLICATION_NAME_PREFIX) == Some(origin);
    if own {
        return Ok(match envelope.message {
            Message::Ping { seq } => Applied::OwnPing(seq),
            _ => Applied::Other,
        });
    }
    if let Some(event) = envelope.message.into_event(state.store.as_ref()).await? {
        local.deliver(&event);
    }
    Ok(Applied::Other)
}

/// Brings this replica's memory back in line with the database after notifications may have been
/// missed.
async fn resync(state: &AppState, local: &InProcess) -> Result<(), tether_store::StoreError> {
    state.clients.clear();
    let now = OffsetDateTime::now_utc();
    state.revoked.load(
        state
            .store
            .revoked_access_tokens(now)
            .await?
            .into_iter()
            .map(|(jti, at)| (jti, at.unix_timestamp()))
            .collect(),
    );
    for runner in state.link.connected_runners() {
        let Some(record) = state.store.runner_by_id(runner).await? else {
            state.link.close_all(
                runner,
                tether_protocol::session::close_code::RUNNER_DELETED,
                "this runner was deleted in the control plane",
            );
            continue;
        };
        if let Some(event) = crate::events::wire::recheck(state.store.as_ref(), record).await? {
            local.deliver(&event);
        }
    }
    Ok(())
}
