//! Exploration policies: turn candidate logits into ordered placements with propensities.
//!
//! A placement's propensity is the probability that the policy put that item in that slot given
//! the items in the earlier slots; for slot 1 that is the exact, unconditional probability, which
//! is what off-policy evaluation needs. Randomness comes only from the `Rng` passed in.

use crate::config::{ExplorationConfig, PolicyKind};
use crate::rng::Rng;

/// One chosen slot: the candidate's index and its propensity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slot {
    /// Index into the candidate list.
    pub index: usize,
    /// Probability of this choice given the earlier slots.
    pub propensity: f32,
}

/// The `n` highest logits, best first (ties broken by lower index), as candidate indices.
/// A partial selection: `O(K + n log n)`, not a full sort.
pub fn top_n(logits: &[f32], n: usize, scratch: &mut Vec<usize>) -> Vec<usize> {
    let n = n.min(logits.len());
    if n <= SMALL_N {
        return top_n_small(logits, n);
    }
    scratch.clear();
    scratch.extend(0..logits.len());
    let better = |a: &usize, b: &usize| {
        logits[*b]
            .partial_cmp(&logits[*a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(b))
    };
    if n == 0 {
        return Vec::new();
    }
    if n < scratch.len() {
        scratch.select_nth_unstable_by(n - 1, better);
    }
    let mut top = scratch[..n].to_vec();
    top.sort_unstable_by(better);
    top
}

/// Up to this many slots, `top_n` keeps a sorted buffer instead of selecting in place.
const SMALL_N: usize = 16;

/// `top_n` for small `n`: one pass keeping the best `n` in a sorted buffer, so most candidates
/// cost one comparison with the current worst. Same order and tie-break as the general path.
fn top_n_small(logits: &[f32], n: usize) -> Vec<usize> {
    let mut top: Vec<usize> = Vec::with_capacity(n + 1);
    for (i, &z) in logits.iter().enumerate() {
        // `beats` is false for NaN: a NaN logit sorts as equal, like the general path.
        let beats = |j: usize| z.partial_cmp(&logits[j]) == Some(std::cmp::Ordering::Greater);
        if top.len() == n && !beats(top[n - 1]) {
            continue;
        }
        let at = top.partition_point(|&j| !beats(j));
        top.insert(at, i);
        top.truncate(n);
    }
    top
}

/// Places `n` of the candidates with the configured policy.
pub fn place(cfg: &ExplorationConfig, logits: &[f32], n: usize, rng: &mut Rng) -> Vec<Slot> {
    let mut scratch = Vec::new();
    match cfg.policy {
        PolicyKind::Greedy => top_n(logits, n, &mut scratch)
            .into_iter()
            .map(|index| Slot {
                index,
                propensity: 1.0,
            })
            .collect(),
        PolicyKind::EpsilonGreedy => epsilon_greedy(cfg.epsilon, logits, n, rng, &mut scratch),
        PolicyKind::Softmax => softmax(cfg.temperature, logits, n, rng),
    }
}

fn epsilon_greedy(
    epsilon: f32,
    logits: &[f32],
    n: usize,
    rng: &mut Rng,
    scratch: &mut Vec<usize>,
) -> Vec<Slot> {
    let k = logits.len();
    let n = n.min(k);
    // The greedy order of the best `n` is enough: a slot's best remaining item is always among
    // them, because at most `n - 1` items were taken before it.
    let ranked = top_n(logits, n, scratch);
    let mut taken = vec![false; k];
    let mut slots = Vec::with_capacity(n);
    for slot in 0..n {
        let remaining = k - slot;
        let best = ranked.iter().copied().find(|&i| !taken[i]).unwrap_or(0);
        let explore = (rng.next_f64() as f32) < epsilon;
        let index = if explore {
            // Uniform over the remaining: rejection is cheap because few are taken.
            loop {
                let i = rng.below(k);
                if !taken[i] {
                    break i;
                }
            }
        } else {
            best
        };
        let uniform = epsilon / remaining as f32;
        let propensity = if index == best {
            1.0 - epsilon + uniform
        } else {
            uniform
        };
        taken[index] = true;
        slots.push(Slot { index, propensity });
    }
    slots
}

fn softmax(temperature: f32, logits: &[f32], n: usize, rng: &mut Rng) -> Vec<Slot> {
    let k = logits.len();
    let n = n.min(k);
    if k == 0 {
        return Vec::new();
    }
    let mut taken = vec![false; k];
    let mut weights = vec![0.0f64; k];
    rebase(temperature, logits, &taken, &mut weights);
    let mut slots = Vec::with_capacity(n);
    for _ in 0..n {
        // Sum the remaining weights afresh: subtracting the chosen ones from a running total
        // cancels catastrophically when one weight dwarfs the rest (propensities above 1).
        let mut total: f64 = weights.iter().sum();
        if total < 1e-200 {
            // Everything left underflowed next to the items already placed.
            rebase(temperature, logits, &taken, &mut weights);
            total = weights.iter().sum();
        }
        let target = rng.next_f64() * total;
        let mut acc = 0.0;
        let mut index = None;
        let mut last_live = 0;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 {
                last_live = i;
                acc += w;
                if acc > target {
                    index = Some(i);
                    break;
                }
            }
        }
        // Rounding can leave `target` just past the sum: take the last live candidate.
        let index = index.unwrap_or(last_live);
        slots.push(Slot {
            index,
            propensity: (weights[index] / total) as f32,
        });
        weights[index] = 0.0;
        taken[index] = true;
    }
    slots
}

/// Softmax weights of the items not yet taken, relative to the largest of them (so the
/// largest weighs 1 and the sum never underflows); taken items weigh 0.
fn rebase(temperature: f32, logits: &[f32], taken: &[bool], weights: &mut [f64]) {
    let live = logits
        .iter()
        .zip(taken)
        .filter(|(_, &t)| !t)
        .map(|(&z, _)| z);
    let max = live.fold(f32::NEG_INFINITY, f32::max);
    for ((w, &z), &t) in weights.iter_mut().zip(logits).zip(taken) {
        *w = if t {
            0.0
        } else {
            (((z - max) / temperature) as f64).exp()
        };
    }
}

/// A constraint on placements that earlier slots can tighten (a rule's cap per attribute
/// value): before each slot, only the candidates it allows are eligible.
pub trait Constraint {
    /// Whether candidate `i` may take the next slot.
    fn allows(&self, i: usize) -> bool;
    /// Records that candidate `i` took a slot.
    fn take(&mut self, i: usize);
}

/// `place`, under a constraint: each slot is drawn by the same policy from the candidates not
/// placed yet that `constraint` allows, and its propensity is the policy's probability over
/// exactly those, so it stays the probability of that choice given the earlier slots. Fewer
/// than `n` slots come back when the constraint leaves no one eligible. `O(n·K)`; used only
/// when a decision has a constraint.
pub fn place_constrained(
    cfg: &ExplorationConfig,
    logits: &[f32],
    n: usize,
    rng: &mut Rng,
    constraint: &mut dyn Constraint,
) -> Vec<Slot> {
    let k = logits.len();
    let mut taken = vec![false; k];
    let mut live = Vec::with_capacity(k);
    let mut slots = Vec::with_capacity(n.min(k));
    for _ in 0..n.min(k) {
        live.clear();
        live.extend((0..k).filter(|&i| !taken[i] && constraint.allows(i)));
        // Ties go to the lower index, as in `top_n`.
        let Some(best) = live
            .iter()
            .copied()
            .reduce(|b, i| if logits[i] > logits[b] { i } else { b })
        else {
            break;
        };
        let (index, propensity) = match cfg.policy {
            PolicyKind::Greedy => (best, 1.0),
            PolicyKind::EpsilonGreedy => {
                let epsilon = cfg.epsilon;
                let explore = (rng.next_f64() as f32) < epsilon;
                let index = if explore {
                    live[rng.below(live.len())]
                } else {
                    best
                };
                let uniform = epsilon / live.len() as f32;
                let p = if index == best {
                    1.0 - epsilon + uniform
                } else {
                    uniform
                };
                (index, p)
            }
            PolicyKind::Softmax => {
                let max = logits[best];
                let weight = |i: usize| (((logits[i] - max) / cfg.temperature) as f64).exp();
                let total: f64 = live.iter().map(|&i| weight(i)).sum();
                let target = rng.next_f64() * total;
                let mut acc = 0.0;
                let index = live
                    .iter()
                    .copied()
                    .find(|&i| {
                        acc += weight(i);
                        acc > target
                    })
                    .unwrap_or(live[live.len() - 1]);
                (index, (weight(index) / total) as f32)
            }
        };
        taken[index] = true;
        constraint.take(index);
        slots.push(Slot { index, propensity });
    }
    slots
}

/// The exact slot-1 probability of every candidate under the policy (for tests and
/// off-policy evaluation).
pub fn first_slot_distribution(cfg: &ExplorationConfig, logits: &[f32]) -> Vec<f64> {
    let k = logits.len();
    if k == 0 {
        return Vec::new();
    }
    let best = top_n(logits, 1, &mut Vec::new())[0];
    match cfg.policy {
        PolicyKind::Greedy => (0..k).map(|i| if i == best { 1.0 } else { 0.0 }).collect(),
        PolicyKind::EpsilonGreedy => {
            let e = cfg.epsilon as f64;
            (0..k)
                .map(|i| e / k as f64 + if i == best { 1.0 - e } else { 0.0 })
                .collect()
        }
        PolicyKind::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let w: Vec<f64> = logits
                .iter()
                .map(|&z| (((z - max) / cfg.temperature) as f64).exp())
                .collect();
            let total: f64 = w.iter().sum();
            w.into_iter().map(|x| x / total).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_sorted_top_n() {
        let logits = [0.1, 0.9, 0.5, 0.9, -1.0];
        let cfg = ExplorationConfig {
            policy: PolicyKind::Greedy,
            ..Default::default()
        };
        let slots = place(&cfg, &logits, 3, &mut Rng::new(1));
        let order: Vec<usize> = slots.iter().map(|s| s.index).collect();
        assert_eq!(order, vec![1, 3, 2]);
    }

    #[test]
    fn small_top_n_matches_a_full_sort_with_ties() {
        let mut rng = Rng::new(5);
        for round in 0..500 {
            let k = 1 + rng.below(60);
            // Few distinct values, so ties are common.
            let logits: Vec<f32> = (0..k).map(|_| rng.below(7) as f32 * 0.5).collect();
            let n = 1 + round % 20;
            let mut reference: Vec<usize> = (0..k).collect();
            reference.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap().then(a.cmp(&b)));
            reference.truncate(n.min(k));
            assert_eq!(
                top_n(&logits, n, &mut Vec::new()),
                reference,
                "{logits:?} n={n}"
            );
        }
    }

    #[test]
    fn softmax_places_every_slot_even_when_weights_underflow() {
        let cfg = ExplorationConfig {
            policy: PolicyKind::Softmax,
            epsilon: 0.0,
            temperature: 0.01,
        };
        let logits = [10.0, -10.0, -12.0, 3.0];
        let slots = place(&cfg, &logits, 4, &mut Rng::new(1));
        let order: Vec<usize> = slots.iter().map(|s| s.index).collect();
        assert_eq!(order, vec![0, 3, 1, 2]);
        assert!(slots
            .iter()
            .all(|s| s.propensity > 0.99 && s.propensity <= 1.0));
    }

    /// At most one item of each parity: the constraint a cap on a two-valued attribute makes.
    struct OnePerParity([bool; 2]);

    impl Constraint for OnePerParity {
        fn allows(&self, i: usize) -> bool {
            !self.0[i % 2]
        }
        fn take(&mut self, i: usize) {
            self.0[i % 2] = true;
        }
    }

    #[test]
    fn a_constraint_narrows_each_slot_and_its_propensity() {
        let logits = [0.3, 1.0, 0.2, 0.9, -0.5];
        for policy in [
            PolicyKind::Greedy,
            PolicyKind::EpsilonGreedy,
            PolicyKind::Softmax,
        ] {
            let cfg = ExplorationConfig {
                policy,
                epsilon: 0.4,
                temperature: 0.5,
            };
            let mut rng = Rng::new(9);
            for _ in 0..200 {
                let slots =
                    place_constrained(&cfg, &logits, 4, &mut rng, &mut OnePerParity([false; 2]));
                // Two parities, so two slots, one of each.
                assert_eq!(slots.len(), 2, "{slots:?}");
                assert_ne!(slots[0].index % 2, slots[1].index % 2);
                // The first slot is unconstrained: the plain policy's exact probability.
                let first = first_slot_distribution(&cfg, &logits)[slots[0].index];
                assert!(
                    (slots[0].propensity as f64 - first).abs() < 1e-5,
                    "{policy:?}"
                );
                // The second is drawn among the other parity alone.
                let live: Vec<usize> = (0..5).filter(|i| i % 2 != slots[0].index % 2).collect();
                let sub: Vec<f32> = live.iter().map(|&i| logits[i]).collect();
                let at = live.iter().position(|&i| i == slots[1].index).unwrap();
                let second = first_slot_distribution(&cfg, &sub)[at];
                assert!(
                    (slots[1].propensity as f64 - second).abs() < 1e-5,
                    "{policy:?}"
                );
            }
        }
    }

    #[test]
    fn no_item_is_placed_twice() {
        for policy in [PolicyKind::EpsilonGreedy, PolicyKind::Softmax] {
            let cfg = ExplorationConfig {
                policy,
                epsilon: 0.9,
                temperature: 5.0,
            };
            let logits: Vec<f32> = (0..20).map(|i| i as f32 * 0.1).collect();
            let mut rng = Rng::new(3);
            for _ in 0..200 {
                let slots = place(&cfg, &logits, 20, &mut rng);
                let mut seen: Vec<usize> = slots.iter().map(|s| s.index).collect();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len(), 20);
            }
        }
    }
}
