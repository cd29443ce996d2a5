//! A client id belongs to the identity that created its session (issue 11, item 2): another
//! user presenting it is refused (v5 0x85, 3.1.1 identifier rejected) and the victim's queue
//! stays; two CONNECTs racing for one client id end with one session, its queue intact, and
//! no orphan rows in the store.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_broker::store::Store;
use switchboard_broker::store::memory::MemoryStore;
use switchboard_broker::{Broker, BrokerConfig};
use switchboard_proto::*;
use switchboard_tests::{RawClient, TempDir, TestBroker, connect_packet, persistent_connect};

fn login(mut c: Connect, user: &str) -> Connect {
    c.username = Some(user.into());
    c.password = Some(Bytes::from_static(b"pw"));
    c
}

async fn users_broker(dir: &TempDir) -> TestBroker {
    let file = dir.path().join("passwd");
    let hash = switchboard_broker::auth::hash_password("pw").expect("hash");
    std::fs::write(&file, format!("alice:{hash}\nbob:{hash}\n")).expect("write");
    TestBroker::start_durable(dir.path(), 0, move |c| {
        c.allow_anonymous = false;
        c.password_file = Some(file);
    })
    .await
}

fn qos1(topic: &str, pkid: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        pkid,
        properties: Properties::default(),
        payload: Bytes::from_static(payload),
    })
}

async fn connack(addr: std::net::SocketAddr, c: Connect) -> (RawClient, ConnAck) {
    match RawClient::connect(addr, c).await {
        (client, Packet::ConnAck(a)) => (client, a),
        (_, other) => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Opens a persistent session `id` of `user` subscribed to `q/#`, leaves, and queues three
/// acknowledged QoS 1 messages for it.
async fn park_with_queue(b: &TestBroker, user: &str, id: &str) {
    let (mut s, ack) = connack(b.addr, login(persistent_connect(id, 600), user)).await;
    assert_eq!(ack.code, ReasonCode::Success);
    s.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(
            "q/#".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
    }))
    .await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    s.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    s.expect_closed().await;
    let (mut p, _) = connack(b.addr, login(connect_packet(Version::V5, "pub"), user)).await;
    for (i, m) in [&b"m1"[..], b"m2", b"m3"].into_iter().enumerate() {
        p.send(&qos1("q/x", 10 + i as u16, m)).await;
        assert!(matches!(p.recv().await, Some(Packet::PubAck(a)) if a.code == ReasonCode::Success));
    }
}

/// Resumes `id` as `user` and returns the payloads of the queued messages (acknowledged).
async fn drain(b: &TestBroker, user: &str, id: &str) -> Vec<Bytes> {
    let (mut s, ack) = connack(b.addr, login(persistent_connect(id, 600), user)).await;
    assert_eq!(ack.code, ReasonCode::Success);
    assert!(ack.session_present, "the session is still there");
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = s.next_publish().await;
        s.send(&Packet::PubAck(PubResponse::new(p.pkid))).await;
        got.push(p.payload);
    }
    got
}

#[tokio::test]
async fn hijack_of_another_users_client_id_is_refused_and_queue_kept() {
    let dir = TempDir::new("owner");
    let b = users_broker(&dir).await;
    park_with_queue(&b, "alice", "phone-a").await;

    // Bob, a valid user, presents Alice's client id: refused, with and without clean start.
    let (_, ack) = connack(b.addr, login(connect_packet(Version::V5, "phone-a"), "bob")).await;
    assert_eq!(ack.code, ReasonCode::ClientIdentifierNotValid, "v5: 0x85");
    let (_, ack) = connack(b.addr, login(persistent_connect("phone-a", 60), "bob")).await;
    assert_eq!(ack.code, ReasonCode::ClientIdentifierNotValid);
    let (_, ack) = connack(
        b.addr,
        login(connect_packet(Version::V3_1_1, "phone-a"), "bob"),
    )
    .await;
    assert_eq!(ack.code.v3_connack_code(), 2, "3.1.1: identifier rejected");

    // While Alice is connected, Bob cannot kick her either.
    let (mut alice, ack) =
        connack(b.addr, login(persistent_connect("phone-a", 600), "alice")).await;
    assert!(ack.session_present);
    let (_, ack) = connack(b.addr, login(connect_packet(Version::V5, "phone-a"), "bob")).await;
    assert_eq!(ack.code, ReasonCode::ClientIdentifierNotValid);
    let first = alice.next_publish().await;
    assert_eq!(
        &first.payload[..],
        b"m1",
        "Alice still connected and served"
    );
    drop(alice);

    let port = b.port();
    b.stop().await;
    // The owner survives a restart.
    let b = TestBroker::start_durable(dir.path(), port, |c| {
        c.allow_anonymous = false;
        c.password_file = Some(dir.path().join("passwd"));
    })
    .await;
    let (_, ack) = connack(b.addr, login(persistent_connect("phone-a", 60), "bob")).await;
    assert_eq!(
        ack.code,
        ReasonCode::ClientIdentifierNotValid,
        "owner persisted"
    );
    let got = drain(&b, "alice", "phone-a").await;
    assert_eq!(got, [&b"m1"[..], b"m2", b"m3"], "victim's queue intact");
    b.stop().await;
}

/// A broker with users alice and bob whose store is a [`MemoryStore`] the test can read
/// while the broker runs (its writes apply synchronously).
async fn memory_broker(dir: &TempDir) -> (TestBroker, Arc<MemoryStore>) {
    let file = dir.path().join("passwd");
    let hash = switchboard_broker::auth::hash_password("pw").expect("hash");
    std::fs::write(&file, format!("alice:{hash}\n")).expect("write");
    let store = Arc::new(MemoryStore::new());
    let cfg = BrokerConfig {
        listeners: switchboard_broker::Listeners {
            tcp: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))],
            ..Default::default()
        },
        allow_anonymous: false,
        password_file: Some(file),
        sys_interval: 0,
        ..BrokerConfig::default()
    };
    let handle = Broker::new(cfg)
        .with_store(store.clone())
        .start()
        .await
        .expect("broker starts");
    let addr = handle.tcp_addrs()[0];
    (TestBroker { handle, addr }, store)
}

/// Stored sessions (client id, uid) and the uids of the stored queue rows.
fn store_rows(store: &MemoryStore) -> (Vec<(String, u64)>, Vec<u64>) {
    let snap = store.load().expect("loads");
    let sessions = snap
        .sessions
        .iter()
        .map(|(c, r)| (c.clone(), r.uid))
        .collect();
    let queued = snap
        .queues
        .iter()
        .flat_map(|(uid, q)| q.iter().map(|_| *uid))
        .collect();
    (sessions, queued)
}

fn clean_persistent(id: &str) -> Connect {
    login(
        Connect {
            clean_start: true,
            ..persistent_connect(id, 600)
        },
        "alice",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_connects_with_one_client_id_leave_one_session_and_no_orphans() {
    for round in 0..5 {
        let dir = TempDir::new("race");
        let (b, store) = memory_broker(&dir).await;
        park_with_queue(&b, "alice", "racer").await;
        // Two resuming CONNECTs at once: one wins, the other takes over; the queue moves.
        let resume = || login(persistent_connect("racer", 600), "alice");
        let one = tokio::spawn(connack(b.addr, resume()));
        let two = tokio::spawn(connack(b.addr, resume()));
        let (c1, a1) = one.await.expect("task");
        let (c2, a2) = two.await.expect("task");
        assert_eq!(
            (a1.code, a2.code),
            (ReasonCode::Success, ReasonCode::Success)
        );
        drop((c1, c2));
        let got = drain(&b, "alice", "racer").await;
        assert_eq!(got.len(), 3, "round {round}: acked queue intact: {got:?}");
        assert_eq!(b.handle.state().sessions.len(), 1);

        // Park it with a queue again, then two clean starts at once: the old rows go, the
        // winner's record stays.
        park_again(&b).await;
        let (sessions, queued) = store_rows(&store);
        assert_eq!((sessions.len(), queued.len()), (1, 3), "round {round}");
        let one = tokio::spawn(connack(b.addr, clean_persistent("racer")));
        let two = tokio::spawn(connack(b.addr, clean_persistent("racer")));
        let (c1, a1) = one.await.expect("task");
        let (c2, a2) = two.await.expect("task");
        assert_eq!(
            (a1.code, a2.code),
            (ReasonCode::Success, ReasonCode::Success)
        );
        assert_eq!(b.handle.state().sessions.len(), 1);
        let (sessions, queued) = store_rows(&store);
        assert_eq!(
            sessions.len(),
            1,
            "round {round}: the live persistent session has its record: {sessions:?}"
        );
        assert!(
            queued.is_empty(),
            "round {round}: orphan queue rows {queued:?} (session {sessions:?})"
        );
        drop((c1, c2));
        b.stop().await;
    }
}

/// Leaves `racer` parked with three queued messages (its subscription is kept).
async fn park_again(b: &TestBroker) {
    let (mut s, ack) = connack(b.addr, login(persistent_connect("racer", 600), "alice")).await;
    assert!(ack.session_present);
    s.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    s.expect_closed().await;
    let (mut p, _) = connack(b.addr, login(connect_packet(Version::V5, "pub"), "alice")).await;
    for (i, m) in [&b"n1"[..], b"n2", b"n3"].into_iter().enumerate() {
        p.send(&qos1("q/x", 20 + i as u16, m)).await;
        assert!(matches!(p.recv().await, Some(Packet::PubAck(a)) if a.code == ReasonCode::Success));
    }
}
