//! Helpers for the social and moderation tests: an app-server client (the `$service`
//! login) that makes JSON requests on `$im/admin/{op}` over MQTT 5 and hears the service
//! events of `$im/events/{tenant}`, and shorthands for the social requests and events of a
//! device.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::Value;
use switchboard_client::{Client, Config, Endpoint, Event};
use switchboard_proto::im::{self, contact_event::Kind as ContactKind, event::Kind};
use switchboard_proto::{Properties, Publish, QoS};
use tokio::sync::{mpsc, oneshot};

use crate::WAIT;
use crate::im::{Device, ImBroker, SERVICE_SECRET};

/// Topic the service client's answers come back on.
const REPLIES: &str = "app-server/replies";

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// The app server, logged in with the service credential.
pub struct AppServer {
    client: Client,
    waiters: Waiters,
    next: std::sync::atomic::AtomicU64,
    /// Publishes that are not answers (service events), as (topic, JSON).
    pub events: mpsc::UnboundedReceiver<(String, Value)>,
}

impl AppServer {
    /// Connects and subscribes to its answers and to every tenant's service events.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> AppServer {
        let mut cfg = Config::new(client_id, vec![Endpoint::Tcp(addr)]);
        cfg.username = Some("$service".into());
        cfg.password = Some(Bytes::from_static(SERVICE_SECRET.as_bytes()));
        cfg.session_expiry = 0;
        let (client, mut rx) = Client::start(cfg).expect("service client starts");
        let waiters: Waiters = Arc::default();
        let (ev_tx, events) = mpsc::unbounded_channel();
        let w = waiters.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let Event::Message(p) = ev else { continue };
                let body: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                if p.topic == REPLIES {
                    let id = p
                        .properties
                        .correlation_data
                        .as_deref()
                        .and_then(|c| <[u8; 8]>::try_from(c).ok())
                        .map(u64::from_be_bytes);
                    if let Some(tx) = id.and_then(|id| w.lock().expect("waiters").remove(&id)) {
                        let _ = tx.send(body);
                    }
                } else {
                    let _ = ev_tx.send((p.topic.clone(), body));
                }
            }
        });
        let codes = client
            .subscribe_acked(REPLIES, QoS::AtLeastOnce)
            .await
            .expect("subscribe answers");
        assert!(!codes[0].is_error());
        let codes = client
            .subscribe_acked("$im/events/#", QoS::AtLeastOnce)
            .await
            .expect("subscribe events");
        assert!(!codes[0].is_error());
        AppServer {
            client,
            waiters,
            next: 1.into(),
            events,
        }
    }

    /// One request `$im/admin/{op}`; the JSON answer (errors are `{"error": {...}}`).
    pub async fn call(&self, op: &str, body: Value) -> Value {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().expect("waiters").insert(id, tx);
        self.client
            .publish_message(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: format!("$im/admin/{op}"),
                pkid: 0,
                properties: Properties {
                    response_topic: Some(REPLIES.into()),
                    correlation_data: Some(Bytes::copy_from_slice(&id.to_be_bytes())),
                    ..Properties::default()
                },
                payload: Bytes::from(body.to_string()),
            })
            .await
            .expect("request published");
        tokio::time::timeout(WAIT, rx)
            .await
            .expect("answer within the wait")
            .expect("answer")
    }

    /// Like [`AppServer::call`], but panics on an error answer.
    pub async fn ok(&self, op: &str, body: Value) -> Value {
        let v = self.call(op, body).await;
        assert!(v.get("error").is_none(), "{op}: {v}");
        v
    }

    /// The next service event on `topic` that `pick` accepts (others are skipped).
    pub async fn event(&mut self, topic: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (t, v) = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .expect("service event within the wait")
                .expect("event stream open");
            if t == topic && pick(&v) {
                return v;
            }
        }
    }

    /// The underlying MQTT client (more subscriptions).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn shutdown(&self) {
        self.client.shutdown().await;
    }
}

/// The status code of an IM request's error (0 for success).
pub fn code<T>(r: &Result<T, switchboard_client::im::ImError>) -> u32 {
    match r {
        Ok(_) => 0,
        Err(switchboard_client::im::ImError::Status { code, .. }) => *code,
        Err(e) => panic!("not a status error: {e}"),
    }
}

/// A `social/{op}` request about account `user`.
pub async fn social(
    d: &Device,
    op: &str,
    user: &str,
) -> Result<im::Ack, switchboard_client::im::ImError> {
    d.client
        .request(
            &format!("social/{op}"),
            &im::SocialUserRequest {
                user: user.into(),
                message: String::new(),
            },
        )
        .await
}

/// The first page of list `op` (friends, friend_requests, blocked).
pub async fn list(d: &Device, op: &str) -> Vec<im::SocialContact> {
    let l: im::SocialContactList = d
        .client
        .request(&format!("social/{op}"), &im::SocialListRequest::default())
        .await
        .expect("list");
    l.contacts
}

/// The next contact event of kind `kind` (a device also hears of its own requests).
pub async fn contact_event(d: &mut Device, kind: ContactKind) -> im::ContactEvent {
    d.next(|k| match k {
        Kind::Contact(c) if c.kind == kind as i32 => Some(c.clone()),
        _ => None,
    })
    .await
}

/// The next presence event.
pub async fn presence_event(d: &mut Device) -> im::Presence {
    d.next(|k| match k {
        Kind::Presence(p) => p.presence.clone(),
        _ => None,
    })
    .await
}

/// A device of `account` whose token names its platform.
pub async fn device_on(
    b: &ImBroker,
    t: u64,
    account: &str,
    client_id: &str,
    platform: &str,
) -> Device {
    let token = b.im.issue_token(t, account, platform, 600).expect("token");
    Device::connect(b.addr, account, client_id, &token).await
}
