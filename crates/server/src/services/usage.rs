//! Token traffic kept in memory and written in aggregate: refused token requests are counted per
//! client and flushed as one audit event per client and interval ("a burst"), and credential
//! last-use times are flushed in one batch. One row per request would make /oauth/token write-bound.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use serde_json::json;
use tether_domain::RunnerId;
use tether_store::{CredentialUse, Store, StoreResult};
use time::OffsetDateTime;

use super::audit::{self, AuditEventExt};
use super::clients::ClientCache;
use super::rfc3339;

/// Distinct client ids tracked per interval; beyond this, refusals are pooled under "unknown" so
/// a flood of made-up ids cannot grow memory.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone)]
struct Burst {
    runner: Option<(RunnerId, String)>,
    count: u64,
    first_at: OffsetDateTime,
    last_at: OffsetDateTime,
    last_reason: &'static str,
    source_ip: Option<String>,
}

#[derive(Debug, Default)]
pub struct UsageTracker {
    refused: Mutex<HashMap<String, Burst>>,
}

impl UsageTracker {
    /// Notes a refused token request. `client` is the presented client id, if any.
    pub fn refused(
        &self,
        client: Option<&str>,
        runner: Option<(RunnerId, String)>,
        reason: &'static str,
        source_ip: Option<String>,
    ) {
        let now = OffsetDateTime::now_utc();
        let mut map = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = match &runner {
            Some(_) => client.unwrap_or("unknown").to_owned(),
            None => "unknown".to_owned(),
        };
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            key = "unknown".to_owned();
        }
        let burst = map.entry(key).or_insert_with(|| Burst {
            runner: runner.clone(),
            count: 0,
            first_at: now,
            last_at: now,
            last_reason: reason,
            source_ip: source_ip.clone(),
        });
        burst.count += 1;
        burst.last_at = now;
        burst.last_reason = reason;
        if source_ip.is_some() {
            burst.source_ip = source_ip;
        }
    }

    /// Writes pending bursts and last-use times. Called periodically and at shutdown.
    pub async fn flush(&self, store: &dyn Store, clients: &ClientCache) -> StoreResult<()> {
        let bursts: Vec<(String, Burst)> = {
            let mut map = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            map.drain().collect()
        };
        for (client, b) in bursts {
            let mut ev = audit::event("system", "oauth.token_refused")
                .target(client.clone())
                .source_ip(b.source_ip)
                .detail(json!({
                    "count": b.count,
                    "first_at": rfc3339(b.first_at),
                    "last_at": rfc3339(b.last_at),
                    "last_reason": b.last_reason,
                }));
            if let Some((id, name)) = &b.runner {
                ev = ev.runner(*id, name);
            }
            store.append_audit(ev).await?;
            tracing::info!(client_id = %client, count = b.count, reason = b.last_reason, "refused token requests");
        }

        let mut uses = Vec::new();
        for client in clients.snapshot() {
            for g in &client.generations {
                let at_ms = g.unflushed_use_ms.swap(0, Ordering::Relaxed);
                if at_ms > 0 {
                    uses.push(CredentialUse {
                        runner_id: client.runner_id,
                        generation: g.generation,
                        at_ms,
                    });
                }
            }
        }
        store.record_credential_use(&uses).await
    }
}
