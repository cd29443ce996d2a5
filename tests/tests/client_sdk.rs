//! The Rust client SDK against the broker: QUIC with TLS fallback, resubscription, windows
//! and limits. The adaptive heartbeat behind NAT simulators is in `heartbeat.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_broker::transport::certs::ensure_dev_certs;
use switchboard_broker::{Broker, BrokerConfig, Listeners};
use switchboard_client::{Client, Config, Endpoint, Event};
use switchboard_proto::*;
use switchboard_tests::{RawClient, TempDir, TestBroker, connect_packet};
use tokio::sync::mpsc::Receiver;

fn local() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 0))]
}

async fn next_event(ev: &mut Receiver<Event>, secs: u64) -> Event {
    tokio::time::timeout(Duration::from_secs(secs), ev.recv())
        .await
        .expect("event in time")
        .expect("client running")
}

async fn wait_for<T>(
    ev: &mut Receiver<Event>,
    secs: u64,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .as_secs()
            .max(1);
        let e = next_event(ev, left).await;
        if let Some(t) = f(&e) {
            return t;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_uses_quic_and_falls_back_to_tls_when_udp_is_blocked() {
    let dir = TempDir::new("sdk");
    let certs = ensure_dev_certs(dir.path()).expect("certs");
    let mut cfg = BrokerConfig {
        listeners: Listeners {
            tcp: local(),
            tls: local(),
            quic: local(),
            ..Listeners::default()
        },
        allow_anonymous: true,
        sys_interval: 0,
        ..BrokerConfig::default()
    };
    cfg.tls.cert = Some(certs.server_cert.clone());
    cfg.tls.key = Some(certs.server_key.clone());
    let h = Broker::new(cfg).start().await.expect("broker");
    let a = h.addrs().clone();

    let mut c = Config::new(
        "sdk-quic",
        vec![Endpoint::Quic(a.quic[0]), Endpoint::Tls(a.tls[0])],
    );
    c.ca_cert = Some(certs.ca_cert.clone());
    let (client, mut ev) = Client::start(c).expect("client");
    let transport = wait_for(&mut ev, 10, |e| match e {
        Event::Connected { transport, .. } => Some(*transport),
        _ => None,
    })
    .await;
    assert_eq!(transport, "quic");
    client
        .subscribe_acked("sdk/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    client
        .publish("sdk/a", "over quic", QoS::AtLeastOnce)
        .await
        .expect("publish");
    let m = wait_for(&mut ev, 10, |e| match e {
        Event::Message(p) => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&m.payload[..], b"over quic");
    client.shutdown().await;

    // UDP blocked: nothing answers on the QUIC address.
    let dead_udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut c = Config::new(
        "sdk-tls",
        vec![
            Endpoint::Quic(dead_udp.local_addr().expect("addr")),
            Endpoint::Tls(a.tls[0]),
        ],
    );
    c.ca_cert = Some(certs.ca_cert.clone());
    c.connect_timeout = Duration::from_secs(2);
    let (client, mut ev) = Client::start(c).expect("client");
    let transport = wait_for(&mut ev, 15, |e| match e {
        Event::Connected { transport, .. } => Some(*transport),
        _ => None,
    })
    .await;
    assert_eq!(transport, "tls", "fell back to TLS");
    client.shutdown().await;
    h.shutdown().await;
}

/// A scripted MQTT 5 server on a loopback port, for what the real broker never does: hold
/// acknowledgements back, announce a small Receive Maximum, resend a QoS 2 message with DUP,
/// send a packet larger than the client accepts.
struct FakeServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

struct FakeConn {
    stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
}

impl FakeServer {
    async fn start() -> FakeServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        FakeServer { listener, addr }
    }

    /// Accepts the next connection and reads its CONNECT.
    async fn accept(&self) -> (FakeConn, Box<Connect>) {
        let (stream, _) = tokio::time::timeout(switchboard_tests::WAIT, self.listener.accept())
            .await
            .expect("the client connects in time")
            .expect("accept");
        let mut c = FakeConn {
            stream,
            buf: bytes::BytesMut::new(),
        };
        match c.recv().await {
            Some(Packet::Connect(connect)) => (c, connect),
            other => panic!("expected CONNECT, got {other:?}"),
        }
    }
}

impl FakeConn {
    async fn send(&mut self, p: Packet) {
        use tokio::io::AsyncWriteExt;
        let mut b = bytes::BytesMut::new();
        p.encode(Version::V5, &mut b);
        let _ = self.stream.write_all(&b).await;
    }

    async fn connack(&mut self, properties: Properties) {
        self.send(Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::Success,
            properties,
        }))
        .await;
    }

    /// Next packet from the client, `None` once it closed.
    async fn recv(&mut self) -> Option<Packet> {
        use tokio::io::AsyncReadExt;
        let work = async {
            loop {
                if let Some(p) = Packet::read(&mut self.buf, Version::V5, usize::MAX)
                    .expect("the client sends well-formed packets")
                {
                    return Some(p);
                }
                if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        };
        tokio::time::timeout(switchboard_tests::WAIT, work)
            .await
            .expect("timed out waiting for a packet from the client")
    }

    /// Next packet other than PINGREQ; panics if the client closed.
    async fn expect(&mut self) -> Packet {
        loop {
            match self.recv().await {
                Some(Packet::PingReq) => {}
                // The heartbeat's QoS 0 control messages to a Switchboard broker (network
                // hints, docs/protocol.md 2.5): not what these tests watch.
                Some(Packet::Publish(p)) if p.topic.starts_with("$control/") => {}
                Some(p) => return p,
                None => panic!("the client closed the connection"),
            }
        }
    }
}

fn fake_client(id: &str, server: &FakeServer) -> Config {
    let mut c = Config::new(id, vec![Endpoint::Tcp(server.addr)]);
    c.backoff_min = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(100);
    c
}

async fn connected(ev: &mut Receiver<Event>) {
    wait_for(ev, 10, |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    })
    .await;
}

/// Issue 10: after a reconnect that lost the session, re-subscribes took packet ids 1..n
/// while unacknowledged publishes kept theirs, so a SUBSCRIBE and a PUBLISH could share one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_mqtt_2_2_1_resubscribe_ids_never_collide_with_inflight_publishes() {
    let server = FakeServer::start().await;
    let (client, mut ev) = Client::start(fake_client("sdk-ids", &server)).expect("client");
    let (mut conn, _) = server.accept().await;
    conn.connack(Properties::default()).await;
    connected(&mut ev).await;
    client
        .publish("ids/p", "unacked", QoS::AtLeastOnce)
        .await
        .expect("publish");
    let Packet::Publish(p) = conn.expect().await else {
        panic!("PUBLISH expected")
    };
    client
        .subscribe("ids/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let Packet::Subscribe(s) = conn.expect().await else {
        panic!("SUBSCRIBE expected")
    };
    assert_ne!(p.pkid, s.pkid);
    conn.send(Packet::SubAck(SubAck {
        pkid: s.pkid,
        properties: Properties::default(),
        codes: vec![ReasonCode::GrantedQos1],
    }))
    .await;
    // The publish stays unacknowledged; the link dies; the new server has no session.
    drop(conn);
    let (mut conn, _) = server.accept().await;
    conn.connack(Properties::default()).await;
    let (mut publish_id, mut subscribe_id) = (None, None);
    while publish_id.is_none() || subscribe_id.is_none() {
        match conn.expect().await {
            Packet::Publish(p) if p.topic == "ids/p" => publish_id = Some(p.pkid),
            Packet::Subscribe(s) if s.filters.iter().any(|(f, _)| f == "ids/#") => {
                subscribe_id = Some(s.pkid)
            }
            _ => {}
        }
    }
    assert_ne!(
        publish_id, subscribe_id,
        "the re-SUBSCRIBE reused the packet id of an unacknowledged PUBLISH"
    );
    client.shutdown().await;
}

/// Issue 10: the SDK ignored the server's Receive Maximum and sent every publish at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_mqtt_3_3_4_7_honours_the_servers_receive_maximum() {
    let server = FakeServer::start().await;
    let (client, mut ev) = Client::start(fake_client("sdk-rm", &server)).expect("client");
    let (mut conn, _) = server.accept().await;
    conn.connack(Properties {
        receive_maximum: Some(2),
        ..Properties::default()
    })
    .await;
    connected(&mut ev).await;
    for n in 1..=5 {
        client
            .publish("rm/t", n.to_string(), QoS::AtLeastOnce)
            .await
            .expect("publish");
    }
    // A SUBSCRIBE is not windowed: everything sent before it is what the client sent at once.
    client
        .subscribe("rm/#", QoS::AtMostOnce)
        .await
        .expect("sub");
    let mut unacked = Vec::new();
    let mut received = Vec::new();
    loop {
        match conn.expect().await {
            Packet::Publish(p) => {
                unacked.push(p.pkid);
                received.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            Packet::Subscribe(_) => break,
            other => panic!("unexpected {}", other.name()),
        }
    }
    assert_eq!(
        unacked.len(),
        2,
        "[MQTT-3.3.4-7] more unacknowledged publishes than Receive Maximum"
    );
    while received.len() < 5 {
        conn.send(Packet::PubAck(PubResponse::new(unacked.remove(0))))
            .await;
        let Packet::Publish(p) = conn.expect().await else {
            panic!("PUBLISH expected after a PUBACK")
        };
        unacked.push(p.pkid);
        assert!(unacked.len() <= 2);
        received.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    assert_eq!(received, ["1", "2", "3", "4", "5"], "in order");
    client.shutdown().await;
}

/// Issue 10: a QoS 2 PUBLISH resent (DUP) before PUBREL was delivered to the app twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_mqtt_4_3_3_qos2_resent_with_dup_is_delivered_once() {
    let server = FakeServer::start().await;
    let (client, mut ev) = Client::start(fake_client("sdk-qos2", &server)).expect("client");
    let (mut conn, _) = server.accept().await;
    conn.connack(Properties::default()).await;
    connected(&mut ev).await;
    let mut p = Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "q2/t".into(),
        pkid: 7,
        properties: Properties::default(),
        payload: bytes::Bytes::from_static(b"once"),
    };
    conn.send(Packet::Publish(p.clone())).await;
    assert!(matches!(conn.expect().await, Packet::PubRec(r) if r.pkid == 7));
    p.dup = true;
    conn.send(Packet::Publish(p)).await;
    assert!(
        matches!(conn.expect().await, Packet::PubRec(r) if r.pkid == 7),
        "the resend is acknowledged again"
    );
    conn.send(Packet::PubRel(PubResponse::new(7))).await;
    assert!(matches!(conn.expect().await, Packet::PubComp(r) if r.pkid == 7));
    conn.send(Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "q2/end".into(),
        pkid: 0,
        properties: Properties::default(),
        payload: bytes::Bytes::from_static(b"end"),
    }))
    .await;
    let mut delivered = Vec::new();
    loop {
        if let Event::Message(m) = next_event(&mut ev, 10).await {
            if m.topic == "q2/end" {
                break;
            }
            delivered.push(m.payload.clone());
        }
    }
    assert_eq!(delivered, ["once"], "a QoS 2 message was delivered twice");
    client.shutdown().await;
}

/// Issue 10: the SDK read packets of any size; one larger than its Maximum Packet Size
/// (1 MiB by default, announced in CONNECT) must end the connection with DISCONNECT 0x95.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_mqtt_3_1_2_24_refuses_an_oversized_inbound_packet_with_0x95() {
    let server = FakeServer::start().await;
    let (client, mut ev) = Client::start(fake_client("sdk-big", &server)).expect("client");
    let (mut conn, _) = server.accept().await;
    conn.connack(Properties::default()).await;
    connected(&mut ev).await;
    conn.send(Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "big/t".into(),
        pkid: 0,
        properties: Properties::default(),
        payload: bytes::Bytes::from(vec![b'x'; 2 * 1024 * 1024]),
    }))
    .await;
    let code = loop {
        match conn.recv().await {
            Some(Packet::Disconnect(d)) => break Some(d.code),
            Some(_) => {}
            None => break None,
        }
    };
    assert_eq!(code, Some(ReasonCode::PacketTooLarge));
    let reason = wait_for(&mut ev, 10, |e| match e {
        Event::Message(m) => panic!(
            "an oversized message was delivered: {} bytes",
            m.payload.len()
        ),
        Event::Disconnected { reason } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("maximum packet size"), "{reason}");
    client.shutdown().await;
}

/// Issue 10: a caller could not await SUBACK, so tests and apps slept after subscribing.
/// `subscribe_acked` returns the broker's reason codes once the subscription is in place: a
/// message published right after it is delivered, with no sleep in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_subscribe_and_unsubscribe_can_be_awaited_until_the_brokers_ack() {
    let b = TestBroker::start().await;
    let (client, mut ev) =
        Client::start(Config::new("sdk-acked", vec![Endpoint::Tcp(b.addr)])).expect("client");
    connected(&mut ev).await;
    let codes = client
        .subscribe_acked("acked/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    assert_eq!(codes, [ReasonCode::GrantedQos1]);
    let (mut publisher, _) =
        RawClient::connect(b.addr, connect_packet(Version::V5, "acked-pub")).await;
    publisher
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "acked/x".into(),
            pkid: 0,
            properties: Properties::default(),
            payload: bytes::Bytes::from_static(b"right after SUBACK"),
        }))
        .await;
    let m = wait_for(&mut ev, 10, |e| match e {
        Event::Message(p) => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!(&m.payload[..], b"right after SUBACK");
    let codes = client
        .unsubscribe_acked("acked/#")
        .await
        .expect("unsubscribe");
    assert_eq!(codes, [ReasonCode::Success]);
    assert!(
        client
            .subscribe_acked("acked/#/x", QoS::AtMostOnce)
            .await
            .is_err(),
        "an invalid filter is refused before it is sent"
    );
    client.shutdown().await;
}

/// The configurable Maximum Packet Size is announced in CONNECT, so the real broker never
/// sends the SDK more ([MQTT-3.1.2-25]: it drops the message for this client instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_max_packet_size_is_announced_and_the_broker_honours_it() {
    let b = TestBroker::start().await;
    let mut cfg = Config::new("sdk-small", vec![Endpoint::Tcp(b.addr)]);
    cfg.max_packet_size = 256;
    let (client, mut ev) = Client::start(cfg).expect("client");
    connected(&mut ev).await;
    client
        .subscribe_acked("small/#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let (mut publisher, _) =
        RawClient::connect(b.addr, connect_packet(Version::V5, "small-pub")).await;
    for (topic, size) in [("small/big", 1024), ("small/fits", 16)] {
        publisher
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: topic.into(),
                pkid: 0,
                properties: Properties::default(),
                payload: bytes::Bytes::from(vec![b'x'; size]),
            }))
            .await;
    }
    let first = wait_for(&mut ev, 10, |e| match e {
        Event::Message(p) => Some(p.topic.clone()),
        Event::Disconnected { reason } => panic!("disconnected: {reason}"),
        _ => None,
    })
    .await;
    assert_eq!(first, "small/fits", "the oversized message was not dropped");
    client.shutdown().await;
}
