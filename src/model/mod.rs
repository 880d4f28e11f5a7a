//! The model: feature maps, the score, the reward, Adam and AdaGrad steps, exploration, and the
//! global parameters with their shard-local replicas.
//!
//! **Invariant:** the model never reads the clock and never draws randomness it was not handed:
//! time arrives as elapsed seconds, randomness as an `Rng`. Everything here is deterministic.

pub mod adam;
pub mod cooccur;
pub mod features;
pub mod global;
pub mod items;
pub mod keyindex;
pub mod math;
pub mod policy;
pub mod reward;
pub mod score;
pub mod segments;

pub use features::{FeatureSpace, ItemFeatures, SparseVec};
pub use global::{GlobalReplica, Mixer};
pub use items::{ItemTable, Row};
