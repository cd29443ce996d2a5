//! What the broker tells a client of a persistent session is durable first, so a crash
//! right after cannot contradict it:
//! - outgoing QoS 2 (issue 11, item 14): the packet identifier before the PUBLISH, and
//!   "released" before the PUBREL (once the client answers PUBCOMP it forgets the id, so a
//!   resent PUBLISH after a crash would count as a new message);
//! - incoming QoS 2: the packet id forgotten before the PUBCOMP (or the client's next
//!   message with that id would be taken for a resend and dropped);
//! - subscriptions before the SUBACK / UNSUBACK;
//! - a clean start's removal of the old session before the CONNACK;
//! - a shared-subscription message handed over to another member: moved in the store
//!   (out of the old member's queue, into the new one's) before the new member gets it.
//!
//! A store whose commits of that state are slow (as a slow fsync would be) shows the
//! order: when the client sees the packet, the store already has the state.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_broker::Broker;
use switchboard_broker::store::memory::MemoryStore;
use switchboard_broker::store::{
    Done, LogEntry, Op, Record, Sent, Snapshot, Store, StoreError, StoreStats, Table,
};
use switchboard_proto::*;
use switchboard_tests::{RawClient, TestBroker, connect_packet, persistent_connect};

/// A MemoryStore whose transactions with an op that `slow` picks commit `late`.
/// Like the real stores, one writer commits every transaction in the order it was
/// queued (the broker relies on it): the ones behind a slow one wait for it.
struct SlowMarks {
    mem: Arc<MemoryStore>,
    queue: std::sync::Mutex<std::sync::mpsc::Sender<(Vec<Op>, Option<Done>)>>,
}

impl SlowMarks {
    fn new(mem: Arc<MemoryStore>, slow: fn(&Op) -> bool, late: Duration) -> SlowMarks {
        let (tx, rx) = std::sync::mpsc::channel::<(Vec<Op>, Option<Done>)>();
        let inner = mem.clone();
        // Ends when the store (and with it the sender) is dropped.
        std::thread::spawn(move || {
            for (ops, done) in rx {
                if ops.iter().any(slow) {
                    std::thread::sleep(late);
                }
                inner.write(ops, done);
            }
        });
        SlowMarks {
            mem,
            queue: std::sync::Mutex::new(tx),
        }
    }
}

impl Store for SlowMarks {
    fn write(&self, ops: Vec<Op>, done: Option<Done>) {
        if let Ok(q) = self.queue.lock() {
            let _ = q.send((ops, done));
        }
    }
    fn congested(&self) -> bool {
        self.mem.congested()
    }
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.mem.load()
    }
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.mem.get(table, key)
    }
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.mem.scan(table, prefix, after, limit)
    }
    fn log_range(
        &self,
        log: &[u8],
        from: u64,
        to: u64,
        limit: usize,
        backwards: bool,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.mem.log_range(log, from, to, limit, backwards)
    }
    fn log_last(&self, log: &[u8]) -> Result<u64, StoreError> {
        self.mem.log_last(log)
    }
    fn healthy(&self) -> bool {
        self.mem.healthy()
    }
    fn over_budget(&self, extra: u64) -> bool {
        self.mem.over_budget(extra)
    }
    fn stats(&self) -> StoreStats {
        self.mem.stats()
    }
}

/// A broker over `mem`, whose transactions with an op that `slow` picks commit 300 ms late.
async fn broker(mem: &Arc<MemoryStore>, slow: fn(&Op) -> bool) -> switchboard_broker::BrokerHandle {
    broker_late(mem, slow, Duration::from_millis(300)).await
}

/// [`broker`] with the slow commits `late`.
async fn broker_late(
    mem: &Arc<MemoryStore>,
    slow: fn(&Op) -> bool,
    late: Duration,
) -> switchboard_broker::BrokerHandle {
    Broker::new(TestBroker::config())
        .with_store(Arc::new(SlowMarks::new(mem.clone(), slow, late)))
        .start()
        .await
        .expect("starts")
}

fn subscribe(pkid: u16, filter: &str) -> Packet {
    subscribe_at(pkid, filter, QoS::ExactlyOnce)
}

fn subscribe_at(pkid: u16, filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        pkid,
        properties: Properties::default(),
        filters: vec![(
            filter.into(),
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
        )],
    })
}

/// A broker (see [`broker`]), a persistent QoS 2 subscriber to `q2/#` and a publisher.
async fn start(
    mem: &Arc<MemoryStore>,
    slow: fn(&Op) -> bool,
) -> (switchboard_broker::BrokerHandle, RawClient, RawClient) {
    let h = broker(mem, slow).await;
    let addr = h.tcp_addrs()[0];
    let (mut s, _) = RawClient::connect(addr, persistent_connect("q2sub", 600)).await;
    s.send(&subscribe(1, "q2/#")).await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    let (p, _) = RawClient::connect(addr, connect_packet(Version::V5, "q2pub")).await;
    (h, s, p)
}

async fn publish_qos2(p: &mut RawClient, pkid: u16) {
    p.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "q2/x".into(),
        pkid,
        properties: Properties::default(),
        payload: Bytes::from_static(b"exactly once"),
    }))
    .await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
}

/// Whether the store has the subscriber's queued message sent with `state`.
fn stored_as(mem: &MemoryStore, state: Sent) -> bool {
    let snap = mem.load().expect("load");
    let uid = snap
        .sessions
        .iter()
        .find(|(c, _)| c == "q2sub")
        .map(|(_, r)| r.uid)
        .expect("session stored");
    snap.queues
        .get(&uid)
        .is_some_and(|q| q.iter().any(|(_, d)| d.sent == state))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_packet_id_is_durable_before_the_publish_is_written() {
    let mem = Arc::new(MemoryStore::new());
    let (h, mut s, mut p) = start(&mem, |o| matches!(o, Op::MarkSent { .. })).await;
    for i in 0..3u16 {
        publish_qos2(&mut p, i + 1).await;
        let got = s.next_publish().await;
        assert!(
            stored_as(&mem, Sent::Published(got.pkid)),
            "PUBLISH {} reached the client before its packet id was stored",
            got.pkid
        );
        s.send(&Packet::PubRec(PubResponse::new(got.pkid))).await;
        assert!(matches!(s.recv().await, Some(Packet::PubRel(_))));
        s.send(&Packet::PubComp(PubResponse::new(got.pkid))).await;
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_released_is_durable_before_the_pubrel_is_written() {
    let mem = Arc::new(MemoryStore::new());
    let (h, mut s, mut p) = start(&mem, |o| {
        matches!(
            o,
            Op::MarkSent {
                sent: Sent::Released(_),
                ..
            }
        )
    })
    .await;
    for i in 0..3u16 {
        publish_qos2(&mut p, i + 1).await;
        let got = s.next_publish().await;
        s.send(&Packet::PubRec(PubResponse::new(got.pkid))).await;
        match s.recv().await {
            Some(Packet::PubRel(r)) => assert_eq!(r.pkid, got.pkid),
            other => panic!("expected PUBREL {}, got {other:?}", got.pkid),
        }
        assert!(
            stored_as(&mem, Sent::Released(got.pkid)),
            "PUBREL {} reached the client before \"released\" was stored: after a crash \
             the PUBLISH would be resent and taken for a new message",
            got.pkid
        );
        s.send(&Packet::PubComp(PubResponse::new(got.pkid))).await;
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_qos2_id_is_forgotten_durably_before_the_pubcomp_is_written() {
    let mem = Arc::new(MemoryStore::new());
    let (h, mut s, _p) = start(&mem, |o| matches!(o, Op::Released { .. })).await;
    // A persistent publisher that uses packet id 1 for every message, as small devices do.
    let (mut p, _) = RawClient::connect(h.tcp_addrs()[0], persistent_connect("q2dev", 600)).await;
    for _ in 0..3 {
        publish_qos2(&mut p, 1).await;
        s.next_publish().await;
        p.send(&Packet::PubRel(PubResponse::new(1))).await;
        match p.recv().await {
            Some(Packet::PubComp(c)) => assert_eq!((c.pkid, c.code), (1, ReasonCode::Success)),
            other => panic!("expected PUBCOMP 1, got {other:?}"),
        }
        let snap = mem.load().expect("load");
        assert!(
            !snap
                .awaiting_rel
                .get("q2dev")
                .is_some_and(|ids| ids.contains(&1)),
            "PUBCOMP reached the client before the packet id was forgotten in the store: \
             after a crash its next message with id 1 would be taken for a resend and dropped"
        );
    }
    h.shutdown().await;
}

/// The filters of `client`'s stored session (`None`: no session stored).
fn stored_filters(mem: &MemoryStore, client: &str) -> Option<Vec<String>> {
    let snap = mem.load().expect("load");
    snap.sessions
        .into_iter()
        .find(|(c, _)| c == client)
        .map(|(_, r)| r.subs.into_iter().map(|s| s.filter).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_durable_before_suback_and_unsuback() {
    let mem = Arc::new(MemoryStore::new());
    let h = broker(&mem, |o| matches!(o, Op::PutSession { .. })).await;
    let (mut c, _) = RawClient::connect(h.tcp_addrs()[0], persistent_connect("keeper", 600)).await;
    c.send(&subscribe(1, "a/#")).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    let filters = stored_filters(&mem, "keeper").unwrap_or_default();
    assert!(
        filters.iter().any(|f| f.ends_with("a/#")),
        "SUBACK reached the client before the subscription was stored: after a crash the \
         session would resume without it ({filters:?})"
    );
    c.send(&Packet::Unsubscribe(Unsubscribe {
        pkid: 2,
        properties: Properties::default(),
        filters: vec!["a/#".into()],
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::UnsubAck(_))));
    let filters = stored_filters(&mem, "keeper").unwrap_or_default();
    assert!(
        !filters.iter().any(|f| f.ends_with("a/#")),
        "UNSUBACK reached the client before the removal was stored ({filters:?})"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_start_removes_the_stored_session_before_connack() {
    let mem = Arc::new(MemoryStore::new());
    let h = broker(&mem, |o| matches!(o, Op::DeleteSession { .. })).await;
    let addr = h.tcp_addrs()[0];
    let (mut c, _) = RawClient::connect(addr, persistent_connect("dev", 600)).await;
    c.send(&subscribe(1, "old/#")).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    assert!(
        c.recv().await.is_none(),
        "the broker closes after DISCONNECT"
    );
    let mut fresh = persistent_connect("dev", 600);
    fresh.clean_start = true;
    let (_c, ack) = RawClient::connect(addr, fresh).await;
    assert!(matches!(&ack, Packet::ConnAck(a) if !a.session_present));
    let filters = stored_filters(&mem, "dev").unwrap_or_default();
    assert!(
        !filters.iter().any(|f| f.ends_with("old/#")),
        "CONNACK of a clean start reached the client before the old session was removed: \
         after a crash it would come back ({filters:?})"
    );
    h.shutdown().await;
}

/// Whether the store still has incoming QoS 2 packet id `pkid` of `client` awaiting PUBREL.
fn awaiting(mem: &MemoryStore, client: &str, pkid: u16) -> bool {
    let snap = mem.load().expect("load");
    snap.awaiting_rel
        .get(client)
        .is_some_and(|ids| ids.contains(&pkid))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_connacks_after_its_last_connections_writes() {
    let mem = Arc::new(MemoryStore::new());
    // Slower than the 1 s a closing connection waits for its held output.
    let late = Duration::from_millis(1500);
    let h = broker_late(&mem, |o| matches!(o, Op::Released { .. }), late).await;
    let addr = h.tcp_addrs()[0];
    let (mut p, _) = RawClient::connect(addr, persistent_connect("q2dev", 600)).await;
    publish_qos2(&mut p, 1).await;
    assert!(
        awaiting(&mem, "q2dev", 1),
        "the packet id is stored with the message"
    );
    // PUBREL, then the connection drops before the PUBCOMP (held for the slow commit).
    p.send(&Packet::PubRel(PubResponse::new(1))).await;
    drop(p);
    // Reconnected only once the broker has seen the connection end (so it read the
    // PUBREL): a takeover before that would end it unread, and the client resends a
    // PUBREL it had no PUBCOMP for.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !h.state().parked_clients().iter().any(|c| c == "q2dev") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker never saw the connection end"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_p, ack) = RawClient::connect(addr, persistent_connect("q2dev", 600)).await;
    assert!(
        matches!(&ack, Packet::ConnAck(a) if a.session_present),
        "{ack:?}"
    );
    assert!(
        !awaiting(&mem, "q2dev", 1),
        "CONNACK of the resumed session came before its last connection's PUBREL was \
         stored: a crash now would drop the client's next message with id 1"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violation_after_a_pubrel_in_one_read_still_stores_it_and_says_why() {
    let mem = Arc::new(MemoryStore::new());
    let h = broker(&mem, |o| matches!(o, Op::Released { .. })).await;
    let (mut p, _) = RawClient::connect(h.tcp_addrs()[0], persistent_connect("q2dev", 600)).await;
    publish_qos2(&mut p, 1).await;
    // PUBREL and a SUBSCRIBE the broker refuses as a protocol error (No Local on a shared
    // subscription, [MQTT-3.8.3-4]), in one write.
    let mut bytes = bytes::BytesMut::new();
    Packet::PubRel(PubResponse::new(1)).encode(Version::V5, &mut bytes);
    Packet::Subscribe(Subscribe {
        pkid: 2,
        properties: Properties::default(),
        filters: vec![(
            "$share/g/x".into(),
            SubscriptionOptions {
                no_local: true,
                ..Default::default()
            },
        )],
    })
    .encode(Version::V5, &mut bytes);
    p.send_bytes(&bytes).await;
    let seen = p.expect_closed().await;
    assert!(
        seen.iter()
            .any(|s| matches!(s, Packet::Disconnect(d) if d.code.is_error())),
        "the broker says why it closes: {seen:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while awaiting(&mem, "q2dev", 1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the PUBREL read before the violation was never stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.shutdown().await;
}

/// The stored queue of `client`'s session, (seq, message) of each entry; `None` if its
/// session is not stored (an empty queue must not pass for a missing record).
fn stored_queue(mem: &MemoryStore, client: &str) -> Option<Vec<(u64, Bytes)>> {
    let snap = mem.load().expect("load");
    let uid = snap
        .sessions
        .iter()
        .find(|(c, _)| c == client)
        .map(|(_, r)| r.uid)?;
    Some(
        snap.queues
            .get(&uid)
            .map(|q| q.iter().map(|(seq, d)| (*seq, d.message.clone())).collect())
            .unwrap_or_default(),
    )
}

/// Connects with `connect` and joins shared group `g` on `q2/#` at `qos`.
async fn join(addr: std::net::SocketAddr, connect: Connect, qos: QoS) -> RawClient {
    let (mut c, _) = RawClient::connect(addr, connect).await;
    c.send(&subscribe_at(1, "$share/g/q2/#", qos)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

/// A shared message just moved from member A to member B.
struct HandedToB {
    mem: Arc<MemoryStore>,
    h: switchboard_broker::BrokerHandle,
    b: RawClient,
    b_id: String,
    /// The message as A got it.
    got: Publish,
}

/// Member A of a shared group takes a QoS 2 message and never answers; B joins (with
/// `b_connect`, subscribing at `b_qos`); A goes away, and B gets the message. The writes
/// that drop a member's copy commit late.
async fn hand_to_b(b_connect: Connect, b_qos: QoS) -> HandedToB {
    let mem = Arc::new(MemoryStore::new());
    let h = broker(&mem, |o| matches!(o, Op::Dequeue { .. })).await;
    let addr = h.tcp_addrs()[0];
    let mut a = join(addr, persistent_connect("member-a", 600), QoS::ExactlyOnce).await;
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V5, "q2pub")).await;
    publish_qos2(&mut p, 1).await;
    let got = a.next_publish().await;
    assert_eq!(
        stored_queue(&mem, "member-a").map(|q| q.len()),
        Some(1),
        "A's copy is stored"
    );
    let b_id = b_connect.client_id.clone();
    let mut b = join(addr, b_connect, b_qos).await;
    drop(a);
    let moved = b.next_publish().await;
    assert_eq!(moved.payload, got.payload);
    HandedToB {
        mem,
        h,
        b,
        b_id,
        got,
    }
}

/// [`hand_to_b`]: the stored queues of A and B at the moment B got the message.
async fn handed_over(
    b_connect: Connect,
    b_qos: QoS,
) -> (Option<Vec<(u64, Bytes)>>, Option<Vec<(u64, Bytes)>>) {
    let t = hand_to_b(b_connect, b_qos).await;
    let queues = (
        stored_queue(&t.mem, "member-a"),
        stored_queue(&t.mem, &t.b_id),
    );
    t.h.shutdown().await;
    queues
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_message_handed_to_a_clean_member_leaves_the_old_ones_store_first() {
    let (left, _) = handed_over(connect_packet(Version::V5, "member-b"), QoS::ExactlyOnce).await;
    let left = left.expect("A's session is stored");
    assert!(
        left.is_empty(),
        "B got the message while A's stored copy was still there: after a crash A would \
         get it again, and the group would have it twice ({left:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_message_handed_to_a_persistent_member_is_moved_in_the_store_first() {
    let (left, taken) = handed_over(persistent_connect("member-b", 600), QoS::AtLeastOnce).await;
    let (left, taken) = (
        left.expect("A's session is stored"),
        taken.expect("B's session is stored"),
    );
    assert!(
        left.is_empty(),
        "B got the message while A's stored copy was still there ({left:?})"
    );
    assert_eq!(taken.len(), 1, "B's copy is stored when B gets it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_message_handed_on_a_second_time_leaves_the_second_ones_store_first() {
    // Persistent B gets the message (and a stored copy of it).
    let HandedToB { mem, h, b, got, .. } =
        hand_to_b(persistent_connect("member-b", 600), QoS::AtLeastOnce).await;
    let addr = h.tcp_addrs()[0];
    // B's copy is in the store (the hand-over wrote it; the hold should have made that so
    // already, but this test is about the second move).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stored_queue(&mem, "member-b").is_none_or(|q| q.is_empty()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B's copy is never stored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // B goes away unanswered too: C, the only member online, gets it.
    let mut c = join(
        addr,
        connect_packet(Version::V5, "member-c"),
        QoS::AtLeastOnce,
    )
    .await;
    drop(b);
    assert_eq!(c.next_publish().await.payload, got.payload);
    let left = stored_queue(&mem, "member-b").expect("B's session is stored");
    assert!(
        left.is_empty(),
        "C got the message while B's stored copy was still there: after a crash B would \
         get it again ({left:?})"
    );
    h.shutdown().await;
}
