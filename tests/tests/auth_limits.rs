//! Password checking is no denial-of-service lever and tells nothing about which users
//! exist: a brute-force flood from one address is throttled while another client logs in,
//! and unknown and wrong users get the same answer.
//!
//! Loopback has a whole /8, so the "attacker" connects from 127.0.0.2 and the legitimate
//! client from 127.0.0.1: two source addresses on one machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use switchboard_proto::{Connect, Packet, ReasonCode, Version};
use switchboard_tests::{TempDir, TestBroker, WAIT, connect_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends CONNECT from `source` and returns the CONNACK code (`None` if the broker closed).
async fn connect_from(source: [u8; 4], broker: SocketAddr, c: Connect) -> Option<ReasonCode> {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::from((source, 0)))
        .expect("bind source");
    let mut s = sock.connect(broker).await.expect("connect");
    let version = c.version;
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(c)).encode(version, &mut out);
    s.write_all(&out).await.ok()?;
    let mut buf = BytesMut::new();
    let read = async {
        loop {
            if let Some(p) = Packet::read(&mut buf, version, usize::MAX).expect("well-formed") {
                return Some(p);
            }
            if s.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
        }
    };
    match tokio::time::timeout(WAIT, read)
        .await
        .expect("CONNACK in time")
    {
        Some(Packet::ConnAck(a)) => Some(a.code),
        _ => None,
    }
}

fn login(version: Version, id: &str, user: &str, password: Option<&'static [u8]>) -> Connect {
    Connect {
        username: Some(user.into()),
        password: password.map(Bytes::from_static),
        ..connect_packet(version, id)
    }
}

async fn locked_broker(dir: &TempDir) -> TestBroker {
    let file = dir.path().join("passwd");
    let hash = switchboard_broker::auth::hash_password("right").expect("hash");
    std::fs::write(&file, format!("dev:{hash}\n")).expect("write");
    TestBroker::start_with(move |c| {
        c.allow_anonymous = false;
        c.password_file = Some(file);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_from_one_address_does_not_lock_out_another_client() {
    let dir = TempDir::new("brute");
    let b = locked_broker(&dir).await;
    let addr = b.addr;
    let attempts = Arc::new(AtomicUsize::new(0));
    let throttled = Arc::new(AtomicUsize::new(0));
    let legit_done = Arc::new(AtomicBool::new(false));
    // 16 attackers in parallel, until 1,000 attempts are made and the legitimate login
    // has finished, so that the two overlap.
    let mut flood = Vec::new();
    for t in 0..16 {
        let (attempts, throttled, legit_done) =
            (attempts.clone(), throttled.clone(), legit_done.clone());
        flood.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            loop {
                let n = attempts.fetch_add(1, Ordering::Relaxed);
                if n >= 1000 && legit_done.load(Ordering::Acquire) {
                    return codes;
                }
                let c = login(Version::V5, &format!("att-{t}-{n}"), "dev", Some(b"guess"));
                let code = connect_from([127, 0, 0, 2], addr, c).await;
                if matches!(
                    code,
                    Some(ReasonCode::ConnectionRateExceeded | ReasonCode::ServerBusy)
                ) {
                    throttled.fetch_add(1, Ordering::Relaxed);
                }
                codes.push(code);
            }
        }));
    }
    // Wait until the flood is being throttled, then log in from another address.
    tokio::time::timeout(WAIT, async {
        while throttled.load(Ordering::Relaxed) < 50 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the flood is throttled");
    let code = connect_from(
        [127, 0, 0, 1],
        addr,
        login(Version::V5, "legit", "dev", Some(b"right")),
    )
    .await;
    let during = attempts.load(Ordering::Relaxed);
    legit_done.store(true, Ordering::Release);
    assert_eq!(
        code,
        Some(ReasonCode::Success),
        "the right password gets in"
    );

    let mut codes = Vec::new();
    for f in flood {
        codes.extend(f.await.expect("attacker task"));
    }
    assert!(codes.len() >= 1000, "{} attempts", codes.len());
    assert!(
        codes.iter().all(|c| matches!(
            c,
            Some(
                ReasonCode::BadUserNameOrPassword
                    | ReasonCode::ConnectionRateExceeded
                    | ReasonCode::ServerBusy
            )
        )),
        "no guess succeeded and every one was answered"
    );
    let verified = b
        .handle
        .state()
        .verifier
        .stats
        .verified
        .load(Ordering::Relaxed);
    assert!(
        verified < 100,
        "back-off: only {verified} of {} guesses were hashed",
        codes.len()
    );
    assert!(during > 50, "the login happened while the flood ran");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_wrong_users_get_the_same_answer() {
    let dir = TempDir::new("enum");
    let b = locked_broker(&dir).await;
    // Each check from its own address, so back-off cannot make answers differ.
    let cases: [(Version, &str, Option<&'static [u8]>); 6] = [
        (Version::V5, "dev", Some(b"wrong")),
        (Version::V5, "nobody", Some(b"wrong")),
        (Version::V5, "nobody", None),
        (Version::V3_1_1, "dev", Some(b"wrong")),
        (Version::V3_1_1, "nobody", Some(b"wrong")),
        (Version::V3_1_1, "dev", None),
    ];
    for (i, (version, user, password)) in cases.into_iter().enumerate() {
        let source = [127, 0, 1, i as u8 + 1];
        let code = connect_from(source, b.addr, login(version, "probe", user, password))
            .await
            .expect("CONNACK");
        assert_eq!(
            code,
            ReasonCode::BadUserNameOrPassword,
            "{version:?} {user}"
        );
        if version == Version::V3_1_1 {
            assert_eq!(code.v3_connack_code(), 4);
        }
    }
    let ok = connect_from(
        [127, 0, 1, 100],
        b.addr,
        login(Version::V3_1_1, "ok", "dev", Some(b"right")),
    )
    .await;
    assert_eq!(ok, Some(ReasonCode::Success));
    b.stop().await;
}
