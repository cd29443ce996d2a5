//! The console's operations ops (`$im/admin/console/ops/{op}`), over the same broker
//! functions as the operator HTTP API (`admin.rs`): `overview` (counters now and the
//! last hour's samples), `clients {q?, offset?, limit?}` (search by client id or address),
//! `client {id, queue_limit?}` (its subscriptions, queue length and the oldest queued
//! messages: topic, QoS, size, age), `kick {id}` (DISCONNECT 0x98
//! Administrative action), `retained {prefix?, limit?}`.

use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::ReasonCode;

use super::super::{ImError, ImService};
use crate::metrics::Metrics;

/// Most clients or retained messages in one answer.
const MAX_PAGE: usize = 500;
/// Queued messages shown of one client: default and most.
const QUEUE_PAGE: usize = 50;
const QUEUE_MAX: usize = 200;

#[derive(Deserialize)]
struct Clients {
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct Client {
    id: String,
    queue_limit: Option<usize>,
}

#[derive(Deserialize)]
struct Retained {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
}

impl ImService {
    pub(super) async fn console_ops(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        let b = self
            .broker()
            .ok_or_else(|| ImError::Unavailable("the broker is not running".into()))?;
        let body: Value = if payload.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(payload)
                .map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))?
        };
        match op {
            "overview" => {
                let now = super::samples::take(&b);
                let m = &b.metrics;
                Ok(json!({
                    "now": now,
                    "sessions": b.sessions.len(),
                    "subscriptions": b.routes.len(),
                    "retained": b.retained.len(),
                    "connections_total": Metrics::get(&m.connections_total),
                    "uptime_seconds": b.started.elapsed().as_secs(),
                    "samples": self.console.samples.all(),
                    "period_ms": super::samples::PERIOD.as_millis() as u64,
                }))
            }
            "clients" => {
                let r: Clients = de(body)?;
                let limit = r.limit.unwrap_or(50).clamp(1, MAX_PAGE);
                let q = r.q.to_lowercase();
                let all: Vec<_> = b
                    .session_summaries()
                    .into_iter()
                    .filter(|s| {
                        q.is_empty()
                            || s.client_id.to_lowercase().contains(&q)
                            || s.peer.as_deref().is_some_and(|p| p.contains(&q))
                    })
                    .collect();
                let total = all.len();
                let page: Vec<_> = all.into_iter().skip(r.offset).take(limit).collect();
                Ok(json!({ "total": total, "offset": r.offset, "clients": page }))
            }
            "client" => {
                let r: Client = de(body)?;
                let not_found = || ImError::NotFound(format!("no session for client {:?}", r.id));
                let summary = b.session_summary(&r.id).ok_or_else(not_found)?;
                let limit = r.queue_limit.unwrap_or(QUEUE_PAGE).clamp(1, QUEUE_MAX);
                let queue = b.session_queue(&r.id, limit).ok_or_else(not_found)?;
                let mut v = json!(summary);
                v["queue"] = json!(queue);
                Ok(v)
            }
            "kick" => {
                let r: Client = de(body)?;
                if b.kick(&r.id, ReasonCode::AdministrativeAction) {
                    tracing::info!(client_id = %r.id, "client kicked from the console");
                    Ok(json!({}))
                } else {
                    Err(ImError::NotFound(format!(
                        "client {:?} is not connected",
                        r.id
                    )))
                }
            }
            "retained" => {
                let r: Retained = de(body)?;
                let limit = r.limit.unwrap_or(100).clamp(1, MAX_PAGE);
                // The retained set lists in topic order; filter by prefix over a bounded
                // window.
                let list: Vec<Value> = b
                    .retained
                    .list(100_000)
                    .into_iter()
                    .filter(|(t, _, _)| t.starts_with(&r.prefix))
                    .take(limit)
                    .map(
                        |(topic, qos, bytes)| json!({ "topic": topic, "qos": qos, "bytes": bytes }),
                    )
                    .collect();
                Ok(json!({ "retained": list, "total": b.retained.len() }))
            }
            other => Err(ImError::NotFound(format!(
                "no such request: console/ops/{other}"
            ))),
        }
    }
}

fn de<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ImError> {
    serde_json::from_value(v).map_err(|e| ImError::BadRequest(e.to_string()))
}
