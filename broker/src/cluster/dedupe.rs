//! One delivery per message per node, sans-IO.
//!
//! NATS delivers a message once per matching subscription of a connection: a node that
//! subscribes to `a.*` and `a.>` (its sessions hold `a/+` and `a/#`) receives a publish on
//! `a.b` twice. The node routes each message through its own subscription table, which
//! already merges a session's overlapping subscriptions, so the second copy must simply be
//! dropped. Every forwarded message carries its origin node and a number unique on that
//! node; this window remembers the last `capacity` of them.
//!
//! Copies of one message arrive back to back on one connection (NATS writes them together),
//! so a window of thousands is far more than needed; when it is full the oldest id is
//! forgotten.

use std::collections::{HashSet, VecDeque};

/// The last `capacity` message ids seen.
#[derive(Debug)]
pub struct Window {
    seen: HashSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
    capacity: usize,
}

impl Window {
    pub fn new(capacity: usize) -> Self {
        Window {
            seen: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    /// True the first time (`node`, `id`) is offered, false for a copy. `node` is a hash of
    /// the origin node's name.
    pub fn first(&mut self, node: u64, id: u64) -> bool {
        if !self.seen.insert((node, id)) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.order.push_back((node, id));
        true
    }

    /// Forgets (`node`, `id`): its next offer counts as the first again.
    pub fn forget(&mut self, node: u64, id: u64) {
        self.seen.remove(&(node, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_dropped_and_the_window_is_bounded() {
        let mut w = Window::new(2);
        assert!(w.first(1, 1));
        assert!(!w.first(1, 1));
        assert!(w.first(2, 1), "same number from another node");
        assert!(w.first(1, 2));
        // (1, 1) fell out of the window.
        assert!(w.first(1, 1));
        assert_eq!(w.order.len(), 2);
        assert_eq!(w.seen.len(), 2);
    }
}
