//! RongCloud's `/push.json` `platform`, driven by RongCloud's own Python server SDK
//! (`tests/py/rongcloud_push.py`) against a gateway whose push worker talks to the mock
//! APNs and FCM servers: a push for iOS reaches only the user with an iPhone (with the
//! `ios` alert and title), one for Android only the user with an Android phone (with the
//! `android` alert), and one for both platforms uses the common alert.

use serde_json::json;
use switchboard_tests::im::ImBroker;
use switchboard_tests::push::{gateway, register, setup};
use switchboard_tests::push_mocks::PushMock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_json_platform_picks_the_devices_and_their_alert() {
    let b = ImBroker::start().await;
    let mut mock = PushMock::start().await;
    let gw = gateway(&b, &mock, "gw-rc-push").await;
    let t = setup(&b, &mock).await;
    register(&b, t, "bob", "apns", "bob-iphone").await;
    register(&b, t, "carol", "fcm", "carol-android").await;
    let rec = b.im.tenant(t).expect("tenant");
    switchboard_tests::run_python_suite(
        "rongcloud_push.py",
        vec![
            "--http-port".into(),
            gw.addr().port().to_string(),
            "--app-key".into(),
            rec.app_key.clone(),
            "--app-secret".into(),
            rec.app_secret.clone(),
        ],
    )
    .await;

    // Three pushes in all, in whatever order the worker takes the jobs: two for bob's
    // iPhone (the iOS push and the both-platforms one, never the Android one) and one for
    // carol's Android phone (the iOS push, sent first, did not reach her; the last one was
    // for bob alone).
    let (mut apns_hits, mut fcm_hits) = (Vec::new(), Vec::new());
    while apns_hits.len() + fcm_hits.len() < 3 {
        let h = mock.next_any().await;
        match h.kind.as_str() {
            "apns" => apns_hits.push(h),
            "fcm" => fcm_hits.push(h),
            "fcm_token" => {} // the OAuth exchange before FCM sends
            other => panic!("an unexpected {other} request"),
        }
    }
    assert_eq!((apns_hits.len(), fcm_hits.len()), (2, 1));
    let mut apns = Vec::new();
    for h in apns_hits {
        assert_eq!(h.path, "/3/device/bob-iphone");
        let p = h.json();
        apns.push((
            p["aps"]["alert"]["title"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            p["aps"]["alert"]["body"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    apns.sort();
    assert_eq!(
        apns,
        vec![
            ("".to_owned(), "both".to_owned()),
            ("To iPhones".to_owned(), "for iphone".to_owned())
        ]
    );
    let h = &fcm_hits[0];
    let m = &h.json()["message"];
    assert_eq!(m["token"], json!("carol-android"));
    assert_eq!(m["notification"]["body"], json!("for android"));
    gw.stop().await;
    b.stop().await;
}
