//! `KeyIndex`: the item table's `key → row` index, an open-addressing table with linear
//! probing over keys that already are well-mixed 64-bit hashes.
//!
//! A general hash map hides where a key's slot is until it probes, so a decision over 100
//! candidates in a large catalog pays 100 cache misses one after another (they were most of
//! a decision's cost). Here a key's first slot is `key & mask`, so a decision can prefetch
//! every candidate's slot first and probe after: the misses overlap. Deletion shifts the
//! following entries back (no tombstones), and the table keeps at most half its slots full.

/// A slot: a key and its row; `row == EMPTY` marks a free slot.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct Slot {
    key: u64,
    row: u32,
}

const EMPTY: u32 = u32::MAX;

const FREE: Slot = Slot { key: 0, row: EMPTY };

/// A `u64 → u32` index (rows below `u32::MAX`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct KeyIndex {
    slots: Vec<Slot>,
    len: usize,
}

impl KeyIndex {
    /// Makes this a copy of `src`, reusing this one's memory (see `ItemTable::copy_from`).
    pub fn copy_from(&mut self, src: &KeyIndex) {
        let KeyIndex { slots, len } = src;
        self.slots.clone_from(slots);
        self.len = *len;
    }
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex {
            slots: vec![FREE; 16],
            len: 0,
        }
    }
}

impl KeyIndex {
    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where `key`'s probe starts: fetch it ahead with [`Self::prefetch`].
    #[inline]
    fn home(&self, key: u64) -> usize {
        key as usize & self.mask()
    }

    /// Asks the CPU to start loading `key`'s first slot, so that a later `get` finds it in
    /// cache.
    #[inline]
    pub fn prefetch(&self, key: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let p = self.slots[self.home(key)..].as_ptr() as *const i8;
            // SAFETY: prefetching is a hint that never faults; `p` points into `slots`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = key;
    }

    /// The row of `key`.
    #[inline]
    pub fn get(&self, key: u64) -> Option<u32> {
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let s = self.slots[i];
            if s.row == EMPTY {
                return None;
            }
            if s.key == key {
                return Some(s.row);
            }
            i = (i + 1) & mask;
        }
    }

    /// Sets `key`'s row (replacing an existing one).
    pub fn insert(&mut self, key: u64, row: u32) {
        debug_assert_ne!(row, EMPTY);
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let s = &mut self.slots[i];
            if s.row == EMPTY {
                *s = Slot { key, row };
                self.len += 1;
                return;
            }
            if s.key == key {
                s.row = row;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Removes `key`; its row if it was there.
    pub fn remove(&mut self, key: u64) -> Option<u32> {
        let mask = self.mask();
        let mut i = self.home(key);
        let row = loop {
            let s = self.slots[i];
            if s.row == EMPTY {
                return None;
            }
            if s.key == key {
                break s.row;
            }
            i = (i + 1) & mask;
        };
        // Backward-shift deletion: move later entries of the run into the hole when their
        // home is not between the hole and them.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let s = self.slots[j];
            if s.row == EMPTY {
                break;
            }
            let home = self.home(s.key);
            // Distance from home to j, and from home to the hole, going forward.
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = s;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = FREE;
        self.len -= 1;
        Some(row)
    }

    fn grow(&mut self) {
        let bigger = vec![FREE; self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, bigger);
        self.len = 0;
        for s in old.into_iter().filter(|s| s.row != EMPTY) {
            self.insert(s.key, s.row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    proptest::proptest! {
        /// Any sequence of inserts and removes leaves it agreeing with a `HashMap`; small
        /// keys collide on purpose (their homes are their low bits).
        #[test]
        fn agrees_with_a_hash_map(ops in proptest::collection::vec((0u8..3, 0u64..64, 0u32..1000), 0..400)) {
            let mut index = KeyIndex::default();
            let mut model = HashMap::new();
            for (op, key, row) in ops {
                let key = key * 16; // many keys share a home slot
                match op {
                    0 | 1 => {
                        index.insert(key, row);
                        model.insert(key, row);
                    }
                    _ => {
                        proptest::prop_assert_eq!(index.remove(key), model.remove(&key));
                    }
                }
                proptest::prop_assert_eq!(index.len(), model.len());
            }
            for key in 0..64u64 {
                let key = key * 16;
                proptest::prop_assert_eq!(index.get(key), model.get(&key).copied());
            }
        }
    }
}
