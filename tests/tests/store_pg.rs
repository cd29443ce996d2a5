//! The PostgreSQL store against a real server (a private one per test, see
//! `switchboard_tests::postgres`): the store contract the redb and memory stores keep,
//! migrations, the broker end to end across restarts (persistent QoS 1/2 queues, retained
//! messages, incoming QoS 2 state, an IM 1:1 conversation), and PostgreSQL stopped under
//! load: no acknowledgement for what was not committed, recovery once it is back.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_broker::im::ImService;
use switchboard_broker::store::postgres::PgStore;
use switchboard_broker::store::{Store, StoreError, conformance};
use switchboard_broker::{Broker, BrokerConfig};
use switchboard_proto::*;
use switchboard_tests::im::{Device, ImBroker, SERVICE_SECRET, text_of};
use switchboard_tests::postgres::Postgres;
use switchboard_tests::raw::{connack, message as publish, subscribe_acked as subscribe};
use switchboard_tests::{RawClient, TempDir, TestBroker, connect_packet, persistent_connect};

/// A server, or `None` (the test then returns: see `Postgres::start`).
fn server() -> Option<Arc<Postgres>> {
    Postgres::start().map(Arc::new)
}

fn open(url: &str) -> Arc<PgStore> {
    Arc::new(PgStore::open(url, 0).expect("PostgreSQL store opens"))
}

/// A broker (anonymous clients, `$SYS` off) on `store`, on `port` (0: any).
async fn broker_on(store: Arc<PgStore>, port: u16) -> TestBroker {
    let cfg = BrokerConfig {
        listeners: switchboard_broker::Listeners {
            tcp: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
            ..Default::default()
        },
        allow_anonymous: true,
        sys_interval: 0,
        ..BrokerConfig::default()
    };
    let handle = Broker::new(cfg)
        .with_store(store)
        .start()
        .await
        .expect("broker starts");
    let addr = handle.tcp_addrs()[0];
    TestBroker { handle, addr }
}

async fn leave(mut c: RawClient) {
    c.send(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))
        .await;
    c.expect_closed().await;
}

#[test]
fn postgres_store_keeps_the_store_contract_and_survives_reopen() {
    let Some(pg) = server() else { return };
    let url = pg.create_db("contract");
    {
        let s = PgStore::open(&url, 0).expect("opens");
        conformance::all(&s);
        assert!(s.healthy());
        let mut metrics = String::new();
        s.write_metrics(&mut metrics);
        assert!(metrics.contains("switchboard_pg_link_up 1"), "{metrics}");
        assert!(
            metrics.contains("switchboard_pg_commit_seconds_count"),
            "{metrics}"
        );
    }
    let s = PgStore::open(&url, 0).expect("reopens");
    conformance::after_reopen(&s);
    // One body row for the message four queue rows delivered; acknowledged ones are gone
    // from the queue.
    assert_eq!(
        pg.sql("contract", "SELECT count(*) FROM mqtt_queue WHERE uid = 2"),
        "1"
    );
    assert_eq!(
        pg.sql(
            "contract",
            "SELECT count(DISTINCT payload) FROM mqtt_queue WHERE uid = 2"
        ),
        "1"
    );
}

#[test]
fn migrations_run_once_and_a_newer_schema_is_refused() {
    let Some(pg) = server() else { return };
    let url = pg.create_db("migrations");
    drop(PgStore::open(&url, 0).expect("first open migrates"));
    drop(PgStore::open(&url, 0).expect("second open finds it migrated"));
    assert_eq!(
        pg.sql("migrations", "SELECT count(*) FROM sb_migrations"),
        // One row per migration (2: the cluster session registry), each applied once.
        "2"
    );
    pg.sql(
        "migrations",
        "INSERT INTO sb_migrations VALUES (999, 'from the future', 0)",
    );
    match PgStore::open(&url, 0) {
        Err(StoreError::Foreign { reason, .. }) => {
            assert!(reason.contains("999"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let bad = PgStore::open("postgres://postgres@127.0.0.1:1/none", 0)
        .expect_err("nothing listens on port 1");
    assert!(matches!(bad, StoreError::Io(_)), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_queues_retained_and_qos2_state_survive_a_restart_on_postgres() {
    let Some(pg) = server() else { return };
    let url = pg.create_db("restart");
    let b = broker_on(open(&url), 0).await;
    let (mut s, _) = connack(&b, persistent_connect("keeper", 600)).await;
    subscribe(&mut s, "keep/#", QoS::ExactlyOnce).await;
    leave(s).await;
    let (mut p, _) = connack(&b, connect_packet(Version::V5, "p")).await;
    p.send(&publish("keep/r", QoS::AtLeastOnce, 1, true, b"retained"))
        .await;
    assert!(matches!(p.recv().await, Some(Packet::PubAck(a)) if a.code == ReasonCode::Success));
    for (i, payload) in [&b"q1"[..], b"q2", b"q3"].into_iter().enumerate() {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        p.send(&publish("keep/q", qos, 10 + i as u16, false, payload))
            .await;
        p.recv().await.expect("ack");
    }
    p.send(&Packet::PubRel(PubResponse::new(11))).await;
    assert!(matches!(p.recv().await, Some(Packet::PubComp(_))));
    // An incoming QoS 2 message whose PUBREL comes only after the restart.
    let (mut q2, _) = connack(&b, persistent_connect("q2-sender", 600)).await;
    q2.send(&publish(
        "keep/x",
        QoS::ExactlyOnce,
        20,
        false,
        b"exactly once",
    ))
    .await;
    assert!(matches!(q2.recv().await, Some(Packet::PubRec(_))));
    drop(q2);
    let port = b.port();
    b.stop().await;

    let b = broker_on(open(&url), port).await;
    // The sender resends (DUP) and releases: stored once, delivered once.
    let (mut q2, ack) = connack(&b, persistent_connect("q2-sender", 600)).await;
    assert!(ack.session_present);
    let resend = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "keep/x".into(),
        pkid: 20,
        properties: Properties::default(),
        payload: Bytes::from_static(b"exactly once"),
    };
    q2.send(&Packet::Publish(resend)).await;
    assert!(matches!(q2.recv().await, Some(Packet::PubRec(_))));
    q2.send(&Packet::PubRel(PubResponse::new(20))).await;
    assert!(matches!(q2.recv().await, Some(Packet::PubComp(_))));
    let (mut s, ack) = connack(&b, persistent_connect("keeper", 600)).await;
    assert!(ack.session_present, "session restored from PostgreSQL");
    // Acknowledge as a client does; the broker may send the next PUBLISH before a PUBREL.
    let mut got = Vec::new();
    let mut open_qos2 = 0;
    while got.len() < 5 || open_qos2 > 0 {
        match s.recv().await.expect("connection open") {
            Packet::Publish(m) => {
                match m.qos {
                    QoS::AtLeastOnce => s.send(&Packet::PubAck(PubResponse::new(m.pkid))).await,
                    QoS::ExactlyOnce => {
                        open_qos2 += 1;
                        s.send(&Packet::PubRec(PubResponse::new(m.pkid))).await;
                    }
                    QoS::AtMostOnce => {}
                }
                got.push(m.payload);
            }
            Packet::PubRel(r) => {
                open_qos2 -= 1;
                s.send(&Packet::PubComp(PubResponse::new(r.pkid))).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        got,
        [&b"retained"[..], b"q1", b"q2", b"q3", b"exactly once"],
        "queued in order, the QoS 2 message once"
    );
    assert!(
        s.recv_within(Duration::from_millis(300)).await.is_err(),
        "nothing delivered twice"
    );
    let (mut late, _) = connack(&b, connect_packet(Version::V5, "late")).await;
    subscribe(&mut late, "keep/r", QoS::AtMostOnce).await;
    let r = late.next_publish().await;
    assert!(r.retain && &r.payload[..] == b"retained");
    leave(s).await;
    let port = b.port();
    b.stop().await;
    // Acknowledged deliveries do not come back after another restart.
    let b = broker_on(open(&url), port).await;
    let (mut s, ack) = connack(&b, persistent_connect("keeper", 600)).await;
    assert!(ack.session_present);
    assert!(
        s.recv_within(Duration::from_millis(300)).await.is_err(),
        "an acknowledged message came back"
    );
    b.stop().await;
}

/// An IM broker whose state is in PostgreSQL.
async fn im_broker(url: &str, port: u16) -> ImBroker {
    let store = open(url);
    let cfg = BrokerConfig {
        listeners: switchboard_broker::Listeners {
            tcp: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
            ..Default::default()
        },
        allow_anonymous: true,
        sys_interval: 0,
        ..BrokerConfig::default()
    };
    let im = ImService::new(store.clone(), Some(SERVICE_SECRET.into()));
    let handle = Broker::new(cfg)
        .with_store(store)
        .with_im(im.clone())
        .start()
        .await
        .expect("broker starts");
    let addr = handle.tcp_addrs()[0];
    ImBroker {
        handle,
        addr,
        im,
        dir: Arc::new(TempDir::new("im-pg")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn im_one_to_one_syncs_every_acknowledged_message_once_after_a_restart() {
    let Some(pg) = server() else { return };
    let url = pg.create_db("im");
    let b = im_broker(&url, 0).await;
    let t = b.tenant("acme").await;
    b.user(t, "alice").await;
    b.user(t, "bob").await;
    let alice = b.device(t, "alice", "alice-1").await;
    for i in 1..=20u64 {
        let r = alice
            .client
            .send_text("bob", &format!("m{i}"), &format!("hello {i}"))
            .await
            .expect("sent");
        assert_eq!((r.seq, r.duplicate), (i, false));
    }
    drop(alice);
    let port = b.addr.port();
    b.handle.shutdown().await;
    drop(b);

    let b = im_broker(&url, port).await;
    let token = b.im.issue_token(t, "alice", "", 3600).expect("token");
    let alice = Device::connect(b.addr, "alice", "alice-1", &token).await;
    // Resends after the restart are recognised: same seq, nothing stored twice.
    for i in 16..=20u64 {
        let r = alice
            .client
            .send_text("bob", &format!("m{i}"), &format!("hello {i}"))
            .await
            .expect("resent");
        assert_eq!((r.seq, r.duplicate), (i, true));
    }
    for i in 21..=25u64 {
        let r = alice
            .client
            .send_text("bob", &format!("m{i}"), &format!("hello {i}"))
            .await
            .expect("sent");
        assert_eq!((r.seq, r.duplicate), (i, false));
    }
    let token = b.im.issue_token(t, "bob", "", 3600).expect("token");
    let bob = Device::connect(b.addr, "bob", "bob-1", &token).await;
    let mut cursors = HashMap::new();
    let (messages, last) = bob.client.sync_all(&mut cursors).await.expect("sync");
    let got: Vec<(u64, String)> = messages
        .iter()
        .map(|m| (m.seq, text_of(m).to_owned()))
        .collect();
    let want: Vec<(u64, String)> = (1..=25).map(|i| (i, format!("hello {i}"))).collect();
    assert_eq!(got, want, "every message once, seq without gaps");
    assert_eq!(last.unread_total, 25);
    b.stop().await;
}

/// Publishes message `i` at QoS 1 and waits for its PUBACK (one message in flight, so each
/// PUBACK answers exactly one message); true if it was acknowledged as stored.
async fn send(p: &mut RawClient, i: u32) -> bool {
    let pkid = (i % 60_000 + 1) as u16;
    p.send(&publish(
        "load/x",
        QoS::AtLeastOnce,
        pkid,
        false,
        format!("m{i}").as_bytes(),
    ))
    .await;
    match p.recv_within(Duration::from_secs(30)).await {
        Ok(Some(Packet::PubAck(a))) => {
            assert_eq!(a.pkid, pkid);
            a.code == ReasonCode::Success
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_load_gets_no_false_ack_and_the_broker_recovers() {
    let Some(pg) = server() else { return };
    let url = pg.create_db("outage");
    let store = open(&url);
    let b = broker_on(store.clone(), 0).await;
    let (mut sink, _) = connack(&b, persistent_connect("sink", 600)).await;
    subscribe(&mut sink, "load/#", QoS::AtLeastOnce).await;
    leave(sink).await;
    let (mut p, _) = connack(&b, connect_packet(Version::V5, "loader")).await;
    let mut acked = BTreeSet::new();
    let mut refused = 0u32;
    let mut i: u32 = 0;
    while acked.len() < 50 {
        assert!(
            send(&mut p, i).await,
            "PostgreSQL is up: message {i} acknowledged"
        );
        acked.insert(i);
        i += 1;
    }
    // PostgreSQL goes away while messages keep coming.
    let stopper = {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.stop())
    };
    while !stopper.is_finished() || refused < 5 {
        if send(&mut p, i).await {
            acked.insert(i);
        } else {
            refused += 1;
        }
        i += 1;
    }
    stopper.await.expect("stopped");
    assert!(!store.healthy(), "the store knows it is failing");
    assert!(store.stats().failed_commits > 0);
    // Back again: publishes are acknowledged again without restarting the broker.
    let starter = {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.restart())
    };
    starter.await.expect("restarted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut after = 0;
    while after < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery within 60 s"
        );
        if send(&mut p, i).await {
            acked.insert(i);
            after += 1;
        }
        i += 1;
    }
    assert!(store.healthy());
    let mut metrics = String::new();
    store.write_metrics(&mut metrics);
    assert!(metrics.contains("switchboard_pg_link_up 1"), "{metrics}");
    assert!(
        !metrics.contains("switchboard_pg_reconnects_total 0"),
        "{metrics}"
    );
    let port = b.port();
    drop(store);
    b.stop().await;

    // Every acknowledged message is in the sink's queue, in order.
    let b = broker_on(open(&url), port).await;
    let (mut sink, ack) = connack(&b, persistent_connect("sink", 600)).await;
    assert!(ack.session_present);
    let mut seen = Vec::new();
    let mut missing = acked.clone();
    while !missing.is_empty() {
        let m = sink.next_publish().await;
        sink.send(&Packet::PubAck(PubResponse::new(m.pkid))).await;
        let n: u32 = std::str::from_utf8(&m.payload)
            .ok()
            .and_then(|s| s.strip_prefix('m'))
            .and_then(|s| s.parse().ok())
            .expect("a load message");
        missing.remove(&n);
        seen.push(n);
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "queued in order: {seen:?}"
    );
    eprintln!(
        "{} acknowledged, {refused} refused while PostgreSQL was down, {} delivered",
        acked.len(),
        seen.len()
    );
    b.stop().await;
}
