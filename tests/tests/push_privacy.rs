//! The privacy switch and secrets: a tenant that hides message previews gets pushes with
//! the generic line instead of the text, on every vendor; and the push credentials, set
//! over REST, never come back out of the gateway (REST answer, trace, test answers).

use serde_json::json;
use switchboard_tests::im::ImBroker;
use switchboard_tests::push::{gateway, register, rest, send, setup, until};
use switchboard_tests::push_mocks::{
    HONOR_SECRET, HUAWEI_SECRET, OPPO_MASTER_SECRET, PushMock, VIVO_APP_SECRET, XIAOMI_SECRET,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_previews_show_the_generic_line_and_secrets_never_come_out() {
    let b = ImBroker::start().await;
    let mut mock = PushMock::start().await;
    let gw = gateway(&b, &mock, "gw-privacy").await;
    let t = setup(&b, &mock).await;
    let mut policy = b.im.tenant(t).expect("tenant").policy.clone();
    policy.hide_preview = true;
    b.im.set_policy(t, policy).await.expect("policy");
    register(&b, t, "bob", "apns", "bob-apns").await;
    register(&b, t, "bob", "oppo", "bob-oppo").await;
    let alice = b.device(t, "alice", "alice-phone").await;
    send(&alice, "bob", "m1", "the secret plan").await;
    // Both vendors' requests, in whatever order they come.
    let (mut apns, mut oppo) = (None, None);
    while apns.is_none() || oppo.is_none() {
        let h = mock.next_any().await;
        match h.kind.as_str() {
            "apns" => apns = Some(h),
            "oppo" => oppo = Some(h),
            _ => {}
        }
    }
    let (apns, oppo) = (apns.expect("apns"), oppo.expect("oppo"));
    assert_eq!(
        apns.json()["aps"]["alert"]["body"],
        json!("You have a new message")
    );
    let form = oppo.form();
    let m = form.get("message").cloned().unwrap_or_default();
    assert!(m.contains("You have a new message"), "{m}");
    assert!(!m.contains("secret plan"), "{m}");
    assert!(!String::from_utf8_lossy(&apns.body).contains("secret plan"));

    // What the gateway tells the app server and operators carries no secret.
    let mut creds = mock.credentials();
    creds.as_object_mut().expect("object").remove("tenant");
    let set = rest(&b, &gw, t, "/v1/push/credentials/set", &creds).await;
    assert_eq!(set.status, 200, "{}", set.body);
    let stats = gw.push_stats().expect("worker");
    until(async || stats.snapshot()["sent"] == json!(2)).await;
    let answers = [
        rest(&b, &gw, t, "/v1/push/credentials/get", &json!({})).await,
        rest(&b, &gw, t, "/v1/push/trace", &json!({})).await,
        rest(&b, &gw, t, "/v1/push/test", &json!({"user": "bob"})).await,
    ];
    let get = answers[0].json();
    for v in ["apns", "fcm", "huawei", "xiaomi", "oppo", "vivo", "honor"] {
        assert!(get["vendors"][v].is_object(), "{v} listed: {get}");
    }
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
        for secret in [
            HUAWEI_SECRET,
            XIAOMI_SECRET,
            OPPO_MASTER_SECRET,
            VIVO_APP_SECRET,
            HONOR_SECRET,
            "PRIVATE KEY",
        ] {
            assert!(!a.body.contains(secret), "{secret} in {}", a.body);
        }
    }
    gw.stop().await;
    b.stop().await;
}
