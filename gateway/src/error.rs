//! The gateway's errors as HTTP answers: JSON `{code, message}` with a stable numeric
//! code. Codes below 1000 are the IM service's status codes (docs/protocol.md section 12)
//! passed through with the matching HTTP status; the gateway's own are five digits, the
//! first three the HTTP status (docs/gateway.md lists them). Inside a request, the body
//! also carries the request's id (`request_id`, the `X-Request-Id` answer header).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::service::ServiceError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
    /// Seconds to wait before retrying (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The tenant's call budget is spent.
    pub fn rate_limited(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                42900,
                "too many calls for this tenant; retry later",
            )
        }
    }

    /// 400 with code 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, 400, message)
    }

    /// The request has no or incomplete signature headers.
    pub fn missing_auth(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, 40100, message)
    }
    /// The app key is unknown.
    pub fn unknown_app_key() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, 40101, "unknown App-Key")
    }
    /// The signature does not match.
    pub fn bad_signature() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, 40102, "signature mismatch")
    }
    /// The timestamp is outside the accepted window.
    pub fn stale_timestamp() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            40103,
            "Timestamp outside ±300 seconds of the server's clock",
        )
    }
    /// The nonce was used before within the window.
    pub fn nonce_reused() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, 40104, "Nonce already used")
    }
    /// The body is larger than the limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            41300,
            format!("body larger than {limit} bytes"),
        )
    }
}

/// The answer to a path no route serves: 404, code 404, in the JSON shape of every error.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    tracing::info!(path = uri.path(), "gateway: no such endpoint");
    ApiError::new(
        StatusCode::NOT_FOUND,
        404,
        format!("no such endpoint: {}", uri.path()),
    )
}

/// The answer to a served path called with another method: 405, code 40500 (405 alone is
/// the IM service's "blocked").
pub async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    tracing::info!(%method, path = uri.path(), "gateway: method not allowed");
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        40500,
        format!("{method} is not served at {}", uri.path()),
    )
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Api { code, message } => ApiError::new(
                StatusCode::from_u16(code as u16)
                    .ok()
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                code,
                message,
            ),
            ServiceError::Unavailable(m) => {
                tracing::warn!(error = %m, "gateway: broker unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, 50300, m)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "message": self.message });
        if let Some(id) = crate::request_id::current() {
            body["request_id"] = id.into();
        }
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        r
    }
}
