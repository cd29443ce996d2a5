//! The Rust client SDK against the broker: QUIC with TLS fallback, and the adaptive
//! heartbeat behind a NAT that forgets idle connections, without losing a QoS 1 message.

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_broker::transport::certs::ensure_dev_certs;
use switchboard_broker::{Broker, BrokerConfig, Listeners};
use switchboard_client::{Client, Config, Endpoint, Event, HeartbeatConfig, Phase};
use switchboard_proto::*;
use switchboard_tests::nat::NatProxy;
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
        .subscribe("sdk/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    tokio::time::sleep(Duration::from_millis(200)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_heartbeat_learns_the_nat_timeout_and_loses_no_qos1_message() {
    // Scaled: the NAT forgets after 5.7 s idle; probing from 1 s in 1 s steps, so the 5 s
    // probe has 0.7 s of slack on a loaded machine and the 6 s probe fails for sure.
    let nat_timeout = Duration::from_millis(5700);
    let b = TestBroker::start().await;
    let nat = NatProxy::tcp(b.addr, nat_timeout).await;
    let mut c = Config::new("phone-hb", vec![Endpoint::Tcp(nat.addr)]);
    c.heartbeat = HeartbeatConfig {
        min: Duration::from_secs(1),
        max: Duration::from_secs(20),
        step: Duration::from_secs(1),
        margin: Duration::from_millis(300),
    };
    c.ping_timeout = Duration::from_secs(1);
    c.backoff_min = Duration::from_millis(100);
    let (client, mut ev) = Client::start(c).expect("client");
    wait_for(&mut ev, 10, |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    })
    .await;
    client
        .subscribe("hb/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (mut publisher, _) =
        RawClient::connect(b.addr, connect_packet(Version::V5, "hb-pub")).await;
    let mut sent = Vec::new();
    let mut publish = async |n: u16, sent: &mut Vec<u16>| {
        publisher
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "hb/x".into(),
                pkid: n,
                properties: Properties::default(),
                payload: bytes::Bytes::from(n.to_string()),
            }))
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
        sent.push(n);
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(1, &mut sent).await;

    let mut received = Vec::new();
    let mut probes_seen = Vec::new();
    let mut settled = None;
    let mut lost_window_published = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let e = next_event(&mut ev, 30).await;
        match e {
            Event::Message(p) => {
                let n: u16 = std::str::from_utf8(&p.payload)
                    .expect("utf8")
                    .parse()
                    .expect("number");
                if !received.contains(&n) {
                    received.push(n);
                }
            }
            Event::Heartbeat { interval, phase } => {
                probes_seen.push(interval);
                if phase == Phase::Settled {
                    settled = Some(interval);
                } else if interval > nat_timeout && !lost_window_published {
                    // The next probe will outlast the NAT: publish while the mapping is gone,
                    // before the client notices.
                    lost_window_published = true;
                    tokio::time::sleep(nat_timeout + Duration::from_millis(200)).await;
                    publish(2, &mut sent).await;
                }
            }
            Event::Connected { .. } | Event::Disconnected { .. } => {}
        }
        if settled.is_some() && received.len() == sent.len() && lost_window_published {
            break;
        }
    }
    let settled = settled.expect("the heartbeat settled");
    assert!(
        settled < nat_timeout,
        "settled at {settled:?}, not under the NAT timeout"
    );
    assert!(
        settled.as_secs_f64() >= 0.8 * nat_timeout.as_secs_f64(),
        "settled at {settled:?}, too far under"
    );
    assert!(probes_seen.len() <= 10, "too many probes: {probes_seen:?}");
    assert!(
        nat.forgotten() >= 1,
        "the NAT never forgot a mapping: the test did not test anything"
    );
    received.sort_unstable();
    assert_eq!(
        received, sent,
        "a QoS 1 message was lost across the NAT drop"
    );
    client.shutdown().await;
}
