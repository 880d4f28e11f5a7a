//! The "informed" baseline of the contextual-bandit workload (issue 10): a per-user Bayesian
//! logistic regression that knows the model class. Each user's taste `θ_u` has the world's
//! true prior `N(0, σ²·I)`; every observed outcome `y ∈ {0, 1}` on item vector `x` updates a
//! full `D×D` Gaussian posterior `N(m, S)` by an exact online Laplace step:
//!
//! - the posterior mode lies on `m + S·x·t`, so it is found by a 1-D Newton solve of
//!   `z = a + v·(y − σ(z))` with `a = ⟨m, x⟩`, `v = xᵀ S x` (`z` the mode's logit);
//! - `m ← m + S·x·(y − σ(z))`, and the precision gains `λ·x·xᵀ` with `λ = σ(z)(1 − σ(z))`,
//!   applied to `S` by Sherman–Morrison: `S ← S − λ·(Sx)(Sx)ᵀ / (1 + λ·v)`.
//!
//! It decides either greedily on the posterior predictive click probability (MacKay's probit
//! approximation `σ(a / √(1 + π·v/8))`, the myopic Bayes choice) or by Thompson sampling (a
//! draw of `θ` from the posterior through its Cholesky factor). It knows the item vectors
//! exactly and nothing else: no other user's data, no item bias (the world has none).
//!
//! This module owns the baseline only; the world is `cb`.

use std::collections::HashMap;

use crate::eval::{greedy_first_slot, top_n_by, Observation, Outcome, Policy, Request};
use crate::rng::Rng;

/// How the informed baseline turns its posterior into a choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The highest posterior predictive click probability.
    Greedy,
    /// The best item under one draw of `θ` from the posterior.
    Thompson,
}

/// One user's Gaussian posterior over their taste.
#[derive(Clone, Debug)]
struct Posterior {
    mean: Vec<f64>,
    /// Covariance, row-major `D×D`.
    cov: Vec<f64>,
}

impl Posterior {
    fn prior(dim: usize, variance: f64) -> Self {
        let mut cov = vec![0.0; dim * dim];
        (0..dim).for_each(|k| cov[k * dim + k] = variance);
        Posterior {
            mean: vec![0.0; dim],
            cov,
        }
    }

    /// `S·x`.
    fn cov_times(&self, x: &[f64]) -> Vec<f64> {
        let dim = x.len();
        (0..dim)
            .map(|r| dot(&self.cov[r * dim..(r + 1) * dim], x))
            .collect()
    }

    /// The online Laplace update for outcome `y` on item vector `x` (module doc).
    fn update(&mut self, x: &[f64], y: f64) {
        let sx = self.cov_times(x);
        let (a, v) = (dot(&self.mean, x), dot(x, &sx));
        // f(z) = z − a − v(y − σ(z)) is increasing with f' ≥ 1: Newton from z = a converges.
        let mut z = a;
        for _ in 0..20 {
            let p = sigmoid(z);
            let step = (z - a - v * (y - p)) / (1.0 + v * p * (1.0 - p));
            z -= step;
            if step.abs() < 1e-10 {
                break;
            }
        }
        let p = sigmoid(z);
        let lambda = p * (1.0 - p);
        self.mean
            .iter_mut()
            .zip(&sx)
            .for_each(|(m, s)| *m += s * (y - p));
        let dim = x.len();
        let k = lambda / (1.0 + lambda * v);
        for r in 0..dim {
            for c in 0..dim {
                self.cov[r * dim + c] -= k * sx[r] * sx[c];
            }
        }
    }

    /// One draw of `θ` from `N(mean, cov)`.
    fn sample(&self, rng: &mut Rng) -> Vec<f64> {
        let dim = self.mean.len();
        let l = cholesky(&self.cov, dim);
        let e: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
        (0..dim)
            .map(|r| self.mean[r] + dot(&l[r * dim..r * dim + r + 1], &e[..r + 1]))
            .collect()
    }
}

/// The lower Cholesky factor of a symmetric positive definite `dim×dim` matrix (row-major);
/// a pivot that rounding made non-positive is clamped to a tiny variance.
fn cholesky(a: &[f64], dim: usize) -> Vec<f64> {
    let mut l = vec![0.0; dim * dim];
    for r in 0..dim {
        for c in 0..=r {
            let s = a[r * dim + c] - dot(&l[r * dim..r * dim + c], &l[c * dim..c * dim + c]);
            l[r * dim + c] = if r == c {
                s.max(1e-12).sqrt()
            } else {
                s / l[c * dim + c]
            };
        }
    }
    l
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The per-user Bayesian logistic regression (module doc).
pub struct Informed {
    choice: Choice,
    prior_variance: f64,
    dim: usize,
    items: HashMap<String, Vec<f64>>,
    users: HashMap<String, Posterior>,
    rng: Rng,
}

impl Informed {
    /// The baseline for items `(id, vector)` (all of width `dim`) and the prior `N(0,
    /// prior_variance·I)` on every user's taste; `seed` drives Thompson's draws.
    pub fn new(
        choice: Choice,
        prior_variance: f64,
        items: impl IntoIterator<Item = (String, Vec<f64>)>,
        seed: u64,
    ) -> Self {
        let items: HashMap<String, Vec<f64>> = items.into_iter().collect();
        let dim = items.values().next().map_or(0, Vec::len);
        assert!(
            items.values().all(|v| v.len() == dim),
            "item vectors of one width"
        );
        Informed {
            choice,
            prior_variance,
            dim,
            items,
            users: HashMap::new(),
            rng: Rng::new(seed),
        }
    }

    /// Scores of the candidates: predictive probabilities (greedy) or sampled logits.
    fn scores(&mut self, req: &Request<'_>) -> Vec<f64> {
        let prior = Posterior::prior(self.dim, self.prior_variance);
        let post = self.users.get(req.user).unwrap_or(&prior);
        let theta = match self.choice {
            Choice::Thompson => Some(post.sample(&mut self.rng)),
            Choice::Greedy => None,
        };
        req.candidates
            .iter()
            .map(|c| {
                let Some(x) = self.items.get(c) else {
                    return f64::NEG_INFINITY;
                };
                match &theta {
                    Some(t) => dot(t, x),
                    None => {
                        let v = dot(x, &post.cov_times(x));
                        sigmoid(dot(&post.mean, x) / (1.0 + std::f64::consts::PI * v / 8.0).sqrt())
                    }
                }
            })
            .collect()
    }
}

impl Policy for Informed {
    fn name(&self) -> String {
        match self.choice {
            Choice::Greedy => "informed (Bayesian LR, greedy)".into(),
            Choice::Thompson => "informed (Bayesian LR, Thompson)".into(),
        }
    }

    fn place(&mut self, req: &Request<'_>) -> Vec<usize> {
        top_n_by(&self.scores(req), req.n)
    }

    fn first_slot(&mut self, req: &Request<'_>) -> Vec<f64> {
        greedy_first_slot(&self.scores(req))
    }

    fn observe(&mut self, obs: &Observation<'_>) {
        let y = match obs.outcome {
            Outcome::Click => 1.0,
            Outcome::Ignored | Outcome::Skip => 0.0,
            Outcome::Rating(v) => ((v - 1.0) / 4.0).clamp(0.0, 1.0),
        };
        let Some(x) = self.items.get(obs.item) else {
            return;
        };
        let (dim, variance) = (self.dim, self.prior_variance);
        self.users
            .entry(obs.user.to_string())
            .or_insert_with(|| Posterior::prior(dim, variance))
            .update(x, y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_update_matches_the_closed_form_mode() {
        // One observation in one dimension: the mode solves θ/σ² = x(y − σ(θx)).
        let mut p = Posterior::prior(1, 2.0);
        p.update(&[1.0], 1.0);
        let t = p.mean[0];
        assert!((t / 2.0 - (1.0 - sigmoid(t))).abs() < 1e-9, "mode {t}");
        let lambda = sigmoid(t) * (1.0 - sigmoid(t));
        assert!((p.cov[0] - 1.0 / (0.5 + lambda)).abs() < 1e-9);
    }

    #[test]
    fn learns_a_taste_from_its_clicks() {
        let items = vec![
            ("a".to_string(), vec![1.0, 0.0]),
            ("b".to_string(), vec![0.0, 1.0]),
        ];
        let mut informed = Informed::new(Choice::Greedy, 1.0, items, 1);
        let c = vec!["a".to_string(), "b".to_string()];
        for (item, outcome) in [("b", Outcome::Click), ("a", Outcome::Ignored)] {
            informed.observe(&Observation {
                user: "u",
                context: &[],
                item,
                outcome,
                ts_ms: 0,
                shown: true,
            });
        }
        let req = Request {
            user: "u",
            context: &[],
            candidates: &c,
            n: 1,
            ts_ms: 0,
        };
        assert_eq!(informed.place(&req), vec![1]);
        let l = cholesky(&[4.0, 2.0, 2.0, 3.0], 2);
        assert!((l[0] - 2.0).abs() < 1e-12 && (l[2] - 1.0).abs() < 1e-12);
        assert!((l[3] - 2f64.sqrt()).abs() < 1e-12);
    }
}
