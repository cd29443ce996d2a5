//! The last hour of the broker's numbers for the console's charts: a ring of
//! [`CAPACITY`] samples taken every [`PERIOD`] by a task of the broker (so every gateway
//! draws the same charts). Counters are cumulative; rates are differences of neighbours.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::BrokerState;
use crate::metrics::Metrics;

/// Time between samples.
pub const PERIOD: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
pub const CAPACITY: usize = 360;

/// One sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t_ms: u64,
    pub connections: u64,
    /// Cumulative messages routed (in) and sent to clients (out).
    pub received: u64,
    pub sent: u64,
    pub queued: u64,
    pub store_bytes: u64,
    /// The store's size on disk (0 where the store does not say: memory, PostgreSQL).
    pub disk_bytes: u64,
}

/// The ring (bounded: the oldest sample leaves when a new one arrives at capacity).
#[derive(Debug, Default)]
pub struct Samples {
    ring: Mutex<VecDeque<Sample>>,
}

impl Samples {
    pub fn push(&self, s: Sample) {
        let mut r = self.ring.lock();
        if r.len() >= CAPACITY {
            r.pop_front();
        }
        r.push_back(s);
    }

    /// Every sample, oldest first.
    pub fn all(&self) -> Vec<Sample> {
        self.ring.lock().iter().copied().collect()
    }
}

/// The broker's numbers now.
pub fn take(b: &BrokerState) -> Sample {
    let m = &b.metrics;
    Sample {
        t_ms: super::super::now_ms(),
        connections: Metrics::get(&m.clients_connected),
        received: Metrics::get(&m.messages_received),
        sent: Metrics::get(&m.messages_sent),
        queued: b.queued_total() as u64,
        store_bytes: b.store().map_or(0, |s| s.stats().bytes),
        disk_bytes: b.store().and_then(|s| s.disk_bytes()).unwrap_or(0),
    }
}

/// Samples every [`PERIOD`] until the broker shuts down.
pub fn start(samples: Weak<Samples>, broker: &Arc<BrokerState>) {
    let weak = Arc::downgrade(broker);
    let stop = broker.shutdown.clone();
    broker.tasks.spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (Some(b), Some(s)) = (weak.upgrade(), samples.upgrade()) else {
                return;
            };
            s.push(take(&b));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_hour() {
        let s = Samples::default();
        for i in 0..(CAPACITY as u64 + 5) {
            s.push(Sample {
                t_ms: i,
                connections: 0,
                received: 0,
                sent: 0,
                queued: 0,
                store_bytes: 0,
                disk_bytes: 0,
            });
        }
        let all = s.all();
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].t_ms, 5);
    }
}
