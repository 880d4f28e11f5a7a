//! Shards: each the single owner of its users. A shard has no thread of its own: it sits in a
//! `ShardCell`, and whichever thread submits a message runs it while holding the shard (flat
//! combining, see `cell`), so a request is executed by the thread that received it.
//!
//! Everything a shard does to state goes through `Shard::handle`, one `match` over `Msg`, so
//! a log of handled messages replays exactly. The timer's work arrives as `Msg::Tick`, sent
//! by the engine's timer thread through the same path.

pub mod cell;
pub mod checkpoint;
pub mod consent;
pub mod durable;
pub mod learner;
pub mod msg;
pub mod passive;
pub mod pending;
mod ruled;
mod saturated;
pub mod seen;
mod segmented;
pub mod subscriptions;
pub mod templated;
mod triggered;
pub mod users;
pub mod worker;

pub use cell::{ShardCell, Sweeper};
pub use durable::Recovered;
pub use msg::Msg;
pub use worker::{Counters, Shard};
