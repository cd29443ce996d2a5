//! RongCloud answer shapes that typed server SDKs decode strictly (RongCloud's Go and Java
//! SDKs read every `time` as a string): the times of gag lists, chatroom queries and room
//! member lists are Beijing date strings `2015-09-25 16:12:38`, a chatroom's gag list names
//! every gagged user (present in the room or not), `/user/refresh.json` refuses a user
//! who does not exist instead of creating one, and an `RC:VcMsg`'s inline audio arrives.
//! Also RongCloud's stale timestamps and replayed nonces (401, 1004, nothing changed), and
//! the gateway's answers to paths and methods no route serves, to malformed query
//! strings (the JSON error shape) and to oversized bodies on Youdu's and imo's paths (their
//! own shapes).

use serde_json::{Value, json};
use switchboard_proto::im;
use switchboard_tests::gateway_api::{App, gateway, now, signed, signed_headers};
use switchboard_tests::http::{Answer, request};
use switchboard_tests::im::ImBroker;

/// A RongCloud-signed form POST (hex SHA-1 of secret + nonce + ms timestamp).
async fn rc(gw: &switchboard_gateway::Gateway, app: &App, path: &str, form: &str) -> Answer {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let nonce = format!(
        "shape-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    rc_with(gw, app, path, form, &nonce, now() * 1000).await
}

/// Like [`rc`] with the given nonce and timestamp (ms), for replays and stale clocks.
async fn rc_with(
    gw: &switchboard_gateway::Gateway,
    app: &App,
    path: &str,
    form: &str,
    nonce: &str,
    ts_ms: u64,
) -> Answer {
    let nonce = nonce.to_owned();
    let ts = ts_ms.to_string();
    let d = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{nonce}{ts}", app.secret).as_bytes(),
    );
    let sig: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let headers = [
        ("App-Key", app.key.clone()),
        ("Nonce", nonce),
        ("Timestamp", ts),
        ("Signature", sig),
        (
            "Content-Type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
    ];
    request(gw.addr(), "POST", path, &headers, form.as_bytes()).await
}

/// `yyyy-MM-dd HH:mm:ss`, as RongCloud writes times.
fn is_rc_time(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    s.len() == 19
        && s.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rongcloud_times_are_beijing_strings_gag_lists_are_whole_and_refresh_needs_a_user() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = App::create(&b, "acme").await;
    for u in ["alice", "bob", "carol"] {
        let a = rc(
            &gw,
            &app,
            "/user/getToken.json",
            &format!("userId={u}&name={u}"),
        )
        .await;
        assert_eq!(a.json()["code"], json!(200), "{}", a.body);
    }

    // Group gag list: the end of the gag as a Beijing date string.
    let a = rc(
        &gw,
        &app,
        "/group/create.json",
        "userId=alice&userId=bob&groupId=g1&groupName=G",
    )
    .await;
    assert_eq!(a.json()["code"], json!(200), "{}", a.body);
    let a = rc(
        &gw,
        &app,
        "/group/user/gag/add.json",
        "userId=alice&groupId=g1&minute=10",
    )
    .await;
    assert_eq!(a.json()["code"], json!(200), "{}", a.body);
    let a = rc(&gw, &app, "/group/user/gag/list.json", "groupId=g1").await;
    let users = &a.json()["users"];
    assert_eq!(users[0]["userId"], json!("alice"), "{}", a.body);
    assert!(is_rc_time(&users[0]["time"]), "{}", a.body);

    // Chatroom: creation time, members' join times, gags of present and absent users.
    let a = rc(
        &gw,
        &app,
        "/chatroom/create.json",
        "chatroom%5Blive%5D=Live",
    )
    .await;
    assert_eq!(a.json()["code"], json!(200), "{}", a.body);
    let mut bob = b.device(app.tenant, "bob", "bob-phone").await;
    let joined: im::RoomJoinResponse = bob
        .client
        .request(
            "room/join",
            &im::RoomJoinRequest {
                room: "live".into(),
                ..Default::default()
            },
        )
        .await
        .expect("bob joins the room");
    assert_eq!(joined.status.map(|s| s.code).unwrap_or_default(), 0);
    let a = rc(&gw, &app, "/chatroom/query.json", "chatroomId=live").await;
    let room = &a.json()["chatRooms"][0];
    assert_eq!(room["chrmId"], json!("live"), "{}", a.body);
    assert!(is_rc_time(&room["time"]), "{}", a.body);
    let a = rc(
        &gw,
        &app,
        "/chatroom/user/query.json",
        "chatroomId=live&count=10&order=1",
    )
    .await;
    let member = &a.json()["users"][0];
    assert_eq!(member["id"], json!("bob"), "{}", a.body);
    assert!(is_rc_time(&member["time"]), "{}", a.body);
    // carol never joined: RongCloud gags her in the room all the same, and lists her.
    let a = rc(
        &gw,
        &app,
        "/chatroom/user/gag/add.json",
        "userId=bob&userId=carol&chatroomId=live&minute=5",
    )
    .await;
    assert_eq!(a.json()["code"], json!(200), "{}", a.body);
    let a = rc(&gw, &app, "/chatroom/user/gag/list.json", "chatroomId=live").await;
    let mut gagged: Vec<(String, bool)> = a.json()["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| {
            (
                u["userId"].as_str().unwrap_or_default().to_owned(),
                is_rc_time(&u["time"]),
            )
        })
        .collect();
    gagged.sort();
    assert_eq!(
        gagged,
        [("bob".to_owned(), true), ("carol".to_owned(), true)],
        "{}",
        a.body
    );

    // refresh of a user who does not exist: 1002, and no user is made.
    let a = rc(&gw, &app, "/user/refresh.json", "userId=nobody&name=N").await;
    assert_eq!(
        (a.status, a.json()["code"].as_u64()),
        (400, Some(1002)),
        "{}",
        a.body
    );
    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/users/online",
        &json!({"users": ["nobody", "alice"]}),
    )
    .await;
    assert_eq!(
        a.json()["users"]["nobody"]["exists"],
        json!(false),
        "{}",
        a.body
    );
    assert_eq!(
        a.json()["users"]["alice"]["exists"],
        json!(true),
        "{}",
        a.body
    );
    let a = rc(&gw, &app, "/user/refresh.json", "userId=alice&name=Alicia").await;
    assert_eq!(a.json()["code"], json!(200), "{}", a.body);

    // RC:VcMsg carries its AMR audio inline: bob's device gets it, not an empty link.
    let content = json!({"content": "IyFBTVIK", "duration": 2}).to_string();
    let form = format!(
        "fromUserId=alice&toUserId=bob&objectName=RC%3AVcMsg&content={}",
        form_urlencoded::byte_serialize(content.as_bytes()).collect::<String>()
    );
    let a = rc(&gw, &app, "/message/private/publish.json", &form).await;
    assert_eq!(a.json()["code"], json!(200), "{}", a.body);
    let m = bob.message().await;
    match m.content.and_then(|c| c.body) {
        Some(im::content::Body::Voice(v)) => {
            assert_eq!(
                (v.url.as_str(), v.duration_ms),
                ("data:audio/amr;base64,IyFBTVIK", 2000)
            );
        }
        other => panic!("not a voice message: {other:?}"),
    }

    bob.client.shutdown().await;
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_or_replayed_rc_calls_unknown_paths_bad_queries_and_big_bodies_get_clear_errors() {
    let b = ImBroker::start().await;
    let gw = gateway(&b).await;
    let app = App::create(&b, "acme").await;
    // RongCloud's signature: a stale timestamp and a replayed nonce are HTTP 401, code
    // 1004, and change nothing.
    let a = rc_with(
        &gw,
        &app,
        "/user/getToken.json",
        "userId=stale&name=S",
        "rc-stale",
        (now() - 600) * 1000,
    )
    .await;
    assert_eq!(
        (a.status, a.json()["code"].as_u64()),
        (401, Some(1004)),
        "{}",
        a.body
    );
    let once = |user: &'static str| {
        let (gw, app) = (&gw, &app);
        async move {
            let form = format!("userId={user}&name=N");
            rc_with(
                gw,
                app,
                "/user/getToken.json",
                &form,
                "rc-once",
                now() * 1000,
            )
            .await
        }
    };
    assert_eq!(once("first").await.json()["code"], json!(200));
    let a = once("second").await;
    assert_eq!(
        (a.status, a.json()["code"].as_u64()),
        (401, Some(1004)),
        "{}",
        a.body
    );
    let a = signed(
        &gw,
        &app,
        "POST",
        "/v1/users/online",
        &json!({"users": ["stale", "first", "second"]}),
    )
    .await;
    let exists = |u: &str| a.json()["users"][u]["exists"].as_bool();
    assert_eq!(
        (exists("stale"), exists("first"), exists("second")),
        (Some(false), Some(true), Some(false)),
        "{}",
        a.body
    );

    let a = request(gw.addr(), "POST", "/user/nosuch.json", &[], b"userId=x").await;
    assert_eq!(
        (a.status, a.json()["code"].as_u64()),
        (404, Some(404)),
        "{}",
        a.body
    );
    assert!(a.json()["message"].as_str().is_some(), "{}", a.body);
    let a = request(gw.addr(), "GET", "/user/getToken.json", &[], b"").await;
    assert_eq!(
        (a.status, a.json()["code"].as_u64()),
        (405, Some(40500)),
        "{}",
        a.body
    );
    let a = request(gw.addr(), "DELETE", "/v1/messages/private", &[], b"").await;
    assert_eq!(
        (a.status, a.json()["code"].as_u64()),
        (405, Some(40500)),
        "{}",
        a.body
    );
    // A query string that does not parse: 400 with the JSON error, not plain text.
    for path in [
        "/v1/users/alice/conversations?since_ms=yesterday",
        "/v1/users/alice/conversations/p:1:2/messages?limit=lots",
        "/v1/retained",
    ] {
        let h = signed_headers(&app, b"", "application/json");
        let a = request(gw.addr(), "GET", path, &h, b"").await;
        assert_eq!(
            (a.status, a.json()["code"].as_u64()),
            (400, Some(400)),
            "{path}: {}",
            a.body
        );
    }
    let a = request(gw.addr(), "GET", "/files/x?exp=soon", &[], b"").await;
    assert_eq!(
        (a.status, a.json()["code"].as_u64()),
        (400, Some(400)),
        "{}",
        a.body
    );
    // Bodies over the limit to Youdu's and imo's paths: 413 in the dialect's own shape.
    let big = vec![b'a'; switchboard_gateway::DEFAULT_BODY_LIMIT + 1];
    let a = request(gw.addr(), "POST", "/cgi/gettoken", &[], &big).await;
    assert_eq!(
        (a.status, a.json()["errcode"].as_i64()),
        (413, Some(100003)),
        "{}",
        a.body
    );
    for (path, code) in [
        ("/OpenPlatform/integrate/getappid.php", -51001),
        ("/OpenPlatform/integrate/pushappnotice.php", -51007),
        ("/OpenPlatform/integrate/setnum.php", -51004),
    ] {
        let a = request(gw.addr(), "POST", path, &[], &big).await;
        assert_eq!(
            (a.status, a.json()),
            (413, json!({"Result": false, "MsgNo": code})),
            "{path}"
        );
    }
    gw.stop().await;
    b.stop().await;
}
