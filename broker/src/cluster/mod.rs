//! Cluster mode: several broker nodes share routing over NATS core (`docs/cluster.md`).
//!
//! Each node keeps its own routing table for its own sessions, and tells NATS which topics
//! it wants: one NATS subscription per distinct filter its sessions hold (subscribed on the
//! first local subscriber, unsubscribed after the last, see [`interest`]). A message
//! published by a local client is routed here and published once to NATS on its topic's
//! subject ([`subject`]) with headers naming the origin node and a number unique on it
//! ([`wire`]); NATS forwards it once per matching subscription of each interested node, the
//! node drops the copies ([`dedupe`]) and its own messages, and routes the rest through its
//! table, which already merges a session's overlapping subscriptions ([`inbound`]).
//!
//! Shared subscriptions are NATS queue groups: a node with members of `$share/g/f`
//! queue-subscribes to `f`'s subjects in a group named after `g` and `f`, NATS hands each
//! message to one such node, and that node picks one member. Retained messages are
//! broadcast on one subject every node listens to, so every node stores them. `$SYS` stays
//! per node. A CONNECT on one node takes a session over from another, which closes the old
//! connection with 0x8E ([`takeover`]).
//!
//! Only what another node wants goes to NATS: the nodes announce their filters to each
//! other ([`peers`]), and QoS 1/2 messages to direct subscriptions are kept until the
//! receiving nodes acknowledged them ([`hop`]).
//!
//! Files: this one (the link: connect, run, metrics), `forward` (publisher shards),
//! [`peers`] (remote interest), [`hop`] (the acknowledged hop), [`subject`] (mapping),
//! [`wire`] (headers and body), [`dedupe`], [`interest`], [`inbound`], [`takeover`],
//! [`shared`] (a leaving member's messages handed to a member on another node).

pub mod dedupe;
pub mod drain;
mod forward;
pub mod handover;
pub mod hop;
pub mod inbound;
pub mod interest;
pub mod peers;
pub mod registry;
pub mod shared;
pub mod subject;
pub mod takeover;
pub mod wire;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::BrokerState;
use crate::config::ClusterConfig;
use interest::Interest;
use subject::SubjectMap;

/// How long connecting to NATS at start may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "cluster.node_id is required in cluster mode, without whitespace or control characters (got {0:?})"
    )]
    NodeId(String),
    #[error(transparent)]
    Prefix(#[from] subject::PrefixError),
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
}

/// Figures about the NATS link, for `/metrics`.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub connected: AtomicBool,
    /// Connections made to NATS, the first included.
    pub connections: AtomicU64,
    /// The connection (1: the first) on which NATS last confirmed this node's interest.
    pub interest_announced: AtomicU64,
    /// NATS subjects subscribed for local interest, as last confirmed by NATS.
    pub subjects: AtomicU64,
    pub forwarded: AtomicU64,
    pub forward_bytes: AtomicU64,
    pub forward_dropped: AtomicU64,
    pub publish_errors: AtomicU64,
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    pub duplicates: AtomicU64,
    pub malformed: AtomicU64,
    pub shared_received: AtomicU64,
    pub retained_received: AtomicU64,
    pub takeovers_asked: AtomicU64,
    pub takeovers_done: AtomicU64,
    /// QoS 0 messages from other nodes dropped: the inbound queue was full.
    pub inbound_dropped: AtomicU64,
    /// Messages the NATS client dropped because a subscription's buffer was full (as
    /// reported by its slow-consumer events, which may themselves be dropped when many
    /// come at once: a lower bound).
    pub slow_consumer: AtomicU64,
    /// Shared-subscription messages of leaving members taken by another node's member.
    pub shared_handed_over: AtomicU64,
    /// ... that no node took (kept in a persistent session's queue, else lost).
    pub shared_handover_failed: AtomicU64,
    /// Hand-overs from other nodes queued for a member here.
    pub shared_taken_over: AtomicU64,
}

/// This node's link to the cluster.
pub struct Cluster {
    node: String,
    map: SubjectMap,
    client: async_nats::Client,
    /// The publisher shards (a topic always goes through the same one: its order holds).
    outbound: Vec<forward::Shard>,
    next_id: AtomicU64,
    interest: Arc<Interest>,
    claims: takeover::Claims,
    /// QoS 1/2 messages awaiting other nodes' acknowledgements, and those owed to them.
    hop: hop::Hop,
    hand_overs: shared::HandOvers,
    stats: Arc<LinkStats>,
    connects: tokio::sync::watch::Receiver<u64>,
    inbound_queue: usize,
    /// The session registry and node leases, with a shared (PostgreSQL) store.
    registry: Option<Arc<registry::Registry>>,
    /// Where ids of this node start (`incarnation << 32` with a registry, else 0).
    id_base: u64,
    /// Claims and releases under way, per client id ([`Cluster::lock_client`]).
    client_locks:
        parking_lot::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// `cluster.redirect_to`: the Server Reference given when draining.
    redirect_to: Option<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to NATS and opens the session registry; `None` when cluster mode is off.
    pub async fn connect(cfg: &ClusterConfig) -> Result<Option<Arc<Cluster>>, ClusterError> {
        let Some(url) = &cfg.nats_url else {
            return Ok(None);
        };
        let node = cfg.node_id.clone();
        if node.is_empty() || node.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ClusterError::NodeId(node));
        }
        let map = SubjectMap::new(&cfg.subject_prefix)?;
        let stats = Arc::new(LinkStats::default());
        let (connects_tx, connects) = tokio::sync::watch::channel(0u64);
        let ev_stats = stats.clone();
        let options = async_nats::ConnectOptions::new()
            .name(format!("switchboard-{node}"))
            .max_reconnects(None)
            // Quick to come back after a NATS restart: at most 2 s between attempts.
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis(100 * (attempt as u64).min(20))
            })
            .event_callback(move |event| {
                let stats = ev_stats.clone();
                let connects_tx = connects_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            stats.connected.store(true, Ordering::Relaxed);
                            connects_tx.send_modify(|n| *n += 1);
                            info!("NATS link up");
                        }
                        async_nats::Event::Disconnected => {
                            stats.connected.store(false, Ordering::Relaxed);
                            warn!("NATS link down; reconnecting");
                        }
                        async_nats::Event::SlowConsumer(sid) => {
                            let n = stats.slow_consumer.fetch_add(1, Ordering::Relaxed);
                            if n.is_power_of_two() {
                                warn!(sid, dropped = n + 1, "NATS client dropped messages: subscription buffer full (slow consumer)");
                            }
                        }
                        other => tracing::debug!(event = %other, "NATS event"),
                    }
                }
            });
        let client = tokio::time::timeout(CONNECT_TIMEOUT, options.connect(url.as_str()))
            .await
            .map_err(|_| ClusterError::Connect {
                url: url.clone(),
                reason: "timed out".into(),
            })?
            .map_err(|e| ClusterError::Connect {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        stats.connected.store(true, Ordering::Relaxed);
        let registry = match &cfg.postgres_url {
            Some(pg) => {
                let lease = Duration::from_secs(cfg.lease_secs.max(1));
                let r = registry::Registry::new(pg, &node, lease)?;
                r.renew(None).await?;
                Some(Arc::new(r))
            }
            None => None,
        };
        let id_base = match &registry {
            Some(r) => r.incarnation().await? << 32,
            None => 0,
        };
        let outbound = forward::shards(&node, url, cfg.forward_queue).await?;
        info!(node = %node, %url, "cluster mode: connected to NATS");
        Ok(Some(Arc::new(Cluster {
            node,
            map,
            client,
            outbound,
            next_id: AtomicU64::new(1),
            interest: Arc::new(Interest::default()),
            claims: takeover::Claims::default(),
            hop: hop::Hop::default(),
            hand_overs: shared::HandOvers::default(),
            stats,
            connects,
            inbound_queue: cfg.inbound_queue.max(1),
            registry,
            id_base,
            client_locks: parking_lot::Mutex::new(std::collections::HashMap::new()),
            redirect_to: cfg.redirect_to.clone(),
        })))
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Where this node's ids (connections, sessions) start: unique in a shared store.
    pub fn id_base(&self) -> u64 {
        self.id_base
    }

    /// The configured Server Reference for draining (`cluster.redirect_to`).
    pub fn redirect_to(&self) -> Option<&str> {
        self.redirect_to.as_deref()
    }

    /// The observer the routing table must report subscriptions to.
    pub fn interest(&self) -> Arc<Interest> {
        self.interest.clone()
    }

    /// The NATS client (the IM service's cluster notes, `im::cluster`).
    pub fn nats(&self) -> &async_nats::Client {
        &self.client
    }

    /// The link's figures.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Whether the NATS connection is up.
    pub fn connected(&self) -> bool {
        self.stats.connected.load(Ordering::Relaxed)
    }

    /// Starts the link's tasks (outgoing publisher, inbound router, interest, retained
    /// broadcast, takeover answers, re-announcement after reconnects) on `state`'s tracker;
    /// they stop at shutdown.
    pub fn run(self: &Arc<Self>, state: &Arc<BrokerState>) {
        if !self.start_publishers(state) {
            return;
        }
        let (in_tx, in_rx) = mpsc::channel(self.inbound_queue);
        state.tasks.spawn(peers::serve(self.clone(), state.clone()));
        state
            .tasks
            .spawn(inbound::route(self.clone(), state.clone(), in_rx));
        state.tasks.spawn(interest::reconcile(
            self.clone(),
            state.clone(),
            in_tx.clone(),
        ));
        state
            .tasks
            .spawn(inbound::resends(self.clone(), state.clone(), in_tx.clone()));
        state
            .tasks
            .spawn(hop::receive_acks(self.clone(), state.clone()));
        state
            .tasks
            .spawn(hop::send_acks(self.clone(), state.clone()));
        state.tasks.spawn(hop::resend(self.clone(), state.clone()));
        state
            .tasks
            .spawn(inbound::retained(self.clone(), state.clone(), in_tx));
        state
            .tasks
            .spawn(takeover::answer(self.clone(), state.clone()));
        state.tasks.spawn(self.clone().reannounce(state.clone()));
        if self.registry.is_some() {
            state
                .tasks
                .spawn(handover::answer(self.clone(), state.clone()));
            state
                .tasks
                .spawn(handover::lease(self.clone(), state.clone()));
        }
    }

    /// After each (re)connection (the NATS client subscribes again by itself), waits for
    /// NATS to confirm those subscriptions, then records that connection as announced.
    async fn reannounce(self: Arc<Self>, state: Arc<BrokerState>) {
        let mut connects = self.connects.clone();
        loop {
            let n = *connects.borrow_and_update();
            self.stats.connections.store(n, Ordering::Relaxed);
            if n > 0 {
                let flushed = tokio::select! {
                    r = tokio::time::timeout(Duration::from_secs(10), self.client.flush()) => matches!(r, Ok(Ok(()))),
                    _ = state.shutdown.cancelled() => break,
                };
                if flushed {
                    if n > 1 {
                        // Announcements may have been lost meanwhile, both ways.
                        self.interest.peers.join(&self, &state).await;
                    }
                    self.stats
                        .interest_announced
                        .fetch_max(n, Ordering::Relaxed);
                    info!(node = %self.node, connection = n, "cluster interest announced to NATS");
                }
            }
            tokio::select! {
                r = connects.changed() => if r.is_err() { break },
                _ = state.shutdown.cancelled() => break,
            }
        }
    }

    /// Appends the link's figures to a Prometheus text page.
    pub fn render_metrics(&self, out: &mut String) {
        let s = &self.stats;
        let node = self.node.replace('\\', "\\\\").replace('"', "\\\"");
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, u64); 22] = [
            (
                "cluster_nats_connected",
                "1 while the NATS link is up.",
                "gauge",
                u64::from(s.connected.load(Ordering::Relaxed)),
            ),
            (
                "cluster_nats_connections_total",
                "Connections made to NATS (the first included).",
                "counter",
                g(&s.connections),
            ),
            (
                "cluster_interest_announced_connection",
                "The NATS connection (1: the first) on which NATS last confirmed this node's interest.",
                "gauge",
                g(&s.interest_announced),
            ),
            (
                "cluster_interest_subjects",
                "NATS subjects subscribed for local subscriptions (confirmed).",
                "gauge",
                g(&s.subjects),
            ),
            (
                "cluster_interest_filters",
                "Distinct local filters announced to NATS.",
                "gauge",
                self.interest.len() as u64,
            ),
            (
                "cluster_forwarded_total",
                "Messages published to NATS.",
                "counter",
                g(&s.forwarded),
            ),
            (
                "cluster_forwarded_bytes_total",
                "Bytes published to NATS (bodies).",
                "counter",
                g(&s.forward_bytes),
            ),
            (
                "cluster_forward_dropped_total",
                "Messages not forwarded: outgoing queue full.",
                "counter",
                g(&s.forward_dropped),
            ),
            (
                "cluster_publish_errors_total",
                "Publishes the NATS client refused.",
                "counter",
                g(&s.publish_errors),
            ),
            (
                "cluster_received_total",
                "Messages from other nodes routed here.",
                "counter",
                g(&s.received),
            ),
            (
                "cluster_received_bytes_total",
                "Bytes received from NATS (bodies).",
                "counter",
                g(&s.received_bytes),
            ),
            (
                "cluster_duplicates_total",
                "Copies dropped (overlapping NATS subscriptions).",
                "counter",
                g(&s.duplicates),
            ),
            (
                "cluster_malformed_total",
                "NATS messages that were not ours.",
                "counter",
                g(&s.malformed),
            ),
            (
                "cluster_shared_received_total",
                "Shared-subscription messages this node was picked for.",
                "counter",
                g(&s.shared_received),
            ),
            (
                "cluster_retained_received_total",
                "Retained messages stored from other nodes.",
                "counter",
                g(&s.retained_received),
            ),
            (
                "cluster_session_claims_total",
                "Session claims broadcast for CONNECTs here.",
                "counter",
                g(&s.takeovers_asked),
            ),
            (
                "cluster_inbound_dropped_total",
                "QoS 0 messages from other nodes dropped: inbound queue full.",
                "counter",
                g(&s.inbound_dropped),
            ),
            (
                "cluster_slow_consumer_total",
                "Messages the NATS client dropped: a subscription's buffer was full (lower bound).",
                "counter",
                g(&s.slow_consumer),
            ),
            (
                "cluster_shared_handed_over_total",
                "Shared messages of leaving members taken by a member on another node.",
                "counter",
                g(&s.shared_handed_over),
            ),
            (
                "cluster_shared_handover_failed_total",
                "Shared messages of leaving members no node took.",
                "counter",
                g(&s.shared_handover_failed),
            ),
            (
                "cluster_shared_taken_over_total",
                "Shared messages from leaving members on other nodes queued here.",
                "counter",
                g(&s.shared_taken_over),
            ),
            (
                "cluster_takeovers_done_total",
                "Connections closed here because another node took their session.",
                "counter",
                g(&s.takeovers_done),
            ),
        ];
        for (name, help, kind, value) in rows {
            let _ = writeln!(
                out,
                "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} {kind}\nswitchboard_{name}{{node=\"{node}\"}} {value}"
            );
        }
        self.interest.peers.render_metrics(out, &node);
        hop::render_metrics(&self.hop, out, &node);
        if let Some(r) = &self.registry {
            r.render_metrics(out);
        }
    }
}
