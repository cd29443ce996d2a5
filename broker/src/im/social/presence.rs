//! Presence: who is online on which platforms, last seen, subscriptions, privacy, and the
//! online/offline events of the service topic.
//!
//! `ImService::connected`/`disconnected` (im/presence.rs) call [`ImService::presence_changed`]
//! after updating the user's devices. It compares the devices with what was last announced
//! for the user (kept only for online users) and, under one lock so that events leave in
//! the order of the changes:
//! - publishes one JSON event per device that came or went to `$im/events/{tenant}`
//!   (service identities only: tenant clients cannot name `$` topics), and the same as a
//!   `presence` webhook event when the tenant's webhooks ask for it (im/hooks.rs);
//! - when the user came online, went offline or changed its set of platforms, sends a
//!   `PresenceEvent` to each online watcher the user's privacy setting lets see it;
//! - when the last device left, records last seen (durable, once per disconnect, not per
//!   message) and drops the user's own subscriptions (a device subscribes again after it
//!   connects).
//!
//! Memory: the subscriptions of online watchers (at most [`MAX_WATCHED`] each) and the
//! devices of online users; nothing per offline user.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::json;
use switchboard_proto::QoS;
use switchboard_proto::im::{self, PresenceVisibility, event::Kind};

use super::super::error::ok;
use super::super::{ImError, ImLogin, ImService, now_ms};
use super::{key, tag};
use crate::message::Message;
use crate::store::{Op, Table};

/// Topic prefix of the service events (`$im/events/{tenant}`).
pub const EVENTS_PREFIX: &str = "$im/events/";
/// Most users one user may watch.
pub const MAX_WATCHED: usize = 1000;
/// Most users per presence query.
pub const MAX_QUERY: usize = 100;

/// Presence subscriptions and what was last announced.
#[derive(Debug, Default)]
pub(super) struct PresenceState {
    inner: Mutex<Inner>,
    /// Last-seen times submitted to the store but maybe not yet durable (read before the
    /// store; an entry leaves when its commit is done).
    pending_last_seen: Mutex<HashMap<(u64, u64), u64>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Watched user → the uids watching it.
    watchers: HashMap<(u64, u64), HashSet<u64>>,
    /// Watcher → the uids it watches.
    watching: HashMap<(u64, u64), HashSet<u64>>,
    /// Online user → its devices (client id, platform) as last announced, sorted.
    announced: HashMap<(u64, u64), Vec<(String, String)>>,
}

impl Inner {
    fn unwatch(&mut self, tid: u64, watcher: u64, target: u64) {
        if let Some(set) = self.watching.get_mut(&(tid, watcher)) {
            set.remove(&target);
            if set.is_empty() {
                self.watching.remove(&(tid, watcher));
            }
        }
        if let Some(set) = self.watchers.get_mut(&(tid, target)) {
            set.remove(&watcher);
            if set.is_empty() {
                self.watchers.remove(&(tid, target));
            }
        }
    }

    /// Drops every subscription of `watcher`.
    fn forget_watcher(&mut self, tid: u64, watcher: u64) {
        for target in self.watching.remove(&(tid, watcher)).unwrap_or_default() {
            if let Some(set) = self.watchers.get_mut(&(tid, target)) {
                set.remove(&watcher);
                if set.is_empty() {
                    self.watchers.remove(&(tid, target));
                }
            }
        }
    }
}

/// Distinct platforms of a device list, sorted.
fn platforms(devices: &[(String, String)]) -> Vec<String> {
    let mut p: Vec<String> = devices.iter().map(|(_, p)| p.clone()).collect();
    p.sort();
    p.dedup();
    p
}

impl ImService {
    /// The devices of user `login` changed (called by `connected` and `disconnected`).
    pub(crate) fn presence_changed(&self, login: &ImLogin) {
        let (tid, uid) = (login.tenant, login.uid);
        // Read before the lock: one store read per change, not per watcher.
        let visibility = self
            .privacy(tid, uid)
            .unwrap_or(PresenceVisibility::Everyone);
        let mut inner = self.social.presence.inner.lock();
        let mut now = self.devices(tid, uid);
        now.sort();
        let before = if now.is_empty() {
            inner.announced.remove(&(tid, uid))
        } else {
            inner.announced.insert((tid, uid), now.clone())
        }
        .unwrap_or_default();
        if before == now {
            return;
        }
        let time_ms = now_ms();
        let online = !now.is_empty();
        if !online {
            inner.forget_watcher(tid, uid);
            self.record_last_seen(tid, uid, time_ms);
        }
        // The service events: one per device that came or went.
        for (client_id, platform) in now.iter().filter(|d| !before.contains(d)) {
            self.service_event(tid, "online", login, client_id, platform, online, time_ms);
        }
        for (client_id, platform) in before.iter().filter(|d| !now.contains(d)) {
            self.service_event(tid, "offline", login, client_id, platform, online, time_ms);
        }
        let (p_before, p_now) = (platforms(&before), platforms(&now));
        if p_before == p_now && before.is_empty() == now.is_empty() {
            return;
        }
        let Some(watchers) = inner.watchers.get(&(tid, uid)) else {
            return;
        };
        let presence = im::Presence {
            user: login.account.clone(),
            online,
            platforms: p_now,
            last_seen_ms: if online { 0 } else { time_ms },
            hidden: false,
        };
        for &w in watchers {
            let visible = match visibility {
                PresenceVisibility::Everyone => true,
                PresenceVisibility::Nobody => false,
                PresenceVisibility::Contacts => self.is_friend(tid, uid, w).unwrap_or(false),
            };
            if visible {
                let ev = Kind::Presence(im::PresenceEvent {
                    presence: Some(presence.clone()),
                });
                self.emit(tid, w, ev, QoS::AtLeastOnce);
            }
        }
    }

    /// Publishes a device's online/offline event on the tenant's service topic.
    #[allow(clippy::too_many_arguments)]
    fn service_event(
        &self,
        tid: u64,
        event: &str,
        login: &ImLogin,
        client_id: &str,
        platform: &str,
        user_online: bool,
        time_ms: u64,
    ) {
        let Some(b) = self.broker() else { return };
        let body = json!({
            "event": event,
            "tenant": tid,
            "user": login.account,
            "uid": login.uid,
            "client_id": client_id,
            "platform": platform,
            "user_online": user_online,
            "time_ms": time_ms,
        });
        // The tenant's webhook, if it asked for presence events (im/hooks.rs).
        self.hook_event(tid, "presence", || body.clone());
        b.publish_detached(Arc::new(Message {
            topic: format!("{EVENTS_PREFIX}{tid}"),
            payload: Bytes::from(body.to_string()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires_at: None,
            origin: 0,
        }));
    }

    /// Writes user `uid`'s last-seen time (durable; readable at once through the pending
    /// map until the commit is done).
    fn record_last_seen(&self, tid: u64, uid: u64, ms: u64) {
        let pending = &self.social.presence.pending_last_seen;
        pending.lock().insert((tid, uid), ms);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store.write(
            vec![Op::Put {
                table: Table::Social,
                key: key(tid, uid, tag::LAST_SEEN, None),
                value: ms.to_be_bytes().to_vec(),
            }],
            Some(tx),
        );
        let Some(b) = self.broker() else {
            pending.lock().remove(&(tid, uid));
            return;
        };
        let Some(service) = b.im.clone() else {
            pending.lock().remove(&(tid, uid));
            return;
        };
        b.tasks.spawn(async move {
            let _ = rx.await;
            let mut p = service.social.presence.pending_last_seen.lock();
            if p.get(&(tid, uid)) == Some(&ms) {
                p.remove(&(tid, uid));
            }
        });
    }

    /// When user `uid`'s last device went offline (Unix ms; 0: never seen).
    fn last_seen(&self, tid: u64, uid: u64) -> Result<u64, ImError> {
        if let Some(ms) = self
            .social
            .presence
            .pending_last_seen
            .lock()
            .get(&(tid, uid))
        {
            return Ok(*ms);
        }
        Ok(self
            .store
            .get(Table::Social, &key(tid, uid, tag::LAST_SEEN, None))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// User `uid`'s presence visibility.
    pub(crate) fn privacy(&self, tid: u64, uid: u64) -> Result<PresenceVisibility, ImError> {
        Ok(self
            .store
            .get(Table::Social, &key(tid, uid, tag::PRIVACY, None))?
            .and_then(|v| v.first().copied())
            .and_then(|b| PresenceVisibility::try_from(i32::from(b)).ok())
            .unwrap_or(PresenceVisibility::Everyone))
    }

    /// `social/set_privacy`.
    pub(super) async fn set_privacy(
        &self,
        login: &ImLogin,
        req: im::PrivacyRequest,
    ) -> Result<im::Ack, ImError> {
        let v = PresenceVisibility::try_from(req.visibility)
            .map_err(|_| ImError::BadRequest(format!("no visibility {}", req.visibility)))?;
        self.commit(vec![Op::Put {
            table: Table::Social,
            key: key(login.tenant, login.uid, tag::PRIVACY, None),
            value: vec![v as u8],
        }])
        .await?;
        Ok(im::Ack { status: ok() })
    }

    /// The presence of user `uid` (`account`) as `viewer` may see it (`None`: the app
    /// server, which sees everything).
    fn presence_of(
        &self,
        tid: u64,
        uid: u64,
        account: &str,
        viewer: Option<u64>,
    ) -> Result<im::Presence, ImError> {
        let visible = match viewer {
            None => true,
            Some(v) if v == uid => true,
            Some(v) => match self.privacy(tid, uid)? {
                PresenceVisibility::Everyone => true,
                PresenceVisibility::Nobody => false,
                PresenceVisibility::Contacts => self.is_friend(tid, uid, v)?,
            },
        };
        if !visible {
            return Ok(im::Presence {
                user: account.to_owned(),
                hidden: true,
                ..im::Presence::default()
            });
        }
        let devices = self.devices(tid, uid);
        let online = !devices.is_empty();
        Ok(im::Presence {
            user: account.to_owned(),
            online,
            platforms: platforms(&devices),
            last_seen_ms: if online { 0 } else { self.last_seen(tid, uid)? },
            hidden: false,
        })
    }

    /// `social/presence` (and the app server's `presence`): up to [`MAX_QUERY`] users.
    pub(super) fn presence_query(
        &self,
        tid: u64,
        viewer: Option<u64>,
        users: &[String],
    ) -> Result<im::PresenceResponse, ImError> {
        if users.len() > MAX_QUERY {
            return Err(ImError::TooLarge(format!(
                "at most {MAX_QUERY} users per query"
            )));
        }
        let mut presences = Vec::with_capacity(users.len());
        for account in users {
            if let Some(u) = self.user(tid, account)? {
                presences.push(self.presence_of(tid, u.uid, &u.account, viewer)?);
            }
        }
        Ok(im::PresenceResponse {
            status: ok(),
            presences,
        })
    }

    /// `social/subscribe_presence`: answers with the presence of the users added.
    pub(super) fn subscribe_presence(
        &self,
        login: &ImLogin,
        req: im::SubscribePresenceRequest,
    ) -> Result<im::PresenceResponse, ImError> {
        let tid = login.tenant;
        if req.add.len() > MAX_WATCHED || req.remove.len() > MAX_WATCHED {
            return Err(ImError::TooLarge(format!(
                "at most {MAX_WATCHED} users per request"
            )));
        }
        let mut add = Vec::with_capacity(req.add.len());
        for account in &req.add {
            match self.user(tid, account)? {
                Some(u) if u.uid != login.uid => add.push(u),
                _ => {}
            }
        }
        let mut remove = Vec::with_capacity(req.remove.len());
        for account in &req.remove {
            if let Some(u) = self.user(tid, account)? {
                remove.push(u.uid);
            }
        }
        {
            let mut inner = self.social.presence.inner.lock();
            for r in remove {
                inner.unwatch(tid, login.uid, r);
            }
            let watched = inner
                .watching
                .get(&(tid, login.uid))
                .map_or(0, HashSet::len);
            let new = add
                .iter()
                .filter(|u| {
                    !inner
                        .watching
                        .get(&(tid, login.uid))
                        .is_some_and(|s| s.contains(&u.uid))
                })
                .count();
            if watched + new > MAX_WATCHED {
                return Err(ImError::TooLarge(format!(
                    "at most {MAX_WATCHED} watched users"
                )));
            }
            // Subscriptions live while the watcher is online (checked under the lock that
            // `presence_changed` holds when it drops them).
            if self.is_online(tid, login.uid) {
                for u in &add {
                    inner
                        .watching
                        .entry((tid, login.uid))
                        .or_default()
                        .insert(u.uid);
                    inner
                        .watchers
                        .entry((tid, u.uid))
                        .or_default()
                        .insert(login.uid);
                }
            }
        }
        let mut presences = Vec::with_capacity(add.len());
        for u in &add {
            presences.push(self.presence_of(tid, u.uid, &u.account, Some(login.uid))?);
        }
        Ok(im::PresenceResponse {
            status: ok(),
            presences,
        })
    }
}
