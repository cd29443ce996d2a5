//! A burst of concurrent sends to an offline user from one device whose app never reads
//! its events (its own messages come back to it: more than the SDK's event channel
//! holds): every request is still answered, and the user syncs them all.

use std::collections::HashMap;

use switchboard_tests::im::ImBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_an_offline_user_is_acknowledged_and_synced() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let alice = b.device(t, "alice", "alice-1").await;
    const LANES: usize = 32;
    const PER_LANE: usize = 40;
    let mut tasks = Vec::new();
    for lane in 0..LANES {
        let client = alice.client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_LANE {
                client
                    .send_text("bob", &format!("{lane}-{i}"), "offline message")
                    .await
                    .expect("sent");
            }
        }));
    }
    for t in tasks {
        t.await.expect("lane");
    }
    let bob = b.device(t, "bob", "bob-1").await;
    let (messages, _) = bob
        .client
        .sync_all(&mut HashMap::new())
        .await
        .expect("sync");
    assert_eq!(messages.len(), LANES * PER_LANE);
    b.stop().await;
}
