//! The shard's side of consent (issue 15; the rules are in `crate::consent`): the consent of
//! each user who said something other than the default (by key, never by id), the users kept
//! in memory only because they denied storage, and the paths their requests take instead of
//! the usual ones. Nothing on these paths is logged or touches the shared model, so replay of
//! the log stays exact without them.

use serde::{Deserialize, Serialize};

use crate::actor::UserActor;
use std::sync::Arc;

use crate::api::{Ack, Decision, Placement, UpdateCause, UserUpdate};
use crate::consent::{Consent, ConsentConfig};
use crate::error::Error;
use crate::ids::{DecisionId, UserId};
use crate::model::global::KeyMap;
use crate::model::policy;
use crate::model::reward::state_signal;
use crate::rng::Rng;
use crate::rules::ItemMatches;
use crate::shard::learner::Learner;
use crate::shard::msg::{ValidDecide, ValidEvent};
use crate::shard::ruled;
use crate::shard::seen::SeenEvents;
use crate::shard::templated::{self, TemplateChosen, ValidTemplateDecide};
use crate::shard::worker::Shard;

/// Consents and memory-only users of one shard.
#[derive(Debug)]
pub struct Consents {
    default: Consent,
    /// Users whose consent is not the default: key → `Consent::bits`. Checkpointed.
    changed: ChangedConsents,
    /// Users who denied storage (and allowed personalization): never logged, stored or
    /// parked; forgotten on restart and past `max_memory_only`.
    memory_only: KeyMap<UserActor>,
    max_memory_only: usize,
    /// The event ids memory-only users' events carried (idempotency, as `Shard::seen` is for
    /// everyone else's), kept apart so that nothing derived from their events is checkpointed.
    memory_only_seen: SeenEvents,
}

/// The checkpointed part: who said what.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChangedConsents(KeyMap<u8>);

impl Consents {
    /// No consent given yet, under `cfg`'s defaults; memory-only users' event ids are
    /// remembered as `seen` remembers everyone else's.
    pub fn new(cfg: &ConsentConfig, seen: SeenEvents) -> Self {
        Consents {
            default: cfg.default_consent(),
            changed: ChangedConsents::default(),
            memory_only: KeyMap::default(),
            max_memory_only: cfg.max_memory_only_users,
            memory_only_seen: seen,
        }
    }

    /// The consent of the user with `key`.
    pub fn of(&self, key: u64) -> Consent {
        self.changed
            .0
            .get(&key)
            .map_or(self.default, |&b| Consent::from_bits(b))
    }

    /// A copy of who said what, for a checkpoint.
    pub fn changed(&self) -> ChangedConsents {
        self.changed.clone()
    }

    /// Takes who said what from a checkpoint.
    pub fn adopt(&mut self, changed: ChangedConsents) {
        self.changed = changed;
    }

    /// Users kept in memory only.
    pub fn memory_only_len(&self) -> usize {
        self.memory_only.len()
    }

    /// The memory-only actor of the user with `key`, if they have one.
    pub fn memory_only(&self, key: u64) -> Option<&UserActor> {
        self.memory_only.get(&key)
    }

    /// `memory_only`, to change.
    pub fn memory_only_mut(&mut self, key: u64) -> Option<&mut UserActor> {
        self.memory_only.get_mut(&key)
    }

    /// Forgets the memory-only state of `key`; whether there was any.
    pub fn forget(&mut self, key: u64) -> bool {
        self.memory_only.remove(&key).is_some()
    }

    /// The memory-only actor of `user`, created at `ts_ms` if new (forgetting the least
    /// recently active eighth first when the shard holds its most).
    fn memory_only_user(&mut self, user: &UserId, ts_ms: u64, dim: usize) -> &mut UserActor {
        let key = user.key();
        if !self.memory_only.contains_key(&key) && self.memory_only.len() >= self.max_memory_only {
            let mut last: Vec<(u64, u64)> = self
                .memory_only
                .iter()
                .map(|(k, u)| (u.last_ms, *k))
                .collect();
            last.sort_unstable();
            for (_, k) in &last[..last.len().div_ceil(8)] {
                self.memory_only.remove(k);
            }
        }
        self.memory_only
            .entry(key)
            .or_insert_with(|| UserActor::new(user.clone(), ts_ms, dim))
    }
}

impl Shard {
    /// Records a user's consent. Anything short of full consent erases what the engine holds
    /// of them (memory, open decisions, and the store at the next checkpoint); any change
    /// forgets their memory-only state. Returns whether something was erased.
    pub(super) fn on_consent(&mut self, key: u64, consent: Consent) -> bool {
        let consents = &mut self.consents;
        match consent == consents.default {
            true => consents.changed.0.remove(&key),
            false => consents.changed.0.insert(key, consent.bits()),
        };
        let mut erased = self.consents.forget(key);
        if !consent.is_full() {
            erased |= self.erase_key(key);
        }
        erased
    }

    /// An event whose user's consent takes it off the usual path: withheld (personalization
    /// denied) or applied to the memory-only user (storage denied). `None`: the usual path.
    pub(super) fn event_under_consent(&mut self, ev: &ValidEvent) -> Option<Result<Ack, Error>> {
        let consent = self.consents.of(ev.user.key());
        if consent.is_full() {
            return None;
        }
        if !consent.personalization {
            return Some(Ok(Ack {
                withheld: true,
                ..Ack::default()
            }));
        }
        let key = ev.user.key();
        Some(self.guarded(Some(key), |shard| Ok(shard.on_memory_only_event(ev))))
    }

    /// Applies `ev` to its memory-only user: their state vector and live features move (the
    /// shared model does not: it is durable), their triggers are checked and delivered, and
    /// their subscribers get the usual update.
    fn on_memory_only_event(&mut self, ev: &ValidEvent) -> Ack {
        if let Some(id) = ev.event_id {
            let seen = &mut self.consents.memory_only_seen;
            seen.expire(ev.ts_ms.max(self.event_ms));
            if !seen.first_time(id, ev.ts_ms) {
                self.stats.duplicates_total += 1;
                return Ack {
                    duplicate: true,
                    ..Ack::default()
                };
            }
        }
        let cfg = &*self.learner.cfg;
        let dim = self.learner.space.dim;
        let user = self.consents.memory_only_user(&ev.user, ev.ts_ms, dim);
        user.advance(ev.ts_ms, &cfg.model);
        user.signals.advance(ev.ts_ms, &cfg.hygiene);
        user.events_by_kind[ev.kind as usize] += 1;
        let outlier = user.signals.observe(ev.kind, ev.value, &cfg.hygiene);
        let (facts, idle_s) = (ev.facts.as_deref(), cfg.features.session_idle_s);
        user.features
            .observe(ev.kind, ev.value, ev.ts_ms, facts, idle_s);
        // The state moves; nothing is trained (the shared model is durable).
        let rho = state_signal(&cfg.state_signal, ev.kind, ev.value);
        let items = &self.learner.global.items;
        let row = ev.item.as_ref().and_then(|(key, _)| items.row(*key));
        if let (false, Some(row), true) = (outlier, row, rho != 0.0) {
            user.add_signal(
                rho,
                items.x(row),
                ev.ts_ms,
                user.state_half_life_s(&cfg.model),
            );
        }
        let triggers = self.check_memory_only_triggers(ev);
        if self.subscriptions.watched(ev.user.key()) {
            self.push_memory_only_update(ev, &triggers);
        }
        Ack {
            outlier,
            triggers,
            ..Ack::default()
        }
    }

    /// The `user_update` of a memory-only user's subscribers after `ev`, ranked without
    /// admitting any candidate to the item table.
    fn push_memory_only_update(&mut self, ev: &ValidEvent, triggers: &[Arc<str>]) {
        let Some(user) = self.consents.memory_only.get_mut(&ev.user.key()) else {
            return;
        };
        let dropped = user.signals.engagement_dropped_since_push();
        let user = &*user;
        let summary = user.signals.summary(&self.learner.cfg.hygiene);
        let updates = (self.subscriptions).rank_known(&mut self.learner, user, ev.ts_ms);
        for (sink, top) in updates {
            sink.push(UserUpdate {
                user: ev.user.as_str().to_string(),
                cause: UpdateCause::Event(ev.kind),
                ts_ms: ev.ts_ms,
                top,
                signals: summary.clone(),
                engagement_drop: dropped,
                triggers: triggers.to_vec(),
            });
        }
    }

    /// A decision for a user whose consent takes it off the usual path: scored with the
    /// global model only (personalization denied) or with the memory-only state (storage
    /// denied), rules applied, placed with a random stream of its own, and recorded nowhere:
    /// its id is `UNTRACKED`. `None`: the usual path.
    pub(super) fn decide_under_consent(
        &mut self,
        req: &ValidDecide,
    ) -> Option<Result<Decision, Error>> {
        self.as_private(&req.user, req.ts_ms, |learner, rule_matches, user| {
            Ok(private_decision(learner, rule_matches, user, req))
        })
    }

    /// A template decision for a user whose consent takes it off the usual path, chosen as
    /// `decide_under_consent` chooses a ranking: each slot scored with the global model only
    /// (personalization denied) or with the memory-only state (storage denied), drawn from a
    /// random stream of its own, no variant admitted to the item table, nothing opened or
    /// logged (`UNTRACKED`). `None`: the usual path.
    pub(super) fn template_under_consent(
        &mut self,
        req: &ValidTemplateDecide,
    ) -> Option<Result<TemplateChosen, Error>> {
        self.as_private(&req.user, req.ts_ms, |learner, _, user| {
            template_preview(learner, user, req)
        })
    }

    /// Runs `decide` for `user` if their consent takes their decisions off the usual path
    /// (`None` otherwise), on the actor that stands for them there: a blank one when they
    /// denied personalization, their memory-only one (brought to `ts_ms`) when they denied
    /// storage.
    fn as_private<R>(
        &mut self,
        user: &UserId,
        ts_ms: u64,
        decide: impl FnOnce(&mut Learner, &mut ItemMatches, &UserActor) -> R,
    ) -> Option<R> {
        let consent = self.consents.of(user.key());
        if consent.is_full() {
            return None;
        }
        self.touch_memory_only(user, ts_ms, consent);
        let blank = UserActor::new(user.clone(), ts_ms, self.learner.space.dim);
        let actor = match consent.personalization {
            true => self.consents.memory_only.get(&user.key()),
            false => None,
        };
        let actor = actor.unwrap_or(&blank);
        Some(decide(&mut self.learner, &mut self.rule_matches, actor))
    }
}

/// A limited-consent user's template decision (`Shard::template_under_consent`).
fn template_preview(
    learner: &mut Learner,
    user: &UserActor,
    req: &ValidTemplateDecide,
) -> Result<TemplateChosen, Error> {
    let context = learner.full_context(&req.context, user);
    learner.prepare_query(user, &context, req.ts_ms);
    let mut rng = Rng::new(private_seed(learner.cfg.seed, &req.user, req.ts_ms));
    // A preview counts for no experiment, as a ranking under limited consent does.
    let policy = crate::experiment::ArmPolicy::Nudge { epsilon: None };
    let rng = Some(&mut rng);
    let chosen = templated::choose_slots(learner, user, &context, req, policy, rng);
    chosen.map(|(slots, _)| {
        let (features, top_category) = templated::read_for_text(learner, user, req);
        TemplateChosen {
            id: DecisionId::UNTRACKED,
            slots,
            features,
            top_category,
            experiment: None,
        }
    })
}

impl Shard {
    /// Brings the memory-only user of a storage-denied `consent` to `ts_ms` (creating them if
    /// new) before a decision reads them; nothing for a personalization-denied one.
    fn touch_memory_only(&mut self, user: &UserId, ts_ms: u64, consent: Consent) {
        if !consent.personalization {
            return;
        }
        let model = &self.learner.cfg.model;
        let user = self
            .consents
            .memory_only_user(user, ts_ms, self.learner.space.dim);
        user.advance(ts_ms, model);
        user.features.advance(ts_ms);
    }
}

/// The seed of a private decision's random stream: the shard's stream is not drawn from, so
/// that the log's replay of everyone else stays exact.
fn private_seed(seed: u64, user: &UserId, ts_ms: u64) -> u64 {
    seed ^ user.key() ^ ts_ms.rotate_left(17)
}

/// Ranks and places `req` for `user` without touching shared state: no candidate is admitted
/// to the item table, the shard's random stream is not drawn from, nothing is opened.
fn private_decision(
    learner: &mut Learner,
    remembered: &mut crate::rules::ItemMatches,
    user: &UserActor,
    req: &ValidDecide,
) -> Decision {
    let context = learner.full_context(&req.context, user);
    learner.prepare_query(user, &context, req.ts_ms);
    let mut logits = Vec::with_capacity(req.candidates.len());
    let candidates = req.candidates.iter().map(|c| (c.key, c.inline.as_ref()));
    learner.logits_known(candidates, &mut logits);
    let ruled = (req.rules.as_deref())
        .map(|rules| ruled::apply(rules, learner, (user, None), req, None, &logits, remembered));
    let mut rng = Rng::new(private_seed(learner.cfg.seed, &req.user, req.ts_ms));
    let exploration = &learner.cfg.exploration;
    let slots = match &ruled {
        Some(applied) => applied.place(exploration, &logits, req.n, &mut rng),
        None => policy::place(exploration, &logits, req.n, &mut rng),
    };
    let items = slots
        .iter()
        .map(|s| Placement {
            item: req.candidates[s.index].id.clone(),
            score: Learner::probability(logits[s.index]),
            propensity: s.propensity,
            explain: None,
        })
        .collect();
    let (triggers, rules) = ruled.map_or_else(Default::default, |a| (a.triggers, a.effects));
    Decision {
        id: DecisionId::UNTRACKED,
        items,
        experiment: None,
        triggers,
        rules,
        saturation: Vec::new(),
        segment: None,
    }
}
