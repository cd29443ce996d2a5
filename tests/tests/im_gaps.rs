//! The SDK takes its inbox at QoS 0 and watches seqs (protocol.md section 5.3): messages a
//! device never got show up as `ImEvent::Lagged` before the next message of their
//! conversation, and ordinary traffic (its own sends, which No Local never echoes, other
//! devices' sends, group notices, sync pages) never looks like a gap.

use std::collections::HashMap;

use switchboard_client::im::ImEvent;
use switchboard_proto::ReasonCode;
use switchboard_proto::im::{self, event::Kind};
use switchboard_tests::WAIT;
use switchboard_tests::im::{Device, ImBroker, text_of};

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
async fn messages_missed_while_away_are_reported_before_the_next_one() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    alice
        .client
        .send_text("bob", "m1", "first")
        .await
        .expect("sent");
    let (_, lost) = until_text(&mut bob, "first").await;
    assert_eq!(lost, 0);

    // Bob's connection is cut (an operator's kick); the SDK reconnects on its own. What
    // alice sends meanwhile reaches no device of bob's.
    assert!(
        b.handle.state().kick(
            &switchboard_broker::sessions::tenant_session_key(t, "bob-1"),
            ReasonCode::AdministrativeAction
        ),
        "bob's device is connected"
    );
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
