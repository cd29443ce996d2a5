//! The client's packets as the session decoded them, acted on, and the store writes their
//! answers wait for: output is held until those are durable (`hold_until_stored`).

use std::time::Instant;

use bytes::BytesMut;
use switchboard_proto::ReasonCode;
use switchboard_proto::session::{Event, ServerSession, Violation};

use super::conn::Conn;
use crate::store::Op;

impl Conn {
    pub(super) fn on_read(
        &mut self,
        sess: &mut ServerSession,
        rbuf: &mut BytesMut,
    ) -> Result<(), Violation> {
        let read = sess.handle_read(Instant::now(), rbuf);
        // Events decoded before a violation are still acted on, and their writes submitted
        // even when a later event is a violation.
        let mut writes = Vec::new();
        let mut acted = Ok(());
        while let Some(ev) = sess.poll_event() {
            match ev {
                Event::Received { pkid } => {
                    if let Some(&seq) = self.state.stored_inflight.get(&pkid) {
                        writes.push(Op::MarkSent {
                            uid: self.state.uid,
                            seq,
                            sent: crate::store::Sent::Released(pkid),
                        });
                    }
                }
                Event::Released { pkid } => {
                    if self.state.mailbox.is_persistent() {
                        writes.push(Op::Released {
                            client_id: self.session_key().to_owned(),
                            pkid,
                        });
                    }
                }
                ev => {
                    acted = self.on_event(sess, ev, &mut writes);
                    if acted.is_err() {
                        break;
                    }
                }
            }
        }
        self.hold_until_stored(sess, writes);
        acted?;
        read
    }

    /// What this read changed that the client must not hear of before it is durable:
    /// - QoS 2 steps (the client's PUBRECs and PUBRELs): once the client has the PUBREL
    ///   or PUBCOMP that answers one, it forgets the packet id. Had the broker crashed
    ///   before storing the step, it would resend an outgoing message the client then
    ///   takes for new, or take the client's next message with a reused id for a resend
    ///   and drop it. The session holds its output before each such answer
    ///   (`set_hold_qos2_steps`).
    /// - A persistent session's subscriptions: after a SUBACK lost in a crash, the client
    ///   resumes (session present) without a subscription it was told it has, and never
    ///   hears why; after an UNSUBACK, one it dropped comes back. `on_subscribe` holds
    ///   output before its answer.
    ///
    /// The held output goes out once `marks` are durable, like the packet ids of `drain`,
    /// or at once when nothing was stored.
    fn hold_until_stored(&mut self, sess: &mut ServerSession, marks: Vec<Op>) {
        let store = self.broker.store();
        match store {
            Some(st) if !marks.is_empty() => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                st.write(marks, Some(tx));
                // Writes commit in the order they were queued: this one being durable
                // means any barrier still pending (a drain's packet ids) is too. (Had that
                // one failed, its warning is lost; the output goes out either way.)
                self.barrier = Some(rx);
            }
            _ if self.barrier.is_none() && sess.is_holding_transmit() => {
                sess.release_transmit();
            }
            _ => {}
        }
    }

    /// Acts on one event of the client; store writes its answer must wait for go to
    /// `writes` (see `hold_until_stored`).
    fn on_event(
        &mut self,
        sess: &mut ServerSession,
        ev: Event,
        writes: &mut Vec<Op>,
    ) -> Result<(), Violation> {
        match ev {
            Event::Publish(p) => self.on_publish(sess, *p),
            Event::Subscribe(s) => self.on_subscribe(sess, s, writes),
            Event::Unsubscribe(u) => {
                self.on_unsubscribe(sess, u, writes);
                Ok(())
            }
            Event::Disconnect(d) => {
                if d.code != ReasonCode::DisconnectWithWill {
                    self.will = None;
                }
                if let Some(e) = d.properties.session_expiry_interval {
                    self.expiry = self.broker.config.limits.session_expiry(e);
                    self.state.mailbox.set_persistent(self.expiry > 0);
                }
                Ok(())
            }
            Event::Delivered { pkid } => {
                if let Some(m) = &mut self.shared_inflight {
                    m.remove(&pkid);
                }
                if let Some(seq) = self.state.stored_inflight.remove(&pkid) {
                    self.store_write(Op::Dequeue {
                        uid: self.state.uid,
                        seq,
                    });
                }
                Ok(())
            }
            // Collected by `on_read`, which holds output until they are durable.
            Event::Received { .. } | Event::Released { .. } => Ok(()),
            Event::Auth(a) => self.on_auth(sess, a),
            Event::Connect(_) => Ok(()),
        }
    }
}
