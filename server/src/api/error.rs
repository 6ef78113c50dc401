//! The one place that knows HTTP status codes: [`ApiError`] and its `IntoResponse`.
//!
//! Every failure leaves as `{"error": {"code", "message"}}`. Internal causes are logged inside
//! the request's span and never sent to the client.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_protocol::api::{ErrorBody, ErrorDetail};

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed; `code` names the rule.
    BadRequest(&'static str, String),
    /// 401: missing, invalid or expired credentials.
    Unauthorized(String),
    /// 404: absent, or not the caller's (the two are indistinguishable on purpose).
    NotFound(&'static str),
    /// 409: conflicts with the current state.
    Conflict(&'static str, String),
    /// 413: over a size limit or the quota.
    TooLarge(&'static str, String),
    /// 416: a `Range` the content cannot satisfy.
    RangeNotSatisfiable(u64),
    /// 429: rate limited; retry after the duration.
    RateLimited(Duration),
    /// 503: a dependency is down.
    Unavailable(String),
    /// 500: a bug or an unexpected failure; the cause is logged, not sent.
    Internal(String),
}

impl ApiError {
    /// An internal error from any displayable cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(err: crate::db::DbError) -> Self {
        ApiError::internal(err)
    }
}

/// Store errors reaching a handler unmapped are failures of the server's own storage.
impl From<cairn_store::Error> for ApiError {
    fn from(err: cairn_store::Error) -> Self {
        ApiError::internal(err)
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> Self {
        ApiError::internal(err)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::BytesRejection(_) => ApiError::TooLarge(
                "body_too_large",
                format!(
                    "request body is over {} bytes",
                    crate::limits::JSON_BODY_SIZE_MAX
                ),
            ),
            other => ApiError::BadRequest("invalid_json", first_line(&other.body_text())),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest("invalid_path_parameter", first_line(&rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest("invalid_query", first_line(&rejection.body_text()))
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::BadRequest(code, message) => (StatusCode::BAD_REQUEST, code, message),
            ApiError::Unauthorized(message) => (StatusCode::UNAUTHORIZED, "unauthorized", message),
            ApiError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found"),
            ),
            ApiError::Conflict(code, message) => (StatusCode::CONFLICT, code, message),
            ApiError::TooLarge(code, message) => (StatusCode::PAYLOAD_TOO_LARGE, code, message),
            ApiError::RangeNotSatisfiable(size) => {
                let mut response = error_response(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    format!("the range is outside the file's {size} bytes"),
                );
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                return response;
            }
            ApiError::RateLimited(retry) => {
                let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
                let mut response = error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many attempts; try again in {secs} s"),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                return response;
            }
            ApiError::Unavailable(message) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal server error; the server log has details".to_owned(),
                )
            }
        };
        let mut response = error_response(status, code, message);
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message,
        },
    };
    (status, Json(body)).into_response()
}
