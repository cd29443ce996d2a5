//! Runs `tests/py/im_client.py`, an IM client written from `docs/protocol.md` with
//! paho-mqtt and protobuf classes generated from the .proto (needs the Python packages
//! paho-mqtt, protobuf and grpcio-tools), against a broker with the IM service.

use std::time::Duration;

use switchboard_broker::im::records::TenantPolicy;
use switchboard_tests::im::{ImBroker, SERVICE_SECRET, text};

/// How long the whole script may run before it is killed.
const SCRIPT_LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_written_from_the_protocol_doc_passes() {
    let b = ImBroker::start().await;
    let tid = b.tenant("py").await;
    let alice = b.user(tid, "alice").await;
    let bob = b.user(tid, "bob").await;
    let carol = b.user(tid, "carol").await;
    b.user(tid, "dave").await;
    b.user(tid, "erin").await;
    let token = |account: &str| b.im.issue_token(tid, account, "", 3600).expect("token");
    let (alice_token, bob_token, carol_token) = (token("alice"), token("bob"), token("carol"));
    let revoked = token("dave");
    b.im.revoke_token(&revoked).await.expect("revoke");
    let banned = token("erin");
    b.im.ban(tid, "erin", u64::from(u32::MAX))
        .await
        .expect("ban");
    // frank: one phone at a time (the tenant's policy); tokens for two phones and a pc.
    b.user(tid, "frank").await;
    b.im.set_policy(
        tid,
        TenantPolicy {
            single_phone: true,
            ..TenantPolicy::default()
        },
    )
    .await
    .expect("policy");
    let device_token = |device: &str| b.im.issue_token(tid, "frank", device, 3600).expect("token");
    let (phone1, phone2, pc) = (
        device_token("phone"),
        device_token("phone"),
        device_token("pc"),
    );
    // A system notice waiting for bob (his sync returns two conversations).
    b.im.send_system(tid, "bob", None, "welcome-1", text("welcome"))
        .await
        .expect("system notice");

    let setup = format!(
        r#"{{"tenant": {tid},
            "alice": {{"uid": {alice}, "token": "{alice_token}"}},
            "bob": {{"uid": {bob}, "token": "{bob_token}"}},
            "carol": {{"uid": {carol}, "token": "{carol_token}"}},
            "frank": {{"phone_tokens": ["{phone1}", "{phone2}"], "pc_token": "{pc}"}},
            "revoked_token": "{revoked}", "banned_token": "{banned}",
            "service_secret": "{SERVICE_SECRET}"}}"#
    );
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args([
        concat!(env!("CARGO_MANIFEST_DIR"), "/py/im_client.py"),
        "--port",
        &b.addr.port().to_string(),
        "--proto-dir",
        &format!("{root}/proto/schema"),
        "--setup",
        &setup,
    ])
    .kill_on_drop(true);
    let out = tokio::time::timeout(SCRIPT_LIMIT, cmd.output())
        .await
        .expect("the IM client finishes in time (killed otherwise)")
        .expect("python3 runs (pip install paho-mqtt protobuf grpcio-tools)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "IM Python client failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.trim_end().ends_with(" 0 failed"),
        "{stdout}\n{stderr}"
    );
    b.stop().await;
}
