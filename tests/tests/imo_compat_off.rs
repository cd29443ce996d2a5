//! A tenant that turns the compat APIs off (`TenantPolicy.compat_apis`) closes imo's
//! integration API and Youdu's for its workbench apps: getappid, pushappnotice and setnum
//! answer imo's errors and change nothing (no message, no badge), Youdu's gettoken answers
//! errcode 3. Turned back on, the same call works, and the workbench badge is 1: the
//! refused call left nothing.

use serde_json::json;
use switchboard_broker::im::records::TenantPolicy;
use switchboard_proto::im;
use switchboard_tests::gateway_api::gateway;
use switchboard_tests::http::{Answer, request};
use switchboard_tests::im::ImBroker;

fn form() -> [(&'static str, String); 1] {
    [(
        "Content-Type",
        "application/x-www-form-urlencoded".to_owned(),
    )]
}

async fn post(gw: &switchboard_gateway::Gateway, path: &str, body: &str) -> Answer {
    request(gw.addr(), "POST", path, &form(), body.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_apis_off_closes_imo_and_youdu_and_nothing_reaches_the_user() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let t = b.im.create_tenant("ent", None).await.expect("tenant");
    let uid = b.user(t.id, "zhang").await;
    let app =
        b.im.admin_request(
            "app/create",
            json!({"tenant": t.id, "name": "审批", "identifier": "approval"})
                .to_string()
                .as_bytes(),
        )
        .await
        .expect("app created");
    let app_id = app["app_id"].as_str().expect("app id").to_owned();
    let appkey = app["appkey"].as_str().expect("appkey").to_owned();
    let mut phone = b.device(t.id, "zhang", "zhang-phone").await;

    let off = TenantPolicy {
        compat_apis: false,
        ..Default::default()
    };
    b.im.set_policy(t.id, off).await.expect("policy");
    let users = serde_json::to_string(&[format!("{},{uid}", t.buin)]).expect("json");
    let notice = format!(
        "appid={app_id}&users={}",
        form_urlencoded::byte_serialize(users.as_bytes()).collect::<String>()
    );
    let a = post(
        &gw,
        "/OpenPlatform/integrate/getappid.php",
        &format!("appkey={appkey}"),
    )
    .await;
    assert_eq!(
        a.json(),
        json!({"Result": false, "MsgNo": -51001}),
        "{}",
        a.body
    );
    let a = post(&gw, "/OpenPlatform/integrate/pushappnotice.php", &notice).await;
    assert_eq!(
        a.json(),
        json!({"Result": false, "MsgNo": -51007}),
        "{}",
        a.body
    );
    let a = post(
        &gw,
        "/OpenPlatform/integrate/setnum.php",
        &format!("appid={app_id}&cid={}&uid={uid}", t.buin),
    )
    .await;
    assert_eq!(
        a.json(),
        json!({"Result": false, "MsgNo": -51004}),
        "{}",
        a.body
    );
    let youdu = json!({"buin": t.buin, "appId": app_id, "encrypt": "AAAA"}).to_string();
    let a = request(
        gw.addr(),
        "POST",
        "/cgi/gettoken",
        &[("Content-Type", "application/json".to_owned())],
        youdu.as_bytes(),
    )
    .await;
    assert_eq!(a.json()["errcode"], json!(3), "{}", a.body);

    // Back on: the notice goes through, and it is the first thing the phone hears of the
    // app (the refused one left no message and no badge).
    b.im.set_policy(t.id, TenantPolicy::default())
        .await
        .expect("policy");
    let a = post(&gw, "/OpenPlatform/integrate/pushappnotice.php", &notice).await;
    assert_eq!(a.json(), json!({"Result": true}), "{}", a.body);
    let m = phone.message().await;
    assert_eq!(m.conversation, format!("a:{app_id}:{uid}"));
    assert_eq!(
        switchboard_tests::im::text_of(&m),
        "您收到一条来自“审批”的消息"
    );
    let badge = phone
        .next(|k| match k {
            im::event::Kind::AppUnread(a) => Some(a.clone()),
            _ => None,
        })
        .await;
    assert_eq!((badge.app_id.as_str(), badge.unread), (app_id.as_str(), 1));
    // One notice in all: the workbench shows a badge of 1, not 2.
    let w: im::WorkbenchResponse = phone
        .client
        .request("app/list", &im::WorkbenchRequest {})
        .await
        .expect("workbench");
    assert_eq!(w.apps.len(), 1);
    assert_eq!(w.apps[0].unread, 1);

    phone.client.shutdown().await;
    gw.stop().await;
    b.stop().await;
}
