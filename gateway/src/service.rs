//! The gateway's connection to the broker: one MQTT 5 client logged in as `$service`,
//! making administrative requests (`$im/admin/{op}`, JSON) and matching the answers that
//! come back on its own reply topic. Several gateway instances each hold one; none keeps
//! state of its own, so any instance can answer any call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use switchboard_client::requests::{Correlator, NoAnswer};
use switchboard_client::{Client, Config, Event};
use switchboard_proto::{Properties, Publish, QoS};
use tokio::sync::mpsc;

/// How long a call waits for the broker's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The IM status code of a replayed signed call (docs/protocol.md section 12).
const REPLAYED: u32 = 440;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The IM service answered with an error (its status code and message).
    #[error("{message}")]
    Api { code: u32, message: String },
    /// The signed REST call's nonce was already used by another call (IM code 440),
    /// possibly through another gateway instance.
    #[error("{0}")]
    Replayed(String),
    /// The broker could not be reached or did not answer.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// A `$service` connection to the broker; cheap to clone.
#[derive(Clone)]
pub struct ServiceClient {
    client: Client,
    requests: Correlator,
    replies: Arc<str>,
    connected: Arc<AtomicBool>,
}

impl ServiceClient {
    /// Connects with `cfg` (client id, endpoints; the password is the service secret) and
    /// subscribes to the reply topic. Messages on other topics the caller subscribes to
    /// later arrive on the returned receiver (bounded: when it is full they are dropped,
    /// with a log line).
    pub async fn connect(
        mut cfg: Config,
        secret: &str,
    ) -> Result<(ServiceClient, mpsc::Receiver<Publish>), ServiceError> {
        cfg.username = Some("$service".into());
        cfg.password = Some(Bytes::copy_from_slice(secret.as_bytes()));
        // Answers to a previous process's calls must not reach this one.
        cfg.session_expiry = 0;
        let replies: Arc<str> = format!("$im/svc/{}/replies", cfg.client_id).into();
        let (client, mut events) =
            Client::start(cfg).map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let requests = Correlator::new();
        let connected = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(1024);
        let (r, topic, up) = (requests.clone(), replies.clone(), connected.clone());
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    Event::Message(p) if p.topic == *topic => r.answer(*p),
                    Event::Message(p) => {
                        if tx.try_send(*p).is_err() {
                            tracing::warn!(
                                "service client: message dropped (receiver full or gone)"
                            );
                        }
                    }
                    Event::Connected { .. } => up.store(true, Ordering::Relaxed),
                    Event::Disconnected { reason } => {
                        up.store(false, Ordering::Relaxed);
                        tracing::warn!(reason, "service client: disconnected from the broker");
                    }
                    Event::Heartbeat { .. } | Event::Probe { .. } => {}
                }
            }
            up.store(false, Ordering::Relaxed);
            r.fail_all();
        });
        let codes = client
            .subscribe_acked(&replies, QoS::AtLeastOnce)
            .await
            .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        if let Some(code) = codes.into_iter().find(|c| c.is_error()) {
            return Err(ServiceError::Unavailable(format!(
                "the broker refused the reply subscription: {code:?}"
            )));
        }
        Ok((
            ServiceClient {
                client,
                requests,
                replies,
                connected,
            },
            rx,
        ))
    }

    /// The underlying MQTT client (to subscribe to service topics).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether the connection to the broker is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Makes request `op` with a JSON body and returns the JSON answer.
    pub async fn call(&self, op: &str, body: &Value) -> Result<Value, ServiceError> {
        self.request(&format!("$im/admin/{op}"), body).await
    }

    /// Publishes a JSON request on `topic` (MQTT 5 request/response: our reply topic and a
    /// correlation id) and returns the JSON answer; `{"error": {code, message}}` answers
    /// are errors.
    pub async fn request(&self, topic: &str, body: &Value) -> Result<Value, ServiceError> {
        let (id, correlation, rx) = self.requests.begin();
        let p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.to_owned(),
            pkid: 0,
            properties: Properties {
                response_topic: Some(self.replies.to_string()),
                correlation_data: Some(correlation),
                // The HTTP request's id, for the broker's log lines of this call, and a
                // signed call's nonce, refused by the broker when another call used it.
                user_properties: crate::request_id::current()
                    .map(|id| ("request-id".to_owned(), id))
                    .into_iter()
                    .chain(
                        crate::request_id::signed_nonce().map(|v| ("signed-nonce".to_owned(), v)),
                    )
                    .collect(),
                ..Properties::default()
            },
            payload: Bytes::from(body.to_string()),
        };
        if let Err(e) = self.client.publish_message(p).await {
            self.requests.cancel(id);
            return Err(ServiceError::Unavailable(e.to_string()));
        }
        let answer = match self.requests.wait(id, rx, CALL_TIMEOUT).await {
            Ok(b) => b,
            Err(NoAnswer::Closed) => {
                return Err(ServiceError::Unavailable("service client stopped".into()));
            }
            Err(NoAnswer::Timeout) => {
                return Err(ServiceError::Unavailable(format!(
                    "no answer within {CALL_TIMEOUT:?}"
                )));
            }
        };
        let v: Value = serde_json::from_slice(&answer)
            .map_err(|e| ServiceError::Unavailable(format!("undecodable answer: {e}")))?;
        if let Some(err) = v.get("error") {
            let code = err.get("code").and_then(Value::as_u64).unwrap_or(500) as u32;
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if code == REPLAYED {
                return Err(ServiceError::Replayed(message));
            }
            return Err(ServiceError::Api { code, message });
        }
        Ok(v)
    }

    /// Disconnects.
    pub async fn shutdown(&self) {
        self.client.shutdown().await;
    }
}
