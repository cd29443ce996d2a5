//! Groups end to end (docs/im/groups.md): a broker with the IM service on a real redb
//! store, members' devices logged in with the SDK over TCP. Each test asserts what members
//! see: messages and notices in seq order, events, status codes. One seq order for notices
//! and chat, and bad requests: `im_groups_order.rs`; the app server, push jobs and fan-out
//! at scale: `im_groups_scale.rs`.

use std::collections::HashMap;

use switchboard_proto::im::{self, event::Kind};
use switchboard_tests::im::{ImBroker, text, text_of};
use switchboard_tests::im_groups::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_group_approval_kick_and_dismiss_as_members_see_them() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    for u in ["alice", "bob", "carol", "dave"] {
        b.user(t, u).await;
    }
    let mut alice = b.device(t, "alice", "alice-1").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    let mut carol = b.device(t, "carol", "carol-1").await;

    let created: im::GroupResponse = group(
        &alice,
        "create",
        &im::CreateGroupRequest {
            group_id: "team".into(),
            name: "Team".into(),
            join_mode: im::JoinMode::Approval as i32,
            members: vec!["bob".into()],
            ..im::CreateGroupRequest::default()
        },
    )
    .await
    .expect("created");
    let info = created.group.expect("group info");
    assert_eq!((info.owner.as_str(), info.member_count), ("alice", 2));
    assert_eq!(created.me.expect("me").role, im::GroupRole::Owner as i32);
    // The notice first, then the event.
    let n = next_in(&mut bob, "g:team").await;
    assert_eq!((n.seq, notice_kind(&n)), (1, "group.created"));
    let ev = group_event(&mut bob).await;
    assert_eq!((ev.kind.as_str(), ev.group_id.as_str()), ("joined", "team"));

    // Carol asks to join the private group: the owner sees the request, carol is not in.
    let r = carol
        .client
        .join_group("team", "let me in")
        .await
        .expect("join answered");
    assert!(r.pending && !r.joined);
    let ev = group_event(&mut alice).await;
    let req = ev.request.expect("the request");
    assert_eq!(
        (ev.kind.as_str(), req.account.as_str(), req.message.as_str()),
        ("join_request", "carol", "let me in")
    );
    let e = say(&carol, "team", "c0", "too early")
        .await
        .expect_err("not a member");
    assert_eq!(status(&e), 403);
    let e = group::<_, im::PendingResponse>(
        &bob,
        "pending",
        &im::GroupRef {
            group_id: "team".into(),
        },
    )
    .await
    .expect_err("members do not decide");
    assert_eq!(status(&e), 403);
    let pending: im::PendingResponse = group(
        &alice,
        "pending",
        &im::GroupRef {
            group_id: "team".into(),
        },
    )
    .await
    .expect("pending");
    let who: Vec<&str> = pending
        .requests
        .iter()
        .map(|r| r.account.as_str())
        .collect();
    assert_eq!(who, ["carol"]);
    group_ack(
        &alice,
        "decide",
        &im::DecideRequest {
            group_id: "team".into(),
            account: "carol".into(),
            approve: true,
        },
    )
    .await
    .expect("approved");
    let n = next_in(&mut carol, "g:team").await;
    assert_eq!((n.seq, notice_kind(&n)), (2, "group.member_joined"));
    assert_eq!(group_event(&mut carol).await.kind, "joined");
    let pending: im::PendingResponse = group(
        &alice,
        "pending",
        &im::GroupRef {
            group_id: "team".into(),
        },
    )
    .await
    .expect("pending");
    assert!(pending.requests.is_empty());
    // Carol now receives what bob says, and sees history only from her joining.
    say(&bob, "team", "b1", "welcome carol")
        .await
        .expect("sent");
    let m = next_in(&mut carol, "g:team").await;
    assert_eq!(
        (m.seq, text_of(&m), m.from.as_str()),
        (3, "welcome carol", "bob")
    );
    let h = carol
        .client
        .history("g:team", 0, 10)
        .await
        .expect("history");
    let seqs: Vec<u64> = h.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [3, 2], "carol's history starts at her join");
    // A rejected request: dave hears it, is not a member.
    let mut dave = b.device(t, "dave", "dave-1").await;
    let _: im::JoinGroupResponse = group(
        &dave,
        "join",
        &im::JoinGroupRequest {
            group_id: "team".into(),
            message: String::new(),
        },
    )
    .await
    .expect("join answered");
    group_ack(
        &alice,
        "decide",
        &im::DecideRequest {
            group_id: "team".into(),
            account: "dave".into(),
            approve: false,
        },
    )
    .await
    .expect("rejected");
    assert_eq!(group_event(&mut dave).await.kind, "request_rejected");

    // Kick: bob is told, and from the kick on receives nothing of the group.
    group_ack(&alice, "kick", &members("team", &["bob"]))
        .await
        .expect("kicked");
    let ev = group_event(&mut bob).await;
    assert_eq!(
        (ev.kind.as_str(), ev.operator.as_str()),
        ("removed", "alice")
    );
    let n = next_in(&mut carol, "g:team").await;
    assert_eq!(
        (
            notice_kind(&n),
            n.content.as_ref().map(|c| c.body.is_some())
        ),
        ("group.members_kicked", Some(true))
    );
    say(&alice, "team", "a1", "bob is gone")
        .await
        .expect("sent");
    // A 1:1 message after the group message: bob's next message must be it.
    alice
        .client
        .send_text("bob", "marker", "marker")
        .await
        .expect("sent");
    let m = bob
        .next(|k| match k {
            Kind::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (m.conversation.as_str(), text_of(&m)),
        ("p:1:2", "marker"),
        "the kicked member got no group message"
    );
    let m = next_in(&mut carol, "g:team").await;
    assert_eq!(text_of(&m), "bob is gone", "the others still receive");
    let e = bob.client.history("g:team", 0, 10).await.expect_err("out");
    assert_eq!(status(&e), 403);
    let e = bob
        .client
        .sync(&HashMap::from([("g:team".to_string(), 1)]), 0)
        .await
        .expect_err("out");
    assert_eq!(status(&e), 403);
    let e = say(&bob, "team", "b2", "still here?")
        .await
        .expect_err("out");
    assert_eq!(status(&e), 403);
    let list = bob.client.conversations().await.expect("list");
    assert!(list.conversations.iter().all(|c| c.id != "g:team"));

    // Dismiss: members are told, the group is gone.
    let e = group_ack(
        &carol,
        "dismiss",
        &im::GroupRef {
            group_id: "team".into(),
        },
    )
    .await
    .expect_err("only the owner dismisses");
    assert_eq!(status(&e), 403);
    group_ack(
        &alice,
        "dismiss",
        &im::GroupRef {
            group_id: "team".into(),
        },
    )
    .await
    .expect("dismissed");
    let n = next_in(&mut carol, "g:team").await;
    assert_eq!(notice_kind(&n), "group.dismissed");
    assert_eq!(group_event(&mut carol).await.kind, "removed");
    let e = group::<_, im::GroupResponse>(
        &carol,
        "info",
        &im::GroupRef {
            group_id: "team".into(),
        },
    )
    .await
    .expect_err("gone");
    assert_eq!(status(&e), 404);
    let mine = carol.client.my_groups("").await.expect("mine");
    assert!(mine.groups.is_empty());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muted_members_get_423_and_admins_still_speak_when_the_group_is_muted() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    for u in ["alice", "bob", "carol", "erin"] {
        b.user(t, u).await;
    }
    let alice = b.device(t, "alice", "alice-1").await;
    let bob = b.device(t, "bob", "bob-1").await;
    let mut carol = b.device(t, "carol", "carol-1").await;
    let erin = b.device(t, "erin", "erin-1").await;
    let _: im::GroupResponse = group(
        &alice,
        "create",
        &im::CreateGroupRequest {
            group_id: "ops".into(),
            members: vec!["bob".into(), "carol".into()],
            ..im::CreateGroupRequest::default()
        },
    )
    .await
    .expect("created");
    group_ack(&alice, "set_admins", &members("ops", &["bob"]))
        .await
        .expect("bob is an admin");
    // Per member: carol muted for an hour by admin bob.
    group_ack(
        &bob,
        "mute",
        &im::MuteMembersRequest {
            group_id: "ops".into(),
            accounts: vec!["carol".into()],
            duration_secs: 3600,
        },
    )
    .await
    .expect("muted");
    let e = say(&carol, "ops", "c1", "hello?").await.expect_err("muted");
    assert_eq!(status(&e), 423);
    // An admin may not mute the owner or another admin.
    let e = group_ack(
        &bob,
        "mute",
        &im::MuteMembersRequest {
            group_id: "ops".into(),
            accounts: vec!["alice".into()],
            duration_secs: 60,
        },
    )
    .await
    .expect_err("not the owner");
    assert_eq!(status(&e), 403);
    group_ack(
        &bob,
        "mute",
        &im::MuteMembersRequest {
            group_id: "ops".into(),
            accounts: vec!["carol".into()],
            duration_secs: 0,
        },
    )
    .await
    .expect("unmuted");
    say(&carol, "ops", "c2", "back")
        .await
        .expect("carol speaks again");
    // Whole group: members are quiet, the owner and admins are not.
    let _: im::GroupResponse = group(
        &alice,
        "update",
        &im::UpdateGroupRequest {
            group_id: "ops".into(),
            all_muted: Some(true),
            ..im::UpdateGroupRequest::default()
        },
    )
    .await
    .expect("group muted");
    let e = say(&carol, "ops", "c3", "and now?")
        .await
        .expect_err("muted");
    assert_eq!(status(&e), 423);
    let spoken = say(&bob, "ops", "b1", "admin speaking")
        .await
        .expect("admin speaks");
    // A recall reaches the members.
    bob.client
        .recall("g:ops", spoken.seq)
        .await
        .expect("recalled");
    let r = carol
        .next(|k| match k {
            Kind::Recalled(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!((r.seq, r.by.as_str()), (spoken.seq, "bob"));
    let burn = im::SendRequest {
        to: "ops".into(),
        conv_type: im::ConvType::Group as i32,
        client_msg_id: "b2".into(),
        content: Some(text("gone soon")),
        burn_after_read: true,
        ..im::SendRequest::default()
    };
    let e = bob.client.send(burn).await.expect_err("1:1 only");
    assert_eq!(status(&e), 400);
    say(&alice, "ops", "a1", "owner speaking")
        .await
        .expect("owner speaks");
    // A member may not change the group; a non-member may not speak.
    let e = group::<_, im::GroupResponse>(
        &carol,
        "update",
        &im::UpdateGroupRequest {
            group_id: "ops".into(),
            all_muted: Some(false),
            ..im::UpdateGroupRequest::default()
        },
    )
    .await
    .expect_err("members do not update");
    assert_eq!(status(&e), 403);
    let e = say(&erin, "ops", "e1", "hi")
        .await
        .expect_err("not a member");
    assert_eq!(status(&e), 403);
    let e = say(&erin, "nope", "e2", "hi")
        .await
        .expect_err("no such group");
    assert_eq!(status(&e), 404);
    b.stop().await;
}
