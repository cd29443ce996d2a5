//! The operator API over a real socket: metrics, clients, kick, retained, and the token
//! (which `/metrics` needs too, unless `admin.metrics_public`).

use std::net::SocketAddr;

use switchboard_proto::*;
use switchboard_tests::{RawClient, TestBroker, connect_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut r = String::new();
    tokio::time::timeout(switchboard_tests::WAIT, s.read_to_string(&mut r))
        .await
        .expect("answer")
        .expect("read");
    let status = r
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = r
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_lists_kicks_and_exports_metrics() {
    let b = TestBroker::start_with(|c| {
        c.admin.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.admin.token = Some("s3cret-token".into());
    })
    .await;
    let admin = b.handle.addrs().admin.expect("admin listening");
    let (mut c, _) = RawClient::connect(b.addr, connect_packet(Version::V5, "ops-visible")).await;
    c.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![("ops/#".into(), SubscriptionOptions::default())],
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));

    let (status, _) = http(admin, "GET", "/api/v1/clients", None).await;
    assert_eq!(status, 401, "no token, no data");
    let (status, _) = http(admin, "GET", "/api/v1/clients", Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, body) = http(admin, "GET", "/api/v1/clients", Some("s3cret-token")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"client_id\":\"ops-visible\"") && body.contains("ops/#"),
        "{body}"
    );

    let (status, _) = http(admin, "GET", "/metrics", None).await;
    assert_eq!(status, 401, "/metrics needs the token by default");
    let (status, _) = http(admin, "GET", "/metrics", Some("s3cret-tokem")).await;
    assert_eq!(status, 401);
    let (status, body) = http(admin, "GET", "/metrics", Some("s3cret-token")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("switchboard_clients_connected{transport=\"tcp\"} 1"),
        "{body}"
    );

    let (status, _) = http(
        admin,
        "DELETE",
        "/api/v1/clients/ops-visible",
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(status, 204);
    let seen = c.expect_closed().await;
    assert!(
        seen.iter().any(
            |p| matches!(p, Packet::Disconnect(d) if d.code == ReasonCode::AdministrativeAction)
        ),
        "kicked client gets DISCONNECT 0x98: {seen:?}"
    );
    let (status, body) = http(
        admin,
        "DELETE",
        "/api/v1/clients/nobody",
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(status, 404);
    assert!(body.contains("not_found"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_made_public() {
    let b = TestBroker::start_with(|c| {
        c.admin.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.admin.token = Some("s3cret-token".into());
        c.admin.metrics_public = true;
    })
    .await;
    let admin = b.handle.addrs().admin.expect("admin listening");
    let (status, body) = http(admin, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("switchboard_connections_total"), "{body}");
    let (status, _) = http(admin, "GET", "/api/v1/clients", None).await;
    assert_eq!(status, 401, "the rest of the API still needs the token");
}
