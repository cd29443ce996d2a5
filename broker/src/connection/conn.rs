//! A connected client: CONNECT handling (authentication, session open), the connected
//! loop, and the end of the connection (protocol events: `events`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use switchboard_proto::session::{Accept, InflightState, ServerSession};
use switchboard_proto::{Connect, Properties, ReasonCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::enhanced_auth::{self, Authenticated};
use super::park::Ran;
use super::{DEFER_MAX, End, Io, OUT_HIGH_WATER};
use crate::BrokerState;
use crate::auth::{Action, Attempt, Identity};
use crate::message::{Delivery, Message};
use crate::metrics::Metrics;
use crate::pipeline::ack::AckQueue;
use crate::pipeline::authorise::within_limits;
use crate::sessions::{Closing, Kick, NEVER_EXPIRES, SessionState, will_message};

/// A connected client.
pub(super) struct Conn {
    pub(super) broker: Arc<BrokerState>,
    pub(super) conn_id: u64,
    /// The session's key in the registry and the store (see `sessions::key_of`) when it is
    /// not the client id (a tenant's client): one copy of the id fewer per connection.
    pub(super) own_key: Option<Box<str>>,
    /// Its `client_id` is the connection's (assigned by the broker if the client sent none).
    pub(super) identity: Identity,
    pub(super) version: Version,
    pub(super) state: SessionState,
    pub(super) expiry: u32,
    pub(super) will: Option<(Arc<Message>, u32)>,
    pub(super) kicked: Option<oneshot::Receiver<Box<Kick>>>,
    /// Outgoing shared-subscription deliveries awaiting acknowledgement; allocated on
    /// first use (most connections never have any), freed when quiet and empty.
    #[expect(
        clippy::box_collection,
        reason = "an empty map's 48 B stay in every idle connection; the box costs 8"
    )]
    pub(super) shared_inflight: Option<Box<HashMap<u16, Delivery>>>,
    /// Acknowledgements of incoming QoS 1/2 publishes, in arrival order
    /// ([MQTT-4.6.0-2]); each may wait for its store commit.
    pub(super) acks: AckQueue,
    /// Reused buffer for deliveries taken from the mailbox.
    pub(super) batch: Vec<Delivery>,
    /// The keep-alive changed: re-arm the timer.
    pub(super) keep_alive_changed: bool,
    /// How many times the connection has parked: its next quiet wait before parking
    /// (see `Limits::park_wait`).
    pub(super) parked: u8,
    /// What the admin API shows of this connection.
    pub(super) info: Option<Arc<crate::sessions::LiveInfo>>,
    /// A re-authentication under way (enhanced authentication).
    pub(super) reauth: Option<Box<crate::auth::ScramServer>>,
    /// The commit the session's held output waits for (see `hold_until_stored`): QoS 2
    /// packet ids and steps, the session's subscriptions.
    pub(super) barrier: Option<crate::store::Durable>,
}

impl Conn {
    /// The client id of the connection.
    pub(super) fn client_id(&self) -> &str {
        &self.identity.client_id
    }

    /// The session's key in the registry and the store (see `sessions::key_of`).
    pub(super) fn session_key(&self) -> &str {
        self.own_key.as_deref().unwrap_or(&self.identity.client_id)
    }

    /// Validates and authenticates CONNECT, opens the session and queues CONNACK.
    pub(super) async fn establish(
        broker: &Arc<BrokerState>,
        sess: &mut ServerSession,
        // Boxed as decoded, and freed when this returns: moving the value out of its box
        // in the caller would keep the box's memory for the connection's whole life.
        c: Box<Connect>,
        conn_id: u64,
        peer: SocketAddr,
        cert_user: Option<String>,
        enhanced: Option<Authenticated>,
    ) -> Option<Conn> {
        let limits = &broker.config.limits;
        let v5 = c.version.is_v5();
        let reject = |sess: &mut ServerSession, code: ReasonCode, why: &str| {
            info!(%code, why, "connection refused");
            sess.reject(code, Some(why.to_owned()));
            None
        };
        if let Some(to) = &broker.config.redirect.server_reference {
            // MQTT 5.0 section 4.11: server redirection.
            let code = if broker.config.redirect.permanent {
                ReasonCode::ServerMoved
            } else {
                ReasonCode::UseAnotherServer
            };
            info!(%code, to, "connection redirected");
            sess.reject_with(
                code,
                Properties {
                    server_reference: Some(to.clone()),
                    ..Properties::default()
                },
            );
            return None;
        }
        if let Some(to) = broker.sessions.draining() {
            // `switchboard ctl drain`: this node takes no new connections.
            info!(to = ?to, "connection redirected: node draining");
            sess.reject_with(
                ReasonCode::UseAnotherServer,
                Properties {
                    server_reference: to,
                    ..Properties::default()
                },
            );
            return None;
        }
        if c.client_id.is_empty() && !c.clean_start && !v5 {
            return reject(
                sess,
                ReasonCode::ClientIdentifierNotValid,
                "[MQTT-3.1.3-8] empty client id needs clean session",
            );
        }
        if let Some(w) = &c.will
            && !within_limits(&w.topic, limits)
        {
            return reject(
                sess,
                ReasonCode::TopicNameInvalid,
                "will topic exceeds the topic limits",
            );
        }
        let identity = match &enhanced {
            Some(a) => Ok(enhanced_auth::identity(a)),
            None => {
                broker
                    .verifier
                    .verify(Attempt {
                        peer: peer.ip(),
                        client_id: c.client_id.clone(),
                        username: c.username.clone(),
                        password: c.password.clone(),
                        cert_user,
                    })
                    .await
            }
        };
        let mut identity = match identity {
            Ok(i) => i,
            Err(code) => return reject(sess, code, "authentication failed"),
        };
        let mut will = c.will.clone();
        if let Some(w) = &mut will {
            let mapped = identity
                .namespace
                .publish_topic(&w.topic)
                .map(|t| t.into_owned());
            match mapped {
                Ok(t) if broker.acl.allowed(&identity, Action::Publish, &w.topic) => w.topic = t,
                _ => return reject(sess, ReasonCode::NotAuthorized, "will topic not allowed"),
            }
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
        if let Some(a) = &enhanced {
            (props.authentication_method, props.authentication_data) =
                enhanced_auth::connack_auth(a);
        }
        if v5
            && c.properties.request_response_information == Some(1)
            && !broker.config.response_topic_prefix.is_empty()
        {
            // MQTT 5.0 section 3.2.2.3.15: a topic space for this client's responses.
            props.response_information = Some(format!(
                "{}{client_id}/",
                broker.config.response_topic_prefix
            ));
        }
        let asked_expiry = if v5 {
            c.properties.session_expiry_interval.unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            NEVER_EXPIRES
        };
        let expiry = if identity.namespace == crate::namespace::Namespace::Probe {
            0 // a heartbeat probe is thrown away with its connection
        } else {
            limits.session_expiry(asked_expiry)
        };
        if v5 && expiry != asked_expiry {
            props.session_expiry_interval = Some(expiry);
        }
        if expiry > 0 && client_id.len() > limits.max_persistent_client_id_len {
            // Persistent sessions' ids become store keys: keep them short.
            return reject(
                sess,
                ReasonCode::ClientIdentifierNotValid,
                "client id too long for a persistent session",
            );
        }
        if v5 {
            super::hints::advertise(broker, &mut props);
        }
        let server_keep_alive = (limits.max_keep_alive > 0
            && (c.keep_alive == 0 || c.keep_alive > limits.max_keep_alive))
            .then_some(limits.max_keep_alive);

        let owner = crate::sessions::owner_of(&identity);
        let Some(session_key) = crate::sessions::key_of(&identity, &client_id) else {
            return reject(
                sess,
                ReasonCode::ClientIdentifierNotValid,
                "client ids starting with $t/ are reserved",
            );
        };
        let opened = match broker
            .open_session(
                &session_key,
                owner.as_deref(),
                c.clean_start,
                expiry,
                conn_id,
            )
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let code = match e {
                    // v5 0x85; 3.1.1 return code 2, identifier rejected.
                    crate::sessions::OpenError::NotOwner => ReasonCode::ClientIdentifierNotValid,
                    crate::sessions::OpenError::TooManySessions => ReasonCode::QuotaExceeded,
                    crate::sessions::OpenError::Busy => ReasonCode::ServerBusy,
                    crate::sessions::OpenError::Unavailable => ReasonCode::ServerUnavailable,
                };
                return reject(sess, code, &e.to_string());
            }
        };
        // Not long: one group commit. Meanwhile a connection taking the session over
        // waits for this one (`TAKEOVER_WAIT`), as it would for any other.
        if let Some(settled) = opened.settled
            && !matches!(settled.await, Ok(Ok(_)))
        {
            warn!(%client_id, "a store write the CONNACK waited for failed; connecting anyway");
        }
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
        let will = will.map(|w| will_message(w, state.uid, Instant::now()));
        broker.registry_will(&session_key, will.as_ref()).await;
        Some(Conn {
            broker: broker.clone(),
            conn_id,
            own_key: (session_key != client_id).then(|| session_key.into_boxed_str()),
            identity,
            version: c.version,
            state,
            expiry,
            will,
            kicked: Some(opened.kicked),
            shared_inflight: None,
            acks: AckQueue::new(c.version.is_v5()),
            batch: Vec::new(),
            keep_alive_changed: false,
            parked: 0,
            info: None,
            reauth: None,
            barrier: None,
        })
    }

    /// The connected loop, until the connection ends or parks (see `park`).
    pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut Io<S>,
        sess: &mut ServerSession,
    ) -> Ran {
        let broker = self.broker.clone();
        let mailbox = self.state.mailbox.clone();
        let mut kicked = self.kicked.take();
        // With a store, each PUBREL and PUBCOMP waits for its state (see `on_read`).
        sess.set_hold_qos2_steps(broker.store().is_some());
        // Packets that arrived together with CONNECT, or that woke a parked connection.
        if let Err(v) = self.on_read(sess, &mut io.rbuf) {
            return Ran::Ended(End::Violation(v));
        }
        io.after_read(0);
        io.release_if_quiet();
        self.shrink_if_quiet(io.read_hot, sess);
        self.drain(sess);
        // One timer for the connection's life, re-armed only when it fires: the deadline
        // moves with every packet, but checking it lazily costs nothing per packet.
        let keep_alive = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(keep_alive);
        // Registered once, then a flag read on each turn (`Stop::stopped`): the shutdown
        // token's waiter list and lock are shared by every connection.
        let stopped = broker.shutdown.stopped();
        tokio::pin!(stopped);
        let notified = mailbox.notified();
        tokio::pin!(notified);
        let mut keep_alive_armed = false;
        // Parking: checked every `park_after`; the connection parks when nothing came in
        // (packets, deliveries) since the last check and nothing is in flight. Counting
        // wake-ups costs nothing per packet, unlike reading the clock. Writes do not
        // count: each follows one of those, and output still owed keeps it running
        // (`parkable`), so the CONNACK alone does not hold a new connection a round longer.
        let park_after = broker.config.limits.park_wait(self.parked);
        let park_check = tokio::time::sleep(park_after);
        tokio::pin!(park_check);
        let (mut activity, mut activity_seen) = (0u64, 0u64);
        // An IM device's deliveries woken by the mailbox are written once this worker has
        // run what else is ready (see `yield_now`): a group message's fan-out wakes
        // hundreds of connections, and the next message's fan-out, ready behind them, then
        // lands in the same write instead of a send of its own (fewer segments for a
        // phone's radio, too). A device receives from many senders at once (groups, 1:1,
        // receipts, unread counts); a plain MQTT subscriber's deliveries mostly come from
        // one publisher, and waiting measured slower there (bench/README, session 12). Only
        // a lone delivery waits: when several came together, the write is full enough.
        let defers = self.identity.im.is_some();
        let deferred = tokio::task::yield_now();
        tokio::pin!(deferred);
        let mut deferring = false;
        loop {
            if io.pending.is_empty() && sess.has_transmit() && !deferring {
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
                return Ran::Ended(End::ClientDisconnect {
                    with_will: self.will.is_some(),
                });
            }
            let backlog = io.pending.len() + sess.pending_transmit();
            tokio::select! {
                biased;
                _ = &mut stopped => {
                    sess.disconnect(ReasonCode::ServerShuttingDown, None);
                    return Ran::Ended(End::Shutdown);
                }
                k = async { kicked.as_mut().expect("guarded").await }, if kicked.is_some() => {
                    kicked = None;
                    if let Ok(k) = k {
                        return Ran::Ended(super::park::kicked_off(sess, *k));
                    }
                }
                // Before the write: an acknowledgement that became due together with
                // deliveries (an IM request's PUBACK and its answer) leaves in the same
                // write as them, not in one of its own.
                commit = self.acks.front_commit(), if self.acks.front_waits() => {
                    if let Err(v) = self.acks.front_committed(sess, commit) {
                        return Ran::Ended(End::Violation(v));
                    }
                    self.drain(sess);
                }
                r = io.wr.write(&io.pending), if !io.pending.is_empty() => match r {
                    Ok(0) | Err(_) => return Ran::Ended(End::Lost("write failed")),
                    Ok(n) => {
                        Metrics::add(&broker.metrics.bytes_sent, n as u64);
                        io.pending.advance(n);
                        if io.pending.is_empty() {
                            // Written: let go of the buffer (an idle connection keeps none).
                            io.pending = bytes::Bytes::new();
                            self.drain(sess);
                        }
                    }
                },
                r = super::read::read_into(&mut io.rd, &mut io.rbuf, io.read_hot), if backlog < OUT_HIGH_WATER => match r {
                    Ok(0) => return Ran::Ended(End::Lost("closed by peer")),
                    Err(_) => return Ran::Ended(End::Lost("read failed")),
                    Ok(n) => {
                        activity += 1;
                        Metrics::add(&broker.metrics.bytes_received, n as u64);
                        if let Err(v) = self.on_read(sess, &mut io.rbuf) {
                            return Ran::Ended(End::Violation(v));
                        }
                        // Nothing is freed here: a busy subscriber's small reads (its
                        // PUBACKs) would free and allocate again on every read. What a
                        // quiet connection does not need goes at the next quiet check.
                        io.after_read(n);
                        self.drain(sess);
                    }
                },
                _ = &mut notified, if backlog < OUT_HIGH_WATER => {
                    activity += 1;
                    notified.set(mailbox.notified());
                    let taken = self.drain(sess);
                    if taken > 1 || sess.pending_transmit() >= DEFER_MAX {
                        // Several together already (or plenty): write them now.
                        deferring = false;
                    } else if defers && !deferring && io.pending.is_empty() && sess.has_transmit() {
                        deferring = true;
                        deferred.set(tokio::task::yield_now());
                    }
                }
                _ = &mut deferred, if deferring => deferring = false,
                marked = async { self.barrier.as_mut().expect("guarded").await }, if self.barrier.is_some() => {
                    self.barrier_lifted(sess, matches!(marked, Ok(Ok(_))));
                }
                _ = &mut keep_alive, if keep_alive_armed => {
                    keep_alive_armed = false;
                    if crate::transport::liveness::peer_heard() {
                        // QUIC PINGs (or any QUIC packet) since the last check.
                        sess.peer_alive(Instant::now());
                    }
                    if let Err(v) = sess.handle_timeout(Instant::now()) {
                        return Ran::Ended(End::Violation(v));
                    }
                }
                _ = &mut park_check, if !park_after.is_zero() => {
                    if activity == activity_seen && !io.read_hot {
                        // Quiet for `park_after`: let go of what busy times need.
                        io.release_if_quiet();
                        self.shrink_if_quiet(false, sess);
                        if self.parkable(io, sess) {
                            self.kicked = kicked;
                            self.parked = self.parked.saturating_add(1);
                            return Ran::Parked;
                        }
                    }
                    activity_seen = activity;
                    park_check.as_mut().reset(tokio::time::Instant::now() + park_after);
                }
            }
        }
    }

    /// When the client is quiet (after CONNECT, a wake-up, or `park_after` without
    /// activity): frees what the session and this connection hold for busy times and do
    /// not need now (see
    /// [`ServerSession::shrink_idle`]). A busy connection keeps reusing them.
    fn shrink_if_quiet(&mut self, hot: bool, sess: &mut ServerSession) {
        if hot {
            return;
        }
        sess.shrink_idle();
        if self.batch.is_empty() {
            self.batch = Vec::new();
        }
        if self.shared_inflight.as_ref().is_some_and(|m| m.is_empty()) {
            self.shared_inflight = None;
        }
    }

    /// Parks or ends the session and publishes the will if the connection ended abnormally.
    pub(super) fn finish(self, end: End, sess: ServerSession) {
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
        // A clean session's in-flight state is kept only for its shared-subscription
        // messages, which go to another member (`close_session` hands them over).
        state.inflight =
            if self.expiry > 0 || self.shared_inflight.as_ref().is_some_and(|m| !m.is_empty()) {
                sess.into_inflight()
            } else {
                InflightState::default()
            };
        let key = self
            .own_key
            .unwrap_or_else(|| self.identity.client_id.into_boxed_str());
        self.broker.close_session(
            &key,
            self.conn_id,
            Closing {
                state,
                will,
                expiry: self.expiry,
                shared_inflight: self.shared_inflight.map(|m| *m).unwrap_or_default(),
            },
        );
        if let End::Kicked(k) = end {
            let _ = k.done.send(());
        }
    }
}
