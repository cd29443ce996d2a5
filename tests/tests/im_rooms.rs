//! Chatrooms end to end (docs/im/chatrooms.md): the app server creates and manages rooms
//! over `$im/admin/room/...` with the service credential (a raw MQTT client), users'
//! devices join and send with the SDK over TCP, and a raw IM device stands in for a member
//! that does not read.
//!
//! Negative checks ("bob did not get it") use a fence instead of waiting: a 1:1 message
//! sent after the room message reaches bob's queue after it, so if bob's next message is
//! the fence, the room message never came.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use serde_json::{Value, json};
use switchboard_broker::im::ImService;
use switchboard_broker::im::keys::{self, ConvId};
use switchboard_broker::store::redb::RedbStore;
use switchboard_broker::{Broker, BrokerConfig};
use switchboard_client::im::ImError;
use switchboard_proto::im::{self, event::Kind, room_event};
use switchboard_proto::{
    Packet, Properties, PubResponse, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions,
    Version,
};
use switchboard_tests::im::{Device, ImBroker, SERVICE_SECRET, text, text_of};
use switchboard_tests::{RawClient, TempDir, WAIT, connect_packet};

fn status(e: &ImError) -> u32 {
    match e {
        ImError::Status { code, .. } => *code,
        other => panic!("expected an IM status error, got {other}"),
    }
}

/// The app server: admin requests over MQTT with the service credential, and the room
/// life-cycle events of `$im/events/+/room`.
struct AppServer {
    raw: RawClient,
    next: u16,
    events: VecDeque<im::RoomEvent>,
}

impl AppServer {
    async fn connect(b: &ImBroker) -> AppServer {
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
    async fn room(&mut self, op: &str, body: Value) -> Value {
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
    async fn ok(&mut self, op: &str, body: Value) -> Value {
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
    async fn event(&mut self) -> im::RoomEvent {
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
async fn next_message(d: &mut Device) -> im::Message {
    d.message().await
}

/// The next room event of a device.
async fn next_room_event(d: &mut Device) -> im::RoomEvent {
    d.next(|k| match k {
        Kind::Room(r) => Some(r.clone()),
        _ => None,
    })
    .await
}

/// Sends a 1:1 fence from `from` to `to` and asserts it is `to`'s next message (so no
/// room message reached `to` before it).
async fn fence(from: &Device, to: &mut Device, to_account: &str, tag: &str) {
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

async fn say(d: &Device, room: &str, id: &str) -> Result<im::SendResponse, ImError> {
    d.client.send_room(room, id, text(id)).await
}

async fn setup(users: &[&str]) -> (ImBroker, u64, AppServer) {
    let b = ImBroker::start().await;
    let t = b.tenant("live").await;
    for u in users {
        b.user(t, u).await;
    }
    let app = AppServer::connect(&b).await;
    (b, t, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_get_the_last_n_messages_and_members_get_live_ones() {
    let (b, t, mut app) = setup(&["alice", "bob", "carol"]).await;
    app.ok(
        "create",
        json!({"tenant": t, "room": "show", "name": "The show", "history": 3}),
    )
    .await;
    assert_eq!(app.event().await.kind, room_event::Kind::Created as i32);
    let mut alice = b.device(t, "alice", "alice-1").await;
    let joined = alice.client.join_room("show", None).await.expect("join");
    assert!(joined.recent.is_empty());
    for i in 1..=5 {
        let r = say(&alice, "show", &format!("m{i}")).await.expect("sent");
        assert_eq!((r.seq, r.conversation.as_str()), (i, "r:show"));
    }
    let mut bob = b.device(t, "bob", "bob-1").await;
    let joined = bob.client.join_room("show", None).await.expect("join");
    let recent: Vec<&str> = joined.recent.iter().map(text_of).collect();
    assert_eq!(recent, ["m3", "m4", "m5"], "the last N = 3, oldest first");
    let info = joined.room.expect("room info");
    assert_eq!(
        (info.member_count, info.last_seq, info.name.as_str()),
        (2, 5, "The show")
    );
    let fewer = bob
        .client
        .join_room("show", Some(1))
        .await
        .expect("join again");
    assert_eq!(fewer.recent.len(), 1, "a joiner may ask for fewer");
    // Live messages reach every member device (the sender's too), in seq order.
    say(&alice, "show", "m6").await.expect("sent");
    say(&alice, "show", "m7").await.expect("sent");
    for i in 1..=5 {
        assert_eq!(
            next_message(&mut alice).await.seq,
            i,
            "the sender hears its own"
        );
    }
    for d in [&mut bob, &mut alice] {
        let m = next_message(d).await;
        assert_eq!(
            (m.seq, text_of(&m), m.conversation.as_str()),
            (6, "m6", "r:show")
        );
        assert_eq!(m.conv_type, im::ConvType::Chatroom as i32);
        assert_eq!(next_message(d).await.seq, 7);
    }
    // Members: paged by account.
    let carol = b.device(t, "carol", "carol-1").await;
    carol.client.join_room("show", Some(0)).await.expect("join");
    let p1 = bob
        .client
        .room_members("show", "", 2)
        .await
        .expect("members");
    let names: Vec<&str> = p1.members.iter().map(|m| m.account.as_str()).collect();
    assert_eq!(
        (names, p1.total, p1.next.as_str()),
        (vec!["alice", "bob"], 3, "bob")
    );
    let p2 = bob
        .client
        .room_members("show", &p1.next, 2)
        .await
        .expect("members");
    let names: Vec<&str> = p2.members.iter().map(|m| m.account.as_str()).collect();
    assert_eq!((names, p2.next.as_str()), (vec!["carol"], ""));
    let v = app
        .ok("members", json!({"tenant": t, "room": "show"}))
        .await;
    assert_eq!(v["total"], 3);
    // Not a member, not a room: refused with their codes.
    let dave = b.user(t, "dave").await;
    assert!(dave > 0);
    let dave = b.device(t, "dave", "dave-1").await;
    assert_eq!(
        status(&say(&dave, "show", "x").await.expect_err("not in")),
        403
    );
    assert_eq!(
        status(
            &dave
                .client
                .room_members("show", "", 10)
                .await
                .expect_err("not in")
        ),
        403
    );
    assert_eq!(
        status(
            &dave
                .client
                .join_room("nope", None)
                .await
                .expect_err("no room")
        ),
        404
    );
    drop(carol);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_or_disconnecting_stops_delivery_and_nothing_is_stored() {
    let (b, t, mut app) = setup(&["alice", "bob", "carol"]).await;
    app.ok("create", json!({"tenant": t, "room": "r1", "history": 2}))
        .await;
    let alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    alice.client.join_room("r1", None).await.expect("join");
    bob.client.join_room("r1", None).await.expect("join");
    say(&alice, "r1", "before").await.expect("sent");
    assert_eq!(text_of(&next_message(&mut bob).await), "before");
    bob.client.leave_room("r1").await.expect("leave");
    assert_eq!(
        status(&bob.client.leave_room("r1").await.expect_err("left already")),
        404
    );
    say(&alice, "r1", "while-away").await.expect("sent");
    fence(&alice, &mut bob, "bob", "fence-1").await;
    // A device that disconnects is out of the room.
    let carol = b.device(t, "carol", "carol-1").await;
    carol.client.join_room("r1", None).await.expect("join");
    assert_eq!(
        app.ok("info", json!({"tenant": t, "room": "r1"})).await["member_count"],
        2
    );
    carol.client.shutdown().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.ok("info", json!({"tenant": t, "room": "r1"})).await["member_count"] != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "carol still in the room"
        );
        tokio::task::yield_now().await;
    }
    // Rejoining gives the ring only (the last 2), nothing else was kept for bob.
    let again = bob.client.join_room("r1", None).await.expect("join");
    let recent: Vec<&str> = again.recent.iter().map(text_of).collect();
    assert_eq!(recent, ["before", "while-away"]);
    // Nothing stored: sync has no room messages or rows, the store has no room log.
    let mut cursors = HashMap::new();
    let (messages, list) = bob.client.sync_all(&mut cursors).await.expect("sync");
    assert!(
        messages.iter().all(|m| !m.conversation.starts_with("r:")),
        "{messages:?}"
    );
    assert!(list.conversations.iter().all(|c| !c.id.starts_with("r:")));
    let store = b.handle.state().store().expect("store").clone();
    let log = keys::log(t, &ConvId::Chatroom("r1".into()));
    assert_eq!(
        store.log_last(&log).expect("store read"),
        0,
        "no room log in the store"
    );
    // History has no room conversation to read from.
    let e = bob
        .client
        .history("r:r1", 0, 10)
        .await
        .expect_err("no stored room");
    assert_eq!(status(&e), 404);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gag_answers_423_block_keeps_out_with_403_and_whitelist_beats_gag() {
    let (b, t, mut app) = setup(&["alice", "bob", "carol"]).await;
    app.ok("create", json!({"tenant": t, "room": "r"})).await;
    let mut alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    let mut carol = b.device(t, "carol", "carol-1").await;
    for d in [&alice, &bob, &carol] {
        d.client.join_room("r", None).await.expect("join");
    }
    app.ok(
        "gag",
        json!({"tenant": t, "room": "r", "accounts": ["bob"], "duration_secs": 600}),
    )
    .await;
    let ev = next_room_event(&mut bob).await;
    assert_eq!(ev.kind, room_event::Kind::Gagged as i32);
    assert!(ev.until_ms > 0);
    assert_eq!(
        status(&say(&bob, "r", "hush").await.expect_err("gagged")),
        423
    );
    let page = alice
        .client
        .room_members("r", "", 10)
        .await
        .expect("members");
    assert!(page.members.iter().any(|m| m.account == "bob" && m.gagged));
    // Whitelisted members are never gagged.
    app.ok(
        "whitelist_add",
        json!({"tenant": t, "room": "r", "accounts": ["bob"]}),
    )
    .await;
    say(&bob, "r", "vip").await.expect("whitelisted: sent");
    assert_eq!(text_of(&next_message(&mut alice).await), "vip");
    app.ok(
        "whitelist_remove",
        json!({"tenant": t, "room": "r", "accounts": ["bob"]}),
    )
    .await;
    assert_eq!(
        status(&say(&bob, "r", "hush2").await.expect_err("gagged again")),
        423
    );
    app.ok(
        "ungag",
        json!({"tenant": t, "room": "r", "accounts": ["bob"]}),
    )
    .await;
    say(&bob, "r", "free").await.expect("ungagged");
    // Block: carol is told, out at once, and cannot come back.
    app.ok(
        "block",
        json!({"tenant": t, "room": "r", "accounts": ["carol"], "duration_secs": 600}),
    )
    .await;
    let ev = carol
        .next(|k| match k {
            Kind::Room(r) if r.kind == room_event::Kind::Blocked as i32 => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(ev.targets, ["carol"]);
    say(&alice, "r", "after-block").await.expect("sent");
    fence(&alice, &mut carol, "carol", "fence-c").await;
    assert_eq!(
        status(
            &carol
                .client
                .join_room("r", None)
                .await
                .expect_err("blocked")
        ),
        403
    );
    app.ok(
        "unblock",
        json!({"tenant": t, "room": "r", "accounts": ["carol"]}),
    )
    .await;
    carol
        .client
        .join_room("r", None)
        .await
        .expect("unblocked: joins");
    // Bad admin input gets its code.
    let v = app
        .room(
            "gag",
            json!({"tenant": t, "room": "r", "accounts": ["bob"]}),
        )
        .await;
    assert_eq!(v["error"]["code"], 400, "a gag needs a duration");
    let v = app
        .room(
            "gag",
            json!({"tenant": t, "room": "r", "accounts": ["nobody"], "duration_secs": 5}),
        )
        .await;
    assert_eq!(v["error"]["code"], 404);
    let v = app.room("create", json!({"tenant": t, "room": "r"})).await;
    assert_eq!(v["error"]["code"], 409);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_distribution_and_resume_restarts_it() {
    let (b, t, mut app) = setup(&["alice", "bob"]).await;
    app.ok("create", json!({"tenant": t, "room": "r"})).await;
    let alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    alice.client.join_room("r", None).await.expect("join");
    bob.client.join_room("r", None).await.expect("join");
    app.ok("pause", json!({"tenant": t, "room": "r"})).await;
    assert_eq!(
        next_room_event(&mut bob).await.kind,
        room_event::Kind::Paused as i32
    );
    let r = say(&alice, "r", "paused-1")
        .await
        .expect("accepted while paused");
    assert_eq!(r.seq, 1);
    fence(&alice, &mut bob, "bob", "fence-p").await;
    app.ok("resume", json!({"tenant": t, "room": "r"})).await;
    assert_eq!(
        next_room_event(&mut bob).await.kind,
        room_event::Kind::Resumed as i32
    );
    say(&alice, "r", "live-2").await.expect("sent");
    let m = next_message(&mut bob).await;
    assert_eq!((m.seq, text_of(&m)), (2, "live-2"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_tells_members_and_an_empty_room_is_cleaned_up() {
    let (b, t, mut app) = setup(&["alice", "bob"]).await;
    app.ok("create", json!({"tenant": t, "room": "doomed"}))
        .await;
    let mut alice = b.device(t, "alice", "alice-1").await;
    alice.client.join_room("doomed", None).await.expect("join");
    app.ok("destroy", json!({"tenant": t, "room": "doomed"}))
        .await;
    let ev = next_room_event(&mut alice).await;
    assert_eq!(
        (ev.kind, ev.reason.as_str()),
        (room_event::Kind::Destroyed as i32, "app")
    );
    assert_eq!(
        status(&say(&alice, "doomed", "x").await.expect_err("gone")),
        404
    );
    // Idle clean-up: a room nobody is in goes after idle_ms, and the app server hears it.
    let bob = b.device(t, "bob", "bob-1").await;
    // The room is empty, hence idle, from its creation: on a loaded machine the cleaner
    // can take it before the join arrives (404), which is the behaviour under test too;
    // then create it again.
    let (mut joined, mut created) = (false, 0);
    for _ in 0..10 {
        created += 1;
        app.ok(
            "create",
            json!({"tenant": t, "room": "brief", "idle_ms": 50}),
        )
        .await;
        match bob.client.join_room("brief", None).await {
            Ok(_) => {
                joined = true;
                break;
            }
            Err(e) => assert_eq!(status(&e), 404, "join: {e:?}"),
        }
    }
    assert!(joined, "the room never lived long enough to be joined");
    bob.client.leave_room("brief").await.expect("leave");
    // One destroyed event per creation; the last one is the room bob left.
    for _ in 0..created {
        let ev = loop {
            let e = app.event().await;
            if e.room == "brief" && e.kind == room_event::Kind::Destroyed as i32 {
                break e;
            }
        };
        assert_eq!((ev.reason.as_str(), ev.tenant), ("idle", t));
    }
    assert_eq!(
        status(&bob.client.join_room("brief", None).await.expect_err("gone")),
        404
    );
    let v = app.ok("list", json!({"tenant": t})).await;
    assert_eq!(v["rooms"], json!([]));
    b.stop().await;
}

/// A broker whose session queues hold 8 deliveries.
async fn small_queue_broker() -> ImBroker {
    let dir = Arc::new(TempDir::new("im-rooms"));
    let mut cfg = BrokerConfig {
        listeners: switchboard_broker::Listeners {
            tcp: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))],
            ..Default::default()
        },
        allow_anonymous: true,
        sys_interval: 0,
        ..BrokerConfig::default()
    };
    cfg.limits.max_queued_messages = 8;
    let store =
        Arc::new(RedbStore::open(&dir.path().join("switchboard.redb"), 0).expect("store opens"));
    let im = ImService::new(store.clone(), Some(SERVICE_SECRET.into()));
    let handle = Broker::new(cfg)
        .with_store(store)
        .with_im(im.clone())
        .start()
        .await
        .expect("broker starts");
    let addr = handle.tcp_addrs()[0];
    ImBroker {
        handle,
        addr,
        im,
        dir,
    }
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
