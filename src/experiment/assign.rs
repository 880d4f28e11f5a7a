//! Sticky arm assignment: a user's arm is a function of its id and the experiment's salt, so
//! no table of assignments exists anywhere, and a user keeps its arm across restarts, shards
//! and machines for as long as the salt, the arms and their weights stay the same.
//!
//! A [`Split`] maps a user to the holdout or to one of its weighted arms, from two independent
//! hashes of (user, salt): one decides the holdout, the other the arm, so changing the holdout
//! share moves users only into or out of the holdout and never between arms. A [`Layer`] is a
//! hash space of [`LAYER_BUCKETS`] buckets under its own salt; each experiment in it claims a
//! disjoint bucket range, so a user is in at most one experiment of a layer (mutual exclusion),
//! while experiments in different layers (different salts) are assigned independently.
//!
//! The hash is xxh3 (as for ids, `crate::ids`), whose output is specified and the same on
//! every platform. This module does not know users' state, metrics or policies.

use std::ops::Range;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::ids::HASH_SEED;

/// Buckets in a layer's hash space. An experiment in a layer claims a range of them, so its
/// traffic share is a multiple of 0.01%.
pub const LAYER_BUCKETS: u32 = 10_000;

/// What each hash of a salt is for: the same salt seeds independent hashes per purpose.
const PURPOSE_ARM: u64 = 1;
const PURPOSE_HOLDOUT: u64 = 2;
const PURPOSE_LAYER: u64 = 3;

/// Where a user lands in one experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignment {
    /// In the holdout: served as if the experiment did not exist.
    Holdout,
    /// In the arm at this index of the experiment's arms.
    Arm(usize),
}

/// A split or a layer that cannot be built, naming the field at fault. Nothing is changed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SplitError {
    /// No arms were given.
    #[error("`arms` is empty: an experiment needs at least one arm")]
    NoArms,
    /// An arm's weight is zero, negative or not finite.
    #[error("`arms[{index}].weight` must be a positive finite number, not {weight}")]
    BadWeight {
        /// The arm's position.
        index: usize,
        /// The weight given.
        weight: f64,
    },
    /// Two arms have the same name.
    #[error("`arms[{index}].name` repeats `{name}`")]
    DuplicateArm {
        /// The position of the second arm with that name.
        index: usize,
        /// The repeated name.
        name: String,
    },
    /// The holdout share is outside `[0, 1)` or not finite.
    #[error("`holdout` must be in [0, 1), not {0}")]
    BadHoldout(f64),
    /// A bucket range is empty or reaches past [`LAYER_BUCKETS`].
    #[error("`buckets` {start}..{end} must be a non-empty range within 0..{LAYER_BUCKETS}")]
    BadBuckets {
        /// First bucket of the range.
        start: u32,
        /// One past its last bucket.
        end: u32,
    },
    /// A bucket range overlaps the range of an experiment already in the layer.
    #[error("`buckets` {start}..{end} overlap experiment `{other}` in this layer")]
    Overlap {
        /// First bucket of the refused range.
        start: u32,
        /// One past its last bucket.
        end: u32,
        /// The experiment that holds some of those buckets.
        other: String,
    },
}

/// The seed of one purpose's hash under a salt.
fn seed(salt: &str, purpose: u64) -> u64 {
    xxh3_64_with_seed(salt.as_bytes(), HASH_SEED ^ purpose)
}

/// The user's point in `[0, 1)` under a seed: the top 53 bits of its hash.
fn unit(seed: u64, user: &str) -> f64 {
    (xxh3_64_with_seed(user.as_bytes(), seed) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// An experiment's assignment rule: weighted arms and a holdout share under a salt.
#[derive(Clone, Debug)]
pub struct Split {
    name: String,
    arm_seed: u64,
    holdout_seed: u64,
    arms: Vec<String>,
    /// Cumulative arm weights divided by their total; the last is exactly 1.
    cumulative: Vec<f64>,
    holdout: f64,
}

impl Split {
    /// A split of the users not held out over `arms` (name, weight), in proportion to the
    /// weights; a share `holdout` of all users is held out. Weights need not sum to 1.
    pub fn new(
        name: &str,
        salt: &str,
        arms: &[(&str, f64)],
        holdout: f64,
    ) -> Result<Split, SplitError> {
        if arms.is_empty() {
            return Err(SplitError::NoArms);
        }
        if !(0.0..1.0).contains(&holdout) {
            return Err(SplitError::BadHoldout(holdout));
        }
        for (index, &(arm, weight)) in arms.iter().enumerate() {
            if !(weight.is_finite() && weight > 0.0) {
                return Err(SplitError::BadWeight { index, weight });
            }
            if arms[..index].iter().any(|&(other, _)| other == arm) {
                let name = arm.to_string();
                return Err(SplitError::DuplicateArm { index, name });
            }
        }
        let total: f64 = arms.iter().map(|&(_, w)| w).sum();
        let mut running = 0.0;
        let mut cumulative: Vec<f64> = arms
            .iter()
            .map(|&(_, w)| {
                running += w;
                running / total
            })
            .collect();
        // Rounding may leave the last a hair under 1; a point in [0, 1) must always find an arm.
        *cumulative.last_mut().expect("arms is not empty") = 1.0;
        Ok(Split {
            name: name.to_string(),
            arm_seed: seed(salt, PURPOSE_ARM),
            holdout_seed: seed(salt, PURPOSE_HOLDOUT),
            arms: arms.iter().map(|&(arm, _)| arm.to_string()).collect(),
            cumulative,
            holdout,
        })
    }

    /// The user's place in this experiment. The same id always gets the same answer.
    pub fn assign(&self, user: &str) -> Assignment {
        if unit(self.holdout_seed, user) < self.holdout {
            return Assignment::Holdout;
        }
        let point = unit(self.arm_seed, user);
        let index = self.cumulative.partition_point(|&c| c <= point);
        Assignment::Arm(index.min(self.arms.len() - 1))
    }

    /// The experiment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The arms' names, in the order [`Assignment::Arm`] indexes them.
    pub fn arms(&self) -> &[String] {
        &self.arms
    }

    /// The share of users held out.
    pub fn holdout(&self) -> f64 {
        self.holdout
    }
}

/// A hash space shared by mutually exclusive experiments, each owning a bucket range.
#[derive(Clone, Debug)]
pub struct Layer {
    seed: u64,
    experiments: Vec<(Range<u32>, Split)>,
}

impl Layer {
    /// An empty layer whose buckets are hashed under `salt`.
    pub fn new(salt: &str) -> Layer {
        Layer {
            seed: seed(salt, PURPOSE_LAYER),
            experiments: Vec::new(),
        }
    }

    /// The user's bucket in this layer, in `0..LAYER_BUCKETS`.
    pub fn bucket(&self, user: &str) -> u32 {
        let hash = xxh3_64_with_seed(user.as_bytes(), self.seed);
        ((u128::from(hash) * u128::from(LAYER_BUCKETS)) >> 64) as u32
    }

    /// Gives `split` the users whose bucket is in `buckets`. Refused, and the layer unchanged,
    /// if the range is empty, reaches past the layer or overlaps another experiment's.
    pub fn add(&mut self, buckets: Range<u32>, split: Split) -> Result<(), SplitError> {
        let (start, end) = (buckets.start, buckets.end);
        if start >= end || end > LAYER_BUCKETS {
            return Err(SplitError::BadBuckets { start, end });
        }
        if let Some((_, other)) = self
            .experiments
            .iter()
            .find(|(taken, _)| taken.start < end && start < taken.end)
        {
            let other = other.name().to_string();
            return Err(SplitError::Overlap { start, end, other });
        }
        self.experiments.push((buckets, split));
        Ok(())
    }

    /// The experiment the user is in, if any, and its place there.
    pub fn assign(&self, user: &str) -> Option<(&Split, Assignment)> {
        let bucket = self.bucket(user);
        self.experiments
            .iter()
            .find(|(range, _)| range.contains(&bucket))
            .map(|(_, split)| (split, split.assign(user)))
    }

    /// The experiments in the layer with their bucket ranges, in the order they were added.
    pub fn experiments(&self) -> impl Iterator<Item = (&Range<u32>, &Split)> {
        self.experiments.iter().map(|(range, split)| (range, split))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERS: usize = 100_000;

    fn user(i: usize) -> String {
        format!("user-{i}")
    }

    fn ab(name: &str, salt: &str) -> Split {
        Split::new(name, salt, &[("a", 1.0), ("b", 1.0)], 0.0).unwrap()
    }

    #[test]
    fn assignment_is_sticky_and_pinned() {
        let first = Split::new("e", "salt-1", &[("a", 1.0), ("b", 2.0)], 0.1).unwrap();
        let again = Split::new("e", "salt-1", &[("a", 1.0), ("b", 2.0)], 0.1).unwrap();
        for i in 0..1000 {
            assert_eq!(first.assign(&user(i)), again.assign(&user(i)), "user {i}");
        }
        // Pinned values: a change here reassigns every running experiment's users.
        let layer = Layer::new("layer-1");
        let pinned: Vec<_> = (0..4).map(|i| layer.bucket(&user(i))).collect();
        assert_eq!(pinned, PINNED_BUCKETS);
        let pinned: Vec<_> = (0..8).map(|i| first.assign(&user(i))).collect();
        assert_eq!(pinned, pinned_arms());
    }

    const PINNED_BUCKETS: [u32; 4] = [7466, 4702, 6384, 3727];

    fn pinned_arms() -> Vec<Assignment> {
        use Assignment::{Arm, Holdout};
        vec![
            Arm(0),
            Arm(1),
            Arm(0),
            Holdout,
            Arm(1),
            Arm(0),
            Arm(0),
            Arm(1),
        ]
    }

    #[test]
    fn weights_and_holdout_are_respected_on_100k_users() {
        let split = Split::new("e", "w", &[("a", 1.0), ("b", 2.0), ("c", 7.0)], 0.1).unwrap();
        let mut counts = [0usize; 4]; // holdout, a, b, c
        for i in 0..USERS {
            match split.assign(&user(i)) {
                Assignment::Holdout => counts[0] += 1,
                Assignment::Arm(arm) => counts[arm + 1] += 1,
            }
        }
        let expected = [0.1, 0.09, 0.18, 0.63];
        for (got, want) in counts.iter().zip(expected) {
            let share = *got as f64 / USERS as f64;
            // 5 standard deviations of a share near 0.5 at 100k users is 0.008.
            assert!((share - want).abs() < 0.008, "{counts:?} vs {expected:?}");
        }
    }

    #[test]
    fn a_larger_holdout_moves_users_into_it_and_never_between_arms() {
        let arms = [("a", 1.0), ("b", 1.0), ("c", 2.0)];
        let small = Split::new("e", "h", &arms, 0.05).unwrap();
        let large = Split::new("e", "h", &arms, 0.2).unwrap();
        for i in 0..10_000 {
            let (before, after) = (small.assign(&user(i)), large.assign(&user(i)));
            if after != Assignment::Holdout {
                assert_eq!(before, after, "user {i}");
            }
            if before == Assignment::Holdout {
                assert_eq!(after, Assignment::Holdout, "user {i}");
            }
        }
    }

    #[test]
    fn experiments_with_different_salts_are_independent() {
        // Pearson's chi-square on the 2×2 table of the two experiments' arms; 1 degree of
        // freedom, 10.83 is its 0.999 quantile.
        let (first, second) = (ab("one", "salt-one"), ab("two", "salt-two"));
        let mut table = [[0f64; 2]; 2];
        for i in 0..USERS {
            let (Assignment::Arm(x), Assignment::Arm(y)) =
                (first.assign(&user(i)), second.assign(&user(i)))
            else {
                unreachable!("no holdout");
            };
            table[x][y] += 1.0;
        }
        let n = USERS as f64;
        let rows = [table[0][0] + table[0][1], table[1][0] + table[1][1]];
        let cols = [table[0][0] + table[1][0], table[0][1] + table[1][1]];
        let mut chi_square = 0.0;
        for x in 0..2 {
            for y in 0..2 {
                let expected = rows[x] * cols[y] / n;
                chi_square += (table[x][y] - expected).powi(2) / expected;
            }
        }
        assert!(
            chi_square < 10.83,
            "chi-square {chi_square:.2}, table {table:?}"
        );
        // The same salt gives the same split: fully dependent.
        let twin = ab("twin", "salt-one");
        assert!((0..1000).all(|i| first.assign(&user(i)) == twin.assign(&user(i))));
    }

    #[test]
    fn experiments_in_one_layer_are_mutually_exclusive() {
        let mut layer = Layer::new("layer");
        layer.add(0..3000, ab("left", "l")).unwrap();
        layer.add(3000..10_000, ab("right", "r")).unwrap();
        let err = layer.add(2000..4000, ab("late", "x")).unwrap_err();
        assert_eq!(
            err,
            SplitError::Overlap {
                start: 2000,
                end: 4000,
                other: "left".into()
            }
        );
        assert_eq!(layer.experiments().count(), 2);
        let mut left = 0;
        for i in 0..USERS {
            let (split, _) = layer.assign(&user(i)).expect("the layer is full");
            let bucket = layer.bucket(&user(i));
            assert_eq!(split.name() == "left", bucket < 3000, "user {i}");
            left += usize::from(split.name() == "left");
        }
        let share = left as f64 / USERS as f64;
        assert!((share - 0.3).abs() < 0.008, "left share {share}");
        // A partly filled layer leaves the other buckets' users out of every experiment.
        let mut sparse = Layer::new("sparse");
        sparse.add(0..100, ab("tiny", "t")).unwrap();
        let inside = (0..USERS)
            .filter(|&i| sparse.assign(&user(i)).is_some())
            .count();
        assert!(
            (inside as f64 / USERS as f64 - 0.01).abs() < 0.002,
            "{inside}"
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let err = |arms: &[(&str, f64)], holdout| Split::new("e", "s", arms, holdout).unwrap_err();
        assert_eq!(err(&[], 0.0), SplitError::NoArms);
        assert!(matches!(
            err(&[("a", 1.0), ("b", 0.0)], 0.0),
            SplitError::BadWeight { index: 1, .. }
        ));
        assert!(matches!(
            err(&[("a", f64::NAN)], 0.0),
            SplitError::BadWeight { index: 0, .. }
        ));
        assert!(matches!(
            err(&[("a", 1.0), ("a", 1.0)], 0.0),
            SplitError::DuplicateArm { index: 1, .. }
        ));
        assert_eq!(err(&[("a", 1.0)], 1.0), SplitError::BadHoldout(1.0));
        let mut layer = Layer::new("l");
        let refused = layer.add(5..5, ab("e", "s")).unwrap_err();
        assert!(refused.to_string().contains("`buckets` 5..5"), "{refused}");
        assert!(layer.add(0..10_001, ab("e", "s")).is_err());
        assert_eq!(layer.experiments().count(), 0);
    }
}
