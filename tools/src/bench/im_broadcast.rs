//! `switchboard bench --im-broadcast`: a broadcast to every user of a tenant with up to a
//! million users, mostly offline.
//!
//! A Switchboard process with the IM service and its store on disk. For each user count
//! (10,000, then the `--im-broadcast-users` count, 1,000,000 by default), a tenant whose
//! users are made by the directory's CSV import through the admin API (chunks of
//! [`IMPORT_CHUNK`] rows, the store's batched commits: timed and reported separately),
//! [`ONLINE`] of them logged in with the SDK over TCP, then [`BROADCASTS`] broadcasts to
//! everyone through the operator API:
//! - **accept**: request → answer (the broadcast is durable when it is answered);
//! - **online delivery**: request → the last online device has the message;
//! - **store growth**: the redb file's size before and after the broadcasts, per broadcast
//!   (the file grows by pages, so the figure is coarse; what matters is that it does not
//!   scale with users).
//!
//! The peer in the same run is mosquitto (persistence on) carrying one plain QoS 1 message
//! to [`ONLINE`] subscribers: the transport's fan-out without IM semantics, for the ratio of
//! online delivery times. Mosquitto has no equivalent of the offline part (it would need a
//! persistent session and a queued copy per user).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_client::im::{ImClient, ImEvent};
use switchboard_client::{Client, Config, Endpoint, Event};
use switchboard_proto::QoS;
use switchboard_proto::im::event::Kind;

use super::im::rss_kb;
use super::peers::{Peer, PeerKind};

/// Rows per import request.
const IMPORT_CHUNK: usize = 20_000;
/// Online devices.
const ONLINE: usize = 100;
/// Broadcasts measured per tenant.
const BROADCASTS: usize = 20;

/// One tenant's figures.
#[derive(Debug, Serialize)]
pub struct TenantRun {
    pub users: usize,
    pub import_s: f64,
    pub users_per_s: f64,
    pub online: usize,
    pub broadcasts: usize,
    pub accept_p50_ms: f64,
    pub accept_max_ms: f64,
    pub online_p50_ms: f64,
    pub online_max_ms: f64,
    pub store_bytes_before: u64,
    pub store_growth_bytes_per_broadcast: f64,
    pub rss_mb: f64,
}

/// What the broadcast bench measured.
#[derive(Debug, Serialize)]
pub struct BroadcastResult {
    pub runs: Vec<TenantRun>,
    /// mosquitto (persistence on): one QoS 1 message to the same online subscribers,
    /// publish → last subscriber, p50 over the same number of messages.
    pub peer_online_p50_ms: Option<f64>,
}

/// Runs the bench with `users` users in the big tenant.
pub async fn run(work: &Path, port: u16, users: usize) -> anyhow::Result<BroadcastResult> {
    let admin_port = port + 1;
    let dir = work.join("im-broadcast");
    let (mut child, pid, admin) = super::im::start_broker(&dir, port, admin_port, &[]).await?;
    let store = dir.join("switchboard.redb");
    let mut runs = Vec::new();
    let mut failure = None;
    for n in [10_000.min(users), users] {
        match tenant_run(&admin, port, pid, &store, n, runs.len()).await {
            Ok(r) => runs.push(r),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(e) = failure {
        return Err(e);
    }
    let peer_online_p50_ms = peer_baseline(work, port + 2).await.ok();
    Ok(BroadcastResult {
        runs,
        peer_online_p50_ms,
    })
}

async fn tenant_run(
    admin: &str,
    port: u16,
    pid: u32,
    store: &Path,
    users: usize,
    index: usize,
) -> anyhow::Result<TenantRun> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let t = call(
        admin,
        "POST",
        "/api/v1/im/tenants",
        json!({ "name": format!("bench-{users}") }).to_string(),
    )
    .await?;
    let tid = t["tenant_id"].as_u64().context("tenant id")?;
    // Users in 10 regions × 10 teams, imported in chunks.
    let t0 = Instant::now();
    let mut start = 0;
    while start < users {
        let end = (start + IMPORT_CHUNK).min(users);
        let mut csv = String::with_capacity((end - start) * 32);
        csv.push_str("account,department\n");
        for i in start..end {
            csv.push_str(&format!("u{i},Region{}/Team{}\n", i % 10, i % 100));
        }
        let r = call(
            admin,
            "POST",
            &format!("/api/v1/im/tenants/{tid}/import"),
            csv,
        )
        .await?;
        anyhow::ensure!(
            r["created"].as_u64() == Some((end - start) as u64),
            "import answered {r}"
        );
        start = end;
        if start % 200_000 == 0 {
            eprintln!("broadcast bench: {start} users imported");
        }
    }
    let import_s = t0.elapsed().as_secs_f64();
    eprintln!("broadcast bench: {users} users in {import_s:.1} s");
    // The online devices: spread over the tenant.
    let mut devices = Vec::new();
    for k in 0..ONLINE.min(users) {
        let account = format!("u{}", k * (users / ONLINE.min(users)));
        let tok = call(
            admin,
            "POST",
            &format!("/api/v1/im/tenants/{tid}/tokens"),
            json!({ "user": account, "ttl": 3600 }).to_string(),
        )
        .await?;
        let token = tok["token"].as_str().context("token")?;
        let mut cfg = Config::new(
            &format!("bcast-{index}-{account}"),
            vec![Endpoint::Tcp(addr)],
        );
        cfg.username = Some(account.clone());
        cfg.password = Some(token.to_owned().into_bytes().into());
        cfg.session_expiry = 0;
        let (client, events) =
            tokio::time::timeout(Duration::from_secs(30), ImClient::connect(cfg))
                .await
                .context("login timed out")??;
        devices.push((client, events));
    }
    let before = std::fs::metadata(store).map(|m| m.len()).unwrap_or(0);
    let mut accept = Vec::new();
    let mut online = Vec::new();
    for b in 0..BROADCASTS {
        let text = format!("broadcast {b}");
        let t0 = Instant::now();
        call(
            admin,
            "POST",
            &format!("/api/v1/im/tenants/{tid}/broadcast"),
            json!({ "text": text, "client_msg_id": format!("b{b}") }).to_string(),
        )
        .await?;
        accept.push(t0.elapsed().as_secs_f64() * 1000.0);
        for (_, events) in &mut devices {
            wait_for(events, &text).await?;
        }
        online.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let after = std::fs::metadata(store).map(|m| m.len()).unwrap_or(0);
    for (c, _) in &devices {
        c.shutdown().await;
    }
    Ok(TenantRun {
        users,
        import_s,
        users_per_s: users as f64 / import_s.max(1e-9),
        online: devices.len(),
        broadcasts: BROADCASTS,
        accept_p50_ms: percentile(&mut accept, 0.5),
        accept_max_ms: percentile(&mut accept, 1.0),
        online_p50_ms: percentile(&mut online, 0.5),
        online_max_ms: percentile(&mut online, 1.0),
        store_bytes_before: before,
        store_growth_bytes_per_broadcast: after.saturating_sub(before) as f64 / BROADCASTS as f64,
        rss_mb: rss_kb(pid) as f64 / 1024.0,
    })
}

/// Waits until the device has the broadcast with `text`.
async fn wait_for(
    events: &mut tokio::sync::mpsc::Receiver<ImEvent>,
    text: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("broadcast not received within 30 s")?
            .context("device gone")?;
        if let ImEvent::Event(e) = ev
            && let Some(Kind::Message(m)) = &e.kind
            && let Some(switchboard_proto::im::content::Body::Text(t)) =
                m.content.as_ref().and_then(|c| c.body.as_ref())
            && t.text == text
        {
            return Ok(());
        }
    }
}

/// mosquitto, persistence on: one QoS 1 message to [`ONLINE`] subscribers, publish → the
/// last one has it; p50 over [`BROADCASTS`] messages.
async fn peer_baseline(work: &Path, port: u16) -> anyhow::Result<f64> {
    let peer = Peer::start(PeerKind::Mosquitto, port, work, true).await?;
    let result = async {
        let mut subs = Vec::new();
        for i in 0..ONLINE {
            let (c, mut ev) = Client::start(Config::new(
                &format!("peer-sub-{i}"),
                vec![Endpoint::Tcp(peer.addr)],
            ))?;
            c.subscribe_acked("bcast", QoS::AtLeastOnce).await?;
            // Drain the connection event.
            while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(1), ev.recv()).await
            {
                if matches!(e, Event::Message(_)) {
                    break;
                }
            }
            subs.push((c, ev));
        }
        let (publisher, _pev) =
            Client::start(Config::new("peer-pub", vec![Endpoint::Tcp(peer.addr)]))?;
        let mut times = Vec::new();
        for b in 0..BROADCASTS {
            let text = format!("broadcast {b}");
            let t0 = Instant::now();
            publisher
                .publish("bcast", text.clone().into_bytes(), QoS::AtLeastOnce)
                .await?;
            for (_, ev) in &mut subs {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                loop {
                    match tokio::time::timeout_at(deadline, ev.recv()).await {
                        Ok(Some(Event::Message(p))) if p.payload == text.as_bytes() => break,
                        Ok(Some(_)) => {}
                        _ => anyhow::bail!("mosquitto subscriber missed a message"),
                    }
                }
            }
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        for (c, _) in &subs {
            c.shutdown().await;
        }
        publisher.shutdown().await;
        Ok(percentile(&mut times, 0.5))
    }
    .await;
    peer.stop().await;
    result
}

/// One admin API call through `ctl`'s HTTP client (blocking, so off the runtime).
async fn call(
    admin: &str,
    method: &'static str,
    path: &str,
    body: String,
) -> anyhow::Result<Value> {
    let args = crate::AdminArgs {
        admin: admin.to_owned(),
        token: Some("bench".into()),
        data_dir: std::path::PathBuf::new(),
    };
    let path = path.to_owned();
    let answer =
        tokio::task::spawn_blocking(move || crate::ctl::call(&args, method, &path, Some(&body)))
            .await??;
    Ok(serde_json::from_str(&answer).unwrap_or(Value::Null))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// The report.
pub fn markdown(r: &BroadcastResult) -> String {
    let mut md = String::from(
        "| users | import | users/s | accept p50 / max | online devices have it p50 / max | store growth per broadcast | broker RSS |\n|---|---|---|---|---|---|---|\n",
    );
    for t in &r.runs {
        md.push_str(&format!(
            "| {} | {:.1} s | {:.0} | {:.1} ms / {:.1} ms | {:.1} ms / {:.1} ms ({} online) | {:.0} B (store {:.1} MB) | {:.0} MB |\n",
            t.users,
            t.import_s,
            t.users_per_s,
            t.accept_p50_ms,
            t.accept_max_ms,
            t.online_p50_ms,
            t.online_max_ms,
            t.online,
            t.store_growth_bytes_per_broadcast,
            t.store_bytes_before as f64 / 1e6,
            t.rss_mb,
        ));
    }
    if let Some(last) = r.runs.last() {
        md.push_str(&format!(
            "\n{} broadcasts to everyone per tenant, {} devices online, every other user offline. \
             Accept: operator API request → answer (the broadcast is durable then). Store \
             growth: the redb file's size before and after the broadcasts (it grows by pages: \
             0 B means the appends fit in free pages; a copy per user would have cost about \
             {:.0} B per user per broadcast, what the import wrote per user). Users: the \
             directory's CSV import through the operator API, {} rows per request. Broker RSS \
             includes redb's page cache.\n",
            last.broadcasts,
            last.online,
            last.store_bytes_before as f64 / last.users.max(1) as f64,
            IMPORT_CHUNK,
        ));
    }
    if let (Some(p), Some(last)) = (r.peer_online_p50_ms, r.runs.last()) {
        md.push_str(&format!(
            "\nmosquitto (persistence on), one plain QoS 1 message to the same {} online subscribers: p50 {p:.1} ms; Switchboard broadcast ÷ mosquitto: {:.2}× (lower is faster; the broadcast also commits to the store and reaches every offline user through sync)\n",
            last.online,
            last.online_p50_ms / p.max(1e-9),
        ));
    }
    md
}
