//! The IM service's side of the cluster link: starting it, announcing this node's online
//! users, applying the other nodes' notes, and the three tasks (publisher, reader,
//! heartbeat). See the parent module for the notes themselves.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{ImCluster, Note, RemoteDevice};
use crate::BrokerState;
use crate::im::ImService;

impl ImService {
    /// The IM cluster link, in cluster mode.
    pub(in crate::im) fn cluster(&self) -> Option<&Arc<ImCluster>> {
        self.cluster.get()
    }

    /// The IM cluster link, for `/metrics`.
    pub fn cluster_link(&self) -> Option<&Arc<ImCluster>> {
        self.cluster.get()
    }

    /// Starts the IM cluster link when the broker runs in cluster mode (called by
    /// `attach`): the publisher, the reader of other nodes' notes and the heartbeat.
    pub(in crate::im) fn start_cluster(self: &Arc<Self>, broker: &Arc<BrokerState>) {
        let Some(c) = &broker.cluster else { return };
        let ic = Arc::new(ImCluster::new(broker, c));
        if self.cluster.set(ic.clone()).is_err() {
            return;
        }
        let Some(rx) = ic.out_rx.lock().take() else {
            return;
        };
        broker
            .tasks
            .spawn(publisher(ic.clone(), rx, broker.clone()));
        broker
            .tasks
            .spawn(reader(Arc::downgrade(self), ic.clone(), broker.clone()));
        // Call requests may wait (ringing): each is answered in its own task. Room
        // messages are answered in arrival order, one after the other.
        let calls = ic.calls_subject(&super::calls::node_tag(&ic.node));
        broker.tasks.spawn(serve_forwarded(
            Arc::downgrade(self),
            ic.clone(),
            broker.clone(),
            Forwarded {
                subject: calls,
                what: "call requests",
                concurrent: true,
            },
            |s, p| Box::pin(async move { s.serve_call(&p).await }),
        ));
        broker.tasks.spawn(serve_forwarded(
            Arc::downgrade(self),
            ic.clone(),
            broker.clone(),
            Forwarded {
                subject: ic.rooms_subject(&ic.node),
                what: "room messages",
                concurrent: false,
            },
            |s, p| Box::pin(async move { s.serve_room(&p) }),
        ));
        broker.tasks.spawn(super::rooms::send_counts(
            Arc::downgrade(self),
            ic.clone(),
            broker.clone(),
        ));
        broker
            .tasks
            .spawn(heartbeat(Arc::downgrade(self), ic, broker.clone()));
    }

    /// Tells the other nodes this user's devices here (under the online lock, so notes of
    /// one user leave in the order of the changes). No-op without cluster mode.
    pub(in crate::im) fn announce_locked(
        &self,
        online: &foldhash::HashMap<(u64, u64), crate::im::presence::Online>,
        tid: u64,
        uid: u64,
    ) {
        let Some(c) = self.cluster() else { return };
        let devices = online
            .get(&(tid, uid))
            .map(|o| {
                o.devices
                    .iter()
                    .map(|d| RemoteDevice {
                        client_id: d.client_id.clone(),
                        platform: d.platform.clone(),
                        background: d.background,
                        inline_unread: d.inline_unread,
                    })
                    .collect()
            })
            .unwrap_or_default();
        c.announce(tid, uid, devices);
    }

    /// Announces every online user of this node.
    fn announce_all(&self) {
        let online = self.online.lock();
        for &(tid, uid) in online.keys() {
            self.announce_locked(&online, tid, uid);
        }
        drop(online);
        if let Some(c) = self.cluster() {
            for (tid, uid, call) in self.busy_users() {
                c.busy(tid, uid, &call);
            }
        }
    }

    /// Applies another node's note.
    fn apply_note(&self, c: &ImCluster, note: Note) {
        match note {
            Note::Presence {
                node,
                tid,
                uid,
                devices,
            } => {
                let mut remote = c.remote.lock();
                if devices.is_empty() {
                    if let Some(nodes) = remote.get_mut(&(tid, uid)) {
                        nodes.remove(&node);
                        if nodes.is_empty() {
                            remote.remove(&(tid, uid));
                        }
                    }
                } else {
                    remote.entry((tid, uid)).or_default().insert(node, devices);
                }
            }
            Note::Hello { node } => {
                c.drop_node(&node);
                self.rooms_forget_node(&node);
                // Tell the newcomer who is online here.
                self.announce_all();
            }
            Note::Resync { .. } => self.announce_all(),
            Note::Alive { .. } => {}
            Note::Unread { tid, uids, .. } => {
                c.unread_gen.fetch_add(1, Ordering::AcqRel);
                c.stats
                    .unread_evictions
                    .fetch_add(uids.len() as u64, Ordering::Relaxed);
                let mut online = self.online.lock();
                for uid in uids {
                    if let Some(o) = online.get_mut(&(tid, uid)) {
                        o.unread_total = None;
                    }
                }
            }
            Note::Group { tid, gid, .. } => {
                c.stats.group_evictions.fetch_add(1, Ordering::Relaxed);
                self.evict_group(tid, &gid);
            }
            Note::Personal { tid, gid, uids, .. } => {
                c.personal_gen.fetch_add(1, Ordering::AcqRel);
                c.stats
                    .personal_evictions
                    .fetch_add(uids.len() as u64, Ordering::Relaxed);
                self.evict_personal(tid, &gid, &uids);
            }
            Note::Tenant { tid, .. } => {
                c.tenant_gen.fetch_add(1, Ordering::AcqRel);
                c.stats.other_evictions.fetch_add(1, Ordering::Relaxed);
                self.tenants.write().remove(&tid);
            }
            Note::Moderation { tid, .. } => {
                c.moderation_gen.fetch_add(1, Ordering::AcqRel);
                c.stats.other_evictions.fetch_add(1, Ordering::Relaxed);
                self.evict_moderation(tid);
            }
            Note::Kick { tid, client_id, .. } => self.kick_local(tid, &client_id),
            Note::RoomCount {
                node,
                tid,
                room,
                count,
            } => self.room_count_apply(&node, tid, &room, count),
            Note::Busy {
                node,
                tid,
                uid,
                call,
            } => c.apply_busy(node, tid, uid, call),
            Note::RoomAdmin { node, op, body } => {
                self.room_admin_apply(&node, &op, body.as_bytes())
            }
            Note::RoomMsg {
                tid,
                room,
                msg,
                high,
                ..
            } => {
                use base64ct::Encoding as _;
                match base64ct::Base64::decode_vec(&msg) {
                    Ok(m) => self.room_relayed(tid, &room, &m, high),
                    Err(_) => {
                        c.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Publishes queued notes in order; flushes what is left at shutdown.
async fn publisher(
    c: Arc<ImCluster>,
    mut rx: mpsc::Receiver<(String, Bytes)>,
    broker: Arc<BrokerState>,
) {
    loop {
        let (subject, body) = tokio::select! {
            n = rx.recv() => match n { Some(n) => n, None => break },
            _ = broker.shutdown.cancelled() => break,
        };
        match c.client.publish(subject, body).await {
            Ok(()) => {
                c.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let n = c.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(error = %e, "publishing an IM cluster note failed");
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), c.client.flush()).await;
}

/// Reads the other nodes' notes and applies them.
async fn reader(service: std::sync::Weak<ImService>, c: Arc<ImCluster>, broker: Arc<BrokerState>) {
    use futures_util::StreamExt as _;
    let subject = format!("{}.im.>", c.prefix);
    let mut sub = match c.client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, subject, "cannot subscribe to IM cluster notes: IM caches are not kept right across nodes");
            return;
        }
    };
    // Subscribed: now ask the others who is online (they answer on the same subject).
    if tokio::time::timeout(Duration::from_secs(10), c.client.flush())
        .await
        .is_err()
    {
        tracing::warn!("NATS did not confirm the IM cluster subscription within 10 s");
    }
    c.send(&Note::Hello {
        node: c.node.clone(),
    });
    loop {
        let msg = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            _ = broker.shutdown.cancelled() => break,
        };
        let note: Note = match serde_json::from_slice(&msg.payload) {
            Ok(n) => n,
            Err(e) => {
                let n = c.stats.malformed.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(error = %e, subject = %msg.subject, "malformed IM cluster note ignored");
                }
                continue;
            }
        };
        if note.node() == c.node {
            continue;
        }
        c.seen.lock().insert(note.node().to_owned(), Instant::now());
        let Some(service) = service.upgrade() else {
            break;
        };
        service.apply_note(&c, note);
        c.stats.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every third of the lease: says this node is alive, and drops the devices of nodes not
/// heard from for a lease.
async fn heartbeat(
    service: std::sync::Weak<ImService>,
    c: Arc<ImCluster>,
    broker: Arc<BrokerState>,
) {
    use async_nats::connection::State;
    let every = (c.lease / 3).max(Duration::from_millis(100));
    let mut was_connected = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = broker.shutdown.cancelled() => break,
        }
        let connected = c.client.connection_state() == State::Connected;
        if connected && !was_connected {
            // Back after an outage: our notes of meanwhile may be lost, and the others
            // may have taken our devices offline.
            tracing::info!("NATS link back: IM presence announced again");
            if let Some(s) = service.upgrade() {
                s.announce_all();
            }
            c.send(&Note::Resync {
                node: c.node.clone(),
            });
        }
        was_connected = connected;
        c.send(&Note::Alive {
            node: c.node.clone(),
        });
        let dead: Vec<String> = {
            let mut seen = c.seen.lock();
            let dead: Vec<String> = seen
                .iter()
                .filter(|(_, t)| t.elapsed() > c.lease)
                .map(|(n, _)| n.clone())
                .collect();
            for n in &dead {
                seen.remove(n);
            }
            dead
        };
        for node in dead {
            tracing::info!(
                node,
                "no IM cluster note from a node for a lease: its devices are taken offline"
            );
            c.stats.dead_nodes.fetch_add(1, Ordering::Relaxed);
            c.drop_node(&node);
            if let Some(s) = service.upgrade() {
                s.rooms_forget_node(&node);
            }
        }
    }
}

/// A NATS subject on which other nodes send requests for this node to answer.
struct Forwarded {
    subject: String,
    /// For messages: what arrives there.
    what: &'static str,
    /// Answer each in its own task (requests that may wait) or in arrival order.
    concurrent: bool,
}

type Answer = std::pin::Pin<Box<dyn std::future::Future<Output = Bytes> + Send>>;

/// Answers the requests other nodes send on `on.subject` with `serve` until shutdown.
async fn serve_forwarded(
    service: std::sync::Weak<ImService>,
    c: Arc<ImCluster>,
    broker: Arc<BrokerState>,
    on: Forwarded,
    serve: impl Fn(Arc<ImService>, Bytes) -> Answer,
) {
    use futures_util::StreamExt as _;
    let mut sub = match c.client.subscribe(on.subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, subject = on.subject, "cannot subscribe to forwarded {}: those sent through other nodes fail", on.what);
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => break },
            _ = broker.shutdown.cancelled() => break,
        };
        let Some(reply) = msg.reply else { continue };
        let Some(service) = service.upgrade() else {
            break;
        };
        let (client, what) = (c.client.clone(), on.what);
        let answer = serve(service, msg.payload);
        let respond = async move {
            if let Err(e) = client.publish(reply, answer.await).await {
                tracing::warn!(error = %e, "cannot answer forwarded {what}");
            }
        };
        if on.concurrent {
            broker.tasks.spawn(respond);
        } else {
            respond.await;
        }
    }
}
