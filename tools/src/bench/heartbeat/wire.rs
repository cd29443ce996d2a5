//! Bytes on the wire while idle, for `bench --heartbeat`: the SDK idles over TCP, TLS and
//! QUIC with MQTT PINGREQ, over QUIC with its default QUIC-level pings, and a bare QUIC
//! connection is kept by quinn's QUIC PING frames, each through a counting relay on
//! loopback; bytes and packets per ping exchange are measured.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use switchboard_broker::transport::certs::ensure_dev_certs;
use switchboard_broker::{Broker, BrokerConfig, Listeners};
use switchboard_client::heartbeat::HeartbeatConfig;
use switchboard_client::{Client, Config, Endpoint, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Idle traffic of one transport.
#[derive(Debug, Clone, Serialize, Default)]
pub struct WireRow {
    pub transport: String,
    /// Measured: payload bytes (TCP stream / UDP datagram) per keep-alive exchange, both ways.
    pub payload_per_exchange: f64,
    /// Measured: relay writes (TCP, about one per segment) or datagrams per exchange.
    pub packets_per_exchange: f64,
    /// Computed: with IPv4 + TCP (timestamps) or IPv4 + UDP headers, and for TCP one pure
    /// ACK per exchange.
    pub wire_per_exchange: f64,
    pub error: Option<String>,
}

/// Counters of a relay.
#[derive(Default)]
struct Counts {
    bytes: AtomicU64,
    packets: AtomicU64,
}

impl Counts {
    fn get(&self) -> (u64, u64) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.packets.load(Ordering::Relaxed),
        )
    }

    fn add(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.packets.fetch_add(1, Ordering::Relaxed);
    }
}

/// A loopback TCP relay to `upstream` counting what it passes on, both ways together.
/// Its tasks end with the returned guard.
async fn tcp_relay(
    upstream: SocketAddr,
) -> anyhow::Result<(SocketAddr, Arc<Counts>, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let task = tokio::spawn(async move {
        // Dropped (and so aborted) with this task.
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            let c = c.clone();
            conns.spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let c2 = c.clone();
                let up = async move {
                    let mut b = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut b).await {
                        c.add(n);
                        if sw.write_all(&b[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = async move {
                    let mut b = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = sr.read(&mut b).await {
                        c2.add(n);
                        if cw.write_all(&b[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::select! { _ = up => {}, _ = down => {} }
            });
        }
    });
    Ok((addr, counts, task))
}

/// A loopback UDP relay to `upstream` for one client, counting datagrams both ways.
async fn udp_relay(
    upstream: SocketAddr,
) -> anyhow::Result<(SocketAddr, Arc<Counts>, tokio::task::JoinHandle<()>)> {
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let addr = front.local_addr()?;
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let task = tokio::spawn(async move {
        let mut client = None;
        let (mut a, mut b) = (vec![0u8; 65_536], vec![0u8; 65_536]);
        loop {
            tokio::select! {
                r = front.recv_from(&mut a) => {
                    let Ok((n, from)) = r else { return };
                    client = Some(from);
                    c.add(n);
                    let _ = back.send_to(&a[..n], upstream).await;
                }
                r = back.recv_from(&mut b) => {
                    let Ok((n, _)) = r else { return };
                    if let Some(to) = client {
                        c.add(n);
                        let _ = front.send_to(&b[..n], to).await;
                    }
                }
            }
        }
    });
    Ok((addr, counts, task))
}

/// IPv4 (20) + TCP (20) + timestamps option (12).
const TCP_HEADERS: f64 = 52.0;
/// IPv4 (20) + UDP (8).
const UDP_HEADERS: f64 = 28.0;

/// Measures one SDK link idling at `interval` for `exchanges` pings: MQTT PINGREQ, or
/// over QUIC with `quic_ping` the SDK's default QUIC-level pings.
async fn sdk_idle(
    name: &str,
    quic_ping: bool,
    endpoint: Endpoint,
    ca: &Path,
    counts: &Counts,
    interval: Duration,
    exchanges: u32,
) -> anyhow::Result<WireRow> {
    let mut cfg = Config::new(&format!("wire-{name}"), vec![endpoint]);
    cfg.ca_cert = Some(ca.to_path_buf());
    cfg.quic_ping = quic_ping;
    // A fixed interval: the ceiling is the start, so nothing is probed.
    cfg.heartbeat = HeartbeatConfig {
        initial: interval,
        min: interval,
        max: interval,
        margin: 0.0,
        ..HeartbeatConfig::default()
    };
    let (client, mut ev) = Client::start(cfg)?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ev.recv()).await {
            Ok(Some(Event::Connected { .. })) => break,
            Ok(Some(_)) => {}
            _ => anyhow::bail!("{name}: no connection"),
        }
    }
    // Let the handshake's stragglers (tickets, ACKs) pass.
    tokio::time::sleep(interval * 2).await;
    let drain = tokio::spawn(async move { while ev.recv().await.is_some() {} });
    let (b0, p0) = counts.get();
    tokio::time::sleep(interval * exchanges).await;
    let (b1, p1) = counts.get();
    client.shutdown().await;
    drain.abort();
    let n = f64::from(exchanges);
    let payload = (b1 - b0) as f64 / n;
    let packets = (p1 - p0) as f64 / n;
    let wire = if name.starts_with("quic") {
        payload + packets * UDP_HEADERS
    } else {
        payload + (packets + 1.0) * TCP_HEADERS
    };
    let how = if quic_ping {
        "SDK default, QUIC ping"
    } else {
        "MQTT PINGREQ"
    };
    Ok(WireRow {
        transport: format!("{} ({how})", name.trim_end_matches("-sdk")),
        payload_per_exchange: payload,
        packets_per_exchange: packets,
        wire_per_exchange: wire,
        error: None,
    })
}

/// A bare QUIC connection with an MQTT session whose keep-alive is off, kept alive by QUIC
/// PING frames every `interval` instead.
async fn quic_ping_idle(
    broker: SocketAddr,
    ca: &Path,
    counts: &Counts,
    interval: Duration,
    exchanges: u32,
) -> anyhow::Result<WireRow> {
    use switchboard_proto::{Packet, Version};
    let endpoint = switchboard_client::transport::quic_client_endpoint(ca, Some(interval))?;
    let conn = endpoint.connect(broker, "localhost")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut connect = switchboard_proto::Connect {
        version: Version::V5,
        client_id: "wire-quic-ping".into(),
        clean_start: true,
        keep_alive: 0,
        properties: Default::default(),
        will: None,
        username: None,
        password: None,
    };
    connect.keep_alive = 0;
    let mut out = bytes::BytesMut::new();
    Packet::Connect(Box::new(connect)).encode(Version::V5, &mut out);
    send.write_all(&out).await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), recv.read(&mut buf))
        .await
        .context("CONNACK")??;
    anyhow::ensure!(n.is_some_and(|n| n > 0), "no CONNACK");
    tokio::time::sleep(interval * 2).await;
    let (b0, p0) = counts.get();
    tokio::time::sleep(interval * exchanges).await;
    let (b1, p1) = counts.get();
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    let n = f64::from(exchanges);
    let payload = (b1 - b0) as f64 / n;
    let packets = (p1 - p0) as f64 / n;
    Ok(WireRow {
        transport: "quic (QUIC PING frame)".into(),
        payload_per_exchange: payload,
        packets_per_exchange: packets,
        wire_per_exchange: payload + packets * UDP_HEADERS,
        error: None,
    })
}

/// Idle traffic per transport, through counting relays, against an in-process broker.
pub(super) async fn wire(
    work: &Path,
    interval: Duration,
    exchanges: u32,
) -> anyhow::Result<Vec<WireRow>> {
    let certs = ensure_dev_certs(work)?;
    let local = || vec![SocketAddr::from(([127, 0, 0, 1], 0))];
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
    let h = Broker::new(cfg).start().await?;
    let a = h.addrs().clone();
    let ca = certs.ca_cert.clone();
    let mut rows = Vec::new();
    let fail = |name: &str, e: anyhow::Error| WireRow {
        transport: name.into(),
        error: Some(format!("{e:#}")),
        ..WireRow::default()
    };
    for name in ["tcp", "tls", "quic", "quic-sdk", "quic-ping"] {
        let r = match name {
            "tcp" | "tls" => {
                let upstream = if name == "tcp" { a.tcp[0] } else { a.tls[0] };
                let (addr, counts, task) = tcp_relay(upstream).await?;
                let ep = if name == "tcp" {
                    Endpoint::Tcp(addr)
                } else {
                    Endpoint::Tls(addr)
                };
                let r = sdk_idle(name, false, ep, &ca, &counts, interval, exchanges).await;
                task.abort();
                r
            }
            "quic" | "quic-sdk" => {
                let (addr, counts, task) = udp_relay(a.quic[0]).await?;
                let r = sdk_idle(
                    name,
                    name == "quic-sdk",
                    Endpoint::Quic(addr),
                    &ca,
                    &counts,
                    interval,
                    exchanges,
                )
                .await;
                task.abort();
                r
            }
            _ => {
                let (addr, counts, task) = udp_relay(a.quic[0]).await?;
                let r = quic_ping_idle(addr, &ca, &counts, interval, exchanges).await;
                task.abort();
                r
            }
        };
        rows.push(r.unwrap_or_else(|e| fail(name, e)));
    }
    h.shutdown().await;
    Ok(rows)
}
