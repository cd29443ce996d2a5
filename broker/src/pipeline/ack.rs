//! The acknowledge stage: PUBACK/PUBREC leave in the order the PUBLISHes arrived
//! ([MQTT-4.6.0-2]), each after its store commit if it has one.
//!
//! An acknowledgement that needs no commit still waits behind earlier ones that do, so a
//! refused or intercepted publish never overtakes a durable one. A failed commit becomes
//! 0x80 for MQTT 5; MQTT 3.1.1 has no negative acknowledgement, so the connection must be
//! closed without one (the client sends the message again): [`AckQueue::flush`] says so.

use std::collections::VecDeque;

use switchboard_proto::ReasonCode;
use switchboard_proto::session::{ServerSession, Violation};
use tokio::sync::oneshot;

use crate::store::Durable;

/// What an acknowledgement waits for.
#[derive(Debug)]
pub enum AckWait {
    /// A store commit: the code stands if it succeeds, 0x80 if it fails.
    Store(Durable),
    /// A service that decides the code when its work is done (an intercepted request).
    Code(oneshot::Receiver<ReasonCode>),
    /// Cluster mode: this node's store commit (if any; 0x80 if it fails), then the other
    /// nodes' commits of their copies (`cluster::hop`; it closes when they are done or
    /// given up). Polled by the connection like the others: no task per message.
    Cluster(Option<Durable>, oneshot::Receiver<()>),
}

/// An acknowledgement waiting for the store or a service.
#[derive(Debug)]
struct PendingAck {
    pkid: u16,
    code: ReasonCode,
    durable: Option<AckWait>,
}

/// What became of what the front acknowledgement waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Committed: the code stands.
    Done,
    /// The commit failed or the service went away.
    Failed,
    /// The service decided this code.
    Code(ReasonCode),
}

/// Acknowledgements of one connection, in arrival order.
#[derive(Debug)]
pub struct AckQueue {
    pending: VecDeque<PendingAck>,
    v5: bool,
}

/// The violation that closes a 3.1.1 connection whose message could not be stored.
pub const STORE_FAILED_V3: Violation = Violation {
    code: ReasonCode::UnspecifiedError,
    reason: "message could not be stored; closing so that the client sends it again",
};

impl AckQueue {
    /// An empty queue for a connection of MQTT 5 (`v5`) or 3.1.x.
    pub fn new(v5: bool) -> Self {
        AckQueue {
            pending: VecDeque::new(),
            v5,
        }
    }

    /// Acknowledges now, or queues behind acknowledgements still waiting for the store.
    pub fn push(
        &mut self,
        sess: &mut ServerSession,
        pkid: u16,
        code: ReasonCode,
        durable: Option<AckWait>,
    ) {
        if durable.is_none() && self.pending.is_empty() {
            sess.ack_publish(pkid, code);
            return;
        }
        self.pending.push_back(PendingAck {
            pkid,
            code,
            durable,
        });
    }

    /// True while the front acknowledgement waits for a commit.
    pub fn front_waits(&self) -> bool {
        self.pending.front().is_some_and(|p| p.durable.is_some())
    }

    /// Waits for the front acknowledgement's commit (pending forever if there is none).
    pub async fn front_commit(&mut self) -> Commit {
        match self.pending.front_mut().and_then(|p| p.durable.as_mut()) {
            Some(AckWait::Store(rx)) => match rx.await {
                Ok(Ok(_)) => Commit::Done,
                _ => Commit::Failed,
            },
            Some(AckWait::Code(rx)) => match rx.await {
                Ok(code) => Commit::Code(code),
                Err(_) => Commit::Failed,
            },
            Some(AckWait::Cluster(committed, remote)) => {
                if let Some(c) = committed {
                    let ok = matches!(c.await, Ok(Ok(_)));
                    // No await between the commit's answer and this: cancel-safe.
                    *committed = None;
                    if !ok {
                        return Commit::Failed;
                    }
                }
                let _ = remote.await;
                Commit::Done
            }
            None => std::future::pending().await,
        }
    }

    /// Records the front commit's outcome (a failure turns its code into 0x80), then sends
    /// every acknowledgement at the front that no longer waits.
    pub fn front_committed(
        &mut self,
        sess: &mut ServerSession,
        commit: Commit,
    ) -> Result<(), Violation> {
        self.settle_front(commit)?;
        self.flush(sess)
    }

    /// Applies what the front acknowledgement waited for to its code.
    fn settle_front(&mut self, commit: Commit) -> Result<(), Violation> {
        let Some(front) = self.pending.front_mut() else {
            return Ok(());
        };
        front.durable = None;
        match commit {
            Commit::Done => {}
            Commit::Code(code) => front.code = code,
            Commit::Failed if !self.v5 => return Err(STORE_FAILED_V3),
            Commit::Failed => front.code = ReasonCode::UnspecifiedError,
        }
        Ok(())
    }

    /// Sends every acknowledgement at the front whose commit is done. `Err` for a 3.1.1
    /// connection whose message could not be stored: close it.
    pub fn flush(&mut self, sess: &mut ServerSession) -> Result<(), Violation> {
        while let Some(front) = self.pending.front_mut() {
            let state = match &mut front.durable {
                None => Commit::Done,
                Some(AckWait::Store(rx)) => match rx.try_recv() {
                    Ok(Ok(_)) => Commit::Done,
                    Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => Commit::Failed,
                    Err(oneshot::error::TryRecvError::Empty) => return Ok(()),
                },
                Some(AckWait::Code(rx)) => match rx.try_recv() {
                    Ok(code) => Commit::Code(code),
                    Err(oneshot::error::TryRecvError::Closed) => Commit::Failed,
                    Err(oneshot::error::TryRecvError::Empty) => return Ok(()),
                },
                Some(AckWait::Cluster(committed, remote)) => match try_cluster(committed, remote) {
                    Some(c) => c,
                    None => return Ok(()),
                },
            };
            self.settle_front(state)?;
            if let Some(done) = self.pending.pop_front() {
                sess.ack_publish(done.pkid, done.code);
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Where a cluster acknowledgement stands without waiting: `None` while the commit or
/// the other nodes are still to come.
fn try_cluster(
    committed: &mut Option<Durable>,
    remote: &mut oneshot::Receiver<()>,
) -> Option<Commit> {
    if let Some(c) = committed {
        match c.try_recv() {
            Ok(Ok(_)) => *committed = None,
            Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => return Some(Commit::Failed),
            Err(oneshot::error::TryRecvError::Empty) => return None,
        }
    }
    match remote.try_recv() {
        Err(oneshot::error::TryRecvError::Empty) => None,
        _ => Some(Commit::Done),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::BytesMut;
    use switchboard_proto::session::{Accept, Event, SessionLimits};
    use switchboard_proto::{
        Connect, Packet, Properties, PubResponse, Publish, QoS, ReasonCode, Version,
    };

    use super::*;
    use crate::store::Applied;

    /// A connected v5 server session that has received QoS 1 publishes 1..=n.
    fn session_with_publishes(n: u16) -> ServerSession {
        let now = Instant::now();
        let mut sess = ServerSession::new(SessionLimits::default(), now);
        let mut buf = BytesMut::new();
        Packet::Connect(Box::new(Connect {
            version: Version::V5,
            client_id: "c".into(),
            clean_start: true,
            keep_alive: 0,
            properties: Properties::default(),
            will: None,
            username: None,
            password: None,
        }))
        .encode(Version::V5, &mut buf);
        sess.handle_read(now, &mut buf).expect("connect");
        let Some(Event::Connect(c)) = sess.poll_event() else {
            panic!("no connect event");
        };
        sess.accept(&c, Accept::default());
        for pkid in 1..=n {
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "t".into(),
                pkid,
                properties: Properties::default(),
                payload: bytes::Bytes::new(),
            })
            .encode(Version::V5, &mut buf);
        }
        sess.handle_read(now, &mut buf).expect("publishes");
        while sess.poll_event().is_some() {}
        sess.take_transmit(); // CONNACK
        sess
    }

    /// The acknowledgements the session sent: (pkid, code).
    fn acks(sess: &mut ServerSession) -> Vec<(u16, ReasonCode)> {
        let mut out = BytesMut::from(&sess.take_transmit()[..]);
        let mut v = Vec::new();
        while let Ok(Some(Packet::PubAck(PubResponse { pkid, code, .. }))) =
            Packet::read(&mut out, Version::V5, usize::MAX)
        {
            v.push((pkid, code));
        }
        v
    }

    #[test]
    fn acks_leave_in_arrival_order_behind_commits() {
        let mut sess = session_with_publishes(3);
        let mut q = AckQueue::new(true);
        let (tx1, rx1) = tokio::sync::oneshot::channel();
        q.push(&mut sess, 1, ReasonCode::Success, Some(AckWait::Store(rx1)));
        // A refusal that needs no commit must not overtake publish 1.
        q.push(&mut sess, 2, ReasonCode::NotAuthorized, None);
        let (tx3, rx3) = tokio::sync::oneshot::channel();
        q.push(&mut sess, 3, ReasonCode::Success, Some(AckWait::Store(rx3)));
        q.flush(&mut sess).expect("v5");
        assert!(acks(&mut sess).is_empty());
        tx3.send(Ok(Applied::default())).expect("send");
        q.flush(&mut sess).expect("v5");
        assert!(acks(&mut sess).is_empty(), "3 waits for 1");
        tx1.send(Err(crate::store::StoreError::Io("disk".into())))
            .expect("send");
        q.flush(&mut sess).expect("v5");
        assert_eq!(
            acks(&mut sess),
            [
                (1, ReasonCode::UnspecifiedError),
                (2, ReasonCode::NotAuthorized),
                (3, ReasonCode::Success)
            ]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn failed_commit_closes_a_v3_connection_instead_of_acknowledging() {
        let mut sess = session_with_publishes(1);
        let mut q = AckQueue::new(false);
        let (tx, rx) = tokio::sync::oneshot::channel();
        q.push(&mut sess, 1, ReasonCode::Success, Some(AckWait::Store(rx)));
        drop(tx);
        assert_eq!(q.flush(&mut sess), Err(STORE_FAILED_V3));
        assert!(acks(&mut sess).is_empty(), "no false PUBACK");
    }

    #[test]
    fn a_cluster_ack_waits_for_the_commit_then_the_other_nodes() {
        let mut sess = session_with_publishes(2);
        let mut q = AckQueue::new(true);
        let (stored, rx) = tokio::sync::oneshot::channel();
        let (nodes, remote) = tokio::sync::oneshot::channel::<()>();
        q.push(
            &mut sess,
            1,
            ReasonCode::Success,
            Some(AckWait::Cluster(Some(rx), remote)),
        );
        q.push(&mut sess, 2, ReasonCode::Success, None);
        q.flush(&mut sess).expect("v5");
        assert!(acks(&mut sess).is_empty());
        stored.send(Ok(Applied::default())).expect("send");
        q.flush(&mut sess).expect("v5");
        assert!(
            acks(&mut sess).is_empty(),
            "the other nodes still have to commit"
        );
        drop(nodes);
        q.flush(&mut sess).expect("v5");
        assert_eq!(
            acks(&mut sess),
            [(1, ReasonCode::Success), (2, ReasonCode::Success)]
        );
        // A failed local commit is 0x80 whatever the other nodes do.
        let mut sess = session_with_publishes(1);
        let (stored, rx) = tokio::sync::oneshot::channel();
        let (_nodes, remote) = tokio::sync::oneshot::channel::<()>();
        q.push(
            &mut sess,
            1,
            ReasonCode::Success,
            Some(AckWait::Cluster(Some(rx), remote)),
        );
        drop(stored);
        q.flush(&mut sess).expect("v5");
        assert_eq!(acks(&mut sess), [(1, ReasonCode::UnspecifiedError)]);
    }

    #[tokio::test]
    async fn front_commit_of_a_cluster_ack_resolves_when_both_are_done() {
        let mut q = AckQueue::new(true);
        let mut sess = session_with_publishes(1);
        let (stored, rx) = tokio::sync::oneshot::channel();
        let (nodes, remote) = tokio::sync::oneshot::channel::<()>();
        q.push(
            &mut sess,
            1,
            ReasonCode::Success,
            Some(AckWait::Cluster(Some(rx), remote)),
        );
        stored.send(Ok(Applied::default())).expect("send");
        nodes.send(()).expect("send");
        assert_eq!(q.front_commit().await, Commit::Done);
    }
}
