//! `/api/v1/runners`: register, list, show and delete runners, and pause, resume or restart one.
//! Each handler parses the path and body, then calls `services::runners`; the runner view merges
//! the stored record with its live sessions (`services::runners::live`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use tether_domain::{Description, Platform, Role, RunnerId, RunnerName};
use tether_protocol::api::{
    ClientCredentials, CreateRunnerRequest, CreatedRunner, CredentialRollout, Instance, Runner,
    RunnerList,
};
use tether_store::RunnerRecord;

use super::cursor;
use crate::http::error::ApiError;
use crate::http::extract::ApiPath as Path;
use crate::http::extract::{ApiJson, QueryParams};
use crate::services::auth::Caller;
use crate::services::runners::parse_ref;
use crate::services::runners::{self, LiveRunner, NewRunnerInput};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runners", get(list_runners).post(create_runner))
        .route(
            "/api/v1/runners/{runner}",
            get(get_runner).delete(delete_runner),
        )
        .route("/api/v1/runners/{runner}/pause", post(pause_runner))
        .route("/api/v1/runners/{runner}/resume", post(resume_runner))
        .route("/api/v1/runners/{runner}/restart", post(restart_runner))
}

/// The words an operator must type to pause a runner.
const PAUSE_CONFIRMATION: &str = "pause runner";

#[derive(Debug, serde::Deserialize)]
struct PauseRequest {
    #[serde(default)]
    confirm: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    until: Option<time::OffsetDateTime>,
}

async fn pause_runner(
    State(state): State<AppState>,
    caller: Caller,
    Path(runner): Path<String>,
    ApiJson(req): ApiJson<PauseRequest>,
) -> Result<(StatusCode, Json<Runner>), ApiError> {
    caller.require(Role::Operator)?;
    if req.confirm.as_deref() != Some(PAUSE_CONFIRMATION) {
        return Err(ApiError::Confirmation {
            field: "confirm",
            expected: PAUSE_CONFIRMATION,
        });
    }
    if let Some(until) = req.until {
        if until <= time::OffsetDateTime::now_utc() {
            return Err(ApiError::invalid_field("until", "must be in the future"));
        }
    }
    let record = runners::pause(&state, &caller, &parse_ref(&runner)?, req.until).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&state, record).await?)))
}

async fn resume_runner(
    State(state): State<AppState>,
    caller: Caller,
    Path(runner): Path<String>,
) -> Result<(StatusCode, Json<Runner>), ApiError> {
    let record = runners::resume(&state, &caller, &parse_ref(&runner)?).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&state, record).await?)))
}

async fn restart_runner(
    State(state): State<AppState>,
    caller: Caller,
    Path(runner): Path<String>,
) -> Result<(StatusCode, Json<Runner>), ApiError> {
    let (record, _) = runners::restart(&state, &caller, &parse_ref(&runner)?).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&state, record).await?)))
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
            runner: view(&state, record).await?,
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
        runners: runners::live_all(&state, records)
            .await?
            .into_iter()
            .map(|l| view_of(&state, l))
            .collect(),
        next_cursor,
    }))
}

async fn get_runner(
    State(state): State<AppState>,
    caller: Caller,
    Path(runner): Path<String>,
) -> Result<Json<Runner>, ApiError> {
    caller.require(Role::Viewer)?;
    let record = runners::find(&state, &parse_ref(&runner)?).await?;
    Ok(Json(view(&state, record).await?))
}

async fn delete_runner(
    State(state): State<AppState>,
    caller: Caller,
    Path(runner): Path<String>,
) -> Result<StatusCode, ApiError> {
    runners::delete(&state, &caller, &parse_ref(&runner)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An instance as the API shows it.
fn instance_view(i: crate::runner_link::Instance) -> Instance {
    Instance {
        instance_id: i.instance_id,
        hostname: i.hostname,
        connected_at: i.connected_at,
        last_heartbeat_at: i.last_heartbeat_at,
        credential_generation: i.credential_generation.0,
        generation_since: i.generation_since,
        running_tasks: i.running_tasks,
        secret_source: i.secret_source,
        hot_reload: i.hot_reload,
        secret_file: i.secret_file,
    }
}

/// The API's view of a runner: its live sessions on every replica, else the last status written to
/// the store.
pub(crate) async fn view(state: &AppState, r: RunnerRecord) -> Result<Runner, ApiError> {
    Ok(view_of(state, runners::live(state, r).await?))
}

fn view_of(state: &AppState, live: LiveRunner) -> Runner {
    let credential_rollout = rollout_view(&live);
    let LiveRunner {
        record: r,
        status,
        instances,
        secret_file,
        ..
    } = live;
    Runner {
        id: r.id.to_string(),
        name: r.name.as_str().to_owned(),
        description: r.description.as_str().to_owned(),
        platform: r.platform.as_str().to_owned(),
        status: status.status.as_str().to_owned(),
        status_reason: status.reason,
        status_since: status.since,
        client_id: r.client_id.as_str().to_owned(),
        credential_generation: r.generation.0,
        instances: instances.into_iter().map(instance_view).collect(),
        paused_until: r.paused_until,
        created_at: r.created_at,
        last_seen_at: status.last_seen_at,
        runner_version: status.runner_version,
        paused_by: r.paused_by.clone(),
        auth_health: state.health.view(r.id),
        credential_rollout,
        secret_file,
    }
}

pub(crate) fn rollout_view(live: &LiveRunner) -> CredentialRollout {
    let r = &live.rollout;
    CredentialRollout {
        generation: r.generation.0,
        instances_on_newest: r.instances_on_newest,
        instances_on_older: r.instances_on_older,
        retiring_until: r.retiring_until,
        state: r.state.as_str().to_owned(),
        applied_since: live.applied_since,
        summary: live.rollout_summary(time::OffsetDateTime::now_utc()),
    }
}
