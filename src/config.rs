//! `Config`: every tunable of the engine, with documented defaults, loaded from TOML and
//! overridden by environment variables, validated once before anything starts.
//!
//! Environment overrides: `NUDGE_<FIELD>` for top-level fields and `NUDGE_<SECTION>__<FIELD>`
//! for nested ones (for example `NUDGE_SHARDS=4`, `NUDGE_MODEL__DIM=64`,
//! `NUDGE_EXPLORATION__POLICY=softmax`). Values are read as TOML literals, falling back to a
//! string. This module owns the configuration file format; it does not start anything.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What a call does when the target shard's inbox is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Wait for room (back-pressure on the caller).
    #[default]
    Wait,
    /// Return `Error::Busy` at once.
    Fail,
}

/// The exploration policy used to turn scores into placements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Always the highest scores, in order.
    Greedy,
    /// With probability ε a uniformly random remaining item per slot, else the best.
    #[default]
    EpsilonGreedy,
    /// Plackett–Luce sampling from a softmax of logits at a temperature.
    Softmax,
}

/// The whole engine configuration. Every field has a default; see `README.md` for the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Shards (the unit of single-writer state); 0 means one per available core.
    pub shards: usize,
    /// Messages each shard's queue holds (while another thread holds the shard) before
    /// callers help drain it or get `Busy`.
    pub inbox_capacity: usize,
    /// Most messages a shard handles between two writes of its log (group commit).
    pub drain_batch: usize,
    /// What a full inbox does by default (each `Engine` handle can override it).
    pub on_full: OnFull,
    /// Resident users a shard holds before evicting the least recently active.
    pub max_users_per_shard: usize,
    /// Users idle this long (seconds) are passivated; 0 disables idle passivation.
    pub idle_evict_after_s: u64,
    /// Most candidates one decision may name.
    pub max_candidates: usize,
    /// Most key/value pairs in one context.
    pub max_context_pairs: usize,
    /// How far (ms) an event timestamp may be ahead of the engine's clock.
    pub max_future_skew_ms: u64,
    /// Seed of every random choice (exploration, item embedding init, eviction sampling).
    pub seed: u64,
    /// How long (seconds of event time) a shard remembers an applied `event_id`, so that a
    /// retry is not applied twice.
    pub event_id_window_s: u64,
    /// Most `event_id`s a shard remembers (the oldest forgotten first); 0 turns it off.
    pub event_id_capacity: usize,
    /// How often (ms) shards mix their replicas of the global model.
    pub mix_interval_ms: u64,
    /// How long (µs) a caller blocked on a reply spins before parking its thread.
    pub reply_spin_us: u64,
    /// The model's parameters.
    pub model: ModelConfig,
    /// Weights of the composite reward used for training.
    pub reward: RewardConfig,
    /// Signal strength ρ of each event type in the decayed state vector.
    pub state_signal: StateSignalConfig,
    /// Decision attribution.
    pub attribution: AttributionConfig,
    /// Exploration.
    pub exploration: ExplorationConfig,
    /// Signal hygiene: ranges and the outlier filter.
    pub hygiene: HygieneConfig,
    /// Custom event names mapped to built-in types, e.g. `add_to_cart = "conversion"`.
    pub event_aliases: BTreeMap<String, String>,
    /// The network front ends (`nudge serve`).
    pub server: ServerConfig,
    /// The data directory: unset means in memory for an embedded engine and `./nudge-data`
    /// for `nudge serve`; an empty string means in memory everywhere.
    pub data_dir: Option<String>,
    /// How the write-ahead log reaches the disk, and how often shards checkpoint.
    pub durability: DurabilityConfig,
    /// Experiments started with the engine (`[[experiments]]`).
    pub experiments: Vec<ExperimentConfig>,
    /// The live per-user features (`[features]`, issue 14).
    pub features: FeaturesConfig,
    /// Rules applied to every decision (`[[rules]]`, issue 14; `docs/rules.md`).
    pub rules: Vec<RuleConfig>,
    /// Frequency caps, fatigue and diversity (`[saturation]`, issue 15;
    /// `docs/saturation.md`). Off by default.
    pub saturation: crate::saturation::SaturationConfig,
    /// The tones a `tone` decision chooses among, and their priors (`[tone]`, issue 15;
    /// `docs/tone.md`).
    pub tone: crate::tone::ToneConfig,
    /// Consent defaults (`[consent]`, issue 15; `docs/consent.md`).
    pub consent: crate::consent::ConsentConfig,
    /// Templates registered at start, each as its version 1 (`[[templates]]`, issue 15;
    /// `docs/templates.md`). Left out of the serialized form when empty, so that the
    /// configuration's hash (stamped on logged decisions) is as it was without templates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<TemplateConfig>,
    /// Threshold triggers checked after every event (`[[triggers]]`, issue 14;
    /// `docs/triggers.md`).
    pub triggers: Vec<TriggerConfig>,
    /// Where fired triggers are posted (`[webhook]`; `docs/triggers.md`).
    pub webhook: WebhookConfig,
    /// Live micro-segments (`[segments]`, issue 14; `docs/segments.md`).
    pub segments: SegmentsConfig,
}

/// Live micro-segments: online k-means over users' taste (`docs/segments.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentsConfig {
    /// Number of segments (0: off; at most 64).
    pub k: usize,
    /// What stands for a user's taste in its point.
    pub source: SegmentSource,
    /// Weight of the normalized state vector beside the normalized personal weights in a
    /// user's point (0: taste alone).
    pub state_weight: f32,
    /// Personal training steps a user needs before it is clustered (and has a segment).
    pub min_steps: u32,
    /// Most points a centroid stands for: the smaller, the faster it follows a drift.
    pub memory: f64,
    /// How often each shard hands its sums to the shared centroids (and takes them back).
    pub update_interval_ms: u64,
}

/// What stands for a user's taste in its segment point (`docs/segments.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentSource {
    /// The personal weights `w_u`: long-lived taste (the best measured, `docs/segments.md`).
    #[default]
    Weights,
    /// The mean vector `x_i` of the items the user engaged with last (its last 8 distinct
    /// outcome items, the co-occurrence component's list): no state of its own.
    Engaged,
    /// The mean fixed features `φ_i` (attributes, dense vector) of the items engaged with
    /// last, without the learned embeddings.
    Features,
    /// `Features` and `Weights`, each normalized, added.
    Blend,
}

impl Default for SegmentsConfig {
    fn default() -> Self {
        SegmentsConfig {
            k: 8,
            source: SegmentSource::Weights,
            state_weight: 0.0,
            min_steps: 5,
            memory: 1000.0,
            update_interval_ms: 1000,
        }
    }
}

/// One template as the config file (`[[templates]]`) spells it; `template::Template`
/// checks it, naming the field and the position of an error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplateConfig {
    /// Unique name.
    pub name: String,
    /// The Mustache body.
    pub body: String,
    /// Names a request may pass in its `values`.
    pub values: Vec<String>,
    /// The slots, in decision order (`[[templates.slots]]`).
    pub slots: Vec<TemplateSlotConfig>,
}

/// One slot of a `[[templates]]` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplateSlotConfig {
    /// The slot's name.
    pub name: String,
    /// Its variants (`[[templates.slots.variants]]`).
    pub variants: Vec<TemplateVariantConfig>,
}

/// One variant of a template's slot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplateVariantConfig {
    /// Its id, unique in the slot.
    pub id: String,
    /// Its text (Mustache, without slots).
    pub text: String,
    /// Optional attributes (`attrs = { tone = "warm" }`).
    pub attrs: BTreeMap<String, String>,
}

/// One threshold trigger as the config file (`[[triggers]]`) and the wire's `triggers` op
/// spell it; `triggers::TriggerSet` compiles a list of them or refuses it naming the trigger,
/// the field and the position of the error (`docs/triggers.md`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggerConfig {
    /// Unique name (1 to 256 bytes): what replies, pushes and the webhook carry.
    pub name: String,
    /// The condition over `user.*` features, checked after each of a user's events.
    pub when: String,
    /// Seconds of event time after a firing during which the trigger does not fire again
    /// for that user (0: none).
    pub cooldown_s: u64,
    /// Whether firings are posted to a webhook (default true: when one is configured).
    pub webhook: Option<bool>,
    /// This trigger's webhook URL, instead of `[webhook] url`.
    pub webhook_url: Option<String>,
}

/// The HTTP webhook fired triggers are posted to by `nudge serve` (`docs/triggers.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path` (plain HTTP/1.1); empty: no webhook unless a trigger names one.
    pub url: String,
    /// Firings waiting for delivery, at most; past it a firing is dropped and counted.
    pub queue_capacity: usize,
    /// Longest wait (ms) to connect, and then for each read and write of one attempt.
    pub timeout_ms: u64,
    /// Attempts per firing (the first included) before it is given up and counted.
    pub max_attempts: u32,
    /// Wait (ms) before the first retry; doubled before each further one.
    pub backoff_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            queue_capacity: 10_000,
            timeout_ms: 2_000,
            max_attempts: 4,
            backoff_ms: 100,
        }
    }
}

/// The live per-user features (`docs/features.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeaturesConfig {
    /// A session ends after this many seconds (of event time) without an event.
    pub session_idle_s: u64,
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        FeaturesConfig {
            session_idle_s: 1800,
        }
    }
}

/// One rule as the config file (`[[rules]]`) and the wire's `rules` op spell it; the rules
/// module compiles a list of them into a rule set, or refuses it naming the rule, the field
/// and the position of the error (`docs/rules.md`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name.
    pub name: String,
    /// Higher runs first (default 0; ties keep the list's order).
    pub priority: i32,
    /// The decision-level condition over `user.*` and `ctx.*` (default: always).
    pub when: Option<String>,
    /// `boost`, `bury`, `exclude`, `pin`, `cap`, `force` or `trigger`.
    pub action: String,
    /// The item-level condition over `item.*` (and `user.*`, `ctx.*`) choosing the items a
    /// `boost`, `bury`, `exclude` or `pin` acts on (default: every candidate).
    pub items: Option<String>,
    /// What `boost` adds to (and `bury` takes from) a matching item's logit.
    pub by: Option<f64>,
    /// The attribute whose values `cap` counts.
    pub attr: Option<String>,
    /// Most items per value of `attr` in the placements (`cap`).
    pub max: Option<u32>,
    /// The item id `force` pins first.
    pub item: Option<String>,
    /// The trigger name `trigger` fires.
    pub trigger: Option<String>,
    /// Only for users in this experiment arm, `experiment/arm`.
    pub arm: Option<String>,
    /// Only for users in this segment: its name, or its id in decimal (`docs/segments.md`).
    pub segment: Option<String>,
}

/// One experiment as the config file (and the wire) spell it; `to_spec` checks it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Unique name.
    pub name: String,
    /// Assignment salt (default: the name).
    pub salt: Option<String>,
    /// Share of users held out, in `[0, 1)`.
    pub holdout: f64,
    /// The layer (default: the default layer `""`).
    pub layer: String,
    /// Buckets `[start, end)` claimed in the layer (default: all 10,000).
    pub buckets: Option<[u32; 2]>,
    /// `click_through` (default), `conversion_rate`, `mean_reward` or `mean_dwell`.
    pub metric: Option<String>,
    /// Guardrail metrics, by name.
    pub guardrails: Vec<String>,
    /// The arms, baseline first.
    pub arms: Vec<ArmConfig>,
    /// τ of the relative lift's test (default 0.2).
    pub tau: Option<f64>,
    /// α of the test (default 0.05).
    pub alpha: Option<f64>,
    /// Targeting: only users in one of these segments (names or ids) take part (default:
    /// everyone).
    pub segments: Vec<String>,
    /// Targeting by condition over `user.*` and `ctx.*` (the rules' language).
    pub target: Option<String>,
}

/// One arm as the config file spells it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArmConfig {
    /// Unique within the experiment.
    pub name: String,
    /// Positive weight (default 1).
    pub weight: Option<f64>,
    /// `nudge`, `global`, `popularity` or `control`.
    pub policy: String,
    /// ε for a `nudge` arm.
    pub epsilon: Option<f64>,
    /// The personal model's learning rate for a `nudge` arm's users.
    pub learning_rate: Option<f64>,
    /// The state vector's half-life (seconds) for a `nudge` arm's users.
    pub state_half_life_s: Option<f64>,
}

impl ExperimentConfig {
    /// The checked definition; the error names the field at fault.
    pub fn to_spec(&self) -> Result<crate::experiment::ExperimentSpec, crate::error::Error> {
        use crate::error::Error;
        use crate::experiment::{ArmPolicy, ArmSpec, ExperimentSpec, Metric};
        let mut arms = Vec::with_capacity(self.arms.len());
        for arm in &self.arms {
            let policy = ArmPolicy::parse(crate::experiment::spec::PolicyFields {
                name: &arm.policy,
                epsilon: arm.epsilon,
                learning_rate: arm.learning_rate,
                state_half_life_s: arm.state_half_life_s,
            })?;
            arms.push(ArmSpec {
                name: arm.name.clone(),
                weight: arm.weight.unwrap_or(1.0),
                policy,
            });
        }
        let mut spec = ExperimentSpec::new(&self.name, arms);
        if let Some(salt) = &self.salt {
            spec.salt = salt.clone();
        }
        spec.holdout = self.holdout;
        spec.layer = self.layer.clone();
        if let Some([start, end]) = self.buckets {
            spec.buckets = start..end;
        }
        if let Some(metric) = &self.metric {
            spec.metric = Metric::parse(metric).map_err(|p| Error::invalid("metric", p))?;
        }
        for g in &self.guardrails {
            let metric = Metric::parse(g).map_err(|p| Error::invalid("guardrails", p))?;
            spec.guardrails.push(metric);
        }
        spec.tau = self.tau.unwrap_or(spec.tau);
        spec.alpha = self.alpha.unwrap_or(spec.alpha);
        spec.segments = self.segments.clone();
        spec.target = self.target.clone();
        spec.check()?;
        Ok(spec)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shards: 0,
            inbox_capacity: 65_536,
            drain_batch: 256,
            on_full: OnFull::Wait,
            max_users_per_shard: 4_000_000,
            idle_evict_after_s: 0,
            max_candidates: 1_000,
            max_context_pairs: 32,
            max_future_skew_ms: 5 * 60 * 1000,
            seed: 42,
            event_id_window_s: 86_400,
            event_id_capacity: 1_000_000,
            mix_interval_ms: 5,
            reply_spin_us: 5,
            model: ModelConfig::default(),
            reward: RewardConfig::default(),
            state_signal: StateSignalConfig::default(),
            attribution: AttributionConfig::default(),
            exploration: ExplorationConfig::default(),
            hygiene: HygieneConfig::default(),
            event_aliases: BTreeMap::new(),
            server: ServerConfig::default(),
            data_dir: None,
            durability: DurabilityConfig::default(),
            experiments: Vec::new(),
            features: FeaturesConfig::default(),
            rules: Vec::new(),
            saturation: Default::default(),
            tone: Default::default(),
            consent: Default::default(),
            segments: SegmentsConfig::default(),
            templates: Vec::new(),
            triggers: Vec::new(),
            webhook: WebhookConfig::default(),
        }
    }
}

/// When the write-ahead log is fsynced: Redis's `appendfsync` meanings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every shard drain, before the drain's state changes are acknowledged.
    Always,
    /// About once a second, by a thread beside the shard.
    #[default]
    Everysec,
    /// Never explicitly: the operating system writes back when it likes.
    No,
}

impl FsyncPolicy {
    /// The configuration spelling.
    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Everysec => "everysec",
            FsyncPolicy::No => "no",
        }
    }
}

/// Durability of a data directory (ignored in memory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DurabilityConfig {
    /// When the log is fsynced.
    pub fsync: FsyncPolicy,
    /// A log segment is closed and a new one started past this size (bytes).
    pub segment_bytes: u64,
    /// Seconds between checkpoints of each shard.
    pub checkpoint_interval_s: u64,
    /// Most bytes of evicted users a shard keeps in memory until a checkpoint stores them
    /// ("parked"). A quarter of it starts a checkpoint early; at all of it, a request that
    /// would bring another user into memory (and so evict one) is refused with `unavailable`
    /// until a checkpoint has stored them (back-pressure: evictions go at the store's pace,
    /// and memory stays bounded by the resident cap and this).
    pub max_parked_bytes: u64,
}

impl Default for DurabilityConfig {
    fn default() -> Self {
        DurabilityConfig {
            fsync: FsyncPolicy::Everysec,
            segment_bytes: 64 << 20,
            checkpoint_interval_s: 60,
            max_parked_bytes: 256 << 20,
        }
    }
}

/// The model: width, learning rates, half-lives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Width `d` of every vector (8..=256).
    pub dim: usize,
    /// Weight κ of the decayed state vector in the score, and the starting value of its
    /// learned per-dimension weights; 0 turns the state term off (and its learning).
    pub kappa: f32,
    /// AdaGrad step size of the learned per-dimension state weights `κ_k` (global, mixed like
    /// `g`); 0 keeps every `κ_k` at `kappa`.
    pub kappa_learning_rate: f32,
    /// How the decayed state `s_u` becomes `ŝ_u` in the score (see [`StateScale`]).
    pub state_scale: StateScale,
    /// Half-life (s) of the decayed state vector.
    pub state_half_life_s: f64,
    /// Half-life (s) of each item's decayed popularity (outcome events from every user), a
    /// global feature `log1p(pop_i)` with a learned weight; 0 turns it off.
    pub popularity_half_life_s: f64,
    /// Half-life (s) of the personal weights' decay toward the global model.
    pub weight_half_life_s: f64,
    /// Adam step size η of the personal weights; 0 turns personal weights off (every user
    /// gets the global model, plus the state term when κ ≠ 0).
    pub learning_rate: f32,
    /// Adam β1.
    pub beta1: f32,
    /// Adam β2.
    pub beta2: f32,
    /// Adam ε.
    pub epsilon: f32,
    /// L2 pull λ of the personal weights toward the global model.
    pub l2: f32,
    /// `b` of the personal step's warm-up: a user's `t`-th learning step (1-based) uses step
    /// size `learning_rate·(1 + b/t)`, so a user with few events learns faster and one with
    /// many keeps Adam's drift-following rate; 0 turns it off.
    pub new_user_boost: f32,
    /// AdaGrad step size of the global parameters (`b_i`, `g`, `G`, `e_i`).
    pub global_learning_rate: f32,
    /// Standard deviation of the initial learned item embeddings.
    pub item_embedding_init: f32,
    /// Neighbours kept per item by the co-occurrence component (items the same users touch
    /// close together; `model/cooccur.rs`); 0 turns it off.
    pub cooccurrence_neighbours: usize,
    /// Weight `λ^a` of the user's item `a` steps back in the co-occurrence feature.
    pub cooccurrence_recency: f32,
    /// Starting weight γ₀ of the co-occurrence feature in the score (learned from there).
    pub cooccurrence_weight: f32,
    /// AdaGrad step size of the learned co-occurrence weight γ (one global scalar, mixed like
    /// `β`): large, so that a workload where co-occurrence says little turns it down quickly.
    pub cooccurrence_learning_rate: f32,
    /// Items sampled as negatives (reward 0) for every outcome event that no decision
    /// explains, so that a plain event stream teaches what the user chose over what they did
    /// not; 0 trains on the event alone.
    pub negatives: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            dim: 32,
            kappa: 1.0,
            kappa_learning_rate: 0.05,
            state_scale: StateScale::Capped,
            state_half_life_s: 60.0,
            popularity_half_life_s: 30.0 * 86_400.0,
            weight_half_life_s: 30.0 * 86_400.0,
            learning_rate: 0.02,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            l2: 0.001,
            new_user_boost: 0.0,
            global_learning_rate: 0.05,
            item_embedding_init: 0.1,
            cooccurrence_neighbours: 128,
            cooccurrence_recency: 0.8,
            cooccurrence_weight: 10.0,
            cooccurrence_learning_rate: 2.0,
            negatives: 4,
        }
    }
}

/// How the decayed state vector `s_u` is scaled into `ŝ_u` before it enters the score.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateScale {
    /// `s/‖s‖`: any activity, however old, counts at full strength.
    Unit,
    /// `s/max(‖s‖, 1)`: recent activity has unit length; a decayed state fades.
    #[default]
    Capped,
    /// `s·tanh(‖s‖)/‖s‖`: like `capped`, smooth.
    Tanh,
}

/// Weights of the composite training reward `r ∈ [0,1]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// Reward of a click.
    pub click: f32,
    /// Weight of dwell, scaled by `log1p(s)/log1p(dwell_saturation_s)`.
    pub dwell: f32,
    /// Dwell seconds that count as a full dwell reward.
    pub dwell_saturation_s: f32,
    /// Weight of scroll depth (0..1).
    pub scroll: f32,
    /// Reward of a conversion (any value).
    pub conversion: f32,
    /// Weight of a rating, mapped from 1..5 to 0..1.
    pub rating: f32,
    /// Dwell seconds at or above which a dwell without a decision trains as a clear outcome.
    pub clear_dwell_s: f32,
    /// The reward given to shown-but-ignored placements at expiry.
    pub default_reward: f32,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            click: 1.0,
            dwell: 1.0,
            dwell_saturation_s: 60.0,
            scroll: 0.5,
            conversion: 1.0,
            rating: 1.0,
            clear_dwell_s: 10.0,
            default_reward: 0.0,
        }
    }
}

/// Signal strength ρ of each event in the decayed state vector (a skip is negative).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateSignalConfig {
    /// An impression.
    pub impression: f32,
    /// A click.
    pub click: f32,
    /// A dwell, multiplied by `log1p(seconds)`.
    pub dwell: f32,
    /// A scroll, multiplied by the depth.
    pub scroll: f32,
    /// A conversion, multiplied by `1 + log1p(value)`.
    pub conversion: f32,
    /// A rating, multiplied by `(rating - 3) / 2`.
    pub rating: f32,
    /// Added to every rating's signal, whatever its value: rating an item says the user
    /// engaged with it (watched, bought, read), which is evidence of what they are into now.
    pub rated: f32,
    /// A skip.
    pub skip: f32,
    /// A placement the user was shown and ignored (labelled 0 by a reward, or at expiry).
    pub ignored: f32,
}

impl Default for StateSignalConfig {
    fn default() -> Self {
        StateSignalConfig {
            impression: 0.0,
            click: 1.0,
            dwell: 0.5,
            scroll: 0.5,
            conversion: 2.0,
            rating: 1.0,
            rated: 0.5,
            skip: 0.0,
            ignored: -0.3,
        }
    }
}

/// Decision attribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributionConfig {
    /// How long (s) a decision stays open for clicks, conversions and rewards.
    pub window_s: u64,
    /// Ignored placements in the top `k` train with the default reward (0 = none).
    pub train_ignored_top_k: usize,
    /// A placement with no outcome this long (s) after it was shown counts as ignored and
    /// trains then, while its decision stays open for a later click until `window_s` (the
    /// click then trains as a positive). Measured on the simulation (`docs/quality.md`):
    /// waiting the whole 30-minute window to learn that a placement was passed over cost 0.09
    /// of mean reward.
    pub ignored_after_s: u64,
    /// Most open decisions kept per user; the oldest expires early past this.
    pub max_open_per_user: usize,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            window_s: 30 * 60,
            train_ignored_top_k: 3,
            ignored_after_s: 30,
            max_open_per_user: 16,
        }
    }
}

/// Exploration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExplorationConfig {
    /// The policy.
    pub policy: PolicyKind,
    /// ε of `epsilon_greedy`.
    pub epsilon: f32,
    /// Temperature of `softmax`, in logit units.
    pub temperature: f32,
}

impl Default for ExplorationConfig {
    fn default() -> Self {
        ExplorationConfig {
            policy: PolicyKind::EpsilonGreedy,
            epsilon: 0.05,
            temperature: 0.25,
        }
    }
}

/// Signal hygiene.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HygieneConfig {
    /// |z| above which a numeric signal is an outlier and kept out of training.
    pub z_threshold: f32,
    /// Samples of a signal a user needs before the outlier filter applies.
    pub min_samples: u32,
    /// Half-life (s) of the decayed signal statistics and counters.
    pub stats_half_life_s: f64,
    /// Largest accepted dwell, in seconds.
    pub max_dwell_s: f64,
    /// Largest accepted conversion value.
    pub max_conversion_value: f64,
}

impl Default for HygieneConfig {
    fn default() -> Self {
        HygieneConfig {
            z_threshold: 4.0,
            min_samples: 8,
            stats_half_life_s: 3600.0,
            max_dwell_s: 86_400.0,
            max_conversion_value: 1e9,
        }
    }
}

impl Config {
    /// `us` as a spin duration, or zero when this process may use only one CPU: there,
    /// spinning only delays the thread being waited for.
    pub fn spin(us: u64) -> std::time::Duration {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_micros(us)
        }
    }

    /// Loads a TOML file, applies `NUDGE_*` environment overrides and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
            None => String::new(),
        };
        Self::from_toml_with_env(&text, std::env::vars())
    }

    /// Parses TOML text, then applies overrides from `vars` (`NUDGE_*` names), then validates.
    pub fn from_toml_with_env(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, String> {
        let mut table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
        // Only variables naming a configuration field apply: others that share the prefix
        // (`NUDGE_LOG`, a bench's `NUDGE_BENCH_*`) are not configuration. A typo inside a known
        // section (`NUDGE_MODEL__DIMM`) is still refused by name.
        let fields = toml::Table::try_from(Config::default()).map_err(|e| e.to_string())?;
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix("NUDGE_") else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            if !fields.contains_key(&path[0]) {
                continue;
            }
            set_path(&mut table, &path, parse_literal(&value));
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// The `NUDGE_*` variables among `vars` that configure nothing and were ignored (a
    /// mistyped section such as `NUDGE_SEGMENT__WRITE_KEY`), apart from the known non-config
    /// ones (`NUDGE_LOG`, `NUDGE_BENCH_*`). The binary warns about each.
    pub fn ignored_env_vars(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
        let Ok(fields) = toml::Table::try_from(Config::default()) else {
            return Vec::new();
        };
        vars.into_iter()
            .map(|(name, _)| name)
            .filter(|name| {
                let Some(rest) = name.strip_prefix("NUDGE_") else {
                    return false;
                };
                let first = rest.split("__").next().unwrap_or_default();
                rest != "LOG"
                    && !rest.starts_with("BENCH_")
                    && !fields.contains_key(&first.to_ascii_lowercase())
            })
            .collect()
    }

    /// The effective shard count (resolving 0 to the number of cores).
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.shards
        }
    }

    /// Checks every field's range; the error names the first bad field.
    pub fn validate(&self) -> Result<(), String> {
        fn check(ok: bool, field: &str, want: &str) -> Result<(), String> {
            if ok {
                Ok(())
            } else {
                Err(format!("`{field}` must be {want}"))
            }
        }
        let m = &self.model;
        check(self.shards <= 1024, "shards", "at most 1024")?;
        check(self.inbox_capacity >= 1, "inbox_capacity", "at least 1")?;
        check(self.drain_batch >= 1, "drain_batch", "at least 1")?;
        check(
            self.max_users_per_shard >= 1,
            "max_users_per_shard",
            "at least 1",
        )?;
        check(self.max_candidates >= 1, "max_candidates", "at least 1")?;
        check(self.mix_interval_ms >= 1, "mix_interval_ms", "at least 1")?;
        check((8..=256).contains(&m.dim), "model.dim", "in 8..=256")?;
        let g = &self.segments;
        let max_k = crate::model::segments::MAX_SEGMENTS;
        check(g.k <= max_k, "segments.k", "at most 64")?;
        check(
            g.state_weight.is_finite() && g.state_weight >= 0.0,
            "segments.state_weight",
            "finite and non-negative",
        )?;
        check(
            g.memory.is_finite() && g.memory >= 1.0,
            "segments.memory",
            "at least 1",
        )?;
        check(
            g.update_interval_ms >= 1,
            "segments.update_interval_ms",
            "at least 1",
        )?;
        check(m.kappa.is_finite(), "model.kappa", "finite")?;
        check(
            m.state_half_life_s > 0.0,
            "model.state_half_life_s",
            "positive",
        )?;
        check(
            m.kappa_learning_rate >= 0.0,
            "model.kappa_learning_rate",
            "non-negative",
        )?;
        check(
            m.popularity_half_life_s >= 0.0,
            "model.popularity_half_life_s",
            "non-negative",
        )?;
        check(
            m.weight_half_life_s > 0.0,
            "model.weight_half_life_s",
            "positive",
        )?;
        check(
            (0.0..10.0).contains(&m.learning_rate),
            "model.learning_rate",
            "in [0,10)",
        )?;
        check((0.0..1.0).contains(&m.beta1), "model.beta1", "in [0,1)")?;
        check((0.0..1.0).contains(&m.beta2), "model.beta2", "in [0,1)")?;
        check(m.epsilon > 0.0, "model.epsilon", "positive")?;
        check(
            m.new_user_boost.is_finite() && m.new_user_boost >= 0.0,
            "model.new_user_boost",
            "finite and ≥ 0",
        )?;
        check(m.l2 >= 0.0, "model.l2", "non-negative")?;
        check(
            m.global_learning_rate >= 0.0,
            "model.global_learning_rate",
            "non-negative",
        )?;
        check(
            m.item_embedding_init >= 0.0,
            "model.item_embedding_init",
            "non-negative",
        )?;
        check(
            m.cooccurrence_neighbours <= 1024,
            "model.cooccurrence_neighbours",
            "at most 1024",
        )?;
        check(
            (0.0..=1.0).contains(&m.cooccurrence_recency),
            "model.cooccurrence_recency",
            "in [0,1]",
        )?;
        check(
            m.cooccurrence_weight.is_finite(),
            "model.cooccurrence_weight",
            "finite",
        )?;
        check(
            m.cooccurrence_learning_rate >= 0.0,
            "model.cooccurrence_learning_rate",
            "non-negative",
        )?;
        check(m.negatives <= 64, "model.negatives", "at most 64")?;
        check(
            self.reward.dwell_saturation_s > 0.0,
            "reward.dwell_saturation_s",
            "positive",
        )?;
        check(
            (0.0..=1.0).contains(&self.reward.default_reward),
            "reward.default_reward",
            "in [0,1]",
        )?;
        check(
            self.attribution.window_s >= 1,
            "attribution.window_s",
            "at least 1",
        )?;
        check(
            self.attribution.max_open_per_user >= 1,
            "attribution.max_open_per_user",
            "≥ 1",
        )?;
        let e = &self.exploration;
        check(
            (0.0..=1.0).contains(&e.epsilon),
            "exploration.epsilon",
            "in [0,1]",
        )?;
        check(e.temperature > 0.0, "exploration.temperature", "positive")?;
        check(
            self.hygiene.z_threshold > 0.0,
            "hygiene.z_threshold",
            "positive",
        )?;
        check(
            self.hygiene.stats_half_life_s > 0.0,
            "hygiene.stats_half_life_s",
            "positive",
        )?;
        for (alias, target) in &self.event_aliases {
            check(
                crate::api::EventKind::parse_builtin(target).is_some(),
                &format!("event_aliases.{alias}"),
                "a built-in event type",
            )?;
        }
        check(
            self.durability.segment_bytes >= 4096,
            "durability.segment_bytes",
            "at least 4096",
        )?;
        check(
            self.durability.checkpoint_interval_s >= 1,
            "durability.checkpoint_interval_s",
            "at least 1",
        )?;
        check(
            self.durability.max_parked_bytes >= 1024,
            "durability.max_parked_bytes",
            "at least 1024",
        )?;
        self.server.validate()?;
        self.saturation.validate()?;
        self.tone.validate()?;
        self.consent.validate()?;
        for (i, e) in self.experiments.iter().enumerate() {
            e.to_spec().map_err(|e| format!("experiments[{i}]: {e}"))?;
        }
        crate::rules::RuleSet::compile(&self.rules, 1).map_err(|e| format!("rules: {e}"))?;
        let space = crate::model::FeatureSpace {
            dim: self.model.dim,
            item_embedding_init: self.model.item_embedding_init,
        };
        for (i, t) in self.templates.iter().enumerate() {
            if self.templates[..i].iter().any(|o| o.name == t.name) {
                return Err(format!("templates[{i}]: `{}` is named twice", t.name));
            }
            crate::template::Template::compile(t.into(), 1, &space)
                .map_err(|e| format!("templates[{i}]: {e}"))?;
        }
        check(
            self.webhook.queue_capacity >= 1,
            "webhook.queue_capacity",
            "at least 1",
        )?;
        check(
            self.webhook.timeout_ms >= 1,
            "webhook.timeout_ms",
            "at least 1",
        )?;
        check(
            self.webhook.max_attempts >= 1,
            "webhook.max_attempts",
            "at least 1",
        )?;
        if !self.webhook.url.is_empty() {
            crate::triggers::check_url(&self.webhook.url)
                .map_err(|e| format!("`webhook.url` {e}"))?;
        }
        crate::triggers::TriggerSet::compile(&self.triggers, 1, &self.webhook.url)
            .map_err(|e| format!("triggers: {e}"))?;
        Ok(())
    }
}

/// The network front ends of `nudge serve` (TCP line-JSON, HTTP, WebSocket, Segment).
///
/// Addresses are strings so that an empty one can turn a front end off
/// (`NUDGE_SERVER__TCP=""`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the TCP line-JSON listener; empty disables it.
    pub tcp: String,
    /// Address of the HTTP listener (also serves WebSocket and Segment); empty disables it.
    pub http: String,
    /// Tokio worker threads of the TCP front end; 0 means one per available core.
    pub tcp_threads: usize,
    /// actix-web worker threads of the HTTP front end.
    pub http_workers: usize,
    /// Most open TCP connections; one more is refused with an error line.
    pub max_connections: usize,
    /// Longest accepted TCP line (bytes); a longer one gets an error and is skipped.
    pub max_line_bytes: usize,
    /// Most requests of one TCP or WebSocket connection in flight at once; past it the
    /// server stops reading that connection until replies go out.
    pub max_in_flight: usize,
    /// A TCP connection with no traffic and nothing in flight this long (s) is closed; 0: never.
    pub idle_timeout_s: u64,
    /// A TCP line, or an HTTP request's head and body, must arrive whole within this many
    /// milliseconds of its first byte, else the connection is closed (slow senders cannot
    /// hold a slot); 0: never.
    pub request_timeout_ms: u64,
    /// What a request does when its shard's inbox is full: wait for room, or fail with `busy`.
    pub on_full: OnFull,
    /// Largest HTTP request body (bytes) outside the Segment routes.
    pub max_body_bytes: usize,
    /// Largest WebSocket message (bytes); a larger one closes the socket with code 1009.
    pub ws_max_frame_bytes: usize,
    /// Seconds between WebSocket pings.
    pub ws_heartbeat_s: u64,
    /// A WebSocket silent this long (s), pongs included, is closed.
    pub ws_client_timeout_s: u64,
    /// Pushes queued per WebSocket before the oldest is dropped (and counted).
    pub ws_push_queue: usize,
    /// Longest wait (s) for in-flight requests at shutdown before connections are cut.
    pub shutdown_timeout_s: u64,
    /// Segment-compatible ingestion.
    pub segment: SegmentConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tcp: "127.0.0.1:7070".to_string(),
            http: "127.0.0.1:7071".to_string(),
            tcp_threads: 0,
            http_workers: 1,
            max_connections: 10_000,
            max_line_bytes: 1 << 20,
            max_in_flight: 1024,
            idle_timeout_s: 300,
            request_timeout_ms: 10_000,
            on_full: OnFull::Wait,
            max_body_bytes: 16 << 20,
            ws_max_frame_bytes: 1 << 20,
            ws_heartbeat_s: 15,
            ws_client_timeout_s: 45,
            ws_push_queue: 256,
            shutdown_timeout_s: 30,
            segment: SegmentConfig::default(),
        }
    }
}

impl ServerConfig {
    /// The TCP address, or `None` when the TCP front end is off.
    pub fn tcp_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        parse_addr("server.tcp", &self.tcp)
    }

    /// The HTTP address, or `None` when the HTTP front end is off.
    pub fn http_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        parse_addr("server.http", &self.http)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        self.tcp_addr()?;
        self.http_addr()?;
        let positive = [
            ("server.http_workers", self.http_workers),
            ("server.max_connections", self.max_connections),
            ("server.max_line_bytes", self.max_line_bytes),
            ("server.max_in_flight", self.max_in_flight),
            ("server.max_body_bytes", self.max_body_bytes),
            ("server.ws_max_frame_bytes", self.ws_max_frame_bytes),
            ("server.ws_push_queue", self.ws_push_queue),
            (
                "server.segment.max_event_bytes",
                self.segment.max_event_bytes,
            ),
            (
                "server.segment.max_batch_bytes",
                self.segment.max_batch_bytes,
            ),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(format!("`{field}` must be at least 1"));
            }
        }
        if self.ws_heartbeat_s == 0 || self.ws_client_timeout_s <= self.ws_heartbeat_s {
            return Err(
                "`server.ws_client_timeout_s` must exceed `server.ws_heartbeat_s` ≥ 1".into(),
            );
        }
        for (i, m) in self.segment.mappings.iter().enumerate() {
            if crate::api::EventKind::parse_builtin(&m.kind).is_none() {
                return Err(format!(
                    "`server.segment.mappings[{i}].kind` must be a built-in event type"
                ));
            }
        }
        Ok(())
    }
}

fn parse_addr(field: &str, text: &str) -> Result<Option<std::net::SocketAddr>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("`{field}` must be an address like 127.0.0.1:7070"))
}

/// Segment-compatible ingestion (`/v1/track`, `/v1/page`, `/v1/screen`, `/v1/identify`,
/// `/v1/batch`) and the table that maps Segment calls to nudge events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentConfig {
    /// The write key clients must send as the HTTP Basic user name; empty: no auth.
    pub write_key: String,
    /// Largest single call or batched message (bytes), as Segment's 32 KB.
    pub max_event_bytes: usize,
    /// Largest `/v1/batch` body (bytes), as Segment's 500 KB.
    pub max_batch_bytes: usize,
    /// The property naming the item when a mapping does not say (`product_id`).
    pub item_property: String,
    /// A numeric property that, on any call naming an item, also records a `dwell` of that
    /// many seconds; empty: off.
    pub dwell_property: String,
    /// The event name `page` calls are mapped under.
    pub page_event: String,
    /// The event name `screen` calls are mapped under.
    pub screen_event: String,
    /// nudge context keys filled from dotted paths into the Segment `context`
    /// (e.g. `device = "device.type"`).
    pub context: BTreeMap<String, String>,
    /// The consent category (`context.consent.categoryPreferences.<name>`, as Segment's
    /// consent management sends it) that grants or denies personalization (issue 15).
    pub consent_personalization: String,
    /// The consent category that grants or denies storage.
    pub consent_storage: String,
    /// Segment event names mapped to nudge events; unmapped events are accepted and ignored.
    pub mappings: Vec<SegmentMapping>,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        let mapping = |event: &str, kind: &str| SegmentMapping {
            event: event.to_string(),
            kind: kind.to_string(),
            item_property: None,
            value_property: None,
        };
        SegmentConfig {
            consent_personalization: "Personalization".to_string(),
            consent_storage: "Storage".to_string(),
            write_key: String::new(),
            max_event_bytes: 32 * 1024,
            max_batch_bytes: 500 * 1024,
            item_property: "product_id".to_string(),
            dwell_property: "dwell_seconds".to_string(),
            page_event: "Page Viewed".to_string(),
            screen_event: "Screen Viewed".to_string(),
            context: BTreeMap::from([
                ("device".to_string(), "device.type".to_string()),
                ("locale".to_string(), "locale".to_string()),
            ]),
            mappings: vec![
                mapping("Product Clicked", "click"),
                // A product page view is engagement, not a list impression: an `impression`
                // with no click trains as ignored (issue 10), which a page view must not.
                mapping("Product Viewed", "click"),
                mapping("Product Added", "conversion"),
            ],
        }
    }
}

/// One row of the Segment mapping table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentMapping {
    /// The Segment event name (`Product Clicked`).
    pub event: String,
    /// The nudge event type it becomes (`click`).
    pub kind: String,
    /// The property naming the item; default `SegmentConfig::item_property`.
    #[serde(default)]
    pub item_property: Option<String>,
    /// A numeric property giving the event's value (dwell seconds, conversion value…).
    #[serde(default)]
    pub value_property: Option<String>,
}

fn parse_literal(value: &str) -> toml::Value {
    format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let entry = table
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            if let toml::Value::Table(inner) = entry {
                set_path(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn toml_and_env_override() {
        let text = "shards = 3\n[model]\ndim = 16\n";
        let env = vec![
            ("NUDGE_MODEL__DIM".to_string(), "64".to_string()),
            (
                "NUDGE_EXPLORATION__POLICY".to_string(),
                "softmax".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
            ("NUDGE_LOG".to_string(), "debug".to_string()),
        ];
        let c = Config::from_toml_with_env(text, env).unwrap();
        assert_eq!(c.shards, 3);
        assert_eq!(c.model.dim, 64);
        assert_eq!(c.exploration.policy, PolicyKind::Softmax);
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = Config::from_toml_with_env("[model]\ndim = 4\n", Vec::new()).unwrap_err();
        assert!(err.contains("model.dim"), "{err}");
        let err = Config::from_toml_with_env("nope = 1\n", Vec::new()).unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let typo = vec![("NUDGE_MODEL__DIMM".to_string(), "64".to_string())];
        let err = Config::from_toml_with_env("", typo).unwrap_err();
        assert!(err.contains("dimm"), "{err}");
    }

    #[test]
    fn triggers_and_the_webhook_from_the_file() {
        let text = r#"
[[triggers]]
name = "offer"
when = "user.scroll_depth > 0.7"
cooldown_s = 600

[webhook]
url = "http://127.0.0.1:9/hook"
max_attempts = 2
"#;
        let c = Config::from_toml_with_env(text, Vec::new()).unwrap();
        assert_eq!((c.triggers[0].cooldown_s, c.webhook.max_attempts), (600, 2));
        let env = vec![("NUDGE_WEBHOOK__URL".to_string(), "https://x".to_string())];
        let err = Config::from_toml_with_env(text, env).unwrap_err();
        assert!(err.contains("webhook.url"), "{err}");
        let bad = text.replace("> 0.7", "> 'x'");
        let err = Config::from_toml_with_env(&bad, Vec::new()).unwrap_err();
        assert!(
            err.contains("triggers: trigger 0 `offer`: `when` at 1:19"),
            "{err}"
        );
    }
}
