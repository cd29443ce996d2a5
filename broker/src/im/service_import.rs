//! Importing past messages from another platform (`$im/admin/import_messages`, JSON,
//! `$service` only): `{tenant, unread?, messages: [{type?, from, to, content,
//! server_time_ms, client_msg_id}]}`, at most [`MAX_IMPORT`] per call. `type` is
//! `private` (the default: `to` is a user), `group` (`to` is an existing group; the sender
//! need not be a member any more) or `system` (`to` is a user; `from` is ignored, the
//! tenant sends). Chatrooms keep no log and broadcasts are live only, so neither imports.
//!
//! Each message is appended to its conversation with its original time and no delivery
//! (no events, no pushes, no webhooks); a call's messages are appended oldest first, so
//! seqs follow their times. Private and system conversations appear in the users' lists;
//! group members already have the group's row. Unless `unread` is true, an import is read
//! past traffic: every member's read position moves to the log head (for a group, once per
//! group at the end of the call); with `unread`, only each sender has read its own
//! messages, and the others see them as unread. Appends follow the log's order, so import
//! before a conversation's live traffic starts; a `client_msg_id` seen before (per sender)
//! is skipped, so a retried import adds nothing twice. Messages older than the tenant's
//! retention are stored but hidden from history, like any other. Answers `{rows:
//! [{conversation, seq, duplicate} | {error}]}`, one per message in the request's order.

use std::collections::BTreeSet;

use prost::Message as _;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::im;

use super::keys::{self, ConvId};
use super::records::UserConvRecord;
use super::{ImError, ImService, now_ms};
use crate::store::{Op, OpResult, Table};

/// Messages per import call.
pub const MAX_IMPORT: usize = 500;
/// How far in the future an imported message's time may be (clock skew).
const FUTURE_SLACK_MS: u64 = 5 * 60 * 1000;

/// What kind of conversation a past message belongs to.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    #[default]
    Private,
    Group,
    System,
}

#[derive(Deserialize)]
struct Past {
    #[serde(default, rename = "type")]
    kind: Kind,
    #[serde(default)]
    from: String,
    to: String,
    content: Value,
    server_time_ms: u64,
    client_msg_id: String,
}

#[derive(Deserialize)]
struct Import {
    tenant: u64,
    #[serde(default)]
    unread: bool,
    messages: Vec<Past>,
}

impl ImService {
    /// `import_messages`.
    pub(super) async fn import_messages(&self, payload: &[u8]) -> Result<Value, ImError> {
        let r: Import = serde_json::from_slice(payload)
            .map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))?;
        if r.messages.is_empty() || r.messages.len() > MAX_IMPORT {
            return Err(ImError::BadRequest(format!(
                "messages must hold 1..={MAX_IMPORT} entries"
            )));
        }
        // Oldest first (stable: equal times keep the request's order).
        let mut order: Vec<usize> = (0..r.messages.len()).collect();
        order.sort_by_key(|i| r.messages[*i].server_time_ms);
        let mut rows = vec![Value::Null; r.messages.len()];
        let mut groups = BTreeSet::new();
        for i in order {
            let m = &r.messages[i];
            rows[i] = match self.import_one(r.tenant, m, r.unread).await {
                Ok(v) => {
                    if m.kind == Kind::Group {
                        groups.insert(m.to.clone());
                    }
                    v
                }
                Err(e @ (ImError::Unavailable(_) | ImError::Internal(_))) => return Err(e),
                Err(e) => json!({ "error": { "code": e.code(), "message": e.to_string() } }),
            };
        }
        if !r.unread {
            for gid in groups {
                self.group_import_read(r.tenant, &gid).await?;
            }
        }
        Ok(json!({ "rows": rows }))
    }

    async fn import_one(&self, tid: u64, m: &Past, unread: bool) -> Result<Value, ImError> {
        if m.client_msg_id.is_empty() || m.client_msg_id.len() > 64 {
            return Err(ImError::BadRequest(
                "client_msg_id must be 1..=64 bytes".into(),
            ));
        }
        if m.server_time_ms == 0 || m.server_time_ms > now_ms() + FUTURE_SLACK_MS {
            return Err(ImError::BadRequest(
                "server_time_ms must be a past Unix time in milliseconds".into(),
            ));
        }
        let content = super::json::content_from_json(&m.content)?;
        let max = self.tenant(tid)?.policy.max_message_bytes;
        if content.encoded_len() > max {
            return Err(ImError::TooLarge(format!(
                "content larger than {max} bytes"
            )));
        }
        let user = |account: &str| {
            self.user(tid, account)?
                .ok_or_else(|| ImError::NotFound(format!("user {account}")))
        };
        let to_user = |kind: &str| {
            if m.to.is_empty() {
                return Err(ImError::BadRequest(format!(
                    "a {kind} message needs `to` (a user)"
                )));
            }
            user(&m.to)
        };
        let (conv, seq, duplicate) = match m.kind {
            Kind::Group => {
                let from = user(&m.from)?;
                self.group_import(
                    tid,
                    &m.to,
                    &from,
                    content,
                    m.server_time_ms,
                    &m.client_msg_id,
                )
                .await?
            }
            Kind::Private => {
                let (from, to) = (user(&m.from)?, to_user("private")?);
                if from.uid == to.uid {
                    return Err(ImError::BadRequest("from and to are the same user".into()));
                }
                let conv = ConvId::private(from.uid, to.uid);
                let members = [
                    (to.uid, from.account.clone()),
                    (from.uid, to.account.clone()),
                ];
                let msg = past_message(&conv, &from.account, &to.account, m, content);
                let (seq, dup) = self
                    .import_direct(tid, &conv, msg, &members, from.uid, unread)
                    .await?;
                (conv, seq, dup)
            }
            Kind::System => {
                let to = to_user("system")?;
                let conv = ConvId::System(to.uid);
                let msg = past_message(&conv, "", &to.account, m, content);
                // System messages are idempotent per (conversation, client message id), as
                // `send_system`'s are.
                let (seq, dup) = self
                    .import_direct(tid, &conv, msg, &[(to.uid, String::new())], 0, unread)
                    .await?;
                (conv, seq, dup)
            }
        };
        Ok(json!({ "conversation": conv.to_string(), "seq": seq, "duplicate": duplicate }))
    }

    /// Appends `msg` to the private or system conversation `conv` of `members` (uid, the
    /// peer their row names), creating missing rows; `sender`: the idempotency key's uid
    /// (0: the tenant). Read positions as the module docs say.
    async fn import_direct(
        &self,
        tid: u64,
        conv: &ConvId,
        msg: im::Message,
        members: &[(u64, String)],
        sender: u64,
        unread: bool,
    ) -> Result<(u64, bool), ImError> {
        let log = keys::log(tid, conv);
        let _lock = self.conv_lock(tid, conv).lock().await;
        let mut ops = Vec::new();
        for (uid, peer) in members {
            if self.user_conv(tid, *uid, conv)?.is_none() {
                let row = UserConvRecord {
                    peer: peer.clone(),
                    updated_ms: msg.server_time_ms,
                    ..UserConvRecord::default()
                };
                ops.push(self.put_row(tid, *uid, conv, &row)?);
            }
        }
        ops.push(Op::Append {
            log: log.clone(),
            idem: Some(keys::idem(sender, &msg.client_msg_id)),
            value: msg.encode_to_vec(),
        });
        for (uid, _) in members {
            if unread && *uid != sender {
                continue;
            }
            for c in [keys::Cursor::Read, keys::Cursor::Delivered] {
                ops.push(Op::SetToLogHead {
                    table: Table::Cursors,
                    key: keys::cursor(tid, *uid, conv, c),
                    log: log.clone(),
                });
            }
        }
        let applied = self.commit(ops).await?;
        applied
            .results
            .iter()
            .find_map(|r| match r {
                OpResult::Appended { seq, duplicate } => Some((*seq, *duplicate)),
                _ => None,
            })
            .ok_or_else(|| ImError::Internal("append returned no seq".into()))
    }
}

/// The stored form of past message `m` in `conv`.
fn past_message(
    conv: &ConvId,
    from: &str,
    to: &str,
    m: &Past,
    content: im::Content,
) -> im::Message {
    im::Message {
        conversation: conv.to_string(),
        conv_type: conv.conv_type() as i32,
        from: from.to_owned(),
        to: to.to_owned(),
        client_msg_id: m.client_msg_id.clone(),
        content: Some(content),
        server_time_ms: m.server_time_ms,
        ..im::Message::default()
    }
}
