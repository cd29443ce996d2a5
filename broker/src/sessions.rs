//! The session registry: which sessions exist, which connection (if any) holds each, and
//! what a session keeps while its client is away.
//!
//! A session's state ([`SessionState`]) lives in its connection task while connected and is
//! parked here when the connection ends, until the client resumes it, it expires, or a
//! clean start replaces it. Takeover ([MQTT-3.1.4-3]): a second CONNECT with the same
//! client identifier kicks the first connection (DISCONNECT 0x8E), waits for it to park
//! its state, then takes it. Delayed wills and session expiry are timers guarded by a
//! generation number, so a reconnect simply makes them stale.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard_proto::session::{InflightState, Outbound};
use switchboard_proto::{ReasonCode, SubscriptionOptions};
use tokio::sync::oneshot;

use crate::BrokerState;
use crate::mailbox::Mailbox;
use crate::message::{Delivery, Message};
use crate::store::{Op, Sent, SessionRecord, Snapshot, SubEntry, codec, unix_now};

/// Session expiry meaning "never" ([MQTT-3.1.2-?] 0xFFFFFFFF).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// How long a new connection waits for the one it takes over to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

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
    pub fn record(
        &self,
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
        }
    }
}

/// A request to end a connection, sent to its task.
#[derive(Debug)]
pub struct Kick {
    pub code: ReasonCode,
    /// Signalled once the session state is parked.
    pub done: oneshot::Sender<()>,
}

#[derive(Debug)]
struct Link {
    conn_id: u64,
    kick: Option<oneshot::Sender<Kick>>,
    info: Option<Arc<LiveInfo>>,
}

/// What operators see of a connected session (kept current by its connection task).
#[derive(Debug)]
pub struct LiveInfo {
    pub transport: &'static str,
    pub peer: String,
    /// Unix seconds.
    pub since: u64,
    pub mailbox: Arc<Mailbox>,
    pub subscriptions: parking_lot::Mutex<Vec<String>>,
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

#[derive(Debug)]
struct Entry {
    /// Parked state while offline.
    state: Option<SessionState>,
    link: Option<Link>,
    expiry: u32,
    generation: u64,
    /// A will waiting for its delay.
    will: Option<Arc<Message>>,
}

/// All sessions by client identifier.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
}

/// What [`BrokerState::open_session`] hands the connection.
#[derive(Debug)]
pub struct Opened {
    pub state: SessionState,
    pub session_present: bool,
    pub kicked: oneshot::Receiver<Kick>,
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
    /// Number of sessions, connected or not.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BrokerState {
    /// Attaches connection `conn_id` to the session of `client_id`, taking it over from
    /// another connection if needed.
    pub async fn open_session(
        self: &Arc<Self>,
        client_id: &str,
        clean_start: bool,
        expiry: u32,
        conn_id: u64,
    ) -> Opened {
        loop {
            // Someone holds the session: ask it to let go, then look again.
            let holder = {
                let mut map = self.sessions.map.lock();
                map.get_mut(client_id)
                    .and_then(|e| e.link.as_mut())
                    .map(|link| (link.conn_id, link.kick.take()))
            };
            if let Some((old, kick)) = holder {
                let (done_tx, done_rx) = oneshot::channel();
                let sent = kick.is_some_and(|k| {
                    k.send(Kick {
                        code: ReasonCode::SessionTakenOver,
                        done: done_tx,
                    })
                    .is_ok()
                });
                let parked = sent && tokio::time::timeout(TAKEOVER_WAIT, done_rx).await.is_ok();
                if !parked {
                    tracing::warn!(
                        client_id,
                        old,
                        "previous connection did not let go; its session state is dropped"
                    );
                    let mut map = self.sessions.map.lock();
                    if let Some(e) = map.get_mut(client_id)
                        && e.link.as_ref().is_some_and(|l| l.conn_id == old)
                    {
                        e.link = None;
                    }
                }
                continue;
            }
            let mut map = self.sessions.map.lock();
            if map.get(client_id).is_some_and(|e| e.link.is_some()) {
                continue;
            }
            let generation = self.next_id();
            let (kick_tx, kick_rx) = oneshot::channel();
            let link = Link {
                conn_id,
                kick: Some(kick_tx),
                info: None,
            };
            let mut ended = None;
            let mut resumed = None;
            if let Some(mut e) = map.remove(client_id) {
                let will = e.will.take();
                if clean_start {
                    ended = Some((e.state.take(), will));
                } else {
                    // Reconnected before the will delay ran out: no will ([MQTT-3.1.3-9]).
                    resumed = e.state.take();
                }
            }
            let session_present = resumed.is_some();
            let mut state = resumed.unwrap_or_else(|| self.new_session_state());
            state.mailbox.set_online(true);
            state.mailbox.set_persistent(expiry > 0);
            if let Some(store) = self.router.store()
                && (expiry > 0 || state.persisted)
            {
                store.write(
                    vec![Op::PutSession {
                        client_id: client_id.to_owned(),
                        record: state.record(expiry, None, None),
                    }],
                    None,
                );
                state.persisted = true;
            }
            map.insert(
                client_id.to_owned(),
                Entry {
                    state: None,
                    link: Some(link),
                    expiry,
                    generation,
                    will: None,
                },
            );
            drop(map);
            if let Some((old_state, will)) = ended {
                if let Some(s) = old_state {
                    self.forget(client_id, &s);
                    self.discard(s);
                }
                if let Some(w) = will {
                    self.publish_will(w);
                }
            }
            return Opened {
                state,
                session_present,
                kicked: kick_rx,
            };
        }
    }

    fn new_session_state(&self) -> SessionState {
        let l = &self.config.limits;
        SessionState {
            uid: self.next_id(),
            mailbox: Arc::new(Mailbox::new(l.max_queued_messages, l.max_queued_bytes)),
            subs: HashMap::new(),
            inflight: InflightState::default(),
            stored_inflight: HashMap::new(),
            persisted: false,
        }
    }

    /// Parks or ends the session of a connection that has ended, and takes care of its will.
    pub fn close_session(self: &Arc<Self>, client_id: &str, conn_id: u64, mut c: Closing) {
        c.state.mailbox.set_online(false);
        self.redeliver_shared(&mut c);
        let mut map = self.sessions.map.lock();
        let owner = map
            .get(client_id)
            .and_then(|e| e.link.as_ref())
            .is_some_and(|l| l.conn_id == conn_id);
        if !owner {
            drop(map);
            self.discard(c.state);
            return;
        }
        if c.expiry == 0 {
            map.remove(client_id);
            drop(map);
            self.forget(client_id, &c.state);
            self.discard(c.state);
            if let Some((w, _)) = c.will {
                self.publish_will(w);
            }
            return;
        }
        let generation = self.next_id();
        let mut publish_now = None;
        if let Some(store) = self.router.store() {
            let will = match &c.will {
                Some((w, delay)) if *delay > 0 => {
                    let due = unix_now() + u64::from((*delay).min(c.expiry));
                    Some((codec::encode_message(w, Instant::now()), due))
                }
                _ => None,
            };
            let record = c.state.record(c.expiry, Some(unix_now()), will);
            store.write(
                vec![Op::PutSession {
                    client_id: client_id.to_owned(),
                    record,
                }],
                None,
            );
            c.state.persisted = true;
        }
        if let Some(e) = map.get_mut(client_id) {
            e.link = None;
            e.state = Some(c.state);
            e.expiry = c.expiry;
            e.generation = generation;
            match c.will {
                Some((w, 0)) => publish_now = Some(w),
                Some((w, delay)) => {
                    e.will = Some(w);
                    self.spawn_will_timer(client_id, generation, delay.min(c.expiry));
                }
                None => {}
            }
        }
        drop(map);
        if c.expiry != NEVER_EXPIRES {
            self.spawn_expiry_timer(client_id, generation, c.expiry);
        }
        if let Some(w) = publish_now {
            self.publish_will(w);
        }
    }

    /// Shared-subscription messages of a leaving member go to another member: queued ones,
    /// and sent ones not yet acknowledged ([MQTT-4.8.2-?] SHOULD).
    fn redeliver_shared(&self, c: &mut Closing) {
        if !c.shared_inflight.is_empty() {
            let shared = std::mem::take(&mut c.shared_inflight);
            let mut keep = Vec::new();
            for (pkid, ob) in c.state.inflight.outbound.drain(..) {
                match (&ob, shared.get(&pkid)) {
                    (Outbound::AwaitAck(_), Some(d))
                        if d.shared.as_ref().is_some_and(|k| {
                            self.router.redeliver_shared(k, d.clone(), c.state.uid)
                        }) => {}
                    _ => keep.push((pkid, ob)),
                }
            }
            c.state.inflight.outbound = keep;
        }
        let queued = c.state.mailbox.drain();
        let mut keep = Vec::with_capacity(queued.len());
        for d in queued {
            let moved = match &d.shared {
                Some(k) => self
                    .router
                    .redeliver_shared(&k.clone(), d.clone(), c.state.uid),
                None => false,
            };
            if !moved {
                keep.push(d);
            }
        }
        c.state.mailbox.push_front_all(keep);
    }

    /// Removes a session's record, queue and QoS 2 state from the store.
    fn forget(&self, client_id: &str, state: &SessionState) {
        if let Some(store) = self.router.store()
            && state.persisted
        {
            store.write(
                vec![Op::DeleteSession {
                    client_id: client_id.to_owned(),
                    uid: state.uid,
                }],
                None,
            );
        }
    }

    /// Ends a session for good: its subscriptions go, its queue is dropped.
    fn discard(&self, state: SessionState) {
        for filter in state.subs.keys() {
            self.router.unsubscribe(state.uid, filter);
        }
        for d in state.mailbox.drain() {
            if let Some(k) = &d.shared {
                self.router
                    .redeliver_shared(&k.clone(), d.clone(), state.uid);
            }
        }
    }

    fn publish_will(&self, w: Arc<Message>) {
        tracing::debug!(topic = %w.topic, "publishing will");
        if w.retain
            && let (Some(op), Some(store)) = (self.router.retain(&w), self.router.store())
        {
            store.write(vec![op], None);
        }
        self.router.route_detached(w);
    }

    fn spawn_will_timer(self: &Arc<Self>, client_id: &str, generation: u64, delay: u32) {
        let me = self.clone();
        let id = client_id.to_owned();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(u64::from(delay))) => {}
                _ = me.shutdown.cancelled() => return,
            }
            let will = {
                let mut map = me.sessions.map.lock();
                map.get_mut(&id)
                    .filter(|e| e.generation == generation)
                    .and_then(|e| {
                        let w = e.will.take()?;
                        let record = e
                            .state
                            .as_ref()
                            .map(|s| s.record(e.expiry, Some(unix_now()), None));
                        Some((w, record))
                    })
            };
            if let Some((w, record)) = will {
                if let (Some(store), Some(record)) = (me.router.store(), record) {
                    store.write(
                        vec![Op::PutSession {
                            client_id: id.clone(),
                            record,
                        }],
                        None,
                    );
                }
                me.publish_will(w);
            }
        });
    }

    fn spawn_expiry_timer(self: &Arc<Self>, client_id: &str, generation: u64, expiry: u32) {
        let me = self.clone();
        let id = client_id.to_owned();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(u64::from(expiry))) => {}
                _ = me.shutdown.cancelled() => return,
            }
            let ended = {
                let mut map = me.sessions.map.lock();
                match map.get(&id) {
                    Some(e) if e.generation == generation && e.link.is_none() => map.remove(&id),
                    _ => None,
                }
            };
            if let Some(mut e) = ended {
                tracing::debug!(client_id = %id, "session expired");
                if let Some(s) = e.state.take() {
                    me.forget(&id, &s);
                    me.discard(s);
                }
                if let Some(w) = e.will.take() {
                    me.publish_will(w);
                }
            }
        });
    }

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
        let mut out: Vec<SessionSummary> = map
            .iter()
            .map(|(id, e)| {
                let live = e.link.as_ref().and_then(|l| l.info.clone());
                let (queued, subscriptions) = match (&live, &e.state) {
                    (Some(i), _) => (i.mailbox.len(), i.subscriptions.lock().clone()),
                    (None, Some(s)) => {
                        let mut subs: Vec<String> = s.subs.keys().cloned().collect();
                        subs.sort();
                        (s.mailbox.len(), subs)
                    }
                    (None, None) => (0, Vec::new()),
                };
                SessionSummary {
                    client_id: id.clone(),
                    online: e.link.is_some(),
                    transport: live.as_ref().map(|i| i.transport),
                    peer: live.as_ref().map(|i| i.peer.clone()),
                    connected_since: live.as_ref().map(|i| i.since),
                    expiry: e.expiry,
                    queued,
                    subscriptions,
                }
            })
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    /// Asks the connection holding `client_id` to close with `code`; true if there was one.
    pub fn kick(&self, client_id: &str, code: ReasonCode) -> bool {
        let mut map = self.sessions.map.lock();
        let Some(kick) = map
            .get_mut(client_id)
            .and_then(|e| e.link.as_mut())
            .and_then(|l| l.kick.take())
        else {
            return false;
        };
        let (done, _) = oneshot::channel();
        kick.send(Kick { code, done }).is_ok()
    }
}

/// Turns a will into the message it stands for, with its delay.
pub fn will_message(w: switchboard_proto::Will, origin: u64, now: Instant) -> (Arc<Message>, u32) {
    let delay = w.properties.will_delay_interval.unwrap_or(0);
    (Arc::new(Message::from_will(w, origin, now)), delay)
}

impl BrokerState {
    /// Rebuilds retained messages and parked sessions from the store at start: queues in
    /// order, subscriptions, incoming QoS 2 state, expiry and will timers with the time
    /// that passed while the broker was down. Expired sessions are purged (their wills
    /// published); undecodable records are logged and skipped, never fatal.
    pub fn restore(self: &Arc<Self>, snap: Snapshot) {
        let now = Instant::now();
        let now_unix = unix_now();
        let mut retained = 0;
        for raw in &snap.retained {
            match codec::decode_message(raw, now) {
                Some(m) if !m.is_expired(now) => {
                    self.router.restore_retained(Arc::new(m));
                    retained += 1;
                }
                Some(_) => {}
                None => tracing::warn!("skipping an undecodable retained message"),
            }
        }
        let mut queues = snap.queues;
        let mut awaiting = snap.awaiting_rel;
        let (mut restored, mut purged, mut queued) = (0, 0, 0);
        for (client_id, rec) in snap.sessions {
            let stored = queues.remove(&rec.uid).unwrap_or_default();
            // A session that was connected when the broker stopped went offline then.
            let away = rec
                .disconnected_at
                .map_or(0, |t| now_unix.saturating_sub(t));
            let will = rec.will.as_ref().and_then(|(raw, due)| {
                codec::decode_message(raw, now).map(|m| (Arc::new(m), *due))
            });
            if rec.expiry != NEVER_EXPIRES && away >= u64::from(rec.expiry) {
                purged += 1;
                if let Some(store) = self.router.store() {
                    store.write(
                        vec![Op::DeleteSession {
                            client_id: client_id.clone(),
                            uid: rec.uid,
                        }],
                        None,
                    );
                }
                if let Some((w, _)) = will {
                    self.publish_will(w);
                }
                continue;
            }
            let l = &self.config.limits;
            let mailbox = Arc::new(Mailbox::new(l.max_queued_messages, l.max_queued_bytes));
            mailbox.set_persistent(true);
            let mut subs = HashMap::new();
            for e in &rec.subs {
                let opts = e.options();
                self.router
                    .restore_subscription(rec.uid, &mailbox, &e.filter, opts, e.id);
                subs.insert(e.filter.clone(), SubRecord { opts, id: e.id });
            }
            let mut deliveries = Vec::new();
            let mut outbound = Vec::new();
            let mut stored_inflight = HashMap::new();
            for (seq, d) in stored {
                let Some(msg) = codec::decode_message(&d.message, now) else {
                    tracing::warn!(seq, "skipping an undecodable queued message");
                    continue;
                };
                let delivery = Delivery {
                    msg: Arc::new(msg),
                    qos: d.qos,
                    retain: d.retain,
                    sub_ids: d.sub_ids,
                    shared: None,
                    seq: Some(seq),
                };
                // Flows that had started resume where they were ([MQTT-4.4.0-1]).
                match d.sent {
                    Sent::Queued => deliveries.push(delivery),
                    Sent::Published(pkid) => match delivery.to_publish(now) {
                        Some(mut p) => {
                            p.pkid = pkid;
                            outbound.push((pkid, Outbound::AwaitAck(Box::new(p))));
                            stored_inflight.insert(pkid, seq);
                        }
                        None => {
                            if let Some(store) = self.router.store() {
                                store.write(vec![Op::Dequeue { uid: rec.uid, seq }], None);
                            }
                        }
                    },
                    Sent::Released(pkid) => {
                        outbound.push((pkid, Outbound::AwaitComp));
                        stored_inflight.insert(pkid, seq);
                    }
                }
            }
            queued += deliveries.len() + outbound.len();
            mailbox.push_front_all(deliveries);
            let state = SessionState {
                uid: rec.uid,
                mailbox,
                subs,
                inflight: InflightState {
                    outbound,
                    awaiting_rel: awaiting.remove(&client_id).unwrap_or_default(),
                },
                stored_inflight,
                persisted: true,
            };
            let generation = self.next_id();
            let mut due_will = None;
            let mut pending_will = None;
            if let Some((w, due)) = will {
                if due <= now_unix {
                    due_will = Some(w);
                } else {
                    pending_will = Some(w);
                    self.spawn_will_timer(&client_id, generation, (due - now_unix) as u32);
                }
            }
            self.sessions.map.lock().insert(
                client_id.clone(),
                Entry {
                    state: Some(state),
                    link: None,
                    expiry: rec.expiry,
                    generation,
                    will: pending_will,
                },
            );
            if rec.expiry != NEVER_EXPIRES {
                self.spawn_expiry_timer(&client_id, generation, rec.expiry - away as u32);
            }
            if let Some(w) = due_will {
                self.publish_will(w);
            }
            restored += 1;
        }
        tracing::info!(
            sessions = restored,
            expired = purged,
            queued,
            retained,
            "restored state from the store"
        );
    }
}
