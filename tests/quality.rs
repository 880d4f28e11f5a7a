//! Decision quality (issue 5): on a short seeded simulation, full nudge earns more reward than
//! nudge with the global model only, which earns more than random. Behaviour, not time: the
//! claims are paired differences on the same stream (common random numbers) whose whole 95%
//! user-bootstrap interval must clear a margin.

use nudge::eval::baselines::{Popularity, PopularityScore, RandomPolicy};
use nudge::eval::sim::{self, SimConfig, World};
use nudge::eval::{EnginePolicy, Feedback, Variant};
use nudge::Config;

fn engine(world: &World, v: Variant) -> EnginePolicy {
    let mut cfg = v.apply(&Config::default());
    cfg.seed = world.cfg.seed;
    EnginePolicy::new(v.name(), cfg, world.item_specs(), sim::START_MS).unwrap()
}

/// Few users with many sessions each: enough events per user for personal weights to matter,
/// and a stream short enough for a debug build.
fn small_world(seed: u64) -> World {
    World::new(SimConfig {
        users: 120,
        items: 100,
        sessions_per_user: 10,
        ..SimConfig::small(seed)
    })
}

#[test]
fn issue5_full_beats_global_only_beats_random() {
    let seed = 11;
    let world = small_world(seed);
    let mut random = RandomPolicy::new(seed);
    let (mut global, mut full) = (
        engine(&world, Variant::GlobalOnly),
        engine(&world, Variant::Full),
    );
    let random = sim::run(&world, &mut random);
    let global_trace = sim::run(&world, &mut global);
    let full_trace = sim::run(&world, &mut full);
    assert_eq!((global.errors(), full.errors()), (0, 0));
    let full_vs_global = sim::paired(&world, &full_trace, &global_trace);
    let global_vs_random = sim::paired(&world, &global_trace, &random);
    let context = format!(
        "seed {seed}, {} decisions: full − global {full_vs_global}, global − random {global_vs_random}",
        world.steps.len()
    );
    eprintln!("{context}");
    assert!(
        full_vs_global.lo > 0.01,
        "full nudge does not clearly beat global-only: {context}"
    );
    assert!(
        global_vs_random.lo > 0.05,
        "global-only does not clearly beat random: {context}"
    );
}

#[test]
fn issue10_fed_only_events_full_nudge_beats_popularity() {
    let seed = 11;
    let world = small_world(seed);
    // A tracker's stream: an impression per placement and a click when clicked, no decisions.
    let mut full = engine(&world, Variant::Full).feedback(Feedback::EventsOnly);
    let mut popularity = Popularity::global(PopularityScore::ClickRate);
    let full_trace = sim::run(&world, &mut full);
    let popularity_trace = sim::run(&world, &mut popularity);
    assert_eq!(full.errors(), 0);
    let gain = sim::paired(&world, &full_trace, &popularity_trace);
    let context = format!(
        "seed {seed}, {} steps: full − popularity {gain}",
        world.steps.len()
    );
    eprintln!("{context}");
    assert!(
        gain.lo > 0.0,
        "events-only nudge does not beat popularity: {context}"
    );
}

/// Issue 10's contextual-bandit workload on a small world (400 users, about 4,000 steps):
/// the informed baseline and full nudge (fed tracked decisions) both clearly beat random.
#[test]
fn issue10_contextual_bandit_informed_and_nudge_beat_random() {
    use nudge::eval::cb::{self, CbConfig};
    use nudge::eval::informed::Choice;
    let seed = 11;
    let world = cb::World::new(CbConfig::small(seed));
    let mut random = RandomPolicy::new(seed);
    let mut informed = world.informed(Choice::Greedy);
    let mut full = cb::nudge(
        &world,
        &Config::default(),
        Variant::Full,
        Feedback::Decisions,
    );
    let random = cb::run(&world, &mut random);
    let informed = cb::run(&world, &mut informed);
    let full_trace = cb::run(&world, &mut full);
    assert_eq!(full.errors(), 0);
    let informed_gain = cb::paired(&world, &informed, &random);
    let nudge_gain = cb::paired(&world, &full_trace, &random);
    let context = format!(
        "seed {seed}, {} steps: informed − random {informed_gain}, full − random {nudge_gain}",
        world.steps.len()
    );
    eprintln!("{context}");
    assert!(
        informed_gain.lo > 0.05,
        "informed does not clearly beat random: {context}"
    );
    assert!(
        nudge_gain.lo > 0.03,
        "full nudge does not clearly beat random: {context}"
    );
}

/// Issue 13 on the simulator: an experiment of `control` (the caller's order, random here),
/// `popularity` and `nudge` inside one engine, users assigned by the engine's hash, declares
/// nudge the significant winner over control; the engine counted every decision and click
/// the harness saw; and the lift it measures agrees with the offline estimate (each policy
/// served alone to every user, paired user-bootstrap interval) within the intervals.
#[test]
fn issue13_an_experiment_on_the_simulator_declares_nudge_the_winner() {
    use nudge::eval::baselines::CallerOrder;
    use nudge::eval::experiment::{self, CONTROL_FIRST};
    let seed = 11;
    let world = small_world(seed);
    let run = experiment::run_online(&world, &Config::default(), &CONTROL_FIRST);
    let mut control = CallerOrder;
    let mut full = engine(&world, Variant::Full);
    let (control, full) = (sim::run(&world, &mut control), sim::run(&world, &mut full));
    let offline = experiment::offline_lift(&world, &full, &control);
    let r = &run.results;
    let nudge = &r.arms[2];
    let last = experiment::last_look(&run, 2);
    let context = format!(
        "seed {seed}, {} decisions: status {}, SRM p {:?}, nudge {} users, lift {:?} {:?} \
         (last look alone {last:?}), p {:.2e}; offline lift {offline}",
        world.steps.len(),
        r.status.name(),
        r.srm_p_value,
        nudge.tally.users,
        nudge.primary.lift,
        nudge.primary.interval,
        nudge.primary.p_value,
    );
    eprintln!("{context}");
    assert_eq!(run.errors, 0, "{context}");
    assert_eq!(nudge.name, "nudge");
    assert_eq!(r.status, nudge::Status::Significant, "{context}");
    assert!(
        nudge.primary.significant && !nudge.primary.worse,
        "nudge is not the winner: {context}"
    );
    let counted: u64 = r.arms.iter().map(|a| a.tally.decisions).sum();
    let clicks: u64 = r.arms.iter().map(|a| a.tally.clicks).sum();
    let seen = run.trace.clicked.iter().filter(|&&c| c).count() as u64;
    assert_eq!(
        (counted, clicks),
        (world.steps.len() as u64, seen),
        "{context}"
    );
    let (_, interval) = last.expect("both arms have decisions");
    let (reported, close) = (nudge.primary.interval, |a: f64, b: f64| {
        (a - b).abs() < 1e-9
    });
    assert!(
        close(reported.0, interval.0) && close(reported.1, interval.1),
        "the engine reports its latest look's interval: {context}"
    );
    assert!(
        experiment::agrees(interval, &offline),
        "the experiment's lift does not agree with the offline estimate: {context}"
    );
}
