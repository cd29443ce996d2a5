//! Webhooks: a tenant's app server hears about events (a message was sent, a user came
//! online or went offline, a group changed) and may vet messages before they are stored.
//!
//! The broker makes no HTTP calls itself: events are published on `$im/hooks/{tenant}`
//! (JSON, QoS 1), where gateway instances take them through the shared subscription
//! `$share/hooks/$im/hooks/#` and POST them to the tenant's URL, signed and retried. A
//! before-send check is the same event with a `reply` id: the gateway answers with
//! `$im/admin/hooks/answer {reply, allow, reason?, content?}` and the send waits for it, at
//! most the tenant's timeout; with no answer (or no gateway subscribed) the tenant's
//! `fail_open` decides. `docs/gateway.md` has the receiver's side.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_proto::{QoS, im};
use tokio::sync::oneshot;

use super::json::{content_from_json, message_to_json};
use super::{ImError, ImService, now_ms, random_hex};
use crate::message::Message;

/// Topic prefix of webhook events.
pub const HOOKS_PREFIX: &str = "$im/hooks/";
/// Longest before-send wait a tenant may configure.
const MAX_TIMEOUT_MS: u64 = 10_000;
/// Most before-send checks waiting at once (beyond, `fail_open` decides at once).
const MAX_PENDING: usize = 10_000;

/// Event kinds a tenant can subscribe to.
pub const KINDS: [&str; 4] = ["after_send", "presence", "group", "before_send"];

/// A tenant's webhook settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookConfig {
    /// The app server's endpoint (http or https).
    pub url: String,
    /// Key of the `X-Switchboard-Signature` HMAC.
    pub secret: String,
    /// Which events are sent (`after_send`, `presence`, `group`, `before_send`).
    pub events: Vec<String>,
    /// How long a before-send check may take.
    pub timeout_ms: u64,
    /// Without an answer in time, let the message through (true) or refuse it.
    pub fail_open: bool,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            url: String::new(),
            secret: String::new(),
            events: vec!["after_send".into()],
            timeout_ms: 2000,
            fail_open: true,
        }
    }
}

/// Before-send checks waiting for their answer.
#[derive(Debug, Default)]
pub struct PendingHooks {
    waiting: parking_lot::Mutex<HashMap<u64, oneshot::Sender<Verdict>>>,
    next: AtomicU64,
}

/// The app server's verdict on a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub allow: bool,
    pub reason: String,
    /// Replacement content.
    pub content: Option<im::Content>,
}

fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_be_bytes(b)
}

fn parse<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, ImError> {
    serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
}

impl ImService {
    /// The tenant's webhook settings if `kind` is among their events.
    fn hook_for(&self, tid: u64, kind: &str) -> Option<HookConfig> {
        let t = self.tenant(tid).ok()?;
        let h = t.webhooks.as_ref()?;
        (!h.url.is_empty() && h.events.iter().any(|e| e == kind)).then(|| h.clone())
    }

    /// Publishes an event for the gateways; returns how many took it.
    fn publish_hook(
        &self,
        tid: u64,
        h: &HookConfig,
        kind: &str,
        data: Value,
        reply: Option<u64>,
    ) -> usize {
        let Some(b) = self.broker() else { return 0 };
        let id = random_hex(8).unwrap_or_default();
        let body = json!({
            "id": id, "tenant": tid, "kind": kind, "time_ms": now_ms(), "data": data,
            "reply": reply, "url": h.url, "secret": h.secret, "timeout_ms": h.timeout_ms,
        });
        b.publish_detached(std::sync::Arc::new(Message {
            topic: format!("{HOOKS_PREFIX}{tid}"),
            payload: Bytes::from(body.to_string()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires_at: None,
            origin: 0,
        }))
    }

    /// Tells the tenant's app server about an event, if it asked for that kind.
    pub(super) fn hook_event(&self, tid: u64, kind: &str, data: impl FnOnce() -> Value) {
        if let Some(h) = self.hook_for(tid, kind) {
            self.publish_hook(tid, &h, kind, data(), None);
        }
    }

    /// A message was stored and delivered.
    pub(super) fn hook_after_send(&self, tid: u64, msg: &im::Message) {
        self.hook_event(tid, "after_send", || message_to_json(msg));
    }

    /// Group `gid` changed (created, joined, left, dismissed, ...): `{group_id, notice}`,
    /// the notice being the message its members got.
    pub(super) fn hook_group_change(&self, tid: u64, gid: &str, notice: &im::Message) {
        self.hook_event(
            tid,
            "group",
            || json!({ "group_id": gid, "notice": message_to_json(notice) }),
        );
    }

    /// Asks the tenant's app server about a message before it is stored: refused (403), or
    /// allowed, possibly with new content.
    pub(super) async fn hook_before_send(
        &self,
        tid: u64,
        from: &str,
        req: &mut im::SendRequest,
    ) -> Result<(), ImError> {
        let Some(h) = self.hook_for(tid, "before_send") else {
            return Ok(());
        };
        let decide = |why: &str| {
            if h.fail_open {
                Ok(())
            } else {
                Err(ImError::Forbidden(format!(
                    "the app server did not vet the message ({why})"
                )))
            }
        };
        // Unguessable: only the gateway that saw the event can answer it.
        let id = self.hooks.next.fetch_add(1, Ordering::Relaxed) ^ random_u64();
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self.hooks.waiting.lock();
            if w.len() >= MAX_PENDING {
                return decide("too many checks waiting");
            }
            w.insert(id, tx);
        }
        let data = json!({
            "from": from, "to": req.to, "client_msg_id": req.client_msg_id,
            "conv_type": im::ConvType::try_from(req.conv_type).unwrap_or(im::ConvType::Private).as_str_name(),
            "content": super::json::content_to_json(req.content.as_ref()),
        });
        if self.publish_hook(tid, &h, "before_send", data, Some(id)) == 0 {
            self.hooks.waiting.lock().remove(&id);
            return decide("no gateway is taking webhook events");
        }
        let timeout = Duration::from_millis(h.timeout_ms.min(MAX_TIMEOUT_MS) + 500);
        let verdict = tokio::time::timeout(timeout, rx).await;
        self.hooks.waiting.lock().remove(&id);
        match verdict {
            Ok(Ok(v)) if v.allow => {
                if let Some(c) = v.content {
                    req.content = Some(c);
                }
                Ok(())
            }
            Ok(Ok(v)) => {
                tracing::info!(tenant = tid, from, reason = %v.reason, "message refused by the app server's before-send hook");
                Err(ImError::Forbidden(format!(
                    "refused by the app server: {}",
                    v.reason
                )))
            }
            _ => decide("no answer in time"),
        }
    }

    /// `$im/admin/hooks/{op}`: `set {tenant, url, secret, events, timeout_ms, fail_open}`,
    /// `get {tenant}`, `answer {reply, allow, reason?, content?}` (from the gateway).
    pub(super) async fn hooks_admin(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        #[derive(Deserialize)]
        struct Set {
            tenant: u64,
            #[serde(flatten)]
            config: Value,
        }
        #[derive(Deserialize)]
        struct Get {
            tenant: u64,
        }
        #[derive(Deserialize)]
        struct Answer {
            reply: u64,
            allow: bool,
            #[serde(default)]
            reason: String,
            content: Option<Value>,
        }
        match op {
            "set" => {
                let r: Set = parse(payload)?;
                let c: HookConfig = serde_json::from_value(r.config)
                    .map_err(|e| ImError::BadRequest(format!("invalid webhook settings: {e}")))?;
                let scheme_ok = c.url.starts_with("http://") || c.url.starts_with("https://");
                if !c.url.is_empty() && !scheme_ok {
                    return Err(ImError::BadRequest(
                        "url must be http:// or https://".into(),
                    ));
                }
                if let Some(bad) = c.events.iter().find(|e| !KINDS.contains(&e.as_str())) {
                    return Err(ImError::BadRequest(format!("unknown event kind {bad:?}")));
                }
                if c.timeout_ms == 0 || c.timeout_ms > MAX_TIMEOUT_MS {
                    return Err(ImError::BadRequest(format!(
                        "timeout_ms must be 1..={MAX_TIMEOUT_MS}"
                    )));
                }
                let hooks = (!c.url.is_empty()).then_some(c);
                self.update_tenant(r.tenant, |t| t.webhooks = hooks).await?;
                Ok(json!({}))
            }
            "get" => {
                let r: Get = parse(payload)?;
                let t = self.tenant(r.tenant)?;
                Ok(serde_json::to_value(&t.webhooks).unwrap_or(Value::Null))
            }
            "answer" => {
                let r: Answer = parse(payload)?;
                let content = match r.content {
                    Some(c) => Some(content_from_json(&c)?),
                    None => None,
                };
                if let Some(tx) = self.hooks.waiting.lock().remove(&r.reply) {
                    let _ = tx.send(Verdict {
                        allow: r.allow,
                        reason: r.reason,
                        content,
                    });
                }
                Ok(json!({}))
            }
            other => Err(ImError::NotFound(format!("no such request: hooks/{other}"))),
        }
    }
}
