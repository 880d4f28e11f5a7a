//! `TriggerMarks`: what one user's actor remembers about triggers, so that each fires once
//! per crossing of its condition and not again within its cooldown.
//!
//! A mark is kept only while it says something: while the trigger's condition holds for the
//! user, or while the cooldown of its last firing runs. A user no trigger concerns keeps an
//! empty list (no allocation). **Times are event times**, passed in; nothing here reads the
//! clock.

/// One trigger's mark for one user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Mark {
    /// The trigger's key (the stable hash of its name).
    key: u64,
    /// When it last fired for this user (Unix ms; 0: not within memory).
    last_fired_ms: u64,
    /// Whether its condition held at the user's last event.
    holds: bool,
}

/// A user's trigger marks (issue 14, item 3).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TriggerMarks(Vec<Mark>);

impl TriggerMarks {
    /// Records whether trigger `key`'s condition holds at `now_ms`; true when it fires now:
    /// the condition went from false (or unknown) to true, and `cooldown_ms` have passed
    /// since its last firing (a firing exactly `cooldown_ms` later is allowed). A crossing
    /// inside the cooldown is swallowed: the trigger waits for the next one.
    pub fn step(&mut self, key: u64, holds: bool, now_ms: u64, cooldown_ms: u64) -> bool {
        let found = self.0.iter().position(|m| m.key == key);
        let mut mark = found.map_or(
            Mark {
                key,
                last_fired_ms: 0,
                holds: false,
            },
            |i| self.0[i],
        );
        let cooled = |m: &Mark| {
            m.last_fired_ms == 0 || now_ms >= m.last_fired_ms.saturating_add(cooldown_ms)
        };
        let fires = holds && !mark.holds && cooled(&mark);
        if fires {
            mark.last_fired_ms = now_ms;
        }
        mark.holds = holds;
        let keep = holds || !cooled(&mark);
        match (found, keep) {
            (Some(i), true) => self.0[i] = mark,
            (Some(i), false) => {
                self.0.swap_remove(i);
            }
            (None, true) => self.0.push(mark),
            (None, false) => {}
        }
        if self.0.is_empty() && self.0.capacity() > 0 {
            self.0 = Vec::new();
        }
        fires
    }

    /// Forgets the marks of triggers no longer in the set.
    pub fn retain_known(&mut self, known: impl Fn(u64) -> bool) {
        if !self.0.is_empty() {
            self.0.retain(|m| known(m.key));
        }
    }

    /// Whether no trigger concerns this user.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Heap bytes (for the memory report).
    pub fn heap_bytes(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<Mark>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn fires_once_per_crossing() {
        let mut m = TriggerMarks::default();
        let fired: Vec<bool> = [false, true, true, false, true, true]
            .into_iter()
            .enumerate()
            .map(|(i, holds)| m.step(1, holds, T0 + i as u64 * 1000, 0))
            .collect();
        assert_eq!(fired, [false, true, false, false, true, false]);
    }

    #[test]
    fn the_first_true_counts_and_the_cooldown_ends_at_its_boundary() {
        let mut m = TriggerMarks::default();
        assert!(m.step(1, true, T0, 60_000));
        assert!(!m.step(1, false, T0 + 1, 60_000));
        // A crossing inside the cooldown is swallowed, and stays swallowed while it holds.
        assert!(!m.step(1, true, T0 + 59_999, 60_000));
        assert!(!m.step(1, true, T0 + 60_000, 60_000));
        assert!(!m.step(1, false, T0 + 60_001, 60_000));
        // Exactly the cooldown after the last firing: allowed.
        let mut m = TriggerMarks::default();
        assert!(m.step(1, true, T0, 60_000));
        assert!(!m.step(1, false, T0 + 1, 60_000));
        assert!(m.step(1, true, T0 + 60_000, 60_000));
    }

    #[test]
    fn marks_are_kept_only_while_they_matter() {
        let mut m = TriggerMarks::default();
        assert!(m.step(1, true, T0, 1000));
        assert!(!m.is_empty());
        m.step(1, false, T0 + 1000, 1000);
        assert!(m.is_empty());
        assert_eq!(m.heap_bytes(), 0);
        m.step(2, true, T0, 0);
        m.retain_known(|k| k == 1);
        assert!(m.is_empty());
    }
}
