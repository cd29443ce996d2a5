//! `switchboard bench --im-room`: chatroom fan-out, one sender to `members` online
//! members of one room over TCP.
//!
//! A Switchboard process with the IM service; tenant, users, tokens and the room are made
//! through the service credential's `$im/admin/...` requests over MQTT (pipelined). Each
//! member is a bare MQTT 5 connection logged in with its token, subscribed to its inbox,
//! that joins the room and counts what arrives (parsing only the fixed header, and
//! decoding one message in 16 for its latency: the text carries the send time). The sender
//! is an SDK device keeping `WINDOW` room sends in flight for the warm-up and the measured
//! seconds. Deliveries/s are the members' receptions inside the measured window; messages
//! the broker skipped for congested members (low priority) are reported as dropped.
//!
//! The peer in the same run is mosquitto fanning the same number of messages out from one
//! publisher to as many plain QoS 0 subscribers (as fast as it takes them), for the ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Buf, Bytes, BytesMut};
use prost::Message as _;
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_client::im::ImClient;
use switchboard_client::{Config, Endpoint};
use switchboard_proto::im;
use switchboard_proto::{
    Connect, Packet, Properties, Publish, QoS, Subscribe, SubscriptionOptions, Version, check_frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use super::im::rss_kb;
use super::peers::{Peer, PeerKind};
use super::service_conn::{Service, read_packet};

/// Warm-up before the measured window.
const WARMUP: Duration = Duration::from_secs(1);
/// Latency samples kept per member.
const MAX_SAMPLES: usize = 20_000;
/// Admin requests written before their answers are read.
const PIPELINE: usize = 500;

/// What the chatroom bench measured.
#[derive(Debug, Serialize, Default)]
pub struct RoomResult {
    pub members: usize,
    /// Room sends the sender keeps in flight.
    pub window: usize,
    pub seconds: f64,
    pub messages: u64,
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Deliveries expected (messages × members) minus those received, over the whole run.
    pub dropped: u64,
    pub rss_mb: f64,
    /// mosquitto, 1 publisher → `members` QoS 0 subscribers at Switchboard's message rate.
    pub peer_deliveries_per_sec: Option<f64>,
    pub peer_p99_ms: Option<f64>,
    /// The same, the publisher as fast as mosquitto takes its messages.
    pub peer_flood_deliveries_per_sec: Option<f64>,
    pub peer_flood_p99_ms: Option<f64>,
}

struct Counters {
    in_window: AtomicU64,
    total: AtomicU64,
}

/// Runs the chatroom bench with `members` members for `seconds`.
pub async fn run(
    work: &std::path::Path,
    port: u16,
    members: usize,
    window: usize,
    seconds: u64,
) -> anyhow::Result<RoomResult> {
    let dir = work.join("im-room");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["broker", "--log", "error", "--tcp"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&dir)
        .env("SWITCHBOARD__BROKER__SYS_INTERVAL", "0")
        .env("SWITCHBOARD__BROKER__LIMITS__MAX_CONNECTIONS", "1000000")
        .env("SWITCHBOARD__BROKER__AUTH__PER_ADDRESS_RATE", "100000.0")
        .env("SWITCHBOARD__BROKER__AUTH__PER_ADDRESS_BURST", "100000")
        .env("SWITCHBOARD__BROKER__AUTH__GLOBAL_RATE", "100000.0")
        .env("SWITCHBOARD__BROKER__AUTH__GLOBAL_BURST", "100000")
        // Members log in 100 at a time: let them wait for a verification slot.
        .env("SWITCHBOARD__BROKER__AUTH__MAX_WAITING", "100000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start switchboard")?;
    let pid = child.id().context("no pid")?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "switchboard did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secret: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("service.credentials"))
            .context("no service credential")?,
    )?;
    let secret = secret["password"]
        .as_str()
        .context("service password")?
        .to_owned();
    let result = measure(addr, &secret, pid, members, window, seconds).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    let mut result = result?;
    // Same members, same message rate; then as fast as mosquitto takes them.
    let rate = (result.messages as f64 / (seconds as f64 + WARMUP.as_secs_f64())).max(1.0);
    for (i, rate) in [Some(rate as u32), None].into_iter().enumerate() {
        let Ok(peer) = Peer::start(PeerKind::Mosquitto, port + 2 + i as u16, work, false).await
        else {
            break;
        };
        let load = super::load::Load {
            addr: peer.addr,
            shape: super::load::Shape::FanOut,
            publishers: 1,
            subscribers: members,
            qos: QoS::AtMostOnce,
            payload: 64,
            rate,
            // The load runner's clock starts before its subscribers connect (one at a
            // time): the warm-up covers the connections.
            warmup: Duration::from_secs(2 + members as u64 / 500),
            duration: Duration::from_secs(seconds),
            persistent: false,
        };
        let outcome = super::load::run(&load, &format!("room-peer{i}")).await;
        peer.stop().await;
        let Ok(o) = outcome else { break };
        if rate.is_some() {
            result.peer_deliveries_per_sec = Some(o.throughput);
            result.peer_p99_ms = Some(o.p99_us / 1000.0);
        } else {
            result.peer_flood_deliveries_per_sec = Some(o.throughput);
            result.peer_flood_p99_ms = Some(o.p99_us / 1000.0);
        }
    }
    Ok(result)
}

async fn measure(
    addr: std::net::SocketAddr,
    secret: &str,
    pid: u32,
    members: usize,
    window: usize,
    seconds: u64,
) -> anyhow::Result<RoomResult> {
    let mut svc = Service::connect(addr, secret).await?;
    let t = svc
        .call(vec![("create_tenant".into(), json!({"name": "bench"}))])
        .await?;
    let tid = t[0]["tenant_id"].as_u64().context("tenant id")?;
    let accounts: Vec<String> = (0..=members).map(|i| format!("m{i}")).collect();
    let mut tokens = Vec::new();
    for chunk in accounts.chunks(PIPELINE) {
        let users = chunk
            .iter()
            .map(|a| ("create_user".into(), json!({"tenant": tid, "account": a})))
            .collect();
        svc.call(users).await?;
        let toks = chunk
            .iter()
            .map(|a| {
                (
                    "token".into(),
                    json!({"tenant": tid, "user": a, "ttl": 3600}),
                )
            })
            .collect();
        for v in svc.call(toks).await? {
            tokens.push(v["token"].as_str().context("token")?.to_owned());
        }
    }
    svc.call(vec![(
        "room/create".into(),
        json!({"tenant": tid, "room": "bench", "history": 50}),
    )])
    .await?;
    eprintln!(
        "room bench: {} users, tokens and the room made",
        tokens.len()
    );

    let epoch = Instant::now();
    let counters = Arc::new(Counters {
        in_window: AtomicU64::new(0),
        total: AtomicU64::new(0),
    });
    // The window is fixed once everyone is in: start + warm-up .. + seconds.
    let (window_tx, window_rx) = tokio::sync::watch::channel(None::<(Instant, Instant)>);
    let mut readers = Vec::new();
    for chunk in (0..members).collect::<Vec<_>>().chunks(100) {
        let mut joins = Vec::new();
        for &i in chunk {
            let (account, token) = (accounts[i].clone(), tokens[i].clone());
            joins.push(tokio::spawn(
                async move { member(addr, &account, &token).await },
            ));
        }
        for j in joins {
            let (stream, rb) = j.await??;
            let (c, w) = (counters.clone(), window_rx.clone());
            readers.push(tokio::spawn(reader(stream, rb, epoch, w, c)));
        }
    }
    eprintln!("room bench: {members} members in the room");
    let sender_account = &accounts[members];
    let mut cfg = Config::new("bench-room-sender", vec![Endpoint::Tcp(addr)]);
    cfg.username = Some(sender_account.clone());
    cfg.password = Some(tokens[members].clone().into_bytes().into());
    let (sender, mut sender_events) = ImClient::connect(cfg).await.context("sender login")?;
    // The sender's own copies are not counted: drain them.
    tokio::spawn(async move { while sender_events.recv().await.is_some() {} });
    sender
        .join_room("bench", Some(0))
        .await
        .context("sender join")?;

    let start = Instant::now();
    let window_start = start + WARMUP;
    let end = window_start + Duration::from_secs(seconds);
    let _ = window_tx.send(Some((window_start, end)));
    let sent = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for w in 0..window {
        let (client, sent) = (sender.clone(), sent.clone());
        senders.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                let stamp = epoch.elapsed().as_nanos() as u64;
                let content = im::Content {
                    body: Some(im::content::Body::Text(im::Text {
                        text: stamp.to_string(),
                    })),
                };
                if client
                    .send_room("bench", &format!("{w}-{n}"), content)
                    .await
                    .is_err()
                {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for s in senders {
        let _ = s.await;
    }
    let rss_mb = rss_kb(pid) as f64 / 1024.0;
    let mut lat = Vec::new();
    for r in readers {
        lat.extend(r.await.unwrap_or_default());
    }
    sender.shutdown().await;
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            f64::from(lat[((lat.len() - 1) as f64 * p) as usize]) / 1000.0
        }
    };
    let messages = sent.load(Ordering::Relaxed);
    let total = counters.total.load(Ordering::Relaxed);
    let deliveries = counters.in_window.load(Ordering::Relaxed);
    Ok(RoomResult {
        members,
        window,
        seconds: seconds as f64,
        messages,
        deliveries,
        deliveries_per_sec: deliveries as f64 / seconds as f64,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        dropped: (messages * members as u64).saturating_sub(total),
        rss_mb,
        ..RoomResult::default()
    })
}

/// Logs member `account` in over bare MQTT 5, subscribes to its inbox and joins the room.
async fn member(
    addr: std::net::SocketAddr,
    account: &str,
    token: &str,
) -> anyhow::Result<(TcpStream, BytesMut)> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut rb = BytesMut::with_capacity(64 * 1024);
    let connect = Connect {
        version: Version::V5,
        client_id: format!("room-{account}"),
        clean_start: true,
        keep_alive: 300,
        properties: Properties::default(),
        will: None,
        username: Some(account.to_owned()),
        password: Some(Bytes::from(token.to_owned())),
    };
    let join = im::RoomJoinRequest {
        room: "bench".into(),
        last: Some(0),
    };
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(connect)).encode(Version::V5, &mut out);
    Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![
            ("$im/inbox".into(), SubscriptionOptions::default()),
            ("$im/resp/#".into(), SubscriptionOptions::default()),
        ],
    })
    .encode(Version::V5, &mut out);
    s.write_all(&out).await?;
    // The join goes once the subscription is in place (its answer comes on $im/resp/).
    loop {
        match read_packet(&mut s, &mut rb, Version::V5).await? {
            Packet::ConnAck(a) if a.code.is_error() => bail!("login of {account}: {:?}", a.code),
            Packet::SubAck(_) => break,
            _ => {}
        }
    }
    out.clear();
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "$im/req/room/join".into(),
        pkid: 0,
        properties: Properties {
            response_topic: Some("$im/resp/join".into()),
            correlation_data: Some(Bytes::from_static(b"j")),
            ..Properties::default()
        },
        payload: Bytes::from(join.encode_to_vec()),
    })
    .encode(Version::V5, &mut out);
    s.write_all(&out).await?;
    loop {
        if let Packet::Publish(p) = read_packet(&mut s, &mut rb, Version::V5).await?
            && p.topic.starts_with("$im/resp/")
        {
            let r = im::RoomJoinResponse::decode(p.payload)?;
            match r.status {
                Some(st) if st.code != 0 => bail!("join of {account}: {}", st.message),
                _ => return Ok((s, rb)),
            }
        }
    }
}

/// Counts a member's deliveries until the window's end (plus a grace period), sampling
/// latencies; returns them in microseconds.
async fn reader(
    mut s: TcpStream,
    mut rb: BytesMut,
    epoch: Instant,
    mut window: tokio::sync::watch::Receiver<Option<(Instant, Instant)>>,
    c: Arc<Counters>,
) -> Vec<u32> {
    let (start, end) = loop {
        if let Some(w) = *window.borrow_and_update() {
            break w;
        }
        if window.changed().await.is_err() {
            return Vec::new();
        }
    };
    let grace = end + Duration::from_millis(1000);
    let mut lat = Vec::new();
    let mut seen = 0u64;
    loop {
        let Ok(Ok(n)) = tokio::time::timeout_at(grace.into(), s.read_buf(&mut rb)).await else {
            break;
        };
        if n == 0 {
            break;
        }
        let now = Instant::now();
        let (mut total, mut in_window) = (0, 0);
        while let Ok(Some(f)) = check_frame(&rb, usize::MAX) {
            if f.header >> 4 == 3 {
                total += 1;
                if now >= start && now < end {
                    in_window += 1;
                }
                seen += 1;
                if seen.is_multiple_of(16) && lat.len() < MAX_SAMPLES {
                    let body = &rb[f.header_len..f.len()];
                    if let Some(us) = latency_of(body, f.header, epoch) {
                        lat.push(us);
                    }
                }
            }
            rb.advance(f.len());
        }
        c.total.fetch_add(total, Ordering::Relaxed);
        c.in_window.fetch_add(in_window, Ordering::Relaxed);
    }
    lat
}

/// The send → receive time of an MQTT 5 PUBLISH body carrying a room message whose text is
/// the send time.
fn latency_of(body: &[u8], header: u8, epoch: Instant) -> Option<u32> {
    let tlen = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let mut at = 2 + tlen + if (header >> 1) & 3 > 0 { 2 } else { 0 };
    // Properties: a variable byte integer length, then the properties.
    let (mut plen, mut shift) = (0usize, 0);
    loop {
        let b = *body.get(at)?;
        at += 1;
        plen |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let ev = im::Event::decode(body.get(at + plen..)?).ok()?;
    let Some(im::event::Kind::Message(m)) = ev.kind else {
        return None;
    };
    let Some(im::content::Body::Text(t)) = m.content.and_then(|c| c.body) else {
        return None;
    };
    let stamp: u64 = t.text.parse().ok()?;
    let now = epoch.elapsed().as_nanos() as u64;
    Some((now.saturating_sub(stamp) / 1000) as u32)
}

/// The markdown table of the chatroom bench.
pub fn markdown(r: &RoomResult) -> String {
    let figure = |d: Option<f64>, p99: Option<f64>| {
        d.map(|d| format!("{d:.0} deliveries/s, p99 {:.2} ms", p99.unwrap_or(0.0)))
            .unwrap_or_else(|| "not run".into())
    };
    let peer = figure(r.peer_deliveries_per_sec, r.peer_p99_ms);
    let flood = figure(r.peer_flood_deliveries_per_sec, r.peer_flood_p99_ms);
    let rate = r.messages as f64 / (r.seconds + WARMUP.as_secs_f64());
    let ratio = r
        .peer_deliveries_per_sec
        .filter(|p| *p > 0.0)
        .map(|p| format!("{:.2}×", r.deliveries_per_sec / p))
        .unwrap_or_else(|| "—".into());
    format!(
        "| figure | value |\n|---|---|\n\
         | chatroom fan-out, 1 sender → {} members (TCP, loopback) | {:.0} deliveries/s |\n\
         | room messages sent in {:.0} s (+1 s warm-up), {} in flight | {} |\n\
         | send → member p50 / p99 | {:.2} ms / {:.2} ms |\n\
         | deliveries dropped for congested members (low priority) | {} |\n\
         | broker RSS at the end | {:.1} MB |\n\
         | mosquitto, 1 → {} plain QoS 0 subscribers, same rate ({:.0} msg/s) | {} |\n\
         | mosquitto, same, publisher as fast as it takes them | {} |\n\
         | Switchboard chatroom ÷ mosquitto plain QoS 0 fan-out (same rate) | {} |\n",
        r.members,
        r.deliveries_per_sec,
        r.seconds,
        r.window,
        r.messages,
        r.p50_ms,
        r.p99_ms,
        r.dropped,
        r.rss_mb,
        r.members,
        rate,
        peer,
        flood,
        ratio
    )
}
