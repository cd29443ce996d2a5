//! Order under concurrency: many sends in flight in one conversation share commits, and
//! every device still gets the conversation's messages in seq order, without gaps.

use switchboard_tests::im::ImBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_in_one_conversation_arrive_in_seq_order() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let phone = b.device(t, "alice", "alice-phone").await;
    let pc = b.device(t, "alice", "alice-pc").await;
    let mut bob = b.device(t, "bob", "bob-1").await;
    const PER_TASK: usize = 50;
    let mut tasks = Vec::new();
    for (dev, client) in [("phone", phone.client.clone()), ("pc", pc.client.clone())] {
        for lane in 0..4 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..PER_TASK {
                    let r = client
                        .send_text("bob", &format!("{dev}-{lane}-{i}"), "x")
                        .await
                        .expect("sent");
                    seqs.push(r.seq);
                }
                seqs
            }));
        }
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("sender"));
    }
    let total = acked.len() as u64;
    acked.sort_unstable();
    assert_eq!(acked, (1..=total).collect::<Vec<_>>(), "every seq once");
    for want in 1..=total {
        let m = bob.message().await;
        assert_eq!(m.seq, want, "messages arrive in seq order");
    }
    b.stop().await;
}
