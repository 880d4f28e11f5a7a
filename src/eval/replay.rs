//! `nudge replay`: off-policy evaluation of an engine configuration against logged decisions,
//! learning online as it goes (progressive validation: each logged decision is scored before
//! the policy learns from it).
//!
//! Estimators of ranking decisions, on the first slot (the only one whose propensity is
//! unconditional); template decisions are evaluated as slates (`slate`):
//! - **replay** (Li et al. 2011), only when the log is uniformly random: the policy's own
//!   choice is drawn; where it matches the logged item, the logged reward counts. Wilson
//!   interval.
//! - **IPS**: the mean of `r·π(a|x)/p(a|x)`; **SNIPS**: `Σ r·w / Σ w`. Bootstrap intervals
//!   (rows resampled, seeded).
//!
//! By default the policy learns from every logged row (the logging policy's data, as an engine
//! trained on it would have); `--learn matched` restricts learning to replay matches, Li et
//! al.'s original protocol. Logs come from nudge's own decision log (`log`) or the Open Bandit
//! Dataset (`obd`). This module does not draw data from anywhere else.

use std::path::PathBuf;

use crate::api::{ItemSpec, LogRecord};
use crate::config::Config;
use crate::eval::baselines::{Popularity, PopularityScore, RandomPolicy};
use crate::eval::slate::{self, LoggedSlate, SlateEstimate};
use crate::eval::stats::{cluster_bootstrap, wilson, Cluster, Interval};
use crate::eval::{EnginePolicy, Observation, Outcome, Policy, Request, Variant};
use crate::rng::Rng;

/// One logged decision, first slot only.
#[derive(Clone, Debug, PartialEq)]
pub struct Logged {
    /// Time (Unix ms).
    pub ts_ms: u64,
    /// The user.
    pub user: String,
    /// The context.
    pub context: Vec<(String, String)>,
    /// Every candidate.
    pub candidates: Vec<String>,
    /// The item the logging policy placed first.
    pub item: String,
    /// Its propensity under the logging policy.
    pub propensity: f64,
    /// The reward it earned (0..=1).
    pub reward: f64,
}

/// Joins ranking decisions with their outcomes: each decision's first placement with the
/// total reward it earned (0 when none arrived). Decisions without placements are skipped,
/// and so are template decisions (`slate::slates_from_records` reads those).
pub fn from_records(records: &[LogRecord]) -> Vec<Logged> {
    let mut out: Vec<Logged> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for r in records {
        match r {
            LogRecord::Decision {
                ts_ms,
                decision,
                user,
                context,
                candidates,
                placements,
                ..
            } => {
                let Some(first) = placements.first() else {
                    continue;
                };
                if crate::eval::slate::template_of(context).is_some() {
                    continue;
                }
                index.insert(*decision, out.len());
                out.push(Logged {
                    ts_ms: *ts_ms,
                    user: user.clone(),
                    context: context.clone(),
                    candidates: candidates.clone(),
                    item: first.item.clone(),
                    propensity: first.propensity as f64,
                    reward: 0.0,
                });
            }
            LogRecord::Outcome {
                decision,
                item,
                total,
                ..
            } => {
                if let Some(&i) = index.get(decision) {
                    if out[i].item == *item {
                        out[i].reward = (*total as f64).clamp(0.0, 1.0);
                    }
                }
            }
            LogRecord::Expired { .. } => {}
        }
    }
    out
}

/// Whether every row's propensity is `1/|candidates|` (a uniformly random logging policy).
pub fn is_uniform(log: &[Logged]) -> bool {
    log.iter()
        .all(|l| (l.propensity * l.candidates.len() as f64 - 1.0).abs() < 1e-3)
}

/// Which rows the policy learns from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LearnFrom {
    /// Every logged row.
    Every,
    /// Only rows where the policy's own choice matched the logged one (Li et al.).
    Matched,
}

/// One policy's estimates.
#[derive(Clone, Debug)]
pub struct Estimate {
    /// The policy.
    pub name: String,
    /// Rows evaluated.
    pub rows: usize,
    /// Rows where the policy's draw matched the logged item.
    pub matched: usize,
    /// Replay estimate (uniform logs only).
    pub replay: Option<Interval>,
    /// IPS estimate.
    pub ips: Interval,
    /// SNIPS estimate.
    pub snips: Interval,
}

fn sample(dist: &[f64], rng: &mut Rng) -> usize {
    let u = rng.next_f64() * dist.iter().sum::<f64>();
    let mut acc = 0.0;
    for (i, p) in dist.iter().enumerate() {
        acc += p;
        if u < acc {
            return i;
        }
    }
    dist.len().saturating_sub(1)
}

/// What a policy says of one logged one-slot choice.
pub(crate) struct Judged {
    /// The policy's distribution over the candidates.
    pub dist: Vec<f64>,
    /// The logged item's index among the candidates.
    pub logged: Option<usize>,
    /// The importance weight `π(logged) / propensity` (0 when the policy cannot place the
    /// logged item or the logged propensity is 0).
    pub weight: f64,
}

/// Asks `policy` for `req`'s first slot and weighs the logged `item`, placed with
/// `propensity`, against its answer: the one step a ranking's and a slate's off-policy
/// estimates share.
pub(crate) fn judge(
    policy: &mut dyn Policy,
    req: &Request<'_>,
    item: &str,
    propensity: f64,
) -> Judged {
    let dist = policy.first_slot(req);
    let logged = req.candidates.iter().position(|c| *c == item);
    let pi = logged.and_then(|i| dist.get(i).copied()).unwrap_or(0.0);
    let weight = if propensity > 0.0 {
        pi / propensity
    } else {
        0.0
    };
    Judged {
        dist,
        logged,
        weight,
    }
}

/// Evaluates one policy on the log, learning as it goes.
pub fn evaluate(policy: &mut dyn Policy, log: &[Logged], learn: LearnFrom, seed: u64) -> Estimate {
    let uniform = is_uniform(log);
    let mut rng = Rng::new(seed);
    let (mut matched, mut matched_reward) = (0usize, 0.0);
    let mut terms = Vec::with_capacity(log.len());
    for l in log {
        let req = Request {
            user: &l.user,
            context: &l.context,
            candidates: &l.candidates,
            n: 1,
            ts_ms: l.ts_ms,
        };
        let Judged {
            dist,
            logged,
            weight: w,
        } = judge(policy, &req, &l.item, l.propensity);
        terms.push(Cluster {
            sum: w * l.reward,
            count: w,
        });
        let hit = logged.is_some() && Some(sample(&dist, &mut rng)) == logged;
        if hit {
            matched += 1;
            matched_reward += l.reward;
        }
        if learn == LearnFrom::Every || hit {
            let outcome = if l.reward > 0.0 {
                Outcome::Click
            } else {
                Outcome::Ignored
            };
            let obs = Observation {
                user: &l.user,
                context: &l.context,
                item: &l.item,
                outcome,
                ts_ms: l.ts_ms,
                // The logging policy showed it.
                shown: true,
            };
            policy.observe(&obs);
        }
    }
    let ips_terms: Vec<Cluster> = terms
        .iter()
        .map(|t| Cluster {
            sum: t.sum,
            count: 1.0,
        })
        .collect();
    Estimate {
        name: policy.name(),
        rows: log.len(),
        matched,
        replay: uniform.then(|| wilson(matched_reward, matched as f64)),
        ips: cluster_bootstrap(&ips_terms, 1000, seed),
        snips: cluster_bootstrap(&terms, 1000, seed),
    }
}

/// The logging policy's own value: the mean logged reward (Wilson interval).
pub fn logged_value(log: &[Logged]) -> Interval {
    wilson(log.iter().map(|l| l.reward).sum(), log.len() as f64)
}

/// Evaluates the baselines and nudge's three variants of `cfg` on `log`. Engines start with
/// `items` in their catalog and do not train ignored placements at expiry (in a replay only
/// the logged item was shown).
pub fn evaluate_all(
    log: &[Logged],
    items: &[ItemSpec],
    cfg: &Config,
    learn: LearnFrom,
    seed: u64,
) -> Vec<Estimate> {
    let start_ms = log.first().map_or(0, |l| l.ts_ms);
    let widest = log.iter().map(|l| l.candidates.len()).max().unwrap_or(1);
    policies(items, cfg, start_ms, widest, seed)
        .iter_mut()
        .map(|p| evaluate(p.as_mut(), log, learn, seed))
        .collect()
}

/// The policies `nudge replay` evaluates, fresh: the baselines and nudge's three variants of
/// `cfg`, whose engines start at `start_ms` with `items` in their catalog, take up to
/// `widest` candidates, and do not train ignored placements at expiry (in a replay only the
/// logged item was shown).
pub fn policies(
    items: &[ItemSpec],
    cfg: &Config,
    start_ms: u64,
    widest: usize,
    seed: u64,
) -> Vec<Box<dyn Policy>> {
    let mut policies: Vec<Box<dyn Policy>> = vec![
        Box::new(RandomPolicy::new(seed ^ 0x5eed)),
        Box::new(Popularity::global(PopularityScore::ClickRate)),
        Box::new(Popularity::decayed(PopularityScore::ClickRate, 86_400.0)),
    ];
    for v in Variant::ALL {
        let mut c = v.apply(cfg);
        c.attribution.train_ignored_top_k = 0;
        c.max_candidates = c.max_candidates.max(widest);
        match EnginePolicy::new(v.name(), c, items.to_vec(), start_ms) {
            Ok(p) => policies.push(Box::new(p)),
            Err(e) => eprintln!("{}: engine did not start: {e}", v.name()),
        }
    }
    policies
}

/// Evaluates the same policies as `evaluate_all` on the template decisions of `log`, one
/// table per template (`slate`); each template gets fresh policies.
pub fn evaluate_slates(
    log: &[LoggedSlate],
    cfg: &Config,
    learn: LearnFrom,
    seed: u64,
) -> Vec<(Vec<LoggedSlate>, Vec<SlateEstimate>)> {
    slate::by_template(log)
        .into_iter()
        .map(|group| {
            let start_ms = group.first().map_or(0, |l| l.ts_ms);
            let widest = (group.iter().flat_map(|l| &l.slots))
                .map(|s| s.candidates.len())
                .max()
                .unwrap_or(1);
            let estimates = policies(&[], cfg, start_ms, widest, seed)
                .iter_mut()
                .map(|p| slate::evaluate(p.as_mut(), &group, learn, seed))
                .collect();
            (group, estimates)
        })
        .collect()
}

/// The estimates as a Markdown table.
pub fn table(log: &[Logged], estimates: &[Estimate]) -> String {
    let mut s = String::new();
    let clicks: f64 = log.iter().map(|l| l.reward).sum();
    s.push_str(&format!(
        "{} logged decisions, {} with reward, uniform logging: {}; logging policy's value {}\n\n",
        log.len(),
        clicks,
        is_uniform(log),
        logged_value(log)
    ));
    s.push_str("| policy | matched | replay [95% CI] | IPS [95% CI] | SNIPS [95% CI] |\n|---|---|---|---|---|\n");
    for e in estimates {
        let replay = e
            .replay
            .map_or("n/a (log not uniform)".to_string(), |r| r.to_string());
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            e.name, e.matched, replay, e.ips, e.snips
        ));
    }
    s
}

/// Arguments of `nudge replay`.
#[derive(Clone, Debug, clap::Args)]
pub struct ReplayArgs {
    /// A decision log written by nudge (JSONL, see docs/decision-log.md).
    #[arg(long, conflicts_with = "obd")]
    pub log: Option<PathBuf>,
    /// Use the Open Bandit Dataset sample's random logs, fetched into the cache on first use.
    #[arg(long)]
    pub obd: bool,
    /// With `--obd`: which campaign.
    #[arg(long, value_enum, default_value = "all")]
    pub campaign: crate::eval::obd::Campaign,
    /// The engine configuration to evaluate (TOML; NUDGE_* variables apply as for `serve`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Which rows the policies learn from.
    #[arg(long, value_enum, default_value = "every")]
    pub learn: LearnFrom,
    /// Seed of the policies' draws and the bootstrap.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Runs `nudge replay` and prints its table.
pub fn run(args: &ReplayArgs) -> Result<String, String> {
    let mut cfg = Config::load(args.config.as_deref())?;
    cfg.seed = args.seed;
    let (log, items, slates) = if args.obd {
        let paths = crate::eval::fetch::fetch(
            &crate::eval::fetch::OPEN_BANDIT_SAMPLE,
            &crate::eval::fetch::cache_dir(),
        )
        .map_err(|e| e.to_string())?;
        let (rows, items) = args.campaign.members();
        let data =
            crate::eval::obd::load(&paths[rows], &paths[items]).map_err(|e| e.to_string())?;
        (data.log, data.items, Vec::new())
    } else if let Some(path) = &args.log {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let records = crate::eval::log::read(std::io::BufReader::new(file))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let slates = slate::slates_from_records(&records);
        (from_records(&records), Vec::new(), slates)
    } else {
        return Err("give --log FILE or --obd".into());
    };
    if log.is_empty() && slates.is_empty() {
        return Err("the log holds no decisions".into());
    }
    let mut out = String::new();
    if !log.is_empty() {
        let estimates = evaluate_all(&log, &items, &cfg, args.learn, args.seed);
        out.push_str(&table(&log, &estimates));
    }
    for (group, estimates) in evaluate_slates(&slates, &cfg, args.learn, args.seed) {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&slate::table(&group, &estimates));
    }
    Ok(out)
}

/// `nudge replay` without the binary's argument parser: parses `args` (without the program
/// and subcommand names), runs, and prints the table to stdout.
pub fn main_from_args(args: impl IntoIterator<Item = String>) -> Result<(), String> {
    use clap::{Args, Command, FromArgMatches};
    let cmd = ReplayArgs::augment_args(Command::new("nudge replay").no_binary_name(true));
    let matches = cmd.try_get_matches_from(args).map_err(|e| e.to_string())?;
    let args = ReplayArgs::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    print!("{}", run(&args)?);
    Ok(())
}
