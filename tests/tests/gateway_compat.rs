//! The gateway's dialects of the seeds' server APIs: RongCloud's (driven by RongCloud's own
//! Python SDK) and imo's workbench integration API, their effects seen by real devices.

use std::net::SocketAddr;

use serde_json::json;
use switchboard_client::Endpoint;
use switchboard_gateway::{DEFAULT_BODY_LIMIT, Gateway, GatewayConfig};
use switchboard_proto::im;
use switchboard_tests::http::request;
use switchboard_tests::im::{ImBroker, SERVICE_SECRET};

async fn gateway(b: &ImBroker) -> Gateway {
    Gateway::start(GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        broker: vec![Endpoint::Tcp(b.addr)],
        service_secret: SERVICE_SECRET.into(),
        client_id: "gateway-compat-test".into(),
        body_limit: DEFAULT_BODY_LIMIT,
    })
    .await
    .expect("gateway starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rongclouds_own_python_sdk_works_against_the_gateway() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let t = b.im.create_tenant("acme", None).await.expect("tenant");
    let proto_dir = format!("{}/../proto/schema", env!("CARGO_MANIFEST_DIR"));
    switchboard_tests::run_python_suite(
        "rongcloud_sdk.py",
        vec![
            "--http-port".into(),
            gw.addr().port().to_string(),
            "--mqtt-port".into(),
            b.addr.port().to_string(),
            "--proto-dir".into(),
            proto_dir,
            "--app-key".into(),
            t.app_key.clone(),
            "--app-secret".into(),
            t.app_secret.clone(),
        ],
    )
    .await;
    gw.stop().await;
    b.stop().await;
}

/// The next app badge event on a device.
async fn badge(d: &mut switchboard_tests::im::Device) -> im::AppUnread {
    d.next(|k| match k {
        im::event::Kind::AppUnread(a) => Some(a.clone()),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imo_workbench_badge_goes_up_with_pushappnotice_and_down_with_setnum_on_two_devices() {
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
    let (app_id, appkey) = (
        app["app_id"].as_str().expect("app id").to_owned(),
        app["appkey"].as_str().expect("appkey").to_owned(),
    );
    assert!(app_id.chars().all(|c| c.is_ascii_digit()), "{app_id}");
    let mut phone = b.device(t.id, "zhang", "zhang-phone").await;
    let mut pc = b.device(t.id, "zhang", "zhang-pc").await;

    // getappid, GET and POST, with the seed's answer shapes.
    let a = request(
        gw.addr(),
        "GET",
        &format!("/OpenPlatform/integrate/getappid.php?appkey={appkey}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        a.json(),
        json!({"Result": true, "MsgNo": {"app_id": app_id}})
    );
    let form = [(
        "Content-Type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    let a = request(
        gw.addr(),
        "POST",
        "/OpenPlatform/integrate/getappid.php",
        &form,
        b"appkey=nope",
    )
    .await;
    assert_eq!(a.json(), json!({"Result": false, "MsgNo": -51001}));

    // pushappnotice: the badge goes up by one on both devices; the seed's stray spaces in
    // parameter names are tolerated.
    let users = serde_json::to_string(&[format!("{},{uid}", t.buin)]).expect("json");
    let body = form_body(&[
        ("fromcid ", &t.buin.to_string()),
        ("fromuid ", "1"),
        ("appid ", &app_id),
        ("users ", &users),
    ]);
    for _ in 0..2 {
        let a = request(
            gw.addr(),
            "POST",
            "/OpenPlatform/integrate/pushappnotice.php",
            &form,
            body.as_bytes(),
        )
        .await;
        assert_eq!(a.json(), json!({"Result": true}), "{}", a.body);
    }
    for d in [&mut phone, &mut pc] {
        let m = d.message().await;
        assert_eq!(m.conversation, format!("a:{app_id}:{uid}"));
        assert_eq!(
            switchboard_tests::im::text_of(&m),
            "您收到一条来自“审批”的消息"
        );
        let mut last = badge(d).await;
        while last.unread < 2 {
            last = badge(d).await;
        }
        assert_eq!((last.app_id.as_str(), last.unread), (app_id.as_str(), 2));
    }
    // The workbench lists the app with its badge.
    let w: im::WorkbenchResponse = phone
        .client
        .request("app/list", &im::WorkbenchRequest {})
        .await
        .expect("workbench");
    assert_eq!(w.apps.len(), 1);
    assert_eq!((w.apps[0].name.as_str(), w.apps[0].unread), ("审批", 2));

    // setnum (read on the PC): both devices' badges go down by one.
    let a = request(
        gw.addr(),
        "GET",
        &format!(
            "/OpenPlatform/integrate/setnum.php?appid={app_id}&cid={}&uid={uid}",
            t.buin
        ),
        &[],
        b"",
    )
    .await;
    assert_eq!(a.json(), json!({"Result": true}));
    for d in [&mut phone, &mut pc] {
        let mut last = badge(d).await;
        while last.unread != 1 {
            last = badge(d).await;
        }
    }
    // Errors: an unknown user, an unknown app.
    let bad_users = serde_json::to_string(&[format!("{},999999", t.buin)]).expect("json");
    let body = form_body(&[("appid", &app_id), ("users", &bad_users)]);
    let a = request(
        gw.addr(),
        "POST",
        "/OpenPlatform/integrate/pushappnotice.php",
        &form,
        body.as_bytes(),
    )
    .await;
    assert_eq!(a.json(), json!({"Result": false, "MsgNo": -51007}));
    let a = request(
        gw.addr(),
        "GET",
        &format!(
            "/OpenPlatform/integrate/setnum.php?appid=1&cid={}&uid={uid}",
            t.buin
        ),
        &[],
        b"",
    )
    .await;
    assert_eq!(a.json(), json!({"Result": false, "MsgNo": -51004}));

    gw.stop().await;
    b.stop().await;
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}
