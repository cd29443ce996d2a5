//! Cluster mode with the shared PostgreSQL store: a node stopped gracefully (SIGTERM)
//! lets go of its sessions in the registry and gives up its lease, so its clients resume
//! on another node at once, without waiting for the lease to expire. A real nats-server,
//! a private PostgreSQL and two `switchboard broker` processes, driven by raw MQTT 5
//! clients.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use switchboard_proto::*;
use switchboard_tests::cluster::{self, Cluster};
use switchboard_tests::nats::metric;
use switchboard_tests::{RawClient, persistent_connect};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn connack(p: &Packet) -> &ConnAck {
    match p {
        Packet::ConnAck(a) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// `id` connected to `addr` with a persistent session and subscribed to `filter` at QoS 1.
async fn persistent_subscriber(addr: SocketAddr, id: &str, filter: &str) -> RawClient {
    let (mut c, ack) = RawClient::connect(addr, persistent_connect(id, 3600)).await;
    assert_eq!(connack(&ack).code, ReasonCode::Success);
    c.send(&Packet::Subscribe(Subscribe {
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
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

/// Publishes QoS 1 messages `0..n` on `topic` through `addr` and waits for every PUBACK.
async fn publish_acked(addr: SocketAddr, topic: &str, n: u16) {
    let msgs = (0..n).map(|i| (topic.to_owned(), i.to_string())).collect();
    cluster::publish_acked(addr, "pub", msgs).await;
}

/// Resumes `id` on `addr`: the session must be there, with `n` queued messages.
async fn resume(addr: SocketAddr, id: &str, n: usize) -> RawClient {
    let (mut c, ack) = RawClient::connect(addr, persistent_connect(id, 3600)).await;
    let ack = connack(&ack);
    assert_eq!(ack.code, ReasonCode::Success, "{id}");
    assert!(ack.session_present, "{id}: the session came along");
    let mut got = BTreeSet::new();
    while got.len() < n {
        let m = c.next_publish().await;
        c.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
        got.insert(m.payload.clone());
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_nodes_sessions_so_clients_resume_elsewhere_without_waiting() {
    // A long lease: without the release, the claims below would wait for it (and count).
    let Some(mut c) = Cluster::start_durable(
        BIN,
        "cll-term",
        2,
        &[],
        &[("SWITCHBOARD__CLUSTER__LEASE_SECS", "60")],
    )
    .await
    else {
        return;
    };
    // Node 0: one persistent session parked with 5 queued messages, one connected.
    let mut parked = persistent_subscriber(c.addr(0), "parked", "lv/#").await;
    parked
        .send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    parked.expect_closed().await;
    let mut online = persistent_subscriber(c.addr(0), "online", "lv/#").await;
    publish_acked(c.addr(0), "lv/a", 5).await;
    for _ in 0..5 {
        let m = online.next_publish().await;
        online.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
    }
    let admin1 = c.admin(1).to_owned();

    let status = c.terminate(0).await;
    assert!(status.success(), "node 0 stopped cleanly: {status:?}");
    let closed = online.expect_closed().await;
    assert!(
        closed.iter().any(
            |p| matches!(p, Packet::Disconnect(d) if d.code == ReasonCode::ServerShuttingDown)
        ),
        "{closed:?}"
    );

    // Both resume on node 1 with their sessions; the parked one gets its queue.
    let p = resume(c.addr(1), "parked", 5).await;
    let o = resume(c.addr(1), "online", 0).await;
    let waited = metric(&admin1, "switchboard_cluster_registry_claims_waited_total").await;
    assert_eq!(
        waited,
        Some(0),
        "no claim waited for node 0 (released at shutdown, not left to its lease)"
    );
    let loaded = metric(
        &admin1,
        "switchboard_cluster_registry_sessions_loaded_total",
    )
    .await;
    assert_eq!(loaded, Some(2), "both sessions loaded from the store");
    // The PostgreSQL link's figures carry the node label, like the cluster's own.
    let page = switchboard_tests::http::request(
        admin1.parse().expect("admin address"),
        "GET",
        "/metrics",
        &[],
        b"",
    )
    .await;
    assert!(
        page.body
            .contains("switchboard_pg_link_up{node=\"node1\"} 1"),
        "{}",
        page.body
    );
    drop((p, o));
    c.stop().await;
}
