//! `switchboard ctl push-test` against a real `switchboard broker` process (IM service and
//! gateway with its push worker, endpoints pointed at the mock push services by a config
//! file): each of the user's devices gets a test push and the command prints each
//! provider's answer.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_tests::TempDir;
use switchboard_tests::process::BrokerProcess;
use switchboard_tests::push_mocks::{Canned, PushMock};
use tokio::process::Command;

async fn ctl(admin: &str, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("ctl")
            .args(args)
            .args(["--admin", admin, "--data-dir"])
            .arg(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ctl finishes")
    .expect("ctl runs")
}

async fn ok(admin: &str, dir: &std::path::Path, args: &[&str]) -> String {
    let out = ctl(admin, dir, args).await;
    assert!(
        out.status.success(),
        "ctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// An admin API call with the token the broker wrote.
async fn call(admin: &str, dir: &std::path::Path, op: &str, body: Value) {
    switchboard_tests::process::admin_call(admin, dir, op, body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_test_prints_each_providers_answer() {
    let mut mock = PushMock::start().await;
    let dir = TempDir::new("push-cli");
    let d = dir.path();
    let ca = d.join("mock-ca.pem");
    std::fs::write(&ca, &mock.ca_pem).expect("CA file");
    let base = mock.base();
    let config = d.join("switchboard.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway.push]\nextra_ca = {ca:?}\napns_production = {base:?}\n\
             apns_sandbox = {base:?}\nfcm_base = {base:?}\n"
        ),
    )
    .expect("config");
    let config = config.to_string_lossy().into_owned();
    let b = BrokerProcess::start_with_admin(
        env!("CARGO_BIN_EXE_switchboard"),
        d,
        &["--http", "127.0.0.1:0", "--config", &config],
    )
    .await;
    let admin = b.admin.clone().expect("admin API");
    let t: Value = serde_json::from_str(
        ok(&admin, d, &["tenant", "create", "acme", "--json"])
            .await
            .trim(),
    )
    .expect("JSON");
    let tenant = t["tenant_id"].as_u64().expect("tenant id");
    ok(
        &admin,
        d,
        &["user", "create", "--tenant", &tenant.to_string(), "bob"],
    )
    .await;
    let mut creds = mock.credentials();
    creds["tenant"] = tenant.into();
    call(&admin, d, "push/credentials/set", creds).await;
    for (vendor, token) in [("apns", "apnstoken-bob"), ("fcm", "fcmtoken-bob")] {
        call(
            &admin,
            d,
            "push/register",
            json!({"tenant": tenant, "user": "bob", "vendor": vendor, "token": token,
                   "bundle_id": "com.example.chat"}),
        )
        .await;
    }
    // The FCM token is dead: FCM says so, and the command prints it (without removing it).
    mock.script(
        "fcm",
        vec![Canned {
            status: 404,
            body: json!({"error": {"code": 404, "status": "NOT_FOUND",
                "message": "Requested entity was not found.", "details": [{"@type":
                "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": "UNREGISTERED"}]}})
            .to_string(),
            retry_after: None,
        }],
    );
    let args = [
        "push-test",
        "--tenant",
        &tenant.to_string(),
        "--user",
        "bob",
    ];
    let out = ok(&admin, d, &args).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let apns = lines
        .iter()
        .find(|l| l.starts_with("apns"))
        .expect("apns line");
    assert!(
        apns.contains("apnstoke…") && apns.ends_with("sent"),
        "{apns}"
    );
    let fcm = lines
        .iter()
        .find(|l| l.starts_with("fcm"))
        .expect("fcm line");
    assert!(
        fcm.contains("dead_token") && fcm.contains("UNREGISTERED"),
        "{fcm}"
    );
    // The pushes reached the mock, titled as a test.
    let h = mock.next("apns").await;
    assert_eq!(h.json()["aps"]["alert"]["title"], json!("Test"));
    // --json: the worker's answer as is; an unknown user is an error, not a hang.
    let out = ok(&admin, d, &[&args[..], &["--json"]].concat()).await;
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(v["devices"].as_array().map(Vec::len), Some(2), "{out}");
    let bad = ctl(
        &admin,
        d,
        &[
            "push-test",
            "--tenant",
            &tenant.to_string(),
            "--user",
            "nobody",
        ],
    )
    .await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nobody"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    b.kill9().await;
}
