//! Shared subscriptions across nodes with redelivery: a real nats-server and three
//! `switchboard broker` processes. A member that took QoS 1 messages and goes away
//! without acknowledging them (its connection drops) has them handed to the group's member
//! on another node: every message reaches the remaining member. With the shared
//! PostgreSQL store, the same holds when the member's whole node is killed (kill -9): the
//! survivor that adopts its session offers them.

use std::collections::BTreeSet;

use switchboard_proto::{
    Packet, Properties, QoS as RawQoS, Subscribe, SubscriptionOptions, Version,
};
use switchboard_tests::cluster::{self, Cluster};
use switchboard_tests::nats::{metric, until_metric};
use switchboard_tests::rumqttc::v5::mqttbytes::QoS;
use switchboard_tests::{RawClient, WAIT, connect_packet, v5};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Jobs published per test.
const N: usize = 60;

/// The lazy member: a raw client on node 1 that never acknowledges, subscribed to
/// `filters` (the shared group's first), once node 1 confirmed `subjects` subjects.
async fn lazy_member(
    c: &Cluster,
    connect: switchboard_proto::Connect,
    filters: &[&str],
    subjects: u64,
) -> RawClient {
    let (mut lazy, ack) = RawClient::connect(c.addr(1), connect).await;
    assert!(matches!(ack, Packet::ConnAck(_)), "{ack:?}");
    lazy.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: filters
            .iter()
            .map(|f| {
                (
                    (*f).into(),
                    SubscriptionOptions {
                        qos: RawQoS::AtLeastOnce,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    }))
    .await;
    assert!(matches!(lazy.recv().await, Some(Packet::SubAck(_))));
    until_metric(c.admin(1), "switchboard_cluster_interest_subjects", |n| {
        n >= subjects
    })
    .await;
    lazy
}

/// The good member (node 2) acknowledges everything (rumqttc).
async fn good_member(c: &Cluster) -> v5::Client {
    let mut good = v5::Client::connect(c.port(2), "good", |_| {}).await;
    good.client
        .subscribe("$share/g/jobs", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    good.suback().await;
    until_metric(c.admin(2), "switchboard_cluster_interest_subjects", |n| {
        n >= 1
    })
    .await;
    good
}

/// Publishes the `N` jobs on node 0; NATS spreads them over both members' nodes: collects
/// until both together saw all, and returns (good's, lazy's).
async fn spread_jobs(
    c: &Cluster,
    good: &mut v5::Client,
    lazy: &mut RawClient,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let p = v5::Client::connect(c.port(0), "p", |_| {}).await;
    for i in 0..N {
        p.client
            .publish("jobs", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .expect("publish");
    }
    let mut at_good = BTreeSet::new();
    let mut at_lazy = BTreeSet::new();
    while at_good.len() + at_lazy.len() < N {
        tokio::select! {
            m = good.next_publish() => {
                at_good.insert(String::from_utf8_lossy(&m.payload).into_owned());
            }
            m = lazy.next_publish() => {
                at_lazy.insert(String::from_utf8_lossy(&m.payload).into_owned());
            }
        }
    }
    (at_good, at_lazy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_members_unacknowledged_messages_go_to_a_member_on_another_node() {
    let c = Cluster::start(BIN, "cl-share-redeliver", 3).await;
    let mut lazy = lazy_member(
        &c,
        connect_packet(Version::V5, "lazy"),
        &["$share/g/jobs"],
        1,
    )
    .await;
    let mut good = good_member(&c).await;
    let (at_good, at_lazy) = spread_jobs(&c, &mut good, &mut lazy).await;
    assert!(
        !at_lazy.is_empty() && !at_good.is_empty(),
        "NATS should spread {N} jobs over two nodes: lazy {}, good {}",
        at_lazy.len(),
        at_good.len()
    );
    // The lazy member's connection drops with every job it took unacknowledged.
    drop(lazy);
    let mut redelivered = BTreeSet::new();
    let done = tokio::time::timeout(WAIT / 2, async {
        while !at_lazy.is_subset(&redelivered) {
            let m = good.next_publish().await;
            redelivered.insert(String::from_utf8_lossy(&m.payload).into_owned());
        }
    })
    .await;
    if done.is_err() {
        let mut figures = Vec::new();
        for i in 0..3 {
            for name in [
                "switchboard_cluster_shared_handed_over_total",
                "switchboard_cluster_shared_handover_failed_total",
                "switchboard_cluster_shared_taken_over_total",
                "switchboard_cluster_interest_subjects",
            ] {
                figures.push(format!(
                    "node{i} {name} {:?}",
                    metric(c.admin(i), name).await
                ));
            }
        }
        panic!(
            "jobs the lazy member took never reached the good one: missing {:?}; {figures:#?}",
            at_lazy.difference(&redelivered).collect::<Vec<_>>()
        );
    }
    // Every job reached the good member, and the hand-over shows on both nodes' metrics.
    let all: BTreeSet<String> = at_good.union(&redelivered).cloned().collect();
    assert_eq!(all.len(), N);
    // The hand-over shows on both nodes' counters: what node 1 handed over, node 2 took
    // (at least the jobs the lazy member had read; more may have been queued unread).
    let n = at_lazy.len() as u64;
    until_metric(
        c.admin(1),
        "switchboard_cluster_shared_handed_over_total",
        |x| x >= n,
    )
    .await;
    let handed = metric(c.admin(1), "switchboard_cluster_shared_handed_over_total").await;
    let taken = metric(c.admin(2), "switchboard_cluster_shared_taken_over_total").await;
    assert_eq!(taken, handed, "node 2 took what node 1 handed over");
    let failed = metric(
        c.admin(1),
        "switchboard_cluster_shared_handover_failed_total",
    )
    .await;
    assert_eq!(failed, Some(0));
    c.stop().await;
}

/// Publishes QoS 1 `body` on `topic` through a raw client on `addr` and waits for PUBACK.
async fn publish_acked(addr: std::net::SocketAddr, topic: &str, body: &str) {
    let msgs = vec![(topic.to_owned(), body.to_owned())];
    cluster::publish_acked(addr, "marker", msgs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unacknowledged_messages_of_a_member_whose_node_dies_go_to_another_member() {
    let Some(mut c) = Cluster::start_durable(BIN, "cl-share-node-dies", 3, &[], &[]).await else {
        return;
    };
    // The lazy member (node 1, persistent session) never acknowledges; it also has a direct
    // subscription, used below to know its node's store has committed everything.
    let mut lazy = lazy_member(
        &c,
        switchboard_tests::persistent_connect("lazy", 3600),
        &["$share/g/jobs", "mark/lazy"],
        2,
    )
    .await;
    let mut good = good_member(&c).await;
    let (at_good, at_lazy) = spread_jobs(&c, &mut good, &mut lazy).await;
    assert!(
        !at_lazy.is_empty(),
        "NATS should give node 1 some of {N} jobs"
    );
    // Node 1 commits in order: once a publish there to the lazy member's direct topic is
    // acknowledged, the jobs queued for it (and their "sent" marks) are in PostgreSQL.
    publish_acked(c.addr(1), "mark/lazy", "mark").await;
    assert_eq!(lazy.next_publish().await.payload, "mark");

    // Node 1 dies with the lazy member's connection; a survivor adopts its session once
    // its lease expires and offers the jobs it held to the good member.
    c.kill9(1).await;
    drop(lazy);
    let mut redelivered = BTreeSet::new();
    let done = tokio::time::timeout(3 * WAIT, async {
        while !at_lazy.is_subset(&redelivered) {
            let m = good.next_publish().await;
            redelivered.insert(String::from_utf8_lossy(&m.payload).into_owned());
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "jobs held by the dead node's member never reached the good one: missing {:?}",
        at_lazy.difference(&redelivered).collect::<Vec<_>>()
    );
    let all: BTreeSet<String> = at_good.union(&redelivered).cloned().collect();
    assert_eq!(all.len(), N, "every job reached the good member");
    assert!(c.total("switchboard_cluster_sessions_adopted_total").await >= 1);
    c.stop().await;
}
