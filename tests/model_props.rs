//! Properties of the model (proptest): decay composes, a zero gradient only decays, slot-1
//! propensities are a distribution that matches seeded draws, and hashing is stable across runs.

use nudge::actor::UserActor;
use nudge::config::{ExplorationConfig, ModelConfig, PolicyKind};
use nudge::ids::{stable_hash, UserId};
use nudge::model::adam::{adam_step, decay_weights, AdamParams};
use nudge::model::policy::{first_slot_distribution, place};
use nudge::model::FeatureSpace;
use nudge::rng::Rng;
use proptest::prelude::*;

fn actor_with_state(state: &[f32]) -> UserActor {
    let mut a = UserActor::new(UserId::new("p").unwrap(), 1_000, state.len());
    a.add_signal(1.0, state, 1_000, 1.0);
    a
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn decay_composes(
        state in prop::collection::vec(-10.0f32..10.0, 32),
        a_ms in 0u64..10_000_000,
        b_ms in 0u64..10_000_000,
        half_life_s in 1.0f64..1e6,
    ) {
        let cfg = ModelConfig { state_half_life_s: half_life_s, ..ModelConfig::default() };
        let mut stepwise = actor_with_state(&state);
        stepwise.advance(1_000 + a_ms, &cfg);
        stepwise.advance(1_000 + a_ms + b_ms, &cfg);
        let mut direct = actor_with_state(&state);
        direct.advance(1_000 + a_ms + b_ms, &cfg);
        for (x, y) in stepwise.state().iter().zip(direct.state()) {
            prop_assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{} vs {}", x, y);
        }
    }

    #[test]
    fn a_zero_gradient_changes_weights_only_by_decay(
        w0 in prop::collection::vec(-5.0f32..5.0, 32),
        v0 in prop::collection::vec(0.0f32..5.0, 32),
        steps in 1u32..1000,
        elapsed_s in 0.0f64..1e7,
    ) {
        let p = AdamParams { learning_rate: 0.05, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, l2: 0.0, new_user_boost: 0.0 };
        let mut w = w0.clone();
        let mut m = vec![0.0; 32];
        let mut v = v0.clone();
        adam_step(&p, &mut w, &mut m, &mut v, steps, 0.0, &[1.0; 32]);
        prop_assert_eq!(&w, &w0);
        decay_weights(&mut w, elapsed_s, 86_400.0);
        let f = (-elapsed_s / 86_400.0).exp2() as f32;
        for (x, y) in w.iter().zip(&w0) {
            prop_assert!((x - y * f).abs() <= 1e-6 * (1.0 + y.abs()));
        }
    }

    #[test]
    fn slot_one_propensities_form_a_distribution(
        logits in prop::collection::vec(-4.0f32..4.0, 2..50),
        epsilon in 0.0f32..1.0,
        temperature in 0.05f32..5.0,
        seed in any::<u64>(),
    ) {
        for policy in [PolicyKind::Greedy, PolicyKind::EpsilonGreedy, PolicyKind::Softmax] {
            let cfg = ExplorationConfig { policy, epsilon, temperature };
            let dist = first_slot_distribution(&cfg, &logits);
            let sum: f64 = dist.iter().sum();
            prop_assert!((sum - 1.0).abs() < 1e-6, "{:?} sums to {}", policy, sum);
            let slots = place(&cfg, &logits, 3, &mut Rng::new(seed));
            let first = slots[0];
            prop_assert!((first.propensity as f64 - dist[first.index]).abs() < 1e-5);
            let mut later_sum = 0.0;
            for s in &slots {
                prop_assert!(s.propensity > 0.0 && s.propensity <= 1.0 + 1e-6);
                later_sum += s.propensity;
            }
            prop_assert!(later_sum > 0.0);
        }
    }
}

#[test]
fn slot_one_propensities_match_seeded_draw_frequencies() {
    let logits = [0.3f32, 1.2, -0.5, 0.9, 0.0, 1.1];
    let draws = 40_000;
    for policy in [PolicyKind::EpsilonGreedy, PolicyKind::Softmax] {
        let cfg = ExplorationConfig {
            policy,
            epsilon: 0.3,
            temperature: 0.5,
        };
        let dist = first_slot_distribution(&cfg, &logits);
        let mut counts = [0usize; 6];
        let mut rng = Rng::new(2024);
        for _ in 0..draws {
            let slots = place(&cfg, &logits, 2, &mut rng);
            counts[slots[0].index] += 1;
            assert!((slots[0].propensity as f64 - dist[slots[0].index]).abs() < 1e-6);
        }
        for (i, &c) in counts.iter().enumerate() {
            let p = dist[i];
            let freq = c as f64 / draws as f64;
            let sigma = (p * (1.0 - p) / draws as f64).sqrt();
            assert!(
                (freq - p).abs() <= 5.0 * sigma + 1e-9,
                "{policy:?} item {i}: {freq} vs {p}"
            );
        }
    }
}

/// Golden values: if these change, every deployment's shard placement and hashed features
/// change with them. They were computed once and must stay fixed.
#[test]
fn hashing_is_stable_across_runs() {
    assert_eq!(stable_hash(b"u1"), GOLDEN_U1);
    let space = FeatureSpace {
        dim: 32,
        item_embedding_init: 0.1,
    };
    assert_eq!(space.buckets("category", "shoes"), GOLDEN_SHOES);
    let e = space.initial_embedding(stable_hash(b"i9"));
    assert_eq!(e[0].to_bits(), GOLDEN_E0);
}

const GOLDEN_U1: u64 = 8_353_354_817_036_782_521;
const GOLDEN_SHOES: [(u32, f32); 2] = [(20, FRAC_1_SQRT_2), (15, -FRAC_1_SQRT_2)];
use std::f32::consts::FRAC_1_SQRT_2;
const GOLDEN_E0: u32 = 3_161_803_398;
