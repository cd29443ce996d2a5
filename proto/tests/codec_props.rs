//! Property tests: every packet we encode decodes back to itself; arbitrary bytes never
//! panic the decoder; topic matching agrees with a simple reference matcher; and a
//! differential check against rumqttc's independent codec.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use switchboard_proto::topic;
use switchboard_proto::*;

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _äß日本/-]{0,12}"
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-z0-9$]{1,4}(/[a-z0-9]{0,4}){0,4}"
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn publish_props() -> impl Strategy<Value = Properties> {
    (
        proptest::option::of(0u8..=1),
        proptest::option::of(any::<u32>()),
        proptest::option::of(text()),
        proptest::option::of(topic_name()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        proptest::collection::vec(1u32..=268_435_455, 0..3),
        proptest::collection::vec((text(), text()), 0..3),
        proptest::option::of(1u16..),
    )
        .prop_map(|(pfi, exp, ct, rt, cd, ids, up, alias)| Properties {
            payload_format_indicator: pfi,
            message_expiry_interval: exp,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd.map(Bytes::from),
            subscription_identifiers: ids,
            user_properties: up,
            topic_alias: alias,
            ..Properties::default()
        })
}

fn publish(v5: bool) -> impl Strategy<Value = Publish> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        1u16..,
        publish_props(),
        "[ -~]{0,64}",
    )
        .prop_map(
            move |(dup, qos, retain, topic, pkid, props, payload)| Publish {
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic,
                pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
                properties: if v5 { props } else { Properties::default() },
                payload: Bytes::from(payload),
            },
        )
}

fn sub_options(v5: bool) -> impl Strategy<Value = SubscriptionOptions> {
    (qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(qos, nl, rap, rh)| {
        if !v5 {
            return SubscriptionOptions {
                qos,
                ..Default::default()
            };
        }
        SubscriptionOptions {
            qos,
            no_local: nl,
            retain_as_published: rap,
            retain_handling: match rh {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNew,
                _ => RetainHandling::DoNotSend,
            },
        }
    })
}

fn connect(version: Version) -> impl Strategy<Value = Connect> {
    let v5 = version.is_v5();
    (
        text(),
        any::<bool>(),
        any::<u16>(),
        proptest::option::of(any::<u32>()),
        proptest::option::of((
            topic_name(),
            qos(),
            any::<bool>(),
            proptest::option::of(any::<u32>()),
        )),
        proptest::option::of(text()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
    )
        .prop_map(move |(id, clean, ka, sei, will, user, pass)| Connect {
            version,
            client_id: id,
            clean_start: clean,
            keep_alive: ka,
            properties: Properties {
                session_expiry_interval: sei.filter(|_| v5),
                ..Properties::default()
            },
            will: will.map(|(topic, qos, retain, delay)| Will {
                topic,
                payload: Bytes::from_static(b"gone"),
                qos,
                retain,
                properties: Properties {
                    will_delay_interval: delay.filter(|_| v5),
                    ..Properties::default()
                },
            }),
            password: pass.filter(|_| v5 || user.is_some()).map(Bytes::from),
            username: user,
        })
}

fn any_packet(version: Version) -> BoxedStrategy<Packet> {
    let v5 = version.is_v5();
    let code = if v5 {
        prop_oneof![
            Just(ReasonCode::Success),
            Just(ReasonCode::NoMatchingSubscribers),
            Just(ReasonCode::QuotaExceeded)
        ]
        .boxed()
    } else {
        Just(ReasonCode::Success).boxed()
    };
    prop_oneof![
        connect(version).prop_map(|c| Packet::Connect(Box::new(c))),
        publish(v5).prop_map(Packet::Publish),
        (1u16.., code.clone()).prop_map(|(pkid, code)| Packet::PubAck(PubResponse {
            pkid,
            code,
            properties: Properties::default()
        })),
        (1u16.., code).prop_map(|(pkid, code)| Packet::PubRec(PubResponse {
            pkid,
            code,
            properties: Properties::default()
        })),
        (1u16..).prop_map(|pkid| Packet::PubRel(PubResponse::new(pkid))),
        (1u16..).prop_map(|pkid| Packet::PubComp(PubResponse::new(pkid))),
        (
            1u16..,
            proptest::collection::vec((topic_name(), sub_options(v5)), 1..4)
        )
            .prop_map(|(pkid, filters)| Packet::Subscribe(Subscribe {
                pkid,
                properties: Properties::default(),
                filters
            })),
        (1u16.., proptest::collection::vec(topic_name(), 1..4)).prop_map(|(pkid, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                pkid,
                properties: Properties::default(),
                filters,
            })
        }),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
    ]
    .boxed()
}

fn roundtrip(p: &Packet, v: Version) -> Packet {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf);
    assert_eq!(
        buf.len(),
        p.encoded_len(v),
        "encoded_len disagrees with encode"
    );
    let out = Packet::read(&mut buf, v, usize::MAX)
        .expect("decodes")
        .expect("complete");
    assert!(buf.is_empty(), "decoder left bytes behind");
    out
}

/// Reference matcher: recursive over levels, written independently of `topic::matches`.
fn reference_match(filter: &[&str], topic: &[&str]) -> bool {
    match (filter.split_first(), topic.split_first()) {
        (Some((&"#", _)), _) => true,
        (Some((&"+", f)), Some((_, t))) => reference_match(f, t),
        (Some((a, f)), Some((b, t))) => a == b && reference_match(f, t),
        (None, None) => true,
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn v5_packets_roundtrip(p in any_packet(Version::V5)) {
        prop_assert_eq!(roundtrip(&p, Version::V5), p);
    }

    #[test]
    fn v311_packets_roundtrip(p in any_packet(Version::V3_1_1)) {
        prop_assert_eq!(roundtrip(&p, Version::V3_1_1), p);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), v5 in any::<bool>()) {
        let v = if v5 { Version::V5 } else { Version::V3_1_1 };
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = Packet::read(&mut buf, v, 1 << 16) {}
    }

    #[test]
    fn mutated_packets_never_panic(p in any_packet(Version::V5), idx in any::<usize>(), byte in any::<u8>()) {
        let mut buf = BytesMut::new();
        p.encode(Version::V5, &mut buf);
        let i = idx % buf.len();
        buf[i] = byte;
        let _ = Packet::read(&mut buf, Version::V5, 1 << 16);
    }

    #[test]
    fn matching_agrees_with_reference(
        filter in "(\\+|#|[ab$]{1,2})(/(\\+|[ab]{0,2})){0,3}(/#)?",
        name in "[ab$]{0,2}(/[ab]{0,2}){0,4}",
    ) {
        prop_assume!(topic::validate_filter(&filter).is_ok());
        prop_assume!(topic::validate_topic_name(&name).is_ok());
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = name.split('/').collect();
        let dollar_excluded = name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#'));
        let expected = !dollar_excluded && reference_match(&f, &t);
        prop_assert_eq!(topic::matches(&filter, &name), expected);
    }

    /// The borrowed QoS 0 encoding writes the same bytes as the owned one.
    #[test]
    fn plain_publish_encodes_as_publish(
        retain in any::<bool>(),
        topic in topic_name(),
        expiry in proptest::option::of(any::<u32>()),
        ids in proptest::collection::vec(1u32..=268_435_455, 0..3),
        alias in proptest::option::of(1u16..),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        v5 in any::<bool>(),
    ) {
        let v = if v5 { Version::V5 } else { Version::V3_1_1 };
        let owned = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain,
            topic: topic.clone(),
            pkid: 0,
            properties: Properties {
                message_expiry_interval: expiry,
                subscription_identifiers: ids.clone(),
                topic_alias: alias,
                ..Properties::default()
            },
            payload: Bytes::from(payload.clone()),
        };
        let plain = PlainPublish {
            retain,
            topic: &topic,
            message_expiry_interval: expiry,
            subscription_identifiers: &ids,
            topic_alias: alias,
            payload: &payload,
        };
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        owned.encode(v, &mut a);
        plain.encode(v, &mut b);
        prop_assert_eq!(plain.encoded_len(v), b.len());
        prop_assert_eq!(&a[..], &b[..]);
    }

    /// Differential: rumqttc's v4 codec reads what we write, and we read what it writes.
    #[test]
    fn v4_publish_agrees_with_rumqttc(p in publish(false)) {
        let mut buf = BytesMut::new();
        Packet::Publish(p.clone()).encode(Version::V3_1_1, &mut buf);
        let theirs = rumqttc::mqttbytes::v4::Packet::read(&mut buf, usize::MAX).expect("rumqttc reads ours");
        let rumqttc::mqttbytes::v4::Packet::Publish(tp) = theirs else { panic!("not a publish") };
        prop_assert_eq!(tp.topic.as_str(), p.topic.as_str());
        prop_assert_eq!(tp.pkid, p.pkid);
        prop_assert_eq!(tp.qos as u8, p.qos as u8);
        prop_assert_eq!(tp.retain, p.retain);
        prop_assert_eq!(tp.dup, p.dup);
        prop_assert_eq!(&tp.payload, &p.payload);

        let mut buf = BytesMut::new();
        rumqttc::mqttbytes::v4::Packet::Publish(tp).write(&mut buf, usize::MAX).expect("rumqttc writes");
        let ours = Packet::read(&mut buf, Version::V3_1_1, usize::MAX).expect("we read theirs").expect("complete");
        prop_assert_eq!(ours, Packet::Publish(p));
    }

    #[test]
    fn v5_publish_agrees_with_rumqttc(p in publish(true)) {
        use rumqttc::v5::mqttbytes::v5 as theirs;
        let mut buf = BytesMut::new();
        Packet::Publish(p.clone()).encode(Version::V5, &mut buf);
        let Ok(theirs::Packet::Publish(tp)) = theirs::Packet::read(&mut buf, None) else { panic!("rumqttc could not read our publish") };
        prop_assert_eq!(&tp.topic[..], p.topic.as_bytes());
        prop_assert_eq!(tp.pkid, p.pkid);
        prop_assert_eq!(&tp.payload, &p.payload);
        let props = tp.properties.clone().unwrap_or_default();
        prop_assert_eq!(props.message_expiry_interval, p.properties.message_expiry_interval);
        prop_assert_eq!(&props.user_properties, &p.properties.user_properties);
        prop_assert_eq!(&props.response_topic, &p.properties.response_topic);
        prop_assert_eq!(&props.correlation_data, &p.properties.correlation_data);
        prop_assert_eq!(props.topic_alias, p.properties.topic_alias);
        let ids: Vec<u32> = props.subscription_identifiers.iter().map(|&i| i as u32).collect();
        prop_assert_eq!(&ids, &p.properties.subscription_identifiers);

        let mut buf = BytesMut::new();
        theirs::Packet::Publish(tp).write(&mut buf, None).expect("rumqttc writes");
        let ours = Packet::read(&mut buf, Version::V5, usize::MAX).expect("we read theirs").expect("complete");
        prop_assert_eq!(ours, Packet::Publish(p));
    }
}

#[test]
fn malformed_inputs_map_to_reason_codes() {
    let cases: &[(&[u8], ReasonCode)] = &[
        // PUBLISH QoS 3
        (&[0x36, 0x03, 0x00, 0x01, b'a'], ReasonCode::MalformedPacket),
        // PUBLISH with wildcard in topic
        (
            &[0x30, 0x03, 0x00, 0x01, b'#'],
            ReasonCode::TopicNameInvalid,
        ),
        // SUBSCRIBE with wrong fixed header flags
        (
            &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
            ReasonCode::MalformedPacket,
        ),
        // SUBSCRIBE with no filter
        (&[0x82, 0x03, 0x00, 0x01, 0x00], ReasonCode::ProtocolError),
        // UTF-8 string with U+0000
        (
            &[0x30, 0x04, 0x00, 0x02, b'a', 0x00],
            ReasonCode::MalformedPacket,
        ),
        // non-minimal variable byte integer
        (&[0xC0, 0x80, 0x00], ReasonCode::MalformedPacket),
        // PUBACK with pkid 0
        (&[0x40, 0x02, 0x00, 0x00], ReasonCode::MalformedPacket),
        // duplicate property (message expiry twice)
        (
            &[
                0x30, 0x0E, 0x00, 0x01, b'a', 0x0A, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1,
            ],
            ReasonCode::ProtocolError,
        ),
        // property not allowed in PUBLISH (session expiry)
        (
            &[0x30, 0x09, 0x00, 0x01, b'a', 0x05, 0x11, 0, 0, 0, 1],
            ReasonCode::MalformedPacket,
        ),
    ];
    for (bytes, code) in cases {
        let mut buf = BytesMut::from(*bytes);
        let err = Packet::read(&mut buf, Version::V5, 1 << 20).expect_err("must be rejected");
        assert_eq!(err.reason_code(), *code, "{bytes:02x?}: {err}");
    }
}

#[test]
fn mqtt_3_2_2_15_oversized_packet_rejected_before_buffering() {
    // Only the fixed header has arrived, but it already announces too much.
    let mut buf = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0x03][..]);
    let err = Packet::read(&mut buf, Version::V5, 1024).expect_err("too large");
    assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
}
