//! The session registry: which sessions exist, which connection (if any) holds each, and
//! what a session keeps while its client is away.
//!
//! A session's state ([`SessionState`]) lives in its connection task while connected and is
//! parked here when the connection ends, until the client resumes it, it expires, or a
//! clean start replaces it. Takeover ([MQTT-3.1.4-3]): a second CONNECT with the same
//! client identifier kicks the first connection (DISCONNECT 0x8E), waits for it to park
//! its state, then takes it. Delayed wills and session expiry are timers guarded by a
//! generation number, so a reconnect simply makes them stale.
//!
//! The registry also maps each session's unique id to its mailbox: routing answers with
//! ids, and delivery looks the mailboxes up here.
//!
//! Files: this one (types, lookups, operator views), [`lifecycle`] (open, close,
//! takeover, wills, expiry) and [`restore`] (rebuilding from the store at start).

mod lifecycle;
mod orphaned;
mod restore;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use switchboard_proto::session::InflightState;
use switchboard_proto::{ReasonCode, SubscriptionOptions};
use tokio::sync::oneshot;

use crate::BrokerState;
use crate::mailbox::Mailbox;
use crate::message::{Delivery, Message};
use crate::store::{SessionRecord, SubEntry};

/// Session expiry meaning "never" (0xFFFFFFFF, MQTT 5.0 section 3.1.2.11.2).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// A subscription as the session remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRecord {
    pub opts: SubscriptionOptions,
    pub id: Option<u32>,
}

/// Everything a session keeps between connections.
#[derive(Debug)]
pub struct SessionState {
    /// Unique per session (a clean start makes a new one).
    pub uid: u64,
    pub mailbox: Arc<Mailbox>,
    /// Raw filter (including `$share/...`) → options.
    pub subs: HashMap<String, SubRecord>,
    pub inflight: InflightState,
    /// Outgoing packet id → stored queue key, for deliveries awaiting acknowledgement.
    pub stored_inflight: HashMap<u16, u64>,
    /// A record of this session is in the store.
    pub persisted: bool,
}

impl SessionState {
    /// The stored form of this session.
    /// The store op that saves this session under `client_id`: the one place that lays out
    /// a session record (subscriptions, expiry, owner, pending will).
    pub fn save_op(
        &self,
        client_id: &str,
        owner: Option<&str>,
        expiry: u32,
        disconnected_at: Option<u64>,
        will: Option<(Vec<u8>, u64)>,
    ) -> crate::store::Op {
        crate::store::Op::PutSession {
            client_id: client_id.to_owned(),
            record: self.record(owner, expiry, disconnected_at, will),
        }
    }

    fn record(
        &self,
        owner: Option<&str>,
        expiry: u32,
        disconnected_at: Option<u64>,
        will: Option<(Vec<u8>, u64)>,
    ) -> SessionRecord {
        let mut subs: Vec<SubEntry> = self
            .subs
            .iter()
            .map(|(f, r)| SubEntry::new(f, r.opts, r.id))
            .collect();
        subs.sort_by(|a, b| a.filter.cmp(&b.filter));
        SessionRecord {
            uid: self.uid,
            expiry,
            subs,
            disconnected_at,
            will,
            owner: owner.map(str::to_owned),
        }
    }
}

/// A request to end a connection, sent to its task.
#[derive(Debug)]
pub struct Kick {
    pub code: ReasonCode,
    /// Server Reference for 0x9C / 0x9D (a client asked to move to another server).
    pub server_reference: Option<String>,
    /// Signalled once the session state is parked.
    pub done: oneshot::Sender<()>,
}

#[derive(Debug)]
pub(crate) struct Link {
    conn_id: u64,
    /// Boxed in the channel: the channel's shared state then holds a pointer, not the
    /// kick (40 B less for every connection, kicked or not).
    kick: Option<oneshot::Sender<Box<Kick>>>,
    info: Option<Arc<LiveInfo>>,
}

/// What operators see of a connected session (kept current by its connection task).
/// Kept small (one per connection, 80 B): the transport as an index, the subscriptions
/// as an exactly sized list.
#[derive(Debug)]
pub struct LiveInfo {
    /// Kept as the address (rendered when shown): a string would cost a heap allocation
    /// per connection.
    pub peer: std::net::SocketAddr,
    /// Unix seconds.
    pub since: u64,
    pub mailbox: Arc<Mailbox>,
    pub subscriptions: parking_lot::Mutex<Box<[String]>>,
    /// Index in [`crate::metrics::TRANSPORTS`].
    transport: u8,
}

impl LiveInfo {
    pub fn new(
        transport: &'static str,
        peer: std::net::SocketAddr,
        since: u64,
        mailbox: Arc<Mailbox>,
        subscriptions: Vec<String>,
    ) -> LiveInfo {
        LiveInfo {
            peer,
            since,
            mailbox,
            subscriptions: parking_lot::Mutex::new(subscriptions.into_boxed_slice()),
            transport: u8::try_from(crate::metrics::transport_index(transport)).unwrap_or(0),
        }
    }

    /// The transport's name (`tcp`, `tls`, `ws`, `wss`, `quic`).
    pub fn transport(&self) -> &'static str {
        crate::metrics::TRANSPORTS
            .get(usize::from(self.transport))
            .copied()
            .unwrap_or("tcp")
    }
}

/// One session, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionSummary {
    pub client_id: String,
    pub online: bool,
    pub transport: Option<&'static str>,
    pub peer: Option<String>,
    pub connected_since: Option<u64>,
    /// Session Expiry Interval, seconds (4294967295: never).
    pub expiry: u32,
    pub queued: usize,
    pub subscriptions: Vec<String>,
}

/// What operators see of session `id`.
fn summary_of(id: &str, e: &Entry) -> SessionSummary {
    let live = e.link.as_ref().and_then(|l| l.info.clone());
    let (queued, subscriptions) = match (&live, &e.state) {
        (Some(i), _) => (i.mailbox.len(), i.subscriptions.lock().to_vec()),
        (None, Some(s)) => {
            let mut subs: Vec<String> = s.subs.keys().cloned().collect();
            subs.sort();
            (s.mailbox.len(), subs)
        }
        (None, None) => (0, Vec::new()),
    };
    SessionSummary {
        client_id: id.to_owned(),
        online: e.link.is_some(),
        transport: live.as_ref().map(|i| i.transport()),
        peer: live.as_ref().map(|i| i.peer.to_string()),
        connected_since: live.as_ref().map(|i| i.since),
        expiry: e.expiry,
        queued,
        subscriptions,
    }
}

#[derive(Debug)]
pub(crate) struct Entry {
    /// Parked state while offline. Boxed: while the session is connected its state lives
    /// in the connection task, and the registry's entry (one per session, in a map that
    /// keeps spare buckets) stays small.
    state: Option<Box<SessionState>>,
    link: Option<Link>,
    expiry: u32,
    generation: u64,
    /// A will waiting for its delay.
    will: Option<Arc<Message>>,
    /// The identity that created the session ([`owner_of`]). A boxed `str` (no spare
    /// capacity word), as the map's key: one entry per session, in a map that keeps spare
    /// buckets.
    owner: Option<Box<str>>,
}

/// Shards of the id → mailbox map (a power of two): lookups on the delivery path take a
/// read lock on one shard only.
const SHARDS: usize = 16;

type IdMap<V> = std::collections::HashMap<u64, V, foldhash::fast::RandomState>;

/// All sessions by client identifier, and their mailboxes by session id.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<Box<str>, Entry>>,
    /// Entries of `map` with an expiry above 0 (changed only under the `map` lock).
    persistent: std::sync::atomic::AtomicUsize,
    mailboxes: [RwLock<IdMap<Arc<Mailbox>>>; SHARDS],
    /// While draining: the Server Reference new CONNECTs are sent to (`Some(None)`:
    /// draining without one).
    draining: RwLock<Option<Option<String>>>,
}

/// Why [`BrokerState::open_session`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The client id belongs to a session another identity created.
    #[error("client identifier in use by another user")]
    NotOwner,
    /// `max_persistent_sessions` persistent sessions exist already.
    #[error("too many persistent sessions")]
    TooManySessions,
    /// Cluster mode: a later CONNECT on another node claimed the client id meanwhile.
    #[error("a later connection took the client identifier")]
    Busy,
    /// Cluster mode: the session registry cannot be reached, or the node holding the
    /// session did not let go in time.
    #[error("session registry unavailable")]
    Unavailable,
}

/// What [`BrokerState::open_session`] hands the connection.
#[derive(Debug)]
pub struct Opened {
    pub state: SessionState,
    pub session_present: bool,
    pub kicked: oneshot::Receiver<Box<Kick>>,
    /// Fires once the store has what the CONNACK must not run ahead of:
    /// - a clean start's removal of the stored session it replaces (a crash before would
    ///   bring the old session back: its subscriptions, its queue, the packet ids of QoS 2
    ///   messages it had not completed, which would make the client's new message with
    ///   such an id count as a resend);
    /// - for a resumed session, the writes of its previous connection (one that ended
    ///   while a QoS 2 step or a subscription change was being committed; writes commit
    ///   in order, so this one comes after them): the resumed flow must not run ahead
    ///   of them either.
    pub settled: Option<crate::store::Durable>,
}

/// How a connection ended, for [`BrokerState::close_session`].
#[derive(Debug)]
pub struct Closing {
    pub state: SessionState,
    /// The will to publish (already cleared on a normal DISCONNECT), and its delay.
    pub will: Option<(Arc<Message>, u32)>,
    pub expiry: u32,
    /// Outgoing QoS 1/2 deliveries that came through shared subscriptions, by packet id.
    pub shared_inflight: HashMap<u16, Delivery>,
}

impl Sessions {
    /// The mailbox of session `uid`, if the session exists.
    pub fn mailbox(&self, uid: u64) -> Option<Arc<Mailbox>> {
        self.mailboxes[uid as usize % SHARDS]
            .read()
            .get(&uid)
            .cloned()
    }

    /// Calls `f` with the mailbox of session `uid` without cloning it.
    pub fn with_mailbox<R>(&self, uid: u64, f: impl FnOnce(&Mailbox) -> R) -> Option<R> {
        self.mailboxes[uid as usize % SHARDS]
            .read()
            .get(&uid)
            .map(|m| f(m))
    }

    /// Whether session `uid` has a connection attached.
    pub fn is_online(&self, uid: u64) -> bool {
        self.with_mailbox(uid, Mailbox::is_online).unwrap_or(false)
    }

    fn register_mailbox(&self, uid: u64, mailbox: Arc<Mailbox>) {
        self.mailboxes[uid as usize % SHARDS]
            .write()
            .insert(uid, mailbox);
    }

    fn unregister_mailbox(&self, uid: u64) {
        self.mailboxes[uid as usize % SHARDS].write().remove(&uid);
    }

    /// Number of persistent sessions (Session Expiry Interval above 0), connected or not.
    pub fn persistent(&self) -> usize {
        self.persistent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts an entry's expiry changing from `old` to `new` (0: absent or not persistent).
    fn count_persistent(&self, old: u32, new: u32) {
        use std::sync::atomic::Ordering::Relaxed;
        match (old > 0, new > 0) {
            (false, true) => {
                self.persistent.fetch_add(1, Relaxed);
            }
            (true, false) => {
                self.persistent.fetch_sub(1, Relaxed);
            }
            _ => {}
        }
    }

    /// Whether a session (connected or parked) exists under `client_id`.
    pub fn contains(&self, client_id: &str) -> bool {
        self.map.lock().contains_key(client_id)
    }

    /// Whether this node is draining, and where it sends clients.
    pub fn draining(&self) -> Option<Option<String>> {
        self.draining.read().clone()
    }

    /// Starts (`Some`) or stops (`None`) draining.
    pub fn set_draining(&self, to: Option<Option<String>>) {
        *self.draining.write() = to;
    }

    /// Number of sessions, connected or not.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BrokerState {
    /// Publishes what the admin API shows of a connected session.
    pub fn attach_info(&self, client_id: &str, conn_id: u64, info: Arc<LiveInfo>) {
        let mut map = self.sessions.map.lock();
        if let Some(link) = map.get_mut(client_id).and_then(|e| e.link.as_mut())
            && link.conn_id == conn_id
        {
            link.info = Some(info);
        }
    }

    /// Messages waiting in all session queues (for metrics: no copies made).
    pub fn queued_total(&self) -> usize {
        let map = self.sessions.map.lock();
        map.values()
            .map(
                |e| match (e.link.as_ref().and_then(|l| l.info.as_ref()), &e.state) {
                    (Some(i), _) => i.mailbox.len(),
                    (None, Some(s)) => s.mailbox.len(),
                    (None, None) => 0,
                },
            )
            .sum()
    }

    /// Every session, connected or parked, sorted by client identifier.
    pub fn session_summaries(&self) -> Vec<SessionSummary> {
        let map = self.sessions.map.lock();
        let mut out: Vec<SessionSummary> = map.iter().map(|(id, e)| summary_of(id, e)).collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    /// The session of `client_id`, connected or parked (one map lookup).
    pub fn session_summary(&self, client_id: &str) -> Option<SessionSummary> {
        let map = self.sessions.map.lock();
        map.get(client_id).map(|e| summary_of(client_id, e))
    }

    /// The first `limit` messages queued for `client_id` (connected or parked), oldest
    /// first; `None` if there is no such session.
    pub fn session_queue(
        &self,
        client_id: &str,
        limit: usize,
    ) -> Option<Vec<crate::mailbox::QueuedView>> {
        let mailbox = {
            let map = self.sessions.map.lock();
            let e = map.get(client_id)?;
            match (e.link.as_ref().and_then(|l| l.info.as_ref()), &e.state) {
                (Some(i), _) => Some(i.mailbox.clone()),
                (None, Some(s)) => Some(s.mailbox.clone()),
                (None, None) => None,
            }
        };
        Some(mailbox.map(|m| m.peek(limit)).unwrap_or_default())
    }

    /// Whether a connection holds the session of `client_id` right now.
    pub fn client_online(&self, client_id: &str) -> bool {
        self.sessions
            .map
            .lock()
            .get(client_id)
            .is_some_and(|e| e.link.is_some())
    }

    /// The connection id and mailbox of the connection holding `client_id` right now (the
    /// IM service's chatrooms deliver straight to a member device's queue).
    pub fn live_mailbox(&self, client_id: &str) -> Option<(u64, Arc<Mailbox>)> {
        let map = self.sessions.map.lock();
        let link = map.get(client_id)?.link.as_ref()?;
        Some((link.conn_id, link.info.as_ref()?.mailbox.clone()))
    }

    /// Asks the connection holding `client_id` to close with `code`; true if there was one.
    pub fn kick(&self, client_id: &str, code: ReasonCode) -> bool {
        self.kick_with(client_id, code, None)
    }

    /// Asks the connection holding `client_id` to move to server `to` (DISCONNECT 0x9C Use
    /// another server with a Server Reference, MQTT 5.0 section 4.11; a 3.1.1 client is just
    /// disconnected); true if there was one. For cluster mode: a node hands a client over.
    pub fn redirect(&self, client_id: &str, to: &str) -> bool {
        self.kick_with(client_id, ReasonCode::UseAnotherServer, Some(to.to_owned()))
    }

    /// Client ids with a connection attached right now.
    pub fn online_clients(&self) -> Vec<String> {
        let map = self.sessions.map.lock();
        map.iter()
            .filter(|(_, e)| e.link.is_some())
            .map(|(id, _)| id.to_string())
            .collect()
    }

    /// Client ids of parked (offline) sessions.
    pub fn parked_clients(&self) -> Vec<String> {
        let map = self.sessions.map.lock();
        map.iter()
            .filter(|(_, e)| e.link.is_none())
            .map(|(id, _)| id.to_string())
            .collect()
    }

    /// Forgets a parked session here without touching the store (another node took it).
    pub(crate) fn evict(&self, client_id: &str) {
        let removed = {
            let mut map = self.sessions.map.lock();
            match map.get(client_id) {
                Some(e) if e.link.is_none() => map.remove(client_id),
                _ => None,
            }
        };
        if let Some(mut e) = removed {
            self.sessions.count_persistent(e.expiry, 0);
            if let Some(s) = e.state.take() {
                self.discard(*s);
            }
        }
    }

    /// Asks the connection holding `client_id` to close with `code` and waits, at most
    /// `wait`, for it to park its session (cluster takeover); true if there was one.
    pub async fn kick_and_wait(
        &self,
        client_id: &str,
        code: ReasonCode,
        wait: std::time::Duration,
    ) -> bool {
        let parked = {
            let mut map = self.sessions.map.lock();
            let Some(kick) = map
                .get_mut(client_id)
                .and_then(|e| e.link.as_mut())
                .and_then(|l| l.kick.take())
            else {
                return false;
            };
            let (done, parked) = oneshot::channel();
            let sent = kick.send(Box::new(Kick {
                code,
                server_reference: None,
                done,
            }));
            if sent.is_err() {
                return false;
            }
            parked
        };
        let _ = tokio::time::timeout(wait, parked).await;
        true
    }

    pub(crate) fn kick_with(&self, client_id: &str, code: ReasonCode, to: Option<String>) -> bool {
        let mut map = self.sessions.map.lock();
        let Some(kick) = map
            .get_mut(client_id)
            .and_then(|e| e.link.as_mut())
            .and_then(|l| l.kick.take())
        else {
            return false;
        };
        let (done, _) = oneshot::channel();
        kick.send(Box::new(Kick {
            code,
            server_reference: to,
            done,
        }))
        .is_ok()
    }
}

/// The owner key of a session created by `who`: its tenant and user name; `None` for an
/// anonymous client. A client id belongs to the owner that created its session: another
/// owner presenting it is refused with 0x85 (3.1.1: identifier rejected) and cannot kick the
/// connection holding it or replace its persistent queue with a clean start. Anonymous
/// clients cannot be told apart, so they share one (empty) owner.
pub fn owner_of(who: &crate::auth::Identity) -> Option<String> {
    if who.anonymous {
        return None;
    }
    let user = who.username.as_deref()?;
    Some(match &who.namespace {
        crate::namespace::Namespace::Default => format!("u:{user}"),
        crate::namespace::Namespace::Tenant { prefix, .. } => format!("{prefix}u:{user}"),
        crate::namespace::Namespace::Service => format!("svc:{user}"),
        crate::namespace::Namespace::Probe => format!("probe:{user}"),
    })
}

/// The key of `who`'s session with client id `client_id` in the registry and the store:
/// a tenant's clients have their own space, `$t/{tenant}/{client_id}`, so that a client of
/// another tenant (or an anonymous one) cannot take a device's id first and lock it out;
/// other clients keep the client id itself. What a client sees stays its own client id.
/// `None`: an id starting with `$t/` outside a tenant (it would reach into tenants' space).
pub fn key_of(who: &crate::auth::Identity, client_id: &str) -> Option<String> {
    match &who.namespace {
        crate::namespace::Namespace::Tenant { prefix, .. } => Some(format!("{prefix}{client_id}")),
        _ if client_id.starts_with(crate::namespace::TENANT_PREFIX) => None,
        _ => Some(client_id.to_owned()),
    }
}

/// The session key of client `client_id` of tenant `tid` ([`key_of`] for a tenant's
/// identity), for the IM service, which knows a device by tenant and client id.
pub fn tenant_session_key(tid: u64, client_id: &str) -> String {
    format!("{}{tid}/{client_id}", crate::namespace::TENANT_PREFIX)
}

/// Turns a will into the message it stands for, with its delay.
pub fn will_message(w: switchboard_proto::Will, origin: u64, now: Instant) -> (Arc<Message>, u32) {
    let delay = w.properties.will_delay_interval.unwrap_or(0);
    (Arc::new(Message::from_will(w, origin, now)), delay)
}
