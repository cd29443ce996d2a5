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
use switchboard_tests::{TestBroker, WAIT, connect_packet, until_parked};

#[global_allocator]
static ALLOCATOR: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// Heap bytes an idle TCP connection may keep in the broker, in a debug build (the tests'
/// build, whose connection future is larger than a release build's). Raising it costs
/// memory for every idle connection (see bench/README.md, "idle memory"): shrink something
/// first. Measured 1,002 B when set (1,036 before the parker kept its records inline in
/// chunked slots instead of a box each in a map; 1,053 before `LiveInfo` kept its transport as an
/// index and its subscriptions as an exact list, 1,084 before a kick was boxed in its
/// channel, 1,115 before the session registry's key and owner were boxed strings; 1,395 while a parked socket stayed registered with tokio's reactor,
/// which keeps a 256 B `ScheduledIo` per socket, before the parker watched parked sockets
/// with an `epoll` of its own; 1,459 before the compact form kept its rare session
/// tables in one box, the keep-alive as seconds and the subscriptions as an exact list;
/// 1,883 while the parker kept the connection's whole
/// state box, ~800 B, and the socket split in halves; 1,940 before the client id was kept
/// once; 2,884 while a parked connection kept its task and waiter, ~1 KB), the connection
/// parked in the broker's parker (`connection::parker`: no task, its record inline in one
/// table of fixed-size slots, its deadline in one timer set, its socket in the parker's
/// `epoll`) in its compact form (`connection::dormant`, 360 B: the unsplit socket, the
/// session state machine's scalars, identity, session id, mailbox and subscriptions, will,
/// kick channel, admission slot), the parker's slot, waker and deadline entry, the
/// session's mailbox and registry entries, the kick channel (64 B) and the operator view
/// (`LiveInfo`, 96 B).
const BUDGET_PER_CONNECTION: usize = 1_040;
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
    until_parked(b.handle.state(), WARM as u64).await;
    let before = ALLOCATOR.allocated();
    let mut held = tokio::task::spawn_blocking(move || {
        let mut held = held;
        open(addr, WARM, WARM + MEASURED, &mut held);
        held
    })
    .await
    .expect("measured connections");
    until_parked(b.handle.state(), (WARM + MEASURED) as u64).await;
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

/// Heap bytes an idle TLS connection may keep in the broker (debug build): a TLS
/// connection waits parked in its own task (the parker takes plain TCP only), and keeps
/// rustls's connection state. Measured 10,186 B when set.
const BUDGET_PER_TLS_CONNECTION: usize = 10_600;
/// Heap bytes an idle WebSocket connection may keep in the broker (debug build): parked in
/// its own task like TLS, plus the WebSocket stream's state. Measured
/// 6,981 B when set.
const BUDGET_PER_WS_CONNECTION: usize = 7_300;
/// TLS and WebSocket clients run in a Python process (`tests/py/idle_clients.py`), so this
/// process allocates nothing per connection; fewer of them, their handshakes cost more.
const PY_WARM: usize = 50;
const PY_MEASURED: usize = 500;

/// The Python process holding TLS or WebSocket connections, driven line by line.
struct PyClients {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl PyClients {
    fn spawn(args: &[String]) -> PyClients {
        let script = format!("{}/py/idle_clients.py", env!("CARGO_MANIFEST_DIR"));
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take().expect("stdin");
        let out = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stdout.take().expect("stdout"),
        ));
        PyClients { child, stdin, out }
    }

    /// Sends one command and returns the answer line (generous time: each connection's
    /// handshake runs in Python).
    async fn cmd(&mut self, line: &str) -> String {
        tokio::io::AsyncWriteExt::write_all(&mut self.stdin, format!("{line}\n").as_bytes())
            .await
            .expect("command sent");
        let answer = tokio::time::timeout(WAIT * 6, self.out.next_line())
            .await
            .expect("the clients answer in time")
            .expect("read the answer")
            .expect("the clients are running");
        assert!(!answer.starts_with("error"), "{line}: {answer}");
        answer
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Heap per idle connection held by `clients`, parked, measured like the TCP case.
async fn heap_per_py_connection(b: &TestBroker, clients: &mut PyClients) -> usize {
    assert_eq!(
        clients.cmd(&format!("open {PY_WARM}")).await,
        format!("ok {PY_WARM}")
    );
    until_parked(b.handle.state(), PY_WARM as u64).await;
    let before = ALLOCATOR.allocated();
    let all = PY_WARM + PY_MEASURED;
    assert_eq!(
        clients.cmd(&format!("open {PY_MEASURED}")).await,
        format!("ok {all}")
    );
    until_parked(b.handle.state(), all as u64).await;
    let after = ALLOCATOR.allocated();
    // Still alive, every one of them.
    assert_eq!(clients.cmd("ping").await, format!("alive {all}"));
    after.saturating_sub(before) / PY_MEASURED
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_and_websocket_connections_keep_little_heap() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = switchboard_tests::TempDir::new("idle-tls");
    let certs =
        switchboard_broker::transport::certs::ensure_dev_certs(dir.path()).expect("dev certs");
    let local = || vec![SocketAddr::from(([127, 0, 0, 1], 0))];
    let (cert, key) = (certs.server_cert.clone(), certs.server_key.clone());
    let b = TestBroker::start_with(|c| {
        c.limits.park_after_ms = 20;
        c.listeners.tls = local();
        c.listeners.ws = local();
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
    })
    .await;
    let addrs = b.handle.addrs();
    let ca = certs.ca_cert.display().to_string();
    let mut tls = PyClients::spawn(&["tls".into(), addrs.tls[0].port().to_string(), ca]);
    let per_tls = heap_per_py_connection(&b, &mut tls).await;
    println!("broker heap per idle TLS connection: {per_tls} B ({PY_MEASURED} connections)");
    tls.stop().await;
    // The TLS connections are gone (their sessions were clean): the WebSocket ones are
    // counted from zero parked connections.
    until_parked(b.handle.state(), 0).await;
    let mut ws = PyClients::spawn(&["ws".into(), addrs.ws[0].port().to_string()]);
    let per_ws = heap_per_py_connection(&b, &mut ws).await;
    println!("broker heap per idle WebSocket connection: {per_ws} B ({PY_MEASURED} connections)");
    ws.stop().await;
    assert!(
        per_tls <= BUDGET_PER_TLS_CONNECTION,
        "an idle TLS connection keeps {per_tls} B of heap, over the budget of \
         {BUDGET_PER_TLS_CONNECTION} B"
    );
    assert!(
        per_ws <= BUDGET_PER_WS_CONNECTION,
        "an idle WebSocket connection keeps {per_ws} B of heap, over the budget of \
         {BUDGET_PER_WS_CONNECTION} B"
    );
    b.stop().await;
}
