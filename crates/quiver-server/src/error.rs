//! The one mapping from errors to HTTP responses: `{"error": "…", "kind": "…"}` with a
//! 4xx status that names the problem, or a 500 whose body leaks nothing (the details go
//! to the log). Every error has an [`ErrorKind`]; [`ApiError::status`] is one exhaustive
//! `match`, so a new kind cannot go unmapped.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quiver::ErrorKind;

use crate::wire::WireError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error(transparent)]
    Quiver(#[from] quiver::Error),

    /// The body or a value in it does not fit the wire format.
    #[error(transparent)]
    Wire(#[from] WireError),

    /// The body is not the JSON the endpoint takes.
    #[error("invalid request body: {0}")]
    BadBody(String),

    /// The body is larger than `server.max_body_bytes`.
    #[error("the request body exceeds the limit of {max} bytes (server.max_body_bytes)")]
    BodyTooLarge { max: usize },

    /// The body did not arrive within `server.body_read_timeout_ms`.
    #[error("the request body did not arrive within {ms} ms (server.body_read_timeout_ms)")]
    BodyTimeout { ms: u128 },

    /// Too many entity rows in one lookup.
    #[error("{count} entity rows exceed the limit of {max} per request (server.max_entities)")]
    TooManyEntities { count: usize, max: usize },

    /// The request target is longer than the server takes.
    #[error("the request target is {length} bytes long; the limit is {max}")]
    UriTooLong { length: usize, max: usize },

    /// A write endpoint without the API key.
    #[error("this endpoint needs the API key (header x-api-key or Authorization: Bearer)")]
    MissingApiKey,

    /// A write endpoint with a wrong API key.
    #[error("wrong API key")]
    WrongApiKey,

    /// A materialization of the view is already running.
    #[error(
        "a materialization of feature view `{view}` is already running (in this server or another sharing its registry)"
    )]
    AlreadyRunning { view: String },

    /// The request ran longer than `server.request_timeout_ms`.
    #[error("the request did not finish within {ms} ms (server.request_timeout_ms)")]
    Timeout { ms: u128 },

    /// A write that did not finish within `server.request_timeout_ms`; it goes on.
    #[error(
        "the write did not finish within {ms} ms (server.request_timeout_ms); it goes on in the background, and writes are idempotent, so retrying is safe"
    )]
    TimeoutInBackground { ms: u128 },

    /// No such route, or no such object.
    #[error("{0}")]
    NotFound(String),

    /// The route exists, but not for this method.
    #[error("{0}")]
    MethodNotAllowed(String),

    /// A Feast endpoint Quiver does not have.
    #[error("{0}")]
    NotImplemented(String),
}

impl ApiError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::Quiver(e) => e.kind(),
            ApiError::Wire(_) | ApiError::BadBody(_) | ApiError::MethodNotAllowed(_) => {
                ErrorKind::InvalidArgument
            }
            ApiError::BodyTooLarge { .. }
            | ApiError::TooManyEntities { .. }
            | ApiError::UriTooLong { .. } => ErrorKind::ResourceExhausted,
            ApiError::MissingApiKey => ErrorKind::Unauthenticated,
            ApiError::WrongApiKey => ErrorKind::PermissionDenied,
            ApiError::AlreadyRunning { .. } => ErrorKind::Conflict,
            ApiError::BodyTimeout { .. }
            | ApiError::Timeout { .. }
            | ApiError::TimeoutInBackground { .. } => ErrorKind::DeadlineExceeded,
            ApiError::NotFound(_) => ErrorKind::NotFound,
            ApiError::NotImplemented(_) => ErrorKind::Unimplemented,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            // HTTP's own statuses for HTTP's own failures.
            ApiError::MethodNotAllowed(_) => return StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UriTooLong { .. } => return StatusCode::URI_TOO_LONG,
            ApiError::BodyTimeout { .. } => return StatusCode::REQUEST_TIMEOUT,
            _ => {}
        }
        match self.kind() {
            ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::DeadlineExceeded | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let kind = self.kind();
        let message = if kind == ErrorKind::Internal {
            tracing::error!(error = %self, "internal error");
            "internal error; the details are in the server log".to_string()
        } else {
            self.to_string()
        };
        (
            status,
            Json(serde_json::json!({ "error": message, "kind": kind })),
        )
            .into_response()
    }
}
