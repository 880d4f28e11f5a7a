//! What an experiment is, as data: its arms (each a decision policy with a weight), its salt,
//! holdout and layer, the metric it is judged on. `ExperimentSpec::check` validates a
//! definition once, naming the field at fault; the registry only ever holds checked ones.
//!
//! The config file and the wire parse their own text into these
//! (`config::ExperimentConfig::to_spec`), so both refuse the same input with the same error;
//! serde is derived only for the experiments' own log (`persist::experiments`), whose
//! records therefore freeze these types' layout (a change needs a new record variant).

use std::ops::Range;

use crate::error::{Error, Problem};
use crate::experiment::assign::{Split, LAYER_BUCKETS};
use crate::rules::expr::Cond;

/// Most arms one experiment may have.
pub const MAX_ARMS: usize = 16;

/// Longest experiment, arm, salt or layer name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Longest targeting condition, in bytes.
pub const MAX_TARGET_BYTES: usize = 4096;

/// How an arm ranks a decision's candidates.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ArmPolicy {
    /// nudge as configured, optionally with its own exploration ε.
    Nudge {
        /// ε of ε-greedy for this arm (the configured exploration policy otherwise).
        epsilon: Option<f32>,
    },
    /// nudge's global model only: no personal weights, state or user features.
    Global,
    /// The candidates by decayed popularity (the caller's order among equals).
    Popularity,
    /// The caller's order, untouched.
    Control,
    /// nudge whose users also learn with their own parameters (`Tuning`, at least one set).
    /// A variant of its own, not a field of `Nudge`: the experiments' log encodes `Nudge`'s
    /// layout, and variants are only ever appended (`persist::experiments`).
    NudgeTuned {
        /// ε as in `Nudge`.
        epsilon: Option<f32>,
        /// How the arm's users learn.
        tuning: Tuning,
    },
}

/// How a `nudge` arm's users learn, where it differs from the engine's configuration (issue
/// 13: an arm is nudge "with parameter overrides"). It applies to a user from their first
/// decision in the arm (`UserActor::exposed_to`) while the experiment runs; the shared
/// global model learns as configured for everyone.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tuning {
    /// The personal model's Adam step size (`model.learning_rate` otherwise).
    pub learning_rate: Option<f32>,
    /// The state vector's half-life in seconds (`model.state_half_life_s` otherwise).
    pub state_half_life_s: Option<f64>,
}

impl Tuning {
    /// Whether nothing is overridden.
    pub fn is_default(&self) -> bool {
        *self == Tuning::default()
    }
}

/// An arm's policy as the config file and the wire give it, before it is checked.
#[derive(Clone, Copy, Debug, Default)]
pub struct PolicyFields<'a> {
    /// `nudge`, `global`, `popularity` or `control`.
    pub name: &'a str,
    /// `epsilon`.
    pub epsilon: Option<f64>,
    /// `learning_rate`.
    pub learning_rate: Option<f64>,
    /// `state_half_life_s`.
    pub state_half_life_s: Option<f64>,
}

/// Largest learning rate an arm may set.
const MAX_LEARNING_RATE: f64 = 1.0;

/// Longest state half-life an arm may set: a year.
const MAX_HALF_LIFE_S: f64 = 365.0 * 86_400.0;

impl ArmPolicy {
    /// Checks an arm's policy; overrides are only accepted with `nudge`, and the error names
    /// the field at fault (`arms.policy`, `arms.epsilon`, `arms.learning_rate`,
    /// `arms.state_half_life_s`).
    pub fn parse(f: PolicyFields<'_>) -> Result<ArmPolicy, Error> {
        let overridden =
            f.epsilon.is_some() || f.learning_rate.is_some() || f.state_half_life_s.is_some();
        let policy = match f.name {
            "nudge" => return Self::nudge(f),
            "global" => ArmPolicy::Global,
            "popularity" => ArmPolicy::Popularity,
            "control" => ArmPolicy::Control,
            _ => {
                let expected = "nudge, global, popularity or control";
                return Err(Error::invalid("arms.policy", Problem::Malformed(expected)));
            }
        };
        match overridden {
            true => Err(Error::invalid(
                "arms.policy",
                Problem::Malformed(
                    "epsilon, learning_rate and state_half_life_s only with policy nudge",
                ),
            )),
            false => Ok(policy),
        }
    }

    fn nudge(f: PolicyFields<'_>) -> Result<ArmPolicy, Error> {
        let within = |x: Option<f64>, field, min: f64, max: f64, min_open: bool| match x {
            Some(v) if !(v.is_finite() && v <= max && (v > min || (!min_open && v == min))) => {
                Err(Error::invalid(field, Problem::OutOfRange { min, max }))
            }
            _ => Ok(()),
        };
        within(f.epsilon, "arms.epsilon", 0.0, 1.0, false)?;
        within(
            f.learning_rate,
            "arms.learning_rate",
            0.0,
            MAX_LEARNING_RATE,
            false,
        )?;
        within(
            f.state_half_life_s,
            "arms.state_half_life_s",
            0.0,
            MAX_HALF_LIFE_S,
            true,
        )?;
        let epsilon = f.epsilon.map(|e| e as f32);
        let tuning = Tuning {
            learning_rate: f.learning_rate.map(|x| x as f32),
            state_half_life_s: f.state_half_life_s,
        };
        Ok(match tuning.is_default() {
            true => ArmPolicy::Nudge { epsilon },
            false => ArmPolicy::NudgeTuned { epsilon, tuning },
        })
    }

    /// The policy's name as the wire spells it.
    pub fn name(self) -> &'static str {
        match self {
            ArmPolicy::Nudge { .. } | ArmPolicy::NudgeTuned { .. } => "nudge",
            ArmPolicy::Global => "global",
            ArmPolicy::Popularity => "popularity",
            ArmPolicy::Control => "control",
        }
    }

    /// The arm's own ε, if it sets one.
    pub fn epsilon(self) -> Option<f32> {
        match self {
            ArmPolicy::Nudge { epsilon } | ArmPolicy::NudgeTuned { epsilon, .. } => epsilon,
            _ => None,
        }
    }

    /// How the arm's users learn (all default but for a tuned `nudge` arm).
    pub fn tuning(self) -> Tuning {
        match self {
            ArmPolicy::NudgeTuned { tuning, .. } => tuning,
            _ => Tuning::default(),
        }
    }
}

/// The metric an experiment is judged on, one value per closed decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Metric {
    /// 1 if any placement was clicked, else 0.
    ClickThrough,
    /// 1 if any placement converted, else 0.
    Conversion,
    /// The composite reward the placements earned, summed (each in 0..=1).
    MeanReward,
    /// Seconds of dwell attributed to the placements.
    MeanDwell,
}

impl Metric {
    /// Every metric, in wire order.
    pub const ALL: [Metric; 4] = [
        Metric::ClickThrough,
        Metric::Conversion,
        Metric::MeanReward,
        Metric::MeanDwell,
    ];

    /// The metric's place in `ALL` (and in an arm's tally).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric's name as the wire spells it.
    pub fn name(self) -> &'static str {
        match self {
            Metric::ClickThrough => "click_through",
            Metric::Conversion => "conversion_rate",
            Metric::MeanReward => "mean_reward",
            Metric::MeanDwell => "mean_dwell",
        }
    }

    /// Parses a metric name.
    pub fn parse(name: &str) -> Result<Metric, Problem> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or(Problem::Malformed(
                "click_through, conversion_rate, mean_reward or mean_dwell",
            ))
    }
}

/// One arm: a name, a weight (shares are proportional to weights), a policy.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArmSpec {
    /// Unique within the experiment.
    pub name: String,
    /// Positive and finite.
    pub weight: f64,
    /// How the arm ranks.
    pub policy: ArmPolicy,
}

/// An experiment's definition. The first arm is the baseline every other arm is compared to.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExperimentSpec {
    /// Unique among the engine's experiments.
    pub name: String,
    /// Hashed with the user id to assign arms; a new salt re-randomizes everyone.
    pub salt: String,
    /// The share of users held out (served the configured policy, not counted), in `[0, 1)`.
    pub holdout: f64,
    /// The layer (mutual exclusion) and the bucket range claimed there; experiments without
    /// one share the default layer `""`, claiming all of it unless `buckets` says otherwise.
    pub layer: String,
    /// The buckets claimed in the layer, within `0..LAYER_BUCKETS`.
    pub buckets: Range<u32>,
    /// The arms, baseline first.
    pub arms: Vec<ArmSpec>,
    /// The primary metric.
    pub metric: Metric,
    /// Guardrail metrics, reported beside the primary one.
    pub guardrails: Vec<Metric>,
    /// The mixing scale τ of the relative lift's test (a fraction, e.g. 0.2).
    pub tau: f64,
    /// The test's level α.
    pub alpha: f64,
    /// Targeting (issue 14, item 4): only users whose segment is one of these (a name, or an
    /// id in decimal) take part; the others are served as if held out. Empty: everyone.
    pub segments: Vec<String>,
    /// Targeting by condition: a decision-level rule condition over the user's live
    /// features and the request's context (`user.device == "mobile" && ctx.page == "home"`,
    /// `docs/rules.md`); users for whom it is false at a decision are served as if held out
    /// for that decision. `None`: everyone.
    pub target: Option<String>,
}

impl ExperimentSpec {
    /// A definition with defaults: salt = name, no holdout, the whole default layer,
    /// click-through, τ = 0.2, α = 0.05.
    pub fn new(name: &str, arms: Vec<ArmSpec>) -> ExperimentSpec {
        ExperimentSpec {
            name: name.to_string(),
            salt: name.to_string(),
            holdout: 0.0,
            layer: String::new(),
            buckets: 0..LAYER_BUCKETS,
            arms,
            metric: Metric::ClickThrough,
            guardrails: Vec::new(),
            tau: 0.2,
            alpha: 0.05,
            segments: Vec::new(),
            target: None,
        }
    }

    /// Whether a user in segment `segment` (`(id, name)`; `None`: none) is targeted.
    pub fn targets(&self, segment: Option<(u32, Option<&str>)>) -> bool {
        self.segments.is_empty()
            || (self.segments.iter()).any(|s| crate::rules::in_segment(s, segment))
    }

    /// The targeting condition, compiled; the error names `target` and the position.
    pub fn compile_target(&self) -> Result<Option<Cond>, Error> {
        let Some(src) = self.target.as_deref() else {
            return Ok(None);
        };
        if src.len() > MAX_TARGET_BYTES {
            let max = MAX_TARGET_BYTES;
            return Err(Error::invalid("target", Problem::TooLong { max }));
        }
        let cond = crate::rules::decision_condition(src).map_err(|e| {
            let (line, col) = crate::rules::syntax::line_col(src, e.offset);
            let why = format!("at {line}:{col} (byte {}): {}", e.offset, e.message);
            Error::invalid("target", Problem::Rejected(why))
        })?;
        Ok(Some(cond))
    }

    /// Checks the definition and builds its split; the error names the field at fault.
    pub fn check(&self) -> Result<Split, Error> {
        name("name", &self.name)?;
        name("salt", &self.salt)?;
        if self.layer.len() > MAX_NAME_BYTES {
            let max = MAX_NAME_BYTES;
            return Err(Error::invalid("layer", Problem::TooLong { max }));
        }
        if self.arms.len() > MAX_ARMS {
            return Err(Error::invalid("arms", Problem::TooMany { max: MAX_ARMS }));
        }
        for arm in &self.arms {
            name("arms.name", &arm.name)?;
        }
        for segment in &self.segments {
            name("segments", segment)?;
        }
        self.compile_target()?;
        if let Some(twice) = (self.guardrails.iter().enumerate())
            .find(|(i, g)| **g == self.metric || self.guardrails[..*i].contains(g))
        {
            let why = format!("`{}` is the metric or listed twice", twice.1.name());
            return Err(Error::invalid("guardrails", Problem::Rejected(why)));
        }
        let (start, end) = (self.buckets.start, self.buckets.end);
        if start >= end || end > LAYER_BUCKETS {
            let max = f64::from(LAYER_BUCKETS);
            return Err(Error::invalid(
                "buckets",
                Problem::OutOfRange { min: 0.0, max },
            ));
        }
        for (field, x, ok) in [
            ("tau", self.tau, self.tau > 0.0),
            ("alpha", self.alpha, self.alpha > 0.0 && self.alpha < 1.0),
        ] {
            if !(x.is_finite() && ok) {
                let max = if field == "tau" { f64::MAX } else { 1.0 };
                return Err(Error::invalid(field, Problem::OutOfRange { min: 0.0, max }));
            }
        }
        let arms: Vec<(&str, f64)> = self
            .arms
            .iter()
            .map(|a| (a.name.as_str(), a.weight))
            .collect();
        Split::new(&self.name, &self.salt, &arms, self.holdout).map_err(|e| {
            use crate::experiment::assign::SplitError as S;
            let field = match e {
                S::NoArms => "arms",
                S::BadWeight { .. } => "arms.weight",
                S::DuplicateArm { .. } => "arms.name",
                S::BadHoldout(_) => "holdout",
                _ => "buckets",
            };
            Error::invalid(field, Problem::Rejected(e.to_string()))
        })
    }
}

fn name(field: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, Problem::Empty));
    }
    if value.len() > MAX_NAME_BYTES {
        let max = MAX_NAME_BYTES;
        return Err(Error::invalid(field, Problem::TooLong { max }));
    }
    Ok(())
}
