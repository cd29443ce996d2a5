//! The SDK takes its inbox at QoS 0 and watches seqs (protocol.md section 5.3): messages a
//! device never got show up as `ImEvent::Lagged` before the next message of their
//! conversation, and ordinary traffic (its own sends, which No Local never echoes, other
//! devices' sends, group notices, sync pages) never looks like a gap.

use std::collections::HashMap;

use serde_json::json;
use switchboard_client::im::{ImClient, ImEvent};
use switchboard_proto::im::{self, event::Kind};
use switchboard_tests::WAIT;
use switchboard_tests::im::{Device, ImBroker, config, text_of};
use switchboard_tests::im_social::AppServer;

/// Reads `d`'s events until the text message `last` arrives; returns every text seen and
/// the number of messages reported lost on the way.
async fn until_text(d: &mut Device, last: &str) -> (Vec<String>, u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let (mut texts, mut lost) = (Vec::new(), 0);
    loop {
        let ev = tokio::time::timeout_at(deadline, d.events.recv())
            .await
            .unwrap_or_else(|_| panic!("{last:?} within the wait; got {texts:?}"))
            .expect("event stream open");
        match ev {
            ImEvent::Lagged { dropped } => lost += dropped,
            ImEvent::Event(e) => {
                if let Some(Kind::Message(m)) = &e.kind
                    && !text_of(m).is_empty()
                {
                    texts.push(text_of(m).to_owned());
                    if text_of(m) == last {
                        return (texts, lost);
                    }
                }
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_traffic_is_never_taken_for_a_gap() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let mut phone = b.device(t, "alice", "alice-phone").await;
    let mut pc = b.device(t, "alice", "alice-pc").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    // 1:1 both ways from both of alice's devices: each device has seqs it learnt from its
    // own answers, and the others from events.
    for i in 0..5 {
        phone
            .client
            .send_text("bob", &format!("p{i}"), &format!("phone {i}"))
            .await
            .expect("sent");
        pc.client
            .send_text("bob", &format!("c{i}"), &format!("pc {i}"))
            .await
            .expect("sent");
        bob.client
            .send_text("alice", &format!("b{i}"), &format!("bob {i}"))
            .await
            .expect("sent");
    }
    // A group: its creation and join notices, then messages from everyone.
    let g = phone
        .client
        .create_group("crew", "crew", im::JoinMode::Open, &["bob"])
        .await
        .expect("group created");
    let gid = g.group.expect("group info").group_id;
    for (d, id) in [(&phone, "g1"), (&bob, "g2"), (&pc, "g3"), (&phone, "g4")] {
        d.client
            .send_group_text(&gid, id, &format!("group {id}"))
            .await
            .expect("group message sent");
    }
    bob.client
        .send_group_text(&gid, "end", "end")
        .await
        .expect("last message sent");
    for (name, d) in [("phone", &mut phone), ("pc", &mut pc)] {
        let (texts, lost) = until_text(d, "end").await;
        assert_eq!(lost, 0, "{name} reported a gap; it saw {texts:?}");
    }
    // Bob sent "end" himself: his own device waits for the last message of the others.
    let (texts, lost) = until_text(&mut bob, "group g4").await;
    assert_eq!(lost, 0, "bob reported a gap; he saw {texts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_sending_to_one_group_at_once_are_not_gaps() {
    // A sender's own seq comes back in its answer, which can arrive after another
    // member's next message: the SDK must not take that for a lost message.
    const EACH: usize = 150;
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    for u in ["alice", "bob", "carol", "dave"] {
        b.user(t, u).await;
    }
    let mut devices = Vec::new();
    for u in ["alice", "bob", "carol", "dave"] {
        devices.push((u, b.device(t, u, &format!("{u}-1")).await));
    }
    let g = devices[0]
        .1
        .client
        .create_group(
            "busy",
            "busy",
            im::JoinMode::Open,
            &["bob", "carol", "dave"],
        )
        .await
        .expect("group created");
    let gid = g.group.expect("group info").group_id;
    let mut sends = tokio::task::JoinSet::new();
    for (name, d) in &devices[..3] {
        let (client, gid, name) = (d.client.clone(), gid.clone(), *name);
        sends.spawn(async move {
            for i in 0..EACH {
                client
                    .send_group_text(&gid, &format!("{name}-{i}"), &format!("{name} {i}"))
                    .await
                    .expect("group message sent");
            }
        });
    }
    while let Some(r) = sends.join_next().await {
        r.expect("sender finished");
    }
    devices[3]
        .1
        .client
        .send_group_text(&gid, "end", "end")
        .await
        .expect("last message sent");
    for (name, d) in &mut devices[..3] {
        let (texts, lost) = until_text(d, "end").await;
        assert_eq!(
            texts.len(),
            2 * EACH + 1,
            "{name} gets the others' messages"
        );
        assert_eq!(lost, 0, "{name} reported a gap while everyone sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_missed_while_away_are_reported_before_the_next_one() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let alice = b.device(t, "alice", "alice-1").await;
    // Bob's SDK retries quickly once he may log in again.
    let token = b.im.issue_token(t, "bob", "", 600).expect("token");
    let mut cfg = config(b.addr, "bob", "bob-1", &token);
    cfg.backoff_min = std::time::Duration::from_millis(20);
    cfg.backoff_max = std::time::Duration::from_millis(200);
    let (client, events) = ImClient::connect(cfg).await.expect("bob logs in");
    let mut bob = Device { client, events };
    alice
        .client
        .send_text("bob", "m1", "first")
        .await
        .expect("sent");
    let (_, lost) = until_text(&mut bob, "first").await;
    assert_eq!(lost, 0);

    // Bob is banned from logging in for a while: his device is cut off and its SDK's
    // reconnects are refused, so what alice sends meanwhile reaches no device of his.
    let app = AppServer::connect(b.addr, "app-1").await;
    app.ok(
        "moderation/ban",
        json!({"tenant": t, "user": "bob", "seconds": 3600}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ev = tokio::time::timeout_at(deadline, bob.events.recv())
            .await
            .expect("disconnect noticed")
            .expect("event stream open");
        if matches!(ev, ImEvent::Disconnected { .. }) {
            break;
        }
    }
    for i in 2..=3 {
        alice
            .client
            .send_text("bob", &format!("m{i}"), &format!("missed {i}"))
            .await
            .expect("sent while bob is away");
    }
    app.ok("moderation/unban", json!({"tenant": t, "user": "bob"}))
        .await;
    // Once bob is back (and subscribed again), the next message alice sends reaches him:
    // the SDK says first that messages before it were lost. Alice keeps sending until one
    // arrives (the resubscription may still be on its way when she starts).
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut next = 4;
    let mut lost = 0;
    let got = loop {
        alice
            .client
            .send_text("bob", &format!("m{next}"), &format!("after {next}"))
            .await
            .expect("sent after bob is back");
        next += 1;
        match tokio::time::timeout(std::time::Duration::from_millis(200), bob.events.recv()).await {
            Ok(Some(ImEvent::Lagged { dropped })) => lost += dropped,
            Ok(Some(ImEvent::Event(e))) => {
                if let Some(Kind::Message(m)) = &e.kind {
                    break m.clone();
                }
            }
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("event stream closed"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message reached bob after the reconnect"
        );
    };
    // Any Lagged arrives before the message it is about.
    while let Ok(ev) = bob.events.try_recv() {
        if let ImEvent::Lagged { dropped } = ev {
            lost += dropped;
        }
    }
    assert!(got.seq >= 4, "{got:?}");
    assert_eq!(
        lost,
        got.seq - 2,
        "every message between the first and seq {} reported lost",
        got.seq
    );
    // And sync brings them back.
    let mut cursors = HashMap::from([(got.conversation.clone(), 1)]);
    let (msgs, _) = bob.client.sync_all(&mut cursors).await.expect("sync");
    let texts: Vec<_> = msgs.iter().map(|m| text_of(m).to_owned()).collect();
    assert_eq!(&texts[..2], ["missed 2", "missed 3"]);
}
