//! Outgoing QoS 2 to a persistent session (issue 11, item 14): the packet identifier is
//! durable before the PUBLISH reaches the client. A store whose commits of that state are
//! slow (as a slow fsync would be) shows the order: when the client sees the PUBLISH, the
//! store already has its packet id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_broker::store::memory::MemoryStore;
use switchboard_broker::store::{
    Done, LogEntry, Op, Record, Sent, Snapshot, Store, StoreError, StoreStats, Table,
};
use switchboard_broker::{Broker, BrokerConfig};
use switchboard_proto::*;
use switchboard_tests::{RawClient, connect_packet, persistent_connect};

/// A MemoryStore whose transactions recording a sent packet id commit 300 ms late.
struct SlowMarks(Arc<MemoryStore>);

impl Store for SlowMarks {
    fn write(&self, ops: Vec<Op>, done: Option<Done>) {
        if ops.iter().any(|o| matches!(o, Op::MarkSent { .. })) {
            let inner = self.0.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                inner.write(ops, done);
            });
        } else {
            self.0.write(ops, done);
        }
    }
    fn congested(&self) -> bool {
        self.0.congested()
    }
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.0.load()
    }
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(table, key)
    }
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.0.scan(table, prefix, after, limit)
    }
    fn log_range(
        &self,
        log: &[u8],
        from: u64,
        to: u64,
        limit: usize,
        backwards: bool,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.0.log_range(log, from, to, limit, backwards)
    }
    fn log_last(&self, log: &[u8]) -> Result<u64, StoreError> {
        self.0.log_last(log)
    }
    fn healthy(&self) -> bool {
        self.0.healthy()
    }
    fn over_budget(&self, extra: u64) -> bool {
        self.0.over_budget(extra)
    }
    fn stats(&self) -> StoreStats {
        self.0.stats()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_packet_id_is_durable_before_the_publish_is_written() {
    let mem = Arc::new(MemoryStore::new());
    let cfg = BrokerConfig {
        listeners: switchboard_broker::Listeners {
            tcp: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..Default::default()
        },
        allow_anonymous: true,
        sys_interval: 0,
        ..BrokerConfig::default()
    };
    let h = Broker::new(cfg)
        .with_store(Arc::new(SlowMarks(mem.clone())))
        .start()
        .await
        .expect("starts");
    let addr = h.tcp_addrs()[0];
    let (mut s, _) = RawClient::connect(addr, persistent_connect("q2sub", 600)).await;
    s.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::default(),
        filters: vec![(
            "q2/#".into(),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                ..Default::default()
            },
        )],
    }))
    .await;
    assert!(matches!(s.recv().await, Some(Packet::SubAck(_))));
    let (mut p, _) = RawClient::connect(addr, connect_packet(Version::V5, "q2pub")).await;
    for i in 0..3u16 {
        p.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "q2/x".into(),
            pkid: i + 1,
            properties: Properties::default(),
            payload: Bytes::from_static(b"exactly once"),
        }))
        .await;
        assert!(matches!(p.recv().await, Some(Packet::PubRec(_))));
        let got = s.next_publish().await;
        let snap = mem.load().expect("load");
        let uid = snap
            .sessions
            .iter()
            .find(|(c, _)| c == "q2sub")
            .map(|(_, r)| r.uid)
            .expect("session stored");
        let marked = snap
            .queues
            .get(&uid)
            .is_some_and(|q| q.iter().any(|(_, d)| d.sent == Sent::Published(got.pkid)));
        assert!(
            marked,
            "PUBLISH {} reached the client before its packet id was stored",
            got.pkid
        );
        s.send(&Packet::PubRec(PubResponse::new(got.pkid))).await;
        assert!(matches!(s.recv().await, Some(Packet::PubRel(_))));
        s.send(&Packet::PubComp(PubResponse::new(got.pkid))).await;
    }
    h.shutdown().await;
}
