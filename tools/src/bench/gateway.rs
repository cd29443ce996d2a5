//! `switchboard bench --gateway`: REST → MQTT. An app server sends 1:1 messages through the
//! gateway's signed `POST /v1/messages/private` (HTTP/1.1 keep-alive, `concurrency`
//! requests in flight); recipients' devices are logged in over MQTT. Measured: accepted
//! messages/s, the REST answer's latency (after the commit) and send → device latency;
//! and, in the same run and process, the same traffic sent by devices over MQTT (the SDK's
//! `send`), for the ratio: what the HTTP hop costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_client::im::ImEvent;
use switchboard_proto::im::event::Kind;

use super::im::{latency::Samples, login, post, start_broker};

/// What the gateway bench measured.
#[derive(Debug, Serialize)]
pub struct GatewayResult {
    pub recipients: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub rest_messages: u64,
    pub rest_msgs_per_sec: f64,
    pub rest_answer_p50_ms: f64,
    pub rest_answer_p99_ms: f64,
    pub rest_deliver_p50_ms: f64,
    pub rest_deliver_p99_ms: f64,
    pub rest_errors: u64,
    /// The same traffic sent by devices over MQTT.
    pub mqtt_msgs_per_sec: f64,
    pub mqtt_deliver_p99_ms: f64,
}

/// Devices of the recipients record send → receive latency (the send time is the text).
fn record(
    start: Instant,
    mut events: tokio::sync::mpsc::Receiver<ImEvent>,
    into: Arc<Samples>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let ImEvent::Event(e) = e
                && let Some(Kind::Message(m)) = &e.kind
                && let Some(switchboard_proto::im::content::Body::Text(t)) =
                    m.content.as_ref().and_then(|c| c.body.as_ref())
                && let Some(us) = t.text.split(':').nth(1).and_then(|x| x.parse::<u64>().ok())
            {
                into.push((start.elapsed().as_micros() as u64).saturating_sub(us));
            }
        }
    })
}

/// Runs the bench: `recipients` devices, `concurrency` requests in flight, `seconds` per
/// phase.
pub async fn run(
    work: &std::path::Path,
    port: u16,
    recipients: usize,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<GatewayResult> {
    let http_port = port + 3;
    let dir = work.join("gw");
    let http = format!("127.0.0.1:{http_port}");
    let (mut child, _pid, admin) = start_broker(&dir, port, port + 1, &["--http", &http]).await?;
    let r = measure(&admin, port, &http, recipients, concurrency, seconds).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    r
}

async fn measure(
    admin: &str,
    port: u16,
    http: &str,
    recipients: usize,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<GatewayResult> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let t: Value = post(admin, "/api/v1/im/tenants", json!({ "name": "gw-bench" })).await?;
    let tid = t["tenant_id"].as_u64().context("tenant id")?;
    let key = t["app_key"].as_str().context("app key")?.to_owned();
    let secret = t["app_secret"].as_str().context("app secret")?.to_owned();
    // No per-tenant call budget in the way of the measurement.
    let args = crate::AdminArgs {
        admin: admin.to_owned(),
        token: Some("bench".into()),
        data_dir: std::path::PathBuf::new(),
    };
    let path = format!("/api/v1/im/tenants/{tid}/policy");
    tokio::task::spawn_blocking(move || {
        crate::ctl::call(&args, "PATCH", &path, Some(r#"{"api_rate_per_sec": 0}"#))
    })
    .await??;
    let mut accounts = vec!["sender".to_owned()];
    accounts.extend((0..recipients).map(|i| format!("r{i}")));
    let mut tokens = Vec::new();
    for a in &accounts {
        post(
            admin,
            &format!("/api/v1/im/tenants/{tid}/users"),
            json!({ "account": a }),
        )
        .await?;
        let tok: Value = post(
            admin,
            &format!("/api/v1/im/tenants/{tid}/tokens"),
            json!({ "user": a, "ttl": 3600 }),
        )
        .await?;
        tokens.push(tok["token"].as_str().context("token")?.to_owned());
    }
    let start = Instant::now();
    let rest_delivered: Arc<Samples> = Arc::default();
    let mut devices = Vec::new();
    for (a, tok) in accounts.iter().zip(&tokens).skip(1) {
        let (c, ev) = login(addr, a, tok).await?;
        devices.push((c, record(start, ev, rest_delivered.clone())));
    }
    let (sender, _sender_events) = login(addr, "sender", &tokens[0]).await?;

    // Phase 1: REST.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let answered: Arc<Samples> = Arc::default();
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (client, sent, errors, answered) = (
            client.clone(),
            sent.clone(),
            errors.clone(),
            answered.clone(),
        );
        let (key, secret, url) = (
            key.clone(),
            secret.clone(),
            format!("http://{http}/v1/messages/private"),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop_at {
                n += 1;
                let to = format!("r{}", (w as u64 + n) % recipients as u64);
                let t0 = start.elapsed().as_micros() as u64;
                let body =
                    json!({ "from": "sender", "to": to, "client_msg_id": format!("g{w}-{n}"),
                                   "content": { "type": "text", "text": format!("rest:{t0}") } })
                    .to_string();
                let nonce = format!("{w}-{n}-{t0}");
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
                    .to_string();
                let sig = switchboard_gateway::native::auth::signature(
                    &secret,
                    &nonce,
                    &ts,
                    body.as_bytes(),
                );
                let Ok(req) = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .header("app-key", &key)
                    .header("nonce", &nonce)
                    .header("timestamp", &ts)
                    .header("signature", sig)
                    .body(Full::new(Bytes::from(body)))
                else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match client.request(req).await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.into_body().collect().await;
                        answered.push(start.elapsed().as_micros() as u64 - t0);
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(resp) => {
                        let _ = resp.into_body().collect().await;
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let t0 = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let rest_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rd50, rd99) = rest_delivered.percentiles();
    let (ra50, ra99) = answered.percentiles();
    let rest_messages = sent.load(Ordering::Relaxed);
    eprintln!("gateway bench: {rest_messages} messages over REST; now over MQTT");

    // Phase 2: the same over MQTT, from the sender's device (fresh latency samples).
    let mqtt_delivered: Arc<Samples> = Arc::default();
    for (c, task) in devices.drain(..) {
        c.shutdown().await;
        task.abort();
    }
    for (a, tok) in accounts.iter().zip(&tokens).skip(1) {
        let (c, ev) = login(addr, a, tok).await?;
        devices.push((c, record(start, ev, mqtt_delivered.clone())));
    }
    let msent = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (sender, msent) = (sender.clone(), msent.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop_at {
                n += 1;
                let to = format!("r{}", (w as u64 + n) % recipients as u64);
                let t0 = start.elapsed().as_micros() as u64;
                if sender
                    .send_text(&to, &format!("m{w}-{n}"), &format!("mqtt:{t0}"))
                    .await
                    .is_ok()
                {
                    msent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let t0 = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let mqtt_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, md99) = mqtt_delivered.percentiles();
    for (c, task) in &devices {
        c.shutdown().await;
        task.abort();
    }
    sender.shutdown().await;
    Ok(GatewayResult {
        recipients,
        concurrency,
        seconds: rest_secs,
        rest_messages,
        rest_msgs_per_sec: rest_messages as f64 / rest_secs,
        rest_answer_p50_ms: ra50,
        rest_answer_p99_ms: ra99,
        rest_deliver_p50_ms: rd50,
        rest_deliver_p99_ms: rd99,
        rest_errors: errors.load(Ordering::Relaxed),
        mqtt_msgs_per_sec: msent.load(Ordering::Relaxed) as f64 / mqtt_secs,
        mqtt_deliver_p99_ms: md99,
    })
}

/// The markdown report.
pub fn markdown(r: &GatewayResult) -> String {
    format!(
        "# Gateway: REST → MQTT\n\n\
         {} recipients online over MQTT, {} signed `POST /v1/messages/private` in flight \
         (HTTP/1.1 keep-alive), {:.1} s; then the same traffic sent by a device over MQTT.\n\n\
         | path | messages/s | answer p50 / p99 (ms) | send → device p50 / p99 (ms) |\n\
         |---|---|---|---|\n\
         | REST (gateway) | {:.0} | {:.1} / {:.1} | {:.1} / {:.1} |\n\
         | MQTT (SDK send) | {:.0} | | – / {:.1} |\n\n\
         REST / MQTT throughput: {:.2}×. Errors over REST: {}.\n",
        r.recipients,
        r.concurrency,
        r.seconds,
        r.rest_msgs_per_sec,
        r.rest_answer_p50_ms,
        r.rest_answer_p99_ms,
        r.rest_deliver_p50_ms,
        r.rest_deliver_p99_ms,
        r.mqtt_msgs_per_sec,
        r.mqtt_deliver_p99_ms,
        if r.mqtt_msgs_per_sec > 0.0 {
            r.rest_msgs_per_sec / r.mqtt_msgs_per_sec
        } else {
            0.0
        },
        r.rest_errors,
    )
}
