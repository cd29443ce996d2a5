//! Importing a group's past messages (`import_messages` with `type: "group"`, see
//! `service_import`): appended to the group's log with their original time under the
//! conversation lock, like a live message but with no fan-out (no events, pushes or
//! webhooks). Afterwards [`ImService::group_import_read`] moves every member's read
//! position to the log head, unless the import asked for the messages to count as unread.

use prost::Message as _;
use switchboard_proto::im::{self, ConvType};

use super::check_id;
use crate::im::ImService;
use crate::im::error::ImError;
use crate::im::keys::{self, ConvId};
use crate::im::records::UserRecord;
use crate::store::{Op, OpResult, Table};

impl ImService {
    /// Appends a past message of `from` to group `gid` with time `server_time_ms`. The
    /// sender need not be a member any more (past traffic); the group must exist. Returns
    /// `(conversation, seq, duplicate)`.
    pub(in crate::im) async fn group_import(
        &self,
        tid: u64,
        gid: &str,
        from: &UserRecord,
        content: im::Content,
        server_time_ms: u64,
        client_msg_id: &str,
    ) -> Result<(ConvId, u64, bool), ImError> {
        check_id(gid)?;
        let Some(state) = self.group_state(tid, gid)? else {
            return Err(ImError::NotFound(format!("group {gid}")));
        };
        let conv = ConvId::Group(gid.to_owned());
        let msg = im::Message {
            conversation: conv.to_string(),
            conv_type: ConvType::Group as i32,
            from: from.account.clone(),
            to: gid.to_owned(),
            client_msg_id: client_msg_id.to_owned(),
            content: Some(content),
            server_time_ms,
            ..im::Message::default()
        };
        let log = keys::log(tid, &conv);
        let _lock = self.conv_lock(tid, &conv).lock().await;
        let mut ops = vec![Op::Append {
            log: log.clone(),
            idem: Some(keys::idem(from.uid, client_msg_id)),
            value: msg.encode_to_vec(),
        }];
        // A sender who is still a member has read its own message, as on a live send.
        let member = state.members.contains_key(&from.uid);
        if member {
            ops.push(Op::SetToLogHead {
                table: Table::Cursors,
                key: keys::cursor(tid, from.uid, &conv, keys::Cursor::Read),
                log,
            });
        }
        let applied = self.commit(ops).await?;
        if member {
            self.group_personal_changed(tid, &conv, from.uid);
        }
        let appended = applied.results.iter().find_map(|r| match r {
            OpResult::Appended { seq, duplicate } => Some((*seq, *duplicate)),
            _ => None,
        });
        let Some((seq, duplicate)) = appended else {
            return Err(ImError::Internal("append returned no seq".into()));
        };
        Ok((conv, seq, duplicate))
    }

    /// After an import into group `gid`: every current member has read (and received) up
    /// to the log head, in one commit; the cached read positions are dropped.
    pub(in crate::im) async fn group_import_read(
        &self,
        tid: u64,
        gid: &str,
    ) -> Result<(), ImError> {
        let Some(state) = self.group_state(tid, gid)? else {
            return Ok(());
        };
        let conv = ConvId::Group(gid.to_owned());
        let log = keys::log(tid, &conv);
        let _lock = self.conv_lock(tid, &conv).lock().await;
        let mut ops = Vec::with_capacity(state.members.len() * 2);
        for uid in state.members.keys() {
            for c in [keys::Cursor::Read, keys::Cursor::Delivered] {
                ops.push(Op::SetToLogHead {
                    table: Table::Cursors,
                    key: keys::cursor(tid, *uid, &conv, c),
                    log: log.clone(),
                });
            }
        }
        self.commit(ops).await?;
        state.personal.lock().clear();
        if let Some(c) = self.cluster() {
            c.group_changed(tid, gid);
        }
        Ok(())
    }
}
