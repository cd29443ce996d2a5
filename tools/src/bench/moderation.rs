//! `switchboard bench --moderation`: what moderation costs a 1:1 send.
//!
//! A Switchboard process with the IM service and its store on disk; the bench logs in as
//! the `$service` app server (the credential `up`/`broker` writes into the data directory)
//! to make the tenant, users and tokens and to set moderation, and logs devices in with the
//! SDK over TCP. The same pairs then send for the measured seconds in two settings:
//! - **off**: no word list, no rate limit (the `check_send` reads only);
//! - **on**: a list of `words` random words (replace mode; one message in ten carries a
//!   listed word and is masked) and a rate limit high enough never to refuse (every send
//!   takes a token).
//!
//! Phases run off, on, on, off and each figure is the mean of its two phases; the ratio
//! on ÷ off is the comparison. A third figure is the matcher alone, in process:
//! masking 1 KiB of text against the same list (ns per text).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_broker::im::moderation::words::{Filter, Mode, WordList};
use switchboard_client::im::ImClient;
use switchboard_client::{Client, Config, Endpoint, Event};
use switchboard_proto::{Properties, Publish, QoS};
use tokio::process::Command;
use tokio::sync::{Mutex, mpsc};

/// What the moderation bench measured.
#[derive(Debug, Serialize)]
pub struct ModerationResult {
    pub pairs: usize,
    pub window: usize,
    pub words: usize,
    pub seconds: f64,
    pub off_msgs_per_sec: f64,
    pub off_sent_p50_ms: f64,
    pub off_sent_p99_ms: f64,
    pub on_msgs_per_sec: f64,
    pub on_sent_p50_ms: f64,
    pub on_sent_p99_ms: f64,
    /// on ÷ off.
    pub ratio: f64,
    /// Masking 1 KiB of text against the list, in process.
    pub mask_ns_per_kib: f64,
    pub build_ms: f64,
}

/// Sends in flight per sender.
const WINDOW: usize = 2;

pub async fn run(
    work: &std::path::Path,
    port: u16,
    pairs: usize,
    seconds: u64,
    words: usize,
) -> anyhow::Result<ModerationResult> {
    let list = word_list(words);
    let (mask_ns_per_kib, build_ms) = matcher_alone(&list)?;
    let dir = work.join("moderation");
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
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start switchboard")?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "switchboard did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = measure(&dir, addr, pairs, seconds, &list).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    let (off, on) = result?;
    Ok(ModerationResult {
        pairs,
        window: WINDOW,
        words,
        seconds: seconds as f64 * 2.0,
        off_msgs_per_sec: off.0,
        off_sent_p50_ms: off.1,
        off_sent_p99_ms: off.2,
        on_msgs_per_sec: on.0,
        on_sent_p50_ms: on.1,
        on_sent_p99_ms: on.2,
        ratio: if off.0 > 0.0 { on.0 / off.0 } else { 0.0 },
        mask_ns_per_kib,
        build_ms,
    })
}

/// `n` distinct pseudo-random lowercase words of 4..=10 letters (deterministic).
fn word_list(n: usize) -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let len = 4 + (next() % 7) as usize;
            let mut w: String = (0..len)
                .map(|_| char::from(b'a' + (next() % 26) as u8))
                .collect();
            w.push_str(&format!("{i}"));
            w
        })
        .collect()
}

/// The matcher in process: build time, and ns to mask 1 KiB of text.
fn matcher_alone(list: &[String]) -> anyhow::Result<(f64, f64)> {
    let t0 = Instant::now();
    let filter = Filter::new(&WordList {
        words: list.to_vec(),
        mode: Mode::Replace,
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .context("empty list")?;
    let build_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let mut text = "The quick brown fox jumps over the lazy dog; 快速的棕色狐狸. ".repeat(20);
    let cut = text
        .char_indices()
        .map(|(i, _)| i)
        .take_while(|i| *i <= 1000)
        .last()
        .unwrap_or(0);
    text.truncate(cut);
    text.push_str(&list[list.len() / 2]);
    let rounds = 20_000;
    let t0 = Instant::now();
    let mut masked = 0usize;
    for _ in 0..rounds {
        masked += usize::from(filter.mask(std::hint::black_box(&text)).is_some());
    }
    anyhow::ensure!(masked == rounds, "the listed word was not found");
    Ok((t0.elapsed().as_nanos() as f64 / rounds as f64, build_ms))
}

/// (messages/s, sent p50 ms, sent p99 ms) with moderation off, then on.
type Phase = (f64, f64, f64);

async fn measure(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    pairs: usize,
    seconds: u64,
    list: &[String],
) -> anyhow::Result<(Phase, Phase)> {
    let creds: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("service.credentials"))
            .context("no service credential in the data directory")?,
    )?;
    let secret = creds["password"].as_str().context("service password")?;
    let app = AppServer::connect(addr, secret).await?;
    let t = app
        .call("create_tenant", json!({"name": "bench-moderation"}))
        .await?;
    let tid = t["tenant_id"].as_u64().context("tenant id")?;
    let mut devices = Vec::new();
    for i in 0..pairs * 2 {
        let account = format!("u{i}");
        app.call("create_user", json!({"tenant": tid, "account": account}))
            .await?;
        let tok = app
            .call(
                "token",
                json!({"tenant": tid, "user": account, "ttl": 3600}),
            )
            .await?;
        let tok = tok["token"].as_str().context("token")?;
        let mut cfg = Config::new(&format!("bench-{account}"), vec![Endpoint::Tcp(addr)]);
        cfg.username = Some(account.clone());
        cfg.password = Some(tok.to_owned().into_bytes().into());
        cfg.session_expiry = 0;
        let (client, mut events) = ImClient::connect(cfg)
            .await
            .with_context(|| format!("login of {account}"))?;
        // Drain the recipients' events.
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        devices.push(client);
    }
    eprintln!("moderation bench: {} devices online", devices.len());
    // Off, on, on, off: the store grows as the run goes, and this order cancels a steady
    // drift; each figure is the mean of its two phases.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for moderated in [false, true, true, false] {
        let p = if moderated {
            app.call(
                "moderation/set_words",
                json!({"tenant": tid, "words": list, "mode": "replace"}),
            )
            .await?;
            app.call(
                "moderation/set_rate_limit",
                json!({"tenant": tid, "messages": 1_000_000, "per_secs": 1, "burst": 1_000_000}),
            )
            .await?;
            phase(&devices, seconds, Some(&list[0])).await
        } else {
            app.call("moderation/set_words", json!({"tenant": tid, "words": []}))
                .await?;
            app.call(
                "moderation/set_rate_limit",
                json!({"tenant": tid, "messages": 0}),
            )
            .await?;
            phase(&devices, seconds, None).await
        };
        eprintln!(
            "moderation bench: moderation {}: {:.0} msg/s",
            if moderated { "on" } else { "off" },
            p.0
        );
        if moderated { on.push(p) } else { off.push(p) }
    }
    let mean = |v: &[Phase]| {
        let n = v.len().max(1) as f64;
        (
            v.iter().map(|p| p.0).sum::<f64>() / n,
            v.iter().map(|p| p.1).sum::<f64>() / n,
            v.iter().map(|p| p.2).sum::<f64>() / n,
        )
    };
    let (off, on) = (mean(&off), mean(&on));
    for d in &devices {
        d.shutdown().await;
    }
    app.client.shutdown().await;
    Ok((off, on))
}

/// Every pair sends for `seconds` with [`WINDOW`] sends in flight; one text in ten carries
/// `word` if given.
async fn phase(devices: &[ImClient], seconds: u64, word: Option<&String>) -> Phase {
    let sent = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let tag = if word.is_some() { "on" } else { "off" };
    let mut tasks = Vec::new();
    for p in 0..devices.len() / 2 {
        for w in 0..WINDOW {
            let client = devices[p * 2].clone();
            let to = format!("u{}", p * 2 + 1);
            let (sent, lat) = (sent.clone(), lat.clone());
            let word = word.cloned();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < stop_at {
                    n += 1;
                    let text = match &word {
                        Some(x) if n.is_multiple_of(10) => format!("hello {x} there"),
                        _ => "hello there, nothing to see".to_owned(),
                    };
                    let t0 = Instant::now();
                    if client
                        .send_text(&to, &format!("{tag}-{w}-{n}"), &text)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    if let Ok(mut v) = lat.lock() {
                        v.push(t0.elapsed().as_micros() as u64);
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    let t0 = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let mut v = lat.lock().map(|v| v.clone()).unwrap_or_default();
    v.sort_unstable();
    let at = |q: f64| {
        v.get(((v.len().max(1) - 1) as f64 * q) as usize)
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    (
        sent.load(Ordering::Relaxed) as f64 / elapsed,
        at(0.5),
        at(0.99),
    )
}

/// The `$service` login making JSON requests on `$im/admin/{op}`.
struct AppServer {
    client: Client,
    answers: Mutex<mpsc::Receiver<Value>>,
}

impl AppServer {
    async fn connect(addr: std::net::SocketAddr, secret: &str) -> anyhow::Result<AppServer> {
        let mut cfg = Config::new("bench-app-server", vec![Endpoint::Tcp(addr)]);
        cfg.username = Some("$service".into());
        cfg.password = Some(Bytes::from(secret.to_owned()));
        cfg.session_expiry = 0;
        let (client, mut events) = Client::start(cfg)?;
        let (tx, answers) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if let Event::Message(p) = e {
                    let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    if tx.send(v).await.is_err() {
                        return;
                    }
                }
            }
        });
        client
            .subscribe_acked("bench/app-server", QoS::AtLeastOnce)
            .await?;
        Ok(AppServer {
            client,
            answers: Mutex::new(answers),
        })
    }

    /// One request at a time (the answers lock is held until its answer arrives).
    async fn call(&self, op: &str, body: Value) -> anyhow::Result<Value> {
        let mut answers = self.answers.lock().await;
        self.client
            .publish_message(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: format!("$im/admin/{op}"),
                pkid: 0,
                properties: Properties {
                    response_topic: Some("bench/app-server".into()),
                    ..Properties::default()
                },
                payload: Bytes::from(body.to_string()),
            })
            .await?;
        let v = tokio::time::timeout(Duration::from_secs(30), answers.recv())
            .await
            .with_context(|| format!("{op}: no answer"))?
            .context("service client closed")?;
        anyhow::ensure!(v.get("error").is_none(), "{op}: {v}");
        Ok(v)
    }
}

/// The markdown table of the moderation bench.
pub fn markdown(r: &ModerationResult) -> String {
    format!(
        "| figure | moderation off | moderation on ({} words, rate limit) |\n|---|---|---|\n\
         | 1:1 messages/s (durable, {} pairs, window {}) | {:.0} | {:.0} |\n\
         | send → \"sent\" answer p50 / p99 | {:.2} / {:.2} ms | {:.2} / {:.2} ms |\n\
         | on ÷ off | | {:.2}× |\n\n\
         Matcher alone ({} words, Aho-Corasick, in process): built in {:.1} ms; masking 1 KiB \
         of text takes {:.0} ns.\n",
        r.words,
        r.pairs,
        r.window,
        r.off_msgs_per_sec,
        r.on_msgs_per_sec,
        r.off_sent_p50_ms,
        r.off_sent_p99_ms,
        r.on_sent_p50_ms,
        r.on_sent_p99_ms,
        r.ratio,
        r.words,
        r.build_ms,
        r.mask_ns_per_kib,
    )
}
