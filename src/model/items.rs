//! `ItemTable`: a shard's item parameters in dense arrays, laid out for scoring.
//!
//! Scoring a candidate needs `x_i = φ_i + e_i`, the bias `b_i` and the popularity feature;
//! training and mixing also need `e_i`, the AdaGrad accumulators, the log-popularity and the
//! catalog features. The table keeps the scoring group in one contiguous row per item,
//! `[x_0 … x_{d−1}, b_i, pop_i, 0 …]` padded to a multiple of 8 floats, so that a candidate
//! costs one probe of a small `key → row` index and one dot product of its row with the
//! extended query `[q, 1, β, 0 …]`. Everything else lives in parallel arrays that only training
//! and mixing touch. Rows are packed: removing an item moves the last row into its place.
//!
//! The table stores numbers; it does not know the learning rules (`global`), the query
//! (`score`) or how the popularity feature is computed from the log-popularity.

use std::sync::Arc;

use crate::model::features::ItemFeatures;
use crate::model::keyindex::KeyIndex;

/// The index of an item's row in an [`ItemTable`]. Valid until the next insert or remove.
pub type Row = u32;

/// A shard's items: catalog copies and learned parameters, one row each.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ItemTable {
    dim: usize,
    stride: usize,
    index: KeyIndex,
    keys: Vec<u64>,
    /// Scoring rows, `stride` floats each: `x`, then the bias, then the popularity feature.
    rows: Vec<f32>,
    /// The popularity clock each row's popularity slot was computed for (`NaN`: stale).
    pop_at: Vec<f64>,
    /// `ln Σ_k 2^(t_k/H)` per item (see `global::POPULARITY_EPOCH_MS`); `−∞` before any event.
    pop_log: Vec<f64>,
    /// `e_i`, `d` floats per item.
    embedding: Vec<f32>,
    /// AdaGrad accumulators of `e_i`, `d` floats per item.
    embedding_acc: Vec<f32>,
    /// AdaGrad accumulator of `b_i`.
    bias_acc: Vec<f32>,
    /// Catalog features; `None` for items only known from decisions or learning.
    features: Vec<Option<Arc<ItemFeatures>>>,
}

/// The mutable training parameters of one item, borrowed together.
pub struct ItemTrainable<'a> {
    /// The bias `b_i`.
    pub bias: &'a mut f32,
    /// AdaGrad accumulator of the bias.
    pub bias_acc: &'a mut f32,
    /// The embedding `e_i`.
    pub embedding: &'a mut [f32],
    /// AdaGrad accumulators of the embedding.
    pub embedding_acc: &'a mut [f32],
}

impl ItemTable {
    /// Makes this a copy of `src`, reusing this one's memory: a checkpoint copies the table
    /// into the copy the previous checkpoint encoded, so the copy costs memcpys, not the page
    /// faults of ~100 MB of fresh memory. Every field is named, so a new one cannot be missed.
    pub fn copy_from(&mut self, src: &ItemTable) {
        let ItemTable {
            dim,
            stride,
            index,
            keys,
            rows,
            pop_at,
            pop_log,
            embedding,
            embedding_acc,
            bias_acc,
            features,
        } = src;
        self.dim = *dim;
        self.stride = *stride;
        self.index.copy_from(index);
        self.keys.clone_from(keys);
        self.rows.clone_from(rows);
        self.pop_at.clone_from(pop_at);
        self.pop_log.clone_from(pop_log);
        self.embedding.clone_from(embedding);
        self.embedding_acc.clone_from(embedding_acc);
        self.bias_acc.clone_from(bias_acc);
        self.features.clone_from(features);
    }

    /// An empty table for width `dim`.
    pub fn new(dim: usize) -> Self {
        ItemTable {
            dim,
            stride: (dim + 2).div_ceil(8) * 8,
            index: KeyIndex::default(),
            keys: Vec::new(),
            rows: Vec::new(),
            pop_at: Vec::new(),
            pop_log: Vec::new(),
            embedding: Vec::new(),
            embedding_acc: Vec::new(),
            bias_acc: Vec::new(),
            features: Vec::new(),
        }
    }

    /// Floats per scoring row (the extended query must be this long).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The row of `key`, if present.
    #[inline]
    pub fn row(&self, key: u64) -> Option<Row> {
        self.index.get(key)
    }

    /// The key of the item in `row`.
    #[inline]
    pub fn key(&self, row: Row) -> u64 {
        self.keys[row as usize]
    }

    /// Whether `key` has a row.
    pub fn contains(&self, key: u64) -> bool {
        self.index.get(key).is_some()
    }

    /// Adds `key` with features `features` and starting embedding `e0` (zero bias, no
    /// popularity); returns its row. An existing row is returned unchanged.
    pub fn insert(&mut self, key: u64, features: Option<Arc<ItemFeatures>>, e0: &[f32]) -> Row {
        debug_assert_eq!(e0.len(), self.dim);
        if let Some(row) = self.row(key) {
            return row;
        }
        let row = self.keys.len() as Row;
        self.index.insert(key, row);
        self.keys.push(key);
        self.rows.resize(self.rows.len() + self.stride, 0.0);
        self.pop_at.push(f64::NAN);
        self.pop_log.push(f64::NEG_INFINITY);
        self.embedding.extend_from_slice(e0);
        self.embedding_acc
            .resize(self.embedding_acc.len() + self.dim, 0.0);
        self.bias_acc.push(0.0);
        self.features.push(features);
        self.refresh_x(row);
        row
    }

    /// Removes `key`; `false` when it was not present. The last row moves into its place.
    pub fn remove(&mut self, key: u64) -> bool {
        let Some(row) = self.index.remove(key) else {
            return false;
        };
        let (row, last) = (row as usize, self.keys.len() - 1);
        if row != last {
            let moved = self.keys[last];
            self.keys[row] = moved;
            self.index.insert(moved, row as Row);
            let (s, d) = (self.stride, self.dim);
            self.rows.copy_within(last * s..(last + 1) * s, row * s);
            self.embedding
                .copy_within(last * d..(last + 1) * d, row * d);
            self.embedding_acc
                .copy_within(last * d..(last + 1) * d, row * d);
            self.pop_at[row] = self.pop_at[last];
            self.pop_log[row] = self.pop_log[last];
            self.bias_acc[row] = self.bias_acc[last];
            self.features.swap(row, last);
        }
        self.keys.pop();
        self.rows.truncate(last * self.stride);
        self.pop_at.pop();
        self.pop_log.pop();
        self.embedding.truncate(last * self.dim);
        self.embedding_acc.truncate(last * self.dim);
        self.bias_acc.pop();
        self.features.pop();
        true
    }

    /// The scoring row: `x`, bias, popularity feature, padding.
    #[inline]
    pub fn scoring_row(&self, row: Row) -> &[f32] {
        let s = self.stride;
        &self.rows[row as usize * s..(row as usize + 1) * s]
    }

    /// Starts loading `key`'s slot of the index, ahead of a `row(key)` (see `KeyIndex`).
    #[inline]
    pub fn prefetch_key(&self, key: u64) {
        self.index.prefetch(key);
    }

    /// Hints the CPU to start loading a scoring row (a no-op where there is no prefetch).
    #[inline]
    pub fn prefetch(&self, row: Row) {
        let s = self.stride;
        prefetch_floats(&self.rows[row as usize * s..(row as usize + 1) * s]);
    }

    /// Hints the CPU to start loading everything a training step reads of a row: the scoring
    /// row, the embedding and its accumulators.
    #[inline]
    pub fn prefetch_trainable(&self, row: Row) {
        let (r, d) = (row as usize, self.dim);
        self.prefetch(row);
        prefetch_floats(&self.embedding[r * d..(r + 1) * d]);
        prefetch_floats(&self.embedding_acc[r * d..(r + 1) * d]);
    }

    /// `x = φ + e` of a row.
    #[inline]
    pub fn x(&self, row: Row) -> &[f32] {
        &self.scoring_row(row)[..self.dim]
    }

    /// The bias `b_i` of a row.
    #[inline]
    pub fn bias(&self, row: Row) -> f32 {
        self.rows[row as usize * self.stride + self.dim]
    }

    /// Sets the bias of a row.
    pub fn set_bias(&mut self, row: Row, bias: f32) {
        self.rows[row as usize * self.stride + self.dim] = bias;
    }

    /// The popularity feature slot of a row and the clock it was computed for.
    #[inline]
    pub fn popularity_memo(&self, row: Row) -> (f64, f32) {
        let r = row as usize;
        (self.pop_at[r], self.rows[r * self.stride + self.dim + 1])
    }

    /// Stores the popularity feature `f` of a row for clock `tau`.
    #[inline]
    pub fn set_popularity_memo(&mut self, row: Row, tau: f64, f: f32) {
        let r = row as usize;
        self.pop_at[r] = tau;
        self.rows[r * self.stride + self.dim + 1] = f;
    }

    /// The log-popularity of a row.
    #[inline]
    pub fn pop_log(&self, row: Row) -> f64 {
        self.pop_log[row as usize]
    }

    /// Sets the log-popularity of a row and marks its popularity feature stale.
    pub fn set_pop_log(&mut self, row: Row, pop_log: f64) {
        let r = row as usize;
        self.pop_log[r] = pop_log;
        self.pop_at[r] = f64::NAN;
    }

    /// The learned embedding `e_i` of a row.
    #[inline]
    pub fn embedding(&self, row: Row) -> &[f32] {
        let d = self.dim;
        &self.embedding[row as usize * d..(row as usize + 1) * d]
    }

    /// Sets the embedding of a row (and so its `x`).
    pub fn set_embedding(&mut self, row: Row, e: &[f32]) {
        let d = self.dim;
        self.embedding[row as usize * d..(row as usize + 1) * d].copy_from_slice(e);
        self.refresh_x(row);
    }

    /// The catalog features of a row.
    #[inline]
    pub fn features(&self, row: Row) -> Option<&Arc<ItemFeatures>> {
        self.features[row as usize].as_ref()
    }

    /// Every row's catalog features (items only known from learning have none).
    pub fn catalog(&self) -> impl Iterator<Item = &Arc<ItemFeatures>> {
        self.features.iter().flatten()
    }

    /// Replaces the catalog features of a row (and so its `x`).
    pub fn set_features(&mut self, row: Row, features: Option<Arc<ItemFeatures>>) {
        self.features[row as usize] = features;
        self.refresh_x(row);
    }

    /// The training parameters of a row, borrowed mutably together. Call
    /// [`Self::refresh_x`] after changing the embedding.
    pub fn trainable(&mut self, row: Row) -> ItemTrainable<'_> {
        let (r, d) = (row as usize, self.dim);
        ItemTrainable {
            bias: &mut self.rows[r * self.stride + d],
            bias_acc: &mut self.bias_acc[r],
            embedding: &mut self.embedding[r * d..(r + 1) * d],
            embedding_acc: &mut self.embedding_acc[r * d..(r + 1) * d],
        }
    }

    /// Recomputes `x = φ + e` of a row after `φ` or `e` changed.
    pub fn refresh_x(&mut self, row: Row) {
        let (r, d, s) = (row as usize, self.dim, self.stride);
        let x = &mut self.rows[r * s..r * s + d];
        let e = &self.embedding[r * d..(r + 1) * d];
        match &self.features[r] {
            Some(f) => {
                for ((x, p), e) in x.iter_mut().zip(&f.phi[..]).zip(e) {
                    *x = p + e;
                }
            }
            None => x.copy_from_slice(e),
        }
    }
}

/// Requests every cache line of `floats` (a no-op where there is no prefetch).
#[inline]
fn prefetch_floats(floats: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // The slice spans at most `len·4/64 + 1` cache lines; touch each.
        let mut off = 0;
        while off < floats.len() {
            let p = floats[off..].as_ptr() as *const i8;
            // SAFETY: prefetching is a hint that never faults; `p` points into `floats`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
            off += 16;
        }
        if let Some(last) = floats.last() {
            let p = last as *const f32 as *const i8;
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = floats;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_moves_the_last_row_into_the_hole() {
        let mut t = ItemTable::new(3);
        assert_eq!(t.stride(), 8);
        for k in 0..4u64 {
            let row = t.insert(k, None, &[k as f32, 0.0, 1.0]);
            t.set_bias(row, 10.0 + k as f32);
            t.set_pop_log(row, k as f64);
        }
        assert!(t.remove(1));
        assert!(!t.remove(1));
        assert_eq!(t.len(), 3);
        assert_eq!(t.row(1), None);
        // Key 3 took row 1 and kept every parameter.
        let r3 = t.row(3).unwrap();
        assert_eq!(r3, 1);
        assert_eq!(t.x(r3), &[3.0, 0.0, 1.0]);
        assert_eq!(t.embedding(r3), &[3.0, 0.0, 1.0]);
        assert_eq!(t.bias(r3), 13.0);
        assert_eq!(t.pop_log(r3), 3.0);
        // The others are untouched.
        let r2 = t.row(2).unwrap();
        assert_eq!((t.x(r2)[0], t.bias(r2)), (2.0, 12.0));
        assert!(t.remove(3) && t.remove(0) && t.remove(2));
        assert!(t.is_empty());
    }

    #[test]
    fn x_is_phi_plus_e_and_the_row_is_padded_with_zeros() {
        let mut t = ItemTable::new(2);
        let row = t.insert(9, None, &[1.0, 2.0]);
        {
            let p = t.trainable(row);
            p.embedding[0] = 5.0;
            *p.bias = 0.5;
        }
        t.refresh_x(row);
        t.set_popularity_memo(row, 1.0, 0.25);
        assert_eq!(
            t.scoring_row(row),
            &[5.0, 2.0, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(t.popularity_memo(row), (1.0, 0.25));
        t.set_pop_log(row, 3.0);
        assert!(t.popularity_memo(row).0.is_nan());
    }
}
