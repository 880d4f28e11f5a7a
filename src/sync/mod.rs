//! Synchronization primitives the engine builds on. Everything `unsafe` lives here.

pub mod oneshot;
