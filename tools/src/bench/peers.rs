//! The brokers under test, each in its own process so that its memory and CPU can be read
//! from /proc: Switchboard (this binary, `broker`), mosquitto (Debian's package), and
//! rumqttd (embedded as a library in this binary's hidden `bench-peer` subcommand, built
//! with the `peers` feature).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerKind {
    Switchboard,
    Mosquitto,
    Rumqttd,
}

impl PeerKind {
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Switchboard => "switchboard",
            PeerKind::Mosquitto => "mosquitto",
            PeerKind::Rumqttd => "rumqttd",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<PeerKind> {
        Ok(match s {
            "switchboard" => PeerKind::Switchboard,
            "mosquitto" => PeerKind::Mosquitto,
            "rumqttd" => PeerKind::Rumqttd,
            other => bail!("unknown broker {other:?} (switchboard, mosquitto, rumqttd)"),
        })
    }
}

/// A running broker process.
pub struct Peer {
    pub kind: PeerKind,
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

/// Figures read from /proc for a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    /// utime + stime in clock ticks (100 per second on Linux).
    pub cpu_ticks: u64,
}

impl Peer {
    /// Starts `kind` on `port` with its state under `workdir`; `persistent`: durable
    /// storage on (mosquitto: `persistence true`, rumqttd has none).
    pub async fn start(
        kind: PeerKind,
        port: u16,
        workdir: &Path,
        persistent: bool,
    ) -> anyhow::Result<Peer> {
        Self::start_with_env(kind, port, workdir, persistent, &[]).await
    }

    /// Like [`Peer::start`], with extra environment variables for Switchboard (config
    /// overrides such as `SWITCHBOARD__CLUSTER__POSTGRES_URL`).
    pub async fn start_with_env(
        kind: PeerKind,
        port: u16,
        workdir: &Path,
        persistent: bool,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Peer> {
        let dir = workdir.join(format!("{}-{port}", kind.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let exe = std::env::current_exe()?;
        let mut cmd = match kind {
            PeerKind::Switchboard => {
                let mut c = Command::new(exe);
                c.args(["broker", "--allow-anonymous", "--log", "error", "--tcp"])
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--data-dir")
                    .arg(&dir)
                    .env("SWITCHBOARD__BROKER__SYS_INTERVAL", "1")
                    .env(
                        "SWITCHBOARD__WORKERS",
                        std::env::var("BENCH_SWITCHBOARD_WORKERS").unwrap_or_else(|_| "0".into()),
                    )
                    .env("SWITCHBOARD__BROKER__LIMITS__MAX_CONNECTIONS", "1000000")
                    .env(
                        "SWITCHBOARD__STORE__ENABLED",
                        if persistent { "true" } else { "false" },
                    )
                    .envs(env.iter().copied());
                c
            }
            PeerKind::Mosquitto => {
                let conf = dir.join("mosquitto.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 10000\n\
                         max_inflight_messages 100\nlog_type error\nuser root\n\
                         persistence {persistent}\npersistence_location {}/\n",
                        dir.display()
                    ),
                )?;
                let mut c = Command::new("mosquitto");
                c.arg("-c").arg(conf);
                c
            }
            PeerKind::Rumqttd => {
                let mut c = Command::new(exe);
                c.args(["bench-peer", "rumqttd", "--port", &port.to_string()]);
                c
            }
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", kind.name()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} did not start listening on {addr}", kind.name());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Peer {
            kind,
            addr,
            child,
            dir,
        })
    }

    /// Memory and CPU of the broker process.
    pub fn stats(&self) -> ProcStats {
        let Some(pid) = self.child.id() else {
            return ProcStats::default();
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may contain spaces) start at ")".
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        ProcStats {
            rss_kb: field("VmRSS:"),
            hwm_kb: field("VmHWM:"),
            cpu_ticks: f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0),
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs rumqttd in this process with a configuration equivalent to the others: one
/// MQTT 3.1.1 listener on loopback, no auth, generous limits.
#[cfg(feature = "peers")]
pub fn run_rumqttd(port: u16) -> anyhow::Result<()> {
    let toml = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 100000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 1048576
    max_inflight_count = 100
    dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&toml).context("rumqttd config")?;
    rumqttd::Broker::new(config)
        .start()
        .map_err(|e| anyhow::anyhow!("rumqttd: {e}"))
}

#[cfg(not(feature = "peers"))]
pub fn run_rumqttd(_port: u16) -> anyhow::Result<()> {
    bail!("rumqttd is not built in: cargo build --release --features peers")
}
