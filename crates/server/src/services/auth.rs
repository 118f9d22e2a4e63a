//! Who is calling the API: a human's personal API token resolved to its user and role.

use tether_domain::{ApiToken, ApiTokenId, Role, UserId, Username};

use super::ServiceError;
use crate::services::StoreContext as _;
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: UserId,
    pub username: Username,
    pub role: Role,
    pub source_ip: Option<String>,
    /// The API token the call came with; `None` for the web UI (a session cookie).
    pub token_id: Option<ApiTokenId>,
}

impl Caller {
    /// The audit actor string for this caller.
    pub fn actor(&self) -> String {
        format!("user:{}", self.username)
    }

    pub fn require(&self, needed: Role) -> Result<(), ServiceError> {
        if self.role.allows(needed) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden {
                detail: format!(
                    "this action needs the {needed} role; {} has the {} role",
                    self.username, self.role
                ),
            })
        }
    }
}

/// The owner of a presented API token.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub user_id: UserId,
    pub username: Username,
    pub role: Role,
    pub token_id: ApiTokenId,
}

/// Resolves a presented bearer token; `None` if it is malformed, unknown, revoked or expired.
/// A use is noted in memory (`memory::usage`) and written with the next flush.
pub async fn resolve_api_token(
    state: &AppState,
    presented: &str,
) -> Result<Option<TokenOwner>, ServiceError> {
    let Ok(token) = ApiToken::parse(presented) else {
        return Ok(None);
    };
    let verifier = state.pepper.verifier(token.expose());
    let now = time::OffsetDateTime::now_utc();
    let found = state
        .store
        .user_by_token(&verifier, now)
        .await
        .op("user_by_token")?;
    Ok(found.map(|(u, token_id)| {
        state.usage.token_used(token_id, now);
        TokenOwner {
            user_id: u.id,
            username: u.username,
            role: u.role,
            token_id,
        }
    }))
}
