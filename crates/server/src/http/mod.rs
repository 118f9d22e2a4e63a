//! HTTP surface: the REST API, OAuth endpoints, discovery documents, ops endpoints and the web UI,
//! assembled into one router here.

pub mod api;
pub mod error;
pub mod extract;
pub mod oauth;
pub mod ops;
pub mod runner_session;
pub mod serve;
pub mod web;
pub mod wellknown;

use axum::extract::DefaultBodyLimit;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{middleware, Router};

use crate::state::AppState;
use error::ApiError;

/// Largest request body accepted anywhere (413 beyond it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const OPENAPI: &str = include_str!("openapi.json");

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api::router())
        .merge(oauth::router())
        .merge(wellknown::router())
        .merge(ops::router())
        .merge(web::router())
        .route("/api/v1/openapi.json", get(get_openapi))
        .route(
            tether_protocol::session::CONNECT_PATH,
            get(runner_session::connect_runner),
        )
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), ops::track))
        .with_state(state)
}

async fn get_openapi() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], OPENAPI)
}
