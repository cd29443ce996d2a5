//! Messages from the other nodes, routed to this node's sessions.
//!
//! One task reads every NATS subscription's messages from one bounded channel, in order,
//! so that the first copy of a message (overlapping subscriptions bring several) is the
//! one delivered and a topic's messages keep their order:
//! - through a plain subscription: skipped if this node published it, dropped if a copy
//!   was already routed, else routed to local direct subscriptions;
//! - through a queue subscription (`$share`): NATS picked this node, so one local member
//!   of that group gets it, whoever published it (QoS 1/2 acknowledged to the origin once
//!   committed, see `shared::take_acked`);
//! - on the retained broadcast subject: stored in this node's retained set (and store).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::Cluster;
use super::dedupe::Window;
use super::hop::Owed;
use super::wire;
use crate::BrokerState;
use crate::message::ShareKey;

/// Message ids remembered to drop copies (see [`super::dedupe`]).
const WINDOW: usize = 65_536;

/// How a NATS message reached this node.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A plain subscription (a local direct filter).
    Direct,
    /// The queue subscription of a local shared group.
    Shared(Arc<ShareKey>),
    /// The retained broadcast.
    Retained,
}

/// One NATS message and how it came.
#[derive(Debug)]
pub struct Inbound {
    pub kind: Kind,
    pub msg: async_nats::Message,
}

/// Routes what the subscriptions bring until shutdown.
pub(super) async fn route(
    cluster: Arc<Cluster>,
    state: Arc<BrokerState>,
    mut rx: mpsc::Receiver<Inbound>,
) {
    let mut window = Window::new(WINDOW);
    let stats = &cluster.stats;
    loop {
        let inb = tokio::select! {
            m = rx.recv() => match m { Some(m) => m, None => break },
            _ = state.shutdown.cancelled() => break,
        };
        let Some((node, id)) = wire::origin(inb.msg.headers.as_ref()) else {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mine = node == cluster.node;
        let dedupe_key = wire::node_hash(node);
        if matches!(inb.kind, Kind::Direct | Kind::Retained) && mine {
            continue;
        }
        let acked = matches!(inb.kind, Kind::Direct) && wire::qos_of(&inb.msg.payload) > 0;
        if matches!(inb.kind, Kind::Direct) && !window.first(dedupe_key, id) {
            stats.duplicates.fetch_add(1, Ordering::Relaxed);
            if acked {
                // Maybe a resend after a lost acknowledgement: acknowledge again.
                cluster.hop.owe(Owed {
                    origin: node.to_owned(),
                    id,
                    committed: None,
                    group: None,
                });
            }
            continue;
        }
        if let Kind::Shared(key) = &inb.kind {
            // NATS picked this node for the group; QoS 1/2 is acknowledged to the origin
            // once a member's copy is committed (see `shared::take_acked`).
            stats.shared_received.fetch_add(1, Ordering::Relaxed);
            stats
                .received_bytes
                .fetch_add(inb.msg.payload.len() as u64, Ordering::Relaxed);
            super::shared::take_acked(&cluster, &state, key, &inb.msg);
            continue;
        }
        let Some(msg) = wire::decode(&inb.msg.payload, Instant::now()) else {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            debug!(subject = %inb.msg.subject, "undecodable message from NATS");
            continue;
        };
        stats
            .received_bytes
            .fetch_add(inb.msg.payload.len() as u64, Ordering::Relaxed);
        let msg = Arc::new(msg);
        match inb.kind {
            Kind::Direct => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                let committed = state.publish_remote(msg, acked);
                if acked {
                    cluster.hop.owe(Owed {
                        origin: node.to_owned(),
                        id,
                        committed,
                        group: None,
                    });
                }
            }
            Kind::Shared(_) => {} // taken above
            Kind::Retained => {
                stats.retained_received.fetch_add(1, Ordering::Relaxed);
                let caps = crate::retained::RetainedCaps::from_limits(&state.config.limits);
                match state.retained.set(&msg, "", &caps, Instant::now()) {
                    Ok(op) => {
                        if let Some(st) = state.store() {
                            st.write(vec![op], None);
                        }
                    }
                    Err(e) => {
                        warn!(topic = %msg.topic, error = ?e, "retained message from another node over a cap")
                    }
                }
            }
        }
    }
}

/// Subscribes to this node's own subject (messages other nodes send again because no
/// acknowledgement came, see [`super::hop`]) and feeds them to the router as direct ones.
pub(super) async fn resends(
    cluster: Arc<Cluster>,
    state: Arc<BrokerState>,
    tx: mpsc::Sender<Inbound>,
) {
    let subject = super::hop::node_subject(&cluster, &cluster.node);
    feed(&cluster, &state, subject, Kind::Direct, &tx).await;
}

/// Subscribes to the retained broadcast and feeds it to the router.
pub(super) async fn retained(
    cluster: Arc<Cluster>,
    state: Arc<BrokerState>,
    tx: mpsc::Sender<Inbound>,
) {
    let subject = cluster.map.internal(wire::RETAINED);
    feed(&cluster, &state, subject, Kind::Retained, &tx).await;
}

/// Subscribes to `subject` and hands what comes to the router as `kind` (waiting for
/// room), until shutdown.
async fn feed(
    cluster: &Cluster,
    state: &BrokerState,
    subject: String,
    kind: Kind,
    tx: &mpsc::Sender<Inbound>,
) {
    let mut sub = match cluster.client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%subject, error = %e, "cannot subscribe to a cluster subject");
            return;
        }
    };
    loop {
        let m = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            _ = state.shutdown.cancelled() => break,
        };
        let inb = Inbound {
            kind: kind.clone(),
            msg: m,
        };
        if tx.send(inb).await.is_err() {
            break;
        }
    }
}
