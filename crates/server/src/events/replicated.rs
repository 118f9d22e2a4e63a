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
//! On (re)connect the listener (the `replication` module) resyncs before it is trusted again: it drops
//! every cached client, reloads revoked access tokens, and for every runner with sessions here
//! re-reads its credentials and closes sessions on generations no longer accepted (or all of them,
//! for a runner deleted meanwhile).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tether_store::EventChannel;
use time::OffsetDateTime;

use super::wire::{Envelope, Message};
use super::{Delivered, Event, EventBus, InProcess};

/// How long a publish waits for the database to take its notification before it gives up (and
/// says so in the log); the other replicas then stop trusting their caches within `max_lag` of
/// their last ping anyway, if the database is what failed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);

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

    /// The listener received something (anything: a ping proves the round trip).
    pub fn heard(&self) {
        self.last_heard_ms.store(now_ms(), Ordering::Release);
    }

    /// Whether the caches were resynced since the listener last (re)connected.
    pub fn set_in_sync(&self, in_sync: bool) {
        self.in_sync.store(in_sync, Ordering::Release);
    }

    /// The listener had to connect again after losing its connection.
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// How often the listener pings itself: a quarter of the bound.
    pub fn ping_interval(&self) -> Duration {
        (self.max_lag / 4).max(Duration::from_millis(50))
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
