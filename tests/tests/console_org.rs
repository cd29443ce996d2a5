//! The console's Organisation and Workbench-apps pages (issue 16 items 4 and 5) against a
//! real broker and gateway over real sockets: over plain HTTP (tenant scope, CSRF, script
//! escaped in every text field, refusals shown next to their fields, CSV template, import
//! report and export) and in a real headless Chromium driven by Playwright
//! (`tests/js/console/org.mjs`): a two-level department tree, a CSV import with one bad
//! row reported, a workbench app with an icon, then that app in an imported member's
//! workbench fetched over MQTT after their first sign-in with the default password.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use switchboard_client::Endpoint;
use switchboard_client::im::ImClient;
use switchboard_gateway::{DEFAULT_BODY_LIMIT, Gateway, GatewayConfig};
use switchboard_proto::im;
use switchboard_tests::http::{Answer, request};
use switchboard_tests::im::{ImBroker, SERVICE_SECRET, config};
use switchboard_tests::{TempDir, WAIT};

const XSS: &str = "<script>alert(1)</script>";
/// Department names cannot hold '/': script without one.
const XSS_TAG: &str = "<img src=x onerror=alert(1)>";
const PASSWORD: &str = "Console-pass-2026";

async fn gateway(b: &ImBroker, files: &Path) -> Gateway {
    Gateway::start(GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        broker: vec![Endpoint::Tcp(b.addr)],
        service_secret: SERVICE_SECRET.into(),
        client_id: "gateway-console-org".into(),
        body_limit: DEFAULT_BODY_LIMIT,
        files_dir: Some(files.to_path_buf()),
    })
    .await
    .expect("gateway starts")
}

/// A signed-in console session: its cookie and CSRF token.
struct Session {
    addr: SocketAddr,
    cookie: String,
    csrf: String,
}

/// Creates console user `name` with `role` and signs in (the forced change done).
async fn session(
    b: &ImBroker,
    gw: &Gateway,
    name: &str,
    role: &str,
    tenant: Option<u64>,
    account: Option<&str>,
) -> Session {
    b.im.create_console_user(name, role, tenant, account, Some("first-pass-1".into()))
        .await
        .expect("console user");
    let s =
        b.im.admin_request(
            "console/signin",
            json!({ "username": name, "password": "first-pass-1", "peer": "127.0.0.1" })
                .to_string()
                .as_bytes(),
        )
        .await
        .expect("sign in");
    let id = s["session"].as_str().expect("session").to_owned();
    b.im.admin_request(
        "console/password",
        json!({ "session": id, "old": "first-pass-1", "new": PASSWORD })
            .to_string()
            .as_bytes(),
    )
    .await
    .expect("password changed");
    Session {
        addr: gw.addr(),
        csrf: switchboard_gateway::console::session::csrf_of(&id),
        cookie: format!("sb_session={id}; sb_lang=en"),
    }
}

impl Session {
    async fn get(&self, path: &str) -> Answer {
        request(
            self.addr,
            "GET",
            path,
            &[("Cookie", self.cookie.clone())],
            b"",
        )
        .await
    }

    /// A form POST with the session's CSRF token (`csrf: false`: without it).
    async fn post(&self, path: &str, fields: &[(&str, &str)], csrf: bool) -> Answer {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if csrf {
            s.append_pair("_csrf", &self.csrf);
        }
        for (k, v) in fields {
            s.append_pair(k, v);
        }
        let body = s.finish();
        request(
            self.addr,
            "POST",
            path,
            &[
                ("Cookie", self.cookie.clone()),
                (
                    "Content-Type",
                    "application/x-www-form-urlencoded".to_owned(),
                ),
            ],
            body.as_bytes(),
        )
        .await
    }

    /// A multipart POST: text fields and files `(name, file name, type, bytes)`.
    async fn multipart(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        files: &[(&str, &str, &str, &[u8])],
    ) -> Answer {
        let boundary = "----switchboard-test-boundary";
        let mut body = Vec::new();
        let mut all: Vec<(&str, &str)> = vec![("_csrf", &self.csrf)];
        all.extend_from_slice(fields);
        for (k, v) in all {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        for (k, name, mime, bytes) in files {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{name}\"\r\nContent-Type: {mime}\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        request(
            self.addr,
            "POST",
            path,
            &[
                ("Cookie", self.cookie.clone()),
                (
                    "Content-Type",
                    format!("multipart/form-data; boundary={boundary}"),
                ),
            ],
            &body,
        )
        .await
    }
}

fn location(a: &Answer) -> String {
    a.headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// Departments of tenant `t` by path.
fn dept_id(b: &ImBroker, t: u64, path: &str) -> u64 {
    b.im.list_depts(t)
        .expect("departments")
        .into_iter()
        .find(|d| d["path"] == path)
        .and_then(|d| d["dept_id"].as_u64())
        .unwrap_or_else(|| panic!("no department {path}"))
}

/// A 2×2 PNG (made with Python's zlib, independently of the gateway's image code).
const PNG: [u8; 74] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x06, 0x00, 0x00, 0x00, 0x72, 0xb6, 0x0d,
    0x24, 0x00, 0x00, 0x00, 0x11, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x50, 0x48, 0x38, 0xf0,
    0x1f, 0x84, 0x19, 0x60, 0x0c, 0x00, 0x4a, 0xf4, 0x08, 0xfd, 0xd9, 0xe5, 0x94, 0x8f, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

fn escaped_not_raw(a: &Answer, what: &str) {
    escaped(a, XSS, what);
}

/// `raw` is not in the page as markup, and is there as escaped text.
fn escaped(a: &Answer, raw: &str, what: &str) {
    assert!(
        !a.body.contains(raw),
        "{what}: raw script in the page:\n{}",
        a.body
    );
    let text = raw.replace('<', "&lt;").replace('>', "&gt;");
    let numeric = raw.replace('<', "&#60;").replace('>', "&#62;");
    assert!(
        a.body.contains(&text) || a.body.contains(&numeric),
        "{what}: the text is shown escaped:\n{}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_pages_edit_the_directory_within_the_tenant_and_refuse_what_they_must() {
    let b = ImBroker::start().await;
    let files = TempDir::new("console-org-files");
    let gw = gateway(&b, files.path()).await;
    let acme = b.im.create_tenant("acme", None).await.expect("tenant").id;
    let other = b.im.create_tenant("other", None).await.expect("tenant").id;
    let s = session(&b, &gw, "acme-admin", "tenant_admin", Some(acme), None).await;

    // Two levels: Sales under the root, East under Sales.
    let r = s
        .post(
            &format!("/console/org/{acme}/depts"),
            &[("name", "Sales"), ("parent", "1")],
            true,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let sales = dept_id(&b, acme, "Sales");
    let sales_s = sales.to_string();
    let r = s
        .post(
            &format!("/console/org/{acme}/depts"),
            &[("name", "East"), ("parent", &sales_s)],
            true,
        )
        .await;
    assert_eq!(r.status, 303);
    let east = dept_id(&b, acme, "Sales/East");
    let tree = s.get(&format!("/console/org/{acme}")).await;
    assert_eq!(tree.status, 200);
    assert!(tree.body.contains("/Sales/East"), "{}", tree.body);

    // A sibling with the same name is refused next to the field, in the chosen language.
    let r = s
        .post(
            &format!("/console/org/{acme}/depts"),
            &[("name", "East"), ("parent", &sales_s)],
            true,
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("id=\"name-error\""), "{}", r.body);

    // Deleting a department with a sub-department is refused with a clear error.
    let r = s
        .post(
            &format!("/console/org/{acme}/dept/{sales}/delete"),
            &[],
            true,
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("id=\"delete-error\""), "{}", r.body);
    assert!(dept_id(&b, acme, "Sales") == sales, "still there");

    // Members: add to East, edit, disable, reset the password.
    let r = s
        .post(
            &format!("/console/org/{acme}/dept/{east}/members"),
            &[
                ("account", "zoe"),
                ("name", "Zoe"),
                ("title", "Lead"),
                ("password", "Initial-pass-1"),
            ],
            true,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let zoe = b.im.user(acme, "zoe").expect("read").expect("zoe");
    assert_eq!(
        (zoe.name.as_str(), zoe.depts.as_slice()),
        ("Zoe", &[east][..])
    );
    assert!(zoe.must_change_password);
    // Now East has a member: deleting it is refused too.
    let r = s
        .post(
            &format!("/console/org/{acme}/dept/{east}/delete"),
            &[],
            true,
        )
        .await;
    assert_eq!(r.status, 422);
    let east_s = east.to_string();
    let r = s
        .post(
            &format!("/console/org/{acme}/member/zoe"),
            &[
                ("name", "Zoe Z"),
                ("title", "Head"),
                ("dept", &sales_s),
                ("dept", &east_s),
            ],
            true,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let zoe = b.im.user(acme, "zoe").expect("read").expect("zoe");
    assert_eq!(zoe.name, "Zoe Z");
    assert_eq!(zoe.depts, vec![sales, east]);
    let r = s
        .post(
            &format!("/console/org/{acme}/member/zoe/disable"),
            &[],
            true,
        )
        .await;
    assert_eq!(r.status, 303);
    let page = s.get(&location(&r)).await;
    assert!(page.body.contains("id=\"enable-member\""), "{}", page.body);
    assert!(
        b.im.user(acme, "zoe")
            .expect("read")
            .expect("zoe")
            .banned_until
            > 0
    );
    let r = s
        .post(&format!("/console/org/{acme}/member/zoe/enable"), &[], true)
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        b.im.user(acme, "zoe")
            .expect("read")
            .expect("zoe")
            .banned_until,
        0
    );
    let r = s
        .post(
            &format!("/console/org/{acme}/member/zoe/reset"),
            &[("password", "short")],
            true,
        )
        .await;
    assert_eq!(
        r.status, 422,
        "a short password is refused next to the field"
    );
    assert!(r.body.contains("id=\"password-error\""));

    // Rename and move: East goes under the root.
    let r = s
        .post(
            &format!("/console/org/{acme}/dept/{east}/move"),
            &[("parent", "1")],
            true,
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(dept_id(&b, acme, "East"), east);
    let r = s
        .post(
            &format!("/console/org/{acme}/dept/{east}/rename"),
            &[("name", "East China")],
            true,
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(dept_id(&b, acme, "East China"), east);

    // CSV: the template downloads; an import with one bad row reports its line.
    let t = s.get(&format!("/console/org/{acme}/template.csv")).await;
    assert_eq!(t.status, 200);
    assert!(t.body.contains("account,name,department"));
    let csv = "account,name,department\nann,Ann,Sales/West\nbad account!,Bob,Sales\ncid,Cid,\n";
    let r = s
        .multipart(
            &format!("/console/org/{acme}/import"),
            &[("default_password", "Welcome-2026")],
            &[("file", "m.csv", "text/csv", csv.as_bytes())],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("id=\"rejected-rows\""), "{}", r.body);
    assert!(r.body.contains("<td>3</td>"), "line 3 reported: {}", r.body);
    let ann = b.im.user(acme, "ann").expect("read").expect("ann imported");
    assert!(ann.must_change_password, "the default password must change");
    assert!(b.im.user(acme, "cid").expect("read").is_some());
    let export = s.get(&format!("/console/org/{acme}/export.csv")).await;
    assert_eq!(export.status, 200);
    assert!(
        export.body.contains("ann,Ann,Sales/West") && export.body.contains("zoe,Zoe Z"),
        "{}",
        export.body
    );

    // Script in every text field is shown escaped.
    let r = s
        .post(
            &format!("/console/org/{acme}/depts"),
            &[("name", XSS_TAG), ("parent", "1")],
            true,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    escaped(
        &s.get(&format!("/console/org/{acme}")).await,
        XSS_TAG,
        "dept name",
    );
    let r = s
        .post(
            &format!("/console/org/{acme}/depts"),
            &[("name", XSS), ("parent", "1")],
            true,
        )
        .await;
    assert_eq!(r.status, 422, "a name with '/' is refused");
    escaped_not_raw(&r, "refused dept name, shown again");
    let fields = [
        ("account", "xss"),
        ("name", XSS),
        ("title", XSS),
        ("position", XSS),
        ("phone", XSS),
        ("email", "x@example.com"),
    ];
    let r = s
        .post(
            &format!("/console/org/{acme}/dept/{sales}/members"),
            &fields,
            true,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = s.get(&format!("/console/org/{acme}/member/xss")).await;
    escaped_not_raw(&page, "member fields");
    assert!(
        page.body.matches("&#60;script&#62;").count() >= 4,
        "{}",
        page.body
    );
    let refused = s
        .post(
            &format!("/console/org/{acme}/dept/{sales}/members"),
            &[("account", XSS), ("email", XSS)],
            true,
        )
        .await;
    assert_eq!(refused.status, 422);
    escaped_not_raw(&refused, "refused account and email, shown again");

    // Without the CSRF token: refused, nothing written.
    let r = s
        .post(
            &format!("/console/org/{acme}/depts"),
            &[("name", "NoCsrf"), ("parent", "1")],
            false,
        )
        .await;
    assert_eq!(r.status, 403);
    let no_csrf_import = request(
        s.addr,
        "POST",
        &format!("/console/org/{acme}/import"),
        &[
            ("Cookie", s.cookie.clone()),
            (
                "Content-Type",
                "multipart/form-data; boundary=x".to_owned(),
            ),
        ],
        b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\naccount\nnocsrf\r\n--x--\r\n",
    )
    .await;
    assert_eq!(no_csrf_import.status, 403);
    assert!(b.im.user(acme, "nocsrf").expect("read").is_none());
    assert!(
        !b.im
            .list_depts(acme)
            .expect("depts")
            .iter()
            .any(|d| d["name"] == "NoCsrf")
    );

    // Another tenant's ids: not found, nothing changed.
    let od = b.im.create_dept(other, "Secret", 1).await.expect("dept");
    for path in [
        format!("/console/org/{other}"),
        format!("/console/org/{other}/dept/{od}"),
        format!("/console/org/{other}/export.csv"),
        format!("/console/apps/{other}"),
    ] {
        assert_eq!(s.get(&path).await.status, 404, "{path}");
    }
    let r = s
        .post(&format!("/console/org/{other}/dept/{od}/delete"), &[], true)
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .post(
            &format!("/console/org/{other}/dept/{od}/rename"),
            &[("name", "Mine")],
            true,
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(dept_id(&b, other, "Secret"), od, "untouched");
    // Without a session: to the sign-in page.
    let anon = request(gw.addr(), "GET", &format!("/console/org/{acme}"), &[], b"").await;
    assert_eq!(anon.status, 303);
    assert!(location(&anon).starts_with("/console/signin"));

    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_pages_validate_every_field_show_credentials_and_stay_in_the_tenant() {
    let b = ImBroker::start().await;
    let files = TempDir::new("console-apps-files");
    let gw = gateway(&b, files.path()).await;
    let acc = b.im.create_account().await.expect("account");
    let acme =
        b.im.create_tenant("acme", Some(&acc.id))
            .await
            .expect("t")
            .id;
    let beta =
        b.im.create_tenant("beta", Some(&acc.id))
            .await
            .expect("t")
            .id;
    let acc2 = b.im.create_account().await.expect("account");
    let stranger =
        b.im.create_tenant("stranger", Some(&acc2.id))
            .await
            .expect("t")
            .id;
    let dev = session(&b, &gw, "dev", "developer", None, Some(&acc.id)).await;
    b.im.create_user(acme, "ann", "Ann", None, false)
        .await
        .expect("user");

    // A developer sees every tenant of the account, not the others.
    let pick = dev.get("/console/apps").await;
    assert_eq!(pick.status, 200);
    assert!(pick.body.contains(&format!("/console/apps/{acme}")));
    assert!(pick.body.contains(&format!("/console/apps/{beta}")));
    assert!(!pick.body.contains(&format!("/console/apps/{stranger}\"")));
    assert_eq!(
        dev.get(&format!("/console/apps/{stranger}")).await.status,
        404
    );

    // Every field wrong at once: each error next to its field, in Chinese too.
    let bad = [
        ("name", "A"),
        ("identifier", "ab1"),
        ("plat_pc", "on"),
        ("type_pc", "web"),
        ("url_pc", "javascript:alert(1)"),
        ("plat_android", "on"),
        ("type_android", "native"),
        ("launch_android", ""),
        ("download_android", "ftp://x"),
        ("autologin", "on"),
        ("sso", ""),
        ("placement", "only"),
        ("kind", "enterprise"),
        ("group", XSS),
        ("category", XSS),
    ];
    let r = dev
        .multipart(
            &format!("/console/apps/{acme}/new"),
            &bad,
            &[("icon", "i.png", "image/png", b"not an image")],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    for id in [
        "icon-error",
        "url_pc-error",
        "launch_android-error",
        "download_android-error",
        "sso-error",
        "placement-error",
    ] {
        assert!(r.body.contains(&format!("id=\"{id}\"")), "{id}: {}", r.body);
    }
    escaped_not_raw(&r, "group and category shown again");
    // The name and identifier rules are the service's: shown next to their fields.
    let good_rest = [
        ("plat_pc", "on"),
        ("type_pc", "web"),
        ("url_pc", "https://oa.example.com/"),
        ("embedded_pc", "on"),
        ("placement", "all"),
        ("kind", "enterprise"),
        ("deletable", "yes"),
    ];
    let mut fields = vec![("name", "A"), ("identifier", "ab1")];
    fields.extend_from_slice(&good_rest);
    let dev_zh = Session {
        addr: dev.addr,
        cookie: dev.cookie.replace("sb_lang=en", "sb_lang=zh"),
        csrf: dev.csrf.clone(),
    };
    let r = dev_zh
        .multipart(&format!("/console/apps/{acme}/new"), &fields, &[])
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("id=\"name-error\""), "{}", r.body);
    assert!(
        r.body.contains("2 个英文字母算 1 个字符"),
        "in Chinese: {}",
        r.body
    );
    // 费用报销 is 4 characters; "OA" counts as one: both fit.
    let mut fields = vec![
        ("name", "OA费用报销"),
        ("identifier", "expenses"),
        ("group", "Office"),
        ("category", "Finance"),
        ("autologin", "on"),
        ("sso", "&account={account}&token={token}"),
        ("plat_ios", "on"),
        ("type_ios", "native"),
        ("launch_ios", "oaexpenses://open"),
        ("download_ios", "https://apps.example.com/oa"),
    ];
    fields.extend_from_slice(&good_rest);
    let r = dev
        .multipart(
            &format!("/console/apps/{acme}/new"),
            &fields,
            &[("icon", "icon.png", "image/png", &PNG)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let show_path = location(&r);
    let app_id = show_path.rsplit('/').next().expect("id").to_owned();
    let app =
        b.im.admin_request(
            "app/get",
            json!({ "tenant": acme, "app_id": app_id })
                .to_string()
                .as_bytes(),
        )
        .await
        .expect("app");
    assert_eq!(app["name"], "OA费用报销");
    assert_eq!(app["platforms"]["pc"]["external_browser"], false);
    assert_eq!(app["platforms"]["ios"]["launch_path"], "oaexpenses://open");
    assert_eq!(app["sso_template"], "&account={account}&token={token}");
    let show = dev.get(&show_path).await;
    assert_eq!(show.status, 200);
    for k in ["appkey", "encoding_aes_key"] {
        let v = app[k].as_str().expect("credential");
        assert!(show.body.contains(v), "{k} shown");
    }
    // The icon is served as the image it is.
    let icon_url = app["icon_url"].as_str().expect("icon url").to_owned();
    let got = request(gw.addr(), "GET", &icon_url, &[], b"").await;
    assert_eq!(got.status, 200);
    assert!(
        got.headers
            .to_ascii_lowercase()
            .contains("content-type: image/png")
    );
    // A test notice reaches the user's app conversation; an unknown account is listed.
    let r = dev
        .post(
            &format!("{show_path}/notice"),
            &[("to", "ann, nobody"), ("text", "Expense 42 approved")],
            true,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("id=\"notice-result\""));
    assert!(r.body.contains("nobody"));
    // Another tenant's app through this tenant's path, and the other way round: 404.
    assert_eq!(
        dev.get(&format!("/console/apps/{beta}/app/{app_id}"))
            .await
            .status,
        404
    );
    let admin_beta = session(&b, &gw, "beta-admin", "tenant_admin", Some(beta), None).await;
    assert_eq!(admin_beta.get(&show_path).await.status, 404);
    let r = admin_beta
        .post(
            &format!("/console/apps/{beta}/app/{app_id}/delete"),
            &[],
            true,
        )
        .await;
    assert_eq!(r.status, 404);
    // Without CSRF: the form is refused before anything is stored.
    let r = dev.post(&format!("{show_path}/delete"), &[], false).await;
    assert_eq!(r.status, 403);
    let list = dev.get(&format!("/console/apps/{acme}?group=Office")).await;
    assert!(list.body.contains(&app_id), "still listed: {}", list.body);

    gw.stop().await;
    b.stop().await;
}

/// Runs the Playwright script with `args` (screenshots of failures go to `shots`); its
/// last stdout line is JSON.
fn run_browser(script: &str, args: &[String], shots: &Path) -> Value {
    let js = concat!(env!("CARGO_MANIFEST_DIR"), "/js");
    assert!(
        Path::new(js).join("node_modules/playwright-core").exists(),
        "run `npm ci --prefix tests/js` first (tests/run.sh does)"
    );
    let out = Command::new("node")
        .current_dir(js)
        .arg(script)
        .args(args)
        .env("SHOTS", shots)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser test failed (screenshots in {}):\n{stdout}\n{}",
        shots.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_browser_org_tree_csv_import_and_a_workbench_app_seen_over_mqtt() {
    let b = ImBroker::start().await;
    let files = TempDir::new("console-browser-files");
    let gw = gateway(&b, files.path()).await;
    let acme = b.im.create_tenant("acme", None).await.expect("tenant");
    b.im.create_console_user(
        "acme-admin",
        "tenant_admin",
        Some(acme.id),
        None,
        Some("first-pass-1".into()),
    )
    .await
    .expect("console user");
    // Kept after the test (failures leave their screenshots here).
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-org-shots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let base = format!("http://{}", gw.addr());
    let args: Vec<String> = vec![
        base,
        acme.id.to_string(),
        "acme-admin".into(),
        "first-pass-1".into(),
        PASSWORD.into(),
    ];
    let result = tokio::task::spawn_blocking({
        let shots = shots.clone();
        move || run_browser("console/org.mjs", &args, &shots)
    })
    .await
    .expect("join");
    let app_id = result["app_id"].as_str().expect("app id").to_owned();
    // What the browser built is in the directory.
    let east = dept_id(&b, acme.id, "Sales/East");
    let bea = b.im.user(acme.id, "bea").expect("read").expect("imported");
    assert_eq!(bea.depts, vec![east]);

    // The imported member signs in over MQTT with the default password, must change it,
    // then finds the app in the workbench.
    let mut cfg = config(b.addr, "bea", "bea-phone", "Welcome-2026");
    cfg.username = Some(format!("{}:bea", acme.app_key));
    let (client, _events) = ImClient::connect(cfg).await.expect("password login");
    let wb: Result<im::WorkbenchResponse, _> =
        client.request("app/list", &im::WorkbenchRequest {}).await;
    assert!(wb.is_err(), "restricted until the default password changes");
    client
        .change_password("Welcome-2026", "Bea-own-pass-1")
        .await
        .expect("changed");
    let wb: im::WorkbenchResponse =
        tokio::time::timeout(WAIT, client.request("app/list", &im::WorkbenchRequest {}))
            .await
            .expect("in time")
            .expect("workbench");
    let app = wb
        .apps
        .iter()
        .find(|a| a.app_id == app_id)
        .unwrap_or_else(|| panic!("{app_id} in {:?}", wb.apps));
    assert_eq!(app.name, "审批");
    assert!(
        app.icon_url.contains("/console/apps/icons/"),
        "{}",
        app.icon_url
    );
    let icon = request(gw.addr(), "GET", &app.icon_url, &[], b"").await;
    assert_eq!(icon.status, 200, "the member's client can fetch the icon");

    gw.stop().await;
    b.stop().await;
}
