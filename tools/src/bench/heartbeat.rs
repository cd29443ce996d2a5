//! `switchboard bench --heartbeat`: the SDK's adaptive heartbeat against WeChat Mars'
//! (today's baseline, [`MarsPolicy`]) in one run.
//!
//! 1. Simulation, in virtual time (no sockets, deterministic): each carrier NAT timeout for a
//!    day, a phone switching networks, a NAT whose timeout changes; probes until settled,
//!    settled interval ÷ T, radio wake-ups per hour ÷ the optimum (3600 / T), links lost.
//!    Ours runs twice: cold (nothing known) and warm (a new device on a network where five
//!    earlier devices settled and reported to the broker's hint table, `switchboard_broker::
//!    hints`, whose hint it gets).
//! 2. Bytes on the wire while idle: the SDK idles over TCP, TLS and QUIC (and a bare QUIC
//!    connection kept by QUIC PING frames instead of MQTT PINGREQ) through a counting relay
//!    on loopback; bytes per ping exchange are measured, per-hour figures computed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use switchboard_broker::hints::{HintConfig, HintTable};
use switchboard_broker::transport::certs::ensure_dev_certs;
use switchboard_broker::{Broker, BrokerConfig, Listeners};
use switchboard_client::heartbeat::sim::{self, CARRIER_TIMEOUTS_MIN, Costs, Outcome};
use switchboard_client::heartbeat::{
    AdaptivePolicy, HeartbeatConfig, MarsConfig, MarsPolicy, Policy,
};
use switchboard_client::{Client, Config, Endpoint, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One policy through one simulated scenario.
#[derive(Debug, Clone, Serialize)]
pub struct SimRow {
    pub scenario: String,
    pub policy: &'static str,
    /// NAT timeout of the first network, minutes.
    pub nat_min: f64,
    pub probes_to_settle: Option<u32>,
    pub hours_to_settle: Option<f64>,
    pub settled_ratio: Option<f64>,
    pub final_ratio: f64,
    pub wakeups_vs_optimum: f64,
    pub lost_per_day: f64,
    pub probe_connections: u32,
    pub networks: u32,
}

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

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub simulation: Vec<SimRow>,
    pub wire: Vec<WireRow>,
    /// Keep-alive interval of the wire measurement, and exchanges measured per transport.
    pub wire_interval_ms: u64,
    pub wire_exchanges: u32,
}

fn row(scenario: &sim::Scenario, policy: &'static str, o: &Outcome) -> SimRow {
    SimRow {
        scenario: scenario.name.clone(),
        policy,
        nat_min: scenario
            .segments
            .first()
            .map_or(0.0, |s| s.nat.as_secs_f64() / 60.0),
        probes_to_settle: o.probes_to_settle,
        hours_to_settle: o.time_to_settle.map(|t| t.as_secs_f64() / 3600.0),
        settled_ratio: o.settled_ratio,
        final_ratio: o.final_ratio,
        wakeups_vs_optimum: o.wakeups_vs_optimum,
        lost_per_day: o.lost_per_day,
        probe_connections: o.probe_connections,
        networks: o.networks,
    }
}

/// Earlier devices per network in the warm runs, and their first intervals (apps tune
/// theirs differently, so their searches, and what they prove, differ).
const EARLIER_INITIAL_S: [u64; 5] = [60, 75, 90, 105, 120];

/// The hint a new device gets on each network of `s`: earlier devices learn each network
/// cold (alone, a day at its first timeout), report what they proved to the broker's hint
/// table from one address prefix, and the table answers.
fn warm_hints(s: &sim::Scenario) -> Vec<(String, Duration)> {
    let mut table = HintTable::new(HintConfig::default());
    let now = std::time::Instant::now();
    let peer = std::net::IpAddr::from([198, 51, 100, 7]);
    let mut hints: Vec<(String, Duration)> = Vec::new();
    for seg in &s.segments {
        if hints.iter().any(|(n, _)| *n == seg.network) {
            continue;
        }
        for (i, initial) in EARLIER_INITIAL_S.iter().enumerate() {
            let mut earlier = AdaptivePolicy::new(HeartbeatConfig {
                initial: Duration::from_secs(*initial),
                ..HeartbeatConfig::default()
            });
            let alone = sim::Scenario {
                name: seg.network.clone(),
                segments: vec![sim::Segment {
                    start: Duration::ZERO,
                    network: seg.network.clone(),
                    nat: seg.nat,
                }],
                duration: Duration::from_secs(86_400),
                measure_last: Duration::from_secs(3600),
            };
            sim::run(&mut earlier, &alone, Costs::default());
            if let Some(proven) = earlier.proven() {
                let _ = table.report(now, &seg.network, peer, &format!("device-{i}"), proven);
            }
        }
        if let Ok(Some(h)) = table.hint(now, &seg.network, peer) {
            hints.push((seg.network.clone(), h));
        }
    }
    hints
}

/// Both policies through every scenario.
pub fn simulate() -> Vec<SimRow> {
    let mut rows = Vec::new();
    for s in sim::scenarios() {
        let mut mars = MarsPolicy::new(MarsConfig::default());
        let mut ours = AdaptivePolicy::new(HeartbeatConfig::default());
        let mut warm = AdaptivePolicy::new(HeartbeatConfig::default());
        for (network, hint) in warm_hints(&s) {
            warm.set_hint(&network, hint);
        }
        let mut in_band = AdaptivePolicy::new(HeartbeatConfig::default());
        in_band.set_in_band(true);
        let policies: [(&'static str, &mut dyn Policy); 4] = [
            ("mars", &mut mars),
            ("ours", &mut ours),
            ("ours-warm", &mut warm),
            ("ours-in-band", &mut in_band),
        ];
        for (name, p) in policies {
            let o = sim::run(p, &s, Costs::default());
            rows.push(row(&s, name, &o));
        }
    }
    rows
}

/// NAT timeouts in [`dense_cold`].
const DENSE: u32 = 101;

/// Probes the cold search needs over [`DENSE`] NAT timeouts spread evenly in log space
/// from 2 to 45 minutes, one simulated day each: (median, mean, min, max). The table of
/// carrier timeouts is nine points; this shows the search is not tuned to them.
fn dense_cold() -> (u32, f64, u32, u32) {
    let mut probes: Vec<u32> = (0..DENSE)
        .map(|i| {
            let t = 120.0 * 22.5f64.powf(f64::from(i) / f64::from(DENSE - 1));
            let s = sim::Scenario {
                name: format!("nat-{t:.0}s"),
                segments: vec![sim::Segment {
                    start: Duration::ZERO,
                    network: "carrier".into(),
                    nat: Duration::from_secs_f64(t),
                }],
                duration: Duration::from_secs(86_400),
                measure_last: Duration::from_secs(3600),
            };
            let mut p = AdaptivePolicy::new(HeartbeatConfig::default());
            sim::run(&mut p, &s, Costs::default())
                .probes_to_settle
                .unwrap_or(u32::MAX)
        })
        .collect();
    probes.sort_unstable();
    let mean = probes.iter().map(|&p| f64::from(p)).sum::<f64>() / probes.len() as f64;
    (
        probes[probes.len() / 2],
        mean,
        probes[0],
        probes[probes.len() - 1],
    )
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

/// Measures one SDK link idling at `interval` for `exchanges` pings.
async fn sdk_idle(
    name: &str,
    endpoint: Endpoint,
    ca: &Path,
    counts: &Counts,
    interval: Duration,
    exchanges: u32,
) -> anyhow::Result<WireRow> {
    let mut cfg = Config::new(&format!("wire-{name}"), vec![endpoint]);
    cfg.ca_cert = Some(ca.to_path_buf());
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
    let wire = if name == "quic" {
        payload + packets * UDP_HEADERS
    } else {
        payload + (packets + 1.0) * TCP_HEADERS
    };
    Ok(WireRow {
        transport: format!("{name} (MQTT PINGREQ)"),
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
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use switchboard_proto::{Packet, Version};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"mqtt".to_vec()];
    let mut client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls)?,
    ));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(interval));
    client.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(client);
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
pub async fn wire(work: &Path, interval: Duration, exchanges: u32) -> anyhow::Result<Vec<WireRow>> {
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
    for name in ["tcp", "tls", "quic", "quic-ping"] {
        let r = match name {
            "tcp" | "tls" => {
                let upstream = if name == "tcp" { a.tcp[0] } else { a.tls[0] };
                let (addr, counts, task) = tcp_relay(upstream).await?;
                let ep = if name == "tcp" {
                    Endpoint::Tcp(addr)
                } else {
                    Endpoint::Tls(addr)
                };
                let r = sdk_idle(name, ep, &ca, &counts, interval, exchanges).await;
                task.abort();
                r
            }
            "quic" => {
                let (addr, counts, task) = udp_relay(a.quic[0]).await?;
                let r = sdk_idle(
                    name,
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

/// Runs everything and returns the report.
pub async fn run(work: &Path) -> anyhow::Result<Report> {
    let interval = Duration::from_millis(500);
    let exchanges = 40;
    Ok(Report {
        simulation: simulate(),
        wire: wire(work, interval, exchanges).await?,
        wire_interval_ms: interval.as_millis() as u64,
        wire_exchanges: exchanges,
    })
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "—".into(), |v| v.to_string())
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.2}"))
}

/// The markdown report.
pub fn markdown(r: &Report) -> String {
    let mut md = String::from(
        "### Simulation (virtual time): Mars (today's baseline) / ours cold / ours warm / ours in band\n\n\
         \"Cold\": nothing known about the network. \"Warm\": the broker's hint from five earlier \
         devices that settled there (confirmed by two probes before use). \"In band\": the fallback \
         when the broker refuses probe connections (the cold search on the link itself).\n\n\
         | scenario | probes to settle | settled ÷ T | wake-ups/h ÷ optimum | links lost / day | probe connections (cold / warm) | hours to settle (cold / warm) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let rows: Vec<[&SimRow; 4]> = r
        .simulation
        .chunks(4)
        .filter_map(|c| match c {
            [m, o, w, b] => Some([m, o, w, b]),
            _ => None,
        })
        .collect();
    let hours = |v: Option<f64>| v.map_or_else(|| "—".into(), |h| format!("{h:.1}"));
    for [m, o, w, b] in &rows {
        md.push_str(&format!(
            "| {} | {} / {} / {} / {} | {} / {} / {} / {} | {:.2} / {:.2} / {:.2} / {:.2} | {:.1} / {:.1} / {:.1} / {:.1} | {} / {} | {} / {} |\n",
            o.scenario,
            opt(m.probes_to_settle),
            opt(o.probes_to_settle),
            opt(w.probes_to_settle),
            opt(b.probes_to_settle),
            ratio(m.settled_ratio),
            ratio(o.settled_ratio),
            ratio(w.settled_ratio),
            ratio(b.settled_ratio),
            m.wakeups_vs_optimum,
            o.wakeups_vs_optimum,
            w.wakeups_vs_optimum,
            b.wakeups_vs_optimum,
            m.lost_per_day,
            o.lost_per_day,
            w.lost_per_day,
            b.lost_per_day,
            o.probe_connections,
            w.probe_connections,
            hours(o.hours_to_settle),
            hours(w.hours_to_settle),
        ));
    }
    let carrier: Vec<&[&SimRow; 4]> = rows
        .iter()
        .filter(|[_, o, _, _]| {
            CARRIER_TIMEOUTS_MIN
                .iter()
                .any(|m| o.scenario == format!("nat-{m}min"))
        })
        .collect();
    for (label, i) in [("cold", 1), ("warm", 2)] {
        let mut probes: Vec<u32> = carrier
            .iter()
            .map(|row| row[i].probes_to_settle.unwrap_or(u32::MAX))
            .collect();
        probes.sort_unstable();
        let worst_wake = carrier
            .iter()
            .map(|row| row[i].wakeups_vs_optimum)
            .fold(0.0, f64::max);
        let worst_ratio = carrier
            .iter()
            .map(|row| row[i].settled_ratio.unwrap_or(0.0))
            .fold(f64::MAX, f64::min);
        md.push_str(&format!(
            "\nOurs {label} over the carrier timeouts: median probes to settle {} (range {}–{}), \
             lowest settled ÷ T {:.2}, highest wake-ups ÷ optimum {:.2}, links lost {}.",
            probes.get(probes.len() / 2).copied().unwrap_or(0),
            probes.first().copied().unwrap_or(0),
            probes.last().copied().unwrap_or(0),
            worst_ratio,
            worst_wake,
            carrier.iter().map(|row| row[i].lost_per_day).sum::<f64>(),
        ));
    }
    let (median, mean, lo, hi) = dense_cold();
    md.push_str(&format!(
        "\nOurs cold over {DENSE} timeouts log-spaced from 2 to 45 min (not only the table's): \
         median probes to settle {median}, mean {mean:.2}, range {lo}–{hi}."
    ));
    md.push('\n');
    let pairs: Vec<(&SimRow, &SimRow)> = rows.iter().map(|[m, o, _, _]| (*m, *o)).collect();
    // Ours' settled intervals at a 5- and a 28-minute NAT: where the per-hour figures apply.
    let settled = |m: u64| {
        pairs
            .iter()
            .find(|(_, o)| o.scenario == format!("nat-{m}min"))
            .map_or(m as f64 * 60.0, |(_, o)| o.final_ratio * o.nat_min * 60.0)
    };
    let (s5, s28) = (settled(5), settled(28));
    md.push_str(&format!(
        "\n### Idle bytes per keep-alive exchange (loopback, {} ms interval, {} exchanges)\n\n\
         | transport | payload bytes (measured) | packets (measured) | on the wire (computed) | bytes/hour at {s5:.0} s (5-min NAT) | at {s28:.0} s (28-min NAT) |\n\
         |---|---|---|---|---|---|\n",
        r.wire_interval_ms, r.wire_exchanges
    ));
    for w in &r.wire {
        match &w.error {
            Some(e) => md.push_str(&format!("| {} | error: {e} | | | | |\n", w.transport)),
            None => md.push_str(&format!(
                "| {} | {:.1} | {:.2} | {:.0} | {:.0} | {:.0} |\n",
                w.transport,
                w.payload_per_exchange,
                w.packets_per_exchange,
                w.wire_per_exchange,
                w.wire_per_exchange * 3600.0 / s5,
                w.wire_per_exchange * 3600.0 / s28,
            )),
        }
    }
    md
}
