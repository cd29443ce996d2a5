//! The load generator: raw MQTT 3.1.1 over TCP with pre-encoded packets and batched
//! writes, so that it costs the machine far less than the broker it measures.
//!
//! Publishers stamp each payload with the send time; subscribers parse only what they need
//! (fixed header, packet id, the stamp) and sample latencies. Every loop ends at its
//! deadline.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, BytesMut};
use switchboard_proto::{
    Connect, Packet, Properties, PubResponse, QoS, Subscribe, SubscriptionOptions, Version,
    check_frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use super::service_conn::read_packet;

/// Publishes a QoS 1 publisher may have unacknowledged.
const WINDOW: usize = 100;
/// Packets per write.
const BATCH: usize = 64;
/// Latency samples kept per subscriber.
const MAX_SAMPLES: usize = 200_000;

/// Who publishes to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Publisher i → topic i → subscriber i.
    P2p,
    /// Every publisher → one topic → every subscriber.
    FanOut,
    /// Every publisher → one topic → one shared-subscription group of the subscribers.
    FanIn,
}

/// One load run.
#[derive(Debug, Clone)]
pub struct Load {
    pub addr: SocketAddr,
    pub shape: Shape,
    pub publishers: usize,
    pub subscribers: usize,
    pub qos: QoS,
    pub payload: usize,
    /// Messages per second per publisher; `None`: as fast as the broker takes them.
    pub rate: Option<u32>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Subscribers keep persistent sessions (clean session off).
    pub persistent: bool,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub sent: u64,
    pub received: u64,
    /// Received per second inside the measurement window.
    pub throughput: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Publish → acknowledgement (QoS 1), p99.
    pub ack_p99_us: f64,
}

struct Counters {
    received_in_window: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
}

/// Connects with MQTT 3.1.1 (optionally from a given source address).
pub async fn connect(
    addr: SocketAddr,
    id: &str,
    clean: bool,
    source: Option<IpAddr>,
) -> anyhow::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let mut s = sock
        .connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    let mut buf = BytesMut::new();
    Packet::Connect(Box::new(Connect {
        version: Version::V3_1_1,
        client_id: id.to_owned(),
        clean_start: clean,
        // Longer than any run; rumqttd refuses 0.
        keep_alive: 300,
        properties: Properties::default(),
        will: None,
        username: None,
        password: None,
    }))
    .encode(Version::V3_1_1, &mut buf);
    s.write_all(&buf).await?;
    let mut rb = BytesMut::new();
    match read_packet(&mut s, &mut rb, Version::V3_1_1).await? {
        Packet::ConnAck(a) if !a.code.is_error() => Ok(s),
        other => bail!("connect refused: {other:?}"),
    }
}

async fn subscribe(s: &mut TcpStream, filter: &str, qos: QoS) -> anyhow::Result<()> {
    let mut buf = BytesMut::new();
    Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(
            filter.to_owned(),
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
        )],
    })
    .encode(Version::V3_1_1, &mut buf);
    s.write_all(&buf).await?;
    let mut rb = BytesMut::new();
    loop {
        if let Packet::SubAck(a) = read_packet(s, &mut rb, Version::V3_1_1).await? {
            if a.codes.iter().any(|c| c.is_error()) {
                bail!("subscription to {filter} refused");
            }
            return Ok(());
        }
    }
}

/// Runs `load` and returns what the subscribers saw.
pub async fn run(load: &Load, tag: &str) -> anyhow::Result<Outcome> {
    run_split(load, load.addr, tag).await
}

/// [`run`] with the subscribers on `sub_addr` (another cluster node) and the publishers on
/// `load.addr`.
pub async fn run_split(load: &Load, sub_addr: SocketAddr, tag: &str) -> anyhow::Result<Outcome> {
    run_inner(load, sub_addr, tag, WINDOW, std::future::ready(())).await
}

/// [`run_split`], the publishers starting only once `ready` (awaited after every
/// subscriber's SUBACK) is done: the cluster bench waits there until the publishing node
/// knows the subscribing node's filters.
pub async fn run_split_when(
    load: &Load,
    sub_addr: SocketAddr,
    tag: &str,
    ready: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    run_inner(load, sub_addr, tag, WINDOW, ready).await
}

/// [`run`] with at most `window` unacknowledged publishes per QoS 1/2 publisher (the IM
/// bench's peer: the same messages in flight as its senders).
pub async fn run_windowed(load: &Load, tag: &str, window: usize) -> anyhow::Result<Outcome> {
    run_inner(load, load.addr, tag, window.max(1), std::future::ready(())).await
}

async fn run_inner(
    load: &Load,
    sub_addr: SocketAddr,
    tag: &str,
    window: usize,
    ready: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    let epoch = Instant::now();
    let counters = Arc::new(Counters {
        received_in_window: AtomicU64::new(0),
        received: AtomicU64::new(0),
        sent: AtomicU64::new(0),
    });
    let qos = load.qos;
    let topic_of = |i: usize| match load.shape {
        Shape::P2p => format!("bench/{tag}/{i}"),
        Shape::FanOut | Shape::FanIn => format!("bench/{tag}/all"),
    };
    let filter_of = |i: usize| match load.shape {
        Shape::P2p => format!("bench/{tag}/{i}"),
        Shape::FanOut => format!("bench/{tag}/all"),
        Shape::FanIn => format!("$share/g/bench/{tag}/all"),
    };
    let mut subscribed = Vec::new();
    for i in 0..load.subscribers {
        let id = format!("{tag}-s{i}");
        let mut s = connect(sub_addr, &id, !load.persistent, None).await?;
        subscribe(&mut s, &filter_of(i), qos).await?;
        subscribed.push(s);
    }
    ready.await;
    let start = Instant::now() + Duration::from_millis(300);
    let window_start = start + load.warmup;
    let end = window_start + load.duration;
    let mut subs = Vec::new();
    for s in subscribed {
        let c = counters.clone();
        subs.push(tokio::spawn(subscriber(s, epoch, window_start, end, c)));
    }
    let mut pubs = Vec::new();
    for i in 0..load.publishers {
        let s = connect(load.addr, &format!("{tag}-p{i}"), true, None).await?;
        let topic = topic_of(i);
        let c = counters.clone();
        let (payload, rate) = (load.payload.max(8), load.rate);
        pubs.push(tokio::spawn(publisher(
            s, topic, qos, payload, rate, window, epoch, start, end, c,
        )));
    }
    let mut ack_lat = Vec::new();
    for p in pubs {
        ack_lat.extend(p.await.context("publisher task")??);
    }
    let mut lat = Vec::new();
    for s in subs {
        lat.extend(s.await.context("subscriber task")??);
    }
    lat.sort_unstable();
    ack_lat.sort_unstable();
    let pct = |v: &[u32], p: f64| {
        if v.is_empty() {
            0.0
        } else {
            f64::from(v[((v.len() - 1) as f64 * p) as usize])
        }
    };
    Ok(Outcome {
        sent: counters.sent.load(Ordering::Relaxed),
        received: counters.received.load(Ordering::Relaxed),
        throughput: counters.received_in_window.load(Ordering::Relaxed) as f64
            / load.duration.as_secs_f64(),
        p50_us: pct(&lat, 0.5),
        p99_us: pct(&lat, 0.99),
        ack_p99_us: pct(&ack_lat, 0.99),
    })
}

/// Encodes one PUBLISH (3.1.1) whose payload starts with the send time in nanoseconds.
fn put_publish(buf: &mut BytesMut, topic: &str, qos: QoS, pkid: u16, payload: usize, stamp: u64) {
    let body = 2 + topic.len() + payload + if qos == QoS::AtMostOnce { 0 } else { 2 };
    buf.put_u8(0x30 | ((qos as u8) << 1));
    let mut n = body;
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        buf.put_u8(b);
        if n == 0 {
            break;
        }
    }
    buf.put_u16(topic.len() as u16);
    buf.put_slice(topic.as_bytes());
    if qos != QoS::AtMostOnce {
        buf.put_u16(pkid);
    }
    buf.put_u64(stamp);
    buf.put_bytes(0, payload - 8);
}

#[allow(clippy::too_many_arguments)]
async fn publisher(
    stream: TcpStream,
    topic: String,
    qos: QoS,
    payload: usize,
    rate: Option<u32>,
    window_size: usize,
    epoch: Instant,
    start: Instant,
    end: Instant,
    c: Arc<Counters>,
) -> anyhow::Result<Vec<u32>> {
    let (mut rd, wr) = stream.into_split();
    // Shared with the reader, which answers PUBREC with PUBREL.
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    let window = Arc::new(Semaphore::new(if qos == QoS::AtMostOnce {
        0
    } else {
        window_size
    }));
    let sent_at: Arc<slots::Slots> = Arc::new(slots::Slots::new());
    // Acknowledgements (QoS 1/2) come back on the read half.
    let reader = {
        let window = window.clone();
        let sent_at = sent_at.clone();
        let wr = wr.clone();
        tokio::spawn(async move {
            let mut rb = BytesMut::with_capacity(64 * 1024);
            let mut lat = Vec::new();
            let mut out = BytesMut::new();
            loop {
                let n = tokio::time::timeout_at(end.into(), rd.read_buf(&mut rb)).await;
                let Ok(Ok(n)) = n else { return lat };
                if n == 0 {
                    return lat;
                }
                while let Ok(Some(f)) = check_frame(&rb, usize::MAX) {
                    let kind = f.header >> 4;
                    let pkid = if f.body_len >= 2 {
                        u16::from_be_bytes([rb[f.header_len], rb[f.header_len + 1]])
                    } else {
                        0
                    };
                    rb.advance(f.len());
                    match kind {
                        4 | 7 => {
                            if let Some(t) = sent_at.take(pkid)
                                && lat.len() < MAX_SAMPLES
                            {
                                lat.push(epoch.elapsed().as_micros().saturating_sub(t) as u32);
                            }
                            window.add_permits(1);
                        }
                        5 => {
                            Packet::PubRel(PubResponse::new(pkid)).encode(Version::V3_1_1, &mut out)
                        }
                        _ => {}
                    }
                }
                if !out.is_empty() {
                    if wr.lock().await.write_all(&out).await.is_err() {
                        return lat;
                    }
                    out.clear();
                }
            }
        })
    };
    tokio::time::sleep_until(start.into()).await;
    let mut buf = BytesMut::with_capacity(BATCH * (payload + topic.len() + 8));
    let mut pkid: u16 = 0;
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / f64::from(r.max(1))));
    let mut next_send = Instant::now();
    while Instant::now() < end {
        buf.clear();
        // A batch never waits for the acknowledgement of a publish it has not written.
        let batch = if interval.is_some() {
            1
        } else {
            BATCH.min(window_size)
        };
        for _ in 0..batch {
            if qos != QoS::AtMostOnce {
                let Ok(Ok(p)) = tokio::time::timeout_at(end.into(), window.acquire()).await else {
                    break;
                };
                p.forget();
                pkid = pkid % 60_000 + 1;
            }
            let stamp = epoch.elapsed().as_nanos() as u64;
            if qos != QoS::AtMostOnce {
                sent_at.put(pkid, (stamp / 1000) as u128);
            }
            put_publish(&mut buf, &topic, qos, pkid, payload, stamp);
            c.sent.fetch_add(1, Ordering::Relaxed);
        }
        if buf.is_empty() {
            break;
        }
        let write = async { wr.lock().await.write_all(&buf).await };
        if !matches!(tokio::time::timeout_at(end.into(), write).await, Ok(Ok(()))) {
            break;
        }
        if let Some(iv) = interval {
            next_send += iv;
            tokio::time::sleep_until(next_send.into()).await;
        }
    }
    Ok(reader.await.unwrap_or_default())
}

async fn subscriber(
    stream: TcpStream,
    epoch: Instant,
    window_start: Instant,
    end: Instant,
    c: Arc<Counters>,
) -> anyhow::Result<Vec<u32>> {
    let (mut rd, mut wr) = stream.into_split();
    let mut rb = BytesMut::with_capacity(256 * 1024);
    let mut acks = BytesMut::new();
    let mut lat = Vec::new();
    let grace = end + Duration::from_millis(500);
    loop {
        let Ok(r) = tokio::time::timeout_at(grace.into(), rd.read_buf(&mut rb)).await else {
            break;
        };
        if r? == 0 {
            break;
        }
        let now = Instant::now();
        let now_ns = epoch.elapsed().as_nanos() as u64;
        while let Some(f) = check_frame(&rb, usize::MAX)? {
            if f.header >> 4 == 6 {
                // PUBREL → PUBCOMP
                let body = &rb[f.header_len..f.len()];
                let pkid = u16::from_be_bytes([body[0], body[1]]);
                Packet::PubComp(PubResponse::new(pkid)).encode(Version::V3_1_1, &mut acks);
            }
            if f.header >> 4 == 3 {
                let q = (f.header >> 1) & 3;
                let body = &rb[f.header_len..f.len()];
                let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let mut at = 2 + tlen;
                if q > 0 {
                    let pkid = u16::from_be_bytes([body[at], body[at + 1]]);
                    at += 2;
                    let r = PubResponse::new(pkid);
                    let ack = if q == 1 {
                        Packet::PubAck(r)
                    } else {
                        Packet::PubRec(r)
                    };
                    ack.encode(Version::V3_1_1, &mut acks);
                }
                if body.len() >= at + 8 {
                    let stamp = u64::from_be_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
                    if lat.len() < MAX_SAMPLES {
                        lat.push((now_ns.saturating_sub(stamp) / 1000) as u32);
                    }
                }
                c.received.fetch_add(1, Ordering::Relaxed);
                if now >= window_start && now < end {
                    c.received_in_window.fetch_add(1, Ordering::Relaxed);
                }
            }
            rb.advance(f.len());
        }
        if !acks.is_empty() {
            wr.write_all(&acks).await?;
            acks.clear();
        }
    }
    Ok(lat)
}

/// Opens idle connections `from..from + n` (client ids and source addresses follow the
/// index) spread over 127.`net`.x.y source addresses; returns them.
/// Each run should use its own `net`: closed connections linger in TIME_WAIT and hold
/// their source ports for a minute.
pub async fn idle_connections(
    addr: SocketAddr,
    from: usize,
    n: usize,
    tag: &str,
    net: u8,
) -> anyhow::Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    for i in from..from + n {
        out.push(
            connect(
                addr,
                &format!("{tag}-idle-{i}"),
                true,
                Some(idle_source(net, i)),
            )
            .await?,
        );
    }
    Ok(out)
}

/// Source address of idle connection `i`: a new one every 500 connections, so that the
/// broker's default per-address cap (1,000) is never what limits the run.
pub fn idle_source(net: u8, i: usize) -> IpAddr {
    let block = i / 500;
    IpAddr::V4(Ipv4Addr::new(
        127,
        net,
        (block / 250) as u8,
        1 + (block % 250) as u8,
    ))
}

/// Sends PINGREQ on every connection and waits for each PINGRESP: the idle connections
/// are still served. Returns how many answered.
pub async fn ping_all(conns: &mut [TcpStream]) -> usize {
    let mut alive = 0;
    for c in conns.iter_mut() {
        let ok = async {
            c.write_all(&[0xC0, 0x00]).await?;
            let mut resp = [0u8; 2];
            c.read_exact(&mut resp).await?;
            anyhow::ensure!(resp == [0xD0, 0x00], "not a PINGRESP: {resp:?}");
            anyhow::Ok(())
        };
        if matches!(
            tokio::time::timeout(Duration::from_secs(10), ok).await,
            Ok(Ok(()))
        ) {
            alive += 1;
        }
    }
    alive
}

/// Tiny lock-free-enough map of packet id → send time for ack latency.
mod slots {
    use std::sync::Mutex;

    pub struct Slots(Mutex<Vec<u128>>);

    impl Slots {
        pub fn new() -> Self {
            Slots(Mutex::new(vec![0; 60_001]))
        }

        pub fn put(&self, pkid: u16, t: u128) {
            if let Ok(mut v) = self.0.lock() {
                v[usize::from(pkid)] = t;
            }
        }

        pub fn take(&self, pkid: u16) -> Option<u128> {
            let mut v = self.0.lock().ok()?;
            let t = std::mem::take(v.get_mut(usize::from(pkid))?);
            (t != 0).then_some(t)
        }
    }
}
