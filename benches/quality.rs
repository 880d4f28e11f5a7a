//! `cargo bench --bench quality [-- sim|movielens|obd|saturation|segments|cb|experiment ...] [--seed N]`: does nudge decide
//! better than the baselines, and do its per-user parts help? Three workloads, each comparing
//! every policy on the same stream with common random numbers (see `docs/quality.md`).
//!
//! The engine configuration is the default, overridden by `NUDGE_*` environment variables
//! exactly as the server reads them (e.g. `NUDGE_MODEL__KAPPA=0.5`), which is how the defaults
//! were tuned. Tables go to stdout; the simulation's plot to `docs/quality-sim.png`.

#[path = "quality/plot.rs"]
mod plot;

use std::time::Instant;

use nudge::eval::baselines::{Popularity, PopularityScore, RandomPolicy};
use nudge::eval::knn::ItemKnn;
use nudge::eval::movielens::{self, MovieLens};
use nudge::eval::obd::Campaign;
use nudge::eval::replay::{self, LearnFrom, ReplayArgs};
use nudge::eval::sim::{self, SimConfig, World};
use nudge::eval::{fetch, run_each, EnginePolicy, Feedback, Policy, Variant};
use nudge::{Config, PolicyKind};

struct Args {
    workloads: Vec<String>,
    seed: u64,
    plot: Option<String>,
    /// `--only TEXT`: on MovieLens and cb, run only the policies whose name contains one of these
    /// (for tuning one variant quickly); empty runs every policy.
    only: Vec<String>,
    /// `--feedback events|decisions`: how nudge is fed (both when not given).
    feedback: Vec<Feedback>,
}

fn args() -> Args {
    let mut a = Args {
        workloads: Vec::new(),
        seed: 7,
        plot: Some("docs/quality-sim.png".into()),
        only: Vec::new(),
        feedback: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--seed" => a.seed = it.next().and_then(|s| s.parse().ok()).unwrap_or(a.seed),
            "--no-plot" => a.plot = None,
            "--only" => a.only.extend(it.next()),
            "--feedback" => {
                let name = it.next().unwrap_or_default();
                match Feedback::ALL.into_iter().find(|f| f.name() == name) {
                    Some(f) => a.feedback.push(f),
                    None => {
                        eprintln!("--feedback takes `events` or `decisions`, not `{name}`");
                        std::process::exit(2);
                    }
                }
            }
            "--bench" => {}
            w if !w.starts_with('-') => a.workloads.push(w.to_string()),
            _ => {}
        }
    }
    if a.feedback.is_empty() {
        a.feedback = Feedback::ALL.to_vec();
    }
    if a.workloads.is_empty() {
        a.workloads = vec!["sim".into(), "movielens".into(), "obd".into()];
    }
    a
}

fn engine_config() -> Config {
    match Config::from_toml_with_env("", std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bad NUDGE_* override: {e}");
            std::process::exit(2);
        }
    }
}

fn fmt_adaptation(a: Option<f64>) -> String {
    match a {
        None => "n/a (no drop)".into(),
        Some(x) if x.is_infinite() => "> 40".into(),
        Some(x) => format!("{x:.0}"),
    }
}

fn simulation(a: &Args, cfg: &Config, feedback: Feedback) {
    let started = Instant::now();
    let world = World::new(SimConfig::standard(a.seed));
    let (traces, oracle) = sim::evaluate(&world, cfg, feedback);
    let rows = sim::table(&world, &traces, &oracle);
    println!(
        "\n## Simulated users, {} (seed {}, {} users, {} items, {} decisions, drift of {:.0}% of users at {:.0}% of the period)\n",
        feedback_title(feedback),
        a.seed,
        world.cfg.users,
        world.cfg.items,
        world.steps.len(),
        world.cfg.drift_fraction * 100.0,
        world.cfg.drift_at * 100.0
    );
    println!(
        "| policy | mean reward [95% CI] | regret vs oracle [95% CI] | adaptation (decisions) |"
    );
    println!("|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} |",
            r.name,
            r.reward,
            r.regret,
            fmt_adaptation(r.adaptation)
        );
    }
    let full = traces
        .iter()
        .find(|t| t.name == Variant::Full.name())
        .expect("full nudge ran");
    println!("\nPaired difference, full nudge minus each (mean reward, 95% user-bootstrap CI):\n");
    for t in traces.iter().filter(|t| t.name != full.name) {
        println!("- vs {}: {}", t.name, sim::paired(&world, full, t));
    }
    if let (Some(path), Feedback::Decisions) = (&a.plot, feedback) {
        let mut series: Vec<(String, Vec<f64>)> = traces
            .iter()
            .map(|t| (t.name.clone(), sim::curve(t, 56)))
            .collect();
        series.push((oracle.name.clone(), sim::curve(&oracle, 56)));
        let drift_bin = world
            .steps
            .iter()
            .position(|s| s.ts_ms >= world.drift_ms)
            .unwrap_or(0) as f64
            / world.steps.len() as f64;
        match plot::reward_curves(path, &series, drift_bin) {
            Ok(()) => println!("\nplot: {path}"),
            Err(e) => eprintln!("plot failed: {e}"),
        }
    }
    println!("\nsimulation took {:.1} s", started.elapsed().as_secs_f64());
}

/// How a table's heading names the feedback mode.
fn feedback_title(feedback: Feedback) -> &'static str {
    match feedback {
        Feedback::EventsOnly => "events only",
        Feedback::Decisions => "decisions with rewards",
    }
}

/// Item-kNN's neighbourhood sizes on MovieLens (`None`: all), so that its best is the bar.
const KNN_NEIGHBOURS: [Option<usize>; 5] = [Some(20), Some(50), Some(100), Some(200), None];

fn movielens(a: &Args, cfg: &Config, feedback: Feedback) {
    let started = Instant::now();
    let paths = match fetch::fetch(&fetch::MOVIELENS_100K, &fetch::cache_dir()) {
        Ok(p) => p,
        Err(e) => return eprintln!("MovieLens-100k unavailable: {e}"),
    };
    let data = match MovieLens::load(&paths[0], &paths[1], &paths[2]) {
        Ok(d) => d,
        Err(e) => return eprintln!("MovieLens-100k unreadable: {e}"),
    };
    let mut engine = cfg.clone();
    // Ranking quality is judged on the model's own order: no exploration.
    engine.exploration.policy = PolicyKind::Greedy;
    engine.max_candidates = engine.max_candidates.max(data.items.len());
    engine.seed = a.seed;
    let mut policies: Vec<Box<dyn Policy>> = vec![
        Box::new(RandomPolicy::new(a.seed)),
        Box::new(Popularity::global(PopularityScore::Count)),
    ];
    for days in [1.0, 7.0, 30.0] {
        policies.push(Box::new(Popularity::decayed(
            PopularityScore::Count,
            days * 86_400.0,
        )));
    }
    for k in KNN_NEIGHBOURS {
        policies.push(Box::new(ItemKnn::new(k, 1_000)));
    }
    // The same signal as nudge's co-occurrence component, alone: a stronger bar than item-kNN.
    policies.push(Box::new(ItemKnn::sequential(0.8, 20, 1_000)));
    for v in Variant::ALL {
        let p = EnginePolicy::new(
            v.name(),
            v.apply(&engine),
            data.items.clone(),
            data.start_ms(),
        )
        .expect("valid engine configuration")
        .feedback(feedback);
        policies.push(Box::new(p));
    }
    if !a.only.is_empty() {
        policies.retain(|p| a.only.iter().any(|o| p.name().contains(o.as_str())));
    }
    if policies.is_empty() {
        return eprintln!("--only matched no policy");
    }
    let rows: Vec<movielens::Row> = run_each(&mut policies, |p| {
        movielens::run(&data, p, 0.2, a.seed, feedback)
    });
    println!(
        "\n## MovieLens-100k in time order, {} (seed {}, {} ratings, test = last 20%: {} ranked, full ranking of unrated items)\n",
        feedback_title(feedback),
        a.seed,
        data.ratings.len(),
        rows[0].ranked
    );
    println!("| policy | HR@10 [95% CI] | NDCG@10 [95% CI] |");
    println!("|---|---|---|");
    for r in &rows {
        println!("| {} | {} | {} |", r.name, r.hit_rate, r.ndcg);
    }
    let Some(full) = rows.iter().find(|r| r.name == Variant::Full.name()) else {
        return println!("\nMovieLens took {:.1} s", started.elapsed().as_secs_f64());
    };
    println!("\nPaired difference, full nudge minus each (95% user-bootstrap CI):\n");
    for r in rows.iter().filter(|r| r.name != full.name) {
        println!(
            "- vs {}: HR@10 {}, NDCG@10 {}",
            r.name,
            movielens::paired(full, r, false, a.seed),
            movielens::paired(full, r, true, a.seed)
        );
    }
    println!("\nMovieLens took {:.1} s", started.elapsed().as_secs_f64());
}

fn obd(a: &Args) {
    for campaign in Campaign::ALL {
        let args = ReplayArgs {
            log: None,
            obd: true,
            campaign,
            config: None,
            learn: LearnFrom::Every,
            seed: a.seed,
        };
        println!(
            "\n## Open Bandit Dataset sample, random/{}, through `nudge replay --obd --campaign {}`\n",
            campaign.name(),
            campaign.name()
        );
        match replay::run(&args) {
            Ok(table) => print!("{table}"),
            Err(e) => eprintln!("replay failed: {e}"),
        }
    }
}

/// Issue 15: frequency caps and diversity on the simulator: what they change and what they
/// cost, nudge fed tracked decisions, 5 placements of 20 candidates per decision.
fn saturation(a: &Args, cfg: &Config) {
    use nudge::eval::saturation::{self, Yardstick};
    use nudge::saturation::{Diversity, FrequencyCap, SaturationConfig};
    let started = Instant::now();
    let world = World::new(SimConfig::standard(a.seed));
    let yard = Yardstick {
        cap: 2,
        window_s: 3600,
        per_category: 2,
    };
    let cap = FrequencyCap {
        attribute: None,
        max: yard.cap,
        window_s: yard.window_s,
    };
    let diversity = Diversity {
        attribute: "category".into(),
        max_per_value: yard.per_category as u32,
    };
    let runs = [
        ("none", SaturationConfig::default()),
        (
            "item cap 2/h",
            SaturationConfig {
                caps: vec![cap.clone()],
                ..Default::default()
            },
        ),
        (
            "diversity ≤ 2 per category",
            SaturationConfig {
                diversity: Some(diversity.clone()),
                ..Default::default()
            },
        ),
        (
            "both",
            SaturationConfig {
                caps: vec![cap],
                diversity: Some(diversity),
                ..Default::default()
            },
        ),
    ];
    let rows: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|(name, c)| {
                let world = &world;
                s.spawn(move || saturation::run(world, cfg, name, c.clone(), 5, yard))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    println!(
        "\n## Saturation control on the simulator (seed {}, {} decisions, 5 of 20 candidates placed, nudge fed tracked decisions)\n",
        a.seed,
        world.steps.len()
    );
    println!("| controls | impressions over 2 per item per user per hour | decisions with > 2 of one category | expected clicks per decision | change | clicks | distinct items per user |");
    println!("|---|---|---|---|---|---|---|");
    let base = rows[0].expected_clicks;
    for r in &rows {
        println!(
            "| {} | {} ({:.2}%) | {} ({:.2}%) | {:.4} | {:+.2}% | {} | {:.1} |",
            r.name,
            r.over_cap,
            100.0 * r.over_cap as f64 / r.impressions.max(1) as f64,
            r.over_diversity,
            100.0 * r.over_diversity as f64 / r.decisions.max(1) as f64,
            r.expected_clicks,
            100.0 * (r.expected_clicks / base - 1.0),
            r.clicks,
            r.distinct_per_user
        );
    }
    println!("\nSaturation took {:.1} s", started.elapsed().as_secs_f64());
}

/// Live segments against the standard world with 8 planted taste groups (one of which
/// drifts halfway), 2,000 users of 40 sessions each (`SEGMENTS_USERS`, `SEGMENTS_SESSIONS`):
/// ARI along the stream, and N, the decisions per user by which it first reaches 0.7
/// (`docs/segments.md`). Not among the default workloads.
fn segments(a: &Args, cfg: &Config) {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let fenv = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let standard = SimConfig::standard(a.seed);
    let world = World::new(SimConfig {
        groups: env("SEGMENTS_GROUPS", 8),
        drift_groups: 1,
        users: env("SEGMENTS_USERS", 2_000),
        items: env("SEGMENTS_ITEMS", standard.items),
        sessions_per_user: env("SEGMENTS_SESSIONS", 40),
        intent_scale: fenv("SEGMENTS_INTENT", standard.intent_scale),
        taste_scale: fenv("SEGMENTS_TASTE", standard.taste_scale),
        ..standard
    });
    let started = Instant::now();
    let points = match nudge::eval::segments::measure(&world, cfg.clone(), 28) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("the engine did not start: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "\n## Segments: {} users in {} planted groups, seed {}, k = {}, state_weight = {}, \
         min_steps = {}, memory = {} ({:.1} s)\n",
        world.cfg.users,
        world.cfg.groups,
        a.seed,
        cfg.segments.k,
        cfg.segments.state_weight,
        cfg.segments.min_steps,
        cfg.segments.memory,
        started.elapsed().as_secs_f64()
    );
    println!(
        "| decisions | per user | users | with a segment | ARI (all) | ARI (with one) | | \
         ARI, batch k-means on the weights | sizes | drifting group: share in its segment |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for p in &points {
        println!(
            "| {} | {:.1} | {} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {:?} | {:.2} in {:?} |",
            p.steps,
            p.decisions_per_user,
            p.users,
            p.assigned,
            p.ari,
            p.ari_assigned,
            if p.after_drift { "after the drift" } else { "" },
            p.ari_batch_weights,
            p.sizes,
            p.drifting_group.1,
            p.drifting_group.0,
        );
    }
    match points.iter().find(|p| p.ari >= 0.7) {
        Some(p) => println!(
            "\nN = {:.1} decisions per user (ARI {:.3} at {} decisions)",
            p.decisions_per_user, p.ari, p.steps
        ),
        None => println!("\nARI never reached 0.7"),
    }
}

/// Issue 10's contextual-bandit workload: many users with hidden tastes, few steps each,
/// items with known 16-d vectors; nudge against random, popularity, the per-user Bayesian
/// logistic regression that knows the model class ("informed") and the oracle. Mean expected
/// reward, over all steps and by the user's step index. `CB_USERS` and `CB_TASTE_SD` change
/// the world; `--only` keeps the policies whose name contains it. Not among the default
/// workloads.
fn contextual_bandit(a: &Args, cfg: &Config) {
    use nudge::eval::cb::{self, CbConfig};
    let started = Instant::now();
    let standard = CbConfig::standard(a.seed);
    let users = std::env::var("CB_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(standard.users);
    let taste_sd = std::env::var("CB_TASTE_SD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(standard.taste_sd);
    let world = cb::World::new(CbConfig {
        users,
        taste_sd,
        ..standard
    });
    let mut policies = cb::policies(&world, cfg, &a.feedback);
    if !a.only.is_empty() {
        policies.retain(|p| a.only.iter().any(|o| p.name().contains(o.as_str())));
    }
    let mut traces = run_each(&mut policies, |p| cb::run(&world, p));
    traces.push(cb::run_oracle(&world));
    let c = &world.cfg;
    println!(
        "\n## Contextual bandit (seed {}, {} users, {} items of width {}, {} candidates, {} steps, \
         {}–{} per user, {:.0}–{:.0} s apart, taste sd {})\n",
        a.seed,
        c.users,
        c.items,
        c.dim,
        c.candidates,
        world.steps.len(),
        c.min_steps,
        c.max_steps,
        c.gap_s.0,
        c.gap_s.1,
        c.taste_sd
    );
    println!("| policy | mean expected reward [95% CI] | steps 1–3 | steps 4–6 | steps 7–10 | steps 11–15 |");
    println!("|---|---|---|---|---|---|");
    for t in &traces {
        println!(
            "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} |",
            t.name,
            cb::mean(&world, t),
            cb::mean_at(&world, t, 0, 3),
            cb::mean_at(&world, t, 3, 6),
            cb::mean_at(&world, t, 6, 10),
            cb::mean_at(&world, t, 10, 15)
        );
    }
    let informed: Vec<_> = traces
        .iter()
        .filter(|t| t.name.starts_with("informed"))
        .collect();
    println!(
        "\nPaired gaps, informed minus full nudge (mean expected reward, 95% user-bootstrap CI):\n"
    );
    for n in traces
        .iter()
        .filter(|t| t.name.starts_with(Variant::Full.name()))
    {
        for i in &informed {
            println!("- {} − {}: {}", i.name, n.name, cb::paired(&world, i, n));
        }
    }
    println!(
        "\ncontextual bandit took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Issue 13 on the simulator: one engine runs `control` vs `popularity` vs `nudge` (and a
/// second one with `popularity` the baseline), set beside each policy served alone to every
/// user (`docs/experiments.md`, "On the simulator"). Not among the default workloads.
fn experiment(a: &Args, cfg: &Config) {
    use nudge::eval::experiment::{self as ab, CONTROL_FIRST, POLICIES, POPULARITY_FIRST};
    let started = Instant::now();
    let world = World::new(SimConfig::standard(a.seed));
    let (online, alone) = ab::evaluate(&world, cfg, &[&CONTROL_FIRST, &POPULARITY_FIRST]);
    println!(
        "\n## Issue 13 on the simulator: one engine, one experiment of three equal arms (seed {}, {} users, {} decisions, metric click-through, τ = 0.2, α = 0.05)",
        a.seed,
        world.cfg.users,
        world.steps.len()
    );
    for run in &online {
        experiment_tables(&world, run, &alone);
    }
    println!("\nEvery policy alone, all users (offline; 95% user-bootstrap CI):\n");
    for (p, t) in POLICIES.iter().zip(&alone) {
        println!(
            "- {} ({}): {}",
            p.name(),
            t.name,
            ab::offline_mean(&world, t)
        );
    }
    println!("\nexperiment took {:.1} s", started.elapsed().as_secs_f64());
}

/// The tables of one experiment: results against the offline estimates, the arms against
/// their policies alone, and the baseline-relative lift along the run.
fn experiment_tables(world: &World, run: &nudge::eval::experiment::Online, alone: &[sim::Trace]) {
    use nudge::eval::experiment::{self as ab, POLICIES};
    let r = &run.results;
    let of = |policy: &str| {
        let i = POLICIES.iter().position(|p| p.name() == policy);
        &alone[i.expect("every arm's policy ran alone")]
    };
    let base = &r.arms[0];
    println!(
        "\n### Baseline `{}`: status {}, SRM p = {}, harness errors {}\n",
        base.name,
        r.status.name(),
        r.srm_p_value.map_or("n/a".into(), |p| format!("{p:.3}")),
        run.errors
    );
    println!("| arm | users | decisions | click-through | lift vs {} [always-valid 95%] | p | verdict | first significant (day) | last look alone | offline: alone, all users | offline lift [95% paired bootstrap] | agrees (reported / last look) |", base.name);
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, arm) in r.arms.iter().enumerate() {
        let m = &arm.primary;
        let offline = ab::offline_mean(world, of(arm.policy));
        let mean = m.mean.map_or("—".into(), |x| format!("{x:.4}"));
        if i == 0 {
            println!(
                "| {} | {} | {} | {mean} | baseline | | | | | {offline} | | |",
                arm.name, arm.tally.users, arm.tally.decisions
            );
            continue;
        }
        let lift = ab::offline_lift(world, of(arm.policy), of(base.policy));
        let verdict = match (m.significant, m.worse) {
            (true, false) => "winner",
            (true, true) => "loser",
            _ => "—",
        };
        let first = (run.looks.iter())
            .find(|l| l.arms[i].2)
            .map_or("—".into(), |l| l.day.to_string());
        let yes = |i: (f64, f64)| if ab::agrees(i, &lift) { "yes" } else { "no" };
        let (last, agrees_last) = match ab::last_look(run, i) {
            Some((_, (lo, hi))) => (format!("[{lo:+.4}, {hi:+.4}]"), yes((lo, hi))),
            None => ("—".into(), "—"),
        };
        println!(
            "| {} | {} | {} | {mean} | {} [{:+.4}, {:+.4}] | {:.2e} | {verdict} | {first} | {last} | {offline} | {:+.4} [{:+.4}, {:+.4}] | {} / {agrees_last} |",
            arm.name, arm.tally.users, arm.tally.decisions,
            m.lift.map_or("—".into(), |x| format!("{x:+.4}")), m.interval.0, m.interval.1,
            m.p_value, lift.mean, lift.lo, lift.hi, yes(m.interval)
        );
    }
    let alone_of: Vec<&sim::Trace> = r.arms.iter().map(|a| of(a.policy)).collect();
    let checks = ab::arm_checks(world, run, &alone_of);
    println!("\nEach arm against its policy alone, on the arm's own users' decisions (same steps, same draws):\n");
    println!("| arm | users | decisions (engine / harness) | clicks (engine / harness) | click-through here | alone | here / alone − 1 [95% paired bootstrap] |");
    println!("|---|---|---|---|---|---|---|");
    for (arm, c) in r.arms.iter().zip(&checks) {
        println!(
            "| {} | {} | {} / {} | {} / {} | {:.4} | {:.4} | {:+.4} [{:+.4}, {:+.4}] |",
            c.arm,
            c.users,
            arm.tally.decisions,
            c.decisions,
            arm.tally.clicks,
            c.clicks,
            c.clicks as f64 / c.decisions.max(1) as f64,
            c.alone,
            c.shared.mean,
            c.shared.lo,
            c.shared.hi
        );
    }
    for c in checks.iter().skip(1) {
        println!(
            "- {} vs {}, both alone on this experiment's own users: {:+.4}",
            c.arm,
            checks[0].arm,
            c.alone / checks[0].alone - 1.0
        );
    }
    let last = r.arms.len() - 1;
    let path: Vec<String> = (run.looks.iter().enumerate())
        .map(|(k, l)| {
            let (lift, (lo, hi), _) = l.arms[last];
            let lift = lift.map_or("—".into(), |x| format!("{x:+.3}"));
            let day = match k + 1 == run.looks.len() {
                true => "end".to_string(),
                false => format!("day {}", l.day),
            };
            format!("{day}: {lift} [{lo:+.3}, {hi:+.3}]")
        })
        .collect();
    println!(
        "\n`{}`'s lift at each look, with the engine's reported interval: {}",
        r.arms[last].name,
        path.join("; ")
    );
}

fn main() {
    let a = args();
    let cfg = engine_config();
    for w in a.workloads.clone() {
        match w.as_str() {
            "sim" => a.feedback.iter().for_each(|&f| simulation(&a, &cfg, f)),
            "movielens" => a.feedback.iter().for_each(|&f| movielens(&a, &cfg, f)),
            "saturation" => saturation(&a, &cfg),
            "obd" => obd(&a),
            "segments" => segments(&a, &cfg),
            "cb" => contextual_bandit(&a, &cfg),
            "experiment" => experiment(&a, &cfg),
            other => {
                eprintln!(
                    "unknown workload {other} (sim, movielens, obd, saturation, segments, cb, experiment)"
                )
            }
        }
    }
}
