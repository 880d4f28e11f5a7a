//! The shard's hook into threshold triggers (issue 14, item 3): the set in force on this
//! shard, checked after each of a user's events, and the hand-off of what fired.
//!
//! The set is logged when it changes and again at the start of each checkpoint's log, so a
//! replay from any checkpoint checks the set that was in force at each event and rebuilds
//! the users' marks exactly. What fired goes back in the event's `Ack` and, once the event's
//! log write succeeded (as its reply would), to the engine's `TriggerHub`; a replaying shard
//! has no hub, so recovery delivers nothing twice. A memory-only user's triggers are checked
//! on their memory-only actor and delivered at once (nothing of their events is logged, so
//! a replay never sees them).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::actor::features::FeatureView;
use crate::actor::UserActor;
use crate::api::TriggerFiring;
use crate::config::Config;
use crate::persist::codec;
use crate::shard::msg::ValidEvent;
use crate::shard::worker::Shard;
use crate::triggers::{TriggerHub, TriggerSet};
use tracing::error;

impl Shard {
    /// Delivers fired triggers to `hub` from now on (after recovery).
    pub fn attach_trigger_hub(&mut self, hub: Arc<TriggerHub>) {
        self.trigger_hub = Some(hub);
    }

    /// The set of triggers in force on this shard.
    pub fn trigger_set(&self) -> &Arc<TriggerSet> {
        &self.triggers
    }

    /// Replaces the set of triggers, logging it when it differs from the one in force.
    pub fn install_triggers(&mut self, set: Arc<TriggerSet>) {
        if *set == *self.triggers {
            return;
        }
        if let Some(wal) = &mut self.wal {
            wal.record(|out| codec::triggers(out, &set), true);
        }
        self.triggers = set;
    }

    /// Logs the set in force at the start of a checkpoint's log (a replay from there begins
    /// with it); nothing when no trigger was ever set.
    pub(super) fn log_trigger_set(&mut self) {
        if self.triggers.version() == 0 && self.triggers.is_empty() {
            return;
        }
        if let Some(wal) = &mut self.wal {
            let set = &self.triggers;
            wal.record(|out| codec::triggers(out, set), true);
        }
    }

    /// A replayed set: compiled again with this run's webhook; a set this build refuses
    /// (a feature since renamed) is replaced by an empty one, said in the log.
    pub(super) fn replay_triggers(
        &mut self,
        version: u64,
        specs: Vec<(crate::config::TriggerConfig, u64)>,
    ) {
        let url = self.learner.cfg.webhook.url.clone();
        self.triggers = match TriggerSet::restored(&specs, version, &url) {
            Ok(set) => Arc::new(set),
            Err(e) => {
                error!(
                    shard = self.id().0,
                    "a logged trigger set no longer compiles: {e}"
                );
                Arc::default()
            }
        };
    }

    /// Checks the triggers for the user of `ev` (just applied) and returns the names of those
    /// that fire, in the set's order; counts them and hands them to the hub once the event's
    /// log write succeeded.
    pub(super) fn check_triggers(&mut self, ev: &ValidEvent) -> Vec<Arc<str>> {
        if self.triggers.is_empty() {
            return Vec::new();
        }
        let set = self.triggers.clone();
        let Some(user) = self.users.get_mut(&ev.user, ev.ts_ms) else {
            return Vec::new();
        };
        let fired = check_user(&set, &self.learner.cfg, user, ev.ts_ms);
        self.fire(&set, &fired, ev, true)
    }

    /// `check_triggers` for a memory-only user (storage denied: `shard/consent.rs`): their
    /// marks live on their memory-only actor, and what fires is handed to the hub at once,
    /// since nothing of the event is logged.
    pub(super) fn check_memory_only_triggers(&mut self, ev: &ValidEvent) -> Vec<Arc<str>> {
        if self.triggers.is_empty() {
            return Vec::new();
        }
        let set = self.triggers.clone();
        let Some(user) = self.consents.memory_only_mut(ev.user.key()) else {
            return Vec::new();
        };
        let fired = check_user(&set, &self.learner.cfg, user, ev.ts_ms);
        self.fire(&set, &fired, ev, false)
    }

    /// Counts the triggers of `set` at indices `fired` and hands them to the hub: after the
    /// log write of the batch in progress when `after_log`, else at once. Returns their names.
    fn fire(
        &mut self,
        set: &TriggerSet,
        fired: &[usize],
        ev: &ValidEvent,
        after_log: bool,
    ) -> Vec<Arc<str>> {
        if fired.is_empty() {
            return Vec::new();
        }
        self.stats.triggers_fired_total += fired.len() as u64;
        let names: Vec<Arc<str>> = fired
            .iter()
            .map(|&i| set.triggers()[i].name.clone())
            .collect();
        if let Some(hub) = self.trigger_hub.clone() {
            let firings: Vec<TriggerFiring> = fired
                .iter()
                .map(|&i| TriggerFiring {
                    trigger: set.triggers()[i].name.clone(),
                    user: ev.user.as_str().to_string(),
                    ts_ms: ev.ts_ms,
                    webhook: set.triggers()[i].webhook.clone(),
                })
                .collect();
            let deliver = move |failed: Option<&crate::error::Error>| {
                if failed.is_some() {
                    return;
                }
                // An embedder's sink may panic; it must not take the log's syncer with it.
                for f in &firings {
                    if catch_unwind(AssertUnwindSafe(|| hub.deliver(f))).is_err() {
                        error!(trigger = &*f.trigger, "a trigger sink panicked");
                    }
                }
            };
            match &mut self.wal {
                Some(wal) if after_log => wal.hold(Box::new(deliver)),
                _ => deliver(None),
            }
        }
        names
    }
}

/// The indices of the triggers of `set` that fire for `user` after an event at `ts_ms`
/// (read at the user's latest time, for a late event); updates the user's marks.
fn check_user(set: &TriggerSet, cfg: &Config, user: &mut UserActor, ts_ms: u64) -> Vec<usize> {
    let now_ms = user.last_ms.max(ts_ms);
    // Field by field: the marks are changed while the features are read.
    let view = FeatureView {
        features: &user.features,
        signals: &user.signals,
        hygiene: &cfg.hygiene,
        session_idle_s: cfg.features.session_idle_s,
        now_ms,
        segment: None,
    };
    set.check(&mut user.triggers, view, now_ms)
}
