//! Output of the server session: the bytes to write, and a barrier that holds some back.
//!
//! The barrier exists for durability: an outgoing QoS 2 PUBLISH to a persistent session
//! must not reach the client before its packet identifier is stored, or after a crash the
//! client would take the resent message for a new one. The broker calls
//! [`ServerSession::hold_transmit`] before encoding such a PUBLISH, writes the packet id to
//! its store, and calls [`ServerSession::release_transmit`] once that commit is durable;
//! meanwhile [`ServerSession::take_transmit`] hands over only what was encoded before.
//!
//! The same holds for the packets that end a QoS 2 flow, since the client forgets the
//! packet id once it has them:
//! - the PUBREL answering the client's PUBREC (an outgoing message): a broker that crashed
//!   before storing "released" would resend the PUBLISH, and the client would take it for
//!   a new message;
//! - the PUBCOMP answering the client's PUBREL (an incoming message): a broker that crashed
//!   before forgetting the packet id would take the client's next message with that id
//!   (a small device may use id 1 for every message) for a resend, and drop it.
//!
//! With [`ServerSession::set_hold_qos2_steps`] on, the session sets the barrier itself
//! before each such packet (the client's packet arrives as [`Event::Received`] or
//! [`Event::Released`]); the broker stores the new state and lifts the barrier as above, or
//! when it stores none, at once (or with a barrier it already waits for).
//!
//! [`Event::Received`]: crate::session::Event::Received
//! [`Event::Released`]: crate::session::Event::Released

use bytes::Bytes;

use super::ServerSession;

impl ServerSession {
    /// Bytes to write to the socket (up to the barrier, if one is set); empty when there is
    /// nothing.
    pub fn take_transmit(&mut self) -> Bytes {
        match self.held_from {
            // Hand over the whole buffer: an idle connection then holds no output memory.
            None => self.out.split().freeze(),
            Some(at) => {
                self.held_from = Some(0);
                self.out.split_to(at).freeze()
            }
        }
    }

    /// Holds back everything encoded from now on until [`ServerSession::release_transmit`]
    /// (a barrier already set stays where it is).
    pub fn hold_transmit(&mut self) {
        if self.held_from.is_none() {
            self.held_from = Some(self.out.len());
        }
    }

    /// Whether the session holds output back before the PUBREL and the PUBCOMP that end
    /// QoS 2 flows (see the module docs); off by default. A [`DormantSession`] does not
    /// keep it: set it again after [`DormantSession::wake`].
    ///
    /// [`DormantSession`]: super::DormantSession
    /// [`DormantSession::wake`]: super::DormantSession::wake
    pub fn set_hold_qos2_steps(&mut self, on: bool) {
        self.hold_qos2_steps = on;
    }

    /// Lifts the barrier: everything encoded can be written.
    pub fn release_transmit(&mut self) {
        self.held_from = None;
    }

    /// Whether a barrier holds output back.
    pub fn is_holding_transmit(&self) -> bool {
        self.held_from.is_some()
    }

    /// Makes room for about `bytes` more output at once, instead of growing step by step.
    pub fn reserve_transmit(&mut self, bytes: usize) {
        self.out.reserve(bytes);
    }

    /// Number of bytes encoded and not yet taken (held ones included).
    pub fn pending_transmit(&self) -> usize {
        self.out.len()
    }

    /// True when bytes can be taken with [`ServerSession::take_transmit`] now.
    pub fn has_transmit(&self) -> bool {
        match self.held_from {
            None => !self.out.is_empty(),
            Some(at) => at > 0,
        }
    }
}
