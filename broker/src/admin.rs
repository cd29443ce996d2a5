//! The operator HTTP API: Prometheus metrics on `/metrics`, and under `/api/v1` (bearer
//! token) the clients and sessions, their subscriptions, retained messages, and kicking a
//! client. `switchboard ctl` is its command-line front end.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use switchboard_proto::ReasonCode;

use crate::BrokerState;
use crate::metrics::{Metrics, TRANSPORTS};

#[derive(Clone)]
struct Admin {
    broker: Arc<BrokerState>,
    token: Option<Arc<str>>,
}

/// A client error with a JSON body `{code, message}`.
#[derive(Debug, Serialize)]
struct ApiError {
    code: &'static str,
    message: String,
    #[serde(skip)]
    status: StatusCode,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

fn not_found(what: String) -> ApiError {
    ApiError {
        code: "not_found",
        message: what,
        status: StatusCode::NOT_FOUND,
    }
}

impl Admin {
    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Err(ApiError {
                code: "disabled",
                message: "the admin API has no token configured".into(),
                status: StatusCode::FORBIDDEN,
            });
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(&**token) {
            return Err(ApiError {
                code: "unauthorized",
                message: "missing or wrong bearer token".into(),
                status: StatusCode::UNAUTHORIZED,
            });
        }
        Ok(())
    }
}

/// The admin API's routes.
pub fn app(broker: Arc<BrokerState>, token: Option<String>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/clients", get(clients))
        .route("/api/v1/clients/{id}", get(client).delete(kick))
        .route("/api/v1/retained", get(retained))
        .with_state(Admin {
            broker,
            token: token.map(Into::into),
        })
}

/// Serves the admin API on `listener` until shutdown.
pub async fn serve(
    broker: Arc<BrokerState>,
    listener: tokio::net::TcpListener,
    token: Option<String>,
) {
    let stop = broker.shutdown.clone();
    let app = app(broker, token);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "admin API stopped");
    }
}

async fn metrics(State(a): State<Admin>) -> impl IntoResponse {
    let b = &a.broker;
    let m = &b.metrics;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} {kind}\nswitchboard_{name} {value}"
        );
    };
    counter(
        "connections_total",
        "Connections accepted.",
        "counter",
        Metrics::get(&m.connections_total),
    );
    counter(
        "messages_received_total",
        "Messages routed.",
        "counter",
        Metrics::get(&m.messages_received),
    );
    counter(
        "messages_sent_total",
        "Messages sent to clients.",
        "counter",
        Metrics::get(&m.messages_sent),
    );
    counter(
        "bytes_received_total",
        "Bytes read from clients.",
        "counter",
        Metrics::get(&m.bytes_received),
    );
    counter(
        "bytes_sent_total",
        "Bytes written to clients.",
        "counter",
        Metrics::get(&m.bytes_sent),
    );
    counter(
        "sessions",
        "Sessions, connected or not.",
        "gauge",
        b.sessions.len() as u64,
    );
    counter(
        "subscriptions",
        "Subscriptions.",
        "gauge",
        b.routes.len() as u64,
    );
    counter(
        "retained_messages",
        "Retained messages.",
        "gauge",
        b.retained.len() as u64,
    );
    counter(
        "protocol_errors_total",
        "Connections closed for a protocol violation.",
        "counter",
        Metrics::get(&m.protocol_errors),
    );
    counter(
        "handshake_failures_total",
        "Failed TLS/WebSocket handshakes.",
        "counter",
        Metrics::get(&m.handshake_failures),
    );
    let queued = b.queued_total();
    counter(
        "queued_messages",
        "Messages waiting in session queues.",
        "gauge",
        queued as u64,
    );
    let _ = writeln!(
        out,
        "# HELP switchboard_clients_connected Connected clients by transport.\n# TYPE switchboard_clients_connected gauge"
    );
    for (i, t) in TRANSPORTS.iter().enumerate() {
        let _ = writeln!(
            out,
            "switchboard_clients_connected{{transport=\"{t}\"}} {}",
            Metrics::get(&m.connected_by_transport[i])
        );
    }
    let _ = writeln!(
        out,
        "# HELP switchboard_dropped_messages_total Messages not delivered, by reason.\n# TYPE switchboard_dropped_messages_total counter"
    );
    for (reason, v) in [
        ("queue_full_qos0", &m.dropped_queue_full_qos0),
        ("queue_full_refused", &m.refused_queue_full),
        ("too_large", &m.dropped_too_large),
        ("expired", &m.dropped_expired),
        ("max_connections", &m.refused_max_connections),
    ] {
        let _ = writeln!(
            out,
            "switchboard_dropped_messages_total{{reason=\"{reason}\"}} {}",
            Metrics::get(v)
        );
    }
    if let Some(st) = b.store() {
        let s = st.stats();
        let _ = writeln!(
            out,
            "# HELP switchboard_store_commits_total Group commits (fsyncs).\n# TYPE switchboard_store_commits_total counter\nswitchboard_store_commits_total {}\n\
             # HELP switchboard_store_ops_total Writes committed.\n# TYPE switchboard_store_ops_total counter\nswitchboard_store_ops_total {}\n\
             # HELP switchboard_store_failed_commits_total Failed commits.\n# TYPE switchboard_store_failed_commits_total counter\nswitchboard_store_failed_commits_total {}\n\
             # HELP switchboard_store_bytes Bytes of stored messages.\n# TYPE switchboard_store_bytes gauge\nswitchboard_store_bytes {}",
            s.commits, s.ops, s.failed_commits, s.bytes
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

#[derive(Serialize)]
struct Overview {
    clients_connected: u64,
    sessions: usize,
    subscriptions: usize,
    retained: usize,
    messages_received: u64,
    messages_sent: u64,
    uptime_seconds: u64,
    /// Tenants (apps) and users come with the IM layer.
    tenants: Vec<String>,
}

async fn overview(State(a): State<Admin>, headers: HeaderMap) -> Result<Json<Overview>, ApiError> {
    a.check(&headers)?;
    let b = &a.broker;
    let m = &b.metrics;
    Ok(Json(Overview {
        clients_connected: Metrics::get(&m.clients_connected),
        sessions: b.sessions.len(),
        subscriptions: b.routes.len(),
        retained: b.retained.len(),
        messages_received: Metrics::get(&m.messages_received),
        messages_sent: Metrics::get(&m.messages_sent),
        uptime_seconds: b.started.elapsed().as_secs(),
        tenants: Vec::new(),
    }))
}

async fn clients(
    State(a): State<Admin>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::sessions::SessionSummary>>, ApiError> {
    a.check(&headers)?;
    Ok(Json(a.broker.session_summaries()))
}

async fn client(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<crate::sessions::SessionSummary>, ApiError> {
    a.check(&headers)?;
    a.broker
        .session_summaries()
        .into_iter()
        .find(|s| s.client_id == id)
        .map(Json)
        .ok_or_else(|| not_found(format!("no session for client {id:?}")))
}

async fn kick(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    a.check(&headers)?;
    if a.broker.kick(&id, ReasonCode::AdministrativeAction) {
        tracing::info!(client_id = %id, "client kicked by an operator");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(format!("client {id:?} is not connected")))
    }
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

#[derive(Serialize)]
struct RetainedItem {
    topic: String,
    qos: u8,
    bytes: usize,
}

async fn retained(
    State(a): State<Admin>,
    headers: HeaderMap,
    Query(q): Query<Limit>,
) -> Result<Json<Vec<RetainedItem>>, ApiError> {
    a.check(&headers)?;
    let list = a.broker.retained.list(q.limit.unwrap_or(1000).min(100_000));
    Ok(Json(
        list.into_iter()
            .map(|(topic, qos, bytes)| RetainedItem { topic, qos, bytes })
            .collect(),
    ))
}
