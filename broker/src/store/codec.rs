//! How records are laid out on disk. Messages reuse the MQTT 5 PUBLISH encoding (topic,
//! properties, payload) behind a small header, so the stored form is as compact as the
//! wire form and decoded by the same, fuzzed, code. Session records are JSON: small, rare,
//! and readable by `switchboard ctl store inspect`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use switchboard_proto::{Packet, Publish, QoS, RetainHandling, SubscriptionOptions, Version};

use crate::message::Message;

const MESSAGE_FORMAT: u8 = 1;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Encodes a message with its expiry as a wall-clock time.
pub fn encode_message(m: &Message, now: Instant) -> Vec<u8> {
    let expires_unix = m
        .expires_at
        .map(|at| unix_now() + at.saturating_duration_since(now).as_secs());
    let mut buf = BytesMut::with_capacity(m.cost() + 32);
    buf.put_u8(MESSAGE_FORMAT);
    buf.put_u8(m.qos as u8);
    buf.put_u8(u8::from(m.retain));
    buf.put_u64(expires_unix.unwrap_or(0));
    buf.put_u64(m.origin);
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: m.topic.clone(),
        pkid: 0,
        properties: m.properties.as_deref().cloned().unwrap_or_default(),
        payload: m.payload.clone(),
    })
    .encode(Version::V5, &mut buf);
    buf.to_vec()
}

/// Decodes a message; `None` if the bytes are not one (a corrupt record).
pub fn decode_message(raw: &[u8], now: Instant) -> Option<Message> {
    let (head, rest) = raw.split_at_checked(19)?;
    if head[0] != MESSAGE_FORMAT {
        return None;
    }
    let qos = QoS::from_u8(head[1])?;
    let retain = head[2] == 1;
    let expires_unix = u64::from_be_bytes(head[3..11].try_into().ok()?);
    let origin = u64::from_be_bytes(head[11..19].try_into().ok()?);
    let mut buf = BytesMut::from(rest);
    let Ok(Some(Packet::Publish(p))) = Packet::read(&mut buf, Version::V5, usize::MAX) else {
        return None;
    };
    let expires_at = (expires_unix != 0).then(|| {
        let left = expires_unix.saturating_sub(unix_now());
        now + Duration::from_secs(left)
    });
    Some(Message {
        topic: p.topic,
        payload: p.payload,
        qos,
        retain,
        properties: crate::message::boxed(p.properties),
        expires_at,
        origin,
    })
}

/// One queued delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDelivery {
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// [`encode_message`] bytes.
    pub message: Bytes,
    /// Where its outgoing flow stood when last written.
    pub sent: Sent,
}

/// The outgoing flow of a stored delivery, so that a restart resumes it as the spec asks
/// (PUBLISH again with DUP and the same packet id, or PUBREL) instead of starting over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sent {
    /// Not sent yet.
    #[default]
    Queued,
    /// PUBLISH sent with this packet id, not acknowledged.
    Published(u16),
    /// QoS 2: PUBREC received and PUBREL sent with this packet id, PUBCOMP awaited.
    Released(u16),
}

impl StoredDelivery {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.message.len() + 11 + 4 * self.sub_ids.len());
        out.push(self.qos as u8);
        out.push(u8::from(self.retain));
        let (state, pkid) = match self.sent {
            Sent::Queued => (0u8, 0u16),
            Sent::Published(p) => (1, p),
            Sent::Released(p) => (2, p),
        };
        out.push(state);
        out.extend_from_slice(&pkid.to_be_bytes());
        out.push(self.sub_ids.len().min(255) as u8);
        for id in self.sub_ids.iter().take(255) {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&self.message);
        out
    }

    pub fn decode(raw: &[u8]) -> Option<StoredDelivery> {
        let (&[qos, retain, state, p1, p2, n], rest) = raw.split_first_chunk::<6>()?;
        let pkid = u16::from_be_bytes([p1, p2]);
        let sent = match (state, pkid) {
            (0, _) => Sent::Queued,
            (1, p) if p != 0 => Sent::Published(p),
            (2, p) if p != 0 => Sent::Released(p),
            _ => return None,
        };
        let (ids, message) = rest.split_at_checked(usize::from(n) * 4)?;
        Some(StoredDelivery {
            sent,
            qos: QoS::from_u8(qos)?,
            retain: retain == 1,
            sub_ids: ids
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            message: Bytes::copy_from_slice(message),
        })
    }
}

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubEntry {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub id: Option<u32>,
}

impl SubEntry {
    pub fn new(filter: &str, o: SubscriptionOptions, id: Option<u32>) -> Self {
        SubEntry {
            filter: filter.to_owned(),
            qos: o.qos as u8,
            no_local: o.no_local,
            retain_as_published: o.retain_as_published,
            retain_handling: o.retain_handling as u8,
            id,
        }
    }

    pub fn options(&self) -> SubscriptionOptions {
        SubscriptionOptions {
            qos: QoS::from_u8(self.qos).unwrap_or(QoS::AtMostOnce),
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling: match self.retain_handling {
                1 => RetainHandling::SendIfNew,
                2 => RetainHandling::DoNotSend,
                _ => RetainHandling::SendAtSubscribe,
            },
        }
    }
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub uid: u64,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry: u32,
    pub subs: Vec<SubEntry>,
    /// When the client went away (Unix seconds); `None` while connected.
    pub disconnected_at: Option<u64>,
    /// A will waiting for its delay: encoded message and the Unix time it is due.
    pub will: Option<(Vec<u8>, u64)>,
    /// The identity that created the session (see [`crate::sessions::owner_of`]); only it
    /// may resume or replace the session. Records written before owners existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::Properties;

    #[test]
    fn message_round_trips_with_expiry() {
        let now = Instant::now();
        let m = Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Some(Box::new(Properties {
                user_properties: vec![("k".into(), "v".into())],
                ..Properties::default()
            })),
            expires_at: Some(now + Duration::from_secs(100)),
            origin: 42,
        };
        let back = decode_message(&encode_message(&m, now), now).expect("decodes");
        assert_eq!(back.topic, m.topic);
        assert_eq!(back.payload, m.payload);
        assert_eq!(back.qos, m.qos);
        assert!(back.retain);
        assert_eq!(back.origin, 42);
        assert_eq!(back.properties, m.properties);
        let left = back
            .expires_at
            .expect("expiry")
            .duration_since(now)
            .as_secs();
        assert!((98..=100).contains(&left), "{left}");
    }

    #[test]
    fn corrupt_records_are_rejected_not_panicking() {
        assert!(decode_message(&[], Instant::now()).is_none());
        assert!(decode_message(&[1; 40], Instant::now()).is_none());
        assert!(StoredDelivery::decode(&[1, 0, 0, 0, 0, 200, 1]).is_none());
        assert!(
            StoredDelivery::decode(&[1, 0, 1, 0, 0, 0]).is_none(),
            "sent with packet id 0"
        );
    }

    #[test]
    fn delivery_round_trips() {
        let d = StoredDelivery {
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: vec![1, 70000],
            message: Bytes::from_static(b"xyz"),
            sent: Sent::Released(9),
        };
        assert_eq!(StoredDelivery::decode(&d.encode()), Some(d));
    }
}
