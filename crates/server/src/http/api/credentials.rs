//! `/api/v1/runners/{runner}/credentials`: refresh, reveal, inspect, end an overlap.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use tether_domain::{CredentialState, Role, RotationId};
use tether_protocol::api::{
    CredentialGeneration, Credentials, RefreshRequest, RefreshResponse, RevealResponse,
    RevokePreviousRequest, RevokePreviousResponse, RotationStep, RotationStepRequest,
};
use tether_store::RunnerRecord;

use super::runners::rollout_view;
use super::runs::view as run_view;
use crate::http::error::ApiError;
use crate::http::extract::ApiPath as Path;
use crate::http::extract::{ApiJson, OptionalJson};
use crate::services::auth::Caller;
use crate::services::credentials::{self, Mode};
use crate::services::runners::parse_ref;
use crate::services::{runners, ServiceError};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runners/{runner}/credentials", get(get_credentials))
        .route(
            "/api/v1/runners/{runner}/credentials/refresh",
            post(refresh_credentials),
        )
        .route(
            "/api/v1/runners/{runner}/credentials/reveal",
            post(reveal_credentials),
        )
        .route(
            "/api/v1/runners/{runner}/credentials/revoke-previous",
            post(revoke_previous_credentials),
        )
        .route(
            "/api/v1/runners/{runner}/rotations",
            post(record_rotation_step),
        )
}

async fn refresh_credentials(
    State(state): State<AppState>,
    caller: Caller,
    Path(runner): Path<String>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<RefreshResponse>, ApiError> {
    caller.require(Role::Operator)?;
    if req.confirm.as_deref() != Some(tether_domain::REFRESH_CONFIRMATION) {
        return Err(ApiError::Confirmation {
            field: "confirm",
            expected: tether_domain::REFRESH_CONFIRMATION,
        });
    }
    let mode = Mode::parse(req.mode.as_deref(), req.grace_seconds)
        .map_err(|(field, detail)| ApiError::invalid_field(field, detail))?;
    let rotation_id = req
        .rotation_id
        .as_deref()
        .map(parse_rotation_id)
        .transpose()?;
    let outcome = match credentials::refresh(
        &state,
        &caller,
        &parse_ref(&runner)?,
        mode,
        req.force,
        rotation_id.as_ref(),
    )
    .await
    {
        Ok(o) => o,
        Err(ServiceError::RunsInProgress { detail, runs }) => {
            let runs: Vec<_> = runs.into_iter().map(|r| run_view(&state, r)).collect();
            let mut extra = serde_json::Map::new();
            extra.insert(
                "runs".into(),
                serde_json::to_value(runs).map_err(|e| ApiError::Internal(e.into()))?,
            );
            return Err(ApiError::ConflictWith {
                code: "runs_in_progress",
                detail,
                extra,
            });
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Json(RefreshResponse {
        client_id: outcome.runner.client_id.as_str().to_owned(),
        client_secret: outcome.secret.expose().to_owned(),
        generation: outcome.refreshed.generation.0,
        previous_generation: outcome.refreshed.previous.0,
        mode: outcome.mode.as_str().to_owned(),
        reveal_until: outcome.reveal_until,
        previous_expires_at: outcome.previous_expires_at,
        sessions_closed: outcome.sessions_closed,
    }))
}

async fn reveal_credentials(
    State(state): State<AppState>,
    caller: Caller,
    Path(runner): Path<String>,
) -> Result<Json<RevealResponse>, ApiError> {
    let (record, secret, generation, reveal_until) =
        credentials::reveal(&state, &caller, &parse_ref(&runner)?).await?;
    Ok(Json(RevealResponse {
        client_id: record.client_id.as_str().to_owned(),
        client_secret: secret.expose().to_owned(),
        generation: generation.0,
        reveal_until,
    }))
}

async fn get_credentials(
    State(state): State<AppState>,
    caller: Caller,
    Path(runner): Path<String>,
) -> Result<Json<Credentials>, ApiError> {
    caller.require(Role::Viewer)?;
    let record = runners::find(&state, &parse_ref(&runner)?).await?;
    Ok(Json(view(&state, record).await?))
}

/// The body is optional: `{"rotation_id": ...}` ties the step to a rotation.
async fn revoke_previous_credentials(
    State(state): State<AppState>,
    caller: Caller,
    Path(runner): Path<String>,
    OptionalJson(req): OptionalJson<RevokePreviousRequest>,
) -> Result<Json<RevokePreviousResponse>, ApiError> {
    caller.require(Role::Operator)?;
    let rotation_id = req
        .rotation_id
        .as_deref()
        .map(parse_rotation_id)
        .transpose()?;
    let done =
        credentials::revoke_previous(&state, &caller, &parse_ref(&runner)?, rotation_id.as_ref())
            .await?;
    let summary = done.summary();
    let revoked_generations = done.revoked.iter().map(|g| g.0).collect();
    Ok(Json(RevokePreviousResponse {
        credentials: view(&state, done.runner).await?,
        revoked_generations,
        sessions_closed: done.sessions_closed,
        summary,
    }))
}

/// `POST /api/v1/runners/{runner}/rotations`: one step of a client-driven rotation, audited.
async fn record_rotation_step(
    State(state): State<AppState>,
    caller: Caller,
    Path(runner): Path<String>,
    ApiJson(req): ApiJson<RotationStepRequest>,
) -> Result<(StatusCode, Json<RotationStep>), ApiError> {
    caller.require(Role::Operator)?;
    if !credentials::ROTATION_STEPS.contains(&req.step.as_str()) {
        return Err(ApiError::invalid_field(
            "step",
            format!("must be one of {}", credentials::ROTATION_STEPS.join(", ")),
        ));
    }
    match (&req.rotation_id, req.step.as_str()) {
        (Some(_), "started") => {
            return Err(ApiError::invalid_field(
                "rotation_id",
                "is made by the control plane when a rotation starts; leave it out for `started`",
            ))
        }
        (None, step) if step != "started" => {
            return Err(ApiError::invalid_field(
                "rotation_id",
                "names the rotation this step belongs to (returned by its `started` step)",
            ))
        }
        _ => {}
    }
    let rotation_id = req
        .rotation_id
        .as_deref()
        .map(parse_rotation_id)
        .transpose()?;
    let detail = match req.detail {
        None => serde_json::Map::new(),
        Some(serde_json::Value::Object(map))
            if serde_json::to_string(&map).map_or(0, |s| s.len()) <= 4096 =>
        {
            map
        }
        Some(_) => {
            return Err(ApiError::invalid_field(
                "detail",
                "must be a JSON object of at most 4096 bytes",
            ))
        }
    };
    let id = credentials::record_rotation_step(
        &state,
        &caller,
        &parse_ref(&runner)?,
        &req.step,
        rotation_id,
        detail,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(RotationStep {
            rotation_id: id.to_string(),
            step: req.step,
        }),
    ))
}

fn parse_rotation_id(id: &str) -> Result<RotationId, ApiError> {
    RotationId::parse(id).map_err(|e| ApiError::invalid_field("rotation_id", e.0))
}

/// Every generation with its state and how many live sessions use it; never a secret.
pub(crate) async fn view(state: &AppState, runner: RunnerRecord) -> Result<Credentials, ApiError> {
    let o = credentials::overview(state, runner).await?;
    let refreshed = o.last_refresh();
    Ok(Credentials {
        client_id: o.live.record.client_id.as_str().to_owned(),
        last_refreshed_at: refreshed.map(|g| g.created_at),
        last_refreshed_by: refreshed.map(|g| g.created_by.clone()),
        generations: o
            .generations
            .iter()
            .map(|g| {
                let revoked = g.state == CredentialState::Revoked;
                CredentialGeneration {
                    generation: g.generation.0,
                    state: g.state.as_str().to_owned(),
                    created_at: g.created_at,
                    created_by: g.created_by.clone(),
                    // A revoked generation works until nothing: `revoked_at` says when it stopped.
                    expires_at: g.expires_at.filter(|_| !revoked),
                    last_used_at: g.last_used_at,
                    revoked_at: g.revoked_at.filter(|_| revoked),
                    revoked_by: g.revoked_by.clone().filter(|_| revoked),
                    sessions: o.sessions_on(g.generation),
                }
            })
            .collect(),
        reveal_until: o.reveal_until,
        credential_rollout: rollout_view(&o.live),
    })
}
