//! Group messages and notices: appended once to the group's log under the conversation
//! lock (so seqs and events follow one order with every other message of the group), then
//! delivered by reference: the event is encoded once and its bytes shared by one publish
//! per online member; offline members read the same log entry through sync and get a
//! batched push job.
//!
//! A change of the group (join, kick, ...) is committed here too, in one transaction with
//! its notice, holding the lock until it is durable and the cached member list replaced:
//! every message after the notice goes to the new member list, none before it does.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use prost::Message as _;
use switchboard_proto::QoS;
use switchboard_proto::im::{self, ConvType, event::Kind};

use super::{GroupState, Personal, check_id, key};
use crate::im::broadcast::has_subscriber;
use crate::im::error::{ImError, ok};
use crate::im::keys::{self, ConvId};
use crate::im::messaging::check_message;
use crate::im::records::UserConvRecord;
use crate::im::{ImLogin, ImService, inbox, now_ms, presence};
use crate::message::Message;
use crate::store::{Op, OpResult, Table};

/// Accounts per batched push job (a job is one broker publish, whatever its size).
const PUSH_BATCH: usize = 500;

/// A change of a group committed with its notice.
pub(super) struct Change {
    /// The caller's ops (removals, requests, ...).
    pub ops: Vec<Op>,
    /// The group before the change (the notice's audience if the group is dismissed).
    pub old: Option<Arc<GroupState>>,
    /// The group after the change (its record is written); `None`: dismissed.
    pub new: Option<GroupState>,
    /// Users who join with this change: their member records, index entries and
    /// conversation rows are written here, history starting at the log head.
    pub joiners: Vec<u64>,
}

impl ImService {
    /// A user's message to a group, from their device with MQTT session `device` (0: not
    /// a device; see `send_from`).
    pub(in crate::im) async fn send_group(
        &self,
        login: &ImLogin,
        device: u64,
        mut req: im::SendRequest,
    ) -> Result<im::SendResponse, ImError> {
        let tid = login.tenant;
        let tenant = self.tenant(tid)?;
        check_message(&req, tenant.policy.max_message_bytes)?;
        let gid = req.to.strip_prefix("g:").unwrap_or(&req.to).to_owned();
        check_id(&gid)?;
        let state = self
            .group_state(tid, &gid)?
            .ok_or_else(|| ImError::NotFound(format!("group {gid}")))?;
        let Some(me) = state.members.get(&login.uid) else {
            return Err(ImError::Forbidden(format!(
                "you are not a member of group {gid}"
            )));
        };
        let now = now_ms();
        if me.muted_until_ms > now {
            return Err(ImError::Muted(format!(
                "you are muted in group {gid} until {} (Unix ms)",
                me.muted_until_ms
            )));
        }
        if state.rec.all_muted && state.role(login.uid) == Some(im::GroupRole::Member) {
            return Err(ImError::Muted(format!(
                "group {gid} is muted: only its owner and admins may speak"
            )));
        }
        if req.burn_after_read {
            // The first member to read would destroy it for everyone.
            return Err(ImError::BadRequest(
                "burn after read is for 1:1 conversations".into(),
            ));
        }
        let conv = ConvId::Group(gid.clone());
        self.check_send(login, &conv, None, &mut req)?;
        self.hook_before_send(tid, &login.account, &mut req).await?;
        let msg = im::Message {
            from: login.account.clone(),
            client_msg_id: req.client_msg_id,
            content: req.content,
            mentions: req.mentions,
            mention_all: req.mention_all,
            burn_after_read: req.burn_after_read,
            ..im::Message::default()
        };
        let (seq, server_time_ms, duplicate) = self
            .group_append_from(tid, &gid, msg, Some(login.uid), None, device)
            .await?;
        Ok(im::SendResponse {
            status: ok(),
            conversation: conv.to_string(),
            seq,
            server_time_ms,
            duplicate,
        })
    }

    /// Appends `msg` (a chat message, or the notice of `change`) to group `gid`'s log and
    /// delivers it. `sender`: the member whose read position follows (and whose client
    /// message id makes resends idempotent). Returns the seq, the server time and whether
    /// it was a resend.
    pub(super) async fn group_append(
        &self,
        tid: u64,
        gid: &str,
        msg: im::Message,
        sender: Option<u64>,
        change: Option<Change>,
    ) -> Result<(u64, u64, bool), ImError> {
        self.group_append_from(tid, gid, msg, sender, change, 0)
            .await
    }

    /// [`ImService::group_append`] of a message sent from the sender's device with MQTT
    /// session `device`, which does not get its own copy back if it subscribed with No
    /// Local.
    async fn group_append_from(
        &self,
        tid: u64,
        gid: &str,
        mut msg: im::Message,
        sender: Option<u64>,
        change: Option<Change>,
        device: u64,
    ) -> Result<(u64, u64, bool), ImError> {
        let conv = ConvId::Group(gid.to_owned());
        let log = keys::log(tid, &conv);
        msg.conversation = conv.to_string();
        msg.conv_type = ConvType::Group as i32;
        msg.to = gid.to_owned();
        let chat = change.is_none();
        let lock = self.conv_lock(tid, &conv).lock().await;
        msg.server_time_ms = now_ms();
        let idem = match (sender, msg.client_msg_id.is_empty()) {
            (Some(s), false) => Some(keys::idem(s, &msg.client_msg_id)),
            _ => None,
        };
        let append = |ops: &mut Vec<Op>, audience: &GroupState| {
            ops.push(Op::Append {
                log: log.clone(),
                idem: idem.clone(),
                value: msg.encode_to_vec(),
            });
            // The sender's delivered position follows from its read one (`user_convs`).
            if let Some(s) = sender.filter(|s| audience.members.contains_key(s)) {
                ops.push(Op::SetToLogHead {
                    table: Table::Cursors,
                    key: keys::cursor(tid, s, &conv, keys::Cursor::Read),
                    log: log.clone(),
                });
            }
        };
        let (audience, (previous, _turn), applied) = match change {
            None => {
                // The member list as of this message's place in the log.
                let state = self
                    .group_state(tid, gid)?
                    .ok_or_else(|| ImError::NotFound(format!("group {gid}")))?;
                if let Some(s) = sender
                    && !state.members.contains_key(&s)
                {
                    return Err(ImError::Forbidden(format!(
                        "you are not a member of group {gid}"
                    )));
                }
                let mut ops = Vec::with_capacity(3);
                append(&mut ops, &state);
                // Submitted under the lock (the store keeps the order), awaited without it.
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.store.write(ops, Some(tx));
                let turn = self.next_turn(tid, &conv);
                drop(lock);
                let applied = rx
                    .await
                    .map_err(|_| ImError::Unavailable("store writer stopped".into()))??;
                (state, turn, applied)
            }
            Some(c) => {
                let mut ops = c.ops;
                let mut new = c.new;
                if let Some(s) = new.as_mut() {
                    let head = self.store.log_last(&log)?;
                    for uid in &c.joiners {
                        let Some(m) = s.members.get_mut(uid) else {
                            continue;
                        };
                        m.min_seq = head;
                        let row = UserConvRecord {
                            min_seq: head,
                            peer: gid.to_owned(),
                            updated_ms: msg.server_time_ms,
                            ..UserConvRecord::default()
                        };
                        ops.push(self.put_row(tid, *uid, &conv, &row)?);
                        ops.push(json_put(
                            Table::GroupMembers,
                            key::member(tid, gid, *uid),
                            m,
                        )?);
                        ops.push(Op::Put {
                            table: Table::GroupMembers,
                            key: key::user_group(tid, *uid, gid),
                            value: Vec::new(),
                        });
                        s.personal.lock().remove(uid);
                    }
                    s.rec.member_count = s.members.len() as u32;
                    ops.push(json_put(Table::Groups, key::group(tid, gid), &s.rec)?);
                }
                if let (Some(o), Some(n)) = (&c.old, &new) {
                    // Read positions of members who left are of no use any more.
                    let mut personal = n.personal.lock();
                    for uid in o.members.keys().filter(|u| !n.members.contains_key(u)) {
                        personal.remove(uid);
                    }
                }
                let new = new.map(Arc::new);
                let audience = match (&new, c.old) {
                    (Some(n), _) => n.clone(),
                    (None, Some(o)) => o,
                    (None, None) => {
                        return Err(ImError::Internal("a change without a group".into()));
                    }
                };
                append(&mut ops, &audience);
                // Held until durable and the member list replaced: the next message of the
                // group goes to the new list.
                let applied = self.commit(ops).await?;
                self.set_group_state(tid, gid, new);
                let turn = self.next_turn(tid, &conv);
                drop(lock);
                (audience, turn, applied)
            }
        };
        if let Some(p) = previous {
            // Dropped or done: either way the previous message's events are out.
            let _ = p.await;
        }
        let Some((seq, duplicate)) = applied.results.iter().find_map(|r| match r {
            OpResult::Appended { seq, duplicate } => Some((*seq, *duplicate)),
            OpResult::Counter(_) => None,
        }) else {
            return Err(ImError::Internal("append returned no seq".into()));
        };
        if duplicate {
            let time = self.message_at(&log, seq).map_or(0, |m| m.server_time_ms);
            return Ok((seq, time, true));
        }
        msg.seq = seq;
        // Mentions raise the mentioned members' mention position (one cursor each;
        // @all: every member's, bounded by the group's size).
        let mentioned: Vec<u64> = if msg.mention_all {
            audience.members.keys().copied().collect()
        } else {
            msg.mentions
                .iter()
                .filter_map(|a| audience.uid_of(a))
                .collect()
        };
        let follow_up: Vec<Op> = mentioned
            .into_iter()
            .filter(|u| sender != Some(*u))
            .map(|u| self.raise(tid, u, &conv, keys::Cursor::Mention, seq))
            .collect();
        if !follow_up.is_empty() {
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
        self.fan_out(tid, &conv, &msg, &audience, sender, device);
        if chat {
            self.hook_after_send(tid, &msg);
        } else {
            // A change of the group: the app server's `group` webhook.
            self.hook_group_change(tid, gid, &msg);
        }
        Ok((seq, msg.server_time_ms, false))
    }

    /// Delivers a stored message of a group: one publish per online member (the same
    /// encoded bytes; with the member's unread counts inline, or followed by an `unread`
    /// event), batched push jobs for the others (and for members whose devices are all in
    /// the background) when a push worker listens, members with do-not-disturb and
    /// notices skipped. The member loop takes each shared lock once per message, not
    /// once per member.
    fn fan_out(
        &self,
        tid: u64,
        conv: &ConvId,
        msg: &im::Message,
        state: &GroupState,
        sender: Option<u64>,
        device: u64,
    ) {
        let Some(b) = self.broker() else { return };
        let payload = inbox::message_event(msg);
        let conv_name = conv.to_string();
        // Notices (group changes) count as unread but are not pushed.
        let notice = matches!(
            msg.content.as_ref().and_then(|c| c.body.as_ref()),
            Some(im::content::Body::Notice(_))
        );
        let topic = format!("{}{tid}", presence::PUSH_PREFIX);
        // Push jobs need every offline member's do-not-disturb flag; without a push
        // worker (or for a notice) only the online members' (and the sender's) own state
        // is read: in a big group most members are offline.
        let pushing = !notice && has_subscriber(&b, &topic);
        let online = self.online_flags(tid, state.members.keys().copied());
        let wanted = |i: usize, uid: u64| online[i] || pushing || sender == Some(uid);
        // Read positions and do-not-disturb: cached ones in one lock, the others (first
        // message after the group was cached) read from the store.
        let mut personal = Vec::with_capacity(state.members.len());
        let mut missing = Vec::new();
        {
            let cache = state.personal.lock();
            // Only the wanted members are looked up: in a big group most are not.
            for (i, uid) in state.members.keys().enumerate() {
                let p = match wanted(i, *uid).then(|| cache.get(uid)) {
                    None => Personal::default(),
                    Some(Some(p)) => *p,
                    Some(None) => {
                        missing.push((i, *uid));
                        Personal::default()
                    }
                };
                personal.push(p);
            }
        }
        for (i, uid) in missing {
            if let Ok(p) = self.personal(tid, conv, state, uid) {
                personal[i] = p;
            }
        }
        // How the online members are reached, their unread totals counted (one lock).
        let mut reached = self
            .reach_many(
                tid,
                state
                    .members
                    .keys()
                    .zip(&personal)
                    .zip(&online)
                    .filter(|(_, on)| **on)
                    .map(|((&uid, p), _)| {
                        let count = (sender != Some(uid)).then_some(u64::from(!p.dnd));
                        (uid, count)
                    }),
            )
            .into_iter();
        let mut push: Vec<&String> = Vec::new();
        for (((&uid, m), p), on) in state.members.iter().zip(&personal).zip(&online) {
            // Gone offline since the flags were read: reached as offline.
            let r = if *on { reached.next().flatten() } else { None };
            if sender == Some(uid) {
                // Sending read the conversation for the sender.
                if p.read_seq + 1 < msg.seq {
                    self.forget_total(tid, uid);
                }
                if r.is_some() {
                    self.publish_own(&b, tid, uid, payload.clone(), device);
                }
                continue;
            }
            if let Some(r) = &r {
                let read_seq = p.read_seq.max(m.min_seq);
                let at = inbox::At {
                    conv,
                    name: &conv_name,
                    seq: msg.seq,
                };
                self.deliver_counted(&b, tid, uid, at, read_seq, r, &payload);
            }
            if pushing && !p.dnd && !r.is_some_and(|r| r.foreground) {
                push.push(&m.account);
            }
        }
        if let Some(s) = sender
            && let Some(e) = state.personal.lock().get_mut(&s)
        {
            e.read_seq = msg.seq;
        }
        if let (Some(c), Some(s)) = (self.cluster(), sender) {
            // Sending moved the sender's read position: other nodes' copies are stale.
            c.personal_changed(tid, &state.rec.id, vec![s]);
        }
        if let Some(c) = self.cluster()
            && !push.is_empty()
        {
            c.push_job(push.len().div_ceil(PUSH_BATCH) as u64);
        }
        if push.is_empty() {
            // No push worker listens (not even a persistent session): a job would reach
            // no one.
            return;
        }
        let hide = self.tenant(tid).is_ok_and(|t| t.policy.hide_preview);
        let title = if state.rec.name.is_empty() {
            state.rec.id.clone()
        } else {
            state.rec.name.clone()
        };
        // The worker renders title and body from the tenant's `group_*` templates; the
        // preview alone goes in `body`.
        let body = if hide {
            String::new()
        } else {
            presence::preview(msg)
        };
        let (kind, file_name) = if msg.from.is_empty() {
            ("system", String::new())
        } else if hide {
            (presence::kind(msg), String::new())
        } else {
            (presence::kind(msg), presence::file_name(msg))
        };
        let sender_name = self.display_name(tid, &msg.from);
        for (i, users) in push.chunks(PUSH_BATCH).enumerate() {
            let job = im::PushJob {
                job_id: format!("{tid}:{conv}:{}:batch{i}", msg.seq),
                tenant: tid,
                title: title.clone(),
                body: body.clone(),
                conversation: conv.to_string(),
                seq: msg.seq,
                collapse_key: conv.to_string(),
                from: msg.from.clone(),
                users: users.iter().map(|a| (*a).clone()).collect(),
                kind: kind.to_owned(),
                sender_name: sender_name.clone(),
                group_name: title.clone(),
                file_name: file_name.clone(),
                group: true,
                ..im::PushJob::default()
            };
            b.publish_detached(Arc::new(Message {
                topic: topic.clone(),
                payload: Bytes::from(job.encode_to_vec()),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: None,
                expires_at: None,
                origin: 0,
            }));
        }
    }

    /// A member's read position and do-not-disturb flag (read from their conversation
    /// row the first time, then kept with the cached group).
    fn personal(
        &self,
        tid: u64,
        conv: &ConvId,
        state: &GroupState,
        uid: u64,
    ) -> Result<Personal, ImError> {
        if let Some(p) = state.personal.lock().get(&uid) {
            return Ok(*p);
        }
        let generation = self
            .cluster()
            .map_or(0, |c| c.personal_gen.load(Ordering::Acquire));
        let p = self
            .user_conv(tid, uid, conv)?
            .map(|r| Personal {
                read_seq: r.read_seq,
                dnd: r.muted,
            })
            .unwrap_or_default();
        if self
            .cluster()
            .is_none_or(|c| c.personal_gen.load(Ordering::Acquire) == generation)
        {
            state.personal.lock().insert(uid, p);
        }
        Ok(p)
    }

    /// Sends `event` to every online member of `conv` if it is a group (a recall).
    pub(in crate::im) fn group_emit(&self, tid: u64, conv: &ConvId, event: &Kind) {
        let ConvId::Group(gid) = conv else { return };
        let Ok(Some(state)) = self.group_state(tid, gid) else {
            return;
        };
        for &uid in state.members.keys() {
            self.emit(tid, uid, event.clone(), QoS::AtLeastOnce);
        }
    }

    /// Tells some users' devices of a group change.
    pub(super) fn group_event(&self, tid: u64, uids: &[u64], ev: &im::GroupEvent) {
        for &uid in uids {
            self.emit(tid, uid, Kind::Group(ev.clone()), QoS::AtLeastOnce);
        }
    }
}

/// A put of a JSON record.
pub(super) fn json_put<T: serde::Serialize>(
    table: Table,
    key: Vec<u8>,
    value: &T,
) -> Result<Op, ImError> {
    Ok(Op::Put {
        table,
        key,
        value: serde_json::to_vec(value).map_err(|e| ImError::Internal(e.to_string()))?,
    })
}
