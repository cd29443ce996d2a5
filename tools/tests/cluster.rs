//! Cluster mode end to end: a real nats-server (JetStream on, loopback, temporary
//! directory) and three `switchboard broker` processes configured through the environment,
//! driven by rumqttc MQTT 5 clients. Cross-node pub/sub at QoS 0/1/2 with wildcards and
//! overlapping filters (each message once), retained messages on every node, shared
//! subscriptions balanced across nodes, wills of clients that die, session takeover across
//! nodes (0x8E), and a NATS restart.
//!
//! Cross-node subscriptions take effect once NATS has confirmed them: the tests wait for the
//! subscriber node's `switchboard_cluster_interest_subjects` figure, as an operator would.

use std::collections::HashMap;

use switchboard_proto::{Packet as RawPacket, ReasonCode, Version};
use switchboard_tests::cluster::Cluster;
use switchboard_tests::nats::{metric, until_metric};
use switchboard_tests::rumqttc::v5::mqttbytes::QoS;
use switchboard_tests::rumqttc::v5::mqttbytes::v5::{LastWill, Publish};
use switchboard_tests::{RawClient, WAIT, connect_packet, v5};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A client on node `i` subscribed to `filters`, once NATS confirmed the node's
/// interest reached `subjects` subjects.
async fn subscriber(
    cluster: &Cluster,
    i: usize,
    id: &str,
    filters: &[(&str, QoS)],
    subjects: u64,
) -> v5::Client {
    let mut c = v5::Client::connect(cluster.port(i), id, |_| {}).await;
    for (f, q) in filters {
        c.client.subscribe(*f, *q).await.expect("subscribe");
        c.suback().await;
    }
    until_metric(
        cluster.admin(i),
        "switchboard_cluster_interest_subjects",
        |n| n >= subjects,
    )
    .await;
    c
}

fn body(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

fn topic(p: &Publish) -> String {
    String::from_utf8_lossy(&p.topic).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_across_nodes_at_every_qos_with_wildcards_and_no_duplicates() {
    let c = Cluster::start(BIN, "cl-pubsub", 3).await;
    // Node 0: overlapping filters (a/+ and a/# both match a/b) plus a parent-level match.
    let mut s = subscriber(
        &c,
        0,
        "s",
        &[
            ("a/+", QoS::ExactlyOnce),
            ("a/#", QoS::AtLeastOnce),
            ("x/y", QoS::AtMostOnce),
        ],
        4,
    )
    .await;
    let mut t = subscriber(&c, 1, "t", &[("a/b", QoS::ExactlyOnce)], 1).await;
    let p = v5::Client::connect(c.port(2), "p", |_| {}).await;
    for (i, q) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        p.client
            .publish("a/b", q, false, format!("m{i}"))
            .await
            .expect("publish");
    }
    p.client
        .publish("a", QoS::AtLeastOnce, false, "parent")
        .await
        .expect("publish");
    p.client
        .publish("x/y", QoS::ExactlyOnce, false, "xy")
        .await
        .expect("publish");
    p.client
        .publish("b/c", QoS::AtLeastOnce, false, "nobody")
        .await
        .expect("publish");

    let mut got = Vec::new();
    for _ in 0..5 {
        let m = s.next_publish().await;
        got.push((topic(&m), body(&m), m.qos));
    }
    // Each message once, at the highest QoS its overlapping subscriptions allow; one
    // topic's messages in order (MQTT orders per topic, not across topics).
    let ab: Vec<_> = got.iter().filter(|g| g.0 == "a/b").cloned().collect();
    assert_eq!(
        ab,
        [
            ("a/b".into(), "m0".into(), QoS::AtMostOnce),
            ("a/b".into(), "m1".into(), QoS::AtLeastOnce),
            ("a/b".into(), "m2".into(), QoS::ExactlyOnce),
        ]
    );
    assert!(
        got.contains(&("a".into(), "parent".into(), QoS::AtLeastOnce)),
        "{got:?}"
    );
    assert!(
        got.contains(&("x/y".into(), "xy".into(), QoS::AtMostOnce)),
        "{got:?}"
    );
    for (i, q) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let m = t.next_publish().await;
        assert_eq!(
            (topic(&m), body(&m), m.qos),
            ("a/b".into(), format!("m{i}"), q)
        );
    }
    // NATS delivered a/b's three messages to node 0 twice (a.* and a.>): once every copy
    // has been dropped there, a marker is the next thing the session gets.
    until_metric(c.admin(0), "switchboard_cluster_duplicates_total", |n| {
        n >= 3
    })
    .await;
    p.client
        .publish("x/y", QoS::AtLeastOnce, false, "end")
        .await
        .expect("publish");
    assert_eq!(body(&s.next_publish().await), "end");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_reach_every_node() {
    let c = Cluster::start(BIN, "cl-retained", 3).await;
    let p = v5::Client::connect(c.port(0), "p", |_| {}).await;
    p.client
        .publish("r/1", QoS::AtLeastOnce, true, "kept")
        .await
        .expect("publish");
    for i in 1..3 {
        until_metric(c.admin(i), "switchboard_retained_messages", |n| n == 1).await;
    }
    // A late subscriber on another node gets it from its own node's retained set.
    let mut s = v5::Client::connect(c.port(2), "late", |_| {}).await;
    s.client
        .subscribe("r/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let m = s.next_publish().await;
    assert_eq!(
        (topic(&m), body(&m), m.retain),
        ("r/1".into(), "kept".into(), true)
    );
    // Clearing it clears it everywhere.
    p.client
        .publish("r/1", QoS::AtLeastOnce, true, "")
        .await
        .expect("publish");
    for i in 1..3 {
        until_metric(c.admin(i), "switchboard_retained_messages", |n| n == 0).await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscriptions_are_balanced_across_nodes_one_copy_each() {
    let c = Cluster::start(BIN, "cl-shared", 3).await;
    let mut w0 = subscriber(&c, 0, "w0", &[("$share/g/jobs", QoS::AtLeastOnce)], 1).await;
    let mut w1 = subscriber(&c, 1, "w1", &[("$share/g/jobs", QoS::AtLeastOnce)], 1).await;
    // A plain subscriber sees every job once, next to the group.
    let mut all = subscriber(&c, 1, "all", &[("jobs", QoS::AtLeastOnce)], 2).await;
    let p = v5::Client::connect(c.port(2), "p", |_| {}).await;
    const N: usize = 40;
    for i in 0..N {
        p.client
            .publish("jobs", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .expect("publish");
    }
    for i in 0..N {
        assert_eq!(body(&all.next_publish().await), format!("{i}"));
    }
    // Every job reached exactly one worker; both nodes took some.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let (mut n0, mut n1) = (0, 0);
    while n0 + n1 < N {
        tokio::select! {
            m = w0.next_publish() => { n0 += 1; *seen.entry(body(&m)).or_default() += 1; }
            m = w1.next_publish() => { n1 += 1; *seen.entry(body(&m)).or_default() += 1; }
        }
    }
    assert_eq!(seen.len(), N);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    assert!(n0 > 0 && n1 > 0, "one node took everything: {n0}/{n1}");
    // A marker through the plain subscription; no worker got anything more.
    p.client
        .publish("jobs", QoS::AtLeastOnce, false, "end")
        .await
        .expect("publish");
    assert_eq!(body(&all.next_publish().await), "end");
    let extra = tokio::select! {
        m = w0.next_publish() => body(&m),
        m = w1.next_publish() => body(&m),
    };
    assert_eq!(extra, "end", "only the marker may follow");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_takeover_across_nodes_and_wills_from_dying_clients() {
    let c = Cluster::start(BIN, "cl-takeover", 3).await;
    let mut watcher = subscriber(&c, 2, "watcher", &[("wills/#", QoS::AtLeastOnce)], 2).await;
    let (mut first, ack) =
        RawClient::connect(c.addr(0), connect_packet(Version::V5, "dev-1")).await;
    assert!(matches!(ack, RawPacket::ConnAck(_)), "{ack:?}");
    // The same client id on node 1: node 0 closes the first connection with 0x8E.
    let second = v5::Client::connect(c.port(1), "dev-1", |_| {}).await;
    let seen = first.expect_closed().await;
    assert!(
        seen.iter().any(
            |p| matches!(p, RawPacket::Disconnect(d) if d.code == ReasonCode::SessionTakenOver)
        ),
        "{seen:?}"
    );
    assert!(
        metric(c.admin(1), "switchboard_cluster_session_claims_total")
            .await
            .is_some_and(|n| n == 1)
    );
    assert!(
        metric(c.admin(0), "switchboard_cluster_takeovers_done_total")
            .await
            .is_some_and(|n| n == 1)
    );
    // A client on node 0 dies without DISCONNECT: its will reaches node 2.
    let dying = v5::Client::connect(c.port(0), "dying", |o| {
        o.set_last_will(LastWill::new(
            "wills/dying",
            "gone",
            QoS::AtLeastOnce,
            false,
            None,
        ));
    })
    .await;
    dying.kill();
    let m = watcher.next_publish().await;
    assert_eq!((topic(&m), body(&m)), ("wills/dying".into(), "gone".into()));
    drop(second);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reconnect_and_announce_interest_again_after_a_nats_restart() {
    let mut c = Cluster::start(BIN, "cl-restart", 2).await;
    let mut s = subscriber(&c, 0, "s", &[("t/#", QoS::AtLeastOnce)], 2).await;
    let p = v5::Client::connect(c.port(1), "p", |_| {}).await;
    p.client
        .publish("t/1", QoS::AtLeastOnce, false, "before")
        .await
        .expect("publish");
    assert_eq!(body(&s.next_publish().await), "before");
    for i in 0..2 {
        until_metric(
            c.admin(i),
            "switchboard_cluster_interest_announced_connection",
            |n| n == 1,
        )
        .await;
    }
    c.nats.restart().await;
    // Both nodes came back and NATS confirmed their subscriptions on the new connection.
    for i in 0..2 {
        until_metric(
            c.admin(i),
            "switchboard_cluster_interest_announced_connection",
            |n| n >= 2,
        )
        .await;
    }
    p.client
        .publish("t/2", QoS::AtLeastOnce, false, "after")
        .await
        .expect("publish");
    let m = tokio::time::timeout(WAIT, s.next_publish())
        .await
        .expect("delivered after the restart");
    assert_eq!(body(&m), "after");
    c.stop().await;
}
