//! The operator HTTP API: Prometheus metrics on `/metrics`, and under `/api/v1` the
//! clients and sessions, their subscriptions, retained messages, kicking a client and
//! reloading the ACL file. Everything needs the bearer token (compared in constant time);
//! `/metrics` too, unless `admin.metrics_public` is set. `switchboard ctl` is its
//! command-line front end.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use switchboard_proto::ReasonCode;

use crate::BrokerState;
use crate::metrics::{Metrics, TRANSPORTS};

#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) broker: Arc<BrokerState>,
    /// SHA-256 of the token: comparing digests in constant time leaks neither the token's
    /// bytes nor its length.
    token: Option<[u8; 32]>,
}

/// A client error with a JSON body `{code, message}`.
#[derive(Debug, Serialize)]
pub(crate) struct ApiError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
    #[serde(skip)]
    pub(crate) status: StatusCode,
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
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Err(ApiError {
                code: "disabled",
                message: "the admin API has no token configured".into(),
                status: StatusCode::FORBIDDEN,
            });
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !given.is_some_and(|g| token_matches(token, g)) {
            return Err(ApiError {
                code: "unauthorized",
                message: "missing or wrong bearer token".into(),
                status: StatusCode::UNAUTHORIZED,
            });
        }
        Ok(())
    }
}

/// `POST /api/v1/im/call/{op}`: any app-server request of the IM service (`$im/admin/{op}`,
/// the same JSON in and out), for the operator's tools: one route instead of one per op.
async fn im_call(
    State(a): State<Admin>,
    headers: HeaderMap,
    axum::extract::Path(op): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    a.check(&headers)?;
    let im = a.broker.im.clone().ok_or_else(|| ApiError {
        code: "disabled",
        message: "the IM service is not running".into(),
        status: StatusCode::NOT_FOUND,
    })?;
    Ok(Json(im.admin_request(&op, &body).await?))
}

/// Constant-time comparison of a presented token with the configured one's digest.
fn token_matches(expected_digest: &[u8; 32], given: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    crate::auth::scram::sha256(given)
        .ct_eq(expected_digest)
        .into()
}

/// The admin API's routes.
pub fn app(broker: Arc<BrokerState>, token: Option<String>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/clients", get(clients))
        .route("/api/v1/clients/{id}", get(client).delete(kick))
        .route("/api/v1/retained", get(retained))
        .route("/api/v1/acl/reload", post(acl_reload))
        .route("/api/v1/drain", post(drain).delete(undrain))
        .merge(crate::im::http::routes())
        .route("/api/v1/im/call/{*op}", post(im_call))
        .with_state(Admin {
            broker,
            token: token.map(|t| crate::auth::scram::sha256(t.as_bytes())),
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

async fn metrics(State(a): State<Admin>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !a.broker.config.admin.metrics_public {
        a.check(&headers)?;
    }
    let b = &a.broker;
    let m = &b.metrics;
    // Take every value that needs a lock first (each lock is held only to count), then
    // encode without holding anything.
    let sessions = b.sessions.len() as u64;
    let subscriptions = b.routes.len() as u64;
    let retained = b.retained.len() as u64;
    let queued = b.queued_total() as u64;
    let store = b.store().map(|st| st.stats());
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
    counter("sessions", "Sessions, connected or not.", "gauge", sessions);
    counter("subscriptions", "Subscriptions.", "gauge", subscriptions);
    counter("retained_messages", "Retained messages.", "gauge", retained);
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
    counter(
        "queued_messages",
        "Messages waiting in session queues.",
        "gauge",
        queued,
    );
    let v = &b.verifier.stats;
    let load = |c: &std::sync::atomic::AtomicUsize| c.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP switchboard_login_refused_total Logins refused before checking the password.\n# TYPE switchboard_login_refused_total counter\n\
         switchboard_login_refused_total{{reason=\"rate_limited\"}} {}\nswitchboard_login_refused_total{{reason=\"busy\"}} {}\n\
         # HELP switchboard_login_verifications_total Password verifications run.\n# TYPE switchboard_login_verifications_total counter\n\
         switchboard_login_verifications_total {}",
        load(&v.rate_limited),
        load(&v.busy),
        load(&v.verified)
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
    if let Some(s) = store {
        let _ = writeln!(
            out,
            "# HELP switchboard_store_commits_total Group commits (fsyncs).\n# TYPE switchboard_store_commits_total counter\nswitchboard_store_commits_total {}\n\
             # HELP switchboard_store_ops_total Writes committed.\n# TYPE switchboard_store_ops_total counter\nswitchboard_store_ops_total {}\n\
             # HELP switchboard_store_failed_commits_total Failed commits.\n# TYPE switchboard_store_failed_commits_total counter\nswitchboard_store_failed_commits_total {}\n\
             # HELP switchboard_store_bytes Bytes of stored messages.\n# TYPE switchboard_store_bytes gauge\nswitchboard_store_bytes {}",
            s.commits, s.ops, s.failed_commits, s.bytes
        );
    }
    if let Some(c) = &b.cluster {
        c.render_metrics(&mut out);
    }
    if let Some(c) = b.im.as_ref().and_then(|im| im.cluster_link()) {
        c.render_metrics(&mut out);
    }
    if let Some(st) = b.store() {
        st.write_metrics(&mut out);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
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
    /// Where the broker listens (`ctl` finds the MQTT listener here).
    listeners: crate::Addrs,
    /// Whether the IM service runs.
    im: bool,
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
        listeners: b.addrs.get().cloned().unwrap_or_default(),
        im: b.im.is_some(),
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

#[derive(Deserialize, Default)]
struct DrainTo {
    to: Option<String>,
}

/// `POST /api/v1/drain` (body optional: `{"to": "host:port"}`): refuse new CONNECTs and move
/// the clients elsewhere (0x9C with a Server Reference; `cluster::drain`).
async fn drain(
    State(a): State<Admin>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<crate::cluster::drain::Drained>, ApiError> {
    a.check(&headers)?;
    let req: DrainTo = if body.iter().all(u8::is_ascii_whitespace) {
        DrainTo::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError {
            code: "bad_request",
            message: format!("expected {{\"to\": \"host:port\"}}: {e}"),
            status: StatusCode::BAD_REQUEST,
        })?
    };
    Ok(Json(a.broker.drain(req.to).await))
}

/// `DELETE /api/v1/drain`: accept CONNECTs again.
async fn undrain(
    State(a): State<Admin>,
    headers: HeaderMap,
) -> Result<Json<crate::cluster::drain::Drained>, ApiError> {
    a.check(&headers)?;
    Ok(Json(a.broker.undrain()))
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

#[derive(Serialize)]
struct AclReloaded {
    path: String,
    rules: usize,
}

async fn acl_reload(
    State(a): State<Admin>,
    headers: HeaderMap,
) -> Result<Json<AclReloaded>, ApiError> {
    a.check(&headers)?;
    let Some(acl) = a.broker.acl_file.clone() else {
        return Err(not_found("no ACL file is configured".into()));
    };
    // Reading a file: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        let path = acl.path().display().to_string();
        acl.reload().map(|rules| AclReloaded { path, rules })
    })
    .await;
    match result {
        Ok(Ok(done)) => Ok(Json(done)),
        Ok(Err(e)) => Err(ApiError {
            code: "acl_invalid",
            message: format!("{e}; the previous rules stay in force"),
            status: StatusCode::UNPROCESSABLE_ENTITY,
        }),
        Err(_) => Err(ApiError {
            code: "internal",
            message: "the reload task failed".into(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare_accepts_only_the_exact_token() {
        let digest = crate::auth::scram::sha256(b"s3cret-token");
        assert!(token_matches(&digest, b"s3cret-token"));
        for wrong in [&b""[..], b"s3cret-toke", b"s3cret-token2", b"S3cret-token"] {
            assert!(!token_matches(&digest, wrong), "{wrong:?}");
        }
    }
}
