//! `/api/v1/pipelines`: define pipelines and queue runs of them.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use tether_domain::pipeline::{parse_tasks, RawTask};
use tether_domain::{EnvValue as DomainEnv, PipelineName, Role};
use tether_protocol::api::{
    CreateRunRequest, EnvValue, Pipeline, PipelineList, PipelineTask, PutPipelineRequest, Run,
    SecretValue,
};
use tether_store::PipelineRecord;

use super::runs::view as run_view;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::http::extract::ApiPath as Path;
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
    let envs = req
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| sealed_env(&state, i, &t.env))
        .collect::<Result<Vec<_>, _>>()?;
    let raw: Vec<RawTask<'_>> = req
        .tasks
        .iter()
        .zip(&envs)
        .map(|(t, env)| RawTask {
            name: &t.name,
            run: &t.run,
            env,
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

/// A task's env as submitted, its secrets sealed: they are never stored in the clear.
fn sealed_env(
    state: &AppState,
    task: usize,
    env: &BTreeMap<String, EnvValue>,
) -> Result<BTreeMap<String, DomainEnv>, ApiError> {
    env.iter()
        .map(|(k, v)| {
            let value = match v {
                EnvValue::Plain(p) => DomainEnv::Plain(p.clone()),
                EnvValue::Secret {
                    secret: SecretValue::Value(secret),
                } if !secret.is_empty() && !secret.contains('\0') => {
                    DomainEnv::Sealed(state.sealer.seal_env(k, secret))
                }
                EnvValue::Secret { .. } => {
                    return Err(ApiError::invalid_field(
                        format!("tasks[{task}].env.{k}"),
                        "a secret needs its value: {\"secret\": \"<value>\"} (a non-empty string without NUL); secrets are never shown, so give it again to redefine the task",
                    ))
                }
            };
            Ok((k.clone(), value))
        })
        .collect()
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
                env: t
                    .env
                    .into_iter()
                    .map(|(k, v)| {
                        let shown = match v {
                            DomainEnv::Plain(p) => EnvValue::Plain(p),
                            DomainEnv::Sealed(_) => EnvValue::Secret {
                                secret: SecretValue::Hidden(true),
                            },
                        };
                        (k, shown)
                    })
                    .collect(),
                timeout_seconds: t.timeout_seconds,
            })
            .collect(),
        created_at: p.created_at,
        updated_at: p.updated_at,
        updated_by: p.updated_by,
    }
}
