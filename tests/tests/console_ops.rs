//! The console's operations pages beyond counters and kicks (issue 16 item 6), over real
//! HTTP against a broker with the IM service on a redb file:
//! - a tenant's groups and chatrooms, searchable and paged, each with its members paged
//!   (`group/list` reads the store page by page, never every group at once);
//! - a client's queue: the queued messages themselves (topic, QoS, size, age), not only
//!   how many, beside its subscriptions;
//! - a user's message trace shows pushes made by another gateway's push worker (the
//!   workers report to the broker, which keeps one bounded trace for every gateway), and
//!   for what the user sent, whether the other side got and read it.

use bytes::Bytes;
use serde_json::{Value, json};
use switchboard_gateway::push::PushConfig;
use switchboard_proto::{Disconnect, Packet, Properties, Publish, QoS, ReasonCode, Version};
use switchboard_proto::{Subscribe, SubscriptionOptions};
use switchboard_tests::console::*;
use switchboard_tests::im::ImBroker;
use switchboard_tests::push::{gateway, gateway_with, register, send, setup, until};
use switchboard_tests::push_mocks::PushMock;
use switchboard_tests::{RawClient, connect_packet, persistent_connect};

async fn call(c: &Console, op: &str, v: Value) -> Value {
    c.b.im
        .admin_request(op, v.to_string().as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{op}: {e}"))
}

/// The `href` of the element with id `id` (`&` decoded).
fn href_of(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\" href=\""))?;
    let rest = &html[at + id.len() + 12..];
    Some(
        rest[..rest.find('"')?]
            .replace("&amp;", "&")
            .replace("&#38;", "&"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_chatrooms_are_searched_and_paged_with_their_members() {
    let c = Console::start().await;
    let tid = c.b.tenant("grouped").await;
    let members: Vec<String> = (0..105).map(|i| format!("u{i:03}")).collect();
    for u in &members {
        c.b.user(tid, u).await;
    }
    // 60 groups "Team NN" (more than a page of 50), one "Sales", and a join request
    // pending in a private group (its record shares the table with the groups).
    for i in 0..60 {
        call(
            &c,
            "group/create",
            json!({ "tenant": tid, "group_id": format!("team-{i:02}"),
                "name": format!("Team {i:02}"), "members": ["u000"] }),
        )
        .await;
    }
    call(
        &c,
        "group/create",
        json!({ "tenant": tid, "group_id": "sales", "name": "Sales <b>EU</b>",
            "members": members, "join_mode": "approval" }),
    )
    .await;
    // Groups of another tenant never show.
    let other = c.b.tenant("other").await;
    c.b.user(other, "x").await;
    call(
        &c,
        "group/create",
        json!({ "tenant": other, "group_id": "team-secret", "name": "Team secret", "members": ["x"] }),
    )
    .await;

    // The service op pages through every group exactly once.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = call(
            &c,
            "group/list",
            json!({ "tenant": tid, "page_token": token, "limit": 25 }),
        )
        .await;
        for g in page["groups"].as_array().expect("groups") {
            seen.push(g["group_id"].as_str().expect("id").to_owned());
        }
        token = page["next_page_token"].as_str().unwrap_or_default().into();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 61, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "in id order, no repeats"
    );
    let found = call(&c, "group/list", json!({ "tenant": tid, "q": "SALES" })).await;
    assert_eq!(found["groups"][0]["group_id"], "sales", "{found}");
    assert_eq!(found["groups"][0]["member_count"], 105);
    assert_eq!(found["groups"].as_array().map(Vec::len), Some(1));

    let op_pw = operator(&c).await;
    let (op, _) = c.sign_in("admin", &op_pw).await;
    // The first page of groups, and a link to the next one.
    let a = c.get(&format!("/console/ops/im?tenant={tid}"), &op).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("data-group=\"sales\"") && a.body.contains("data-group=\"team-00\""));
    assert!(!a.body.contains("data-group=\"team-59\""), "only one page");
    assert!(!a.body.contains("team-secret"), "another tenant's group");
    let next = href_of(&a.body, "groups-next").expect("a next page");
    let a = c.get(&next, &op).await;
    assert_eq!(a.status, 200, "{next}: {}", a.body);
    assert!(a.body.contains("data-group=\"team-59\"") && !a.body.contains("data-group=\"sales\""));
    assert!(!a.body.contains("data-group=\"team-00\""));
    // Search by name, escaped on output; the group's members, paged.
    let a = c
        .get(&format!("/console/ops/im?tenant={tid}&gq=eu"), &op)
        .await;
    assert!(a.body.contains("data-group=\"sales\"") && !a.body.contains("data-group=\"team-"));
    assert!(escaped(&a.body, "b>EU") && !a.body.contains("<b>EU"));
    let a = c
        .get(&format!("/console/ops/im?tenant={tid}&group=sales"), &op)
        .await;
    let members =
        |html: &str| html[html.find("id=\"group-members\"").expect("members")..].to_owned();
    let page1 = members(&a.body);
    assert!(page1.contains(">u000<") && page1.contains(">u099<"));
    assert!(!page1.contains(">u104<"), "100 members a page");
    let next = href_of(&a.body, "group-members-next").expect("members go on");
    let page2 = members(&c.get(&next, &op).await.body);
    assert!(
        page2.contains(">u104<") && !page2.contains(">u000<"),
        "{page2}"
    );
    // Search text longer than the field allows is cut, never an error page.
    let long = "x".repeat(70);
    let a = c
        .get(&format!("/console/ops/im?tenant={tid}&gq={long}"), &op)
        .await;
    assert_eq!(a.status, 200, "cut to 64 characters, not refused");

    // Chatrooms: search by id or name, paged.
    for i in 0..55 {
        call(
            &c,
            "room/create",
            json!({ "tenant": tid, "room": format!("room-{i:02}"), "name": format!("Room {i:02}") }),
        )
        .await;
    }
    call(
        &c,
        "room/create",
        json!({ "tenant": tid, "room": "lobby", "name": "Main hall" }),
    )
    .await;
    let a = c.get(&format!("/console/ops/im?tenant={tid}"), &op).await;
    assert!(a.body.contains("data-room=\"lobby\"") && a.body.contains("data-room=\"room-00\""));
    let next = href_of(&a.body, "rooms-next").expect("rooms go on");
    let a = c.get(&next, &op).await;
    assert!(a.body.contains("data-room=\"room-54\"") && !a.body.contains("data-room=\"room-00\""));
    let a = c
        .get(&format!("/console/ops/im?tenant={tid}&rq=hall"), &op)
        .await;
    assert!(a.body.contains("data-room=\"lobby\"") && !a.body.contains("data-room=\"room-"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_queue_shows_the_queued_messages() {
    let c = Console::start().await;
    let op_pw = operator(&c).await;
    let (op, _) = c.sign_in("admin", &op_pw).await;
    // A persistent session subscribes at QoS 1, then goes away.
    let (mut sub, _) = RawClient::connect(c.b.addr, persistent_connect("queue-sub", 600)).await;
    sub.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(
            "plant/#".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
        )],
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    sub.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    sub.expect_closed().await;
    switchboard_tests::until_offline(c.b.handle.state(), "queue-sub").await;
    // Three messages wait for it.
    let (mut publisher, _) =
        RawClient::connect(c.b.addr, connect_packet(Version::V5, "queue-pub")).await;
    for (i, (topic, size)) in [("plant/a/temp", 5), ("plant/b/temp", 300), ("plant/<x>", 1)]
        .into_iter()
        .enumerate()
    {
        publisher
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: topic.into(),
                pkid: i as u16 + 1,
                properties: Properties::default(),
                payload: Bytes::from(vec![b'x'; size]),
            }))
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    let a = c.get("/console/ops/client?id=queue-sub", &op).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("<code>plant/#</code>"), "its subscription");
    assert_eq!(text_of_id(&a.body, "client-queued"), "3");
    let queue = &a.body[a.body.find("id=\"client-queue\"").expect("queue table")..];
    let rows: Vec<&str> = queue.split("<tr>").skip(2).take(3).collect();
    assert!(
        rows[0].contains("plant/a/temp") && rows[0].contains("<td>1</td><td>5</td>"),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].contains("plant/b/temp") && rows[1].contains("<td>300</td>"),
        "{}",
        rows[1]
    );
    assert!(
        escaped(rows[2], "x>") && !rows[2].contains("<x>"),
        "topics escaped: {}",
        rows[2]
    );
    assert!(rows[0].contains(" s</td>"), "an age: {}", rows[0]);
    let a = c.get("/console/ops/client?id=nobody-here", &op).await;
    assert_eq!(a.status, 404);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_shows_pushes_made_by_another_gateways_worker() {
    let b = ImBroker::start().await;
    let mut mock = PushMock::start().await;
    // One gateway pushes; the console is served by another, whose worker is off.
    let pusher = gateway(&b, &mock, "gw-pusher").await;
    let console_gw = gateway_with(
        &b,
        "gw-console",
        PushConfig {
            enabled: false,
            ..PushConfig::default()
        },
    )
    .await;
    let t = setup(&b, &mock).await;
    register(&b, t, "bob", "apns", "bobtoken").await;
    let alice = b.device(t, "alice", "alice-phone").await;
    let sent = send(&alice, "bob", "m1", "are you there?").await;
    mock.next("apns").await;
    let c = Console { b, gw: console_gw };
    let op_pw = operator(&c).await;
    let (op, _) = c.sign_in("admin", &op_pw).await;
    let path = format!("/console/ops/im?tenant={t}&user=bob");
    let mut page = String::new();
    until(async || {
        page = c.get(&path, &op).await.body;
        page.contains("id=\"pushes\"") && page.contains("<td>sent</td>")
    })
    .await;
    // The pushes table names the message and the provider; the message's row in the
    // trace says it was pushed.
    let pushes = &page[page.find("id=\"pushes\"").expect("pushes")..];
    assert!(pushes.contains("<td>apns</td>"), "{pushes}");
    assert!(pushes.contains(&format!("#{}", sent.seq)), "{pushes}");
    let messages = &page[page.find("class=\"trace-messages\"").expect("trace")..];
    assert!(messages.contains("are you there?"));
    assert!(messages.contains("<td>apns sent</td>"), "{messages}");
    // Alice's trace: her message is sent; once bob reads it, read by the other side.
    let alice_trace = format!("/console/ops/im?tenant={t}&user=alice");
    let page = c.get(&alice_trace, &op).await.body;
    assert!(page.contains("sent, not delivered yet"), "{page}");
    c.b.im
        .admin_request(
            "read",
            json!({ "tenant": t, "user": "bob", "conversation": sent.conversation, "seq": sent.seq })
                .to_string()
                .as_bytes(),
        )
        .await
        .expect("read");
    let page = c.get(&alice_trace, &op).await.body;
    assert!(page.contains("read by the other side"), "{page}");
    pusher.stop().await;
    c.stop().await;
}
