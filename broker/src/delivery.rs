//! Delivery: hands a message to the mailboxes of the sessions routing picked.
//!
//! Routing ([`crate::routing`]) says which session ids want a message; this module looks
//! their mailboxes up in the session registry, queues one [`Delivery`] per target, and for
//! QoS 1/2 copies queued to persistent sessions produces the store ops that make them
//! durable (the message is encoded once per publish, however many copies are stored).
//! The caller decides when those ops are written and whether an acknowledgement waits.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use switchboard_proto::{QoS, RetainHandling, SubscriptionOptions};

use crate::BrokerState;
use crate::mailbox::{Mailbox, Pushed};
use crate::message::{Delivery, Message, ShareKey};
use crate::metrics::Metrics;
use crate::routing::Target;
use crate::store::{Op, Sent, StoredDelivery, codec};

/// Targets whose room a thread keeps between publishes (48 bytes each, 768 KiB in all): a
/// fan-out to up to this many sessions allocates no list.
const KEPT_TARGETS: usize = 16 * 1024;

/// Outcome of publishing one message.
#[derive(Debug, Default)]
pub struct Routed {
    /// Sessions the message was queued for.
    pub delivered: usize,
    /// Sessions whose queue refused a QoS 1/2 copy (publisher sees 0x97).
    pub refused: usize,
    /// Store writes for the copies queued to persistent sessions; the publisher's
    /// acknowledgement waits for them.
    pub ops: Vec<Op>,
    /// Handed to the cluster for the other nodes (which may have subscribers: no "no
    /// matching subscribers" answer then).
    pub forwarded: bool,
    /// Cluster mode, QoS 1/2: closes once the other nodes that want the message have
    /// committed it (the publisher's acknowledgement waits for it too).
    pub remote: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl BrokerState {
    /// Routes `msg` and queues it for every session that wants it; in cluster mode also
    /// hands it to the other nodes (`$SYS` stays on this node).
    pub fn publish(&self, msg: Arc<Message>) -> Routed {
        let cluster = self
            .cluster
            .as_ref()
            .filter(|_| !msg.topic.starts_with("$SYS/"));
        // Shared groups are picked through NATS queue groups while the link is up.
        let shared = cluster.is_none_or(|c| !c.connected());
        let mut out = self.publish_here(&msg, shared);
        if let Some(c) = cluster {
            (out.forwarded, out.remote) = c.forward_acked(&msg);
        }
        out
    }

    /// Routes a message that came from another node to this node's sessions (direct
    /// subscriptions only: shared groups get theirs through [`BrokerState::deliver_shared`]).
    /// With `want_commit`, returns what fires once the copies queued for persistent
    /// sessions are committed (`None`: nothing to commit).
    pub fn publish_remote(
        &self,
        msg: Arc<Message>,
        want_commit: bool,
    ) -> Option<
        tokio::sync::oneshot::Receiver<Result<crate::store::Applied, crate::store::StoreError>>,
    > {
        let routed = self.publish_here(&msg, false);
        let st = self.store()?;
        if want_commit && !routed.ops.is_empty() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            st.write(routed.ops, Some(tx));
            return Some(rx);
        }
        st.write(routed.ops, None);
        None
    }

    /// Queues `msg` for one member of this node's shared group `key` (the NATS queue group
    /// picked this node); false if the group has no member here any more (or, with
    /// `online_only`, no connected one: a hand-over must reach a member that can take it).
    pub fn deliver_shared(&self, key: &ShareKey, msg: Arc<Message>, online_only: bool) -> bool {
        self.deliver_shared_acked(key, msg, online_only).is_some()
    }

    /// [`BrokerState::deliver_shared`] for the cluster's acknowledged hop: `None` if no
    /// member took it, else what fires once the stored copy is committed (`None` inside:
    /// nothing to commit).
    pub fn deliver_shared_acked(
        &self,
        key: &ShareKey,
        msg: Arc<Message>,
        online_only: bool,
    ) -> Option<Option<crate::store::Durable>> {
        let t = self
            .routes
            .pick_shared(key, &msg, 0, |uid| self.sessions.is_online(uid))
            .filter(|t| !online_only || self.sessions.is_online(t.uid))?;
        let mailbox = self.sessions.mailbox(t.uid)?;
        let uid = t.uid;
        let mut out = Routed::default();
        self.push(uid, &mailbox, delivery(&msg, t, false), &mut out, &mut None);
        Metrics::inc(&self.metrics.messages_received);
        if out.delivered == 0 {
            return None;
        }
        let Some(st) = self.store().filter(|_| !out.ops.is_empty()) else {
            return Some(None);
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        st.write(out.ops, Some(tx));
        Some(Some(rx))
    }

    fn publish_here(&self, msg: &Arc<Message>, shared: bool) -> Routed {
        thread_local! {
            /// The targets of one publish: a fan-out publishes once per member, and the
            /// list's allocation is kept for the next.
            static TARGETS: RefCell<Vec<Target>> = const { RefCell::new(Vec::new()) };
        }
        let mut targets = TARGETS.with(|t| std::mem::take(&mut *t.borrow_mut()));
        self.routes.route_with(
            msg,
            |uid| self.sessions.is_online(uid),
            shared,
            &mut targets,
        );
        let mut out = Routed::default();
        let mut encoded = None;
        for t in targets.drain(..) {
            let uid = t.uid;
            let d = delivery(msg, t, false);
            // Under the registry shard's read lock: no reference count to take and drop.
            // `None`: the session ended between routing and delivery.
            self.sessions
                .with_mailbox(uid, |mb| self.push(uid, mb, d, &mut out, &mut encoded));
        }
        // A publish to a huge audience does not pin its list's size on the thread.
        targets.shrink_to(KEPT_TARGETS);
        TARGETS.with(|t| *t.borrow_mut() = targets);
        Metrics::inc(&self.metrics.messages_received);
        out
    }

    /// Publishes and writes the store ops without waiting (wills, redelivery, `$SYS`).
    pub fn publish_detached(&self, msg: Arc<Message>) -> usize {
        let routed = self.publish(msg);
        if !routed.ops.is_empty()
            && let Some(st) = self.store()
        {
            st.write(routed.ops, None);
        }
        routed.delivered
    }

    /// Queues the retained messages a new subscription of session `uid` asks for
    /// ([MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11]).
    pub fn send_retained(
        &self,
        uid: u64,
        filter: &str,
        opts: SubscriptionOptions,
        id: Option<u32>,
        existed: bool,
    ) {
        let wanted = match opts.retain_handling {
            RetainHandling::SendAtSubscribe => true,
            RetainHandling::SendIfNew => !existed,
            RetainHandling::DoNotSend => false,
        };
        if !wanted {
            return;
        }
        let Some(mailbox) = self.sessions.mailbox(uid) else {
            return;
        };
        let mut out = Routed::default();
        for m in self.retained.matching(filter, Instant::now()) {
            let t = Target {
                uid,
                qos: m.qos.min(opts.qos),
                // Sent because of a new subscription: RETAIN stays set ([MQTT-3.3.1-9]).
                retain: true,
                sub_ids: id.into_iter().collect(),
                shared: None,
            };
            let d = delivery(&m, t, true);
            self.push(uid, &mailbox, d, &mut out, &mut None);
        }
        if let Some(store) = self.store() {
            store.write(out.ops, None);
        }
    }

    /// Sends a delivery that came through shared group `key` to another member than
    /// `exclude` (its member went away), on this node or, in cluster mode, on another.
    /// Returns false if no other member exists (or none could be tried).
    pub fn redeliver_shared(&self, key: &ShareKey, d: Delivery, exclude: u64) -> bool {
        let Some(t) = self
            .routes
            .pick_shared(key, &d.msg, exclude, |uid| self.sessions.is_online(uid))
        else {
            // No other member here: a QoS 1/2 message goes to a member on another node
            // (the stored copy goes once one took it, see `cluster::shared`).
            return match &self.cluster {
                Some(c) if d.qos != QoS::AtMostOnce => {
                    c.hand_over_shared(self.store().cloned(), key, &d.msg, exclude, d.seq)
                }
                _ => false,
            };
        };
        let uid = t.uid;
        let mut moved = delivery(&d.msg, t, false);
        // Handed on again before it went out: the first move's write may not be durable.
        moved.handed = d.handed;
        self.sessions
            .with_mailbox(uid, |mb| self.push_handed(uid, mb, moved, exclude, d.seq))
            .unwrap_or(false)
    }

    /// Queues `d` in session `uid`'s mailbox; for a persistent session's QoS 1/2 copy,
    /// also the store op (the message encoded once per publish, in `encoded`).
    fn push(
        &self,
        uid: u64,
        mailbox: &Mailbox,
        mut d: Delivery,
        out: &mut Routed,
        encoded: &mut Option<Bytes>,
    ) {
        let op = self.stored_copy(uid, mailbox, &mut d, encoded);
        let pushed = mailbox.push(d);
        if pushed == Pushed::Queued
            && let Some(op) = op
        {
            out.ops.push(op);
        }
        match pushed {
            Pushed::Queued => out.delivered += 1,
            Pushed::DroppedQos0 => out.delivered += 1,
            Pushed::Refused => out.refused += 1,
        }
        self.count(pushed);
    }

    /// The store op that keeps `d` for session `uid` if it is persistent and `d` is QoS
    /// 1/2 (the message encoded once per publish, in `encoded`); gives `d` its seq.
    fn stored_copy(
        &self,
        uid: u64,
        mailbox: &Mailbox,
        d: &mut Delivery,
        encoded: &mut Option<Bytes>,
    ) -> Option<Op> {
        if self.store().is_none() || d.qos == QoS::AtMostOnce || !mailbox.is_persistent() {
            return None;
        }
        let message = encoded
            .get_or_insert_with(|| codec::encode_message(&d.msg, Instant::now()).into())
            .clone();
        let seq = self.queue_seq.fetch_add(1, Ordering::Relaxed);
        d.seq = Some(seq);
        Some(Op::Enqueue {
            uid,
            seq,
            delivery: StoredDelivery {
                qos: d.qos,
                retain: d.retain,
                sub_ids: d.sub_ids.clone(),
                message,
                sent: Sent::Queued,
            },
        })
    }

    /// Queues `d`, handed over from member `from` whose stored copy is `old_seq`, for
    /// session `uid` (see [`Delivery::handed`]): one write moves the stored copy (this
    /// session's in, the other's out), submitted before the connection can see `d`, and
    /// the connection sends `d` once it is durable. A crash then leaves the message with
    /// one member only. False if the mailbox refused it (the other member keeps it).
    fn push_handed(
        &self,
        uid: u64,
        mailbox: &Mailbox,
        mut d: Delivery,
        from: u64,
        old_seq: Option<u64>,
    ) -> bool {
        let Some(store) = self.store() else {
            let pushed = mailbox.push(d);
            self.count(pushed);
            return pushed != Pushed::Refused;
        };
        let mut ops: Vec<Op> = self
            .stored_copy(uid, mailbox, &mut d, &mut None)
            .into_iter()
            .collect();
        if let Some(seq) = old_seq {
            ops.push(Op::Dequeue { uid: from, seq });
            d.handed = true;
        }
        let mut pending = Some(ops);
        let write = |ops: Vec<Op>| {
            if !ops.is_empty() {
                store.write(ops, None);
            }
        };
        let pushed = mailbox.push_with(d, || write(pending.take().unwrap_or_default()));
        self.count(pushed);
        if pushed == Pushed::Refused {
            return false;
        }
        if let Some(ops) = pending.take() {
            // Dropped itself (QoS 0 to a full queue): gone from the other member all the
            // same, as a QoS 0 delivery may be.
            write(ops);
        }
        true
    }

    fn count(&self, pushed: Pushed) {
        match pushed {
            Pushed::Queued => {}
            Pushed::DroppedQos0 => Metrics::inc(&self.metrics.dropped_queue_full_qos0),
            Pushed::Refused => Metrics::inc(&self.metrics.refused_queue_full),
        }
    }
}

/// The delivery of `msg` to target `t`. Retained messages sent because of a new
/// subscription keep RETAIN=1; forwarded ones keep it only with Retain As Published
/// ([MQTT-3.3.1-12], [MQTT-3.3.1-13]); routing already applied that.
fn delivery(msg: &Arc<Message>, t: Target, from_retained_store: bool) -> Delivery {
    Delivery {
        msg: msg.clone(),
        qos: t.qos,
        retain: from_retained_store || t.retain,
        sub_ids: t.sub_ids,
        shared: t.shared,
        seq: None,
        queued_s: 0,
        handed: false,
    }
}
