//! The Switchboard gateway: a stateless REST front for app servers.
//!
//! Each call becomes an administrative request to the broker's IM service over MQTT 5
//! (`$im/admin/{op}`, request/response on the gateway's own reply topic), so any number of
//! gateway instances can run behind a load balancer and none holds state of record.
//! `switchboard up` runs one in-process; `switchboard gateway --broker ADDR` runs one alone.
//!
//! Modules: [`service`] (the `$service` MQTT connection), [`native`] (the `/v1` API and
//! its request signatures), [`rongcloud`] (RongCloud's server API at its own paths),
//! [`imo`] (imo's workbench integration API), [`youdu`] (Youdu's encrypted API),
//! [`console`] (the web console at `/console`, docs/console.md), [`hooks`] (the webhook sender), [`push`] (the push worker: APNs, FCM, Huawei, Xiaomi, OPPO, vivo, Honor), [`files`] (uploads and signed downloads), [`error`] (JSON errors with stable codes). docs/gateway.md is
//! the reference for app-server developers.

pub mod console;
pub mod error;
pub mod files;
pub mod hooks;
pub mod imo;
pub mod native;
pub mod push;
pub mod request_id;
pub mod rongcloud;
pub mod service;
pub mod workbench;
pub mod youdu;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use switchboard_client::{Config, Endpoint};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use native::auth::Authenticator;
use service::{ServiceClient, ServiceError};

/// Largest request body (bytes).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// How to run a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to serve HTTP.
    pub listen: SocketAddr,
    /// The broker's MQTT endpoints.
    pub broker: Vec<Endpoint>,
    /// Password of the `$service` login.
    pub service_secret: String,
    /// MQTT client id of this instance (unique per instance).
    pub client_id: String,
    pub body_limit: usize,
    /// Where uploaded files are kept (none: no file API).
    pub files_dir: Option<std::path::PathBuf>,
}

/// Shared by every request.
pub struct AppState {
    pub service: ServiceClient,
    pub auth: Authenticator,
    pub body_limit: usize,
    pub files: Option<Arc<dyn files::BlobStore>>,
    pub signer: files::UrlSigner,
    /// The push worker (none when disabled), for test pushes and its trace.
    pub push: Option<Arc<push::Worker>>,
    /// Per-tenant budgets of uploads from devices.
    pub uploads: files::device::Quotas,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("push worker: {0}")]
    Push(String),
}

/// Forwards service-topic messages to the webhook sender (push jobs come through the push
/// worker's own connection, see `push::jobs`).
async fn dispatch(
    mut events: tokio::sync::mpsc::Receiver<switchboard_proto::Publish>,
    hooks: tokio::sync::mpsc::Sender<switchboard_proto::Publish>,
) {
    while let Some(p) = events.recv().await {
        let _ = hooks.send(p).await;
    }
}

/// A running gateway.
pub struct Gateway {
    addr: SocketAddr,
    service: ServiceClient,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    hooks: tokio::task::JoinHandle<()>,
    push: Option<(tokio::task::JoinHandle<()>, Arc<push::PushStats>)>,
    dispatch: tokio::task::JoinHandle<()>,
}

/// Every route of the gateway.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/files/{id}", get(files::download))
        .route(
            "/v1/device/files",
            axum::routing::post(files::device::upload),
        )
        .merge(native::routes())
        .merge(rongcloud::routes())
        .merge(imo::routes())
        .merge(youdu::routes())
        .nest("/console", console::router(state.clone()))
        .route("/console/", get(console::home_redirect))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::wrong_method)
        .layer(axum::middleware::from_fn(request_id::layer))
        .with_state(state)
}

/// The gateway's metrics (Prometheus text): the push worker's counters.
async fn metrics(axum::extract::State(s): axum::extract::State<Arc<AppState>>) -> String {
    s.push
        .as_ref()
        .map(|w| w.stats().prometheus())
        .unwrap_or_default()
}

async fn ready(
    axum::extract::State(s): axum::extract::State<Arc<AppState>>,
) -> (StatusCode, &'static str) {
    if s.service.is_connected() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "broker unreachable")
    }
}

impl Gateway {
    /// Connects to the broker and starts serving, with the push worker on the providers'
    /// production endpoints.
    pub async fn start(cfg: GatewayConfig) -> Result<Gateway, GatewayError> {
        Self::start_with_push(cfg, push::PushConfig::default()).await
    }

    /// Like [`Gateway::start`], with the push worker configured by `push_cfg`.
    pub async fn start_with_push(
        cfg: GatewayConfig,
        push_cfg: push::PushConfig,
    ) -> Result<Gateway, GatewayError> {
        Self::start_with_store(cfg, push_cfg, None).await
    }

    /// Like [`Gateway::start_with_push`], keeping files in `store` (e.g. an S3 bucket,
    /// [`files::s3`]) rather than in `cfg.files_dir`.
    pub async fn start_with_store(
        cfg: GatewayConfig,
        push_cfg: push::PushConfig,
        store: Option<Arc<dyn files::BlobStore>>,
    ) -> Result<Gateway, GatewayError> {
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| GatewayError::Listen(cfg.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| GatewayError::Listen(cfg.listen, e))?;
        let mut mqtt = Config::new(&cfg.client_id, cfg.broker.clone());
        mqtt.backoff_max = std::time::Duration::from_secs(5);
        let jobs_mqtt = mqtt.clone();
        let (service, events) = ServiceClient::connect(mqtt, &cfg.service_secret).await?;
        // Service-topic messages (webhook events) to the webhook sender, through a bounded
        // channel.
        let (hooks_tx, hooks_rx) = tokio::sync::mpsc::channel(1024);
        let dispatch = tokio::spawn(dispatch(events, hooks_tx));
        let hooks = tokio::spawn(hooks::run(service.clone(), hooks_rx));
        let worker = if push_cfg.enabled {
            Some(push::Worker::new(service.clone(), push_cfg).map_err(GatewayError::Push)?)
        } else {
            None
        };
        let push = match worker.clone() {
            Some(w) => {
                let stats = w.stats();
                Some((w.start(jobs_mqtt, cfg.service_secret.clone()).await, stats))
            }
            None => None,
        };
        let state = Arc::new(AppState {
            service: service.clone(),
            auth: Authenticator::default(),
            body_limit: cfg.body_limit,
            files: store.or_else(|| {
                cfg.files_dir
                    .map(|d| Arc::new(files::DirBlobStore::new(d)) as Arc<dyn files::BlobStore>)
            }),
            signer: files::UrlSigner::new(&cfg.service_secret),
            push: worker,
            uploads: files::device::Quotas::default(),
        });
        let app = router(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "gateway: HTTP server failed");
            }
        });
        tracing::info!(%addr, "gateway: serving the REST API");
        Ok(Gateway {
            addr,
            service,
            stop: Some(stop),
            task,
            hooks,
            push,
            dispatch,
        })
    }

    /// The push worker's counters (none when it is disabled).
    pub fn push_stats(&self) -> Option<Arc<push::PushStats>> {
        self.push.as_ref().map(|(_, s)| s.clone())
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and disconnects from the broker.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
        self.hooks.abort();
        self.dispatch.abort();
        if let Some((t, _)) = &self.push {
            t.abort();
        }
        self.service.shutdown().await;
    }
}
