//! The write-ahead log in front of redb: one sequential append and one `fdatasync` per
//! commit, instead of redb's scattered B-tree page writes and its own sync.
//!
//! The writer appends a batch's ops here and syncs, then applies them to redb in a
//! non-durable transaction (visible to readers at once, kept in redb's write buffer), then
//! acknowledges. Every few seconds, or when the log fills, a batch is committed durably
//! instead (a checkpoint): redb writes its dirty pages once, however many commits touched
//! them, and the log starts over. Each redb transaction records the log sequence number
//! (LSN) of its batch, so after a crash redb is back at its last checkpoint and the records
//! after that LSN are replayed in order, deterministically, onto it.
//!
//! The file is written in place and only grows (zero-filled ahead of use, so a sync never
//! waits on file-size metadata); after a checkpoint, writing restarts at offset 0. A record
//! is `[len u32][crc32 u32][lsn u64][ops]`, the CRC over the LSN and the ops. Reading stops
//! at the first record that is torn, fails its CRC or does not continue the LSN sequence:
//! older records left behind a restart are never taken for new ones.

pub(crate) mod codec;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Record header: length, CRC, LSN.
const HEADER: usize = 16;
/// Zero-filled size of a new log.
const INITIAL: u64 = 1 << 20;
/// The log never grows past this; a batch that does not fit is committed durably instead.
pub(crate) const MAX: u64 = 64 << 20;
/// Above this many bytes of records, the next batch is a checkpoint.
pub(crate) const CHECKPOINT_BYTES: u64 = 32 << 20;

/// An open log file.
#[derive(Debug)]
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes zero-filled and available.
    len: u64,
    /// Where the next record goes.
    at: u64,
    /// Where the last record went (for [`Wal::retract`]).
    last: u64,
}

/// The log's file beside the data file.
pub(crate) fn path_for(data: &Path) -> PathBuf {
    let mut p = data.as_os_str().to_owned();
    p.push(".wal");
    PathBuf::from(p)
}

impl Wal {
    /// Opens (or creates) the log at `path`. Writing starts at offset 0: the caller replays
    /// [`Wal::records`] and checkpoints before appending.
    pub(crate) fn open(path: &Path) -> io::Result<Wal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        let mut wal = Wal {
            file,
            path: path.to_owned(),
            len,
            at: 0,
            last: 0,
        };
        if len < INITIAL {
            wal.zero_fill(len, INITIAL)?;
            wal.len = INITIAL;
        }
        Ok(wal)
    }

    /// The records on disk from offset 0 that continue one another, in order.
    pub(crate) fn records(&self) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let mut raw = vec![0u8; usize::try_from(self.len.min(MAX)).unwrap_or(0)];
        self.file.read_exact_at(&mut raw, 0)?;
        Ok(scan(&raw))
    }

    /// Writes zeros over `[from, to)` and makes the new length durable.
    fn zero_fill(&mut self, from: u64, to: u64) -> io::Result<()> {
        let chunk = vec![0u8; 1 << 20];
        let mut at = from;
        while at < to {
            let n = (to - at).min(chunk.len() as u64) as usize;
            self.file.write_all_at(&chunk[..n], at)?;
            at += n as u64;
        }
        self.file.sync_all()
    }

    /// Whether a record of `ops_len` bytes fits before [`MAX`].
    pub(crate) fn fits(&self, ops_len: usize) -> bool {
        self.at + (HEADER + ops_len) as u64 <= MAX
    }

    /// Bytes of records since the last [`Wal::restart`].
    pub(crate) fn used(&self) -> u64 {
        self.at
    }

    /// Appends record `lsn` with `ops` (the [`codec::encode`] bytes) and syncs it: once this
    /// returns, the batch survives a crash. On failure nothing counts as written, and a
    /// half-written header is cleared as far as the disk allows.
    pub(crate) fn append(&mut self, lsn: u64, ops: &[u8]) -> io::Result<()> {
        let need = (HEADER + ops.len()) as u64;
        if self.at + need > self.len {
            let grown = (self.len * 2)
                .max(self.at + need)
                .next_multiple_of(INITIAL)
                .min(MAX.max(self.at + need));
            self.zero_fill(self.len, grown)?;
            self.len = grown;
        }
        let mut rec = Vec::with_capacity(need as usize);
        rec.extend_from_slice(&(ops.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&lsn.to_be_bytes());
        crc.update(ops);
        rec.extend_from_slice(&crc.finalize().to_be_bytes());
        rec.extend_from_slice(&lsn.to_be_bytes());
        rec.extend_from_slice(ops);
        let written = self
            .file
            .write_all_at(&rec, self.at)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // A record that may have reached the disk must not be replayed: it was never
            // acknowledged, and the next append reuses its place anyway.
            if let Err(e2) = self.file.write_all_at(&[0u8; HEADER], self.at) {
                tracing::error!(path = %self.path.display(), error = %e2, "cannot clear a failed write-ahead log record");
            }
            return Err(e);
        }
        self.last = self.at;
        self.at += need;
        Ok(())
    }

    /// Takes back the last record: its batch could not be applied, so it was never
    /// acknowledged and must not be replayed.
    pub(crate) fn retract(&mut self) {
        let cleared = self
            .file
            .write_all_at(&[0u8; HEADER], self.last)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = cleared {
            tracing::error!(path = %self.path.display(), error = %e, "cannot clear a write-ahead log record whose batch failed; a restart may replay it");
        }
        self.at = self.last;
    }

    /// Starts over at offset 0: everything logged is in a durable redb commit now. Older
    /// records stay on disk until overwritten; their LSNs are at or below the checkpoint's,
    /// so a replay skips them.
    pub(crate) fn restart(&mut self) {
        self.at = 0;
    }

    /// The file's path (for messages).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The records at the start of `raw` that continue one another: each intact, each LSN one
/// more than the last.
fn scan(raw: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut at = 0usize;
    while let Some(h) = raw.get(at..at + HEADER) {
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let lsn = u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
        let Some(ops) = raw.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&lsn.to_be_bytes());
        hasher.update(ops);
        if hasher.finalize() != crc || lsn == 0 {
            break;
        }
        if let Some((last, _)) = out.last()
            && lsn != last + 1
        {
            break;
        }
        out.push((lsn, ops.to_vec()));
        at += HEADER + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sb-wal-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        dir.join("t.wal")
    }

    #[test]
    fn records_survive_reopen_and_a_restart_hides_the_old_ones() {
        let p = tmp("reopen");
        let mut w = Wal::open(&p).expect("open");
        assert!(w.records().expect("read").is_empty());
        w.append(1, b"first").expect("append");
        w.append(2, b"second").expect("append");
        drop(w);
        let mut w = Wal::open(&p).expect("reopen");
        let recs = w.records().expect("read");
        assert_eq!(
            recs,
            vec![(1, b"first".to_vec()), (2, b"second".to_vec())],
            "both records read back in order"
        );
        // After a checkpoint at LSN 2 the log starts over: record 3 overwrites record 1,
        // and record 2's leftover bytes do not continue the sequence.
        w.restart();
        w.append(3, b"third").expect("append");
        w.append(4, b"fourth").expect("append");
        // Record 4's batch failed: it is taken back and never read.
        w.retract();
        drop(w);
        let recs = Wal::open(&p).expect("reopen").records().expect("read");
        assert_eq!(recs, vec![(3, b"third".to_vec())]);
        std::fs::remove_dir_all(p.parent().expect("dir")).ok();
    }

    #[test]
    fn a_torn_record_ends_the_log() {
        let p = tmp("torn");
        let mut w = Wal::open(&p).expect("open");
        w.append(5, b"kept").expect("append");
        w.append(6, b"torn record").expect("append");
        drop(w);
        // Flip a byte of the second record's ops: its CRC no longer matches.
        let f = OpenOptions::new().write(true).open(&p).expect("file");
        f.write_all_at(b"X", (HEADER + 4 + HEADER + 2) as u64)
            .expect("write");
        let recs = Wal::open(&p).expect("reopen").records().expect("read");
        assert_eq!(recs, vec![(5, b"kept".to_vec())]);
        std::fs::remove_dir_all(p.parent().expect("dir")).ok();
    }

    #[test]
    fn the_file_grows_for_large_records_up_to_its_cap() {
        let p = tmp("grow");
        let mut w = Wal::open(&p).expect("open");
        let big = vec![7u8; (INITIAL as usize) + 10];
        w.append(1, &big).expect("append past the initial size");
        assert!(std::fs::metadata(&p).expect("meta").len() >= INITIAL * 2);
        assert!(
            !w.fits(MAX as usize),
            "a record the size of the cap never fits"
        );
        drop(w);
        let recs = Wal::open(&p).expect("reopen").records().expect("read");
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].1.len(), big.len());
        std::fs::remove_dir_all(p.parent().expect("dir")).ok();
    }
}
