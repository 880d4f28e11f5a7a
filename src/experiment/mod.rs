//! Experiments' statistical core (issue 13): which arm a user gets, and when a difference
//! between arms is real. Plain values and pure functions, in the order a result is made:
//!
//! - `assign`: sticky assignment, a stable hash of (user id, salt) over weighted arms with a
//!   holdout share, and layers whose experiments claim disjoint bucket ranges (mutual
//!   exclusion). **Assignment stores nothing**: the same id and salt give the same arm on every
//!   machine, after every restart.
//! - `stats`: per-arm running moments (count, sum, sum of squares; merged across shards) and
//!   always-valid sequential inference (mSPRT with a normal mixture): a p-value and a
//!   confidence interval that stay valid however often they are read.
//! - `srm`: the sample-ratio-mismatch check, a χ² test of the arms' exposure counts against
//!   the shares the assignment promised.
//!
//! **This module owns no state and reads no clock**; it knows nothing of the engine, the wire
//! or decisions. Not here yet, by design of the first step: experiments as data (create, update,
//! stop, audit trail), attribution of decisions and outcomes to arms on the hot path, and
//! rollout. The formulas and their limits are in
//! `docs/experiments.md`.

pub mod assign;
pub mod srm;
pub mod stats;

pub use assign::{Assignment, Layer, Split, SplitError, LAYER_BUCKETS};
pub use srm::{SampleRatio, SRM_ALPHA};
pub use stats::{Effect, Estimate, Mixture, Moments, Sequential, DEFAULT_MIN_COUNT};
