//! The native API's moderation area (`POST /v1/moderation/{op}`): the tenant's sensitive
//! words (masked for the recipient's device in `replace` mode, the send refused with 451 in
//! `reject` mode) and a mute (423) that the app server lifts, each seen through a real socket
//! and a real MQTT device.

use serde_json::json;
use switchboard_tests::gateway_api::{App, gateway, post};
use switchboard_tests::im::{ImBroker, text_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_words_and_mutes_set_over_rest_shape_what_devices_receive() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = App::create(&b, "acme").await;
    let a = post(
        &gw,
        &app,
        "/v1/users",
        &json!({"users": [{"user_id": "alice"}, {"user_id": "bob"}]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let mut bob = b.device(app.tenant, "bob", "bob-phone").await;
    let send = |text: &str| json!({"from": "alice", "to": "bob", "content": {"type": "text", "text": text}});

    // Replace mode: bob's device gets the word masked.
    let a = post(
        &gw,
        &app,
        "/v1/moderation/set_words",
        &json!({"words": ["badword"], "mode": "replace"}),
    )
    .await;
    assert_eq!(a.json()["words"], json!(1), "{}", a.body);
    let a = post(&gw, &app, "/v1/moderation/words", &json!({})).await;
    assert_eq!(
        a.json(),
        json!({"words": ["badword"], "mode": "replace"}),
        "{}",
        a.body
    );
    let a = post(&gw, &app, "/v1/messages/private", &send("a badword here")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = bob.message().await;
    assert_eq!(text_of(&m), "a ******* here");

    // Reject mode: 451, nothing reaches bob (the next message he gets is the clean one).
    let a = post(
        &gw,
        &app,
        "/v1/moderation/set_words",
        &json!({"words": ["badword"], "mode": "reject"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = post(&gw, &app, "/v1/messages/private", &send("badword again")).await;
    assert_eq!(
        (a.status, a.json()["code"].as_u64()),
        (451, Some(451)),
        "{}",
        a.body
    );

    // A mute: 423 while it lasts, lifted by unmute.
    let a = post(
        &gw,
        &app,
        "/v1/moderation/mute",
        &json!({"user": "alice", "seconds": 600}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = post(&gw, &app, "/v1/messages/private", &send("can you hear me")).await;
    assert_eq!(
        (a.status, a.json()["code"].as_u64()),
        (423, Some(423)),
        "{}",
        a.body
    );
    let a = post(
        &gw,
        &app,
        "/v1/moderation/unmute",
        &json!({"user": "alice"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = post(&gw, &app, "/v1/messages/private", &send("clean now")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = bob.message().await;
    assert_eq!(text_of(&m), "clean now");

    bob.client.shutdown().await;
    gw.stop().await;
    b.stop().await;
}
