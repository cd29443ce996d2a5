//! Schemathesis (PyPI) against the gateway's `/openapi.json`: generated requests, each
//! signed like an app server's (tests/py/schemathesis_hooks.py), must never get a 5xx or
//! a dropped connection, and every documented answer must match its schema.

use std::net::SocketAddr;

use switchboard_client::Endpoint;
use switchboard_gateway::{DEFAULT_BODY_LIMIT, Gateway, GatewayConfig};
use switchboard_tests::im::{ImBroker, SERVICE_SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_and_no_schema_mismatches() {
    let b = ImBroker::start().await;
    let files = switchboard_tests::TempDir::new("openapi-files");
    let gw = Gateway::start(GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        broker: vec![Endpoint::Tcp(b.addr)],
        service_secret: SERVICE_SECRET.into(),
        client_id: "gateway-openapi".into(),
        body_limit: DEFAULT_BODY_LIMIT,
        files_dir: Some(files.path().to_path_buf()),
    })
    .await
    .expect("gateway");
    let t = b.im.create_tenant("fuzz", None).await.expect("tenant");
    for u in ["0", "alice", "bob"] {
        b.user(t.id, u).await;
    }
    let url = format!("http://{}/openapi.json", gw.addr());
    let hooks = format!("{}/py", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("schemathesis")
            .args([
                "run",
                &url,
                "--checks",
                "not_a_server_error,response_schema_conformance",
                "--max-examples",
                "20",
                "--seed",
                "1",
                "--no-color",
            ])
            .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .env("PYTHONPATH", hooks)
            .env("SB_APP_KEY", &t.app_key)
            .env("SB_APP_SECRET", &t.app_secret)
            .output()
    })
    .await
    .expect("join")
    .expect("schemathesis runs (bash tests/run.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
    gw.stop().await;
    b.stop().await;
}
