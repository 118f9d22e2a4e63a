//! `/api/v1`: the REST API for humans and scripts. One module per resource.

mod audit;
mod credentials;
mod pipelines;
mod runners;
mod runs;
mod users;

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(runners::router())
        .merge(users::router())
        .merge(audit::router())
        .merge(credentials::router())
        .merge(pipelines::router())
        .merge(runs::router())
}

/// Opaque paging cursors: the URL-safe base64 of the last item's key.
mod cursor {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;

    use crate::http::error::ApiError;

    pub fn encode(key: &str) -> String {
        B64.encode(key)
    }

    /// An absent or empty `cursor` is the first page.
    pub fn decode<T: std::str::FromStr>(cursor: Option<&str>) -> Result<Option<T>, ApiError> {
        let Some(c) = cursor.filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        B64.decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid_field("cursor", "is not a cursor returned by this API")
            })
    }
}
