//! Conformance checks with paho-mqtt (Python), an independent MQTT 5 client
//! (`tests/py/paho_conformance.py`): the server keep-alive override, the lingering close
//! after DISCONNECT with a reason code, and a failed CONNACK read while the client keeps
//! sending (issue 11, item 11).

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
    let args = [
        "--port",
        &open.port().to_string(),
        "--auth-port",
        &locked.port().to_string(),
    ]
    .map(String::from)
    .to_vec();
    switchboard_tests::run_python_suite("paho_conformance.py", args).await;
}
