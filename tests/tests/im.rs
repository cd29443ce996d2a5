//! The IM layer end to end: a broker with the IM service on a real store, users' devices
//! logged in with the SDK over TCP (and a raw MQTT client where exact packets matter).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use switchboard_client::im::ImError;
use switchboard_proto::im::{self, event::Kind};
use switchboard_proto::{
    Packet, Properties, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions, Version,
};
use switchboard_tests::im::{ImBroker, text, text_of};
use switchboard_tests::{RawClient, connect_packet};

fn status(e: &ImError) -> u32 {
    match e {
        ImError::Status { code, .. } => *code,
        other => panic!("expected an IM status error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_three_devices_send_receive_in_order_and_resends_are_idempotent() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let mut alice = b.device(t, "alice", "alice-phone").await;
    let mut bob_phone = b.device(t, "bob", "bob-phone").await;
    let mut bob_pc = b.device(t, "bob", "bob-pc").await;

    let mut seqs = Vec::new();
    for i in 1..=5 {
        let r = alice
            .client
            .send_text("bob", &format!("m{i}"), &format!("hello {i}"))
            .await
            .expect("sent");
        assert!(!r.duplicate);
        assert!(r.server_time_ms > 0);
        seqs.push(r.seq);
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5], "seq from 1 without gaps");
    // Alice's device sent them: it learns their seqs from the answers, not as events
    // (No Local, protocol.md 5.2; checked below).
    for dev in [&mut bob_phone, &mut bob_pc] {
        for i in 1..=5u64 {
            let m = dev.message().await;
            assert_eq!((m.seq, text_of(&m)), (i, format!("hello {i}").as_str()));
            assert_eq!((m.from.as_str(), m.to.as_str()), ("alice", "bob"));
            assert_eq!(m.conversation, "p:1:2");
        }
    }
    // A resend with the same client message id is recognised, not stored twice.
    let again = alice
        .client
        .send_text("bob", "m3", "hello 3")
        .await
        .expect("resend answered");
    assert_eq!((again.seq, again.duplicate), (3, true));
    let next = alice
        .client
        .send_text("bob", "m6", "after the resend")
        .await
        .expect("sent");
    assert_eq!(next.seq, 6);
    let m = bob_phone.message().await;
    assert_eq!(
        (m.seq, text_of(&m)),
        (6, "after the resend"),
        "no duplicate shown"
    );
    // Bob answers: one conversation, both directions.
    let r = bob_pc
        .client
        .send_text("alice", "b1", "hi alice")
        .await
        .expect("sent");
    assert_eq!((r.conversation.as_str(), r.seq), ("p:1:2", 7));
    let m = alice.message().await;
    assert_eq!(
        (m.seq, m.from.as_str()),
        (7, "bob"),
        "bob's answer is the first message alice's device gets"
    );
    // What bob's PC sent appears on his phone too.
    let m = bob_phone.message().await;
    assert_eq!((m.seq, text_of(&m)), (7, "hi alice"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_device_syncs_what_it_missed_paged_and_in_order() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    b.user(t, "carol").await;
    let alice = b.device(t, "alice", "alice-1").await;
    for i in 1..=7 {
        alice
            .client
            .send_text("bob", &format!("a{i}"), &format!("to bob {i}"))
            .await
            .expect("sent");
    }
    alice
        .client
        .send_text("carol", "c1", "to carol")
        .await
        .expect("sent");
    // Bob was offline for all of it.
    let bob = b.device(t, "bob", "bob-1").await;
    let mut cursors = HashMap::new();
    let mut pages = 0;
    let mut got = Vec::new();
    loop {
        let page = bob.client.sync(&cursors, 3).await.expect("sync");
        pages += 1;
        for m in &page.messages {
            cursors.insert(m.conversation.clone(), m.seq);
            got.push((m.seq, text_of(m).to_owned()));
        }
        if !page.more {
            assert_eq!(page.unread_total, 7);
            assert_eq!(
                page.conversations.len(),
                1,
                "carol's conversation is not bob's"
            );
            let c = &page.conversations[0];
            assert_eq!((c.peer.as_str(), c.max_seq, c.unread), ("alice", 7, 7));
            break;
        }
    }
    assert_eq!(pages, 3, "7 messages in pages of 3");
    let want: Vec<(u64, String)> = (1..=7).map(|i| (i, format!("to bob {i}"))).collect();
    assert_eq!(got, want);
    // Synced up: nothing more.
    let empty = bob.client.sync(&cursors, 0).await.expect("sync");
    assert!(empty.messages.is_empty() && !empty.more);
    // History backwards from the newest.
    let h = bob.client.history("p:1:2", 0, 3).await.expect("history");
    let seqs: Vec<u64> = h.messages.iter().map(|m| m.seq).collect();
    assert_eq!((seqs, h.more), (vec![7, 6, 5], true));
    let h = bob.client.history("p:1:2", 3, 10).await.expect("history");
    let seqs: Vec<u64> = h.messages.iter().map(|m| m.seq).collect();
    assert_eq!((seqs, h.more), (vec![2, 1], false));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_unread_counts_and_read_on_one_device_clears_the_other() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let mut alice = b.device(t, "alice", "alice-1").await;
    let mut bob_phone = b.device(t, "bob", "bob-phone").await;
    let mut bob_pc = b.device(t, "bob", "bob-pc").await;
    for i in 1..=3 {
        alice
            .client
            .send_text("bob", &format!("x{i}"), "hi")
            .await
            .expect("sent");
    }
    // Unread counts climb on every device of bob's.
    for dev in [&mut bob_phone, &mut bob_pc] {
        let totals: Vec<u64> = [dev.unread().await, dev.unread().await, dev.unread().await]
            .iter()
            .map(|u| u.total)
            .collect();
        assert_eq!(totals, [1, 2, 3]);
    }
    // The phone got the messages: a delivered receipt reaches alice.
    bob_phone
        .client
        .delivered("p:1:2", 3)
        .await
        .expect("delivered");
    let r = alice
        .next(|k| match k {
            Kind::Receipt(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (r.kind, r.seq, r.by.as_str()),
        (im::receipt::Kind::Delivered as i32, 3, "bob")
    );
    // Read on the PC: the phone's badge clears, alice gets a read receipt.
    bob_pc.client.read("p:1:2", 3).await.expect("read");
    let u = bob_phone.unread().await;
    assert_eq!((u.unread, u.total, u.read_seq), (0, 0, 3));
    let r = alice
        .next(|k| match k {
            Kind::Receipt(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (r.kind, r.seq, r.by.as_str()),
        (im::receipt::Kind::Read as i32, 3, "bob")
    );
    // Alice's view: bob read up to 3; her own messages are not unread for her.
    let list = alice.client.conversations().await.expect("list");
    let c = &list.conversations[0];
    assert_eq!((c.peer_read_seq, c.peer_delivered_seq, c.unread), (3, 3, 0));
    assert_eq!(list.unread_total, 0);
    // Reading past the end is refused.
    let e = bob_pc
        .client
        .read("p:1:2", 99)
        .await
        .expect_err("future seq");
    assert_eq!(status(&e), 400);
    // Muting takes the conversation out of the badge, and the other device hears of it.
    bob_pc
        .client
        .update_conversation(im::UpdateConversationRequest {
            conversation: "p:1:2".into(),
            muted: Some(true),
            ..Default::default()
        })
        .await
        .expect("mute");
    let c = bob_phone
        .next(|k| match k {
            Kind::Conversation(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert!(c.muted);
    alice
        .client
        .send_text("bob", "x4", "while muted")
        .await
        .expect("sent");
    let u = bob_phone.unread().await;
    assert_eq!((u.unread, u.total), (1, 0), "muted: not in the badge");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_mentions_typing_and_burn_after_read() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    let sent = alice
        .client
        .send(im::SendRequest {
            to: "bob".into(),
            client_msg_id: "m1".into(),
            content: Some(text("@bob look")),
            mentions: vec!["bob".into()],
            ..Default::default()
        })
        .await
        .expect("sent");
    let m = bob.message().await;
    assert_eq!(m.mentions, ["bob"]);
    let list = bob.client.conversations().await.expect("list");
    assert!(
        list.conversations[0].mentioned,
        "an unread mention is flagged"
    );
    // Only the sender may recall.
    let e = bob
        .client
        .recall("p:1:2", sent.seq)
        .await
        .expect_err("not the sender");
    assert_eq!(status(&e), 403);
    alice
        .client
        .recall("p:1:2", sent.seq)
        .await
        .expect("recall");
    let r = bob
        .next(|k| match k {
            Kind::Recalled(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!((r.seq, r.by.as_str()), (1, "alice"));
    let h = bob.client.history("p:1:2", 0, 10).await.expect("history");
    assert!(h.messages[0].recalled && h.messages[0].content.is_none());
    // Typing reaches the peer and is not stored.
    alice.client.typing("p:1:2").await.expect("typing");
    let from = bob
        .next(|k| match k {
            Kind::Typing(t) => Some(t.from.clone()),
            _ => None,
        })
        .await;
    assert_eq!(from, "alice");
    // Burn after read: once bob reads it, its content is gone for both.
    let secret = alice
        .client
        .send(im::SendRequest {
            to: "bob".into(),
            client_msg_id: "m2".into(),
            content: Some(text("self-destruct")),
            burn_after_read: true,
            ..Default::default()
        })
        .await
        .expect("sent");
    let m = bob.message().await;
    assert_eq!((m.seq, text_of(&m)), (secret.seq, "self-destruct"));
    bob.client.read("p:1:2", secret.seq).await.expect("read");
    let burned = bob
        .next(|k| match k {
            Kind::Message(m) if m.burned => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(burned.seq, secret.seq);
    let h = alice.client.history("p:1:2", 0, 1).await.expect("history");
    assert!(h.messages[0].burned && h.messages[0].content.is_none());
    // Past the recall window: 410.
    let mut policy = b.im.tenant(t).expect("tenant").policy.clone();
    policy.recall_window_secs = 0;
    b.im.set_policy(t, policy).await.expect("policy");
    let late = alice
        .client
        .send_text("bob", "m3", "too late to take back")
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(1100)).await; // the window is in seconds
    let e = alice
        .client
        .recall("p:1:2", late.seq)
        .await
        .expect_err("window passed");
    assert_eq!(status(&e), 410);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_and_users_cannot_reach_each_others_conversations() {
    let b = ImBroker::start().await;
    let t1 = b.tenant("one").await;
    let t2 = b.tenant("two").await;
    b.user(t1, "alice").await;
    b.user(t1, "bob").await;
    b.user(t1, "mallory").await;
    b.user(t2, "alice").await;
    let mallory = b.device(t1, "mallory", "mallory-1").await;
    let alice = b.device(t1, "alice", "alice-1").await;
    alice
        .client
        .send_text("bob", "s1", "private")
        .await
        .expect("sent");
    // Another user's conversation: refused (403) for sync, history, read, recall.
    let mut cursors = HashMap::new();
    cursors.insert("p:1:2".to_string(), 0);
    assert_eq!(
        status(&mallory.client.sync(&cursors, 0).await.expect_err("sync")),
        403
    );
    assert_eq!(
        status(
            &mallory
                .client
                .history("p:1:2", 0, 10)
                .await
                .expect_err("history")
        ),
        403
    );
    assert_eq!(
        status(&mallory.client.read("p:1:2", 1).await.expect_err("read")),
        403
    );
    assert_eq!(
        status(&mallory.client.recall("p:1:2", 1).await.expect_err("recall")),
        403
    );
    // Tenant two's alice is someone else: no messages of tenant one's alice.
    let other = b.device(t2, "alice", "alice-t2").await;
    let (msgs, list) = other
        .client
        .sync_all(&mut HashMap::new())
        .await
        .expect("sync");
    assert!(msgs.is_empty() && list.conversations.is_empty());
    // Topics: another tenant's, another user's inbox, raw IM topics: SUBACK 0x87.
    let token = b.im.issue_token(t1, "mallory", "", 600).expect("token");
    let mut raw = RawClient::open(b.addr, Version::V5).await;
    let mut c = connect_packet(Version::V5, "mallory-raw");
    c.username = Some("mallory".into());
    c.password = Some(Bytes::from(token));
    raw.send(&Packet::Connect(Box::new(c))).await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(a)) if a.code == ReasonCode::Success));
    let filters = ["$t/2/#", "$im/t/1/u/1", "$im/#", "$SYS/#", "#"];
    raw.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: filters
            .iter()
            .map(|f| (f.to_string(), SubscriptionOptions::default()))
            .collect(),
    }))
    .await;
    let Some(Packet::SubAck(a)) = raw.recv().await else {
        panic!("no SUBACK")
    };
    assert_eq!(
        a.codes,
        [
            ReasonCode::NotAuthorized,
            ReasonCode::NotAuthorized,
            ReasonCode::NotAuthorized,
            ReasonCode::NotAuthorized,
            ReasonCode::Success, // `#` is the tenant's own plain topics
        ]
    );
    // Plain topics of tenant one stay in tenant one: an anonymous default-tenant client
    // subscribed to `#` sees nothing of them.
    let mut outsider = RawClient::open(b.addr, Version::V5).await;
    outsider
        .send(&Packet::Connect(Box::new(connect_packet(
            Version::V5,
            "outsider",
        ))))
        .await;
    assert!(matches!(outsider.recv().await, Some(Packet::ConnAck(_))));
    outsider
        .send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            properties: Properties::default(),
            filters: vec![("#".into(), SubscriptionOptions::default())],
        }))
        .await;
    assert!(matches!(outsider.recv().await, Some(Packet::SubAck(_))));
    raw.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "sensors/1".into(),
        pkid: 7,
        properties: Properties::default(),
        payload: Bytes::from_static(b"21.5"),
    }))
    .await;
    // Mallory's own `#` subscription gets it back without the tenant prefix.
    let mut got_back = None;
    for _ in 0..3 {
        match raw.recv().await {
            Some(Packet::Publish(p)) => {
                got_back = Some(p.topic);
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(got_back.as_deref(), Some("sensors/1"));
    assert!(
        outsider
            .recv_within(Duration::from_millis(300))
            .await
            .is_err(),
        "the default tenant saw a tenant's message"
    );
    // A default-tenant client cannot make IM requests.
    outsider
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "$im/req/send".into(),
            pkid: 9,
            properties: Properties::default(),
            payload: Bytes::new(),
        }))
        .await;
    assert!(
        matches!(outsider.recv().await, Some(Packet::PubAck(a)) if a.code == ReasonCode::NotAuthorized)
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_errors() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let alice = b.device(t, "alice", "alice-1").await;
    // Unknown recipient, empty message, oversized content.
    let e = alice
        .client
        .send_text("nobody", "q1", "hi")
        .await
        .expect_err("unknown user");
    assert_eq!(status(&e), 404);
    let e = alice
        .client
        .send(im::SendRequest {
            to: "bob".into(),
            client_msg_id: "q2".into(),
            ..Default::default()
        })
        .await
        .expect_err("no content");
    assert_eq!(status(&e), 400);
    let big = "x".repeat(70 * 1024);
    let e = alice
        .client
        .send_text("bob", "q3", &big)
        .await
        .expect_err("too large");
    assert_eq!(status(&e), 413);
    // Unknown conversation and a cursor from the future.
    let e = alice
        .client
        .read("p:1:2", 1)
        .await
        .expect_err("no such conversation yet");
    assert_eq!(status(&e), 404);
    alice
        .client
        .send_text("bob", "q4", "hi")
        .await
        .expect("sent");
    let mut cursors = HashMap::new();
    cursors.insert("p:1:2".to_string(), 50);
    let e = alice
        .client
        .sync(&cursors, 0)
        .await
        .expect_err("cursor ahead");
    assert_eq!(status(&e), 400);
    cursors.insert("not-a-conversation".to_string(), 0);
    let e = alice.client.sync(&cursors, 0).await.expect_err("junk id");
    assert_eq!(status(&e), 400);
    // Malformed protobuf: PUBACK 0x99 and a 400 answer.
    let token = b.im.issue_token(t, "alice", "", 600).expect("token");
    let mut raw = RawClient::open(b.addr, Version::V5).await;
    let mut c = connect_packet(Version::V5, "alice-raw");
    c.password = Some(Bytes::from(token));
    raw.send(&Packet::Connect(Box::new(c))).await;
    let ack = raw.recv().await;
    assert!(
        matches!(&ack, Some(Packet::ConnAck(a)) if a.code == ReasonCode::Success),
        "{ack:?}"
    );
    raw.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "$im/req/send".into(),
        pkid: 1,
        properties: Properties::default(),
        payload: Bytes::from_static(&[0xff, 0xff, 0xff, 0x01]),
    }))
    .await;
    assert!(
        matches!(raw.recv().await, Some(Packet::PubAck(a)) if a.code == ReasonCode::PayloadFormatInvalid)
    );
    // Login: a wrong, an expired and a revoked token are refused with 0x86; a banned user
    // with 0x8A.
    let refused = |password: String, id: &'static str| {
        let mut c = connect_packet(Version::V5, id);
        c.password = Some(Bytes::from(password));
        RawClient::connect_or_closed(b.addr, c)
    };
    let (_, ack) = refused("sb1.garbage.sig".into(), "w1").await;
    assert!(matches!(ack, Some(Packet::ConnAck(a)) if a.code == ReasonCode::BadUserNameOrPassword));
    let short = b.im.issue_token(t, "alice", "", 1).expect("token");
    tokio::time::sleep(Duration::from_millis(2100)).await; // token lifetimes are in seconds
    let (_, ack) = refused(short, "w2").await;
    assert!(
        matches!(ack, Some(Packet::ConnAck(a)) if a.code == ReasonCode::BadUserNameOrPassword),
        "expired token"
    );
    let revoked = b.im.issue_token(t, "bob", "", 600).expect("token");
    b.im.revoke_token(&revoked).await.expect("revoke");
    let (_, ack) = refused(revoked, "w3").await;
    assert!(
        matches!(ack, Some(Packet::ConnAck(a)) if a.code == ReasonCode::BadUserNameOrPassword),
        "revoked token"
    );
    let fine = b.im.issue_token(t, "bob", "", 600).expect("token");
    b.im.ban(t, "bob", u64::MAX).await.expect("ban");
    let (_, ack) = refused(fine, "w4").await;
    assert!(matches!(ack, Some(Packet::ConnAck(a)) if a.code == ReasonCode::Banned));
    b.stop().await;
}
