//! Runs the paho-mqtt (Python) suite, `tests/py/paho_suite.py`, against an in-process
//! broker: MQTT 3.1.1 and 5.0 through a third-party client library.

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
    let args = [
        "--port",
        &open.port().to_string(),
        "--auth-port",
        &locked.port().to_string(),
        "--user",
        "paho",
        "--password",
        "paho-pw",
    ]
    .map(String::from)
    .to_vec();
    switchboard_tests::run_python_suite("paho_suite.py", args).await;
    std::fs::remove_dir_all(&dir).ok();
}
