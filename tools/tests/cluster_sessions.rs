//! Cluster mode with the shared PostgreSQL store: sessions move between nodes. A real
//! nats-server and a private PostgreSQL (Debian's packages, loopback, temporary
//! directories) and three `switchboard broker` processes configured through the
//! environment, driven by raw MQTT 5 clients so that acknowledgements are under the
//! test's control.
//!
//! - a persistent session taken over on another node keeps its unacknowledged and queued
//!   messages, and a parked one resumes anywhere; client-id ownership is cluster-wide;
//! - two CONNECTs racing on two nodes end with one session;
//! - kill -9 of a node under QoS 1/2 load: its clients resume on another node with every
//!   acknowledged message, QoS 2 not duplicated, and the wills of its connections fire once;
//! - `switchboard ctl drain` moves clients with 0x9C and a Server Reference.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::*;
use switchboard_tests::cluster::{self, Cluster};
use switchboard_tests::nats::{metric, until_metric};
use switchboard_tests::{RawClient, TempDir, WAIT, connect_packet, persistent_connect};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn subscribe(filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        pkid: 1,
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

fn publish(topic: &str, qos: QoS, pkid: u16, body: String) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        properties: Properties::default(),
        payload: Bytes::from(body),
    })
}

fn number(p: &Publish) -> u32 {
    std::str::from_utf8(&p.payload)
        .ok()
        .and_then(|t| t.parse().ok())
        .expect("a numbered message")
}

fn connack(p: &Packet) -> &ConnAck {
    match p {
        Packet::ConnAck(a) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Connects `id` on `addr` with a persistent session, subscribes to `filter`.
async fn persistent_subscriber(addr: SocketAddr, id: &str, filter: &str, qos: QoS) -> RawClient {
    let (mut c, ack) = RawClient::connect(addr, persistent_connect(id, 3600)).await;
    assert_eq!(connack(&ack).code, ReasonCode::Success);
    c.send(&subscribe(filter, qos)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

/// Publishes `n` QoS 1 messages numbered from `from` and waits for every PUBACK.
async fn publish_acked(addr: SocketAddr, id: &str, topic: &str, from: u32, n: u32) {
    let msgs = (from..from + n)
        .map(|i| (topic.to_owned(), i.to_string()))
        .collect();
    cluster::publish_acked(addr, id, msgs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_between_nodes_with_its_unacknowledged_and_queued_messages() {
    let Some(c) = Cluster::start_durable(BIN, "cls-move", 3, &[], &[]).await else {
        return;
    };
    // On node 0: 20 messages reach the client, which acknowledges none.
    let mut a = persistent_subscriber(c.addr(0), "dev", "q/#", QoS::AtLeastOnce).await;
    publish_acked(c.addr(0), "pub0", "q/a", 0, 20).await;
    let mut seen = BTreeSet::new();
    while seen.len() < 20 {
        seen.insert(number(&a.next_publish().await));
    }
    // The same client id on node 1: node 0 closes the first connection with 0x8E, and
    // node 1 resumes the session from the store and sends the 20 again.
    let (mut b, ack) = RawClient::connect(c.addr(1), persistent_connect("dev", 3600)).await;
    let ack = connack(&ack);
    assert_eq!(ack.code, ReasonCode::Success);
    assert!(ack.session_present, "the session came along");
    let closed = a.expect_closed().await;
    assert!(
        closed
            .iter()
            .any(|p| matches!(p, Packet::Disconnect(d) if d.code == ReasonCode::SessionTakenOver)),
        "{closed:?}"
    );
    let mut again = BTreeSet::new();
    while again.len() < 20 {
        let m = b.next_publish().await;
        b.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
        again.insert(number(&m));
    }
    assert_eq!(again, seen);
    // Parked on node 1 with messages queued there, resumed on node 2.
    b.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    b.expect_closed().await;
    publish_acked(c.addr(1), "pub1", "q/b", 100, 10).await;
    let (mut d, ack) = RawClient::connect(c.addr(2), persistent_connect("dev", 3600)).await;
    assert!(connack(&ack).session_present);
    let mut queued = BTreeSet::new();
    while queued.len() < 10 {
        let m = d.next_publish().await;
        d.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
        queued.insert(number(&m));
    }
    assert_eq!(queued, (100..110).collect());
    // The session's subscription lives on node 2 now: a publish anywhere reaches it.
    until_metric(c.admin(2), "switchboard_cluster_interest_subjects", |n| {
        n >= 2
    })
    .await;
    publish_acked(c.addr(0), "pub2", "q/c", 200, 1).await;
    assert_eq!(number(&d.next_publish().await), 200);
    assert!(
        metric(
            c.admin(2),
            "switchboard_cluster_registry_sessions_loaded_total"
        )
        .await
        .is_some_and(|n| n >= 1)
    );
    assert!(c.total("switchboard_cluster_registry_releases_total").await >= 2);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_ownership_is_checked_across_nodes() {
    let dir = TempDir::new("cls-owner-pw");
    let file = dir.path().join("passwd");
    let mut lines = String::new();
    for user in ["alice", "bob"] {
        let out = tokio::process::Command::new(BIN)
            .args(["passwd", user])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("passwd runs");
        let mut child = out;
        let mut stdin = child.stdin.take().expect("stdin");
        tokio::io::AsyncWriteExt::write_all(&mut stdin, b"secret\n")
            .await
            .expect("password written");
        drop(stdin);
        let out = child.wait_with_output().await.expect("passwd ends");
        assert!(out.status.success());
        lines.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    std::fs::write(&file, lines).expect("password file");
    let file = file.display().to_string();
    let Some(c) =
        Cluster::start_durable(BIN, "cls-owner", 2, &["--password-file", &file], &[]).await
    else {
        return;
    };
    let login = |user: &str| Connect {
        username: Some(user.into()),
        password: Some(Bytes::from_static(b"secret")),
        ..persistent_connect("phone", 3600)
    };
    let (mut a, ack) = RawClient::connect(c.addr(0), login("alice")).await;
    assert_eq!(connack(&ack).code, ReasonCode::Success);
    a.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    a.expect_closed().await;
    // Bob on the other node cannot take Alice's client id (0x85), and cannot kick her.
    let (_, ack) = RawClient::connect(c.addr(1), login("bob")).await;
    assert_eq!(connack(&ack).code, ReasonCode::ClientIdentifierNotValid);
    let (_, ack) = RawClient::connect(c.addr(1), login("alice")).await;
    let ack = connack(&ack);
    assert_eq!(ack.code, ReasonCode::Success);
    assert!(ack.session_present);
    assert!(
        metric(
            c.admin(1),
            "switchboard_cluster_registry_claims_refused_total"
        )
        .await
        .is_some_and(|n| n >= 1)
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connects_racing_on_two_nodes_end_with_one_session() {
    let Some(c) = Cluster::start_durable(BIN, "cls-race", 3, &[], &[]).await else {
        return;
    };
    let (mut first, ack) = RawClient::connect(c.addr(0), persistent_connect("racer", 3600)).await;
    assert_eq!(connack(&ack).code, ReasonCode::Success);
    let (r1, r2) = tokio::join!(
        RawClient::connect_or_closed(c.addr(1), persistent_connect("racer", 3600)),
        RawClient::connect_or_closed(c.addr(2), persistent_connect("racer", 3600)),
    );
    first.expect_closed().await;
    // A connection accepted and then taken over was closed before the later one was
    // accepted: after both CONNACKs, a PINGREQ tells which one holds the session.
    let mut alive = 0;
    let mut keep = Vec::new();
    for (mut conn, ack) in [r1, r2] {
        let Some(ack) = ack else { continue };
        if connack(&ack).code != ReasonCode::Success {
            assert!(
                matches!(
                    connack(&ack).code,
                    ReasonCode::ServerBusy | ReasonCode::ServerUnavailable
                ),
                "{ack:?}"
            );
            continue;
        }
        conn.send(&Packet::PingReq).await;
        match conn.recv().await {
            Some(Packet::PingResp) => {
                alive += 1;
                keep.push(conn);
            }
            Some(Packet::Disconnect(d)) => assert_eq!(d.code, ReasonCode::SessionTakenOver),
            None => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(alive, 1, "exactly one connection holds the session");
    let mut online = 0;
    for i in 0..3 {
        let out = c.node(i).ctl_output(&["client", "racer"]).await;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"online\": true")
        {
            online += 1;
        }
    }
    assert_eq!(online, 1, "one node has the client online");
    drop(keep);
    c.stop().await;
}

/// What a subscriber got before its connection ended.
#[derive(Default)]
struct Received {
    /// QoS 1 numbers, with repeats.
    qos1: Vec<u32>,
    /// QoS 2 numbers delivered to the application (once per PUBLISH not awaiting PUBREL).
    qos2: Vec<u32>,
    /// QoS 2 packet ids received and not yet released (the client's session state).
    awaiting_rel: HashSet<u16>,
}

/// Reads deliveries, acknowledging them (QoS 2 as a receiver must: a PUBLISH whose id
/// awaits PUBREL is not delivered again), until `stop` says enough or the connection ends.
async fn drain_deliveries(
    c: &mut RawClient,
    got: &mut Received,
    stop: impl Fn(&Received) -> bool,
) -> bool {
    while !stop(got) {
        match c.recv().await {
            Some(Packet::Publish(p)) => match p.qos {
                QoS::AtLeastOnce => {
                    got.qos1.push(number(&p));
                    c.send(&Packet::PubAck(PubResponse::new(p.pkid))).await;
                }
                QoS::ExactlyOnce => {
                    if got.awaiting_rel.insert(p.pkid) {
                        got.qos2.push(number(&p));
                    }
                    c.send(&Packet::PubRec(PubResponse::new(p.pkid))).await;
                }
                QoS::AtMostOnce => {}
            },
            Some(Packet::PubRel(r)) => {
                got.awaiting_rel.remove(&r.pkid);
                c.send(&Packet::PubComp(PubResponse::new(r.pkid))).await;
            }
            Some(_) => {}
            None => return false,
        }
    }
    true
}

/// Publishes numbered messages (even: QoS 1, odd: QoS 2; a window of 16) until the
/// connection dies; returns the numbers acknowledged (PUBACK, or PUBREC for QoS 2) and
/// keeps `count` at how many have been so far.
async fn publisher(addr: SocketAddr, count: Arc<AtomicUsize>) -> Vec<u32> {
    let (mut c, _) = RawClient::connect(addr, connect_packet(Version::V5, "loader")).await;
    let mut acked = Vec::new();
    let mut inflight: HashMap<u16, u32> = HashMap::new();
    let mut next = 0u32;
    loop {
        while inflight.len() < 16 {
            let pkid = (next % 60_000) as u16 + 1;
            inflight.insert(pkid, next);
            let qos = if next.is_multiple_of(2) {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            c.send(&publish("load/x", qos, pkid, next.to_string()))
                .await;
            next += 1;
        }
        match c.recv_within(Duration::from_secs(10)).await {
            Ok(Some(Packet::PubAck(a))) => {
                if let Some(n) = inflight.remove(&a.pkid)
                    && a.code == ReasonCode::Success
                {
                    acked.push(n);
                    count.store(acked.len(), Ordering::Relaxed);
                }
            }
            Ok(Some(Packet::PubRec(a))) => {
                if let Some(n) = inflight.remove(&a.pkid)
                    && a.code == ReasonCode::Success
                {
                    acked.push(n);
                    count.store(acked.len(), Ordering::Relaxed);
                }
                c.send(&Packet::PubRel(PubResponse::new(a.pkid))).await;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(()) => return acked,
        }
    }
}

fn with_will(mut c: Connect, topic: &str) -> Connect {
    c.will = Some(Will {
        topic: topic.into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
    });
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_under_load_loses_nothing_acknowledged_and_fires_its_wills_once() {
    let Some(mut c) = Cluster::start_durable(BIN, "cls-kill", 3, &[], &[]).await else {
        return;
    };
    // A watcher for wills on node 2.
    let mut w = persistent_subscriber(c.addr(2), "watcher", "will/#", QoS::AtLeastOnce).await;
    until_metric(c.admin(2), "switchboard_cluster_interest_subjects", |n| {
        n >= 2
    })
    .await;
    // On node 0: a persistent subscriber and a non-persistent client, both with wills, and
    // a publisher under load.
    let (mut s, ack) = RawClient::connect(
        c.addr(0),
        with_will(persistent_connect("sub", 3600), "will/sub"),
    )
    .await;
    assert_eq!(connack(&ack).code, ReasonCode::Success);
    s.send(&subscribe("load/#", QoS::ExactlyOnce)).await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    let (_np, ack) = RawClient::connect(
        c.addr(0),
        with_will(connect_packet(Version::V5, "np"), "will/np"),
    )
    .await;
    assert_eq!(connack(&ack).code, ReasonCode::Success);
    let count = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(publisher(c.addr(0), count.clone()));
    let mut got = Received::default();
    // Deliveries may run ahead of the publisher's acks (a message goes out before its
    // commit is acknowledged), so wait for both.
    assert!(
        drain_deliveries(&mut s, &mut got, |g| {
            g.qos1.len() + g.qos2.len() >= 200 && count.load(Ordering::Relaxed) >= 200
        })
        .await
    );
    c.kill9(0).await;
    drain_deliveries(&mut s, &mut got, |_| false).await;
    let acked: BTreeSet<u32> = load.await.expect("publisher").into_iter().collect();
    assert!(acked.len() >= 200, "load was acknowledged before the kill");

    // The subscriber resumes on node 1 (which waits for node 0's lease to expire).
    let (mut s, ack) = RawClient::connect(c.addr(1), persistent_connect("sub", 3600)).await;
    let ack = connack(&ack);
    assert_eq!(ack.code, ReasonCode::Success);
    assert!(
        ack.session_present,
        "the persistent session resumed on another node"
    );
    let delivered =
        |g: &Received| -> BTreeSet<u32> { g.qos1.iter().chain(&g.qos2).copied().collect() };
    let acked2 = acked.clone();
    assert!(
        drain_deliveries(&mut s, &mut got, move |g| acked2.is_subset(&delivered(g))).await,
        "connection held until every acknowledged message arrived"
    );
    let mut twice: Vec<u32> = got.qos2.clone();
    twice.sort_unstable();
    twice.dedup();
    assert_eq!(
        twice.len(),
        got.qos2.len(),
        "no QoS 2 message delivered twice"
    );

    // Both wills of node 0's connections fired, once each.
    let mut wills = Vec::new();
    while wills.len() < 2 {
        let m = w.next_publish().await;
        w.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
        wills.push(m.topic.to_string());
    }
    wills.sort();
    assert_eq!(wills, ["will/np", "will/sub"]);
    let deadline = tokio::time::Instant::now() + WAIT;
    while c
        .total("switchboard_cluster_orphan_wills_fired_total")
        .await
        < 2
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        c.total("switchboard_cluster_orphan_wills_fired_total")
            .await,
        2
    );
    assert!(
        matches!(w.recv_within(Duration::from_millis(500)).await, Err(())),
        "no will published twice"
    );
    eprintln!(
        "{} acknowledged before kill -9, all delivered ({} QoS 1 deliveries, {} QoS 2)",
        acked.len(),
        got.qos1.len(),
        got.qos2.len()
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_drain_moves_clients_to_another_node_with_a_server_reference() {
    let Some(c) = Cluster::start_durable(BIN, "cls-drain", 2, &[], &[]).await else {
        return;
    };
    // Node 1's lease carries its address from its second renewal on.
    until_metric(
        c.admin(1),
        "switchboard_cluster_lease_renewals_total",
        |n| n >= 2,
    )
    .await;
    let mut a = persistent_subscriber(c.addr(0), "mover", "m/#", QoS::AtLeastOnce).await;
    let out = c.node(0).ctl(&["drain"]).await;
    let answer: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON answer");
    assert_eq!(answer["draining"], true);
    let to = answer["server_reference"]
        .as_str()
        .expect("a peer's address")
        .to_owned();
    assert_eq!(to, c.addr(1).to_string());
    let closed = a.expect_closed().await;
    assert!(
        closed.iter().any(|p| matches!(p, Packet::Disconnect(d)
            if d.code == ReasonCode::UseAnotherServer
            && d.properties.server_reference.as_deref() == Some(to.as_str()))),
        "{closed:?}"
    );
    // New CONNECTs are sent away too.
    let (_, ack) = RawClient::connect(c.addr(0), persistent_connect("late", 60)).await;
    let ack = connack(&ack);
    assert_eq!(ack.code, ReasonCode::UseAnotherServer);
    assert_eq!(
        ack.properties.server_reference.as_deref(),
        Some(to.as_str())
    );
    // The client follows the reference and finds its session there.
    let addr: SocketAddr = to.parse().expect("host:port");
    let (mut b, ack) = RawClient::connect(addr, persistent_connect("mover", 3600)).await;
    assert!(connack(&ack).session_present);
    publish_acked(addr, "p", "m/1", 7, 1).await;
    assert_eq!(number(&b.next_publish().await), 7);
    // Undrained, node 0 takes CONNECTs again.
    c.node(0).ctl(&["drain", "--stop"]).await;
    let (_, ack) = RawClient::connect(c.addr(0), connect_packet(Version::V5, "late")).await;
    assert_eq!(connack(&ack).code, ReasonCode::Success);
    c.stop().await;
}
