//! The users of one shard: a dense slab of resident actors indexed by a hash table on the
//! user's stable key, with bounded size and approximate least-recently-active eviction, over
//! the users out of memory (`Passive`: parked, erased, stored).
//!
//! Eviction samples a few random actors and evicts the least recently active (as Redis does);
//! it is O(1) and needs no list threaded through the actors. It draws from its own RNG, so
//! which users happen to be resident never changes what the model draws.
//!
//! With a checkpoint store, every resident user carries two marks: `DIRTY` (changed since the
//! last checkpoint began) and `OWED` (the checkpoint in progress must store it as it was when
//! that checkpoint began, and has not copied it yet). A checkpoint copies its owed users a
//! slice at a time (`copy_owed`); a user about to change while still owed is copied first
//! (copy-on-write), so the checkpoint is the shard's state at one log position although no
//! drain waits for more than a slice.

use std::sync::Arc;

use hashbrown::HashTable;

use crate::actor::UserActor;
use crate::error::Error;
use crate::ids::UserId;
use crate::persist::store::{self, UserWrite};
use crate::rng::Rng;
use crate::shard::passive::Passive;

/// How many actors eviction samples.
const EVICTION_SAMPLE: usize = 5;

/// Changed since the last checkpoint began.
const DIRTY: u8 = 1;
/// Owed to the checkpoint in progress, not copied yet.
const OWED: u8 = 2;

/// One shard's users.
pub struct Users {
    slab: Vec<UserActor>,
    /// Last activity (Unix ms, engine time) of each slab entry, for eviction.
    active_ms: Vec<u64>,
    /// `DIRTY` / `OWED` of each slab entry (all zero without a store).
    marks: Vec<u8>,
    /// The segment slot + 1 each slab entry was last assigned to (0: none): a read-side
    /// cache for segment sizes, not user state (`shard/segmented.rs`).
    segment: Vec<u8>,
    /// Resident users per segment slot + 1 (index 0 unused).
    segment_sizes: Vec<u32>,
    index: HashTable<u32>,
    cap: usize,
    scan_cursor: usize,
    evict_rng: Rng,
    /// Users out of memory.
    passive: Passive,
    /// Whether a checkpoint began and its commit is not known yet (evicted users are then
    /// parked even if clean: the store may not hold what the checkpoint copied).
    checkpointing: bool,
    /// Users owed to the checkpoint and not copied yet.
    owed: usize,
    /// Users copied for the checkpoint (copy-on-write, evictions), not sent yet.
    copied: Vec<UserWrite>,
    copy_cursor: usize,
    /// Users moved out of memory since `take_evictions`.
    evictions: u64,
    /// Most parked bytes before `admits` refuses users that would evict (`usize::MAX`: none).
    parked_limit: usize,
    /// Open decisions of users dropped without a store (their attribution ends with them).
    dropped_open: Vec<u64>,
}

impl Users {
    /// An empty set holding at most `cap` users in memory, over `passive`; eviction is seeded
    /// with `seed`.
    pub fn new(cap: usize, passive: Passive, seed: u64) -> Self {
        Users {
            slab: Vec::new(),
            active_ms: Vec::new(),
            marks: Vec::new(),
            segment: Vec::new(),
            segment_sizes: vec![0; crate::model::segments::MAX_SEGMENTS + 1],
            index: HashTable::new(),
            cap,
            scan_cursor: 0,
            evict_rng: Rng::new(seed ^ 0x5bd1_e995_7c3a_11d7),
            passive,
            checkpointing: false,
            parked_limit: usize::MAX,
            owed: 0,
            copied: Vec::new(),
            copy_cursor: 0,
            evictions: 0,
            dropped_open: Vec::new(),
        }
    }

    /// Records that resident user `key` was last assigned to segment slot `slot`.
    pub fn assign_segment(&mut self, key: u64, slot: Option<usize>) {
        let Some(i) = self.find_key(key) else {
            return;
        };
        let new = slot.map_or(0, |s| s + 1);
        let old = std::mem::replace(&mut self.segment[i], new as u8) as usize;
        if old > 0 {
            self.segment_sizes[old] -= 1;
        }
        if new > 0 {
            self.segment_sizes[new] += 1;
        }
    }

    /// Resident users last assigned to each segment slot (slot `i` at index `i`).
    pub fn segment_sizes(&self) -> &[u32] {
        &self.segment_sizes[1..]
    }

    /// Forgets every assignment (the centroids were rebuilt: slots mean other segments).
    pub fn clear_segments(&mut self) {
        self.segment.iter_mut().for_each(|s| *s = 0);
        self.segment_sizes.iter_mut().for_each(|s| *s = 0);
    }

    /// Resident users.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether no user is resident.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The users out of memory.
    pub fn passive(&self) -> &Passive {
        &self.passive
    }

    fn find_key(&self, key: u64) -> Option<usize> {
        let slab = &self.slab;
        self.index
            .find(key, |&i| slab[i as usize].id.key() == key)
            .map(|&i| i as usize)
    }

    /// The slab index of the user with this key, loaded into memory if it is out of it.
    /// Keys are 64-bit hashes; two users of one shard sharing a key is a 2^-64-per-pair event,
    /// and then they share a state.
    fn resident(&mut self, key: u64, now_ms: u64) -> Result<Option<usize>, Error> {
        if let Some(i) = self.find_key(key) {
            return Ok(Some(i));
        }
        let Some((user, parked)) = self.passive.take(key)? else {
            return Ok(None);
        };
        // A parked user is not in the store yet: dirty. A stored one is clean.
        Ok(Some(self.push(
            user,
            now_ms,
            if parked { DIRTY } else { 0 },
        )))
    }

    /// Adds an actor to the slab, making room first; returns its index.
    fn push(&mut self, user: UserActor, now_ms: u64, mark: u8) -> usize {
        if self.slab.len() >= self.cap {
            self.evict_sampled();
        }
        let i = self.slab.len();
        let key = user.id.key();
        self.slab.push(user);
        self.active_ms.push(now_ms);
        self.segment.push(0);
        self.marks
            .push(if self.passive.has_store() { mark } else { 0 });
        let slab = &self.slab;
        self.index
            .insert_unique(key, i as u32, |&j| slab[j as usize].id.key());
        i
    }

    /// Marks entry `i` active at `now_ms` and about to change: copied first if the
    /// checkpoint in progress still owes it.
    fn touch(&mut self, i: usize, now_ms: u64) -> &mut UserActor {
        self.active_ms[i] = self.active_ms[i].max(now_ms);
        if self.passive.has_store() {
            if self.marks[i] & OWED != 0 {
                let user = &self.slab[i];
                self.copied
                    .push((user.id.key(), Some(store::encode(user).into())));
                self.owed -= 1;
            }
            self.marks[i] = DIRTY;
        }
        &mut self.slab[i]
    }

    /// Takes the user's state from `passive` from now on (once, before any user arrives).
    pub fn attach(&mut self, passive: Passive) {
        debug_assert!(self.slab.is_empty());
        self.passive = passive;
    }

    /// Refuses, from now on, users whose coming into memory would evict another while at
    /// least `bytes` are parked (`admits`).
    pub fn limit_parked(&mut self, bytes: usize) {
        self.parked_limit = bytes;
    }

    /// The limit set by `limit_parked`.
    pub fn parked_limit(&self) -> usize {
        self.parked_limit
    }

    /// Whether the user with this key can be served now: it is in memory, or there is room,
    /// or the parked set is under its limit (bringing it in may evict, and so park, another).
    pub fn admits(&self, key: u64) -> bool {
        self.has_room() || self.find_key(key).is_some()
    }

    /// Whether any user can come into memory now: under the cap, or parked set under its
    /// limit (always, without a store).
    pub fn has_room(&self) -> bool {
        self.slab.len() < self.cap || self.passive.parked_bytes() < self.parked_limit
    }

    /// Brings the user into memory if it is out of it (to be read with `peek`); false if
    /// there is no such user (or the store cannot be read).
    pub fn load(&mut self, id: &UserId) -> bool {
        matches!(self.resident(id.key(), 0), Ok(Some(_)))
    }

    /// The user if it is in memory (`load` first to find one that is out of it).
    pub fn peek(&self, id: &UserId) -> Option<&UserActor> {
        self.find_key(id.key()).map(|i| &self.slab[i])
    }

    /// The user, loaded if it is out of memory, marked active at `now_ms` and changed. A
    /// store that cannot be read finds no one (nothing is created over it).
    pub fn get_mut(&mut self, id: &UserId, now_ms: u64) -> Option<&mut UserActor> {
        self.get_by_key_mut(id.key(), now_ms)
    }

    /// `get_mut` by the user's key.
    pub fn get_by_key_mut(&mut self, key: u64, now_ms: u64) -> Option<&mut UserActor> {
        let i = self.resident(key, now_ms).ok()??;
        Some(self.touch(i, now_ms))
    }

    /// The user, loaded or created if absent, marked active and changed; `Unavailable` if
    /// the store cannot be read.
    pub fn get_or_insert(
        &mut self,
        id: &UserId,
        now_ms: u64,
        dim: usize,
    ) -> Result<&mut UserActor, Error> {
        let i = match self.resident(id.key(), now_ms)? {
            Some(i) => i,
            None => self.push(UserActor::new(id.clone(), now_ms, dim), now_ms, DIRTY),
        };
        Ok(self.touch(i, now_ms))
    }

    /// Evictions (to the store, or dropped without one) since the last call, and the open
    /// decisions of the users dropped.
    pub fn take_evictions(&mut self) -> (u64, Vec<u64>) {
        (
            std::mem::take(&mut self.evictions),
            std::mem::take(&mut self.dropped_open),
        )
    }

    fn evict_sampled(&mut self) {
        let n = self.slab.len();
        let Some(victim) = (0..EVICTION_SAMPLE)
            .map(|_| self.evict_rng.below(n))
            .min_by_key(|&i| self.active_ms[i])
        else {
            return;
        };
        self.passivate_at(victim);
    }

    /// Moves entry `i` out of memory: parked (encoded) if the store does not hold its latest
    /// state, copied if the checkpoint in progress owes it, dropped without a store.
    fn passivate_at(&mut self, i: usize) {
        let mark = self.marks[i];
        let user = self.remove_at(i);
        self.evictions += 1;
        if !self.passive.has_store() {
            self.dropped_open.extend_from_slice(&user.open);
            return;
        }
        let encoded: Option<Arc<[u8]>> =
            (mark != 0 || self.checkpointing).then(|| store::encode(&user).into());
        if mark & OWED != 0 {
            self.owed -= 1;
            self.copied.push((user.id.key(), encoded.clone()));
        }
        if let Some(e) = encoded {
            self.passive.park(user.id.key(), e);
        }
        self.passive.count_passivation();
    }

    /// Erases the user from memory and from the store (at the next checkpoint); returns its
    /// resident state, and whether it existed anywhere.
    pub fn erase(&mut self, key: u64) -> (Option<UserActor>, bool) {
        let resident = self.find_key(key).map(|i| {
            if self.marks[i] & OWED != 0 {
                self.owed -= 1;
            }
            self.remove_at(i)
        });
        let elsewhere = self.passive.erase(key);
        let found = resident.is_some() || elsewhere;
        (resident, found)
    }

    fn remove_at(&mut self, i: usize) -> UserActor {
        let key = self.slab[i].id.key();
        if let Ok(entry) = self.index.find_entry(key, |&j| j as usize == i) {
            entry.remove();
        }
        let last = self.slab.len() - 1;
        if i != last {
            let moved_key = self.slab[last].id.key();
            if let Some(slot) = self.index.find_mut(moved_key, |&j| j as usize == last) {
                *slot = i as u32;
            }
        }
        self.active_ms.swap_remove(i);
        self.marks.swap_remove(i);
        let segment = self.segment.swap_remove(i) as usize;
        if segment > 0 {
            self.segment_sizes[segment] -= 1;
        }
        self.slab.swap_remove(i)
    }

    /// Moves out of memory up to `budget` examined users idle since before `cutoff_ms`,
    /// scanning round-robin so each call does bounded work; returns how many.
    pub fn passivate_idle(&mut self, cutoff_ms: u64, budget: usize) -> usize {
        let mut moved = 0;
        for _ in 0..budget.min(self.slab.len()) {
            if self.scan_cursor >= self.slab.len() {
                self.scan_cursor = 0;
            }
            let i = self.scan_cursor;
            if self.active_ms[i] < cutoff_ms {
                self.passivate_at(i);
                moved += 1;
            } else {
                self.scan_cursor += 1;
            }
        }
        moved
    }

    /// Starts a checkpoint: every dirty resident user becomes owed to it. Returns the writes
    /// it starts with (erasures, parked users) and the number `committed` takes back.
    pub fn begin_checkpoint(&mut self) -> (Vec<UserWrite>, u64) {
        debug_assert!(!self.checkpointing && self.owed == 0);
        for m in &mut self.marks {
            if *m & DIRTY != 0 {
                *m = OWED;
                self.owed += 1;
            }
        }
        self.checkpointing = true;
        self.copy_cursor = 0;
        self.passive.for_checkpoint()
    }

    /// Copies up to `budget` owed users for the checkpoint, with those copied before they
    /// changed or left; `None` once nothing is owed (the checkpoint has all its users).
    pub fn copy_owed(&mut self, budget: usize) -> Option<Vec<UserWrite>> {
        if !self.checkpointing {
            return None;
        }
        let mut out = std::mem::take(&mut self.copied);
        let mut left = budget;
        // Entries move when others are removed (swap_remove), so the scan wraps until the
        // count of owed users reaches zero.
        while self.owed > 0 && left > 0 {
            if self.copy_cursor >= self.slab.len() {
                self.copy_cursor = 0;
            }
            let i = self.copy_cursor;
            if self.marks[i] & OWED != 0 {
                let user = &self.slab[i];
                out.push((user.id.key(), Some(store::encode(user).into())));
                self.marks[i] &= !OWED;
                self.owed -= 1;
                left -= 1;
            }
            self.copy_cursor += 1;
        }
        // Done copying, but `checkpointing` stays set until the commit is known: a user the
        // checkpoint copied is not in the store before that, so leaving memory it is parked.
        if self.owed == 0 && out.is_empty() {
            return None;
        }
        Some(out)
    }

    /// The checkpoint in progress failed: every resident user counts as changed again (the
    /// next checkpoint stores them all), and nothing more is owed.
    pub fn abandon_checkpoint(&mut self) {
        if self.passive.has_store() {
            self.marks.iter_mut().for_each(|m| *m = DIRTY);
        }
        self.owed = 0;
        self.copied.clear();
        self.checkpointing = false;
    }

    /// A checkpoint that began with entries up to `gen` committed.
    pub fn committed(&mut self, gen: u64) {
        self.checkpointing = false;
        self.passive.committed(gen);
    }

    /// Bytes of memory held per resident user (slab, index and actor heap), approximately.
    pub fn approx_bytes(&self) -> usize {
        self.slab.capacity() * (std::mem::size_of::<UserActor>() + 9)
            + self.index.capacity() * 5
            + self.slab.iter().map(UserActor::heap_bytes).sum::<usize>()
            + self.passive.parked_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::store::Store;

    fn id(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn in_memory(cap: usize) -> Users {
        Users::new(cap, Passive::default(), 1)
    }

    #[test]
    fn insert_find_erase_keep_index_consistent() {
        let mut users = in_memory(100);
        for i in 0..50 {
            users.get_or_insert(&id(&format!("u{i}")), i, 8).unwrap();
        }
        assert!(users.erase(id("u3").key()).1);
        assert!(!users.erase(id("u3").key()).1);
        assert_eq!(users.len(), 49);
        for i in 0..50 {
            assert_eq!(users.peek(&id(&format!("u{i}"))).is_some(), i != 3, "u{i}");
        }
    }

    #[test]
    fn cap_evicts_a_stale_user_and_without_a_store_drops_it() {
        let mut users = in_memory(10);
        for i in 0..10 {
            users
                .get_or_insert(&id(&format!("u{i}")), 1000 + i, 8)
                .unwrap();
        }
        users.get_or_insert(&id("new"), 5000, 8).unwrap();
        assert_eq!(users.take_evictions().0, 1);
        assert_eq!(users.len(), 10);
        let gone = (0..10)
            .filter(|i| !users.load(&id(&format!("u{i}"))))
            .count();
        assert_eq!(gone, 1, "in memory, an evicted user is dropped");
    }

    #[test]
    fn idle_users_are_passivated() {
        let mut users = in_memory(100);
        users.get_or_insert(&id("old"), 10, 8).unwrap();
        users.get_or_insert(&id("new"), 1000, 8).unwrap();
        assert_eq!(users.passivate_idle(500, 10), 1);
        assert!(users.peek(&id("new")).is_some());
        assert!(users.peek(&id("old")).is_none());
    }

    fn with_store(cap: usize) -> (tempfile::TempDir, Users) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        (dir, Users::new(cap, Passive::new(Some(store)), 1))
    }

    #[test]
    fn with_a_store_an_evicted_user_comes_back_as_it_left() {
        let (_dir, mut users) = with_store(2);
        let a = users.get_or_insert(&id("a"), 1, 8).unwrap();
        a.steps = 7;
        a.decisions = 3;
        users.get_or_insert(&id("b"), 2, 8).unwrap();
        users.get_or_insert(&id("c"), 3, 8).unwrap();
        users.get_or_insert(&id("d"), 4, 8).unwrap();
        assert_eq!(users.take_evictions().0, 2);
        assert_eq!(users.len(), 2);
        for name in ["b", "c", "d", "a"] {
            assert!(users.load(&id(name)), "{name} is found in or out of memory");
        }
        assert!(!users.load(&id("never")));
        let a = users.peek(&id("a")).unwrap();
        assert_eq!((a.steps, a.decisions), (7, 3));
    }

    #[test]
    fn a_checkpoint_copies_each_dirty_user_as_it_was_when_it_began() {
        let (_dir, mut users) = with_store(100);
        for i in 0..10 {
            users
                .get_or_insert(&id(&format!("u{i}")), 1, 8)
                .unwrap()
                .steps = 1;
        }
        let (first, _gen) = users.begin_checkpoint();
        assert!(first.is_empty());
        // u0 changes while owed: the checkpoint gets its state from before the change.
        users.get_mut(&id("u0"), 2).unwrap().steps = 99;
        let mut copied = Vec::new();
        while let Some(chunk) = users.copy_owed(3) {
            copied.extend(chunk);
        }
        assert_eq!(copied.len(), 10, "every dirty user once");
        let path = std::path::Path::new("test");
        for (key, bytes) in &copied {
            let user: UserActor = store::decode(bytes.as_ref().unwrap(), path, "user").unwrap();
            assert_eq!(user.id.key(), *key);
            assert_eq!(user.steps, 1, "the state at the checkpoint's start");
        }
        // Only u0 changed since: the next checkpoint owes it alone.
        users.committed(0);
        users.begin_checkpoint();
        let next: Vec<_> = std::iter::from_fn(|| users.copy_owed(100))
            .flatten()
            .collect();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0, id("u0").key());
    }

    #[test]
    fn a_user_copied_by_an_uncommitted_checkpoint_is_parked_when_it_leaves_memory() {
        let (_dir, mut users) = with_store(10);
        for i in 0..10 {
            users.get_or_insert(&id(&format!("u{i}")), 1, 8).unwrap();
        }
        users.begin_checkpoint();
        while users.copy_owed(100).is_some() {}
        // Every user is copied (clean) but the checkpoint has not committed: the store does
        // not hold them yet, so evicting them must park them.
        for i in 0..10 {
            users.get_or_insert(&id(&format!("w{i}")), 2, 8).unwrap();
        }
        assert_eq!(users.passive().parked_len(), 10);
        for i in 0..10 {
            assert!(users.load(&id(&format!("u{i}"))), "u{i}");
        }
    }
}
