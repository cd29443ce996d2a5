//! The browser flow, in Chromium and in Firefox: the browser builds, imports and creates;
//! the member sees the app over MQTT.

use std::path::Path;

use serde_json::Value;
use switchboard_client::im::ImClient;
use switchboard_proto::im;
use switchboard_tests::console::{Browser, run_browser_script};
use switchboard_tests::http::request;
use switchboard_tests::im::{ImBroker, config};
use switchboard_tests::{TempDir, WAIT};

use crate::common::*;

/// Runs `script` in `browser` with `args` (screenshots of failures go to `shots`); its
/// last stdout line is JSON.
fn run_browser(browser: Browser, script: &str, args: &[String], shots: &Path) -> Value {
    let out = run_browser_script(browser, script, args, shots);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser test failed in {} (screenshots in {}):\n{stdout}\n{}",
        browser.name(),
        shots.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_browser_org_tree_csv_import_and_a_workbench_app_seen_over_mqtt() {
    org_flow(Browser::Chromium).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_browser_firefox_org_tree_csv_import_and_a_workbench_app_seen_over_mqtt() {
    org_flow(Browser::Firefox).await;
}

/// The organisation and workbench scenario (`tests/js/console/org.mjs`) in `browser`.
async fn org_flow(browser: Browser) {
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
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("console-org-shots-{}", browser.name()));
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
        move || run_browser(browser, "console/org.mjs", &args, &shots)
    })
    .await
    .expect("join");
    // SWITCHBOARD_KEEP_SHOTS=1 keeps the screenshots of a passing run (to look at them).
    if std::env::var_os("SWITCHBOARD_KEEP_SHOTS").is_none() {
        let _ = std::fs::remove_dir_all(&shots);
    } else {
        println!("screenshots in {}", shots.display());
    }
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
    assert!(app.icon_url.starts_with("/files/"), "{}", app.icon_url);
    let icon = request(gw.addr(), "GET", &app.icon_url, &[], b"").await;
    assert_eq!(icon.status, 200, "the member's client can fetch the icon");

    gw.stop().await;
    b.stop().await;
}
