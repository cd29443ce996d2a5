//! The IM service's errors and their stable codes (the `Status.code` of the protocol, HTTP
//! status codes of the admin API and the gateway).

use switchboard_proto::ReasonCode;
use switchboard_proto::im::Status;

use crate::store::StoreError;

/// Why an IM operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("banned")]
    Banned,
    /// The recipient has blacklisted the sender.
    #[error("blocked: {0}")]
    Blocked(String),
    /// Muted (globally, in this conversation or group) or banned from sending.
    #[error("muted: {0}")]
    Muted(String),
    /// The content contains a word the tenant rejects.
    #[error("sensitive content: {0}")]
    Sensitive(String),
    /// Sending too fast.
    #[error("rate limited: {0}")]
    RateLimited(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("gone: {0}")]
    Gone(String),
    #[error("too large: {0}")]
    TooLarge(String),
    /// A signed REST call's nonce was already used (a replay; `nonces`).
    #[error("replayed: {0}")]
    Replayed(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ImError {
    /// The stable code (HTTP meaning).
    pub fn code(&self) -> u32 {
        match self {
            ImError::BadRequest(_) => 400,
            ImError::Unauthorized(_) => 401,
            ImError::Banned | ImError::Forbidden(_) => 403,
            ImError::Blocked(_) => 405,
            ImError::Muted(_) => 423,
            ImError::RateLimited(_) => 429,
            ImError::Sensitive(_) => 451,
            ImError::NotFound(_) => 404,
            ImError::Conflict(_) => 409,
            ImError::Gone(_) => 410,
            ImError::TooLarge(_) => 413,
            ImError::Replayed(_) => 440,
            ImError::Internal(_) => 500,
            ImError::Unavailable(_) => 503,
        }
    }

    /// The protocol status.
    pub fn status(&self) -> Status {
        Status {
            code: self.code(),
            message: self.to_string(),
        }
    }

    /// The MQTT 5 reason code of the request's PUBACK (only codes PUBACK may carry,
    /// MQTT 5.0 section 3.4.2.1).
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            ImError::BadRequest(_) => ReasonCode::PayloadFormatInvalid,
            ImError::Unauthorized(_)
            | ImError::Banned
            | ImError::Forbidden(_)
            | ImError::Blocked(_)
            | ImError::Muted(_)
            | ImError::Sensitive(_)
            | ImError::Replayed(_) => ReasonCode::NotAuthorized,
            ImError::RateLimited(_) => ReasonCode::QuotaExceeded,
            ImError::TooLarge(_) | ImError::Unavailable(_) => ReasonCode::QuotaExceeded,
            ImError::NotFound(_) | ImError::Conflict(_) | ImError::Gone(_) => {
                ReasonCode::ImplementationSpecificError
            }
            ImError::Internal(_) => ReasonCode::UnspecifiedError,
        }
    }
}

impl From<StoreError> for ImError {
    fn from(e: StoreError) -> Self {
        ImError::Unavailable(e.to_string())
    }
}

/// A success status.
pub fn ok() -> Option<Status> {
    Some(Status {
        code: 0,
        message: String::new(),
    })
}
