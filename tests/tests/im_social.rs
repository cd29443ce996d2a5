//! Contacts and blacklist (issue 13 item 4), end to end: devices log in with the SDK over
//! TCP, the app server is a `$service` MQTT client, the store is redb on disk. Presence and
//! profiles: `im_presence.rs`.

use serde_json::json;
use switchboard_proto::im::{self, contact_event::Kind as CK};
use switchboard_tests::im::{ImBroker, text_of};
use switchboard_tests::im_social::{AppServer, code, contact_event, list, social};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friend_requests_are_accepted_rejected_and_deleted_with_events_on_both_sides() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    for u in ["alice", "bob", "carol"] {
        b.user(t, u).await;
    }
    let mut alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    let mut carol = b.device(t, "carol", "carol-1").await;

    let _: im::Ack = alice
        .client
        .request(
            "social/friend_request",
            &im::SocialUserRequest {
                user: "bob".into(),
                message: "hi, it's alice".into(),
            },
        )
        .await
        .expect("request");
    let ev = contact_event(&mut bob, CK::Requested).await;
    assert_eq!(
        (
            ev.kind,
            ev.from.as_str(),
            ev.to.as_str(),
            ev.message.as_str()
        ),
        (CK::Requested as i32, "alice", "bob", "hi, it's alice")
    );
    let pending = list(&bob, "friend_requests").await;
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].user.as_str(), pending[0].message.as_str()),
        ("alice", "hi, it's alice")
    );
    assert!(list(&alice, "friends").await.is_empty(), "not friends yet");

    social(&bob, "friend_accept", "alice")
        .await
        .expect("accept");
    let ev = contact_event(&mut alice, CK::Accepted).await;
    assert_eq!((ev.kind, ev.from.as_str()), (CK::Accepted as i32, "bob"));
    let names = |l: Vec<im::SocialContact>| l.into_iter().map(|c| c.user).collect::<Vec<_>>();
    assert_eq!(names(list(&alice, "friends").await), ["bob"]);
    assert_eq!(names(list(&bob, "friends").await), ["alice"]);
    assert!(list(&bob, "friend_requests").await.is_empty());

    // Rejected: the requester hears of it, nobody becomes friends.
    social(&carol, "friend_request", "bob")
        .await
        .expect("request");
    social(&bob, "friend_reject", "carol")
        .await
        .expect("reject");
    let ev = contact_event(&mut carol, CK::Requested).await;
    assert_eq!(ev.from, "carol", "carol's own devices see her request");
    let ev = contact_event(&mut carol, CK::Rejected).await;
    assert_eq!((ev.kind, ev.from.as_str()), (CK::Rejected as i32, "bob"));
    assert_eq!(names(list(&bob, "friends").await), ["alice"]);
    // Nothing to accept any more, strangers, yourself.
    assert_eq!(code(&social(&bob, "friend_accept", "carol").await), 404);
    assert_eq!(code(&social(&bob, "friend_request", "nobody").await), 404);
    assert_eq!(code(&social(&bob, "friend_request", "bob").await), 400);

    // Two requests that cross make friends.
    social(&carol, "friend_request", "alice")
        .await
        .expect("request");
    social(&alice, "friend_request", "carol")
        .await
        .expect("crossing request");
    assert_eq!(names(list(&carol, "friends").await), ["alice"]);

    social(&alice, "friend_delete", "bob")
        .await
        .expect("delete");
    let ev = contact_event(&mut bob, CK::Deleted).await;
    assert_eq!(
        (ev.kind, ev.from.as_str(), ev.to.as_str()),
        (CK::Deleted as i32, "alice", "bob")
    );
    assert!(
        list(&bob, "friends").await.is_empty(),
        "gone from both lists"
    );
    assert_eq!(names(list(&alice, "friends").await), ["carol"]);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friend_lists_are_paged() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "hub").await;
    let app = AppServer::connect(b.addr, "app-1").await;
    let mut expected = Vec::new();
    for i in 0..7 {
        let name = format!("f{i}");
        b.user(t, &name).await;
        app.ok(
            "social/add_friends",
            json!({"tenant": t, "user": "hub", "friend": name}),
        )
        .await;
        expected.push(name);
    }
    let hub = b.device(t, "hub", "hub-1").await;
    let (mut seen, mut after) = (Vec::new(), String::new());
    loop {
        let page: im::SocialContactList = hub
            .client
            .request(
                "social/friends",
                &im::SocialListRequest {
                    after: after.clone(),
                    limit: 3,
                },
            )
            .await
            .expect("page");
        assert!(page.contacts.len() <= 3);
        seen.extend(page.contacts.into_iter().map(|c| c.user));
        if page.next.is_empty() {
            break;
        }
        after = page.next;
    }
    assert_eq!(seen, expected);
    app.shutdown().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_required_refuses_messages_between_strangers_with_403() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let app = AppServer::connect(b.addr, "app-1").await;
    app.ok(
        "social/set_policy",
        json!({"tenant": t, "friends_required": true}),
    )
    .await;
    let alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    let r = alice.client.send_text("bob", "m1", "hello stranger").await;
    assert_eq!(code(&r), 403);
    social(&alice, "friend_request", "bob")
        .await
        .expect("request");
    social(&bob, "friend_accept", "alice")
        .await
        .expect("accept");
    alice
        .client
        .send_text("bob", "m2", "hello friend")
        .await
        .expect("friends may talk");
    let m = bob.message().await;
    assert_eq!(
        text_of(&m),
        "hello friend",
        "the refused message was never delivered"
    );
    app.shutdown().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blacklisted_sender_gets_405_and_the_recipient_sees_nothing() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    for u in ["alice", "bob", "carol"] {
        b.user(t, u).await;
    }
    let alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    let carol = b.device(t, "carol", "carol-1").await;
    bob.client.block("alice").await.expect("block");
    let blocked = list(&bob, "blocked").await;
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].user, "alice");
    assert_eq!(
        code(&alice.client.send_text("bob", "m1", "let me in").await),
        405
    );
    assert_eq!(code(&social(&alice, "friend_request", "bob").await), 405);
    // Bob may still write to alice, and others reach bob.
    alice
        .client
        .send_text("carol", "m2", "not blocked by carol")
        .await
        .expect("sent");
    carol
        .client
        .send_text("bob", "c1", "from carol")
        .await
        .expect("sent");
    assert_eq!(text_of(&bob.message().await), "from carol");
    bob.client.unblock("alice").await.expect("unblock");
    alice
        .client
        .send_text("bob", "m3", "again")
        .await
        .expect("sent after unblock");
    let m = bob.message().await;
    assert_eq!((m.from.as_str(), text_of(&m)), ("alice", "again"));
    let sync = bob
        .client
        .sync_all(&mut Default::default())
        .await
        .expect("sync");
    let from_alice: Vec<&str> = sync
        .0
        .iter()
        .filter(|m| m.from == "alice")
        .map(text_of)
        .collect();
    assert_eq!(
        from_alice,
        ["again"],
        "nothing of the blocked time was stored"
    );
    // The app server manages blacklists too (RongCloud's server API).
    let app = AppServer::connect(b.addr, "app-1").await;
    app.ok(
        "social/block",
        json!({"tenant": t, "user": "bob", "users": ["carol"]}),
    )
    .await;
    assert_eq!(code(&carol.client.send_text("bob", "c2", "hm").await), 405);
    let v = app
        .ok("social/blocked", json!({"tenant": t, "user": "bob"}))
        .await;
    assert_eq!(v["users"][0]["user"], "carol");
    assert_eq!(v["next"], "");
    let v = app
        .call(
            "social/block",
            json!({"tenant": t, "user": "bob", "users": ["nobody"]}),
        )
        .await;
    assert_eq!(v["error"]["code"], 404);
    app.ok(
        "social/unblock",
        json!({"tenant": t, "user": "bob", "users": ["carol"]}),
    )
    .await;
    carol
        .client
        .send_text("bob", "c3", "back")
        .await
        .expect("unblocked");
    app.shutdown().await;
    b.stop().await;
}
