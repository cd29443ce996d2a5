//! Presence and profiles (issue 13 item 5), end to end: devices log in with the SDK over
//! TCP, the app server is a `$service` MQTT client, the store is redb on disk. Split from
//! `im_social.rs` (contacts and blacklist), whose helpers it shares.

use serde_json::json;
use switchboard_proto::QoS;
use switchboard_proto::im;
use switchboard_tests::im::{Device, ImBroker};
use switchboard_tests::im_social::{AppServer, code, device_on, presence_event};

async fn query_bob(d: &Device) -> im::PresenceResponse {
    im::PresenceResponse {
        status: None,
        presences: d.client.presence(&["bob"]).await.expect("query"),
    }
}

async fn get_profile(
    d: &Device,
    user: &str,
) -> Result<im::ProfileResponse, switchboard_client::im::ImError> {
    d.client
        .request(
            "social/profile",
            &im::SocialUserRequest {
                user: user.into(),
                message: String::new(),
            },
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_events_follow_devices_and_last_seen_survives_disconnect() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    let bob_uid = b.user(t, "bob").await;
    let mut app = AppServer::connect(b.addr, "app-1").await;
    let mut alice = b.device(t, "alice", "alice-1").await;
    let events = format!("$im/events/{t}");
    app.event(&events, |v| v["user"] == "alice" && v["event"] == "online")
        .await;
    let r: im::PresenceResponse = alice
        .client
        .request(
            "social/subscribe_presence",
            &im::SubscribePresenceRequest {
                add: vec!["bob".into(), "nobody-such".into()],
                remove: vec![],
            },
        )
        .await
        .expect("subscribe");
    assert_eq!(r.presences.len(), 1, "unknown users are left out");
    assert_eq!(
        (r.presences[0].online, r.presences[0].last_seen_ms),
        (false, 0)
    );

    let phone = device_on(&b, t, "bob", "bob-phone", "phone").await;
    let p = presence_event(&mut alice).await;
    assert_eq!(
        (p.user.as_str(), p.online, p.platforms.clone()),
        ("bob", true, vec!["phone".to_string()])
    );
    let v = app.event(&events, |v| v["user"] == "bob").await;
    assert_eq!(
        (
            v["event"].as_str(),
            v["client_id"].as_str(),
            v["platform"].as_str(),
            v["uid"].as_u64()
        ),
        (
            Some("online"),
            Some("bob-phone"),
            Some("phone"),
            Some(bob_uid)
        )
    );
    let pc = device_on(&b, t, "bob", "bob-pc", "pc").await;
    let p = presence_event(&mut alice).await;
    assert_eq!(p.platforms, ["pc", "phone"]);
    pc.client.shutdown().await;
    let p = presence_event(&mut alice).await;
    assert_eq!(
        (p.online, p.platforms.clone()),
        (true, vec!["phone".to_string()])
    );
    let v = app
        .event(&events, |v| v["user"] == "bob" && v["event"] == "offline")
        .await;
    assert_eq!(
        (v["client_id"].as_str(), v["user_online"].as_bool()),
        (Some("bob-pc"), Some(true))
    );
    phone.client.shutdown().await;
    let p = presence_event(&mut alice).await;
    assert!(!p.online && p.platforms.is_empty());
    assert!(p.last_seen_ms > 0);
    let v = app
        .event(&events, |v| v["user"] == "bob" && v["event"] == "offline")
        .await;
    assert_eq!(v["user_online"].as_bool(), Some(false));

    let q: im::PresenceResponse = alice
        .client
        .request(
            "social/presence",
            &im::PresenceRequest {
                users: vec!["bob".into(), "alice".into()],
            },
        )
        .await
        .expect("query");
    assert_eq!(q.presences.len(), 2);
    assert_eq!(
        (q.presences[0].online, q.presences[0].last_seen_ms),
        (false, p.last_seen_ms)
    );
    assert_eq!(
        (q.presences[1].online, q.presences[1].platforms.is_empty()),
        (true, false)
    );
    let a = app
        .ok("social/presence", json!({"tenant": t, "users": ["bob"]}))
        .await;
    assert_eq!(a["users"][0]["last_seen_ms"].as_u64(), Some(p.last_seen_ms));

    // Last seen is durable: it survives a restart.
    let dir = b.dir.clone();
    alice.client.shutdown().await;
    app.shutdown().await;
    b.stop().await;
    let b = ImBroker::start_in(dir, 0).await;
    let carol = b.user(t, "carol").await;
    assert!(carol > 0);
    let carol = b.device(t, "carol", "carol-1").await;
    let q: im::PresenceResponse = carol
        .client
        .request(
            "social/presence",
            &im::PresenceRequest {
                users: vec!["bob".into()],
            },
        )
        .await
        .expect("query");
    assert_eq!(q.presences[0].last_seen_ms, p.last_seen_ms);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privacy_nobody_hides_presence_and_contacts_only_shows_it_to_friends() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    for u in ["alice", "bob", "carol"] {
        b.user(t, u).await;
    }
    let app = AppServer::connect(b.addr, "app-1").await;
    let bob = b.device(t, "bob", "bob-1").await;
    let _: im::Ack = bob
        .client
        .request(
            "social/set_privacy",
            &im::PrivacyRequest {
                visibility: im::PresenceVisibility::Nobody as i32,
            },
        )
        .await
        .expect("privacy");
    let mut alice = b.device(t, "alice", "alice-1").await;
    let r: im::PresenceResponse = alice
        .client
        .request(
            "social/subscribe_presence",
            &im::SubscribePresenceRequest {
                add: vec!["bob".into(), "carol".into()],
                remove: vec![],
            },
        )
        .await
        .expect("subscribe");
    assert!(
        r.presences[0].hidden && !r.presences[0].online,
        "bob is online but hidden"
    );
    // Bob's second device changes his platforms, but alice hears only of carol, who came
    // online after him.
    let _bob_pc = device_on(&b, t, "bob", "bob-pc", "pc").await;
    let _carol = device_on(&b, t, "carol", "carol-1", "web").await;
    let p = presence_event(&mut alice).await;
    assert_eq!(
        (p.user.as_str(), p.platforms.clone()),
        ("carol", vec!["web".to_string()])
    );

    // Contacts only: strangers still see nothing, friends see him.
    bob.client
        .set_privacy(im::PresenceVisibility::Contacts)
        .await
        .expect("privacy");
    assert!(query_bob(&alice).await.presences[0].hidden);
    app.ok(
        "social/add_friends",
        json!({"tenant": t, "user": "alice", "friend": "bob"}),
    )
    .await;
    let seen = query_bob(&alice).await.presences[0].clone();
    assert!(!seen.hidden && seen.online);
    let mine: im::PrivacyResponse = bob
        .client
        .request("social/privacy", &im::Ack::default())
        .await
        .expect("privacy");
    assert_eq!(mine.visibility, im::PresenceVisibility::Contacts as i32);
    app.shutdown().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_set_by_the_user_or_the_app_server_and_read_by_others() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let app = AppServer::connect(b.addr, "app-1").await;
    let alice = b.device(t, "alice", "alice-1").await;
    let bob = b.device(t, "bob", "bob-1").await;
    let set: im::ProfileResponse = alice
        .client
        .request(
            "social/set_profile",
            &im::SetProfileRequest {
                name: Some("Alice A.".into()),
                avatar_url: Some("https://cdn.example/a.png".into()),
                extra: [("title".to_string(), "engineer".to_string())].into(),
            },
        )
        .await
        .expect("set");
    assert_eq!(
        set.profile.as_ref().map(|p| p.name.as_str()),
        Some("Alice A.")
    );
    let p = get_profile(&bob, "alice")
        .await
        .expect("get")
        .profile
        .expect("profile");
    assert_eq!(
        (
            p.name.as_str(),
            p.avatar_url.as_str(),
            p.extra.get("title").map(String::as_str)
        ),
        ("Alice A.", "https://cdn.example/a.png", Some("engineer"))
    );
    // The app server changes one field; the others stay.
    let v = app
        .ok("social/set_profile", json!({"tenant": t, "user": "alice", "name": "Alice Admin", "extra": {"title": "", "dept": "R&D"}}))
        .await;
    assert_eq!(v["name"], "Alice Admin");
    let p = get_profile(&bob, "alice")
        .await
        .expect("get")
        .profile
        .expect("profile");
    assert_eq!(
        (
            p.name.as_str(),
            p.avatar_url.as_str(),
            p.extra.len(),
            p.extra.get("dept").map(String::as_str)
        ),
        ("Alice Admin", "https://cdn.example/a.png", 1, Some("R&D"))
    );
    let v = app
        .ok("social/profile", json!({"tenant": t, "user": "alice"}))
        .await;
    assert_eq!(v["extra"]["dept"], "R&D");
    // Bad input and unknown users.
    let long = alice
        .client
        .request::<_, im::ProfileResponse>(
            "social/set_profile",
            &im::SetProfileRequest {
                name: Some("x".repeat(500)),
                ..im::SetProfileRequest::default()
            },
        )
        .await;
    assert_eq!(code(&long), 400);
    assert_eq!(code(&get_profile(&bob, "nobody").await), 404);
    let v = app
        .call("social/profile", json!({"tenant": t, "user": "nobody"}))
        .await;
    assert_eq!(v["error"]["code"], 404);
    app.shutdown().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_clients_cannot_subscribe_to_the_service_events() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    let alice = b.device(t, "alice", "alice-1").await;
    for filter in [
        "$im/events/#",
        &format!("$im/events/{t}"),
        "$share/g/$im/events/#",
    ] {
        let codes = alice
            .client
            .client()
            .subscribe_acked(filter, QoS::AtLeastOnce)
            .await
            .expect("suback");
        assert!(codes[0].is_error(), "{filter}: {codes:?}");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_changes_are_webhook_events_when_the_tenant_asks_for_them() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    let mut app = AppServer::connect(b.addr, "app-1").await;
    // The gateways' stream (a plain subscription here, to see every event).
    let codes = app
        .client()
        .subscribe_acked("$im/hooks/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    assert!(!codes[0].is_error());
    app.ok(
        "hooks/set",
        json!({"tenant": t, "url": "http://127.0.0.1:9/hook", "secret": "s", "events": ["presence"]}),
    )
    .await;
    let alice = device_on(&b, t, "alice", "alice-pad", "pad").await;
    let hooks = format!("$im/hooks/{t}");
    let v = app.event(&hooks, |v| v["kind"] == "presence").await;
    assert_eq!(
        (
            v["data"]["event"].as_str(),
            v["data"]["user"].as_str(),
            v["data"]["platform"].as_str()
        ),
        (Some("online"), Some("alice"), Some("pad"))
    );
    alice.client.shutdown().await;
    let v = app
        .event(&hooks, |v| {
            v["kind"] == "presence" && v["data"]["event"] == "offline"
        })
        .await;
    assert_eq!(v["data"]["user_online"], false);
    app.shutdown().await;
    b.stop().await;
}
