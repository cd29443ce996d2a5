//! Groups at the edges of the broker (docs/im/groups.md): the app server over
//! `$im/admin/group/...` with a `$service` login, batched push jobs, and fan-out to 1,000
//! members with 200 online over TCP on a real redb store.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message as _;
use serde_json::json;
use switchboard_proto::im;
use switchboard_proto::{Packet, Properties, QoS, Subscribe, SubscriptionOptions, Version};
use switchboard_tests::im::{ImBroker, SERVICE_SECRET};
use switchboard_tests::im_groups::*;
use switchboard_tests::{RawClient, connect_packet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_server_manages_groups_over_mqtt() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    for u in ["u1", "u2", "u3", "u4"] {
        b.user(t, u).await;
    }
    let mut u3 = b.device(t, "u3", "u3-1").await;
    let mut app = AppServer::connect(&b).await;
    // RongCloud's model: the app server picks the id and the members.
    let g = app
        .call(
            "create",
            json!({"tenant": t, "group_id": "g-100", "name": "Sales", "members": ["u1", "u2", "u3"]}),
        )
        .await;
    assert_eq!(
        (
            g["group_id"].as_str(),
            g["owner"].as_str(),
            g["member_count"].as_u64()
        ),
        (Some("g-100"), Some("u1"), Some(3))
    );
    let n = next_in(&mut u3, "g:g-100").await;
    assert_eq!(notice_kind(&n), "group.created");
    let dup = app
        .call(
            "create",
            json!({"tenant": t, "group_id": "g-100", "members": ["u1"]}),
        )
        .await;
    assert_eq!(dup["error"]["code"].as_u64(), Some(409));
    let j = app
        .call(
            "join",
            json!({"tenant": t, "group_id": "g-100", "members": ["u4"]}),
        )
        .await;
    assert_eq!(j["added"], json!(["u4"]));
    let q = app
        .call(
            "quit",
            json!({"tenant": t, "group_id": "g-100", "members": ["u2"]}),
        )
        .await;
    assert_eq!(q, json!({}));
    let m = app
        .call("members", json!({"tenant": t, "group_id": "g-100"}))
        .await;
    let accounts: Vec<&str> = m["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["account"].as_str())
        .collect();
    assert_eq!(accounts, ["u1", "u3", "u4"]);
    // Everything an owner can do: update, mute, send on a member's behalf.
    let u = app
        .call(
            "update",
            json!({"tenant": t, "group_id": "g-100", "announcement": "Q3 targets", "join_mode": "approval"}),
        )
        .await;
    assert_eq!(
        (u["announcement"].as_str(), u["join_mode"].as_str()),
        (Some("Q3 targets"), Some("approval"))
    );
    let s = app
        .call(
            "send",
            json!({"tenant": t, "group_id": "g-100", "from": "u1", "text": "hi all"}),
        )
        .await;
    let seq = s["seq"].as_u64().expect("seq");
    let kinds: Vec<(u64, String)> = {
        let mut v = Vec::new();
        loop {
            let m = next_in(&mut u3, "g:g-100").await;
            v.push((m.seq, notice_kind(&m).to_owned()));
            if m.seq == seq {
                break;
            }
        }
        v
    };
    assert_eq!(
        kinds.last(),
        Some(&(seq, String::new())),
        "the message after the notices: {kinds:?}"
    );
    // Sync a user's groups: joined to the listed ones (created if missing), out of others.
    let s = app
        .call(
            "sync",
            json!({"tenant": t, "user": "u3", "groups": [{"id": "g-200", "name": "New"}]}),
        )
        .await;
    assert_eq!(
        (s["created"].clone(), s["left"].clone()),
        (json!(["g-200"]), json!(["g-100"]))
    );
    let mine = app
        .call("user_groups", json!({"tenant": t, "user": "u3"}))
        .await;
    let ids: Vec<&str> = mine["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["group_id"].as_str())
        .collect();
    assert_eq!(ids, ["g-200"]);
    let d = app
        .call("dismiss", json!({"tenant": t, "group_id": "g-100"}))
        .await;
    assert_eq!(d, json!({}));
    let i = app
        .call("info", json!({"tenant": t, "group_id": "g-100"}))
        .await;
    assert_eq!(i["error"]["code"].as_u64(), Some(404));
    let bad = app.call("create", json!({"tenant": t})).await;
    assert_eq!(bad["error"]["code"].as_u64(), Some(400));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_members_get_batched_push_jobs_except_with_do_not_disturb() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    for u in ["alice", "bob", "carol", "dave"] {
        b.user(t, u).await;
    }
    let mut worker = RawClient::open(b.addr, Version::V5).await;
    let mut c = connect_packet(Version::V5, "push-worker");
    c.username = Some("$service".into());
    c.password = Some(Bytes::from_static(SERVICE_SECRET.as_bytes()));
    worker.send(&Packet::Connect(Box::new(c))).await;
    assert!(matches!(worker.recv().await, Some(Packet::ConnAck(_))));
    worker
        .send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            properties: Properties::default(),
            filters: vec![(
                "$share/push/$im/push/#".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            )],
        }))
        .await;
    assert!(matches!(worker.recv().await, Some(Packet::SubAck(_))));
    let alice = b.device(t, "alice", "alice-1").await;
    let dave = b.device(t, "dave", "dave-1").await;
    let _: im::GroupResponse = group(
        &alice,
        "create",
        &im::CreateGroupRequest {
            group_id: "quiet".into(),
            name: "Quiet".into(),
            members: vec!["bob".into(), "carol".into(), "dave".into()],
            ..im::CreateGroupRequest::default()
        },
    )
    .await
    .expect("created");
    // Dave (online, but about to go offline) turns do-not-disturb on.
    group_ack(
        &dave,
        "dnd",
        &im::DndRequest {
            group_id: "quiet".into(),
            dnd: true,
        },
    )
    .await
    .expect("dnd");
    dave.client.shutdown().await;
    let r = say(&alice, "quiet", "a1", "standup in 5")
        .await
        .expect("sent");
    let job = loop {
        let p = worker.next_publish().await;
        let job = im::PushJob::decode(p.payload).expect("push job");
        if job.seq == r.seq {
            break job;
        }
    };
    let mut users = job.users.clone();
    users.sort();
    assert_eq!(
        users,
        ["bob", "carol"],
        "one job for the offline members, not dave"
    );
    assert_eq!(
        (
            job.title.as_str(),
            job.body.as_str(),
            job.conversation.as_str()
        ),
        ("Quiet", "standup in 5", "g:quiet")
    );
    // What the worker's `group_text` template is filled with ("{group}", "{sender}: {text}").
    assert_eq!(
        (
            job.kind.as_str(),
            job.group,
            job.group_name.as_str(),
            job.sender_name.as_str()
        ),
        ("text", true, "Quiet", "alice")
    );
    // Dave's list shows the group muted, and it does not count in his badge.
    let dave = b.device(t, "dave", "dave-2").await;
    let list = dave.client.conversations().await.expect("list");
    let c = list
        .conversations
        .iter()
        .find(|c| c.id == "g:quiet")
        .expect("listed");
    assert!(c.muted && c.unread > 0);
    assert_eq!(list.unread_total, 0);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_1000_members_200_online_stores_each_message_once() {
    const MEMBERS: usize = 1000;
    const ONLINE: usize = 200;
    const MESSAGES: u64 = 50;
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    let accounts: Vec<String> = (0..MEMBERS).map(|i| format!("m{i:04}")).collect();
    for a in &accounts {
        b.user(t, a).await;
    }
    let mut app = AppServer::connect(&b).await;
    let g = app
        .call(
            "create",
            json!({"tenant": t, "group_id": "big", "members": accounts[..500]}),
        )
        .await;
    assert_eq!(g["member_count"].as_u64(), Some(500));
    let j = app
        .call(
            "join",
            json!({"tenant": t, "group_id": "big", "members": accounts[500..]}),
        )
        .await;
    assert_eq!(j["added"].as_array().map(Vec::len), Some(500));
    // And a 2-member group for comparison.
    app.call(
        "create",
        json!({"tenant": t, "group_id": "pair", "members": [accounts[0], accounts[1]]}),
    )
    .await;
    let mut online = Vec::new();
    for a in &accounts[..ONLINE] {
        online.push(b.device(t, a, &format!("{a}-1")).await);
    }
    // The first member sends from a device of its own: the 200 online devices all
    // receive (a sending device does not get its own messages back, protocol.md 5.2).
    let sender_device = b.device(t, &accounts[0], "sender").await;
    let body = "x".repeat(1000);
    let send_n = |gid: &'static str| {
        let sender = &sender_device;
        let body = body.clone();
        async move {
            for i in 0..MESSAGES {
                say(sender, gid, &format!("{gid}-{i}"), &body)
                    .await
                    .expect("sent");
            }
        }
    };
    let before = store_ops(&b);
    send_n("pair").await;
    let pair_ops = store_ops(&b) - before;
    let before = store_ops(&b);
    send_n("big").await;
    let big_ops = store_ops(&b) - before;
    // Every online member gets every message, in order.
    let mut receivers = tokio::task::JoinSet::new();
    for mut d in online {
        receivers.spawn(async move {
            let mut seqs = Vec::new();
            while seqs.len() < MESSAGES as usize {
                let m = next_in(&mut d, "g:big").await;
                if notice_kind(&m).is_empty() {
                    seqs.push(m.seq);
                }
            }
            d.client.shutdown().await;
            seqs
        });
    }
    let all = receivers.join_all().await;
    assert_eq!(all.len(), ONLINE);
    let first = all[0].clone();
    assert_eq!(first.len(), MESSAGES as usize);
    assert!(first.windows(2).all(|w| w[1] == w[0] + 1));
    assert!(
        all.iter().all(|s| *s == first),
        "all 200 received all, in order"
    );
    // An offline member syncs them later.
    let late = b.device(t, &accounts[MEMBERS - 1], "late-1").await;
    let mut cursors = HashMap::new();
    let (msgs, _) = late.client.sync_all(&mut cursors).await.expect("sync");
    let chat: Vec<u64> = msgs
        .iter()
        .filter(|m| m.conversation == "g:big" && notice_kind(m).is_empty())
        .map(|m| m.seq)
        .collect();
    assert_eq!(chat, first);
    // Stored once: the writes for 50 messages to 1,000 members are those for 50 messages
    // to 2 (a copy or a row per member would be 50,000 more).
    eprintln!(
        "store ops for {MESSAGES} messages: 2 members {pair_ops}, {MEMBERS} members {big_ops}"
    );
    assert!(
        big_ops <= pair_ops + MESSAGES,
        "{big_ops} ops for the big group vs {pair_ops} for the pair"
    );
    let h = late.client.history("g:big", 0, 500).await.expect("history");
    assert_eq!(
        h.messages.len() as u64,
        MESSAGES + 1,
        "one log entry per message (and the notice of the late member's joining)"
    );
    b.stop().await;
}
