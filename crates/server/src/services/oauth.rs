//! OAuth 2.0 client credentials (RFC 6749 §4.4), revocation (RFC 7009) and introspection (RFC 7662).
//! The hot path (authenticate, sign) touches only memory; the database sees the first token of
//! each credential generation and periodic, aggregated usage.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::json;
use tether_domain::{random_bytes, ClientId, ClientSecret};
use time::OffsetDateTime;

use super::audit::{self, AuditEventExt};
use crate::jwt::Claims;
use crate::memory::clients::CachedClient;
use crate::services::{ServiceError, StoreContext as _};
use crate::state::AppState;

/// Why client authentication failed. The reason is logged and counted, never told to the client
/// beyond `invalid_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthFailure {
    MalformedClientId,
    MalformedSecret,
    UnknownClient,
    WrongSecret,
    /// The credentials could not be read (the database is unreachable): neither accepted nor
    /// refused, the client should retry.
    Unavailable,
}

impl ClientAuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            ClientAuthFailure::MalformedClientId => "malformed_client_id",
            ClientAuthFailure::MalformedSecret => "malformed_secret",
            ClientAuthFailure::UnknownClient => "unknown_client",
            ClientAuthFailure::WrongSecret => "wrong_secret",
            ClientAuthFailure::Unavailable => "unavailable",
        }
    }

    /// A sentence for the `error_description`; says what to check without confirming which part
    /// matched: a malformed secret reads the same whether the client id exists or not, so the
    /// answer does not tell which client ids are real (the runner checks the format itself).
    pub fn description(self) -> &'static str {
        match self {
            ClientAuthFailure::MalformedClientId => "client_id is not a tether client id",
            ClientAuthFailure::MalformedSecret
            | ClientAuthFailure::UnknownClient
            | ClientAuthFailure::WrongSecret => {
                "client authentication failed: unknown client, or a wrong, malformed, revoked or expired client_secret"
            }
            ClientAuthFailure::Unavailable => {
                "the control plane cannot check credentials right now; retry shortly"
            }
        }
    }
}

/// Checks a client id and secret against the runner's accepted credential generations.
pub async fn authenticate_client(
    state: &AppState,
    client_id: &str,
    client_secret: &str,
    source_ip: Option<String>,
) -> Result<(Arc<CachedClient>, u32), ClientAuthFailure> {
    let result = try_authenticate(state, client_id, client_secret).await;
    if let Err((failure, client)) = &result {
        state.metrics.refused(failure.reason());
        let runner = client
            .as_ref()
            .map(|c| (c.runner_id, c.runner_name.as_str().to_owned()));
        if let Some(c) = client {
            state
                .health
                .refused(c.runner_id, failure.reason(), OffsetDateTime::now_utc());
        }
        state
            .usage
            .refused(Some(client_id), runner, failure.reason(), source_ip);
        // Only a well-formed client id is logged: a malformed one may be a secret pasted in the wrong field.
        let logged_id = client.as_ref().map_or("-", |c| c.client_id.as_str());
        tracing::debug!(
            client_id = logged_id,
            reason = failure.reason(),
            "client authentication failed"
        );
    }
    result.map_err(|(f, _)| f)
}

async fn try_authenticate(
    state: &AppState,
    client_id: &str,
    client_secret: &str,
) -> Result<(Arc<CachedClient>, u32), (ClientAuthFailure, Option<Arc<CachedClient>>)> {
    let id =
        ClientId::parse(client_id).map_err(|_| (ClientAuthFailure::MalformedClientId, None))?;
    let client = match state
        .clients
        .get(&id, state.events.trusted(), || {
            state.store.client_by_id(&id)
        })
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => return Err((ClientAuthFailure::UnknownClient, None)),
        Err(e) => {
            tracing::error!(error = %e, "loading client credentials failed");
            return Err((ClientAuthFailure::Unavailable, None));
        }
    };
    let Ok(secret) = ClientSecret::parse(client_secret) else {
        return Err((ClientAuthFailure::MalformedSecret, Some(client)));
    };
    let candidate = state.pepper.verifier(secret.expose());
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let generation = client.authenticate(&candidate, now).map(|g| g.generation.0);
    match generation {
        Some(g) => Ok((client, g)),
        None => Err((ClientAuthFailure::WrongSecret, Some(client))),
    }
}

/// Mints an access token for an authenticated client and notes the use.
pub fn issue_token(
    state: &AppState,
    client: &Arc<CachedClient>,
    generation: u32,
) -> (String, Claims) {
    let now = OffsetDateTime::now_utc();
    let iat = now.unix_timestamp();
    let claims = Claims {
        iss: state.signer.issuer.clone(),
        sub: client.runner_id.to_string(),
        aud: state.signer.audience.clone(),
        client_id: client.client_id.as_str().to_owned(),
        gen: generation,
        jti: B64.encode(random_bytes::<16>()),
        iat,
        exp: iat + state.config.access_token_ttl.as_secs() as i64,
    };
    let token = state.signer.sign(&claims);
    state.metrics.tokens_issued.inc();
    state.health.succeeded(client.runner_id, now);
    if let Some(g) = client.generation(generation) {
        g.note_use(tether_store::to_ms(now));
        if !g.first_token_recorded.swap(true, Ordering::Relaxed) {
            record_first_token(state, client, generation, now);
        }
    }
    (token, claims)
}

/// Notes a successful use of a generation other than a token request (a session opened or
/// re-authenticated with a token of it), for "last used".
pub fn note_use(client: &CachedClient, generation: u32) {
    if let Some(g) = client.generation(generation) {
        g.note_use(tether_store::to_ms(OffsetDateTime::now_utc()));
    }
}

/// The first token of a generation is audited (it proves the new secret reached the runner).
/// Written off the request path.
fn record_first_token(
    state: &AppState,
    client: &Arc<CachedClient>,
    generation: u32,
    at: OffsetDateTime,
) {
    let state = state.clone();
    let client = client.clone();
    tokio::spawn(async move {
        let ev = audit::event(
            format!("client:{}", client.client_id),
            "credential.first_token",
        )
        .runner(client.runner_id, client.runner_name.as_str())
        .detail(json!({"generation": generation}));
        let res = state
            .store
            .record_first_token(
                client.runner_id,
                tether_domain::Generation(generation),
                at,
                ev,
            )
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, runner.id = %client.runner_id, "recording first token failed");
        }
    });
}

/// A valid, unrevoked access token whose credential generation is still accepted: `Ok(None)` for
/// a token that is not, `Err` when this replica cannot tell (it does not trust its caches and the
/// database does not answer: [`ServiceError::Unavailable`]) — never accepted then, but not
/// refused either: the caller answers 503 so the client retries.
pub async fn validate_access_token(
    state: &AppState,
    token: &str,
) -> Result<Option<(Claims, Arc<CachedClient>)>, ServiceError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let Ok(claims) = state.signer.verify(token, now) else {
        return Ok(None);
    };
    if state.revoked.contains(&claims.jti) {
        return Ok(None);
    }
    if !state.events.trusted() {
        // Another replica may have revoked it while this one was not listening.
        let now = OffsetDateTime::now_utc();
        let revoked = state
            .store
            .access_token_revoked(&claims.jti, now)
            .await
            .op("access_token_revoked")?;
        if revoked {
            return Ok(None);
        }
    }
    let Ok(client_id) = ClientId::parse(&claims.client_id) else {
        return Ok(None);
    };
    let client = state
        .clients
        .get(&client_id, state.events.trusted(), || {
            state.store.client_by_id(&client_id)
        })
        .await
        .op("client_by_id")?;
    let Some(client) = client else {
        return Ok(None);
    };
    if client.runner_id.to_string() != claims.sub {
        return Ok(None);
    }
    let accepted = client
        .generation(claims.gen)
        .is_some_and(|g| g.accepts(now));
    Ok(accepted.then_some((claims, client)))
}

/// Revokes an access token (RFC 7009) until it would have expired.
pub async fn revoke_access_token(
    state: &AppState,
    claims: &Claims,
    client: &CachedClient,
) -> anyhow::Result<()> {
    let ev = audit::event(
        format!("client:{}", client.client_id),
        "oauth.token_revoked",
    )
    .runner(client.runner_id, client.runner_name.as_str())
    .detail(json!({"jti": claims.jti, "generation": claims.gen}));
    state
        .store
        .revoke_access_token(
            &claims.jti,
            OffsetDateTime::from_unix_timestamp(claims.exp).unwrap_or(OffsetDateTime::UNIX_EPOCH),
            ev,
        )
        .await
        .op("revoke_access_token")?;
    state
        .events
        .publish(crate::events::Event::AccessTokenRevoked {
            jti: claims.jti.clone(),
            expires_at: claims.exp,
        })
        .await;
    Ok(())
}
