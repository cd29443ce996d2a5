//! The server session while the connection is quiet: freeing idle memory, the keep-alive
//! deadline and what counts as hearing from the peer, and the keep-alive in force.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::{ServerSession, State};
use crate::ReasonCode;
use crate::session::Violation;

impl ServerSession {
    /// Frees the memory of the session's queues and tables that are empty: the event
    /// queue (room for a few events of several hundred bytes each once one arrived), the
    /// output buffer, and the inflight tables after a burst. Call it when the connection
    /// goes quiet, so that an idle connection holds none of them; a busy connection that
    /// does not call it keeps reusing them.
    pub fn shrink_idle(&mut self) {
        if self
            .tr()
            .is_some_and(|t| !t.outbound.is_empty() || !t.incoming_unacked.is_empty())
        {
            // Deliveries or acknowledgements in flight: a busy subscriber or publisher
            // sending small packets (PUBACKs), not an idle one; freeing now would only
            // make the next delivery allocate again.
            return;
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        if self.out.is_empty() && self.held_from.is_none() {
            self.out = BytesMut::new();
        }
        if let Some(t) = &mut self.tables {
            if t.is_empty() {
                self.tables = None;
            } else {
                t.outbound.shrink_to_fit();
                t.outbound_order.shrink_to_fit();
                t.incoming_unacked.shrink_to_fit();
                t.awaiting_rel.shrink_to_fit();
            }
        }
    }

    /// Nothing is in flight either way, no output or event waits, no re-authentication is
    /// under way: the session only waits for the peer (a QoS 2 PUBREL it owes included).
    /// A connection whose session is quiet can stop polling anything but its socket.
    pub fn is_quiet(&self) -> bool {
        self.state == State::Connected
            && self
                .tr()
                .is_none_or(|t| t.outbound.is_empty() && t.incoming_unacked.is_empty())
            && self.events.is_empty()
            && self.out.is_empty()
            && self.held_from.is_none()
            && !self.reauthenticating
    }

    /// When the peer must have sent something by, if a keep-alive is in force.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != State::Connected || self.keep_alive.is_zero() {
            return None;
        }
        Some(self.last_read + self.keep_alive * 3 / 2)
    }

    /// Checks the keep-alive deadline.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Violation> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => Err(Violation::new(
                ReasonCode::KeepAliveTimeout,
                "[MQTT-3.1.2-22] nothing received for 1.5 × the keep-alive",
            )),
            _ => Ok(()),
        }
    }

    /// The transport heard from the peer at `now` without an MQTT packet (QUIC PING
    /// frames): counts as a packet for the keep-alive.
    pub fn peer_alive(&mut self, now: Instant) {
        if self.state == State::Connected && now > self.last_read {
            self.last_read = now;
        }
    }

    /// Changes the keep-alive in force (the adaptive-heartbeat control message): the peer
    /// is now dead after 1.5 × `secs` without a packet.
    pub fn set_keep_alive(&mut self, secs: u16) {
        self.keep_alive = Duration::from_secs(u64::from(secs));
    }

    /// The keep-alive in force.
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }
}
