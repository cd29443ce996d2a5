//! MQTT 5 enhanced authentication (MQTT 5.0 section 4.12).
//!
//! The machine checks the order of the exchange; the broker runs the mechanism:
//! - CONNECT with an Authentication Method: the broker answers with
//!   [`ServerSession::auth_continue`] (AUTH 0x18 with the method and its challenge), the
//!   machine then reads only AUTH 0x18 (or DISCONNECT) and hands it over as
//!   [`Event::Auth`]; the broker continues, or ends with [`ServerSession::accept`] (with the
//!   final data in [`super::Accept::properties`]) or [`ServerSession::reject`].
//! - While connected, AUTH 0x19 starts a re-authentication (section 4.12.1) with the same
//!   method: [`Event::Auth`], [`ServerSession::auth_continue`] / AUTH 0x18 rounds, then
//!   [`ServerSession::auth_success`] or [`ServerSession::disconnect`] (0x87). Other packets
//!   keep flowing meanwhile.
//!
//! Every AUTH must carry the CONNECT's Authentication Method, and a client that did not
//! name one may not send AUTH at all (section 4.12): both are protocol errors (0x82).
//!
//! Request Problem Information (section 3.1.2.11.7) needs nothing here: the machine puts a
//! Reason String or User Properties only on CONNACK and DISCONNECT, which it allows.

use bytes::Bytes;

use super::{ServerSession, State};
use crate::ReasonCode;
use crate::packet::{Auth, Packet};
use crate::properties::Properties;
use crate::session::{Event, Violation};

impl ServerSession {
    /// The Authentication Method of CONNECT, if the client asked for enhanced auth.
    pub fn auth_method(&self) -> Option<&str> {
        self.auth_method.as_deref()
    }

    /// Sends AUTH 0x18 with `data`: the client's turn in the exchange.
    pub fn auth_continue(&mut self, data: Bytes) {
        self.send_auth(ReasonCode::ContinueAuthentication, Some(data));
        if matches!(self.state, State::Connecting) {
            self.state = State::Authenticating;
        }
    }

    /// Ends a successful re-authentication: AUTH 0x00 with the final `data`, if any.
    pub fn auth_success(&mut self, data: Option<Bytes>) {
        self.reauthenticating = false;
        self.send_auth(ReasonCode::Success, data);
    }

    fn send_auth(&mut self, code: ReasonCode, data: Option<Bytes>) {
        let properties = Properties {
            authentication_method: self.auth_method.clone(),
            authentication_data: data,
            ..Properties::default()
        };
        Packet::Auth(Auth { code, properties }).encode(self.version, &mut self.out);
    }

    /// An AUTH packet from the client.
    pub(super) fn handle_auth(&mut self, a: Auth) -> Result<(), Violation> {
        let Some(method) = &self.auth_method else {
            return Err(Violation::new(
                ReasonCode::ProtocolError,
                "[MQTT 5.0 §4.12] AUTH without an authentication method in CONNECT",
            ));
        };
        if a.properties.authentication_method.as_ref() != Some(method) {
            return Err(Violation::new(
                ReasonCode::ProtocolError,
                "[MQTT 5.0 §4.12] AUTH with another authentication method than CONNECT",
            ));
        }
        let expected = match self.state {
            State::Authenticating => ReasonCode::ContinueAuthentication,
            State::Connected if self.reauthenticating => ReasonCode::ContinueAuthentication,
            State::Connected => ReasonCode::ReAuthenticate,
            _ => {
                return Err(Violation::new(
                    ReasonCode::ProtocolError,
                    "[MQTT 5.0 §4.12] AUTH out of order",
                ));
            }
        };
        if a.code != expected {
            return Err(Violation::new(
                ReasonCode::ProtocolError,
                "[MQTT 5.0 §3.15.2.1] AUTH reason code out of order",
            ));
        }
        match self.state {
            // The broker decides; reading pauses as after CONNECT.
            State::Authenticating => self.state = State::Connecting,
            _ => self.reauthenticating = true,
        }
        self.events.push_back(Event::Auth(a));
        Ok(())
    }
}
