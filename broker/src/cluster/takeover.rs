//! Session takeover across nodes, over NATS core.
//!
//! A CONNECT on node B broadcasts a claim: the client id, B's name and the claim's time.
//! The node holding a connection with that client id closes it with DISCONNECT 0x8E
//! ([MQTT-3.1.4-3]) unless its own claim for the id is newer, so two CONNECTs racing on two
//! nodes end with the later one connected (ties broken by node name); clocks of the nodes
//! are assumed close (NTP), and only near-simultaneous CONNECTs depend on them.
//!
//! This is the takeover of cluster mode without a shared store (NATS only): the claim is
//! not waited for, and a session taken over starts afresh on the new node. With the shared
//! PostgreSQL store, the session registry replaces it: a compare-and-swap on the client
//! id's row, and the session handed over through the store ([`super::handover`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use switchboard_proto::ReasonCode;
use tracing::{debug, warn};

use super::{Cluster, wire};
use crate::BrokerState;

/// Subject (under the prefix) claims are broadcast on.
pub const SUBJECT: &str = "takeover";
/// How long closing a taken-over connection may wait for it to park its session.
const PARK_WAIT: Duration = Duration::from_secs(4);
/// Local claims remembered (to compare with remote ones); past it the table is cleared,
/// and a remote claim then always wins, which is what it does unless two CONNECTs race.
const MAX_CLAIMS: usize = 1 << 20;

/// This node's latest claim per client id: (nanoseconds since the epoch, node).
#[derive(Debug, Default)]
pub struct Claims(Mutex<HashMap<String, u128>>);

impl Claims {
    /// Records a claim made here now; returns its time.
    pub fn record(&self, client_id: &str) -> u128 {
        let at = now_nanos();
        let mut m = self.0.lock();
        if m.len() >= MAX_CLAIMS {
            m.clear();
        }
        m.insert(client_id.to_owned(), at);
        at
    }

    /// Whether a claim (`at`, `node`) from another node beats this node's own claim.
    pub fn remote_wins(&self, client_id: &str, at: u128, node: &str, me: &str) -> bool {
        match self.0.lock().get(client_id) {
            Some(mine) => (at, node) > (*mine, me),
            None => true,
        }
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The body of a claim: `{nanos}\n{client id}`.
pub fn encode(at: u128, client_id: &str) -> Bytes {
    Bytes::from(format!("{at}\n{client_id}"))
}

/// A claim's time and client id; `None` if the body is not a claim.
pub fn decode(body: &[u8]) -> Option<(u128, &str)> {
    let text = std::str::from_utf8(body).ok()?;
    let (at, id) = text.split_once('\n')?;
    Some((at.parse().ok()?, id))
}

impl Cluster {
    /// Before a CONNECT takes session `client_id` here: tells the other nodes, so that one
    /// holding a connection with that client id closes it (0x8E). A link failure is
    /// logged; the CONNECT goes on.
    pub async fn take_over(&self, client_id: &str) {
        let at = self.claims.record(client_id);
        self.stats.takeovers_asked.fetch_add(1, Ordering::Relaxed);
        let headers = wire::headers(&self.node, 0);
        let subject = self.map.internal(SUBJECT);
        if let Err(e) = self
            .client
            .publish_with_headers(subject, headers, encode(at, client_id))
            .await
        {
            warn!(client_id, error = %e, "cannot broadcast a session claim");
        }
    }
}

/// Answers other nodes' claims until shutdown: closes the local connection holding the
/// client id (unless this node's claim is newer) and waits, bounded, for it to park.
pub(super) async fn answer(cluster: Arc<Cluster>, state: Arc<BrokerState>) {
    let subject = cluster.map.internal(SUBJECT);
    let mut sub = match cluster.client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%subject, error = %e, "cannot subscribe to session claims");
            return;
        }
    };
    loop {
        let m = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            _ = state.shutdown.cancelled() => break,
        };
        let Some((node, _)) = wire::origin(m.headers.as_ref()) else {
            continue;
        };
        if node == cluster.node {
            continue;
        }
        let Some((at, client_id)) = decode(&m.payload) else {
            cluster.stats.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if !cluster
            .claims
            .remote_wins(client_id, at, node, &cluster.node)
        {
            debug!(client_id, from = %node, "older claim from another node ignored");
            continue;
        }
        if !state.client_online(client_id) {
            continue;
        }
        let (cluster, state, client_id) = (cluster.clone(), state.clone(), client_id.to_owned());
        let from = node.to_owned();
        // One task per claim: a slow connection does not hold up the others; each ends
        // within PARK_WAIT.
        state.tasks.clone().spawn(async move {
            if state
                .kick_and_wait(&client_id, ReasonCode::SessionTakenOver, PARK_WAIT)
                .await
            {
                cluster.stats.takeovers_done.fetch_add(1, Ordering::Relaxed);
                debug!(client_id, to = %from, "session taken over by another node");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_round_trip_and_the_later_one_wins() {
        let body = encode(42, "dev 1\nx");
        assert_eq!(decode(&body), Some((42, "dev 1\nx")));
        assert_eq!(decode(b"nope"), None);
        let c = Claims::default();
        assert!(c.remote_wins("a", 1, "n2", "n1"), "no local claim");
        let mine = c.record("a");
        assert!(!c.remote_wins("a", mine - 1, "n2", "n1"));
        assert!(c.remote_wins("a", mine + 1, "n2", "n1"));
        // Same instant: the larger node name wins, on both sides alike.
        assert!(c.remote_wins("a", mine, "n2", "n1"));
        assert!(!c.remote_wins("a", mine, "n0", "n1"));
    }
}
