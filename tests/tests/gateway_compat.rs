//! The gateway's dialects of the seeds' server APIs: RongCloud's (driven by RongCloud's own
//! Python SDK), imo's workbench integration API and Youdu's encrypted API (to users and
//! to departments), their effects seen by real devices.

use std::net::SocketAddr;

use serde_json::json;
use switchboard_client::Endpoint;
use switchboard_gateway::{DEFAULT_BODY_LIMIT, Gateway, GatewayConfig};
use switchboard_proto::im;
use switchboard_tests::http::request;
use switchboard_tests::im::{ImBroker, SERVICE_SECRET};

async fn gateway(b: &ImBroker) -> Gateway {
    gateway_with_files(b, None).await
}

async fn gateway_with_files(b: &ImBroker, files: Option<std::path::PathBuf>) -> Gateway {
    Gateway::start(GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        broker: vec![Endpoint::Tcp(b.addr)],
        service_secret: SERVICE_SECRET.into(),
        client_id: "gateway-compat-test".into(),
        body_limit: DEFAULT_BODY_LIMIT,
        files_dir: files,
    })
    .await
    .expect("gateway starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rongclouds_own_python_sdk_works_against_the_gateway() {
    let b = ImBroker::start().await;
    // History files are served from the file store.
    let files = switchboard_tests::TempDir::new("rc-history");
    let gw = gateway_with_files(&b, Some(files.path().to_path_buf())).await;
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

/// Runs `openssl enc` (AES-256-CBC, no padding of its own, base64 on the wire side).
fn openssl(decrypt: bool, key: &[u8; 32], input: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let hexs = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["enc", "-aes-256-cbc", "-nopad", "-a", "-A", "-K"])
        .arg(hexs(key))
        .arg("-iv")
        .arg(hexs(&key[..16]));
    if decrypt {
        cmd.arg("-d");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    let out = child.wait_with_output().expect("openssl output");
    assert!(out.status.success(), "openssl failed");
    out.stdout
}

/// Youdu's envelope, built here by hand: 16 random bytes, 4-byte length, content, appId,
/// PKCS#7 to 32-byte blocks, AES-256-CBC with IV = key[..16], base64.
fn youdu_encrypt(key: &[u8; 32], content: &str, app_id: &str) -> String {
    let mut p = b"0123456789abcdef".to_vec();
    p.extend_from_slice(&(content.len() as u32).to_be_bytes());
    p.extend_from_slice(content.as_bytes());
    p.extend_from_slice(app_id.as_bytes());
    let pad = 32 - p.len() % 32;
    p.resize(p.len() + pad, pad as u8);
    String::from_utf8(openssl(false, key, &p)).expect("base64 text")
}

fn youdu_decrypt(key: &[u8; 32], b64: &str, app_id: &str) -> String {
    let p = openssl(true, key, format!("{b64}\n").as_bytes());
    let pad = *p.last().expect("plaintext") as usize;
    let body = &p[..p.len() - pad];
    let n = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
    assert_eq!(
        &body[20 + n..],
        app_id.as_bytes(),
        "the answer names our app"
    );
    String::from_utf8(body[20..20 + n].to_vec()).expect("utf-8")
}

/// The 32 bytes of a 43-character EncodingAESKey.
fn aes_key(k: &str) -> [u8; 32] {
    let out = std::process::Command::new("openssl")
        .args(["base64", "-d", "-A"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(format!("{k}=").as_bytes())?;
            c.wait_with_output()
        })
        .expect("openssl base64");
    out.stdout.try_into().expect("32 bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn youdu_gettoken_and_msg_send_with_real_aes_reach_the_users_app_conversation() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let t = b.im.create_tenant("ent", None).await.expect("tenant");
    let uid = b.user(t.id, "li").await;
    b.user(t.id, "wang").await;
    let app =
        b.im.admin_request(
            "app/create",
            json!({"tenant": t.id, "name": "报销", "identifier": "expense"})
                .to_string()
                .as_bytes(),
        )
        .await
        .expect("app");
    let app_id = app["app_id"].as_str().expect("id").to_owned();
    let key = aes_key(app["encoding_aes_key"].as_str().expect("key"));
    let mut li = b.device(t.id, "li", "li-phone").await;
    let post = |path: String, body: serde_json::Value| {
        let addr = gw.addr();
        async move {
            request(
                addr,
                "POST",
                &path,
                &[("Content-Type", "application/json".into())],
                body.to_string().as_bytes(),
            )
            .await
            .json()
        }
    };

    // gettoken: the current time, encrypted.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let enc = youdu_encrypt(&key, &now.to_string(), &app_id);
    let v = post(
        "/cgi/gettoken".into(),
        json!({"buin": t.buin, "appId": app_id, "encrypt": enc}),
    )
    .await;
    assert_eq!(
        (v["errcode"].as_i64(), v["errmsg"].as_str()),
        (Some(0), Some("ok")),
        "{v}"
    );
    let plain: serde_json::Value = serde_json::from_str(&youdu_decrypt(
        &key,
        v["encrypt"].as_str().expect("encrypt"),
        &app_id,
    ))
    .expect("token JSON");
    assert_eq!(plain["expireIn"], json!(7200));
    let token = plain["accessToken"].as_str().expect("token").to_owned();

    // msg/send to two users, one unknown: the known one receives, errmsg names the other.
    let long = "长".repeat(700);
    let msg = json!({"toUser": "li|nobody", "msgType": "text", "text": {"content": long}});
    let enc = youdu_encrypt(&key, &msg.to_string(), &app_id);
    let v = post(
        format!("/cgi/msg/send?accessToken={token}"),
        json!({"buin": t.buin, "appId": app_id, "encrypt": enc}),
    )
    .await;
    assert_eq!(v["errcode"].as_i64(), Some(0), "{v}");
    assert!(
        v["errmsg"].as_str().expect("errmsg").contains("nobody"),
        "{v}"
    );
    let m = li.message().await;
    assert_eq!(m.conversation, format!("a:{app_id}:{uid}"));
    assert_eq!(
        switchboard_tests::im::text_of(&m).chars().count(),
        600,
        "text cut at 600 characters"
    );

    // Failures with Youdu's codes: a stale timestamp, a wrong key, a forged token, a wrong
    // buin, malformed JSON.
    let stale = youdu_encrypt(&key, &(now - 3600).to_string(), &app_id);
    let v = post(
        "/cgi/gettoken".into(),
        json!({"buin": t.buin, "appId": app_id, "encrypt": stale}),
    )
    .await;
    assert_eq!(v["errcode"].as_i64(), Some(100003), "{v}");
    let wrong = youdu_encrypt(&[9u8; 32], &now.to_string(), &app_id);
    let v = post(
        "/cgi/gettoken".into(),
        json!({"buin": t.buin, "appId": app_id, "encrypt": wrong}),
    )
    .await;
    assert_eq!(v["errcode"].as_i64(), Some(100006), "{v}");
    let v = post(
        "/cgi/msg/send?accessToken=9999999999.deadbeef".into(),
        json!({"buin": t.buin, "appId": app_id, "encrypt": enc}),
    )
    .await;
    assert_eq!(v["errcode"].as_i64(), Some(100001), "{v}");
    let v = post(
        "/cgi/gettoken".into(),
        json!({"buin": t.buin + 1, "appId": app_id, "encrypt": enc}),
    )
    .await;
    assert_eq!(v["errcode"].as_i64(), Some(100009), "{v}");
    let a = request(gw.addr(), "POST", "/cgi/gettoken", &[], b"{oops").await;
    assert_eq!(a.json()["errcode"].as_i64(), Some(100004));

    gw.stop().await;
    b.stop().await;
}

/// A Youdu call: JSON body, JSON answer.
async fn youdu_post(gw: &Gateway, path: &str, body: serde_json::Value) -> serde_json::Value {
    let h = [("Content-Type", "application/json".to_owned())];
    request(gw.addr(), "POST", path, &h, body.to_string().as_bytes())
        .await
        .json()
}

/// An IM service admin request (the broker's own API, no gateway).
async fn admin(b: &ImBroker, op: &str, body: serde_json::Value) -> serde_json::Value {
    b.im.admin_request(op, body.to_string().as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{op}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn youdu_msg_send_to_a_department_reaches_its_sub_departments_members() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let t = b.im.create_tenant("ent", None).await.expect("tenant");
    let csv = "account,name,department\ncarol,Carol,Sales/East\ndave,Dave,Sales\nerin,Erin,Ops\n";
    admin(&b, "dir/import", json!({"tenant": t.id, "csv": csv})).await;
    let depts = admin(&b, "dir/list_depts", json!({"tenant": t.id})).await;
    let dept = |name: &str| {
        depts["departments"]
            .as_array()
            .expect("departments")
            .iter()
            .find(|d| d["name"] == json!(name))
            .and_then(|d| d["dept_id"].as_u64())
            .expect("department id")
    };
    let (sales, ops) = (dept("Sales"), dept("Ops"));
    let app = admin(
        &b,
        "app/create",
        json!({"tenant": t.id, "name": "公告", "identifier": "notice"}),
    )
    .await;
    let app_id = app["app_id"].as_str().expect("id").to_owned();
    let key = aes_key(app["encoding_aes_key"].as_str().expect("key"));
    let mut carol = b.device(t.id, "carol", "carol-phone").await;
    let mut dave = b.device(t.id, "dave", "dave-phone").await;
    let mut erin = b.device(t.id, "erin", "erin-phone").await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let enc = youdu_encrypt(&key, &now.to_string(), &app_id);
    let v = youdu_post(
        &gw,
        "/cgi/gettoken",
        json!({"buin": t.buin, "appId": app_id, "encrypt": enc}),
    )
    .await;
    let plain: serde_json::Value = serde_json::from_str(&youdu_decrypt(
        &key,
        v["encrypt"].as_str().expect("encrypt"),
        &app_id,
    ))
    .expect("token JSON");
    let send = format!(
        "/cgi/msg/send?accessToken={}",
        plain["accessToken"].as_str().expect("token")
    );
    let send_msg = |msg: serde_json::Value| {
        json!({"buin": t.buin, "appId": app_id,
               "encrypt": youdu_encrypt(&key, &msg.to_string(), &app_id)})
    };

    // toDept Sales (toUser absent): dave in Sales and carol in Sales/East receive it.
    let v = youdu_post(
        &gw,
        &send,
        send_msg(json!({"toDept": sales.to_string(), "msgType": "text",
                        "text": {"content": "sales meeting at 3"}})),
    )
    .await;
    assert_eq!(
        (v["errcode"].as_i64(), v["errmsg"].as_str()),
        (Some(0), Some("ok")),
        "{v}"
    );
    for d in [&mut carol, &mut dave] {
        let m = d.message().await;
        assert!(
            m.conversation.starts_with(&format!("a:{app_id}:")),
            "{}",
            m.conversation
        );
        assert_eq!(switchboard_tests::im::text_of(&m), "sales meeting at 3");
    }
    // Neither toUser nor toDept: refused, nobody receives anything.
    let v = youdu_post(
        &gw,
        &send,
        send_msg(json!({"toUser": "", "toDept": "", "msgType": "text",
                        "text": {"content": "to nobody"}})),
    )
    .await;
    assert_eq!(v["errcode"].as_i64(), Some(200007), "{v}");
    // toUser and toDept together: erin (Ops) gets one message, and it is her first: the
    // Sales one and the refused one never reached her.
    let v = youdu_post(
        &gw,
        &send,
        send_msg(
            json!({"toUser": "erin", "toDept": ops.to_string(), "msgType": "text",
                        "text": {"content": "ops only"}}),
        ),
    )
    .await;
    assert_eq!(v["errcode"].as_i64(), Some(0), "{v}");
    let m = erin.message().await;
    assert_eq!(switchboard_tests::im::text_of(&m), "ops only");

    for d in [carol, dave, erin] {
        d.client.shutdown().await;
    }
    gw.stop().await;
    b.stop().await;
}
