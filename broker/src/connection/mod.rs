//! One client connection: drives the sans-IO [`ServerSession`] with bytes from the
//! transport, acts on its events (authenticate, route, subscribe), feeds it deliveries from
//! the session's mailbox, and writes what it produces.
//!
//! The task never blocks on one thing: reading, writing, the mailbox, the keep-alive timer,
//! shutdown and takeover are one `select!`. Output is bounded: while more than
//! [`OUT_HIGH_WATER`] bytes wait for the socket, the task stops taking deliveries and stops
//! reading, so a client that does not read costs its queue bounds and no more.
//!
//! Files: this one (the task, its I/O and CONNECT), `conn` (the connected loop and protocol
//! events), `handlers` (PUBLISH through the [`crate::pipeline`], SUBSCRIBE, UNSUBSCRIBE),
//! `hints` (the heartbeat hint control topics),
//! `drain` (mailbox → session, and the connection's store writes), `read` (reading
//! without a buffer per idle connection), `park` (a quiet connection frees its loop) and
//! `parker` (a parked plain-TCP connection without a task: one table and one task per
//! broker), `dormant` (the compact form the parker keeps), `readiness` (the parker's own
//! readiness watch of parked sockets).
//!
//! Memory of an idle connection: the task's future is what an idle connection costs, so it
//! holds only what the connected loop needs. The steps a connection takes once (reading
//! CONNECT, authenticating, the lingering close) run as boxed futures: their state is
//! allocated while they run and freed after, instead of widening the task's future for its
//! whole life. A quiet connection owns no read buffer (see `read`), and the output it wrote
//! is released once written.

mod conn;
mod dormant;
mod drain;
mod enhanced_auth;
mod events;
mod handlers;
mod hints;
mod park;
mod parker;
mod read;
mod readiness;
mod slots;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use switchboard_proto::session::{Event, ServerSession, SessionLimits, Violation};
use switchboard_proto::{Connect, ReasonCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::{Instrument, debug, warn};

use crate::BrokerState;
use crate::metrics::Metrics;
use crate::sessions::Kick;
use conn::Conn;
pub use parker::Parker;

/// Bytes waiting for the socket above which the task pauses deliveries and reading.
pub(super) const OUT_HIGH_WATER: usize = 256 * 1024;
/// Output above which deliveries woken by the mailbox are written at once rather than
/// after the worker's other ready work (see `Conn::run`): enough for a write of its own,
/// and waiting longer would only hold memory.
pub(super) const DEFER_MAX: usize = 16 * 1024;
/// Deliveries taken from the mailbox under one lock.
pub(super) const DRAIN_BATCH: usize = 64;
/// Batches per wake-up before the task yields to other work.
pub(super) const DRAIN_ROUNDS: usize = 4;
/// Room a quiet connection's read counts against (it reads through the scratch buffer,
/// see `read`), and the read buffer of a busy one.
const READ_IDLE: usize = 256;
const READ_BUSY: usize = 4 * 1024;
/// Time allowed to flush the last bytes (DISCONNECT) before closing.
const FINAL_FLUSH: Duration = Duration::from_secs(5);
/// After the last bytes and a half-close, how long what the client still sends is read and
/// discarded, so that closing does not reset the connection (a reset can destroy the
/// DISCONNECT or CONNACK the client has not read yet). Ends early when the client closes.
const LINGER: Duration = Duration::from_secs(2);

/// How the connection ended.
#[derive(Debug)]
pub(super) enum End {
    /// DISCONNECT from the client; `with_will` for reason 0x04.
    ClientDisconnect {
        with_will: bool,
    },
    /// The socket closed or failed without DISCONNECT.
    Lost(&'static str),
    Violation(Violation),
    Kicked(Kick),
    Shutdown,
}

/// A connection past CONNECT: everything it keeps for its whole life, in one allocation.
/// The task's own future then holds little more than this box and, while the connection
/// is parked, the small waiter of `park`.
struct Live<S> {
    conn: Conn,
    io: Io<S>,
    sess: ServerSession,
    /// The connection's admission permit, given back when the connection ends.
    slot: Option<crate::listener::Slot>,
}

/// Serves one accepted connection until it ends.
pub async fn serve<S>(
    broker: Arc<BrokerState>,
    stream: S,
    peer: SocketAddr,
    transport: &'static str,
    cert_user: Option<String>,
    mut slot: Option<crate::listener::Slot>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let conn_id = broker.next_id();
    let span = tracing::info_span!("conn", id = conn_id, %peer, transport, client_id = tracing::field::Empty);
    async move {
        // `slot` (the connection's permit) stays here, held until the connection ends.
        let Some(mut live) = Box::pin(open(
            &broker,
            stream,
            peer,
            cert_user,
            slot.as_mut(),
            conn_id,
        ))
        .await
        else {
            return;
        };
        let conn = &mut live.conn;
        tracing::Span::current().record("client_id", conn.client_id());
        Metrics::inc(&broker.metrics.clients_connected);
        let by_transport =
            &broker.metrics.connected_by_transport[crate::metrics::transport_index(transport)];
        Metrics::inc(by_transport);
        conn.info = Some(Arc::new(crate::sessions::LiveInfo::new(
            transport,
            peer,
            crate::store::unix_now(),
            conn.state.mailbox.clone(),
            conn.sorted_subscriptions(),
        )));
        if let Some(info) = &conn.info {
            broker.attach_info(conn.session_key(), conn_id, info.clone());
        }
        if let (Some(im), Some(login)) = (&broker.im, &conn.identity.im) {
            im.connected(login, conn.client_id(), conn_id);
        }
        live.slot = slot.take();
        let task = connected(broker.clone(), live, transport, None);
        if transport == "quic" {
            // In this task: QUIC's keep-alive reads a task-local of it, and its listener
            // counts the connection until this returns.
            Box::pin(task).await;
        } else {
            // A task of its own, whose future is `connected` alone: this one also holds
            // room for the stream it was given (a TLS stream is about 1.5 KB), which an
            // idle connection should not keep.
            broker.tasks.spawn(task.in_current_span());
        }
    }
    .instrument(span)
    .await;
}

/// The established connection until it ends: the connected loop, parking, the end. A
/// parked plain-TCP connection leaves its task (see `parker`), which spawns this again
/// when woken, with `ended` set when it ended while parked.
async fn connected<S>(
    broker: Arc<BrokerState>,
    mut live: Box<Live<S>>,
    transport: &'static str,
    mut ended: Option<End>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // The connected loop runs boxed: parked, the connection keeps only `live` (in the
    // parker's table, or beside the small waiter of `park`).
    let parked_gauge = &broker.metrics.connections_parked;
    let end = loop {
        if let Some(end) = ended.take() {
            break end;
        }
        let Live { conn, io, sess, .. } = &mut *live;
        match Box::pin(conn.run(io, sess)).await {
            park::Ran::Ended(end) => break end,
            park::Ran::Parked => {
                Metrics::inc(parked_gauge);
                match parker::hand_over(&broker, live) {
                    Ok(()) => return,
                    Err(back) => live = back,
                }
                let Live { conn, io, sess, .. } = &mut *live;
                let woke = conn.park(io, sess).await;
                Metrics::dec(parked_gauge);
                if let Some(end) = woke {
                    break end;
                }
            }
        }
    };
    let by_transport =
        &broker.metrics.connected_by_transport[crate::metrics::transport_index(transport)];
    Metrics::dec(&broker.metrics.clients_connected);
    Metrics::dec(by_transport);
    // Signed off before the session is parked: a connection taking it over signs on
    // after this.
    if let (Some(im), Some(login)) = (&broker.im, &live.conn.identity.im) {
        im.disconnected(login, live.conn.conn_id);
    }
    let linger = !broker.shutdown.is_cancelled();
    Box::pin(async move {
        let Live {
            mut conn,
            mut io,
            mut sess,
            slot,
        } = *live;
        if let End::Violation(v) = &end {
            sess.disconnect(v.code, Some(v.reason));
        }
        let mut rest = sess.take_transmit();
        // Output held for a commit (see `Conn::hold_until_stored`), and the last words (a
        // DISCONNECT) behind it: they go once the commit succeeded (briefly waited for).
        let held = conn.barrier.take().map(|barrier| {
            sess.release_transmit();
            (barrier, sess.take_transmit())
        });
        // The session is parked (or handed to a connection taking it over) before the
        // lingering close, which may take a while.
        conn.finish(end, sess);
        if let Some((barrier, bytes)) = held {
            let committed = tokio::time::timeout(Duration::from_secs(1), barrier).await;
            if matches!(committed, Ok(Ok(Ok(_)))) {
                let mut all = bytes::BytesMut::from(rest);
                all.extend_from_slice(&bytes);
                rest = all.freeze();
            }
        }
        io.final_flush(rest, linger).await;
        // The connection's permit goes back only now.
        drop(slot);
    })
    .await;
}

/// A parked plain-TCP connection whose socket tokio's reactor would not take back (see
/// `readiness`): it ends as a lost connection would, without a last word (there is no
/// socket left to say it on).
fn end_without_socket(
    broker: &Arc<BrokerState>,
    conn: Conn,
    sess: ServerSession,
    why: &'static str,
) {
    Metrics::dec(&broker.metrics.clients_connected);
    Metrics::dec(&broker.metrics.connected_by_transport[crate::metrics::transport_index("tcp")]);
    if let (Some(im), Some(login)) = (&broker.im, &conn.identity.im) {
        im.disconnected(login, conn.conn_id);
    }
    conn.finish(End::Lost(why), sess);
}

/// From accept to an established connection: reads CONNECT, authenticates, opens the
/// session and queues CONNACK. `None` when the connection ended instead (its last words,
/// a refusing CONNACK, already flushed).
async fn open<S>(
    broker: &Arc<BrokerState>,
    stream: S,
    peer: SocketAddr,
    cert_user: Option<String>,
    slot: Option<&mut crate::listener::Slot>,
    conn_id: u64,
) -> Option<Box<Live<S>>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut io = Io {
        rd,
        wr,
        rbuf: BytesMut::new(),
        pending: Bytes::new(),
        read_hot: false,
        read_room: READ_IDLE,
    };
    Metrics::inc(&broker.metrics.connections_total);
    let limits = session_limits(broker);
    let mut sess = ServerSession::new(limits, Instant::now());
    let connect = match Box::pin(io.read_connect(broker, &mut sess)).await {
        Ok(c) if slot.is_some_and(|s| s.promote().is_err()) => {
            // CONNECT arrived, but every connection permit is taken: the pending slot
            // this connection held so far does not entitle it to one.
            debug!("connection limit reached at CONNECT");
            Metrics::inc(&broker.metrics.refused_max_connections);
            sess.reject(
                ReasonCode::ServerBusy,
                Some("connection limit reached".into()),
            );
            Box::pin(io.final_flush(sess.take_transmit(), !broker.shutdown.is_cancelled())).await;
            drop(c);
            return None;
        }
        Ok(c) => c,
        Err(why) => {
            debug!(why, "connection ended before CONNECT was accepted");
            Box::pin(io.final_flush(sess.take_transmit(), !broker.shutdown.is_cancelled())).await;
            return None;
        }
    };
    let enhanced = if connect.properties.authentication_method.is_some() {
        match Box::pin(io.enhanced_auth(broker, &mut sess, &connect, peer.ip())).await {
            Ok(a) => Some(a),
            Err(code) => {
                debug!(%code, "enhanced authentication failed");
                sess.reject(code, Some("enhanced authentication failed".into()));
                Box::pin(io.final_flush(sess.take_transmit(), !broker.shutdown.is_cancelled()))
                    .await;
                return None;
            }
        }
    } else {
        None
    };
    let Some(conn) = Box::pin(Conn::establish(
        broker, &mut sess, connect, conn_id, peer, cert_user, enhanced,
    ))
    .await
    else {
        Box::pin(io.final_flush(sess.take_transmit(), !broker.shutdown.is_cancelled())).await;
        return None;
    };
    Some(Box::new(Live {
        conn,
        io,
        sess,
        slot: None,
    }))
}

fn session_limits(b: &BrokerState) -> SessionLimits {
    let l = &b.config.limits;
    SessionLimits {
        max_packet_size: l.max_packet_size,
        receive_maximum: l.receive_maximum,
        topic_alias_maximum: l.topic_alias_maximum,
        max_inflight: l.max_inflight,
        outgoing_topic_aliases: l.topic_alias_maximum,
    }
}

pub(super) struct Io<S> {
    rd: tokio::io::ReadHalf<S>,
    wr: tokio::io::WriteHalf<S>,
    rbuf: BytesMut,
    /// Bytes taken from the session, not yet written.
    pending: Bytes,
    /// The last read filled at least half the room it had: the peer is sending a lot.
    read_hot: bool,
    /// Room the last read had.
    read_room: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    /// Makes room for the next read of a busy connection; a quiet one reads through the
    /// thread's scratch buffer and needs none (see `read`).
    fn reserve_read(&mut self) {
        if !self.read_hot {
            self.read_room = READ_IDLE;
            return;
        }
        if self.rbuf.capacity() - self.rbuf.len() < READ_BUSY / 2 {
            self.rbuf.reserve(READ_BUSY);
        }
        self.read_room = self.rbuf.capacity() - self.rbuf.len();
    }

    /// After a read was decoded: whether the peer is sending a lot.
    fn after_read(&mut self, n: usize) {
        self.read_hot = n >= self.read_room / 2;
    }

    /// A quiet connection's read buffer dropped if no partial packet is left in it.
    fn release_if_quiet(&mut self) {
        read::release_if_idle(&mut self.rbuf, self.read_hot);
    }

    /// Reads until the session yields CONNECT, within the connect timeout.
    async fn read_connect(
        &mut self,
        broker: &BrokerState,
        sess: &mut ServerSession,
    ) -> Result<Box<Connect>, &'static str> {
        let deadline = Duration::from_secs(broker.config.limits.connect_timeout);
        let read = async {
            loop {
                let n = read::read_into(&mut self.rd, &mut self.rbuf, false)
                    .await
                    .map_err(|_| "read error")?;
                if n == 0 {
                    return Err("closed");
                }
                Metrics::add(&broker.metrics.bytes_received, n as u64);
                if let Err(v) = sess.handle_read(Instant::now(), &mut self.rbuf) {
                    warn!(reason = v.reason, code = %v.code, "bad CONNECT");
                    Metrics::inc(&broker.metrics.protocol_errors);
                    sess.disconnect(v.code, Some(v.reason));
                    return Err("protocol violation before CONNECT");
                }
                if let Some(Event::Connect(c)) = sess.poll_event() {
                    return Ok(c);
                }
            }
        };
        tokio::time::timeout(deadline, read)
            .await
            .map_err(|_| "no CONNECT within the connect timeout")?
    }

    /// Writes whatever is left, bounded in time, closes the write side (half-close), then
    /// lingers: reads and discards what the client still sends until it closes too or
    /// [`LINGER`] passes, so the client reads the reason code instead of a reset.
    /// No lingering while the broker shuts down (it would only delay the shutdown).
    async fn final_flush(&mut self, rest: Bytes, linger: bool) {
        // Lingering is for a last word (CONNACK refusal, DISCONNECT with a reason); a
        // connection that gets none (a silent one timing out, a client's own DISCONNECT)
        // is closed at once.
        let linger = linger && !(rest.is_empty() && self.pending.is_empty());
        let flush = async {
            self.wr.write_all(&self.pending).await?;
            self.wr.write_all(&rest).await?;
            self.wr.shutdown().await
        };
        if !matches!(tokio::time::timeout(FINAL_FLUSH, flush).await, Ok(Ok(()))) || !linger {
            return;
        }
        self.pending = Bytes::new();
        let drain = async {
            while let Ok(n) = read::read_into(&mut self.rd, &mut self.rbuf, false).await
                && n > 0
            {
                self.rbuf.clear();
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}
