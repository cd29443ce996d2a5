//! Importing past 1:1 messages from another platform (`$im/admin/import_messages`, JSON,
//! `$service` only): `{tenant, messages: [{from, to, content, server_time_ms,
//! client_msg_id}]}`, at most [`MAX_IMPORT`] per call. Each message is appended to the
//! pair's conversation with its original time and no delivery (no events, no pushes, no
//! webhooks): the conversation appears in both users' lists and history, read by both (an
//! import is past traffic). Appends follow the log's order, so import before a pair's live
//! traffic starts; a `client_msg_id` seen before (per sender) is skipped, so a retried
//! import adds nothing twice. Messages older than the tenant's retention are stored but
//! hidden from history, like any other. Answers `{rows: [{conversation, seq, duplicate} | {error}]}`,
//! one per message in order.

use prost::Message as _;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::im::{self, ConvType};

use super::keys::{self, ConvId};
use super::records::UserConvRecord;
use super::{ImError, ImService};
use crate::store::{Op, OpResult, Table};

/// Messages per import call.
pub const MAX_IMPORT: usize = 500;

#[derive(Deserialize)]
struct Past {
    from: String,
    to: String,
    content: Value,
    server_time_ms: u64,
    client_msg_id: String,
}

#[derive(Deserialize)]
struct Import {
    tenant: u64,
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
        let mut rows = Vec::with_capacity(r.messages.len());
        for m in r.messages {
            rows.push(match self.import_one(r.tenant, m).await {
                Ok(v) => v,
                Err(e @ (ImError::Unavailable(_) | ImError::Internal(_))) => return Err(e),
                Err(e) => json!({ "error": { "code": e.code(), "message": e.to_string() } }),
            });
        }
        Ok(json!({ "rows": rows }))
    }

    async fn import_one(&self, tid: u64, m: Past) -> Result<Value, ImError> {
        if m.client_msg_id.is_empty() || m.client_msg_id.len() > 64 {
            return Err(ImError::BadRequest(
                "client_msg_id must be 1..=64 bytes".into(),
            ));
        }
        let from = self
            .user(tid, &m.from)?
            .ok_or_else(|| ImError::NotFound(format!("user {}", m.from)))?;
        let to = self
            .user(tid, &m.to)?
            .ok_or_else(|| ImError::NotFound(format!("user {}", m.to)))?;
        if from.uid == to.uid {
            return Err(ImError::BadRequest("from and to are the same user".into()));
        }
        let content = super::json::content_from_json(&m.content)?;
        let max = self.tenant(tid)?.policy.max_message_bytes;
        if content.encoded_len() > max {
            return Err(ImError::TooLarge(format!(
                "content larger than {max} bytes"
            )));
        }
        let conv = ConvId::private(from.uid, to.uid);
        let msg = im::Message {
            conversation: conv.to_string(),
            conv_type: ConvType::Private as i32,
            from: from.account.clone(),
            to: to.account.clone(),
            client_msg_id: m.client_msg_id.clone(),
            content: Some(content),
            server_time_ms: m.server_time_ms,
            ..im::Message::default()
        };
        let log = keys::log(tid, &conv);
        let _lock = self.conv_lock(tid, &conv).lock().await;
        let mut ops = Vec::new();
        for (u, peer) in [(&from, &to), (&to, &from)] {
            if self.user_conv(tid, u.uid, &conv)?.is_none() {
                let row = UserConvRecord {
                    peer: peer.account.clone(),
                    updated_ms: m.server_time_ms,
                    ..UserConvRecord::default()
                };
                ops.push(self.put_row(tid, u.uid, &conv, &row)?);
            }
        }
        ops.push(Op::Append {
            log: log.clone(),
            idem: Some(keys::idem(from.uid, &m.client_msg_id)),
            value: msg.encode_to_vec(),
        });
        // Past traffic is read by both sides.
        for uid in [from.uid, to.uid] {
            for c in [keys::Cursor::Read, keys::Cursor::Delivered] {
                ops.push(Op::SetToLogHead {
                    table: Table::Cursors,
                    key: keys::cursor(tid, uid, &conv, c),
                    log: log.clone(),
                });
            }
        }
        let applied = self.commit(ops).await?;
        let appended = applied.results.iter().find_map(|r| match r {
            OpResult::Appended { seq, duplicate } => Some((*seq, *duplicate)),
            _ => None,
        });
        let Some((seq, duplicate)) = appended else {
            return Err(ImError::Internal("append returned no seq".into()));
        };
        Ok(json!({ "conversation": conv.to_string(), "seq": seq, "duplicate": duplicate }))
    }
}
