//! The retained-message set: the last retained message of every topic.
//!
//! It only keeps the messages in memory and says which op makes a change durable; the
//! caller hands that op to the store with the rest of the publish's writes.
//!
//! Bounded: a count and a byte cap over all topics and per client id ([`RetainedCaps`],
//! from the broker's limits). A message that would exceed one is refused
//! ([`RetainedFull`]); replacing a topic's message counts only the difference, and
//! clearing is always allowed. Expired messages are never returned by
//! [`Retained::matching`], and [`purge_expired`] removes them periodically (with their
//! store rows).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use switchboard_proto::topic;

use crate::BrokerState;
use crate::config::Limits;
use crate::message::Message;
use crate::store::{Op, codec};

/// The caps a retained message must fit in.
#[derive(Debug, Clone, Copy)]
pub struct RetainedCaps {
    pub messages: usize,
    pub bytes: usize,
    pub per_client: usize,
    pub bytes_per_client: usize,
}

impl RetainedCaps {
    pub fn from_limits(l: &Limits) -> Self {
        RetainedCaps {
            messages: l.max_retained_messages,
            bytes: l.max_retained_bytes,
            per_client: l.max_retained_per_client,
            bytes_per_client: l.max_retained_bytes_per_client,
        }
    }

    /// No caps (restored messages, broker-owned `$SYS` topics).
    pub const UNLIMITED: RetainedCaps = RetainedCaps {
        messages: usize::MAX,
        bytes: usize::MAX,
        per_client: usize::MAX,
        bytes_per_client: usize::MAX,
    };
}

/// A retained message refused because a cap is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("retained message cap reached")]
pub struct RetainedFull;

#[derive(Debug)]
struct Entry {
    msg: Arc<Message>,
    /// Client id that set it ("" for restored and broker messages).
    owner: Arc<str>,
    cost: usize,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Entry>,
    bytes: usize,
    /// Count and bytes per owner (the empty owner is not tracked).
    per_owner: HashMap<Arc<str>, (usize, usize)>,
}

impl Inner {
    fn remove(&mut self, topic: &str) {
        if let Some(e) = self.map.remove(topic) {
            self.bytes -= e.cost;
            if let Some(o) = self.per_owner.get_mut(&e.owner) {
                o.0 -= 1;
                o.1 -= e.cost;
                if o.0 == 0 {
                    self.per_owner.remove(&e.owner);
                }
            }
        }
    }

    fn insert(&mut self, msg: Arc<Message>, owner: &str, cost: usize) {
        self.remove(&msg.topic);
        let owner: Arc<str> = Arc::from(owner);
        if !owner.is_empty() {
            let o = self.per_owner.entry(owner.clone()).or_default();
            o.0 += 1;
            o.1 += cost;
        }
        self.bytes += cost;
        self.map
            .insert(msg.topic.clone(), Entry { msg, owner, cost });
    }

    /// Whether `msg` (cost `cost`) set by `owner` fits, counting what it replaces.
    fn fits(&self, msg: &Message, owner: &str, cost: usize, caps: &RetainedCaps) -> bool {
        let old = self.map.get(&msg.topic);
        let (old_n, old_b) = old.map_or((0, 0), |e| (1, e.cost));
        let n = self.map.len() - old_n + 1;
        let b = self.bytes - old_b + cost;
        if n > caps.messages || b > caps.bytes {
            return false;
        }
        if owner.is_empty() {
            return true;
        }
        let (mut on, mut ob) = self.per_owner.get(owner).copied().unwrap_or_default();
        if let Some(e) = old.filter(|e| &*e.owner == owner) {
            on -= 1;
            ob -= e.cost;
        }
        on < caps.per_client && ob + cost <= caps.bytes_per_client
    }
}

/// Retained messages by topic.
#[derive(Debug, Default)]
pub struct Retained {
    map: RwLock<Inner>,
}

impl Retained {
    /// Stores or clears (empty payload) the retained message of `msg.topic`
    /// ([MQTT-3.3.1-5], [MQTT-3.3.1-6]), set by client `owner`, within `caps`. Returns the
    /// op that makes the change durable.
    pub fn set(
        &self,
        msg: &Arc<Message>,
        owner: &str,
        caps: &RetainedCaps,
        now: Instant,
    ) -> Result<Op, RetainedFull> {
        let mut r = self.map.write();
        if msg.payload.is_empty() {
            r.remove(&msg.topic);
            return Ok(Op::DeleteRetained {
                topic: msg.topic.clone(),
            });
        }
        let cost = msg.cost();
        if !r.fits(msg, owner, cost, caps) {
            return Err(RetainedFull);
        }
        r.insert(msg.clone(), owner, cost);
        Ok(Op::PutRetained {
            topic: msg.topic.clone(),
            message: codec::encode_message(msg, now),
        })
    }

    /// Whether `msg` set by `owner` would fit in `caps` now (a clear always does).
    pub fn fits(&self, msg: &Message, owner: &str, caps: &RetainedCaps) -> bool {
        msg.payload.is_empty() || self.map.read().fits(msg, owner, msg.cost(), caps)
    }

    /// Loads a retained message read from the store at start (or set by the broker).
    pub fn restore(&self, msg: Arc<Message>) {
        let cost = msg.cost();
        self.map.write().insert(msg, "", cost);
    }

    /// Unexpired retained messages whose topic matches `filter`, sorted by topic.
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let mut matched: Vec<Arc<Message>> = self
            .map
            .read()
            .map
            .values()
            .filter(|e| !e.msg.is_expired(now) && topic::matches(filter, &e.msg.topic))
            .map(|e| e.msg.clone())
            .collect();
        matched.sort_by(|a, b| a.topic.cmp(&b.topic));
        matched
    }

    /// Removes the expired messages; returns their topics.
    pub fn remove_expired(&self, now: Instant) -> Vec<String> {
        let mut r = self.map.write();
        let expired: Vec<String> = r
            .map
            .values()
            .filter(|e| e.msg.is_expired(now))
            .map(|e| e.msg.topic.clone())
            .collect();
        for t in &expired {
            r.remove(t);
        }
        expired
    }

    /// Up to `limit` retained messages: topic, QoS and payload size, sorted by topic.
    pub fn list(&self, limit: usize) -> Vec<(String, u8, usize)> {
        let r = self.map.read();
        let mut v: Vec<(String, u8, usize)> = r
            .map
            .values()
            .map(|e| (e.msg.topic.clone(), e.msg.qos as u8, e.msg.payload.len()))
            .collect();
        v.sort();
        v.truncate(limit);
        v
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.map.read().map.len()
    }

    /// Bytes of retained messages, as the caps count them.
    pub fn bytes(&self) -> usize {
        self.map.read().bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes expired retained messages every `retained_purge_interval` seconds, from memory
/// and from the store, until shutdown.
pub async fn purge_expired(b: Arc<BrokerState>) {
    let every = Duration::from_secs(b.config.limits.retained_purge_interval.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = b.shutdown.cancelled() => return,
        }
        let gone = b.retained.remove_expired(Instant::now());
        if gone.is_empty() {
            continue;
        }
        tracing::debug!(count = gone.len(), "purged expired retained messages");
        if let Some(store) = b.store() {
            store.write(
                gone.into_iter()
                    .map(|topic| Op::DeleteRetained { topic })
                    .collect(),
                None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message::system(
            topic.into(),
            Bytes::from_static(payload),
            true,
        ))
    }

    #[test]
    fn empty_payload_clears_and_matching_is_sorted() {
        let r = Retained::default();
        let now = Instant::now();
        let caps = RetainedCaps::UNLIMITED;
        assert!(matches!(
            r.set(&msg("a/2", b"x"), "c", &caps, now),
            Ok(Op::PutRetained { .. })
        ));
        r.set(&msg("a/1", b"y"), "c", &caps, now).expect("fits");
        r.set(&msg("b", b"z"), "c", &caps, now).expect("fits");
        let topics: Vec<String> = r
            .matching("a/#", now)
            .iter()
            .map(|m| m.topic.clone())
            .collect();
        assert_eq!(topics, ["a/1", "a/2"]);
        assert!(matches!(
            r.set(&msg("a/1", b""), "c", &caps, now),
            Ok(Op::DeleteRetained { .. })
        ));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn caps_count_and_bytes_globally_and_per_client() {
        let r = Retained::default();
        let now = Instant::now();
        let one = msg("t/0", b"x").cost();
        let caps = RetainedCaps {
            messages: 3,
            bytes: usize::MAX,
            per_client: 2,
            bytes_per_client: usize::MAX,
        };
        r.set(&msg("t/1", b"x"), "a", &caps, now).expect("1st");
        r.set(&msg("t/2", b"x"), "a", &caps, now).expect("2nd");
        assert!(
            r.set(&msg("t/3", b"x"), "a", &caps, now).is_err(),
            "per client"
        );
        r.set(&msg("t/2", b"y"), "a", &caps, now)
            .expect("replacing its own message fits");
        r.set(&msg("t/3", b"x"), "b", &caps, now)
            .expect("other client");
        assert!(
            r.set(&msg("t/4", b"x"), "c", &caps, now).is_err(),
            "global count"
        );
        r.set(&msg("t/1", b""), "c", &caps, now)
            .expect("clearing always works");
        r.set(&msg("t/4", b"x"), "c", &caps, now)
            .expect("room again");
        assert_eq!(r.len(), 3);
        assert_eq!(r.bytes(), 3 * one);

        let bytes = RetainedCaps {
            messages: usize::MAX,
            bytes: usize::MAX,
            per_client: usize::MAX,
            bytes_per_client: 2 * one,
        };
        let r = Retained::default();
        r.set(&msg("u/1", b"x"), "a", &bytes, now).expect("1st");
        r.set(&msg("u/2", b"x"), "a", &bytes, now).expect("2nd");
        assert!(r.set(&msg("u/3", b"x"), "a", &bytes, now).is_err());
    }

    #[test]
    fn expired_messages_are_not_matched_and_are_purged() {
        let r = Retained::default();
        let now = Instant::now();
        let mut m = Message::system("e/1".into(), Bytes::from_static(b"x"), true);
        m.expires_at = Some(now + Duration::from_secs(1));
        r.set(&Arc::new(m), "c", &RetainedCaps::UNLIMITED, now)
            .expect("fits");
        r.set(&msg("e/2", b"y"), "c", &RetainedCaps::UNLIMITED, now)
            .expect("fits");
        let later = now + Duration::from_secs(2);
        assert_eq!(r.matching("e/#", later).len(), 1, "expired not sent");
        assert_eq!(r.remove_expired(later), ["e/1"]);
        assert_eq!(r.len(), 1);
    }
}
