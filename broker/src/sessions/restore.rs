//! Rebuilding sessions and retained messages from the store at start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use switchboard_proto::session::{InflightState, Outbound};

use super::{Entry, NEVER_EXPIRES, SessionState, SubRecord};
use crate::BrokerState;
use crate::message::{Delivery, Now};
use crate::store::{Op, Sent, Snapshot, codec, unix_now};

impl BrokerState {
    /// Rebuilds retained messages and parked sessions from the store at start: queues in
    /// order, subscriptions, incoming QoS 2 state, expiry and will timers with the time
    /// that passed while the broker was down. Expired sessions are purged (their wills
    /// published); undecodable records are logged and skipped, never fatal.
    pub fn restore(self: &Arc<Self>, snap: Snapshot) {
        let now = Instant::now();
        let mut retained = 0;
        for raw in &snap.retained {
            match codec::decode_message(raw, now) {
                Some(m) if !m.is_expired(now) => {
                    self.retained.restore(Arc::new(m));
                    retained += 1;
                }
                Some(_) => {}
                None => tracing::warn!("skipping an undecodable retained message"),
            }
        }
        let (restored, purged, queued) = self.restore_sessions(snap);
        tracing::info!(
            sessions = restored,
            expired = purged,
            queued,
            retained,
            "restored state from the store"
        );
    }

    /// Rebuilds the parked sessions of `snap` (at start, or one session another node
    /// parked in the shared store): returns (restored, purged as expired, queued). A
    /// client id that already has a session here is left alone.
    pub(crate) fn restore_sessions(self: &Arc<Self>, snap: Snapshot) -> (usize, usize, usize) {
        let now = Instant::now();
        let now_unix = unix_now();
        // Queue keys must keep growing for sessions another node filled.
        self.queue_seq
            .fetch_max(snap.max_seq + 1, std::sync::atomic::Ordering::Relaxed);
        let mut queues = snap.queues;
        let mut awaiting = snap.awaiting_rel;
        let (mut restored, mut purged, mut queued) = (0, 0, 0);
        for (client_id, rec) in snap.sessions {
            if self.sessions.map.lock().contains_key(client_id.as_str()) {
                continue;
            }
            let stored = queues.remove(&rec.uid).unwrap_or_default();
            // A session that was connected when the broker stopped went offline then.
            let away = rec
                .disconnected_at
                .map_or(0, |t| now_unix.saturating_sub(t));
            let will = rec.will.as_ref().and_then(|(raw, due)| {
                codec::decode_message(raw, now).map(|m| (Arc::new(m), *due))
            });
            if rec.expiry != NEVER_EXPIRES && away >= u64::from(rec.expiry) {
                purged += 1;
                if let Some(store) = self.store() {
                    store.write(
                        vec![Op::DeleteSession {
                            client_id: client_id.clone(),
                            uid: rec.uid,
                        }],
                        None,
                    );
                }
                if let Some((w, _)) = will {
                    self.publish_will(w);
                }
                continue;
            }
            let mailbox = self.new_mailbox(rec.uid);
            mailbox.set_persistent(true);
            let mut subs = HashMap::new();
            for e in &rec.subs {
                let opts = e.options();
                if self.routes.insert(rec.uid, &e.filter, opts, e.id).is_err() {
                    tracing::warn!(filter = %e.filter, "skipping an invalid stored subscription");
                    continue;
                }
                subs.insert(e.filter.clone(), SubRecord { opts, id: e.id });
            }
            let mut deliveries = Vec::new();
            let mut outbound = Vec::new();
            let mut stored_inflight = HashMap::new();
            for (seq, d) in stored {
                let Some(msg) = codec::decode_message(&d.message, now) else {
                    tracing::warn!(seq, "skipping an undecodable queued message");
                    continue;
                };
                let delivery = Delivery {
                    msg: Arc::new(msg),
                    qos: d.qos,
                    retain: d.retain,
                    sub_ids: d.sub_ids,
                    shared: None,
                    seq: Some(seq),
                    queued_s: 0,
                    handed: false,
                };
                // Flows that had started resume where they were ([MQTT-4.4.0-1]).
                match d.sent {
                    Sent::Queued => deliveries.push(delivery),
                    Sent::Published(pkid) => match delivery.to_publish(&Now::at(now)) {
                        Some(mut p) => {
                            p.pkid = pkid;
                            outbound.push((pkid, Outbound::AwaitAck(Box::new(p))));
                            stored_inflight.insert(pkid, seq);
                        }
                        None => {
                            if let Some(store) = self.store() {
                                store.write(vec![Op::Dequeue { uid: rec.uid, seq }], None);
                            }
                        }
                    },
                    Sent::Released(pkid) => {
                        outbound.push((pkid, Outbound::AwaitComp));
                        stored_inflight.insert(pkid, seq);
                    }
                }
            }
            queued += deliveries.len() + outbound.len();
            mailbox.push_front_all(deliveries);
            let state = SessionState {
                uid: rec.uid,
                mailbox,
                subs,
                inflight: InflightState {
                    outbound,
                    awaiting_rel: awaiting.remove(&client_id).unwrap_or_default(),
                },
                stored_inflight,
                persisted: true,
            };
            let generation = self.next_id();
            let mut due_will = None;
            let mut pending_will = None;
            if let Some((w, due)) = will {
                if due <= now_unix {
                    due_will = Some(w);
                } else {
                    pending_will = Some(w);
                    self.spawn_will_timer(&client_id, generation, (due - now_unix) as u32);
                }
            }
            self.sessions.count_persistent(0, rec.expiry);
            self.sessions.map.lock().insert(
                client_id.as_str().into(),
                Entry {
                    state: Some(Box::new(state)),
                    link: None,
                    expiry: rec.expiry,
                    generation,
                    will: pending_will,
                    owner: rec.owner.as_deref().map(Into::into),
                },
            );
            if rec.expiry != NEVER_EXPIRES {
                self.spawn_expiry_timer(&client_id, generation, rec.expiry - away as u32);
            }
            if let Some(w) = due_will {
                self.publish_will(w);
            }
            restored += 1;
        }
        (restored, purged, queued)
    }
}
