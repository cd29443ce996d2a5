//! TLS, WebSocket and WSS with real clients: mosquitto (TLS, client certificates),
//! rumqttc (TLS), paho (TLS, WS, WSS), MQTT.js (WS), plus bad input on each transport.
//! QUIC (quinn: migration, 0-RTT): `transports_quic.rs`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use switchboard_broker::metrics::Metrics;
use switchboard_broker::transport::certs::{ensure_dev_certs, make_client_cert};
use switchboard_proto::*;
use switchboard_tests::transports::{QuicClient, crypto, start};
use switchboard_tests::{RawClient, TempDir, WAIT, connect_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
