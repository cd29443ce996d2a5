//! Chatrooms (IM part 2, seed 003: live streaming): ephemeral rooms with in-memory
//! membership, the last N messages for newcomers, gags, blocks, priorities and high fan-out.
//!
//! Not built yet: every request answers 404.

use serde_json::Value;
use switchboard_proto::im;

use super::{ImError, ImLogin, ImService};

/// The chatrooms of every tenant (in memory: chatrooms are not stored).
#[derive(Debug, Default)]
pub struct Rooms {}

impl ImService {
    /// A client's chatroom request `$im/req/room/{op}`.
    pub(super) async fn room_request(
        &self,
        _login: &ImLogin,
        op: &str,
        _payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        Err(ImError::NotFound(format!("no such request: room/{op}")))
    }

    /// The app server's chatroom request `$im/admin/room/{op}` (JSON).
    pub(super) async fn room_admin(&self, op: &str, _payload: &[u8]) -> Result<Value, ImError> {
        Err(ImError::NotFound(format!("no such request: room/{op}")))
    }

    /// A message to a chatroom.
    pub(super) async fn send_room(
        &self,
        _login: &ImLogin,
        _req: im::SendRequest,
    ) -> Result<im::SendResponse, ImError> {
        Err(ImError::BadRequest(
            "chatrooms are not available yet".into(),
        ))
    }

    /// Whether the device's user is in chatroom `room`.
    pub(super) fn in_room(&self, _login: &ImLogin, _room: &str) -> bool {
        false
    }

    /// An IM connection ended: its chatroom memberships end with it.
    pub(super) fn room_disconnected(&self, _login: &ImLogin, _conn_id: u64) {}
}
