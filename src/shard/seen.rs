//! Idempotency: the event ids a shard applied recently, so that a retried event (the same
//! `event_id`, or Segment's `messageId`) is acknowledged again but applied once.
//!
//! Ids are kept as 64-bit hashes for `event_id_window_s` of event time, at most
//! `event_id_capacity` per shard (the oldest forgotten first). The set is rebuilt by replaying
//! the write-ahead log, whose event records carry the id, so it holds across restarts.

use std::collections::VecDeque;

use crate::model::global::KeyMap;

/// Recently applied event ids of one shard.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SeenEvents {
    /// id → the time of the event that carried it.
    times: KeyMap<u64>,
    /// Ids in the order they were first seen, with their times, for forgetting.
    order: VecDeque<(u64, u64)>,
    #[serde(skip)]
    window_ms: u64,
    #[serde(skip)]
    capacity: usize,
}

impl SeenEvents {
    /// Takes a checkpoint's remembered ids, keeping this run's window and capacity.
    pub fn adopt(&mut self, saved: SeenEvents) {
        *self = SeenEvents {
            window_ms: self.window_ms,
            capacity: self.capacity,
            ..saved
        };
    }

    /// Remembers ids for `window_s` seconds of event time, at most `capacity` of them.
    pub fn new(window_s: u64, capacity: usize) -> Self {
        SeenEvents {
            times: KeyMap::default(),
            order: VecDeque::new(),
            window_ms: window_s.saturating_mul(1000),
            capacity,
        }
    }

    /// Records `id` seen at `ts_ms`; `false` when it was already seen within the window (a
    /// retry: do not apply it again).
    pub fn first_time(&mut self, id: u64, ts_ms: u64) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if let Some(&seen) = self.times.get(&id) {
            if ts_ms.abs_diff(seen) <= self.window_ms {
                return false;
            }
        }
        self.times.insert(id, ts_ms);
        self.order.push_back((id, ts_ms));
        while self.order.len() > self.capacity {
            self.forget_oldest();
        }
        true
    }

    /// Forgets ids older than the window as of `now_ms` (the shard's event time).
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(&(_, ts)) = self.order.front() {
            if ts.saturating_add(self.window_ms) >= now_ms {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((id, ts)) = self.order.pop_front() {
            // A later sighting re-inserted it: keep that one.
            if self.times.get(&id) == Some(&ts) {
                self.times.remove(&id);
            }
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_refused_and_after_it_accepted() {
        let mut seen = SeenEvents::new(10, 100);
        assert!(seen.first_time(1, 1_000));
        assert!(!seen.first_time(1, 5_000));
        assert!(seen.first_time(2, 5_000));
        seen.expire(12_000);
        assert_eq!(seen.len(), 1, "id 1 (seen at 1 s) left the 10 s window");
        assert!(seen.first_time(1, 12_000));
    }

    #[test]
    fn capacity_forgets_the_oldest_first() {
        let mut seen = SeenEvents::new(3_600, 2);
        assert!(seen.first_time(1, 0));
        assert!(seen.first_time(2, 0));
        assert!(seen.first_time(3, 0));
        assert_eq!(seen.len(), 2);
        assert!(seen.first_time(1, 0), "1 was forgotten for room");
        assert!(!seen.first_time(3, 0));
    }
}
