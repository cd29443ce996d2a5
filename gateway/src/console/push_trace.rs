//! Sends this gateway's push decisions to the broker (`console/push_trace/add`), so that
//! the console of any gateway shows what happened to a user's pushes whichever worker
//! sent them (`broker/src/im/console/push_trace.rs` keeps them). The push worker calls
//! [`TraceReporter::report`] beside its own trace; a task sends them in batches.
//!
//! Bounded: at most [`QUEUE`] entries wait; past that new ones are dropped (counted and
//! logged) rather than slowing the pushes. The task ends when the worker is dropped.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::service::ServiceClient;

/// Entries waiting to be sent, at most.
const QUEUE: usize = 4096;
/// Entries per call, at most (the broker takes up to 500).
const BATCH: usize = 200;

/// The sending side (one per push worker).
pub struct TraceReporter {
    tx: Option<mpsc::Sender<Value>>,
    dropped: AtomicU64,
}

impl TraceReporter {
    /// Starts the sending task on the current tokio runtime (without one, nothing is
    /// reported: a worker built outside a runtime keeps only its own trace).
    pub fn start(service: ServiceClient) -> TraceReporter {
        let tx = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let (tx, rx) = mpsc::channel(QUEUE);
            rt.spawn(run(service, rx));
            tx
        });
        TraceReporter {
            tx,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues one decision for the broker (fields of `console/push_trace/add`).
    pub fn report(&self, entry: Value) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(entry).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    target: "push",
                    dropped = n,
                    "push trace: the broker is behind; entries dropped"
                );
            }
        }
    }
}

async fn run(service: ServiceClient, mut rx: mpsc::Receiver<Value>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(e) = rx.recv().await {
        batch.push(e);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let entries = std::mem::take(&mut batch);
        if let Err(e) = service
            .call("console/push_trace/add", &json!({ "entries": entries }))
            .await
        {
            tracing::warn!(target: "push", error = %e, "push trace: not stored by the broker");
        }
    }
}
