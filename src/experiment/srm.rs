//! The sample-ratio-mismatch check: do the arms' exposure counts match the shares the
//! assignment promised? A mismatch means users were lost or duplicated unevenly (a redirect
//! that drops some, a bot filter that hits one arm, a crash in one policy), and every metric
//! of the experiment is then suspect, whatever its p-value says.
//!
//! Pearson's χ² goodness-of-fit test of the counts against the expected shares, with `k − 1`
//! degrees of freedom, and the alarm at p < [`SRM_ALPHA`]: the strict threshold is the
//! common practice (Fabijan et al., "Diagnosing Sample Ratio Mismatch in Online Controlled
//! Experiments", KDD 2019), because the check is read continuously and a false alarm stops an
//! experiment. This module only computes; it does not count exposures.

/// The p-value under which exposures are declared mismatched.
pub const SRM_ALPHA: f64 = 0.001;

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleRatio {
    /// Pearson's χ² statistic.
    pub chi_square: f64,
    /// Its p-value with `arms − 1` degrees of freedom.
    pub p_value: f64,
}

impl SampleRatio {
    /// Compares exposure `counts` with the `shares` the arms should get (any positive
    /// weights; they are normalised). `None` with fewer than two arms, no exposure, lengths
    /// that differ or a share that is not positive and finite.
    pub fn check(counts: &[u64], shares: &[f64]) -> Option<SampleRatio> {
        let total: u64 = counts.iter().sum();
        let weight: f64 = shares.iter().sum();
        let valid = shares.iter().all(|s| s.is_finite() && *s > 0.0);
        if counts.len() < 2 || counts.len() != shares.len() || total == 0 || !valid {
            return None;
        }
        let chi_square: f64 = counts
            .iter()
            .zip(shares)
            .map(|(&count, &share)| {
                let expected = total as f64 * share / weight;
                (count as f64 - expected).powi(2) / expected
            })
            .sum();
        let p_value = chi_square_survival(chi_square, (counts.len() - 1) as f64);
        Some(SampleRatio {
            chi_square,
            p_value,
        })
    }

    /// Whether the counts are too unlikely under the promised shares: p < [`SRM_ALPHA`].
    pub fn alarm(&self) -> bool {
        self.p_value < SRM_ALPHA
    }
}

/// `P(X ≥ x)` for `X` χ²-distributed with `dof` degrees of freedom: the regularized upper
/// incomplete gamma function `Q(dof/2, x/2)`.
pub fn chi_square_survival(x: f64, dof: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    upper_gamma_regularized(dof / 2.0, x / 2.0)
}

/// `Q(a, x)`: a series for `P = 1 − Q` below `x = a + 1`, Lentz's continued fraction above
/// (Numerical Recipes, §6.2), to about 1e-12 relative.
fn upper_gamma_regularized(a: f64, x: f64) -> f64 {
    const ITERATIONS: usize = 500;
    const EPSILON: f64 = 1e-14;
    let log_prefix = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut term, mut sum, mut denominator) = (1.0 / a, 1.0 / a, a);
        for _ in 0..ITERATIONS {
            denominator += 1.0;
            term *= x / denominator;
            sum += term;
            if term.abs() < sum.abs() * EPSILON {
                break;
            }
        }
        return (1.0 - sum * log_prefix.exp()).clamp(0.0, 1.0);
    }
    let tiny = f64::MIN_POSITIVE / EPSILON;
    let mut b = x + 1.0 - a;
    let (mut c, mut d) = (1.0 / tiny, 1.0 / b);
    let mut h = d;
    for i in 1..ITERATIONS {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        d = if d.abs() < tiny { tiny } else { d };
        c = b + an / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < EPSILON {
            break;
        }
    }
    (log_prefix.exp() * h).clamp(0.0, 1.0)
}

/// `ln Γ(a)` for `a > 0` (Lanczos, g = 7, nine terms; about 15 significant digits).
fn ln_gamma(a: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if a < 0.5 {
        // Reflection: Γ(a)·Γ(1 − a) = π / sin(πa).
        let pi = std::f64::consts::PI;
        return (pi / (pi * a).sin()).ln() - ln_gamma(1.0 - a);
    }
    let a = a - 1.0;
    let t = a + 7.5;
    let series = COEFFICIENTS[1..]
        .iter()
        .enumerate()
        .fold(COEFFICIENTS[0], |sum, (i, c)| {
            sum + c / (a + i as f64 + 1.0)
        });
    0.5 * (2.0 * std::f64::consts::PI).ln() + (a + 0.5) * t.ln() - t + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::assign::{Assignment, Split};

    #[test]
    fn the_survival_function_matches_tabulated_quantiles() {
        // (x, degrees of freedom, P(X ≥ x)) from standard χ² tables.
        for (x, dof, p) in [
            (3.841_459, 1.0, 0.05),
            (10.827_566, 1.0, 0.001),
            (5.991_465, 2.0, 0.05),
            (13.815_511, 2.0, 0.001),
            (7.814_728, 3.0, 0.05),
            (0.454_936, 1.0, 0.5),
            (124.342_113, 100.0, 0.05),
        ] {
            let got = chi_square_survival(x, dof);
            assert!(
                (got - p).abs() < 1e-5 * p.max(0.01),
                "Q({x}; {dof}) = {got}, want {p}"
            );
        }
        assert_eq!(chi_square_survival(0.0, 3.0), 1.0);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn a_fair_split_passes_and_a_biased_one_raises_the_alarm() {
        let split = Split::new("e", "srm", &[("a", 1.0), ("b", 1.0), ("c", 2.0)], 0.0).unwrap();
        let shares = [1.0, 1.0, 2.0];
        let mut fair = [0u64; 3];
        let mut biased = [0u64; 3];
        for i in 0..40_000 {
            let user = format!("user-{i}");
            let Assignment::Arm(arm) = split.assign(&user) else {
                unreachable!("no holdout");
            };
            fair[arm] += 1;
            // Arm b loses 5% of its exposures (a redirect that fails for some of its users).
            if !(arm == 1 && i % 20 == 0) {
                biased[arm] += 1;
            }
        }
        let check = SampleRatio::check(&fair, &shares).unwrap();
        assert!(!check.alarm(), "fair {fair:?}: {check:?}");
        let check = SampleRatio::check(&biased, &shares).unwrap();
        println!("fair {fair:?}, biased {biased:?}: {check:?}");
        assert!(check.alarm(), "biased {biased:?}: {check:?}");
    }

    #[test]
    fn meaningless_input_gives_no_check() {
        assert_eq!(SampleRatio::check(&[10], &[1.0]), None);
        assert_eq!(SampleRatio::check(&[0, 0], &[1.0, 1.0]), None);
        assert_eq!(SampleRatio::check(&[5, 5], &[1.0]), None);
        assert_eq!(SampleRatio::check(&[5, 5], &[1.0, 0.0]), None);
        assert_eq!(SampleRatio::check(&[5, 5], &[1.0, f64::NAN]), None);
    }
}
