//! Webhooks end to end: the broker publishes events, the gateway POSTs them to a receiver
//! (a real HTTP server in this test), signed; before-send verdicts refuse or rewrite a
//! device's message; failed notifications are retried.

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::json;
use switchboard_client::Endpoint;
use switchboard_gateway::{DEFAULT_BODY_LIMIT, Gateway, GatewayConfig};
use switchboard_tests::WAIT;
use switchboard_tests::im::{ImBroker, SERVICE_SECRET, text, text_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One call the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    kind: String,
    delivery: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

/// A webhook receiver: answers each call with `answer(kind, n)` (n: calls of that kind so
/// far, from 1) and reports it.
async fn receiver(
    answer: impl Fn(&str, usize) -> (u16, String) + Send + Sync + 'static,
) -> (SocketAddr, mpsc::UnboundedReceiver<Hit>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let counts: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (tx, counts, answer) = (tx.clone(), counts.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body_start) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break (
                            String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase(),
                            i + 4,
                        );
                    }
                };
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
                        .unwrap_or_default()
                };
                let len: usize = header("content-length").parse().unwrap_or(0);
                let mut body = buf[body_start..].to_vec();
                while body.len() < len {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                let kind = header("x-switchboard-event");
                let n = {
                    let mut c = counts.lock();
                    let e = c.entry(kind.clone()).or_default();
                    *e += 1;
                    *e
                };
                let (status, reply) = answer(&kind, n);
                let _ = tx.send(Hit {
                    kind,
                    delivery: header("x-switchboard-delivery"),
                    timestamp: header("x-switchboard-timestamp"),
                    signature: header("x-switchboard-signature"),
                    body,
                });
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (addr, rx)
}

async fn next_hit(rx: &mut mpsc::UnboundedReceiver<Hit>, kind: &str) -> Hit {
    loop {
        let h = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("webhook call within the wait")
            .expect("receiver running");
        if h.kind == kind {
            return h;
        }
    }
}

fn hmac_hex(secret: &str, msg: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_send_refuses_or_rewrites_and_after_send_is_retried_after_a_500() {
    let b = ImBroker::start().await;
    let gw = Gateway::start(GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        broker: vec![Endpoint::Tcp(b.addr)],
        service_secret: SERVICE_SECRET.into(),
        client_id: "gateway-hooks-test".into(),
        body_limit: DEFAULT_BODY_LIMIT,
        files_dir: None,
    })
    .await
    .expect("gateway");
    let (addr, mut hits) = receiver(|kind, n| match (kind, n) {
        ("before_send", 1) => (200, r#"{"allow": false, "reason": "spam"}"#.into()),
        ("before_send", _) => (
            200,
            r#"{"allow": true, "content": {"type": "text", "text": "hello (vetted)"}}"#.into(),
        ),
        ("after_send", 1) => (500, "{}".into()),
        _ => (200, String::new()),
    })
    .await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    b.im.admin_request(
        "hooks/set",
        json!({"tenant": t, "url": format!("http://{addr}/hook"), "secret": "s3cret",
                   "events": ["before_send", "after_send"], "timeout_ms": 5000, "fail_open": false})
        .to_string()
        .as_bytes(),
    )
    .await
    .expect("hooks set");
    let alice = b.device(t, "alice", "alice-phone").await;
    let mut bob = b.device(t, "bob", "bob-phone").await;

    // Refused by the app server: the sender is told why, nothing is stored or delivered.
    let refused = alice
        .client
        .send(switchboard_proto::im::SendRequest {
            to: "bob".into(),
            client_msg_id: "m1".into(),
            content: Some(text("buy spam now")),
            ..Default::default()
        })
        .await;
    match refused {
        Err(switchboard_client::im::ImError::Status { code, message }) => {
            assert_eq!(code, 403);
            assert!(message.contains("spam"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let h = next_hit(&mut hits, "before_send").await;
    let ev: serde_json::Value = serde_json::from_slice(&h.body).expect("JSON");
    assert_eq!(ev["data"]["content"]["text"], json!("buy spam now"));
    assert_eq!(ev["data"]["from"], json!("alice"));
    // Signed: HMAC-SHA256(secret, timestamp + "." + body), computed independently.
    let mut signed = h.timestamp.clone().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(&h.body);
    assert_eq!(h.signature, hmac_hex("s3cret", &signed));
    assert!(
        ev.get("secret").is_none() && ev.get("url").is_none(),
        "{ev}"
    );

    // Allowed with new content: bob gets the rewritten text.
    let sent = alice
        .client
        .send(switchboard_proto::im::SendRequest {
            to: "bob".into(),
            client_msg_id: "m2".into(),
            content: Some(text("hello")),
            ..Default::default()
        })
        .await
        .expect("allowed");
    assert_eq!(sent.seq, 1, "the refused message took no seq");
    let m = bob.message().await;
    assert_eq!(text_of(&m), "hello (vetted)");

    // after_send: the first try gets a 500, the second (same delivery id) succeeds.
    let first = next_hit(&mut hits, "after_send").await;
    let second = next_hit(&mut hits, "after_send").await;
    assert_eq!(first.delivery, second.delivery, "a retry of the same event");
    let ev: serde_json::Value = serde_json::from_slice(&second.body).expect("JSON");
    assert_eq!(ev["data"]["content"]["text"], json!("hello (vetted)"));
    assert_eq!(ev["data"]["seq"], json!(1));

    gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_gateway_before_send_follows_the_fail_open_rule() {
    let b = ImBroker::start().await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let set = |fail_open: bool| {
        json!({"tenant": t, "url": "http://127.0.0.1:9/hook", "secret": "x",
               "events": ["before_send"], "timeout_ms": 1000, "fail_open": fail_open})
        .to_string()
    };
    b.im.admin_request("hooks/set", set(false).as_bytes())
        .await
        .expect("set");
    let alice = b.device(t, "alice", "alice-phone").await;
    let r = alice.client.send_text("bob", "c1", "hi").await;
    assert!(
        matches!(
            r,
            Err(switchboard_client::im::ImError::Status { code: 403, .. })
        ),
        "{r:?}"
    );
    b.im.admin_request("hooks/set", set(true).as_bytes())
        .await
        .expect("set");
    alice
        .client
        .send_text("bob", "c2", "hi")
        .await
        .expect("fail-open lets it through");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_group_changes_reach_the_app_servers_webhook_signed() {
    let b = ImBroker::start().await;
    let gw = Gateway::start(GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        broker: vec![Endpoint::Tcp(b.addr)],
        service_secret: SERVICE_SECRET.into(),
        client_id: "gateway-hooks-events".into(),
        body_limit: DEFAULT_BODY_LIMIT,
        files_dir: None,
    })
    .await
    .expect("gateway");
    let (addr, mut hits) = receiver(|_, _| (200, String::new())).await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    b.im.admin_request(
        "hooks/set",
        json!({"tenant": t, "url": format!("http://{addr}/hook"), "secret": "s3cret",
               "events": ["presence", "group"]})
        .to_string()
        .as_bytes(),
    )
    .await
    .expect("hooks set");

    // A device comes online: a presence event for alice.
    let _alice = b.device(t, "alice", "alice-phone").await;
    let h = next_hit(&mut hits, "presence").await;
    let ev: serde_json::Value = serde_json::from_slice(&h.body).expect("JSON");
    assert_eq!(ev["data"]["user"], json!("alice"), "{ev}");
    assert_eq!(ev["data"]["user_online"], json!(true), "{ev}");

    // The group is made, then bob is kicked: two group events with their notices, signed.
    for (op, body) in [
        (
            "group/create",
            json!({"tenant": t, "group_id": "team", "name": "Team",
                                "members": ["alice", "bob"]}),
        ),
        (
            "group/kick",
            json!({"tenant": t, "group_id": "team", "members": ["bob"]}),
        ),
    ] {
        b.im.admin_request(op, body.to_string().as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{op}: {e}"));
        let h = next_hit(&mut hits, "group").await;
        let ev: serde_json::Value = serde_json::from_slice(&h.body).expect("JSON");
        assert_eq!(ev["data"]["group_id"], json!("team"), "{op}: {ev}");
        assert_eq!(
            ev["data"]["notice"]["conversation"],
            json!("g:team"),
            "{op}: {ev}"
        );
        let mut signed = h.timestamp.clone().into_bytes();
        signed.push(b'.');
        signed.extend_from_slice(&h.body);
        assert_eq!(h.signature, hmac_hex("s3cret", &signed));
    }
    gw.stop().await;
    b.stop().await;
}
