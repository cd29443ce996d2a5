//! This node's interest, kept in step with its sessions' subscriptions.
//!
//! The routing table reports every subscription added and removed ([`Interest`] is its
//! observer); this counts subscribers per (share group, filter) and wakes the reconciler,
//! which subscribes NATS to the subjects of a pair that gained its first subscriber and
//! unsubscribes a pair that lost its last. The desired set is a map, so its size is the
//! number of distinct filters (bounded by the sessions' subscription limits) and a burst
//! of changes costs one pass; nothing queues per change.
//!
//! Each NATS subscription gets a small task that hands its messages to the inbound router
//! through one bounded channel (when full, QoS 0 messages are dropped and counted, QoS 1/2
//! ones wait and the NATS client buffers).
//! After each pass the reconciler flushes the connection: once NATS answered, every
//! subscription of the pass is in force; it then announces the change to the other nodes
//! ([`super::peers`]), and `switchboard_cluster_interest_subjects` says how many there are.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tracing::warn;

use super::inbound::{Inbound, Kind};
use super::{Cluster, LinkStats};
use crate::BrokerState;
use crate::message::ShareKey;
use crate::routing::InterestObserver;

/// A filter as NATS is told about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterestKey {
    pub group: Option<String>,
    pub filter: String,
}

/// Local subscribers per (share group, filter).
#[derive(Debug, Default)]
pub struct Interest {
    desired: Mutex<HashMap<InterestKey, usize>>,
    changed: Notify,
    /// The other nodes' interest (and this node's shared groups, kept in step here).
    pub peers: Arc<super::peers::Peers>,
}

impl Interest {
    /// Distinct (share group, filter) pairs with local subscribers.
    pub fn len(&self) -> usize {
        self.desired.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl InterestObserver for Interest {
    fn added(&self, group: Option<&str>, filter: &str) {
        let key = InterestKey {
            group: group.map(str::to_owned),
            filter: filter.to_owned(),
        };
        let mut d = self.desired.lock();
        let n = d.entry(key).or_insert(0);
        *n += 1;
        if *n == 1 {
            if let Some(g) = group {
                self.peers.local_shared(g, filter, true);
            }
            self.changed.notify_one();
        }
    }

    fn removed(&self, group: Option<&str>, filter: &str) {
        let key = InterestKey {
            group: group.map(str::to_owned),
            filter: filter.to_owned(),
        };
        let mut d = self.desired.lock();
        if let Some(n) = d.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                d.remove(&key);
                if let Some(g) = group {
                    self.peers.local_shared(g, filter, false);
                }
                self.changed.notify_one();
            }
        }
    }
}

/// The NATS queue group of `$share/{group}/{filter}`: per group *and* filter, since NATS
/// groups queue subscribers by name alone while MQTT's `$share/g/a` and `$share/g/b` are
/// two shared subscriptions.
pub fn queue_name(group: &str, filter: &str) -> String {
    let mut q = String::new();
    super::subject::escape_level(group, &mut q);
    q.push('~');
    q.push_str(&format!("{:016x}", super::wire::node_hash(filter)));
    q
}

/// Keeps NATS subscriptions equal to the desired set until shutdown.
pub(super) async fn reconcile(
    cluster: Arc<Cluster>,
    state: Arc<BrokerState>,
    tx: mpsc::Sender<Inbound>,
) {
    // Per key: the tasks of its subjects, then (shared groups) of its hand-over subject.
    let mut actual: HashMap<InterestKey, (Vec<tokio::task::AbortHandle>, usize)> = HashMap::new();
    loop {
        let wanted: Vec<InterestKey> = cluster.interest.desired.lock().keys().cloned().collect();
        let mut changed = false;
        let wanted_set: std::collections::HashSet<&InterestKey> = wanted.iter().collect();
        actual.retain(|k, (handles, _)| {
            let keep = wanted_set.contains(k);
            if !keep {
                // Dropping the NATS subscriber in the aborted task unsubscribes.
                for h in handles.iter() {
                    h.abort();
                }
                changed = true;
            }
            keep
        });
        for key in wanted {
            if actual.contains_key(&key) {
                continue;
            }
            changed = true;
            let handles = subscribe(&cluster, &state, &key, &tx).await;
            actual.insert(key, handles);
        }
        if changed {
            if let Err(e) = cluster.client.flush().await {
                warn!(error = %e, "NATS flush after interest change failed");
            }
            // Tell the other nodes (they forward to this node only what it wants), and
            // wait for them before reporting the subjects as confirmed.
            let filters = actual
                .keys()
                .map(|k| match &k.group {
                    Some(g) => format!("$share/{g}/{}", k.filter),
                    None => k.filter.clone(),
                })
                .collect();
            cluster.interest.peers.announce(&cluster, filters).await;
            // Subjects of filters only (hand-over subjects are not interest in topics).
            let n: usize = actual.values().map(|(_, n)| *n).sum();
            cluster.stats.subjects.store(n as u64, Ordering::Relaxed);
        }
        tokio::select! {
            _ = cluster.interest.changed.notified() => {}
            _ = state.shutdown.cancelled() => break,
        }
    }
    for h in actual.values().flat_map(|(h, _)| h) {
        h.abort();
    }
}

/// Hands one NATS message to the inbound router; false once the router is gone. A QoS 0
/// message finding the channel full is dropped here and counted
/// (`switchboard_cluster_inbound_dropped_total`): were the task to wait, the NATS client's
/// own buffer would fill and drop messages of every QoS without a trace but a debug line.
/// QoS 1/2 messages wait for room.
pub(super) async fn hand_in(tx: &mpsc::Sender<Inbound>, inb: Inbound, stats: &LinkStats) -> bool {
    if super::wire::qos_of(&inb.msg.payload) > 0 {
        return tx.send(inb).await.is_ok();
    }
    match tx.try_send(inb) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            let n = stats.inbound_dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                warn!(
                    dropped = n + 1,
                    "cluster inbound queue full: QoS 0 message from another node dropped"
                );
            }
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Subscribes to the subjects of `key`; a forwarding task per subscription. Returns the
/// tasks and how many of them serve the filter's subjects.
async fn subscribe(
    cluster: &Arc<Cluster>,
    state: &Arc<BrokerState>,
    key: &InterestKey,
    tx: &mpsc::Sender<Inbound>,
) -> (Vec<tokio::task::AbortHandle>, usize) {
    let kind = match &key.group {
        Some(g) => Kind::Shared(Arc::new(ShareKey {
            group: g.clone(),
            filter: key.filter.clone(),
        })),
        None => Kind::Direct,
    };
    let mut handles = Vec::new();
    for subject in cluster.map.filter_subjects(&key.filter) {
        let sub = match &key.group {
            Some(g) => {
                cluster
                    .client
                    .queue_subscribe(subject.clone(), queue_name(g, &key.filter))
                    .await
            }
            None => cluster.client.subscribe(subject.clone()).await,
        };
        let mut sub = match sub {
            Ok(s) => s,
            Err(e) => {
                warn!(%subject, error = %e, "NATS subscribe failed");
                continue;
            }
        };
        let tx = tx.clone();
        let kind = kind.clone();
        let shutdown = state.shutdown.clone();
        let stats = cluster.stats.clone();
        let task = state.tasks.spawn(async move {
            loop {
                let m = tokio::select! {
                    m = sub.next() => match m { Some(m) => m, None => break },
                    _ = shutdown.cancelled() => break,
                };
                let inb = Inbound {
                    kind: kind.clone(),
                    msg: m,
                };
                if !hand_in(&tx, inb, &stats).await {
                    break;
                }
            }
        });
        handles.push(task.abort_handle());
    }
    let subjects = handles.len();
    if let (Some(g), Kind::Shared(share)) = (&key.group, &kind) {
        // The group's hand-over subject, in the same queue group (see `shared`).
        let subject = super::shared::subject(cluster, share);
        match cluster
            .client
            .queue_subscribe(subject.clone(), queue_name(g, &key.filter))
            .await
        {
            Ok(sub) => {
                let task = state.tasks.spawn(super::shared::serve(
                    cluster.clone(),
                    state.clone(),
                    share.clone(),
                    sub,
                ));
                handles.push(task.abort_handle());
            }
            Err(e) => warn!(%subject, error = %e, "NATS subscribe failed"),
        }
    }
    (handles, subjects)
}
