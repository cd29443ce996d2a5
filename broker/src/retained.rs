//! The retained-message set: the last retained message of every topic.
//!
//! It only keeps the messages in memory and says which op makes a change durable; the
//! caller hands that op to the store with the rest of the publish's writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use switchboard_proto::topic;

use crate::message::Message;
use crate::store::{Op, codec};

/// Retained messages by topic.
#[derive(Debug, Default)]
pub struct Retained {
    map: RwLock<HashMap<String, Arc<Message>>>,
}

impl Retained {
    /// Stores or clears (empty payload) the retained message of `msg.topic`
    /// ([MQTT-3.3.1-5], [MQTT-3.3.1-6]). Returns the op that makes the change durable.
    pub fn set(&self, msg: &Arc<Message>, now: Instant) -> Op {
        let mut r = self.map.write();
        if msg.payload.is_empty() {
            r.remove(&msg.topic);
            Op::DeleteRetained {
                topic: msg.topic.clone(),
            }
        } else {
            r.insert(msg.topic.clone(), msg.clone());
            Op::PutRetained {
                topic: msg.topic.clone(),
                message: codec::encode_message(msg, now),
            }
        }
    }

    /// Loads a retained message read from the store at start.
    pub fn restore(&self, msg: Arc<Message>) {
        self.map.write().insert(msg.topic.clone(), msg);
    }

    /// Unexpired retained messages whose topic matches `filter`, sorted by topic.
    pub fn matching(&self, filter: &str, now: Instant) -> Vec<Arc<Message>> {
        let mut matched: Vec<Arc<Message>> = self
            .map
            .read()
            .values()
            .filter(|m| !m.is_expired(now) && topic::matches(filter, &m.topic))
            .cloned()
            .collect();
        matched.sort_by(|a, b| a.topic.cmp(&b.topic));
        matched
    }

    /// Up to `limit` retained messages: topic, QoS and payload size, sorted by topic.
    pub fn list(&self, limit: usize) -> Vec<(String, u8, usize)> {
        let r = self.map.read();
        let mut v: Vec<(String, u8, usize)> = r
            .values()
            .map(|m| (m.topic.clone(), m.qos as u8, m.payload.len()))
            .collect();
        v.sort();
        v.truncate(limit);
        v
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        assert!(matches!(
            r.set(&msg("a/2", b"x"), now),
            Op::PutRetained { .. }
        ));
        r.set(&msg("a/1", b"y"), now);
        r.set(&msg("b", b"z"), now);
        let topics: Vec<String> = r
            .matching("a/#", now)
            .iter()
            .map(|m| m.topic.clone())
            .collect();
        assert_eq!(topics, ["a/1", "a/2"]);
        assert!(matches!(
            r.set(&msg("a/1", b""), now),
            Op::DeleteRetained { .. }
        ));
        assert_eq!(r.len(), 2);
    }
}
