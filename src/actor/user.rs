//! `UserActor`: everything the engine keeps about one user, and the lazy decay that brings it
//! up to an event's time.
//!
//! The state vector, personal weights and Adam moments live in one allocation of `4·d` floats.
//! An actor is owned by exactly one shard and touched only by that shard's thread; nothing here
//! reads the clock.

use crate::actor::features::LiveFeatures;
use crate::actor::signals::Signals;
use crate::config::ModelConfig;
use crate::experiment::Tuning;
use crate::ids::UserId;
use crate::model::adam::decay_weights;
use crate::model::cooccur::RecentItems;
use crate::model::math::{axpy, decay_factor};
use crate::model::score::{PersonalModel, PersonalView};
use crate::saturation::Exposures;

/// One user's state.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct UserActor {
    /// The user's id.
    pub id: UserId,
    /// First time seen (Unix ms).
    pub first_seen_ms: u64,
    /// The time the state vector and weights are decayed to (the latest event time seen).
    pub last_ms: u64,
    /// `[s | w | m | v]`, each `d` floats.
    vectors: Box<[f32]>,
    /// Personal gradient steps taken.
    pub steps: u32,
    /// Signal statistics and counters.
    pub signals: Signals,
    /// The live features read by name (issue 14): windows, session, last facts, totals.
    pub features: LiveFeatures,
    /// Events accepted, by `EventKind` index.
    pub events_by_kind: [u32; 8],
    /// Decisions made.
    pub decisions: u32,
    /// Open decision ids, oldest first.
    pub open: Vec<u64>,
    /// The items this user engaged with last, newest first (keys; the co-occurrence
    /// component's votes).
    pub recent: RecentItems,
    /// The experiment (its id + 1; 0: none) this user was last counted as exposed to, so a
    /// resident user counts once per experiment.
    pub exposed_to: u32,
    /// What the user was shown, for frequency caps and fatigue (issue 15); `None` until a
    /// cap or fatigue is configured and something is shown.
    pub exposures: Option<Box<Exposures>>,
    /// Which threshold triggers hold for this user and when they last fired (issue 14;
    /// empty while no trigger concerns the user).
    pub triggers: crate::triggers::TriggerMarks,
    /// How this user learns when their experiment arm overrides it (issue 13): set by the
    /// shard from `exposed_to` and the running experiments each time it handles the user, so
    /// it is never stored (a loaded user gets it back on first touch).
    #[serde(skip)]
    pub tuning: Tuning,
}

impl UserActor {
    /// A new user first seen at `ts_ms`, with a model of width `dim`.
    pub fn new(id: UserId, ts_ms: u64, dim: usize) -> Self {
        UserActor {
            id,
            first_seen_ms: ts_ms,
            last_ms: ts_ms,
            vectors: vec![0.0; 4 * dim].into_boxed_slice(),
            steps: 0,
            signals: Signals::default(),
            features: LiveFeatures::default(),
            events_by_kind: [0; 8],
            decisions: 0,
            open: Vec::new(),
            recent: RecentItems::default(),
            exposed_to: 0,
            exposures: None,
            triggers: Default::default(),
            tuning: Tuning::default(),
        }
    }

    fn dim(&self) -> usize {
        self.vectors.len() / 4
    }

    /// The decayed state vector `s_u`.
    pub fn state(&self) -> &[f32] {
        &self.vectors[..self.dim()]
    }

    /// The personal weights `w_u`.
    pub fn weights(&self) -> &[f32] {
        let d = self.dim();
        &self.vectors[d..2 * d]
    }

    /// The read-only view the score needs.
    pub fn view(&self) -> PersonalView<'_> {
        let d = self.dim();
        PersonalView {
            weights: &self.vectors[d..2 * d],
            state: &self.vectors[..d],
        }
    }

    /// The mutable personal model a learning step needs.
    pub fn model(&mut self) -> PersonalModel<'_> {
        let d = self.dim();
        let (s, rest) = self.vectors.split_at_mut(d);
        let (w, rest) = rest.split_at_mut(d);
        let (m, v) = rest.split_at_mut(d);
        PersonalModel {
            weights: w,
            m,
            v,
            state: s,
            steps: &mut self.steps,
        }
    }

    /// Decays the state vector and the personal weights to `ts_ms`. Earlier times change
    /// nothing: decay never runs backwards.
    pub fn advance(&mut self, ts_ms: u64, cfg: &ModelConfig) {
        if ts_ms <= self.last_ms {
            return;
        }
        let elapsed_s = (ts_ms - self.last_ms) as f64 / 1000.0;
        let d = self.dim();
        let f = decay_factor(elapsed_s, self.state_half_life_s(cfg));
        crate::model::math::scale(&mut self.vectors[..d], f);
        decay_weights(
            &mut self.vectors[d..2 * d],
            elapsed_s,
            cfg.weight_half_life_s,
        );
        self.last_ms = ts_ms;
    }

    /// The user's live features as read at `now_ms` under `cfg`, in `segment`.
    pub fn features_at<'a>(
        &'a self,
        cfg: &'a crate::config::Config,
        now_ms: u64,
        segment: Option<(u32, Option<&'a str>)>,
    ) -> crate::actor::features::FeatureView<'a> {
        crate::actor::features::FeatureView {
            features: &self.features,
            signals: &self.signals,
            hygiene: &cfg.hygiene,
            session_idle_s: cfg.features.session_idle_s,
            now_ms,
            segment,
        }
    }

    /// The state vector's half-life for this user: their arm's, else the configured one.
    pub fn state_half_life_s(&self, cfg: &ModelConfig) -> f64 {
        (self.tuning.state_half_life_s).unwrap_or(cfg.state_half_life_s)
    }

    /// `s ← s + ρ·x` for an event at `ts_ms`. An event older than `last_ms` adds its signal
    /// already decayed by its age, so arrival order does not matter.
    pub fn add_signal(&mut self, rho: f32, x: &[f32], ts_ms: u64, half_life_s: f64) {
        let age_s = self.last_ms.saturating_sub(ts_ms) as f64 / 1000.0;
        let f = decay_factor(age_s, half_life_s);
        let d = self.dim();
        axpy(&mut self.vectors[..d], rho * f, x);
    }

    /// Heap bytes owned by this actor (for the memory report).
    pub fn heap_bytes(&self) -> usize {
        self.vectors.len() * 4
            + self.id.as_str().len()
            + self.open.capacity() * 8
            + self.exposures.as_ref().map_or(0, |x| x.heap_bytes())
            + self.triggers.heap_bytes()
    }
}
