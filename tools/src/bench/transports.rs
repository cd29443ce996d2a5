//! `switchboard bench --transports`: what each transport costs a phone and the broker.
//! Connect time (TCP/TLS/WS/WSS/QUIC handshake + CONNECT/CONNACK), broker memory per idle
//! connection, and the time to get messages flowing again after the client's address
//! changes (QUIC migration vs a new TCP connection). Switchboard only: the peers do not
//! speak QUIC.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use serde::Serialize;
use switchboard_broker::transport::certs::{DevCerts, ensure_dev_certs};
use switchboard_proto::{
    Connect, Packet, Properties, PubResponse, Publish, QoS, Subscribe, SubscriptionOptions, Version,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};

/// PINGREQ/PINGRESP exchanges on each idle QUIC connection before its aged measurement.
const AGE_PINGS: usize = 40;

/// One transport's figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TransportRow {
    pub transport: String,
    pub connect_p50_ms: f64,
    pub connect_p99_ms: f64,
    pub idle_bytes_per_conn: f64,
    /// Idle connections that answered a PINGREQ after the memory was measured.
    pub idle_alive: usize,
    /// QUIC only: bytes per idle connection measured again after [`AGE_PINGS`] exchanges
    /// on each, the state of a connection that has been up a while (quinn keeps a second
    /// 6.7 KB event-channel block once more than 32 datagrams arrived).
    pub idle_bytes_per_conn_aged: Option<f64>,
    pub error: Option<String>,
}

struct Broker {
    child: Child,
    addrs: Vec<(String, SocketAddr)>,
}

impl Broker {
    async fn start(work: &Path, certs: &DevCerts) -> anyhow::Result<Broker> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["broker", "--allow-anonymous", "--log", "error"])
            .args([
                "--tcp",
                "127.0.0.1:0",
                "--tls",
                "127.0.0.1:0",
                "--ws",
                "127.0.0.1:0",
                "--wss",
                "127.0.0.1:0",
                "--quic",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(work.join("data"))
            .arg("--certs")
            .arg(certs.ca_cert.parent().context("certs dir")?)
            .env("SWITCHBOARD__STORE__ENABLED", "false")
            .env("SWITCHBOARD__BROKER__SYS_INTERVAL", "0")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let mut addrs = Vec::new();
        while addrs.len() < 5 {
            let line = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
                .await
                .context("broker start")??
                .context("broker exited")?;
            if let Some(rest) = line.strip_prefix("switchboard: MQTT on ") {
                let (scheme, addr) = rest.split_once("://").context("address line")?;
                let addr = addr.trim_end_matches("/mqtt").parse()?;
                addrs.push((scheme.to_owned(), addr));
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Broker { child, addrs })
    }

    fn addr(&self, scheme: &str) -> anyhow::Result<SocketAddr> {
        self.addrs
            .iter()
            .find(|(s, _)| s == scheme)
            .map(|(_, a)| *a)
            .context("no such listener")
    }

    fn rss_kb(&self) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type BoxIo = Box<dyn Io>;

/// Keeps what a connection needs alive (the QUIC connection behind a stream).
struct Conn {
    io: BoxIo,
    _quic: Option<quinn::Connection>,
}

struct Clients {
    tls: Arc<rustls::ClientConfig>,
    tls_ws: Arc<rustls::ClientConfig>,
    quic: quinn::Endpoint,
}

impl Clients {
    fn new(certs: &DevCerts) -> anyhow::Result<Clients> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&certs.ca_cert)? {
            roots.add(c?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let base = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut mqtt = base.clone();
        mqtt.alpn_protocols = vec![b"mqtt".to_vec()];
        let quic_tls = quinn::crypto::rustls::QuicClientConfig::try_from(mqtt.clone())?;
        let mut quic = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic_tls));
        // Opening thousands of idle connections takes longer than quinn's default 30 s
        // idle timeout: keep the early ones alive until they are counted and pinged.
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(10)));
        client.transport_config(Arc::new(transport));
        quic.set_default_client_config(client);
        Ok(Clients {
            tls: Arc::new(mqtt),
            tls_ws: Arc::new(base),
            quic,
        })
    }

    async fn open(&self, scheme: &str, addr: SocketAddr) -> anyhow::Result<Conn> {
        self.open_from(scheme, addr, None).await
    }

    /// Like `open`, from source address `src` for TCP-based transports (QUIC always
    /// uses the one client endpoint).
    async fn open_from(
        &self,
        scheme: &str,
        addr: SocketAddr,
        src: Option<std::net::IpAddr>,
    ) -> anyhow::Result<Conn> {
        let tcp = async || {
            let sock = tokio::net::TcpSocket::new_v4()?;
            if let Some(ip) = src {
                sock.bind(SocketAddr::new(ip, 0))?;
            }
            anyhow::Ok(sock.connect(addr).await?)
        };
        let name =
            || rustls::pki_types::ServerName::try_from("localhost").map_err(anyhow::Error::from);
        let ws_request = |scheme: &str| {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut r =
                format!("{scheme}://localhost:{}/mqtt", addr.port()).into_client_request()?;
            r.headers_mut()
                .insert("sec-websocket-protocol", "mqtt".parse()?);
            anyhow::Ok(r)
        };
        Ok(match scheme {
            "tcp" => Conn {
                io: Box::new(tcp().await?),
                _quic: None,
            },
            "tls" => {
                let s = tcp().await?;
                let s = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name()?, s)
                    .await?;
                Conn {
                    io: Box::new(s),
                    _quic: None,
                }
            }
            "ws" => {
                let s = tcp().await?;
                let (ws, _) = tokio_tungstenite::client_async(ws_request("ws")?, s).await?;
                Conn {
                    io: Box::new(switchboard_broker::transport::ws::WsStream::new(ws)),
                    _quic: None,
                }
            }
            "wss" => {
                let s = tcp().await?;
                let s = tokio_rustls::TlsConnector::from(self.tls_ws.clone())
                    .connect(name()?, s)
                    .await?;
                let (ws, _) = tokio_tungstenite::client_async(ws_request("wss")?, s).await?;
                Conn {
                    io: Box::new(switchboard_broker::transport::ws::WsStream::new(ws)),
                    _quic: None,
                }
            }
            "quic" => {
                let conn = self.quic.connect(addr, "localhost")?.await?;
                let (send, recv) = conn.open_bi().await?;
                Conn {
                    io: Box::new(tokio::io::join(recv, send)),
                    _quic: Some(conn),
                }
            }
            other => bail!("unknown transport {other}"),
        })
    }
}

async fn mqtt_connect(io: &mut BoxIo, id: &str) -> anyhow::Result<()> {
    let mut b = BytesMut::new();
    Packet::Connect(Box::new(Connect {
        version: Version::V5,
        client_id: id.to_owned(),
        clean_start: true,
        keep_alive: 600,
        properties: Properties::default(),
        will: None,
        username: None,
        password: None,
    }))
    .encode(Version::V5, &mut b);
    io.write_all(&b).await?;
    io.flush().await?;
    match read(io, &mut BytesMut::new()).await? {
        Packet::ConnAck(a) if !a.code.is_error() => Ok(()),
        other => bail!("connect refused: {other:?}"),
    }
}

async fn read(io: &mut BoxIo, rb: &mut BytesMut) -> anyhow::Result<Packet> {
    loop {
        if let Some(p) = Packet::read(rb, Version::V5, usize::MAX)? {
            return Ok(p);
        }
        if tokio::time::timeout(Duration::from_secs(10), io.read_buf(rb)).await?? == 0 {
            bail!("closed");
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * p) as usize)
        .copied()
        .unwrap_or(0.0)
}

/// Runs the transport benchmark; `idle` connections per transport for memory.
pub async fn run(work: &Path, idle: usize) -> anyhow::Result<(Vec<TransportRow>, String)> {
    let certs = ensure_dev_certs(&work.join("certs"))?;
    let clients = Clients::new(&certs)?;
    let mut rows = Vec::new();
    for (index, scheme) in ["tcp", "tls", "ws", "wss", "quic"].into_iter().enumerate() {
        let mut row = TransportRow {
            transport: scheme.into(),
            ..TransportRow::default()
        };
        // A fresh broker per transport: memory freed by one phase must not flatter the next.
        let broker = Broker::start(work, &certs).await?;
        let result: anyhow::Result<()> = async {
            let addr = broker.addr(scheme)?;
            let mut times = Vec::new();
            for i in 0..200 {
                let t = Instant::now();
                let mut c = clients.open(scheme, addr).await?;
                mqtt_connect(&mut c.io, &format!("t-{scheme}-{i}")).await?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            row.connect_p50_ms = pct(&mut times, 0.5);
            row.connect_p99_ms = pct(&mut times, 0.99);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = broker.rss_kb();
            let mut held = Vec::with_capacity(idle);
            for i in 0..idle {
                // Spread over source addresses (the broker caps connections per address).
                let src = super::load::idle_source(250 + index as u8, i);
                let mut c = clients.open_from(scheme, addr, Some(src)).await?;
                mqtt_connect(&mut c.io, &format!("idle-{scheme}-{i}")).await?;
                held.push(c);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            row.idle_bytes_per_conn =
                (broker.rss_kb().saturating_sub(before)) as f64 * 1024.0 / idle as f64;
            if scheme == "quic" {
                for c in &mut held {
                    let mut rb = BytesMut::new();
                    for _ in 0..AGE_PINGS {
                        c.io.write_all(&encode(&Packet::PingReq)).await?;
                        read(&mut c.io, &mut rb).await?;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                row.idle_bytes_per_conn_aged =
                    Some((broker.rss_kb().saturating_sub(before)) as f64 * 1024.0 / idle as f64);
            }
            // Every measured connection must still be served.
            for c in &mut held {
                c.io.write_all(&encode(&Packet::PingReq)).await?;
                let mut rb = BytesMut::new();
                if let Ok(Packet::PingResp) = read(&mut c.io, &mut rb).await {
                    row.idle_alive += 1;
                }
            }
            drop(held);
            Ok(())
        }
        .await;
        row.error = result.err().map(|e| format!("{e:#}"));
        println!(
            "transport {:5} connect p50 {:6.2} ms p99 {:6.2} ms  idle {:8.0} B/conn ({} alive){}",
            row.transport,
            row.connect_p50_ms,
            row.connect_p99_ms,
            row.idle_bytes_per_conn,
            row.idle_alive,
            row.error
                .as_ref()
                .map(|e| format!("  ERROR {e}"))
                .unwrap_or_default()
        );
        if let Some(aged) = row.idle_bytes_per_conn_aged {
            println!(
                "transport {:5} idle {aged:8.0} B/conn after {AGE_PINGS} PINGREQ/PINGRESP each",
                row.transport
            );
        }
        rows.push(row);
        drop(broker);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let broker = Broker::start(work, &certs).await?;
    let migration = migration(&broker, &clients)
        .await
        .unwrap_or_else(|e| format!("migration run failed: {e:#}"));
    println!("{migration}");
    Ok((rows, migration))
}

/// Time from an address change to the next message delivered: QUIC migrates the
/// connection; TCP needs a new connection, CONNECT and SUBSCRIBE.
async fn migration(broker: &Broker, clients: &Clients) -> anyhow::Result<String> {
    let sub = |id: &str| {
        Packet::Subscribe(Subscribe {
            pkid: 1,
            properties: Properties::default(),
            filters: vec![(
                format!("mig/{id}"),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            )],
        })
    };
    let mut publisher = clients.open("tcp", broker.addr("tcp")?).await?;
    mqtt_connect(&mut publisher.io, "mig-pub").await?;
    let mut pb = BytesMut::new();
    let mut next = 1u16;
    let mut publish = async |io: &mut BoxIo, id: &str| -> anyhow::Result<()> {
        let mut b = BytesMut::new();
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: format!("mig/{id}"),
            pkid: next,
            properties: Properties::default(),
            payload: bytes::Bytes::from_static(b"x"),
        })
        .encode(Version::V5, &mut b);
        next += 1;
        io.write_all(&b).await?;
        let _ = read(io, &mut pb).await?;
        Ok(())
    };
    async fn receive(io: &mut BoxIo, rb: &mut BytesMut) -> anyhow::Result<()> {
        loop {
            match read(io, rb).await? {
                Packet::Publish(p) => {
                    let mut b = BytesMut::new();
                    Packet::PubAck(PubResponse::new(p.pkid)).encode(Version::V5, &mut b);
                    io.write_all(&b).await?;
                    return Ok(());
                }
                _ => continue,
            }
        }
    }
    let mut quic_ms = Vec::new();
    let mut tcp_ms = Vec::new();
    for round in 0..20 {
        // QUIC: rebind the client's socket (new source port), then a message must arrive.
        let mut q = clients.open("quic", broker.addr("quic")?).await?;
        let qid = format!("q{round}");
        mqtt_connect(&mut q.io, &qid).await?;
        q.io.write_all(&encode(&sub(&qid))).await?;
        let mut rb = BytesMut::new();
        let _ = read(&mut q.io, &mut rb).await?;
        let t = Instant::now();
        clients
            .quic
            .rebind(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
        // The client speaks first on the new path, as a phone does after a network change.
        q.io.write_all(&encode(&Packet::PingReq)).await?;
        publish(&mut publisher.io, &qid).await?;
        receive(&mut q.io, &mut rb).await?;
        quic_ms.push(t.elapsed().as_secs_f64() * 1000.0);

        // TCP: the old connection is gone with the old address; reconnect and resubscribe.
        let tid = format!("t{round}");
        let t = Instant::now();
        let mut c = clients.open("tcp", broker.addr("tcp")?).await?;
        mqtt_connect(&mut c.io, &tid).await?;
        c.io.write_all(&encode(&sub(&tid))).await?;
        let mut rb = BytesMut::new();
        let _ = read(&mut c.io, &mut rb).await?;
        publish(&mut publisher.io, &tid).await?;
        receive(&mut c.io, &mut rb).await?;
        tcp_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(format!(
        "address change → next message: QUIC migration p50 {:.2} ms (no new CONNECT), TCP reconnect + CONNECT + SUBSCRIBE p50 {:.2} ms (loopback; on a phone network each extra round trip adds its RTT: TCP+MQTT needs 3, TLS 4-5, QUIC migration 0-1)",
        pct(&mut quic_ms, 0.5),
        pct(&mut tcp_ms, 0.5)
    ))
}

fn encode(p: &Packet) -> BytesMut {
    let mut b = BytesMut::new();
    p.encode(Version::V5, &mut b);
    b
}

/// The markdown table of the transport benchmark.
pub fn markdown(rows: &[TransportRow], migration: &str, idle: usize) -> String {
    let mut md = format!(
        "| transport | connect p50 ms | connect p99 ms | broker bytes per idle connection ({idle}) | alive after |\n|---|---|---|---|---|\n"
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.0} | {} |{}\n",
            r.transport,
            r.connect_p50_ms,
            r.connect_p99_ms,
            r.idle_bytes_per_conn,
            r.idle_alive,
            r.error
                .as_ref()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default()
        ));
    }
    for r in rows {
        if let Some(aged) = r.idle_bytes_per_conn_aged {
            md.push_str(&format!(
                "\n{}: {aged:.0} B per idle connection after {AGE_PINGS} PINGREQ/PINGRESP on \
                 each (a connection that has been up a while)\n",
                r.transport
            ));
        }
    }
    md.push_str(&format!("\n{migration}\n"));
    md
}
