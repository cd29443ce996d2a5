//! Broadcasts end to end: to a department (its sub-departments included, nobody else),
//! to everyone (online users at once, offline users on sync), to a list, recall; one
//! shared log entry per broadcast whatever the number of users.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message as _;
use switchboard_broker::im::broadcast::Audience;
use switchboard_proto::im::{self, ConvType, event::Kind};
use switchboard_proto::{
    Packet, Properties, QoS, ReasonCode, Subscribe, SubscriptionOptions, Version,
};
use switchboard_tests::im::{ImBroker, SERVICE_SECRET, text, text_of};
use switchboard_tests::{RawClient, connect_packet};

const CSV: &str = "\
account,name,department
ann,Ann,Sales
ben,Ben,Sales/East
cat,Cat,R&D
";

fn dept(b: &ImBroker, t: u64, path: &str) -> u64 {
    b.im.list_depts(t)
        .expect("departments")
        .into_iter()
        .find(|d| d["path"] == path)
        .and_then(|d| d["dept_id"].as_u64())
        .expect("department")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_broadcast_reaches_its_subtree_online_at_once_offline_on_sync() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.im.import_csv(t, CSV, None).await.expect("import");
    let sales = dept(&b, t, "Sales");
    let mut ann = b.device(t, "ann", "ann-1").await;
    let mut cat = b.device(t, "cat", "cat-1").await;
    // ben (Sales/East) is offline.
    let (conv, seq, dup) =
        b.im.broadcast(
            t,
            Audience::Dept(sales),
            "",
            "q3-kickoff",
            text("Sales kickoff at 10"),
        )
        .await
        .expect("broadcast");
    assert_eq!(
        (conv.to_string(), seq, dup),
        (format!("b:d{sales}"), 1, false)
    );
    let m = ann.message().await;
    assert_eq!(m.conversation, format!("b:d{sales}"));
    assert_eq!(m.conv_type, ConvType::Broadcast as i32);
    assert_eq!(text_of(&m), "Sales kickoff at 10");
    let u = ann.unread().await;
    assert_eq!(
        (u.conversation, u.unread, u.total),
        (format!("b:d{sales}"), 1, 1)
    );

    // A resend with the same id is recognised; nothing is appended.
    let (_, again, dup) =
        b.im.broadcast(
            t,
            Audience::Dept(sales),
            "",
            "q3-kickoff",
            text("Sales kickoff at 10"),
        )
        .await
        .expect("resend");
    assert_eq!((again, dup), (1, true));

    // cat (R&D) did not get it: the next thing cat hears is the broadcast to everyone.
    b.im.broadcast(t, Audience::All, "", "all-1", text("Office closed Friday"))
        .await
        .expect("broadcast");
    let m = cat.message().await;
    assert_eq!(
        (m.conversation.as_str(), text_of(&m)),
        ("b:all", "Office closed Friday")
    );
    assert_eq!(text_of(&ann.message().await), "Office closed Friday");

    // ben logs in later and finds both on sync, as conversations of his list.
    let ben = b.device(t, "ben", "ben-1").await;
    let mut cursors = HashMap::new();
    let (messages, last) = ben.client.sync_all(&mut cursors).await.expect("sync");
    let got: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m.conversation.as_str(), text_of(m)))
        .collect();
    assert!(got.contains(&("b:all", "Office closed Friday")), "{got:?}");
    let dept_conv = format!("b:d{sales}");
    assert!(
        got.contains(&(dept_conv.as_str(), "Sales kickoff at 10")),
        "{got:?}"
    );
    assert_eq!(last.unread_total, 2);
    // Reading one clears its unread count (a cursor, written only now).
    ben.client.read(&dept_conv, 1).await.expect("read");
    let list = ben.client.conversations().await.expect("list");
    assert_eq!(list.unread_total, 1);

    // cat never sees the Sales log and may not read it.
    let (messages, _) = cat
        .client
        .sync_all(&mut HashMap::new())
        .await
        .expect("sync");
    assert!(
        messages.iter().all(|m| m.conversation == "b:all"),
        "{messages:?}"
    );
    let denied = cat.client.history(&dept_conv, 0, 10).await;
    assert!(
        matches!(
            denied,
            Err(switchboard_client::im::ImError::Status { code: 403, .. })
        ),
        "{denied:?}"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_to_everyone_is_one_log_entry_whether_10_or_2000_users() {
    let b = ImBroker::start().await;
    let small = b.tenant("small").await;
    let big = b.tenant("big").await;
    for (t, n) in [(small, 10), (big, 2000)] {
        let mut csv = String::from("account,department\n");
        for i in 0..n {
            csv.push_str(&format!("u{i},Staff\n"));
        }
        b.im.import_csv(t, &csv, None).await.expect("import");
    }
    let mut online = b.device(big, "u7", "u7").await;
    let mut growth = Vec::new();
    for t in [small, big] {
        let before = b.im.tenant_records(t).expect("count");
        for i in 0..3 {
            b.im.broadcast(
                t,
                Audience::All,
                "",
                &format!("n{i}"),
                text(&format!("notice {i}")),
            )
            .await
            .expect("broadcast");
        }
        let after = b.im.tenant_records(t).expect("count");
        assert_eq!(b.im.broadcast_entries(t, "all").expect("log"), 3);
        growth.push(after - before);
    }
    assert_eq!(
        growth,
        [0, 0],
        "no record per user, for 10 users as for 2,000"
    );
    for i in 0..3 {
        assert_eq!(text_of(&online.message().await), format!("notice {i}"));
    }
    // A user offline during the broadcasts gets them on sync, in order.
    let late = b.device(big, "u1999", "u1999").await;
    let (messages, _) = late
        .client
        .sync_all(&mut HashMap::new())
        .await
        .expect("sync");
    let texts: Vec<&str> = messages.iter().map(text_of).collect();
    assert_eq!(texts, ["notice 0", "notice 1", "notice 2"]);
    // A user created after them does not see earlier broadcasts.
    b.user(big, "newcomer").await;
    let newcomer = b.device(big, "newcomer", "newcomer").await;
    let (messages, _) = newcomer
        .client
        .sync_all(&mut HashMap::new())
        .await
        .expect("sync");
    assert!(messages.is_empty(), "{messages:?}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_broadcasts_are_system_notices_and_broadcasts_can_be_recalled() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.im.import_csv(t, CSV, None).await.expect("import");
    let mut ann = b.device(t, "ann", "ann-1").await;
    let mut cat = b.device(t, "cat", "cat-1").await;
    let answer = b
        .im
        .admin_request(
            "broadcast/users",
            serde_json::json!({ "tenant": t, "to": ["ann", "ghost"], "text": "Your badge is ready", "client_msg_id": "badge-1" })
                .to_string()
                .as_bytes(),
        )
        .await
        .expect("list broadcast");
    assert_eq!(answer["not_found"], serde_json::json!(["ghost"]));
    let m = ann.message().await;
    assert!(m.conversation.starts_with("s:"), "{}", m.conversation);
    assert_eq!(text_of(&m), "Your badge is ready");

    let sent =
        b.im.admin_request(
            "broadcast/all",
            serde_json::json!({ "tenant": t, "text": "Wrong date!" })
                .to_string()
                .as_bytes(),
        )
        .await
        .expect("broadcast");
    let seq = sent["seq"].as_u64().expect("seq");
    // cat heard nothing of the list broadcast: the first thing is this one.
    assert_eq!(text_of(&cat.message().await), "Wrong date!");
    assert_eq!(text_of(&ann.message().await), "Wrong date!");
    b.im.admin_request(
        "broadcast/recall",
        serde_json::json!({ "tenant": t, "conversation": "b:all", "seq": seq })
            .to_string()
            .as_bytes(),
    )
    .await
    .expect("recall");
    let recalled = cat
        .next(|k| match k {
            Kind::Recalled(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (recalled.conversation.as_str(), recalled.seq),
        ("b:all", seq)
    );
    let page = cat.client.history("b:all", 0, 10).await.expect("history");
    assert!(page.messages[0].recalled && page.messages[0].content.is_none());
    let bad =
        b.im.admin_request(
            "broadcast/dept",
            serde_json::json!({ "tenant": t, "dept": 999, "text": "x" })
                .to_string()
                .as_bytes(),
        )
        .await;
    assert!(matches!(bad, Err(e) if e.code() == 404));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_users_of_a_broadcast_get_batched_push_chunks() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    let mut csv = String::from("account,department\n");
    for i in 0..2500 {
        csv.push_str(&format!("u{i:04},Staff\n"));
    }
    b.im.import_csv(t, &csv, None).await.expect("import");
    // The push worker: the service credential.
    let mut worker = RawClient::open(b.addr, Version::V5).await;
    let mut c = connect_packet(Version::V5, "push-worker");
    c.username = Some("$service".into());
    c.password = Some(Bytes::from_static(SERVICE_SECRET.as_bytes()));
    worker.send(&Packet::Connect(Box::new(c))).await;
    assert!(
        matches!(worker.recv().await, Some(Packet::ConnAck(a)) if a.code == ReasonCode::Success)
    );
    worker
        .send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            properties: Properties::default(),
            filters: vec![(
                "$im/push/+/broadcast".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            )],
        }))
        .await;
    assert!(matches!(worker.recv().await, Some(Packet::SubAck(a)) if !a.codes[0].is_error()));
    let mut online = b.device(t, "u0007", "u0007").await;
    let (_, seq, _) =
        b.im.broadcast(t, Audience::All, "", "push-1", text("Fire drill at 3"))
            .await
            .expect("broadcast");
    online.message().await;
    let mut users = Vec::new();
    let mut chunks = 0;
    while users.len() < 2499 {
        let p = worker.next_publish().await;
        assert_eq!(p.topic, format!("$im/push/{t}/broadcast"));
        let chunk = im::BroadcastPush::decode(p.payload).expect("chunk");
        assert_eq!((chunk.seq, chunk.conversation.as_str()), (seq, "b:all"));
        assert_eq!(chunk.body, "Fire drill at 3");
        assert_eq!(chunk.chunk, chunks);
        assert!(chunk.users.len() <= 1000);
        chunks += 1;
        users.extend(chunk.users);
    }
    assert_eq!(chunks, 3, "1,000 + 1,000 + 499");
    assert!(!users.contains(&"u0007".to_owned()), "online: no push");
    users.sort();
    users.dedup();
    assert_eq!(users.len(), 2499);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workbench_app_notices_to_departments_reach_their_subtree_members() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.im.import_csv(t, CSV, None).await.expect("import");
    let sales = dept(&b, t, "Sales");
    let admin = |op: &'static str, body: serde_json::Value| {
        let im = b.im.clone();
        async move { im.admin_request(op, body.to_string().as_bytes()).await }
    };
    let app = admin(
        "app/create",
        serde_json::json!({ "tenant": t, "name": "审批", "identifier": "approval" }),
    )
    .await
    .expect("app");
    let app_id = app["app_id"].as_str().expect("app id").to_owned();
    // Youdu's toDept: Sales and everything below it; not R&D.
    let r = admin(
        "app/notice",
        serde_json::json!({ "tenant": t, "app_id": app_id, "depts": [sales], "text": "Approve Q3 budget" }),
    )
    .await
    .expect("notice");
    assert_eq!(r["sent"], serde_json::json!(["ann", "ben"]));
    let unknown = admin(
        "app/notice",
        serde_json::json!({ "tenant": t, "app_id": app_id, "depts": [999], "text": "x" }),
    )
    .await;
    assert!(matches!(unknown, Err(e) if e.code() == 404));
    // A workbench app visible to Sales only: ben (Sales/East) sees it, cat (R&D) does not.
    admin(
        "app/update",
        serde_json::json!({ "tenant": t, "app_id": app_id, "visibility": { "mode": "only", "departments": [sales] } }),
    )
    .await
    .expect("visibility");
    for (user, sees) in [("ben", true), ("cat", false)] {
        let d = b.device(t, user, user).await;
        let list: im::WorkbenchResponse = d
            .client
            .request("app/list", &im::WorkbenchRequest::default())
            .await
            .expect("workbench");
        assert_eq!(list.apps.iter().any(|a| a.app_id == app_id), sees, "{user}");
    }
    b.stop().await;
}
