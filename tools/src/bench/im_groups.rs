//! `switchboard bench --im-group`: group fan-out, every message durable.
//!
//! A Switchboard process with the IM service and its store on disk; a tenant and its users
//! through the admin API; a group of `members` (3,000) made by its owner's device with
//! `group/create` and `group/invite`; `online` (300) members' devices logged in with the
//! SDK over TCP. `senders` of them keep [`WINDOW`] (one) group message in flight each for
//! the measured seconds, as people in a chat do (the next message after the last one's
//! "sent" answer): `senders` bounds the messages in flight, so latency means something (by
//! Little's law the mean is in flight ÷ rate: 8 messages × 300 online members at 200,000
//! deliveries/s is 12 ms). A delivery is one message event received by one online device;
//! latency is send → receipt at a member (the send time travels in the text).
//!
//! The peer in the same run is mosquitto delivering plain QoS 1 messages from the same
//! number of publishers, each with the same [`WINDOW`] of unacknowledged publishes, to
//! `online` subscribers of one topic, for the ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_client::im::{ImClient, ImEvent};
use switchboard_client::{Config, Endpoint};
use switchboard_proto::im::{self, event::Kind};

use super::im::latency::Samples;
use super::im::rss_kb;
use super::peers::{Peer, PeerKind};

/// Group id of the bench.
const GROUP: &str = "bench";
/// Messages each sender (and each peer publisher) keeps in flight.
const WINDOW: usize = 1;

/// The shape of the group bench.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GroupBench {
    pub members: usize,
    pub online: usize,
    pub senders: usize,
    pub seconds: u64,
}

/// What the group bench measured.
#[derive(Debug, Serialize)]
pub struct GroupResult {
    pub shape: GroupBench,
    pub window: usize,
    pub seconds: f64,
    pub messages: u64,
    pub msgs_per_sec: f64,
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub sent_p99_ms: f64,
    /// Events the SDK dropped because the bench did not read them fast enough.
    pub dropped_events: u64,
    pub setup_secs: f64,
    pub rss_mb: f64,
    /// Broker CPU (user + system) from the first send until the last delivery, per
    /// delivery.
    pub cpu_us_per_delivery: f64,
    /// mosquitto, QoS 1, same publishers, `online` subscribers of one topic.
    pub peer_deliveries_per_sec: Option<f64>,
    /// mosquitto's CPU per delivery in the same run.
    pub peer_cpu_us_per_delivery: Option<f64>,
    /// Store ops (writes handed to the store writer) per group message.
    pub store_ops_per_msg: f64,
    /// Store group commits (each one fsync) per 1,000 group messages.
    pub commits_per_1000_msgs: f64,
}

/// Runs the group bench.
pub async fn run(
    work: &std::path::Path,
    port: u16,
    shape: GroupBench,
) -> anyhow::Result<GroupResult> {
    anyhow::ensure!(
        shape.online <= shape.members && shape.senders <= shape.online && shape.senders > 0,
        "need 0 < senders ≤ online ≤ members"
    );
    let admin_port = port + 1;
    let dir = work.join("im-group");
    let (mut child, pid, admin) = super::im::start_broker(&dir, port, admin_port, &[]).await?;
    let result = measure(&admin, port, pid, shape).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    let mut result = result?;
    if let Ok((rate, cpu)) = peer_baseline(work, port + 2, shape).await {
        result.peer_deliveries_per_sec = Some(rate);
        result.peer_cpu_us_per_delivery = Some(cpu);
    }
    Ok(result)
}

async fn measure(
    admin: &str,
    port: u16,
    pid: u32,
    shape: GroupBench,
) -> anyhow::Result<GroupResult> {
    let setup = Instant::now();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let t: Value = post(admin, "/api/v1/im/tenants", json!({ "name": "bench" })).await?;
    let tid = t["tenant_id"].as_u64().context("tenant id")?;
    // Users, 16 requests at a time.
    let accounts: Vec<String> = (0..shape.members).map(|i| format!("u{i}")).collect();
    for chunk in accounts.chunks(16) {
        let mut calls = tokio::task::JoinSet::new();
        for a in chunk {
            let (admin, a) = (admin.to_owned(), a.clone());
            calls.spawn(async move {
                post(
                    &admin,
                    &format!("/api/v1/im/tenants/{tid}/users"),
                    json!({ "account": a }),
                )
                .await
            });
        }
        for r in calls.join_all().await {
            r?;
        }
    }
    eprintln!("group bench: {} users made", shape.members);
    let mut devices = Vec::new();
    for a in &accounts[..shape.online] {
        let tok: Value = post(
            admin,
            &format!("/api/v1/im/tenants/{tid}/tokens"),
            json!({ "user": a, "ttl": 3600 }),
        )
        .await?;
        let token = tok["token"].as_str().context("token")?;
        devices.push(login(addr, a, token).await?);
    }
    eprintln!("group bench: {} devices online", shape.online);
    // The owner makes the group: create with the first 500, invite the rest.
    let owner = devices[0].0.clone();
    let batches: Vec<&[String]> = accounts[1..].chunks(500).collect();
    let _: im::GroupResponse = owner
        .request(
            "group/create",
            &im::CreateGroupRequest {
                group_id: GROUP.into(),
                name: "bench".into(),
                members: batches.first().map(|b| b.to_vec()).unwrap_or_default(),
                ..im::CreateGroupRequest::default()
            },
        )
        .await
        .context("group/create")?;
    for b in batches.iter().skip(1) {
        let _: im::InviteResponse = owner
            .request(
                "group/invite",
                &im::GroupMembersRequest {
                    group_id: GROUP.into(),
                    accounts: b.to_vec(),
                },
            )
            .await
            .context("group/invite")?;
    }
    // A first message fills the broker's caches (members, read positions).
    let _: im::SendResponse = owner
        .request("send", &group_text("warm-up", "0"))
        .await
        .context("warm-up send")?;
    let setup_secs = setup.elapsed().as_secs_f64();
    eprintln!(
        "group bench: group of {} made in {setup_secs:.1} s",
        shape.members
    );

    let start = Instant::now();
    let latency: Arc<Samples> = Arc::default();
    let deliveries = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let last_at = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let mut clients = Vec::new();
    for (client, mut events) in devices.drain(..) {
        clients.push(client);
        let (lat, n, dropped, last_at) = (
            latency.clone(),
            deliveries.clone(),
            dropped.clone(),
            last_at.clone(),
        );
        readers.push(tokio::spawn(async move {
            // Kept by the task and handed over at the end: a lock shared by every reader
            // for each delivery would take the CPU the broker is measured with.
            let mut mine = Vec::new();
            // Taken as they come, several per wake-up: the shared counters are touched
            // once per batch, not once per delivery.
            let mut batch = Vec::with_capacity(64);
            while events.recv_many(&mut batch, 64).await > 0 {
                let now = start.elapsed().as_micros() as u64;
                let before = mine.len();
                for e in batch.drain(..) {
                    match e {
                        ImEvent::Event(e) => {
                            if let Some(Kind::Message(m)) = &e.kind
                                && let Some(im::content::Body::Text(t)) =
                                    m.content.as_ref().and_then(|c| c.body.as_ref())
                                && let Ok(sent_us) = t.text.parse::<u64>()
                                && sent_us > 0
                            {
                                mine.push(now.saturating_sub(sent_us));
                            }
                        }
                        ImEvent::Lagged { dropped: d } => {
                            dropped.fetch_add(d, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                if mine.len() > before {
                    n.fetch_add((mine.len() - before) as u64, Ordering::Relaxed);
                    last_at.fetch_max(now, Ordering::Relaxed);
                }
            }
            lat.extend(mine);
        }));
    }
    let sent = Arc::new(AtomicU64::new(0));
    let sent_lat: Arc<Samples> = Arc::default();
    let stop_at = Instant::now() + Duration::from_secs(shape.seconds);
    let cpu_before = super::im::cpu_ticks(pid);
    let store_before = super::im::StoreCounters::read(admin).await;
    let mut senders = Vec::new();
    for (s, client) in clients.iter().take(shape.senders).enumerate() {
        for w in 0..WINDOW {
            let (client, sent, lat) = (client.clone(), sent.clone(), sent_lat.clone());
            senders.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < stop_at {
                    n += 1;
                    let t0 = start.elapsed().as_micros() as u64;
                    let req = group_text(&format!("{s}-{w}-{n}"), &t0.max(1).to_string());
                    if client
                        .request::<_, im::SendResponse>("send", &req)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    lat.push(start.elapsed().as_micros() as u64 - t0);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    eprintln!(
        "group bench: {} senders × {WINDOW} in flight for {} s",
        shape.senders, shape.seconds
    );
    for s in senders {
        let _ = s.await;
    }
    let messages = sent.load(Ordering::Relaxed);
    let expected = messages * shape.online as u64;
    // Let what is in flight arrive (bounded).
    let grace = Instant::now() + Duration::from_secs(10);
    while deliveries.load(Ordering::Relaxed) + dropped.load(Ordering::Relaxed) < expected
        && Instant::now() < grace
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu_us = super::im::cpu_ticks(pid).saturating_sub(cpu_before) as f64 * 10_000.0;
    let store = super::im::StoreCounters::read(admin)
        .await
        .since(store_before);
    let rss_mb = rss_kb(pid) as f64 / 1024.0;
    let delivered = deliveries.load(Ordering::Relaxed);
    let elapsed = (last_at.load(Ordering::Relaxed) as f64 / 1e6).max(shape.seconds as f64);
    for c in &clients {
        c.shutdown().await;
    }
    // A client's events end with its shutdown, and its reader hands over its samples.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut stuck = 0;
    for r in readers {
        let abort = r.abort_handle();
        if tokio::time::timeout_at(deadline, r).await.is_err() {
            abort.abort();
            stuck += 1;
        }
    }
    if stuck > 0 {
        eprintln!("group bench: {stuck} readers did not end; their latency samples are missing");
    }
    let (p50, p99) = latency.percentiles();
    let (_, s99) = sent_lat.percentiles();
    Ok(GroupResult {
        shape,
        window: WINDOW,
        seconds: elapsed,
        messages,
        msgs_per_sec: messages as f64 / elapsed,
        deliveries: delivered,
        deliveries_per_sec: delivered as f64 / elapsed,
        p50_ms: p50,
        p99_ms: p99,
        sent_p99_ms: s99,
        dropped_events: dropped.load(Ordering::Relaxed),
        setup_secs,
        rss_mb,
        cpu_us_per_delivery: cpu_us / delivered.max(1) as f64,
        peer_deliveries_per_sec: None,
        peer_cpu_us_per_delivery: None,
        store_ops_per_msg: store.ops as f64 / messages.max(1) as f64,
        commits_per_1000_msgs: store.commits as f64 * 1000.0 / messages.max(1) as f64,
    })
}

fn group_text(id: &str, text: &str) -> im::SendRequest {
    im::SendRequest {
        to: GROUP.into(),
        conv_type: im::ConvType::Group as i32,
        client_msg_id: id.into(),
        content: Some(im::Content {
            body: Some(im::content::Body::Text(im::Text { text: text.into() })),
        }),
        ..im::SendRequest::default()
    }
}

/// mosquitto: the same publishers, QoS 1, to `online` subscribers of one topic: its
/// deliveries/s and CPU per delivery.
async fn peer_baseline(
    work: &std::path::Path,
    port: u16,
    shape: GroupBench,
) -> anyhow::Result<(f64, f64)> {
    let peer = Peer::start(PeerKind::Mosquitto, port, work, true).await?;
    let load = super::load::Load {
        addr: peer.addr,
        shape: super::load::Shape::FanOut,
        publishers: shape.senders,
        subscribers: shape.online,
        qos: switchboard_proto::QoS::AtLeastOnce,
        payload: 16,
        rate: None,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(shape.seconds),
        persistent: false,
    };
    let before = peer.stats();
    let r = super::load::run_windowed(&load, "im-group-peer", WINDOW).await;
    let after = peer.stats();
    peer.stop().await;
    let r = r?;
    let cpu_us = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 * 10_000.0;
    Ok((r.throughput, cpu_us / r.received.max(1) as f64))
}

async fn login(
    addr: std::net::SocketAddr,
    account: &str,
    token: &str,
) -> anyhow::Result<(ImClient, tokio::sync::mpsc::Receiver<ImEvent>)> {
    let mut cfg = Config::new(&format!("bench-{account}"), vec![Endpoint::Tcp(addr)]);
    cfg.username = Some(account.to_owned());
    cfg.password = Some(token.to_owned().into_bytes().into());
    cfg.session_expiry = 0;
    tokio::time::timeout(Duration::from_secs(30), ImClient::connect(cfg))
        .await
        .with_context(|| format!("login of {account} timed out"))?
        .with_context(|| format!("login of {account}"))
}

/// One admin API call, through `ctl`'s HTTP client (blocking, so off the runtime).
async fn post(admin: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    let args = crate::AdminArgs {
        admin: admin.to_owned(),
        token: Some("bench".into()),
        data_dir: std::path::PathBuf::new(),
    };
    let path = path.to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        crate::ctl::call(&args, "POST", &path, Some(&body.to_string()))
    })
    .await??;
    Ok(serde_json::from_str(&answer).unwrap_or(Value::Null))
}

/// The markdown report.
pub fn markdown(r: &GroupResult) -> String {
    let s = &r.shape;
    let ratio = r
        .peer_deliveries_per_sec
        .map(|p| format!("{:.2}×", r.deliveries_per_sec / p))
        .unwrap_or_else(|| "—".into());
    format!(
        "| figure | value |\n|---|---|\n\
         | group | {} members, {} online devices (TCP), {} senders × {} in flight |\n\
         | group messages/s (durable) | {:.0} |\n\
         | deliveries/s (message events received by online members) | {:.0} |\n\
         | send → receipt at a member p50 / p99 | {:.2} ms / {:.2} ms |\n\
         | send → \"sent\" answer p99 | {:.2} ms |\n\
         | messages, deliveries, events dropped by slow readers | {}, {}, {} |\n\
         | setup (users, logins, group) | {:.1} s |\n\
         | broker RSS after the run | {:.1} MB |\n\
         | broker CPU per delivery (user + system) | {:.2} µs |\n\
         | store ops per group message; group commits (fsyncs) per 1,000 messages | {:.2}; {:.1} |\n\
         | mosquitto, QoS 1, {} publishers → {} subscribers of one topic | {} deliveries/s, {} µs CPU/delivery |\n\
         | Switchboard group ÷ mosquitto plain QoS 1 fan-out | {} |\n",
        s.members,
        s.online,
        s.senders,
        r.window,
        r.msgs_per_sec,
        r.deliveries_per_sec,
        r.p50_ms,
        r.p99_ms,
        r.sent_p99_ms,
        r.messages,
        r.deliveries,
        r.dropped_events,
        r.setup_secs,
        r.rss_mb,
        r.cpu_us_per_delivery,
        r.store_ops_per_msg,
        r.commits_per_1000_msgs,
        s.senders,
        s.online,
        r.peer_deliveries_per_sec
            .map(|p| format!("{p:.0}"))
            .unwrap_or_else(|| "not run".into()),
        r.peer_cpu_us_per_delivery
            .map(|p| format!("{p:.2}"))
            .unwrap_or_else(|| "—".into()),
        ratio
    )
}
