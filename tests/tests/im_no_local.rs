//! A device's own messages and No Local (protocol.md section 5.2): a device subscribed to
//! `$im/inbox` with No Local (the SDK) does not get the `message` event of what it sent,
//! 1:1 or to a group, while the user's other devices do; a raw MQTT 5 device without the
//! option still gets it, and one with it does not, checked on the wire.
//!
//! "Did not get it" is checked by order, not by waiting: a device's events leave in the
//! order they were published, and the sender's own copy is published before the peer's,
//! so when the peer's answer arrives first, no copy of the device's own message came.

use bytes::Bytes;
use prost::Message as _;
use switchboard_proto::im::{self, event::Kind};
use switchboard_proto::{
    Packet, Properties, PubResponse, Publish, QoS, ReasonCode, SubscriptionOptions,
};
use switchboard_tests::RawClient;
use switchboard_tests::im::{Device, ImBroker, text_of};

/// The text of the next text message event of `d` (group notices skipped).
async fn next_text(d: &mut Device) -> String {
    loop {
        let m = d.message().await;
        if !text_of(&m).is_empty() {
            return text_of(&m).to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sending_device_does_not_get_its_own_message_back() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let mut phone = b.device(t, "alice", "alice-phone").await;
    let mut pc = b.device(t, "alice", "alice-pc").await;
    let mut bob = b.device(t, "bob", "bob-1").await;

    // 1:1: bob and alice's other device get it, the phone learns the seq from its answer.
    let sent = phone
        .client
        .send_text("bob", "m1", "from the phone")
        .await
        .expect("sent");
    assert_eq!(sent.seq, 1);
    let at_bob = bob.message().await;
    assert_eq!((text_of(&at_bob), at_bob.seq), ("from the phone", 1));
    assert_eq!(next_text(&mut pc).await, "from the phone");
    bob.client
        .send_text("alice", "b1", "bob answers")
        .await
        .expect("answer sent");
    assert_eq!(
        next_text(&mut phone).await,
        "bob answers",
        "the phone got its own message back before bob's answer"
    );
    assert_eq!(next_text(&mut pc).await, "bob answers");

    // A group: the same, and bob's own group message does not come back to bob.
    let g = phone
        .client
        .create_group("crew", "crew", im::JoinMode::Open, &["bob"])
        .await
        .expect("group created");
    let gid = g.group.expect("group info").group_id;
    phone
        .client
        .send_group_text(&gid, "g1", "to the crew")
        .await
        .expect("group message sent");
    assert_eq!(next_text(&mut bob).await, "to the crew");
    assert_eq!(next_text(&mut pc).await, "to the crew");
    bob.client
        .send_group_text(&gid, "g2", "crew answers")
        .await
        .expect("group answer sent");
    assert_eq!(next_text(&mut phone).await, "crew answers");
    assert_eq!(next_text(&mut pc).await, "crew answers");
    phone
        .client
        .send_text("bob", "m2", "after the group")
        .await
        .expect("sent");
    assert_eq!(
        next_text(&mut bob).await,
        "after the group",
        "bob got his own group message back"
    );
    b.stop().await;
}

/// A raw MQTT 5 device of `account`, subscribed to its inbox with `no_local` as given.
async fn raw_device(
    b: &ImBroker,
    tenant: u64,
    account: &str,
    id: &str,
    no_local: bool,
) -> RawClient {
    let inbox = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local,
        ..SubscriptionOptions::default()
    };
    switchboard_tests::im::raw_device(b, tenant, account, id, inbox).await
}

/// Sends `text` to `to` from a raw device (no response topic: the PUBACK is the answer)
/// and returns the PUBACK, acknowledging any event that arrives before it.
async fn raw_send(raw: &mut RawClient, pkid: u16, to: &str, text: &str) -> Vec<im::Event> {
    let req = im::SendRequest {
        to: to.into(),
        client_msg_id: format!("raw-{pkid}"),
        content: Some(switchboard_tests::im::text(text)),
        ..im::SendRequest::default()
    };
    raw.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "$im/req/send".into(),
        pkid,
        properties: Properties::default(),
        payload: Bytes::from(req.encode_to_vec()),
    }))
    .await;
    let mut before = Vec::new();
    loop {
        match raw.recv().await {
            Some(Packet::PubAck(a)) if a.pkid == pkid => {
                assert_eq!(a.code, ReasonCode::Success, "{a:?}");
                return before;
            }
            Some(Packet::Publish(p)) => before.push(ack_event(raw, p).await),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Acknowledges an inbox publish and decodes its event.
async fn ack_event(raw: &mut RawClient, p: Publish) -> im::Event {
    if p.qos != QoS::AtMostOnce {
        raw.send(&Packet::PubAck(PubResponse {
            pkid: p.pkid,
            code: ReasonCode::Success,
            properties: Properties::default(),
        }))
        .await;
    }
    assert_eq!(p.topic, "$im/inbox");
    im::Event::decode(p.payload).expect("an Event")
}

/// The texts of the message events among `events`.
fn texts(events: &[im::Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Message(m)) => Some(text_of(m).to_owned()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_is_the_devices_choice_on_the_wire() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let mut plain = raw_device(&b, t, "alice", "alice-plain", false).await;
    let mut quiet = raw_device(&b, t, "alice", "alice-quiet", true).await;
    let mut bob = b.device(t, "bob", "bob-1").await;

    // From the device without No Local: its own copy comes back (before or after the
    // PUBACK), and the other device gets it too.
    let mut seen = raw_send(&mut plain, 10, "bob", "plain sends").await;
    while !texts(&seen).contains(&"plain sends".to_owned()) {
        let p = plain.next_publish().await;
        seen.push(ack_event(&mut plain, p).await);
    }
    let p = quiet.next_publish().await;
    assert_eq!(texts(&[ack_event(&mut quiet, p).await]), ["plain sends"]);
    assert_eq!(next_text(&mut bob).await, "plain sends");

    // From the device with No Local: nothing of its own before bob's answer.
    let before = raw_send(&mut quiet, 11, "bob", "quiet sends").await;
    assert!(texts(&before).is_empty(), "{before:?}");
    assert_eq!(next_text(&mut bob).await, "quiet sends");
    bob.client
        .send_text("alice", "b1", "bob answers")
        .await
        .expect("answer sent");
    let p = quiet.next_publish().await;
    assert_eq!(
        texts(&[ack_event(&mut quiet, p).await]),
        ["bob answers"],
        "the No Local device got its own message back"
    );
    // The other device got both, in order.
    let p = plain.next_publish().await;
    assert_eq!(texts(&[ack_event(&mut plain, p).await]), ["quiet sends"]);
    let p = plain.next_publish().await;
    assert_eq!(texts(&[ack_event(&mut plain, p).await]), ["bob answers"]);
    b.stop().await;
}
