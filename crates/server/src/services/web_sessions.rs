//! Browser sessions of the web UI, as the store keeps them: looked up by the verifier of the id
//! the session cookie carries (the cookie and CSRF handling are the web edge's).

use tether_domain::{Username, Verifier};
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

/// Refused logins: after [`MAX_LOGIN_FAILURES`] for one username from one address within
/// [`LOGIN_WINDOW`], further attempts from there are refused (429) until the window has passed,
/// without checking the password. The real user logging in from another address is not locked
/// out, and a successful login clears the count. Counted in the database, so a lockout on one
/// replica holds on every replica, and nothing evicts a count before its window has passed: no
/// number of failures with other usernames lifts a lock. Only valid usernames are counted (the
/// type says so), which bounds what one failure can store.
pub const MAX_LOGIN_FAILURES: u32 = 5;
pub const LOGIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// How long this pair must wait before it may try again, if it is locked out.
pub async fn login_locked_for(
    state: &AppState,
    username: &Username,
    ip: Option<&str>,
) -> Result<Option<std::time::Duration>, ServiceError> {
    let now = OffsetDateTime::now_utc();
    let Some((failures, first_at)) = state
        .store
        .login_failures(username.as_str(), ip.unwrap_or(""), now - LOGIN_WINDOW)
        .await
        .op("login_failures")?
    else {
        return Ok(None);
    };
    let left = (first_at + LOGIN_WINDOW) - now;
    Ok((failures >= MAX_LOGIN_FAILURES && left.is_positive())
        .then(|| std::time::Duration::try_from(left).unwrap_or_default()))
}

pub async fn login_failed(
    state: &AppState,
    username: &Username,
    ip: Option<&str>,
) -> Result<(), ServiceError> {
    let now = OffsetDateTime::now_utc();
    state
        .store
        .record_login_failure(username.as_str(), ip.unwrap_or(""), now, now - LOGIN_WINDOW)
        .await
        .op("record_login_failure")?;
    Ok(())
}

pub async fn login_succeeded(
    state: &AppState,
    username: &Username,
    ip: Option<&str>,
) -> Result<(), ServiceError> {
    state
        .store
        .clear_login_failures(username.as_str(), ip.unwrap_or(""))
        .await
        .op("clear_login_failures")
}
