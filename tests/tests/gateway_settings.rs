//! A tenant's settings as its developer account changes them over the native API
//! (`/v1/tenants/{id}/settings`, `/v1/tenants/{id}/secret`): the device upload budgets
//! take effect on the next upload from a real device token, and a rotated secret stops
//! signing at once on the gateway that rotated it.

use serde_json::json;
use switchboard_gateway::Gateway;
use switchboard_tests::TempDir;
use switchboard_tests::gateway_api::{App, PNG, config, header, multipart, post as signed};
use switchboard_tests::http::request;
use switchboard_tests::im::ImBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_budgets_are_per_tenant_settings_its_account_changes() {
    let b = ImBroker::start().await;
    let files = TempDir::new("settings");
    let gw = Gateway::start(config(
        &b,
        "gateway-settings",
        Some(files.path().to_path_buf()),
    ))
    .await
    .expect("gateway starts");
    let app = App::create(&b, "acme").await;
    let other = App::create(&b, "other").await;
    b.user(app.tenant, "alice").await;
    b.user(other.tenant, "olga").await;
    let acc = b.im.default_account().await.expect("account");
    let creds = [
        ("Account-Id", acc.id.clone()),
        ("Account-Token", acc.token.clone()),
    ];
    let path = format!("/v1/tenants/{}/settings", app.tenant);

    // The defaults.
    let a = request(gw.addr(), "GET", &path, &creds, b"").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.json(),
        json!({"upload_bytes_per_hour": 2u64 << 30, "upload_files_per_hour": 10_000,
               "upload_max_file_bytes": 20u64 << 20})
    );
    // Refusals change nothing: a wrong token, no such tenant, a file size over the
    // ceiling, an unknown field, malformed JSON.
    let bad = [
        ("Account-Id", acc.id.clone()),
        ("Account-Token", "guess".to_owned()),
    ];
    let one = br#"{"upload_files_per_hour": 1}"#;
    let a = request(gw.addr(), "PUT", &path, &bad, one).await;
    assert_eq!(
        (a.status, a.json()["code"].as_u64()),
        (401, Some(40105)),
        "{}",
        a.body
    );
    let a = request(gw.addr(), "PUT", "/v1/tenants/999999/settings", &creds, one).await;
    assert_eq!(a.status, 404, "{}", a.body);
    for body in [
        &br#"{"upload_max_file_bytes": 999999999}"#[..],
        br#"{"upload_files": 1}"#,
        b"{not json",
    ] {
        let a = request(gw.addr(), "PUT", &path, &creds, body).await;
        assert_eq!(a.status, 400, "{}", a.body);
    }
    let a = request(gw.addr(), "GET", &path, &creds, b"").await;
    assert_eq!(
        a.json()["upload_files_per_hour"],
        json!(10_000),
        "{}",
        a.body
    );

    // One file an hour, at most 1 KiB each.
    let a = request(
        gw.addr(),
        "PUT",
        &path,
        &creds,
        br#"{"upload_files_per_hour": 1, "upload_max_file_bytes": 1024}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["upload_files_per_hour"], json!(1));
    assert_eq!(a.json()["upload_bytes_per_hour"], json!(2u64 << 30), "kept");

    let addr = gw.addr();
    let upload = |token: String, name: &str, bytes: Vec<u8>| {
        let (ctype, body) = multipart(name, "image/png", &bytes);
        let h = [
            ("Authorization", format!("Bearer {token}")),
            ("Content-Type", ctype),
        ];
        async move { request(addr, "POST", "/v1/device/files", &h, &body).await }
    };
    let alice =
        b.im.issue_token(app.tenant, "alice", "", 3600)
            .expect("token");
    let mut big = PNG.to_vec();
    big.resize(4096, 0);
    let a = upload(alice.clone(), "big.png", big).await;
    assert_eq!(a.status, 413, "over the tenant's largest file: {}", a.body);
    let a = upload(alice.clone(), "a.png", PNG.to_vec()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = upload(alice.clone(), "b.png", PNG.to_vec()).await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(header(&a, "retry-after").is_some(), "{}", a.headers);
    // Another tenant keeps its own (default) budget.
    let olga =
        b.im.issue_token(other.tenant, "olga", "", 3600)
            .expect("token");
    let a = upload(olga, "c.png", PNG.to_vec()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Raised again: the next upload goes through on the same gateway.
    let a = request(
        gw.addr(),
        "PUT",
        &path,
        &creds,
        br#"{"upload_files_per_hour": 5}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = upload(alice, "d.png", PNG.to_vec()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_and_the_old_one_no_longer_does() {
    let b = ImBroker::start().await;
    let gw = Gateway::start(config(&b, "gateway-rotate", None))
        .await
        .expect("gateway starts");
    let mut app = App::create(&b, "acme").await;
    b.user(app.tenant, "alice").await;
    let acc = b.im.default_account().await.expect("account");
    let creds = [
        ("Account-Id", acc.id.clone()),
        ("Account-Token", acc.token.clone()),
    ];
    let online = json!({"users": ["alice"]});
    let a = signed(&gw, &app, "/v1/users/online", &online).await;
    assert_eq!(a.status, 200, "the secret is cached now: {}", a.body);
    let path = format!("/v1/tenants/{}/secret", app.tenant);
    let a = request(gw.addr(), "POST", &path, &[creds[0].clone()], b"").await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = request(gw.addr(), "POST", &path, &creds, b"").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let secret = a.json()["app_secret"].as_str().expect("secret").to_owned();
    assert_ne!(secret, app.secret);
    let a = signed(&gw, &app, "/v1/users/online", &online).await;
    assert_eq!(a.status, 401, "the old secret: {}", a.body);
    app.secret = secret;
    let a = signed(&gw, &app, "/v1/users/online", &online).await;
    assert_eq!(a.status, 200, "the new secret: {}", a.body);
    gw.stop().await;
    b.stop().await;
}
