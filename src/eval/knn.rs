//! Item-kNN, the collaborative baseline: two items are similar when the same users touched
//! both (cosine over who interacted with what, Sarwar et al. 2001), and a candidate scores the
//! sum of its similarities to everything the user touched, each item keeping only its `k`
//! nearest neighbours (`None`: all of them).
//!
//! Co-occurrence counts are exact and updated with every observation; the neighbour lists are
//! rebuilt from them every `rebuild_every` observations (as a deployed kNN model is rebuilt
//! periodically), which keeps a full-catalog evaluation fast. It sees what nudge sees and
//! nothing else: every observation but `Ignored` counts as an interaction.

use std::collections::HashMap;

use crate::eval::{greedy_first_slot, top_n_by, Observation, Outcome, Policy, Request};

/// Item-kNN over the items it has seen.
pub struct ItemKnn {
    k: Option<usize>,
    rebuild_every: usize,
    index: HashMap<String, usize>,
    /// Interactions per item.
    counts: Vec<f32>,
    /// Co-occurrence counts, row-major over item indices (grown as items appear).
    co: Vec<Vec<f32>>,
    /// Per item: its neighbours' (index, similarity), rebuilt every `rebuild_every`.
    neighbours: Vec<Vec<(usize, f32)>>,
    /// Each user's items, in the order they were touched.
    history: HashMap<String, Vec<usize>>,
    /// Per user: the summed neighbour lists of its first `.2` items, valid for rebuild `.0`.
    scores: HashMap<String, (u64, Vec<f32>, usize)>,
    /// Rebuilds so far.
    epoch: u64,
    since_rebuild: usize,
    /// The vote of a history item `a` items back is weighted `recency^a` (1: all equal).
    recency: f32,
    /// Pairs co-occur only within this many of a user's latest items (`usize::MAX`: all).
    window: usize,
}

impl ItemKnn {
    /// Item-kNN keeping `k` neighbours per item (`None`: all), rebuilt every `rebuild_every`
    /// observations.
    pub fn new(k: Option<usize>, rebuild_every: usize) -> Self {
        ItemKnn {
            k,
            rebuild_every: rebuild_every.max(1),
            index: HashMap::new(),
            counts: Vec::new(),
            co: Vec::new(),
            neighbours: Vec::new(),
            history: HashMap::new(),
            scores: HashMap::new(),
            epoch: 0,
            since_rebuild: 0,
            recency: 1.0,
            window: usize::MAX,
        }
    }

    /// Session-based item-kNN: co-occurrences counted only within a user's last `window`
    /// items, and the user's items voting with weight `recency^a` for the item `a` steps back
    /// (the same signal as nudge's co-occurrence component, without the rest of the model).
    pub fn sequential(recency: f32, window: usize, rebuild_every: usize) -> Self {
        ItemKnn {
            recency,
            window,
            ..ItemKnn::new(None, rebuild_every)
        }
    }

    fn item(&mut self, id: &str) -> usize {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.counts.len();
        self.index.insert(id.to_string(), i);
        self.counts.push(0.0);
        self.co.push(Vec::new());
        self.neighbours.push(Vec::new());
        i
    }

    fn bump(&mut self, a: usize, b: usize) {
        let row = &mut self.co[a];
        if row.len() <= b {
            row.resize(b + 1, 0.0);
        }
        row[b] += 1.0;
    }

    fn rebuild(&mut self) {
        let n = self.counts.len();
        for a in 0..n {
            let row = &self.co[a];
            let mut list: Vec<(usize, f32)> = row
                .iter()
                .enumerate()
                .filter(|&(b, &c)| c > 0.0 && b != a)
                .map(|(b, &c)| (b, c / (self.counts[a] * self.counts[b]).sqrt()))
                .collect();
            if let Some(k) = self.k {
                if list.len() > k {
                    list.select_nth_unstable_by(k - 1, |x, y| y.1.total_cmp(&x.1));
                    list.truncate(k);
                }
            }
            self.neighbours[a] = list;
        }
        self.since_rebuild = 0;
        self.epoch += 1;
    }

    fn scores(&mut self, req: &Request<'_>) -> Vec<f64> {
        let n = self.counts.len();
        let empty = Vec::new();
        let history = self.history.get(req.user).unwrap_or(&empty);
        let cached = self
            .scores
            .entry(req.user.to_string())
            .or_insert_with(|| (u64::MAX, Vec::new(), 0));
        if cached.0 != self.epoch {
            *cached = (self.epoch, vec![0.0; n], 0);
        }
        let (_, acc, upto) = cached;
        acc.resize(n, 0.0);
        // The neighbours of what the user touched vote for the candidates; the sums are
        // kept between requests and extended with what the user touched since.
        for &j in &history[*upto..] {
            if self.recency != 1.0 {
                acc.iter_mut().for_each(|a| *a *= self.recency);
            }
            for &(b, s) in &self.neighbours[j] {
                acc[b] += s;
            }
        }
        *upto = history.len();
        let acc = &*acc;
        req.candidates
            .iter()
            .map(|c| self.index.get(c.as_str()).map_or(0.0, |&i| acc[i] as f64))
            .collect()
    }
}

impl Policy for ItemKnn {
    fn name(&self) -> String {
        if self.recency != 1.0 || self.window != usize::MAX {
            return format!(
                "session item-kNN (recency {}, window {})",
                self.recency, self.window
            );
        }
        match self.k {
            None => "item-kNN (all neighbours)".into(),
            Some(k) => format!("item-kNN (k = {k})"),
        }
    }
    fn place(&mut self, req: &Request<'_>) -> Vec<usize> {
        top_n_by(&self.scores(req), req.n)
    }
    fn first_slot(&mut self, req: &Request<'_>) -> Vec<f64> {
        greedy_first_slot(&self.scores(req))
    }
    fn observe(&mut self, obs: &Observation<'_>) {
        if obs.outcome == Outcome::Ignored {
            return;
        }
        let i = self.item(obs.item);
        let mut history = self.history.remove(obs.user).unwrap_or_default();
        if !history.contains(&i) {
            let from = history.len().saturating_sub(self.window);
            for &j in &history[from..] {
                self.bump(i, j);
                self.bump(j, i);
            }
            self.counts[i] += 1.0;
            history.push(i);
        }
        self.history.insert(obs.user.to_string(), history);
        self.since_rebuild += 1;
        if self.since_rebuild >= self.rebuild_every {
            self.rebuild();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs<'a>(user: &'a str, item: &'a str) -> Observation<'a> {
        Observation {
            user,
            context: &[],
            item,
            outcome: Outcome::Click,
            ts_ms: 0,
            shown: false,
        }
    }

    #[test]
    fn items_touched_by_the_same_users_rank_first() {
        let mut knn = ItemKnn::new(Some(10), 1);
        for u in ["a", "b", "c"] {
            knn.observe(&obs(u, "tent"));
            knn.observe(&obs(u, "stove"));
        }
        knn.observe(&obs("d", "novel"));
        knn.observe(&obs("e", "stove"));
        knn.observe(&obs("e", "novel"));
        knn.observe(&obs("z", "tent"));
        let c = vec!["novel".to_string(), "stove".to_string()];
        let req = Request {
            user: "z",
            context: &[],
            candidates: &c,
            n: 2,
            ts_ms: 0,
        };
        // "stove" shares three users with "tent"; "novel" none.
        assert_eq!(knn.place(&req), vec![1, 0]);
    }
}
