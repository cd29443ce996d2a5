//! Lingering close (issue 11, item 11): after a failed CONNACK or a DISCONNECT with a
//! reason code, the broker half-closes and keeps reading (and discarding) what the client
//! still sends for a short while, so the client's writes do not provoke a reset that could
//! destroy the reason code before it is read.

use bytes::{Bytes, BytesMut};
use switchboard_proto::*;
use switchboard_tests::{TempDir, TestBroker, connect_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn read_packet(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Packet> {
    loop {
        if let Some(p) = Packet::read(buf, Version::V5, usize::MAX).expect("well-formed") {
            return Some(p);
        }
        let n = tokio::time::timeout(switchboard_tests::WAIT, s.read_buf(buf))
            .await
            .expect("in time")
            .ok()?;
        if n == 0 {
            return None;
        }
    }
}

/// Writes PINGREQs after the broker has answered and half-closed: none may fail.
async fn keep_writing(s: &mut TcpStream) {
    for i in 0..50 {
        s.write_all(&[0xC0, 0x00])
            .await
            .unwrap_or_else(|e| panic!("write {i} after the broker's half-close failed: {e}"));
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn failed_connack_is_followed_by_half_close_and_linger() {
    let dir = TempDir::new("linger");
    let file = dir.path().join("passwd");
    let hash = switchboard_broker::auth::hash_password("right").expect("hash");
    std::fs::write(&file, format!("u:{hash}\n")).expect("write");
    let b = TestBroker::start_with(move |c| {
        c.allow_anonymous = false;
        c.password_file = Some(file);
    })
    .await;
    let mut s = TcpStream::connect(b.addr).await.expect("connect");
    let mut c = connect_packet(Version::V5, "lingerer");
    c.username = Some("u".into());
    c.password = Some(Bytes::from_static(b"wrong"));
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(c)).encode(Version::V5, &mut out);
    s.write_all(&out).await.expect("write");
    let mut buf = BytesMut::new();
    assert!(
        matches!(read_packet(&mut s, &mut buf).await, Some(Packet::ConnAck(a)) if a.code == ReasonCode::BadUserNameOrPassword)
    );
    assert!(read_packet(&mut s, &mut buf).await.is_none(), "half-closed");
    keep_writing(&mut s).await;
    b.handle.shutdown().await;
}

#[tokio::test]
async fn disconnect_with_reason_is_followed_by_half_close_and_linger() {
    let b = TestBroker::start_with(|c| c.limits.max_packet_size = 1024).await;
    let mut s = TcpStream::connect(b.addr).await.expect("connect");
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(connect_packet(Version::V5, "big"))).encode(Version::V5, &mut out);
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t".into(),
        pkid: 0,
        properties: Properties::default(),
        payload: Bytes::from(vec![0u8; 4096]),
    })
    .encode(Version::V5, &mut out);
    s.write_all(&out).await.expect("write");
    let mut buf = BytesMut::new();
    assert!(matches!(
        read_packet(&mut s, &mut buf).await,
        Some(Packet::ConnAck(_))
    ));
    assert!(
        matches!(read_packet(&mut s, &mut buf).await, Some(Packet::Disconnect(d)) if d.code == ReasonCode::PacketTooLarge)
    );
    assert!(read_packet(&mut s, &mut buf).await.is_none(), "half-closed");
    keep_writing(&mut s).await;
    b.handle.shutdown().await;
}
