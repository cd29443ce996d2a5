//! Group test helpers (tests/tests/im_groups*.rs): group requests of a device, the app
//! server as a `$service` MQTT client, and pickers for what members see.

use bytes::Bytes;
use serde_json::Value;
use switchboard_client::im::ImError;
use switchboard_proto::im::{self, event::Kind};
use switchboard_proto::{
    Packet, Properties, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions, Version,
};

use crate::im::{Device, ImBroker, SERVICE_SECRET};
use crate::{RawClient, connect_packet};

pub fn status(e: &ImError) -> u32 {
    match e {
        ImError::Status { code, .. } => *code,
        other => panic!("expected an IM status error, got {other}"),
    }
}

/// A group request of a device.
pub async fn group<Q: prost::Message, R: prost::Message + Default>(
    d: &Device,
    op: &str,
    req: &Q,
) -> Result<R, ImError> {
    d.client.request(&format!("group/{op}"), req).await
}

/// A group request whose answer is an `Ack`.
pub async fn group_ack<Q: prost::Message>(d: &Device, op: &str, req: &Q) -> Result<(), ImError> {
    group::<Q, im::Ack>(d, op, req).await.map(|_| ())
}

pub fn members(gid: &str, accounts: &[&str]) -> im::GroupMembersRequest {
    im::GroupMembersRequest {
        group_id: gid.into(),
        accounts: accounts.iter().map(|a| a.to_string()).collect(),
    }
}

pub async fn say(d: &Device, gid: &str, id: &str, t: &str) -> Result<im::SendResponse, ImError> {
    d.client.send_group_text(gid, id, t).await
}

/// The kind of a notice message ("" for a chat message).
pub fn notice_kind(m: &im::Message) -> &str {
    match m.content.as_ref().and_then(|c| c.body.as_ref()) {
        Some(im::content::Body::Notice(n)) => &n.kind,
        _ => "",
    }
}

/// The next message of conversation `conv` on a device.
pub async fn next_in(d: &mut Device, conv: &str) -> im::Message {
    let conv = conv.to_owned();
    d.next(|k| match k {
        Kind::Message(m) if m.conversation == conv => Some(m.clone()),
        _ => None,
    })
    .await
}

/// The next group event of a device.
pub async fn group_event(d: &mut Device) -> im::GroupEvent {
    d.next(|k| match k {
        Kind::Group(g) => Some(g.clone()),
        _ => None,
    })
    .await
}

/// The app server: the service credential, requests to `$im/admin/group/{op}`.
pub struct AppServer {
    raw: RawClient,
    pkid: u16,
}

impl AppServer {
    pub async fn connect(b: &ImBroker) -> AppServer {
        let mut raw = RawClient::open(b.addr, Version::V5).await;
        let mut c = connect_packet(Version::V5, "app-server");
        c.username = Some("$service".into());
        c.password = Some(Bytes::from_static(SERVICE_SECRET.as_bytes()));
        raw.send(&Packet::Connect(Box::new(c))).await;
        assert!(
            matches!(raw.recv().await, Some(Packet::ConnAck(a)) if a.code == ReasonCode::Success)
        );
        raw.send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            properties: Properties::default(),
            filters: vec![("app/replies".into(), SubscriptionOptions::default())],
        }))
        .await;
        assert!(matches!(raw.recv().await, Some(Packet::SubAck(_))));
        AppServer { raw, pkid: 1 }
    }

    /// One request; its JSON answer.
    pub async fn call(&mut self, op: &str, body: Value) -> Value {
        self.pkid += 1;
        let pkid = self.pkid;
        self.raw
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: format!("$im/admin/group/{op}"),
                pkid,
                properties: Properties {
                    response_topic: Some("app/replies".into()),
                    correlation_data: Some(Bytes::copy_from_slice(&pkid.to_be_bytes())),
                    ..Properties::default()
                },
                payload: Bytes::from(body.to_string()),
            }))
            .await;
        let (mut answer, mut acked) = (None, false);
        while answer.is_none() || !acked {
            match self.raw.recv().await {
                Some(Packet::PubAck(a)) if a.pkid == pkid => acked = true,
                Some(Packet::Publish(p)) => {
                    assert_eq!(
                        p.properties.correlation_data.as_deref(),
                        Some(&pkid.to_be_bytes()[..])
                    );
                    answer = Some(serde_json::from_slice(&p.payload).expect("JSON answer"));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        answer.expect("answer")
    }
}

/// Ops the store has committed so far (every durable write is one or more ops).
pub fn store_ops(b: &ImBroker) -> u64 {
    b.handle.state().store().expect("a store").stats().ops
}
