//! Live micro-segments (issue 14, item 4): streaming mini-batch k-means over users' taste
//! vectors, with centroids shared by every shard.
//!
//! A user's point is `embed(w_u, s_u)`: the personal weights normalized, beside the state
//! vector normalized and scaled by `state_weight`, the whole normalized again (so distances
//! are between directions of taste, not amounts of history). Each shard assigns the point of
//! every user it touches to its nearest centroid and adds it to that centroid's running sum
//! (`Accumulator`, O(k·2d) per touch, on the shard's own thread); at its tick it hands the
//! sums to the `SegmentMaster` under one short mutex and takes back the current centroids as
//! an `Arc` snapshot. The master moves each centroid to the weighted mean of its old position
//! (weight capped at `memory` points, so it keeps following) and the new sums: Sculley's
//! mini-batch k-means with per-centre learning rate `1/n`, bounded below by `1/memory`.
//! Until there are centroids, shards hand the master sample points instead, and the master
//! seeds `k` centroids from them by k-means++ and a few Lloyd rounds.
//!
//! Segments have stable ids (never reused) and operator names; a centroid keeps its id (and
//! name) as it moves. When the set is rebuilt (a restart with another `k`), each new centroid
//! takes the id and name of the nearest old one not already taken.
//!
//! **Segments change no learned state**: a user's segment is computed where it is read
//! (export, `explain`, rules, experiment targeting) as the nearest centroid of the snapshot
//! the shard holds, so centroids never need replaying. Nothing here reads the clock; the
//! master's randomness (seeding) comes from its own seeded `Rng`.

use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::rng::Rng;

/// Most segments (`segments.k`).
pub const MAX_SEGMENTS: usize = 64;

/// Sample points a shard keeps for seeding, per mix.
const SAMPLE_PER_SHARD: usize = 256;

/// Lloyd rounds when seeding from sample points.
const SEED_ROUNDS: usize = 20;

/// k-means++ starts per clustering of the sample points (the best is kept).
const RESTARTS: usize = 3;

/// Longest segment name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// The width of a point for a model of width `d`: `d` when the state has no weight (its
/// half would always be zero), else `2·d`.
pub fn point_dim(d: usize, state_weight: f32) -> usize {
    if state_weight > 0.0 {
        2 * d
    } else {
        d
    }
}

/// Writes the point of a user with personal weights `w` and state `s` into `out`
/// (`point_dim` floats): `[ŵ ; α·ŝ]`, normalized (`ŵ` alone when `α = 0`). False (and `out`
/// unspecified) when `w` is still zero: a user with no taste learned yet has no segment.
pub fn embed(w: &[f32], s: &[f32], state_weight: f32, out: &mut [f32]) -> bool {
    let d = w.len();
    debug_assert_eq!(out.len(), point_dim(d, state_weight));
    let wn = crate::model::math::norm(w);
    if wn <= 1e-12 || !wn.is_finite() {
        return false;
    }
    if out.len() == d {
        out.iter_mut().zip(w).for_each(|(o, x)| *o = x / wn);
        return true;
    }
    let sn = crate::model::math::norm(s);
    let sf = if sn > 1e-12 && sn.is_finite() {
        state_weight / sn
    } else {
        0.0
    };
    for (o, x) in out[..d].iter_mut().zip(w) {
        *o = x / wn;
    }
    for (o, x) in out[d..].iter_mut().zip(s) {
        *o = x * sf;
    }
    let total = (1.0
        + if sf > 0.0 {
            state_weight * state_weight
        } else {
            0.0
        })
    .sqrt();
    out.iter_mut().for_each(|x| *x /= total);
    true
}

fn distance2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The centroids at one moment, with their ids and names: what a shard reads.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Centroids {
    /// Width of a point (`point_dim`).
    dim: usize,
    /// Stable ids, one per centroid.
    ids: Vec<u32>,
    /// Operator names, one per centroid.
    names: Vec<Option<Arc<str>>>,
    /// `k × dim` coordinates, centroid after centroid.
    vectors: Vec<f32>,
    /// Points each centroid stands for (capped at `memory`).
    weights: Vec<f64>,
    /// Bumped by every change (a shard takes a newer snapshot at its next tick).
    version: u64,
}

impl Centroids {
    /// No centroids yet, for points of width `dim`.
    pub fn empty(dim: usize) -> Centroids {
        Centroids {
            dim,
            ..Centroids::default()
        }
    }

    /// How many centroids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none yet.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The point width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The id of the centroid in slot `i`.
    pub fn id(&self, i: usize) -> u32 {
        self.ids[i]
    }

    /// The name of the centroid in slot `i`, if an operator gave one.
    pub fn name(&self, i: usize) -> Option<&Arc<str>> {
        self.names[i].as_ref()
    }

    /// The coordinates of the centroid in slot `i`.
    pub fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    /// Points the centroid in slot `i` stands for (capped at `memory`).
    pub fn weight(&self, i: usize) -> f64 {
        self.weights[i]
    }

    /// The version (bumped by every update).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The slot of the centroid nearest `point`, if there is any.
    pub fn nearest(&self, point: &[f32]) -> Option<usize> {
        if point.len() != self.dim {
            return None;
        }
        (0..self.len())
            .map(|i| (i, distance2(self.vector(i), point)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }

    /// The slot of the segment `label` names: its name, or its id in decimal.
    pub fn find(&self, label: &str) -> Option<usize> {
        (0..self.len())
            .find(|&i| self.names[i].as_deref() == Some(label))
            .or_else(|| {
                let id: u32 = label.parse().ok()?;
                self.ids.iter().position(|&x| x == id)
            })
    }

    /// The slot of segment id `id`.
    pub fn slot_of(&self, id: u32) -> Option<usize> {
        self.ids.iter().position(|&x| x == id)
    }

    /// Names segment `id` `name` and takes the name from any other; false (and nothing
    /// changed) if no centroid has the id.
    fn rename(&mut self, id: u32, name: &Arc<str>) -> bool {
        let Some(slot) = self.slot_of(id) else {
            return false;
        };
        for n in &mut self.names {
            if n.as_ref() == Some(name) {
                *n = None;
            }
        }
        self.names[slot] = Some(name.clone());
        true
    }

    fn push(&mut self, id: u32, name: Option<Arc<str>>, vector: &[f32], weight: f64) {
        self.ids.push(id);
        self.names.push(name);
        self.vectors.extend_from_slice(vector);
        self.weights.push(weight);
    }
}

/// What one shard gathered since its last mix: per centroid slot, the sum and count of the
/// points assigned to it, and while there are no centroids, sample points for seeding.
#[derive(Clone, Debug, Default)]
pub struct Accumulator {
    dim: usize,
    sums: Vec<f32>,
    counts: Vec<u32>,
    /// Sample points (a ring of the latest `SAMPLE_PER_SHARD`), only while seeding.
    samples: Vec<f32>,
    next_sample: usize,
}

impl Accumulator {
    /// An empty accumulator for points of width `dim`.
    pub fn new(dim: usize) -> Accumulator {
        Accumulator {
            dim,
            ..Accumulator::default()
        }
    }

    /// Adds `point`, assigned to slot `slot` of `centroids` (`None`: there are no centroids
    /// yet, so it is kept as a sample point for seeding: the latest `SAMPLE_PER_SHARD`).
    pub fn add(&mut self, centroids: &Centroids, slot: Option<usize>, point: &[f32]) {
        let d = self.dim;
        if let Some(i) = slot {
            // Slots keep their centroid across updates (another shard's push, a new name):
            // only a set of another length starts the sums over.
            if self.counts.len() != centroids.len() {
                self.reset(centroids);
            }
            let sum = &mut self.sums[i * d..(i + 1) * d];
            sum.iter_mut().zip(point).for_each(|(s, x)| *s += x);
            self.counts[i] += 1;
        }
        if slot.is_some() {
            return;
        }
        if self.samples.len() / d < SAMPLE_PER_SHARD {
            self.samples.extend_from_slice(point);
        } else {
            let at = self.next_sample % SAMPLE_PER_SHARD;
            self.samples[at * d..(at + 1) * d].copy_from_slice(point);
        }
        self.next_sample += 1;
    }

    fn reset(&mut self, centroids: &Centroids) {
        self.sums.clear();
        self.sums.resize(centroids.len() * self.dim, 0.0);
        self.counts.clear();
        self.counts.resize(centroids.len(), 0);
    }

    /// Forgets everything gathered (a replay's points were counted by the run that logged
    /// them).
    pub fn clear(&mut self) {
        self.sums.iter_mut().for_each(|s| *s = 0.0);
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.samples.clear();
        self.next_sample = 0;
    }

    /// Whether there is nothing to hand over.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.counts.iter().all(|&c| c == 0)
    }
}

/// Why a segment could not be named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    /// No segment has that id or name.
    Unknown,
    /// Another segment already has that name.
    Taken,
    /// The name is empty, too long, or all digits (it would read as an id).
    Bad,
}

/// The master copy of the centroids, shared by every shard (one mutex, taken once per
/// shard per `segments.update_interval_ms`, for O(k·2d) work).
pub struct SegmentMaster {
    state: Mutex<MasterState>,
    /// The centroids' version, readable without the lock: a shard whose snapshot is older
    /// takes the new one at its next tick even when its own push is not due (a new name).
    version: AtomicU64,
}

struct MasterState {
    k: usize,
    memory: f64,
    centroids: Arc<Centroids>,
    next_id: u32,
    /// Sample points for seeding, `dim` floats each.
    samples: Vec<f32>,
    /// Centroids restored from a store whose `k` differs: the new ones inherit their names.
    previous: Option<Centroids>,
    /// Samples taken so far (the ring's cursor).
    next_sample: usize,
    /// Names restored for ids no centroid has yet (`restore_name`), given when one gets it.
    pending_names: Vec<(u32, Arc<str>)>,
    rng: Rng,
}

/// What a checkpoint stores of the segments: the centroids (with ids and names) and the next
/// id.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedSegments {
    /// The centroids.
    pub centroids: Centroids,
    /// The next id to give.
    pub next_id: u32,
}

impl SegmentMaster {
    /// `k` segments of points of width `dim`; a centroid stands for at most `memory` points.
    pub fn new(k: usize, dim: usize, memory: f64, seed: u64) -> SegmentMaster {
        assert!(k <= MAX_SEGMENTS, "segments.k is validated");
        SegmentMaster {
            state: Mutex::new(MasterState {
                k,
                memory: memory.max(1.0),
                centroids: Arc::new(Centroids::empty(dim)),
                next_id: 1,
                samples: Vec::new(),
                previous: None,
                next_sample: 0,
                pending_names: Vec::new(),
                rng: Rng::new(seed ^ 0x5e67_3e47),
            }),
            version: AtomicU64::new(0),
        }
    }

    /// The current centroids' version (no lock).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn publish(&self, st: &MasterState) {
        self.version.store(st.centroids.version, Ordering::Release);
    }

    /// The current centroids.
    pub fn snapshot(&self) -> Arc<Centroids> {
        self.state.lock().centroids.clone()
    }

    /// Folds one shard's sums (or sample points) into the centroids, empties `acc`, and
    /// returns the current centroids.
    pub fn push(&self, acc: &mut Accumulator) -> Arc<Centroids> {
        let mut st = self.state.lock();
        if !acc.is_empty() {
            st.fold(acc);
        }
        acc.clear();
        self.publish(&st);
        st.centroids.clone()
    }

    /// Names the segment `label` (an id, or its current name) `name`; returns its id.
    pub fn name(&self, label: &str, name: &str) -> Result<u32, NameError> {
        let mut st = self.state.lock();
        let id = st.check_name(label, name)?;
        st.set_name(id, name.into());
        self.publish(&st);
        Ok(id)
    }

    /// The id `name(label, name)` would name, changing nothing.
    pub fn check_name(&self, label: &str, name: &str) -> Result<u32, NameError> {
        self.state.lock().check_name(label, name)
    }

    /// Gives segment `id` the name `name` as a log of names has it: the name leaves any other
    /// segment (the log's order decides), and a segment not there yet (no centroids restored,
    /// or kept aside for a rebuild with another `k`) takes it when it gets that id.
    pub fn restore_name(&self, id: u32, name: &str) {
        let mut st = self.state.lock();
        let name: Arc<str> = name.into();
        st.pending_names.retain(|(i, n)| *i != id && *n != name);
        let mut found = st.set_name(id, name.clone());
        if let Some(previous) = &mut st.previous {
            found |= previous.rename(id, &name);
        }
        if !found {
            st.pending_names.push((id, name));
        }
        self.publish(&st);
    }

    /// What a checkpoint stores.
    pub fn saved(&self) -> SavedSegments {
        let st = self.state.lock();
        SavedSegments {
            centroids: (*st.centroids).clone(),
            next_id: st.next_id,
        }
    }

    /// Takes a stored state. Centroids of another width are dropped (the model's width
    /// changed); with another `k` they are kept aside, and the centroids seeded next inherit
    /// their ids and names by nearness.
    pub fn restore(&self, saved: SavedSegments) {
        let mut st = self.state.lock();
        st.next_id = st.next_id.max(saved.next_id);
        if saved.centroids.dim != st.centroids.dim {
            return;
        }
        let mut c = saved.centroids;
        give_pending(&mut st.pending_names, &mut c);
        if c.len() == st.k {
            c.version += 1;
            st.centroids = Arc::new(c);
            self.publish(&st);
        } else {
            st.previous = Some(c);
        }
    }
}

impl MasterState {
    fn check_name(&self, label: &str, name: &str) -> Result<u32, NameError> {
        let bad = name.is_empty()
            || name.len() > MAX_NAME_BYTES
            || name.bytes().all(|b| b.is_ascii_digit());
        if bad {
            return Err(NameError::Bad);
        }
        let slot = self.centroids.find(label).ok_or(NameError::Unknown)?;
        match self.centroids.find(name) {
            Some(other) if other != slot => Err(NameError::Taken),
            _ => Ok(self.centroids.ids[slot]),
        }
    }

    /// Names segment `id` in a new version of the centroids; false if none has the id.
    fn set_name(&mut self, id: u32, name: Arc<str>) -> bool {
        if self.centroids.slot_of(id).is_none() {
            return false;
        }
        let mut next = (*self.centroids).clone();
        next.rename(id, &name);
        next.version += 1;
        self.centroids = Arc::new(next);
        true
    }

    fn fold(&mut self, acc: &mut Accumulator) {
        let d = self.centroids.dim;
        self.keep_samples(&acc.samples);
        if self.centroids.len() < self.k {
            if self.samples.len() / d >= self.k * 16 {
                self.seed();
            }
            return;
        }

        // Slots keep their centroid across updates, so sums taken against an older version
        // still belong where they point; only a rebuilt set (another length) drops them.
        if acc.counts.len() != self.centroids.len() {
            return;
        }
        let mut next = (*self.centroids).clone();
        for (i, &count) in acc.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let n = next.weights[i];
            let m = count as f64;
            let sum = &acc.sums[i * d..(i + 1) * d];
            let c = &mut next.vectors[i * d..(i + 1) * d];
            for (x, s) in c.iter_mut().zip(sum) {
                *x = ((n * *x as f64 + *s as f64) / (n + m)) as f32;
            }
            next.weights[i] = (n + m).min(self.memory);
        }
        next.version += 1;
        self.centroids = Arc::new(next);
    }

    /// Keeps the latest sample points, at most `k·64` (a ring).
    fn keep_samples(&mut self, new: &[f32]) {
        let d = self.centroids.dim;
        let cap = self.k * 64 * d;
        for p in new.chunks_exact(d) {
            if self.samples.len() < cap {
                self.samples.extend_from_slice(p);
            } else {
                let at = (self.next_sample % (self.k * 64)) * d;
                self.samples[at..at + d].copy_from_slice(p);
            }
            self.next_sample += 1;
        }
    }

    /// Clusters the sample points afresh (k-means++ and Lloyd, best of a few starts);
    /// `(centres, sizes, inertia)`.
    fn cluster_samples(&mut self) -> (Vec<f32>, Vec<usize>, f64) {
        let d = self.centroids.dim;
        let points: Vec<&[f32]> = self.samples.chunks_exact(d).collect();
        let mut best: Option<(Vec<f32>, Vec<usize>, f64)> = None;
        for _ in 0..RESTARTS {
            let mut centres = kmeans_pp(&points, self.k, &mut self.rng);
            let mut sizes = Vec::new();
            for _ in 0..SEED_ROUNDS {
                sizes = lloyd(&points, &mut centres, d);
            }
            let inertia = inertia(&points, &centres, d);
            if best.as_ref().map_or(true, |b| inertia < b.2) {
                best = Some((centres, sizes, inertia));
            }
        }
        best.expect("RESTARTS > 0")
    }

    /// Seeds `k` centroids from the sample points.
    fn seed(&mut self) {
        let (centres, sizes, _) = self.cluster_samples();
        self.install(&centres, &sizes);
    }

    /// Makes `centres` the centroids. With a previous set, each old centroid's slot, id and
    /// name go to the new centre nearest it (closest pairs first); the rest get new ids.
    fn install(&mut self, centres: &[f32], sizes: &[usize]) {
        let d = self.centroids.dim;
        let k = centres.len() / d;
        let previous = self.previous.take();
        let mut order: Vec<Option<usize>> = vec![None; k];
        let mut inherit: Vec<Option<(u32, Option<Arc<str>>)>> = vec![None; k];
        if let Some(p) = &previous {
            let mut pairs: Vec<(f32, usize, usize)> = (0..p.len())
                .flat_map(|j| (0..k).map(move |i| (j, i)))
                .map(|(j, i)| (distance2(p.vector(j), &centres[i * d..(i + 1) * d]), j, i))
                .collect();
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut old_taken = vec![false; p.len()];
            for (_, j, i) in pairs {
                if old_taken[j] || inherit[i].is_some() {
                    continue;
                }
                old_taken[j] = true;
                inherit[i] = Some((p.id(j), p.name(j).cloned()));
                order[i] = Some(j);
            }
        }
        // New centres in the old slots they inherit (so a shard's slots keep their segment),
        // the others after.
        let mut slots: Vec<usize> = (0..k).collect();
        slots.sort_by_key(|&i| order[i].unwrap_or(usize::MAX));
        let mut next = Centroids::empty(d);
        next.version = self.centroids.version + 1;
        for i in slots {
            let (id, name) = inherit[i].take().unwrap_or_else(|| {
                self.next_id += 1;
                (self.next_id - 1, None)
            });
            let weight = (sizes[i].max(1) as f64).min(self.memory);
            next.push(id, name, &centres[i * d..(i + 1) * d], weight);
        }
        give_pending(&mut self.pending_names, &mut next);
        self.centroids = Arc::new(next);
    }
}

/// Gives each pending name whose id `c` has to that centroid; keeps the others pending.
fn give_pending(pending: &mut Vec<(u32, Arc<str>)>, c: &mut Centroids) {
    pending.retain(|(id, name)| !c.rename(*id, name));
}

/// Sum of squared distances of `points` to their nearest centre.
fn inertia(points: &[&[f32]], centres: &[f32], d: usize) -> f64 {
    let k = centres.len() / d;
    points
        .iter()
        .map(|p| {
            (0..k)
                .map(|i| distance2(&centres[i * d..(i + 1) * d], p))
                .fold(f32::INFINITY, f32::min) as f64
        })
        .sum()
}

/// k-means++ seeding: the first centre uniformly, each next one with probability
/// proportional to its squared distance from the nearest centre so far.
fn kmeans_pp(points: &[&[f32]], k: usize, rng: &mut Rng) -> Vec<f32> {
    let mut centres: Vec<f32> = Vec::with_capacity(k * points[0].len());
    centres.extend_from_slice(points[rng.below(points.len())]);
    let mut nearest: Vec<f32> = points
        .iter()
        .map(|p| distance2(p, &centres[..p.len()]))
        .collect();
    while centres.len() / points[0].len() < k {
        let total: f64 = nearest.iter().map(|&x| x as f64).sum();
        let pick = if total <= 0.0 {
            rng.below(points.len())
        } else {
            let mut target = rng.next_f64() * total;
            let mut pick = points.len() - 1;
            for (i, &x) in nearest.iter().enumerate() {
                target -= x as f64;
                if target < 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        };
        let chosen = points[pick];
        centres.extend_from_slice(chosen);
        for (n, p) in nearest.iter_mut().zip(points) {
            *n = n.min(distance2(p, chosen));
        }
    }
    centres
}

/// One Lloyd round: assigns every point to its nearest centre and moves each centre to its
/// points' mean (a centre with none stays). Returns the sizes.
fn lloyd(points: &[&[f32]], centres: &mut [f32], d: usize) -> Vec<usize> {
    let k = centres.len() / d;
    let mut sums = vec![0.0f64; k * d];
    let mut sizes = vec![0usize; k];
    for p in points {
        let best = (0..k)
            .map(|i| (i, distance2(&centres[i * d..(i + 1) * d], p)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0, |(i, _)| i);
        sizes[best] += 1;
        for (s, x) in sums[best * d..(best + 1) * d].iter_mut().zip(p.iter()) {
            *s += *x as f64;
        }
    }
    for i in 0..k {
        if sizes[i] > 0 {
            for j in 0..d {
                centres[i * d + j] = (sums[i * d + j] / sizes[i] as f64) as f32;
            }
        }
    }
    sizes
}

/// Batch k-means of `points` (k-means++ seeding from `seed`, then `rounds` Lloyd rounds):
/// each point's cluster. The reference the streaming version is measured against.
pub fn batch_kmeans(points: &[&[f32]], k: usize, seed: u64, rounds: usize) -> Vec<usize> {
    if points.is_empty() {
        return Vec::new();
    }
    let d = points[0].len();
    let mut centres = kmeans_pp(points, k, &mut Rng::new(seed));
    for _ in 0..rounds {
        lloyd(points, &mut centres, d);
    }
    points
        .iter()
        .map(|p| {
            (0..k)
                .map(|i| (i, distance2(&centres[i * d..(i + 1) * d], p)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(i, _)| i)
        })
        .collect()
}

/// The adjusted Rand index of two labelings of the same points (Hubert and Arabie, 1985):
/// 1 for identical partitions (up to renaming), about 0 for independent ones.
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> f64 {
    assert_eq!(a.len(), b.len());
    let ka = a.iter().max().map_or(0, |m| m + 1);
    let kb = b.iter().max().map_or(0, |m| m + 1);
    let mut table = vec![0u64; ka * kb];
    for (&x, &y) in a.iter().zip(b) {
        table[x * kb + y] += 1;
    }
    let pairs = |n: u64| (n * n.saturating_sub(1)) as f64 / 2.0;
    let index: f64 = table.iter().map(|&n| pairs(n)).sum();
    let rows: f64 = (0..ka)
        .map(|x| pairs(table[x * kb..(x + 1) * kb].iter().sum()))
        .sum();
    let cols: f64 = (0..kb)
        .map(|y| pairs((0..ka).map(|x| table[x * kb + y]).sum()))
        .sum();
    let total = pairs(a.len() as u64);
    if total == 0.0 {
        return 1.0;
    }
    let expected = rows * cols / total;
    let max = (rows + cols) / 2.0;
    if max == expected {
        return 1.0;
    }
    (index - expected) / (max - expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(rng: &mut Rng, centre: &[f32], sd: f64) -> Vec<f32> {
        let mut p: Vec<f32> = centre
            .iter()
            .map(|c| c + (rng.normal() * sd) as f32)
            .collect();
        let n = crate::model::math::norm(&p);
        p.iter_mut().for_each(|x| *x /= n);
        p
    }

    #[test]
    fn adjusted_rand_index_is_one_for_a_renaming_and_near_zero_for_noise() {
        assert_eq!(adjusted_rand_index(&[0, 0, 1, 1, 2], &[2, 2, 0, 0, 1]), 1.0);
        let mut rng = Rng::new(3);
        let a: Vec<usize> = (0..4000).map(|_| rng.below(4)).collect();
        let b: Vec<usize> = (0..4000).map(|_| rng.below(4)).collect();
        assert!(adjusted_rand_index(&a, &b).abs() < 0.02);
    }

    #[test]
    fn mini_batches_find_planted_blobs_and_keep_ids_and_names() {
        let (k, d) = (4, 6);
        let mut rng = Rng::new(11);
        let centres: Vec<Vec<f32>> = (0..k).map(|_| blob(&mut rng, &[0.0; 6], 1.0)).collect();
        let master = SegmentMaster::new(k, d, 500.0, 7);
        let mut acc = Accumulator::new(d);
        let mut snapshot = master.snapshot();
        let mut named = None;
        for round in 0..200 {
            for _ in 0..50 {
                let g = rng.below(k);
                let p = blob(&mut rng, &centres[g], 0.1);
                acc.add(&snapshot, snapshot.nearest(&p), &p);
            }
            snapshot = master.push(&mut acc);
            if round == 50 {
                let slot = snapshot.nearest(&centres[0]).unwrap();
                let id = master
                    .name(&snapshot.id(slot).to_string(), "first")
                    .unwrap();
                named = Some(id);
                snapshot = master.snapshot();
            }
        }
        assert_eq!(snapshot.len(), k);
        let (mut truth, mut found) = (Vec::new(), Vec::new());
        for _ in 0..400 {
            let g = rng.below(k);
            truth.push(g);
            found.push(snapshot.nearest(&blob(&mut rng, &centres[g], 0.1)).unwrap());
        }
        assert!(adjusted_rand_index(&truth, &found) > 0.9);
        let slot = snapshot.find("first").unwrap();
        assert_eq!(Some(snapshot.id(slot)), named);
        assert_eq!(snapshot.nearest(&centres[0]), Some(slot));
        assert_eq!(master.name("first", "1"), Err(NameError::Bad));
        assert_eq!(master.name("no-such", "x"), Err(NameError::Unknown));
    }

    #[test]
    fn a_shards_sums_survive_other_shards_updates_between_its_pushes() {
        let master = SegmentMaster::new(2, 2, 1e6, 1);
        let mut seeding = Accumulator::new(2);
        for i in 0..64 {
            let p = if i % 2 == 0 { [1.0, 0.0] } else { [0.0, 1.0] };
            seeding.add(&master.snapshot(), None, &p);
        }
        let seeded = master.push(&mut seeding);
        let east = seeded.nearest(&[1.0, 0.0]).unwrap();
        let (mut a, mut b) = (Accumulator::new(2), Accumulator::new(2));
        b.add(&seeded, Some(east), &[1.0, 0.0]);
        // Shard `a` pushes; `b` takes the newer snapshot (as at a tick not due) and goes on.
        a.add(&seeded, Some(east), &[1.0, 0.0]);
        master.push(&mut a);
        let newer = master.snapshot();
        assert!(newer.version() > seeded.version());
        b.add(&newer, Some(east), &[1.0, 0.0]);
        let after = master.push(&mut b);
        assert_eq!(after.weight(east), seeded.weight(east) + 3.0);
    }

    #[test]
    fn a_restored_name_waits_for_its_id_and_takes_the_name_from_another() {
        let d = 2;
        let master = SegmentMaster::new(2, d, 100.0, 1);
        // No centroids yet: the names wait.
        master.restore_name(1, "east");
        master.restore_name(2, "west");
        master.restore_name(2, "north"); // a rename of 2, later in the log
        let mut acc = Accumulator::new(d);
        let empty = master.snapshot();
        for i in 0..64 {
            let p = if i % 2 == 0 { [1.0, 0.0] } else { [0.0, 1.0] };
            acc.add(&empty, None, &p);
        }
        let c = master.push(&mut acc);
        assert_eq!(c.len(), 2);
        let name_of = |c: &Centroids, id| c.name(c.slot_of(id).unwrap()).map(|n| n.to_string());
        assert_eq!(name_of(&c, 1).as_deref(), Some("east"));
        assert_eq!(name_of(&c, 2).as_deref(), Some("north"));
        // A later record gives "east" to 2: 1 loses it (the log's order decides).
        let version = master.version();
        master.restore_name(2, "east");
        let c = master.snapshot();
        assert!(master.version() > version, "shards take the new names");
        assert_eq!(
            (name_of(&c, 1), name_of(&c, 2).as_deref()),
            (None, Some("east"))
        );
        assert_eq!(master.check_name("east", "x"), Ok(2));
        assert_eq!(master.check_name("1", "east"), Err(NameError::Taken));
    }

    #[test]
    fn a_rebuilt_set_inherits_names_by_nearness() {
        let d = 2;
        let master = SegmentMaster::new(2, d, 100.0, 1);
        let mut acc = Accumulator::new(d);
        let empty = master.snapshot();
        for i in 0..64 {
            let p = if i % 2 == 0 { [1.0, 0.0] } else { [0.0, 1.0] };
            acc.add(&empty, None, &p);
        }
        let c = master.push(&mut acc);
        let east = c.nearest(&[1.0, 0.0]).unwrap();
        master.name(&c.id(east).to_string(), "east").unwrap();
        let saved = master.saved();
        // A restart with k = 3: the new centroid nearest the old `east` keeps its id and name.
        let bigger = SegmentMaster::new(3, d, 100.0, 2);
        bigger.restore(saved.clone());
        let mut acc = Accumulator::new(d);
        for i in 0..96 {
            let p = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]][i % 3];
            acc.add(&bigger.snapshot(), None, &p);
        }
        let c = bigger.push(&mut acc);
        assert_eq!(c.len(), 3);
        let east_again = c.find("east").unwrap();
        assert_eq!(c.nearest(&[1.0, 0.0]), Some(east_again));
        assert_eq!(c.id(east_again), saved.centroids.id(east));
    }
}
