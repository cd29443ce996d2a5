//! Helpers shared by the end-to-end tests: an in-process broker on a free loopback port, a
//! raw MQTT client built on `switchboard_proto` for byte-exact checks, and rumqttc wrappers.
//!
//! Every wait has a generous timeout so a broken broker fails a test instead of hanging it.

pub mod cluster;
pub mod console;
pub mod gateway_api;
pub mod http;
pub mod im;
pub mod im_groups;
pub mod im_rooms;
pub mod im_social;
pub mod nat;
pub mod nats;
pub mod postgres;
pub mod process;
pub mod push;
pub mod push_mocks;
pub mod raw;
pub mod transports;

/// The MQTT client the helpers wrap, for tests in other crates (tools/tests).
pub use rumqttc;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use switchboard_broker::{Broker, BrokerConfig, BrokerHandle};
use switchboard_proto::{Connect, Packet, Properties, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single expected event may take on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// A broker running inside the test process.
pub struct TestBroker {
    pub handle: BrokerHandle,
    pub addr: SocketAddr,
}

impl TestBroker {
    /// Anonymous access, `$SYS` off, on 127.0.0.1 with a free port.
    pub async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    /// The config of [`TestBroker::start`]: anonymous access, `$SYS` off, TCP on
    /// 127.0.0.1 with a free port.
    pub fn config() -> BrokerConfig {
        BrokerConfig {
            listeners: switchboard_broker::Listeners {
                tcp: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
                ..Default::default()
            },
            allow_anonymous: true,
            sys_interval: 0,
            ..BrokerConfig::default()
        }
    }

    /// Like [`TestBroker::start`], with the config adjusted by `f`.
    pub async fn start_with(f: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let mut cfg = Self::config();
        f(&mut cfg);
        let handle = Broker::new(cfg).start().await.expect("broker starts");
        let addr = handle.tcp_addrs()[0];
        TestBroker { handle, addr }
    }

    /// A broker whose state lives in `dir/switchboard.redb`, on the given port (0: any).
    pub async fn start_durable(
        dir: &std::path::Path,
        port: u16,
        f: impl FnOnce(&mut BrokerConfig),
    ) -> TestBroker {
        Self::start_durable_budget(dir, port, 0, f).await
    }

    /// Like [`TestBroker::start_durable`], with a disk budget in bytes (0: none).
    pub async fn start_durable_budget(
        dir: &std::path::Path,
        port: u16,
        budget: u64,
        f: impl FnOnce(&mut BrokerConfig),
    ) -> TestBroker {
        let mut cfg = BrokerConfig {
            listeners: switchboard_broker::Listeners {
                tcp: vec![SocketAddr::from(([127, 0, 0, 1], port))],
                ..Default::default()
            },
            allow_anonymous: true,
            sys_interval: 0,
            ..BrokerConfig::default()
        };
        f(&mut cfg);
        let store =
            switchboard_broker::store::redb::RedbStore::open(&dir.join("switchboard.redb"), budget)
                .expect("store opens");
        let handle = Broker::new(cfg)
            .with_store(std::sync::Arc::new(store))
            .start()
            .await
            .expect("broker starts");
        let addr = handle.tcp_addrs()[0];
        TestBroker { handle, addr }
    }

    /// Shuts down and releases everything (the store file included).
    pub async fn stop(self) {
        self.handle.shutdown().await;
        let state = std::sync::Arc::downgrade(self.handle.state());
        drop(self.handle);
        // Connection tasks may still be dropping their last references.
        for _ in 0..200 {
            if state.upgrade().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("broker state still referenced after shutdown");
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Waits until the broker has noticed that `client_id`'s connection ended (its session
    /// parked or gone), instead of sleeping and hoping.
    pub async fn until_offline(&self, client_id: &str) {
        until_offline(self.handle.state(), client_id).await;
    }
}

/// Waits until no connection holds `client_id`'s session; panics after [`WAIT`].
pub async fn until_offline(state: &switchboard_broker::BrokerState, client_id: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while state.client_online(client_id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{client_id} still connected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until exactly `n` MQTT connections are parked (quiet connections park after
/// `park_after_ms`); panics after [`WAIT`].
pub async fn until_parked(state: &switchboard_broker::BrokerState, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let parked = &state.metrics.connections_parked;
    while parked.load(std::sync::atomic::Ordering::Relaxed) != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} connections parked, waiting for {n}",
            parked.load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the Python script `tests/py/{script}` with `args` and asserts that it exited 0 and
/// printed its closing `N passed, 0 failed` line; returns its output.
pub async fn run_python_suite(script: &str, args: Vec<String>) -> String {
    let path = format!("{}/py/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(path)
            .args(args)
            .output()
    })
    .await
    .expect("join")
    .expect("python3 runs (bash tests/run.sh installs what the scripts need)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    stdout
}

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("sb-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A bare MQTT client speaking through our codec: for tests that need exact packets.
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    pub version: Version,
}

impl RawClient {
    /// Opens a TCP connection without sending anything.
    pub async fn open(addr: SocketAddr, version: Version) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        // Small packets back and forth: no Nagle delay (it costs ~40 ms per round trip).
        let _ = stream.set_nodelay(true);
        RawClient {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    /// Opens and sends CONNECT; returns the client and the broker's CONNACK.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> (RawClient, Packet) {
        let mut c = RawClient::open(addr, connect.version).await;
        c.send(&Packet::Connect(Box::new(connect))).await;
        let ack = c.recv().await.expect("CONNACK");
        (c, ack)
    }

    /// Like [`RawClient::connect`], but `None` instead of a panic if the broker closes.
    pub async fn connect_or_closed(
        addr: SocketAddr,
        connect: Connect,
    ) -> (RawClient, Option<Packet>) {
        let mut c = RawClient::open(addr, connect.version).await;
        c.send(&Packet::Connect(Box::new(connect))).await;
        let ack = c.recv().await;
        (c, ack)
    }

    pub async fn send(&mut self, p: &Packet) {
        let mut b = BytesMut::new();
        p.encode(self.version, &mut b);
        self.send_bytes(&b).await;
    }

    /// Writes raw bytes; a broker that already closed the connection is not an error here.
    pub async fn send_bytes(&mut self, b: &[u8]) {
        let _ = self.stream.write_all(b).await;
    }

    /// Next packet, or `None` when the broker closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, self.recv_inner())
            .await
            .expect("timed out waiting for a packet")
    }

    /// Next packet within `d`; `Err` on timeout.
    pub async fn recv_within(&mut self, d: Duration) -> Result<Option<Packet>, ()> {
        tokio::time::timeout(d, self.recv_inner())
            .await
            .map_err(|_| ())
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = Packet::read(&mut self.buf, self.version, usize::MAX)
                .expect("broker sends well-formed packets")
            {
                return Some(p);
            }
            let n = self.stream.read_buf(&mut self.buf).await.ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    /// Next PUBLISH, skipping other packets; panics if the connection closes.
    pub async fn next_publish(&mut self) -> switchboard_proto::Publish {
        loop {
            match self.recv().await {
                Some(Packet::Publish(p)) => return p,
                Some(_) => {}
                None => panic!("connection closed while waiting for PUBLISH"),
            }
        }
    }

    /// Asserts the broker closes the connection (after any packets, which are returned).
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        while let Some(p) = self.recv().await {
            seen.push(p);
        }
        seen
    }
}

/// A CONNECT with the usual defaults.
pub fn connect_packet(version: Version, client_id: &str) -> Connect {
    Connect {
        version,
        client_id: client_id.into(),
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        will: None,
        username: None,
        password: None,
    }
}

/// A CONNECT (MQTT 5) resuming a persistent session: clean start off, `expiry` seconds.
pub fn persistent_connect(client_id: &str, expiry: u32) -> Connect {
    Connect {
        clean_start: false,
        properties: Properties {
            session_expiry_interval: Some(expiry),
            ..Properties::default()
        },
        ..connect_packet(Version::V5, client_id)
    }
}

/// The part of the rumqttc wrappers that is the same for v4 and v5: a client whose event
/// loop runs in a task forwarding incoming packets to a channel.
macro_rules! event_client {
    ($client:ty, $event:path, $options:ty, $packet:ty, $pingresp:pat, $connack:pat) => {
        pub struct Client {
            pub client: $client,
            pub events: tokio::sync::mpsc::UnboundedReceiver<$packet>,
            task: tokio::task::JoinHandle<()>,
        }

        impl Client {
            /// Connects and waits for CONNACK; `tune` adjusts the options first.
            pub async fn connect(port: u16, id: &str, tune: impl FnOnce(&mut $options)) -> Client {
                let mut opts = <$options>::new(id, "127.0.0.1", port);
                opts.set_keep_alive(std::time::Duration::from_secs(30));
                tune(&mut opts);
                let (client, mut el) = <$client>::new(opts, 100);
                let (tx, events) = tokio::sync::mpsc::unbounded_channel();
                let task = tokio::spawn(async move {
                    while let Ok(ev) = el.poll().await {
                        use $event as Ev;
                        if let Ev::Incoming(p) = ev
                            && tx.send(p).is_err()
                        {
                            return;
                        }
                    }
                });
                let mut c = Client {
                    client,
                    events,
                    task,
                };
                match c.next().await {
                    $connack => c,
                    other => panic!("expected CONNACK, got {other:?}"),
                }
            }

            /// Next incoming packet (PINGRESP skipped).
            pub async fn next(&mut self) -> $packet {
                loop {
                    let p = tokio::time::timeout(super::WAIT, self.events.recv())
                        .await
                        .expect("timed out waiting for a packet")
                        .expect("event loop ended");
                    if !matches!(p, $pingresp) {
                        return p;
                    }
                }
            }

            /// Drops the connection without DISCONNECT (as a crash or lost network would).
            pub fn kill(self) {
                self.task.abort();
            }
        }
    };
}

/// rumqttc MQTT 5 client whose events are forwarded to a channel.
pub mod v5 {
    use std::time::Duration;

    use rumqttc::v5::mqttbytes::v5::Packet;

    event_client!(
        rumqttc::v5::AsyncClient,
        rumqttc::v5::Event,
        rumqttc::v5::MqttOptions,
        Packet,
        Packet::PingResp(_),
        Packet::ConnAck(_)
    );

    impl Client {
        /// Next PUBLISH, skipping acknowledgements.
        pub async fn next_publish(&mut self) -> rumqttc::v5::mqttbytes::v5::Publish {
            loop {
                if let Packet::Publish(p) = self.next().await {
                    return p;
                }
            }
        }

        /// Next SUBACK.
        pub async fn suback(&mut self) -> rumqttc::v5::mqttbytes::v5::SubAck {
            loop {
                if let Packet::SubAck(s) = self.next().await {
                    return s;
                }
            }
        }

        /// True if no PUBLISH arrives within `d`.
        pub async fn quiet_for(&mut self, d: Duration) -> bool {
            let deadline = tokio::time::Instant::now() + d;
            loop {
                match tokio::time::timeout_at(deadline, self.events.recv()).await {
                    Err(_) => return true,
                    Ok(Some(Packet::Publish(_))) => return false,
                    Ok(Some(_)) => {}
                    Ok(None) => return true,
                }
            }
        }
    }
}

/// rumqttc MQTT 3.1.1 client whose events are forwarded to a channel.
pub mod v4 {
    use rumqttc::Packet;

    event_client!(
        rumqttc::AsyncClient,
        rumqttc::Event,
        rumqttc::MqttOptions,
        Packet,
        Packet::PingResp,
        Packet::ConnAck(_)
    );

    impl Client {
        pub async fn next_publish(&mut self) -> rumqttc::Publish {
            loop {
                if let Packet::Publish(p) = self.next().await {
                    return p;
                }
            }
        }
    }
}
