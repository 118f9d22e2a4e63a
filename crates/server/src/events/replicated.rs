//! The events bus of several replicas on one database. A publish delivers to this process's
//! subscribers, then sends the event on the database's channel (`NOTIFY`) before it returns; each
//! other replica's listener reads the records the event names and delivers it to its own
//! subscribers. So the guarantee of a single process — once a revoking call has returned, the old
//! secret fails — holds on the replica that served the call at once, and on the others as soon as
//! their listener has the notification.
//!
//! The NOTIFY a publish sends comes after the commit, so it can be lost (the replica dies in
//! between, or the send fails while the database is fine). For the changes the others must not
//! miss — a runner's credentials version bumped, a runner deleted, an access token revoked — the
//! database itself notifies in the committing transaction (triggers of migration
//! `0003_commit_notifications`; `wire::Message::CredentialsCommitted` and friends), so a
//! notification goes out if and only if the change commits. The detailed event still follows from
//! the publisher; applying either, or both in any order, leaves a replica in the same state.
//!
//! Notifications reach only a connected listener. A replica whose listener is down, lagging or
//! resyncing must not trust what its caches say, because a revocation may be among what it missed.
//! So the listener probes its own round trip: a ping every `max_lag / 4`, sent on the channel like
//! any event and received in the same stream. The database delivers notifications in the order
//! their transactions committed, and the listener applies each one before it reads the next, so
//! when it has *processed* its own ping sent at *s*, every event committed before *s* has been
//! applied here. [`ListenerHealth`] keeps the send time of the newest ping processed so — the
//! point this replica is known to be in sync up to — and [`ListenerHealth::trusted`] is true only
//! while that point is less than `max_lag` ago **and** the caches were resynced since the listener
//! last (re)connected. Receiving an event proves nothing about what is queued behind it: only a
//! processed ping advances the point. While not trusted, token requests, introspection and
//! connects read the database (or answer 503 when they cannot).
//!
//! **Bound** (what the tests check): a secret revoked by a call that returned at time *t* is
//! refused by every replica from *t* + `max_lag` on. A replica trusted at *now* ≥ *t* + `max_lag`
//! has processed a ping sent after *t*, so it applied the revocation's notification (which
//! committed before *t*) first; one that has not stopped trusting its caches.
//!
//! On (re)connect the listener (the `replication` module) resyncs before it is trusted again: it drops
//! every cached client, reloads revoked access tokens, and for every runner with sessions here
//! re-reads its credentials and closes sessions on generations no longer accepted (or all of them,
//! for a runner deleted meanwhile).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_store::EventChannel;

use super::wire::{Envelope, Message};
use super::{Delivered, Event, EventBus, InProcess};

/// How long a publish waits for the database to take its notification before it gives up (and
/// says so in the log); the other replicas then stop trusting their caches within `max_lag` of
/// their last ping anyway, if the database is what failed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this replica's listener is in sync, and how far behind it may be.
///
/// **Invariant**: `synced_ns` only moves forward, and only to the send time of a ping whose every
/// predecessor in the stream was applied (or to the start of a completed resync); `trusted` is
/// never true while `in_sync` is false.
#[derive(Debug)]
pub struct ListenerHealth {
    max_lag: Duration,
    /// Monotonic origin of `synced_ns`.
    base: Instant,
    /// Nanoseconds after `base` up to which this replica is known to be in sync, plus one; 0:
    /// never.
    synced_ns: AtomicU64,
    /// False from a (re)connect until the resync after it finished.
    in_sync: AtomicBool,
    reconnects: AtomicU64,
}

impl ListenerHealth {
    pub fn new(max_lag: Duration) -> Self {
        Self {
            max_lag,
            base: Instant::now(),
            synced_ns: AtomicU64::new(0),
            in_sync: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
        }
    }

    /// Whether caches may be trusted now (see the module doc).
    pub fn trusted(&self) -> bool {
        self.in_sync.load(Ordering::Acquire) && self.lag() < self.max_lag
    }

    /// How long ago the point this replica is known to be in sync up to was (`Duration::MAX`
    /// before the first sync).
    pub fn lag(&self) -> Duration {
        match self.synced_ns.load(Ordering::Acquire) {
            0 => Duration::MAX,
            n => self
                .base
                .elapsed()
                .saturating_sub(Duration::from_nanos(n - 1)),
        }
    }

    /// How many times the listener had to connect again after losing its connection.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Everything committed before `at` has been applied here: a ping sent at `at` was processed,
    /// or a resync that began at `at` finished. An older point than the one held changes nothing.
    pub fn synced_to(&self, at: Instant) {
        let n = u64::try_from(at.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX - 1)
            + 1;
        self.synced_ns.fetch_max(n, Ordering::AcqRel);
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

/// The pings a listener sent and has not yet received back, with when each was sent. Bounded: a
/// ping that never comes back (its send failed) is forgotten once [`Probes::CAPACITY`] newer ones
/// are outstanding.
#[derive(Debug)]
pub struct Probes {
    next_seq: u64,
    outstanding: VecDeque<(u64, Instant)>,
}

impl Probes {
    pub const CAPACITY: usize = 64;

    /// Sequence numbers start at a random point, so a ping of an earlier process with this
    /// replica's id is not taken for one of ours.
    pub fn new() -> Self {
        let mut start = [0u8; 8];
        // Without randomness the probes still work; only the guard against a predecessor's pings
        // is weaker.
        let _ = getrandom::getrandom(&mut start);
        Self {
            next_seq: u64::from_le_bytes(start) >> 1,
            outstanding: VecDeque::with_capacity(Self::CAPACITY),
        }
    }

    /// A new ping to send now.
    pub fn send(&mut self, now: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if self.outstanding.len() == Self::CAPACITY {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((seq, now));
        seq
    }

    /// Our ping `seq` came back: when it was sent, if it is one we are waiting for. Older pings
    /// still outstanding are dropped (the database delivers in order, so they were lost).
    pub fn received(&mut self, seq: u64) -> Option<Instant> {
        let at = self.outstanding.iter().position(|(s, _)| *s == seq)?;
        let (_, sent) = self.outstanding.drain(..=at).next_back()?;
        Some(sent)
    }
}

impl Default for Probes {
    fn default() -> Self {
        Self::new()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_processed_ping_sent_within_the_bound_makes_a_replica_trusted() {
        let health = ListenerHealth::new(Duration::from_millis(200));
        assert!(!health.trusted(), "never synced");
        assert_eq!(health.lag(), Duration::MAX);
        health.synced_to(Instant::now());
        assert!(
            !health.trusted(),
            "synced but not resynced since connecting"
        );
        health.set_in_sync(true);
        assert!(health.trusted());
        // A ping sent long ago and processed only now proves nothing about the last 200 ms.
        let health = ListenerHealth::new(Duration::from_millis(200));
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(250));
        health.set_in_sync(true);
        health.synced_to(sent);
        assert!(!health.trusted(), "lag {:?}", health.lag());
        assert!(health.lag() >= Duration::from_millis(250));
    }

    #[test]
    fn the_point_in_sync_never_moves_back() {
        let health = ListenerHealth::new(Duration::from_millis(200));
        health.set_in_sync(true);
        let old = Instant::now();
        std::thread::sleep(Duration::from_millis(250));
        health.synced_to(Instant::now());
        assert!(health.trusted());
        health.synced_to(old);
        assert!(
            health.trusted(),
            "an older ping processed late does not undo a newer one"
        );
    }

    #[test]
    fn probes_match_our_pings_and_forget_the_lost_ones() {
        let mut probes = Probes::new();
        let t0 = Instant::now();
        let first = probes.send(t0);
        let second = probes.send(t0 + Duration::from_millis(5));
        let third = probes.send(t0 + Duration::from_millis(10));
        assert_eq!(probes.received(second), Some(t0 + Duration::from_millis(5)));
        // Delivery is in order: the first was lost, so it never counts.
        assert_eq!(probes.received(first), None);
        assert_eq!(probes.received(third), Some(t0 + Duration::from_millis(10)));
        assert_eq!(probes.received(third), None, "each ping counts once");
        assert_eq!(probes.received(third.wrapping_add(100)), None, "not ours");
    }

    #[test]
    fn outstanding_probes_are_bounded() {
        let mut probes = Probes::new();
        let t0 = Instant::now();
        let first = probes.send(t0);
        let mut last = first;
        for _ in 0..Probes::CAPACITY {
            last = probes.send(t0);
        }
        assert_eq!(probes.outstanding.len(), Probes::CAPACITY);
        assert_eq!(probes.received(first), None, "the oldest was forgotten");
        assert_eq!(probes.received(last), Some(t0));
    }

    #[test]
    fn sequences_of_two_processes_differ() {
        assert_ne!(Probes::new().next_seq, Probes::new().next_seq);
    }
}
