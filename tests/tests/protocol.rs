//! Byte-exact protocol checks with a raw client: reason codes, limits, keep-alive,
//! takeover, aliases, subscription options and bad input. Test names carry the normative
//! statement they check where there is one. Sessions, expiry and flow control:
//! `protocol_sessions.rs`.

use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::*;
use switchboard_tests::raw::*;
use switchboard_tests::{RawClient, TestBroker, connect_packet};

#[tokio::test]
async fn anonymous_refused_unless_allowed() {
    let b = TestBroker::start_with(|c| c.allow_anonymous = false).await;
    let (mut c, ack) = RawClient::connect(b.addr, connect_packet(Version::V5, "anon")).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.code == ReasonCode::NotAuthorized));
    assert!(c.expect_closed().await.is_empty());
    let (_, ack) = RawClient::connect(b.addr, connect_packet(Version::V3_1_1, "anon3")).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.code.v3_connack_code() == 5));
}

#[tokio::test]
async fn password_file_checks_credentials() {
    let dir = std::env::temp_dir().join(format!("sb-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("passwd");
    let hash = switchboard_broker::auth::hash_password("right").expect("hash");
    std::fs::write(&file, format!("dev1:{hash}\n")).expect("write");
    let f = file.clone();
    let b = TestBroker::start_with(move |c| {
        c.allow_anonymous = false;
        c.password_file = Some(f);
    })
    .await;
    let with = |pw: &'static [u8], v| Connect {
        username: Some("dev1".into()),
        password: Some(Bytes::from_static(pw)),
        ..connect_packet(v, "dev1")
    };
    let (_, ack) = RawClient::connect(b.addr, with(b"wrong", Version::V5)).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.code == ReasonCode::BadUserNameOrPassword));
    let (_, ack) = RawClient::connect(b.addr, with(b"wrong", Version::V3_1_1)).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.code.v3_connack_code() == 4));
    connected_with(&b, with(b"right", Version::V5)).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn malformed_packet_disconnects_with_0x81_and_others_keep_working() {
    let b = TestBroker::start().await;
    let mut healthy = subscribed(&b, Version::V5, "healthy", "ok/#", QoS::AtMostOnce).await;
    let mut bad = connected(&b, Version::V5, "bad").await;
    // PUBLISH with QoS 3 [MQTT-3.3.1-4].
    bad.send_bytes(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01])
        .await;
    let seen = bad.expect_closed().await;
    assert_eq!(disconnect_code(&seen), Some(ReasonCode::MalformedPacket));

    let mut p = connected(&b, Version::V5, "p").await;
    p.send(&publish("ok/1", QoS::AtMostOnce, 0, b"still here"))
        .await;
    assert_eq!(&healthy.next_publish().await.payload[..], b"still here");
}

#[tokio::test]
async fn garbage_before_connect_is_dropped_without_harm() {
    let b = TestBroker::start().await;
    let mut g = RawClient::open(b.addr, Version::V5).await;
    g.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    g.expect_closed().await;
    connected(&b, Version::V5, "after-garbage").await;
}

#[tokio::test]
async fn mqtt_3_1_0_2_second_connect_is_a_protocol_error() {
    let b = TestBroker::start().await;
    let mut c = connected(&b, Version::V5, "twice").await;
    c.send(&Packet::Connect(Box::new(connect_packet(
        Version::V5,
        "twice",
    ))))
    .await;
    assert_eq!(
        disconnect_code(&c.expect_closed().await),
        Some(ReasonCode::ProtocolError)
    );
}

#[tokio::test]
async fn mqtt_3_1_2_22_keep_alive_enforced_at_one_and_a_half_times() {
    let b = TestBroker::start().await;
    let mut c = connected_with(
        &b,
        Connect {
            keep_alive: 1,
            ..connect_packet(Version::V5, "sleepy")
        },
    )
    .await;
    // Nothing sent: the broker must give up after 1.5 s.
    assert_eq!(
        disconnect_code(&c.expect_closed().await),
        Some(ReasonCode::KeepAliveTimeout)
    );
}

#[tokio::test]
async fn server_keep_alive_is_imposed_when_configured() {
    let b = TestBroker::start_with(|c| c.limits.max_keep_alive = 30).await;
    let (_, ack) = RawClient::connect(
        b.addr,
        Connect {
            keep_alive: 0,
            ..connect_packet(Version::V5, "ka0")
        },
    )
    .await;
    let Packet::ConnAck(a) = ack else {
        panic!("no CONNACK")
    };
    assert_eq!(a.properties.server_keep_alive, Some(30));
}

#[tokio::test]
async fn assigned_client_identifier_for_empty_id() {
    let b = TestBroker::start().await;
    let (_, ack) = RawClient::connect(b.addr, connect_packet(Version::V5, "")).await;
    let Packet::ConnAck(a) = ack else {
        panic!("no CONNACK")
    };
    assert!(
        a.properties
            .assigned_client_identifier
            .is_some_and(|id| !id.is_empty())
    );
    // [MQTT-3.1.3-8] 3.1.1: empty id needs clean session.
    let (_, ack) = RawClient::connect(
        b.addr,
        Connect {
            clean_start: false,
            ..connect_packet(Version::V3_1_1, "")
        },
    )
    .await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.code.v3_connack_code() == 2));
}

#[tokio::test]
async fn mqtt_3_2_2_15_oversized_incoming_packet_disconnects_with_0x95() {
    let b = TestBroker::start_with(|c| c.limits.max_packet_size = 1024).await;
    let mut c = connected(&b, Version::V5, "big").await;
    c.send(&publish("t", QoS::AtMostOnce, 0, &[b'x'; 2000]))
        .await;
    assert_eq!(
        disconnect_code(&c.expect_closed().await),
        Some(ReasonCode::PacketTooLarge)
    );
}

#[tokio::test]
async fn mqtt_3_1_2_25_messages_above_client_maximum_packet_size_are_not_sent() {
    let b = TestBroker::start().await;
    let mut small = connected_with(
        &b,
        Connect {
            properties: Properties {
                maximum_packet_size: Some(100),
                ..Properties::default()
            },
            ..connect_packet(Version::V5, "small")
        },
    )
    .await;
    small
        .send(&subscribe(1, "sz/#", qos_opts(QoS::AtLeastOnce), None))
        .await;
    small.recv().await;
    let mut p = connected(&b, Version::V5, "p").await;
    p.send(&publish("sz/big", QoS::AtLeastOnce, 1, &[b'x'; 500]))
        .await;
    p.send(&publish("sz/small", QoS::AtLeastOnce, 2, b"fits"))
        .await;
    let m = small.next_publish().await;
    assert_eq!(
        m.topic, "sz/small",
        "the oversized message is skipped, the next one arrives"
    );
}

#[tokio::test]
async fn topic_alias_from_client_is_resolved_for_subscribers() {
    let b = TestBroker::start().await;
    let mut s = subscribed(&b, Version::V3_1_1, "s", "alias/#", QoS::AtMostOnce).await;
    let mut p = connected(&b, Version::V5, "p").await;
    let with_alias = |topic: &str, payload: &'static [u8]| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            pkid: 0,
            properties: Properties {
                topic_alias: Some(1),
                ..Properties::default()
            },
            payload: Bytes::from_static(payload),
        })
    };
    p.send(&with_alias("alias/long/topic", b"1")).await;
    p.send(&with_alias("", b"2")).await;
    for want in [&b"1"[..], b"2"] {
        let m = s.next_publish().await;
        assert_eq!(m.topic, "alias/long/topic");
        assert_eq!(&m.payload[..], want);
    }
    // Alias above the maximum we announced: 0x94.
    let mut bad = connected(&b, Version::V5, "bad-alias").await;
    bad.send(&Packet::Publish(Publish {
        properties: Properties {
            topic_alias: Some(60_000),
            ..Properties::default()
        },
        ..match with_alias("x", b"") {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    }))
    .await;
    assert_eq!(
        disconnect_code(&bad.expect_closed().await),
        Some(ReasonCode::TopicAliasInvalid)
    );
}

#[tokio::test]
async fn mqtt_3_3_4_2_overlapping_subscriptions_one_copy_max_qos_all_ids() {
    let b = TestBroker::start().await;
    let mut s = connected(&b, Version::V5, "overlap").await;
    s.send(&subscribe(1, "ov/+", qos_opts(QoS::AtMostOnce), Some(1)))
        .await;
    s.recv().await;
    s.send(&subscribe(2, "ov/#", qos_opts(QoS::ExactlyOnce), Some(2)))
        .await;
    s.recv().await;
    let mut p = connected(&b, Version::V5, "p").await;
    p.send(&publish("ov/x", QoS::ExactlyOnce, 1, b"once")).await;
    let m = s.next_publish().await;
    assert_eq!(m.qos, QoS::ExactlyOnce);
    let mut ids = m.properties.subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, [1, 2]);
    assert!(
        s.recv_within(Duration::from_millis(300)).await.is_err(),
        "only one copy"
    );
}

#[tokio::test]
async fn mqtt_4_7_2_1_dollar_topics_not_matched_by_root_wildcards() {
    let b = TestBroker::start_with(|c| c.sys_interval = 1).await;
    let mut all = subscribed(&b, Version::V5, "all", "#", QoS::AtMostOnce).await;
    let mut sys = subscribed(
        &b,
        Version::V5,
        "sys",
        "$SYS/broker/uptime",
        QoS::AtMostOnce,
    )
    .await;
    let m = sys.next_publish().await;
    assert_eq!(m.topic, "$SYS/broker/uptime");
    assert!(
        all.recv_within(Duration::from_millis(1500)).await.is_err(),
        "'#' must not match $SYS"
    );
    // Clients may not publish into $SYS.
    let mut p = connected(&b, Version::V5, "p").await;
    p.send(&publish("$SYS/broker/uptime", QoS::AtLeastOnce, 1, b"fake"))
        .await;
    assert!(
        matches!(p.recv().await, Some(Packet::PubAck(a)) if a.code == ReasonCode::NotAuthorized)
    );
}

#[tokio::test]
async fn invalid_filters_get_0x8f_in_suback() {
    let b = TestBroker::start().await;
    let mut s = connected(&b, Version::V5, "s").await;
    s.send(&Packet::Subscribe(Subscribe {
        pkid: 5,
        properties: Properties::default(),
        filters: vec![
            ("a/#/b".into(), qos_opts(QoS::AtMostOnce)),
            ("ok/+".into(), qos_opts(QoS::AtLeastOnce)),
            ("$share/g".into(), qos_opts(QoS::AtMostOnce)),
        ],
    }))
    .await;
    let Some(Packet::SubAck(a)) = s.recv().await else {
        panic!("no SUBACK")
    };
    assert_eq!(a.pkid, 5);
    assert_eq!(
        a.codes,
        [
            ReasonCode::TopicFilterInvalid,
            ReasonCode::GrantedQos1,
            ReasonCode::TopicFilterInvalid
        ]
    );
}

#[tokio::test]
async fn mqtt_3_1_client_is_served() {
    let b = TestBroker::start().await;
    let mut s = subscribed(&b, Version::V3_1, "old", "legacy/#", QoS::AtLeastOnce).await;
    let mut p = connected(&b, Version::V5, "new").await;
    p.send(&publish("legacy/x", QoS::AtLeastOnce, 1, b"hi"))
        .await;
    assert_eq!(&s.next_publish().await.payload[..], b"hi");
}

#[tokio::test]
async fn subscription_and_topic_limits() {
    let b = TestBroker::start_with(|c| {
        c.limits.max_subscriptions = 2;
        c.limits.max_topic_levels = 3;
    })
    .await;
    let mut s = connected(&b, Version::V5, "greedy").await;
    s.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: ["a", "b", "c", "a"]
            .iter()
            .map(|f| (f.to_string(), qos_opts(QoS::AtMostOnce)))
            .chain([("x/y/z/w".to_string(), qos_opts(QoS::AtMostOnce))])
            .collect(),
    }))
    .await;
    let Some(Packet::SubAck(a)) = s.recv().await else {
        panic!("no SUBACK")
    };
    assert_eq!(
        a.codes,
        [
            ReasonCode::Success,
            ReasonCode::Success,
            ReasonCode::QuotaExceeded,
            // A filter repeated within one SUBSCRIBE counts every copy against the cap, so
            // that one packet cannot make the broker do unbounded work for free.
            ReasonCode::QuotaExceeded,
            ReasonCode::TopicFilterInvalid,
        ]
    );
    // Re-subscribing to an existing filter in a later SUBSCRIBE is not a new one.
    s.send(&Packet::Subscribe(Subscribe {
        pkid: 2,
        properties: Properties::default(),
        filters: vec![("a".to_string(), qos_opts(QoS::AtLeastOnce))],
    }))
    .await;
    let Some(Packet::SubAck(a)) = s.recv().await else {
        panic!("no SUBACK")
    };
    assert_eq!(a.codes, [ReasonCode::GrantedQos1]);
    s.send(&publish("p/q/r/s", QoS::AtLeastOnce, 3, b"deep"))
        .await;
    assert!(
        matches!(s.recv().await, Some(Packet::PubAck(a)) if a.code == ReasonCode::TopicNameInvalid)
    );
}

#[tokio::test]
async fn connections_over_the_limit_are_closed() {
    let b = TestBroker::start_with(|c| c.limits.max_connections = 2).await;
    let _a = connected(&b, Version::V5, "a").await;
    let _b = connected(&b, Version::V5, "b").await;
    let mut c = RawClient::open(b.addr, Version::V5).await;
    c.send(&Packet::Connect(Box::new(connect_packet(Version::V5, "c"))))
        .await;
    let seen = c.expect_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::ConnAck(a)] if a.code == ReasonCode::ServerBusy),
        "third connection gets CONNACK 0x89 Server busy at CONNECT: {seen:?}"
    );
    drop(_a);
    // The slot frees once the first connection's task ends.
    let mut tries = 0;
    loop {
        let (_c, ack) =
            RawClient::connect_or_closed(b.addr, connect_packet(Version::V5, "c")).await;
        if matches!(&ack, Some(Packet::ConnAck(a)) if a.code == ReasonCode::Success) {
            break;
        }
        tries += 1;
        assert!(tries < 50, "slot never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
