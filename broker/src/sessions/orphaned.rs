//! Shared-subscription messages of a member whose *node* died (cluster mode with the
//! shared store).
//!
//! A member that leaves a live node hands its unacknowledged shared messages to another
//! member (`lifecycle::hand_over_shared`). When the member's node dies instead, those
//! messages are only in the store, in the member's persistent queue; the survivor that
//! adopts the dead node's sessions loads the member's session, parked, and calls
//! [`BrokerState::hand_over_orphaned_shared`]: every QoS 1/2 message queued for it, or
//! sent and not acknowledged, that came through one of its shared subscriptions goes to
//! another member (on this node, else on another through the group's hand-over subject);
//! its stored copy is removed once a member took it.
//!
//! The store does not record which subscription a queued message came through, so it is
//! inferred from the session's subscriptions: a message whose topic matches one of its
//! shared filters and none of its direct ones came through that group. A message that
//! also matches a direct subscription stays with the session (it would be delivered to
//! the member anyway when it comes back).

use std::sync::Arc;
use std::time::Instant;

use switchboard_proto::QoS;
use switchboard_proto::session::Outbound;
use switchboard_proto::topic::{matches, parse_filter};

use crate::BrokerState;
use crate::message::{Delivery, Message, ShareKey};

impl BrokerState {
    /// Offers the unacknowledged shared messages of the parked session `client_id`
    /// (adopted from a dead node) to other members; returns how many were offered.
    pub(crate) fn hand_over_orphaned_shared(&self, client_id: &str) -> usize {
        let now = Instant::now();
        // Under the lock: what to offer, taken out of the parked session.
        let (uid, mailbox, queued, sent) = {
            let mut map = self.sessions.map.lock();
            let Some(e) = map.get_mut(client_id) else {
                return 0;
            };
            if e.link.is_some() {
                return 0; // the member is back
            }
            let Some(state) = e.state.as_mut() else {
                return 0;
            };
            let mut shared = Vec::new();
            let mut direct = Vec::new();
            for raw in state.subs.keys() {
                match parse_filter(raw) {
                    Ok(f) => match f.share_group {
                        Some(g) => shared.push(ShareKey {
                            group: g.to_owned(),
                            filter: f.filter.to_owned(),
                        }),
                        None => direct.push(f.filter.to_owned()),
                    },
                    Err(_) => continue,
                }
            }
            if shared.is_empty() {
                return 0;
            }
            let came_through = |topic: &str| -> Option<ShareKey> {
                if direct.iter().any(|f| matches(f, topic)) {
                    return None;
                }
                shared.iter().find(|k| matches(&k.filter, topic)).cloned()
            };
            let mut sent = Vec::new();
            let mut keep = Vec::with_capacity(state.inflight.outbound.len());
            for (pkid, ob) in state.inflight.outbound.drain(..) {
                let take = match &ob {
                    Outbound::AwaitAck(p) if p.qos != QoS::AtMostOnce => {
                        came_through(&p.topic).zip(state.stored_inflight.get(&pkid).copied())
                    }
                    _ => None,
                };
                match (take, ob) {
                    (Some((key, seq)), Outbound::AwaitAck(p)) => {
                        state.stored_inflight.remove(&pkid);
                        sent.push((key, seq, *p));
                    }
                    (_, ob) => keep.push((pkid, ob)),
                }
            }
            state.inflight.outbound = keep;
            let mut queued = Vec::new();
            let mut stay = Vec::new();
            for d in state.mailbox.drain() {
                match came_through(&d.msg.topic).filter(|_| d.qos != QoS::AtMostOnce) {
                    Some(key) => queued.push((key, d)),
                    None => stay.push(d),
                }
            }
            state.mailbox.push_front_all(stay);
            (state.uid, state.mailbox.clone(), queued, sent)
        };
        let mut offered = 0;
        // What could not be offered (no other member can be tried) stays queued.
        let mut back = Vec::new();
        for (key, seq, p) in sent {
            let qos = p.qos;
            let d = Delivery {
                msg: Arc::new(Message::from_publish(p, 0, now)),
                qos,
                retain: false,
                sub_ids: Vec::new(),
                shared: Some(Arc::new(key.clone())),
                seq: Some(seq),
                queued_s: 0,
                handed: false,
            };
            if self.redeliver_shared(&key, d.clone(), uid) {
                offered += 1;
            } else {
                back.push(d);
            }
        }
        for (key, d) in queued {
            if self.redeliver_shared(&key, d.clone(), uid) {
                offered += 1;
            } else {
                back.push(d);
            }
        }
        mailbox.push_front_all(back);
        if offered > 0 {
            tracing::info!(
                client_id,
                offered,
                "shared messages of a member whose node died offered to other members"
            );
        }
        offered
    }
}
