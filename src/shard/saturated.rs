//! The shard's hook into saturation control (issue 15): judge a decision's candidates against
//! the user's exposures before placement, remember what a tracked decision placed, and keep
//! the memory up to date from plain events and rewards. The controls live in `saturation`.

use crate::actor::UserActor;
use crate::api::{EventKind, SaturationEffect};
use crate::model::policy::Slot;
use crate::model::reward::popularity_counts;
use crate::rules::{Applied, Candidates};
use crate::saturation::{self, SaturationConfig};
use crate::shard::learner::Learner;
use crate::shard::msg::{ValidDecide, ValidEvent};
use crate::shard::ruled;

/// The controls a decision runs under: its own, else the engine's.
fn controls<'a>(learner: &'a Learner, req: &'a ValidDecide) -> &'a SaturationConfig {
    req.saturation.as_deref().unwrap_or(&learner.cfg.saturation)
}

/// Judges the decision's candidates and adds the outcome to its placement (`placement` is the
/// rules' outcome, created when there are no rules). Returns the explained effects.
pub(super) fn judge(
    learner: &Learner,
    user: &UserActor,
    req: &ValidDecide,
    logits: &[f32],
    placement: &mut Option<Applied>,
) -> Vec<SaturationEffect> {
    let cfg = controls(learner, req);
    if cfg.is_off() {
        return Vec::new();
    }
    let candidates = ruled::candidates(learner, req);
    let seen = user.exposures.as_deref();
    let mut judged = saturation::judge(cfg, seen, &candidates, req.ts_ms, req.explain);
    placement
        .get_or_insert_with(Applied::default)
        .saturate(&mut judged, logits);
    judged.effects
}

/// After placement: explains what diversity did and, for a tracked decision, remembers the
/// placed items (and their capped attributes' values) as shown at the decision's time.
pub(super) fn placed(
    learner: &Learner,
    user: &mut UserActor,
    req: &ValidDecide,
    slots: &[Slot],
    effects: &mut Vec<SaturationEffect>,
) {
    let cfg = controls(learner, req);
    if cfg.is_off() {
        return;
    }
    let candidates = ruled::candidates(learner, req);
    if req.explain {
        let placed = slots.iter().map(|s| s.index);
        effects.extend(saturation::diversity_effects(cfg, &candidates, placed));
    }
    if req.track && cfg.remembers() {
        let seen = user.exposures.get_or_insert_with(Default::default);
        for slot in slots {
            let item = candidates.item(slot.index);
            let key = candidates.item_key(slot.index);
            saturation::record(seen, cfg, key, item.attrs, req.ts_ms);
        }
    }
}

/// A plain event: an impression that names no decision was shown (a decision's placements
/// were remembered when it was made); an engagement with the item ends its fatigue.
pub(super) fn on_event(learner: &Learner, user: &mut UserActor, ev: &ValidEvent, key: u64) {
    let cfg = &learner.cfg.saturation;
    if !cfg.remembers() {
        return;
    }
    if ev.kind == EventKind::Impression && ev.decision.is_none() {
        let items = &learner.global.items;
        let features = items.row(key).and_then(|r| items.features(r));
        let attrs = features.map_or(&[][..], |f| &f.attrs[..]);
        let seen = user.exposures.get_or_insert_with(Default::default);
        saturation::record(seen, cfg, key, attrs, ev.ts_ms);
    } else if popularity_counts(&learner.cfg.reward, ev.kind, ev.value) {
        engaged(user, key);
    }
}

/// The user engaged with item `key` (an outcome event, or a positive reward).
pub(super) fn engaged(user: &mut UserActor, key: u64) {
    if let Some(seen) = &mut user.exposures {
        seen.engaged(key);
    }
}
