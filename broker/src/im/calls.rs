//! Call signalling (IM part 2, seeds 000/001): invite, ringing, accept, reject, cancel,
//! hang up and busy, 1:1 and multi-party, with timeouts. Media is out of scope.
//!
//! Not built yet: every request answers 404.

use super::{ImError, ImLogin, ImService};

/// Calls in progress (in memory).
#[derive(Debug, Default)]
pub struct Calls {}

impl ImService {
    /// A client's call request `$im/req/call/{op}`.
    pub(super) async fn call_request(
        &self,
        _login: &ImLogin,
        op: &str,
        _payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        Err(ImError::NotFound(format!("no such request: call/{op}")))
    }
}
