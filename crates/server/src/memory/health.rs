//! Auth health per runner: refused token requests since the last success, why the last one was
//! refused, and the last refresh, so the Runners list can say "3 failed token requests since
//! 12:04:10: wrong or revoked client secret; the secret was refreshed at 12:03:55 by user:alice".
//! In memory (it describes this process's traffic); the success path takes a read lock and two
//! atomic stores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tether_domain::RunnerId;
use tether_protocol::api::AuthHealth;
use time::OffsetDateTime;

use crate::clock::clock;

#[derive(Debug, Default)]
struct Cell {
    failed: AtomicU64,
    last_success_ms: AtomicI64,
    /// (reason, first failure since the last success, last failure)
    failure: Mutex<Option<(&'static str, i64, i64)>>,
    refreshed: Mutex<Option<(i64, String)>>,
}

#[derive(Debug, Default)]
pub struct AuthHealthTracker {
    cells: RwLock<HashMap<RunnerId, Arc<Cell>>>,
}

impl AuthHealthTracker {
    fn cell(&self, runner: RunnerId) -> Arc<Cell> {
        if let Some(c) = self
            .cells
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&runner)
        {
            return c.clone();
        }
        self.cells
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(runner)
            .or_default()
            .clone()
    }

    pub fn succeeded(&self, runner: RunnerId, at: OffsetDateTime) {
        let cell = self.cell(runner);
        cell.last_success_ms
            .store(tether_store::to_ms(at), Ordering::Relaxed);
        if cell.failed.swap(0, Ordering::Relaxed) > 0 {
            *cell.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    pub fn refused(&self, runner: RunnerId, reason: &'static str, at: OffsetDateTime) {
        let cell = self.cell(runner);
        let at = tether_store::to_ms(at);
        let mut failure = cell.failure.lock().unwrap_or_else(|p| p.into_inner());
        let since = failure.map_or(at, |(_, since, _)| since);
        *failure = Some((reason, since, at));
        cell.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn refreshed(&self, runner: RunnerId, at: OffsetDateTime, by: &str) {
        let cell = self.cell(runner);
        *cell.refreshed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((tether_store::to_ms(at), by.to_owned()));
    }

    pub fn forget(&self, runner: RunnerId) {
        self.cells
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&runner);
    }

    pub fn view(&self, runner: RunnerId) -> AuthHealth {
        let Some(cell) = self
            .cells
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&runner)
            .cloned()
        else {
            return AuthHealth {
                summary: "no token requests since the control plane started".into(),
                ..Default::default()
            };
        };
        let failed = cell.failed.load(Ordering::Relaxed);
        let failure = *cell.failure.lock().unwrap_or_else(|p| p.into_inner());
        let refreshed = cell
            .refreshed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let success = match cell.last_success_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(tether_store::from_ms(ms)),
        };
        let mut summary = match (failed, failure) {
            (n, Some((reason, since, _))) if n > 0 => format!(
                "{n} failed token request{} since {}: {}",
                if n == 1 { "" } else { "s" },
                clock(tether_store::from_ms(since)),
                describe(reason)
            ),
            _ => match success {
                Some(t) => format!("token requests succeed (last at {})", clock(t)),
                None => "no token requests since the control plane started".to_owned(),
            },
        };
        if let Some((at, by)) = &refreshed {
            summary.push_str(&format!(
                "; the secret was refreshed at {} by {by}",
                clock(tether_store::from_ms(*at))
            ));
        }
        AuthHealth {
            failed_token_requests: failed,
            last_failure_reason: failure.map(|(r, _, _)| r.to_owned()),
            last_failure_at: failure.map(|(_, _, at)| tether_store::from_ms(at)),
            last_success_at: success,
            summary,
        }
    }
}

impl crate::events::Subscriber for AuthHealthTracker {
    fn deliver(&self, event: &crate::events::Event, _: &mut crate::events::Delivered) {
        use crate::events::{CredentialChange, Event};
        if let Event::CredentialsChanged { runner, change, .. } = event {
            match change {
                CredentialChange::Revoked { at, by, .. }
                | CredentialChange::Rotated { at, by, .. } => self.refreshed(runner.id, *at, by),
                CredentialChange::RetiringRevoked { .. } => {}
            }
        }
    }
}

fn describe(reason: &str) -> &'static str {
    match reason {
        "wrong_secret" => "wrong or revoked client secret",
        "malformed_secret" => "malformed client secret (truncated or altered)",
        "unknown_client" => "unknown client id",
        _ => "client authentication failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_until_a_success_and_mention_the_refresh() {
        let t = AuthHealthTracker::default();
        let r = RunnerId::new();
        assert_eq!(t.view(r).failed_token_requests, 0);
        let at = OffsetDateTime::now_utc();
        t.succeeded(r, at);
        t.refreshed(r, at, "user:alice");
        t.refused(r, "wrong_secret", at);
        t.refused(r, "wrong_secret", at);
        let v = t.view(r);
        assert_eq!(v.failed_token_requests, 2);
        assert_eq!(v.last_failure_reason.as_deref(), Some("wrong_secret"));
        assert!(
            v.summary.starts_with("2 failed token requests since "),
            "{}",
            v.summary
        );
        assert!(
            v.summary.contains("wrong or revoked client secret"),
            "{}",
            v.summary
        );
        assert!(v.summary.contains("refreshed at") && v.summary.ends_with("by user:alice"));
        t.succeeded(r, at);
        let v = t.view(r);
        assert_eq!(v.failed_token_requests, 0);
        assert!(v.last_failure_reason.is_none());
        assert!(
            v.summary.starts_with("token requests succeed"),
            "{}",
            v.summary
        );
    }
}
