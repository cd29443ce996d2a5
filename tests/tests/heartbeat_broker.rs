//! What the broker tells the SDK's heartbeat, and what it counts as keep-alive:
//! - CONNACK user properties (MQTT 5) announce hints, the maximum keep-alive and QUIC
//!   liveness; the SDK's search never goes above the announced maximum.
//! - Against a broker that announces nothing (mosquitto) the SDK asks for no hint and
//!   starts its cold search at once.
//! - Over QUIC, a client that only sends QUIC PING frames stays connected past its MQTT
//!   keep-alive; one that sends nothing is closed (0x8D).
//!
//! Every wait is on an event, with generous limits; nothing asserts a duration.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use switchboard_broker::transport::certs::ensure_dev_certs;
use switchboard_broker::{Broker, BrokerConfig, Listeners};
use switchboard_client::transport::quic_client_endpoint;
use switchboard_client::{Client, Config, Endpoint, Event, Phase};
use switchboard_proto::*;
use switchboard_tests::nat::scaled_heartbeat;
use switchboard_tests::{RawClient, TempDir, TestBroker, WAIT, connect_packet};
use tokio::sync::mpsc::Receiver;

fn user_property<'a>(props: &'a Properties, key: &str) -> Option<&'a str> {
    props
        .user_properties
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

async fn connack(addr: SocketAddr, version: Version, id: &str) -> ConnAck {
    let (_c, ack) = RawClient::connect(addr, connect_packet(version, id)).await;
    match ack {
        Packet::ConnAck(a) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn connack_announces_hints_the_max_keep_alive_and_quic_liveness() {
    let b = TestBroker::start_with(|c| c.limits.max_keep_alive = 600).await;
    let a = connack(b.addr, Version::V5, "announce-v5").await;
    assert_eq!(a.code, ReasonCode::Success);
    assert_eq!(user_property(&a.properties, HINTS_PROPERTY), Some("1"));
    assert_eq!(
        user_property(&a.properties, MAX_KEEP_ALIVE_PROPERTY),
        Some("600")
    );
    assert_eq!(user_property(&a.properties, QUIC_PING_PROPERTY), Some("1"));
    // 3.1.1 has no properties: nothing is announced.
    let a = connack(b.addr, Version::V3_1_1, "announce-v311").await;
    assert!(a.properties.user_properties.is_empty(), "{a:?}");
    b.stop().await;

    // No cap: MQTT's largest keep-alive. Hints off: not offered.
    let b = TestBroker::start_with(|c| c.heartbeat_hints.max_networks = 0).await;
    let a = connack(b.addr, Version::V5, "announce-off").await;
    assert_eq!(user_property(&a.properties, HINTS_PROPERTY), None);
    assert_eq!(
        user_property(&a.properties, MAX_KEEP_ALIVE_PROPERTY),
        Some("65535")
    );
    b.stop().await;
}

/// Reads events until the heartbeat settles; returns the probes made and the interval.
async fn until_settled(ev: &mut Receiver<Event>) -> (Vec<(Duration, bool)>, Duration) {
    let mut probes = Vec::new();
    loop {
        let e = tokio::time::timeout(WAIT * 6, ev.recv())
            .await
            .unwrap_or_else(|_| panic!("never settled; probes so far {probes:?}"))
            .expect("client running");
        match e {
            Event::Probe { idle, answered } => probes.push((idle, answered)),
            Event::Heartbeat {
                interval,
                phase: Phase::Settled,
            } => return (probes, interval),
            _ => {}
        }
    }
}

#[tokio::test]
async fn the_sdk_never_probes_above_the_brokers_max_keep_alive() {
    // The SDK's own ceiling is 30 s; the broker takes at most 4 s. No NAT: every probe
    // would pass, so without the announced cap the search would go to 30 s.
    let b = TestBroker::start_with(|c| c.limits.max_keep_alive = 4).await;
    let mut cfg = Config::new("capped", vec![Endpoint::Tcp(b.addr)]);
    cfg.heartbeat = scaled_heartbeat();
    cfg.ping_timeout = Duration::from_secs(1);
    let (client, mut ev) = Client::start(cfg).expect("client");
    let (probes, settled) = until_settled(&mut ev).await;
    assert!(!probes.is_empty(), "learned without a probe");
    for (idle, ok) in &probes {
        assert!(
            *idle <= Duration::from_secs(4),
            "probed {idle:?}: {probes:?}"
        );
        assert!(ok, "a probe under the cap failed: {probes:?}");
    }
    assert!(
        settled <= Duration::from_secs(4) && settled >= Duration::from_secs(3),
        "settled at {settled:?}: {probes:?}"
    );
    client.shutdown().await;
    b.stop().await;
}

/// A mosquitto broker on a free loopback port, killed on drop.
struct Mosquitto {
    child: tokio::process::Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Mosquitto {
    async fn start() -> Mosquitto {
        let dir = TempDir::new("hb-mosquitto");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .expect("config");
        let bin = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| std::path::Path::new(b).exists())
            .unwrap_or("mosquitto");
        let child = tokio::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto (apt-get install mosquitto)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let ready = async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(WAIT, ready)
            .await
            .expect("mosquitto listening");
        Mosquitto {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn against_mosquitto_the_sdk_asks_no_hint_and_starts_learning_at_once() {
    let m = Mosquitto::start().await;
    let mut cfg = Config::new("hb-on-mosquitto", vec![Endpoint::Tcp(m.addr)]);
    cfg.heartbeat = scaled_heartbeat();
    cfg.ping_timeout = Duration::from_secs(1);
    // Waiting for a hint that never comes would hold probes back this long; the first
    // probe must come far sooner.
    cfg.connect_timeout = Duration::from_secs(600);
    let (client, mut ev) = Client::start(cfg).expect("client");
    let first_probe = async {
        let mut connected = false;
        loop {
            match ev.recv().await.expect("client running") {
                Event::Connected { .. } => connected = true,
                Event::Probe { idle, answered } => return (connected, idle, answered),
                _ => {}
            }
        }
    };
    // The first cold probe idles 6.3 s (scaled); a hint wait would add 600 s.
    let (connected, idle, answered) = tokio::time::timeout(WAIT * 6, first_probe)
        .await
        .expect("a probe without waiting for a hint");
    assert!(connected, "the link connected first");
    assert!(
        answered,
        "mosquitto answers the probe's ping after {idle:?}"
    );
    client.shutdown().await;
}

/// A QUIC connection to the broker with one MQTT stream; QUIC PINGs every `ping`
/// (none: `None`).
async fn quic_mqtt(
    addr: SocketAddr,
    ca: &std::path::Path,
    id: &str,
    keep_alive: u16,
    ping: Option<Duration>,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
) {
    let endpoint = quic_client_endpoint(ca, ping).expect("QUIC endpoint");
    let conn = tokio::time::timeout(WAIT, endpoint.connect(addr, "localhost").expect("connect"))
        .await
        .expect("in time")
        .expect("handshake");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let mut connect = connect_packet(Version::V5, id);
    connect.keep_alive = keep_alive;
    send_packet(&mut send, &Packet::Connect(Box::new(connect))).await;
    let mut buf = BytesMut::new();
    match recv_packet(&mut recv, &mut buf).await {
        Some(Packet::ConnAck(a)) => {
            assert_eq!(a.code, ReasonCode::Success);
            assert_eq!(user_property(&a.properties, QUIC_PING_PROPERTY), Some("1"));
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    (endpoint, conn, send, recv)
}

async fn send_packet(send: &mut quinn::SendStream, p: &Packet) {
    let mut b = BytesMut::new();
    p.encode(Version::V5, &mut b);
    send.write_all(&b).await.expect("write");
}

/// The next packet on the stream; `None` when it ends.
async fn recv_packet(recv: &mut quinn::RecvStream, buf: &mut BytesMut) -> Option<Packet> {
    loop {
        if let Some(p) = Packet::read(buf, Version::V5, 1 << 20).expect("well formed") {
            return Some(p);
        }
        let mut chunk = [0u8; 1024];
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

#[tokio::test]
async fn over_quic_pings_alone_keep_the_mqtt_connection_and_silence_closes_it() {
    let dir = TempDir::new("hb-quic-ping");
    let certs = ensure_dev_certs(dir.path()).expect("certs");
    let mut cfg = BrokerConfig {
        listeners: Listeners {
            quic: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..Listeners::default()
        },
        allow_anonymous: true,
        sys_interval: 0,
        ..BrokerConfig::default()
    };
    cfg.tls.cert = Some(certs.server_cert.clone());
    cfg.tls.key = Some(certs.server_key.clone());
    let h = Broker::new(cfg).start().await.expect("broker");
    let addr = h.addrs().quic[0];

    // MQTT keep-alive 1 s (closed after 1.5 s without a packet); QUIC PINGs every 300 ms
    // and not one MQTT packet until 12 PINGs (3.6 s, more than two deadlines) went out.
    let (_ep, conn, mut send, mut recv) = quic_mqtt(
        addr,
        &certs.ca_cert,
        "quic-pinger",
        1,
        Some(Duration::from_millis(300)),
    )
    .await;
    let mut buf = BytesMut::new();
    let pinged = async {
        while conn.stats().frame_tx.ping < 12 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        p = recv_packet(&mut recv, &mut buf) => {
            panic!("closed although QUIC PINGs flowed: {p:?}")
        }
        r = tokio::time::timeout(WAIT * 3, pinged) => r.expect("12 QUIC PINGs sent"),
    }
    // Still the same MQTT session: a QoS 1 publish is acknowledged.
    send_packet(
        &mut send,
        &Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "hb/quic".into(),
            pkid: 7,
            properties: Properties::default(),
            payload: bytes::Bytes::from_static(b"alive"),
        }),
    )
    .await;
    match tokio::time::timeout(WAIT, recv_packet(&mut recv, &mut buf)).await {
        Ok(Some(Packet::PubAck(a))) => assert_eq!(a.pkid, 7),
        other => panic!("expected PUBACK, got {other:?}"),
    }

    // Neither MQTT packets nor QUIC PINGs: the keep-alive closes it (0x8D).
    let (_ep2, _conn2, _send2, mut recv2) =
        quic_mqtt(addr, &certs.ca_cert, "quic-silent", 1, None).await;
    let mut buf2 = BytesMut::new();
    match tokio::time::timeout(WAIT, recv_packet(&mut recv2, &mut buf2)).await {
        Ok(Some(Packet::Disconnect(d))) => assert_eq!(d.code, ReasonCode::KeepAliveTimeout),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    conn.close(quinn::VarInt::from_u32(0), b"done");
    h.shutdown().await;
}

/// Publishes QoS 1 messages `from..` to `topic` on `addr`, one every `every`, until
/// `stop` fires; returns the numbers acknowledged.
async fn publish_until(
    addr: SocketAddr,
    topic: &str,
    from: u16,
    every: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<u16> {
    let id = format!("{topic}-publisher-{from}");
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V5, &id)).await;
    let mut sent = Vec::new();
    for n in from.. {
        p.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.into(),
            pkid: n,
            properties: Properties::default(),
            payload: bytes::Bytes::from(n.to_string()),
        }))
        .await;
        match p.recv().await {
            Some(Packet::PubAck(_)) => sent.push(n),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    sent
}

/// Against a broker that takes no new keep-alive on the link (mosquitto announces no
/// `sb-max-keep-alive`), a heartbeat that outgrows the CONNECT keep-alive reconnects on
/// purpose with the new one, session kept: the link then idles at the learned interval
/// (mosquitto would close it after 1.5 × the old keep-alive) and no QoS 1 message is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_mosquitto_a_longer_heartbeat_reconnects_on_purpose_with_its_keep_alive() {
    let m = Mosquitto::start().await;
    // Probes 6.29 s ✗, 2.58 s ✓, 4.03 s ✗, 3.22 s ✓: settles at 3.12 s, three times the
    // first CONNECT's keep-alive of 1 s.
    let nat = switchboard_tests::nat::NatProxy::tcp(m.addr, Duration::from_millis(3600)).await;
    let mut cfg = Config::new("hb-planned", vec![Endpoint::Tcp(nat.addr)]);
    cfg.heartbeat = scaled_heartbeat();
    cfg.ping_timeout = Duration::from_secs(1);
    cfg.backoff_min = Duration::from_millis(100);
    let (client, mut ev) = Client::start(cfg).expect("client");
    let codes = client
        .subscribe_acked("hb/planned", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    assert_eq!(codes, vec![ReasonCode::GrantedQos1]);
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let publisher = tokio::spawn(publish_until(
        m.addr,
        "hb/planned",
        1,
        Duration::from_millis(700),
        stopped,
    ));
    let mut seen = Planned::default();
    let learning = seen.until(&mut ev, |s| s.settled.is_some());
    if tokio::time::timeout(WAIT * 6, learning).await.is_err() {
        panic!("never settled: {seen:?}");
    }
    let settled = seen.settled.unwrap_or_default();
    assert!(
        settled > Duration::from_secs(2),
        "learned {settled:?}: {seen:?}"
    );
    let _ = stop.send(());
    let mut sent = publisher.await.expect("publisher");
    // Idle for three learned intervals: the link lives on its own pings.
    let quiet = tokio::time::sleep(settled * 3);
    tokio::pin!(quiet);
    loop {
        tokio::select! {
            _ = &mut quiet => break,
            e = ev.recv() => seen.note(e.expect("client running")),
        }
    }
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let _ = stop.send(());
    sent.extend(publish_until(m.addr, "hb/planned", 1000, Duration::ZERO, stopped).await);
    let all = |s: &Planned| sent.iter().all(|n| s.received.contains(n));
    if tokio::time::timeout(WAIT, seen.until(&mut ev, all))
        .await
        .is_err()
    {
        panic!("a QoS 1 message was lost: sent {sent:?}, {seen:?}");
    }
    assert!(
        seen.disconnects
            .iter()
            .any(|d| d.starts_with("planned reconnect")),
        "no planned reconnect: {seen:?}"
    );
    assert!(
        seen.disconnects
            .iter()
            .all(|d| d.starts_with("planned reconnect")),
        "the link was lost: {seen:?}"
    );
    client.shutdown().await;
}

/// What the client reported in the planned-reconnect test.
#[derive(Debug, Default)]
struct Planned {
    disconnects: Vec<String>,
    received: Vec<u16>,
    settled: Option<Duration>,
}

impl Planned {
    fn note(&mut self, e: Event) {
        match e {
            Event::Disconnected { reason } => self.disconnects.push(reason),
            Event::Heartbeat {
                interval,
                phase: Phase::Settled,
            } => self.settled = Some(interval),
            Event::Message(p) => {
                if let Some(n) = std::str::from_utf8(&p.payload)
                    .ok()
                    .and_then(|s| s.parse().ok())
                {
                    self.received.push(n);
                }
            }
            _ => {}
        }
    }

    /// Reads events until `done` holds.
    async fn until(&mut self, ev: &mut Receiver<Event>, done: impl Fn(&Self) -> bool) {
        while !done(self) {
            self.note(ev.recv().await.expect("client running"));
        }
    }
}
