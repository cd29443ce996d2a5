//! Accept loops for the stream transports (TCP, TLS, WebSocket, WebSocket over TLS). A
//! connection over the limit is closed straight after accept (a client gets no CONNACK, as
//! it could not be served anyway) and counted. TLS and WebSocket handshakes run in the
//! connection's own task, bounded by the connect timeout, so a slow or hostile handshake
//! never holds up the accept loop.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
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

/// One permit pool for all listeners: `max_connections` is broker-wide.
pub fn permits(broker: &BrokerState) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(broker.config.limits.max_connections))
}

async fn handshake_and_serve(
    broker: Arc<BrokerState>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    kind: Kind,
) {
    let timeout = Duration::from_secs(broker.config.limits.connect_timeout);
    let max = broker.config.limits.max_packet_size as usize + 16;
    let name = kind.name();
    let failed = |why: String| {
        Metrics::inc(&broker.metrics.handshake_failures);
        tracing::debug!(%peer, transport = name, why, "handshake failed");
    };
    match kind {
        Kind::Tcp => connection::serve(broker.clone(), stream, peer, name, None).await,
        Kind::Tls(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => {
                let user = tls::certificate_user(s.get_ref().1.peer_certificates());
                connection::serve(broker.clone(), s, peer, name, user).await
            }
            Ok(Err(e)) => failed(e.to_string()),
            Err(_) => failed("timeout".into()),
        },
        Kind::Ws => match tokio::time::timeout(timeout, ws::accept(stream, max)).await {
            Ok(Ok(s)) => connection::serve(broker.clone(), s, peer, name, None).await,
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
                Ok(Ok((s, user))) => connection::serve(broker.clone(), s, peer, name, user).await,
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
    permits: Arc<Semaphore>,
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            Metrics::inc(&broker.metrics.refused_max_connections);
            tracing::warn!(%peer, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let b = broker.clone();
        let kind = kind.clone();
        broker.tasks.spawn(async move {
            handshake_and_serve(b, stream, peer, kind).await;
            drop(permit);
        });
    }
}
