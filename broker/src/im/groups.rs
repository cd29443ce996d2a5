//! Groups (IM part 2, seed 001): creation by clients or the app server, membership with
//! roles, approval of join requests, mutes, announcements, and group messages stored once
//! in the group's log and delivered by reference.
//!
//! Not built yet: every request answers 404.

use serde_json::Value;
use switchboard_proto::im;

use super::{ImError, ImLogin, ImService};

/// In-memory state of the group service (caches; the store is the truth).
#[derive(Debug, Default)]
pub struct Groups {}

impl ImService {
    /// A client's group request `$im/req/group/{op}`.
    pub(super) async fn group_request(
        &self,
        _login: &ImLogin,
        op: &str,
        _payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        Err(ImError::NotFound(format!("no such request: group/{op}")))
    }

    /// The app server's group request `$im/admin/group/{op}` (JSON).
    pub(super) async fn group_admin(&self, op: &str, _payload: &[u8]) -> Result<Value, ImError> {
        Err(ImError::NotFound(format!("no such request: group/{op}")))
    }

    /// A message to a group.
    pub(super) async fn send_group(
        &self,
        _login: &ImLogin,
        _req: im::SendRequest,
    ) -> Result<im::SendResponse, ImError> {
        Err(ImError::BadRequest(
            "group conversations are not available yet".into(),
        ))
    }

    /// Whether user `uid` is a member of group `gid` of tenant `tid`.
    pub(super) fn is_group_member(
        &self,
        _tid: u64,
        _gid: &str,
        _uid: u64,
    ) -> Result<bool, ImError> {
        Ok(false)
    }
}
