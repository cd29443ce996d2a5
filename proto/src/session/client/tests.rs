//! Unit tests of the client session: a scripted server feeds it hand-made packets, and a
//! property test drives it against the real server session through the [`Pair`].

use std::collections::HashSet as StdHashSet;

use proptest::prelude::*;

use super::*;
use crate::session::SessionLimits;
use crate::session::pair::{Pair, config, decode_all, msg};

/// A client connected to a scripted server (CONNACK with `props`).
fn connected(cfg: ClientConfig, props: Properties) -> (ClientSession, Instant) {
    let now = Instant::now();
    let v = cfg.version;
    let mut c = ClientSession::new(cfg, now);
    c.connect(now);
    c.take_transmit();
    feed(
        &mut c,
        now,
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: ReasonCode::Success,
            properties: props,
        }),
        v,
    )
    .expect("connack");
    assert!(matches!(
        c.poll_event(),
        Some(ClientEvent::Connected { .. })
    ));
    (c, now)
}

fn feed(c: &mut ClientSession, now: Instant, p: Packet, v: Version) -> Result<(), ClientError> {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf);
    c.handle_read(now, &mut buf)
}

fn qos2(pkid: u16, dup: bool) -> Packet {
    let mut p = msg("t", QoS::ExactlyOnce, "x");
    p.pkid = pkid;
    p.dup = dup;
    Packet::Publish(p)
}

#[test]
fn mqtt_4_3_3_10_a_dup_qos2_publish_awaiting_pubrel_is_not_delivered_again() {
    let (mut c, now) = connected(config(Version::V5), Properties::default());
    feed(&mut c, now, qos2(9, false), Version::V5).expect("first");
    assert!(matches!(c.poll_event(), Some(ClientEvent::Message(_))));
    feed(&mut c, now, qos2(9, true), Version::V5).expect("resend");
    assert_eq!(c.poll_event(), None, "delivered twice");
    let out = decode_all(&c.take_transmit(), Version::V5);
    assert!(
        matches!(out.as_slice(), [Packet::PubRec(a), Packet::PubRec(b)] if a.pkid == 9 && b.pkid == 9)
    );
    feed(
        &mut c,
        now,
        Packet::PubRel(PubResponse::new(9)),
        Version::V5,
    )
    .expect("pubrel");
    let out = decode_all(&c.take_transmit(), Version::V5);
    assert!(matches!(out.as_slice(), [Packet::PubComp(r)] if r.code == ReasonCode::Success));
    // After PUBREL the identifier is free: a new message with it is a new message.
    feed(&mut c, now, qos2(9, false), Version::V5).expect("new");
    assert!(matches!(c.poll_event(), Some(ClientEvent::Message(_))));
}

#[test]
fn mqtt_3_3_4_9_a_server_exceeding_our_receive_maximum_is_disconnected_with_0x93() {
    let cfg = ClientConfig {
        receive_maximum: 2,
        ..config(Version::V5)
    };
    let (mut c, now) = connected(cfg, Properties::default());
    feed(&mut c, now, qos2(1, false), Version::V5).expect("1");
    feed(&mut c, now, qos2(2, false), Version::V5).expect("2");
    let err = feed(&mut c, now, qos2(3, false), Version::V5).expect_err("3 is too many");
    assert!(
        matches!(err, ClientError::Violation(v) if v.code == ReasonCode::ReceiveMaximumExceeded)
    );
    let out = decode_all(&c.take_transmit(), Version::V5);
    assert!(
        matches!(out.last(), Some(Packet::Disconnect(d)) if d.code == ReasonCode::ReceiveMaximumExceeded)
    );
    assert!(!c.is_connected());
}

#[test]
fn mqtt_3_2_0_1_the_first_packet_from_the_server_must_be_connack() {
    let now = Instant::now();
    let mut c = ClientSession::new(config(Version::V5), now);
    c.connect(now);
    let err = feed(&mut c, now, Packet::PingResp, Version::V5).expect_err("not CONNACK");
    assert!(matches!(err, ClientError::Violation(v) if v.code == ReasonCode::ProtocolError));
}

#[test]
fn a_refused_connack_and_a_server_disconnect_are_reported() {
    let now = Instant::now();
    let mut c = ClientSession::new(config(Version::V3_1_1), now);
    c.connect(now);
    let refused = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::NotAuthorized,
        properties: Properties::default(),
    });
    let err = feed(&mut c, now, refused, Version::V3_1_1).expect_err("refused");
    assert!(matches!(
        err,
        ClientError::Refused {
            code: ReasonCode::NotAuthorized,
            ..
        }
    ));

    let (mut c, now) = connected(config(Version::V5), Properties::default());
    let err = feed(
        &mut c,
        now,
        Packet::Disconnect(Disconnect::new(ReasonCode::SessionTakenOver)),
        Version::V5,
    )
    .expect_err("disconnected");
    assert!(matches!(
        err,
        ClientError::Disconnected {
            code: ReasonCode::SessionTakenOver,
            ..
        }
    ));
    assert!(!c.is_connected());
}

#[test]
fn mqtt_3_2_2_2_session_present_after_clean_start_is_a_protocol_error() {
    let now = Instant::now();
    let cfg = ClientConfig {
        clean_start: true,
        ..config(Version::V5)
    };
    let mut c = ClientSession::new(cfg, now);
    c.connect(now);
    let ack = Packet::ConnAck(ConnAck {
        session_present: true,
        code: ReasonCode::Success,
        properties: Properties::default(),
    });
    assert!(feed(&mut c, now, ack, Version::V5).is_err());
}

#[test]
fn no_connack_in_time_ends_the_attempt() {
    let now = Instant::now();
    let mut c = ClientSession::new(config(Version::V5), now);
    c.connect(now);
    let deadline = c.poll_timeout().expect("connack deadline");
    assert!(
        c.handle_timeout(deadline - Duration::from_millis(1))
            .is_ok()
    );
    assert_eq!(c.handle_timeout(deadline), Err(ClientError::ConnAckTimeout));
}

#[test]
fn inbound_topic_aliases_are_resolved_and_checked() {
    let cfg = ClientConfig {
        topic_alias_maximum: 2,
        ..config(Version::V5)
    };
    let (mut c, now) = connected(cfg, Properties::default());
    let mut p = msg("long/name", QoS::AtMostOnce, "a");
    p.properties.topic_alias = Some(1);
    feed(&mut c, now, Packet::Publish(p), Version::V5).expect("set");
    let mut p = msg("", QoS::AtMostOnce, "b");
    p.properties.topic_alias = Some(1);
    feed(&mut c, now, Packet::Publish(p), Version::V5).expect("use");
    c.poll_event();
    assert!(matches!(c.poll_event(), Some(ClientEvent::Message(p)) if p.topic == "long/name"));
    let mut p = msg("x", QoS::AtMostOnce, "c");
    p.properties.topic_alias = Some(3);
    let err = feed(&mut c, now, Packet::Publish(p), Version::V5).expect_err("beyond max");
    assert!(matches!(err, ClientError::Violation(v) if v.code == ReasonCode::TopicAliasInvalid));
}

#[test]
fn requests_are_checked_before_they_take_an_identifier() {
    let props = Properties {
        maximum_packet_size: Some(64),
        ..Properties::default()
    };
    let (mut c, now) = connected(config(Version::V5), props);
    assert!(matches!(
        c.publish(now, msg("a/+", QoS::AtLeastOnce, "x")),
        Err(RequestError::InvalidTopic(_))
    ));
    let mut big = msg("a", QoS::AtLeastOnce, "");
    big.payload = Bytes::from(vec![0u8; 100]);
    assert_eq!(c.publish(now, big), Err(RequestError::TooLarge));
    assert_eq!(
        c.subscribe(now, Vec::new(), Properties::default()),
        Err(RequestError::NoFilter)
    );
    assert!(matches!(
        c.unsubscribe(now, vec!["a/#/b".into()]),
        Err(RequestError::InvalidTopic(_))
    ));
    assert_eq!(
        c.publish(now, msg("a", QoS::AtLeastOnce, "x")),
        Ok(1),
        "no id was used"
    );
}

#[test]
fn the_publish_queue_is_bounded() {
    let now = Instant::now();
    let cfg = ClientConfig {
        max_queued: 2,
        ..config(Version::V5)
    };
    let mut c = ClientSession::new(cfg, now);
    assert!(c.publish(now, msg("q", QoS::AtLeastOnce, "1")).is_ok());
    assert!(c.publish(now, msg("q", QoS::AtMostOnce, "2")).is_ok());
    assert_eq!(
        c.publish(now, msg("q", QoS::AtLeastOnce, "3")),
        Err(RequestError::QueueFull)
    );
    assert_eq!(c.queued_len(), 2);
    assert!(!c.has_transmit(), "nothing goes out without a connection");
}

#[test]
fn identifiers_wrap_around_and_skip_those_in_flight() {
    let mut pair = Pair::new(config(Version::V5));
    pair.auto_ack = false;
    pair.connect();
    let now = pair.now;
    pair.client.next_pkid = u16::MAX;
    let a = pair
        .client
        .publish(now, msg("w", QoS::AtLeastOnce, "a"))
        .expect("a");
    let b = pair
        .client
        .publish(now, msg("w", QoS::AtLeastOnce, "b"))
        .expect("b");
    assert_eq!((a, b), (u16::MAX, 1), "0 is never an identifier");
    pair.client.next_pkid = u16::MAX;
    let c = pair
        .client
        .subscribe(
            now,
            vec![("w".into(), SubscriptionOptions::default())],
            Properties::default(),
        )
        .expect("c");
    assert_eq!(c, 2, "identifiers in flight are skipped");
}

#[derive(Debug, Clone)]
enum Op {
    Publish(QoS),
    Subscribe,
    Unsubscribe,
    Drive,
    AckAll,
    Reconnect { session_present: bool },
    Disconnected,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
            .prop_map(Op::Publish),
        1 => Just(Op::Subscribe),
        1 => Just(Op::Unsubscribe),
        2 => Just(Op::Drive),
        2 => Just(Op::AckAll),
        1 => any::<bool>().prop_map(|session_present| Op::Reconnect { session_present }),
        1 => Just(Op::Disconnected),
    ]
}

proptest! {
    /// Whatever the interleaving of publishes, subscribes, acknowledgements and reconnects
    /// (with or without the session), an identifier handed out is never handed out again
    /// before its flow completed, every flow completes exactly once, and the server never
    /// sees the client exceed its Receive Maximum.
    #[test]
    fn packet_ids_never_collide_and_every_flow_completes(
        ops in proptest::collection::vec(op(), 1..120),
        start in prop_oneof![any::<u16>(), 65_500u16..=u16::MAX],
    ) {
        let limits = SessionLimits { receive_maximum: 3, ..SessionLimits::default() };
        let mut pair = Pair::with_limits(config(Version::V5), limits);
        pair.client.next_pkid = start.max(1);
        pair.auto_ack = false;
        pair.connect();
        let mut open: StdHashSet<u16> = StdHashSet::new();
        let check = |pair: &mut Pair, open: &mut StdHashSet<u16>| -> Result<(), TestCaseError> {
            for e in pair.take_client_events() {
                match e {
                    ClientEvent::Published { pkid, .. }
                    | ClientEvent::SubAck { pkid, .. }
                    | ClientEvent::UnsubAck { pkid, .. } => {
                        prop_assert!(open.remove(&pkid), "completed twice or unknown: {}", pkid);
                    }
                    _ => {}
                }
            }
            prop_assert!(pair.server_error.is_none(), "{:?}", pair.server_error);
            prop_assert!(pair.client_error.is_none(), "{:?}", pair.client_error);
            Ok(())
        };
        for op in ops {
            let now = pair.now;
            let id = match op {
                Op::Publish(q) => pair.client.publish(now, msg("p", q, "x")).ok().filter(|&id| id != 0),
                Op::Subscribe => pair.client.subscribe(now, vec![("p".into(), SubscriptionOptions::default())], Properties::default()).ok(),
                Op::Unsubscribe => pair.client.unsubscribe(now, vec!["p".into()]).ok(),
                Op::Drive => { pair.drive(); None }
                Op::AckAll => { pair.ack_all(); None }
                Op::Reconnect { session_present } => { pair.reconnect(session_present); None }
                Op::Disconnected => { pair.client.connection_lost(); pair.link_up = false; None }
            };
            if let Some(id) = id {
                prop_assert!(open.insert(id), "identifier {} handed out while in flight", id);
            }
            check(&mut pair, &mut open)?;
        }
        pair.auto_ack = true;
        pair.reconnect(true);
        pair.ack_all();
        check(&mut pair, &mut open)?;
        prop_assert!(open.is_empty(), "flows never completed: {:?}", open);
    }

    /// Arbitrary bytes from the server, in arbitrary chunks, never panic the client.
    #[test]
    fn arbitrary_server_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let now = Instant::now();
        let mut c = ClientSession::new(config(Version::V5), now);
        c.connect(now);
        let mut buf = BytesMut::from(&[0x20, 0x03, 0x00, 0x00, 0x00][..]);
        for chunk in data.chunks(5) {
            buf.extend_from_slice(chunk);
            if c.handle_read(now, &mut buf).is_err() {
                break;
            }
            while c.poll_event().is_some() {}
            let _ = c.take_transmit();
        }
    }
}

#[test]
fn mqtt_3_2_2_11_publishes_beyond_the_servers_maximum_qos_or_retain_are_refused() {
    let props = Properties {
        maximum_qos: Some(1),
        retain_available: Some(0),
        ..Properties::default()
    };
    let (mut c, now) = connected(config(Version::V5), props);
    assert_eq!(
        c.publish(now, msg("m", QoS::ExactlyOnce, "x")),
        Err(RequestError::QosNotSupported)
    );
    let mut retained = msg("m", QoS::AtMostOnce, "x");
    retained.retain = true;
    assert_eq!(
        c.publish(now, retained),
        Err(RequestError::RetainNotSupported)
    );
    assert_eq!(c.publish(now, msg("m", QoS::AtLeastOnce, "x")), Ok(1));
}

#[test]
fn the_assigned_client_identifier_is_used_to_resume() {
    let props = Properties {
        assigned_client_identifier: Some("given-7".into()),
        ..Properties::default()
    };
    let cfg = ClientConfig {
        client_id: String::new(),
        ..config(Version::V5)
    };
    let (mut c, now) = connected(cfg, props);
    c.connection_lost();
    c.connect(now);
    let sent = decode_all(&c.take_transmit(), Version::V5);
    assert!(matches!(sent.as_slice(), [Packet::Connect(p)] if p.client_id == "given-7"));
}

#[test]
fn mqtt_3_2_2_11_a_queued_publish_the_server_cannot_take_is_reported_not_sent() {
    let now = Instant::now();
    let mut c = ClientSession::new(config(Version::V5), now);
    let two = c
        .publish(now, msg("o", QoS::ExactlyOnce, "2"))
        .expect("queued");
    let one = c
        .publish(now, msg("o", QoS::AtLeastOnce, "1"))
        .expect("queued");
    c.connect(now);
    c.take_transmit();
    let ack = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::Success,
        properties: Properties {
            maximum_qos: Some(1),
            ..Properties::default()
        },
    });
    feed(&mut c, now, ack, Version::V5).expect("connack");
    assert!(matches!(
        c.poll_event(),
        Some(ClientEvent::Connected { .. })
    ));
    assert_eq!(
        c.poll_event(),
        Some(ClientEvent::Published {
            pkid: two,
            code: ReasonCode::QosNotSupported
        })
    );
    let sent = decode_all(&c.take_transmit(), Version::V5);
    assert!(matches!(sent.as_slice(), [Packet::Publish(p)] if p.pkid == one));
}
