//! Parking a quiet connection: most connections are idle most of the time (a phone sends a
//! PINGREQ every few minutes), and what an idle connection costs is what its task keeps.
//!
//! The connected loop (`Conn::run`) waits on many things at once: the socket both ways, the
//! mailbox, store commits, the keep-alive timer, a takeover, shutdown; its future (timers,
//! waiters, the `select!` over all of them) is the largest piece of a connection. So it
//! runs boxed, and when the connection has been quiet for a while (`Limits::park_wait`:
//! `limits.park_first_ms` after CONNECT, doubling with each park up to
//! `limits.park_after_ms`) with nothing in flight (no output waiting, no acknowledgement
//! owed or awaited, no store commit pending, an empty mailbox), it returns [`Ran::Parked`]: its box is freed, and
//! a plain TCP connection is handed to the broker's parker and its task ends (see
//! `parker`); the other transports' [`Conn::park`] waits instead, in the connection's
//! task, on just what can end the quiet, with no buffer:
//!
//! - bytes from the client (read through the worker's scratch buffer, kept in the
//!   connection's read buffer for the loop to decode),
//! - a delivery in the mailbox (its `Notify` keeps a permit, so one pushed between the
//!   loop's last drain and this waiter is not missed),
//! - a takeover or kick (handled here: DISCONNECT with its reason),
//! - the keep-alive deadline (the loop, resumed, finds it passed and closes),
//! - shutdown (handled here: DISCONNECT 0x8B).
//!
//! On anything but an end, the connected loop starts again where it left off: every piece
//! of protocol state (inflight tables, packet ids, topic aliases, QoS 2 state) lives in the
//! session and the connection, not in the loop, so nothing is lost or reordered.

use switchboard_proto::ReasonCode;
use switchboard_proto::session::ServerSession;
use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::Conn;
use super::{End, Io};
use crate::metrics::Metrics;
use crate::sessions::Kick;

/// How a turn of the connected loop ended.
pub(super) enum Ran {
    Ended(End),
    /// Quiet with nothing in flight: wait in [`Conn::park`], then run again.
    Parked,
}

impl Conn {
    /// Whether the connection may park: nothing it would have to act on without a wake-up
    /// from outside.
    pub(super) fn parkable<S>(&self, io: &Io<S>, sess: &ServerSession) -> bool {
        io.pending.is_empty()
            && io.rbuf.is_empty()
            && !io.read_hot
            && sess.is_quiet()
            && self.acks.is_empty()
            && self.barrier.is_none()
            && self.reauth.is_none()
            && self.batch.is_empty()
            && self.state.mailbox.is_empty()
    }

    /// Waits, parked, until something ends the quiet. `Some` when the connection ended
    /// meanwhile (closed by the client, kicked, shutdown); `None` to resume the loop.
    pub(super) async fn park<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut Io<S>,
        sess: &mut ServerSession,
    ) -> Option<End> {
        let keep_alive = sess.poll_timeout();
        let expired = async {
            match keep_alive {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let kicked = self.kicked.as_mut();
        let has_kick = kicked.is_some();
        let kick = async {
            match kicked {
                Some(rx) => rx.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.broker.shutdown.cancelled() => {
                sess.disconnect(ReasonCode::ServerShuttingDown, None);
                Some(End::Shutdown)
            }
            k = kick, if has_kick => {
                self.kicked = None;
                k.ok().map(|k| kicked_off(sess, *k))
            }
            r = super::read::read_into(&mut io.rd, &mut io.rbuf, false) => match r {
                Ok(0) => Some(End::Lost("closed by peer")),
                Err(_) => Some(End::Lost("read failed")),
                Ok(n) => {
                    Metrics::add(&self.broker.metrics.bytes_received, n as u64);
                    None
                }
            },
            _ = self.state.mailbox.notified() => None,
            // Resumed, the loop finds the deadline passed and closes the connection.
            _ = expired => None,
        }
    }
}

/// Ends the connection for a takeover or kick: DISCONNECT with its reason.
pub(super) fn kicked_off(sess: &mut ServerSession, k: Kick) -> End {
    let mut d = switchboard_proto::Disconnect::new(k.code);
    d.properties
        .server_reference
        .clone_from(&k.server_reference);
    sess.disconnect_with(d);
    End::Kicked(k)
}
