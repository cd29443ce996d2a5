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
//! - presence comes back after a NATS outage longer than a lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switchboard_client::im::ImClient;
use switchboard_proto::im;
use switchboard_tests::WAIT;
use switchboard_tests::cluster::Cluster;
use switchboard_tests::im::{Device, config, text_of};
use switchboard_tests::nats::{metric, until_metric};
use switchboard_tests::process::BrokerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Three nodes on one PostgreSQL, a tenant and its `users`; `None` without PostgreSQL.
async fn start(tag: &str, users: &[&str]) -> Option<(Cluster, String)> {
    let c = Cluster::start_durable(BIN, tag, 3, &[], &[]).await?;
    let t = BrokerProcess::json(&c.node(0).ctl(&["tenant", "create", tag, "--json"]).await);
    let tenant = t["tenant_id"].as_u64().expect("tenant id").to_string();
    for (i, user) in users.iter().enumerate() {
        // Made through different nodes: the directory is the shared store.
        let u = BrokerProcess::json(
            &c.node(i % 3)
                .ctl(&["user", "create", "--tenant", &tenant, user, "--json"])
                .await,
        );
        assert_eq!(u["user_id"], *user);
    }
    Some((c, tenant))
}

/// A token for `user`, issued by node `i`.
async fn token(c: &Cluster, i: usize, tenant: &str, user: &str) -> String {
    c.node(i)
        .ctl(&["token", "--tenant", tenant, "--user", user])
        .await
        .trim()
        .to_owned()
}

/// A device of `user` logged in on node `i`.
async fn device(c: &Cluster, i: usize, tenant: &str, user: &str, client_id: &str) -> Device {
    let t = token(c, i, tenant, user).await;
    Device::connect(c.addr(i), user, client_id, &t).await
}

/// Waits until node `i` sees at least `n` users with devices on other nodes.
async fn sees_remote_users(c: &Cluster, i: usize, n: u64) {
    until_metric(c.admin(i), "switchboard_im_cluster_remote_users", |v| {
        v >= n
    })
    .await;
}

/// Waits until NATS confirmed node `i`'s interest in at least `n` subjects (an IM device
/// of its own user holds three: its inbox and its responses' `#`, which is two), so that
/// messages from other nodes reach its devices.
async fn interest(c: &Cluster, i: usize, n: u64) {
    until_metric(c.admin(i), "switchboard_cluster_interest_subjects", |v| {
        v >= n
    })
    .await;
}

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
    let Some((c, t)) = start("clim-cross", &["alice", "bob", "carol"]).await else {
        return;
    };
    let alice = device(&c, 0, &t, "alice", "alice-0").await;
    let mut bob1 = device(&c, 1, &t, "bob", "bob-1").await;
    let mut bob2 = device(&c, 2, &t, "bob", "bob-2").await;
    let mut carol = device(&c, 2, &t, "carol", "carol-2").await;
    // Node 0 knows that bob and carol are online elsewhere.
    sees_remote_users(&c, 0, 2).await;
    interest(&c, 1, 3).await;
    interest(&c, 2, 6).await;

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
    let Some((mut c, t)) = start("clim-kill", &["alice", "bob"]).await else {
        return;
    };
    let alice_token = token(&c, 1, &t, "alice").await;
    let mut bob = device(&c, 2, &t, "bob", "bob-2").await;
    sees_remote_users(&c, 1, 1).await;
    interest(&c, 2, 3).await;
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
    let bob0 = device(&c, 0, &t, "bob", "bob-0").await;
    let alice2 = device(&c, 2, &t, "alice", "alice-2").await;
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
    let Some((c, t)) = start("clim-unread", &["alice", "bob", "carol"]).await else {
        return;
    };
    let alice = device(&c, 0, &t, "alice", "alice-0").await;
    let mut bob1 = device(&c, 1, &t, "bob", "bob-1").await;
    let mut bob2 = device(&c, 2, &t, "bob", "bob-2").await;
    let carol = device(&c, 2, &t, "carol", "carol-2").await;
    sees_remote_users(&c, 0, 2).await;
    sees_remote_users(&c, 1, 1).await;
    sees_remote_users(&c, 2, 1).await;
    interest(&c, 1, 3).await;
    interest(&c, 2, 6).await;

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
    let Some((c, t)) = start("clim-join", &["alice", "bob", "carol"]).await else {
        return;
    };
    let alice = device(&c, 2, &t, "alice", "alice-2").await;
    let mut carol = device(&c, 2, &t, "carol", "carol-2").await;
    let mut bob = device(&c, 1, &t, "bob", "bob-1").await;
    interest(&c, 1, 3).await;
    interest(&c, 2, 6).await;
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
    let Some((c, t)) = start("clim-push", &["alice", "bob"]).await else {
        return;
    };
    let alice = device(&c, 0, &t, "alice", "alice-0").await;
    let mut bob = device(&c, 1, &t, "bob", "bob-1").await;
    sees_remote_users(&c, 0, 1).await;
    interest(&c, 1, 3).await;
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
    let Some((mut c, t)) = start("clim-nats", &["alice", "bob"]).await else {
        return;
    };
    let alice = device(&c, 0, &t, "alice", "alice-0").await;
    let mut bob = device(&c, 1, &t, "bob", "bob-1").await;
    sees_remote_users(&c, 0, 1).await;
    interest(&c, 1, 3).await;
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
    sees_remote_users(&c, 0, 1).await;
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
