//! The engine's typed errors: one enum for every failure a caller of `Engine` can see.
//!
//! Errors are cheap values (no boxing on the hot path) and each has a stable `code()`, an
//! `ErrorCode`: the one table of codes, which owns each code's wire name, metric label and
//! HTTP status (the front ends only frame it). Input can never cause a panic; it causes one of
//! these.

use std::fmt;

use crate::ids::{DecisionId, ShardId};

/// What is wrong with an input field.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// The field is required and was not given.
    Missing,
    /// The field is empty.
    Empty,
    /// The field is longer than `max` bytes.
    TooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// The value is NaN or infinite.
    NotFinite,
    /// The value is outside `min..=max`.
    OutOfRange {
        /// Smallest accepted value.
        min: f64,
        /// Largest accepted value.
        max: f64,
    },
    /// The timestamp is more than `max_skew_ms` ahead of the engine's clock.
    InFuture {
        /// How far ahead a timestamp may be, in milliseconds.
        max_skew_ms: u64,
    },
    /// The event type is neither built in nor configured as an alias.
    UnknownEventType(String),
    /// More than `max` elements were given.
    TooMany {
        /// The limit.
        max: usize,
    },
    /// The value does not have the expected shape (the text says which).
    Malformed(&'static str),
    /// The timestamp is before `min_ms` (Unix ms): zero, or seconds given for milliseconds.
    TooEarly {
        /// The earliest accepted timestamp, in Unix milliseconds.
        min_ms: u64,
    },
    /// The vector has the wrong number of dimensions.
    WrongDimension {
        /// The length that was given.
        got: usize,
    },
    /// The value is refused for the reason the text gives (an experiment's definition).
    Rejected(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("is missing"),
            Problem::Empty => f.write_str("is empty"),
            Problem::TooLong { max } => write!(f, "is longer than {max} bytes"),
            Problem::NotFinite => f.write_str("is not a finite number"),
            Problem::OutOfRange { min, max } => write!(f, "is outside {min}..={max}"),
            Problem::InFuture { max_skew_ms } => {
                write!(f, "is more than {max_skew_ms} ms in the future")
            }
            Problem::UnknownEventType(name) => write!(f, "`{name}` is not a known event type"),
            Problem::TooMany { max } => write!(f, "has more than {max} elements"),
            Problem::Rejected(why) => write!(f, "is refused: {why}"),
            Problem::Malformed(expected) => write!(f, "is malformed (expected {expected})"),
            Problem::TooEarly { min_ms } => write!(
                f,
                "is before {min_ms} (2000-01-01 in Unix milliseconds; seconds given for milliseconds?)"
            ),
            Problem::WrongDimension { got } => write!(f, "has an unusable length {got}"),
        }
    }
}

/// Every failure the engine reports to a caller.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Error {
    /// An input field failed validation; nothing was changed.
    #[error("field `{field}` {problem}")]
    Invalid {
        /// The field's name as the wire protocol spells it.
        field: &'static str,
        /// What is wrong with it.
        problem: Problem,
    },
    /// The shard's inbox is full and the caller asked not to wait.
    #[error("shard {} is busy: its inbox is full", .0.0)]
    Busy(ShardId),
    /// No open decision has this id (never issued, or erased with its user).
    #[error("unknown decision `{0}`")]
    UnknownDecision(DecisionId),
    /// The decision's attribution window has closed.
    #[error("decision `{0}` has expired")]
    ExpiredDecision(DecisionId),
    /// The item was not among the decision's placements.
    #[error("item `{item}` was not shown in decision `{decision}`")]
    NotShown {
        /// The decision.
        decision: DecisionId,
        /// The item named by the reward.
        item: String,
    },
    /// An explicit reward was already given for this item of this decision (a retry or a
    /// double click must not count twice).
    #[error("item `{item}` of decision `{decision}` was already rewarded")]
    AlreadyRewarded {
        /// The decision.
        decision: DecisionId,
        /// The item named by the reward.
        item: String,
    },
    /// The item is not in the catalog.
    #[error("unknown item `{0}`")]
    UnknownItem(String),
    /// No experiment has this name.
    #[error("unknown experiment `{0}`")]
    UnknownExperiment(String),
    /// An experiment with this name exists already (stopped ones too: names are not reused,
    /// so results and the audit trail stay unambiguous).
    #[error("experiment `{0}` exists already")]
    ExperimentExists(String),
    /// A Segment route needs the write key (as the HTTP Basic user name) and did not get it.
    #[error("a valid write key is required as the HTTP Basic user name")]
    Unauthorized,
    /// The engine is shutting down or has shut down.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The change was applied in memory but could not be made durable (the text says why:
    /// disk full, an I/O error); decisions and reads still work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Handling the request panicked inside the engine (a bug); the shard goes on serving,
    /// and the user's actor was reset. The text is the panic's message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for `Error::Invalid`.
    pub fn invalid(field: &'static str, problem: Problem) -> Self {
        Error::Invalid { field, problem }
    }

    /// The stable machine-readable code of this error, as the wire protocol reports it.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Invalid { .. } => ErrorCode::BadRequest,
            Error::Busy(_) => ErrorCode::Busy,
            Error::UnknownDecision(_) => ErrorCode::UnknownDecision,
            Error::ExpiredDecision(_) => ErrorCode::ExpiredDecision,
            Error::NotShown { .. } => ErrorCode::NotShown,
            Error::AlreadyRewarded { .. } => ErrorCode::AlreadyRewarded,
            Error::UnknownItem(_) => ErrorCode::UnknownItem,
            Error::UnknownExperiment(_) => ErrorCode::UnknownExperiment,
            Error::ExperimentExists(_) => ErrorCode::ExperimentExists,
            Error::ShuttingDown => ErrorCode::ShuttingDown,
            Error::Unauthorized => ErrorCode::Unauthorized,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// The protocol's table of error codes: every failure any caller can see (the engine's, and
/// those only a front end can meet), each owning its wire code (also its metric label,
/// `outcome="…"`) and its HTTP status. Adding a variant adds it to the metrics, the HTTP
/// statuses and the tests that walk `ALL`; nothing else lists codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Malformed JSON, an unknown op, a missing or invalid field.
    BadRequest,
    /// A shard's inbox is full and the caller asked not to wait.
    Busy,
    /// No such open decision.
    UnknownDecision,
    /// The decision's attribution window has closed.
    ExpiredDecision,
    /// The rewarded item was not placed by that decision.
    NotShown,
    /// An explicit reward for that decision and item was already applied.
    AlreadyRewarded,
    /// No such catalog item.
    UnknownItem,
    /// No such experiment.
    UnknownExperiment,
    /// An experiment of that name exists already.
    ExperimentExists,
    /// The engine or server is stopping.
    ShuttingDown,
    /// A Segment route without the configured write key.
    Unauthorized,
    /// A change applied in memory could not be made durable.
    Unavailable,
    /// Handling the request panicked inside the engine (a bug).
    Internal,
    /// A line, frame or body over its limit.
    TooLarge,
    /// Refused at `server.max_connections`.
    TooManyConnections,
    /// HTTP: no such route.
    NotFound,
    /// HTTP: the route answers other methods.
    MethodNotAllowed,
    /// A request did not arrive whole within `server.request_timeout_ms`.
    Timeout,
}

impl ErrorCode {
    /// Every code, in a fixed order (metrics index by it).
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::BadRequest,
        ErrorCode::Busy,
        ErrorCode::UnknownDecision,
        ErrorCode::ExpiredDecision,
        ErrorCode::NotShown,
        ErrorCode::AlreadyRewarded,
        ErrorCode::UnknownItem,
        ErrorCode::UnknownExperiment,
        ErrorCode::ExperimentExists,
        ErrorCode::ShuttingDown,
        ErrorCode::Unauthorized,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::TooLarge,
        ErrorCode::TooManyConnections,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Timeout,
    ];

    /// The code as the wire reports it (`"error":{"code":…}`) and as the metric label
    /// `outcome` spells it.
    pub fn as_str(self) -> &'static str {
        self.row().0
    }

    /// The HTTP status of a reply failing with this code.
    pub fn http_status(self) -> u16 {
        self.row().1
    }

    /// The code's position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The one table: wire code and metric label, HTTP status.
    fn row(self) -> (&'static str, u16) {
        match self {
            ErrorCode::BadRequest => ("bad_request", 400),
            ErrorCode::Busy => ("busy", 503),
            ErrorCode::UnknownDecision => ("unknown_decision", 404),
            ErrorCode::ExpiredDecision => ("expired_decision", 410),
            ErrorCode::NotShown => ("not_shown", 409),
            ErrorCode::AlreadyRewarded => ("already_rewarded", 409),
            ErrorCode::UnknownItem => ("unknown_item", 404),
            ErrorCode::UnknownExperiment => ("unknown_experiment", 404),
            ErrorCode::ExperimentExists => ("experiment_exists", 409),
            ErrorCode::ShuttingDown => ("shutting_down", 503),
            ErrorCode::Unauthorized => ("unauthorized", 401),
            ErrorCode::Unavailable => ("unavailable", 503),
            ErrorCode::Internal => ("internal", 500),
            ErrorCode::TooLarge => ("too_large", 413),
            ErrorCode::TooManyConnections => ("too_many_connections", 503),
            ErrorCode::NotFound => ("not_found", 404),
            ErrorCode::MethodNotAllowed => ("method_not_allowed", 405),
            ErrorCode::Timeout => ("timeout", 408),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with a wire code, so a test can say `assert_eq!(e.code(), "busy")`.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid; the text names the field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A shard thread could not be spawned.
    #[error("could not spawn shard thread: {0}")]
    Spawn(#[from] std::io::Error),
    /// The data directory could not be opened or recovered; the text names the file.
    #[error(transparent)]
    Storage(#[from] crate::persist::PersistError),
}
