//! The store across restarts: retained messages, queued messages, session expiry, delayed
//! wills, QoS 2 state, the disk budget, and refusing a foreign or corrupt data file.

use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::*;
use switchboard_tests::raw::{connack, message as publish, subscribe_acked as subscribe};
use switchboard_tests::{TempDir, TestBroker, connect_packet, persistent_connect};

#[tokio::test]
async fn retained_and_queued_messages_survive_restart() {
    let dir = TempDir::new("restart");
    let b = TestBroker::start_durable(dir.path(), 0, |_| {}).await;
    let (mut s, _) = connack(&b, persistent_connect("keeper", 600)).await;
    subscribe(&mut s, "keep/#", QoS::ExactlyOnce).await;
    s.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    s.expect_closed().await;
    let (mut p, _) = connack(&b, connect_packet(Version::V5, "p")).await;
    p.send(&publish("keep/r", QoS::AtLeastOnce, 1, true, b"retained"))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(_))));
    for (i, payload) in [&b"q1"[..], b"q2", b"q3"].into_iter().enumerate() {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        p.send(&publish("keep/q", qos, 10 + i as u16, false, payload))
            .await;
        p.recv().await.expect("ack");
    }
    let port = b.port();
    b.stop().await;

    let b = TestBroker::start_durable(dir.path(), port, |_| {}).await;
    let (mut s, ack) = connack(&b, persistent_connect("keeper", 600)).await;
    assert!(ack.session_present, "session restored from the store");
    let got: Vec<Bytes> = [
        s.next_publish().await,
        s.next_publish().await,
        s.next_publish().await,
        s.next_publish().await,
    ]
    .into_iter()
    .map(|p| p.payload)
    .collect();
    assert_eq!(
        got,
        [&b"retained"[..], b"q1", b"q2", b"q3"],
        "queued in order"
    );
    let (mut late, _) = connack(&b, connect_packet(Version::V5, "late")).await;
    subscribe(&mut late, "keep/#", QoS::AtMostOnce).await;
    let r = late.next_publish().await;
    assert!(
        r.retain && &r.payload[..] == b"retained",
        "retained message restored"
    );
    b.stop().await;
}

#[tokio::test]
async fn acknowledged_deliveries_are_not_redelivered_after_restart() {
    let dir = TempDir::new("acked");
    let b = TestBroker::start_durable(dir.path(), 0, |_| {}).await;
    let (mut s, _) = connack(&b, persistent_connect("acker", 600)).await;
    subscribe(&mut s, "acked/#", QoS::AtLeastOnce).await;
    let (mut p, _) = connack(&b, connect_packet(Version::V5, "p")).await;
    p.send(&publish("acked/x", QoS::AtLeastOnce, 1, false, b"once"))
        .await;
    p.recv().await.expect("puback");
    let m = s.next_publish().await;
    s.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
    s.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    s.expect_closed().await;
    let port = b.port();
    b.stop().await;
    let b = TestBroker::start_durable(dir.path(), port, |_| {}).await;
    let (mut s, ack) = connack(&b, persistent_connect("acker", 600)).await;
    assert!(ack.session_present);
    assert!(
        s.recv_within(Duration::from_millis(500)).await.is_err(),
        "an acknowledged message came back"
    );
    b.stop().await;
}

#[tokio::test]
async fn session_expiry_counts_the_time_the_broker_was_down() {
    let dir = TempDir::new("expiry");
    let b = TestBroker::start_durable(dir.path(), 0, |_| {}).await;
    for (id, expiry) in [("short", 1), ("long", 600)] {
        let (mut c, _) = connack(&b, persistent_connect(id, expiry)).await;
        subscribe(&mut c, "x", QoS::AtLeastOnce).await;
        c.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
            .await;
        c.expect_closed().await;
    }
    let port = b.port();
    b.stop().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let b = TestBroker::start_durable(dir.path(), port, |_| {}).await;
    let (_, a) = connack(&b, persistent_connect("short", 1)).await;
    assert!(!a.session_present, "expired while the broker was down");
    let (_, a) = connack(&b, persistent_connect("long", 600)).await;
    assert!(a.session_present);
    b.stop().await;
}

#[tokio::test]
async fn delayed_will_fires_after_restart() {
    let dir = TempDir::new("will");
    let b = TestBroker::start_durable(dir.path(), 0, |_| {}).await;
    let (mut watcher, _) = connack(&b, persistent_connect("watcher", 600)).await;
    subscribe(&mut watcher, "wills/#", QoS::AtLeastOnce).await;
    watcher
        .send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    watcher.expect_closed().await;
    let with_will = Connect {
        will: Some(Will {
            topic: "wills/dev".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties {
                will_delay_interval: Some(2),
                ..Properties::default()
            },
        }),
        ..persistent_connect("dev", 600)
    };
    let (dev, _) = connack(&b, with_will).await;
    drop(dev); // lost without DISCONNECT: will due in 2 s
    b.until_offline("dev").await;
    let port = b.port();
    b.stop().await;

    let b = TestBroker::start_durable(dir.path(), port, |_| {}).await;
    let (mut watcher, _) = connack(&b, persistent_connect("watcher", 600)).await;
    let m = watcher.next_publish().await;
    assert_eq!(m.topic, "wills/dev");
    assert_eq!(&m.payload[..], b"gone");
    b.stop().await;
}

#[tokio::test]
async fn qos2_publish_resent_after_restart_is_not_delivered_twice() {
    let dir = TempDir::new("qos2");
    let b = TestBroker::start_durable(dir.path(), 0, |_| {}).await;
    let (mut s, _) = connack(&b, persistent_connect("q2sub", 600)).await;
    subscribe(&mut s, "q2/#", QoS::ExactlyOnce).await;
    s.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    s.expect_closed().await;
    let (mut p, _) = connack(&b, persistent_connect("q2pub", 600)).await;
    p.send(&publish("q2/x", QoS::ExactlyOnce, 42, false, b"exactly"))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(r)) if r.pkid == 42));
    let port = b.port();
    b.stop().await;

    let b = TestBroker::start_durable(dir.path(), port, |_| {}).await;
    // The publisher did not see PUBCOMP: it sends the PUBLISH again with DUP.
    let (mut p, a) = connack(&b, persistent_connect("q2pub", 600)).await;
    assert!(a.session_present);
    let Packet::Publish(mut again) = publish("q2/x", QoS::ExactlyOnce, 42, false, b"exactly")
    else {
        unreachable!()
    };
    again.dup = true;
    p.send(&Packet::Publish(again)).await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(r)) if r.pkid == 42));
    p.send(&Packet::PubRel(PubResponse::new(42))).await;
    assert!(matches!(p.recv().await, Some(Packet::PubComp(c)) if c.code == ReasonCode::Success));
    let (mut s, _) = connack(&b, persistent_connect("q2sub", 600)).await;
    let m = s.next_publish().await;
    assert_eq!(&m.payload[..], b"exactly");
    s.send(&Packet::PubRec(PubResponse::new(m.pkid))).await;
    assert!(matches!(s.recv().await, Some(Packet::PubRel(_))));
    s.send(&Packet::PubComp(PubResponse::new(m.pkid))).await;
    assert!(
        s.recv_within(Duration::from_millis(500)).await.is_err(),
        "delivered twice"
    );
    b.stop().await;
}

#[tokio::test]
async fn disk_budget_refuses_qos1_with_0x97() {
    let dir = TempDir::new("budget");
    let b = TestBroker::start_durable_budget(dir.path(), 0, 2000, |_| {}).await;
    let (mut s, _) = connack(&b, persistent_connect("hoarder", 600)).await;
    subscribe(&mut s, "big/#", QoS::AtLeastOnce).await;
    s.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    s.expect_closed().await;
    let (mut p, _) = connack(&b, connect_packet(Version::V5, "p")).await;
    let mut codes = Vec::new();
    for i in 1..=5u16 {
        p.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "big/x".into(),
            pkid: i,
            properties: Properties::default(),
            payload: Bytes::from(vec![0u8; 700]),
        }))
        .await;
        let Some(Packet::PubAck(a)) = p.recv().await else {
            panic!("no PUBACK")
        };
        codes.push(a.code);
    }
    assert_eq!(codes[0], ReasonCode::Success);
    assert_eq!(codes.last(), Some(&ReasonCode::QuotaExceeded), "{codes:?}");
    // QoS 0 is still served.
    let (mut live, _) = connack(&b, connect_packet(Version::V5, "live")).await;
    subscribe(&mut live, "big/#", QoS::AtMostOnce).await;
    p.send(&publish(
        "big/y",
        QoS::AtMostOnce,
        0,
        false,
        b"still flowing",
    ))
    .await;
    assert_eq!(&live.next_publish().await.payload[..], b"still flowing");
    b.stop().await;
}

#[test]
fn foreign_or_corrupt_data_file_is_refused_and_left_alone() {
    use switchboard_broker::store::redb::RedbStore;
    let dir = TempDir::new("corrupt");
    let path = dir.path().join("switchboard.redb");
    let garbage = b"this is not a redb file, it is somebody's notes".repeat(100);
    std::fs::write(&path, &garbage).expect("write");
    let err = RedbStore::open(&path, 0).expect_err("garbage must be refused");
    assert!(
        err.to_string().contains("not a Switchboard data file"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        garbage,
        "file untouched"
    );
}

#[tokio::test]
async fn qos2_delivery_in_flight_resumes_after_restart_with_same_packet_id() {
    let dir = TempDir::new("qos2-out");
    let b = TestBroker::start_durable(dir.path(), 0, |_| {}).await;
    let (mut s, _) = connack(&b, persistent_connect("q2out", 600)).await;
    subscribe(&mut s, "q2out/#", QoS::ExactlyOnce).await;
    let (mut p, _) = connack(&b, connect_packet(Version::V5, "p")).await;
    p.send(&publish(
        "q2out/x",
        QoS::ExactlyOnce,
        1,
        false,
        b"once only",
    ))
    .await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
    let first = s.next_publish().await;
    assert!(!first.dup);
    // No PUBREC: the broker stops with the flow open.
    let port = b.port();
    drop(s);
    b.stop().await;

    let b = TestBroker::start_durable(dir.path(), port, |_| {}).await;
    let (mut s, ack) = connack(&b, persistent_connect("q2out", 600)).await;
    assert!(ack.session_present);
    let again = s.next_publish().await;
    assert!(
        again.dup,
        "[MQTT-4.4.0-1] resent with DUP after the restart"
    );
    assert_eq!(
        again.pkid, first.pkid,
        "same packet identifier, so the client sees a resend"
    );
    s.send(&Packet::PubRec(PubResponse::new(again.pkid))).await;
    assert!(matches!(s.recv().await, Some(Packet::PubRel(r)) if r.pkid == first.pkid));
    // PUBREC done, PUBCOMP not sent: another stop.
    drop(s);
    b.stop().await;

    let b = TestBroker::start_durable(dir.path(), port, |_| {}).await;
    let (mut s, _) = connack(&b, persistent_connect("q2out", 600)).await;
    match s.recv().await {
        Some(Packet::PubRel(r)) => assert_eq!(r.pkid, first.pkid, "the flow resumes at PUBREL"),
        other => panic!("expected PUBREL, not a new PUBLISH: {other:?}"),
    }
    s.send(&Packet::PubComp(PubResponse::new(first.pkid))).await;
    assert!(
        s.recv_within(Duration::from_millis(500)).await.is_err(),
        "nothing more"
    );
    drop(s);
    b.stop().await;

    let b = TestBroker::start_durable(dir.path(), port, |_| {}).await;
    let (mut s, _) = connack(&b, persistent_connect("q2out", 600)).await;
    assert!(
        s.recv_within(Duration::from_millis(500)).await.is_err(),
        "completed flow stays completed"
    );
    b.stop().await;
}
