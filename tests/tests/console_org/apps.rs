//! The Workbench-apps pages over HTTP: field errors in both languages, icon, credentials,
//! test notice, developer and tenant scope, CSRF.

use serde_json::json;
use switchboard_tests::TempDir;
use switchboard_tests::http::request;
use switchboard_tests::im::ImBroker;

use crate::common::*;

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
    // The icon went through the gateway's one icon path (a file id on the app), and the
    // app's page shows it by a signed link served as the image it is.
    let file = app["icon_file"].as_str().expect("icon file");
    assert_eq!(file.len(), 64, "{app}");
    let at = show
        .body
        .find("id=\"app-icon\" src=\"")
        .expect("icon shown")
        + 19;
    let icon_url = show.body[at..at + show.body[at..].find('"').expect("end")]
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    assert!(
        icon_url.starts_with(&format!("/files/{file}?")),
        "{icon_url}"
    );
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
