//! The Switchboard client SDK for mobile and desktop apps.
//!
//! One [`Client`] holds one logical MQTT 5 session across many network connections:
//! - it connects over QUIC first and falls back to TLS (then TCP) when UDP is blocked;
//! - it reconnects by itself with jittered exponential back-off, resumes the session
//!   (clean start off, session expiry on) and re-subscribes if the broker lost it;
//! - publishes made while offline wait in a bounded queue; unacknowledged QoS 1 publishes
//!   are sent again (DUP) after a reconnect;
//! - the [`heartbeat`] learns how long the network lets an idle connection live and pings
//!   just often enough, telling the broker each new interval on
//!   [`switchboard_proto::KEEP_ALIVE_TOPIC`] so its dead-client detection follows.
//!
//! Modules: [`heartbeat`] (pure state machine), [`transport`] (QUIC/TLS/TCP streams).

pub mod heartbeat;
pub mod transport;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::Rng;
use switchboard_proto::{
    Connect, Disconnect, Packet, Properties, PubResponse, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, Version,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

pub use heartbeat::{Heartbeat, HeartbeatConfig, Phase};
pub use transport::Endpoint;

/// Errors of the SDK.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("transport: {0}")]
    Transport(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("the broker refused the connection: {0}")]
    Refused(ReasonCode),
    #[error("offline queue full")]
    QueueFull,
    #[error("the client was shut down")]
    Closed,
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub client_id: String,
    /// Tried in order on every (re)connect.
    pub endpoints: Vec<Endpoint>,
    /// TLS server name (certificate name) for QUIC and TLS.
    pub server_name: String,
    /// CA certificate (PEM) trusted for QUIC and TLS.
    pub ca_cert: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// Session Expiry Interval asked for (seconds).
    pub session_expiry: u32,
    pub heartbeat: HeartbeatConfig,
    /// How long a PINGREQ may wait for PINGRESP before the link counts as dead.
    pub ping_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Publishes kept while offline; more are refused with [`Error::QueueFull`].
    pub offline_queue: usize,
}

impl Config {
    pub fn new(client_id: &str, endpoints: Vec<Endpoint>) -> Self {
        Config {
            client_id: client_id.to_owned(),
            endpoints,
            server_name: "localhost".into(),
            ca_cert: None,
            username: None,
            password: None,
            session_expiry: 7 * 24 * 3600,
            heartbeat: HeartbeatConfig::default(),
            ping_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            offline_queue: 1000,
        }
    }
}

/// What the app hears from the client.
#[derive(Debug, Clone)]
pub enum Event {
    Connected {
        transport: &'static str,
        session_present: bool,
        /// Connections made before this one.
        reconnects: u32,
    },
    Message(Box<Publish>),
    Disconnected {
        reason: String,
    },
    /// The heartbeat interval changed (announced to the broker).
    Heartbeat {
        interval: Duration,
        phase: Phase,
    },
}

/// Tells the app its publish was sent or queued.
type Done = oneshot::Sender<Result<(), Error>>;

enum Command {
    Subscribe(String, QoS),
    Publish(Box<Publish>, Done),
    SetNetwork(String),
    Shutdown,
}

/// Handle to a running client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    cmds: mpsc::Sender<Command>,
}

impl Client {
    /// Starts the client in the background; events arrive on the returned receiver (keep
    /// reading it: when it is full the client stops reading from the network).
    pub fn start(cfg: Config) -> Result<(Client, mpsc::Receiver<Event>), Error> {
        let connector =
            transport::Connector::new(cfg.ca_cert.as_ref(), &cfg.server_name, cfg.connect_timeout)?;
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (ev_tx, ev_rx) = mpsc::channel(1024);
        let driver = Driver {
            hb: Heartbeat::new(cfg.heartbeat.clone()),
            cfg,
            connector,
            subs: Vec::new(),
            unacked: BTreeMap::new(),
            offline: VecDeque::new(),
            next_pkid: 1,
            events: ev_tx,
            cmds: cmd_rx,
            reconnects: 0,
        };
        tokio::spawn(driver.run());
        Ok((Client { cmds: cmd_tx }, ev_rx))
    }

    /// Subscribes now and again after every reconnect that lost the session.
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), Error> {
        self.cmds
            .send(Command::Subscribe(filter.to_owned(), qos))
            .await
            .map_err(|_| Error::Closed)
    }

    /// Publishes; while offline the message waits in the offline queue. Returns once it was
    /// sent or queued.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Result<(), Error> {
        let p = Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.to_owned(),
            pkid: 0,
            properties: Properties::default(),
            payload: payload.into(),
        };
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::Publish(Box::new(p), tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Tells the heartbeat which network the device is on now (e.g. a Wi-Fi SSID or
    /// "cellular"): it resumes what it learned there.
    pub async fn set_network(&self, name: &str) -> Result<(), Error> {
        self.cmds
            .send(Command::SetNetwork(name.to_owned()))
            .await
            .map_err(|_| Error::Closed)
    }

    /// Disconnects cleanly and stops.
    pub async fn shutdown(&self) {
        let _ = self.cmds.send(Command::Shutdown).await;
    }
}

/// Why a connection ended.
enum Ended {
    Shutdown,
    /// No PINGRESP after an idle period: the network forgot the connection.
    PingTimeout,
    Lost(String),
}

struct Driver {
    cfg: Config,
    connector: transport::Connector,
    hb: Heartbeat,
    subs: Vec<(String, QoS)>,
    /// Outgoing QoS 1/2 publishes awaiting acknowledgement, by packet id.
    unacked: BTreeMap<u16, Publish>,
    offline: VecDeque<(Box<Publish>, Done)>,
    next_pkid: u16,
    events: mpsc::Sender<Event>,
    cmds: mpsc::Receiver<Command>,
    reconnects: u32,
}

impl Driver {
    async fn run(mut self) {
        let mut delay = self.cfg.backoff_min;
        loop {
            match self.connect().await {
                Ok((stream, name)) => {
                    let ended = self.session(stream, name).await;
                    self.reconnects += 1;
                    let reason = match ended {
                        Ended::Shutdown => return,
                        Ended::PingTimeout => {
                            let interval = self.hb.on_timeout();
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
                        Some(c) => self.offline_command(c),
                    },
                }
            }
        }
    }

    fn offline_command(&mut self, c: Command) {
        match c {
            Command::Subscribe(f, q) => self.remember_sub(f, q),
            Command::Publish(p, done) => {
                if self.offline.len() >= self.cfg.offline_queue {
                    let _ = done.send(Err(Error::QueueFull));
                } else {
                    self.offline.push_back((p, done));
                }
            }
            Command::SetNetwork(n) => self.hb.set_network(&n),
            Command::Shutdown => {}
        }
    }

    fn remember_sub(&mut self, f: String, q: QoS) {
        self.subs.retain(|(x, _)| *x != f);
        self.subs.push((f, q));
    }

    async fn connect(&mut self) -> Result<(transport::BoxStream, &'static str), Error> {
        let mut last = Error::Config("no endpoint configured".into());
        for ep in self.cfg.endpoints.clone() {
            match self.connector.open(&ep).await {
                Ok(s) => return Ok((s, ep.name())),
                Err(e) => {
                    tracing::debug!(endpoint = ep.name(), error = %e, "endpoint unreachable, trying the next");
                    last = e;
                }
            }
        }
        Err(last)
    }

    fn alloc_pkid(&mut self) -> u16 {
        loop {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
            if !self.unacked.contains_key(&id) {
                return id;
            }
        }
    }

    async fn session(&mut self, mut s: transport::BoxStream, name: &'static str) -> Ended {
        let mut rbuf = BytesMut::with_capacity(4096);
        let mut out = BytesMut::new();
        let keep_alive = self.hb.interval().as_secs_f64().ceil() as u16;
        Packet::Connect(Box::new(Connect {
            version: Version::V5,
            client_id: self.cfg.client_id.clone(),
            clean_start: false,
            keep_alive,
            properties: Properties {
                session_expiry_interval: Some(self.cfg.session_expiry),
                ..Properties::default()
            },
            will: None,
            username: self.cfg.username.clone(),
            password: self.cfg.password.clone(),
        }))
        .encode(Version::V5, &mut out);
        if let Err(e) = s.write_all(&out).await {
            return Ended::Lost(e.to_string());
        }
        out.clear();
        let ack =
            tokio::time::timeout(self.cfg.connect_timeout, read_packet(&mut s, &mut rbuf)).await;
        let session_present = match ack {
            Ok(Ok(Packet::ConnAck(a))) if a.code == ReasonCode::Success => a.session_present,
            Ok(Ok(Packet::ConnAck(a))) => return Ended::Lost(Error::Refused(a.code).to_string()),
            Ok(Ok(other)) => return Ended::Lost(format!("expected CONNACK, got {}", other.name())),
            Ok(Err(e)) => return Ended::Lost(e.to_string()),
            Err(_) => return Ended::Lost("no CONNACK".into()),
        };
        if !session_present {
            for (i, (f, q)) in self.subs.iter().enumerate() {
                encode_subscribe(&mut out, i as u16 + 1, f, *q);
            }
        }
        // Unacknowledged publishes go again, with DUP, in their original order.
        for p in self.unacked.values_mut() {
            p.dup = true;
            Packet::Publish(p.clone()).encode(Version::V5, &mut out);
        }
        while let Some((p, done)) = self.offline.pop_front() {
            self.send_publish(p, &mut out);
            let _ = done.send(Ok(()));
        }
        if let Err(e) = s.write_all(&out).await {
            return Ended::Lost(e.to_string());
        }
        out.clear();
        let _ = self
            .events
            .send(Event::Connected {
                transport: name,
                session_present,
                reconnects: self.reconnects,
            })
            .await;

        let mut last_activity = Instant::now();
        let mut awaiting_pong: Option<Instant> = None;
        loop {
            let deadline = match awaiting_pong {
                Some(sent) => sent + self.cfg.ping_timeout,
                None => last_activity + self.hb.interval(),
            };
            tokio::select! {
                c = self.cmds.recv() => match c {
                    None | Some(Command::Shutdown) => {
                        Packet::Disconnect(Disconnect::new(ReasonCode::Success)).encode(Version::V5, &mut out);
                        let _ = s.write_all(&out).await;
                        let _ = s.shutdown().await;
                        return Ended::Shutdown;
                    }
                    Some(Command::Subscribe(f, q)) => {
                        encode_subscribe(&mut out, self.alloc_pkid(), &f, q);
                        self.remember_sub(f, q);
                    }
                    Some(Command::Publish(p, done)) => {
                        self.send_publish(p, &mut out);
                        let _ = done.send(Ok(()));
                    }
                    Some(Command::SetNetwork(n)) => {
                        self.hb.set_network(&n);
                        announce(&mut out, self.hb.interval());
                    }
                },
                r = s.read_buf(&mut rbuf) => match r {
                    Ok(0) => return Ended::Lost("closed by the broker".into()),
                    Err(e) => return Ended::Lost(e.to_string()),
                    Ok(_) => {
                        last_activity = Instant::now();
                        loop {
                            let p = match Packet::read(&mut rbuf, Version::V5, usize::MAX) {
                                Ok(Some(p)) => p,
                                Ok(None) => break,
                                Err(e) => return Ended::Lost(format!("bad packet from the broker: {e}")),
                            };
                            match p {
                                Packet::Publish(p) => {
                                    match p.qos {
                                        QoS::AtMostOnce => {}
                                        QoS::AtLeastOnce => Packet::PubAck(PubResponse::new(p.pkid)).encode(Version::V5, &mut out),
                                        QoS::ExactlyOnce => Packet::PubRec(PubResponse::new(p.pkid)).encode(Version::V5, &mut out),
                                    }
                                    if self.events.send(Event::Message(Box::new(p))).await.is_err() {
                                        return Ended::Shutdown;
                                    }
                                }
                                Packet::PubRel(r) => Packet::PubComp(PubResponse::new(r.pkid)).encode(Version::V5, &mut out),
                                Packet::PubAck(r) | Packet::PubComp(r) => {
                                    self.unacked.remove(&r.pkid);
                                }
                                Packet::PubRec(r) => Packet::PubRel(PubResponse::new(r.pkid)).encode(Version::V5, &mut out),
                                Packet::PingResp => {
                                    if awaiting_pong.take().is_some()
                                        && let Some(next) = self.hb.on_pong()
                                    {
                                        announce(&mut out, next);
                                        let _ = self.events.send(Event::Heartbeat { interval: next, phase: self.hb.phase() }).await;
                                    }
                                }
                                Packet::Disconnect(d) => return Ended::Lost(format!("broker disconnected us: {}", d.code)),
                                _ => {}
                            }
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if awaiting_pong.is_some() {
                        return Ended::PingTimeout;
                    }
                    Packet::PingReq.encode(Version::V5, &mut out);
                    awaiting_pong = Some(Instant::now());
                }
            }
            if !out.is_empty() {
                if let Err(e) = s.write_all(&out).await {
                    return Ended::Lost(e.to_string());
                }
                out.clear();
                if awaiting_pong.is_none() {
                    last_activity = Instant::now();
                }
            }
        }
    }

    fn send_publish(&mut self, mut p: Box<Publish>, out: &mut BytesMut) {
        if p.qos != QoS::AtMostOnce {
            p.pkid = self.alloc_pkid();
            self.unacked.insert(p.pkid, (*p).clone());
        }
        p.encode(Version::V5, out);
    }
}

fn encode_subscribe(out: &mut BytesMut, pkid: u16, filter: &str, qos: QoS) {
    Packet::Subscribe(Subscribe {
        pkid,
        properties: Properties::default(),
        filters: vec![(
            filter.to_owned(),
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
        )],
    })
    .encode(Version::V5, out);
}

/// Tells the broker the heartbeat interval now in use.
fn announce(out: &mut BytesMut, interval: Duration) {
    let secs = interval.as_secs_f64().ceil().max(1.0) as u16;
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: switchboard_proto::KEEP_ALIVE_TOPIC.into(),
        pkid: 0,
        properties: Properties::default(),
        payload: Bytes::from(secs.to_string()),
    })
    .encode(Version::V5, out);
}

async fn read_packet(s: &mut transport::BoxStream, rbuf: &mut BytesMut) -> Result<Packet, Error> {
    loop {
        if let Some(p) = Packet::read(rbuf, Version::V5, usize::MAX)
            .map_err(|e| Error::Protocol(e.to_string()))?
        {
            return Ok(p);
        }
        if s.read_buf(rbuf).await? == 0 {
            return Err(Error::Transport("connection closed".into()));
        }
    }
}
