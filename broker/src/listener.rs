//! Accept loops. A connection over the limit is closed straight after accept (a client
//! gets no CONNACK, as it could not be served anyway) and counted.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::{BrokerState, connection};

/// Accepts TCP connections until shutdown.
pub async fn accept_tcp(broker: Arc<BrokerState>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(broker.config.limits.max_connections));
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
            Metrics::inc(&broker.router.metrics.refused_max_connections);
            tracing::warn!(%peer, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let b = broker.clone();
        broker.tasks.spawn(async move {
            connection::serve(b, stream, peer, "tcp").await;
            drop(permit);
        });
    }
}
