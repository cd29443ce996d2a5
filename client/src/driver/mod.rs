//! The background task behind a [`crate::Client`]: a thin I/O driver around
//! [`ClientSession`]. It opens connections (QUIC → TLS → TCP, in the configured order),
//! reconnects with jittered back-off, moves bytes between the socket and the session, fires
//! the session's timers, turns app commands into session calls and session events into app
//! events, and runs the adaptive heartbeat policy: the link pings at the policy's interval,
//! and the longer intervals it wants to try run as [`crate::probe`] connections beside the
//! link. Every protocol rule lives in the session. The heartbeat's part (probes, the
//! announced interval, network hints) is in `heartbeat`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::Rng;
use switchboard_proto::session::{
    ClientConfig, ClientError, ClientEvent, ClientSession, RequestError,
};
use switchboard_proto::{Properties, ReasonCode, SubscriptionOptions, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::heartbeat::Policy;
use crate::transport::Endpoint;

mod heartbeat;
mod quic_ping;
pub(crate) mod sink;
use crate::{AckWaiter, Command, Config, Error, Event, Heartbeat, probe, transport};
pub(crate) use quic_ping::RECEIVE_WINDOW as QUIC_RECEIVE_WINDOW;
use quic_ping::{QuicPing, Tick};

/// Why a connection ended.
enum Ended {
    Shutdown,
    /// No PINGRESP after an idle period: the network forgot the connection.
    PingTimeout,
    /// The heartbeat outgrew the keep-alive the broker holds the link to, and the broker
    /// takes no new one on the link: reconnected on purpose, session kept, to carry the
    /// new keep-alive in CONNECT.
    Planned(Duration),
    Lost(String),
}

/// A heartbeat interval above this multiple of the CONNECT keep-alive needs a planned
/// reconnect when the broker does not follow `$control/keepalive`; up to it, pings still
/// arrive within the 1.5 × keep-alive a broker waits [MQTT-3.1.2-24].
const PLANNED_RECONNECT_ABOVE: f64 = 1.25;

/// A SUBSCRIBE or UNSUBSCRIBE awaiting its acknowledgement.
struct Pending {
    /// The filter of a subscribe, so a re-subscribe skips filters already on their way.
    subscribe: Option<String>,
    done: Option<AckWaiter>,
}

const PROBE_BACKOFF_MIN: Duration = Duration::from_secs(60);
const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(6 * 3600);

/// The probe in flight: the idle interval it tries, and its task.
struct Probe {
    idle: Duration,
    task: tokio::task::JoinHandle<probe::Outcome>,
}

pub(crate) struct Driver {
    cfg: Config,
    connector: transport::Connector,
    hb: Heartbeat,
    session: ClientSession,
    /// Filters to subscribe again when a reconnect lost the session: one entry per filter
    /// the app subscribed and did not unsubscribe.
    subs: Vec<(String, SubscriptionOptions)>,
    /// Requests by packet identifier. Bounded by the identifier space: the session refuses
    /// a request when every identifier is in flight.
    requests: HashMap<u16, Pending>,
    events: sink::Events,
    cmds: mpsc::Receiver<Command>,
    reconnects: u32,
    /// The endpoint of the current (or last) link, where probes go.
    endpoint: Option<Endpoint>,
    /// The link's QUIC connection, and the PATH_CHALLENGEs it had received at its last
    /// ping: more after a ping means the NAT forgot the mapping and QUIC migrated.
    link_quic: Option<(quinn::Connection, u64)>,
    /// At most one probe at a time; aborted when the driver ends or the network changes.
    probe: Option<Probe>,
    /// No probe before this: one heartbeat interval after the link connected (a link that
    /// does not work yet has nothing to learn from), or a while after a probe that could
    /// not test anything.
    probe_paused_until: Option<Instant>,
    /// The pause after an inconclusive probe: doubles each time (1 min to 6 h), reset by a
    /// conclusive one.
    probe_backoff: Duration,
    /// A heartbeat hint was asked for the network in use: no probe before its answer (or
    /// this deadline, for a broker that does not answer).
    hint_wait: Option<Instant>,
    /// The last settled interval reported to the broker's hint table, and where.
    reported: Option<(String, Duration)>,
    /// The broker answers `$control/network` with hints (its CONNACK said so): only then
    /// does the SDK ask, and report.
    hints_offered: bool,
    /// The broker takes a new keep-alive on `$control/keepalive` (its CONNACK announced
    /// `sb-max-keep-alive`); without it the keep-alive of the link's CONNECT holds.
    keep_alive_follows: bool,
    /// The keep-alive the broker holds this link to: what its CONNECT said (or the
    /// broker's Server Keep Alive).
    link_keep_alive: Duration,
    /// The link should reconnect to carry a longer keep-alive (see [`Ended::Planned`]).
    planned_reconnect: bool,
    /// The link's heartbeat as QUIC pings ([`quic_ping`]), when it is QUIC and the broker
    /// counts them.
    quic_ping: Option<QuicPing>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(p) = self.probe.take() {
            p.task.abort();
        }
    }
}

/// The session's clock: tokio's, so that tests with a paused clock drive it too.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    pub(crate) fn new(
        cfg: Config,
        connector: transport::Connector,
        cmds: mpsc::Receiver<Command>,
        events: sink::Events,
    ) -> Driver {
        let mut hb = Heartbeat::new(cfg.heartbeat.clone());
        for (network, proven) in &cfg.learned_heartbeats {
            hb.restore(network, *proven);
        }
        let session = ClientSession::new(
            ClientConfig {
                version: Version::V5,
                clean_start: false,
                keep_alive: hb.interval(),
                ping_timeout: cfg.ping_timeout,
                connack_timeout: cfg.connect_timeout,
                session_expiry: cfg.session_expiry,
                username: cfg.username.clone(),
                password: cfg.password.clone(),
                max_packet_size: cfg.max_packet_size,
                max_queued: cfg.offline_queue,
                ..ClientConfig::new(&cfg.client_id)
            },
            now(),
        );
        Driver {
            cfg,
            connector,
            hb,
            session,
            subs: Vec::new(),
            requests: HashMap::new(),
            events,
            cmds,
            reconnects: 0,
            endpoint: None,
            link_quic: None,
            probe: None,
            probe_paused_until: None,
            probe_backoff: PROBE_BACKOFF_MIN,
            hint_wait: None,
            reported: None,
            hints_offered: false,
            keep_alive_follows: false,
            link_keep_alive: Duration::ZERO,
            planned_reconnect: false,
            quic_ping: None,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut delay = self.cfg.backoff_min;
        loop {
            match self.open().await {
                Ok((stream, name)) => {
                    let ended = self.connection(stream, name).await;
                    self.session.connection_lost();
                    self.reconnects += 1;
                    let reason = match ended {
                        Ended::Shutdown => return,
                        Ended::PingTimeout => {
                            let interval = self.hb.on_lost(now());
                            self.session.set_keep_alive(interval);
                            let _ = self
                                .events
                                .send(Event::Heartbeat {
                                    interval,
                                    phase: self.hb.phase(),
                                })
                                .await;
                            // A NAT timeout is not an outage: reconnect at once.
                            delay = Duration::ZERO;
                            "ping timeout (NAT mapping lost?)".to_owned()
                        }
                        Ended::Planned(keep_alive) => {
                            delay = Duration::ZERO;
                            format!(
                                "planned reconnect to carry a keep-alive of {} s",
                                keep_alive.as_secs_f64().ceil()
                            )
                        }
                        Ended::Lost(why) => {
                            delay = self.cfg.backoff_min;
                            why
                        }
                    };
                    let _ = self.events.send(Event::Disconnected { reason }).await;
                }
                Err(e) => {
                    let _ = self
                        .events
                        .send(Event::Disconnected {
                            reason: e.to_string(),
                        })
                        .await;
                    delay = (delay * 2).clamp(self.cfg.backoff_min, self.cfg.backoff_max);
                }
            }
            // Jitter: a crowd of phones coming back after an outage must not come back at once.
            let wait = delay.mul_f64(rand::rng().random_range(0.5..1.0));
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    c = self.cmds.recv() => match c {
                        None | Some(Command::Shutdown) => return,
                        Some(c) => self.command(c),
                    },
                }
            }
        }
    }

    async fn open(&mut self) -> Result<(transport::BoxStream, &'static str), Error> {
        let mut last = Error::Config("no endpoint configured".into());
        for ep in self.cfg.endpoints.clone() {
            match self.connector.open_with_quic(&ep).await {
                Ok((s, quic)) => {
                    self.link_quic = quic.map(|q| {
                        let seen = probe::path_challenges(Some(&q));
                        (q, seen)
                    });
                    self.endpoint = Some(ep.clone());
                    return Ok((s, ep.name()));
                }
                Err(e) => {
                    tracing::debug!(endpoint = ep.name(), error = %e, "endpoint unreachable, trying the next");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// One network connection, from CONNECT until it ends.
    async fn connection(&mut self, mut s: transport::BoxStream, name: &'static str) -> Ended {
        let mut rbuf = BytesMut::with_capacity(4096);
        self.session.set_keep_alive(self.hb.interval());
        self.quic_ping = None;
        self.planned_reconnect = false;
        self.session.connect(now());
        loop {
            self.start_probe();
            if self.session.has_transmit() {
                let out = self.session.take_transmit();
                if let Err(e) = s.write_all(&out).await {
                    return Ended::Lost(e.to_string());
                }
                if let Some(q) = self.quic_ping.as_mut() {
                    q.sent(now());
                }
            }
            if self.planned_reconnect && self.session.is_connected() {
                // DISCONNECT 0x00 keeps the session (its expiry is not zero) and sends no
                // will; unacknowledged messages are resent after the new CONNECT.
                self.session.disconnect(ReasonCode::Success);
                let out = self.session.take_transmit();
                let _ = s.write_all(&out).await;
                let _ = s.shutdown().await;
                return Ended::Planned(self.hb.interval());
            }
            // The session's timers, the end of the wait for a hint (probes may start), and
            // the QUIC heartbeat.
            let quic_timer = self
                .quic_ping
                .as_ref()
                .and_then(|q| q.deadline(self.cfg.ping_timeout));
            let timer = [self.session.poll_timeout(), self.hint_wait, quic_timer]
                .into_iter()
                .flatten()
                .min();
            let probe = &mut self.probe;
            let probed = async move {
                match probe {
                    Some(p) => (&mut p.task).await,
                    None => std::future::pending().await,
                }
            };
            let sleep = async move {
                match timer {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                c = self.cmds.recv() => match c {
                    None | Some(Command::Shutdown) => {
                        self.session.disconnect(ReasonCode::Success);
                        let out = self.session.take_transmit();
                        let _ = s.write_all(&out).await;
                        let _ = s.shutdown().await;
                        return Ended::Shutdown;
                    }
                    Some(c) => {
                        self.command(c);
                        Ok(())
                    }
                },
                r = s.read_buf(&mut rbuf) => match r {
                    Ok(0) => return Ended::Lost("closed by the broker".into()),
                    Err(e) => return Ended::Lost(e.to_string()),
                    Ok(_) => self.session.handle_read(now(), &mut rbuf),
                },
                _ = sleep => match self.quic_tick() {
                    Some(Tick::Dead) => return Ended::PingTimeout,
                    Some(Tick::Answered) => {
                        self.on_link_pong().await;
                        self.session.handle_timeout(now())
                    }
                    _ => self.session.handle_timeout(now()),
                },
                r = probed => {
                    self.probe_done(r).await;
                    Ok(())
                }
            };
            if let Err(e) = result {
                // A violation leaves a DISCONNECT to send before closing.
                let out = self.session.take_transmit();
                if !out.is_empty() {
                    let _ = s.write_all(&out).await;
                }
                let _ = s.shutdown().await;
                return ended_by(e);
            }
            if let Some(ended) = self.drain_events(name).await {
                return ended;
            }
        }
    }

    /// Hands the session's events to the app; `Some` when the app is gone.
    async fn drain_events(&mut self, transport: &'static str) -> Option<Ended> {
        while let Some(e) = self.session.poll_event() {
            match e {
                ClientEvent::Connected {
                    session_present,
                    limits,
                    ..
                } => {
                    self.on_connack_properties(&limits.user_properties);
                    if let Some(secs) = limits.server_keep_alive.filter(|&s| s > 0) {
                        // The broker holds the link to its own keep-alive: the heartbeat
                        // stays under it.
                        self.hb.set_ceiling(Duration::from_secs(u64::from(secs)));
                    }
                    self.link_keep_alive = self.session.keep_alive();
                    let quic_ping = self.cfg.quic_ping
                        && self.link_quic.is_some()
                        && limits.user_properties.iter().any(|(k, v)| {
                            k == switchboard_proto::QUIC_PING_PROPERTY && v.trim() == "1"
                        });
                    if quic_ping {
                        // The MQTT session pings no more: QUIC does.
                        self.quic_ping = Some(QuicPing::new(self.session.keep_alive(), now()));
                        self.session.set_keep_alive(Duration::ZERO);
                    }
                    let after = now() + self.hb.interval();
                    self.probe_paused_until = self.probe_paused_until.max(Some(after));
                    if !session_present {
                        self.resubscribe();
                    }
                    self.ask_hint();
                    let _ = self
                        .events
                        .send(Event::Connected {
                            transport,
                            session_present,
                            reconnects: self.reconnects,
                            quic_ping: self.quic_ping.is_some(),
                        })
                        .await;
                }
                ClientEvent::Message(p) if p.topic == switchboard_proto::HINT_TOPIC => {
                    self.on_hint(&p.payload);
                }
                ClientEvent::Message(p) => {
                    if self.events.send(Event::Message(p)).await.is_err() {
                        return Some(Ended::Shutdown);
                    }
                }
                ClientEvent::Published { pkid, code } => {
                    if code.is_error() {
                        tracing::warn!(pkid, %code, "the broker refused a publish");
                    }
                }
                ClientEvent::SubAck { pkid, codes } | ClientEvent::UnsubAck { pkid, codes } => {
                    if let Some(Pending {
                        done: Some(done), ..
                    }) = self.requests.remove(&pkid)
                    {
                        let _ = done.send(Ok(codes));
                    }
                }
                ClientEvent::Pong => self.on_link_pong().await,
            }
        }
        None
    }

    /// Applies an app command to the session (which sends now or when it can).
    fn command(&mut self, c: Command) {
        match c {
            Command::Subscribe { filter, opts, done } => {
                self.subs.retain(|(f, _)| *f != filter);
                self.subs.push((filter.clone(), opts));
                self.send_subscribe(filter, opts, done);
            }
            Command::Unsubscribe { filter, done } => {
                self.subs.retain(|(f, _)| *f != filter);
                match self.session.unsubscribe(now(), vec![filter]) {
                    Ok(pkid) => {
                        self.requests.insert(
                            pkid,
                            Pending {
                                subscribe: None,
                                done,
                            },
                        );
                    }
                    Err(e) => reply(done, e),
                }
            }
            Command::Publish(p, done) => {
                let r = self.session.publish(now(), *p).map(|_| ());
                let _ = done.send(r.map_err(request_error));
            }
            Command::SetNetwork(n) => {
                // A probe in flight measures the old network.
                if let Some(p) = self.probe.take() {
                    p.task.abort();
                }
                self.probe_paused_until = None;
                self.hint_wait = None;
                self.hb.set_network(now(), &n);
                let interval = self.hb.interval();
                self.set_link_interval(interval);
                if self.session.is_connected() {
                    self.announce(interval);
                    self.ask_hint();
                }
                // Best effort: a full event channel already stops the driver reading.
                let _ = self.events.try_send(Event::Heartbeat {
                    interval,
                    phase: self.hb.phase(),
                });
            }
            Command::Learned(reply) => {
                let _ = reply.send(self.hb.learned());
            }
            Command::Shutdown => {}
        }
    }

    fn send_subscribe(
        &mut self,
        filter: String,
        opts: SubscriptionOptions,
        done: Option<AckWaiter>,
    ) {
        match self
            .session
            .subscribe(now(), vec![(filter.clone(), opts)], Properties::default())
        {
            Ok(pkid) => {
                self.requests.insert(
                    pkid,
                    Pending {
                        subscribe: Some(filter),
                        done,
                    },
                );
            }
            Err(e) => reply(done, e),
        }
    }

    /// The broker lost the session: subscribe again to every remembered filter not already
    /// on its way (the session resends unanswered requests itself). Each SUBSCRIBE takes a
    /// fresh packet identifier from the session, never one in flight.
    fn resubscribe(&mut self) {
        let again: Vec<(String, SubscriptionOptions)> = self
            .subs
            .iter()
            .filter(|(f, _)| {
                !self
                    .requests
                    .values()
                    .any(|p| p.subscribe.as_deref() == Some(f.as_str()))
            })
            .cloned()
            .collect();
        for (filter, opts) in again {
            self.send_subscribe(filter, opts, None);
        }
    }
}

fn request_error(e: RequestError) -> Error {
    match e {
        RequestError::QueueFull => Error::QueueFull,
        other => Error::Request(other),
    }
}

fn reply(done: Option<AckWaiter>, e: RequestError) {
    if let Some(done) = done {
        let _ = done.send(Err(request_error(e)));
    }
}

fn ended_by(e: ClientError) -> Ended {
    match e {
        ClientError::PingTimeout => Ended::PingTimeout,
        ClientError::Refused { code, .. } => Ended::Lost(Error::Refused(code).to_string()),
        ClientError::Disconnected { code, .. } => {
            Ended::Lost(format!("broker disconnected us: {code}"))
        }
        ClientError::ConnAckTimeout => Ended::Lost("no CONNACK".into()),
        ClientError::Violation(v) => Ended::Lost(format!("bad packet from the broker: {v}")),
        other => Ended::Lost(other.to_string()),
    }
}
