//! The publish pipeline, top to bottom in one place:
//!
//! 1. **decode** — done by `switchboard_proto`'s server session before we get here;
//! 2. **authorise** ([`authorise`]) — topic limits, the namespace of the publisher's
//!    tenant, the ACL;
//! 3. **intercept** ([`intercept`]) — a service that owns the topic (the IM service owns
//!    `$im/req/`) takes the message over;
//! 4. **route** ([`crate::routing`]) — which sessions want it (ids only);
//! 5. **deliver** ([`crate::delivery`]) — into their mailboxes, with store ops for
//!    persistent copies;
//! 6. **acknowledge** ([`ack`]) — after the commit, in arrival order.
//!
//! [`BrokerState::handle_publish`] runs stages 2–5 and returns what stage 6 must do; the
//! connection task owns the [`ack::AckQueue`] and the socket.

pub mod ack;
pub mod authorise;
pub mod intercept;

use std::sync::Arc;
use std::time::Instant;

use switchboard_proto::session::Violation;
use switchboard_proto::{Publish, QoS, ReasonCode, Version};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::BrokerState;
use crate::auth::Identity;
use crate::message::Message;
use crate::namespace::Namespace;
use crate::store::Op;
use ack::AckWait;
use authorise::Refusal;
use intercept::Origin;

/// The publishing connection, as the pipeline needs it.
#[derive(Debug, Clone, Copy)]
pub struct Publisher<'a> {
    pub identity: &'a Identity,
    pub namespace: &'a Namespace,
    pub client_id: &'a str,
    /// The publishing session's id (No Local).
    pub session_uid: u64,
    pub version: Version,
    /// The session outlives the connection (QoS 2 state is stored).
    pub persistent: bool,
}

/// What the connection must do about one PUBLISH.
#[derive(Debug)]
pub enum Outcome {
    /// QoS 0: nothing to acknowledge.
    Done,
    /// Acknowledge with `code`, after `wait` if set (in arrival order).
    Ack {
        code: ReasonCode,
        wait: Option<AckWait>,
    },
    /// Close the connection: MQTT 3.1.1 cannot refuse a QoS 1/2 message, so the client
    /// must not get an acknowledgement and will send it again on its next connection.
    Close(Violation),
}

impl BrokerState {
    /// Runs one incoming PUBLISH through the pipeline.
    pub fn handle_publish(self: &Arc<Self>, from: &Publisher<'_>, p: Publish) -> Outcome {
        let now = Instant::now();
        let (qos, pkid, v5) = (p.qos, p.pkid, from.version.is_v5());
        // 2. authorise
        let topic = match authorise::check(self, from, &p.topic) {
            Ok(std::borrow::Cow::Owned(t)) => Some(t),
            Ok(std::borrow::Cow::Borrowed(_)) => None,
            Err(r) => return refuse(qos, v5, r),
        };
        let store = self.store().cloned();
        if qos != QoS::AtMostOnce
            && let Some(st) = &store
        {
            if !st.healthy() {
                warn!("refusing QoS {} publish: storage is failing", qos as u8);
                // Find out whether it works again: the next publish is accepted if so.
                st.write(vec![Op::Probe], None);
                return refuse(qos, v5, Refusal::StorageFailing);
            }
            if st.congested() || st.over_budget(p.payload.len() as u64 + p.topic.len() as u64) {
                return refuse(qos, v5, Refusal::Quota);
            }
        }
        let mut msg = Message::from_publish(p, from.session_uid, now);
        if let Some(t) = topic {
            msg.topic = t;
        }
        // 3. intercept
        if let Some(i) = self.interceptors.find(&msg.topic) {
            let origin = Origin {
                identity: from.identity,
                namespace: from.namespace,
                client_id: from.client_id,
                version: from.version,
            };
            let r = i.publish(self, &origin, msg);
            return match qos {
                QoS::AtMostOnce => Outcome::Done,
                _ => Outcome::Ack {
                    code: if v5 || !r.code.is_error() {
                        r.code
                    } else {
                        ReasonCode::Success
                    },
                    wait: r.wait,
                },
            };
        }
        // 4 + 5. route and deliver
        let msg = Arc::new(msg);
        let mut ops = Vec::new();
        if msg.retain {
            let caps = crate::retained::RetainedCaps::from_limits(&self.config.limits);
            match self.retained.set(&msg, from.client_id, &caps, now) {
                Ok(op) if store.is_some() => ops.push(op),
                Ok(_) => {}
                // Over a retained cap: refused as a whole, neither stored nor routed.
                Err(_) => return refuse(qos, v5, Refusal::Quota),
            }
        }
        let mut routed = self.publish(msg);
        ops.extend(routed.ops);
        let remote = routed.remote.take();
        let code = if routed.refused > 0 {
            ReasonCode::QuotaExceeded
        } else if routed.delivered == 0 && !routed.forwarded && v5 {
            ReasonCode::NoMatchingSubscribers
        } else {
            ReasonCode::Success
        };
        let code = if v5 { code } else { ReasonCode::Success };
        if qos == QoS::ExactlyOnce && from.persistent && store.is_some() {
            // Durable with the message: a resend after a crash is recognised, not routed
            // twice.
            ops.push(Op::AwaitRel {
                client_id: from.client_id.to_owned(),
                pkid,
            });
        }
        // 6. what the acknowledgement waits for (in cluster mode also the other nodes'
        // commits of their copies: `cluster/hop.rs`)
        if let Some(remote) = remote.filter(|_| qos != QoS::AtMostOnce) {
            let committed = match &store {
                Some(st) if !ops.is_empty() => {
                    let (tx, rx) = oneshot::channel();
                    st.write(ops, Some(tx));
                    Some(rx)
                }
                _ => None,
            };
            // Polled by the connection with its other acknowledgements (no task per
            // message); a failed commit becomes 0x80, or a 3.1.1 close.
            return Outcome::Ack {
                code,
                wait: Some(AckWait::Cluster(committed, remote)),
            };
        }
        match (&store, qos) {
            (Some(st), QoS::AtMostOnce) => {
                st.write(ops, None);
                Outcome::Done
            }
            (_, QoS::AtMostOnce) => Outcome::Done,
            (Some(st), _) if !ops.is_empty() => {
                let (tx, rx) = oneshot::channel();
                st.write(ops, Some(tx));
                Outcome::Ack {
                    code,
                    wait: Some(AckWait::Store(rx)),
                }
            }
            _ => Outcome::Ack { code, wait: None },
        }
    }
}

/// The outcome of a refused publish.
fn refuse(qos: QoS, v5: bool, r: Refusal) -> Outcome {
    debug!(reason = %r, "publish refused");
    if qos == QoS::AtMostOnce {
        return match r {
            Refusal::TopicLimits if !v5 => Outcome::Close(r.violation()),
            _ => Outcome::Done,
        };
    }
    match (v5, r) {
        (true, r) => Outcome::Ack {
            code: r.code(),
            wait: None,
        },
        // 3.1.1 has no way to say no to an unauthorised publish: acknowledge and drop, as
        // mosquitto does.
        (false, Refusal::NotAuthorized) => Outcome::Ack {
            code: ReasonCode::Success,
            wait: None,
        },
        (false, r) => Outcome::Close(r.violation()),
    }
}

#[cfg(test)]
mod tests;
