//! Session lifecycle: open (with takeover), close (park or end), wills and expiry timers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_proto::ReasonCode;
use switchboard_proto::session::{InflightState, Outbound};
use tokio::sync::oneshot;

use super::{Closing, Entry, Kick, Link, NEVER_EXPIRES, OpenError, Opened, SessionState};
use crate::BrokerState;
use crate::mailbox::Mailbox;
use crate::message::Message;
use crate::store::{Op, codec, unix_now};

/// How long a new connection waits for the one it takes over to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

impl BrokerState {
    /// Attaches connection `conn_id` to the session of `client_id`, taking it over from
    /// another connection if needed. `owner` ([`super::owner_of`]) must be the owner of an
    /// existing session, else nothing is touched and the answer is [`OpenError::NotOwner`].
    ///
    /// Two CONNECTs racing for one client id end with one session: the registry lock
    /// decides who attaches; the other takes the session over afterwards. A clean start
    /// deletes the old session's rows and writes the new record in one transaction, in
    /// that order, so no orphan rows remain and the new record is never deleted.
    pub async fn open_session(
        self: &Arc<Self>,
        client_id: &str,
        owner: Option<&str>,
        clean_start: bool,
        expiry: u32,
        conn_id: u64,
    ) -> Result<Opened, OpenError> {
        let mut _claim_guard = None;
        if let Some(c) = &self.cluster {
            if c.registry().is_some() {
                // The shared registry decides; the node holding the session parks it and
                // lets go, then it is loaded here (`cluster::handover`).
                _claim_guard = Some(c.lock_client(client_id).await);
                self.claim_in_cluster(c, client_id, owner, clean_start)
                    .await?;
            } else {
                // Another node holding this client id lets go first (DISCONNECT 0x8E there).
                c.take_over(client_id).await;
            }
        }
        loop {
            // Someone holds the session: ask it to let go, then look again.
            let holder = {
                let mut map = self.sessions.map.lock();
                match map.get_mut(client_id) {
                    Some(e) if e.owner.as_deref() != owner => return Err(OpenError::NotOwner),
                    Some(e) => e.link.as_mut().map(|link| (link.conn_id, link.kick.take())),
                    None => None,
                }
            };
            if let Some((old, kick)) = holder {
                let (done_tx, done_rx) = oneshot::channel();
                let sent = kick.is_some_and(|k| {
                    k.send(Box::new(Kick {
                        code: ReasonCode::SessionTakenOver,
                        server_reference: None,
                        done: done_tx,
                    }))
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
            let old_expiry = match map.get(client_id) {
                Some(e) if e.owner.as_deref() != owner => return Err(OpenError::NotOwner),
                Some(e) if e.link.is_some() => continue,
                Some(e) => e.expiry,
                None => 0,
            };
            if expiry > 0
                && old_expiry == 0
                && self.sessions.persistent() >= self.config.limits.max_persistent_sessions
            {
                return Err(OpenError::TooManySessions);
            }
            self.sessions.count_persistent(old_expiry, expiry);
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
                    ended = Some((e.state.take().map(|s| *s), will));
                } else {
                    // Reconnected before the will delay ran out: no will ([MQTT-3.1.3-9]).
                    resumed = e.state.take().map(|s| *s);
                }
            }
            let session_present = resumed.is_some();
            let mut state = resumed.unwrap_or_else(|| self.new_session_state());
            state.mailbox.set_online(true);
            state.mailbox.set_persistent(expiry > 0);
            let mut settled = None;
            if let Some(store) = self.store() {
                let mut ops = Vec::new();
                if let Some((Some(old), _)) = &ended
                    && old.persisted
                {
                    ops.push(Op::DeleteSession {
                        client_id: client_id.to_owned(),
                        uid: old.uid,
                    });
                }
                // What the CONNACK waits for (see `Opened::settled`).
                let wait = !ops.is_empty() || session_present;
                if expiry > 0 || state.persisted {
                    ops.push(state.save_op(client_id, owner, expiry, None, None));
                    state.persisted = true;
                }
                if wait && ops.is_empty() {
                    // Only the order matters: a probe would make redb checkpoint.
                    ops.push(Op::Barrier);
                }
                if !ops.is_empty() {
                    let done = wait.then(|| {
                        let (tx, rx) = oneshot::channel();
                        settled = Some(rx);
                        tx
                    });
                    store.write(ops, done);
                }
            }
            map.insert(
                client_id.into(),
                Entry {
                    state: None,
                    link: Some(link),
                    expiry,
                    generation,
                    will: None,
                    owner: owner.map(Into::into),
                },
            );
            drop(map);
            if let Some((old_state, will)) = ended {
                if let Some(s) = old_state {
                    self.discard(s);
                }
                if let Some(w) = will {
                    self.publish_will(w);
                }
            }
            return Ok(Opened {
                state,
                session_present,
                kicked: kick_rx,
                settled,
            });
        }
    }

    fn new_session_state(&self) -> SessionState {
        let uid = self.next_id();
        SessionState {
            uid,
            mailbox: self.new_mailbox(uid),
            subs: HashMap::new(),
            inflight: InflightState::default(),
            stored_inflight: HashMap::new(),
            persisted: false,
        }
    }

    /// A mailbox for session `uid`, registered so that delivery finds it.
    pub(super) fn new_mailbox(&self, uid: u64) -> Arc<Mailbox> {
        let l = &self.config.limits;
        let mailbox = Arc::new(Mailbox::new(l.max_queued_messages, l.max_queued_bytes));
        self.sessions.register_mailbox(uid, mailbox.clone());
        mailbox
    }

    /// Parks or ends the session of a connection that has ended, and takes care of its will.
    pub fn close_session(self: &Arc<Self>, client_id: &str, conn_id: u64, mut c: Closing) {
        c.state.mailbox.set_online(false);
        self.hand_over_shared(&mut c);
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
            if let Some(e) = map.remove(client_id) {
                self.sessions.count_persistent(e.expiry, 0);
            }
            drop(map);
            self.forget(client_id, &c.state);
            self.discard(c.state);
            if let Some((w, _)) = c.will {
                self.publish_will(w);
            }
            self.registry_note(client_id, false);
            return;
        }
        let generation = self.next_id();
        let mut publish_now = None;
        if let Some(store) = self.store() {
            let will = match &c.will {
                Some((w, delay)) if *delay > 0 => {
                    let due = unix_now() + u64::from((*delay).min(c.expiry));
                    Some((codec::encode_message(w, Instant::now()), due))
                }
                _ => None,
            };
            let owner = map.get(client_id).and_then(|e| e.owner.as_deref());
            let op = c
                .state
                .save_op(client_id, owner, c.expiry, Some(unix_now()), will);
            store.write(vec![op], None);
            c.state.persisted = true;
        }
        if let Some(e) = map.get_mut(client_id) {
            self.sessions.count_persistent(e.expiry, c.expiry);
            e.link = None;
            e.state = Some(Box::new(c.state));
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
        self.registry_note(client_id, true);
        if c.expiry != NEVER_EXPIRES {
            self.spawn_expiry_timer(client_id, generation, c.expiry);
        }
        if let Some(w) = publish_now {
            self.publish_will(w);
        }
    }

    /// Shared-subscription messages of a leaving member go to another member: queued ones,
    /// and sent ones not yet acknowledged (MQTT 5.0 §4.8.2: a SHOULD).
    fn hand_over_shared(&self, c: &mut Closing) {
        if !c.shared_inflight.is_empty() {
            let shared = std::mem::take(&mut c.shared_inflight);
            let mut keep = Vec::new();
            for (pkid, ob) in c.state.inflight.outbound.drain(..) {
                match (&ob, shared.get(&pkid)) {
                    (Outbound::AwaitAck(_), Some(d))
                        if d.shared
                            .as_ref()
                            .is_some_and(|k| self.redeliver_shared(k, d.clone(), c.state.uid)) => {}
                    _ => keep.push((pkid, ob)),
                }
            }
            c.state.inflight.outbound = keep;
        }
        let queued = c.state.mailbox.drain();
        let mut keep = Vec::with_capacity(queued.len());
        for d in queued {
            let moved = match &d.shared {
                Some(k) => self.redeliver_shared(&k.clone(), d.clone(), c.state.uid),
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
        if let Some(store) = self.store()
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
    pub(super) fn discard(&self, state: SessionState) {
        for filter in state.subs.keys() {
            self.routes.remove(state.uid, filter);
        }
        self.sessions.unregister_mailbox(state.uid);
        for d in state.mailbox.drain() {
            if let Some(k) = &d.shared {
                self.redeliver_shared(&k.clone(), d.clone(), state.uid);
            }
        }
    }

    pub(crate) fn publish_will(&self, w: Arc<Message>) {
        tracing::debug!(topic = %w.topic, "publishing will");
        if w.retain {
            // Over a retained cap the will is still published, just not retained.
            let caps = crate::retained::RetainedCaps::from_limits(&self.config.limits);
            if let Ok(op) = self.retained.set(&w, "", &caps, Instant::now())
                && let Some(store) = self.store()
            {
                store.write(vec![op], None);
            }
        }
        self.publish_detached(w);
    }

    pub(crate) fn spawn_will_timer(self: &Arc<Self>, client_id: &str, generation: u64, delay: u32) {
        let me = self.clone();
        let id = client_id.to_owned();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(u64::from(delay))) => {}
                _ = me.shutdown.cancelled() => return,
            }
            let will = {
                let mut map = me.sessions.map.lock();
                map.get_mut(id.as_str())
                    .filter(|e| e.generation == generation)
                    .and_then(|e| {
                        let w = e.will.take()?;
                        let op = e.state.as_ref().map(|s| {
                            s.save_op(&id, e.owner.as_deref(), e.expiry, Some(unix_now()), None)
                        });
                        Some((w, op))
                    })
            };
            if let Some((w, op)) = will {
                if let (Some(store), Some(op)) = (me.store(), op) {
                    store.write(vec![op], None);
                }
                me.publish_will(w);
            }
        });
    }

    pub(super) fn spawn_expiry_timer(
        self: &Arc<Self>,
        client_id: &str,
        generation: u64,
        expiry: u32,
    ) {
        let me = self.clone();
        let id = client_id.to_owned();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(u64::from(expiry))) => {}
                _ = me.shutdown.cancelled() => return,
            }
            let ended = {
                let mut map = me.sessions.map.lock();
                let removed = match map.get(id.as_str()) {
                    Some(e) if e.generation == generation && e.link.is_none() => {
                        map.remove(id.as_str())
                    }
                    _ => None,
                };
                if let Some(e) = &removed {
                    me.sessions.count_persistent(e.expiry, 0);
                }
                removed
            };
            if let Some(mut e) = ended {
                tracing::debug!(client_id = %id, "session expired");
                if let Some(s) = e.state.take() {
                    me.forget(&id, &s);
                    me.discard(*s);
                }
                if let Some(w) = e.will.take() {
                    me.publish_will(w);
                }
                me.registry_note(&id, false);
            }
        });
    }

    /// Cluster mode with a shared store: tells the registry that the connection holding
    /// `client_id` here ended, the session `parked` (its will is no longer the
    /// connection's) or ended for good. Written in the background; a claim made since
    /// (a newer epoch) is left alone.
    fn registry_note(self: &Arc<Self>, client_id: &str, parked: bool) {
        let Some(c) = self.cluster.clone() else {
            return;
        };
        let Some(epoch) = c.registry().and_then(|r| r.epoch_of(client_id)) else {
            return;
        };
        let id = client_id.to_owned();
        self.tasks.spawn(async move {
            let Some(reg) = c.registry() else { return };
            let r = if parked {
                reg.set_will(&id, epoch, None).await
            } else {
                reg.end(&id, epoch).await
            };
            if let Err(e) = r {
                tracing::warn!(client_id = %id, error = %e, "session registry not updated");
            }
        });
    }

    /// The will of a connection that died with its node, for session `client_id` adopted
    /// here: kept for its delay (unless the client comes back first) when the session
    /// is parked and persistent, else published now. Returns (a session exists here, the
    /// will was published now).
    pub(crate) fn adopt_will(
        self: &Arc<Self>,
        client_id: &str,
        will: Option<(Arc<Message>, u32)>,
    ) -> (bool, bool) {
        let timer = {
            let mut map = self.sessions.map.lock();
            match (map.get_mut(client_id), &will) {
                (Some(e), Some((w, delay))) if e.link.is_none() && *delay > 0 && e.expiry > 0 => {
                    e.will = Some(w.clone());
                    Some((true, Some((e.generation, (*delay).min(e.expiry)))))
                }
                (Some(_), _) => Some((true, None)),
                (None, _) => None,
            }
        };
        match (timer, will) {
            (Some((_, Some((generation, delay)))), _) => {
                self.spawn_will_timer(client_id, generation, delay);
                (true, false)
            }
            (t, Some((w, _))) => {
                self.publish_will(w);
                (t.is_some(), true)
            }
            (t, None) => (t.is_some(), false),
        }
    }

    /// Cluster mode with a shared store: records the will of the connection that now holds
    /// `client_id` here, so that a survivor can publish it if this node dies.
    pub async fn registry_will(&self, client_id: &str, will: Option<&(Arc<Message>, u32)>) {
        let Some(reg) = self.cluster.as_ref().and_then(|c| c.registry()) else {
            return;
        };
        let (Some(epoch), Some((w, delay))) = (reg.epoch_of(client_id), will) else {
            return;
        };
        let body = codec::encode_message(w, Instant::now());
        if let Err(e) = reg.set_will(client_id, epoch, Some((body, *delay))).await {
            tracing::warn!(client_id, error = %e, "will not recorded in the session registry");
        }
    }
}
