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

    // APNs: bob's iPhone gets the iOS push and the both-platforms one, never the Android
    // one (the worker may take the two jobs in either order).
    let mut apns = Vec::new();
    for _ in 0..2 {
        let h = mock.next("apns").await;
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
    // FCM: carol's Android phone gets only the Android push (the iOS push, sent first, did
    // not reach her; the last one was for bob alone).
    let h = mock.next("fcm").await;
    let m = &h.json()["message"];
    assert_eq!(m["token"], json!("carol-android"));
    assert_eq!(m["notification"]["body"], json!("for android"));
    gw.stop().await;
    b.stop().await;
}
