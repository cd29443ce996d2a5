//! A plain-TCP connection parked in its compact form (the broker's `connection::dormant`:
//! the session state machine and the connection are rebuilt on wake-up, see
//! `idle_memory.rs` for what that saves) resumes with every piece of protocol state a
//! quiet connection can still hold: topic aliases both ways, a QoS 2 PUBREL it owes, and
//! the keep-alive the server set. `idle_park.rs` covers the rest (deliveries, PINGREQ,
//! takeover, keep-alive expiry, will, shutdown, permits).

use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::*;
use switchboard_tests::raw::*;
use switchboard_tests::{RawClient, TestBroker, connect_packet, until_parked};

async fn broker() -> TestBroker {
    TestBroker::start_with(|c| c.limits.park_after_ms = 20).await
}

fn aliased(topic: &str, alias: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic.into(),
        pkid: 0,
        properties: Properties {
            topic_alias: Some(alias),
            ..Properties::default()
        },
        payload: Bytes::from_static(payload),
    })
}

fn response(pkid: u16) -> PubResponse {
    PubResponse {
        pkid,
        code: ReasonCode::Success,
        properties: Properties::default(),
    }
}

#[tokio::test]
async fn topic_aliases_survive_parking_both_ways() {
    let b = broker().await;
    let mut sub_connect = connect_packet(Version::V5, "dormant-alias-sub");
    sub_connect.properties.topic_alias_maximum = Some(4);
    let mut s = connected_with(&b, sub_connect).await;
    subscribe_acked(&mut s, "alias/#", QoS::AtMostOnce).await;
    let mut p = connected(&b, Version::V5, "dormant-alias-pub").await;

    // The publisher sets alias 3; the broker gives the subscriber an alias of its own.
    p.send(&aliased("alias/x", 3, b"first")).await;
    let first = s.next_publish().await;
    assert_eq!(
        (first.topic.as_str(), &first.payload[..]),
        ("alias/x", &b"first"[..])
    );
    let out_alias = first.properties.topic_alias;
    assert!(
        out_alias.is_some(),
        "the broker aliases towards a client that allows it"
    );

    // Both parked, in the compact form: the aliases must have been kept.
    until_parked(b.handle.state(), 2).await;
    p.send(&aliased("", 3, b"second")).await;
    let second = s.next_publish().await;
    assert_eq!(&second.payload[..], b"second");
    assert_eq!(
        (second.topic.as_str(), second.properties.topic_alias),
        ("", out_alias),
        "the subscriber's alias is used again without its topic"
    );
    // Parked again, the publisher's alias still resolves (no protocol error).
    until_parked(b.handle.state(), 2).await;
    p.send(&aliased("", 3, b"third")).await;
    assert_eq!(&s.next_publish().await.payload[..], b"third");
    b.stop().await;
}

#[tokio::test]
async fn a_qos2_pubrel_owed_survives_parking() {
    let b = broker().await;
    let mut s = subscribed(&b, Version::V5, "dormant-q2-sub", "q2/#", QoS::AtMostOnce).await;
    let mut p = connected(&b, Version::V5, "dormant-q2-pub").await;
    p.send(&publish("q2/x", QoS::ExactlyOnce, 7, b"once")).await;
    assert_eq!(p.recv().await, Some(Packet::PubRec(response(7))));
    assert_eq!(&s.next_publish().await.payload[..], b"once");

    // Parked while the broker waits for PUBREL 7.
    until_parked(b.handle.state(), 2).await;
    // The same PUBLISH again (the client did not see PUBREC): acknowledged, not delivered
    // a second time, because the broker still knows packet id 7.
    let mut again = publish("q2/x", QoS::ExactlyOnce, 7, b"once");
    if let Packet::Publish(p) = &mut again {
        p.dup = true;
    }
    p.send(&again).await;
    assert_eq!(p.recv().await, Some(Packet::PubRec(response(7))));
    until_parked(b.handle.state(), 2).await;
    p.send(&Packet::PubRel(response(7))).await;
    assert_eq!(
        p.recv().await,
        Some(Packet::PubComp(response(7))),
        "PUBCOMP with success: packet id 7 was still awaiting its PUBREL"
    );
    // The next message is the subscriber's next delivery: no duplicate of "once".
    p.send(&publish("q2/y", QoS::AtMostOnce, 0, b"marker"))
        .await;
    let m = s.next_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("q2/y", &b"marker"[..]));
    b.stop().await;
}

#[tokio::test]
async fn the_server_keep_alive_survives_parking() {
    // The server caps the keep-alive at 1 s; the client asked for none. Parked, the
    // connection must still expire after 1.5 s of silence.
    let b = TestBroker::start_with(|c| {
        c.limits.park_after_ms = 20;
        c.limits.max_keep_alive = 1;
    })
    .await;
    let mut connect = connect_packet(Version::V5, "dormant-ka");
    connect.keep_alive = 0;
    let (mut c, ack) = RawClient::connect(b.addr, connect).await;
    assert!(
        matches!(ack, Packet::ConnAck(ref a) if a.code == ReasonCode::Success && a.properties.server_keep_alive == Some(1)),
        "{ack:?}"
    );
    until_parked(b.handle.state(), 1).await;
    // Woken by a PINGREQ, parked again: still the same keep-alive.
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    until_parked(b.handle.state(), 1).await;
    let closed = tokio::time::timeout(Duration::from_secs(30), c.expect_closed())
        .await
        .expect("closed by the keep-alive");
    assert_eq!(disconnect_code(&closed), Some(ReasonCode::KeepAliveTimeout));
    b.stop().await;
}

#[tokio::test]
async fn subscriptions_survive_parking() {
    // The parked form keeps the subscriptions as a list, rebuilt into a map on wake-up.
    let b = broker().await;
    let mut s = connected(&b, Version::V5, "dormant-subs").await;
    for (pkid, filter) in [(1, "subs/a"), (2, "subs/b/#"), (3, "subs/c")] {
        s.send(&subscribe(pkid, filter, qos_opts(QoS::AtMostOnce), None))
            .await;
        assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    }
    until_parked(b.handle.state(), 1).await;
    let unsubscribe = |pkid: u16, filters: &[&str]| {
        Packet::Unsubscribe(Unsubscribe {
            pkid,
            properties: Properties::default(),
            filters: filters.iter().map(|f| (*f).to_owned()).collect(),
        })
    };
    s.send(&unsubscribe(4, &["subs/b/#", "subs/never"])).await;
    match s.recv().await {
        Some(Packet::UnsubAck(a)) => assert_eq!(
            (a.pkid, a.codes),
            (
                4,
                vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
            ),
            "the parked connection still knew its subscription"
        ),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    // The others are still there, the removed one is gone.
    let mut p = connected(&b, Version::V5, "dormant-subs-pub").await;
    until_parked(b.handle.state(), 2).await;
    for topic in ["subs/b/x", "subs/a"] {
        p.send(&publish(topic, QoS::AtMostOnce, 0, b"m")).await;
    }
    assert_eq!(s.next_publish().await.topic, "subs/a");
    b.stop().await;
}
