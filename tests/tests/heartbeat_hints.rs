//! Heartbeat hints on real sockets: devices behind one NAT report the interval they proved,
//! the broker aggregates them per network key (declared network id + source /24), and the
//! next device on that network confirms the hint in two probes instead of searching cold.
//! A client on another network (another source prefix) cannot move the hint, and one
//! inventing network ids only churns its own prefix's keys. And the interval a client
//! announces on `$control/keepalive` moves the broker's dead-client timeout without a
//! reconnect.
//!
//! Scaled timeline as in `heartbeat.rs`; the NAT timeout is chosen so that every probe of
//! the cold and of the hinted search lands at least 0.39 s away from it (see `NAT`).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use switchboard_broker::{Broker, BrokerConfig, BrokerHandle, Listeners};
use switchboard_client::heartbeat::network_id;
use switchboard_client::{Client, Config, Endpoint, Event, Phase};
use switchboard_proto::*;
use switchboard_tests::nat::NatProxy;
use switchboard_tests::nat::scaled_heartbeat;
use switchboard_tests::{RawClient, WAIT, connect_packet};
use tokio::sync::mpsc::Receiver;

/// Cold: probes 6.29 s ✓, 15.36 s ✗, 9.83 s ✗, 7.86 s ✗ (settled, proven 6.29 s). With
/// that as the hint: 7.03 s ✓, 7.86 s ✗ (settled at 7.03 s). Every probe lands ≥ 0.4 s
/// away from the timeout.
const NAT: Duration = Duration::from_millis(7450);

async fn broker() -> BrokerHandle {
    let cfg = BrokerConfig {
        listeners: Listeners {
            tcp: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..Listeners::default()
        },
        allow_anonymous: true,
        sys_interval: 0,
        ..BrokerConfig::default()
    };
    Broker::new(cfg).start().await.expect("broker")
}

/// What one device saw until its heartbeat settled.
#[derive(Debug, Default)]
struct Learned {
    probes: Vec<(Duration, bool)>,
    disconnects: Vec<String>,
    settled: Option<Duration>,
}

/// Starts an SDK client behind `nat` on network `network` and waits until it settles.
async fn learn(nat: SocketAddr, id: &str, network: &str) -> (Client, Receiver<Event>, Learned) {
    let mut cfg = Config::new(id, vec![Endpoint::Tcp(nat)]);
    cfg.heartbeat = scaled_heartbeat();
    cfg.ping_timeout = Duration::from_secs(1);
    cfg.backoff_min = Duration::from_millis(100);
    let (client, mut ev) = Client::start(cfg).expect("client");
    client.set_network(network).await.expect("network");
    let mut seen = Learned::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.settled.is_none() {
        let e = tokio::time::timeout_at(deadline, ev.recv())
            .await
            .unwrap_or_else(|_| panic!("{id} never settled: {seen:?}"))
            .expect("client running");
        match e {
            Event::Probe { idle, answered } => seen.probes.push((idle, answered)),
            Event::Disconnected { reason } => seen.disconnects.push(reason),
            Event::Heartbeat {
                interval,
                phase: Phase::Settled,
            } => seen.settled = Some(interval),
            _ => {}
        }
    }
    (client, ev, seen)
}

/// Waits until the broker hands out a hint for `network` to clients from `peer`.
async fn until_hint(h: &BrokerHandle, network: &str, peer: IpAddr) -> Duration {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let hint = h.state().hints.lock().hint(Instant::now(), network, peer);
        if let Ok(Some(d)) = hint {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no hint for {network}: {hint:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn control(topic: &str, payload: String, pkid: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: if pkid == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        retain: false,
        topic: topic.into(),
        pkid,
        properties: Properties::default(),
        payload: bytes::Bytes::from(payload),
    })
}

/// A raw MQTT 5 client through `addr` (the broker, or a NAT in front of it).
async fn raw(addr: SocketAddr, id: &str) -> RawClient {
    let (c, ack) = RawClient::connect(addr, connect_packet(Version::V5, id)).await;
    assert!(
        matches!(ack, Packet::ConnAck(ref a) if a.code == ReasonCode::Success),
        "{ack:?}"
    );
    c
}

/// Reports `secs` on `network` over `c` (QoS 1); returns the PUBACK's reason code.
async fn report(c: &mut RawClient, network: &str, secs: &str) -> ReasonCode {
    c.send(&control(SETTLED_TOPIC, format!("{secs} {network}"), 7))
        .await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => a.code,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// Asks for `network`'s hint over `c`; returns the broker's answer payload.
async fn ask(c: &mut RawClient, network: &str) -> String {
    c.send(&control(NETWORK_TOPIC, network.into(), 0)).await;
    let p = c.next_publish().await;
    assert_eq!(p.topic, HINT_TOPIC);
    String::from_utf8(p.payload.to_vec()).expect("utf8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_behind_one_nat_give_the_next_one_a_hint_it_confirms_in_two_probes() {
    let h = broker().await;
    let nat = NatProxy::tcp(h.tcp_addrs()[0], NAT).await;
    // Three devices learn cold, side by side, and report what they proved.
    let earlier = futures_join3(
        learn(nat.addr, "early-1", "office-wifi"),
        learn(nat.addr, "early-2", "office-wifi"),
        learn(nat.addr, "early-3", "office-wifi"),
    )
    .await;
    for (_, _, seen) in &earlier {
        assert!(seen.probes.len() >= 4, "a cold search: {seen:?}");
        assert!(seen.disconnects.is_empty(), "{seen:?}");
    }
    let id = network_id("office-wifi");
    let hint = until_hint(&h, &id, IpAddr::from([127, 0, 0, 1])).await;
    assert!(hint < NAT, "the hint is an interval that worked: {hint:?}");

    // The next device there: two probes, settled under the NAT timeout, link kept.
    // At the same time, another network id behind the same address: no hint, a cold search.
    let ((client, _ev, seen), (other, _ev2, cold)) = tokio::join!(
        learn(nat.addr, "newcomer", "office-wifi"),
        learn(nat.addr, "elsewhere", "cafe-wifi"),
    );
    assert_eq!(
        seen.probes.len(),
        2,
        "the hint confirmed in two probes: {seen:?}"
    );
    assert_eq!(
        seen.probes.iter().filter(|(_, ok)| !ok).count(),
        1,
        "one probe proved the step above the hint fails: {seen:?}"
    );
    let settled = seen.settled.expect("settled");
    assert!(settled < NAT, "{seen:?}");
    assert!(
        settled.as_secs_f64() >= 0.85 * NAT.as_secs_f64(),
        "{seen:?}"
    );
    assert!(seen.disconnects.is_empty(), "{seen:?}");

    assert!(
        cold.probes.len() >= 4,
        "no hint for another network: {cold:?}"
    );
    for c in [client, other]
        .into_iter()
        .chain(earlier.into_iter().map(|(c, _, _)| c))
    {
        c.shutdown().await;
    }
    h.shutdown().await;
}

/// Runs three futures concurrently (no extra dependency for `join!`).
async fn futures_join3<T: Send + 'static>(
    a: impl std::future::Future<Output = T> + Send + 'static,
    b: impl std::future::Future<Output = T> + Send + 'static,
    c: impl std::future::Future<Output = T> + Send + 'static,
) -> Vec<T> {
    let (a, b, c) = (tokio::spawn(a), tokio::spawn(b), tokio::spawn(c));
    vec![
        a.await.expect("task"),
        b.await.expect("task"),
        c.await.expect("task"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_client_cannot_move_the_hint_of_another_network_and_the_table_stays_bounded() {
    let h = broker().await;
    let broker_addr = h.tcp_addrs()[0];
    // Three honest devices on 127.0.0.0/24 proved 6.5 s on carrier 46000.
    for i in 0..3 {
        let mut c = raw(broker_addr, &format!("honest-{i}")).await;
        assert_eq!(report(&mut c, "46000", "6.5").await, ReasonCode::Success);
    }
    let mut asker = raw(broker_addr, "asker").await;
    assert_eq!(ask(&mut asker, "46000").await, "6.500 46000");
    assert_eq!(
        ask(&mut asker, "46001").await,
        "0.000 46001",
        "no reports there"
    );

    // A liar on another network (behind a NAT whose public side is 127.0.1.1) claims the
    // same carrier id with 30 minutes, under twenty identities, and invents networks.
    let far = NatProxy::tcp_from(
        broker_addr,
        Duration::from_secs(3600),
        Some(IpAddr::from([127, 0, 1, 1])),
    )
    .await;
    for i in 0..20 {
        let mut l = raw(far.addr, &format!("liar-{i}")).await;
        assert_eq!(report(&mut l, "46000", "1800").await, ReasonCode::Success);
    }
    assert_eq!(
        ask(&mut asker, "46000").await,
        "6.500 46000",
        "the honest network's hint did not move"
    );
    // Its own network key does carry what it said: only itself and its neighbours see it.
    let mut liar = raw(far.addr, "liar").await;
    assert_eq!(ask(&mut liar, "46000").await, "1800.000 46000");
    for n in 0..2000 {
        liar.send(&control(SETTLED_TOPIC, format!("1800 fake-{n}"), 0))
            .await;
    }
    assert_eq!(
        report(&mut liar, "fake-last", "1800").await,
        ReasonCode::Success
    );
    assert_eq!(ask(&mut asker, "46000").await, "6.500 46000");
    // The liar's inventions stay within its own prefix's quota.
    let keys = h.state().hints.lock().len();
    let quota = BrokerConfig::default().heartbeat_hints.max_per_prefix;
    assert!(keys <= quota + 1, "{keys} keys");

    // Liars inside the honest prefix stay a minority: the lower quartile does not move.
    for i in 0..2 {
        let mut l = raw(broker_addr, &format!("insider-{i}")).await;
        assert_eq!(report(&mut l, "46000", "1800").await, ReasonCode::Success);
    }
    assert_eq!(ask(&mut asker, "46000").await, "6.500 46000");

    // Bad reports get 0x99 and change nothing.
    for bad in [
        "abc 46000",
        "0 46000",
        "70000 46000",
        "5",
        "5 two words",
        "-1 46000",
    ] {
        asker.send(&control(SETTLED_TOPIC, bad.into(), 9)).await;
        match asker.recv().await {
            Some(Packet::PubAck(a)) => {
                assert_eq!(a.code, ReasonCode::PayloadFormatInvalid, "{bad}")
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert_eq!(ask(&mut asker, "46000").await, "6.500 46000");
    h.shutdown().await;
}

/// The reason code of the DISCONNECT among `packets`, if any.
fn disconnect_code(packets: &[Packet]) -> Option<ReasonCode> {
    packets.iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.code),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_keep_alive_moves_the_brokers_timeout_without_a_reconnect() {
    let h = broker().await;
    let addr = h.tcp_addrs()[0];
    let connect = Connect {
        keep_alive: 1,
        ..connect_packet(Version::V5, "announcer")
    };
    let (mut c, _) = RawClient::connect(addr, connect).await;
    c.send(&control(KEEP_ALIVE_TOPIC, "3".into(), 3)).await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.code, ReasonCode::Success),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // Idle for 2.5 s, past the CONNECT's 1.5 × 1 s and well inside 1.5 × 3 s: still there.
    assert_eq!(
        c.recv_within(Duration::from_millis(2500)).await,
        Err(()),
        "the broker kept its CONNECT timeout"
    );
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    // A malformed announcement is refused and changes nothing.
    c.send(&control(KEEP_ALIVE_TOPIC, "soon".into(), 4)).await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.code, ReasonCode::PayloadFormatInvalid),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // Silent past 1.5 × 3 s: the broker gives up on the new interval (0x8D).
    assert_eq!(
        disconnect_code(&c.expect_closed().await),
        Some(ReasonCode::KeepAliveTimeout)
    );
    h.shutdown().await;
}
