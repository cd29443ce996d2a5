//! Drives a [`ServerSession`] with hand-made client packets and a virtual clock.

use super::*;
use crate::session::Accept;
use bytes::Bytes;

struct Harness {
    s: ServerSession,
    now: Instant,
    v: Version,
}

impl Harness {
    fn connect(v: Version, keep_alive: u16, props: Properties) -> Harness {
        let now = Instant::now();
        let mut h = Harness {
            s: ServerSession::new(SessionLimits::default(), now),
            now,
            v,
        };
        let connect = Connect {
            version: v,
            client_id: "c1".into(),
            clean_start: true,
            keep_alive,
            properties: props,
            will: None,
            username: None,
            password: None,
        };
        h.send(Packet::Connect(Box::new(connect))).expect("connect");
        let Some(Event::Connect(c)) = h.s.poll_event() else {
            panic!("no connect event")
        };
        h.s.accept(&c, Accept::default());
        assert!(
            matches!(h.recv().as_slice(), [Packet::ConnAck(a)] if a.code == ReasonCode::Success)
        );
        h
    }

    fn send(&mut self, p: Packet) -> Result<(), Violation> {
        let mut buf = BytesMut::new();
        p.encode(self.v, &mut buf);
        self.s.handle_read(self.now, &mut buf)
    }

    fn recv(&mut self) -> Vec<Packet> {
        let mut buf = BytesMut::from(&self.s.take_transmit()[..]);
        let mut out = Vec::new();
        while let Some(p) =
            Packet::read(&mut buf, self.v, usize::MAX).expect("server output decodes")
        {
            out.push(p);
        }
        out
    }
}

fn publish(topic: &str, qos: QoS, pkid: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        properties: Properties::default(),
        payload: Bytes::from_static(b"hi"),
    }
}

#[test]
fn mqtt_3_1_0_1_first_packet_must_be_connect() {
    let now = Instant::now();
    let mut s = ServerSession::new(SessionLimits::default(), now);
    let mut buf = BytesMut::new();
    Packet::PingReq.encode(Version::V5, &mut buf);
    let err = s.handle_read(now, &mut buf).expect_err("must fail");
    assert_eq!(err.code, ReasonCode::ProtocolError);
}

#[test]
fn keep_alive_expires_at_one_and_a_half_times() {
    let mut h = Harness::connect(Version::V5, 10, Properties::default());
    let start = h.now;
    assert_eq!(h.s.poll_timeout(), Some(start + Duration::from_secs(15)));
    assert!(h.s.handle_timeout(start + Duration::from_secs(14)).is_ok());
    h.now = start + Duration::from_secs(14);
    h.send(Packet::PingReq).expect("ping");
    assert_eq!(h.recv(), vec![Packet::PingResp]);
    assert_eq!(h.s.poll_timeout(), Some(h.now + Duration::from_secs(15)));
    let err =
        h.s.handle_timeout(h.now + Duration::from_secs(15))
            .expect_err("timeout");
    assert_eq!(err.code, ReasonCode::KeepAliveTimeout);
}

#[test]
fn qos2_inbound_is_delivered_once_even_when_resent() {
    let mut h = Harness::connect(Version::V5, 0, Properties::default());
    h.send(Packet::Publish(publish("a", QoS::ExactlyOnce, 7)))
        .expect("publish");
    assert!(matches!(h.s.poll_event(), Some(Event::Publish(p)) if p.pkid == 7));
    h.s.ack_publish(7, ReasonCode::Success);
    assert!(matches!(h.recv().as_slice(), [Packet::PubRec(r)] if r.pkid == 7));
    let mut again = publish("a", QoS::ExactlyOnce, 7);
    again.dup = true;
    h.send(Packet::Publish(again)).expect("resend");
    assert_eq!(
        h.s.poll_event(),
        None,
        "a resent QoS 2 message must not be routed twice"
    );
    assert!(matches!(h.recv().as_slice(), [Packet::PubRec(_)]));
    h.send(Packet::PubRel(PubResponse::new(7))).expect("pubrel");
    assert!(matches!(h.recv().as_slice(), [Packet::PubComp(c)] if c.code == ReasonCode::Success));
    assert_eq!(h.s.poll_event(), Some(Event::Released { pkid: 7 }));
    h.send(Packet::PubRel(PubResponse::new(7)))
        .expect("pubrel again");
    assert!(
        matches!(h.recv().as_slice(), [Packet::PubComp(c)] if c.code == ReasonCode::PacketIdentifierNotFound)
    );
}

#[test]
fn mqtt_3_3_4_9_receive_maximum_exceeded_disconnects() {
    let mut h = Harness::connect(Version::V5, 0, Properties::default());
    let max = SessionLimits::default().receive_maximum;
    for id in 1..=max {
        h.send(Packet::Publish(publish("a", QoS::AtLeastOnce, id)))
            .expect("within window");
    }
    let err = h
        .send(Packet::Publish(publish("a", QoS::AtLeastOnce, max + 1)))
        .expect_err("window exceeded");
    assert_eq!(err.code, ReasonCode::ReceiveMaximumExceeded);
}

#[test]
fn outbound_window_follows_client_receive_maximum() {
    let props = Properties {
        receive_maximum: Some(2),
        ..Properties::default()
    };
    let mut h = Harness::connect(Version::V5, 0, props);
    let a =
        h.s.publish(publish("t", QoS::AtLeastOnce, 0))
            .expect("first");
    h.s.publish(publish("t", QoS::ExactlyOnce, 0))
        .expect("second");
    assert_eq!(
        h.s.publish(publish("t", QoS::AtLeastOnce, 0)),
        Err(SendError::WindowFull)
    );
    assert!(
        h.s.publish(publish("t", QoS::AtMostOnce, 0)).is_ok(),
        "QoS 0 is not windowed"
    );
    h.send(Packet::PubAck(PubResponse::new(a))).expect("puback");
    assert_eq!(h.s.poll_event(), Some(Event::Delivered { pkid: a }));
    assert!(h.s.can_send());
}

#[test]
fn inbound_topic_alias_is_resolved_and_checked() {
    let mut h = Harness::connect(Version::V5, 0, Properties::default());
    let mut p = publish("long/topic/name", QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(3);
    h.send(Packet::Publish(p)).expect("set alias");
    let mut p = publish("", QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(3);
    h.send(Packet::Publish(p)).expect("use alias");
    h.s.poll_event();
    assert!(matches!(h.s.poll_event(), Some(Event::Publish(p)) if p.topic == "long/topic/name"));
    let mut p = publish("", QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(4);
    assert_eq!(
        h.send(Packet::Publish(p)).expect_err("unmapped").code,
        ReasonCode::ProtocolError
    );
}

#[test]
fn outbound_topic_alias_replaces_repeated_topics() {
    let props = Properties {
        topic_alias_maximum: Some(5),
        ..Properties::default()
    };
    let mut h = Harness::connect(Version::V5, 0, props);
    h.s.publish(publish("x/y", QoS::AtMostOnce, 0))
        .expect("send");
    h.s.publish(publish("x/y", QoS::AtMostOnce, 0))
        .expect("send");
    let out = h.recv();
    let [Packet::Publish(first), Packet::Publish(second)] = out.as_slice() else {
        panic!("two publishes expected: {out:?}")
    };
    assert_eq!(first.topic, "x/y");
    assert_eq!(first.properties.topic_alias, Some(1));
    assert_eq!(second.topic, "");
    assert_eq!(second.properties.topic_alias, Some(1));
}

#[test]
fn plain_and_owned_qos0_publishes_send_the_same_bytes() {
    // Two aliases for three topics; a maximum packet size some of them exceed.
    let props = Properties {
        topic_alias_maximum: Some(2),
        maximum_packet_size: Some(40),
        ..Properties::default()
    };
    for v in [Version::V5, Version::V3_1_1] {
        let (mut owned, mut plain) = (
            Harness::connect(v, 0, props.clone()),
            Harness::connect(v, 0, props.clone()),
        );
        let sends = [
            ("a/b", 3, &[][..]),
            ("a/b", 10, &[7][..]),
            ("c/dd", 20, &[][..]),
            ("eee/f", 5, &[1, 300][..]),
            ("a/b", 34, &[][..]),
            ("c/dd", 1, &[][..]),
        ];
        for (topic, size, ids) in sends {
            let payload = vec![b'x'; size];
            let mut p = publish(topic, QoS::AtMostOnce, 0);
            p.payload = Bytes::from(payload.clone());
            p.properties.subscription_identifiers = ids.to_vec();
            let a = owned.s.publish(p).map(|_| ());
            let b = plain.s.publish_plain(PlainPublish {
                retain: false,
                topic,
                message_expiry_interval: None,
                subscription_identifiers: ids,
                topic_alias: None,
                payload: &payload,
            });
            assert_eq!(a, b, "{v:?} {topic} {size}");
            assert_eq!(
                owned.s.take_transmit(),
                plain.s.take_transmit(),
                "{v:?} {topic} {size}"
            );
        }
    }
}

#[test]
fn mqtt_3_1_2_24_an_alias_is_left_out_when_it_would_not_fit() {
    // The packet without an alias is exactly the client's maximum: a new alias would add
    // three bytes.
    let full = publish("t/long", QoS::AtMostOnce, 0).encoded_len(Version::V5) as u32;
    let props = Properties {
        topic_alias_maximum: Some(5),
        maximum_packet_size: Some(full),
        ..Properties::default()
    };
    let mut h = Harness::connect(Version::V5, 0, props);
    h.s.publish(publish("t/long", QoS::AtMostOnce, 0))
        .expect("fits without an alias");
    let out = h.s.take_transmit();
    assert_eq!(
        out.len(),
        full as usize,
        "sent whole, no bigger than the maximum"
    );
    let mut buf = BytesMut::from(&out[..]);
    let Some(Packet::Publish(p)) =
        Packet::read(&mut buf, Version::V5, usize::MAX).expect("decodes")
    else {
        panic!("a publish expected")
    };
    assert_eq!(
        (p.topic.as_str(), p.properties.topic_alias),
        ("t/long", None)
    );
    // No alias was recorded either: the next message of the topic is sent the same way.
    h.s.publish(publish("t/long", QoS::AtMostOnce, 0))
        .expect("fits");
    assert_eq!(h.s.take_transmit(), out);
}

#[test]
fn mqtt_3_1_2_25_oversized_publish_is_not_sent() {
    let props = Properties {
        maximum_packet_size: Some(64),
        ..Properties::default()
    };
    let mut h = Harness::connect(Version::V5, 0, props);
    let mut p = publish("t", QoS::AtLeastOnce, 0);
    p.payload = Bytes::from(vec![0u8; 100]);
    assert_eq!(h.s.publish(p), Err(SendError::TooLarge));
    assert!(h.recv().is_empty());
    assert_eq!(h.s.inflight_len(), 0);
}

#[test]
fn resumed_session_resends_with_dup_and_pubrel() {
    let mut h = Harness::connect(Version::V5, 0, Properties::default());
    let a = h.s.publish(publish("t", QoS::AtLeastOnce, 0)).expect("a");
    let b = h.s.publish(publish("t", QoS::ExactlyOnce, 0)).expect("b");
    h.send(Packet::PubRec(PubResponse::new(b))).expect("pubrec");
    let saved = std::mem::replace(
        &mut h.s,
        ServerSession::new(SessionLimits::default(), h.now),
    )
    .into_inflight();
    assert_eq!(saved.outbound.len(), 2);

    let mut h2 = Harness {
        s: ServerSession::new(SessionLimits::default(), h.now),
        now: h.now,
        v: Version::V5,
    };
    let c = Connect {
        version: Version::V5,
        client_id: "c1".into(),
        clean_start: false,
        keep_alive: 0,
        properties: Properties::default(),
        will: None,
        username: None,
        password: None,
    };
    h2.send(Packet::Connect(Box::new(c.clone())))
        .expect("connect");
    h2.s.poll_event();
    h2.s.accept(
        &c,
        Accept {
            session_present: true,
            resume: Some(saved),
            ..Accept::default()
        },
    );
    let out = h2.recv();
    assert!(matches!(&out[0], Packet::ConnAck(a) if a.session_present));
    assert!(matches!(&out[1], Packet::Publish(p) if p.dup && p.pkid == a));
    assert!(matches!(&out[2], Packet::PubRel(r) if r.pkid == b));
}

#[test]
fn mqtt_3_1_2_2_unsupported_version_gets_connack_return_code_1() {
    let now = Instant::now();
    let mut s = ServerSession::new(SessionLimits::default(), now);
    // CONNECT, protocol name MQTT, level 9.
    let mut buf = BytesMut::from(
        &[
            0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x09, 0x02, 0x00, 0x3C, 0x00, 0x00,
        ][..],
    );
    let err = s.handle_read(now, &mut buf).expect_err("unsupported");
    assert_eq!(err.code, ReasonCode::UnsupportedProtocolVersion);
    assert_eq!(&s.take_transmit()[..], &[0x20, 0x02, 0x00, 0x01]);
}

fn auth(code: ReasonCode, method: &str, data: &'static [u8]) -> Packet {
    Packet::Auth(Auth {
        code,
        properties: Properties {
            authentication_method: Some(method.into()),
            authentication_data: Some(Bytes::from_static(data)),
            ..Properties::default()
        },
    })
}

#[test]
fn enhanced_auth_exchange_before_connack() {
    let now = Instant::now();
    let mut h = Harness {
        s: ServerSession::new(SessionLimits::default(), now),
        now,
        v: Version::V5,
    };
    let mut c = Box::new(Connect {
        version: Version::V5,
        client_id: "c1".into(),
        clean_start: true,
        keep_alive: 0,
        properties: Properties::default(),
        will: None,
        username: None,
        password: None,
    });
    c.properties.authentication_method = Some("SCRAM-SHA-256".into());
    h.send(Packet::Connect(c)).expect("connect");
    let Some(Event::Connect(c)) = h.s.poll_event() else {
        panic!("no connect event")
    };
    assert_eq!(h.s.auth_method(), Some("SCRAM-SHA-256"));
    h.s.auth_continue(Bytes::from_static(b"challenge"));
    let out = h.recv();
    assert!(matches!(out.as_slice(), [Packet::Auth(a)]
        if a.code == ReasonCode::ContinueAuthentication
            && a.properties.authentication_method.as_deref() == Some("SCRAM-SHA-256")));
    // Only AUTH with the same method is acceptable now.
    h.send(auth(
        ReasonCode::ContinueAuthentication,
        "SCRAM-SHA-256",
        b"proof",
    ))
    .expect("auth step");
    assert!(
        matches!(h.s.poll_event(), Some(Event::Auth(a)) if a.properties.authentication_data.as_deref() == Some(&b"proof"[..]))
    );
    h.s.accept(&c, Accept::default());
    assert!(matches!(h.recv().as_slice(), [Packet::ConnAck(a)] if a.code == ReasonCode::Success));

    // Re-authentication while connected.
    h.send(auth(ReasonCode::ReAuthenticate, "SCRAM-SHA-256", b"first"))
        .expect("reauth");
    assert!(
        matches!(h.s.poll_event(), Some(Event::Auth(a)) if a.code == ReasonCode::ReAuthenticate)
    );
    h.s.auth_continue(Bytes::from_static(b"challenge 2"));
    h.send(auth(
        ReasonCode::ContinueAuthentication,
        "SCRAM-SHA-256",
        b"final",
    ))
    .expect("reauth step");
    assert!(matches!(h.s.poll_event(), Some(Event::Auth(_))));
    h.s.auth_success(None);
    let out = h.recv();
    assert!(matches!(out.last(), Some(Packet::Auth(a)) if a.code == ReasonCode::Success));
    // The wrong method is a protocol error.
    let v = h
        .send(auth(ReasonCode::ReAuthenticate, "PLAIN", b""))
        .expect_err("other method");
    assert_eq!(v.code, ReasonCode::ProtocolError);
}

#[test]
fn auth_without_a_method_in_connect_is_a_protocol_error() {
    let mut h = Harness::connect(Version::V5, 0, Properties::default());
    let v = h
        .send(auth(ReasonCode::ReAuthenticate, "SCRAM-SHA-256", b""))
        .expect_err("no method in CONNECT");
    assert_eq!(v.code, ReasonCode::ProtocolError);
}

#[test]
fn packets_other_than_auth_during_the_exchange_are_refused() {
    let now = Instant::now();
    let mut h = Harness {
        s: ServerSession::new(SessionLimits::default(), now),
        now,
        v: Version::V5,
    };
    let mut c = Box::new(Connect {
        version: Version::V5,
        client_id: "c1".into(),
        clean_start: true,
        keep_alive: 0,
        properties: Properties::default(),
        will: None,
        username: None,
        password: None,
    });
    c.properties.authentication_method = Some("SCRAM-SHA-256".into());
    h.send(Packet::Connect(c)).expect("connect");
    h.s.poll_event();
    h.s.auth_continue(Bytes::new());
    let v = h.send(Packet::PingReq).expect_err("not AUTH");
    assert_eq!(v.code, ReasonCode::ProtocolError);
}

#[test]
fn held_output_waits_for_release() {
    let mut h = Harness::connect(Version::V5, 0, Properties::default());
    h.send(Packet::PingReq).expect("ping");
    h.s.hold_transmit();
    h.s.publish(publish("t", QoS::ExactlyOnce, 0))
        .expect("publish");
    assert!(h.s.has_transmit(), "the PINGRESP before the barrier may go");
    let out = h.recv();
    assert!(matches!(out.as_slice(), [Packet::PingResp]), "{out:?}");
    assert!(!h.s.has_transmit(), "the QoS 2 PUBLISH is held");
    assert!(h.s.pending_transmit() > 0);
    h.s.release_transmit();
    assert!(matches!(h.recv().as_slice(), [Packet::Publish(p)] if p.qos == QoS::ExactlyOnce));
}

#[test]
fn pubrel_waits_for_release_when_asked() {
    let mut h = Harness::connect(Version::V5, 0, Properties::default());
    h.s.set_hold_qos2_steps(true);
    let id = h.s.publish(publish("t", QoS::ExactlyOnce, 0)).expect("a");
    assert!(matches!(h.recv().as_slice(), [Packet::Publish(_)]));
    h.send(Packet::PingReq).expect("ping");
    h.send(Packet::PubRec(PubResponse::new(id)))
        .expect("pubrec");
    assert_eq!(h.s.poll_event(), Some(Event::Received { pkid: id }));
    let out = h.recv();
    assert!(matches!(out.as_slice(), [Packet::PingResp]), "{out:?}");
    assert!(!h.s.has_transmit(), "the PUBREL is held");
    h.s.release_transmit();
    assert!(matches!(h.recv().as_slice(), [Packet::PubRel(r)] if r.pkid == id));
    // Off (the default), the PUBREL goes at once.
    h.s.set_hold_qos2_steps(false);
    let id = h.s.publish(publish("t", QoS::ExactlyOnce, 0)).expect("b");
    h.recv();
    h.send(Packet::PubRec(PubResponse::new(id)))
        .expect("pubrec");
    assert!(matches!(h.recv().as_slice(), [Packet::PubRel(r)] if r.pkid == id));
}

#[test]
fn pubcomp_waits_for_release_when_asked() {
    let mut h = Harness::connect(Version::V5, 0, Properties::default());
    h.s.set_hold_qos2_steps(true);
    h.send(Packet::Publish(publish("a", QoS::ExactlyOnce, 1)))
        .expect("publish");
    assert!(matches!(h.s.poll_event(), Some(Event::Publish(_))));
    h.s.ack_publish(1, ReasonCode::Success);
    assert!(matches!(h.recv().as_slice(), [Packet::PubRec(_)]));
    h.send(Packet::PubRel(PubResponse::new(1))).expect("pubrel");
    assert_eq!(h.s.poll_event(), Some(Event::Released { pkid: 1 }));
    assert!(!h.s.has_transmit(), "the PUBCOMP is held");
    h.s.release_transmit();
    assert!(matches!(h.recv().as_slice(), [Packet::PubComp(c)] if c.pkid == 1));
}
