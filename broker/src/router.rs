//! Where a message must go: the subscription tree, the retained store and fan-out into
//! session mailboxes.
//!
//! The router decides *where*; delivery to a connection is the mailbox's and the
//! connection task's job. Keeping the two apart lets a cluster replace "push into a local
//! mailbox" with "forward to the node that holds the session" later.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::RwLock;
use switchboard_proto::{RetainHandling, SubscriptionOptions, topic};

use crate::mailbox::{Mailbox, Pushed};
use crate::message::{Delivery, Message, ShareKey};
use crate::metrics::Metrics;
use crate::store::{Op, Store, StoredDelivery, codec};
use crate::trie::{Match, Subscriber, Trie};

/// Outcome of routing one message.
#[derive(Debug, Default)]
pub struct Routed {
    /// Sessions the message was queued for.
    pub delivered: usize,
    /// Sessions whose queue refused a QoS 1/2 copy (publisher sees 0x97).
    pub refused: usize,
    /// Store writes for the copies queued to persistent sessions; the publisher's
    /// acknowledgement waits for them.
    pub ops: Vec<Op>,
}

/// A subscription request, already validated.
#[derive(Debug, Clone)]
pub struct SubscribeRequest<'a> {
    pub raw_filter: &'a str,
    pub opts: SubscriptionOptions,
    pub id: Option<u32>,
}

/// Subscription tree + retained messages.
#[derive(Default)]
pub struct Router {
    trie: RwLock<Trie>,
    retained: RwLock<HashMap<String, Arc<Message>>>,
    subscription_count: AtomicUsize,
    pub metrics: Metrics,
    store: Option<Arc<dyn Store>>,
    next_seq: AtomicU64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    /// A router whose persistent deliveries and retained messages go to `store`, numbering
    /// stored deliveries after `max_seq`.
    pub fn new(store: Option<Arc<dyn Store>>, max_seq: u64) -> Self {
        Router {
            store,
            next_seq: AtomicU64::new(max_seq + 1),
            ..Router::default()
        }
    }

    /// The store, if the broker has one.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Routes and writes the store ops without waiting (wills, redelivery, `$SYS`).
    pub fn route_detached(&self, msg: Arc<Message>) -> usize {
        let routed = self.route(msg);
        if let Some(st) = &self.store {
            st.write(routed.ops, None);
        }
        routed.delivered
    }

    /// Queues `msg` for every matching session. Overlapping subscriptions of one session
    /// produce one copy at the highest granted QoS carrying all their identifiers
    /// ([MQTT-3.3.4-2], [MQTT-3.3.4-3]); each matching shared group gets one copy.
    pub fn route(&self, msg: Arc<Message>) -> Routed {
        let mut direct: Vec<(u64, &Subscriber)> = Vec::new();
        let mut out = Routed::default();
        let mut encoded = None;
        let trie = self.trie.read();
        trie.for_each_match(&msg.topic, |m| match m {
            Match::Direct(s) => {
                if !(s.opts.no_local && s.uid == msg.origin) {
                    direct.push((s.uid, s));
                }
            }
            Match::Shared(g) => {
                if let Some(s) = g.pick(None) {
                    let d = delivery_for(&msg, s, false, Some(g.key.clone()));
                    self.push(s, d, &mut out, &mut encoded);
                }
            }
        });
        direct.sort_unstable_by_key(|(uid, _)| *uid);
        let mut i = 0;
        while i < direct.len() {
            let (uid, first) = direct[i];
            let mut d = delivery_for(&msg, first, false, None);
            let mut j = i + 1;
            while j < direct.len() && direct[j].0 == uid {
                let other = direct[j].1;
                d.qos = d.qos.max(msg.qos.min(other.opts.qos));
                d.retain |= msg.retain && other.opts.retain_as_published;
                d.sub_ids.extend(other.id);
                j += 1;
            }
            self.push(first, d, &mut out, &mut encoded);
            i = j;
        }
        Metrics::inc(&self.metrics.messages_received);
        out
    }

    /// Queues `d` for `s`; for a persistent session's QoS 1/2 copy, also the store op
    /// (the message is encoded once per route, in `encoded`).
    fn push(
        &self,
        s: &Subscriber,
        mut d: Delivery,
        out: &mut Routed,
        encoded: &mut Option<bytes::Bytes>,
    ) {
        let mut op = None;
        if self.store.is_some()
            && d.qos != switchboard_proto::QoS::AtMostOnce
            && s.mailbox.is_persistent()
        {
            let message = encoded
                .get_or_insert_with(|| codec::encode_message(&d.msg, Instant::now()).into())
                .clone();
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            d.seq = Some(seq);
            op = Some(Op::Enqueue {
                uid: s.uid,
                seq,
                delivery: StoredDelivery {
                    qos: d.qos,
                    retain: d.retain,
                    sub_ids: d.sub_ids.clone(),
                    message,
                    sent: crate::store::Sent::Queued,
                },
            });
        }
        let pushed = s.mailbox.push(d);
        if pushed == Pushed::Queued
            && let Some(op) = op
        {
            out.ops.push(op);
        }
        self.count(pushed, out);
    }

    fn count(&self, pushed: Pushed, out: &mut Routed) {
        match pushed {
            Pushed::Queued => out.delivered += 1,
            Pushed::DroppedQos0 => {
                out.delivered += 1;
                Metrics::inc(&self.metrics.dropped_queue_full_qos0);
            }
            Pushed::Refused => {
                out.refused += 1;
                Metrics::inc(&self.metrics.refused_queue_full);
            }
        }
    }

    /// Sends a delivery that came through shared group `key` to another member than
    /// `exclude` (its member went away). Returns false if no other member exists.
    pub fn redeliver_shared(&self, key: &ShareKey, d: Delivery, exclude: u64) -> bool {
        let trie = self.trie.read();
        let Some(g) = trie.shared_group(key) else {
            return false;
        };
        let Some(s) = g.pick(Some(exclude)) else {
            return false;
        };
        let mut out = Routed::default();
        let old_seq = d.seq;
        let d = Delivery {
            qos: d.msg.qos.min(s.opts.qos),
            sub_ids: s.id.into_iter().collect(),
            seq: None,
            ..d
        };
        self.push(s, d, &mut out, &mut None);
        if let Some(store) = &self.store {
            if let (Some(seq), true) = (old_seq, out.delivered > 0) {
                out.ops.push(Op::Dequeue { uid: exclude, seq });
            }
            store.write(std::mem::take(&mut out.ops), None);
        }
        out.delivered > 0
    }

    /// Stores or clears (empty payload) a retained message ([MQTT-3.3.1-5], [MQTT-3.3.1-6]).
    /// Returns the store op that makes it durable, if there is a store.
    pub fn retain(&self, msg: &Arc<Message>) -> Option<Op> {
        let mut r = self.retained.write();
        if msg.payload.is_empty() {
            r.remove(&msg.topic);
            self.store.as_ref()?;
            Some(Op::DeleteRetained {
                topic: msg.topic.clone(),
            })
        } else {
            r.insert(msg.topic.clone(), msg.clone());
            self.store.as_ref()?;
            Some(Op::PutRetained {
                topic: msg.topic.clone(),
                message: codec::encode_message(msg, Instant::now()),
            })
        }
    }

    /// Loads a retained message read from the store at start.
    pub fn restore_retained(&self, msg: Arc<Message>) {
        self.retained.write().insert(msg.topic.clone(), msg);
    }

    /// Up to `limit` retained messages: topic, QoS and payload size, sorted by topic.
    pub fn retained_list(&self, limit: usize) -> Vec<(String, u8, usize)> {
        let r = self.retained.read();
        let mut v: Vec<(String, u8, usize)> = r
            .values()
            .map(|m| (m.topic.clone(), m.qos as u8, m.payload.len()))
            .collect();
        v.sort();
        v.truncate(limit);
        v
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Adds a subscription for session `uid` and queues the retained messages its retain
    /// handling asks for. Returns true if it replaced an existing subscription.
    pub fn subscribe(&self, uid: u64, mailbox: &Arc<Mailbox>, req: &SubscribeRequest<'_>) -> bool {
        let Ok(parsed) = topic::parse_filter(req.raw_filter) else {
            return false;
        };
        let sub = Subscriber {
            uid,
            mailbox: mailbox.clone(),
            opts: req.opts,
            id: req.id,
        };
        let existed = self
            .trie
            .write()
            .insert(parsed.filter, parsed.share_group, sub.clone());
        if !existed {
            self.subscription_count.fetch_add(1, Ordering::Relaxed);
        }
        let send_retained = parsed.share_group.is_none()
            && match req.opts.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
        if send_retained {
            let now = Instant::now();
            let mut matched: Vec<Arc<Message>> = self
                .retained
                .read()
                .values()
                .filter(|m| !m.is_expired(now) && topic::matches(parsed.filter, &m.topic))
                .cloned()
                .collect();
            matched.sort_by(|a, b| a.topic.cmp(&b.topic));
            let mut out = Routed::default();
            for m in matched {
                let d = delivery_for(&m, &sub, true, None);
                self.push(&sub, d, &mut out, &mut None);
            }
            if let Some(store) = &self.store {
                store.write(out.ops, None);
            }
        }
        existed
    }

    /// Re-creates a subscription read from the store (no retained messages are sent).
    pub fn restore_subscription(
        &self,
        uid: u64,
        mailbox: &Arc<Mailbox>,
        raw_filter: &str,
        opts: SubscriptionOptions,
        id: Option<u32>,
    ) {
        let Ok(parsed) = topic::parse_filter(raw_filter) else {
            tracing::warn!(
                filter = raw_filter,
                "skipping an invalid stored subscription"
            );
            return;
        };
        let sub = Subscriber {
            uid,
            mailbox: mailbox.clone(),
            opts,
            id,
        };
        if !self
            .trie
            .write()
            .insert(parsed.filter, parsed.share_group, sub)
        {
            self.subscription_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Removes a subscription; true if it existed.
    pub fn unsubscribe(&self, uid: u64, raw_filter: &str) -> bool {
        let Ok(parsed) = topic::parse_filter(raw_filter) else {
            return false;
        };
        let removed = self
            .trie
            .write()
            .remove(parsed.filter, parsed.share_group, uid);
        if removed {
            self.subscription_count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Number of subscriptions of all sessions.
    pub fn subscription_count(&self) -> usize {
        self.subscription_count.load(Ordering::Relaxed)
    }
}

/// The delivery of `msg` to `s`. Retained messages sent because of a new subscription keep
/// RETAIN=1; forwarded ones keep it only with Retain As Published ([MQTT-3.3.1-12/13]).
fn delivery_for(
    msg: &Arc<Message>,
    s: &Subscriber,
    from_retained_store: bool,
    shared: Option<Arc<ShareKey>>,
) -> Delivery {
    Delivery {
        msg: msg.clone(),
        qos: msg.qos.min(s.opts.qos),
        retain: from_retained_store || (msg.retain && s.opts.retain_as_published),
        sub_ids: s.id.into_iter().collect(),
        shared,
        seq: None,
    }
}
