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
/// Skipped ranges held while sends are in flight; past this a gap is reported at once.
const MAX_HELD: usize = 256;

/// The last seq seen per conversation, and gaps that one of this device's own sends may
/// still fill.
///
/// A send's seq is not echoed (No Local): it arrives in the `SendResponse`, which can come
/// after another member's next message (the broker answers the sender once the message is
/// delivered, and another send can be delivered in between). So while a send is in flight
/// a skipped seq is held, not reported: the answer's seq removes it, and what is left when
/// the last send in flight ends was really missed.
#[derive(Debug, Default)]
pub(crate) struct Seen(Mutex<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// Looked up for every message event: a fast hash, seeded per process.
    last: HashMap<String, u64, foldhash::fast::RandomState>,
    /// Sends in flight.
    sending: u32,
    /// Skipped seqs held while sends are in flight: (conversation, first, last).
    held: Vec<(String, u64, u64)>,
    /// Held seqs that no send filled, not yet reported.
    unreported: u64,
}

impl Inner {
    /// Notes `seq` of `conversation`; returns the seqs it skips (first, last), if any.
    fn note(&mut self, conversation: &str, seq: u64) -> Option<(u64, u64)> {
        if let Some(last) = self.last.get_mut(conversation) {
            let skipped = (seq > *last + 1).then(|| (*last + 1, seq - 1));
            *last = (*last).max(seq);
            return skipped;
        }
        if self.last.len() >= MAX_CONVERSATIONS {
            self.last.clear();
        }
        self.last.insert(conversation.to_owned(), seq);
        None
    }

    /// `seq` of `conversation` arrived after all: no longer held as skipped.
    fn fill(&mut self, conversation: &str, seq: u64) {
        let Some(i) = self
            .held
            .iter()
            .position(|(c, lo, hi)| c == conversation && (*lo..=*hi).contains(&seq))
        else {
            return;
        };
        let (c, lo, hi) = self.held.swap_remove(i);
        if lo < seq {
            self.held.push((c.clone(), lo, seq - 1));
        }
        if seq < hi {
            self.held.push((c, seq + 1, hi));
        }
    }
}

impl Seen {
    /// Notes that this device has `conversation` up to `seq`; returns how many messages
    /// before it were never seen (0 when none, when the conversation is new here, or when
    /// a send in flight may still account for them).
    pub(crate) fn note(&self, conversation: &str, seq: u64) -> u64 {
        let mut s = self.0.lock();
        s.fill(conversation, seq);
        let Some((lo, hi)) = s.note(conversation, seq) else {
            return 0;
        };
        if s.sending > 0 && s.held.len() < MAX_HELD {
            s.held.push((conversation.to_owned(), lo, hi));
            return 0;
        }
        hi - lo + 1
    }

    /// For a message event: how many messages of its conversation were skipped.
    pub(crate) fn message(&self, m: &im::Message) -> u64 {
        if watched(m) {
            self.note(&m.conversation, m.seq)
        } else {
            0
        }
    }

    /// A message this device has through sync: noted, never a gap (a page starts where
    /// the app asked).
    pub(crate) fn synced(&self, m: &im::Message) {
        if watched(m) {
            let mut s = self.0.lock();
            s.fill(&m.conversation, m.seq);
            s.note(&m.conversation, m.seq);
        }
    }

    /// A send goes out: skipped seqs are held until it (and every other send in flight)
    /// has its answer or failed.
    pub(crate) fn sending(&self) -> Sending<'_> {
        self.0.lock().sending += 1;
        Sending(self)
    }

    /// Skipped seqs taken for a report that could not be made: reported with the next.
    pub(crate) fn give_back(&self, n: u64) {
        self.0.lock().unreported += n;
    }

    /// Skipped seqs that no send filled, to report now (and forget).
    pub(crate) fn take_unreported(&self) -> u64 {
        std::mem::take(&mut self.0.lock().unreported)
    }
}

/// One send in flight ([`Seen::sending`]); ends when dropped.
pub(crate) struct Sending<'a>(&'a Seen);

impl Sending<'_> {
    /// The send's answer: its seq is this device's own, not a gap.
    pub(crate) fn sent(&self, conversation: &str, seq: u64) {
        let mut s = self.0.0.lock();
        s.fill(conversation, seq);
        // Seqs it skips were someone else's sends: held like any other.
        if let Some((lo, hi)) = s.note(conversation, seq) {
            if s.held.len() < MAX_HELD {
                s.held.push((conversation.to_owned(), lo, hi));
            } else {
                s.unreported += hi - lo + 1;
            }
        }
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        let mut s = self.0.0.lock();
        s.sending = s.sending.saturating_sub(1);
        if s.sending == 0 {
            let missed: u64 = s.held.drain(..).map(|(_, lo, hi)| hi - lo + 1).sum();
            s.unreported += missed;
        }
    }
}

/// Whether gaps in `m`'s conversation mean lost messages.
fn watched(m: &im::Message) -> bool {
    matches!(
        ConvType::try_from(m.conv_type),
        Ok(ConvType::Private | ConvType::Group | ConvType::System | ConvType::App)
    )
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
    fn a_seq_skipped_while_a_send_is_in_flight_waits_for_its_answer() {
        let s = Seen::default();
        assert_eq!(s.message(&msg("g:1", ConvType::Group, 9)), 0);
        {
            let send = s.sending();
            // Another member's 11 overtakes this device's answer for 10.
            assert_eq!(s.message(&msg("g:1", ConvType::Group, 11)), 0, "held");
            send.sent("g:1", 10);
        }
        assert_eq!(s.take_unreported(), 0, "10 was this device's own");
        // Same again, but 12 really is lost: reported once the send ends.
        let send = s.sending();
        assert_eq!(s.message(&msg("g:1", ConvType::Group, 14)), 0, "held");
        send.sent("g:1", 13);
        assert_eq!(s.take_unreported(), 0, "a send is still in flight");
        drop(send);
        assert_eq!(s.take_unreported(), 1, "12 was never seen");
        assert_eq!(s.take_unreported(), 0, "reported once");
        // A send that failed (no seq) leaves the gap for a report too.
        let send = s.sending();
        assert_eq!(s.message(&msg("g:1", ConvType::Group, 17)), 0);
        drop(send);
        assert_eq!(s.take_unreported(), 2);
        // Without a send in flight a gap is reported at once.
        assert_eq!(s.message(&msg("g:1", ConvType::Group, 19)), 1);
    }

    #[test]
    fn sync_pages_are_never_gaps_and_fill_held_ones() {
        let s = Seen::default();
        s.synced(&msg("p:1:2", ConvType::Private, 3));
        s.synced(&msg("p:1:2", ConvType::Private, 40));
        assert_eq!(s.message(&msg("p:1:2", ConvType::Private, 41)), 0);
        let send = s.sending();
        assert_eq!(s.message(&msg("p:1:2", ConvType::Private, 45)), 0);
        for seq in 42..=43 {
            s.synced(&msg("p:1:2", ConvType::Private, seq));
        }
        send.sent("p:1:2", 44);
        drop(send);
        assert_eq!(s.take_unreported(), 0, "42 and 43 came through sync");
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
