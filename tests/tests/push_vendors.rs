//! OPPO, vivo, Honor and Meizu end to end, each against the mock's version of its server
//! API: the worker authenticates as the vendor requires (OPPO's SHA-256 and vivo's MD5
//! signed auth, Honor's OAuth client credentials, Meizu's MD5-signed form), the push
//! arrives with the right fields, an expired auth token is renewed, a busy answer is
//! retried, and a token the vendor calls invalid is removed.

use serde_json::{Value, json};
use switchboard_tests::im::ImBroker;
use switchboard_tests::push::{gateway, register, send, setup, tokens, until};
use switchboard_tests::push_mocks::{Canned, HONOR_APP, MEIZU_APP_ID, PushMock, VIVO_APP_ID};

fn canned(body: Value) -> Vec<Canned> {
    vec![Canned {
        status: 200,
        body: body.to_string(),
        retry_after: None,
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oppo_vivo_and_honor_push_and_invalid_tokens_are_removed() {
    let b = ImBroker::start().await;
    let mut mock = PushMock::start().await;
    let gw = gateway(&b, &mock, "gw-vendors").await;
    let t = setup(&b, &mock).await;
    let alice = b.device(t, "alice", "alice-phone").await;

    // OPPO: signed auth, then a unicast notification with the message as a form field.
    register(&b, t, "bob", "oppo", "oppo-bob").await;
    send(&alice, "bob", "o1", "hi from oppo").await;
    assert_eq!(
        mock.next("oppo_auth").await.status,
        200,
        "the SHA-256 sign checked"
    );
    let h = mock.next("oppo").await;
    assert_eq!(h.status, 200);
    let m: Value = serde_json::from_str(h.form().get("message").expect("message")).expect("JSON");
    assert_eq!(m["target_type"], json!(2));
    assert_eq!(m["target_value"], json!("oppo-bob"));
    assert_eq!(m["notification"]["title"], json!("alice"));
    assert_eq!(m["notification"]["content"], json!("hi from oppo"));
    // An expired auth_token (code 11) is renewed and the push retried at once.
    mock.script(
        "oppo",
        canned(json!({"code": 11, "message": "Invalid AuthToken"})),
    );
    send(&alice, "bob", "o2", "again").await;
    mock.next("oppo").await;
    assert_eq!(mock.next("oppo_auth").await.status, 200, "re-authenticated");
    let retried = mock.next("oppo").await;
    assert_eq!(retried.status, 200);
    assert_ne!(retried.header("auth_token"), h.header("auth_token"));
    // Invalid registration id: the token goes.
    mock.script(
        "oppo",
        canned(json!({"code": 10000, "message": "Invalid RegistrationId"})),
    );
    send(&alice, "bob", "o3", "gone").await;
    mock.next("oppo").await;
    until(async || tokens(&b, t, "bob").await.is_empty()).await;

    // vivo: MD5-signed auth, then a JSON send with the authToken header.
    register(&b, t, "carol", "vivo", "vivo-carol").await;
    send(&alice, "carol", "v1", "hi from vivo").await;
    assert_eq!(
        mock.next("vivo_auth").await.status,
        200,
        "the MD5 sign checked"
    );
    let h = mock.next("vivo").await;
    assert_eq!(h.status, 200);
    let v = h.json();
    assert_eq!(v["appId"].to_string(), VIVO_APP_ID);
    assert_eq!(v["regId"], json!("vivo-carol"));
    assert_eq!(v["content"], json!("hi from vivo"));
    assert_eq!(v["notifyType"], json!(4), "ring and vibrate");
    assert_eq!(v["classification"], json!(1), "a system (IM) message");
    assert_eq!(v["requestId"].as_str().map(str::len), Some(32));
    mock.script(
        "vivo",
        canned(json!({"result": 10302, "desc": "regId不合法"})),
    );
    send(&alice, "carol", "v2", "gone").await;
    mock.next("vivo").await;
    until(async || tokens(&b, t, "carol").await.is_empty()).await;

    // Honor: OAuth client credentials, then sendMessage with a timestamp header.
    b.user(t, "dave").await;
    register(&b, t, "dave", "honor", "honor-dave").await;
    send(&alice, "dave", "h1", "hi from honor").await;
    assert_eq!(mock.next("honor_token").await.status, 200);
    let h = mock.next("honor").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.path, format!("/api/v1/{HONOR_APP}/sendMessage"));
    assert!(h.header("timestamp").parse::<u64>().is_ok());
    let v = h.json();
    assert_eq!(v["token"], json!(["honor-dave"]));
    assert_eq!(v["android"]["notification"]["body"], json!("hi from honor"));
    assert_eq!(
        v["android"]["notification"]["clickAction"]["type"],
        json!(3)
    );
    mock.script(
        "honor",
        canned(json!({"code": 80300007, "message": "All the tokens are invalid"})),
    );
    send(&alice, "dave", "h2", "gone").await;
    mock.next("honor").await;
    until(async || tokens(&b, t, "dave").await.is_empty()).await;

    let stats = gw.push_stats().expect("push worker");
    until(async || stats.snapshot()["tokens_removed"] == json!(3)).await;
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meizu_push_is_signed_busy_is_retried_and_invalid_push_ids_are_removed() {
    let b = ImBroker::start().await;
    let mut mock = PushMock::start().await;
    let gw = gateway(&b, &mock, "gw-meizu").await;
    let t = setup(&b, &mock).await;
    let alice = b.device(t, "alice", "alice-phone").await;
    register(&b, t, "bob", "meizu", "mz-bob").await;

    // A signed form (the mock refuses a wrong sign with 1006) with the notification bar's
    // title and text and the conversation for the app.
    let sent = send(&alice, "bob", "z1", "hi from meizu").await;
    let h = mock.next("meizu").await;
    assert_eq!(h.status, 200, "{}", String::from_utf8_lossy(&h.body));
    let f = h.form();
    assert_eq!(f.get("appId").map(String::as_str), Some(MEIZU_APP_ID));
    assert_eq!(f.get("pushIds").map(String::as_str), Some("mz-bob"));
    assert_eq!(f.get("sign").map(String::len), Some(32));
    let m: Value = serde_json::from_str(f.get("messageJson").expect("messageJson")).expect("JSON");
    assert_eq!(m["noticeBarInfo"]["title"], json!("alice"));
    assert_eq!(m["noticeBarInfo"]["content"], json!("hi from meizu"));
    assert_eq!(m["clickTypeInfo"]["clickType"], json!(0), "opens the app");
    assert_eq!(
        m["clickTypeInfo"]["parameters"]["conversation"],
        json!(sent.conversation)
    );
    assert_eq!(m["pushTimeInfo"]["offLine"], json!(1));
    // Accepted: the mock answers a wrong sign with code 1006 (HTTP 200, as Meizu does),
    // which the worker counts as failed, not sent.
    let stats = gw.push_stats().expect("push worker");
    until(async || stats.snapshot()["sent"] == json!(1)).await;
    assert_eq!(stats.snapshot()["failed"], json!(0));

    // Server busy (1003): tried again.
    mock.script(
        "meizu",
        canned(json!({"code": "1003", "message": "服务器忙"})),
    );
    send(&alice, "bob", "z2", "busy").await;
    assert_eq!(mock.next("meizu").await.status, 200);
    let again = mock.next("meizu").await;
    let m: Value =
        serde_json::from_str(again.form().get("messageJson").expect("messageJson")).expect("JSON");
    assert_eq!(
        m["noticeBarInfo"]["content"],
        json!("busy"),
        "the same push, retried"
    );

    // The pushId listed as illegal (110003): the token goes.
    mock.script(
        "meizu",
        canned(json!({"code": "200", "message": "", "value": {"110003": ["mz-bob"]}})),
    );
    send(&alice, "bob", "z3", "gone").await;
    mock.next("meizu").await;
    until(async || tokens(&b, t, "bob").await.is_empty()).await;
    until(async || stats.snapshot()["tokens_removed"] == json!(1)).await;
    gw.stop().await;
    b.stop().await;
}
