//! Errors as the client sees them: a status and a JSON body `{"error": …, "error_type": …}`,
//! TEI's shape, so TEI clients read our errors too.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::worker::{Failure, Reply};

/// An HTTP error with a JSON body.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// TEI's `error_type`: `Validation`, `NotFound`, `Overloaded`, `Timeout`, `Backend`.
    pub kind: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// 422: well-formed JSON with a value out of bounds.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Validation", message)
    }

    /// 413: an input (or body) larger than allowed.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "Validation", message)
    }

    /// 404: no such document or endpoint.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    /// 503: the queue is full.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "Overloaded", message)
    }

    /// 503: the index cannot be served now (its files changed and do not open).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "Unhealthy", message)
    }

    /// 504: the request ran past its time limit.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "Timeout", message)
    }

    /// The model thread answered a request with the answer of another kind of request: a bug.
    pub(crate) fn unexpected(endpoint: &str, reply: &Reply) -> Self {
        let kind = match reply {
            Reply::Embedded { .. } => "embeddings",
            Reply::Searched(_) => "a search",
            Reply::Located(_) => "located sentences",
            Reply::Generated(_) => "a generation",
            Reply::Explained(_) => "an explanation",
            Reply::Reranked(_) => "a reranking",
        };
        ApiError::backend(format!("the model thread answered {endpoint} with {kind}"))
    }

    /// 500: the model failed (a bug, not the request's fault).
    pub fn backend(error: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Backend",
            error.to_string(),
        )
    }
}

/// The status each reason the model thread gives has.
impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Input(m) => Self::validation(m),
            Failure::TooLong(m) => Self::too_large(m),
            Failure::UnknownDocument(m) => Self::not_found(m),
            Failure::Expired(m) => Self::timeout(m),
            Failure::Unavailable(m) => Self::unavailable(m),
            Failure::Model(m) => Self::backend(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "error_type": self.kind });
        (self.status, Json(body)).into_response()
    }
}
