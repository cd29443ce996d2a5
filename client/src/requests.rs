//! MQTT 5 request/response bookkeeping shared by the IM client and the service client: a
//! correlation id per request (starting at random, so an answer meant for another process
//! that reached this one is not taken for ours), the waiter of each, and the matching of
//! answers to waiters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_proto::Publish;
use tokio::sync::oneshot;

/// Requests waiting for their answers; cheap to clone.
#[derive(Clone)]
pub struct Correlator {
    waiters: Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>,
    next: Arc<AtomicU64>,
}

/// Why no answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// The client stopped.
    Closed,
    /// Nothing within the timeout.
    Timeout,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator::new()
    }
}

impl Correlator {
    pub fn new() -> Correlator {
        Correlator {
            waiters: Arc::default(),
            next: Arc::new(AtomicU64::new(rand::random::<u64>() >> 1)),
        }
    }

    /// A new request: its correlation data and the receiver of its answer.
    pub fn begin(&self) -> (u64, Bytes, oneshot::Receiver<Bytes>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().insert(id, tx);
        (id, Bytes::copy_from_slice(&id.to_be_bytes()), rx)
    }

    /// Forgets request `id` (it could not be sent).
    pub fn cancel(&self, id: u64) {
        self.waiters.lock().remove(&id);
    }

    /// Waits for the answer of request `id`.
    pub async fn wait(
        &self,
        id: u64,
        rx: oneshot::Receiver<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, NoAnswer> {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(_)) => Err(NoAnswer::Closed),
            Err(_) => {
                self.cancel(id);
                Err(NoAnswer::Timeout)
            }
        }
    }

    /// Hands an answer to its waiter (answers nobody waits for are dropped).
    pub fn answer(&self, p: Publish) {
        let Some(id) = p
            .properties
            .correlation_data
            .as_deref()
            .and_then(|d| <[u8; 8]>::try_from(d).ok())
            .map(u64::from_be_bytes)
        else {
            return;
        };
        if let Some(w) = self.waiters.lock().remove(&id) {
            let _ = w.send(p.payload);
        }
    }

    /// The client stopped: every waiting request fails now instead of timing out.
    pub fn fail_all(&self) {
        self.waiters.lock().clear();
    }
}
