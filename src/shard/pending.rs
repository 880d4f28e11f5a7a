//! Open decisions of one shard: what was placed, with which propensities, in which context,
//! and what each placement has earned so far, until the attribution window closes.
//!
//! Bounded twice: per user (`max_open_per_user`, the oldest closes early) and per shard
//! (`max_open_per_shard`, likewise). Expiry is a time-ordered queue checked on each tick.
//!
//! Checkpoints store open decisions one row each, incrementally: a checkpoint takes those
//! opened or changed since the last one (`take_delta`, shared `Arc`s, so taking them costs
//! no copying and a later change copies on write) and the ids of those closed. Encoding them
//! happens on the checkpointer's thread, never on the shard's. The shard's own encoded state
//! keeps only the numbering and the queue of decisions not yet labelled ignored.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::experiment::{ArmTag, Earned};
use crate::ids::{DecisionId, ShardId};
use crate::model::global::KeyMap;
use crate::model::{ItemFeatures, SparseVec};

/// One placement of an open decision.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Placed {
    /// The item's key.
    pub key: u64,
    /// The item's id.
    pub id: String,
    /// Features the decision was given inline, if any.
    pub inline: Option<Arc<ItemFeatures>>,
    /// The placement's propensity.
    pub propensity: f32,
    /// The composite reward earned so far; `None` while no outcome arrived.
    pub reward: Option<f32>,
    /// Whether it already trained as ignored (no outcome by `ignored_after_s`).
    pub trained_ignored: bool,
    /// An explicit `reward` was applied; a second one is refused (`AlreadyRewarded`).
    pub explicitly_rewarded: bool,
}

/// An open decision.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Open {
    /// The user's key.
    pub user_key: u64,
    /// When it was made (Unix ms).
    pub created_ms: u64,
    /// When its window closes (Unix ms).
    pub expires_ms: u64,
    /// When its placements without an outcome count as ignored (Unix ms).
    pub ignored_at_ms: u64,
    /// The full (scaled) context the decision was scored in.
    pub context: SparseVec,
    /// Placements, best slot first.
    pub placements: Vec<Placed>,
    /// The experiment arm the decision was made under, and what it earned so far.
    pub arm: Option<(ArmTag, Earned)>,
}

/// Why a decision could not be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// This shard issued it in this run, and it is closed.
    Closed,
    /// This shard never issued it.
    NeverIssued,
}

/// The open decisions of one shard. The shard's checkpointed state holds the numbering and
/// the ignored-label queue; the decisions themselves are stored a row each (`take_delta`,
/// `restore`). The fields marked `skip` belong to this run (`adopt`).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PendingDecisions {
    #[serde(skip, default = "unset_shard")]
    shard: ShardId,
    /// The first number this shard issued in the runs its state comes from: an id from
    /// there up to `next_sequence` that is not open was closed (not never issued).
    first_sequence: u64,
    next_sequence: u64,
    #[serde(skip)]
    open: KeyMap<Arc<Open>>,
    /// `(expires_ms, id)` in the order decisions were opened.
    #[serde(skip)]
    by_expiry: VecDeque<(u64, u64)>,
    /// `(ignored_at_ms, id)` in the order decisions were opened.
    by_ignored: VecDeque<(u64, u64)>,
    #[serde(skip)]
    cap: usize,
    #[serde(skip)]
    changes: Changes,
}

/// What changed among the open decisions since the last checkpoint began.
#[derive(Default)]
struct Changes {
    /// Opened or changed since (still open).
    changed: KeyMap<()>,
    /// Closed since, and possibly stored by an earlier checkpoint.
    closed: Vec<u64>,
    /// Ids below this were open before the last checkpoint began, so a checkpoint stored
    /// them (or is storing them); closing one must delete its row.
    stored_below: u64,
}

/// The open decisions' part of a checkpoint: the rows to write and the rows to delete.
pub struct DecisionDelta {
    /// Decisions opened or changed since the last checkpoint, as they are at this one.
    pub upserts: Vec<(u64, Arc<Open>)>,
    /// Decisions closed since, by id.
    pub deletes: Vec<u64>,
}

impl DecisionDelta {
    /// The ids it covers, to hand back with `PendingDecisions::requeue` if it fails.
    pub fn ids(&self) -> (Vec<u64>, Vec<u64>) {
        let upserts = self.upserts.iter().map(|(id, _)| *id).collect();
        (upserts, self.deletes.clone())
    }
}

/// The placeholder a decoded checkpoint carries until `adopt` names the shard.
fn unset_shard() -> ShardId {
    ShardId(u16::MAX)
}

impl PendingDecisions {
    /// Takes a checkpoint's numbering and ignored-label queue (the decisions come with
    /// `restore`), keeping this run's shard and cap; ids from the earliest run stay known.
    pub fn adopt(&mut self, saved: PendingDecisions) {
        *self = PendingDecisions {
            shard: self.shard,
            first_sequence: self.first_sequence.min(saved.first_sequence),
            cap: self.cap,
            open: std::mem::take(&mut self.open),
            by_expiry: std::mem::take(&mut self.by_expiry),
            changes: std::mem::take(&mut self.changes),
            ..saved
        };
    }

    /// Takes the decisions a checkpoint stored (rows of `take_delta`, any order), rebuilding
    /// the expiry queue in the order they were opened. Call after `adopt`.
    pub fn restore(&mut self, rows: impl IntoIterator<Item = (u64, Open)>) {
        let mut rows: Vec<(u64, Open)> = rows.into_iter().collect();
        rows.sort_unstable_by_key(|(id, _)| *id);
        self.by_expiry = rows.iter().map(|(id, o)| (o.expires_ms, *id)).collect();
        self.open = rows.into_iter().map(|(id, o)| (id, Arc::new(o))).collect();
        self.changes = Changes {
            stored_below: self.next_id().0,
            ..Changes::default()
        };
    }

    /// Takes what changed since the last checkpoint began, for the one beginning now.
    pub fn take_delta(&mut self) -> DecisionDelta {
        let changes = std::mem::take(&mut self.changes);
        self.changes.stored_below = self.next_id().0;
        let upserts = changes
            .changed
            .into_keys()
            .filter_map(|id| self.open.get(&id).map(|o| (id, o.clone())))
            .collect();
        DecisionDelta {
            upserts,
            deletes: changes.closed,
        }
    }

    /// Hands back what a failed checkpoint took (`DecisionDelta::ids`): the next one stores it.
    pub fn requeue(&mut self, (upserts, deletes): (Vec<u64>, Vec<u64>)) {
        for id in upserts {
            if self.open.contains_key(&id) {
                self.changes.changed.insert(id, ());
            } else {
                self.changes.closed.push(id);
            }
        }
        self.changes.closed.extend(deletes);
    }

    fn changed(&mut self, id: u64) {
        self.changes.changed.insert(id, ());
    }

    fn closed(&mut self, id: u64) {
        self.changes.changed.remove(&id);
        if id < self.changes.stored_below {
            self.changes.closed.push(id);
        }
    }

    /// An empty set for `shard`, numbering decisions from `first_sequence`.
    pub fn new(shard: ShardId, first_sequence: u64, cap: usize) -> Self {
        PendingDecisions {
            shard,
            first_sequence,
            next_sequence: first_sequence,
            open: KeyMap::default(),
            by_expiry: VecDeque::new(),
            by_ignored: VecDeque::new(),
            cap,
            changes: Changes::default(),
        }
    }

    /// Open decisions.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The next decision id (consumed by `insert`).
    pub fn next_id(&self) -> DecisionId {
        DecisionId::new(self.shard, self.next_sequence)
    }

    /// Continues numbering from `next` when it is later than the current next number (a
    /// replayed run's); returns the next number.
    pub fn resume(&mut self, next: u64) -> u64 {
        self.first_sequence = self.first_sequence.min(next);
        self.next_sequence = self.next_sequence.max(next);
        self.next_sequence
    }

    /// Numbers the next decision `next` (a replayed run's start), whatever came before.
    pub fn restart_at(&mut self, next: u64) {
        self.first_sequence = self.first_sequence.min(next);
        self.next_sequence = next;
    }

    /// Opens a decision under `next_id()`. Returns the id and, when the shard cap was reached,
    /// the id of the oldest decision, which the caller must close.
    pub fn insert(&mut self, open: Open) -> (DecisionId, Option<u64>) {
        let id = self.next_id();
        self.next_sequence += 1;
        self.by_expiry.push_back((open.expires_ms, id.0));
        if open.ignored_at_ms < open.expires_ms {
            self.by_ignored.push_back((open.ignored_at_ms, id.0));
        }
        self.open.insert(id.0, Arc::new(open));
        self.changed(id.0);
        let overflow = if self.open.len() > self.cap {
            self.oldest_open()
        } else {
            None
        };
        (id, overflow)
    }

    /// Opens `open` for a user whose open ids are `user_open` (oldest first) and records its
    /// id there; returns the id and the decisions that must now close early: the user's
    /// oldest past `max_per_user`, and the shard's oldest past its cap.
    pub fn open_for(
        &mut self,
        user_open: &mut Vec<u64>,
        open: Open,
        max_per_user: usize,
    ) -> (DecisionId, [Option<u64>; 2]) {
        let (id, overflow) = self.insert(open);
        user_open.push(id.0);
        let early = (user_open.len() > max_per_user).then(|| user_open[0]);
        (id, [early, overflow])
    }

    fn oldest_open(&mut self) -> Option<u64> {
        while let Some(&(_, id)) = self.by_expiry.front() {
            if self.open.contains_key(&id) {
                return Some(id);
            }
            self.by_expiry.pop_front();
        }
        None
    }

    /// The decision, or why it is not open.
    pub fn get_mut(&mut self, id: DecisionId) -> Result<&mut Open, Missing> {
        let seq = id.0 & 0xffff_ffff_ffff;
        let issued =
            id.shard() == self.shard && seq >= self.first_sequence && seq < self.next_sequence;
        if self.open.contains_key(&id.0) {
            return Ok(self.get_open_mut(id.0).expect("just found"));
        }
        Err(if issued {
            Missing::Closed
        } else {
            Missing::NeverIssued
        })
    }

    /// The decision, if open, for changing (the next checkpoint stores it).
    pub fn get_open_mut(&mut self, id: u64) -> Option<&mut Open> {
        if !self.open.contains_key(&id) {
            return None;
        }
        self.changed(id);
        self.open.get_mut(&id).map(Arc::make_mut)
    }

    /// The decision, if open.
    pub fn get(&self, id: u64) -> Option<&Open> {
        self.open.get(&id).map(|o| &**o)
    }

    /// Removes a decision.
    pub fn remove(&mut self, id: u64) -> Option<Open> {
        let open = self.open.remove(&id)?;
        self.closed(id);
        Some(Arc::unwrap_or_clone(open))
    }

    /// Removes every open decision of the user with this key (an erasure of a user who is
    /// not in memory: its own list of open decisions is not at hand). O(open decisions).
    pub fn remove_user(&mut self, user_key: u64) {
        let ids: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, o)| o.user_key == user_key)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove(id);
        }
    }

    /// The next open decision whose placements count as ignored by `now_ms`.
    pub fn pop_ignored_due(&mut self, now_ms: u64) -> Option<u64> {
        while let Some(&(due, id)) = self.by_ignored.front() {
            if due > now_ms {
                return None;
            }
            self.by_ignored.pop_front();
            if self.open.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Removes and returns the next decision whose window closed at or before `now_ms`.
    pub fn pop_expired(&mut self, now_ms: u64) -> Option<(u64, Open)> {
        while let Some(&(expires, id)) = self.by_expiry.front() {
            if expires > now_ms {
                return None;
            }
            self.by_expiry.pop_front();
            if let Some(open) = self.remove(id) {
                return Some((id, open));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(user_key: u64, expires_ms: u64) -> Open {
        Open {
            user_key,
            created_ms: 0,
            expires_ms,
            ignored_at_ms: expires_ms,
            context: SparseVec::default(),
            placements: vec![Placed {
                key: 1,
                id: "i1".into(),
                inline: None,
                propensity: 1.0,
                reward: None,
                trained_ignored: false,
                explicitly_rewarded: false,
            }],
            arm: None,
        }
    }

    fn ids(delta: &DecisionDelta) -> Vec<u64> {
        let mut ids: Vec<u64> = delta.upserts.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn a_checkpoint_takes_what_changed_since_the_last_and_deletes_only_what_it_stored() {
        let mut p = PendingDecisions::new(ShardId(1), 10, 100);
        let (a, _) = p.insert(open(7, 1_000));
        let (b, _) = p.insert(open(7, 2_000));
        let first = p.take_delta();
        assert_eq!(ids(&first), vec![a.0, b.0]);
        assert!(first.deletes.is_empty());

        // Changed after the checkpoint took it: the checkpoint keeps the state it took.
        p.get_open_mut(a.0).unwrap().placements[0].reward = Some(1.0);
        let taken = &first.upserts.iter().find(|(id, _)| *id == a.0).unwrap().1;
        assert_eq!(taken.placements[0].reward, None, "copy on write");

        // b was stored: closing it deletes its row. c never was: closing it deletes nothing.
        let (c, _) = p.insert(open(8, 3_000));
        p.remove(b.0).unwrap();
        p.remove(c.0).unwrap();
        let second = p.take_delta();
        assert_eq!(ids(&second), vec![a.0], "only the changed one");
        assert_eq!(second.deletes, vec![b.0]);
        assert_eq!(second.upserts[0].1.placements[0].reward, Some(1.0));

        // Nothing changed since: an empty delta.
        let third = p.take_delta();
        assert!(third.upserts.is_empty() && third.deletes.is_empty());
    }

    #[test]
    fn a_failed_checkpoint_hands_its_decisions_back_to_the_next() {
        let mut p = PendingDecisions::new(ShardId(0), 0, 100);
        let (a, _) = p.insert(open(1, 1_000));
        let (b, _) = p.insert(open(1, 1_000));
        let stored = p.take_delta();
        p.remove(a.0);
        let failed = p.take_delta();
        assert_eq!(failed.deletes, vec![a.0]);
        p.requeue(failed.ids());
        // b closes after the failure; the retry deletes both rows and writes nothing.
        p.remove(b.0);
        let retry = p.take_delta();
        let mut deletes = retry.deletes.clone();
        deletes.sort_unstable();
        assert_eq!(deletes, vec![a.0, b.0]);
        assert!(retry.upserts.is_empty());
        drop(stored);
    }

    #[test]
    fn restored_decisions_expire_in_the_order_they_were_opened() {
        let mut p = PendingDecisions::new(ShardId(2), 0, 100);
        let (a, _) = p.insert(open(1, 5_000));
        let (b, _) = p.insert(open(2, 1_000));
        let (c, _) = p.insert(open(3, 3_000));
        let rows: Vec<(u64, Open)> = p
            .take_delta()
            .upserts
            .into_iter()
            .map(|(id, o)| (id, (*o).clone()))
            .collect();
        // As recovery does: the numbering from the shard's state, then the rows.
        let mut q = PendingDecisions::new(ShardId(2), 0, 100);
        q.resume(3);
        q.restore(rows);
        assert_eq!(q.len(), 3);
        // The queue is in opening order: b (due first) waits behind a, as it did before.
        assert!(q.pop_expired(4_000).is_none());
        let order: Vec<u64> =
            std::iter::from_fn(|| q.pop_expired(10_000).map(|(id, _)| id)).collect();
        assert_eq!(order, vec![a.0, b.0, c.0]);
        // Restored decisions count as stored: closing them deletes their rows.
        assert_eq!(q.take_delta().deletes.len(), 3);
    }
}
