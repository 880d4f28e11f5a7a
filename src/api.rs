//! The public request and reply types of the embeddable API: what a caller builds and what it
//! gets back. Plain data with builders; validation happens in `engine` when they come in.
//!
//! These types do not derive serde: the wire module owns the JSON shapes and converts by hand.

use crate::ids::DecisionId;

/// Key/value facts about the moment (device, locale, hour, page, sentiment…).
pub type Context = Vec<(String, String)>;

/// The built-in event types. Custom names map to these through `Config::event_aliases`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventKind {
    /// The item was shown.
    Impression = 0,
    /// The item was clicked.
    Click = 1,
    /// The user dwelt on the item; `value` is seconds.
    Dwell = 2,
    /// The user scrolled; `value` is depth in 0..=1.
    Scroll = 3,
    /// The user converted; `value` is the (non-negative) value, default 1.
    Conversion = 4,
    /// The user rated the item; `value` is in 1..=5.
    Rating = 5,
    /// The user's sentiment; `value` is in -1..=1. Names no item.
    Sentiment = 6,
    /// The user skipped the item (a negative signal).
    Skip = 7,
}

impl EventKind {
    /// Every built-in kind, in `repr` order.
    pub const ALL: [EventKind; 8] = [
        EventKind::Impression,
        EventKind::Click,
        EventKind::Dwell,
        EventKind::Scroll,
        EventKind::Conversion,
        EventKind::Rating,
        EventKind::Sentiment,
        EventKind::Skip,
    ];

    /// The wire name of the kind.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Impression => "impression",
            EventKind::Click => "click",
            EventKind::Dwell => "dwell",
            EventKind::Scroll => "scroll",
            EventKind::Conversion => "conversion",
            EventKind::Rating => "rating",
            EventKind::Sentiment => "sentiment",
            EventKind::Skip => "skip",
        }
    }

    /// Parses a built-in name (aliases are resolved by `Engine::event_kind`).
    pub fn parse_builtin(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether an event of this kind must name an item.
    pub fn needs_item(self) -> bool {
        !matches!(self, EventKind::Sentiment | EventKind::Scroll)
    }
}

/// Something a user did.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The user's id.
    pub user: String,
    /// What happened.
    pub kind: EventKind,
    /// The item it happened to, if any (required for most kinds).
    pub item: Option<String>,
    /// The kind's numeric signal (see `EventKind`).
    pub value: Option<f64>,
    /// Event time, Unix milliseconds; `None` means the engine's now.
    pub ts_ms: Option<u64>,
    /// Context of the event.
    pub context: Context,
    /// The decision this event answers, when the caller knows it.
    pub decision: Option<DecisionId>,
    /// An idempotency key: a retry with the same key (within `event_id_window_s`) is
    /// acknowledged as a duplicate and not applied again.
    pub event_id: Option<String>,
}

impl Event {
    /// An event of `kind` by `user`, with no item, value, time or context yet.
    pub fn new(user: impl Into<String>, kind: EventKind) -> Self {
        Event {
            user: user.into(),
            kind,
            item: None,
            value: None,
            ts_ms: None,
            context: Vec::new(),
            decision: None,
            event_id: None,
        }
    }
    /// Sets the idempotency key.
    pub fn event_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = Some(id.into());
        self
    }
    /// Sets the item.
    pub fn item(mut self, item: impl Into<String>) -> Self {
        self.item = Some(item.into());
        self
    }
    /// Sets the numeric value.
    pub fn value(mut self, value: f64) -> Self {
        self.value = Some(value);
        self
    }
    /// Sets the event time (Unix ms).
    pub fn at(mut self, ts_ms: u64) -> Self {
        self.ts_ms = Some(ts_ms);
        self
    }
    /// Adds one context pair.
    pub fn context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.push((key.into(), value.into()));
        self
    }
    /// Names the decision this event answers.
    pub fn decision(mut self, id: DecisionId) -> Self {
        self.decision = Some(id);
        self
    }
}

/// What the engine did with an accepted event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ack {
    /// The event labelled a placement of an open decision.
    pub attributed: bool,
    /// The model took a gradient step on it.
    pub trained: bool,
    /// Its signal was an outlier for this user, so it was kept out of training (and counted).
    pub outlier: bool,
    /// Its `event_id` was already applied within the window: acknowledged, not applied again.
    pub duplicate: bool,
    /// The user denied personalization: acknowledged, not applied (issue 15).
    pub withheld: bool,
    /// The threshold triggers this event fired for its user, in the set's order
    /// (`docs/triggers.md`; empty, and not allocated, when none fired).
    pub triggers: Vec<std::sync::Arc<str>>,
}

/// An item for the catalog, or inline in a decision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ItemSpec {
    /// The item's id.
    pub id: String,
    /// Categorical attributes; a key may repeat (e.g. several genres).
    pub attrs: Vec<(String, String)>,
    /// An optional dense vector (an embedding) of any length; it is normalized.
    pub vector: Option<Vec<f32>>,
}

impl ItemSpec {
    /// An item with no attributes or vector yet.
    pub fn new(id: impl Into<String>) -> Self {
        ItemSpec {
            id: id.into(),
            attrs: Vec::new(),
            vector: None,
        }
    }
    /// Adds one attribute.
    pub fn attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attrs.push((key.into(), value.into()));
        self
    }
    /// Sets the dense vector.
    pub fn vector(mut self, vector: Vec<f32>) -> Self {
        self.vector = Some(vector);
        self
    }
}

/// One candidate of a decision: a catalog id or an inline item.
#[derive(Clone, Debug, PartialEq)]
pub enum Candidate {
    /// An item by id (from the catalog; unknown ids score from learned parameters only).
    Id(String),
    /// An item described inline, not added to the catalog.
    Inline(ItemSpec),
}

impl From<&str> for Candidate {
    fn from(id: &str) -> Self {
        Candidate::Id(id.to_string())
    }
}

impl From<String> for Candidate {
    fn from(id: String) -> Self {
        Candidate::Id(id)
    }
}

/// A request to rank candidates for a user in a context.
#[derive(Clone, Debug, PartialEq)]
pub struct DecideRequest {
    /// The user's id.
    pub user: String,
    /// The candidates (at most `Config::max_candidates`).
    pub candidates: Vec<Candidate>,
    /// How many placements to return (clamped to the number of candidates).
    pub n: usize,
    /// Context of the decision.
    pub context: Context,
    /// Decision time, Unix ms; `None` means the engine's now.
    pub ts_ms: Option<u64>,
    /// Whether each placement carries its score broken into parts.
    pub explain: bool,
    /// Whether the decision is tracked (the default): opened for attribution, so that later
    /// outcomes on its placements train the model, and written to the decision log. An
    /// untracked decision is a preview: it is ranked the same way but leaves nothing behind,
    /// and its id is [`DecisionId::UNTRACKED`].
    pub track: bool,
    /// Saturation control for this decision, in place of the engine's `[saturation]`
    /// (`None`: the engine's; `Some(default)`: none).
    pub saturation: Option<crate::saturation::SaturationConfig>,
}

impl DecideRequest {
    /// A request to place the best `n` of `candidates` for `user`.
    pub fn new<C: Into<Candidate>>(
        user: impl Into<String>,
        candidates: impl IntoIterator<Item = C>,
        n: usize,
    ) -> Self {
        DecideRequest {
            user: user.into(),
            candidates: candidates.into_iter().map(Into::into).collect(),
            n,
            context: Vec::new(),
            ts_ms: None,
            explain: false,
            track: true,
            saturation: None,
        }
    }
    /// Adds one context pair.
    pub fn context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.push((key.into(), value.into()));
        self
    }
    /// Sets the decision time (Unix ms).
    pub fn at(mut self, ts_ms: u64) -> Self {
        self.ts_ms = Some(ts_ms);
        self
    }
    /// Asks for the score breakdown of each placement.
    pub fn explain(mut self, on: bool) -> Self {
        self.explain = on;
        self
    }
    /// `false` makes the decision a preview that opens nothing for attribution.
    pub fn track(mut self, on: bool) -> Self {
        self.track = on;
        self
    }
    /// Replaces the engine's saturation control for this decision.
    pub fn saturation(mut self, cfg: crate::saturation::SaturationConfig) -> Self {
        self.saturation = Some(cfg);
        self
    }
}

/// A chatbot's message, and the question which tone to answer it in (`Engine::tone`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToneRequest {
    /// The user's id.
    pub user: String,
    /// The message's text, scored by the built-in lexicon when `sentiment` is not given.
    pub text: Option<String>,
    /// The message's sentiment in −1..1, from the caller's own model.
    pub sentiment: Option<f64>,
    /// Context of the message.
    pub context: Context,
    /// Message time, Unix ms; `None` means the engine's now.
    pub ts_ms: Option<u64>,
    /// Whether the chosen tone's score comes broken into parts (with its prior).
    pub explain: bool,
}

impl ToneRequest {
    /// A message of `user` with neither text nor sentiment yet.
    pub fn new(user: impl Into<String>) -> Self {
        ToneRequest {
            user: user.into(),
            ..ToneRequest::default()
        }
    }
    /// Sets the text (scored by the lexicon unless a sentiment is given).
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
    /// Sets the sentiment, −1..1.
    pub fn sentiment(mut self, sentiment: f64) -> Self {
        self.sentiment = Some(sentiment);
        self
    }
    /// Sets the message time (Unix ms).
    pub fn at(mut self, ts_ms: u64) -> Self {
        self.ts_ms = Some(ts_ms);
        self
    }
    /// Asks for the chosen tone's score parts.
    pub fn explain(mut self, on: bool) -> Self {
        self.explain = on;
        self
    }
}

/// Where a message's sentiment came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentimentSource {
    /// The caller sent it.
    Given,
    /// The built-in lexicon scored the text.
    Lexicon,
    /// Neither: no sentiment was recorded (no score given, no lexicon word in the text).
    None,
}

impl SentimentSource {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            SentimentSource::Given => "given",
            SentimentSource::Lexicon => "lexicon",
            SentimentSource::None => "none",
        }
    }
}

/// The tone to answer a message in.
#[derive(Clone, Debug, PartialEq)]
pub struct ToneDecision {
    /// The tone's name.
    pub tone: String,
    /// The message's sentiment, as recorded.
    pub sentiment: Option<f64>,
    /// Where it came from.
    pub source: SentimentSource,
    /// The decision: its id (reward it on the tone's item, `tone:<name>`) and its one
    /// placement, with the propensity and, with `explain`, the parts and the prior.
    pub decision: Decision,
}

/// The parts of a logit `z`; they sum to `z`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScoreParts {
    /// The item's global bias `b_i`.
    pub bias: f32,
    /// `⟨g, x_i⟩`: what everyone likes.
    pub global: f32,
    /// `⟨w_u, x_i⟩`: this user's learned taste.
    pub personal: f32,
    /// `⟨G·c, x_i⟩`: what suits this context.
    pub context: f32,
    /// `κ·⟨ŝ_u, x_i⟩`: this user's recent activity.
    pub state: f32,
    /// `γ·co(u,i)`: how often the items this user touched last were touched together with
    /// this one by other users (the co-occurrence component).
    pub cooccurrence: f32,
    /// A configured prior (a tone's, from the user's sentiment; `tone`); 0 elsewhere.
    pub prior: f32,
}

impl ScoreParts {
    /// The logit: the sum of the parts.
    pub fn logit(&self) -> f32 {
        self.bias
            + self.global
            + self.personal
            + self.context
            + self.state
            + self.cooccurrence
            + self.prior
    }
}

/// One placed item of a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// The item.
    pub item: String,
    /// The model's probability of a positive outcome, `σ(z)`.
    pub score: f32,
    /// The probability the policy placed this item in this slot, given the earlier slots
    /// (exact and unconditional for the first slot).
    pub propensity: f32,
    /// The score's parts, when asked for.
    pub explain: Option<ScoreParts>,
}

/// The answer to a `DecideRequest`.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The decision's id, for rewards.
    pub id: DecisionId,
    /// The placements, best first.
    pub items: Vec<Placement>,
    /// The experiment and arm whose policy ranked them, if the user is in one.
    pub experiment: Option<ExperimentArm>,
    /// The triggers the decision's rules fired, in priority order.
    pub triggers: Vec<std::sync::Arc<str>>,
    /// With `explain`: each rule that fired (or failed at run time) and what it changed.
    pub rules: Vec<RuleEffect>,
    /// With `explain`: what saturation control did (caps, fatigue, diversity).
    pub saturation: Vec<SaturationEffect>,
    /// With `explain`: the user's segment at the decision, if it has one.
    pub segment: Option<SegmentLabel>,
}

/// What saturation control did to one candidate, or to a decision (`explain`).
#[derive(Clone, Debug, PartialEq)]
pub struct SaturationEffect {
    /// The candidate (`None` for a diversity limit, which acts on the whole decision).
    pub item: Option<String>,
    /// Which control.
    pub kind: SaturationKind,
    /// Impressions counted: in the cap's window, without engagement (fatigue), or placed
    /// with the value (diversity).
    pub shown: u32,
    /// What fatigue took from the item's logit (negative); 0 otherwise.
    pub delta: f32,
    /// The attribute value at its limit (`category=shoes`), for a value cap or diversity.
    pub value: Option<String>,
}

/// The saturation controls (`SaturationEffect::kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaturationKind {
    /// The item reached its frequency cap: not placed.
    ItemCap,
    /// One of the item's attribute values reached its frequency cap: not placed.
    ValueCap,
    /// Shown repeatedly without engagement: demoted.
    Fatigue,
    /// An attribute value filled its quota of the placements.
    Diversity,
}

impl SaturationKind {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            SaturationKind::ItemCap => "item_cap",
            SaturationKind::ValueCap => "value_cap",
            SaturationKind::Fatigue => "fatigue",
            SaturationKind::Diversity => "diversity",
        }
    }
}

/// What one rule did to a decision (`explain`).
#[derive(Clone, Debug, PartialEq)]
pub struct RuleEffect {
    /// The rule's name.
    pub rule: std::sync::Arc<str>,
    /// The rule's version (the rule set's version when its definition last changed).
    pub version: u64,
    /// Its action.
    pub action: crate::rules::ActionKind,
    /// The items it acted on (matched by `items`, or forced), in candidate order.
    pub items: Vec<String>,
    /// What a boost added to (negative: a bury took from) each item's logit.
    pub by: Option<f32>,
    /// The trigger it fired.
    pub trigger: Option<std::sync::Arc<str>>,
    /// Why it was skipped for this decision (a runtime error), if it was.
    pub error: Option<&'static str>,
}

/// A user's segment (issue 14, item 4): its stable id and the name an operator gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentLabel {
    /// The segment's id (stable across centroid updates, never reused).
    pub id: u32,
    /// Its name, if an operator named it.
    pub name: Option<std::sync::Arc<str>>,
}

/// One segment as `Engine::segments` reports it, every shard's part merged
/// (`docs/segments.md`).
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentReport {
    /// The segment's id.
    pub id: u32,
    /// Its name, if any.
    pub name: Option<std::sync::Arc<str>>,
    /// Resident users whose last assignment (at their latest event or decision) was it.
    pub size: u64,
    /// Points its centroid stands for (capped at `segments.memory`).
    pub weight: f64,
    /// Items its users engaged with, by count halving per hour of event time, most first.
    pub top_items: Vec<(String, f64)>,
    /// Sampled mean of a few live features over its users' events: `(feature, mean,
    /// samples)`.
    pub mean_features: Vec<(crate::actor::Feature, f64, f64)>,
}

impl SegmentReport {
    /// Adds another shard's part of the same segment.
    pub fn merge(&mut self, other: &SegmentReport) {
        self.size += other.size;
        for (id, count) in &other.top_items {
            match self.top_items.iter_mut().find(|(i, _)| i == id) {
                Some(mine) => mine.1 += count,
                None => self.top_items.push((id.clone(), *count)),
            }
        }
        self.top_items.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (mine, theirs) in self.mean_features.iter_mut().zip(&other.mean_features) {
            let n = mine.2 + theirs.2;
            if n > 0.0 {
                mine.1 = (mine.1 * mine.2 + theirs.1 * theirs.2) / n;
            }
            mine.2 = n;
        }
    }
}

/// The experiment and arm a decision was made under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExperimentArm {
    /// The experiment's name.
    pub experiment: std::sync::Arc<str>,
    /// The arm's name.
    pub arm: std::sync::Arc<str>,
}

/// Decayed per-user signal statistics and counters, as exported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SignalSummary {
    /// Decayed events per hour.
    pub engagement_per_hour: f64,
    /// Decayed clicks per hour.
    pub clicks_per_hour: f64,
    /// Decayed mean dwell, seconds.
    pub dwell_mean_s: f64,
    /// Decayed standard deviation of dwell, seconds.
    pub dwell_std_s: f64,
    /// Decayed mean sentiment (-1..1); its sign is the trend.
    pub sentiment_trend: f64,
    /// Events kept out of training as outliers.
    pub outliers_filtered: u64,
}

/// An open decision of a user, as exported.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenDecision {
    /// Its id.
    pub id: DecisionId,
    /// When it was made (Unix ms).
    pub created_ms: u64,
    /// When its window closes (Unix ms).
    pub expires_ms: u64,
    /// The placed items with the reward each has earned so far (`None`: no outcome yet).
    pub placements: Vec<(String, Option<f32>)>,
}

/// Everything the engine stores about one user: the answer to a data-access request.
#[derive(Clone, Debug, PartialEq)]
pub struct UserExport {
    /// The user's id.
    pub user: String,
    /// First event or decision seen (Unix ms).
    pub first_seen_ms: u64,
    /// Last event or decision seen (Unix ms).
    pub last_seen_ms: u64,
    /// Events accepted, by kind (indexed like `EventKind::ALL`).
    pub events_by_kind: [u64; 8],
    /// Decisions made for the user.
    pub decisions: u64,
    /// Personal-model gradient steps taken.
    pub training_steps: u64,
    /// The decayed state vector `s_u`, as of `last_seen_ms`.
    pub state: Vec<f32>,
    /// The personal weights `w_u`.
    pub personal_weights: Vec<f32>,
    /// Decayed signal statistics.
    pub signals: SignalSummary,
    /// The live features at `last_seen_ms`, in catalogue order (`docs/features.md`).
    pub features: Vec<(crate::actor::Feature, crate::actor::features::FeatureValue)>,
    /// Open decisions.
    pub open_decisions: Vec<OpenDecision>,
    /// The user's segment now (its nearest centroid), if it has one.
    pub segment: Option<SegmentLabel>,
    /// The user denied storage: this is what the engine holds of them in memory only
    /// (`docs/consent.md`); a restart or an eviction forgets it.
    pub memory_only: bool,
}

/// Counters of one shard.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShardStats {
    /// Users resident in memory.
    pub resident_users: u64,
    /// Decisions open for attribution (each waits for its outcomes until its window ends).
    pub open_decisions: u64,
    /// Bytes of evicted users held in memory until a checkpoint stores them (0 in memory).
    pub parked_bytes: u64,
    /// Messages waiting in the inbox.
    pub inbox_depth: u64,
    /// Events accepted.
    pub events_total: u64,
    /// Decisions made.
    pub decisions_total: u64,
    /// Rewards and outcome events attributed to a decision.
    pub rewards_attributed_total: u64,
    /// Decisions whose window closed.
    pub decisions_expired_total: u64,
    /// Events kept out of training as outliers.
    pub outliers_filtered_total: u64,
    /// Users evicted (cap or idleness).
    pub evictions_total: u64,
    /// Calls refused with `Busy`.
    pub busy_total: u64,
    /// Gradient steps on personal models.
    pub training_steps_total: u64,
    /// Replica mixing rounds.
    pub mixes_total: u64,
    /// Events not applied because their `event_id` was already applied.
    pub duplicates_total: u64,
    /// Messages whose handling panicked (each answered `internal`, its user's actor reset).
    pub panics_total: u64,
    /// Rules that fired in decisions.
    pub rules_fired_total: u64,
    /// Rules skipped in a decision by a runtime error (division by zero, a missing value).
    pub rule_errors_total: u64,
    /// Threshold triggers fired (replayed events count again, like `events_total`).
    pub triggers_fired_total: u64,
    /// Whether a panic escaped a shard-wide step (the timer, the log's commit), so that the
    /// shard's state may be inconsistent; `/readyz` reports not ready.
    pub failed: bool,
}

/// Counters of the whole engine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Items in the catalog.
    pub catalog_items: u64,
    /// Per shard.
    pub shards: Vec<ShardStats>,
    /// Where state is kept: `None` in memory only.
    pub durability: Option<DurabilityStats>,
    /// Threshold triggers delivered since start, and the webhook's counters.
    pub triggers: TriggerStats,
    /// Every segment (`Engine::segments`; empty from `Engine::stats`, which reads counters
    /// only: the server's `stats` fills it).
    pub segments: Vec<SegmentReport>,
}

/// Deliveries of fired triggers since the engine started (`docs/triggers.md`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TriggerStats {
    /// Firings delivered, by trigger name (names are operator-defined and bounded).
    pub fired: Vec<(String, u64)>,
    /// Firings the webhook accepted (a 2xx answer).
    pub webhook_delivered_total: u64,
    /// Attempts retried after a 5xx answer, a connection error or a timeout.
    pub webhook_retried_total: u64,
    /// Firings given up after `webhook.max_attempts` attempts, or answered with a 4xx.
    pub webhook_failed_total: u64,
    /// Firings dropped because the webhook's queue was full.
    pub webhook_dropped_total: u64,
}

/// The data directory and its write-ahead logs, summed over shards.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DurabilityStats {
    /// The data directory.
    pub data_dir: String,
    /// The fsync policy (`always`, `everysec`, `no`).
    pub fsync: &'static str,
    /// Bytes appended to the logs.
    pub log_bytes_total: u64,
    /// Records appended to the logs.
    pub log_records_total: u64,
    /// Fsyncs of the logs.
    pub fsyncs_total: u64,
    /// Microseconds spent in those fsyncs.
    pub fsync_us_total: u64,
    /// Fsync latency as a cumulative histogram: (upper bound in µs, fsyncs at most that
    /// long); the last bound's count is every fsync but those slower than a second.
    pub fsync_us_histogram: Vec<(u64, u64)>,
    /// Log records replayed when the engine started.
    pub recovered_records: u64,
    /// How long that recovery took, in milliseconds.
    pub recovery_ms: u64,
    /// Whether every log's last write succeeded (`false`: state changes are refused with
    /// `unavailable` until writes succeed again).
    pub writable: bool,
    /// Checkpoints committed in this run.
    pub checkpoints_total: u64,
    /// Checkpoints that failed in this run (their log is kept).
    pub checkpoint_failures_total: u64,
    /// How long the last checkpoint's transaction took, in milliseconds.
    pub last_checkpoint_ms: u64,
    /// Bytes the last checkpoint wrote.
    pub last_checkpoint_bytes: u64,
    /// When the last checkpoint committed (Unix ms; 0: none in this run).
    pub last_checkpoint_unix_ms: u64,
    /// The longest a shard stopped serving to begin a checkpoint, in this run (µs).
    pub max_checkpoint_pause_us: u64,
    /// Requests refused (`unavailable`) because bringing their user into memory would have
    /// parked more than `durability.max_parked_bytes` (back-pressure from the store).
    pub parked_refusals_total: u64,
    /// Users in the store (every shard).
    pub stored_users: u64,
    /// Users moved out of memory (resident cap, idle timer).
    pub passivations_total: u64,
    /// Users loaded from the store on first touch.
    pub loads_total: u64,
    /// Users the checkpoints wrote, and erased users they deleted.
    pub users_written_total: u64,
    /// Erased users the checkpoints deleted from the store.
    pub users_deleted_total: u64,
}

impl Stats {
    /// The sum over shards.
    pub fn total(&self) -> ShardStats {
        let mut t = ShardStats::default();
        for s in &self.shards {
            t.resident_users += s.resident_users;
            t.open_decisions += s.open_decisions;
            t.parked_bytes += s.parked_bytes;
            t.inbox_depth += s.inbox_depth;
            t.events_total += s.events_total;
            t.decisions_total += s.decisions_total;
            t.rewards_attributed_total += s.rewards_attributed_total;
            t.decisions_expired_total += s.decisions_expired_total;
            t.outliers_filtered_total += s.outliers_filtered_total;
            t.evictions_total += s.evictions_total;
            t.busy_total += s.busy_total;
            t.training_steps_total += s.training_steps_total;
            t.mixes_total += s.mixes_total;
            t.panics_total += s.panics_total;
            t.duplicates_total += s.duplicates_total;
            t.rules_fired_total += s.rules_fired_total;
            t.rule_errors_total += s.rule_errors_total;
            t.triggers_fired_total += s.triggers_fired_total;
            t.failed |= s.failed;
        }
        t
    }
}

/// A push about one subscribed user, sent after an event changes them.
#[derive(Clone, Debug, PartialEq)]
pub struct UserUpdate {
    /// The user.
    pub user: String,
    /// What caused it: an event, or a new subscription (its first update).
    pub cause: UpdateCause,
    /// Event time (Unix ms); for a new subscription, the engine's time when it opened (or
    /// the user's last event, if that is later).
    pub ts_ms: u64,
    /// The user's new top items among their last decision's candidates (item, score).
    pub top: Vec<(String, f32)>,
    /// Signal statistics after the event.
    pub signals: SignalSummary,
    /// Engagement fell by at least half since the previous push.
    pub engagement_drop: bool,
    /// The threshold triggers the event fired for the user (`docs/triggers.md`).
    pub triggers: Vec<std::sync::Arc<str>>,
}

/// What caused a `UserUpdate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateCause {
    /// An event of the user.
    Event(EventKind),
    /// The subscription opened: its first update, the user's state as it is (sent only when
    /// the engine holds state for the user).
    Subscribed,
}

impl UpdateCause {
    /// The wire name: the event's kind, or `subscribed`.
    pub fn name(self) -> &'static str {
        match self {
            UpdateCause::Event(kind) => kind.name(),
            UpdateCause::Subscribed => "subscribed",
        }
    }
}

/// One firing of a threshold trigger for one user (`docs/triggers.md`).
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerFiring {
    /// The trigger's name.
    pub trigger: std::sync::Arc<str>,
    /// The user.
    pub user: String,
    /// The time of the event that fired it (Unix ms).
    pub ts_ms: u64,
    /// The webhook it is posted to, if any (the trigger's own, else `[webhook] url`).
    pub webhook: Option<std::sync::Arc<str>>,
}

/// Where the engine delivers fired triggers (the server's webhook, an embedder's queue);
/// must not block (drop and count instead). Never called while a shard recovers.
pub trait TriggerSink: Send + Sync + 'static {
    /// Delivers one firing, once its event's log write succeeded. Called on the thread
    /// that ran the shard (or, under `fsync = "always"`, the log's syncer): return quickly.
    fn fired(&self, firing: &TriggerFiring);
}

/// Where the engine delivers `UserUpdate`s; must not block (drop instead).
pub trait UpdateSink: Send + Sync + 'static {
    /// Delivers one update. Called on a shard thread: return quickly.
    fn push(&self, update: UserUpdate);

    /// Delivers one firing of a trigger this sink subscribed to by name
    /// (`Engine::subscribe_trigger`). Called where `TriggerSink::fired` is: return quickly.
    /// The default ignores it.
    fn fired(&self, firing: &TriggerFiring) {
        let _ = firing;
    }
}

/// What produced an outcome in the decision log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeSource {
    /// An event of this kind on a shown item.
    Event(EventKind),
    /// An explicit `reward` call.
    Reward,
}

/// One placement as logged.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedPlacement {
    /// The item.
    pub item: String,
    /// `σ(z)` at decision time.
    pub score: f32,
    /// The placement's propensity.
    pub propensity: f32,
}

/// One record of the decision log (see `docs/decision-log.md` for the file format).
#[derive(Clone, Debug, PartialEq)]
pub enum LogRecord {
    /// A decision was made.
    Decision {
        /// Decision time (Unix ms).
        ts_ms: u64,
        /// Its id.
        decision: DecisionId,
        /// The user.
        user: String,
        /// The context as given.
        context: Context,
        /// Every candidate's id, in request order.
        candidates: Vec<String>,
        /// The placements, best slot first.
        placements: Vec<LoggedPlacement>,
        /// A hash of the engine configuration that made it.
        config_version: u64,
        /// The experiment and arm it was made under, if any.
        experiment: Option<ExperimentArm>,
    },
    /// An outcome was attributed to a placement.
    Outcome {
        /// Time of the outcome (Unix ms).
        ts_ms: u64,
        /// The decision.
        decision: DecisionId,
        /// The placed item.
        item: String,
        /// This outcome's reward in 0..=1.
        reward: f32,
        /// The placement's accumulated reward after it.
        total: f32,
        /// What produced it.
        source: OutcomeSource,
    },
    /// A decision's window closed.
    Expired {
        /// Time it closed (Unix ms).
        ts_ms: u64,
        /// The decision.
        decision: DecisionId,
        /// Placements that never got an outcome.
        unrewarded: Vec<String>,
    },
}

/// Where the engine writes its decision log. Called by whichever thread runs a shard: must never block
/// (a bounded writer drops and counts instead).
pub trait DecisionLog: Send + Sync + 'static {
    /// Takes one record.
    fn record(&self, record: LogRecord);
}
