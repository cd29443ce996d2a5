//! Contacts (friend requests), blacklists, user profiles and presence subscriptions
//! (IM part 2).
//!
//! Not built yet: every request answers 404.

use serde_json::Value;

use super::{ImError, ImLogin, ImService};

/// In-memory state of the social features (presence subscribers; caches).
#[derive(Debug, Default)]
pub struct Social {}

impl ImService {
    /// A client's request `$im/req/social/{op}`.
    pub(super) async fn social_request(
        &self,
        _login: &ImLogin,
        op: &str,
        _payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        Err(ImError::NotFound(format!("no such request: social/{op}")))
    }

    /// The app server's request `$im/admin/social/{op}` (JSON).
    pub(super) async fn social_admin(&self, op: &str, _payload: &[u8]) -> Result<Value, ImError> {
        Err(ImError::NotFound(format!("no such request: social/{op}")))
    }
}
