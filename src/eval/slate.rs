//! Off-policy evaluation of template (multi-slot) decisions in `nudge replay`: the slate
//! estimators (`docs/decision-log.md`, "Template decisions").
//!
//! A template decision's log record carries one placement per slot, each with its
//! propensity **given the earlier slots' choices**, so their product is the exact probability
//! of the whole choice under the logging policy. That makes the **product-of-propensities
//! slate IPS** unbiased without assuming anything about how the slots' rewards combine:
//! `w = Π_k π_k(a_k | x) / μ_k(a_k | a_<k, x)` and the estimate is the mean of `w·R`, where
//! `R` is the decision's reward (the mean of its slots' rewards; a reward on the whole
//! decision gives every slot the same). SNIPS is `Σ w·R / Σ w`. The target policy is asked
//! for each slot's distribution over that slot's variants, slot by slot (a factorised
//! target; `π(a) = Π_k π_k(a_k)`). The pseudo-inverse estimator (Swaminathan et al., 2017)
//! has a far smaller variance but needs each slot's *marginal* logging propensity and an
//! additive reward; the log has only conditional propensities, so it is not offered.
//!
//! Per slot, the same weights one slot at a time (`π_k / μ_k`, the slot's own reward)
//! estimate the slot's reward when the target chooses that slot and the logging policy the
//! others: the target's value for the slot when a slot's reward depends on its own variant
//! alone.
//!
//! This module reads logs and asks policies; it does not change the engine.

use std::collections::HashMap;

use crate::api::LogRecord;
use crate::eval::replay::{self, LearnFrom};
use crate::eval::stats::{cluster_bootstrap, Cluster, Interval};
use crate::eval::{Observation, Outcome, Policy, Request};
use crate::rng::Rng;

/// One slot of a logged template decision.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedSlot {
    /// The slot's name (`template/slot`, the prefix of its variants' item ids).
    pub slot: String,
    /// The slot's variants, as item ids (`template/slot/variant`), in the logged order.
    pub candidates: Vec<String>,
    /// The variant the logging policy chose.
    pub item: String,
    /// Its propensity given the earlier slots' choices.
    pub propensity: f64,
    /// The reward it earned (0..=1).
    pub reward: f64,
}

/// One logged template decision.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedSlate {
    /// Time (Unix ms).
    pub ts_ms: u64,
    /// The user.
    pub user: String,
    /// The request's context (with the `template` and `template_version` the log added).
    pub context: Vec<(String, String)>,
    /// The template's name.
    pub template: String,
    /// The slots, in the template's order.
    pub slots: Vec<LoggedSlot>,
}

impl LoggedSlate {
    /// The decision's reward: the mean of its slots' rewards.
    pub fn reward(&self) -> f64 {
        let n = self.slots.len().max(1) as f64;
        self.slots.iter().map(|s| s.reward).sum::<f64>() / n
    }

    /// The logging policy's probability of the whole choice.
    pub fn propensity(&self) -> f64 {
        self.slots.iter().map(|s| s.propensity).product()
    }
}

/// The template a logged decision's context names, if it is a template decision.
pub fn template_of(context: &[(String, String)]) -> Option<&str> {
    context
        .iter()
        .find(|(k, _)| k == "template")
        .map(|(_, v)| v.as_str())
}

/// The slot of a variant's item id (`template/slot/variant` → `template/slot`).
fn slot_of(item: &str) -> &str {
    item.rsplit_once('/').map_or(item, |(slot, _)| slot)
}

/// Joins template decisions with their outcomes: each slot's placement with the total
/// reward it earned (0 when none arrived). Ranking decisions are left to
/// `replay::from_records`; a template decision whose placements do not name their slots'
/// variants is skipped.
pub fn slates_from_records(records: &[LogRecord]) -> Vec<LoggedSlate> {
    let mut out: Vec<LoggedSlate> = Vec::new();
    let mut index = HashMap::new();
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
                let Some(template) = template_of(context) else {
                    continue;
                };
                let slots: Option<Vec<LoggedSlot>> = (placements.iter())
                    .map(|p| {
                        let slot = slot_of(&p.item);
                        let variants: Vec<String> = (candidates.iter())
                            .filter(|c| slot_of(c) == slot)
                            .cloned()
                            .collect();
                        variants.contains(&p.item).then(|| LoggedSlot {
                            slot: slot.to_string(),
                            candidates: variants,
                            item: p.item.clone(),
                            propensity: f64::from(p.propensity),
                            reward: 0.0,
                        })
                    })
                    .collect();
                let Some(slots) = slots.filter(|s| !s.is_empty()) else {
                    continue;
                };
                index.insert(*decision, out.len());
                out.push(LoggedSlate {
                    ts_ms: *ts_ms,
                    user: user.clone(),
                    context: context.clone(),
                    template: template.to_string(),
                    slots,
                });
            }
            LogRecord::Outcome {
                decision,
                item,
                total,
                ..
            } => {
                if let Some(&i) = index.get(decision) {
                    if let Some(s) = out[i].slots.iter_mut().find(|s| s.item == *item) {
                        s.reward = f64::from(*total).clamp(0.0, 1.0);
                    }
                }
            }
            LogRecord::Expired { .. } => {}
        }
    }
    out
}

/// One slot's estimates.
#[derive(Clone, Debug)]
pub struct SlotEstimate {
    /// The slot (`template/slot`).
    pub slot: String,
    /// IPS of the slot's reward.
    pub ips: Interval,
    /// SNIPS of the slot's reward.
    pub snips: Interval,
}

/// One policy's estimates on one template's decisions.
#[derive(Clone, Debug)]
pub struct SlateEstimate {
    /// The policy.
    pub name: String,
    /// The template.
    pub template: String,
    /// Decisions evaluated.
    pub rows: usize,
    /// Product-of-propensities slate IPS of the decision's reward.
    pub ips: Interval,
    /// Its self-normalised form.
    pub snips: Interval,
    /// Per slot, in the template's order.
    pub slots: Vec<SlotEstimate>,
}

/// `r·π/μ` and `π/μ` as a ratio's cluster (`count` 1 for IPS, `w` for SNIPS).
fn terms(weighted: &[(f64, f64)], seed: u64) -> (Interval, Interval) {
    let ips: Vec<Cluster> = (weighted.iter())
        .map(|&(w, r)| Cluster {
            sum: w * r,
            count: 1.0,
        })
        .collect();
    let snips: Vec<Cluster> = (weighted.iter())
        .map(|&(w, r)| Cluster {
            sum: w * r,
            count: w,
        })
        .collect();
    (
        cluster_bootstrap(&ips, 1000, seed),
        cluster_bootstrap(&snips, 1000, seed),
    )
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

/// Evaluates one policy on the decisions of one template (`log` holds only those), learning
/// as it goes: each slot is scored (the policy's distribution over the slot's variants)
/// before the policy observes that slot's outcome.
pub fn evaluate(
    policy: &mut dyn Policy,
    log: &[LoggedSlate],
    learn: LearnFrom,
    seed: u64,
) -> SlateEstimate {
    let mut rng = Rng::new(seed);
    let width = log.first().map_or(0, |l| l.slots.len());
    let mut slate: Vec<(f64, f64)> = Vec::with_capacity(log.len());
    let mut per_slot: Vec<Vec<(f64, f64)>> = vec![Vec::with_capacity(log.len()); width];
    for l in log {
        let mut w = 1.0;
        for (k, s) in l.slots.iter().enumerate() {
            let req = Request {
                user: &l.user,
                context: &l.context,
                candidates: &s.candidates,
                n: 1,
                ts_ms: l.ts_ms,
            };
            let judged = replay::judge(policy, &req, &s.item, s.propensity);
            let (dist, logged, wk) = (judged.dist, judged.logged, judged.weight);
            w *= wk;
            if let Some(terms) = per_slot.get_mut(k) {
                terms.push((wk, s.reward));
            }
            let hit = logged.is_some() && Some(sample(&dist, &mut rng)) == logged;
            if learn == LearnFrom::Every || hit {
                let outcome = match s.reward > 0.0 {
                    true => Outcome::Click,
                    false => Outcome::Ignored,
                };
                policy.observe(&Observation {
                    user: &l.user,
                    context: &l.context,
                    item: &s.item,
                    outcome,
                    ts_ms: l.ts_ms,
                    shown: true,
                });
            }
        }
        slate.push((w, l.reward()));
    }
    let (ips, snips) = terms(&slate, seed);
    let slots = (per_slot.iter().enumerate())
        .map(|(k, t)| {
            let (ips, snips) = terms(t, seed);
            SlotEstimate {
                slot: log[0].slots[k].slot.clone(),
                ips,
                snips,
            }
        })
        .collect();
    SlateEstimate {
        name: policy.name(),
        template: log.first().map_or_else(String::new, |l| l.template.clone()),
        rows: log.len(),
        ips,
        snips,
        slots,
    }
}

/// The decisions of `log` by template (and slot count, so that a template whose slots
/// changed between versions is evaluated as two), in order of first appearance.
pub fn by_template(log: &[LoggedSlate]) -> Vec<Vec<LoggedSlate>> {
    let mut groups: Vec<Vec<LoggedSlate>> = Vec::new();
    let mut index: HashMap<(String, Vec<String>), usize> = HashMap::new();
    for l in log {
        let key = (
            l.template.clone(),
            l.slots.iter().map(|s| s.slot.clone()).collect(),
        );
        let i = *index.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(l.clone());
    }
    groups
}

/// The logging policy's own value on `log`: the mean decision reward (normal interval).
pub fn logged_value(log: &[LoggedSlate]) -> Interval {
    let rows: Vec<(f64, f64)> = log.iter().map(|l| (1.0, l.reward())).collect();
    terms(&rows, 0).0
}

/// The estimates of one template as a Markdown table (one row per policy; the slots'
/// estimates after the slate's).
pub fn table(log: &[LoggedSlate], estimates: &[SlateEstimate]) -> String {
    let mut s = String::new();
    let Some(first) = log.first() else {
        return s;
    };
    let slots: Vec<&str> = first.slots.iter().map(|s| s.slot.as_str()).collect();
    s.push_str(&format!(
        "template `{}`: {} logged decisions over {} slots; logging policy's value {}\n\n",
        first.template,
        log.len(),
        slots.len(),
        logged_value(log)
    ));
    s.push_str("| policy | slate IPS [95% CI] | slate SNIPS [95% CI] |");
    for slot in &slots {
        s.push_str(&format!(" `{slot}` IPS | `{slot}` SNIPS |"));
    }
    s.push_str("\n|---|---|---|");
    s.push_str(&"---|---|".repeat(slots.len()));
    s.push('\n');
    for e in estimates {
        s.push_str(&format!("| {} | {} | {} |", e.name, e.ips, e.snips));
        for slot in &e.slots {
            s.push_str(&format!(" {} | {} |", slot.ips, slot.snips));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LoggedPlacement;
    use crate::ids::DecisionId;

    fn decision(id: u64, items: [&str; 2], propensities: [f32; 2]) -> LogRecord {
        LogRecord::Decision {
            ts_ms: 1,
            decision: DecisionId(id),
            user: "u".into(),
            context: vec![("template".into(), "t".into())],
            candidates: ["t/a/a1", "t/a/a2", "t/b/b1", "t/b/b2", "t/b/b3"]
                .map(String::from)
                .to_vec(),
            placements: (items.iter().zip(propensities))
                .map(|(item, propensity)| LoggedPlacement {
                    item: item.to_string(),
                    score: 0.5,
                    propensity,
                })
                .collect(),
            config_version: 0,
            experiment: None,
        }
    }

    #[test]
    fn slots_are_split_by_their_ids_and_joined_with_their_outcomes() {
        let records = vec![
            decision(1, ["t/a/a2", "t/b/b3"], [0.5, 0.25]),
            LogRecord::Outcome {
                ts_ms: 2,
                decision: DecisionId(1),
                item: "t/b/b3".into(),
                reward: 1.0,
                total: 1.0,
                source: crate::api::OutcomeSource::Reward,
            },
        ];
        let slates = slates_from_records(&records);
        assert_eq!(slates.len(), 1);
        let s = &slates[0];
        assert_eq!(s.slots[0].candidates, ["t/a/a1", "t/a/a2"]);
        assert_eq!(s.slots[1].candidates, ["t/b/b1", "t/b/b2", "t/b/b3"]);
        assert_eq!((s.slots[0].reward, s.slots[1].reward), (0.0, 1.0));
        assert_eq!((s.reward(), s.propensity()), (0.5, 0.125));
        assert_eq!(s.slots[1].slot, "t/b");
    }
}
