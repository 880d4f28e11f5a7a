//! `Shard`: the single owner of a set of users. `handle` is one `match` over every message; each
//! handler runs to completion, synchronously, with the time the message carries.
//!
//! **Invariant:** one thread at a time calls into a `Shard` (the holder of its `ShardCell`);
//! there is no lock on user state. Handlers never read the clock and never block.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::actor::features::FeatureView;
use crate::actor::UserActor;
use crate::api::{
    Ack, Decision, DecisionLog, EventKind, LogRecord, LoggedPlacement, OpenDecision, OutcomeSource,
    Placement, ShardStats, UpdateCause, UserExport, UserUpdate,
};
use crate::config::Config;
use crate::config::{ExplorationConfig, PolicyKind};
use crate::error::Error;
use crate::experiment::registry::Live;
use crate::experiment::Chosen;
use crate::experiment::{ArmPolicy, ArmTag, Earned, Registry, Tallies};
use crate::ids::{ShardId, UserId};
use crate::model::global::Mixer;
use crate::model::global::Pulled;
use crate::model::policy;
use crate::model::reward::{is_clear_outcome, popularity_counts, state_signal, training_reward};
use crate::model::ItemFeatures;
use crate::persist::codec;
use crate::rules::expr::{Env, Features};
use crate::rules::ItemMatches;
use crate::shard::checkpoint::Checkpoints;
use crate::shard::consent::Consents;
use crate::shard::durable::Wal;
use crate::shard::learner::Learner;
use crate::shard::msg::{Msg, Reply, ValidDecide, ValidEvent, ValidReward};
use crate::shard::passive::Passive;
use crate::shard::pending::{Missing, Open, PendingDecisions, Placed};
use crate::shard::ruled;
use crate::shard::saturated;
use crate::shard::seen::SeenEvents;
use crate::shard::segmented::Segmented;
use crate::shard::subscriptions::{SubscribedCandidate, Subscriptions};
use crate::shard::users::Users;
use tracing::error;

/// Most open decisions one shard keeps; past this the oldest closes early.
pub const MAX_OPEN_PER_SHARD: usize = 2_000_000;

/// How many users one idle-passivation tick examines.
const PASSIVATION_BUDGET: usize = 4096;

/// A shard's counters, published for `Engine::stats` after every batch. The shard is the only
/// writer; readers see values at most one batch old.
#[derive(Debug, Default)]
pub struct Counters {
    values: [AtomicU64; 17],
}

impl Counters {
    fn publish(&self, s: &ShardStats) {
        let v = [
            s.resident_users,
            s.parked_bytes,
            s.events_total,
            s.decisions_total,
            s.rewards_attributed_total,
            s.decisions_expired_total,
            s.outliers_filtered_total,
            s.evictions_total,
            s.busy_total,
            s.training_steps_total,
            s.mixes_total,
            s.panics_total,
            s.duplicates_total,
            s.open_decisions,
            s.rules_fired_total,
            s.rule_errors_total,
            s.triggers_fired_total,
        ];
        for (i, (slot, x)) in self.values.iter().zip(v).enumerate() {
            // Slot 8 (`busy_total`) is counted by callers, not published by the shard.
            if i != 8 {
                slot.store(x, Ordering::Relaxed);
            }
        }
    }

    /// Counts one call refused with `Busy` (written by callers, not the shard).
    pub fn count_busy(&self) {
        self.values[8].fetch_add(1, Ordering::Relaxed);
    }

    /// The last published values (`inbox_depth` is filled in by the engine).
    pub fn read(&self) -> ShardStats {
        let v: Vec<u64> = self
            .values
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        ShardStats {
            resident_users: v[0],
            parked_bytes: v[1],
            inbox_depth: 0,
            events_total: v[2],
            decisions_total: v[3],
            rewards_attributed_total: v[4],
            decisions_expired_total: v[5],
            outliers_filtered_total: v[6],
            evictions_total: v[7],
            busy_total: v[8],
            training_steps_total: v[9],
            mixes_total: v[10],
            panics_total: v[11],
            duplicates_total: v[12],
            open_decisions: v[13],
            rules_fired_total: v[14],
            rule_errors_total: v[15],
            triggers_fired_total: v[16],
            failed: false,
        }
    }
}

/// The text of a panic's payload (a `&str` or `String`; anything else is named as such).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".to_string())
}

/// One shard's state.
pub struct Shard {
    id: ShardId,
    pub(super) users: Users,
    pub(super) pending: PendingDecisions,
    pub(super) learner: Learner,
    pub(super) mixer: Option<Arc<Mixer>>,
    pub(super) subscriptions: Subscriptions,
    /// Recently applied event ids (idempotency).
    pub(super) seen: SeenEvents,
    pub(super) stats: ShardStats,
    counters: Arc<Counters>,
    pub(super) next_mix_ms: u64,
    /// The shard's event time: the latest time of any message it handled (see `advance_to`).
    pub(super) event_ms: u64,
    pub(super) log: Option<Arc<dyn DecisionLog>>,
    /// Hash of the configuration, stamped on logged decisions.
    pub(super) config_version: u64,
    /// The write-ahead log, when the engine has a data directory.
    pub(super) wal: Option<Wal>,
    /// Per-arm counters of the experiments this shard's decisions fell in.
    pub(super) tallies: Tallies,
    /// Checkpoints to the store, when the engine has a data directory.
    pub(super) checkpoints: Option<Checkpoints>,
    /// What the rules' item-only conditions said about each catalog item (issue 14).
    pub(super) rule_matches: ItemMatches,
    /// Users' consent and the users kept in memory only (issue 15).
    pub(super) consents: Consents,
    /// The threshold triggers checked after each event (issue 14; `triggered.rs`).
    pub(super) triggers: Arc<crate::triggers::TriggerSet>,
    /// Where fired triggers are delivered beyond the reply; `None` while the shard replays
    /// its log (recovery never delivers) and in a shard built without one.
    pub(super) trigger_hub: Option<Arc<crate::triggers::TriggerHub>>,
    /// Live segments (issue 14, item 4): the centroids read, the sums gathered (`None`:
    /// `segments.k = 0`).
    pub(super) segments: Option<Segmented>,
    /// The engine's experiments, where a replayed decision finds the arm it was made under.
    pub(super) experiments: Arc<Registry>,
    /// The experiment and arm of the decision being made, targeting applied, for its log
    /// record (set by `on_decide`, taken by the `Decide` handler).
    pub(super) decided_arm: Option<(u32, u16)>,
}

/// Whether a tick is live (it may mix) or replayed (it takes what its mix pulled back then).
pub enum Replayed {
    /// A live tick.
    No,
    /// A replayed tick, with its recorded mix.
    Yes(Option<Pulled>),
}

impl Shard {
    /// A shard with no users. `first_sequence` numbers its decisions; `mixer` is `None` when
    /// there is nothing to mix with.
    pub fn new(
        id: ShardId,
        cfg: Arc<Config>,
        first_sequence: u64,
        mixer: Option<Arc<Mixer>>,
        counters: Arc<Counters>,
    ) -> Self {
        let seed = cfg.seed ^ (id.0 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let config_version =
            crate::ids::stable_hash(toml::to_string(&*cfg).unwrap_or_default().as_bytes());
        let seen = SeenEvents::new(cfg.event_id_window_s, cfg.event_id_capacity);
        let memory_only_seen = seen.clone();
        let cfg_consent = cfg.consent.clone();
        Shard {
            id,
            users: Users::new(cfg.max_users_per_shard, Passive::default(), seed),
            pending: PendingDecisions::new(id, first_sequence, MAX_OPEN_PER_SHARD),
            learner: Learner::new(cfg, seed, mixer.is_some()),
            mixer,
            subscriptions: Subscriptions::default(),
            seen,

            stats: ShardStats::default(),
            counters,
            next_mix_ms: 0,
            event_ms: 0,
            log: None,
            config_version,
            wal: None,
            tallies: Tallies::default(),
            checkpoints: None,
            rule_matches: ItemMatches::default(),
            consents: Consents::new(&cfg_consent, memory_only_seen),
            triggers: Arc::default(),
            trigger_hub: None,
            segments: None,
            experiments: Arc::default(),
            decided_arm: None,
        }
    }

    /// Finds replayed decisions' arms in `registry` (the engine's, restored before the log
    /// is replayed).
    pub fn with_experiments(mut self, registry: Arc<Registry>) -> Self {
        self.experiments = registry;
        self
    }

    /// Reads and feeds the shared segment centroids `master` (`None`: segments are off).
    pub fn with_segments(
        mut self,
        master: Option<Arc<crate::model::segments::SegmentMaster>>,
    ) -> Self {
        let (cfg, dim) = (&self.learner.cfg.segments, self.learner.space.dim);
        self.segments = master.map(|m| Segmented::new(m, cfg, dim));
        self
    }

    /// Assigns `user` (just touched at `ts_ms`) to its segment, counting `engaged` (an item
    /// it engaged with) for the segment's top items. Changes no learned state.
    fn observe_segment(&mut self, user: &UserId, engaged: Option<u64>, ts_ms: u64) {
        self.observe_segment_at(user, (engaged, None), ts_ms);
    }

    /// `observe_segment`, the user's slot already found (`known`) or not.
    fn observe_segment_at(
        &mut self,
        user: &UserId,
        engaged: (Option<u64>, Option<usize>),
        ts_ms: u64,
    ) {
        let (Some(segments), Some(actor)) = (&mut self.segments, self.users.peek(user)) else {
            return;
        };
        let cfg = &self.learner.cfg;
        let items = &self.learner.global.items;
        let view = || actor.features_at(cfg, ts_ms, None);
        let slot = segments.observe((actor, items), engaged, ts_ms, view);
        self.users.assign_segment(user.key(), slot);
    }

    /// This shard's part of every segment's report.
    pub(super) fn segment_reports(&self) -> Vec<crate::api::SegmentReport> {
        match &self.segments {
            Some(s) => s.report(
                self.users.segment_sizes(),
                &self.learner.global.items,
                self.event_ms,
            ),
            None => Vec::new(),
        }
    }

    /// Writes decisions and outcomes to `log`.
    pub fn with_log(mut self, log: Option<Arc<dyn DecisionLog>>) -> Self {
        self.log = log;
        self
    }

    fn cfg(&self) -> &Config {
        &self.learner.cfg
    }

    /// Handles one message to completion. With a write-ahead log, every state-changing input
    /// is appended to the drain's batch before it is applied.
    pub fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Event(ev, reply) => {
                if let Some(ack) = self.event_under_consent(&ev) {
                    return reply.send(ack);
                }
                if let Some(refused) = self.refuse_for_room(ev.user.key()) {
                    return reply.send(Err(refused));
                }
                self.log_input(|out| codec::event(out, &ev));
                let ack = self.guarded_event(ev);
                self.ack(reply, ack, |e, _| Err(e.clone()));
            }
            Msg::Events(evs, reply) => {
                let acks: Vec<_> = evs
                    .into_iter()
                    .map(|ev| {
                        if let Some(ack) = self.event_under_consent(&ev) {
                            return ack;
                        }
                        match self.refuse_for_room(ev.user.key()) {
                            Some(refused) => Err(refused),
                            None => {
                                self.log_input(|out| codec::event(out, &ev));
                                self.guarded_event(ev)
                            }
                        }
                    })
                    .collect();
                self.ack(reply, acks, |e, acks| {
                    acks.iter().map(|_| Err(e.clone())).collect()
                });
            }
            Msg::Decide(req, reply) => {
                if let Some(decision) = self.decide_under_consent(&req) {
                    return reply.send(decision);
                }
                if let Some(refused) = self.refuse_for_room(req.user.key()) {
                    return reply.send(Err(refused));
                }
                let input = self.wal.is_some().then(|| {
                    let mut out = Vec::with_capacity(64 + 9 * req.candidates.len());
                    codec::decide(&mut out, &req);
                    out
                });
                self.decided_arm = None;
                let decision = self.guarded_decide(req);
                let arm = self.decided_arm.take();
                if let (Some(input), Some(wal)) = (input, &mut self.wal) {
                    let placed = decision.as_ref().map_or(&[][..], |d| &d.items[..]);
                    let ids = placed.iter().map(|p| p.item.as_str());
                    wal.record(
                        |out| {
                            out.extend_from_slice(&input);
                            codec::decide_placed(out, ids, arm);
                        },
                        true,
                    );
                }
                // A decision's reply never waits for the disk.
                reply.send(decision)
            }
            Msg::DecideTemplate(req, reply) => self.decide_template(req, reply),
            Msg::RewardDecision(r, reply) => self.reward_decision(r, reply),
            Msg::Reward(r, reply) => {
                // The decision's user is looked up only when the shard has no room.
                let user = (!self.users.has_room())
                    .then(|| self.pending.get(r.decision.0).map(|open| open.user_key))
                    .flatten();
                if let Some(refused) = user.and_then(|key| self.refuse_for_room(key)) {
                    return reply.send(Err(refused));
                }
                self.log_input(|out| codec::reward(out, &r));
                let done = self.guarded_reward(r);
                self.ack(reply, done, |e, _| Err(e.clone()));
            }
            Msg::UpsertItem(features, reply) => {
                self.log_input(|out| codec::upsert(out, &features));
                self.on_upsert(features);
                reply.send(());
            }
            Msg::RemoveItem(key, reply) => {
                self.log_input(|out| codec::remove(out, key));
                self.remove_item(key);
                reply.send(());
            }
            Msg::User(id, reply) => reply.send(self.export(&id)),
            Msg::Consent(id, update, reply) => {
                let (key, current) = (id.key(), self.consents.of(id.key()));
                let consent = update.applied_to(current);
                if consent == current {
                    // A read, or no change: nothing to log.
                    return reply.send((current, false));
                }
                // Logged by key only: the log keeps no id of a user who withdrew consent.
                self.log_input(|out| codec::consent(out, key, consent));
                if let Some(wal) = &mut self.wal {
                    wal.require_sync();
                }
                let erased = self.on_consent(key, consent);
                self.ack(reply, (consent, erased), |_, done| done);
            }
            Msg::Forget(id, reply) => {
                self.log_input(|out| codec::forget(out, &id));
                if let Some(wal) = &mut self.wal {
                    wal.require_sync();
                }
                let found = self.forget(&id);
                self.ack(reply, found, |_, found| found);
            }
            Msg::Subscribe(user, sub, sink, now_ms, reply) => {
                let latest = self.last_decision_candidates(&user);
                self.subscriptions.add(user.key(), sub, sink, latest);
                // The sink is an embedder's code: a panic in it is this request's.
                let pushed = self.guarded(Some(user.key()), |shard| {
                    shard.push_current(&user, sub, now_ms);
                    Ok(())
                });
                reply.send(pushed);
            }
            Msg::Unsubscribe(user, sub, reply) => {
                self.subscriptions.remove(user.key(), sub);
                reply.send(());
            }
            Msg::ExperimentTally(experiment, reply) => reply.send(self.tallies.get(experiment)),
            Msg::Segments(reply) => reply.send(self.segment_reports()),
            Msg::Checkpoint(reply) => reply.send(self.checkpoint_now().err()),
            Msg::Barrier(reply) => {
                // Publish first, so that `flush` followed by `stats` is exact.
                self.publish();
                reply.send(())
            }
            Msg::Tick(now_ms) => {
                let before = (
                    self.stats.decisions_expired_total,
                    self.stats.evictions_total,
                );
                // Idle passivation moves a scan cursor even when it finds no one.
                let scans = self.learner.cfg.idle_evict_after_s > 0 && !self.users.is_empty();
                let mix = self.on_tick(now_ms, Replayed::No);
                let after = (
                    self.stats.decisions_expired_total,
                    self.stats.evictions_total,
                );
                // A tick that changed nothing is not logged: replaying it would change nothing.
                let pulled = mix.as_ref().filter(|p| {
                    p.dense.is_some() || !p.items.is_empty() || !p.engagements.is_empty()
                });
                let changed = scans || before != after || pulled.is_some();
                if let (Some(wal), true) = (&mut self.wal, changed) {
                    wal.record(|out| codec::tick(out, now_ms, mix.as_ref()), false);
                }
                self.checkpoint_step();
            }
            Msg::SetTriggers(set, reply) => {
                self.install_triggers(set);
                reply.send(());
            }
            Msg::Advance(now_ms, reply) => {
                self.log_input(|out| codec::advance(out, now_ms));
                self.advance_to(now_ms);
                self.handle(Msg::Tick(now_ms));
                self.publish();
                reply.send(());
            }
        }
    }

    /// Back-pressure from the store: refuses (`unavailable`) a request whose user is out of
    /// memory when bringing it in would evict another into a parked set already at
    /// `durability.max_parked_bytes`. Checked before the request is logged, so a refused
    /// request is not in the log and a replay never meets it. The checkpoint that the parked
    /// set has already started stores them; then requests are admitted again.
    pub(super) fn refuse_for_room(&self, user_key: u64) -> Option<Error> {
        if self.users.admits(user_key) {
            return None;
        }
        let c = self.checkpoints.as_ref()?;
        let counters = c.store().counters();
        counters
            .parked_refusals_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Error::Unavailable(format!(
            "shard {}: users leave memory faster than checkpoints store them ({} bytes parked, \
             durability.max_parked_bytes is {}); retry shortly",
            self.id.0,
            self.users.passive().parked_bytes(),
            self.users.parked_limit()
        )))
    }

    /// The shard's index.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// `on_event`, with a panic caught (`guarded`).
    pub(super) fn guarded_event(&mut self, ev: ValidEvent) -> Result<Ack, Error> {
        let user = ev.user.key();
        self.guarded(Some(user), |shard| shard.on_event(ev))
    }

    /// `on_decide`, with a panic caught (`guarded`).
    pub(super) fn guarded_decide(&mut self, req: ValidDecide) -> Result<Decision, Error> {
        let user = req.user.key();
        self.guarded(Some(user), |shard| shard.on_decide(req))
    }

    /// `on_reward`, with a panic caught (`guarded`); the user is the decision's.
    pub(super) fn guarded_reward(&mut self, r: ValidReward) -> Result<(), Error> {
        let user = self.pending.get(r.decision.0).map(|open| open.user_key);
        self.guarded(user, |shard| shard.on_reward(r))
    }

    /// Runs one user's work. A panic inside it (a bug, or an embedder's sink or decision log
    /// that panicked) becomes `Error::Internal` for this request alone: the user's actor is
    /// reset (dropped, with its open decisions and subscriptions, so that a poisoned state
    /// cannot panic again), the panic is counted and logged, and the shard goes on. Replay
    /// runs the same guard, so it resets the same user at the same point.
    pub(super) fn guarded<T>(
        &mut self,
        user: Option<u64>,
        work: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match catch_unwind(AssertUnwindSafe(|| work(self))) {
            Ok(result) => result,
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                error!(
                    shard = self.id.0,
                    user, "handling a message panicked: {message}"
                );
                self.stats.panics_total += 1;
                if let Some(key) = user {
                    // Reset everywhere, the store included: a poisoned state must not load.
                    self.erase_key(key);
                    self.subscriptions.drop_user(key);
                }
                Err(Error::Internal(message))
            }
        }
    }

    /// Moves the shard's event time forward to `ts_ms` (never back): placements without an
    /// outcome by then count as ignored, and decisions whose window closed by then expire.
    /// Driven by the messages' own times, not the wall clock, so that a history imported with
    /// its timestamps is attributed as it happened, and a replay is exact.
    pub(super) fn advance_to(&mut self, ts_ms: u64) {
        if ts_ms <= self.event_ms {
            return;
        }
        self.event_ms = ts_ms;
        self.seen.expire(ts_ms);
        while let Some(id) = self.pending.pop_ignored_due(ts_ms) {
            self.label_ignored(id, ts_ms);
        }
        while let Some((id, open)) = self.pending.pop_expired(ts_ms) {
            self.close(id, open, ts_ms);
        }
    }

    /// Appends a state-changing input to the write-ahead batch, if there is a log.
    pub(super) fn log_input(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        if let Some(wal) = &mut self.wal {
            wal.record(encode, true);
        }
    }

    /// Replies to a state change now (in memory), or once the batch covering it is written
    /// (and fsynced, as the policy says); `failed` turns the value into the reply for a failed
    /// write.
    pub(super) fn ack<T: Send + 'static>(
        &mut self,
        reply: Reply<T>,
        value: T,
        failed: fn(&Error, T) -> T,
    ) {
        match &mut self.wal {
            Some(wal) => wal.hold(Box::new(move |err| {
                reply.send(match err {
                    Some(e) => failed(e, value),
                    None => value,
                })
            })),
            _ => reply.send(value),
        }
    }

    /// Ends a drain: writes the write-ahead batch (fsyncing under `always`), releases the
    /// replies it held, and publishes the counters.
    pub fn end_batch(&mut self) {
        if let Some(wal) = &mut self.wal {
            wal.commit(false);
        }
        self.publish();
    }

    /// Checkpoints (if `checkpoint`), then writes and fsyncs everything logged (shutdown).
    pub fn close_log(&mut self, checkpoint: bool) {
        if checkpoint {
            if let Err(e) = self.checkpoint_now() {
                error!("checkpoint of shard {} at shutdown: {e}", self.id.0);
            }
        }
        if let Some(wal) = &mut self.wal {
            wal.close();
        }
        self.publish();
    }

    /// Removes a catalog item and its learned parameters.
    pub(super) fn remove_item(&mut self, key: u64) {
        self.rule_matches.forget(key);
        self.learner.global.items.remove(key);
        self.learner.cooccurrence.remove(key);
        if let Some(m) = &self.mixer {
            m.remove_item(key);
        }
    }

    /// Continues decision numbering from `next` if that is later; returns the next number.
    pub(super) fn resume_sequence(&mut self, next: u64) -> u64 {
        self.pending.resume(next)
    }

    /// Gives a replayed decision's placements their recorded ids (the record keeps only the
    /// placed candidates' ids).
    pub(super) fn name_placements(&mut self, decision: u64, ids: Vec<String>) {
        if let Some(open) = self.pending.get_open_mut(decision) {
            for (placed, id) in open.placements.iter_mut().zip(ids) {
                placed.id = id;
            }
        }
    }

    /// Numbers decisions from `next`, as the replayed run did.
    pub(super) fn restart_sequence(&mut self, next: u64) {
        self.pending.restart_at(next);
    }

    /// Takes the decision log out (a replay must not log decisions twice).
    pub(super) fn take_decision_log(&mut self) -> Option<Arc<dyn DecisionLog>> {
        self.log.take()
    }

    /// Puts the decision log back.
    pub(super) fn restore_decision_log(&mut self, log: Option<Arc<dyn DecisionLog>>) {
        self.log = log;
    }

    /// The catalog items this shard holds.
    pub(super) fn catalog(&self) -> Vec<Arc<ItemFeatures>> {
        self.learner.global.items.catalog().cloned().collect()
    }

    /// Publishes the counters for readers.
    pub fn publish(&mut self) {
        self.stats.resident_users = self.users.len() as u64;
        self.stats.open_decisions = self.pending.len() as u64;
        self.stats.parked_bytes = self.users.passive().parked_bytes() as u64;
        self.counters.publish(&self.stats);
    }

    /// Adds or replaces one catalog item in this shard's view.
    pub fn on_upsert(&mut self, features: Arc<ItemFeatures>) {
        let key = features.id.key();
        self.rule_matches.forget(key);
        let items = &mut self.learner.global.items;
        match items.row(key) {
            Some(row) => items.set_features(row, Some(features)),
            None => {
                let e0 = features.e0.clone();
                items.insert(key, Some(features), &e0);
            }
        }
    }

    /// Applies one validated event (the synchronous actor path behind `Msg::Event`).
    pub fn on_event(&mut self, ev: ValidEvent) -> Result<Ack, Error> {
        if let Some(id) = ev.event_id {
            if !self.seen.first_time(id, ev.ts_ms) {
                self.stats.duplicates_total += 1;
                return Ok(Ack {
                    duplicate: true,
                    ..Ack::default()
                });
            }
        }
        self.advance_to(ev.ts_ms);
        let dim = self.learner.space.dim;
        let user = self.users.get_or_insert(&ev.user, ev.ts_ms, dim)?;
        user.tuning = self.experiments.tuning(ev.user.as_str(), user.exposed_to);
        let cfg = &*self.learner.cfg;
        user.advance(ev.ts_ms, &cfg.model);
        user.signals.advance(ev.ts_ms, &cfg.hygiene);
        user.events_by_kind[ev.kind as usize] += 1;
        let outlier = user.signals.observe(ev.kind, ev.value, &cfg.hygiene);
        let idle_s = cfg.features.session_idle_s;
        let facts = ev.facts.as_deref();
        user.features
            .observe(ev.kind, ev.value, ev.ts_ms, facts, idle_s);
        let rho = state_signal(&cfg.state_signal, ev.kind, ev.value);
        let reward = training_reward(&cfg.reward, ev.kind, ev.value);
        self.stats.events_total += 1;
        let mut ack = Ack::default();
        if outlier {
            self.stats.outliers_filtered_total += 1;
            ack.outlier = true;
        } else if let Some((key, _)) = &ev.item {
            if self.learner.ensure_item(*key, None) {
                // Train before the event enters the state and the item's popularity, so the
                // step sees what the score saw when the item was placed (no label leak).
                if let Some(r) = reward {
                    ack = self.attribute_or_train(&ev, *key, r);
                } else if ev.kind == EventKind::Impression && ev.decision.is_none() {
                    self.open_impression(&ev, *key);
                }
                if self.learner.cfg.saturation.remembers() {
                    if let Some(user) = self.users.get_mut(&ev.user, ev.ts_ms) {
                        saturated::on_event(&self.learner, user, &ev, *key);
                    }
                }
                let cfg = &*self.learner.cfg;
                if popularity_counts(&cfg.reward, ev.kind, ev.value) {
                    self.learner.global.record_popularity(*key, ev.ts_ms);
                    if let Some(user) = self.users.get_mut(&ev.user, ev.ts_ms) {
                        self.learner.record_engagement(&mut user.recent, *key);
                    }
                }
                if rho != 0.0 {
                    if let Some(user) = self.users.get_mut(&ev.user, ev.ts_ms) {
                        let half_life_s = user.state_half_life_s(&self.learner.cfg.model);
                        let x = self.learner.item_vector(*key, None);
                        user.add_signal(rho, x, ev.ts_ms, half_life_s);
                    }
                }
            }
        }
        ack.triggers = self.check_triggers(&ev);
        let cfg = &self.learner.cfg.reward;
        let engaged = (ev.item.as_ref())
            .filter(|_| !outlier && popularity_counts(cfg, ev.kind, ev.value))
            .map(|(key, _)| *key);
        self.observe_segment(&ev.user, engaged, ev.ts_ms);
        self.settle_evictions();
        if self.subscriptions.watched(ev.user.key()) {
            self.push_update(&ev, &ack.triggers);
        }
        Ok(ack)
    }

    /// Labels the user's matching open placement with reward `r` and trains on it; failing
    /// that, trains on the event itself when it is a clear outcome.
    fn attribute_or_train(&mut self, ev: &ValidEvent, key: u64, r: f32) -> Ack {
        let mut ack = Ack::default();
        // The user is resident: `on_event` just touched it.
        let Some(user) = self.users.get_mut(&ev.user, ev.ts_ms) else {
            return ack;
        };
        // The named decision, else the user's open ones, newest first.
        let tries = if ev.decision.is_some() {
            1
        } else {
            user.open.len()
        };
        for t in 0..tries {
            let id = match ev.decision {
                Some(d) => d.0,
                None => user.open[user.open.len() - 1 - t],
            };
            // Looked at first, changed only when it matches: a change is stored by the next
            // checkpoint (and copied, if that checkpoint still holds it).
            let matches = self.pending.get(id).is_some_and(|open| {
                open.user_key == user.id.key() && open.placements.iter().any(|p| p.key == key)
            });
            if !matches {
                continue;
            }
            let open = self.pending.get_open_mut(id).expect("just found");
            let placed = (open.placements.iter_mut().find(|p| p.key == key)).expect("just found");
            let total = (placed.reward.unwrap_or(0.0) + r).clamp(0.0, 1.0);
            placed.reward = Some(total);
            let inline = placed.inline.clone();
            if let Some((tag, earned)) = &mut open.arm {
                earn(&mut self.tallies, *tag, earned, ev.kind, ev.value);
            }
            if let Some(log) = &self.log {
                log.record(LogRecord::Outcome {
                    ts_ms: ev.ts_ms,
                    decision: crate::ids::DecisionId(id),
                    item: placed.id.clone(),
                    reward: r,
                    total,
                    source: OutcomeSource::Event(ev.kind),
                });
            }
            self.stats.rewards_attributed_total += 1;
            ack.attributed = true;
            ack.trained = self
                .learner
                .learn(user, key, inline.as_ref(), &open.context, total, ev.ts_ms)
                .is_some();
            break;
        }
        if !ack.attributed && is_clear_outcome(&self.learner.cfg.reward, ev.kind, ev.value) {
            let count = self.learner.cfg.model.negatives;
            if let Some(steps) =
                self.learner
                    .learn_outcome(user, key, &ev.context, r, count, ev.ts_ms)
            {
                ack.trained = true;
                self.stats.training_steps_total += steps as u64;
            }
        }
        if ack.trained {
            self.stats.training_steps_total += 1;
        }
        ack
    }

    /// Makes one validated decision (the synchronous actor path behind `Msg::Decide`).
    pub fn on_decide(&mut self, mut req: ValidDecide) -> Result<Decision, Error> {
        self.advance_to(req.ts_ms);
        let dim = self.learner.space.dim;
        let user = self.users.get_or_insert(&req.user, req.ts_ms, dim)?;
        user.tuning = self.experiments.tuning(req.user.as_str(), user.exposed_to);
        user.advance(req.ts_ms, &self.learner.cfg.model);
        user.signals.advance(req.ts_ms, &self.learner.cfg.hygiene);
        user.decisions += 1;
        // The segment is read, never stored: the nearest centroid of the shard's snapshot.
        let items = &self.learner.global.items;
        let slot = self.segments.as_mut().and_then(|s| s.slot(user, items));
        let segment = (self.segments.as_ref()).and_then(|s| slot.map(|i| s.label_of(i)));
        let in_segment = segment.as_ref().map(|l| (l.id, l.name.as_deref()));
        if req.rules.is_some() {
            // Reads at the decision's time become loads.
            user.features.advance(req.ts_ms);
        }
        let context = req.raw_context.as_deref().unwrap_or(&[]);
        let (cfg, ts_ms) = (&*self.learner.cfg, req.ts_ms);
        req.arm = targeted(req.arm.take(), cfg, user, ts_ms, in_segment, context);
        // What the log records: the arm the decision was made under, targeting applied.
        self.decided_arm = req.arm.as_ref().map(|c| (c.experiment.id, c.arm));
        let experiment = req.arm.as_ref().map(|c| c.reply());
        user.features
            .set_arm(experiment.as_ref().map(|a| (&*a.experiment, &*a.arm)));
        let arm = req.arm.as_ref().map(|c| (c.tag(), c.policy()));
        let policy = arm.map_or(ArmPolicy::Nudge { epsilon: None }, |(_, p)| p);
        // The `global` arm scores for a user the engine knows nothing about.
        let blank =
            (policy == ArmPolicy::Global).then(|| UserActor::new(req.user.clone(), req.ts_ms, dim));
        let scored = blank.as_ref().unwrap_or(user);
        let context = self.learner.full_context(&req.context, scored);
        let mut logits = Vec::with_capacity(req.candidates.len());
        let candidates = req.candidates.iter().map(|c| (c.key, c.inline.as_ref()));
        match policy {
            ArmPolicy::Popularity => {
                let keys = req.candidates.iter().map(|c| c.key);
                self.learner.popularity_logits(keys, req.ts_ms, &mut logits);
            }
            ArmPolicy::Control => logits.extend((0..req.candidates.len()).map(|i| -(i as f32))),
            ArmPolicy::Nudge { .. } | ArmPolicy::NudgeTuned { .. } | ArmPolicy::Global => {
                self.learner.prepare_query(scored, &context, req.ts_ms);
                self.learner.logits(candidates, &mut logits);
            }
        }
        let priors = req.tone.map(|t| tone_priors(&self.learner, user, &req, t));
        if let Some(priors) = &priors {
            logits.iter_mut().zip(priors).for_each(|(z, p)| *z += p);
        }
        let exploration = arm_exploration(&self.learner.cfg.exploration, policy);
        let exploration = exploration.as_ref();
        let exploration = exploration.unwrap_or(&self.learner.cfg.exploration);
        let mut ruled = req.rules.as_deref().map(|rules| {
            let (remembered, arm) = (&mut self.rule_matches, experiment.as_ref());
            let user = (&*user, in_segment);
            ruled::apply(rules, &self.learner, user, &req, arm, &logits, remembered)
        });
        let mut saturation = saturated::judge(&self.learner, user, &req, &logits, &mut ruled);
        let rng = &mut self.learner.rng;
        let slots = match &ruled {
            Some(applied) => applied.place(exploration, &logits, req.n, rng),
            None => policy::place(exploration, &logits, req.n, rng),
        };
        let (triggers, rules) = match ruled {
            Some(applied) => {
                self.stats.rules_fired_total += applied.fired;
                self.stats.rule_errors_total += applied.errors;
                (applied.triggers, applied.effects)
            }
            None => Default::default(),
        };
        let mut items = Vec::with_capacity(slots.len());
        let mut placed = Vec::with_capacity(slots.len());
        for slot in &slots {
            let c = &req.candidates[slot.index];
            let explain = req.explain.then(|| {
                let mut parts = self
                    .learner
                    .explain(scored, &context, c.key, c.inline.as_ref());
                parts.prior = priors.as_ref().map_or(0.0, |p| p[slot.index]);
                parts
            });
            items.push(Placement {
                item: c.id.clone(),
                score: Learner::probability(logits[slot.index]),
                propensity: slot.propensity,
                explain,
            });
            placed.push(Placed {
                key: c.key,
                id: c.id.clone(),
                inline: c.inline.clone(),
                propensity: slot.propensity,
                reward: None,
                trained_ignored: false,
                explicitly_rewarded: false,
            });
        }
        saturated::placed(&self.learner, user, &req, &slots, &mut saturation);
        self.stats.decisions_total += 1;
        let segment = segment.filter(|_| req.explain);
        if !req.track {
            // A preview: ranked like any decision, but nothing is opened, logged or learned.
            self.settle_evictions();
            return Ok(Decision {
                id: crate::ids::DecisionId::UNTRACKED,
                items,
                experiment,
                triggers,
                rules,
                saturation,
                segment,
            });
        }
        let window_ms = self.learner.cfg.attribution.window_s * 1000;
        let user_key = user.id.key();
        if let Some((tag, policy)) = arm {
            expose(&mut self.tallies, user, tag, policy);
        }
        let open = Open {
            user_key,
            created_ms: req.ts_ms,
            expires_ms: req.ts_ms + window_ms,
            ignored_at_ms: req.ts_ms + self.learner.cfg.attribution.ignored_after_s * 1000,
            context,
            placements: placed,
            arm: arm.map(|(tag, _)| (tag, Earned::default())),
        };
        let logged_context = req.raw_context.clone();
        let max_open = self.learner.cfg.attribution.max_open_per_user;
        let (id, closing) = self.pending.open_for(&mut user.open, open, max_open);
        if let (Some(log), Some(context)) = (&self.log, logged_context) {
            log.record(LogRecord::Decision {
                ts_ms: req.ts_ms,
                decision: id,
                user: req.user.as_str().to_string(),
                context,
                candidates: req.candidates.iter().map(|c| c.id.clone()).collect(),
                placements: items
                    .iter()
                    .map(|p| LoggedPlacement {
                        item: p.item.clone(),
                        score: p.score,
                        propensity: p.propensity,
                    })
                    .collect(),
                config_version: self.config_version,
                experiment: experiment.clone(),
            });
        }
        self.subscriptions
            .on_decision(user_key, &req.candidates, req.n);
        self.close_early(closing, req.ts_ms);
        self.observe_segment_at(&req.user, (None, slot), req.ts_ms);
        self.settle_evictions();
        Ok(Decision {
            id,
            items,
            experiment,
            triggers,
            rules,
            saturation,
            segment,
        })
    }

    /// Closes the decisions `PendingDecisions::open_for` pushed out.
    pub(super) fn close_early(&mut self, closing: [Option<u64>; 2], now_ms: u64) {
        for id in closing.into_iter().flatten() {
            if let Some(open) = self.pending.remove(id) {
                self.close(id, open, now_ms);
            }
        }
    }

    /// An impression that names no decision opens an implicit one-placement decision, so that
    /// a plain event stream is attributed like tracked decisions: a click on the item inside
    /// the attribution window labels it, and at expiry an unclicked impression trains as
    /// ignored. Its propensity is 1 (nudge did not choose it).
    fn open_impression(&mut self, ev: &ValidEvent, key: u64) {
        let Some(user) = self.users.get_mut(&ev.user, ev.ts_ms) else {
            return;
        };
        let context = self.learner.full_context(&ev.context, user);
        let open = Open {
            user_key: user.id.key(),
            created_ms: ev.ts_ms,
            expires_ms: ev.ts_ms + self.learner.cfg.attribution.window_s * 1000,
            ignored_at_ms: ev.ts_ms + self.learner.cfg.attribution.ignored_after_s * 1000,
            context,
            arm: None,
            placements: vec![Placed {
                key,
                id: ev
                    .item
                    .as_ref()
                    .map(|(_, id)| id.clone())
                    .unwrap_or_default(),
                inline: None,
                propensity: 1.0,
                reward: None,
                trained_ignored: false,
                explicitly_rewarded: false,
            }],
        };
        let max_open = self.learner.cfg.attribution.max_open_per_user;
        let (_, closing) = self.pending.open_for(&mut user.open, open, max_open);
        self.close_early(closing, ev.ts_ms);
    }

    pub(super) fn on_reward(&mut self, r: ValidReward) -> Result<(), Error> {
        self.advance_to(r.ts_ms);
        let open = self
            .pending
            .get_mut(r.decision)
            .map_err(|missing| match missing {
                Missing::Closed => Error::ExpiredDecision(r.decision),
                Missing::NeverIssued => Error::UnknownDecision(r.decision),
            })?;
        let Some(placed) = open.placements.iter_mut().find(|p| p.key == r.item_key) else {
            return Err(Error::NotShown {
                decision: r.decision,
                item: r.item,
            });
        };
        if placed.explicitly_rewarded {
            return Err(Error::AlreadyRewarded {
                decision: r.decision,
                item: r.item,
            });
        }
        placed.explicitly_rewarded = true;
        // A first label of 0 says the user saw the item and passed on it.
        let ignored = placed.reward.is_none() && !placed.trained_ignored && r.value == 0.0;
        let total = (placed.reward.unwrap_or(0.0) + r.value).clamp(0.0, 1.0);
        placed.reward = Some(total);
        let inline = placed.inline.clone();
        let context = open.context.clone();
        let user_key = open.user_key;
        let shown_ms = open.created_ms;
        if let Some(log) = &self.log {
            log.record(LogRecord::Outcome {
                ts_ms: r.ts_ms,
                decision: r.decision,
                item: placed.id.clone(),
                reward: r.value,
                total,
                source: OutcomeSource::Reward,
            });
        }
        self.stats.rewards_attributed_total += 1;
        if let Some(user) = self.users.get_by_key_mut(user_key, r.ts_ms) {
            user.tuning = self.experiments.tuning(user.id.as_str(), user.exposed_to);
            user.advance(r.ts_ms, &self.learner.cfg.model);
            if r.value > 0.0 {
                saturated::engaged(user, r.item_key);
            }
            if self
                .learner
                .learn(user, r.item_key, inline.as_ref(), &context, total, r.ts_ms)
                .is_some()
            {
                self.stats.training_steps_total += 1;
            }
            let rho = self.learner.cfg.state_signal.ignored;
            if ignored && rho != 0.0 && self.learner.ensure_item(r.item_key, inline.as_ref()) {
                let half_life_s = user.state_half_life_s(&self.learner.cfg.model);
                let x = self.learner.item_vector(r.item_key, inline.as_ref());
                user.add_signal(rho, x, shown_ms, half_life_s);
            }
        }
        Ok(())
    }

    /// Closes a decision: ignored placements in the top `k` train with the default reward.
    fn close(&mut self, id: u64, open: Open, now_ms: u64) {
        self.stats.decisions_expired_total += 1;
        if let Some((tag, earned)) = open.arm {
            let reward: f64 = open
                .placements
                .iter()
                .map(|p| f64::from(p.reward.unwrap_or(0.0)))
                .sum();
            self.tallies.arm(tag).close(&earned, reward);
        }
        if let Some(log) = &self.log {
            let unrewarded = open
                .placements
                .iter()
                .filter(|p| p.reward.is_none())
                .map(|p| p.id.clone());
            log.record(LogRecord::Expired {
                ts_ms: now_ms,
                decision: crate::ids::DecisionId(id),
                unrewarded: unrewarded.collect(),
            });
        }
        let Some(user) = self.users.get_by_key_mut(open.user_key, 0) else {
            return;
        };
        user.open.retain(|&d| d != id);
        user.tuning = self.experiments.tuning(user.id.as_str(), user.exposed_to);
        let mut open = open;
        self.stats.training_steps_total +=
            train_ignored(&mut self.learner, user, &mut open, now_ms);
    }

    /// Trains the placements of decision `id` that have had no outcome by `ignored_after_s`.
    fn label_ignored(&mut self, id: u64, now_ms: u64) {
        let Some(open) = self.pending.get_open_mut(id) else {
            return;
        };
        let Some(user) = self.users.get_by_key_mut(open.user_key, 0) else {
            return;
        };
        user.tuning = self.experiments.tuning(user.id.as_str(), user.exposed_to);
        self.stats.training_steps_total += train_ignored(&mut self.learner, user, open, now_ms);
    }

    /// Passivates idle users and (live) mixes or (replayed) takes the recorded mix (expiry
    /// follows event time: `advance_to`). Returns what a live mix pulled.
    pub(super) fn on_tick(&mut self, now_ms: u64, replayed: Replayed) -> Option<Pulled> {
        let idle_s = self.learner.cfg.idle_evict_after_s;
        if idle_s > 0 {
            let cutoff = now_ms.saturating_sub(idle_s * 1000);
            self.users.passivate_idle(cutoff, PASSIVATION_BUDGET);
            self.settle_evictions();
        }
        if let Some(segments) = &mut self.segments {
            if segments.tick(now_ms, matches!(replayed, Replayed::Yes(_))) {
                self.users.clear_segments();
            }
        }
        let shard = self.id.0 as usize;
        let pulled = match (replayed, &self.mixer) {
            (Replayed::No, Some(mixer)) if now_ms >= self.next_mix_ms => {
                let mut pulled = self.learner.global.mix(mixer, shard);
                let outbox = self.learner.cooccurrence.take_outbox();
                pulled.engagements = mixer.exchange_engagements(shard, outbox);
                self.learner.cooccurrence.apply_shared(&pulled.engagements);
                Some(pulled)
            }
            (Replayed::Yes(Some(pulled)), mixer) => {
                self.learner
                    .global
                    .replay_mix(mixer.as_deref(), shard, &pulled);
                // What this shard counted while replaying was shared in the run that logged
                // it; sharing it again would count it twice elsewhere.
                self.learner.cooccurrence.take_outbox();
                self.learner.cooccurrence.apply_shared(&pulled.engagements);
                None
            }
            _ => return None,
        };
        self.stats.mixes_total += 1;
        self.next_mix_ms = now_ms + self.learner.cfg.mix_interval_ms;
        pulled
    }

    /// Counts the users moved out of memory, and closes the open decisions of those dropped
    /// (without a store; with one, a passivated user's decisions stay open).
    pub(super) fn settle_evictions(&mut self) {
        let (evicted, dropped_open) = self.users.take_evictions();
        self.stats.evictions_total += evicted;
        for id in dropped_open {
            self.pending.remove(id);
        }
    }

    /// What the engine holds of `id`: their memory-only state when they denied storage
    /// (flagged `memory_only`), else their resident or stored actor.
    fn export(&mut self, id: &UserId) -> Option<UserExport> {
        let (user, memory_only) = match self.consents.memory_only(id.key()) {
            Some(user) => (user, true),
            None => {
                self.users.load(id);
                (self.users.peek(id)?, false)
            }
        };
        let items = &self.learner.global.items;
        let segment = self.segments.as_mut().and_then(|s| s.label(user, items));
        let labelled = segment.as_ref().map(|l| (l.id, l.name.as_deref()));
        let open_decisions = user
            .open
            .iter()
            .filter_map(|&d| self.pending.get(d).map(|o| (d, o)))
            .map(|(d, o)| OpenDecision {
                id: crate::ids::DecisionId(d),
                created_ms: o.created_ms,
                expires_ms: o.expires_ms,
                placements: o
                    .placements
                    .iter()
                    .map(|p| (p.id.clone(), p.reward))
                    .collect(),
            })
            .collect();
        Some(UserExport {
            user: user.id.as_str().to_string(),
            first_seen_ms: user.first_seen_ms,
            last_seen_ms: user.last_ms,
            events_by_kind: user.events_by_kind.map(u64::from),
            decisions: user.decisions as u64,
            training_steps: user.steps as u64,
            state: user.state().to_vec(),
            personal_weights: user.weights().to_vec(),
            signals: user.signals.summary(&self.cfg().hygiene),
            features: (user.features_at(self.cfg(), user.last_ms, labelled)).all(),
            open_decisions,
            segment,
            memory_only,
        })
    }

    /// Erases a user everywhere: memory, open decisions, and (at the next checkpoint) the
    /// store. True if the user existed.
    pub(super) fn forget(&mut self, id: &UserId) -> bool {
        self.erase_key(id.key())
    }

    pub(super) fn erase_key(&mut self, key: u64) -> bool {
        let memory_only = self.consents.forget(key);
        let (resident, found) = self.users.erase(key);
        match resident {
            Some(user) => {
                for d in &user.open {
                    self.pending.remove(*d);
                }
            }
            // Not in memory: its decisions are found by key.
            None if found => self.pending.remove_user(key),
            None => {}
        }
        found || memory_only
    }

    /// What a new subscription ranks until the user's next decision: the placements of their
    /// latest open decision (a decision's other candidates are not kept), or nothing.
    fn last_decision_candidates(&mut self, user: &UserId) -> (Vec<SubscribedCandidate>, usize) {
        self.users.load(user);
        let latest = self.users.peek(user).and_then(|u| u.open.last().copied());
        let Some(open) = latest.and_then(|id| self.pending.get(id)) else {
            return (Vec::new(), 0);
        };
        let candidates: Vec<SubscribedCandidate> = open
            .placements
            .iter()
            .map(|p| (p.key, p.id.clone(), p.inline.clone()))
            .collect();
        let n = candidates.len();
        (candidates, n)
    }

    /// A new subscription's first update (issue 16): the user's current state ranked over
    /// the subscription's candidates, pushed at once rather than after their next event.
    /// Nothing is pushed for a user the engine holds no state for. Ranked at the engine's
    /// time or the user's last event, whichever is later; no state changes.
    fn push_current(&mut self, user: &UserId, sub: u64, now_ms: u64) {
        self.users.load(user);
        let Some(actor) = self.users.peek(user) else {
            return;
        };
        let ts_ms = now_ms.max(actor.last_ms);
        let ranked = self
            .subscriptions
            .rank_one(&mut self.learner, actor, ts_ms, sub);
        let Some((sink, top)) = ranked else {
            return;
        };
        sink.push(UserUpdate {
            user: user.as_str().to_string(),
            cause: UpdateCause::Subscribed,
            ts_ms,
            top,
            signals: actor.signals.summary(&self.learner.cfg.hygiene),
            engagement_drop: false,
            triggers: Vec::new(),
        });
    }

    fn push_update(&mut self, ev: &ValidEvent, triggers: &[Arc<str>]) {
        let Some(user) = self.users.peek(&ev.user) else {
            return;
        };
        let summary = user.signals.summary(&self.learner.cfg.hygiene);
        let updates = self.subscriptions.rank(&mut self.learner, user, ev.ts_ms);
        let dropped = self
            .users
            .get_mut(&ev.user, ev.ts_ms)
            .map(|u| u.signals.engagement_dropped_since_push())
            .unwrap_or(false);
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
}

/// Each tone's prior (`tone::prior`) for a tone decision, on the user's mood (the message's
/// sentiment, else the decayed one) and trend at the decision's time; the candidates are the
/// configured tones in order.
fn tone_priors(
    learner: &Learner,
    user: &UserActor,
    req: &ValidDecide,
    tone: crate::shard::msg::ToneInput,
) -> Vec<f32> {
    use crate::actor::Feature;
    let cfg = &learner.cfg;
    let view = user.features_at(cfg, req.ts_ms, None);
    let read = |f| match view.get(f) {
        crate::actor::features::Value::Num(x) => x,
        _ => 0.0,
    };
    let mood = match tone.message_sentiment {
        Some(s) => f64::from(s),
        None => read(Feature::Sentiment),
    };
    let (sentiment, trend) = (mood, read(Feature::SentimentTrend));
    let tones = &cfg.tone.tones;
    (req.candidates.iter().enumerate())
        .map(|(i, _)| {
            tones
                .get(i)
                .map_or(0.0, |t| crate::tone::prior(t, sentiment, trend))
        })
        .collect()
}

/// Trains the top-`k` placements of `open` that have had no outcome and have not trained as
/// ignored yet with the default reward, and pushes the user's state away from them (as shown
/// at the decision's time); returns the steps taken.
/// The exploration an arm's policy ranks with, when it is not the configured one: none for
/// `control` and `popularity` (their order is the arm), ε-greedy at the arm's ε for `nudge`
/// with an override.
pub(super) fn arm_exploration(
    configured: &ExplorationConfig,
    policy: ArmPolicy,
) -> Option<ExplorationConfig> {
    let greedy = |epsilon: f32| ExplorationConfig {
        policy: if epsilon > 0.0 {
            PolicyKind::EpsilonGreedy
        } else {
            PolicyKind::Greedy
        },
        epsilon,
        temperature: configured.temperature,
    };
    match policy {
        ArmPolicy::Control | ArmPolicy::Popularity => Some(greedy(0.0)),
        _ => policy.epsilon().map(greedy),
    }
}

/// The arm a decision is made under: `arm` as assigned, kept only if its experiment's targeting
/// takes this user in this context (a decision it does not take is served as if held out).
/// A replayed decision's arm (`Chosen::targeted`) was targeted when it was made.
pub(super) fn targeted(
    arm: Option<Chosen>,
    cfg: &Config,
    user: &mut UserActor,
    ts_ms: u64,
    segment: Option<(u32, Option<&str>)>,
    context: &[(String, String)],
) -> Option<Chosen> {
    let chosen = arm?;
    if chosen.targeted {
        return Some(chosen);
    }
    if chosen.experiment.target().is_some() {
        // Reads at the decision's time become loads.
        user.features.advance(ts_ms);
    }
    let view = user.features_at(cfg, ts_ms, segment);
    targets(&chosen.experiment, view, context).then_some(chosen)
}

/// Counts a tracked decision made under arm `tag` (and the user, the first time), and from
/// then on the user learns as the arm's `policy` says (`Tuning`).
pub(super) fn expose(tallies: &mut Tallies, user: &mut UserActor, tag: ArmTag, policy: ArmPolicy) {
    let tally = tallies.arm(tag);
    tally.decisions += 1;
    if user.exposed_to != tag.experiment + 1 {
        user.exposed_to = tag.experiment + 1;
        tally.users += 1;
    }
    user.tuning = policy.tuning();
}

/// Whether `experiment` takes a user whose features are `view` for a decision in `context`:
/// in one of its segments (if it names any) and its targeting condition true (if it has
/// one; a condition that fails to evaluate, a missing context key say, is false).
fn targets(experiment: &Live, view: FeatureView<'_>, context: &[(String, String)]) -> bool {
    if !experiment.spec.targets(view.segment) {
        return false;
    }
    let Some(cond) = experiment.target() else {
        return true;
    };
    let features = Features::new(view);
    let env = Env {
        user: &features,
        ctx: context,
        item: None,
    };
    cond.eval(&env).unwrap_or(false)
}

/// Counts an outcome attributed to a decision made under an experiment arm.
fn earn(tallies: &mut Tallies, tag: ArmTag, earned: &mut Earned, kind: EventKind, value: f64) {
    match kind {
        EventKind::Click => {
            earned.clicks += 1;
            tallies.arm(tag).clicks += 1;
        }
        EventKind::Conversion => {
            earned.conversions += 1;
            tallies.arm(tag).conversions += 1;
        }
        EventKind::Dwell => earned.dwell_s += value,
        _ => {}
    }
}

fn train_ignored(learner: &mut Learner, user: &mut UserActor, open: &mut Open, now_ms: u64) -> u64 {
    let cfg = learner.cfg.clone();
    let rho = cfg.state_signal.ignored;
    let mut steps = 0;
    let k = cfg.attribution.train_ignored_top_k;
    for placed in open.placements.iter_mut().take(k) {
        if placed.reward.is_some() || placed.trained_ignored {
            continue;
        }
        placed.trained_ignored = true;
        let inline = placed.inline.as_ref();
        let default = cfg.reward.default_reward;
        if learner
            .learn(user, placed.key, inline, &open.context, default, now_ms)
            .is_some()
        {
            steps += 1;
            if rho != 0.0 {
                let x = learner.item_vector(placed.key, inline);
                let half_life_s = user.state_half_life_s(&cfg.model);
                user.add_signal(rho, x, open.created_ms, half_life_s);
            }
        }
    }
    steps
}
