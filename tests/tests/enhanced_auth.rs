//! MQTT 5 enhanced authentication (issue 11, item 4): SCRAM-SHA-256 in AUTH packets at
//! CONNECT and for re-authentication, driven by our own client side ([`ScramClient`]) over a
//! raw socket; a wrong proof, an unknown method; Response Information; server redirection.

use bytes::Bytes;
use switchboard_broker::auth::{ScramClient, ScramCredential};
use switchboard_proto::*;
use switchboard_tests::{RawClient, TempDir, TestBroker, connect_packet};

const METHOD: &str = "SCRAM-SHA-256";

async fn scram_broker(dir: &TempDir) -> TestBroker {
    let file = dir.path().join("passwd");
    let cred = ScramCredential::new(b"secret", 4096).expect("credential");
    std::fs::write(&file, format!("alice:{}\n", cred.to_phc_like())).expect("write");
    TestBroker::start_with(move |c| {
        c.allow_anonymous = false;
        c.password_file = Some(file);
    })
    .await
}

fn auth_packet(code: ReasonCode, data: Vec<u8>) -> Packet {
    Packet::Auth(Auth {
        code,
        properties: Properties {
            authentication_method: Some(METHOD.into()),
            authentication_data: Some(data.into()),
            ..Properties::default()
        },
    })
}

fn scram_connect(id: &str, client_first: Vec<u8>) -> Connect {
    let mut c = connect_packet(Version::V5, id);
    c.properties.authentication_method = Some(METHOD.into());
    c.properties.authentication_data = Some(client_first.into());
    c
}

/// The server's AUTH 0x18 challenge data.
async fn challenge(c: &mut RawClient) -> Bytes {
    match c.recv().await {
        Some(Packet::Auth(a)) => {
            assert_eq!(a.code, ReasonCode::ContinueAuthentication);
            assert_eq!(a.properties.authentication_method.as_deref(), Some(METHOD));
            a.properties.authentication_data.expect("challenge data")
        }
        other => panic!("expected AUTH, got {other:?}"),
    }
}

/// Connects as alice with SCRAM; returns the connected client.
async fn scram_login(b: &TestBroker, id: &str, password: &[u8]) -> (RawClient, ConnAck) {
    let mut scram = ScramClient::new("alice", password).expect("client");
    let mut c = RawClient::open(b.addr, Version::V5).await;
    c.send(&Packet::Connect(Box::new(scram_connect(
        id,
        scram.client_first(),
    ))))
    .await;
    let first = challenge(&mut c).await;
    let last = scram.client_final(&first).expect("client final");
    c.send(&auth_packet(ReasonCode::ContinueAuthentication, last))
        .await;
    let ack = match c.recv().await {
        Some(Packet::ConnAck(a)) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    if ack.code == ReasonCode::Success {
        assert_eq!(
            ack.properties.authentication_method.as_deref(),
            Some(METHOD)
        );
        let server_final = ack.properties.authentication_data.clone().expect("data");
        scram
            .verify_server(&server_final)
            .expect("the broker proves it knows the credential");
    }
    (c, ack)
}

#[tokio::test]
async fn scram_connect_then_reauthenticate() {
    let dir = TempDir::new("scram");
    let b = scram_broker(&dir).await;
    let (mut c, ack) = scram_login(&b, "s1", b"secret").await;
    assert_eq!(ack.code, ReasonCode::Success);

    // Re-authentication while connected; the connection keeps working afterwards.
    let mut scram = ScramClient::new("alice", b"secret").expect("client");
    c.send(&auth_packet(
        ReasonCode::ReAuthenticate,
        scram.client_first(),
    ))
    .await;
    let first = challenge(&mut c).await;
    c.send(&auth_packet(
        ReasonCode::ContinueAuthentication,
        scram.client_final(&first).expect("final"),
    ))
    .await;
    match c.recv().await {
        Some(Packet::Auth(a)) => {
            assert_eq!(a.code, ReasonCode::Success);
            scram
                .verify_server(&a.properties.authentication_data.expect("data"))
                .expect("server signature");
        }
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
    c.send(&Packet::PingReq).await;
    assert!(matches!(c.recv().await, Some(Packet::PingResp)));

    // A re-authentication with the wrong password ends the connection with 0x87.
    let mut scram = ScramClient::new("alice", b"wrong").expect("client");
    c.send(&auth_packet(
        ReasonCode::ReAuthenticate,
        scram.client_first(),
    ))
    .await;
    let first = challenge(&mut c).await;
    c.send(&auth_packet(
        ReasonCode::ContinueAuthentication,
        scram.client_final(&first).expect("final"),
    ))
    .await;
    let seen = c.expect_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.code == ReasonCode::NotAuthorized),
        "{seen:?}"
    );
    b.handle.shutdown().await;
}

#[tokio::test]
async fn scram_wrong_proof_and_unknown_user_get_0x86() {
    let dir = TempDir::new("scram-bad");
    let b = scram_broker(&dir).await;
    let (mut c, ack) = scram_login(&b, "s2", b"not the password").await;
    assert_eq!(ack.code, ReasonCode::BadUserNameOrPassword);
    c.expect_closed().await;
    let mut scram = ScramClient::new("mallory", b"secret").expect("client");
    let mut c = RawClient::open(b.addr, Version::V5).await;
    c.send(&Packet::Connect(Box::new(scram_connect(
        "s3",
        scram.client_first(),
    ))))
    .await;
    let first = challenge(&mut c).await;
    c.send(&auth_packet(
        ReasonCode::ContinueAuthentication,
        scram.client_final(&first).expect("final"),
    ))
    .await;
    assert!(
        matches!(c.recv().await, Some(Packet::ConnAck(a)) if a.code == ReasonCode::BadUserNameOrPassword)
    );
    b.handle.shutdown().await;
}

#[tokio::test]
async fn unknown_authentication_method_gets_0x8c() {
    let dir = TempDir::new("scram-method");
    let b = scram_broker(&dir).await;
    let mut c = connect_packet(Version::V5, "m1");
    c.properties.authentication_method = Some("GS2-KRB5".into());
    let (_, ack) = RawClient::connect(b.addr, c).await;
    assert!(
        matches!(&ack, Packet::ConnAck(a) if a.code == ReasonCode::BadAuthenticationMethod),
        "{ack:?}"
    );
    b.handle.shutdown().await;
}

#[tokio::test]
async fn response_information_when_requested() {
    let b = TestBroker::start().await;
    let mut c = connect_packet(Version::V5, "asker");
    c.properties.request_response_information = Some(1);
    let (_, ack) = RawClient::connect(b.addr, c).await;
    let Packet::ConnAck(ack) = ack else {
        panic!("{ack:?}")
    };
    assert_eq!(
        ack.properties.response_information.as_deref(),
        Some("reply/asker/")
    );
    let (_, ack) = RawClient::connect(b.addr, connect_packet(Version::V5, "quiet")).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.properties.response_information.is_none()));
    b.handle.shutdown().await;
}

#[tokio::test]
async fn server_redirection_in_connack_and_disconnect() {
    let b = TestBroker::start_with(|c| {
        c.redirect.server_reference = Some("other.example:1883".into());
        c.redirect.permanent = true;
    })
    .await;
    let (_, ack) = RawClient::connect(b.addr, connect_packet(Version::V5, "r1")).await;
    assert!(
        matches!(&ack, Packet::ConnAck(a) if a.code == ReasonCode::ServerMoved
            && a.properties.server_reference.as_deref() == Some("other.example:1883")),
        "{ack:?}"
    );
    let (_, ack) = RawClient::connect(b.addr, connect_packet(Version::V3_1_1, "r2")).await;
    assert!(
        matches!(&ack, Packet::ConnAck(a) if a.code.v3_connack_code() == 3),
        "3.1.1: server unavailable: {ack:?}"
    );
    b.handle.shutdown().await;

    // A connected client asked to move gets DISCONNECT 0x9C with the Server Reference.
    let b = TestBroker::start().await;
    let (mut c, _) = RawClient::connect(b.addr, connect_packet(Version::V5, "mover")).await;
    assert!(b.handle.state().redirect("mover", "node-2:1883"));
    let seen = c.expect_closed().await;
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.code == ReasonCode::UseAnotherServer
            && d.properties.server_reference.as_deref() == Some("node-2:1883")),
        "{seen:?}"
    );
    b.handle.shutdown().await;
}
