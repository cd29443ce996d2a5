//! Conformance checks with paho-mqtt (Python), an independent MQTT 5 client
//! (`tests/py/paho_conformance.py`): the server keep-alive override, the lingering close
//! after DISCONNECT with a reason code, and a failed CONNACK read while the client keeps
//! sending (issue 11, item 11).

use std::process::Command;

use switchboard_tests::{TempDir, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_reads_server_keep_alive_and_reason_codes_before_close() {
    let open = TestBroker::start_with(|c| {
        c.limits.max_keep_alive = 5;
        c.limits.max_packet_size = 1024;
    })
    .await;
    let dir = TempDir::new("paho-conf");
    let file = dir.path().join("passwd");
    let hash = switchboard_broker::auth::hash_password("right").expect("hash");
    std::fs::write(&file, format!("paho:{hash}\n")).expect("write");
    let locked = TestBroker::start_with(move |c| {
        c.allow_anonymous = false;
        c.password_file = Some(file);
    })
    .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/paho_conformance.py");
    let (p1, p2) = (open.port().to_string(), locked.port().to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, "--port", &p1, "--auth-port", &p2])
            .output()
    })
    .await
    .expect("join")
    .expect("python3 runs (install paho-mqtt: pip install paho-mqtt)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "paho conformance failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
