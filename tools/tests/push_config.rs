//! Push credentials from the configuration file, end to end: a real `switchboard broker`
//! process (IM service, gateway, push worker) whose tenant credentials come only from
//! `[gateway.push.tenants.1.*]` (the APNs `.p8` key, the FCM service account and the
//! Huawei secret as files, Xiaomi's secret from the environment), pointed at the mock push
//! services. Each mock gets a correctly signed push; the REST API shows those vendors as
//! config-managed and refuses to change them; and nothing the process logs (at debug
//! level, with a failing push among them) contains a secret. A malformed key stops the
//! start with an error naming tenant, vendor and problem, not the key.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_tests::TempDir;
use switchboard_tests::push::{signed_post, until};
use switchboard_tests::push_mocks::{
    APNS_KEY_ID, APNS_TEAM_ID, Canned, HUAWEI_APP, HUAWEI_SECRET, PushMock, TEST_RSA_PEM,
    XIAOMI_SECRET,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

const EXE: &str = env!("CARGO_BIN_EXE_switchboard");

/// The running process, everything it printed (stdout and stderr) and its addresses.
struct Running {
    child: Child,
    log: Arc<Mutex<String>>,
    admin: String,
    http: std::net::SocketAddr,
}

/// Collects `out` line by line into `log`, telling `tx` each line.
fn collect(
    out: impl AsyncRead + Unpin + Send + 'static,
    log: Arc<Mutex<String>>,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            log.lock().expect("log").push_str(&l);
            log.lock().expect("log").push('\n');
            let _ = tx.send(l);
        }
    });
}

fn command(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(EXE);
    cmd.args([
        "broker",
        "--tcp",
        "127.0.0.1:0",
        "--log",
        "debug",
        "--data-dir",
    ])
    .arg(dir)
    .args(["--http", "127.0.0.1:0", "--config"])
    .arg(config)
    .env("SWITCHBOARD__BROKER__SYS_INTERVAL", "0")
    .env("SWITCHBOARD__BROKER__ADMIN__LISTEN", "\"127.0.0.1:0\"")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

async fn start(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Running {
    let mut child = command(dir, config, env)
        .spawn()
        .expect("switchboard starts");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    collect(
        child.stdout.take().expect("stdout"),
        log.clone(),
        tx.clone(),
    );
    collect(child.stderr.take().expect("stderr"), log.clone(), tx);
    let (mut admin, mut http) = (None, None);
    while admin.is_none() || http.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("addresses announced; log:\n{}", log.lock().expect("log")))
            .unwrap_or_else(|| {
                panic!(
                    "exited before listening; log:\n{}",
                    log.lock().expect("log")
                )
            });
        if let Some(a) = line.strip_prefix("switchboard: admin API on http://") {
            admin = a.split_whitespace().next().map(str::to_owned);
        }
        if let Some(a) = line.strip_prefix("switchboard: gateway REST API on http://") {
            http = Some(a.trim().parse().expect("address"));
        }
    }
    Running {
        child,
        log,
        admin: admin.expect("admin"),
        http: http.expect("http"),
    }
}

impl Running {
    async fn ctl(&self, dir: &Path, args: &[&str]) -> String {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(EXE)
                .arg("ctl")
                .args(args)
                .args(["--admin", &self.admin, "--data-dir"])
                .arg(dir)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("ctl finishes")
        .expect("ctl runs");
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    async fn call(&self, dir: &Path, op: &str, body: Value) {
        switchboard_tests::process::admin_call(&self.admin, dir, op, body).await;
    }

    /// SIGKILL, reap, and everything it printed.
    async fn stop(mut self) -> String {
        self.child.start_kill().expect("SIGKILL");
        let _ = self.child.wait().await;
        self.log.lock().expect("log").clone()
    }
}

/// The longest base64 line of a PEM document: a piece of the key no log may contain.
fn pem_piece(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .max_by_key(|l| l.len())
        .expect("a PEM body line")
        .to_owned()
}

/// The `[gateway.push]` endpoints on the mock.
fn endpoints(mock: &PushMock, ca: &Path) -> String {
    let base = mock.base();
    format!(
        "[gateway.push]\nextra_ca = {ca:?}\napns_production = {base:?}\napns_sandbox = {base:?}\n\
         fcm_base = {base:?}\nhuawei_base = {base:?}\nhuawei_token_uri = \"{base}/huawei/token\"\n\
         xiaomi_base = {base:?}\n\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_config_file_sign_every_push_and_never_reach_the_log() {
    let mut mock = PushMock::start().await;
    let dir = TempDir::new("push-config");
    let d = dir.path();
    let file = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).expect("file");
        p
    };
    let ca = file("mock-ca.pem", &mock.ca_pem);
    let p8 = file("AuthKey_KEY123.p8", &mock.apns_key_pem);
    let sa = file(
        "fcm-service-account.json",
        &mock.service_account().to_string(),
    );
    let hw = file("huawei.secret", &format!("{HUAWEI_SECRET}\n"));
    // Tenant 1 is the first tenant of a fresh data directory (created below).
    let config = file(
        "switchboard.toml",
        &format!(
            "{}[gateway.push.tenants.1.apns]\nkey_p8_file = {p8:?}\nkey_id = {APNS_KEY_ID:?}\n\
             team_id = {APNS_TEAM_ID:?}\ntopic = \"com.example.chat\"\n\n\
             [gateway.push.tenants.1.fcm]\nservice_account_file = {sa:?}\n\n\
             [gateway.push.tenants.1.huawei]\napp_id = {HUAWEI_APP:?}\nclient_secret_file = {hw:?}\n",
            endpoints(&mock, &ca)
        ),
    );
    let env = [
        (
            "SWITCHBOARD__GATEWAY__PUSH__TENANTS__1__XIAOMI__APP_SECRET",
            XIAOMI_SECRET,
        ),
        (
            "SWITCHBOARD__GATEWAY__PUSH__TENANTS__1__XIAOMI__PACKAGE_NAME",
            "com.example.chat",
        ),
    ];
    let sb = start(d, &config, &env).await;
    let t: Value = serde_json::from_str(
        sb.ctl(d, &["tenant", "create", "acme", "--json"])
            .await
            .trim(),
    )
    .expect("JSON");
    assert_eq!(t["tenant_id"], json!(1), "the config file names tenant 1");
    let (key, secret) = (
        t["app_key"].as_str().expect("app key").to_owned(),
        t["app_secret"].as_str().expect("app secret").to_owned(),
    );
    for user in ["alice", "bob"] {
        sb.ctl(d, &["user", "create", "--tenant", "1", user]).await;
    }
    for vendor in ["apns", "fcm", "huawei", "xiaomi"] {
        sb.call(
            d,
            "push/register",
            json!({"tenant": 1, "user": "bob", "vendor": vendor, "token": format!("{vendor}-token-bob"),
                   "bundle_id": "com.example.chat"}),
        )
        .await;
    }

    // A test push through every configured provider: each mock checks the signature (the
    // APNs ES256 JWT, the FCM RS256 grant, Huawei's client secret, Xiaomi's app secret).
    let out = sb
        .ctl(d, &["push-test", "--tenant", "1", "--user", "bob"])
        .await;
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.lines().all(|l| l.ends_with("sent")), "{out}");
    // They arrive in any order (token requests among them).
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 4 {
        let h = mock.next_any().await;
        if ["apns", "fcm", "huawei", "xiaomi"].contains(&h.kind.as_str()) {
            seen.insert(h.kind.clone(), h);
        }
    }
    let apns = &seen["apns"];
    assert!(apns.header("authorization").starts_with("bearer "));
    assert_eq!(apns.header("apns-topic"), "com.example.chat");

    // The REST API: the four vendors are config-managed, shown without secrets, and
    // cannot be set; another vendor can.
    let a = signed_post(
        sb.http,
        &key,
        &secret,
        "/v1/push/credentials/get",
        &json!({}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json()["vendors"].clone();
    for vendor in ["apns", "fcm", "huawei", "xiaomi"] {
        assert_eq!(v[vendor]["source"], json!("config"), "{v}");
    }
    assert_eq!(v["apns"]["key_id"], json!(APNS_KEY_ID));
    assert_eq!(v["fcm"]["project_id"], json!("test-project"));
    let refused = json!({"apns": {"key_p8": "x", "key_id": "K", "team_id": "T"}});
    let a = signed_post(sb.http, &key, &secret, "/v1/push/credentials/set", &refused).await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(a.body.contains("configuration file"), "{}", a.body);
    let oppo = json!({"oppo": {"app_key": "k", "master_secret": "oppo-S3CRET"}});
    let a = signed_post(sb.http, &key, &secret, "/v1/push/credentials/set", &oppo).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // A real message to bob (offline): Huawei refuses it for good, FCM fails once (500,
    // retried), APNs and Xiaomi take it.
    mock.script(
        "huawei",
        vec![Canned {
            status: 400,
            body:
                json!({"code": "80300002", "msg": "The current app does not have the permission"})
                    .to_string(),
            retry_after: None,
        }],
    );
    mock.script(
        "fcm",
        vec![Canned {
            status: 500,
            body: json!({"error": {"code": 500, "status": "INTERNAL", "message": "internal"}})
                .to_string(),
            retry_after: None,
        }],
    );
    let msg = json!({"from": "alice", "to": "bob", "client_msg_id": "m1",
                     "content": {"type": "text", "text": "hello bob"}});
    let a = signed_post(sb.http, &key, &secret, "/v1/messages/private", &msg).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let trace = |outcome: &'static str, vendor: &'static str| {
        let (key, secret) = (key.clone(), secret.clone());
        async move {
            let a = signed_post(
                sb.http,
                &key,
                &secret,
                "/v1/push/trace",
                &json!({"user": "bob"}),
            )
            .await;
            a.json()["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| {
                    let test = e["job"].as_str().unwrap_or_default().starts_with("test:");
                    e["vendor"] == vendor && e["outcome"] == outcome && !test
                })
        }
    };
    until(async || trace("provider_error", "huawei").await).await;
    until(async || trace("sent", "fcm").await).await;
    until(async || trace("sent", "apns").await).await;
    until(async || trace("sent", "xiaomi").await).await;

    let log = sb.stop().await;
    assert!(log.contains("Huawei 400"), "the failure is logged:\n{log}");
    for (what, s) in [
        ("the APNs key", pem_piece(&mock.apns_key_pem)),
        ("the FCM private key", pem_piece(TEST_RSA_PEM)),
        ("the Huawei secret", HUAWEI_SECRET.to_owned()),
        ("the Xiaomi secret", XIAOMI_SECRET.to_owned()),
        ("the OPPO secret", "oppo-S3CRET".to_owned()),
    ] {
        assert!(!log.contains(&s), "{what} is in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_missing_key_stops_the_start_without_showing_it() {
    let mock = PushMock::start().await;
    let dir = TempDir::new("push-config-bad");
    let d = dir.path();
    let ca = d.join("mock-ca.pem");
    std::fs::write(&ca, &mock.ca_pem).expect("CA");
    let secret = "MIGTAgEAMBMGS3CRETNOTAKEY";
    let cases = [
        (
            format!(
                "[gateway.push.tenants.4.apns]\nkey_p8 = \"-----BEGIN PRIVATE KEY-----\\n{secret}\\n-----END PRIVATE KEY-----\"\nkey_id = \"K\"\nteam_id = \"T\"\n"
            ),
            "tenant 4, apns",
        ),
        (
            "[gateway.push.tenants.4.fcm]\nservice_account_file = \"/nonexistent/sa.json\"\n"
                .to_owned(),
            "gateway.push.tenants.4.fcm.service_account_file",
        ),
    ];
    for (i, (tenants, expected)) in cases.into_iter().enumerate() {
        let config = d.join(format!("bad{i}.toml"));
        std::fs::write(&config, format!("{}{tenants}", endpoints(&mock, &ca))).expect("config");
        let data = d.join(format!("data{i}"));
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            command(&data, &config, &[]).output(),
        )
        .await
        .expect("exits")
        .expect("runs");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{all}");
        assert!(all.contains(expected), "{expected}:\n{all}");
        assert!(!all.contains("S3CRET"), "the key is shown:\n{all}");
    }
}
