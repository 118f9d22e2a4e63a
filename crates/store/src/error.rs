//! The store's one error type. Backends map their driver errors into it (constraint violations by
//! constraint, never by message text at the call site); callers never see a driver type.

use std::error::Error as StdError;

/// Which uniqueness rule a write broke, whatever the backend calls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// Another runner has this name.
    RunnerName,
    /// Another runner has this client id.
    ClientId,
    /// Another user has this username.
    Username,
    /// An API token with this verifier exists.
    ApiToken,
    /// The runner would have two active credential generations.
    ActiveGeneration,
    /// A rule this enum does not name yet (the backend's constraint name).
    Other(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken.
    #[error("conflicts with an existing row ({0:?})")]
    Conflict(Conflict),
    /// A reference points at a row that does not exist.
    #[error("refers to a row that does not exist")]
    NotFound,
    /// Stored data no longer parses: a bug or tampering, never bad input.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database URL names no backend this build has.
    #[error("{0}")]
    InvalidUrl(String),
    /// The database cannot be reached right now (connection lost, no free connection in time):
    /// worth retrying, unlike [`StoreError::Backend`].
    #[error("the database is unavailable")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    #[error("database error")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
}
