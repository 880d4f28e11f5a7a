//! A Zipf sampler over ranks `1..=n` (rejection-inversion, Hörmann and Derflinger 1996, as in
//! Apache Commons' `RejectionInversionZipfSampler`): constant time per draw, no table, exact.
//!
//! It owns only the distribution; the random stream comes from the caller's seeded
//! `nudge::rng::Rng`, so draws are reproducible.

use nudge::rng::Rng;

/// Draws ranks `1..=n` with probability proportional to `rank^-s`.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s_div: f64,
}

impl Zipf {
    /// A sampler over `1..=n` (`n ≥ 1`) with exponent `s > 0`.
    pub fn new(n: u64, s: f64) -> Self {
        assert!(n >= 1 && s > 0.0, "Zipf needs n >= 1 and s > 0");
        let mut z = Zipf {
            n: n as f64,
            s,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s_div: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(z.n + 0.5);
        z.s_div = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// One rank in `1..=n`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        // The acceptance rate is above 90% for every `s`; the bound only keeps the loop finite.
        for _ in 0..64 {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.s_div || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
        1
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.s) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// `ln(1 + x) / x`, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x − 1) / x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_follow_the_power_law() {
        let z = Zipf::new(1000, 1.1);
        let mut rng = Rng::new(3);
        let mut counts = vec![0u32; 1001];
        for _ in 0..200_000 {
            let k = z.sample(&mut rng) as usize;
            assert!((1..=1000).contains(&k));
            counts[k] += 1;
        }
        // P(1)/P(2) = 2^1.1 ≈ 2.14.
        let ratio = counts[1] as f64 / counts[2] as f64;
        assert!((1.95..2.35).contains(&ratio), "ratio {ratio}");
        assert!(counts[1] > counts[10] && counts[10] > counts[100]);
    }
}
