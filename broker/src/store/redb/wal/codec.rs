//! The bytes of a write-ahead log record: the [`Op`]s of one batch, in order.
//!
//! A record is what the writer is about to apply, so that a crash before the next
//! checkpoint replays exactly the same ops onto the last durable state. The layout is
//! private to this file and versioned by the store format: a count, then per op a tag byte
//! and its fields (numbers big-endian, byte strings with a u32 length).

use crate::store::codec::{Sent, SessionRecord, StoredDelivery};
use crate::store::{Op, Table};

/// Appends the encoding of `ops` to `out`.
pub(crate) fn encode<'a>(ops: impl Iterator<Item = &'a Op>, out: &mut Vec<u8>) {
    let count_at = out.len();
    out.extend_from_slice(&0u32.to_be_bytes());
    let mut n = 0u32;
    for op in ops {
        n += 1;
        encode_op(op, out);
    }
    out[count_at..count_at + 4].copy_from_slice(&n.to_be_bytes());
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn opt_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            out.push(1);
            bytes(out, b);
        }
        None => out.push(0),
    }
}

fn table(out: &mut Vec<u8>, t: Table) {
    let i = Table::ALL.iter().position(|x| *x == t).unwrap_or(0);
    out.push(i as u8);
}

fn sent(out: &mut Vec<u8>, s: Sent) {
    let (tag, pkid) = match s {
        Sent::Queued => (0u8, 0u16),
        Sent::Published(p) => (1, p),
        Sent::Released(p) => (2, p),
    };
    out.push(tag);
    out.extend_from_slice(&pkid.to_be_bytes());
}

fn encode_op(op: &Op, out: &mut Vec<u8>) {
    let u64_ = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_be_bytes());
    match op {
        Op::PutSession { client_id, record } => {
            out.push(0);
            bytes(out, client_id.as_bytes());
            // The same JSON the sessions table stores; a record always serialises.
            bytes(out, &serde_json::to_vec(record).unwrap_or_default());
        }
        Op::DeleteSession { client_id, uid } => {
            out.push(1);
            bytes(out, client_id.as_bytes());
            u64_(out, *uid);
        }
        Op::Enqueue { uid, seq, delivery } => {
            out.push(2);
            u64_(out, *uid);
            u64_(out, *seq);
            bytes(out, &delivery.encode());
        }
        Op::Dequeue { uid, seq } => {
            out.push(3);
            u64_(out, *uid);
            u64_(out, *seq);
        }
        Op::MarkSent { uid, seq, sent: s } => {
            out.push(4);
            u64_(out, *uid);
            u64_(out, *seq);
            sent(out, *s);
        }
        Op::PutRetained { topic, message } => {
            out.push(5);
            bytes(out, topic.as_bytes());
            bytes(out, message);
        }
        Op::DeleteRetained { topic } => {
            out.push(6);
            bytes(out, topic.as_bytes());
        }
        Op::AwaitRel { client_id, pkid } => {
            out.push(7);
            bytes(out, client_id.as_bytes());
            out.extend_from_slice(&pkid.to_be_bytes());
        }
        Op::Released { client_id, pkid } => {
            out.push(8);
            bytes(out, client_id.as_bytes());
            out.extend_from_slice(&pkid.to_be_bytes());
        }
        Op::Probe => out.push(9),
        Op::Barrier => out.push(19),
        Op::Put {
            table: t,
            key,
            value,
        } => {
            out.push(10);
            table(out, *t);
            bytes(out, key);
            bytes(out, value);
        }
        Op::Delete { table: t, key } => {
            out.push(11);
            table(out, *t);
            bytes(out, key);
        }
        Op::Increment { table: t, key, by } => {
            out.push(12);
            table(out, *t);
            bytes(out, key);
            u64_(out, *by);
        }
        Op::Append { log, idem, value } | Op::AppendRecent { log, idem, value } => {
            out.push(if matches!(op, Op::Append { .. }) {
                13
            } else {
                14
            });
            bytes(out, log);
            opt_bytes(out, idem.as_deref());
            bytes(out, value);
        }
        Op::ReplaceEntry { log, seq, value } => {
            out.push(15);
            bytes(out, log);
            u64_(out, *seq);
            bytes(out, value);
        }
        Op::TrimLog { log, below } => {
            out.push(16);
            bytes(out, log);
            u64_(out, *below);
        }
        Op::SetToLogHead { table: t, key, log } => {
            out.push(17);
            table(out, *t);
            bytes(out, key);
            bytes(out, log);
        }
        Op::Max {
            table: t,
            key,
            value,
        } => {
            out.push(18);
            table(out, *t);
            bytes(out, key);
            u64_(out, *value);
        }
    }
}

/// A reader over a record's bytes; every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        Some(self.take(n)?.to_vec())
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }

    fn opt_bytes(&mut self) -> Option<Option<Vec<u8>>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.bytes()?)),
            _ => None,
        }
    }

    fn table(&mut self) -> Option<Table> {
        Table::ALL.get(usize::from(self.u8()?)).copied()
    }

    fn sent(&mut self) -> Option<Sent> {
        match (self.u8()?, self.u16()?) {
            (0, _) => Some(Sent::Queued),
            (1, p) => Some(Sent::Published(p)),
            (2, p) => Some(Sent::Released(p)),
            _ => None,
        }
    }
}

/// Decodes a record's ops; `None` if the bytes are not a record of this format.
pub(crate) fn decode(raw: &[u8]) -> Option<Vec<Op>> {
    let mut r = Reader(raw);
    let n = r.u32()? as usize;
    // Every op takes at least one byte: a count larger than the record is corrupt.
    if n > raw.len() {
        return None;
    }
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        ops.push(decode_op(&mut r)?);
    }
    r.0.is_empty().then_some(ops)
}

fn decode_op(r: &mut Reader<'_>) -> Option<Op> {
    Some(match r.u8()? {
        0 => {
            let client_id = r.string()?;
            let record: SessionRecord = serde_json::from_slice(&r.bytes()?).ok()?;
            Op::PutSession { client_id, record }
        }
        1 => Op::DeleteSession {
            client_id: r.string()?,
            uid: r.u64()?,
        },
        2 => Op::Enqueue {
            uid: r.u64()?,
            seq: r.u64()?,
            delivery: StoredDelivery::decode(&r.bytes()?)?,
        },
        3 => Op::Dequeue {
            uid: r.u64()?,
            seq: r.u64()?,
        },
        4 => Op::MarkSent {
            uid: r.u64()?,
            seq: r.u64()?,
            sent: r.sent()?,
        },
        5 => Op::PutRetained {
            topic: r.string()?,
            message: r.bytes()?,
        },
        6 => Op::DeleteRetained { topic: r.string()? },
        7 => Op::AwaitRel {
            client_id: r.string()?,
            pkid: r.u16()?,
        },
        8 => Op::Released {
            client_id: r.string()?,
            pkid: r.u16()?,
        },
        9 => Op::Probe,
        19 => Op::Barrier,
        10 => Op::Put {
            table: r.table()?,
            key: r.bytes()?,
            value: r.bytes()?,
        },
        11 => Op::Delete {
            table: r.table()?,
            key: r.bytes()?,
        },
        12 => Op::Increment {
            table: r.table()?,
            key: r.bytes()?,
            by: r.u64()?,
        },
        13 => Op::Append {
            log: r.bytes()?,
            idem: r.opt_bytes()?,
            value: r.bytes()?,
        },
        14 => Op::AppendRecent {
            log: r.bytes()?,
            idem: r.opt_bytes()?,
            value: r.bytes()?,
        },
        15 => Op::ReplaceEntry {
            log: r.bytes()?,
            seq: r.u64()?,
            value: r.bytes()?,
        },
        16 => Op::TrimLog {
            log: r.bytes()?,
            below: r.u64()?,
        },
        17 => Op::SetToLogHead {
            table: r.table()?,
            key: r.bytes()?,
            log: r.bytes()?,
        },
        18 => Op::Max {
            table: r.table()?,
            key: r.bytes()?,
            value: r.u64()?,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::SubEntry;
    use bytes::Bytes;
    use switchboard_proto::{QoS, SubscriptionOptions};

    fn every_op() -> Vec<Op> {
        let record = SessionRecord {
            uid: 7,
            expiry: 3600,
            subs: vec![SubEntry::new(
                "a/#",
                SubscriptionOptions::default(),
                Some(3),
            )],
            disconnected_at: Some(1_700_000_000),
            will: Some((vec![1, 2, 3], 99)),
            owner: Some("alice".into()),
        };
        let delivery = StoredDelivery {
            qos: QoS::AtLeastOnce,
            retain: true,
            sub_ids: vec![1, 70_000],
            message: Bytes::from_static(b"payload"),
            sent: Sent::Published(12),
        };
        vec![
            Op::PutSession {
                client_id: "c1".into(),
                record,
            },
            Op::DeleteSession {
                client_id: "c2".into(),
                uid: 9,
            },
            Op::Enqueue {
                uid: 1,
                seq: 2,
                delivery,
            },
            Op::Dequeue { uid: 1, seq: 2 },
            Op::MarkSent {
                uid: 1,
                seq: 3,
                sent: Sent::Released(4),
            },
            Op::PutRetained {
                topic: "t".into(),
                message: vec![5; 10],
            },
            Op::DeleteRetained { topic: "t".into() },
            Op::AwaitRel {
                client_id: "c".into(),
                pkid: 65_535,
            },
            Op::Released {
                client_id: "c".into(),
                pkid: 1,
            },
            Op::Probe,
            Op::Barrier,
            Op::Put {
                table: Table::Console,
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            Op::Delete {
                table: Table::Accounts,
                key: vec![],
            },
            Op::Increment {
                table: Table::Counters,
                key: b"n".to_vec(),
                by: 3,
            },
            Op::Append {
                log: b"log".to_vec(),
                idem: Some(b"id".to_vec()),
                value: b"m".to_vec(),
            },
            Op::AppendRecent {
                log: b"log".to_vec(),
                idem: None,
                value: vec![],
            },
            Op::ReplaceEntry {
                log: b"log".to_vec(),
                seq: 4,
                value: b"r".to_vec(),
            },
            Op::TrimLog {
                log: b"log".to_vec(),
                below: 10,
            },
            Op::SetToLogHead {
                table: Table::Cursors,
                key: b"c".to_vec(),
                log: b"log".to_vec(),
            },
            Op::Max {
                table: Table::Cursors,
                key: b"c".to_vec(),
                value: u64::MAX,
            },
        ]
    }

    #[test]
    fn every_op_round_trips() {
        let ops = every_op();
        let mut raw = Vec::new();
        encode(ops.iter(), &mut raw);
        let back = decode(&raw).expect("decodes");
        assert_eq!(format!("{back:?}"), format!("{ops:?}"));
    }

    #[test]
    fn truncated_or_padded_records_are_refused() {
        let mut raw = Vec::new();
        encode(every_op().iter(), &mut raw);
        for cut in [0, 3, 4, raw.len() / 2, raw.len() - 1] {
            assert!(decode(&raw[..cut]).is_none(), "cut at {cut}");
        }
        raw.push(0);
        assert!(decode(&raw).is_none(), "trailing byte");
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 9]).is_none(), "huge count");
    }
}
