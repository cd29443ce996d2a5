//! A NAT simulator for tests: a TCP proxy on loopback that forgets a connection's mapping
//! after it has been idle (no byte either way) for `idle`. A forgotten connection is not
//! closed, as a real NAT does not send anything either: from then on bytes in both
//! directions vanish, and each side only notices through its own timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counters of a running proxy.
#[derive(Debug, Default)]
pub struct NatStats {
    pub connections: AtomicU64,
    pub forgotten: AtomicU64,
}

/// A running NAT proxy; it stops when dropped.
pub struct NatProxy {
    pub addr: SocketAddr,
    pub stats: Arc<NatStats>,
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
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(NatStats::default());
        let st = stats.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                st.connections.fetch_add(1, Ordering::Relaxed);
                let st = st.clone();
                conns.spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        forward(client, server, idle, st).await;
                    }
                });
            }
        });
        NatProxy { addr, stats, task }
    }

    pub fn forgotten(&self) -> u64 {
        self.stats.forgotten.load(Ordering::Relaxed)
    }
}

async fn forward(client: TcpStream, server: TcpStream, idle: Duration, stats: Arc<NatStats>) {
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let l1 = last.clone();
    let l2 = last.clone();
    let forgotten = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (f1, f2, f3) = (forgotten.clone(), forgotten.clone(), forgotten.clone());
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
        }
    };
    let watchdog = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let idle_for = start.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
            if idle_for >= idle.as_millis() as u64 {
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

/// A UDP NAT in front of a server: datagrams from one client go out through an upstream
/// socket whose port is the client's apparent address. [`UdpNat::change_port`] moves the
/// client to a new upstream port, as when a phone changes network; a mapping idle for
/// `idle` is forgotten and the next datagram gets a new port too.
pub struct UdpNat {
    pub addr: SocketAddr,
    changes: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
    pub stats: Arc<NatStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for UdpNat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UdpNat {
    /// Forwards 127.0.0.1:(free port) ↔ `upstream` for a single client.
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
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let mut back = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let mut last = Instant::now();
            let mut a = vec![0u8; 65_536];
            let mut b = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    r = front.recv_from(&mut a) => {
                        let Ok((n, from)) = r else { return };
                        if last.elapsed() >= idle {
                            // Forgotten: this datagram opens a new mapping on a new port.
                            st.forgotten.fetch_add(1, Ordering::Relaxed);
                            back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
                        }
                        client = Some(from);
                        last = Instant::now();
                        let _ = back.send_to(&a[..n], upstream).await;
                    }
                    r = back.recv_from(&mut b) => {
                        let Ok((n, _)) = r else { return };
                        if let Some(c) = client {
                            last = Instant::now();
                            let _ = front.send_to(&b[..n], c).await;
                        }
                    }
                    Some(done) = ch.recv() => {
                        st.connections.fetch_add(1, Ordering::Relaxed);
                        back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
                        let _ = done.send(());
                    }
                }
            }
        });
        UdpNat {
            addr,
            changes,
            stats,
            task,
        }
    }

    /// From now on (once this returns) the client's datagrams reach the server from a new
    /// source port. Datagrams the server sends to the old port are lost, as after a real
    /// network change: the server learns the new address when the client next speaks.
    pub async fn change_port(&self) {
        let (done, changed) = tokio::sync::oneshot::channel();
        if self.changes.send(done).await.is_ok() {
            let _ = changed.await;
        }
    }
}
