//! Interest announcements between nodes on NATS, sans-IO: the body of a message on the
//! `peers` subject (the sender is in the `Sb-Node` header).
//!
//! Layout: one kind byte, then by kind: `Hello` a target node name (empty: every node);
//! `Snap` the sender's announcement number, part index and part count, filters; `Delta`
//! the number, added filters, removed filters; `Tick` the number; `Bye` nothing. Numbers
//! are u64 big-endian, counts u32, strings a u32 length and UTF-8 bytes. Decoding checks
//! every length against what is left, so a hostile body costs at most its own size.

/// One announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    /// A node (re)joined and asks `target` (every node when `None`) for its snapshot.
    Hello { target: Option<String> },
    /// Part `part` of `parts` of the sender's whole filter set as of announcement `seq`.
    Snap {
        seq: u64,
        part: u32,
        parts: u32,
        filters: Vec<String>,
    },
    /// Announcement `seq`: filters gained and lost since `seq - 1`.
    Delta {
        seq: u64,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// Still here, at announcement `seq` (a receiver that saw another number lost one).
    Tick { seq: u64 },
    /// Leaving (graceful shutdown).
    Bye,
}

const HELLO: u8 = 0;
const SNAP: u8 = 1;
const DELTA: u8 = 2;
const TICK: u8 = 3;
const BYE: u8 = 4;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_list(out: &mut Vec<u8>, l: &[String]) {
    out.extend_from_slice(&(l.len() as u32).to_be_bytes());
    for s in l {
        put_str(out, s);
    }
}

/// The body of `a`.
pub fn encode(a: &Announce) -> Vec<u8> {
    let mut out = Vec::new();
    match a {
        Announce::Hello { target } => {
            out.push(HELLO);
            put_str(&mut out, target.as_deref().unwrap_or(""));
        }
        Announce::Snap {
            seq,
            part,
            parts,
            filters,
        } => {
            out.push(SNAP);
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&part.to_be_bytes());
            out.extend_from_slice(&parts.to_be_bytes());
            put_list(&mut out, filters);
        }
        Announce::Delta { seq, add, remove } => {
            out.push(DELTA);
            out.extend_from_slice(&seq.to_be_bytes());
            put_list(&mut out, add);
            put_list(&mut out, remove);
        }
        Announce::Tick { seq } => {
            out.push(TICK);
            out.extend_from_slice(&seq.to_be_bytes());
        }
        Announce::Bye => out.push(BYE),
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }

    fn list(&mut self) -> Option<Vec<String>> {
        let n = self.u32()? as usize;
        // Each string takes at least its 4-byte length: no allocation beyond the body.
        if n > self.0.len() / 4 {
            return None;
        }
        (0..n).map(|_| self.string()).collect()
    }
}

/// The announcement in `body`; `None` if it is not one (or has bytes left over).
pub fn decode(body: &[u8]) -> Option<Announce> {
    let (&kind, rest) = body.split_first()?;
    let mut r = Reader(rest);
    let a = match kind {
        HELLO => {
            let t = r.string()?;
            Announce::Hello {
                target: (!t.is_empty()).then_some(t),
            }
        }
        SNAP => Announce::Snap {
            seq: r.u64()?,
            part: r.u32()?,
            parts: r.u32()?,
            filters: r.list()?,
        },
        DELTA => Announce::Delta {
            seq: r.u64()?,
            add: r.list()?,
            remove: r.list()?,
        },
        TICK => Announce::Tick { seq: r.u64()? },
        BYE => Announce::Bye,
        _ => return None,
    };
    r.0.is_empty().then_some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_truncations_are_refused() {
        let all = [
            Announce::Hello { target: None },
            Announce::Hello {
                target: Some("node2".into()),
            },
            Announce::Snap {
                seq: 7,
                part: 1,
                parts: 3,
                filters: vec!["a/+".into(), "设备/#".into(), String::new()],
            },
            Announce::Delta {
                seq: u64::MAX,
                add: vec!["x".into()],
                remove: vec![],
            },
            Announce::Tick { seq: 9 },
            Announce::Bye,
        ];
        for a in all {
            let body = encode(&a);
            assert_eq!(decode(&body), Some(a.clone()));
            for cut in 0..body.len() {
                assert_eq!(decode(&body[..cut]), None, "{a:?} cut at {cut}");
            }
            let mut longer = body.clone();
            longer.push(0);
            assert_eq!(decode(&longer), None);
        }
        // A count far beyond the body allocates nothing.
        assert_eq!(
            decode(&[
                SNAP, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 255, 255, 255, 255
            ]),
            None
        );
        assert_eq!(decode(&[9]), None);
    }
}
