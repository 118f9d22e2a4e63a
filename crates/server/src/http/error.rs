//! The one place API errors become HTTP responses: RFC 9457 problem+json with a stable `code`.
//! Internal causes are logged here, once, and never returned to the caller.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tether_protocol::problem::{Problem, CONTENT_TYPE};

use crate::services::ServiceError;

#[derive(Debug)]
pub enum ApiError {
    /// No credentials presented.
    Unauthenticated,
    /// Credentials presented but not valid.
    InvalidToken,
    /// A runner connected without its OAuth access token.
    AccessTokenMissing,
    /// A runner's access token is not (or no longer) valid.
    AccessTokenInvalid,
    Forbidden(String),
    NotFound {
        code: &'static str,
        detail: String,
    },
    Conflict {
        code: &'static str,
        detail: String,
    },
    /// A conflict whose problem document carries more members (`runs` in progress).
    ConflictWith {
        code: &'static str,
        detail: String,
        extra: serde_json::Map<String, serde_json::Value>,
    },
    /// It existed and is gone for good (410).
    Gone {
        code: &'static str,
        detail: String,
    },
    /// A field failed validation (422).
    InvalidField {
        field: String,
        detail: String,
    },
    /// A destructive action was not confirmed with the exact words.
    Confirmation {
        field: &'static str,
        expected: &'static str,
    },
    /// The body is not JSON at all (400).
    MalformedJson(String),
    UnsupportedMediaType,
    PayloadTooLarge,
    MethodNotAllowed,
    RouteNotFound,
    /// The database cannot be reached right now (503, with `Retry-After`).
    Unavailable(anyhow::Error),
    /// Too many password checks at once (503, with `Retry-After`).
    Busy(String),
    /// This replica is shutting down and takes no new runner session (503, with `Retry-After`).
    Draining,
    /// A path segment that does not decode (400).
    InvalidPath(String),
    /// A request to the runner session endpoint that is not a WebSocket upgrade (its status, 400
    /// or 426, and why).
    NotAnUpgrade(StatusCode, String),
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn invalid_field(field: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        let field = field.into();
        ApiError::InvalidField {
            detail: format!("{field} {detail}"),
            field,
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound { code, detail, .. } => ApiError::NotFound { code, detail },
            ServiceError::Conflict { code, detail } => ApiError::Conflict { code, detail },
            ServiceError::Forbidden { detail } => ApiError::Forbidden(detail),
            ServiceError::Gone { code, detail } => ApiError::Gone { code, detail },
            ServiceError::RunsInProgress { detail, .. } => ApiError::Conflict {
                code: "runs_in_progress",
                detail,
            },
            ServiceError::Unavailable(e) => ApiError::Unavailable(e),
            ServiceError::Busy { detail } => ApiError::Busy(detail),
            ServiceError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut extra = serde_json::Map::new();
        let (status, code, title, detail, field) = match self {
            ApiError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
                "send an API token as `Authorization: Bearer <token>` (create one with `tether tokens create` or use the admin token printed at first start)".to_owned(),
                None,
            ),
            ApiError::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "Invalid API token",
                "the API token is malformed, unknown or revoked".to_owned(),
                None,
            ),
            ApiError::AccessTokenMissing => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Access token required",
                "a runner connects with its OAuth access token as `Authorization: Bearer <token>`: get one from /oauth/token with the runner's client credentials".to_owned(),
                None,
            ),
            ApiError::AccessTokenInvalid => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "Invalid access token",
                "the access token is malformed, expired or revoked, or the runner's credentials were refreshed: get a new one from /oauth/token with the current client secret".to_owned(),
                None,
            ),
            ApiError::Forbidden(detail) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail, None),
            ApiError::NotFound { code, detail } => (StatusCode::NOT_FOUND, code, "Not found", detail, None),
            ApiError::Conflict { code, detail } => (StatusCode::CONFLICT, code, "Conflict", detail, None),
            ApiError::ConflictWith { code, detail, extra: more } => {
                extra = more;
                (StatusCode::CONFLICT, code, "Conflict", detail, None)
            }
            ApiError::Gone { code, detail } => (StatusCode::GONE, code, "Gone", detail, None),
            ApiError::InvalidField { field, detail } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "Invalid field",
                detail,
                Some(field),
            ),
            ApiError::Confirmation { field, expected } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "confirmation_required",
                "Confirmation required",
                format!("to confirm, send \"{field}\": \"{expected}\"; nothing was changed"),
                Some(field.to_owned()),
            ),
            ApiError::MalformedJson(detail) => (
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "Malformed JSON",
                format!("the request body is not valid JSON: {detail}"),
                None,
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
                "send the body as JSON with `Content-Type: application/json`".to_owned(),
                None,
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                format!("the request body exceeds {} bytes", super::MAX_BODY_BYTES),
                None,
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                "this path does not support that HTTP method; see /api/v1/openapi.json".to_owned(),
                None,
            ),
            ApiError::RouteNotFound => (
                StatusCode::NOT_FOUND,
                "route_not_found",
                "Not found",
                "no such endpoint; see /api/v1/openapi.json".to_owned(),
                None,
            ),
            ApiError::Unavailable(e) => {
                tracing::warn!(error = format!("{e:#}"), "request failed: database unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "Temporarily unavailable",
                    "the server cannot reach its database right now; nothing was changed, try again shortly".to_owned(),
                    None,
                )
            }
            ApiError::Busy(detail) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "Busy",
                detail,
                None,
            ),
            ApiError::Draining => (
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "Draining",
                "this control-plane replica is shutting down; connect again (through the load balancer, to another replica)".to_owned(),
                None,
            ),
            ApiError::InvalidPath(why) => (
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "Invalid path",
                format!("a path segment is not usable: {why}"),
                None,
            ),
            ApiError::NotAnUpgrade(status, why) => (
                status,
                "websocket_upgrade_required",
                "WebSocket upgrade required",
                format!("this is the runner session endpoint, a WebSocket: {why}"),
                None,
            ),
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "the server failed to handle the request; the cause is in its log".to_owned(),
                    None,
                )
            }
        };
        let problem = Problem {
            kind: format!("urn:tether:problem:{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            field,
        };
        let mut body = serde_json::to_value(problem).unwrap_or_default();
        if let serde_json::Value::Object(members) = &mut body {
            members.extend(extra);
        }
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tether\""),
            );
        }
        response
    }
}
