//! Accept loops for the stream transports (TCP, TLS, WebSocket, WebSocket over TLS), and
//! the [`Admission`] limits every listener (QUIC included) shares. A connection over the
//! pending or per-address limit is closed straight after accept (no CONNACK: nothing was
//! read yet) and counted; one that finds `max_connections` full when its CONNECT arrives
//! gets CONNACK 0x89. A connection that sends no CONNECT holds only a pending slot, for at
//! most `connect_timeout` seconds. TLS and WebSocket handshakes run in the
//! connection's own task, bounded by the connect timeout, so a slow or hostile handshake
//! never holds up the accept loop.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;
use crate::transport::{tls, ws};
use crate::{BrokerState, connection};

/// What runs on top of an accepted TCP connection.
#[derive(Clone)]
pub enum Kind {
    Tcp,
    Tls(TlsAcceptor),
    Ws,
    Wss(TlsAcceptor),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Tls(_) => "tls",
            Kind::Ws => "ws",
            Kind::Wss(_) => "wss",
        }
    }
}

/// Admission of new connections, shared by every listener (TCP, TLS, WebSocket, QUIC):
/// `max_connections` is broker-wide, and one source address holds at most
/// `max_connections_per_address` of them (IPv6: per address, not per /64; loopback
/// addresses are exempt: local sidecars, tools and benchmarks; 0: no per-address cap).
///
/// A stream connection (TCP, TLS, WebSocket) starts with a *pending* slot, from a pool of
/// `max_pending_connections`, and takes one of the `max_connections` only once its CONNECT
/// has arrived ([`Slot::promote`]): a connection that sends nothing (a slowloris) holds no
/// connection permit, only a pending slot, and loses that at the connect timeout. QUIC
/// connections take a full slot on arrival ([`Admission::admit_full`]).
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    pending: Arc<Semaphore>,
    per_address: parking_lot::Mutex<std::collections::HashMap<IpAddr, u32>>,
    max_per_address: u32,
}

/// A connection's place in [`Admission`]; released when dropped.
#[derive(Debug)]
pub struct Slot {
    permit: OwnedSemaphorePermit,
    /// The permit is one of `max_connections` (else a pending one).
    full: bool,
    admission: Arc<Admission>,
    addr: IpAddr,
}

impl Slot {
    /// Trades the pending slot for one of `max_connections` (CONNECT has arrived); no-op if
    /// it is one already.
    pub fn promote(&mut self) -> Result<(), Refused> {
        if !self.full {
            self.permit = self
                .admission
                .permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| Refused::Total)?;
            self.full = true;
        }
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.admission.per_address.lock();
        if let Some(n) = map.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.addr);
            }
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("connection limit reached")]
    Total,
    #[error("limit of connections waiting for CONNECT reached")]
    Pending,
    #[error("connection limit for this address reached")]
    PerAddress,
}

impl Admission {
    /// A pending slot for a new stream connection from `addr`.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Slot, Refused> {
        let permit = self
            .pending
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Pending)?;
        self.slot(addr, permit, false)
    }

    /// A full slot (one of `max_connections`) for a connection from `addr`.
    pub fn admit_full(self: &Arc<Self>, addr: IpAddr) -> Result<Slot, Refused> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Total)?;
        self.slot(addr, permit, true)
    }

    fn slot(
        self: &Arc<Self>,
        addr: IpAddr,
        permit: OwnedSemaphorePermit,
        full: bool,
    ) -> Result<Slot, Refused> {
        let counted = !(addr.is_loopback() || self.max_per_address == 0);
        if counted {
            let mut map = self.per_address.lock();
            let n = map.entry(addr).or_default();
            if *n >= self.max_per_address {
                return Err(Refused::PerAddress);
            }
            *n += 1;
        }
        Ok(Slot {
            permit,
            full,
            admission: self.clone(),
            addr,
        })
    }
}

/// The admission limits for all listeners.
pub fn permits(broker: &BrokerState) -> Arc<Admission> {
    let l = &broker.config.limits;
    Arc::new(Admission {
        permits: Arc::new(Semaphore::new(l.max_connections)),
        pending: Arc::new(Semaphore::new(l.max_pending_connections)),
        per_address: parking_lot::Mutex::new(std::collections::HashMap::new()),
        max_per_address: l.max_connections_per_address,
    })
}

/// Starts serving an accepted connection. A plain TCP connection's task is its
/// connection future alone; the other transports first run their handshake in a task of
/// its own, which hands the upgraded stream to a new connection task and ends: an idle
/// connection then holds only the state of its own transport's connection future, not
/// that of a handshake or of another transport's future.
fn spawn_connection(
    broker: &Arc<BrokerState>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    kind: Kind,
    slot: Slot,
) {
    let b = broker.clone();
    match kind {
        Kind::Tcp => {
            broker
                .tasks
                .spawn(connection::serve(b, stream, peer, "tcp", None, Some(slot)))
        }
        kind => broker.tasks.spawn(handshake(b, stream, peer, kind, slot)),
    };
}

async fn handshake(
    broker: Arc<BrokerState>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    kind: Kind,
    slot: Slot,
) {
    let slot = Some(slot);
    let timeout = Duration::from_secs(broker.config.limits.connect_timeout);
    let max = broker.config.limits.max_packet_size as usize + 16;
    let name = kind.name();
    let failed = |why: String| {
        Metrics::inc(&broker.metrics.handshake_failures);
        tracing::debug!(%peer, transport = name, why, "handshake failed");
    };
    let tasks = &broker.tasks;
    match kind {
        Kind::Tcp => {
            tasks.spawn(connection::serve(
                broker.clone(),
                stream,
                peer,
                name,
                None,
                slot,
            ));
        }
        Kind::Tls(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => {
                let user = tls::certificate_user(s.get_ref().1.peer_certificates());
                tasks.spawn(connection::serve(broker.clone(), s, peer, name, user, slot));
            }
            Ok(Err(e)) => failed(e.to_string()),
            Err(_) => failed("timeout".into()),
        },
        Kind::Ws => match tokio::time::timeout(timeout, ws::accept(stream, max)).await {
            Ok(Ok(s)) => {
                tasks.spawn(connection::serve(broker.clone(), s, peer, name, None, slot));
            }
            Ok(Err(e)) => failed(e.to_string()),
            Err(_) => failed("timeout".into()),
        },
        Kind::Wss(acceptor) => {
            let upgraded = async {
                let s = acceptor.accept(stream).await.map_err(|e| e.to_string())?;
                let user = tls::certificate_user(s.get_ref().1.peer_certificates());
                let s = ws::accept(s, max).await.map_err(|e| e.to_string())?;
                Ok::<_, String>((s, user))
            };
            match tokio::time::timeout(timeout, upgraded).await {
                Ok(Ok((s, user))) => {
                    tasks.spawn(connection::serve(broker.clone(), s, peer, name, user, slot));
                }
                Ok(Err(e)) => failed(e),
                Err(_) => failed("timeout".into()),
            }
        }
    }
}

/// Accepts connections on `listener` until shutdown.
pub async fn accept(
    broker: Arc<BrokerState>,
    listener: TcpListener,
    kind: Kind,
    permits: Arc<Admission>,
) {
    loop {
        let accepted = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match permits.admit(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                Metrics::inc(&broker.metrics.refused_max_connections);
                tracing::warn!(%peer, %why, "closing new connection");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        spawn_connection(&broker, stream, peer, kind.clone(), slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(total: usize, per_address: u32) -> Arc<Admission> {
        Arc::new(Admission {
            permits: Arc::new(Semaphore::new(total)),
            pending: Arc::new(Semaphore::new(2)),
            per_address: parking_lot::Mutex::new(std::collections::HashMap::new()),
            max_per_address: per_address,
        })
    }

    #[test]
    fn per_address_cap_and_total_cap() {
        let a = admission(5, 2);
        let x: IpAddr = "10.0.0.1".parse().expect("ip");
        let y: IpAddr = "10.0.0.2".parse().expect("ip");
        let x1 = a.admit_full(x).expect("1st");
        let _x2 = a.admit_full(x).expect("2nd");
        assert_eq!(a.admit_full(x).err(), Some(Refused::PerAddress));
        let _y1 = a.admit_full(y).expect("another address");
        drop(x1);
        let _x3 = a.admit_full(x).expect("a slot came back");
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        let _l1 = a.admit_full(lo).expect("loopback is exempt");
        let _l2 = a.admit_full(lo).expect("loopback is exempt");
        assert_eq!(a.admit_full(lo).err(), Some(Refused::Total), "5 in use");
    }

    #[test]
    fn pending_slots_hold_no_connection_permit_until_promoted() {
        let a = admission(1, 0);
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        let mut p1 = a.admit(lo).expect("pending 1");
        let mut p2 = a.admit(lo).expect("pending 2");
        assert_eq!(
            a.admit(lo).err(),
            Some(Refused::Pending),
            "2 pending at most"
        );
        p1.promote().expect("the one connection permit");
        assert_eq!(p2.promote().err(), Some(Refused::Total));
        drop(p1);
        p2.promote().expect("free again");
    }
}
