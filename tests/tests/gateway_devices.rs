//! The REST gateway's device-facing calls against a real broker: IoT publish seen by a real
//! MQTT device, per-tenant rate limits and dialect switches, push token registration the
//! push worker reads. Split from `gateway.rs`.

use serde_json::json;
use switchboard_client::Endpoint;
use switchboard_tests::gateway_api::{App, gateway, now, signed};
use switchboard_tests::http::request;
use switchboard_tests::im::ImBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iot_publish_through_rest_reaches_the_tenants_device_and_is_retained() {
    use switchboard_client::{Client, Config, Event};
    use switchboard_proto::QoS;
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = App::create(&b, "acme").await;
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
    let app = App::create(&b, "acme").await;
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
    let app = App::create(&b, "acme").await;
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
