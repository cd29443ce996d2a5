//! Moderation (issue 13 item 6), end to end: the app server bans, mutes, sets the word list
//! and the rate limit over `$im/admin/moderation/...`; users see each refusal with its own
//! code over TCP.

use bytes::Bytes;
use serde_json::json;
use switchboard_proto::im::event::Kind;
use switchboard_proto::{Packet, ReasonCode, Version};
use switchboard_tests::im::{ImBroker, text_of};
use switchboard_tests::im_social::{AppServer, code};
use switchboard_tests::{RawClient, connect_packet};

/// A tenant with users alice, bob and carol, and the app server.
async fn setup() -> (ImBroker, u64, AppServer) {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    for u in ["alice", "bob", "carol"] {
        b.user(t, u).await;
    }
    let app = AppServer::connect(b.addr, "app-1").await;
    (b, t, app)
}

/// CONNECT with `token`: the CONNACK's reason code (`None` if the broker closed first).
async fn connack(b: &ImBroker, client_id: &str, token: &str) -> Option<ReasonCode> {
    let mut c = connect_packet(Version::V5, client_id);
    c.password = Some(Bytes::from(token.to_owned()));
    match RawClient::connect_or_closed(b.addr, c).await.1 {
        Some(Packet::ConnAck(a)) => Some(a.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_ban_kicks_the_devices_and_refuses_logins_until_lifted() {
    let (b, t, app) = setup().await;
    let mut alice = b.device(t, "alice", "alice-1").await;
    let token = b.im.issue_token(t, "alice", "", 600).expect("token");
    app.ok(
        "moderation/ban",
        json!({"tenant": t, "user": "alice", "seconds": 3600}),
    )
    .await;
    let reason = alice
        .next(|k| match k {
            Kind::Kicked(k) => Some(k.reason.clone()),
            _ => None,
        })
        .await;
    assert!(reason.contains("banned"), "{reason}");
    let deadline = tokio::time::Instant::now() + switchboard_tests::WAIT;
    while !b.im.devices(t, 1).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the banned device stays online"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        connack(&b, "alice-2", &token).await,
        Some(ReasonCode::Banned)
    );
    let status = app
        .ok("moderation/status", json!({"tenant": t, "user": "alice"}))
        .await;
    assert!(status["banned_until"].as_u64().unwrap_or(0) > 0, "{status}");
    app.ok("moderation/unban", json!({"tenant": t, "user": "alice"}))
        .await;
    assert_eq!(
        connack(&b, "alice-3", &token).await,
        Some(ReasonCode::Success)
    );
    app.shutdown().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_bans_and_global_and_per_conversation_mutes_answer_423() {
    let (b, t, app) = setup().await;
    let alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    // Banned from sending: still connected, every send refused.
    app.ok(
        "moderation/ban",
        json!({"tenant": t, "user": "alice", "seconds": 600, "scope": "send"}),
    )
    .await;
    assert_eq!(code(&alice.client.send_text("bob", "m1", "one").await), 423);
    assert_eq!(
        code(&alice.client.send_text("carol", "m2", "two").await),
        423
    );
    app.ok(
        "moderation/unban",
        json!({"tenant": t, "user": "alice", "scope": "send"}),
    )
    .await;
    alice
        .client
        .send_text("bob", "m3", "three")
        .await
        .expect("sent");
    assert_eq!(text_of(&bob.message().await), "three");

    // Global mute, without a duration: until lifted.
    app.ok("moderation/mute", json!({"tenant": t, "user": "alice"}))
        .await;
    assert_eq!(
        code(&alice.client.send_text("bob", "m4", "four").await),
        423
    );
    let status = app
        .ok("moderation/status", json!({"tenant": t, "user": "alice"}))
        .await;
    assert!(status["muted_until"].as_u64().unwrap_or(0) > 0, "{status}");
    app.ok("moderation/unmute", json!({"tenant": t, "user": "alice"}))
        .await;

    // Muted in the conversation with bob only.
    let conv = alice
        .client
        .send_text("bob", "m5", "five")
        .await
        .expect("sent")
        .conversation;
    assert_eq!(text_of(&bob.message().await), "five");
    app.ok(
        "moderation/mute",
        json!({"tenant": t, "user": "alice", "seconds": 600, "conversation": conv}),
    )
    .await;
    assert_eq!(code(&alice.client.send_text("bob", "m6", "six").await), 423);
    alice
        .client
        .send_text("carol", "m7", "seven")
        .await
        .expect("other conversations are open");
    bob.client
        .send_text("alice", "b1", "bob is not muted")
        .await
        .expect("sent");
    let status = app
        .ok("moderation/status", json!({"tenant": t, "user": "alice"}))
        .await;
    assert_eq!(status["muted_in"][0]["conversation"], conv.as_str());
    // A bad conversation id and an unknown user are 400 and 404.
    let v = app
        .call(
            "moderation/mute",
            json!({"tenant": t, "user": "alice", "conversation": "x:1"}),
        )
        .await;
    assert_eq!(v["error"]["code"], 400);
    let v = app
        .call("moderation/mute", json!({"tenant": t, "user": "nobody"}))
        .await;
    assert_eq!(v["error"]["code"], 404);
    app.ok(
        "moderation/unmute",
        json!({"tenant": t, "user": "alice", "conversation": conv}),
    )
    .await;
    alice
        .client
        .send_text("bob", "m8", "eight")
        .await
        .expect("unmuted");
    // Bob's stream: nothing refused was ever delivered (his own message does not come
    // back to the device that sent it).
    assert_eq!(text_of(&bob.message().await), "eight");
    app.shutdown().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_words_are_rejected_with_451_or_masked_for_the_recipient() {
    let (b, t, app) = setup().await;
    let alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    let v = app
        .ok(
            "moderation/set_words",
            json!({"tenant": t, "words": ["darn", "敏感"], "mode": "reject"}),
        )
        .await;
    assert_eq!(v["words"], 2);
    assert_eq!(
        code(&alice.client.send_text("bob", "m1", "well DARN it").await),
        451
    );
    assert_eq!(
        code(&alice.client.send_text("bob", "m2", "这是敏感的").await),
        451
    );
    alice
        .client
        .send_text("bob", "m3", "all clean")
        .await
        .expect("clean text passes");
    assert_eq!(text_of(&bob.message().await), "all clean");

    // Replace mode, and the list changed: the matcher is rebuilt.
    app.ok(
        "moderation/add_words",
        json!({"tenant": t, "words": ["heck"], "mode": "replace"}),
    )
    .await;
    alice
        .client
        .send_text("bob", "m4", "Darn, what the heck, 敏感!")
        .await
        .expect("masked, not refused");
    let m = bob.message().await;
    assert_eq!(text_of(&m), "****, what the ****, **!");
    // What is stored is what the recipient saw.
    let h = bob
        .client
        .history(&m.conversation, 0, 1)
        .await
        .expect("history");
    assert_eq!(text_of(&h.messages[0]), "****, what the ****, **!");
    app.ok(
        "moderation/remove_words",
        json!({"tenant": t, "words": ["DARN"]}),
    )
    .await;
    let v = app.ok("moderation/words", json!({"tenant": t})).await;
    assert_eq!(v["words"], json!(["敏感", "heck"]));
    assert_eq!(v["mode"], "replace");
    alice
        .client
        .send_text("bob", "m5", "darn")
        .await
        .expect("sent");
    assert_eq!(text_of(&bob.message().await), "darn");
    app.shutdown().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_beyond_the_burst_answers_429_per_user() {
    let (b, t, app) = setup().await;
    let alice = b.device(t, "alice", "alice-1").await;
    let carol = b.device(t, "carol", "carol-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    // One message an hour, bursts of 3: the fourth in a row is refused, whatever the timing.
    app.ok(
        "moderation/set_rate_limit",
        json!({"tenant": t, "messages": 1, "per_secs": 3600, "burst": 3}),
    )
    .await;
    for i in 1..=3 {
        alice
            .client
            .send_text("bob", &format!("a{i}"), &format!("a{i}"))
            .await
            .expect("within the burst");
    }
    assert_eq!(code(&alice.client.send_text("bob", "a4", "a4").await), 429);
    // Carol has her own bucket.
    carol
        .client
        .send_text("bob", "c1", "c1")
        .await
        .expect("another sender");
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(text_of(&bob.message().await).to_owned());
    }
    assert_eq!(got, ["a1", "a2", "a3", "c1"]);
    let v = app.ok("moderation/rate_limit", json!({"tenant": t})).await;
    assert_eq!(v["rate_limit"]["burst"], 3);
    // Lifted: alice sends again.
    app.ok(
        "moderation/set_rate_limit",
        json!({"tenant": t, "messages": 0}),
    )
    .await;
    alice
        .client
        .send_text("bob", "a5", "a5")
        .await
        .expect("no limit");
    let v = app
        .call(
            "moderation/set_rate_limit",
            json!({"tenant": t, "messages": 5, "per_secs": 0}),
        )
        .await;
    assert_eq!(v["error"]["code"], 400);
    let v = app.call("moderation/no_such_op", json!({})).await;
    assert_eq!(v["error"]["code"], 404);
    app.shutdown().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_settings_survive_a_restart() {
    let (b, t, app) = setup().await;
    app.ok(
        "moderation/set_words",
        json!({"tenant": t, "words": ["darn"], "mode": "reject"}),
    )
    .await;
    app.ok(
        "moderation/set_rate_limit",
        json!({"tenant": t, "messages": 1, "per_secs": 3600, "burst": 1}),
    )
    .await;
    app.ok("moderation/mute", json!({"tenant": t, "user": "carol"}))
        .await;
    app.shutdown().await;
    let dir = b.dir.clone();
    b.stop().await;
    let b = ImBroker::start_in(dir, 0).await;
    let alice = b.device(t, "alice", "alice-1").await;
    let carol = b.device(t, "carol", "carol-1").await;
    assert_eq!(
        code(&alice.client.send_text("bob", "m1", "darn").await),
        451
    );
    alice
        .client
        .send_text("bob", "m2", "fine")
        .await
        .expect("within the burst");
    assert_eq!(
        code(&alice.client.send_text("bob", "m3", "again").await),
        429
    );
    assert_eq!(code(&carol.client.send_text("bob", "c1", "hi").await), 423);
    b.stop().await;
}

/// A request to the REST gateway signed for tenant `t` (HMAC-SHA256 of the app secret over
/// nonce + timestamp + body, computed here with ring).
async fn rest(
    gw: &switchboard_gateway::Gateway,
    b: &ImBroker,
    t: u64,
    path: &str,
    body: serde_json::Value,
) -> switchboard_tests::http::Answer {
    static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let tenant = b.im.tenant(t).expect("tenant");
    let body = body.to_string();
    let nonce = format!(
        "m{}",
        NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, tenant.app_secret.as_bytes());
    let msg = [nonce.as_bytes(), ts.as_bytes(), body.as_bytes()].concat();
    let signature: String = ring::hmac::sign(&key, &msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let headers = [
        ("App-Key", tenant.app_key.clone()),
        ("Nonce", nonce),
        ("Timestamp", ts),
        ("Signature", signature),
        ("Content-Type", "application/json".to_owned()),
    ];
    switchboard_tests::http::request(gw.addr(), "POST", path, &headers, body.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_gateway_reaches_moderation_and_social_ops() {
    let (b, t, app) = setup().await;
    app.shutdown().await;
    let gw = switchboard_gateway::Gateway::start(switchboard_gateway::GatewayConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        broker: vec![switchboard_client::Endpoint::Tcp(b.addr)],
        service_secret: switchboard_tests::im::SERVICE_SECRET.into(),
        client_id: "gateway-moderation".into(),
        body_limit: switchboard_gateway::DEFAULT_BODY_LIMIT,
        files_dir: None,
    })
    .await
    .expect("gateway starts");
    let alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    let a = rest(
        &gw,
        &b,
        t,
        "/v1/moderation/set_words",
        json!({"words": ["darn"], "mode": "replace"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = rest(
        &gw,
        &b,
        t,
        "/v1/social/set_profile",
        json!({"user": "alice", "name": "Alice via REST"}),
    )
    .await;
    assert_eq!(a.json()["name"], "Alice via REST");
    alice
        .client
        .send_text("bob", "m1", "darn it")
        .await
        .expect("sent");
    assert_eq!(text_of(&bob.message().await), "**** it");
    assert_eq!(
        bob.client.profile("alice").await.expect("profile").name,
        "Alice via REST"
    );
    let a = rest(
        &gw,
        &b,
        t,
        "/v1/moderation/mute",
        json!({"user": "alice", "seconds": 60}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(code(&alice.client.send_text("bob", "m2", "hi").await), 423);
    gw.stop().await;
    b.stop().await;
}
