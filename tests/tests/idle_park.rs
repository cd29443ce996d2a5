//! A parked connection (quiet, nothing in flight: its connected loop freed, see the broker's
//! `connection::park`) behaves exactly like a running one: deliveries wake it and arrive in
//! order (QoS 0 and 1), a PINGREQ is answered, a takeover kicks it, its keep-alive still
//! expires, a lost socket still publishes its will, and shutdown still says goodbye.
//!
//! Each test parks connections after 20 ms of quiet and waits for the broker's gauge of
//! parked connections before acting, so what it checks happens to a parked connection.

use std::time::Duration;

use switchboard_proto::*;
use switchboard_tests::raw::*;
use switchboard_tests::{RawClient, TestBroker, WAIT, connect_packet, persistent_connect};

async fn broker() -> TestBroker {
    TestBroker::start_with(|c| c.limits.park_after_ms = 20).await
}

fn parked(b: &TestBroker) -> u64 {
    b.handle
        .state()
        .metrics
        .connections_parked
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Waits until exactly `n` connections are parked; panics after [`WAIT`].
async fn until_parked(b: &TestBroker, n: u64) {
    switchboard_tests::until_parked(b.handle.state(), n).await;
}

fn puback(pkid: u16) -> Packet {
    Packet::PubAck(PubResponse {
        pkid,
        code: ReasonCode::Success,
        properties: Properties::default(),
    })
}

#[tokio::test]
async fn deliveries_wake_a_parked_subscriber_in_order() {
    let b = broker().await;
    let mut s = subscribed(&b, Version::V5, "park-sub", "park/#", QoS::AtLeastOnce).await;
    let mut p = connected(&b, Version::V5, "park-pub").await;
    until_parked(&b, 2).await;

    // QoS 0 to a parked subscriber.
    p.send(&publish("park/0", QoS::AtMostOnce, 0, b"zero"))
        .await;
    let m = s.next_publish().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("park/0", &b"zero"[..]));
    until_parked(&b, 2).await;

    // QoS 1, several at once, to a parked subscriber: all of them, in order.
    for (pkid, payload) in [(1, &b"one"[..]), (2, b"two"), (3, b"three")] {
        let payload: &'static [u8] = payload;
        p.send(&publish("park/1", QoS::AtLeastOnce, pkid, payload))
            .await;
    }
    for pkid in 1..=3 {
        assert!(
            matches!(p.recv().await, Some(Packet::PubAck(a)) if a.pkid == pkid && a.code == ReasonCode::Success)
        );
    }
    for want in [&b"one"[..], b"two", b"three"] {
        let m = s.next_publish().await;
        assert_eq!(m.qos, QoS::AtLeastOnce);
        assert_eq!(&m.payload[..], want);
        s.send(&puback(m.pkid)).await;
    }
    // Acknowledged: nothing in flight, both park again, and a later delivery still wakes.
    until_parked(&b, 2).await;
    p.send(&publish("park/2", QoS::AtLeastOnce, 4, b"four"))
        .await;
    let m = s.next_publish().await;
    assert_eq!(&m.payload[..], b"four");
    s.send(&puback(m.pkid)).await;
    b.stop().await;
}

#[tokio::test]
async fn a_parked_connection_answers_pingreq() {
    let b = broker().await;
    let mut c = connected(&b, Version::V3_1_1, "park-ping").await;
    for _ in 0..3 {
        until_parked(&b, 1).await;
        c.send(&Packet::PingReq).await;
        assert_eq!(c.recv().await, Some(Packet::PingResp));
    }
    b.stop().await;
}

/// A new connection parks after `park_first_ms` of quiet, not after the longest wait: a
/// wave of phones connecting does not hold its running state for a second each.
#[tokio::test]
async fn a_new_connection_parks_after_the_first_wait_not_the_longest() {
    let b = TestBroker::start_with(|c| {
        c.limits.park_first_ms = 20;
        c.limits.park_after_ms = 600_000;
    })
    .await;
    let mut c = connected(&b, Version::V3_1_1, "park-first").await;
    until_parked(&b, 1).await;
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    b.stop().await;
}

/// Each time a connection parks, its next wait doubles, so one that keeps waking soon
/// after parking (sub-second gaps) stops parking once the wait reaches `park_after_ms`.
#[tokio::test]
async fn a_connection_that_keeps_waking_stops_parking() {
    let b = TestBroker::start_with(|c| {
        c.limits.park_first_ms = 20;
        // 20, 40, ... 1,280 ms, then the longest wait from the 7th park on.
        c.limits.park_after_ms = 2_000;
    })
    .await;
    let mut c = connected(&b, Version::V5, "park-adapt").await;
    for round in 0..7 {
        until_parked(&b, 1).await;
        c.send(&Packet::PingReq).await;
        assert_eq!(c.recv().await, Some(Packet::PingResp), "round {round}");
    }
    // Woken after its 7th park: it now waits the whole 2 s before parking again (a timer
    // may fire late on a loaded machine, never early).
    until_parked(&b, 0).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(parked(&b), 0, "a chatty connection keeps running");
    until_parked(&b, 1).await;
    b.stop().await;
}

#[tokio::test]
async fn takeover_kicks_a_parked_connection_and_keeps_its_session() {
    let b = broker().await;
    let mut old = connected_with(&b, persistent_connect("park-tk", 600)).await;
    old.send(&subscribe(1, "tk/#", qos_opts(QoS::AtLeastOnce), None))
        .await;
    assert!(matches!(old.recv().await, Some(Packet::SubAck(_))));
    until_parked(&b, 1).await;

    let (mut new, ack) = RawClient::connect(b.addr, persistent_connect("park-tk", 600)).await;
    assert!(
        matches!(ack, Packet::ConnAck(ref a) if a.code == ReasonCode::Success && a.session_present),
        "{ack:?}"
    );
    assert_eq!(
        disconnect_code(&old.expect_closed().await),
        Some(ReasonCode::SessionTakenOver)
    );
    // The subscription came along with the session.
    let mut p = connected(&b, Version::V5, "park-tk-pub").await;
    p.send(&publish("tk/x", QoS::AtMostOnce, 0, b"after")).await;
    assert_eq!(&new.next_publish().await.payload[..], b"after");
    b.stop().await;
}

#[tokio::test]
async fn keep_alive_still_expires_while_parked() {
    let b = broker().await;
    let mut c = connected_with(
        &b,
        Connect {
            keep_alive: 1,
            ..connect_packet(Version::V5, "park-ka")
        },
    )
    .await;
    until_parked(&b, 1).await;
    // Silent for 1.5 × the keep-alive: the broker closes the connection.
    assert_eq!(
        disconnect_code(&c.expect_closed().await),
        Some(ReasonCode::KeepAliveTimeout)
    );
    until_parked(&b, 0).await;
    b.stop().await;
}

#[tokio::test]
async fn a_parked_connection_lost_publishes_its_will() {
    let b = broker().await;
    let mut s = subscribed(&b, Version::V5, "park-will-sub", "will/#", QoS::AtMostOnce).await;
    let mut with_will = connect_packet(Version::V3_1_1, "park-will");
    with_will.will = Some(Will {
        topic: "will/park".into(),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
    });
    let c = connected_with(&b, with_will).await;
    until_parked(&b, 2).await;
    drop(c);
    let m = s.next_publish().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("will/park", &b"gone"[..])
    );
    b.stop().await;
}

#[tokio::test]
async fn shutdown_says_goodbye_to_parked_connections() {
    let b = broker().await;
    let mut c5 = connected(&b, Version::V5, "park-bye-5").await;
    let mut c3 = connected(&b, Version::V3_1_1, "park-bye-3").await;
    until_parked(&b, 2).await;
    let stop = tokio::spawn(b.stop());
    assert_eq!(
        disconnect_code(&c5.expect_closed().await),
        Some(ReasonCode::ServerShuttingDown)
    );
    // MQTT 3.1.1 has no server DISCONNECT: the connection just closes.
    assert!(c3.expect_closed().await.is_empty());
    stop.await.expect("broker stopped");
}

#[tokio::test]
async fn a_parked_connection_keeps_its_connection_permit_and_its_place_in_the_counts() {
    let b = TestBroker::start_with(|c| {
        c.limits.park_after_ms = 20;
        c.limits.max_connections = 1;
    })
    .await;
    let first = connected(&b, Version::V5, "park-permit").await;
    until_parked(&b, 1).await;
    let metrics = &b.handle.state().metrics;
    assert_eq!(
        metrics
            .clients_connected
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "a parked connection is still a connected client"
    );
    let (_, ack) = RawClient::connect(b.addr, connect_packet(Version::V5, "one-too-many")).await;
    match ack {
        Packet::ConnAck(a) => assert_eq!(
            a.code,
            ReasonCode::ServerBusy,
            "the parked one holds the permit"
        ),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // Closed while parked: the parker notices, and the permit comes back.
    drop(first);
    until_parked(&b, 0).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_c, ack) = RawClient::connect(b.addr, connect_packet(Version::V5, "next")).await;
        match ack {
            Packet::ConnAck(a) if a.code == ReasonCode::Success => break,
            Packet::ConnAck(a) if a.code == ReasonCode::ServerBusy => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the permit never came back"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_wakes_every_one_of_many_parked_subscribers() {
    // More connections woken at once than tokio's cooperative budget per poll (128): the
    // parker must still see each one's delivery.
    const N: usize = 400;
    let b = broker().await;
    let mut subs = Vec::with_capacity(N);
    for i in 0..N {
        subs.push(
            subscribed(
                &b,
                Version::V3_1_1,
                &format!("burst-{i}"),
                "burst/#",
                QoS::AtMostOnce,
            )
            .await,
        );
    }
    let mut p = connected(&b, Version::V3_1_1, "burst-pub").await;
    until_parked(&b, N as u64 + 1).await;
    p.send(&publish("burst/all", QoS::AtMostOnce, 0, b"everyone"))
        .await;
    for s in &mut subs {
        let m = s.next_publish().await;
        assert_eq!(&m.payload[..], b"everyone");
    }
    // And every one of them parks again.
    until_parked(&b, N as u64 + 1).await;
    b.stop().await;
}
