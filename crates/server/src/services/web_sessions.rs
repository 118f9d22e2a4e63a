//! Browser sessions of the web UI, as the store keeps them: looked up by the verifier of the id
//! the session cookie carries (the cookie and CSRF handling are the web edge's).

use tether_domain::Verifier;
use tether_store::{NewWebSession, UserRecord, WebSessionRecord};
use time::{Duration, OffsetDateTime};

use super::audit::{self, AuditEventExt};
use super::auth::Caller;
use super::{ServiceError, StoreContext as _};
use crate::state::AppState;

/// The live session with this verifier, and its user.
pub async fn find(
    state: &AppState,
    verifier: &Verifier,
) -> Result<Option<WebSessionRecord>, ServiceError> {
    state
        .store
        .web_session(verifier, OffsetDateTime::now_utc())
        .await
        .op("web_session")
}

/// Records a new session of `user` for `ttl` (the user just logged in), audited.
pub async fn open(
    state: &AppState,
    user: &UserRecord,
    verifier: Verifier,
    ttl: Duration,
    source_ip: Option<String>,
) -> Result<(), ServiceError> {
    let now = OffsetDateTime::now_utc();
    let ev = audit::event(format!("user:{}", user.username), "user.logged_in").source_ip(source_ip);
    let session = NewWebSession {
        verifier,
        user_id: user.id,
        created_at: now,
        expires_at: now + ttl,
    };
    state
        .store
        .create_web_session(session, ev)
        .await
        .op("create_web_session")?;
    tracing::info!(user = %user.username, "logged in to the web UI");
    Ok(())
}

/// Ends the caller's session (logout), audited.
pub async fn close(
    state: &AppState,
    caller: &Caller,
    verifier: &Verifier,
) -> Result<(), ServiceError> {
    let ev = audit::event(caller.actor(), "user.logged_out").source_ip(caller.source_ip.clone());
    state
        .store
        .delete_web_session(verifier, ev)
        .await
        .op("delete_web_session")?;
    Ok(())
}
