use std::error::Error as StdError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; `constraint` is `table.column` (e.g. `runners.name`).
    #[error("conflicts with an existing row ({constraint})")]
    Conflict { constraint: String },
    /// A reference points at a row that does not exist.
    #[error("refers to a row that does not exist")]
    NotFound,
    /// Stored data no longer parses: a bug or tampering, never bad input.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
}
