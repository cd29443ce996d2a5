//! IM in a cluster: three `switchboard broker` processes sharing a real nats-server and a
//! private PostgreSQL (Debian's packages, loopback, temporary directories), tenants, users
//! and tokens made with `switchboard ctl`, devices logged in with the Rust SDK over TCP.
//!
//! - 1:1 and group messages sent on node 0 reach the recipients' devices on nodes 1 and 2
//!   once each, in seq order;
//! - kill -9 of the sender's node under IM load: the sender carries on from another node,
//!   and a sync anywhere finds every acknowledged message once, seqs without gaps;
//! - the badge of a user with devices on two nodes is right on both after a read on one,
//!   also for the next message sent through the other node (its cached total was evicted);
//! - a member added on node 1 gets the next group message sent through node 2;
//! - no push job for a user online on another node, one once they are gone;
//! - presence comes back after a NATS outage longer than a lease;
//! - a call between users on two nodes rings, connects, signals and ends (requests go to
//!   the call's node), is busy for a caller on a third node, and ends with its node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use switchboard_client::im::{ImClient, ImError};
use switchboard_proto::im::{self, call_event::Kind as Ev, event::Kind};
use switchboard_tests::WAIT;
use switchboard_tests::cluster::Cluster;
use switchboard_tests::im::{Device, config, text_of};
use switchboard_tests::nats::{metric, until_metric};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Text messages of `conv` (any, when empty) that reach `dev`, in arrival order, up to
/// and including the one whose text is `last`: (seq, text) each. Messages of one
/// conversation arrive in order, so a duplicate of an earlier one would be in the list.
async fn texts_until(dev: &mut Device, from: &str, last: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    loop {
        let m = dev.message().await;
        if m.from != from || text_of(&m).is_empty() {
            continue;
        }
        let text = text_of(&m).to_owned();
        out.push((m.seq, text.clone()));
        if text == last {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_one_and_group_messages_cross_nodes_once_each_in_seq_order() {
    let Some((c, t)) = Cluster::start_im(BIN, "clim-cross", &["alice", "bob", "carol"]).await
    else {
        return;
    };
    let alice = c.device(0, &t, "alice", "alice-0").await;
    let mut bob1 = c.device(1, &t, "bob", "bob-1").await;
    let mut bob2 = c.device(2, &t, "bob", "bob-2").await;
    let mut carol = c.device(2, &t, "carol", "carol-2").await;
    // Node 0 knows that bob and carol are online elsewhere.
    c.sees_remote_users(0, 2).await;
    c.interest(1, 3).await;
    c.interest(2, 6).await;

    // 1:1: 30 messages from node 0 to bob's devices on nodes 1 and 2, then a marker.
    let mut acked = Vec::new();
    for i in 1..=31 {
        let text = if i == 31 {
            "end".to_owned()
        } else {
            format!("m{i}")
        };
        let r = alice
            .client
            .send_text("bob", &format!("p{i}"), &text)
            .await
            .expect("sent");
        acked.push((r.seq, text));
    }
    let seqs: Vec<u64> = acked.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=31).collect::<Vec<u64>>(), "seqs in order");
    for dev in [&mut bob1, &mut bob2] {
        assert_eq!(
            texts_until(dev, "alice", "end").await,
            acked,
            "every message once, in seq order"
        );
    }

    // Group: created on node 0 with bob and carol, 20 messages and a marker.
    let g = alice
        .client
        .create_group("team", "Team", im::JoinMode::Open, &["bob", "carol"])
        .await
        .expect("group created");
    assert_eq!(g.group.map(|g| g.member_count), Some(3));
    let mut acked = Vec::new();
    for i in 1..=21 {
        let text = if i == 21 {
            "gend".to_owned()
        } else {
            format!("g{i}")
        };
        let r = alice
            .client
            .send_group_text("team", &format!("g{i}"), &text)
            .await
            .expect("sent to the group");
        acked.push((r.seq, text));
    }
    assert!(
        acked.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "group seqs without gaps"
    );
    for dev in [&mut bob1, &mut bob2, &mut carol] {
        assert_eq!(
            texts_until(dev, "alice", "gend").await,
            acked,
            "every group message once, in seq order"
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_senders_node_under_im_load_then_sync_finds_every_acknowledged_message() {
    let Some((mut c, t)) = Cluster::start_im(BIN, "clim-kill", &["alice", "bob"]).await else {
        return;
    };
    let alice_token = c.token(1, &t, "alice").await;
    let mut bob = c.device(2, &t, "bob", "bob-2").await;
    c.sees_remote_users(1, 1).await;
    c.interest(2, 3).await;
    let (client, _events) = ImClient::connect(config(c.addr(1), "alice", "alice-1", &alice_token))
        .await
        .expect("login on node 1");
    // client message id → seq, for every acknowledged send.
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let send_from = |client: ImClient, first: u32, until: Option<u32>| {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut n = first;
            while until.is_none_or(|u| n <= u) {
                let id = format!("k{n}");
                match client.send_text("bob", &id, &format!("message {n}")).await {
                    Ok(r) => {
                        let prev = acked.lock().expect("lock").insert(id, r.seq);
                        assert!(
                            prev.is_none() || prev == Some(r.seq),
                            "a resend got a new seq"
                        );
                        n += 1;
                    }
                    Err(_) => return n,
                }
            }
            n
        })
    };
    let sender = send_from(client.clone(), 1, None);
    // Under load: bob (node 2) sees 40 of them live, then node 1 dies.
    let mut live = Vec::new();
    while live.len() < 40 {
        let m = bob.message().await;
        live.push(m.seq);
    }
    c.kill9(1).await;
    client.shutdown().await;
    let next = tokio::time::timeout(3 * WAIT, sender)
        .await
        .expect("the sender notices its node is gone")
        .expect("sender task");
    // Alice carries on from node 0: the unacknowledged send again (same client message
    // id), then 10 more.
    let (client, _events) = ImClient::connect(config(c.addr(0), "alice", "alice-0", &alice_token))
        .await
        .expect("login on node 0");
    let last = send_from(client.clone(), next, Some(next + 10))
        .await
        .expect("sender task");
    assert_eq!(last, next + 11, "every send after the move acknowledged");
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 50, "too few acknowledged: {}", acked.len());

    // Bob syncs on node 0 from nothing, and so does a device of alice's on node 2.
    let bob0 = c.device(0, &t, "bob", "bob-0").await;
    let alice2 = c.device(2, &t, "alice", "alice-2").await;
    for who in [&bob0, &alice2] {
        let (messages, _) = who
            .client
            .sync_all(&mut HashMap::new())
            .await
            .expect("sync");
        let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=messages.len() as u64).collect::<Vec<u64>>(),
            "seqs without gaps"
        );
        let mut seen = HashMap::new();
        for m in &messages {
            assert!(
                seen.insert(m.client_msg_id.clone(), m.seq).is_none(),
                "{} stored twice",
                m.client_msg_id
            );
        }
        for (id, seq) in &acked {
            assert_eq!(
                seen.get(id),
                Some(seq),
                "acknowledged {id} (seq {seq}) lost or moved"
            );
        }
    }
    // What bob saw live came in seq order, each once.
    assert!(
        live.windows(2).all(|w| w[0] < w[1]),
        "live delivery in seq order: {live:?}"
    );
    client.shutdown().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_badge_is_right_on_two_devices_on_two_nodes_after_a_read_on_one() {
    let Some((c, t)) = Cluster::start_im(BIN, "clim-unread", &["alice", "bob", "carol"]).await
    else {
        return;
    };
    let alice = c.device(0, &t, "alice", "alice-0").await;
    let mut bob1 = c.device(1, &t, "bob", "bob-1").await;
    let mut bob2 = c.device(2, &t, "bob", "bob-2").await;
    let carol = c.device(2, &t, "carol", "carol-2").await;
    c.sees_remote_users(0, 2).await;
    c.sees_remote_users(1, 1).await;
    c.sees_remote_users(2, 1).await;
    c.interest(1, 3).await;
    c.interest(2, 6).await;

    // Three from alice (node 0), one from carol (node 2, where bob-2's total gets cached).
    let mut last_seq = 0;
    for i in 1..=3 {
        last_seq = alice
            .client
            .send_text("bob", &format!("a{i}"), &format!("a{i}"))
            .await
            .expect("sent")
            .seq;
    }
    carol
        .client
        .send_text("bob", "c1", "c1")
        .await
        .expect("sent");
    for dev in [&mut bob1, &mut bob2] {
        let totals: Vec<u64> = [
            dev.unread().await,
            dev.unread().await,
            dev.unread().await,
            dev.unread().await,
        ]
        .iter()
        .map(|u| u.total)
        .collect();
        assert_eq!(totals, vec![1, 2, 3, 4], "badge on each device");
    }
    // Bob reads alice's conversation on node 1: both devices hear the new badge.
    let conv = {
        let list = bob1.client.conversations().await.expect("conversations");
        list.conversations
            .iter()
            .find(|v| v.peer == "alice")
            .map(|v| v.id.clone())
            .expect("the conversation with alice")
    };
    let before = metric(c.admin(2), "switchboard_im_cluster_unread_evictions_total")
        .await
        .unwrap_or(0);
    bob1.client.read(&conv, last_seq).await.expect("read");
    for dev in [&mut bob1, &mut bob2] {
        let u = dev.unread().await;
        assert_eq!((u.unread, u.total), (0, 1), "after the read on node 1");
    }
    // Node 2 has dropped the total it had cached for bob (4) ...
    until_metric(
        c.admin(2),
        "switchboard_im_cluster_unread_evictions_total",
        |n| n > before,
    )
    .await;
    // ... so carol's next message through node 2 shows 2, not 5, on both devices.
    carol
        .client
        .send_text("bob", "c2", "c2")
        .await
        .expect("sent");
    for dev in [&mut bob1, &mut bob2] {
        assert_eq!(dev.unread().await.total, 2, "badge after the next message");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_on_node_1_gets_the_next_group_message_sent_through_node_2() {
    let Some((c, t)) = Cluster::start_im(BIN, "clim-join", &["alice", "bob", "carol"]).await else {
        return;
    };
    let alice = c.device(2, &t, "alice", "alice-2").await;
    let mut carol = c.device(2, &t, "carol", "carol-2").await;
    let mut bob = c.device(1, &t, "bob", "bob-1").await;
    c.interest(1, 3).await;
    c.interest(2, 6).await;
    alice
        .client
        .create_group("open", "Open", im::JoinMode::Open, &["carol"])
        .await
        .expect("group created");
    // Node 2 caches the group (members alice and carol) with a first message.
    alice
        .client
        .send_group_text("open", "o1", "before")
        .await
        .expect("sent");
    assert_eq!(texts_until(&mut carol, "alice", "before").await.len(), 1);
    let before = metric(c.admin(2), "switchboard_im_cluster_group_evictions_total")
        .await
        .unwrap_or(0);
    let joined = bob
        .client
        .join_group("open", "hi")
        .await
        .expect("joined on node 1");
    assert!(joined.joined, "an open group takes bob at once");
    until_metric(
        c.admin(2),
        "switchboard_im_cluster_group_evictions_total",
        |n| n > before,
    )
    .await;
    let r = alice
        .client
        .send_group_text("open", "o2", "after join")
        .await
        .expect("sent");
    let got = texts_until(&mut bob, "alice", "after join").await;
    assert_eq!(
        got,
        vec![(r.seq, "after join".to_owned())],
        "the new member gets it, once"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_push_job_for_a_user_online_on_another_node() {
    let Some((c, t)) = Cluster::start_im(BIN, "clim-push", &["alice", "bob"]).await else {
        return;
    };
    let alice = c.device(0, &t, "alice", "alice-0").await;
    let mut bob = c.device(1, &t, "bob", "bob-1").await;
    c.sees_remote_users(0, 1).await;
    c.interest(1, 3).await;
    // The send is answered after the push decision: the figure is final then.
    alice
        .client
        .send_text("bob", "p1", "one")
        .await
        .expect("sent");
    assert_eq!(texts_until(&mut bob, "alice", "one").await.len(), 1);
    assert_eq!(
        metric(c.admin(0), "switchboard_im_cluster_push_jobs_total").await,
        Some(0),
        "bob is online (on node 1): no push"
    );
    // Bob goes away: node 0 learns it, and the next message makes a push job.
    bob.client.shutdown().await;
    until_metric(c.admin(0), "switchboard_im_cluster_remote_users", |n| {
        n == 0
    })
    .await;
    alice
        .client
        .send_text("bob", "p2", "two")
        .await
        .expect("sent");
    assert_eq!(
        metric(c.admin(0), "switchboard_im_cluster_push_jobs_total").await,
        Some(1),
        "bob is offline everywhere: one push job"
    );
    drop(bob.events);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_comes_back_after_a_nats_outage_longer_than_a_lease() {
    let Some((mut c, t)) = Cluster::start_im(BIN, "clim-nats", &["alice", "bob"]).await else {
        return;
    };
    let alice = c.device(0, &t, "alice", "alice-0").await;
    let mut bob = c.device(1, &t, "bob", "bob-1").await;
    c.sees_remote_users(0, 1).await;
    c.interest(1, 3).await;
    // NATS goes away: after a lease without a word from node 1, node 0 takes bob offline.
    c.nats.kill().await;
    until_metric(c.admin(0), "switchboard_im_cluster_dead_nodes_total", |n| {
        n >= 1
    })
    .await;
    until_metric(c.admin(0), "switchboard_im_cluster_remote_users", |n| {
        n == 0
    })
    .await;
    // NATS is back: the nodes announce their online users again, and bob's inbox interest.
    c.nats.restart().await;
    c.sees_remote_users(0, 1).await;
    until_metric(
        c.admin(1),
        "switchboard_cluster_interest_announced_connection",
        |n| n >= 2,
    )
    .await;
    alice
        .client
        .send_text("bob", "n1", "back")
        .await
        .expect("sent");
    assert_eq!(texts_until(&mut bob, "alice", "back").await.len(), 1);
    assert_eq!(
        metric(c.admin(0), "switchboard_im_cluster_push_jobs_total").await,
        Some(0),
        "bob is online again: no push"
    );
    c.stop().await;
}

/// The next call event of kind `kind` on `d` (others skipped).
async fn call_event(d: &mut Device, kind: Ev) -> im::CallEvent {
    d.next(|k| match k {
        Kind::Call(e) if e.kind == kind as i32 => Some(e.clone()),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_between_users_on_two_nodes_rings_connects_and_is_busy_for_a_third() {
    let Some((c, t)) = Cluster::start_im(BIN, "clim-call", &["alice", "bob", "carol"]).await else {
        return;
    };
    let mut alice = c.device(0, &t, "alice", "alice-0").await;
    let mut bob = c.device(1, &t, "bob", "bob-1").await;
    let mut carol = c.device(2, &t, "carol", "carol-2").await;
    for i in 0..3 {
        c.sees_remote_users(i, 2).await;
        c.interest(i, 3).await;
    }
    // Alice (node 0) calls bob (node 1): the call lives on node 0, bob's requests go
    // through node 1.
    let r = alice
        .client
        .call_invite("", &["bob"], false, Bytes::from_static(b"offer"), 0)
        .await
        .expect("invite");
    assert!(r.busy.is_empty());
    let inv = call_event(&mut bob, Ev::Invited).await;
    assert_eq!(
        (inv.call_id.as_str(), &inv.payload[..]),
        (r.call_id.as_str(), &b"offer"[..])
    );
    bob.client
        .call_action("ringing", &r.call_id, "", Bytes::new())
        .await
        .expect("ringing through node 1");
    assert_eq!(call_event(&mut alice, Ev::Ringing).await.from, "bob");
    bob.client
        .call_action("accept", &r.call_id, "", Bytes::from_static(b"answer"))
        .await
        .expect("accepted through node 1");
    let acc = call_event(&mut alice, Ev::Accepted).await;
    assert_eq!(
        (acc.device.as_str(), &acc.payload[..]),
        ("bob-1", &b"answer"[..])
    );
    bob.client
        .call_action("signal", &r.call_id, "alice", Bytes::from_static(b"ice-b"))
        .await
        .expect("signal");
    assert_eq!(
        &call_event(&mut alice, Ev::Signal).await.payload[..],
        b"ice-b"
    );
    // A wrong request through node 1 gets node 0's answer.
    let e = bob
        .client
        .call_action("cancel", &r.call_id, "", Bytes::new())
        .await
        .expect_err("answered: cancel refused");
    assert!(matches!(e, ImError::Status { code: 409, .. }), "{e}");
    // Carol (node 2) calls bob: busy, as node 2 knows from node 0.
    until_metric(
        c.admin(2),
        "switchboard_im_cluster_remote_busy_users",
        |n| n >= 2,
    )
    .await;
    let busy = carol
        .client
        .call_invite("", &["bob"], false, Bytes::new(), 0)
        .await
        .expect("invite answered");
    assert_eq!(busy.busy, ["bob"]);
    assert_eq!(call_event(&mut carol, Ev::Ended).await.outcome, "busy");
    // Bob hangs up through node 1: both see the end and the call log.
    bob.client
        .call_action("hangup", &r.call_id, "", Bytes::new())
        .await
        .expect("hang up");
    assert_eq!(call_event(&mut alice, Ev::HungUp).await.from, "bob");
    for d in [&mut alice, &mut bob] {
        assert_eq!(call_event(d, Ev::Ended).await.outcome, "completed");
        // This call's log (carol's busy call has its own, in another conversation, which
        // may arrive before or after this one).
        let log = d
            .next(|k| match k {
                Kind::Message(m) => match m.content.as_ref().and_then(|c| c.body.as_ref()) {
                    Some(im::content::Body::CallLog(l)) if l.call_id == r.call_id => {
                        Some(l.clone())
                    }
                    _ => None,
                },
                _ => None,
            })
            .await;
        assert_eq!(
            (log.call_id.as_str(), log.outcome.as_str()),
            (r.call_id.as_str(), "completed")
        );
    }
    // The call is gone for node 1 as well; bob is free again for carol.
    let e = bob
        .client
        .call_action("hangup", &r.call_id, "", Bytes::new())
        .await
        .expect_err("gone");
    assert!(matches!(e, ImError::Status { code: 404, .. }), "{e}");
    until_metric(
        c.admin(2),
        "switchboard_im_cluster_remote_busy_users",
        |n| n == 0,
    )
    .await;
    let r2 = carol
        .client
        .call_invite("", &["bob"], false, Bytes::new(), 0)
        .await
        .expect("invite");
    assert!(r2.busy.is_empty());
    assert_eq!(call_event(&mut bob, Ev::Invited).await.call_id, r2.call_id);
    bob.client
        .call_action("reject", &r2.call_id, "", Bytes::new())
        .await
        .expect("reject through node 1");
    assert_eq!(call_event(&mut carol, Ev::Rejected).await.from, "bob");
    assert_eq!(call_event(&mut carol, Ev::Ended).await.outcome, "rejected");
    // The owner dies: its calls end with it, and requests about them answer 404.
    let r3 = carol
        .client
        .call_invite("", &["alice"], false, Bytes::new(), 0)
        .await
        .expect("invite");
    assert_eq!(
        call_event(&mut alice, Ev::Invited).await.call_id,
        r3.call_id
    );
    drop(carol);
    let mut c = c;
    c.kill9(2).await;
    let e = alice
        .client
        .call_action("accept", &r3.call_id, "", Bytes::new())
        .await
        .expect_err("owner gone");
    assert!(matches!(e, ImError::Status { code: 404, .. }), "{e}");
    c.stop().await;
}
