//! The binary's access-control plumbing: `passwd --scram` lines log in, `--acl-file` is
//! enforced, SIGHUP and `ctl acl reload` reload it, and a broken file is refused with
//! `file:line` while the old rules stay.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::*;
use switchboard_tests::{RawClient, TempDir, connect_packet};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

async fn passwd_scram(user: &str, password: &str) -> String {
    let mut child = Command::new(BIN)
        .args(["passwd", "--scram", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("passwd runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .expect("write password");
    drop(stdin);
    let out = child.wait_with_output().await.expect("passwd ends");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("utf-8")
}

async fn ctl_acl_reload(admin: SocketAddr, data_dir: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args([
            "ctl",
            "acl",
            "reload",
            "--admin",
            &admin.to_string(),
            "--data-dir",
        ])
        .arg(data_dir)
        .output()
        .await
        .expect("ctl runs")
}

async fn sub_code(addr: SocketAddr, user: &str, password: &'static [u8], filter: &str) -> u8 {
    let (mut c, ack) = RawClient::connect(
        addr,
        Connect {
            username: Some(user.into()),
            password: Some(Bytes::from_static(password)),
            ..connect_packet(Version::V5, "acl-cli")
        },
    )
    .await;
    assert!(
        matches!(&ack, Packet::ConnAck(a) if a.code == ReasonCode::Success),
        "{ack:?}"
    );
    c.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(filter.into(), SubscriptionOptions::default())],
    }))
    .await;
    match c.recv().await {
        Some(Packet::SubAck(s)) => s.codes[0] as u8,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_file_reloads_on_sighup_and_ctl() {
    let dir = TempDir::new("acl-cli");
    let line = passwd_scram("dev", "pencil").await;
    assert!(line.starts_with("dev:$scram-sha-256$4096$"), "{line}");
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, &line).expect("write passwd");
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user dev\ntopic read a/#\n").expect("write acl");
    let mut child = Command::new(BIN)
        .args([
            "broker",
            "--tcp",
            "127.0.0.1:0",
            "--log",
            "info",
            "--password-file",
        ])
        .arg(&passwd)
        .arg("--acl-file")
        .arg(&acl)
        .arg("--data-dir")
        .arg(dir.path())
        .env("SWITCHBOARD__BROKER__ADMIN__LISTEN", "\"127.0.0.1:0\"")
        .env("SWITCHBOARD__BROKER__SYS_INTERVAL", "0")
        .env("SWITCHBOARD__STORE__ENABLED", "false")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("switchboard starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut mqtt, mut admin) = (None, None);
    while mqtt.is_none() || admin.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(30), out.next_line())
            .await
            .expect("broker announces its addresses")
            .expect("read")
            .expect("broker exited early");
        if let Some(a) = line.strip_prefix("switchboard: MQTT on tcp://") {
            mqtt = Some(a.parse::<SocketAddr>().expect("address"));
        }
        if let Some(a) = line.strip_prefix("switchboard: admin API on http://") {
            let a = a.split_whitespace().next().expect("address");
            admin = Some(a.parse::<SocketAddr>().expect("address"));
        }
    }
    let (mqtt, admin) = (mqtt.expect("mqtt"), admin.expect("admin"));
    // The log goes to stdout too.
    let mut wait_log = async |needle: &str| {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(l)) = out.next_line().await {
                if l.contains(needle) {
                    return;
                }
            }
            panic!("broker log ended before {needle:?}");
        })
        .await
        .expect("log line in time");
    };

    assert_eq!(sub_code(mqtt, "dev", b"pencil", "a/1").await, 0x00);
    assert_eq!(sub_code(mqtt, "dev", b"pencil", "b/1").await, 0x87);

    // SIGHUP.
    std::fs::write(&acl, "user dev\ntopic read b/#\n").expect("rewrite");
    let pid = child.id().expect("pid").to_string();
    let hup = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(hup.success());
    wait_log("ACL file reloaded").await;
    assert_eq!(sub_code(mqtt, "dev", b"pencil", "b/1").await, 0x00);
    assert_eq!(sub_code(mqtt, "dev", b"pencil", "a/1").await, 0x87);

    // `ctl acl reload`, first with a broken file.
    std::fs::write(&acl, "user dev\ntopic read c/#\ntopic bogus a/#/b\n").expect("break");
    let res = ctl_acl_reload(admin, dir.path()).await;
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains(&format!("{}:3:", acl.display())), "{err}");
    assert_eq!(
        sub_code(mqtt, "dev", b"pencil", "b/1").await,
        0x00,
        "old rules"
    );
    std::fs::write(&acl, "user dev\ntopic read c/#\n").expect("fix");
    let res = ctl_acl_reload(admin, dir.path()).await;
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(String::from_utf8_lossy(&res.stdout).contains("\"rules\": 1"));
    assert_eq!(sub_code(mqtt, "dev", b"pencil", "c/1").await, 0x00);

    child.start_kill().expect("kill broker");
    let _ = child.wait().await;
}
