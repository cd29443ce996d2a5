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
    /// What few quiet sessions hold, in one box: none for most.
    rare: Option<Box<Rare>>,
    client_max_packet: u32,
    connect_session_expiry: u32,
    limits: SessionLimits,
    client_receive_max: u16,
    client_alias_max: u16,
    next_pkid: u16,
    /// Whole seconds (CONNECT, CONNACK and the heartbeat hints all set it so).
    keep_alive_s: u16,
    version: Version,
}

/// The tables a quiet session may still hold (topic aliases, QoS 2 PUBRELs owed) and the
/// enhanced-authentication method.
#[derive(Debug)]
struct Rare {
    tables: Option<Box<Tables>>,
    auth_method: Option<String>,
}

impl ServerSession {
    /// The compact form of a quiet session (see the module docs); the session itself when
    /// it is not quiet (it has something to do, or is not connected).
    pub fn into_dormant(self) -> Result<DormantSession, Box<ServerSession>> {
        let keep_alive_s = u16::try_from(self.keep_alive.as_secs()).ok();
        let Some(keep_alive_s) = keep_alive_s.filter(|_| self.keep_alive.subsec_nanos() == 0)
        else {
            return Err(Box::new(self));
        };
        if !self.is_quiet() {
            return Err(Box::new(self));
        }
        let rare = (self.tables.is_some() || self.auth_method.is_some()).then(|| {
            Box::new(Rare {
                tables: self.tables,
                auth_method: self.auth_method,
            })
        });
        Ok(DormantSession {
            last_read: self.last_read,
            rare,
            client_max_packet: self.client_max_packet,
            connect_session_expiry: self.connect_session_expiry,
            limits: self.limits,
            client_receive_max: self.client_receive_max,
            client_alias_max: self.client_alias_max,
            next_pkid: self.next_pkid,
            keep_alive_s,
            version: self.version,
        })
    }
}

impl DormantSession {
    /// When the peer must have sent something by, if a keep-alive is in force (the same
    /// as the awake session's [`ServerSession::poll_timeout`]).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.keep_alive_s == 0 {
            return None;
        }
        Some(self.last_read + Duration::from_secs(u64::from(self.keep_alive_s)) * 3 / 2)
    }

    /// The protocol version of the connection.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The session as it was put to sleep, connected and quiet.
    pub fn wake(self) -> ServerSession {
        let (tables, auth_method) = match self.rare {
            Some(r) => (r.tables, r.auth_method),
            None => (None, None),
        };
        ServerSession {
            limits: self.limits,
            state: State::Connected,
            version: self.version,
            keep_alive: Duration::from_secs(u64::from(self.keep_alive_s)),
            last_read: self.last_read,
            out: BytesMut::new(),
            events: VecDeque::new(),
            client_receive_max: self.client_receive_max,
            client_max_packet: self.client_max_packet,
            client_alias_max: self.client_alias_max,
            connect_session_expiry: self.connect_session_expiry,
            next_pkid: self.next_pkid,
            tables,
            auth_method,
            reauthenticating: false,
            held_from: None,
            hold_qos2_steps: false,
        }
    }
}
