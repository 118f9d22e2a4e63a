//! The events seam: what a committed change means for state held in memory (the client cache,
//! revoked access tokens, auth health, live sessions, the dispatch loop). A service commits its
//! change to the store first, then publishes one [`Event`] through [`EventBus`]; every subscriber
//! applies it. Nothing in memory is told about a change any other way.
//!
//! **Contract**: [`EventBus::publish`] returns only after every subscriber in this process has
//! applied the event, in the order they were subscribed (the client cache first, so a revoked
//! secret stops working before its sessions are cut). That is what lets a revoking call promise
//! "once I have returned, the old secret fails everywhere in this process". [`InProcess`] is the
//! implementation for a single control plane; a multi-replica bus delivers the same events to the
//! other replicas as well, where the subscribers are the same and every event carries what they
//! need (versions from the database, never "the state as I saw it").
//!
//! Subscribers are synchronous and short: a few map updates under their own locks, no I/O.
//!
//! With several replicas on one database, [`replicated::Replicated`] is the bus: it delivers
//! locally as above, then sends the event (as [`wire`] text) to the other replicas, whose
//! listeners deliver it to their own subscribers. See that module for the bound it keeps when a
//! listener falls behind.

pub mod replicated;
pub mod wire;

use std::fmt;
use std::sync::Arc;

use tether_domain::{ClientId, CredentialsVersion, Generation, RunnerId};
use tether_store::RunnerRecord;
use time::OffsetDateTime;

/// Something that changed in the store, as memory must learn of it.
#[derive(Debug, Clone)]
pub enum Event {
    /// A runner's credentials changed; `version` is the credentials version the change committed.
    CredentialsChanged {
        runner: Arc<RunnerRecord>,
        version: CredentialsVersion,
        change: CredentialChange,
    },
    /// The runner is gone: its client never authenticates again and its sessions are closed.
    RunnerDeleted {
        runner: RunnerId,
        client_id: ClientId,
    },
    /// An access token was revoked before its expiry (unix seconds).
    AccessTokenRevoked { jti: String, expires_at: i64 },
    /// New tasks may be startable on this runner (queued, capacity freed, resumed).
    WorkQueued { runner: RunnerId },
    /// The runner was paused (`paused_by`) or resumed (`None`).
    PauseChanged {
        runner: Arc<RunnerRecord>,
        paused_by: Option<String>,
    },
    /// Every live instance of the runner is asked to drain and exit (a restart).
    DrainRequested { runner: RunnerId, reason: String },
    /// Another replica wrote a new status for the runner (`runner` as the store has it now): the
    /// web pages of this one show it, unless this replica holds a session of the runner and so
    /// derives its status itself. Only the database sends it (a trigger on the status column), so
    /// a local publish of it reaches no other replica.
    StatusChanged { runner: Arc<RunnerRecord> },
}

/// How a runner's credentials changed.
#[derive(Debug, Clone)]
pub enum CredentialChange {
    /// A revoking refresh made `active` the only accepted generation; the runner shows `reason`
    /// until an instance connects with the new secret.
    Revoked {
        active: Generation,
        reason: String,
        at: OffsetDateTime,
        by: String,
    },
    /// An overlap refresh made `active`; older generations keep working until their grace ends.
    Rotated {
        active: Generation,
        at: OffsetDateTime,
        by: String,
    },
    /// Retiring generations stopped working (`revoke-previous`, or their grace ended):
    /// `accepted_from` is the oldest generation still accepted.
    RetiringRevoked { accepted_from: Generation },
}

/// What the subscribers in this process did with an event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Instances whose sessions were closed (their revoked generation, or the runner was deleted).
    pub sessions_closed: Vec<String>,
    /// Live instances told something (a new generation, to drain).
    pub instances_told: usize,
}

/// Applies events to one piece of in-memory state.
pub trait Subscriber: Send + Sync + fmt::Debug {
    /// Applies `event`, adding what it did to `delivered`. Must not block or do I/O.
    fn deliver(&self, event: &Event, delivered: &mut Delivered);
}

/// Publishes events after their change committed.
#[async_trait::async_trait]
pub trait EventBus: Send + Sync + fmt::Debug {
    /// Delivers `event` to every subscriber of this process before it returns (see the module
    /// doc), and to the other replicas, if there are any, before it returns too; what the
    /// subscribers here did comes back.
    async fn publish(&self, event: Event) -> Delivered;

    /// Whether the caches fed by this bus may be trusted right now. Always, for a single
    /// process; for replicas, only while the listener is in sync (see [`replicated`]). When not,
    /// callers read the database instead of their caches.
    fn trusted(&self) -> bool {
        true
    }
}

/// The bus of a single control-plane process: delivery is a loop over the subscribers.
#[derive(Debug, Default)]
pub struct InProcess {
    subscribers: Vec<Arc<dyn Subscriber>>,
}

impl InProcess {
    /// Subscribers receive every event in this order.
    pub fn new(subscribers: Vec<Arc<dyn Subscriber>>) -> Self {
        Self { subscribers }
    }
}

impl InProcess {
    /// Delivers to this process's subscribers only (the events replicas receive from others).
    pub fn deliver(&self, event: &Event) -> Delivered {
        let mut delivered = Delivered::default();
        for s in &self.subscribers {
            s.deliver(event, &mut delivered);
        }
        delivered
    }
}

#[async_trait::async_trait]
impl EventBus for InProcess {
    async fn publish(&self, event: Event) -> Delivered {
        self.deliver(&event)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug)]
    struct Recorder {
        name: &'static str,
        log: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Subscriber for Recorder {
        fn deliver(&self, event: &Event, delivered: &mut Delivered) {
            self.log.lock().expect("log").push(self.name);
            if let Event::DrainRequested { .. } = event {
                delivered.instances_told += 1;
            }
        }
    }

    #[tokio::test]
    async fn every_subscriber_applies_an_event_in_order_before_publish_returns() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let bus = InProcess::new(vec![
            Arc::new(Recorder {
                name: "first",
                log: log.clone(),
            }),
            Arc::new(Recorder {
                name: "second",
                log: log.clone(),
            }),
        ]);
        let delivered = bus
            .publish(Event::DrainRequested {
                runner: RunnerId::new(),
                reason: "restart".into(),
            })
            .await;
        assert_eq!(*log.lock().expect("log"), ["first", "second"]);
        assert_eq!(delivered.instances_told, 2);
    }
}
