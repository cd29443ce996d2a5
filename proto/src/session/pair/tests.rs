//! Client and server sessions against each other through the [`Pair`].

use super::*;

fn sub(filter: &str, qos: QoS) -> Vec<(String, SubscriptionOptions)> {
    vec![(
        filter.to_owned(),
        SubscriptionOptions {
            qos,
            ..Default::default()
        },
    )]
}

#[test]
fn connect_reads_the_servers_limits_and_assigned_client_id() {
    let limits = SessionLimits {
        receive_maximum: 7,
        max_packet_size: 5000,
        topic_alias_maximum: 3,
        ..SessionLimits::default()
    };
    let mut pair = Pair::with_limits(config(Version::V5), limits);
    pair.accept.server_keep_alive = Some(30);
    pair.accept.properties.assigned_client_identifier = Some("auto-1".into());
    pair.connect();
    let events = pair.take_client_events();
    let [
        ClientEvent::Connected {
            session_present,
            assigned_client_id,
            limits,
        },
    ] = events.as_slice()
    else {
        panic!("expected Connected, got {events:?}");
    };
    assert!(!session_present);
    assert_eq!(assigned_client_id.as_deref(), Some("auto-1"));
    assert_eq!(limits.receive_maximum, 7);
    assert_eq!(limits.maximum_packet_size, 5000);
    assert_eq!(limits.topic_alias_maximum, 3);
    assert_eq!(limits.server_keep_alive, Some(30));
    assert_eq!(pair.client.keep_alive(), Duration::from_secs(30));
}

#[test]
fn connect_announces_our_maximum_packet_size_and_receive_maximum() {
    let cfg = ClientConfig {
        max_packet_size: 4096,
        receive_maximum: 5,
        ..config(Version::V5)
    };
    let mut c = ClientSession::new(cfg, Instant::now());
    c.connect(Instant::now());
    let sent = decode_all(&c.take_transmit(), Version::V5);
    let [Packet::Connect(connect)] = sent.as_slice() else {
        panic!("one CONNECT expected");
    };
    assert_eq!(connect.properties.maximum_packet_size, Some(4096));
    assert_eq!(connect.properties.receive_maximum, Some(5));
    assert!(!connect.clean_start);
}

#[test]
fn publishes_of_every_qos_reach_the_server_and_complete() {
    for v in [Version::V5, Version::V3_1_1] {
        let mut pair = Pair::new(config(v));
        pair.connect();
        pair.take_client_events();
        let now = pair.now;
        assert_eq!(
            pair.client.publish(now, msg("a", QoS::AtMostOnce, "0")),
            Ok(0)
        );
        let one = pair
            .client
            .publish(now, msg("a", QoS::AtLeastOnce, "1"))
            .expect("qos1");
        let two = pair
            .client
            .publish(now, msg("a", QoS::ExactlyOnce, "2"))
            .expect("qos2");
        assert_ne!(one, two);
        pair.drive();
        let payloads: Vec<_> = pair.routed.iter().map(|p| p.payload.clone()).collect();
        assert_eq!(payloads, ["0", "1", "2"], "{v:?}");
        assert_eq!(
            pair.take_client_events(),
            [
                ClientEvent::Published {
                    pkid: one,
                    code: ReasonCode::Success
                },
                ClientEvent::Published {
                    pkid: two,
                    code: ReasonCode::Success
                },
            ],
            "{v:?}"
        );
        assert_eq!(pair.client.inflight_len(), 0);
        assert_eq!(pair.server_events, [Event::Released { pkid: two }]);
    }
}

#[test]
fn server_publishes_of_every_qos_are_delivered_and_acknowledged() {
    for v in [Version::V5, Version::V3_1_1] {
        let mut pair = Pair::new(config(v));
        pair.connect();
        pair.take_client_events();
        for (qos, body) in [
            (QoS::AtMostOnce, "0"),
            (QoS::AtLeastOnce, "1"),
            (QoS::ExactlyOnce, "2"),
        ] {
            pair.server
                .publish(msg("b", qos, body))
                .expect("server publish");
        }
        pair.drive();
        let got: Vec<_> = pair
            .take_messages()
            .into_iter()
            .map(|p| p.payload)
            .collect();
        assert_eq!(got, ["0", "1", "2"], "{v:?}");
        assert_eq!(pair.server.inflight_len(), 0, "{v:?}");
        assert!(matches!(
            pair.server_events.as_slice(),
            [
                Event::Delivered { .. },
                Event::Received { .. },
                Event::Delivered { .. }
            ]
        ));
    }
}

#[test]
fn mqtt_3_3_4_7_publishes_beyond_the_servers_receive_maximum_wait_in_order() {
    let limits = SessionLimits {
        receive_maximum: 2,
        ..SessionLimits::default()
    };
    let mut pair = Pair::with_limits(config(Version::V5), limits);
    pair.auto_ack = false;
    pair.connect();
    let now = pair.now;
    const BODIES: [&str; 5] = ["1", "2", "3", "4", "5"];
    for body in BODIES {
        pair.client
            .publish(now, msg("w", QoS::AtLeastOnce, body))
            .expect("accepted");
    }
    pair.drive();
    assert_eq!(
        pair.routed.len(),
        2,
        "only Receive Maximum publishes in flight"
    );
    assert_eq!(pair.client.queued_len(), 3);
    while pair.routed.len() < 5 {
        let before = pair.routed.len();
        pair.ack_all();
        assert!(pair.routed.len() > before, "acks open the window");
        assert!(pair.client.inflight_len() <= 2);
    }
    pair.ack_all();
    assert!(pair.server_error.is_none(), "{:?}", pair.server_error);
    let got: Vec<_> = pair.routed.iter().map(|p| p.payload.clone()).collect();
    assert_eq!(got, BODIES);
    assert_eq!(pair.client.inflight_len() + pair.client.queued_len(), 0);
}

#[test]
fn mqtt_4_3_3_qos2_resent_after_reconnect_is_delivered_once() {
    let mut pair = Pair::new(config(Version::V5));
    pair.connect();
    pair.take_client_events();
    pair.server
        .publish(msg("q", QoS::ExactlyOnce, "once"))
        .expect("publish");
    // The client gets it and answers PUBREC, but the link dies before PUBREC arrives.
    let bytes = pair.server.take_transmit();
    pair.deliver_to_client(&bytes);
    assert_eq!(pair.take_messages().len(), 1);
    let _lost = pair.client.take_transmit();
    pair.reconnect(true);
    assert!(pair.client_error.is_none(), "{:?}", pair.client_error);
    assert_eq!(
        pair.take_messages(),
        [],
        "the resent (DUP) QoS 2 message must not be delivered again"
    );
    assert_eq!(
        pair.server.inflight_len(),
        0,
        "PUBREC, PUBREL, PUBCOMP completed"
    );
    assert!(pair.server_events.contains(&Event::Received { pkid: 1 }));
}

#[test]
fn mqtt_4_4_0_1_resume_resends_publish_with_dup_and_pubrel() {
    let mut pair = Pair::new(config(Version::V5));
    pair.auto_ack = false;
    pair.connect();
    pair.take_client_events();
    let now = pair.now;
    let a = pair
        .client
        .publish(now, msg("r", QoS::AtLeastOnce, "a"))
        .expect("a");
    let b = pair
        .client
        .publish(now, msg("r", QoS::ExactlyOnce, "b"))
        .expect("b");
    pair.drive();
    // The server answers PUBREC for b only; the client's PUBREL is lost with the link.
    pair.server.ack_publish(b, ReasonCode::Success);
    let bytes = pair.server.take_transmit();
    pair.deliver_to_client(&bytes);
    let lost = decode_all(&pair.client.take_transmit(), Version::V5);
    assert!(matches!(lost.as_slice(), [Packet::PubRel(r)] if r.pkid == b));
    pair.routed.clear();
    pair.auto_ack = true;
    pair.reconnect(true);
    assert_eq!(pair.routed.len(), 1, "a goes again");
    assert!(pair.routed[0].dup && pair.routed[0].pkid == a);
    assert!(pair.server_events.contains(&Event::Released { pkid: b }));
    let done: Vec<_> = pair
        .take_client_events()
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::Published { .. }))
        .collect();
    assert_eq!(done.len(), 2, "both complete: {done:?}");
}

#[test]
fn a_lost_session_sends_unacknowledged_publishes_again_as_new() {
    let mut pair = Pair::new(config(Version::V5));
    pair.auto_ack = false;
    pair.connect();
    let now = pair.now;
    pair.client
        .publish(now, msg("n", QoS::AtLeastOnce, "x"))
        .expect("x");
    pair.drive();
    pair.routed.clear();
    pair.auto_ack = true;
    pair.reconnect(false);
    assert_eq!(pair.routed.len(), 1);
    assert!(!pair.routed[0].dup, "a new session gets a new message");
    assert_eq!(pair.client.inflight_len(), 0);
}

#[test]
fn subscribe_and_unsubscribe_ids_are_matched_by_their_acks() {
    let mut pair = Pair::new(config(Version::V5));
    pair.auto_ack = false;
    pair.connect();
    pair.take_client_events();
    let now = pair.now;
    let p = pair
        .client
        .publish(now, msg("s", QoS::AtLeastOnce, "p"))
        .expect("p");
    let s = pair
        .client
        .subscribe(now, sub("s/#", QoS::AtLeastOnce), Properties::default())
        .expect("sub");
    let u = pair
        .client
        .unsubscribe(now, vec!["s/#".into()])
        .expect("unsub");
    assert!(p != s && s != u && p != u, "one id space: {p} {s} {u}");
    pair.drive();
    assert_eq!(
        pair.take_client_events(),
        [
            ClientEvent::SubAck {
                pkid: s,
                codes: vec![ReasonCode::GrantedQos1]
            },
            ClientEvent::UnsubAck {
                pkid: u,
                codes: vec![ReasonCode::Success]
            },
        ]
    );
    assert_eq!(pair.client.pending_requests(), 0);
}

#[test]
fn a_subscribe_made_offline_or_unanswered_goes_with_the_next_connection() {
    let mut pair = Pair::new(config(Version::V5));
    let now = pair.now;
    let s = pair
        .client
        .subscribe(now, sub("off/#", QoS::AtMostOnce), Properties::default())
        .expect("sub");
    pair.connect();
    assert!(pair.take_client_events().contains(&ClientEvent::SubAck {
        pkid: s,
        codes: vec![ReasonCode::Success]
    }));
}

#[test]
fn mqtt_3_1_2_24_keep_alive_pings_when_idle_and_a_missing_pingresp_ends_the_link() {
    let cfg = ClientConfig {
        keep_alive: Duration::from_secs(10),
        ping_timeout: Duration::from_secs(3),
        ..config(Version::V5)
    };
    let mut pair = Pair::new(cfg);
    pair.connect();
    pair.take_client_events();
    let start = pair.now;
    assert_eq!(
        pair.client.poll_timeout(),
        Some(start + Duration::from_secs(10))
    );
    pair.advance(Duration::from_secs(10));
    assert_eq!(pair.take_client_events(), [ClientEvent::Pong]);
    // The adaptive heartbeat lengthens the interval at runtime.
    pair.client.set_keep_alive(Duration::from_secs(20));
    assert_eq!(
        pair.client.poll_timeout(),
        Some(pair.now + Duration::from_secs(20))
    );
    pair.link_up = false;
    pair.advance(Duration::from_secs(20));
    assert_eq!(pair.client_error, None, "PINGREQ sent, PINGRESP awaited");
    pair.advance(Duration::from_secs(3));
    assert_eq!(pair.client_error, Some(ClientError::PingTimeout));
    assert!(!pair.client.is_connected());
}

#[test]
fn sending_anything_postpones_the_ping() {
    let cfg = ClientConfig {
        keep_alive: Duration::from_secs(10),
        ..config(Version::V5)
    };
    let mut pair = Pair::new(cfg);
    pair.connect();
    pair.now += Duration::from_secs(8);
    let now = pair.now;
    pair.client
        .publish(now, msg("k", QoS::AtMostOnce, "k"))
        .expect("publish");
    pair.drive();
    assert_eq!(
        pair.client.poll_timeout(),
        Some(now + Duration::from_secs(10))
    );
}

#[test]
fn mqtt_3_1_2_24_an_oversized_packet_from_the_server_ends_the_link_with_0x95() {
    let cfg = ClientConfig {
        max_packet_size: 1024,
        ..config(Version::V5)
    };
    let mut pair = Pair::new(cfg);
    pair.connect();
    pair.take_client_events();
    // The server session honours our maximum; a misbehaving server does not.
    let mut big = msg("big", QoS::AtMostOnce, "");
    big.payload = Bytes::from(vec![7u8; 2048]);
    assert_eq!(pair.server.publish(big.clone()), Err(SendError::TooLarge));
    let mut raw = BytesMut::new();
    Packet::Publish(big).encode(Version::V5, &mut raw);
    pair.deliver_to_client(&raw);
    let Some(ClientError::Violation(v)) = &pair.client_error else {
        panic!("expected a violation, got {:?}", pair.client_error);
    };
    assert_eq!(v.code, ReasonCode::PacketTooLarge);
    assert_eq!(pair.take_messages(), []);
    pair.drive();
    assert!(matches!(
        pair.server_events.as_slice(),
        [Event::Disconnect(d)] if d.code == ReasonCode::PacketTooLarge
    ));
}

#[test]
fn mqtt_3_1_2_22_the_clients_pings_keep_the_server_from_timing_it_out() {
    let cfg = ClientConfig {
        keep_alive: Duration::from_secs(10),
        ..config(Version::V5)
    };
    let mut pair = Pair::new(cfg);
    pair.connect();
    for _ in 0..30 {
        pair.advance(Duration::from_secs(2));
    }
    assert_eq!(
        pair.server_error, None,
        "an idle client that pings stays connected"
    );
    assert!(pair.client.is_connected());
    // A client that goes silent is dead to the server after 1.5 × the keep-alive.
    pair.client.set_keep_alive(Duration::ZERO);
    pair.advance(Duration::from_secs(15));
    assert!(matches!(&pair.server_error, Some(v) if v.code == ReasonCode::KeepAliveTimeout));
}

#[test]
fn shared_subscriptions_are_valid_filters() {
    let mut pair = Pair::new(config(Version::V5));
    pair.connect();
    let now = pair.now;
    let s = pair
        .client
        .subscribe(
            now,
            sub("$share/g/jobs/+", QoS::AtLeastOnce),
            Properties::default(),
        )
        .expect("shared subscription");
    pair.drive();
    assert!(
        pair.take_client_events()
            .iter()
            .any(|e| matches!(e, ClientEvent::SubAck { pkid, .. } if *pkid == s))
    );
}
