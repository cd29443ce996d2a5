//! IM test helpers: a broker with the IM service and a real store on disk, tenants and
//! users made through the service, and devices logged in with the SDK over TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_broker::im::ImService;
use switchboard_broker::store::redb::RedbStore;
use switchboard_broker::{Broker, BrokerConfig, BrokerHandle};
use switchboard_client::im::{ImClient, ImEvent};
use switchboard_client::{Config, Endpoint};
use switchboard_proto::im;
use switchboard_proto::{Packet, Properties, ReasonCode, Subscribe, SubscriptionOptions, Version};
use tokio::sync::mpsc;

use crate::{RawClient, TempDir, WAIT, connect_packet};

/// Password of the service credential in tests.
pub const SERVICE_SECRET: &str = "test-service-secret";

/// A broker with the IM service, its state in a temporary redb file.
pub struct ImBroker {
    pub handle: BrokerHandle,
    pub addr: SocketAddr,
    pub im: Arc<ImService>,
    pub dir: Arc<TempDir>,
}

impl ImBroker {
    pub async fn start() -> ImBroker {
        Self::start_in(Arc::new(TempDir::new("im")), 0).await
    }

    /// Starts on `dir`'s store (reopened after a restart), on `port` (0: any).
    pub async fn start_in(dir: Arc<TempDir>, port: u16) -> ImBroker {
        Self::start_configured(dir, port, |_| {}).await
    }

    /// Starts with the test configuration changed by `tweak` (e.g. a smaller limit).
    pub async fn start_with(tweak: impl FnOnce(&mut BrokerConfig)) -> ImBroker {
        Self::start_configured(Arc::new(TempDir::new("im")), 0, tweak).await
    }

    async fn start_configured(
        dir: Arc<TempDir>,
        port: u16,
        tweak: impl FnOnce(&mut BrokerConfig),
    ) -> ImBroker {
        let mut cfg = BrokerConfig {
            listeners: switchboard_broker::Listeners {
                tcp: vec![SocketAddr::from(([127, 0, 0, 1], port))],
                ..Default::default()
            },
            allow_anonymous: true,
            sys_interval: 0,
            ..BrokerConfig::default()
        };
        tweak(&mut cfg);
        let store = Arc::new(
            RedbStore::open(&dir.path().join("switchboard.redb"), 0).expect("store opens"),
        );
        let im = ImService::new(store.clone(), Some(SERVICE_SECRET.into()));
        let handle = Broker::new(cfg)
            .with_store(store)
            .with_im(im.clone())
            .start()
            .await
            .expect("broker starts");
        let addr = handle.tcp_addrs()[0];
        ImBroker {
            handle,
            addr,
            im,
            dir,
        }
    }

    /// A new tenant; returns its id.
    pub async fn tenant(&self, name: &str) -> u64 {
        self.im.create_tenant(name, None).await.expect("tenant").id
    }

    /// A new user of `tenant`; returns its uid.
    pub async fn user(&self, tenant: u64, account: &str) -> u64 {
        self.im
            .create_user(tenant, account, "", None, false)
            .await
            .expect("user")
            .uid
    }

    /// Logs a new device of `account` in with a fresh token.
    pub async fn device(&self, tenant: u64, account: &str, client_id: &str) -> Device {
        let token = self
            .im
            .issue_token(tenant, account, "", 3600)
            .expect("token");
        Device::connect(self.addr, account, client_id, &token).await
    }

    pub async fn stop(self) {
        self.handle.shutdown().await;
    }
}

/// A logged-in device and its event stream.
pub struct Device {
    pub client: ImClient,
    pub events: mpsc::Receiver<ImEvent>,
}

impl Device {
    pub async fn connect(addr: SocketAddr, account: &str, client_id: &str, token: &str) -> Device {
        let (client, events) = ImClient::connect(config(addr, account, client_id, token))
            .await
            .expect("IM login");
        Device { client, events }
    }

    /// The next IM event that `pick` accepts, skipping others; panics after [`WAIT`].
    pub async fn next<T>(&mut self, mut pick: impl FnMut(&im::event::Kind) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("IM event within the wait")
                .expect("event stream open");
            if let ImEvent::Event(e) = ev
                && let Some(k) = &e.kind
                && let Some(t) = pick(k)
            {
                return t;
            }
        }
    }

    /// The next message event.
    pub async fn message(&mut self) -> im::Message {
        self.next(|k| match k {
            im::event::Kind::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// The next unread event.
    pub async fn unread(&mut self) -> im::Unread {
        self.next(|k| match k {
            im::event::Kind::Unread(u) => Some(u.clone()),
            _ => None,
        })
        .await
    }

    /// No IM event arrives within `d` (for negative checks).
    pub async fn quiet_for(&mut self, d: Duration) -> Option<ImEvent> {
        tokio::time::timeout(d, self.events.recv())
            .await
            .ok()
            .flatten()
    }
}

/// SDK settings for a device on plain TCP with a token.
pub fn config(addr: SocketAddr, account: &str, client_id: &str, token: &str) -> Config {
    let mut cfg = Config::new(client_id, vec![Endpoint::Tcp(addr)]);
    cfg.username = Some(account.to_owned());
    cfg.password = Some(token.to_owned().into_bytes().into());
    cfg.session_expiry = 0;
    cfg.backoff_min = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(500);
    cfg
}

/// A text content.
pub fn text(t: &str) -> im::Content {
    im::Content {
        body: Some(im::content::Body::Text(im::Text { text: t.into() })),
    }
}

/// The text of a message ("" if it is not text).
pub fn text_of(m: &im::Message) -> &str {
    match m.content.as_ref().and_then(|c| c.body.as_ref()) {
        Some(im::content::Body::Text(t)) => &t.text,
        _ => "",
    }
}

/// A device of `account` on a raw MQTT 5 connection (no SDK), logged in with a token and
/// subscribed to its inbox with `inbox` options, for checks on the wire.
pub async fn raw_device(
    b: &ImBroker,
    tenant: u64,
    account: &str,
    client_id: &str,
    inbox: SubscriptionOptions,
) -> RawClient {
    let token = b.im.issue_token(tenant, account, "", 600).expect("token");
    let mut c = connect_packet(Version::V5, client_id);
    c.password = Some(bytes::Bytes::from(token));
    let (mut raw, ack) = RawClient::connect(b.addr, c).await;
    assert!(
        matches!(&ack, Packet::ConnAck(a) if a.code == ReasonCode::Success),
        "{ack:?}"
    );
    raw.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![("$im/inbox".into(), inbox)],
        properties: Properties::default(),
    }))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
    raw
}
