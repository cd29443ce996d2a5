//! A real `nats-server` (Debian package `nats-server`) for cluster tests: started on a free
//! loopback port with JetStream in a temporary directory, restartable on the same port,
//! killed when dropped. Also a poller for a broker node's Prometheus figures.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::WAIT;

/// A running nats-server.
pub struct NatsServer {
    child: Option<Child>,
    dir: PathBuf,
    /// The client port on 127.0.0.1.
    pub port: u16,
}

impl NatsServer {
    /// Starts nats-server with JetStream (store in `dir`) on a free port.
    pub async fn start(dir: &Path) -> NatsServer {
        let mut s = NatsServer {
            child: None,
            dir: dir.to_path_buf(),
            port: 0,
        };
        s.spawn(None).await;
        s
    }

    /// `nats://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Starts it again on the same port with the same JetStream directory.
    pub async fn restart(&mut self) {
        self.kill().await;
        let port = self.port;
        self.spawn(Some(port)).await;
    }

    async fn spawn(&mut self, port: Option<u16>) {
        // Port -1: the server picks a free one and logs it.
        let conf = self.dir.join("nats.conf");
        let port_conf = port.map_or("-1".to_owned(), |p| p.to_string());
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:{port_conf}\"\nmax_payload: 8MB\nmax_control_line: 16KB\n\
                 jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 256MB\n}}\n",
                self.dir.join("js").display()
            ),
        )
        .expect("write nats.conf");
        let mut child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server runs (apt-get install nats-server)");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut found = None;
        loop {
            let line = tokio::time::timeout(WAIT, lines.next_line())
                .await
                .expect("nats-server starts in time")
                .expect("read nats-server log")
                .expect("nats-server exited while starting");
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                found = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok());
            }
            if line.contains("Server is ready") {
                break;
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.port = found.expect("nats-server logged its port");
        self.child = Some(child);
    }
}

/// Reads figure `name` (first sample, labels ignored) from the `/metrics` page at
/// `admin` (`host:port`, metrics public).
pub async fn metric(admin: &str, name: &str) -> Option<u64> {
    let addr: std::net::SocketAddr = admin.parse().ok()?;
    let page = crate::http::request(addr, "GET", "/metrics", &[], b"").await;
    if page.status != 200 {
        return None;
    }
    page.body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits (polling `/metrics`, bounded by a generous timeout) until figure `name` on the
/// node at `admin` satisfies `ok`; panics with the last value otherwise.
pub async fn until_metric(admin: &str, name: &str, ok: impl Fn(u64) -> bool) {
    let deadline = tokio::time::Instant::now() + 3 * WAIT;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        last = metric(admin, name).await;
        if last.is_some_and(&ok) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} on {admin} never reached the expected value (last {last:?})");
}
