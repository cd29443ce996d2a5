//! Administrative requests over MQTT for service identities (the REST gateway, the push
//! worker): `$im/admin/{op}`, JSON in and out (the same shapes as the operator API's
//! `/api/v1/im/...`), MQTT 5 request/response. Only a `$service` login may use them; anyone
//! else gets PUBACK 0x87.
//!
//! Areas of IM part 2 have their own ops under `$im/admin/{area}/{op}` (group, room,
//! social, moderation, dir, broadcast: see their modules).
//!
//! Ops acting for one user (send as, conversations, history, read, online, kick, ban) and
//! the gateway's credential lookups are in `service_user`; batch registration, banned
//! users, push tags and notifications, server-side chatroom joins and token checks for
//! the REST gateway in `service_gateway`. A request may carry the gateway's request id as
//! the user property `request-id`: the log lines of the call carry it. A request of a
//! signed REST call carries its nonce (user property `signed-nonce`, see `nonces`): a
//! nonce already used by another call is refused before the op runs (code 440). The op
//! `nonce {}` does nothing else (for gateway calls that need no other request).
//!
//! Ops: `create_tenant {name, account?}`, `create_user {tenant, account, name?, password?,
//! upsert?}`, `token {tenant, user, device?, ttl?}`, `revoke_token {token}`,
//! `system_message {tenant, to, app?, text | content, client_msg_id?}`. Answers: the result object,
//! or `{"error": {"code", "message"}}` with the IM status code.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::{Properties, QoS, ReasonCode, im};
use tokio::sync::oneshot;

use super::{ImError, ImService, random_hex};
use crate::BrokerState;
use crate::message::Message;
use crate::namespace::{IM_ADMIN_PREFIX, Namespace};
use crate::pipeline::intercept::{Intercepted, Interceptor, Origin};

/// The MQTT 5 user property carrying the REST gateway's request id.
pub const REQUEST_ID_PROPERTY: &str = "request-id";

/// The interceptor of `$im/admin/`.
pub struct ServiceRequests(pub Arc<ImService>);

#[derive(Deserialize)]
struct NewTenant {
    name: String,
    account: Option<String>,
}

#[derive(Deserialize)]
struct NewUser {
    tenant: u64,
    account: String,
    #[serde(default)]
    name: String,
    password: Option<String>,
    #[serde(default)]
    upsert: bool,
}

#[derive(Deserialize)]
struct NewToken {
    tenant: u64,
    user: String,
    #[serde(default)]
    device: String,
    ttl: Option<u64>,
}

#[derive(Deserialize)]
struct Revoke {
    token: String,
    /// The calling tenant (the gateway's): a token of another tenant is refused.
    #[serde(default)]
    tenant: Option<u64>,
}

#[derive(Deserialize)]
struct SystemMessage {
    tenant: u64,
    to: String,
    app: Option<String>,
    /// A text notice, or
    #[serde(default)]
    text: String,
    /// any content (JSON form, `im::json`).
    content: Option<Value>,
    client_msg_id: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, ImError> {
    serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
}

impl ImService {
    /// Runs one administrative request.
    pub async fn admin_request(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        if let Some(done) = self.user_admin(op, payload).await {
            return done;
        }
        if let Some(done) = self.gateway_admin(op, payload).await {
            return done;
        }
        if let Some((area, rest)) = op.split_once('/') {
            return match area {
                "group" => self.group_admin(rest, payload).await,
                "room" => self.room_admin(rest, payload).await,
                "social" => self.social_admin(rest, payload).await,
                "moderation" => self.moderation_admin(rest, payload).await,
                "dir" => self.org_admin(rest, payload).await,
                "broadcast" => self.broadcast_admin(rest, payload).await,
                "app" => self.app_admin(rest, payload).await,
                "iot" => self.iot_admin(rest, payload).await,
                "hooks" => self.hooks_admin(rest, payload).await,
                "push" => self.push_admin(rest, payload).await,
                "console" => self.console_admin(rest, payload).await,
                _ => Err(ImError::NotFound(format!("no such request: {op}"))),
            };
        }
        Ok(match op {
            "create_tenant" => {
                let r: NewTenant = parse(payload)?;
                let t = self.create_tenant(&r.name, r.account.as_deref()).await?;
                json!({ "tenant_id": t.id, "app_key": t.app_key, "app_secret": t.app_secret, "buin": t.buin })
            }
            "create_user" => {
                let r: NewUser = parse(payload)?;
                let u = self
                    .create_user(
                        r.tenant,
                        &r.account,
                        &r.name,
                        r.password.as_deref(),
                        r.upsert,
                    )
                    .await?;
                json!({ "user_id": u.account, "uid": u.uid })
            }
            "token" => {
                let r: NewToken = parse(payload)?;
                let token =
                    self.issue_token(r.tenant, &r.user, &r.device, r.ttl.unwrap_or(7 * 24 * 3600))?;
                json!({ "token": token })
            }
            "revoke_token" => {
                let r: Revoke = parse(payload)?;
                if let Some(t) = r.tenant
                    && super::token::peek(&r.token).is_ok_and(|c| c.t != t)
                {
                    return Err(ImError::Forbidden(
                        "the token belongs to another tenant".into(),
                    ));
                }
                self.revoke_token(&r.token).await?;
                json!({})
            }
            // Only the `signed-nonce` check, done before the op.
            "nonce" => json!({}),
            "system_message" => {
                let r: SystemMessage = parse(payload)?;
                let id = match r.client_msg_id {
                    Some(id) => id,
                    None => random_hex(8)?,
                };
                let content = match r.content {
                    Some(c) => super::json::content_from_json(&c)?,
                    None if r.text.is_empty() => {
                        return Err(ImError::BadRequest("text or content is required".into()));
                    }
                    None => im::Content {
                        body: Some(im::content::Body::Text(im::Text { text: r.text })),
                    },
                };
                let (conv, seq) = self
                    .send_system(r.tenant, &r.to, r.app.as_deref(), &id, content)
                    .await?;
                json!({ "conversation": conv.to_string(), "seq": seq })
            }
            other => return Err(ImError::NotFound(format!("no such request: {other}"))),
        })
    }
}

impl Interceptor for ServiceRequests {
    fn publish(&self, broker: &Arc<BrokerState>, origin: &Origin<'_>, msg: Message) -> Intercepted {
        if *origin.namespace != Namespace::Service {
            tracing::info!(client_id = origin.client_id, topic = %msg.topic, "administrative IM request from a non-service client refused");
            return Intercepted::now(ReasonCode::NotAuthorized);
        }
        let op = msg
            .topic
            .strip_prefix(IM_ADMIN_PREFIX)
            .unwrap_or_default()
            .to_owned();
        let props = msg.properties.as_deref();
        let reply = props.and_then(|p| p.response_topic.clone());
        let correlation = props.and_then(|p| p.correlation_data.clone());
        // The gateway's request id (user property `request-id`), in this call's log lines.
        let request_id = props
            .and_then(|p| {
                p.user_properties
                    .iter()
                    .find(|(k, _)| k == REQUEST_ID_PROPERTY)
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_default();
        // A signed REST call's nonce (user property `signed-nonce`): refused when replayed.
        let signed = props.and_then(|p| {
            p.user_properties
                .iter()
                .find(|(k, _)| k == super::nonces::SIGNED_NONCE_PROPERTY)
                .map(|(_, v)| v.clone())
        });
        let span = tracing::info_span!("admin_request", op = %op, request_id = %request_id);
        let (tx, rx) = oneshot::channel();
        let (service, b) = (self.0.clone(), broker.clone());
        broker.tasks.spawn(tracing::Instrument::instrument(async move {
            let result = match service.check_signed(signed.as_deref()) {
                Ok(()) => service.admin_request(&op, &msg.payload).await,
                Err(e) => Err(e),
            };
            let (body, code) = match result {
                Ok(v) => (v, ReasonCode::Success),
                Err(e) => {
                    tracing::info!(op, request_id, error = %e, "administrative IM request failed");
                    let code = e.reason_code();
                    (
                        json!({ "error": { "code": e.code(), "message": e.to_string() } }),
                        code,
                    )
                }
            };
            if let Some(topic) = reply {
                let properties = Properties {
                    correlation_data: correlation,
                    ..Properties::default()
                };
                b.publish_detached(Arc::new(Message {
                    topic,
                    payload: Bytes::from(body.to_string()),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: crate::message::boxed(properties),
                    expires_at: None,
                    origin: 0,
                }));
            }
            let _ = tx.send(code);
        }, span));
        Intercepted::later(rx)
    }
}
