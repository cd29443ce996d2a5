//! An application message inside the broker, and one delivery of it to one session.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use switchboard_proto::{PlainPublish, Properties, Publish, QoS, Will};

/// A message as routed: shared by every session it goes to.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Properties forwarded unchanged (payload format, content type, response topic,
    /// correlation data, user properties). Expiry, alias and subscription identifiers are
    /// per delivery and not kept here. `None` when there are none (most messages), which
    /// keeps a queued message small.
    pub properties: Option<Box<Properties>>,
    /// When the Message Expiry Interval runs out.
    pub expires_at: Option<Instant>,
    /// Session that published it (for No Local); 0 for the broker itself.
    pub origin: u64,
}

impl Message {
    /// Builds a message from an incoming PUBLISH.
    pub fn from_publish(p: Publish, origin: u64, now: Instant) -> Message {
        let mut properties = p.properties;
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|s| now + std::time::Duration::from_secs(u64::from(s)));
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: boxed(properties),
            expires_at,
            origin,
        }
    }

    /// Builds the message a will stands for.
    pub fn from_will(w: Will, origin: u64, now: Instant) -> Message {
        let mut properties = w.properties;
        properties.will_delay_interval = None;
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|s| now + std::time::Duration::from_secs(u64::from(s)));
        Message {
            topic: w.topic,
            payload: w.payload,
            qos: w.qos,
            retain: w.retain,
            properties: boxed(properties),
            expires_at,
            origin,
        }
    }

    /// A message the broker itself publishes (`$SYS`).
    pub fn system(topic: String, payload: Bytes, retain: bool) -> Message {
        Message {
            topic,
            payload,
            qos: QoS::AtMostOnce,
            retain,
            properties: None,
            expires_at: None,
            origin: 0,
        }
    }

    /// True once its expiry interval has passed.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// Bytes it costs in a queue or the retained set: topic, payload, a fixed overhead, and
    /// the properties (their encoded size plus the in-memory overhead of each user
    /// property), so that properties cannot amplify memory beyond the byte bounds.
    pub fn cost(&self) -> usize {
        let props = self.properties.as_ref().map_or(0, |p| {
            std::mem::size_of::<Properties>() + p.len() + 48 * p.user_properties.len()
        });
        self.topic.len() + self.payload.len() + 64 + props
    }
}

/// Names a shared subscription, to redeliver to another member when one goes away.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShareKey {
    pub group: String,
    pub filter: String,
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// The lower of the message's and the subscription's QoS.
    pub qos: QoS,
    /// RETAIN flag as the subscriber sees it.
    pub retain: bool,
    /// Identifiers of the matching subscriptions.
    pub sub_ids: Vec<u32>,
    /// Set when it came through a shared subscription.
    pub shared: Option<Arc<ShareKey>>,
    /// Its key in the session's stored queue, when stored.
    pub seq: Option<u64>,
    /// When a mailbox queued it, in seconds of [`crate::mailbox::clock_s`] (0 until then;
    /// fits in the struct's padding). Operators see the age of queued messages from it.
    pub queued_s: u32,
    /// Handed over from another member of its shared group that went away: the store
    /// write that moves it (the other member's stored copy out, this session's in) was
    /// submitted before it was queued here, and it is not sent before that write is
    /// durable, so a crash cannot leave it with both members (fits in the padding too).
    pub handed: bool,
}

impl Delivery {
    /// A delivery of `msg` at `qos` with nothing else: not retained, no subscription ids,
    /// not shared, not stored.
    pub fn new(msg: Arc<Message>, qos: QoS) -> Delivery {
        Delivery {
            msg,
            qos,
            retain: false,
            sub_ids: Vec::new(),
            shared: None,
            seq: None,
            queued_s: 0,
            handed: false,
        }
    }

    /// What is left of the message's expiry interval, in whole seconds rounded up
    /// ([MQTT-3.3.2-6]): `Some(None)` if it has none, `None` if it expired while queued.
    pub fn expiry_left(&self, now: &Now) -> Option<Option<u32>> {
        let Some(at) = self.msg.expires_at else {
            return Some(None);
        };
        let left = at.checked_duration_since(now.get())?;
        if left.is_zero() {
            return None;
        }
        Some(Some(left.as_secs_f64().ceil() as u32))
    }

    /// The PUBLISH to send, or `None` if the message expired while queued. The expiry
    /// interval sent is what remains of it ([MQTT-3.3.2-6]).
    pub fn to_publish(&self, now: &Now) -> Option<Publish> {
        let mut properties = self.msg.properties.as_deref().cloned().unwrap_or_default();
        if let Some(left) = self.expiry_left(now)? {
            properties.message_expiry_interval = Some(left);
        }
        properties
            .subscription_identifiers
            .clone_from(&self.sub_ids);
        Some(Publish {
            dup: false,
            qos: self.qos,
            retain: self.retain,
            topic: self.msg.topic.clone(),
            pkid: 0,
            properties,
            payload: self.msg.payload.clone(),
        })
    }

    /// The PUBLISH to send without building one (see [`PlainPublish`]), if this is a QoS 0
    /// delivery of a message without properties of its own; `Some(None)`: it expired
    /// while queued. `topic`: the topic as the client sees it.
    pub fn to_plain<'a>(&'a self, now: &Now, topic: &'a str) -> Option<Option<PlainPublish<'a>>> {
        if self.qos != QoS::AtMostOnce || self.msg.properties.is_some() {
            return None;
        }
        Some(self.expiry_left(now).map(|expiry| PlainPublish {
            retain: self.retain,
            topic,
            message_expiry_interval: expiry,
            subscription_identifiers: &self.sub_ids,
            topic_alias: None,
            payload: &self.msg.payload,
        }))
    }
}

/// The time for a batch of deliveries, read from the clock at most once and only if one
/// of them has an expiry to check (most have none: a fan-out's drain reads no clock).
#[derive(Debug, Default)]
pub struct Now(std::cell::OnceCell<Instant>);

impl Now {
    /// A time already read.
    pub fn at(t: Instant) -> Now {
        Now(std::cell::OnceCell::from(t))
    }

    pub fn get(&self) -> Instant {
        *self.0.get_or_init(Instant::now)
    }
}

/// Boxes properties only when there are any.
pub fn boxed(p: Properties) -> Option<Box<Properties>> {
    (!p.is_empty()).then(|| Box::new(p))
}
