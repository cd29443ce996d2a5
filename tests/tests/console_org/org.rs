//! The Organisation pages over HTTP: tree, members, CSV, escaping, CSRF, tenant scope.

use switchboard_tests::TempDir;
use switchboard_tests::http::request;
use switchboard_tests::im::ImBroker;

use crate::common::*;

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
