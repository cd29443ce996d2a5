//! `POST /v1/messages/import` beyond 1:1: a group's and a user's system conversation's
//! past messages, through a real gateway socket and seen by real MQTT devices. Imported
//! messages take seqs in their times' order, keep their times, reach devices through
//! history and sync but never as live events, and are read unless the import asks for
//! them to count as unread.

use std::collections::HashMap;

use serde_json::{Value, json};
use switchboard_gateway::Gateway;
use switchboard_proto::im;
use switchboard_tests::gateway_api::{App, config, post as signed};
use switchboard_tests::im::{ImBroker, text_of};

async fn gateway(b: &ImBroker) -> Gateway {
    Gateway::start(config(b, "gateway-import", None))
        .await
        .expect("gateway starts")
}

fn past(kind: &str, id: &str, from: &str, to: &str, text: &str, t: u64) -> Value {
    json!({"type": kind, "from": from, "to": to, "content": {"type": "text", "text": text},
           "server_time_ms": t, "client_msg_id": id})
}

fn day_ago() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        - 86_400_000
}

/// The unread count of `conv` in `user`'s device's conversation list.
async fn unread(d: &switchboard_tests::im::Device, conv: &str) -> u64 {
    let l = d.client.conversations().await.expect("conversations");
    l.conversations
        .iter()
        .find(|c| c.id == conv)
        .map(|c| c.unread)
        .unwrap_or_else(|| panic!("{conv} is not in the list: {l:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_import_in_time_order_as_read_history_without_live_events() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = App::create(&b, "acme").await;
    for u in ["alice", "bob", "carol"] {
        b.user(app.tenant, u).await;
    }
    let a = signed(
        &gw,
        &app,
        "/v1/group/create",
        &json!({"group_id": "team", "name": "Team", "members": ["alice", "bob"]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Bob is online while the import runs: it must not reach him as events.
    let mut bob = b.device(app.tenant, "bob", "bob-phone").await;
    let t0 = day_ago();
    // Out of order in the request; carol has left the group since (she may have spoken).
    let body = json!({"messages": [
        past("group", "g-2", "bob", "team", "second", t0 + 1_000),
        past("group", "g-1", "alice", "team", "first", t0),
        past("group", "g-3", "carol", "team", "third, from a former member", t0 + 2_000),
        past("group", "g-4", "alice", "no-such-group", "lost", t0 + 3_000),
    ]});
    let a = signed(&gw, &app, "/v1/messages/import", &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let rows = a.json()["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 4, "{}", a.body);
    assert_eq!(rows[3]["error"]["code"], json!(404), "{}", a.body);
    let seq = |i: usize| rows[i]["seq"].as_u64().expect("seq");
    // Seqs follow the times (the creation notice is seq 1), rows follow the request.
    assert_eq!((seq(1), seq(0), seq(2)), (2, 3, 4), "{}", a.body);
    assert_eq!(rows[0]["conversation"], json!("g:team"));
    // A retried import adds nothing.
    let again = signed(&gw, &app, "/v1/messages/import", &body).await;
    assert_eq!(
        again.json()["rows"][0]["duplicate"],
        json!(true),
        "{}",
        again.body
    );

    // A live message is the first thing bob's device hears: the import sent no events.
    let a = signed(
        &gw,
        &app,
        "/v1/group/send",
        &json!({"group_id": "team", "from": "alice", "text": "live now"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = bob
        .next(|k| match k {
            im::event::Kind::Message(m) if !text_of(m).is_empty() => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!((text_of(&m), m.seq), ("live now", 5));

    // History: in seq order with their original times and senders.
    let h = bob.client.history("g:team", 0, 10).await.expect("history");
    let seen: Vec<(u64, u64, String, String)> = h
        .messages
        .iter()
        .filter(|m| (2..=4).contains(&m.seq))
        .map(|m| {
            (
                m.seq,
                m.server_time_ms,
                m.from.clone(),
                text_of(m).to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                4,
                t0 + 2_000,
                "carol".into(),
                "third, from a former member".into()
            ),
            (3, t0 + 1_000, "bob".into(), "second".into()),
            (2, t0, "alice".into(), "first".into()),
        ]
    );
    // Sync from the start gives the same messages in order.
    let mut cursors = HashMap::from([("g:team".to_owned(), 1u64)]);
    let (msgs, _) = bob.client.sync_all(&mut cursors).await.expect("sync");
    let texts: Vec<&str> = msgs
        .iter()
        .filter(|m| m.conversation == "g:team")
        .map(text_of)
        .collect();
    assert_eq!(
        texts,
        ["first", "second", "third, from a former member", "live now"]
    );
    // Read as past traffic: only the live message counts for bob.
    assert_eq!(unread(&bob, "g:team").await, 1);

    // With `unread`, members other than the sender see the imported messages as unread.
    let body = json!({"unread": true, "messages": [
        past("group", "g-5", "alice", "team", "late import", t0 + 4_000),
    ]});
    let a = signed(&gw, &app, "/v1/messages/import", &body).await;
    assert_eq!(a.json()["rows"][0]["seq"], json!(6), "{}", a.body);
    assert_eq!(unread(&bob, "g:team").await, 2);
    let alice = b.device(app.tenant, "alice", "alice-phone").await;
    assert_eq!(unread(&alice, "g:team").await, 0, "alice sent both");
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_and_private_messages_import_read_or_unread_as_asked() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = App::create(&b, "acme").await;
    for u in ["alice", "bob"] {
        b.user(app.tenant, u).await;
    }
    let t0 = day_ago();
    let body = json!({"unread": true, "messages": [
        past("system", "s-1", "", "bob", "welcome", t0),
        past("private", "p-1", "alice", "bob", "hi bob", t0 + 1_000),
        past("system", "s-2", "", "", "to nobody", t0 + 2_000),
        past("private", "p-2", "alice", "bob", "from the future", t0 + 3 * 86_400_000),
    ]});
    let a = signed(&gw, &app, "/v1/messages/import", &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let rows = a.json()["rows"].as_array().cloned().unwrap_or_default();
    let sys = rows[0]["conversation"].as_str().expect("conv").to_owned();
    let p2p = rows[1]["conversation"].as_str().expect("conv").to_owned();
    assert!(sys.starts_with("s:"), "{}", a.body);
    assert!(p2p.starts_with("p:"), "{}", a.body);
    assert_eq!(rows[2]["error"]["code"], json!(400), "{}", a.body);
    assert_eq!(rows[3]["error"]["code"], json!(400), "{}", a.body);

    let bob = b.device(app.tenant, "bob", "bob-phone").await;
    let h = bob.client.history(&sys, 0, 10).await.expect("history");
    let seen: Vec<(u64, u64, &str)> = h
        .messages
        .iter()
        .map(|m| (m.seq, m.server_time_ms, text_of(m)))
        .collect();
    assert_eq!(seen, vec![(1, t0, "welcome")]);
    assert_eq!(h.messages[0].from, "", "the tenant sends system messages");
    // Asked to stay unread: bob has both to read; alice has read what she sent.
    assert_eq!(unread(&bob, &sys).await, 1);
    assert_eq!(unread(&bob, &p2p).await, 1);
    let alice = b.device(app.tenant, "alice", "alice-phone").await;
    assert_eq!(unread(&alice, &p2p).await, 0);
    gw.stop().await;
    b.stop().await;
}
