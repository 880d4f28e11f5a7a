//! One decision's rules: which fire, what each changes, and a placement that honours them
//! with propensities that stay exact.
//!
//! Order of work: every rule in priority order checks its scope and its `when` once per
//! decision; a rule that fires then chooses items with its `items` condition. Boosts and
//! buries move logits **before** the policy samples, and exclusions and pins take items out
//! of the sampled set, so each sampled slot's propensity is the policy's probability over the
//! post-rule scores of the items left, given the earlier slots. Pinned and forced items go
//! first with propensity 1 (the policy did not choose them). A cap is applied slot by slot
//! inside the sampling (`policy::place_constrained`): an item whose attribute value has
//! reached its cap is not eligible, and the propensity is over the eligible items.
//!
//! A runtime error (division by zero, a missing feature or context key) skips that rule for
//! this decision and is counted; the rules before and after it still apply.

use std::sync::Arc;

use hashbrown::HashMap;

use crate::actor::features::FeatureView;
use crate::api::RuleEffect;
use crate::config::ExplorationConfig;
use crate::model::policy::{self, Constraint, Slot};
use crate::rng::Rng;
use crate::rules::expr::{Env, EvalError, Features, ItemView};
use crate::rules::{Action, Rule, RuleSet};

/// The candidates of a decision, as rules read them.
pub trait Candidates {
    /// How many there are.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Candidate `i`'s id and attributes.
    fn item(&self, i: usize) -> ItemView<'_>;
    /// Candidate `i`'s key when its attributes are the catalog's (so they stay the same until
    /// the item is upserted again); `None` for an item given inline.
    fn key(&self, i: usize) -> Option<u64>;
    /// Candidate `i`'s item key, inline or not.
    fn item_key(&self, i: usize) -> u64;
}

/// What each item-only `items` condition (`Cond::item_only`) said about each item, one bit
/// per such rule, for one rule set version: a shard keeps it across decisions so that a
/// firing rule costs a bit test per candidate. The bits of an item are one row of a flat
/// table (found by one probe of the item's key per decision, not per rule); an upserted or
/// removed item is forgotten (`forget`) and its row reused.
#[derive(Debug, Default)]
pub struct ItemMatches {
    version: u64,
    /// Words per row: one bit per remembered rule.
    words: usize,
    rows: HashMap<u64, u32>,
    bits: Vec<u64>,
    free: Vec<u32>,
    /// The current decision's candidates' rows (`NO_ROW` for an inline one), kept to reuse
    /// its allocation.
    decision: Vec<u32>,
}

/// A candidate with no remembered bits (given inline).
const NO_ROW: u32 = u32::MAX;

impl ItemMatches {
    /// Forgets what is known of item `key` (its attributes changed).
    pub fn forget(&mut self, key: u64) {
        if let Some(row) = self.rows.remove(&key) {
            self.free.push(row);
        }
    }

    /// Starts over for another rule set version.
    fn reset(&mut self, set: &RuleSet) {
        self.version = set.version;
        self.words = (set.remembered as usize).div_ceil(64);
        self.rows.clear();
        self.bits.clear();
        self.free.clear();
    }

    /// Finds (or computes, on first sight) every candidate's row for this decision.
    fn for_decision(&mut self, set: &RuleSet, env: &Env<'_, '_>, candidates: &dyn Candidates) {
        self.decision.clear();
        for i in 0..candidates.len() {
            let Some(key) = candidates.key(i) else {
                self.decision.push(NO_ROW);
                continue;
            };
            let row = match self.rows.get(&key) {
                Some(&row) => row,
                None => {
                    let row = self.compute(set, env, candidates.item(i));
                    self.rows.insert(key, row);
                    row
                }
            };
            self.decision.push(row);
        }
    }

    /// Evaluates every item-only condition on `item` into a new row.
    fn compute(&mut self, set: &RuleSet, env: &Env<'_, '_>, item: ItemView<'_>) -> u32 {
        let words = self.words;
        let row = match self.free.pop() {
            Some(row) => row,
            None => {
                self.bits.resize(self.bits.len() + words, 0);
                (self.bits.len() / words - 1) as u32
            }
        };
        let bits = &mut self.bits[row as usize * words..(row as usize + 1) * words];
        bits.fill(0);
        let env = env.with_item(item);
        for rule in &set.rules {
            if let (Some(b), Some(cond)) = (rule.remembered, &rule.items) {
                // Item-only: the only error is a missing attribute, which is no match.
                if cond.eval(&env) == Ok(true) {
                    bits[b as usize / 64] |= 1 << (b % 64);
                }
            }
        }
        row
    }
}

/// Whether a segment `(id, name)` is the one `label` names (its name, or its id in decimal).
pub fn in_segment(label: &str, segment: Option<(u32, Option<&str>)>) -> bool {
    let Some((id, name)) = segment else {
        return false;
    };
    name == Some(label) || label.parse::<u32>().ok() == Some(id)
}

/// A decision as rules see it.
pub struct DecisionView<'a> {
    /// The user's live features at the decision's time.
    pub user: FeatureView<'a>,
    /// The context as given (empty when the request kept none).
    pub ctx: &'a [(String, String)],
    /// The user's experiment and arm, if any.
    pub arm: Option<(&'a str, &'a str)>,
    /// Whether to report each rule's effect (`explain`).
    pub explain: bool,
}

/// What the rules did to one decision.
#[derive(Debug, Default)]
pub struct Applied {
    /// Logits after boosts and buries (`None`: unchanged).
    logits: Option<Vec<f32>>,
    /// Excluded candidates (empty: none).
    excluded: Vec<bool>,
    /// Pinned candidates, in priority order.
    pinned: Vec<usize>,
    /// Per cap: the most placements per value, and each candidate's value (0: it has none).
    caps: Vec<(u32, Vec<u64>)>,
    /// Triggers fired, in priority order.
    pub triggers: Vec<Arc<str>>,
    /// Each rule that fired or failed, with what it changed (only with `explain`).
    pub effects: Vec<RuleEffect>,
    /// Rules that fired.
    pub fired: u64,
    /// Rules skipped by a runtime error.
    pub errors: u64,
}

impl RuleSet {
    /// Applies the set to one decision whose model logits are `logits`.
    pub fn apply(
        &self,
        decision: &DecisionView<'_>,
        candidates: &dyn Candidates,
        logits: &[f32],
        remembered: &mut ItemMatches,
    ) -> Applied {
        if remembered.version != self.version {
            remembered.reset(self);
        }
        let mut out = Applied::default();
        let mut matched = Vec::new();
        let mut known = false;
        let features = Features::new(decision.user);
        let env = Env {
            user: &features,
            ctx: decision.ctx,
            item: None,
        };
        for rule in &self.rules {
            if let (Some(scope), Some((experiment, arm))) = (&rule.arm, decision.arm) {
                let same = scope.len() == experiment.len() + 1 + arm.len()
                    && scope.starts_with(experiment)
                    && scope.ends_with(arm);
                if !same {
                    continue;
                }
            } else if rule.arm.is_some() {
                continue;
            }
            if let Some(scope) = &rule.segment {
                if !in_segment(scope, decision.user.segment) {
                    continue;
                }
            }
            let fires = rule.when.as_ref().map_or(Ok(true), |c| c.eval_inline(&env));
            let result = match fires {
                Ok(false) => continue,
                Ok(true) => {
                    let memo = (self, &mut *remembered, &mut known);
                    choose(rule, &env, candidates, memo, &mut matched)
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    out.fired += 1;
                    out.act(rule, candidates, logits, &matched);
                    if decision.explain {
                        out.effects.push(effect(rule, candidates, &matched, None));
                    }
                }
                Err(e) => {
                    out.errors += 1;
                    if decision.explain {
                        out.effects.push(effect(rule, candidates, &[], Some(e)));
                    }
                }
            }
        }
        out
    }
}

/// The items a firing rule acts on, into `matched` (cleared first). An error other than a
/// missing attribute fails the whole rule: nothing it chose is applied.
fn choose(
    rule: &Rule,
    env: &Env<'_, '_>,
    candidates: &dyn Candidates,
    (set, remembered, known): (&RuleSet, &mut ItemMatches, &mut bool),
    matched: &mut Vec<usize>,
) -> Result<(), EvalError> {
    matched.clear();
    if !rule.kind.takes_items() {
        return Ok(());
    }
    if rule.remembered.is_some() && !*known {
        remembered.for_decision(set, env, candidates);
        *known = true;
    }
    if let (Some(cond), Some(bit)) = (&rule.items, rule.remembered) {
        // The common case, in one pass over the decision's rows: a bit test per candidate.
        let (word, mask) = (bit as usize / 64, 1u64 << (bit % 64));
        let words = remembered.words;
        for (i, &row) in remembered.decision.iter().enumerate() {
            if row != NO_ROW {
                if remembered.bits[row as usize * words + word] & mask != 0 {
                    matched.push(i);
                }
                continue;
            }
            match cond.eval(&env.with_item(candidates.item(i))) {
                Ok(true) => matched.push(i),
                Ok(false) | Err(EvalError::MissingAttr) => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(());
    }
    for i in 0..candidates.len() {
        let chosen = match &rule.items {
            None => Ok(true),
            Some(cond) => cond.eval(&env.with_item(candidates.item(i))),
        };
        match chosen {
            Ok(true) => matched.push(i),
            Ok(false) | Err(EvalError::MissingAttr) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn effect(
    rule: &Rule,
    candidates: &dyn Candidates,
    matched: &[usize],
    error: Option<EvalError>,
) -> RuleEffect {
    let mut items: Vec<String> = matched
        .iter()
        .map(|&i| candidates.item(i).id.to_string())
        .collect();
    if let Action::Force(id) = &rule.action {
        items.push(id.to_string());
    }
    RuleEffect {
        rule: rule.name.clone(),
        version: rule.version,
        action: rule.kind,
        items,
        by: match rule.action {
            Action::Boost(by) => Some(by),
            _ => None,
        },
        trigger: match &rule.action {
            Action::Trigger(t) => Some(t.clone()),
            _ => None,
        },
        error: error.map(EvalError::describe),
    }
}

impl Applied {
    fn act(&mut self, rule: &Rule, candidates: &dyn Candidates, logits: &[f32], matched: &[usize]) {
        let k = candidates.len();
        match &rule.action {
            Action::Boost(by) => {
                let adjusted = self.logits.get_or_insert_with(|| logits.to_vec());
                for &i in matched {
                    adjusted[i] += by;
                }
            }
            Action::Exclude => {
                if self.excluded.is_empty() {
                    self.excluded = vec![false; k];
                }
                for &i in matched {
                    self.excluded[i] = true;
                }
            }
            Action::Pin => self.pinned.extend_from_slice(matched),
            Action::Force(id) => {
                if let Some(i) = (0..k).find(|&i| candidates.item(i).id == &**id) {
                    self.pinned.push(i);
                }
            }
            Action::Cap { attr, max } => {
                let groups = (0..k)
                    .map(|i| {
                        let item = candidates.item(i);
                        let value = item.attrs.iter().find(|(key, _)| **key == **attr);
                        // 0 means "no value"; a real value's hash is never 0 in practice.
                        value.map_or(0, |(_, v)| crate::ids::stable_hash(v.as_bytes()) | 1)
                    })
                    .collect();
                self.caps.push((*max, groups));
            }
            Action::Trigger(name) => self.triggers.push(name.clone()),
        }
    }

    /// Adds saturation control's judgement (issue 15) to the rules': a capped candidate is
    /// excluded (a cap beats a pin), fatigue lowers logits before the policy samples, and
    /// diversity is one more per-slot cap, so propensities stay exact. `logits` are the model's.
    pub fn saturate(&mut self, judged: &mut crate::saturation::Judged, logits: &[f32]) {
        if !judged.demoted.is_empty() {
            let moved = self.logits.get_or_insert_with(|| logits.to_vec());
            for &(i, by) in &judged.demoted {
                moved[i] -= by;
            }
        }
        if !judged.capped.is_empty() {
            self.excluded.resize(logits.len(), false);
            for &i in &judged.capped {
                self.excluded[i] = true;
            }
        }
        if let Some(diversity) = judged.diversity.take() {
            self.caps.push(diversity);
        }
    }

    /// Places `n` candidates under `cfg`'s policy, honouring the rules (see the module's
    /// comment for the propensities). `logits` are the model's; boosts apply on top.
    pub fn place(
        &self,
        cfg: &ExplorationConfig,
        logits: &[f32],
        n: usize,
        rng: &mut Rng,
    ) -> Vec<Slot> {
        let logits = self.logits.as_deref().unwrap_or(logits);
        if self.excluded.is_empty() && self.pinned.is_empty() && self.caps.is_empty() {
            return policy::place(cfg, logits, n, rng);
        }
        let k = logits.len();
        let mut out = self.excluded.clone();
        out.resize(k, false);
        let mut caps = Caps::new(&self.caps);
        let mut slots = Vec::with_capacity(n);
        for &i in &self.pinned {
            if slots.len() == n {
                break;
            }
            if !out[i] {
                out[i] = true;
                caps.count(i);
                slots.push(Slot {
                    index: i,
                    propensity: 1.0,
                });
            }
        }
        let rest: Vec<usize> = (0..k).filter(|&i| !out[i]).collect();
        let sub: Vec<f32> = rest.iter().map(|&i| logits[i]).collect();
        let m = n - slots.len();
        let sampled = if self.caps.is_empty() {
            policy::place(cfg, &sub, m, rng)
        } else {
            caps.rest = &rest;
            policy::place_constrained(cfg, &sub, m, rng, &mut caps)
        };
        slots.extend(sampled.into_iter().map(|s| Slot {
            index: rest[s.index],
            propensity: s.propensity,
        }));
        slots
    }
}

/// The caps' counts while a decision is placed; candidates are numbered in the sampled
/// subset (`rest` maps them back).
struct Caps<'a> {
    caps: &'a [(u32, Vec<u64>)],
    counts: Vec<HashMap<u64, u32>>,
    rest: &'a [usize],
}

impl<'a> Caps<'a> {
    fn new(caps: &'a [(u32, Vec<u64>)]) -> Self {
        Caps {
            caps,
            counts: vec![HashMap::new(); caps.len()],
            rest: &[],
        }
    }

    /// Counts candidate `i` (an index into the whole decision) as placed.
    fn count(&mut self, i: usize) {
        for ((_, groups), counts) in self.caps.iter().zip(&mut self.counts) {
            if groups[i] != 0 {
                *counts.entry(groups[i]).or_default() += 1;
            }
        }
    }
}

impl Constraint for Caps<'_> {
    fn allows(&self, j: usize) -> bool {
        let i = self.rest[j];
        self.caps
            .iter()
            .zip(&self.counts)
            .all(|((max, groups), counts)| {
                groups[i] == 0 || counts.get(&groups[i]).copied().unwrap_or(0) < *max
            })
    }

    fn take(&mut self, j: usize) {
        self.count(self.rest[j]);
    }
}
