//! Helpers for tests of the REST gateway's native API: a tenant's credentials, signed
//! requests (HMAC-SHA256 of nonce + timestamp + body, computed here with ring, independently
//! of the gateway's code), multipart bodies and a small PNG.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use switchboard_client::Endpoint;
use switchboard_gateway::{DEFAULT_BODY_LIMIT, Gateway, GatewayConfig};

use crate::http::{Answer, request};
use crate::im::{ImBroker, SERVICE_SECRET};

/// A tenant as its app server knows it.
pub struct App {
    pub key: String,
    pub secret: String,
    pub tenant: u64,
}

impl App {
    /// A new tenant of `b`.
    pub async fn create(b: &ImBroker, name: &str) -> App {
        let t = b.im.create_tenant(name, None).await.expect("tenant");
        App {
            key: t.app_key.clone(),
            secret: t.app_secret.clone(),
            tenant: t.id,
        }
    }
}

/// The gateway's settings for broker `b`, with a file store in `files` if given.
pub fn config(b: &ImBroker, client_id: &str, files: Option<PathBuf>) -> GatewayConfig {
    GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        broker: vec![Endpoint::Tcp(b.addr)],
        service_secret: SERVICE_SECRET.into(),
        client_id: client_id.into(),
        body_limit: DEFAULT_BODY_LIMIT,
        files_dir: files,
    }
}

static NONCE: AtomicU64 = AtomicU64::new(1);

/// The gateway for broker `b` with the test client id and no file store.
pub async fn gateway(b: &ImBroker) -> Gateway {
    Gateway::start(config(b, "gateway-test", None))
        .await
        .expect("gateway starts")
}

/// Seconds since the epoch, as a `Timestamp` header counts them.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// HMAC-SHA256(secret, nonce + timestamp + body), hex: computed here with ring directly,
/// independently of the gateway's code.
pub fn sign(secret: &str, nonce: &str, ts: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let msg = [nonce.as_bytes(), ts.as_bytes(), body].concat();
    ring::hmac::sign(&key, &msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A signed JSON request with a fresh nonce.
pub async fn signed(gw: &Gateway, app: &App, method: &str, path: &str, body: &Value) -> Answer {
    let nonce = format!("n{}", NONCE.fetch_add(1, Ordering::Relaxed));
    let body = body.to_string();
    signed_with(gw, app, method, path, body.as_bytes(), &nonce, now()).await
}

/// A JSON request signed with the given nonce and timestamp (for replays and stale clocks).
pub async fn signed_with(
    gw: &Gateway,
    app: &App,
    method: &str,
    path: &str,
    body: &[u8],
    nonce: &str,
    ts: u64,
) -> Answer {
    let ts = ts.to_string();
    let headers = [
        ("App-Key", app.key.clone()),
        ("Nonce", nonce.to_owned()),
        ("Timestamp", ts.clone()),
        ("Signature", sign(&app.secret, nonce, &ts, body)),
        ("Content-Type", "application/json".to_owned()),
    ];
    request(gw.addr(), method, path, &headers, body).await
}

/// A signed multipart upload of one file to `/v1/files`.
pub async fn upload(gw: &Gateway, app: &App, name: &str, mime: &str, bytes: &[u8]) -> Answer {
    let (ctype, body) = multipart(name, mime, bytes);
    let h = signed_headers(app, &body, &ctype);
    request(gw.addr(), "POST", "/v1/files", &h, &body).await
}

/// The four signature headers and `Content-Type` for `body`, with a fresh nonce.
pub fn signed_headers(app: &App, body: &[u8], content_type: &str) -> Vec<(&'static str, String)> {
    let nonce = format!("h{}", NONCE.fetch_add(1, Ordering::Relaxed));
    let ts = now().to_string();
    let sig = sign(&app.secret, &nonce, &ts, body);
    vec![
        ("App-Key", app.key.clone()),
        ("Nonce", nonce),
        ("Timestamp", ts),
        ("Signature", sig),
        ("Content-Type", content_type.to_owned()),
    ]
}

/// A signed JSON POST.
pub async fn post(gw: &Gateway, app: &App, path: &str, body: &Value) -> Answer {
    let body = body.to_string().into_bytes();
    let h = signed_headers(app, &body, "application/json");
    request(gw.addr(), "POST", path, &h, &body).await
}

/// A multipart form with one `file` part: its Content-Type and body.
pub fn multipart(name: &str, mime: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "sbTestBoundary7x";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {mime}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A header of an answer.
pub fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Whether an answer's body is `n` bytes long by its `Content-Length` (bodies are read as
/// text here, so binary ones are not compared byte for byte).
pub fn has_length(a: &Answer, n: usize) -> bool {
    header(a, "content-length") == Some(n.to_string().as_str())
}

/// A 2×2 red PNG.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0xfd, 0xd4, 0x9a,
    0x73, 0x00, 0x00, 0x00, 0x10, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0x00,
    0x44, 0x0c, 0x10, 0x0a, 0x00, 0x1f, 0xee, 0x03, 0xfd, 0x8b, 0x5f, 0x14, 0xd4, 0x00, 0x00, 0x00,
    0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];
