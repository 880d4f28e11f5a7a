//! The collaborative signal: which items the same users touch close together in time.
//!
//! For every item the shard keeps a bounded list of its most frequent neighbours: each event
//! on item `i` counts one co-occurrence of `i` with each of the user's last
//! [`RECENT_ITEMS`] distinct items, in both directions. A full list replaces its least
//! counted entry (the Space-Saving algorithm of Metwally et al., 2005), so an item's heavy
//! neighbours survive in `neighbours` slots whatever the stream's length. The feature of a
//! candidate `i` for a user is
//!
//! ```text
//! co(u, i) = Σ_a λ^a · C(j_a, i) / √(n_{j_a} · n_i)
//! ```
//!
//! over the user's recent items `j_0` (the latest), `j_1`, … : the cosine similarity of item-kNN
//! (Sarwar et al., 2001), counted within a short window and weighted toward what the user
//! touched last (session-based kNN), over the [`SCORED_NEIGHBOURS`] strongest neighbours of
//! each recent item. Memory is `neighbours · 16` bytes per item that has appeared in an event;
//! the work per event is `2 · RECENT_ITEMS` list updates.
//!
//! This module owns counts and lookups; it knows nothing of users, the clock or the score.

use multiversion::multiversion;

use crate::model::global::KeyMap;

/// How many of a user's latest distinct items vote (and count as co-occurring).
pub const RECENT_ITEMS: usize = 8;

/// How many of a recent item's strongest neighbours vote for candidates. Lists are kept in
/// (nearly) descending order of their lower-bound counts, so this is the head of the list:
/// a decision's preparation is at most `RECENT_ITEMS · SCORED_NEIGHBOURS` map updates.
pub const SCORED_NEIGHBOURS: usize = 64;

/// A user's latest distinct items, newest first (`len` of them valid).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecentItems {
    keys: [u64; RECENT_ITEMS],
    len: u8,
}

impl RecentItems {
    /// Items given newest first (at most [`RECENT_ITEMS`] are kept).
    pub fn from_newest_first(keys: &[u64]) -> Self {
        let mut r = RecentItems::default();
        for &k in keys.iter().take(RECENT_ITEMS).rev() {
            r.push(k);
        }
        r
    }

    /// The items, newest first.
    pub fn as_slice(&self) -> &[u64] {
        &self.keys[..self.len as usize]
    }

    /// Whether `key` is among them.
    pub fn contains(&self, key: u64) -> bool {
        self.as_slice().contains(&key)
    }

    /// Makes `key` the newest (moving it up if it was there already).
    pub fn push(&mut self, key: u64) {
        let len = self.len as usize;
        let at = self.as_slice().iter().position(|&k| k == key);
        let end = at.unwrap_or(len.min(RECENT_ITEMS - 1));
        self.keys.copy_within(0..end, 1);
        self.keys[0] = key;
        if at.is_none() && len < RECENT_ITEMS {
            self.len += 1;
        }
    }
}

/// One item's neighbour list.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Neighbours {
    /// Interactions of the item itself (`n_i`).
    count: f32,
    keys: Vec<u64>,
    /// Space-Saving counts (upper bounds).
    counts: Vec<f32>,
    /// Each entry's overestimate: the count it inherited when it took its slot. `count −
    /// error` is a lower bound of the true count, and what the similarity uses, so that the
    /// churn of a popular item's tail does not pose as neighbours.
    errors: Vec<f32>,
}

impl Neighbours {
    #[inline]
    fn weight(&self, at: usize) -> f32 {
        self.counts[at] - self.errors[at]
    }

    /// Counts one co-occurrence with `to` in a list of at most `cap` entries.
    fn bump(&mut self, to: u64, cap: usize) {
        if let Some(mut at) = find(&self.keys, to) {
            self.counts[at] += 1.0;
            // Keep the strongest first: one count up moves an entry at most past its equals.
            while at > 0 && self.weight(at) > self.weight(at - 1) {
                self.keys.swap(at, at - 1);
                self.counts.swap(at, at - 1);
                self.errors.swap(at, at - 1);
                at -= 1;
            }
        } else if self.keys.len() < cap {
            self.keys.push(to);
            self.counts.push(1.0);
            self.errors.push(0.0);
        } else {
            // Space-Saving: the least counted entry makes room, and its count carries over
            // as the newcomer's overestimate.
            let (at, min) =
                self.counts
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::INFINITY),
                        |(a, m), (i, &c)| {
                            if c < m {
                                (i, c)
                            } else {
                                (a, m)
                            }
                        },
                    );
            self.keys[at] = to;
            self.counts[at] = min + 1.0;
            self.errors[at] = min;
        }
    }
}

/// `Σ_a w_a·C(j_a, key)` of each key into `sums`, over the recent items' list heads
/// `(w_a, head, list)`, in the recent items' order.
#[multiversion(targets("x86_64+avx2"))]
fn votes(heads: &[(f32, &[u64], Option<&Neighbours>)], keys: &[u64], sums: &mut [f32]) {
    for (&key, sum) in keys.iter().zip(sums.iter_mut()) {
        *sum = 0.0;
        for &(wj, head, list) in heads {
            let Some(list) = list else { continue };
            if let Some(at) = position(head, key) {
                let c = list.weight(at);
                if c > 0.0 {
                    *sum += wj * c;
                }
            }
        }
    }
}

/// [`position`], compiled for AVX2 too (64-bit lanes compare in one instruction there; the
/// SSE2 baseline has no such compare and stays scalar).
#[multiversion(targets("x86_64+avx2"))]
fn find(keys: &[u64], key: u64) -> Option<usize> {
    position(keys, key)
}

/// The position of `key` in `keys` (whose entries are distinct). Eight keys are compared at
/// a time without an early exit, which the compiler turns into vector compares: most lookups
/// (a sampled negative against a recent item's neighbours) miss and scan the whole list.
#[inline]
fn position(keys: &[u64], key: u64) -> Option<usize> {
    let mut chunks = keys.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |hit, &k| hit | (k == key)) {
            return chunk.iter().position(|&k| k == key).map(|i| base + i);
        }
        base += 8;
    }
    let rest = chunks.remainder();
    rest.iter().position(|&k| k == key).map(|i| base + i)
}

/// One counted engagement: the item and the user's recent items before it. Shards exchange
/// these through the mixer, so that each counts every shard's users.
pub type Engagement = (u64, RecentItems);

/// Most engagements a shard keeps to share before its next mix; past this, new ones are not
/// shared (they still count on their own shard).
pub const MAX_OUTBOX: usize = 1 << 16;

/// Per-item bounded co-occurrence counts of one shard.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CoOccurrence {
    #[serde(skip)]
    capacity: usize,
    #[serde(skip)]
    recency: f32,
    lists: KeyMap<Neighbours>,
    /// Engagements counted here since the last mix, for the other shards (`None`: nothing to
    /// share with).
    outbox: Option<Vec<Engagement>>,
    /// Scratch of a prepared user: neighbour key → summed weight (before `1/√n_i`).
    #[serde(skip)]
    prepared: KeyMap<f32>,
}

impl CoOccurrence {
    /// Takes a checkpoint's counts, keeping this run's capacity and recency weight.
    pub fn adopt(&mut self, saved: CoOccurrence) {
        *self = CoOccurrence {
            capacity: self.capacity,
            recency: self.recency,
            prepared: std::mem::take(&mut self.prepared),
            ..saved
        };
    }

    /// Counts keeping `capacity` neighbours per item (0: off), recent items weighted `recency^a`.
    pub fn new(capacity: usize, recency: f32) -> Self {
        CoOccurrence {
            capacity,
            recency,
            lists: KeyMap::default(),
            outbox: None,
            prepared: KeyMap::default(),
        }
    }

    /// Keeps what is counted here for [`Self::take_outbox`], to share with other shards.
    pub fn share(mut self) -> Self {
        self.outbox = Some(Vec::new());
        self
    }

    /// The engagements counted here since the last call.
    pub fn take_outbox(&mut self) -> Vec<Engagement> {
        self.outbox.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Counts engagements another shard counted (and does not share them again).
    pub fn apply_shared(&mut self, engagements: &[Engagement]) {
        for (key, recent) in engagements {
            self.count(*key, recent);
        }
    }

    /// Whether the component is on.
    pub fn is_on(&self) -> bool {
        self.capacity > 0
    }

    /// Items with a list.
    pub fn len(&self) -> usize {
        self.lists.len()
    }

    /// Whether no item has a list.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Counts an interaction with `key` by a user whose recent items (before this one) are
    /// `recent`. A repeat of a recent item counts nothing new.
    pub fn record(&mut self, key: u64, recent: &RecentItems) {
        if !self.is_on() || recent.contains(key) {
            return;
        }
        if let Some(outbox) = &mut self.outbox {
            if outbox.len() < MAX_OUTBOX {
                outbox.push((key, *recent));
            }
        }
        self.count(key, recent);
    }

    fn count(&mut self, key: u64, recent: &RecentItems) {
        if !self.is_on() || recent.contains(key) {
            return;
        }
        let cap = self.capacity;
        // `key`'s list and each recent item's are distinct lists (`key` is not recent), so
        // bumping `key`'s first and then the others is the same as interleaving them; `key`'s
        // list is looked up once.
        let list = self.lists.entry(key).or_default();
        list.count += 1.0;
        for &j in recent.as_slice() {
            list.bump(j, cap);
        }
        for &j in recent.as_slice() {
            self.bump(j, key);
        }
    }

    fn bump(&mut self, from: u64, to: u64) {
        let cap = self.capacity;
        self.lists.entry(from).or_default().bump(to, cap);
    }

    /// `co(u, key)` for one item: the same sum as [`Self::prepare`] builds, looked up in the
    /// recent items' lists.
    pub fn score(&self, key: u64, recent: &RecentItems) -> f32 {
        let mut out = [0.0];
        self.score_many(&[key], recent, &mut out);
        out[0]
    }

    /// [`Self::score`] of several items for one user, into `out`: the user's recent lists are
    /// found once, not once per item.
    pub fn score_many(&self, keys: &[u64], recent: &RecentItems, out: &mut [f32]) {
        let mut heads: [(f32, &[u64], Option<&Neighbours>); RECENT_ITEMS] =
            [(0.0, &[], None); RECENT_ITEMS];
        let mut found = 0;
        let mut w = 1.0;
        for &j in recent.as_slice() {
            if let Some(list) = self.lists.get(&j) {
                let head = &list.keys[..list.keys.len().min(SCORED_NEIGHBOURS)];
                heads[found] = (w / list.count.max(1.0).sqrt(), head, Some(list));
                found += 1;
            }
            w *= self.recency;
        }
        votes(&heads[..found], keys, out);
        for (&key, out) in keys.iter().zip(out.iter_mut()) {
            let sum = *out;
            // The item's own list only when some recent item votes for it (a sampled
            // negative seldom has a vote, and its list is a cache miss); `sum ≥ 0`, so a zero
            // sum scores 0 either way.
            *out = if sum == 0.0 {
                0.0
            } else {
                self.lists
                    .get(&key)
                    .map_or(0.0, |own| sum / own.count.max(1.0).sqrt())
            };
        }
    }

    /// Prepares the scores of every neighbour of `recent` for [`Self::prepared_score`].
    pub fn prepare(&mut self, recent: &RecentItems) {
        self.prepared.clear();
        let mut w = 1.0;
        for &j in recent.as_slice() {
            if let Some(list) = self.lists.get(&j) {
                let wj = w / list.count.max(1.0).sqrt();
                for (at, &k) in list.keys.iter().enumerate().take(SCORED_NEIGHBOURS) {
                    let c = list.weight(at);
                    if c > 0.0 {
                        *self.prepared.entry(k).or_insert(0.0) += wj * c;
                    }
                }
            }
            w *= self.recency;
        }
    }

    /// `co(u, key)` for the user of the last [`Self::prepare`].
    #[inline]
    pub fn prepared_score(&self, key: u64) -> f32 {
        match self.prepared.get(&key) {
            Some(&s) => {
                s / self
                    .lists
                    .get(&key)
                    .map_or(1.0, |l| l.count.max(1.0).sqrt())
            }
            None => 0.0,
        }
    }

    /// Forgets `key` as an item (its list); entries naming it in other lists age out.
    pub fn remove(&mut self, key: u64) {
        self.lists.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_items_keep_the_latest_distinct_first() {
        let mut r = RecentItems::default();
        for k in 1..=10 {
            r.push(k);
        }
        assert_eq!(r.as_slice(), &[10, 9, 8, 7, 6, 5, 4, 3]);
        r.push(5);
        assert_eq!(r.as_slice(), &[5, 10, 9, 8, 7, 6, 4, 3]);
    }

    #[test]
    fn items_touched_together_score_and_prepared_matches_direct() {
        let mut co = CoOccurrence::new(4, 0.5);
        // Three users touch tent then stove; one touches tent then novel.
        for pair in [[1, 2], [1, 2], [1, 2], [1, 3]] {
            let mut r = RecentItems::default();
            for k in pair {
                co.record(k, &r);
                r.push(k);
            }
        }
        let mut user = RecentItems::default();
        user.push(1);
        let (stove, novel) = (co.score(2, &user), co.score(3, &user));
        assert!(stove > novel && novel > 0.0, "{stove} {novel}");
        co.prepare(&user);
        assert!((co.prepared_score(2) - stove).abs() < 1e-6);
        assert!((co.prepared_score(3) - novel).abs() < 1e-6);
        assert_eq!(co.prepared_score(99), 0.0);
    }

    #[test]
    fn a_full_list_keeps_its_heavy_neighbours() {
        let mut co = CoOccurrence::new(2, 1.0);
        let mut r = RecentItems::default();
        r.push(1);
        // Item 2 co-occurs with item 1 20 times out of 30 (more than 30 / capacity), ten others
        // once each: Space-Saving keeps 2, and its lower bound is exact.
        for _ in 0..20 {
            co.bump(1, 2);
        }
        for k in 3..13 {
            co.record(k, &r);
        }
        let list = &co.lists[&1];
        assert_eq!(list.keys.len(), 2);
        let at = list.keys.iter().position(|&k| k == 2).expect("2 kept");
        assert_eq!(list.weight(at), 20.0);
        // The churning slot's lower bound stays at one real co-occurrence.
        assert_eq!(list.weight(1 - at), 1.0);
    }
}
