//! Native `/v1` endpoints not covered elsewhere, each through the gateway's socket with its
//! effect seen by real MQTT devices: a batch message, a chatroom message, a workbench
//! app's message, a connect ban and its lifting, and token revocation (a token of another
//! tenant is refused and stays valid).

use bytes::Bytes;
use serde_json::json;
use switchboard_gateway::Gateway;
use switchboard_proto::im::event::Kind;
use switchboard_proto::{Packet, ReasonCode, Version};
use switchboard_tests::gateway_api::{App, config, post as signed};
use switchboard_tests::im::{ImBroker, text_of};
use switchboard_tests::{RawClient, connect_packet};

async fn gateway(b: &ImBroker) -> Gateway {
    Gateway::start(config(b, "gateway-native", None))
        .await
        .expect("gateway starts")
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
async fn batch_room_and_app_messages_reach_the_devices() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = App::create(&b, "acme").await;
    for u in ["alice", "bob", "carol"] {
        b.user(app.tenant, u).await;
    }
    let mut bob = b.device(app.tenant, "bob", "bob-phone").await;
    let mut carol = b.device(app.tenant, "carol", "carol-phone").await;

    // One message to many users: each gets it from alice, with a row per recipient.
    let a = signed(
        &gw,
        &app,
        "/v1/messages/batch",
        &json!({"from": "alice", "to": ["bob", "carol", "nobody"],
                "content": {"type": "text", "text": "standup in 5"}}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    for d in [&mut bob, &mut carol] {
        let m = d.message().await;
        assert_eq!((m.from.as_str(), text_of(&m)), ("alice", "standup in 5"));
    }

    // A chatroom made over REST; bob's device joins over MQTT and hears the server's message.
    let a = signed(
        &gw,
        &app,
        "/v1/room/create",
        &json!({"room": "live", "name": "Live"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    bob.client.join_room("live", None).await.expect("join");
    let a = signed(
        &gw,
        &app,
        "/v1/room/send",
        &json!({"room": "live", "from": "alice", "text": "welcome to the show"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = bob
        .next(|k| match k {
            Kind::Message(m) if m.conversation == "r:live" => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(text_of(&m), "welcome to the show");

    // A workbench app's message: carol gets it in her conversation with the app, with a badge.
    let made =
        b.im.admin_request(
            "app/create",
            json!({"tenant": app.tenant, "name": "审批", "identifier": "approval"})
                .to_string()
                .as_bytes(),
        )
        .await
        .expect("app created");
    let app_id = made["app_id"].as_str().expect("app id").to_owned();
    let a = signed(
        &gw,
        &app,
        "/v1/app/notice",
        &json!({"app_id": app_id, "users": ["carol"], "text": "expense approved"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = carol
        .next(|k| match k {
            Kind::Message(m) if m.conversation.starts_with("a:") => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(text_of(&m), "expense approved");
    let badge = carol
        .next(|k| match k {
            Kind::AppUnread(u) => Some(u.clone()),
            _ => None,
        })
        .await;
    assert_eq!((badge.app_id.as_str(), badge.unread), (app_id.as_str(), 1));
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_sign_devices_out_until_lifted_and_revoked_tokens_stop_logging_in() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = App::create(&b, "acme").await;
    let other = App::create(&b, "other").await;
    b.user(app.tenant, "bob").await;
    let mut bob = b.device(app.tenant, "bob", "bob-phone").await;
    let token = b.im.issue_token(app.tenant, "bob", "", 600).expect("token");

    let a = signed(&gw, &app, "/v1/users/bob/ban", &json!({"minutes": 30})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    bob.next(|k| match k {
        Kind::Kicked(_) => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(connack(&b, "bob-2", &token).await, Some(ReasonCode::Banned));
    let a = signed(&gw, &app, "/v1/users/bob/unban", &json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        connack(&b, "bob-3", &token).await,
        Some(ReasonCode::Success)
    );

    // Another tenant cannot revoke bob's token: refused, and it still logs in.
    let a = signed(&gw, &other, "/v1/tokens/revoke", &json!({"token": token})).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(
        connack(&b, "bob-4", &token).await,
        Some(ReasonCode::Success)
    );
    let a = signed(&gw, &app, "/v1/tokens/revoke", &json!({"token": token})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_ne!(
        connack(&b, "bob-5", &token).await,
        Some(ReasonCode::Success)
    );
    gw.stop().await;
    b.stop().await;
}
