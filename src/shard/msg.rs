//! The closed set of messages a shard handles, carrying inputs that were already validated and
//! hashed at the edge (`engine`), each with its one-shot reply.
//!
//! Every state-changing message carries its time, so a per-shard log of these messages replays
//! to the same state bit for bit.

use std::sync::Arc;

use crate::api::{Ack, Decision, EventKind, UpdateSink, UserExport};
use crate::error::Error;
use crate::ids::{DecisionId, UserId};
use crate::model::{ItemFeatures, SparseVec};
use crate::sync::oneshot;

/// An event that passed validation: ids hashed, value checked, time fixed.
#[derive(Clone, Debug)]
pub struct ValidEvent {
    /// The user.
    pub user: UserId,
    /// What happened.
    pub kind: EventKind,
    /// The item's key and id, if any.
    pub item: Option<(u64, String)>,
    /// The numeric signal (1.0 when the kind has none).
    pub value: f64,
    /// Event time (Unix ms).
    pub ts_ms: u64,
    /// The hashed context, unscaled (one signed unit per pair).
    pub context: SparseVec,
    /// The decision the event answers, if the caller named one.
    pub decision: Option<DecisionId>,
    /// The hash of its idempotency key, if it has one.
    pub event_id: Option<u64>,
    /// The context's device, location and hour, kept raw for the live features (`None`
    /// when it named none of them).
    pub facts: Option<Box<crate::actor::features::EventFacts>>,
}

/// One candidate of a validated decision.
#[derive(Clone, Debug)]
pub struct ValidCandidate {
    /// The item's key.
    pub key: u64,
    /// The item's id.
    pub id: String,
    /// Features given inline (not from the catalog).
    pub inline: Option<Arc<ItemFeatures>>,
}

/// A decision request that passed validation.
#[derive(Clone, Debug)]
pub struct ValidDecide {
    /// The user.
    pub user: UserId,
    /// The candidates.
    pub candidates: Vec<ValidCandidate>,
    /// Placements wanted (≤ candidates).
    pub n: usize,
    /// The hashed context, unscaled.
    pub context: SparseVec,
    /// Decision time (Unix ms).
    pub ts_ms: u64,
    /// Whether to explain the scores.
    pub explain: bool,
    /// Whether the decision is opened for attribution and logged.
    pub track: bool,
    /// The context as given, kept only when the decision log is on.
    pub raw_context: Option<crate::api::Context>,
    /// The experiment arm the user falls in, assigned by the engine.
    pub arm: Option<crate::experiment::Chosen>,
    /// The rule set in force when the engine took the request (`None`: no rules).
    pub rules: Option<Arc<crate::rules::RuleSet>>,
    /// The request's own saturation control, in place of the engine's (`None`: the
    /// engine's). Logged with the decision, so a replay places the same way.
    pub saturation: Option<Arc<crate::saturation::SaturationConfig>>,
    /// A tone decision: the candidates are the configured tones, in order, and each gets its
    /// prior on the user's mood (`tone`).
    pub tone: Option<ToneInput>,
}

/// What a tone decision's priors read besides the user's features.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ToneInput {
    /// The sentiment of the message being answered, if it had one (it is the mood the priors
    /// read; without it, the user's decayed sentiment is).
    pub message_sentiment: Option<f32>,
}

/// An explicit reward that passed validation.
#[derive(Clone, Debug)]
pub struct ValidReward {
    /// The decision.
    pub decision: DecisionId,
    /// The rewarded item's key and id.
    pub item_key: u64,
    /// The item's id, for errors.
    pub item: String,
    /// The reward in 0..=1.
    pub value: f32,
    /// Time of the reward (Unix ms).
    pub ts_ms: u64,
}

/// A reply slot.
pub type Reply<T> = oneshot::Sender<T>;

/// Everything a shard can be asked to do.
pub enum Msg {
    /// Apply one event.
    Event(ValidEvent, Reply<Result<Ack, Error>>),
    /// Apply several events (all owned by this shard), in order.
    Events(Vec<ValidEvent>, Reply<Vec<Result<Ack, Error>>>),
    /// Rank candidates.
    Decide(ValidDecide, Reply<Result<Decision, Error>>),
    /// Attribute an explicit reward.
    Reward(ValidReward, Reply<Result<(), Error>>),
    /// Choose one variant per slot of a template (issue 15, `shard/templated.rs`).
    DecideTemplate(
        crate::shard::templated::ValidTemplateDecide,
        Reply<Result<crate::shard::templated::TemplateChosen, Error>>,
    ),
    /// Attribute an explicit reward to every placement of a decision (a template's slots);
    /// replies how many took it.
    RewardDecision(
        crate::shard::templated::ValidDecisionReward,
        Reply<Result<u32, Error>>,
    ),
    /// Insert or replace a catalog item.
    UpsertItem(Arc<ItemFeatures>, Reply<()>),
    /// Remove a catalog item and its learned parameters.
    RemoveItem(u64, Reply<()>),
    /// Export one user.
    User(UserId, Reply<Option<UserExport>>),
    /// Erase one user.
    Forget(UserId, Reply<bool>),
    /// Change (or, with nothing in the update, read) a user's consent; the reply is the
    /// consent in force and whether the change erased anything.
    Consent(
        UserId,
        crate::consent::ConsentUpdate,
        Reply<(crate::consent::Consent, bool)>,
    ),
    /// Push this user's updates to a sink until unsubscribed, the first one at once (ranked
    /// at the engine's time, Unix ms) when the user has state.
    Subscribe(
        UserId,
        u64,
        Arc<dyn UpdateSink>,
        u64,
        Reply<Result<(), Error>>,
    ),
    /// Stop pushing to the subscription with this id.
    Unsubscribe(UserId, u64, Reply<()>),
    /// A copy of this shard's counters of one experiment's arms.
    ExperimentTally(u32, Reply<Vec<crate::experiment::ArmTally>>),
    /// Replace the threshold triggers checked after each event (logged, so a replay checks
    /// the set that was in force).
    SetTriggers(Arc<crate::triggers::TriggerSet>, Reply<()>),
    /// This shard's part of every segment's report (sizes, top items, mean features).
    Segments(Reply<Vec<crate::api::SegmentReport>>),
    /// Reply once every earlier message has been handled.
    Barrier(Reply<()>),
    /// Checkpoint now and wait for it to commit (`Engine::checkpoint`); replies whether it
    /// failed.
    Checkpoint(Reply<Option<String>>),
    /// The timer: passivate idle users, mix the global model. It does not move the shard's
    /// event time, so expiry stays a function of the messages alone (replay is exact).
    Tick(u64),
    /// Moves the shard's event time to at least this (`Engine::tick`): placements without an
    /// outcome count as ignored and decisions expire as if an event of that time had come;
    /// then the timer's work.
    Advance(u64, Reply<()>),
}
