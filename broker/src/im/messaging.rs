//! Sending messages: 1:1, system notices and workbench-app messages (acting on them once
//! stored: `actions`).
//!
//! A message is handed to the store under its conversation's lock, so seqs follow the
//! order of submission (the seq is assigned in the commit, resends recognised by their
//! client message id), but the lock is not held while the commit is awaited: messages of a
//! busy conversation share group commits. Events are published after the commit, each
//! message waiting for the previous one's turn, so every device sees a conversation's
//! messages in seq order. The sender's PUBACK and "sent" answer leave after the commit.
//! Reads, recalls and flag changes hold the lock across their (rarer) commits.

use prost::Message as _;
use switchboard_proto::im::{self, ConvType};

use super::error::{ImError, ok};
use super::inbox;
use super::keys::{self, ConvId};
use super::records::UserConvRecord;
use super::{ImLogin, ImService, now_ms};
use crate::store::{Op, OpResult, Table};

/// Longest client message id.
const MAX_CLIENT_MSG_ID: usize = 64;

/// Who sends a message: a user (uid 0: the system) and, when a device sent it, that
/// device's MQTT session (0 otherwise; see [`ImService::send_from`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Sender {
    pub uid: u64,
    pub device: u64,
}

impl Sender {
    /// A sender that is not a device (the system, a call's signalling).
    pub fn user(uid: u64) -> Sender {
        Sender { uid, device: 0 }
    }
}

/// One member of a conversation a message goes to.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub uid: u64,
    pub account: String,
    /// What this member sees as the conversation's peer.
    pub peer: String,
}

impl ImService {
    /// A 1:1 message from `login` (a user's device).
    pub async fn send(
        &self,
        login: &ImLogin,
        req: im::SendRequest,
    ) -> Result<im::SendResponse, ImError> {
        self.send_from(login, 0, req).await
    }

    /// A message from `login`'s device with MQTT session `device` (0: not a device, e.g.
    /// the REST API sending on the user's behalf): the sending device does not get the
    /// message event back if it subscribed to its inbox with No Local.
    pub(super) async fn send_from(
        &self,
        login: &ImLogin,
        device: u64,
        req: im::SendRequest,
    ) -> Result<im::SendResponse, ImError> {
        match ConvType::try_from(req.conv_type).unwrap_or(ConvType::Unspecified) {
            ConvType::Unspecified | ConvType::Private => {}
            ConvType::Group => return self.send_group(login, device, req).await,
            ConvType::Chatroom => return self.send_room(login, req).await,
            other => {
                return Err(ImError::BadRequest(format!(
                    "clients cannot send to {} conversations",
                    other.as_str_name()
                )));
            }
        }
        let tenant = self.tenant(login.tenant)?;
        check_message(&req, tenant.policy.max_message_bytes)?;
        let peer = self
            .user(login.tenant, &req.to)?
            .ok_or_else(|| ImError::NotFound(format!("user {}", req.to)))?;
        if peer.uid == login.uid {
            return Err(ImError::BadRequest("cannot send to yourself".into()));
        }
        let conv = ConvId::private(login.uid, peer.uid);
        let mut req = req;
        self.check_send(login, &conv, Some(peer.uid), &mut req)?;
        self.hook_before_send(login.tenant, &login.account, &mut req)
            .await?;
        let msg = im::Message {
            conversation: conv.to_string(),
            conv_type: ConvType::Private as i32,
            from: login.account.clone(),
            to: peer.account.clone(),
            client_msg_id: req.client_msg_id,
            content: req.content,
            mentions: req.mentions,
            mention_all: req.mention_all,
            burn_after_read: req.burn_after_read,
            ..im::Message::default()
        };
        let members = [
            Member {
                uid: login.uid,
                account: login.account.clone(),
                peer: peer.account.clone(),
            },
            Member {
                uid: peer.uid,
                account: peer.account.clone(),
                peer: login.account.clone(),
            },
        ];
        let (seq, server_time_ms, duplicate) = self
            .deliver(
                login.tenant,
                &conv,
                msg,
                Some(Sender {
                    uid: login.uid,
                    device,
                }),
                &members,
            )
            .await?;
        Ok(im::SendResponse {
            status: ok(),
            conversation: conv.to_string(),
            seq,
            server_time_ms,
            duplicate,
        })
    }

    /// A system notice (from the tenant, not a user) to user `account`, or a workbench
    /// app's message when `app` is given. `client_msg_id` makes resends idempotent.
    pub async fn send_system(
        &self,
        tid: u64,
        account: &str,
        app: Option<&str>,
        client_msg_id: &str,
        content: im::Content,
    ) -> Result<(ConvId, u64), ImError> {
        let user = self
            .user(tid, account)?
            .ok_or_else(|| ImError::NotFound(format!("user {account}")))?;
        let (conv, from) = match app {
            Some(a) if !a.is_empty() && a.len() <= 64 && !a.contains(':') => {
                (ConvId::App(a.to_owned(), user.uid), a.to_owned())
            }
            Some(_) => return Err(ImError::BadRequest("invalid app id".into())),
            None => (ConvId::System(user.uid), String::new()),
        };
        let msg = im::Message {
            conversation: conv.to_string(),
            conv_type: conv.conv_type() as i32,
            from: from.clone(),
            to: account.to_owned(),
            client_msg_id: client_msg_id.to_owned(),
            content: Some(content),
            ..im::Message::default()
        };
        let members = [Member {
            uid: user.uid,
            account: user.account.clone(),
            peer: from,
        }];
        // System and app messages are idempotent per (conversation, client message id).
        let (seq, _, _) = self
            .deliver(tid, &conv, msg, Some(Sender::user(0)), &members)
            .await?;
        Ok((conv, seq))
    }

    /// Appends `msg` to `conv` and tells its members. `sender`'s uid (0 for the system) is
    /// used for the idempotency key and the sender's read position; its device is skipped
    /// by the sender's own copy when it subscribed with No Local.
    /// Returns the seq, the server time and whether it was a resend.
    pub(super) async fn deliver(
        &self,
        tid: u64,
        conv: &ConvId,
        mut msg: im::Message,
        sender: Option<Sender>,
        members: &[Member],
    ) -> Result<(u64, u64, bool), ImError> {
        let (sender, device) = (sender.map(|s| s.uid), sender.map_or(0, |s| s.device));
        let log = keys::log(tid, conv);
        let lock = self.conv_lock(tid, conv).lock().await;
        let uids: Vec<u64> = members.iter().map(|m| m.uid).collect();
        let mut rows = self.user_convs(tid, &uids, conv)?;
        msg.server_time_ms = now_ms();
        let idem = match (sender, msg.client_msg_id.is_empty()) {
            (Some(s), false) => Some(keys::idem(s, &msg.client_msg_id)),
            _ => None,
        };
        // One commit: members' rows (created by the first message, unhidden by a new one),
        // the message, the sender's read position and mentions, which follow the append.
        let mut ops = Vec::new();
        for (m, row) in members.iter().zip(&mut rows) {
            // New rows go with the message; unhiding waits until the message is known to
            // be new (a resend must not change anyone's list).
            if row.is_none() {
                let r = UserConvRecord {
                    peer: m.peer.clone(),
                    updated_ms: msg.server_time_ms,
                    ..UserConvRecord::default()
                };
                ops.push(self.put_row(tid, m.uid, conv, &r)?);
                *row = Some(r);
            }
        }
        // A device resends a message whose answer it missed right after reconnecting:
        // checking the conversation's latest appends is enough, and writes no index page.
        ops.push(Op::AppendRecent {
            log: log.clone(),
            idem,
            value: msg.encode_to_vec(),
        });
        // The sender has read up to its own message (harmless on a resend: the head); its
        // delivered position follows from it (see `user_convs`).
        if let Some(s) = sender.filter(|s| members.iter().any(|m| m.uid == *s)) {
            ops.push(Op::SetToLogHead {
                table: Table::Cursors,
                key: keys::cursor(tid, s, conv, keys::Cursor::Read),
                log: log.clone(),
            });
        }
        // Submitted under the lock (the store keeps the order), awaited without it.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store.write(ops, Some(tx));
        let (previous, _turn) = self.next_turn(tid, conv);
        drop(lock);
        let applied = rx
            .await
            .map_err(|_| ImError::Unavailable("store writer stopped".into()))??;
        if let Some(p) = previous {
            // Dropped or done: either way the previous message's events are out.
            let _ = p.await;
        }
        let Some(OpResult::Appended { seq, duplicate }) = applied.results.first().copied() else {
            return Err(ImError::Internal("append returned no seq".into()));
        };
        if duplicate {
            let stored = self
                .store
                .log_range(&log, seq, seq, 1, false)?
                .into_iter()
                .next()
                .and_then(|(_, v)| im::Message::decode(v.as_slice()).ok());
            let time = stored.map_or(0, |m| m.server_time_ms);
            return Ok((seq, time, true));
        }
        msg.seq = seq;
        // Now known to be new: mentions flagged, hidden conversations shown again.
        let mut follow_up = Vec::new();
        for (m, row) in members.iter().zip(&mut rows) {
            if sender == Some(m.uid) {
                continue;
            }
            if msg.mention_all || msg.mentions.contains(&m.account) {
                follow_up.push(self.raise(tid, m.uid, conv, keys::Cursor::Mention, seq));
                if let Some(r) = row.as_mut() {
                    r.mention_seq = seq;
                }
            }
        }
        for (m, row) in members.iter().zip(&mut rows) {
            if let Some(r) = row.as_mut().filter(|r| r.hidden) {
                r.hidden = false;
                r.updated_ms = msg.server_time_ms;
                follow_up.push(self.put_row(tid, m.uid, conv, r)?);
            }
        }
        if !follow_up.is_empty() {
            // Rare (mentions, hidden conversations): durable before anyone hears of it.
            self.commit(follow_up).await?;
        }
        let cap = self.tenant(tid)?.policy.max_messages_per_conversation;
        if cap > 0 && seq > cap {
            // Housekeeping, not part of the message's commit.
            self.store.write(
                vec![Op::TrimLog {
                    log: log.clone(),
                    below: seq - cap + 1,
                }],
                None,
            );
        }
        // The event is encoded once for every member's devices.
        let b = self.broker();
        let payload = inbox::message_event(&msg);
        let conv_name = conv.to_string();
        for (m, row) in members.iter().zip(&rows) {
            if sender == Some(m.uid) {
                // Sending read the conversation for the sender.
                if row.as_ref().is_some_and(|r| r.read_seq + 1 < seq) {
                    self.forget_total(tid, m.uid);
                }
                if let Some(b) = &b
                    && self.is_online(tid, m.uid)
                {
                    self.publish_own(b, tid, m.uid, payload.clone(), device);
                }
                continue;
            }
            let muted = row.as_ref().is_some_and(|r| r.muted);
            let reach = self.reach(tid, m.uid, Some(u64::from(!muted)));
            if let (Some(b), Some(r)) = (&b, &reach) {
                let read_seq = row.as_ref().map_or(0, |r| r.read_seq.max(r.min_seq));
                let at = inbox::At {
                    conv,
                    name: &conv_name,
                    seq,
                };
                self.deliver_counted(b, tid, m.uid, at, read_seq, r, &payload);
            }
            if !muted && !reach.is_some_and(|r| r.foreground) {
                self.push_job(tid, m.uid, &msg);
            }
        }
        self.hook_after_send(tid, &msg);
        Ok((seq, msg.server_time_ms, false))
    }
}

/// Validates what a client asked to send.
pub(super) fn check_message(req: &im::SendRequest, max_bytes: usize) -> Result<(), ImError> {
    if req.client_msg_id.is_empty() || req.client_msg_id.len() > MAX_CLIENT_MSG_ID {
        return Err(ImError::BadRequest(format!(
            "client_msg_id must be 1..={MAX_CLIENT_MSG_ID} bytes"
        )));
    }
    let Some(content) = &req.content else {
        return Err(ImError::BadRequest("message has no content".into()));
    };
    if content.body.is_none() {
        return Err(ImError::BadRequest("message has no content".into()));
    }
    let size = content.encoded_len();
    if size > max_bytes {
        return Err(ImError::TooLarge(format!(
            "content of {size} bytes exceeds the limit of {max_bytes}"
        )));
    }
    if let Some(im::content::Body::Text(t)) = &content.body
        && t.text.is_empty()
    {
        return Err(ImError::BadRequest("empty text".into()));
    }
    if req.mentions.len() > 100 {
        return Err(ImError::BadRequest("more than 100 mentions".into()));
    }
    Ok(())
}
