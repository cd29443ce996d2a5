//! The Switchboard MQTT broker.
//!
//! Modules, from the wire inwards:
//! - [`listener`]: accepts TCP connections under the connection limit.
//! - [`connection`]: one task per connection, driving `switchboard_proto`'s session machine.
//! - [`sessions`]: the session registry: takeover, parking, expiry, delayed wills.
//! - [`mailbox`]: each session's bounded delivery queue.
//! - [`router`] and [`trie`]: where a message goes; retained messages.
//! - [`auth`]: the authentication and ACL seam.
//! - [`sys`]: `$SYS/broker/...` statistics; [`metrics`]: the counters behind them.
//!
//! [`Broker::start`] binds the listeners and returns a handle; [`BrokerHandle::shutdown`]
//! stops accepting, sends DISCONNECT 0x8B to every client and waits for every task.

pub mod auth;
pub mod config;
mod connection;
pub mod listener;
pub mod mailbox;
pub mod message;
pub mod metrics;
pub mod router;
pub mod sessions;
pub mod store;
mod sys;
pub mod trie;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{BrokerConfig, Limits};

use auth::{Acl, Authenticator, DefaultAcl, PasswordAuth};
use router::Router;
use sessions::Sessions;
use store::Store;

/// Errors starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    PasswordFile(#[from] auth::PasswordFileError),
    #[error("cannot read the store: {0}")]
    Store(#[from] store::StoreError),
}

/// State shared by every task of one broker.
pub struct BrokerState {
    pub config: BrokerConfig,
    pub router: Router,
    pub sessions: Sessions,
    pub auth: Arc<dyn Authenticator>,
    pub acl: Arc<dyn Acl>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub started: Instant,
    next_id: AtomicU64,
}

impl std::fmt::Debug for BrokerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerState").finish_non_exhaustive()
    }
}

impl BrokerState {
    /// A fresh unique id (connections, sessions, generations).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Builder for a broker.
pub struct Broker {
    config: BrokerConfig,
    auth: Option<Arc<dyn Authenticator>>,
    acl: Arc<dyn Acl>,
    store: Option<Arc<dyn Store>>,
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        Broker {
            config,
            auth: None,
            acl: Arc::new(DefaultAcl),
            store: None,
        }
    }

    /// Makes sessions, queues and retained messages durable in `store`; without one the
    /// broker keeps everything in memory.
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Replaces the authenticator built from the config (anonymous flag + password file).
    pub fn with_authenticator(mut self, auth: Arc<dyn Authenticator>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Replaces the default ACL.
    pub fn with_acl(mut self, acl: Arc<dyn Acl>) -> Self {
        self.acl = acl;
        self
    }

    /// Binds every listener and starts serving.
    pub async fn start(self) -> Result<BrokerHandle, StartError> {
        let auth: Arc<dyn Authenticator> = match (self.auth, &self.config.password_file) {
            (Some(a), _) => a,
            (None, Some(path)) => Arc::new(PasswordAuth::load(self.config.allow_anonymous, path)?),
            (None, None) => Arc::new(PasswordAuth::new(self.config.allow_anonymous)),
        };
        let mut bound = Vec::new();
        for addr in &self.config.tcp {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    addr: *addr,
                    source,
                })?;
            bound.push(l);
        }
        let snapshot = match &self.store {
            Some(st) => Some(st.load()?),
            None => None,
        };
        let (max_seq, max_uid) = snapshot.as_ref().map_or((0, 0), |s| (s.max_seq, s.max_uid));
        let state = Arc::new(BrokerState {
            config: self.config,
            router: Router::new(self.store, max_seq),
            sessions: Sessions::default(),
            auth,
            acl: self.acl,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started: Instant::now(),
            next_id: AtomicU64::new(max_uid + 1),
        });
        if let Some(snap) = snapshot {
            state.restore(snap);
        }
        let mut tcp = Vec::new();
        for l in bound {
            let addr = l.local_addr().map_err(|source| StartError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
            tracing::info!(%addr, "MQTT over TCP listening");
            tcp.push(addr);
            state.tasks.spawn(listener::accept_tcp(state.clone(), l));
        }
        if state.config.sys_interval > 0 {
            state.tasks.spawn(sys::run(state.clone()));
        }
        Ok(BrokerHandle { state, tcp })
    }
}

/// A running broker.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    state: Arc<BrokerState>,
    tcp: Vec<SocketAddr>,
}

impl BrokerHandle {
    /// Addresses of the TCP listeners, as bound (port 0 resolved).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// The broker's shared state (metrics, sessions, router).
    pub fn state(&self) -> &Arc<BrokerState> {
        &self.state
    }

    /// Stops accepting, disconnects every client with 0x8B, and waits for every task.
    pub async fn shutdown(&self) {
        self.state.shutdown.cancel();
        self.state.tasks.close();
        self.state.tasks.wait().await;
    }
}
