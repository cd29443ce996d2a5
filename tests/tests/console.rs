//! The web console (`/console` of the gateway) end to end: a broker with the IM service on
//! a redb store on disk, a gateway in front, real HTTP.
//!
//! - `console_browser_*`: a Node script (`tests/js/console/core.mjs`) drives Debian's
//!   Chromium (Playwright) and Debian's Firefox ESR (puppeteer-core over WebDriver BiDi): sign-in with the one-time password, the forced change, a tenant
//!   and its credentials, the language switch, kicking a real MQTT client (which must get
//!   DISCONNECT 0x98), phone width. Failures keep screenshots (the path is printed).
//! - Security, over raw HTTP: no session, no CSRF token, another tenant's ids, script in
//!   text fields, sign-in back-off, sign-out, error pages.

use switchboard_proto::{
    Packet, Properties, QoS, ReasonCode, Subscribe, SubscriptionOptions, Version,
};
use switchboard_tests::console::*;
use switchboard_tests::http::request;
use switchboard_tests::{RawClient, connect_packet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_browser_sign_in_tenant_language_kick_phone() {
    browser_core(Browser::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_browser_firefox_sign_in_tenant_language_kick_phone() {
    browser_core(Browser::Firefox).await;
}

/// The core scenario (`tests/js/console/core.mjs`) in `browser`.
async fn browser_core(browser: Browser) {
    let c = Console::start().await;
    let op_password =
        c.b.im
            .ensure_console_operator("admin")
            .await
            .expect("operator")
            .expect("a one-time password on first start");
    assert!(
        c.b.im
            .ensure_console_operator("admin")
            .await
            .expect("again")
            .is_none(),
        "the one-time password is made once"
    );
    let dev_password = developer(&c, "dev", None).await;
    // A real MQTT client for the operator to kick. It sends no PINGREQ, so it asks for no
    // keep-alive: on a loaded machine the browser may take minutes to reach the kick.
    let mut connect = connect_packet(Version::V5, "kick-me-1");
    connect.keep_alive = 0;
    let (mut mqtt, ack) = RawClient::connect(c.b.addr, connect).await;
    assert!(matches!(ack, Packet::ConnAck(_)));
    let shots = std::env::temp_dir().join(format!(
        "sb-console-shots-{}-{}",
        browser.name(),
        std::process::id()
    ));
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let args = vec![
        c.base(),
        "admin".into(),
        op_password,
        "dev".into(),
        dev_password,
        "kick-me-1".into(),
        shots.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking({
        let shots = shots.clone();
        move || run_browser_script(browser, "console/core.mjs", &args, &shots)
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "browser flow failed in {} (screenshots in {}):\n{stdout}\n{}",
        browser.name(),
        shots.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // The kicked client heard why: DISCONNECT 0x98 Administrative action.
    assert_eq!(
        kicked_reason(&mut mqtt).await,
        Some(ReasonCode::AdministrativeAction)
    );
    println!("{stdout}");
    // SWITCHBOARD_KEEP_SHOTS=1 keeps the screenshots of a passing run (to look at them).
    if std::env::var_os("SWITCHBOARD_KEEP_SHOTS").is_none() {
        let _ = std::fs::remove_dir_all(&shots);
    } else {
        println!("screenshots in {}", shots.display());
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_need_a_session_and_forms_need_the_csrf_token() {
    let c = Console::start().await;
    for path in [
        "/console",
        "/console/tenants",
        "/console/ops",
        "/console/ops/clients",
        "/console/tenants/1",
    ] {
        let a = c.get(path, "").await;
        assert_eq!(a.status, 303, "{path}");
        assert!(
            location(&a).starts_with("/console/signin?next="),
            "{path}: {}",
            location(&a)
        );
    }
    // Behind a TLS proxy the cookies are `Secure`; on plain HTTP they cannot be.
    let a = request(
        c.gw.addr(),
        "GET",
        "/console/signin",
        &[("X-Forwarded-Proto", "https".to_owned())],
        b"",
    )
    .await;
    let cookie = header(&a, "set-cookie").join("\n");
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let a = c.get("/console/signin", "").await;
    assert!(!header(&a, "set-cookie").join("\n").contains("Secure"));
    assert!(
        header(&a, "content-security-policy")
            .first()
            .is_some_and(|p| p.contains("script-src 'self'")),
        "{}",
        a.headers
    );
    // A made-up session is no session.
    let a = c
        .get("/console/tenants", "sb_session=0123456789abcdef")
        .await;
    assert_eq!(a.status, 303);
    // Sign-in itself needs its token.
    let a = c
        .post(
            "/console/signin",
            "",
            &[("username", "admin"), ("password", "x")],
        )
        .await;
    assert_eq!(a.status, 403);
    let pw = developer(&c, "dev", None).await;
    let (cookie, csrf) = c.sign_in("dev", &pw).await;
    let session = set_cookie_attrs(&c, "dev", &format!("{pw}-changed")).await;
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    for (path, form) in [
        ("/console/tenants/new", vec![("name", "no token")]),
        ("/console/signout", vec![]),
        (
            "/console/password",
            vec![("old", "a"), ("new", "b"), ("confirm", "b")],
        ),
    ] {
        let a = c.post(path, &cookie, &form).await;
        assert_eq!(a.status, 403, "{path} without a token");
        let mut wrong = form.clone();
        wrong.push(("_csrf", "0000"));
        assert_eq!(
            c.post(path, &cookie, &wrong).await.status,
            403,
            "{path} wrong token"
        );
    }
    // With the token the form works.
    let a = c
        .post(
            "/console/tenants/new",
            &cookie,
            &[("_csrf", &csrf), ("name", "With token")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("new-app-secret"));
    // Sign-out ends the session everywhere.
    let a = c
        .post("/console/signout", &cookie, &[("_csrf", &csrf)])
        .await;
    assert_eq!(a.status, 303);
    assert_eq!(c.get("/console/tenants", &cookie).await.status, 303);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_tenant_scope_are_enforced() {
    let c = Console::start().await;
    let mine = c.b.im.create_tenant("mine", None).await.expect("tenant");
    let other_account = c.b.im.create_account().await.expect("account");
    let theirs =
        c.b.im
            .create_tenant("theirs", Some(&other_account.id))
            .await
            .expect("tenant");
    // (Named: the "first" account is whichever id sorts first.)
    let pw = developer(&c, "dev", Some(&mine.account)).await;
    let (dev, dev_csrf) = c.sign_in("dev", &pw).await;
    // A developer sees its account's tenants only.
    let list = c.get("/console/tenants", &dev).await;
    assert!(
        list.body.contains("mine") && !list.body.contains("theirs"),
        "{}",
        list.body
    );
    assert_eq!(
        c.get(&format!("/console/tenants/{}", mine.id), &dev)
            .await
            .status,
        200
    );
    assert_eq!(
        c.get(&format!("/console/tenants/{}", theirs.id), &dev)
            .await
            .status,
        404
    );
    for action in ["rotate", "compat", "webhooks", "push"] {
        let a = c
            .post(
                &format!("/console/tenants/{}/{action}", theirs.id),
                &dev,
                &[
                    ("_csrf", &dev_csrf),
                    ("on", "on"),
                    ("url", "http://x/"),
                    ("vendor", "apns"),
                    ("config", "{}"),
                ],
            )
            .await;
        assert_eq!(a.status, 404, "{action} on another account's tenant");
    }
    assert_eq!(
        c.b.im.tenant(theirs.id).expect("tenant").app_secret,
        theirs.app_secret,
        "nothing changed"
    );
    // A tenant administrator: one tenant, no creation.
    c.b.im
        .create_console_user(
            "ta",
            "tenant_admin",
            Some(mine.id),
            None,
            Some("ta-first-password".into()),
        )
        .await
        .expect("tenant admin");
    let (ta, ta_csrf) = c.sign_in("ta", "ta-first-password").await;
    assert_eq!(
        c.get(&format!("/console/tenants/{}", mine.id), &ta)
            .await
            .status,
        200
    );
    assert_eq!(
        c.get(&format!("/console/tenants/{}", theirs.id), &ta)
            .await
            .status,
        404
    );
    assert_eq!(c.get("/console/tenants/new", &ta).await.status, 403);
    let a = c
        .post(
            &format!("/console/tenants/{}/rotate", theirs.id),
            &ta,
            &[("_csrf", &ta_csrf)],
        )
        .await;
    assert_eq!(a.status, 404);
    assert_eq!(c.get("/console/ops", &ta).await.status, 403);
    assert_eq!(c.get("/console/ops/clients", &dev).await.status, 403);
    // An operator: operations, no tenant pages.
    let op_pw = operator(&c).await;
    let (op, _) = c.sign_in("admin", &op_pw).await;
    assert_eq!(c.get("/console/ops", &op).await.status, 200);
    assert_eq!(c.get("/console/tenants", &op).await.status, 403);
    assert_eq!(
        c.get(&format!("/console/tenants/{}", mine.id), &op)
            .await
            .status,
        403
    );
    // Rotating its own tenant's secret works and shows the new one once.
    let a = c
        .post(
            &format!("/console/tenants/{}/rotate", mine.id),
            &ta,
            &[("_csrf", &ta_csrf)],
        )
        .await;
    assert_eq!(a.status, 200);
    let fresh = c.b.im.tenant(mine.id).expect("tenant").app_secret.clone();
    assert_ne!(fresh, mine.app_secret);
    assert!(a.body.contains(&fresh));
    let show = c.get(&format!("/console/tenants/{}", mine.id), &ta).await;
    assert!(!show.body.contains(&fresh), "masked afterwards");
    // Rotating the app key: the new one resolves, the old one no longer does.
    let a = c
        .post(
            &format!("/console/tenants/{}/rotate", mine.id),
            &ta,
            &[("_csrf", &ta_csrf), ("what", "key")],
        )
        .await;
    assert_eq!(a.status, 200);
    let key = text_of_id(&a.body, "new-app-key");
    assert_ne!(key, mine.app_key);
    assert_eq!(c.b.im.tenant_by_key(&key).expect("new key").id, mine.id);
    assert!(c.b.im.tenant_by_key(&mine.app_key).is_err(), "old key gone");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_in_text_fields_is_escaped_and_bad_input_is_shown_next_to_the_field() {
    let c = Console::start().await;
    let pw = developer(&c, "dev", None).await;
    let (dev, csrf) = c.sign_in("dev", &pw).await;
    let evil = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>";
    let a = c
        .post(
            "/console/tenants/new",
            &dev,
            &[("_csrf", &csrf), ("name", evil)],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let list = c.get("/console/tenants", &dev).await;
    assert!(escaped(&list.body, "script>alert(1)"), "{}", list.body);
    assert!(!list.body.contains("<script>alert") && !list.body.contains("<img src=x"));
    let tid = text_of_id(&a.body, "new-tenant-id");
    let show = c.get(&format!("/console/tenants/{tid}"), &dev).await;
    assert_eq!(show.status, 200);
    assert!(!show.body.contains("<script>alert") && !show.body.contains("<img src=x"));
    // Script in a webhook URL and a search box: refused or escaped, never raw.
    let a = c
        .post(
            &format!("/console/tenants/{tid}/webhooks"),
            &dev,
            &[
                ("_csrf", &csrf),
                ("url", "javascript:<script>alert(3)</script>"),
                ("events", "after_send"),
            ],
        )
        .await;
    assert_eq!(a.status, 422);
    assert!(a.body.contains("hook-url-error") && !a.body.contains("<script>alert(3)"));
    // A wrong form: the error sits next to the field, the page is the form again.
    let a = c
        .post(
            "/console/tenants/new",
            &dev,
            &[("_csrf", &csrf), ("name", "")],
        )
        .await;
    assert_eq!(a.status, 422);
    assert!(a.body.contains("name-error"));
    let a = c
        .post(
            &format!("/console/tenants/{tid}/push"),
            &dev,
            &[("_csrf", &csrf), ("vendor", "apns"), ("config", "not json")],
        )
        .await;
    assert_eq!(a.status, 422);
    assert!(a.body.contains("push-config-error"));
    // Operators' search boxes and ids echo escaped.
    let op_pw = operator(&c).await;
    let (op, _) = c.sign_in("admin", &op_pw).await;
    let a = c
        .get(
            "/console/ops/clients?q=%3Cscript%3Ealert(4)%3C%2Fscript%3E",
            &op,
        )
        .await;
    assert_eq!(a.status, 200);
    assert!(escaped(&a.body, "script>alert(4)") && !a.body.contains("<script>alert(4)"));
    let a = c.get("/console/ops/im?tenant=%3Cb%3E", &op).await;
    assert_eq!(a.status, 422);
    assert!(a.body.contains("tenant-error") && !a.body.contains("<b>"));
    // Unknown pages and unknown ids: friendly pages, no internals.
    for path in ["/console/nope", "/console/ops/client?id=nobody"] {
        let a = c.get(path, &op).await;
        assert_eq!(a.status, 404, "{path}");
        assert!(a.body.contains("error-message"), "{path}: {}", a.body);
    }
    let a = c.get("/console/tenants/not-a-number", &dev).await;
    assert!(a.status == 400 || a.status == 404, "{}", a.status);
    assert!(!a.body.contains("panicked"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_back_off_per_account() {
    let c = Console::start().await;
    let pw = developer(&c, "dev", None).await;
    // Unknown users get the same answer as wrong passwords.
    let a = c.try_sign_in("nobody", "whatever-password").await;
    assert_eq!(a.status, 422);
    assert!(a.body.contains("Wrong user name or password"), "{}", a.body);
    for _ in 0..3 {
        let a = c.try_sign_in("dev", "wrong-password").await;
        assert_eq!(a.status, 422);
        assert!(a.body.contains("Wrong user name or password"), "{}", a.body);
    }
    // Past the free failures the account (and this address) waits, even with the right
    // password.
    let mut refused = false;
    for _ in 0..3 {
        let a = c.try_sign_in("dev", "wrong-password").await;
        assert_eq!(a.status, 422);
        refused |= a.body.contains("Too many failed attempts");
    }
    assert!(refused, "the back-off starts");
    let a = c.try_sign_in("dev", &pw).await;
    assert_eq!(a.status, 422);
    assert!(a.body.contains("Too many failed attempts"), "{}", a.body);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_counters_clients_and_kick_them() {
    let c = Console::start().await;
    let op_pw = operator(&c).await;
    let (op, csrf) = c.sign_in("admin", &op_pw).await;
    let (mut mqtt, _) =
        RawClient::connect(c.b.addr, connect_packet(Version::V5, "ops-client-7")).await;
    mqtt.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(
            "sensors/+/temp".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
        )],
    }))
    .await;
    assert!(matches!(mqtt.recv().await, Some(Packet::SubAck(_))));
    let a = c.get("/console/ops", &op).await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("chart-rates") && a.body.contains("<svg"));
    // The data file's size: the broker's redb file is never empty.
    let disk = a
        .body
        .split("id=\"tile-disk\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_default();
    assert!(
        !disk.is_empty() && disk != "0 B",
        "data file size tile: {disk:?}"
    );
    let a = c.get("/console/ops/client?id=ops-client-7", &op).await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("sensors/+/temp"), "{}", a.body);
    let a = c
        .post(
            "/console/ops/kick",
            &op,
            &[("_csrf", &csrf), ("id", "ops-client-7")],
        )
        .await;
    assert_eq!(a.status, 303);
    assert_eq!(
        kicked_reason(&mut mqtt).await,
        Some(ReasonCode::AdministrativeAction)
    );
    // Kicking it again: it is gone.
    let a = c
        .post(
            "/console/ops/kick",
            &op,
            &[("_csrf", &csrf), ("id", "ops-client-7")],
        )
        .await;
    assert_eq!(a.status, 404);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_chatrooms_groups_and_a_users_message_trace() {
    let c = Console::start().await;
    let tid = c.b.tenant("traced").await;
    for u in ["alice", "bob"] {
        c.b.user(tid, u).await;
    }
    let call = |op: &'static str, v: serde_json::Value| {
        let im = c.b.im.clone();
        async move {
            im.admin_request(op, v.to_string().as_bytes())
                .await
                .unwrap_or_else(|e| panic!("{op}: {e}"))
        }
    };
    call(
        "send",
        serde_json::json!({ "tenant": tid, "from": "alice", "to": "bob",
            "content": { "type": "text", "text": "hello <b>bob</b>" } }),
    )
    .await;
    call(
        "group/create",
        serde_json::json!({ "tenant": tid, "group_id": "g-team", "name": "Team",
            "members": ["alice", "bob"] }),
    )
    .await;
    call(
        "room/create",
        serde_json::json!({ "tenant": tid, "room": "lobby", "name": "Lobby" }),
    )
    .await;
    let op_pw = operator(&c).await;
    let (op, _) = c.sign_in("admin", &op_pw).await;
    let a = c
        .get(
            &format!("/console/ops/im?tenant={tid}&group=g-team&user=bob"),
            &op,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("lobby"), "the tenant's chatrooms");
    assert!(a.body.contains("id=\"group-members\""), "{}", a.body);
    assert!(a.body.contains(">alice<") && a.body.contains(">bob<"));
    // Bob's trace: the message alice sent, escaped, not read yet.
    assert!(a.body.contains("id=\"trace\""));
    assert!(
        escaped(&a.body, "b>bob") && !a.body.contains("<b>bob"),
        "{}",
        a.body
    );
    assert!(a.body.contains("stored, not read yet"));
    // Times read as dates, not milliseconds; a user with no device reads as offline.
    let trace = &a.body[a.body.find("id=\"trace\"").unwrap_or_default()..];
    assert!(trace.contains(" UTC</td>"), "{trace}");
    let digits_run = trace
        .split(|ch: char| !ch.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or_default();
    assert!(digits_run < 13, "a raw millisecond time: {trace}");
    assert!(
        trace.contains("<span class=\"muted\">offline</span>"),
        "{trace}"
    );
    // Unknown ids are shown next to their fields.
    let a = c
        .get(
            &format!("/console/ops/im?tenant={tid}&group=nope&user=nobody"),
            &op,
        )
        .await;
    assert_eq!(a.status, 422);
    assert!(a.body.contains("There is no such group") && a.body.contains("There is no such user"));
    let a = c.get("/console/ops/im?tenant=999", &op).await;
    assert_eq!(a.status, 422);
    assert!(a.body.contains("There is no such tenant"));
    c.stop().await;
}
