//! Workbench auto-login (seeds 000/004: 自动登录, imo's `&account=&password=` template): the
//! app list a user's device fetches over MQTT carries the app's URLs with the template filled
//! for that user (the account, and a ticket in place of the password, which is never sent),
//! and the app's server can check the ticket with the EncodingAESKey it holds. Apps without
//! a template keep their URLs untouched.

use base64ct::{Base64Unpadded, Encoding};
use serde_json::json;
use switchboard_proto::im;
use switchboard_tests::im::ImBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workbench_carries_urls_with_the_sso_template_filled_for_the_user() {
    let b = ImBroker::start().await;
    let t = b.im.create_tenant("ent", None).await.expect("tenant");
    b.user(t.id, "zhang").await;
    let web = json!({"web_url": "https://oa.example/h5#/inbox"});
    let app =
        b.im.admin_request(
            "app/create",
            json!({"tenant": t.id, "name": "OA办公", "identifier": "oaoffice",
                   "platforms": {"web": web, "android": web, "ios": web, "pc": web},
                   "sso_template": "&account=&password=&from=switchboard"})
            .to_string()
            .as_bytes(),
        )
        .await
        .expect("app with a template");
    let plain =
        b.im.admin_request(
            "app/create",
            json!({"tenant": t.id, "name": "日程", "identifier": "calendar",
                   "platforms": {"web": {"web_url": "https://cal.example/"}}})
            .to_string()
            .as_bytes(),
        )
        .await
        .expect("app without one");
    let app_id = app["app_id"].as_str().expect("id");

    let phone = b.device(t.id, "zhang", "zhang-phone").await;
    let w: im::WorkbenchResponse = phone
        .client
        .request("app/list", &im::WorkbenchRequest {})
        .await
        .expect("workbench");
    let oa = w
        .apps
        .iter()
        .find(|a| a.app_id == app_id)
        .expect("the OA app is listed");
    let (base, rest) = oa.web_url.split_once('?').expect("a query was appended");
    assert_eq!(base, "https://oa.example/h5", "{}", oa.web_url);
    let (query, fragment) = rest.split_once('#').expect("the fragment is kept");
    assert_eq!(fragment, "/inbox");
    let params: Vec<(&str, &str)> = query
        .split('&')
        .map(|p| p.split_once('=').expect("name=value"))
        .collect();
    assert_eq!(params.len(), 3, "{query}");
    assert_eq!(params[0], ("account", "zhang"));
    assert_eq!(params[2], ("from", "switchboard"));
    // The password's place holds a ticket, never a password: expiry.HMAC-SHA256 over
    // sso:{app_id}:{account}:{expiry} keyed with the app's AES key.
    let (name, ticket) = params[1];
    assert_eq!(name, "password");
    let (expiry, mac) = ticket.split_once('.').expect("expiry.mac");
    let key = Base64Unpadded::decode_vec(app["encoding_aes_key"].as_str().expect("aes key"))
        .expect("base64 key");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let raw: Vec<u8> = (0..mac.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&mac[i..i + 2], 16).expect("hex"))
        .collect();
    let msg = format!("sso:{app_id}:zhang:{expiry}");
    assert!(
        ring::hmac::verify(&key, msg.as_bytes(), &raw).is_ok(),
        "the ticket checks out with the app's key"
    );

    let cal = w
        .apps
        .iter()
        .find(|a| Some(a.app_id.as_str()) == plain["app_id"].as_str())
        .expect("the calendar app is listed");
    assert_eq!(cal.web_url, "https://cal.example/");

    phone.client.shutdown().await;
    b.stop().await;
}
