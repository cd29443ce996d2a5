//! 0-RTT replay over QUIC (issue 11, item 10): a returning client sends CONNECT and a
//! PUBLISH as 0-RTT data; an attacker who recorded every datagram the client sent replays
//! them all to the broker from another address. The broker acts on no application data
//! before a handshake completes, and a replayed flight cannot complete one (it lacks the
//! client's keys for the Finished message), so the message is delivered exactly once and
//! the replay never becomes an MQTT connection.
//!
//! The client talks to the broker through a small UDP relay in this test, which records
//! what the client sends; the replay goes straight to the broker from a fresh socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchboard_broker::metrics::Metrics;
use switchboard_broker::{Broker, BrokerConfig, Listeners};
use switchboard_client::transport::quic_client_endpoint;
use switchboard_proto::*;
use switchboard_tests::{RawClient, TempDir, WAIT, connect_packet};
use tokio::net::UdpSocket;

const TOPIC: &str = "replay/t";

/// Relays datagrams between one client and the broker, recording what the client sends
/// while `recording` is set.
struct Relay {
    addr: SocketAddr,
    log: Arc<parking_lot::Mutex<Vec<Vec<u8>>>>,
    recording: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(broker: SocketAddr) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").await.expect("bind relay");
        let back = UdpSocket::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = front.local_addr().expect("addr");
        let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let recording = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (l, r) = (log.clone(), recording.clone());
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                tokio::select! {
                    got = front.recv_from(&mut a) => {
                        let Ok((n, from)) = got else { return };
                        client = Some(from);
                        if r.load(std::sync::atomic::Ordering::SeqCst) {
                            l.lock().push(a[..n].to_vec());
                        }
                        let _ = back.send_to(&a[..n], broker).await;
                    }
                    got = back.recv_from(&mut b) => {
                        let Ok((n, _)) = got else { return };
                        if let Some(c) = client {
                            let _ = front.send_to(&b[..n], c).await;
                        }
                    }
                }
            }
        });
        Relay {
            addr,
            log,
            recording,
            task,
        }
    }
}

fn client_endpoint(ca: &std::path::Path) -> quinn::Endpoint {
    quic_client_endpoint(ca, None).expect("QUIC endpoint")
}

fn encode(packets: &[Packet]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for p in packets {
        p.encode(Version::V5, &mut b);
    }
    b.to_vec()
}

fn publish(payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TOPIC.into(),
        pkid: 0,
        properties: Properties::default(),
        payload: Bytes::from_static(payload),
    })
}

/// Reads from `recv` until a CONNACK is decoded; true when it accepted.
async fn connack(recv: &mut quinn::RecvStream) -> bool {
    let mut buf = BytesMut::new();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(p) = Packet::read(&mut buf, Version::V5, usize::MAX).expect("well formed") {
                return matches!(p, Packet::ConnAck(a) if a.code == ReasonCode::Success);
            }
            let mut chunk = [0u8; 1024];
            match recv.read(&mut chunk).await {
                Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
                _ => return false,
            }
        }
    })
    .await
    .expect("CONNACK in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_0rtt_flight_publishes_nothing_twice() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = TempDir::new("quic-0rtt-replay");
    let certs = switchboard_broker::transport::certs::ensure_dev_certs(dir.path()).expect("certs");
    let local = || vec!["127.0.0.1:0".parse().expect("addr")];
    let mut cfg = BrokerConfig {
        listeners: Listeners {
            tcp: local(),
            quic: local(),
            ..Listeners::default()
        },
        allow_anonymous: true,
        sys_interval: 0,
        ..BrokerConfig::default()
    };
    cfg.tls.cert = Some(certs.server_cert.clone());
    cfg.tls.key = Some(certs.server_key.clone());
    // A handshake that does not complete is dropped after a second.
    cfg.limits.connect_timeout = 1;
    let h = Broker::new(cfg).start().await.expect("broker starts");
    let (tcp, quic) = (h.addrs().tcp[0], h.addrs().quic[0]);

    let (mut sub, _) = RawClient::connect(tcp, connect_packet(Version::V5, "watcher")).await;
    sub.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(TOPIC.into(), SubscriptionOptions::default())],
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));

    let relay = Relay::start(quic).await;
    let endpoint = client_endpoint(&certs.ca_cert);
    // First visit: a full handshake, which leaves the client a session ticket.
    let first = tokio::time::timeout(
        WAIT,
        endpoint.connect(relay.addr, "localhost").expect("connect"),
    )
    .await
    .expect("in time")
    .expect("handshake");
    let (mut send, mut recv) = first.open_bi().await.expect("stream");
    send.write_all(&encode(&[Packet::Connect(Box::new(connect_packet(
        Version::V5,
        "returning",
    )))]))
    .await
    .expect("CONNECT");
    assert!(connack(&mut recv).await, "first visit accepted");
    send.write_all(&encode(&[Packet::Disconnect(Disconnect::new(
        ReasonCode::Success,
    ))]))
    .await
    .expect("DISCONNECT");
    let _ = send.finish();
    first.close(quinn::VarInt::from_u32(0), b"bye");
    drop((send, recv));

    // Second visit, recorded: CONNECT and PUBLISH as 0-RTT data.
    relay
        .recording
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let connecting = endpoint.connect(relay.addr, "localhost").expect("connect");
    let Ok((second, accepted)) = connecting.into_0rtt() else {
        panic!("the client has a ticket and tries 0-RTT");
    };
    let (mut send, mut recv) = second.open_bi().await.expect("stream");
    send.write_all(&encode(&[
        Packet::Connect(Box::new(connect_packet(Version::V5, "returning"))),
        publish(b"once"),
    ]))
    .await
    .expect("0-RTT data");
    assert!(
        tokio::time::timeout(WAIT, accepted).await.expect("in time"),
        "the broker accepted the 0-RTT data"
    );
    assert!(connack(&mut recv).await, "second visit accepted");
    let p = sub.next_publish().await;
    assert_eq!(p.payload, Bytes::from_static(b"once"));
    send.write_all(&encode(&[Packet::Disconnect(Disconnect::new(
        ReasonCode::Success,
    ))]))
    .await
    .expect("DISCONNECT");
    let _ = send.finish();
    second.close(quinn::VarInt::from_u32(0), b"bye");
    drop((send, recv));
    relay
        .recording
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let recorded = std::mem::take(&mut *relay.log.lock());
    assert!(!recorded.is_empty(), "the relay saw the client's datagrams");

    // The attacker replays everything the client sent, from another address.
    let connections = Metrics::get(&h.state().metrics.connections_total);
    let attacker = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut buf = vec![0u8; 65536];
    // While the broker still drains the closed connection, packets with its connection
    // ids go to it and get no answer; once it is gone, the replayed Initial starts a new
    // handshake, which the broker answers (it cannot tell a replay from a real client yet).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for d in &recorded {
            attacker.send_to(d, quic).await.expect("replay");
        }
        let answer =
            tokio::time::timeout(Duration::from_millis(500), attacker.recv_from(&mut buf)).await;
        if answer.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker never answered the replayed flight"
        );
    }
    // Then it gives up on the handshake within its connect timeout and goes quiet: read
    // its answers until nothing comes for well over that timeout.
    let mut answers = 1usize;
    while let Ok(got) =
        tokio::time::timeout(Duration::from_secs(3), attacker.recv_from(&mut buf)).await
    {
        got.expect("recv");
        answers += 1;
        assert!(answers < 10_000, "the broker keeps answering a replay");
    }
    assert_eq!(
        Metrics::get(&h.state().metrics.connections_total),
        connections,
        "a replayed 0-RTT flight became an MQTT connection"
    );
    // Nothing was published twice: the next message the watcher gets is a fresh one.
    let (mut tail, _) = RawClient::connect(tcp, connect_packet(Version::V5, "tail")).await;
    tail.send(&publish(b"after")).await;
    let p = sub.next_publish().await;
    assert_eq!(
        p.payload,
        Bytes::from_static(b"after"),
        "the replayed PUBLISH was delivered a second time"
    );
    relay.task.abort();
    endpoint.close(quinn::VarInt::from_u32(0), b"done");
    h.shutdown().await;
}
