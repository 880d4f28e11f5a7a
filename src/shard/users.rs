//! The resident users of one shard: a dense slab of actors indexed by a hash table on the
//! user's stable key, with bounded size and approximate least-recently-active eviction.
//!
//! Eviction samples a few random actors and evicts the least recently active (as Redis does);
//! it is O(1) and needs no list threaded through the actors.

use hashbrown::HashTable;

use crate::actor::UserActor;
use crate::ids::UserId;
use crate::rng::Rng;

/// How many actors eviction samples.
const EVICTION_SAMPLE: usize = 5;

/// One shard's users.
pub struct Users {
    slab: Vec<UserActor>,
    /// Last activity (Unix ms, engine time) of each slab entry, for eviction.
    active_ms: Vec<u64>,
    index: HashTable<u32>,
    cap: usize,
    scan_cursor: usize,
}

impl Users {
    /// An empty set holding at most `cap` users.
    pub fn new(cap: usize) -> Self {
        Users {
            slab: Vec::new(),
            active_ms: Vec::new(),
            index: HashTable::new(),
            cap,
            scan_cursor: 0,
        }
    }

    /// Resident users.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether no user is resident.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    fn find(&self, id: &UserId) -> Option<usize> {
        let slab = &self.slab;
        self.index
            .find(id.key(), |&i| slab[i as usize].id == *id)
            .map(|&i| i as usize)
    }

    /// The user, if resident.
    pub fn get(&self, id: &UserId) -> Option<&UserActor> {
        self.find(id).map(|i| &self.slab[i])
    }

    /// The user, if resident, marked active at `now_ms`.
    pub fn get_mut(&mut self, id: &UserId, now_ms: u64) -> Option<&mut UserActor> {
        let i = self.find(id)?;
        self.active_ms[i] = self.active_ms[i].max(now_ms);
        Some(&mut self.slab[i])
    }

    /// The resident user with this key, marked active at `now_ms`. Keys are 64-bit hashes;
    /// two resident users of one shard sharing a key is a 2^-64-per-pair event, and then the
    /// first is returned.
    pub fn get_by_key_mut(&mut self, key: u64, now_ms: u64) -> Option<&mut UserActor> {
        let slab = &self.slab;
        let i = *self
            .index
            .find(key, |&i| slab[i as usize].id.key() == key)? as usize;
        self.active_ms[i] = self.active_ms[i].max(now_ms);
        Some(&mut self.slab[i])
    }

    /// The user, created if absent; returns the evicted user when room had to be made.
    pub fn get_or_insert(
        &mut self,
        id: &UserId,
        now_ms: u64,
        dim: usize,
        rng: &mut Rng,
    ) -> (&mut UserActor, Option<UserActor>) {
        if let Some(i) = self.find(id) {
            self.active_ms[i] = self.active_ms[i].max(now_ms);
            return (&mut self.slab[i], None);
        }
        let evicted = if self.slab.len() >= self.cap {
            self.evict_sampled(rng)
        } else {
            None
        };
        let i = self.slab.len();
        self.slab.push(UserActor::new(id.clone(), now_ms, dim));
        self.active_ms.push(now_ms);
        let slab = &self.slab;
        self.index
            .insert_unique(id.key(), i as u32, |&j| slab[j as usize].id.key());
        (&mut self.slab[i], evicted)
    }

    fn evict_sampled(&mut self, rng: &mut Rng) -> Option<UserActor> {
        let victim = (0..EVICTION_SAMPLE)
            .map(|_| rng.below(self.slab.len()))
            .min_by_key(|&i| self.active_ms[i])?;
        Some(self.remove_at(victim))
    }

    /// Removes the user; returns its state if it was resident.
    pub fn remove(&mut self, id: &UserId) -> Option<UserActor> {
        let i = self.find(id)?;
        Some(self.remove_at(i))
    }

    /// Removes the user with this key; returns its state if it was resident.
    pub fn remove_key(&mut self, key: u64) -> Option<UserActor> {
        let slab = &self.slab;
        let i = *self
            .index
            .find(key, |&i| slab[i as usize].id.key() == key)? as usize;
        Some(self.remove_at(i))
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
        self.slab.swap_remove(i)
    }

    /// Removes up to `budget` examined users idle since before `cutoff_ms`, scanning
    /// round-robin so each call does bounded work.
    pub fn passivate_idle(&mut self, cutoff_ms: u64, budget: usize) -> Vec<UserActor> {
        let mut out = Vec::new();
        for _ in 0..budget.min(self.slab.len()) {
            if self.scan_cursor >= self.slab.len() {
                self.scan_cursor = 0;
            }
            let i = self.scan_cursor;
            if self.active_ms[i] < cutoff_ms {
                out.push(self.remove_at(i));
            } else {
                self.scan_cursor += 1;
            }
        }
        out
    }

    /// Bytes of memory held per resident user (slab, index and actor heap), approximately.
    pub fn approx_bytes(&self) -> usize {
        self.slab.capacity() * (std::mem::size_of::<UserActor>() + 8)
            + self.index.capacity() * 5
            + self.slab.iter().map(UserActor::heap_bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[test]
    fn insert_find_remove_keep_index_consistent() {
        let mut users = Users::new(100);
        let mut rng = Rng::new(1);
        for i in 0..50 {
            users.get_or_insert(&id(&format!("u{i}")), i, 8, &mut rng);
        }
        assert!(users.remove(&id("u3")).is_some());
        assert!(users.remove(&id("u3")).is_none());
        assert_eq!(users.len(), 49);
        for i in 0..50 {
            assert_eq!(users.get(&id(&format!("u{i}"))).is_some(), i != 3, "u{i}");
        }
    }

    #[test]
    fn cap_evicts_a_stale_user() {
        let mut users = Users::new(10);
        let mut rng = Rng::new(1);
        for i in 0..10 {
            users.get_or_insert(&id(&format!("u{i}")), 1000 + i, 8, &mut rng);
        }
        let (_, evicted) = users.get_or_insert(&id("new"), 5000, 8, &mut rng);
        assert!(evicted.is_some());
        assert_eq!(users.len(), 10);
    }

    #[test]
    fn idle_users_are_passivated() {
        let mut users = Users::new(100);
        let mut rng = Rng::new(1);
        users.get_or_insert(&id("old"), 10, 8, &mut rng);
        users.get_or_insert(&id("new"), 1000, 8, &mut rng);
        let gone = users.passivate_idle(500, 10);
        assert_eq!(gone.len(), 1);
        assert!(users.get(&id("new")).is_some());
    }
}
