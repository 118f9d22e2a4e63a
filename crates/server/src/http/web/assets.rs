//! The stylesheet and the script, compiled into the binary: no front-end build, nothing to deploy
//! beside the server.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

const CSS: &str = include_str!("../../../static/tether.css");
const JS: &str = include_str!("../../../static/tether.js");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/tether.css", get(get_css))
        .route("/static/tether.js", get(get_js))
}

async fn get_css() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        CSS,
    )
}

async fn get_js() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        JS,
    )
}
