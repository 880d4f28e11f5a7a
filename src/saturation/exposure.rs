//! `Exposures`: one user's memory of what was shown to them and when, for frequency caps and
//! fatigue. Bounded: at most `max_tracked` items and attribute values, the least recently
//! shown forgotten first; per entry, the times of the latest impressions (as many as the
//! largest cap counts) and the impressions since the user last engaged.

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

/// What one user was shown (items by key, attribute values by `value_key`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Exposures {
    entries: HashMap<u64, Entry>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Entry {
    /// Times of the latest impressions (Unix ms), oldest first, at most the cap's `max`.
    shown_ms: Vec<u64>,
    /// Impressions since the user last engaged with the item (items only).
    unengaged: u32,
    /// The latest impression's time.
    last_ms: u64,
}

impl Exposures {
    /// Records an impression of `key` at `ts_ms`, keeping the latest `keep` times; `fatigue`
    /// counts it as one more impression without engagement. Forgets the least recently shown
    /// quarter when more than `max_tracked` keys are held.
    pub fn shown(&mut self, key: u64, ts_ms: u64, keep: usize, fatigue: bool, max_tracked: usize) {
        let e = self.entries.entry(key).or_default();
        if keep > 0 {
            // Sorted by time: an out-of-order impression goes where it belongs.
            let at = e.shown_ms.partition_point(|&t| t <= ts_ms);
            e.shown_ms.insert(at, ts_ms);
            if e.shown_ms.len() > keep {
                e.shown_ms.drain(..e.shown_ms.len() - keep);
            }
        }
        if fatigue {
            e.unengaged = e.unengaged.saturating_add(1);
        }
        e.last_ms = e.last_ms.max(ts_ms);
        if self.entries.len() > max_tracked {
            self.forget_oldest(max_tracked);
        }
    }

    /// The user engaged with item `key`: its fatigue starts over.
    pub fn engaged(&mut self, key: u64) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.unengaged = 0;
        }
    }

    /// Impressions of `key` inside the window of `window_ms` that ends at `now_ms` (one
    /// exactly `window_ms` ago has left it).
    pub fn in_window(&self, key: u64, now_ms: u64, window_ms: u64) -> u32 {
        self.entries.get(&key).map_or(0, |e| {
            let gone = e
                .shown_ms
                .partition_point(|&t| t.saturating_add(window_ms) <= now_ms);
            (e.shown_ms.len() - gone) as u32
        })
    }

    /// Impressions of item `key` since the user last engaged with it.
    pub fn unengaged(&self, key: u64) -> u32 {
        self.entries.get(&key).map_or(0, |e| e.unengaged)
    }

    /// Items and values held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes (for the memory report).
    pub fn heap_bytes(&self) -> usize {
        let per = std::mem::size_of::<(u64, Entry)>() + 1;
        self.entries.capacity() * per
            + (self.entries.values())
                .map(|e| e.shown_ms.capacity() * 8)
                .sum::<usize>()
    }

    /// Drops the least recently shown keys until a quarter of `max_tracked` is free (one
    /// sort per quarter of the bound, not one scan per impression).
    fn forget_oldest(&mut self, max_tracked: usize) {
        let keep = max_tracked - max_tracked / 4;
        let mut times: Vec<(u64, u64)> =
            self.entries.iter().map(|(k, e)| (e.last_ms, *k)).collect();
        times.sort_unstable();
        for &(_, key) in &times[..times.len() - keep] {
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_inside_the_window_and_keeps_only_what_a_cap_needs() {
        let mut x = Exposures::default();
        for t in [1_000, 5_000, 3_000, 9_000] {
            x.shown(7, t, 3, true, 16);
        }
        // Kept: the latest three, sorted.
        assert_eq!(x.entries[&7].shown_ms, vec![3_000, 5_000, 9_000]);
        // Window of 6 s ending at 9 s: (3 s, 9 s] holds 5 s and 9 s; 3 s is exactly 6 s ago.
        assert_eq!(x.in_window(7, 9_000, 6_000), 2);
        assert_eq!(x.in_window(7, 8_999, 6_000), 3);
        assert_eq!(x.in_window(8, 9_000, 6_000), 0);
        assert_eq!(x.unengaged(7), 4);
        x.engaged(7);
        assert_eq!(x.unengaged(7), 0);
        assert_eq!(
            x.in_window(7, 9_000, 6_000),
            2,
            "engaging keeps the impressions"
        );
    }

    #[test]
    fn forgets_the_least_recently_shown_past_the_bound() {
        let mut x = Exposures::default();
        for k in 0..9u64 {
            x.shown(k, 1_000 * k, 1, false, 8);
        }
        // The ninth key went past 8: the oldest quarter (keys 0..3) went.
        assert_eq!(x.len(), 6);
        assert_eq!(x.in_window(0, 9_000, 100_000), 0);
        assert_eq!(x.in_window(8, 9_000, 100_000), 1);
    }
}
