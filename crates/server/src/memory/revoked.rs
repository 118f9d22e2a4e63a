//! Access tokens revoked before their expiry (RFC 7009), kept in memory for the hot path and in
//! the store for restarts; an entry is dropped once its token would have expired anyway.

use std::collections::HashMap;
use std::sync::RwLock;

/// Ids (`jti`) of access tokens revoked before expiry, with their expiry (unix seconds).
#[derive(Debug, Default)]
pub struct RevokedTokens {
    set: RwLock<HashMap<String, i64>>,
}

impl RevokedTokens {
    pub fn contains(&self, jti: &str) -> bool {
        self.set
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(jti)
    }

    pub fn insert(&self, jti: String, exp: i64) {
        self.set
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(jti, exp);
    }

    pub fn load(&self, revoked: Vec<(String, i64)>) {
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        set.extend(revoked);
    }

    /// Forgets tokens that have expired anyway.
    pub fn purge(&self, now: i64) {
        self.set
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, exp| *exp > now);
    }
}

impl crate::events::Subscriber for RevokedTokens {
    fn deliver(&self, event: &crate::events::Event, _: &mut crate::events::Delivered) {
        if let crate::events::Event::AccessTokenRevoked { jti, expires_at } = event {
            self.insert(jti.clone(), *expires_at);
        }
    }
}
