//! What a push says, end to end through the mock APNs and FCM: the tenant's templates set
//! over REST, chosen by each device's language (a zh-CN iPhone and an English Android
//! phone of the same user), by message kind (text, image, group text with the group's
//! name, a workbench app's notice), the built-in zh/en defaults for what the tenant left
//! out, the preview switch per user and per tenant (no sender, no text), and quiet hours
//! in IANA time zones (Asia/Shanghai vs America/New_York at the same instant, judged by an
//! injected clock).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};
use switchboard_gateway::push::{Clock, PushConfig};
use switchboard_proto::im;
use switchboard_tests::im::{Device, ImBroker};
use switchboard_tests::push::{
    admin, gateway, gateway_with, push_config, rest, send, setup, until,
};
use switchboard_tests::push_mocks::PushMock;

/// The next APNs and FCM requests (one each, in whatever order): (title, body) of each.
async fn both(mock: &mut PushMock) -> ((String, String), (String, String)) {
    let (mut apns, mut fcm) = (None, None);
    while apns.is_none() || fcm.is_none() {
        let h = mock.next_any().await;
        let v = h.json();
        let words = |n: &Value| {
            (
                n["title"].as_str().unwrap_or_default().to_owned(),
                n["body"].as_str().unwrap_or_default().to_owned(),
            )
        };
        match h.kind.as_str() {
            "apns" => apns = Some(words(&v["aps"]["alert"])),
            "fcm" => fcm = Some(words(&v["message"]["notification"])),
            _ => {}
        }
    }
    (apns.unwrap_or_default(), fcm.unwrap_or_default())
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

async fn send_content(from: &Device, to: &str, id: &str, group: bool, content: im::Content) {
    from.client
        .send(im::SendRequest {
            to: to.into(),
            conv_type: if group {
                im::ConvType::Group as i32
            } else {
                im::ConvType::Private as i32
            },
            client_msg_id: id.into(),
            content: Some(content),
            ..Default::default()
        })
        .await
        .expect("sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_follow_the_device_language_and_the_message_kind_and_privacy_hides_all() {
    let b = ImBroker::start().await;
    let mut mock = PushMock::start().await;
    let gw = gateway(&b, &mock, "gw-templates").await;
    let t = setup(&b, &mock).await;
    b.im.create_user(t, "dave", "戴夫", None, false)
        .await
        .expect("dave");

    // A bad template is refused with the reason; a good set is kept and read back.
    let bad = rest(
        &b,
        &gw,
        t,
        "/v1/push/templates/set",
        &json!({"templates": {"en": {"text": {"title": "{name}", "body": "x"}}}}),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body.contains("unknown placeholder {name}"),
        "{}",
        bad.body
    );
    let set = rest(
        &b,
        &gw,
        t,
        "/v1/push/templates/set",
        &json!({
        "templates": {"zh-CN": {"text": {"title": "{sender}", "body": "💬 {text}"}}},
        "default_lang": "zh-CN"}),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let got = rest(&b, &gw, t, "/v1/push/templates/get", &json!({}))
        .await
        .json();
    assert_eq!(
        got["templates"]["zh-CN"]["text"]["body"],
        json!("💬 {text}")
    );
    assert_eq!(got["default_lang"], json!("zh-CN"));
    assert_eq!(
        got["builtin"]["zh"]["app"]["body"],
        json!("您收到一条来自“{app}”的消息")
    );

    // Bob's iPhone speaks Chinese, his Android phone English (registered over REST).
    for (vendor, token, lang) in [
        ("apns", "bob-iphone", "zh-CN"),
        ("fcm", "bob-android", "en"),
    ] {
        let r = rest(
            &b,
            &gw,
            t,
            "/v1/push/register",
            &json!({"user": "bob", "vendor": vendor,
            "token": token, "bundle_id": "com.example.chat", "sandbox": true, "lang": lang}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let listed = rest(&b, &gw, t, "/v1/push/tokens", &json!({"user": "bob"}))
        .await
        .json();
    assert_eq!(
        listed["tokens"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    let dave = b.device(t, "dave", "dave-phone").await;

    // Text: the tenant's zh-CN template on the iPhone, the built-in English one on Android.
    send(&dave, "bob", "m1", "你好").await;
    let (apns, fcm) = both(&mut mock).await;
    assert_eq!(apns, pair("戴夫", "💬 你好"));
    assert_eq!(fcm, pair("戴夫", "你好"));

    // An image: the tenant has no image template: the built-in ones, per language.
    let image = im::Content {
        body: Some(im::content::Body::Image(im::Media {
            url: "https://files.example/1.png".into(),
            mime: "image/png".into(),
            size: 1024,
            ..Default::default()
        })),
    };
    send_content(&dave, "bob", "m2", false, image).await;
    let (apns, fcm) = both(&mut mock).await;
    assert_eq!(apns, pair("戴夫", "[图片]"));
    assert_eq!(fcm, pair("戴夫", "[Image]"));

    // A group message: the group's name as the title, the sender in the body.
    admin(
        &b,
        "group/create",
        json!({"tenant": t, "group_id": "ops", "name": "运维群",
        "owner": "dave", "members": ["bob"]}),
    )
    .await;
    send_content(
        &dave,
        "ops",
        "m3",
        true,
        switchboard_tests::im::text("上线了"),
    )
    .await;
    let (apns, fcm) = both(&mut mock).await;
    assert_eq!(apns, pair("运维群", "戴夫: 上线了"));
    assert_eq!(fcm, pair("运维群", "戴夫: 上线了"));

    // A workbench app's notice: imo's wording, with the app's name.
    let app = admin(
        &b,
        "app/create",
        json!({"tenant": t, "name": "审批",
        "identifier": "approval"}),
    )
    .await;
    let app_id = app["app_id"].as_str().expect("app id").to_owned();
    let r = rest(
        &b,
        &gw,
        t,
        "/v1/messages/system",
        &json!({"to": "bob", "text": "请审批报销单", "app": app_id}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (apns, fcm) = both(&mut mock).await;
    assert_eq!(apns, pair("审批", "您收到一条来自“审批”的消息"));
    assert_eq!(fcm, pair("审批", "You have a new message from “审批”"));

    // Bob hides previews: neither the sender nor the text, in his devices' languages.
    let r = rest(
        &b,
        &gw,
        t,
        "/v1/push/privacy_set",
        &json!({"user": "bob", "hide_preview": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let p = rest(&b, &gw, t, "/v1/push/privacy_get", &json!({"user": "bob"}))
        .await
        .json();
    assert_eq!(
        (p["user"].clone(), p["tenant"].clone()),
        (json!(true), json!(false))
    );
    send(&dave, "bob", "m4", "the secret plan").await;
    let (apns, fcm) = both(&mut mock).await;
    assert_eq!(apns, pair("新消息", "您有一条新消息"));
    assert_eq!(fcm, pair("New message", "You have a new message"));

    // Bob shows them again, the tenant hides them for everyone.
    for body in [
        json!({"user": "bob", "hide_preview": false}),
        json!({"hide_preview": true}),
    ] {
        let r = rest(&b, &gw, t, "/v1/push/privacy_set", &body).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    send(&dave, "bob", "m5", "another secret").await;
    let (apns, fcm) = both(&mut mock).await;
    assert_eq!(apns, pair("新消息", "您有一条新消息"));
    assert_eq!(fcm, pair("New message", "You have a new message"));
    let p = rest(&b, &gw, t, "/v1/push/privacy_get", &json!({"user": "bob"}))
        .await
        .json();
    assert_eq!(p["hide_preview"], json!(true), "{p}");
    let stats = gw.push_stats().expect("worker");
    // Six messages, two devices each, nothing else.
    until(async || stats.snapshot()["sent"].as_u64() >= Some(12)).await;
    assert_eq!(stats.snapshot()["sent"], json!(12), "{}", stats.snapshot());
    gw.stop().await;
    b.stop().await;
}

/// 2026-07-15 14:30 UTC: 22:30 in Shanghai (UTC+8, no DST), 10:30 in New York (EDT).
const JULY_SECS: u64 = 1_784_125_800;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_in_named_time_zones_judge_each_users_local_time() {
    let b = ImBroker::start().await;
    let mut mock = PushMock::start().await;
    let gw = gateway_with(
        &b,
        "gw-quiet-tz",
        PushConfig {
            clock: Clock::fixed(UNIX_EPOCH + Duration::from_secs(JULY_SECS)),
            ..push_config(&mock)
        },
    )
    .await;
    let t = setup(&b, &mock).await;
    switchboard_tests::push::register(&b, t, "bob", "apns", "bob-phone").await;
    switchboard_tests::push::register(&b, t, "carol", "apns", "carol-phone").await;
    let typo = rest(
        &b,
        &gw,
        t,
        "/v1/push/quiet_set",
        &json!({"user": "bob", "start": "22:00",
        "end": "07:00", "time_zone": "Asia/Shangai", "mode": "suppress"}),
    )
    .await;
    assert_eq!(typo.status, 400, "{}", typo.body);
    assert!(typo.body.contains("IANA"), "{}", typo.body);
    for (user, zone) in [("bob", "Asia/Shanghai"), ("carol", "America/New_York")] {
        let r = rest(
            &b,
            &gw,
            t,
            "/v1/push/quiet_set",
            &json!({"user": user, "start": "22:00",
            "end": "07:00", "time_zone": zone, "mode": "suppress"}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["quiet"]["time_zone"], json!(zone));
    }
    let alice = b.device(t, "alice", "alice-phone").await;
    send(&alice, "bob", "q1", "it is night in Shanghai").await;
    send(&alice, "carol", "q2", "it is morning in New York").await;
    let h = mock.next("apns").await;
    assert!(h.path.ends_with("/carol-phone"), "{}", h.path);
    let trace = async || {
        rest(&b, &gw, t, "/v1/push/trace", &json!({"user": "bob"}))
            .await
            .json()["entries"][0]["outcome"]
            .clone()
    };
    until(async || trace().await == json!("quiet_hours")).await;
    assert!(
        mock.drain().iter().all(|h| h.kind != "apns"),
        "no push to bob"
    );
    gw.stop().await;
    b.stop().await;
}
