//! The REST gateway against a real broker: signed requests over a real socket, their
//! effects seen by real MQTT devices, and every way a signature can be wrong.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use switchboard_client::Endpoint;
use switchboard_gateway::{DEFAULT_BODY_LIMIT, Gateway, GatewayConfig};
use switchboard_tests::http::{Answer, request};
use switchboard_tests::im::{Device, ImBroker, SERVICE_SECRET, text_of};

struct App {
    key: String,
    secret: String,
    tenant: u64,
}

async fn gateway(b: &ImBroker) -> Gateway {
    Gateway::start(GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        broker: vec![Endpoint::Tcp(b.addr)],
        service_secret: SERVICE_SECRET.into(),
        client_id: "gateway-test".into(),
        body_limit: DEFAULT_BODY_LIMIT,
        files_dir: None,
    })
    .await
    .expect("gateway starts")
}

async fn app(b: &ImBroker) -> App {
    let t = b.im.create_tenant("acme", None).await.expect("tenant");
    App {
        key: t.app_key.clone(),
        secret: t.app_secret.clone(),
        tenant: t.id,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// HMAC-SHA256(secret, nonce + timestamp + body), hex: computed here with ring directly,
/// independently of the gateway's code.
fn sign(secret: &str, nonce: &str, ts: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = Vec::new();
    msg.extend_from_slice(nonce.as_bytes());
    msg.extend_from_slice(ts.as_bytes());
    msg.extend_from_slice(body);
    ring::hmac::sign(&key, &msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A signed request with a fresh nonce.
async fn signed(gw: &Gateway, app: &App, method: &str, path: &str, body: &Value) -> Answer {
    let nonce = format!(
        "n{}",
        NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    signed_with(
        gw,
        app,
        method,
        path,
        body.to_string().as_bytes(),
        &nonce,
        now(),
    )
    .await
}

async fn signed_with(
    gw: &Gateway,
    app: &App,
    method: &str,
    path: &str,
    body: &[u8],
    nonce: &str,
    ts: u64,
) -> Answer {
    let ts = ts.to_string();
    let headers = [
        ("App-Key", app.key.clone()),
        ("Nonce", nonce.to_owned()),
        ("Timestamp", ts.clone()),
        ("Signature", sign(&app.secret, nonce, &ts, body)),
        ("Content-Type", "application/json".to_owned()),
    ];
    request(gw.addr(), method, path, &headers, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_server_registers_users_issues_tokens_and_sends_messages_devices_receive() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = app(&b).await;

    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/users",
        &json!({"users": [{"user_id": "alice", "name": "Alice"}, {"user_id": "bob"}]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["users"].as_array().map(Vec::len), Some(2));

    // A token from the REST API logs bob's phone in over MQTT.
    let a = signed(&gw, &app, "POST", "/v1/users/bob/token", &json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let token = a.json()["token"].as_str().expect("token").to_owned();
    let mut bob = Device::connect(b.addr, "bob", "bob-phone", &token).await;

    // A message alice "sends" through the app server reaches bob's device.
    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/messages/private",
        &json!({"from": "alice", "to": "bob", "content": {"type": "text", "text": "hello from the server"}, "client_msg_id": "m1"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let conv = a.json()["conversation"].as_str().expect("conv").to_owned();
    let m = bob.message().await;
    assert_eq!(
        (text_of(&m), m.from.as_str()),
        ("hello from the server", "alice")
    );

    // A resend with the same client_msg_id is the same message.
    let again = signed(
        &gw,
        &app,
        "POST",
        "/v1/messages/private",
        &json!({"from": "alice", "to": "bob", "content": {"type": "text", "text": "hello from the server"}, "client_msg_id": "m1"}),
    )
    .await;
    assert_eq!(again.json()["duplicate"], json!(true));
    assert_eq!(again.json()["seq"], a.json()["seq"]);

    // Online status, conversation list with unread, history, mark read.
    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/users/online",
        &json!({"users": ["bob", "alice"]}),
    )
    .await;
    assert_eq!(
        a.json()["users"]["bob"]["online"],
        json!(true),
        "{}",
        a.body
    );
    assert_eq!(a.json()["users"]["alice"]["online"], json!(false));
    let a = signed(&gw, &app, "GET", "/v1/users/bob/conversations", &json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["unread_total"], json!(1), "{}", a.body);
    let path = format!("/v1/users/bob/conversations/{conv}/messages?limit=10");
    let a = signed(&gw, &app, "GET", &path, &json!({})).await;
    assert_eq!(
        a.json()["messages"][0]["content"]["text"],
        json!("hello from the server")
    );
    let path = format!("/v1/users/bob/conversations/{conv}/read");
    let a = signed(&gw, &app, "POST", &path, &json!({"seq": 1})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // The device hears its badge go to zero (after the unread event of the message).
    bob.next(|k| match k {
        switchboard_proto::im::event::Kind::Unread(u) if u.total == 0 => Some(()),
        _ => None,
    })
    .await;

    // A system notice reaches the device too.
    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/messages/system",
        &json!({"to": "bob", "text": "maintenance tonight"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = bob.message().await;
    assert_eq!(text_of(&m), "maintenance tonight");

    // Kick signs the device out.
    let a = signed(&gw, &app, "POST", "/v1/users/bob/kick", &json!({})).await;
    assert_eq!(a.json()["devices"], json!(1), "{}", a.body);
    bob.next(|k| match k {
        switchboard_proto::im::event::Kind::Kicked(_) => Some(()),
        _ => None,
    })
    .await;

    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_signatures_stale_timestamps_replays_and_bad_bodies_change_nothing() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = app(&b).await;
    let body = json!({"users": [{"user_id": "mallory"}]}).to_string();
    let code = |a: &Answer| a.json()["code"].as_u64().unwrap_or_default();

    // No headers at all.
    let a = request(gw.addr(), "POST", "/v1/users", &[], body.as_bytes()).await;
    assert_eq!((a.status, code(&a)), (401, 40100), "{}", a.body);
    // Signed with the wrong secret.
    let wrong = App {
        key: app.key.clone(),
        secret: "not-the-secret".into(),
        tenant: app.tenant,
    };
    let a = signed_with(
        &gw,
        &wrong,
        "POST",
        "/v1/users",
        body.as_bytes(),
        "x1",
        now(),
    )
    .await;
    assert_eq!((a.status, code(&a)), (401, 40102), "{}", a.body);
    // Unknown app key.
    let stranger = App {
        key: "no-such-key".into(),
        secret: app.secret.clone(),
        tenant: 0,
    };
    let a = signed_with(
        &gw,
        &stranger,
        "POST",
        "/v1/users",
        body.as_bytes(),
        "x2",
        now(),
    )
    .await;
    assert_eq!((a.status, code(&a)), (401, 40101), "{}", a.body);
    // Ten minutes old.
    let a = signed_with(
        &gw,
        &app,
        "POST",
        "/v1/users",
        body.as_bytes(),
        "x3",
        now() - 600,
    )
    .await;
    assert_eq!((a.status, code(&a)), (401, 40103), "{}", a.body);
    // The body changed after signing.
    let ts = now().to_string();
    let headers = [
        ("App-Key", app.key.clone()),
        ("Nonce", "x4".to_owned()),
        ("Timestamp", ts.clone()),
        ("Signature", sign(&app.secret, "x4", &ts, body.as_bytes())),
    ];
    let tampered = json!({"users": [{"user_id": "eve"}]}).to_string();
    let a = request(
        gw.addr(),
        "POST",
        "/v1/users",
        &headers,
        tampered.as_bytes(),
    )
    .await;
    assert_eq!((a.status, code(&a)), (401, 40102), "{}", a.body);
    assert!(b.im.user(app.tenant, "mallory").expect("read").is_none());
    assert!(b.im.user(app.tenant, "eve").expect("read").is_none());

    // A good request works once; replaying it (same nonce) is refused.
    let a = signed_with(
        &gw,
        &app,
        "POST",
        "/v1/users",
        body.as_bytes(),
        "once",
        now(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = signed_with(
        &gw,
        &app,
        "POST",
        "/v1/users",
        body.as_bytes(),
        "once",
        now(),
    )
    .await;
    assert_eq!((a.status, code(&a)), (401, 40104), "{}", a.body);

    // Malformed JSON, a wrong shape, an oversized body, an unknown user, an unknown area.
    let a = signed_with(&gw, &app, "POST", "/v1/users", b"{not json", "j1", now()).await;
    assert_eq!((a.status, code(&a)), (400, 400), "{}", a.body);
    let a = signed(&gw, &app, "POST", "/v1/users", &json!({"users": "alice"})).await;
    assert_eq!((a.status, code(&a)), (400, 400), "{}", a.body);
    let big = vec![b'x'; DEFAULT_BODY_LIMIT + 1];
    let a = signed_with(&gw, &app, "POST", "/v1/users", &big, "big", now()).await;
    assert_eq!((a.status, code(&a)), (413, 41300), "{}", a.body);
    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/messages/private",
        &json!({"from": "ghost", "to": "mallory", "content": {"type": "text", "text": "boo"}}),
    )
    .await;
    assert_eq!((a.status, code(&a)), (404, 404), "{}", a.body);
    let a = signed(&gw, &app, "POST", "/v1/teleport/now", &json!({})).await;
    assert_eq!((a.status, code(&a)), (404, 404), "{}", a.body);
    // The gateway's own answer to a before-send check is not an app server's call.
    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/hooks/answer",
        &json!({"reply": 1, "allow": true}),
    )
    .await;
    assert_eq!((a.status, code(&a)), (404, 404), "{}", a.body);

    // The OpenAPI document and its rendering need no signature either.
    let doc = request(gw.addr(), "GET", "/openapi.json", &[], b"")
        .await
        .json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    for p in [
        "/v1/users",
        "/v1/messages/private",
        "/v1/publish",
        "/v1/files",
        "/v1/{area}/{op}",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} documented");
    }
    let page = request(gw.addr(), "GET", "/docs", &[], b"").await;
    assert!(page.status == 200 && page.body.contains("POST /v1/messages/private"));
    // Health and readiness need no signature.
    assert_eq!(
        request(gw.addr(), "GET", "/healthz", &[], b"").await.status,
        200
    );
    assert_eq!(
        request(gw.addr(), "GET", "/readyz", &[], b"").await.status,
        200
    );

    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developer_accounts_create_tenants_with_their_credentials() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let acc = b.im.default_account().await.expect("account");
    let body = json!({"name": "newco"}).to_string();
    let ok = [
        ("Account-Id", acc.id.clone()),
        ("Account-Token", acc.token.clone()),
    ];
    let a = request(gw.addr(), "POST", "/v1/tenants", &ok, body.as_bytes()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let tid = a.json()["tenant_id"].as_u64().expect("tenant id");
    assert_eq!(b.im.tenant(tid).expect("tenant").name, "newco");
    let bad = [
        ("Account-Id", acc.id.clone()),
        ("Account-Token", "guess".to_owned()),
    ];
    let a = request(gw.addr(), "POST", "/v1/tenants", &bad, body.as_bytes()).await;
    assert_eq!(
        (a.status, a.json()["code"].as_u64()),
        (401, Some(40105)),
        "{}",
        a.body
    );
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iot_publish_through_rest_reaches_the_tenants_device_and_is_retained() {
    use switchboard_client::{Client, Config, Event};
    use switchboard_proto::QoS;
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = app(&b).await;
    b.im.create_user(app.tenant, "dev1", "", Some("device-pass"), false)
        .await
        .expect("device credential");
    let mut cfg = Config::new("dev1", vec![Endpoint::Tcp(b.addr)]);
    cfg.username = Some(format!("{}:dev1", app.key));
    cfg.password = Some(bytes::Bytes::from_static(b"device-pass"));
    cfg.session_expiry = 0;
    let (dev, mut events) = Client::start(cfg).expect("client");
    let codes = dev
        .subscribe_acked("sensors/#", QoS::AtLeastOnce)
        .await
        .expect("subscribed");
    assert!(!codes[0].is_error(), "{codes:?}");

    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/publish",
        &json!({"topic": "sensors/1", "payload": "21.5", "qos": 1, "retain": true}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["matched"], json!(true), "{}", a.body);
    let got = tokio::time::timeout(switchboard_tests::WAIT, async {
        loop {
            if let Some(Event::Message(p)) = events.recv().await {
                return *p;
            }
        }
    })
    .await
    .expect("device receives");
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("sensors/1", &b"21.5"[..])
    );

    let a = signed(
        &gw,
        &app,
        "GET",
        "/v1/retained?filter=sensors/%23",
        &json!({}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.json()["messages"][0]["topic"],
        json!("sensors/1"),
        "{}",
        a.body
    );
    assert_eq!(a.json()["messages"][0]["payload_base64"], json!("MjEuNQ=="));

    // A topic outside the tenant's namespace is refused.
    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/publish",
        &json!({"topic": "$SYS/x", "payload": "1"}),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.body);
    dev.shutdown().await;
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_call_rate_gets_429_with_retry_after_and_its_dialects_can_be_off() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = app(&b).await;
    let policy = switchboard_broker::im::records::TenantPolicy {
        api_rate_per_sec: 1,
        compat_apis: false,
        ..Default::default()
    };
    b.im.set_policy(app.tenant, policy).await.expect("policy");
    // Ten calls in a row against a budget of one per second: unless the machine takes
    // more than nine seconds for them, some are refused.
    let mut refused = None;
    for _ in 0..10 {
        let a = signed(
            &gw,
            &app,
            "POST",
            "/v1/users/online",
            &json!({"users": ["x"]}),
        )
        .await;
        if a.status == 429 {
            refused = Some(a);
            break;
        }
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let a = refused.expect("the rate limit refuses a call");
    assert_eq!(a.json()["code"], json!(42900));
    assert!(
        a.headers.to_ascii_lowercase().contains("retry-after: "),
        "{}",
        a.headers
    );
    // The RongCloud dialect is off for this tenant: 403, RongCloud's code 1004.
    let nonce = "rc-off";
    let ts = (now() * 1000).to_string();
    let sig = {
        let d = ring::digest::digest(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            format!("{}{nonce}{ts}", app.secret).as_bytes(),
        );
        d.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let headers = [
        ("App-Key", app.key.clone()),
        ("Nonce", nonce.to_owned()),
        ("Timestamp", ts),
        ("Signature", sig),
    ];
    let a = request(
        gw.addr(),
        "POST",
        "/user/checkOnline.json",
        &headers,
        b"userId=x",
    )
    .await;
    assert_eq!(
        (a.status, a.json()["code"].as_u64()),
        (403, Some(1004)),
        "{}",
        a.body
    );
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_app_servers_register_push_tokens_the_push_worker_reads() {
    use switchboard_proto::im::{Ack, PushTokenRequest};
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = app(&b).await;
    b.user(app.tenant, "ann").await;
    let phone = switchboard_tests::im::Device::connect(
        b.addr,
        "ann",
        "ann-iphone",
        &b.im
            .issue_token(app.tenant, "ann", "phone", 600)
            .expect("token"),
    )
    .await;
    let _: Ack = phone
        .client
        .request(
            "push/register",
            &PushTokenRequest {
                vendor: "apns".into(),
                token: "apns-token-1".into(),
                bundle_id: "com.example.chat".into(),
                sandbox: true,
                lang: "zh-CN".into(),
            },
        )
        .await
        .expect("registered by the device");
    let bad: Result<Ack, _> = phone
        .client
        .request(
            "push/register",
            &PushTokenRequest {
                vendor: "pager".into(),
                token: "x".into(),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(
            bad,
            Err(switchboard_client::im::ImError::Status { code: 400, .. })
        ),
        "{bad:?}"
    );
    // The app server registers an Android token for her other phone (up to ten are kept).
    for i in 0..11 {
        let a = signed(
            &gw,
            &app,
            "POST",
            "/v1/push/register",
            &json!({"user": "ann", "vendor": "huawei", "token": format!("hms-{i}")}),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/push/tokens",
        &json!({"user": "ann"}),
    )
    .await;
    let tokens = a.json()["tokens"].as_array().cloned().expect("tokens");
    assert_eq!(tokens.len(), 10, "{}", a.body);
    assert_eq!(tokens[0]["token"], json!("hms-10"), "newest first");
    assert!(
        tokens.iter().all(|t| t["token"] != json!("apns-token-1")),
        "the oldest was dropped"
    );
    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/push/unregister",
        &json!({"user": "ann", "token": "hms-10"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/push/tokens",
        &json!({"user": "ann"}),
    )
    .await;
    assert_eq!(a.json()["tokens"][0]["token"], json!("hms-9"));
    gw.stop().await;
    b.stop().await;
}

/// A 2×2 red PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0xfd, 0xd4, 0x9a,
    0x73, 0x00, 0x00, 0x00, 0x10, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0x00,
    0x44, 0x0c, 0x10, 0x0a, 0x00, 0x1f, 0xee, 0x03, 0xfd, 0x8b, 0x5f, 0x14, 0xd4, 0x00, 0x00, 0x00,
    0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

fn multipart(name: &str, mime: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "sbBoundary7MA4YWxk";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {mime}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(gw: &Gateway, app: &App, name: &str, mime: &str, bytes: &[u8]) -> Answer {
    let (ctype, body) = multipart(name, mime, bytes);
    let nonce = format!(
        "up{}",
        NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let ts = now().to_string();
    let headers = [
        ("App-Key", app.key.clone()),
        ("Nonce", nonce.clone()),
        ("Timestamp", ts.clone()),
        ("Signature", sign(&app.secret, &nonce, &ts, &body)),
        ("Content-Type", ctype),
    ];
    request(gw.addr(), "POST", "/v1/files", &headers, &body).await
}

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
    let app = app(&b).await;
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
