//! The driver's heartbeat work: probe connections beside the link (start, outcome), the
//! interval the link uses and announces on `$control/keepalive`, and the network hints
//! (`$control/network` → `$control/hint`, `$control/settled`; docs/protocol.md 2.5).

use std::time::Duration;

use bytes::Bytes;
use switchboard_proto::{Properties, Publish, QoS};

use super::{
    Driver, PLANNED_RECONNECT_ABOVE, PROBE_BACKOFF_MAX, PROBE_BACKOFF_MIN, Probe, Tick, now,
};
use crate::heartbeat::Policy;
use crate::{Event, probe};

impl Driver {
    /// Starts a probe when the policy wants one and none is running.
    pub(super) fn start_probe(&mut self) {
        if self.hint_wait.is_some_and(|t| now() >= t) {
            tracing::debug!("no heartbeat hint from the broker: learning from scratch");
            self.hint_wait = None;
        }
        if self.probe.is_some()
            || !self.session.is_connected()
            || self.probe_paused_until.is_some_and(|t| now() < t)
            || self.hint_wait.is_some()
        {
            return;
        }
        let Some(endpoint) = self.endpoint.clone() else {
            return;
        };
        let Some(idle) = self.hb.next_probe(now()) else {
            return;
        };
        let spec = probe::Spec {
            endpoint,
            ca_cert: self.cfg.ca_cert.clone(),
            server_name: self.cfg.server_name.clone(),
            connect_timeout: self.cfg.connect_timeout,
            username: self.cfg.username.clone(),
            password: self.cfg.password.clone(),
            idle,
            reply_timeout: self.hb.config().probe_timeout,
        };
        tracing::debug!(?idle, "heartbeat probe started");
        self.probe = Some(Probe {
            idle,
            task: tokio::spawn(probe::run(spec)),
        });
    }

    /// A probe ended: the policy learns from it.
    pub(super) async fn probe_done(&mut self, r: Result<probe::Outcome, tokio::task::JoinError>) {
        let Some(p) = self.probe.take() else {
            return;
        };
        let answered = match r {
            Ok(probe::Outcome::Answered) => true,
            Ok(probe::Outcome::Unanswered(why)) => {
                tracing::debug!(idle = ?p.idle, %why, "heartbeat probe failed");
                false
            }
            Ok(probe::Outcome::Refused(why)) => {
                // The broker will not take probe connections: learn on the link itself.
                tracing::info!(%why, "heartbeat probe connections refused: probing in band");
                self.hb.set_in_band(true);
                let interval = self.hb.interval();
                self.use_interval(interval).await;
                return;
            }
            Ok(probe::Outcome::Inconclusive(why)) => {
                // Nothing learned (no connection, closed...): try again later, less often.
                tracing::debug!(idle = ?p.idle, %why, "heartbeat probe inconclusive");
                self.probe_paused_until = Some(now() + self.probe_backoff);
                self.probe_backoff = (self.probe_backoff * 2).min(PROBE_BACKOFF_MAX);
                return;
            }
            Err(_) => return,
        };
        self.probe_backoff = PROBE_BACKOFF_MIN;
        let _ = self
            .events
            .send(Event::Probe {
                idle: p.idle,
                answered,
            })
            .await;
        let phase = self.hb.phase();
        if let Some(next) = self.hb.on_probe(now(), p.idle, answered) {
            self.use_interval(next).await;
        } else if self.hb.phase() != phase {
            // Settled by a failure above the interval in use: same interval, new phase.
            let _ = self
                .events
                .send(Event::Heartbeat {
                    interval: self.hb.interval(),
                    phase: self.hb.phase(),
                })
                .await;
        }
        self.report_settled();
    }

    /// What the broker's CONNACK says of its heartbeat support (docs/protocol.md 2.5):
    /// hints on `$control/network`, and its maximum keep-alive, the search's ceiling. A
    /// broker that says nothing (mosquitto, 3.1.1) gets no hint request, so nothing waits.
    pub(super) fn on_connack_properties(&mut self, props: &[(String, String)]) {
        let get = |key: &str| props.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim());
        self.hints_offered = get(switchboard_proto::HINTS_PROPERTY) == Some("1");
        self.keep_alive_follows = get(switchboard_proto::MAX_KEEP_ALIVE_PROPERTY).is_some();
        if let Some(max) = get(switchboard_proto::MAX_KEEP_ALIVE_PROPERTY)
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|&v| v > 0)
        {
            self.hb.set_ceiling(Duration::from_secs(u64::from(max)));
            tracing::debug!(max, "broker's maximum keep-alive");
        }
    }

    /// Asks the broker for the heartbeat hint of the network in use, when one would help
    /// (nothing learned there yet) and the broker offers hints. Probes wait for the
    /// answer, a connect timeout at most.
    pub(super) fn ask_hint(&mut self) {
        if !self.hints_offered || !self.hb.wants_hint() || !self.session.is_connected() {
            return;
        }
        let id = crate::heartbeat::network_id(self.hb.network());
        if self.control(switchboard_proto::NETWORK_TOPIC, id) {
            self.hint_wait = Some(now() + self.cfg.connect_timeout);
        }
    }

    /// The broker's answer on `$control/hint`: `"{seconds} {network id}"`, 0 for none.
    pub(super) fn on_hint(&mut self, payload: &[u8]) {
        let parsed = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.trim().split_once(' '))
            .and_then(|(secs, id)| Some((secs.parse::<f64>().ok()?, id.to_owned())));
        let Some((secs, id)) = parsed else {
            tracing::debug!("malformed heartbeat hint ignored");
            return;
        };
        let network = self.hb.network().to_owned();
        if id != crate::heartbeat::network_id(&network) {
            return; // the answer for a network the device has left
        }
        self.hint_wait = None;
        if secs.is_finite() && secs > 0.0 {
            tracing::debug!(network, secs, "heartbeat hint");
            self.hb
                .set_hint(&network, Duration::from_secs_f64(secs.min(65_535.0)));
        }
    }

    /// Reports what the heartbeat proved on this network, once per new value, so the next
    /// devices there start from it.
    pub(super) fn report_settled(&mut self) {
        let Some(proven) = self.hb.proven().filter(|_| self.hints_offered) else {
            return;
        };
        let network = self.hb.network().to_owned();
        if self.reported.as_ref() == Some(&(network.clone(), proven)) {
            return;
        }
        let payload = format!(
            "{:.3} {}",
            proven.as_secs_f64(),
            crate::heartbeat::network_id(&network)
        );
        if self.control(switchboard_proto::SETTLED_TOPIC, payload) {
            self.reported = Some((network, proven));
        }
    }

    /// Publishes a QoS 0 control message to the broker; false when it could not be sent.
    pub(super) fn control(&mut self, topic: &str, payload: String) -> bool {
        let p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            pkid: 0,
            properties: Properties::default(),
            payload: Bytes::from(payload),
        };
        match self.session.publish(now(), p) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(error = %e, topic, "control message not sent");
                false
            }
        }
    }

    /// The link pings at `interval` from now on: the session, the broker and the app hear.
    pub(super) async fn use_interval(&mut self, interval: Duration) {
        self.set_link_interval(interval);
        if self.session.is_connected() {
            self.announce(interval);
        }
        let _ = self
            .events
            .send(Event::Heartbeat {
                interval,
                phase: self.hb.phase(),
            })
            .await;
    }

    /// Tells the broker the heartbeat interval now in use.
    pub(super) fn announce(&mut self, interval: Duration) {
        let secs = interval.as_secs_f64().ceil().max(1.0) as u16;
        self.control(switchboard_proto::KEEP_ALIVE_TOPIC, secs.to_string());
    }
}

impl Driver {
    /// The link's ping interval (MQTT PINGREQ or QUIC ping), and a planned reconnect when
    /// it outgrew the keep-alive of a broker that takes no new one on the link (mosquitto):
    /// such a broker closes a link silent for 1.5 × the CONNECT keep-alive.
    pub(super) fn set_link_interval(&mut self, interval: Duration) {
        match self.quic_ping.as_mut() {
            Some(q) => q.interval = interval,
            None => self.session.set_keep_alive(interval),
        }
        let limit = self.link_keep_alive.mul_f64(PLANNED_RECONNECT_ABOVE);
        if self.session.is_connected() && !self.keep_alive_follows && interval > limit {
            tracing::debug!(
                ?interval,
                keep_alive = ?self.link_keep_alive,
                "heartbeat outgrew the link's keep-alive: planned reconnect"
            );
            self.planned_reconnect = true;
        }
    }

    /// The link's ping was answered (PINGRESP, or a QUIC ping's acknowledgement): the
    /// heartbeat learns from it.
    pub(super) async fn on_link_pong(&mut self) {
        let migrated = match self.link_quic.as_mut() {
            Some((q, seen)) => {
                let now_seen = probe::path_challenges(Some(q));
                std::mem::replace(seen, now_seen) < now_seen
            }
            None => false,
        };
        let next = if migrated {
            // The NAT forgot the link's mapping while it idled; QUIC followed the new one,
            // but pushes in between were held up: a loss to learn from, without a
            // reconnect.
            Some(self.hb.on_lost(now()))
        } else {
            self.hb.on_pong(now())
        };
        if let Some(next) = next {
            self.use_interval(next).await;
        }
        self.report_settled();
    }

    /// The QUIC heartbeat's timer (see [`super::quic_ping`]); `None` when it is off.
    pub(super) fn quic_tick(&mut self) -> Option<Tick> {
        let conn = self.link_quic.as_ref().map(|(c, _)| c.clone())?;
        let timeout = self.cfg.ping_timeout;
        Some(self.quic_ping.as_mut()?.tick(&conn, now(), timeout))
    }
}
