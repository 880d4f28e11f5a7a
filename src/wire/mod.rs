//! `wire`: the JSON protocol, and the only code that knows JSON. It parses one request (a TCP
//! line, a WebSocket text frame, an HTTP body) with simd-json into owned `nudge::api` values,
//! and writes replies and pushes as JSON into a caller's reusable buffer.
//!
//! It owns the request shapes (`Request`, `Op`), the reply shapes (`Reply`) and the protocol's
//! errors (`WireError`, whose codes are the one table `ErrorCode`). It does not execute
//! anything, and it sits below the engine: **parsing never needs an `Engine`** (it does not
//! import the engine module). What only the engine's configuration can settle is left for
//! execution: an event's type that is not built in stays a name (`EventType::Named`) until the
//! server's session resolves it as an alias. It does no I/O and never panics on input: any
//! bytes give either a request or a `Rejected` with the request's `id` when it can be
//! recovered.
//!
//! ```
//! use nudge::wire::{EventType, Op, Parser};
//! use nudge::EventKind;
//! let mut parser = Parser::new();
//! let mut line = br#"{"op":"event","id":1,"user":"u1","type":"click","item":"i9"}"#.to_vec();
//! let request = parser.parse(&mut line, None).unwrap();
//! let Op::Event(event) = request.op else { panic!("an event") };
//! assert_eq!(event.kind, EventType::Builtin(EventKind::Click));
//! ```

mod experiment;
mod json;
mod parse;
mod reply;
mod rules;
mod saturation;
mod segment;
mod segmentation;
mod syntax;
mod template;
mod triggers;

use std::fmt;

use crate::api::{Context, DecideRequest, Event, EventKind, ItemSpec};
use crate::error::{Error, ErrorCode, Problem};
use crate::ids::DecisionId;

pub use json::write_str;
pub use parse::{recover_id, Parser, MIN_TS_MS};
pub use reply::{write_error, write_events_summary, write_push, write_reply, Reply};
pub use segment::{parse_time_ms, CallType, Scalar, SegmentCall};
pub use template::TemplateOp;
pub use triggers::{write_firing, write_trigger_push};

/// A request's `id`, echoed in its reply: a number, a string, or absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ReqId {
    /// No id was given (or none could be recovered); written as `null`.
    #[default]
    None,
    /// A signed integer id.
    Int(i64),
    /// An unsigned integer id too large for `i64`.
    Uint(u64),
    /// A floating-point id.
    Float(f64),
    /// A string id.
    Str(Box<str>),
}

/// The operations of the protocol, by name, for routing and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `event`: ingest one event.
    Event,
    /// `decide`: rank candidates.
    Decide,
    /// `reward`: attribute a reward to a decision.
    Reward,
    /// `item`: insert or replace a catalog item.
    Item,
    /// `remove_item`: remove a catalog item.
    RemoveItem,
    /// `user`: export a user's state.
    User,
    /// `forget`: erase a user.
    Forget,
    /// `ping`: liveness.
    Ping,
    /// `stats`: engine counters.
    Stats,
    /// `batch`: many ops in one request.
    Batch,
    /// `subscribe`: push a user's updates (WebSocket only).
    Subscribe,
    /// `unsubscribe`: stop pushing a user's updates (WebSocket only).
    Unsubscribe,
    /// `create_experiment`: start an experiment.
    CreateExperiment,
    /// `stop_experiment`: stop an experiment.
    StopExperiment,
    /// `promote_experiment`: give one arm to everyone an experiment takes.
    PromoteExperiment,
    /// `update_experiment`: change an experiment's holdout, targeting or guardrails.
    UpdateExperiment,
    /// `restore_experiments`: bring every experiment back to an earlier audit version.
    RestoreExperiments,
    /// `experiment_results`: an experiment's arms, lifts and status.
    ExperimentResults,
    /// `experiments`: every experiment and the audit trail.
    Experiments,
    /// `rules`: replace the rule set (with `rules`), or read it (without).
    Rules,
    /// `features`: a user's live features.
    Features,
    /// `tone`: record a message's sentiment and choose the tone to answer it in.
    Tone,
    /// `consent`: change or read what a user allows.
    Consent,
    /// `template`: register a template version, read its versions, or roll back (issue 15).
    Template,
    /// `triggers`: replace the threshold triggers (with `triggers`), or read them (without).
    Triggers,
    /// `segments`: name a segment (with `segment` and `name`), and list every segment.
    Segments,
}

impl OpKind {
    /// Every op, in a fixed order (metrics index by it).
    pub const ALL: [OpKind; 26] = [
        OpKind::Event,
        OpKind::Decide,
        OpKind::Reward,
        OpKind::Item,
        OpKind::RemoveItem,
        OpKind::User,
        OpKind::Forget,
        OpKind::Ping,
        OpKind::Stats,
        OpKind::Batch,
        OpKind::Subscribe,
        OpKind::Unsubscribe,
        OpKind::CreateExperiment,
        OpKind::StopExperiment,
        OpKind::PromoteExperiment,
        OpKind::ExperimentResults,
        OpKind::Experiments,
        OpKind::Rules,
        OpKind::Features,
        OpKind::Tone,
        OpKind::Consent,
        OpKind::Template,
        OpKind::Triggers,
        OpKind::Segments,
        OpKind::UpdateExperiment,
        OpKind::RestoreExperiments,
    ];

    /// The op's wire name.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Event => "event",
            OpKind::Decide => "decide",
            OpKind::Reward => "reward",
            OpKind::Item => "item",
            OpKind::RemoveItem => "remove_item",
            OpKind::User => "user",
            OpKind::Forget => "forget",
            OpKind::Ping => "ping",
            OpKind::Stats => "stats",
            OpKind::Batch => "batch",
            OpKind::Subscribe => "subscribe",
            OpKind::Unsubscribe => "unsubscribe",
            OpKind::CreateExperiment => "create_experiment",
            OpKind::StopExperiment => "stop_experiment",
            OpKind::PromoteExperiment => "promote_experiment",
            OpKind::ExperimentResults => "experiment_results",
            OpKind::Experiments => "experiments",
            OpKind::Rules => "rules",
            OpKind::Features => "features",
            OpKind::Tone => "tone",
            OpKind::Consent => "consent",
            OpKind::Template => "template",
            OpKind::Triggers => "triggers",
            OpKind::Segments => "segments",
            OpKind::UpdateExperiment => "update_experiment",
            OpKind::RestoreExperiments => "restore_experiments",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The op's position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An event's `type` as parsed: a built-in kind, or a name only the engine's configuration
/// can resolve (an alias, or no type at all).
#[derive(Clone, Debug, PartialEq)]
pub enum EventType {
    /// A built-in kind (`click`, `dwell`, …).
    Builtin(EventKind),
    /// Any other name; resolved at execution (`Engine::event_kind`).
    Named(Box<str>),
}

/// An `event` as parsed: an `api::Event` whose type may still be a name.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRequest {
    /// The user's id.
    pub user: String,
    /// The event's type.
    pub kind: EventType,
    /// The item it happened to, if any.
    pub item: Option<String>,
    /// The type's numeric signal.
    pub value: Option<f64>,
    /// Event time, Unix ms; `None`: now.
    pub ts_ms: Option<u64>,
    /// Context of the event.
    pub context: Context,
    /// The decision it answers, if known.
    pub decision: Option<DecisionId>,
    /// Its idempotency key, if any.
    pub event_id: Option<String>,
}

impl EventRequest {
    /// The engine's event, its type resolved: a built-in kind as is, a name by `alias` (the
    /// engine's `event_kind`, which refuses an unknown name naming `type`).
    pub fn resolve(
        self,
        alias: impl FnOnce(&str) -> Result<EventKind, Error>,
    ) -> Result<Event, Error> {
        let kind = match &self.kind {
            EventType::Builtin(kind) => *kind,
            EventType::Named(name) => alias(name)?,
        };
        Ok(Event {
            user: self.user,
            kind,
            item: self.item,
            value: self.value,
            ts_ms: self.ts_ms,
            context: self.context,
            decision: self.decision,
            event_id: self.event_id,
        })
    }

    /// The same request with its type resolved by the built-in names alone (no aliases).
    pub fn builtin(self) -> Result<Event, Error> {
        self.resolve(|name| {
            let problem = Problem::UnknownEventType(name.to_string());
            Err(Error::invalid("type", problem))
        })
    }
}

/// One parsed operation, holding owned `nudge::api` values ready for the engine.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Ingest an event.
    Event(EventRequest),
    /// Rank candidates.
    Decide(DecideRequest),
    /// Attribute an explicit reward (0..=1) to an item of a decision.
    Reward {
        /// The decision.
        decision: DecisionId,
        /// The rewarded item.
        item: String,
        /// The reward.
        value: f64,
        /// Its time (Unix ms); `None`: now.
        ts_ms: Option<u64>,
    },
    /// Insert or replace a catalog item.
    Item(ItemSpec),
    /// Remove a catalog item by id.
    RemoveItem(String),
    /// Export a user's state.
    User(String),
    /// Erase a user.
    Forget(String),
    /// Liveness check.
    Ping,
    /// Engine counters.
    Stats,
    /// Many ops; each element parsed on its own (a bad one does not spoil the others).
    Batch(Vec<Result<Request, Rejected>>),
    /// Push a user's updates to this connection.
    Subscribe(String),
    /// Stop pushing a user's updates.
    Unsubscribe(String),
    /// Start an experiment.
    CreateExperiment {
        /// Its definition, as the config file spells it.
        experiment: Box<crate::config::ExperimentConfig>,
        /// Why, for the audit trail.
        reason: String,
    },
    /// Stop an experiment.
    StopExperiment {
        /// The experiment.
        name: String,
        /// Why, for the audit trail.
        reason: String,
    },
    /// Promote an arm of an experiment.
    PromoteExperiment {
        /// The experiment.
        name: String,
        /// The arm.
        arm: String,
        /// Why, for the audit trail.
        reason: String,
    },
    /// Replace an experiment's definition (what may change in place).
    UpdateExperiment {
        /// The new definition, as the config file spells it.
        experiment: Box<crate::config::ExperimentConfig>,
        /// Why, for the audit trail.
        reason: String,
    },
    /// Bring every experiment back to an earlier audit version.
    RestoreExperiments {
        /// The version.
        version: u64,
        /// Why, for the audit trail.
        reason: String,
    },
    /// An experiment's results.
    ExperimentResults(String),
    /// Every experiment and the audit trail.
    Experiments,
    /// Replace the rule set (`Some`), or read it (`None`).
    Rules(Option<Vec<crate::config::RuleConfig>>),
    /// A user's live features.
    Features(String),
    /// A chatbot message: its sentiment recorded, a tone chosen.
    Tone(crate::api::ToneRequest),
    /// Change the purposes given (neither: read) of a user's consent.
    Consent(String, crate::consent::ConsentUpdate),
    /// A `decide` over a template (issue 15): one variant per slot, the text rendered.
    DecideTemplate(Box<crate::template::TemplateRequest>),
    /// A `reward` with no `item`: every placement of the decision (every slot of a template
    /// decision) takes it.
    RewardDecision {
        /// The decision.
        decision: DecisionId,
        /// The reward.
        value: f64,
        /// Its time (Unix ms); `None`: now.
        ts_ms: Option<u64>,
    },
    /// Register, read or roll back a template.
    Template(TemplateOp),
    /// Replace the threshold triggers (`Some`), or read them (`None`).
    Triggers(Option<Vec<crate::config::TriggerConfig>>),
    /// Push every firing of a trigger, by name (WebSocket only; `subscribe` with `trigger`).
    SubscribeTrigger(String),
    /// Stop pushing a trigger's firings (`unsubscribe` with `trigger`).
    UnsubscribeTrigger(String),
    /// Name a segment (with `name`), then list every segment.
    Segments {
        /// The segment to name: its id in decimal, or its current name.
        segment: Option<String>,
        /// Its new name (`None`: list only).
        name: Option<String>,
    },
}

impl Op {
    /// The op's kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Event(_) => OpKind::Event,
            Op::Decide(_) => OpKind::Decide,
            Op::Reward { .. } => OpKind::Reward,
            Op::Item(_) => OpKind::Item,
            Op::RemoveItem(_) => OpKind::RemoveItem,
            Op::User(_) => OpKind::User,
            Op::Forget(_) => OpKind::Forget,
            Op::Ping => OpKind::Ping,
            Op::Stats => OpKind::Stats,
            Op::Batch(_) => OpKind::Batch,
            Op::Subscribe(_) => OpKind::Subscribe,
            Op::Unsubscribe(_) => OpKind::Unsubscribe,
            Op::CreateExperiment { .. } => OpKind::CreateExperiment,
            Op::StopExperiment { .. } => OpKind::StopExperiment,
            Op::PromoteExperiment { .. } => OpKind::PromoteExperiment,
            Op::UpdateExperiment { .. } => OpKind::UpdateExperiment,
            Op::RestoreExperiments { .. } => OpKind::RestoreExperiments,
            Op::ExperimentResults(_) => OpKind::ExperimentResults,
            Op::Experiments => OpKind::Experiments,
            Op::Rules(_) => OpKind::Rules,
            Op::Features(_) => OpKind::Features,
            Op::Tone(_) => OpKind::Tone,
            Op::Consent(..) => OpKind::Consent,
            Op::DecideTemplate(_) => OpKind::Decide,
            Op::RewardDecision { .. } => OpKind::Reward,
            Op::Template(_) => OpKind::Template,
            Op::Triggers(_) => OpKind::Triggers,
            Op::SubscribeTrigger(_) => OpKind::Subscribe,
            Op::UnsubscribeTrigger(_) => OpKind::Unsubscribe,
            Op::Segments { .. } => OpKind::Segments,
        }
    }
}

/// A parsed request: its id and its op.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The id to echo.
    pub id: ReqId,
    /// What to do.
    pub op: Op,
}

/// A request that could not be parsed: the id to echo (if recovered) and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    /// The id to echo, when it could be recovered.
    pub id: ReqId,
    /// What is wrong.
    pub error: WireError,
}

/// The protocol's errors: the engine's own, plus what only the wire can get wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum WireError {
    /// The engine refused the request, or a field failed validation (its code is the engine's).
    Engine(Error),
    /// The bytes are not JSON (the text is the parser's).
    NotJson(String),
    /// The request is JSON but not an object.
    NotObject,
    /// `op` names no operation.
    UnknownOp(String),
    /// The op exists but is not available here (e.g. `subscribe` outside WebSocket).
    Unsupported(&'static str),
    /// A batch inside a batch.
    NestedBatch,
    /// The request is larger than `limit` bytes.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Some other malformed input; the text says what.
    BadRequest(String),
    /// No HTTP route has this path.
    NoRoute {
        /// The path asked for.
        path: String,
    },
    /// The HTTP route exists but not for this method.
    MethodNotAllowed {
        /// The method asked for.
        method: String,
        /// The methods the route answers, as in `Allow`.
        allow: &'static str,
    },
    /// A request did not arrive whole within the server's deadline; the connection closes.
    RequestTimeout {
        /// The deadline, in milliseconds from the request's first byte.
        ms: u64,
    },
    /// The server holds its maximum number of connections.
    TooManyConnections {
        /// The limit.
        max: usize,
    },
}

impl WireError {
    /// The stable machine-readable code of the error (its HTTP status and metric label too).
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::Engine(e) => e.code(),
            WireError::TooLarge { .. } => ErrorCode::TooLarge,
            WireError::TooManyConnections { .. } => ErrorCode::TooManyConnections,
            WireError::RequestTimeout { .. } => ErrorCode::Timeout,
            WireError::NoRoute { .. } => ErrorCode::NotFound,
            WireError::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            WireError::NotJson(_)
            | WireError::NotObject
            | WireError::UnknownOp(_)
            | WireError::Unsupported(_)
            | WireError::NestedBatch
            | WireError::BadRequest(_) => ErrorCode::BadRequest,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Engine(e) => fmt::Display::fmt(e, f),
            WireError::NotJson(why) => write!(f, "the request is not valid JSON: {why}"),
            WireError::NotObject => f.write_str("the request must be a JSON object"),
            WireError::UnknownOp(op) => write!(f, "`{op}` is not a known op"),
            WireError::Unsupported(what) => f.write_str(what),
            WireError::NestedBatch => f.write_str("a batch may not contain a batch"),
            WireError::BadRequest(what) => f.write_str(what),
            WireError::TooLarge { limit } => {
                write!(f, "the request is longer than {limit} bytes")
            }
            WireError::NoRoute { path } => write!(f, "no route `{path}` (see docs/protocol.md)"),
            WireError::MethodNotAllowed { method, allow } => {
                write!(f, "this route does not answer {method}; it answers {allow}")
            }
            WireError::RequestTimeout { ms } => write!(
                f,
                "the request did not arrive whole within {ms} ms of its first byte; closing"
            ),
            WireError::TooManyConnections { max } => write!(
                f,
                "the server holds its maximum of {max} connections; try again later"
            ),
        }
    }
}

impl From<Error> for WireError {
    fn from(e: Error) -> Self {
        WireError::Engine(e)
    }
}
