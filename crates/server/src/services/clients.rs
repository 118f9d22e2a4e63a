//! In-memory view of runners' OAuth clients, so the token endpoint verifies a secret without a
//! database round trip. Loaded on first use of a client id, dropped when its credentials change.
//! Unknown client ids are never cached, so the map is bounded by the number of runners.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, RwLock};

use tether_domain::{ClientId, CredentialState, Generation, RunnerId, RunnerName, Verifier};
use tether_store::{ClientRecord, Store, StoreResult};

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
}

#[derive(Debug)]
pub struct CachedClient {
    pub runner_id: RunnerId,
    pub runner_name: RunnerName,
    pub client_id: ClientId,
    /// Newest first.
    pub generations: Vec<CachedGeneration>,
}

impl CachedClient {
    fn from_record(r: ClientRecord) -> Self {
        Self {
            runner_id: r.runner_id,
            runner_name: r.runner_name,
            client_id: r.client_id,
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
pub struct ClientCache {
    map: RwLock<HashMap<ClientId, Arc<CachedClient>>>,
}

impl ClientCache {
    pub async fn get(
        &self,
        store: &dyn Store,
        client_id: &ClientId,
    ) -> StoreResult<Option<Arc<CachedClient>>> {
        if let Some(hit) = self.read().get(client_id) {
            return Ok(Some(hit.clone()));
        }
        let Some(record) = store.client_by_id(client_id).await? else {
            return Ok(None);
        };
        let entry = Arc::new(CachedClient::from_record(record));
        let mut map = self.write();
        // Another request may have loaded it meanwhile; keep the first so its counters survive.
        Ok(Some(map.entry(client_id.clone()).or_insert(entry).clone()))
    }

    pub fn invalidate(&self, client_id: &ClientId) {
        self.write().remove(client_id);
    }

    /// Every cached client, for flushing usage counters.
    pub fn snapshot(&self) -> Vec<Arc<CachedClient>> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ClientId, Arc<CachedClient>>> {
        self.map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ClientId, Arc<CachedClient>>> {
        self.map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
