//! IM tenant policies and the service side: "any account" logins, one phone at a time,
//! push jobs for offline users, workbench-app badges, incremental conversation lists.

use bytes::Bytes;
use prost::Message as _;
use switchboard_proto::im::{self, event::Kind};
use switchboard_proto::{
    Packet, Properties, QoS, ReasonCode, Subscribe, SubscriptionOptions, Version,
};
use switchboard_tests::im::{Device, ImBroker, SERVICE_SECRET, text};
use switchboard_tests::{RawClient, connect_packet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_account_mode_lets_the_app_vouch_with_its_secret_only_when_enabled() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    let tenant = b.im.tenant(t).expect("tenant");
    let login = |id: &'static str, password: String| {
        let mut c = connect_packet(Version::V5, id);
        c.username = Some(format!("{}:newcomer", tenant.app_key));
        c.password = Some(Bytes::from(password));
        RawClient::connect_or_closed(b.addr, c)
    };
    // Off by default: the app secret is not a password.
    let (_, ack) = login("n1", tenant.app_secret.clone()).await;
    assert!(matches!(ack, Some(Packet::ConnAck(a)) if a.code == ReasonCode::BadUserNameOrPassword));
    assert!(b.im.user(t, "newcomer").expect("read").is_none());
    let mut policy = tenant.policy.clone();
    policy.any_account = true;
    b.im.set_policy(t, policy).await.expect("policy");
    let (_c, ack) = login("n2", tenant.app_secret.clone()).await;
    assert!(matches!(ack, Some(Packet::ConnAck(a)) if a.code == ReasonCode::Success));
    assert!(
        b.im.user(t, "newcomer").expect("read").is_some(),
        "created on first login"
    );
    let (_, ack) = login("n3", "not-the-secret".into()).await;
    assert!(matches!(ack, Some(Packet::ConnAck(a)) if a.code == ReasonCode::BadUserNameOrPassword));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_phone_at_a_time_signs_the_older_phone_out() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    let mut policy = b.im.tenant(t).expect("tenant").policy.clone();
    policy.single_phone = true;
    b.im.set_policy(t, policy).await.expect("policy");
    let phone_token = b.im.issue_token(t, "alice", "phone", 600).expect("token");
    let mut old = Device::connect(b.addr, "alice", "old-phone", &phone_token).await;
    let pc_token = b.im.issue_token(t, "alice", "pc", 600).expect("token");
    let _pc = Device::connect(b.addr, "alice", "alice-pc", &pc_token).await;
    let _new = Device::connect(b.addr, "alice", "new-phone", &phone_token).await;
    let reason = old
        .next(|k| match k {
            Kind::Kicked(k) => Some(k.reason.clone()),
            _ => None,
        })
        .await;
    assert!(reason.contains("old-phone"), "{reason}");
    let devices: Vec<String> =
        b.im.devices(t, 1)
            .into_iter()
            .map(|(c, _)| c)
            .collect::<Vec<_>>();
    let deadline = tokio::time::Instant::now() + switchboard_tests::WAIT;
    let mut devices = devices;
    while devices.contains(&"old-phone".to_string()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        devices = b.im.devices(t, 1).into_iter().map(|(c, _)| c).collect();
    }
    assert!(!devices.contains(&"old-phone".to_string()), "{devices:?}");
    assert!(devices.contains(&"alice-pc".to_string()), "the PC stays");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipients_get_a_push_job_with_their_badge() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    // The push worker: the service credential on a shared subscription.
    let mut worker = RawClient::open(b.addr, Version::V5).await;
    let mut c = connect_packet(Version::V5, "push-worker-1");
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
                "$share/push/$im/push/#".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            )],
        }))
        .await;
    assert!(matches!(worker.recv().await, Some(Packet::SubAck(a)) if !a.codes[0].is_error()));
    // A wrong service password is refused.
    let mut c = connect_packet(Version::V5, "push-worker-2");
    c.username = Some("$service".into());
    c.password = Some(Bytes::from_static(b"guess"));
    let (_, ack) = RawClient::connect_or_closed(b.addr, c).await;
    assert!(matches!(ack, Some(Packet::ConnAck(a)) if a.code == ReasonCode::BadUserNameOrPassword));
    let alice = b.device(t, "alice", "alice-1").await;
    for i in 1..=2 {
        alice
            .client
            .send_text("bob", &format!("p{i}"), &format!("ping {i}"))
            .await
            .expect("sent");
    }
    for i in 1..=2u64 {
        let p = worker.next_publish().await;
        assert_eq!(p.topic, format!("$im/push/{t}"));
        let job = im::PushJob::decode(p.payload).expect("push job");
        assert_eq!(
            (job.user.as_str(), job.badge, job.seq, job.body.as_str()),
            ("bob", i, i, format!("ping {i}").as_str())
        );
        assert_eq!(job.collapse_key, "p:1:2");
        assert_eq!(job.job_id, format!("{t}:p:1:2:{i}:2"));
    }
    // Bob online: no push.
    let mut bob = b.device(t, "bob", "bob-1").await;
    alice
        .client
        .send_text("bob", "p3", "you are here")
        .await
        .expect("sent");
    bob.message().await;
    assert!(
        worker
            .recv_within(std::time::Duration::from_millis(300))
            .await
            .is_err(),
        "no push job for an online user"
    );
    // Only backgrounded devices: pushed as if offline, and the event still arrives.
    bob.client.set_background(true).await.expect("state");
    alice
        .client
        .send_text("bob", "p4", "wake up")
        .await
        .expect("sent");
    let job = im::PushJob::decode(worker.next_publish().await.payload).expect("push job");
    assert_eq!((job.seq, job.body.as_str()), (4, "wake up"));
    assert_eq!(bob.message().await.seq, 4);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workbench_app_messages_carry_an_app_badge_and_lists_sync_incrementally() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    let (conv, seq) =
        b.im.send_system(t, "bob", Some("approvals"), "n1", text("leave approved"))
            .await
            .expect("app message");
    assert_eq!((conv.to_string().as_str(), seq), ("a:approvals:2", 1));
    let badge = bob
        .next(|k| match k {
            Kind::AppUnread(a) => Some(a.clone()),
            _ => None,
        })
        .await;
    assert_eq!((badge.app_id.as_str(), badge.unread), ("approvals", 1));
    // Idempotent by client message id.
    let (_, again) =
        b.im.send_system(t, "bob", Some("approvals"), "n1", text("leave approved"))
            .await
            .expect("resend");
    assert_eq!(again, 1);
    let (_, s) =
        b.im.send_system(t, "bob", None, "s1", text("maintenance tonight"))
            .await
            .expect("system message");
    assert_eq!(s, 1);
    // Full list, then only what changed since.
    let first = bob
        .client
        .request::<_, im::ConversationsResponse>(
            "conversations",
            &im::ConversationsRequest { since_ms: 0 },
        )
        .await
        .expect("list");
    assert_eq!(first.conversations.len(), 2);
    assert_eq!(first.unread_total, 2);
    let since = first.server_time_ms;
    let alice = b.device(t, "alice", "alice-1").await;
    alice
        .client
        .send_text("bob", "x", "hi")
        .await
        .expect("sent");
    let changed = bob
        .client
        .request::<_, im::ConversationsResponse>(
            "conversations",
            &im::ConversationsRequest { since_ms: since },
        )
        .await
        .expect("list");
    let ids: Vec<&str> = changed
        .conversations
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(ids, ["p:1:2"], "only the conversation that changed");
    assert_eq!(changed.unread_total, 3);
    // Reading the app's messages clears its badge.
    bob.client.read("a:approvals:2", 1).await.expect("read");
    let badge = bob
        .next(|k| match k {
            Kind::AppUnread(a) => Some(a.clone()),
            _ => None,
        })
        .await;
    assert_eq!(badge.unread, 0);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_keep_at_most_the_tenants_message_cap() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let mut policy = b.im.tenant(t).expect("tenant").policy.clone();
    policy.max_messages_per_conversation = 3;
    b.im.set_policy(t, policy).await.expect("policy");
    let alice = b.device(t, "alice", "alice-1").await;
    for i in 1..=5 {
        let r = alice
            .client
            .send_text("bob", &format!("m{i}"), &format!("n{i}"))
            .await
            .expect("sent");
        assert_eq!(r.seq, i, "numbering goes on");
    }
    let bob = b.device(t, "bob", "bob-1").await;
    let (messages, list) = bob
        .client
        .sync_all(&mut std::collections::HashMap::new())
        .await
        .expect("sync");
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [3, 4, 5], "the oldest are trimmed");
    assert_eq!(list.conversations[0].max_seq, 5);
    // Clearing the history for bob: nothing before it syncs again, alice keeps hers.
    bob.client
        .update_conversation(switchboard_proto::im::UpdateConversationRequest {
            conversation: "p:1:2".into(),
            clear_history: true,
            ..Default::default()
        })
        .await
        .expect("clear");
    alice
        .client
        .send_text("bob", "m6", "after the clear")
        .await
        .expect("sent");
    let (messages, list) = bob
        .client
        .sync_all(&mut std::collections::HashMap::new())
        .await
        .expect("sync");
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [6]);
    assert_eq!(
        (list.conversations[0].min_seq, list.conversations[0].unread),
        (5, 1)
    );
    let h = alice.client.history("p:1:2", 0, 10).await.expect("history");
    let seqs: Vec<u64> = h.messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        [6, 5, 4],
        "alice keeps her history (within the cap of 3)"
    );

    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_service_identity_may_make_administrative_requests() {
    let b = ImBroker::start().await;
    let mut svc = RawClient::open(b.addr, Version::V5).await;
    let mut c = connect_packet(Version::V5, "gateway-1");
    c.username = Some("$service".into());
    c.password = Some(Bytes::from_static(SERVICE_SECRET.as_bytes()));
    svc.send(&Packet::Connect(Box::new(c))).await;
    assert!(matches!(svc.recv().await, Some(Packet::ConnAck(a)) if a.code == ReasonCode::Success));
    svc.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![("gw/replies".into(), SubscriptionOptions::default())],
    }))
    .await;
    assert!(matches!(svc.recv().await, Some(Packet::SubAck(_))));
    let request = |pkid: u16, op: &str, body: &str| {
        Packet::Publish(switchboard_proto::Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: format!("$im/admin/{op}"),
            pkid,
            properties: Properties {
                response_topic: Some("gw/replies".into()),
                correlation_data: Some(Bytes::copy_from_slice(&pkid.to_be_bytes())),
                ..Properties::default()
            },
            payload: Bytes::from(body.to_owned()),
        })
    };
    svc.send(&request(2, "create_tenant", r#"{"name":"via-mqtt"}"#))
        .await;
    let (mut answer, mut acked) = (None, false);
    while answer.is_none() || !acked {
        match svc.recv().await {
            Some(Packet::PubAck(a)) => {
                assert_eq!(a.code, ReasonCode::Success);
                acked = true;
            }
            Some(Packet::Publish(p)) => answer = Some(p),
            other => panic!("unexpected {other:?}"),
        }
    }
    let p = answer.expect("answer");
    assert_eq!(
        p.properties.correlation_data.as_deref(),
        Some(&2u16.to_be_bytes()[..])
    );
    let v: serde_json::Value = serde_json::from_slice(&p.payload).expect("JSON");
    let tenant = v["tenant_id"].as_u64().expect("tenant id");
    assert!(b.im.tenant(tenant).is_ok());
    // Bad JSON: an error answer with 400 and PUBACK 0x99.
    svc.send(&request(3, "create_user", "{not json")).await;
    let (mut code, mut err) = (None, None);
    while code.is_none() || err.is_none() {
        match svc.recv().await {
            Some(Packet::PubAck(a)) => code = Some(a.code),
            Some(Packet::Publish(p)) => {
                let v: serde_json::Value = serde_json::from_slice(&p.payload).expect("JSON");
                err = v["error"]["code"].as_u64();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        (code, err),
        (Some(ReasonCode::PayloadFormatInvalid), Some(400))
    );
    // An app user and an anonymous client are refused.
    b.user(tenant, "alice").await;
    let token = b.im.issue_token(tenant, "alice", "", 600).expect("token");
    let mut user = RawClient::open(b.addr, Version::V5).await;
    let mut c = connect_packet(Version::V5, "alice-1");
    c.password = Some(Bytes::from(token));
    user.send(&Packet::Connect(Box::new(c))).await;
    assert!(matches!(user.recv().await, Some(Packet::ConnAck(_))));
    let mut anon = RawClient::open(b.addr, Version::V5).await;
    anon.send(&Packet::Connect(Box::new(connect_packet(
        Version::V5,
        "anon",
    ))))
    .await;
    assert!(matches!(anon.recv().await, Some(Packet::ConnAck(_))));
    for client in [&mut user, &mut anon] {
        client
            .send(&request(4, "create_tenant", r#"{"name":"nope"}"#))
            .await;
        assert!(
            matches!(client.recv().await, Some(Packet::PubAck(a)) if a.code == ReasonCode::NotAuthorized)
        );
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_one_token_signs_out_only_the_devices_that_used_it() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    let t1 = b.im.issue_token(t, "alice", "phone", 600).expect("token");
    let t2 = b.im.issue_token(t, "alice", "pc", 600).expect("token");
    let _phone = Device::connect(b.addr, "alice", "alice-phone", &t1).await;
    let _pc = Device::connect(b.addr, "alice", "alice-pc", &t2).await;
    b.im.revoke_token(&t1).await.expect("revoke");
    let online = |b: &ImBroker| -> Vec<String> {
        let mut d: Vec<String> = b.im.devices(t, 1).into_iter().map(|(c, _)| c).collect();
        d.sort();
        d
    };
    let deadline = tokio::time::Instant::now() + switchboard_tests::WAIT;
    while online(&b).contains(&"alice-phone".to_string()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the phone stays online"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(online(&b), ["alice-pc"], "the PC's token is still good");
    b.stop().await;
}
