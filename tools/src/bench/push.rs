//! `switchboard bench --push`: the push worker draining a queue of jobs into local mock
//! push services.
//!
//! A Switchboard process (broker + IM service + gateway with its push worker, store on
//! disk) whose push endpoints all point at the mock APNs/FCM server of
//! `switchboard-push-mock` (HTTP/2 over TLS, test CA; it checks every JWT and bearer as
//! the real services do) running in this process. `users` users each get one device token,
//! APNs and FCM alternately, through the admin API. Then `jobs` push jobs are published on
//! `$im/push/{tenant}` as the `$service` identity, exactly as the broker emits them
//! (protobuf `PushJob`), as fast as MQTT flow control lets them in: they queue in the broker
//! and the worker drains them. Measured: pushes/s (first publish → last push received by
//! the mock), latency job published → push received (p50/p90/p99/max: with a queue this
//! is mostly waiting in it), and the process's RSS sampled every 200 ms while the queue
//! drains. The reference in the same run: the same provider code sending the same number
//! of notifications straight to the mock with the same concurrency (no broker, no job
//! queue, no token look-up): the ceiling of this machine's mock and TLS stack; the ratio
//! says what the job pipeline costs.
//!
//! Bounded: every loop has a count and a deadline (publishing 60 s, draining 120 s); a
//! push that never arrives is reported as missing, never waited for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use prost::Message as _;
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_client::{Client, Config, Endpoint};
use switchboard_gateway::push::provider::{Device, Notification, PushProvider};
use switchboard_proto::im::PushJob;
use switchboard_proto::{Properties, Publish, QoS};
use switchboard_push_mock::{Hit, PushMock};

use super::im::{post, rss_kb, start_broker};

/// Shape of the run.
#[derive(Debug, Clone, Copy)]
pub struct PushBench {
    pub jobs: usize,
    pub users: usize,
    /// The worker's `max_concurrent`.
    pub concurrency: usize,
}

/// What the push bench measured.
#[derive(Debug, Serialize)]
pub struct PushResult {
    pub jobs: usize,
    pub users: usize,
    pub concurrency: usize,
    pub publish_seconds: f64,
    pub drain_seconds: f64,
    pub delivered: usize,
    pub missing: usize,
    pub duplicates: usize,
    pub pushes_per_sec: f64,
    pub latency_p50_ms: f64,
    pub latency_p90_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Jobs still queued (published, not yet pushed) when the RSS sample was taken.
    pub rss_samples: Vec<RssSample>,
    pub rss_start_mb: f64,
    pub rss_peak_mb: f64,
    pub rss_end_mb: f64,
    /// The provider code alone, straight to the mock, same count and concurrency.
    pub direct_pushes_per_sec: f64,
    pub ratio_to_direct: f64,
}

#[derive(Debug, Serialize)]
pub struct RssSample {
    pub seconds: f64,
    pub queued: usize,
    pub rss_mb: f64,
}

const PUBLISH_DEADLINE: Duration = Duration::from_secs(60);
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

/// Runs the bench in `work`, the broker's MQTT on `port` (admin and HTTP on the next two).
pub async fn run(
    work: &std::path::Path,
    port: u16,
    shape: PushBench,
) -> anyhow::Result<PushResult> {
    let mut mock = PushMock::start().await;
    let dir = work.join("push");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let ca = dir.join("mock-ca.pem");
    std::fs::write(&ca, &mock.ca_pem)?;
    let base = mock.base();
    let config = dir.join("push.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway.push]\nextra_ca = {ca:?}\nmax_concurrent = {}\n\
             apns_production = {base:?}\napns_sandbox = {base:?}\nfcm_base = {base:?}\n",
            shape.concurrency
        ),
    )?;
    let http = format!("127.0.0.1:{}", port + 2);
    let data = dir.join("data");
    let cfg_arg = config.to_string_lossy().into_owned();
    let (mut child, pid, admin) = start_broker(
        &data,
        port,
        port + 1,
        &["--http", &http, "--config", &cfg_arg],
    )
    .await?;
    let r = measure(&mut mock, &admin, &data, port, pid, shape).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    let mut r = r?;
    r.direct_pushes_per_sec = direct(&mut mock, shape).await?;
    r.ratio_to_direct = r.pushes_per_sec / r.direct_pushes_per_sec.max(1e-9);
    Ok(r)
}

/// The job id of job `i` (parsed back from the pushes).
fn job_id(i: usize) -> String {
    format!("bench:{i}")
}

/// The index of the job a push carries (APNs: `job`; FCM: `message.data.job`).
fn job_of(h: &Hit) -> Option<usize> {
    let v = h.json();
    let id = v["job"]
        .as_str()
        .or_else(|| v["message"]["data"]["job"].as_str())?;
    id.strip_prefix("bench:")?.parse().ok()
}

async fn measure(
    mock: &mut PushMock,
    admin: &str,
    data: &std::path::Path,
    port: u16,
    pid: u32,
    shape: PushBench,
) -> anyhow::Result<PushResult> {
    let t: Value = post(admin, "/api/v1/im/tenants", json!({ "name": "push-bench" })).await?;
    let tid = t["tenant_id"].as_u64().context("tenant id")?;
    let mut creds = mock.credentials();
    creds["tenant"] = tid.into();
    post(admin, "/api/v1/im/call/push/credentials/set", creds).await?;
    for u in 0..shape.users {
        let account = format!("u{u}");
        post(
            admin,
            &format!("/api/v1/im/tenants/{tid}/users"),
            json!({ "account": account }),
        )
        .await?;
        let vendor = if u % 2 == 0 { "apns" } else { "fcm" };
        post(
            admin,
            "/api/v1/im/call/push/register",
            json!({"tenant": tid, "user": account, "vendor": vendor,
                   "token": format!("tok-{u}"), "bundle_id": "com.example.chat"}),
        )
        .await?;
    }

    // The publisher: a `$service` login, its queue big enough to hold every job while
    // the broker's Receive Maximum paces it.
    let secret = crate::gateway_cmd::read_secret(&data.join(crate::secrets::SERVICE_CREDENTIALS))?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut cfg = Config::new("push-bench-publisher", vec![Endpoint::Tcp(addr)]);
    cfg.username = Some("$service".into());
    cfg.password = Some(Bytes::from(secret.into_bytes()));
    cfg.session_expiry = 0;
    cfg.offline_queue = shape.jobs + 1;
    let (publisher, mut events) = Client::start(cfg)?;
    let drain_events = tokio::spawn(async move { while events.recv().await.is_some() {} });

    let rss0 = rss_kb(pid);
    let mut published: Vec<Option<Instant>> = vec![None; shape.jobs];
    let start = Instant::now();
    let topic = format!("$im/push/{tid}");
    for (i, at) in published.iter_mut().enumerate() {
        anyhow::ensure!(
            start.elapsed() < PUBLISH_DEADLINE,
            "publishing {} jobs took over {PUBLISH_DEADLINE:?}",
            shape.jobs
        );
        let u = i % shape.users;
        let job = PushJob {
            job_id: job_id(i),
            tenant: tid,
            user: format!("u{u}"),
            badge: (i / shape.users + 1) as u64,
            title: "alice".into(),
            body: format!("message {i}"),
            conversation: format!("u:alice:u{u}"),
            seq: i as u64 + 1,
            collapse_key: format!("u:alice:u{u}"),
            from: "alice".into(),
            users: Vec::new(),
            platforms: Vec::new(),
        };
        let p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.clone(),
            pkid: 0,
            properties: Properties::default(),
            payload: Bytes::from(job.encode_to_vec()),
        };
        tokio::time::timeout(PUBLISH_DEADLINE, publisher.publish_message(p))
            .await
            .context("a publish did not return")??;
        *at = Some(Instant::now());
    }
    let publish_seconds = start.elapsed().as_secs_f64();

    // Drain: every push the mock receives, RSS sampled every 200 ms.
    let mut seen = vec![false; shape.jobs];
    let (mut delivered, mut duplicates) = (0usize, 0usize);
    let mut latencies = Vec::with_capacity(shape.jobs);
    let mut last = start;
    let mut samples = Vec::new();
    let mut next_sample = Instant::now();
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while delivered < shape.jobs && Instant::now() < deadline {
        if Instant::now() >= next_sample {
            samples.push(RssSample {
                seconds: start.elapsed().as_secs_f64(),
                queued: shape.jobs - delivered,
                rss_mb: rss_kb(pid) as f64 / 1024.0,
            });
            next_sample += Duration::from_millis(200);
        }
        let Some(h) = mock.next_within(Duration::from_millis(200)).await else {
            continue;
        };
        let Some(i) = job_of(&h).filter(|i| *i < shape.jobs) else {
            continue;
        };
        if std::mem::replace(&mut seen[i], true) {
            duplicates += 1;
            continue;
        }
        delivered += 1;
        last = h.at;
        if let Some(p) = published[i] {
            latencies.push(h.at.saturating_duration_since(p).as_secs_f64() * 1000.0);
        }
    }
    samples.push(RssSample {
        seconds: start.elapsed().as_secs_f64(),
        queued: shape.jobs - delivered,
        rss_mb: rss_kb(pid) as f64 / 1024.0,
    });
    publisher.shutdown().await;
    drain_events.abort();
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let drain_seconds = last.saturating_duration_since(start).as_secs_f64();
    let peak = samples.iter().map(|s| s.rss_mb).fold(0.0, f64::max);
    Ok(PushResult {
        jobs: shape.jobs,
        users: shape.users,
        concurrency: shape.concurrency,
        publish_seconds,
        drain_seconds,
        delivered,
        missing: shape.jobs - delivered,
        duplicates,
        pushes_per_sec: delivered as f64 / drain_seconds.max(1e-9),
        latency_p50_ms: pct(0.5),
        latency_p90_ms: pct(0.9),
        latency_p99_ms: pct(0.99),
        latency_max_ms: latencies.last().copied().unwrap_or(0.0),
        rss_start_mb: rss0 as f64 / 1024.0,
        rss_peak_mb: peak,
        rss_end_mb: samples.last().map_or(0.0, |s| s.rss_mb),
        rss_samples: samples,
        direct_pushes_per_sec: 0.0,
        ratio_to_direct: 0.0,
    })
}

/// The APNs provider alone, straight to the mock: `jobs` notifications with
/// `concurrency` in flight; pushes/s.
async fn direct(mock: &mut PushMock, shape: PushBench) -> anyhow::Result<f64> {
    use switchboard_gateway::push::{apns, https};
    let tls = https::tls_config(Some(mock.ca_pem.as_bytes())).map_err(anyhow::Error::msg)?;
    let creds: apns::ApnsCredentials = serde_json::from_value(mock.credentials()["apns"].clone())?;
    let base = mock.base();
    let p = Arc::new(
        apns::Apns::new(creds, &base, &base, https::Https::new(tls)).map_err(anyhow::Error::msg)?,
    );
    mock.drain();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + DRAIN_DEADLINE;
    let mut tasks = Vec::new();
    for _ in 0..shape.concurrency.max(1) {
        let (p, next) = (p.clone(), next.clone());
        let jobs = shape.jobs;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= jobs || Instant::now() >= deadline {
                    return;
                }
                let d = Device {
                    vendor: "apns".into(),
                    token: format!("tok-{i}"),
                    bundle_id: "com.example.chat".into(),
                    sandbox: false,
                };
                let n = Notification {
                    job_id: job_id(i),
                    title: "alice".into(),
                    body: format!("message {i}"),
                    badge: Some(1),
                    collapse_key: "u:alice".into(),
                    conversation: "u:alice".into(),
                    seq: i as u64,
                    from: "alice".into(),
                    silent: false,
                };
                let _ = p.send(&d, &n).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let got = mock.drain().len();
    Ok(got as f64 / secs.max(1e-9))
}

/// The markdown report.
pub fn markdown(r: &PushResult) -> String {
    let mut s = format!(
        "| figure | value |\n|---|---|\n\
         | jobs queued (users, APNs and FCM alternately) | {} ({}) |\n\
         | worker concurrency (`max_concurrent`) | {} |\n\
         | pushes delivered / missing / duplicated | {} / {} / {} |\n\
         | **pushes/s** (first publish → last push at the mock) | **{:.0}** |\n\
         | publishing all jobs took | {:.2} s |\n\
         | latency job published → push received p50 / p90 / p99 / max | {:.0} / {:.0} / {:.0} / {:.0} ms |\n\
         | process RSS before / peak while draining / after | {:.1} / {:.1} / {:.1} MB |\n\
         | same provider code straight to the mock (no broker, no queue) | {:.0} pushes/s |\n\
         | worker ÷ direct | {:.2}× |\n",
        r.jobs,
        r.users,
        r.concurrency,
        r.delivered,
        r.missing,
        r.duplicates,
        r.pushes_per_sec,
        r.publish_seconds,
        r.latency_p50_ms,
        r.latency_p90_ms,
        r.latency_p99_ms,
        r.latency_max_ms,
        r.rss_start_mb,
        r.rss_peak_mb,
        r.rss_end_mb,
        r.direct_pushes_per_sec,
        r.ratio_to_direct,
    );
    s.push_str("\nRSS while the queue drains (every ~1 s):\n\n| t (s) | jobs not yet pushed | RSS (MB) |\n|---|---|---|\n");
    for x in r.rss_samples.iter().step_by(5) {
        s.push_str(&format!(
            "| {:.1} | {} | {:.1} |\n",
            x.seconds, x.queued, x.rss_mb
        ));
    }
    s
}
