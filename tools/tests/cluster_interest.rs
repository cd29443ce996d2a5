//! Cluster mode: each node knows which filters the other nodes want (interest
//! announcements on NATS), so a local publish that no other node wants never goes to
//! NATS. A real nats-server and three `switchboard broker` processes.
//!
//! What a user notices: a QoS 1 publish with no subscriber anywhere in the cluster gets
//! PUBACK 0x10 No matching subscribers (it used to be "handed to NATS", 0x00); a
//! subscription on another node makes it flow across (and 0x00) as soon as the
//! subscriber's node reports its interest confirmed; after the unsubscribe it stops
//! crossing again. The nodes' counters show it never reached NATS.

use bytes::Bytes;
use switchboard_proto::{Packet, Properties, Publish, QoS as RawQoS, ReasonCode, Version};
use switchboard_tests::cluster::Cluster;
use switchboard_tests::nats::{metric, until_metric};
use switchboard_tests::rumqttc::v5::mqttbytes::QoS;
use switchboard_tests::{RawClient, connect_packet, v5};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Publishes one QoS 1 message and returns the PUBACK's reason code.
async fn publish(p: &mut RawClient, topic: &str, pkid: u16) -> ReasonCode {
    p.send(&Packet::Publish(Publish {
        dup: false,
        qos: RawQoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        pkid,
        properties: Properties::default(),
        payload: Bytes::from(format!("m{pkid}")),
    }))
    .await;
    loop {
        match p.recv().await {
            Some(Packet::PubAck(a)) if a.pkid == pkid => return a.code,
            Some(_) => {}
            None => panic!("publisher disconnected"),
        }
    }
}

async fn forwarded(c: &Cluster, i: usize) -> u64 {
    metric(c.admin(i), "switchboard_cluster_forwarded_total")
        .await
        .expect("metric")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_no_other_node_wants_never_reaches_nats() {
    let c = Cluster::start(BIN, "cli-interest", 3).await;
    // Every node knows both others, completely, and its warm-up (forward everything) is over.
    for i in 0..3 {
        until_metric(c.admin(i), "switchboard_cluster_peers", |n| n == 2).await;
        until_metric(c.admin(i), "switchboard_cluster_peers_unknown", |n| n == 0).await;
        until_metric(c.admin(i), "switchboard_cluster_peers_warming", |n| n == 0).await;
    }
    let (mut p, _) = RawClient::connect(c.addr(0), connect_packet(Version::V5, "p")).await;
    let before = forwarded(&c, 0).await;
    assert_eq!(
        publish(&mut p, "lonely/x", 1).await,
        ReasonCode::NoMatchingSubscribers,
        "nobody anywhere wants it"
    );
    // A local subscriber only: delivered here, still not forwarded.
    let mut local = v5::Client::connect(c.port(0), "local", |_| {}).await;
    local
        .client
        .subscribe("lonely/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    local.suback().await;
    assert_eq!(publish(&mut p, "lonely/x", 2).await, ReasonCode::Success);
    assert_eq!(local.next_publish().await.payload, "m2");
    assert_eq!(forwarded(&c, 0).await, before, "nothing went to NATS");
    let skipped = metric(c.admin(0), "switchboard_cluster_not_forwarded_total").await;
    assert!(skipped.is_some_and(|n| n >= 2), "{skipped:?}");

    // A subscriber on node 1: once node 1 reports the interest confirmed (node 0 has
    // acknowledged its announcement), node 0 forwards.
    let mut remote = v5::Client::connect(c.port(1), "remote", |_| {}).await;
    remote
        .client
        .subscribe("lonely/+", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    remote.suback().await;
    until_metric(c.admin(1), "switchboard_cluster_interest_subjects", |n| {
        n >= 1
    })
    .await;
    assert_eq!(publish(&mut p, "lonely/x", 3).await, ReasonCode::Success);
    assert_eq!(remote.next_publish().await.payload, "m3");
    assert_eq!(local.next_publish().await.payload, "m3");
    assert_eq!(forwarded(&c, 0).await, before + 1, "sent to NATS once");
    // Other topics still stay home.
    assert_eq!(
        publish(&mut p, "elsewhere", 4).await,
        ReasonCode::NoMatchingSubscribers
    );
    assert_eq!(forwarded(&c, 0).await, before + 1);

    // Unsubscribed on node 1: node 0 learns it and stops forwarding.
    remote
        .client
        .unsubscribe("lonely/+")
        .await
        .expect("unsubscribe");
    until_metric(c.admin(0), "switchboard_cluster_remote_filters", |n| n == 0).await;
    local
        .client
        .unsubscribe("lonely/#")
        .await
        .expect("unsubscribe");
    until_metric(c.admin(0), "switchboard_cluster_interest_filters", |n| {
        n == 0
    })
    .await;
    assert_eq!(
        publish(&mut p, "lonely/x", 5).await,
        ReasonCode::NoMatchingSubscribers
    );
    assert_eq!(forwarded(&c, 0).await, before + 1);
    assert!(
        remote
            .quiet_for(std::time::Duration::from_millis(300))
            .await
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_group_on_one_node_still_gets_its_messages_through_nats() {
    let c = Cluster::start(BIN, "cli-shared", 2).await;
    for i in 0..2 {
        until_metric(c.admin(i), "switchboard_cluster_peers_warming", |n| n == 0).await;
        until_metric(c.admin(i), "switchboard_cluster_peers_unknown", |n| n == 0).await;
    }
    // The only member is on the publisher's own node: its messages go through the NATS
    // queue group all the same (one copy cluster-wide), so they must be forwarded.
    let mut m = v5::Client::connect(c.port(0), "member", |_| {}).await;
    m.client
        .subscribe("$share/g/jobs/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    m.suback().await;
    until_metric(c.admin(0), "switchboard_cluster_interest_subjects", |n| {
        n >= 1
    })
    .await;
    let (mut p, _) = RawClient::connect(c.addr(0), connect_packet(Version::V5, "p")).await;
    assert_eq!(publish(&mut p, "jobs/1", 1).await, ReasonCode::Success);
    assert_eq!(m.next_publish().await.payload, "m1");
    c.stop().await;
}
