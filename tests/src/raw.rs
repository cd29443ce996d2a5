//! Raw-client helpers for byte-exact protocol tests: packets, connect, subscribe.

use bytes::Bytes;
use switchboard_proto::*;

use crate::{RawClient, TestBroker, connect_packet};

pub fn publish(topic: &str, qos: QoS, pkid: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        properties: Properties::default(),
        payload: Bytes::from_static(payload),
    })
}

/// A PUBLISH with its retain flag and a payload copied from `payload`.
pub fn message(topic: &str, qos: QoS, pkid: u16, retain: bool, payload: &[u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        pkid,
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    })
}

/// Connects with `c` and returns the client and its CONNACK, whatever its code.
pub async fn connack(b: &TestBroker, c: Connect) -> (RawClient, ConnAck) {
    match RawClient::connect(b.addr, c).await {
        (client, Packet::ConnAck(a)) => (client, a),
        (_, other) => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Subscribes `c` to `filter` at `qos` (packet id 1) and waits for the SUBACK.
pub async fn subscribe_acked(c: &mut RawClient, filter: &str, qos: QoS) {
    c.send(&subscribe(1, filter, qos_opts(qos), None)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
}

pub fn subscribe(pkid: u16, filter: &str, opts: SubscriptionOptions, id: Option<u32>) -> Packet {
    Packet::Subscribe(Subscribe {
        pkid,
        properties: Properties {
            subscription_identifiers: id.into_iter().collect(),
            ..Properties::default()
        },
        filters: vec![(filter.into(), opts)],
    })
}

pub fn qos_opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..Default::default()
    }
}

pub async fn connected(b: &TestBroker, v: Version, id: &str) -> RawClient {
    connected_with(b, connect_packet(v, id)).await
}

pub async fn connected_with(b: &TestBroker, c: Connect) -> RawClient {
    let (client, ack) = RawClient::connect(b.addr, c).await;
    match ack {
        Packet::ConnAck(a) => assert_eq!(a.code, ReasonCode::Success, "{a:?}"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client
}

pub async fn subscribed(b: &TestBroker, v: Version, id: &str, filter: &str, qos: QoS) -> RawClient {
    let mut c = connected(b, v, id).await;
    c.send(&subscribe(1, filter, qos_opts(qos), None)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

pub fn disconnect_code(packets: &[Packet]) -> Option<ReasonCode> {
    packets.iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.code),
        _ => None,
    })
}
