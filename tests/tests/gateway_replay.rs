//! Replayed signed requests are refused across gateway instances: two gateways in front of
//! one broker (as behind a load balancer), a signed call served by instance A, and the
//! byte-identical request (same nonce, timestamp, signature) sent to instance B. B's own
//! nonce memory has never seen it; the broker's has, so B answers the dialect's "reused
//! nonce" error and nothing happens: the user's device gets no second message. Native API
//! (401, code 40104, even with the first request's `X-Request-Id`) and RongCloud's (401,
//! code 1004).

use serde_json::json;
use switchboard_gateway::Gateway;
use switchboard_tests::gateway_api::{App, config, now, sign, signed, signed_with};
use switchboard_tests::http::{Answer, request};
use switchboard_tests::im::{Device, ImBroker, text_of};

/// Two gateway instances of broker `b`.
async fn two_gateways(b: &ImBroker) -> (Gateway, Gateway) {
    let a = Gateway::start(config(b, "gateway-a", None))
        .await
        .expect("gateway A starts");
    let other = Gateway::start(config(b, "gateway-b", None))
        .await
        .expect("gateway B starts");
    (a, other)
}

/// A RongCloud form request signed with `nonce` and `ts_ms` (hex SHA-1 of secret + nonce +
/// timestamp, computed here with ring).
async fn rc_with(
    gw: &Gateway,
    app: &App,
    path: &str,
    form: &str,
    nonce: &str,
    ts_ms: u64,
) -> Answer {
    let ts = ts_ms.to_string();
    let d = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{nonce}{ts}", app.secret).as_bytes(),
    );
    let sig: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let headers = [
        ("App-Key", app.key.clone()),
        ("Nonce", nonce.to_owned()),
        ("Timestamp", ts),
        ("Signature", sig),
        (
            "Content-Type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
    ];
    request(gw.addr(), "POST", path, &headers, form.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_call_replayed_to_another_gateway_is_refused_and_changes_nothing() {
    let b = ImBroker::start().await;
    let (gw_a, gw_b) = two_gateways(&b).await;
    let app = App::create(&b, "acme").await;
    let a = signed(
        &gw_a,
        &app,
        "POST",
        "/v1/users",
        &json!({"users": [{"user_id": "alice"}, {"user_id": "bob"}]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = signed(&gw_b, &app, "POST", "/v1/users/bob/token", &json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let token = a.json()["token"].as_str().expect("token").to_owned();
    let mut bob = Device::connect(b.addr, "bob", "bob-phone", &token).await;

    // No client_msg_id: every accepted send is a new message.
    let body =
        json!({"from": "alice", "to": "bob", "content": {"type": "text", "text": "pay 100"}})
            .to_string();
    let (nonce, ts) = ("replay-native-1", now());
    // The replay repeats every header, X-Request-Id too: the broker tells calls apart by an
    // id each gateway draws itself, not by the caller's.
    let sig = sign(&app.secret, nonce, &ts.to_string(), body.as_bytes());
    let headers = [
        ("App-Key", app.key.clone()),
        ("Nonce", nonce.to_owned()),
        ("Timestamp", ts.to_string()),
        ("Signature", sig),
        ("Content-Type", "application/json".to_owned()),
        ("X-Request-Id", "the-same-request".to_owned()),
    ];
    let send = |gw: &Gateway| {
        request(
            gw.addr(),
            "POST",
            "/v1/messages/private",
            &headers,
            body.as_bytes(),
        )
    };
    let first = send(&gw_a).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let m = bob.message().await;
    assert_eq!(text_of(&m), "pay 100");

    // The exact same request through the other instance.
    let replay = send(&gw_b).await;
    assert_eq!(
        (replay.status, replay.json()["code"].as_u64()),
        (401, Some(40104)),
        "{}",
        replay.body
    );
    // And through the first one again (its own memory).
    let replay = send(&gw_a).await;
    assert_eq!(
        replay.json()["code"].as_u64(),
        Some(40104),
        "{}",
        replay.body
    );

    // Nothing was sent: the next message bob gets is the next one the app server sends,
    // right after the first in the conversation.
    let a = signed(
        &gw_b,
        &app,
        "POST",
        "/v1/messages/private",
        &json!({"from": "alice", "to": "bob", "content": {"type": "text", "text": "next"}}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let next = bob.message().await;
    assert_eq!((text_of(&next), next.seq), ("next", m.seq + 1));
    assert_eq!(a.json()["seq"].as_u64(), Some(m.seq + 1), "{}", a.body);

    // A fresh nonce is fine on either instance, and another tenant's nonce space is its
    // own: the same nonce string signed by another app goes through.
    let other = App::create(&b, "other").await;
    let a = signed_with(
        &gw_b,
        &other,
        "POST",
        "/v1/users",
        br#"{"users":[{"user_id":"carol"}]}"#,
        nonce,
        now(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);

    gw_a.stop().await;
    gw_b.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rongcloud_call_replayed_to_another_gateway_is_refused_and_changes_nothing() {
    let b = ImBroker::start().await;
    let (gw_a, gw_b) = two_gateways(&b).await;
    let app = App::create(&b, "acme").await;
    // getToken.json makes two service requests with one nonce: its own call passes both.
    let a = rc_with(
        &gw_a,
        &app,
        "/user/getToken.json",
        "userId=bob&name=Bob",
        "rc-token-1",
        now() * 1000,
    )
    .await;
    assert_eq!(a.json()["code"], json!(200), "{}", a.body);
    let token = a.json()["token"].as_str().expect("token").to_owned();
    let mut bob = Device::connect(b.addr, "bob", "bob-phone", &token).await;
    let a = rc_with(
        &gw_b,
        &app,
        "/user/getToken.json",
        "userId=alice",
        "rc-token-alice",
        now() * 1000,
    )
    .await;
    assert_eq!(a.json()["code"], json!(200), "{}", a.body);

    let content = json!({"content": "pay 100"}).to_string();
    let form = format!(
        "fromUserId=alice&toUserId=bob&objectName=RC%3ATxtMsg&content={}",
        form_urlencoded::byte_serialize(content.as_bytes()).collect::<String>()
    );
    let (nonce, ts) = ("rc-replay-1", now() * 1000);
    let send = |gw| rc_with(gw, &app, "/message/private/publish.json", &form, nonce, ts);
    let first = send(&gw_a).await;
    assert_eq!(first.json()["code"], json!(200), "{}", first.body);
    let m = bob.message().await;
    assert_eq!(text_of(&m), "pay 100");

    let replay = send(&gw_b).await;
    assert_eq!(
        (replay.status, replay.json()["code"].as_u64()),
        (401, Some(1004)),
        "{}",
        replay.body
    );

    // A replayed getToken.json (two service requests on instance A) is refused on B too.
    let form2 = "userId=mallory&name=M";
    let a = rc_with(&gw_a, &app, "/user/getToken.json", form2, "rc-token-2", ts).await;
    assert_eq!(a.json()["code"], json!(200), "{}", a.body);
    let replay = rc_with(&gw_b, &app, "/user/getToken.json", form2, "rc-token-2", ts).await;
    assert_eq!(
        (replay.status, replay.json()["code"].as_u64()),
        (401, Some(1004)),
        "{}",
        replay.body
    );

    // Nothing was delivered twice: bob's next message is the next one sent.
    let content = json!({"content": "next"}).to_string();
    let form = format!(
        "fromUserId=alice&toUserId=bob&objectName=RC%3ATxtMsg&content={}",
        form_urlencoded::byte_serialize(content.as_bytes()).collect::<String>()
    );
    let a = rc_with(
        &gw_b,
        &app,
        "/message/private/publish.json",
        &form,
        "rc-next",
        now() * 1000,
    )
    .await;
    assert_eq!(a.json()["code"], json!(200), "{}", a.body);
    let next = bob.message().await;
    assert_eq!((text_of(&next), next.seq), ("next", m.seq + 1));

    gw_a.stop().await;
    gw_b.stop().await;
    b.stop().await;
}
