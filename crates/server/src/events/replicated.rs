//! The events bus of several replicas on one database. A publish delivers to this process's
//! subscribers, then sends the event on the database's channel (`NOTIFY`) before it returns; each
//! other replica's listener reads the records the event names and delivers it to its own
//! subscribers. So the guarantee of a single process — once a revoking call has returned, the old
//! secret fails — holds on the replica that served the call at once, and on the others as soon as
//! their listener has the notification.
//!
//! Notifications reach only a connected listener. A replica whose listener is down, lagging or
//! resyncing must not trust what its caches say, because a revocation may be among what it missed.
//! So the listener probes its own round trip (a ping every `max_lag / 4`, which it receives like
//! any other notification) and [`ListenerHealth::trusted`] is true only while something was heard
//! within `max_lag` **and** the caches were resynced since the listener last (re)connected. While
//! not trusted, token requests, introspection and connects read the database (or answer 503 when
//! they cannot).
//!
//! **Bound** (what the tests check): a secret revoked by a call that returned at time *t* is
//! refused by every replica from *t* + `max_lag` on — by a replica whose listener delivered the
//! notification (the subscribers invalidated its caches), or by one that heard nothing for
//! `max_lag` (it stopped trusting them). A notification that arrived is delivered before the next
//! one is read, in the order the database sent them.
//!
//! On (re)connect the listener resyncs before it is trusted again: it drops every cached client,
//! reloads revoked access tokens, and for every runner with sessions here re-reads its credentials
//! and closes sessions on generations no longer accepted (or all of them, for a runner deleted
//! meanwhile).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tether_store::EventChannel;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::wire::{Envelope, Message};
use super::{CredentialChange, Delivered, Event, EventBus, InProcess};
use crate::state::AppState;

/// How long a publish waits for the database to take its notification before it gives up (and
/// says so in the log); the other replicas then stop trusting their caches within `max_lag` of
/// their last ping anyway, if the database is what failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this replica's listener is in sync, and how far behind it may be.
#[derive(Debug)]
pub struct ListenerHealth {
    max_lag: Duration,
    /// Unix ms of the last notification received (any, own pings included); 0: never.
    last_heard_ms: AtomicI64,
    /// False from a (re)connect until the resync after it finished.
    in_sync: AtomicBool,
    reconnects: AtomicU64,
}

impl ListenerHealth {
    pub fn new(max_lag: Duration) -> Self {
        Self {
            max_lag,
            last_heard_ms: AtomicI64::new(0),
            in_sync: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
        }
    }

    /// Whether caches may be trusted now (see the module doc).
    pub fn trusted(&self) -> bool {
        self.in_sync.load(Ordering::Acquire) && self.lag() <= self.max_lag
    }

    /// Time since the listener last heard anything.
    pub fn lag(&self) -> Duration {
        let heard = self.last_heard_ms.load(Ordering::Acquire);
        let now = now_ms();
        Duration::from_millis(u64::try_from(now.saturating_sub(heard)).unwrap_or(0))
    }

    /// How many times the listener had to connect again after losing its connection.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    fn heard(&self) {
        self.last_heard_ms.store(now_ms(), Ordering::Release);
    }
}

fn now_ms() -> i64 {
    tether_store::to_ms(OffsetDateTime::now_utc())
}

/// The bus of one replica among several.
#[derive(Debug)]
pub struct Replicated {
    local: Arc<InProcess>,
    channel: Arc<dyn EventChannel>,
    origin: String,
    health: Arc<ListenerHealth>,
}

impl Replicated {
    pub fn new(
        local: Arc<InProcess>,
        channel: Arc<dyn EventChannel>,
        origin: String,
        health: Arc<ListenerHealth>,
    ) -> Self {
        Self {
            local,
            channel,
            origin,
            health,
        }
    }
}

#[async_trait::async_trait]
impl EventBus for Replicated {
    async fn publish(&self, event: Event) -> Delivered {
        let delivered = self.local.deliver(&event);
        let payload = Envelope {
            origin: self.origin.clone(),
            message: Message::of(&event),
        }
        .encode();
        match tokio::time::timeout(SEND_TIMEOUT, self.channel.send(&payload)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                error = %e,
                "could not send an event to the other replicas; they stop trusting their caches \
                 within the events lag bound if their listeners are cut off too"
            ),
            Err(_) => tracing::error!("sending an event to the other replicas timed out"),
        }
        delivered
    }

    fn trusted(&self) -> bool {
        self.health.trusted()
    }
}

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
    let ping_every = (health.max_lag / 4).max(Duration::from_millis(50));
    let mut first = true;
    let mut ping_seq = 0u64;
    while !*stop.borrow() {
        health.in_sync.store(false, Ordering::Release);
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
            health.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        if let Err(e) = resync(&state, &local).await {
            tracing::warn!(error = %e, "events resync failed; reconnecting");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                _ = stop.changed() => break,
            }
        }
        health.heard();
        health.in_sync.store(true, Ordering::Release);
        tracing::info!("events listener in sync");
        let mut ping = tokio::time::interval(ping_every);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ping.tick() => {
                    ping_seq += 1;
                    let probe = Envelope { origin: origin.clone(), message: Message::Ping { seq: ping_seq } };
                    // A failed probe needs no handling of its own: nothing comes back, the lag grows.
                    let _ = tokio::time::timeout(SEND_TIMEOUT, channel.send(&probe.encode())).await;
                }
                received = listener.recv() => match received {
                    Ok(Some(payload)) => {
                        health.heard();
                        if let Err(e) = apply(&state, &local, &origin, &payload).await {
                            // Not applied, so not trusted: resync from the database.
                            tracing::warn!(error = %e, "could not apply an event from another replica; resyncing");
                            health.in_sync.store(false, Ordering::Release);
                            break;
                        }
                    }
                    Ok(None) | Err(_) => {
                        tracing::warn!("events listener lost its connection; caches are not trusted until it resyncs");
                        break;
                    }
                },
            }
        }
    }
}

/// Delivers one received payload here, unless this replica sent it. A payload that does not
/// parse is logged and skipped (a replica of another version); one whose records cannot be read
/// is an error, so the caller resyncs rather than guess.
async fn apply(
    state: &AppState,
    local: &InProcess,
    origin: &str,
    payload: &str,
) -> Result<(), super::wire::WireError> {
    let envelope = match Envelope::decode(payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an event this replica cannot read");
            return Ok(());
        }
    };
    if envelope.origin == origin {
        return Ok(());
    }
    if let Some(event) = envelope.message.into_event(state.store.as_ref()).await? {
        local.deliver(&event);
    }
    Ok(())
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
        let Some(client) = state.store.client_by_id(&record.client_id).await? else {
            continue;
        };
        let now_s = now.unix_timestamp();
        let accepted_from = client
            .generations
            .iter()
            .filter(|g| {
                g.state
                    .accepts(g.expires_at.map(|t| t.unix_timestamp()), now_s)
            })
            .map(|g| g.generation)
            .min();
        if let Some(accepted_from) = accepted_from {
            local.deliver(&Event::CredentialsChanged {
                runner: Arc::new(record),
                version: client.version,
                change: CredentialChange::RetiringRevoked { accepted_from },
            });
        }
    }
    Ok(())
}
