//! `/api/v1/pipelines`: define pipelines and queue runs of them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use tether_domain::pipeline::{parse_tasks, RawTask};
use tether_domain::{PipelineName, Role};
use tether_protocol::api::{
    CreateRunRequest, Pipeline, PipelineList, PipelineTask, PutPipelineRequest, Run,
};
use tether_store::PipelineRecord;

use super::runs::view as run_view;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::services::auth::Caller;
use crate::services::runners::parse_ref;
use crate::services::{pipelines, runs};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/pipelines", get(list_pipelines))
        .route(
            "/api/v1/pipelines/{name}",
            get(get_pipeline).put(put_pipeline).delete(delete_pipeline),
        )
        .route("/api/v1/pipelines/{name}/runs", post(create_run))
}

async fn put_pipeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PutPipelineRequest>,
) -> Result<Json<Pipeline>, ApiError> {
    caller.require(Role::Operator)?;
    let name = PipelineName::parse(&name).map_err(|e| ApiError::invalid_field("name", e))?;
    let raw: Vec<RawTask<'_>> = req
        .tasks
        .iter()
        .map(|t| RawTask {
            name: &t.name,
            run: &t.run,
            env: &t.env,
            timeout_seconds: t.timeout_seconds,
        })
        .collect();
    let tasks = parse_tasks(&raw).map_err(|e| ApiError::invalid_field(e.field, e.error))?;
    let record = pipelines::put(&state, &caller, name, tasks).await?;
    Ok(Json(view(record)))
}

async fn list_pipelines(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PipelineList>, ApiError> {
    let records = pipelines::list(&state, &caller).await?;
    Ok(Json(PipelineList {
        pipelines: records.into_iter().map(view).collect(),
    }))
}

async fn get_pipeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Pipeline>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(view(pipelines::find(&state, &name).await?)))
}

async fn delete_pipeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    pipelines::delete(&state, &caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<CreateRunRequest>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    caller.require(Role::Operator)?;
    if req.runner.trim().is_empty() {
        return Err(ApiError::invalid_field("runner", "must name a runner"));
    }
    let record = runs::create(&state, &caller, &name, &parse_ref(&req.runner)?).await?;
    Ok((StatusCode::CREATED, Json(run_view(&state, record))))
}

fn view(p: PipelineRecord) -> Pipeline {
    Pipeline {
        name: p.name.as_str().to_owned(),
        tasks: p
            .tasks
            .into_iter()
            .map(|t| PipelineTask {
                name: t.name.as_str().to_owned(),
                run: t.run,
                env: t.env,
                timeout_seconds: t.timeout_seconds,
            })
            .collect(),
        created_at: p.created_at,
        updated_at: p.updated_at,
        updated_by: p.updated_by,
    }
}
