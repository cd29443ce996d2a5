//! Call signalling in a cluster (`docs/cluster.md`, "Calls and chatrooms").
//!
//! A call lives in the memory of one node, its *owner*: the node the caller started it
//! on. Its id says so: in cluster mode a call id is `{random}-{owner}`, the owner's node id
//! in hex (so it is a safe NATS token). A request about a call owned elsewhere (`accept`,
//! `hangup`, `signal`, an `invite` into the call...) is forwarded as a NATS request to the
//! owner's subject `{prefix}.imcall.{owner}` and answered with the owner's answer, so the
//! call's state machine, its ring timers and its call log stay on one node. Events reach
//! the parties' devices on any node through their inboxes, like every IM event.
//!
//! Busy: each node tells the others whenever a user's call changes (`busy` notes, sent
//! under the calls lock, so in order); an invitation checks the owner's own calls and the
//! other nodes' busy users. Two invitations of one user through two nodes within the
//! note's flight time (about a millisecond) can both ring: each call goes on by itself,
//! and the user may be in both until one ends.
//!
//! When the owner dies its calls end with it: forwarded requests find no responder and
//! are answered 404, as after a single broker's restart; the other nodes drop the dead
//! node's busy users after a lease.
//!
//! Frames: a request is the JSON [`Head`], a newline, then the request's protobuf bytes;
//! the answer is `0` followed by the answer's protobuf bytes, or `1` followed by the JSON
//! [`Failure`].

use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use switchboard_proto::im;

use super::{ImCluster, Note};
use crate::im::{ImError, ImLogin, ImService};

/// How long a forwarded request waits for the owner's answer.
const FORWARD_WAIT: Duration = Duration::from_secs(10);

/// Who asks, and what (a forwarded request's header).
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    tid: u64,
    uid: u64,
    account: String,
    platform: String,
    token_id: String,
    client_id: String,
    op: String,
}

/// A forwarded request's error.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Failure {
    code: u32,
    message: String,
}

/// `node` as a NATS-safe token (lower-case hex of its bytes).
pub(super) fn node_tag(node: &str) -> String {
    node.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The owner tag of a cluster call id (`{random}-{tag}`), when it has a well-formed one.
fn owner_of(call_id: &str) -> Option<&str> {
    let (_, tag) = call_id.rsplit_once('-')?;
    (!tag.is_empty() && tag.len() <= 256 && tag.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(tag)
}

pub(super) fn failure_of(e: &ImError) -> Failure {
    let message = match e {
        ImError::BadRequest(m)
        | ImError::Unauthorized(m)
        | ImError::Blocked(m)
        | ImError::Muted(m)
        | ImError::Sensitive(m)
        | ImError::RateLimited(m)
        | ImError::Forbidden(m)
        | ImError::NotFound(m)
        | ImError::Conflict(m)
        | ImError::Gone(m)
        | ImError::TooLarge(m)
        | ImError::Replayed(m)
        | ImError::Unavailable(m)
        | ImError::Internal(m) => m.clone(),
        ImError::Banned => String::new(),
    };
    Failure {
        code: e.code(),
        message,
    }
}

pub(super) fn error_of(f: Failure) -> ImError {
    let m = f.message;
    match f.code {
        400 => ImError::BadRequest(m),
        401 => ImError::Unauthorized(m),
        403 if m.is_empty() => ImError::Banned,
        403 => ImError::Forbidden(m),
        404 => ImError::NotFound(m),
        409 => ImError::Conflict(m),
        410 => ImError::Gone(m),
        413 => ImError::TooLarge(m),
        503 => ImError::Unavailable(m),
        _ => ImError::Internal(m),
    }
}

impl ImCluster {
    /// This node's calls subject.
    pub(super) fn calls_subject(&self, tag: &str) -> String {
        format!("{}.imcall.{tag}", self.prefix)
    }

    /// User `uid`'s call is now `call` ("": none); tells the other nodes.
    pub(in crate::im) fn busy(&self, tid: u64, uid: u64, call: &str) {
        self.send(&Note::Busy {
            node: self.node.clone(),
            tid,
            uid,
            call: call.to_owned(),
        });
    }

    /// Whether the user is in (or rung for) a call owned by another node.
    pub(in crate::im) fn busy_elsewhere(&self, tid: u64, uid: u64) -> bool {
        self.busy.lock().contains_key(&(tid, uid))
    }

    /// Applies a `busy` note of `node`.
    pub(super) fn apply_busy(&self, node: String, tid: u64, uid: u64, call: String) {
        let mut busy = self.busy.lock();
        if call.is_empty() {
            if busy.get(&(tid, uid)).is_some_and(|(n, _)| *n == node) {
                busy.remove(&(tid, uid));
            }
        } else {
            busy.insert((tid, uid), (node, call));
        }
    }
}

impl ImService {
    /// A new call's id: `base`, with this node's tag in cluster mode.
    pub(in crate::im) fn cluster_call_id(&self, base: String) -> String {
        match self.cluster() {
            Some(c) => format!("{base}-{}", node_tag(&c.node)),
            None => base,
        }
    }

    /// Whether user `uid` is in a call owned by another node (never without cluster mode).
    pub(in crate::im) fn busy_elsewhere(&self, tid: u64, uid: u64) -> bool {
        self.cluster().is_some_and(|c| c.busy_elsewhere(tid, uid))
    }

    /// Forwards call request `op` to the call's owner when that is another node, with the
    /// owner's answer; `None`: handle it here.
    pub(in crate::im) async fn call_forwarded(
        &self,
        login: &ImLogin,
        client_id: &str,
        op: &str,
        payload: &[u8],
    ) -> Option<Result<Vec<u8>, ImError>> {
        let c = self.cluster()?;
        let call_id = if op == "invite" {
            im::CallInviteRequest::decode(payload).ok()?.call_id
        } else {
            im::CallRequest::decode(payload).ok()?.call_id
        };
        let owner = owner_of(&call_id)?;
        if owner == node_tag(&c.node) {
            return None;
        }
        let head = Head {
            tid: login.tenant,
            uid: login.uid,
            account: login.account.clone(),
            platform: login.platform.clone(),
            token_id: login.token_id.clone(),
            client_id: client_id.to_owned(),
            op: op.to_owned(),
        };
        let head = match serde_json::to_vec(&head) {
            Ok(h) => h,
            Err(e) => return Some(Err(ImError::Internal(format!("call forward: {e}")))),
        };
        let mut body = BytesMut::with_capacity(head.len() + 1 + payload.len());
        body.put_slice(&head);
        body.put_u8(b'\n');
        body.put_slice(payload);
        let subject = c.calls_subject(owner);
        let answer =
            tokio::time::timeout(FORWARD_WAIT, c.client.request(subject, body.freeze())).await;
        let msg = match answer {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::debug!(call = %call_id, error = %e, "call owner did not answer");
                return Some(Err(ImError::NotFound(format!(
                    "call {call_id} (its node is gone)"
                ))));
            }
            Err(_) => {
                return Some(Err(ImError::Unavailable(format!(
                    "the node of call {call_id} did not answer in time"
                ))));
            }
        };
        Some(match msg.payload.split_first() {
            Some((0, rest)) => Ok(rest.to_vec()),
            Some((1, rest)) => Err(serde_json::from_slice::<Failure>(rest)
                .map(error_of)
                .unwrap_or_else(|e| ImError::Internal(format!("call forward answer: {e}")))),
            _ => Err(ImError::Internal("call forward: empty answer".into())),
        })
    }

    /// Answers one forwarded request (called by the forwarded-request server, `tasks::serve_forwarded`).
    pub(super) async fn serve_call(&self, body: &[u8]) -> Bytes {
        let answer = match body.iter().position(|b| *b == b'\n') {
            Some(at) => match serde_json::from_slice::<Head>(&body[..at]) {
                Ok(h) => {
                    let login = ImLogin {
                        tenant: h.tid,
                        uid: h.uid,
                        account: h.account,
                        platform: h.platform,
                        token_id: h.token_id,
                    };
                    self.call_request(&login, &h.client_id, &h.op, &body[at + 1..])
                        .await
                }
                Err(e) => Err(ImError::BadRequest(format!("call forward header: {e}"))),
            },
            None => Err(ImError::BadRequest("call forward: no header".into())),
        };
        answer_bytes(answer.as_deref())
    }
}

/// The NATS reply to a request forwarded to this node: 0 and the answer, or 1 and the
/// error as [`Failure`] JSON (read back with [`error_of`]).
pub(super) fn answer_bytes(answer: Result<&[u8], &ImError>) -> Bytes {
    let mut out = BytesMut::new();
    match answer {
        Ok(b) => {
            out.put_u8(0);
            out.put_slice(b);
        }
        Err(e) => {
            out.put_u8(1);
            let f = serde_json::to_vec(&failure_of(e)).unwrap_or_default();
            out.put_slice(&f);
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_name_their_owner_and_errors_round_trip() {
        let tag = node_tag("node.1 x");
        assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(owner_of(&format!("0a1b-{tag}")), Some(tag.as_str()));
        assert_eq!(owner_of("0a1b2c"), None);
        assert_eq!(owner_of("0a1b-x.>"), None);
        assert_eq!(owner_of("0a1b-"), None);
        for e in [
            ImError::NotFound("call 1".into()),
            ImError::Conflict("busy".into()),
            ImError::Forbidden("no".into()),
            ImError::Banned,
        ] {
            assert_eq!(error_of(failure_of(&e)), e);
        }
    }
}
