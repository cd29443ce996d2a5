//! The link's heartbeat over QUIC as QUIC-level pings instead of MQTT PINGREQ/PINGRESP.
//!
//! An exchange costs about 120 B on the wire instead of about 200 B (`bench --heartbeat`):
//! one short-header packet and an ACK-only reply, instead of two stream packets and their
//! ACKs. Used when the link is QUIC, [`crate::Config::quic_ping`] is on (the default) and
//! the broker's CONNACK said that QUIC packets count as keep-alive traffic
//! (`sb-quic-ping`, docs/protocol.md 2.5); otherwise the MQTT session pings as before. The
//! CONNECT still carries the heartbeat interval as its keep-alive, so the broker's timer is
//! the same; the MQTT session's own pings are off while this runs.
//!
//! quinn 0.11 has no public "ping now", and its keep-alive timer is fixed when the
//! connection opens (the heartbeat changes its interval while learning). What it has is
//! flow control: widening the connection's receive window is announced to the peer at
//! once in a MAX_DATA frame, which the peer must acknowledge like a PING. The window is
//! widened by one byte and set back at once (quinn takes the byte back from later
//! credit), so the window does not drift. The answer is any datagram from the broker after
//! the ping (its ACK, at the latest after its maximum ACK delay); none within the ping
//! timeout means the link is dead, as a missing PINGRESP does.

use std::time::{Duration, Instant};

/// The connection receive window the SDK's QUIC connections use: what the pings toggle
/// by one byte (quinn's default is unlimited, which cannot be widened).
pub(crate) const RECEIVE_WINDOW: u32 = 8 * 1024 * 1024;

/// How long the first look for the answer waits (then twice as long each time, up to the
/// ping timeout).
const FIRST_LOOK: Duration = Duration::from_millis(5);

/// QUIC-level heartbeat state of one link connection.
#[derive(Debug)]
pub(crate) struct QuicPing {
    /// Idle time after which the link pings.
    pub(crate) interval: Duration,
    /// When the link last sent anything.
    last_send: Instant,
    /// A ping is out: when it left, the datagrams received by then, and when to look for
    /// the answer next.
    awaiting: Option<Awaiting>,
}

#[derive(Debug)]
struct Awaiting {
    since: Instant,
    received: u64,
    look: Instant,
    step: Duration,
}

/// What a tick found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Nothing to do yet.
    Nothing,
    /// The last ping was answered.
    Answered,
    /// The last ping went unanswered for the ping timeout: the link is dead.
    Dead,
}

impl QuicPing {
    pub(crate) fn new(interval: Duration, now: Instant) -> QuicPing {
        QuicPing {
            interval,
            last_send: now,
            awaiting: None,
        }
    }

    /// The link sent something: the idle period starts again.
    pub(crate) fn sent(&mut self, now: Instant) {
        self.last_send = now;
    }

    /// When [`QuicPing::tick`] has something to do.
    pub(crate) fn deadline(&self, ping_timeout: Duration) -> Option<Instant> {
        match &self.awaiting {
            Some(a) => Some(a.look.min(a.since.checked_add(ping_timeout)?)),
            None if self.interval.is_zero() => None,
            None => self.last_send.checked_add(self.interval),
        }
    }

    /// Pings when the link has idled for the interval, and looks for the answer of a ping
    /// that is out.
    pub(crate) fn tick(
        &mut self,
        conn: &quinn::Connection,
        now: Instant,
        ping_timeout: Duration,
    ) -> Tick {
        if let Some(a) = &mut self.awaiting {
            if conn.stats().udp_rx.datagrams > a.received {
                self.last_send = a.since;
                self.awaiting = None;
                return Tick::Answered;
            }
            if now >= a.since + ping_timeout {
                self.awaiting = None;
                return Tick::Dead;
            }
            if now >= a.look {
                a.step = (a.step * 2).min(ping_timeout);
                a.look = now + a.step;
            }
            return Tick::Nothing;
        }
        if self.interval.is_zero() || now < self.last_send + self.interval {
            return Tick::Nothing;
        }
        let received = conn.stats().udp_rx.datagrams;
        ping(conn);
        let step = FIRST_LOOK.max(conn.rtt());
        self.awaiting = Some(Awaiting {
            since: now,
            received,
            look: now + step,
            step,
        });
        Tick::Nothing
    }
}

/// Makes `conn` send an ACK-eliciting packet now (see the module docs).
pub(crate) fn ping(conn: &quinn::Connection) {
    conn.set_receive_window(quinn::VarInt::from_u32(RECEIVE_WINDOW + 1));
    conn.set_receive_window(quinn::VarInt::from_u32(RECEIVE_WINDOW));
}
