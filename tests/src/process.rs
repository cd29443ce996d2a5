//! A `switchboard broker` child process for crash tests: started on a data directory,
//! its addresses read from what it prints, killed with SIGKILL.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running broker process.
pub struct BrokerProcess {
    child: Child,
    /// The MQTT TCP listener.
    pub addr: SocketAddr,
    /// The admin API, if `env` turned it on.
    pub admin: Option<String>,
}

impl BrokerProcess {
    /// Runs `exe broker --tcp 127.0.0.1:0 --data-dir DIR` plus `args`, with `env`
    /// overrides; returns once it printed its MQTT address (and its admin address, when
    /// `SWITCHBOARD__BROKER__ADMIN__LISTEN` is among `env`).
    pub async fn start(exe: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(exe);
        cmd.args([
            "broker",
            "--tcp",
            "127.0.0.1:0",
            "--log",
            "warn",
            "--data-dir",
        ])
        .arg(dir)
        .args(args)
        .env("SWITCHBOARD__BROKER__SYS_INTERVAL", "0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let wants_admin = env
            .iter()
            .any(|(k, _)| *k == "SWITCHBOARD__BROKER__ADMIN__LISTEN");
        let mut child = cmd
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("switchboard starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || (wants_admin && admin.is_none()) {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("broker announces its addresses")
                .expect("read")
                .expect("broker exited before listening");
            if let Some(a) = line.strip_prefix("switchboard: MQTT on tcp://") {
                addr = Some(a.parse().expect("address"));
            }
            if let Some(a) = line.strip_prefix("switchboard: admin API on http://") {
                admin = a.split_whitespace().next().map(str::to_owned);
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        BrokerProcess {
            child,
            addr: addr.expect("mqtt address"),
            admin,
        }
    }

    /// SIGKILL, then reap.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = self.child.wait().await;
    }
}
