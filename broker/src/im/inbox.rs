//! Message events to users' inboxes, the hot path of 1:1 and group delivery.
//!
//! A message's `Event` is encoded once and its bytes are shared by every publish of it.
//! A recipient also learns its new unread counts: as a separate `unread` event after the
//! message, or, when every online device of the user asked for it with the `features`
//! request, inside the message event itself (`Event.unread_after`), which halves the
//! publishes (and TCP writes) per recipient. The inline form is the shared bytes followed
//! by the encoded `unread_after` field: concatenated protobuf encodings of one message
//! merge, so a decoder sees one `Event` with both fields.
//!
//! The per-user facts delivery needs (online, foreground, inline counts, cached unread
//! total) are read under one lock per user ([`ImService::reach`]).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use switchboard_proto::QoS;
use switchboard_proto::im::{self, event::Kind};

use super::ImService;
use super::keys::ConvId;
use super::presence::Online;
use crate::BrokerState;
use crate::message::Message;
use crate::namespace::inbox_topic;

/// How an online user is reached, read under one lock.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reach {
    /// A device is in the foreground (else a push job goes out too).
    pub foreground: bool,
    /// Every online device takes unread counts inside message events.
    pub inline_unread: bool,
    /// The user's unread total after this message, when it was cached (`None`: compute
    /// it from the store).
    pub total: Option<u64>,
}

/// A stored message's place: its conversation, that conversation's id as text (formatted
/// once per fan-out, not per recipient) and its seq.
#[derive(Debug, Clone, Copy)]
pub(super) struct At<'a> {
    pub conv: &'a ConvId,
    pub name: &'a str,
    pub seq: u64,
}

/// How online user `o` is reached; `count` as in [`ImService::reach`].
fn reach_of(o: &mut Online, count: Option<u64>) -> Reach {
    let total = match (count, o.unread_total.as_mut()) {
        (Some(delta), Some(t)) => {
            *t += delta;
            Some(*t)
        }
        (None, t) => t.copied(),
        (Some(_), None) => None,
    };
    Reach {
        foreground: o.devices.iter().any(|d| !d.background),
        inline_unread: !o.devices.is_empty() && o.devices.iter().all(|d| d.inline_unread),
        total,
    }
}

/// In cluster mode: `local` (how the user is reached here) merged with their devices on
/// other nodes; a user counted with a message who has devices elsewhere goes in `changed`
/// (those nodes forget their cached total). A user online only elsewhere has no cached
/// total here (computed from the store).
fn with_remote(
    c: &super::cluster::ImCluster,
    tid: u64,
    uid: u64,
    count: Option<u64>,
    local: Option<Reach>,
    changed: &mut Vec<u64>,
) -> Option<Reach> {
    let Some(r) = c.remote(tid, uid) else {
        return local;
    };
    if count.is_some() {
        changed.push(uid);
    }
    Some(match local {
        Some(l) => Reach {
            foreground: l.foreground || r.foreground,
            inline_unread: l.inline_unread && r.inline_unread,
            total: l.total,
        },
        None => Reach {
            foreground: r.foreground,
            inline_unread: r.inline_unread,
            total: None,
        },
    })
}

/// A recipient's unread counts after a message of one conversation (`im::Unread` without
/// the conversation's name, which every recipient shares).
#[derive(Debug, Clone, Copy)]
struct Counts {
    unread: u64,
    read_seq: u64,
    total: u64,
}

/// `Event.unread_after`'s field number.
const UNREAD_AFTER: u32 = 15;

impl Counts {
    fn unread(self, conversation: &str) -> im::Unread {
        im::Unread {
            conversation: conversation.to_owned(),
            unread: self.unread,
            read_seq: self.read_seq,
            total: self.total,
        }
    }

    /// `Unread`'s number fields with their tags, the zero ones left out (as prost does).
    fn numbers(self) -> impl Iterator<Item = (u32, u64)> {
        [(2, self.unread), (3, self.read_seq), (4, self.total)]
            .into_iter()
            .filter(|(_, v)| *v != 0)
    }

    /// Length of the encoded `Unread` (prost's: zero and empty fields left out).
    fn body_len(self, conversation: &str) -> usize {
        use prost::encoding::{encoded_len_varint, key_len, uint64};
        let mut n = 0;
        if !conversation.is_empty() {
            n += key_len(1) + encoded_len_varint(conversation.len() as u64) + conversation.len();
        }
        for (tag, v) in self.numbers() {
            n += uint64::encoded_len(tag, &v);
        }
        n
    }

    /// Length of [`Counts::put_tail`]'s bytes.
    fn tail_len(self, conversation: &str) -> usize {
        let body = self.body_len(conversation);
        prost::encoding::key_len(UNREAD_AFTER)
            + prost::encoding::encoded_len_varint(body as u64)
            + body
    }

    /// Appends `Event { unread_after: Some(Unread { .. }) }` as prost encodes it, without
    /// building the message (its conversation name would be a copy per recipient).
    fn put_tail(self, conversation: &str, buf: &mut BytesMut) {
        use prost::encoding::{WireType, encode_key, encode_varint, uint64};
        encode_key(UNREAD_AFTER, WireType::LengthDelimited, buf);
        encode_varint(self.body_len(conversation) as u64, buf);
        if !conversation.is_empty() {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(conversation.len() as u64, buf);
            buf.extend_from_slice(conversation.as_bytes());
        }
        for (tag, v) in self.numbers() {
            uint64::encode(tag, &v, buf);
        }
    }
}

/// The encoded `Event` of a message, shared by every recipient: `Event.message` (field 1)
/// written straight from `msg`, the same bytes as encoding an `Event` holding a copy of
/// it, without the copy.
pub(super) fn message_event(msg: &im::Message) -> Bytes {
    let len = prost::encoding::message::encoded_len(1, msg);
    let mut buf = BytesMut::with_capacity(len);
    prost::encoding::message::encode(1, msg, &mut buf);
    buf.freeze()
}

impl ImService {
    /// Whether user `uid` is online, how to reach them, and (with `count`: a message
    /// counted as unread, `delta` 0 for a muted conversation) their unread total after
    /// it, updated in the same lock.
    pub(super) fn reach(&self, tid: u64, uid: u64, count: Option<u64>) -> Option<Reach> {
        let local = {
            let mut online = self.online.lock();
            online.get_mut(&(tid, uid)).map(|o| reach_of(o, count))
        };
        match self.cluster() {
            None => local,
            Some(c) => {
                let mut changed = Vec::new();
                let r = with_remote(c, tid, uid, count, local, &mut changed);
                c.unread_changed(tid, changed);
                r
            }
        }
    }

    /// [`ImService::reach`] for many users at once, under one lock: `(uid, count)` each.
    pub(super) fn reach_many(
        &self,
        tid: u64,
        users: impl Iterator<Item = (u64, Option<u64>)>,
    ) -> Vec<Option<Reach>> {
        let mut online = self.online.lock();
        let Some(c) = self.cluster() else {
            return users
                .map(|(uid, count)| {
                    let o = online.get_mut(&(tid, uid))?;
                    Some(reach_of(o, count))
                })
                .collect();
        };
        let mut changed = Vec::new();
        let out = users
            .map(|(uid, count)| {
                let local = online.get_mut(&(tid, uid)).map(|o| reach_of(o, count));
                with_remote(c, tid, uid, count, local, &mut changed)
            })
            .collect();
        drop(online);
        c.unread_changed(tid, changed);
        out
    }

    /// Whether each of `uids` is online (here or, in cluster mode, on another node),
    /// read under one lock.
    pub(super) fn online_flags(&self, tid: u64, uids: impl Iterator<Item = u64>) -> Vec<bool> {
        let online = self.online.lock();
        let cluster = self.cluster();
        uids.map(|uid| {
            online.contains_key(&(tid, uid))
                || cluster.is_some_and(|c| c.remote(tid, uid).is_some())
        })
        .collect()
    }

    /// The user's unread total once a counted message arrived, from `reach` or computed
    /// (the message is stored: the count includes it) and cached.
    fn total_after(&self, tid: u64, uid: u64, reach: &Reach) -> u64 {
        if let Some(t) = reach.total {
            return t;
        }
        let generation = self.unread_generation();
        let total = self.unread_total(tid, uid).unwrap_or(0);
        if let Some(o) = self.online.lock().get_mut(&(tid, uid))
            && generation == self.unread_generation()
        {
            o.unread_total = Some(total);
        }
        total
    }

    /// Publishes `payload` (an encoded `Event`) to user `uid`'s inbox.
    pub(super) fn publish_inbox(&self, b: &BrokerState, tid: u64, uid: u64, payload: Bytes) {
        self.publish_own(b, tid, uid, payload, 0);
    }

    /// Publishes `payload` to the inbox of user `uid` about something their device with
    /// MQTT session `device` did (0: none): that device does not get it if it subscribed
    /// to its inbox with No Local, the user's other devices do.
    pub(super) fn publish_own(
        &self,
        b: &BrokerState,
        tid: u64,
        uid: u64,
        payload: Bytes,
        device: u64,
    ) {
        b.publish_detached(Arc::new(Message {
            topic: inbox_topic(tid, uid),
            payload,
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires_at: None,
            origin: device,
        }));
    }

    /// Delivers message event `payload` (from [`message_event`]) of the message `at` to
    /// online recipient `uid` (reached as `reach`, obtained with a count) with their
    /// unread counts (`read_seq`: their read position): inline or as an `unread` event
    /// after it; a workbench app conversation's badge follows as `app_unread`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn deliver_counted(
        &self,
        b: &BrokerState,
        tid: u64,
        uid: u64,
        at: At<'_>,
        read_seq: u64,
        reach: &Reach,
        payload: &Bytes,
    ) {
        let At { conv, name, seq } = at;
        let counts = Counts {
            unread: seq.saturating_sub(read_seq),
            read_seq,
            total: self.total_after(tid, uid, reach),
        };
        if reach.inline_unread {
            let mut buf = BytesMut::with_capacity(payload.len() + counts.tail_len(name));
            buf.extend_from_slice(payload);
            counts.put_tail(name, &mut buf);
            self.publish_inbox(b, tid, uid, buf.freeze());
        } else {
            self.publish_inbox(b, tid, uid, payload.clone());
            let ev = im::Event {
                kind: Some(Kind::Unread(counts.unread(name))),
                unread_after: None,
            };
            self.publish_inbox(b, tid, uid, Bytes::from(ev.encode_to_vec()));
        }
        if let ConvId::App(app, _) = conv {
            let badge = im::AppUnread {
                app_id: app.clone(),
                unread: seq.saturating_sub(read_seq),
            };
            let ev = im::Event {
                kind: Some(Kind::AppUnread(badge)),
                unread_after: None,
            };
            self.publish_inbox(b, tid, uid, Bytes::from(ev.encode_to_vec()));
        }
    }

    /// Records what the current connection of device `client_id` understands (`features`
    /// request; a reconnect starts with none).
    pub(super) fn set_features(&self, tid: u64, uid: u64, client_id: &str, inline_unread: bool) {
        let mut online = self.online.lock();
        if let Some(o) = online.get_mut(&(tid, uid)) {
            for d in o.devices.iter_mut().filter(|d| d.client_id == client_id) {
                d.inline_unread = inline_unread;
            }
            self.announce_locked(&online, tid, uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unread_tail_is_the_encoding_of_an_event_holding_the_counts() {
        // Zero fields are left out; a 200-byte name has a two-byte length.
        let long = format!("g:{}", "n".repeat(200));
        let cases = [
            ("g:team", 3, 7, 12),
            ("", 0, 0, 0),
            ("p:1:2", 0, 5, 0),
            ("g:x", u64::MAX, 1 << 40, 300),
            (long.as_str(), 1, 2, 3),
        ];
        for (name, unread, read_seq, total) in cases {
            let counts = Counts {
                unread,
                read_seq,
                total,
            };
            let want = im::Event {
                kind: None,
                unread_after: Some(counts.unread(name)),
            }
            .encode_to_vec();
            let mut buf = BytesMut::new();
            counts.put_tail(name, &mut buf);
            assert_eq!(
                buf.as_ref(),
                want.as_slice(),
                "{name:?} {unread} {read_seq} {total}"
            );
            assert_eq!(counts.tail_len(name), want.len());
        }
    }

    #[test]
    fn message_event_is_the_encoding_of_an_event_holding_the_message() {
        let msg = im::Message {
            conversation: "p:1:2".into(),
            from: "alice".into(),
            to: "bob".into(),
            client_msg_id: "c-1".into(),
            seq: 42,
            server_time_ms: 1_700_000_000_000,
            content: Some(im::Content {
                body: Some(im::content::Body::Text(im::Text {
                    text: "hello".into(),
                })),
            }),
            ..im::Message::default()
        };
        let event = im::Event {
            kind: Some(Kind::Message(msg.clone())),
            unread_after: None,
        };
        assert_eq!(
            message_event(&msg).as_ref(),
            event.encode_to_vec().as_slice()
        );
        let empty = im::Message::default();
        let event = im::Event {
            kind: Some(Kind::Message(empty.clone())),
            unread_after: None,
        };
        assert_eq!(
            message_event(&empty).as_ref(),
            event.encode_to_vec().as_slice()
        );
    }
}
