//! Groups end to end, continued from `im_groups.rs` (same set-up): notices and chat share
//! one seq order for every member, and bad group requests get clear status codes.

use std::collections::HashMap;

use switchboard_proto::im;
use switchboard_tests::im::{ImBroker, text};
use switchboard_tests::im_groups::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_and_chat_share_one_seq_order_for_every_member() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    for u in ["alice", "bob", "carol", "dave"] {
        b.user(t, u).await;
    }
    let alice = b.device(t, "alice", "alice-1").await;
    let bob = b.device(t, "bob", "bob-1").await;
    let carol = b.device(t, "carol", "carol-1").await;
    // Each member's second device watches: a sending device does not get its own chat
    // messages back (protocol.md 5.2), its user's other devices do.
    let mut watchers = [
        b.device(t, "alice", "alice-2").await,
        b.device(t, "bob", "bob-2").await,
        b.device(t, "carol", "carol-2").await,
    ];
    let _: im::GroupResponse = group(
        &alice,
        "create",
        &im::CreateGroupRequest {
            group_id: "mix".into(),
            name: "Mix".into(),
            members: vec!["bob".into(), "carol".into()],
            ..im::CreateGroupRequest::default()
        },
    )
    .await
    .expect("created");
    // Chat and changes interleaved, from several senders at once.
    let update = im::UpdateGroupRequest {
        group_id: "mix".into(),
        announcement: Some("read the rules".into()),
        ..im::UpdateGroupRequest::default()
    };
    let (r1, r2, r3) = tokio::join!(
        say(&bob, "mix", "b1", "one"),
        say(&carol, "mix", "c1", "two"),
        group::<_, im::GroupResponse>(&alice, "update", &update),
    );
    r1.expect("sent");
    r2.expect("sent");
    r3.expect("updated");
    group_ack(&alice, "invite", &members("mix", &["dave"]))
        .await
        .expect("invited");
    group_ack(
        &bob,
        "nickname",
        &im::NicknameRequest {
            group_id: "mix".into(),
            account: String::new(),
            nickname: "Bobby".into(),
        },
    )
    .await
    .expect("nickname");
    let mut mention = im::SendRequest {
        to: "mix".into(),
        conv_type: im::ConvType::Group as i32,
        client_msg_id: "a1".into(),
        content: Some(text("@carol look")),
        mentions: vec!["carol".into()],
        ..im::SendRequest::default()
    };
    alice.client.send(mention.clone()).await.expect("sent");
    mention.client_msg_id = "a1".into();
    let again = alice.client.send(mention).await.expect("resend answered");
    assert!(again.duplicate, "a resend is recognised");
    group_ack(&alice, "transfer", &members("mix", &["bob"]))
        .await
        .expect("transferred");

    let want_kinds = [
        "group.created",
        "",
        "",
        "group.info_updated",
        "group.members_invited",
        "group.nickname_changed",
        "",
        "group.owner_transferred",
    ];
    let mut seen = Vec::new();
    for dev in watchers.iter_mut() {
        let mut got = Vec::new();
        for _ in 0..want_kinds.len() {
            let m = next_in(dev, "g:mix").await;
            got.push((m.seq, notice_kind(&m).to_owned()));
        }
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<u64>>(), "in seq order, no gaps");
        let mut kinds: Vec<&str> = got.iter().map(|(_, k)| k.as_str()).collect();
        // The two chat messages and the update raced: only their seq order is fixed.
        kinds[1..4].sort();
        let mut want = want_kinds;
        want[1..4].sort();
        assert_eq!(kinds, want);
        seen.push(got);
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "every member sees one order"
    );
    // History agrees; dave's starts at his invitation.
    let h = carol.client.history("g:mix", 0, 20).await.expect("history");
    assert_eq!(h.messages.len(), 8);
    let dave = b.device(t, "dave", "dave-1").await;
    let mut cursors = HashMap::new();
    let (msgs, list) = dave.client.sync_all(&mut cursors).await.expect("sync");
    let kinds: Vec<&str> = msgs.iter().map(notice_kind).collect();
    assert_eq!(
        kinds,
        [
            "group.members_invited",
            "group.nickname_changed",
            "",
            "group.owner_transferred"
        ]
    );
    assert!(
        list.conversations
            .iter()
            .any(|c| c.id == "g:mix" && c.unread == 4)
    );
    // Mentions: carol's conversation is flagged.
    let list = carol.client.conversations().await.expect("list");
    let c = list
        .conversations
        .iter()
        .find(|c| c.id == "g:mix")
        .expect("listed");
    assert!(c.mentioned);
    // The member list: paged, stable, with roles and nicknames.
    let p1: im::MembersResponse = group(
        &carol,
        "members",
        &im::MembersRequest {
            group_id: "mix".into(),
            page_token: String::new(),
            limit: 3,
        },
    )
    .await
    .expect("members");
    assert_eq!(p1.members.len(), 3);
    let p2: im::MembersResponse = group(
        &carol,
        "members",
        &im::MembersRequest {
            group_id: "mix".into(),
            page_token: p1.next_page_token.clone(),
            limit: 3,
        },
    )
    .await
    .expect("members");
    assert!(p2.next_page_token.is_empty());
    let all: Vec<(String, i32, String)> = p1
        .members
        .iter()
        .chain(&p2.members)
        .map(|m| (m.account.clone(), m.role, m.nickname.clone()))
        .collect();
    assert_eq!(
        all,
        [
            (
                "alice".to_string(),
                im::GroupRole::Member as i32,
                String::new()
            ),
            (
                "bob".to_string(),
                im::GroupRole::Owner as i32,
                "Bobby".to_string()
            ),
            (
                "carol".to_string(),
                im::GroupRole::Member as i32,
                String::new()
            ),
            (
                "dave".to_string(),
                im::GroupRole::Member as i32,
                String::new()
            ),
        ]
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_get_clear_codes() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let alice = b.device(t, "alice", "alice-1").await;
    let bad_id = group::<_, im::GroupResponse>(
        &alice,
        "create",
        &im::CreateGroupRequest {
            group_id: "no spaces".into(),
            ..im::CreateGroupRequest::default()
        },
    )
    .await
    .expect_err("bad id");
    assert_eq!(status(&bad_id), 400);
    let nobody = group::<_, im::GroupResponse>(
        &alice,
        "create",
        &im::CreateGroupRequest {
            members: vec!["ghost".into()],
            ..im::CreateGroupRequest::default()
        },
    )
    .await
    .expect_err("unknown member");
    assert_eq!(status(&nobody), 404);
    // A generated id when none is given.
    let g = alice
        .client
        .create_group("", "", im::JoinMode::Open, &[])
        .await
        .expect("created");
    let gid = g.group.expect("info").group_id;
    assert!(!gid.is_empty());
    let e = alice
        .client
        .leave_group("missing")
        .await
        .expect_err("no such group");
    assert_eq!(status(&e), 404);
    let e = alice
        .client
        .request::<_, im::Ack>("group/frobnicate", &im::GroupRef::default())
        .await
        .expect_err("no such op");
    assert_eq!(status(&e), 404);
    // Over the tenant's limit: 409.
    let mut policy = b.im.tenant(t).expect("tenant").policy.clone();
    policy.max_group_members = 2;
    b.im.set_policy(t, policy).await.expect("policy");
    b.user(t, "carol").await;
    let e = group_ack(&alice, "invite", &members(&gid, &["bob", "carol"]))
        .await
        .expect_err("full");
    assert_eq!(status(&e), 409);
    // The last member leaving dismisses the group.
    alice.client.leave_group(&gid).await.expect("left");
    let e = group::<_, im::GroupResponse>(&alice, "info", &im::GroupRef { group_id: gid })
        .await
        .expect_err("gone");
    assert_eq!(status(&e), 404);
    b.stop().await;
}
