//! A quiet server session in its compact form, for a connection parked without a task.
//!
//! An idle connection costs what it keeps while it waits. A quiet session ([`is_quiet`]:
//! connected, nothing in flight, no event or output waiting) needs only a few scalars to
//! go on: the limits both ways, the keep-alive and when the peer was last heard, the next
//! packet identifier, and the tables it may still hold (topic aliases, QoS 2 PUBRELs owed,
//! allocated only while in use). [`ServerSession::into_dormant`] keeps those and drops the
//! rest (the empty queues and buffers); [`DormantSession::wake`] gives back a session that
//! behaves exactly as the one put to sleep.
//!
//! [`is_quiet`]: ServerSession::is_quiet

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::{ServerSession, State, Tables};
use crate::Version;
use crate::session::SessionLimits;

/// What a quiet [`ServerSession`] keeps while its connection is parked.
#[derive(Debug)]
pub struct DormantSession {
    last_read: Instant,
    keep_alive: Duration,
    tables: Option<Box<Tables>>,
    auth_method: Option<Box<str>>,
    client_max_packet: u32,
    connect_session_expiry: u32,
    limits: SessionLimits,
    client_receive_max: u16,
    client_alias_max: u16,
    next_pkid: u16,
    version: Version,
}

impl ServerSession {
    /// The compact form of a quiet session (see the module docs); the session itself when
    /// it is not quiet (it has something to do, or is not connected).
    pub fn into_dormant(self) -> Result<DormantSession, Box<ServerSession>> {
        if !self.is_quiet() {
            return Err(Box::new(self));
        }
        Ok(DormantSession {
            last_read: self.last_read,
            keep_alive: self.keep_alive,
            tables: self.tables,
            auth_method: self.auth_method.map(String::into_boxed_str),
            client_max_packet: self.client_max_packet,
            connect_session_expiry: self.connect_session_expiry,
            limits: self.limits,
            client_receive_max: self.client_receive_max,
            client_alias_max: self.client_alias_max,
            next_pkid: self.next_pkid,
            version: self.version,
        })
    }
}

impl DormantSession {
    /// When the peer must have sent something by, if a keep-alive is in force (the same
    /// as the awake session's [`ServerSession::poll_timeout`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.keep_alive.is_zero() {
            return None;
        }
        Some(self.last_read + self.keep_alive * 3 / 2)
    }

    /// The protocol version of the connection.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The session as it was put to sleep, connected and quiet.
    pub fn wake(self) -> ServerSession {
        ServerSession {
            limits: self.limits,
            state: State::Connected,
            version: self.version,
            keep_alive: self.keep_alive,
            last_read: self.last_read,
            out: BytesMut::new(),
            events: VecDeque::new(),
            client_receive_max: self.client_receive_max,
            client_max_packet: self.client_max_packet,
            client_alias_max: self.client_alias_max,
            connect_session_expiry: self.connect_session_expiry,
            next_pkid: self.next_pkid,
            tables: self.tables,
            auth_method: self.auth_method.map(String::from),
            reauthenticating: false,
            held_from: None,
        }
    }
}
