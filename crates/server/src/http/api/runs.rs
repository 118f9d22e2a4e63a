//! `/api/v1/runs` and a runner's runs: state, logs, cancel.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use tether_domain::{Role, RunState};
use tether_protocol::api::{Run, RunList, RunTask};
use tether_store::RunRecord;

use crate::http::error::ApiError;
use crate::http::extract::ApiPath as Path;
use crate::http::extract::QueryParams;
use crate::services::auth::Caller;
use crate::services::runners::parse_ref;
use crate::services::runs;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/runs/{id}/logs", get(get_run_logs))
        .route("/api/v1/runs/{id}/cancel", post(cancel_run))
        .route("/api/v1/runners/{runner}/runs", get(list_runner_runs))
}

async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Run>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(view(&state, runs::find(&state, &id).await?)))
}

/// A log page's size when the request gives no `limit`, and the largest it may ask for.
pub const DEFAULT_LOG_PAGE_BYTES: u64 = 1024 * 1024;
pub const MAX_LOG_PAGE_BYTES: u64 = 8 * 1024 * 1024;
/// Where the next page starts (`offset` + the bytes returned).
static LOG_NEXT_OFFSET: HeaderName = HeaderName::from_static("x-log-next-offset");
/// Bytes of log stored for the run so far: a reader is at the end when the next offset is it.
static LOG_TOTAL_BYTES: HeaderName = HeaderName::from_static("x-log-total-bytes");

/// `GET /api/v1/runs/{id}/logs?offset=&limit=`: a page of the run's log as text.
async fn get_run_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: QueryParams,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let offset = match query.get("offset") {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::invalid_field("offset", "must be a whole number of bytes, 0 or more")
        })?,
    };
    let limit = match query.get("limit") {
        None => DEFAULT_LOG_PAGE_BYTES,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_LOG_PAGE_BYTES).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "limit",
                    format!("must be a number of bytes from 1 to {MAX_LOG_PAGE_BYTES}"),
                )
            })?,
    };
    let page = runs::log(&state, &id, offset, limit).await?;
    let next = offset.saturating_add(page.text.len() as u64);
    let headers = [
        (CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
        (LOG_NEXT_OFFSET.clone(), next.to_string()),
        (LOG_TOTAL_BYTES.clone(), page.total_bytes.to_string()),
    ];
    Ok((headers, page.text))
}

async fn cancel_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let record = runs::cancel(&state, &caller, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&state, record))))
}

async fn list_runner_runs(
    State(state): State<AppState>,
    caller: Caller,
    Path(runner): Path<String>,
    query: QueryParams,
) -> Result<Json<RunList>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = query.limit(50, 200)?;
    let run_state = query
        .get("state")
        .map(RunState::parse)
        .transpose()
        .map_err(|e| ApiError::invalid_field("state", e))?;
    let records = runs::list_for_runner(&state, &parse_ref(&runner)?, run_state, limit).await?;
    Ok(Json(RunList {
        runs: records.into_iter().map(|r| view(&state, r)).collect(),
    }))
}

/// The API's view of a run. A queued run says what it waits for.
pub(crate) fn view(state: &AppState, r: RunRecord) -> Run {
    let reason = match (&r.reason, r.state) {
        (None, RunState::Queued) => Some(waiting_for(state, &r)),
        (reason, _) => reason.clone(),
    };
    Run {
        id: r.id.to_string(),
        pipeline: r.pipeline,
        runner: r.runner_name,
        runner_id: r.runner_id.to_string(),
        state: r.state.as_str().to_owned(),
        reason,
        tasks: r
            .tasks
            .into_iter()
            .map(|t| RunTask {
                name: t.name,
                state: t.state.as_str().to_owned(),
                exit_code: t.exit_code,
                reason: t.reason,
                instance_id: t.instance_id,
                started_at: t.started_at,
                finished_at: t.finished_at,
            })
            .collect(),
        created_at: r.created_at,
        created_by: r.created_by,
        started_at: r.started_at,
        finished_at: r.finished_at,
    }
}

fn waiting_for(state: &AppState, r: &RunRecord) -> String {
    match state.link.view(r.runner_id) {
        Some(live) if live.status.status == tether_domain::RunnerStatus::Running => {
            "waiting for a free slot on the runner".to_owned()
        }
        Some(live) => format!(
            "waiting for runner '{}', which is {}: {}",
            r.runner_name,
            live.status.status.as_str(),
            live.status.reason
        ),
        None => format!("waiting for runner '{}' to connect", r.runner_name),
    }
}
