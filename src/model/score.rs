//! The score `z(u,i,c) = b_i + ⟨g + w_u, x_i⟩ + ⟨G·c, x_i⟩ + κ·⟨ŝ_u, x_i⟩`, with
//! `x_i = φ_i + e_i`, and the learning step on one labelled example.
//!
//! Everything per decision that does not depend on the item is folded into one query vector
//! `q = g + w_u + G·c + κ·ŝ_u`, so scoring a candidate is one bias plus two dot products.

use crate::api::ScoreParts;
use crate::model::adam::{adam_step, AdamParams};
use crate::model::features::SparseVec;
use crate::model::global::GlobalReplica;
use crate::model::math::{axpy, dot, norm, sigmoid};

/// A user's personal model and state as the score sees them.
pub struct PersonalView<'a> {
    /// Personal weights `w_u`.
    pub weights: &'a [f32],
    /// Decayed state vector `s_u` (normalized here).
    pub state: &'a [f32],
}

/// `q ← g + w_u + G·c + κ·ŝ_u`.
pub fn query(
    global: &GlobalReplica,
    user: &PersonalView<'_>,
    kappa: f32,
    c: &SparseVec,
    q: &mut [f32],
) {
    q.copy_from_slice(&global.g);
    axpy(q, 1.0, user.weights);
    global.add_context(c, q);
    let n = norm(user.state);
    if n > 1e-12 && kappa != 0.0 {
        axpy(q, kappa / n, user.state);
    }
}

/// `z = b + ⟨q, φ⟩ + ⟨q, e⟩`.
#[inline]
pub fn logit(q: &[f32], bias: f32, phi: &[f32], embedding: &[f32]) -> f32 {
    bias + dot(q, phi) + dot(q, embedding)
}

/// The parts of `z` for one item (`x` = `φ + e`).
pub fn explain(
    global: &GlobalReplica,
    user: &PersonalView<'_>,
    kappa: f32,
    c: &SparseVec,
    bias: f32,
    x: &[f32],
) -> ScoreParts {
    let mut gc = vec![0.0; x.len()];
    global.add_context(c, &mut gc);
    let n = norm(user.state);
    ScoreParts {
        bias,
        global: dot(&global.g, x),
        personal: dot(user.weights, x),
        context: dot(&gc, x),
        state: if n > 1e-12 {
            kappa * dot(user.state, x) / n
        } else {
            0.0
        },
    }
}

/// What a learning step needs besides the user's and the global parameters.
pub struct LearnParams<'a> {
    /// Adam settings of the personal step.
    pub adam: &'a AdamParams,
    /// κ.
    pub kappa: f32,
}

/// The mutable personal model of one user.
pub struct PersonalModel<'a> {
    /// `w_u`.
    pub weights: &'a mut [f32],
    /// Adam first moments.
    pub m: &'a mut [f32],
    /// Adam second moments.
    pub v: &'a mut [f32],
    /// `s_u` (read only here).
    pub state: &'a [f32],
    /// Steps taken so far (incremented here).
    pub steps: &'a mut u32,
}

/// One labelled example.
pub struct Example<'a> {
    /// The item's key (its parameters must be in the replica).
    pub item_key: u64,
    /// The item's fixed features `φ_i`.
    pub phi: &'a [f32],
    /// The (scaled) context.
    pub context: &'a SparseVec,
    /// The reward in 0..=1.
    pub reward: f32,
}

/// Trains on one labelled example: an Adam step on the personal weights and an AdaGrad step on
/// the global replica. `scratch` must hold at least `2·d` floats. Returns the prediction
/// before the step.
pub fn learn(
    p: &LearnParams<'_>,
    user: PersonalModel<'_>,
    global: &mut GlobalReplica,
    example: &Example<'_>,
    scratch: &mut [f32],
) -> f32 {
    let Example {
        item_key,
        phi,
        context: c,
        reward,
    } = *example;
    let d = global.dim();
    let (x, rest) = scratch.split_at_mut(d);
    let q = &mut rest[..d];
    let item = &global.items[&item_key];
    for k in 0..d {
        x[k] = phi[k] + item.embedding[k];
    }
    let bias = item.bias;
    query(
        global,
        &PersonalView {
            weights: user.weights,
            state: user.state,
        },
        p.kappa,
        c,
        q,
    );
    let prediction = sigmoid(bias + dot(q, x));
    let err = prediction - reward;
    *user.steps = user.steps.saturating_add(1);
    adam_step(p.adam, user.weights, user.m, user.v, *user.steps, err, x);
    global.train(item_key, err, x, q, c);
    prediction
}
