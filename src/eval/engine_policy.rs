//! nudge as a [`Policy`]: an embedded `Engine` with one shard and a `ManualClock` that follows
//! the stream's time, so a run is deterministic for a seed (no wall-clock timer tick fires:
//! expiry runs from explicit `tick`s at stream times).
//!
//! Also the three ablations of the model ([`Variant`]): the global model only, personal
//! weights without the decayed state, and the full model.

use crate::api::{Candidate, DecideRequest, Event, EventKind, ItemSpec};
use crate::clock::{Clock, ManualClock};
use crate::config::Config;
use crate::engine::Engine;
use crate::error::StartError;
use crate::eval::{Feedback, Observation, Outcome, Policy, Request};
use crate::ids::DecisionId;
use crate::model::policy::first_slot_distribution;

/// Which parts of the model are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The global model only: `learning_rate = 0` (no personal weights) and `κ = 0`.
    GlobalOnly,
    /// Personal weights but no decayed state: `κ = 0`.
    NoState,
    /// Everything, as configured.
    Full,
}

impl Variant {
    /// The three, weakest first.
    pub const ALL: [Variant; 3] = [Variant::GlobalOnly, Variant::NoState, Variant::Full];

    /// The name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Variant::GlobalOnly => "nudge, global model only",
            Variant::NoState => "nudge, personal weights, no state",
            Variant::Full => "nudge (full)",
        }
    }

    /// `base` with this variant's parts switched off.
    pub fn apply(self, base: &Config) -> Config {
        let mut cfg = base.clone();
        match self {
            Variant::GlobalOnly => {
                cfg.model.learning_rate = 0.0;
                cfg.model.kappa = 0.0;
            }
            Variant::NoState => cfg.model.kappa = 0.0,
            Variant::Full => {}
        }
        cfg
    }
}

/// How often (stream time) the engine's clock-driven work runs.
const TICK_EVERY_MS: u64 = 60_000;

/// nudge behind its embedded API.
pub struct EnginePolicy {
    name: String,
    engine: Engine,
    clock: ManualClock,
    /// The last decision and its user: an observation of that user answers it.
    last: Option<(String, DecisionId)>,
    feedback: Feedback,
    next_tick_ms: u64,
    errors: u64,
}

impl EnginePolicy {
    /// Starts an engine with `config` made deterministic (one shard, no wall-clock ticks),
    /// its clock at `start_ms`, and `items` in its catalog.
    pub fn new(
        name: impl Into<String>,
        mut config: Config,
        items: Vec<ItemSpec>,
        start_ms: u64,
    ) -> Result<Self, StartError> {
        config.shards = 1;
        // No timer tick during a run: ticks come from `at`, at stream times.
        config.mix_interval_ms = 1_000_000_000;
        let clock = ManualClock::new(start_ms);
        let engine = Engine::builder()
            .config(config)
            .clock(clock.clone())
            .build()?;
        let mut me = EnginePolicy {
            name: name.into(),
            engine,
            clock,
            last: None,
            feedback: Feedback::Decisions,
            next_tick_ms: start_ms + TICK_EVERY_MS,
            errors: 0,
        };
        for item in items {
            if me.engine.upsert_item(item).is_err() {
                me.errors += 1;
            }
        }
        Ok(me)
    }

    /// Feeds the engine as `feedback` says (tracked decisions by default).
    pub fn feedback(mut self, feedback: Feedback) -> Self {
        self.feedback = feedback;
        self
    }

    /// The engine (for stats and inspection).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Calls the engine refused (each is a harness or data bug; a run reports them).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Moves the clock to `ts_ms` (never backwards) and runs the clock-driven work now: open
    /// decisions whose attribution window has passed close (and count for their experiment
    /// arm). For the end of a run, so that every decision is counted.
    pub fn advance(&mut self, ts_ms: u64) {
        if ts_ms > self.clock.now_ms() {
            self.clock.set_ms(ts_ms);
        }
        if self.engine.tick().is_err() {
            self.errors += 1;
        }
        self.next_tick_ms = ts_ms + TICK_EVERY_MS;
    }

    /// Moves the clock to `ts_ms` (never backwards) and runs expiry when a tick is due.
    fn at(&mut self, ts_ms: u64) {
        if ts_ms > self.clock.now_ms() {
            self.clock.set_ms(ts_ms);
        }
        if ts_ms >= self.next_tick_ms {
            if self.engine.tick().is_err() {
                self.errors += 1;
            }
            self.next_tick_ms = ts_ms + TICK_EVERY_MS;
        }
    }

    fn decide(&mut self, req: &Request<'_>, n: usize, explain: bool) -> Option<crate::Decision> {
        self.at(req.ts_ms);
        let candidates: Vec<Candidate> = req
            .candidates
            .iter()
            .map(|c| Candidate::Id(c.clone()))
            .collect();
        let mut request = DecideRequest::new(req.user, candidates, n)
            .at(req.ts_ms)
            .explain(explain)
            .track(self.feedback == Feedback::Decisions);
        request.context = req.context.to_vec();
        match self.engine.decide(request) {
            Ok(d) => {
                self.last = Some((req.user.to_string(), d.id));
                Some(d)
            }
            Err(_) => {
                self.errors += 1;
                None
            }
        }
    }

    fn answered(&self, user: &str) -> Option<DecisionId> {
        self.last
            .as_ref()
            .filter(|(u, _)| u == user)
            .map(|(_, d)| *d)
    }
}

/// Maps placed item ids back to their candidate indices.
fn indices(candidates: &[String], placed: &[crate::Placement]) -> Vec<usize> {
    placed
        .iter()
        .filter_map(|p| candidates.iter().position(|c| *c == p.item))
        .collect()
}

impl Policy for EnginePolicy {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn place(&mut self, req: &Request<'_>) -> Vec<usize> {
        match self.decide(req, req.n, false) {
            Some(d) => indices(req.candidates, &d.items),
            None => Vec::new(),
        }
    }

    fn first_slot(&mut self, req: &Request<'_>) -> Vec<f64> {
        let k = req.candidates.len();
        let Some(d) = self.decide(req, k, true) else {
            return vec![1.0 / k as f64; k];
        };
        let mut logits = vec![f32::NEG_INFINITY; k];
        for (i, p) in indices(req.candidates, &d.items).into_iter().zip(&d.items) {
            logits[i] = p.explain.map_or(0.0, |e| e.logit());
        }
        first_slot_distribution(&self.engine.config().exploration, &logits)
    }

    fn observe(&mut self, obs: &Observation<'_>) {
        self.at(obs.ts_ms);
        let decision = match self.feedback {
            Feedback::Decisions => self.answered(obs.user),
            Feedback::EventsOnly => None,
        };
        if self.feedback == Feedback::EventsOnly && obs.shown {
            // Without decisions, a tracker reports what was shown as an impression, then
            // what the user did with it.
            let mut shown = Event::new(obs.user, EventKind::Impression)
                .item(obs.item)
                .at(obs.ts_ms);
            shown.context = obs.context.to_vec();
            if self.engine.ingest(shown).is_err() {
                self.errors += 1;
            }
        }
        let kind = match obs.outcome {
            // The impression said it all; a click will be attributed to it.
            Outcome::Ignored if self.feedback == Feedback::EventsOnly => return,
            Outcome::Ignored => {
                // Shown and ignored: label the placement 0 now rather than at expiry.
                if let Some(d) = decision {
                    // `NotShown` only means the item was not placed: nothing to label.
                    let _ = self.engine.reward(d, obs.item, 0.0);
                }
                return;
            }
            Outcome::Click => Event::new(obs.user, EventKind::Click),
            Outcome::Skip => Event::new(obs.user, EventKind::Skip),
            Outcome::Rating(v) => Event::new(obs.user, EventKind::Rating).value(v),
        };
        let mut event = kind.item(obs.item).at(obs.ts_ms);
        event.context = obs.context.to_vec();
        if let Some(d) = decision {
            event = event.decision(d);
        }
        if self.engine.ingest(event).is_err() {
            self.errors += 1;
        }
    }
}

impl Drop for EnginePolicy {
    fn drop(&mut self) {
        self.engine.shutdown();
    }
}
