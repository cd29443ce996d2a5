//! Cross-connection order (issue 11, item 12): once SUBACK has been received, every later
//! PUBLISH from any connection reaches the subscription. Repeated 1,000 times, zero misses.

use bytes::Bytes;
use switchboard_proto::*;
use switchboard_tests::{RawClient, TestBroker, connect_packet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_subscribe_is_effective_for_every_later_publish_1000_times() {
    let b = TestBroker::start().await;
    let (mut sub, _) = RawClient::connect(b.addr, connect_packet(Version::V5, "order-sub")).await;
    let (mut publ, _) = RawClient::connect(b.addr, connect_packet(Version::V5, "order-pub")).await;
    let mut misses = Vec::new();
    for i in 0..1000u16 {
        let topic = format!("order/{i}");
        let pkid = i % 60_000 + 1;
        sub.send(&Packet::Subscribe(Subscribe {
            pkid,
            properties: Properties::default(),
            filters: vec![(
                topic.clone(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            )],
        }))
        .await;
        assert!(matches!(sub.recv().await, Some(Packet::SubAck(a)) if a.pkid == pkid));
        // Right after SUBACK, from another connection.
        publ.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.clone(),
            pkid,
            properties: Properties::default(),
            payload: Bytes::from_static(b"after suback"),
        }))
        .await;
        match publ.recv().await {
            Some(Packet::PubAck(a)) if a.code == ReasonCode::Success => {}
            Some(Packet::PubAck(a)) => misses.push((i, a.code)),
            other => panic!("expected PUBACK, got {other:?}"),
        }
        let got = sub.next_publish().await;
        assert_eq!(got.topic, topic);
        sub.send(&Packet::PubAck(PubResponse::new(got.pkid))).await;
        sub.send(&Packet::Unsubscribe(Unsubscribe {
            pkid,
            properties: Properties::default(),
            filters: vec![topic],
        }))
        .await;
        assert!(matches!(sub.recv().await, Some(Packet::UnsubAck(_))));
    }
    assert!(
        misses.is_empty(),
        "publishes that missed an acknowledged subscription: {misses:?}"
    );
    b.handle.shutdown().await;
}
