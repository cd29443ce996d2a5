//! A session's queue of deliveries: bounded by count and bytes, shared between delivery
//! (which pushes) and the session's connection task (which pops), and kept while a
//! persistent session is offline.
//!
//! Policy when full: a QoS 0 delivery replaces the oldest queued QoS 0 delivery (or is
//! dropped if there is none); a QoS 1/2 delivery is refused, and the publisher learns it
//! through reason code 0x97. A stuck subscriber therefore costs at most its bounds, and
//! never blocks a publisher or other subscribers.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use switchboard_proto::QoS;
use tokio::sync::Notify;

use crate::message::Delivery;

/// Outcome of [`Mailbox::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued after dropping the oldest QoS 0 delivery, or the QoS 0 delivery itself was
    /// dropped.
    DroppedQos0,
    /// A QoS 1/2 delivery did not fit.
    Refused,
}

/// Seconds since this process first queued a delivery: the coarse clock of
/// [`Delivery::queued_s`] (four bytes, so the stamp costs no memory per queued message).
pub fn clock_s() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    u32::try_from(START.get_or_init(Instant::now).elapsed().as_secs()).unwrap_or(u32::MAX)
}

/// One queued delivery as operators see it ([`Mailbox::peek`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueuedView {
    pub topic: String,
    pub qos: u8,
    /// Payload bytes.
    pub bytes: usize,
    /// Seconds since it was queued (in this process: a message restored from the store
    /// counts from the restore).
    pub age_s: u32,
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Delivery>,
    bytes: usize,
}

/// The queue of one session.
#[derive(Debug)]
pub struct Mailbox {
    queue: Mutex<Queue>,
    notify: Notify,
    /// A parked connection's waker (see `connection::parker`), woken by every push as
    /// `notify` wakes a running connection's task.
    parked: futures_util::task::AtomicWaker,
    /// `parked` holds a waker: a running connection's pushes skip it with one load.
    has_parked: AtomicBool,
    online: AtomicBool,
    /// Deliveries to this session are stored (its Session Expiry Interval is above 0).
    persistent: AtomicBool,
    max_len: usize,
    max_bytes: usize,
}

impl Mailbox {
    pub fn new(max_len: usize, max_bytes: usize) -> Self {
        Mailbox {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                bytes: 0,
            }),
            notify: Notify::new(),
            parked: futures_util::task::AtomicWaker::new(),
            has_parked: AtomicBool::new(false),
            online: AtomicBool::new(false),
            persistent: AtomicBool::new(false),
            max_len,
            max_bytes,
        }
    }

    /// Adds a delivery, applying the policy above, and wakes the connection task.
    pub fn push(&self, d: Delivery) -> Pushed {
        self.push_with(d, || {})
    }

    /// [`Mailbox::push`], calling `admitted` once the delivery is admitted and before the
    /// connection can see it (under the queue's lock: it must not block). A shared
    /// message handed over from another member submits its store write there, so the
    /// write is queued before anything the connection submits for the delivery.
    pub fn push_with(&self, mut d: Delivery, admitted: impl FnOnce()) -> Pushed {
        d.queued_s = clock_s();
        let cost = d.msg.cost();
        let mut q = self.queue.lock();
        let mut result = Pushed::Queued;
        while q.items.len() >= self.max_len || q.bytes + cost > self.max_bytes {
            if d.qos != QoS::AtMostOnce {
                return Pushed::Refused;
            }
            let Some(i) = q.items.iter().position(|x| x.qos == QoS::AtMostOnce) else {
                return Pushed::DroppedQos0;
            };
            if let Some(old) = q.items.remove(i) {
                q.bytes -= old.msg.cost();
            }
            result = Pushed::DroppedQos0;
        }
        admitted();
        q.bytes += cost;
        q.items.push_back(d);
        drop(q);
        self.notify.notify_one();
        self.wake_parked();
        result
    }

    /// Adds a delivery that outranks every queued QoS 0 one (chatroom high priority): when
    /// the queue is full, the oldest queued QoS 0 deliveries make room; refused only when
    /// none is left to drop.
    pub fn push_before_qos0(&self, mut d: Delivery) -> Pushed {
        d.queued_s = clock_s();
        let cost = d.msg.cost();
        let mut q = self.queue.lock();
        let mut result = Pushed::Queued;
        while q.items.len() >= self.max_len || q.bytes + cost > self.max_bytes {
            let Some(i) = q.items.iter().position(|x| x.qos == QoS::AtMostOnce) else {
                return if d.qos == QoS::AtMostOnce {
                    Pushed::DroppedQos0
                } else {
                    Pushed::Refused
                };
            };
            if let Some(old) = q.items.remove(i) {
                q.bytes -= old.msg.cost();
            }
            result = Pushed::DroppedQos0;
        }
        q.bytes += cost;
        q.items.push_back(d);
        drop(q);
        self.notify.notify_one();
        self.wake_parked();
        result
    }

    /// Puts deliveries back at the front (in their order), ignoring the bounds: they were
    /// admitted before.
    pub fn push_front_all(&self, ds: Vec<Delivery>) {
        let mut q = self.queue.lock();
        for d in ds.into_iter().rev() {
            q.bytes += d.msg.cost();
            q.items.push_front(d);
        }
        drop(q);
        self.notify.notify_one();
        self.wake_parked();
    }

    /// Takes the next delivery if `admit` accepts it (used to stop at a QoS 1/2 delivery
    /// while the inflight window is full, keeping order).
    pub fn pop_if(&self, admit: impl FnOnce(&Delivery) -> bool) -> Option<Delivery> {
        let mut q = self.queue.lock();
        if !admit(q.items.front()?) {
            return None;
        }
        let d = q.items.pop_front()?;
        q.bytes -= d.msg.cost();
        Some(d)
    }

    /// Moves up to `max` deliveries into `out`, in order, stopping before a QoS 1/2
    /// delivery once `room` of them have been taken (the client's inflight window), and
    /// once they cost `bytes` or more (at least one is taken, so a large message passes).
    pub fn pop_batch(&self, max: usize, mut room: usize, bytes: usize, out: &mut Vec<Delivery>) {
        let mut q = self.queue.lock();
        let mut taken = 0;
        while out.len() < max && (out.is_empty() || taken < bytes) {
            let Some(front) = q.items.front() else { break };
            if front.qos != QoS::AtMostOnce {
                if room == 0 {
                    break;
                }
                room -= 1;
            }
            let Some(d) = q.items.pop_front() else { break };
            let cost = d.msg.cost();
            q.bytes -= cost;
            taken += cost;
            out.push(d);
        }
    }

    /// Removes and returns every queued delivery.
    pub fn drain(&self) -> Vec<Delivery> {
        let mut q = self.queue.lock();
        q.bytes = 0;
        q.items.drain(..).collect()
    }

    /// Makes the next [`Mailbox::notified`] return at once if anything is queued.
    pub fn wake(&self) {
        if !self.is_empty() {
            self.notify.notify_one();
            self.wake_parked();
        }
    }

    /// Wakes `waker` at the next push (a parked connection, see `connection::parker`).
    pub fn register_parked(&self, waker: &std::task::Waker) {
        self.parked.register(waker);
        // Before the caller looks at the queue: a push it does not see finds the flag set.
        self.has_parked.store(true, Ordering::SeqCst);
    }

    /// Forgets the parked connection's waker (it runs again).
    pub fn clear_parked(&self) {
        self.has_parked.store(false, Ordering::SeqCst);
        drop(self.parked.take());
    }

    fn wake_parked(&self) {
        if self.has_parked.load(Ordering::SeqCst) {
            self.parked.wake();
        }
    }

    /// Waits until something was pushed since the last call.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    pub fn len(&self) -> usize {
        self.queue.lock().items.len()
    }

    /// The first `limit` queued deliveries, oldest first, without taking them (the lock
    /// is held for `limit` steps at most).
    pub fn peek(&self, limit: usize) -> Vec<QueuedView> {
        let now = clock_s();
        let q = self.queue.lock();
        q.items
            .iter()
            .take(limit)
            .map(|d| QueuedView {
                topic: d.msg.topic.clone(),
                qos: d.qos as u8,
                bytes: d.msg.payload.len(),
                age_s: now.saturating_sub(d.queued_s),
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a connection is attached (shared subscriptions prefer online members).
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }

    /// Whether QoS 1/2 deliveries to this session go to the store.
    pub fn is_persistent(&self) -> bool {
        self.persistent.load(Ordering::Relaxed)
    }

    pub fn set_persistent(&self, persistent: bool) {
        self.persistent.store(persistent, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::message::Message;

    fn delivery(qos: QoS, tag: &str) -> Delivery {
        Delivery::new(
            Arc::new(Message::system(tag.into(), bytes::Bytes::new(), false)),
            qos,
        )
    }

    #[test]
    fn peek_shows_the_oldest_queued_without_taking_them() {
        let m = Mailbox::new(10, usize::MAX);
        m.push(delivery(QoS::AtLeastOnce, "a/1"));
        m.push(delivery(QoS::AtMostOnce, "a/2"));
        m.push(delivery(QoS::ExactlyOnce, "a/3"));
        let seen = m.peek(2);
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].topic.as_str(), seen[0].qos), ("a/1", 1));
        assert_eq!((seen[1].topic.as_str(), seen[1].qos), ("a/2", 0));
        assert_eq!(m.len(), 3, "nothing taken");
        assert!(
            std::mem::size_of::<Delivery>() <= 64,
            "the queue stamp fits in the padding"
        );
    }

    #[test]
    fn full_queue_drops_oldest_qos0_and_refuses_qos1() {
        let m = Mailbox::new(2, usize::MAX);
        assert_eq!(m.push(delivery(QoS::AtMostOnce, "a")), Pushed::Queued);
        assert_eq!(m.push(delivery(QoS::AtLeastOnce, "b")), Pushed::Queued);
        assert_eq!(m.push(delivery(QoS::AtLeastOnce, "c")), Pushed::Refused);
        assert_eq!(m.push(delivery(QoS::AtMostOnce, "d")), Pushed::DroppedQos0);
        let topics: Vec<String> = m.drain().iter().map(|d| d.msg.topic.clone()).collect();
        assert_eq!(topics, ["b", "d"]);
    }

    #[test]
    fn priority_push_evicts_queued_qos0_before_refusing() {
        let m = Mailbox::new(2, usize::MAX);
        m.push(delivery(QoS::AtMostOnce, "low"));
        m.push(delivery(QoS::AtLeastOnce, "h1"));
        assert_eq!(
            m.push_before_qos0(delivery(QoS::AtLeastOnce, "h2")),
            Pushed::DroppedQos0
        );
        assert_eq!(
            m.push_before_qos0(delivery(QoS::AtLeastOnce, "h3")),
            Pushed::Refused
        );
        let topics: Vec<String> = m.drain().iter().map(|d| d.msg.topic.clone()).collect();
        assert_eq!(topics, ["h1", "h2"]);
    }

    #[test]
    fn qos0_dropped_when_queue_holds_only_qos1() {
        let m = Mailbox::new(1, usize::MAX);
        m.push(delivery(QoS::AtLeastOnce, "a"));
        assert_eq!(m.push(delivery(QoS::AtMostOnce, "b")), Pushed::DroppedQos0);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn user_properties_count_against_the_byte_bound() {
        // 64 KiB of queue; each message has an empty payload and 2,000 small user
        // properties (~100 KB in memory). Without counting properties, all 100 would fit.
        let m = Mailbox::new(10_000, 64 * 1024);
        let props = switchboard_proto::Properties {
            user_properties: (0..2000).map(|i| (format!("k{i}"), "v".into())).collect(),
            ..Default::default()
        };
        let mut msg = Message::system("t".into(), bytes::Bytes::new(), false);
        msg.properties = Some(Box::new(props));
        assert!(msg.cost() > 2000 * 48, "cost {}", msg.cost());
        let msg = Arc::new(msg);
        let queued = (0..100)
            .filter(|_| {
                let d = Delivery {
                    msg: msg.clone(),
                    ..delivery(QoS::AtLeastOnce, "t")
                };
                matches!(m.push(d), Pushed::Queued)
            })
            .count();
        assert_eq!(queued, 0, "a message bigger than the bound is refused");
    }

    #[test]
    fn pop_batch_stops_at_the_byte_budget() {
        let m = Mailbox::new(100, usize::MAX);
        let big = Arc::new(Message::system(
            "big".into(),
            bytes::Bytes::from(vec![0u8; 100_000]),
            false,
        ));
        for _ in 0..10 {
            m.push(Delivery {
                msg: big.clone(),
                ..delivery(QoS::AtMostOnce, "big")
            });
        }
        let mut out = Vec::new();
        m.pop_batch(64, 64, 250_000, &mut out);
        assert_eq!(out.len(), 3, "stops once the budget is used");
        out.clear();
        m.pop_batch(64, 64, 1, &mut out);
        assert_eq!(out.len(), 1, "always makes progress");
        assert_eq!(m.len(), 6);
    }
}
