use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use tether_domain::{Description, Platform, Role, RunnerId, RunnerName};
use tether_protocol::api::{
    ClientCredentials, CreateRunnerRequest, CreatedRunner, Runner, RunnerList,
};
use tether_store::RunnerRecord;

use super::cursor;
use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, QueryParams};
use crate::services::runners::{self, NewRunnerInput};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runners", get(list_runners).post(create_runner))
        .route(
            "/api/v1/runners/{runner}",
            get(get_runner).delete(delete_runner),
        )
}

async fn create_runner(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateRunnerRequest>,
) -> Result<(StatusCode, Json<CreatedRunner>), ApiError> {
    caller.require(Role::Operator)?;
    let input = NewRunnerInput {
        name: RunnerName::parse(&req.name).map_err(|e| ApiError::invalid_field("name", e))?,
        platform: Platform::parse(&req.platform)
            .map_err(|e| ApiError::invalid_field("platform", e))?,
        description: Description::parse(req.description.as_deref().unwrap_or_default())
            .map_err(|e| ApiError::invalid_field("description", e))?,
    };
    let (record, secret) = runners::create(&state, &caller, input).await?;
    let credentials = ClientCredentials {
        client_id: record.client_id.as_str().to_owned(),
        client_secret: secret.expose().to_owned(),
    };
    Ok((
        StatusCode::CREATED,
        Json(CreatedRunner {
            runner: runner_view(&record),
            credentials,
        }),
    ))
}

async fn list_runners(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryParams,
) -> Result<Json<RunnerList>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = query.limit(50, 200)?;
    let after: Option<RunnerId> = cursor::decode(query.get("cursor"))?;
    // One extra row tells whether another page exists.
    let mut records = runners::list(&state, after, limit + 1).await?;
    let next_cursor = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records.last().map(|r| cursor::encode(&r.id.to_string()))
    } else {
        None
    };
    Ok(Json(RunnerList {
        runners: records.iter().map(runner_view).collect(),
        next_cursor,
    }))
}

async fn get_runner(
    State(state): State<AppState>,
    caller: Caller,
    Path(runner): Path<String>,
) -> Result<Json<Runner>, ApiError> {
    caller.require(Role::Viewer)?;
    let record = runners::find(&state, &runner).await?;
    Ok(Json(runner_view(&record)))
}

async fn delete_runner(
    State(state): State<AppState>,
    caller: Caller,
    Path(runner): Path<String>,
) -> Result<StatusCode, ApiError> {
    runners::delete(&state, &caller, &runner).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The API's view of a runner. Live status comes from runner sessions; until one connects a
/// runner is `pending`.
fn runner_view(r: &RunnerRecord) -> Runner {
    Runner {
        id: r.id.to_string(),
        name: r.name.as_str().to_owned(),
        description: r.description.as_str().to_owned(),
        platform: r.platform.as_str().to_owned(),
        status: tether_domain::RunnerStatus::Pending.as_str().to_owned(),
        status_reason: "registered; no instance has connected yet".to_owned(),
        status_since: r.created_at,
        client_id: r.client_id.as_str().to_owned(),
        credential_generation: r.generation.0,
        instances: Vec::new(),
        paused_until: None,
        created_at: r.created_at,
        last_seen_at: None,
    }
}
