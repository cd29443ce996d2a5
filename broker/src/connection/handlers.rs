//! What the connection does with PUBLISH, SUBSCRIBE and UNSUBSCRIBE, and the keep-alive
//! control topic (the heartbeat hint topics are in `hints`).

use std::collections::HashSet;

use switchboard_proto::session::{ServerSession, Violation};
use switchboard_proto::{QoS, ReasonCode, Subscribe, SubscriptionOptions, Unsubscribe, topic};
use tracing::{debug, info};

use super::conn::Conn;
use crate::auth::Action;
use crate::pipeline::authorise::within_limits;
use crate::pipeline::{Outcome, Publisher};
use crate::sessions::SubRecord;
use crate::store::Op;

impl Conn {
    /// Runs a PUBLISH through the pipeline and queues its acknowledgement.
    pub(super) fn on_publish(
        &mut self,
        sess: &mut ServerSession,
        p: switchboard_proto::Publish,
    ) -> Result<(), Violation> {
        if p.topic == switchboard_proto::KEEP_ALIVE_TOPIC {
            self.on_keep_alive(sess, &p);
            return Ok(());
        }
        if p.topic == switchboard_proto::NETWORK_TOPIC {
            self.on_network(sess, &p);
            return Ok(());
        }
        if p.topic == switchboard_proto::SETTLED_TOPIC {
            self.on_settled(sess, &p);
            return Ok(());
        }
        let pkid = p.pkid;
        let from = Publisher {
            identity: &self.identity,
            namespace: &self.identity.namespace,
            client_id: self.client_id(),
            session_uid: self.state.uid,
            version: self.version,
            persistent: self.state.mailbox.is_persistent(),
        };
        match self.broker.handle_publish(&from, p) {
            Outcome::Done => Ok(()),
            Outcome::Ack { code, wait } => {
                self.acks.push(sess, pkid, code, wait);
                Ok(())
            }
            Outcome::Close(v) => Err(v),
        }
    }

    /// The adaptive heartbeat: the client announces the interval it now pings at, and dead
    /// client detection follows (1.5 × it) without a reconnect. Payload: ASCII seconds.
    pub(super) fn on_keep_alive(
        &mut self,
        sess: &mut ServerSession,
        p: &switchboard_proto::Publish,
    ) {
        let max = self.broker.config.limits.max_keep_alive;
        let parsed = std::str::from_utf8(&p.payload)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok());
        let code = match parsed {
            Some(secs) if secs > 0 && (max == 0 || secs <= max) => {
                sess.set_keep_alive(secs);
                debug!(secs, "client changed its keep-alive");
                self.keep_alive_changed = true;
                ReasonCode::Success
            }
            _ => {
                debug!("invalid keep-alive control message ignored");
                ReasonCode::PayloadFormatInvalid
            }
        };
        self.ack_control(sess, p, code);
    }

    /// Applies a SUBSCRIBE in the step that decoded it, so a PUBLISH decoded after it on
    /// any connection sees the subscription. Filters are checked as the client named them
    /// (validity, limits, ACL), then mapped into the client's namespace. A filter repeated
    /// within one SUBSCRIBE counts every copy against `max_subscriptions`, but only its
    /// last copy touches the routing table and the retained set.
    pub(super) fn on_subscribe(
        &mut self,
        sess: &mut ServerSession,
        s: Subscribe,
        writes: &mut Vec<Op>,
    ) -> Result<(), Violation> {
        let b = self.broker.clone();
        let limits = &b.config.limits;
        let v5 = self.version.is_v5();
        // 3.1.1 has one failure code, 0x80.
        let refuse = |code: ReasonCode| {
            if v5 {
                code
            } else {
                ReasonCode::UnspecifiedError
            }
        };
        let id = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut granted: Vec<(String, SubscriptionOptions, bool)> = Vec::new();
        let mut added_now: HashSet<String> = HashSet::new();
        let mut new_count = 0usize;
        for (raw, opts) in &s.filters {
            let parsed = match topic::parse_filter(raw) {
                Ok(p) => p,
                Err(why) => {
                    debug!(filter = %raw, why, "invalid topic filter");
                    codes.push(refuse(ReasonCode::TopicFilterInvalid));
                    continue;
                }
            };
            if parsed.share_group.is_some() && opts.no_local {
                return Err(Violation {
                    code: ReasonCode::ProtocolError,
                    reason: "[MQTT-3.8.3-4] No Local on a shared subscription",
                });
            }
            if !within_limits(parsed.filter, limits) {
                codes.push(refuse(ReasonCode::TopicFilterInvalid));
                continue;
            }
            let Ok(internal) = self.identity.namespace.filter(raw) else {
                info!(filter = %raw, "subscription outside the client's namespace refused");
                codes.push(refuse(ReasonCode::NotAuthorized));
                continue;
            };
            if !b.acl.allowed(&self.identity, Action::Subscribe, raw) {
                debug!(filter = %raw, "subscription not authorized");
                codes.push(refuse(ReasonCode::NotAuthorized));
                continue;
            }
            let internal = internal.into_owned();
            let existed_before =
                self.state.subs.contains_key(&internal) && !added_now.contains(&internal);
            if !existed_before {
                new_count += 1;
                if self.state.subs.len() - added_now.len() + new_count > limits.max_subscriptions {
                    codes.push(refuse(ReasonCode::QuotaExceeded));
                    continue;
                }
                added_now.insert(internal.clone());
            }
            self.state
                .subs
                .insert(internal.clone(), SubRecord { opts: *opts, id });
            granted.retain(|(f, _, _)| *f != internal);
            granted.push((internal, *opts, parsed.share_group.is_some()));
            codes.push(match opts.qos {
                QoS::AtMostOnce => ReasonCode::Success,
                QoS::AtLeastOnce => ReasonCode::GrantedQos1,
                QoS::ExactlyOnce => ReasonCode::GrantedQos2,
            });
        }
        let mut existed = Vec::with_capacity(granted.len());
        for (filter, opts, _) in &granted {
            match b.routes.insert(self.state.uid, filter, *opts, id) {
                Ok(e) => existed.push(e),
                Err(e) => {
                    debug!(%filter, %e, "subscription not added");
                    existed.push(true);
                }
            }
        }
        if let Some(op) = self.persist_session() {
            // The SUBACK (and the retained messages after it) wait until it is durable.
            sess.hold_transmit();
            writes.push(op);
        }
        // SUBACK goes out before any retained message the subscriptions bring.
        sess.send_suback(s.pkid, codes);
        for ((filter, opts, shared), existed) in granted.iter().zip(existed) {
            if !shared {
                b.send_retained(self.state.uid, filter, *opts, id, existed);
            }
        }
        Ok(())
    }

    pub(super) fn on_unsubscribe(
        &mut self,
        sess: &mut ServerSession,
        u: Unsubscribe,
        writes: &mut Vec<Op>,
    ) {
        let codes = u
            .filters
            .iter()
            .map(|f| {
                let Ok(internal) = self.identity.namespace.filter(f) else {
                    return ReasonCode::NoSubscriptionExisted;
                };
                let had = self.state.subs.remove(internal.as_ref()).is_some();
                self.broker.routes.remove(self.state.uid, &internal);
                if had {
                    ReasonCode::Success
                } else {
                    ReasonCode::NoSubscriptionExisted
                }
            })
            .collect();
        if let Some(op) = self.persist_session() {
            sess.hold_transmit();
            writes.push(op);
        }
        sess.send_unsuback(u.pkid, codes);
    }
}
