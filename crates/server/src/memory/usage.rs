//! Token traffic kept in memory and written in aggregate: refused token requests are counted per
//! client and flushed as one audit event per client and interval ("a burst"), and credential and
//! API-token last-use times are flushed in one batch. One row per request would make
//! /oauth/token (and every API call) write-bound.

use std::collections::HashMap;
use std::sync::Mutex;

use tether_domain::RunnerId;
use time::OffsetDateTime;

/// Distinct client ids tracked per interval; beyond this, refusals are pooled under "unknown" so
/// a flood of made-up ids cannot grow memory.
const MAX_TRACKED: usize = 10_000;

/// Refused token requests of one client id in one flush interval.
#[derive(Debug, Clone)]
pub struct Burst {
    pub runner: Option<(RunnerId, String)>,
    pub count: u64,
    pub first_at: OffsetDateTime,
    pub last_at: OffsetDateTime,
    pub last_reason: &'static str,
    pub source_ip: Option<String>,
}

#[derive(Debug, Default)]
pub struct UsageTracker {
    refused: Mutex<HashMap<String, Burst>>,
    /// The latest use of each API token since the last flush. Only tokens that resolved are
    /// noted, so it holds at most one entry per stored token.
    token_uses: Mutex<HashMap<tether_domain::ApiTokenId, OffsetDateTime>>,
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

    /// Notes that an API token was used at `at`.
    pub fn token_used(&self, token: tether_domain::ApiTokenId, at: OffsetDateTime) {
        let mut map = self.token_uses.lock().unwrap_or_else(|p| p.into_inner());
        let last = map.entry(token).or_insert(at);
        *last = (*last).max(at);
    }

    /// The token uses since the last call.
    pub fn take_token_uses(&self) -> Vec<(tether_domain::ApiTokenId, OffsetDateTime)> {
        let mut map = self.token_uses.lock().unwrap_or_else(|p| p.into_inner());
        map.drain().collect()
    }

    /// The bursts since the last call, by presented client id.
    pub fn take_bursts(&self) -> Vec<(String, Burst)> {
        let mut map = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        map.drain().collect()
    }
}
