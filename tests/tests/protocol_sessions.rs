//! Byte-exact protocol checks of sessions with a raw client: takeover, wills and their
//! delay, session and message expiry, QoS 2 exactly once, receive maximum, resend on resume,
//! queue limits, shutdown, request/response and retain handling.

use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::*;
use switchboard_tests::raw::*;
use switchboard_tests::{RawClient, TestBroker, connect_packet};

#[tokio::test]
async fn session_takeover_disconnects_old_connection_with_0x8e() {
    let b = TestBroker::start().await;
    let mut first = connected(&b, Version::V5, "same-id").await;
    let _second = connected(&b, Version::V5, "same-id").await;
    assert_eq!(
        disconnect_code(&first.expect_closed().await),
        Some(ReasonCode::SessionTakenOver)
    );
}

#[tokio::test]
async fn message_expiry_counts_down_and_expired_messages_are_not_delivered() {
    let b = TestBroker::start().await;
    let persistent = |id: &str| Connect {
        clean_start: false,
        properties: Properties {
            session_expiry_interval: Some(60),
            ..Properties::default()
        },
        ..connect_packet(Version::V5, id)
    };
    let mut s = connected_with(&b, persistent("exp-sub")).await;
    s.send(&subscribe(1, "exp/#", qos_opts(QoS::AtLeastOnce), None))
        .await;
    s.recv().await;
    s.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    s.expect_closed().await;

    let mut p = connected(&b, Version::V5, "exp-pub").await;
    let with_expiry = |topic: &str, secs: u32, pkid| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.into(),
            pkid,
            properties: Properties {
                message_expiry_interval: Some(secs),
                ..Properties::default()
            },
            payload: Bytes::from_static(b"x"),
        })
    };
    p.send(&with_expiry("exp/short", 1, 1)).await;
    p.send(&with_expiry("exp/long", 100, 2)).await;
    p.recv().await;
    p.recv().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut s = connected_with(&b, persistent("exp-sub")).await;
    let m = s.next_publish().await;
    assert_eq!(m.topic, "exp/long", "the expired message is not delivered");
    let left = m
        .properties
        .message_expiry_interval
        .expect("expiry forwarded");
    assert!(
        (90..100).contains(&left),
        "expiry decremented by the time queued: {left}"
    );
}

#[tokio::test]
async fn request_response_properties_pass_through() {
    let b = TestBroker::start().await;
    let mut responder = subscribed(&b, Version::V5, "responder", "svc/req", QoS::AtLeastOnce).await;
    let mut requester = subscribed(
        &b,
        Version::V5,
        "requester",
        "svc/resp/requester",
        QoS::AtLeastOnce,
    )
    .await;
    requester
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "svc/req".into(),
            pkid: 9,
            properties: Properties {
                response_topic: Some("svc/resp/requester".into()),
                correlation_data: Some(Bytes::from_static(b"corr-42")),
                content_type: Some("text/plain".into()),
                user_properties: vec![("trace".into(), "abc".into())],
                ..Properties::default()
            },
            payload: Bytes::from_static(b"ping"),
        }))
        .await;
    let req = responder.next_publish().await;
    assert_eq!(
        req.properties.response_topic.as_deref(),
        Some("svc/resp/requester")
    );
    assert_eq!(
        req.properties.correlation_data.as_deref(),
        Some(&b"corr-42"[..])
    );
    assert_eq!(req.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        req.properties.user_properties,
        vec![("trace".to_owned(), "abc".to_owned())]
    );
    responder
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: req
                .properties
                .response_topic
                .clone()
                .expect("response topic"),
            pkid: 0,
            properties: Properties {
                correlation_data: req.properties.correlation_data.clone(),
                ..Properties::default()
            },
            payload: Bytes::from_static(b"pong"),
        }))
        .await;
    let resp = requester.next_publish().await;
    assert_eq!(&resp.payload[..], b"pong");
    assert_eq!(
        resp.properties.correlation_data.as_deref(),
        Some(&b"corr-42"[..])
    );
}

#[tokio::test]
async fn retain_handling_options() {
    let b = TestBroker::start().await;
    let mut p = connected(&b, Version::V5, "p").await;
    p.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "rh/a".into(),
        pkid: 1,
        properties: Properties::default(),
        payload: Bytes::from_static(b"r"),
    }))
    .await;
    p.recv().await;
    let opts = |rh| SubscriptionOptions {
        qos: QoS::AtMostOnce,
        retain_handling: rh,
        ..Default::default()
    };
    let mut s = connected(&b, Version::V5, "s").await;
    s.send(&subscribe(1, "rh/#", opts(RetainHandling::DoNotSend), None))
        .await;
    s.recv().await;
    assert!(
        s.recv_within(Duration::from_millis(300)).await.is_err(),
        "2: never send retained"
    );
    s.send(&subscribe(2, "rh/+", opts(RetainHandling::SendIfNew), None))
        .await;
    s.recv().await;
    assert!(
        s.next_publish().await.retain,
        "1: new subscription gets retained"
    );
    s.send(&subscribe(3, "rh/+", opts(RetainHandling::SendIfNew), None))
        .await;
    s.recv().await;
    assert!(
        s.recv_within(Duration::from_millis(300)).await.is_err(),
        "1: existing subscription does not"
    );
    s.send(&subscribe(
        4,
        "rh/+",
        opts(RetainHandling::SendAtSubscribe),
        None,
    ))
    .await;
    s.recv().await;
    assert!(s.next_publish().await.retain, "0: always");
}

#[tokio::test]
async fn will_delay_cancelled_by_reconnect_and_sent_after_delay() {
    let b = TestBroker::start().await;
    let mut watcher = subscribed(&b, Version::V5, "watcher", "wd/#", QoS::AtMostOnce).await;
    let with_will = |id: &str, topic: &str, delay| Connect {
        clean_start: false,
        properties: Properties {
            session_expiry_interval: Some(30),
            ..Properties::default()
        },
        will: Some(Will {
            topic: topic.into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties {
                will_delay_interval: Some(delay),
                ..Properties::default()
            },
        }),
        ..connect_packet(Version::V5, id)
    };
    // Dropped without DISCONNECT, back within the delay: no will.
    let c = connected_with(&b, with_will("phone", "wd/phone", 3)).await;
    drop(c);
    b.until_offline("phone").await;
    let _back = connected_with(&b, with_will("phone", "wd/phone", 3)).await;
    // Dropped and not back: will after 1 s.
    let c = connected_with(&b, with_will("sensor", "wd/sensor", 1)).await;
    drop(c);
    let m = watcher.next_publish().await;
    assert_eq!(
        m.topic, "wd/sensor",
        "only the client that did not come back has its will sent"
    );
    assert!(
        watcher
            .recv_within(Duration::from_millis(3500))
            .await
            .is_err(),
        "the cancelled will never fires"
    );
}

#[tokio::test]
async fn session_expires_after_its_interval() {
    let b = TestBroker::start().await;
    let c = |clean| Connect {
        clean_start: clean,
        properties: Properties {
            session_expiry_interval: Some(1),
            ..Properties::default()
        },
        ..connect_packet(Version::V5, "short-lived")
    };
    let mut s = connected_with(&b, c(true)).await;
    s.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    s.expect_closed().await;
    let (_, ack) = RawClient::connect(b.addr, c(false)).await;
    assert!(
        matches!(ack, Packet::ConnAck(a) if a.session_present),
        "resumed within expiry"
    );
    let mut s = connected_with(&b, c(false)).await; // takes over the connection above
    s.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    s.expect_closed().await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (_, ack) = RawClient::connect(b.addr, c(false)).await;
    assert!(
        matches!(ack, Packet::ConnAck(a) if !a.session_present),
        "gone after expiry"
    );
}

#[tokio::test]
async fn qos2_resent_publish_is_delivered_exactly_once() {
    let b = TestBroker::start().await;
    let mut s = subscribed(&b, Version::V5, "s", "q2/#", QoS::ExactlyOnce).await;
    let mut p = connected(&b, Version::V5, "p").await;
    p.send(&publish("q2/x", QoS::ExactlyOnce, 77, b"one")).await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(r)) if r.pkid == 77));
    let Packet::Publish(mut again) = publish("q2/x", QoS::ExactlyOnce, 77, b"one") else {
        unreachable!()
    };
    again.dup = true;
    p.send(&Packet::Publish(again)).await;
    assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
    p.send(&Packet::PubRel(PubResponse::new(77))).await;
    assert!(matches!(p.recv().await, Some(Packet::PubComp(_))));
    let m = s.next_publish().await;
    s.send(&Packet::PubRec(PubResponse::new(m.pkid))).await;
    assert!(matches!(s.recv().await, Some(Packet::PubRel(_))));
    s.send(&Packet::PubComp(PubResponse::new(m.pkid))).await;
    assert!(
        s.recv_within(Duration::from_millis(300)).await.is_err(),
        "no second copy"
    );
}

#[tokio::test]
async fn receive_maximum_of_the_client_limits_unacknowledged_deliveries() {
    let b = TestBroker::start().await;
    let mut s = connected_with(
        &b,
        Connect {
            properties: Properties {
                receive_maximum: Some(2),
                ..Properties::default()
            },
            ..connect_packet(Version::V5, "slow-acker")
        },
    )
    .await;
    s.send(&subscribe(1, "rm/#", qos_opts(QoS::AtLeastOnce), None))
        .await;
    s.recv().await;
    let mut p = connected(&b, Version::V5, "p").await;
    for i in 1..=5 {
        p.send(&publish("rm/x", QoS::AtLeastOnce, i, b"m")).await;
    }
    let a = s.next_publish().await;
    let _b = s.next_publish().await;
    assert!(
        s.recv_within(Duration::from_millis(400)).await.is_err(),
        "window of 2 is full"
    );
    s.send(&Packet::PubAck(PubResponse::new(a.pkid))).await;
    s.next_publish().await;
}

#[tokio::test]
async fn unacknowledged_qos1_resent_with_dup_on_resume() {
    let b = TestBroker::start().await;
    let persistent = Connect {
        clean_start: false,
        properties: Properties {
            session_expiry_interval: Some(60),
            ..Properties::default()
        },
        ..connect_packet(Version::V5, "resumer")
    };
    let mut s = connected_with(&b, persistent.clone()).await;
    s.send(&subscribe(1, "dup/#", qos_opts(QoS::AtLeastOnce), None))
        .await;
    s.recv().await;
    let mut p = connected(&b, Version::V5, "p").await;
    p.send(&publish("dup/x", QoS::AtLeastOnce, 1, b"unacked"))
        .await;
    let first = s.next_publish().await;
    assert!(!first.dup);
    drop(s); // no PUBACK, no DISCONNECT
    b.until_offline("resumer").await;
    let (mut s, ack) = RawClient::connect(b.addr, persistent).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.session_present));
    let again = s.next_publish().await;
    assert!(again.dup, "[MQTT-4.4.0-1] resent with DUP");
    assert_eq!(again.pkid, first.pkid, "same packet identifier");
    assert_eq!(&again.payload[..], b"unacked");
}

#[tokio::test]
async fn shutdown_sends_0x8b_to_v5_clients() {
    // Never parked: the running loop's stop branch (`idle_park` covers parked ones).
    let b = TestBroker::start_with(|c| c.limits.park_after_ms = 0).await;
    let mut c = connected(&b, Version::V5, "bye").await;
    let h = b.handle.clone();
    let stop = tokio::spawn(async move { h.shutdown().await });
    assert_eq!(
        disconnect_code(&c.expect_closed().await),
        Some(ReasonCode::ServerShuttingDown)
    );
    tokio::time::timeout(Duration::from_secs(10), stop)
        .await
        .expect("shutdown completes")
        .expect("no panic");
}

#[tokio::test]
async fn full_session_queue_refuses_qos1_with_0x97() {
    let b = TestBroker::start_with(|c| c.limits.max_queued_messages = 3).await;
    let persistent = Connect {
        clean_start: false,
        properties: Properties {
            session_expiry_interval: Some(60),
            ..Properties::default()
        },
        ..connect_packet(Version::V5, "away")
    };
    let mut s = connected_with(&b, persistent).await;
    s.send(&subscribe(1, "quota/#", qos_opts(QoS::AtLeastOnce), None))
        .await;
    s.recv().await;
    s.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    s.expect_closed().await;
    let mut p = connected(&b, Version::V5, "p").await;
    let mut codes = Vec::new();
    for i in 1..=4 {
        p.send(&publish("quota/x", QoS::AtLeastOnce, i, b"m")).await;
        let Some(Packet::PubAck(a)) = p.recv().await else {
            panic!("no PUBACK")
        };
        codes.push(a.code);
    }
    assert_eq!(
        codes,
        [
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::QuotaExceeded
        ]
    );
}
