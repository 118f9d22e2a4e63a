//! First start: create the admin user and an API token so someone can log in at all.

use tether_domain::{base62_password, ApiToken, Password, Role, UserId, Username};
use tether_store::{NewApiToken, NewUser};
use time::OffsetDateTime;

use super::audit;
use super::users::hash_password;
use crate::services::StoreContext as _;
use crate::state::AppState;

pub const ADMIN_USERNAME: &str = "admin";

/// What the first start created, for printing once. Values that were supplied by the operator are
/// not echoed back.
#[derive(Debug)]
pub struct Bootstrapped {
    pub username: String,
    pub generated_password: Option<Password>,
    pub generated_token: Option<ApiToken>,
}

/// Creates the admin if the database has no users. `None` when users already existed.
pub async fn ensure_admin(state: &AppState) -> anyhow::Result<Option<Bootstrapped>> {
    let (password, generated_password) = match &state.config.admin_password {
        Some(p) => (p.clone(), None),
        None => {
            let p = Password::parse(&base62_password())?;
            (p.clone(), Some(p))
        }
    };
    let (token, generated_token) = match &state.config.bootstrap_token {
        Some(t) => (t.clone(), None),
        None => {
            let t = ApiToken::generate();
            (t.clone(), Some(t))
        }
    };
    let admin_id = UserId::new();
    let now = OffsetDateTime::now_utc();
    let admin = NewUser {
        id: admin_id,
        username: Username::parse(ADMIN_USERNAME)?,
        password_hash: hash_password(state, password).await?,
        role: Role::Admin,
        created_at: now,
    };
    let api_token = NewApiToken {
        id: tether_domain::ApiTokenId::new(),
        user_id: admin_id,
        name: "bootstrap".to_owned(),
        verifier: state.pepper.verifier(token.expose()),
        created_at: now,
        expires_at: None,
    };
    let ev = audit::event("system", "admin.bootstrapped");
    if state
        .store
        .bootstrap_admin(admin, api_token, ev)
        .await
        .op("bootstrap_admin")?
    {
        tracing::info!(
            user = ADMIN_USERNAME,
            "created the first admin user and API token"
        );
        Ok(Some(Bootstrapped {
            username: ADMIN_USERNAME.to_owned(),
            generated_password,
            generated_token,
        }))
    } else {
        Ok(None)
    }
}
