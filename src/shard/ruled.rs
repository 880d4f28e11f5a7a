//! The shard's hook into rules (issue 14): a decision's candidates as rules read them (catalog
//! attributes from the shard's item table, inline ones from the request), and the call that
//! applies a rule set to one decision. The rules themselves live in `rules`.

use crate::actor::UserActor;
use crate::api::ExperimentArm;
use crate::model::items::ItemTable;
use crate::rules::expr::ItemView;
use crate::rules::{Applied, Candidates, DecisionView, ItemMatches, RuleSet};
use crate::shard::learner::Learner;
use crate::shard::msg::ValidDecide;

/// A decision's candidates with their attributes.
struct Ruled<'a> {
    req: &'a ValidDecide,
    items: &'a ItemTable,
}

impl Candidates for Ruled<'_> {
    fn len(&self) -> usize {
        self.req.candidates.len()
    }

    fn item(&self, i: usize) -> ItemView<'_> {
        let c = &self.req.candidates[i];
        let features = match &c.inline {
            Some(f) => Some(f),
            None => self.items.row(c.key).and_then(|r| self.items.features(r)),
        };
        ItemView {
            id: &c.id,
            attrs: features.map_or(&[][..], |f| &f.attrs[..]),
        }
    }

    fn key(&self, i: usize) -> Option<u64> {
        let c = &self.req.candidates[i];
        c.inline.is_none().then_some(c.key)
    }

    fn item_key(&self, i: usize) -> u64 {
        self.req.candidates[i].key
    }
}

/// A decision's candidates as rules and saturation control read them.
pub(super) fn candidates<'a>(learner: &'a Learner, req: &'a ValidDecide) -> impl Candidates + 'a {
    Ruled {
        req,
        items: &learner.global.items,
    }
}

/// Applies `rules` to the decision `req` for `user` (whose features are decayed to the
/// decision's time) in `segment`, given the model's `logits`.
pub(super) fn apply(
    rules: &RuleSet,
    learner: &Learner,
    (user, segment): (&UserActor, Option<(u32, Option<&str>)>),
    req: &ValidDecide,
    arm: Option<&ExperimentArm>,
    logits: &[f32],
    remembered: &mut ItemMatches,
) -> Applied {
    let (cfg, items) = (&learner.cfg, &learner.global.items);
    let decision = DecisionView {
        user: user.features_at(cfg, req.ts_ms, segment),
        ctx: req.raw_context.as_deref().unwrap_or(&[]),
        arm: arm.map(|a| (&*a.experiment, &*a.arm)),
        explain: req.explain,
    };
    rules.apply(&decision, &Ruled { req, items }, logits, remembered)
}
