//! `switchboard bench --cluster`: the cost of the NATS hop. On this machine, in one run: a
//! plain single node (no cluster), then a nats-server and three cluster nodes; point to
//! point at QoS 0 and QoS 1 with publishers and subscribers on the same node ("local") and
//! on two different nodes ("cross-node"). Reports throughput, latency and CPU per message
//! (broker nodes and nats-server together), with the cross-node / single ratio.
//!
//! Everything runs on loopback and shares the machine's cores with the load generator, so
//! the figures are a floor for real hardware, not a ceiling (see `docs/cluster.md`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use switchboard_proto::QoS;
use tokio::process::{Child, Command};

use super::load::{self, Load, Shape};

/// Publisher/subscriber pairs per run.
const PAIRS: usize = 50;
const PAYLOAD: usize = 64;
/// Saturated runs (throughput; their latency is queueing) and a rate-limited one (latency).
const RUNS: [(QoS, Option<u32>); 4] = [
    (QoS::AtMostOnce, None),
    (QoS::AtMostOnce, Some(20_000)),
    (QoS::AtLeastOnce, None),
    (QoS::AtLeastOnce, Some(20_000)),
];

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub setup: String,
    pub qos: u8,
    /// Offered messages/s (all publishers), `None`: as fast as it goes.
    pub rate: Option<u32>,
    pub throughput: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU of every broker node and nats-server, per received message.
    pub cpu_us_per_msg: f64,
    pub received: u64,
    /// Messages the publishers sent (the delivered share is `received / sent`).
    pub sent: u64,
    /// Cross-node rows: how long the publishing node took to learn the subscribing node's
    /// filters before the load started (ms; `None`: not waited for, or not in time).
    pub interest_ms: Option<u64>,
    /// Cluster counters over the row, all nodes together (`/metrics`): where messages
    /// that did not arrive went.
    pub drops: Drops,
}

/// Counted losses and link events during one row, summed over the nodes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Drops {
    /// Forward queue full on the publishing node (`cluster_forward_dropped_total`).
    pub forward: u64,
    /// Inbound queue full on the receiving node, QoS 0 (`cluster_inbound_dropped_total`).
    pub inbound: u64,
    /// The NATS client's subscription buffer full (`cluster_slow_consumer_total`).
    pub slow_consumer: u64,
    /// NATS connections made beyond the first ones (nats-server cut a slow node).
    pub reconnects: u64,
    /// Messages routed from other nodes (`cluster_received_total`).
    pub received_from_nats: u64,
    /// Local publishes no other node wanted, kept off NATS (`cluster_not_forwarded_total`).
    pub not_forwarded: u64,
    /// QoS 1/2 copies sent again by the acknowledged hop (`cluster_hop_resent_total`).
    pub resent: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pairs: usize,
    pub payload: usize,
    pub seconds: u64,
    pub rows: Vec<Row>,
}

struct Proc {
    child: Child,
    /// The admin listener (`/metrics`), for cluster nodes.
    admin: Option<SocketAddr>,
}

impl Proc {
    fn cpu_ticks(&self) -> u64 {
        let Some(pid) = self.child.id() else {
            return 0;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

async fn wait_listening(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!("{what} did not start listening on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn node(dir: &Path, port: u16, cluster: Option<(&str, &str)>) -> anyhow::Result<Proc> {
    let dir = dir.join(format!("node-{port}"));
    std::fs::create_dir_all(&dir)?;
    let mut c = Command::new(std::env::current_exe()?);
    c.args(["broker", "--allow-anonymous", "--log", "error", "--tcp"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&dir)
        .env("SWITCHBOARD__BROKER__SYS_INTERVAL", "0")
        .env("SWITCHBOARD__STORE__ENABLED", "false")
        .env("SWITCHBOARD__IM__ENABLED", "false");
    let mut admin = None;
    if let Some((id, url)) = cluster {
        let a = SocketAddr::from(([127, 0, 0, 1], port + 50));
        c.env("SWITCHBOARD__CLUSTER__NODE_ID", id)
            .env("SWITCHBOARD__CLUSTER__NATS_URL", url)
            .env("SWITCHBOARD__BROKER__ADMIN__LISTEN", a.to_string())
            .env("SWITCHBOARD__BROKER__ADMIN__METRICS_PUBLIC", "true");
        admin = Some(a);
    }
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a broker node")?;
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), "broker node").await?;
    Ok(Proc { child, admin })
}

async fn nats(dir: &Path, port: u16) -> anyhow::Result<Proc> {
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!("listen: \"127.0.0.1:{port}\"\nmax_payload: 8MB\n"),
    )?;
    let child = Command::new("nats-server")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start nats-server (apt-get install nats-server)")?;
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), "nats-server").await?;
    Ok(Proc { child, admin: None })
}

async fn measure(
    setup: &str,
    procs: &[&Proc],
    pub_port: u16,
    sub_port: u16,
    qos: QoS,
    rate: Option<u32>,
    seconds: u64,
) -> anyhow::Result<Row> {
    let l = Load {
        addr: SocketAddr::from(([127, 0, 0, 1], pub_port)),
        shape: Shape::P2p,
        publishers: PAIRS,
        subscribers: PAIRS,
        qos,
        payload: PAYLOAD,
        rate: rate.map(|r| r / PAIRS as u32),
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(seconds),
        persistent: false,
    };
    settle(procs).await;
    let before: u64 = procs.iter().map(|p| p.cpu_ticks()).sum();
    let counters_before = counters(procs).await;
    let tag = format!(
        "{}-q{}-{}",
        setup.replace([' ', ','], "-"),
        qos as u8,
        rate.unwrap_or(0)
    );
    // Cross-node: the load starts once the publishing node knows the subscribing node's
    // filters (before that, a publish is kept off NATS: at most once by design, and the
    // flood would delay the announcement for seconds).
    let pub_admin = SocketAddr::from(([127, 0, 0, 1], pub_port + 50));
    let cross = pub_port != sub_port && procs.iter().any(|p| p.admin == Some(pub_admin));
    // The publishing node's count of other nodes' filters before this row subscribes (the
    // previous rows' subscribers left seconds ago).
    let base = if cross {
        metric_value(pub_admin, "switchboard_cluster_remote_filters")
            .await
            .unwrap_or(0)
    } else {
        0
    };
    let interest_ms = std::sync::Arc::new(std::sync::Mutex::new(None));
    let ready = {
        let interest_ms = interest_ms.clone();
        async move {
            if cross {
                let t = std::time::Instant::now();
                let known = until_metric(pub_admin, "switchboard_cluster_remote_filters", |n| {
                    n >= base + PAIRS as u64
                })
                .await;
                if let (true, Ok(mut m)) = (known, interest_ms.lock()) {
                    *m = Some(t.elapsed().as_millis() as u64);
                }
            }
        }
    };
    let out = load::run_split_when(
        &l,
        SocketAddr::from(([127, 0, 0, 1], sub_port)),
        &tag,
        ready,
    )
    .await?;
    let interest_ms = interest_ms.lock().ok().and_then(|m| *m);
    let ticks = procs.iter().map(|p| p.cpu_ticks()).sum::<u64>() - before;
    let after = counters(procs).await;
    let d = |k: &str| {
        after
            .get(k)
            .copied()
            .unwrap_or(0)
            .saturating_sub(counters_before.get(k).copied().unwrap_or(0))
    };
    let drops = Drops {
        forward: d("switchboard_cluster_forward_dropped_total"),
        inbound: d("switchboard_cluster_inbound_dropped_total"),
        slow_consumer: d("switchboard_cluster_slow_consumer_total"),
        reconnects: d("switchboard_cluster_nats_connections_total"),
        received_from_nats: d("switchboard_cluster_received_total"),
        not_forwarded: d("switchboard_cluster_not_forwarded_total"),
        resent: d("switchboard_cluster_hop_resent_total"),
    };
    let cpu = if out.received > 0 {
        ticks as f64 * 10_000.0 / out.received as f64
    } else {
        0.0
    };
    println!(
        "{setup} QoS {} rate {rate:?}: {:.0} msg/s, p50 {:.0} µs, p99 {:.0} µs",
        qos as u8, out.throughput, out.p50_us, out.p99_us
    );
    Ok(Row {
        setup: setup.into(),
        qos: qos as u8,
        rate,
        throughput: out.throughput,
        p50_us: out.p50_us,
        p99_us: out.p99_us,
        cpu_us_per_msg: cpu,
        received: out.received,
        sent: out.sent,
        interest_ms,
        drops,
    })
}

/// Waits (at most 20 s) until `name` on `admin`'s `/metrics` satisfies `ok`; false if it
/// did not in time (the row then goes on, and says so).
async fn until_metric(admin: SocketAddr, name: &str, ok: impl Fn(u64) -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if metric_value(admin, name).await.is_some_and(&ok) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("cluster bench: {name} on {admin} not reached in 20 s; measuring anyway");
    false
}

/// Waits (at most 30 s) until the nodes have read what the previous row left in their
/// sockets: a QoS 0 flood has no back-pressure, so the generator writes far more than a
/// node reads in the row, and the node would spend the next row on the backlog (its
/// messages then counted there). Settled: no node's received count moved in 250 ms.
async fn settle(procs: &[&Proc]) {
    let total = || async {
        let mut sum = 0;
        for a in procs.iter().filter_map(|p| p.admin) {
            sum += metric_value(a, "switchboard_messages_received_total")
                .await
                .unwrap_or(0);
        }
        sum
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = total().await;
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = total().await;
        if now == last {
            return;
        }
        last = now;
    }
    eprintln!("cluster bench: the nodes were still reading the previous row's backlog after 30 s");
}

/// Figure `name` (one series) on `admin`'s `/metrics`.
async fn metric_value(admin: SocketAddr, name: &str) -> Option<u64> {
    let page = metrics_page(admin).await.ok()?;
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<u64>().ok()))
}

/// The cluster counters of every node, summed by name.
async fn counters(procs: &[&Proc]) -> std::collections::HashMap<String, u64> {
    let mut sum = std::collections::HashMap::new();
    for a in procs.iter().filter_map(|p| p.admin) {
        let Ok(text) = metrics_page(a).await else {
            continue;
        };
        for line in text
            .lines()
            .filter(|l| l.starts_with("switchboard_cluster_"))
        {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let name = name.split('{').next().unwrap_or(name);
            if let Ok(v) = value.parse::<u64>() {
                *sum.entry(name.to_owned()).or_insert(0) += v;
            }
        }
    }
    sum
}

/// `GET /metrics` on an admin listener (HTTP/1.0, read to the end).
async fn metrics_page(addr: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .context("metrics timed out")?
}

/// Runs the single-node baseline, then the three-node cluster.
pub async fn run(work: &Path, port: u16, seconds: u64) -> anyhow::Result<Report> {
    let work: PathBuf = work.to_path_buf();
    let mut rows = Vec::new();
    let single = node(&work, port, None).await?;
    for (qos, rate) in RUNS {
        let row = measure("single node", &[&single], port, port, qos, rate, seconds).await?;
        rows.push(row);
    }
    single.stop().await;

    let nats_port = port + 10;
    let url = format!("nats://127.0.0.1:{nats_port}");
    let nats = nats(&work, nats_port).await?;
    let mut nodes = Vec::new();
    for i in 0..3u16 {
        nodes.push(node(&work, port + 1 + i, Some((&format!("node{i}"), &url))).await?);
    }
    let mut all: Vec<&Proc> = nodes.iter().collect();
    all.push(&nats);
    for (qos, rate) in RUNS {
        let (a, b) = (port + 1, port + 2);
        rows.push(measure("cluster, local", &all, a, a, qos, rate, seconds).await?);
        rows.push(measure("cluster, cross-node", &all, a, b, qos, rate, seconds).await?);
    }
    for n in nodes {
        n.stop().await;
    }
    nats.stop().await;
    Ok(Report {
        pairs: PAIRS,
        payload: PAYLOAD,
        seconds,
        rows,
    })
}

/// The report as markdown, with cross-node / single-node ratios.
pub fn markdown(r: &Report) -> String {
    let mut md = format!(
        "# Cluster: the NATS hop\n\n{} publisher → subscriber pairs (one topic each), {} byte \
         payloads, {} s measured per row, store off, everything on one 2-core machine \
         (3 broker nodes + nats-server + the load generator). CPU is the broker nodes' and \
         nats-server's together.\n\n\
         | setup | QoS | offered | msg/s | p50 µs | p99 µs | CPU µs/msg | sent | received | delivered | from NATS | kept off NATS | dropped: forward / inbound / NATS client | hop resent | NATS reconnects | interest known after |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        r.pairs, r.payload, r.seconds
    );
    let offered = |r: Option<u32>| r.map_or("max".to_owned(), |r| r.to_string());
    for x in &r.rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {} | {} | {:.1} % | {} | {} | {} / {} / {} | {} | {} | {} |\n",
            x.setup,
            x.qos,
            offered(x.rate),
            x.throughput,
            x.p50_us,
            x.p99_us,
            x.cpu_us_per_msg,
            x.sent,
            x.received,
            100.0 * x.received as f64 / x.sent.max(1) as f64,
            x.drops.received_from_nats,
            x.drops.not_forwarded,
            x.drops.forward,
            x.drops.inbound,
            x.drops.slow_consumer,
            x.drops.resent,
            x.drops.reconnects,
            x.interest_ms.map_or("-".to_owned(), |ms| format!("{ms} ms"))
        ));
    }
    md.push_str(
        "\n| QoS | offered | cross-node / single throughput | p99 ratio | NATS hop CPU µs/msg |\n|---|---|---|---|---|\n",
    );
    for (qos, rate) in RUNS {
        let qos = qos as u8;
        let find = |s: &str| {
            r.rows
                .iter()
                .find(|x| x.setup == s && x.qos == qos && x.rate == rate)
        };
        if let (Some(a), Some(b)) = (find("single node"), find("cluster, cross-node")) {
            md.push_str(&format!(
                "| {qos} | {} | {:.2} | {:.2} | {:.1} |\n",
                offered(rate),
                b.throughput / a.throughput.max(1.0),
                b.p99_us / a.p99_us.max(1.0),
                b.cpu_us_per_msg - a.cpu_us_per_msg
            ));
        }
    }
    md
}
