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
//! - `spec`: an experiment as data (arms with weights and policies, salt, holdout, layer,
//!   metric), checked once, naming the field at fault.
//! - `registry`: the engine's experiments, the snapshot a decision reads to find its arm, the
//!   audit trail, and `Live::results` (lifts, intervals, SRM, status).
//! - `tally`: the per-arm counters a shard keeps for the decisions it made, merged on read.
//!
//! **No module here reads a clock, touches user state or knows the wire**: the engine stamps
//! times, the shard counts, the wire parses. The formulas and their limits are in
//! `docs/experiments.md`.

pub mod assign;
pub mod registry;
pub mod spec;
pub mod srm;
pub mod stats;
pub mod tally;

pub use assign::{Assignment, Layer, Split, SplitError, LAYER_BUCKETS};
pub use registry::{
    ArmResult, AuditAction, AuditEntry, Chosen, ExperimentResults, MetricResult, Registry, Status,
};
pub use spec::{ArmPolicy, ArmSpec, ExperimentSpec, Metric, PolicyFields, Tuning};
pub use srm::{SampleRatio, SRM_ALPHA};
pub use stats::{Effect, Estimate, Mixture, Moments, Sequential, DEFAULT_MIN_COUNT};
pub use tally::{ArmTag, ArmTally, Earned, Tallies};
