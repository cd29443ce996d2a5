//! Moving deliveries from the session's mailbox into the protocol session, and the
//! connection's own store writes (dequeue, QoS 2 progress, the session record).

use switchboard_proto::QoS;
use switchboard_proto::session::{SendError, ServerSession};
use tracing::debug;

use super::conn::Conn;
use super::{DRAIN_BATCH, DRAIN_ROUNDS, OUT_HIGH_WATER};
use crate::message::{Delivery, Now};
use crate::metrics::Metrics;
use crate::store::Op;

/// What a drain's held output waits for: the QoS 2 marks it writes, or (a handed shared
/// delivery, see `Delivery::handed`) only the writes queued before.
#[derive(Default)]
struct Marks {
    ops: Vec<Op>,
    after_writes: bool,
}

impl Marks {
    /// Whether the output is held (a barrier write is due).
    fn hold(&self) -> bool {
        self.after_writes || !self.ops.is_empty()
    }
}

impl Conn {
    /// Moves deliveries from the mailbox into the session while the window and the output
    /// buffer allow, keeping their order; returns how many it took from the mailbox.
    pub(super) fn drain(&mut self, sess: &mut ServerSession) -> usize {
        if self.barrier.is_some() {
            // Output is held until a commit is durable (QoS 2 packet ids already encoded,
            // QoS 2 steps, subscriptions: `Conn::hold_until_stored`); taking more now would
            // put later writes under that barrier.
            return 0;
        }
        let now = Now::default();
        let mut batch = std::mem::take(&mut self.batch);
        let mut marks = Marks::default();
        let taken = self.drain_into(sess, &mut batch, &mut marks, &now);
        self.batch = batch;
        if marks.hold()
            && let Some(st) = self.broker.store()
        {
            let mut marks = marks.ops;
            if marks.is_empty() {
                // A handed delivery alone: what it waits for was queued before.
                marks.push(Op::Barrier);
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            st.write(marks, Some(tx));
            self.barrier = Some(rx);
        }
        self.broker.metrics.output_backlog_peak.fetch_max(
            sess.pending_transmit() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        taken
    }

    /// What the held output waited for is durable (QoS 2 packet ids or steps, the
    /// session's subscriptions), or the store failed, which is logged: the output may go
    /// out, and draining goes on.
    pub(super) fn barrier_lifted(&mut self, sess: &mut ServerSession, ok: bool) {
        if !ok {
            tracing::warn!(
                "a store write the connection's output waited for failed (QoS 2 state or subscriptions); sending anyway"
            );
        }
        self.barrier = None;
        sess.release_transmit();
        self.drain(sess);
    }

    fn drain_into(
        &mut self,
        sess: &mut ServerSession,
        batch: &mut Vec<Delivery>,
        marks: &mut Marks,
        now: &Now,
    ) -> usize {
        let m = &self.broker.metrics;
        let durable = self.broker.store().is_some();
        let (mut rounds, mut taken) = (0, 0);
        while sess.pending_transmit() < OUT_HIGH_WATER && rounds < DRAIN_ROUNDS {
            rounds += 1;
            // Bounded by bytes too: what is encoded never overshoots the high-water mark
            // by more than one message, so a client that does not read holds its queue
            // bound plus OUT_HIGH_WATER, not a batch of large messages on top.
            let budget = OUT_HIGH_WATER.saturating_sub(sess.pending_transmit());
            self.state
                .mailbox
                .pop_batch(DRAIN_BATCH, sess.send_room(), budget, batch);
            if batch.is_empty() {
                break;
            }
            taken += batch.len();
            sess.reserve_transmit(batch.iter().map(|d| d.msg.cost()).sum());
            let mut rest = batch.drain(..);
            for d in rest.by_ref() {
                // QoS 2 must resume with the same packet id after a crash, or the client
                // would take it for a new message: the id is stored before the PUBLISH
                // leaves (output held until the commit). QoS 1 may be delivered twice
                // anyway: not worth a write per message.
                let mark = durable && d.seq.is_some() && d.qos == QoS::ExactlyOnce;
                // A shared message handed over from another member goes out once the
                // write that moved it is durable (see `Delivery::handed`): a write queued
                // behind it says when.
                let handed = durable && d.handed;
                if mark || handed {
                    sess.hold_transmit();
                }
                let sent = {
                    let topic = self.identity.namespace.outbound(&d.msg.topic);
                    match d.to_plain(now, &topic) {
                        // The fan-out case: encoded from the shared message as it is.
                        Some(Some(p)) => Some(sess.publish_plain(p).map(|()| 0)),
                        Some(None) => None,
                        None => d.to_publish(now).map(|mut p| {
                            if !self.identity.namespace.is_identity() {
                                p.topic = topic.into_owned();
                            }
                            sess.publish(p)
                        }),
                    }
                };
                let Some(sent) = sent else {
                    if (mark || handed) && !marks.hold() {
                        sess.release_transmit();
                    }
                    Metrics::inc(&m.dropped_expired);
                    self.dequeue(&d);
                    continue;
                };
                match sent {
                    Ok(pkid) => {
                        Metrics::inc(&m.messages_sent);
                        marks.after_writes |= handed;
                        if pkid != 0 {
                            if let Some(seq) = d.seq {
                                self.state.stored_inflight.insert(pkid, seq);
                                if mark {
                                    marks.ops.push(Op::MarkSent {
                                        uid: self.state.uid,
                                        seq,
                                        sent: crate::store::Sent::Published(pkid),
                                    });
                                }
                            }
                            if d.shared.is_some() {
                                self.shared_inflight.get_or_insert_default().insert(pkid, d);
                            }
                        }
                    }
                    Err(SendError::TooLarge) => {
                        debug!(topic = %d.msg.topic, "message larger than the client's maximum packet size dropped");
                        Metrics::inc(&m.dropped_too_large);
                        self.dequeue(&d);
                    }
                    Err(SendError::WindowFull | SendError::NotConnected) => {
                        let mut back = vec![d];
                        back.extend(rest);
                        self.state.mailbox.push_front_all(back);
                        if !marks.hold() {
                            // Held for this one only, and it did not go.
                            sess.release_transmit();
                        }
                        return taken;
                    }
                }
                if (mark || handed) && !marks.hold() {
                    // Held, but not sent (too large): nothing to wait for.
                    sess.release_transmit();
                }
            }
        }
        // Budget used up: come back after other tasks had their turn.
        if rounds == DRAIN_ROUNDS {
            self.state.mailbox.wake();
        }
        taken
    }

    pub(super) fn store_write(&self, op: Op) {
        if let Some(st) = self.broker.store() {
            st.write(vec![op], None);
        }
    }

    /// Drops a stored delivery that will never be sent.
    pub(super) fn dequeue(&self, d: &Delivery) {
        if let Some(seq) = d.seq {
            self.store_write(Op::Dequeue {
                uid: self.state.uid,
                seq,
            });
        }
    }

    pub(super) fn sorted_subscriptions(&self) -> Vec<String> {
        let mut subs: Vec<String> = self.state.subs.keys().cloned().collect();
        subs.sort();
        subs
    }

    /// The write of the session's subscriptions, if it is persistent (for the caller to
    /// submit), and what the admin API shows refreshed.
    pub(super) fn persist_session(&mut self) -> Option<Op> {
        if let Some(info) = &self.info {
            *info.subscriptions.lock() = self.sorted_subscriptions().into_boxed_slice();
        }
        if self.broker.store().is_none() || self.expiry == 0 {
            return None;
        }
        let owner = crate::sessions::owner_of(&self.identity);
        let op = self.state.save_op(
            self.session_key(),
            owner.as_deref(),
            self.expiry,
            None,
            None,
        );
        self.state.persisted = true;
        Some(op)
    }
}
