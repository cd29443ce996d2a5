//! Crash test: the broker runs as a child process and is killed with SIGKILL at random
//! moments while two publishers send numbered QoS 1 and QoS 2 messages to an offline
//! persistent subscriber. After the last restart the subscriber must get every message
//! whose PUBACK (QoS 1) or PUBCOMP (QoS 2) its publisher saw: QoS 1 at least once, QoS 2
//! exactly once, each publisher's messages in order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::*;
use switchboard_tests::process::BrokerProcess;
use switchboard_tests::{RawClient, TempDir, connect_packet, persistent_connect};

const CYCLES: usize = 4;
const WINDOW: usize = 16;

async fn start_broker(dir: &std::path::Path) -> BrokerProcess {
    BrokerProcess::start(
        env!("CARGO_BIN_EXE_switchboard"),
        dir,
        &["--allow-anonymous"],
        &[(
            "SWITCHBOARD__BROKER__LIMITS__MAX_QUEUED_MESSAGES",
            "1000000",
        )],
    )
    .await
}

/// A tiny deterministic generator, seeded per run and printed for reproduction.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Publishes numbered messages from `first` until the connection dies; returns the numbers
/// acknowledged (PUBACK for QoS 1, PUBCOMP for QoS 2) and the next unused number.
async fn publisher(addr: SocketAddr, id: &'static str, qos: QoS, first: u32) -> (Vec<u32>, u32) {
    let (mut c, ack) = RawClient::connect_or_closed(addr, connect_packet(Version::V5, id)).await;
    let mut acked = Vec::new();
    if !matches!(ack, Some(Packet::ConnAck(_))) {
        return (acked, first);
    }
    let mut next = first;
    let mut inflight: HashMap<u16, u32> = HashMap::new();
    loop {
        while inflight.len() < WINDOW {
            let pkid = (next % 60_000) as u16 + 1;
            inflight.insert(pkid, next);
            c.send(&Packet::Publish(Publish {
                dup: false,
                qos,
                retain: false,
                topic: format!("crash/{id}"),
                pkid,
                properties: Properties::default(),
                payload: Bytes::from(next.to_string()),
            }))
            .await;
            next += 1;
        }
        match c.recv_within(Duration::from_secs(5)).await {
            Ok(Some(Packet::PubAck(a))) => {
                assert_eq!(a.code, ReasonCode::Success, "QoS 1 refused: {a:?}");
                acked.extend(inflight.remove(&a.pkid));
            }
            Ok(Some(Packet::PubRec(r))) => {
                assert_eq!(r.code, ReasonCode::Success, "QoS 2 refused: {r:?}");
                c.send(&Packet::PubRel(PubResponse::new(r.pkid))).await;
            }
            Ok(Some(Packet::PubComp(r))) => acked.extend(inflight.remove(&r.pkid)),
            Ok(Some(_)) => {}
            Ok(None) | Err(()) => return (acked, next),
        }
    }
}

fn persistent_sub() -> Connect {
    persistent_connect("crash-sub", 3600)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9() {
    let dir = TempDir::new("crash");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("crash test seed {seed}");
    let mut rng = XorShift(seed);

    let broker = start_broker(dir.path()).await;
    let (mut sub, _) = RawClient::connect(broker.addr, persistent_sub()).await;
    sub.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(
            "crash/#".into(),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                ..Default::default()
            },
        )],
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    sub.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    sub.expect_closed().await;

    let mut acked: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
    let mut next = [0u32; 2];
    let mut broker = Some(broker);
    for cycle in 0..CYCLES {
        let b = match broker.take() {
            Some(b) => b,
            None => start_broker(dir.path()).await,
        };
        let p1 = tokio::spawn(publisher(b.addr, "q1", QoS::AtLeastOnce, next[0]));
        let p2 = tokio::spawn(publisher(b.addr, "q2", QoS::ExactlyOnce, next[1]));
        let lifetime = 150 + rng.next() % 600;
        tokio::time::sleep(Duration::from_millis(lifetime)).await;
        b.kill9().await;
        let (a1, n1) = p1.await.expect("publisher 1");
        let (a2, n2) = p2.await.expect("publisher 2");
        println!(
            "cycle {cycle}: killed after {lifetime} ms; acked {} QoS 1, {} QoS 2",
            a1.len(),
            a2.len()
        );
        acked[0].extend(a1);
        acked[1].extend(a2);
        next = [n1, n2];
    }
    assert!(
        !acked[0].is_empty() && !acked[1].is_empty(),
        "publishers got nothing acknowledged"
    );

    let b = start_broker(dir.path()).await;
    let (mut sub, ack) = RawClient::connect(b.addr, persistent_sub()).await;
    assert!(matches!(ack, Packet::ConnAck(a) if a.session_present));
    let mut got: HashMap<String, Vec<u32>> = HashMap::new();
    loop {
        match sub.recv_within(Duration::from_secs(3)).await {
            Ok(Some(Packet::Publish(p))) => {
                let n: u32 = std::str::from_utf8(&p.payload)
                    .expect("utf8")
                    .parse()
                    .expect("number");
                got.entry(p.topic.clone()).or_default().push(n);
                match p.qos {
                    QoS::AtLeastOnce => sub.send(&Packet::PubAck(PubResponse::new(p.pkid))).await,
                    QoS::ExactlyOnce => sub.send(&Packet::PubRec(PubResponse::new(p.pkid))).await,
                    QoS::AtMostOnce => {}
                }
            }
            Ok(Some(Packet::PubRel(r))) => {
                sub.send(&Packet::PubComp(PubResponse::new(r.pkid))).await
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("broker closed the subscriber"),
            Err(()) => break,
        }
    }
    let q1 = got.remove("crash/q1").unwrap_or_default();
    let q2 = got.remove("crash/q2").unwrap_or_default();
    for n in &acked[0] {
        assert!(
            q1.contains(n),
            "QoS 1 message {n} was acknowledged but lost (seed {seed})"
        );
    }
    for n in &acked[1] {
        assert_eq!(
            q2.iter().filter(|&&x| x == *n).count(),
            1,
            "QoS 2 message {n} not delivered exactly once (seed {seed})"
        );
    }
    let mut dedup = q2.clone();
    dedup.sort_unstable();
    dedup.dedup();
    assert_eq!(dedup.len(), q2.len(), "QoS 2 duplicates (seed {seed})");
    for (name, seq) in [("QoS 1", &q1), ("QoS 2", &q2)] {
        let mut firsts = Vec::new();
        for n in seq.iter() {
            if !firsts.contains(n) {
                firsts.push(*n);
            }
        }
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]),
            "{name} out of order (seed {seed})"
        );
    }
    println!(
        "delivered {} QoS 1 ({} acked), {} QoS 2 ({} acked)",
        q1.len(),
        acked[0].len(),
        q2.len(),
        acked[1].len()
    );
    b.kill9().await;
}
