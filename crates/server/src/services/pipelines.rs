//! Defining pipelines: validated ordered task lists, stored by name.

use serde_json::json;
use tether_domain::{PipelineName, Role, TaskSpec};
use tether_store::PipelineRecord;
use time::OffsetDateTime;

use super::audit::{self, AuditEventExt};
use super::ServiceError;
use crate::services::auth::Caller;
use crate::services::StoreContext as _;
use crate::state::AppState;

/// Creates or replaces a pipeline.
pub async fn put(
    state: &AppState,
    caller: &Caller,
    name: PipelineName,
    tasks: Vec<TaskSpec>,
) -> Result<PipelineRecord, ServiceError> {
    caller.require(Role::Operator)?;
    let now = OffsetDateTime::now_utc();
    let ev = audit::event(caller.actor(), "pipeline.updated")
        .target(format!("pipeline:{name}"))
        .source_ip(caller.source_ip.clone())
        .detail(json!({"tasks": tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>()}));
    let record = PipelineRecord {
        name,
        tasks,
        created_at: now,
        updated_at: now,
        updated_by: caller.actor(),
    };
    state
        .store
        .put_pipeline(record, ev)
        .await
        .op("put_pipeline")
}

pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<PipelineRecord>, ServiceError> {
    caller.require(Role::Viewer)?;
    state.store.list_pipelines().await.op("list_pipelines")
}

pub async fn find(state: &AppState, key: &str) -> Result<PipelineRecord, ServiceError> {
    let found = match PipelineName::parse(key) {
        Ok(name) => state
            .store
            .pipeline_by_name(&name)
            .await
            .op("pipeline_by_name")?,
        Err(_) => None,
    };
    found.ok_or_else(|| not_found(key))
}

pub async fn delete(state: &AppState, caller: &Caller, key: &str) -> Result<(), ServiceError> {
    caller.require(Role::Operator)?;
    let name = PipelineName::parse(key).map_err(|_| not_found(key))?;
    let ev = audit::event(caller.actor(), "pipeline.deleted")
        .target(format!("pipeline:{name}"))
        .source_ip(caller.source_ip.clone());
    if state
        .store
        .delete_pipeline(&name, ev)
        .await
        .op("delete_pipeline")?
    {
        Ok(())
    } else {
        Err(not_found(key))
    }
}

fn not_found(key: &str) -> ServiceError {
    ServiceError::NotFound {
        what: "pipeline",
        code: "pipeline_not_found",
        detail: format!("no pipeline named '{key}'"),
    }
}
