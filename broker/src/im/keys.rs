//! How IM records are laid out in the store: keys of the IM tables and logs, and the
//! conversation ids clients see.
//!
//! Keys start with big-endian numbers (tenant, then uid) so that a prefix scan walks one
//! tenant's or one user's records in order and nothing is ever O(all users).
//!
//! Conversation ids (stable, part of the protocol):
//! - `p:{uid}:{uid}` — 1:1, the two users' numeric ids, lower first;
//! - `s:{uid}` — system notices to one user;
//! - `a:{app}:{uid}` — a workbench app's messages to one user;
//! - `g:{group}` — a group (the group id is a string the app server or the creator chose);
//! - `r:{room}` — a chatroom (ephemeral: no log of its own beyond the last messages);
//! - `b:{scope}` — a broadcast log read by many users (tenant-wide, a department).

use std::fmt;

use switchboard_proto::im::ConvType;

/// A parsed conversation id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConvId {
    Private(u64, u64),
    System(u64),
    App(String, u64),
    Group(String),
    Chatroom(String),
    Broadcast(String),
}

/// Longest conversation id accepted from a client.
const MAX_CONV_ID: usize = 160;

impl ConvId {
    /// The 1:1 conversation of two users.
    pub fn private(a: u64, b: u64) -> ConvId {
        ConvId::Private(a.min(b), a.max(b))
    }

    /// Parses a conversation id a client sent; `None` if it is not one.
    pub fn parse(s: &str) -> Option<ConvId> {
        if s.len() > MAX_CONV_ID {
            return None;
        }
        let (kind, rest) = s.split_once(':')?;
        match kind {
            "p" => {
                let (a, b) = rest.split_once(':')?;
                let (a, b) = (a.parse().ok()?, b.parse().ok()?);
                (a < b).then_some(ConvId::Private(a, b))
            }
            "s" => Some(ConvId::System(rest.parse().ok()?)),
            "a" => {
                let (app, uid) = rest.rsplit_once(':')?;
                (!app.is_empty()).then(|| uid.parse().ok().map(|u| ConvId::App(app.into(), u)))?
            }
            "g" => (!rest.is_empty()).then(|| ConvId::Group(rest.into())),
            "r" => (!rest.is_empty()).then(|| ConvId::Chatroom(rest.into())),
            "b" => (!rest.is_empty()).then(|| ConvId::Broadcast(rest.into())),
            _ => None,
        }
    }

    pub fn conv_type(&self) -> ConvType {
        match self {
            ConvId::Private(..) => ConvType::Private,
            ConvId::System(_) => ConvType::System,
            ConvId::App(..) => ConvType::App,
            ConvId::Group(_) => ConvType::Group,
            ConvId::Chatroom(_) => ConvType::Chatroom,
            ConvId::Broadcast(_) => ConvType::Broadcast,
        }
    }

    /// Whether user `uid` may read this conversation without further checks (groups,
    /// chatrooms and broadcasts need their member lists: see `ImService::own_conv`).
    pub fn involves(&self, uid: u64) -> bool {
        match self {
            ConvId::Private(a, b) => *a == uid || *b == uid,
            ConvId::System(u) | ConvId::App(_, u) => *u == uid,
            ConvId::Group(_) | ConvId::Chatroom(_) | ConvId::Broadcast(_) => false,
        }
    }

    /// The other user of a 1:1 conversation.
    pub fn peer_of(&self, uid: u64) -> Option<u64> {
        match self {
            ConvId::Private(a, b) if *a == uid => Some(*b),
            ConvId::Private(a, b) if *b == uid => Some(*a),
            _ => None,
        }
    }
}

impl fmt::Display for ConvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvId::Private(a, b) => write!(f, "p:{a}:{b}"),
            ConvId::System(u) => write!(f, "s:{u}"),
            ConvId::App(app, u) => write!(f, "a:{app}:{u}"),
            ConvId::Group(g) => write!(f, "g:{g}"),
            ConvId::Chatroom(r) => write!(f, "r:{r}"),
            ConvId::Broadcast(b) => write!(f, "b:{b}"),
        }
    }
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// `Tenants`: tenant id.
pub fn tenant(tid: u64) -> Vec<u8> {
    tid.to_be_bytes().to_vec()
}

/// `Users`: tenant, account.
pub fn user(tid: u64, account: &str) -> Vec<u8> {
    key(&[&tid.to_be_bytes(), account.as_bytes()])
}

/// `UserIds`: tenant, uid.
pub fn user_id(tid: u64, uid: u64) -> Vec<u8> {
    key(&[&tid.to_be_bytes(), &uid.to_be_bytes()])
}

/// `UserConvs`: tenant, uid, conversation id; [`user_id`] is the prefix of a user's list.
pub fn user_conv(tid: u64, uid: u64, conv: &ConvId) -> Vec<u8> {
    user_conv_with_room(tid, uid, conv, 0)
}

/// A `UserConvs` key with room for `extra` more bytes, the conversation id written in
/// place (these keys are built several times for every message sent).
fn user_conv_with_room(tid: u64, uid: u64, conv: &ConvId, extra: usize) -> Vec<u8> {
    use std::io::Write as _;
    let mut k = Vec::with_capacity(16 + 32 + extra);
    k.extend_from_slice(&tid.to_be_bytes());
    k.extend_from_slice(&uid.to_be_bytes());
    // Writing into a Vec cannot fail.
    let _ = write!(k, "{conv}");
    k
}

/// Which position of a user in a conversation a `Cursors` record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    Read = b'r' as isize,
    Delivered = b'd' as isize,
    Mention = b'm' as isize,
}

/// `Cursors`: a position of user `uid` in `conv`.
pub fn cursor(tid: u64, uid: u64, conv: &ConvId, which: Cursor) -> Vec<u8> {
    let mut k = user_conv_with_room(tid, uid, conv, 2);
    k.push(0);
    k.push(which as u8);
    k
}

/// The conversation id at the end of a `UserConvs` key.
pub fn conv_of_user_conv_key(k: &[u8]) -> Option<ConvId> {
    ConvId::parse(std::str::from_utf8(k.get(16..)?).ok()?)
}

/// The log of a conversation: tenant, conversation id.
pub fn log(tid: u64, conv: &ConvId) -> Vec<u8> {
    use std::io::Write as _;
    let mut k = Vec::with_capacity(8 + 32);
    k.extend_from_slice(&tid.to_be_bytes());
    // Writing into a Vec cannot fail.
    let _ = write!(k, "{conv}");
    k
}

/// Idempotency key of a message: sender uid, client message id.
pub fn idem(sender: u64, client_msg_id: &str) -> Vec<u8> {
    key(&[&sender.to_be_bytes(), client_msg_id.as_bytes()])
}

/// `Counters`: the last tenant id.
pub const TENANT_COUNTER: &[u8] = b"tenant";

/// `Counters`: the last uid of a tenant.
pub fn uid_counter(tid: u64) -> Vec<u8> {
    key(&[&tid.to_be_bytes(), b"uid"])
}

/// `UserMeta`: a revoked token id of a user.
pub fn revoked(tid: u64, uid: u64, token_id: &str) -> Vec<u8> {
    key(&[
        &tid.to_be_bytes(),
        &uid.to_be_bytes(),
        b"revoked:",
        token_id.as_bytes(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_round_trip_and_reject_junk() {
        for c in [
            ConvId::private(9, 3),
            ConvId::System(4),
            ConvId::App("approval:v2".into(), 7),
            ConvId::Group("team-1".into()),
            ConvId::Chatroom("live-7".into()),
            ConvId::Broadcast("all".into()),
        ] {
            assert_eq!(ConvId::parse(&c.to_string()), Some(c));
        }
        assert_eq!(ConvId::private(9, 3).to_string(), "p:3:9");
        for junk in [
            "", "p:3", "p:9:3", "p:3:3", "x:1", "s:", "s:-1", "a::1", "g:",
        ] {
            assert_eq!(ConvId::parse(junk), None, "{junk}");
        }
        assert_eq!(ConvId::parse(&format!("g:{}", "x".repeat(200))), None);
    }

    #[test]
    fn user_conv_keys_carry_the_conversation() {
        let c = ConvId::private(1, 2);
        let k = user_conv(5, 1, &c);
        assert!(k.starts_with(&user_id(5, 1)));
        assert_eq!(conv_of_user_conv_key(&k), Some(c));
    }

    #[test]
    fn keys_written_in_place_keep_the_stored_layout() {
        let mut conv = 5u64.to_be_bytes().to_vec();
        conv.extend_from_slice(&1u64.to_be_bytes());
        conv.extend_from_slice(b"g:team-1");
        let c = ConvId::Group("team-1".into());
        assert_eq!(user_conv(5, 1, &c), conv);
        let mut read = conv.clone();
        read.extend_from_slice(&[0, b'r']);
        assert_eq!(cursor(5, 1, &c, Cursor::Read), read);
        let mut log = 5u64.to_be_bytes().to_vec();
        log.extend_from_slice(b"a:approval:v2:7");
        assert_eq!(self::log(5, &ConvId::App("approval:v2".into(), 7)), log);
    }
}
