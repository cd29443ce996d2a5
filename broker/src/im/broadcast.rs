//! Broadcast and system messages to many users (IM part 2): to every user of a tenant, to
//! a department and its sub-departments, to a list. A broadcast is one append to a shared
//! log (`b:{scope}`) that each user reads through sync, never a write per user.
//!
//! Not built yet: every request answers 404.

use serde_json::Value;

use super::{ImError, ImLogin, ImService};

impl ImService {
    /// The app server's request `$im/admin/broadcast/{op}` (JSON).
    pub(super) async fn broadcast_admin(
        &self,
        op: &str,
        _payload: &[u8],
    ) -> Result<Value, ImError> {
        Err(ImError::NotFound(format!(
            "no such request: broadcast/{op}"
        )))
    }

    /// Whether the device's user reads broadcast log `scope`.
    pub(super) fn may_read_broadcast(
        &self,
        _login: &ImLogin,
        _scope: &str,
    ) -> Result<bool, ImError> {
        Ok(false)
    }
}
