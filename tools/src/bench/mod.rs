//! `switchboard bench`: runs each scenario against each broker in turn, on loopback, in the
//! same run, and writes `results.json`, `results.md` (with Switchboard / peer ratios) and
//! PNG charts.
//!
//! Every scenario is bounded in time (warm-up + measured window) and in count.

mod chart;
mod cluster;
mod cluster_store;
mod gateway;
mod heartbeat;
mod im;
mod im_broadcast;
mod im_groups;
mod im_rooms;
pub mod load;
mod measure;
mod moderation;
pub mod peers;
mod push;
mod scenarios;
mod service_conn;
mod transports;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use peers::PeerKind;
use scenarios::{Scenario, scenarios};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Brokers to compare, comma separated.
    #[arg(
        long,
        default_value = "switchboard,mosquitto,rumqttd",
        value_delimiter = ','
    )]
    pub brokers: Vec<String>,
    /// Scenarios to run, comma separated (default: all). See `--list`.
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Measured seconds per scenario and broker.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Connections for the idle-connections scenario.
    #[arg(long, default_value_t = 15_000)]
    pub idle: usize,
    /// Where to write results.json, results.md and the charts.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// First port to use; each broker run takes the next one.
    #[arg(long, default_value_t = 21883)]
    pub port: u16,
    /// Run the transport benchmark (TCP, TLS, WS, WSS, QUIC; Switchboard only) instead.
    #[arg(long)]
    pub transports: bool,
    /// Run the heartbeat benchmark (Mars vs adaptive, simulated; idle bytes per transport)
    /// instead.
    #[arg(long)]
    pub heartbeat: bool,
    /// Run the IM benchmark (1:1 durable messages, sync, memory per online user) instead.
    #[arg(long)]
    pub im: bool,
    /// Sender/recipient pairs of the IM benchmark (each keeps 1 send in flight: the
    /// messages in flight).
    #[arg(long, default_value_t = 100)]
    pub im_pairs: usize,
    /// Run the gateway benchmark (REST → MQTT delivery, against the same over MQTT).
    #[arg(long)]
    pub gateway: bool,
    /// Offline messages the IM benchmark syncs.
    #[arg(long, default_value_t = 10_000)]
    pub im_sync: usize,
    /// Run the broadcast benchmark (a broadcast to every user of a big tenant, mostly
    /// offline) instead.
    #[arg(long)]
    pub im_broadcast: bool,
    /// Users of the broadcast benchmark's big tenant.
    #[arg(long, default_value_t = 1_000_000)]
    pub im_broadcast_users: usize,
    /// Run the chatroom benchmark (1 sender → `--im-room-members` members of one room,
    /// against mosquitto's plain QoS 0 fan-out) instead.
    #[arg(long)]
    pub im_room: bool,
    /// Members of the chatroom benchmark's room.
    #[arg(long, default_value_t = 5000)]
    pub im_room_members: usize,
    /// Room sends the chatroom benchmark's sender keeps in flight.
    #[arg(long, default_value_t = 32)]
    pub im_room_window: usize,
    /// Run the moderation benchmark (1:1 sends with and without a word list and a rate
    /// limit; the matcher alone) instead. Uses `--im-pairs` and `--seconds`.
    #[arg(long)]
    pub moderation: bool,
    /// Words in the moderation benchmark's list.
    #[arg(long, default_value_t = 10_000)]
    pub moderation_words: usize,
    /// Run the group fan-out benchmark (one group, a share of its members online) instead.
    #[arg(long)]
    pub im_group: bool,
    /// Members of the group fan-out benchmark's group.
    #[arg(long, default_value_t = 3000)]
    pub im_group_members: usize,
    /// Members online (one device each) in the group fan-out benchmark.
    #[arg(long, default_value_t = 300)]
    pub im_group_online: usize,
    /// Members sending in the group fan-out benchmark (each keeps 1 message in flight).
    #[arg(long, default_value_t = 8)]
    pub im_group_senders: usize,
    /// Run the cluster benchmark (a nats-server and three nodes: cross-node vs single
    /// node, the cost of the NATS hop) instead.
    #[arg(long)]
    pub cluster: bool,
    /// Run the cluster-store benchmark (persistent QoS 1 on PostgreSQL vs redb; starts
    /// Debian's PostgreSQL in a scratch directory) instead.
    #[arg(long)]
    pub cluster_store: bool,
    /// Run the push benchmark (queued push jobs drained by the push worker into local mock
    /// APNs/FCM servers) instead.
    #[arg(long)]
    pub push: bool,
    /// Jobs queued in the push benchmark.
    #[arg(long, default_value_t = 10_000)]
    pub push_jobs: usize,
    /// Users (one device token each) the push benchmark's jobs go to.
    #[arg(long, default_value_t = 1_000)]
    pub push_users: usize,
    /// The push worker's concurrency in the push benchmark.
    #[arg(long, default_value_t = 64)]
    pub push_concurrency: usize,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Row {
    pub scenario: String,
    pub broker: String,
    pub throughput: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub ack_p99_us: f64,
    pub sent: u64,
    pub received: u64,
    pub rss_mb: f64,
    pub peak_rss_mb: f64,
    pub cpu_us_per_msg: f64,
    /// Scenario-specific figure (connects/s, bytes per connection, seconds, fsyncs/1000).
    pub extra: Option<(String, f64)>,
    pub error: Option<String>,
}

/// A scratch directory for one bench mode, removed by the caller.
fn work_dir(tag: &str) -> anyhow::Result<PathBuf> {
    let work = std::env::temp_dir().join(format!("switchboard-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    Ok(work)
}

/// Writes `out/{name}.json` and `out/{name}.md` and says where.
fn write_mode_report(
    out: &Path,
    name: &str,
    json: &impl Serialize,
    md: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join(format!("{name}.json")),
        serde_json::to_string_pretty(json)?,
    )?;
    let path = out.join(format!("{name}.md"));
    std::fs::write(&path, md)?;
    println!("{md}\nreport: {}", path.display());
    Ok(())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.cluster {
        let work = work_dir("cluster")?;
        let result = cluster::run(&work, args.port, args.seconds).await;
        let _ = std::fs::remove_dir_all(&work);
        let result = result?;
        return write_mode_report(&args.out, "cluster", &result, &cluster::markdown(&result));
    }
    if args.cluster_store {
        let work = work_dir("cluster-store")?;
        let result = cluster_store::run(&work, &args).await;
        let _ = std::fs::remove_dir_all(&work);
        let result = result?;
        let md = cluster_store::markdown(&result);
        return write_mode_report(&args.out, "cluster-store", &result, &md);
    }
    if args.heartbeat {
        let work = work_dir("hb")?;
        let result = heartbeat::run(&work).await;
        let _ = std::fs::remove_dir_all(&work);
        let report = result?;
        return write_mode_report(
            &args.out,
            "heartbeat",
            &report,
            &heartbeat::markdown(&report),
        );
    }
    if args.gateway {
        let work = work_dir("gw")?;
        let result = gateway::run(&work, args.port, 50, 64, args.seconds).await;
        let _ = std::fs::remove_dir_all(&work);
        let result = result?;
        return write_mode_report(&args.out, "gateway", &result, &gateway::markdown(&result));
    }
    if args.push {
        let work = work_dir("push")?;
        let shape = push::PushBench {
            jobs: args.push_jobs.max(1),
            users: args.push_users.max(1),
            concurrency: args.push_concurrency.max(1),
        };
        let result = push::run(&work, args.port, shape).await;
        let _ = std::fs::remove_dir_all(&work);
        let result = result?;
        return write_mode_report(&args.out, "push", &result, &push::markdown(&result));
    }
    if args.im {
        let work = work_dir("im")?;
        let result = im::run(&work, args.port, args.im_pairs, args.seconds, args.im_sync).await;
        let _ = std::fs::remove_dir_all(&work);
        let result = result?;
        return write_mode_report(&args.out, "im", &result, &im::markdown(&result));
    }
    if args.im_broadcast {
        let work = work_dir("im-broadcast")?;
        let result = im_broadcast::run(&work, args.port, args.im_broadcast_users).await;
        let _ = std::fs::remove_dir_all(&work);
        let result = result?;
        let md = im_broadcast::markdown(&result);
        return write_mode_report(&args.out, "im-broadcast", &result, &md);
    }
    if args.im_group {
        let work = work_dir("im-group")?;
        let shape = im_groups::GroupBench {
            members: args.im_group_members,
            online: args.im_group_online,
            senders: args.im_group_senders,
            seconds: args.seconds,
        };
        let result = im_groups::run(&work, args.port, shape).await;
        let _ = std::fs::remove_dir_all(&work);
        let result = result?;
        return write_mode_report(
            &args.out,
            "im-group",
            &result,
            &im_groups::markdown(&result),
        );
    }
    if args.im_room {
        let work = work_dir("im-room")?;
        let result = im_rooms::run(
            &work,
            args.port,
            args.im_room_members,
            args.im_room_window,
            args.seconds,
        )
        .await;
        let _ = std::fs::remove_dir_all(&work);
        let result = result?;
        return write_mode_report(&args.out, "im-room", &result, &im_rooms::markdown(&result));
    }
    if args.moderation {
        let work = work_dir("moderation")?;
        let result = moderation::run(
            &work,
            args.port,
            args.im_pairs,
            args.seconds,
            args.moderation_words,
        )
        .await;
        let _ = std::fs::remove_dir_all(&work);
        let result = result?;
        return write_mode_report(
            &args.out,
            "moderation",
            &result,
            &moderation::markdown(&result),
        );
    }
    if args.transports {
        let work = work_dir("tr")?;
        let idle = args.idle.min(20_000);
        let result = transports::run(&work, idle).await;
        let _ = std::fs::remove_dir_all(&work);
        let (rows, migration) = result?;
        let md = transports::markdown(&rows, &migration, idle);
        return write_mode_report(&args.out, "transports", &rows, &md);
    }
    let all = scenarios();
    if args.list {
        for s in &all {
            println!("{:16} {}", s.name, s.about);
        }
        return Ok(());
    }
    let chosen: Vec<Scenario> = if args.scenarios.is_empty() {
        all
    } else {
        args.scenarios
            .iter()
            .map(|n| {
                all.iter()
                    .find(|s| s.name == n)
                    .copied()
                    .with_context(|| format!("unknown scenario {n}"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let brokers: Vec<PeerKind> = args
        .brokers
        .iter()
        .map(|b| PeerKind::parse(b))
        .collect::<anyhow::Result<_>>()?;
    std::fs::create_dir_all(&args.out)?;
    let work = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    let bar = ProgressBar::new((chosen.len() * brokers.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    let mut port = args.port;
    for s in &chosen {
        for &b in &brokers {
            bar.set_message(format!("{} on {}", s.name, b.name()));
            port += 1;
            let row = match measure::run_one(s, b, port, &work, &args).await {
                Ok(r) => r,
                Err(e) => Row {
                    scenario: s.name.into(),
                    broker: b.name().into(),
                    error: Some(format!("{e:#}")),
                    ..Row::default()
                },
            };
            bar.println(format!(
                "{:16} {:12} {:>12.0} msg/s  p50 {:>8.0} µs  p99 {:>8.0} µs  rss {:>7.1} MB{}{}",
                row.scenario,
                row.broker,
                row.throughput,
                row.p50_us,
                row.p99_us,
                row.rss_mb,
                row.extra
                    .as_ref()
                    .map(|(k, v)| format!("  {k} {v:.1}"))
                    .unwrap_or_default(),
                row.error
                    .as_ref()
                    .map(|e| format!("  ERROR {e}"))
                    .unwrap_or_default()
            ));
            rows.push(row);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&work);
    write_report(&args.out, &chosen, &rows)?;
    println!("report: {}", args.out.join("results.md").display());
    Ok(())
}

fn write_report(out: &Path, chosen: &[Scenario], rows: &[Row]) -> anyhow::Result<()> {
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(rows)?,
    )?;
    let mut md = String::new();
    md.push_str(&format!(
        "Run: {} cores, {} (all brokers and the load generator on the same machine, loopback).\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_owned())
            )
            .unwrap_or_else(|| "unknown CPU".into())
    ));
    md.push_str("| scenario | broker | msg/s | p50 µs | p99 µs | ack p99 µs | RSS MB | peak RSS MB | CPU µs/msg | other | vs switchboard (throughput) |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    let by: BTreeMap<(&str, &str), &Row> = rows
        .iter()
        .map(|r| ((r.scenario.as_str(), r.broker.as_str()), r))
        .collect();
    for s in chosen {
        for r in rows.iter().filter(|r| r.scenario == s.name) {
            let ours = by.get(&(s.name, "switchboard"));
            let ratio = match ours {
                Some(o) if r.broker != "switchboard" && r.throughput > 0.0 => {
                    format!("{:.2}×", o.throughput / r.throughput)
                }
                _ => String::new(),
            };
            let other = r
                .error
                .as_ref()
                .map(|e| format!("error: {e}"))
                .or_else(|| r.extra.as_ref().map(|(k, v)| format!("{k}: {v:.1}")))
                .unwrap_or_default();
            md.push_str(&format!(
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.2} | {} | {} |\n",
                r.scenario,
                r.broker,
                r.throughput,
                r.p50_us,
                r.p99_us,
                r.ack_p99_us,
                r.rss_mb,
                r.peak_rss_mb,
                r.cpu_us_per_msg,
                other,
                ratio
            ));
        }
    }
    md.push_str("\nScenarios:\n\n");
    for s in chosen {
        md.push_str(&format!("- `{}`: {}\n", s.name, s.about));
    }
    std::fs::write(out.join("results.md"), md)?;
    chart::draw(out, chosen.iter().map(|s| s.name).collect(), rows)?;
    Ok(())
}
