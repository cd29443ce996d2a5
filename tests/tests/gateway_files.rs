//! The REST gateway's file store against a real broker: signed multipart uploads, image
//! thumbnails and signed, expiring download links. Split from `gateway.rs`.

use std::net::SocketAddr;

use serde_json::json;
use switchboard_client::Endpoint;
use switchboard_gateway::{DEFAULT_BODY_LIMIT, Gateway, GatewayConfig};
use switchboard_tests::gateway_api::{App, PNG, signed, upload};
use switchboard_tests::http::request;
use switchboard_tests::im::{ImBroker, SERVICE_SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_upload_with_thumbnails_and_signed_expiring_download_links() {
    let b = ImBroker::start().await;
    let dir = switchboard_tests::TempDir::new("files");
    let gw = Gateway::start(GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        broker: vec![Endpoint::Tcp(b.addr)],
        service_secret: SERVICE_SECRET.into(),
        client_id: "gateway-files".into(),
        body_limit: DEFAULT_BODY_LIMIT,
        files_dir: Some(dir.path().to_path_buf()),
    })
    .await
    .expect("gateway");
    let app = App::create(&b, "acme").await;
    let a = upload(&gw, &app, "red.png", "image/png", PNG).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let f = a.json();
    assert_eq!(
        (
            f["mime"].as_str(),
            f["width"].as_u64(),
            f["height"].as_u64()
        ),
        (Some("image/png"), Some(2), Some(2))
    );
    assert_eq!(f["size"].as_u64(), Some(PNG.len() as u64));
    let url = f["url"].as_str().expect("url").to_owned();
    let got = request(gw.addr(), "GET", &url, &[], b"").await;
    assert_eq!(got.status, 200);
    assert!(
        got.headers
            .to_ascii_lowercase()
            .contains("content-type: image/png")
    );
    let thumb = f["thumbnail_url"].as_str().expect("thumbnail").to_owned();
    let t = request(gw.addr(), "GET", &thumb, &[], b"").await;
    assert_eq!(t.status, 200);
    // A tampered or made-up link is refused; so is a file claiming to be an image that
    // is not, and a type not on the list.
    let forged = url.replace("sig=", "sig=0");
    assert_eq!(
        request(gw.addr(), "GET", &forged, &[], b"").await.status,
        403
    );
    let expired = format!("/files/{}?exp=1&sig=00", f["file_id"].as_str().expect("id"));
    assert_eq!(
        request(gw.addr(), "GET", &expired, &[], b"").await.status,
        403
    );
    let a = upload(&gw, &app, "x.png", "image/png", b"not an image at all").await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = upload(&gw, &app, "x.exe", "application/x-msdownload", b"MZ....").await;
    assert_eq!(
        (a.status, a.json()["code"].as_u64()),
        (415, Some(41500)),
        "{}",
        a.body
    );
    // The same bytes again: the same id (stored once).
    let again = upload(&gw, &app, "copy.png", "image/png", PNG).await;
    assert_eq!(again.json()["file_id"], f["file_id"]);

    // The uploaded image goes out as an image message a device receives with its link.
    b.user(app.tenant, "alice").await;
    b.user(app.tenant, "bob").await;
    let mut bob = b.device(app.tenant, "bob", "bob-phone").await;
    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/messages/private",
        &json!({"from": "alice", "to": "bob", "content": {"type": "image", "url": url,
               "sha256": f["sha256"], "size": f["size"], "width": 2, "height": 2,
               "thumbnail_url": thumb}}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = bob.message().await;
    match m.content.and_then(|c| c.body) {
        Some(switchboard_proto::im::content::Body::Image(i)) => {
            assert_eq!(i.url, url);
            let fetched = request(gw.addr(), "GET", &i.url, &[], b"").await;
            assert_eq!(fetched.status, 200, "bob's device fetches the image");
        }
        other => panic!("expected an image, got {other:?}"),
    }
    gw.stop().await;
    b.stop().await;
}
