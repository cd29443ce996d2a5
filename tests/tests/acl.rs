//! ACL files with real clients: per-user and anonymous rules, `%u`/`%c` patterns, shared
//! groups, reloading through the admin API, and paho-mqtt (MQTT 5) seeing SUBACK 0x87.
//!
//! The brokers here allow anonymous clients and have no password file, so a client's user
//! name is taken as given: the ACL, not authentication, is under test.

use std::net::SocketAddr;
use std::path::PathBuf;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PubRecReason, SubscribeReasonCode};
use switchboard_tests::{TempDir, TestBroker, v4, v5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RULES: &str = "\
# anonymous clients
topic read public/#
user alice
topic readwrite alice/#
topic deny alice/secret/#
user bob
topic read alice/#
pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

async fn broker_with(rules: &str, dir: &TempDir) -> (TestBroker, PathBuf) {
    let path = dir.path().join("acl");
    std::fs::write(&path, rules).expect("write acl");
    let p = path.clone();
    let b = TestBroker::start_with(move |c| {
        c.acl_file = Some(p);
        c.admin.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.admin.token = Some("t0ken".into());
    })
    .await;
    (b, path)
}

async fn v5_as(b: &TestBroker, id: &str, user: Option<&str>) -> v5::Client {
    let user = user.map(str::to_owned);
    v5::Client::connect(b.port(), id, move |o| {
        if let Some(u) = user {
            o.set_credentials(u, "");
        }
    })
    .await
}

async fn sub_code(c: &mut v5::Client, filter: &str) -> SubscribeReasonCode {
    c.client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let ack = c.suback().await;
    ack.return_codes[0]
}

async fn pub_code(c: &mut v5::Client, topic: &str, payload: &'static [u8]) -> PubAckReason {
    c.client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .expect("publish");
    loop {
        if let Packet::PubAck(a) = c.next().await {
            return a.reason;
        }
    }
}

async fn pubrec_code(c: &mut v5::Client, topic: &str) -> PubRecReason {
    c.client
        .publish(topic, QoS::ExactlyOnce, false, &b"qos2"[..])
        .await
        .expect("publish");
    loop {
        if let Packet::PubRec(r) = c.next().await {
            return r.reason;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_file_rules_for_users_and_anonymous_clients_v5() {
    let dir = TempDir::new("acl-users");
    let (b, _) = broker_with(RULES, &dir).await;
    let mut alice = v5_as(&b, "alice-1", Some("alice")).await;
    let mut bob = v5_as(&b, "bob-1", Some("bob")).await;
    let mut anon = v5_as(&b, "anon-1", None).await;

    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    assert_eq!(sub_code(&mut bob, "alice/#").await, granted);
    assert_eq!(sub_code(&mut anon, "public/#").await, granted);
    assert_eq!(
        sub_code(&mut alice, "public/#").await,
        SubscribeReasonCode::NotAuthorized,
        "alice's section has no public rule"
    );
    assert_eq!(
        sub_code(&mut alice, "alice/#").await,
        SubscribeReasonCode::NotAuthorized,
        "alice/# can match alice/secret/..., which a deny rule forbids"
    );
    assert_eq!(sub_code(&mut alice, "alice/inbox/+").await, granted);

    assert_eq!(
        pub_code(&mut alice, "alice/secret/plan", b"hidden").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        pub_code(&mut bob, "alice/forged", b"forged").await,
        PubAckReason::NotAuthorized
    );
    assert_eq!(
        pubrec_code(&mut alice, "alice/secret/qos2").await,
        PubRecReason::NotAuthorized,
        "QoS 2: PUBREC 0x87"
    );
    assert_eq!(
        pub_code(&mut anon, "public/x", b"anon").await,
        PubAckReason::NotAuthorized,
        "anonymous clients may only read public/#"
    );
    assert_eq!(
        pub_code(&mut alice, "alice/news", b"hello").await,
        PubAckReason::Success
    );
    // Bob gets the allowed message and nothing that was refused before it.
    let p = bob.next_publish().await;
    assert_eq!(
        (&p.topic[..], &p.payload[..]),
        (&b"alice/news"[..], &b"hello"[..])
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_on_mqtt_311_refuses_subscribe_with_0x80_and_drops_publish() {
    let dir = TempDir::new("acl-v4");
    let (b, _) = broker_with(RULES, &dir).await;
    let mut bob = v5_as(&b, "bob-4", Some("bob")).await;
    assert_eq!(
        sub_code(&mut bob, "alice/#").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    let mut alice = v4::Client::connect(b.port(), "alice-4", |o| {
        o.set_credentials("alice", "");
    })
    .await;
    alice
        .client
        .subscribe("public/#", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        if let rumqttc::Packet::SubAck(s) = alice.next().await {
            assert_eq!(s.return_codes, vec![rumqttc::SubscribeReasonCode::Failure]);
            break;
        }
    }
    // 3.1.1 cannot refuse a PUBLISH: the broker acknowledges it and drops it.
    for (topic, payload) in [("alice/secret/x", "dropped"), ("alice/ok", "delivered")] {
        alice
            .client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
        loop {
            if let rumqttc::Packet::PubAck(_) = alice.next().await {
                break;
            }
        }
    }
    let p = bob.next_publish().await;
    assert_eq!(
        &p.payload[..],
        b"delivered",
        "the refused publish was dropped"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_substitute_user_name_and_client_id() {
    let dir = TempDir::new("acl-patterns");
    let (b, _) = broker_with(RULES, &dir).await;
    let mut carol = v5_as(&b, "dev-7", Some("carol")).await;
    assert_eq!(
        pub_code(&mut carol, "devices/dev-7/temp", b"21").await,
        PubAckReason::NoMatchingSubscribers
    );
    assert_eq!(
        pub_code(&mut carol, "devices/dev-8/temp", b"21").await,
        PubAckReason::NotAuthorized
    );
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    assert_eq!(sub_code(&mut carol, "users/carol/inbox").await, granted);
    assert_eq!(
        sub_code(&mut carol, "users/dave/inbox").await,
        SubscribeReasonCode::NotAuthorized
    );
    // No user name: %u patterns do not apply; %c ones do.
    let mut anon = v5_as(&b, "dev-9", None).await;
    assert_eq!(
        sub_code(&mut anon, "users/+/inbox").await,
        SubscribeReasonCode::NotAuthorized
    );
    assert_eq!(sub_code(&mut anon, "devices/dev-9/#").await, granted);
    // A client id with a wildcard gains nothing from %c.
    let mut sly = v5_as(&b, "+", Some("sly")).await;
    assert_eq!(
        sub_code(&mut sly, "devices/+/#").await,
        SubscribeReasonCode::NotAuthorized
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_groups_are_checked_and_their_filter_needs_read() {
    let dir = TempDir::new("acl-share");
    let (b, _) = broker_with(
        "topic read jobs/#\ntopic write jobs/#\nshare deny admin*\n",
        &dir,
    )
    .await;
    let mut worker = v5_as(&b, "worker", None).await;
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    assert_eq!(
        sub_code(&mut worker, "$share/workers/jobs/#").await,
        granted
    );
    assert_eq!(
        sub_code(&mut worker, "$share/admins/jobs/#").await,
        SubscribeReasonCode::NotAuthorized,
        "share deny admin*"
    );
    assert_eq!(
        sub_code(&mut worker, "$share/workers/other/#").await,
        SubscribeReasonCode::NotAuthorized,
        "the filter itself needs read access"
    );
    let mut producer = v5_as(&b, "producer", None).await;
    assert_eq!(
        pub_code(&mut producer, "jobs/1", b"work").await,
        PubAckReason::Success
    );
    assert_eq!(&worker.next_publish().await.payload[..], b"work");
    b.stop().await;
}

async fn post(addr: SocketAddr, path: &str, token: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut r = String::new();
    tokio::time::timeout(switchboard_tests::WAIT, s.read_to_string(&mut r))
        .await
        .expect("answer")
        .expect("read");
    let status = r
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_rules_without_restart_and_a_broken_file_keeps_the_old_ones() {
    let dir = TempDir::new("acl-reload");
    let (b, path) = broker_with("topic read a/#\n", &dir).await;
    let admin = b.handle.addrs().admin.expect("admin");
    let mut c = v5_as(&b, "reloader", None).await;
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    assert_eq!(
        sub_code(&mut c, "b/#").await,
        SubscribeReasonCode::NotAuthorized
    );

    std::fs::write(&path, "topic read a/#\ntopic read b/#\n").expect("rewrite");
    let (status, body) = post(admin, "/api/v1/acl/reload", "t0ken").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"rules\":2"), "{body}");
    assert_eq!(sub_code(&mut c, "b/#").await, granted, "new rule applies");

    std::fs::write(&path, "topic read c/#\ntopic maybe\nfrobnicate\n").expect("break");
    let (status, body) = post(admin, "/api/v1/acl/reload", "t0ken").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains(&format!("{}:3:", path.display())),
        "file:line: {body}"
    );
    assert_eq!(sub_code(&mut c, "b/#").await, granted, "old rules stay");
    assert_eq!(
        sub_code(&mut c, "c/#").await,
        SubscribeReasonCode::NotAuthorized
    );
    let (status, _) = post(admin, "/api/v1/acl/reload", "wrong").await;
    assert_eq!(status, 401);

    // The reload hook the binary's SIGHUP handler calls.
    std::fs::write(&path, "topic read c/#\n").expect("fix");
    let acl = b.handle.state().acl_file.clone().expect("acl file");
    assert_eq!(acl.reload().expect("valid file"), 1);
    assert_eq!(sub_code(&mut c, "c/#").await, granted);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_v5_subscribe_refused_by_acl_gets_0x87() {
    let dir = TempDir::new("acl-paho");
    let (b, _) = broker_with(RULES, &dir).await;
    let args = vec!["--port".to_string(), b.port().to_string()];
    switchboard_tests::run_python_suite("paho_acl.py", args).await;
    b.stop().await;
}

/// A programmatic hook (as the IM layer registers per-tenant rules) composed with the file.
struct NoTenantB;

impl switchboard_broker::auth::Acl for NoTenantB {
    fn allowed(
        &self,
        _who: &switchboard_broker::auth::Identity,
        _action: switchboard_broker::auth::Action,
        topic: &str,
    ) -> bool {
        !topic.starts_with("tenant-b/")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_hook_composes_with_the_acl_file() {
    let dir = TempDir::new("acl-hook");
    let path = dir.path().join("acl");
    std::fs::write(&path, "topic read tenant-a/#\ntopic read tenant-b/#\n").expect("write");
    let cfg = switchboard_broker::BrokerConfig {
        listeners: switchboard_broker::Listeners {
            tcp: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..Default::default()
        },
        allow_anonymous: true,
        sys_interval: 0,
        acl_file: Some(path),
        ..Default::default()
    };
    let handle = switchboard_broker::Broker::new(cfg)
        .add_acl(std::sync::Arc::new(NoTenantB))
        .start()
        .await
        .expect("starts");
    let addr = handle.tcp_addrs()[0];
    let b = TestBroker { handle, addr };
    let mut c = v5_as(&b, "hooked", None).await;
    assert_eq!(
        sub_code(&mut c, "tenant-a/#").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    assert_eq!(
        sub_code(&mut c, "tenant-b/#").await,
        SubscribeReasonCode::NotAuthorized,
        "the file allows it, the hook does not"
    );
    assert_eq!(
        sub_code(&mut c, "tenant-c/#").await,
        SubscribeReasonCode::NotAuthorized,
        "the hook allows it, the file does not"
    );
    b.stop().await;
}
