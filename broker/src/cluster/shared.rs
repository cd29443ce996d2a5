//! Shared-subscription messages handed to a member on another node.
//!
//! When a member of `$share/g/f` goes away with messages it took but did not acknowledge
//! (queued, or sent and awaiting PUBACK/PUBREC), the node first offers them to another
//! member on the same node (`BrokerState::redeliver_shared`). If none is left here, the
//! message goes to the group across the cluster: every node with members of the group
//! queue-subscribes (in the group's NATS queue group) to the group's hand-over subject
//! `{prefix}.share.{queue}`, and the leaving node sends the message there as a NATS
//! request. NATS gives it to one such node, which queues it for one of its members and
//! answers `1` once that member's stored copy is committed (at once for a clean member),
//! or answers `0` if it has no member any more (its unsubscribe may still be on its way)
//! or the commit failed. The sender tries again on `0`, on "no responders" (then no node has a
//! member: it stops) and on a timeout, a bounded number of times.
//!
//! Only after a node answered `1` is the delivery removed from the leaving session's
//! stored queue (persistent sessions): until then a failed hand-over leaves it where it
//! was, and the member gets it when it comes back. For a clean member, a message no node
//! took is lost and counted (`switchboard_cluster_shared_handover_failed_total`).
//! In-flight hand-overs are bounded (a semaphore); past the bound the message stays with
//! the leaving session, as it did before cross-node hand-over existed.
//!
//! The same subject carries the acknowledged hop's resends for the group (no reply
//! subject, origin headers; see `hop` and [`take_acked`]): a QoS 1/2 publish matching a
//! group waits, before its PUBACK, for the node NATS picked to have committed the member's
//! copy; with no acknowledgement in time it goes to the group again, here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::Cluster;
use super::hop::Owed;
use super::interest::queue_name;
use super::wire;
use crate::BrokerState;
use crate::message::{Message, ShareKey};
use crate::store::{Op, Store, codec};

/// Hand-overs in flight at most per node.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Attempts per message (each may land on another node: NATS picks one at random, and a
/// node whose members are all offline, e.g. one that adopted a dead member's session,
/// answers `0`).
const ATTEMPTS: u32 = 16;
/// How long one attempt waits for an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between attempts answered `0`.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The hand-over subject of group `key`.
pub fn subject(cluster: &Cluster, key: &ShareKey) -> String {
    queue_subject(cluster, &queue_name(&key.group, &key.filter))
}

/// The hand-over subject of the group of NATS queue name `queue`.
pub fn queue_subject(cluster: &Cluster, queue: &str) -> String {
    cluster.map.internal(&format!("share.{queue}"))
}

/// The bound on hand-overs in flight.
#[derive(Debug)]
pub struct HandOvers {
    permits: Arc<Semaphore>,
}

impl Default for HandOvers {
    fn default() -> Self {
        HandOvers {
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

impl Cluster {
    /// Sends `msg` (taken by member `uid` of group `key`, which is going away) to a
    /// member on another node; `seq` is its key in `uid`'s stored queue. False if it
    /// cannot be tried (link down, too many in flight): the caller keeps it.
    pub fn hand_over_shared(
        self: &Arc<Self>,
        store: Option<Arc<dyn Store>>,
        key: &ShareKey,
        msg: &Message,
        uid: u64,
        seq: Option<u64>,
    ) -> bool {
        if !self.connected() {
            return false;
        }
        let Ok(permit) = self.hand_overs.permits.clone().try_acquire_owned() else {
            return false;
        };
        let subject = subject(self, key);
        let body = Bytes::from(codec::encode_message(msg, Instant::now()));
        let cluster = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let taken = cluster.offer(&subject, body).await;
            if taken {
                cluster
                    .stats
                    .shared_handed_over
                    .fetch_add(1, Ordering::Relaxed);
                if let (Some(seq), Some(st)) = (seq, store) {
                    st.write(vec![Op::Dequeue { uid, seq }], None);
                }
            } else {
                let n = cluster
                    .stats
                    .shared_handover_failed
                    .fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    warn!(
                        subject,
                        failed = n + 1,
                        "shared message: no member on any node took it"
                    );
                }
            }
        });
        true
    }

    /// Offers `body` to the group until a node takes it; false if none did.
    async fn offer(&self, subject: &str, body: Bytes) -> bool {
        for _ in 0..ATTEMPTS {
            let answer = tokio::time::timeout(
                ANSWER_TIMEOUT,
                self.client.request(subject.to_owned(), body.clone()),
            )
            .await;
            match answer {
                Ok(Ok(m)) if m.payload.as_ref() == b"1" => return true,
                Ok(Ok(_)) => tokio::time::sleep(RETRY_PAUSE).await,
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    return false;
                }
                Ok(Err(e)) => {
                    debug!(subject, error = %e, "shared hand-over attempt failed");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(_) => debug!(subject, "shared hand-over: no answer in time"),
            }
        }
        false
    }
}

/// Serves group `key`'s hand-over subject on this node until the subscription ends:
/// each request is queued for one connected local member (answer `1`) or refused (`0`).
pub(super) async fn serve(
    cluster: Arc<Cluster>,
    state: Arc<BrokerState>,
    key: Arc<ShareKey>,
    mut sub: async_nats::Subscriber,
) {
    loop {
        let m = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            _ = state.shutdown.cancelled() => break,
        };
        if m.reply.is_none() {
            // The acknowledged hop's resend of a message no node acknowledged for this
            // group in time (see `hop`): taken and acknowledged like a first copy.
            take_acked(&cluster, &state, &key, &m);
            continue;
        }
        let taken = match wire::decode(&m.payload, Instant::now()) {
            // `1` only once the member's stored copy is committed: the leaving node drops
            // its own copy on that answer.
            Some(msg) => match state.deliver_shared_acked(&key, Arc::new(msg), true) {
                Some(Some(committed)) => matches!(committed.await, Ok(Ok(_))),
                Some(None) => true,
                None => false,
            },
            None => {
                cluster.stats.malformed.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        if taken {
            cluster
                .stats
                .shared_taken_over
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some(reply) = m.reply {
            let answer = Bytes::from_static(if taken { b"1" } else { b"0" });
            if let Err(e) = cluster.client.publish(reply, answer).await {
                debug!(error = %e, "shared hand-over: answer not sent");
            }
        }
    }
}

/// Queues a QoS 1/2 message that came through group `key`'s queue subscription (or as a
/// resend on its hand-over subject) for one member here, and owes its origin the
/// acknowledgement for the group once the member's stored copy is committed (see `hop`).
/// A copy taken here before (a resend after a lost acknowledgement) is acknowledged
/// again, not delivered twice. With no member left here nothing is acknowledged: the
/// origin sends it to the group again.
pub(super) fn take_acked(
    cluster: &Cluster,
    state: &BrokerState,
    key: &ShareKey,
    m: &async_nats::Message,
) -> bool {
    let Some((origin, id)) = wire::origin(m.headers.as_ref()) else {
        cluster.stats.malformed.fetch_add(1, Ordering::Relaxed);
        return false;
    };
    let queue = queue_name(&key.group, &key.filter);
    let acked = wire::qos_of(&m.payload) > 0;
    if acked && !cluster.hop.first_shared(origin, &queue, id) {
        cluster.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        cluster.hop.owe(Owed {
            origin: origin.to_owned(),
            id,
            committed: None,
            group: Some(queue),
        });
        return true;
    }
    let Some(msg) = wire::decode(&m.payload, Instant::now()) else {
        cluster.stats.malformed.fetch_add(1, Ordering::Relaxed);
        return false;
    };
    match state.deliver_shared_acked(key, Arc::new(msg), false) {
        Some(committed) => {
            if acked {
                cluster.hop.owe(Owed {
                    origin: origin.to_owned(),
                    id,
                    committed,
                    group: Some(queue),
                });
            }
            true
        }
        None => {
            if acked {
                // Not taken after all: let a resend (here or elsewhere) try again.
                cluster.hop.forget_shared(origin, &queue, id);
            }
            debug!(group = %key.group, filter = %key.filter, "shared message: no member left here");
            false
        }
    }
}
