//! Unread counts inside message events (`features` / `Event.unread_after`, protocol.md
//! section 5.1), checked on the wire with a raw MQTT client: a recipient whose devices all
//! asked gets one publish per message carrying its counts; a user with an older device
//! online gets the separate `unread` event as before; the SDK shows the same events either
//! way.

use bytes::Bytes;
use prost::Message as _;
use switchboard_proto::im::{self, event::Kind};
use switchboard_proto::{Packet, Properties, Publish, QoS, ReasonCode, SubscriptionOptions};
use switchboard_tests::RawClient;
use switchboard_tests::im::{ImBroker, text};

/// A device of `account` on a raw MQTT 5 connection, subscribed to its inbox; with
/// `inline`, it asked for unread counts inside message events (acknowledged).
async fn raw_device(b: &ImBroker, tenant: u64, account: &str, id: &str, inline: bool) -> RawClient {
    let inbox = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..SubscriptionOptions::default()
    };
    let mut raw = switchboard_tests::im::raw_device(b, tenant, account, id, inbox).await;
    if inline {
        raw.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "$im/req/features".into(),
            pkid: 2,
            properties: Properties::default(),
            payload: Bytes::from(
                im::FeaturesRequest {
                    inline_unread: true,
                }
                .encode_to_vec(),
            ),
        }))
        .await;
        let ack = raw.recv().await;
        assert!(
            matches!(&ack, Some(Packet::PubAck(a)) if a.code == ReasonCode::Success),
            "{ack:?}"
        );
    }
    raw
}

/// The next event on the raw device's inbox (acknowledged).
async fn next_event(raw: &mut RawClient) -> im::Event {
    let p = raw.next_publish().await;
    if let Some(pkid) = (p.qos != QoS::AtMostOnce).then_some(p.pkid) {
        raw.send(&Packet::PubAck(switchboard_proto::PubResponse {
            pkid,
            code: ReasonCode::Success,
            properties: Properties::default(),
        }))
        .await;
    }
    assert_eq!(p.topic, "$im/inbox");
    im::Event::decode(p.payload).expect("an Event")
}

fn message_seq(e: &im::Event) -> Option<u64> {
    match &e.kind {
        Some(Kind::Message(m)) => Some(m.seq),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_that_asked_gets_its_counts_inside_the_message_event() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let alice = b.device(t, "alice", "alice-phone").await;
    let mut bob = raw_device(&b, t, "bob", "bob-raw", true).await;

    for (i, id) in ["m1", "m2"].into_iter().enumerate() {
        alice
            .client
            .send_text("bob", id, "hello")
            .await
            .expect("sent");
        let e = next_event(&mut bob).await;
        let n = i as u64 + 1;
        assert_eq!(message_seq(&e), Some(n), "the message itself: {e:?}");
        let u = e.unread_after.expect("counts inside the message event");
        assert_eq!(
            (u.conversation.as_str(), u.unread, u.read_seq, u.total),
            ("p:1:2", n, 0, n)
        );
    }
    // Each message was one publish: the next thing bob hears is the third message, not
    // an `unread` event of the second.
    alice
        .client
        .send_text("bob", "m3", "hello")
        .await
        .expect("sent");
    let e = next_event(&mut bob).await;
    assert_eq!(message_seq(&e), Some(3), "no separate unread event: {e:?}");
    assert_eq!(e.unread_after.map(|u| u.total), Some(3));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_device_online_keeps_the_separate_unread_event_for_every_device() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let alice = b.device(t, "alice", "alice-phone").await;
    let mut new = raw_device(&b, t, "bob", "bob-new", true).await;
    let mut old = raw_device(&b, t, "bob", "bob-old", false).await;

    alice
        .client
        .send_text("bob", "m1", "hello")
        .await
        .expect("sent");
    for dev in [&mut new, &mut old] {
        let e = next_event(dev).await;
        assert_eq!(message_seq(&e), Some(1));
        let e = next_event(dev).await;
        let Some(Kind::Unread(u)) = e.kind else {
            panic!("expected the unread event after the message, got {e:?}");
        };
        assert_eq!((u.unread, u.total), (1, 1));
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_get_their_own_counts_inline_and_the_sdk_shows_unread_events() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    for a in ["owner", "ann", "ben"] {
        b.user(t, a).await;
    }
    let owner = b.device(t, "owner", "owner-phone").await;
    let _: im::GroupResponse = owner
        .client
        .request(
            "group/create",
            &im::CreateGroupRequest {
                group_id: "g1".into(),
                name: "g1".into(),
                members: vec!["ann".into(), "ben".into()],
                ..im::CreateGroupRequest::default()
            },
        )
        .await
        .expect("group made");
    let mut ann = raw_device(&b, t, "ann", "ann-raw", true).await;
    // The SDK asks for inline counts and turns them back into `unread` events.
    let mut ben = b.device(t, "ben", "ben-sdk").await;
    let send = |id: &'static str| im::SendRequest {
        to: "g1".into(),
        conv_type: im::ConvType::Group as i32,
        client_msg_id: id.into(),
        content: Some(text("hi all")),
        ..im::SendRequest::default()
    };
    let r: im::SendResponse = owner
        .client
        .request("send", &send("g-1"))
        .await
        .expect("sent");
    let e = loop {
        let e = next_event(&mut ann).await;
        if message_seq(&e) == Some(r.seq) {
            break e;
        }
    };
    let u = e.unread_after.expect("ann's counts inline");
    assert_eq!((u.conversation.as_str(), u.unread), ("g:g1", r.seq));
    let m = ben.message().await;
    let mut seq = m.seq;
    while seq < r.seq {
        seq = ben.message().await.seq;
    }
    let u = ben.unread().await;
    assert_eq!((u.conversation.as_str(), u.unread), ("g:g1", r.seq));
    b.stop().await;
}
