//! The heartbeat hint control topics on one connection: a client declares its network on
//! [`NETWORK_TOPIC`] and gets that network's hint back on [`HINT_TOPIC`]; it reports the
//! interval it settled on with [`SETTLED_TOPIC`]. The table itself is `crate::hints`; the
//! network key's address prefix is the connection's own source address, never what the
//! client says.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::session::ServerSession;
use switchboard_proto::{HINT_TOPIC, Properties, Publish, QoS, ReasonCode};
use tracing::debug;

use super::conn::Conn;
use crate::hints::HintError;

/// The CONNACK user properties that tell an SDK what this broker's heartbeat support is
/// (MQTT 5 only: 3.1.1 has no properties): hints on `$control/network` (when the table is
/// on), the longest keep-alive it takes, and QUIC liveness counting as keep-alive.
pub(super) fn advertise(broker: &crate::BrokerState, props: &mut Properties) {
    let hints = &broker.config.heartbeat_hints;
    if hints.max_networks > 0 {
        props
            .user_properties
            .push((switchboard_proto::HINTS_PROPERTY.into(), "1".into()));
    }
    let max = match broker.config.limits.max_keep_alive {
        0 => u16::MAX,
        k => k,
    };
    props.user_properties.push((
        switchboard_proto::MAX_KEEP_ALIVE_PROPERTY.into(),
        max.to_string(),
    ));
    props
        .user_properties
        .push((switchboard_proto::QUIC_PING_PROPERTY.into(), "1".into()));
}

impl Conn {
    /// The client's source address (the one the listener saw at CONNECT).
    fn peer_ip(&self) -> Option<IpAddr> {
        let info = self.info.as_ref()?;
        Some(info.peer.ip())
    }

    /// `$control/network`: payload = network id. Answers on `$control/hint` with
    /// `"{seconds} {network}"` (0: no hint yet).
    pub(super) fn on_network(&mut self, sess: &mut ServerSession, p: &Publish) {
        let network = std::str::from_utf8(&p.payload).map(str::trim);
        let hint = match (network, self.peer_ip()) {
            (Ok(n), Some(ip)) => {
                let r = self.broker.hints.lock().hint(Instant::now(), n, ip);
                r.map(|h| (n, h))
            }
            _ => Err(HintError::BadNetwork),
        };
        let code = match hint {
            Ok((network, secs)) => {
                debug!(network, ?secs, "heartbeat hint asked");
                let answer = Publish {
                    dup: false,
                    qos: QoS::AtMostOnce,
                    retain: false,
                    topic: HINT_TOPIC.into(),
                    pkid: 0,
                    properties: Properties::default(),
                    payload: Bytes::from(format!(
                        "{:.3} {network}",
                        secs.unwrap_or_default().as_secs_f64()
                    )),
                };
                if let Err(e) = sess.publish(answer) {
                    debug!(?e, "heartbeat hint not sent");
                }
                ReasonCode::Success
            }
            Err(e) => {
                debug!(error = %e, "heartbeat hint request refused");
                ReasonCode::PayloadFormatInvalid
            }
        };
        self.ack_control(sess, p, code);
    }

    /// `$control/settled`: payload = `"{seconds} {network}"` (seconds with up to 3
    /// decimals), the idle interval the client's heartbeat proved there. Heartbeat probe
    /// logins cannot report (throwaway identities a client could mint by the thousand).
    pub(super) fn on_settled(&mut self, sess: &mut ServerSession, p: &Publish) {
        let max = self.broker.config.limits.max_keep_alive;
        let parsed = std::str::from_utf8(&p.payload)
            .ok()
            .and_then(|s| s.trim().split_once(' '))
            .and_then(|(secs, network)| {
                let secs = secs.parse::<f64>().ok()?;
                let ok = secs.is_finite() && secs > 0.0 && (max == 0 || secs <= f64::from(max));
                Some((ok.then(|| Duration::from_secs_f64(secs)), network.trim()))
            });
        let result = match (parsed, self.peer_ip()) {
            _ if self.identity.namespace == crate::namespace::Namespace::Probe => {
                Err(HintError::Off)
            }
            (Some((Some(interval), network)), Some(ip)) => self.broker.hints.lock().report(
                Instant::now(),
                network,
                ip,
                self.session_key(),
                interval,
            ),
            (Some((None, _)), _) => Err(HintError::BadInterval),
            _ => Err(HintError::BadNetwork),
        };
        let code = match result {
            Ok(()) => ReasonCode::Success,
            Err(HintError::Off) => ReasonCode::NotAuthorized,
            Err(e) => {
                debug!(error = %e, "heartbeat report refused");
                ReasonCode::PayloadFormatInvalid
            }
        };
        self.ack_control(sess, p, code);
    }

    /// Acknowledges a QoS 1 control message (3.1.1 has no reason codes: success).
    pub(super) fn ack_control(&mut self, sess: &mut ServerSession, p: &Publish, code: ReasonCode) {
        if p.qos != QoS::AtMostOnce {
            let code = if self.version.is_v5() {
                code
            } else {
                ReasonCode::Success
            };
            self.acks.push(sess, p.pkid, code, None);
        }
    }
}
