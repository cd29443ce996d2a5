//! The console's users from the command line: `switchboard up` creates the first operator
//! and prints its one-time password on the first start only; `ctl console-user create`
//! adds users (a generated one-time password, or the given one), refuses duplicates and
//! bad roles.

use std::process::Stdio;
use std::time::Duration;

use switchboard_tests::TempDir;
use switchboard_tests::process::BrokerProcess;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Runs `up` on `dir` until it prints the console's address; returns every line printed
/// up to then, and kills it.
async fn up_lines(dir: &std::path::Path) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "up",
            "--tcp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--log",
            "warn",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--certs")
        .arg(dir.join("certs"))
        .env("SWITCHBOARD__BROKER__ADMIN__LISTEN", "\"127.0.0.1:0\"")
        .env("SWITCHBOARD__BROKER__SYS_INTERVAL", "0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("switchboard up starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("up prints in time")
            .expect("read")
            .expect("up exited early");
        let done = line.contains("web console on http://");
        seen.push(line);
        if done {
            break;
        }
    }
    child.start_kill().expect("kill");
    let _ = child.wait().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_prints_the_operators_one_time_password_once() {
    let dir = TempDir::new("console-up");
    let first = up_lines(dir.path()).await;
    let line = first
        .iter()
        .find(|l| l.contains("console operator \"admin\" created; one-time password: "))
        .unwrap_or_else(|| panic!("no one-time password in {first:#?}"));
    let password = line
        .split("one-time password: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("password");
    assert_eq!(password.chars().count(), 16, "{line}");
    let second = up_lines(dir.path()).await;
    assert!(
        !second.iter().any(|l| l.contains("one-time password")),
        "printed again: {second:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_console_user_create_prints_a_one_time_password_or_takes_one() {
    let dir = TempDir::new("console-ctl");
    let b =
        BrokerProcess::start_with_admin(env!("CARGO_BIN_EXE_switchboard"), dir.path(), &[]).await;
    let t = BrokerProcess::json(&b.ctl(&["tenant", "create", "acme", "--json"]).await);
    let tenant = t["tenant_id"].as_u64().expect("tenant id").to_string();
    let v = BrokerProcess::json(
        &b.ctl(&[
            "console-user",
            "create",
            "ops1",
            "--role",
            "operator",
            "--json",
        ])
        .await,
    );
    assert_eq!(v["role"], "operator");
    assert_eq!(v["password"].as_str().map(str::len), Some(16), "{v}");
    let out = b
        .ctl(&[
            "console-user",
            "create",
            "boss",
            "--role",
            "tenant_admin",
            "--tenant",
            &tenant,
            "--password",
            "a-long-enough-password",
        ])
        .await;
    assert!(
        out.contains("console user boss (tenant_admin) created"),
        "{out}"
    );
    assert!(!out.contains("a-long-enough-password"), "{out}");
    // Duplicates, unknown roles, a tenant administrator without a tenant, short passwords.
    for args in [
        vec!["console-user", "create", "ops1", "--role", "operator"],
        vec!["console-user", "create", "x1", "--role", "root"],
        vec!["console-user", "create", "x2", "--role", "tenant_admin"],
        vec![
            "console-user",
            "create",
            "x3",
            "--role",
            "operator",
            "--password",
            "short",
        ],
    ] {
        let out = b.ctl_output(&args).await;
        assert!(!out.status.success(), "{args:?} succeeded");
    }
    let list = BrokerProcess::json(&b.ctl(&["console-user", "list"]).await);
    let names: Vec<&str> = list["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    // `broker` (like `up`) made the first operator on its first start.
    assert_eq!(names, ["admin", "boss", "ops1"]);
    b.kill9().await;
}
