//! The cross-replica event channel on PostgreSQL: `NOTIFY tether_events` to send, a dedicated
//! `LISTEN` connection to receive. PostgreSQL delivers a notification to every listening session
//! of the database, in commit order, but only while that session is connected: a listener that
//! reconnects has missed whatever was sent meanwhile, and [`EventListener::recv`] says so
//! (`Ok(None)`) so that its owner can resync.

use async_trait::async_trait;
use sqlx::postgres::PgListener;
use sqlx::PgPool;

use super::backend;
use crate::{EventChannel, EventListener, StoreResult};

/// The one channel every replica listens on.
pub const CHANNEL: &str = "tether_events";

/// Payloads are well under PostgreSQL's limit (8,000 bytes); a larger one is a bug.
pub const MAX_PAYLOAD: usize = 7_000;

#[derive(Debug, Clone)]
pub(super) struct PgEventChannel {
    pub(super) pool: PgPool,
}

#[async_trait]
impl EventChannel for PgEventChannel {
    async fn send(&self, payload: &str) -> StoreResult<()> {
        if payload.len() > MAX_PAYLOAD {
            return Err(crate::StoreError::Corrupt(format!(
                "event payload of {} bytes exceeds {MAX_PAYLOAD}",
                payload.len()
            )));
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn listen(&self) -> StoreResult<Box<dyn EventListener>> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(backend)?;
        // A lost connection is reported, never silently re-established: the owner must resync.
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await.map_err(backend)?;
        Ok(Box::new(PgEventListener(listener)))
    }
}

struct PgEventListener(PgListener);

#[async_trait]
impl EventListener for PgEventListener {
    async fn recv(&mut self) -> StoreResult<Option<String>> {
        match self.0.try_recv().await {
            Ok(Some(n)) => Ok(Some(n.payload().to_owned())),
            Ok(None) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }
}
