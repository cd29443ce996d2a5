//! What a forwarded message looks like on NATS, sans-IO.
//!
//! Body: the message as the store encodes it (`store::codec::encode_message`: QoS, RETAIN,
//! expiry as wall-clock time, then the MQTT 5 PUBLISH encoding with topic, properties and
//! payload), so it is decoded by the same fuzzed code. Headers: `Sb-Node` (the origin
//! node's name) and `Sb-Id` (a number unique on that node), which let a node skip its own
//! messages and drop the copies that overlapping subscriptions bring.

use std::time::Instant;

use async_nats::HeaderMap;

use crate::message::Message;
use crate::store::codec;

/// Header naming the node that published the message.
pub const NODE: &str = "Sb-Node";
/// Header with the message's number on its node.
pub const ID: &str = "Sb-Id";
/// Subject (under the prefix) retained messages are broadcast on.
pub const RETAINED: &str = "retained";

/// The headers of message `id` from `node`.
pub fn headers(node: &str, id: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(NODE, node);
    h.insert(ID, id.to_string());
    h
}

/// The origin node and number of a NATS message; `None` if they are missing.
pub fn origin(h: Option<&HeaderMap>) -> Option<(&str, u64)> {
    let h = h?;
    let node = h.get(NODE)?.as_str();
    let id = h.get(ID)?.as_str().parse().ok()?;
    Some((node, id))
}

/// The message a body stands for, as seen on this node: its publishing session is on
/// another node, so it has no local origin (No Local never applies to it).
pub fn decode(body: &[u8], now: Instant) -> Option<Message> {
    let mut m = codec::decode_message(body, now)?;
    m.origin = 0;
    Some(m)
}

/// The QoS byte of a forwarded body (see `codec::encode_message`), 0 if too short; lets a
/// busy node drop QoS 0 messages without decoding them.
pub fn qos_of(body: &[u8]) -> u8 {
    body.get(1).copied().unwrap_or(0)
}

/// A stable 64-bit hash of a node name (FNV-1a), for the duplicate window.
pub fn node_hash(node: &str) -> u64 {
    node.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use switchboard_proto::QoS;

    #[test]
    fn headers_and_body_round_trip() {
        let h = headers("node-1", 42);
        assert_eq!(origin(Some(&h)), Some(("node-1", 42)));
        assert_eq!(origin(None), None);
        let mut m = Message::system("a/b".into(), Bytes::from_static(b"hi"), true);
        m.qos = QoS::ExactlyOnce;
        m.origin = 77;
        let now = Instant::now();
        let back = decode(&codec::encode_message(&m, now), now).expect("decodes");
        assert_eq!(back.topic, "a/b");
        assert_eq!(back.payload, "hi");
        assert_eq!(back.qos, QoS::ExactlyOnce);
        assert!(back.retain);
        assert_eq!(back.origin, 0, "a remote session is never local");
        assert_eq!(qos_of(&codec::encode_message(&m, now)), 2);
        assert_eq!(qos_of(b""), 0);
        assert!(decode(b"garbage", now).is_none());
        assert_ne!(node_hash("a"), node_hash("b"));
    }
}
