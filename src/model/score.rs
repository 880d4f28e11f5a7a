//! The score `z(u,i,c,t) = b_i + β·log1p(pop_i(t)) + ⟨g + w_u + G·c + κ∘ŝ_u, x_i⟩`, with
//! `x_i = φ_i + e_i`, plus the co-occurrence term `γ·co(u,i)` (`cooccur`), and the learning
//! step on one labelled example.
//!
//! `κ∘ŝ_u` is the decayed state scaled into `ŝ_u` (see [`StateScale`]) and weighted per
//! dimension by the learned global weights `κ_k = κ + Δκ_k`; `pop_i(t)` is the item's decayed
//! popularity (off unless configured). Everything per decision that does not depend on the
//! item is folded into one query vector `q = g + w_u + G·c + κ∘ŝ_u`, so scoring a candidate is
//! one bias, an optional popularity term and one dot product.

use multiversion::multiversion;

use crate::api::ScoreParts;
use crate::config::StateScale;
use crate::model::adam::{adam_step, AdamParams};
use crate::model::features::SparseVec;
use crate::model::global::GlobalReplica;
use crate::model::items::Row;
use crate::model::math::{axpy, dot, norm, sigmoid};

/// A user's personal model and state as the score sees them.
pub struct PersonalView<'a> {
    /// Personal weights `w_u`.
    pub weights: &'a [f32],
    /// Decayed state vector `s_u` (scaled to `ŝ_u` here).
    pub state: &'a [f32],
}

/// How the state enters the score: its base weight κ (0: off) and how `s_u` is scaled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StateParams {
    /// κ, the starting value of every learned `κ_k`; 0 turns the state term off.
    pub kappa: f32,
    /// How `s_u` becomes `ŝ_u`.
    pub scale: StateScale,
}

impl StateParams {
    /// The factor `a` with `ŝ_u = a·s_u` (0 when the state is off or empty).
    #[inline]
    pub fn factor(&self, state: &[f32]) -> f32 {
        if self.kappa == 0.0 {
            return 0.0;
        }
        let n = norm(state);
        if n <= 1e-12 {
            return 0.0;
        }
        match self.scale {
            StateScale::Unit => 1.0 / n,
            StateScale::Capped => 1.0 / n.max(1.0),
            StateScale::Tanh => n.tanh() / n,
        }
    }
}

/// `q ← g + w_u + G·c + κ∘ŝ_u`.
#[multiversion(targets("x86_64+avx2"))]
pub fn query<'a>(
    global: &GlobalReplica,
    user: &PersonalView<'a>,
    state: &StateParams,
    c: &SparseVec,
    q: &mut [f32],
) {
    query_with_factor(global, user, state, state.factor(user.state), c, q);
}

/// [`query`] with the state's factor `a = state.factor(user.state)` already computed. Always
/// inlined, so that it is compiled with the target features of its callers' clones.
#[inline(always)]
fn query_with_factor(
    global: &GlobalReplica,
    user: &PersonalView<'_>,
    state: &StateParams,
    a: f32,
    c: &SparseVec,
    q: &mut [f32],
) {
    q.copy_from_slice(&global.g);
    axpy(q, 1.0, user.weights);
    global.add_context(c, q);
    if a != 0.0 {
        let rows = q.iter_mut().zip(user.state).zip(&global.state_w);
        for ((q, s), dk) in rows {
            *q += (state.kappa + dk) * a * s;
        }
    }
}

/// `z = b + ⟨q, φ⟩ + ⟨q, e⟩`.
#[inline]
pub fn logit(q: &[f32], bias: f32, phi: &[f32], embedding: &[f32]) -> f32 {
    bias + dot(q, phi) + dot(q, embedding)
}

/// The parts of `z` for one item (`x` = `φ + e`); `bias` includes the popularity term.
pub fn explain(
    global: &GlobalReplica,
    user: &PersonalView<'_>,
    state: &StateParams,
    c: &SparseVec,
    bias: f32,
    x: &[f32],
) -> ScoreParts {
    let mut gc = vec![0.0; x.len()];
    global.add_context(c, &mut gc);
    let a = state.factor(user.state);
    let state_part: f32 = user
        .state
        .iter()
        .zip(&global.state_w)
        .zip(x)
        .map(|((s, dk), x)| (state.kappa + dk) * a * s * x)
        .sum();
    ScoreParts {
        bias,
        global: dot(&global.g, x),
        personal: dot(user.weights, x),
        context: dot(&gc, x),
        state: state_part,
        cooccurrence: 0.0,
        prior: 0.0,
    }
}

/// What a learning step needs besides the user's and the global parameters.
pub struct LearnParams<'a> {
    /// Adam settings of the personal step.
    pub adam: &'a AdamParams,
    /// How the state enters the score.
    pub state: StateParams,
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
    /// The item's key.
    pub item_key: u64,
    /// The item's row in the replica's table (the learner admitted it).
    pub row: Row,
    /// `φ_i` given inline for an item the catalog does not hold (its row's `x` is then `e_i`
    /// alone); `None` for a catalog item, whose row's `x` already is `φ_i + e_i`.
    pub inline_phi: Option<&'a [f32]>,
    /// The (scaled) context.
    pub context: &'a SparseVec,
    /// The reward in 0..=1.
    pub reward: f32,
    /// The popularity clock at the example's time (`GlobalReplica::popularity_tau`).
    pub pop_tau: f64,
    /// The co-occurrence feature `co(u, i)` (`model/cooccur.rs`).
    pub co: f32,
    /// γ₀, the co-occurrence weight before its learned offset.
    pub co_base: f32,
}

/// Trains on one labelled example: an Adam step on the personal weights and an AdaGrad step on
/// the global replica (including the state and popularity weights). `scratch` must hold at
/// least `3·d` floats. Returns the prediction before the step.
#[multiversion(targets("x86_64+avx2"))]
pub fn learn<'a, 'b, 'c>(
    p: &LearnParams<'a>,
    user: PersonalModel<'b>,
    global: &mut GlobalReplica,
    example: &Example<'c>,
    scratch: &mut [f32],
) -> f32 {
    let Example {
        item_key,
        row,
        inline_phi,
        context: c,
        reward,
        pop_tau,
        co,
        co_base,
    } = *example;
    let d = global.dim();
    let (x, rest) = scratch.split_at_mut(d);
    let (q, rest) = rest.split_at_mut(d);
    let sx = &mut rest[..d];
    // The row's `x` is `φ + e` of a catalog item and `e` of any other (then `e + φ` with an
    // inline `φ`: the same sum, the same bits).
    x.copy_from_slice(global.items.x(row));
    if let (Some(phi), None) = (inline_phi, global.items.features(row)) {
        for (x, p) in x.iter_mut().zip(phi) {
            *x += p;
        }
    }
    let pop = global.item_popularity(row, pop_tau);
    let bias = global.items.bias(row) + global.pop_w * pop + (co_base + global.co_w) * co;
    // The state does not change while learning: its factor serves the query and `sx`.
    let a = p.state.factor(user.state);
    query_with_factor(
        global,
        &PersonalView {
            weights: user.weights,
            state: user.state,
        },
        &p.state,
        a,
        c,
        q,
    );
    let prediction = sigmoid(bias + dot(q, x));
    let err = prediction - reward;
    *user.steps = user.steps.saturating_add(1);
    adam_step(p.adam, user.weights, user.m, user.v, *user.steps, err, x);
    let a = if global.state_weights_learn() { a } else { 0.0 };
    let sx = (a != 0.0).then(|| {
        for k in 0..d {
            sx[k] = a * user.state[k] * x[k];
        }
        &*sx
    });
    global.train_extras(err, sx, pop, co);
    global.train_row(item_key, row, err, x, q, c);
    prediction
}
