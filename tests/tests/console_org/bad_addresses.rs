//! Addresses and forms a visitor can mistype or tamper with (a word where a number belongs,
//! a missing query field, a wrong method, a form of the wrong type) get the console's own
//! error page in the visitor's language, never the web framework's bare English message
//! (issue 16 item 7: no page that shows a stack trace or a raw error).

use switchboard_tests::TempDir;
use switchboard_tests::http::{Answer, request};
use switchboard_tests::im::ImBroker;

use crate::common::*;

/// `a` is the console's error page (HTML, translated `message`), not a framework text.
fn console_page(a: &Answer, what: &str, message: &str) {
    assert!((400..500).contains(&a.status), "{what}: {}", a.status);
    assert!(
        a.headers
            .to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{what}: {}",
        a.headers
    );
    assert!(a.body.contains("<html"), "{what}: {}", a.body);
    assert!(a.body.contains(message), "{what}: {}", a.body);
    for raw in [
        "Cannot parse",
        "Failed to deserialize",
        "Invalid URL",
        "Content-Type",
    ] {
        assert!(!a.body.contains(raw), "{what} shows {raw:?}: {}", a.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistyped_addresses_and_forms_get_the_consoles_error_page() {
    let b = ImBroker::start().await;
    let files = TempDir::new("console-bad-addresses-files");
    let gw = gateway(&b, files.path()).await;
    let acc = b.im.create_account().await.expect("account");
    let acme =
        b.im.create_tenant("acme", Some(&acc.id))
            .await
            .expect("t")
            .id;
    let dev = session(&b, &gw, "dev", "developer", None, Some(&acc.id)).await;
    let op = session(&b, &gw, "op", "operator", None, None).await;
    let bad_en = "This address or form is not valid.";

    for path in [
        "/console/tenants/abc".to_owned(),
        "/console/org/abc".to_owned(),
        format!("/console/org/{acme}/dept/xyz"),
        "/console/org/99999999999999999999999".to_owned(),
        format!("/console/apps/{acme}/app/1/edit/x"),
    ] {
        let a = dev.get(&path).await;
        let message = if a.status == 404 {
            "There is nothing here."
        } else {
            bad_en
        };
        console_page(&a, &path, message);
    }
    console_page(
        &op.get("/console/ops/client").await,
        "client without id",
        bad_en,
    );

    // In Chinese for a visitor who chose it.
    let zh = Session {
        addr: dev.addr,
        cookie: dev.cookie.replace("sb_lang=en", "sb_lang=zh"),
        csrf: dev.csrf.clone(),
    };
    console_page(
        &zh.get("/console/tenants/abc").await,
        "zh",
        "地址或表单无效",
    );

    // A wrong method and a form that is not a form.
    let a = request(
        gw.addr(),
        "DELETE",
        &format!("/console/tenants/{acme}"),
        &[("Cookie", dev.cookie.clone())],
        b"",
    )
    .await;
    console_page(&a, "DELETE", bad_en);
    let a = request(
        gw.addr(),
        "POST",
        &format!("/console/apps/{acme}/new"),
        &[
            ("Cookie", dev.cookie.clone()),
            ("Content-Type", "application/json".to_owned()),
        ],
        b"{}",
    )
    .await;
    console_page(&a, "JSON to a multipart form", bad_en);

    // The console's own pages are untouched: a form shown again keeps its 422 and fields.
    let a = dev
        .post("/console/tenants/new", &[("name", "")], true)
        .await;
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(a.body.contains("name=\"name\""), "{}", a.body);
}
