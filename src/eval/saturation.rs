//! What saturation control (issue 15) changes on the simulator, and what it costs: nudge
//! places `n` of each step's candidates under a set of controls, the simulated user clicks
//! each placed item with its true probability, and the run counts how often the same item
//! reached a user more often than a cap allows, how often one category filled more of a
//! decision than a diversity limit allows, and the expected clicks per decision.
//!
//! Every configuration sees the same stream and the same draws (common random numbers).

use std::collections::HashMap;

use crate::config::Config;
use crate::eval::sim::World;
use crate::eval::{EnginePolicy, Observation, Outcome, Policy, Request};
use crate::rng::Rng;
use crate::saturation::SaturationConfig;

/// The yardsticks a run is measured against, whatever its own controls: at most `cap`
/// impressions of an item per user per `window_s`, at most `per_category` placements of one
/// category per decision.
#[derive(Clone, Copy, Debug)]
pub struct Yardstick {
    /// Impressions of one item allowed per user per window.
    pub cap: u32,
    /// The window, seconds.
    pub window_s: u64,
    /// Placements of one category allowed per decision.
    pub per_category: usize,
}

/// One configuration's run.
#[derive(Clone, Debug)]
pub struct Row {
    /// The configuration's name.
    pub name: String,
    /// Decisions made.
    pub decisions: u64,
    /// Items placed.
    pub impressions: u64,
    /// Impressions of an item the user had already seen `cap` times inside the window.
    pub over_cap: u64,
    /// Decisions with more than `per_category` placements of one category.
    pub over_diversity: u64,
    /// Mean over decisions of the placed items' true click probabilities, summed.
    pub expected_clicks: f64,
    /// Clicks drawn.
    pub clicks: u64,
    /// Mean distinct items a user was shown.
    pub distinct_per_user: f64,
}

/// Runs nudge under `controls` on `world`'s stream, `n` placements per decision.
pub fn run(
    world: &World,
    base: &Config,
    name: &str,
    controls: SaturationConfig,
    n: usize,
    yard: Yardstick,
) -> Row {
    let mut cfg = base.clone();
    cfg.saturation = controls;
    let start = world.steps.first().map_or(0, |s| s.ts_ms);
    let mut policy =
        EnginePolicy::new(name, cfg, world.item_specs(), start).expect("a valid configuration");
    let mut rng = Rng::new(world.cfg.seed ^ 0x5a7);
    let mut shown: HashMap<(u32, u32), Vec<u64>> = HashMap::new();
    let window_ms = yard.window_s * 1000;
    let mut row = Row {
        name: name.to_string(),
        decisions: 0,
        impressions: 0,
        over_cap: 0,
        over_diversity: 0,
        expected_clicks: 0.0,
        clicks: 0,
        distinct_per_user: 0.0,
    };
    let mut candidates: Vec<String> = Vec::new();
    for step in &world.steps {
        candidates.clear();
        candidates.extend(
            step.candidates
                .iter()
                .map(|&i| world.item_id(i).to_string()),
        );
        let (user, context) = (world.user_id(step.user as usize), world.context(step));
        let req = Request {
            user,
            context,
            candidates: &candidates,
            n,
            ts_ms: step.ts_ms,
        };
        let placed = policy.place(&req);
        row.decisions += 1;
        let mut per_category: HashMap<usize, usize> = HashMap::new();
        // One draw per slot, whatever was placed there: common random numbers.
        let draws: Vec<f64> = (0..n).map(|_| rng.next_f64()).collect();
        for (slot, &c) in placed.iter().enumerate() {
            let item = step.candidates[c];
            row.impressions += 1;
            *per_category.entry(world.category(item)).or_default() += 1;
            let times = shown.entry((step.user, item)).or_default();
            let recent = times
                .iter()
                .filter(|&&t| t + window_ms > step.ts_ms)
                .count();
            row.over_cap += (recent >= yard.cap as usize) as u64;
            times.push(step.ts_ms);
            let p = world.probability(step, item);
            row.expected_clicks += p;
            let click = draws[slot] < p;
            row.clicks += click as u64;
            let obs = Observation {
                user,
                context,
                item: &candidates[c],
                outcome: if click {
                    Outcome::Click
                } else {
                    Outcome::Ignored
                },
                ts_ms: step.ts_ms + 5_000,
                shown: true,
            };
            policy.observe(&obs);
        }
        row.over_diversity += per_category.values().any(|&k| k > yard.per_category) as u64;
    }
    row.expected_clicks /= row.decisions.max(1) as f64;
    let mut users: HashMap<u32, u32> = HashMap::new();
    for (u, _) in shown.keys() {
        *users.entry(*u).or_default() += 1;
    }
    row.distinct_per_user =
        users.values().map(|&k| f64::from(k)).sum::<f64>() / users.len().max(1) as f64;
    row
}
