//! Issue 13's check on the simulator: one engine runs an A/B/n experiment of `control`,
//! `popularity` and `nudge` over the simulated users, every user assigned by the engine's own
//! hash, and its verdict and measured lift are set beside the offline estimate: each policy
//! served alone to every user of the same world and stream (common random numbers), as the
//! quality bench's `sim` workload runs them.
//!
//! - **The metric is click-through.** The simulator places one item per decision and its
//!   reward is a Bernoulli click, so a decision's click-through (1 if its placement was
//!   clicked) is the simulator's reward itself, and the offline mean reward is the same
//!   quantity. (`mean_reward` would go through the engine's composite reward weights.)
//! - **`control` is random.** The caller's order is the order in which the simulator drew the
//!   candidates, uniformly from the catalog, so the first candidate is a random item that
//!   knows nothing of the user or of the item's quality.
//! - **Driving** is [`EnginePolicy`]'s: one shard, a `ManualClock` following the stream,
//!   tracked decisions with their outcomes attributed (`Feedback::Decisions`), the engine's
//!   defaults otherwise. The results are read at the end of every simulated day (the
//!   always-valid test is made for such peeking) and once more when every decision closed.
//!
//! This module only calls the engine's public API and prints nothing: the quality bench's
//! `experiment` workload formats what it returns.

use crate::config::Config;
use crate::eval::baselines::CallerOrder;
use crate::eval::sim::{self, Trace, World, START_MS};
use crate::eval::stats::{cluster_bootstrap, ratio_bootstrap, Cluster, Interval};
use crate::eval::{run_each, EnginePolicy, Feedback, Policy, Variant};
use crate::experiment::{
    ArmPolicy, ArmSpec, Effect, Estimate, ExperimentResults, ExperimentSpec, Mixture, Status,
};

/// The experiment's name in the engine.
pub const NAME: &str = "simulated";

const NUDGE: ArmPolicy = ArmPolicy::Nudge { epsilon: None };

/// The experiment, baseline first: `control`, then `popularity` and `nudge`.
pub const CONTROL_FIRST: [ArmPolicy; 3] = [ArmPolicy::Control, ArmPolicy::Popularity, NUDGE];

/// The same three arms with `popularity` the baseline: the engine compares every arm with the
/// first only, so nudge against popularity takes a second experiment (in its own engine).
/// The salt and the weights are the same, so the users of each position are the same: the
/// `nudge` arm has the same users in both, `control` and `popularity` swap theirs.
pub const POPULARITY_FIRST: [ArmPolicy; 3] = [ArmPolicy::Popularity, ArmPolicy::Control, NUDGE];

/// The three policies in the order the offline estimates are given.
pub const POLICIES: [ArmPolicy; 3] = CONTROL_FIRST;

const DAY_MS: u64 = 86_400_000;

/// The experiment's definition: one arm per policy, named after it, equal weights, and the
/// defaults otherwise (click-through, τ = 0.2, α = 0.05, no holdout, the name as the salt).
pub fn spec(arms: &[ArmPolicy]) -> ExperimentSpec {
    let arms = arms
        .iter()
        .map(|&policy| ArmSpec {
            name: policy.name().into(),
            weight: 1.0,
            policy,
        })
        .collect();
    ExperimentSpec::new(NAME, arms)
}

/// One reading of the results during the run.
#[derive(Clone, Debug)]
pub struct Look {
    /// Simulated days elapsed (the last look, after every decision closed, repeats the last day).
    pub day: u64,
    /// The experiment's status.
    pub status: Status,
    /// Per arm: the lift over the baseline (`None` for the baseline and before the first
    /// look of the test), its always-valid interval, and whether it is significant.
    pub arms: Vec<(Option<f64>, (f64, f64), bool)>,
}

/// What one engine running the experiment produced.
#[derive(Clone, Debug)]
pub struct Online {
    /// The experiment's definition.
    pub spec: ExperimentSpec,
    /// The results read at the end, once every decision closed.
    pub results: ExperimentResults,
    /// Every reading, in time order; the last is `results`.
    pub looks: Vec<Look>,
    /// Each user's arm (an index into `results.arms`), as the engine assigns it.
    pub arm_of: Vec<Option<usize>>,
    /// What the harness saw of every decision (the click probability and the click).
    pub trace: Trace,
    /// Calls the engine refused (a harness bug when not 0).
    pub errors: u64,
}

/// An engine over the simulator's catalog, fed tracked decisions, running the experiment
/// `arms` when given.
fn engine(world: &World, config: &Config, name: &str, arms: Option<&[ArmPolicy]>) -> EnginePolicy {
    let mut cfg = config.clone();
    cfg.seed = world.cfg.seed;
    // The world's catalog and a checked configuration: a refusal here is a bug in this file.
    let policy = EnginePolicy::new(name, cfg, world.item_specs(), START_MS)
        .expect("the simulation's engine configuration is valid")
        .feedback(Feedback::Decisions);
    if let Some(arms) = arms {
        // Three distinct, valid arms on an empty registry: nothing to refuse.
        policy
            .engine()
            .create_experiment(spec(arms), "issue 13 on the simulator")
            .expect("a valid experiment on an engine that runs none");
    }
    policy
}

fn look(results: &ExperimentResults, day: u64) -> Look {
    let arms = results
        .arms
        .iter()
        .map(|a| (a.primary.lift, a.primary.interval, a.primary.significant))
        .collect();
    Look {
        day,
        status: results.status,
        arms,
    }
}

/// Runs the whole stream through one engine running the experiment `arms` (baseline first),
/// reading the results at the end of every simulated day, then closing every decision.
pub fn run_online(world: &World, config: &Config, arms: &[ArmPolicy]) -> Online {
    let mut policy = engine(world, config, "experiment", Some(arms));
    let n = world.steps.len();
    let mut trace = Trace {
        name: policy.name(),
        expected: Vec::with_capacity(n),
        clicked: Vec::with_capacity(n),
    };
    let read = |p: &EnginePolicy| {
        // The experiment was created above and is never stopped.
        (p.engine().experiment_results(NAME)).expect("the experiment exists")
    };
    let (mut looks, mut from, mut day) = (Vec::new(), 0, 1);
    while from < n {
        let to = world
            .steps
            .partition_point(|s| s.ts_ms < START_MS + day * DAY_MS);
        sim::run_range(world, &mut policy, from..to, &mut trace);
        looks.push(look(&read(&policy), day));
        (from, day) = (to, day + 1);
    }
    let last_ms = world.steps.last().map_or(START_MS, |s| s.ts_ms);
    let window_ms = config.attribution.window_s * 1000;
    policy.advance(last_ms + window_ms + 60_000);
    let results = read(&policy);
    looks.push(look(&results, day - 1));
    let engine = policy.engine();
    let arm_of = (0..world.cfg.users)
        .map(|u| {
            let arm = engine
                .experiment_arm(NAME, world.user_id(u))
                .ok()
                .flatten()?;
            results.arms.iter().position(|a| a.name == arm)
        })
        .collect();
    Online {
        spec: spec(arms),
        results,
        looks,
        arm_of,
        trace,
        errors: policy.errors(),
    }
}

/// The offline counterpart of an arm: its policy served to every user. `nudge` is the quality
/// bench's `nudge (full)` (the engine with no experiment), `control` the caller's order (no
/// engine needed), any other policy an engine whose one-arm experiment gives it to everyone.
pub fn offline_policy(world: &World, config: &Config, arm: ArmPolicy) -> Box<dyn Policy> {
    match arm {
        ArmPolicy::Control => Box::new(CallerOrder),
        ArmPolicy::Nudge { epsilon: None } => {
            Box::new(engine(world, config, Variant::Full.name(), None))
        }
        other => Box::new(engine(world, config, other.name(), Some(&[other]))),
    }
}

/// Everything the check needs, run in parallel: one engine per arm order in `orders`, and
/// every policy of [`POLICIES`] alone (in that order).
pub fn evaluate(
    world: &World,
    config: &Config,
    orders: &[&[ArmPolicy]],
) -> (Vec<Online>, Vec<Trace>) {
    std::thread::scope(|s| {
        let online: Vec<_> = orders
            .iter()
            .map(|arms| s.spawn(move || run_online(world, config, arms)))
            .collect();
        let mut alone: Vec<Box<dyn Policy>> = POLICIES
            .iter()
            .map(|&p| offline_policy(world, config, p))
            .collect();
        let offline = run_each(&mut alone, |p| sim::run(world, p));
        let online = online
            .into_iter()
            .map(|h| h.join().expect("an experiment's run panicked"))
            .collect();
        (online, offline)
    })
}

/// Per user, the clicks of `trace` on that user's decisions.
fn clicks_by_user(world: &World, trace: &Trace) -> Vec<f64> {
    let mut clicks = vec![0.0; world.cfg.users];
    for (t, step) in world.steps.iter().enumerate() {
        clicks[step.user as usize] += f64::from(u8::from(trace.clicked[t]));
    }
    clicks
}

/// The offline relative lift of `treatment` over `baseline`, every user served each in turn:
/// `(mean of treatment / mean of baseline) − 1`, with a 95% paired user-bootstrap interval
/// (1,000 draws; both policies saw the same decisions, so a user's two sums are resampled
/// together).
pub fn offline_lift(world: &World, treatment: &Trace, baseline: &Trace) -> Interval {
    let (a, b) = (
        clicks_by_user(world, treatment),
        clicks_by_user(world, baseline),
    );
    let pairs: Vec<(f64, f64)> = a.into_iter().zip(b).collect();
    ratio_bootstrap(&pairs, 1000, world.cfg.seed)
}

/// One arm of an experiment against the same policy served to everyone.
#[derive(Clone, Debug)]
pub struct ArmCheck {
    /// The arm.
    pub arm: String,
    /// Its users, as the engine assigns them.
    pub users: usize,
    /// Their decisions, counted by the harness.
    pub decisions: usize,
    /// Their clicks, counted by the harness.
    pub clicks: usize,
    /// The same decisions' click-through with the arm's policy served to everyone.
    pub alone: f64,
    /// `clicks / (clicks alone) − 1` on those decisions, with a 95% paired user-bootstrap
    /// interval: what sharing the engine with the other arms did to this arm (the shared
    /// global model, popularity and co-occurrence learn from every arm's users), plus the
    /// different path that exploration took.
    pub shared: Interval,
}

/// Each arm of `online` against `alone[i]`, its policy served to everyone (same order).
pub fn arm_checks(world: &World, online: &Online, alone: &[&Trace]) -> Vec<ArmCheck> {
    let here = clicks_by_user(world, &online.trace);
    let mut decisions = vec![0usize; world.cfg.users];
    world
        .steps
        .iter()
        .for_each(|s| decisions[s.user as usize] += 1);
    (online.results.arms.iter().zip(alone).enumerate())
        .map(|(i, (arm, alone))| {
            let there = clicks_by_user(world, alone);
            let users: Vec<usize> = (0..world.cfg.users)
                .filter(|&u| online.arm_of[u] == Some(i))
                .collect();
            let pairs: Vec<(f64, f64)> = users.iter().map(|&u| (here[u], there[u])).collect();
            let n: usize = users.iter().map(|&u| decisions[u]).sum();
            let alone_clicks: f64 = pairs.iter().map(|p| p.1).sum();
            ArmCheck {
                arm: arm.name.clone(),
                users: users.len(),
                decisions: n,
                clicks: pairs.iter().map(|p| p.0).sum::<f64>() as usize,
                alone: alone_clicks / n.max(1) as f64,
                shared: ratio_bootstrap(&pairs, 1000, world.cfg.seed),
            }
        })
        .collect()
}

/// Whether the experiment's always-valid interval and the offline estimate's interval share a
/// point (the "agrees within the intervals").
pub fn agrees(online: (f64, f64), offline: &Interval) -> bool {
    online.0 <= offline.hi && offline.lo <= online.1
}

/// A policy's offline click-through over every user's decisions, with a 95% user-bootstrap
/// interval (the quality bench's `mean reward`).
pub fn offline_mean(world: &World, trace: &Trace) -> Interval {
    let clicks = clicks_by_user(world, trace);
    let mut clusters = vec![Cluster::default(); world.cfg.users];
    for step in &world.steps {
        clusters[step.user as usize].count += 1.0;
    }
    for (c, k) in clusters.iter_mut().zip(clicks) {
        c.sum = k;
    }
    cluster_bootstrap(&clusters, 1000, world.cfg.seed)
}

/// Arm `i`'s lift over the baseline and the interval of the last look alone (the engine's
/// mixture, τ and α, on the final tallies), as against the engine's reported interval, the
/// intersection of every look's: the two differ when the effect changed along the run.
pub fn last_look(online: &Online, i: usize) -> Option<(f64, (f64, f64))> {
    let metric = online.spec.metric;
    let arms = &online.results.arms;
    let (base, arm) = (
        arms[0].tally.metric(metric),
        arms.get(i)?.tally.metric(metric),
    );
    let estimate = Estimate::new(Effect::Relative, base, arm)?;
    let mixture = Mixture {
        tau: online.spec.tau,
    };
    Some((
        estimate.value,
        mixture.interval(estimate, online.spec.alpha),
    ))
}
