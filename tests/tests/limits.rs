//! Limits that protect everyone (issue 11, items 6 and 7), each reached by a test client:
//! retained caps (0x97, neither stored nor routed), expired retained messages purged,
//! persistent-session caps (count: 0x97; client-id length: 0x85) and the finite default
//! Session Expiry cap.

use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::*;
use switchboard_tests::raw::connack;
use switchboard_tests::{RawClient, TestBroker, connect_packet, persistent_connect};

fn retained(topic: &str, pkid: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: topic.into(),
        pkid,
        properties: Properties::default(),
        payload: Bytes::from_static(payload),
    })
}

async fn puback(c: &mut RawClient) -> ReasonCode {
    match c.recv().await {
        Some(Packet::PubAck(a)) => a.code,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

async fn subscribe(c: &mut RawClient, filter: &str) {
    c.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(filter.into(), SubscriptionOptions::default())],
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
}

/// Retained payloads a new subscriber to `filter` gets (it then sees a marker message).
async fn retained_for(b: &TestBroker, filter: &str) -> Vec<Bytes> {
    let (mut s, _) = connack(b, connect_packet(Version::V5, "late")).await;
    subscribe(&mut s, "marker").await;
    subscribe(&mut s, filter).await;
    let (mut m, _) = connack(b, connect_packet(Version::V5, "marker-pub")).await;
    m.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "marker".into(),
        pkid: 0,
        properties: Properties::default(),
        payload: Bytes::new(),
    }))
    .await;
    let mut got = Vec::new();
    loop {
        let p = s.next_publish().await;
        if p.topic == "marker" {
            return got;
        }
        got.push(p.payload);
    }
}

#[tokio::test]
async fn retained_caps_refuse_with_0x97_and_do_not_route() {
    let b = TestBroker::start_with(|c| {
        c.limits.max_retained_per_client = 2;
        c.limits.max_retained_messages = 3;
    })
    .await;
    let (mut live, _) = connack(&b, connect_packet(Version::V5, "live")).await;
    subscribe(&mut live, "r/#").await;
    let (mut p, _) = connack(&b, connect_packet(Version::V5, "p1")).await;
    p.send(&retained("r/1", 1, b"one")).await;
    assert_eq!(puback(&mut p).await, ReasonCode::Success);
    p.send(&retained("r/2", 2, b"two")).await;
    assert_eq!(puback(&mut p).await, ReasonCode::Success);
    p.send(&retained("r/3", 3, b"three")).await;
    assert_eq!(
        puback(&mut p).await,
        ReasonCode::QuotaExceeded,
        "per-client cap"
    );
    p.send(&retained("r/1", 4, b"one again")).await;
    assert_eq!(puback(&mut p).await, ReasonCode::Success, "replacing fits");
    // Another client still has room in the global cap, then the global cap is reached.
    let (mut q, _) = connack(&b, connect_packet(Version::V5, "p2")).await;
    q.send(&retained("r/4", 1, b"four")).await;
    assert_eq!(puback(&mut q).await, ReasonCode::Success);
    q.send(&retained("r/5", 2, b"five")).await;
    assert_eq!(
        puback(&mut q).await,
        ReasonCode::QuotaExceeded,
        "global cap"
    );

    let routed: Vec<Bytes> = [
        live.next_publish().await,
        live.next_publish().await,
        live.next_publish().await,
        live.next_publish().await,
    ]
    .into_iter()
    .map(|p| p.payload)
    .collect();
    assert_eq!(
        routed,
        [&b"one"[..], b"two", b"one again", b"four"],
        "refused messages are not routed"
    );
    assert_eq!(
        retained_for(&b, "r/#").await,
        [&b"one again"[..], b"two", b"four"]
    );
    assert_eq!(b.handle.state().retained.len(), 3);
    b.handle.shutdown().await;
}

#[tokio::test]
async fn expired_retained_messages_are_purged_and_not_sent() {
    let b = TestBroker::start_with(|c| c.limits.retained_purge_interval = 1).await;
    let (mut p, _) = connack(&b, connect_packet(Version::V5, "p")).await;
    let mut short = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "x/short".into(),
        pkid: 1,
        properties: Properties::default(),
        payload: Bytes::from_static(b"gone soon"),
    };
    short.properties.message_expiry_interval = Some(1);
    p.send(&Packet::Publish(short)).await;
    assert_eq!(puback(&mut p).await, ReasonCode::NoMatchingSubscribers);
    p.send(&retained("x/long", 2, b"stays")).await;
    assert_eq!(puback(&mut p).await, ReasonCode::NoMatchingSubscribers);
    assert_eq!(b.handle.state().retained.len(), 2);
    // The purge runs every second: wait for it (bounded), then check what is sent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.handle.state().retained.len() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expired retained message never purged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(retained_for(&b, "x/#").await, [&b"stays"[..]]);
    b.handle.shutdown().await;
}

#[tokio::test]
async fn persistent_session_caps_count_and_client_id_length() {
    let b = TestBroker::start_with(|c| {
        c.limits.max_persistent_sessions = 2;
        c.limits.max_persistent_client_id_len = 256;
    })
    .await;
    let (_a, ack) = connack(&b, persistent_connect("keep-1", 600)).await;
    assert_eq!(ack.code, ReasonCode::Success);
    let (_b, ack) = connack(&b, persistent_connect("keep-2", 600)).await;
    assert_eq!(ack.code, ReasonCode::Success);
    let (_, ack) = connack(&b, persistent_connect("keep-3", 600)).await;
    assert_eq!(
        ack.code,
        ReasonCode::QuotaExceeded,
        "third persistent session"
    );
    let (_, ack) = connack(
        &b,
        Connect {
            clean_start: false,
            ..connect_packet(Version::V3_1_1, "keep-4")
        },
    )
    .await;
    assert_eq!(ack.code.v3_connack_code(), 3, "3.1.1: server unavailable");
    // Resuming an existing one and clean sessions are fine.
    let (_c, ack) = connack(&b, persistent_connect("keep-1", 600)).await;
    assert_eq!(ack.code, ReasonCode::Success);
    let (_d, ack) = connack(&b, connect_packet(Version::V5, "clean")).await;
    assert_eq!(ack.code, ReasonCode::Success);
    assert_eq!(b.handle.state().sessions.persistent(), 2);

    // Long ids: not as persistent sessions (they would be store keys).
    let long = "x".repeat(65_535);
    let (_, ack) = connack(&b, persistent_connect(&long, 600)).await;
    assert_eq!(ack.code, ReasonCode::ClientIdentifierNotValid);
    let (_, ack) = connack(&b, persistent_connect(&"y".repeat(257), 600)).await;
    assert_eq!(ack.code, ReasonCode::ClientIdentifierNotValid);
    b.handle.shutdown().await;
}

#[tokio::test]
async fn session_expiry_is_capped_at_seven_days_by_default() {
    let b = TestBroker::start().await;
    let (_c, ack) = connack(&b, persistent_connect("forever", u32::MAX)).await;
    assert_eq!(ack.code, ReasonCode::Success);
    assert_eq!(ack.properties.session_expiry_interval, Some(604_800));
    b.handle.shutdown().await;
}

#[tokio::test]
async fn silent_connection_holds_no_connection_permit() {
    let b = TestBroker::start_with(|c| c.limits.max_connections = 1).await;
    // Opens TCP and sends nothing: it holds a pending slot, not the one connection permit.
    let _silent = RawClient::open(b.addr, Version::V5).await;
    let (_first, ack) = connack(&b, connect_packet(Version::V5, "gets-in")).await;
    assert_eq!(ack.code, ReasonCode::Success);
    let (_, ack) = connack(&b, connect_packet(Version::V5, "one-too-many")).await;
    assert_eq!(
        ack.code,
        ReasonCode::ServerBusy,
        "the permit is taken at CONNECT"
    );
    b.handle.shutdown().await;
}

#[tokio::test]
async fn silent_connection_loses_its_pending_slot_within_the_connect_timeout() {
    let b = TestBroker::start_with(|c| {
        c.limits.max_pending_connections = 1;
        c.limits.connect_timeout = 1;
    })
    .await;
    let mut silent = RawClient::open(b.addr, Version::V5).await;
    let (_, ack) =
        RawClient::connect_or_closed(b.addr, connect_packet(Version::V5, "turned-away")).await;
    assert!(
        ack.is_none(),
        "no pending slot while the silent one holds it: {ack:?}"
    );
    // The broker closes the silent connection (without a word) within the timeout.
    assert!(silent.recv().await.is_none());
    let (_, ack) = connack(&b, connect_packet(Version::V5, "gets-in")).await;
    assert_eq!(ack.code, ReasonCode::Success);
    b.handle.shutdown().await;
}
