//! The user actor: per-user state (decayed state vector, personal model, signal statistics,
//! live features, open decisions) and the signal hygiene applied to each event.
//!
//! **Invariant:** actor code is synchronous and single-owner: no locks, no I/O, no clock reads.
//! The shard that owns an actor passes time in with each message.

pub mod features;
pub mod signals;
pub mod user;

pub use features::{Feature, LiveFeatures};
pub use signals::Signals;
pub use user::UserActor;
