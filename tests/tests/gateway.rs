//! The REST gateway against a real broker: signed requests over a real socket, their
//! effects seen by real MQTT devices, and every way a signature can be wrong. IoT publish,
//! rate limits and push tokens: `gateway_devices.rs`; file uploads: `gateway_files.rs`.

use serde_json::json;
use switchboard_gateway::DEFAULT_BODY_LIMIT;
use switchboard_tests::gateway_api::{App, gateway, now, sign, signed, signed_with};
use switchboard_tests::http::{Answer, request};
use switchboard_tests::im::{Device, ImBroker, text_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_server_registers_users_issues_tokens_and_sends_messages_devices_receive() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = App::create(&b, "acme").await;

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
    let app = App::create(&b, "acme").await;
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
