//! `Learner`: a shard's model side. It owns the shard's replica of the global model, the
//! exploration RNG and scratch buffers, and knows how to score candidates for a user and learn
//! from one labelled example. It never sees messages or replies; `worker` drives it.

use std::sync::Arc;

use crate::actor::UserActor;
use crate::api::ScoreParts;
use crate::config::Config;
use crate::model::adam::AdamParams;
use crate::model::cooccur::{CoOccurrence, RecentItems};
use crate::model::global::GlobalReplica;
use crate::model::items::Row;
use crate::model::math::{dot, sigmoid};
use crate::model::score::{self, LearnParams, StateParams};
use crate::model::{FeatureSpace, ItemFeatures, SparseVec};
use crate::rng::Rng;

/// Most items (catalog plus learned-only) a shard keeps parameters for.
pub const MAX_ITEMS_PER_SHARD: usize = 10_000_000;

/// Most sampled negatives per event (`model.negatives` is validated against it).
pub const MAX_NEGATIVES: usize = 64;

/// `Learner::rows`' mark of a candidate that has no row.
const NO_ROW: Row = Row::MAX;

/// One learning step's item, label and co-occurrence feature.
#[derive(Clone, Copy)]
struct Step<'a> {
    key: u64,
    /// The item's row (valid: nothing is admitted or removed while the steps run).
    row: Row,
    inline: Option<&'a Arc<ItemFeatures>>,
    reward: f32,
    co: f32,
}

/// A user-derived context pair, such as `("_sentiment", "negative")`.
type DerivedPair = (&'static str, &'static str);

/// A shard's model side.
pub struct Learner {
    /// The engine configuration.
    pub cfg: Arc<Config>,
    /// Adam settings derived from `cfg`.
    pub adam: AdamParams,
    /// The feature space.
    pub space: FeatureSpace,
    /// This shard's replica of the global model.
    pub global: GlobalReplica,
    /// The exploration RNG (seeded per shard).
    pub rng: Rng,
    /// How the state enters the score.
    pub state: StateParams,
    /// `q` of the current decision.
    pub query: Vec<f32>,
    /// `[q, 1, β, 0 …]`: the query extended to an item table row, so that one dot product
    /// with a row gives `b_i + β·pop_i + ⟨q, x_i⟩`.
    query_ext: Vec<f32>,
    /// Candidates' rows between the two passes of `logits` (`NO_ROW`: not in the table).
    rows: Vec<Row>,
    /// The popularity clock of the current decision.
    pop_tau: f64,
    /// Scratch for one learning step (`3·d`).
    scratch: Vec<f32>,
    /// One item's `x = φ + e`.
    x: Vec<f32>,
    /// Scratch for a full context, reused across events.
    context: SparseVec,
    /// The user-derived context buckets, precomputed: `((key, value), buckets)`.
    derived: Vec<(DerivedPair, [(u32, f32); 2])>,
    /// Which items the same users touch together (the collaborative signal).
    pub cooccurrence: CoOccurrence,
}

impl Learner {
    /// A learner for `cfg`, seeded with `seed`; `shared` when other shards mix with it (its
    /// co-occurrence counts are then exchanged at each mix).
    pub fn new(cfg: Arc<Config>, seed: u64, shared: bool) -> Self {
        let m = &cfg.model;
        let d = m.dim;
        let space = FeatureSpace {
            dim: d,
            item_embedding_init: m.item_embedding_init,
        };
        let mut derived = Vec::new();
        for (key, values) in [
            ("_sentiment", ["negative", "neutral", "positive"]),
            ("_engagement", ["low", "medium", "high"]),
        ] {
            for v in values {
                derived.push(((key, v), space.buckets(key, v)));
            }
        }
        let mut learner = Learner {
            adam: AdamParams {
                learning_rate: m.learning_rate,
                beta1: m.beta1,
                beta2: m.beta2,
                epsilon: m.epsilon,
                l2: m.l2,
                new_user_boost: m.new_user_boost,
            },
            global: GlobalReplica::new(d, m.global_learning_rate)
                .with_extras(m.kappa_learning_rate, m.popularity_half_life_s)
                .with_cooccurrence_learning_rate(m.cooccurrence_learning_rate),
            rng: Rng::new(seed),
            state: StateParams {
                kappa: m.kappa,
                scale: m.state_scale,
            },
            query: vec![0.0; d],
            query_ext: Vec::new(),
            rows: Vec::new(),
            pop_tau: 0.0,
            scratch: vec![0.0; 3 * d],
            x: vec![0.0; d],
            context: SparseVec::default(),
            space,
            derived,
            cooccurrence: {
                let co = CoOccurrence::new(m.cooccurrence_neighbours, m.cooccurrence_recency);
                if shared {
                    co.share()
                } else {
                    co
                }
            },
            cfg,
        };
        learner.query_ext = vec![0.0; learner.global.items.stride()];
        learner
    }

    /// The decision or training context: the request's pairs plus the user's derived pairs,
    /// scaled so that the context has unit length when no buckets collide.
    pub fn full_context(&self, raw: &SparseVec, user: &UserActor) -> SparseVec {
        let mut out = SparseVec {
            entries: Vec::with_capacity(raw.entries.len() + 4),
        };
        self.full_context_into(raw, user, &mut out);
        out
    }

    /// `full_context`, into a reused vector.
    fn full_context_into(&self, raw: &SparseVec, user: &UserActor, out: &mut SparseVec) {
        let entries = &mut out.entries;
        entries.clear();
        entries.extend_from_slice(&raw.entries);
        for pair in user.signals.context_buckets(&self.cfg.hygiene) {
            if let Some((_, buckets)) = self.derived.iter().find(|(p, _)| *p == pair) {
                entries.extend_from_slice(buckets);
            }
        }
        // Each pair contributes two entries of weight 1/√2.
        let s = 1.0 / (entries.len() as f32 / 2.0).sqrt();
        for e in entries.iter_mut() {
            e.1 *= s;
        }
    }

    /// Makes sure the replica has parameters for `key`; `false` when the shard is full.
    pub fn ensure_item(&mut self, key: u64, inline: Option<&Arc<ItemFeatures>>) -> bool {
        self.admit(key, inline).is_some()
    }

    /// `ensure_item`, returning the item's row (`None` when the shard is full).
    fn admit(&mut self, key: u64, inline: Option<&Arc<ItemFeatures>>) -> Option<Row> {
        if let Some(row) = self.global.items.row(key) {
            return Some(row);
        }
        if self.global.items.len() >= MAX_ITEMS_PER_SHARD {
            return None;
        }
        Some(match inline {
            Some(f) => self.global.items.insert(key, None, &f.e0),
            None => {
                let e0 = self.space.initial_embedding(key);
                self.global.items.insert(key, None, &e0)
            }
        })
    }

    /// `x_i = φ_i + e_i` of an item that `ensure_item` has admitted.
    pub fn item_vector(&mut self, key: u64, inline: Option<&Arc<ItemFeatures>>) -> &[f32] {
        let items = &self.global.items;
        let row = items.row(key).expect("ensure_item admitted the item");
        self.x.copy_from_slice(items.x(row));
        if let (None, Some(f)) = (items.features(row), inline) {
            for (x, p) in self.x.iter_mut().zip(&f.phi[..]) {
                *x += p;
            }
        }
        &self.x
    }

    /// γ, the weight of the co-occurrence feature.
    #[inline]
    fn co_weight(&self) -> f32 {
        self.cfg.model.cooccurrence_weight + self.global.co_w
    }

    /// Sets `self.query` to `q = g + w_u + G·c + κ∘ŝ_u`, the popularity clock to `ts_ms`, and
    /// the co-occurrence scores of the user's recent items' neighbours.
    pub fn prepare_query(&mut self, user: &UserActor, context: &SparseVec, ts_ms: u64) {
        if self.cooccurrence.is_on() {
            self.cooccurrence.prepare(&user.recent);
        }
        score::query(
            &self.global,
            &user.view(),
            &self.state,
            context,
            &mut self.query,
        );
        let d = self.query.len();
        self.query_ext[..d].copy_from_slice(&self.query);
        self.query_ext[d] = 1.0;
        self.query_ext[d + 1] = if self.global.popularity_on() {
            self.global.pop_w
        } else {
            0.0
        };
        self.pop_tau = self.global.popularity_tau(ts_ms);
    }

    /// The row of a candidate, ready for [`Self::logit_row`] under the prepared query: its
    /// popularity feature brought to the prepared clock, and its row's cache lines requested.
    /// An unseen candidate is admitted with its initial embedding, as learning would admit it,
    /// so that its embedding is built once per shard rather than once per decision; `None`
    /// only when the shard holds `MAX_ITEMS_PER_SHARD` items.
    #[inline]
    pub fn resolve(&mut self, key: u64, inline: Option<&Arc<ItemFeatures>>) -> Option<Row> {
        let row = self.admit(key, inline)?;
        if self.global.popularity_on() {
            self.global.item_popularity(row, self.pop_tau);
        }
        self.global.items.prefetch(row);
        Some(row)
    }

    /// The popularity feature `log1p(pop_i(t))` of each key at `ts_ms` (0 for an item never
    /// counted, or with popularity off), less a hair per position so that equals keep the
    /// caller's order: the `popularity` arm's ranking.
    pub fn popularity_logits(
        &mut self,
        keys: impl Iterator<Item = u64>,
        ts_ms: u64,
        out: &mut Vec<f32>,
    ) {
        let tau = self.global.popularity_tau(ts_ms);
        let on = self.global.popularity_on();
        out.clear();
        for (i, key) in keys.enumerate() {
            let f = match self.global.items.row(key) {
                Some(row) if on => self.global.item_popularity(row, tau),
                _ => 0.0,
            };
            out.push(f - i as f32 * 1e-6);
        }
    }

    /// `b_i + β·pop_i + ⟨q, x_i⟩` of a resolved row: one dot product.
    #[inline]
    pub fn logit_row(&self, row: Row) -> f32 {
        dot(&self.query_ext, self.global.items.scoring_row(row))
    }

    /// The logits of `candidates` (key, inline features) under the prepared query, into `out`.
    /// See the passes below: every candidate's memory is requested before any is used.
    pub fn logits<'a, I>(&mut self, candidates: I, out: &mut Vec<f32>)
    where
        I: Iterator<Item = (u64, Option<&'a Arc<ItemFeatures>>)> + Clone,
    {
        // Three passes: start loading every candidate's index slot, then find (or admit)
        // each row and start loading it, then take the dot products, so that the cache
        // misses of a large catalog overlap instead of queueing.
        for (key, _) in candidates.clone() {
            self.global.items.prefetch_key(key);
        }
        let mut rows = std::mem::take(&mut self.rows);
        rows.clear();
        rows.extend(
            candidates
                .clone()
                .map(|(key, inline)| self.resolve(key, inline).unwrap_or(NO_ROW)),
        );
        out.clear();
        out.extend(candidates.zip(&rows).map(|((key, inline), &row)| {
            self.logit_of(key, if row == NO_ROW { None } else { Some(row) }, inline)
        }));
        self.rows = rows;
    }

    /// `logits`, admitting no candidate the table does not hold (a decision that must leave
    /// shared state as it found it: `shard/consent.rs`). Scores are the same either way.
    pub fn logits_known<'a, I>(&mut self, candidates: I, out: &mut Vec<f32>)
    where
        I: Iterator<Item = (u64, Option<&'a Arc<ItemFeatures>>)>,
    {
        out.clear();
        for (key, inline) in candidates {
            let row = self.global.items.row(key);
            if let (Some(row), true) = (row, self.global.popularity_on()) {
                // Refreshes the row's memoized popularity, as `resolve` does.
                self.global.item_popularity(row, self.pop_tau);
            }
            out.push(self.logit_of(key, row, inline));
        }
    }

    /// The logit of one candidate whose row (if any) `resolve` returned.
    #[inline]
    fn logit_of(&self, key: u64, row: Option<Row>, inline: Option<&Arc<ItemFeatures>>) -> f32 {
        let co = if self.cooccurrence.is_on() {
            self.co_weight() * self.cooccurrence.prepared_score(key)
        } else {
            0.0
        };
        co + self.logit_without_co(key, row, inline)
    }

    #[inline]
    fn logit_without_co(
        &self,
        key: u64,
        row: Option<Row>,
        inline: Option<&Arc<ItemFeatures>>,
    ) -> f32 {
        let q = &self.query;
        match row {
            // The row's `x` holds the catalog's `φ + e`; an inline item adds its own `φ`.
            Some(row) => match (self.global.items.features(row), inline) {
                (None, Some(f)) => self.logit_row(row) + dot(q, &f.phi),
                _ => self.logit_row(row),
            },
            None => match inline {
                Some(f) => dot(q, &f.phi) + dot(q, &f.e0),
                None => dot(q, &self.space.initial_embedding(key)),
            },
        }
    }

    /// The score's parts for one candidate, for `explain` (after `prepare_query`).
    pub fn explain(
        &mut self,
        user: &UserActor,
        context: &SparseVec,
        key: u64,
        inline: Option<&Arc<ItemFeatures>>,
    ) -> ScoreParts {
        let (bias, x) = if self.ensure_item(key, inline) {
            let x = self.item_vector(key, inline).to_vec();
            let row = self.global.items.row(key).expect("just admitted");
            let mut bias = self.global.items.bias(row);
            if self.global.popularity_on() {
                bias += self.global.pop_w * self.global.item_popularity(row, self.pop_tau);
            }
            (bias, x)
        } else {
            (0.0, vec![0.0; self.space.dim])
        };
        let mut parts = score::explain(&self.global, &user.view(), &self.state, context, bias, &x);
        parts.cooccurrence = self.co_weight() * self.cooccurrence.score(key, &user.recent);
        parts
    }

    /// Counts an engagement of `user` with item `key` in the co-occurrence component and
    /// makes it the user's newest recent item.
    pub fn record_engagement(&mut self, recent: &mut RecentItems, key: u64) {
        self.cooccurrence.record(key, recent);
        recent.push(key);
    }

    /// Learns from one labelled example at `ts_ms`; returns the prediction before the step, or
    /// `None` when the shard has no room for the item's parameters.
    pub fn learn(
        &mut self,
        user: &mut UserActor,
        key: u64,
        inline: Option<&Arc<ItemFeatures>>,
        context: &SparseVec,
        reward: f32,
        ts_ms: u64,
    ) -> Option<f32> {
        let row = self.admit(key, inline)?;
        let co = if self.cooccurrence.is_on() {
            self.cooccurrence.score(key, &user.recent)
        } else {
            0.0
        };
        let step = Step {
            key,
            row,
            inline,
            reward,
            co,
        };
        Some(self.learn_step(user, &step, context, ts_ms))
    }

    /// Learns from an outcome with no decision behind it: the item `key` with reward `reward`
    /// in the full context built from `raw`, then `negatives` items drawn uniformly from the
    /// shard's table as negatives (reward 0), skipping `key` and the user's recent items.
    /// Returns the negative steps taken, or `None` (and nothing learned) when the shard has no
    /// room for the item. An outcome with no decision behind it says what the user chose,
    /// not what they passed over; uniform negatives supply the contrast, so that biases and
    /// weights learn "this rather than that" instead of "everything is liked".
    ///
    /// The steps run in that order, as separate examples would; what they share is computed
    /// once: the context, and the co-occurrence features (learning does not change the counts
    /// or the user's recent items, and drawing does not depend on learning).
    pub fn learn_outcome(
        &mut self,
        user: &mut UserActor,
        key: u64,
        raw: &SparseVec,
        reward: f32,
        negatives: usize,
        ts_ms: u64,
    ) -> Option<u32> {
        let row = self.admit(key, None)?;
        // `[0]` is the outcome, then the negatives.
        let mut steps = [Step {
            key,
            row,
            inline: None,
            reward,
            co: 0.0,
        }; MAX_NEGATIVES + 1];
        let mut drawn = 1;
        let n = self.global.items.len();
        if n >= 2 {
            for _ in 0..negatives.min(MAX_NEGATIVES) {
                let row = self.rng.below(n) as Row;
                let key = self.global.items.key(row);
                if key != steps[0].key && !user.recent.contains(key) {
                    self.global.items.prefetch_trainable(row);
                    steps[drawn] = Step {
                        key,
                        row,
                        inline: None,
                        reward: 0.0,
                        co: 0.0,
                    };
                    drawn += 1;
                }
            }
        }
        let steps = &mut steps[..drawn];
        if self.cooccurrence.is_on() {
            let mut keys = [0u64; MAX_NEGATIVES + 1];
            let mut co = [0.0f32; MAX_NEGATIVES + 1];
            for (k, step) in keys.iter_mut().zip(steps.iter()) {
                *k = step.key;
            }
            self.cooccurrence
                .score_many(&keys[..drawn], &user.recent, &mut co[..drawn]);
            for (step, &co) in steps.iter_mut().zip(&co) {
                step.co = co;
            }
        }
        let mut context = std::mem::take(&mut self.context);
        self.full_context_into(raw, user, &mut context);
        for step in steps.iter() {
            self.learn_step(user, step, &context, ts_ms);
        }
        self.context = context;
        Some(drawn as u32 - 1)
    }

    /// One learning step on an admitted item; returns the prediction before the step.
    fn learn_step(
        &mut self,
        user: &mut UserActor,
        step: &Step<'_>,
        context: &SparseVec,
        ts_ms: u64,
    ) -> f32 {
        // An experiment arm may give the user's personal step its own rate.
        let adam = match user.tuning.learning_rate {
            Some(learning_rate) => AdamParams {
                learning_rate,
                ..self.adam
            },
            None => self.adam,
        };
        let params = LearnParams {
            adam: &adam,
            state: self.state,
        };
        let example = score::Example {
            item_key: step.key,
            row: step.row,
            inline_phi: step.inline.map(|f| &f.phi[..]),
            context,
            reward: step.reward,
            pop_tau: self.global.popularity_tau(ts_ms),
            co: step.co,
            co_base: self.cfg.model.cooccurrence_weight,
        };
        score::learn(
            &params,
            user.model(),
            &mut self.global,
            &example,
            &mut self.scratch,
        )
    }

    /// The probability of a logit.
    pub fn probability(z: f32) -> f32 {
        sigmoid(z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;

    #[test]
    fn an_unseen_candidate_scores_the_same_before_and_after_admission() {
        let mut learner = Learner::new(Arc::new(Config::default()), 1, false);
        let mut user = UserActor::new(UserId::new("u").unwrap(), 1_700_000_000_000, 32);
        let x: Vec<f32> = (0..32).map(|k| (k as f32 - 16.0) / 16.0).collect();
        user.add_signal(1.0, &x, 1_700_000_000_000, 60.0);
        learner.prepare_query(&user, &SparseVec::default(), 1_700_000_000_000);
        let key = 0xfeed_beef_u64;
        let expected = dot(&learner.query, &learner.space.initial_embedding(key));
        assert!(!learner.global.items.contains(key));
        let mut out = Vec::new();
        learner.logits(std::iter::once((key, None)), &mut out);
        // Admitted on first sight, with the same score it had as an unknown.
        assert!(learner.global.items.contains(key));
        assert_eq!(out, vec![expected]);
        learner.logits(std::iter::once((key, None)), &mut out);
        assert_eq!(out, vec![expected]);
    }
}
