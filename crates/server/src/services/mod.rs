//! Use cases of the control plane. Handlers parse input into domain types and call these; these
//! talk to the store and the in-memory caches and return domain or store records.

pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod credentials;
pub mod oauth;
pub mod pipelines;
pub mod runners;
pub mod runs;
pub mod usage;
pub mod users;

use tether_store::StoreError;

/// Errors of the service layer. The HTTP layer maps each to one problem type.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{what} not found")]
    NotFound {
        what: &'static str,
        code: &'static str,
        detail: String,
    },
    #[error("conflict")]
    Conflict { code: &'static str, detail: String },
    #[error("forbidden")]
    Forbidden { detail: String },
    /// Existed once, is gone for good (a closed reveal window).
    #[error("gone")]
    Gone { code: &'static str, detail: String },
    /// Refused while runs are in progress (unless forced); the runs are listed for the caller.
    #[error("runs in progress")]
    RunsInProgress {
        detail: String,
        runs: Vec<tether_store::RunRecord>,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Internal(anyhow::Error::new(e))
    }
}

/// A time as RFC 3339 text, for audit event details.
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
