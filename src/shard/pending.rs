//! Open decisions of one shard: what was placed, with which propensities, in which context,
//! and what each placement has earned so far, until the attribution window closes.
//!
//! Bounded twice: per user (`max_open_per_user`, the oldest closes early) and per shard
//! (`max_open_per_shard`, likewise). Expiry is a time-ordered queue checked on each tick.

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

/// The open decisions of one shard. A checkpoint stores the decisions and the numbering;
/// the fields marked `skip` belong to this run (`adopt`).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PendingDecisions {
    #[serde(skip, default = "unset_shard")]
    shard: ShardId,
    #[serde(skip)]
    first_sequence: u64,
    next_sequence: u64,
    open: KeyMap<Open>,
    by_expiry: VecDeque<(u64, u64)>,
    /// `(ignored_at_ms, id)` in the order decisions were opened.
    by_ignored: VecDeque<(u64, u64)>,
    #[serde(skip)]
    cap: usize,
}

/// The placeholder a decoded checkpoint carries until `adopt` names the shard.
fn unset_shard() -> ShardId {
    ShardId(u16::MAX)
}

impl PendingDecisions {
    /// Takes a checkpoint's open decisions and numbering, keeping this run's shard, first
    /// sequence and cap.
    pub fn adopt(&mut self, saved: PendingDecisions) {
        *self = PendingDecisions {
            shard: self.shard,
            first_sequence: self.first_sequence,
            cap: self.cap,
            ..saved
        };
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
        self.open.insert(id.0, open);
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
        match self.open.get_mut(&id.0) {
            Some(open) => Ok(open),
            None if issued => Err(Missing::Closed),
            None => Err(Missing::NeverIssued),
        }
    }

    /// The decision, if open, for changing.
    pub fn get_open_mut(&mut self, id: u64) -> Option<&mut Open> {
        self.open.get_mut(&id)
    }

    /// The decision, if open.
    pub fn get(&self, id: u64) -> Option<&Open> {
        self.open.get(&id)
    }

    /// Removes a decision.
    pub fn remove(&mut self, id: u64) -> Option<Open> {
        self.open.remove(&id)
    }

    /// Removes every open decision of the user with this key (an erasure of a user who is
    /// not in memory: its own list of open decisions is not at hand). O(open decisions).
    pub fn remove_user(&mut self, user_key: u64) {
        self.open.retain(|_, o| o.user_key != user_key);
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
            if let Some(open) = self.open.remove(&id) {
                return Some((id, open));
            }
        }
        None
    }
}
