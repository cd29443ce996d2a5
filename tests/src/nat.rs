//! NAT simulators for tests, on loopback, that forget idle mappings the way carrier NATs do.
//!
//! - [`NatProxy`] (TCP): forgets a connection's mapping after it has been idle (no byte
//!   either way) for its timeout. A forgotten connection is not closed, as a real NAT does
//!   not send anything either: from then on bytes in both directions vanish, and each side
//!   only notices through its own timeouts.
//! - [`UdpNat`] (UDP, for QUIC): each client address gets an upstream port; a mapping idle
//!   for the timeout is forgotten (datagrams the server sends to it vanish) and the client's
//!   next datagram goes out from a new port.
//!
//! Both count the bytes and packets they pass on (payload: TCP stream bytes, UDP datagram
//! bytes), and their timeout can be changed while they run ([`NatProxy::set_idle`],
//! [`UdpNat::set_idle`]): a NAT whose timeout changes, or the phone moving to a network
//! with another one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchboard_client::HeartbeatConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counters of a running NAT.
#[derive(Debug, Default)]
pub struct NatStats {
    pub connections: AtomicU64,
    pub forgotten: AtomicU64,
    /// Payload bytes passed on from the client to the server, and back.
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Reads passed on (TCP: about one per segment) or datagrams (UDP), each way.
    pub packets_up: AtomicU64,
    pub packets_down: AtomicU64,
}

impl NatStats {
    /// (bytes up, bytes down, packets up, packets down) so far.
    pub fn traffic(&self) -> (u64, u64, u64, u64) {
        (
            self.bytes_up.load(Ordering::Relaxed),
            self.bytes_down.load(Ordering::Relaxed),
            self.packets_up.load(Ordering::Relaxed),
            self.packets_down.load(Ordering::Relaxed),
        )
    }
}

/// A NAT timeout that can change while the NAT runs (milliseconds).
#[derive(Debug, Clone)]
struct Timeout(Arc<AtomicU64>);

impl Timeout {
    fn new(d: Duration) -> Timeout {
        Timeout(Arc::new(AtomicU64::new(d.as_millis() as u64)))
    }

    fn set(&self, d: Duration) {
        self.0.store(d.as_millis() as u64, Ordering::Relaxed);
    }

    fn millis(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A running NAT proxy; it stops when dropped.
pub struct NatProxy {
    pub addr: SocketAddr,
    pub stats: Arc<NatStats>,
    idle: Timeout,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NatProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NatProxy {
    /// Proxies 127.0.0.1:(free port) → `upstream`, forgetting mappings idle for `idle`.
    pub async fn tcp(upstream: SocketAddr, idle: Duration) -> NatProxy {
        NatProxy::tcp_from(upstream, idle, None).await
    }

    /// Like [`NatProxy::tcp`], with the upstream connections leaving from `source` (another
    /// loopback address such as 127.0.1.1): the broker sees the clients behind this NAT
    /// coming from another network, as behind a carrier NAT's public address.
    pub async fn tcp_from(
        upstream: SocketAddr,
        idle: Duration,
        source: Option<std::net::IpAddr>,
    ) -> NatProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(NatStats::default());
        let st = stats.clone();
        let idle = Timeout::new(idle);
        let timeout = idle.clone();
        let task = tokio::spawn(async move {
            // Dropped with the task: every connection's forwarding ends with the proxy.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                st.connections.fetch_add(1, Ordering::Relaxed);
                let st = st.clone();
                let timeout = timeout.clone();
                conns.spawn(async move {
                    if let Ok(server) = connect_from(upstream, source).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        forward(client, server, timeout, st).await;
                    }
                });
                // Reap finished connections so the set does not grow with every probe.
                while conns.try_join_next().is_some() {}
            }
        });
        NatProxy {
            addr,
            stats,
            idle,
            task,
        }
    }

    pub fn forgotten(&self) -> u64 {
        self.stats.forgotten.load(Ordering::Relaxed)
    }

    /// From now on, mappings idle for `idle` are forgotten (existing ones included).
    pub fn set_idle(&self, idle: Duration) {
        self.idle.set(idle);
    }
}

async fn connect_from(
    upstream: SocketAddr,
    source: Option<std::net::IpAddr>,
) -> std::io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(upstream).await;
    };
    let socket = if ip.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(upstream).await
}

async fn forward(client: TcpStream, server: TcpStream, idle: Timeout, stats: Arc<NatStats>) {
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let l1 = last.clone();
    let l2 = last.clone();
    let forgotten = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (f1, f2, f3) = (forgotten.clone(), forgotten.clone(), forgotten.clone());
    let (s1, s2) = (stats.clone(), stats.clone());
    // Bytes are passed on while the mapping lives, and swallowed after.
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if f1.load(Ordering::Relaxed) {
                continue;
            }
            l1.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            s1.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
            s1.packets_up.fetch_add(1, Ordering::Relaxed);
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if f2.load(Ordering::Relaxed) {
                continue;
            }
            l2.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            s2.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
            s2.packets_down.fetch_add(1, Ordering::Relaxed);
        }
    };
    let watchdog = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let idle_for =
                (start.elapsed().as_millis() as u64).saturating_sub(last.load(Ordering::Relaxed));
            if idle_for >= idle.millis() {
                f3.store(true, Ordering::Relaxed);
                stats.forgotten.fetch_add(1, Ordering::Relaxed);
                // Keep swallowing until either side gives up.
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = watchdog => {}
    }
}

/// A UDP NAT in front of a server: datagrams from each client address go out through an
/// upstream socket of their own, whose port is the client's apparent address. A mapping idle
/// for the timeout is forgotten: what the server sends to it vanishes, and the client's next
/// datagram gets a new port. [`UdpNat::change_port`] moves every client to a new port at
/// once, as when a phone changes network.
pub struct UdpNat {
    pub addr: SocketAddr,
    changes: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
    pub stats: Arc<NatStats>,
    idle: Timeout,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for UdpNat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client's mapping: its upstream socket and the task relaying the server's datagrams
/// back (aborted with the mapping).
struct Mapping {
    back: Arc<tokio::net::UdpSocket>,
    /// Milliseconds since the NAT started, of the last datagram either way.
    last: Arc<AtomicU64>,
    relay: tokio::task::JoinHandle<()>,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

impl UdpNat {
    /// Forwards 127.0.0.1:(free port) ↔ `upstream`, one upstream port per client address.
    pub async fn start(upstream: SocketAddr, idle: Duration) -> UdpNat {
        let front = Arc::new(
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
        let addr = front.local_addr().expect("addr");
        let (changes, mut ch) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>(4);
        let stats = Arc::new(NatStats::default());
        let st = stats.clone();
        let idle = Timeout::new(idle);
        let timeout = idle.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let ms = move || start.elapsed().as_millis() as u64;
            let map = |client: SocketAddr, back: tokio::net::UdpSocket| {
                let back = Arc::new(back);
                let last = Arc::new(AtomicU64::new(ms()));
                let (b, l, f, s, t) = (
                    back.clone(),
                    last.clone(),
                    front.clone(),
                    st.clone(),
                    timeout.clone(),
                );
                let relay = tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    loop {
                        let Ok((n, _)) = b.recv_from(&mut buf).await else {
                            return;
                        };
                        let now = ms();
                        if now.saturating_sub(l.load(Ordering::Relaxed)) >= t.millis() {
                            // Forgotten: nothing reaches the client through this port again.
                            s.forgotten.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        l.store(now, Ordering::Relaxed);
                        s.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
                        s.packets_down.fetch_add(1, Ordering::Relaxed);
                        let _ = f.send_to(&buf[..n], client).await;
                    }
                });
                Mapping { back, last, relay }
            };
            let mut mappings: std::collections::HashMap<SocketAddr, Mapping> =
                std::collections::HashMap::new();
            let mut a = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    r = front.recv_from(&mut a) => {
                        let Ok((n, from)) = r else { return };
                        let now = ms();
                        let alive = mappings.get(&from).is_some_and(|m| {
                            !m.relay.is_finished()
                                && now.saturating_sub(m.last.load(Ordering::Relaxed)) < timeout.millis()
                        });
                        if !alive {
                            if mappings.get(&from).is_some_and(|m| !m.relay.is_finished()) {
                                // Forgotten (and not counted yet by its relay): this
                                // datagram opens a new mapping on a new port.
                                st.forgotten.fetch_add(1, Ordering::Relaxed);
                            }
                            let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
                            mappings.insert(from, map(from, back));
                        }
                        let Some(m) = mappings.get(&from) else { continue };
                        m.last.store(now, Ordering::Relaxed);
                        st.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
                        st.packets_up.fetch_add(1, Ordering::Relaxed);
                        let _ = m.back.send_to(&a[..n], upstream).await;
                    }
                    Some(done) = ch.recv() => {
                        st.connections.fetch_add(1, Ordering::Relaxed);
                        let clients: Vec<SocketAddr> = mappings.keys().copied().collect();
                        for c in clients {
                            let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
                            mappings.insert(c, map(c, back));
                        }
                        let _ = done.send(());
                    }
                }
            }
        });
        UdpNat {
            addr,
            changes,
            stats,
            idle,
            task,
        }
    }

    /// From now on (once this returns) the clients' datagrams reach the server from new
    /// source ports. Datagrams the server sends to the old ports are lost, as after a real
    /// network change: the server learns the new address when the client next speaks.
    pub async fn change_port(&self) {
        let (done, changed) = tokio::sync::oneshot::channel();
        if self.changes.send(done).await.is_ok() {
            let _ = changed.await;
        }
    }

    /// From now on, mappings idle for `idle` are forgotten (existing ones included).
    pub fn set_idle(&self, idle: Duration) {
        self.idle.set(idle);
    }

    pub fn forgotten(&self) -> u64 {
        self.stats.forgotten.load(Ordering::Relaxed)
    }
}

/// The SDK's heartbeat scaled from minutes to seconds for tests behind these NATs: start
/// at 1 s, bisect (in log space, up to 30 s) until the bracket is within 25 %, 1 s probe
/// reply timeout.
pub fn scaled_heartbeat() -> HeartbeatConfig {
    HeartbeatConfig {
        initial: Duration::from_secs(1),
        min: Duration::from_millis(500),
        max: Duration::from_secs(30),
        growth: 2.0,
        precision: 1.25,
        margin: 0.03,
        probe_timeout: Duration::from_secs(1),
        reprobe_after: Duration::from_secs(3600),
    }
}
