//! mosquitto_pub and mosquitto_sub (Debian's mosquitto-clients) as subprocesses against an
//! in-process broker, over MQTT 3.1.1 and 5.0.

use std::process::Stdio;

use switchboard_tests::{TestBroker, WAIT};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running mosquitto_sub whose lines we read.
struct Sub {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Sub {
    /// Starts mosquitto_sub with `args` and waits until its SUBACK arrived.
    async fn start(port: u16, args: &[&str]) -> Sub {
        // stdbuf: mosquitto_sub's debug lines are not flushed when stdout is a pipe.
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-d",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto_sub runs (apt-get install mosquitto-clients)");
        let stdout = child.stdout.take().expect("stdout");
        let mut s = Sub {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        // -d prints protocol traces; wait for the SUBACK trace.
        loop {
            let l = s.line().await;
            if l.contains("SUBACK") {
                return s;
            }
        }
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("timed out waiting for mosquitto_sub")
            .expect("read")
            .expect("mosquitto_sub exited")
    }

    /// Next line that is a message (`-v` output: topic and payload), skipping traces.
    async fn message(&mut self) -> String {
        loop {
            let l = self.line().await;
            if !l.starts_with("Client ") && !l.starts_with("Subscribed (mid") {
                return l;
            }
        }
    }
}

async fn publish(port: u16, args: &[&str]) -> std::process::Output {
    let run = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("mosquitto_pub finished")
        .expect("mosquitto_pub runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_qos_0_1_2_on_v311_and_v5() {
    let b = TestBroker::start().await;
    for version in ["mqttv311", "mqttv5"] {
        let topic = format!("cli/{version}");
        let mut sub = Sub::start(b.port(), &["-V", version, "-q", "2", "-v", "-t", &topic]).await;
        for qos in ["0", "1", "2"] {
            let out = publish(
                b.port(),
                &[
                    "-V",
                    version,
                    "-q",
                    qos,
                    "-t",
                    &topic,
                    "-m",
                    &format!("q{qos}"),
                ],
            )
            .await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(sub.message().await, format!("{topic} q{qos}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_message_set_and_cleared() {
    let b = TestBroker::start().await;
    let out = publish(b.port(), &["-r", "-q", "1", "-t", "cli/ret", "-m", "kept"]).await;
    assert!(out.status.success());
    let mut sub = Sub::start(b.port(), &["-v", "-t", "cli/ret"]).await;
    assert_eq!(sub.message().await, "cli/ret kept");
    drop(sub);
    let out = publish(b.port(), &["-r", "-q", "1", "-t", "cli/ret", "-n"]).await;
    assert!(out.status.success());
    // -W 1: give up after a second; -C 1: stop after one message. Nothing must come.
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &b.port().to_string(),
            "-t",
            "cli/ret",
            "-C",
            "1",
            "-W",
            "1",
        ])
        .output()
        .await
        .expect("mosquitto_sub");
    assert!(
        out.stdout.is_empty(),
        "cleared retained message delivered: {:?}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused() {
    let dir = std::env::temp_dir().join(format!("sb-cli-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("passwd");
    let hash = switchboard_broker::auth::hash_password("good").expect("hash");
    std::fs::write(&file, format!("cli:{hash}\n")).expect("write");
    let f = file.clone();
    let b = TestBroker::start_with(move |c| {
        c.allow_anonymous = false;
        c.password_file = Some(f);
    })
    .await;
    for version in ["mqttv311", "mqttv5"] {
        let out = publish(
            b.port(),
            &[
                "-V", version, "-u", "cli", "-P", "bad", "-t", "x", "-m", "y",
            ],
        )
        .await;
        assert!(!out.status.success(), "wrong password accepted");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            err.contains("bad user name or password"),
            "{version}: {err}"
        );
        let out = publish(b.port(), &["-V", version, "-t", "x", "-m", "y"]).await;
        assert!(!out.status.success(), "anonymous accepted");
        let out = publish(
            b.port(),
            &[
                "-V", version, "-u", "cli", "-P", "good", "-t", "x", "-m", "y",
            ],
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_published_when_client_is_killed() {
    let b = TestBroker::start().await;
    let mut watcher = Sub::start(b.port(), &["-v", "-t", "cli/will/#"]).await;
    let mut dying = Sub::start(
        b.port(),
        &[
            "-t",
            "cli/other",
            "--will-topic",
            "cli/will/dying",
            "--will-payload",
            "lost",
            "--will-qos",
            "1",
        ],
    )
    .await;
    dying.child.kill().await.expect("kill");
    assert_eq!(watcher.message().await, "cli/will/dying lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_gets_messages_published_while_away() {
    let b = TestBroker::start().await;
    let args = [
        "-V",
        "mqttv5",
        "-c",
        "-x",
        "600",
        "-i",
        "cli-persist",
        "-q",
        "1",
        "-v",
        "-t",
        "cli/persist",
    ];
    let mut sub = Sub::start(b.port(), &args).await;
    sub.child.kill().await.expect("kill");
    b.until_offline("cli-persist").await;
    for i in 0..3 {
        let out = publish(
            b.port(),
            &["-q", "1", "-t", "cli/persist", "-m", &format!("away{i}")],
        )
        .await;
        assert!(out.status.success());
    }
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &b.port().to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub");
    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    for i in 0..3 {
        let l = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(l.as_deref(), Some(format!("cli/persist away{i}").as_str()));
    }
}
