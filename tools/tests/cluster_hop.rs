//! Cluster mode: the acknowledged hop. QoS 1 messages to a persistent subscriber on
//! another node arrive although the NATS server restarts in the middle of the load: the
//! publishing node keeps each until the subscriber's node acknowledged it, and sends
//! again what was lost. The publisher's PUBACK waits for the subscriber's node, so kill -9
//! of the publishing node right after its PUBACKs loses nothing. A real nats-server and
//! two `switchboard broker` processes (each with its own redb store), raw MQTT 5 clients.

use std::collections::BTreeSet;

use switchboard_proto::*;
use switchboard_tests::cluster::{self, Cluster};
use switchboard_tests::nats::{metric, until_metric};
use switchboard_tests::{RawClient, WAIT, connect_packet, persistent_connect};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn number(p: &Publish) -> u32 {
    std::str::from_utf8(&p.payload)
        .ok()
        .and_then(|t| t.parse().ok())
        .expect("a numbered message")
}

/// A persistent session `id` on `addr` subscribed to `filter` at QoS 1.
async fn subscriber(addr: std::net::SocketAddr, id: &str, filter: &str) -> RawClient {
    let (mut s, ack) = RawClient::connect(addr, persistent_connect(id, 3600)).await;
    assert!(matches!(ack, Packet::ConnAck(_)), "{ack:?}");
    s.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(
            filter.into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
    }))
    .await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publishing_node_acknowledges_only_what_the_other_node_has_so_its_death_loses_nothing()
{
    let mut c = Cluster::start(BIN, "clh-kill", 2).await;
    let s = subscriber(c.addr(1), "sub", "load/#").await;
    until_metric(c.admin(1), "switchboard_cluster_interest_subjects", |n| {
        n >= 2
    })
    .await;
    until_metric(c.admin(0), "switchboard_cluster_peers_unknown", |n| n == 0).await;
    // NATS goes away: node 0 takes the publishes in, but node 1 cannot have them.
    c.nats.kill().await;
    let (mut p, _) = RawClient::connect(c.addr(0), connect_packet(Version::V5, "pub")).await;
    const N: u32 = 50;
    for i in 0..N {
        p.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: format!("load/{}", i % 4),
            pkid: i as u16 + 1,
            properties: Properties::default(),
            payload: bytes::Bytes::from(i.to_string()),
        }))
        .await;
    }
    // Node 0 has routed all of them (they wait for node 1), then dies.
    until_metric(c.admin(0), "switchboard_cluster_hop_pending", |n| {
        n >= u64::from(N)
    })
    .await;
    c.kill9(0).await;
    let acked: Vec<u16> = p
        .expect_closed()
        .await
        .into_iter()
        .filter_map(|p| match p {
            Packet::PubAck(a) => Some(a.pkid),
            _ => None,
        })
        .collect();
    assert!(
        acked.is_empty(),
        "node 0 acknowledged {} messages node 1 never had: {acked:?}",
        acked.len()
    );
    drop(s);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_under_qos1_load_loses_no_acknowledged_message_across_nodes() {
    let mut c = Cluster::start(BIN, "clh-restart", 2).await;
    // The subscriber: a persistent session on node 1 that acknowledges everything.
    let (mut s, ack) = RawClient::connect(c.addr(1), persistent_connect("sub", 3600)).await;
    assert!(matches!(ack, Packet::ConnAck(_)), "{ack:?}");
    s.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(
            "load/#".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
    }))
    .await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    until_metric(c.admin(1), "switchboard_cluster_interest_subjects", |n| {
        n >= 2
    })
    .await;
    until_metric(c.admin(0), "switchboard_cluster_peers_unknown", |n| n == 0).await;

    // The publisher on node 0: N QoS 1 messages, 20 in flight, each PUBACK awaited.
    const N: u32 = 600;
    let publisher = tokio::spawn({
        let addr = c.addr(0);
        async move {
            let msgs = (0..N)
                .map(|s| (format!("load/{}", s % 4), s.to_string()))
                .collect();
            cluster::publish_acked(addr, "pub", msgs).await;
        }
    });
    // Receive until a third arrived, restart NATS, then receive the rest.
    let mut got = BTreeSet::new();
    while got.len() < (N / 3) as usize {
        let m = s.next_publish().await;
        s.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
        got.insert(number(&m));
    }
    c.nats.restart().await;
    let all = tokio::time::timeout(3 * WAIT, async {
        while got.len() < N as usize {
            let m = s.next_publish().await;
            s.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
            got.insert(number(&m));
        }
    })
    .await;
    if all.is_err() {
        let mut f = Vec::new();
        for name in [
            "switchboard_cluster_hop_tracked_total",
            "switchboard_cluster_hop_resent_total",
            "switchboard_cluster_hop_acked_total",
            "switchboard_cluster_hop_pending",
            "switchboard_cluster_hop_gave_up_total",
            "switchboard_cluster_forward_dropped_total",
        ] {
            f.push(format!("{name} {:?}", metric(c.admin(0), name).await));
        }
        panic!(
            "{} of {N} arrived; missing {:?}; node 0: {f:#?}",
            got.len(),
            (0..N)
                .filter(|i| !got.contains(i))
                .take(20)
                .collect::<Vec<_>>(),
        );
    }
    tokio::time::timeout(3 * WAIT, publisher)
        .await
        .expect("publisher finished")
        .expect("publisher task");
    // Everything acknowledged in the end: nothing is left waiting on node 0.
    until_metric(c.admin(0), "switchboard_cluster_hop_pending", |n| n == 0).await;
    c.stop().await;
}

/// A QoS 1 publish whose only receiver is a shared-group member on another node is
/// acknowledged only once that node committed the member's copy: with NATS gone, node 0
/// holds every PUBACK back, so when node 0 dies (kill -9) the publisher still has them all
/// unacknowledged and sends them again through node 1, and the member gets every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_member_on_another_node_is_waited_for_so_the_publishing_nodes_death_loses_nothing()
{
    let mut c = Cluster::start(BIN, "clh-share", 2).await;
    let mut member = subscriber(c.addr(1), "member", "$share/workers/jobs/#").await;
    until_metric(c.admin(1), "switchboard_cluster_interest_subjects", |n| {
        n >= 2
    })
    .await;
    until_metric(c.admin(0), "switchboard_cluster_peers_unknown", |n| n == 0).await;
    until_metric(c.admin(0), "switchboard_cluster_remote_filters", |n| n >= 1).await;
    c.nats.kill().await;
    let (mut p, _) = RawClient::connect(c.addr(0), connect_packet(Version::V5, "pub")).await;
    const N: u32 = 40;
    let publish = |i: u32, dup: bool| {
        Packet::Publish(Publish {
            dup,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: format!("jobs/{}", i % 4),
            pkid: i as u16 + 1,
            properties: Properties::default(),
            payload: bytes::Bytes::from(i.to_string()),
        })
    };
    for i in 0..N {
        p.send(&publish(i, false)).await;
    }
    // A PINGRESP answers after every PUBLISH was handled: no PUBACK may come before it.
    p.send(&Packet::PingReq).await;
    let mut early = Vec::new();
    loop {
        match p.recv().await {
            Some(Packet::PingResp) => break,
            Some(Packet::PubAck(a)) => early.push(a.pkid),
            Some(_) => {}
            None => panic!("node 0 closed the publisher's connection"),
        }
    }
    assert!(
        early.is_empty(),
        "node 0 acknowledged {} messages the shared member's node never had: {early:?}",
        early.len()
    );
    until_metric(c.admin(0), "switchboard_cluster_hop_pending", |n| {
        n >= u64::from(N)
    })
    .await;
    c.kill9(0).await;
    let acked: BTreeSet<u16> = p
        .expect_closed()
        .await
        .into_iter()
        .filter_map(|p| match p {
            Packet::PubAck(a) => Some(a.pkid),
            _ => None,
        })
        .collect();
    assert!(
        acked.is_empty(),
        "acknowledged before node 1 had them: {acked:?}"
    );
    // The publisher sends again what it has no PUBACK for, now through node 1.
    c.nats.restart().await;
    let (mut p, _) = RawClient::connect(c.addr(1), connect_packet(Version::V5, "pub")).await;
    for i in 0..N {
        p.send(&publish(i, true)).await;
    }
    let mut got = BTreeSet::new();
    let all = tokio::time::timeout(3 * WAIT, async {
        while got.len() < N as usize {
            let m = member.next_publish().await;
            member.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
            got.insert(number(&m));
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "the member got {} of {N}: missing {:?}",
        got.len(),
        (0..N).filter(|i| !got.contains(i)).collect::<Vec<_>>()
    );
    drop(p);
    c.stop().await;
}

/// With NATS up, a shared member on another node gets QoS 1 messages and the publisher's
/// PUBACKs come once that node acknowledged them: nothing is left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_to_a_shared_member_on_another_node_is_acknowledged_once_that_node_has_it() {
    let c = Cluster::start(BIN, "clh-share-up", 2).await;
    let mut member = subscriber(c.addr(1), "member", "$share/workers/jobs/#").await;
    until_metric(c.admin(1), "switchboard_cluster_interest_subjects", |n| {
        n >= 2
    })
    .await;
    until_metric(c.admin(0), "switchboard_cluster_peers_unknown", |n| n == 0).await;
    until_metric(c.admin(0), "switchboard_cluster_remote_filters", |n| n >= 1).await;
    const N: u32 = 100;
    let publisher = tokio::spawn({
        let addr = c.addr(0);
        async move {
            let msgs = (0..N)
                .map(|s| (format!("jobs/{}", s % 4), s.to_string()))
                .collect();
            cluster::publish_acked(addr, "pub", msgs).await;
        }
    });
    let mut got = BTreeSet::new();
    tokio::time::timeout(3 * WAIT, async {
        while got.len() < N as usize {
            let m = member.next_publish().await;
            member.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
            got.insert(number(&m));
        }
    })
    .await
    .expect("the member got every message");
    tokio::time::timeout(3 * WAIT, publisher)
        .await
        .expect("publisher finished")
        .expect("publisher task");
    until_metric(c.admin(0), "switchboard_cluster_hop_acked_total", |n| {
        n >= u64::from(N)
    })
    .await;
    until_metric(c.admin(0), "switchboard_cluster_hop_pending", |n| n == 0).await;
    c.stop().await;
}

/// A shared group with a member on node 1 and one on node 2; while NATS is down node 0
/// takes QoS 1 publishes for the group and the member on node 1 leaves. Once NATS is back
/// every message reaches the member on node 2 (a copy NATS gives to node 1, which has no
/// member left, is not acknowledged and goes to the group again) and every PUBACK comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_member_left_during_an_outage_still_gets_every_acknowledged_message() {
    let mut c = Cluster::start(BIN, "clh-share-left", 3).await;
    let (mut leaving, ack) =
        RawClient::connect(c.addr(1), connect_packet(Version::V5, "leaving")).await;
    assert!(matches!(ack, Packet::ConnAck(_)), "{ack:?}");
    leaving
        .send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            properties: Properties::default(),
            filters: vec![(
                "$share/workers/jobs/#".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            )],
        }))
        .await;
    assert!(matches!(leaving.recv().await, Some(Packet::SubAck(_))));
    let mut stays = subscriber(c.addr(2), "stays", "$share/workers/jobs/#").await;
    for i in [1, 2] {
        until_metric(c.admin(i), "switchboard_cluster_interest_subjects", |n| {
            n >= 2
        })
        .await;
    }
    until_metric(c.admin(0), "switchboard_cluster_peers_unknown", |n| n == 0).await;
    until_metric(c.admin(0), "switchboard_cluster_remote_filters", |n| n >= 1).await;
    c.nats.kill().await;
    let (mut p, _) = RawClient::connect(c.addr(0), connect_packet(Version::V5, "pub")).await;
    const N: u32 = 40;
    for i in 0..N {
        p.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: format!("jobs/{}", i % 4),
            pkid: i as u16 + 1,
            properties: Properties::default(),
            payload: bytes::Bytes::from(i.to_string()),
        }))
        .await;
    }
    until_metric(c.admin(0), "switchboard_cluster_hop_pending", |n| {
        n >= u64::from(N)
    })
    .await;
    leaving
        .send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    drop(leaving);
    c.nats.restart().await;
    let (mut got, mut acked) = (BTreeSet::new(), BTreeSet::new());
    let all = tokio::time::timeout(3 * WAIT, async {
        while got.len() < N as usize || acked.len() < N as usize {
            tokio::select! {
                m = stays.next_publish(), if got.len() < N as usize => {
                    stays.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
                    got.insert(number(&m));
                }
                a = p.recv() => match a {
                    Some(Packet::PubAck(a)) => {
                        assert_eq!(a.code, ReasonCode::Success);
                        acked.insert(a.pkid);
                    }
                    Some(_) => {}
                    None => panic!("node 0 closed the publisher"),
                },
            }
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "member on node 2 got {} of {N} (missing {:?}), {} PUBACKs",
        got.len(),
        (0..N).filter(|i| !got.contains(i)).collect::<Vec<_>>(),
        acked.len()
    );
    until_metric(c.admin(0), "switchboard_cluster_hop_pending", |n| n == 0).await;
    c.stop().await;
}
