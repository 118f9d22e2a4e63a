//! Who is calling the API: a human's personal API token resolved to its user and role.

use tether_domain::{ApiToken, Role, UserId, Username};

use super::ServiceError;
use crate::services::StoreContext as _;
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: UserId,
    pub username: Username,
    pub role: Role,
    pub source_ip: Option<String>,
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

/// Resolves a presented bearer token; `None` if it is malformed or unknown.
pub async fn resolve_api_token(
    state: &AppState,
    presented: &str,
) -> Result<Option<(UserId, Username, Role)>, ServiceError> {
    let Ok(token) = ApiToken::parse(presented) else {
        return Ok(None);
    };
    let verifier = state.pepper.verifier(token.expose());
    let user = state
        .store
        .user_by_token(&verifier)
        .await
        .op("user_by_token")?;
    Ok(user.map(|u| (u.id, u.username, u.role)))
}
