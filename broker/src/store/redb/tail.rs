//! A log's tail record in the redb store: its last sequence number and the idempotency
//! keys of its latest [`Op::AppendRecent`](crate::store::Op::AppendRecent)s.
//!
//! Layout: the head (u64, big-endian), then up to [`RECENT_APPENDS`] pairs of a key's
//! 64-bit FNV-1a hash and the seq it was appended under (both big-endian), oldest first.
//! One record per log, rewritten by every append to it: the B-tree page it sits on is
//! dirtied anyway by the head, so recognising a resend costs no index page of its own. A
//! hash match is taken as the same key (a collision among 32 keys of one log is a
//! 1-in-10^17 event).

use crate::store::RECENT_APPENDS;

/// The head of an encoded record (0 for a malformed one).
pub(super) fn head(record: &[u8]) -> u64 {
    record
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// The seq under which the key hashed to `hash` was appended, if it is among the recent.
pub(super) fn find(record: &[u8], hash: u64) -> Option<u64> {
    pairs(record).find(|(h, _)| *h == hash).map(|(_, seq)| seq)
}

/// `record` (or an empty one with head `head` when `None`) with a new head and, if given,
/// one more recent key; the oldest key goes once there are [`RECENT_APPENDS`].
pub(super) fn with_append(record: Option<&[u8]>, head: u64, key: Option<(u64, u64)>) -> Vec<u8> {
    let kept: Vec<(u64, u64)> = record.map(|r| pairs(r).collect()).unwrap_or_default();
    let skip = match key {
        Some(_) => (kept.len() + 1).saturating_sub(RECENT_APPENDS),
        None => 0,
    };
    let mut out = Vec::with_capacity(8 + 16 * RECENT_APPENDS);
    out.extend_from_slice(&head.to_be_bytes());
    for (h, s) in kept.into_iter().skip(skip).chain(key) {
        out.extend_from_slice(&h.to_be_bytes());
        out.extend_from_slice(&s.to_be_bytes());
    }
    out
}

/// The 64-bit FNV-1a hash of an idempotency key (stable across versions and restarts).
pub(super) fn hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn pairs(record: &[u8]) -> impl Iterator<Item = (u64, u64)> + '_ {
    record
        .get(8..)
        .unwrap_or_default()
        .chunks_exact(16)
        .map(|c| {
            let (h, s) = c.split_at(8);
            let n = |b: &[u8]| <[u8; 8]>::try_from(b).map_or(0, u64::from_be_bytes);
            (n(h), n(s))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_head_and_the_latest_keys_only() {
        let mut r = with_append(None, 5, None);
        assert_eq!(head(&r), 5);
        for seq in 6..6 + RECENT_APPENDS as u64 + 3 {
            r = with_append(Some(&r), seq, Some((hash(&seq.to_be_bytes()), seq)));
        }
        let last = 5 + RECENT_APPENDS as u64 + 3;
        assert_eq!(head(&r), last);
        assert_eq!(r.len(), 8 + 16 * RECENT_APPENDS);
        assert_eq!(find(&r, hash(&last.to_be_bytes())), Some(last));
        let oldest_kept = last + 1 - RECENT_APPENDS as u64;
        assert_eq!(
            find(&r, hash(&oldest_kept.to_be_bytes())),
            Some(oldest_kept)
        );
        assert_eq!(find(&r, hash(&(oldest_kept - 1).to_be_bytes())), None);
        // A head move without a key keeps the keys.
        let moved = with_append(Some(&r), last + 1, None);
        assert_eq!(head(&moved), last + 1);
        assert_eq!(find(&moved, hash(&last.to_be_bytes())), Some(last));
    }

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_malformed_record_reads_as_empty() {
        assert_eq!(head(&[1, 2]), 0);
        assert_eq!(find(&[0; 20], 0), None);
    }
}
