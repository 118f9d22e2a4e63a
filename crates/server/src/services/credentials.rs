//! The runner credential lifecycle: refresh (revoke or overlap), reveal, ending an overlap, and
//! the periodic expiry of retiring generations and of secrets awaiting reveal.
//!
//! Every change is one store transaction with its audit event; the in-memory effects (the client
//! cache, cutting sessions, telling instances) follow from one event published after the commit,
//! so a crash in between leaves the database right and the effects moot (a restart has no sessions
//! and an empty cache).

use std::sync::Arc;

use serde_json::json;
use tether_domain::{ClientSecret, Generation, Role, RotationId, RunState, RunnerId, RunnerRef};
use tether_store::{
    NewGeneration, Refreshed, RetiringRevoked, RotationMode, RunFilter, RunnerRecord, StoreError,
};
use time::OffsetDateTime;

use super::audit::{self, AuditEventExt};
use super::{rfc3339, ServiceError};
use crate::clock::clock;
use crate::events::{CredentialChange, Event};
use crate::services::auth::Caller;
use crate::services::StoreContext as _;
use crate::state::AppState;

/// How a refresh treats the previous generation (the rule and its bounds are the domain's).
pub use tether_domain::RefreshMode as Mode;

#[derive(Debug)]
pub struct RefreshOutcome {
    pub runner: RunnerRecord,
    pub secret: ClientSecret,
    pub refreshed: Refreshed,
    pub mode: Mode,
    pub reveal_until: OffsetDateTime,
    pub previous_expires_at: Option<OffsetDateTime>,
    pub sessions_closed: usize,
}

/// Makes a new client secret for a runner. A revoking refresh disconnects the runner, so it is
/// refused with the list of runs while runs are running on it, unless `force`; an overlap refresh
/// cuts nothing and always proceeds.
pub async fn refresh(
    state: &AppState,
    caller: &Caller,
    key: &RunnerRef,
    mode: Mode,
    force: bool,
    rotation_id: Option<&RotationId>,
) -> Result<RefreshOutcome, ServiceError> {
    caller.require(Role::Operator)?;
    let runner = super::runners::find(state, key).await?;
    if !force && mode == Mode::Revoke {
        let running = state
            .store
            .list_runs(RunFilter {
                runner_id: Some(runner.id),
                state: Some(RunState::Running),
                before: None,
                limit: 100,
            })
            .await
            .op("list_runs")?;
        if !running.is_empty() {
            return Err(ServiceError::RunsInProgress {
                detail: format!(
                    "{} run(s) in progress on runner '{}'; a revoking refresh would disconnect it mid-run. \
                     Wait for them to finish, refresh with \"mode\": \"overlap\" (nothing is disconnected), \
                     or send \"force\": true to refresh anyway",
                    running.len(),
                    runner.name
                ),
                runs: running,
            });
        }
    }
    let now = OffsetDateTime::now_utc();
    let secret = ClientSecret::generate();
    let reveal_until = now + state.config.reveal_window;
    let previous_expires_at = match mode {
        Mode::Revoke => None,
        Mode::Overlap { grace } => Some(now + grace),
    };
    let new = NewGeneration {
        runner_id: runner.id,
        verifier: state.pepper.verifier(secret.expose()),
        sealed_secret: state
            .sealer
            .seal(secret.expose().as_bytes(), &aad(runner.id)),
        reveal_until,
        mode: match previous_expires_at {
            None => RotationMode::Revoke,
            Some(t) => RotationMode::Overlap { expires_at: t },
        },
        at: now,
        created_by: caller.actor(),
    };
    let ev = |r: &Refreshed| {
        audit::event(caller.actor(), "credentials.refreshed")
            .runner(runner.id, runner.name.as_str())
            .source_ip(caller.source_ip.clone())
            .detail(json!({
                "mode": mode.as_str(),
                "client_id": runner.client_id.as_str(),
                "forced": force,
                "previous_expires_at": previous_expires_at.map(rfc3339),
                "rotation_id": rotation_id.map(RotationId::as_str),
                "generation": r.generation.0,
                "previous_generation": r.previous.0,
                "revoked_generations": r.revoked.iter().map(|g| g.0).collect::<Vec<_>>(),
            }))
    };
    let refreshed = match state.store.refresh_credentials(new, &ev).await {
        Ok(r) => r,
        // Every runner has an active generation, so this is a runner deleted meanwhile.
        Err(StoreError::NotFound) => return Err(deleted_meanwhile(&runner)),
        Err(e) => return Err(e).op("refresh_credentials"),
    };
    let generation = refreshed.generation;
    let change = match mode {
        Mode::Revoke => CredentialChange::Revoked {
            active: generation,
            reason: format!(
                "credentials refreshed at {} by {}; apply the new client_secret and restart the runner",
                clock(now),
                caller.actor()
            ),
            at: now,
            by: caller.actor(),
        },
        Mode::Overlap { .. } => CredentialChange::Rotated {
            active: generation,
            at: now,
            by: caller.actor(),
        },
    };
    let runner = Arc::new(runner);
    let delivered = state
        .events
        .publish(Event::CredentialsChanged {
            runner: runner.clone(),
            version: refreshed.version,
            change,
        })
        .await;
    let closed = delivered.sessions_closed;
    if mode != Mode::Revoke {
        tracing::info!(runner.id = %runner.id, %generation, instances = delivered.instances_told, "told instances about the new credential generation");
    }
    audit_cuts(state, &runner, &closed, "credentials refreshed (revoke)").await?;
    let runner = Arc::unwrap_or_clone(runner);
    tracing::info!(runner.id = %runner.id, runner.name = %runner.name, %generation, mode = mode.as_str(),
        sessions_closed = closed.len(), "runner credentials refreshed");
    Ok(RefreshOutcome {
        runner,
        secret,
        refreshed,
        mode,
        reveal_until,
        previous_expires_at,
        sessions_closed: closed.len(),
    })
}

/// The newest secret again, while its reveal window is open.
pub async fn reveal(
    state: &AppState,
    caller: &Caller,
    key: &RunnerRef,
) -> Result<(RunnerRecord, ClientSecret, Generation, OffsetDateTime), ServiceError> {
    caller.require(Role::Operator)?;
    let runner = super::runners::find(state, key).await?;
    let now = OffsetDateTime::now_utc();
    let closed = || {
        ServiceError::Gone {
        code: "reveal_window_closed",
        detail: format!(
            "no secret of runner '{}' can be revealed: the reveal window closed (or the credentials were never refreshed). \
             Refresh the credentials again to get a new secret",
            runner.name
        ),
    }
    };
    let Some(sealed) = state
        .store
        .sealed_secret(runner.id, now)
        .await
        .op("sealed_secret")?
    else {
        return Err(closed());
    };
    let plain = state
        .sealer
        .open(&sealed.sealed, &aad(runner.id))
        .and_then(|p| String::from_utf8(p).ok())
        .and_then(|p| ClientSecret::parse(&p).ok())
        .ok_or_else(|| {
            ServiceError::Internal(anyhow::anyhow!(
                "the sealed secret of runner {} does not open with this server's master key",
                runner.id
            ))
        })?;
    let ev = audit::event(caller.actor(), "credentials.revealed")
        .runner(runner.id, runner.name.as_str())
        .source_ip(caller.source_ip.clone())
        .detail(json!({"generation": sealed.generation.0}));
    state.store.append_audit(ev).await.op("append_audit")?;
    Ok((runner, plain, sealed.generation, sealed.reveal_until))
}

/// What ending an overlap did.
#[derive(Debug)]
pub struct RevokedPrevious {
    pub runner: RunnerRecord,
    /// The generations revoked now (none: there was no overlap, and nothing changed).
    pub revoked: Vec<Generation>,
    pub sessions_closed: usize,
}

/// Ends an overlap now: retiring generations stop working and their sessions are closed.
pub async fn revoke_previous(
    state: &AppState,
    caller: &Caller,
    key: &RunnerRef,
    rotation_id: Option<&RotationId>,
) -> Result<RevokedPrevious, ServiceError> {
    caller.require(Role::Operator)?;
    let runner = super::runners::find(state, key).await?;
    let ev = |r: &RetiringRevoked| {
        audit::event(caller.actor(), "credentials.previous_revoked")
            .runner(runner.id, runner.name.as_str())
            .source_ip(caller.source_ip.clone())
            .detail(json!({
                "rotation_id": rotation_id.map(RotationId::as_str),
                "revoked_generations": r.revoked.iter().map(|g| g.0).collect::<Vec<_>>(),
            }))
    };
    let now = OffsetDateTime::now_utc();
    let revoked = match state
        .store
        .revoke_retiring(runner.id, now, &caller.actor(), &ev)
        .await
    {
        Ok(r) => r,
        Err(StoreError::NotFound) => return Err(deleted_meanwhile(&runner)),
        Err(e) => return Err(e).op("revoke_retiring"),
    };
    let runner = Arc::new(runner);
    let closed = state
        .events
        .publish(Event::CredentialsChanged {
            runner: runner.clone(),
            version: revoked.version,
            change: CredentialChange::RetiringRevoked {
                accepted_from: runner.generation,
            },
        })
        .await
        .sessions_closed;
    let runner = Arc::unwrap_or_clone(runner);
    audit_cuts(state, &runner, &closed, "previous credentials revoked").await?;
    tracing::info!(runner.id = %runner.id, revoked = ?revoked.revoked, sessions_closed = closed.len(), "previous credentials revoked");
    // Every retiring generation is revoked now.
    let runner = RunnerRecord {
        retiring_until: None,
        ..runner
    };
    Ok(RevokedPrevious {
        runner,
        revoked: revoked.revoked,
        sessions_closed: closed.len(),
    })
}

impl RevokedPrevious {
    /// "revoked generation 1; 2 sessions on it were closed", or that there was nothing to revoke.
    pub fn summary(&self) -> String {
        Self::describe(&self.revoked, self.sessions_closed).unwrap_or_else(|| {
            format!(
                "nothing to revoke: no generation older than {} of runner '{}' is still accepted",
                self.runner.generation, self.runner.name
            )
        })
    }

    /// "revoked generation 1; 2 sessions on it were closed"; `None` when nothing was revoked.
    pub fn describe(revoked: &[Generation], sessions_closed: usize) -> Option<String> {
        if revoked.is_empty() {
            return None;
        }
        let gens: Vec<String> = revoked.iter().map(|g| g.to_string()).collect();
        let (what, it) = match gens.len() {
            1 => ("generation", "it"),
            _ => ("generations", "them"),
        };
        let sessions = match sessions_closed {
            0 => format!("no session was using {it}"),
            1 => format!("1 session on {it} was closed"),
            n => format!("{n} sessions on {it} were closed"),
        };
        Some(format!("revoked {what} {}; {sessions}", gens.join(", ")))
    }
}

fn deleted_meanwhile(runner: &RunnerRecord) -> ServiceError {
    ServiceError::NotFound {
        what: "runner",
        code: "runner_not_found",
        detail: format!("runner '{}' was deleted", runner.name),
    }
}

/// The steps a client-driven rotation records.
pub const ROTATION_STEPS: [&str; 6] = [
    "started",
    "secret_written",
    "deployment_forced",
    "instances_moved",
    "completed",
    "failed",
];

/// Records one step of a rotation in the audit log (`rotation.<step>`). `started` makes the id.
pub async fn record_rotation_step(
    state: &AppState,
    caller: &Caller,
    key: &RunnerRef,
    step: &str,
    rotation_id: Option<RotationId>,
    detail: serde_json::Map<String, serde_json::Value>,
) -> Result<RotationId, ServiceError> {
    caller.require(Role::Operator)?;
    let runner = super::runners::find(state, key).await?;
    let id = rotation_id.unwrap_or_else(RotationId::generate);
    let mut detail = detail;
    detail.insert("rotation_id".into(), id.as_str().into());
    let ev = audit::event(caller.actor(), &format!("rotation.{step}"))
        .runner(runner.id, runner.name.as_str())
        .source_ip(caller.source_ip.clone())
        .detail(serde_json::Value::Object(detail));
    state.store.append_audit(ev).await.op("append_audit")?;
    Ok(id)
}

/// Retiring generations whose grace ended stop working, and reveal windows that closed lose their
/// ciphertext (run periodically).
pub async fn sweep(state: &AppState) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    for e in state
        .store
        .expire_retiring(now, &|e| {
            audit::event("system", "credential.grace_expired")
                .runner(e.runner_id, e.runner_name.as_str())
                .detail(json!({"generation": e.generation.0}))
        })
        .await
        .op("expire_retiring")?
    {
        // A runner deleted meanwhile has no sessions left to cut, and its deletion already
        // invalidated its client.
        let Some(runner) = state
            .store
            .runner_by_id(e.runner_id)
            .await
            .op("runner_by_id")?
        else {
            continue;
        };
        let runner = Arc::new(runner);
        let closed = state
            .events
            .publish(Event::CredentialsChanged {
                runner: runner.clone(),
                version: e.version,
                change: CredentialChange::RetiringRevoked {
                    accepted_from: Generation(e.generation.0 + 1),
                },
            })
            .await
            .sessions_closed;
        tracing::info!(runner.id = %e.runner_id, generation = e.generation.0, sessions_closed = closed.len(),
            "grace period ended; previous credentials revoked");
        audit_cuts(
            state,
            &runner,
            &closed,
            "grace period of the previous credentials ended",
        )
        .await?;
    }
    let purged = state
        .store
        .purge_sealed_secrets(now)
        .await
        .op("purge_sealed_secrets")?;
    if purged > 0 {
        tracing::debug!(
            secrets = purged,
            "reveal windows closed; sealed secrets deleted"
        );
    }
    Ok(())
}

async fn audit_cuts(
    state: &AppState,
    runner: &RunnerRecord,
    instances: &[String],
    why: &str,
) -> Result<(), ServiceError> {
    for instance in instances {
        let ev = audit::event("system", "session.cut")
            .runner(runner.id, runner.name.as_str())
            .target(format!("instance:{instance}"))
            .detail(json!({"reason": why, "close_code": tether_protocol::session::close_code::CREDENTIALS_REVOKED}));
        state.store.append_audit(ev).await.op("append_audit")?;
    }
    Ok(())
}

fn aad(runner: RunnerId) -> Vec<u8> {
    format!("tether-runner:{runner}").into_bytes()
}

/// A runner's credentials as the Credentials tab and `GET .../credentials` show them: every
/// generation (never a secret), the live runner with its rollout, and the reveal window.
#[derive(Debug)]
pub struct Overview {
    pub live: super::runners::LiveRunner,
    /// Newest first.
    pub generations: Vec<tether_store::CredentialRecord>,
    pub reveal_until: Option<OffsetDateTime>,
}

impl Overview {
    /// The newest generation if it came from a refresh (generation 1 comes with the runner).
    pub fn last_refresh(&self) -> Option<&tether_store::CredentialRecord> {
        self.generations.first().filter(|g| g.generation.0 > 1)
    }

    /// Live sessions on `generation`.
    pub fn sessions_on(&self, generation: Generation) -> usize {
        self.live
            .instances
            .iter()
            .filter(|i| i.credential_generation == generation)
            .count()
    }
}

pub async fn overview(state: &AppState, runner: RunnerRecord) -> Result<Overview, ServiceError> {
    let client = state
        .store
        .client_by_id(&runner.client_id)
        .await
        .op("client_by_id")?
        .ok_or_else(|| deleted_meanwhile(&runner))?;
    let now = OffsetDateTime::now_utc();
    let reveal_until = state
        .store
        .sealed_secret(runner.id, now)
        .await
        .op("sealed_secret")?
        .map(|s| s.reveal_until);
    Ok(Overview {
        live: super::runners::live(state, runner).await?,
        generations: client.generations,
        reveal_until,
    })
}
