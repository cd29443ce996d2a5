//! Online devices, kicks, unread badges of online users, and push jobs for offline ones.
//!
//! The broker tells the service when an IM device connects and disconnects; the service
//! keeps, per online user, its devices and (once computed) its unread total, so a new
//! message costs one increment rather than a scan. Only online users are in memory.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use switchboard_proto::im::{self, event::Kind};
use switchboard_proto::{QoS, ReasonCode};

use super::keys::ConvId;
use super::records::UserConvRecord;
use super::{ImLogin, ImService};
use crate::message::Message;

/// Topic prefix of push jobs (`$im/push/{tenant}`); the push worker subscribes with
/// `$share/push/$im/push/#`.
pub const PUSH_PREFIX: &str = "$im/push/";

/// How long a signed-out device has to read its `kicked` notice before it is disconnected.
const KICK_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

/// One connected device.
#[derive(Debug, Clone)]
pub(super) struct Device {
    pub(super) client_id: String,
    /// The connection (a reconnect with the same client id is another one).
    conn_id: u64,
    pub(super) platform: String,
    /// The token it logged in with.
    token_id: String,
    /// The app said it is in the background.
    pub(super) background: bool,
    /// This connection takes unread counts inside message events (`features`).
    pub(super) inline_unread: bool,
}

/// An online user.
#[derive(Debug, Default)]
pub(super) struct Online {
    pub(super) devices: Vec<Device>,
    /// The unread total, once computed (then kept up to date).
    pub(super) unread_total: Option<u64>,
}

impl ImService {
    /// Whether user `uid` has a device online.
    pub fn is_online(&self, tid: u64, uid: u64) -> bool {
        self.online.lock().contains_key(&(tid, uid))
            || self.cluster().is_some_and(|c| c.remote(tid, uid).is_some())
    }

    /// Client ids and platforms of the user's online devices.
    pub fn devices(&self, tid: u64, uid: u64) -> Vec<(String, String)> {
        let mut devices: Vec<(String, String)> = self
            .online
            .lock()
            .get(&(tid, uid))
            .map(|o| {
                o.devices
                    .iter()
                    .map(|d| (d.client_id.clone(), d.platform.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(c) = self.cluster() {
            devices.extend(c.remote_devices(tid, uid));
        }
        devices
    }

    /// An IM device connected. With the tenant's one-phone policy, an older phone of the
    /// same user is told and disconnected.
    pub fn connected(&self, login: &ImLogin, client_id: &str, conn_id: u64) {
        let single_phone = self
            .tenant(login.tenant)
            .is_ok_and(|t| t.policy.single_phone);
        let displaced: Vec<String> = {
            let mut online = self.online.lock();
            let entry = online.entry((login.tenant, login.uid)).or_default();
            entry.devices.retain(|d| d.client_id != client_id);
            let displaced = if single_phone && login.platform == "phone" {
                entry
                    .devices
                    .iter()
                    .filter(|d| d.platform == "phone")
                    .map(|d| d.client_id.clone())
                    .collect()
            } else {
                Vec::new()
            };
            entry.devices.push(Device {
                client_id: client_id.to_owned(),
                conn_id,
                platform: login.platform.clone(),
                token_id: login.token_id.clone(),
                background: false,
                inline_unread: false,
            });
            self.announce_locked(&online, login.tenant, login.uid);
            displaced
        };
        self.presence_changed(login);
        for old in displaced {
            tracing::info!(tenant = login.tenant, user = %login.account, old, new = client_id, "one phone at a time: signing the older phone out");
            self.kick_device(login.tenant, login.uid, &old, "signed in on another phone");
        }
    }

    /// An IM device's connection `conn_id` ended (a newer connection of the same client
    /// id stays).
    pub fn disconnected(&self, login: &ImLogin, conn_id: u64) {
        {
            let mut online = self.online.lock();
            if let Some(entry) = online.get_mut(&(login.tenant, login.uid)) {
                entry.devices.retain(|d| d.conn_id != conn_id);
                if entry.devices.is_empty() {
                    online.remove(&(login.tenant, login.uid));
                }
                self.announce_locked(&online, login.tenant, login.uid);
            }
        }
        self.presence_changed(login);
        self.room_disconnected(login, conn_id);
    }

    /// Whether user `uid` has a device online in the foreground (else pushes go out).
    pub fn has_foreground_device(&self, tid: u64, uid: u64) -> bool {
        self.online
            .lock()
            .get(&(tid, uid))
            .is_some_and(|o| o.devices.iter().any(|d| !d.background))
            || self
                .cluster()
                .and_then(|c| c.remote(tid, uid))
                .is_some_and(|r| r.foreground)
    }

    /// Records that device `client_id` of the user went to the background or came back.
    pub fn set_background(&self, login: &ImLogin, client_id: &str, background: bool) {
        let mut online = self.online.lock();
        if let Some(o) = online.get_mut(&(login.tenant, login.uid)) {
            for d in o.devices.iter_mut().filter(|d| d.client_id == client_id) {
                d.background = background;
            }
            self.announce_locked(&online, login.tenant, login.uid);
        }
    }

    /// Tells every device of a user why, then disconnects them.
    pub fn kick_user(&self, tid: u64, uid: u64, reason: &str) {
        for (client_id, _) in self.devices(tid, uid) {
            self.kick_device(tid, uid, &client_id, reason);
        }
    }

    /// Signs out the devices of a user that logged in with token `token_id`.
    pub fn kick_token(&self, tid: u64, uid: u64, token_id: &str, reason: &str) {
        let devices: Vec<String> = self
            .online
            .lock()
            .get(&(tid, uid))
            .map(|o| {
                o.devices
                    .iter()
                    .filter(|d| d.token_id == token_id)
                    .map(|d| d.client_id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for client_id in devices {
            self.kick_device(tid, uid, &client_id, reason);
        }
    }

    fn kick_device(&self, tid: u64, uid: u64, client_id: &str, reason: &str) {
        let Some(b) = self.broker() else { return };
        // The notice goes to the user's inbox, which every device reads; it names the
        // device it is for.
        let payload = im::Event {
            kind: Some(Kind::Kicked(im::Kicked {
                reason: format!("{reason} ({client_id})"),
            })),
            unread_after: None,
        }
        .encode_to_vec();
        b.publish_detached(Arc::new(Message {
            topic: crate::namespace::inbox_topic(tid, uid),
            payload: Bytes::from(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires_at: None,
            origin: 0,
        }));
        if let Some(c) = self.cluster() {
            // The device may be connected to another node: that node disconnects it.
            c.kick(tid, client_id);
        }
        self.kick_local(tid, client_id);
    }

    /// Disconnects device `client_id` of tenant `tid` if it is connected here, after a
    /// moment to read its `kicked` notice.
    pub(super) fn kick_local(&self, tid: u64, client_id: &str) {
        let Some(b) = self.broker() else { return };
        // Give the notice a moment to reach the device before it is disconnected (0x98).
        // Its session is keyed in its tenant's space (`sessions::key_of`).
        let (broker, client_id) = (
            b.clone(),
            crate::sessions::tenant_session_key(tid, client_id),
        );
        b.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(KICK_GRACE) => {}
                _ = broker.shutdown.cancelled() => return,
            }
            broker.kick(&client_id, ReasonCode::AdministrativeAction);
        });
    }

    /// The user's read position changed: recount, and tell every device (read on one
    /// device clears the badge on the others).
    pub(super) fn read_changed(
        &self,
        tid: u64,
        uid: u64,
        conv: &ConvId,
        row: &UserConvRecord,
        max: u64,
    ) {
        let generation = self.unread_generation();
        let total = self.unread_total(tid, uid).unwrap_or(0);
        if let Some(o) = self.online.lock().get_mut(&(tid, uid))
            && generation == self.unread_generation()
        {
            o.unread_total = Some(total);
        }
        self.unread_changed(tid, uid);
        let read_seq = row.read_seq.max(row.min_seq);
        let unread = max.saturating_sub(read_seq);
        self.emit(
            tid,
            uid,
            Kind::Unread(im::Unread {
                conversation: conv.to_string(),
                unread,
                read_seq,
                total,
            }),
            QoS::AtLeastOnce,
        );
        if let ConvId::App(app, _) = conv {
            let badge = im::AppUnread {
                app_id: app.clone(),
                unread,
            };
            self.emit(tid, uid, Kind::AppUnread(badge), QoS::AtLeastOnce);
        }
    }

    /// Forgets an online user's cached unread total (recomputed when next needed), after a
    /// change that is not a simple increment (sending marks the conversation read, muting).
    pub(super) fn forget_total(&self, tid: u64, uid: u64) {
        if let Some(o) = self.online.lock().get_mut(&(tid, uid)) {
            o.unread_total = None;
        }
        self.unread_changed(tid, uid);
    }

    /// In cluster mode: tells the nodes where the user has devices that their unread
    /// total changed (after the commit that changed it).
    pub(super) fn unread_changed(&self, tid: u64, uid: u64) {
        if let Some(c) = self.cluster()
            && c.remote(tid, uid).is_some()
        {
            c.unread_changed(tid, vec![uid]);
        }
    }

    /// The generation of cached unread totals (bumped when another node evicts some; 0
    /// without cluster mode): a total computed from the store is cached only if it did not
    /// move meanwhile.
    pub(super) fn unread_generation(&self) -> u64 {
        self.cluster().map_or(0, |c| {
            c.unread_gen.load(std::sync::atomic::Ordering::Acquire)
        })
    }

    /// Hands a push job for user `uid` to the push worker: the message's kind and the
    /// names its templates need (sender, app, file), the preview unless the tenant hides
    /// previews.
    pub(super) fn push_job(&self, tid: u64, uid: u64, msg: &im::Message) {
        let Some(b) = self.broker() else { return };
        let Ok(Some(user)) = self.account_of(tid, uid) else {
            return;
        };
        let hide = self.tenant(tid).is_ok_and(|t| t.policy.hide_preview);
        let (kind, app_name) = match ConvId::parse(&msg.conversation) {
            Some(ConvId::App(app, _)) => {
                let name = self.app(&app).map(|a| a.name).unwrap_or_default();
                ("app", if name.is_empty() { app } else { name })
            }
            Some(ConvId::System(_)) => ("system", String::new()),
            _ => (kind(msg), String::new()),
        };
        let job = im::PushJob {
            job_id: format!("{tid}:{}:{}:{uid}", msg.conversation, msg.seq),
            tenant: tid,
            user,
            badge: self.unread_total(tid, uid).unwrap_or(0),
            title: if msg.from.is_empty() {
                "System".to_owned()
            } else {
                msg.from.clone()
            },
            body: if hide { String::new() } else { preview(msg) },
            conversation: msg.conversation.clone(),
            seq: msg.seq,
            collapse_key: msg.conversation.clone(),
            from: msg.from.clone(),
            users: Vec::new(),
            kind: kind.to_owned(),
            sender_name: if kind == "app" {
                String::new()
            } else {
                self.display_name(tid, &msg.from)
            },
            group_name: String::new(),
            app_name,
            file_name: if hide { String::new() } else { file_name(msg) },
            group: false,
            platforms: Vec::new(),
        };
        if let Some(c) = self.cluster() {
            c.push_job(1);
        }
        publish_push_job(&b, &job);
    }

    /// A user's display name for notifications: their name, else their account.
    pub(super) fn display_name(&self, tid: u64, account: &str) -> String {
        match self.user(tid, account) {
            Ok(Some(u)) if !u.name.is_empty() => u.name,
            _ => account.to_owned(),
        }
    }
}

/// Hands `job` to the push worker (`$im/push/{tenant}`, QoS 1).
pub(super) fn publish_push_job(b: &crate::BrokerState, job: &im::PushJob) {
    b.publish_detached(Arc::new(Message {
        topic: format!("{PUSH_PREFIX}{}", job.tenant),
        payload: Bytes::from(job.encode_to_vec()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: None,
        expires_at: None,
        origin: 0,
    }));
}

/// The kind of a message, as the push templates name it.
pub fn kind(msg: &im::Message) -> &'static str {
    use im::content::Body;
    match msg.content.as_ref().and_then(|c| c.body.as_ref()) {
        Some(Body::Text(_)) => "text",
        Some(Body::Image(_)) => "image",
        Some(Body::File(_)) => "file",
        Some(Body::Voice(_)) => "voice",
        Some(Body::Video(_)) => "video",
        Some(Body::Location(_)) => "location",
        Some(Body::CallLog(_)) => "call",
        _ => "other",
    }
}

/// The file name of a file message (empty for others).
pub fn file_name(msg: &im::Message) -> String {
    match msg.content.as_ref().and_then(|c| c.body.as_ref()) {
        Some(im::content::Body::File(f)) => f.name.chars().take(100).collect(),
        _ => String::new(),
    }
}

/// A one-line preview of a message for a notification.
pub fn preview(msg: &im::Message) -> String {
    use im::content::Body;
    let body = msg.content.as_ref().and_then(|c| c.body.as_ref());
    let text = match body {
        Some(Body::Text(t)) => t.text.clone(),
        Some(Body::Emoji(_)) => "[emoji]".into(),
        Some(Body::Image(_)) => "[image]".into(),
        Some(Body::Voice(_)) => "[voice]".into(),
        Some(Body::Video(_)) => "[video]".into(),
        Some(Body::File(f)) => format!("[file] {}", f.name),
        Some(Body::Location(l)) => format!("[location] {}", l.title),
        Some(Body::Rich(r)) => r.title.clone(),
        Some(Body::Notice(n)) if !n.text.is_empty() => n.text.clone(),
        Some(Body::Notice(_)) => "[notice]".into(),
        Some(Body::CallLog(c)) if c.video => "[video call]".into(),
        Some(Body::CallLog(_)) => "[call]".into(),
        Some(Body::Custom(_)) | None => "[message]".into(),
    };
    text.chars().take(100).collect()
}
