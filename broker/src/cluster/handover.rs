//! Sessions moving between nodes through the shared store (cluster mode with
//! `cluster.postgres_url`): claiming a client id on CONNECT, handing a session over when
//! another node claims it, adopting the sessions (and firing the wills) of a node whose
//! lease expired, and the lease itself. The SQL is in [`super::registry`].
//!
//! Handover order, so that nothing acknowledged is lost: the new node claims the row; the
//! holder closes the connection (DISCONNECT 0x8E), parks the session (its record is
//! written), removes it from memory, waits until its store writer has committed
//! everything queued before (a probe commit: the writer commits in order), and only then
//! clears `holder`; the new node holds the row and loads the session from the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use switchboard_proto::ReasonCode;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::registry::{ADOPT_BATCH, Registry};
use super::{Cluster, wire};
use crate::BrokerState;
use crate::sessions::OpenError;
use crate::store::{Op, Scope, codec};

/// Subject (under the prefix) of requests to let go of a session: `{holder}\n{client id}`.
pub const RELEASE: &str = "release";
/// How long a claimer waits for the holder to let go before refusing the CONNECT.
const CLAIM_WAIT: Duration = Duration::from_secs(10);
/// How often a waiting claimer looks at the row, and asks again.
const POLL: Duration = Duration::from_millis(20);
const ASK_AGAIN: Duration = Duration::from_secs(1);
/// How long a holder waits for the connection to park, and for its store to commit.
const PARK_WAIT: Duration = Duration::from_secs(4);
const FLUSH_WAIT: Duration = Duration::from_secs(10);
/// Client ids with a claim or release under way are serialised per id; past this many
/// entries, idle ones are dropped.
const MAX_LOCKS: usize = 4096;

impl Cluster {
    /// The session registry, when the store is shared (PostgreSQL).
    pub fn registry(&self) -> Option<&Registry> {
        self.registry.as_deref()
    }

    /// Serialises claims and releases of one client id on this node.
    pub async fn lock_client(&self, client_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.client_locks.lock();
            if locks.len() >= MAX_LOCKS {
                locks.retain(|_, m| Arc::strong_count(m) > 1);
            }
            locks.entry(client_id.to_owned()).or_default().clone()
        };
        m.lock_owned().await
    }

    async fn ask_release(&self, holder: &str, client_id: &str) {
        let headers = wire::headers(&self.node, 0);
        let body = Bytes::from(format!("{holder}\n{client_id}"));
        if let Err(e) = self
            .client
            .publish_with_headers(self.map.internal(RELEASE), headers, body)
            .await
        {
            warn!(client_id, error = %e, "cannot ask another node to release a session");
        }
    }
}

impl BrokerState {
    /// Claims `client_id` cluster-wide before a CONNECT attaches here, and loads its
    /// session from the store when another node (or none) held it. Call with the client
    /// id's lock held.
    pub(crate) async fn claim_in_cluster(
        self: &Arc<Self>,
        c: &Arc<Cluster>,
        client_id: &str,
        owner: Option<&str>,
        clean_start: bool,
    ) -> Result<(), OpenError> {
        let Some(reg) = c.registry() else {
            return Ok(());
        };
        let unavailable = |e: super::registry::RegistryError| {
            warn!(client_id, error = %e, "session registry unavailable: CONNECT refused");
            OpenError::Unavailable
        };
        let Some(claim) = reg.claim(client_id, owner).await.map_err(unavailable)? else {
            reg.stats.claims_refused.fetch_add(1, Ordering::Relaxed);
            return Err(OpenError::NotOwner);
        };
        let mut holder = claim.holder;
        let mut dead = None;
        if holder.as_deref().is_some_and(|h| h != c.node()) {
            reg.stats.claims_waited.fetch_add(1, Ordering::Relaxed);
            let deadline = Instant::now() + CLAIM_WAIT;
            let mut asked = None::<Instant>;
            while let Some(h) = holder.clone() {
                if asked.is_none_or(|t| t.elapsed() >= ASK_AGAIN) {
                    c.ask_release(&h, client_id).await;
                    asked = Some(Instant::now());
                }
                tokio::time::sleep(POLL).await;
                let Some(row) = reg.row(client_id).await.map_err(unavailable)? else {
                    break;
                };
                if row.epoch != claim.epoch {
                    reg.stats.claims_lost.fetch_add(1, Ordering::Relaxed);
                    return Err(OpenError::Busy);
                }
                if row.holder.is_some() && row.holder_dead {
                    dead = row.holder;
                    break;
                }
                holder = row.holder;
                if Instant::now() >= deadline {
                    warn!(client_id, holder = ?holder, "the node holding the session did not let go");
                    return Err(OpenError::Unavailable);
                }
            }
        }
        let Some(orphan) = reg
            .hold(client_id, claim.epoch, dead.as_deref())
            .await
            .map_err(unavailable)?
        else {
            reg.stats.claims_lost.fetch_add(1, Ordering::Relaxed);
            return Err(OpenError::Busy);
        };
        if !self.sessions.contains(client_id) {
            self.load_from_store(client_id).await;
        }
        // The connection that held the session died with its node: its will is due now
        // unless it has a delay and the session resumes here ([MQTT-3.1.3-9]).
        if let Some((raw, delay)) = orphan
            && (delay == 0 || clean_start || !self.sessions.contains(client_id))
            && let Some(w) = codec::decode_message(&raw, Instant::now())
        {
            reg.stats.wills_fired.fetch_add(1, Ordering::Relaxed);
            self.publish_will(Arc::new(w));
        }
        Ok(())
    }

    /// Loads the session stored under `client_id` (parked by another node) into memory.
    async fn load_from_store(self: &Arc<Self>, client_id: &str) {
        let Some(store) = self.store().cloned() else {
            return;
        };
        let scope = Scope {
            client_id: Some(client_id.to_owned()),
            ..Scope::default()
        };
        let read = tokio::task::spawn_blocking(move || store.load_scoped(&scope)).await;
        match read {
            Ok(Ok(snap)) => {
                let (n, _, queued) = self.restore_sessions(snap);
                if n > 0
                    && let Some(reg) = self.cluster.as_ref().and_then(|c| c.registry())
                {
                    reg.stats.sessions_loaded.fetch_add(1, Ordering::Relaxed);
                    debug!(client_id, queued, "session loaded from the shared store");
                }
            }
            Ok(Err(e)) => warn!(client_id, error = %e, "cannot load a session from the store"),
            Err(e) => warn!(client_id, error = %e, "session load task failed"),
        }
    }

    /// Another node claimed `client_id`: closes its connection here (0x8E), parks and
    /// forgets the session, waits for the store to commit it, then lets go of the row.
    pub(crate) async fn release_to_cluster(self: &Arc<Self>, c: &Arc<Cluster>, client_id: &str) {
        let Some(reg) = c.registry() else { return };
        let _guard = c.lock_client(client_id).await;
        if self
            .kick_and_wait(client_id, ReasonCode::SessionTakenOver, PARK_WAIT)
            .await
        {
            c.stats.takeovers_done.fetch_add(1, Ordering::Relaxed);
        }
        self.evict(client_id);
        if let Some(store) = self.store() {
            let (tx, rx) = oneshot::channel();
            store.write(vec![Op::Probe], Some(tx));
            match tokio::time::timeout(FLUSH_WAIT, rx).await {
                Ok(Ok(Ok(_))) => {}
                _ => {
                    warn!(
                        client_id,
                        "store did not commit the parked session: not released"
                    );
                    return;
                }
            }
        }
        match reg.release(client_id).await {
            Ok(()) => debug!(client_id, "session released to another node"),
            Err(e) => warn!(client_id, error = %e, "cannot release a session"),
        }
    }

    /// Takes over the sessions `from` held (a node whose lease expired, or this node's
    /// previous run): loads them, and publishes the wills of the connections that died
    /// with it, after their delay, unless the client comes back first.
    pub(crate) async fn adopt_sessions(self: &Arc<Self>, c: &Arc<Cluster>, from: &str) {
        let Some(reg) = c.registry() else { return };
        let own = from == c.node();
        loop {
            let rows = match reg.adopt(from).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(node = from, error = %e, "cannot adopt sessions");
                    return;
                }
            };
            let n = rows.len();
            for a in rows {
                let _guard = c.lock_client(&a.client_id).await;
                if !own && a.live {
                    self.load_from_store(&a.client_id).await;
                    // Its connection died with its node: the shared messages it had not
                    // acknowledged go to other members now.
                    self.hand_over_orphaned_shared(&a.client_id);
                }
                let will = a.will.and_then(|(raw, delay)| {
                    codec::decode_message(&raw, Instant::now()).map(|m| (Arc::new(m), delay))
                });
                let (exists, fired) = self.adopt_will(&a.client_id, will);
                if fired {
                    reg.stats.wills_fired.fetch_add(1, Ordering::Relaxed);
                }
                if !exists && let Err(e) = reg.end(&a.client_id, a.epoch).await {
                    // Not persistent: the session ended with its node.
                    warn!(client_id = %a.client_id, error = %e, "cannot end a session");
                }
            }
            if n > 0 {
                info!(node = from, sessions = n, "adopted sessions");
            }
            if (n as i64) < ADOPT_BATCH {
                return;
            }
        }
    }
}

impl Cluster {
    /// Graceful shutdown (after every connection ended and its session was parked):
    /// waits for the store to commit everything queued, then releases this node's rows in
    /// the registry and its lease, so that clients resuming elsewhere do not wait for the
    /// lease to expire. Without a shared store, nothing to do. If the store cannot commit,
    /// the rows stay held and the lease expires as after a crash.
    pub async fn leave(&self, state: &BrokerState) {
        let Some(reg) = self.registry() else { return };
        if let Some(store) = state.store() {
            let (tx, rx) = oneshot::channel();
            store.write(vec![Op::Probe], Some(tx));
            if !matches!(tokio::time::timeout(FLUSH_WAIT, rx).await, Ok(Ok(Ok(_)))) {
                warn!("store did not commit at shutdown: sessions left to the lease reaper");
                return;
            }
        }
        if let Err(e) = reg.leave().await {
            warn!(error = %e, "cannot release this node's sessions at shutdown");
        }
    }
}

/// Answers release requests addressed to this node until shutdown.
pub(super) async fn answer(cluster: Arc<Cluster>, state: Arc<BrokerState>) {
    let subject = cluster.map.internal(RELEASE);
    let mut sub = match cluster.client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%subject, error = %e, "cannot subscribe to release requests");
            return;
        }
    };
    loop {
        let m = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            _ = state.shutdown.cancelled() => break,
        };
        let Some((holder, client_id)) = std::str::from_utf8(&m.payload)
            .ok()
            .and_then(|t| t.split_once('\n'))
        else {
            cluster.stats.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if holder != cluster.node {
            continue;
        }
        let (c, s, id) = (cluster.clone(), state.clone(), client_id.to_owned());
        state
            .tasks
            .spawn(async move { s.release_to_cluster(&c, &id).await });
    }
}

/// Renews this node's lease, adopts this node's own sessions left from its previous run
/// (firing the wills of connections that died with it), and adopts the sessions of every
/// node whose lease expired and that this node wins, until shutdown. A node that could not
/// renew its lease for a whole lease period fences itself: the others may have adopted its
/// sessions, so it disconnects its clients (0x89) and forgets its parked sessions.
pub(super) async fn lease(cluster: Arc<Cluster>, state: Arc<BrokerState>) {
    let Some(reg) = cluster.registry() else {
        return;
    };
    let period = reg.lease() / 3;
    let mut first = true;
    let mut renewed = Instant::now();
    // The lease carries the node's address (for redirection): wait for the listeners.
    for _ in 0..200 {
        if state.addrs.get().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    loop {
        let addr = state
            .addrs
            .get()
            .and_then(|a| a.tcp.first())
            .map(|a| a.to_string());
        match reg.renew(addr.as_deref()).await {
            Ok(()) => renewed = Instant::now(),
            Err(e) => warn!(error = %e, "cannot renew this node's lease"),
        }
        if renewed.elapsed() > reg.lease() && !reg.forget_all().is_empty() {
            // Other nodes take this one for dead and adopt its sessions: stop serving
            // them here (clients reconnect, through the load balancer, to a live node).
            warn!("lease lost: disconnecting every client of this node");
            for id in state.online_clients() {
                state.kick_with(&id, ReasonCode::ServerBusy, None);
            }
            for id in state.parked_clients() {
                state.evict(&id);
            }
        }
        if first {
            first = false;
            state.adopt_sessions(&cluster, &cluster.node).await;
        }
        match reg.reap().await {
            Ok(dead) => {
                for node in dead {
                    warn!(%node, "node lease expired: adopting its sessions");
                    state.adopt_sessions(&cluster, &node).await;
                }
            }
            Err(e) => debug!(error = %e, "cannot look for expired nodes"),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = state.shutdown.cancelled() => break,
        }
    }
}
