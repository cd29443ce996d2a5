//! IM crash test: the broker (`switchboard broker` with the IM service) runs as a child
//! process and is killed with SIGKILL at random moments while a user sends 1:1 messages.
//! Tenants, users and tokens are made with `switchboard ctl`. After the last restart the
//! recipient syncs from nothing: every acknowledged message is there with the seq it was
//! acknowledged with, no message twice (the unacknowledged one is resent with its client
//! message id after each restart), and seqs run 1..=N without gaps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;
use switchboard_client::im::ImClient;
use switchboard_tests::TempDir;
use switchboard_tests::im::{config, text_of};
use switchboard_tests::process::BrokerProcess;
use tokio::process::Command;

const CYCLES: usize = 3;

async fn start_broker(dir: &std::path::Path) -> BrokerProcess {
    BrokerProcess::start_with_admin(env!("CARGO_BIN_EXE_switchboard"), dir, &[]).await
}

fn json(s: &str) -> serde_json::Value {
    BrokerProcess::json(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_im_messages_survive_kill_9_without_gaps_or_duplicates() {
    let dir = TempDir::new("im-crash");
    let b = start_broker(dir.path()).await;
    let t = json(&b.ctl(&["tenant", "create", "crashco", "--json"]).await);
    let tenant = t["tenant_id"].as_u64().expect("tenant id").to_string();
    for user in ["alice", "bob"] {
        let u = json(
            &b.ctl(&["user", "create", "--tenant", &tenant, user, "--json"])
                .await,
        );
        assert_eq!(u["user_id"], user);
    }
    let token = |b: &BrokerProcess, user: &'static str| {
        let tenant = tenant.clone();
        let dir = dir.path().to_owned();
        let admin = b.admin.clone().expect("admin API");
        async move {
            let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
                .args([
                    "ctl", "token", "--tenant", &tenant, "--user", user, "--admin",
                ])
                .arg(&admin)
                .arg("--data-dir")
                .arg(&dir)
                .output()
                .await
                .expect("ctl token");
            String::from_utf8(out.stdout)
                .expect("utf-8")
                .trim()
                .to_owned()
        }
    };
    let alice_token = token(&b, "alice").await;
    let bob_token = token(&b, "bob").await;

    // client message id → seq, for every acknowledged send.
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut next = 1u32;
    let mut broker = Some(b);
    let mut seed = std::process::id() as u64 | 1;
    println!("seed {seed}");
    for cycle in 0..CYCLES {
        let b = match broker.take() {
            Some(b) => b,
            None => start_broker(dir.path()).await,
        };
        let (client, _events) = ImClient::connect(config(
            b.addr,
            "alice",
            &format!("alice-{cycle}"),
            &alice_token,
        ))
        .await
        .expect("login");
        let sender = {
            let acked = acked.clone();
            let client = client.clone();
            let first = next;
            tokio::spawn(async move {
                // The first id of each cycle is the one that may have been cut off: resent.
                let mut n = first;
                loop {
                    let id = format!("m{n}");
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
            })
        };
        // Let some messages through, then kill at a random moment.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let before = acked.lock().expect("lock").len();
        let target = before + 20 + (seed % 60) as usize;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while acked.lock().expect("lock").len() < target && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        b.kill9().await;
        client.shutdown().await;
        let stopped_at = tokio::time::timeout(Duration::from_secs(60), sender)
            .await
            .expect("sender notices the broker is gone")
            .expect("sender task");
        // Resume with the first message whose acknowledgement was not seen.
        next = stopped_at;
        println!(
            "cycle {cycle}: {} acknowledged, next id m{next}",
            acked.lock().expect("lock").len()
        );
    }
    let b = start_broker(dir.path()).await;
    let (bob, _events) = ImClient::connect(config(b.addr, "bob", "bob-1", &bob_token))
        .await
        .expect("login");
    let (messages, _) = bob.sync_all(&mut HashMap::new()).await.expect("sync");
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= CYCLES * 20, "too few messages acknowledged");
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    let want: Vec<u64> = (1..=messages.len() as u64).collect();
    assert_eq!(seqs, want, "seqs without gaps");
    let mut seen = HashMap::new();
    for m in &messages {
        assert!(
            seen.insert(m.client_msg_id.clone(), m.seq).is_none(),
            "{} stored twice",
            m.client_msg_id
        );
        assert_eq!(text_of(m), format!("message {}", &m.client_msg_id[1..]));
    }
    for (id, seq) in &acked {
        assert_eq!(
            seen.get(id),
            Some(seq),
            "acknowledged {id} (seq {seq}) lost or moved"
        );
    }
    bob.shutdown().await;
    b.kill9().await;
}
