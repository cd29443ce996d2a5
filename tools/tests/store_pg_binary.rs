//! `switchboard broker` in cluster-store mode, configured only through the environment
//! (`SWITCHBOARD__CLUSTER__POSTGRES_URL`): killed with SIGKILL while a publisher sends
//! numbered QoS 1 messages to an offline persistent subscriber, restarted, and every
//! acknowledged message is then delivered; no data file is written, and `/metrics` shows
//! the PostgreSQL link.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::*;
use switchboard_tests::postgres::Postgres;
use switchboard_tests::process::BrokerProcess;
use switchboard_tests::{RawClient, TempDir, connect_packet, persistent_connect};

const WINDOW: usize = 16;

async fn start_broker(dir: &std::path::Path, url: &str) -> BrokerProcess {
    BrokerProcess::start(
        env!("CARGO_BIN_EXE_switchboard"),
        dir,
        &["--allow-anonymous"],
        &[
            ("SWITCHBOARD__CLUSTER__POSTGRES_URL", url),
            ("SWITCHBOARD__BROKER__ADMIN__LISTEN", "127.0.0.1:0"),
            ("SWITCHBOARD__BROKER__ADMIN__METRICS_PUBLIC", "true"),
        ],
    )
    .await
}

/// Publishes numbered QoS 1 messages (a window of [`WINDOW`]) until the connection dies;
/// returns the numbers acknowledged.
async fn publisher(addr: SocketAddr) -> Vec<u32> {
    let (mut c, _) = RawClient::connect(addr, connect_packet(Version::V5, "pub")).await;
    let mut acked = Vec::new();
    let mut inflight: HashMap<u16, u32> = HashMap::new();
    let mut next = 0u32;
    loop {
        while inflight.len() < WINDOW {
            let pkid = (next % 60_000) as u16 + 1;
            inflight.insert(pkid, next);
            c.send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "pg/crash".into(),
                pkid,
                properties: Properties::default(),
                payload: Bytes::from(next.to_string()),
            }))
            .await;
            next += 1;
        }
        match c.recv_within(Duration::from_secs(10)).await {
            Ok(Some(Packet::PubAck(a))) => {
                if let Some(n) = inflight.remove(&a.pkid)
                    && a.code == ReasonCode::Success
                {
                    acked.push(n);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(()) => return acked,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_binary_on_postgres_loses_no_acknowledged_message_to_kill_9() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("sb_binary");
    let dir = TempDir::new("pg-binary");
    let b = start_broker(dir.path(), &url).await;
    let (mut s, _) = RawClient::connect(b.addr, persistent_connect("sub", 3600)).await;
    s.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(
            "pg/#".into(),
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
    let admin: SocketAddr = b
        .admin
        .as_deref()
        .and_then(|a| a.parse().ok())
        .expect("admin address");
    let metrics = switchboard_tests::http::request(admin, "GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("switchboard_pg_link_up 1"),
        "{}",
        metrics.body
    );
    // Load, then SIGKILL once a few hundred messages are acknowledged.
    let load = tokio::spawn(publisher(b.addr));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = switchboard_tests::http::request(admin, "GET", "/metrics", &[], b"").await;
        let commits = m
            .body
            .lines()
            .find_map(|l| l.strip_prefix("switchboard_store_commits_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if commits >= 20 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::task::yield_now().await;
    }
    b.kill9().await;
    let acked: BTreeSet<u32> = load.await.expect("publisher").into_iter().collect();
    assert!(!acked.is_empty(), "some messages were acknowledged");
    assert!(
        !dir.path().join("switchboard.redb").exists(),
        "cluster mode writes no data file"
    );

    let b = start_broker(dir.path(), &url).await;
    let (mut s, ack) = RawClient::connect(b.addr, persistent_connect("sub", 3600)).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.session_present));
    let mut missing = acked.clone();
    while !missing.is_empty() {
        let m = s.next_publish().await;
        s.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
        let n: u32 = std::str::from_utf8(&m.payload)
            .ok()
            .and_then(|t| t.parse().ok())
            .expect("a numbered message");
        missing.remove(&n);
    }
    eprintln!("{} acknowledged before SIGKILL, all delivered", acked.len());
    b.kill9().await;
}
