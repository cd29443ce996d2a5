//! The native API's area calls (`POST /v1/{area}/{op}`) an app server makes for IM part 2,
//! through a real socket, each with its effect seen by a real MQTT device: a group made and
//! written to, a broadcast to everyone, a contact made and a blacklist that refuses, and the
//! org directory imported from CSV with a default password a device then logs in with.

use serde_json::json;
use switchboard_client::im::ImClient;
use switchboard_gateway::Gateway;
use switchboard_proto::im;
use switchboard_tests::gateway_api::{App, config as gateway_config, post as signed};
use switchboard_tests::im::{ImBroker, config, text_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_broadcasts_contacts_and_the_directory_work_through_v1_area_calls() {
    let b = ImBroker::start().await;
    let gw = Gateway::start(gateway_config(&b, "gateway-areas", None))
        .await
        .expect("gateway");
    let app = App::create(&b, "acme").await;
    let a = signed(
        &gw,
        &app,
        "/v1/users",
        &json!({"users": [{"user_id": "alice"}, {"user_id": "bob"}]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let mut bob = b.device(app.tenant, "bob", "bob-phone").await;

    // Groups: made by the app server, written to on alice's behalf.
    let a = signed(
        &gw,
        &app,
        "/v1/group/create",
        &json!({"group_id": "ops", "name": "Ops", "members": ["alice", "bob"]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = signed(
        &gw,
        &app,
        "/v1/group/send",
        &json!({"group_id": "ops", "from": "alice", "text": "deploy at 5"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // (The group's creation notice comes first.)
    let m = bob
        .next(|k| match k {
            im::event::Kind::Message(m) if !text_of(m).is_empty() => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (m.conversation.as_str(), text_of(&m)),
        ("g:ops", "deploy at 5")
    );

    // A broadcast to everyone reaches bob's device.
    let a = signed(
        &gw,
        &app,
        "/v1/broadcast/all",
        &json!({"text": "office closed friday"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = bob.message().await;
    assert_eq!(
        (m.conversation.as_str(), text_of(&m)),
        ("b:all", "office closed friday")
    );

    // Contacts: friends at once (bob's device is told); then bob blacklists alice and her
    // message to him is refused.
    let a = signed(
        &gw,
        &app,
        "/v1/social/add_friends",
        &json!({"user": "alice", "friend": "bob"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let c = bob
        .next(|k| match k {
            im::event::Kind::Contact(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (c.kind, c.from.as_str()),
        (im::contact_event::Kind::Accepted as i32, "bob"),
        "{c:?}"
    );
    let a = signed(
        &gw,
        &app,
        "/v1/social/block",
        &json!({"user": "bob", "users": ["alice"]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = signed(
        &gw,
        &app,
        "/v1/messages/private",
        &json!({"from": "alice", "to": "bob", "content": {"type": "text", "text": "hi?"}}),
    )
    .await;
    assert_eq!(a.status, 405, "{}", a.body);

    // The directory from CSV with a default password: a member logs in with it over MQTT
    // and is asked to change it first.
    let csv = "account,name,department\ncarol,Carol,Sales/East\ndave,Dave,Sales\n";
    let a = signed(
        &gw,
        &app,
        "/v1/dir/import",
        &json!({"csv": csv, "default_password": "Welcome-2026"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (a.json()["created"].as_u64(), a.json()["rows"].as_u64()),
        (Some(2), Some(2))
    );
    let mut cfg = config(b.addr, "carol", "carol-pc", "Welcome-2026");
    cfg.username = Some(format!("{}:carol", app.key));
    let (carol, _events) = ImClient::connect(cfg).await.expect("password login");
    let me: im::MeResponse = carol
        .request("dir/me", &im::MeRequest {})
        .await
        .expect("dir/me");
    assert!(me.password_change_required);
    carol.shutdown().await;
    gw.stop().await;
    b.stop().await;
}
