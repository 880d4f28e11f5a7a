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
    let bc1 = 1.0 - p.beta1.powi(t);
    let bc2 = 1.0 - p.beta2.powi(t);
    let lr = p.learning_rate * bc2.sqrt() / bc1;
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
