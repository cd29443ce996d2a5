//! Where a message must go: topic filters → subscriber session ids.
//!
//! The routing table answers one question, "which sessions want this message, and with
//! which options", and knows nothing of mailboxes, connections or the store: delivery
//! ([`crate::delivery`]) looks the ids up and hands the message over. That split is what
//! cluster mode needs (a remote node's interest is one more kind of target), and what
//! lets routing be tested alone.

pub mod trie;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;
use switchboard_proto::{QoS, SubscriptionOptions, topic};

use crate::message::{Message, ShareKey};
use trie::{Match, Subscriber, Trie};

/// One session a message must go to, with the options of its matching subscriptions
/// already merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The session's unique id.
    pub uid: u64,
    /// The lower of the message's and the subscription's QoS (the highest over overlapping
    /// subscriptions).
    pub qos: QoS,
    /// RETAIN as the subscriber sees it.
    pub retain: bool,
    /// Identifiers of every matching subscription.
    pub sub_ids: Vec<u32>,
    /// Set when the target was picked from a shared group.
    pub shared: Option<Arc<ShareKey>>,
}

/// Why a subscription could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("invalid topic filter")]
    InvalidFilter,
}

/// Told when a (share group, filter) pair gains its first subscriber on this node and loses
/// its last (cluster mode announces the node's interest with it).
pub trait InterestObserver: std::fmt::Debug + Send + Sync {
    /// Session subscription added (`group` for `$share/{group}/{filter}`).
    fn added(&self, group: Option<&str>, filter: &str);
    /// Session subscription removed.
    fn removed(&self, group: Option<&str>, filter: &str);
}

/// Every subscription of the broker.
#[derive(Debug, Default)]
pub struct RoutingTable {
    trie: RwLock<Trie>,
    count: AtomicUsize,
    observer: std::sync::OnceLock<Arc<dyn InterestObserver>>,
}

impl RoutingTable {
    /// Adds or replaces session `uid`'s subscription to `raw_filter` (which may be
    /// `$share/{group}/{filter}`). Returns whether it replaced one.
    pub fn insert(
        &self,
        uid: u64,
        raw_filter: &str,
        opts: SubscriptionOptions,
        id: Option<u32>,
    ) -> Result<bool, SubscribeError> {
        let parsed = topic::parse_filter(raw_filter).map_err(|_| SubscribeError::InvalidFilter)?;
        let existed = self.trie.write().insert(
            parsed.filter,
            parsed.share_group,
            Subscriber { uid, opts, id },
        );
        if !existed {
            self.count.fetch_add(1, Ordering::Relaxed);
            if let Some(o) = self.observer.get() {
                o.added(parsed.share_group, parsed.filter);
            }
        }
        Ok(existed)
    }

    /// Removes session `uid`'s subscription to `raw_filter`; true if it existed.
    pub fn remove(&self, uid: u64, raw_filter: &str) -> bool {
        let Ok(parsed) = topic::parse_filter(raw_filter) else {
            return false;
        };
        let removed = self
            .trie
            .write()
            .remove(parsed.filter, parsed.share_group, uid);
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
            if let Some(o) = self.observer.get() {
                o.removed(parsed.share_group, parsed.filter);
            }
        }
        removed
    }

    /// Number of subscriptions of all sessions.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `out` (cleared first) with every session that must get `msg`. Overlapping
    /// subscriptions of one session give one target at the highest granted QoS with all
    /// their identifiers ([MQTT-3.3.4-2], [MQTT-3.3.4-3]); each matching shared group gives
    /// one target, a member `online` says is connected if there is one. No Local
    /// subscriptions of the publishing session are skipped ([MQTT-3.8.3-3]).
    pub fn route(&self, msg: &Message, online: impl Fn(u64) -> bool, out: &mut Vec<Target>) {
        self.route_with(msg, online, true, out);
    }

    /// Sets the observer of subscriptions added and removed from now on (once; later
    /// calls are ignored). Set it before any subscription exists.
    pub fn set_observer(&self, o: Arc<dyn InterestObserver>) {
        let _ = self.observer.set(o);
    }

    /// [`RoutingTable::route`], skipping shared groups unless `shared` (in cluster mode a
    /// shared group's member is picked through a NATS queue group instead).
    pub fn route_with(
        &self,
        msg: &Message,
        online: impl Fn(u64) -> bool,
        shared: bool,
        out: &mut Vec<Target>,
    ) {
        out.clear();
        let trie = self.trie.read();
        trie.for_each_match(&msg.topic, |m| match m {
            Match::Direct(s) => {
                if !(s.opts.no_local && s.uid == msg.origin) {
                    out.push(target(msg, s, None));
                }
            }
            Match::Shared(g) => {
                if !shared {
                    return;
                }
                if let Some(s) = g.pick(None, &online) {
                    out.push(target(msg, s, Some(g.key.clone())));
                }
            }
        });
        drop(trie);
        if out.len() > 1 {
            out.sort_unstable_by_key(|t| (t.shared.is_some(), t.uid));
            // `dedup_by` hands (later, kept): fold a later direct target of the same session
            // into the kept one.
            out.dedup_by(|later, kept| {
                let same = later.shared.is_none() && kept.shared.is_none() && later.uid == kept.uid;
                if same {
                    kept.qos = kept.qos.max(later.qos);
                    kept.retain |= later.retain;
                    kept.sub_ids.append(&mut later.sub_ids);
                }
                same
            });
        }
    }

    /// Another member of shared group `key` than `exclude`, for a message whose member went
    /// away; `None` if the group has no other member.
    pub fn pick_shared(
        &self,
        key: &ShareKey,
        msg: &Message,
        exclude: u64,
        online: impl Fn(u64) -> bool,
    ) -> Option<Target> {
        let trie = self.trie.read();
        let g = trie.shared_group(key)?;
        let s = g.pick(Some(exclude), online)?;
        Some(target(msg, s, Some(g.key.clone())))
    }
}

fn target(msg: &Message, s: &Subscriber, shared: Option<Arc<ShareKey>>) -> Target {
    Target {
        uid: s.uid,
        qos: msg.qos.min(s.opts.qos),
        retain: msg.retain && s.opts.retain_as_published,
        sub_ids: s.id.into_iter().collect(),
        shared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn opts(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    fn msg(topic: &str, qos: QoS, origin: u64) -> Message {
        let mut m = Message::system(topic.into(), Bytes::from_static(b"x"), false);
        m.qos = qos;
        m.origin = origin;
        m
    }

    fn route(t: &RoutingTable, m: &Message) -> Vec<Target> {
        let mut out = Vec::new();
        t.route(m, |_| true, &mut out);
        out
    }

    #[test]
    fn overlapping_subscriptions_give_one_target_with_highest_qos_and_all_ids() {
        let t = RoutingTable::default();
        t.insert(1, "a/+", opts(QoS::AtMostOnce), Some(7))
            .expect("test");
        t.insert(1, "a/#", opts(QoS::ExactlyOnce), Some(9))
            .expect("test");
        t.insert(2, "a/b", opts(QoS::AtLeastOnce), None)
            .expect("test");
        let out = route(&t, &msg("a/b", QoS::ExactlyOnce, 0));
        assert_eq!(out.len(), 2);
        let one = out.iter().find(|x| x.uid == 1).expect("test");
        assert_eq!(one.qos, QoS::ExactlyOnce);
        let mut ids = one.sub_ids.clone();
        ids.sort();
        assert_eq!(ids, [7, 9]);
        assert_eq!(
            out.iter().find(|x| x.uid == 2).expect("test").qos,
            QoS::AtLeastOnce
        );
    }

    #[test]
    fn no_local_skips_the_publisher_and_shared_groups_get_one_copy() {
        let t = RoutingTable::default();
        let no_local = SubscriptionOptions {
            no_local: true,
            ..opts(QoS::AtLeastOnce)
        };
        t.insert(1, "x", no_local, None).expect("test");
        t.insert(2, "$share/g/x", opts(QoS::AtLeastOnce), None)
            .expect("test");
        t.insert(3, "$share/g/x", opts(QoS::AtLeastOnce), None)
            .expect("test");
        let out = route(&t, &msg("x", QoS::AtLeastOnce, 1));
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].shared.is_some());
        // Round robin over members.
        let next = route(&t, &msg("x", QoS::AtLeastOnce, 1));
        assert_ne!(out[0].uid, next[0].uid);
    }

    #[test]
    fn shared_pick_prefers_online_members_and_can_exclude() {
        let t = RoutingTable::default();
        t.insert(2, "$share/g/x", opts(QoS::AtLeastOnce), None)
            .expect("test");
        t.insert(3, "$share/g/x", opts(QoS::AtLeastOnce), None)
            .expect("test");
        let m = msg("x", QoS::AtLeastOnce, 0);
        for _ in 0..4 {
            let mut out = Vec::new();
            t.route(&m, |uid| uid == 3, &mut out);
            assert_eq!(out[0].uid, 3);
        }
        let key = out_key(&t, &m);
        assert_eq!(t.pick_shared(&key, &m, 3, |_| true).map(|x| x.uid), Some(2));
        t.remove(2, "$share/g/x");
        assert!(t.pick_shared(&key, &m, 3, |_| true).is_none());
        assert_eq!(t.len(), 1);
    }

    fn out_key(t: &RoutingTable, m: &Message) -> ShareKey {
        route(t, m)[0].shared.as_deref().cloned().expect("test")
    }

    #[test]
    fn invalid_filter_is_refused() {
        let t = RoutingTable::default();
        assert_eq!(
            t.insert(1, "a/#/b", opts(QoS::AtMostOnce), None),
            Err(SubscribeError::InvalidFilter)
        );
        assert!(t.is_empty());
    }
}
