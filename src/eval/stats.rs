//! Intervals for the evaluation's figures: a seeded cluster bootstrap (users are the clusters,
//! so a heavy user cannot fake precision), the Wilson interval for a proportion, and a normal
//! interval for a mean. Pure functions; the only randomness is the seed passed in.

use crate::rng::Rng;

/// A point estimate with a two-sided 95% interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Interval {
    /// The estimate.
    pub mean: f64,
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Interval {
    /// Whether the two intervals share no point.
    pub fn disjoint(&self, other: &Interval) -> bool {
        self.hi < other.lo || other.hi < self.lo
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.4} [{:.4}, {:.4}]", self.mean, self.lo, self.hi)
    }
}

/// One cluster's contribution to a ratio estimate: a sum of values and how many there were.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cluster {
    /// Sum of the values.
    pub sum: f64,
    /// Number of values.
    pub count: f64,
}

/// `Σ sum / Σ count` over clusters with a 95% percentile interval from `resamples` bootstrap
/// draws of whole clusters (seeded).
pub fn cluster_bootstrap(clusters: &[Cluster], resamples: usize, seed: u64) -> Interval {
    let ratio = |s: f64, c: f64| if c > 0.0 { s / c } else { 0.0 };
    let pairs: Vec<(f64, f64)> = clusters.iter().map(|c| (c.sum, c.count)).collect();
    bootstrap_pairs(&pairs, resamples, seed, ratio)
}

/// The relative difference `Σa / Σb − 1` over paired clusters (each a user's two sums, e.g.
/// the clicks two policies earned on the same decisions) with a 95% percentile interval from
/// `resamples` draws of whole clusters (seeded). Resampling a user resamples both of their
/// sums, so what the two share (the user, the stream) cancels.
pub fn ratio_bootstrap(pairs: &[(f64, f64)], resamples: usize, seed: u64) -> Interval {
    let lift = |a: f64, b: f64| if b > 0.0 { a / b - 1.0 } else { f64::NAN };
    bootstrap_pairs(pairs, resamples, seed, lift)
}

/// `stat(Σa, Σb)` over clusters of two sums, with a 95% percentile interval from `resamples`
/// seeded draws of whole clusters: the one resampling both bootstraps above share.
fn bootstrap_pairs(
    pairs: &[(f64, f64)],
    resamples: usize,
    seed: u64,
    stat: impl Fn(f64, f64) -> f64,
) -> Interval {
    let (a, b) = pairs
        .iter()
        .fold((0.0, 0.0), |(a, b), p| (a + p.0, b + p.1));
    let mean = stat(a, b);
    if pairs.len() < 2 || resamples == 0 {
        return Interval {
            mean,
            lo: mean,
            hi: mean,
        };
    }
    let mut rng = Rng::new(seed);
    let mut stats: Vec<f64> = (0..resamples)
        .map(|_| {
            let (mut a, mut b) = (0.0, 0.0);
            for _ in 0..pairs.len() {
                let p = pairs[rng.below(pairs.len())];
                a += p.0;
                b += p.1;
            }
            stat(a, b)
        })
        .collect();
    stats.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| stats[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    Interval {
        mean,
        lo: at(0.025),
        hi: at(0.975),
    }
}

/// The Wilson score interval (95%) of `successes` out of `n`; for rewards in 0..=1, pass the
/// sum of rewards as `successes`.
pub fn wilson(successes: f64, n: f64) -> Interval {
    if n <= 0.0 {
        return Interval {
            mean: 0.0,
            lo: 0.0,
            hi: 1.0,
        };
    }
    let z = 1.959_964f64;
    let p = successes / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    Interval {
        mean: p,
        lo: (centre - half).max(0.0),
        hi: (centre + half).min(1.0),
    }
}

/// The mean of `xs` with a normal 95% interval (`± 1.96·s/√n`).
pub fn normal_mean(xs: &[f64]) -> Interval {
    let n = xs.len() as f64;
    if n == 0.0 {
        return Interval::default();
    }
    let mean = xs.iter().sum::<f64>() / n;
    let var = if n > 1.0 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let half = 1.959_964 * (var / n).sqrt();
    Interval {
        mean,
        lo: mean - half,
        hi: mean + half,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_brackets_the_mean_and_is_seeded() {
        let clusters: Vec<Cluster> = (0..200)
            .map(|i| Cluster {
                sum: (i % 7) as f64,
                count: 10.0,
            })
            .collect();
        let a = cluster_bootstrap(&clusters, 500, 1);
        assert!(a.lo < a.mean && a.mean < a.hi, "{a}");
        assert_eq!(a, cluster_bootstrap(&clusters, 500, 1));
    }

    #[test]
    fn ratio_bootstrap_brackets_the_lift() {
        // Every user earns 1.5 times as much under `a`, give or take: a lift of 0.5.
        let pairs: Vec<(f64, f64)> = (0..300)
            .map(|i| (15.0 + (i % 5) as f64, 10.0 + (i % 3) as f64))
            .collect();
        let l = ratio_bootstrap(&pairs, 500, 3);
        assert!(l.lo < l.mean && l.mean < l.hi, "{l}");
        assert!(l.lo > 0.4 && l.hi < 0.7, "{l}");
        assert_eq!(l, ratio_bootstrap(&pairs, 500, 3));
    }

    #[test]
    fn wilson_is_honest_for_rare_events() {
        let w = wilson(0.0, 100.0);
        assert_eq!(w.lo, 0.0);
        assert!(w.hi > 0.02 && w.hi < 0.05, "{w}");
        let w = wilson(38.0, 10_000.0);
        assert!(w.lo < 0.0038 && w.hi > 0.0038);
    }
}
