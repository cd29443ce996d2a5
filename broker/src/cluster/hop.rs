//! The acknowledged hop: QoS 1/2 messages to subscriptions on other nodes, direct or
//! shared, arrive at least once while the publishing node lives (`docs/cluster.md`,
//! "Delivery guarantees").
//!
//! The publishing node knows which peers have a direct subscription matching the topic,
//! and which shared groups (on any node, its own included) match it (their announced
//! interest, [`super::peers`]); for a QoS 1/2 message it keeps the encoded message and
//! what it waits for ([`Waiter`]): each of those peers, and per matching group the one
//! node NATS picks (whichever acknowledges for the group). A receiving node acknowledges
//! a QoS 1/2 message once it has routed it (for a group: queued it for one member) and
//! its store has committed the copies queued for persistent sessions, in batches per
//! origin (and group: header `Sb-Group`), on the origin's acknowledgement subject
//! `{prefix}.ack.{origin}`. Every [`SCAN`] the publisher sends again what has not been
//! acknowledged within [`RETRY_AFTER`] (doubling per resend, up to 8 s): to a peer on
//! that peer's own subject `{prefix}.node.{peer}` (so a lost copy is replaced without
//! sending it again to the peers that have it), to a group on its hand-over subject
//! `{prefix}.share.{queue}` (NATS picks a node of the group again: a node whose member
//! left meanwhile does not acknowledge, and another takes it), while the NATS link is up,
//! at most [`MAX_ATTEMPTS`] times; a receiver drops copies it already routed (the
//! duplicate windows, `dedupe`; for groups per node too), so a resend after a lost
//! acknowledgement is not delivered twice by the same node unless more than the window's
//! 65,536 messages of that origin came in between (a group resend that NATS gives to
//! another node can reach a second member: at least once).
//!
//! The publisher's own PUBACK/PUBREC waits for the same acknowledgements (the pipeline
//! gets [`Hop::track`]'s answer through `Routed::remote` and hands it to the connection's
//! acknowledgement queue, which polls it with the local commit: no task per message): a
//! QoS 1/2 message is acknowledged to its publisher only once every interested node has
//! committed its copies, so the publishing node dying after its acknowledgement loses
//! nothing. It does not wait for a peer given up (left, silent, or [`MAX_ATTEMPTS`]
//! resends), a group no node holds any more, nor for a message beyond [`MAX_PENDING`]
//! (sent at most once, counted).
//!
//! Bounds: at most [`MAX_PENDING`] messages wait for acknowledgements per node; beyond,
//! a message is sent at most once (counted, `_hop_untracked_total`). Acknowledgements
//! waiting to be sent are bounded too ([`ACK_QUEUE`]; beyond, the ack is skipped and the
//! publisher sends again, which the window absorbs). A peer that left (goodbye, or
//! silence) is not waited for.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::Cluster;
use super::dedupe::Window;
use crate::BrokerState;
use crate::store::{Applied, StoreError};

/// Subject (under the prefix, then the escaped node name) of a node's acknowledgements.
pub const ACK: &str = "ack";
/// Subject (under the prefix, then the escaped node name) of resends to one node.
pub const NODE: &str = "node";
/// Messages waiting for acknowledgements at most.
pub const MAX_PENDING: usize = 65_536;
/// How long a peer may take to acknowledge before the message is sent to it again; it
/// doubles with each resend (up to 8 times this), so that an overloaded receiver, which
/// acknowledges late, is not flooded with resends.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often the pending messages are looked at.
const SCAN: Duration = Duration::from_millis(250);
/// Resends per peer and message (while the link is up) before giving up (about 3 min).
const MAX_ATTEMPTS: u32 = 24;
/// Acknowledgements waiting to be sent at most.
pub const ACK_QUEUE: usize = 65_536;
/// Acknowledgements per batch.
const ACK_BATCH: usize = 1024;
/// Header of an acknowledgement batch naming the shared group (queue name) it is for.
const GROUP: &str = "Sb-Group";
/// Shared-group copies remembered per node to recognise resends.
const SHARED_WINDOW: usize = 65_536;

/// Figures of the acknowledged hop.
#[derive(Debug, Default)]
pub struct HopStats {
    pub tracked: AtomicU64,
    pub untracked: AtomicU64,
    pub acked: AtomicU64,
    pub resent: AtomicU64,
    pub gave_up: AtomicU64,
    pub acks_sent: AtomicU64,
    pub acks_skipped: AtomicU64,
}

/// What a message waits for: a node with direct subscriptions, or any one node holding a
/// shared group (NATS picks which; by the group's queue name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiter {
    Node(String),
    Group(String),
}

#[derive(Debug)]
struct Pending {
    headers: async_nats::HeaderMap,
    body: Bytes,
    /// Peers (and groups) that have not acknowledged, with the resends made to each.
    waiting: Vec<(Waiter, u32)>,
    sent: Instant,
    /// Dropped with the entry (every peer acknowledged, or was given up): the publisher's
    /// own acknowledgement waits for that.
    _done: Option<oneshot::Sender<()>>,
}

/// An acknowledgement owed to `origin` for message `id`, once `committed` (if any) fires;
/// `group` names the shared group (queue name) a member of which took it here.
#[derive(Debug)]
pub struct Owed {
    pub origin: String,
    pub id: u64,
    pub committed: Option<oneshot::Receiver<Result<Applied, StoreError>>>,
    pub group: Option<String>,
}

/// This node's side of the acknowledged hop, both ways.
#[derive(Debug)]
pub struct Hop {
    pending: Mutex<HashMap<u64, Pending>>,
    owed_tx: mpsc::Sender<Owed>,
    owed_rx: Mutex<Option<mpsc::Receiver<Owed>>>,
    /// Shared-group copies already taken here (by origin, group and id), so that a resend
    /// after a lost acknowledgement that lands here again is acknowledged, not delivered.
    shared_seen: Mutex<Window>,
    pub stats: HopStats,
}

impl Default for Hop {
    fn default() -> Self {
        let (owed_tx, rx) = mpsc::channel(ACK_QUEUE);
        Hop {
            pending: Mutex::new(HashMap::new()),
            owed_tx,
            owed_rx: Mutex::new(Some(rx)),
            shared_seen: Mutex::new(Window::new(SHARED_WINDOW)),
            stats: HopStats::default(),
        }
    }
}

impl Hop {
    /// Keeps message `id` until each of `waiters` acknowledged it; the answer closes then
    /// (at once when there is nothing to wait for, or too much is waiting already).
    pub fn track(
        &self,
        id: u64,
        headers: async_nats::HeaderMap,
        body: Bytes,
        waiters: Vec<Waiter>,
    ) -> oneshot::Receiver<()> {
        let (done, rx) = oneshot::channel();
        if waiters.is_empty() {
            return rx;
        }
        let mut pending = self.pending.lock();
        if pending.len() >= MAX_PENDING {
            drop(pending);
            let n = self.stats.untracked.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                warn!(
                    untracked = n + 1,
                    "cluster hop: too many messages awaiting acknowledgement; sent at most once"
                );
            }
            return rx;
        }
        pending.insert(
            id,
            Pending {
                headers,
                body,
                waiting: waiters.into_iter().map(|w| (w, 0)).collect(),
                sent: Instant::now(),
                _done: Some(done),
            },
        );
        self.stats.tracked.fetch_add(1, Ordering::Relaxed);
        rx
    }

    /// Messages waiting for acknowledgements.
    pub fn pending(&self) -> usize {
        self.pending.lock().len()
    }

    /// An acknowledgement owed for a QoS 1/2 message routed here (sent once `committed`
    /// fires). Skipped (counted) when too many are waiting: the origin sends again.
    pub fn owe(&self, owed: Owed) {
        if self.owed_tx.try_send(owed).is_err() {
            self.stats.acks_skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// True the first time a member here takes shared-group copy `id` of `origin` for
    /// group `queue`; false for a resend of one taken before (acknowledge it again).
    pub fn first_shared(&self, origin: &str, queue: &str, id: u64) -> bool {
        self.shared_seen.lock().first(shared_key(origin, queue), id)
    }

    /// Forgets shared-group copy `id` of `origin` for `queue` (no member took it here).
    pub fn forget_shared(&self, origin: &str, queue: &str, id: u64) {
        self.shared_seen
            .lock()
            .forget(shared_key(origin, queue), id);
    }

    /// Peer `from` acknowledged `ids` (for its direct subscriptions, or for shared group
    /// `group`).
    fn acked(&self, from: &str, group: Option<&str>, ids: impl Iterator<Item = u64>) {
        let mut pending = self.pending.lock();
        for id in ids {
            let Some(p) = pending.get_mut(&id) else {
                continue;
            };
            p.waiting.retain(|(w, _)| match (w, group) {
                (Waiter::Node(n), None) => n != from,
                (Waiter::Group(q), Some(g)) => q != g,
                _ => true,
            });
            if p.waiting.is_empty() {
                pending.remove(&id);
                self.stats.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The duplicate-window key of shared-group copies from `origin` for group `queue`.
fn shared_key(origin: &str, queue: &str) -> u64 {
    super::wire::node_hash(origin) ^ super::wire::node_hash(queue).rotate_left(17)
}

/// The acknowledgement subject of `node`.
fn ack_subject(c: &Cluster, node: &str) -> String {
    let mut s = String::new();
    super::subject::escape_level(node, &mut s);
    c.map.internal(&format!("{ACK}.{s}"))
}

/// The resend subject of `node`.
pub fn node_subject(c: &Cluster, node: &str) -> String {
    let mut s = String::new();
    super::subject::escape_level(node, &mut s);
    c.map.internal(&format!("{NODE}.{s}"))
}

/// Takes the acknowledgements addressed to this node until shutdown.
pub(super) async fn receive_acks(cluster: Arc<Cluster>, state: Arc<BrokerState>) {
    let subject = ack_subject(&cluster, &cluster.node);
    let mut sub = match cluster.client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%subject, error = %e, "cannot subscribe to hop acknowledgements");
            return;
        }
    };
    loop {
        let m = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            _ = state.shutdown.cancelled() => break,
        };
        let Some((from, _)) = super::wire::origin(m.headers.as_ref()) else {
            cluster.stats.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let group = m
            .headers
            .as_ref()
            .and_then(|h| h.get(GROUP))
            .map(|g| g.as_str());
        let mut body = m.payload.clone();
        let ids = std::iter::from_fn(move || (body.remaining() >= 8).then(|| body.get_u64()));
        cluster.hop.acked(from, group, ids);
    }
}

/// Sends the acknowledgements this node owes, in batches per origin, each once its
/// store commit is done, until shutdown.
pub(super) async fn send_acks(cluster: Arc<Cluster>, state: Arc<BrokerState>) {
    let Some(mut rx) = cluster.hop.owed_rx.lock().take() else {
        return;
    };
    let mut batch = Vec::with_capacity(ACK_BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, ACK_BATCH) => n,
            _ = state.shutdown.cancelled() => break,
        };
        if n == 0 {
            break;
        }
        let mut by_origin: HashMap<(String, Option<String>), Vec<u8>> = HashMap::new();
        for owed in batch.drain(..) {
            if let Some(rx) = owed.committed {
                // Not committed (store failure): no acknowledgement, the origin resends.
                if !matches!(rx.await, Ok(Ok(_))) {
                    continue;
                }
            }
            by_origin
                .entry((owed.origin, owed.group))
                .or_default()
                .extend_from_slice(&owed.id.to_be_bytes());
        }
        for ((origin, group), ids) in by_origin {
            let count = (ids.len() / 8) as u64;
            let mut headers = super::wire::headers(&cluster.node, 0);
            if let Some(g) = group {
                headers.insert(GROUP, g);
            }
            let subject = ack_subject(&cluster, &origin);
            match cluster
                .client
                .publish_with_headers(subject, headers, Bytes::from(ids))
                .await
            {
                Ok(()) => {
                    cluster
                        .hop
                        .stats
                        .acks_sent
                        .fetch_add(count, Ordering::Relaxed);
                }
                Err(e) => debug!(error = %e, "cannot send hop acknowledgements"),
            }
        }
    }
}

/// Sends again what peers have not acknowledged in time, until shutdown.
pub(super) async fn resend(cluster: Arc<Cluster>, state: Arc<BrokerState>) {
    let mut tick = tokio::time::interval(SCAN);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.shutdown.cancelled() => break,
        }
        if !cluster.connected() {
            continue; // the link is down: nothing to do, and no attempt counted
        }
        let now = Instant::now();
        let mut out = Vec::new();
        {
            let peers = &cluster.interest.peers;
            let mut pending = cluster.hop.pending.lock();
            pending.retain(|_, p| {
                let tries = p.waiting.iter().map(|(_, a)| *a).min().unwrap_or(0);
                if now.duration_since(p.sent) < RETRY_AFTER * (1u32 << tries.min(3)) {
                    return true;
                }
                p.sent = now;
                p.waiting.retain_mut(|(w, attempts)| {
                    let held = match w {
                        Waiter::Node(node) => peers.is_peer(node),
                        Waiter::Group(q) => peers.has_group(q),
                    };
                    if *attempts >= MAX_ATTEMPTS || !held {
                        cluster.hop.stats.gave_up.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                    *attempts += 1;
                    let subject = match w {
                        Waiter::Node(node) => node_subject(&cluster, node),
                        Waiter::Group(q) => super::shared::queue_subject(&cluster, q),
                    };
                    out.push((subject, p.headers.clone(), p.body.clone()));
                    true
                });
                !p.waiting.is_empty()
            });
        }
        for (subject, headers, body) in out {
            cluster.hop.stats.resent.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = cluster
                .client
                .publish_with_headers(subject, headers, body)
                .await
            {
                debug!(error = %e, "hop resend failed");
            }
        }
    }
}

/// Appends the hop's figures (label `node`, escaped) to a Prometheus page.
pub fn render_metrics(hop: &Hop, out: &mut String, node: &str) {
    use std::fmt::Write as _;
    let s = &hop.stats;
    let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
    for (name, help, kind, value) in [
        (
            "hop_pending",
            "QoS 1/2 messages waiting for other nodes' acknowledgements.",
            "gauge",
            hop.pending() as u64,
        ),
        (
            "hop_tracked_total",
            "QoS 1/2 messages sent to other nodes with acknowledgement.",
            "counter",
            g(&s.tracked),
        ),
        (
            "hop_untracked_total",
            "QoS 1/2 messages sent at most once: too many awaiting acknowledgement.",
            "counter",
            g(&s.untracked),
        ),
        (
            "hop_acked_total",
            "QoS 1/2 messages every interested node acknowledged.",
            "counter",
            g(&s.acked),
        ),
        (
            "hop_resent_total",
            "Copies sent again to a node that had not acknowledged.",
            "counter",
            g(&s.resent),
        ),
        (
            "hop_gave_up_total",
            "Nodes no longer waited for (left, or too many resends).",
            "counter",
            g(&s.gave_up),
        ),
        (
            "hop_acks_sent_total",
            "Acknowledgements sent to publishing nodes.",
            "counter",
            g(&s.acks_sent),
        ),
        (
            "hop_acks_skipped_total",
            "Acknowledgements not sent: too many waiting.",
            "counter",
            g(&s.acks_skipped),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP switchboard_cluster_{name} {help}\n# TYPE switchboard_cluster_{name} {kind}\nswitchboard_cluster_{name}{{node=\"{node}\"}} {value}"
        );
    }
}
