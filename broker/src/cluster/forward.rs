//! Local publishes on their way to the other nodes.
//!
//! A message is handed to NATS only if another node wants its topic (or a local shared
//! group does, or the remote view is not complete: see [`super::peers`]); a retained
//! message also goes on the retained broadcast, which every node stores. What goes out
//! is spread over [`PUBLISHERS`] shards by subject, each a bounded queue drained in
//! batches by its own task over its own NATS connection (not the node's main one, which
//! carries the control traffic), so that publishing uses more than one core and one
//! connection's writer; a subject always takes the same shard, so
//! a topic's messages keep their order. Queue bound: `cluster.forward_queue` in all,
//! split between the shards; QoS 0 may use only the first [`QOS0_ROOM`] places of a shard
//! (at most half; dropped and counted beyond), so that QoS 1/2 still find room under a
//! QoS 0 flood and a QoS 0 message never waits behind a long queue.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::hop::Waiter;
use super::{Cluster, ClusterError, wire};
use crate::BrokerState;
use crate::message::Message;
use crate::store::codec;

/// Publisher shards (each with its own NATS connection).
pub const PUBLISHERS: usize = 4;
/// Messages a publisher takes from its queue at once.
const BATCH: usize = 256;
/// QoS 0 messages queued per shard at most: under a flood they would otherwise wait
/// behind tens of thousands of others (seconds) and arrive too late to be of use; beyond
/// this they are dropped at once (counted), which is what QoS 0 allows.
const QOS0_ROOM: usize = 1024;

/// A message waiting to be published to NATS.
#[derive(Debug)]
pub(super) struct Outgoing {
    subject: String,
    headers: async_nats::HeaderMap,
    body: Bytes,
}

/// One publisher: its queue, and the receiving end until the task starts.
pub(super) struct Shard {
    tx: mpsc::Sender<Outgoing>,
    rx: parking_lot::Mutex<Option<mpsc::Receiver<Outgoing>>>,
    client: async_nats::Client,
}

/// The shards, each with its own publish-only connection (reconnecting by itself): the
/// node's main connection carries the control traffic (interest announcements and their
/// acknowledgements, hop acknowledgements, hand-overs, releases), which must not wait
/// behind a flood of forwards in one connection's write queue.
pub(super) async fn shards(
    node: &str,
    url: &str,
    queue: usize,
) -> Result<Vec<Shard>, ClusterError> {
    let per = (queue / PUBLISHERS).max(1);
    let mut out = Vec::with_capacity(PUBLISHERS);
    for i in 0..PUBLISHERS {
        let client = {
            let options = async_nats::ConnectOptions::new()
                .name(format!("switchboard-{node}-pub{i}"))
                .max_reconnects(None)
                .reconnect_delay_callback(|attempt| {
                    Duration::from_millis(100 * (attempt as u64).min(20))
                });
            tokio::time::timeout(super::CONNECT_TIMEOUT, options.connect(url))
                .await
                .map_err(|_| ClusterError::Connect {
                    url: url.to_owned(),
                    reason: "timed out".into(),
                })?
                .map_err(|e| ClusterError::Connect {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?
        };
        let (tx, rx) = mpsc::channel(per);
        out.push(Shard {
            tx,
            rx: parking_lot::Mutex::new(Some(rx)),
            client,
        });
    }
    Ok(out)
}

impl Cluster {
    /// Queues `msg` (published on this node) for the other nodes that want it: once on
    /// its topic's subject, and for a retained message once more on the retained
    /// broadcast subject. True if it went to NATS on its topic's subject (some other node
    /// may have subscribers); false if no node wanted it (counted) or the queue was full
    /// (the message stays on this node; counted and logged).
    pub fn forward(&self, msg: &Message) -> bool {
        self.forward_acked(msg).0
    }

    /// [`Cluster::forward`], and for a QoS 1/2 message that other nodes' direct
    /// subscriptions want, what closes once each of those nodes has committed its copies
    /// (the publisher's acknowledgement waits for it: see [`super::hop`]).
    pub fn forward_acked(&self, msg: &Message) -> (bool, Option<oneshot::Receiver<()>>) {
        let wanted = self.interest.peers.wants(&msg.topic);
        if !wanted {
            self.interest
                .peers
                .stats
                .not_forwarded
                .fetch_add(1, Ordering::Relaxed);
            if !msg.retain {
                return (false, None);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let headers = wire::headers(&self.node, id);
        let body = Bytes::from(codec::encode_message(msg, Instant::now()));
        let mut ok = false;
        let mut remote = None;
        if wanted && msg.qos != switchboard_proto::QoS::AtMostOnce {
            // Kept until every node with a matching direct subscription, and for each
            // matching shared group the node NATS picked, acknowledged it (resent if not;
            // also if the queue below is full). While the link is down this node's own
            // groups were served here (`BrokerState::publish`): not waited for.
            let connected = self.connected();
            let waiters: Vec<Waiter> = self
                .interest
                .peers
                .direct_peers(&msg.topic)
                .into_iter()
                .map(Waiter::Node)
                .chain(
                    self.interest
                        .peers
                        .shared_groups(&msg.topic)
                        .into_iter()
                        .filter(|(_, local)| connected || !local)
                        .map(|(q, _)| Waiter::Group(q)),
                )
                .collect();
            if !waiters.is_empty() {
                remote = Some(self.hop.track(id, headers.clone(), body.clone(), waiters));
            }
        }
        if wanted {
            // QoS 0 may use only half of a queue: under overload it is dropped (counted)
            // first, and QoS 1/2 messages still find room.
            let qos0 = msg.qos == switchboard_proto::QoS::AtMostOnce;
            ok = self.enqueue(
                Outgoing {
                    subject: self.map.topic_subject(&msg.topic),
                    headers: headers.clone(),
                    body: body.clone(),
                },
                qos0,
            );
        }
        if msg.retain {
            self.enqueue(
                Outgoing {
                    subject: self.map.internal(wire::RETAINED),
                    headers,
                    body,
                },
                false,
            );
        }
        (ok, remote)
    }

    /// Queues `o` on its subject's shard (a QoS 0 one only while fewer than
    /// [`QOS0_ROOM`] messages, and less than half the shard, are queued); else drops and
    /// counts.
    fn enqueue(&self, o: Outgoing, qos0: bool) -> bool {
        let shard = &self.outbound[(wire::node_hash(&o.subject) as usize) % self.outbound.len()];
        let max = shard.tx.max_capacity();
        let keep_free = if qos0 {
            max - QOS0_ROOM.min(max / 2)
        } else {
            0
        };
        let sent = shard.tx.capacity() > keep_free && shard.tx.try_send(o).is_ok();
        if !sent {
            let n = self.stats.forward_dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                warn!(
                    dropped = n + 1,
                    "cluster forward queue full: message not sent to other nodes"
                );
            }
        }
        sent
    }

    /// Starts one publisher task per shard; false if they were started before.
    pub(super) fn start_publishers(self: &Arc<Self>, state: &Arc<BrokerState>) -> bool {
        let mut started = false;
        for i in 0..self.outbound.len() {
            if let Some(rx) = self.outbound[i].rx.lock().take() {
                state
                    .tasks
                    .spawn(self.clone().publisher(i, rx, state.clone()));
                started = true;
            }
        }
        started
    }

    async fn publisher(
        self: Arc<Self>,
        shard: usize,
        mut rx: mpsc::Receiver<Outgoing>,
        state: Arc<BrokerState>,
    ) {
        let client = self.outbound[shard].client.clone();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let n = tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => n,
                _ = state.shutdown.cancelled() => break,
            };
            if n == 0 {
                break;
            }
            let (mut sent, mut bytes) = (0, 0);
            for o in batch.drain(..) {
                let len = o.body.len() as u64;
                match client
                    .publish_with_headers(o.subject, o.headers, o.body)
                    .await
                {
                    Ok(()) => {
                        sent += 1;
                        bytes += len;
                    }
                    Err(e) => {
                        let n = self.stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                        if n.is_power_of_two() {
                            warn!(error = %e, "publish to NATS failed");
                        }
                    }
                }
            }
            self.stats.forwarded.fetch_add(sent, Ordering::Relaxed);
            self.stats.forward_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        // Whatever was handed to the client goes out before the node stops.
        let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    }
}
