//! Writing the token traffic kept in memory (`memory::usage`, `memory::clients`): one audit event
//! per refused-request burst and one batch of credential last-use times per flush interval. One
//! row per request would make /oauth/token write-bound.

use std::sync::atomic::Ordering;

use serde_json::json;
use tether_store::{CredentialUse, Store, StoreResult};

use super::audit::{self, AuditEventExt};
use super::rfc3339;
use crate::memory::clients::ClientCache;
use crate::memory::usage::UsageTracker;

/// Writes pending bursts and last-use times. Called periodically and at shutdown.
pub async fn flush(
    usage: &UsageTracker,
    store: &dyn Store,
    clients: &ClientCache,
) -> StoreResult<()> {
    for (client, b) in usage.take_bursts() {
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
                    at: tether_store::from_ms(at_ms),
                });
            }
        }
    }
    store.record_credential_use(&uses).await?;
    store.record_api_token_use(&usage.take_token_uses()).await
}
