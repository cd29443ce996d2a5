//! The adaptive heartbeat on real sockets: the SDK behind the NAT simulators (TCP proxy and
//! UDP NAT for QUIC) learns each NAT's idle timeout on probe connections, on a timeline
//! scaled from minutes to seconds, without losing the link or a QoS 1 message; a network
//! switch resumes the interval learned on that network.
//!
//! Timeouts are generous and every wait is on an event. The NAT timeouts are chosen so that
//! every probe lands at least 0.3 s away from them (see `scaled`), far above timer jitter.

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_broker::transport::certs::ensure_dev_certs;
use switchboard_broker::{Broker, BrokerConfig, BrokerHandle, Listeners};
use switchboard_client::{Client, Config, Endpoint, Event, Phase};
use switchboard_proto::*;
use switchboard_tests::nat::scaled_heartbeat;
use switchboard_tests::nat::{NatProxy, UdpNat};
use switchboard_tests::{RawClient, TempDir, connect_packet};
use tokio::sync::mpsc::Receiver;

/// The NAT timeout of the first network: probes 6.29 s ✗, 2.58 s ✓, 4.03 s ✗, 3.22 s ✓,
/// then the link settles at 3.12 s (the log-space bisection of `AdaptivePolicy`).
const NAT_A: Duration = Duration::from_millis(3600);
/// The second network's: probes 6.29 s ✗, 2.58 s ✓, 4.03 s ✓, 5.03 s ✓; settles at 4.88 s.
const NAT_B: Duration = Duration::from_millis(5600);

fn local() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 0))]
}

/// A broker on TCP and QUIC, and its CA certificate.
async fn broker(dir: &TempDir) -> (BrokerHandle, std::path::PathBuf) {
    let certs = ensure_dev_certs(dir.path()).expect("certs");
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
    let h = Broker::new(cfg).start().await.expect("broker");
    (h, certs.ca_cert.clone())
}

fn client_config(id: &str, endpoint: Endpoint, ca: &std::path::Path) -> Config {
    let mut c = Config::new(id, vec![endpoint]);
    c.ca_cert = Some(ca.to_path_buf());
    c.heartbeat = scaled_heartbeat();
    c.ping_timeout = Duration::from_secs(1);
    c.backoff_min = Duration::from_millis(100);
    c
}

async fn next_event(ev: &mut Receiver<Event>, within: Duration) -> Option<Event> {
    tokio::time::timeout(within, ev.recv())
        .await
        .ok()
        .map(|e| e.expect("client running"))
}

/// Publishes QoS 1 messages numbered from `from` to `hb/<tag>` straight to the broker, one
/// every `every`, until stopped; returns the numbers acknowledged.
struct Publisher {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<u16>>,
}

impl Publisher {
    async fn start(broker: SocketAddr, tag: &str, from: u16, every: Duration) -> Publisher {
        let id = format!("{tag}-publisher-{from}");
        let (mut p, _) = RawClient::connect(broker, connect_packet(Version::V5, &id)).await;
        let topic = format!("hb/{tag}");
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut sent = Vec::new();
            for n in from.. {
                p.send(&Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: topic.clone(),
                    pkid: n,
                    properties: Properties::default(),
                    payload: bytes::Bytes::from(n.to_string()),
                }))
                .await;
                match p.recv().await {
                    Some(Packet::PubAck(_)) => {}
                    other => panic!("expected PUBACK, got {other:?}"),
                }
                sent.push(n);
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
            sent
        });
        Publisher { stop, task }
    }

    async fn stop(self) -> Vec<u16> {
        let _ = self.stop.send(());
        self.task.await.expect("publisher")
    }
}

/// What the client reported while learning.
#[derive(Debug, Default)]
struct Seen {
    probes: Vec<(Duration, bool)>,
    disconnects: Vec<String>,
    received: Vec<u16>,
    interval: Option<(Duration, Phase)>,
}

impl Seen {
    fn note(&mut self, e: Event) {
        match e {
            Event::Probe { idle, answered } => self.probes.push((idle, answered)),
            Event::Disconnected { reason } => self.disconnects.push(reason),
            Event::Heartbeat { interval, phase } => self.interval = Some((interval, phase)),
            Event::Message(p) => {
                let n = std::str::from_utf8(&p.payload)
                    .expect("utf8")
                    .parse()
                    .expect("number");
                if !self.received.contains(&n) {
                    self.received.push(n);
                }
            }
            Event::Connected { .. } => {}
        }
    }

    /// Reads events until the heartbeat settles (or `limit` passes); returns the interval.
    async fn until_settled(&mut self, ev: &mut Receiver<Event>, limit: Duration) -> Duration {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some((d, Phase::Settled)) = self.interval {
                return d;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "never settled: {self:?}");
            if let Some(e) = next_event(ev, left).await {
                self.note(e);
            }
        }
    }

    /// Reads events for `d`.
    async fn for_a_while(&mut self, ev: &mut Receiver<Event>, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            if let Some(e) = next_event(ev, left).await {
                self.note(e);
            }
        }
    }

    /// Reads events until every number in `sent` arrived (or `limit` passes).
    async fn until_received(&mut self, ev: &mut Receiver<Event>, sent: &[u16], limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while sent.iter().any(|n| !self.received.contains(n)) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(e) = next_event(ev, left).await {
                self.note(e);
            }
        }
        let mut got = self.received.clone();
        got.sort_unstable();
        assert_eq!(got, sent, "a QoS 1 message was lost: {self:?}");
    }
}

/// The transport of the next connection, and whether it keeps alive with QUIC pings.
async fn connected(ev: &mut Receiver<Event>) -> (&'static str, bool) {
    loop {
        match next_event(ev, Duration::from_secs(15)).await {
            Some(Event::Connected {
                transport,
                quic_ping,
                ..
            }) => return (transport, quic_ping),
            Some(_) => {}
            None => panic!("the client did not connect"),
        }
    }
}

fn assert_settled_under(settled: Duration, nat: Duration, seen: &Seen) {
    assert!(
        settled < nat,
        "settled at {settled:?} ≥ NAT {nat:?}: {seen:?}"
    );
    assert!(
        settled.as_secs_f64() >= 0.85 * nat.as_secs_f64(),
        "settled at {settled:?}, too far under {nat:?}: {seen:?}"
    );
    assert!(seen.probes.len() <= 6, "too many probes: {seen:?}");
    assert!(
        seen.probes.iter().any(|(_, ok)| !ok),
        "no probe failed, nothing was learned from the NAT: {seen:?}"
    );
}

/// Learns behind `nat_timeout` with messages flowing, then keeps the link for three more
/// intervals, and checks nothing was lost on the way.
async fn converge(
    endpoint: Endpoint,
    broker: SocketAddr,
    ca: &std::path::Path,
    tag: &str,
    forgotten: impl Fn() -> u64,
) {
    let (client, mut ev) = Client::start(client_config(tag, endpoint, ca)).expect("client");
    let (transport, quic_ping) = connected(&mut ev).await;
    // Over QUIC the SDK's default heartbeat is QUIC pings (the broker announces that it
    // counts them): the whole run below, learning and idling, has no MQTT PINGREQ.
    assert_eq!(quic_ping, transport == "quic", "QUIC pings on {transport}");
    let codes = client
        .subscribe_acked(&format!("hb/{tag}"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    assert_eq!(codes, vec![ReasonCode::GrantedQos1]);
    let publisher = Publisher::start(broker, tag, 1, Duration::from_millis(700)).await;
    let mut seen = Seen::default();
    let settled = seen.until_settled(&mut ev, Duration::from_secs(60)).await;
    assert_settled_under(settled, NAT_A, &seen);
    assert!(forgotten() >= 1, "the NAT never forgot a mapping: {seen:?}");
    let mut sent = publisher.stop().await;
    seen.until_received(&mut ev, &sent, Duration::from_secs(15))
        .await;
    // Idle: the link lives on its own pings at the learned interval, then still delivers.
    seen.for_a_while(&mut ev, settled * 3).await;
    let last = Publisher::start(broker, tag, 1000, Duration::from_secs(3600)).await;
    sent.extend(last.stop().await);
    seen.until_received(&mut ev, &sent, Duration::from_secs(15))
        .await;
    assert!(
        seen.disconnects.is_empty(),
        "learning over {transport} cost the link: {seen:?}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_heartbeat_converges_under_the_nat_timeout_without_losing_the_link_or_a_message() {
    let dir = TempDir::new("hb-tcp");
    let (h, ca) = broker(&dir).await;
    let tcp = h.tcp_addrs()[0];
    let nat = NatProxy::tcp(tcp, NAT_A).await;
    converge(Endpoint::Tcp(nat.addr), tcp, &ca, "tcp", || nat.forgotten()).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_heartbeat_converges_under_the_nat_timeout_through_the_udp_nat() {
    let dir = TempDir::new("hb-quic");
    let (h, ca) = broker(&dir).await;
    let nat = UdpNat::start(h.addrs().quic[0], NAT_A).await;
    converge(
        Endpoint::Quic(nat.addr),
        h.tcp_addrs()[0],
        &ca,
        "quic",
        || nat.forgotten(),
    )
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_switch_resumes_the_interval_learned_on_that_network() {
    let dir = TempDir::new("hb-switch");
    let (h, ca) = broker(&dir).await;
    let tcp = h.tcp_addrs()[0];
    let nat = NatProxy::tcp(tcp, NAT_A).await;
    let (client, mut ev) =
        Client::start(client_config("switch", Endpoint::Tcp(nat.addr), &ca)).expect("client");
    connected(&mut ev).await;
    client
        .subscribe_acked("hb/switch", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    client.set_network("wifi").await.expect("wifi");
    let mut wifi = Seen::default();
    let on_wifi = wifi.until_settled(&mut ev, Duration::from_secs(60)).await;
    assert_settled_under(on_wifi, NAT_A, &wifi);

    // To cellular: its NAT keeps idle mappings longer. The interval starts over, then grows.
    client.set_network("cellular").await.expect("cellular");
    let mut cell = Seen::default();
    while cell.interval.is_none() {
        let e = next_event(&mut ev, Duration::from_secs(10)).await;
        cell.note(e.expect("the switch is reported"));
    }
    assert_eq!(cell.interval.map(|(_, p)| p), Some(Phase::Probing));
    nat.set_idle(NAT_B);
    let on_cell = cell.until_settled(&mut ev, Duration::from_secs(90)).await;
    assert_settled_under(on_cell, NAT_B, &cell);

    // Back on Wi-Fi: the interval learned there, at once, and no probing.
    client.set_network("wifi").await.expect("wifi again");
    let mut back = Seen::default();
    while back.interval.is_none() {
        let e = next_event(&mut ev, Duration::from_secs(10)).await;
        back.note(e.expect("the switch is reported"));
    }
    assert_eq!(back.interval, Some((on_wifi, Phase::Settled)));
    nat.set_idle(NAT_A);
    let publisher = Publisher::start(tcp, "switch", 1, Duration::from_millis(700)).await;
    back.for_a_while(&mut ev, on_wifi * 3).await;
    let sent = publisher.stop().await;
    back.until_received(&mut ev, &sent, Duration::from_secs(15))
        .await;
    assert!(back.probes.is_empty(), "probed again: {back:?}");
    for seen in [&wifi, &cell, &back] {
        assert!(seen.disconnects.is_empty(), "a link was lost: {seen:?}");
    }

    // What was learned survives a restart when the app saves and restores it.
    let learned = client.learned_heartbeats().await.expect("learned");
    let networks: Vec<&str> = learned.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(networks, ["cellular", "wifi"]);
    client.shutdown().await;
    let mut cfg = client_config("switch-2", Endpoint::Tcp(nat.addr), &ca);
    cfg.learned_heartbeats = learned;
    let (client, mut ev) = Client::start(cfg).expect("client");
    connected(&mut ev).await;
    client.set_network("wifi").await.expect("wifi");
    let mut restarted = Seen::default();
    while restarted.interval.is_none() {
        let e = next_event(&mut ev, Duration::from_secs(10)).await;
        restarted.note(e.expect("the switch is reported"));
    }
    assert_eq!(restarted.interval, Some((on_wifi, Phase::Settled)));
    client.shutdown().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_im_device_learns_on_probe_connections_without_losing_its_link() {
    // The probe logs in with the phone's own token and no client identifier: the broker
    // takes it as a heartbeat probe, not as a second device, so the phone is neither signed
    // out (one phone at a time) nor made to learn on its link.
    let b = switchboard_tests::im::ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    let token = b.im.issue_token(t, "alice", "phone", 600).expect("token");
    let nat = NatProxy::tcp(b.addr, NAT_A).await;
    let mut cfg = switchboard_tests::im::config(nat.addr, "alice", "alice-phone", &token);
    cfg.heartbeat = scaled_heartbeat();
    cfg.ping_timeout = Duration::from_secs(1);
    let (client, mut ev) = Client::start(cfg).expect("client");
    connected(&mut ev).await;
    let mut seen = Seen::default();
    let settled = seen.until_settled(&mut ev, Duration::from_secs(60)).await;
    assert!(settled < NAT_A, "settled at {settled:?}: {seen:?}");
    assert!(
        settled.as_secs_f64() >= 0.85 * NAT_A.as_secs_f64(),
        "settled at {settled:?}: {seen:?}"
    );
    assert!(
        seen.probes.iter().any(|(_, ok)| !ok),
        "probe connections found the NAT's limit: {seen:?}"
    );
    assert!(
        seen.disconnects.is_empty(),
        "probes cost the link nothing (no lost link, no sign-out): {seen:?}"
    );
    client.shutdown().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_login_reaches_no_topic_and_keeps_no_session() {
    let b = switchboard_tests::im::ImBroker::start().await;
    let t = b.tenant("acme").await;
    let uid = b.user(t, "alice").await;
    let mut policy = b.im.tenant(t).expect("tenant").policy.clone();
    policy.single_phone = true;
    b.im.set_policy(t, policy).await.expect("policy");
    let token = b.im.issue_token(t, "alice", "phone", 600).expect("token");
    let phone = switchboard_tests::im::Device::connect(b.addr, "alice", "phone-1", &token).await;
    let mut c = connect_packet(Version::V5, "");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    c.username = Some("alice".into());
    c.password = Some(bytes::Bytes::from(token.clone()));
    let (mut probe, ack) = RawClient::connect(b.addr, c).await;
    let Packet::ConnAck(ack) = ack else {
        panic!("expected CONNACK, got {ack:?}")
    };
    assert_eq!(ack.code, ReasonCode::Success);
    assert!(ack.properties.assigned_client_identifier.is_some());
    assert_eq!(
        ack.properties.session_expiry_interval,
        Some(0),
        "a probe's session is thrown away with it"
    );
    // Nothing to subscribe to, nothing to publish to, not even the user's own inbox.
    probe
        .send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![
                ("$im/inbox".into(), SubscriptionOptions::default()),
                ("#".into(), SubscriptionOptions::default()),
            ],
            properties: Properties::default(),
        }))
        .await;
    match probe.recv().await {
        Some(Packet::SubAck(a)) => assert!(
            a.codes.iter().all(|c| *c == ReasonCode::NotAuthorized),
            "{a:?}"
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    probe
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "sensors/1".into(),
            pkid: 2,
            properties: Properties::default(),
            payload: bytes::Bytes::from_static(b"x"),
        }))
        .await;
    match probe.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.code, ReasonCode::NotAuthorized),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // It pings like any connection...
    probe.send(&Packet::PingReq).await;
    assert_eq!(probe.recv().await, Some(Packet::PingResp));
    // ...and it is not a device: the phone (one phone at a time is on) keeps its place.
    let devices: Vec<String> = b.im.devices(t, uid).into_iter().map(|(c, _)| c).collect();
    assert_eq!(devices, ["phone-1"]);
    phone
        .client
        .conversations()
        .await
        .expect("the phone is still served");
    drop(probe);
    b.stop().await;
}
