//! Moderation (IM part 2): bans for a duration, global and per-conversation mutes, the
//! sensitive-word filter and per-user send rate limits. `check_send` runs before every
//! message a user sends.
//!
//! Not built yet: nothing is checked.

use serde_json::Value;
use switchboard_proto::im;

use super::keys::ConvId;
use super::{ImError, ImLogin, ImService};

/// In-memory state of moderation (word matchers per tenant, rate limiters).
#[derive(Debug, Default)]
pub struct Moderation {}

impl ImService {
    /// The app server's request `$im/admin/moderation/{op}` (JSON).
    pub(super) async fn moderation_admin(
        &self,
        op: &str,
        _payload: &[u8],
    ) -> Result<Value, ImError> {
        Err(ImError::NotFound(format!(
            "no such request: moderation/{op}"
        )))
    }

    /// Checks a message user `login` is about to send to `conv` (`peer`: the recipient of
    /// a 1:1 message) and may rewrite its content (masked words).
    pub(super) fn check_send(
        &self,
        _login: &ImLogin,
        _conv: &ConvId,
        _peer: Option<u64>,
        _req: &mut im::SendRequest,
    ) -> Result<(), ImError> {
        Ok(())
    }
}
