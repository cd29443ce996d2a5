//! The gateway's request ids, batch registration, recall and history by time, uploads
//! from devices (IM token) and workbench app icons, against a real broker over real
//! sockets, with effects seen by real MQTT devices.

use serde_json::{Value, json};
use switchboard_gateway::Gateway;
use switchboard_proto::im;
use switchboard_tests::TempDir;
use switchboard_tests::gateway_api::{
    App, PNG, config, has_length, header, multipart, post as signed, signed_headers,
};
use switchboard_tests::http::request;
use switchboard_tests::im::{Device, ImBroker};

async fn gateway(b: &ImBroker, files: &TempDir) -> Gateway {
    Gateway::start(config(
        b,
        "gateway-uploads",
        Some(files.path().to_path_buf()),
    ))
    .await
    .expect("gateway starts")
}

async fn app(b: &ImBroker) -> App {
    App::create(b, "acme").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id_and_errors_name_it() {
    let b = ImBroker::start().await;
    let files = TempDir::new("rid");
    let gw = gateway(&b, &files).await;
    // The caller's id comes back, in the header and in the error body.
    let a = request(
        gw.addr(),
        "POST",
        "/v1/users/online",
        &[("X-Request-Id", "trace-abc-123".into())],
        b"{}",
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(header(&a, "x-request-id"), Some("trace-abc-123"));
    assert_eq!(a.json()["request_id"], json!("trace-abc-123"));
    // Without one, a fresh id per request.
    let a1 = request(gw.addr(), "GET", "/healthz", &[], b"").await;
    let a2 = request(gw.addr(), "GET", "/healthz", &[], b"").await;
    let (id1, id2) = (header(&a1, "x-request-id"), header(&a2, "x-request-id"));
    assert!(id1.is_some_and(|i| i.len() == 32), "{:?}", a1.headers);
    assert_ne!(id1, id2);
    // A signed call that reaches the broker and fails there names the id too.
    let app = app(&b).await;
    let body = br#"{"user":"nobody"}"#;
    let mut h = signed_headers(&app, body, "application/json");
    h.push(("X-Request-Id", "call-42".into()));
    let a = request(gw.addr(), "POST", "/v1/users/nobody/kick", &h, body).await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(
        (header(&a, "x-request-id"), a.json()["request_id"].as_str()),
        (Some("call-42"), Some("call-42"))
    );
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_600_users_registers_with_per_row_errors_and_they_can_log_in() {
    let b = ImBroker::start().await;
    let files = TempDir::new("batch");
    let gw = gateway(&b, &files).await;
    let app = app(&b).await;
    let mut users: Vec<Value> = (0..600)
        .map(|i| json!({"user_id": format!("u{i}"), "name": format!("User {i}")}))
        .collect();
    users[300] = json!({"user_id": "bad account!"});
    let a = signed(&gw, &app, "/v1/users", &json!({ "users": users })).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let rows = a.json()["users"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 600);
    assert_eq!(rows[300]["error"]["code"], json!(400), "{}", rows[300]);
    assert!(rows[599]["uid"].as_u64().is_some(), "{}", rows[599]);
    assert_eq!(
        rows.iter().filter(|r| r["uid"].is_u64()).count(),
        599,
        "every other row is registered"
    );
    // A user of the second chunk logs in with a token from the API and gets a message.
    let t = signed(&gw, &app, "/v1/users/u550/token", &json!({})).await;
    let token = t.json()["token"].as_str().expect("token").to_owned();
    let mut d = Device::connect(b.addr, "u550", "u550-phone", &token).await;
    let a = signed(
        &gw,
        &app,
        "/v1/messages/private",
        &json!({"from": "u1", "to": "u550", "content": {"type": "text", "text": "welcome"}}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        switchboard_tests::im::text_of(&d.message().await),
        "welcome"
    );
    // Over the REST limit: refused whole.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"user_id": format!("x{i}")}))
        .collect();
    let a = signed(&gw, &app, "/v1/users", &json!({ "users": many })).await;
    assert_eq!(a.status, 400, "{}", a.body);
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_uploads_with_its_im_token_and_sends_the_image_a_peer_downloads() {
    let b = ImBroker::start().await;
    let files = TempDir::new("device");
    let gw = gateway(&b, &files).await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let token = b.im.issue_token(t, "alice", "", 3600).expect("token");
    let alice = Device::connect(b.addr, "alice", "alice-phone", &token).await;
    let mut bob = b.device(t, "bob", "bob-phone").await;

    let (ctype, body) = multipart("photo.png", "image/png", PNG);
    let h = [
        ("Authorization", format!("Bearer {token}")),
        ("Content-Type", ctype.clone()),
    ];
    let a = request(gw.addr(), "POST", "/v1/device/files", &h, &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let f = a.json();
    let url = f["url"].as_str().expect("url").to_owned();
    assert_eq!(f["width"], json!(2));

    // Alice's device sends it as an image message over MQTT; bob's device downloads it.
    let sent = alice
        .client
        .send(im::SendRequest {
            to: "bob".into(),
            client_msg_id: "img-1".into(),
            content: Some(im::Content {
                body: Some(im::content::Body::Image(im::Media {
                    url: url.clone(),
                    size: PNG.len() as u64,
                    sha256: f["sha256"].as_str().unwrap_or_default().into(),
                    mime: "image/png".into(),
                    width: 2,
                    height: 2,
                    ..im::Media::default()
                })),
            }),
            ..im::SendRequest::default()
        })
        .await
        .expect("sent");
    assert!(!sent.conversation.is_empty());
    let m = bob.message().await;
    let Some(im::content::Body::Image(img)) = m.content.and_then(|c| c.body) else {
        panic!("bob expected an image");
    };
    let got = request(gw.addr(), "GET", &img.url, &[], b"").await;
    assert_eq!(got.status, 200);
    assert!(has_length(&got, PNG.len()), "{}", got.headers);

    // No token, a made-up token, a revoked token: 401, nothing stored.
    let a = request(
        gw.addr(),
        "POST",
        "/v1/device/files",
        &[("Content-Type", ctype.clone())],
        &body,
    )
    .await;
    assert_eq!((a.status, a.json()["code"].as_u64()), (401, Some(40105)));
    let bad = [
        ("Authorization", "Bearer sb1.abc.def".to_owned()),
        ("Content-Type", ctype.clone()),
    ];
    let a = request(gw.addr(), "POST", "/v1/device/files", &bad, &body).await;
    assert_eq!(a.status, 401, "{}", a.body);
    b.im.revoke_token(&token).await.expect("revoked");
    let a = request(gw.addr(), "POST", "/v1/device/files", &h, &body).await;
    assert_eq!(a.status, 401, "{}", a.body);
    drop(alice);
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workbench_icons_are_sniffed_limited_and_reach_the_client_as_signed_links() {
    let b = ImBroker::start().await;
    let files = TempDir::new("icons");
    let gw = gateway(&b, &files).await;
    let app = app(&b).await;
    let created =
        b.im.admin_request(
            "app/create",
            json!({"tenant": app.tenant, "name": "审批", "identifier": "approval"})
                .to_string()
                .as_bytes(),
        )
        .await
        .expect("app created");
    let app_id = created["app_id"].as_str().expect("app id").to_owned();
    let upload = |name: &'static str, mime: &'static str, bytes: Vec<u8>| {
        let (ctype, body) = multipart(name, mime, &bytes);
        let h = signed_headers(&app, &body, &ctype);
        let path = format!("/v1/apps/{app_id}/icon");
        let addr = gw.addr();
        async move { request(addr, "POST", &path, &h, &body).await }
    };
    // A PNG is taken; the app-server list shows a signed link to it.
    let a = upload("icon.png", "image/png", PNG.to_vec()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let file = a.json()["icon_file"].as_str().expect("file id").to_owned();
    let l = signed(&gw, &app, "/v1/app/list", &json!({})).await;
    assert_eq!(l.json()["apps"][0]["icon_file"], json!(file), "{}", l.body);
    let listed = l.json()["apps"][0]["icon_signed_url"]
        .as_str()
        .expect("signed url")
        .to_owned();
    assert_eq!(
        request(gw.addr(), "GET", &listed, &[], b"").await.status,
        200
    );

    // A user's client sees it in its workbench over MQTT, as a link the gateway serves.
    b.user(app.tenant, "zhang").await;
    let phone = b.device(app.tenant, "zhang", "zhang-phone").await;
    let w: im::WorkbenchResponse = phone
        .client
        .request("app/list", &im::WorkbenchRequest {})
        .await
        .expect("workbench");
    let icon = &w.apps[0].icon_url;
    assert!(icon.starts_with(&format!("/files/{file}?exp=")), "{icon}");
    let got = request(gw.addr(), "GET", icon, &[], b"").await;
    assert_eq!(got.status, 200, "the client's link downloads");
    assert!(
        got.headers
            .to_ascii_lowercase()
            .contains("content-type: image/png")
    );

    // A GIF is fine; text named .png, a WebP and anything over 1 MiB are not.
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();
    let a = upload("i.gif", "image/gif", gif).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = upload("fake.png", "image/png", b"just some text".to_vec()).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let webp = b"RIFF\x00\x00\x00\x00WEBPVP8 ".to_vec();
    let a = upload("i.webp", "image/webp", webp).await;
    assert_eq!((a.status, a.json()["code"].as_u64()), (415, Some(41500)));
    let mut big = PNG.to_vec();
    big.resize(1024 * 1024 + 1, 0);
    let a = upload("big.png", "image/png", big).await;
    assert_eq!(a.status, 413, "{}", a.body);
    // Another tenant's app: 404, its icon unchanged.
    let other = b.im.create_tenant("other", None).await.expect("tenant");
    let other = App {
        key: other.app_key.clone(),
        secret: other.app_secret.clone(),
        tenant: other.id,
    };
    let (ctype, body) = multipart("icon.png", "image/png", PNG);
    let h = signed_headers(&other, &body, &ctype);
    let a = request(
        gw.addr(),
        "POST",
        &format!("/v1/apps/{app_id}/icon"),
        &h,
        &body,
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.body);
    drop(phone);
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_server_recalls_as_the_sender_and_reads_history_by_time() {
    let b = ImBroker::start().await;
    let files = TempDir::new("recall");
    let gw = gateway(&b, &files).await;
    let app = app(&b).await;
    b.user(app.tenant, "alice").await;
    b.user(app.tenant, "bob").await;
    let mut bob = b.device(app.tenant, "bob", "bob-phone").await;
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        let a = signed(
            &gw,
            &app,
            "/v1/messages/private",
            &json!({"from": "alice", "to": "bob", "content": {"type": "text", "text": text}}),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let m = bob.message().await;
        sent.push((m.seq, m.server_time_ms, m.conversation.clone()));
    }
    let conv = sent[0].2.clone();

    // History by time: from the second message's time on, newest first.
    let path = format!(
        "/v1/users/bob/conversations/{conv}/messages?from_ms={}",
        sent[1].1
    );
    let body = b"";
    let h = signed_headers(&app, body, "application/json");
    let a = request(gw.addr(), "GET", &path, &h, body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let texts: Vec<String> = a.json()["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["content"]["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    let expected: Vec<String> = if sent[0].1 == sent[1].1 {
        vec!["three".into(), "two".into(), "one".into()]
    } else {
        vec!["three".into(), "two".into()]
    };
    assert_eq!(texts, expected);
    let path = format!("/v1/users/bob/conversations/{conv}/messages?from_ms=10&to_ms=5");
    let h = signed_headers(&app, body, "application/json");
    assert_eq!(request(gw.addr(), "GET", &path, &h, body).await.status, 400);

    // Recall as alice: bob's device is told.
    let a = signed(
        &gw,
        &app,
        "/v1/messages/recall",
        &json!({"user": "alice", "conversation": conv, "seq": sent[2].0}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let r = bob
        .next(|k| match k {
            im::event::Kind::Recalled(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!((r.seq, r.by.as_str()), (sent[2].0, "alice"));
    // Bob is not the sender: refused.
    let a = signed(
        &gw,
        &app,
        "/v1/messages/recall",
        &json!({"user": "bob", "conversation": conv, "seq": sent[1].0}),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.body);
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_messages_import_with_their_times_and_show_in_a_devices_history() {
    let b = ImBroker::start().await;
    let files = TempDir::new("import");
    let gw = gateway(&b, &files).await;
    let app = app(&b).await;
    b.user(app.tenant, "alice").await;
    b.user(app.tenant, "bob").await;
    let past = |id: &str, from: &str, to: &str, text: &str, t: u64| {
        json!({"from": from, "to": to, "content": {"type": "text", "text": text},
               "server_time_ms": t, "client_msg_id": id})
    };
    // Yesterday's messages (older than the tenant's retention would be hidden, as any).
    let day_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        - 86_400_000;
    let body = json!({"messages": [
        past("old-1", "alice", "bob", "hello yesterday", day_ago),
        past("old-2", "bob", "alice", "hi alice", day_ago + 60_000),
        past("old-3", "bob", "nobody", "lost", day_ago + 120_000),
    ]});
    let a = signed(&gw, &app, "/v1/messages/import", &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let rows = a.json()["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        (rows[0]["seq"].as_u64(), rows[1]["seq"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(rows[2]["error"]["code"], json!(404));
    // A retried import adds nothing.
    let a = signed(&gw, &app, "/v1/messages/import", &body).await;
    assert_eq!(a.json()["rows"][0]["duplicate"], json!(true), "{}", a.body);

    // Bob's device finds the conversation, read, with both messages at their old times.
    let bob = b.device(app.tenant, "bob", "bob-phone").await;
    let conv = rows[0]["conversation"].as_str().expect("conv").to_owned();
    let h: im::HistoryResponse = bob
        .client
        .request(
            "history",
            &im::HistoryRequest {
                conversation: conv.clone(),
                before_seq: 0,
                limit: 10,
            },
        )
        .await
        .expect("history");
    let seen: Vec<(u64, u64)> = h
        .messages
        .iter()
        .map(|m| (m.seq, m.server_time_ms))
        .collect();
    assert_eq!(seen, vec![(2, day_ago + 60_000), (1, day_ago)]);
    let body = b"";
    let hd = signed_headers(&app, body, "application/json");
    let l = request(gw.addr(), "GET", "/v1/users/bob/conversations", &hd, body).await;
    assert_eq!(l.status, 200, "{}", l.body);
    assert_eq!(l.json()["unread_total"], json!(0), "{}", l.body);
    gw.stop().await;
    b.stop().await;
}
