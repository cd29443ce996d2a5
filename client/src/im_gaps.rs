//! Gap detection on the inbox: the SDK subscribes to `$im/inbox` at QoS 0 (no PUBACK per
//! event; a conversation's seqs say what is missing), so it notes the last seq it has seen
//! of each conversation and reports a message that skips some as [`ImEvent::Lagged`]: the
//! app syncs, as it does after any lost event.
//!
//! Only conversations whose every seq reaches every member are watched (1:1, group,
//! system, app); a chatroom (ephemeral, low priorities dropped under load) and a broadcast
//! log (one log for audiences that differ) skip seqs by design. The device's own sends
//! (No Local: never echoed) and sync pages are noted too, so they are not taken for gaps.
//!
//! [`ImEvent::Lagged`]: crate::im::ImEvent::Lagged

use std::collections::HashMap;

use parking_lot::Mutex;
use switchboard_proto::im::{self, ConvType};

/// Conversations remembered at most; past this the map starts over (a gap in a forgotten
/// conversation then goes unnoticed until sync, which every reconnect does anyway).
const MAX_CONVERSATIONS: usize = 10_000;

/// The last seq seen per conversation.
#[derive(Debug, Default)]
pub(crate) struct Seen(Mutex<HashMap<String, u64>>);

impl Seen {
    /// Notes that this device has `conversation` up to `seq`; returns how many messages
    /// before it were never seen (0 when none, or when the conversation is new here).
    pub(crate) fn note(&self, conversation: &str, seq: u64) -> u64 {
        let mut m = self.0.lock();
        if let Some(last) = m.get_mut(conversation) {
            let missing = seq.saturating_sub(*last + 1);
            *last = (*last).max(seq);
            return missing;
        }
        if m.len() >= MAX_CONVERSATIONS {
            m.clear();
        }
        m.insert(conversation.to_owned(), seq);
        0
    }

    /// For a message event: how many messages of its conversation were skipped.
    pub(crate) fn message(&self, m: &im::Message) -> u64 {
        match ConvType::try_from(m.conv_type) {
            Ok(ConvType::Private | ConvType::Group | ConvType::System | ConvType::App) => {
                self.note(&m.conversation, m.seq)
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(conv: &str, t: ConvType, seq: u64) -> im::Message {
        im::Message {
            conversation: conv.into(),
            conv_type: t as i32,
            seq,
            ..im::Message::default()
        }
    }

    #[test]
    fn a_skipped_seq_is_reported_once_and_own_sends_are_not_gaps() {
        let s = Seen::default();
        assert_eq!(
            s.message(&msg("p:a:b", ConvType::Private, 4)),
            0,
            "first seen"
        );
        assert_eq!(s.message(&msg("p:a:b", ConvType::Private, 5)), 0);
        // This device sent 6 (No Local: no event), the peer's 7 follows it.
        s.note("p:a:b", 6);
        assert_eq!(s.message(&msg("p:a:b", ConvType::Private, 7)), 0);
        assert_eq!(
            s.message(&msg("p:a:b", ConvType::Private, 10)),
            2,
            "8 and 9 lost"
        );
        assert_eq!(
            s.message(&msg("p:a:b", ConvType::Private, 9)),
            0,
            "late, not a gap"
        );
        assert_eq!(s.message(&msg("p:a:b", ConvType::Private, 11)), 0);
    }

    #[test]
    fn chatrooms_and_broadcasts_are_not_watched() {
        let s = Seen::default();
        for t in [ConvType::Chatroom, ConvType::Broadcast] {
            assert_eq!(s.message(&msg("x", t, 1)), 0);
            assert_eq!(s.message(&msg("x", t, 50)), 0, "{t:?}");
        }
        assert_eq!(s.message(&msg("g:1", ConvType::Group, 1)), 0);
        assert_eq!(s.message(&msg("g:1", ConvType::Group, 3)), 1);
    }
}
