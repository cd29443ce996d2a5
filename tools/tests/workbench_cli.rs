//! `switchboard ctl workbench-app create --tenant ID NAME --json` against a broker process:
//! the exact output shape of issue #14 (`{"app_id": "<digits>", "appkey", "encoding_aes_key"}`)
//! that imo's and Youdu's app servers are configured with, the app then listed, and a name
//! outside imo's 2–10 character rule refused with a clear message and a failing exit.

use switchboard_tests::TempDir;
use switchboard_tests::process::BrokerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workbench_app_create_prints_digits_appkey_and_a_43_character_aes_key() {
    let dir = TempDir::new("workbench-cli");
    let b =
        BrokerProcess::start_with_admin(env!("CARGO_BIN_EXE_switchboard"), dir.path(), &[]).await;
    let t = BrokerProcess::json(&b.ctl(&["tenant", "create", "acme", "--json"]).await);
    let tenant = t["tenant_id"].as_u64().expect("tenant id").to_string();

    let out = b
        .ctl(&[
            "workbench-app",
            "create",
            "--tenant",
            &tenant,
            "审批",
            "--json",
        ])
        .await;
    let v = BrokerProcess::json(&out);
    let mut keys: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["app_id", "appkey", "encoding_aes_key"], "{out}");
    let app_id = v["app_id"].as_str().expect("app_id is a string");
    assert!(
        !app_id.is_empty() && app_id.bytes().all(|c| c.is_ascii_digit()),
        "{out}"
    );
    assert!(
        !v["appkey"].as_str().unwrap_or_default().is_empty(),
        "{out}"
    );
    assert_eq!(
        v["encoding_aes_key"].as_str().map(str::len),
        Some(43),
        "{out}"
    );

    let list = b.ctl(&["workbench-app", "list", "--tenant", &tenant]).await;
    assert!(list.contains(app_id) && list.contains("审批"), "{list}");

    // One Latin letter is half a character: too short.
    let bad = b
        .ctl_output(&[
            "workbench-app",
            "create",
            "--tenant",
            &tenant,
            "x",
            "--json",
        ])
        .await;
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("2–10 characters"), "{err}");
    b.terminate().await;
}
