//! Helpers for the chatroom tests (`im_rooms*.rs`): the app server managing rooms over
//! `$im/admin/room/...` with the service credential, and what a member's device sees.

use std::collections::VecDeque;

use bytes::Bytes;
use prost::Message as _;
use serde_json::Value;
use switchboard_client::im::ImError;
use switchboard_proto::im::{self, event::Kind};
use switchboard_proto::{
    Packet, Properties, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions, Version,
};

use crate::im::{Device, ImBroker, SERVICE_SECRET, text, text_of};
pub use crate::im_groups::status;
use crate::{RawClient, connect_packet};

/// The app server: admin requests over MQTT with the service credential, and the room
/// life-cycle events of `$im/events/+/room`.
pub struct AppServer {
    pub raw: RawClient,
    next: u16,
    events: VecDeque<im::RoomEvent>,
}

impl AppServer {
    pub async fn connect(b: &ImBroker) -> AppServer {
        let mut c = connect_packet(Version::V5, "app-server");
        c.username = Some("$service".into());
        c.password = Some(Bytes::from_static(SERVICE_SECRET.as_bytes()));
        let (mut raw, ack) = RawClient::connect(b.addr, c).await;
        assert!(matches!(ack, Packet::ConnAck(a) if a.code == ReasonCode::Success));
        raw.send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            properties: Properties::default(),
            filters: vec![
                ("app/replies".into(), SubscriptionOptions::default()),
                ("$im/events/+/room".into(), SubscriptionOptions::default()),
            ],
        }))
        .await;
        assert!(
            matches!(raw.recv().await, Some(Packet::SubAck(a)) if a.codes.iter().all(|c| !c.is_error()))
        );
        AppServer {
            raw,
            next: 1,
            events: VecDeque::new(),
        }
    }

    /// `$im/admin/room/{op}`: the answer (an `{"error": ...}` object on failure).
    pub async fn room(&mut self, op: &str, body: Value) -> Value {
        self.next += 1;
        let id = self.next.to_be_bytes();
        self.raw
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: format!("$im/admin/room/{op}"),
                pkid: 0,
                properties: Properties {
                    response_topic: Some("app/replies".into()),
                    correlation_data: Some(Bytes::copy_from_slice(&id)),
                    ..Properties::default()
                },
                payload: Bytes::from(body.to_string()),
            }))
            .await;
        loop {
            let p = self.raw.next_publish().await;
            if p.topic == "app/replies" && p.properties.correlation_data.as_deref() == Some(&id[..])
            {
                return serde_json::from_slice(&p.payload).expect("JSON answer");
            }
            self.stash(&p);
        }
    }

    /// Like `room`, but the answer must not be an error.
    pub async fn ok(&mut self, op: &str, body: Value) -> Value {
        let v = self.room(op, body).await;
        assert!(v.get("error").is_none(), "room/{op}: {v}");
        v
    }

    fn stash(&mut self, p: &Publish) {
        if p.topic.starts_with("$im/events/") {
            let e = im::Event::decode(p.payload.clone()).expect("event");
            if let Some(Kind::Room(r)) = e.kind {
                self.events.push_back(r);
            }
        }
    }

    /// The next room life-cycle event.
    pub async fn event(&mut self) -> im::RoomEvent {
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            let p = self.raw.next_publish().await;
            self.stash(&p);
        }
    }
}

/// The next chat message event of a device.
pub async fn next_message(d: &mut Device) -> im::Message {
    d.message().await
}

/// The next room event of a device.
pub async fn next_room_event(d: &mut Device) -> im::RoomEvent {
    d.next(|k| match k {
        Kind::Room(r) => Some(r.clone()),
        _ => None,
    })
    .await
}

/// Sends a 1:1 fence from `from` to `to` and asserts it is `to`'s next message (so no
/// room message reached `to` before it).
pub async fn fence(from: &Device, to: &mut Device, to_account: &str, tag: &str) {
    from.client
        .send_text(to_account, tag, tag)
        .await
        .expect("fence sent");
    let m = next_message(to).await;
    assert_eq!(
        text_of(&m),
        tag,
        "a message arrived before the fence: {m:?}"
    );
}

/// Sends text `id` (with message id `id`) to a room.
pub async fn say(d: &Device, room: &str, id: &str) -> Result<im::SendResponse, ImError> {
    d.client.send_room(room, id, text(id)).await
}

/// A broker with tenant "live", its users `users` and a connected app server.
pub async fn setup(users: &[&str]) -> (ImBroker, u64, AppServer) {
    let b = ImBroker::start().await;
    let t = b.tenant("live").await;
    for u in users {
        b.user(t, u).await;
    }
    let app = AppServer::connect(&b).await;
    (b, t, app)
}
