//! Heap memory of an idle MQTT connection, counted exactly: this test binary's allocator
//! counts the bytes live at any moment, the broker runs in-process, and the clients are
//! blocking std sockets on their own thread (they allocate nothing per connection), so
//! the growth while connections are opened is what the broker keeps per idle connection:
//! its task and future, the socket registration, the session, the registry entries, and
//! any buffer it holds on to while idle.
//!
//! The bench's `idle` scenario measures the same from outside (process RSS, which adds
//! the allocator's rounding and page granularity); this test guards the budget in CI
//! without timing anything.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use bytes::BytesMut;
use cap::Cap;
use switchboard_proto::{Packet, Version};
use switchboard_tests::{TestBroker, WAIT, connect_packet};

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// Heap bytes an idle TCP connection may keep in the broker, in a debug build (the tests'
/// build, whose connection future is larger than a release build's). Raising it costs
/// memory for every idle connection (see bench/README.md, "idle memory"): shrink something
/// first. Measured 2,884 B when set (3,148 before the session's QoS 1/2 tables and topic
/// aliases moved behind one box allocated on first use), the connection parked (its
/// connected loop freed, see the broker's `connection::park`): the task with its parked
/// waiter (1 KB), the connection's state box (784 B: session state machine, connection,
/// socket halves), the session's mailbox and registry entries, the kick channel, the
/// socket registration and the operator view (`LiveInfo`).
const BUDGET_PER_CONNECTION: usize = 3040;
/// Connections opened before the baseline (thread-locals, slab pages, first allocations).
const WARM: usize = 200;
/// Connections measured.
const MEASURED: usize = 2000;

const PINGREQ: [u8; 2] = [0xC0, 0x00];
const PINGRESP: [u8; 2] = [0xD0, 0x00];

/// Opens connections `from..to`, each CONNECT → CONNACK, then PINGREQ → PINGRESP (the
/// broker's connected loop has run and read since CONNECT), and pushes them to `held`.
fn open(addr: SocketAddr, from: usize, to: usize, held: &mut Vec<TcpStream>) {
    for i in from..to {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        let mut b = BytesMut::new();
        Packet::Connect(Box::new(connect_packet(
            Version::V3_1_1,
            &format!("idle-{i}"),
        )))
        .encode(Version::V3_1_1, &mut b);
        s.write_all(&b).expect("send CONNECT");
        drop(b);
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).expect("CONNACK");
        assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "connection {i} accepted");
        ping(&mut s);
        held.push(s);
    }
}

fn ping(s: &mut TcpStream) {
    s.write_all(&PINGREQ).expect("send PINGREQ");
    let mut resp = [0u8; 2];
    s.read_exact(&mut resp).expect("PINGRESP");
    assert_eq!(resp, PINGRESP);
}

/// Waits until `n` connections are parked (quiet connections park after
/// `park_after_ms`); panics after [`WAIT`].
async fn until_parked(b: &TestBroker, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let parked = &b.handle.state().metrics.connections_parked;
    while parked.load(std::sync::atomic::Ordering::Relaxed) != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} connections parked, waiting for {n}",
            parked.load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connection_keeps_little_heap() {
    // Parked after 20 ms of quiet rather than the default second: the same state, sooner.
    let b = TestBroker::start_with(|c| c.limits.park_after_ms = 20).await;
    let addr = b.addr;
    let held = tokio::task::spawn_blocking(move || {
        let mut held = Vec::with_capacity(WARM + MEASURED);
        open(addr, 0, WARM, &mut held);
        held
    })
    .await
    .expect("warm-up");
    until_parked(&b, WARM as u64).await;
    let before = ALLOCATOR.allocated();
    let mut held = tokio::task::spawn_blocking(move || {
        let mut held = held;
        open(addr, WARM, WARM + MEASURED, &mut held);
        held
    })
    .await
    .expect("measured connections");
    until_parked(&b, (WARM + MEASURED) as u64).await;
    let after = ALLOCATOR.allocated();
    let per = after.saturating_sub(before) / MEASURED;
    println!("broker heap per idle TCP connection: {per} B ({MEASURED} connections)");
    // Still alive, every one of them.
    let held_back = tokio::task::spawn_blocking(move || {
        for s in &mut held {
            ping(s);
        }
        held
    })
    .await
    .expect("all alive");
    assert_eq!(held_back.len(), WARM + MEASURED);
    assert!(
        per <= BUDGET_PER_CONNECTION,
        "an idle TCP connection keeps {per} B of heap, over the budget of \
         {BUDGET_PER_CONNECTION} B"
    );
    drop(held_back);
    b.stop().await;
}
