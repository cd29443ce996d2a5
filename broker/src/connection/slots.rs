//! The parker's records, stored inline in fixed-size chunks instead of one heap box each.
//!
//! Every parked connection's record is long-lived (minutes to days) and all records have
//! one size. Boxed one by one, they were allocated during a wave of connections among the
//! wave's short-lived allocations of the same size class (packets, buffers, the tasks'
//! state), so once those were freed the records sat scattered over partly used allocator
//! pages that cannot be returned: RSS well above the heap the records need. Here they sit
//! side by side in chunks of [`CHUNK`] records, so their memory is as dense as their
//! count (at most one chunk of slack).
//!
//! A record is named by a [`Key`]: its slot's index and the slot's generation, which
//! changes whenever the slot is freed, so a key kept by a waker, a readiness registration
//! or a deadline after its record left names nothing (and is ignored) rather than the
//! slot's next record. A slot is free, reserved (its key handed out, its record not in it:
//! being built, or taken out to be polled) or full.
//!
//! Bounds: one slot per record the parker holds, so at most one per connection; chunks are
//! kept once allocated (the table's high-water mark, at most `max_connections` records),
//! and freed slots are reused first.

/// Records per chunk (~24 KB of parked records).
pub(super) const CHUNK: usize = 64;

/// A slot's name: its generation in the high 32 bits, its index in the low ones. Never
/// `u64::MAX` (the index never reaches `u32::MAX`).
pub(super) type Key = u64;

/// Fixed-size records in chunks, each named by a [`Key`] (see the module docs).
pub(super) struct Slots<T> {
    chunks: Vec<Box<[Slot<T>]>>,
    /// Indexes of free slots, the next one to use last.
    free: Vec<u32>,
    /// Slots reserved or full.
    used: usize,
}

struct Slot<T> {
    generation: u32,
    state: State<T>,
}

enum State<T> {
    Free,
    Reserved,
    Full(T),
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            chunks: Vec::new(),
            free: Vec::new(),
            used: 0,
        }
    }
}

fn split(key: Key) -> (usize, u32) {
    ((key & u64::from(u32::MAX)) as usize, (key >> 32) as u32)
}

impl<T> Slots<T> {
    /// A free slot, reserved: its key. `None` when the index space is spent (4 billion
    /// slots, unreachable: each holds a connection).
    pub(super) fn reserve(&mut self) -> Option<Key> {
        if self.free.is_empty() {
            let first = self.chunks.len() * CHUNK;
            let last = u32::try_from(first + CHUNK)
                .ok()
                .filter(|&l| l < u32::MAX)?;
            self.chunks.push(
                (0..CHUNK)
                    .map(|_| Slot {
                        generation: 0,
                        state: State::Free,
                    })
                    .collect(),
            );
            // Reversed: the lowest index is used first.
            self.free.extend((first as u32..last).rev());
        }
        let index = self.free.pop()?;
        let slot = self.slot_mut(index as usize)?;
        slot.state = State::Reserved;
        let generation = slot.generation;
        self.used += 1;
        Some((u64::from(generation) << 32) | u64::from(index))
    }

    /// Puts `value` in the reserved slot `key`; gives it back if `key` is not reserved.
    pub(super) fn fill(&mut self, key: Key, value: T) -> Result<(), T> {
        match self.named_mut(key) {
            Some(slot) if matches!(slot.state, State::Reserved) => {
                slot.state = State::Full(value);
                Ok(())
            }
            _ => Err(value),
        }
    }

    /// The record in slot `key`, taken out; the slot stays reserved (see [`Slots::fill`],
    /// [`Slots::release`]). `None` when `key` names no record.
    pub(super) fn take(&mut self, key: Key) -> Option<T> {
        let slot = self.named_mut(key)?;
        match std::mem::replace(&mut slot.state, State::Reserved) {
            State::Full(value) => Some(value),
            other => {
                slot.state = other;
                None
            }
        }
    }

    /// The record in slot `key`, if `key` names one.
    pub(super) fn get(&self, key: Key) -> Option<&T> {
        let (index, generation) = split(key);
        let slot = self.chunks.get(index / CHUNK)?.get(index % CHUNK)?;
        match &slot.state {
            State::Full(value) if slot.generation == generation => Some(value),
            _ => None,
        }
    }

    /// Frees slot `key` (reserved or full; its record, if any, is dropped): the key names
    /// nothing from now on.
    pub(super) fn release(&mut self, key: Key) {
        let Some(slot) = self.named_mut(key) else {
            return;
        };
        if matches!(slot.state, State::Free) {
            return;
        }
        slot.state = State::Free;
        slot.generation = slot.generation.wrapping_add(1);
        self.used -= 1;
        self.free.push(split(key).0 as u32);
    }

    /// Slots reserved or full.
    pub(super) fn len(&self) -> usize {
        self.used
    }

    /// Every record, taken out, its slot freed. Reserved slots stay reserved.
    pub(super) fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        for (c, chunk) in self.chunks.iter_mut().enumerate() {
            for (i, slot) in chunk.iter_mut().enumerate() {
                if matches!(slot.state, State::Full(_))
                    && let State::Full(value) = std::mem::replace(&mut slot.state, State::Free)
                {
                    slot.generation = slot.generation.wrapping_add(1);
                    self.used -= 1;
                    self.free.push((c * CHUNK + i) as u32);
                    out.push(value);
                }
            }
        }
        out
    }

    fn slot_mut(&mut self, index: usize) -> Option<&mut Slot<T>> {
        self.chunks.get_mut(index / CHUNK)?.get_mut(index % CHUNK)
    }

    /// Slot `key`'s index, if its generation is still `key`'s.
    fn named_mut(&mut self, key: Key) -> Option<&mut Slot<T>> {
        let (index, generation) = split(key);
        self.slot_mut(index).filter(|s| s.generation == generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_record_until_the_slot_is_freed() {
        let mut s: Slots<String> = Slots::default();
        let a = s.reserve().expect("slot");
        assert_eq!(s.get(a), None, "reserved, not yet filled");
        s.fill(a, "a".into()).expect("fill");
        assert_eq!(s.get(a).map(String::as_str), Some("a"));
        assert_eq!(s.take(a).as_deref(), Some("a"));
        assert_eq!(s.get(a), None, "taken out: reserved");
        assert!(s.take(a).is_none());
        s.fill(a, "a again".into()).expect("back in its slot");
        s.release(a);
        assert_eq!(s.len(), 0);
        assert_eq!(s.get(a), None);
        assert!(s.take(a).is_none());
        assert_eq!(s.fill(a, "stale".into()), Err("stale".into()));
        // The slot is reused under a new name; the old key still names nothing.
        let b = s.reserve().expect("slot");
        assert_eq!(
            b & u64::from(u32::MAX),
            a & u64::from(u32::MAX),
            "same slot"
        );
        assert_ne!(a, b);
        s.fill(b, "b".into()).expect("fill");
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(b).map(String::as_str), Some("b"));
        s.release(a);
        assert_eq!(
            s.get(b).map(String::as_str),
            Some("b"),
            "a stale release frees nothing"
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn records_fill_chunks_in_order_and_reuse_freed_slots() {
        let mut s: Slots<usize> = Slots::default();
        let keys: Vec<Key> = (0..CHUNK * 2 + 1)
            .map(|i| {
                let k = s.reserve().expect("slot");
                s.fill(k, i).expect("fill");
                k
            })
            .collect();
        assert_eq!(s.chunks.len(), 3);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(k & u64::from(u32::MAX), i as u64, "lowest index first");
            assert_eq!(s.get(*k), Some(&i));
        }
        s.release(keys[5]);
        let k = s.reserve().expect("slot");
        assert_eq!(k & u64::from(u32::MAX), 5, "a freed slot is reused first");
        assert_eq!(s.chunks.len(), 3, "no new chunk while one is free");
        let reserved = s.len();
        let mut all = s.drain();
        all.sort_unstable();
        let mut want: Vec<usize> = (0..CHUNK * 2 + 1).filter(|&i| i != 5).collect();
        want.sort_unstable();
        assert_eq!(all, want);
        assert_eq!(s.len(), reserved - want.len(), "the reserved slot stays");
        assert!(keys.iter().all(|k| s.get(*k).is_none()));
    }
}
