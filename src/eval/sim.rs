//! A seeded simulation of users, for judging decisions where the truth is known.
//!
//! Users have latent tastes; items have latent vectors, and what the engine sees of them (a
//! category, a brand, a noisy dense vector) correlates with those vectors. The context (device,
//! hour of day) shifts everyone's tastes the same way; each session has an intent (one category
//! the user is after right now); rewards are Bernoulli draws of
//! `σ(base + β_i + γ·⟨taste + context + intent, v_i⟩)`. At a set time a fraction of users'
//! tastes are redrawn (the drift). Every policy sees the same stream (users, contexts,
//! candidates, uniform draws): common random numbers. The oracle knows everything.
//!
//! This module owns the world and the metrics (average reward, regret against the oracle,
//! adaptation after the drift, the reward curve); it does not draw plots or print tables.

use crate::api::ItemSpec;
use crate::config::Config;
use crate::eval::baselines::{Popularity, PopularityScore, RandomPolicy};
use crate::eval::knn::ItemKnn;
use crate::eval::stats::{cluster_bootstrap, Cluster, Interval};
use crate::eval::{
    run_each, EnginePolicy, Feedback, Observation, Outcome, Policy, Request, Variant,
};
use crate::rng::Rng;

/// Item-kNN's neighbourhood in the simulation.
const KNN_NEIGHBOURS: usize = 50;
/// How often (observations) item-kNN rebuilds its neighbour lists.
const KNN_REBUILD_EVERY: usize = 2_000;

/// Unix ms of the simulation's first second.
pub const START_MS: u64 = 1_700_000_000_000;

const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
const HOURS: [&str; 4] = ["night", "morning", "afternoon", "evening"];

/// The simulation's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Seed of the world and the stream.
    pub seed: u64,
    /// Number of users.
    pub users: usize,
    /// Number of items.
    pub items: usize,
    /// Number of item categories (clusters of latent vectors).
    pub categories: usize,
    /// Width of the latent vectors.
    pub latent_dim: usize,
    /// Candidates per decision (drawn uniformly from the catalog).
    pub candidates: usize,
    /// Sessions per user.
    pub sessions_per_user: usize,
    /// Mean decisions per session.
    pub events_per_session: f64,
    /// Length of the simulated period, days.
    pub days: f64,
    /// When the drift happens, as a fraction of the period.
    pub drift_at: f64,
    /// Fraction of users whose taste is redrawn at the drift.
    pub drift_fraction: f64,
    /// γ: weight of the taste term.
    pub taste_scale: f64,
    /// Strength of a session's intent.
    pub intent_scale: f64,
    /// Standard deviation of the context shifts.
    pub context_scale: f64,
    /// Base logit of a click.
    pub base_logit: f64,
    /// Standard deviation of item biases β_i.
    pub item_bias_sd: f64,
    /// Standard deviation of the noise on the observed item vector.
    pub vector_noise: f64,
    /// Planted taste groups (issue 14, item 4): 0 draws every taste on its own; `G > 0`
    /// puts user `u` in group `u mod G`, its taste the group's centre plus `group_spread`
    /// times its own draw, and the drift then moves whole groups (`drift_groups`).
    pub groups: usize,
    /// Spread of a user's taste around its group's centre (a multiple of its own draw).
    pub group_spread: f64,
    /// With groups: how many groups (the first ones) get a new centre at the drift, their
    /// users keeping their offsets from it; no user drifts on its own.
    pub drift_groups: usize,
}

impl SimConfig {
    /// The benchmark's world: 8,000 users, 400 items, about 384,000 decisions over two weeks.
    pub fn standard(seed: u64) -> Self {
        SimConfig {
            seed,
            users: 8_000,
            items: 400,
            categories: 12,
            latent_dim: 8,
            candidates: 20,
            sessions_per_user: 8,
            events_per_session: 6.0,
            days: 14.0,
            drift_at: 0.5,
            drift_fraction: 0.3,
            taste_scale: 1.5,
            intent_scale: 1.2,
            context_scale: 0.5,
            base_logit: -1.5,
            item_bias_sd: 0.5,
            vector_noise: 0.5,
            groups: 0,
            group_spread: 0.3,
            drift_groups: 0,
        }
    }

    /// `small`'s world with `groups` planted taste groups, the first of which gets a new
    /// centre at the drift.
    pub fn planted(seed: u64, groups: usize) -> Self {
        SimConfig {
            groups,
            drift_groups: 1,
            ..SimConfig::small(seed)
        }
    }

    /// A world small enough for a debug-mode test.
    pub fn small(seed: u64) -> Self {
        SimConfig {
            users: 300,
            items: 120,
            sessions_per_user: 6,
            ..SimConfig::standard(seed)
        }
    }
}

/// One decision of the stream.
#[derive(Clone, Debug)]
pub struct Step {
    /// Time (Unix ms).
    pub ts_ms: u64,
    /// The user's index.
    pub user: u32,
    /// Device index.
    pub device: u8,
    /// Hour-of-day bucket.
    pub hour: u8,
    /// The session's intent (a category).
    pub intent: u16,
    /// Candidate item indices.
    pub candidates: Vec<u32>,
    /// The uniform draw that decides the reward: a click iff `draw < p`.
    pub draw: f32,
}

/// The simulated world and its stream.
pub struct World {
    /// Parameters.
    pub cfg: SimConfig,
    centroids: Vec<Vec<f64>>,
    item_vectors: Vec<Vec<f64>>,
    item_bias: Vec<f64>,
    item_category: Vec<usize>,
    observed: Vec<Vec<f32>>,
    brand: Vec<usize>,
    device_shift: Vec<Vec<f64>>,
    hour_shift: Vec<Vec<f64>>,
    taste: Vec<Vec<f64>>,
    /// New taste after the drift, for drifted users.
    drifted: Vec<Option<Vec<f64>>>,
    /// Each user's planted group (empty without groups).
    group: Vec<usize>,
    /// The drift time (Unix ms).
    pub drift_ms: u64,
    /// The stream, in time order.
    pub steps: Vec<Step>,
    user_ids: Vec<String>,
    item_ids: Vec<String>,
    contexts: Vec<Vec<(String, String)>>,
}

fn gaussian(rng: &mut Rng, n: usize, sd: f64) -> Vec<f64> {
    (0..n).map(|_| rng.normal() * sd).collect()
}

fn unit(mut v: Vec<f64>) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// With `cfg.groups > 0`: replaces each user's taste by its group's centre plus
/// `group_spread` times its own draw, and the drift by new centres for the first
/// `drift_groups` groups. Returns each user's group (empty without groups).
fn plant_groups(
    cfg: &SimConfig,
    taste: &mut [Vec<f64>],
    drifted: &mut [Option<Vec<f64>>],
) -> Vec<usize> {
    if cfg.groups == 0 {
        return Vec::new();
    }
    let mut rng = Rng::new(cfg.seed ^ 0x6a09_e667_f3bc_c908);
    let l = cfg.latent_dim;
    let centres: Vec<Vec<f64>> = (0..cfg.groups)
        .map(|_| gaussian(&mut rng, l, 1.0))
        .collect();
    let moved: Vec<Vec<f64>> = (0..cfg.drift_groups.min(cfg.groups))
        .map(|_| gaussian(&mut rng, l, 1.0))
        .collect();
    let group: Vec<usize> = (0..taste.len()).map(|u| u % cfg.groups).collect();
    for (u, t) in taste.iter_mut().enumerate() {
        let g = group[u];
        let offset: Vec<f64> = t.iter().map(|x| x * cfg.group_spread).collect();
        let place = |c: &[f64]| c.iter().zip(&offset).map(|(c, o)| c + o).collect();
        drifted[u] = moved.get(g).map(|c| place(c));
        *t = place(&centres[g]);
    }
    group
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl World {
    /// Builds the world and its stream from `cfg` (everything from `cfg.seed`).
    pub fn new(cfg: SimConfig) -> World {
        let mut rng = Rng::new(cfg.seed);
        let l = cfg.latent_dim;
        let centroids: Vec<Vec<f64>> = (0..cfg.categories)
            .map(|_| unit(gaussian(&mut rng, l, 1.0)))
            .collect();
        let item_category: Vec<usize> = (0..cfg.items).map(|_| rng.below(cfg.categories)).collect();
        let item_vectors: Vec<Vec<f64>> = item_category
            .iter()
            .map(|&c| {
                let noise = gaussian(&mut rng, l, 0.6 / (l as f64).sqrt());
                unit(centroids[c].iter().zip(noise).map(|(a, b)| a + b).collect())
            })
            .collect();
        let observed = item_vectors
            .iter()
            .map(|v| {
                v.iter()
                    .map(|x| (x + rng.normal() * cfg.vector_noise / (l as f64).sqrt()) as f32)
                    .collect()
            })
            .collect();
        let item_bias = gaussian(&mut rng, cfg.items, cfg.item_bias_sd);
        let brand = (0..cfg.items).map(|_| rng.below(30)).collect();
        let device_shift = (0..DEVICES.len())
            .map(|_| gaussian(&mut rng, l, cfg.context_scale))
            .collect();
        let hour_shift = (0..HOURS.len())
            .map(|_| gaussian(&mut rng, l, cfg.context_scale))
            .collect();
        let mut taste: Vec<Vec<f64>> = (0..cfg.users).map(|_| gaussian(&mut rng, l, 1.0)).collect();
        let mut drifted: Vec<Option<Vec<f64>>> = (0..cfg.users)
            .map(|_| (rng.next_f64() < cfg.drift_fraction).then(|| gaussian(&mut rng, l, 1.0)))
            .collect();
        // Groups draw from their own stream, so a world without them is the one it always was.
        let group = plant_groups(&cfg, &mut taste, &mut drifted);
        let span_ms = (cfg.days * 86_400_000.0) as u64;
        let drift_ms = START_MS + (cfg.drift_at * span_ms as f64) as u64;
        let steps = Self::stream(&cfg, &mut rng, span_ms);
        let contexts = (0..DEVICES.len() * HOURS.len())
            .map(|i| {
                vec![
                    ("device".to_string(), DEVICES[i / HOURS.len()].to_string()),
                    ("hour".to_string(), HOURS[i % HOURS.len()].to_string()),
                ]
            })
            .collect();
        World {
            user_ids: (0..cfg.users).map(|u| format!("u{u}")).collect(),
            item_ids: (0..cfg.items).map(|i| format!("i{i}")).collect(),
            cfg,
            centroids,
            item_vectors,
            item_bias,
            item_category,
            observed,
            brand,
            device_shift,
            hour_shift,
            taste,
            drifted,
            group,
            drift_ms,
            steps,
            contexts,
        }
    }

    fn stream(cfg: &SimConfig, rng: &mut Rng, span_ms: u64) -> Vec<Step> {
        let mut steps = Vec::new();
        for user in 0..cfg.users {
            let home_device = rng.below(DEVICES.len());
            for _ in 0..cfg.sessions_per_user {
                let mut ts = START_MS + (rng.next_f64() * span_ms as f64) as u64;
                let device = if rng.next_f64() < 0.7 {
                    home_device
                } else {
                    rng.below(DEVICES.len())
                };
                let intent = rng.below(cfg.categories) as u16;
                // Geometric length with the configured mean (at least one decision).
                let p_stop = 1.0 / cfg.events_per_session;
                loop {
                    let hour = (((ts / 1000) % 86_400) / 3600 / 6) as u8;
                    let mut candidates = Vec::with_capacity(cfg.candidates);
                    while candidates.len() < cfg.candidates.min(cfg.items) {
                        let i = rng.below(cfg.items) as u32;
                        if !candidates.contains(&i) {
                            candidates.push(i);
                        }
                    }
                    let draw = rng.next_f64() as f32;
                    steps.push(Step {
                        ts_ms: ts,
                        user: user as u32,
                        device: device as u8,
                        hour,
                        intent,
                        candidates,
                        draw,
                    });
                    if rng.next_f64() < p_stop {
                        break;
                    }
                    ts += 20_000 + rng.below(100_000) as u64;
                }
            }
        }
        steps.sort_by_key(|s| (s.ts_ms, s.user));
        steps
    }

    /// The engine's view of the catalog: category, brand and the noisy observed vector.
    pub fn item_specs(&self) -> Vec<ItemSpec> {
        (0..self.cfg.items)
            .map(|i| {
                ItemSpec::new(self.item_ids[i].clone())
                    .attr("category", format!("c{}", self.item_category[i]))
                    .attr("brand", format!("b{}", self.brand[i]))
                    .vector(self.observed[i].clone())
            })
            .collect()
    }

    /// The click probability of `item` at `step`.
    pub fn probability(&self, step: &Step, item: u32) -> f64 {
        let u = step.user as usize;
        let taste = match &self.drifted[u] {
            Some(new) if step.ts_ms >= self.drift_ms => new,
            _ => &self.taste[u],
        };
        let v = &self.item_vectors[item as usize];
        let centroid = &self.centroids[step.intent as usize];
        let z = self.cfg.base_logit
            + self.item_bias[item as usize]
            + self.cfg.taste_scale
                * (dot(taste, v)
                    + dot(&self.device_shift[step.device as usize], v)
                    + dot(&self.hour_shift[step.hour as usize], v)
                    + self.cfg.intent_scale * dot(centroid, v));
        1.0 / (1.0 + (-z).exp())
    }

    /// User `user`'s planted group (`None` without groups).
    pub fn group(&self, user: usize) -> Option<usize> {
        self.group.get(user).copied()
    }

    /// The id the engine knows user `user` by.
    pub fn user_id(&self, user: usize) -> &str {
        &self.user_ids[user]
    }

    /// Whether the user of `step` is one whose taste drifts.
    pub fn drifts(&self, user: u32) -> bool {
        self.drifted[user as usize].is_some()
    }

    /// The context pairs of `step`.
    pub fn context(&self, step: &Step) -> &[(String, String)] {
        &self.contexts[step.device as usize * HOURS.len() + step.hour as usize]
    }

    /// Item `i`'s id.
    pub fn item_id(&self, i: u32) -> &str {
        &self.item_ids[i as usize]
    }

    /// Item `i`'s category (its `category` attribute is `c` followed by this number).
    pub fn category(&self, i: u32) -> usize {
        self.item_category[i as usize]
    }
}

/// What one policy did on the stream.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The policy's name.
    pub name: String,
    /// Click probability of the placed item, per step.
    pub expected: Vec<f32>,
    /// Whether it was clicked, per step.
    pub clicked: Vec<bool>,
}

/// Runs one policy over the whole stream (one placement per decision).
pub fn run(world: &World, policy: &mut dyn Policy) -> Trace {
    let n = world.steps.len();
    let mut trace = Trace {
        name: policy.name(),
        expected: Vec::with_capacity(n),
        clicked: Vec::with_capacity(n),
    };
    run_range(world, policy, 0..n, &mut trace);
    trace
}

/// Runs one policy over the steps `range` of the stream, appending to `trace` (a run in
/// pieces, looked at between them, is the same run).
pub fn run_range(
    world: &World,
    policy: &mut dyn Policy,
    range: std::ops::Range<usize>,
    trace: &mut Trace,
) {
    let (expected, clicked) = (&mut trace.expected, &mut trace.clicked);
    let mut candidates: Vec<String> = Vec::with_capacity(world.cfg.candidates);
    for step in &world.steps[range] {
        candidates.clear();
        candidates.extend(
            step.candidates
                .iter()
                .map(|&i| world.item_ids[i as usize].clone()),
        );
        let user = &world.user_ids[step.user as usize];
        let context = world.context(step);
        let req = Request {
            user,
            context,
            candidates: &candidates,
            n: 1,
            ts_ms: step.ts_ms,
        };
        let chosen = policy.place(&req).first().copied().unwrap_or(0);
        let item = step.candidates[chosen];
        let p = world.probability(step, item);
        let click = (step.draw as f64) < p;
        let outcome = if click {
            Outcome::Click
        } else {
            Outcome::Ignored
        };
        let obs = Observation {
            user,
            context,
            item: &candidates[chosen],
            outcome,
            ts_ms: step.ts_ms + 5_000,
            shown: true,
        };
        policy.observe(&obs);
        expected.push(p as f32);
        clicked.push(click);
    }
}

/// The oracle: places the candidate with the highest true click probability.
pub fn run_oracle(world: &World) -> Trace {
    let (mut expected, mut clicked) = (Vec::new(), Vec::new());
    for step in &world.steps {
        let p = step
            .candidates
            .iter()
            .map(|&i| world.probability(step, i))
            .fold(0.0, f64::max);
        expected.push(p as f32);
        clicked.push((step.draw as f64) < p);
    }
    Trace {
        name: "oracle".into(),
        expected,
        clicked,
    }
}

/// The baselines and nudge's three variants of `engine` fed as `feedback` says, in table order.
pub fn policies(world: &World, engine: &Config, feedback: Feedback) -> Vec<Box<dyn Policy>> {
    let seed = world.cfg.seed;
    let mut out: Vec<Box<dyn Policy>> = vec![
        Box::new(RandomPolicy::new(seed ^ 0x5eed)),
        Box::new(Popularity::global(PopularityScore::ClickRate)),
        Box::new(Popularity::decayed(PopularityScore::ClickRate, 86_400.0)),
        Box::new(ItemKnn::new(Some(KNN_NEIGHBOURS), KNN_REBUILD_EVERY)),
    ];
    for v in Variant::ALL {
        let mut cfg = v.apply(engine);
        cfg.seed = seed;
        // The world's config is valid by construction; a refusal here is a bug in this file.
        let p = EnginePolicy::new(v.name(), cfg, world.item_specs(), START_MS)
            .expect("the simulation's engine configuration is valid")
            .feedback(feedback);
        out.push(Box::new(p));
    }
    out
}

/// One row of the results table.
#[derive(Clone, Debug)]
pub struct Row {
    /// The policy.
    pub name: String,
    /// Mean realized reward (clicks per decision), 95% user-bootstrap interval.
    pub reward: Interval,
    /// Mean regret against the oracle, in expected clicks per decision.
    pub regret: Interval,
    /// Decisions per drifted user until reward recovered half of its drop (`None`: no drop
    /// worth measuring; `Some(f64::INFINITY)`: not within the horizon).
    pub adaptation: Option<f64>,
}

/// Per-user clusters of `value(step index)`.
fn by_user(world: &World, value: impl Fn(usize) -> f64) -> Vec<Cluster> {
    let mut clusters = vec![Cluster::default(); world.cfg.users];
    for (t, step) in world.steps.iter().enumerate() {
        let c = &mut clusters[step.user as usize];
        c.sum += value(t);
        c.count += 1.0;
    }
    clusters
}

/// The table: every trace against the oracle's.
pub fn table(world: &World, traces: &[Trace], oracle: &Trace) -> Vec<Row> {
    let seed = world.cfg.seed;
    traces
        .iter()
        .chain(std::iter::once(oracle))
        .map(|tr| Row {
            name: tr.name.clone(),
            reward: cluster_bootstrap(&by_user(world, |t| tr.clicked[t] as u8 as f64), 1000, seed),
            regret: cluster_bootstrap(
                &by_user(world, |t| (oracle.expected[t] - tr.expected[t]) as f64),
                1000,
                seed,
            ),
            adaptation: adaptation(world, tr),
        })
        .collect()
}

/// Paired difference of mean realized reward, `a − b`, with a user-bootstrap interval.
pub fn paired(world: &World, a: &Trace, b: &Trace) -> Interval {
    let clusters = by_user(world, |t| {
        a.clicked[t] as u8 as f64 - b.clicked[t] as u8 as f64
    });
    cluster_bootstrap(&clusters, 1000, world.cfg.seed)
}

/// How many decisions after the drift the drifted users need until the policy's expected
/// reward recovers half of the drop the drift caused.
pub fn adaptation(world: &World, tr: &Trace) -> Option<f64> {
    const HORIZON: usize = 40;
    const BEFORE: usize = 10;
    let mut history: Vec<Vec<f32>> = vec![Vec::new(); world.cfg.users];
    let mut after: Vec<Vec<f32>> = vec![Vec::new(); world.cfg.users];
    for (t, step) in world.steps.iter().enumerate() {
        if !world.drifts(step.user) {
            continue;
        }
        let u = step.user as usize;
        if step.ts_ms < world.drift_ms {
            history[u].push(tr.expected[t]);
        } else {
            after[u].push(tr.expected[t]);
        }
    }
    let mean = |xs: &mut dyn Iterator<Item = f32>| {
        let (s, n) = xs.fold((0.0f64, 0usize), |(s, n), x| (s + x as f64, n + 1));
        if n == 0 {
            f64::NAN
        } else {
            s / n as f64
        }
    };
    let level = mean(
        &mut history
            .iter()
            .flat_map(|h| h.iter().rev().take(BEFORE).copied()),
    );
    let curve: Vec<f64> = (0..HORIZON + 5)
        .map(|k| mean(&mut after.iter().filter_map(|a| a.get(k).copied())))
        .collect();
    let dropped = (curve[0] + curve[1] + curve[2]) / 3.0;
    let drop = level - dropped;
    if drop.is_nan() || drop <= 0.02 {
        return None;
    }
    let target = dropped + drop / 2.0;
    (0..HORIZON)
        .find(|&k| curve[k..k + 5].iter().sum::<f64>() / 5.0 >= target)
        .map(|k| k as f64)
        .or(Some(f64::INFINITY))
}

/// Mean expected reward per bin of the stream (for the plot), `bins` bins.
pub fn curve(tr: &Trace, bins: usize) -> Vec<f64> {
    let n = tr.expected.len();
    (0..bins)
        .map(|b| {
            let (lo, hi) = (
                b * n / bins,
                ((b + 1) * n / bins).max(b * n / bins + 1).min(n),
            );
            tr.expected[lo..hi].iter().map(|&x| x as f64).sum::<f64>() / (hi - lo).max(1) as f64
        })
        .collect()
}

/// Builds the world for `sim`, runs every policy for `engine` and the oracle, and returns the
/// traces (policies in table order) and the oracle's.
pub fn evaluate(world: &World, engine: &Config, feedback: Feedback) -> (Vec<Trace>, Trace) {
    let traces = run_each(&mut policies(world, engine, feedback), |p| run(world, p));
    (traces, run_oracle(world))
}
