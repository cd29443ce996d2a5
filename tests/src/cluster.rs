//! A cluster of `switchboard broker` processes for the end-to-end tests: a private
//! nats-server, optionally a private PostgreSQL, and N nodes (`node0`, `node1`, ...)
//! configured through the environment as an operator would, each with its admin API on a
//! free port and public metrics.

use std::net::SocketAddr;

use crate::TempDir;
use crate::nats::{NatsServer, metric};
use crate::postgres::Postgres;
use crate::process::BrokerProcess;

/// The nodes, their NATS server and (in the durable set-up) their PostgreSQL.
pub struct Cluster {
    pub nats: NatsServer,
    pub pg: Option<Postgres>,
    nodes: Vec<Option<BrokerProcess>>,
    _dirs: Vec<TempDir>,
}

impl Cluster {
    /// Nodes routing over NATS, each with its own redb store.
    pub async fn start(bin: &str, tag: &str, n: usize) -> Cluster {
        Self::launch(bin, tag, n, &[], &[]).await
    }

    /// Nodes sharing one PostgreSQL database (sessions leased for `lease_secs`), started
    /// with `args` and extra `env`; `None` when PostgreSQL is not installed (outside CI;
    /// see `Postgres::start`).
    pub async fn start_durable(
        bin: &str,
        tag: &str,
        n: usize,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Option<Cluster> {
        let pg = Postgres::start()?;
        let url = pg.create_db("sb_cluster");
        let mut env = env.to_vec();
        env.push(("SWITCHBOARD__CLUSTER__POSTGRES_URL", &url));
        env.push(("SWITCHBOARD__CLUSTER__LEASE_SECS", "3"));
        let mut c = Self::launch(bin, tag, n, args, &env).await;
        c.pg = Some(pg);
        Some(c)
    }

    async fn launch(
        bin: &str,
        tag: &str,
        n: usize,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        let nats_dir = TempDir::new(&format!("{tag}-nats"));
        let nats = NatsServer::start(nats_dir.path()).await;
        let nats_url = nats.url();
        let mut dirs = vec![nats_dir];
        let mut nodes = Vec::new();
        for i in 0..n {
            let dir = TempDir::new(&format!("{tag}-node{i}"));
            let node_id = format!("node{i}");
            let mut all = vec!["--allow-anonymous"];
            all.extend_from_slice(args);
            let mut vars = vec![
                ("SWITCHBOARD__CLUSTER__NODE_ID", node_id.as_str()),
                ("SWITCHBOARD__CLUSTER__NATS_URL", nats_url.as_str()),
                ("SWITCHBOARD__BROKER__ADMIN__LISTEN", "127.0.0.1:0"),
                ("SWITCHBOARD__BROKER__ADMIN__METRICS_PUBLIC", "true"),
            ];
            vars.extend_from_slice(env);
            nodes.push(Some(
                BrokerProcess::start(bin, dir.path(), &all, &vars).await,
            ));
            dirs.push(dir);
        }
        Cluster {
            nats,
            pg: None,
            nodes,
            _dirs: dirs,
        }
    }

    /// Node `i`; panics if it was killed.
    pub fn node(&self, i: usize) -> &BrokerProcess {
        self.nodes[i].as_ref().expect("node running")
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.node(i).addr
    }

    pub fn port(&self, i: usize) -> u16 {
        self.addr(i).port()
    }

    /// The admin API address of node `i`.
    pub fn admin(&self, i: usize) -> &str {
        self.node(i).admin.as_deref().expect("admin API")
    }

    /// Sum of a figure over the running nodes.
    pub async fn total(&self, name: &str) -> u64 {
        let mut sum = 0;
        for n in self.nodes.iter().flatten() {
            if let Some(a) = n.admin.as_deref() {
                sum += metric(a, name).await.unwrap_or(0);
            }
        }
        sum
    }

    /// SIGKILL of node `i` (no clean shutdown: no lease release, no wills sent).
    pub async fn kill9(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.kill9().await;
        }
    }

    /// SIGTERM of node `i` (graceful shutdown), waiting for it to exit.
    pub async fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        let n = self.nodes[i].take().expect("node running");
        n.terminate().await
    }

    /// Kills every node and the NATS server (PostgreSQL stops when dropped).
    pub async fn stop(mut self) {
        for n in self.nodes.drain(..).flatten() {
            n.kill9().await;
        }
        self.nats.kill().await;
    }
}
