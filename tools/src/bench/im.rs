//! `switchboard bench --im`: the IM layer under load, every message durable.
//!
//! A Switchboard process with the IM service and its store on disk; tenants, users and
//! tokens through its admin API; devices logged in with the SDK over TCP, as an app would.
//! - **1:1 throughput and latency**: `pairs` senders each keep [`WINDOW`] (one) send in
//!   flight to their own recipient for the measured seconds, as a user does (the next
//!   message after the last one's "sent" answer), so `pairs` bounds the messages in
//!   flight and latency means something (by Little's law the mean is `pairs` ÷ rate); a
//!   send counts when its "sent" answer (after the commit) arrives; latency is send → the
//!   recipient's device receiving it.
//! - **Sync**: one user receives `sync_messages` while offline, then logs in and pulls
//!   them all (pages of 1,000); the time from the first sync request to the last page.
//! - **Memory per online user**: broker RSS before and after `pairs × 2` devices log in.
//!
//! The peer in the same run is mosquitto with persistence carrying the same 1:1 traffic as
//! plain QoS 1 messages (the transport without IM semantics, the same publishers with the
//! same [`WINDOW`] of unacknowledged publishes each), for the ratio; OpenIM's
//! published single-box figure (~3,000 msg/s) is quoted in bench/README.md, not measured.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_client::im::{ImClient, ImEvent};
use switchboard_client::{Config, Endpoint};
use switchboard_proto::im::event::Kind;
use tokio::process::Command;

use super::peers::{Peer, PeerKind};

/// Sends each IM bench sender (and each peer publisher) keeps in flight: one, as a user
/// sending a conversation's messages in order does.
const WINDOW: usize = 1;

/// What the IM bench measured.
#[derive(Debug, Serialize)]
pub struct ImResult {
    pub pairs: usize,
    pub window: usize,
    pub seconds: f64,
    pub messages: u64,
    pub msgs_per_sec: f64,
    pub deliver_p50_ms: f64,
    pub deliver_p99_ms: f64,
    pub sent_p50_ms: f64,
    pub sent_p99_ms: f64,
    pub sync_messages: usize,
    pub sync_ms: f64,
    pub bytes_per_online_user: f64,
    pub rss_mb: f64,
    /// Broker CPU (user + system) over the measured sends, per message.
    pub cpu_us_per_msg: f64,
    /// mosquitto, persistence on, the same pairs with QoS 1 plain messages.
    pub peer_msgs_per_sec: Option<f64>,
    /// mosquitto's CPU per message in the same run.
    pub peer_cpu_us_per_msg: Option<f64>,
    /// Store group commits (each one fsync) per 1,000 messages over the measured sends.
    pub commits_per_1000_msgs: f64,
    /// Store ops (writes handed to the store writer) per message.
    pub store_ops_per_msg: f64,
}

/// The broker's store counters: group commits and ops so far (from `/metrics`).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct StoreCounters {
    pub commits: u64,
    pub ops: u64,
}

impl StoreCounters {
    /// Reads them from the admin API's `/metrics` (zeros if it does not answer).
    pub(super) async fn read(admin: &str) -> StoreCounters {
        let args = crate::AdminArgs {
            admin: admin.to_owned(),
            token: Some("bench".into()),
            data_dir: std::path::PathBuf::new(),
        };
        let text = tokio::task::spawn_blocking(move || {
            crate::ctl::call(&args, "GET", "/metrics", None).unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0)
        };
        StoreCounters {
            commits: value("switchboard_store_commits_total"),
            ops: value("switchboard_store_ops_total"),
        }
    }

    /// What happened between `before` and `self`.
    pub(super) fn since(self, before: StoreCounters) -> StoreCounters {
        StoreCounters {
            commits: self.commits.saturating_sub(before.commits),
            ops: self.ops.saturating_sub(before.ops),
        }
    }
}

/// Runs the IM bench with `pairs` sender/recipient pairs for `seconds`.
pub async fn run(
    work: &std::path::Path,
    port: u16,
    pairs: usize,
    seconds: u64,
    sync_messages: usize,
) -> anyhow::Result<ImResult> {
    let admin_port = port + 1;
    let dir = work.join("im");
    let (mut child, pid, admin) = start_broker(&dir, port, admin_port, &[]).await?;
    let result = measure(&admin, port, pid, pairs, seconds, sync_messages).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    let mut result = result?;
    if let Ok((rate, cpu)) = peer_baseline(work, port + 2, pairs, seconds).await {
        result.peer_msgs_per_sec = Some(rate);
        result.peer_cpu_us_per_msg = Some(cpu);
    }
    Ok(result)
}

/// Starts a Switchboard process for an IM bench: the broker with the IM service and its
/// store in `dir`, MQTT on `port`, the admin API on `admin_port` (token "bench"), login
/// rate limits lifted (every device logs in from 127.0.0.1), plus `extra` arguments;
/// returns once the admin API answers.
pub(super) async fn start_broker(
    dir: &std::path::Path,
    port: u16,
    admin_port: u16,
    extra: &[&str],
) -> anyhow::Result<(tokio::process::Child, u32, String)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    // What the broker says (errors only) goes to a file: the reason when it does not start.
    let stderr_path = dir.join("broker.stderr");
    let stderr = std::fs::File::create(&stderr_path)?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["broker", "--log", "error", "--tcp"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .env("SWITCHBOARD__BROKER__SYS_INTERVAL", "0")
        .env(
            "SWITCHBOARD__BROKER__ADMIN__LISTEN",
            format!("\"127.0.0.1:{admin_port}\""),
        )
        .env("SWITCHBOARD__BROKER__ADMIN__TOKEN", "\"bench\"")
        .env("SWITCHBOARD__BROKER__LIMITS__MAX_CONNECTIONS", "1000000")
        .env("SWITCHBOARD__BROKER__AUTH__PER_ADDRESS_RATE", "100000.0")
        .env("SWITCHBOARD__BROKER__AUTH__PER_ADDRESS_BURST", "100000")
        .env("SWITCHBOARD__BROKER__AUTH__GLOBAL_RATE", "100000.0")
        .env("SWITCHBOARD__BROKER__AUTH__GLOBAL_BURST", "100000")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start switchboard")?;
    let pid = child.id().context("no pid")?;
    let admin = format!("127.0.0.1:{admin_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(&admin).await.is_err() {
        // A broker that exited (a port in use, a bad setting) is not waited for.
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        anyhow::ensure!(
            !exited && Instant::now() < deadline,
            "switchboard did not start (MQTT port {port}, admin port {admin_port}): {}",
            std::fs::read_to_string(&stderr_path)
                .unwrap_or_default()
                .trim()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((child, pid, admin))
}

async fn measure(
    admin: &str,
    port: u16,
    pid: u32,
    pairs: usize,
    seconds: u64,
    sync_messages: usize,
) -> anyhow::Result<ImResult> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let t: Value = post(admin, "/api/v1/im/tenants", json!({ "name": "bench" })).await?;
    let tid = t["tenant_id"].as_u64().context("tenant id")?;
    let mut tokens = Vec::new();
    for i in 0..pairs * 2 + 2 {
        let account = format!("u{i}");
        post(
            admin,
            &format!("/api/v1/im/tenants/{tid}/users"),
            json!({ "account": account }),
        )
        .await?;
        let tok: Value = post(
            admin,
            &format!("/api/v1/im/tenants/{tid}/tokens"),
            json!({ "user": account, "ttl": 3600 }),
        )
        .await?;
        tokens.push(tok["token"].as_str().context("token")?.to_owned());
    }
    eprintln!("IM bench: {} users and tokens made", tokens.len());
    let rss_before = rss_kb(pid);
    let mut devices = Vec::new();
    for (i, tok) in tokens.iter().enumerate().take(pairs * 2) {
        devices.push(login(addr, &format!("u{i}"), tok).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bytes_per_user =
        (rss_kb(pid).saturating_sub(rss_before) * 1024) as f64 / (pairs * 2) as f64;

    // Recipients record send → receive latency (the send time travels in the text).
    let start = Instant::now();
    let delivered: Arc<latency::Samples> = Arc::default();
    let mut tasks = Vec::new();
    for (client, mut events) in devices.drain(..) {
        let d = delivered.clone();
        tasks.push((
            client,
            tokio::spawn(async move {
                while let Some(e) = events.recv().await {
                    if let ImEvent::Event(e) = e
                        && let Some(Kind::Message(m)) = &e.kind
                        && let Some(switchboard_proto::im::content::Body::Text(t)) =
                            m.content.as_ref().and_then(|c| c.body.as_ref())
                        && let Ok(sent_us) = t.text.parse::<u64>()
                    {
                        let now = start.elapsed().as_micros() as u64;
                        d.push(now.saturating_sub(sent_us));
                    }
                }
            }),
        ));
    }
    let sent = Arc::new(AtomicU64::new(0));
    let sent_lat: Arc<latency::Samples> = Arc::default();
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let window = WINDOW;
    let mut senders = Vec::new();
    for p in 0..pairs {
        let client = tasks[p * 2].0.clone();
        let to = format!("u{}", p * 2 + 1);
        for w in 0..window {
            let (client, to, sent, lat) =
                (client.clone(), to.clone(), sent.clone(), sent_lat.clone());
            senders.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < stop_at {
                    n += 1;
                    let t0 = start.elapsed().as_micros() as u64;
                    let id = format!("{w}-{n}");
                    if client.send_text(&to, &id, &t0.to_string()).await.is_err() {
                        break;
                    }
                    lat.push(start.elapsed().as_micros() as u64 - t0);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    eprintln!(
        "IM bench: {} devices online, sending for {seconds} s",
        pairs * 2
    );
    let t0 = Instant::now();
    let cpu_before = cpu_ticks(pid);
    let store_before = StoreCounters::read(admin).await;
    for s in senders {
        let _ = s.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let messages = sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_us = cpu_ticks(pid).saturating_sub(cpu_before) as f64 * 10_000.0;
    let store = StoreCounters::read(admin).await.since(store_before);
    let rss_mb = rss_kb(pid) as f64 / 1024.0;
    for (c, task) in &tasks {
        c.shutdown().await;
        task.abort();
    }

    eprintln!("IM bench: {messages} messages; filling {sync_messages} offline messages");
    // Sync: the last two users; the recipient is offline while the sender sends.
    let (sync_from, sync_to) = (pairs * 2, pairs * 2 + 1);
    let (sender, _ev) = login(addr, &format!("u{sync_from}"), &tokens[sync_from]).await?;
    let to = format!("u{sync_to}");
    let next = Arc::new(AtomicU64::new(0));
    let mut fill = Vec::new();
    for _ in 0..32 {
        let (sender, to, next) = (sender.clone(), to.clone(), next.clone());
        fill.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= sync_messages as u64 {
                    return;
                }
                let _ = sender
                    .send_text(&to, &format!("s{n}"), "offline message")
                    .await;
            }
        }));
    }
    for f in fill {
        let _ = f.await;
    }
    sender.shutdown().await;
    let (reader, _ev) = login(addr, &to, &tokens[sync_to]).await?;
    let mut cursors = HashMap::new();
    let t0 = Instant::now();
    let mut got = 0;
    loop {
        let page = reader.sync(&cursors, 1000).await?;
        for m in &page.messages {
            cursors.insert(m.conversation.clone(), m.seq);
        }
        got += page.messages.len();
        if !page.more {
            break;
        }
    }
    let sync_ms = t0.elapsed().as_secs_f64() * 1000.0;
    reader.shutdown().await;
    anyhow::ensure!(
        got == sync_messages,
        "synced {got} of {sync_messages} messages"
    );
    let (d50, d99) = delivered.percentiles();
    let (s50, s99) = sent_lat.percentiles();
    Ok(ImResult {
        pairs,
        window,
        seconds: elapsed,
        messages,
        msgs_per_sec: messages as f64 / elapsed,
        deliver_p50_ms: d50,
        deliver_p99_ms: d99,
        sent_p50_ms: s50,
        sent_p99_ms: s99,
        sync_messages,
        sync_ms,
        bytes_per_online_user: bytes_per_user,
        rss_mb,
        cpu_us_per_msg: cpu_us / messages.max(1) as f64,
        peer_msgs_per_sec: None,
        peer_cpu_us_per_msg: None,
        commits_per_1000_msgs: store.commits as f64 * 1000.0 / messages.max(1) as f64,
        store_ops_per_msg: store.ops as f64 / messages.max(1) as f64,
    })
}

/// mosquitto with persistence carrying the same pairs as plain QoS 1 messages: its
/// throughput and CPU per message.
async fn peer_baseline(
    work: &std::path::Path,
    port: u16,
    pairs: usize,
    seconds: u64,
) -> anyhow::Result<(f64, f64)> {
    let peer = Peer::start(PeerKind::Mosquitto, port, work, true).await?;
    let load = super::load::Load {
        addr: peer.addr,
        shape: super::load::Shape::P2p,
        publishers: pairs,
        subscribers: pairs,
        qos: switchboard_proto::QoS::AtLeastOnce,
        payload: 16,
        rate: None,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(seconds),
        persistent: true,
    };
    let before = peer.stats();
    let r = super::load::run_windowed(&load, "im-peer", WINDOW).await;
    let after = peer.stats();
    peer.stop().await;
    let r = r?;
    let cpu_us = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 * 10_000.0;
    Ok((r.throughput, cpu_us / r.received.max(1) as f64))
}

pub(super) async fn login(
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
pub(super) async fn post(admin: &str, path: &str, body: Value) -> anyhow::Result<Value> {
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

/// utime + stime of process `pid` in clock ticks (100 per second on Linux).
pub(super) fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ")".
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

pub(super) fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Latency samples shared by tasks (a mutex-guarded vector: contention is negligible next
/// to a network round trip).
pub(super) mod latency {
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    pub struct Samples(Mutex<Vec<u64>>);

    impl Samples {
        pub fn push(&self, us: u64) {
            if let Ok(mut v) = self.0.lock() {
                v.push(us);
            }
        }

        /// Adds samples a task collected on its own.
        pub fn extend(&self, us: Vec<u64>) {
            if let Ok(mut v) = self.0.lock() {
                v.extend(us);
            }
        }

        /// p50 and p99 in milliseconds.
        pub fn percentiles(&self) -> (f64, f64) {
            let Ok(mut v) = self.0.lock() else {
                return (0.0, 0.0);
            };
            if v.is_empty() {
                return (0.0, 0.0);
            }
            v.sort_unstable();
            let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
            (at(0.5), at(0.99))
        }
    }
}

/// The markdown table of the IM bench.
pub fn markdown(r: &ImResult) -> String {
    let ratio = r
        .peer_msgs_per_sec
        .map(|p| format!("{:.2}×", r.msgs_per_sec / p))
        .unwrap_or_else(|| "—".into());
    format!(
        "| figure | value |\n|---|---|\n\
         | 1:1 messages/s (durable, {} pairs, window {}) | {:.0} |\n\
         | send → recipient p50 / p99 | {:.2} ms / {:.2} ms |\n\
         | send → \"sent\" answer p50 / p99 | {:.2} ms / {:.2} ms |\n\
         | sync of {} offline messages | {:.1} ms |\n\
         | broker memory per online user | {:.0} B |\n\
         | broker RSS after the run | {:.1} MB |\n\
         | broker CPU per message (user + system) | {:.1} µs |\n\
         | store ops per message; group commits (fsyncs) per 1,000 messages | {:.2}; {:.1} |\n\
         | mosquitto (persistence on), same pairs as plain QoS 1 | {} msg/s, {} µs CPU/msg |\n\
         | Switchboard IM ÷ mosquitto plain QoS 1 | {} |\n",
        r.pairs,
        r.window,
        r.msgs_per_sec,
        r.deliver_p50_ms,
        r.deliver_p99_ms,
        r.sent_p50_ms,
        r.sent_p99_ms,
        r.sync_messages,
        r.sync_ms,
        r.bytes_per_online_user,
        r.rss_mb,
        r.cpu_us_per_msg,
        r.store_ops_per_msg,
        r.commits_per_1000_msgs,
        r.peer_msgs_per_sec
            .map(|p| format!("{p:.0}"))
            .unwrap_or_else(|| "not run".into()),
        r.peer_cpu_us_per_msg
            .map(|p| format!("{p:.1}"))
            .unwrap_or_else(|| "—".into()),
        ratio
    )
}
