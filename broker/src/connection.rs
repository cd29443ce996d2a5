//! One client connection: drives the sans-IO [`ServerSession`] with bytes from the
//! transport, acts on its events (authenticate, route, subscribe), feeds it deliveries from
//! the session's mailbox, and writes what it produces.
//!
//! The task never blocks on one thing: reading, writing, the mailbox, the keep-alive timer,
//! shutdown and takeover are one `select!`. Output is bounded: while more than
//! [`OUT_HIGH_WATER`] bytes wait for the socket, the task stops taking deliveries and stops
//! reading, so a client that does not read costs its queue bounds and no more.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use switchboard_proto::session::{
    Accept, Event, InflightState, SendError, ServerSession, SessionLimits, Violation,
};
use switchboard_proto::{
    Connect, Properties, QoS, ReasonCode, Subscribe, Unsubscribe, Version, topic,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info, warn};

use crate::BrokerState;
use crate::auth::{Action, Attempt, Identity};
use crate::message::{Delivery, Message};
use crate::metrics::Metrics;
use crate::sessions::{Closing, Kick, NEVER_EXPIRES, SessionState, SubRecord, will_message};
use crate::store::{Durable, Op};

/// Bytes waiting for the socket above which the task pauses deliveries and reading.
const OUT_HIGH_WATER: usize = 256 * 1024;
/// Deliveries taken from the mailbox under one lock.
const DRAIN_BATCH: usize = 64;
/// Batches per wake-up before the task yields to other work.
const DRAIN_ROUNDS: usize = 4;
/// Read buffer for a quiet connection, and for a busy one.
const READ_IDLE: usize = 256;
const READ_BUSY: usize = 4 * 1024;
/// Time allowed to flush the last bytes (DISCONNECT) before closing.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// How the connection ended.
#[derive(Debug)]
enum End {
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

/// Serves one accepted connection until it ends.
pub async fn serve<S>(
    broker: Arc<BrokerState>,
    stream: S,
    peer: SocketAddr,
    transport: &'static str,
    cert_user: Option<String>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let conn_id = broker.next_id();
    let span = tracing::info_span!("conn", id = conn_id, %peer, transport, client_id = tracing::field::Empty);
    async move {
        let (rd, wr) = tokio::io::split(stream);
        let mut io = Io {
            rd,
            wr,
            rbuf: BytesMut::with_capacity(READ_IDLE),
            pending: Bytes::new(),
            read_hot: false,
            read_room: READ_IDLE,
        };
        Metrics::inc(&broker.metrics.connections_total);
        let limits = session_limits(&broker);
        let mut sess = ServerSession::new(limits, Instant::now());
        let connect = match io.read_connect(&broker, &mut sess).await {
            Ok(c) => c,
            Err(why) => {
                debug!(why, "connection ended before CONNECT was accepted");
                io.final_flush(&mut sess).await;
                return;
            }
        };
        let Some(mut conn) =
            Conn::establish(&broker, &mut sess, *connect, conn_id, peer, cert_user).await
        else {
            io.final_flush(&mut sess).await;
            return;
        };
        tracing::Span::current().record("client_id", conn.client_id.as_str());
        Metrics::inc(&broker.metrics.clients_connected);
        let by_transport =
            &broker.metrics.connected_by_transport[crate::metrics::transport_index(transport)];
        Metrics::inc(by_transport);
        conn.info = Some(Arc::new(crate::sessions::LiveInfo {
            transport,
            peer: peer.to_string(),
            since: crate::store::unix_now(),
            mailbox: conn.state.mailbox.clone(),
            subscriptions: parking_lot::Mutex::new(conn.sorted_subscriptions()),
        }));
        if let Some(info) = &conn.info {
            broker.attach_info(&conn.client_id, conn_id, info.clone());
        }
        let end = conn.run(&mut io, &mut sess).await;
        if let End::Violation(v) = &end {
            sess.disconnect(v.code, Some(v.reason));
        }
        Metrics::dec(&broker.metrics.clients_connected);
        Metrics::dec(by_transport);
        io.final_flush(&mut sess).await;
        conn.finish(end, sess);
    }
    .instrument(span)
    .await;
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

struct Io<S> {
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
    /// Makes room for the next read: a little for a quiet connection (an idle phone holds
    /// almost no buffer), a lot for a busy one.
    fn reserve_read(&mut self) {
        let want = if self.read_hot { READ_BUSY } else { READ_IDLE };
        if self.rbuf.capacity() - self.rbuf.len() < want / 2 {
            self.rbuf.reserve(want);
        }
        self.read_room = self.rbuf.capacity() - self.rbuf.len();
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
                if self.rbuf.capacity() - self.rbuf.len() < 128 {
                    self.rbuf.reserve(4096);
                }
                let n = self
                    .rd
                    .read_buf(&mut self.rbuf)
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

    /// Writes whatever is left, bounded in time, then closes the write side.
    async fn final_flush(&mut self, sess: &mut ServerSession) {
        let rest = sess.take_transmit();
        let flush = async {
            self.wr.write_all(&self.pending).await?;
            self.wr.write_all(&rest).await?;
            self.wr.shutdown().await
        };
        let _ = tokio::time::timeout(FINAL_FLUSH, flush).await;
    }
}

/// A connected client.
struct Conn {
    broker: Arc<BrokerState>,
    conn_id: u64,
    client_id: String,
    identity: Identity,
    version: Version,
    state: SessionState,
    expiry: u32,
    will: Option<(Arc<Message>, u32)>,
    kicked: Option<oneshot::Receiver<Kick>>,
    /// Outgoing shared-subscription deliveries awaiting acknowledgement.
    shared_inflight: HashMap<u16, Delivery>,
    /// Acknowledgements of incoming QoS 1/2 publishes, in arrival order
    /// ([MQTT-4.6.0-2]); each may wait for its store commit.
    pending_acks: VecDeque<PendingAck>,
    /// Reused buffer for deliveries taken from the mailbox.
    batch: Vec<Delivery>,
    /// The keep-alive changed: re-arm the timer.
    keep_alive_changed: bool,
    /// What the admin API shows of this connection.
    info: Option<Arc<crate::sessions::LiveInfo>>,
}

/// An acknowledgement waiting for the store.
struct PendingAck {
    pkid: u16,
    code: ReasonCode,
    durable: Option<Durable>,
}

impl Conn {
    /// Validates and authenticates CONNECT, opens the session and queues CONNACK.
    async fn establish(
        broker: &Arc<BrokerState>,
        sess: &mut ServerSession,
        c: Connect,
        conn_id: u64,
        peer: SocketAddr,
        cert_user: Option<String>,
    ) -> Option<Conn> {
        let limits = &broker.config.limits;
        let v5 = c.version.is_v5();
        let reject = |sess: &mut ServerSession, code: ReasonCode, why: &str| {
            info!(%code, why, "connection refused");
            sess.reject(code, Some(why.to_owned()));
            None
        };
        if c.properties.authentication_method.is_some() {
            return reject(
                sess,
                ReasonCode::BadAuthenticationMethod,
                "enhanced authentication is not supported",
            );
        }
        if c.client_id.is_empty() && !c.clean_start && !v5 {
            return reject(
                sess,
                ReasonCode::ClientIdentifierNotValid,
                "[MQTT-3.1.3-8] empty client id needs clean session",
            );
        }
        if let Some(w) = &c.will
            && !valid_topic_limits(&w.topic, limits)
        {
            return reject(
                sess,
                ReasonCode::TopicNameInvalid,
                "will topic exceeds the topic limits",
            );
        }
        let identity = broker
            .verifier
            .verify(Attempt {
                peer: peer.ip(),
                client_id: c.client_id.clone(),
                username: c.username.clone(),
                password: c.password.clone(),
                cert_user,
            })
            .await;
        let mut identity = match identity {
            Ok(i) => i,
            Err(code) => return reject(sess, code, "authentication failed"),
        };
        if let Some(w) = &c.will
            && !broker.acl.allowed(&identity, Action::Publish, &w.topic)
        {
            return reject(sess, ReasonCode::NotAuthorized, "will topic not allowed");
        }
        let mut props = Properties::default();
        let client_id = if c.client_id.is_empty() {
            let id = format!("sb-{:016x}", broker.next_id() ^ 0x5EED_0000_0000_0000);
            props.assigned_client_identifier = Some(id.clone());
            id
        } else {
            c.client_id.clone()
        };
        identity.client_id.clone_from(&client_id);
        let asked_expiry = if v5 {
            c.properties.session_expiry_interval.unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            NEVER_EXPIRES
        };
        let expiry = asked_expiry.min(limits.max_session_expiry);
        if v5 && expiry != asked_expiry {
            props.session_expiry_interval = Some(expiry);
        }
        let server_keep_alive = (limits.max_keep_alive > 0
            && (c.keep_alive == 0 || c.keep_alive > limits.max_keep_alive))
            .then_some(limits.max_keep_alive);

        let opened = broker
            .open_session(&client_id, c.clean_start, expiry, conn_id)
            .await;
        let mut state = opened.state;
        let resume = if opened.session_present {
            Some(std::mem::take(&mut state.inflight))
        } else {
            None
        };
        debug!(%client_id, version = ?c.version, session_present = opened.session_present, %peer, "connected");
        sess.accept(
            &c,
            Accept {
                session_present: opened.session_present,
                properties: props,
                server_keep_alive,
                resume,
            },
        );
        let will = c.will.map(|w| will_message(w, state.uid, Instant::now()));
        Some(Conn {
            broker: broker.clone(),
            conn_id,
            client_id,
            identity,
            version: c.version,
            state,
            expiry,
            will,
            kicked: Some(opened.kicked),
            shared_inflight: HashMap::new(),
            pending_acks: VecDeque::new(),
            batch: Vec::new(),
            keep_alive_changed: false,
            info: None,
        })
    }

    /// The connected loop.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut Io<S>,
        sess: &mut ServerSession,
    ) -> End {
        let broker = self.broker.clone();
        let mailbox = self.state.mailbox.clone();
        let mut kicked = self.kicked.take();
        // Packets that arrived together with CONNECT.
        if let Err(v) = self.on_read(sess, &mut io.rbuf) {
            return End::Violation(v);
        }
        self.drain(sess);
        // One timer for the connection's life, re-armed only when it fires: the deadline
        // moves with every packet, but checking it lazily costs nothing per packet.
        let keep_alive = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(keep_alive);
        // Registered once, not on every turn of the loop: the shutdown token's waiter list
        // is shared by every connection, and re-registering there on each wake-up is a
        // global lock in the hot path.
        let shutdown = broker.shutdown.cancelled();
        tokio::pin!(shutdown);
        let notified = mailbox.notified();
        tokio::pin!(notified);
        let mut keep_alive_armed = false;
        loop {
            if io.pending.is_empty() && sess.has_transmit() {
                io.pending = sess.take_transmit();
            }
            if std::mem::take(&mut self.keep_alive_changed) {
                keep_alive_armed = false;
            }
            if !keep_alive_armed && let Some(deadline) = sess.poll_timeout() {
                keep_alive.as_mut().reset(deadline.into());
                keep_alive_armed = true;
            }
            io.reserve_read();
            if sess.is_closed() {
                return End::ClientDisconnect {
                    with_will: self.will.is_some(),
                };
            }
            let backlog = io.pending.len() + sess.pending_transmit();
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    sess.disconnect(ReasonCode::ServerShuttingDown, None);
                    return End::Shutdown;
                }
                k = async { kicked.as_mut().expect("guarded").await }, if kicked.is_some() => {
                    kicked = None;
                    if let Ok(k) = k {
                        sess.disconnect(k.code, None);
                        return End::Kicked(k);
                    }
                }
                r = io.wr.write(&io.pending), if !io.pending.is_empty() => match r {
                    Ok(0) | Err(_) => return End::Lost("write failed"),
                    Ok(n) => {
                        Metrics::add(&broker.metrics.bytes_sent, n as u64);
                        io.pending.advance(n);
                        if io.pending.is_empty() {
                            self.drain(sess);
                        }
                    }
                },
                r = io.rd.read_buf(&mut io.rbuf), if backlog < OUT_HIGH_WATER => match r {
                    Ok(0) => return End::Lost("closed by peer"),
                    Err(_) => return End::Lost("read failed"),
                    Ok(n) => {
                        Metrics::add(&broker.metrics.bytes_received, n as u64);
                        io.read_hot = n >= io.read_room / 2;
                        if let Err(v) = self.on_read(sess, &mut io.rbuf) {
                            return End::Violation(v);
                        }
                        self.drain(sess);
                    }
                },
                _ = &mut notified, if backlog < OUT_HIGH_WATER => {
                    notified.set(mailbox.notified());
                    self.drain(sess);
                }
                r = async {
                    match self.pending_acks.front_mut().and_then(|p| p.durable.as_mut()) {
                        Some(rx) => rx.await,
                        None => std::future::pending().await,
                    }
                }, if self.pending_acks.front().is_some_and(|p| p.durable.is_some()) => {
                    let durable = matches!(r, Ok(Ok(_)));
                    if let Some(front) = self.pending_acks.front_mut() {
                        front.durable = None;
                        if !durable {
                            if !self.version.is_v5() {
                                // 3.1.1 cannot carry a failure code: close without acknowledging,
                                // so the client sends the message again later.
                                return End::Lost("store failure; closing to make the client retry");
                            }
                            front.code = ReasonCode::UnspecifiedError;
                        }
                    }
                    self.flush_acks(sess);
                    self.drain(sess);
                }
                _ = &mut keep_alive, if keep_alive_armed => {
                    keep_alive_armed = false;
                    if let Err(v) = sess.handle_timeout(Instant::now()) {
                        return End::Violation(v);
                    }
                }
            }
        }
    }

    fn on_read(&mut self, sess: &mut ServerSession, rbuf: &mut BytesMut) -> Result<(), Violation> {
        let read = sess.handle_read(Instant::now(), rbuf);
        // Events decoded before a violation are still acted on.
        while let Some(ev) = sess.poll_event() {
            self.on_event(sess, ev)?;
        }
        read
    }

    fn on_event(&mut self, sess: &mut ServerSession, ev: Event) -> Result<(), Violation> {
        match ev {
            Event::Publish(p) => self.on_publish(sess, *p),
            Event::Subscribe(s) => self.on_subscribe(sess, s),
            Event::Unsubscribe(u) => {
                self.on_unsubscribe(sess, u);
                Ok(())
            }
            Event::Disconnect(d) => {
                if d.code != ReasonCode::DisconnectWithWill {
                    self.will = None;
                }
                if let Some(e) = d.properties.session_expiry_interval {
                    self.expiry = e.min(self.broker.config.limits.max_session_expiry);
                    self.state.mailbox.set_persistent(self.expiry > 0);
                }
                Ok(())
            }
            Event::Delivered { pkid } => {
                self.shared_inflight.remove(&pkid);
                if let Some(seq) = self.state.stored_inflight.remove(&pkid) {
                    self.store_write(Op::Dequeue {
                        uid: self.state.uid,
                        seq,
                    });
                }
                Ok(())
            }
            Event::Received { pkid } => {
                if let Some(&seq) = self.state.stored_inflight.get(&pkid) {
                    self.store_write(Op::MarkSent {
                        uid: self.state.uid,
                        seq,
                        sent: crate::store::Sent::Released(pkid),
                    });
                }
                Ok(())
            }
            Event::Released { pkid } => {
                if self.state.mailbox.is_persistent() {
                    self.store_write(Op::Released {
                        client_id: self.client_id.clone(),
                        pkid,
                    });
                }
                Ok(())
            }
            Event::Connect(_) => Ok(()),
        }
    }

    fn on_publish(
        &mut self,
        sess: &mut ServerSession,
        p: switchboard_proto::Publish,
    ) -> Result<(), Violation> {
        let b = &self.broker;
        let (qos, pkid) = (p.qos, p.pkid);
        let ack = |sess: &mut ServerSession, code| {
            if qos != QoS::AtMostOnce {
                sess.ack_publish(pkid, code);
            }
        };
        if p.topic == switchboard_proto::KEEP_ALIVE_TOPIC {
            self.on_keep_alive(sess, &p);
            return Ok(());
        }
        if !valid_topic_limits(&p.topic, &b.config.limits) {
            if !self.version.is_v5() {
                return Err(Violation {
                    code: ReasonCode::TopicNameInvalid,
                    reason: "topic exceeds the topic limits",
                });
            }
            ack(sess, ReasonCode::TopicNameInvalid);
            return Ok(());
        }
        if !b.acl.allowed(&self.identity, Action::Publish, &p.topic) {
            debug!(topic = %p.topic, "publish not authorized");
            // 3.1.1 has no way to say no: acknowledge and drop, as other brokers do.
            let code = if self.version.is_v5() {
                ReasonCode::NotAuthorized
            } else {
                ReasonCode::Success
            };
            ack(sess, code);
            return Ok(());
        }
        let store = b.store().cloned();
        if qos != QoS::AtMostOnce
            && let Some(st) = &store
        {
            if !st.healthy() {
                warn!("refusing QoS {} publish: storage is failing", qos as u8);
                // Find out whether it works again: the next publish is accepted if so.
                st.write(vec![Op::Probe], None);
                if !self.version.is_v5() {
                    return Err(Violation {
                        code: ReasonCode::UnspecifiedError,
                        reason: "storage is failing",
                    });
                }
                self.ack_in_order(sess, pkid, ReasonCode::UnspecifiedError, None);
                return Ok(());
            }
            if st.over_budget(p.payload.len() as u64 + p.topic.len() as u64) {
                self.ack_in_order(sess, pkid, ReasonCode::QuotaExceeded, None);
                return Ok(());
            }
        }
        let msg = Arc::new(Message::from_publish(p, self.state.uid, Instant::now()));
        let mut ops = Vec::new();
        if msg.retain {
            let op = b.retained.set(&msg, Instant::now());
            if store.is_some() {
                ops.push(op);
            }
        }
        let routed = b.publish(msg);
        ops.extend(routed.ops);
        let code = if routed.refused > 0 {
            ReasonCode::QuotaExceeded
        } else if routed.delivered == 0 && self.version.is_v5() {
            ReasonCode::NoMatchingSubscribers
        } else {
            ReasonCode::Success
        };
        if qos == QoS::ExactlyOnce && self.state.mailbox.is_persistent() && store.is_some() {
            // Durable with the message: a resend after a crash is recognised, not routed twice.
            ops.push(Op::AwaitRel {
                client_id: self.client_id.clone(),
                pkid,
            });
        }
        match (&store, qos) {
            (Some(st), QoS::AtMostOnce) => st.write(ops, None),
            (Some(st), _) if !ops.is_empty() => {
                let (tx, rx) = oneshot::channel();
                st.write(ops, Some(tx));
                self.ack_in_order(sess, pkid, code, Some(rx));
            }
            (_, QoS::AtMostOnce) => {}
            _ => self.ack_in_order(sess, pkid, code, None),
        }
        Ok(())
    }

    /// The adaptive heartbeat: the client announces the interval it now pings at, and dead
    /// client detection follows (1.5 × it) without a reconnect. Payload: ASCII seconds.
    fn on_keep_alive(&mut self, sess: &mut ServerSession, p: &switchboard_proto::Publish) {
        let max = self.broker.config.limits.max_keep_alive;
        let parsed = std::str::from_utf8(&p.payload)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok());
        let code = match parsed {
            Some(secs) if secs > 0 && (max == 0 || secs <= max) => {
                sess.set_keep_alive(secs);
                debug!(secs, "client changed its keep-alive");
                self.keep_alive_changed = true;
                ReasonCode::Success
            }
            _ => {
                debug!("invalid keep-alive control message ignored");
                ReasonCode::PayloadFormatInvalid
            }
        };
        if p.qos != QoS::AtMostOnce {
            let code = if self.version.is_v5() {
                code
            } else {
                ReasonCode::Success
            };
            self.ack_in_order(sess, p.pkid, code, None);
        }
    }

    /// Acknowledges now, or queues behind acknowledgements still waiting for the store, so
    /// that acknowledgements leave in the order the publishes came.
    fn ack_in_order(
        &mut self,
        sess: &mut ServerSession,
        pkid: u16,
        code: ReasonCode,
        durable: Option<Durable>,
    ) {
        if durable.is_none() && self.pending_acks.is_empty() {
            sess.ack_publish(pkid, code);
            return;
        }
        self.pending_acks.push_back(PendingAck {
            pkid,
            code,
            durable,
        });
    }

    /// Sends every acknowledgement at the front whose commit is done.
    fn flush_acks(&mut self, sess: &mut ServerSession) {
        while let Some(front) = self.pending_acks.front_mut() {
            if let Some(rx) = &mut front.durable {
                match rx.try_recv() {
                    Ok(Ok(_)) => front.durable = None,
                    Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => {
                        front.durable = None;
                        front.code = ReasonCode::UnspecifiedError;
                    }
                    Err(oneshot::error::TryRecvError::Empty) => return,
                }
            }
            if let Some(done) = self.pending_acks.pop_front() {
                sess.ack_publish(done.pkid, done.code);
            }
        }
    }

    fn on_subscribe(&mut self, sess: &mut ServerSession, s: Subscribe) -> Result<(), Violation> {
        let b = self.broker.clone();
        let limits = &b.config.limits;
        let v5 = self.version.is_v5();
        let id = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        for (raw, opts) in &s.filters {
            let parsed = match topic::parse_filter(raw) {
                Ok(p) => p,
                Err(why) => {
                    debug!(filter = %raw, why, "invalid topic filter");
                    codes.push(if v5 {
                        ReasonCode::TopicFilterInvalid
                    } else {
                        ReasonCode::UnspecifiedError
                    });
                    continue;
                }
            };
            if parsed.share_group.is_some() && opts.no_local {
                return Err(Violation {
                    code: ReasonCode::ProtocolError,
                    reason: "[MQTT-3.8.3-4] No Local on a shared subscription",
                });
            }
            if !valid_topic_limits(parsed.filter, limits) {
                codes.push(if v5 {
                    ReasonCode::TopicFilterInvalid
                } else {
                    ReasonCode::UnspecifiedError
                });
                continue;
            }
            if !b.acl.allowed(&self.identity, Action::Subscribe, raw) {
                codes.push(if v5 {
                    ReasonCode::NotAuthorized
                } else {
                    ReasonCode::UnspecifiedError
                });
                continue;
            }
            if !self.state.subs.contains_key(raw.as_str())
                && self.state.subs.len() >= limits.max_subscriptions
            {
                codes.push(if v5 {
                    ReasonCode::QuotaExceeded
                } else {
                    ReasonCode::UnspecifiedError
                });
                continue;
            }
            self.state
                .subs
                .insert(raw.clone(), SubRecord { opts: *opts, id });
            codes.push(match opts.qos {
                QoS::AtMostOnce => ReasonCode::Success,
                QoS::AtLeastOnce => ReasonCode::GrantedQos1,
                QoS::ExactlyOnce => ReasonCode::GrantedQos2,
            });
        }
        self.persist_session();
        // SUBACK goes out before any retained message the subscriptions bring.
        sess.send_suback(s.pkid, codes.clone());
        for ((raw, opts), code) in s.filters.iter().zip(&codes) {
            if !code.is_error() {
                match b.routes.insert(self.state.uid, raw, *opts, id) {
                    Ok(existed) => {
                        if let Ok(parsed) = topic::parse_filter(raw)
                            && parsed.share_group.is_none()
                        {
                            b.send_retained(self.state.uid, parsed.filter, *opts, id, existed);
                        }
                    }
                    Err(e) => debug!(filter = %raw, %e, "subscription not added"),
                }
            }
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, sess: &mut ServerSession, u: Unsubscribe) {
        let codes = u
            .filters
            .iter()
            .map(|f| {
                let had = self.state.subs.remove(f.as_str()).is_some();
                self.broker.routes.remove(self.state.uid, f);
                if had {
                    ReasonCode::Success
                } else {
                    ReasonCode::NoSubscriptionExisted
                }
            })
            .collect();
        self.persist_session();
        sess.send_unsuback(u.pkid, codes);
    }

    /// Moves deliveries from the mailbox into the session while the window and the output
    /// buffer allow, keeping their order.
    fn drain(&mut self, sess: &mut ServerSession) {
        let m = &self.broker.metrics;
        let now = Instant::now();
        let mut batch = std::mem::take(&mut self.batch);
        let mut rounds = 0;
        while sess.pending_transmit() < OUT_HIGH_WATER && rounds < DRAIN_ROUNDS {
            rounds += 1;
            self.state
                .mailbox
                .pop_batch(DRAIN_BATCH, sess.send_room(), &mut batch);
            if batch.is_empty() {
                break;
            }
            sess.reserve_transmit(batch.iter().map(|d| d.msg.cost()).sum());
            let mut rest = batch.drain(..);
            for d in rest.by_ref() {
                let Some(p) = d.to_publish(now) else {
                    Metrics::inc(&m.dropped_expired);
                    self.dequeue(&d);
                    continue;
                };
                match sess.publish(p) {
                    Ok(pkid) => {
                        Metrics::inc(&m.messages_sent);
                        if pkid != 0 {
                            if let Some(seq) = d.seq {
                                self.state.stored_inflight.insert(pkid, seq);
                                // QoS 2 must resume with the same packet id after a crash, or
                                // the client would take it for a new message. (QoS 1 may be
                                // delivered twice anyway: not worth a write per message.)
                                if d.qos == QoS::ExactlyOnce {
                                    self.store_write(Op::MarkSent {
                                        uid: self.state.uid,
                                        seq,
                                        sent: crate::store::Sent::Published(pkid),
                                    });
                                }
                            }
                            if d.shared.is_some() {
                                self.shared_inflight.insert(pkid, d);
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
                        self.batch = batch;
                        return;
                    }
                }
            }
        }
        self.batch = batch;
        // Budget used up: come back after other tasks had their turn.
        if rounds == DRAIN_ROUNDS {
            self.state.mailbox.wake();
        }
    }

    fn store_write(&self, op: Op) {
        if let Some(st) = self.broker.store() {
            st.write(vec![op], None);
        }
    }

    /// Drops a stored delivery that will never be sent.
    fn dequeue(&self, d: &Delivery) {
        if let Some(seq) = d.seq {
            self.store_write(Op::Dequeue {
                uid: self.state.uid,
                seq,
            });
        }
    }

    fn sorted_subscriptions(&self) -> Vec<String> {
        let mut subs: Vec<String> = self.state.subs.keys().cloned().collect();
        subs.sort();
        subs
    }

    /// Writes the session's subscriptions to the store, if it is persistent, and refreshes
    /// what the admin API shows.
    fn persist_session(&mut self) {
        if let Some(info) = &self.info {
            *info.subscriptions.lock() = self.sorted_subscriptions();
        }
        if let Some(st) = self.broker.store()
            && self.expiry > 0
        {
            let record = self.state.record(self.expiry, None, None);
            st.write(
                vec![Op::PutSession {
                    client_id: self.client_id.clone(),
                    record,
                }],
                None,
            );
            self.state.persisted = true;
        }
    }

    /// Parks or ends the session and publishes the will if the connection ended abnormally.
    fn finish(self, end: End, sess: ServerSession) {
        let will = match &end {
            End::ClientDisconnect { with_will: false } => None,
            _ => self.will,
        };
        match &end {
            End::Violation(v) => {
                Metrics::inc(&self.broker.metrics.protocol_errors);
                warn!(code = %v.code, reason = v.reason, "connection closed for a protocol violation");
            }
            End::Lost(why) => debug!(why, "connection lost"),
            _ => debug!(?end, "connection ended"),
        }
        let mut state = self.state;
        state.inflight = if self.expiry > 0 {
            sess.into_inflight()
        } else {
            InflightState::default()
        };
        self.broker.close_session(
            &self.client_id,
            self.conn_id,
            Closing {
                state,
                will,
                expiry: self.expiry,
                shared_inflight: self.shared_inflight,
            },
        );
        if let End::Kicked(k) = end {
            let _ = k.done.send(());
        }
    }
}

/// Checks the configured topic length and depth limits.
fn valid_topic_limits(t: &str, l: &crate::config::Limits) -> bool {
    t.len() <= l.max_topic_length && t.split('/').count() <= l.max_topic_levels
}
