//! One plain-MQTT scenario against one broker: start the peer, run the load (flows, fan-in,
//! fan-out, retained storms), read the broker's store commits and memory, fill the row.

use std::path::Path;
use std::time::{Duration, Instant};

use switchboard_proto::QoS;

use super::load::{self, Load};
use super::peers::{Peer, PeerKind};
use super::scenarios::{Kind, Scenario};
use super::{BenchArgs, Row};

/// Idle connections opened before the idle scenario's baseline reading (see `Kind::Idle`).
const IDLE_WARM: usize = 1000;

pub(super) async fn run_one(
    s: &Scenario,
    b: PeerKind,
    port: u16,
    work: &Path,
    args: &BenchArgs,
) -> anyhow::Result<Row> {
    let persistent = matches!(
        s.kind,
        Kind::Flow {
            persistent: true,
            ..
        }
    );
    let peer = Peer::start(b, port, work, persistent).await?;
    let mut row = Row {
        scenario: s.name.into(),
        broker: b.name().into(),
        ..Row::default()
    };
    let result = measure(s, &peer, args, &mut row).await;
    let st = peer.stats();
    row.rss_mb = st.rss_kb as f64 / 1024.0;
    row.peak_rss_mb = st.hwm_kb as f64 / 1024.0;
    peer.stop().await;
    result.map(|()| row)
}

pub(super) async fn measure(
    s: &Scenario,
    peer: &Peer,
    args: &BenchArgs,
    row: &mut Row,
) -> anyhow::Result<()> {
    let tag = s.name.replace('-', "");
    match s.kind {
        Kind::Flow {
            shape,
            pubs,
            subs,
            qos,
            payload,
            rate,
            persistent,
        } => {
            let load = Load {
                addr: peer.addr,
                shape,
                publishers: pubs,
                subscribers: subs,
                qos,
                payload,
                rate,
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(args.seconds),
                persistent,
            };
            let commits_before = if persistent {
                store_commits(peer).await
            } else {
                None
            };
            let before = peer.stats();
            let out = load::run(&load, &tag).await?;
            let after = peer.stats();
            row.throughput = out.throughput;
            row.p50_us = out.p50_us;
            row.p99_us = out.p99_us;
            row.ack_p99_us = out.ack_p99_us;
            row.sent = out.sent;
            row.received = out.received;
            let cpu_us = (after.cpu_ticks - before.cpu_ticks) as f64 * 10_000.0;
            row.cpu_us_per_msg = if out.received > 0 {
                cpu_us / out.received as f64
            } else {
                0.0
            };
            if persistent {
                // Give `$SYS` a tick to publish the final figure.
                tokio::time::sleep(Duration::from_millis(1200)).await;
                if let (Some(a), Some(b)) = (commits_before, store_commits(peer).await)
                    && out.sent > 0
                {
                    row.extra = Some((
                        "fsyncs/1000 msg".into(),
                        (b - a) as f64 * 1000.0 / out.sent as f64,
                    ));
                }
            }
        }
        Kind::Idle => {
            let start = peer.stats();
            let net = 1 + (peer.addr.port() % 250) as u8;
            // Read as an operator would: RSS before and after the measured connections,
            // both once the broker is idle. The baseline is taken after a first set of
            // idle connections (`IDLE_WARM`), so that it is past the one-off growth of a
            // fresh process (first allocations of each size, table and allocator set-up,
            // what the allocator frees back late), which otherwise lands in one run's
            // figure and not another's. Switchboard parks a connection after a quiet
            // second, so each reading waits until it reports every connection parked (the
            // figure would otherwise include tasks about to be freed), then until the
            // process's RSS stops falling.
            let mut conns = load::idle_connections(peer.addr, 0, IDLE_WARM, &tag, net).await?;
            let _ = parked_count(peer, IDLE_WARM as u64).await;
            let before = settled_stats(peer).await;
            let measured =
                load::idle_connections(peer.addr, IDLE_WARM, args.idle, &tag, net).await?;
            conns.extend(measured);
            let parked = parked_count(peer, conns.len() as u64).await;
            let after = settled_stats(peer).await;
            let n = args.idle.max(1) as f64;
            let per = (after.rss_kb.saturating_sub(before.rss_kb)) as f64 * 1024.0 / n;
            // The same connections counted from the idle broker's start, as a first look
            // would read them (includes the fresh process's one-off growth).
            let from_start =
                (after.rss_kb.saturating_sub(start.rss_kb)) as f64 * 1024.0 / conns.len() as f64;
            // Measured connections must still be served: every one answers a PINGREQ.
            let alive = load::ping_all(&mut conns).await;
            let parked = parked.map_or(String::new(), |p| format!(", {p} parked"));
            row.extra = Some((
                format!(
                    "bytes/conn ({} conns after {IDLE_WARM} warm, {alive} alive{parked}; \
                     {from_start:.0} from the fresh process)",
                    args.idle
                ),
                per,
            ));
            row.received = conns.len() as u64;
            drop(conns);
        }
        Kind::ConnStorm { total, concurrency } => {
            let started = Instant::now();
            let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
            let mut tasks = Vec::new();
            for i in 0..total {
                let permit = sem.clone().acquire_owned().await?;
                let addr = peer.addr;
                let tag = tag.clone();
                tasks.push(tokio::spawn(async move {
                    let r = load::connect(addr, &format!("{tag}-{i}"), true, None).await;
                    drop(permit);
                    r.map(drop)
                }));
            }
            let mut ok: u32 = 0;
            for t in tasks {
                if matches!(t.await, Ok(Ok(()))) {
                    ok += 1;
                }
            }
            let secs = started.elapsed().as_secs_f64();
            row.throughput = f64::from(ok) / secs;
            row.received = u64::from(ok);
            row.extra = Some(("connects/s".into(), row.throughput));
        }
        Kind::RetainedStorm { count } => {
            let t = retained_storm(peer, count, &tag).await?;
            row.throughput = count as f64 / t;
            row.received = count as u64;
            row.extra = Some(("seconds to receive all".into(), t));
        }
    }
    Ok(())
}

/// Publishes `count` retained messages, then times a '#' subscriber receiving them all.
async fn retained_storm(peer: &Peer, count: usize, tag: &str) -> anyhow::Result<f64> {
    use bytes::BytesMut;
    use switchboard_proto::{Packet, Properties, Publish, Subscribe, SubscriptionOptions, Version};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut p = load::connect(peer.addr, &format!("{tag}-pub"), true, None).await?;
    let mut buf = BytesMut::new();
    for i in 0..count {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: format!("ret/{tag}/{}/{i}", i % 100),
            pkid: (i % 60_000) as u16 + 1,
            properties: Properties::default(),
            payload: bytes::Bytes::from_static(b"retained-value"),
        })
        .encode(Version::V3_1_1, &mut buf);
    }
    p.write_all(&buf).await?;
    // Wait for every PUBACK so that the broker holds them all.
    let mut rb = BytesMut::new();
    let mut acks = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks < count {
        anyhow::ensure!(
            Instant::now() < deadline,
            "retained publishes not acknowledged in time"
        );
        if let Some(Packet::PubAck(_)) = Packet::read(&mut rb, Version::V3_1_1, usize::MAX)? {
            acks += 1;
            continue;
        }
        if tokio::time::timeout(Duration::from_secs(10), p.read_buf(&mut rb)).await?? == 0 {
            anyhow::bail!("publisher closed");
        }
    }
    let mut s = load::connect(peer.addr, &format!("{tag}-sub"), true, None).await?;
    let started = Instant::now();
    let mut out = BytesMut::new();
    Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(format!("ret/{tag}/#"), SubscriptionOptions::default())],
    })
    .encode(Version::V3_1_1, &mut out);
    s.write_all(&out).await?;
    let mut got = 0;
    let mut rb = BytesMut::new();
    while got < count {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {got} of {count} retained messages arrived"
        );
        match Packet::read(&mut rb, Version::V3_1_1, usize::MAX)? {
            Some(Packet::Publish(_)) => got += 1,
            Some(_) => {}
            None => {
                if tokio::time::timeout(Duration::from_secs(10), s.read_buf(&mut rb)).await?? == 0 {
                    anyhow::bail!("subscriber closed");
                }
            }
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Switchboard's store commit counter from `$SYS/broker/store/commits`.
async fn store_commits(peer: &Peer) -> Option<u64> {
    sys_figure(peer, "store/commits", "bench-sys", |_| true).await
}

/// Waits (up to a minute) until Switchboard reports at least `n` connections parked in
/// `$SYS/broker/clients/parked`; the last figure read, `None` for other brokers.
async fn parked_count(peer: &Peer, n: u64) -> Option<u64> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(60) {
        // One figure per connection (the reading connection itself is not parked).
        last = sys_figure(peer, "clients/parked", "bench-sys-parked", |v| v >= n).await;
        if last.is_none_or(|v| v >= n) {
            break;
        }
    }
    last
}

/// The broker's figures once its RSS stopped falling: sampled every half second until
/// four samples in a row set no new low (at most 30 s), the lowest kept.
async fn settled_stats(peer: &Peer) -> super::peers::ProcStats {
    let mut low = peer.stats();
    let mut calm = 0;
    let started = Instant::now();
    while calm < 4 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = peer.stats();
        if now.rss_kb < low.rss_kb {
            low = now;
            calm = 0;
        } else {
            calm += 1;
        }
    }
    low
}

/// The first value of `$SYS/broker/{topic}` that satisfies `done` within 5 s, or the last
/// one seen (Switchboard only; `client` is the reading connection's client id).
async fn sys_figure(
    peer: &Peer,
    topic: &str,
    client: &str,
    done: impl Fn(u64) -> bool,
) -> Option<u64> {
    if peer.kind != PeerKind::Switchboard {
        return None;
    }
    use bytes::BytesMut;
    use switchboard_proto::{Packet, Properties, Subscribe, SubscriptionOptions, Version};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = load::connect(peer.addr, client, true, None).await.ok()?;
    let mut out = BytesMut::new();
    Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(
            format!("$SYS/broker/{topic}"),
            SubscriptionOptions::default(),
        )],
    })
    .encode(Version::V3_1_1, &mut out);
    s.write_all(&out).await.ok()?;
    let mut rb = BytesMut::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = None;
    while Instant::now() < deadline {
        while let Ok(Some(p)) = Packet::read(&mut rb, Version::V3_1_1, usize::MAX) {
            if let Packet::Publish(p) = p {
                last = std::str::from_utf8(&p.payload).ok()?.parse().ok();
                if last.is_some_and(&done) {
                    return last;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_buf(&mut rb)).await;
    }
    last
}
