//! Call signalling conveniences of the SDK (docs/im/calls.md). `CallEvent`s arrive on the
//! ordinary event stream.

use bytes::Bytes;
use switchboard_proto::im;

use crate::im::{ImClient, ImError};

impl ImClient {
    /// Starts a call with `invitees` (or, with `call_id`, invites them into a call this
    /// user is in). `timeout_ms` 0: the broker's ring time (60 s).
    pub async fn call_invite(
        &self,
        call_id: &str,
        invitees: &[&str],
        video: bool,
        payload: Bytes,
        timeout_ms: u32,
    ) -> Result<im::CallInviteResponse, ImError> {
        let req = im::CallInviteRequest {
            call_id: call_id.into(),
            invitees: invitees.iter().map(|s| (*s).to_owned()).collect(),
            video,
            payload,
            timeout_ms,
        };
        self.request("call/invite", &req).await
    }

    /// `op`: "ringing", "accept", "reject", "busy", "cancel", "hangup" or "signal" (to
    /// `to`, or everyone else when empty), with an opaque `payload` passed on.
    pub async fn call_action(
        &self,
        op: &str,
        call_id: &str,
        to: &str,
        payload: Bytes,
    ) -> Result<(), ImError> {
        let req = im::CallRequest {
            call_id: call_id.into(),
            payload,
            to: to.into(),
            reason: String::new(),
        };
        self.request::<_, im::Ack>(&format!("call/{op}"), &req)
            .await
            .map(|_| ())
    }
}
