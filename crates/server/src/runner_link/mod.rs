//! Live runner sessions: which instances of which runner are connected right now, their heartbeats,
//! and the status each runner shows. Sessions live in memory (they are TCP connections held by this
//! process); every session that opens or closes, and every status change, is also sent, in order,
//! to the writer of the session registry (`background::persist_statuses`), so other replicas know
//! where a runner is connected and the status survives a restart. A session's record is sent before
//! the status it causes: that order is what lets a replica whose runner moved elsewhere never
//! overwrite the status the new replica wrote (see `RunnerStore::save_runner_status`).
//!
//! One mutex guards the whole map: every operation is a few map updates, and heartbeats at 10 s
//! from tens of thousands of sessions are a few thousand short lock holds per second.
//!
//! **Invariant**: once a revocation has been applied here ([`RunnerLink::credentials_revoked`],
//! [`RunnerLink::close_older_generations`], [`RunnerLink::close_all`] for a deletion), no session on
//! a revoked generation of that runner is live, is registered, or re-authenticates onto one. Token
//! validation happens before `register`/`reauthenticated` (a connect may wait seconds for `hello`),
//! so it cannot be the only check: each runner keeps a floor, the lowest generation still accepted,
//! raised by the revoking call and checked by `register` and `reauthenticated` under the same lock
//! that the revoking call's scan of live sessions holds. Either the session registered first and
//! the scan closes it, or the floor was raised first and the registration is refused. A deleted
//! runner keeps a tombstone (floor above every generation) for [`TOMBSTONE_TTL`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How long a deleted runner's tombstone refuses late registrations: far longer than the time
/// between a session's token check and its `hello`.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

use tether_domain::{derive_status, Disconnect, Generation, RunnerId, RunnerStatus, StatusFacts};

use crate::events::{CredentialChange, Delivered, Event, Subscriber};
use tether_protocol::session::ServerMessage;
use tether_store::{PersistedStatus, RunnerRecord};
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};

/// What a session task is told to do by the rest of the server. Kept small (the message is
/// boxed): every session's channel allocates room for 32 of these up front, so with a 160-byte
/// message inline an idle session would carry 5 KiB of empty slots.
#[derive(Debug)]
pub enum Outbound {
    Send(Box<ServerMessage>),
    Close { code: u16, reason: String },
}

#[derive(Debug)]
pub struct LiveSession {
    pub session_id: u64,
    pub instance_id: String,
    pub hostname: String,
    pub runner_version: String,
    pub capacity: u32,
    pub connected_at: OffsetDateTime,
    pub last_heartbeat_at: OffsetDateTime,
    pub generation: u32,
    /// When the session moved to `generation` (connected, or re-authenticated onto it).
    pub generation_since: OffsetDateTime,
    /// Where the instance reads its secret (`env`, `file`, `aws_secrets_manager`), if it said.
    pub secret_source: Option<String>,
    /// Whether it picks up a new secret by itself, if it said.
    pub hot_reload: Option<bool>,
    /// The file it reads the secret from (file source only).
    pub secret_file: Option<String>,
    /// Expiry (unix seconds) of the access token the session authenticated with.
    pub token_exp: i64,
    pub running_tasks: u32,
    pub draining: bool,
    tx: mpsc::UnboundedSender<Outbound>,
}

#[derive(Debug)]
struct LiveRunner {
    /// For status events (runners are never renamed).
    name: String,
    sessions: HashMap<String, LiveSession>,
    ever_connected: bool,
    paused_by: Option<String>,
    last_disconnect: Option<Disconnect>,
    status: RunnerStatus,
    reason: String,
    since: OffsetDateTime,
    last_seen_at: Option<OffsetDateTime>,
    runner_version: Option<String>,
    /// When each instance's last session ended (cleared when it reconnects): how long its tasks
    /// have been without an instance.
    departed: HashMap<String, OffsetDateTime>,
    /// Set by a revoking refresh until an instance connects with the new credentials.
    credentials_revoked: Option<String>,
    /// The lowest generation still accepted, as far as revocations applied here say.
    accepted_from: u32,
    /// The secret file the most recent session said it reads (kept after it disconnects, so the
    /// Apply steps can name it while the runner waits for its new secret).
    last_secret_file: Option<String>,
}

impl LiveRunner {
    fn from_record(r: &RunnerRecord) -> Self {
        Self {
            name: r.name.as_str().to_owned(),
            sessions: HashMap::new(),
            ever_connected: r.status.status != RunnerStatus::Pending
                || r.status.last_seen_at.is_some(),
            paused_by: r.paused_by.clone(),
            last_disconnect: None,
            status: r.status.status,
            reason: r.status.reason.clone(),
            since: r.status.since,
            last_seen_at: r.status.last_seen_at,
            runner_version: r.status.runner_version.clone(),
            departed: HashMap::new(),
            credentials_revoked: None,
            accepted_from: 0,
            last_secret_file: None,
        }
    }

    fn facts(&self) -> StatusFacts {
        StatusFacts {
            ever_connected: self.ever_connected,
            live_sessions: self.sessions.len(),
            running_tasks: self.sessions.values().map(|s| s.running_tasks).sum(),
            draining_sessions: self.sessions.values().filter(|s| s.draining).count(),
            paused_by: self.paused_by.clone(),
            last_disconnect: self.last_disconnect.clone(),
            credentials_revoked: self.credentials_revoked.clone(),
        }
    }

    /// Re-derives the status; returns what to persist and announce if it changed.
    fn refresh(&mut self, now: OffsetDateTime) -> Option<Changed> {
        let (status, reason) = derive_status(&self.facts());
        if status == self.status && reason == self.reason {
            return None;
        }
        if status != self.status {
            self.since = now;
        }
        self.status = status;
        self.reason = reason;
        Some(Changed {
            name: self.name.clone(),
            status: self.persisted(),
            live_here: !self.sessions.is_empty(),
        })
    }

    fn persisted(&self) -> PersistedStatus {
        PersistedStatus {
            status: self.status,
            reason: self.reason.clone(),
            since: self.since,
            last_seen_at: self.last_seen_at,
            runner_version: self.runner_version.clone(),
        }
    }
}

/// Raises the floor to `active` and closes the sessions authenticated with a generation below it;
/// returns their instances.
fn close_older(live: &mut LiveRunner, active: u32) -> Vec<String> {
    live.accepted_from = live.accepted_from.max(active);
    let mut closed = Vec::new();
    for s in live.sessions.values().filter(|s| s.generation < active) {
        let _ = s.tx.send(Outbound::Close {
            code: tether_protocol::session::close_code::CREDENTIALS_REVOKED,
            reason: "credentials_revoked".into(),
        });
        closed.push(s.instance_id.clone());
    }
    closed
}

/// One connected instance as the registry sees it (the API and the pages show these).
#[derive(Debug, Clone)]
pub struct Instance {
    pub instance_id: String,
    pub hostname: String,
    pub connected_at: OffsetDateTime,
    pub last_heartbeat_at: OffsetDateTime,
    pub credential_generation: Generation,
    /// When the instance moved to its credential generation (connected or re-authenticated).
    pub generation_since: OffsetDateTime,
    pub running_tasks: u32,
    /// Where it reads its client secret (`env`, `file`, `aws_secrets_manager`), if it said.
    pub secret_source: Option<String>,
    /// Whether it picks up a new secret by itself, if it said.
    pub hot_reload: Option<bool>,
    /// The file it reads its secret from (file source only).
    pub secret_file: Option<String>,
}

/// A runner's live state as the API shows it.
#[derive(Debug, Clone)]
pub struct LiveView {
    pub status: PersistedStatus,
    pub instances: Vec<Instance>,
    /// The secret file the most recent session said it reads.
    pub last_secret_file: Option<String>,
}

/// The hello an instance sent, as the registry keeps it.
#[derive(Debug, Clone)]
pub struct Hello {
    pub instance_id: String,
    pub hostname: String,
    pub runner_version: String,
    pub capacity: u32,
    pub secret_source: Option<String>,
    pub hot_reload: Option<bool>,
    pub secret_file: Option<String>,
}

/// Why a session may not be registered or re-authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its credential generation was revoked after its token was checked.
    CredentialsRevoked,
    /// The runner was deleted.
    RunnerDeleted,
    /// The runner already holds this many live sessions here (a new instance; an instance
    /// reconnecting replaces its own session and is not counted twice).
    TooManySessions(usize),
}

/// The live runners, and tombstones of deleted ones.
#[derive(Debug, Default)]
struct Registry {
    runners: HashMap<RunnerId, LiveRunner>,
    deleted: HashMap<RunnerId, OffsetDateTime>,
}

impl std::ops::Deref for Registry {
    type Target = HashMap<RunnerId, LiveRunner>;
    fn deref(&self) -> &Self::Target {
        &self.runners
    }
}

impl std::ops::DerefMut for Registry {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.runners
    }
}

/// A status change to write to the store.
/// What the registry writer is sent, in the order it happened.
#[derive(Debug, Clone)]
pub enum Persist {
    /// A session opened here.
    Opened(tether_store::NewSession),
    /// A session of this process moved to another credential generation.
    Reauthenticated {
        session_id: u64,
        generation: Generation,
        at: OffsetDateTime,
    },
    /// A session of this process ended.
    Closed { session_id: u64, at: OffsetDateTime },
    /// A runner's status as this process derives it; `live_here` false means another replica's
    /// view (if it holds a session) wins.
    Status {
        runner: RunnerId,
        status: PersistedStatus,
        live_here: bool,
    },
}

#[derive(Debug)]
struct Changed {
    name: String,
    status: PersistedStatus,
    /// Whether this process holds a session of the runner (if not, another replica may).
    live_here: bool,
}

/// A status change as the web UI's live updates announce it.
#[derive(Debug, Clone)]
pub struct StatusEvent {
    pub runner_id: RunnerId,
    pub name: String,
    pub status: RunnerStatus,
    pub reason: String,
}

/// Status events a slow subscriber may fall behind by before it misses some.
const EVENT_BACKLOG: usize = 256;

/// An instance that may be given new tasks.
#[derive(Debug, Clone)]
pub struct DispatchTarget {
    pub instance_id: String,
    pub capacity: u32,
}

/// Whether an instance is connected, as far as this process knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Live,
    /// Its last session ended then.
    GoneSince(OffsetDateTime),
    /// Not seen since this process started.
    Unknown,
}

#[derive(Debug)]
pub struct RunnerLink {
    max_sessions_per_runner: usize,
    runners: Mutex<Registry>,
    next_session: AtomicU64,
    persist: mpsc::UnboundedSender<Persist>,
    events: broadcast::Sender<StatusEvent>,
}

impl RunnerLink {
    /// `persist` receives every status change, in order, for writing to the store.
    /// `max_sessions_per_runner`: live sessions one runner may hold here (`--max-sessions-per-runner`).
    pub fn new(persist: mpsc::UnboundedSender<Persist>, max_sessions_per_runner: usize) -> Self {
        Self {
            max_sessions_per_runner: max_sessions_per_runner.max(1),
            runners: Mutex::new(Registry::default()),
            next_session: AtomicU64::new(1),
            persist,
            events: broadcast::channel(EVENT_BACKLOG).0,
        }
    }

    /// Every status change from now on (for live updates in the web UI).
    pub fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.events.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.runners.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, id: RunnerId, change: Option<Changed>) {
        if let Some(Changed {
            name,
            status,
            live_here,
        }) = change
        {
            tracing::info!(runner.id = %id, status = status.status.as_str(), reason = %status.reason, "runner status changed");
            // No subscriber is not an error: nobody has the UI open.
            let _ = self.events.send(StatusEvent {
                runner_id: id,
                name,
                status: status.status,
                reason: status.reason.clone(),
            });
            let _ = self.persist.send(Persist::Status {
                runner: id,
                status,
                live_here,
            });
        }
    }

    /// Adds a session. An older session with the same instance id is closed (superseded). Refused
    /// if `generation` was revoked (or the runner deleted) since the session's token was checked.
    pub fn register(
        &self,
        runner: &RunnerRecord,
        hello: Hello,
        generation: u32,
        token_exp: i64,
        tx: mpsc::UnboundedSender<Outbound>,
    ) -> Result<u64, Refused> {
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let now = OffsetDateTime::now_utc();
        let change = {
            let mut map = self.lock();
            if map.deleted.contains_key(&runner.id) {
                return Err(Refused::RunnerDeleted);
            }
            let live = map
                .entry(runner.id)
                .or_insert_with(|| LiveRunner::from_record(runner));
            if generation < live.accepted_from {
                return Err(Refused::CredentialsRevoked);
            }
            // Checked under the lock that inserts: concurrent connects cannot both take the
            // last place.
            if live.sessions.len() >= self.max_sessions_per_runner
                && !live.sessions.contains_key(&hello.instance_id)
            {
                return Err(Refused::TooManySessions(self.max_sessions_per_runner));
            }
            live.ever_connected = true;
            live.last_seen_at = Some(now);
            live.last_secret_file.clone_from(&hello.secret_file);
            live.runner_version = Some(hello.runner_version.clone());
            let session = LiveSession {
                session_id,
                instance_id: hello.instance_id.clone(),
                hostname: hello.hostname,
                runner_version: hello.runner_version,
                capacity: hello.capacity,
                connected_at: now,
                last_heartbeat_at: now,
                generation,
                generation_since: now,
                secret_source: hello.secret_source,
                hot_reload: hello.hot_reload,
                secret_file: hello.secret_file,
                token_exp,
                running_tasks: 0,
                draining: false,
                tx,
            };
            live.departed.remove(&hello.instance_id);
            live.credentials_revoked = None;
            // Sent under the lock: the registry sees sessions in the order they were registered.
            let _ = self.persist.send(Persist::Opened(tether_store::NewSession {
                session_id,
                runner_id: runner.id,
                instance_id: hello.instance_id.clone(),
                hostname: session.hostname.clone(),
                generation: Generation(generation),
                connected_at: now,
                secret_source: session.secret_source.clone(),
                hot_reload: session.hot_reload,
                secret_file: session.secret_file.clone(),
            }));
            if let Some(old) = live.sessions.insert(hello.instance_id, session) {
                let _ = self.persist.send(Persist::Closed {
                    session_id: old.session_id,
                    at: now,
                });
                let _ = old.tx.send(Outbound::Close {
                    code: tether_protocol::session::close_code::SUPERSEDED,
                    reason: "a newer connection of this instance replaced this one".into(),
                });
            }
            live.refresh(now)
        };
        self.publish(runner.id, change);
        Ok(session_id)
    }

    /// Applies `update` to the session if it is still registered, noting the runner seen now;
    /// re-derives the status only when `update` says it may have moved.
    fn with_session(
        &self,
        id: RunnerId,
        session_id: u64,
        update: impl FnOnce(&mut LiveSession, OffsetDateTime) -> bool,
    ) {
        let now = OffsetDateTime::now_utc();
        let change = {
            let mut map = self.lock();
            let Some(live) = map.get_mut(&id) else { return };
            let Some(s) = live
                .sessions
                .values_mut()
                .find(|s| s.session_id == session_id)
            else {
                return;
            };
            let moved = update(s, now);
            live.last_seen_at = Some(now);
            if !moved {
                return;
            }
            live.refresh(now)
        };
        self.publish(id, change);
    }

    /// A heartbeat: the hot path of an idle session (tens of thousands per replica every
    /// interval). The status is re-derived only when the running-task count moved: nothing else a
    /// heartbeat says can change it.
    pub fn heartbeat(&self, id: RunnerId, session_id: u64, running_tasks: u32) {
        self.with_session(id, session_id, |s, now| {
            s.last_heartbeat_at = now;
            std::mem::replace(&mut s.running_tasks, running_tasks) != running_tasks
        });
    }

    /// Moves a session to the token it re-authenticated with. Refused (and the session left as it
    /// was) if that token's generation was revoked since it was checked.
    pub fn reauthenticated(
        &self,
        id: RunnerId,
        session_id: u64,
        generation: u32,
        token_exp: i64,
    ) -> Result<(), Refused> {
        let now = OffsetDateTime::now_utc();
        let change = {
            let mut map = self.lock();
            if map.deleted.contains_key(&id) {
                return Err(Refused::RunnerDeleted);
            }
            let Some(live) = map.get_mut(&id) else {
                return Err(Refused::RunnerDeleted);
            };
            if generation < live.accepted_from {
                return Err(Refused::CredentialsRevoked);
            }
            let Some(s) = live
                .sessions
                .values_mut()
                .find(|s| s.session_id == session_id)
            else {
                return Ok(());
            };
            if s.generation != generation {
                s.generation_since = now;
                // Under the lock, like `Opened`: the registry sees it after the session opened.
                let _ = self.persist.send(Persist::Reauthenticated {
                    session_id,
                    generation: Generation(generation),
                    at: now,
                });
            }
            s.generation = generation;
            s.token_exp = token_exp;
            live.last_seen_at = Some(now);
            live.refresh(now)
        };
        self.publish(id, change);
        Ok(())
    }

    /// Removes a session (if it is still the registered one) and records how it ended.
    pub fn unregister(&self, id: RunnerId, session_id: u64, how: Disconnect) {
        let now = OffsetDateTime::now_utc();
        let change = {
            let mut map = self.lock();
            let Some(live) = map.get_mut(&id) else { return };
            let Some(instance) = live
                .sessions
                .iter()
                .find(|(_, s)| s.session_id == session_id)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            live.sessions.remove(&instance);
            let _ = self.persist.send(Persist::Closed {
                session_id,
                at: now,
            });
            live.departed.insert(instance.clone(), now);
            live.last_seen_at = Some(now);
            live.last_disconnect = Some(match how {
                Disconnect::Lost { reason } => Disconnect::Lost {
                    reason: format!("instance {instance}: {reason}"),
                },
                graceful => graceful,
            });
            live.refresh(now)
        };
        self.publish(id, change);
    }

    /// Applies the operator's pause (`Some(by)`) or resume (`None`) to a runner with live state.
    pub fn set_paused(&self, runner: &RunnerRecord, paused_by: Option<String>) {
        let now = OffsetDateTime::now_utc();
        let change = {
            let mut map = self.lock();
            let Some(live) = map.get_mut(&runner.id) else {
                return;
            };
            live.paused_by = paused_by;
            live.refresh(now)
        };
        self.publish(runner.id, change);
    }

    /// A revoking refresh: closes every session on a generation older than `active` with 4401 and
    /// shows the runner `unknown` with `reason` until an instance connects with the new secret.
    /// Returns the sessions closed.
    pub fn credentials_revoked(
        &self,
        runner: &RunnerRecord,
        active: Generation,
        reason: &str,
    ) -> Vec<String> {
        let now = OffsetDateTime::now_utc();
        let (closed, change) = {
            let mut map = self.lock();
            let live = map
                .entry(runner.id)
                .or_insert_with(|| LiveRunner::from_record(runner));
            live.credentials_revoked = Some(reason.to_owned());
            let closed = close_older(live, active.0);
            (closed, live.refresh(now))
        };
        self.publish(runner.id, change);
        closed
    }

    /// Closes sessions on generations older than `active` (overlap ended), and refuses them from
    /// now on. Returns their instances.
    pub fn close_older_generations(
        &self,
        runner: &RunnerRecord,
        active: Generation,
    ) -> Vec<String> {
        let mut map = self.lock();
        let live = map
            .entry(runner.id)
            .or_insert_with(|| LiveRunner::from_record(runner));
        close_older(live, active.0)
    }

    /// Tells every live instance that `generation` exists (overlap began). Returns how many.
    pub fn credentials_rotated(&self, id: RunnerId, generation: Generation) -> usize {
        let map = self.lock();
        let Some(live) = map.get(&id) else { return 0 };
        live.sessions
            .values()
            .filter(|s| {
                s.tx.send(Outbound::Send(Box::new(
                    ServerMessage::CredentialsRotated {
                        generation: generation.0,
                    },
                )))
                .is_ok()
            })
            .count()
    }

    /// The instance said it is draining (SIGTERM): no new work for it.
    pub fn draining(&self, id: RunnerId, session_id: u64) {
        self.with_session(id, session_id, |s, _| {
            s.draining = true;
            true
        });
    }

    /// Instances that may take new tasks: connected, not draining, and the runner not paused.
    pub fn dispatch_targets(&self, id: RunnerId) -> Vec<DispatchTarget> {
        let map = self.lock();
        let Some(live) = map.get(&id).filter(|l| l.paused_by.is_none()) else {
            return Vec::new();
        };
        live.sessions
            .values()
            .filter(|s| !s.draining)
            .map(|s| DispatchTarget {
                instance_id: s.instance_id.clone(),
                capacity: s.capacity,
            })
            .collect()
    }

    /// Sends a message to an instance's live session. False if it has none.
    pub fn send_to_instance(&self, id: RunnerId, instance_id: &str, msg: ServerMessage) -> bool {
        self.lock()
            .get(&id)
            .and_then(|l| l.sessions.get(instance_id))
            .is_some_and(|s| s.tx.send(Outbound::Send(Box::new(msg))).is_ok())
    }

    pub fn presence(&self, id: RunnerId, instance_id: &str) -> Presence {
        let map = self.lock();
        let Some(live) = map.get(&id) else {
            return Presence::Unknown;
        };
        if live.sessions.contains_key(instance_id) {
            Presence::Live
        } else {
            live.departed
                .get(instance_id)
                .map_or(Presence::Unknown, |at| Presence::GoneSince(*at))
        }
    }

    /// Runners with at least one live session.
    pub fn connected_runners(&self) -> Vec<RunnerId> {
        self.lock()
            .iter()
            .filter(|(_, l)| !l.sessions.is_empty())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Forgets departure times older than `keep` (their tasks were long since marked lost), and
    /// tombstones of runners deleted longer ago than [`TOMBSTONE_TTL`].
    pub fn forget_departed(&self, keep: Duration) {
        let now = OffsetDateTime::now_utc();
        let mut map = self.lock();
        for live in map.values_mut() {
            live.departed.retain(|_, at| *at >= now - keep);
        }
        map.deleted.retain(|_, at| *at >= now - TOMBSTONE_TTL);
    }

    /// Tells every live instance to drain and exit. Returns how many were told.
    pub fn drain_all(&self, id: RunnerId, reason: &str) -> usize {
        let now = OffsetDateTime::now_utc();
        let (count, change) = {
            let mut map = self.lock();
            let Some(live) = map.get_mut(&id) else {
                return 0;
            };
            let mut count = 0;
            for s in live.sessions.values_mut().filter(|s| !s.draining) {
                s.draining = true;
                count += 1;
                let _ = s.tx.send(Outbound::Send(Box::new(ServerMessage::Drain {
                    reason: reason.to_owned(),
                })));
            }
            (count, live.refresh(now))
        };
        self.publish(id, change);
        count
    }

    /// Closes every session of a runner with `code` and forgets its live state (runner deleted);
    /// its tombstone refuses late registrations. Returns the instances whose sessions it closed.
    pub fn close_all(&self, id: RunnerId, code: u16, reason: &str) -> Vec<String> {
        let removed = {
            let mut map = self.lock();
            map.deleted.insert(id, OffsetDateTime::now_utc());
            map.remove(&id)
        };
        let Some(live) = removed else {
            return Vec::new();
        };
        live.sessions
            .into_values()
            .map(|s| {
                let _ = s.tx.send(Outbound::Close {
                    code,
                    reason: reason.to_owned(),
                });
                s.instance_id
            })
            .collect()
    }

    /// Closes every session of every runner (server shutdown).
    pub fn close_everything(&self, code: u16, reason: &str) {
        for live in self.lock().values() {
            for s in live.sessions.values() {
                let _ = s.tx.send(Outbound::Close {
                    code,
                    reason: reason.to_owned(),
                });
            }
        }
    }

    /// Closes up to `max` live sessions not in `asked` (a drain's record of the sessions it already
    /// told to close, which stay registered until their tasks end), adding them to it. Returns how
    /// many it closed and how many live sessions are still not in `asked`.
    pub fn close_some(
        &self,
        max: usize,
        asked: &mut std::collections::HashSet<u64>,
        code: u16,
        reason: &str,
    ) -> (usize, usize) {
        let (mut closed, mut left) = (0, 0);
        for live in self.lock().values() {
            for s in live.sessions.values() {
                if asked.contains(&s.session_id) {
                    continue;
                }
                if closed == max {
                    left += 1;
                    continue;
                }
                asked.insert(s.session_id);
                let _ = s.tx.send(Outbound::Close {
                    code,
                    reason: reason.to_owned(),
                });
                closed += 1;
            }
        }
        (closed, left)
    }

    /// Closes sessions whose heartbeats stopped for `3 × interval` or whose access token expired.
    pub fn sweep(&self, interval: Duration) -> usize {
        use tether_protocol::session::close_code;
        let now = OffsetDateTime::now_utc();
        let stale_before = now - interval * 3;
        let mut closed = Vec::new();
        {
            let map = self.lock();
            for (id, live) in map.iter() {
                for s in live.sessions.values() {
                    let (code, reason) = if s.last_heartbeat_at < stale_before {
                        (
                            close_code::HEARTBEAT_TIMEOUT,
                            format!(
                                "no heartbeat for {} s (3 intervals)",
                                (interval * 3).as_secs()
                            ),
                        )
                    } else if s.token_exp <= now.unix_timestamp() {
                        (
                            close_code::TOKEN_EXPIRED,
                            "access token expired without re-authentication".to_owned(),
                        )
                    } else {
                        continue;
                    };
                    let _ = s.tx.send(Outbound::Close {
                        code,
                        reason: reason.clone(),
                    });
                    closed.push((*id, s.session_id, reason));
                }
            }
        }
        let n = closed.len();
        for (id, session_id, reason) in closed {
            self.unregister(id, session_id, Disconnect::Lost { reason });
        }
        n
    }

    /// The live view of a runner, if this process has seen it since start.
    pub fn view(&self, id: RunnerId) -> Option<LiveView> {
        let map = self.lock();
        let live = map.get(&id)?;
        let mut instances: Vec<Instance> = live
            .sessions
            .values()
            .map(|s| Instance {
                instance_id: s.instance_id.clone(),
                hostname: s.hostname.clone(),
                connected_at: s.connected_at,
                last_heartbeat_at: s.last_heartbeat_at,
                credential_generation: Generation(s.generation),
                generation_since: s.generation_since,
                running_tasks: s.running_tasks,
                secret_source: s.secret_source.clone(),
                hot_reload: s.hot_reload,
                secret_file: s.secret_file.clone(),
            })
            .collect();
        instances.sort_by(|a, b| {
            a.connected_at
                .cmp(&b.connected_at)
                .then(a.instance_id.cmp(&b.instance_id))
        });
        Some(LiveView {
            status: live.persisted(),
            instances,
            last_secret_file: live.last_secret_file.clone(),
        })
    }

    /// Another replica wrote `runner`'s status: the web pages here show it, unless a session of
    /// the runner is held here (then this replica derives the status it shows itself).
    fn status_written_elsewhere(&self, runner: &RunnerRecord) {
        if self
            .lock()
            .get(&runner.id)
            .is_some_and(|live| !live.sessions.is_empty())
        {
            return;
        }
        // No subscriber is not an error: nobody has the UI open.
        let _ = self.events.send(StatusEvent {
            runner_id: runner.id,
            name: runner.name.as_str().to_owned(),
            status: runner.status.status,
            reason: runner.status.reason.clone(),
        });
    }

    /// Number of live sessions across all runners.
    pub fn session_count(&self) -> usize {
        self.lock().values().map(|l| l.sessions.len()).sum()
    }
}

/// Revocations cut sessions here, deletions close them, pauses and drain requests reach the live
/// instances.
impl Subscriber for RunnerLink {
    fn deliver(&self, event: &Event, delivered: &mut Delivered) {
        match event {
            Event::CredentialsChanged { runner, change, .. } => match change {
                CredentialChange::Revoked { active, reason, .. } => delivered
                    .sessions_closed
                    .extend(self.credentials_revoked(runner, *active, reason)),
                CredentialChange::Rotated { active, .. } => {
                    delivered.instances_told += self.credentials_rotated(runner.id, *active)
                }
                CredentialChange::RetiringRevoked { accepted_from } => delivered
                    .sessions_closed
                    .extend(self.close_older_generations(runner, *accepted_from)),
            },
            Event::RunnerDeleted { runner, .. } => {
                delivered.sessions_closed.extend(self.close_all(
                    *runner,
                    tether_protocol::session::close_code::RUNNER_DELETED,
                    "this runner was deleted in the control plane",
                ))
            }
            Event::PauseChanged { runner, paused_by } => self.set_paused(runner, paused_by.clone()),
            Event::DrainRequested { runner, reason } => {
                delivered.instances_told += self.drain_all(*runner, reason)
            }
            Event::StatusChanged { runner } => self.status_written_elsewhere(runner),
            Event::AccessTokenRevoked { .. } | Event::WorkQueued { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tether_domain::{ClientId, Description, Platform, RunnerName};

    fn link() -> RunnerLink {
        // Status changes are not under test (their receiver is dropped), nor is the session limit.
        RunnerLink::new(mpsc::unbounded_channel().0, usize::MAX)
    }

    fn record(generation: u32) -> RunnerRecord {
        let now = OffsetDateTime::now_utc();
        RunnerRecord {
            id: RunnerId::new(),
            name: RunnerName::parse("r").expect("name"),
            description: Description::parse("").expect("description"),
            platform: Platform::Local,
            client_id: ClientId::generate(),
            generation: Generation(generation),
            created_at: now,
            created_by: "system".into(),
            status: PersistedStatus {
                status: RunnerStatus::Pending,
                reason: String::new(),
                since: now,
                last_seen_at: None,
                runner_version: None,
            },
            paused_by: None,
            paused_until: None,
            retiring_until: None,
        }
    }

    fn hello(instance: &str) -> Hello {
        Hello {
            instance_id: instance.into(),
            hostname: "h".into(),
            runner_version: "0".into(),
            capacity: 1,
            secret_source: Some("file".into()),
            hot_reload: Some(true),
            secret_file: None,
        }
    }

    fn register(
        link: &RunnerLink,
        r: &RunnerRecord,
        instance: &str,
        generation: u32,
    ) -> (Result<u64, Refused>, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            link.register(r, hello(instance), generation, i64::MAX, tx),
            rx,
        )
    }

    /// The interleaving the floor exists for, forced: a connect's token (generation 1) was
    /// checked, then a revoking refresh applied its revocation, then the connect registers.
    #[test]
    fn a_session_checked_before_a_revocation_cannot_register_after_it() {
        let link = link();
        let r = record(2);
        assert!(link
            .credentials_revoked(&r, Generation(2), "refreshed")
            .is_empty());
        let (refused, _rx) = register(&link, &r, "i1", 1);
        assert_eq!(refused, Err(Refused::CredentialsRevoked));
        assert_eq!(link.session_count(), 0);
        let (ok, _rx) = register(&link, &r, "i1", 2);
        assert!(ok.is_ok(), "the new generation connects");
    }

    #[test]
    fn the_other_order_closes_the_session_instead() {
        let link = link();
        let r = record(1);
        let (ok, mut rx) = register(&link, &r, "i1", 1);
        assert!(ok.is_ok());
        assert_eq!(
            link.close_older_generations(&r, Generation(2)),
            vec!["i1".to_owned()]
        );
        assert!(matches!(
            rx.try_recv(),
            Ok(Outbound::Close { code, .. }) if code == tether_protocol::session::close_code::CREDENTIALS_REVOKED
        ));
    }

    #[test]
    fn reauth_onto_a_revoked_generation_is_refused() {
        let link = link();
        let r = record(2);
        let (id, _rx) = register(&link, &r, "i1", 2);
        let id = id.expect("registered");
        // Generation 3 was made and then revoked (refresh to 4) after the reauth token was checked.
        link.close_older_generations(&r, Generation(4));
        assert_eq!(
            link.reauthenticated(r.id, id, 3, i64::MAX),
            Err(Refused::CredentialsRevoked)
        );
        assert_eq!(link.reauthenticated(r.id, id, 4, i64::MAX), Ok(()));
    }

    #[test]
    fn a_deleted_runner_takes_no_late_session() {
        let link = link();
        let r = record(1);
        link.close_all(r.id, 4404, "deleted");
        let (refused, _rx) = register(&link, &r, "i1", 1);
        assert_eq!(refused, Err(Refused::RunnerDeleted));
        assert!(link.view(r.id).is_none());
    }

    /// Stress: sessions register on the generation their token was checked at while another
    /// thread revokes ever newer generations. Whatever the interleaving, every session on a
    /// generation below the final floor was either refused or told to close.
    #[test]
    fn stress_no_session_below_a_returned_revocation_stays_live() {
        let link = Arc::new(link());
        let r = Arc::new(record(1));
        let floor = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let registered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Arc::new(std::sync::Barrier::new(4));
        let sessions = std::thread::scope(|s| {
            let mut registrars = Vec::new();
            for t in 0..3 {
                let (link, r, floor, start, done, registered) = (
                    link.clone(),
                    r.clone(),
                    floor.clone(),
                    start.clone(),
                    done.clone(),
                    registered.clone(),
                );
                registrars.push(s.spawn(move || {
                    start.wait();
                    let mut out = Vec::new();
                    let mut after = 0;
                    // Registers during every revocation and a while after the last one, whatever
                    // the scheduler does (bounded).
                    for i in 0..100_000u32 {
                        if done.load(Ordering::SeqCst) {
                            after += 1;
                            if after > 50 {
                                break;
                            }
                        }
                        // A token checked a moment ago, maybe before the latest revocation.
                        let g = floor.load(Ordering::SeqCst) + (i % 2);
                        let (tx, rx) = mpsc::unbounded_channel();
                        let res = link.register(&r, hello(&format!("t{t}-{i}")), g, i64::MAX, tx);
                        out.push((g, res, rx));
                        registered.fetch_add(1, Ordering::SeqCst);
                    }
                    out
                }));
            }
            let (link, r, floor) = (link.clone(), r.clone(), floor.clone());
            s.spawn(move || {
                start.wait();
                for g in 1..=400u32 {
                    // Interleave for sure: each revocation waits for a few more registrations.
                    while registered.load(Ordering::SeqCst) < g as usize * 3 {
                        std::thread::yield_now();
                    }
                    link.close_older_generations(&r, Generation(g));
                    floor.store(g, Ordering::SeqCst);
                }
                done.store(true, Ordering::SeqCst);
            });
            registrars
                .into_iter()
                .flat_map(|h| h.join().expect("registrar"))
                .collect::<Vec<_>>()
        });
        let last = floor.load(Ordering::SeqCst);
        let (mut refused, mut closed) = (0, 0);
        for (g, res, mut rx) in sessions {
            if g >= last {
                continue;
            }
            match res {
                Err(Refused::CredentialsRevoked) => refused += 1,
                Err(other) => panic!("unexpected refusal {other:?}"),
                Ok(_) => {
                    let mut told = false;
                    while let Ok(m) = rx.try_recv() {
                        told |= matches!(m, Outbound::Close { .. });
                    }
                    assert!(
                        told,
                        "a session on generation {g} < {last} was neither refused nor closed"
                    );
                    closed += 1;
                }
            }
        }
        assert!(
            refused > 0 && closed > 0,
            "the race was exercised ({refused} refused, {closed} closed)"
        );
    }
}
