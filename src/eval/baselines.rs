//! The baselines nudge must beat: uniformly random, the caller's order, global popularity,
//! and recency-decayed popularity. They see exactly what nudge sees (the same requests and observations) and
//! nothing about users: popularity is the same for everyone.
//!
//! Popularity comes in two forms: a click-through rate with a Beta(1,1) prior (for workloads
//! with impressions, like the simulation: unseen items start optimistic, so every item gets
//! tried), or a count of interactions (for rating logs, like MovieLens, where there are no
//! impressions: the classic most-popular ranking).

use std::collections::HashMap;

use crate::eval::{greedy_first_slot, top_n_by, Observation, Outcome, Policy, Request};
use crate::rng::Rng;

/// Places uniformly at random.
pub struct RandomPolicy {
    rng: Rng,
}

impl RandomPolicy {
    /// A random policy with its own seeded stream.
    pub fn new(seed: u64) -> Self {
        RandomPolicy {
            rng: Rng::new(seed),
        }
    }
}

impl Policy for RandomPolicy {
    fn name(&self) -> String {
        "random".into()
    }
    fn place(&mut self, req: &Request<'_>) -> Vec<usize> {
        // A partial Fisher–Yates shuffle: the first `n` of a uniform permutation.
        let k = req.candidates.len();
        let mut idx: Vec<usize> = (0..k).collect();
        let n = req.n.min(k);
        for i in 0..n {
            let j = i + self.rng.below(k - i);
            idx.swap(i, j);
        }
        idx.truncate(n);
        idx
    }
    fn first_slot(&mut self, req: &Request<'_>) -> Vec<f64> {
        let k = req.candidates.len() as f64;
        vec![1.0 / k; req.candidates.len()]
    }
    fn observe(&mut self, _obs: &Observation<'_>) {}
}

/// The caller's order: places the first `n` candidates as given, which is what an
/// experiment's `control` arm serves. On the simulator the candidates are uniform draws from
/// the catalog in draw order, so this is a random policy that uses no randomness of its own.
pub struct CallerOrder;

impl Policy for CallerOrder {
    fn name(&self) -> String {
        "control (caller's order)".into()
    }
    fn place(&mut self, req: &Request<'_>) -> Vec<usize> {
        (0..req.n.min(req.candidates.len())).collect()
    }
    fn first_slot(&mut self, req: &Request<'_>) -> Vec<f64> {
        let mut p = vec![0.0; req.candidates.len()];
        if let Some(first) = p.first_mut() {
            *first = 1.0;
        }
        p
    }
    fn observe(&mut self, _obs: &Observation<'_>) {}
}

/// How popularity is scored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PopularityScore {
    /// Click-through rate with a Beta(1,1) prior: `(clicks + 1) / (shows + 2)`.
    ClickRate,
    /// Number of interactions (anything but `Ignored`).
    Count,
}

#[derive(Clone, Copy, Debug, Default)]
struct ItemStat {
    clicks: f64,
    shows: f64,
    at_ms: u64,
}

/// Global popularity, optionally decayed with a half-life (recency-decayed popularity).
pub struct Popularity {
    score: PopularityScore,
    half_life_s: Option<f64>,
    items: HashMap<String, ItemStat>,
}

impl Popularity {
    /// Global popularity (no decay).
    pub fn global(score: PopularityScore) -> Self {
        Popularity {
            score,
            half_life_s: None,
            items: HashMap::new(),
        }
    }

    /// Popularity whose counts halve every `half_life_s` seconds.
    pub fn decayed(score: PopularityScore, half_life_s: f64) -> Self {
        Popularity {
            score,
            half_life_s: Some(half_life_s),
            items: HashMap::new(),
        }
    }

    fn factor(&self, from_ms: u64, to_ms: u64) -> f64 {
        match self.half_life_s {
            Some(h) if to_ms > from_ms => (-((to_ms - from_ms) as f64 / 1000.0) / h).exp2(),
            _ => 1.0,
        }
    }

    fn value(&self, item: &str, now_ms: u64) -> f64 {
        let s = self.items.get(item).copied().unwrap_or_default();
        let f = self.factor(s.at_ms, now_ms);
        match self.score {
            PopularityScore::ClickRate => (s.clicks * f + 1.0) / (s.shows * f + 2.0),
            PopularityScore::Count => s.clicks * f,
        }
    }

    fn scores(&self, req: &Request<'_>) -> Vec<f64> {
        req.candidates
            .iter()
            .map(|c| self.value(c, req.ts_ms))
            .collect()
    }
}

impl Policy for Popularity {
    fn name(&self) -> String {
        match self.half_life_s {
            None => "popularity".into(),
            Some(h) => format!("decayed popularity (half-life {})", human_seconds(h)),
        }
    }
    fn place(&mut self, req: &Request<'_>) -> Vec<usize> {
        top_n_by(&self.scores(req), req.n)
    }
    fn first_slot(&mut self, req: &Request<'_>) -> Vec<f64> {
        greedy_first_slot(&self.scores(req))
    }
    fn observe(&mut self, obs: &Observation<'_>) {
        let (click, show) = match (self.score, obs.outcome) {
            (PopularityScore::ClickRate, Outcome::Click) => (1.0, 1.0),
            (PopularityScore::ClickRate, Outcome::Rating(v)) => ((v - 1.0) / 4.0, 1.0),
            (PopularityScore::ClickRate, _) => (0.0, 1.0),
            (PopularityScore::Count, Outcome::Ignored) => (0.0, 1.0),
            (PopularityScore::Count, _) => (1.0, 1.0),
        };
        let f = {
            let at = self.items.get(obs.item).map_or(obs.ts_ms, |s| s.at_ms);
            self.factor(at, obs.ts_ms)
        };
        let s = self.items.entry(obs.item.to_string()).or_default();
        s.clicks = s.clicks * f + click;
        s.shows = s.shows * f + show;
        s.at_ms = s.at_ms.max(obs.ts_ms);
    }
}

/// `3600` → `"1h"`, `86400` → `"1d"`.
pub fn human_seconds(s: f64) -> String {
    if s >= 86_400.0 && (s / 86_400.0).fract() == 0.0 {
        format!("{}d", s / 86_400.0)
    } else if s >= 3600.0 && (s / 3600.0).fract() == 0.0 {
        format!("{}h", s / 3600.0)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(c: &'a [String], ts_ms: u64) -> Request<'a> {
        Request {
            user: "u",
            context: &[],
            candidates: c,
            n: 1,
            ts_ms,
        }
    }

    #[test]
    fn decayed_popularity_forgets_old_hits() {
        let c = vec!["old".to_string(), "new".to_string()];
        let mut p = Popularity::decayed(PopularityScore::Count, 60.0);
        for _ in 0..4 {
            p.observe(&Observation {
                user: "u",
                context: &[],
                item: "old",
                outcome: Outcome::Click,
                ts_ms: 0,
                shown: false,
            });
        }
        p.observe(&Observation {
            user: "u",
            context: &[],
            item: "new",
            outcome: Outcome::Click,
            ts_ms: 600_000,
            shown: false,
        });
        assert_eq!(p.place(&req(&c, 600_000)), vec![1]);
        let mut g = Popularity::global(PopularityScore::Count);
        for (item, ts_ms) in [("old", 0), ("old", 0), ("new", 600_000)] {
            g.observe(&Observation {
                user: "u",
                context: &[],
                item,
                outcome: Outcome::Click,
                ts_ms,
                shown: false,
            });
        }
        assert_eq!(g.place(&req(&c, 600_000)), vec![0]);
    }

    #[test]
    fn random_places_distinct_items() {
        let c: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let mut r = RandomPolicy::new(3);
        let mut placed = r.place(&Request {
            n: 10,
            ..req(&c, 0)
        });
        placed.sort_unstable();
        assert_eq!(placed, (0..10).collect::<Vec<_>>());
    }
}
