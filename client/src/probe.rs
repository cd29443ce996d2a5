//! A heartbeat probe: a disposable MQTT connection that stays idle for a candidate interval,
//! then pings and waits a short time for the answer. It tells the [`crate::heartbeat`]
//! policy whether the network keeps an idle connection that long, without risking the link.
//!
//! It opens its own transport (its own TCP connection, or its own QUIC endpoint and UDP
//! socket), so the NAT gives it its own mapping. It connects with an empty client
//! identifier, clean start and no session, so the broker assigns a throwaway identity.
//! Over QUIC a forgotten mapping does not break the connection (the broker follows the new
//! address), so an answered ping still fails the probe when the broker had to validate a
//! new path (a PATH_CHALLENGE arrived): pushes sent before the ping would have been lost.

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchboard_proto::session::{ClientConfig, ClientError, ClientEvent, ClientSession};
use switchboard_proto::{ReasonCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::driver::now;
use crate::transport::{Connector, Endpoint};

/// What a probe learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The ping after the idle interval was answered: the interval works.
    Answered,
    /// It was not (or the connection died while idle): the interval does not work.
    Unanswered(String),
    /// The broker refused the probe's CONNECT (its login rules do not allow a second,
    /// anonymous-identifier connection): probe connections will not work with it.
    Refused(String),
    /// The probe could not test anything (no connection, closed by the broker...).
    Inconclusive(String),
}

/// Where and how to probe.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub endpoint: Endpoint,
    pub ca_cert: Option<PathBuf>,
    pub server_name: String,
    pub connect_timeout: Duration,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub idle: Duration,
    pub reply_timeout: Duration,
}

/// Runs one probe to its end (idle + reply timeout at most, after connecting).
pub(crate) async fn run(spec: Spec) -> Outcome {
    let mut connector = match Connector::new(
        spec.ca_cert.as_ref(),
        &spec.server_name,
        spec.connect_timeout,
    ) {
        Ok(c) => c,
        Err(e) => return Outcome::Inconclusive(e.to_string()),
    };
    let (mut s, quic) = match connector.open_with_quic(&spec.endpoint).await {
        Ok(o) => o,
        Err(e) => return Outcome::Inconclusive(e.to_string()),
    };
    let mut session = ClientSession::new(
        ClientConfig {
            version: Version::V5,
            clean_start: true,
            keep_alive: spec.idle,
            ping_timeout: spec.reply_timeout,
            connack_timeout: spec.connect_timeout,
            session_expiry: 0,
            username: spec.username.clone(),
            password: spec.password.clone(),
            ..ClientConfig::new("")
        },
        now(),
    );
    session.connect(now());
    let mut rbuf = BytesMut::with_capacity(256);
    let mut challenges_at_connack = None;
    let outcome = loop {
        if session.has_transmit() {
            let out = session.take_transmit();
            if let Err(e) = s.write_all(&out).await {
                break lost(challenges_at_connack.is_some(), e.to_string());
            }
        }
        let timer = session.poll_timeout();
        let sleep = async move {
            match timer {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let r = tokio::select! {
            r = s.read_buf(&mut rbuf) => match r {
                Ok(0) => break Outcome::Inconclusive("closed by the broker".into()),
                Err(e) => break lost(challenges_at_connack.is_some(), e.to_string()),
                Ok(_) => session.handle_read(now(), &mut rbuf),
            },
            _ = sleep => session.handle_timeout(now()),
        };
        match r {
            Ok(()) => {}
            Err(ClientError::PingTimeout) => {
                break Outcome::Unanswered(format!(
                    "no PINGRESP within {:?} after {:?} idle",
                    spec.reply_timeout, spec.idle
                ));
            }
            Err(ClientError::Refused { code, .. }) => break Outcome::Refused(code.to_string()),
            Err(e) => break Outcome::Inconclusive(e.to_string()),
        }
        let mut done = None;
        while let Some(e) = session.poll_event() {
            match e {
                ClientEvent::Connected { .. } => {
                    if session.keep_alive() < spec.idle {
                        done = Some(Outcome::Unanswered(format!(
                            "the broker caps keep-alive at {:?}",
                            session.keep_alive()
                        )));
                    }
                    challenges_at_connack = Some(path_challenges(quic.as_ref()));
                }
                ClientEvent::Pong => {
                    let before = challenges_at_connack.unwrap_or(0);
                    done = Some(if path_challenges(quic.as_ref()) > before {
                        Outcome::Unanswered("the NAT forgot the mapping (QUIC migrated)".into())
                    } else {
                        Outcome::Answered
                    });
                }
                _ => {}
            }
        }
        if let Some(o) = done {
            break o;
        }
    };
    session.disconnect(ReasonCode::Success);
    let out = session.take_transmit();
    let _ = tokio::time::timeout(spec.reply_timeout, async {
        let _ = s.write_all(&out).await;
        let _ = s.shutdown().await;
    })
    .await;
    if let Some(q) = quic {
        q.close(quinn::VarInt::from_u32(0), b"probe done");
    }
    outcome
}

/// The connection failed: after CONNACK that is the answer (the idle interval killed it).
fn lost(connected: bool, why: String) -> Outcome {
    if connected {
        Outcome::Unanswered(why)
    } else {
        Outcome::Inconclusive(why)
    }
}

/// PATH_CHALLENGE frames received: the peer saw us from a new address.
pub(crate) fn path_challenges(quic: Option<&quinn::Connection>) -> u64 {
    quic.map_or(0, |c| c.stats().frame_rx.path_challenge)
}
