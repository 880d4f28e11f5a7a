//! Small dense-vector kernels over `f32` slices: dot, axpy, scale, norms, sigmoid and
//! half-life decay. Written as plain loops that the compiler vectorizes; no allocation.

/// `⟨a, b⟩`. Slices must be of equal length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    // Eight independent accumulators over exact chunks: the loop vectorizes without
    // reassociation flags and without bounds checks.
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

/// `y ← y + alpha·x`.
#[inline]
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `y ← alpha·y`.
#[inline]
pub fn scale(y: &mut [f32], alpha: f32) {
    for yi in y.iter_mut() {
        *yi *= alpha;
    }
}

/// Euclidean norm.
#[inline]
pub fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// Scales `a` to unit length in place; a (near-)zero vector stays as it is.
pub fn normalize(a: &mut [f32]) {
    let n = norm(a);
    if n > 1e-12 {
        scale(a, 1.0 / n);
    }
}

/// The logistic function.
#[inline]
pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// `2^(−elapsed/half_life)`: the factor by which a quantity with that half-life shrinks over
/// `elapsed` (same units). Negative elapsed time (out-of-order input) never grows a quantity.
#[inline]
pub fn decay_factor(elapsed: f64, half_life: f64) -> f32 {
    if elapsed <= 0.0 {
        1.0
    } else {
        (-elapsed / half_life).exp2() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_for_odd_lengths() {
        for n in [1usize, 7, 8, 9, 31, 32, 33] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.25).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-3, "n={n}");
        }
    }

    #[test]
    fn decay_halves_at_half_life() {
        assert!((decay_factor(10.0, 10.0) - 0.5).abs() < 1e-7);
        assert_eq!(decay_factor(-5.0, 10.0), 1.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }
}
