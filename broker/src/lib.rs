//! The Switchboard MQTT broker.
//!
//! Modules, from the wire inwards:
//! - [`listener`]: accepts TCP connections under the connection limit.
//! - [`connection`]: one task per connection, driving `switchboard_proto`'s session machine.
//! - [`sessions`]: the session registry: takeover, parking, expiry, delayed wills, and
//!   session id → mailbox.
//! - [`mailbox`]: each session's bounded delivery queue.
//! - [`routing`]: where a message goes (topic filters → session ids);
//!   [`delivery`]: hands it to those sessions' mailboxes; [`retained`]: retained messages.
//! - [`store`]: every durable write (sessions, queues, retained, IM tables).
//! - [`auth`]: the authentication and ACL seam.
//! - [`sys`]: `$SYS/broker/...` statistics; [`metrics`]: the counters behind them.
//!
//! [`Broker::start`] binds the listeners and returns a handle; [`BrokerHandle::shutdown`]
//! stops accepting, sends DISCONNECT 0x8B to every client and waits for every task.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
mod connection;
pub mod delivery;
pub mod hints;
pub mod im;
pub mod listener;
pub mod mailbox;
pub mod message;
pub mod metrics;
pub mod namespace;
pub mod pipeline;
pub mod retained;
pub mod routing;
pub mod sessions;
pub mod stop;
pub mod store;
mod sys;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio_util::task::TaskTracker;

pub use config::{BrokerConfig, ClusterConfig, Limits, Listeners, TlsFiles};

use auth::{Acl, Authenticator, DefaultAcl, PasswordAuth};
use metrics::Metrics;
use pipeline::intercept::{Interceptor, Interceptors};
use retained::Retained;
use routing::RoutingTable;
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
    #[error(transparent)]
    AclFile(#[from] auth::AclError),
    #[error("cannot read the store: {0}")]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
}

/// State shared by every task of one broker.
pub struct BrokerState {
    pub config: BrokerConfig,
    /// Topic filters → session ids.
    pub routes: RoutingTable,
    pub retained: Retained,
    /// Sessions by client id, mailboxes by session id.
    pub sessions: Sessions,
    pub metrics: Metrics,
    /// Services that take over the messages of their topics (the IM service).
    pub interceptors: Interceptors,
    /// The IM service, if the broker runs one.
    pub im: Option<Arc<im::ImService>>,
    /// Where the broker listens (set once every listener is bound).
    pub addrs: std::sync::OnceLock<Addrs>,
    /// The link to the other nodes, in cluster mode.
    pub cluster: Option<Arc<cluster::Cluster>>,
    /// Heartbeat hints per network (see `hints`).
    pub hints: parking_lot::Mutex<hints::HintTable>,
    store: Option<Arc<dyn Store>>,
    /// Key of the next delivery queued in the store.
    queue_seq: AtomicU64,
    pub auth: Arc<dyn Authenticator>,
    pub acl: Arc<dyn Acl>,
    /// Runs `auth` within the rate and concurrency limits.
    pub verifier: auth::Verifier,
    /// SCRAM-SHA-256 credentials for MQTT 5 enhanced authentication (the password file's).
    pub scram: Option<Arc<dyn auth::ScramCredentials>>,
    /// The ACL file (also part of `acl`), for reloading.
    pub acl_file: Option<Arc<auth::FileAcl>>,
    pub shutdown: stop::Stop,
    pub tasks: TaskTracker,
    /// Parked plain-TCP connections, without a task each (`connection::parker`).
    pub parker: connection::Parker,
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

    /// The store, if the broker has one.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }
}

/// Builder for a broker.
pub struct Broker {
    config: BrokerConfig,
    auth: Option<Arc<dyn Authenticator>>,
    acl: Arc<dyn Acl>,
    store: Option<Arc<dyn Store>>,
    interceptors: Interceptors,
    im: Option<Arc<im::ImService>>,
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        Broker {
            config,
            auth: None,
            acl: Arc::new(DefaultAcl),
            store: None,
            interceptors: Interceptors::default(),
            im: None,
        }
    }

    /// Runs the IM service: it takes over `$im/req/`, authenticates IM logins in front of
    /// the configured authenticator, and follows IM devices' connections.
    pub fn with_im(mut self, im: Arc<im::ImService>) -> Self {
        self.interceptors.register(
            namespace::IM_REQUEST_PREFIX,
            Arc::new(im::ImRequests(im.clone())),
        );
        self.interceptors.register(
            namespace::IM_ADMIN_PREFIX,
            Arc::new(im::service_api::ServiceRequests(im.clone())),
        );
        self.im = Some(im);
        self
    }

    /// Hands the messages published to topics starting with `prefix` to `i` instead of
    /// routing them.
    pub fn with_interceptor(mut self, prefix: &str, i: Arc<dyn Interceptor>) -> Self {
        self.interceptors.register(prefix, i);
        self
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

    /// Adds an ACL hook: a publish or subscribe then needs its consent too.
    pub fn add_acl(mut self, hook: Arc<dyn Acl>) -> Self {
        self.acl = Arc::new(auth::AllOf(vec![self.acl, hook]));
        self
    }

    /// Binds every listener and starts serving.
    pub async fn start(self) -> Result<BrokerHandle, StartError> {
        let mut scram: Option<Arc<dyn auth::ScramCredentials>> = None;
        let auth: Arc<dyn Authenticator> = match (self.auth, &self.config.password_file) {
            (Some(a), _) => a,
            (None, Some(path)) => {
                let file = Arc::new(PasswordAuth::load(self.config.allow_anonymous, path)?);
                scram = Some(file.clone());
                file
            }
            (None, None) => Arc::new(PasswordAuth::new(self.config.allow_anonymous)),
        };
        let auth: Arc<dyn Authenticator> = match &self.im {
            Some(im) => Arc::new(im::auth::ImAuth {
                im: im.clone(),
                inner: auth,
            }),
            None => auth,
        };
        // Everything that can fail (certificates, ports) fails before any state is built.
        let l = &self.config.listeners;
        let needs_tls = !(l.tls.is_empty() && l.wss.is_empty());
        let (tls_mqtt, tls_ws) = if needs_tls {
            (
                Some(transport::tls::server_config(
                    &self.config.tls,
                    transport::tls::Purpose::Mqtt,
                )?),
                Some(transport::tls::server_config(
                    &self.config.tls,
                    transport::tls::Purpose::WebSocket,
                )?),
            )
        } else {
            (None, None)
        };
        let mut bound = Vec::new();
        for (addrs, kind) in [(&l.tcp, listener::Kind::Tcp), (&l.ws, listener::Kind::Ws)]
            .into_iter()
            .chain(tls_mqtt.map(|c| (&l.tls, listener::Kind::Tls(c.into()))))
            .chain(tls_ws.map(|c| (&l.wss, listener::Kind::Wss(c.into()))))
        {
            for addr in addrs {
                let sock = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind {
                        addr: *addr,
                        source,
                    })?;
                let local = sock.local_addr().map_err(|source| StartError::Bind {
                    addr: *addr,
                    source,
                })?;
                bound.push((sock, kind.clone(), local));
            }
        }
        let admin = match self.config.admin.listen {
            Some(addr) => {
                let sock = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?;
                Some(sock)
            }
            None => None,
        };
        let mut quic = Vec::new();
        for addr in &l.quic {
            let ep = transport::quic::endpoint(&self.config.tls, *addr, &self.config.limits)?;
            let local = ep.local_addr().map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?;
            quic.push((ep, local));
        }
        let cluster = cluster::Cluster::connect(&self.config.cluster).await?;
        let snapshot = match (
            &self.store,
            cluster.as_ref().filter(|c| c.registry().is_some()),
        ) {
            // A store shared by the cluster: only this node's sessions.
            (Some(st), Some(c)) => Some(st.load_scoped(&store::Scope {
                holder: Some(c.node().to_owned()),
                client_id: None,
                retained: true,
            })?),
            (Some(st), None) => Some(st.load()?),
            (None, _) => None,
        };
        let acl_file = match &self.config.acl_file {
            Some(path) => Some(Arc::new(auth::FileAcl::load(path)?)),
            None => None,
        };
        let acl: Arc<dyn Acl> = match &acl_file {
            Some(f) => Arc::new(auth::AllOf(vec![self.acl, f.clone()])),
            None => self.acl,
        };
        let verifier = auth::Verifier::new(auth.clone(), self.config.auth.clone());
        let (max_seq, max_uid) = snapshot.as_ref().map_or((0, 0), |s| (s.max_seq, s.max_uid));
        // Ids unique across the nodes sharing a store (cluster mode), else from the store.
        let id_base = cluster.as_ref().map_or(0, |c| c.id_base());
        let hints =
            parking_lot::Mutex::new(hints::HintTable::new(self.config.heartbeat_hints.clone()));
        let state = Arc::new(BrokerState {
            config: self.config,
            routes: RoutingTable::default(),
            retained: Retained::default(),
            sessions: Sessions::default(),
            metrics: Metrics::default(),
            interceptors: self.interceptors,
            im: self.im,
            addrs: std::sync::OnceLock::new(),
            hints,
            cluster,
            store: self.store,
            queue_seq: AtomicU64::new(max_seq + 1),
            auth,
            acl,
            verifier,
            scram,
            acl_file,
            shutdown: stop::Stop::default(),
            tasks: TaskTracker::new(),
            parker: connection::Parker::default(),
            started: Instant::now(),
            next_id: AtomicU64::new((max_uid + 1).max(id_base)),
        });
        if let Some(c) = &state.cluster {
            // Before restore, so that restored subscriptions are announced too.
            state.routes.set_observer(c.interest());
        }
        if let Some(snap) = snapshot {
            state.restore(snap);
        }
        if let Some(c) = &state.cluster {
            c.run(&state);
        }
        if let Some(im) = &state.im {
            im.attach(&state);
        }
        let mut addrs = Addrs::default();
        let permits = listener::permits(&state);
        for (sock, kind, local) in bound {
            let list = match &kind {
                listener::Kind::Tcp => &mut addrs.tcp,
                listener::Kind::Tls(_) => &mut addrs.tls,
                listener::Kind::Ws => &mut addrs.ws,
                listener::Kind::Wss(_) => &mut addrs.wss,
            };
            list.push(local);
            tracing::info!(addr = %local, transport = ?list_name(&kind), "listening");
            state
                .tasks
                .spawn(listener::accept(state.clone(), sock, kind, permits.clone()));
        }
        for (ep, local) in quic {
            tracing::info!(addr = %local, transport = "quic", "listening");
            addrs.quic.push(local);
            state
                .tasks
                .spawn(transport::quic::accept(state.clone(), ep, permits.clone()));
        }
        if let Some(sock) = &admin {
            addrs.admin = sock.local_addr().ok();
        }
        let _ = state.addrs.set(addrs.clone());
        if let Some(sock) = admin {
            tracing::info!(addr = ?addrs.admin, "admin API listening");
            state.tasks.spawn(admin::serve(
                state.clone(),
                sock,
                state.config.admin.token.clone(),
            ));
        }
        state.tasks.spawn(retained::purge_expired(state.clone()));
        if state.config.sys_interval > 0 {
            state.tasks.spawn(sys::run(state.clone()));
        }
        Ok(BrokerHandle { state, addrs })
    }
}

fn list_name(k: &listener::Kind) -> &'static str {
    match k {
        listener::Kind::Tcp => "tcp",
        listener::Kind::Tls(_) => "tls",
        listener::Kind::Ws => "ws",
        listener::Kind::Wss(_) => "wss",
    }
}

/// Bound addresses per transport (port 0 resolved).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Addrs {
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub ws: Vec<SocketAddr>,
    pub wss: Vec<SocketAddr>,
    pub quic: Vec<SocketAddr>,
    /// The admin API, if enabled.
    pub admin: Option<SocketAddr>,
}

/// A running broker.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    state: Arc<BrokerState>,
    addrs: Addrs,
}

impl BrokerHandle {
    /// Addresses of the TCP listeners, as bound (port 0 resolved).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.addrs.tcp
    }

    /// Addresses of every listener.
    pub fn addrs(&self) -> &Addrs {
        &self.addrs
    }

    /// The broker's shared state (metrics, sessions, routing).
    pub fn state(&self) -> &Arc<BrokerState> {
        &self.state
    }

    /// Stops accepting, disconnects every client with 0x8B, and waits for every task.
    pub async fn shutdown(&self) {
        self.state.shutdown.cancel();
        self.state.tasks.close();
        self.state.tasks.wait().await;
        if let Some(c) = &self.state.cluster {
            c.leave(&self.state).await;
        }
    }
}
