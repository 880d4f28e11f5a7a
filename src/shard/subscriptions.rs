//! A shard's subscriptions: which sinks want a user's updates, and what each re-ranks when it
//! opens and after the user's events (the candidates and `n` of the user's latest decision).
//!
//! It owns only the subscriptions; the shard hands it the learner and the user to rank with.

use std::sync::Arc;

use crate::actor::UserActor;
use crate::api::UpdateSink;
use crate::model::global::KeyMap;
use crate::model::{policy, ItemFeatures, SparseVec};
use crate::shard::learner::Learner;
use crate::shard::msg::ValidCandidate;

/// A candidate a subscription re-ranks: its key, id and inline features.
pub type SubscribedCandidate = (u64, String, Option<Arc<ItemFeatures>>);

struct Subscription {
    id: u64,
    sink: Arc<dyn UpdateSink>,
    /// The last decision's candidates and its `n`, to re-rank after each event.
    candidates: Vec<SubscribedCandidate>,
    n: usize,
}

impl Subscription {
    /// This subscription's top items, with the learner's query already prepared for the user.
    /// With `admit` false, no candidate is admitted to the item table (a memory-only user's
    /// update, which must leave shared state as it found it).
    fn rank(&self, learner: &mut Learner, logits: &mut Vec<f32>, admit: bool) -> Due {
        let candidates = self.candidates.iter().map(|(k, _, f)| (*k, f.as_ref()));
        match admit {
            true => learner.logits(candidates, logits),
            false => learner.logits_known(candidates, logits),
        }
        let top = policy::top_n(logits, self.n, &mut Vec::new())
            .into_iter()
            .map(|i| {
                (
                    self.candidates[i].1.clone(),
                    Learner::probability(logits[i]),
                )
            })
            .collect();
        (self.sink.clone(), top)
    }
}

/// Subscriptions by user key.
#[derive(Default)]
pub struct Subscriptions {
    by_user: KeyMap<Vec<Subscription>>,
}

/// One update to deliver: the sink and the user's new top items (id, probability).
pub type Due = (Arc<dyn UpdateSink>, Vec<(String, f32)>);

impl Subscriptions {
    /// Subscribes `sink` (as `id`) to the user, ranking `candidates` until their next decision.
    pub fn add(
        &mut self,
        user_key: u64,
        id: u64,
        sink: Arc<dyn UpdateSink>,
        (candidates, n): (Vec<SubscribedCandidate>, usize),
    ) {
        self.by_user
            .entry(user_key)
            .or_default()
            .push(Subscription {
                id,
                sink,
                candidates,
                n,
            });
    }

    /// Ends subscription `id` of the user.
    pub fn remove(&mut self, user_key: u64, id: u64) {
        if let Some(subs) = self.by_user.get_mut(&user_key) {
            subs.retain(|s| s.id != id);
            if subs.is_empty() {
                self.by_user.remove(&user_key);
            }
        }
    }

    /// Ends every subscription of the user.
    pub fn drop_user(&mut self, user_key: u64) {
        self.by_user.remove(&user_key);
    }

    /// Whether anyone subscribes to the user.
    pub fn watched(&self, user_key: u64) -> bool {
        self.by_user.contains_key(&user_key)
    }

    /// The user decided: their subscriptions re-rank this decision's candidates from now on.
    pub fn on_decision(&mut self, user_key: u64, candidates: &[ValidCandidate], n: usize) {
        if let Some(subs) = self.by_user.get_mut(&user_key) {
            for s in subs {
                s.candidates = candidates
                    .iter()
                    .map(|c| (c.key, c.id.clone(), c.inline.clone()))
                    .collect();
                s.n = n;
            }
        }
    }

    /// Ranks each subscription's candidates for the user as they are now, at `ts_ms`.
    pub fn rank(&self, learner: &mut Learner, user: &UserActor, ts_ms: u64) -> Vec<Due> {
        let Some(subs) = self.by_user.get(&user.id.key()) else {
            return Vec::new();
        };
        let context = learner.full_context(&SparseVec::default(), user);
        learner.prepare_query(user, &context, ts_ms);
        let mut logits = Vec::new();
        subs.iter()
            .map(|s| s.rank(learner, &mut logits, true))
            .collect()
    }

    /// `rank`, admitting no candidate to the item table.
    pub fn rank_known(&self, learner: &mut Learner, user: &UserActor, ts_ms: u64) -> Vec<Due> {
        let Some(subs) = self.by_user.get(&user.id.key()) else {
            return Vec::new();
        };
        let context = learner.full_context(&SparseVec::default(), user);
        learner.prepare_query(user, &context, ts_ms);
        let mut logits = Vec::new();
        subs.iter()
            .map(|s| s.rank(learner, &mut logits, false))
            .collect()
    }

    /// Ranks subscription `id`'s candidates alone (its first update), or `None` if the user
    /// has no such subscription.
    pub fn rank_one(
        &self,
        learner: &mut Learner,
        user: &UserActor,
        ts_ms: u64,
        id: u64,
    ) -> Option<Due> {
        let subs = self.by_user.get(&user.id.key())?;
        let s = subs.iter().find(|s| s.id == id)?;
        let context = learner.full_context(&SparseVec::default(), user);
        learner.prepare_query(user, &context, ts_ms);
        Some(s.rank(learner, &mut Vec::new(), true))
    }
}
