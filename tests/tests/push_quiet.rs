//! Quiet hours end to end, judged by an injected clock (23:00 UTC), never the wall clock:
//! a user sets a silent window from the app (`push/quiet`), the app server sets a tenant
//! default that suppresses pushes, and over REST reads back what applies. Silent pushes
//! arrive without sound (APNs: no `sound`, passive interruption level, priority 5); held
//! pushes make no request at all; the trace says "quiet hours" either way.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;
use switchboard_gateway::push::{Clock, PushConfig};
use switchboard_proto::im;
use switchboard_tests::im::ImBroker;
use switchboard_tests::push::{gateway_with, push_config, register, rest, send, setup, until};
use switchboard_tests::push_mocks::PushMock;

/// 2026-01-01 23:00 UTC.
const NOW_SECS: u64 = 1_767_225_600 + 23 * 3600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_silence_or_hold_pushes_and_the_trace_says_why() {
    let b = ImBroker::start().await;
    let mut mock = PushMock::start().await;
    let gw = gateway_with(
        &b,
        "gw-quiet",
        PushConfig {
            clock: Clock::fixed(UNIX_EPOCH + Duration::from_secs(NOW_SECS)),
            ..push_config(&mock)
        },
    )
    .await;
    let t = setup(&b, &mock).await;
    register(&b, t, "bob", "apns", "bobtoken").await;
    register(&b, t, "carol", "apns", "caroltoken").await;
    let alice = b.device(t, "alice", "alice-phone").await;

    // Outside any quiet hours: a normal push, with sound.
    send(&alice, "bob", "m0", "loud").await;
    let h = mock.next("apns").await;
    assert_eq!(h.json()["aps"]["sound"], json!("default"));
    assert_eq!(h.header("apns-priority"), "10");

    // Bob's app sets 22:00–07:00 at UTC+01:00 (it is midnight there): silent.
    let bob = b.device(t, "bob", "bob-phone").await;
    let ack: im::Ack = bob
        .client
        .request(
            "push/quiet",
            &im::PushQuietRequest {
                start: "22:00".into(),
                end: "07:00".into(),
                utc_offset: "+01:00".into(),
                ..Default::default()
            },
        )
        .await
        .expect("quiet hours set");
    assert_eq!(ack.status.as_ref().map(|s| s.code), Some(0), "{ack:?}");
    let bad: Result<im::Ack, _> = bob
        .client
        .request(
            "push/quiet",
            &im::PushQuietRequest {
                start: "25:00".into(),
                end: "07:00".into(),
                ..Default::default()
            },
        )
        .await;
    match bad {
        Err(switchboard_client::im::ImError::Status { code, message }) => {
            assert_eq!(code, 400, "{message}");
            assert!(message.contains("HH:MM"), "{message}");
        }
        other => panic!("a malformed window is refused, got {other:?}"),
    }
    bob.client.set_background(true).await.expect("background");

    send(&alice, "bob", "m1", "shh").await;
    let h = mock.next("apns").await;
    let aps = &h.json()["aps"];
    assert!(aps.get("sound").is_none(), "{aps}");
    assert_eq!(aps["interruption-level"], json!("passive"));
    assert_eq!(
        aps["alert"]["body"],
        json!("shh"),
        "still shown in the list"
    );
    assert_eq!(h.header("apns-priority"), "5");
    // The push's entry says it went out quietly (looked for among bob's entries, not only
    // the newest: a loaded worker may record a late entry of another job after it).
    until(async || {
        let a = rest(&b, &gw, t, "/v1/push/trace", &json!({"user": "bob"})).await;
        a.json()["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| {
                e["outcome"] == json!("sent")
                    && e["detail"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("quiet hours")
            })
    })
    .await;

    // The app server's tenant default holds pushes back 21:00–08:00 UTC; carol has no
    // setting of her own, so it applies to her: no push, the trace says why.
    let a = rest(
        &b,
        &gw,
        t,
        "/v1/push/quiet_set",
        &json!({"start": "21:00", "end": "08:00", "mode": "suppress"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let bad = rest(
        &b,
        &gw,
        t,
        "/v1/push/quiet_set",
        &json!({"start": "9", "end": "10:00"}),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("HH:MM")
    );
    let a = rest(&b, &gw, t, "/v1/push/quiet_get", &json!({"user": "carol"})).await;
    assert_eq!(a.json()["quiet"], json!(null), "{}", a.body);
    assert_eq!(
        a.json()["effective"]["mode"],
        json!("suppress"),
        "{}",
        a.body
    );
    send(&alice, "carol", "c1", "held").await;
    until(async || {
        let a = rest(&b, &gw, t, "/v1/push/trace", &json!({"user": "carol"})).await;
        a.json()["entries"][0]["outcome"] == json!("quiet_hours")
    })
    .await;
    // Bob's own setting wins over the default: still silent, not held.
    send(&alice, "bob", "m2", "own wins").await;
    let h = mock.next("apns").await;
    assert_eq!(h.json()["aps"]["alert"]["body"], json!("own wins"));
    assert_eq!(h.json()["aps"]["interruption-level"], json!("passive"));
    assert!(
        mock.drain().iter().all(|h| h.kind != "apns"),
        "carol's push was held"
    );
    until(async || {
        let m = switchboard_tests::http::request(gw.addr(), "GET", "/metrics", &[], b"").await;
        m.body.contains("switchboard_push_sent_silent_total 2\n")
    })
    .await;
    let m = switchboard_tests::http::request(gw.addr(), "GET", "/metrics", &[], b"").await;
    assert!(
        m.body
            .contains("switchboard_push_failures_total{vendor=\"\",reason=\"quiet_hours\"} 1\n"),
        "{}",
        m.body
    );
    gw.stop().await;
    b.stop().await;
}
