//! The one mapping from errors to HTTP responses: `{"error": "…", "kind": "…"}` with a
//! 4xx status that names the problem, or a 500 whose body leaks nothing (the details go
//! to the log).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quiver::ErrorKind;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error(transparent)]
    Quiver(#[from] quiver::Error),

    /// The body is not the JSON the endpoint takes.
    #[error("invalid request body: {0}")]
    BadBody(String),

    /// The body is larger than `server.max_body_bytes`.
    #[error("the request body exceeds the limit of {max} bytes (server.max_body_bytes)")]
    BodyTooLarge { max: usize },

    /// Too many entity rows in one lookup.
    #[error("{count} entity rows exceed the limit of {max} per request (server.max_entities)")]
    TooManyEntities { count: usize, max: usize },

    /// A write endpoint without the API key.
    #[error("this endpoint needs the API key (header x-api-key or Authorization: Bearer)")]
    MissingApiKey,

    /// A write endpoint with a wrong API key.
    #[error("wrong API key")]
    WrongApiKey,

    /// A materialization of the view is already running.
    #[error("a materialization of feature view `{view}` is already running")]
    AlreadyRunning { view: String },

    /// The request ran longer than `server.request_timeout_ms`.
    #[error("the request did not finish within {ms} ms (server.request_timeout_ms)")]
    Timeout { ms: u128 },

    /// No such route, or no such object.
    #[error("{0}")]
    NotFound(String),

    /// A request option this server does not support.
    #[error("{0}")]
    Unsupported(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Quiver(e) => match e.kind() {
                ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::AlreadyExists => StatusCode::CONFLICT,
                ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::BadBody(_) | ApiError::Unsupported(_) => StatusCode::BAD_REQUEST,
            ApiError::TooManyEntities { .. } | ApiError::BodyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::MissingApiKey => StatusCode::UNAUTHORIZED,
            ApiError::WrongApiKey => StatusCode::FORBIDDEN,
            ApiError::AlreadyRunning { .. } => StatusCode::CONFLICT,
            ApiError::Timeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        }
    }

    fn kind(&self) -> &'static str {
        match self.status() {
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => "invalid_argument",
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "unauthenticated",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "already_exists",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "internal error");
            "internal error; the details are in the server log".to_string()
        } else {
            self.to_string()
        };
        (
            status,
            Json(serde_json::json!({ "error": message, "kind": self.kind() })),
        )
            .into_response()
    }
}
