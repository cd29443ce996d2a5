//! MQTT 5 enhanced authentication on a connection: SCRAM-SHA-256
//! ([`crate::auth::scram`]) carried in AUTH packets, at CONNECT and for re-authentication
//! while connected (MQTT 5.0 section 4.12). Only `SCRAM-SHA-256` is offered, and only with
//! a password file that holds SCRAM credentials; any other Authentication Method gets
//! CONNACK 0x8C.
//!
//! The exchange at CONNECT runs within the connect timeout and under the password
//! checks' rate limits (a failed proof counts as a failed login); a wrong proof and an
//! unknown user both get 0x86. A failed re-authentication ends the connection with
//! DISCONNECT 0x87, and a re-authentication as another user is refused the same way.

use bytes::Bytes;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use switchboard_proto::packet::Auth;
use switchboard_proto::session::{Event, ServerSession, Violation};
use switchboard_proto::{Connect, ReasonCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::Io;
use super::conn::Conn;
use crate::BrokerState;
use crate::auth::ScramServer;
use crate::metrics::Metrics;

/// The one Authentication Method offered.
pub(super) const SCRAM_METHOD: &str = "SCRAM-SHA-256";

/// A finished exchange at CONNECT.
pub(super) struct Authenticated {
    pub user: String,
    /// server-final-message, sent as Authentication Data in CONNACK.
    pub server_final: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    /// Runs the exchange CONNECT asked for; `Err` is the CONNACK reason.
    pub(super) async fn enhanced_auth(
        &mut self,
        broker: &BrokerState,
        sess: &mut ServerSession,
        connect: &Connect,
        peer: IpAddr,
    ) -> Result<Authenticated, ReasonCode> {
        let creds = match (sess.auth_method(), &broker.scram) {
            (Some(SCRAM_METHOD), Some(c)) => c.clone(),
            _ => return Err(ReasonCode::BadAuthenticationMethod),
        };
        broker.verifier.admit(peer)?;
        let deadline = Duration::from_secs(broker.config.limits.connect_timeout);
        let result = tokio::time::timeout(deadline, async {
            let mut server = ScramServer::new(creds).map_err(|_| ReasonCode::ServerUnavailable)?;
            let first = connect
                .properties
                .authentication_data
                .as_deref()
                .unwrap_or_default();
            let server_first = server
                .start(first)
                .map_err(|_| ReasonCode::BadUserNameOrPassword)?;
            sess.auth_continue(server_first.into());
            let out = sess.take_transmit();
            self.wr
                .write_all(&out)
                .await
                .map_err(|_| ReasonCode::UnspecifiedError)?;
            let step = self.next_auth(broker, sess).await?;
            let data = step.properties.authentication_data.unwrap_or_default();
            let (server_final, user) = server
                .finish(&data)
                .map_err(|_| ReasonCode::BadUserNameOrPassword)?;
            Ok(Authenticated {
                user,
                server_final: server_final.into(),
            })
        })
        .await
        .unwrap_or(Err(ReasonCode::MaximumConnectTime));
        broker.verifier.record(peer, result.is_ok());
        result
    }

    /// Reads until the client's next AUTH step.
    async fn next_auth(
        &mut self,
        broker: &BrokerState,
        sess: &mut ServerSession,
    ) -> Result<Auth, ReasonCode> {
        loop {
            match sess.handle_read(Instant::now(), &mut self.rbuf) {
                Err(v) => return Err(v.code),
                Ok(()) => match sess.poll_event() {
                    Some(Event::Auth(a)) => return Ok(a),
                    Some(_) => return Err(ReasonCode::UnspecifiedError),
                    None => {}
                },
            }
            let n = super::read::read_into(&mut self.rd, &mut self.rbuf, false)
                .await
                .map_err(|_| ReasonCode::UnspecifiedError)?;
            if n == 0 {
                return Err(ReasonCode::UnspecifiedError);
            }
            Metrics::add(&broker.metrics.bytes_received, n as u64);
        }
    }
}

impl Conn {
    /// An AUTH packet while connected: a re-authentication starting or going on.
    pub(super) fn on_auth(&mut self, sess: &mut ServerSession, a: Auth) -> Result<(), Violation> {
        let refused = || Violation {
            code: ReasonCode::NotAuthorized,
            reason: "re-authentication failed",
        };
        let data = a.properties.authentication_data.unwrap_or_default();
        if a.code == ReasonCode::ReAuthenticate {
            let creds = self.broker.scram.clone().ok_or_else(refused)?;
            let mut server = ScramServer::new(creds).map_err(|_| refused())?;
            let first = server.start(&data).map_err(|_| refused())?;
            sess.auth_continue(first.into());
            self.reauth = Some(Box::new(server));
            return Ok(());
        }
        let mut server = self.reauth.take().ok_or_else(refused)?;
        let (last, user) = server.finish(&data).map_err(|_| refused())?;
        if self.identity.username.as_deref() != Some(user.as_str()) {
            return Err(refused());
        }
        sess.auth_success(Some(last.into()));
        Ok(())
    }
}

/// The Authentication Method and Data a successful CONNACK carries.
pub(super) fn connack_auth(a: &Authenticated) -> (Option<String>, Option<Bytes>) {
    (Some(SCRAM_METHOD.to_owned()), Some(a.server_final.clone()))
}

/// The identity a SCRAM login stands for: a password-file user.
pub(super) fn identity(a: &Authenticated) -> crate::auth::Identity {
    crate::auth::Identity {
        username: Some(a.user.clone()),
        ..Default::default()
    }
}
