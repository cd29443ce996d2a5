//! TLS, WebSocket, WSS and QUIC with real clients: mosquitto (TLS, client certificates),
//! rumqttc (TLS), paho (TLS, WS, WSS), MQTT.js (WS) and quinn (QUIC, migration, 0-RTT),
//! plus bad input on each transport.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use switchboard_broker::metrics::Metrics;
use switchboard_broker::transport::certs::{DevCerts, ensure_dev_certs, make_client_cert};
use switchboard_broker::{Broker, BrokerConfig, BrokerHandle, Listeners};
use switchboard_proto::*;
use switchboard_tests::{RawClient, TempDir, WAIT, connect_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn local() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 0))]
}

fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn start(
    dir: &Path,
    f: impl FnOnce(&mut BrokerConfig, &DevCerts),
) -> (BrokerHandle, DevCerts) {
    // rumqttc builds its TLS config with the process default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = ensure_dev_certs(dir).expect("dev certs");
    let mut cfg = BrokerConfig {
        listeners: Listeners {
            tcp: local(),
            tls: local(),
            ws: local(),
            wss: local(),
            quic: local(),
        },
        allow_anonymous: true,
        sys_interval: 0,
        ..BrokerConfig::default()
    };
    cfg.tls.cert = Some(certs.server_cert.clone());
    cfg.tls.key = Some(certs.server_key.clone());
    f(&mut cfg, &certs);
    let h = Broker::new(cfg).start().await.expect("broker starts");
    (h, certs)
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output().expect("command runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_over_tls_with_cafile() {
    let dir = TempDir::new("tls-mosq");
    let (h, certs) = start(dir.path(), |_, _| {}).await;
    let port = h.addrs().tls[0].port().to_string();
    let ca = certs.ca_cert.to_str().expect("utf8 path").to_owned();
    let (p, ca2) = (port.clone(), ca.clone());
    let out = tokio::task::spawn_blocking(move || {
        let publish = run(Command::new("mosquitto_pub").args([
            "-h",
            "localhost",
            "-p",
            &p,
            "--cafile",
            &ca2,
            "-q",
            "1",
            "-r",
            "-t",
            "tls/t",
            "-m",
            "secret",
        ]));
        assert!(
            publish.status.success(),
            "{}",
            String::from_utf8_lossy(&publish.stderr)
        );
        run(Command::new("mosquitto_sub").args([
            "-h",
            "localhost",
            "-p",
            &p,
            "--cafile",
            &ca2,
            "-t",
            "tls/t",
            "-C",
            "1",
            "-W",
            "10",
            "-V",
            "mqttv5",
        ]))
    })
    .await
    .expect("join");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "secret");
    // A client that does not trust our CA refuses the server.
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new("mosquitto_pub").args([
            "-h",
            "localhost",
            "-p",
            &port,
            "--cafile",
            "/etc/ssl/certs/ca-certificates.crt",
            "-t",
            "x",
            "-m",
            "y",
        ]))
    })
    .await
    .expect("join");
    assert!(!out.status.success());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_accepted_and_rejected() {
    let dir = TempDir::new("tls-client");
    let (h, certs) = start(dir.path(), |cfg, certs| {
        cfg.allow_anonymous = false;
        cfg.tls.client_ca = Some(certs.ca_cert.clone());
    })
    .await;
    let (cert, key) = make_client_cert(dir.path(), "device-42").expect("client cert");
    let other = TempDir::new("tls-other-ca");
    ensure_dev_certs(other.path()).expect("other CA");
    let (bad_cert, bad_key) = make_client_cert(other.path(), "intruder").expect("foreign cert");
    let port = h.addrs().tls[0].port().to_string();
    let ca = certs.ca_cert.to_str().expect("utf8").to_owned();
    let s = |p: &Path| p.to_str().expect("utf8").to_owned();
    let (cert, key, bad_cert, bad_key) = (s(&cert), s(&key), s(&bad_cert), s(&bad_key));
    let outs = tokio::task::spawn_blocking(move || {
        let base = |extra: &[&str]| {
            let mut c = Command::new("mosquitto_pub");
            c.args([
                "-h",
                "localhost",
                "-p",
                &port,
                "--cafile",
                &ca,
                "-t",
                "certs/x",
                "-m",
                "y",
                "-q",
                "1",
            ]);
            c.args(extra);
            run(&mut c)
        };
        (
            base(&["--cert", &cert, "--key", &key]),
            base(&[]),
            base(&["--cert", &bad_cert, "--key", &bad_key]),
        )
    })
    .await
    .expect("join");
    assert!(
        outs.0.status.success(),
        "valid client certificate refused: {}",
        String::from_utf8_lossy(&outs.0.stderr)
    );
    assert!(
        !outs.1.status.success(),
        "no certificate and no credentials must be refused"
    );
    assert!(
        String::from_utf8_lossy(&outs.1.stderr)
            .to_lowercase()
            .contains("not authorised"),
        "{}",
        String::from_utf8_lossy(&outs.1.stderr)
    );
    assert!(
        !outs.2.status.success(),
        "a certificate from another CA must be refused"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_over_tls() {
    use rumqttc::v5::mqttbytes::QoS as Q;
    use rumqttc::{TlsConfiguration, Transport};
    let dir = TempDir::new("tls-rumqttc");
    let (h, certs) = start(dir.path(), |_, _| {}).await;
    let ca = std::fs::read(&certs.ca_cert).expect("ca");
    let port = h.addrs().tls[0].port();
    let mut opts = rumqttc::v5::MqttOptions::new("rumqttc-tls", "localhost", port);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth: None,
    }));
    let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 10);
    client
        .subscribe("rtls/#", Q::AtLeastOnce)
        .await
        .expect("subscribe");
    client
        .publish("rtls/a", Q::AtLeastOnce, false, "via rustls")
        .await
        .expect("publish");
    let got = tokio::time::timeout(WAIT, async {
        loop {
            if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(p)) =
                el.poll().await.expect("event loop")
            {
                return p.payload;
            }
        }
    })
    .await
    .expect("message over TLS");
    assert_eq!(got, "via rustls");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_over_tls_ws_and_wss() {
    let dir = TempDir::new("paho-tr");
    let (h, certs) = start(dir.path(), |_, _| {}).await;
    let a = h.addrs().clone();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/paho_transports.py");
    let ca = certs.ca_cert.to_str().expect("utf8").to_owned();
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new("python3").args([
            script,
            "--ca",
            &ca,
            "--tls",
            &a.tls[0].port().to_string(),
            "--ws",
            &a.ws[0].port().to_string(),
            "--wss",
            &a.wss[0].port().to_string(),
        ]))
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_js_over_websocket() {
    let js = concat!(env!("CARGO_MANIFEST_DIR"), "/js");
    assert!(
        Path::new(js).join("node_modules/mqtt").exists(),
        "run `npm ci --prefix tests/js` first (.ci/run does)"
    );
    let dir = TempDir::new("mqttjs");
    let (h, _) = start(dir.path(), |_, _| {}).await;
    let port = h.addrs().ws[0].port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new("node")
            .current_dir(js)
            .args(["ws_roundtrip.mjs", &port]))
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handshakes_are_refused_and_the_broker_keeps_serving() {
    let dir = TempDir::new("bad-hs");
    let (h, certs) = start(dir.path(), |_, _| {}).await;
    let a = h.addrs().clone();
    // TLS with an ALPN we do not speak.
    let mut roots = rustls::RootCertStore::empty();
    for c in switchboard_broker::transport::tls::load_certs(&certs.ca_cert).expect("ca") {
        roots.add(c).expect("root");
    }
    let mut cc = rustls::ClientConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    cc.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(a.tls[0]).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let r = tokio_rustls::TlsConnector::from(Arc::new(cc))
        .connect(name, tcp)
        .await;
    assert!(r.is_err(), "wrong ALPN must fail the handshake");

    // WebSocket upgrade without the mqtt subprotocol.
    let mut s = tokio::net::TcpStream::connect(a.ws[0]).await.expect("tcp");
    s.write_all(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("answer")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    // Garbage on the QUIC port.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    for i in 0..50u8 {
        udp.send_to(&[i; 1200], a.quic[0]).expect("send");
    }
    // Both refusals are counted (the counter moves just after the refusal is written).
    let deadline = tokio::time::Instant::now() + WAIT;
    while Metrics::get(&h.state().metrics.handshake_failures) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "handshake failures not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Everyone else is still served, QUIC included.
    let (mut c, ack) =
        RawClient::connect(a.tcp[0], connect_packet(Version::V5, "still-here")).await;
    assert!(matches!(ack, Packet::ConnAck(_)));
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    let q = QuicClient::new(&certs.ca_cert);
    let (_conn, mut stream) = q.open(a.quic[0], "after-garbage").await;
    stream.send(&Packet::PingReq).await;
    assert_eq!(stream.recv().await, Some(Packet::PingResp));
    h.shutdown().await;
}

/// A QUIC MQTT client on quinn: one bidirectional stream per MQTT connection.
struct QuicClient {
    endpoint: quinn::Endpoint,
}

struct QuicStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
}

impl QuicClient {
    fn new(ca: &Path) -> QuicClient {
        let mut roots = rustls::RootCertStore::empty();
        for c in switchboard_broker::transport::tls::load_certs(ca).expect("ca") {
            roots.add(c).expect("root");
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(crypto())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"mqtt".to_vec()];
        tls.enable_early_data = true;
        let qc = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(qc)));
        QuicClient { endpoint }
    }

    /// Connects (trying 0-RTT) and sends CONNECT on a new stream; returns whether 0-RTT was
    /// accepted, the connection and the stream.
    async fn open_0rtt(&self, addr: SocketAddr, id: &str) -> (bool, quinn::Connection, QuicStream) {
        let connecting = self.endpoint.connect(addr, "localhost").expect("connect");
        let (conn, zero_rtt) = match connecting.into_0rtt() {
            Ok((conn, accepted)) => (conn, Some(accepted)),
            Err(connecting) => (
                tokio::time::timeout(WAIT, connecting)
                    .await
                    .expect("in time")
                    .expect("handshake"),
                None,
            ),
        };
        let (send, recv) = conn.open_bi().await.expect("stream");
        let mut s = QuicStream {
            send,
            recv,
            buf: BytesMut::new(),
        };
        s.send(&Packet::Connect(Box::new(connect_packet(Version::V5, id))))
            .await;
        let accepted = match zero_rtt {
            Some(a) => a.await,
            None => false,
        };
        assert!(
            matches!(s.recv().await, Some(Packet::ConnAck(a)) if a.code == ReasonCode::Success)
        );
        (accepted, conn, s)
    }

    async fn open(&self, addr: SocketAddr, id: &str) -> (quinn::Connection, QuicStream) {
        let (_, c, s) = self.open_0rtt(addr, id).await;
        (c, s)
    }
}

impl QuicStream {
    async fn send(&mut self, p: &Packet) {
        let mut b = BytesMut::new();
        p.encode(Version::V5, &mut b);
        self.send.write_all(&b).await.expect("write");
    }

    async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) =
                    Packet::read(&mut self.buf, Version::V5, usize::MAX).expect("well formed")
                {
                    return Some(p);
                }
                let mut chunk = [0u8; 4096];
                match self.recv.read(&mut chunk).await {
                    Ok(Some(n)) => self.buf.extend_from_slice(&chunk[..n]),
                    _ => return None,
                }
            }
        })
        .await
        .expect("timed out on QUIC")
    }
}

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
