//! The Switchboard client SDK for mobile and desktop apps.
//!
//! One [`Client`] holds one logical MQTT 5 session across many network connections:
//! - it connects over QUIC first and falls back to TLS (then TCP) when UDP is blocked;
//! - it reconnects by itself with jittered exponential back-off, resumes the session
//!   (clean start off, session expiry on) and re-subscribes if the broker lost it;
//! - publishes made while offline, or beyond the broker's Receive Maximum, wait in a bounded
//!   queue; unacknowledged QoS 1/2 publishes are sent again (DUP) after a reconnect;
//! - subscribes and unsubscribes can be awaited until the broker's SUBACK/UNSUBACK;
//! - the [`heartbeat`] learns how long each network lets an idle connection live (on
//!   disposable probe connections, so learning never costs the link) and pings just often
//!   enough, telling the broker each new interval on [`switchboard_proto::KEEP_ALIVE_TOPIC`]
//!   so its dead-client detection follows.
//!
//! The protocol itself (packet ids, windows, QoS flows, keep-alive, limits) is
//! [`switchboard_proto::session::ClientSession`]; this crate only moves its bytes.
//!
//! Modules: [`heartbeat`] (pure state machine and its simulation), [`im`] (the IM API),
//! [`requests`] (MQTT 5 request/response correlation, shared with the gateway),
//! [`transport`] (QUIC/TLS/TCP streams), `driver` (the background task: reconnects and I/O
//! around the session), `probe` (the heartbeat's disposable probe connections).

mod driver;
pub use driver::sink::Handler as EventHandler;
pub mod heartbeat;
pub mod im;
mod im_calls;
mod im_gaps;
mod im_groups;
mod im_org;
mod im_rooms;
mod im_social;
mod probe;
pub mod requests;

pub mod transport;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::session::RequestError;
use switchboard_proto::{Properties, Publish, QoS, ReasonCode, SubscriptionOptions};
use tokio::sync::{mpsc, oneshot};

pub use heartbeat::{AdaptivePolicy, Heartbeat, HeartbeatConfig, MarsPolicy, Phase, Policy};
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
    /// The request itself is not valid (topic, size against the broker's maximum...).
    #[error("request refused: {0}")]
    Request(RequestError),
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
    /// Heartbeat intervals learned earlier, per network (as returned by
    /// [`Client::learned_heartbeats`] and saved by the app): those networks start settled.
    pub learned_heartbeats: Vec<(String, Duration)>,
    /// How long a PINGREQ may wait for PINGRESP before the link counts as dead.
    pub ping_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Publishes kept while offline or beyond the broker's Receive Maximum; more are
    /// refused with [`Error::QueueFull`].
    pub offline_queue: usize,
    /// Largest packet accepted from the broker (announced in CONNECT); a larger one ends the
    /// connection with DISCONNECT 0x95 and the client reconnects.
    pub max_packet_size: u32,
    /// Over QUIC, keep the link alive with QUIC-level pings instead of MQTT PINGREQ when
    /// the broker counts them as keep-alive (its CONNACK says `sb-quic-ping`): about 120 B
    /// an exchange instead of 200 B. On by default.
    pub quic_ping: bool,
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
            learned_heartbeats: Vec::new(),
            ping_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            offline_queue: 1000,
            max_packet_size: 1024 * 1024,
            quic_ping: true,
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
        /// The link keeps alive with QUIC pings instead of MQTT PINGREQ
        /// ([`Config::quic_ping`]).
        quic_ping: bool,
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
    /// A heartbeat probe connection idled for `idle`, then pinged: `answered` or not.
    Probe {
        idle: Duration,
        answered: bool,
    },
}

/// Answers an awaited SUBSCRIBE/UNSUBSCRIBE with the broker's reason codes.
type AckWaiter = oneshot::Sender<Result<Vec<ReasonCode>, Error>>;

enum Command {
    Subscribe {
        filter: String,
        opts: SubscriptionOptions,
        done: Option<AckWaiter>,
    },
    Unsubscribe {
        filter: String,
        done: Option<AckWaiter>,
    },
    /// Answered once the message was sent or queued.
    Publish(Box<Publish>, oneshot::Sender<Result<(), Error>>),
    SetNetwork(String),
    Learned(oneshot::Sender<Vec<(String, Duration)>>),
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
        // Bounded both ways: a caller issuing commands faster than the driver takes them
        // waits in `send`; a full event channel stops the driver reading the network.
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (ev_tx, ev_rx) = mpsc::channel(1024);
        let events = driver::sink::Events::Channel(ev_tx);
        tokio::spawn(driver::Driver::new(cfg, connector, cmd_rx, events).run());
        Ok((Client { cmds: cmd_tx }, ev_rx))
    }

    /// Like [`Client::start`], but events go to `handler`, called on the client's own task
    /// as each arrives (no second task, no queue). It must not block; it returns false once
    /// its app is gone, which stops the client.
    pub fn start_inline(cfg: Config, handler: EventHandler) -> Result<Client, Error> {
        let connector =
            transport::Connector::new(cfg.ca_cert.as_ref(), &cfg.server_name, cfg.connect_timeout)?;
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let events = driver::sink::Events::Inline(handler);
        tokio::spawn(driver::Driver::new(cfg, connector, cmd_rx, events).run());
        Ok(Client { cmds: cmd_tx })
    }

    /// Subscribes now (or on the next connection) and again after every reconnect that lost
    /// the session. Returns once the request is queued; see [`Client::subscribe_acked`].
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), Error> {
        self.command(Command::Subscribe {
            filter: filter.to_owned(),
            opts: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
            done: None,
        })
        .await
    }

    /// Like [`Client::subscribe`], but returns the broker's SUBACK reason codes (one per
    /// filter: granted QoS, or why it was refused). While offline it waits for a connection.
    pub async fn subscribe_acked(&self, filter: &str, qos: QoS) -> Result<Vec<ReasonCode>, Error> {
        let opts = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        self.subscribe_with(filter, opts).await
    }

    /// Like [`Client::subscribe_acked`], with every subscription option (No Local, Retain
    /// As Published, Retain Handling) as given; they are kept for re-subscribing.
    pub async fn subscribe_with(
        &self,
        filter: &str,
        opts: SubscriptionOptions,
    ) -> Result<Vec<ReasonCode>, Error> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Subscribe {
            filter: filter.to_owned(),
            opts,
            done: Some(tx),
        })
        .await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Unsubscribes (and stops re-subscribing after reconnects). Returns once queued.
    pub async fn unsubscribe(&self, filter: &str) -> Result<(), Error> {
        self.command(Command::Unsubscribe {
            filter: filter.to_owned(),
            done: None,
        })
        .await
    }

    /// Like [`Client::unsubscribe`], but returns the UNSUBACK reason codes.
    pub async fn unsubscribe_acked(&self, filter: &str) -> Result<Vec<ReasonCode>, Error> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Unsubscribe {
            filter: filter.to_owned(),
            done: Some(tx),
        })
        .await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Publishes; while offline, or while the broker's Receive Maximum is reached, the
    /// message waits in the offline queue. Returns once it was sent or queued.
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
        self.command(Command::Publish(Box::new(p), tx)).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Publishes a complete PUBLISH (properties such as Response Topic and Correlation
    /// Data included; the packet id is assigned by the session). Like [`Client::publish`].
    pub async fn publish_message(&self, p: Publish) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Publish(Box::new(p), tx)).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Tells the heartbeat which network the device is on now (e.g. a Wi-Fi SSID or
    /// "cellular"): it resumes what it learned there.
    pub async fn set_network(&self, name: &str) -> Result<(), Error> {
        self.command(Command::SetNetwork(name.to_owned())).await
    }

    /// The heartbeat interval learned on each network so far (the longest idle interval a
    /// probe proved there), for the app to save and give back in
    /// [`Config::learned_heartbeats`] after a restart.
    pub async fn learned_heartbeats(&self) -> Result<Vec<(String, Duration)>, Error> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Learned(tx)).await?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Disconnects cleanly and stops.
    pub async fn shutdown(&self) {
        let _ = self.cmds.send(Command::Shutdown).await;
    }

    async fn command(&self, c: Command) -> Result<(), Error> {
        self.cmds.send(c).await.map_err(|_| Error::Closed)
    }
}
