//! App-server requests for plain MQTT topics of a tenant (IoT devices, app topics):
//! `$im/admin/iot/publish {tenant, topic, payload | payload_base64, qos?, retain?}` runs
//! the message through the same publish pipeline as a device's PUBLISH, in the tenant's
//! namespace (so `sensors/1` is the tenant's `sensors/1`), and answers once it is
//! acknowledged (for QoS 1/2: stored); `iot/retained {tenant, filter, limit?}` reads the
//! tenant's retained messages.

use base64ct::{Base64, Encoding};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::{Properties, Publish, QoS, ReasonCode, Version};

use super::{ImError, ImService};
use crate::auth::Identity;
use crate::namespace::Namespace;
use crate::pipeline::ack::AckWait;
use crate::pipeline::{Outcome, Publisher};

/// Most retained messages one read returns.
const MAX_RETAINED_READ: usize = 1000;

#[derive(Deserialize)]
struct PublishReq {
    tenant: u64,
    topic: String,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
}

#[derive(Deserialize)]
struct RetainedReq {
    tenant: u64,
    filter: String,
    limit: Option<usize>,
}

fn parse<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<T, ImError> {
    serde_json::from_slice(p).map_err(|e| ImError::BadRequest(format!("invalid JSON: {e}")))
}

impl ImService {
    /// `$im/admin/iot/{op}`.
    pub(super) async fn iot_admin(&self, op: &str, payload: &[u8]) -> Result<Value, ImError> {
        match op {
            "publish" => self.iot_publish(parse(payload)?).await,
            "retained" => self.iot_retained(parse(payload)?),
            other => Err(ImError::NotFound(format!("no such request: iot/{other}"))),
        }
    }

    async fn iot_publish(&self, r: PublishReq) -> Result<Value, ImError> {
        self.tenant(r.tenant)?;
        let broker = self
            .broker()
            .ok_or_else(|| ImError::Unavailable("broker not running".into()))?;
        let qos = QoS::from_u8(r.qos)
            .ok_or_else(|| ImError::BadRequest("qos must be 0, 1 or 2".into()))?;
        let payload = match (r.payload, r.payload_base64) {
            (Some(p), None) => Bytes::from(p),
            (None, Some(b)) => Bytes::from(
                Base64::decode_vec(&b)
                    .map_err(|_| ImError::BadRequest("payload_base64 is not base64".into()))?,
            ),
            (None, None) => Bytes::new(),
            (Some(_), Some(_)) => {
                return Err(ImError::BadRequest(
                    "give payload or payload_base64, not both".into(),
                ));
            }
        };
        if switchboard_proto::topic::validate_topic_name(&r.topic).is_err() {
            return Err(ImError::BadRequest(format!("invalid topic {:?}", r.topic)));
        }
        let namespace = Namespace::tenant(r.tenant, None);
        // Checked here too: a refused QoS 0 publish has no acknowledgement to say so.
        if namespace.publish_topic(&r.topic).is_err() {
            return Err(ImError::Forbidden(format!(
                "{:?} is outside the tenant's topics",
                r.topic
            )));
        }
        let identity = Identity {
            username: Some("$service".into()),
            anonymous: false,
            client_id: "$gateway".into(),
            namespace: namespace.clone(),
            im: None,
        };
        let from = Publisher {
            identity: &identity,
            namespace: &namespace,
            client_id: "$gateway",
            session_uid: 0,
            version: Version::V5,
            persistent: false,
        };
        let p = Publish {
            dup: false,
            qos,
            retain: r.retain,
            topic: r.topic.clone(),
            pkid: if qos == QoS::AtMostOnce { 0 } else { 1 },
            properties: Properties::default(),
            payload,
        };
        let code = match broker.handle_publish(&from, p) {
            Outcome::Done => ReasonCode::Success,
            Outcome::Ack { code, wait: None } => code,
            Outcome::Ack {
                code,
                wait: Some(AckWait::Store(rx)),
            } => match rx.await {
                Ok(Ok(_)) => code,
                _ => ReasonCode::UnspecifiedError,
            },
            Outcome::Ack {
                wait: Some(AckWait::Code(rx)),
                ..
            } => rx.await.unwrap_or(ReasonCode::UnspecifiedError),
            Outcome::Ack {
                code,
                wait: Some(AckWait::Cluster(committed, remote)),
            } => {
                let stored = match committed {
                    Some(c) => matches!(c.await, Ok(Ok(_))),
                    None => true,
                };
                let _ = remote.await;
                if stored {
                    code
                } else {
                    ReasonCode::UnspecifiedError
                }
            }
            Outcome::Close(v) => v.code,
        };
        match code {
            ReasonCode::Success | ReasonCode::NoMatchingSubscribers => Ok(json!({
                "topic": r.topic,
                "matched": code == ReasonCode::Success,
            })),
            ReasonCode::NotAuthorized | ReasonCode::TopicNameInvalid => Err(ImError::Forbidden(
                format!("publishing to {:?} refused ({code:?})", r.topic),
            )),
            ReasonCode::QuotaExceeded | ReasonCode::PacketTooLarge => {
                Err(ImError::TooLarge(format!("publish refused: {code:?}")))
            }
            other => Err(ImError::Unavailable(format!("publish failed: {other:?}"))),
        }
    }

    fn iot_retained(&self, r: RetainedReq) -> Result<Value, ImError> {
        self.tenant(r.tenant)?;
        let broker = self
            .broker()
            .ok_or_else(|| ImError::Unavailable("broker not running".into()))?;
        if switchboard_proto::topic::validate_filter(&r.filter).is_err()
            || r.filter.starts_with('$')
        {
            return Err(ImError::BadRequest(format!(
                "invalid filter {:?}",
                r.filter
            )));
        }
        let prefix = format!("{}{}/", crate::namespace::TENANT_PREFIX, r.tenant);
        let limit = r.limit.unwrap_or(100).min(MAX_RETAINED_READ);
        let msgs: Vec<Value> = broker
            .retained
            .matching(&format!("{prefix}{}", r.filter), std::time::Instant::now())
            .into_iter()
            .take(limit)
            .map(|m| {
                json!({
                    "topic": m.topic.strip_prefix(&prefix).unwrap_or(&m.topic),
                    "qos": m.qos as u8,
                    "payload_base64": Base64::encode_string(&m.payload),
                })
            })
            .collect();
        Ok(json!({ "messages": msgs }))
    }
}
