//! A template decision as asked (`TemplateRequest`) and as answered (`TemplateDecision`):
//! plain data for the embedded API; the wire reads and writes them (`wire/template.rs`).

use crate::api::{Context, ScoreParts};
use crate::ids::DecisionId;

/// A template decision as asked: the user, the template by name, and what the text may read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TemplateRequest {
    /// The user.
    pub user: String,
    /// The template's name (its current version is used).
    pub template: String,
    /// The context: scored like a decision's, and `{{ctx.<key>}}` in the text.
    pub context: Context,
    /// Values for the names the template declares (`{{first_name}}`).
    pub values: Vec<(String, String)>,
    /// Decision time (Unix ms); `None`: now.
    pub ts_ms: Option<u64>,
    /// Whether to explain each slot's scores.
    pub explain: bool,
    /// Whether the decision is opened for attribution (and logged); `false`: a preview.
    pub track: bool,
}

impl TemplateRequest {
    /// A tracked request for `user` over the current version of `template`.
    pub fn new(user: impl Into<String>, template: impl Into<String>) -> Self {
        TemplateRequest {
            user: user.into(),
            template: template.into(),
            track: true,
            ..TemplateRequest::default()
        }
    }

    /// Adds a context pair.
    pub fn context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.push((key.into(), value.into()));
        self
    }

    /// Adds a value.
    pub fn value(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.values.push((key.into(), value.into()));
        self
    }

    /// Decides at `ts_ms`.
    pub fn at(mut self, ts_ms: u64) -> Self {
        self.ts_ms = Some(ts_ms);
        self
    }

    /// Explains each slot's scores.
    pub fn explain(mut self, on: bool) -> Self {
        self.explain = on;
        self
    }

    /// Opens the decision for attribution (`true`, the default) or only previews it.
    pub fn track(mut self, on: bool) -> Self {
        self.track = on;
        self
    }
}

/// The answer to a template decision.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateDecision {
    /// The decision (`UNTRACKED` for a preview); a reward on it trains every slot.
    pub id: DecisionId,
    /// The experiment and arm the decision was made under, if any (`docs/experiments.md`).
    pub experiment: Option<crate::api::ExperimentArm>,
    /// The template's name.
    pub template: String,
    /// The version decided over.
    pub version: u64,
    /// One choice per slot, in the template's order.
    pub slots: Vec<SlotChoice>,
    /// The probability of the whole choice: the product of the slots' propensities.
    pub propensity: f64,
    /// The rendered text.
    pub rendered: String,
}

/// One slot's choice.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotChoice {
    /// The slot.
    pub slot: String,
    /// The chosen variant's id.
    pub variant: String,
    /// The variant's learned item id (`template/slot/variant`): a reward or event may name it.
    pub item: String,
    /// The model's `σ(z)` for the variant, given the earlier slots' choices.
    pub score: f32,
    /// The probability the policy chose this variant, given the earlier slots' choices.
    pub propensity: f32,
    /// The score's parts, with `explain`.
    pub explain: Option<ScoreParts>,
}
