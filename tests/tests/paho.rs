//! Runs the paho-mqtt (Python) suite, `tests/py/paho_suite.py`, against an in-process
//! broker: MQTT 3.1.1 and 5.0 through a third-party client library.

use std::process::Command;

use switchboard_tests::TestBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_suite_passes_on_v311_and_v5() {
    let open = TestBroker::start().await;
    let dir = std::env::temp_dir().join(format!("sb-paho-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("passwd");
    let hash = switchboard_broker::auth::hash_password("paho-pw").expect("hash");
    std::fs::write(&file, format!("paho:{hash}\n")).expect("write");
    let f = file.clone();
    let locked = TestBroker::start_with(move |c| {
        c.allow_anonymous = false;
        c.password_file = Some(f);
    })
    .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/paho_suite.py");
    let (p1, p2) = (open.port().to_string(), locked.port().to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([
                script,
                "--port",
                &p1,
                "--auth-port",
                &p2,
                "--user",
                "paho",
                "--password",
                "paho-pw",
            ])
            .output()
    })
    .await
    .expect("join")
    .expect("python3 runs (install paho-mqtt: pip install paho-mqtt)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "paho suite failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    std::fs::remove_dir_all(&dir).ok();
}
