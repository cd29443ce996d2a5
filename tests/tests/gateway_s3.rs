//! The gateway's S3-compatible file store against a real S3 server: moto's standalone
//! server (PyPI `moto[server]`, `moto_server`), started on a free port by the test and
//! killed at its end. Files uploaded through the REST API land in the bucket (read back
//! with boto3, AWS's own SDK, not through our client) and download through
//! the gateway's signed links; a device receives the image message carrying the link.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchboard_gateway::Gateway;
use switchboard_gateway::files::BlobStore;
use switchboard_gateway::files::s3::{S3BlobStore, S3Config};
use switchboard_tests::gateway_api::{
    App, PNG, config, has_length, multipart, post, signed_headers,
};
use switchboard_tests::http::request;
use switchboard_tests::im::ImBroker;
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
        config(&b, "gateway-s3", None),
        switchboard_gateway::push::PushConfig {
            enabled: false,
            ..Default::default()
        },
        Some(store.clone()),
    )
    .await
    .expect("gateway");
    let app = App::create(&b, "acme").await;

    // The app server uploads an image (signed multipart).
    let (ctype, body) = multipart("red.png", "image/png", PNG);
    let h = signed_headers(&app, &body, &ctype);
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
    b.user(app.tenant, "alice").await;
    b.user(app.tenant, "bob").await;
    let mut bob = b.device(app.tenant, "bob", "bob-phone").await;
    let url = f["url"].as_str().expect("url").to_owned();
    let msg = json!({"from": "alice", "to": "bob",
                     "content": {"type": "image", "url": url, "width": 2, "height": 2}});
    let a = post(&gw, &app, "/v1/messages/private", &msg).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = bob.message().await;
    let Some(switchboard_proto::im::content::Body::Image(img)) = m.content.and_then(|c| c.body)
    else {
        panic!("bob expected an image");
    };
    let got = request(gw.addr(), "GET", &img.url, &[], b"").await;
    assert_eq!(got.status, 200);
    assert!(has_length(&got, PNG.len()), "{}", got.headers);
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
