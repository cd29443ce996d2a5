//! A parked plain-TCP connection in its compact form: what the broker's parker keeps per
//! connection instead of the connection's whole state box (`Live`).
//!
//! The state box is laid out for a busy connection: the session state machine with its
//! queues and output buffer, the acknowledgement queue, the delivery batch, the socket
//! split into halves (one more shared allocation), the maps of what is in flight. A parked
//! connection has nothing in flight and nothing queued (see `Conn::parkable`), so it
//! needs only what resuming takes: the socket, unsplit; the session state machine's
//! scalars ([`DormantSession`]); who the client is (`Identity`, the session key), its
//! session (id, mailbox, subscriptions), its will, the kick channel, the operator view and
//! the admission slot. [`Dormant::sleep`] builds that from the box and frees the rest;
//! [`Dormant::wake`] builds the box again, so a woken connection runs exactly as if it
//! had never parked: every piece of protocol state that can be non-empty while quiet
//! (topic aliases, QoS 2 PUBRELs owed, the next packet identifier, the keep-alive and when
//! the client was last heard) is carried over.
//!
//! A box that holds more than a quiet connection should (something in flight that
//! `parkable` does not look at) is not compacted: `sleep` gives it back and the
//! connection waits in its own task instead, as before.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use switchboard_proto::session::{DormantSession, InflightState};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::conn::Conn;
use super::readiness::Watch;
use super::{Io, Live, READ_IDLE};
use crate::BrokerState;
use crate::auth::Identity;
use crate::mailbox::Mailbox;
use crate::message::Message;
use crate::pipeline::ack::AckQueue;
use crate::sessions::{Kick, LiveInfo, SessionState, SubRecord};

/// A parked plain-TCP connection (see the module docs).
pub(super) struct Dormant {
    pub(super) conn_id: u64,
    /// The socket, unsplit and out of tokio's reactor (registered with the parker's own
    /// watch, see `readiness`): the halves' shared state and tokio's registration are
    /// allocated again on wake-up.
    pub(super) stream: mio::net::TcpStream,
    pub(super) sess: DormantSession,
    /// The session's mailbox (its waker wakes the parker).
    pub(super) mailbox: Arc<Mailbox>,
    pub(super) kicked: Option<oneshot::Receiver<Box<Kick>>>,
    pub(super) info: Option<Arc<LiveInfo>>,
    own_key: Option<Box<str>>,
    identity: Identity,
    will: Option<(Arc<Message>, u32)>,
    /// The session's subscriptions, exactly sized (a map keeps slack and 48 B inline).
    subs: Box<[(String, SubRecord)]>,
    uid: u64,
    expiry: u32,
    persisted: bool,
    /// `Conn::parked`.
    parked: u8,
    slot: Option<crate::listener::Slot>,
}

impl Dormant {
    /// The compact form of a parked connection's box, its socket registered with the
    /// watch under `key` (its record's key in the parker); the box itself when it holds
    /// something a quiet connection should not (see the module docs).
    pub(super) fn sleep(
        live: Box<Live<TcpStream>>,
        watch: &Watch,
        key: u64,
    ) -> Result<Dormant, Box<Live<TcpStream>>> {
        let c = &live.conn;
        let io = &live.io;
        let quiet = live.sess.is_quiet()
            && io.pending.is_empty()
            && io.rbuf.is_empty()
            && c.acks.is_empty()
            && c.batch.is_empty()
            && c.shared_inflight.as_ref().is_none_or(|m| m.is_empty())
            && c.reauth.is_none()
            && c.barrier.is_none()
            && c.state.inflight == InflightState::default()
            && c.state.stored_inflight.is_empty();
        if !quiet {
            return Err(live);
        }
        let Live {
            conn,
            io,
            sess,
            slot,
        } = *live;
        let stream = io.rd.unsplit(io.wr);
        let watched = watch.register(&stream, key);
        let (sess, watched) = match (sess.into_dormant(), watched) {
            (Ok(s), Ok(w)) => (s, w),
            // The watch refused the socket (no descriptor left to duplicate it, say), or,
            // unreachable, the session was not quiet: the connection waits in its own task.
            (sess, watched) => {
                if let Err(e) = watched {
                    debug!(error = %e, "parked connection kept in its own task");
                }
                let sess = match sess {
                    Ok(d) => d.wake(),
                    Err(s) => *s,
                };
                let (rd, wr) = tokio::io::split(stream);
                return Err(Box::new(Live {
                    conn,
                    io: Io { rd, wr, ..io },
                    sess,
                    slot,
                }));
            }
        };
        // Leaves tokio's reactor (its registration is freed); the watch has the socket.
        drop(stream);
        let Conn {
            conn_id,
            own_key,
            identity,
            state,
            expiry,
            will,
            kicked,
            info,
            parked,
            ..
        } = conn;
        let SessionState {
            uid,
            mailbox,
            subs,
            persisted,
            ..
        } = state;
        Ok(Dormant {
            conn_id,
            stream: watched,
            sess,
            mailbox,
            kicked,
            info,
            own_key,
            identity,
            will,
            subs: subs.into_iter().collect(),
            uid,
            expiry,
            persisted,
            parked,
            slot,
        })
    }

    /// The keep-alive deadline (fixed while parked: nothing is read meanwhile).
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.sess.poll_timeout()
    }

    /// The connection's box again, as it was when it parked, with `rbuf` (bytes read while
    /// waking it) in its read buffer; its socket goes back from the watch to tokio's
    /// reactor. `None` when tokio refuses the socket: the connection then ended as lost.
    pub(super) fn wake(
        self,
        broker: &Arc<BrokerState>,
        watch: &Watch,
        rbuf: BytesMut,
    ) -> Option<Box<Live<TcpStream>>> {
        let d = self;
        let version = d.sess.version();
        let conn = Conn {
            broker: broker.clone(),
            conn_id: d.conn_id,
            own_key: d.own_key,
            identity: d.identity,
            version,
            state: SessionState {
                uid: d.uid,
                mailbox: d.mailbox,
                subs: d.subs.into_vec().into_iter().collect(),
                inflight: InflightState::default(),
                stored_inflight: HashMap::new(),
                persisted: d.persisted,
            },
            expiry: d.expiry,
            will: d.will,
            kicked: d.kicked,
            shared_inflight: None,
            acks: AckQueue::new(version.is_v5()),
            batch: Vec::new(),
            keep_alive_changed: false,
            parked: d.parked,
            info: d.info,
            reauth: None,
            barrier: None,
        };
        let sess = d.sess.wake();
        let stream = match watch.release(d.stream) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "a parked connection's socket could not rejoin the reactor");
                super::end_without_socket(broker, conn, sess, "socket not taken back");
                return None;
            }
        };
        let (rd, wr) = tokio::io::split(stream);
        Some(Box::new(Live {
            conn,
            io: Io {
                rd,
                wr,
                rbuf,
                pending: Bytes::new(),
                read_hot: false,
                read_room: READ_IDLE,
            },
            sess,
            slot: d.slot,
        }))
    }
}
