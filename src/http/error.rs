//! The one HTTP error type: every failure becomes `{"error": "...", "details": [...]}` with one status
//! per variant. Causes of 5xx are logged here; bodies never echo secrets.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::sequencer::SequencerError;
use crate::store::StoreError;

/// The body of every error response (docs/formats.md section 6).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// One sentence saying what was wrong.
    pub error: String,
    /// Per-item, per-field problems; empty when there are none.
    #[schema(value_type = Vec<ErrorDetail>)]
    pub details: Vec<Value>,
}

/// One problem of an error response: which event (`item`, its position in the request; NDJSON adds
/// `line`), where in it (a JSON pointer, or a parameter name), and what.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// The event's position in the request (per-event problems only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub item: Option<u64>,
    /// The NDJSON line, from 1 (NDJSON bodies only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub line: Option<u64>,
    /// JSON pointer into the event, or the name of the parameter; empty for the whole body.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// An HTTP error response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no bearer token, or not one we know. Never says which.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 403: a valid token whose role may not do this (an auditor posting, a source exporting).
    #[error("this token's role may not do that")]
    Forbidden,
    /// 400: the request is malformed or fails validation; `details` names each field.
    #[error("{message}")]
    BadRequest {
        /// Summary.
        message: String,
        /// Per-item, per-field problems.
        details: Vec<Value>,
    },
    /// 404: nothing at that index or id, or no such route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, but not with this method (`Allow` lists the methods it has).
    #[error("method not allowed here")]
    MethodNotAllowed,
    /// 409: an `event_id` reused with a different body.
    #[error("{message}")]
    Conflict {
        /// Summary.
        message: String,
        /// The conflicting item.
        details: Vec<Value>,
    },
    /// 408: the request took longer than the server's limit (a write may still commit; retrying
    /// is safe, idempotency returns the original receipt).
    #[error("request took longer than the server's time limit")]
    Timeout,
    /// 413: body or event count over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 415: a content type other than JSON or NDJSON.
    #[error("unsupported content type {0:?}: use application/json or application/x-ndjson")]
    UnsupportedMediaType(String),
    /// 429 + `Retry-After` (seconds until the source's bucket holds a token again, at least 1):
    /// the source is over its event rate. Nothing was read or appended; safe to retry then.
    #[error("{message}")]
    RateLimited {
        /// Summary, naming the limit.
        message: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// 503 + `Retry-After`: overloaded (the queue, or the source's requests in flight),
    /// shutting down, or the commit failed. Safe to retry.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or corrupt storage; the cause is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 400 with one detail at `path`.
    pub fn bad_request(message: impl Into<String>, path: &str) -> Self {
        let message = message.into();
        Self::BadRequest {
            details: vec![json!({"path": path, "message": message})],
            message,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(cause) => tracing::error!(%cause, "internal error"),
            Self::Unavailable(cause) => tracing::warn!(%cause, "unavailable"),
            _ => tracing::debug!(%status, error = %self, "request rejected"),
        }
        let details = match &self {
            Self::BadRequest { details, .. } | Self::Conflict { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody {
            error: self.to_string(),
            details,
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Self::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::RateLimited { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

impl From<SequencerError> for ApiError {
    fn from(e: SequencerError) -> Self {
        match e {
            SequencerError::Pushback
            | SequencerError::ShuttingDown
            | SequencerError::CommitFailed(_) => Self::Unavailable(e.to_string()),
            SequencerError::TooManyEvents(..) => Self::TooLarge(e.to_string()),
            SequencerError::Conflict { item, ref event_id } => Self::Conflict {
                details: vec![
                    json!({"item": item, "path": "/event_id", "message": format!("event_id {event_id:?} was already appended with a different body")}),
                ],
                message: format!("{e}; nothing was appended"),
            },
            SequencerError::Store(_) | SequencerError::Tree(_) | SequencerError::Startup(_) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<crate::core::merkle::TreeError> for ApiError {
    fn from(e: crate::core::merkle::TreeError) -> Self {
        use crate::core::merkle::TreeError;
        match e {
            TreeError::IndexOutOfRange { .. } | TreeError::InvalidRange { .. } => {
                Self::bad_request(e.to_string(), "")
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::admin::AdminError> for ApiError {
    fn from(e: crate::admin::AdminError) -> Self {
        use crate::admin::AdminError;
        use crate::auth::AuthError;
        match e {
            AdminError::Exists { .. } => Self::Conflict {
                details: vec![json!({"item": 0, "path": "/name", "message": e.to_string()})],
                message: e.to_string(),
            },
            AdminError::NotFound { .. } => Self::NotFound(e.to_string()),
            AdminError::Auth(AuthError::InvalidName(_)) => {
                Self::bad_request(e.to_string(), "/name")
            }
            AdminError::OriginKey(_) => Self::bad_request(e.to_string(), "/origin_key"),
            AdminError::Auth(_) | AdminError::Store(_) => Self::Internal(e.to_string()),
        }
    }
}
