//! In-memory view of runners' OAuth clients, so the token endpoint verifies a secret without a
//! database round trip. Loaded on first use of a client id, dropped when its credentials change.
//! Unknown client ids are never cached, so the map is bounded by the number of runners.
//!
//! **Invariant**: once a call that changed a runner's credentials has returned — it committed,
//! then called [`ClientCache::invalidate`] with the credentials version its transaction produced —
//! no lookup that starts afterwards sees the credentials as they were before that change. This is
//! what makes a revoked generation fail at once in `/oauth/token`, `/oauth/introspect`, the
//! session connect and `reauth`, for revoke-mode refresh, `revoke-previous`, grace expiry and
//! runner deletion. It holds by construction, not by timing:
//! - every entry carries the [`CredentialsVersion`] it was read at, in the same snapshot as the
//!   generations themselves;
//! - `invalidate(id, v)` raises the client's *floor* to `v` and drops an entry older than `v`, under
//!   the write lock;
//! - a load installs its record only if the record's version is at or above the floor at install
//!   time (checked under the same lock). A load that read before the commit carries an older version
//!   and is discarded; only its own request, which started before the change returned, uses it.
//!
//! A lookup after `invalidate` therefore finds either no entry (and reads the committed state) or
//! an entry at least as new as the change. The version comes from the database, so the same rule
//! holds when another replica made the change and the invalidation arrives as an event.
//!
//! Floors outlive their entries (a load may still be in flight). A deleted runner's floor is
//! [`CredentialsVersion::DELETED`]; it is forgotten after [`TOMBSTONE_TTL`], far longer than any
//! store read may take. Usage counters of a dropped entry are handed to the next usage flush, so
//! an invalidation never loses a "last used" time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tether_domain::{
    ClientId, CredentialState, CredentialsVersion, Generation, RunnerId, RunnerName, Verifier,
};
use tether_store::{ClientRecord, StoreResult};

/// How long a deleted runner's floor is kept: far longer than any load of its record can take.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub struct CachedGeneration {
    pub generation: Generation,
    pub state: CredentialState,
    pub verifier: Verifier,
    pub expires_at_s: Option<i64>,
    /// Whether the first token of this generation is already on record.
    pub first_token_recorded: AtomicBool,
    /// Last successful use (unix ms) not yet flushed to the database; 0 when none.
    pub unflushed_use_ms: AtomicI64,
}

impl CachedGeneration {
    pub fn accepts(&self, now_s: i64) -> bool {
        self.state.accepts(self.expires_at_s, now_s)
    }

    /// Notes a successful use (a token issued, a session opened or re-authenticated). A plain
    /// store, not a read-modify-write: this runs on every token request, and of two racing uses the
    /// store keeps the later time anyway (`record_credential_use` takes the maximum).
    pub fn note_use(&self, at_ms: i64) {
        self.unflushed_use_ms.store(at_ms, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct CachedClient {
    pub runner_id: RunnerId,
    pub runner_name: RunnerName,
    pub client_id: ClientId,
    /// The credentials version these generations were read at.
    pub version: CredentialsVersion,
    /// Newest first.
    pub generations: Vec<CachedGeneration>,
}

impl CachedClient {
    fn from_record(r: ClientRecord) -> Self {
        Self {
            runner_id: r.runner_id,
            runner_name: r.runner_name,
            client_id: r.client_id,
            version: r.version,
            generations: r
                .generations
                .into_iter()
                .map(|g| CachedGeneration {
                    generation: g.generation,
                    state: g.state,
                    verifier: g.verifier,
                    expires_at_s: g.expires_at.map(|t| t.unix_timestamp()),
                    first_token_recorded: AtomicBool::new(g.first_token_at.is_some()),
                    unflushed_use_ms: AtomicI64::new(0),
                })
                .collect(),
        }
    }

    /// The accepted generation whose verifier matches `candidate`, checking every generation so
    /// the time taken does not depend on which one matched.
    pub fn authenticate(&self, candidate: &Verifier, now_s: i64) -> Option<&CachedGeneration> {
        let mut found = None;
        for g in &self.generations {
            if g.verifier.matches(candidate) && g.accepts(now_s) {
                found = Some(g);
            }
        }
        found
    }

    pub fn generation(&self, generation: u32) -> Option<&CachedGeneration> {
        self.generations
            .iter()
            .find(|g| g.generation.0 == generation)
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// No entry older than this may be installed.
    floor: Option<CredentialsVersion>,
    entry: Option<Arc<CachedClient>>,
    /// When the runner was deleted (its floor is `DELETED`).
    deleted_at: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct ClientCache {
    map: RwLock<HashMap<ClientId, Slot>>,
    /// Entries dropped by an invalidation whose usage counters the next flush still has to write.
    retired: Mutex<Vec<Arc<CachedClient>>>,
}

impl ClientCache {
    /// The cached client, or the one `load` reads (installed if no newer change was announced
    /// meanwhile). `None` for an unknown client id, which is never cached. `load` is called only
    /// on a miss, so a hit builds no store future.
    ///
    /// With `trusted` false (a replica whose events listener is behind, see
    /// `events::replicated`), the cache is neither read nor filled: every lookup reads the
    /// database.
    pub async fn get<L, F>(
        &self,
        client_id: &ClientId,
        trusted: bool,
        load: L,
    ) -> StoreResult<Option<Arc<CachedClient>>>
    where
        L: FnOnce() -> F,
        F: Future<Output = StoreResult<Option<ClientRecord>>>,
    {
        if !trusted {
            return Ok(load()
                .await?
                .map(|r| Arc::new(CachedClient::from_record(r))));
        }
        if let Some(hit) = self.read().get(client_id).and_then(|s| s.entry.clone()) {
            return Ok(Some(hit));
        }
        let Some(record) = load().await? else {
            return Ok(None);
        };
        let loaded = Arc::new(CachedClient::from_record(record));
        let mut map = self.write();
        let slot = map.entry(client_id.clone()).or_default();
        if slot.floor.is_some_and(|floor| loaded.version < floor) {
            // Read before a change that was announced meanwhile: serve this one request (it began
            // before the change returned) but keep it out of the cache.
            return Ok(Some(loaded));
        }
        match &slot.entry {
            // Another request loaded it meanwhile; keep the one that is at least as new, so its
            // counters survive.
            Some(existing) if existing.version >= loaded.version => Ok(Some(existing.clone())),
            _ => {
                if let Some(older) = slot.entry.replace(loaded.clone()) {
                    self.retire(older);
                }
                Ok(Some(loaded))
            }
        }
    }

    /// A change to the client's credentials committed at `version`: drops what is older and makes
    /// sure no load read before it is installed later.
    pub fn invalidate(&self, client_id: &ClientId, version: CredentialsVersion) {
        let mut map = self.write();
        let slot = map.entry(client_id.clone()).or_default();
        slot.floor = Some(slot.floor.map_or(version, |f| f.max(version)));
        if version == CredentialsVersion::DELETED {
            slot.deleted_at = Some(Instant::now());
        }
        if slot.entry.as_ref().is_some_and(|e| e.version < version) {
            if let Some(old) = slot.entry.take() {
                self.retire(old);
            }
        }
    }

    /// Drops every entry (floors stay): after a replica may have missed invalidations, each client
    /// is read again on its next use.
    pub fn clear(&self) {
        let mut map = self.write();
        for slot in map.values_mut() {
            if let Some(old) = slot.entry.take() {
                self.retire(old);
            }
        }
    }

    /// The runner was deleted: its client is never served from the cache again.
    pub fn deleted(&self, client_id: &ClientId) {
        self.invalidate(client_id, CredentialsVersion::DELETED);
    }

    /// Forgets floors of runners deleted longer ago than `ttl`.
    pub fn purge_tombstones(&self, ttl: Duration) {
        self.write()
            .retain(|_, s| s.deleted_at.is_none_or(|at| at.elapsed() < ttl));
    }

    /// Every cached client, plus entries dropped since the last call, for flushing usage counters.
    pub fn snapshot(&self) -> Vec<Arc<CachedClient>> {
        let mut all: Vec<_> = self
            .read()
            .values()
            .filter_map(|s| s.entry.clone())
            .collect();
        all.append(&mut self.retired.lock().unwrap_or_else(|p| p.into_inner()));
        all
    }

    fn retire(&self, entry: Arc<CachedClient>) {
        let pending = entry
            .generations
            .iter()
            .any(|g| g.unflushed_use_ms.load(Ordering::Relaxed) > 0);
        if pending {
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(entry);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ClientId, Slot>> {
        self.map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ClientId, Slot>> {
        self.map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl crate::events::Subscriber for ClientCache {
    fn deliver(&self, event: &crate::events::Event, _: &mut crate::events::Delivered) {
        use crate::events::Event;
        match event {
            Event::CredentialsChanged {
                runner, version, ..
            } => self.invalidate(&runner.client_id, *version),
            Event::RunnerDeleted { client_id, .. } => self.deleted(client_id),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_store::CredentialRecord;
    use tokio::sync::oneshot;

    fn client_id() -> ClientId {
        ClientId::generate()
    }

    fn record(id: &ClientId, version: i64, state: CredentialState) -> ClientRecord {
        let now = time::OffsetDateTime::now_utc();
        ClientRecord {
            runner_id: RunnerId::new(),
            runner_name: RunnerName::parse("r").expect("name"),
            client_id: id.clone(),
            version: CredentialsVersion(version),
            generations: vec![CredentialRecord {
                generation: Generation(1),
                state,
                verifier: Verifier::from_slice(&[7; 32]).expect("verifier"),
                created_at: now,
                expires_at: None,
                first_token_at: None,
                created_by: "system".into(),
                last_used_at: None,
                revoked_at: None,
                revoked_by: None,
            }],
        }
    }

    fn state_of(c: &CachedClient) -> CredentialState {
        c.generations[0].state
    }

    /// The race the invariant rules out, forced: a load reads the credentials before a revoking
    /// change commits and is held until the change has invalidated the cache. Its stale record
    /// must not be installed: the next lookup reads the committed state.
    #[tokio::test]
    async fn a_load_read_before_a_change_is_not_installed_after_it() {
        let cache = Arc::new(ClientCache::default());
        let id = client_id();
        let (read_done, read_rx) = oneshot::channel();
        let (release, release_rx) = oneshot::channel::<()>();
        let stale = record(&id, 1, CredentialState::Active);
        let in_flight = {
            let (cache, id) = (cache.clone(), id.clone());
            tokio::spawn(async move {
                cache
                    .get(&id, true, || async move {
                        let _ = read_done.send(());
                        let _ = release_rx.await; // the store answered with the old view; now wait
                        Ok(Some(stale))
                    })
                    .await
            })
        };
        read_rx.await.expect("load started");
        // The revoking change commits (version 2) and returns.
        cache.invalidate(&id, CredentialsVersion(2));
        release.send(()).expect("release");
        let served = in_flight.await.expect("join").expect("ok").expect("some");
        assert_eq!(
            state_of(&served),
            CredentialState::Active,
            "its own request may use it"
        );
        // A lookup that starts after the change returned must not see the stale view.
        let fresh = record(&id, 2, CredentialState::Revoked);
        let after = cache
            .get(&id, true, || async { Ok(Some(fresh)) })
            .await
            .expect("ok")
            .expect("some");
        assert_eq!(state_of(&after), CredentialState::Revoked);
        assert_eq!(after.version, CredentialsVersion(2));
    }

    #[tokio::test]
    async fn invalidation_drops_older_entries_and_keeps_newer_ones() {
        let cache = ClientCache::default();
        let id = client_id();
        let v1 = record(&id, 1, CredentialState::Active);
        cache
            .get(&id, true, || async { Ok(Some(v1)) })
            .await
            .expect("ok");
        cache.invalidate(&id, CredentialsVersion(2));
        let loads = std::sync::atomic::AtomicUsize::new(0);
        let load = |v| {
            let r = record(&id, v, CredentialState::Active);
            let loads = &loads;
            async move {
                loads.fetch_add(1, Ordering::Relaxed);
                Ok(Some(r))
            }
        };
        let got = cache
            .get(&id, true, || load(2))
            .await
            .expect("ok")
            .expect("some");
        assert_eq!(got.version, CredentialsVersion(2));
        // An invalidation at a version the entry already has keeps it.
        cache.invalidate(&id, CredentialsVersion(2));
        let got = cache
            .get(&id, true, || load(3))
            .await
            .expect("ok")
            .expect("some");
        assert_eq!(got.version, CredentialsVersion(2), "served from the cache");
        assert_eq!(loads.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_deleted_runner_is_never_cached_again_until_its_tombstone_expires() {
        let cache = ClientCache::default();
        let id = client_id();
        let r = record(&id, 5, CredentialState::Active);
        cache
            .get(&id, true, || async { Ok(Some(r)) })
            .await
            .expect("ok");
        cache.deleted(&id);
        // A load that read the row before the delete committed serves only itself.
        let r = record(&id, 5, CredentialState::Active);
        cache
            .get(&id, true, || async { Ok(Some(r)) })
            .await
            .expect("ok");
        let none = cache
            .get(&id, true, || async { Ok(None) })
            .await
            .expect("ok");
        assert!(
            none.is_none(),
            "the deleted client is not served from the cache"
        );
        cache.purge_tombstones(Duration::ZERO);
        assert!(cache.read().is_empty());
    }

    #[tokio::test]
    async fn usage_of_a_dropped_entry_reaches_the_next_flush() {
        let cache = ClientCache::default();
        let id = client_id();
        let r = record(&id, 1, CredentialState::Active);
        let c = cache
            .get(&id, true, || async { Ok(Some(r)) })
            .await
            .expect("ok")
            .expect("some");
        c.generations[0].note_use(1234);
        cache.invalidate(&id, CredentialsVersion(2));
        let snap = cache.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(
            snap[0].generations[0]
                .unflushed_use_ms
                .load(Ordering::Relaxed),
            1234
        );
        assert!(cache.snapshot().is_empty(), "handed out once");
    }

    /// Stress: loaders race invalidations on several threads. After an invalidation to version v
    /// has returned, no lookup that starts later may return a version below v.
    #[test]
    fn stress_no_lookup_after_an_invalidation_returns_an_older_version() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let cache = Arc::new(ClientCache::default());
            let id = client_id();
            // `committed`: what the "database" holds; `returned`: the newest change whose
            // invalidation has returned.
            let committed = Arc::new(AtomicI64::new(1));
            let returned = Arc::new(AtomicI64::new(1));
            let stop = Arc::new(AtomicBool::new(false));
            let lookups = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let loads = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut readers = Vec::new();
            for _ in 0..4 {
                let (cache, id, committed, returned, stop, lookups, loads) = (
                    cache.clone(),
                    id.clone(),
                    committed.clone(),
                    returned.clone(),
                    stop.clone(),
                    lookups.clone(),
                    loads.clone(),
                );
                readers.push(tokio::spawn(async move {
                    let mut checked = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let floor = returned.load(Ordering::SeqCst);
                        let (db, rid, loads) = (committed.clone(), id.clone(), loads.clone());
                        let got = cache
                            .get(&id, true, || async move {
                                loads.fetch_add(1, Ordering::Relaxed);
                                let v = db.load(Ordering::SeqCst);
                                // Answer late, as a busy store does.
                                for _ in 0..3 {
                                    tokio::task::yield_now().await;
                                }
                                Ok(Some(record(&rid, v, CredentialState::Active)))
                            })
                            .await
                            .expect("ok")
                            .expect("some");
                        assert!(
                            got.version.0 >= floor,
                            "a lookup that started after version {floor} returned saw version {}",
                            got.version.0
                        );
                        checked += 1;
                        lookups.fetch_add(1, Ordering::Relaxed);
                    }
                    checked
                }));
            }
            // Changes keep coming until the readers have raced them enough (bounded in time).
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut v = 1;
            while loads.load(Ordering::Relaxed) < 20_000 && Instant::now() < deadline {
                v += 1;
                // Commit, let loads in flight read the old or the new state, then invalidate.
                committed.store(v, Ordering::SeqCst);
                tokio::task::yield_now().await;
                cache.invalidate(&id, CredentialsVersion(v));
                returned.store(v, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
            stop.store(true, Ordering::SeqCst);
            let mut total = 0;
            for r in readers {
                total += r.await.expect("reader");
            }
            let loads = loads.load(Ordering::Relaxed);
            assert!(
                total > 1000 && loads > 1000 && v > 100,
                "the race ran ({total} lookups, {loads} loads, {v} changes)"
            );
        });
    }
}
