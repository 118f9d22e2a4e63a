//! Registering, finding and deleting runners.

use serde_json::json;
use tether_domain::{ClientId, ClientSecret, Description, Platform, Role, RunnerId, RunnerName};
use tether_store::{NewRunner, RunnerRecord, StoreError};
use time::OffsetDateTime;

use super::audit::{self, AuditEventExt};
use super::ServiceError;
use crate::auth::Caller;
use crate::state::AppState;

#[derive(Debug)]
pub struct NewRunnerInput {
    pub name: RunnerName,
    pub platform: Platform,
    pub description: Description,
}

/// Registers a runner with credential generation 1. The plaintext secret is returned exactly once.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    input: NewRunnerInput,
) -> Result<(RunnerRecord, ClientSecret), ServiceError> {
    caller.require(Role::Operator)?;
    let secret = ClientSecret::generate();
    let new = NewRunner {
        id: RunnerId::new(),
        name: input.name,
        description: input.description,
        platform: input.platform,
        client_id: ClientId::generate(),
        verifier: state.pepper.verifier(secret.expose()),
        created_at: OffsetDateTime::now_utc(),
        created_by: caller.actor(),
    };
    let ev = audit::event(caller.actor(), "runner.created")
        .runner(new.id, new.name.as_str())
        .source_ip(caller.source_ip.clone())
        .detail(json!({"platform": new.platform.as_str(), "client_id": new.client_id.as_str(), "generation": 1}));
    let name = new.name.clone();
    match state.store.create_runner(new, ev).await {
        Ok(record) => {
            tracing::info!(runner.id = %record.id, runner.name = %record.name, "runner created");
            Ok((record, secret))
        }
        Err(StoreError::Conflict { constraint }) if constraint == "runners.name" => {
            Err(ServiceError::Conflict {
                code: "runner_name_taken",
                detail: format!("a runner named '{name}' already exists"),
            })
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn list(
    state: &AppState,
    after: Option<RunnerId>,
    limit: u32,
) -> Result<Vec<RunnerRecord>, ServiceError> {
    Ok(state.store.list_runners(after, limit).await?)
}

/// Finds a runner by id or by unique name.
pub async fn find(state: &AppState, key: &str) -> Result<RunnerRecord, ServiceError> {
    let found = if let Ok(id) = key.parse::<RunnerId>() {
        state.store.runner_by_id(id).await?
    } else if let Ok(name) = RunnerName::parse(key) {
        state.store.runner_by_name(&name).await?
    } else {
        None
    };
    found.ok_or_else(|| ServiceError::NotFound {
        what: "runner",
        code: "runner_not_found",
        detail: format!("no runner with the id or name '{key}'"),
    })
}

/// Deletes a runner; its credentials stop working at once.
pub async fn delete(state: &AppState, caller: &Caller, key: &str) -> Result<(), ServiceError> {
    caller.require(Role::Operator)?;
    let runner = find(state, key).await?;
    let ev = audit::event(caller.actor(), "runner.deleted")
        .runner(runner.id, runner.name.as_str())
        .source_ip(caller.source_ip.clone())
        .detail(json!({"client_id": runner.client_id.as_str()}));
    let deleted = state.store.delete_runner(runner.id, ev).await?;
    state.clients.invalidate(&runner.client_id);
    if !deleted {
        return Err(ServiceError::NotFound {
            what: "runner",
            code: "runner_not_found",
            detail: format!("no runner with the id or name '{key}'"),
        });
    }
    tracing::info!(runner.id = %runner.id, runner.name = %runner.name, "runner deleted");
    Ok(())
}
