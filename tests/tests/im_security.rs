//! Two abuses of shared broker resources by one client, each shown on the wire:
//! - one device flooding the IM service with requests (QoS 0, bounded by nothing else)
//!   must not use up the budget of every other device (per-connection bound);
//! - a client of another tenant, or an anonymous one, that takes an IM device's client id
//!   first must not lock the device out (tenant sessions live in their own key space,
//!   `$t/{tenant}/{client_id}`), and kicks reach only the tenant's device.

use bytes::Bytes;
use prost::Message as _;
use serde_json::json;
use switchboard_proto::im;
use switchboard_proto::{
    Packet, Properties, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions, Version,
};
use switchboard_tests::im::{ImBroker, SERVICE_SECRET};
use switchboard_tests::{RawClient, WAIT, connect_packet};

/// Connects a raw MQTT 5 client with `password` (an IM token or the service secret) and
/// `username`; returns it once the broker said yes.
async fn raw_login(b: &ImBroker, id: &str, username: Option<&str>, password: &str) -> RawClient {
    let mut c = connect_packet(Version::V5, id);
    c.username = username.map(str::to_owned);
    c.password = Some(Bytes::from(password.to_owned()));
    let (raw, ack) = RawClient::connect(b.addr, c).await;
    assert!(
        matches!(&ack, Packet::ConnAck(a) if a.code == ReasonCode::Success),
        "{id}: {ack:?}"
    );
    raw
}

async fn subscribe(raw: &mut RawClient, filter: &str, qos: QoS) {
    raw.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![(
            filter.into(),
            SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        )],
        properties: Properties::default(),
    }))
    .await;
    let ack = raw.recv().await;
    assert!(
        matches!(&ack, Some(Packet::SubAck(a)) if !a.codes[0].is_error()),
        "{ack:?}"
    );
}

fn request(op: &str, qos: QoS, pkid: u16, body: Vec<u8>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: format!("$im/req/{op}"),
        pkid,
        properties: Properties::default(),
        payload: Bytes::from(body),
    })
}

/// The PUBACK of packet `pkid`, skipping anything else.
async fn puback(raw: &mut RawClient, pkid: u16) -> ReasonCode {
    loop {
        match raw.recv().await {
            Some(Packet::PubAck(a)) if a.pkid == pkid => return a.code,
            Some(_) => {}
            None => panic!("connection closed while waiting for PUBACK {pkid}"),
        }
    }
}

/// A PINGREQ is answered: the connection is still up.
async fn alive(raw: &mut RawClient) -> bool {
    raw.send(&Packet::PingReq).await;
    loop {
        match raw.recv().await {
            Some(Packet::PingResp) => return true,
            Some(Packet::Disconnect(_)) | None => return false,
            Some(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_flooding_qos0_requests_cannot_use_up_the_other_devices_budget() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    // Sends wait for the app server's before-send verdict, which never comes (within the
    // test): each one stays in flight in the service.
    b.im.admin_request(
        "hooks/set",
        json!({"tenant": t, "url": "http://127.0.0.1:9/hook", "secret": "s",
               "events": ["before_send"], "timeout_ms": 10000, "fail_open": false})
        .to_string()
        .as_bytes(),
    )
    .await
    .expect("hooks set");
    // A "gateway" takes the webhook events and never answers them.
    let mut gateway = raw_login(&b, "gateway-mute", Some("$service"), SERVICE_SECRET).await;
    subscribe(&mut gateway, "$im/hooks/#", QoS::AtMostOnce).await;

    let alice_token = b.im.issue_token(t, "alice", "", 600).expect("token");
    let mut alice = raw_login(&b, "alice-flood", None, &alice_token).await;
    // More QoS 0 sends than the whole service's budget (4,096).
    let mut burst = bytes::BytesMut::new();
    for i in 0..5000 {
        let req = im::SendRequest {
            to: "bob".into(),
            client_msg_id: format!("flood-{i}"),
            content: Some(switchboard_tests::im::text("spam")),
            ..im::SendRequest::default()
        };
        request("send", QoS::AtMostOnce, 0, req.encode_to_vec()).encode(Version::V5, &mut burst);
    }
    alice.send_bytes(&burst).await;
    // Its next QoS 1 request comes after all of them: over its own bound, refused.
    alice
        .send(&request(
            "conversations",
            QoS::AtLeastOnce,
            1,
            im::ConversationsRequest::default().encode_to_vec(),
        ))
        .await;
    assert_eq!(
        puback(&mut alice, 1).await,
        ReasonCode::QuotaExceeded,
        "the flooding device is refused"
    );
    // Another device of the tenant is served as usual.
    let bob_token = b.im.issue_token(t, "bob", "", 600).expect("token");
    let mut bob = raw_login(&b, "bob-phone", None, &bob_token).await;
    bob.send(&request(
        "conversations",
        QoS::AtLeastOnce,
        1,
        im::ConversationsRequest::default().encode_to_vec(),
    ))
    .await;
    assert_eq!(
        puback(&mut bob, 1).await,
        ReasonCode::Success,
        "another device still gets its requests through"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_taken_elsewhere_does_not_lock_an_im_device_out_and_kicks_stay_in_the_tenant() {
    let b = ImBroker::start().await;
    let acme = b.tenant("acme").await;
    let other = b.tenant("other").await;
    let alice = b.user(acme, "alice").await;
    b.user(other, "alice").await;
    // An anonymous client and another tenant's device take the id first.
    let (mut squatter, ack) =
        RawClient::connect(b.addr, connect_packet(Version::V5, "alice-phone")).await;
    assert!(matches!(&ack, Packet::ConnAck(a) if a.code == ReasonCode::Success));
    let other_token = b.im.issue_token(other, "alice", "", 600).expect("token");
    let mut other_device = raw_login(&b, "alice-phone", None, &other_token).await;
    // The device of acme's alice still logs in with its own id (before: 0x85).
    let token = b.im.issue_token(acme, "alice", "", 600).expect("token");
    let mut device = raw_login(&b, "alice-phone", None, &token).await;
    subscribe(&mut device, "$im/inbox", QoS::AtLeastOnce).await;
    assert!(
        alive(&mut squatter).await,
        "the anonymous client was not taken over"
    );
    assert!(
        alive(&mut other_device).await,
        "nor the other tenant's device"
    );

    // Signing acme's alice out disconnects her device, and only hers.
    b.im.kick_user(acme, alice, "banned");
    let seen = tokio::time::timeout(WAIT, device.expect_closed())
        .await
        .expect("acme's device is disconnected");
    assert!(
        seen.iter().any(
            |p| matches!(p, Packet::Disconnect(d) if d.code == ReasonCode::AdministrativeAction)
        ),
        "{seen:?}"
    );
    assert!(alive(&mut squatter).await, "the anonymous client stays");
    assert!(
        alive(&mut other_device).await,
        "the other tenant's device stays"
    );

    // Outside a tenant, an id in the tenants' key space is refused.
    let (_c, ack) =
        RawClient::connect(b.addr, connect_packet(Version::V5, "$t/1/alice-phone")).await;
    assert!(
        matches!(&ack, Packet::ConnAck(a) if a.code == ReasonCode::ClientIdentifierNotValid),
        "{ack:?}"
    );
    b.stop().await;
}
