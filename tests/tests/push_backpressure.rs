//! Back-pressure of the push worker: a burst of jobs larger than every buffer between the
//! broker and the providers (the job connection's event queue of 1024, the broker's
//! in-flight window of 1024, the worker's slots), against a slow provider. The worker
//! takes a job only when a slot is free and the client acknowledges only what it handed
//! over, so the broker keeps the rest queued: every job is pushed exactly once, none lost.

use std::collections::HashSet;
use std::time::Duration;

use prost::Message as _;
use serde_json::json;
use switchboard_gateway::push::PushConfig;
use switchboard_proto::im::PushJob;
use switchboard_tests::im::{ImBroker, SERVICE_SECRET};
use switchboard_tests::push::{gateway_with, push_config, register, setup, until};
use switchboard_tests::push_mocks::PushMock;

/// More than the event queue (1024) + the in-flight window (1024) + the slots together.
const BURST: usize = 3000;
const SLOTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_every_buffer_is_pushed_exactly_once_with_none_lost() {
    let b = ImBroker::start().await;
    let mut mock = PushMock::start().await;
    mock.set_delay(Duration::from_millis(3));
    let gw = gateway_with(
        &b,
        "gw-burst",
        PushConfig {
            max_concurrent: SLOTS,
            ..push_config(&mock)
        },
    )
    .await;
    let t = setup(&b, &mock).await;
    register(&b, t, "bob", "apns", "bobtoken").await;

    // The jobs, published as the broker emits them by a `$service` login whose own queue
    // holds the burst while the broker's Receive Maximum paces it.
    let mut cfg = switchboard_client::Config::new(
        "burst-publisher",
        vec![switchboard_client::Endpoint::Tcp(b.addr)],
    );
    cfg.username = Some("$service".into());
    cfg.password = Some(SERVICE_SECRET.as_bytes().to_vec().into());
    cfg.session_expiry = 0;
    cfg.offline_queue = BURST + 1;
    let (publisher, mut events) = switchboard_client::Client::start(cfg).expect("client");
    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
    for i in 0..BURST {
        let job = PushJob {
            job_id: format!("burst:{i}"),
            tenant: t,
            user: "bob".into(),
            badge: i as u64 + 1,
            title: "alice".into(),
            body: format!("burst {i}"),
            conversation: "u:alice:bob".into(),
            seq: i as u64 + 1,
            collapse_key: "u:alice:bob".into(),
            ..PushJob::default()
        };
        publisher
            .publish(
                &format!("$im/push/{t}"),
                job.encode_to_vec(),
                switchboard_proto::QoS::AtLeastOnce,
            )
            .await
            .expect("sent or queued");
    }

    let mut seen = HashSet::new();
    let stats = gw.push_stats().expect("push worker");
    while seen.len() < BURST {
        let Some(h) = mock.next_within(switchboard_tests::WAIT).await else {
            panic!(
                "{} of {BURST} pushed; worker: {}",
                seen.len(),
                stats.snapshot()
            );
        };
        if h.kind != "apns" {
            continue;
        }
        assert_eq!(h.status, 200);
        let job = h.json()["job"].as_str().unwrap_or_default().to_owned();
        assert!(seen.insert(job.clone()), "{job} pushed twice");
    }
    until(async || stats.snapshot()["sent"] == json!(BURST)).await;
    let s = stats.snapshot();
    assert_eq!(
        (
            s["jobs"].clone(),
            s["duplicates"].clone(),
            s["failed"].clone()
        ),
        (json!(BURST), json!(0), json!(0)),
        "{s}"
    );
    assert!(mock.drain().is_empty(), "nothing more was pushed");
    publisher.shutdown().await;
    drain.abort();
    gw.stop().await;
    b.stop().await;
}
