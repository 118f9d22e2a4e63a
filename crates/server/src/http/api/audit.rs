//! `GET /api/v1/audit`: the audit log, newest first, by runner if asked, paged with an opaque
//! cursor.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use tether_domain::Role;
use tether_protocol::api::{AuditEvent, AuditList};
use tether_store::AuditFilter;

use super::cursor;
use crate::http::error::ApiError;
use crate::http::extract::QueryParams;
use crate::services::auth::Caller;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/audit", get(list_audit))
}

async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryParams,
) -> Result<Json<AuditList>, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = query.limit(100, 500)?;
    let before_id: Option<i64> = cursor::decode(query.get("cursor"))?;
    let filter = AuditFilter {
        runner: query.get("runner").map(str::to_owned),
        before_id,
        limit: limit + 1,
    };
    let mut records = crate::services::audit::list(&state, &caller, filter).await?;
    let next_cursor = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records.last().map(|r| cursor::encode(&r.id.to_string()))
    } else {
        None
    };
    let events = records
        .into_iter()
        .map(|r| AuditEvent {
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            runner: r.runner_name.or(r.runner_id),
            target: r.target,
            source_ip: r.source_ip,
            detail: r.detail,
        })
        .collect();
    Ok(Json(AuditList {
        events,
        next_cursor,
    }))
}
