//! The shard's side of live segments (issue 14, item 4; `docs/segments.md`): the centroid
//! snapshot it reads, the sums it gathers for the shared centroids, and what `stats` reports
//! per segment (the top items users of a segment engaged with, their mean features).
//!
//! Every user the shard touches (an event, a decision) is assigned to its nearest centroid
//! and added to that centroid's sum: O(k·2d), no allocation. At a tick, at most once per
//! `segments.update_interval_ms`, the sums go to the `SegmentMaster` and the shard takes back
//! its snapshot (one `Arc`). **Nothing here changes learned or logged state**: the shard
//! reads a user's segment where it is needed; what this module keeps (assignments for sizes,
//! top items, means) is a read-side summary that a replay does not rebuild exactly, as
//! counters are not. A replayed tick forgets the sums, which the logged run already shared.

use std::sync::Arc;

use crate::actor::features::{Feature, FeatureView, Value};
use crate::actor::UserActor;
use crate::api::{SegmentLabel, SegmentReport};
use crate::config::{SegmentSource, SegmentsConfig};
use crate::model::items::ItemTable;
use crate::model::math::norm;
use crate::model::segments::{embed, point_dim, Accumulator, Centroids, SegmentMaster};

/// The features `stats` averages per segment.
pub const MEAN_FEATURES: [Feature; 6] = [
    Feature::ClicksPerHour,
    Feature::EngagementPerHour,
    Feature::Events5m,
    Feature::Sessions,
    Feature::Conversions,
    Feature::Sentiment,
];

/// Items kept per segment for its top items (Space-Saving).
const TOP_ITEMS: usize = 16;
/// Half-life of the top items' counts (event time), ms.
const TOP_HALF_LIFE_MS: f64 = 3_600_000.0;
/// Every how many touches the mean features are sampled (each read costs a few `exp`).
const MEAN_EVERY: u64 = 8;
/// Sample weight past which the means' sums are halved (a moving mean of the last ~10k).
const MEAN_WEIGHT_CAP: f64 = 10_000.0;

/// One segment's engaged items: `(item key, count, count's time)`, counts halving per hour.
#[derive(Clone, Debug, Default)]
struct TopItems(Vec<(u64, f64, u64)>);

impl TopItems {
    fn decayed(count: f64, at_ms: u64, now_ms: u64) -> f64 {
        count * (-(now_ms.saturating_sub(at_ms) as f64) / TOP_HALF_LIFE_MS).exp2()
    }

    /// Counts one engagement with `key` at `ts_ms`; a full list replaces its smallest
    /// count, whose count the newcomer inherits (Space-Saving's overestimate).
    fn add(&mut self, key: u64, ts_ms: u64) {
        let now = |&(_, c, at): &(u64, f64, u64)| Self::decayed(c, at, ts_ms);
        if let Some(e) = self.0.iter_mut().find(|e| e.0 == key) {
            *e = (key, now(e) + 1.0, ts_ms.max(e.2));
            return;
        }
        if self.0.len() < TOP_ITEMS {
            self.0.push((key, 1.0, ts_ms));
            return;
        }
        let (i, least) = (self.0.iter().map(now).enumerate())
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("the list is full");
        self.0[i] = (key, least + 1.0, ts_ms);
    }
}

/// One segment's sampled feature sums.
#[derive(Clone, Debug, Default)]
struct Means {
    weight: f64,
    sums: [f64; MEAN_FEATURES.len()],
    counts: [f64; MEAN_FEATURES.len()],
}

/// A shard's segment side.
pub(super) struct Segmented {
    master: Arc<SegmentMaster>,
    centroids: Arc<Centroids>,
    acc: Accumulator,
    /// Scratch for a user's point, and for its taste vector.
    point: Vec<f32>,
    taste: Vec<f32>,
    source: SegmentSource,
    state_weight: f32,
    min_steps: u32,
    interval_ms: u64,
    next_push_ms: u64,
    top: Vec<TopItems>,
    means: Vec<Means>,
    touches: u64,
}

impl Segmented {
    /// The segment side of a shard whose model has width `dim`.
    pub fn new(master: Arc<SegmentMaster>, cfg: &SegmentsConfig, dim: usize) -> Segmented {
        Segmented {
            centroids: master.snapshot(),
            master,
            acc: Accumulator::new(point_dim(dim, cfg.state_weight)),
            point: vec![0.0; point_dim(dim, cfg.state_weight)],
            taste: vec![0.0; dim],
            source: cfg.source,
            state_weight: cfg.state_weight,
            min_steps: cfg.min_steps,
            interval_ms: cfg.update_interval_ms,
            next_push_ms: 0,
            top: Vec::new(),
            means: Vec::new(),
            touches: 0,
        }
    }

    /// Writes `user`'s point into the scratch; false when it has none yet. `items` gives
    /// the engaged items' vectors.
    fn embed(&mut self, user: &UserActor, items: &ItemTable) -> bool {
        if user.steps < self.min_steps {
            return false;
        }
        let taste = match self.source {
            SegmentSource::Weights => user.weights(),
            source => {
                self.taste.iter_mut().for_each(|x| *x = 0.0);
                for &key in user.recent.as_slice() {
                    let Some(row) = items.row(key) else { continue };
                    let x = match source {
                        SegmentSource::Engaged => items.x(row),
                        _ => match items.features(row) {
                            Some(f) => &f.phi[..],
                            None => continue,
                        },
                    };
                    self.taste.iter_mut().zip(x).for_each(|(t, x)| *t += x);
                }
                if source == SegmentSource::Blend {
                    let (tn, wn) = (norm(&self.taste), norm(user.weights()));
                    if tn > 0.0 && wn > 0.0 {
                        let w = user.weights();
                        self.taste
                            .iter_mut()
                            .zip(w)
                            .for_each(|(t, w)| *t = *t / tn + w / wn);
                    }
                }
                &self.taste
            }
        };
        embed(taste, user.state(), self.state_weight, &mut self.point)
    }

    /// Takes the master's centroids while this shard has none and the master has (restored
    /// from the store after the shard was built, or seeded by another shard): one atomic
    /// load, only while empty.
    fn refresh_if_empty(&mut self) {
        if self.centroids.is_empty() && self.master.version() != self.centroids.version() {
            self.centroids = self.master.snapshot();
        }
    }

    /// The slot of `user`'s segment now, if it has one.
    pub fn slot(&mut self, user: &UserActor, items: &ItemTable) -> Option<usize> {
        self.refresh_if_empty();
        if self.centroids.is_empty() || !self.embed(user, items) {
            return None;
        }
        self.centroids.nearest(&self.point)
    }

    /// `user`'s segment now: its id and name.
    pub fn label(&mut self, user: &UserActor, items: &ItemTable) -> Option<SegmentLabel> {
        let slot = self.slot(user, items)?;
        Some(self.label_of(slot))
    }

    /// The id and name of the segment in slot `slot`.
    pub fn label_of(&self, slot: usize) -> SegmentLabel {
        SegmentLabel {
            id: self.centroids.id(slot),
            name: self.centroids.name(slot).cloned(),
        }
    }

    /// Assigns `user` (just changed at `ts_ms`) to its nearest centroid (`known`: the slot
    /// just found for it, whose search is not repeated) and adds its point to the centroid's
    /// sum; counts `engaged` (an item it engaged with) for the segment's top items, and now
    /// and then samples its features. Returns the slot.
    pub fn observe<'a>(
        &mut self,
        (user, items): (&UserActor, &ItemTable),
        (engaged, known): (Option<u64>, Option<usize>),
        ts_ms: u64,
        view: impl FnOnce() -> FeatureView<'a>,
    ) -> Option<usize> {
        self.refresh_if_empty();
        if !self.embed(user, items) {
            return None;
        }
        let slot = match known {
            Some(slot) if slot < self.centroids.len() => Some(slot),
            _ => self.centroids.nearest(&self.point),
        };
        self.acc.add(&self.centroids, slot, &self.point);
        let slot = slot?;
        let k = self.centroids.len();
        if self.top.len() != k {
            self.top.resize(k, TopItems::default());
            self.means.resize(k, Means::default());
        }
        if let Some(key) = engaged {
            self.top[slot].add(key, ts_ms);
        }
        self.touches += 1;
        if self.touches % MEAN_EVERY == 0 {
            let view = view();
            let m = &mut self.means[slot];
            if m.weight >= MEAN_WEIGHT_CAP {
                m.weight /= 2.0;
                m.sums.iter_mut().for_each(|s| *s /= 2.0);
                m.counts.iter_mut().for_each(|s| *s /= 2.0);
            }
            m.weight += 1.0;
            for (i, f) in MEAN_FEATURES.into_iter().enumerate() {
                if let Value::Num(x) = view.get(f) {
                    m.sums[i] += x;
                    m.counts[i] += 1.0;
                }
            }
        }
        Some(slot)
    }

    /// The timer: hands the sums to the master when due (live) or forgets them (replayed).
    /// True when the centroids were rebuilt (slots now mean other segments).
    pub fn tick(&mut self, now_ms: u64, replayed: bool) -> bool {
        if replayed {
            self.acc.clear();
            return false;
        }
        let before = self.centroids.len();
        if now_ms >= self.next_push_ms {
            self.next_push_ms = now_ms + self.interval_ms;
            self.centroids = self.master.push(&mut self.acc);
        } else if self.master.version() != self.centroids.version() {
            // Not due; but a new name (or another shard's update) is taken at once.
            self.centroids = self.master.snapshot();
        }
        let rebuilt = before != self.centroids.len();
        if rebuilt {
            self.top.clear();
            self.means.clear();
        }
        rebuilt
    }

    /// The shared centroids and names, for a checkpoint.
    pub fn saved(&self) -> crate::model::segments::SavedSegments {
        self.master.saved()
    }

    /// Forgets the sums gathered (after a replay: the logged run shared them).
    pub fn forget_sums(&mut self) {
        self.acc.clear();
    }

    /// This shard's part of every segment's report, at event time `now_ms`: `sizes` are the
    /// resident users last assigned to each slot.
    pub fn report(&self, sizes: &[u32], items: &ItemTable, now_ms: u64) -> Vec<SegmentReport> {
        let c = &self.centroids;
        (0..c.len())
            .map(|slot| {
                let mut top: Vec<(String, f64)> = self.top.get(slot).map_or(Vec::new(), |t| {
                    (t.0.iter())
                        .filter_map(|&(key, count, at)| {
                            let f = items.row(key).and_then(|r| items.features(r))?;
                            let id = f.id.as_str().to_string();
                            Some((id, TopItems::decayed(count, at, now_ms)))
                        })
                        .collect()
                });
                top.sort_by(|a, b| b.1.total_cmp(&a.1));
                let means = self.means.get(slot).cloned().unwrap_or_default();
                SegmentReport {
                    id: c.id(slot),
                    name: c.name(slot).cloned(),
                    size: sizes.get(slot).copied().unwrap_or(0) as u64,
                    weight: c.weight(slot),
                    top_items: top,
                    mean_features: (MEAN_FEATURES.into_iter().enumerate())
                        .map(|(i, f)| {
                            let n = means.counts[i];
                            (f, if n > 0.0 { means.sums[i] / n } else { 0.0 }, n)
                        })
                        .collect(),
                }
            })
            .collect()
    }
}
