//! `switchboard bench --cluster-store`: the durable path on PostgreSQL against the embedded
//! redb store, in the same run. The `persistent-qos1` scenario (20 publishers → 20
//! persistent subscribers, 64 B, QoS 1, PUBACK only after the commit) runs against one
//! broker on redb and one on PostgreSQL; the report gives acknowledged msg/s, latency and
//! commits per 1,000 messages, with the PostgreSQL / redb ratio.
//!
//! The PostgreSQL server is Debian's, started here in a scratch directory on a loopback
//! port with production settings (fsync on, synchronous commit) and stopped at the end.
//! PostgreSQL runs twice: with the multi-row group commits, and with one statement per op
//! (`SWITCHBOARD_PG_STATEMENT_PER_OP`, the writer before them), so the gain is measured in
//! the same run; the server's own CPU per message is reported too.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::Serialize;

use super::measure::measure;
use super::peers::{Peer, PeerKind};
use super::scenarios::scenarios;
use super::{BenchArgs, Row};

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seconds: u64,
    pub postgres_version: String,
    pub rows: Vec<Row>,
    /// PostgreSQL server CPU (every backend) per acknowledged message, per row.
    pub pg_cpu_us_per_msg: Vec<f64>,
}

/// A PostgreSQL server for the run.
struct Server {
    bin: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
    port: u16,
}

impl Server {
    fn start(work: &Path, port: u16) -> anyhow::Result<Server> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("PostgreSQL is not installed (apt-get install postgresql)")?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .context("no /usr/lib/postgresql/*/bin/initdb")?;
        let dir = work.join("postgres");
        std::fs::create_dir_all(&dir)?;
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?
                .success();
            anyhow::ensure!(ok, "chown of {} failed", dir.display());
        }
        let s = Server {
            bin,
            dir,
            as_postgres,
            port,
        };
        let data = s.dir.join("data").display().to_string();
        s.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        )?;
        let log = s.dir.join("postgres.log").display().to_string();
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= \
             -c shared_buffers=128MB"
        );
        s.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &opts, "-w", "start"],
        )?;
        Ok(s)
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<String> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .output()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn version(&self) -> String {
        self.run("postgres", &["--version"]).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }
}

pub async fn run(work: &Path, args: &BenchArgs) -> anyhow::Result<Report> {
    let scenario = scenarios()
        .into_iter()
        .find(|s| s.name == "persistent-qos1")
        .context("persistent-qos1 scenario")?;
    let pg = Server::start(work, args.port + 100)?;
    let url = pg.url();
    let mut rows = Vec::new();
    let mut pg_cpu = Vec::new();
    for (i, (store, env)) in [
        ("redb", Vec::new()),
        (
            "postgresql, one statement per op",
            vec![
                ("SWITCHBOARD__CLUSTER__POSTGRES_URL", url.as_str()),
                ("SWITCHBOARD_PG_STATEMENT_PER_OP", "1"),
            ],
        ),
        (
            "postgresql",
            vec![("SWITCHBOARD__CLUSTER__POSTGRES_URL", url.as_str())],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let peer = Peer::start_with_env(
            PeerKind::Switchboard,
            args.port + i as u16,
            work,
            true,
            &env,
        )
        .await?;
        let mut row = Row {
            scenario: scenario.name.into(),
            broker: format!("switchboard ({store})"),
            ..Row::default()
        };
        let ticks = postgres_ticks();
        let result = measure(&scenario, &peer, args, &mut row).await;
        let ticks = postgres_ticks().saturating_sub(ticks);
        let msgs = row.throughput * args.seconds as f64;
        pg_cpu.push(if msgs > 0.0 {
            ticks as f64 * 10_000.0 / msgs
        } else {
            0.0
        });
        let st = peer.stats();
        row.rss_mb = st.rss_kb as f64 / 1024.0;
        row.peak_rss_mb = st.hwm_kb as f64 / 1024.0;
        peer.stop().await;
        if let Err(e) = result {
            row.error = Some(format!("{e:#}"));
        }
        println!(
            "{:28} {:>10.0} msg/s  ack p99 {:>8.0} µs  {}",
            row.broker,
            row.throughput,
            row.ack_p99_us,
            row.extra
                .as_ref()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .unwrap_or_default()
        );
        rows.push(row);
    }
    Ok(Report {
        scenario: format!("{} ({})", scenario.name, scenario.about),
        seconds: args.seconds,
        postgres_version: pg.version(),
        rows,
        pg_cpu_us_per_msg: pg_cpu,
    })
}

/// CPU ticks (1/100 s) of every `postgres` process so far (server and backends).
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for e in dir.filter_map(Result::ok) {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, after)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        total += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    }
    total
}

pub fn markdown(r: &Report) -> String {
    let mut md = format!(
        "# Cluster store: PostgreSQL vs redb\n\n\
         Scenario: {}; {} s measured per store, both brokers started by the same run, one \
         after the other, on the same machine as the load generator and the database \
         ({}, fsync on, loopback TCP).\n\n\
         | store | acknowledged msg/s | p50 µs | p99 µs | ack p99 µs | commits / 1,000 msg | \
         broker CPU µs/msg | PostgreSQL CPU µs/msg | RSS MB | ÷ redb (msg/s) |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        r.scenario, r.seconds, r.postgres_version
    );
    let base = r.rows.first().map_or(0.0, |x| x.throughput);
    for (i, row) in r.rows.iter().enumerate() {
        let ratio = if base > 0.0 {
            format!("{:.2}×", row.throughput / base)
        } else {
            String::new()
        };
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.2} | {} | {:.1} | {} |\n",
            row.broker,
            row.throughput,
            row.p50_us,
            row.p99_us,
            row.ack_p99_us,
            row.extra
                .as_ref()
                .map(|(_, v)| format!("{v:.2}"))
                .unwrap_or_default(),
            row.cpu_us_per_msg,
            match r.pg_cpu_us_per_msg.get(i) {
                Some(c) if i > 0 => format!("{c:.1}"),
                _ => "–".to_owned(),
            },
            row.rss_mb,
            ratio
        ));
        if let Some(e) = &row.error {
            md.push_str(&format!("\n{}: error: {e}\n", row.broker));
        }
    }
    md
}
