//! nudge: a real-time personalization engine. One actor per active user holds a decayed state
//! vector and a personal model that takes an Adam step on every event; decisions (rank these
//! items, pick this variant) are answered in microseconds.
//!
//! A request travels, and the modules are listed in that order:
//! - `wire`: (with the `server` feature) the JSON protocol and the TCP, WebSocket and HTTP
//!   front ends; the only code that knows JSON;
//! - `engine`: the embeddable API (`Engine`): validates input at the boundary, routes it;
//! - `shard`: shards (each a lock and a bounded queue, run by whichever thread holds it) and their handlers; each owns its users;
//! - `actor`: one user's state, signal hygiene and the lazy decay;
//! - `model`: feature hashing, the score, item co-occurrence, Adam/AdaGrad, exploration,
//!   global replicas.
//!
//! Beside that path: `persist` (the data directory, per-shard write-ahead logs and their
//! binary format), `api` (request and reply types), `config`, `catalog`, `clock`, `ids`,
//! `error`, `rng`, and `sync` (the one-shot reply channel, the only `unsafe` code).
//! `experiment` holds A/B/n tests (issue 13): definitions, the registry the engine assigns
//! each decision's arm from, the per-arm tallies shards keep, and the always-valid statistics.
//! `rules` holds the rule language (a compiled CEL subset) and the actions a rule set applies
//! in the decision path (issue 14); the live features rules read are the actor's.
//! `tone` holds tone decisions for chatbots (issue 15): the tones' priors on the user's
//! sentiment and a small built-in lexicon scorer for text.
//! `consent` holds what a user allows (personalization, storage) and its defaults.
//! `saturation` holds frequency caps, fatigue and diversity (issue 15), placed through the
//! rules' exact placement.
//! `template` holds templates (issue 15): Mustache texts with slots of variants, versioned,
//! one variant per slot chosen by the shard and the text rendered by the engine.
//! `triggers` holds threshold triggers (issue 14): conditions in the rules' language checked
//! after each event, edge-triggered per user, delivered in the reply and through a hub.
//!
//! Cargo features, all on by default: `server` (the front ends in `server`, and `wire`),
//! `eval` (the evaluation tools in `eval`: simulator, data sets, replay, the JSONL decision
//! log) and `cli` (the `nudge` binary; implies both). With `default-features = false` the crate
//! is the engine alone, without tokio, actix or clap.
//!
//! ```
//! use nudge::{DecideRequest, Engine, Event, EventKind, ItemSpec};
//! let engine = Engine::builder().shards(1).seed(7).build().unwrap();
//! engine.upsert_item(ItemSpec::new("boots").attr("category", "shoes")).unwrap();
//! engine.upsert_item(ItemSpec::new("scarf").attr("category", "winter")).unwrap();
//! engine.ingest(Event::new("u1", EventKind::Click).item("boots")).unwrap();
//! let d = engine.decide(DecideRequest::new("u1", ["boots", "scarf"], 2)).unwrap();
//! assert_eq!(d.items.len(), 2);
//! engine.shutdown();
//! ```
#![warn(missing_docs)]

pub mod actor;
pub mod api;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod consent;
pub mod engine;
pub mod error;
#[cfg(feature = "eval")]
pub mod eval;
pub mod experiment;
pub mod ids;
pub mod model;
pub mod persist;
pub mod rng;
pub mod rules;
pub mod saturation;
#[cfg(feature = "server")]
pub mod server;
pub mod shard;
pub mod sync;
pub mod template;
pub mod tone;
pub mod triggers;
#[cfg(feature = "server")]
pub mod wire;

pub use api::ExperimentArm;
pub use api::{
    Ack, Candidate, Context, DecideRequest, Decision, DecisionLog, DurabilityStats, Event,
    EventKind, ItemSpec, LogRecord, LoggedPlacement, OpenDecision, OutcomeSource, Placement,
    RuleEffect, SaturationEffect, SaturationKind, ScoreParts, SegmentLabel, SegmentReport,
    SentimentSource, ShardStats, SignalSummary, Stats, ToneDecision, ToneRequest, TriggerFiring,
    TriggerSink, TriggerStats, UpdateCause, UpdateSink, UserExport, UserUpdate,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, FsyncPolicy, OnFull, PolicyKind, RuleConfig, TriggerConfig};
pub use consent::Consent;
pub use engine::{Engine, EngineBuilder};
pub use error::{Error, ErrorCode, Problem, StartError};
pub use experiment::{ArmPolicy, ArmSpec, ExperimentResults, ExperimentSpec, Metric, Status};
pub use ids::{DecisionId, ItemId, ShardId, UserId};
