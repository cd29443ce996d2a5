//! A `switchboard broker` child process for crash tests: started on a data directory,
//! its addresses read from what it prints, killed with SIGKILL or stopped with SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    exe: String,
    dir: PathBuf,
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
            exe: exe.to_owned(),
            dir: dir.to_path_buf(),
        }
    }

    /// Runs `exe ctl ARGS --admin ADMIN --data-dir DIR` against this broker (started with
    /// its admin API on); panics unless it succeeds, and returns its stdout.
    pub async fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_output(args).await;
        assert!(
            out.status.success(),
            "ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Like [`BrokerProcess::ctl`], whatever its exit status.
    pub async fn ctl_output(&self, args: &[&str]) -> std::process::Output {
        let admin = self
            .admin
            .as_deref()
            .expect("the broker runs its admin API");
        Command::new(&self.exe)
            .arg("ctl")
            .args(args)
            .args(["--admin", admin, "--data-dir"])
            .arg(&self.dir)
            .output()
            .await
            .expect("ctl runs")
    }

    /// Like [`BrokerProcess::start`] with the admin API on an ephemeral loopback port.
    pub async fn start_with_admin(exe: &str, dir: &Path, args: &[&str]) -> Self {
        Self::start(exe, dir, args, &[(ADMIN_LISTEN, "\"127.0.0.1:0\"")]).await
    }

    /// The admin API's address and the headers of a JSON request to it carrying the token
    /// the broker wrote in its data directory.
    pub fn admin_auth(&self) -> (SocketAddr, [(&'static str, String); 2]) {
        let admin = self
            .admin
            .as_deref()
            .and_then(|a| a.parse().ok())
            .expect("admin address");
        (admin, admin_headers(&self.dir))
    }

    /// `ctl ... --json` output as one JSON value.
    pub fn json(stdout: &str) -> serde_json::Value {
        serde_json::from_str(stdout.trim()).expect("one JSON value")
    }

    /// SIGTERM (a graceful shutdown), then waits for the process to exit; panics if it
    /// does not exit within a generous timeout (it is then killed on drop).
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM sent");
        tokio::time::timeout(3 * crate::WAIT, self.child.wait())
            .await
            .expect("broker exits after SIGTERM")
            .expect("wait")
    }

    /// SIGKILL, then reap.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = self.child.wait().await;
    }
}

/// An IM admin call (`POST /api/v1/im/call/{op}`) to the admin API at `admin`, with the
/// token the broker wrote in `dir`; panics unless it answers 200.
pub async fn admin_call(admin: &str, dir: &Path, op: &str, body: serde_json::Value) {
    let a = crate::http::request(
        admin.parse().expect("admin address"),
        "POST",
        &format!("/api/v1/im/call/{op}"),
        &admin_headers(dir),
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{op}: {}", a.body);
}

/// The environment variable that turns the admin API on.
const ADMIN_LISTEN: &str = "SWITCHBOARD__BROKER__ADMIN__LISTEN";

/// The bearer token the broker wrote in `dir` and a JSON content type, as request headers.
fn admin_headers(dir: &Path) -> [(&'static str, String); 2] {
    let token = std::fs::read_to_string(dir.join("admin.token")).expect("admin token");
    [
        ("Authorization", format!("Bearer {}", token.trim())),
        ("Content-Type", "application/json".to_owned()),
    ]
}
