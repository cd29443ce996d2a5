//! The webhook sender: takes the broker's webhook events (`$im/hooks/{tenant}`, through the
//! shared subscription `$share/hooks/$im/hooks/#`, so gateway instances split them) and
//! POSTs each to its tenant's URL.
//!
//! Every call carries `X-Switchboard-Event` (the kind), `X-Switchboard-Timestamp` (Unix
//! seconds) and `X-Switchboard-Signature` = hex HMAC-SHA256, keyed with the tenant's hook
//! secret, of timestamp + "." + body. Notifications are retried on connection errors and
//! 5xx answers with exponential back-off and jitter (at most [`MAX_ATTEMPTS`] tries); a
//! before-send check is tried once within its timeout and answered to the broker
//! (`$im/admin/hooks/answer`): the receiver's JSON `{"allow": bool, "reason"?, "content"?}`,
//! a 2xx without a body meaning allow. At most [`MAX_CONCURRENT`] calls run at once; events
//! beyond wait in the bounded channel of the service client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ring::hmac;
use serde_json::{Value, json};
use switchboard_proto::{Publish, QoS};
use tokio::sync::{Semaphore, mpsc};

use crate::native::auth::{hex, unix_now};
use crate::service::ServiceClient;

/// The shared subscription gateways take webhook events through.
pub const HOOKS_FILTER: &str = "$share/hooks/$im/hooks/#";
/// Tries of one notification.
pub const MAX_ATTEMPTS: u32 = 5;
/// Webhook calls in flight per gateway instance.
pub const MAX_CONCURRENT: usize = 64;
/// Timeout of one notification call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest answer read from a receiver.
const MAX_ANSWER: usize = 256 * 1024;

type Http = Client<HttpConnector, Full<Bytes>>;

/// The signature of a webhook call.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    hex(ctx.sign().as_ref())
}

/// Subscribes to webhook events and sends them until `events` closes.
pub async fn run(service: ServiceClient, mut events: mpsc::Receiver<Publish>) {
    if let Err(e) = service
        .client()
        .subscribe_acked(HOOKS_FILTER, QoS::AtLeastOnce)
        .await
    {
        tracing::error!(error = %e, "webhooks: cannot subscribe to events; none will be sent");
        return;
    }
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    while let Some(p) = events.recv().await {
        if !p.topic.starts_with("$im/hooks/") {
            continue;
        }
        let Ok(ev) = serde_json::from_slice::<Value>(&p.payload) else {
            tracing::warn!("webhooks: undecodable event skipped");
            continue;
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (http, service) = (http.clone(), service.clone());
        tokio::spawn(async move {
            let _permit = permit;
            deliver(&http, &service, ev).await;
        });
    }
}

/// The outcome of one call.
enum Call {
    /// A 2xx answer and its body.
    Ok(Bytes),
    /// Worth retrying (connection error, timeout, 5xx, 429).
    Retry(String),
    /// Not worth retrying (4xx).
    Fail(u16),
}

async fn call(http: &Http, ev: &Value, body: &Bytes, timeout: Duration) -> Call {
    let url = ev["url"].as_str().unwrap_or_default();
    let ts = unix_now().to_string();
    let sig = signature(ev["secret"].as_str().unwrap_or_default(), &ts, body);
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header(
            "x-switchboard-event",
            ev["kind"].as_str().unwrap_or_default(),
        )
        .header("x-switchboard-timestamp", &ts)
        .header("x-switchboard-signature", sig)
        .header(
            "x-switchboard-delivery",
            ev["id"].as_str().unwrap_or_default(),
        )
        .body(Full::new(body.clone()));
    let req = match req {
        Ok(r) => r,
        Err(e) => return Call::Fail(tracing_fail(url, &e.to_string())),
    };
    match tokio::time::timeout(timeout, http.request(req)).await {
        Err(_) => Call::Retry("timeout".into()),
        Ok(Err(e)) => Call::Retry(e.to_string()),
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            if status >= 500 || status == 429 {
                return Call::Retry(format!("HTTP {status}"));
            }
            if status >= 400 {
                return Call::Fail(status);
            }
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER);
            match tokio::time::timeout(timeout, limited.collect()).await {
                Ok(Ok(b)) => Call::Ok(b.to_bytes()),
                _ => Call::Ok(Bytes::new()),
            }
        }
    }
}

fn tracing_fail(url: &str, why: &str) -> u16 {
    tracing::warn!(url, why, "webhooks: bad request to the receiver");
    0
}

/// The body the receiver gets: the event without the routing fields.
fn public_body(ev: &Value) -> Bytes {
    let b = json!({
        "id": ev["id"], "tenant": ev["tenant"], "kind": ev["kind"],
        "time_ms": ev["time_ms"], "data": ev["data"],
    });
    Bytes::from(b.to_string())
}

async fn deliver(http: &Http, service: &ServiceClient, ev: Value) {
    let body = public_body(&ev);
    if let Some(reply) = ev["reply"].as_u64() {
        // A before-send check: one try within the tenant's timeout, then the verdict.
        let timeout = Duration::from_millis(ev["timeout_ms"].as_u64().unwrap_or(2000));
        let verdict = match call(http, &ev, &body, timeout).await {
            Call::Ok(answer) if answer.is_empty() => json!({ "allow": true }),
            Call::Ok(answer) => match serde_json::from_slice::<Value>(&answer) {
                Ok(v) => json!({
                    "allow": v["allow"].as_bool().unwrap_or(true),
                    "reason": v["reason"].as_str().unwrap_or_default(),
                    "content": v.get("content").cloned().unwrap_or(Value::Null),
                }),
                Err(_) => json!({ "allow": true }),
            },
            // No verdict: the broker applies the tenant's fail-open rule when it times out.
            Call::Retry(why) => {
                tracing::info!(why, "webhooks: before-send check failed");
                return;
            }
            Call::Fail(status) => {
                tracing::info!(
                    status,
                    "webhooks: before-send check refused by the receiver"
                );
                return;
            }
        };
        let mut answer = verdict;
        answer["reply"] = reply.into();
        if answer["content"].is_null()
            && let Some(o) = answer.as_object_mut()
        {
            o.remove("content");
        }
        if let Err(e) = service.call("hooks/answer", &answer).await {
            tracing::warn!(error = %e, "webhooks: cannot answer a before-send check");
        }
        return;
    }
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=MAX_ATTEMPTS {
        match call(http, &ev, &body, CALL_TIMEOUT).await {
            Call::Ok(_) => return,
            Call::Fail(status) => {
                tracing::info!(status, kind = ?ev["kind"], "webhooks: receiver refused an event; not retried");
                return;
            }
            Call::Retry(why) if attempt < MAX_ATTEMPTS => {
                let jitter = Duration::from_millis(
                    rand::random::<u64>() % (delay.as_millis() as u64 / 2 + 1),
                );
                tracing::debug!(why, attempt, "webhooks: retrying");
                tokio::time::sleep(delay + jitter).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Call::Retry(why) => {
                tracing::warn!(why, kind = ?ev["kind"], "webhooks: event dropped after {MAX_ATTEMPTS} tries");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_timestamp_and_body() {
        let a = signature("k", "100", b"{}");
        assert_ne!(a, signature("k", "101", b"{}"));
        assert_ne!(a, signature("k", "100", b"{ }"));
        assert_eq!(a.len(), 64);
    }
}
