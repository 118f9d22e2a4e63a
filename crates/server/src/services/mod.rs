//! Use cases of the control plane. Handlers parse input into domain types and call these; these
//! check the caller's role, talk to the store, publish what a committed change means for memory
//! (`crate::events`), and return domain types, store records or their own read models.
//!
//! Errors, layer by layer:
//! - the store returns [`StoreError`] (`NotFound`, `Conflict(Conflict)`, `Corrupt`, `Unavailable`,
//!   `Backend`); a backend never leaks a driver type;
//! - services turn the expected ones into a [`ServiceError`] with a stable code (`Conflict::RunnerName`
//!   → `runner_name_taken`, a runner deleted meanwhile → `runner_not_found`) and every other one
//!   into `ServiceError::Internal` (or `Unavailable`, when the database cannot be reached: worth
//!   a retry) through [`StoreContext::op`], which names the store operation;
//!   there is no blanket conversion, so no store call goes without it;
//! - the HTTP edge maps each `ServiceError` to one problem+json type (`http::error::ApiError`) or
//!   one page (`http::web::WebError`); an internal error is logged once, inside the request span
//!   (method, route, request id), with its whole chain, and answered without detail.

pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod credentials;
pub mod oauth;
pub mod passwords;
pub mod pipelines;
pub mod runners;
pub mod runs;
pub mod usage;
pub mod users;
pub mod web_sessions;

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
    /// The database cannot be reached right now; the caller may retry.
    #[error("temporarily unavailable")]
    Unavailable(anyhow::Error),
    /// Too many password checks at once (see `passwords`); the caller may retry shortly.
    #[error("busy")]
    Busy { detail: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Names the store operation a failure came from, so the one internal-error line says what failed
/// (`store.refresh_credentials: …`). Every store call in the services goes through it: there is
/// deliberately no `From<StoreError>` for [`ServiceError`].
pub(crate) trait StoreContext<T> {
    fn op(self, operation: &'static str) -> Result<T, ServiceError>;
}

impl<T> StoreContext<T> for Result<T, StoreError> {
    fn op(self, operation: &'static str) -> Result<T, ServiceError> {
        self.map_err(|e| {
            let unavailable = matches!(e, StoreError::Unavailable(_));
            let e = anyhow::Error::new(e).context(format!("store.{operation}"));
            if unavailable {
                ServiceError::Unavailable(e)
            } else {
                ServiceError::Internal(e)
            }
        })
    }
}

/// A time as RFC 3339 text, for audit event details.
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_failure_names_its_operation_in_the_error_chain() {
        let failed: Result<(), StoreError> = Err(StoreError::Corrupt("runners.id: bad".into()));
        let Err(ServiceError::Internal(e)) = failed.op("list_runners") else {
            panic!("an unexpected store error is internal");
        };
        let chain = format!("{e:#}");
        assert!(
            chain.starts_with("store.list_runners: ") && chain.contains("runners.id: bad"),
            "{chain}"
        );
    }
}
