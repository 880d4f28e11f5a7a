//! Decision-quality evaluation: does nudge decide better than simple baselines, and do its
//! per-user micro-adjustments (personal weights, the decayed state) earn their keep?
//!
//! Every workload drives a set of [`Policy`]s over the same stream with common random numbers:
//! the same users, contexts, candidates and uniform draws, so differences come from the
//! policies and not from luck. nudge itself runs through the embedded API ([`EnginePolicy`]),
//! one shard and a `ManualClock`, so a run is deterministic for a seed.
//!
//! - `log`: the JSONL decision-log writer (a non-blocking `DecisionLog`) and its reader;
//! - `replay`: off-policy evaluation of a configuration against a log (replay, IPS, SNIPS);
//!   `slate`: the same for template (multi-slot) decisions (slate and per-slot IPS, SNIPS);
//! - `obd`: the Open Bandit Dataset sample as a log; `movielens`: MovieLens-100k in time order;
//! - `sim`: seeded simulated users with drift; `baselines`: random and popularity policies;
//!   `knn`: item-kNN;
//! - `cb`: a synthetic contextual bandit (many users, few steps each, known item vectors);
//!   `informed`: its per-user Bayesian logistic regression baseline;
//! - `fetch`: downloads the public data sets into `.cache/data/` and checks their checksums;
//! - `stats`: intervals (bootstrap, Wilson);
//! - `saturation`: what frequency caps and diversity change on the simulator, and their cost;
//! - `experiment`: an A/B/n experiment inside one engine on the simulator, its verdict and
//!   lift against the offline estimate (issue 13).
//!
//! This module does not change the engine: it only calls its public API. Data sets are never
//! committed; they are fetched on demand. It is built with the `eval` cargo feature (on by
//! default), so an embedder's engine-only build carries neither it nor its dependencies.

pub mod baselines;
pub mod cb;
pub mod engine_policy;
pub mod experiment;
pub mod fetch;
pub mod informed;
pub mod knn;
pub mod log;
pub mod movielens;
pub mod obd;
pub mod replay;
pub mod saturation;
pub mod segments;
pub mod sim;
pub mod slate;
pub mod stats;

pub use engine_policy::{EnginePolicy, Variant};

/// What nudge learns from in a workload, the two ways users feed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feedback {
    /// A plain stream of events with no decision before them (what a tracking pipeline
    /// sends): the workload's decisions are untracked previews, and every outcome arrives as
    /// an event that names no decision.
    EventsOnly,
    /// Tracked decisions, and outcomes attributed to them (ignored placements labelled 0).
    Decisions,
}

impl Feedback {
    /// Both, in the order tables show them.
    pub const ALL: [Feedback; 2] = [Feedback::EventsOnly, Feedback::Decisions];

    /// The name used in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Feedback::EventsOnly => "events",
            Feedback::Decisions => "decisions",
        }
    }
}

/// What a policy is asked: place `n` of `candidates` for `user` in `context` at `ts_ms`.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The user's id.
    pub user: &'a str,
    /// The context pairs.
    pub context: &'a [(String, String)],
    /// Candidate item ids.
    pub candidates: &'a [String],
    /// How many placements are wanted.
    pub n: usize,
    /// Time of the request (Unix ms).
    pub ts_ms: u64,
}

/// What the user did with an item.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// A positive outcome (a click, a good rating).
    Click,
    /// The item was shown and ignored (reward 0).
    Ignored,
    /// A weak negative signal about an item (a skip, a poor rating).
    Skip,
    /// An explicit rating in 1..=5.
    Rating(f64),
}

/// Feedback about one item for one user; it answers the policy's last `place` for that user
/// when the item was among its placements.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// The user's id.
    pub user: &'a str,
    /// The context pairs.
    pub context: &'a [(String, String)],
    /// The item.
    pub item: &'a str,
    /// What happened.
    pub outcome: Outcome,
    /// Time of the outcome (Unix ms).
    pub ts_ms: u64,
    /// Whether the item was shown to the user (placed by the policy's last decision), so
    /// that an event stream reports an impression before the outcome; `false` for outcomes
    /// on items found elsewhere (a rating log).
    pub shown: bool,
}

/// Something that decides: a baseline, or nudge behind its embedded API. `Send`, so that the
/// workloads can run independent policies on their own threads.
pub trait Policy: Send {
    /// A short name for tables.
    fn name(&self) -> String;
    /// Places `req.n` candidates, best first, as indices into `req.candidates`.
    fn place(&mut self, req: &Request<'_>) -> Vec<usize>;
    /// The probability that the policy puts each candidate in the first slot (for IPS). Like
    /// `place`, it counts as a decision that the next observation may answer.
    fn first_slot(&mut self, req: &Request<'_>) -> Vec<f64>;
    /// Learns from what the user did.
    fn observe(&mut self, obs: &Observation<'_>);
}

/// Runs `f` once per policy, each policy on its own thread (they share nothing: every policy
/// sees its own copy of the stream), and returns the results in the policies' order. The
/// results do not depend on scheduling, only the wall time does.
pub fn run_each<T: Send>(
    policies: &mut [Box<dyn Policy>],
    f: impl Fn(&mut dyn Policy) -> T + Sync,
) -> Vec<T> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = policies
            .iter_mut()
            .map(|p| s.spawn(move || f(p.as_mut())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a policy's run panicked"))
            .collect()
    })
}

/// Indices of the `n` largest scores, best first; ties go to the lower index.
pub fn top_n_by(scores: &[f64], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let better = |a: &usize, b: &usize| {
        scores[*b]
            .partial_cmp(&scores[*a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(b))
    };
    let n = n.min(idx.len());
    if n == 0 {
        return Vec::new();
    }
    if n < idx.len() {
        idx.select_nth_unstable_by(n - 1, better);
        idx.truncate(n);
    }
    idx.sort_unstable_by(better);
    idx
}

/// The first-slot distribution of a greedy policy over `scores`: all mass on the best (split
/// evenly among exact ties).
pub fn greedy_first_slot(scores: &[f64]) -> Vec<f64> {
    let best = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ties = scores.iter().filter(|&&s| s == best).count().max(1);
    scores
        .iter()
        .map(|&s| if s == best { 1.0 / ties as f64 } else { 0.0 })
        .collect()
}
