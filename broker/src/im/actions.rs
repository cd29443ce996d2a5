//! Acting on stored messages and conversations: recall, read and delivered receipts (with
//! burn after read), typing, pin/mute/hide/clear, and the row and cursor helpers they and
//! sending share.

use prost::Message as _;
use switchboard_proto::QoS;
use switchboard_proto::im::{self, event::Kind};

use super::error::{ImError, ok};
use super::keys::{self, ConvId};
use super::records::UserConvRecord;
use super::{ImLogin, ImService, now_ms};
use crate::store::{Op, Table};

/// Messages read per page when a read receipt looks for burn-after-read messages.
const MAX_BURN: usize = 1000;

impl ImService {
    /// The sender takes message `seq` back, within the tenant's recall window.
    pub async fn recall(
        &self,
        login: &ImLogin,
        req: im::RecallRequest,
    ) -> Result<im::Ack, ImError> {
        let conv = self.own_conv(login, &req.conversation)?;
        let window = self.tenant(login.tenant)?.policy.recall_window_secs;
        let log = keys::log(login.tenant, &conv);
        let _lock = self.conv_lock(login.tenant, &conv).lock().await;
        let mut msg = self.message_at(&log, req.seq)?;
        if msg.from != login.account {
            return Err(ImError::Forbidden(
                "only the sender may recall a message".into(),
            ));
        }
        if msg.recalled {
            return Ok(im::Ack { status: ok() });
        }
        if now_ms().saturating_sub(msg.server_time_ms) > window * 1000 {
            return Err(ImError::Gone(format!(
                "recall window of {window} s has passed"
            )));
        }
        msg.recalled = true;
        msg.content = None;
        self.commit(vec![Op::ReplaceEntry {
            log,
            seq: req.seq,
            value: msg.encode_to_vec(),
        }])
        .await?;
        let event = Kind::Recalled(im::Recalled {
            conversation: conv.to_string(),
            seq: req.seq,
            by: login.account.clone(),
        });
        for uid in self.members(&conv) {
            self.emit(login.tenant, uid, event.clone(), QoS::AtLeastOnce);
        }
        self.group_emit(login.tenant, &conv, &event);
        Ok(im::Ack { status: ok() })
    }

    /// The user read `conversation` up to `seq`: every device's unread count follows, the
    /// peer gets a read receipt, burn-after-read messages from the peer are destroyed.
    pub async fn read(&self, login: &ImLogin, req: im::ReadRequest) -> Result<im::Ack, ImError> {
        let conv = self.own_conv(login, &req.conversation)?;
        let log = keys::log(login.tenant, &conv);
        let _lock = self.conv_lock(login.tenant, &conv).lock().await;
        let mut row = self.own_row(login, &conv)?;
        let max = self.store.log_last(&log)?;
        past_the_end(req.seq, max)?;
        if req.seq <= row.read_seq {
            return Ok(im::Ack { status: ok() });
        }
        let before = row.read_seq;
        row.read_seq = req.seq;
        row.delivered_seq = row.delivered_seq.max(req.seq);
        let mut ops = vec![
            self.raise(login.tenant, login.uid, &conv, keys::Cursor::Read, req.seq),
            self.raise(
                login.tenant,
                login.uid,
                &conv,
                keys::Cursor::Delivered,
                req.seq,
            ),
        ];
        let burned = self.burn(&log, login, before, req.seq)?;
        ops.extend(burned.iter().map(|m| Op::ReplaceEntry {
            log: log.clone(),
            seq: m.seq,
            value: m.encode_to_vec(),
        }));
        self.commit(ops).await?;
        self.group_personal_changed(login.tenant, &conv, login.uid);
        self.read_changed(login.tenant, login.uid, &conv, &row, max);
        if let Some(peer) = conv.peer_of(login.uid) {
            let receipt = im::Receipt {
                kind: im::receipt::Kind::Read as i32,
                conversation: conv.to_string(),
                seq: req.seq,
                by: login.account.clone(),
            };
            self.emit(login.tenant, peer, Kind::Receipt(receipt), QoS::AtLeastOnce);
        }
        for m in burned {
            for uid in self.members(&conv) {
                self.emit(
                    login.tenant,
                    uid,
                    Kind::Message(m.clone()),
                    QoS::AtLeastOnce,
                );
            }
        }
        Ok(im::Ack { status: ok() })
    }

    /// A device received `conversation` up to `seq`: the peer gets a delivered receipt.
    pub async fn delivered(
        &self,
        login: &ImLogin,
        req: im::ReadRequest,
    ) -> Result<im::Ack, ImError> {
        let conv = self.own_conv(login, &req.conversation)?;
        let _lock = self.conv_lock(login.tenant, &conv).lock().await;
        let mut row = self.own_row(login, &conv)?;
        let max = self.store.log_last(&keys::log(login.tenant, &conv))?;
        past_the_end(req.seq, max)?;
        if req.seq <= row.delivered_seq {
            return Ok(im::Ack { status: ok() });
        }
        row.delivered_seq = req.seq;
        self.commit(vec![self.raise(
            login.tenant,
            login.uid,
            &conv,
            keys::Cursor::Delivered,
            req.seq,
        )])
        .await?;
        if let Some(peer) = conv.peer_of(login.uid) {
            let receipt = im::Receipt {
                kind: im::receipt::Kind::Delivered as i32,
                conversation: conv.to_string(),
                seq: req.seq,
                by: login.account.clone(),
            };
            self.emit(login.tenant, peer, Kind::Receipt(receipt), QoS::AtLeastOnce);
        }
        Ok(im::Ack { status: ok() })
    }

    /// "Typing…": transient, to the peer's online devices only, never stored.
    pub fn typing(&self, login: &ImLogin, req: im::TypingRequest) -> Result<im::Ack, ImError> {
        let conv = self.own_conv(login, &req.conversation)?;
        if let Some(peer) = conv.peer_of(login.uid) {
            let t = im::Typing {
                conversation: conv.to_string(),
                from: login.account.clone(),
            };
            self.emit(login.tenant, peer, Kind::Typing(t), QoS::AtMostOnce);
        }
        Ok(im::Ack { status: ok() })
    }

    /// Pin, mute, hide or clear a conversation; the user's devices are told.
    pub async fn update_conversation(
        &self,
        login: &ImLogin,
        req: im::UpdateConversationRequest,
    ) -> Result<im::Ack, ImError> {
        let conv = self.own_conv(login, &req.conversation)?;
        let _lock = self.conv_lock(login.tenant, &conv).lock().await;
        let mut row = self.own_row(login, &conv)?;
        if let Some(p) = req.pinned {
            row.pinned = p;
        }
        if let Some(m) = req.muted {
            row.muted = m;
            self.forget_total(login.tenant, login.uid);
        }
        if let Some(h) = req.hidden {
            row.hidden = h;
        }
        if req.clear_history {
            row.min_seq = self.store.log_last(&keys::log(login.tenant, &conv))?;
            self.forget_total(login.tenant, login.uid);
        }
        row.updated_ms = now_ms();
        self.commit(vec![self.put_row(login.tenant, login.uid, &conv, &row)?])
            .await?;
        self.group_personal_changed(login.tenant, &conv, login.uid);
        // The forgets above went out before the commit: tell the other nodes again.
        self.unread_changed(login.tenant, login.uid);
        let view = self.conversation_view(login.tenant, login.uid, &conv, &row)?;
        self.emit(
            login.tenant,
            login.uid,
            Kind::Conversation(view),
            QoS::AtLeastOnce,
        );
        Ok(im::Ack { status: ok() })
    }

    /// Parses a conversation id a user named and checks it is theirs.
    pub(super) fn own_conv(&self, login: &ImLogin, id: &str) -> Result<ConvId, ImError> {
        let conv = ConvId::parse(id)
            .ok_or_else(|| ImError::BadRequest(format!("not a conversation id: {id:?}")))?;
        let allowed = match &conv {
            ConvId::Group(g) => self.is_group_member(login.tenant, g, login.uid)?,
            ConvId::Broadcast(scope) => self.may_read_broadcast(login, scope)?,
            ConvId::Chatroom(r) => self.in_room(login, r),
            other => other.involves(login.uid),
        };
        if !allowed {
            tracing::info!(tenant = login.tenant, user = %login.account, conversation = id, "access to another user's conversation refused");
            return Err(ImError::Forbidden(format!(
                "conversation {id} is not yours"
            )));
        }
        Ok(conv)
    }

    /// The user's row of a conversation, 404 if the user has none.
    pub(super) fn own_row(
        &self,
        login: &ImLogin,
        conv: &ConvId,
    ) -> Result<UserConvRecord, ImError> {
        if let Some(row) = self.user_conv(login.tenant, login.uid, conv)? {
            return Ok(row);
        }
        // Broadcast conversations have no stored row until the user changes a flag.
        if let ConvId::Broadcast(scope) = conv
            && let Some(u) = self.user(login.tenant, &login.account)?
        {
            return self.broadcast_row(login.tenant, &u, scope);
        }
        Err(ImError::NotFound(format!("conversation {conv}")))
    }

    /// The uids a conversation's events go to.
    fn members(&self, conv: &ConvId) -> Vec<u64> {
        match conv {
            ConvId::Private(a, b) => vec![*a, *b],
            ConvId::System(u) | ConvId::App(_, u) => vec![*u],
            ConvId::Group(_) | ConvId::Chatroom(_) | ConvId::Broadcast(_) => Vec::new(),
        }
    }

    /// User `uid`'s row of `conv`, with its positions.
    pub(super) fn user_conv(
        &self,
        tid: u64,
        uid: u64,
        conv: &ConvId,
    ) -> Result<Option<UserConvRecord>, ImError> {
        Ok(self.user_convs(tid, &[uid], conv)?.pop().flatten())
    }

    /// The conversation rows of several users (with their positions), in one read.
    pub(super) fn user_convs(
        &self,
        tid: u64,
        uids: &[u64],
        conv: &ConvId,
    ) -> Result<Vec<Option<UserConvRecord>>, ImError> {
        const CURSORS: [keys::Cursor; 3] = [
            keys::Cursor::Read,
            keys::Cursor::Delivered,
            keys::Cursor::Mention,
        ];
        let mut owned = Vec::with_capacity(uids.len() * 4);
        for &uid in uids {
            owned.push((Table::UserConvs, keys::user_conv(tid, uid, conv)));
            for c in CURSORS {
                owned.push((Table::Cursors, keys::cursor(tid, uid, conv, c)));
            }
        }
        let wanted: Vec<(Table, &[u8])> = owned.iter().map(|(t, k)| (*t, k.as_slice())).collect();
        let values = self.store.get_many(&wanted)?;
        let position = |v: &Option<Vec<u8>>| {
            v.as_deref()
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map_or(0, u64::from_be_bytes)
        };
        values
            .chunks(4)
            .map(|v| {
                let Some(raw) = &v[0] else { return Ok(None) };
                let mut row: UserConvRecord = serde_json::from_slice(raw)
                    .map_err(|e| ImError::Internal(format!("corrupt conversation row: {e}")))?;
                row.read_seq = position(&v[1]);
                // What was read was delivered: sending moves only the read position.
                row.delivered_seq = position(&v[2]).max(row.read_seq);
                row.mention_seq = position(&v[3]);
                Ok(Some(row))
            })
            .collect()
    }

    /// Reads a row's positions from the `Cursors` table.
    pub(super) fn fill_cursors(
        &self,
        tid: u64,
        uid: u64,
        conv: &ConvId,
        row: &mut UserConvRecord,
    ) -> Result<(), ImError> {
        let get = |c| -> Result<u64, ImError> {
            Ok(self
                .store
                .get(Table::Cursors, &keys::cursor(tid, uid, conv, c))?
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map_or(0, u64::from_be_bytes))
        };
        row.read_seq = get(keys::Cursor::Read)?;
        // What was read was delivered: sending moves only the read position.
        row.delivered_seq = get(keys::Cursor::Delivered)?.max(row.read_seq);
        row.mention_seq = get(keys::Cursor::Mention)?;
        Ok(())
    }

    /// Moves a position forward (never back).
    pub(super) fn raise(&self, tid: u64, uid: u64, conv: &ConvId, c: keys::Cursor, seq: u64) -> Op {
        Op::Max {
            table: Table::Cursors,
            key: keys::cursor(tid, uid, conv, c),
            value: seq,
        }
    }

    pub(super) fn put_row(
        &self,
        tid: u64,
        uid: u64,
        conv: &ConvId,
        row: &UserConvRecord,
    ) -> Result<Op, ImError> {
        Ok(Op::Put {
            table: Table::UserConvs,
            key: keys::user_conv(tid, uid, conv),
            value: serde_json::to_vec(row).map_err(|e| ImError::Internal(e.to_string()))?,
        })
    }

    /// The stored message `seq` of `log`.
    pub(super) fn message_at(&self, log: &[u8], seq: u64) -> Result<im::Message, ImError> {
        let (s, v) = self
            .store
            .log_range(log, seq, seq, 1, false)?
            .into_iter()
            .next()
            .ok_or_else(|| ImError::NotFound(format!("message {seq}")))?;
        let mut m = im::Message::decode(v.as_slice())
            .map_err(|e| ImError::Internal(format!("corrupt message {seq}: {e}")))?;
        m.seq = s;
        Ok(m)
    }

    /// Burn-after-read messages from others among `(after, upto]`, destroyed.
    fn burn(
        &self,
        log: &[u8],
        login: &ImLogin,
        after: u64,
        upto: u64,
    ) -> Result<Vec<im::Message>, ImError> {
        let mut out = Vec::new();
        // Paged through the whole range (bounded by the conversation's message cap): every
        // burn-after-read message the read covers is destroyed.
        let mut from = after + 1;
        while from <= upto {
            let page = self.store.log_range(log, from, upto, MAX_BURN, false)?;
            let Some(&(last, _)) = page.last() else { break };
            for (seq, v) in page {
                let Ok(mut m) = im::Message::decode(v.as_slice()) else {
                    continue;
                };
                if m.burn_after_read && !m.burned && m.from != login.account {
                    m.seq = seq;
                    m.burned = true;
                    m.content = None;
                    out.push(m);
                }
            }
            from = last + 1;
        }
        Ok(out)
    }
}

/// A position a client named must not be past the conversation's last message.
fn past_the_end(seq: u64, max: u64) -> Result<(), ImError> {
    if seq > max {
        return Err(ImError::BadRequest(format!(
            "seq {seq} is past the conversation's last message ({max})"
        )));
    }
    Ok(())
}
