//! Adam with bias correction (Kingma & Ba 2015) over one user's personal weights, with the
//! lazy half-life decay that lets stale tastes fade. Pure functions over slices.
//!
//! AdaGrad is compiled twice, for the SSE2 baseline and for AVX2, and the CPU picks one at run
//! time (`multiversion`); Adam is inlined into `score::learn`, which is compiled the same way.
//! FMA stays off: every lane does the same IEEE multiply, add, square root and divide in both
//! versions, so the results are bit-identical across CPUs and a replay rebuilds the same state
//! wherever it runs.

use multiversion::multiversion;

use crate::model::math::{decay_factor, scale};

/// Adam's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    /// Step size η.
    pub learning_rate: f32,
    /// First-moment decay β1.
    pub beta1: f32,
    /// Second-moment decay β2.
    pub beta2: f32,
    /// ε.
    pub epsilon: f32,
    /// L2 pull λ toward zero (i.e. toward the global model).
    pub l2: f32,
    /// `b`: step `t` (1-based) uses `η·(1 + b/t)`, larger steps while a user has few, Adam's
    /// own from about `t ≫ b` on; 0 is plain Adam, bit for bit.
    pub new_user_boost: f32,
}

/// Decays `w` toward zero over `elapsed_s` with half-life `half_life_s`.
#[inline]
pub fn decay_weights(w: &mut [f32], elapsed_s: f64, half_life_s: f64) {
    let f = decay_factor(elapsed_s, half_life_s);
    if f != 1.0 {
        scale(w, f);
    }
}

/// One Adam step on `w` for the loss gradient `error·x` plus `λ·w`. `step` is the 1-based
/// count of steps taken including this one (for bias correction).
#[inline]
pub fn adam_step(
    p: &AdamParams,
    w: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    step: u32,
    error: f32,
    x: &[f32],
) {
    debug_assert!(step >= 1);
    let t = step.min(1 << 20) as i32;
    let bc1 = bias_correction(p.beta1, t);
    let bc2 = bias_correction(p.beta2, t);
    // With b = 0 the factor is exactly 1: the same bits as plain Adam.
    let boost = 1.0 + p.new_user_boost / t as f32;
    let lr = p.learning_rate * boost * bc2.sqrt() / bc1;
    let eps = p.epsilon * bc2.sqrt();
    let (b1, b2) = (p.beta1, p.beta2);
    let rows = w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(x);
    for (((w, m), v), x) in rows {
        let grad = error * x + p.l2 * *w;
        *m = b1 * *m + (1.0 - b1) * grad;
        *v = b2 * *v + (1.0 - b2) * grad * grad;
        *w -= lr * *m / (v.sqrt() + eps);
    }
}

/// `1 − βᵗ` as `f32`: exactly 1 once `βᵗ` is below half an ulp of 1, without computing the
/// power. `βᵗ ≤ e^(−t(1−β))`, so `t·(1−β) ≥ 19 > 26·ln 2` puts it under `2⁻²⁶`, where
/// `1 − βᵗ` rounds to 1 (its neighbour below, `1 − 2⁻²⁴`, is further away); past about 180
/// steps for β1 = 0.9 and 19,000 for β2 = 0.999 this skips `powi` (a call and `log2 t`
/// dependent multiplies) and gives the same bits.
#[inline]
pub fn bias_correction(beta: f32, t: i32) -> f32 {
    if t as f32 * (1.0 - beta) >= 19.0 {
        1.0
    } else {
        1.0 - power(beta, t)
    }
}

/// `βᵗ`, out of line: inlined, `powi` is an intrinsic without side effects that the optimizer
/// computes ahead of the branch above, making the skip a select that still pays for it.
#[inline(never)]
fn power(beta: f32, t: i32) -> f32 {
    beta.powi(t)
}

/// [`adagrad_step`] of one parameter, inline: the same operations in the same order, so the
/// same bits, without the call and the run-time CPU dispatch.
#[inline]
pub fn adagrad_scalar(lr: f32, w: &mut f32, acc: &mut f32, delta: &mut f32, g: f32, x: f32) {
    let grad = g * x;
    *acc += grad * grad;
    let step = lr * grad / (acc.sqrt() + 1e-6);
    *w -= step;
    *delta -= step;
}

/// One AdaGrad step on `w` with gradient `scale·x`; `acc` holds the squared-gradient sums.
#[multiversion(targets("x86_64+avx2"))]
pub fn adagrad_step(lr: f32, w: &mut [f32], acc: &mut [f32], delta: &mut [f32], g: f32, x: &[f32]) {
    let rows = w
        .iter_mut()
        .zip(acc.iter_mut())
        .zip(delta.iter_mut())
        .zip(x);
    for (((w, acc), delta), x) in rows {
        let grad = g * x;
        *acc += grad * grad;
        let step = lr * grad / (acc.sqrt() + 1e-6);
        *w -= step;
        *delta -= step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_correction_is_the_power_formula_bit_for_bit() {
        for beta in [0.0f32, 0.5, 0.9, 0.99, 0.999, 0.9999] {
            let mut t = 1i32;
            while t <= 1 << 20 {
                assert_eq!(
                    bias_correction(beta, t).to_bits(),
                    (1.0 - beta.powi(t)).to_bits(),
                    "beta {beta} t {t}"
                );
                t += if t < 300_000 { 1 } else { 997 };
            }
        }
    }
}
