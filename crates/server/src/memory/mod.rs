//! In-memory state the request paths share, below the services: the OAuth client cache, revoked
//! access tokens, auth health and token-traffic aggregates. Each keeps its own invariant (see the
//! module docs) and learns of committed changes as an [`crate::events::Subscriber`]; none of them
//! calls a service or the HTTP layer.

pub mod clients;
pub mod health;
pub mod revoked;
pub mod usage;
