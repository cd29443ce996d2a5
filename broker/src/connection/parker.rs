//! Parked plain-TCP connections without a task each: one table per broker, one task.
//!
//! A quiet connection (see `park`) costs what it keeps while it waits. Waiting in a task of
//! its own keeps the task (header, scheduler links) and its future (the waiters of the
//! socket, the mailbox, the kick channel, a keep-alive `Sleep`, shutdown): about 1 KB. A
//! plain TCP connection that parks instead hands its state box (`Live`) to the broker's
//! [`Parker`] and its task ends. The parker keeps one record per connection (the box's
//! compact form, see `dormant`, which holds the unsplit socket and the admission slot too,
//! and its waker), inline in one table of fixed-size slots (see `slots`: the records sit
//! side by side, not scattered among what a wave of connections allocated and freed), and
//! one task for all of them. A record is named by its slot's key (in its waker, its
//! socket's registration with the watch and its deadline entry). The task wakes on:
//!
//! - bytes from the client: the socket leaves tokio's reactor while parked and is watched
//!   by the parker's own `epoll` (see `readiness`: no `ScheduledIo` per parked socket),
//!   whose thread hands the parker the record's key; the bytes are read through the
//!   worker's scratch buffer (`read`);
//! - a delivery: the mailbox wakes the same waker (`Mailbox::register_parked`);
//! - a takeover or kick: the kick channel wakes it too;
//! - the keep-alive deadline: one ordered set of deadlines for all parked connections and
//!   one timer, not a `Sleep` per connection;
//! - shutdown: every parked connection is resumed to say goodbye (DISCONNECT 0x8B).
//!
//! Woken, the record leaves the table, its state box is rebuilt from the compact form, and
//! the connection's task is spawned again (`connected`) where it left off: every piece of
//! protocol state a quiet connection holds is carried in the compact form, so nothing is
//! lost or reordered. A box that cannot be compacted (see `dormant`) is not handed over:
//! its connection waits in its own task. A wake-up that finds nothing to do (a stale waker) polls
//! the record once more and keeps it parked.
//!
//! TLS, WebSocket and QUIC connections keep waiting in their own task (`Conn::park`): their
//! streams buffer bytes of their own, so socket readiness alone does not say whether they
//! have a packet.
//!
//! Bounds: the table holds at most one record per connection (each holds an admission
//! slot, so at most `max_connections`), and the ready list one entry per record from its
//! waker (a record is queued again only after the parker took its last entry), plus one
//! per readiness edge of a socket whose record the parker is polling at that moment (see
//! `Shared::ready_id`; a socket with bytes resumes its connection and leaves the parker,
//! so these are few).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use bytes::BytesMut;
use parking_lot::Mutex;
use switchboard_proto::ReasonCode;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::{Instrument, warn};

use super::dormant::Dormant;
use super::readiness::Watch;
use super::slots::{Key, Slots};
use super::{End, Live};
use crate::BrokerState;
use crate::metrics::Metrics;
use crate::sessions::Kick;

/// The broker's table of parked plain-TCP connections (see the module docs).
#[derive(Default)]
pub struct Parker {
    shared: Arc<Shared>,
    /// The parker's task was started (on the first connection that parks).
    started: AtomicBool,
}

impl std::fmt::Debug for Parker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parker")
            .field("parked", &self.shared.table.lock().records.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Shared {
    /// The readiness watch of parked sockets, started with the first connection that
    /// parks (`None` inside: it could not start, and connections wait in their own task).
    watch: std::sync::OnceLock<Option<Watch>>,
    table: Mutex<Table>,
    /// Keys of records whose waker fired, for the parker's next turn.
    ready: Mutex<Vec<Key>>,
    /// Keep-alive deadlines of parked connections, earliest first.
    timers: Mutex<BTreeSet<(Instant, Key)>>,
    wake: Notify,
}

#[derive(Default)]
struct Table {
    records: Slots<Parked>,
    /// Shutdown emptied the table: connections no longer park here.
    closed: bool,
}

/// One parked connection: its compact form (see `dormant`) and its waker.
struct Parked {
    dormant: Dormant,
    waker: Arc<IdWaker>,
}

impl Parked {
    /// The keep-alive deadline (fixed while parked: nothing is read meanwhile).
    fn deadline(&self) -> Option<Instant> {
        self.dormant.deadline()
    }
}

impl Shared {
    /// The watch saw record `key`'s socket readable: its record's waker queues it, or,
    /// when the record is out of the table (being polled this very moment), the key is
    /// queued as is, so the record is polled again once it is back.
    fn ready_id(&self, key: Key) {
        let waker = self.table.lock().records.get(key).map(|r| r.waker.clone());
        match waker {
            Some(w) => w.wake_by_ref(),
            None => {
                self.ready.lock().push(key);
                self.wake.notify_one();
            }
        }
    }

    /// The watch, started on first use.
    fn watch(self: &Arc<Self>) -> Option<&Watch> {
        self.watch
            .get_or_init(|| match Watch::start(Arc::downgrade(self), Shared::ready_id) {
                Ok(w) => Some(w),
                Err(e) => {
                    warn!(error = %e, "parker's readiness watch did not start: idle connections wait in their own task");
                    None
                }
            })
            .as_ref()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Ends the watch's thread (it finds the parker gone).
        if let Some(Some(w)) = self.watch.get() {
            w.nudge();
        }
    }
}

/// Why a parked connection runs again.
enum Cause {
    /// Bytes from the client (read into this buffer), a delivery, the keep-alive deadline.
    Work(BytesMut),
    Kicked(Kick),
    Lost(&'static str),
    Shutdown,
}

/// The waker of one parked connection: queues its record's key for the parker.
struct IdWaker {
    id: Key,
    /// The key is in the ready list already (cleared when the parker takes it).
    queued: AtomicBool,
    shared: Weak<Shared>,
}

impl Wake for IdWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.ready.lock().push(self.id);
            shared.wake.notify_one();
        }
    }
}

/// What a woken record does next.
enum Woken {
    /// Still nothing to do: stays parked.
    Stay(Parked),
    /// Runs again, for this reason.
    Resume(Parked, Cause),
}

/// Hands a connection that parks to the broker's parker, which ends the calling task.
/// Gives it back when it cannot park there: not a plain TCP connection, or the broker
/// is shutting down (the caller then waits in its own task, see `Conn::park`).
pub(super) fn hand_over<S: 'static>(
    broker: &Arc<BrokerState>,
    live: Box<Live<S>>,
) -> Result<(), Box<Live<S>>> {
    let any: Box<dyn std::any::Any> = live;
    let live = match any.downcast::<Live<TcpStream>>() {
        Ok(tcp) => tcp,
        Err(other) => {
            return match other.downcast::<Live<S>>() {
                Ok(l) => Err(l),
                // Unreachable: `other` is a `Live<S>`.
                Err(_) => Ok(()),
            };
        }
    };
    let parker = &broker.parker;
    let shared = &parker.shared;
    let Some(watch) = shared.watch() else {
        return give_back(live);
    };
    // The record's slot, reserved first: its key names the socket in the watch.
    let Some(id) = ({
        let mut table = shared.table.lock();
        if table.closed || broker.shutdown.is_cancelled() {
            None
        } else {
            table.records.reserve()
        }
    }) else {
        return give_back(live);
    };
    // The compact form, or the box back when it cannot be (it waits in its own task).
    let dormant = match Dormant::sleep(live, watch, id) {
        Ok(d) => d,
        Err(live) => {
            shared.table.lock().records.release(id);
            return give_back(live);
        }
    };
    let deadline = dormant.deadline();
    let waker = Arc::new(IdWaker {
        id,
        queued: AtomicBool::new(false),
        shared: Arc::downgrade(shared),
    });
    let record = Parked {
        dormant,
        waker: waker.clone(),
    };
    {
        let mut table = shared.table.lock();
        // Shutdown since the slot was reserved: the connection says goodbye itself.
        let record = if table.closed || broker.shutdown.is_cancelled() {
            Err(record)
        } else {
            table.records.fill(id, record)
        };
        if let Err(record) = record {
            table.records.release(id);
            drop(table);
            return match record.dormant.wake(broker, watch, BytesMut::new()) {
                Some(live) => give_back(live),
                None => Ok(()),
            };
        }
    }
    if let Some(at) = deadline {
        shared.timers.lock().insert((at, id));
    }
    if !parker.started.swap(true, Ordering::AcqRel) {
        // Unconstrained: tokio's cooperative budget would make the sources of the records
        // polled late in a long turn answer `Pending` however ready (they then wake again
        // and are polled in a later turn: correct, but wasted work). The parker yields
        // after every turn instead.
        let parker = tokio::task::unconstrained(run(shared.clone(), broker.clone()));
        broker.tasks.spawn(parker);
    }
    // The parker polls the new record once: that registers its waker everywhere, and
    // catches what arrived between the loop's last look and now.
    waker.wake_by_ref();
    Ok(())
}

/// A TCP connection's box given back to its caller, as the caller's type.
fn give_back<S: 'static>(live: Box<Live<TcpStream>>) -> Result<(), Box<Live<S>>> {
    let any: Box<dyn std::any::Any> = live;
    match any.downcast::<Live<S>>() {
        Ok(l) => Err(l),
        // Unreachable: the caller's `S` is `TcpStream`.
        Err(_) => Ok(()),
    }
}

/// The parker's task: polls woken records and resumes those with something to do.
async fn run(shared: Arc<Shared>, broker: Arc<BrokerState>) {
    loop {
        let next = shared.timers.lock().first().map(|&(at, _)| at);
        let timer = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = broker.shutdown.cancelled() => break,
            _ = shared.wake.notified() => {}
            _ = timer => {}
        }
        let now = Instant::now();
        let mut ids = std::mem::take(&mut *shared.ready.lock());
        {
            let mut timers = shared.timers.lock();
            while let Some(&(at, id)) = timers.first()
                && at <= now
            {
                timers.pop_first();
                ids.push(id);
            }
        }
        for id in ids {
            // Out of its slot while polled (the slot stays reserved for it).
            let Some(record) = shared.table.lock().records.take(id) else {
                continue; // resumed already, or polled this moment: a stale waker
            };
            record.waker.queued.store(false, Ordering::Release);
            // Taken before the poll, which may end the session (kick, shutdown).
            let deadline = record.deadline();
            match poll_record(&broker, record, now) {
                Woken::Stay(record) => {
                    // Unreachable failure: the slot stayed reserved for it.
                    let _ = shared.table.lock().records.fill(id, record);
                }
                Woken::Resume(record, cause) => {
                    shared.table.lock().records.release(id);
                    if let Some(at) = deadline {
                        shared.timers.lock().remove(&(at, id));
                    }
                    resume(&broker, record, cause);
                }
            }
        }
        // A turn can be long (many records woken at once): let other tasks run.
        tokio::task::yield_now().await;
    }
    // Shutdown: every parked connection says goodbye from a task of its own (tracked, so
    // the broker waits for them); none parks here any more.
    let records = {
        let mut table = shared.table.lock();
        table.closed = true;
        table.records.drain()
    };
    shared.timers.lock().clear();
    for record in records {
        resume(&broker, record, Cause::Shutdown);
    }
}

/// Polls everything that can end a parked connection's quiet, with its own waker.
fn poll_record(broker: &BrokerState, mut record: Parked, now: Instant) -> Woken {
    let waker = Waker::from(record.waker.clone());
    let mut cx = Context::from_waker(&waker);
    let d = &mut record.dormant;
    if broker.shutdown.is_cancelled() {
        return Woken::Resume(record, Cause::Shutdown);
    }
    if let Some(rx) = d.kicked.as_mut()
        && let Poll::Ready(k) = Pin::new(rx).poll(&mut cx)
    {
        d.kicked = None;
        if let Ok(k) = k {
            return Woken::Resume(record, Cause::Kicked(*k));
        }
    }
    let mut rbuf = BytesMut::new();
    // Read until it would block: the watch is edge-triggered (see `readiness`).
    match super::read::read_ready(&mut d.stream, &mut rbuf) {
        Ok(0) => return Woken::Resume(record, Cause::Lost("closed by peer")),
        Ok(n) => {
            Metrics::add(&broker.metrics.bytes_received, n as u64);
            return Woken::Resume(record, Cause::Work(rbuf));
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(_) => return Woken::Resume(record, Cause::Lost("read failed")),
    }
    d.mailbox.register_parked(&waker);
    if !d.mailbox.is_empty() {
        return Woken::Resume(record, Cause::Work(rbuf));
    }
    // Resumed, the loop finds the keep-alive deadline passed and closes the connection.
    if record.deadline().is_some_and(|at| at <= now) {
        return Woken::Resume(record, Cause::Work(rbuf));
    }
    Woken::Stay(record)
}

/// Spawns the connection's task again, in its `conn` span.
fn resume(broker: &Arc<BrokerState>, record: Parked, cause: Cause) {
    Metrics::dec(&broker.metrics.connections_parked);
    let Parked { dormant, .. } = record;
    dormant.mailbox.clear_parked();
    let (rbuf, cause) = match cause {
        Cause::Work(rbuf) => (rbuf, None),
        other => (BytesMut::new(), Some(other)),
    };
    let Some(watch) = broker.parker.shared.watch() else {
        return; // unreachable: a record exists only once the watch runs
    };
    let Some(mut live) = dormant.wake(broker, watch, rbuf) else {
        return; // ended: its socket could not rejoin the reactor
    };
    let end = cause.and_then(|c| match c {
        Cause::Work(_) => None,
        Cause::Kicked(k) => Some(super::park::kicked_off(&mut live.sess, k)),
        Cause::Lost(why) => Some(End::Lost(why)),
        Cause::Shutdown => {
            live.sess.disconnect(ReasonCode::ServerShuttingDown, None);
            Some(End::Shutdown)
        }
    });
    let peer = live.conn.info.as_ref().map(|i| i.peer);
    let span = tracing::info_span!(
        "conn",
        id = live.conn.conn_id,
        peer = peer.map(tracing::field::display),
        transport = "tcp",
        client_id = live.conn.client_id()
    );
    broker
        .tasks
        .spawn(super::connected(broker.clone(), live, "tcp", end).instrument(span));
}
