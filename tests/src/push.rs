//! Helpers of the push tests: a gateway whose push worker points at the mock push
//! services, tenants with credentials for every mocked vendor, token registration, signed
//! REST calls of the app server, and a bounded wait on a condition.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_client::Endpoint;
use switchboard_gateway::push::PushConfig;
use switchboard_gateway::{DEFAULT_BODY_LIMIT, Gateway, GatewayConfig};
use switchboard_proto::im;

use crate::WAIT;
use crate::http::{Answer, request};
use crate::im::{Device, ImBroker, SERVICE_SECRET, text};
use crate::push_mocks::PushMock;

/// The worker settings for `mock`: every endpoint on it, its CA trusted, quick retries,
/// a user's tokens and settings read for every job (tests change them between messages).
pub fn push_config(mock: &PushMock) -> PushConfig {
    PushConfig {
        extra_ca_pem: Some(mock.ca_pem.clone().into_bytes()),
        backoff: Duration::from_millis(50),
        tokens_ttl: Duration::ZERO,
        ..PushConfig::all_at(&mock.base())
    }
}

/// A gateway with MQTT client id `id` and push worker settings `push`.
pub async fn gateway_with(b: &ImBroker, id: &str, push: PushConfig) -> Gateway {
    Gateway::start_with_push(
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            broker: vec![Endpoint::Tcp(b.addr)],
            service_secret: SERVICE_SECRET.into(),
            client_id: id.into(),
            body_limit: DEFAULT_BODY_LIMIT,
            files_dir: None,
        },
        push,
    )
    .await
    .expect("gateway")
}

/// A gateway whose push worker uses `mock`.
pub async fn gateway(b: &ImBroker, mock: &PushMock, id: &str) -> Gateway {
    gateway_with(b, id, push_config(mock)).await
}

/// An administrative request of the IM service (as the gateway's service login makes).
pub async fn admin(b: &ImBroker, op: &str, body: Value) -> Value {
    b.im.admin_request(op, body.to_string().as_bytes())
        .await
        .expect(op)
}

/// A tenant with alice, bob and carol, push credentials for every mocked vendor.
pub async fn setup(b: &ImBroker, mock: &PushMock) -> u64 {
    let t = b.tenant("acme").await;
    for u in ["alice", "bob", "carol"] {
        b.user(t, u).await;
    }
    let mut creds = mock.credentials();
    creds["tenant"] = t.into();
    admin(b, "push/credentials/set", creds).await;
    t
}

/// Registers a device token of `user` (bundle com.example.chat, APNs sandbox).
pub async fn register(b: &ImBroker, t: u64, user: &str, vendor: &str, token: &str) {
    admin(
        b,
        "push/register",
        json!({"tenant": t, "user": user, "vendor": vendor, "token": token,
               "bundle_id": "com.example.chat", "sandbox": true}),
    )
    .await;
}

/// The user's registered tokens.
pub async fn tokens(b: &ImBroker, t: u64, user: &str) -> Vec<Value> {
    admin(b, "push/tokens", json!({"tenant": t, "user": user})).await["tokens"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A signed REST call of tenant `t`'s app server (HMAC-SHA256 of nonce + timestamp + body).
pub async fn rest(b: &ImBroker, gw: &Gateway, t: u64, path: &str, body: &Value) -> Answer {
    let rec = b.im.tenant(t).expect("tenant");
    signed_post(gw.addr(), &rec.app_key, &rec.app_secret, path, body).await
}

/// A `POST` to the gateway at `addr`, signed with a tenant's app key and secret.
pub async fn signed_post(
    addr: SocketAddr,
    app_key: &str,
    app_secret: &str,
    path: &str,
    body: &Value,
) -> Answer {
    static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let body = body.to_string();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    let nonce = format!(
        "n{}",
        NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, app_secret.as_bytes());
    let msg = [nonce.as_bytes(), ts.as_bytes(), body.as_bytes()].concat();
    let sig: String = ring::hmac::sign(&key, &msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let headers = [
        ("App-Key", app_key.to_owned()),
        ("Nonce", nonce),
        ("Timestamp", ts),
        ("Signature", sig),
        ("Content-Type", "application/json".to_owned()),
    ];
    request(addr, "POST", path, &headers, body.as_bytes()).await
}

/// `from` sends `body` to `to` (client message id `id`).
pub async fn send(from: &Device, to: &str, id: &str, body: &str) -> im::SendResponse {
    from.client
        .send(im::SendRequest {
            to: to.into(),
            client_msg_id: id.into(),
            content: Some(text(body)),
            ..Default::default()
        })
        .await
        .expect("sent")
}

/// Waits until `f` holds, checking after each of the worker's steps (bounded by [`WAIT`]).
pub async fn until(mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition within the wait"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
