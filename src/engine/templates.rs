//! The engine's template API (issue 15, `docs/templates.md`): register, list, roll back, and
//! decide over a template; reward a whole decision.
//!
//! A template decision is validated here (the user, the context, the time), takes the
//! template's current version (one `Arc` clone under the registry's read lock), and goes to
//! the user's shard as one `Msg::DecideTemplate`; the shard chooses and reads the user's
//! features, and the text is rendered here, on the caller's thread, once the shard replies.

use std::sync::Arc;

use super::{definitions, validate, Engine, Pending};
use crate::error::{Error, Problem};
use crate::ids::{DecisionId, UserId};
use crate::persist::definitions::{Definition, Source};
use crate::shard::msg::Msg;
use crate::shard::templated::{TemplateChosen, ValidDecisionReward, ValidTemplateDecide};
use crate::template::{
    RenderValues, RollbackError, SlotChoice, Template, TemplateDecision, TemplateRequest,
    TemplateSpec, TemplateVersions, MAX_TEXT_BYTES,
};

fn rollback_refused(name: &str, e: RollbackError) -> Error {
    match e {
        RollbackError::NoTemplate => no_template(name),
        RollbackError::NoVersion { latest } => Error::invalid(
            "version",
            Problem::OutOfRange {
                min: 1.0,
                max: latest as f64,
            },
        ),
    }
}

fn no_template(name: &str) -> Error {
    Error::invalid(
        "template",
        Problem::Rejected(format!("no template `{name}`")),
    )
}

/// A template decision on its way: the version it took, the request's values for rendering,
/// and the shard's reply.
struct InFlight {
    template: Arc<Template>,
    context: crate::api::Context,
    values: Vec<Option<String>>,
}

impl InFlight {
    fn finish(self, chosen: TemplateChosen) -> TemplateDecision {
        let t = &self.template;
        let indices: Vec<usize> = chosen.slots.iter().map(|c| c.variant).collect();
        let rendered = t.render(
            &indices,
            &RenderValues {
                features: &chosen.features,
                top_category: chosen.top_category.as_deref(),
                context: &self.context,
                values: &self.values,
            },
        );
        let propensity = chosen
            .slots
            .iter()
            .map(|c| f64::from(c.propensity))
            .product();
        let spec = t.spec();
        let slots = (spec.slots.iter().zip(&t.plan().slots).zip(chosen.slots))
            .map(|((slot, planned), c)| SlotChoice {
                slot: slot.name.clone(),
                variant: slot.variants[c.variant].id.clone(),
                item: planned.variants[c.variant].id.clone(),
                score: c.score,
                propensity: c.propensity,
                explain: c.explain,
            })
            .collect();
        TemplateDecision {
            id: chosen.id,
            experiment: chosen.experiment,
            template: t.name().to_string(),
            version: t.version(),
            slots,
            propensity,
            rendered,
        }
    }
}

impl Engine {
    /// Checks `spec` and makes it the current version of its template; returns the version
    /// (1 for a new name). A refused template (`invalid`, field `template`, the message naming
    /// the field of the spec and, in a text, the line, column and byte) changes nothing.
    /// With a data directory the version is stored (fsynced) before it is current, and every
    /// version comes back after a restart (`docs/templates.md`); one that cannot be stored is
    /// refused (`unavailable`).
    pub fn register_template(&self, spec: TemplateSpec) -> Result<u64, Error> {
        let mut log = self.inner.definitions.lock();
        let template = (self.inner.templates)
            .prepare(spec, &self.inner.space)
            .map_err(|e| Error::invalid("template", Problem::Rejected(e.to_string())))?;
        let record = definitions::template_record(&template, Source::Api);
        definitions::store(&mut log, &record)?;
        let version = template.version();
        self.inner.templates.install(template);
        Ok(version)
    }

    /// The current version of template `name`.
    pub fn template(&self, name: &str) -> Option<Arc<Template>> {
        self.inner.templates.current(name)
    }

    /// Every version of template `name`, and which is current.
    pub fn template_versions(&self, name: &str) -> Result<TemplateVersions, Error> {
        (self.inner.templates.versions(name)).ok_or_else(|| no_template(name))
    }

    /// Every template's current version, by name.
    pub fn templates(&self) -> Vec<Arc<Template>> {
        self.inner.templates.list()
    }

    /// Makes `version` of template `name` current again; the next decision uses it. Stored
    /// first with a data directory, as a registration is.
    pub fn rollback_template(&self, name: &str, version: u64) -> Result<(), Error> {
        let mut log = self.inner.definitions.lock();
        let templates = &self.inner.templates;
        let refused = |e| rollback_refused(name, e);
        templates.check_rollback(name, version).map_err(refused)?;
        let record = Definition::TemplateRolledBack {
            name: name.to_string(),
            version,
        };
        definitions::store(&mut log, &record)?;
        // Checked above, under the lock every rollback and registration takes.
        templates.rollback(name, version).map_err(refused)
    }

    #[allow(clippy::type_complexity)]
    fn submit_template(
        &self,
        req: TemplateRequest,
    ) -> Result<(InFlight, Pending<Result<TemplateChosen, Error>>), Error> {
        let inner = &self.inner;
        let user = UserId::new(&req.user)?;
        let template = self
            .template(&req.template)
            .ok_or_else(|| no_template(&req.template))?;
        let context = validate::context(&inner.cfg, &inner.space, &req.context)?;
        let ts_ms = validate::timestamp(&inner.cfg, req.ts_ms, inner.clock.now_ms())?;
        let declared = &template.spec().values;
        let mut values = vec![None; declared.len()];
        for (k, v) in req.values {
            if v.len() > MAX_TEXT_BYTES {
                let max = MAX_TEXT_BYTES;
                return Err(Error::invalid("values", Problem::TooLong { max }));
            }
            // A value the template does not declare is not read; it is not an error.
            if let Some(i) = declared.iter().position(|d| *d == k) {
                values[i] = Some(v);
            }
        }
        // The decision log and experiments' targeting conditions read the context as given.
        let keep_context = inner.logging || inner.experiments.any_target();
        let valid = ValidTemplateDecide {
            arm: inner.experiments.assign(user.as_str()),
            user,
            plan: template.plan().clone(),
            context,
            raw_context: keep_context.then(|| req.context.clone()),
            ts_ms,
            explain: req.explain,
            track: req.track,
            reads: template.reads().clone(),
            top_category: template.reads_top_category(),
        };
        let shard = self.shard_of(&valid.user);
        let chosen = self.submit(shard, |r| Msg::DecideTemplate(valid, r));
        let flight = InFlight {
            template,
            context: req.context,
            values,
        };
        Ok((flight, chosen))
    }

    /// Chooses one variant per slot of the template's current version for the user, opens
    /// the decision for attribution (one placement per slot), and renders the text.
    pub fn decide_template(&self, req: TemplateRequest) -> Result<TemplateDecision, Error> {
        let (flight, chosen) = self.submit_template(req)?;
        Ok(flight.finish(chosen.wait()??))
    }

    /// `decide_template`, as a future.
    pub async fn decide_template_async(
        &self,
        req: TemplateRequest,
    ) -> Result<TemplateDecision, Error> {
        let (flight, chosen) = self.submit_template(req)?;
        Ok(flight.finish(chosen.await??))
    }

    fn submit_reward_decision(
        &self,
        decision: DecisionId,
        value: f64,
        ts_ms: Option<u64>,
    ) -> Pending<Result<u32, Error>> {
        let shard = decision.shard();
        if shard.0 as usize >= self.shard_count() {
            return Pending::failed(Error::UnknownDecision(decision));
        }
        let now_ms = self.inner.clock.now_ms();
        // Checked as a reward on one item is; the item is every placement's.
        let valid = validate::timestamp(&self.inner.cfg, ts_ms, now_ms)
            .and_then(|ts_ms| validate::reward(decision, "-", value, ts_ms));
        match valid {
            Ok(r) => {
                let r = ValidDecisionReward {
                    decision,
                    value: r.value,
                    ts_ms: r.ts_ms,
                };
                self.submit(shard, |tx| Msg::RewardDecision(r, tx))
            }
            Err(e) => Pending::failed(e),
        }
    }

    /// Attributes an explicit reward (0..=1) to every placement of an open decision (every
    /// slot of a template decision) and learns from each; returns how many took it. Fails
    /// only when none did (with the first placement's error).
    pub fn reward_decision(&self, decision: DecisionId, value: f64) -> Result<u32, Error> {
        self.reward_decision_at(decision, value, None)
    }

    /// `reward_decision` at time `ts_ms` (Unix ms; `None`: now).
    pub fn reward_decision_at(
        &self,
        decision: DecisionId,
        value: f64,
        ts_ms: Option<u64>,
    ) -> Result<u32, Error> {
        self.submit_reward_decision(decision, value, ts_ms).wait()?
    }

    /// `reward_decision_at`, as a future.
    pub async fn reward_decision_async(
        &self,
        decision: DecisionId,
        value: f64,
        ts_ms: Option<u64>,
    ) -> Result<u32, Error> {
        self.submit_reward_decision(decision, value, ts_ms).await?
    }
}
