//! The IM service: tenants, users and tokens, conversations with per-conversation sequence
//! numbers, push-pull sync, receipts, unread counts, recall, mentions, typing and push jobs.
//!
//! It lives inside the broker and speaks MQTT 5 with protobuf payloads
//! ([`switchboard_proto::im`]); `docs/protocol.md` is the contract. It plugs in at three
//! places:
//! - as an [`Interceptor`] of `$im/req/` (requests: send, sync, read, ...), answering on the
//!   requester's response topic and acknowledging the PUBLISH when the work is durable;
//! - as an [`Authenticator`] in front of the configured one ([`auth::ImAuth`]): IM tokens,
//!   directory passwords and the service credential; everything else falls through;
//! - as a connection observer ([`presence`]): which devices of which users are online.
//!
//! Events (messages, receipts, unread counts) are ordinary MQTT messages published to each
//! user's inbox topic (`$im/t/{tenant}/u/{uid}`, seen by clients as `$im/inbox`), so
//! delivery, queues and backpressure are the broker's. Every durable write goes through the
//! broker's [`Store`]: messages are appended to per-conversation logs whose seq is assigned
//! inside the commit.
//!
//! Files: [`directory`] (accounts, tenants, users, tokens), [`messaging`] (send), [`actions`] (recall,
//! read, delivered, typing), [`sync`] (sync, history, conversation list), [`presence`]
//! (online devices, kicks, push jobs), [`auth`], [`keys`], [`records`], [`token`],
//! [`error`]. IM part 2, one file (or folder) per area, each with its requests
//! `$im/req/{area}/{op}` and app-server requests `$im/admin/{area}/{op}`: [`groups`],
//! [`chatroom`], [`calls`], [`social`] (contacts, blacklist, profiles, presence),
//! [`moderation`], [`org`] (directory), [`broadcast`].

pub mod actions;
pub mod admission;
pub mod apps;
pub mod auth;
pub mod broadcast;
pub mod calls;
pub mod chatroom;
pub mod cluster;
pub mod console;
pub mod directory;
pub mod error;
pub mod groups;
pub mod hooks;
pub(crate) mod http;
mod inbox;
pub mod json;
pub mod keys;
pub mod messaging;
pub mod moderation;
pub mod nonces;
pub mod org;
pub mod presence;
pub mod push_prefs;
pub mod push_quiet;
pub mod push_tokens;
pub mod records;
pub mod service_api;
mod service_gateway;
mod service_import;
mod service_iot;
mod service_settings;
mod service_user;
pub mod social;
pub mod sync;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use switchboard_proto::im;
use switchboard_proto::{Properties, QoS, ReasonCode};
use tokio::sync::oneshot;

use crate::BrokerState;
use crate::message::Message;
use crate::namespace::{IM_REQUEST_PREFIX, inbox_topic};
use crate::pipeline::intercept::{Intercepted, Interceptor, Origin};
use crate::store::{Applied, Store};
pub use error::ImError;
use records::TenantRecord;

/// Number of conversation locks (sends, reads and recalls of one conversation run one at
/// a time, so events leave in seq order; conversations share a lock when their hashes
/// collide).
const CONV_LOCKS: usize = 256;

/// Who an IM device is (set by [`auth::ImAuth`] at login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImLogin {
    pub tenant: u64,
    pub uid: u64,
    pub account: String,
    /// "phone", "pc", "web", "pad" or "" (unknown).
    pub platform: String,
    /// Id of the token the device logged in with ("" for password logins).
    pub token_id: String,
}

/// The IM service.
pub struct ImService {
    store: Arc<dyn Store>,
    /// Serialises directory creations (check-then-act).
    admin: tokio::sync::Mutex<()>,
    tenants: RwLock<HashMap<u64, Arc<TenantRecord>>>,
    conv_locks: Vec<tokio::sync::Mutex<()>>,
    /// Per conversation lock: the turn of the last message submitted, so that messages
    /// committed together are announced in seq order (see `messaging::deliver`).
    emit_turns: Vec<Mutex<Option<oneshot::Receiver<()>>>>,
    online: Mutex<foldhash::HashMap<(u64, u64), presence::Online>>,
    broker: OnceLock<Weak<BrokerState>>,
    /// The link to the other nodes' IM services, in cluster mode ([`cluster`]).
    cluster: OnceLock<Arc<cluster::ImCluster>>,
    /// Password of the service credential (gateway, push worker), if one is configured.
    service_secret: Option<String>,
    /// Requests being worked on, over all devices and per connection.
    admission: admission::Admission,
    // In-memory state of the areas of IM part 2 (each area's own struct).
    groups: groups::Groups,
    rooms: chatroom::Rooms,
    calls: calls::Calls,
    social: social::Social,
    moderation: moderation::Moderation,
    org: org::Org,
    hooks: hooks::PendingHooks,
    /// The web console's state (the operations samples).
    console: ConsoleData,
    /// Nonces of the gateways' signed calls ([`nonces`]).
    nonces: Mutex<nonces::NonceWindow>,
}

/// What the console keeps in memory (console users and sessions are in the store).
#[derive(Debug, Default)]
struct ConsoleData {
    samples: Arc<console::samples::Samples>,
    /// Every push worker's decisions (bounded ring).
    push_trace: console::push_trace::PushTrace,
}

impl std::fmt::Debug for ImService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImService").finish_non_exhaustive()
    }
}

impl ImService {
    /// A service over `store`; `service_secret` is the password of the `$service` login.
    pub fn new(store: Arc<dyn Store>, service_secret: Option<String>) -> Arc<ImService> {
        Arc::new(ImService {
            store,
            admin: tokio::sync::Mutex::new(()),
            tenants: RwLock::new(HashMap::new()),
            conv_locks: (0..CONV_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            emit_turns: (0..CONV_LOCKS).map(|_| Mutex::new(None)).collect(),
            online: Mutex::new(foldhash::HashMap::default()),
            broker: OnceLock::new(),
            cluster: OnceLock::new(),
            service_secret,
            admission: admission::Admission::default(),
            groups: groups::Groups::default(),
            rooms: chatroom::Rooms::default(),
            calls: calls::Calls::default(),
            social: social::Social::default(),
            moderation: moderation::Moderation::default(),
            org: org::Org::default(),
            hooks: hooks::PendingHooks::default(),
            console: ConsoleData::default(),
            nonces: Mutex::default(),
        })
    }

    /// Connects the service to the running broker (events, kicks).
    pub fn attach(self: &Arc<Self>, broker: &Arc<BrokerState>) {
        let _ = self.broker.set(Arc::downgrade(broker));
        self.start_cluster(broker);
        console::samples::start(Arc::downgrade(&self.console.samples), broker);
    }

    fn broker(&self) -> Option<Arc<BrokerState>> {
        self.broker.get().and_then(Weak::upgrade)
    }

    /// Commits `ops` and waits until they are durable.
    async fn commit(&self, ops: Vec<crate::store::Op>) -> Result<Applied, ImError> {
        let (tx, rx) = oneshot::channel();
        self.store.write(ops, Some(tx));
        rx.await
            .map_err(|_| ImError::Unavailable("store writer stopped".into()))?
            .map_err(ImError::from)
    }

    /// The lock of conversation `conv` of tenant `tid`.
    fn conv_lock(&self, tid: u64, conv: &keys::ConvId) -> &tokio::sync::Mutex<()> {
        &self.conv_locks[conv_shard(tid, conv)]
    }

    /// Takes the next turn to announce a message of `conv`: returns the previous message's
    /// turn (wait for it) and the sender that ends this one (dropped when done).
    fn next_turn(
        &self,
        tid: u64,
        conv: &keys::ConvId,
    ) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let (tx, rx) = oneshot::channel();
        let previous = self.emit_turns[conv_shard(tid, conv)].lock().replace(rx);
        (previous, tx)
    }

    /// Publishes `event` to every online device of user `uid` of tenant `tid`.
    fn emit(&self, tid: u64, uid: u64, event: im::event::Kind, qos: QoS) {
        if !self.is_online(tid, uid) {
            return;
        }
        let Some(b) = self.broker() else { return };
        let payload = im::Event {
            kind: Some(event),
            unread_after: None,
        }
        .encode_to_vec();
        b.publish_detached(Arc::new(Message {
            topic: inbox_topic(tid, uid),
            payload: Bytes::from(payload),
            qos,
            retain: false,
            properties: None,
            expires_at: None,
            origin: 0,
        }));
    }

    /// Answers a request on the requester's response topic.
    fn reply(&self, to: &ReplyTo, body: Vec<u8>) {
        let Some(b) = self.broker() else { return };
        let properties = Properties {
            correlation_data: to.correlation.clone(),
            ..Properties::default()
        };
        b.publish_detached(Arc::new(Message {
            topic: to.topic.clone(),
            payload: Bytes::from(body),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: crate::message::boxed(properties),
            expires_at: None,
            origin: 0,
        }));
    }

    /// Runs one request and encodes its response.
    async fn handle(
        &self,
        login: &ImLogin,
        client_id: &str,
        session: u64,
        op: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, ImError> {
        fn decode<T: prost::Message + Default>(p: &[u8]) -> Result<T, ImError> {
            T::decode(p).map_err(|e| ImError::BadRequest(format!("malformed protobuf: {e}")))
        }
        self.first_login_gate(login, op)?;
        if let Some((area, rest)) = op.split_once('/') {
            return match area {
                "group" => self.group_request(login, rest, payload).await,
                "room" => self.room_request(login, client_id, rest, payload).await,
                "call" => self.call_request(login, client_id, rest, payload).await,
                "social" => self.social_request(login, rest, payload).await,
                "dir" => self.org_request(login, rest, payload).await,
                "app" => self.app_request(login, rest, payload).await,
                "push" => self.push_request(login, client_id, rest, payload).await,
                _ => Err(ImError::NotFound(format!("no such request: {op}"))),
            };
        }
        Ok(match op {
            "send" => self
                .send_from(login, session, decode(payload)?)
                .await?
                .encode_to_vec(),
            "sync" => self.sync(login, decode(payload)?)?.encode_to_vec(),
            "history" => self.history(login, decode(payload)?)?.encode_to_vec(),
            "conversations" => self.conversations(login, decode(payload)?)?.encode_to_vec(),
            "read" => self.read(login, decode(payload)?).await?.encode_to_vec(),
            "delivered" => self
                .delivered(login, decode(payload)?)
                .await?
                .encode_to_vec(),
            "recall" => self.recall(login, decode(payload)?).await?.encode_to_vec(),
            "typing" => self.typing(login, decode(payload)?)?.encode_to_vec(),
            "device_state" => {
                let req: im::DeviceStateRequest = decode(payload)?;
                self.set_background(login, client_id, req.background);
                im::Ack {
                    status: error::ok(),
                }
                .encode_to_vec()
            }
            "features" => {
                let req: im::FeaturesRequest = decode(payload)?;
                self.set_features(login.tenant, login.uid, client_id, req.inline_unread);
                im::Ack {
                    status: error::ok(),
                }
                .encode_to_vec()
            }
            "update_conversation" => self
                .update_conversation(login, decode(payload)?)
                .await?
                .encode_to_vec(),
            other => return Err(ImError::NotFound(format!("no such request: {other}"))),
        })
    }
}

/// Where a request's answer goes.
#[derive(Debug, Clone)]
struct ReplyTo {
    topic: String,
    correlation: Option<Bytes>,
}

/// The interceptor of `$im/req/`.
pub struct ImRequests(pub Arc<ImService>);

impl Interceptor for ImRequests {
    fn publish(&self, broker: &Arc<BrokerState>, origin: &Origin<'_>, msg: Message) -> Intercepted {
        let Some(login) = origin.identity.im.clone() else {
            tracing::info!(client_id = origin.client_id, topic = %msg.topic, "IM request from a client without an IM login refused");
            return Intercepted::now(ReasonCode::NotAuthorized);
        };
        let op = msg
            .topic
            .strip_prefix(IM_REQUEST_PREFIX)
            .unwrap_or_default()
            .to_owned();
        let props = msg.properties.as_deref();
        let reply = props
            .and_then(|p| p.response_topic.as_deref())
            .and_then(|t| origin.namespace.response_topic(t))
            .map(|topic| ReplyTo {
                topic,
                correlation: props.and_then(|p| p.correlation_data.clone()),
            });
        // Beyond a bound: a QoS 0 request is dropped (its acknowledgement code is not
        // sent), a QoS 1/2 one refused with 0x97.
        let permit = match self.0.admission.admit(msg.origin) {
            Ok(p) => p,
            Err(why) => {
                tracing::warn!(
                    client_id = origin.client_id,
                    op,
                    qos = msg.qos as u8,
                    "IM request refused: {why}"
                );
                return Intercepted::now(ReasonCode::QuotaExceeded);
            }
        };
        let (tx, rx) = oneshot::channel();
        let service = self.0.clone();
        let client_id = origin.client_id.to_owned();
        broker.tasks.spawn(async move {
            let _permit = permit;
            let result = service
                .handle(&login, &client_id, msg.origin, &op, &msg.payload)
                .await;
            let code = match &result {
                Ok(_) => ReasonCode::Success,
                Err(e) => {
                    tracing::info!(tenant = login.tenant, user = %login.account, op, error = %e, "IM request failed");
                    e.reason_code()
                }
            };
            if let Some(to) = &reply {
                let body = result.unwrap_or_else(|e| {
                    im::Ack {
                        status: Some(e.status()),
                    }
                    .encode_to_vec()
                });
                service.reply(to, body);
            }
            let _ = tx.send(code);
        });
        Intercepted::later(rx)
    }
}

/// The lock shard of a conversation.
fn conv_shard(tid: u64, conv: &keys::ConvId) -> usize {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::default().hash_one((tid, conv)) as usize % CONV_LOCKS
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `n` random bytes from the system's secure generator, as hex.
pub fn random_hex(n: usize) -> Result<String, ImError> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| ImError::Internal("system random number generator failed".into()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
