//! QUIC with a real client (quinn): a subscription survives an address change without
//! reconnecting, reconnects use 0-RTT, and a connection that opens no stream is closed
//! after the connect timeout. Split from `transports.rs`, whose broker set-up it shares.

use std::time::Duration;

use switchboard_broker::metrics::Metrics;
use switchboard_proto::*;
use switchboard_tests::transports::{QuicClient, QuicStream, start};
use switchboard_tests::{RawClient, TempDir, WAIT, connect_packet};

fn subscribe(filter: &str) -> Packet {
    Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(
            filter.into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
    })
}

fn publish(topic: &str, pkid: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        pkid,
        properties: Properties::default(),
        payload: bytes::Bytes::from_static(payload),
    })
}

async fn next_publish(s: &mut QuicStream) -> Publish {
    loop {
        match s.recv().await {
            Some(Packet::Publish(p)) => return p,
            Some(_) => {}
            None => panic!("QUIC stream closed"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_subscription_survives_an_address_change_without_reconnect() {
    let dir = TempDir::new("quic-mig");
    let (h, certs) = start(dir.path(), |_, _| {}).await;
    let a = h.addrs().clone();
    // The phone reaches the broker through a NAT; the broker sees the NAT's port.
    let nat = switchboard_tests::nat::UdpNat::start(a.quic[0], Duration::from_secs(600)).await;
    let q = QuicClient::new(&certs.ca_cert);
    let (conn, mut sub) = q.open(nat.addr, "phone").await;
    sub.send(&subscribe("quic/#")).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (mut p, _) = RawClient::connect(a.tcp[0], connect_packet(Version::V5, "server-side")).await;
    p.send(&publish("quic/a", 1, b"before")).await;
    assert_eq!(&next_publish(&mut sub).await.payload[..], b"before");
    let connects = Metrics::get(&h.state().metrics.connections_total);

    // The phone moves to another network: the NAT gives it a new source port.
    nat.change_port().await;
    // Traffic from the client makes the server see (and validate) the new path.
    sub.send(&Packet::PingReq).await;
    assert_eq!(sub.recv().await, Some(Packet::PingResp));
    p.send(&publish("quic/a", 2, b"after")).await;
    let m = next_publish(&mut sub).await;
    assert_eq!(
        &m.payload[..],
        b"after",
        "subscription kept across the address change"
    );
    assert_eq!(
        Metrics::get(&h.state().metrics.connections_total),
        connects,
        "no new MQTT connection was needed"
    );
    assert_eq!(
        nat.stats
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the port did change"
    );
    drop(conn);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_reconnect_uses_0rtt() {
    let dir = TempDir::new("quic-0rtt");
    let (h, certs) = start(dir.path(), |_, _| {}).await;
    let addr = h.addrs().quic[0];
    let q = QuicClient::new(&certs.ca_cert);
    let (first, conn, mut s) = q.open_0rtt(addr, "returning").await;
    assert!(!first, "no ticket yet on the first connection");
    // Let the session ticket arrive, then go away.
    s.send(&Packet::PingReq).await;
    assert_eq!(s.recv().await, Some(Packet::PingResp));
    s.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    let _ = s.send.finish();
    conn.close(quinn::VarInt::from_u32(0), b"bye");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (resumed, _conn, mut s) = q.open_0rtt(addr, "returning").await;
    assert!(
        resumed,
        "the second connection's 0-RTT data (CONNECT) was accepted"
    );
    s.send(&Packet::PingReq).await;
    assert_eq!(s.recv().await, Some(Packet::PingResp));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_connection_without_streams_counts_and_is_closed_after_connect_timeout() {
    let dir = TempDir::new("quic-nostream");
    let (h, certs) = start(dir.path(), |c, _| {
        c.limits.max_connections = 1;
        c.limits.connect_timeout = 1;
    })
    .await;
    let q = QuicClient::new(&certs.ca_cert);
    let conn = tokio::time::timeout(
        WAIT,
        q.endpoint
            .connect(h.addrs().quic[0], "localhost")
            .expect("connect"),
    )
    .await
    .expect("in time")
    .expect("handshake");
    // The stream-less QUIC connection holds the only slot: a TCP client is turned away.
    let (_, ack) = RawClient::connect_or_closed(
        h.addrs().tcp[0],
        connect_packet(Version::V5, "tcp-while-full"),
    )
    .await;
    assert!(
        matches!(&ack, Some(Packet::ConnAck(a)) if a.code == ReasonCode::ServerBusy),
        "server busy while full: {ack:?}"
    );
    // Within the connect timeout the broker closes it, and the slot comes back.
    let closed = tokio::time::timeout(WAIT, conn.closed()).await;
    assert!(
        closed.is_ok(),
        "stream-less QUIC connection closed by the broker"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, ack) = RawClient::connect_or_closed(
            h.addrs().tcp[0],
            connect_packet(Version::V5, "tcp-after"),
        )
        .await;
        if matches!(&ack, Some(Packet::ConnAck(a)) if a.code == ReasonCode::Success) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.shutdown().await;
}
