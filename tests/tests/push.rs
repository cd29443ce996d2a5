//! The push worker end to end: a broker with the IM service, a gateway whose push worker
//! points at a local mock of APNs, FCM, Huawei and Xiaomi (HTTP/2 over TLS, test CA), and
//! users whose devices are asleep. Checks the push a user gets (badge, headers, signed
//! tokens), that a muted conversation makes none, that dead tokens are removed, that 429s
//! and expired provider tokens are retried, and that two gateways split the jobs.

use serde_json::json;
use switchboard_proto::im;
use switchboard_tests::http::request;
use switchboard_tests::im::ImBroker;
use switchboard_tests::push::{gateway, register, rest, send, setup, tokens, until};
use switchboard_tests::push_mocks::{Canned, HUAWEI_APP, HUAWEI_SECRET, PushMock, XIAOMI_SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_push_has_badge_and_headers_and_mute_suppresses_it() {
    let b = ImBroker::start().await;
    let mut mock = PushMock::start().await;
    let gw = gateway(&b, &mock, "gw-push-1").await;
    let t = setup(&b, &mock).await;
    register(&b, t, "bob", "apns", "bobtoken1").await;
    let alice = b.device(t, "alice", "alice-phone").await;
    let carol = b.device(t, "carol", "carol-phone").await;

    // Bob is offline: his phone gets a push with his unread total as the badge.
    send(&alice, "bob", "m1", "hello bob").await;
    let h = mock.next("apns").await;
    assert_eq!(h.path, "/3/device/bobtoken1");
    assert_eq!(h.version, "HTTP/2.0");
    assert_eq!(
        h.status, 200,
        "the mock accepted it (JWT and headers checked)"
    );
    assert_eq!(h.header("apns-topic"), "com.example.chat");
    assert_eq!(h.header("apns-push-type"), "alert");
    assert_eq!(h.header("apns-priority"), "10");
    assert!(!h.header("apns-collapse-id").is_empty());
    let p = h.json();
    assert_eq!(p["aps"]["badge"], json!(1));
    assert_eq!(p["aps"]["alert"]["title"], json!("alice"));
    assert_eq!(p["aps"]["alert"]["body"], json!("hello bob"));
    let conv = p["conversation"].as_str().expect("conversation").to_owned();
    send(&alice, "bob", "m2", "again").await;
    let h = mock.next("apns").await;
    assert_eq!(h.json()["aps"]["badge"], json!(2));
    assert_eq!(h.header("apns-collapse-id"), conv.as_str());

    // Bob's phone (in the background) mutes alice: her next message makes no push; carol's
    // does, and its badge leaves the muted conversation out.
    let bob = b.device(t, "bob", "bob-phone").await;
    bob.client.set_background(true).await.expect("background");
    bob.client
        .update_conversation(im::UpdateConversationRequest {
            conversation: conv.clone(),
            muted: Some(true),
            ..Default::default()
        })
        .await
        .expect("mute");
    send(&alice, "bob", "m3", "muted").await;
    send(&carol, "bob", "c1", "from carol").await;
    let h = mock.next("apns").await;
    let p = h.json();
    assert_eq!(
        p["aps"]["alert"]["title"],
        json!("carol"),
        "the muted message made no push"
    );
    assert_eq!(p["aps"]["badge"], json!(1));
    let stats = gw.push_stats().expect("push worker").snapshot();
    assert_eq!(stats["jobs"], json!(3), "{stats}");
    let m = request(gw.addr(), "GET", "/metrics", &[], b"").await;
    assert!(
        m.body.contains("switchboard_push_jobs_total 3\n"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains("switchboard_push_latency_seconds_count"),
        "{}",
        m.body
    );

    // Operators ask why: dave (offline) has no device token, so his push is traced as such.
    b.user(t, "dave").await;
    send(&bob, "dave", "b1", "hi dave").await;
    until(async || {
        let a = rest(&b, &gw, t, "/v1/push/trace", &json!({"user": "dave"})).await;
        a.json()["entries"][0]["outcome"] == json!("no_token")
    })
    .await;
    let a = rest(&b, &gw, t, "/v1/push/trace", &json!({"user": "bob"})).await;
    let entries = a.json()["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 3, "{}", a.body);
    assert!(
        entries
            .iter()
            .all(|e| e["outcome"] == json!("sent") && e["vendor"] == json!("apns"))
    );
    // A test push to each of bob's devices, answered by the provider.
    let a = rest(&b, &gw, t, "/v1/push/test", &json!({"user": "bob"})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.json()["devices"][0]["outcome"],
        json!("sent"),
        "{}",
        a.body
    );
    let h = mock.next("apns").await;
    assert_eq!(h.json()["aps"]["alert"]["title"], json!("Test"));
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_errors_410_removes_429_retries_403_expired_resigns() {
    let b = ImBroker::start().await;
    let mut mock = PushMock::start().await;
    let gw = gateway(&b, &mock, "gw-push-2").await;
    let t = setup(&b, &mock).await;
    let alice = b.device(t, "alice", "alice-phone").await;
    register(&b, t, "bob", "apns", "deadtoken").await;
    let reason = |r: &str| json!({ "reason": r }).to_string();

    // 410 Unregistered: the token is removed.
    mock.script(
        "apns",
        vec![Canned {
            status: 410,
            body: reason("Unregistered"),
            retry_after: None,
        }],
    );
    send(&alice, "bob", "m1", "one").await;
    assert_eq!(mock.next("apns").await.status, 410);
    until(async || tokens(&b, t, "bob").await.is_empty()).await;
    let a = rest(&b, &gw, t, "/v1/push/trace", &json!({"user": "bob"})).await;
    let e = &a.json()["entries"][0];
    assert_eq!(e["outcome"], json!("token_removed"), "{}", a.body);
    assert!(
        e["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("Unregistered"),
        "{e}"
    );

    // 429 with Retry-After, then 500: retried until accepted.
    register(&b, t, "bob", "apns", "goodtoken").await;
    mock.script(
        "apns",
        vec![
            Canned {
                status: 429,
                body: reason("TooManyRequests"),
                retry_after: Some(1),
            },
            Canned {
                status: 500,
                body: reason("InternalServerError"),
                retry_after: None,
            },
        ],
    );
    send(&alice, "bob", "m2", "two").await;
    assert_eq!(mock.next("apns").await.status, 429);
    assert_eq!(mock.next("apns").await.status, 500);
    let ok = mock.next("apns").await;
    assert_eq!(
        (ok.status, ok.json()["aps"]["alert"]["body"].clone()),
        (200, json!("two"))
    );

    // 403 ExpiredProviderToken: the worker signs a new token and tries again.
    mock.script(
        "apns",
        vec![Canned {
            status: 403,
            body: reason("ExpiredProviderToken"),
            retry_after: None,
        }],
    );
    send(&alice, "bob", "m3", "three").await;
    let first = mock.next("apns").await;
    assert_eq!(first.status, 403);
    let second = mock.next("apns").await;
    assert_eq!(second.status, 200);
    assert_ne!(
        first.header("authorization"),
        second.header("authorization"),
        "re-signed"
    );
    assert_eq!(tokens(&b, t, "bob").await.len(), 1, "a retried token stays");
    let counters = gw.push_stats().expect("push worker");
    until(async || counters.snapshot()["sent"] == json!(2)).await;
    let stats = counters.snapshot();
    assert_eq!(
        (stats["tokens_removed"].clone(), stats["sent"].clone()),
        (json!(1), json!(2)),
        "{stats}"
    );
    assert_eq!(stats["retried"], json!(3), "{stats}");
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_huawei_and_xiaomi_deliver_and_fcm_unregistered_removes() {
    let b = ImBroker::start().await;
    let mut mock = PushMock::start().await;
    let gw = gateway(&b, &mock, "gw-push-3").await;
    let t = setup(&b, &mock).await;
    let alice = b.device(t, "alice", "alice-phone").await;
    // The app server sets its credentials over REST; reading them back shows no secret.
    let creds = json!({
        "fcm": {"service_account_json": mock.service_account().to_string()},
        "huawei": {"app_id": HUAWEI_APP, "client_secret": HUAWEI_SECRET},
        "xiaomi": {"app_secret": XIAOMI_SECRET, "package_name": "com.example.chat"}});
    let a = rest(&b, &gw, t, "/v1/push/credentials/set", &creds).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = rest(&b, &gw, t, "/v1/push/credentials/get", &json!({})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let shown = a.json();
    assert_eq!(shown["vendors"]["fcm"]["project_id"], json!("test-project"));
    assert_eq!(shown["vendors"]["huawei"]["app_id"], json!(HUAWEI_APP));
    assert!(
        shown["vendors"].get("apns").is_none(),
        "replaced as a whole"
    );
    for secret in [HUAWEI_SECRET, XIAOMI_SECRET, "PRIVATE KEY"] {
        assert!(!a.body.contains(secret), "{}", a.body);
    }
    let bad = rest(
        &b,
        &gw,
        t,
        "/v1/push/credentials/set",
        &json!({"nokia": {}}),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    register(&b, t, "bob", "fcm", "fcm-bob").await;
    register(&b, t, "carol", "huawei", "hw-carol").await;
    register(&b, t, "carol", "xiaomi", "mi-carol").await;

    send(&alice, "bob", "m1", "hi bob").await;
    let tok = mock.next("fcm_token").await;
    assert_eq!(tok.status, 200, "the RS256 assertion verified");
    let h = mock.next("fcm").await;
    assert_eq!(h.path, "/v1/projects/test-project/messages:send");
    let m = &h.json()["message"];
    assert_eq!(m["token"], json!("fcm-bob"));
    assert_eq!(m["notification"]["body"], json!("hi bob"));
    assert_eq!(m["android"]["notification"]["notification_count"], json!(1));
    assert_eq!(m["apns"]["payload"]["aps"]["badge"], json!(1));

    // Carol has a Huawei and a Xiaomi phone: both get it.
    send(&alice, "carol", "m2", "hi carol").await;
    let (mut hw, mut mi, mut hw_token) = (None, None, None);
    while hw.is_none() || mi.is_none() || hw_token.is_none() {
        let h = mock.next_any().await;
        match h.kind.as_str() {
            "huawei" => hw = Some(h),
            "xiaomi" => mi = Some(h),
            "huawei_token" => hw_token = Some(h),
            _ => {}
        }
    }
    let (hw, mi) = (hw.expect("huawei"), mi.expect("xiaomi"));
    assert_eq!(hw_token.expect("token").status, 200);
    assert_eq!(hw.status, 200);
    assert_eq!(hw.json()["message"]["token"], json!(["hw-carol"]));
    assert_eq!(
        hw.json()["message"]["android"]["notification"]["body"],
        json!("hi carol")
    );
    assert_eq!(mi.status, 200);
    let form: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&mi.body).into_owned().collect();
    assert_eq!(
        form.get("registration_id").map(String::as_str),
        Some("mi-carol")
    );
    assert_eq!(
        form.get("description").map(String::as_str),
        Some("hi carol")
    );

    // FCM says UNREGISTERED: bob's token goes; the access token was cached (no new grant).
    let unregistered = json!({"error": {"code": 404, "message": "Requested entity was not found.",
        "status": "NOT_FOUND", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": "UNREGISTERED"}]}});
    mock.script(
        "fcm",
        vec![Canned {
            status: 404,
            body: unregistered.to_string(),
            retry_after: None,
        }],
    );
    send(&alice, "bob", "m3", "gone").await;
    assert_eq!(mock.next("fcm").await.status, 404);
    until(async || tokens(&b, t, "bob").await.is_empty()).await;
    assert!(
        mock.drain().iter().all(|h| h.kind != "fcm_token"),
        "access token cached"
    );

    // Huawei refuses carol's token (80300007, all tokens invalid): it is removed; FCM's
    // QUOTA_EXCEEDED with Retry-After is retried until accepted.
    mock.script(
        "huawei",
        vec![Canned {
            status: 200,
            body: json!({"code": "80300007", "msg": "All the tokens are invalid"}).to_string(),
            retry_after: None,
        }],
    );
    register(&b, t, "carol", "fcm", "fcm-carol").await;
    let quota = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
        "message": "Quota exceeded", "details": [{"@type":
        "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "QUOTA_EXCEEDED"}]}});
    mock.script(
        "fcm",
        vec![Canned {
            status: 429,
            body: quota.to_string(),
            retry_after: Some(1),
        }],
    );
    send(&alice, "carol", "m4", "later").await;
    until(async || {
        let left: Vec<String> = tokens(&b, t, "carol")
            .await
            .iter()
            .filter_map(|v| v["vendor"].as_str().map(str::to_owned))
            .collect();
        left.len() == 2 && !left.contains(&"huawei".to_owned())
    })
    .await;
    let mut fcm = Vec::new();
    while fcm.len() < 2 {
        let h = mock.next("fcm").await;
        fcm.push(h.status);
    }
    assert_eq!(fcm, vec![429, 200], "retried after the quota error");
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_split_jobs_and_none_is_delivered_twice() {
    let b = ImBroker::start().await;
    let mut mock = PushMock::start().await;
    let gw1 = gateway(&b, &mock, "gw-push-a").await;
    let gw2 = gateway(&b, &mock, "gw-push-b").await;
    let t = setup(&b, &mock).await;
    let alice = b.device(t, "alice", "alice-phone").await;
    register(&b, t, "bob", "apns", "bobtoken").await;
    const N: usize = 20;
    for i in 0..N {
        send(&alice, "bob", &format!("m{i}"), &format!("message {i}")).await;
    }
    let mut bodies = std::collections::HashSet::new();
    for _ in 0..N {
        let h = mock.next("apns").await;
        assert!(
            bodies.insert(h.json()["job"].as_str().unwrap_or_default().to_owned()),
            "a job delivered twice"
        );
    }
    let (s1, s2) = (gw1.push_stats().expect("1"), gw2.push_stats().expect("2"));
    let total =
        |k: &str| s1.snapshot()[k].as_u64().unwrap_or(0) + s2.snapshot()[k].as_u64().unwrap_or(0);
    until(async || total("sent") == N as u64).await;
    assert_eq!(total("jobs"), N as u64);
    assert!(mock.drain().is_empty(), "nothing more was sent");
    gw1.stop().await;
    gw2.stop().await;
    b.stop().await;
}
