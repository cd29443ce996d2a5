//! Editing a workbench app in the console (the "edit" half of issue 16 item 5's add/edit
//! form) and the icon size rule as a user meets it: the form comes back filled in, a
//! change is saved to the IM service, a bad value is shown next to its field, another
//! tenant's app is not found, and an icon over 1 MB (even far over) is refused next to the
//! icon field in the console's own page, never a bare framework error.

use serde_json::{Value, json};
use switchboard_tests::TempDir;
use switchboard_tests::im::ImBroker;

use crate::common::*;

async fn app(b: &ImBroker, tenant: u64, app_id: &str) -> Value {
    b.im.admin_request(
        "app/get",
        json!({ "tenant": tenant, "app_id": app_id })
            .to_string()
            .as_bytes(),
    )
    .await
    .expect("app")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_edited_in_its_form_and_oversized_icons_are_refused_next_to_the_field() {
    let b = ImBroker::start().await;
    let files = TempDir::new("console-apps-edit-files");
    let gw = gateway(&b, files.path()).await;
    let acc = b.im.create_account().await.expect("account");
    let acme =
        b.im.create_tenant("acme", Some(&acc.id))
            .await
            .expect("t")
            .id;
    let acc2 = b.im.create_account().await.expect("account");
    let other =
        b.im.create_tenant("other", Some(&acc2.id))
            .await
            .expect("t")
            .id;
    let dev = session(&b, &gw, "dev", "developer", None, Some(&acc.id)).await;
    let stranger = session(&b, &gw, "dev2", "developer", None, Some(&acc2.id)).await;

    let fields = [
        ("name", "Expenses"),
        ("identifier", "expenses"),
        ("group", "Office"),
        ("category", "Finance"),
        ("plat_pc", "on"),
        ("type_pc", "web"),
        ("url_pc", "https://oa.example.com/"),
        ("placement", "all"),
        ("kind", "enterprise"),
        ("deletable", "yes"),
    ];
    let r = dev
        .multipart(&format!("/console/apps/{acme}/new"), &fields, &[])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let show_path = location(&r);
    let app_id = show_path.rsplit('/').next().expect("id").to_owned();
    let edit_path = format!("{show_path}/edit");

    // The edit form comes back filled in with what was saved.
    let form = dev.get(&edit_path).await;
    assert_eq!(form.status, 200, "{}", form.body);
    for v in [
        "value=\"Expenses\"",
        "value=\"expenses\"",
        "value=\"Office\"",
        "value=\"Finance\"",
        "value=\"https://oa.example.com/\"",
    ] {
        assert!(form.body.contains(v), "{v} in the edit form: {}", form.body);
    }

    // A change is saved: the service has it, the app's page shows it.
    let mut changed = fields.to_vec();
    changed[0] = ("name", "Travel");
    changed[6] = ("url_pc", "https://travel.example.com/");
    changed.push(("plat_android", "on"));
    changed.push(("type_android", "web"));
    changed.push(("url_android", "https://m.travel.example.com/"));
    let r = dev.multipart(&edit_path, &changed, &[]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let saved = app(&b, acme, &app_id).await;
    assert_eq!(saved["name"], "Travel", "{saved}");
    assert_eq!(
        saved["platforms"]["android"]["web_url"], "https://m.travel.example.com/",
        "{saved}"
    );
    let show = dev.get(&show_path).await;
    assert!(show.body.contains("Travel"), "{}", show.body);

    // A bad value on edit: 422, shown next to its field, nothing saved.
    let mut bad = changed.clone();
    bad[0] = ("name", "T");
    let r = dev.multipart(&edit_path, &bad, &[]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("id=\"name-error\""), "{}", r.body);
    assert_eq!(app(&b, acme, &app_id).await["name"], "Travel");

    // Another developer's account: the app is not there for them.
    assert_eq!(stranger.get(&edit_path).await.status, 404);
    let r = stranger.multipart(&edit_path, &changed, &[]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = stranger
        .multipart(
            &format!("/console/apps/{other}/app/{app_id}/edit"),
            &changed,
            &[],
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Icons over 1 MB: refused next to the icon field, just over and far over the limit.
    for size in [1024 * 1024 + 1, 3 * 1024 * 1024] {
        let mut big = PNG.to_vec();
        big.resize(size, 0);
        let r = dev
            .multipart(
                &edit_path,
                &changed,
                &[("icon", "big.png", "image/png", &big)],
            )
            .await;
        assert_eq!(r.status, 422, "{size} bytes: {}", r.body);
        assert!(
            r.body.contains("id=\"icon-error\"") && r.body.contains("1 MB"),
            "{size} bytes: {}",
            r.body
        );
    }
    let after = app(&b, acme, &app_id).await;
    assert_eq!(
        after["icon_file"].as_str().unwrap_or_default(),
        "",
        "{after}"
    );
}
