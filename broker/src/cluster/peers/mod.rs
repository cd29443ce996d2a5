//! Remote interest: each node tells the others which filters it has subscribers for, so
//! that a local publish no other node wants is never handed to NATS (`docs/cluster.md`,
//! "Interest").
//!
//! On the `peers` subject (under the prefix) every node announces its distinct filters
//! (direct and shared alike) as numbered deltas after each interest pass (once NATS
//! confirmed the subscriptions), answers a hello with a snapshot of its whole set, ticks
//! every [`TICK`] with its current number (a receiver that sees another number lost an
//! announcement and asks again), and says goodbye at shutdown. All of one node's
//! announcements go out in order under one lock, on one NATS connection, so a receiver
//! sees them in order. A delta is a NATS request: every node acknowledges it once
//! applied, and the announcing node waits (at most [`ACK_WAIT`]) for as many answers as
//! it knows peers before it reports the interest as confirmed, so "confirmed" on the
//! subscriber's node means the publishing nodes forward to it.
//!
//! Until [`WARM_UP`] after joining (and after each NATS reconnection) a node forwards
//! everything: it cannot yet know every peer. The table ([`table`]) errs only towards
//! forwarding too much (see there).

pub mod table;
pub mod wire;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::RwLock;
use tracing::{debug, info, warn};

use super::Cluster;
use crate::BrokerState;
use table::RemoteInterest;
use wire::Announce;

/// Subject (under the prefix) of interest announcements.
pub const PEERS: &str = "peers";
/// How often a node ticks.
pub const TICK: Duration = Duration::from_secs(2);
/// A peer not heard from for this long is dropped (it died without a goodbye).
const SILENCE: Duration = Duration::from_secs(30);
/// How long an announcing node waits for its peers' acknowledgements.
const ACK_WAIT: Duration = Duration::from_secs(1);
/// After joining: every peer has ticked once (and so is in the table) after this.
const WARM_UP: Duration = Duration::from_millis(2_500);
/// Filter bytes per announcement (NATS refuses payloads over its `max_payload`, 1 MB by
/// default): a bigger set goes in several parts or deltas.
const CHUNK_BYTES: usize = 256 * 1024;

/// Figures of the remote-interest table.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Local publishes not handed to NATS: no other node wanted them.
    pub not_forwarded: AtomicU64,
    /// Snapshots asked of peers whose view was lost.
    pub resyncs: AtomicU64,
    /// Deltas announced by this node.
    pub deltas: AtomicU64,
    /// Deltas whose acknowledgements did not all come within the wait.
    pub unconfirmed: AtomicU64,
}

/// What this node announced so far.
#[derive(Debug, Default)]
struct Own {
    seq: u64,
    filters: HashSet<String>,
}

/// The remote-interest table and this node's announcements.
#[derive(Debug)]
pub struct Peers {
    table: RwLock<RemoteInterest>,
    own: tokio::sync::Mutex<Own>,
    /// Forward everything: just joined (or reconnected) to NATS.
    warming: AtomicBool,
    pub stats: PeerStats,
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            table: RwLock::new(RemoteInterest::default()),
            own: tokio::sync::Mutex::new(Own::default()),
            warming: AtomicBool::new(true),
            stats: PeerStats::default(),
        }
    }
}

/// Splits `filters` into lists of at most [`CHUNK_BYTES`] (at least one, maybe empty).
fn chunks(filters: impl IntoIterator<Item = String>) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    let mut bytes = 0;
    for f in filters {
        if bytes + f.len() > CHUNK_BYTES && out.last().is_some_and(|c| !c.is_empty()) {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += f.len() + 4;
        if let Some(c) = out.last_mut() {
            c.push(f);
        }
    }
    out
}

impl Peers {
    /// Whether a local publish on `topic` must go to NATS.
    pub fn wants(&self, topic: &str) -> bool {
        self.warming.load(Ordering::Relaxed) || self.table.read().wants(topic)
    }

    /// A local shared subscription was added / removed (see [`table`]).
    pub fn local_shared(&self, group: &str, filter: &str, added: bool) {
        let mut t = self.table.write();
        t.local_group(group, filter, added);
        if added {
            t.add_local_shared(filter);
        } else {
            t.remove_local_shared(filter);
        }
    }

    /// The known peers with a direct subscription matching `topic` ([`table`]).
    pub fn direct_peers(&self, topic: &str) -> Vec<String> {
        self.table.read().direct_peers(topic)
    }

    /// The NATS queue names of the shared groups (on any node, this one included) whose
    /// filter matches `topic`, and of those the ones this node holds.
    pub fn shared_groups(&self, topic: &str) -> Vec<(String, bool)> {
        let t = self.table.read();
        let mut out: Vec<(String, bool)> = t
            .groups()
            .matching(topic)
            .into_iter()
            .map(|q| (q, false))
            .collect();
        if !out.is_empty() {
            for (q, local) in &mut out {
                *local = t.is_local_queue(q);
            }
        }
        out
    }

    /// Whether some node (this one included) holds the shared group of queue name `queue`.
    pub fn has_group(&self, queue: &str) -> bool {
        self.table.read().groups().has(queue)
    }

    /// Whether `node` is in the table (known or not).
    pub fn is_peer(&self, node: &str) -> bool {
        self.table.read().has(node)
    }

    /// (peers, peers not known, filters held).
    pub fn figures(&self) -> (u64, u64, u64) {
        let t = self.table.read();
        (t.peers() as u64, t.unknown() as u64, t.filters() as u64)
    }

    async fn send(&self, c: &Cluster, a: &Announce, reply: Option<String>) {
        let headers = super::wire::headers(&c.node, 0);
        let body = Bytes::from(wire::encode(a));
        let subject = c.map.internal(PEERS);
        let r = match reply {
            Some(r) => {
                c.client
                    .publish_with_reply_and_headers(subject, r, headers, body)
                    .await
            }
            None => c.client.publish_with_headers(subject, headers, body).await,
        };
        if let Err(e) = r {
            warn!(error = %e, "cannot send an interest announcement");
        }
    }

    /// Announces the change from what was announced to `filters` (this node's distinct
    /// filters, as NATS now has them), and waits for the peers' acknowledgements.
    pub async fn announce(&self, c: &Cluster, filters: HashSet<String>) {
        let mut own = self.own.lock().await;
        let add: Vec<String> = filters.difference(&own.filters).cloned().collect();
        let remove: Vec<String> = own.filters.difference(&filters).cloned().collect();
        if add.is_empty() && remove.is_empty() {
            return;
        }
        own.filters = filters;
        let expected = self.table.read().peers();
        let mut acks = None;
        let mut deltas: Vec<Announce> = chunks(add)
            .into_iter()
            .map(|add| (add, Vec::new()))
            .chain(chunks(remove).into_iter().map(|r| (Vec::new(), r)))
            .filter(|(a, r)| !a.is_empty() || !r.is_empty())
            .map(|(add, remove)| {
                own.seq += 1;
                Announce::Delta {
                    seq: own.seq,
                    add,
                    remove,
                }
            })
            .collect();
        let last = deltas.pop();
        for d in &deltas {
            self.send(c, d, None).await;
        }
        if let Some(d) = last {
            let inbox = c.client.new_inbox();
            if expected > 0 {
                acks = c.client.subscribe(inbox.clone()).await.ok();
            }
            self.send(c, &d, Some(inbox)).await;
        }
        self.stats.deltas.fetch_add(1, Ordering::Relaxed);
        drop(own);
        let Some(mut acks) = acks else { return };
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        while got < expected {
            match tokio::time::timeout_at(deadline, acks.next()).await {
                Ok(Some(_)) => got += 1,
                _ => break,
            }
        }
        if got < expected {
            self.stats.unconfirmed.fetch_add(1, Ordering::Relaxed);
            debug!(
                got,
                expected, "not every peer acknowledged an interest delta in time"
            );
        }
    }

    /// Sends this node's whole filter set.
    async fn snapshot(&self, c: &Cluster) {
        let own = self.own.lock().await;
        let parts = chunks(own.filters.iter().cloned());
        let n = parts.len() as u32;
        for (i, filters) in parts.into_iter().enumerate() {
            let a = Announce::Snap {
                seq: own.seq,
                part: i as u32,
                parts: n,
                filters,
            };
            self.send(c, &a, None).await;
        }
    }

    async fn tick(&self, c: &Cluster) {
        let own = self.own.lock().await;
        self.send(c, &Announce::Tick { seq: own.seq }, None).await;
    }

    /// (Re)joins: forwards everything for [`WARM_UP`], says hello (peers answer with
    /// their snapshots) and sends this node's snapshot.
    pub async fn join(self: &Arc<Self>, c: &Cluster, state: &BrokerState) {
        self.warming.store(true, Ordering::Relaxed);
        let me = self.clone();
        let shutdown = state.shutdown.clone();
        state.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(WARM_UP) => me.warming.store(false, Ordering::Relaxed),
                _ = shutdown.cancelled() => {}
            }
        });
        self.send(c, &Announce::Hello { target: None }, None).await;
        self.snapshot(c).await;
    }

    /// Appends the table's figures (label `node`, escaped) to a Prometheus page.
    pub fn render_metrics(&self, out: &mut String, node: &str) {
        use std::fmt::Write as _;
        let (peers, unknown, filters) = self.figures();
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let s = &self.stats;
        for (name, help, kind, value) in [
            (
                "peers",
                "Other nodes heard of (interest announcements).",
                "gauge",
                peers,
            ),
            (
                "peers_unknown",
                "Other nodes whose interest is not known here (every message is forwarded meanwhile).",
                "gauge",
                unknown,
            ),
            (
                "peers_warming",
                "1 while this node forwards everything after joining NATS.",
                "gauge",
                u64::from(self.warming.load(Ordering::Relaxed)),
            ),
            (
                "remote_filters",
                "Filters the other nodes (and local shared groups) announced.",
                "gauge",
                filters,
            ),
            (
                "not_forwarded_total",
                "Local publishes not handed to NATS: no other node wanted them.",
                "counter",
                g(&s.not_forwarded),
            ),
            (
                "interest_deltas_total",
                "Interest changes announced to the other nodes.",
                "counter",
                g(&s.deltas),
            ),
            (
                "interest_unconfirmed_total",
                "Announced changes not acknowledged by every peer in time.",
                "counter",
                g(&s.unconfirmed),
            ),
            (
                "interest_resyncs_total",
                "Snapshots asked of peers whose interest was lost.",
                "counter",
                g(&s.resyncs),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP switchboard_cluster_{name} {help}\n# TYPE switchboard_cluster_{name} {kind}\nswitchboard_cluster_{name}{{node=\"{node}\"}} {value}"
            );
        }
    }

    /// Says goodbye (graceful shutdown): the peers drop this node's filters.
    pub async fn leave(&self, c: &Cluster) {
        self.send(c, &Announce::Bye, None).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), c.client.flush()).await;
    }
}

/// Reads the peers' announcements, ticks, and drops silent peers, until shutdown.
pub(super) async fn serve(cluster: Arc<Cluster>, state: Arc<BrokerState>) {
    let peers = cluster.interest.peers.clone();
    let subject = cluster.map.internal(PEERS);
    let mut sub = match cluster.client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            // Without the table's feed nothing may be skipped: forward everything.
            warn!(%subject, error = %e, "cannot subscribe to interest announcements: forwarding every message");
            return;
        }
    };
    if let Err(e) = cluster.client.flush().await {
        warn!(error = %e, "NATS flush failed");
    }
    peers.join(&cluster, &state).await;
    let mut tick = tokio::time::interval(TICK);
    loop {
        let m = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            _ = tick.tick() => {
                peers.tick(&cluster).await;
                let gone = peers.table.write().prune(Instant::now(), SILENCE);
                for node in gone {
                    info!(%node, "peer silent: its interest is forgotten");
                }
                continue;
            }
            _ = state.shutdown.cancelled() => break,
        };
        let Some((node, _)) = super::wire::origin(m.headers.as_ref()) else {
            cluster.stats.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if node == cluster.node {
            continue;
        }
        let Some(a) = wire::decode(&m.payload) else {
            cluster.stats.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let node = node.to_owned();
        let r = peers
            .table
            .write()
            .apply(&cluster.node, &node, a, Instant::now());
        if let Some(reply) = m.reply {
            // A delta: applied, say so.
            if let Err(e) = cluster.client.publish(reply, Bytes::new()).await {
                debug!(error = %e, "cannot acknowledge an interest delta");
            }
        }
        if r.send_snapshot {
            peers.snapshot(&cluster).await;
        }
        if r.ask_snapshot {
            peers.stats.resyncs.fetch_add(1, Ordering::Relaxed);
            peers
                .send(&cluster, &Announce::Hello { target: Some(node) }, None)
                .await;
        }
    }
    if cluster.connected() {
        peers.leave(&cluster).await;
    }
}
