//! The global parameters (`g`, `G`, the learned state weights `κ_k`, the popularity weight
//! `β`, and per item `b_i`, `e_i` and the decayed popularity) as each shard's private replica,
//! and the `Mixer` that folds replicas together every few milliseconds.
//!
//! A shard trains its replica with AdaGrad and records what it changed (dense deltas, and the
//! items it touched). At each mix it adds its deltas to the master copy under a mutex and pulls
//! back the master's dense parameters and every item another shard changed since its last mix.
//! Summing deltas (rather than averaging replicas) keeps every shard's updates at full strength:
//! users are partitioned, so each replica sees different data. The mutex is taken once per mix
//! interval per shard, never on the hot path. With one shard mixing is skipped entirely.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::model::adam::{adagrad_scalar, adagrad_step};
use crate::model::cooccur::{Engagement, MAX_OUTBOX};
use crate::model::features::SparseVec;
use crate::model::items::{ItemTable, Row};

/// A hasher for keys that already are well-mixed 64-bit hashes: it passes them through.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map keyed by pre-hashed 64-bit keys.
pub type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// The reference time of the items' log-popularity (2020-09-13, Unix ms).
pub const POPULARITY_EPOCH_MS: u64 = 1_600_000_000_000;

/// `ln(eᵃ + eᵇ)` without overflow.
#[inline]
pub fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// `ln(eᵃ − eᵇ)` for `a ≥ b` (`−∞` when equal).
#[inline]
fn log_sub_exp(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    if b >= a {
        return f64::NEG_INFINITY;
    }
    a + (-(b - a).exp()).ln_1p()
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct ItemDelta {
    bias: f32,
    embedding: Box<[f32]>,
    pop_log: f64,
}

impl ItemDelta {
    fn new(d: usize) -> Self {
        ItemDelta {
            bias: 0.0,
            embedding: vec![0.0; d].into(),
            pop_log: f64::NEG_INFINITY,
        }
    }
}

/// A shard's replica of the global model. A checkpoint stores its learned part; the fields
/// marked `skip` come from the configuration (`adopt`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GlobalReplica {
    #[serde(skip)]
    dim: usize,
    #[serde(skip)]
    learning_rate: f32,
    /// `g`: what everyone likes.
    pub g: Vec<f32>,
    g_acc: Vec<f32>,
    g_delta: Vec<f32>,
    /// `G`, column-major: column `j` is `big_g[j*d..(j+1)*d]`.
    pub big_g: Vec<f32>,
    big_g_acc: Vec<f32>,
    big_g_delta: Vec<f32>,
    /// Learned offsets of the per-dimension state weights: `κ_k = κ + state_w[k]`.
    pub state_w: Vec<f32>,
    state_w_acc: Vec<f32>,
    state_w_delta: Vec<f32>,
    #[serde(skip)]
    state_learning_rate: f32,
    /// `β`, the learned weight of the popularity feature `log1p(pop_i)`.
    pub pop_w: f32,
    pop_w_acc: f32,
    pop_w_delta: f32,
    /// `ln 2 / H` of the item popularity (per second); 0 when popularity is off.
    #[serde(skip)]
    pop_rate: f64,
    /// The popularity clock of the latest outcome counted: popularity is read at no later
    /// clock than this, so a quiet night or an old import does not decay it to nothing.
    pop_latest_tau: f64,
    /// Learned offset of the co-occurrence weight: `γ = γ₀ + co_w`.
    pub co_w: f32,
    co_w_acc: f32,
    co_w_delta: f32,
    #[serde(skip)]
    co_learning_rate: f32,
    /// Items this shard knows: catalog copies and learned parameters.
    pub items: ItemTable,
    dirty: KeyMap<ItemDelta>,
    dense_dirty: bool,
}

impl GlobalReplica {
    /// Makes this a copy of `src`, reusing this one's memory (`ItemTable::copy_from`). Every
    /// field is named, so a new one cannot be missed.
    pub fn copy_from(&mut self, src: &GlobalReplica) {
        let GlobalReplica {
            dim,
            learning_rate,
            g,
            g_acc,
            g_delta,
            big_g,
            big_g_acc,
            big_g_delta,
            state_w,
            state_w_acc,
            state_w_delta,
            state_learning_rate,
            pop_w,
            pop_w_acc,
            pop_w_delta,
            pop_rate,
            pop_latest_tau,
            co_w,
            co_w_acc,
            co_w_delta,
            co_learning_rate,
            items,
            dirty,
            dense_dirty,
        } = src;
        self.dim = *dim;
        self.learning_rate = *learning_rate;
        self.g.clone_from(g);
        self.g_acc.clone_from(g_acc);
        self.g_delta.clone_from(g_delta);
        self.big_g.clone_from(big_g);
        self.big_g_acc.clone_from(big_g_acc);
        self.big_g_delta.clone_from(big_g_delta);
        self.state_w.clone_from(state_w);
        self.state_w_acc.clone_from(state_w_acc);
        self.state_w_delta.clone_from(state_w_delta);
        self.state_learning_rate = *state_learning_rate;
        self.pop_w = *pop_w;
        self.pop_w_acc = *pop_w_acc;
        self.pop_w_delta = *pop_w_delta;
        self.pop_rate = *pop_rate;
        self.pop_latest_tau = *pop_latest_tau;
        self.co_w = *co_w;
        self.co_w_acc = *co_w_acc;
        self.co_w_delta = *co_w_delta;
        self.co_learning_rate = *co_learning_rate;
        self.items.copy_from(items);
        self.dirty.clone_from(dirty);
        self.dense_dirty = *dense_dirty;
    }

    /// Takes a checkpoint's learned parameters, keeping this run's width and learning rates.
    pub fn adopt(&mut self, saved: GlobalReplica) {
        *self = GlobalReplica {
            dim: self.dim,
            learning_rate: self.learning_rate,
            state_learning_rate: self.state_learning_rate,
            pop_rate: self.pop_rate,
            co_learning_rate: self.co_learning_rate,
            ..saved
        };
    }

    /// An untrained replica of width `dim`.
    pub fn new(dim: usize, learning_rate: f32) -> Self {
        GlobalReplica {
            dim,
            learning_rate,
            g: vec![0.0; dim],
            g_acc: vec![0.0; dim],
            g_delta: vec![0.0; dim],
            big_g: vec![0.0; dim * dim],
            big_g_acc: vec![0.0; dim * dim],
            big_g_delta: vec![0.0; dim * dim],
            state_w: vec![0.0; dim],
            state_w_acc: vec![0.0; dim],
            state_w_delta: vec![0.0; dim],
            state_learning_rate: 0.0,
            pop_w: 0.0,
            pop_w_acc: 0.0,
            pop_w_delta: 0.0,
            pop_rate: 0.0,
            pop_latest_tau: f64::NEG_INFINITY,
            co_w: 0.0,
            co_w_acc: 0.0,
            co_w_delta: 0.0,
            co_learning_rate: 0.0,
            items: ItemTable::new(dim),
            dirty: KeyMap::default(),
            dense_dirty: false,
        }
    }

    /// Learns the per-dimension state weights with step size `lr` (0: they stay at `κ`), and
    /// keeps each item's decayed popularity with half-life `popularity_half_life_s` (0: off).
    pub fn with_extras(mut self, lr: f32, popularity_half_life_s: f64) -> Self {
        self.state_learning_rate = lr;
        self.pop_rate = if popularity_half_life_s > 0.0 {
            std::f64::consts::LN_2 / popularity_half_life_s
        } else {
            0.0
        };
        self
    }

    /// Learns the co-occurrence weight's offset with step size `lr`.
    pub fn with_cooccurrence_learning_rate(mut self, lr: f32) -> Self {
        self.co_learning_rate = lr;
        self
    }

    /// Whether the per-dimension state weights learn.
    pub fn state_weights_learn(&self) -> bool {
        self.state_learning_rate > 0.0 && self.learning_rate > 0.0
    }

    /// Whether items carry the popularity feature.
    pub fn popularity_on(&self) -> bool {
        self.pop_rate > 0.0
    }

    /// The popularity clock at `ts_ms`: `t·ln2/H`, subtracted from an item's `pop_log`,
    /// rounded down to a grid of 1/1024 (about `H/710` of time, a popularity error under 0.1%)
    /// so that an item's feature can be memoized between clock steps.
    /// Never later than the latest outcome counted (with nothing counted, the time itself):
    /// popularity is relative to the latest activity, so it does not drain away while nothing
    /// happens, and a history imported with its own timestamps keeps its popularity when it
    /// is served at the present time.
    #[inline]
    pub fn popularity_tau(&self, ts_ms: u64) -> f64 {
        let tau = self.raw_popularity_tau(ts_ms);
        if self.pop_latest_tau > f64::NEG_INFINITY {
            tau.min(self.pop_latest_tau)
        } else {
            tau
        }
    }

    #[inline]
    fn raw_popularity_tau(&self, ts_ms: u64) -> f64 {
        let tau = (ts_ms as f64 - POPULARITY_EPOCH_MS as f64) / 1000.0 * self.pop_rate;
        (tau * 1024.0).floor() / 1024.0
    }

    /// The popularity feature `log1p(pop_i(t))` of an item with log-popularity `pop_log`, for
    /// the clock `tau` of [`Self::popularity_tau`] (0 when popularity is off).
    #[inline]
    pub fn popularity_feature(&self, pop_log: f64, tau: f64) -> f32 {
        if self.pop_rate == 0.0 || pop_log == f64::NEG_INFINITY {
            return 0.0;
        }
        (pop_log - tau).exp().ln_1p() as f32
    }

    /// `popularity_feature` of the item in `row`, memoized in its scoring row per clock step
    /// (the same value, computed once per step).
    #[inline]
    pub fn item_popularity(&mut self, row: Row, tau: f64) -> f32 {
        let (at, f) = self.items.popularity_memo(row);
        if at == tau {
            return f;
        }
        let f = self.popularity_feature(self.items.pop_log(row), tau);
        self.items.set_popularity_memo(row, tau, f);
        f
    }

    /// Counts one outcome event on item `key` at `ts_ms` in its decayed popularity.
    pub fn record_popularity(&mut self, key: u64, ts_ms: u64) {
        if self.pop_rate == 0.0 {
            return;
        }
        let t = self.raw_popularity_tau(ts_ms);
        let Some(row) = self.items.row(key) else {
            return;
        };
        self.pop_latest_tau = self.pop_latest_tau.max(t);
        self.items
            .set_pop_log(row, log_add_exp(self.items.pop_log(row), t));
        let d = self.dim;
        let delta = self.dirty.entry(key).or_insert_with(|| ItemDelta::new(d));
        delta.pop_log = log_add_exp(delta.pop_log, t);
    }

    /// One AdaGrad step on the state weights (gradient `err·ŝ_k·x_k`, given as `err` and
    /// `sx = ŝ∘x`), on the popularity weight (gradient `err·feature`) and on the co-occurrence
    /// weight's offset (gradient `err·co`).
    pub fn train_extras(&mut self, err: f32, sx: Option<&[f32]>, pop_feature: f32, co: f32) {
        if self.learning_rate == 0.0 {
            return;
        }
        if co != 0.0 && self.co_learning_rate > 0.0 {
            adagrad_scalar(
                self.co_learning_rate,
                &mut self.co_w,
                &mut self.co_w_acc,
                &mut self.co_w_delta,
                err,
                co,
            );
            self.dense_dirty = true;
        }
        if let (Some(sx), true) = (sx, self.state_learning_rate > 0.0) {
            adagrad_step(
                self.state_learning_rate,
                &mut self.state_w,
                &mut self.state_w_acc,
                &mut self.state_w_delta,
                err,
                sx,
            );
            self.dense_dirty = true;
        }
        if self.pop_rate > 0.0 && pop_feature != 0.0 {
            adagrad_scalar(
                self.learning_rate,
                &mut self.pop_w,
                &mut self.pop_w_acc,
                &mut self.pop_w_delta,
                err,
                pop_feature,
            );
            self.dense_dirty = true;
        }
    }

    /// The model width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `out ← out + G·c`.
    #[inline]
    pub fn add_context(&self, c: &SparseVec, out: &mut [f32]) {
        let d = self.dim;
        for &(j, v) in &c.entries {
            let col = &self.big_g[j as usize * d..(j as usize + 1) * d];
            crate::model::math::axpy(out, v, col);
        }
    }

    /// One AdaGrad step on the global parameters for prediction error `err` of item `key` with
    /// features `x`, context `c` and query vector `q` (`∂z/∂e_i`). An absent item trains only
    /// the dense parameters.
    pub fn train(&mut self, key: u64, err: f32, x: &[f32], q: &[f32], c: &SparseVec) {
        match self.items.row(key) {
            Some(row) => self.train_row(key, row, err, x, q, c),
            None => self.train_dense(err, x, c),
        }
    }

    /// [`Self::train`] of the item `key` in `row`.
    pub fn train_row(&mut self, key: u64, row: Row, err: f32, x: &[f32], q: &[f32], c: &SparseVec) {
        debug_assert_eq!(self.items.row(key), Some(row));
        let (d, lr) = (self.dim, self.learning_rate);
        if lr == 0.0 {
            return;
        }
        self.train_dense(err, x, c);
        let delta = self.dirty.entry(key).or_insert_with(|| ItemDelta::new(d));
        let item = self.items.trainable(row);
        adagrad_scalar(lr, item.bias, item.bias_acc, &mut delta.bias, err, 1.0);
        adagrad_step(
            lr,
            item.embedding,
            item.embedding_acc,
            &mut delta.embedding,
            err,
            q,
        );
        self.items.refresh_x(row);
    }

    /// The AdaGrad steps on `g` and `G`.
    fn train_dense(&mut self, err: f32, x: &[f32], c: &SparseVec) {
        let d = self.dim;
        let lr = self.learning_rate;
        if lr == 0.0 {
            return;
        }
        adagrad_step(lr, &mut self.g, &mut self.g_acc, &mut self.g_delta, err, x);
        for &(j, v) in &c.entries {
            let r = j as usize * d..(j as usize + 1) * d;
            adagrad_step(
                lr,
                &mut self.big_g[r.clone()],
                &mut self.big_g_acc[r.clone()],
                &mut self.big_g_delta[r],
                err * v,
                x,
            );
        }
        self.dense_dirty = true;
    }

    /// Folds this replica into the master and pulls back what other shards changed. Returns
    /// what was pulled, so that a write-ahead log can replay this step without a mixer.
    pub fn mix(&mut self, mixer: &Mixer, shard: usize) -> Pulled {
        let mut master = mixer.master.lock();
        let master = &mut *master;
        self.push(master, shard);
        let dense = (self.g != master.g
            || self.big_g != master.big_g
            || self.state_w != master.state_w
            || self.pop_w.to_bits() != master.pop_w.to_bits()
            || self.co_w.to_bits() != master.co_w.to_bits()
            || self.pop_latest_tau.to_bits() != master.pop_latest_tau.to_bits())
        .then(|| PulledDense {
            g: master.g.clone(),
            big_g: master.big_g.clone(),
            state_w: master.state_w.clone(),
            pop_w: master.pop_w,
            co_w: master.co_w,
            pop_latest_tau: master.pop_latest_tau,
        });
        let pending = std::mem::take(&mut master.pending[shard]);
        let mut items = Vec::with_capacity(pending.len());
        for key in &pending {
            // Another shard may have removed the item since it was marked pending.
            let Some(m) = master.items.get(key) else {
                continue;
            };
            items.push(PulledItem {
                key: *key,
                bias: m.bias,
                embedding: m.embedding.clone(),
                pop_log: m.pop_log,
            });
        }
        master.pending[shard] = pending;
        master.pending[shard].clear();
        let pulled = Pulled {
            dense,
            items,
            engagements: Vec::new(),
        };
        self.apply_pulled(&pulled);
        pulled
    }

    /// Replays a recorded mix: pushes this replica's changes to `mixer` (when there is one,
    /// so that the master rebuilds), then takes exactly the values the mix pulled back then.
    pub fn replay_mix(&mut self, mixer: Option<&Mixer>, shard: usize, pulled: &Pulled) {
        if let Some(mixer) = mixer {
            self.push(&mut mixer.master.lock(), shard);
        }
        self.apply_pulled(pulled);
    }

    /// Adds this replica's deltas to the master and marks its changed items for the others.
    fn push(&mut self, master: &mut Master, shard: usize) {
        if self.dense_dirty {
            add_into(&mut master.g, &self.g_delta);
            add_into(&mut master.big_g, &self.big_g_delta);
            add_into(&mut master.state_w, &self.state_w_delta);
            master.pop_w += self.pop_w_delta;
            master.co_w += self.co_w_delta;
            self.co_w_delta = 0.0;
            self.g_delta.iter_mut().for_each(|x| *x = 0.0);
            self.big_g_delta.iter_mut().for_each(|x| *x = 0.0);
            self.state_w_delta.iter_mut().for_each(|x| *x = 0.0);
            self.pop_w_delta = 0.0;
            self.dense_dirty = false;
        }
        master.pop_latest_tau = master.pop_latest_tau.max(self.pop_latest_tau);
        for (key, delta) in self.dirty.drain() {
            // The item may have been removed since the delta was recorded.
            let Some(row) = self.items.row(key) else {
                continue;
            };
            let items = &self.items;
            let entry = master.items.entry(key).or_insert_with(|| {
                // First push of this item: its base is the local value before the delta.
                let base: Vec<f32> = items
                    .embedding(row)
                    .iter()
                    .zip(&delta.embedding[..])
                    .map(|(e, d)| e - d)
                    .collect();
                MasterItem {
                    bias: items.bias(row) - delta.bias,
                    embedding: base.into_boxed_slice(),
                    pop_log: log_sub_exp(items.pop_log(row), delta.pop_log),
                }
            });
            entry.bias += delta.bias;
            add_into(&mut entry.embedding, &delta.embedding);
            entry.pop_log = log_add_exp(entry.pop_log, delta.pop_log);
            for (other, pending) in master.pending.iter_mut().enumerate() {
                if other != shard {
                    pending.insert(key);
                }
            }
        }
    }

    /// Takes the pulled values into this replica.
    fn apply_pulled(&mut self, pulled: &Pulled) {
        if let Some(d) = &pulled.dense {
            self.g.copy_from_slice(&d.g);
            self.big_g.copy_from_slice(&d.big_g);
            self.state_w.copy_from_slice(&d.state_w);
            self.pop_w = d.pop_w;
            self.co_w = d.co_w;
            self.pop_latest_tau = self.pop_latest_tau.max(d.pop_latest_tau);
        }
        for m in &pulled.items {
            let row = self.items.insert(m.key, None, &m.embedding);
            self.items.set_bias(row, m.bias);
            self.items.set_embedding(row, &m.embedding);
            self.items.set_pop_log(row, m.pop_log);
        }
    }
}

/// What one mix pulled into a replica: the master's dense parameters (when they differed
/// from the replica's) and the items other shards changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pulled {
    /// `g`, `G`, the state weights and `β`, if they changed.
    pub dense: Option<PulledDense>,
    /// Items other shards changed.
    pub items: Vec<PulledItem>,
    /// Co-occurrence engagements other shards counted (`Mixer::exchange_engagements`).
    pub engagements: Vec<Engagement>,
}

/// The master's dense parameters as pulled.
#[derive(Clone, Debug, PartialEq)]
pub struct PulledDense {
    /// `g`.
    pub g: Vec<f32>,
    /// `G`, column-major.
    pub big_g: Vec<f32>,
    /// The state weights' offsets.
    pub state_w: Vec<f32>,
    /// `β`.
    pub pop_w: f32,
    /// The co-occurrence weight's learned offset.
    pub co_w: f32,
    /// The latest popularity clock of any shard.
    pub pop_latest_tau: f64,
}

/// One item's parameters as pulled.
#[derive(Clone, Debug, PartialEq)]
pub struct PulledItem {
    /// The item's key.
    pub key: u64,
    /// `b_i`.
    pub bias: f32,
    /// `e_i`.
    pub embedding: Box<[f32]>,
    /// The log-popularity.
    pub pop_log: f64,
}

fn add_into(target: &mut [f32], delta: &[f32]) {
    for (t, d) in target.iter_mut().zip(delta) {
        *t += d;
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct MasterItem {
    bias: f32,
    embedding: Box<[f32]>,
    pop_log: f64,
}

/// The master's contents (a checkpoint stores them).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Master {
    g: Vec<f32>,
    big_g: Vec<f32>,
    state_w: Vec<f32>,
    pop_w: f32,
    co_w: f32,
    pop_latest_tau: f64,
    items: KeyMap<MasterItem>,
    pending: Vec<HashSet<u64>>,
    /// Per shard: engagements other shards counted, for its next mix (bounded by
    /// `MAX_OUTBOX` per shard; past it they are dropped).
    engagements: Vec<Vec<Engagement>>,
}

impl Mixer {
    /// Hands `outbox` (what `shard` counted since its last mix) to every other shard and
    /// returns what the others handed to `shard`.
    pub fn exchange_engagements(&self, shard: usize, outbox: Vec<Engagement>) -> Vec<Engagement> {
        let mut master = self.master.lock();
        for (other, queue) in master.engagements.iter_mut().enumerate() {
            if other != shard {
                let room = MAX_OUTBOX.saturating_sub(queue.len());
                queue.extend(outbox.iter().take(room).copied());
            }
        }
        std::mem::take(&mut master.engagements[shard])
    }
}

/// The master copy of the global model that shards mix into.
#[derive(Debug)]
pub struct Mixer {
    master: Mutex<Master>,
}

impl Mixer {
    /// A master of width `dim` for `shards` replicas.
    pub fn new(dim: usize, shards: usize) -> Self {
        Mixer {
            master: Mutex::new(Master {
                g: vec![0.0; dim],
                big_g: vec![0.0; dim * dim],
                state_w: vec![0.0; dim],
                pop_w: 0.0,
                co_w: 0.0,
                pop_latest_tau: f64::NEG_INFINITY,
                items: KeyMap::default(),
                pending: vec![HashSet::new(); shards],
                engagements: vec![Vec::new(); shards],
            }),
        }
    }

    /// A copy of the master (for a checkpoint).
    pub fn snapshot(&self) -> Master {
        self.master.lock().clone()
    }

    /// Replaces the master with a checkpoint's copy (at recovery, before any mix).
    pub fn restore(&self, saved: Master) {
        let mut master = self.master.lock();
        if saved.pending.len() == master.pending.len() && saved.g.len() == master.g.len() {
            *master = saved;
        }
    }

    /// Forgets an item's learned parameters everywhere they will next be pulled from.
    pub fn remove_item(&self, key: u64) {
        self.master.lock().items.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixing_sums_the_shards_updates() {
        let mixer = Mixer::new(4, 2);
        let mut a = GlobalReplica::new(4, 0.1);
        let mut b = GlobalReplica::new(4, 0.1);
        let e0 = [0.1f32, 0.0, 0.0, 0.0];
        a.items.insert(7, None, &e0);
        b.items.insert(7, None, &e0);
        let x = [1.0, 0.0, 0.0, 0.0];
        let c = SparseVec::default();
        a.train(7, 0.5, &x, &x, &c);
        b.train(7, 0.5, &x, &x, &c);
        let bias = |r: &GlobalReplica| r.items.bias(r.items.row(7).unwrap());
        let (ga, ba) = (a.g[0], bias(&a));
        a.mix(&mixer, 0);
        b.mix(&mixer, 1);
        a.mix(&mixer, 0);
        // Both shards now hold both updates.
        assert!((a.g[0] - 2.0 * ga).abs() < 1e-6);
        assert!((b.g[0] - 2.0 * ga).abs() < 1e-6);
        assert!((bias(&a) - 2.0 * ba).abs() < 1e-6);
        assert_eq!(bias(&a), bias(&b));
    }

    #[test]
    fn popularity_halves_per_half_life_and_mixes_across_shards() {
        let day_ms = 86_400_000u64;
        let mixer = Mixer::new(4, 2);
        let mut a = GlobalReplica::new(4, 0.1).with_extras(0.0, 86_400.0);
        let mut b = GlobalReplica::new(4, 0.1).with_extras(0.0, 86_400.0);
        let e0 = [0.1f32, 0.0, 0.0, 0.0];
        a.items.insert(7, None, &e0);
        b.items.insert(7, None, &e0);
        let t0 = POPULARITY_EPOCH_MS + 1000 * day_ms;
        let pop = |r: &GlobalReplica, t: u64| {
            let row = r.items.row(7).unwrap();
            let f = r.popularity_feature(r.items.pop_log(row), r.popularity_tau(t));
            f.exp_m1()
        };
        assert_eq!(pop(&a, t0), 0.0);
        a.record_popularity(7, t0);
        a.record_popularity(7, t0);
        // Within the clock grid's 0.1%.
        assert!((pop(&a, t0) - 2.0).abs() < 2e-3 * 2.0);
        // Nothing happened for a day: popularity is read at the latest activity, not drained.
        assert!((pop(&a, t0 + day_ms) - 2.0).abs() < 4e-3);
        // Activity a day later (on another item) moves the clock: the two events are halved.
        let mut c = GlobalReplica::new(4, 0.1).with_extras(0.0, 86_400.0);
        c.items.insert(7, None, &e0);
        c.items.insert(8, None, &e0);
        c.record_popularity(7, t0);
        c.record_popularity(8, t0 + day_ms);
        assert!((pop(&c, t0 + day_ms) - 0.5).abs() < 2e-3);
        b.record_popularity(7, t0 + day_ms);
        a.mix(&mixer, 0);
        b.mix(&mixer, 1);
        a.mix(&mixer, 0);
        // Both shards see 2 events one day old plus 1 fresh one.
        for r in [&a, &b] {
            assert!(
                (pop(r, t0 + day_ms) - 2.0).abs() < 4e-3,
                "{}",
                pop(r, t0 + day_ms)
            );
        }
    }

    #[test]
    fn state_weights_learn_and_mix() {
        let mixer = Mixer::new(2, 2);
        let mut a = GlobalReplica::new(2, 0.1).with_extras(0.1, 0.0);
        let mut b = GlobalReplica::new(2, 0.1).with_extras(0.1, 0.0);
        // The state agreed with a positive outcome (err < 0): its weight grows.
        a.train_extras(-0.5, Some(&[1.0, 0.0]), 0.0, 0.0);
        assert!(a.state_w[0] > 0.0 && a.state_w[1] == 0.0);
        let w = a.state_w[0];
        a.mix(&mixer, 0);
        b.mix(&mixer, 1);
        assert_eq!(b.state_w[0], w);
    }
}
