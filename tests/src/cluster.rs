//! A cluster of `switchboard broker` processes for the end-to-end tests: a private
//! nats-server, optionally a private PostgreSQL, and N nodes (`node0`, `node1`, ...)
//! configured through the environment as an operator would, each with its admin API on a
//! free port and public metrics; IM helpers on top (a tenant and users, SDK devices, the
//! app server's admin requests).

use std::net::SocketAddr;

use bytes::Bytes;
use serde_json::Value;
use switchboard_proto::{
    Disconnect, Packet, Properties, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions,
    Version,
};

use crate::im::Device;
use crate::nats::{NatsServer, metric, until_metric};
use crate::postgres::Postgres;
use crate::process::BrokerProcess;
use crate::{RawClient, TempDir, connect_packet};

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

impl Cluster {
    /// Three nodes on one PostgreSQL, tenant `tag` and its `users` (made through different
    /// nodes: the directory is the shared store); `None` without PostgreSQL.
    pub async fn start_im(bin: &str, tag: &str, users: &[&str]) -> Option<(Cluster, String)> {
        let c = Cluster::start_durable(bin, tag, 3, &[], &[]).await?;
        let t = BrokerProcess::json(&c.node(0).ctl(&["tenant", "create", tag, "--json"]).await);
        let tenant = t["tenant_id"].as_u64().expect("tenant id").to_string();
        for (i, user) in users.iter().enumerate() {
            let u = BrokerProcess::json(
                &c.node(i % 3)
                    .ctl(&["user", "create", "--tenant", &tenant, user, "--json"])
                    .await,
            );
            assert_eq!(u["user_id"], *user);
        }
        Some((c, tenant))
    }

    /// A token for `user`, issued by node `i`.
    pub async fn token(&self, i: usize, tenant: &str, user: &str) -> String {
        self.node(i)
            .ctl(&["token", "--tenant", tenant, "--user", user])
            .await
            .trim()
            .to_owned()
    }

    /// A device of `user` logged in on node `i`.
    pub async fn device(&self, i: usize, tenant: &str, user: &str, client_id: &str) -> Device {
        let t = self.token(i, tenant, user).await;
        Device::connect(self.addr(i), user, client_id, &t).await
    }

    /// Waits until node `i` sees at least `n` users with devices on other nodes.
    pub async fn sees_remote_users(&self, i: usize, n: u64) {
        until_metric(self.admin(i), "switchboard_im_cluster_remote_users", |v| {
            v >= n
        })
        .await;
    }

    /// Waits until NATS confirmed node `i`'s interest in at least `n` subjects (an IM
    /// device of its own user holds three: its inbox and its responses' `#`, which is
    /// two), so that messages from other nodes reach its devices.
    pub async fn interest(&self, i: usize, n: u64) {
        until_metric(
            self.admin(i),
            "switchboard_cluster_interest_subjects",
            |v| v >= n,
        )
        .await;
    }

    /// The app server connected to node `i` with that node's service credential.
    pub async fn app_server(&self, i: usize) -> AppServer {
        let file = self._dirs[i + 1].path().join("service.credentials");
        let cred: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("service.credentials"))
                .expect("credential JSON");
        let mut c = connect_packet(Version::V5, &format!("app-server-{i}"));
        c.username = Some("$service".into());
        c.password = Some(Bytes::from(
            cred["password"].as_str().expect("password").to_owned(),
        ));
        let (mut raw, ack) = RawClient::connect(self.addr(i), c).await;
        assert!(matches!(ack, Packet::ConnAck(a) if a.code == ReasonCode::Success));
        raw.send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            properties: Properties::default(),
            filters: vec![("app/replies".into(), SubscriptionOptions::default())],
        }))
        .await;
        assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
        AppServer { raw, next: 0 }
    }
}

/// The app server's admin connection (`$im/admin/...` JSON requests).
pub struct AppServer {
    raw: RawClient,
    next: u16,
}

impl AppServer {
    /// `$im/admin/{path}`: the JSON answer (an `{"error": ...}` object on failure).
    pub async fn admin(&mut self, path: &str, body: Value) -> Value {
        self.next += 1;
        let id = Bytes::copy_from_slice(&self.next.to_be_bytes());
        self.raw
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: format!("$im/admin/{path}"),
                pkid: 0,
                properties: Properties {
                    response_topic: Some("app/replies".into()),
                    correlation_data: Some(id.clone()),
                    ..Properties::default()
                },
                payload: Bytes::from(body.to_string()),
            }))
            .await;
        loop {
            let p = self.raw.next_publish().await;
            if p.properties.correlation_data.as_ref() == Some(&id) {
                return serde_json::from_slice(&p.payload).expect("JSON answer");
            }
        }
    }
}

/// Connects client `id` on `addr`, publishes `msgs` ((topic, body) each) at QoS 1 with at
/// most 20 unacknowledged, waits for every PUBACK (each a success) and disconnects.
pub async fn publish_acked(addr: SocketAddr, id: &str, msgs: Vec<(String, String)>) {
    const WINDOW: usize = 20;
    let (mut p, ack) = RawClient::connect(addr, connect_packet(Version::V5, id)).await;
    assert!(
        matches!(&ack, Packet::ConnAck(a) if a.code == ReasonCode::Success),
        "publisher refused: {ack:?}"
    );
    let (mut sent, mut acked) = (0usize, 0usize);
    let mut msgs = msgs.into_iter();
    let n = msgs.len();
    while acked < n {
        while sent < n && sent - acked < WINDOW {
            let Some((topic, body)) = msgs.next() else {
                break;
            };
            p.send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic,
                pkid: (sent % 1000) as u16 + 1,
                properties: Properties::default(),
                payload: Bytes::from(body),
            }))
            .await;
            sent += 1;
        }
        match p.recv().await {
            Some(Packet::PubAck(a)) => {
                assert_eq!(a.code, ReasonCode::Success, "PUBACK of message {acked}");
                acked += 1;
            }
            Some(_) => {}
            None => panic!("publisher disconnected after {acked} acknowledgements"),
        }
    }
    p.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
}
