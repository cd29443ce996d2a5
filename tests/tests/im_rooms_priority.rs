//! Chatroom message priorities end to end (docs/im/chatrooms.md): under a congested member
//! queue low-priority room messages are dropped first and high-priority ones never; the
//! room's high-priority budget. Split from `im_rooms.rs`, whose helpers it shares.

use bytes::Bytes;
use prost::Message as _;
use serde_json::json;
use switchboard_proto::im::{self, event::Kind};
use switchboard_proto::{
    Packet, Properties, PubResponse, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions,
    Version,
};
use switchboard_tests::im::{ImBroker, text_of};
use switchboard_tests::im_rooms::*;
use switchboard_tests::{RawClient, connect_packet};

/// A broker whose session queues hold 8 deliveries.
async fn small_queue_broker() -> ImBroker {
    ImBroker::start_with(|c| c.limits.max_queued_messages = 8).await
}

fn text_of_event(p: &Publish) -> String {
    match im::Event::decode(p.payload.clone()).expect("event").kind {
        Some(Kind::Message(m)) => text_of(&m).to_owned(),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_congested_member_queue_low_priority_goes_first_and_high_never() {
    let b = small_queue_broker().await;
    let t = b.tenant("live").await;
    b.user(t, "slow").await;
    let mut app = AppServer::connect(&b).await;
    app.ok("create", json!({"tenant": t, "room": "r", "congestion": 4}))
        .await;
    // A member that reads but never acknowledges: Receive Maximum 1, so after the first
    // high-priority (QoS 1) delivery everything behind the next one waits in its queue.
    let token = b.im.issue_token(t, "slow", "", 3600).expect("token");
    let mut c = connect_packet(Version::V5, "slow-1");
    c.username = Some("slow".into());
    c.password = Some(Bytes::from(token));
    c.properties.receive_maximum = Some(1);
    let (mut slow, ack) = RawClient::connect(b.addr, c).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.code == ReasonCode::Success));
    let qos1 = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..SubscriptionOptions::default()
    };
    slow.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![
            ("$im/inbox".into(), qos1),
            ("$im/resp/#".into(), SubscriptionOptions::default()),
        ],
    }))
    .await;
    assert!(matches!(slow.recv().await, Some(Packet::SubAck(_))));
    slow.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "$im/req/room/join".into(),
        pkid: 0,
        properties: Properties {
            response_topic: Some("$im/resp/join".into()),
            correlation_data: Some(Bytes::from_static(b"j")),
            ..Properties::default()
        },
        payload: Bytes::from(
            im::RoomJoinRequest {
                room: "r".into(),
                last: None,
            }
            .encode_to_vec(),
        ),
    }))
    .await;
    let joined = slow.next_publish().await;
    let joined = im::RoomJoinResponse::decode(joined.payload).expect("join answer");
    assert_eq!(joined.status.map(|s| s.code), Some(0));
    let send = |text: &str, priority: &str| json!({"tenant": t, "room": "r", "text": text, "priority": priority});
    app.ok("send", send("H1", "high")).await;
    let h1 = slow.next_publish().await;
    assert_eq!(
        (text_of_event(&h1), h1.qos),
        ("H1".into(), QoS::AtLeastOnce)
    );
    // H1 is in flight, unacknowledged. Queue: H2, then lows until 4 are queued (L4 is
    // skipped: congested), then highs until the queue (8) is full; H7 pushes the oldest
    // low (L1) out rather than being dropped.
    app.ok("send", send("H2", "high")).await;
    for l in ["L1", "L2", "L3", "L4"] {
        app.ok("send", send(l, "low")).await;
    }
    for h in ["H3", "H4", "H5", "H6", "H7"] {
        app.ok("send", send(h, "high")).await;
    }
    let info = app.ok("info", json!({"tenant": t, "room": "r"})).await;
    assert_eq!(info["dropped"], 2, "L4 skipped, L1 pushed out");
    let mut got = Vec::new();
    let mut pending = Some(h1.pkid);
    while got.len() < 8 {
        if let Some(pkid) = pending.take() {
            slow.send(&Packet::PubAck(PubResponse::new(pkid))).await;
        }
        let p = slow.next_publish().await;
        if p.qos == QoS::AtLeastOnce {
            pending = Some(p.pkid);
        }
        got.push(text_of_event(&p));
    }
    assert_eq!(got, ["H2", "L2", "L3", "H3", "H4", "H5", "H6", "H7"]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_types_and_the_room_budget() {
    let (b, t, mut app) = setup(&["alice", "bob"]).await;
    app.ok(
        "create",
        json!({"tenant": t, "room": "r", "budget_per_sec": 1, "high_priority_types": ["custom:gift"]}),
    )
    .await;
    let alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    alice.client.join_room("r", None).await.expect("join");
    bob.client.join_room("r", None).await.expect("join");
    let gift = im::Content {
        body: Some(im::content::Body::Custom(im::Custom {
            r#type: "gift".into(),
            data: Bytes::from_static(b"rocket"),
        })),
    };
    // Over a budget of 1 message a second, low-priority messages are dropped (seq 0) but
    // high-priority types still go out. The first may land in a fresh second: send until
    // one is dropped.
    let mut dropped = false;
    for i in 0..3 {
        let r = say(&alice, "r", &format!("chat{i}"))
            .await
            .expect("accepted");
        if r.seq == 0 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "a low-priority message over the budget is dropped");
    let r = alice.client.send_room("r", "g1", gift).await.expect("gift");
    assert!(r.seq > 0, "high priority is never dropped for the budget");
    let m = bob
        .next(|k| match k {
            Kind::Message(m) if text_of(m).is_empty() => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(m.seq, r.seq);
    b.stop().await;
}
