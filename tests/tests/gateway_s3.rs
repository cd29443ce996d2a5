//! The gateway's S3-compatible file store against a real S3 server: moto's standalone
//! server (PyPI `moto[server]`, `moto_server`), started on a free port by the test and
//! killed at its end. Files uploaded through the REST API land in the bucket (read back
//! with boto3, AWS's own SDK, not through our client) and download through
//! the gateway's signed links; a device receives the image message carrying the link.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use switchboard_client::Endpoint;
use switchboard_gateway::files::BlobStore;
use switchboard_gateway::files::s3::{S3BlobStore, S3Config};
use switchboard_gateway::{DEFAULT_BODY_LIMIT, Gateway, GatewayConfig};
use switchboard_tests::http::request;
use switchboard_tests::im::{ImBroker, SERVICE_SECRET};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `moto_server` on 127.0.0.1 and a port the OS picks; its address once it says it runs.
async fn moto() -> (Child, SocketAddr) {
    let mut child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("moto_server runs (tests/run.sh installs moto[server])");
    let stderr = child.stderr.take().expect("stderr");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
    for out in [
        Box::new(stderr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(stdout),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(l).await;
            }
        });
    }
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = rx.recv().await {
            if let Some(rest) = l.split("Running on http://").nth(1) {
                return rest.trim().parse::<SocketAddr>().ok();
            }
        }
        None
    })
    .await
    .expect("moto_server announces its address in time")
    .expect("an address");
    (child, addr)
}

fn sign(secret: &str, nonce: &str, ts: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let msg = [nonce.as_bytes(), ts.as_bytes(), body].concat();
    ring::hmac::sign(&key, &msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether an answer's head says its body is `n` bytes (bodies are read as text here).
fn has_length(head: &str, n: usize) -> bool {
    head.to_ascii_lowercase()
        .contains(&format!("content-length: {n}\r\n"))
        || head
            .to_ascii_lowercase()
            .ends_with(&format!("content-length: {n}"))
}

/// A 2×2 red PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0xfd, 0xd4, 0x9a,
    0x73, 0x00, 0x00, 0x00, 0x10, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0x00,
    0x44, 0x0c, 0x10, 0x0a, 0x00, 0x1f, 0xee, 0x03, 0xfd, 0x8b, 0x5f, 0x14, 0xd4, 0x00, 0x00, 0x00,
    0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_go_to_an_s3_bucket_and_come_back_through_signed_links() {
    let (mut server, s3_addr) = moto().await;
    let cfg = S3Config {
        endpoint: format!("http://{s3_addr}"),
        bucket: "switchboard-files".into(),
        region: "us-east-1".into(),
        access_key: "testing".into(),
        secret_key: "testing".into(),
    };
    let store = S3BlobStore::new(cfg.clone()).expect("store");
    store.ensure_bucket().await.expect("bucket created");
    store
        .ensure_bucket()
        .await
        .expect("an existing bucket is fine");
    let store: Arc<dyn BlobStore> = Arc::new(store);

    let b = ImBroker::start().await;
    let gw = Gateway::start_with_store(
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            broker: vec![Endpoint::Tcp(b.addr)],
            service_secret: SERVICE_SECRET.into(),
            client_id: "gateway-s3".into(),
            body_limit: DEFAULT_BODY_LIMIT,
            files_dir: None,
        },
        switchboard_gateway::push::PushConfig {
            enabled: false,
            ..Default::default()
        },
        Some(store.clone()),
    )
    .await
    .expect("gateway");
    let t = b.im.create_tenant("acme", None).await.expect("tenant");

    // The app server uploads an image (signed multipart).
    let boundary = "s3Boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"red.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(PNG);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    let h = [
        ("App-Key", t.app_key.clone()),
        ("Nonce", "s3-1".to_owned()),
        ("Timestamp", ts.clone()),
        ("Signature", sign(&t.app_secret, "s3-1", &ts, &body)),
        (
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        ),
    ];
    let a = request(gw.addr(), "POST", "/v1/files", &h, &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let f = a.json();
    let id = f["file_id"].as_str().expect("id").to_owned();

    // The object is in the bucket: read back with boto3 (AWS's own SDK, independent of
    // our client), bytes and metadata.
    let script = format!(
        "import boto3,json,hashlib\n\
         s3=boto3.client('s3',endpoint_url='http://{s3_addr}',aws_access_key_id='testing',\
         aws_secret_access_key='testing',region_name='us-east-1')\n\
         b=s3.get_object(Bucket='switchboard-files',Key='{id}')['Body'].read()\n\
         m=json.loads(s3.get_object(Bucket='switchboard-files',Key='{id}.json')['Body'].read())\n\
         print(hashlib.sha256(b).hexdigest(), m['mime'])"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.trim(),
        format!("{id} image/png"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A device gets the image message and downloads it through the gateway's link.
    b.user(t.id, "alice").await;
    b.user(t.id, "bob").await;
    let mut bob = b.device(t.id, "bob", "bob-phone").await;
    let url = f["url"].as_str().expect("url").to_owned();
    let msg = json!({"from": "alice", "to": "bob",
                     "content": {"type": "image", "url": url, "width": 2, "height": 2}})
    .to_string();
    let h = [
        ("App-Key", t.app_key.clone()),
        ("Nonce", "s3-2".to_owned()),
        ("Timestamp", ts.clone()),
        (
            "Signature",
            sign(&t.app_secret, "s3-2", &ts, msg.as_bytes()),
        ),
        ("Content-Type", "application/json".to_owned()),
    ];
    let a = request(
        gw.addr(),
        "POST",
        "/v1/messages/private",
        &h,
        msg.as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = bob.message().await;
    let Some(switchboard_proto::im::content::Body::Image(img)) = m.content.and_then(|c| c.body)
    else {
        panic!("bob expected an image");
    };
    let got = request(gw.addr(), "GET", &img.url, &[], b"").await;
    assert_eq!(got.status, 200);
    assert!(has_length(&got.headers, PNG.len()), "{}", got.headers);
    let thumb = f["thumbnail_url"].as_str().expect("thumbnail");
    assert_eq!(request(gw.addr(), "GET", thumb, &[], b"").await.status, 200);

    // An unknown id is absent, not an error.
    let missing = "0".repeat(64);
    let s = store.clone();
    let got = tokio::task::spawn_blocking(move || s.get(&missing))
        .await
        .expect("joined")
        .expect("no S3 error");
    assert!(got.is_none());

    gw.stop().await;
    b.stop().await;
    server.start_kill().expect("kill moto_server");
    let _ = server.wait().await;
}
