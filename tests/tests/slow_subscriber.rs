//! A subscriber that stops reading while a publisher floods: the broker's memory stays
//! bounded by the session queue limits, and a healthy subscriber keeps receiving everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use switchboard_broker::metrics::Metrics;
use switchboard_proto::*;
use switchboard_tests::{RawClient, TestBroker, connect_packet};

const MESSAGES: u32 = 25_000;
const PAYLOAD: usize = 4096;
const BATCH: u32 = 50;

/// Resident set size of this process, from /proc.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("procfs");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm rss field");
    pages * 4096
}

async fn subscriber(b: &TestBroker, id: &str, qos: QoS) -> RawClient {
    let (mut c, _) = RawClient::connect(b.addr, connect_packet(Version::V5, id)).await;
    c.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(
            "flood/#".into(),
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
        )],
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_subscriber_costs_bounded_memory_and_does_not_stall_others() {
    let b = TestBroker::start_with(|c| {
        c.limits.max_queued_messages = 1000;
    })
    .await;
    // Subscribes, then never reads again.
    let _stuck = subscriber(&b, "stuck", QoS::AtMostOnce).await;
    let mut healthy = subscriber(&b, "healthy", QoS::AtLeastOnce).await;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let reader = tokio::spawn(async move {
        while counter.load(Ordering::Relaxed) < u64::from(MESSAGES) {
            match healthy.recv().await {
                Some(Packet::Publish(p)) => {
                    healthy
                        .send(&Packet::PubAck(PubResponse::new(p.pkid)))
                        .await;
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Some(_) => {}
                None => panic!("healthy subscriber disconnected"),
            }
        }
    });

    let baseline = rss_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let p2 = peak.clone();
    let sampler = tokio::spawn(async move {
        loop {
            p2.fetch_max(rss_bytes(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let (mut publisher, _) =
        RawClient::connect(b.addr, connect_packet(Version::V5, "flooder")).await;
    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    let mut pkid = 0u16;
    for _ in 0..MESSAGES / BATCH {
        for _ in 0..BATCH {
            pkid = pkid % 60_000 + 1;
            publisher
                .send(&Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: "flood/x".into(),
                    pkid,
                    properties: Properties::default(),
                    payload: payload.clone(),
                }))
                .await;
        }
        let mut acks = 0;
        while acks < BATCH {
            match publisher.recv().await {
                Some(Packet::PubAck(a)) => {
                    assert_eq!(a.code, ReasonCode::Success, "healthy subscriber keeps up");
                    acks += 1;
                }
                Some(_) => {}
                None => panic!("publisher disconnected"),
            }
        }
    }
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("healthy subscriber received every message in time")
        .expect("reader task");
    sampler.abort();

    let flooded = u64::from(MESSAGES) * PAYLOAD as u64;
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    assert_eq!(received.load(Ordering::Relaxed), u64::from(MESSAGES));
    let dropped = Metrics::get(&b.handle.state().metrics.dropped_queue_full_qos0);
    assert!(
        dropped > 0,
        "the stuck subscriber's queue must have hit its bound"
    );
    assert!(
        growth < 48 * 1024 * 1024,
        "RSS grew by {} MiB while {} MiB were flooded past a stuck subscriber",
        growth >> 20,
        flooded >> 20
    );
}

/// Large messages to a subscriber that reads slowly: each time its socket drains, the
/// broker encodes only up to the output high-water mark (256 KiB, or one message), not a
/// whole batch of queued large messages on top of a queue that refills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_with_large_messages_costs_its_queue_bound_and_little_more() {
    const QUEUE: usize = 8 * 1024 * 1024;
    const BIG: usize = 512 * 1024;
    let b = TestBroker::start_with(|c| {
        c.limits.max_queued_bytes = QUEUE;
    })
    .await;
    let mut slow = subscriber(&b, "slow-big", QoS::AtMostOnce).await;
    let reader = tokio::spawn(async move {
        // About 25 MB/s: slower than the publisher.
        while slow
            .recv_within(Duration::from_secs(2))
            .await
            .is_ok_and(|p| p.is_some())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let (mut publisher, _) =
        RawClient::connect(b.addr, connect_packet(Version::V5, "big-flooder")).await;
    let payload = Bytes::from(vec![b'x'; BIG]);
    for i in 0..300u16 {
        publisher
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "flood/big".into(),
                pkid: i + 1,
                properties: Properties::default(),
                payload: payload.clone(),
            }))
            .await;
        match publisher.recv().await {
            Some(Packet::PubAck(_)) => {}
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    reader.abort();
    let dropped = Metrics::get(&b.handle.state().metrics.dropped_queue_full_qos0);
    assert!(
        dropped > 0,
        "the slow subscriber's queue must have hit its bound"
    );
    // Measured inside the broker: RSS of this process (clients included) is too noisy for
    // a bound this tight.
    let peak = Metrics::get(&b.handle.state().metrics.output_backlog_peak);
    eprintln!("output backlog peak {} KiB", peak >> 10);
    assert!(
        peak <= (256 * 1024 + BIG + 1024) as u64,
        "{} KiB encoded for one connection; bound: 256 KiB + one message",
        peak >> 10
    );
}
