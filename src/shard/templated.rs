//! Template decisions in a shard (issue 15, `docs/templates.md`): one variant per slot,
//! chosen slot by slot, and the reward of a whole decision.
//!
//! Each slot is a small decision over its variants, scored like items (a variant's key is
//! the hash of `template/slot/variant`, so it has its own learned bias and embedding, and the
//! user's personal weights apply) and placed by the configured exploration policy, so its
//! propensity is exact. **The interaction between slots** is in the features: a variant of a
//! later slot carries one hashed cross feature per earlier slot (`earlier choice × this
//! variant`), so the global weights learn which pairs go together and the user's weights
//! which pairs suit them; the placement keeps those features, so a reward trains exactly
//! what was scored. One decision is opened with one placement per slot.
//!
//! **Experiments.** A template decision falls in the user's experiment arm as a ranking does
//! (targeting applied, counted for the arm, its outcomes attributed to it), and each slot is
//! decided under the arm's policy: `nudge` as configured (an arm's ε and learning overrides
//! apply), `global` for a blank user, `popularity` by the variants' decayed popularity and
//! `control` the template's first variant of each slot (the registered order is the caller's
//! order); the last two greedily, with propensity 1.
//!
//! This file does not parse or render templates (`template`), and a template decision uses
//! no rules.

use std::sync::Arc;

use crate::actor::{Feature, UserActor};
use crate::api::{Context, ExperimentArm, LogRecord, LoggedPlacement, ScoreParts};
use crate::error::Error;
use crate::experiment::{ArmPolicy, Chosen, Earned};
use crate::ids::{DecisionId, UserId};
use crate::model::math::normalize;
use crate::model::policy;
use crate::model::{FeatureSpace, ItemFeatures, SparseVec};
use crate::persist::codec;
use crate::rng::Rng;
use crate::shard::learner::Learner;
use crate::shard::msg::{Reply, ValidCandidate, ValidReward};
use crate::shard::pending::{Missing, Open, Placed};
use crate::shard::worker::{self, Shard};
use crate::template::{feature_text, PlannedSlot, SlotPlan};

/// A template decision that passed validation.
#[derive(Clone, Debug)]
pub struct ValidTemplateDecide {
    /// The user.
    pub user: UserId,
    /// The user's experiment and arm, before targeting (`Chosen::targeted` when replayed).
    pub arm: Option<Chosen>,
    /// The slots and their variants (the template's version at the time of the request).
    pub plan: Arc<SlotPlan>,
    /// The hashed context, unscaled.
    pub context: SparseVec,
    /// The context as given, kept only when the decision log is on or an experiment's
    /// targeting may read it.
    pub raw_context: Option<Context>,
    /// Decision time (Unix ms).
    pub ts_ms: u64,
    /// Whether to explain each slot's scores.
    pub explain: bool,
    /// Whether the decision is opened for attribution and logged.
    pub track: bool,
    /// The live features the text reads (read at the decision's time, for rendering).
    pub reads: Arc<[Feature]>,
    /// Whether the text reads `top_category`.
    pub top_category: bool,
}

/// What a shard chose for a template decision, and read for rendering it.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateChosen {
    /// The decision (`UNTRACKED` for a preview).
    pub id: DecisionId,
    /// Per slot, the chosen variant.
    pub slots: Vec<ChosenSlot>,
    /// The features of `ValidTemplateDecide::reads`, as text.
    pub features: Vec<String>,
    /// The user's top category, when asked for and known.
    pub top_category: Option<String>,
    /// The experiment and arm the decision was made under, targeting applied.
    pub experiment: Option<ExperimentArm>,
}

/// One slot's choice.
#[derive(Clone, Debug, PartialEq)]
pub struct ChosenSlot {
    /// The variant's index in the slot.
    pub variant: usize,
    /// `σ(z)` of the variant.
    pub score: f32,
    /// The probability of the choice given the earlier slots'.
    pub propensity: f32,
    /// The score's parts, with `explain`.
    pub explain: Option<ScoreParts>,
}

/// A reward for every placement of a decision.
#[derive(Clone, Debug)]
pub struct ValidDecisionReward {
    /// The decision.
    pub decision: DecisionId,
    /// The reward in 0..=1.
    pub value: f32,
    /// Time of the reward (Unix ms).
    pub ts_ms: u64,
}

/// A variant as the log keeps it: its item id and attributes.
pub type LoggedVariant = (String, Vec<(String, String)>);

/// A template decision as the write-ahead log keeps it: the plan's ids and attributes, from
/// which a replay rebuilds the same features (`codec::decide_template`).
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedTemplateDecide {
    /// The user.
    pub user: UserId,
    /// The template's name and version.
    pub template: (String, u64),
    /// Per slot: its name, and its variants' item ids and attributes.
    pub slots: Vec<(String, Vec<LoggedVariant>)>,
    /// The hashed context, unscaled.
    pub context: SparseVec,
    /// Decision time (Unix ms).
    pub ts_ms: u64,
    /// Whether the decision explained its scores.
    pub explain: bool,
    /// Whether it was tracked.
    pub track: bool,
    /// The experiment's number and the arm's index it was made under, targeting applied.
    pub arm: Option<(u32, u16)>,
}

impl LoggedTemplateDecide {
    /// What the log keeps of `req`, decided under `arm`.
    pub fn of(req: &ValidTemplateDecide, arm: Option<(u32, u16)>) -> Self {
        let attrs = |c: &ValidCandidate| c.inline.as_ref().map_or(Vec::new(), |f| f.attrs.clone());
        LoggedTemplateDecide {
            user: req.user.clone(),
            template: (req.plan.template.clone(), req.plan.version),
            slots: (req.plan.slots.iter())
                .map(|s| {
                    let variants = s.variants.iter().map(|c| (c.id.clone(), attrs(c)));
                    (s.name.clone(), variants.collect())
                })
                .collect(),
            context: req.context.clone(),
            ts_ms: req.ts_ms,
            explain: req.explain,
            track: req.track,
            arm,
        }
    }

    /// The decision again, its features rebuilt in `space` (a pure function of ids and
    /// attributes, so they are the ones the logged run scored).
    pub fn rebuild(self, space: &FeatureSpace) -> Result<ValidTemplateDecide, Error> {
        let mut slots = Vec::with_capacity(self.slots.len());
        for (name, variants) in self.slots {
            let mut candidates = Vec::with_capacity(variants.len());
            for (id, attrs) in variants {
                let item = crate::ids::ItemId::from_string(id.clone())?;
                let features = space.item(item, attrs, None);
                candidates.push(ValidCandidate {
                    key: features.id.key(),
                    id,
                    inline: Some(Arc::new(features)),
                });
            }
            slots.push(PlannedSlot {
                name,
                variants: candidates,
            });
        }
        Ok(ValidTemplateDecide {
            // The replaying shard looks the logged arm up (`Shard::replay_template`).
            arm: None,
            user: self.user,
            plan: Arc::new(SlotPlan {
                template: self.template.0,
                version: self.template.1,
                slots,
            }),
            context: self.context,
            raw_context: None,
            ts_ms: self.ts_ms,
            explain: self.explain,
            track: self.track,
            reads: Arc::new([]),
            top_category: false,
        })
    }
}

/// A later slot's variant with its interaction features: one cross per earlier slot
/// (`earlier slot's chosen item id` × `this variant's item id`), hashed like attributes.
/// The same features `FeatureSpace::item` would build from the variant's attributes and the
/// crosses (its `φ` is the normalized sum of their buckets; a variant has no dense vector),
/// with the variant's initial embedding taken as is rather than drawn again. `None` for a
/// variant without features (plans always carry them: `template::plan`,
/// `LoggedTemplateDecide::rebuild`).
fn with_crosses(
    space: &FeatureSpace,
    variant: &ValidCandidate,
    earlier: &[&str],
) -> Option<Arc<ItemFeatures>> {
    let base = variant.inline.as_deref()?;
    let mut attrs = Vec::with_capacity(base.attrs.len() + earlier.len());
    attrs.extend_from_slice(&base.attrs);
    attrs.extend(
        earlier
            .iter()
            .map(|e| (format!("x:{e}"), variant.id.clone())),
    );
    let mut phi = vec![0.0f32; space.dim];
    for (k, v) in &attrs {
        for (i, sign) in space.buckets(k, v) {
            phi[i as usize] += sign;
        }
    }
    // Twice, as `FeatureSpace::item` does (the hashed part, then the sum with the zero dense
    // part), so that the features are the same to the bit.
    normalize(&mut phi);
    normalize(&mut phi);
    Some(Arc::new(ItemFeatures {
        id: base.id.clone(),
        attrs,
        vector: None,
        phi: phi.into_boxed_slice(),
        e0: base.e0.clone(),
    }))
}

/// The most frequent `category` among the user's recent items (newest first; a tie goes to
/// the most recent), from the catalog features the shard holds.
fn top_category(learner: &Learner, recent: &[u64]) -> Option<String> {
    let mut counts: Vec<(&str, usize)> = Vec::with_capacity(recent.len());
    for &key in recent {
        let items = &learner.global.items;
        let Some(features) = items.row(key).and_then(|row| items.features(row)) else {
            continue;
        };
        let Some((_, category)) = features.attrs.iter().find(|(k, _)| k == "category") else {
            continue;
        };
        match counts.iter_mut().find(|(c, _)| *c == category.as_str()) {
            Some((_, n)) => *n += 1,
            None => counts.push((category.as_str(), 1)),
        }
    }
    // `max_by_key` keeps the last of equals; the first seen is the most recent.
    let best = counts.iter().rev().max_by_key(|(_, n)| *n)?;
    Some(best.0.to_string())
}

/// Chooses one variant per slot of `req` for `user`, slot by slot, with the learner's query
/// already prepared for `user` and `context`. With `private`, the draw uses that stream and
/// no variant is admitted to the item table nor explained (a decision that must leave shared
/// state as it found it: `shard/consent.rs`); without, the shard's stream and the usual
/// admission. Each slot is decided under the experiment arm's `policy` (see the module's
/// comment). Returns each slot's choice and its placement.
pub(super) fn choose_slots(
    learner: &mut Learner,
    user: &UserActor,
    context: &SparseVec,
    req: &ValidTemplateDecide,
    policy: ArmPolicy,
    mut private: Option<&mut Rng>,
) -> Result<(Vec<ChosenSlot>, Vec<Placed>), Error> {
    let cfg = learner.cfg.clone();
    let exploration = worker::arm_exploration(&cfg.exploration, policy);
    let exploration = exploration.as_ref().unwrap_or(&cfg.exploration);
    let slots = &req.plan.slots;
    let mut chosen: Vec<ChosenSlot> = Vec::with_capacity(slots.len());
    let mut placed: Vec<Placed> = Vec::with_capacity(slots.len());
    let mut logits = Vec::new();
    for (s, slot) in slots.iter().enumerate() {
        let earlier: Vec<&str> = (placed.iter()).map(|p| p.id.as_str()).collect();
        let features: Vec<Option<Arc<ItemFeatures>>> = match s {
            0 => slot.variants.iter().map(|v| v.inline.clone()).collect(),
            _ => (slot.variants.iter())
                .map(|v| with_crosses(&learner.space, v, &earlier))
                .collect(),
        };
        let candidates = slot.variants.iter().zip(&features);
        let candidates = candidates.map(|(v, f)| (v.key, f.as_ref()));
        match (policy, &private) {
            (ArmPolicy::Popularity, _) => {
                let keys = slot.variants.iter().map(|v| v.key);
                learner.popularity_logits(keys, req.ts_ms, &mut logits);
            }
            (ArmPolicy::Control, _) => {
                logits.clear();
                logits.extend((0..slot.variants.len()).map(|i| -(i as f32)));
            }
            (_, Some(_)) => learner.logits_known(candidates, &mut logits),
            (_, None) => learner.logits(candidates, &mut logits),
        }
        let rng = match private.as_deref_mut() {
            Some(rng) => rng,
            None => &mut learner.rng,
        };
        let Some(pick) = policy::place(exploration, &logits, 1, rng).pop() else {
            // Registration refuses a slot without variants; a damaged log record that
            // has one gets this error at replay, not a panic.
            return Err(Error::Internal(format!(
                "slot `{}` has no variants",
                slot.name
            )));
        };
        let variant = &slot.variants[pick.index];
        let inline = features[pick.index].clone();
        let explain = (req.explain && private.is_none())
            .then(|| learner.explain(user, context, variant.key, inline.as_ref()));
        chosen.push(ChosenSlot {
            variant: pick.index,
            score: Learner::probability(logits[pick.index]),
            propensity: pick.propensity,
            explain,
        });
        placed.push(Placed {
            key: variant.key,
            id: variant.id.clone(),
            inline,
            propensity: pick.propensity,
            reward: None,
            trained_ignored: false,
            explicitly_rewarded: false,
        });
    }
    Ok((chosen, placed))
}

/// What the template's text reads of `user` at the decision's time: the features it names,
/// as text, and the top category when it reads it.
pub(super) fn read_for_text(
    learner: &Learner,
    user: &UserActor,
    req: &ValidTemplateDecide,
) -> (Vec<String>, Option<String>) {
    let view = user.features_at(&learner.cfg, req.ts_ms, None);
    let features = (req.reads.iter())
        .map(|f| feature_text(&view.get(*f).to_owned_value()))
        .collect();
    let top_category = req
        .top_category
        .then(|| top_category(learner, user.recent.as_slice()))
        .flatten();
    (features, top_category)
}

impl Shard {
    /// `Msg::DecideTemplate`: logs the input, decides, replies (never waiting for the disk).
    pub(super) fn decide_template(
        &mut self,
        req: ValidTemplateDecide,
        reply: Reply<Result<TemplateChosen, Error>>,
    ) {
        if let Some(private) = self.template_under_consent(&req) {
            // Limited consent: a preview, logged nowhere, as a ranking decision's is.
            return reply.send(private);
        }
        if let Some(refused) = self.refuse_for_room(req.user.key()) {
            return reply.send(Err(refused));
        }
        let user = req.user.key();
        self.decided_arm = None;
        let chosen = self.guarded(Some(user), |shard| shard.on_decide_template(&req));
        // Logged once decided, with the arm targeting left it (as a ranking's record is).
        let arm = self.decided_arm.take();
        if let Some(wal) = &mut self.wal {
            let logged = LoggedTemplateDecide::of(&req, arm);
            wal.record(|out| codec::decide_template(out, &logged), true);
        }
        // A decision's reply never waits for the disk.
        reply.send(chosen)
    }

    /// Replays a logged template decision, under the arm it was made under.
    pub(super) fn replay_template(&mut self, logged: LoggedTemplateDecide) {
        let arm = logged.arm;
        if let Ok(mut req) = logged.rebuild(&self.learner.space) {
            req.arm = arm.and_then(|(id, arm)| self.experiments.replayed(id, arm));
            let user = req.user.key();
            let _ = self.guarded(Some(user), |shard| shard.on_decide_template(&req));
        }
    }

    /// Chooses one variant per slot and opens the decision with one placement per slot.
    pub(super) fn on_decide_template(
        &mut self,
        req: &ValidTemplateDecide,
    ) -> Result<TemplateChosen, Error> {
        self.advance_to(req.ts_ms);
        let cfg = self.learner.cfg.clone();
        let user = self
            .users
            .get_or_insert(&req.user, req.ts_ms, cfg.model.dim)?;
        user.tuning = self.experiments.tuning(req.user.as_str(), user.exposed_to);
        user.advance(req.ts_ms, &cfg.model);
        user.signals.advance(req.ts_ms, &cfg.hygiene);
        user.decisions += 1;
        let items = &self.learner.global.items;
        let slot = self.segments.as_mut().and_then(|s| s.slot(user, items));
        let segment = (self.segments.as_ref()).and_then(|s| slot.map(|i| s.label_of(i)));
        let in_segment = segment.as_ref().map(|l| (l.id, l.name.as_deref()));
        let raw = req.raw_context.as_deref().unwrap_or(&[]);
        let arm = worker::targeted(req.arm.clone(), &cfg, user, req.ts_ms, in_segment, raw);
        self.decided_arm = arm.as_ref().map(|c| (c.experiment.id, c.arm));
        let experiment = arm.as_ref().map(|c| c.reply());
        user.features
            .set_arm(experiment.as_ref().map(|a| (&*a.experiment, &*a.arm)));
        let policy = (arm.as_ref()).map_or(ArmPolicy::Nudge { epsilon: None }, |c| c.policy());
        // The `global` arm scores for a user the engine knows nothing about.
        let blank = (policy == ArmPolicy::Global)
            .then(|| UserActor::new(req.user.clone(), req.ts_ms, cfg.model.dim));
        let scored = blank.as_ref().unwrap_or(user);
        let context = self.learner.full_context(&req.context, scored);
        self.learner.prepare_query(scored, &context, req.ts_ms);
        let learner = &mut self.learner;
        let (chosen, placed) = choose_slots(learner, scored, &context, req, policy, None)?;
        self.stats.decisions_total += 1;
        let (features, top_category) = read_for_text(&self.learner, user, req);
        let mut answer = TemplateChosen {
            id: DecisionId::UNTRACKED,
            slots: chosen,
            features,
            top_category,
            experiment,
        };
        if !req.track {
            // A preview: chosen like any decision, but nothing is opened, logged or learned.
            self.settle_evictions();
            return Ok(answer);
        }
        let open = Open {
            user_key: user.id.key(),
            created_ms: req.ts_ms,
            expires_ms: req.ts_ms + cfg.attribution.window_s * 1000,
            ignored_at_ms: req.ts_ms + cfg.attribution.ignored_after_s * 1000,
            context,
            placements: placed,
            arm: arm.as_ref().map(|c| (c.tag(), Earned::default())),
        };
        if let Some(c) = &arm {
            worker::expose(&mut self.tallies, user, c.tag(), c.policy());
        }
        let max_open = cfg.attribution.max_open_per_user;
        let (id, closing) = self.pending.open_for(&mut user.open, open, max_open);
        answer.id = id;
        self.log_template_decision(req, &answer);
        self.close_early(closing, req.ts_ms);
        self.settle_evictions();
        Ok(answer)
    }

    /// Writes a template decision to the decision log: its candidates are every slot's
    /// variants, its placements one per slot (with the slot's propensity), and its context
    /// names the template and version.
    fn log_template_decision(&self, req: &ValidTemplateDecide, answer: &TemplateChosen) {
        let (Some(log), Some(raw)) = (&self.log, &req.raw_context) else {
            return;
        };
        let plan = &req.plan;
        let mut context = raw.clone();
        context.push(("template".into(), plan.template.clone()));
        context.push(("template_version".into(), plan.version.to_string()));
        let candidates = plan.slots.iter().flat_map(|s| s.variants.iter());
        let placements = (plan.slots.iter().zip(&answer.slots)).map(|(slot, c)| LoggedPlacement {
            item: slot.variants[c.variant].id.clone(),
            score: c.score,
            propensity: c.propensity,
        });
        log.record(LogRecord::Decision {
            ts_ms: req.ts_ms,
            decision: answer.id,
            user: req.user.as_str().to_string(),
            context,
            candidates: candidates.map(|c| c.id.clone()).collect(),
            placements: placements.collect(),
            config_version: self.config_version,
            experiment: answer.experiment.clone(),
        });
    }

    /// `Msg::RewardDecision`: an explicit reward for every placement of the decision, each
    /// logged and applied as its own `Reward` (so a replay needs nothing new). Replies how
    /// many placements took it, or the first error when none did.
    pub(super) fn reward_decision(
        &mut self,
        r: ValidDecisionReward,
        reply: Reply<Result<u32, Error>>,
    ) {
        // Read, not changed: each placement's reward changes it (and marks it for the next
        // checkpoint) on its own.
        let Some(open) = self.pending.get(r.decision.0) else {
            let missing = match self.pending.get_mut(r.decision) {
                Err(Missing::Closed) => Error::ExpiredDecision(r.decision),
                _ => Error::UnknownDecision(r.decision),
            };
            return reply.send(Err(missing));
        };
        let user = open.user_key;
        let placements: Vec<(u64, String)> = (open.placements.iter())
            .map(|p| (p.key, p.id.clone()))
            .collect();
        if let Some(refused) = self.refuse_for_room(user) {
            return reply.send(Err(refused));
        }
        let mut taken = 0u32;
        let mut first_error = None;
        for (item_key, item) in placements {
            let one = ValidReward {
                decision: r.decision,
                item_key,
                item,
                value: r.value,
                ts_ms: r.ts_ms,
            };
            self.log_input(|out| codec::reward(out, &one));
            match self.guarded_reward(one) {
                Ok(()) => taken += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let result = match (taken, first_error) {
            (0, Some(e)) => Err(e),
            _ => Ok(taken),
        };
        self.ack(reply, result, |e, _| Err(e.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crosses_are_what_feature_space_item_builds() {
        let space = FeatureSpace {
            dim: 32,
            item_embedding_init: 0.1,
        };
        let id = crate::ids::ItemId::new("t/b/b1").unwrap();
        let base = space.item(id.clone(), vec![("tone".into(), "warm".into())], None);
        let variant = ValidCandidate {
            key: id.key(),
            id: "t/b/b1".into(),
            inline: Some(Arc::new(base)),
        };
        let crossed = with_crosses(&space, &variant, &["t/a/a2"]).unwrap();
        let attrs = crossed.attrs.clone();
        assert_eq!(attrs[1], ("x:t/a/a2".to_string(), "t/b/b1".to_string()));
        assert_eq!(*crossed, space.item(id, attrs, None));
    }
}
